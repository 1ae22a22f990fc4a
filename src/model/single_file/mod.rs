//! One `.safetensors` (or `.ckpt`) file holding a whole SD 1.x or 2.x pipeline in
//! the original CompVis names, as A1111, ComfyUI and Civitai share them.
//!
//! The family is told by the text encoder's names (CLIP for 1.x, OpenCLIP for
//! 2.x); the architecture by the tensors' names and shapes ([`infer`]); what a
//! file cannot say (tokenizer, scheduler, prediction type) by the family.

pub mod infer;
pub mod names;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Result};
use candle_core::{DType, Device, Shape, Tensor};
use serde_json::Value;

use super::tensor_file::TensorFile;
use infer::Shapes;
use names::{Original, Transform, UNetLayout, CLIP, OPEN_CLIP, UNET, VAE};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Sd1,
    Sd2,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sd1 => "SD 1.x",
            Self::Sd2 => "SD 2.x",
        }
    }

    /// diffusers' `from_single_file` takes an SD 2.x file for the 768-pixel
    /// v-prediction model (stable-diffusion-2-1) unless told otherwise.
    pub fn default_prediction_type(self) -> &'static str {
        match self {
            Self::Sd1 => "epsilon",
            Self::Sd2 => "v_prediction",
        }
    }

    pub fn default_size(self) -> usize {
        match self {
            Self::Sd1 => 512,
            Self::Sd2 => 768,
        }
    }
}

/// The diffusers components a checkpoint holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    TextEncoder,
    Unet,
    Vae,
}

/// An opened single-file checkpoint: its tensors, its family, and the names each
/// diffusers tensor has in it.
pub struct Checkpoint {
    pub path: PathBuf,
    pub family: Family,
    file: Arc<TensorFile>,
    shapes: Arc<Shapes>,
    /// SD 1.x files differ on whether the CLIP names hold a `text_model.` level.
    text_model_level: bool,
    /// Original names read so far, to tell the user what the file held unused.
    used: Arc<Mutex<BTreeSet<String>>>,
}

/// What a model file of another kind looks like, to say what it is.
const OTHER_KINDS: &[(&str, &str)] = &[
    ("conditioner.embedders.", "an SDXL checkpoint"),
    ("model.diffusion_model.joint_blocks.", "an SD3 checkpoint"),
    ("double_blocks.", "a Flux checkpoint"),
    ("model.diffusion_model.double_blocks.", "a Flux checkpoint"),
    ("lora_unet_", "a LoRA (pass it with --lora)"),
    ("lora_te_", "a LoRA (pass it with --lora)"),
    ("unet.", "a LoRA in the diffusers format (pass it with --lora)"),
    ("down_blocks.", "one diffusers component (pass the pipeline's folder)"),
    ("encoder.down_blocks.", "one diffusers component (pass the pipeline's folder)"),
    ("text_model.", "one diffusers component (pass the pipeline's folder)"),
];

impl Checkpoint {
    pub fn open(path: &Path) -> Result<Self> {
        let file = TensorFile::open(path)?;
        let shapes = file.shapes();
        let at = |e: anyhow::Error| anyhow!("{}: {e}", path.display());
        let sd1 = shapes.contains_key(&format!("{CLIP}text_model.embeddings.token_embedding.weight"));
        let sd1_flat = shapes.contains_key(&format!("{CLIP}embeddings.token_embedding.weight"));
        let family = if sd1 || sd1_flat {
            Family::Sd1
        } else if shapes.contains_key(&format!("{OPEN_CLIP}token_embedding.weight")) {
            Family::Sd2
        } else {
            return Err(at(anyhow!("{}", describe_other(&shapes))));
        };
        let conv_in = format!("{UNET}input_blocks.0.0.weight");
        match shapes.get(&conv_in).map(Vec::as_slice) {
            Some([_, 4, ..]) => {}
            Some(s) => {
                return Err(at(anyhow!(
                    "{conv_in}: {} input channels where a text-to-image {} UNet takes 4 (an inpainting, depth or \
                     upscaler model, which sdlab does not run)",
                    s.get(1).copied().unwrap_or(0),
                    family.name()
                )))
            }
            None => return Err(at(anyhow!("{} text encoder found, but no UNet ({conv_in})", family.name()))),
        }
        Ok(Self {
            path: path.to_path_buf(),
            family,
            file: Arc::new(file),
            shapes: Arc::new(shapes),
            text_model_level: sd1,
            used: Arc::default(),
        })
    }

    /// diffusers' configs for the three models and the scheduler, inferred.
    pub fn configs(&self) -> Result<InferredConfigs> {
        let at = |e: anyhow::Error| anyhow!("{}: {e}", self.path.display());
        let (unet, layout) = infer::unet(&self.shapes, self.family).map_err(at)?;
        Ok(InferredConfigs {
            unet,
            vae: infer::vae(&self.shapes).map_err(at)?,
            text_encoder: infer::text_encoder(&self.shapes, self.family, self.text_model_level).map_err(at)?,
            scheduler: infer::scheduler(self.family.default_prediction_type()),
            layout,
        })
    }

    /// The tensors of one component under diffusers' names.
    pub fn component(&self, component: Component, layout: &UNetLayout, vae_levels: usize) -> Mapped {
        let (family, level, layout) = (self.family, self.text_model_level, layout.clone());
        let map: NameMap = match component {
            Component::Unet => Box::new(move |name| names::unet(name, &layout)),
            Component::Vae => Box::new(move |name| names::vae(name, vae_levels)),
            Component::TextEncoder => match family {
                Family::Sd1 => Box::new(move |name| names::clip(name, level)),
                Family::Sd2 => Box::new(names::open_clip),
            },
        };
        Mapped {
            checkpoint: self.path.clone(),
            file: self.file.clone(),
            shapes: self.shapes.clone(),
            map,
            used: self.used.clone(),
        }
    }

    /// What the file holds that no model read (EMA weights, `alphas_cumprod`,
    /// SD 2.x's last text layer, ...), grouped for one line of notes.
    pub fn unused_summary(&self) -> Option<String> {
        let used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let unused: Vec<&String> = self.shapes.keys().filter(|k| !used.contains(*k)).collect();
        if unused.is_empty() {
            return None;
        }
        let mut groups: Vec<(String, usize)> = Vec::new();
        for name in &unused {
            let group = group_of(name);
            match groups.iter_mut().find(|(g, _)| *g == group) {
                Some((_, n)) => *n += 1,
                None => groups.push((group, 1)),
            }
        }
        let listed: Vec<String> =
            groups.iter().map(|(g, n)| if *n == 1 { g.clone() } else { format!("{g} ({n})") }).collect();
        Some(format!("{}: ignored {} tensors no model uses: {}", self.path.display(), unused.len(), listed.join(", ")))
    }
}

/// Inside a model, the numbered block (`cond_stage_model.model.transformer.resblocks.23.*`);
/// `model_ema.*` for EMA weights; otherwise the name itself (`alphas_cumprod`).
fn group_of(name: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() == 1 {
        return name.to_string();
    }
    match parts.iter().position(|p| p.parse::<usize>().is_ok()) {
        Some(i) if i + 1 < parts.len() => format!("{}.*", parts[..=i].join(".")),
        _ if parts[0].ends_with("_ema") => format!("{}.*", parts[0]),
        _ => name.to_string(),
    }
}

fn describe_other(shapes: &Shapes) -> String {
    for (prefix, kind) in OTHER_KINDS {
        if shapes.keys().any(|k| k.starts_with(prefix)) {
            return format!(
                "{kind}, not an SD 1.x/2.x checkpoint (tensors named {prefix}*); sdlab reads SD 1.x files \
                 ({CLIP}*) and SD 2.x files ({OPEN_CLIP}*)"
            );
        }
    }
    let examples: Vec<&String> = shapes.keys().take(3).collect();
    format!(
        "not an SD 1.x/2.x checkpoint: expected a text encoder named {CLIP}* (SD 1.x) or {OPEN_CLIP}* (SD 2.x), \
         found {} tensors such as {}",
        shapes.len(),
        examples.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
    )
}

/// diffusers' name of a tensor to where the file holds it.
type NameMap = Box<dyn Fn(&str) -> Option<Original> + Send + Sync>;

pub struct InferredConfigs {
    pub unet: Value,
    pub vae: Value,
    pub text_encoder: Value,
    pub scheduler: Value,
    pub layout: UNetLayout,
}

/// One component of a checkpoint as candle's `VarBuilder` reads it: diffusers'
/// names in, the file's tensors out, reshaped or split as the original stores them.
pub struct Mapped {
    checkpoint: PathBuf,
    file: Arc<TensorFile>,
    shapes: Arc<Shapes>,
    map: NameMap,
    used: Arc<Mutex<BTreeSet<String>>>,
}

impl Mapped {
    fn original(&self, name: &str) -> candle_core::Result<Original> {
        let original = (self.map)(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("{name}: no tensor of the original layout holds it")))?;
        if !self.shapes.contains_key(&original.name) {
            candle_core::bail!("{}: missing tensor {name} (looked for {})", self.checkpoint.display(), original.name);
        }
        Ok(original)
    }

    fn read(&self, name: &str, device: &Device) -> candle_core::Result<Tensor> {
        let original = self.original(name)?;
        self.used.lock().unwrap_or_else(|e| e.into_inner()).insert(original.name.clone());
        let tensor = self.file.load(&original.name, device)?;
        match original.transform {
            Transform::Same => Ok(tensor),
            Transform::Squeeze => {
                let dims = tensor.dims().to_vec();
                match dims.as_slice() {
                    [o, i, 1, 1] => tensor.reshape((*o, *i)),
                    _ => candle_core::bail!("{}: expected a 1x1 convolution, found shape {dims:?}", original.name),
                }
            }
            Transform::Part(i, n) => {
                let rows = tensor.dim(0)?;
                if rows % n != 0 {
                    candle_core::bail!("{}: {rows} rows do not split into {n} equal parts", original.name);
                }
                tensor.narrow(0, i * rows / n, rows / n)
            }
        }
    }
}

impl candle_nn::var_builder::SimpleBackend for Mapped {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let tensor = self.read(name, dev)?.to_dtype(dtype)?;
        if tensor.shape() != &s {
            candle_core::bail!(
                "{}: tensor {name} ({}): expected shape {s:?}, found {:?}",
                self.checkpoint.display(),
                self.original(name)?.name,
                tensor.shape()
            );
        }
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.read(name, dev)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.original(name).is_ok()
    }
}

/// Where a single file's components are named in its messages.
pub fn describe(path: &Path, component: Component) -> String {
    let prefix = match component {
        Component::Unet => UNET,
        Component::Vae => VAE,
        Component::TextEncoder => "cond_stage_model.",
    };
    format!("{} ({prefix}*)", path.display())
}
