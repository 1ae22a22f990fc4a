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

use anyhow::{anyhow, bail, Result};
use candle_core::{Device, Tensor};
use serde_json::Value;

pub use super::clock::now_rfc3339;
pub use super::fingerprint::fingerprint;
pub use super::folder::{check_can_save, run_dir, session_dir};
use super::folder::{recover, write_folder};
use super::format::{json_bytes, parse_session_json, stage_of, step_tensors, SessionFile, TensorError, TensorReader};
pub use super::listing::{list_sessions, saved_names, Listing, SessionSummary};
pub use super::record::{ImageSettings, ModelInfo, RuntimeInfo};
pub use super::reopen::{OpenOptions, Opened};
use super::{Fork, Latent, Settings, Stage, StepRecord};
use crate::fsutil::{limits, open_regular, read_regular};
use crate::image_out::to_rgb8;
use crate::png_meta::encode_png;
use crate::scheduler::{Sampler, SchedulerConfig};
use crate::stages::PromptEncoding;

/// The `format` this sdlab writes and reads; bumped on any change an older sdlab
/// would misread. 2 added branches (`fork`, `branches/`); 1 is read as well.
pub const FORMAT: u32 = 2;
pub const SESSION_JSON: &str = "session.json";
pub const TENSORS: &str = "tensors.safetensors";
pub const IMAGES: &str = "images";
/// A session's branches: `branches/<name>/`, each a folder of the same layout.
pub const BRANCHES: &str = "branches";
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
    /// A branch: where it leaves its parent (its first `fork.at` steps are the parent's).
    pub fork: Option<Fork>,
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

    /// [`fork_digest`] of the state after `at` steps.
    pub(super) fn digest_at(&self, at: usize) -> Result<String> {
        super::branch::state_digest(self.latent.as_ref(), &self.history, at)
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
            earlier: self.fork.as_ref().map(|f| f.earlier.clone()).unwrap_or_default(),
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
    /// A branch's folder (`SESSION/branches/NAME`) loads its parents first, up to
    /// the main run, and takes its shared steps from them.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_within(dir, 0)
    }

    fn load_within(dir: &Path, depth: usize) -> Result<Self> {
        // Deeper than any tree a person builds; a loop of parents ends here.
        const MAX_DEPTH: usize = 256;
        let recovered = recover(dir)?;
        if !dir.exists() {
            if let Some(branches) = dir.parent().filter(|p| p.file_name().is_some_and(|n| n == BRANCHES)) {
                let session = branches.parent().unwrap_or(branches);
                let names = saved_names(branches);
                let known =
                    if names.is_empty() { "it has none".to_string() } else { format!("it has {}", names.join(", ")) };
                let name = dir.file_name().unwrap_or_default().to_string_lossy();
                bail!("{}: no branch named {name} ({known})", session.display());
            }
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
        let parent_dir = parse_session_json(&json)
            .ok()
            .and_then(|file| file.fork)
            .filter(|fork| fork.at > 0)
            .map(|fork| parent_folder(dir, fork.parent.as_deref()))
            .transpose()?;
        let parent = match parent_dir {
            Some(_) if depth >= MAX_DEPTH => bail!("{}: more than {MAX_DEPTH} parents: a loop", dir.display()),
            Some(p) => Some(
                Self::load_within(&p, depth + 1).map_err(|e| anyhow!("{e:#}\n(the parent of {})", dir.display()))?,
            ),
            None => None,
        };
        let tensors = read_tensors(&dir.join(TENSORS))?;
        let mut record = Self::parse(dir, &json, &tensors, parent.as_ref())?;
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
    pub fn parse(dir: &Path, json: &[u8], tensors: &[u8], parent: Option<&SessionRecord>) -> Result<Self> {
        let json_path = dir.join(SESSION_JSON);
        let file = parse_session_json(json).map_err(|e| anyhow!("{}: {e}", json_path.display()))?;
        let tensors_path = dir.join(TENSORS);
        let tensors = candle_core::safetensors::load_buffer(tensors, &Device::Cpu)
            .map_err(|e| anyhow!("{}: not a valid safetensors file ({e})", tensors_path.display()))?;
        let mut tensors = TensorReader::new(tensors);
        file.into_record(&mut tensors, parent).map_err(|e| match e.downcast::<TensorError>() {
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
        let json = SessionFile::of(self, image_path)?;
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
        let own_from = self.fork.as_ref().map_or(0, |f| f.at);
        for (i, record) in self.history.iter().enumerate().skip(own_from) {
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

/// Where a branch's parent is saved: the session's main run (`parent` none) or
/// its sibling branch, seen from the branch's folder `SESSION/branches/NAME`.
fn parent_folder(branch_dir: &Path, parent: Option<&str>) -> Result<std::path::PathBuf> {
    let branches = branch_dir.parent().filter(|p| p.file_name().is_some_and(|n| n == BRANCHES));
    let Some(branches) = branches else {
        bail!(
            "{}: a branch, but not in a session's {BRANCHES}/ folder, so its parent is not at hand",
            branch_dir.display()
        );
    };
    match parent {
        None => Ok(branches.parent().expect("branches/ is in a folder").to_path_buf()),
        Some(name) => session_dir(branches, name).map_err(|e| anyhow!("fork.parent: {e:#}")),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Runtime;
    use crate::scheduler::{DdimStep, SamplerStep};
    use crate::session::Session;
    use candle_core::DType;

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
}
