//! The noise levels (sigmas) of the k-diffusion samplers, as diffusers'
//! `EulerDiscreteScheduler.set_timesteps` computes them: which inference
//! timesteps, the sigma of each (interpolated, or Karras' spacing), and the
//! fractional timestep the UNet is given for a Karras sigma.
//!
//! sigma and alpha_prod_t say the same thing: `sigma^2 = (1 - a) / a`, so
//! `x_t / sqrt(1 + sigma^2)` is DDIM's `x_t`. Every value is computed in the
//! precision diffusers computes it in (float32 torch, float64 or float32 numpy).

use anyhow::{bail, ensure};

use candle_core::{DType, Tensor};

use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::schedule::{numpy_arange, numpy_linspace};

/// Where the schedule ends after the last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalSigma {
    /// 0: the last step lands on the clean sample (diffusers' default).
    Zero,
    /// `sqrt((1 - alphas_cumprod[0]) / alphas_cumprod[0])`, the smallest trained sigma.
    SigmaMin,
}

/// What `set_timesteps` asks for: the spacing of the timesteps and how the
/// sigmas are placed.
#[derive(Debug, Clone, PartialEq)]
pub struct SigmaOptions {
    pub spacing: TimestepSpacing,
    pub steps_offset: usize,
    /// Karras et al.'s rho-7 spacing between the largest and smallest sigma.
    pub karras: bool,
    /// Overrides of the Karras range (`sigma_min`, `sigma_max` in the config).
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub final_sigma: FinalSigma,
}

/// A run's schedule: `timesteps[i]` is what the UNet gets at step call `i`,
/// `sigmas[i]` its noise level, `sigmas[n]` the final one.
#[derive(Debug, Clone, PartialEq)]
pub struct SigmaSchedule {
    pub timesteps: Vec<f32>,
    pub sigmas: Vec<f32>,
}

/// `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5` in float32 torch, one per
/// training timestep.
pub fn training_sigmas(alphas_cumprod: &[f32]) -> Vec<f32> {
    alphas_cumprod.iter().map(|&a| ((1.0 - a) / a).sqrt()).collect()
}

/// `set_timesteps(steps)` of `EulerDiscreteScheduler` (and, with
/// `karras: false` and a zero final sigma, of `EulerAncestralDiscreteScheduler`).
pub fn sigma_schedule(alphas_cumprod: &[f32], steps: usize, options: &SigmaOptions) -> anyhow::Result<SigmaSchedule> {
    let train = alphas_cumprod.len();
    ensure!(steps > 0, "num_inference_steps must be at least 1, found 0");
    ensure!(steps <= train, "num_inference_steps ({steps}) cannot be larger than num_train_timesteps ({train})");
    let timesteps = timesteps_f32(train, steps, options)?;
    let trained = training_sigmas(alphas_cumprod);
    // np.interp(timesteps, np.arange(len), sigmas): float64 arithmetic on float32 values
    let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| interp(f64::from(t), &trained)).collect();
    let mut timesteps: Vec<f64> = timesteps.into_iter().map(f64::from).collect();
    if options.karras {
        sigmas = karras(&sigmas, steps, options);
        // np.log of a float32 array stays float32
        let log_sigmas: Vec<f32> = trained.iter().map(|s| s.ln()).collect();
        timesteps = sigmas.iter().map(|&s| sigma_to_t(s, &log_sigmas)).collect();
    }
    let last = match options.final_sigma {
        FinalSigma::Zero => 0.0,
        FinalSigma::SigmaMin => f64::from(trained[0]),
    };
    sigmas.push(last);
    Ok(SigmaSchedule {
        timesteps: timesteps.into_iter().map(|t| t as f32).collect(),
        sigmas: sigmas.into_iter().map(|s| s as f32).collect(),
    })
}

/// The inference timesteps in float32, first step first, per spacing.
fn timesteps_f32(train: usize, steps: usize, options: &SigmaOptions) -> anyhow::Result<Vec<f32>> {
    let timesteps: Vec<f32> = match options.spacing {
        // np.linspace(0, train - 1, steps, dtype=np.float32)[::-1]: float64, then rounded
        TimestepSpacing::Linspace => {
            numpy_linspace(0.0, (train - 1) as f64, steps).into_iter().rev().map(|t| t as f32).collect()
        }
        // (np.arange(0, steps) * (train // steps)).round()[::-1].astype(np.float32) + steps_offset
        TimestepSpacing::Leading => {
            let ratio = train / steps;
            (0..steps).rev().map(|i| (i * ratio) as f32 + options.steps_offset as f32).collect()
        }
        // np.arange(train, 0, -train / steps).round().astype(np.float32) - 1
        TimestepSpacing::Trailing => numpy_arange(train as f64, 0.0, -(train as f64 / steps as f64))
            .into_iter()
            .map(|t| t.round_ties_even() as f32 - 1.0)
            .collect(),
    };
    let top = (train - 1) as f32;
    if let Some(t) = timesteps.iter().find(|&&t| !(0.0..=top).contains(&t)) {
        bail!(
            "{} spacing with {steps} steps (steps_offset {}) gives the timestep {t}, outside 0..{train}; \
             choose another step count",
            options.spacing,
            options.steps_offset
        );
    }
    Ok(timesteps)
}

/// `np.interp(x, np.arange(len(fp)), fp)` for `0 <= x <= len - 1`.
fn interp(x: f64, fp: &[f32]) -> f64 {
    let last = fp.len() - 1;
    if x >= last as f64 {
        return f64::from(fp[last]);
    }
    let j = x.floor() as usize;
    let (y0, y1) = (f64::from(fp[j]), f64::from(fp[j + 1]));
    // the points are 1 apart: the slope is the difference
    (y1 - y0) * (x - j as f64) + y0
}

/// `_convert_to_karras`: rho 7 between the interpolated range's ends (or the
/// config's `sigma_min` / `sigma_max`), float64 throughout.
pub(super) fn karras(sigmas: &[f64], steps: usize, options: &SigmaOptions) -> Vec<f64> {
    const RHO: f64 = 7.0;
    let sigma_min = options.sigma_min.unwrap_or(sigmas[sigmas.len() - 1]);
    let sigma_max = options.sigma_max.unwrap_or(sigmas[0]);
    let min_inv_rho = sigma_min.powf(1.0 / RHO);
    let max_inv_rho = sigma_max.powf(1.0 / RHO);
    numpy_linspace(0.0, 1.0, steps)
        .into_iter()
        .map(|ramp| (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)).powf(RHO))
        .collect()
}

/// `_sigma_to_t`: the fractional training timestep whose sigma is `sigma`,
/// interpolating linearly in log sigma between the two neighbours. numpy mixes
/// precisions here: the log sigmas are float32, `low - high` is a float32
/// difference, everything else float64.
pub(super) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // cumsum(dists >= 0).argmax(): the last index whose log sigma is <= log_sigma
    // (0 when there is none), at most len - 2
    let low_idx =
        log_sigmas.iter().rposition(|&l| log_sigma - f64::from(l) >= 0.0).unwrap_or(0).min(log_sigmas.len() - 2);
    let high_idx = low_idx + 1;
    let (low, high) = (log_sigmas[low_idx], log_sigmas[high_idx]);
    let w = ((f64::from(low) - log_sigma) / f64::from(low - high)).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// The dtype a step computes in: float32 whatever the latent's, as diffusers
/// (float64 stays float64 here). `sampler` names the step in the error.
pub(super) fn work_dtype(dtype: DType, sampler: &str) -> candle_core::Result<DType> {
    match dtype {
        DType::F64 => Ok(DType::F64),
        DType::F32 | DType::F16 | DType::BF16 => Ok(DType::F32),
        other => candle_core::bail!("{sampler} step: expected a float tensor, found {other:?}"),
    }
}

/// `init_noise_sigma` of the sigma classes: the largest sigma, or with "leading"
/// spacing `sqrt(sigma^2 + 1)`.
pub(super) fn init_noise_sigma(sigmas: &[f32], spacing: TimestepSpacing) -> f32 {
    let max_sigma = sigmas.iter().copied().fold(f32::MIN, f32::max);
    match spacing {
        TimestepSpacing::Linspace | TimestepSpacing::Trailing => max_sigma,
        TimestepSpacing::Leading => (max_sigma * max_sigma + 1.0).sqrt(),
    }
}

/// `scale_model_input` of the sigma classes: the UNet was trained on
/// `x / sqrt(sigma^2 + 1)`, computed in float32 and returned in the latent's dtype.
pub(super) fn scale_by_sigma(sample: &Tensor, sigma: f32, sampler: &str) -> candle_core::Result<Tensor> {
    let work = work_dtype(sample.dtype(), sampler)?;
    let divisor = Tensor::new(f64::from((sigma * sigma + 1.0).sqrt()), sample.device())?.to_dtype(work)?;
    sample.to_dtype(work)?.broadcast_div(&divisor)?.to_dtype(sample.dtype())
}

/// The predicted x0 of the sigma classes at noise level `sigma`, with torch's
/// float32 operations in their order; both tensors are in the work dtype.
pub(super) fn sigma_x0(
    prediction_type: PredictionType,
    sigma: f32,
    model_output: &Tensor,
    sample: &Tensor,
) -> candle_core::Result<Tensor> {
    match prediction_type {
        PredictionType::Epsilon => sample - model_output.affine(f64::from(sigma), 0.0)?,
        PredictionType::VPrediction => {
            let s2_plus_1 = sigma * sigma + 1.0;
            let c_out = -sigma / s2_plus_1.sqrt();
            // a division, as torch divides by the 0-dim tensor
            let divisor = Tensor::new(f64::from(s2_plus_1), sample.device())?.to_dtype(sample.dtype())?;
            model_output.affine(f64::from(c_out), 0.0)? + sample.broadcast_div(&divisor)?
        }
        PredictionType::Sample => Ok(model_output.clone()),
    }
}

/// `final_sigmas_type` of the multistep solvers: `zero` unless the config says otherwise.
pub(super) fn final_sigma(map: &serde_json::Map<String, serde_json::Value>) -> anyhow::Result<FinalSigma> {
    match super::config::class_text(map, "final_sigmas_type", "zero")?.as_str() {
        "zero" => Ok(FinalSigma::Zero),
        "sigma_min" => Ok(FinalSigma::SigmaMin),
        other => bail!("final_sigmas_type: expected one of zero, sigma_min, found {other:?}"),
    }
}

/// `_sigma_to_alpha_sigma_t` in float32: `alpha_t = 1 / sqrt(sigma^2 + 1)`, `sigma_t = sigma * alpha_t`.
pub(super) fn alpha_sigma(sigma: f32) -> (f32, f32) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// `set_timesteps` of the multistep solvers (DPM-Solver++, UniPC): whole
/// timesteps (`n + 1` points of the range, the last dropped), their trained
/// sigmas, or Karras' sigmas over the whole trained range with the nearest whole
/// timesteps (`round_karras`: DPM-Solver keeps the fractional ones for
/// squaredcos_cap_v2, UniPC always rounds).
pub(super) fn multistep_schedule(
    alphas_cumprod: &[f32],
    base: &SchedulerConfig,
    steps: usize,
    karras_sigmas: bool,
    final_sigma: FinalSigma,
    round_karras: bool,
) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
    let train = alphas_cumprod.len();
    anyhow::ensure!(steps > 0, "num_inference_steps must be at least 1, found 0");
    anyhow::ensure!(
        steps <= train,
        "num_inference_steps ({steps}) cannot be larger than num_train_timesteps ({train})"
    );
    // lambda_min_clipped is -inf: nothing is clipped, the range ends at num_train_timesteps
    let last = train;
    let mut timesteps: Vec<f64> = match base.timestep_spacing {
        TimestepSpacing::Linspace => {
            let mut t: Vec<f64> =
                numpy_linspace(0.0, (last - 1) as f64, steps + 1).into_iter().map(f64::round_ties_even).rev().collect();
            t.pop();
            t
        }
        TimestepSpacing::Leading => {
            let ratio = last / (steps + 1);
            (1..=steps).rev().map(|i| (i * ratio + base.steps_offset) as f64).collect()
        }
        TimestepSpacing::Trailing => numpy_arange(last as f64, 0.0, -(train as f64 / steps as f64))
            .into_iter()
            .map(|t| t.round_ties_even() - 1.0)
            .collect(),
    };
    let trained = training_sigmas(alphas_cumprod);
    let mut sigmas: Vec<f64> = if karras_sigmas {
        let ends = [f64::from(trained[train - 1]), f64::from(trained[0])];
        let none = SigmaOptions {
            spacing: base.timestep_spacing,
            steps_offset: base.steps_offset,
            karras: true,
            sigma_min: None,
            sigma_max: None,
            final_sigma,
        };
        let sigmas = karras(&ends, steps, &none);
        let log_sigmas: Vec<f32> = trained.iter().map(|s| s.ln()).collect();
        timesteps = sigmas.iter().map(|&s| sigma_to_t(s, &log_sigmas)).collect();
        if round_karras {
            timesteps = timesteps.into_iter().map(f64::round_ties_even).collect();
        }
        sigmas
    } else {
        let mut out = Vec::with_capacity(steps);
        for &t in &timesteps {
            match usize::try_from(t as i64).ok().and_then(|i| trained.get(i)) {
                Some(&s) => out.push(f64::from(s)),
                None => bail!(
                    "{} spacing with {steps} steps gives the timestep {t}, outside 0..{train}; choose another step count",
                    base.timestep_spacing
                ),
            }
        }
        out
    };
    sigmas.push(match final_sigma {
        FinalSigma::Zero => 0.0,
        FinalSigma::SigmaMin => f64::from(trained[0]),
    });
    // the timesteps are int64 in diffusers: a Karras one truncates toward zero
    let timesteps = timesteps.into_iter().map(|t| (t as i64) as f32).collect();
    Ok((timesteps, sigmas.into_iter().map(|s| s as f32).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigma_to_t_inverts_the_training_sigmas_and_clamps_outside_them() {
        let sigmas: Vec<f32> = vec![0.1, 0.2, 0.4, 0.8];
        let log: Vec<f32> = sigmas.iter().map(|s| s.ln()).collect();
        assert!((sigma_to_t(f64::from(0.2f32), &log) - 1.0).abs() < 1e-6);
        let halfway = (f64::from(0.2f32).ln() + f64::from(0.4f32).ln()) / 2.0;
        assert!((sigma_to_t(halfway.exp(), &log) - 1.5).abs() < 1e-6);
        assert_eq!(sigma_to_t(0.01, &log), 0.0);
        assert_eq!(sigma_to_t(5.0, &log), 3.0);
    }

    #[test]
    fn interp_matches_numpy_between_and_at_the_points() {
        let fp = [1.0f32, 3.0, 4.0];
        assert_eq!(interp(0.0, &fp), 1.0);
        assert_eq!(interp(0.25, &fp), 1.5);
        assert_eq!(interp(1.5, &fp), 3.5);
        assert_eq!(interp(2.0, &fp), 4.0);
    }
}
