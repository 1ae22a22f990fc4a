//! Stage 3, `denoise`: one timestep of the loop, as diffusers' pipeline runs it.

use anyhow::Result;
use candle_core::Tensor;

use crate::model::unet::{UNet2DConditionModel, UNetObserver};
use crate::rng::torch::TorchRng;
use crate::scheduler::{DdimScheduler, DdimStep};

/// Everything one step computed, kept for inspection.
pub struct DenoiseStep {
    pub guidance_scale: f64,
    /// The UNet's prediction (noise, or v) without and with the prompt; `None` for the
    /// unconditional one when guidance is off (scale <= 1), as diffusers skips it then.
    pub noise_pred_uncond: Option<Tensor>,
    pub noise_pred_text: Tensor,
    /// `uncond + guidance_scale * (text - uncond)`: what the scheduler steps with.
    pub guided_model_output: Tensor,
    /// The scheduler's values: t, alpha_prod_t, the predicted x0 and the new latent.
    pub scheduler: DdimStep,
}

/// The two knobs of a step that a user may turn between steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Guidance {
    /// Classifier-free guidance scale; at or below 1 the negative prompt is not used.
    pub guidance_scale: f64,
    /// DDIM's eta: 0 is deterministic DDIM, 1 is DDPM-like fresh noise each step.
    pub eta: f64,
}

/// One denoising step: the latent twice through the UNet (negative + prompt),
/// classifier-free guidance, then the DDIM step. `taps` observes the UNet pass.
// Every input stays a plain argument: this function is the talk's denoise slide.
#[allow(clippy::too_many_arguments)]
pub fn denoise_step(
    unet: &UNet2DConditionModel,
    scheduler: &DdimScheduler,
    latents: &Tensor,
    prompt_embeds: &Tensor,
    timestep: usize,
    Guidance { guidance_scale, eta }: Guidance,
    rng: &mut TorchRng,
    taps: Option<&mut dyn UNetObserver>,
) -> Result<DenoiseStep> {
    let t = timestep as f64;
    let (noise_pred_uncond, noise_pred_text) = if guidance_scale > 1.0 {
        let latent_model_input = Tensor::cat(&[latents, latents], 0)?;
        let noise_pred = unet.forward(&latent_model_input, t, prompt_embeds, taps)?;
        let halves = noise_pred.chunk(2, 0)?;
        (Some(halves[0].clone()), halves[1].clone())
    } else {
        (None, unet.forward(latents, t, &prompt_embeds.narrow(0, 1, 1)?, taps)?)
    };
    let guided_model_output = match &noise_pred_uncond {
        Some(uncond) => (uncond + ((&noise_pred_text - uncond)? * guidance_scale)?)?,
        None => noise_pred_text.clone(),
    };
    let variance_noise = variance_noise(rng, eta, latents)?;
    let scheduler = scheduler.step(&guided_model_output, timestep, latents, eta, variance_noise.as_ref())?;
    Ok(DenoiseStep { guidance_scale, noise_pred_uncond, noise_pred_text, guided_model_output, scheduler })
}

/// DDIM's fresh noise for eta > 0, shaped like the latent. diffusers draws it from the
/// pipeline's generator, after the initial latent, so the generator is shared; kept out
/// of `denoise_step` so that the step fits on one slide of talk mode.
fn variance_noise(rng: &mut TorchRng, eta: f64, latents: &Tensor) -> Result<Option<Tensor>> {
    if eta > 0.0 {
        let noise = rng.randn_tensor(latents.dims())?;
        Ok(Some(noise.to_dtype(latents.dtype())?.to_device(latents.device())?))
    } else {
        Ok(None)
    }
}
