//! What a diffusers folder, hub repo id or single-file checkpoint turns into:
//! configs, tokenizer and models, with any LoRAs fused in.
//!
//! Every size comes from the folder's `config.json` files (or, for a single file,
//! from its tensors' shapes), so the same code loads SD 1.5, SD 2.x and the tiny
//! test pipelines.

pub mod bounds;
pub mod builtin;
pub mod clip;
pub mod file;
pub mod json;
pub mod lora;
pub mod nn;
#[cfg(test)]
mod oracle_tests;
pub mod runtime;
pub mod single_file;
pub mod source;
pub mod tensor_file;
pub mod text_encoder;
pub mod tokenizer;
pub mod unet;
pub mod vae;
pub mod weights;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};

use crate::fsutil::limits;
use crate::scheduler::{PredictionType, SchedulerConfig};
use clip::ClipTextConfig;
pub use file::{ModelFile, ModelFolder};
use lora::{LoraSet, LoraSpec};
pub use runtime::Runtime;
use single_file::{Checkpoint, Component};
pub use source::{ConfigFiles, ModelFiles, ModelSource, Progress, WeightFiles};
use text_encoder::{TextEncoder, TextWeights};
use tokenizer::ClipTokenizer;
use unet::{UNet2DConditionModel, UNetConfig};
use vae::{AutoencoderKL, VaeConfig};

/// One Stable Diffusion pipeline, loaded: the four models of the talk and their configs.
pub struct StableDiffusion {
    pub files: ModelFiles,
    pub runtime: Runtime,
    pub tokenizer: ClipTokenizer,
    pub text_config: ClipTextConfig,
    /// Built again on demand where it was released (see `text_encoder.rs`).
    pub text_encoder: TextEncoder,
    pub unet_config: UNetConfig,
    pub unet: UNet2DConditionModel,
    pub vae_config: VaeConfig,
    pub vae: AutoencoderKL,
    /// The VAE's own dtype: float32 when the config asks to upcast (SD's VAE overflows in f16).
    pub vae_dtype: DType,
    pub scheduler_config: SchedulerConfig,
    /// How it was asked for beyond its files: what a session records to open it again.
    pub options: LoadOptions,
    /// The LoRAs fused into the weights, and how much each weight moved.
    pub loras: Arc<LoraSet>,
    /// What the user should know about the load (tensors ignored, LoRA keys unused).
    pub notes: Vec<String>,
}

/// What `--model` alone does not say.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadOptions {
    /// `--config DIR`: a diffusers folder whose configs and tokenizer a single file uses.
    pub config: Option<PathBuf>,
    /// `--prediction-type`: overrides the scheduler config's.
    pub prediction_type: Option<PredictionType>,
    /// `--lora FILE[:SCALE]`, in order.
    pub loras: Vec<LoraSpec>,
}

impl LoadOptions {
    pub fn parse_prediction_type(text: &str) -> Result<PredictionType> {
        PredictionType::ALL.iter().copied().find(|p| p.as_str() == text).ok_or_else(|| {
            let names: Vec<&str> = PredictionType::ALL.iter().map(|p| p.as_str()).collect();
            anyhow::anyhow!("--prediction-type {text}: expected one of {}", names.join(", "))
        })
    }
}

/// The configs of a pipeline, read or inferred, before any weight is loaded.
struct Configs {
    tokenizer: ClipTokenizer,
    text: ClipTextConfig,
    unet: UNetConfig,
    vae: VaeConfig,
    scheduler: SchedulerConfig,
    /// Where each came from, for messages.
    paths: ConfigPaths,
}

struct ConfigPaths {
    text: String,
    unet: String,
    vae: String,
    tokenizer: String,
}

impl Configs {
    fn read(files: &ConfigFiles) -> Result<Self> {
        let tokenizer = ClipTokenizer::from_folder(&files.tokenizer_dir)?;
        let config = |file: &ModelFile| file.read_text(limits::CONFIG);
        let text = ClipTextConfig::parse(&config(&files.text_encoder_config)?, files.text_encoder_config.path())?;
        let unet = UNetConfig::parse(&config(&files.unet_config)?, files.unet_config.path())?;
        let vae = VaeConfig::parse(&config(&files.vae_config)?, files.vae_config.path())?;
        let scheduler = SchedulerConfig::from_json_str(&config(&files.scheduler_config)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", files.scheduler_config.display()))?;
        let paths = ConfigPaths {
            text: files.text_encoder_config.display().to_string(),
            unet: files.unet_config.display().to_string(),
            vae: files.vae_config.display().to_string(),
            tokenizer: files.tokenizer_dir.file("tokenizer_config.json").display().to_string(),
        };
        Ok(Self { tokenizer, text, unet, vae, scheduler, paths })
    }

    /// A single file's configs, from its tensors and its family's rules.
    fn infer(checkpoint: &Checkpoint) -> Result<Self> {
        let inferred = checkpoint.configs()?;
        let path = |what: &str| format!("{} (its {what} config, read from the tensors)", checkpoint.path.display());
        let parse_err = |what: &str, e: anyhow::Error| anyhow::anyhow!("{}: {e}", path(what));
        let text = ClipTextConfig::parse(&inferred.text_encoder.to_string(), Path::new(&path("text encoder")))?;
        let unet = UNetConfig::parse(&inferred.unet.to_string(), Path::new(&path("UNet")))?;
        let vae = VaeConfig::parse(&inferred.vae.to_string(), Path::new(&path("VAE")))?;
        let scheduler =
            SchedulerConfig::from_json_str(&inferred.scheduler.to_string()).map_err(|e| parse_err("scheduler", e))?;
        let tokenizer_folder = ModelFolder::builtin(builtin::tokenizer_of(checkpoint.family)).folder("tokenizer");
        let tokenizer = ClipTokenizer::from_folder(&tokenizer_folder)?;
        let paths = ConfigPaths {
            text: path("text encoder"),
            unet: path("UNet"),
            vae: path("VAE"),
            tokenizer: tokenizer_folder.display().to_string(),
        };
        Ok(Self { tokenizer, text, unet, vae, scheduler, paths })
    }
}

impl StableDiffusion {
    /// Reads every config first (cheap, and the likeliest to be wrong), then the weights.
    pub fn load(files: ModelFiles, runtime: Runtime) -> Result<Self> {
        Self::load_with(files, runtime, LoadOptions::default())
    }

    pub fn load_with(mut files: ModelFiles, runtime: Runtime, options: LoadOptions) -> Result<Self> {
        let checkpoint = match &files.weights {
            WeightFiles::SingleFile(file) => Some(Checkpoint::open(file.path())?),
            WeightFiles::Components { .. } => None,
        };
        if let Some(dir) = &options.config {
            if checkpoint.is_none() {
                bail!("--config {}: only a single-file checkpoint takes its configs from a folder", dir.display());
            }
            files.configs = Some(ConfigFiles::from_folder(&ModelFolder::disk(dir))?);
        }
        let mut c = match (&files.configs, &checkpoint) {
            (Some(configs), _) => Configs::read(configs)?,
            (None, Some(checkpoint)) => Configs::infer(checkpoint)?,
            (None, None) => bail!("{}: no configs and no single file to read them from", files.name),
        };
        if let Some(prediction_type) = options.prediction_type {
            c.scheduler.prediction_type = prediction_type;
        }
        check_cross_attention(&c)?;
        check_shapes_agree(&c)?;
        let loras = LoraSet::open(&options.loras)?;

        let device = &runtime.device;
        let vae_dtype = if c.vae.force_upcast { DType::F32 } else { runtime.dtype };
        let (text_weights, unet, vae) = match (&files.weights, &checkpoint) {
            (WeightFiles::Components { text_encoder, unet, vae }, _) => (
                TextWeights::File(text_encoder.clone()),
                (weights::file_backend(unet, runtime.dtype, device)?, unet.display().to_string()),
                (weights::file_backend(vae, vae_dtype, device)?, vae.display().to_string()),
            ),
            (WeightFiles::SingleFile(file), Some(checkpoint)) => {
                let layout = single_file::names::UNetLayout {
                    layers_per_block: c.unet.layers_per_block,
                    up_attention: c.unet.up_block_types.iter().map(|t| t.starts_with("CrossAttn")).collect(),
                };
                let levels = c.vae.block_out_channels.len();
                let part = |component| {
                    let backend: Box<dyn candle_nn::var_builder::SimpleBackend> =
                        Box::new(checkpoint.component(component, &layout, levels));
                    (backend, single_file::describe(&checkpoint.path, component))
                };
                (
                    TextWeights::SingleFile {
                        path: file.path().to_path_buf(),
                        layout: layout.clone(),
                        vae_levels: levels,
                    },
                    part(Component::Unet),
                    part(Component::Vae),
                )
            }
            (WeightFiles::SingleFile(file), None) => bail!("{}: not opened", file.display()),
        };
        let recipe = text_encoder::Recipe {
            weights: text_weights,
            config: c.text.clone(),
            loras: loras.clone(),
            dtype: runtime.dtype,
            device: device.clone(),
        };
        let text_encoder = TextEncoder::load(recipe, checkpoint.as_ref())?;
        let unet = weights::build(unet.0, Some((&loras, Component::Unet)), &unet.1, runtime.dtype, device, |vb| {
            UNet2DConditionModel::new(vb, &c.unet)
        })?;
        let vae = weights::build(vae.0, None, &vae.1, vae_dtype, device, |vb| AutoencoderKL::new(vb, &c.vae))?;
        let mut notes = loras.check_all_used()?;
        notes.extend(checkpoint.as_ref().and_then(Checkpoint::unused_summary));
        Ok(Self {
            files,
            runtime,
            tokenizer: c.tokenizer,
            text_config: c.text,
            text_encoder,
            unet_config: c.unet,
            unet,
            vae_config: c.vae,
            vae,
            vae_dtype,
            scheduler_config: c.scheduler,
            options,
            loras,
            notes,
        })
    }

    pub fn device(&self) -> &Device {
        &self.runtime.device
    }

    pub fn dtype(&self) -> DType {
        self.runtime.dtype
    }

    /// Image pixels per latent pixel (8 for SD).
    pub fn vae_scale_factor(&self) -> usize {
        self.vae_config.scale_factor()
    }

    /// diffusers' default image size: `unet.sample_size * vae_scale_factor` (512 for SD 1.5).
    pub fn default_size(&self) -> usize {
        self.unet_config.sample_size * self.vae_scale_factor()
    }
}

/// The UNet attends to the text encoder's output; a mismatch means two models from
/// different pipelines, which would otherwise fail deep inside a matmul.
fn check_cross_attention(c: &Configs) -> Result<()> {
    if c.text.hidden_size != c.unet.cross_attention_dim {
        bail!(
            "{}: cross_attention_dim: expected {} (the text encoder's hidden_size in {}), found {}",
            c.paths.unet,
            c.text.hidden_size,
            c.paths.text,
            c.unet.cross_attention_dim
        );
    }
    Ok(())
}

/// The sizes one component hands the next must agree; otherwise the first forward
/// pass fails deep inside a reshape, naming no file.
fn check_shapes_agree(c: &Configs) -> Result<()> {
    let (unet_path, vae_path) = (&c.paths.unet, &c.paths.vae);
    if c.unet.in_channels != c.vae.latent_channels {
        bail!(
            "{unet_path}: in_channels: expected {} (latent_channels in {vae_path}), found {}",
            c.vae.latent_channels,
            c.unet.in_channels
        );
    }
    if c.unet.out_channels != c.unet.in_channels {
        bail!(
            "{unet_path}: out_channels: expected {} (in_channels: the UNet predicts noise of the latent's shape), found {}",
            c.unet.in_channels,
            c.unet.out_channels
        );
    }
    if c.tokenizer.max_length() > c.text.max_position_embeddings {
        bail!(
            "{}: model_max_length {} is more than the {} positions of the text encoder ({})",
            c.paths.tokenizer,
            c.tokenizer.max_length(),
            c.text.max_position_embeddings,
            c.paths.text
        );
    }
    Ok(())
}

/// Opens the model a command line names, with the context of which one it was.
pub fn open(spec: &str, variant: Option<&str>, runtime: Runtime, progress: &Progress) -> Result<StableDiffusion> {
    open_with(spec, variant, LoadOptions::default(), runtime, progress)
}

/// [`open`] with a single file's configs, a prediction type, LoRAs.
pub fn open_with(
    spec: &str,
    variant: Option<&str>,
    options: LoadOptions,
    runtime: Runtime,
    progress: &Progress,
) -> Result<StableDiffusion> {
    let source = ModelSource::parse(spec)?;
    let files = source.resolve(variant, progress)?;
    StableDiffusion::load_with(files, runtime, options).with_context(|| format!("loading model {source}"))
}
