//! LoRA files fused into the weights as they load: `W + scale * (alpha / rank) * up @ down`,
//! what diffusers computes after `load_lora_weights` and `fuse_lora(lora_scale=scale)`.
//!
//! Two namings are read: kohya's (`lora_unet_<module with _>.lora_down.weight`,
//! `.lora_up.weight`, `.alpha`), which A1111, ComfyUI and Civitai use, and
//! diffusers/PEFT's (`unet.<module>.lora_A.weight`, `.lora_B.weight`). A module is
//! looked up by the diffusers name of the weight being loaded, so a key that names
//! nothing in the model is left over and reported, never silently dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Result};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use sha2::{Digest, Sha256};

use super::single_file::Component;
use super::tensor_file::TensorFile;

/// `--lora FILE[:SCALE]` as typed.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraSpec {
    pub path: PathBuf,
    pub scale: f64,
}

impl LoraSpec {
    /// `FILE` or `FILE:SCALE` (scale 1.0 when left out). A path that itself holds
    /// a `:` is taken whole when it names a file.
    pub fn parse(text: &str) -> Result<Self> {
        if Path::new(text).is_file() {
            return Ok(Self { path: text.into(), scale: 1.0 });
        }
        let (path, scale) = match text.rsplit_once(':') {
            Some((path, scale)) => {
                let scale: f64 = scale.parse().ok().filter(|s: &f64| s.is_finite()).ok_or_else(|| {
                    anyhow!("--lora {text}: expected FILE[:SCALE] with a number for SCALE, found {scale:?}")
                })?;
                (path, scale)
            }
            None => (text, 1.0),
        };
        if !Path::new(path).is_file() {
            bail!("--lora {text}: no file {path}");
        }
        Ok(Self { path: path.into(), scale })
    }
}

/// One low-rank change of one weight.
struct Module {
    down: Tensor,
    up: Tensor,
    /// `alpha / rank`.
    factor: f64,
}

/// A LoRA file read into memory, with the scale it is applied at.
pub struct Lora {
    pub path: PathBuf,
    pub sha256: String,
    pub scale: f64,
    /// By the key stem the file uses (`lora_unet_down_blocks_0_..._to_q` or `unet.down_blocks.0....to_q`).
    modules: BTreeMap<String, Module>,
}

impl Lora {
    pub fn open(spec: &LoraSpec) -> Result<Self> {
        let path = &spec.path;
        let bytes = std::fs::read(path).map_err(|e| anyhow!("{}: cannot read ({e})", path.display()))?;
        let sha256 = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        let peft = PeftAlphas::read(&bytes).map_err(|e| anyhow!("{}: lora_adapter_metadata: {e}", path.display()))?;
        drop(bytes);
        let file = TensorFile::open(path)?;
        let names: BTreeSet<String> = file.shapes().into_keys().collect();
        let load = |name: &str| {
            file.load(name, &Device::Cpu)
                .and_then(|t| t.to_dtype(DType::F32))
                .map_err(|e| anyhow!("{}: {name}: {e}", path.display()))
        };
        let mut modules = BTreeMap::new();
        for name in &names {
            let (stem, up_name, alpha_name) = if let Some(stem) = name.strip_suffix(".lora_down.weight") {
                (stem, format!("{stem}.lora_up.weight"), Some(format!("{stem}.alpha")))
            } else if let Some(stem) = name.strip_suffix(".lora_A.weight") {
                (stem, format!("{stem}.lora_B.weight"), None)
            } else {
                continue;
            };
            let down = load(name)?;
            let up = load(&up_name).map_err(|_| anyhow!("{}: {name} has no {up_name}", path.display()))?;
            let rank = down.dim(0)?;
            if up.dims().get(1) != Some(&rank) {
                bail!(
                    "{}: {up_name}: expected rank {rank} in its second axis, found shape {:?}",
                    path.display(),
                    up.dims()
                );
            }
            let factor = match alpha_name.filter(|a| names.contains(a)) {
                Some(a) => {
                    let alpha = load(&a)?.flatten_all()?.to_vec1::<f32>()?.first().copied().unwrap_or(rank as f32);
                    alpha as f64 / rank as f64
                }
                None => peft.factor(stem, rank),
            };
            modules.insert(stem.to_string(), Module { down, up, factor });
        }
        if modules.is_empty() {
            let examples: Vec<&String> = names.iter().take(3).collect();
            bail!(
                "{}: not a LoRA: expected *.lora_down.weight / *.lora_up.weight (kohya) or *.lora_A.weight / \
                 *.lora_B.weight (diffusers/PEFT), found {} tensors such as {}",
                path.display(),
                names.len(),
                examples.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
        Ok(Self { path: path.clone(), sha256, scale: spec.scale, modules })
    }
}

/// The scaling diffusers saves beside a PEFT LoRA's tensors (`lora_adapter_metadata`
/// in the safetensors header: per component `lora_alpha`, `r`, `alpha_pattern`,
/// `rank_pattern`, `use_rslora`). Without it, alpha is the rank: a factor of 1.
#[derive(Default)]
struct PeftAlphas {
    config: serde_json::Map<String, serde_json::Value>,
}

impl PeftAlphas {
    fn read(bytes: &[u8]) -> Result<Self> {
        let Ok((_, metadata)) = safetensors::SafeTensors::read_metadata(bytes) else { return Ok(Self::default()) };
        let Some(text) = metadata.metadata().as_ref().and_then(|m| m.get("lora_adapter_metadata")) else {
            return Ok(Self::default());
        };
        let config: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|e| anyhow!("not a JSON object ({e})"))?;
        for (key, value) in &config {
            if key.ends_with(".use_dora") && value.as_bool() == Some(true) {
                bail!("{key}: DoRA is not a plain LoRA; sdlab fuses LoRAs only");
            }
        }
        Ok(Self { config })
    }

    /// `alpha / r` (or `alpha / sqrt(r)` with rsLoRA) for the module `stem`
    /// (`unet.down_blocks.0....to_q`), a pattern's value winning over the component's.
    fn factor(&self, stem: &str, rank: usize) -> f64 {
        let Some((component, module)) = stem.split_once('.') else { return 1.0 };
        let get = |field: &str| self.config.get(&format!("{component}.{field}"));
        let pattern = |field: &str| {
            get(field)?.as_object()?.iter().find(|(p, _)| module.ends_with(p.as_str())).and_then(|(_, v)| v.as_f64())
        };
        let alpha = pattern("alpha_pattern").or_else(|| get("lora_alpha")?.as_f64()).unwrap_or(rank as f64);
        if get("use_rslora").and_then(|v| v.as_bool()) == Some(true) {
            alpha / (rank as f64).sqrt()
        } else {
            alpha / rank as f64
        }
    }
}

/// The key stems a weight's module can have in a LoRA file, kohya's and PEFT's.
/// transformers' CLIP keeps its modules under `text_model.`, which some files
/// (and some saved folders) leave out: both spellings name the same module, as
/// diffusers reads them.
fn stems(component: Component, weight: &str) -> Vec<String> {
    let Some(module) = weight.strip_suffix(".weight") else { return vec![] };
    let (kohya, peft, modules) = match component {
        Component::Unet => ("lora_unet_", "unet.", vec![module.to_string()]),
        Component::TextEncoder => {
            let bare = module.strip_prefix("text_model.").unwrap_or(module);
            ("lora_te_", "text_encoder.", vec![format!("text_model.{bare}"), bare.to_string()])
        }
        Component::Vae => return vec![],
    };
    modules.iter().flat_map(|m| [format!("{kohya}{}", m.replace('.', "_")), format!("{peft}{m}")]).collect()
}

/// Every LoRA of a model, and what they changed: read by the loaders of the
/// text encoder and the UNet, then asked what no weight took.
pub struct LoraSet {
    pub loras: Vec<Lora>,
    matched: Mutex<BTreeSet<(usize, String)>>,
    /// Per changed weight (diffusers name), `|delta|^2` and `|W|^2` (Frobenius).
    changes: Mutex<Vec<(Component, String, f64, f64)>>,
}

impl LoraSet {
    pub fn open(specs: &[LoraSpec]) -> Result<Arc<Self>> {
        let loras = specs.iter().map(Lora::open).collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(Self { loras, matched: Mutex::default(), changes: Mutex::default() }))
    }

    /// Whether any LoRA changes the weight `name` of `component`.
    fn touches(&self, component: Component, name: &str) -> bool {
        let stems = stems(component, name);
        self.loras.iter().any(|lora| stems.iter().any(|s| lora.modules.contains_key(s)))
    }

    /// `weight` (f32) plus every LoRA's change of it.
    fn patch(&self, component: Component, name: &str, weight: Tensor) -> candle_core::Result<Tensor> {
        let stems = stems(component, name);
        let mut delta: Option<Tensor> = None;
        for (i, lora) in self.loras.iter().enumerate() {
            let Some((stem, module)) = stems.iter().find_map(|s| lora.modules.get(s).map(|m| (s, m))) else { continue };
            let device = weight.device();
            let (down, up) = (module.down.to_device(device)?, module.up.to_device(device)?);
            let rank = down.dim(0)?;
            let (outputs, inputs) = (up.dim(0)?, down.elem_count() / rank);
            if outputs * inputs != weight.elem_count() {
                candle_core::bail!(
                    "{}: {stem}: a {outputs}x{inputs} change does not fit {name} of shape {:?} (a LoRA for another model?)",
                    lora.path.display(),
                    weight.dims()
                );
            }
            let product = up.reshape((outputs, rank))?.matmul(&down.reshape((rank, inputs))?)?;
            let product = (product * (lora.scale * module.factor))?.reshape(weight.shape())?;
            delta = Some(match delta {
                Some(d) => (d + product)?,
                None => product,
            });
            self.matched.lock().unwrap_or_else(|e| e.into_inner()).insert((i, stem.clone()));
        }
        let Some(delta) = delta else { return Ok(weight) };
        let squared = |t: &Tensor| t.sqr()?.sum_all()?.to_scalar::<f32>().map(f64::from);
        let (delta_sq, weight_sq) = (squared(&delta)?, squared(&weight)?);
        self.changes.lock().unwrap_or_else(|e| e.into_inner()).push((component, name.to_string(), delta_sq, weight_sq));
        weight + delta
    }

    /// Refuses a LoRA none of whose modules is in the model; lists, per file, the
    /// keys that matched nothing.
    pub fn check_all_used(&self) -> Result<Vec<String>> {
        let matched = self.matched.lock().unwrap_or_else(|e| e.into_inner());
        let mut notes = Vec::new();
        for (i, lora) in self.loras.iter().enumerate() {
            let left: Vec<&String> = lora.modules.keys().filter(|k| !matched.contains(&(i, (*k).clone()))).collect();
            if left.len() == lora.modules.len() {
                bail!(
                    "{}: none of its {} LoRA modules is in this model (such as {}): a LoRA for another architecture?",
                    lora.path.display(),
                    left.len(),
                    left.iter().take(3).map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                );
            }
            if !left.is_empty() {
                notes.push(format!(
                    "{}: {} of {} LoRA modules match nothing in this model and were not applied: {}",
                    lora.path.display(),
                    left.len(),
                    lora.modules.len(),
                    left.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
        }
        Ok(notes)
    }

    /// Where the LoRAs act: per text-encoder layer and UNet block (in the order
    /// they load), `|delta W| / |W|` over the weights they change.
    pub fn by_block(&self) -> Vec<(String, f64)> {
        let changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let mut blocks: Vec<(String, f64, f64)> = Vec::new();
        for (component, name, delta_sq, weight_sq) in changes.iter() {
            let block = block_of(*component, name);
            match blocks.iter_mut().find(|(b, _, _)| *b == block) {
                Some((_, d, w)) => (*d, *w) = (*d + delta_sq, *w + weight_sq),
                None => blocks.push((block, *delta_sq, *weight_sq)),
            }
        }
        blocks.into_iter().map(|(b, d, w)| (b, (d / w.max(f64::MIN_POSITIVE)).sqrt())).collect()
    }
}

/// `text 3` for the text encoder's layer 3, `down 1` / `mid` / `up 2` for UNet blocks.
fn block_of(component: Component, name: &str) -> String {
    let parts: Vec<&str> = name.strip_prefix("text_model.").unwrap_or(name).split('.').collect();
    match (component, parts.as_slice()) {
        (Component::TextEncoder, ["encoder", "layers", i, ..]) => format!("text {i}"),
        (Component::TextEncoder, _) => "text".into(),
        (_, ["down_blocks", i, ..]) => format!("down {i}"),
        (_, ["up_blocks", i, ..]) => format!("up {i}"),
        (_, ["mid_block", ..]) => "mid".into(),
        (_, [first, ..]) => first.to_string(),
        (_, []) => String::new(),
    }
}

/// A component's weights with the LoRAs fused in.
pub struct Patched {
    pub inner: Box<dyn SimpleBackend>,
    pub component: Component,
    pub loras: Arc<LoraSet>,
}

impl SimpleBackend for Patched {
    fn get(&self, s: Shape, name: &str, h: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        // only a changed weight goes through float32 (the rest load as they would without LoRAs)
        if !self.loras.touches(self.component, name) {
            return self.inner.get(s, name, h, dtype, dev);
        }
        let weight = self.inner.get(s, name, h, DType::F32, dev)?;
        self.loras.patch(self.component, name, weight)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        if !self.loras.touches(self.component, name) {
            return self.inner.get_unchecked(name, dtype, dev);
        }
        let weight = self.inner.get_unchecked(name, DType::F32, dev)?;
        self.loras.patch(self.component, name, weight)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scale_may_follow_the_file_and_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("style.safetensors");
        std::fs::write(&file, b"").unwrap();
        let path = file.display().to_string();
        assert_eq!(LoraSpec::parse(&path).unwrap(), LoraSpec { path: file.clone(), scale: 1.0 });
        assert_eq!(LoraSpec::parse(&format!("{path}:0.4")).unwrap(), LoraSpec { path: file.clone(), scale: 0.4 });
        assert_eq!(LoraSpec::parse(&format!("{path}:-1")).unwrap().scale, -1.0);
        let msg = LoraSpec::parse(&format!("{path}:much")).unwrap_err().to_string();
        assert!(msg.ends_with("expected FILE[:SCALE] with a number for SCALE, found \"much\""), "{msg}");
        let msg = LoraSpec::parse(&format!("{path}:inf")).unwrap_err().to_string();
        assert!(msg.contains("with a number for SCALE"), "{msg}");
    }

    /// The lab's chart groups weights by text-encoder layer and UNet block.
    #[test]
    fn changes_are_grouped_by_block() {
        let set = LoraSet { loras: vec![], matched: Mutex::default(), changes: Mutex::default() };
        let add = |c, n: &str, d, w| set.changes.lock().unwrap().push((c, n.to_string(), d, w));
        add(Component::TextEncoder, "text_model.encoder.layers.1.self_attn.q_proj.weight", 1.0, 100.0);
        add(Component::Unet, "down_blocks.0.attentions.0.proj_in.weight", 3.0, 25.0);
        add(Component::Unet, "down_blocks.0.attentions.1.proj_out.weight", 1.0, 75.0);
        add(Component::Unet, "mid_block.attentions.0.proj_in.weight", 4.0, 4.0);
        assert_eq!(
            set.by_block(),
            vec![("text 1".to_string(), 0.1), ("down 0".to_string(), 0.2), ("mid".to_string(), 1.0)]
        );
    }
}
