//! Weights into candle modules, with errors that name the file: a diffusers
//! component's safetensors file, or one component of a single-file checkpoint,
//! either with LoRAs fused in.

use std::sync::Arc;

use anyhow::{Context, Result};
use candle_core::safetensors::{MmapedSafetensors, SliceSafetensors};
use candle_core::{DType, Device};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use super::file::ModelFile;
use super::lora::{LoraSet, Patched};
use super::single_file::Component;

/// The tensors of a safetensors file (float16 or float32; a built-in file is read
/// where it lies in the binary). A truncated or corrupt file is an error naming it.
pub fn file_backend(file: &ModelFile) -> Result<Box<dyn SimpleBackend>> {
    let backend: Box<dyn SimpleBackend> = match file.builtin_bytes() {
        Some(bytes) => Box::new(SliceSafetensors::new(bytes).map_err(|err| invalid(file, err))?),
        // SAFETY: the file is mapped read-only; sdlab never writes weight files, and the
        // safetensors header is validated against the file length before use.
        None => Box::new(unsafe { MmapedSafetensors::new(file.path()) }.map_err(|err| invalid(file, err))?),
    };
    Ok(backend)
}

fn invalid(file: &ModelFile, err: candle_core::Error) -> anyhow::Error {
    anyhow::anyhow!("{}: not a valid safetensors file ({err})", file.display())
}

/// Builds a module from `backend` (converted to `dtype`), the LoRAs of `component`
/// fused in; `what` names the weights in errors.
pub fn build<T>(
    backend: Box<dyn SimpleBackend>,
    loras: Option<(&Arc<LoraSet>, Component)>,
    what: &str,
    dtype: DType,
    device: &Device,
    build: impl FnOnce(VarBuilder<'static>) -> Result<T>,
) -> Result<T> {
    let backend = match loras {
        Some((loras, component)) if !loras.loras.is_empty() => {
            Box::new(Patched { inner: backend, component, loras: loras.clone() }) as Box<dyn SimpleBackend>
        }
        _ => backend,
    };
    let vb = VarBuilder::from_backend(backend, dtype, device.clone());
    build(vb).with_context(|| format!("{what}: building the model from its weights"))
}

/// Memory-maps `file` and builds a module from it.
pub fn load<T>(
    file: &ModelFile,
    dtype: DType,
    device: &Device,
    build_module: impl FnOnce(VarBuilder<'static>) -> Result<T>,
) -> Result<T> {
    build(file_backend(file)?, None, &file.display().to_string(), dtype, device, build_module)
}
