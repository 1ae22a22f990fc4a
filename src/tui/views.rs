//! The plain data the worker sends the UI: numbers, token rows and RGB images.
//! Nothing here holds a tensor, so drawing never waits on the model.

use std::time::Duration;

use image::RgbImage;

use crate::model::tokenizer::TokenizedPrompt;
use crate::model::unet::StepTaps;
use crate::preview::{Stats, TokenStats};
use crate::session::Settings;

/// What the header and the schedule chart need to know about the loaded model and run.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub name: String,
    pub device: String,
    pub dtype: String,
    pub width: usize,
    pub height: usize,
    pub vae_scale_factor: usize,
    pub scheduler_class: String,
    /// The sampler the run uses (`ddim`, `euler_a`, ...).
    pub sampler: String,
    pub prediction_type: String,
    pub timestep_spacing: String,
    pub steps: usize,
    pub timesteps: Vec<Timestep>,
    /// `alpha_prod_t` at every scheduled timestep, for the chart over the schedule.
    pub alpha_prod_t: Vec<f64>,
    /// The run's settings as the worker has them (those of an opened session).
    pub settings: Settings,
    /// Replaying: the steps the recording holds (it may stop before the schedule ends).
    pub recorded_steps: Option<usize>,
    pub loras: LoraView,
}

/// The LoRAs fused into the model, and where they act.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoraView {
    /// `FILE:SCALE` per LoRA, in order: what `L` edits.
    pub specs: Vec<String>,
    /// Per text-encoder layer and UNet block, `|delta W| / |W|` of the weights the LoRAs change.
    pub blocks: Vec<(String, f64)>,
}

/// Stage 1 for the screen: both prompts' tokens and their embeddings' statistics.
#[derive(Clone, Debug)]
pub struct EncodeView {
    pub prompt: TokenizedPrompt,
    pub negative: TokenizedPrompt,
    /// `[2, 77, D]`
    pub shape: Vec<usize>,
    pub dtype: String,
    pub prompt_stats: Stats,
    pub negative_stats: Stats,
    pub prompt_tokens: Vec<TokenStats>,
    pub negative_tokens: Vec<TokenStats>,
    /// Cosine similarity of prompt and negative embedding at each position.
    pub cosine: Vec<f64>,
    /// The whole `(2 x 77) x D` embedding, negative above prompt.
    pub heatmap: RgbImage,
}

/// Stage 2 for the screen: the initial noise (image to image: the picture's
/// latent with noise added).
#[derive(Clone, Debug)]
pub struct LatentView {
    pub seed: u64,
    pub shape: Vec<usize>,
    pub channel_stats: Vec<Stats>,
    pub channels: Vec<RgbImage>,
    pub rgb: RgbImage,
    pub img2img: Option<Img2ImgView>,
}

/// Image to image on the get_latent screen: the picture, its encoded latent, and
/// where in the schedule the noised latent starts.
#[derive(Clone, Debug)]
pub struct Img2ImgView {
    pub path: String,
    pub strength: f64,
    pub picture: RgbImage,
    /// `image_latents` as colour.
    pub encoded: RgbImage,
    /// The first timestep the run keeps, which the picture is noised to.
    pub first_timestep: Timestep,
    /// The run's sampler calls, and the whole schedule's steps.
    pub calls: usize,
    pub steps: usize,
}

/// A timestep as the UNet gets it: whole for DDIM, fractional for Karras sigmas;
/// shown without decimals when whole.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timestep(pub f64);

impl std::fmt::Display for Timestep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.fract() == 0.0 {
            write!(f, "{}", self.0)
        } else {
            write!(f, "{:.2}", self.0)
        }
    }
}

/// Where a step lands: DDIM's previous timestep, or a sigma sampler's next sigma.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Landing {
    /// DDIM's `prev_timestep`, negative after the last step.
    Timestep(i64),
    /// The sigma the step starts from, and the one it lands on.
    Sigma { sigma: f64, next: f64 },
}

impl std::fmt::Display for Landing {
    /// What the latent after the step is at: `t = ...` or `sigma = ...`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timestep(t) => write!(f, "t = {}", t.max(&0)),
            Self::Sigma { next, .. } => write!(f, "sigma = {next:.4}"),
        }
    }
}

/// One denoising step for the screen: the scheduler's values and both latents as previews.
#[derive(Clone, Debug)]
pub struct StepView {
    pub index: usize,
    pub timestep: Timestep,
    pub landing: Landing,
    pub alpha_prod_t: f64,
    /// The noise level the step lands on, as alpha_prod (`1 / (1 + sigma^2)` for sigmas).
    pub alpha_prod_t_prev: f64,
    pub beta_prod_t: f64,
    pub guidance_scale: f64,
    /// x_t after this step (the scheduler's `prev_sample`).
    pub latent_rgb: RgbImage,
    /// The scheduler's predicted x0 at this step.
    pub x0_rgb: RgbImage,
    /// Whether both pictures are the VAE's decodes (small images) rather than the
    /// latent preview.
    pub decoded: bool,
    pub latent_stats: Stats,
    pub x0_stats: Stats,
    pub elapsed: Duration,
    /// The UNet's pass at this step, as plain numbers: each block's output shape and
    /// statistics, and every prompt token's attention map (the `u` and `a` views).
    /// `None` for steps that came from a saved session, which does not keep them.
    pub taps: Option<StepTaps>,
}

/// A picture decoded by the VAE.
#[derive(Clone, Debug)]
pub struct DecodedView {
    pub image: RgbImage,
    /// Which latent it came from: `None` for the current x_t, `Some(i)` for step i's predicted x0.
    pub from_x0_of_step: Option<usize>,
    /// Steps taken when the current latent was decoded.
    pub steps_done: usize,
    pub elapsed: Duration,
}

/// The runs of the session (its main run and its branches), for the branch bar.
#[derive(Clone, Debug, PartialEq)]
pub struct BranchBar {
    /// `main` first, then the branches in the order they were made.
    pub runs: Vec<BranchEntry>,
    /// Which of `runs` is on screen.
    pub active: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BranchEntry {
    pub name: String,
    /// A branch: its parent's name and the step it forked at.
    pub fork: Option<(String, usize)>,
    pub steps_done: usize,
    pub guidance_scale: f64,
}

/// Two runs' x0 at the same step, side by side, and where they differ.
#[derive(Clone, Debug)]
pub struct CompareView {
    /// Steps taken (1-based) of the step compared.
    pub step: usize,
    pub left: CompareSide,
    pub right: CompareSide,
    /// |left - right| per pixel, white where equal (none when a side lacks the step).
    pub difference: Option<RgbImage>,
    /// The largest per-pixel difference, 0 to 1 (mean over the three channels).
    pub max_difference: f32,
}

#[derive(Clone, Debug)]
pub struct CompareSide {
    pub name: String,
    pub steps_done: usize,
    pub calls: usize,
    /// The x0 after `step` steps; none when this run has not taken it.
    pub x0: Option<RgbImage>,
    /// Whether `x0` is the VAE's decode (else the latent preview).
    pub decoded: bool,
}
