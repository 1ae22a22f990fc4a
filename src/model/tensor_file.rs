//! The tensors of one weight file, whatever its container: safetensors (memory
//! mapped) or a PyTorch pickle (`.ckpt`, `.pt`, `.pth`), read by candle's pickle
//! reader, which rebuilds the data structure and never calls what it names.
//! Nothing in a model file runs code.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use candle_core::pickle::PthTensors;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{Device, Tensor};

pub enum TensorFile {
    Safetensors(MmapedSafetensors),
    Pickle(PthTensors),
}

/// The first bytes of a zip archive: torch.save's format since PyTorch 1.6.
const ZIP_MAGIC: &[u8; 4] = b"PK\x03\x04";

impl TensorFile {
    /// Opens `path` by its content, not its name: a zip archive is a PyTorch
    /// pickle, anything else must be safetensors.
    pub fn open(path: &Path) -> Result<Self> {
        let mut head = [0u8; 4];
        let read = std::fs::File::open(path)
            .and_then(|mut f| f.read(&mut head))
            .map_err(|e| anyhow!("{}: cannot read ({e})", path.display()))?;
        if read == 4 && &head == ZIP_MAGIC {
            return Self::open_pickle(path);
        }
        if is_pickle_name(path) {
            bail!(
                "{}: a PyTorch pickle in the legacy (pre-1.6, not zip) format, which sdlab does not read; convert \
                 it to safetensors (e.g. with safetensors' convert script) and pass the .safetensors file",
                path.display()
            );
        }
        // SAFETY: mapped read-only; sdlab never writes weight files, and the
        // safetensors header is validated against the file length here.
        let file = unsafe { MmapedSafetensors::new(path) }
            .map_err(|e| anyhow!("{}: not a valid safetensors file ({e})", path.display()))?;
        Ok(Self::Safetensors(file))
    }

    fn open_pickle(path: &Path) -> Result<Self> {
        let fail = |e: candle_core::Error| {
            anyhow!(
                "{}: not a PyTorch checkpoint sdlab can read ({e}); convert it to safetensors and pass that file",
                path.display()
            )
        };
        // A checkpoint saved by Lightning keeps its weights under `state_dict`.
        let pickle = match PthTensors::new(path, Some("state_dict")) {
            Ok(p) if !p.tensor_infos().is_empty() => p,
            _ => PthTensors::new(path, None).map_err(fail)?,
        };
        if pickle.tensor_infos().is_empty() {
            bail!("{}: a PyTorch pickle with no tensors sdlab can read", path.display());
        }
        Ok(Self::Pickle(pickle))
    }

    /// Every tensor's name and shape.
    pub fn shapes(&self) -> BTreeMap<String, Vec<usize>> {
        match self {
            Self::Safetensors(st) => {
                st.tensors().into_iter().map(|(name, view)| (name, view.shape().to_vec())).collect()
            }
            Self::Pickle(p) => {
                p.tensor_infos().iter().map(|(name, info)| (name.clone(), info.layout.dims().to_vec())).collect()
            }
        }
    }

    /// The tensor `name` as stored (its own dtype), on `device`.
    pub fn load(&self, name: &str, device: &Device) -> candle_core::Result<Tensor> {
        match self {
            Self::Safetensors(st) => st.load(name, device),
            Self::Pickle(p) => match p.get(name)? {
                Some(tensor) => tensor.to_device(device),
                None => candle_core::bail!("cannot find tensor {name}"),
            },
        }
    }
}

fn is_pickle_name(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    matches!(ext.as_str(), "ckpt" | "pt" | "pth" | "bin")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture(path: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(path)
    }

    /// torch.save's zip format reads to the same tensors as the safetensors file they came from.
    #[test]
    fn a_pickle_reads_to_the_tensors_of_its_safetensors_twin() {
        let pickle = TensorFile::open(&fixture("evil-ckpt/tensors.ckpt")).unwrap();
        let single = TensorFile::open(&fixture("sd15-shaped/tiny-sd15-shaped.safetensors")).unwrap();
        let shapes = pickle.shapes();
        assert_eq!(shapes.len(), 244);
        for (name, shape) in &shapes {
            assert!(name.starts_with("first_stage_model."), "{name}");
            assert_eq!(Some(shape), single.shapes().get(name), "{name}");
            let (a, b) = (pickle.load(name, &Device::Cpu).unwrap(), single.load(name, &Device::Cpu).unwrap());
            assert_eq!(a.dtype(), b.dtype(), "{name}");
            let (a, b) = (a.flatten_all().unwrap(), b.flatten_all().unwrap());
            let to_f32 = |t: Tensor| t.to_dtype(candle_core::DType::F32).unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(to_f32(a), to_f32(b), "{name}");
        }
    }

    #[test]
    fn legacy_pickles_and_other_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join("old.ckpt");
        std::fs::write(&legacy, b"\x80\x02}q\x00.").unwrap();
        let msg = TensorFile::open(&legacy).err().unwrap().to_string();
        assert!(msg.contains("old.ckpt: a PyTorch pickle in the legacy (pre-1.6, not zip) format"), "{msg}");
        assert!(msg.contains("convert it to safetensors"), "{msg}");
        let text = dir.path().join("notes.safetensors");
        std::fs::write(&text, b"hello").unwrap();
        let msg = TensorFile::open(&text).err().unwrap().to_string();
        assert!(msg.contains("notes.safetensors: not a valid safetensors file"), "{msg}");
    }
}
