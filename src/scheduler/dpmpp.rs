//! diffusers' `DPMSolverMultistepScheduler` with `algorithm_type` "dpmsolver++"
//! and `solver_order` 2 (diffusers 0.42): DPM-Solver++(2M), A1111's "DPM++ 2M".
//!
//! It works in log signal-to-noise `lambda = ln(alpha_t / sigma_t)`. Each step
//! turns the model output into a predicted x0 and moves the latent along the
//! exponential integrator to the next lambda; from the second step on it also
//! uses the previous step's x0 (a linear extrapolation, the "2" of 2M), which is
//! the only history it keeps: resuming a run needs nothing more than the saved steps.

use anyhow::{bail, Context};
use candle_core::Tensor;
use serde_json::{Map, Value};

use super::config::{class_flag, class_text};
use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::schedule;
use super::sigmas::{alpha_sigma, final_sigma, multistep_schedule, FinalSigma};

/// How the second-order step combines the two x0 predictions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SolverType {
    Midpoint,
    Heun,
}

/// A DPM-Solver++(2M) run: plain data, cheap to clone.
///
/// Guarantee: `timesteps()` and `sigmas()` are diffusers' after `set_timesteps`,
/// and [`DpmSolverPP::step`] computes diffusers' `step` with the same float32
/// scalar operations, given the x0 the previous step predicted.
#[derive(Debug, Clone, PartialEq)]
pub struct DpmSolverPP {
    prediction_type: PredictionType,
    solver_type: SolverType,
    lower_order_final: bool,
    euler_at_final: bool,
    final_sigma: FinalSigma,
    /// The whole schedule's calls, for `lower_order_final`'s "fewer than 15 steps"
    /// (an image-to-image run starts later but diffusers counts them all).
    schedule_calls: usize,
    timesteps: Vec<f32>,
    sigmas: Vec<f32>,
}

/// Everything one DPM-Solver++ step used and computed.
#[derive(Debug, Clone)]
pub struct DpmStep {
    pub index: usize,
    pub timestep: f64,
    pub sigma: f64,
    pub sigma_next: f64,
    /// `1 / (1 + sigma^2)`, as DDIM's alpha_prod_t.
    pub alpha_prod_t: f64,
    /// 1 on the first step (no previous x0 yet) and the last (lower_order_final), else 2.
    pub order: u8,
    /// `lambda_next - lambda`: the step's length in log signal-to-noise.
    pub h: f64,
    /// The model output converted to x0 (what the solver integrates).
    pub pred_original_sample: Tensor,
    pub prev_sample: Tensor,
}

impl DpmSolverPP {
    /// `DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++",
    /// solver_order=2, use_karras_sigmas=karras)` and `set_timesteps(steps)`.
    pub fn from_config(config: &Value, steps: usize, karras_sigmas: bool) -> anyhow::Result<Self> {
        let map = super::config::effective_keys(config)?;
        let mut base_map = map.clone();
        base_map.entry("timestep_spacing").or_insert_with(|| Value::from(TimestepSpacing::Linspace.as_str()));
        let base = SchedulerConfig::from_json(&Value::Object(base_map))?;
        let options = Options::read(&map, karras_sigmas)?;
        let mut alphas_cumprod = schedule::alphas_cumprod(&base);
        if base.rescale_betas_zero_snr {
            // as diffusers: the last sigma stays finite
            if let Some(last) = alphas_cumprod.last_mut() {
                *last = 2f32.powi(-24);
            }
        }
        let (timesteps, sigmas) = multistep_schedule(
            &alphas_cumprod,
            &base,
            steps,
            options.karras,
            options.final_sigma,
            base.beta_schedule != super::BetaSchedule::SquaredcosCapV2,
        )
        .context("cannot set up the DPMSolverMultistepScheduler timesteps")?;
        Ok(Self {
            prediction_type: base.prediction_type,
            solver_type: options.solver_type,
            lower_order_final: options.lower_order_final,
            euler_at_final: options.euler_at_final,
            final_sigma: options.final_sigma,
            schedule_calls: timesteps.len(),
            timesteps,
            sigmas,
        })
    }

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

    /// One sigma per step call and the final one.
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// Step call `index`. `previous_x0` is the x0 step `index - 1` predicted
    /// (its `pred_original_sample`); required from the second step on.
    pub fn step(
        &self,
        index: usize,
        model_output: &Tensor,
        sample: &Tensor,
        previous_x0: Option<&Tensor>,
    ) -> candle_core::Result<DpmStep> {
        let n = self.timesteps.len();
        if index >= n {
            candle_core::bail!("DPM-Solver++ step: call {index} is past the run's {n} calls");
        }
        if model_output.shape() != sample.shape() {
            candle_core::bail!(
                "DPM-Solver++ step: model_output has shape {:?} but sample has {:?}",
                model_output.dims(),
                sample.dims()
            );
        }
        let out_dtype = model_output.dtype();
        let work = super::sigmas::work_dtype(out_dtype, "DPM-Solver++")?;
        let sample = sample.to_dtype(work)?;
        let model_output = model_output.to_dtype(work)?;
        let scalar = |c: f32| Tensor::new(f64::from(c), sample.device())?.to_dtype(work);

        let (sigma_s0, sigma_t) = (self.sigmas[index], self.sigmas[index + 1]);
        let (alpha_s0, sigma_s0_) = alpha_sigma(sigma_s0);
        let (alpha_t, sigma_t_) = alpha_sigma(sigma_t);
        // convert_model_output: the data (x0) prediction
        let x0 = match self.prediction_type {
            PredictionType::Epsilon => {
                (&sample - model_output.affine(f64::from(sigma_s0_), 0.0)?)?.broadcast_div(&scalar(alpha_s0)?)?
            }
            PredictionType::VPrediction => {
                (sample.affine(f64::from(alpha_s0), 0.0)? - model_output.affine(f64::from(sigma_s0_), 0.0)?)?
            }
            PredictionType::Sample => model_output.clone(),
        };
        let lambda_t = alpha_t.ln() - sigma_t_.ln();
        let lambda_s0 = alpha_s0.ln() - sigma_s0_.ln();
        let h = lambda_t - lambda_s0;
        let last = index == n - 1;
        let lower_order_final = last
            && (self.euler_at_final
                || (self.lower_order_final && self.schedule_calls < 15)
                || self.final_sigma == FinalSigma::Zero);
        let c_sample = sigma_t_ / sigma_s0_;
        let c_x0 = alpha_t * ((-h).exp() - 1.0);
        let first_order = (&sample.affine(f64::from(c_sample), 0.0)? - x0.affine(f64::from(c_x0), 0.0)?)?;
        let (order, prev_sample) = match previous_x0 {
            _ if index == 0 || lower_order_final => (1, first_order),
            None => candle_core::bail!("DPM-Solver++ step {index}: needs the x0 of step {}", index - 1),
            Some(m1) => {
                let m1 = m1.to_dtype(work)?;
                let (alpha_s1, sigma_s1_) = alpha_sigma(self.sigmas[index - 1]);
                let lambda_s1 = alpha_s1.ln() - sigma_s1_.ln();
                let r0 = (lambda_s0 - lambda_s1) / h;
                let d1 = (&x0 - &m1)?.affine(f64::from(1.0 / r0), 0.0)?;
                let x = match self.solver_type {
                    SolverType::Midpoint => (first_order - d1.affine(f64::from(0.5 * c_x0), 0.0)?)?,
                    SolverType::Heun => {
                        let c_d1 = alpha_t * (((-h).exp() - 1.0) / h + 1.0);
                        (first_order + d1.affine(f64::from(c_d1), 0.0)?)?
                    }
                };
                (2, x)
            }
        };
        Ok(DpmStep {
            index,
            timestep: f64::from(self.timesteps[index]),
            sigma: f64::from(sigma_s0),
            sigma_next: f64::from(sigma_t),
            alpha_prod_t: 1.0 / (1.0 + f64::from(sigma_s0) * f64::from(sigma_s0)),
            order,
            h: f64::from(h),
            pred_original_sample: x0.to_dtype(out_dtype)?,
            prev_sample: prev_sample.to_dtype(out_dtype)?,
        })
    }
}

/// The class's own keys; those sdlab does not compute are refused by name.
struct Options {
    karras: bool,
    solver_type: SolverType,
    lower_order_final: bool,
    euler_at_final: bool,
    final_sigma: FinalSigma,
}

impl Options {
    fn read(map: &Map<String, Value>, karras_sigmas: bool) -> anyhow::Result<Self> {
        let flag = |key: &str, default: bool| class_flag(map, key, default);
        let text = |key: &str, default: &str| class_text(map, key, default);
        for key in
            ["use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas", "use_flow_sigmas", "use_dynamic_shifting"]
        {
            if flag(key, false)? {
                bail!("{key}: not computed by sdlab; expected false");
            }
        }
        if let Some(v) = map.get("variance_type").filter(|v| !v.is_null()) {
            bail!("variance_type: learned variances are not computed by sdlab; expected null, found {v}");
        }
        if let Some(v) = map.get("lambda_min_clipped").filter(|v| v.as_f64().is_some_and(f64::is_finite)) {
            bail!("lambda_min_clipped: sdlab computes no clipping; expected -inf (the default), found {v}");
        }
        let solver_type = match text("solver_type", "midpoint")?.as_str() {
            "midpoint" => SolverType::Midpoint,
            "heun" => SolverType::Heun,
            other => bail!("solver_type: expected one of midpoint, heun, found {other:?}"),
        };
        let final_sigma = final_sigma(map)?;
        Ok(Self {
            karras: karras_sigmas || flag("use_karras_sigmas", false)?,
            solver_type,
            lower_order_final: flag("lower_order_final", true)?,
            euler_at_final: flag("euler_at_final", false)?,
            final_sigma,
        })
    }
}
