//! PageDown and PageUp in talk mode: one press, one thing to talk about. Forward, a
//! slide first shows its code, then runs its stage (or reveals the recorded result),
//! then moves to the next slide; on the denoise slide each step is walked through its
//! three operations. Back only moves the view: nothing computed is dropped, so a
//! speaker can go back to a slide and forward again without waiting.

use image::RgbImage;

use super::{DenoiseAt, DenoiseOp};
use crate::tui::app::{App, Screen};
use crate::tui::views::Timestep;
use crate::tui::worker::Command;

impl App {
    /// PageDown: the next thing to show. Like PageUp it clears the status line: on a
    /// slide, an old message is noise for the room.
    pub fn talk_forward(&mut self) -> Vec<Command> {
        self.status = None;
        let idle = self.busy.is_none();
        match self.screen {
            Screen::EncodePrompt if self.encode.is_none() => {
                if idle {
                    return vec![self.encode_command()];
                }
            }
            Screen::EncodePrompt => self.screen = Screen::GetLatent,
            Screen::GetLatent if self.latent.is_none() => {
                if idle {
                    return vec![Command::GetLatent { seed: self.seed }];
                }
            }
            Screen::GetLatent => {
                self.screen = Screen::Denoise;
                self.talk.denoise = DenoiseAt::Intro;
            }
            Screen::Denoise => {
                let next = match self.talk.denoise {
                    DenoiseAt::Intro => 0,
                    DenoiseAt::Step { index, op: DenoiseOp::Unet } => {
                        self.talk.denoise = DenoiseAt::Step { index, op: DenoiseOp::Guidance };
                        return Vec::new();
                    }
                    DenoiseAt::Step { index, op: DenoiseOp::Guidance } => {
                        self.talk.denoise = DenoiseAt::done(index);
                        return Vec::new();
                    }
                    DenoiseAt::Step { index, op: DenoiseOp::Scheduler } => index + 1,
                };
                if next >= self.talk_steps() {
                    self.screen = Screen::VaeDecode;
                    return Vec::new();
                }
                self.talk.denoise = DenoiseAt::Step { index: next, op: DenoiseOp::Unet };
                if next >= self.history.len() {
                    // queue it like `n` does: a press while a step runs asks for one more
                    self.running = false;
                    self.target = Some(self.target.unwrap_or(0).max(next + 1));
                    return self.next_step();
                }
            }
            Screen::VaeDecode if self.decoded.is_none() => {
                if idle {
                    return vec![Command::Decode];
                }
            }
            Screen::VaeDecode => self.talk_note_last_slide(),
        }
        Vec::new()
    }

    /// PageUp: the previous thing shown.
    pub fn talk_back(&mut self) {
        self.status = None;
        match self.screen {
            Screen::EncodePrompt => {}
            Screen::GetLatent => self.screen = Screen::EncodePrompt,
            Screen::Denoise => {
                self.talk.denoise = match self.talk.denoise {
                    DenoiseAt::Intro => {
                        self.screen = Screen::GetLatent;
                        DenoiseAt::Intro
                    }
                    DenoiseAt::Step { index: 0, op: DenoiseOp::Unet } => DenoiseAt::Intro,
                    DenoiseAt::Step { index, op: DenoiseOp::Unet } => DenoiseAt::done(index - 1),
                    DenoiseAt::Step { index, op: DenoiseOp::Guidance } => {
                        DenoiseAt::Step { index, op: DenoiseOp::Unet }
                    }
                    DenoiseAt::Step { index, op: DenoiseOp::Scheduler } => {
                        DenoiseAt::Step { index, op: DenoiseOp::Guidance }
                    }
                };
            }
            Screen::VaeDecode => {
                self.screen = Screen::Denoise;
                self.talk.denoise = self.history.len().checked_sub(1).map_or(DenoiseAt::Intro, DenoiseAt::done);
            }
        }
    }

    /// `t`: talk mode on or off. Turned on at the denoise screen, the slide starts at
    /// the step the screen showed.
    pub fn toggle_talk(&mut self) {
        self.talk.on = !self.talk.on;
        if self.talk.on {
            self.talk.denoise = self.shown_step().map_or(DenoiseAt::Intro, |s| DenoiseAt::done(s.index));
        }
    }

    /// The steps the walk can reach: the schedule's, or fewer when replaying a recording
    /// that stopped early.
    pub fn talk_steps(&self) -> usize {
        let total = self.total_steps();
        self.info.as_ref().and_then(|i| i.recorded_steps).map_or(total, |recorded| recorded.min(total))
    }

    /// The timestep of step `index` (0-based): the recorded one once taken, else the
    /// schedule's, so a step being computed already shows its `t`.
    pub fn talk_timestep(&self, index: usize) -> Option<Timestep> {
        let scheduled = || self.info.as_ref().and_then(|i| i.timesteps.get(index).copied());
        self.history.get(index).map(|s| s.timestep).or_else(scheduled)
    }

    fn talk_note_last_slide(&mut self) {
        self.status = Some((crate::tui::app::Level::Info, self.talk.lang.labels().last_slide.into()));
    }

    /// The pictures of the denoise slide at the walk's position: the latents going into
    /// the step until its scheduler step is shown, coming out of it after; the predicted
    /// x0 of this step once shown, else of the step before.
    pub fn talk_denoise_pictures(&self) -> DenoisePictures<'_> {
        let initial = || self.latent.as_ref().map(|l| &l.rgb);
        let DenoiseAt::Step { index, op } = self.talk.denoise else {
            return DenoisePictures { latents: initial(), latents_out: false, x0: None, x0_step: None };
        };
        if let (DenoiseOp::Scheduler, Some(step)) = (op, self.history.get(index)) {
            let x0 = Some(&step.x0_rgb);
            return DenoisePictures { latents: Some(&step.latent_rgb), latents_out: true, x0, x0_step: Some(index) };
        }
        let before = index.checked_sub(1).and_then(|i| self.history.get(i));
        DenoisePictures {
            latents: before.map_or_else(initial, |s| Some(&s.latent_rgb)),
            latents_out: false,
            x0: before.map(|s| &s.x0_rgb),
            x0_step: before.map(|s| s.index),
        }
    }
}

/// What the denoise slide's two image panes show.
pub struct DenoisePictures<'a> {
    pub latents: Option<&'a RgbImage>,
    /// The latents are the step's output (else its input).
    pub latents_out: bool,
    pub x0: Option<&'a RgbImage>,
    /// The step (0-based) whose predicted x0 is shown.
    pub x0_step: Option<usize>,
}
