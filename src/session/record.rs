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
use crate::model::lora::LoraSpec;
use crate::model::{LoadOptions, ModelFiles, StableDiffusion};
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
    /// `--config DIR` of a single-file checkpoint (absolute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// `--prediction-type`, where it overrode the model's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction_type: Option<String>,
    /// The LoRAs fused into the weights, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loras: Vec<LoraInfo>,
}

/// One LoRA of a run: its file (absolute), content and scale.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraInfo {
    pub file: String,
    pub sha256: String,
    pub scale: f64,
}

impl LoraInfo {
    /// The LoRAs fused into `model`, in order.
    fn of_model(model: &StableDiffusion) -> Vec<Self> {
        let loras = &model.loras.loras;
        loras.iter().map(|l| Self { file: absolute(&l.path), sha256: l.sha256.clone(), scale: l.scale }).collect()
    }
}

/// `path` made absolute, so that a session names it from any working folder.
fn absolute(path: &Path) -> String {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()).display().to_string()
}

impl ModelInfo {
    /// Describes a loaded model. A local folder's `ModelFiles::name` is the path as
    /// typed, a hub model's its repo id; the path is made absolute so that the
    /// session can be resumed from another working folder.
    pub fn of(files: &ModelFiles) -> Result<Self> {
        let root = files.root.path();
        let source = if !files.root.is_builtin() && Path::new(&files.name) == root {
            absolute(root)
        } else {
            files.name.clone()
        };
        Ok(Self {
            source,
            variant: files.variant(),
            fingerprint: fingerprint(files)?,
            config: None,
            prediction_type: None,
            loras: Vec::new(),
        })
    }

    /// Describes a loaded model, with how it was asked for beyond its files.
    pub fn of_model(model: &StableDiffusion) -> Result<Self> {
        let options = &model.options;
        Ok(Self {
            config: options.config.as_deref().map(absolute),
            prediction_type: options.prediction_type.map(|p| p.as_str().to_string()),
            loras: LoraInfo::of_model(model),
            ..Self::of(&model.files)?
        })
    }

    /// The options to open this model again (`check_loras` then tells whether its LoRAs are the recorded ones).
    pub fn load_options(&self) -> Result<LoadOptions> {
        let prediction_type = self.prediction_type.as_deref().map(LoadOptions::parse_prediction_type).transpose()?;
        let loras = self.loras.iter().map(|l| LoraSpec { path: l.file.clone().into(), scale: l.scale }).collect();
        Ok(LoadOptions { config: self.config.clone().map(Into::into), prediction_type, loras })
    }

    /// Refuses a model whose LoRAs are not the recorded ones (file content or scale).
    pub fn check_loras(&self, model: &StableDiffusion) -> Result<()> {
        let here = LoraInfo::of_model(model);
        let key = |l: &LoraInfo| (l.sha256.clone(), l.scale.to_bits());
        if here.iter().map(key).ne(self.loras.iter().map(key)) {
            let show = |ls: &[LoraInfo]| {
                if ls.is_empty() {
                    "no LoRA".to_string()
                } else {
                    ls.iter()
                        .map(|l| format!("{}:{} (sha256 {:.12})", l.file, l.scale, l.sha256))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            bail!("the run was made with {}, the model now has {}", show(&self.loras), show(&here));
        }
        Ok(())
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
        // A1111 names a LoRA in the prompt, `<lora:NAME:SCALE>`, and its hash apart.
        let mut prompt = s.prompt.clone();
        let name =
            |l: &LoraInfo| Path::new(&l.file).file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        for lora in &self.model.loras {
            prompt.push_str(&format!(" <lora:{}:{}>", name(lora), lora.scale));
        }
        if !self.model.loras.is_empty() {
            let hashes: Vec<String> =
                self.model.loras.iter().map(|l| format!("{}: {:.12}", name(l), l.sha256)).collect();
            params.push(("Lora hashes".into(), hashes.join(", ")));
        }
        params.push(("Version".into(), format!("sdlab {}", self.sdlab_version)));
        A1111Parameters { prompt, negative_prompt: s.negative_prompt.clone(), params }
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
