//! Stage 4, `vae_decode`: latents back to pixels.

use crate::model::vae::{AutoencoderKL, VaeConfig};
use anyhow::Result;
use candle_core::{DType, Tensor};

/// `vae.decode(latents / scaling_factor + shift_factor)`, then diffusers' image
/// post-processing `(x / 2 + 0.5).clamp(0, 1)`: a `(1, 3, H, W)` float32 image in [0, 1].
/// The VAE does not scale by itself, so the scaling happens here, in the open.
pub fn vae_decode(vae: &AutoencoderKL, config: &VaeConfig, vae_dtype: DType, latents: &Tensor) -> Result<Tensor> {
    let latents = latents.to_dtype(vae_dtype)?;
    let latents = latents.affine(1.0 / config.scaling_factor, config.shift_factor.unwrap_or(0.0))?;
    let image = vae.decode(&latents)?;
    let image = image.to_dtype(DType::F32)?.affine(0.5, 0.5)?.clamp(0f32, 1f32)?;
    Ok(image)
}
