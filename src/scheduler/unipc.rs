//! diffusers' `UniPCMultistepScheduler` (diffusers 0.42): the unified
//! predictor-corrector, data prediction (`predict_x0`), B(h) variants bh1 / bh2.
//!
//! Like DPM-Solver++ it turns each model output into x0 and integrates in log
//! signal-to-noise `lambda`. Two things are its own: the predictor extrapolates
//! from up to `solver_order` earlier x0s, with coefficients from a small linear
//! system; and before predicting, a corrector revises the latent the previous
//! call produced, using the x0 this call just computed (a free extra order: no
//! extra UNet call). The UNet sees the uncorrected latent; the predictor starts
//! from the corrected one, which each call therefore records.

use anyhow::{bail, Context};
use candle_core::Tensor;
use serde_json::{Map, Value};

use super::config::{class_flag, class_text};
use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::schedule;
use super::sigmas::{alpha_sigma, final_sigma, multistep_schedule, work_dtype, FinalSigma};

/// A UniPC run: plain data, cheap to clone.
///
/// Guarantee: `timesteps()` and `sigmas()` are diffusers' after `set_timesteps`,
/// and [`UniPc::step`] computes diffusers' `step` with float32 scalars, given the
/// records of the earlier calls.
#[derive(Debug, Clone, PartialEq)]
pub struct UniPc {
    prediction_type: PredictionType,
    solver_order: usize,
    /// B(h) = h (bh1) instead of e^h - 1 (bh2, the default).
    bh1: bool,
    lower_order_final: bool,
    /// Calls after which the next call's corrector is skipped (schedule indices).
    disable_corrector: Vec<usize>,
    /// The schedule's index of the run's first call (image to image starts later).
    begin: usize,
    timesteps: Vec<f32>,
    sigmas: Vec<f32>,
}

/// Everything one UniPC step call used and computed.
#[derive(Debug, Clone)]
pub struct UniPcStep {
    pub index: usize,
    pub timestep: f64,
    pub sigma: f64,
    pub sigma_next: f64,
    /// `1 / (1 + sigma^2)`, as DDIM's alpha_prod_t.
    pub alpha_prod_t: f64,
    /// The predictor's order (UniP-p): how many x0s it used.
    pub order: u8,
    /// The corrector's order on the latent this call got; 0 where it did not
    /// run (the first call, or `disable_corrector`).
    pub corrector_order: u8,
    /// The model output converted to x0.
    pub pred_original_sample: Tensor,
    /// The latent the predictor started from: this call's input after the
    /// corrector (the input itself where the corrector did not run).
    pub corrected_sample: Tensor,
    pub prev_sample: Tensor,
}

impl UniPc {
    /// `UniPCMultistepScheduler.from_config(config)` and `set_timesteps(steps)`.
    pub fn from_config(config: &Value, steps: usize) -> anyhow::Result<Self> {
        let map = super::config::effective_keys(config)?;
        let mut base_map = map.clone();
        base_map.entry("timestep_spacing").or_insert_with(|| Value::from(TimestepSpacing::Linspace.as_str()));
        let base = SchedulerConfig::from_json(&Value::Object(base_map))?;
        let options = Options::read(&map)?;
        let mut alphas_cumprod = schedule::alphas_cumprod(&base);
        if base.rescale_betas_zero_snr {
            // as diffusers: the first sigma stays finite
            if let Some(last) = alphas_cumprod.last_mut() {
                *last = 2f32.powi(-24);
            }
        }
        let (timesteps, sigmas) =
            multistep_schedule(&alphas_cumprod, &base, steps, options.karras, options.final_sigma, true)
                .context("cannot set up the UniPCMultistepScheduler timesteps")?;
        Ok(Self {
            prediction_type: base.prediction_type,
            solver_order: options.solver_order,
            bh1: options.bh1,
            lower_order_final: options.lower_order_final,
            disable_corrector: options.disable_corrector,
            begin: 0,
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
        self.begin += begin;
    }

    pub fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    /// One sigma per step call and the final one.
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// Step call `index`; `earlier` holds the records of calls `0..index`.
    pub fn step(
        &self,
        index: usize,
        model_output: &Tensor,
        sample: &Tensor,
        earlier: &[&UniPcStep],
    ) -> candle_core::Result<UniPcStep> {
        let n = self.timesteps.len();
        if index >= n {
            candle_core::bail!("UniPC step: call {index} is past the run's {n} calls");
        }
        if earlier.len() != index {
            candle_core::bail!(
                "UniPC step {index}: needs the records of the {index} earlier calls, got {}",
                earlier.len()
            );
        }
        if model_output.shape() != sample.shape() {
            candle_core::bail!(
                "UniPC step: model_output has shape {:?} but sample has {:?}",
                model_output.dims(),
                sample.dims()
            );
        }
        let out_dtype = model_output.dtype();
        let work = work_dtype(out_dtype, "UniPC")?;
        let sample = sample.to_dtype(work)?;
        let x0 = self.convert_model_output(&model_output.to_dtype(work)?, &sample, self.sigmas[index])?;
        // x0 of call `index - k`, k = 1, 2, ...
        let before = |k: usize| earlier[index - k].pred_original_sample.to_dtype(work);

        // The corrector (UniC) revises the previous predictor's result with this x0.
        let use_corrector = index > 0 && !self.disable_corrector.contains(&(self.begin + index - 1));
        let (corrected, corrector_order) = if use_corrector {
            let last = earlier[index - 1];
            let order = usize::from(last.order);
            let outputs = (1..=order).map(&before).collect::<candle_core::Result<Vec<_>>>()?;
            let x = last.corrected_sample.to_dtype(work)?;
            (self.bh_update(&x, index - 1, index, &outputs, order, Some(&x0))?, last.order)
        } else {
            (sample, 0)
        };

        // The predictor (UniP) from the corrected latent, warming up over the first
        // calls and, with lower_order_final, cooling down over the last ones.
        let capped = if self.lower_order_final { self.solver_order.min(n - index) } else { self.solver_order };
        let order = capped.min(index + 1);
        let mut outputs = vec![x0.clone()];
        for k in 1..order {
            outputs.push(before(k)?);
        }
        let prev_sample = self.bh_update(&corrected, index, index + 1, &outputs, order, None)?;
        let sigma = f64::from(self.sigmas[index]);
        Ok(UniPcStep {
            index,
            timestep: f64::from(self.timesteps[index]),
            sigma,
            sigma_next: f64::from(self.sigmas[index + 1]),
            alpha_prod_t: 1.0 / (1.0 + sigma * sigma),
            order: order as u8,
            corrector_order,
            pred_original_sample: x0.to_dtype(out_dtype)?,
            corrected_sample: corrected.to_dtype(out_dtype)?,
            prev_sample: prev_sample.to_dtype(out_dtype)?,
        })
    }

    /// `convert_model_output` with `predict_x0`: the data prediction at `sigma`.
    fn convert_model_output(&self, model_output: &Tensor, sample: &Tensor, sigma: f32) -> candle_core::Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma(sigma);
        match self.prediction_type {
            PredictionType::Epsilon => {
                let divisor = Tensor::new(f64::from(alpha_t), sample.device())?.to_dtype(sample.dtype())?;
                (sample - model_output.affine(f64::from(sigma_t), 0.0)?)?.broadcast_div(&divisor)
            }
            PredictionType::VPrediction => {
                sample.affine(f64::from(alpha_t), 0.0)? - model_output.affine(f64::from(sigma_t), 0.0)?
            }
            PredictionType::Sample => Ok(model_output.clone()),
        }
    }

    /// `multistep_uni_p_bh_update` (`model_t` None) and `multistep_uni_c_bh_update`
    /// (`model_t` the new x0): from `x` at `sigmas[s0]` to `sigmas[t]`, with
    /// `outputs[k]` the x0 at `sigmas[s0 - k]`.
    fn bh_update(
        &self,
        x: &Tensor,
        s0: usize,
        t: usize,
        outputs: &[Tensor],
        order: usize,
        model_t: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let lambda = |sigma: f32| {
            let (a, s) = alpha_sigma(sigma);
            a.ln() - s.ln()
        };
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[t]);
        let (_, sigma_s0) = alpha_sigma(self.sigmas[s0]);
        let lambda_s0 = lambda(self.sigmas[s0]);
        let h = lambda(self.sigmas[t]) - lambda_s0;
        let m0 = &outputs[0];
        let mut rks = Vec::with_capacity(order);
        let mut d1s = Vec::with_capacity(order);
        for (k, mk) in outputs.iter().enumerate().take(order).skip(1) {
            let rk = (lambda(self.sigmas[s0 - k]) - lambda_s0) / h;
            rks.push(rk);
            d1s.push((mk - m0)?.affine(f64::from(1.0 / rk), 0.0)?);
        }
        rks.push(1.0);

        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let b_h = if self.bh1 { hh } else { hh.exp_m1() };
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial = 1.0f32;
        let (mut r, mut b) = (Vec::with_capacity(order), Vec::with_capacity(order));
        for i in 1..=order {
            r.push(rks.iter().map(|rk| rk.powi(i as i32 - 1)).collect::<Vec<f32>>());
            b.push(h_phi_k * factorial / b_h);
            factorial *= (i + 1) as f32;
            h_phi_k = h_phi_k / hh - 1.0 / factorial;
        }

        let x_t_ = (x.affine(f64::from(sigma_t / sigma_s0), 0.0)? - m0.affine(f64::from(alpha_t * h_phi_1), 0.0)?)?;
        let rhos = match (model_t, order) {
            (None, 1) => return Ok(x_t_),
            // diffusers' simplified second order
            (None, 2) => vec![0.5],
            (None, _) => {
                solve(&r[..order - 1].iter().map(|row| row[..order - 1].to_vec()).collect::<Vec<_>>(), &b[..order - 1])
            }
            (Some(_), 1) => vec![0.5],
            (Some(_), _) => solve(&r, &b),
        };
        let mut res: Option<Tensor> = None;
        for (rho, d1) in rhos.iter().zip(&d1s) {
            let term = d1.affine(f64::from(*rho), 0.0)?;
            res = Some(match res {
                Some(sum) => (sum + term)?,
                None => term,
            });
        }
        if let Some(model_t) = model_t {
            let d1_t = (model_t - m0)?.affine(f64::from(rhos[order - 1]), 0.0)?;
            res = Some(match res {
                Some(sum) => (sum + d1_t)?,
                None => d1_t,
            });
        }
        match res {
            Some(res) => x_t_ - res.affine(f64::from(alpha_t * b_h), 0.0)?,
            None => Ok(x_t_),
        }
    }
}

/// `torch.linalg.solve` for the small systems of UniPC's coefficients:
/// Gaussian elimination with partial pivoting, in float64.
fn solve(a: &[Vec<f32>], b: &[f32]) -> Vec<f32> {
    let n = b.len();
    let mut m: Vec<Vec<f64>> =
        a.iter().zip(b).map(|(row, &bi)| row.iter().map(|&v| f64::from(v)).chain([f64::from(bi)]).collect()).collect();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs())).unwrap_or(col);
        m.swap(col, pivot);
        let (above, below) = m.split_at_mut(col + 1);
        let pivot_row = &above[col];
        for row in below.iter_mut() {
            let f = row[col] / pivot_row[col];
            for (value, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *value -= f * p;
            }
        }
    }
    let mut x = vec![0.0f64; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| m[row][k] * x[k]).sum();
        x[row] = (m[row][n] - tail) / m[row][row];
    }
    x.into_iter().map(|v| v as f32).collect()
}

/// The class's own keys; those sdlab does not compute are refused by name.
struct Options {
    karras: bool,
    solver_order: usize,
    bh1: bool,
    lower_order_final: bool,
    disable_corrector: Vec<usize>,
    final_sigma: FinalSigma,
}

impl Options {
    fn read(map: &Map<String, Value>) -> anyhow::Result<Self> {
        let flag = |key: &str, default: bool| class_flag(map, key, default);
        let text = |key: &str, default: &str| class_text(map, key, default);
        for key in
            ["use_exponential_sigmas", "use_beta_sigmas", "use_flow_sigmas", "use_dynamic_shifting", "thresholding"]
        {
            if flag(key, false)? {
                bail!("{key}: not computed by sdlab; expected false");
            }
        }
        if !flag("predict_x0", true)? {
            bail!("predict_x0: sdlab computes UniPC's data prediction; expected true (the default), found false");
        }
        if let Some(v) = map.get("solver_p").filter(|v| !v.is_null()) {
            bail!("solver_p: sdlab computes UniPC's own predictor; expected null, found {v}");
        }
        let solver_order = match map.get("solver_order") {
            None | Some(Value::Null) => 2,
            Some(v) => match v.as_u64() {
                Some(order @ 1..=3) => order as usize,
                _ => bail!("solver_order: expected 1, 2 or 3, found {v}"),
            },
        };
        // diffusers registers the DPM-Solver names as bh2
        let bh1 = match text("solver_type", "bh2")?.as_str() {
            "bh1" => true,
            "bh2" | "midpoint" | "heun" | "logrho" => false,
            other => bail!("solver_type: expected one of bh1, bh2, found {other:?}"),
        };
        let disable_corrector = match map.get("disable_corrector") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                items.iter().map(|v| v.as_u64().map(|i| i as usize)).collect::<Option<Vec<_>>>().ok_or_else(|| {
                    anyhow::anyhow!(
                        "disable_corrector: expected a list of step indices, found {}",
                        Value::Array(items.clone())
                    )
                })?
            }
            Some(other) => bail!("disable_corrector: expected a list of step indices, found {other}"),
        };
        let final_sigma = final_sigma(map)?;
        Ok(Self {
            karras: flag("use_karras_sigmas", false)?,
            solver_order,
            bh1,
            lower_order_final: flag("lower_order_final", true)?,
            disable_corrector,
            final_sigma,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::solve;

    #[test]
    fn solve_matches_a_hand_solved_system() {
        // x + y = 3, 2x - y = 0 -> x = 1, y = 2; the zero pivot forces a swap in the second
        assert_eq!(solve(&[vec![1.0, 1.0], vec![2.0, -1.0]], &[3.0, 0.0]), vec![1.0, 2.0]);
        let x = solve(&[vec![0.0, 1.0], vec![1.0, 0.0]], &[5.0, 7.0]);
        assert_eq!(x, vec![7.0, 5.0]);
    }
}
