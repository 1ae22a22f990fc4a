//! diffusers' `LMSDiscreteScheduler` (diffusers 0.42): linear multistep in
//! sigma. Each step moves the latent by the derivatives `(x - x0) / sigma` of up
//! to the last four calls, weighted by integrals of their Lagrange polynomials
//! over the step's sigma interval. The derivatives are in the earlier calls'
//! records, so a resumed run needs nothing more than the saved steps.

use anyhow::{bail, Context};
use candle_core::Tensor;
use serde_json::Value;

use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::schedule;
use super::sigmas::{
    init_noise_sigma, scale_by_sigma, sigma_schedule, sigma_x0, work_dtype, FinalSigma, SigmaOptions, SigmaSchedule,
};

/// The most derivatives a step combines (diffusers' `order=4`, the pipeline's).
const ORDER: usize = 4;

/// An LMS run: plain data, cheap to clone.
///
/// Guarantee: `timesteps()` and `sigmas()` are diffusers' after `set_timesteps`;
/// [`Lms::step`] computes `step` with the same float32 tensor operations. The
/// weights diffusers gets from `scipy.integrate.quad` are integrals of
/// polynomials of degree 3 at most, computed here exactly (Gauss-Legendre), so
/// they agree to quad's precision, not bit for bit.
#[derive(Debug, Clone, PartialEq)]
pub struct Lms {
    prediction_type: PredictionType,
    schedule: SigmaSchedule,
    init_noise_sigma: f32,
    /// The schedule's index of the run's first call (image to image starts later;
    /// diffusers' order and weights still count from the schedule's start).
    begin: usize,
}

/// Everything one LMS step used and computed.
#[derive(Debug, Clone)]
pub struct LmsStep {
    pub index: usize,
    pub timestep: f64,
    pub sigma: f64,
    pub sigma_next: f64,
    /// `1 / (1 + sigma^2)`, as DDIM's alpha_prod_t.
    pub alpha_prod_t: f64,
    /// The weight of each derivative used, this step's first.
    pub coefficients: Vec<f64>,
    pub pred_original_sample: Tensor,
    /// `(sample - x0) / sigma`, which later steps reuse.
    pub derivative: Tensor,
    pub prev_sample: Tensor,
}

impl Lms {
    /// `LMSDiscreteScheduler.from_config(config)` and `set_timesteps(steps)`.
    pub fn from_config(config: &Value, steps: usize) -> anyhow::Result<Self> {
        let map = super::config::effective_keys(config)?;
        let mut base_map = map.clone();
        base_map.entry("timestep_spacing").or_insert_with(|| Value::from(TimestepSpacing::Linspace.as_str()));
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
            .context("cannot set up the LMSDiscreteScheduler timesteps")?;
        let init_noise_sigma = init_noise_sigma(&schedule.sigmas, base.timestep_spacing);
        Ok(Self { prediction_type: base.prediction_type, schedule, init_noise_sigma, begin: 0 })
    }

    /// Image to image: the run starts at call `begin` of the schedule, as after
    /// diffusers' `set_begin_index(begin)`.
    pub(super) fn skip(&mut self, begin: usize) {
        self.begin = (self.begin + begin).min(self.schedule.timesteps.len());
    }

    pub fn timesteps(&self) -> &[f32] {
        &self.schedule.timesteps[self.begin..]
    }

    pub fn sigmas(&self) -> &[f32] {
        &self.schedule.sigmas[self.begin..]
    }

    pub fn init_noise_sigma(&self) -> f64 {
        f64::from(self.init_noise_sigma)
    }

    /// `scale_model_input`: `x / sqrt(sigma^2 + 1)`.
    pub fn scale_model_input(&self, sample: &Tensor, index: usize) -> candle_core::Result<Tensor> {
        let Some(&sigma) = self.sigmas().get(index) else {
            candle_core::bail!("LMS: call {index} is past the run's calls");
        };
        scale_by_sigma(sample, sigma, "LMS")
    }

    /// Step call `index`, given the records of the calls before it, in order.
    pub fn step(
        &self,
        index: usize,
        model_output: &Tensor,
        sample: &Tensor,
        history: &[&LmsStep],
    ) -> candle_core::Result<LmsStep> {
        let n = self.timesteps().len();
        if index >= n {
            candle_core::bail!("LMS step: call {index} is past the run's {n} calls");
        }
        if history.len() != index {
            candle_core::bail!("LMS step {index}: needs the {index} earlier calls' records, got {}", history.len());
        }
        let out_dtype = model_output.dtype();
        let work = work_dtype(out_dtype, "LMS")?;
        let sample = sample.to_dtype(work)?;
        let model_output = model_output.to_dtype(work)?;
        // the schedule's index: LMS's order and weights count from there
        let g = self.begin + index;
        let sigma = self.schedule.sigmas[g];
        let scalar = |c: f32| Tensor::new(f64::from(c), sample.device())?.to_dtype(work);
        let x0 = sigma_x0(self.prediction_type, sigma, &model_output, &sample)?;
        let derivative = (&sample - &x0)?.broadcast_div(&scalar(sigma)?)?;
        let order = (g + 1).min(ORDER);
        let coefficients: Vec<f64> = (0..order).map(|j| self.coefficient(order, g, j)).collect();
        // newest first: this step's derivative, then the earlier ones back in time
        let earlier = history.iter().rev().take(order - 1).map(|s| s.derivative.to_dtype(work));
        let derivatives = std::iter::once(Ok(derivative.clone())).chain(earlier).collect::<Result<Vec<_>, _>>()?;
        let mut sum: Option<Tensor> = None;
        for (c, d) in coefficients.iter().zip(&derivatives) {
            // a Python float times a float32 tensor: torch takes it as float32
            let term = d.affine(f64::from(*c as f32), 0.0)?;
            sum = Some(match sum {
                None => term,
                Some(s) => (s + term)?,
            });
        }
        let prev_sample = (&sample + sum.expect("at least one derivative"))?;
        Ok(LmsStep {
            index,
            timestep: f64::from(self.schedule.timesteps[g]),
            sigma: f64::from(sigma),
            sigma_next: f64::from(self.schedule.sigmas[g + 1]),
            alpha_prod_t: 1.0 / (1.0 + f64::from(sigma) * f64::from(sigma)),
            coefficients,
            pred_original_sample: x0.to_dtype(out_dtype)?,
            derivative: derivative.to_dtype(out_dtype)?,
            prev_sample: prev_sample.to_dtype(out_dtype)?,
        })
    }

    /// `get_lms_coefficient(order, t, current_order)`: the integral over
    /// `[sigmas[t], sigmas[t + 1]]` of the Lagrange polynomial that is 1 at
    /// `sigmas[t - current_order]` and 0 at the other `sigmas[t - k]`, k < order.
    fn coefficient(&self, order: usize, t: usize, current: usize) -> f64 {
        let s = |i: usize| f64::from(self.schedule.sigmas[i]);
        let basis = |tau: f64| {
            (0..order)
                .filter(|&k| k != current)
                .map(|k| (tau - s(t - k)) / (s(t - current) - s(t - k)))
                .product::<f64>()
        };
        gauss_legendre(basis, s(t), s(t + 1))
    }
}

/// The integral of `f` over `[a, b]` by 4-point Gauss-Legendre: exact for
/// polynomials up to degree 7 (the Lagrange bases here have degree 3 at most).
fn gauss_legendre(f: impl Fn(f64) -> f64, a: f64, b: f64) -> f64 {
    const NODES: [(f64, f64); 4] = [
        (-0.861_136_311_594_052_6, 0.347_854_845_137_453_9),
        (-0.339_981_043_584_856_3, 0.652_145_154_862_546_1),
        (0.339_981_043_584_856_3, 0.652_145_154_862_546_1),
        (0.861_136_311_594_052_6, 0.347_854_845_137_453_9),
    ];
    let (mid, half) = ((a + b) / 2.0, (b - a) / 2.0);
    half * NODES.iter().map(|&(x, w)| w * f(mid + half * x)).sum::<f64>()
}

#[cfg(test)]
mod tests {
    use super::gauss_legendre;

    #[test]
    fn gauss_legendre_integrates_cubics_exactly() {
        let cubic = |x: f64| 2.0 * x * x * x - x + 3.0;
        // the antiderivative x^4 / 2 - x^2 / 2 + 3x from 1 to 3
        let exact = (81.0 / 2.0 - 9.0 / 2.0 + 9.0) - (0.5 - 0.5 + 3.0);
        assert!((gauss_legendre(cubic, 1.0, 3.0) - exact).abs() < 1e-12);
        // backwards, as sigmas fall
        assert!((gauss_legendre(cubic, 3.0, 1.0) + exact).abs() < 1e-12);
    }
}
