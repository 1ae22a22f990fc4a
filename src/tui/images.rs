//! The image panes of every screen, and keeping them in step with the app: when the
//! picture a pane should show changes (a new step, browsing the history), its slot gets
//! the new image and encodes it off the UI thread.
//!
//! Each frame also tracks where placed images (sixel, iTerm2, kitty placed by id) are
//! ([`Images::begin_frame`], [`Images::end_frame`]): the terminal keeps their pixels until
//! something erases them, so one that left the screen, moved, or went under a popup has to
//! be erased, by id (kitty) or by redrawing the screen (sixel, iTerm2).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use image::RgbImage;
use ratatui::layout::Rect;

use super::app::{App, DenoiseView, Screen};
use super::graphics::{kitty_delete, Frame, Graphics, ImageSlot, Protocol, Route};
use crate::preview;

/// One pane, remembering what it was last given so that an unchanged picture is not
/// encoded again on every frame, and where its placed image is.
pub struct Pane {
    slot: ImageSlot,
    shown: Option<u64>,
    frame: Frame,
    placed: Option<Rect>,
    placed_before: Option<Rect>,
}

impl Pane {
    fn new(graphics: Graphics) -> Self {
        Self {
            slot: ImageSlot::new(graphics),
            shown: None,
            frame: Frame::plain(graphics.route),
            placed: None,
            placed_before: None,
        }
    }

    /// Gives the pane `image` unless it already has exactly that picture.
    fn show(&mut self, image: Option<&RgbImage>) {
        let Some(image) = image else { return };
        let key = fingerprint(image);
        if self.shown != Some(key) {
            self.shown = Some(key);
            self.slot.set(image.clone());
        }
    }

    pub fn render(&mut self, area: Rect, buf: &mut ratatui::buffer::Buffer) {
        self.placed = self.slot.render(area, buf, &self.frame, self.placed_before);
    }
}

/// Pictures are replaced, not edited, so hashing their pixels tells them apart (a
/// buffer's address would not: a freed preview's memory is often reused for the next).
fn fingerprint(image: &RgbImage) -> u64 {
    let mut hasher = DefaultHasher::new();
    image.dimensions().hash(&mut hasher);
    image.as_raw().hash(&mut hasher);
    hasher.finish()
}

/// The chosen token's map over the shown step's x0 preview, while the attention view
/// is on screen. Blending one latent-sized map costs about what hashing the result
/// costs, which every pane does each frame anyway, so it is not kept between frames.
fn attention_overlay(app: &App) -> Option<RgbImage> {
    if app.talk.on || app.screen != Screen::Denoise || app.denoise_view != DenoiseView::Attention {
        return None;
    }
    let step = app.shown_step()?;
    let maps = step.taps.as_ref()?.attention.as_ref()?;
    let (listed, at) = app.attention_choice()?;
    let map = maps.token(listed[at])?;
    preview::attention_overlay(&step.x0_rgb, map, maps.height, maps.width).ok()
}

/// What the terminal must be told after a frame, for the placed images it keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// Clear the screen and draw every cell again: a sixel or iTerm2 image left its place.
    pub redraw: bool,
    /// Sequences that delete kitty images no longer on screen.
    pub erase: String,
}

/// Every pane the screens draw into.
pub struct Images {
    pub graphics: Graphics,
    pub heatmap: Pane,
    pub channels: Vec<Pane>,
    pub latent_rgb: Pane,
    /// Image to image: the picture, and its encoded latent.
    pub picture: Pane,
    pub encoded: Pane,
    pub x_t: Pane,
    pub x0: Pane,
    pub x0_vae: Pane,
    /// The attention view's token map over x0.
    pub attention: Pane,
    pub image: Pane,
    /// The compare view's two runs' x0 and their difference.
    pub compare_left: Pane,
    pub compare_right: Pane,
    pub compare_difference: Pane,
}

impl Images {
    pub fn new(graphics: Graphics) -> Self {
        Self {
            graphics,
            heatmap: Pane::new(graphics),
            channels: (0..4).map(|_| Pane::new(graphics)).collect(),
            latent_rgb: Pane::new(graphics),
            picture: Pane::new(graphics),
            encoded: Pane::new(graphics),
            x_t: Pane::new(graphics),
            x0: Pane::new(graphics),
            x0_vae: Pane::new(graphics),
            attention: Pane::new(graphics),
            image: Pane::new(graphics),
            compare_left: Pane::new(graphics),
            compare_right: Pane::new(graphics),
            compare_difference: Pane::new(graphics),
        }
    }

    /// tmux moved the pane on the outer screen (a resize, a new split): placed images go
    /// to the new place.
    pub fn set_route(&mut self, route: Route) {
        self.graphics.route = route;
    }

    /// Starts a frame in which popups, fields and dialogs take `hidden_under`.
    pub fn begin_frame(&mut self, hidden_under: &[Rect]) {
        let frame = Frame { hidden_under: hidden_under.to_vec(), route: self.graphics.route };
        for pane in self.panes() {
            pane.frame = frame.clone();
            pane.placed_before = pane.placed.take();
        }
    }

    /// Ends the frame: what must be erased of the placed images that left their place.
    pub fn end_frame(&mut self) -> Cleanup {
        let kitty_by_id = self.graphics.protocol == Protocol::Kitty { placeholders: false };
        let mut cleanup = Cleanup::default();
        for pane in self.panes() {
            let Some(before) = pane.placed_before else { continue };
            if pane.placed == Some(before) {
                continue;
            }
            if kitty_by_id {
                // a kitty image that moved was replaced by its new placement already
                if pane.placed.is_none() {
                    cleanup.erase.extend(pane.slot.kitty_ids().map(kitty_delete));
                }
            } else {
                cleanup.redraw = true;
            }
        }
        if let (false, Route::Tmux { .. }) = (cleanup.erase.is_empty(), self.graphics.route) {
            cleanup.erase = crate::tui::terminal::mux::passthrough(&cleanup.erase);
        }
        cleanup
    }

    /// What frees every kitty image of the lab's when it quits.
    pub fn release(&mut self) -> String {
        if !matches!(self.graphics.protocol, Protocol::Kitty { .. }) {
            return String::new();
        }
        let sequences: String = self.panes().flat_map(|pane| pane.slot.kitty_ids().map(kitty_delete)).collect();
        match self.graphics.route {
            Route::Direct => sequences,
            Route::Tmux { .. } => crate::tui::terminal::mux::passthrough(&sequences),
        }
    }

    /// Hands each pane the picture the app currently wants in it.
    pub fn sync(&mut self, app: &App) {
        self.heatmap.show(app.encode.as_ref().map(|e| &e.heatmap));
        if let Some(latent) = &app.latent {
            self.latent_rgb.show(Some(&latent.rgb));
            for (pane, channel) in self.channels.iter_mut().zip(&latent.channels) {
                pane.show(Some(channel));
            }
        }
        let img2img = app.latent.as_ref().and_then(|l| l.img2img.as_ref());
        self.picture.show(img2img.map(|i| &i.picture));
        self.encoded.show(img2img.map(|i| &i.encoded));
        // talk mode walks each step's operations, with the step's input before its output
        let (x_t, x0) = if app.talk.on {
            let pictures = app.talk_denoise_pictures();
            (pictures.latents, pictures.x0)
        } else {
            let step = app.shown_step();
            (step.map(|s| &s.latent_rgb), step.map(|s| &s.x0_rgb))
        };
        self.x_t.show(x_t);
        self.x0.show(x0);
        self.x0_vae.show(app.decoded_x0.as_ref().map(|d| &d.image));
        self.attention.show(attention_overlay(app).as_ref());
        self.image.show(app.decoded.as_ref().map(|d| &d.image));
        let compare = app.compare.as_ref();
        self.compare_left.show(compare.and_then(|c| c.left.x0.as_ref()));
        self.compare_right.show(compare.and_then(|c| c.right.x0.as_ref()));
        self.compare_difference.show(compare.and_then(|c| c.difference.as_ref()));
    }

    fn panes(&mut self) -> impl Iterator<Item = &mut Pane> {
        [
            &mut self.heatmap,
            &mut self.latent_rgb,
            &mut self.picture,
            &mut self.encoded,
            &mut self.x_t,
            &mut self.x0,
            &mut self.x0_vae,
            &mut self.attention,
            &mut self.image,
            &mut self.compare_left,
            &mut self.compare_right,
            &mut self.compare_difference,
        ]
        .into_iter()
        .chain(self.channels.iter_mut())
    }

    /// Waits (at most ten seconds) until every pane has the encoding of its current
    /// picture: for tests that render into a buffer once and look at the result.
    pub fn settle(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            self.pump();
            if !self.panes().any(|pane| pane.slot.is_pending()) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Takes in finished encodings; true when a redraw would show something new.
    pub fn pump(&mut self) -> bool {
        self.panes().fold(false, |changed, pane| pane.slot.poll() | changed)
    }
}
