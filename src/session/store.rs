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
//! ```
//!
//! A folder is written whole into a hidden temporary folder beside it, synced, and
//! renamed into place, so a crash or a full disk leaves the old session or the new
//! one, never a mix. Tensors keep the run's dtype and scalars their exact bits
//! (serde_json is built with `float_roundtrip`), which is what makes a resumed run
//! equal an uninterrupted one.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Latent, Session, Settings, Stage, StepRecord};
use crate::fsutil::write_atomic;
use crate::image_out::to_rgb8;
use crate::model::tokenizer::{Token, TokenKind, TokenizedPrompt};
use crate::model::{ModelFiles, StableDiffusion};
use crate::png_meta::{encode_png, A1111Parameters, PARAMETERS_KEY, SDLAB_KEY};
use crate::rng::torch::TorchRng;
use crate::scheduler::{DdimScheduler, DdimStep, SchedulerConfig};
use crate::stages::{DenoiseStep, PromptEncoding};

/// The `format` this sdlab writes and reads; bumped on any change an older sdlab
/// would misread.
pub const FORMAT: u32 = 1;
pub const SESSION_JSON: &str = "session.json";
pub const TENSORS: &str = "tensors.safetensors";
pub const IMAGES: &str = "images";
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
        let source = if Path::new(&files.name) == files.root {
            std::path::absolute(&files.root).unwrap_or_else(|_| files.root.clone()).display().to_string()
        } else {
            files.name.clone()
        };
        let file_name = files.unet_weights.file_name().and_then(|n| n.to_str()).unwrap_or_default();
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

    fn dtype(&self) -> Result<DType> {
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
    /// Always `ddim`: the scheduler sdlab runs, built from `scheduler_config`.
    pub scheduler: String,
    #[serde(deserialize_with = "scheduler_config")]
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
            ("Sampler".into(), "DDIM".into()),
            ("CFG scale".into(), s.guidance_scale.to_string()),
            ("Seed".into(), s.seed.to_string()),
            ("Size".into(), format!("{}x{}", s.width, s.height)),
            ("Model".into(), self.model.source.clone()),
        ];
        if s.eta != 0.0 {
            params.push(("Eta".into(), s.eta.to_string()));
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
    latent: Option<Latent>,
    /// Every step taken, with each step's guidance scale and generator state.
    pub history: Vec<StepRecord>,
    /// Stage 4's result `(1, 3, H, W)` f32 in [0, 1], when decoded.
    pub image: Option<Tensor>,
}

impl SessionRecord {
    /// Stage 2's result.
    pub fn init_latents(&self) -> Option<&Tensor> {
        self.latent.as_ref().map(|l| &l.init_latents)
    }

    /// The furthest stage reached, as [`Session::stage`].
    pub fn stage(&self) -> Stage {
        stage_of(self.encoding.is_some(), self.latent.is_some(), self.history.len(), self.image.is_some())
    }

    /// The schedule the run used (timesteps, alphas), built without a model.
    pub fn scheduler(&self) -> Result<DdimScheduler> {
        DdimScheduler::new(&self.scheduler_config, self.settings.steps)
    }

    /// The settings to run this again from the start.
    pub fn image_settings(&self) -> ImageSettings {
        ImageSettings {
            format: FORMAT,
            sdlab_version: self.sdlab_version.clone(),
            model: self.model.clone(),
            runtime: self.runtime.clone(),
            settings: self.settings.clone(),
            scheduler: "ddim".into(),
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
    /// error naming the file and what is wrong with it.
    pub fn load(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            bail!("{}: no such session folder", dir.display());
        }
        let json_path = dir.join(SESSION_JSON);
        let json = std::fs::read(&json_path).map_err(|e| anyhow!("{}: cannot read ({e})", json_path.display()))?;
        let tensors_path = dir.join(TENSORS);
        let tensors =
            std::fs::read(&tensors_path).map_err(|e| anyhow!("{}: cannot read ({e})", tensors_path.display()))?;
        Self::parse(dir, &json, &tensors)
    }

    /// [`SessionRecord::load`] on the two files' bytes; `dir` only names them in errors.
    pub fn parse(dir: &Path, json: &[u8], tensors: &[u8]) -> Result<Self> {
        let json_path = dir.join(SESSION_JSON);
        let file = parse_session_json(json).map_err(|e| anyhow!("{}: {e}", json_path.display()))?;
        let tensors_path = dir.join(TENSORS);
        let tensors = candle_core::safetensors::load_buffer(tensors, &Device::Cpu)
            .map_err(|e| anyhow!("{}: not a valid safetensors file ({e})", tensors_path.display()))?;
        let mut tensors = TensorReader { tensors, dtype: DType::F32 };
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
            let name = if self.history.len() == self.settings.steps {
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

/// The tensors of a step, in the order they are computed; `noise_pred_uncond` is
/// absent when guidance was off for the step.
fn step_tensors(d: &DenoiseStep) -> [(&'static str, Option<&Tensor>); 6] {
    [
        ("noise_pred_uncond", d.noise_pred_uncond.as_ref()),
        ("noise_pred_text", Some(&d.noise_pred_text)),
        ("guided_model_output", Some(&d.guided_model_output)),
        ("pred_original_sample", Some(&d.scheduler.pred_original_sample)),
        ("pred_epsilon", Some(&d.scheduler.pred_epsilon)),
        ("prev_sample", Some(&d.scheduler.prev_sample)),
    ]
}

fn stage_of(encoded: bool, latent: bool, steps: usize, decoded: bool) -> Stage {
    if decoded {
        Stage::VaeDecode
    } else if steps > 0 {
        Stage::Denoise(steps)
    } else if latent {
        Stage::GetLatent
    } else if encoded {
        Stage::EncodePrompt
    } else {
        Stage::Start
    }
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Start => "start",
        Stage::EncodePrompt => "encode_prompt",
        Stage::GetLatent => "get_latent",
        Stage::Denoise(_) => "denoise",
        Stage::VaeDecode => "vae_decode",
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
        if model.scheduler_config != record.scheduler_config {
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
            Some(l) => Some(Latent { init_latents: to(&l.init_latents)?, rng_after: l.rng_after }),
            None => None,
        };
        let mut history = Vec::with_capacity(record.history.len());
        for r in record.history {
            let d = r.denoise;
            let s = d.scheduler;
            let denoise = DenoiseStep {
                guidance_scale: d.guidance_scale,
                noise_pred_uncond: d.noise_pred_uncond.as_ref().map(to).transpose()?,
                noise_pred_text: to(&d.noise_pred_text)?,
                guided_model_output: to(&d.guided_model_output)?,
                scheduler: DdimStep {
                    pred_original_sample: to(&s.pred_original_sample)?,
                    pred_epsilon: to(&s.pred_epsilon)?,
                    prev_sample: to(&s.prev_sample)?,
                    ..s
                },
            };
            history.push(StepRecord { index: r.index, denoise, rng_after: r.rng_after, taps: r.taps });
        }
        let image = record.image.map(|t| t.to_device(&device)).transpose()?;
        let mut session = Session::new(model, record.settings)?;
        session.encoding = encoding;
        session.latent = latent;
        session.history = history;
        session.image = image;
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

/// A cheap fingerprint of a model's weights: sha256 over each weight file's size,
/// its safetensors header (names, dtypes, shapes, offsets) and 16 chunks of 64 KiB
/// spread over its data. It reads a few MiB, not gigabytes, and still tells apart
/// two checkpoints of the same architecture, or fp16 and fp32 files.
pub fn fingerprint(files: &ModelFiles) -> Result<String> {
    const SAMPLES: u64 = 16;
    const CHUNK: u64 = 64 * 1024;
    let mut hasher = Sha256::new();
    for path in files.weight_files() {
        let fail = |e: std::io::Error| anyhow!("{}: cannot read for the fingerprint ({e})", path.display());
        let mut file = File::open(path).map_err(fail)?;
        let size = file.metadata().map_err(fail)?.len();
        hasher.update(size.to_le_bytes());
        let mut len = [0u8; 8];
        let header_len = if size >= 8 {
            file.read_exact(&mut len).map_err(fail)?;
            u64::from_le_bytes(len).min(size - 8)
        } else {
            0
        };
        let mut header = Vec::new();
        (&mut file).take(header_len).read_to_end(&mut header).map_err(fail)?;
        hasher.update(&header);
        let data_start = 8 + header_len;
        let data_len = size.saturating_sub(data_start);
        let mut chunk = Vec::new();
        for i in 0..SAMPLES {
            let offset = data_start + data_len.saturating_sub(CHUNK) * i / (SAMPLES - 1);
            file.seek(SeekFrom::Start(offset)).map_err(fail)?;
            chunk.clear();
            (&mut file).take(CHUNK).read_to_end(&mut chunk).map_err(fail)?;
            hasher.update(&chunk);
        }
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// `session.json` as written: the record's values plus the per-step scalars and
/// generator states; tensors are in `tensors.safetensors` under the names
/// [`SessionRecord::save`] gives them.
#[derive(Serialize, Deserialize)]
struct SessionFile {
    format: u32,
    sdlab_version: String,
    created: String,
    saved: String,
    model: ModelInfo,
    runtime: RuntimeInfo,
    settings: Settings,
    scheduler: String,
    #[serde(deserialize_with = "scheduler_config")]
    scheduler_config: SchedulerConfig,
    /// `start`, `encode_prompt`, `get_latent`, `denoise` or `vae_decode`.
    stage: String,
    steps_done: usize,
    encoding: Option<EncodingFile>,
    latent: Option<LatentFile>,
    steps: Vec<StepFile>,
    /// The decoded image's PNG, relative to the folder.
    image: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct EncodingFile {
    prompt: TokensFile,
    negative: TokensFile,
}

/// A [`TokenizedPrompt`] without its ids (those are the `input_ids` tensors).
#[derive(Serialize, Deserialize)]
struct TokensFile {
    tokens: Vec<String>,
    kinds: Vec<TokenKind>,
    truncated: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct LatentFile {
    /// `(1, channels, height / f, width / f)`, which every latent tensor must have.
    shape: Vec<usize>,
    /// The generator right after drawing the initial noise.
    generator: TorchRng,
}

#[derive(Serialize, Deserialize)]
struct StepFile {
    timestep: usize,
    prev_timestep: i64,
    alpha_prod_t: f64,
    alpha_prod_t_prev: f64,
    beta_prod_t: f64,
    std_dev_t: f64,
    guidance_scale: f64,
    /// The generator after the step (it draws eta noise when eta > 0).
    generator: TorchRng,
}

impl SessionFile {
    fn of(record: &SessionRecord, image: Option<String>) -> Self {
        let tokens = |t: &TokenizedPrompt| TokensFile {
            tokens: t.tokens.iter().map(|t| t.text.clone()).collect(),
            kinds: t.tokens.iter().map(|t| t.kind).collect(),
            truncated: t.truncated.clone(),
        };
        let steps = record
            .history
            .iter()
            .map(|r| {
                let s = &r.denoise.scheduler;
                StepFile {
                    timestep: s.timestep,
                    prev_timestep: s.prev_timestep,
                    alpha_prod_t: s.alpha_prod_t,
                    alpha_prod_t_prev: s.alpha_prod_t_prev,
                    beta_prod_t: s.beta_prod_t,
                    std_dev_t: s.std_dev_t,
                    guidance_scale: r.denoise.guidance_scale,
                    generator: r.rng_after.clone(),
                }
            })
            .collect();
        Self {
            format: FORMAT,
            sdlab_version: record.sdlab_version.clone(),
            created: record.created.clone(),
            saved: record.saved.clone(),
            model: record.model.clone(),
            runtime: record.runtime.clone(),
            settings: record.settings.clone(),
            scheduler: "ddim".into(),
            scheduler_config: record.scheduler_config.clone(),
            stage: stage_name(record.stage()).into(),
            steps_done: record.history.len(),
            encoding: record
                .encoding
                .as_ref()
                .map(|e| EncodingFile { prompt: tokens(&e.prompt), negative: tokens(&e.negative) }),
            latent: record
                .latent
                .as_ref()
                .map(|l| LatentFile { shape: l.init_latents.dims().to_vec(), generator: l.rng_after.clone() }),
            steps,
            image,
        }
    }

    /// Checks that the file agrees with itself, then reads its tensors.
    fn into_record(self, tensors: &mut TensorReader) -> Result<SessionRecord> {
        let num_train = self.scheduler_config.num_train_timesteps;
        if self.scheduler != "ddim" {
            bail!("scheduler: expected \"ddim\", found {:?}", self.scheduler);
        }
        if self.settings.steps == 0 || self.settings.steps > num_train {
            bail!("settings.steps: expected 1 to {num_train}, found {}", self.settings.steps);
        }
        if self.steps_done != self.steps.len() {
            bail!("steps_done is {} but {} steps are listed", self.steps_done, self.steps.len());
        }
        if self.steps.len() > self.settings.steps {
            bail!("{} steps are listed, settings.steps is {}", self.steps.len(), self.settings.steps);
        }
        let stage = stage_of(self.encoding.is_some(), self.latent.is_some(), self.steps.len(), self.image.is_some());
        if self.stage != stage_name(stage) {
            bail!("stage is {:?} but what is saved reaches {:?}", self.stage, stage_name(stage));
        }
        if !self.steps.is_empty() && (self.encoding.is_none() || self.latent.is_none()) {
            bail!("steps are listed without the encoding and latent they start from");
        }
        let scheduler = DdimScheduler::new(&self.scheduler_config, self.settings.steps)
            .map_err(|e| anyhow!("scheduler_config: {e:#}"))?;
        for (i, (step, &t)) in self.steps.iter().zip(scheduler.timesteps()).enumerate() {
            if step.timestep != t {
                bail!("steps[{i}].timestep is {}, the schedule says {t}", step.timestep);
            }
        }
        tensors.dtype = self.runtime.dtype()?;

        let encoding = match self.encoding {
            Some(e) => {
                let prompt = tokens_from(e.prompt, tensors.ids("input_ids")?)?;
                let negative = tokens_from(e.negative, tensors.ids("negative_input_ids")?)?;
                if prompt.ids.len() != negative.ids.len() {
                    return Err(TensorError(format!(
                        "input_ids has {} ids, negative_input_ids {}",
                        prompt.ids.len(),
                        negative.ids.len()
                    ))
                    .into());
                }
                let prompt_embeds = tensors.take("prompt_embeds", |dims| {
                    dims.len() == 3 && dims[0] == 2 && dims[1] == prompt.ids.len() && dims[2] > 0
                })?;
                Some(PromptEncoding { prompt, negative, prompt_embeds })
            }
            None => None,
        };
        let latent = match self.latent {
            Some(l) => {
                let (s, shape) = (&self.settings, &l.shape);
                let fits = shape.len() == 4
                    && shape[0] == 1
                    && shape[1] > 0
                    && shape[2] > 0
                    && shape[3] > 0
                    && s.height % shape[2] == 0
                    && s.width % shape[3] == 0
                    && s.height / shape[2] == s.width / shape[3];
                if !fits {
                    bail!("latent.shape {shape:?} is not a latent of a {}x{} image", s.width, s.height);
                }
                let init_latents = tensors.take("init_latents", |dims| dims == shape.as_slice())?;
                Some((Latent { init_latents, rng_after: l.generator }, shape.clone()))
            }
            None => None,
        };
        let mut history = Vec::with_capacity(self.steps.len());
        if let Some((_, shape)) = &latent {
            for (index, step) in self.steps.into_iter().enumerate() {
                let mut take = |name: &str| tensors.take(&format!("steps.{index}.{name}"), |d| d == shape.as_slice());
                let noise_pred_uncond = if step.guidance_scale > 1.0 { Some(take("noise_pred_uncond")?) } else { None };
                let denoise = DenoiseStep {
                    guidance_scale: step.guidance_scale,
                    noise_pred_uncond,
                    noise_pred_text: take("noise_pred_text")?,
                    guided_model_output: take("guided_model_output")?,
                    scheduler: DdimStep {
                        timestep: step.timestep,
                        prev_timestep: step.prev_timestep,
                        alpha_prod_t: step.alpha_prod_t,
                        alpha_prod_t_prev: step.alpha_prod_t_prev,
                        beta_prod_t: step.beta_prod_t,
                        std_dev_t: step.std_dev_t,
                        pred_original_sample: take("pred_original_sample")?,
                        pred_epsilon: take("pred_epsilon")?,
                        prev_sample: take("prev_sample")?,
                    },
                };
                history.push(StepRecord { index, denoise, rng_after: step.generator, taps: None });
            }
        }
        let image = match &self.image {
            Some(_) => {
                tensors.dtype = DType::F32;
                let (w, h) = (self.settings.width, self.settings.height);
                Some(tensors.take("image", |d| d == [1, 3, h, w])?)
            }
            None => None,
        };
        Ok(SessionRecord {
            sdlab_version: self.sdlab_version,
            created: self.created,
            saved: self.saved,
            model: self.model,
            runtime: self.runtime,
            settings: self.settings,
            scheduler_config: self.scheduler_config,
            encoding,
            latent: latent.map(|(l, _)| l),
            history,
            image,
        })
    }
}

fn tokens_from(file: TokensFile, ids: Vec<u32>) -> Result<TokenizedPrompt> {
    if file.tokens.len() != ids.len() || file.kinds.len() != ids.len() {
        bail!("encoding: {} ids but {} tokens and {} kinds are listed", ids.len(), file.tokens.len(), file.kinds.len());
    }
    let tokens =
        ids.iter().zip(file.tokens).zip(file.kinds).map(|((&id, text), kind)| Token { id, text, kind }).collect();
    Ok(TokenizedPrompt { ids, tokens, truncated: file.truncated })
}

/// A problem with `tensors.safetensors` rather than `session.json`, so the error
/// names the right file.
#[derive(Debug)]
struct TensorError(String);

impl std::fmt::Display for TensorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TensorError {}

struct TensorReader {
    tensors: HashMap<String, Tensor>,
    /// The dtype the next float tensors must have.
    dtype: DType,
}

impl TensorReader {
    fn take(&mut self, name: &str, shape_ok: impl Fn(&[usize]) -> bool) -> Result<Tensor> {
        let Some(t) = self.tensors.remove(name) else {
            return Err(TensorError(format!("missing tensor {name} (session.json says the run reached it)")).into());
        };
        if t.dtype() != self.dtype {
            return Err(TensorError(format!(
                "{name}: expected dtype {}, found {}",
                self.dtype.as_str(),
                t.dtype().as_str()
            ))
            .into());
        }
        if !shape_ok(t.dims()) {
            return Err(TensorError(format!("{name}: unexpected shape {:?}", t.dims())).into());
        }
        Ok(t)
    }

    fn ids(&mut self, name: &str) -> Result<Vec<u32>> {
        let dtype = std::mem::replace(&mut self.dtype, DType::I64);
        let t = self.take(name, |d| d.len() == 1 && d[0] > 0);
        self.dtype = dtype;
        t?.to_vec1::<i64>()?
            .into_iter()
            .map(|id| u32::try_from(id).map_err(|_| TensorError(format!("{name}: token id {id} out of range")).into()))
            .collect()
    }
}

/// Checks `format` before anything else, so that a file from a newer sdlab gets
/// "upgrade" rather than a confusing missing-field error.
fn check_format(value: &Value) -> Result<()> {
    let Some(format) = value.get("format") else {
        bail!("no \"format\" field: not an sdlab session");
    };
    match format.as_u64() {
        Some(n) if n == u64::from(FORMAT) => Ok(()),
        Some(n) if n > u64::from(FORMAT) => bail!(
            "format {n} was written by a newer sdlab; this one ({}) reads format {FORMAT}: upgrade sdlab",
            env!("CARGO_PKG_VERSION")
        ),
        _ => bail!("unknown format {format}: expected {FORMAT}"),
    }
}

/// Deserializes with the failing field's path in the message (`steps[3].generator`).
fn from_value<T: serde::de::DeserializeOwned>(value: Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let field = err.path().to_string();
        if field == "." {
            anyhow!("{}", err.into_inner())
        } else {
            anyhow!("field `{field}`: {}", err.into_inner())
        }
    })
}

fn parse_session_json(bytes: &[u8]) -> Result<SessionFile> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| anyhow!("not valid JSON ({e})"))?;
    check_format(&value)?;
    from_value(value)
}

fn scheduler_config<'de, D: Deserializer<'de>>(de: D) -> Result<SchedulerConfig, D::Error> {
    let value = Value::deserialize(de)?;
    SchedulerConfig::from_json(&value).map_err(|e| serde::de::Error::custom(format!("{e:#}")))
}

/// Pretty JSON, but an array of plain values (a generator's 624 words, a token
/// list) stays on one line instead of one line per number.
fn json_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let pretty = serde_json::to_string_pretty(value)?;
    let lines: Vec<&str> = pretty.lines().collect();
    let mut out = String::with_capacity(pretty.len());
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.ends_with('[') {
            // Pretty JSON opens every nested array or object on a line ending in `[` or `{`
            // (a string value cannot: its line ends in `"` or `",`).
            let close = lines[i + 1..].iter().position(|l| {
                let t = l.trim_start();
                t.starts_with(']') || l.ends_with('[') || l.ends_with('{')
            });
            if let Some(n) = close.filter(|&n| lines[i + 1 + n].trim_start().starts_with(']')) {
                let items: Vec<&str> = lines[i + 1..i + 1 + n].iter().map(|l| l.trim()).collect();
                out.push_str(line);
                out.push_str(&items.join(" "));
                out.push_str(lines[i + 1 + n].trim_start());
                out.push('\n');
                i += n + 2;
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
        i += 1;
    }
    Ok(out.into_bytes())
}

/// Refuses to replace what is not ours to replace: a session without `force`, or
/// a folder (or file) that is not a session at all. `sdlab generate` calls it
/// before computing anything, so a name clash is found in a second, not after the run.
pub fn check_can_save(dir: &Path, force: bool) -> Result<()> {
    if dir.exists() {
        let is_session = dir.join(SESSION_JSON).is_file();
        let is_empty = dir.read_dir().map(|mut d| d.next().is_none()).unwrap_or(false);
        if !dir.is_dir() || !(is_session || is_empty) {
            bail!("{}: exists and is not a session folder; refusing to replace it", dir.display());
        }
        if is_session && !force {
            bail!("{}: a session is already saved here; use --force to replace it", dir.display());
        }
    }
    Ok(())
}

/// Writes `files` (relative paths, in order; `session.json` last) into a hidden
/// folder beside `dir`, syncs it, and renames it into place.
fn write_folder(dir: &Path, files: &[(String, Vec<u8>)], force: bool) -> Result<()> {
    check_can_save(dir, force)?;
    let name =
        dir.file_name().and_then(|n| n.to_str()).ok_or_else(|| anyhow!("{}: not a folder name", dir.display()))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).with_context(|| format!("{}: cannot create the folder", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{name}.saving-"))
        .tempdir_in(parent)
        .with_context(|| format!("{}: cannot create a temporary folder", parent.display()))?;
    for (rel, bytes) in files {
        write_atomic(&staging.path().join(rel), bytes)?;
    }
    sync_dir(staging.path())?;
    // rename(2) replaces an empty folder but not a full one: move the old session
    // aside first (onto an empty placeholder), then drop it once the new one is in.
    let old = if dir.exists() {
        let aside = tempfile::Builder::new().prefix(&format!(".{name}.old-")).tempdir_in(parent)?;
        std::fs::rename(dir, aside.path())
            .with_context(|| format!("{}: cannot move the old session aside", dir.display()))?;
        Some(aside)
    } else {
        None
    };
    let staged = staging.keep();
    if let Err(e) = std::fs::rename(&staged, dir) {
        if let Some(old) = &old {
            let _ = std::fs::rename(old.path(), dir);
        }
        let _ = std::fs::remove_dir_all(&staged);
        return Err(anyhow!("{}: cannot move the new session into place ({e})", dir.display()));
    }
    drop(old);
    sync_dir(parent)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|f| f.sync_all()).with_context(|| format!("{}: cannot sync the folder", dir.display()))
}

/// `root/name`, refusing names that would land anywhere else: a session name is
/// one plain folder name (letters, digits, `-`, `_`, `.`, not starting with `.`).
pub fn session_dir(root: &Path, name: &str) -> Result<PathBuf> {
    let plain =
        !name.is_empty() && !name.starts_with('.') && name.chars().all(|c| c.is_alphanumeric() || "-_.".contains(c));
    if !plain {
        bail!(
            "session name {name:?}: expected a plain name (letters, digits, - _ .), which is saved under {}/; \
             use --dir to pick another folder",
            root.display()
        );
    }
    Ok(root.join(name))
}

/// One line of `sdlab sessions`: read from `session.json` alone.
pub struct SessionSummary {
    pub name: String,
    pub prompt: String,
    pub model: String,
    pub steps_done: usize,
    pub steps: usize,
    pub stage: String,
    pub saved: String,
}

/// The sessions saved under `root`, sorted by name; a folder whose `session.json`
/// cannot be read is listed with the error instead of failing the listing.
pub fn list_sessions(root: &Path) -> Result<Vec<Result<SessionSummary, (String, String)>>> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => bail!("{}: cannot list the folder ({e})", root.display()),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(SESSION_JSON).is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    Ok(names
        .into_iter()
        .map(|name| {
            let path = root.join(&name).join(SESSION_JSON);
            let file = std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|bytes| parse_session_json(&bytes))
                .map_err(|e| (name.clone(), format!("{}: {e}", path.display())))?;
            Ok(SessionSummary {
                name,
                prompt: file.settings.prompt,
                model: file.model.source,
                steps_done: file.steps_done,
                steps: file.settings.steps,
                stage: file.stage,
                saved: file.saved,
            })
        })
        .collect())
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
            let (sx, sy) = (&dx.scheduler, &dy.scheduler);
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

    #[test]
    fn names_cannot_leave_the_sessions_folder() {
        let root = Path::new("sessions");
        assert_eq!(session_dir(root, "fox-1").unwrap(), root.join("fox-1"));
        for bad in ["../x", "/abs", "a/b", "..", ".", ".hidden", "", "a\\b"] {
            let msg = session_dir(root, bad).unwrap_err().to_string();
            assert!(msg.starts_with(&format!("session name {bad:?}: expected a plain name")), "{msg}");
        }
    }

    #[test]
    fn numeric_arrays_stay_on_one_line() {
        let value = serde_json::json!({"a": [1, 2, 3], "b": [{"c": ["x,", "y["]}], "d": [], "e": "[", "f": [[1], [2]]});
        let text = String::from_utf8(json_bytes(&value).unwrap()).unwrap();
        assert!(text.contains("\"a\": [1, 2, 3]"), "{text}");
        assert!(text.contains("\"c\": [\"x,\", \"y[\"]"), "{text}");
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn floats_survive_json_exactly() {
        for x in [0.1f64, 1.0 / 3.0, 0.999_999_999_999_999_9, 5e-324, 0.004_660_799_913_108_349, 7.5] {
            let back: f64 = serde_json::from_str(&serde_json::to_string(&x).unwrap()).unwrap();
            assert_eq!(back.to_bits(), x.to_bits());
        }
    }
}
