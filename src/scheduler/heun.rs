//! diffusers' `HeunDiscreteScheduler` (diffusers 0.42): Heun's method on the
//! same sigmas as Euler. Each step is two calls: an Euler step to the next
//! sigma (the first call), then, with the UNet's prediction there, the average
//! of the two slopes applied from the first call's latent (the second call).
//! The last step stops after its Euler call, so `n` steps make `2n - 1` calls.

use anyhow::{bail, Context};
use candle_core::Tensor;
use serde_json::Value;

use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::schedule;
use super::sigmas::{init_noise_sigma, scale_by_sigma, sigma_schedule, sigma_x0, work_dtype, FinalSigma, SigmaOptions};

/// A Heun run: plain data, cheap to clone.
///
/// Guarantee: `timesteps()` and `sigmas()` are diffusers' after `set_timesteps`
/// (one per call, interleaved), and [`Heun::step`] computes `step` with the same
/// float32 operations, given the previous call's record.
#[derive(Debug, Clone, PartialEq)]
pub struct Heun {
    prediction_type: PredictionType,
    clip_sample: Option<f64>,
    /// One per call.
    timesteps: Vec<f32>,
    /// One per call and the final 0: `[s0, s1, s1, s2, s2, ..., 0]`.
    sigmas: Vec<f32>,
    init_noise_sigma: f32,
}

/// Everything one Heun call used and computed.
#[derive(Debug, Clone)]
pub struct HeunStep {
    pub index: usize,
    pub timestep: f64,
    /// The step's sigmas (the second call reports its step's, as diffusers uses them).
    pub sigma: f64,
    pub sigma_next: f64,
    pub alpha_prod_t: f64,
    /// The Euler call (true) or the correcting one.
    pub first_order: bool,
    /// The slope applied: this call's, or on the second call the average of both.
    pub derivative: Tensor,
    pub dt: f64,
    /// The Euler call keeps its latent: the second call steps from it again.
    pub sample_in: Option<Tensor>,
    pub pred_original_sample: Tensor,
    pub prev_sample: Tensor,
}

impl Heun {
    /// `HeunDiscreteScheduler.from_config(config)` and `set_timesteps(steps)`.
    pub fn from_config(config: &Value, steps: usize) -> anyhow::Result<Self> {
        let map = super::config::effective_keys(config)?;
        let mut base_map = map.clone();
        base_map.entry("timestep_spacing").or_insert_with(|| Value::from(TimestepSpacing::Linspace.as_str()));
        // Heun's own default: no clipping
        base_map.entry("clip_sample").or_insert(Value::Bool(false));
        let base = SchedulerConfig::from_json(&Value::Object(base_map))?;
        for key in ["use_exponential_sigmas", "use_beta_sigmas"] {
            if map.get(key).and_then(Value::as_bool).unwrap_or(false) {
                bail!("{key}: not computed by sdlab; expected false");
            }
        }
        let karras = match map.get("use_karras_sigmas") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => bail!("use_karras_sigmas: expected true or false, found {other}"),
        };
        let options = SigmaOptions {
            spacing: base.timestep_spacing,
            steps_offset: base.steps_offset,
            karras,
            sigma_min: None,
            sigma_max: None,
            final_sigma: FinalSigma::Zero,
        };
        let alphas_cumprod = schedule::alphas_cumprod(&base);
        let schedule = sigma_schedule(&alphas_cumprod, steps, &options)
            .context("cannot set up the HeunDiscreteScheduler timesteps")?;
        // torch.cat([x[:1], x[1:].repeat_interleave(2)]) (the sigmas keep their last once)
        let n = schedule.timesteps.len();
        let mut timesteps = vec![schedule.timesteps[0]];
        let mut sigmas = vec![schedule.sigmas[0]];
        for i in 1..n {
            timesteps.extend([schedule.timesteps[i]; 2]);
            sigmas.extend([schedule.sigmas[i]; 2]);
        }
        sigmas.push(schedule.sigmas[n]);
        let init_noise_sigma = init_noise_sigma(&sigmas, base.timestep_spacing);
        Ok(Self {
            prediction_type: base.prediction_type,
            clip_sample: base.clip_sample.then_some(base.clip_sample_range),
            timesteps,
            sigmas,
            init_noise_sigma,
        })
    }

    /// One per call (`2n - 1`).
    /// Image to image: the run starts at call `begin` of the schedule, as after
    /// diffusers' `set_begin_index(begin)`.
    pub(super) fn skip(&mut self, begin: usize) {
        let begin = begin.min(self.timesteps.len());
        self.timesteps.drain(..begin);
        self.sigmas.drain(..begin);
    }

    pub fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    /// One per call and the final 0.
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    pub fn init_noise_sigma(&self) -> f64 {
        f64::from(self.init_noise_sigma)
    }

    /// `scale_model_input`: `x / sqrt(sigma^2 + 1)` with the call's own sigma.
    pub fn scale_model_input(&self, sample: &Tensor, index: usize) -> candle_core::Result<Tensor> {
        let Some(&sigma) = self.sigmas.get(index) else {
            candle_core::bail!("Heun: call {index} is past the run's calls");
        };
        scale_by_sigma(sample, sigma, "Heun")
    }

    /// Call `index`; `previous` is call `index - 1`'s record (the second call of a
    /// step needs its Euler call's slope, step length and latent).
    pub fn step(
        &self,
        index: usize,
        model_output: &Tensor,
        sample: &Tensor,
        previous: Option<&HeunStep>,
    ) -> candle_core::Result<HeunStep> {
        if index >= self.timesteps.len() {
            candle_core::bail!("Heun step: call {index} is past the run's {} calls", self.timesteps.len());
        }
        let out_dtype = model_output.dtype();
        let work = work_dtype(out_dtype, "Heun")?;
        let sample = sample.to_dtype(work)?;
        let model_output = model_output.to_dtype(work)?;
        let scalar = |c: f32| Tensor::new(f64::from(c), sample.device())?.to_dtype(work);
        // the calls alternate, Euler first: odd calls correct the step before
        let first_order = index.is_multiple_of(2);
        let (sigma, sigma_next) = if first_order {
            (self.sigmas[index], self.sigmas[index + 1])
        } else {
            (self.sigmas[index - 1], self.sigmas[index])
        };
        let sigma_input = if first_order { sigma } else { sigma_next };
        let x0 = sigma_x0(self.prediction_type, sigma_input, &model_output, &sample)?;
        let x0 = match self.clip_sample {
            Some(range) => x0.clamp(-range, range)?,
            None => x0,
        };
        let (derivative, dt, from) = if first_order {
            let derivative = (&sample - &x0)?.broadcast_div(&scalar(sigma)?)?;
            (derivative, sigma_next - sigma, sample.clone())
        } else {
            let Some(euler) = previous.filter(|p| p.first_order && p.index + 1 == index) else {
                candle_core::bail!("Heun step {index}: needs the record of call {} (its Euler call)", index - 1);
            };
            let Some(from) = &euler.sample_in else {
                candle_core::bail!("Heun step {index}: call {}'s record lacks its latent", index - 1);
            };
            let own = (&sample - &x0)?.broadcast_div(&scalar(sigma_next)?)?;
            let mean = ((euler.derivative.to_dtype(work)? + own)? / 2.0)?;
            (mean, euler.dt as f32, from.to_dtype(work)?)
        };
        let prev_sample = (&from + derivative.affine(f64::from(dt), 0.0)?)?;
        Ok(HeunStep {
            index,
            timestep: f64::from(self.timesteps[index]),
            sigma: f64::from(sigma),
            sigma_next: f64::from(sigma_next),
            alpha_prod_t: 1.0 / (1.0 + f64::from(sigma) * f64::from(sigma)),
            first_order,
            derivative: derivative.to_dtype(out_dtype)?,
            dt: f64::from(dt),
            sample_in: first_order.then(|| from.to_dtype(out_dtype)).transpose()?,
            pred_original_sample: x0.to_dtype(out_dtype)?,
            prev_sample: prev_sample.to_dtype(out_dtype)?,
        })
    }
}
