//! The samplers a run can use, behind one interface: set up the timesteps, scale
//! the UNet's input, step. Each sampler is its own file (DDIM first); this one
//! only names them and dispatches.

use std::fmt;

use anyhow::{bail, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    DdimScheduler, DdimStep, DpmSolverPP, DpmStep, Euler, EulerStep, Heun, HeunStep, Lcm, LcmStep, Lms, LmsStep, Pndm,
    PndmStep, SchedulerConfig, UniPc, UniPcStep,
};
use crate::rng::torch::TorchRng;

/// A sampler by the name the CLI, sessions and PNG metadata use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerName {
    #[default]
    Ddim,
    Pndm,
    Lms,
    Heun,
    Euler,
    EulerKarras,
    EulerA,
    #[serde(rename = "dpmpp_2m")]
    Dpmpp2m,
    #[serde(rename = "dpmpp_2m_karras")]
    Dpmpp2mKarras,
    #[serde(rename = "unipc")]
    UniPc,
    Lcm,
}

impl SamplerName {
    pub const ALL: &'static [Self] = &[
        Self::Ddim,
        Self::Pndm,
        Self::Lms,
        Self::Heun,
        Self::Euler,
        Self::EulerKarras,
        Self::EulerA,
        Self::Dpmpp2m,
        Self::Dpmpp2mKarras,
        Self::UniPc,
        Self::Lcm,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ddim => "ddim",
            Self::Pndm => "pndm",
            Self::Lms => "lms",
            Self::Heun => "heun",
            Self::Euler => "euler",
            Self::EulerKarras => "euler_karras",
            Self::EulerA => "euler_a",
            Self::Dpmpp2m => "dpmpp_2m",
            Self::Dpmpp2mKarras => "dpmpp_2m_karras",
            Self::UniPc => "unipc",
            Self::Lcm => "lcm",
        }
    }

    /// What AUTOMATIC1111 calls it (its `Sampler` parameter).
    pub fn a1111_name(self) -> &'static str {
        match self {
            Self::Ddim => "DDIM",
            Self::Pndm => "PLMS",
            Self::Lms => "LMS",
            Self::Heun => "Heun",
            Self::Euler => "Euler",
            Self::EulerKarras => "Euler Karras",
            Self::EulerA => "Euler a",
            Self::Dpmpp2m => "DPM++ 2M",
            Self::Dpmpp2mKarras => "DPM++ 2M Karras",
            Self::UniPc => "UniPC",
            Self::Lcm => "LCM",
        }
    }

    /// The diffusers class that computes the same thing.
    pub fn diffusers_class(self) -> &'static str {
        match self {
            Self::Ddim => "DDIMScheduler",
            Self::Pndm => "PNDMScheduler",
            Self::Lms => "LMSDiscreteScheduler",
            Self::Heun => "HeunDiscreteScheduler",
            Self::Euler | Self::EulerKarras => "EulerDiscreteScheduler",
            Self::EulerA => "EulerAncestralDiscreteScheduler",
            Self::Dpmpp2m | Self::Dpmpp2mKarras => "DPMSolverMultistepScheduler",
            Self::UniPc => "UniPCMultistepScheduler",
            Self::Lcm => "LCMScheduler",
        }
    }

    /// A name from the command line: one of [`Self::ALL`], or `model` for the
    /// class the model's `scheduler_config.json` names.
    pub fn parse(name: &str, config: &SchedulerConfig) -> Result<Self> {
        if name == "model" {
            return Self::of_model(config);
        }
        Self::from_name(name)
    }

    pub fn from_name(name: &str) -> Result<Self> {
        match Self::ALL.iter().find(|s| s.as_str() == name) {
            Some(&s) => Ok(s),
            None => bail!("unknown scheduler {name:?}: expected one of {}, or model", Self::names()),
        }
    }

    /// The sampler the model's config names in `_class_name`, as
    /// `StableDiffusionPipeline.from_pretrained` would use it.
    pub fn of_model(config: &SchedulerConfig) -> Result<Self> {
        let class = config.class_name.as_deref().unwrap_or("(none)");
        let karras = config.source.get("use_karras_sigmas").and_then(Value::as_bool).unwrap_or(false);
        match (class, karras) {
            ("DDIMScheduler", _) => Ok(Self::Ddim),
            ("PNDMScheduler", _) => Ok(Self::Pndm),
            ("LMSDiscreteScheduler", _) => Ok(Self::Lms),
            ("HeunDiscreteScheduler", _) => Ok(Self::Heun),
            ("LCMScheduler", _) => Ok(Self::Lcm),
            ("UniPCMultistepScheduler", _) => Ok(Self::UniPc),
            ("EulerDiscreteScheduler", false) => Ok(Self::Euler),
            ("EulerDiscreteScheduler", true) => Ok(Self::EulerKarras),
            ("EulerAncestralDiscreteScheduler", _) => Ok(Self::EulerA),
            ("DPMSolverMultistepScheduler", false) if dpmpp_2m(config) => Ok(Self::Dpmpp2m),
            ("DPMSolverMultistepScheduler", true) if dpmpp_2m(config) => Ok(Self::Dpmpp2mKarras),
            _ => bail!(
                "--scheduler model: the model's scheduler_config.json names {class}, which sdlab does not compute \
                 yet; choose one of {}",
                Self::names()
            ),
        }
    }

    fn names() -> String {
        Self::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// Whether a DPMSolverMultistepScheduler config asks for what sdlab computes:
/// dpmsolver++ (the default) of order 2 (the default).
fn dpmpp_2m(config: &SchedulerConfig) -> bool {
    let source = &config.source;
    source.get("algorithm_type").and_then(Value::as_str).unwrap_or("dpmsolver++") == "dpmsolver++"
        && source.get("solver_order").and_then(Value::as_u64).unwrap_or(2) == 2
}

impl fmt::Display for SamplerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A sampler set up for one run of `steps` steps. Plain data: cheap to clone.
#[derive(Debug, Clone, PartialEq)]
pub enum Sampler {
    Ddim(DdimScheduler),
    Pndm(Pndm),
    Lms(Lms),
    Heun(Heun),
    Euler(SamplerName, Euler),
    Dpm(SamplerName, DpmSolverPP),
    UniPc(UniPc),
    Lcm(Lcm),
}

/// What one `scheduler.step` call used and computed.
#[derive(Debug, Clone)]
pub enum SamplerStep {
    Ddim(DdimStep),
    Pndm(PndmStep),
    Lms(LmsStep),
    Heun(HeunStep),
    Euler(EulerStep),
    Dpm(DpmStep),
    UniPc(UniPcStep),
    Lcm(LcmStep),
}

impl Sampler {
    /// The sampler `name` builds from the model's config, with `steps` timesteps,
    /// as diffusers' `Class.from_config(config, **extra).set_timesteps(steps)`.
    pub fn new(name: SamplerName, config: &SchedulerConfig, steps: usize) -> Result<Self> {
        let source = Value::Object(config.source.clone());
        Ok(match name {
            SamplerName::Ddim => Self::Ddim(DdimScheduler::new(config, steps)?),
            SamplerName::Pndm => Self::Pndm(Pndm::from_config(&source, steps)?),
            SamplerName::Lms => Self::Lms(Lms::from_config(&source, steps)?),
            SamplerName::Heun => Self::Heun(Heun::from_config(&source, steps)?),
            SamplerName::Euler => Self::Euler(name, Euler::from_config(&source, steps, false, false)?),
            SamplerName::EulerKarras => Self::Euler(name, Euler::from_config(&source, steps, true, false)?),
            SamplerName::EulerA => Self::Euler(name, Euler::from_config(&source, steps, false, true)?),
            SamplerName::Dpmpp2m => Self::Dpm(name, DpmSolverPP::from_config(&source, steps, false)?),
            SamplerName::Dpmpp2mKarras => Self::Dpm(name, DpmSolverPP::from_config(&source, steps, true)?),
            SamplerName::UniPc => Self::UniPc(UniPc::from_config(&source, steps)?),
            SamplerName::Lcm => Self::Lcm(Lcm::from_config(&source, steps)?),
        })
    }

    /// Image to image, as `StableDiffusionImg2ImgPipeline.get_timesteps`: the run
    /// keeps the last `int(steps * strength)` of its `steps` (each of Heun's two
    /// calls), so the picture is noised only as far as the first of them.
    pub fn img2img(mut self, steps: usize, strength: f64) -> Result<Self> {
        if !(strength > 0.0 && strength <= 1.0) {
            bail!("strength {strength}: expected a number above 0 and at most 1");
        }
        let kept = ((steps as f64 * strength) as usize).min(steps);
        if kept == 0 {
            bail!(
                "strength {strength} with {steps} steps keeps no step (int({steps} x {strength}) = 0): \
                 raise the strength or the steps"
            );
        }
        let begin = (steps - kept) * if matches!(self, Self::Heun(_)) { 2 } else { 1 };
        match &mut self {
            Self::Ddim(d) => d.skip(begin),
            Self::Pndm(p) => p.skip(begin),
            Self::Lms(l) => l.skip(begin),
            Self::Heun(h) => h.skip(begin),
            Self::Euler(_, e) => e.skip(begin),
            Self::Dpm(_, d) => d.skip(begin),
            Self::UniPc(u) => u.skip(begin),
            Self::Lcm(l) => l.skip(begin),
        }
        Ok(self)
    }

    /// `scheduler.add_noise(image_latents, noise, timesteps[:1])`: the picture's
    /// latent noised to the run's first call, each class by its own formula.
    pub fn add_noise(&self, original: &Tensor, noise: &Tensor) -> candle_core::Result<Tensor> {
        let work = super::sigmas::work_dtype(original.dtype(), "add_noise")?;
        let (x, noise) = (original.to_dtype(work)?, noise.to_dtype(work)?);
        let noisy = match self {
            Self::Ddim(_) | Self::Pndm(_) | Self::Lcm(_) => {
                // alphas_cumprod[t] ** 0.5 and (1 - alphas_cumprod[t]) ** 0.5 in float32
                let a = self.alpha_prod_t()[0] as f32;
                (x.affine(f64::from(a.sqrt()), 0.0)? + noise.affine(f64::from((1.0 - a).sqrt()), 0.0)?)?
            }
            Self::Lms(_) | Self::Heun(_) | Self::Euler(..) => {
                let sigma = self.sigmas().map_or(0.0, |s| s[0]) as f32;
                (x + noise.affine(f64::from(sigma), 0.0)?)?
            }
            Self::Dpm(..) | Self::UniPc(_) => {
                let sigma = self.sigmas().map_or(0.0, |s| s[0]) as f32;
                let (alpha_t, sigma_t) = super::sigmas::alpha_sigma(sigma);
                (x.affine(f64::from(alpha_t), 0.0)? + noise.affine(f64::from(sigma_t), 0.0)?)?
            }
        };
        noisy.to_dtype(original.dtype())
    }

    pub fn name(&self) -> SamplerName {
        match self {
            Self::Ddim(_) => SamplerName::Ddim,
            Self::Pndm(_) => SamplerName::Pndm,
            Self::Lms(_) => SamplerName::Lms,
            Self::Heun(_) => SamplerName::Heun,
            Self::Lcm(_) => SamplerName::Lcm,
            Self::UniPc(_) => SamplerName::UniPc,
            Self::Euler(name, _) | Self::Dpm(name, _) => *name,
        }
    }

    /// The timestep the UNet gets at each step call, first first.
    pub fn timesteps(&self) -> Vec<f64> {
        match self {
            Self::Ddim(d) => d.timesteps().iter().map(|&t| t as f64).collect(),
            Self::Pndm(p) => p.timesteps().iter().map(|&t| t as f64).collect(),
            Self::Lcm(l) => l.timesteps().iter().map(|&t| t as f64).collect(),
            Self::Lms(l) => l.timesteps().iter().map(|&t| f64::from(t)).collect(),
            Self::Heun(h) => h.timesteps().iter().map(|&t| f64::from(t)).collect(),
            Self::Euler(_, e) => e.timesteps().iter().map(|&t| f64::from(t)).collect(),
            Self::Dpm(_, d) => d.timesteps().iter().map(|&t| f64::from(t)).collect(),
            Self::UniPc(u) => u.timesteps().iter().map(|&t| f64::from(t)).collect(),
        }
    }

    /// The timestep of step call `index`.
    pub fn timestep(&self, index: usize) -> candle_core::Result<f64> {
        let t = match self {
            Self::Ddim(d) => d.timesteps().get(index).map(|&t| t as f64),
            Self::Pndm(p) => p.timesteps().get(index).map(|&t| t as f64),
            Self::Lcm(l) => l.timesteps().get(index).map(|&t| t as f64),
            Self::Lms(l) => l.timesteps().get(index).map(|&t| f64::from(t)),
            Self::Heun(h) => h.timesteps().get(index).map(|&t| f64::from(t)),
            Self::Euler(_, e) => e.timesteps().get(index).map(|&t| f64::from(t)),
            Self::Dpm(_, d) => d.timesteps().get(index).map(|&t| f64::from(t)),
            Self::UniPc(u) => u.timesteps().get(index).map(|&t| f64::from(t)),
        };
        match t {
            Some(t) => Ok(t),
            None => candle_core::bail!("step call {index} is past the run's {} calls", self.calls()),
        }
    }

    /// How many `step` calls the run makes.
    pub fn calls(&self) -> usize {
        match self {
            Self::Ddim(d) => d.timesteps().len(),
            Self::Pndm(p) => p.timesteps().len(),
            Self::Lcm(l) => l.timesteps().len(),
            Self::Lms(l) => l.timesteps().len(),
            Self::Heun(h) => h.timesteps().len(),
            Self::Euler(_, e) => e.timesteps().len(),
            Self::Dpm(_, d) => d.timesteps().len(),
            Self::UniPc(u) => u.timesteps().len(),
        }
    }

    /// The noise level of each step call as DDIM's `alpha_prod_t`
    /// (`1 / (1 + sigma^2)` for the sigma samplers), so one chart fits all.
    pub fn alpha_prod_t(&self) -> Vec<f64> {
        match self {
            Self::Ddim(d) => d.timesteps().iter().map(|&t| d.alphas_cumprod()[t]).collect(),
            Self::Pndm(p) => p.timesteps().iter().map(|&t| p.alpha_prod_t(t)).collect(),
            Self::Lcm(l) => l.timesteps().iter().map(|&t| l.alpha_prod_t(t)).collect(),
            Self::Lms(_) | Self::Heun(_) | Self::Euler(..) | Self::Dpm(..) | Self::UniPc(_) => {
                let sigmas = self.sigmas().unwrap_or_default();
                sigmas[..self.calls()].iter().map(|&s| 1.0 / (1.0 + s * s)).collect()
            }
        }
    }

    /// The sampler's own sigmas (`calls + 1` values), for those that have them.
    pub fn sigmas(&self) -> Option<Vec<f64>> {
        match self {
            Self::Ddim(_) | Self::Pndm(_) | Self::Lcm(_) => None,
            Self::Lms(l) => Some(l.sigmas().iter().map(|&s| f64::from(s)).collect()),
            Self::Heun(h) => Some(h.sigmas().iter().map(|&s| f64::from(s)).collect()),
            Self::Euler(_, e) => Some(e.sigmas().iter().map(|&s| f64::from(s)).collect()),
            Self::Dpm(_, d) => Some(d.sigmas().iter().map(|&s| f64::from(s)).collect()),
            Self::UniPc(u) => Some(u.sigmas().iter().map(|&s| f64::from(s)).collect()),
        }
    }

    /// The standard deviation the seeded noise is scaled to.
    pub fn init_noise_sigma(&self) -> f64 {
        match self {
            Self::Ddim(d) => d.init_noise_sigma(),
            Self::Pndm(_) | Self::Lcm(_) => 1.0,
            Self::Lms(l) => l.init_noise_sigma(),
            Self::Heun(h) => h.init_noise_sigma(),
            Self::Euler(_, e) => e.init_noise_sigma(),
            Self::Dpm(..) | Self::UniPc(_) => 1.0,
        }
    }

    /// `scale_model_input`: what the UNet sees of the latent at step call `index`.
    pub fn scale_model_input(&self, sample: &Tensor, index: usize) -> candle_core::Result<Tensor> {
        match self {
            Self::Ddim(_) | Self::Pndm(_) | Self::Dpm(..) | Self::UniPc(_) | Self::Lcm(_) => Ok(sample.clone()),
            Self::Euler(_, e) => e.scale_model_input(sample, index),
            Self::Lms(l) => l.scale_model_input(sample, index),
            Self::Heun(h) => h.scale_model_input(sample, index),
        }
    }

    /// Step call `index` from `sample` with the guided model output; `history`
    /// holds the records of calls `0..index`, which multistep solvers use. Stochastic
    /// samplers (DDIM with `eta > 0`, Euler a) draw their noise from `rng`, as
    /// diffusers draws it from the run's generator.
    pub fn step(
        &self,
        index: usize,
        model_output: &Tensor,
        sample: &Tensor,
        history: &[&SamplerStep],
        eta: f64,
        rng: &mut TorchRng,
    ) -> candle_core::Result<SamplerStep> {
        let noise = |rng: &mut TorchRng| -> candle_core::Result<Tensor> {
            rng.randn_tensor(sample.dims())?.to_dtype(sample.dtype())?.to_device(sample.device())
        };
        match self {
            Self::Ddim(d) => {
                let Some(&t) = d.timesteps().get(index) else {
                    candle_core::bail!("DDIM step: call {index} is past the run's {} calls", d.timesteps().len());
                };
                let variance_noise = if eta > 0.0 { Some(noise(rng)?) } else { None };
                d.step(model_output, t, sample, eta, variance_noise.as_ref()).map(SamplerStep::Ddim)
            }
            Self::Euler(name, e) => {
                let fresh = if *name == SamplerName::EulerA { Some(noise(rng)?) } else { None };
                e.step(index, model_output, sample, fresh.as_ref()).map(SamplerStep::Euler)
            }
            Self::Pndm(p) => {
                let earlier: Vec<&PndmStep> = history
                    .iter()
                    .filter_map(|s| match s {
                        SamplerStep::Pndm(s) => Some(s),
                        _ => None,
                    })
                    .collect();
                p.step(index, model_output, sample, &earlier).map(SamplerStep::Pndm)
            }
            Self::Lms(l) => {
                let earlier: Vec<&LmsStep> = history
                    .iter()
                    .filter_map(|s| match s {
                        SamplerStep::Lms(s) => Some(s),
                        _ => None,
                    })
                    .collect();
                l.step(index, model_output, sample, &earlier).map(SamplerStep::Lms)
            }
            Self::Heun(h) => {
                let previous = match history.last() {
                    Some(SamplerStep::Heun(s)) => Some(s),
                    _ => None,
                };
                h.step(index, model_output, sample, previous).map(SamplerStep::Heun)
            }
            Self::Dpm(_, d) => {
                let previous_x0 = history.last().map(|s| s.pred_original_sample());
                d.step(index, model_output, sample, previous_x0).map(SamplerStep::Dpm)
            }
            Self::UniPc(u) => {
                let earlier: Vec<&UniPcStep> = history
                    .iter()
                    .filter_map(|s| match s {
                        SamplerStep::UniPc(s) => Some(s),
                        _ => None,
                    })
                    .collect();
                u.step(index, model_output, sample, &earlier).map(SamplerStep::UniPc)
            }
            Self::Lcm(l) => {
                let fresh = if l.draws_noise(index) { Some(noise(rng)?) } else { None };
                l.step(index, model_output, sample, fresh.as_ref()).map(SamplerStep::Lcm)
            }
        }
    }
}

impl SamplerStep {
    /// The timestep the UNet was given.
    pub fn timestep(&self) -> f64 {
        match self {
            Self::Ddim(s) => s.timestep as f64,
            Self::Pndm(s) => s.timestep as f64,
            Self::Lms(s) => s.timestep,
            Self::Heun(s) => s.timestep,
            Self::Euler(s) => s.timestep,
            Self::Dpm(s) => s.timestep,
            Self::UniPc(s) => s.timestep,
            Self::Lcm(s) => s.timestep as f64,
        }
    }

    pub fn alpha_prod_t(&self) -> f64 {
        match self {
            Self::Ddim(s) => s.alpha_prod_t,
            Self::Pndm(s) => s.alpha_prod_t,
            Self::Lms(s) => s.alpha_prod_t,
            Self::Heun(s) => s.alpha_prod_t,
            Self::Euler(s) => s.alpha_prod_t,
            Self::Dpm(s) => s.alpha_prod_t,
            Self::UniPc(s) => s.alpha_prod_t,
            Self::Lcm(s) => s.alpha_prod_t,
        }
    }

    pub fn sigma(&self) -> Option<f64> {
        match self {
            Self::Ddim(_) | Self::Pndm(_) | Self::Lcm(_) => None,
            Self::Lms(s) => Some(s.sigma),
            Self::Heun(s) => Some(s.sigma),
            Self::Euler(s) => Some(s.sigma),
            Self::Dpm(s) => Some(s.sigma),
            Self::UniPc(s) => Some(s.sigma),
        }
    }

    /// x0 as the sampler predicts it.
    pub fn pred_original_sample(&self) -> &Tensor {
        match self {
            Self::Ddim(s) => &s.pred_original_sample,
            Self::Pndm(s) => &s.pred_original_sample,
            Self::Lms(s) => &s.pred_original_sample,
            Self::Heun(s) => &s.pred_original_sample,
            Self::Euler(s) => &s.pred_original_sample,
            Self::Dpm(s) => &s.pred_original_sample,
            Self::UniPc(s) => &s.pred_original_sample,
            Self::Lcm(s) => &s.pred_original_sample,
        }
    }

    /// The latent the next step call starts from.
    pub fn prev_sample(&self) -> &Tensor {
        match self {
            Self::Ddim(s) => &s.prev_sample,
            Self::Pndm(s) => &s.prev_sample,
            Self::Lms(s) => &s.prev_sample,
            Self::Heun(s) => &s.prev_sample,
            Self::Euler(s) => &s.prev_sample,
            Self::Dpm(s) => &s.prev_sample,
            Self::UniPc(s) => &s.prev_sample,
            Self::Lcm(s) => &s.prev_sample,
        }
    }

    /// The step's tensors by the names sessions store them under, in the order
    /// they are computed.
    pub fn tensors(&self) -> Vec<(&'static str, &Tensor)> {
        match self {
            Self::Ddim(s) => vec![
                ("pred_original_sample", &s.pred_original_sample),
                ("pred_epsilon", &s.pred_epsilon),
                ("prev_sample", &s.prev_sample),
            ],
            Self::Pndm(s) => {
                let mut out = vec![
                    ("model_output", &s.model_output),
                    ("pred_original_sample", &s.pred_original_sample),
                    ("prev_sample", &s.prev_sample),
                ];
                out.extend(s.sample_in.as_ref().map(|t| ("sample_in", t)));
                out
            }
            Self::Lms(s) => vec![
                ("pred_original_sample", &s.pred_original_sample),
                ("derivative", &s.derivative),
                ("prev_sample", &s.prev_sample),
            ],
            Self::Heun(s) => {
                let mut out = vec![
                    ("pred_original_sample", &s.pred_original_sample),
                    ("derivative", &s.derivative),
                    ("prev_sample", &s.prev_sample),
                ];
                out.extend(s.sample_in.as_ref().map(|t| ("sample_in", t)));
                out
            }
            Self::Euler(s) => vec![
                ("pred_original_sample", &s.pred_original_sample),
                ("derivative", &s.derivative),
                ("prev_sample", &s.prev_sample),
            ],
            Self::Dpm(s) => vec![("pred_original_sample", &s.pred_original_sample), ("prev_sample", &s.prev_sample)],
            Self::UniPc(s) => vec![
                ("pred_original_sample", &s.pred_original_sample),
                ("corrected_sample", &s.corrected_sample),
                ("prev_sample", &s.prev_sample),
            ],
            Self::Lcm(s) => vec![("pred_original_sample", &s.pred_original_sample), ("prev_sample", &s.prev_sample)],
        }
    }

    /// The same step with every tensor passed through `f` (to another device or dtype).
    pub fn map_tensors<E>(&self, f: impl Fn(&Tensor) -> Result<Tensor, E>) -> Result<Self, E> {
        Ok(match self {
            Self::Ddim(s) => Self::Ddim(DdimStep {
                pred_original_sample: f(&s.pred_original_sample)?,
                pred_epsilon: f(&s.pred_epsilon)?,
                prev_sample: f(&s.prev_sample)?,
                ..s.clone()
            }),
            Self::Pndm(s) => Self::Pndm(PndmStep {
                model_output: f(&s.model_output)?,
                sample_in: s.sample_in.as_ref().map(&f).transpose()?,
                pred_original_sample: f(&s.pred_original_sample)?,
                prev_sample: f(&s.prev_sample)?,
                ..s.clone()
            }),
            Self::Lms(s) => Self::Lms(LmsStep {
                pred_original_sample: f(&s.pred_original_sample)?,
                derivative: f(&s.derivative)?,
                prev_sample: f(&s.prev_sample)?,
                ..s.clone()
            }),
            Self::Heun(s) => Self::Heun(HeunStep {
                pred_original_sample: f(&s.pred_original_sample)?,
                derivative: f(&s.derivative)?,
                sample_in: s.sample_in.as_ref().map(&f).transpose()?,
                prev_sample: f(&s.prev_sample)?,
                ..s.clone()
            }),
            Self::Euler(s) => Self::Euler(EulerStep {
                pred_original_sample: f(&s.pred_original_sample)?,
                derivative: f(&s.derivative)?,
                prev_sample: f(&s.prev_sample)?,
                ..s.clone()
            }),
            Self::Dpm(s) => Self::Dpm(DpmStep {
                pred_original_sample: f(&s.pred_original_sample)?,
                prev_sample: f(&s.prev_sample)?,
                ..s.clone()
            }),
            Self::UniPc(s) => Self::UniPc(UniPcStep {
                pred_original_sample: f(&s.pred_original_sample)?,
                corrected_sample: f(&s.corrected_sample)?,
                prev_sample: f(&s.prev_sample)?,
                ..s.clone()
            }),
            Self::Lcm(s) => Self::Lcm(LcmStep {
                pred_original_sample: f(&s.pred_original_sample)?,
                prev_sample: f(&s.prev_sample)?,
                ..s.clone()
            }),
        })
    }
}
