//! safetensors weight files into candle modules, with errors that name the file.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;

/// Memory-maps `path` (float16 or float32 on disk, converted to `dtype`) and builds a
/// module from it. A truncated or corrupt file, or a tensor missing from it, is an
/// error naming the file rather than a failure deep inside the module.
pub fn load<T>(
    path: &Path,
    dtype: DType,
    device: &Device,
    build: impl FnOnce(VarBuilder<'static>) -> Result<T>,
) -> Result<T> {
    // SAFETY: the file is mapped read-only; sdlab never writes weight files, and the
    // safetensors header is validated against the file length before use.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[path], dtype, device) }
        .map_err(|err| anyhow::anyhow!("{}: not a valid safetensors file ({err})", path.display()))?;
    build(vb).with_context(|| format!("{}: building the model from its weights", path.display()))
}
