//! A live [`Session`] to and from its [`SessionRecord`]: what a save writes, and
//! what puts a model back under a saved run so it goes on bit for bit.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use candle_core::Tensor;

use super::clock::now_rfc3339;
use super::record::{ModelInfo, RuntimeInfo};
use super::store::{SaveOptions, SessionRecord, SESSION_JSON};
use super::{Latent, Origin, Session, SettingError, StepRecord};
use crate::model::StableDiffusion;
use crate::stages::{DenoiseStep, PromptEncoding};

/// How [`Session::from_record`] treats a model that is not the one the session ran with.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenOptions {
    /// Go on with a different model (or scheduler config), with a warning.
    pub force: bool,
    /// Take image sides past [`super::MAX_SIDE`].
    pub allow_large: bool,
}

/// What a front end needs to go on after [`Session::from_record`].
pub struct Opened {
    pub session: Session,
    /// What differs from the run as saved (a different model accepted with
    /// `force`, another dtype or device): the result will not be bit-exact.
    pub warnings: Vec<String>,
}

impl Session {
    /// Everything this session holds, ready to save (tensors stay where they are
    /// until written; a clone of a candle tensor shares its storage).
    pub fn to_record(&self) -> Result<SessionRecord> {
        let now = now_rfc3339();
        Ok(SessionRecord {
            sdlab_version: env!("CARGO_PKG_VERSION").into(),
            created: self.created.clone().unwrap_or_else(|| now.clone()),
            saved: now,
            model: ModelInfo::of_model(&self.model)?,
            runtime: RuntimeInfo::of(&self.model),
            settings: self.settings.clone(),
            scheduler_config: self.model.scheduler_config.clone(),
            encoding: self.encoding.clone(),
            latent: self.latent.clone(),
            history: self.history.iter().map(StepRecord::share).collect(),
            image: self.image.clone(),
            init_image: self.init_image.clone(),
            recovered: None,
            fork: self.fork.clone(),
        })
    }

    /// Saves the session into the folder `dir`; an existing session there is
    /// replaced only with `options.force`, and a folder that is not a session never.
    pub fn save(&self, dir: &Path, options: SaveOptions) -> Result<()> {
        self.to_record()?.save(dir, options)
    }

    /// `image` as PNG bytes carrying this run's settings (the A1111 `parameters` text
    /// and the `sdlab` JSON chunk), so the picture remembers how it was made.
    pub fn png_with_settings(&self, image: &image::RgbImage) -> Result<Vec<u8>> {
        self.to_record()?.png_with_settings(image)
    }

    /// Opens the session saved in `dir` on `model` (see [`Session::from_record`]).
    pub fn open(dir: &Path, model: StableDiffusion, options: OpenOptions) -> Result<Opened> {
        let record = SessionRecord::load(dir)?;
        Self::from_record(model, record, options).map_err(|e| anyhow!("{}: {e}", dir.join(SESSION_JSON).display()))
    }

    /// Puts `model` under a saved run so it can go on: the model must be the one
    /// the run was saved with (same weights fingerprint and scheduler config) unless
    /// `options.force`. Tensors move to the model's device and dtype.
    pub fn from_record(
        model: impl Into<Arc<StableDiffusion>>,
        record: SessionRecord,
        options: OpenOptions,
    ) -> Result<Opened> {
        let model: Arc<StableDiffusion> = model.into();
        let mut warnings = Vec::new();
        let here = ModelInfo::of(&model.files)?;
        let mut mismatch = Vec::new();
        if here.fingerprint != record.model.fingerprint {
            mismatch.push(format!(
                "model {} has weights fingerprint {}, the session was saved with {} (fingerprint {})",
                here.source, here.fingerprint, record.model.source, record.model.fingerprint
            ));
        }
        if let Err(e) = record.model.check_loras(&model) {
            mismatch.push(e.to_string());
        }
        let settings = &record.settings;
        let here_sampler = settings.sampler(&model.scheduler_config);
        let same_schedule = matches!((here_sampler, record.sampler()), (Ok(a), Ok(b)) if a == b);
        if model.scheduler_config != record.scheduler_config || !same_schedule {
            mismatch.push(format!("model {} has another scheduler config than the session's", here.source));
        }
        for problem in mismatch {
            if !options.force {
                bail!("{problem}; use --force to go on anyway");
            }
            warnings.push(problem);
        }
        let runtime = RuntimeInfo::of(&model);
        if runtime != record.runtime {
            warnings.push(format!(
                "the session ran on {} {}, this run is on {} {}: results will not be bit-exact",
                record.runtime.device, record.runtime.dtype, runtime.device, runtime.dtype
            ));
        }
        check_against_model(&record, &model)?;
        let (device, dtype) = (model.device().clone(), model.dtype());
        let to = |t: &Tensor| -> Result<Tensor> { Ok(t.to_device(&device)?.to_dtype(dtype)?) };
        let encoding = match record.encoding {
            Some(e) => Some(PromptEncoding { prompt_embeds: to(&e.prompt_embeds)?, ..e }),
            None => None,
        };
        let latent = match record.latent {
            Some(l) => Some(Latent {
                init_latents: to(&l.init_latents)?,
                image_latents: l.image_latents.as_ref().map(to).transpose()?,
                rng_after: l.rng_after,
            }),
            None => None,
        };
        let mut history = Vec::with_capacity(record.history.len());
        for r in record.history {
            let d = r.denoise;
            let denoise = DenoiseStep {
                guidance_scale: d.guidance_scale,
                noise_pred_uncond: d.noise_pred_uncond.as_ref().map(to).transpose()?,
                noise_pred_text: to(&d.noise_pred_text)?,
                guided_model_output: to(&d.guided_model_output)?,
                scheduler: d.scheduler.map_tensors(to)?,
            };
            history.push(StepRecord { index: r.index, denoise, rng_after: r.rng_after, taps: r.taps });
        }
        let image = record.image.map(|t| t.to_device(&device)).transpose()?;
        let mut session = Session::new_with(model, record.settings, options.allow_large)
            .map_err(|e| SettingError::rename(e, Origin::SettingsJson))?;
        session.encoding = encoding;
        session.latent = latent;
        session.history = history;
        session.image = image;
        session.init_image = record.init_image;
        session.created = Some(record.created);
        session.fork = record.fork;
        Ok(Opened { session, warnings })
    }
}

/// Shapes that only the model can check: latent channels and size, text width.
fn check_against_model(record: &SessionRecord, model: &StableDiffusion) -> Result<()> {
    if let Some(init) = record.init_latents() {
        let s = &record.settings;
        let want =
            crate::stages::latent_shape(model.unet_config.in_channels, s.width, s.height, model.vae_scale_factor());
        if init.dims() != want {
            bail!("init_latents has shape {:?}, this model makes latents of shape {want:?}", init.dims());
        }
    }
    if let Some(enc) = &record.encoding {
        let width = enc.prompt_embeds.dim(2)?;
        if width != model.text_config.hidden_size {
            bail!("prompt_embeds are {width} wide, this model's text encoder makes {}", model.text_config.hidden_size);
        }
    }
    Ok(())
}
