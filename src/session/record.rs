//! What a run is, apart from its results: the model it ran with (and how to tell
//! another model apart), where its tensors lived, and the settings an image carries
//! to make it again.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use candle_core::DType;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fingerprint::fingerprint;
use super::format::{check_format, from_value};
use super::{Segment, Settings};
use crate::model::{ModelFiles, StableDiffusion};
use crate::png_meta::{A1111Parameters, PARAMETERS_KEY, SDLAB_KEY};
use crate::scheduler::SchedulerConfig;

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
    pub(super) fn of(model: &StableDiffusion) -> Self {
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
    /// A branch's picture: the prompts and eta of the steps before its fork (the
    /// settings hold those after it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<Segment>,
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
