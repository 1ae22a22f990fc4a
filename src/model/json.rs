//! Reading the JSON files of a diffusers folder with errors a person can act on.

use std::path::Path;

use anyhow::Result;
use serde::de::DeserializeOwned;

use crate::fsutil::{limits, read_text};

/// Parses a config file; an error names the file and the field (`block_out_channels[1]`)
/// because "invalid type at line 12" alone does not tell a user what to fix.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = read_text(path, limits::CONFIG)?;
    parse_json(&text, path)
}

/// [`read_json`] on text already read; `path` only names it in errors.
pub fn parse_json<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let field = err.path().to_string();
        let inner = err.into_inner();
        if field == "." {
            anyhow::anyhow!("{}: {inner}", path.display())
        } else {
            anyhow::anyhow!("{}: field `{field}`: {inner}", path.display())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Sample {
        sizes: Vec<usize>,
    }

    #[test]
    fn errors_name_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"sizes": [1, "two"]}"#).unwrap();
        let msg = read_json::<Sample>(&path).unwrap_err().to_string();
        assert!(msg.contains("config.json: field `sizes[1]`"), "{msg}");
        assert!(msg.contains("expected usize"), "{msg}");

        std::fs::write(&path, "{}").unwrap();
        let msg = read_json::<Sample>(&path).unwrap_err().to_string();
        assert!(msg.contains("missing field `sizes`"), "{msg}");

        let missing = dir.path().join("nope.json");
        let msg = format!("{:#}", read_json::<Sample>(&missing).unwrap_err());
        assert!(msg.contains("nope.json: cannot read"), "{msg}");
    }
}
