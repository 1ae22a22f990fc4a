//! safetensors weight files into candle modules, with errors that name the file.

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::file::ModelFile;

/// Memory-maps `file` (float16 or float32, converted to `dtype`; a built-in file
/// is read where it lies in the binary) and builds a module from it. A truncated
/// or corrupt file, or a tensor missing from it, is an error naming the file
/// rather than a failure deep inside the module.
pub fn load<T>(
    file: &ModelFile,
    dtype: DType,
    device: &Device,
    build: impl FnOnce(VarBuilder<'static>) -> Result<T>,
) -> Result<T> {
    let vb = match file.builtin_bytes() {
        Some(bytes) => VarBuilder::from_slice_safetensors(bytes, dtype, device),
        // SAFETY: the file is mapped read-only; sdlab never writes weight files, and
        // the safetensors header is validated against the file length before use.
        None => unsafe { VarBuilder::from_mmaped_safetensors(&[file.path()], dtype, device) },
    }
    .map_err(|err| anyhow::anyhow!("{}: not a valid safetensors file ({err})", file.display()))?;
    build(vb).with_context(|| format!("{}: building the model from its weights", file.display()))
}
