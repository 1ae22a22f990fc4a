//! Telling two models apart without reading gigabytes.

use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};

use anyhow::{anyhow, Result};
use sha2::{Digest, Sha256};

use crate::model::ModelFiles;

trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

/// A cheap fingerprint of a model's weights: sha256 over each weight file's size,
/// its safetensors header (names, dtypes, shapes, offsets) and 16 chunks of 64 KiB
/// spread over its data. It reads a few MiB, not gigabytes, and still tells apart
/// two checkpoints of the same architecture, or fp16 and fp32 files.
pub fn fingerprint(files: &ModelFiles) -> Result<String> {
    const SAMPLES: u64 = 16;
    const CHUNK: u64 = 64 * 1024;
    let mut hasher = Sha256::new();
    for weights in files.weight_files() {
        let fail = |e: std::io::Error| anyhow!("{}: cannot read for the fingerprint ({e})", weights.display());
        let mut file: Box<dyn ReadSeek> = match weights.builtin_bytes() {
            Some(bytes) => Box::new(Cursor::new(bytes)),
            None => Box::new(File::open(weights.path()).map_err(fail)?),
        };
        let size = file.seek(SeekFrom::End(0)).map_err(fail)?;
        file.rewind().map_err(fail)?;
        hasher.update(size.to_le_bytes());
        let mut len = [0u8; 8];
        let header_len = if size >= 8 {
            file.read_exact(&mut len).map_err(fail)?;
            // Not safetensors (a .ckpt zip): no header to read, the samples alone.
            Some(u64::from_le_bytes(len)).filter(|&h| h <= (size - 8).min(100 << 20)).unwrap_or(0)
        } else {
            0
        };
        let mut header = Vec::new();
        (&mut file).take(header_len).read_to_end(&mut header).map_err(fail)?;
        hasher.update(&header);
        let data_start = 8 + header_len;
        let data_len = size.saturating_sub(data_start);
        let mut chunk = Vec::new();
        for i in 0..SAMPLES {
            let offset = data_start + data_len.saturating_sub(CHUNK) * i / (SAMPLES - 1);
            file.seek(SeekFrom::Start(offset)).map_err(fail)?;
            chunk.clear();
            (&mut file).take(CHUNK).read_to_end(&mut chunk).map_err(fail)?;
            hasher.update(&chunk);
        }
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelSource;

    /// A session saved with the built-in model resumes with its folder, and back.
    #[test]
    fn the_built_in_model_has_the_fingerprint_of_its_folder() {
        let quiet = crate::model::Progress::Quiet;
        let builtin = ModelSource::parse("shapes").unwrap().resolve(None, &quiet).unwrap();
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/shapes/model");
        let disk = ModelFiles::from_dir(&folder, None).unwrap();
        assert_eq!(fingerprint(&builtin).unwrap(), fingerprint(&disk).unwrap());
        let other = ModelFiles::from_dir(&folder.join("../../../tests/fixtures/sd2-tiny/model"), None).unwrap();
        assert_ne!(fingerprint(&builtin).unwrap(), fingerprint(&other).unwrap());
    }
}
