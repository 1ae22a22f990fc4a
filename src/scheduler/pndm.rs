//! diffusers' `PNDMScheduler` with `skip_prk_steps` (diffusers 0.42), the
//! scheduler Stable Diffusion 1.x ships with: pseudo linear multistep (PLMS).
//!
//! Each step mixes the noise predictions of up to four calls (Adams-Bashforth
//! weights) and takes DDIM-like step with the mix. The second call is special:
//! the UNet sees the latent after the first step, and its prediction, averaged
//! with the first one, redoes the first step from the starting latent (a Heun
//! step), so a run of `n` steps makes `n + 1` calls. What a call needs of the
//! past (earlier predictions, the first call's latent) is in the earlier calls'
//! records, so a resumed run needs nothing more than the saved steps.

use anyhow::Context;
use candle_core::Tensor;
use serde_json::Value;

use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::schedule::{self, numpy_arange, numpy_linspace};

/// A PNDM (PLMS) run: plain data, cheap to clone.
///
/// Guarantee: `timesteps()` are diffusers' after `set_timesteps`, and
/// [`Pndm::step`] computes `step` (PLMS) with the same float32 operations, given
/// the records of the earlier calls.
#[derive(Debug, Clone, PartialEq)]
pub struct Pndm {
    prediction_type: PredictionType,
    /// `num_train_timesteps // num_inference_steps`.
    ratio: usize,
    timesteps: Vec<usize>,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
}

/// Everything one PNDM call used and computed.
#[derive(Debug, Clone)]
pub struct PndmStep {
    pub index: usize,
    /// The timestep the UNet was given.
    pub timestep: usize,
    /// The step's own timesteps: from `timestep` to `prev_timestep`, except on
    /// the second call, which redoes the first step (from the first call's t).
    pub step_from: usize,
    pub prev_timestep: i64,
    pub alpha_prod_t: f64,
    pub alpha_prod_t_prev: f64,
    /// How many predictions the step mixed (1 to 4; 2 on the second call, its average).
    pub mixed: usize,
    /// This call's guided prediction, which later calls mix.
    pub model_output: Tensor,
    /// The first call keeps the latent it started from: the second call steps from it again.
    pub sample_in: Option<Tensor>,
    /// The x0 DDIM's formula gives for the mixed prediction at `step_from`, for
    /// looking at (PNDM itself does not form one).
    pub pred_original_sample: Tensor,
    pub prev_sample: Tensor,
}

impl Pndm {
    /// `PNDMScheduler.from_config(config, skip_prk_steps=True)` and `set_timesteps(steps)`.
    pub fn from_config(config: &Value, steps: usize) -> anyhow::Result<Self> {
        let map = super::config::effective_keys(config)?;
        // PNDM's own defaults where the file is silent: leading spacing, set_alpha_to_one false
        let mut base_map = map.clone();
        base_map.entry("set_alpha_to_one").or_insert(Value::Bool(false));
        let base = SchedulerConfig::from_json(&Value::Object(base_map))?;
        if base.prediction_type == PredictionType::Sample {
            anyhow::bail!("prediction_type: PNDMScheduler computes epsilon and v_prediction only, found sample");
        }
        let alphas_cumprod = schedule::alphas_cumprod(&base);
        let final_alpha_cumprod = if base.set_alpha_to_one { 1.0 } else { alphas_cumprod[0] };
        let timesteps = plms_timesteps(&base, steps).context("cannot set up the PNDMScheduler timesteps")?;
        Ok(Self {
            prediction_type: base.prediction_type,
            ratio: base.num_train_timesteps / steps,
            timesteps,
            alphas_cumprod,
            final_alpha_cumprod,
        })
    }

    /// One per call: the `n` timesteps with the second repeated.
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

    /// Call `index`, given the records of calls `0..index`, in order.
    pub fn step(
        &self,
        index: usize,
        model_output: &Tensor,
        sample: &Tensor,
        history: &[&PndmStep],
    ) -> candle_core::Result<PndmStep> {
        let Some(&timestep) = self.timesteps.get(index) else {
            candle_core::bail!("PNDM step: call {index} is past the run's {} calls", self.timesteps.len());
        };
        if history.len() != index {
            candle_core::bail!("PNDM step {index}: needs the {index} earlier calls' records, got {}", history.len());
        }
        let out_dtype = model_output.dtype();
        let work = super::sigmas::work_dtype(out_dtype, "PNDM")?;
        let m = model_output.to_dtype(work)?;
        let f = |t: &Tensor| t.to_dtype(work);
        let (mut step_from, mut prev_timestep) = (timestep, timestep as i64 - self.ratio as i64);
        // earlier predictions, but the second call's (it only averages)
        let mut ets: Vec<Tensor> =
            history.iter().filter(|s| s.index != 1).map(|s| f(&s.model_output)).collect::<Result<_, _>>()?;
        let keep = ets.len().saturating_sub(3);
        ets.drain(..keep);
        let (eps, start) = if index == 1 {
            prev_timestep = timestep as i64;
            step_from = timestep + self.ratio;
            let first = history[0];
            let Some(start) = &first.sample_in else {
                candle_core::bail!("PNDM step 1: the first call's record lacks its starting latent");
            };
            (((&m + f(&first.model_output)?)? / 2.0)?, f(start)?)
        } else {
            ets.push(m.clone());
            let e = |k: usize| &ets[ets.len() - k];
            let eps = match ets.len() {
                1 => m.clone(),
                2 => ((e(1).affine(3.0, 0.0)? - e(2))? / 2.0)?,
                3 => {
                    let sum = ((e(1).affine(23.0, 0.0)? - e(2).affine(16.0, 0.0)?)? + e(3).affine(5.0, 0.0)?)?;
                    // a division, as torch divides (candle's `/ 12.0` would multiply by 1/12)
                    sum.broadcast_div(&Tensor::new(12f64, sum.device())?.to_dtype(work)?)?
                }
                _ => {
                    let sum = (((e(1).affine(55.0, 0.0)? - e(2).affine(59.0, 0.0)?)? + e(3).affine(37.0, 0.0)?)?
                        - e(4).affine(9.0, 0.0)?)?;
                    // python's 1 / 24, taken as a float32 scalar by torch
                    sum.affine(f64::from((1.0f64 / 24.0) as f32), 0.0)?
                }
            };
            (eps, f(sample)?)
        };
        let mixed = if index == 1 { 2 } else { ets.len() };
        let (prev_sample, pred_original_sample, a_t, a_prev) =
            self.prev_sample(&start, step_from, prev_timestep, &eps)?;
        Ok(PndmStep {
            index,
            timestep,
            step_from,
            prev_timestep,
            alpha_prod_t: f64::from(a_t),
            alpha_prod_t_prev: f64::from(a_prev),
            mixed,
            model_output: model_output.clone(),
            sample_in: (index == 0).then(|| sample.clone()),
            pred_original_sample: pred_original_sample.to_dtype(out_dtype)?,
            prev_sample: prev_sample.to_dtype(out_dtype)?,
        })
    }

    /// `_get_prev_sample`, and DDIM's x0 for the same prediction.
    fn prev_sample(
        &self,
        sample: &Tensor,
        timestep: usize,
        prev_timestep: i64,
        model_output: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor, f32, f32)> {
        let Some(&a_t) = self.alphas_cumprod.get(timestep) else {
            candle_core::bail!("PNDM step: timestep {timestep} is outside 0..{}", self.alphas_cumprod.len());
        };
        let a_prev = usize::try_from(prev_timestep)
            .ok()
            .and_then(|t| self.alphas_cumprod.get(t).copied())
            .unwrap_or(self.final_alpha_cumprod);
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let work = sample.dtype();
        let scalar = |c: f32| Tensor::new(f64::from(c), sample.device())?.to_dtype(work);
        let eps = match self.prediction_type {
            PredictionType::VPrediction => {
                (model_output.affine(f64::from(a_t.sqrt()), 0.0)? + sample.affine(f64::from(b_t.sqrt()), 0.0)?)?
            }
            _ => model_output.clone(),
        };
        let sample_coeff = (a_prev / a_t).sqrt();
        let denom = a_t * b_prev.sqrt() + (a_t * b_t * a_prev).sqrt();
        let moved = eps.affine(f64::from(a_prev - a_t), 0.0)?.broadcast_div(&scalar(denom)?)?;
        let prev = (sample.affine(f64::from(sample_coeff), 0.0)? - moved)?;
        let x0 = (sample - eps.affine(f64::from(b_t.sqrt()), 0.0)?)?.broadcast_div(&scalar(a_t.sqrt())?)?;
        Ok((prev, x0, a_t, a_prev))
    }
}

/// `set_timesteps` with `skip_prk_steps`: the `n` inference timesteps, highest
/// first, with the second-highest once more after the highest.
fn plms_timesteps(base: &SchedulerConfig, steps: usize) -> anyhow::Result<Vec<usize>> {
    let train = base.num_train_timesteps;
    anyhow::ensure!(steps > 0, "num_inference_steps must be at least 1, found 0");
    anyhow::ensure!(
        steps <= train,
        "num_inference_steps ({steps}) cannot be larger than num_train_timesteps ({train})"
    );
    // ascending, as diffusers' _timesteps
    let ascending: Vec<i64> = match base.timestep_spacing {
        TimestepSpacing::Linspace => {
            numpy_linspace(0.0, (train - 1) as f64, steps).into_iter().map(|t| t.round_ties_even() as i64).collect()
        }
        TimestepSpacing::Leading => (0..steps).map(|i| (i * (train / steps) + base.steps_offset) as i64).collect(),
        TimestepSpacing::Trailing => {
            let mut t: Vec<i64> = numpy_arange(train as f64, 0.0, -(train as f64 / steps as f64))
                .into_iter()
                .map(|t| t.round_ties_even() as i64 - 1)
                .collect();
            t.reverse();
            t
        }
    };
    let n = ascending.len();
    let mut calls: Vec<i64> = ascending[..n - 1].to_vec();
    calls.extend_from_slice(&ascending[n.saturating_sub(2)..n - 1]);
    calls.push(ascending[n - 1]);
    calls.reverse();
    calls
        .into_iter()
        .map(|t| match usize::try_from(t) {
            Ok(t) if t < train => Ok(t),
            _ => anyhow::bail!(
                "{} spacing with {steps} steps (steps_offset {}) gives the timestep {t}, outside 0..{train}",
                base.timestep_spacing,
                base.steps_offset
            ),
        })
        .collect()
}
