//! Weights into candle modules, with errors that name the file: a diffusers
//! component's safetensors file, or one component of a single-file checkpoint,
//! either with LoRAs fused in.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use candle_core::safetensors::{Load, MmapedSafetensors, SliceSafetensors};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::file::ModelFile;
use super::lora::{LoraSet, Patched};
use super::single_file::Component;

/// The tensors of a safetensors file (float16 or float32; a built-in file is read
/// where it lies in the binary). A truncated or corrupt file is an error naming it.
/// On the CPU a file on disk is converted to `dtype` on every core at once.
pub fn file_backend(file: &ModelFile, dtype: DType, device: &Device) -> Result<Box<dyn SimpleBackend>> {
    let backend: Box<dyn SimpleBackend> = match file.builtin_bytes() {
        Some(bytes) => Box::new(SliceSafetensors::new(bytes).map_err(|err| invalid(file, err))?),
        None => {
            // SAFETY: the file is mapped read-only; sdlab never writes weight files, and the
            // safetensors header is validated against the file length before use.
            let mapped = unsafe { MmapedSafetensors::new(file.path()) }.map_err(|err| invalid(file, err))?;
            if device.is_cpu() {
                Box::new(Converted::new(&mapped, dtype).map_err(|err| invalid(file, err))?)
            } else {
                Box::new(mapped)
            }
        }
    };
    Ok(backend)
}

/// Every tensor of a file already in the model's dtype: candle reads and converts
/// tensor by tensor on one thread as the model asks for them (float16 to float32
/// was most of a CPU load); here all of them are converted in parallel first. The
/// model's tensors share their storage with these, and these go when the model is
/// built, so the peak is the model's own size.
struct Converted {
    tensors: HashMap<String, Tensor>,
}

impl Converted {
    fn new(file: &MmapedSafetensors, dtype: DType) -> candle_core::Result<Self> {
        let tensors = file
            .tensors()
            .into_par_iter()
            .map(|(name, view)| {
                let tensor = view.load(&Device::Cpu)?.to_dtype(dtype)?;
                release_pages(view.data());
                Ok((name, tensor))
            })
            .collect::<candle_core::Result<HashMap<_, _>>>()?;
        Ok(Self { tensors })
    }

    fn tensor(&self, name: &str) -> candle_core::Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.to_string() }.bt())
    }
}

impl SimpleBackend for Converted {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, _: &Device) -> candle_core::Result<Tensor> {
        let tensor = self.tensor(name)?;
        if tensor.shape() != &s {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: s,
                got: tensor.shape().clone(),
            }
            .bt());
        }
        tensor.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, _: &Device) -> candle_core::Result<Tensor> {
        self.tensor(name)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// Drops the mapped file pages wholly inside `bytes` from the process once they are
/// converted. A mapped page read stays resident in the process until the mapping
/// goes, so a whole float16 UNet (1.7 GB at SD 2's size) counted on top of the float32
/// one at the load's peak. The page cache keeps the file; a later read maps it back.
#[cfg_attr(not(unix), allow(unused_variables))]
fn release_pages(bytes: &[u8]) {
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(1);
        let start = (bytes.as_ptr() as usize).div_ceil(page) * page;
        let end = (bytes.as_ptr() as usize + bytes.len()) / page * page;
        if end > start {
            // SAFETY: [start, end) lies within `bytes`, a read-only private file mapping that
            // sdlab never writes: MADV_DONTNEED only unmaps its pages, and any later read
            // faults them in again from the file, unchanged. A failure leaves them mapped.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        }
    }
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
    build(file_backend(file, dtype, device)?, None, &file.display().to_string(), dtype, device, build_module)
}
