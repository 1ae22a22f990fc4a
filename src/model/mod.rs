//! What a diffusers folder (or hub repo id) turns into: configs, tokenizer and models.
//!
//! Every size comes from the folder's `config.json` files, so the same code loads
//! SD 1.5, SD 2.x and the tiny test pipelines.

pub mod bounds;
pub mod builtin;
pub mod clip;
pub mod file;
pub mod json;
pub mod nn;
#[cfg(test)]
mod oracle_tests;
pub mod runtime;
pub mod source;
pub mod tokenizer;
pub mod unet;
pub mod vae;
pub mod weights;

use anyhow::{Context, Result};
use candle_core::{DType, Device};

use crate::fsutil::limits;
use crate::scheduler::SchedulerConfig;
use clip::{ClipTextConfig, ClipTextTransformer};
pub use file::{ModelFile, ModelFolder};
pub use runtime::Runtime;
pub use source::{ModelFiles, ModelSource, Progress};
use tokenizer::ClipTokenizer;
use unet::{UNet2DConditionModel, UNetConfig};
use vae::{AutoencoderKL, VaeConfig};

/// One Stable Diffusion pipeline, loaded: the four models of the talk and their configs.
pub struct StableDiffusion {
    pub files: ModelFiles,
    pub runtime: Runtime,
    pub tokenizer: ClipTokenizer,
    pub text_config: ClipTextConfig,
    pub text_encoder: ClipTextTransformer,
    pub unet_config: UNetConfig,
    pub unet: UNet2DConditionModel,
    pub vae_config: VaeConfig,
    pub vae: AutoencoderKL,
    /// The VAE's own dtype: float32 when the config asks to upcast (SD's VAE overflows in f16).
    pub vae_dtype: DType,
    pub scheduler_config: SchedulerConfig,
}

impl StableDiffusion {
    /// Reads every config first (cheap, and the likeliest to be wrong), then the weights.
    pub fn load(files: ModelFiles, runtime: Runtime) -> Result<Self> {
        let tokenizer = ClipTokenizer::from_folder(&files.tokenizer_dir)?;
        let config = |file: &ModelFile| file.read_text(limits::CONFIG);
        let text_config =
            ClipTextConfig::parse(&config(&files.text_encoder_config)?, files.text_encoder_config.path())?;
        let unet_config = UNetConfig::parse(&config(&files.unet_config)?, files.unet_config.path())?;
        let vae_config = VaeConfig::parse(&config(&files.vae_config)?, files.vae_config.path())?;
        let scheduler_config = SchedulerConfig::from_json_str(&config(&files.scheduler_config)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", files.scheduler_config.display()))?;
        check_cross_attention(&text_config, &unet_config, &files)?;
        check_shapes_agree(&tokenizer, &text_config, &unet_config, &vae_config, &files)?;

        let device = &runtime.device;
        let text_encoder = weights::load(&files.text_encoder_weights, runtime.dtype, device, |vb| {
            Ok(ClipTextTransformer::new(vb, &text_config)?)
        })?;
        let unet = weights::load(&files.unet_weights, runtime.dtype, device, |vb| {
            UNet2DConditionModel::new(vb, &unet_config)
        })?;
        let vae_dtype = if vae_config.force_upcast { DType::F32 } else { runtime.dtype };
        let vae = weights::load(&files.vae_weights, vae_dtype, device, |vb| AutoencoderKL::new(vb, &vae_config))?;
        Ok(Self {
            files,
            runtime,
            tokenizer,
            text_config,
            text_encoder,
            unet_config,
            unet,
            vae_config,
            vae,
            vae_dtype,
            scheduler_config,
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
fn check_cross_attention(text: &ClipTextConfig, unet: &UNetConfig, files: &ModelFiles) -> Result<()> {
    if text.hidden_size != unet.cross_attention_dim {
        anyhow::bail!(
            "{}: cross_attention_dim: expected {} (the text encoder's hidden_size in {}), found {}",
            files.unet_config.display(),
            text.hidden_size,
            files.text_encoder_config.display(),
            unet.cross_attention_dim
        );
    }
    Ok(())
}

/// The sizes one component hands the next must agree; otherwise the first forward
/// pass fails deep inside a reshape, naming no file.
fn check_shapes_agree(
    tokenizer: &ClipTokenizer,
    text: &ClipTextConfig,
    unet: &UNetConfig,
    vae: &VaeConfig,
    files: &ModelFiles,
) -> Result<()> {
    let (unet_path, vae_path) = (files.unet_config.display(), files.vae_config.display());
    if unet.in_channels != vae.latent_channels {
        anyhow::bail!(
            "{unet_path}: in_channels: expected {} (latent_channels in {vae_path}), found {}",
            vae.latent_channels,
            unet.in_channels
        );
    }
    if unet.out_channels != unet.in_channels {
        anyhow::bail!(
            "{unet_path}: out_channels: expected {} (in_channels: the UNet predicts noise of the latent's shape), found {}",
            unet.in_channels,
            unet.out_channels
        );
    }
    if tokenizer.max_length() > text.max_position_embeddings {
        anyhow::bail!(
            "{}: model_max_length {} is more than the {} positions of the text encoder ({})",
            files.tokenizer_dir.file("tokenizer_config.json").display(),
            tokenizer.max_length(),
            text.max_position_embeddings,
            files.text_encoder_config.display()
        );
    }
    Ok(())
}

/// Opens the model a command line names, with the context of which one it was.
pub fn open(spec: &str, variant: Option<&str>, runtime: Runtime, progress: &Progress) -> Result<StableDiffusion> {
    let source = ModelSource::parse(spec)?;
    let files = source.resolve(variant, progress)?;
    StableDiffusion::load(files, runtime).with_context(|| format!("loading model {source}"))
}
