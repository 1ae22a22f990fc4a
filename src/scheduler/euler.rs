//! diffusers' `EulerDiscreteScheduler` and `EulerAncestralDiscreteScheduler`
//! (diffusers 0.42): the k-diffusion view of the same noise schedule. The latent
//! is `x0 + sigma * noise`; each step walks the straight line from the latent to
//! the predicted x0 down to the next sigma (Euler's method on the probability
//! flow ODE). The ancestral variant steps further down and adds fresh noise back.

use anyhow::{bail, Context};
use candle_core::Tensor;
use serde_json::{Map, Value};

use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::schedule;
use super::sigmas::{
    init_noise_sigma, scale_by_sigma, sigma_schedule, sigma_x0, work_dtype, FinalSigma, SigmaOptions, SigmaSchedule,
};

/// An Euler scheduler set up for one run: plain data, cheap to clone.
///
/// Guarantee: for the same config, step count and variant, `timesteps()` and
/// `sigmas()` are the float32 values diffusers' `set_timesteps` leaves, and
/// [`Euler::step`] computes `step` (with `s_churn` 0, diffusers' default) with
/// the same float32 operations in the same order.
#[derive(Debug, Clone, PartialEq)]
pub struct Euler {
    prediction_type: PredictionType,
    ancestral: bool,
    schedule: SigmaSchedule,
    init_noise_sigma: f32,
}

/// Everything one Euler step used and computed.
#[derive(Debug, Clone)]
pub struct EulerStep {
    /// The step call's index in the run.
    pub index: usize,
    /// The timestep the UNet was given (fractional with Karras sigmas).
    pub timestep: f64,
    /// The noise level the step starts from and the one it aims at.
    pub sigma: f64,
    pub sigma_next: f64,
    /// `1 / (1 + sigma^2)`: the same noise level as DDIM's alpha_prod_t.
    pub alpha_prod_t: f64,
    /// Ancestral only: the noise added back, and the level stepped down to
    /// before adding it (`sigma_down^2 + sigma_up^2 = sigma_next^2`); 0 and
    /// `sigma_next` for plain Euler.
    pub sigma_up: f64,
    pub sigma_down: f64,
    pub pred_original_sample: Tensor,
    /// `(sample - x0) / sigma`: the direction of the step.
    pub derivative: Tensor,
    pub prev_sample: Tensor,
}

impl Euler {
    /// Builds the scheduler diffusers builds with
    /// `EulerDiscreteScheduler.from_config(config, use_karras_sigmas=karras)`, or
    /// `EulerAncestralDiscreteScheduler.from_config(config)` when `ancestral`,
    /// and sets `steps` timesteps. Keys the model's config does not set take the
    /// class's defaults (`timestep_spacing` "linspace"); options sdlab does not
    /// compute are refused by name.
    pub fn from_config(config: &Value, steps: usize, karras: bool, ancestral: bool) -> anyhow::Result<Self> {
        let class = if ancestral { "EulerAncestralDiscreteScheduler" } else { "EulerDiscreteScheduler" };
        let map = super::config::effective_keys(config)?;
        let base = base_config(&map)?;
        let options = if ancestral {
            SigmaOptions {
                spacing: base.timestep_spacing,
                steps_offset: base.steps_offset,
                karras: false,
                sigma_min: None,
                sigma_max: None,
                final_sigma: FinalSigma::Zero,
            }
        } else {
            euler_options(&map, &base, karras)?
        };
        let mut alphas_cumprod = schedule::alphas_cumprod(&base);
        if base.rescale_betas_zero_snr {
            // diffusers keeps the last sigma finite: alphas_cumprod[-1] = 2**-24
            if let Some(last) = alphas_cumprod.last_mut() {
                *last = 2f32.powi(-24);
            }
        }
        let schedule = sigma_schedule(&alphas_cumprod, steps, &options)
            .with_context(|| format!("cannot set up the {class} timesteps"))?;
        let init_noise_sigma = init_noise_sigma(&schedule.sigmas, base.timestep_spacing);
        Ok(Self { prediction_type: base.prediction_type, ancestral, schedule, init_noise_sigma })
    }

    /// The timestep each step call gives the UNet, first first.
    /// Image to image: the run starts at call `begin` of the schedule, as after
    /// diffusers' `set_begin_index(begin)`.
    pub(super) fn skip(&mut self, begin: usize) {
        let begin = begin.min(self.schedule.timesteps.len());
        self.schedule.timesteps.drain(..begin);
        self.schedule.sigmas.drain(..begin);
    }

    pub fn timesteps(&self) -> &[f32] {
        &self.schedule.timesteps
    }

    /// One sigma per step call and the final one (`steps + 1` values).
    pub fn sigmas(&self) -> &[f32] {
        &self.schedule.sigmas
    }

    /// The standard deviation of the starting noise: the largest sigma (with
    /// "leading" spacing `sqrt(sigma^2 + 1)`).
    pub fn init_noise_sigma(&self) -> f64 {
        f64::from(self.init_noise_sigma)
    }

    /// `scale_model_input`: the UNet was trained on `x / sqrt(sigma^2 + 1)`.
    pub fn scale_model_input(&self, sample: &Tensor, index: usize) -> candle_core::Result<Tensor> {
        scale_by_sigma(sample, self.sigma(index)?, "Euler")
    }

    /// Step call `index`, as diffusers' `step(model_output, timesteps[index],
    /// sample, generator=...)`. The ancestral variant adds `noise`: diffusers
    /// draws it with `randn_tensor(model_output.shape, generator=...)` after the
    /// model call, every step, the last one included; pass that draw.
    pub fn step(
        &self,
        index: usize,
        model_output: &Tensor,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> candle_core::Result<EulerStep> {
        let sigma = self.sigma(index)?;
        let sigma_next = self.sigmas()[index + 1];
        if model_output.shape() != sample.shape() {
            candle_core::bail!(
                "Euler step: model_output has shape {:?} but sample has {:?}",
                model_output.dims(),
                sample.dims()
            );
        }
        let out_dtype = model_output.dtype();
        let work = work_dtype(out_dtype, "Euler")?;
        let sample = sample.to_dtype(work)?;
        let model_output = model_output.to_dtype(work)?;
        let scalar = |c: f32| Tensor::new(f64::from(c), sample.device())?.to_dtype(work);

        // s_churn is 0: sigma_hat = sigma * (0 + 1) = sigma
        let pred_original_sample = sigma_x0(self.prediction_type, sigma, &model_output, &sample)?;
        let derivative = (&sample - &pred_original_sample)?.broadcast_div(&scalar(sigma)?)?;
        let (sigma_up, sigma_down) = if self.ancestral {
            let (from2, to2) = (sigma * sigma, sigma_next * sigma_next);
            let up = (to2 * (from2 - to2) / from2).sqrt();
            (up, (to2 - up * up).sqrt())
        } else {
            (0.0, sigma_next)
        };
        let dt = sigma_down - sigma;
        let mut prev_sample = (&sample + derivative.affine(f64::from(dt), 0.0)?)?;
        if self.ancestral {
            let Some(noise) = noise else {
                candle_core::bail!(
                    "Euler ancestral step: needs the step's noise (diffusers draws it with \
                     randn_tensor(model_output.shape, generator=...)); pass that draw"
                );
            };
            if noise.shape() != sample.shape() {
                candle_core::bail!(
                    "Euler ancestral step: noise has shape {:?}, expected {:?}",
                    noise.dims(),
                    sample.dims()
                );
            }
            prev_sample = (prev_sample + noise.to_dtype(work)?.affine(f64::from(sigma_up), 0.0)?)?;
        }
        Ok(EulerStep {
            index,
            timestep: f64::from(self.timesteps()[index]),
            sigma: f64::from(sigma),
            sigma_next: f64::from(sigma_next),
            alpha_prod_t: 1.0 / (1.0 + f64::from(sigma) * f64::from(sigma)),
            sigma_up: f64::from(sigma_up),
            sigma_down: f64::from(sigma_down),
            pred_original_sample: pred_original_sample.to_dtype(out_dtype)?,
            derivative: derivative.to_dtype(out_dtype)?,
            prev_sample: prev_sample.to_dtype(out_dtype)?,
        })
    }

    fn sigma(&self, index: usize) -> candle_core::Result<f32> {
        match self.schedule.timesteps.get(index) {
            Some(_) => Ok(self.schedule.sigmas[index]),
            None => {
                candle_core::bail!("Euler step: call {index} is past the run's {} calls", self.schedule.timesteps.len())
            }
        }
    }
}

/// The schedule keys every scheduler shares, with the Euler classes' default
/// spacing ("linspace") where the config is silent.
fn base_config(map: &Map<String, Value>) -> anyhow::Result<SchedulerConfig> {
    let mut map = map.clone();
    map.entry("timestep_spacing").or_insert_with(|| Value::from(TimestepSpacing::Linspace.as_str()));
    SchedulerConfig::from_json(&Value::Object(map))
}

/// `EulerDiscreteScheduler`'s own keys; those sdlab does not compute are refused by name.
fn euler_options(map: &Map<String, Value>, base: &SchedulerConfig, karras: bool) -> anyhow::Result<SigmaOptions> {
    let flag = |key: &str| -> anyhow::Result<bool> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => bail!("{key}: expected true or false, found {other}"),
        }
    };
    let text = |key: &str, default: &'static str| -> anyhow::Result<String> {
        match map.get(key) {
            None => Ok(default.to_owned()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => bail!("{key}: expected a string, found {other}"),
        }
    };
    let number = |key: &str| -> anyhow::Result<Option<f64>> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && x > 0.0 => Ok(Some(x)),
                _ => bail!("{key}: expected null or a number above 0, found {v}"),
            },
        }
    };
    for key in ["use_exponential_sigmas", "use_beta_sigmas"] {
        if flag(key)? {
            bail!("{key}: not computed by sdlab; expected false (use_karras_sigmas is)");
        }
    }
    if text("interpolation_type", "linear")? != "linear" {
        bail!("interpolation_type: sdlab computes \"linear\" only, found {}", map["interpolation_type"]);
    }
    if text("timestep_type", "discrete")? != "discrete" {
        bail!("timestep_type: sdlab computes \"discrete\" only, found {}", map["timestep_type"]);
    }
    let final_sigma = match text("final_sigmas_type", "zero")?.as_str() {
        "zero" => FinalSigma::Zero,
        "sigma_min" => FinalSigma::SigmaMin,
        other => bail!("final_sigmas_type: expected one of zero, sigma_min, found {other:?}"),
    };
    Ok(SigmaOptions {
        spacing: base.timestep_spacing,
        steps_offset: base.steps_offset,
        karras: karras || flag("use_karras_sigmas")?,
        sigma_min: number("sigma_min")?,
        sigma_max: number("sigma_max")?,
        final_sigma,
    })
}
