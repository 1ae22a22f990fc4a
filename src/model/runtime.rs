//! Which device and dtype the models run on.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};
use candle_core::{DType, Device};

/// The device and dtype every tensor of a run lives in.
#[derive(Clone, Debug)]
pub struct Runtime {
    pub device: Device,
    pub dtype: DType,
}

/// `--device`: where the models run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    Cpu,
    Cuda,
}

impl FromStr for DeviceChoice {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            other => bail!("--device {other}: expected cpu or cuda"),
        }
    }
}

/// `--dtype`: the precision of weights and activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DTypeChoice {
    F32,
    F16,
}

impl FromStr for DTypeChoice {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" | "float32" => Ok(Self::F32),
            "f16" | "float16" => Ok(Self::F16),
            other => bail!("--dtype {other}: expected f32 or f16"),
        }
    }
}

impl Runtime {
    /// CUDA when this binary was built with it and a GPU answers, else the CPU;
    /// float16 on CUDA and float32 on the CPU unless asked otherwise (CPU f16 is slow).
    pub fn select(device: Option<DeviceChoice>, dtype: Option<DTypeChoice>) -> Result<Self> {
        let device = match device {
            Some(DeviceChoice::Cpu) => Device::Cpu,
            Some(DeviceChoice::Cuda) => {
                if !candle_core::utils::cuda_is_available() {
                    bail!("--device cuda: this sdlab was built without CUDA (rebuild with --features cuda)");
                }
                Device::new_cuda(0).map_err(|e| anyhow::anyhow!("--device cuda: no usable GPU ({e})"))?
            }
            None if candle_core::utils::cuda_is_available() => Device::new_cuda(0).unwrap_or(Device::Cpu),
            None => Device::Cpu,
        };
        let dtype = match dtype {
            Some(DTypeChoice::F32) => DType::F32,
            Some(DTypeChoice::F16) => DType::F16,
            None if device.is_cuda() => DType::F16,
            None => DType::F32,
        };
        // In a float16 run, the float32 work left (the upcast VAE, upcast attention
        // scores) is mostly convolutions, which torch runs as TF32 by default
        // (cudnn.allow_tf32): so does sdlab. A float32 run stays full float32, since it
        // is the one compared with diffusers to the last decimal (TF32 measured 2.5e-2
        // off on the sd2-tiny guided output, full f32 within 1e-4).
        candle_core::cuda::set_gemm_reduced_precision_f32(device.is_cuda() && dtype == DType::F16);
        Ok(Self { device, dtype })
    }

    /// The CPU in float32: what the reference runs and the tests use.
    pub fn cpu() -> Self {
        Self { device: Device::Cpu, dtype: DType::F32 }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let device = if self.device.is_cuda() { "cuda" } else { "cpu" };
        write!(f, "{device} {}", self.dtype.as_str())
    }
}
