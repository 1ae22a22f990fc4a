//! Session folders: a run saved to disk, opened again to resume it bit for bit,
//! or loaded without the model to replay it.
//!
//! ```text
//! sessions/<name>/
//!   session.json           format, model, settings, scheduler config, stage,
//!                          per-step scalars and generator states, timestamps
//!   tensors.safetensors    token ids, prompt_embeds, init_latents and, per step i,
//!                          steps.<i>.{noise_pred_uncond, noise_pred_text,
//!                          guided_model_output, pred_original_sample, pred_epsilon,
//!                          prev_sample}; image when decoded
//!   images/final.png       the decoded image (images/step-<k>.png if decoded early),
//!                          with its settings in text chunks (see crate::png_meta)
//!   images/init.png        image to image: the picture the run started from
//!                          (and image_latents in tensors.safetensors)
//! ```
//!
//! Other files in the folder are the user's and are kept. A save replaces the
//! folder in one atomic step, so a crash or a full disk leaves the old session or
//! the new one, never a mix (see [`super::folder`]). Tensors keep the run's dtype
//! and scalars their exact bits (serde_json is built with `float_roundtrip`), which
//! is what makes a resumed run equal an uninterrupted one.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use super::fingerprint::fingerprint;
pub use super::folder::{check_can_save, session_dir};
use super::folder::{recover, write_folder};
use super::format::{
    check_format, from_value, json_bytes, parse_session_json, stage_of, step_tensors, SessionFile, TensorError,
    TensorReader,
};
pub use super::listing::{list_sessions, Listing, SessionSummary};
use super::{Latent, Origin, Session, SettingError, Settings, Stage, StepRecord};
use crate::fsutil::{limits, open_regular, read_regular};
use crate::image_out::to_rgb8;
use crate::model::{ModelFiles, StableDiffusion};
use crate::png_meta::{encode_png, A1111Parameters, PARAMETERS_KEY, SDLAB_KEY};
use crate::scheduler::{Sampler, SchedulerConfig};
use crate::stages::{DenoiseStep, PromptEncoding};

/// The `format` this sdlab writes and reads; bumped on any change an older sdlab
/// would misread.
pub const FORMAT: u32 = 1;
pub const SESSION_JSON: &str = "session.json";
pub const TENSORS: &str = "tensors.safetensors";
pub const IMAGES: &str = "images";
/// Image to image: the starting picture's file in `images/`.
pub const INIT_IMAGE: &str = "init.png";
/// Where sessions go unless `--dir` says otherwise.
pub const DEFAULT_ROOT: &str = "sessions";

/// How [`Session::save`] treats a folder that already holds a session.
#[derive(Clone, Copy, Debug, Default)]
pub struct SaveOptions {
    /// Replace an existing session (never a folder that is not one).
    pub force: bool,
}

/// How [`Session::from_record`] treats a model that is not the one the session ran with.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenOptions {
    /// Go on with a different model (or scheduler config), with a warning.
    pub force: bool,
    /// Take image sides past [`super::MAX_SIDE`].
    pub allow_large: bool,
}

/// The model a session ran with: where it came from, and a fingerprint of its
/// weights that catches a different model under the same name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// A hub repo id (`owner/name[@revision]`) or an absolute folder path:
    /// something `--model` accepts.
    pub source: String,
    /// The weight file variant (`fp16`), if one was picked.
    pub variant: Option<String>,
    /// See [`fingerprint`].
    pub fingerprint: String,
}

impl ModelInfo {
    /// Describes a loaded model. A local folder's `ModelFiles::name` is the path as
    /// typed, a hub model's its repo id; the path is made absolute so that the
    /// session can be resumed from another working folder.
    pub fn of(files: &ModelFiles) -> Result<Self> {
        let root = files.root.path();
        let source = if !files.root.is_builtin() && Path::new(&files.name) == root {
            std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf()).display().to_string()
        } else {
            files.name.clone()
        };
        let file_name = files.unet_weights.file_name().unwrap_or_default();
        let variant = file_name
            .strip_prefix("diffusion_pytorch_model.")
            .and_then(|rest| rest.strip_suffix(".safetensors"))
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        Ok(Self { source, variant, fingerprint: fingerprint(files)? })
    }
}

/// Where the run's tensors lived: a resumed run is bit-exact on the same pair.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuntimeInfo {
    /// `cpu` or `cuda`.
    pub device: String,
    /// `f32`, `f16` or `bf16`: the dtype of every stored tensor except the image (f32).
    pub dtype: String,
}

impl RuntimeInfo {
    fn of(model: &StableDiffusion) -> Self {
        let device = if model.device().is_cuda() { "cuda" } else { "cpu" };
        Self { device: device.into(), dtype: model.dtype().as_str().into() }
    }

    pub(super) fn dtype(&self) -> Result<DType> {
        match self.dtype.parse::<DType>() {
            Ok(dtype @ (DType::F32 | DType::F16 | DType::BF16)) => Ok(dtype),
            _ => bail!("runtime.dtype: expected f32, f16 or bf16, found {:?}", self.dtype),
        }
    }
}

/// Everything that decides what a run computes, without its results: what an
/// image's `sdlab` text chunk holds, and enough to run it again from the start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageSettings {
    pub format: u32,
    pub sdlab_version: String,
    pub model: ModelInfo,
    pub runtime: RuntimeInfo,
    pub settings: Settings,
    /// The sampler's name, as `settings.scheduler` (kept for readers of format 1).
    pub scheduler: String,
    #[serde(
        deserialize_with = "super::format::scheduler_config",
        serialize_with = "super::format::write_scheduler_config"
    )]
    pub scheduler_config: SchedulerConfig,
    /// The guidance scale of each step taken, which differs from
    /// `settings.guidance_scale` where it was changed mid-run.
    pub guidance_scales: Vec<f64>,
}

impl ImageSettings {
    /// The AUTOMATIC1111-style `parameters` text for these settings.
    pub fn parameters(&self) -> A1111Parameters {
        let s = &self.settings;
        let mut params = vec![
            ("Steps".to_string(), s.steps.to_string()),
            ("Sampler".into(), s.scheduler.a1111_name().into()),
            ("CFG scale".into(), s.guidance_scale.to_string()),
            ("Seed".into(), s.seed.to_string()),
            ("Size".into(), format!("{}x{}", s.width, s.height)),
            ("Model".into(), self.model.source.clone()),
        ];
        if s.eta != 0.0 {
            params.push(("Eta".into(), s.eta.to_string()));
        }
        if let Some(i) = &s.img2img {
            params.push(("Denoising strength".into(), i.strength.to_string()));
        }
        params.push(("Version".into(), format!("sdlab {}", self.sdlab_version)));
        A1111Parameters { prompt: s.prompt.clone(), negative_prompt: s.negative_prompt.clone(), params }
    }

    /// The two text chunks of a PNG made with these settings.
    pub fn png_chunks(&self) -> Result<[(&'static str, String); 2]> {
        Ok([(PARAMETERS_KEY, self.parameters().to_text()), (SDLAB_KEY, serde_json::to_string(self)?)])
    }

    /// Reads an `sdlab` chunk; errors name the field.
    pub fn from_json(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| anyhow!("not valid JSON ({e})"))?;
        check_format(&value)?;
        from_value(value)
    }
}

/// What a saved session holds: its settings and every result, on the CPU in the
/// run's dtype. It needs no model: a replay walks the four stages from it, and
/// [`Session::from_record`] puts a model back under it to go on.
pub struct SessionRecord {
    /// The version of sdlab that wrote the session.
    pub sdlab_version: String,
    /// When the session was first saved, and last (RFC 3339, UTC).
    pub created: String,
    pub saved: String,
    pub model: ModelInfo,
    pub runtime: RuntimeInfo,
    pub settings: Settings,
    pub scheduler_config: SchedulerConfig,
    /// Stage 1's result.
    pub encoding: Option<PromptEncoding>,
    pub(super) latent: Option<Latent>,
    /// Every step taken, with each step's guidance scale and generator state.
    pub history: Vec<StepRecord>,
    /// Stage 4's result `(1, 3, H, W)` f32 in [0, 1], when decoded.
    pub image: Option<Tensor>,
    /// Image to image: the picture the run started from.
    pub init_image: Option<image::RgbImage>,
    /// Set by [`SessionRecord::load`] when it recovered the session from the
    /// leftovers of an interrupted save: what it did, to tell the user.
    pub recovered: Option<String>,
}

impl SessionRecord {
    /// Stage 2's result.
    pub fn init_latents(&self) -> Option<&Tensor> {
        self.latent.as_ref().map(|l| &l.init_latents)
    }

    /// Image to image: the picture's latent before the noise.
    pub fn image_latents(&self) -> Option<&Tensor> {
        self.latent.as_ref().and_then(|l| l.image_latents.as_ref())
    }

    /// The furthest stage reached, as [`Session::stage`].
    pub fn stage(&self) -> Stage {
        stage_of(self.encoding.is_some(), self.latent.is_some(), self.history.len(), self.image.is_some())
    }

    /// The sampler the run used (timesteps, alphas), built without a model.
    pub fn sampler(&self) -> Result<Sampler> {
        self.settings.sampler(&self.scheduler_config)
    }

    /// The settings to run this again from the start.
    pub fn image_settings(&self) -> ImageSettings {
        ImageSettings {
            format: FORMAT,
            sdlab_version: self.sdlab_version.clone(),
            model: self.model.clone(),
            runtime: self.runtime.clone(),
            settings: self.settings.clone(),
            scheduler: self.settings.scheduler.as_str().into(),
            scheduler_config: self.scheduler_config.clone(),
            guidance_scales: self.history.iter().map(|r| r.denoise.guidance_scale).collect(),
        }
    }

    /// `image` as PNG bytes carrying these settings (see [`Session::png_with_settings`]).
    pub fn png_with_settings(&self, image: &image::RgbImage) -> Result<Vec<u8>> {
        let chunks = self.image_settings().png_chunks()?;
        let chunks: Vec<(&str, &str)> = chunks.iter().map(|(k, v)| (*k, v.as_str())).collect();
        crate::png_meta::encode_png(image, &chunks)
    }

    /// Reads `dir/session.json` and `dir/tensors.safetensors`. Every problem is an
    /// error naming the file and what is wrong with it. A session an interrupted
    /// save left only beside `dir` is recovered first ([`SessionRecord::recovered`]).
    pub fn load(dir: &Path) -> Result<Self> {
        let recovered = recover(dir)?;
        if !dir.exists() {
            bail!("{}: no such session folder", dir.display());
        }
        if !dir.is_dir() {
            bail!("{}: not a folder, so not a session", dir.display());
        }
        let json_path = dir.join(SESSION_JSON);
        if std::fs::symlink_metadata(&json_path).is_err() {
            bail!("{}: a folder, but not a session (it has no {SESSION_JSON})", dir.display());
        }
        let json = read_regular(&json_path, limits::SESSION_JSON)?;
        let tensors = read_tensors(&dir.join(TENSORS))?;
        let mut record = Self::parse(dir, &json, &tensors)?;
        if let Some(img2img) = &record.settings.img2img {
            let path = dir.join(IMAGES).join(INIT_IMAGE);
            let bytes = read_regular(&path, limits::PNG)?;
            let rgb = image::load_from_memory(&bytes)
                .map_err(|e| anyhow!("{}: cannot read the picture ({e})", path.display()))?
                .to_rgb8();
            if super::picture::pixels_sha256(&rgb) != img2img.sha256 {
                bail!("{}: not the picture settings.img2img.sha256 names", path.display());
            }
            record.init_image = Some(rgb);
        }
        record.recovered = recovered;
        Ok(record)
    }

    /// [`SessionRecord::load`] on the two files' bytes; `dir` only names them in errors.
    pub fn parse(dir: &Path, json: &[u8], tensors: &[u8]) -> Result<Self> {
        let json_path = dir.join(SESSION_JSON);
        let file = parse_session_json(json).map_err(|e| anyhow!("{}: {e}", json_path.display()))?;
        let tensors_path = dir.join(TENSORS);
        let tensors = candle_core::safetensors::load_buffer(tensors, &Device::Cpu)
            .map_err(|e| anyhow!("{}: not a valid safetensors file ({e})", tensors_path.display()))?;
        let mut tensors = TensorReader::new(tensors);
        file.into_record(&mut tensors).map_err(|e| match e.downcast::<TensorError>() {
            Ok(TensorError(msg)) => anyhow!("{}: {msg}", tensors_path.display()),
            Err(e) => anyhow!("{}: {e}", json_path.display()),
        })
    }

    /// Writes the session folder `dir` (see the module docs for the layout).
    pub fn save(&self, dir: &Path, options: SaveOptions) -> Result<()> {
        let mut files = Vec::new();
        let mut image_path = None;
        if let Some(image) = &self.image {
            let calls = self.sampler().map_or(self.settings.steps, |s| s.calls());
            let name = if self.history.len() == calls {
                "final.png".to_string()
            } else {
                format!("step-{}.png", self.history.len())
            };
            let chunks = self.image_settings().png_chunks()?;
            let chunks: Vec<(&str, &str)> = chunks.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let png = encode_png(&to_rgb8(image)?, &chunks)?;
            let rel = format!("{IMAGES}/{name}");
            files.push((rel.clone(), png));
            image_path = Some(rel);
        }
        if let Some(picture) = &self.init_image {
            files.push((format!("{IMAGES}/{INIT_IMAGE}"), encode_png(picture, &[])?));
        }
        files.push((TENSORS.to_string(), self.tensor_bytes()?));
        let json = SessionFile::of(self, image_path);
        files.push((SESSION_JSON.to_string(), json_bytes(&json)?));
        write_folder(dir, &files, options.force)
    }

    fn tensor_bytes(&self) -> Result<Vec<u8>> {
        let ids = |ids: &[u32]| -> Result<Tensor> {
            Ok(Tensor::new(ids.iter().map(|&id| i64::from(id)).collect::<Vec<_>>(), &Device::Cpu)?)
        };
        let mut out: Vec<(String, Tensor)> = Vec::new();
        if let Some(enc) = &self.encoding {
            out.push(("input_ids".into(), ids(&enc.prompt.ids)?));
            out.push(("negative_input_ids".into(), ids(&enc.negative.ids)?));
            out.push(("prompt_embeds".into(), enc.prompt_embeds.clone()));
        }
        if let Some(latent) = &self.latent {
            out.push(("init_latents".into(), latent.init_latents.clone()));
            if let Some(image_latents) = &latent.image_latents {
                out.push(("image_latents".into(), image_latents.clone()));
            }
        }
        for (i, record) in self.history.iter().enumerate() {
            for (name, tensor) in step_tensors(&record.denoise) {
                if let Some(t) = tensor {
                    out.push((format!("steps.{i}.{name}"), t.clone()));
                }
            }
        }
        if let Some(image) = &self.image {
            out.push(("image".into(), image.clone()));
        }
        let out = out
            .into_iter()
            .map(|(name, t)| Ok((name, t.to_device(&Device::Cpu)?.contiguous()?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(safetensors::serialize(out.iter().map(|(name, t)| (name.as_str(), t)), None)?)
    }
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
            model: ModelInfo::of(&self.model.files)?,
            runtime: RuntimeInfo::of(&self.model),
            settings: self.settings.clone(),
            scheduler_config: self.model.scheduler_config.clone(),
            encoding: self.encoding.as_ref().map(|e| PromptEncoding {
                prompt: e.prompt.clone(),
                negative: e.negative.clone(),
                prompt_embeds: e.prompt_embeds.clone(),
            }),
            latent: self.latent.clone(),
            history: self.history.iter().map(clone_step).collect(),
            image: self.image.clone(),
            init_image: self.init_image.clone(),
            recovered: None,
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
    pub fn from_record(model: StableDiffusion, record: SessionRecord, options: OpenOptions) -> Result<Opened> {
        let mut warnings = Vec::new();
        let here = ModelInfo::of(&model.files)?;
        let mut mismatch = Vec::new();
        if here.fingerprint != record.model.fingerprint {
            mismatch.push(format!(
                "model {} has weights fingerprint {}, the session was saved with {} (fingerprint {})",
                here.source, here.fingerprint, record.model.source, record.model.fingerprint
            ));
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
        Ok(Opened { session, warnings })
    }
}

/// A step's record; its tensors are shared, not copied.
fn clone_step(r: &StepRecord) -> StepRecord {
    let d = &r.denoise;
    let denoise = DenoiseStep {
        guidance_scale: d.guidance_scale,
        noise_pred_uncond: d.noise_pred_uncond.clone(),
        noise_pred_text: d.noise_pred_text.clone(),
        guided_model_output: d.guided_model_output.clone(),
        scheduler: d.scheduler.clone(),
    };
    StepRecord { index: r.index, denoise, rng_after: r.rng_after.clone(), taps: r.taps.clone() }
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

/// Reads `tensors.safetensors` once its header has said how big it is: a file of
/// another size (truncated, padded, `/dev/zero` behind a link) is refused unread.
fn read_tensors(path: &Path) -> Result<Vec<u8>> {
    // The header is JSON naming each tensor; 100 MB would name millions.
    const MAX_HEADER: u64 = 100 << 20;
    let fail = |what: String| anyhow!("{}: not a valid safetensors file ({what})", path.display());
    let mut file = open_regular(path)?;
    let size = file.metadata().map_err(|e| fail(e.to_string()))?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| fail(format!("{size} bytes, too short for a header")))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > MAX_HEADER || header_len > size - 8 {
        return Err(fail(format!("a header of {header_len} bytes in a file of {size}")));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(|e| fail(e.to_string()))?;
    let header: Value = serde_json::from_slice(&header).map_err(|e| fail(format!("header: {e}")))?;
    let data_end = header
        .as_object()
        .ok_or_else(|| fail("header: expected a JSON object".into()))?
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .filter_map(|(_, t)| t.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    let expected = 8 + header_len + data_end;
    if expected != size {
        return Err(fail(format!("its header describes {expected} bytes, the file has {size}")));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.seek(SeekFrom::Start(0)).map_err(|e| fail(e.to_string()))?;
    file.take(size).read_to_end(&mut bytes).map_err(|e| fail(e.to_string()))?;
    Ok(bytes)
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ`, without a date crate.
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

fn rfc3339(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Runtime;
    use crate::scheduler::{DdimStep, SamplerStep};

    fn bits(t: &Tensor) -> Vec<u8> {
        let t = t.flatten_all().unwrap();
        match t.dtype() {
            DType::I64 => t.to_vec1::<i64>().unwrap().iter().flat_map(|v| v.to_le_bytes()).collect(),
            _ => {
                t.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap().iter().flat_map(|v| v.to_le_bytes()).collect()
            }
        }
    }

    /// Every field written comes back: settings, model, runtime, scheduler config,
    /// tokens, every tensor bit for bit, each step's scalars, guidance scale and
    /// generator state (guidance changed mid-run, across 1 so one step has no
    /// unconditional prediction), the image and the timestamps.
    #[test]
    fn round_trip_of_every_field() {
        let model_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd15-tiny/model");
        let open = || {
            crate::model::open(model_dir.to_str().unwrap(), None, Runtime::cpu(), &crate::model::Progress::Quiet)
                .unwrap()
        };
        let settings = Settings { eta: 0.7, steps: 6, ..Settings::new("a fox, \"quoted\"\nnewline", 64) };
        let mut s = Session::new(open(), settings).unwrap();
        s.encode_prompt().unwrap();
        s.get_latent().unwrap();
        s.run_to(2).unwrap();
        s.set_guidance_scale(1.0).unwrap();
        s.step().unwrap();
        s.set_guidance_scale(3.25).unwrap();
        s.step().unwrap();
        s.vae_decode().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        s.save(&dir, SaveOptions::default()).unwrap();
        let a = s.to_record().unwrap();
        let b = SessionRecord::load(&dir).unwrap();
        assert!(dir.join("images/step-4.png").is_file());

        assert_eq!(b.sdlab_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(b.created.len(), "2025-01-01T00:00:00Z".len());
        assert_eq!(
            (&a.model, &a.runtime, &a.settings, &a.scheduler_config),
            (&b.model, &b.runtime, &b.settings, &b.scheduler_config)
        );
        assert_eq!(b.model.fingerprint.len(), 64);
        assert!(Path::new(&b.model.source).is_absolute());
        assert_eq!(b.stage(), Stage::VaeDecode);
        let (ea, eb) = (a.encoding.as_ref().unwrap(), b.encoding.as_ref().unwrap());
        assert_eq!((&ea.prompt, &ea.negative), (&eb.prompt, &eb.negative));
        assert_eq!(bits(&ea.prompt_embeds), bits(&eb.prompt_embeds));
        assert_eq!(bits(a.init_latents().unwrap()), bits(b.init_latents().unwrap()));
        assert_eq!(a.latent.as_ref().unwrap().rng_after, b.latent.as_ref().unwrap().rng_after);
        assert_eq!(a.history.len(), 4);
        assert_eq!(b.history.len(), 4);
        for (x, y) in a.history.iter().zip(&b.history) {
            let (dx, dy) = (&x.denoise, &y.denoise);
            assert_eq!(x.index, y.index);
            assert_eq!(x.rng_after, y.rng_after);
            assert_eq!(dx.guidance_scale.to_bits(), dy.guidance_scale.to_bits());
            let (SamplerStep::Ddim(sx), SamplerStep::Ddim(sy)) = (&dx.scheduler, &dy.scheduler) else {
                panic!("a DDIM run reads back as DDIM steps");
            };
            let scalars = |s: &DdimStep| {
                (
                    s.timestep,
                    s.prev_timestep,
                    [s.alpha_prod_t, s.alpha_prod_t_prev, s.beta_prod_t, s.std_dev_t].map(f64::to_bits),
                )
            };
            assert_eq!(scalars(sx), scalars(sy));
            for ((name, tx), (_, ty)) in step_tensors(dx).into_iter().zip(step_tensors(dy)) {
                assert_eq!(tx.map(bits), ty.map(bits), "step {} {name}", x.index);
            }
        }
        assert_eq!(b.history[2].denoise.guidance_scale, 1.0);
        assert!(b.history[2].denoise.noise_pred_uncond.is_none());
        assert_eq!(b.image_settings().guidance_scales, vec![7.5, 7.5, 1.0, 3.25]);
        assert_eq!(bits(a.image.as_ref().unwrap()), bits(b.image.as_ref().unwrap()));

        // Saving the reopened session keeps the creation time written in the file (not
        // `a.created`: `a` was made after the save, maybe in the next second).
        let created = b.created.clone();
        let reopened = Session::from_record(open(), b, OpenOptions::default()).unwrap().session;
        assert_eq!(reopened.to_record().unwrap().created, created);
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400 + 3661), "2000-02-29T01:01:01Z");
        assert_eq!(rfc3339(1_767_225_599), "2025-12-31T23:59:59Z");
    }
}
