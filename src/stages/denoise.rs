//! Stage 3, `denoise`: one timestep of the loop, as diffusers' pipeline runs it.

use anyhow::Result;
use candle_core::Tensor;

use crate::model::unet::{UNet2DConditionModel, UNetObserver};
use crate::rng::torch::TorchRng;
use crate::scheduler::{Sampler, SamplerStep};

/// Everything one step computed, kept for inspection.
pub struct DenoiseStep {
    pub guidance_scale: f64,
    /// The UNet's prediction (noise, or v) without and with the prompt; `None` for the
    /// unconditional one when guidance is off (scale <= 1), as diffusers skips it then.
    pub noise_pred_uncond: Option<Tensor>,
    pub noise_pred_text: Tensor,
    /// `uncond + guidance_scale * (text - uncond)`: what the scheduler steps with.
    pub guided_model_output: Tensor,
    /// The sampler's values: t, alpha_prod_t (or sigma), the predicted x0 and the new latent.
    pub scheduler: SamplerStep,
}

/// The two knobs of a step that a user may turn between steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Guidance {
    /// Classifier-free guidance scale; at or below 1 the negative prompt is not used.
    pub guidance_scale: f64,
    /// DDIM's eta: 0 is deterministic DDIM, 1 is DDPM-like fresh noise each step
    /// (other samplers ignore it).
    pub eta: f64,
}

/// One denoising step: the latent twice through the UNet (negative + prompt),
/// classifier-free guidance, then the sampler's step. Sigma samplers scale x_t
/// for the UNet (DDIM passes it as is); multistep ones also use the `history` of
/// earlier steps; stochastic ones draw their noise from `rng`, the run's
/// generator. `taps` observes the UNet pass.
// Every input stays a plain argument: this function is the talk's denoise slide.
#[allow(clippy::too_many_arguments)]
pub fn denoise_step(
    unet: &UNet2DConditionModel,
    sampler: &Sampler,
    latents: &Tensor,
    history: &[&SamplerStep],
    prompt_embeds: &Tensor,
    index: usize,
    Guidance { guidance_scale, eta }: Guidance,
    rng: &mut TorchRng,
    taps: Option<&mut dyn UNetObserver>,
) -> Result<DenoiseStep> {
    let t = sampler.timestep(index)?;
    let scaled = sampler.scale_model_input(latents, index)?;
    let (noise_pred_uncond, noise_pred_text) = if guidance_scale > 1.0 {
        let latent_model_input = Tensor::cat(&[&scaled, &scaled], 0)?;
        let noise_pred = unet.forward(&latent_model_input, t, prompt_embeds, taps)?;
        (Some(noise_pred.narrow(0, 0, 1)?), noise_pred.narrow(0, 1, 1)?)
    } else {
        (None, unet.forward(&scaled, t, &prompt_embeds.narrow(0, 1, 1)?, taps)?)
    };
    let guided_model_output = match &noise_pred_uncond {
        Some(uncond) => (uncond + ((&noise_pred_text - uncond)? * guidance_scale)?)?,
        None => noise_pred_text.clone(),
    };
    let scheduler = sampler.step(index, &guided_model_output, latents, history, eta, rng)?;
    Ok(DenoiseStep { guidance_scale, noise_pred_uncond, noise_pred_text, guided_model_output, scheduler })
}
