//! [`ImageSlot`]: one image pane whose resize+encode runs on a worker thread.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;

use image::{DynamicImage, RgbImage};
use ratatui::buffer::Buffer;
use ratatui::layout::{Rect, Size};

use super::{random_kitty_id, EncodeJob, Encoded, Graphics, Route};

/// What one frame tells every pane before they draw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The areas that popups, fields and dialogs take this frame: a placed image that
    /// touches one is not drawn.
    pub hidden_under: Vec<Rect>,
    pub route: Route,
}

impl Frame {
    /// A frame with nothing over the panes.
    pub fn plain(route: Route) -> Self {
        Self { hidden_under: Vec::new(), route }
    }
}

/// One image pane: holds the current image, keeps the newest finished encoding on screen, and has
/// a worker thread encode the image whenever it or the pane's size changes (see the module doc).
pub struct ImageSlot {
    graphics: Graphics,
    /// kitty keeps images by id; two per pane, taken in turns (see
    /// [`Encoded::take_kitty_ids`]), keep a run's frames from piling up in kitty.
    kitty_ids: [u32; 2],
    /// Which of `kitty_ids` the image on screen has.
    kitty_turn: usize,
    image: Option<DynamicImage>,
    /// Bumped by every [`ImageSlot::set`], so a job can tell which image it encodes.
    generation: u64,
    /// The pane size of the last render, to start encoding a new image before the next one.
    last_target: Option<Size>,
    /// The image generation and pane size of the newest job sent; equal to what the pane needs
    /// means nothing more to send.
    requested: Option<(u64, Size)>,
    /// Jobs are numbered in the order they are sent; results older than the shown one are dropped.
    next_job: u64,
    /// The newest job whose result came back, encoded or failed.
    answered: u64,
    shown: Option<(u64, Encoded)>,
    error: Option<String>,
    jobs: Sender<(u64, EncodeJob)>,
    finished: Receiver<(u64, Result<Encoded, String>)>,
}

impl ImageSlot {
    /// A slot for an app that redraws on a timer or after every event: it finds finished encodings
    /// by calling [`ImageSlot::poll`].
    pub fn new(graphics: Graphics) -> Self {
        Self::with_waker(graphics, || {})
    }

    /// A slot whose worker calls `waker` after each finished encoding, for an app that sleeps on
    /// its own event channel until something happens (send it a redraw event from the waker).
    pub fn with_waker(graphics: Graphics, waker: impl Fn() + Send + 'static) -> Self {
        let (jobs, job_rx) = mpsc::channel();
        let (done_tx, finished) = mpsc::channel();
        thread::Builder::new()
            .name("image-encode".into())
            .spawn(move || encode_jobs(job_rx, done_tx, waker))
            .expect("spawning the image encoding thread");
        Self {
            graphics,
            kitty_ids: [random_kitty_id(), random_kitty_id()],
            kitty_turn: 0,
            image: None,
            generation: 0,
            last_target: None,
            requested: None,
            next_job: 0,
            answered: 0,
            shown: None,
            error: None,
            jobs,
            finished,
        }
    }

    /// Replaces the image. The old one stays on screen until the new one is encoded.
    pub fn set(&mut self, image: RgbImage) {
        self.image = Some(DynamicImage::ImageRgb8(image));
        self.generation += 1;
        if let Some(target) = self.last_target {
            self.request(target);
        }
    }

    /// Takes in the encodings the worker finished; true when one is new, meaning a redraw shows
    /// something different.
    pub fn poll(&mut self) -> bool {
        let mut changed = false;
        while let Ok((job, result)) = self.finished.try_recv() {
            self.answered = self.answered.max(job);
            if self.shown.as_ref().is_some_and(|(shown, _)| *shown > job) {
                continue;
            }
            match result {
                Ok(encoded) => {
                    self.shown = Some((job, encoded));
                    self.error = None;
                    changed = true;
                }
                Err(err) => self.error = Some(err),
            }
        }
        changed
    }

    /// True while a job sent to the worker has not come back: a test that wants the
    /// encoded image on screen polls until this is false.
    pub fn is_pending(&self) -> bool {
        self.answered < self.next_job
    }

    /// Why the newest encoding failed, for the status line; the previous image stays shown.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The kitty image ids this pane's pictures use.
    pub fn kitty_ids(&self) -> [u32; 2] {
        self.kitty_ids
    }

    /// Draws the newest finished encoding centred in `area`, and asks for a new one when the image
    /// or `area`'s size changed. Does not block; an empty area draws nothing.
    ///
    /// `before` is where the previous frame placed this slot's image: drawn there again, a
    /// new image goes straight over the old one.
    ///
    /// Returns where a placed image (one the terminal keeps apart from the cells) now is. An
    /// image under one of `frame`'s hidden areas is not drawn, unless it is half-blocks:
    /// a placed one would be painted over the popup, and kitty's placeholder image sends its
    /// pixels from its top-left cell, which the popup would swallow.
    pub fn render(&mut self, area: Rect, buf: &mut Buffer, frame: &Frame, before: Option<Rect>) -> Option<Rect> {
        let area = area.intersection(buf.area);
        if area.is_empty() {
            return None;
        }
        let target = area.as_size();
        self.last_target = Some(target);
        if self.image.is_some() && self.requested != Some((self.generation, target)) {
            self.request(target);
        }
        let (_, encoded) = self.shown.as_mut()?;
        let size = encoded.size();
        let (width, height) = (size.width.min(area.width), size.height.min(area.height));
        let rect = Rect::new(area.x + (area.width - width) / 2, area.y + (area.height - height) / 2, width, height);
        if !encoded.is_half_blocks() && frame.hidden_under.iter().any(|hidden| hidden.intersects(rect)) {
            return None;
        }
        if encoded.wants_kitty_ids() {
            // the id the image on screen does not have, that image's to delete
            let on_screen = self.kitty_ids[self.kitty_turn];
            self.kitty_turn = 1 - self.kitty_turn;
            encoded.take_kitty_ids(self.kitty_ids[self.kitty_turn], Some(on_screen));
        }
        encoded.render(rect, buf, frame.route, before != Some(rect));
        (encoded.is_placed() && rect.as_size() == size).then_some(rect)
    }

    fn request(&mut self, target: Size) {
        let Some(image) = &self.image else { return };
        let job = EncodeJob { image: image.clone(), target, graphics: self.graphics, kitty_id: self.kitty_ids[0] };
        self.next_job += 1;
        self.requested = Some((self.generation, target));
        // The worker only stops when this slot is dropped, so a failed send cannot happen while
        // the slot is alive.
        let _ = self.jobs.send((self.next_job, job));
    }
}

/// The worker: encodes the newest job it has, skipping those overtaken while it was busy (a
/// preview replaced every step, or a pane being dragged to a new size).
fn encode_jobs(jobs: Receiver<(u64, EncodeJob)>, finished: Sender<(u64, Result<Encoded, String>)>, waker: impl Fn()) {
    while let Ok(mut newest) = jobs.recv() {
        while let Ok(newer) = jobs.try_recv() {
            newest = newer;
        }
        let (id, job) = newest;
        // A panic in an encoder is one picture that failed, not a pane that stops for good.
        let result = catch_unwind(AssertUnwindSafe(|| job.run()))
            .unwrap_or_else(|_| Err("the image encoder failed (see the message after quitting)".into()));
        if finished.send((id, result)).is_err() {
            return;
        }
        waker();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ratatui::style::Color;

    use super::super::tests::{gradient, graphics, symbols};
    use super::super::Protocol;
    use super::*;

    /// A slot whose finished encodings can be waited for, and the way to wait.
    fn slot(protocol: Protocol) -> (ImageSlot, impl Fn()) {
        let (tx, rx) = mpsc::channel();
        let slot = ImageSlot::with_waker(graphics(protocol), move || {
            let _ = tx.send(());
        });
        // Generous: only guards against a hang, the encodings take milliseconds.
        let wait = move || rx.recv_timeout(Duration::from_secs(60)).expect("the worker finished an encoding");
        (slot, wait)
    }

    fn solid(rgb: [u8; 3]) -> RgbImage {
        RgbImage::from_pixel(64, 64, image::Rgb(rgb))
    }

    fn render(slot: &mut ImageSlot, area: Rect) -> Buffer {
        let mut buf = Buffer::empty(Rect::new(0, 0, 40, 20));
        slot.render(area, &mut buf, &Frame::plain(Route::Direct), None);
        buf
    }

    #[test]
    fn graphics_slot_encodes_off_thread_then_shows_the_image() {
        let (mut slot, wait) = slot(Protocol::Sixel);
        let area = Rect::new(0, 0, 40, 20);
        slot.set(gradient());
        // The first render only sends the job: nothing to show yet.
        assert_eq!(symbols(&render(&mut slot, area)).trim(), "");
        wait();
        assert!(slot.poll());
        assert!(!slot.poll(), "nothing new the second time");
        let buf = render(&mut slot, area);
        let text = symbols(&buf);
        assert!(buf[(0, 0)].symbol().contains("\x1bP") && text.contains('q') && text.contains("\x1b\\"));
        assert_eq!(slot.error(), None);
    }

    #[test]
    fn graphics_slot_replaces_the_image_and_keeps_the_old_one_until_then() {
        let (mut slot, wait) = slot(Protocol::Halfblocks);
        let area = Rect::new(0, 0, 20, 10);
        slot.set(solid([200, 0, 0]));
        render(&mut slot, area);
        wait();
        assert!(slot.poll());
        assert_eq!(render(&mut slot, area)[(10, 5)].bg, Color::Rgb(200, 0, 0));

        slot.set(solid([0, 0, 200]));
        // Sent, not finished: the red image is still what the pane shows.
        assert_eq!(render(&mut slot, area)[(10, 5)].bg, Color::Rgb(200, 0, 0));
        wait();
        assert!(slot.poll());
        let buf = render(&mut slot, area);
        assert_eq!(buf[(10, 5)].bg, Color::Rgb(0, 0, 200));
        assert_eq!(buf[(0, 0)].bg, Color::Rgb(0, 0, 200), "the image fills the pane");
    }

    #[test]
    fn graphics_slot_grows_with_the_pane_and_centres_the_image() {
        let (mut slot, wait) = slot(Protocol::Halfblocks);
        slot.set(solid([0, 150, 0]));
        render(&mut slot, Rect::new(0, 0, 10, 5));
        wait();
        slot.poll();
        let painted = |buf: &Buffer| buf.content().iter().filter(|c| c.bg == Color::Rgb(0, 150, 0)).count();
        assert_eq!(painted(&render(&mut slot, Rect::new(0, 0, 10, 5))), 50);

        // A wider pane: the old 10x5 encoding is centred until the 20x10 one arrives.
        let wide = Rect::new(0, 0, 40, 10);
        let buf = render(&mut slot, wide);
        assert_eq!(painted(&buf), 50);
        assert_eq!(buf[(15, 2)].bg, Color::Rgb(0, 150, 0));
        assert_eq!(buf[(14, 2)].bg, Color::Reset);
        wait();
        slot.poll();
        let buf = render(&mut slot, wide);
        assert_eq!(painted(&buf), 200);
        assert_eq!(buf[(10, 0)].bg, Color::Rgb(0, 150, 0));
        assert_eq!(buf[(9, 0)].bg, Color::Reset);
    }

    #[test]
    fn graphics_slot_survives_empty_tiny_and_offscreen_areas() {
        let (mut slot, wait) = slot(Protocol::Kitty { placeholders: true });
        slot.set(gradient());
        for area in [Rect::new(0, 0, 0, 0), Rect::new(5, 5, 0, 3), Rect::new(100, 100, 10, 10)] {
            assert_eq!(symbols(&render(&mut slot, area)).trim(), "");
        }
        render(&mut slot, Rect::new(39, 19, 1, 1));
        wait();
        assert!(slot.poll());
        let buf = render(&mut slot, Rect::new(30, 15, 20, 20));
        // Clipped to the buffer: the 1x1 encoding is shown at the clipped pane's centre, and a
        // new one for the 10x5 cells left of the pane is on its way.
        assert!(symbols(&buf).contains("\x1b_G"));
        wait();
        assert!(slot.poll());
        let buf = render(&mut slot, Rect::new(30, 15, 20, 20));
        let placeholders = buf.content().iter().filter(|c| c.symbol().contains('\u{10EEEE}')).count();
        assert_eq!(placeholders, 50, "a square image fills 10x5 cells of 8x16 px");
    }

    #[test]
    fn graphics_slot_hides_a_placed_image_under_a_popup_and_reports_where_it_is() {
        let area = Rect::new(0, 0, 40, 20);
        let (mut sixel, wait) = slot(Protocol::Sixel);
        sixel.set(gradient());
        render(&mut sixel, area);
        wait();
        sixel.poll();
        let mut buf = Buffer::empty(area);
        // 32x32 px on 8x16 px cells, scaled to fill 40x20 cells: 40x20 cells, the whole pane
        let placed = sixel.render(area, &mut buf, &Frame::plain(Route::Direct), None);
        assert_eq!(placed, Some(area));
        assert!(buf[(0, 0)].symbol().contains("\x1bP"));

        let popup = Frame { hidden_under: vec![Rect::new(30, 15, 20, 3)], route: Route::Direct };
        let mut buf = Buffer::empty(area);
        assert_eq!(sixel.render(area, &mut buf, &popup, Some(area)), None, "under a popup, nowhere");
        assert_eq!(symbols(&buf).trim(), "", "and nothing drawn");
        let beside = Frame { hidden_under: vec![Rect::new(0, 25, 20, 3)], route: Route::Direct };
        assert_eq!(sixel.render(area, &mut Buffer::empty(area), &beside, None), Some(area));

        // kitty's placeholders carry the image's pixels in their top-left cell: hidden too
        let (mut kitty, wait) = slot(Protocol::Kitty { placeholders: true });
        kitty.set(gradient());
        render(&mut kitty, area);
        wait();
        kitty.poll();
        let mut buf = Buffer::empty(area);
        assert_eq!(kitty.render(area, &mut buf, &popup, None), None);
        assert!(!symbols(&buf).contains("\x1b_G") && !symbols(&buf).contains('\u{10EEEE}'));

        // half-blocks are cells: the popup drawn after them simply replaces them
        let (mut cells, wait) = slot(Protocol::Halfblocks);
        cells.set(gradient());
        render(&mut cells, area);
        wait();
        cells.poll();
        let mut buf = Buffer::empty(area);
        assert_eq!(cells.render(area, &mut buf, &popup, None), None);
        assert!(symbols(&buf).contains('▀') || symbols(&buf).contains('▄'));
    }
}
