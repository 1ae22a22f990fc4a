//! diffusers' `LCMScheduler` (diffusers 0.42), the sampler of latent consistency
//! models. Each step predicts x0, blends it with the latent by the consistency
//! model's boundary scalings (`c_skip`, `c_out`), and, except on the last step,
//! noises that "denoised" latent afresh to the next timestep with noise from the
//! run's generator. A model not distilled for it (SD itself) gives a poor picture
//! in few steps: LCM shows why a consistency model is trained separately.

use anyhow::{bail, Context};
use candle_core::Tensor;
use serde_json::Value;

use super::config::{PredictionType, SchedulerConfig};
use super::schedule;

/// An LCM run: plain data, cheap to clone.
///
/// Guarantee: `timesteps()` are diffusers' after `set_timesteps` and
/// [`Lcm::step`] computes `step` with the same float32 operations, given the
/// noise diffusers draws for that step.
#[derive(Debug, Clone, PartialEq)]
pub struct Lcm {
    prediction_type: PredictionType,
    clip_sample: Option<f64>,
    timestep_scaling: f64,
    timesteps: Vec<usize>,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
}

/// Everything one LCM step used and computed.
#[derive(Debug, Clone)]
pub struct LcmStep {
    pub index: usize,
    pub timestep: usize,
    /// The next step's timestep (the same one on the last step).
    pub prev_timestep: usize,
    pub alpha_prod_t: f64,
    pub alpha_prod_t_prev: f64,
    /// The boundary scalings: `denoised = c_out * x0 + c_skip * sample`.
    pub c_skip: f64,
    pub c_out: f64,
    /// LCM's "denoised": its x0.
    pub pred_original_sample: Tensor,
    pub prev_sample: Tensor,
}

impl Lcm {
    /// `LCMScheduler.from_config(config)` and `set_timesteps(steps)`.
    pub fn from_config(config: &Value, steps: usize) -> anyhow::Result<Self> {
        let map = super::config::effective_keys(config)?;
        // LCMScheduler's own defaults where the file is silent
        let mut base_map = map.clone();
        for (key, value) in [
            ("beta_start", Value::from(0.00085)),
            ("beta_end", Value::from(0.012)),
            ("beta_schedule", Value::from("scaled_linear")),
            ("clip_sample", Value::Bool(false)),
            ("set_alpha_to_one", Value::Bool(true)),
        ] {
            base_map.entry(key).or_insert(value);
        }
        let base = SchedulerConfig::from_json(&Value::Object(base_map))?;
        let number = |key: &str, default: f64| -> anyhow::Result<f64> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => match v.as_f64() {
                    Some(x) if x.is_finite() && x > 0.0 => Ok(x),
                    _ => bail!("{key}: expected a number above 0, found {v}"),
                },
            }
        };
        let original_steps = number("original_inference_steps", 50.0)?;
        if original_steps.fract() != 0.0 {
            bail!("original_inference_steps: expected a whole number, found {original_steps}");
        }
        let timestep_scaling = number("timestep_scaling", 10.0)?;
        let alphas_cumprod = schedule::alphas_cumprod(&base);
        let final_alpha_cumprod = if base.set_alpha_to_one { 1.0 } else { alphas_cumprod[0] };
        let timesteps = lcm_timesteps(base.num_train_timesteps, original_steps as usize, steps)
            .context("cannot set up the LCMScheduler timesteps")?;
        Ok(Self {
            prediction_type: base.prediction_type,
            clip_sample: base.clip_sample.then_some(base.clip_sample_range),
            timestep_scaling,
            timesteps,
            alphas_cumprod,
            final_alpha_cumprod,
        })
    }

    /// Image to image: the run starts at call `begin` of the schedule, as after
    /// diffusers' `set_begin_index(begin)`.
    pub(super) fn skip(&mut self, begin: usize) {
        self.timesteps.drain(..begin.min(self.timesteps.len()));
    }

    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    pub fn alpha_prod_t(&self, timestep: usize) -> f64 {
        f64::from(self.alphas_cumprod[timestep])
    }

    /// Step `index`. Every step but the last noises its result again: pass the
    /// noise diffusers draws for it (`randn_tensor(model_output.shape, generator=...)`).
    pub fn step(
        &self,
        index: usize,
        model_output: &Tensor,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> candle_core::Result<LcmStep> {
        let Some(&timestep) = self.timesteps.get(index) else {
            candle_core::bail!("LCM step: call {index} is past the run's {} calls", self.timesteps.len());
        };
        let last = index + 1 == self.timesteps.len();
        let prev_timestep = if last { timestep } else { self.timesteps[index + 1] };
        let out_dtype = model_output.dtype();
        let work = super::sigmas::work_dtype(out_dtype, "LCM")?;
        let sample = sample.to_dtype(work)?;
        let model_output = model_output.to_dtype(work)?;
        let scalar = |c: f32| Tensor::new(f64::from(c), sample.device())?.to_dtype(work);
        let a_t = self.alphas_cumprod[timestep];
        let a_prev = self.alphas_cumprod.get(prev_timestep).copied().unwrap_or(self.final_alpha_cumprod);
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        // get_scalings_for_boundary_condition_discrete, in float32 as torch has them
        let scaled = (timestep as f64 * self.timestep_scaling) as f32;
        let c_skip = 0.25f32 / (scaled * scaled + 0.25);
        let c_out = scaled / (scaled * scaled + 0.25).sqrt();
        let x0 = match self.prediction_type {
            PredictionType::Epsilon => {
                (&sample - model_output.affine(f64::from(b_t.sqrt()), 0.0)?)?.broadcast_div(&scalar(a_t.sqrt())?)?
            }
            PredictionType::VPrediction => {
                (sample.affine(f64::from(a_t.sqrt()), 0.0)? - model_output.affine(f64::from(b_t.sqrt()), 0.0)?)?
            }
            PredictionType::Sample => model_output.clone(),
        };
        let x0 = match self.clip_sample {
            Some(range) => x0.clamp(-range, range)?,
            None => x0,
        };
        let denoised = (x0.affine(f64::from(c_out), 0.0)? + sample.affine(f64::from(c_skip), 0.0)?)?;
        let prev_sample = if last {
            denoised.clone()
        } else {
            let Some(noise) = noise else {
                candle_core::bail!("LCM step {index}: needs the step's noise (diffusers draws it from the generator)");
            };
            (denoised.affine(f64::from(a_prev.sqrt()), 0.0)?
                + noise.to_dtype(work)?.affine(f64::from(b_prev.sqrt()), 0.0)?)?
        };
        Ok(LcmStep {
            index,
            timestep,
            prev_timestep,
            alpha_prod_t: f64::from(a_t),
            alpha_prod_t_prev: f64::from(a_prev),
            c_skip: f64::from(c_skip),
            c_out: f64::from(c_out),
            pred_original_sample: denoised.to_dtype(out_dtype)?,
            prev_sample: prev_sample.to_dtype(out_dtype)?,
        })
    }

    /// Whether step `index` draws noise (all but the last).
    pub fn draws_noise(&self, index: usize) -> bool {
        index + 1 < self.timesteps.len()
    }
}

/// `set_timesteps(steps)` (strength 1): `steps` of the `original_steps`
/// timesteps the model was distilled on (`k - 1, 2k - 1, ..., T - 1`, `k = T /
/// original_steps`), evenly spaced by index, highest first.
fn lcm_timesteps(train: usize, original_steps: usize, steps: usize) -> anyhow::Result<Vec<usize>> {
    anyhow::ensure!(steps > 0, "num_inference_steps must be at least 1, found 0");
    if original_steps > train {
        bail!("original_inference_steps ({original_steps}) cannot be larger than num_train_timesteps ({train})");
    }
    if steps > original_steps {
        bail!("num_inference_steps ({steps}) cannot be larger than original_inference_steps ({original_steps})");
    }
    let k = train / original_steps;
    let origin: Vec<usize> = (1..=original_steps).rev().map(|i| i * k - 1).collect();
    // np.floor(np.linspace(0, len, num=steps, endpoint=False))
    let step = origin.len() as f64 / steps as f64;
    Ok((0..steps).map(|i| origin[(i as f64 * step).floor() as usize]).collect())
}
