//! Stage 2, `get_latent`: the seeded noise the image is carved out of; or, image
//! to image, a picture's latent with that noise added.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};

use crate::model::vae::{AutoencoderKL, VaeConfig};
use crate::rng::torch::TorchRng;
use crate::scheduler::Sampler;

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

/// Image to image, stage 2's other start: the picture (`(1, 3, H, W)` in [0, 1])
/// through the VAE encoder, its latent drawn from the encoder's distribution with
/// the run's generator (`latent_dist.sample(generator)`) and scaled for the UNet:
/// diffusers' `image_latents`.
pub fn encode_image(
    vae: &AutoencoderKL,
    config: &VaeConfig,
    vae_dtype: DType,
    picture: &Tensor,
    rng: &mut TorchRng,
) -> Result<Tensor> {
    let (mean, logvar) = vae.encode(&picture.affine(2.0, -1.0)?.to_dtype(vae_dtype)?)?;
    let std = logvar.affine(0.5, 0.0)?.exp()?;
    let sample = rng.randn_tensor(mean.dims())?.to_dtype(mean.dtype())?.to_device(mean.device())?;
    Ok((mean + std.mul(&sample)?)?.affine(config.scaling_factor, 0.0)?)
}

/// Then noise from the same generator, added to the picture's latent the way the
/// sampler adds it at the first timestep the run keeps (`scheduler.add_noise`):
/// the latent the first step receives.
pub fn noise_image_latents(sampler: &Sampler, image_latents: &Tensor, rng: &mut TorchRng) -> Result<Tensor> {
    let noise = rng.randn_tensor(image_latents.dims())?;
    let noise = noise.to_dtype(image_latents.dtype())?.to_device(image_latents.device())?;
    Ok(sampler.add_noise(image_latents, &noise)?)
}
