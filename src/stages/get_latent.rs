//! Stage 2, `get_latent`: the seeded noise the image is carved out of.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};

use crate::rng::torch::TorchRng;

/// `(1, channels, height / factor, width / factor)`; the size has been checked to be
/// a multiple of the factor (see `Settings::check`), as diffusers' rounding down
/// would silently change the image size.
pub fn latent_shape(channels: usize, width: usize, height: usize, vae_scale_factor: usize) -> [usize; 4] {
    [1, channels, height / vae_scale_factor, width / vae_scale_factor]
}

/// `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed)) * init_noise_sigma`
/// drawn in float32 on the CPU, then cast and moved, so a seed gives the same starting
/// noise as diffusers on any device and dtype. The generator is passed in because
/// DDIM with eta > 0 keeps drawing from it.
pub fn get_latent(
    rng: &mut TorchRng,
    shape: [usize; 4],
    init_noise_sigma: f64,
    device: &Device,
    dtype: DType,
) -> Result<Tensor> {
    let noise = rng.randn_tensor(&shape)?;
    let noise = if init_noise_sigma == 1.0 { noise } else { noise.affine(init_noise_sigma, 0.0)? };
    Ok(noise.to_dtype(dtype)?.to_device(device)?)
}
