//! diffusers' `DDIMScheduler` (diffusers 0.42): `set_timesteps` and `step`,
//! with every intermediate of a step returned instead of discarded.

use anyhow::Context;
use candle_core::{DType, Tensor};

use super::config::{PredictionType, SchedulerConfig};
use super::schedule;

/// A DDIM scheduler set up for one run of `num_inference_steps` steps.
///
/// Guarantee: for the same config and step count, `timesteps()` equals
/// diffusers' `DDIMScheduler.from_config(cfg).set_timesteps(n)`, the
/// `alphas_cumprod` are the same float32 values, and [`DdimScheduler::step`]
/// computes `DDIMScheduler.step` (including `set_alpha_to_one`, `clip_sample`
/// and eta noise) with the same float32 operations in the same order. f32
/// results agree with diffusers' CPU run to an ulp or two: torch's CPU
/// `sqrt` is not correctly rounded (torch 2.15, x86), ours is.
/// Plain data: cheap to clone and safe to share between threads.
#[derive(Debug, Clone, PartialEq)]
pub struct DdimScheduler {
    config: SchedulerConfig,
    num_inference_steps: usize,
    timesteps: Vec<usize>,
    /// float32 values, widened without change.
    alphas_cumprod: Vec<f64>,
    /// `alpha_prod_t_prev` once the previous timestep is below 0.
    final_alpha_cumprod: f64,
}

/// Everything one DDIM step computed, for looking at, not only the next latent.
#[derive(Debug, Clone)]
pub struct DdimStep {
    /// The timestep the step started from.
    pub timestep: usize,
    /// `timestep - num_train_timesteps / num_inference_steps` (integer
    /// division, for every spacing, as diffusers); negative on the last step.
    pub prev_timestep: i64,
    /// `alphas_cumprod[timestep]` (float32 value).
    pub alpha_prod_t: f64,
    /// `alphas_cumprod[prev_timestep]`, or the final value (1, or
    /// `alphas_cumprod[0]` without `set_alpha_to_one`) when it is negative.
    pub alpha_prod_t_prev: f64,
    /// `1 - alpha_prod_t`, in float32.
    pub beta_prod_t: f64,
    /// sigma_t of the DDIM paper, `eta * sqrt(variance)`; 0 when eta is 0.
    pub std_dev_t: f64,
    /// The predicted clean latent x0, after `clip_sample` when configured.
    pub pred_original_sample: Tensor,
    /// The predicted noise (the model output for epsilon models, derived from
    /// it for v_prediction and sample models).
    pub pred_epsilon: Tensor,
    /// x_{t-1}: the latent the next step starts from.
    pub prev_sample: Tensor,
}

impl DdimScheduler {
    /// Sets up the schedule and the timesteps of a `num_inference_steps` run.
    ///
    /// Errors where diffusers' `set_timesteps` raises (0 steps, more steps
    /// than training timesteps) and where diffusers would pick a timestep
    /// outside the training range (e.g. `trailing` with 61 of 1000 steps).
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> anyhow::Result<Self> {
        // Configs read from JSON are valid already; one built in code must be too.
        config.validate()?;
        let timesteps = schedule::timesteps(config, num_inference_steps).context("cannot set up the DDIM timesteps")?;
        let alphas_cumprod: Vec<f64> = schedule::alphas_cumprod(config).into_iter().map(f64::from).collect();
        let final_alpha_cumprod = if config.set_alpha_to_one { 1.0 } else { alphas_cumprod[0] };
        Ok(Self { config: config.clone(), num_inference_steps, timesteps, alphas_cumprod, final_alpha_cumprod })
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    pub fn num_inference_steps(&self) -> usize {
        self.num_inference_steps
    }

    /// The timesteps of the run, in the order they are denoised (highest first).
    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    /// Image to image: the run starts at call `begin` of the schedule, as after
    /// diffusers' `set_begin_index(begin)`.
    pub(super) fn skip(&mut self, begin: usize) {
        self.timesteps.drain(..begin.min(self.timesteps.len()));
    }

    /// The cumulative products of the alphas, one per training timestep: the
    /// float32 values diffusers holds, widened to f64 without change.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// The standard deviation of the starting noise: 1 for DDIM, so the
    /// initial latent is the plain `randn` draw.
    pub fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// The timestep a step from `timestep` lands on:
    /// `timestep - num_train_timesteps / num_inference_steps` (integer
    /// division, whatever the spacing, as in diffusers).
    pub fn prev_timestep(&self, timestep: usize) -> i64 {
        let ratio = self.config.num_train_timesteps / self.num_inference_steps;
        // A timestep past i64 (never a real one) must not overflow; ratio <= 100000.
        i64::try_from(timestep).unwrap_or(i64::MAX) - ratio as i64
    }

    /// `alpha_prod_t_prev` of a step from `timestep`: `alphas_cumprod` at
    /// [`Self::prev_timestep`], or the final value (1 with `set_alpha_to_one`,
    /// else `alphas_cumprod[0]`) once that is negative.
    pub fn alpha_prod_t_prev(&self, timestep: usize) -> f64 {
        usize::try_from(self.prev_timestep(timestep))
            .ok()
            .and_then(|prev| self.alphas_cumprod.get(prev).copied())
            .unwrap_or(self.final_alpha_cumprod)
    }

    /// One DDIM step from `timestep`, as diffusers'
    /// `DDIMScheduler.step(model_output, timestep, sample, eta, variance_noise=...)`
    /// (with `use_clipped_model_output=False`).
    ///
    /// The scalar coefficients are computed with the float32 operations torch
    /// applies to the 0-dim float32 `alphas_cumprod[t]`, then applied one
    /// tensor operation at a time in diffusers' order (a division stays a
    /// division), so f32 tensors get diffusers' float32 results up to the
    /// rounding of torch's square roots (an ulp or two). f16 / bf16 tensors are computed in f32 and
    /// rounded once at the end (more precise than torch's per-operation
    /// rounding, so they agree with torch to half precision, not bit for bit).
    /// Results have the dtype and device of `sample`.
    ///
    /// `eta > 0` adds `std_dev_t * variance_noise`: diffusers draws that noise
    /// with `randn_tensor(model_output.shape, generator=...)`; pass the same
    /// draw (see [`crate::rng`]) to reproduce a seeded run. It is required
    /// when `eta > 0` and ignored otherwise.
    pub fn step(
        &self,
        model_output: &Tensor,
        timestep: usize,
        sample: &Tensor,
        eta: f64,
        variance_noise: Option<&Tensor>,
    ) -> candle_core::Result<DdimStep> {
        let train = self.config.num_train_timesteps;
        let Some(&alpha_prod_t) = self.alphas_cumprod.get(timestep) else {
            candle_core::bail!("DDIM step: timestep {timestep} is outside 0..{train}");
        };
        // Only rescale_betas_zero_snr's last timestep has alpha_prod_t = 0 (the config
        // refuses any other): x0 = (sample - eps) / 0 there, where diffusers gives inf/NaN.
        if alpha_prod_t == 0.0 && self.config.prediction_type == PredictionType::Epsilon {
            candle_core::bail!(
                "DDIM step: timestep {timestep} has alphas_cumprod 0 (rescale_betas_zero_snr), where an epsilon \
                 prediction gives no x0; such schedules need prediction_type v_prediction"
            );
        }
        let out_dtype = sample.dtype();
        let work = match out_dtype {
            DType::F32 | DType::F64 => out_dtype,
            DType::F16 | DType::BF16 => DType::F32,
            other => candle_core::bail!("DDIM step: expected a float sample, found {other:?}"),
        };
        if model_output.shape() != sample.shape() {
            candle_core::bail!(
                "DDIM step: model_output has shape {:?} but sample has {:?}",
                model_output.dims(),
                sample.dims()
            );
        }
        let noise = match variance_noise {
            _ if eta <= 0.0 => None,
            Some(noise) if noise.shape() == sample.shape() => Some(noise.to_dtype(work)?),
            Some(noise) => candle_core::bail!(
                "DDIM step: variance_noise has shape {:?} but sample has {:?}",
                noise.dims(),
                sample.dims()
            ),
            None => candle_core::bail!(
                "DDIM step: eta = {eta} > 0 needs variance_noise (diffusers draws it with \
                 randn_tensor(model_output.shape, generator=...)); pass that draw"
            ),
        };
        let model_output = model_output.to_dtype(work)?;
        let sample = sample.to_dtype(work)?;

        // Scalars: float32 values and float32 operations, as torch computes
        // them from the 0-dim float32 tensors alphas_cumprod[t].
        let prev_timestep = self.prev_timestep(timestep);
        let alpha_prod_t_prev = self.alpha_prod_t_prev(timestep);
        let a_t = alpha_prod_t as f32;
        let a_prev = alpha_prod_t_prev as f32;
        let beta_prod_t = 1.0 - a_t;
        let beta_prod_t_prev = 1.0 - a_prev;
        let variance = (beta_prod_t_prev / beta_prod_t) * (1.0 - a_t / a_prev);
        let std_dev_t = eta as f32 * variance.sqrt();
        let sqrt_a_t = f64::from(a_t.sqrt());
        let sqrt_b_t = f64::from(beta_prod_t.sqrt());
        let direction_coef = f64::from(direction_coef(a_prev, std_dev_t, eta, timestep)?);
        let sqrt_a_prev = f64::from(a_prev.sqrt());

        // A tensor multiplied by a scalar is `affine(c, 0)`; a division by a
        // scalar must stay a division (torch divides, not multiplies by 1/c).
        let scalar = |c: f64| Tensor::new(c, sample.device())?.to_dtype(work);
        let (pred_original_sample, pred_epsilon) = match self.config.prediction_type {
            PredictionType::Epsilon => {
                let x0 = (&sample - model_output.affine(sqrt_b_t, 0.0)?)?.broadcast_div(&scalar(sqrt_a_t)?)?;
                (x0, model_output)
            }
            PredictionType::Sample => {
                let eps = (&sample - model_output.affine(sqrt_a_t, 0.0)?)?.broadcast_div(&scalar(sqrt_b_t)?)?;
                (model_output, eps)
            }
            PredictionType::VPrediction => {
                let x0 = (sample.affine(sqrt_a_t, 0.0)? - model_output.affine(sqrt_b_t, 0.0)?)?;
                let eps = (model_output.affine(sqrt_a_t, 0.0)? + sample.affine(sqrt_b_t, 0.0)?)?;
                (x0, eps)
            }
        };
        let pred_original_sample = if self.config.clip_sample {
            let range = self.config.clip_sample_range;
            pred_original_sample.clamp(-range, range)?
        } else {
            pred_original_sample
        };
        let direction = pred_epsilon.affine(direction_coef, 0.0)?;
        let mut prev_sample = (pred_original_sample.affine(sqrt_a_prev, 0.0)? + direction)?;
        if let Some(noise) = noise {
            prev_sample = (prev_sample + noise.affine(f64::from(std_dev_t), 0.0)?)?;
        }

        Ok(DdimStep {
            timestep,
            prev_timestep,
            alpha_prod_t,
            alpha_prod_t_prev,
            beta_prod_t: f64::from(beta_prod_t),
            std_dev_t: f64::from(std_dev_t),
            pred_original_sample: pred_original_sample.to_dtype(out_dtype)?,
            pred_epsilon: pred_epsilon.to_dtype(out_dtype)?,
            prev_sample: prev_sample.to_dtype(out_dtype)?,
        })
    }
}

/// `sqrt(1 - alpha_prod_t_prev - std_dev_t^2)`, the weight of the predicted noise.
/// Up to eta 1 the value under the root is >= 0 in exact arithmetic, but float32
/// rounding can leave it a few ulps below 0, where torch's root gives NaN: that is
/// taken as the 0 it stands for. Above eta 1 it can truly be negative: an error.
fn direction_coef(a_prev: f32, std_dev_t: f32, eta: f64, timestep: usize) -> candle_core::Result<f32> {
    let radicand = 1.0 - a_prev - std_dev_t * std_dev_t;
    if radicand < 0.0 && eta > 1.0 {
        candle_core::bail!(
            "DDIM step: eta {eta} is too large for the step from timestep {timestep}: std_dev_t^2 = {} exceeds \
             1 - alpha_prod_t_prev = {}, where diffusers gives NaN; expected eta <= 1",
            std_dev_t * std_dev_t,
            1.0 - a_prev
        );
    }
    Ok(radicand.max(0.0).sqrt())
}
