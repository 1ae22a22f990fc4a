//! The noise schedule (betas, `alphas_cumprod`) and the inference timesteps,
//! computed with the same float arithmetic as torch and numpy.
//!
//! diffusers builds the schedule in float32 torch tensors and the timesteps
//! with float64 numpy arrays. The values feed every step, and a one-ulp change
//! in a beta moves `alphas_cumprod` by up to an ulp of its own, so each
//! operation here mirrors the torch / numpy operation it stands for (same
//! precision, same order, same rounding), not just the formula.

use anyhow::{bail, ensure};

use super::config::{BetaSchedule, SchedulerConfig, TimestepSpacing};

/// `alphas_cumprod` of the training schedule, one float32 value per training
/// timestep, bit-identical to diffusers' `DDIMScheduler(...).alphas_cumprod`
/// (with `rescale_betas_zero_snr`, within a few ulps: that path takes square
/// roots, and torch's CPU `sqrt` is MKL's `vsSqrt`, not correctly rounded, while
/// ours is).
pub(crate) fn alphas_cumprod(config: &SchedulerConfig) -> Vec<f32> {
    let mut betas = betas(config);
    if config.rescale_betas_zero_snr {
        betas = rescale_zero_terminal_snr(&betas);
    }
    // self.alphas = 1.0 - self.betas
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    cumprod(&alphas)
}

fn betas(config: &SchedulerConfig) -> Vec<f32> {
    let n = config.num_train_timesteps;
    if let Some(trained) = &config.trained_betas {
        // torch.tensor(trained_betas, dtype=torch.float32)
        return trained.iter().map(|&b| b as f32).collect();
    }
    match config.beta_schedule {
        BetaSchedule::Linear => linspace_f32(config.beta_start, config.beta_end, n),
        BetaSchedule::ScaledLinear => {
            // Python's `x ** 0.5` on floats is C `pow`, not `sqrt`.
            linspace_f32(config.beta_start.powf(0.5), config.beta_end.powf(0.5), n).into_iter().map(|b| b * b).collect()
        }
        BetaSchedule::SquaredcosCapV2 => betas_for_alpha_bar(n, 0.999),
    }
}

/// `torch.linspace(start, end, steps, dtype=torch.float32)` on the CPU: start,
/// end and step are float32, the first half counts up from `start` and the
/// second half down from `end` (aten's `linspace_kernel`). torch's x86 builds
/// (AVX2 / AVX512 kernels) compile `start + step * i` to a fused multiply-add,
/// checked against torch 2.15 here, so this rounds once per value as well.
fn linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| if i < halfway { step.mul_add(i as f32, start) } else { (-step).mul_add((steps - i - 1) as f32, end) })
        .collect()
}

/// diffusers' `betas_for_alpha_bar` with the cosine transform: float64 Python
/// math (`math.cos`, `** 2` as C `pow`), then rounded to float32.
fn betas_for_alpha_bar(n: usize, max_beta: f64) -> Vec<f32> {
    let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powf(2.0);
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(max_beta) as f32
        })
        .collect()
}

/// diffusers' `rescale_zero_terminal_snr`, every operation in float32.
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    let mut bar_sqrt: Vec<f32> = cumprod(&alphas).iter().map(|a| a.sqrt()).collect();
    let (Some(&first), Some(&last)) = (bar_sqrt.first(), bar_sqrt.last()) else {
        return Vec::new();
    };
    let scale = first / (first - last);
    for s in &mut bar_sqrt {
        *s -= last;
        *s *= scale;
    }
    let bar: Vec<f32> = bar_sqrt.iter().map(|s| s * s).collect();
    let alphas = bar.iter().take(1).copied().chain(bar.windows(2).map(|w| w[1] / w[0]));
    alphas.map(|a| 1.0 - a).collect()
}

/// `torch.cumprod` of a float32 tensor on the CPU: the running product is kept
/// in float64 and each element is rounded to float32 on store.
fn cumprod(values: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    values
        .iter()
        .map(|&v| {
            acc *= f64::from(v);
            acc as f32
        })
        .collect()
}

/// `DDIMScheduler.set_timesteps(num_inference_steps).timesteps`, first step
/// first. Errors where diffusers raises (0 steps, more steps than training
/// timesteps) and where diffusers would produce a timestep outside the
/// training range (which it would index with wrap-around or fail on later).
pub(crate) fn timesteps(config: &SchedulerConfig, steps: usize) -> anyhow::Result<Vec<usize>> {
    let train = config.num_train_timesteps;
    ensure!(steps > 0, "num_inference_steps must be at least 1, found 0");
    ensure!(steps <= train, "num_inference_steps ({steps}) cannot be larger than num_train_timesteps ({train})");
    let timesteps: Vec<i64> = match config.timestep_spacing {
        TimestepSpacing::Leading => {
            // (np.arange(0, steps) * (train // steps)).round()[::-1] + steps_offset
            let ratio = train / steps;
            (0..steps).rev().map(|i| (i * ratio + config.steps_offset) as i64).collect()
        }
        TimestepSpacing::Trailing => {
            // np.round(np.arange(train, 0, -train / steps)).astype(np.int64) - 1
            numpy_arange(train as f64, 0.0, -(train as f64 / steps as f64))
                .into_iter()
                .map(|t| t.round_ties_even() as i64 - 1)
                .collect()
        }
        TimestepSpacing::Linspace => {
            // np.linspace(0, train - 1, steps).round()[::-1]
            numpy_linspace(0.0, (train - 1) as f64, steps)
                .into_iter()
                .rev()
                .map(|t| t.round_ties_even() as i64)
                .collect()
        }
    };
    let count = timesteps.len();
    timesteps
        .into_iter()
        .map(|t| match usize::try_from(t) {
            Ok(t) if t < train => Ok(t),
            _ => bail!(
                "{} spacing with {steps} steps (steps_offset {}) gives {count} timesteps in \
                 diffusers, among them {t}, outside 0..{train}; choose another step count",
                config.timestep_spacing,
                config.steps_offset,
            ),
        })
        .collect()
}

/// `np.arange(start, stop, step)` for float64: `ceil((stop - start) / step)`
/// values, the second one `start + step` and the others
/// `start + i * (second - start)`, as numpy's `DOUBLE_fill` computes them.
pub(crate) fn numpy_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 {
        return Vec::new();
    }
    let delta = (start + step) - start;
    (0..len as usize)
        .map(|i| match i {
            0 => start,
            1 => start + step,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// `np.linspace(start, stop, num)` for float64: `i * ((stop - start) / (num - 1)) + start`,
/// with the last value set to `stop` exactly.
pub(crate) fn numpy_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut values: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if let Some(last) = values.last_mut() {
        *last = stop;
    }
    values
}
