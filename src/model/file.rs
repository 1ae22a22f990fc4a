//! One file or folder of a model: on disk, or built into sdlab (the `shapes`
//! model). Either way it has a path that names it in messages, so every error
//! reads the same.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};

use super::builtin::BuiltinModel;
use crate::fsutil::read_regular;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Content {
    Disk,
    /// The bytes compiled in; `None` when the built-in model has no such file.
    Builtin(Option<&'static [u8]>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFile {
    path: PathBuf,
    content: Content,
}

impl ModelFile {
    pub fn disk(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), content: Content::Disk }
    }

    /// The file's path on disk, or for a built-in file the name messages give it
    /// (`shapes (built in)/unet/config.json`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn display(&self) -> std::path::Display<'_> {
        self.path.display()
    }

    pub fn file_name(&self) -> Option<&str> {
        self.path.file_name().and_then(|n| n.to_str())
    }

    pub fn is_file(&self) -> bool {
        match self.content {
            Content::Disk => self.path.is_file(),
            Content::Builtin(bytes) => bytes.is_some(),
        }
    }

    /// The built-in bytes, or `None` for a file on disk.
    pub fn builtin_bytes(&self) -> Option<&'static [u8]> {
        match self.content {
            Content::Builtin(bytes) => bytes,
            Content::Disk => None,
        }
    }

    /// All of the file, at most `max` bytes (see [`read_regular`]).
    pub fn read(&self, max: u64) -> Result<Cow<'static, [u8]>> {
        match self.content {
            Content::Disk => Ok(Cow::Owned(read_regular(&self.path, max)?)),
            Content::Builtin(Some(bytes)) => Ok(Cow::Borrowed(bytes)),
            Content::Builtin(None) => bail!("{}: not found", self.display()),
        }
    }

    pub fn read_text(&self, max: u64) -> Result<Cow<'static, str>> {
        let not_text = || anyhow!("{}: not UTF-8 text", self.display());
        match self.read(max)? {
            Cow::Borrowed(bytes) => std::str::from_utf8(bytes).map(Cow::Borrowed).map_err(|_| not_text()),
            Cow::Owned(bytes) => String::from_utf8(bytes).map(Cow::Owned).map_err(|_| not_text()),
        }
    }
}

/// A folder of a model (its root, or `tokenizer/`).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelFolder {
    path: PathBuf,
    /// The built-in model and this folder's path inside it ("" for its root).
    builtin: Option<(&'static BuiltinModel, String)>,
}

impl ModelFolder {
    pub fn disk(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), builtin: None }
    }

    pub fn builtin(model: &'static BuiltinModel) -> Self {
        Self { path: PathBuf::from(format!("{} (built in)", model.name)), builtin: Some((model, String::new())) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn display(&self) -> std::path::Display<'_> {
        self.path.display()
    }

    pub fn is_builtin(&self) -> bool {
        self.builtin.is_some()
    }

    pub fn is_dir(&self) -> bool {
        match &self.builtin {
            None => self.path.is_dir(),
            Some((model, dir)) => {
                dir.is_empty() || model.files.iter().any(|(name, _)| name.starts_with(&format!("{dir}/")))
            }
        }
    }

    /// The file `name` in this folder (`name` may hold `/`).
    pub fn file(&self, name: &str) -> ModelFile {
        let path = self.path.join(name);
        match &self.builtin {
            None => ModelFile::disk(path),
            Some((model, dir)) => ModelFile { path, content: Content::Builtin(model.file(&inside(dir, name))) },
        }
    }

    pub fn folder(&self, name: &str) -> ModelFolder {
        let path = self.path.join(name);
        match &self.builtin {
            None => ModelFolder::disk(path),
            Some((model, dir)) => ModelFolder { path, builtin: Some((model, inside(dir, name))) },
        }
    }

    /// The names of the files directly in this folder (on disk: those readable as UTF-8).
    pub fn file_names(&self) -> Vec<String> {
        match &self.builtin {
            None => std::fs::read_dir(&self.path)
                .map(|entries| entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
                .unwrap_or_default(),
            Some((model, dir)) => {
                let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
                model
                    .files
                    .iter()
                    .filter_map(|(name, _)| name.strip_prefix(&prefix))
                    .filter(|rest| !rest.contains('/'))
                    .map(str::to_owned)
                    .collect()
            }
        }
    }
}

/// The path of `name` inside the built-in folder `dir` ("" for the model's root).
fn inside(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::builtin::SHAPES;

    #[test]
    fn builtin_files_are_read_and_named_like_files_on_disk() {
        let root = ModelFolder::builtin(&SHAPES);
        let config = root.folder("unet").file("config.json");
        assert_eq!(config.display().to_string(), "shapes (built in)/unet/config.json");
        assert!(config.is_file());
        let text = config.read_text(1 << 20).unwrap();
        let on_disk =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/shapes/model/unet/config.json"))
                .unwrap();
        assert_eq!(text, on_disk);
        let missing = root.folder("tokenizer").file("tokenizer.json");
        assert!(!missing.is_file());
        let err = missing.read(1 << 20).unwrap_err().to_string();
        assert_eq!(err, "shapes (built in)/tokenizer/tokenizer.json: not found");
        assert!(root.folder("tokenizer").is_dir());
        assert!(!root.folder("nothing").is_dir());
        let mut names = root.folder("tokenizer").file_names();
        names.sort();
        assert_eq!(names, ["merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"]);
    }
}
