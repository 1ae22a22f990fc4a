//! Talk mode: the four stages as slides for a projector, each with the source of the
//! function that runs it (read from sdlab's own files at build time), the lines of the
//! current operation highlighted and the run's values beside them. PageDown / PageUp walk
//! through the stages and, on the denoise slide, through each step's three operations,
//! so a speaker presents a live run or a replayed session with one hand.
//!
//! The walk is state in the [`App`](super::app::App) ([`Talk`]), moved by [`walk`]; what a
//! slide shows of the code is [`slides`]; drawing is `ui::talk`.

pub mod code_panel;
pub mod slides;
pub mod source;
pub mod theme;
pub mod walk;

pub use theme::{Theme, ThemeChoice};

use super::i18n::Lang;

/// Talk mode's state: whether it is on, how it looks, and where the denoise slide is.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Talk {
    pub on: bool,
    pub lang: Lang,
    pub theme: Theme,
    /// The light or dark theme the terminal's background calls for: where `c` goes back
    /// to from high contrast.
    pub plain: Theme,
    pub denoise: DenoiseAt,
}

/// Where the walk through the denoise slide is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DenoiseAt {
    /// The slide's code and inputs, before its first step.
    #[default]
    Intro,
    /// Step `index` (0-based), at one of its operations.
    Step { index: usize, op: DenoiseOp },
}

/// The three things a denoising step does, in the order `denoise_step` does them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenoiseOp {
    /// The latent (twice) through the UNet: its noise prediction.
    Unet,
    /// Classifier-free guidance mixes the two predictions.
    Guidance,
    /// The scheduler step: the next latent and the predicted x0.
    Scheduler,
}

impl DenoiseAt {
    /// The step this position is at, if any.
    pub fn step(self) -> Option<usize> {
        match self {
            DenoiseAt::Intro => None,
            DenoiseAt::Step { index, .. } => Some(index),
        }
    }

    /// The end of step `index`, where a step computed outside the walk is shown.
    pub fn done(index: usize) -> Self {
        DenoiseAt::Step { index, op: DenoiseOp::Scheduler }
    }
}

impl Talk {
    /// A step arrived. The walk asked for it when it is at (or, queued, past) that step;
    /// otherwise it came from `n`, Space or `g`, and the slide follows it to its end.
    pub fn stepped(&mut self, index: usize) {
        if self.denoise.step().is_none_or(|at| at < index) {
            self.denoise = DenoiseAt::done(index);
        }
    }

    /// The history now has `steps` steps: a position past them moves to the last one.
    pub fn rewound(&mut self, steps: usize) {
        if self.denoise.step().is_some_and(|at| at >= steps) {
            self.denoise = steps.checked_sub(1).map_or(DenoiseAt::Intro, DenoiseAt::done);
        }
    }
}
