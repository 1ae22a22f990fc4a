//! The pipeline session: one run of Stable Diffusion, driven one stage and one
//! timestep at a time, keeping every intermediate readable.
//!
//! The four stages are explicit calls, in the order of the talk:
//! [`Session::encode_prompt`], [`Session::get_latent`], [`Session::step`] (or
//! [`Session::run_to`]) and [`Session::vae_decode`]. Calling one before what it
//! needs is an error that says what to call first. Changing a setting drops the
//! results that depended on it, and only those.

mod branch;
mod clock;
mod fingerprint;
mod folder;
mod format;
mod listing;
pub mod picture;
mod record;
mod reopen;
mod settings;
pub mod store;
pub mod trace;

use std::sync::Arc;

use anyhow::{bail, Result};
use candle_core::Tensor;

use crate::model::unet::{StepTaps, TapRecorder, UNetObserver};
use crate::model::StableDiffusion;
use crate::rng::torch::TorchRng;
use crate::scheduler::Sampler;
use crate::stages::{self, DenoiseStep, Guidance, PromptEncoding};
pub use branch::{fork_digest, Change, Fork, Segment};
pub use settings::{Field, Img2Img, Limits, Origin, SettingError, Settings, DEFAULT_STRENGTH, MAX_GUIDANCE, MAX_SIDE};

/// Where a run stands, in the talk's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Nothing computed yet.
    Start,
    EncodePrompt,
    GetLatent,
    /// `n` of the scheduled steps taken.
    Denoise(usize),
    VaeDecode,
}

/// The initial noise and the generator right after drawing it, so that the
/// denoising loop can restart from step 0 exactly (eta noise included).
#[derive(Clone)]
struct Latent {
    init_latents: Tensor,
    /// Image to image: the picture's latent before the noise.
    image_latents: Option<Tensor>,
    rng_after: TorchRng,
}

/// One step taken, with the generator state after it (for exact rewinding).
pub struct StepRecord {
    pub index: usize,
    pub denoise: DenoiseStep,
    rng_after: TorchRng,
    /// The UNet's block table and attention maps, when the session records them
    /// (the lab does; a reopened session has none, they are not saved).
    pub taps: Option<StepTaps>,
}

impl StepRecord {
    /// The same step; its tensors are shared, not copied.
    pub(crate) fn share(&self) -> StepRecord {
        let d = &self.denoise;
        let denoise = DenoiseStep {
            guidance_scale: d.guidance_scale,
            noise_pred_uncond: d.noise_pred_uncond.clone(),
            noise_pred_text: d.noise_pred_text.clone(),
            guided_model_output: d.guided_model_output.clone(),
            scheduler: d.scheduler.clone(),
        };
        StepRecord { index: self.index, denoise, rng_after: self.rng_after.clone(), taps: self.taps.clone() }
    }
}

/// One run: the model, its settings, and everything computed so far.
pub struct Session {
    /// Shared with the run's branches.
    model: Arc<StableDiffusion>,
    settings: Settings,
    sampler: Sampler,
    encoding: Option<PromptEncoding>,
    latent: Option<Latent>,
    history: Vec<StepRecord>,
    image: Option<Tensor>,
    /// Image to image: the picture (`settings.img2img` says which).
    init_image: Option<image::RgbImage>,
    /// When the session was first saved, kept across saves; `None` until then.
    created: Option<String>,
    /// Observe each UNet pass (see `StepRecord::taps`); off unless asked for.
    record_taps: bool,
    /// The largest image side the settings may ask for.
    max_side: usize,
    /// Where a branch leaves its parent; `None` for a session's main run.
    fork: Option<Fork>,
}

impl Session {
    /// Checks the settings against the model (size vs VAE factor, steps vs schedule)
    /// and the limits (sides up to [`MAX_SIDE`]).
    pub fn new(model: impl Into<Arc<StableDiffusion>>, settings: Settings) -> Result<Self> {
        Self::new_with(model, settings, false)
    }

    /// [`Session::new`], with sides past [`MAX_SIDE`] allowed when `allow_large`.
    pub fn new_with(model: impl Into<Arc<StableDiffusion>>, settings: Settings, allow_large: bool) -> Result<Self> {
        let model = model.into();
        let max_side = Limits::max_side(allow_large);
        settings.check(&Limits::of_model(&model, max_side))?;
        let sampler = settings.sampler(&model.scheduler_config)?;
        Ok(Self {
            model,
            settings,
            sampler,
            encoding: None,
            latent: None,
            history: Vec::new(),
            image: None,
            init_image: None,
            created: None,
            record_taps: false,
            max_side,
            fork: None,
        })
    }

    pub fn model(&self) -> &StableDiffusion {
        &self.model
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn sampler(&self) -> &Sampler {
        &self.sampler
    }

    /// Stage 1's result, once computed.
    pub fn encoding(&self) -> Option<&PromptEncoding> {
        self.encoding.as_ref()
    }

    /// Stage 2's result, once computed.
    pub fn init_latents(&self) -> Option<&Tensor> {
        self.latent.as_ref().map(|l| &l.init_latents)
    }

    /// Image to image: the picture the run starts from, once set.
    pub fn init_image(&self) -> Option<&image::RgbImage> {
        self.init_image.as_ref()
    }

    /// Image to image: the picture's latent (before the noise), once computed.
    pub fn image_latents(&self) -> Option<&Tensor> {
        self.latent.as_ref().and_then(|l| l.image_latents.as_ref())
    }

    /// Gives an image-to-image run its picture: the one `settings.img2img` names
    /// (same pixels, by sha256) at the settings' size. The latent is drawn again.
    pub fn set_init_image(&mut self, picture: image::RgbImage) -> Result<()> {
        let Some(img2img) = &self.settings.img2img else {
            bail!("this run is text to image: set settings.img2img before giving it a picture");
        };
        let sha = picture::pixels_sha256(&picture);
        if sha != img2img.sha256 {
            bail!(
                "{}: these pixels (sha256 {sha}) are not the picture the run was made with ({})",
                img2img.image,
                img2img.sha256
            );
        }
        let (w, h) = (picture.width() as usize, picture.height() as usize);
        if (w, h) != (self.settings.width, self.settings.height) {
            bail!(
                "{}: the picture is {w}x{h}, the run is {}x{}",
                img2img.image,
                self.settings.width,
                self.settings.height
            );
        }
        self.init_image = Some(picture);
        self.latent = None;
        self.reset_denoise();
        Ok(())
    }

    /// x_t: the initial noise before any step, then each step's `prev_sample`.
    pub fn latents(&self) -> Option<&Tensor> {
        match self.history.last() {
            Some(record) => Some(record.denoise.scheduler.prev_sample()),
            None => self.init_latents(),
        }
    }

    /// Whether the next steps record the UNet's taps (block table, attention maps).
    pub fn set_record_taps(&mut self, on: bool) {
        self.record_taps = on;
    }

    /// Every step taken so far, in order.
    pub fn history(&self) -> &[StepRecord] {
        &self.history
    }

    /// Stage 4's result: `(1, 3, H, W)` in [0, 1], once decoded.
    pub fn image(&self) -> Option<&Tensor> {
        self.image.as_ref()
    }

    /// The furthest stage reached.
    pub fn stage(&self) -> Stage {
        if self.image.is_some() {
            Stage::VaeDecode
        } else if !self.history.is_empty() {
            Stage::Denoise(self.history.len())
        } else if self.latent.is_some() {
            Stage::GetLatent
        } else if self.encoding.is_some() {
            Stage::EncodePrompt
        } else {
            Stage::Start
        }
    }

    /// True once every scheduled step has been taken.
    pub fn is_denoised(&self) -> bool {
        self.history.len() == self.calls()
    }

    /// How many sampler steps (UNet calls and `scheduler.step`s) the run takes:
    /// `settings.steps`, and one more for PNDM, whose second step is a correction.
    pub fn calls(&self) -> usize {
        self.sampler.calls()
    }

    /// Stage 1: tokenize and encode both prompts.
    pub fn encode_prompt(&mut self) -> Result<&PromptEncoding> {
        let m = &self.model;
        let encoding = stages::encode_prompt(
            &m.tokenizer,
            &*m.text_encoder.get()?,
            &self.settings.prompt,
            &self.settings.negative_prompt,
            m.device(),
        )?;
        // Not needed again until the prompt changes; on the CPU its memory goes.
        m.text_encoder.release();
        self.reset_denoise();
        Ok(self.encoding.insert(encoding))
    }

    /// Stage 2: draw the initial noise from the seed; image to image, encode the
    /// picture and noise it to the run's first timestep, with the same generator.
    pub fn get_latent(&mut self) -> Result<&Tensor> {
        let m = &self.model;
        let shape = stages::latent_shape(
            m.unet_config.in_channels,
            self.settings.width,
            self.settings.height,
            m.vae_scale_factor(),
        );
        let mut rng = TorchRng::new(self.settings.seed);
        let (init_latents, image_latents) = match (&self.settings.img2img, &self.init_image) {
            (None, _) => {
                let noise =
                    stages::get_latent(&mut rng, shape, self.sampler.init_noise_sigma(), m.device(), m.dtype())?;
                (noise, None)
            }
            (Some(i), None) => bail!("get_latent: image to image needs its picture ({}): set it first", i.image),
            (Some(_), Some(rgb)) => {
                let pixels = picture::picture_tensor(rgb, m.device())?;
                let image_latents = stages::encode_image(&m.vae, &m.vae_config, m.vae_dtype, &pixels, &mut rng)?;
                let image_latents = image_latents.to_dtype(m.dtype())?;
                let init = stages::noise_image_latents(&self.sampler, &image_latents, &mut rng)?;
                (init, Some(image_latents))
            }
        };
        check_finite(&init_latents).map_err(|what| anyhow::anyhow!("get_latent: the initial latent {what}"))?;
        self.reset_denoise();
        let latent = self.latent.insert(Latent { init_latents, image_latents, rng_after: rng });
        Ok(&latent.init_latents)
    }

    /// Stage 3, one timestep: UNet on the current latent (negative + prompt),
    /// guidance, DDIM step.
    pub fn step(&mut self) -> Result<&StepRecord> {
        let Some(encoding) = &self.encoding else {
            bail!("denoise needs prompt_embeds: run encode_prompt first");
        };
        let Some(latent) = &self.latent else {
            bail!("denoise needs the initial latent: run get_latent first");
        };
        let index = self.history.len();
        let Ok(timestep) = self.sampler.timestep(index) else {
            bail!("all {} denoising steps are done: decode, or change the settings to run again", self.calls());
        };
        let (latents, mut rng) = match self.history.last() {
            Some(last) => (last.denoise.scheduler.prev_sample(), last.rng_after.clone()),
            None => (&latent.init_latents, latent.rng_after.clone()),
        };
        let guide = Guidance { guidance_scale: self.settings.guidance_scale, eta: self.settings.eta };
        let (_, _, h, w) = latents.dims4()?;
        let mut recorder = self.record_taps.then(|| TapRecorder::new((h, w)));
        let denoise = stages::denoise_step(
            &self.model.unet,
            &self.sampler,
            latents,
            &self.history.iter().map(|r| &r.denoise.scheduler).collect::<Vec<_>>(),
            &encoding.prompt_embeds,
            index,
            guide,
            &mut rng,
            recorder.as_mut().map(|r| r as &mut dyn UNetObserver),
        )?;
        let taps = recorder.map(TapRecorder::finish).transpose()?;
        for (name, latent) in [
            ("prev_sample", denoise.scheduler.prev_sample()),
            ("pred_original_sample", denoise.scheduler.pred_original_sample()),
        ] {
            check_finite(latent).map_err(|what| {
                anyhow::anyhow!(
                    "denoise step {} of {} (t={timestep}): {name} {what}; stopped here rather than go on with no picture \
                     (guidance {}, eta {}, {}; --dtype f32 avoids float16 overflow)",
                    index + 1,
                    self.calls(),
                    self.settings.guidance_scale,
                    self.settings.eta,
                    self.model.dtype().as_str()
                )
            })?;
        }
        self.image = None;
        self.history.push(StepRecord { index, denoise, rng_after: rng, taps });
        Ok(self.history.last().expect("just pushed"))
    }

    /// Takes steps until `steps` of them are done, or rewinds to that point (the
    /// later steps are dropped; the generator state of step `steps` is restored).
    pub fn run_to(&mut self, steps: usize) -> Result<()> {
        if steps > self.calls() {
            bail!("run_to {steps}: this run has only {} steps", self.calls());
        }
        if steps < self.history.len() {
            self.history.truncate(steps);
            self.image = None;
        }
        self.rewind_fork(steps);
        while self.history.len() < steps {
            self.step()?;
        }
        Ok(())
    }

    /// Stage 4: decode the current latent into an image.
    pub fn vae_decode(&mut self) -> Result<&Tensor> {
        let Some(latents) = self.latents() else {
            bail!("vae_decode needs a latent: run get_latent (and denoise) first");
        };
        let image = self.decode(latents)?;
        Ok(self.image.insert(image))
    }

    /// Decodes any latent (a predicted x0, say) without changing the run.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let m = &self.model;
        let image = stages::vae_decode(&m.vae, &m.vae_config, m.vae_dtype, latents)?;
        check_finite(&image).map_err(|what| {
            anyhow::anyhow!("vae_decode: the image {what} (the VAE ran in {})", m.vae_dtype.as_str())
        })?;
        Ok(image)
    }

    /// Changes the guidance scale for the steps still to come; steps already taken
    /// keep the scale they were taken with (see [`DenoiseStep::guidance_scale`]).
    pub fn set_guidance_scale(&mut self, guidance_scale: f64) -> Result<()> {
        let settings = Settings { guidance_scale, ..self.settings.clone() };
        settings.check(&Limits::of_model(&self.model, self.max_side))?;
        self.settings = settings;
        Ok(())
    }

    /// Replaces the settings, dropping exactly the results that depended on what changed:
    /// prompts drop the encoding, seed, size or sampler the latent (its scale is the
    /// sampler's), steps, eta or sampler the schedule,
    /// and each of those the denoising history and the image.
    pub fn update_settings(&mut self, settings: Settings) -> Result<()> {
        settings.check(&Limits::of_model(&self.model, self.max_side))?;
        let old = std::mem::replace(&mut self.settings, settings);
        let old_sampler = self.sampler.clone();
        let new = &self.settings;
        if (old.steps, old.scheduler, &old.img2img) != (new.steps, new.scheduler, &new.img2img) {
            self.sampler = new.sampler(&self.model.scheduler_config)?;
        }
        if old.img2img.as_ref().map(|i| &i.sha256) != new.img2img.as_ref().map(|i| &i.sha256) {
            self.init_image = None;
        }
        if (old.prompt != new.prompt) || (old.negative_prompt != new.negative_prompt) {
            self.encoding = None;
        }
        let latent_changed = (old.seed, old.width, old.height, old.scheduler, &old.img2img)
            != (new.seed, new.width, new.height, new.scheduler, &new.img2img);
        if latent_changed {
            self.latent = None;
        }
        let denoise_inputs_changed = old.prompt != new.prompt
            || old.negative_prompt != new.negative_prompt
            || (old.seed, old.width, old.height, old.steps) != (new.seed, new.width, new.height, new.steps)
            || old.eta != new.eta
            || old.scheduler != new.scheduler
            || old.img2img != new.img2img;
        if latent_changed || self.sampler != old_sampler {
            self.unshare();
        }
        if denoise_inputs_changed {
            self.reset_denoise();
        }
        Ok(())
    }

    /// Drops the steps taken (a branch keeps those it shares with its parent) and the image.
    fn reset_denoise(&mut self) {
        self.history.truncate(self.fork_at());
        self.image = None;
    }
}

impl Limits {
    /// What `model` allows, with sides up to `max_side`.
    pub fn of_model(model: &StableDiffusion, max_side: usize) -> Self {
        Self {
            vae_scale_factor: model.vae_scale_factor(),
            num_train_timesteps: model.scheduler_config.num_train_timesteps,
            max_side,
        }
    }
}

/// `Err` with what is wrong when `t` holds a NaN or an infinity: one sum in f32 (a
/// NaN or infinity anywhere makes the sum one), cheap next to a UNet pass.
fn check_finite(t: &Tensor) -> Result<(), String> {
    let sum = t
        .to_dtype(candle_core::DType::F32)
        .and_then(|t| t.sum_all())
        .and_then(|t| t.to_scalar::<f32>())
        .map_err(|e| format!("could not be checked ({e})"))?;
    if sum.is_finite() {
        Ok(())
    } else {
        Err("holds NaN or infinite values".into())
    }
}
