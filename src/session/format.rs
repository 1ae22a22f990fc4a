//! A saved session's two files as bytes: `session.json` (settings, per-step scalars,
//! generator states) and `tensors.safetensors`, read with every check that they
//! agree with each other, so a damaged session is an error naming the file and field.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::store::{ModelInfo, RuntimeInfo, SessionRecord, FORMAT};
use super::{Fork, Latent, Limits, Origin, Segment, Settings, Stage, StepRecord};
use crate::model::tokenizer::{Token, TokenKind, TokenizedPrompt};
use crate::rng::torch::TorchRng;
use crate::scheduler::{
    DdimStep, DpmStep, EulerStep, HeunStep, LcmStep, LmsStep, PndmStep, Sampler, SamplerStep, SchedulerConfig,
    UniPcStep,
};
use crate::stages::{DenoiseStep, PromptEncoding};

/// The tensors of a step, in the order they are computed; `noise_pred_uncond` is
/// absent when guidance was off for the step.
pub(super) fn step_tensors(d: &DenoiseStep) -> Vec<(&'static str, Option<&Tensor>)> {
    let mut out = vec![
        ("noise_pred_uncond", d.noise_pred_uncond.as_ref()),
        ("noise_pred_text", Some(&d.noise_pred_text)),
        ("guided_model_output", Some(&d.guided_model_output)),
    ];
    out.extend(d.scheduler.tensors().into_iter().map(|(name, t)| (name, Some(t))));
    out
}

pub(super) fn stage_of(encoded: bool, latent: bool, steps: usize, decoded: bool) -> Stage {
    if decoded {
        Stage::VaeDecode
    } else if steps > 0 {
        Stage::Denoise(steps)
    } else if latent {
        Stage::GetLatent
    } else if encoded {
        Stage::EncodePrompt
    } else {
        Stage::Start
    }
}

pub(super) fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Start => "start",
        Stage::EncodePrompt => "encode_prompt",
        Stage::GetLatent => "get_latent",
        Stage::Denoise(_) => "denoise",
        Stage::VaeDecode => "vae_decode",
    }
}

/// `session.json` as written: the record's values plus the per-step scalars and
/// generator states; tensors are in `tensors.safetensors` under the names
/// [`SessionRecord::save`] gives them.
#[derive(Serialize, Deserialize)]
pub(super) struct SessionFile {
    format: u32,
    sdlab_version: String,
    created: String,
    pub(super) saved: String,
    pub(super) model: ModelInfo,
    runtime: RuntimeInfo,
    pub(super) settings: Settings,
    /// The sampler's name, as `settings.scheduler` (format 1 files have only this).
    scheduler: String,
    #[serde(deserialize_with = "scheduler_config", serialize_with = "write_scheduler_config")]
    pub(super) scheduler_config: SchedulerConfig,
    /// `start`, `encode_prompt`, `get_latent`, `denoise` or `vae_decode`.
    pub(super) stage: String,
    pub(super) steps_done: usize,
    encoding: Option<EncodingFile>,
    latent: Option<LatentFile>,
    steps: Vec<StepFile>,
    /// The decoded image's PNG, relative to the folder.
    image: Option<String>,
    /// A branch: where it leaves its parent; `steps` then lists only its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) fork: Option<ForkFile>,
}

/// [`Fork`] as written, with the digest of the state it starts from.
#[derive(Serialize, Deserialize)]
pub(super) struct ForkFile {
    /// The parent branch; null for the session's main run.
    pub(super) parent: Option<String>,
    pub(super) at: usize,
    earlier: Vec<Segment>,
    /// [`fork_digest`] of the parent's latent and generator after `at` steps.
    digest: String,
}

#[derive(Serialize, Deserialize)]
struct EncodingFile {
    prompt: TokensFile,
    negative: TokensFile,
}

/// A [`TokenizedPrompt`] without its ids (those are the `input_ids` tensors).
#[derive(Serialize, Deserialize)]
struct TokensFile {
    tokens: Vec<String>,
    kinds: Vec<TokenKind>,
    truncated: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct LatentFile {
    /// `(1, channels, height / f, width / f)`, which every latent tensor must have.
    shape: Vec<usize>,
    /// The generator right after drawing the initial noise.
    generator: TorchRng,
}

/// A step's scalars: DDIM's, or a sigma sampler's.
#[derive(Serialize, Deserialize)]
struct StepFile {
    /// What the UNet was given (fractional for Karras sigmas); whole ones are
    /// written as integers, as format 1 has always had them.
    #[serde(serialize_with = "whole_or_float")]
    timestep: f64,
    alpha_prod_t: f64,
    #[serde(flatten)]
    sampler: StepScalars,
    guidance_scale: f64,
    /// The generator after the step (it draws eta and ancestral noise).
    generator: TorchRng,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum StepScalars {
    Ddim {
        prev_timestep: i64,
        alpha_prod_t_prev: f64,
        beta_prod_t: f64,
        std_dev_t: f64,
    },
    Sigma {
        sigma: f64,
        sigma_next: f64,
        sigma_up: f64,
        sigma_down: f64,
    },
    /// Before `Multistep`, whose fields it has too: untagged variants match in order.
    UniPc {
        sigma: f64,
        sigma_next: f64,
        order: u8,
        corrector_order: u8,
    },
    /// `h` is null on a step to sigma 0, where it is infinite.
    Multistep {
        sigma: f64,
        sigma_next: f64,
        order: u8,
        h: Option<f64>,
    },
    Lcm {
        prev_timestep: usize,
        alpha_prod_t_prev: f64,
        c_skip: f64,
        c_out: f64,
    },
    Heun {
        sigma: f64,
        sigma_next: f64,
        first_order: bool,
        dt: f64,
    },
    Lms {
        sigma: f64,
        sigma_next: f64,
        coefficients: Vec<f64>,
    },
    Plms {
        step_from: usize,
        prev_timestep: i64,
        alpha_prod_t_prev: f64,
        mixed: usize,
    },
}

impl SessionFile {
    pub(super) fn of(record: &SessionRecord, image: Option<String>) -> Result<Self> {
        let own_from = record.fork.as_ref().map_or(0, |f| f.at);
        let tokens = |t: &TokenizedPrompt| TokensFile {
            tokens: t.tokens.iter().map(|t| t.text.clone()).collect(),
            kinds: t.tokens.iter().map(|t| t.kind).collect(),
            truncated: t.truncated.clone(),
        };
        let steps = record.history[own_from.min(record.history.len())..]
            .iter()
            .map(|r| {
                let sampler = match &r.denoise.scheduler {
                    SamplerStep::Ddim(s) => StepScalars::Ddim {
                        prev_timestep: s.prev_timestep,
                        alpha_prod_t_prev: s.alpha_prod_t_prev,
                        beta_prod_t: s.beta_prod_t,
                        std_dev_t: s.std_dev_t,
                    },
                    SamplerStep::Euler(s) => StepScalars::Sigma {
                        sigma: s.sigma,
                        sigma_next: s.sigma_next,
                        sigma_up: s.sigma_up,
                        sigma_down: s.sigma_down,
                    },
                    SamplerStep::Lcm(s) => StepScalars::Lcm {
                        prev_timestep: s.prev_timestep,
                        alpha_prod_t_prev: s.alpha_prod_t_prev,
                        c_skip: s.c_skip,
                        c_out: s.c_out,
                    },
                    SamplerStep::Heun(s) => StepScalars::Heun {
                        sigma: s.sigma,
                        sigma_next: s.sigma_next,
                        first_order: s.first_order,
                        dt: s.dt,
                    },
                    SamplerStep::Lms(s) => StepScalars::Lms {
                        sigma: s.sigma,
                        sigma_next: s.sigma_next,
                        coefficients: s.coefficients.clone(),
                    },
                    SamplerStep::Pndm(s) => StepScalars::Plms {
                        step_from: s.step_from,
                        prev_timestep: s.prev_timestep,
                        alpha_prod_t_prev: s.alpha_prod_t_prev,
                        mixed: s.mixed,
                    },
                    SamplerStep::UniPc(s) => StepScalars::UniPc {
                        sigma: s.sigma,
                        sigma_next: s.sigma_next,
                        order: s.order,
                        corrector_order: s.corrector_order,
                    },
                    SamplerStep::Dpm(s) => {
                        let h = s.h.is_finite().then_some(s.h);
                        StepScalars::Multistep { sigma: s.sigma, sigma_next: s.sigma_next, order: s.order, h }
                    }
                };
                StepFile {
                    timestep: r.denoise.scheduler.timestep(),
                    alpha_prod_t: r.denoise.scheduler.alpha_prod_t(),
                    sampler,
                    guidance_scale: r.denoise.guidance_scale,
                    generator: r.rng_after.clone(),
                }
            })
            .collect();
        let fork = match &record.fork {
            Some(f) => Some(ForkFile {
                parent: f.parent.clone(),
                at: f.at,
                earlier: f.earlier.clone(),
                digest: record.digest_at(f.at)?,
            }),
            None => None,
        };
        Ok(Self {
            format: FORMAT,
            sdlab_version: record.sdlab_version.clone(),
            created: record.created.clone(),
            saved: record.saved.clone(),
            model: record.model.clone(),
            runtime: record.runtime.clone(),
            settings: record.settings.clone(),
            scheduler: record.settings.scheduler.as_str().into(),
            scheduler_config: record.scheduler_config.clone(),
            stage: stage_name(record.stage()).into(),
            steps_done: record.history.len(),
            encoding: record
                .encoding
                .as_ref()
                .map(|e| EncodingFile { prompt: tokens(&e.prompt), negative: tokens(&e.negative) }),
            latent: record
                .latent
                .as_ref()
                .map(|l| LatentFile { shape: l.init_latents.dims().to_vec(), generator: l.rng_after.clone() }),
            steps,
            image,
            fork,
        })
    }

    /// Checks that the file agrees with itself, then reads its tensors.
    /// A branch's shared steps come from `parent`, its parent's record.
    pub(super) fn into_record(
        self,
        tensors: &mut TensorReader,
        parent: Option<&SessionRecord>,
    ) -> Result<SessionRecord> {
        let shared = match (&self.fork, parent) {
            (Some(fork), Some(parent)) => self.check_fork(fork, parent)?,
            (Some(fork), None) if fork.at > 0 => {
                bail!("a branch forked at step {}: open it through its session (SESSION/NAME)", fork.at)
            }
            _ => Vec::new(),
        };
        let at = shared.len();
        let num_train = self.scheduler_config.num_train_timesteps;
        if self.scheduler != self.settings.scheduler.as_str() {
            bail!(
                "scheduler: expected {:?} (settings.scheduler), found {:?}",
                self.settings.scheduler.as_str(),
                self.scheduler
            );
        }
        // Sides are checked against the model's VAE and the size limit when a model
        // is put under the run; a replay computes nothing.
        let limits = Limits::without_model(num_train, true);
        self.settings.check(&limits).map_err(|e| anyhow!("{}", e.describe(Origin::SettingsJson)))?;
        if self.steps_done != at + self.steps.len() {
            bail!("steps_done is {} but {} steps are listed after the {at} shared", self.steps_done, self.steps.len());
        }
        let stage = stage_of(self.encoding.is_some(), self.latent.is_some(), self.steps_done, self.image.is_some());
        if self.stage != stage_name(stage) {
            bail!("stage is {:?} but what is saved reaches {:?}", self.stage, stage_name(stage));
        }
        if !self.steps.is_empty() && (self.encoding.is_none() || self.latent.is_none()) {
            bail!("steps are listed without the encoding and latent they start from");
        }
        let sampler = self.settings.sampler(&self.scheduler_config).map_err(|e| anyhow!("scheduler_config: {e:#}"))?;
        if self.steps_done > sampler.calls() {
            bail!(
                "{} steps are listed, the run has {} (settings.steps {}, {})",
                self.steps_done,
                sampler.calls(),
                self.settings.steps,
                self.settings.scheduler
            );
        }
        for (i, (step, t)) in self.steps.iter().zip(sampler.timesteps().into_iter().skip(at)).enumerate() {
            if step.timestep != t {
                bail!("steps[{i}].timestep is {}, the schedule says {t} (step {})", step.timestep, at + i + 1);
            }
        }
        tensors.dtype = self.runtime.dtype()?;

        let encoding = match self.encoding {
            Some(e) => {
                let prompt = tokens_from(e.prompt, tensors.ids("input_ids")?)?;
                let negative = tokens_from(e.negative, tensors.ids("negative_input_ids")?)?;
                if prompt.ids.len() != negative.ids.len() {
                    return Err(TensorError(format!(
                        "input_ids has {} ids, negative_input_ids {}",
                        prompt.ids.len(),
                        negative.ids.len()
                    ))
                    .into());
                }
                let prompt_embeds = tensors.take("prompt_embeds", |dims| {
                    dims.len() == 3 && dims[0] == 2 && dims[1] == prompt.ids.len() && dims[2] > 0
                })?;
                Some(PromptEncoding { prompt, negative, prompt_embeds })
            }
            None => None,
        };
        let latent = match self.latent {
            Some(l) => {
                let (s, shape) = (&self.settings, &l.shape);
                let fits = shape.len() == 4
                    && shape[0] == 1
                    && shape[1] > 0
                    && shape[2] > 0
                    && shape[3] > 0
                    && s.height % shape[2] == 0
                    && s.width % shape[3] == 0
                    && s.height / shape[2] == s.width / shape[3];
                if !fits {
                    bail!("latent.shape {shape:?} is not a latent of a {}x{} image", s.width, s.height);
                }
                let init_latents = tensors.take("init_latents", |dims| dims == shape.as_slice())?;
                let image_latents = match self.settings.img2img {
                    Some(_) => Some(tensors.take("image_latents", |dims| dims == shape.as_slice())?),
                    None => None,
                };
                Some((Latent { init_latents, image_latents, rng_after: l.generator }, shape.clone()))
            }
            None => None,
        };
        let mut history = shared;
        if let Some((_, shape)) = &latent {
            for (index, step) in (at..).zip(self.steps) {
                let mut take = |name: &str| tensors.take(&format!("steps.{index}.{name}"), |d| d == shape.as_slice());
                let noise_pred_uncond = if step.guidance_scale > 1.0 { Some(take("noise_pred_uncond")?) } else { None };
                let denoise = DenoiseStep {
                    guidance_scale: step.guidance_scale,
                    noise_pred_uncond,
                    noise_pred_text: take("noise_pred_text")?,
                    guided_model_output: take("guided_model_output")?,
                    scheduler: sampler_step(index, &step, &sampler, &mut take)?,
                };
                history.push(StepRecord { index, denoise, rng_after: step.generator, taps: None });
            }
        }
        let image = match &self.image {
            Some(_) => {
                tensors.dtype = DType::F32;
                let (w, h) = (self.settings.width, self.settings.height);
                Some(tensors.take("image", |d| d == [1, 3, h, w])?)
            }
            None => None,
        };
        Ok(SessionRecord {
            sdlab_version: self.sdlab_version,
            created: self.created,
            saved: self.saved,
            model: self.model,
            runtime: self.runtime,
            settings: self.settings,
            scheduler_config: self.scheduler_config,
            encoding,
            latent: latent.map(|(l, _)| l),
            history,
            image,
            init_image: None,
            recovered: None,
            fork: self.fork.map(|f| Fork { parent: f.parent, at: f.at, earlier: f.earlier }),
        })
    }

    /// A branch's first `fork.at` steps: its parent's, which must still end where
    /// the branch began and have run with the settings the branch keeps.
    fn check_fork(&self, fork: &ForkFile, parent: &SessionRecord) -> Result<Vec<StepRecord>> {
        if fork.at == 0 {
            // forked before the first step: nothing is shared, the branch holds its whole run
            return Ok(Vec::new());
        }
        let (s, p) = (&self.settings, &parent.settings);
        let kept = [
            ("seed", s.seed == p.seed),
            ("width", s.width == p.width),
            ("height", s.height == p.height),
            ("steps", s.steps == p.steps),
            ("scheduler", s.scheduler == p.scheduler),
            ("img2img", s.img2img == p.img2img),
        ];
        if let Some((field, _)) = kept.iter().find(|(_, same)| !same) {
            bail!(
                "its parent changed after the fork: settings.{field} is not the branch's any more, so the \
                 branch cannot share its first {} steps",
                fork.at
            );
        }
        if self.scheduler_config != parent.scheduler_config || self.runtime != parent.runtime {
            bail!("its parent ran with another scheduler config, device or dtype");
        }
        if parent.history.len() < fork.at {
            bail!(
                "forked at step {}, but its parent has only {} steps now: the parent was rewound after the fork",
                fork.at,
                parent.history.len()
            );
        }
        if parent.digest_at(fork.at)? != fork.digest {
            bail!(
                "its parent changed after the fork: its first {} steps are not the ones the branch was forked from",
                fork.at
            );
        }
        Ok(parent.history[..fork.at].iter().map(StepRecord::share).collect())
    }
}

/// A step's sampler record from its scalars and tensors; the scalars must be
/// the kind the run's sampler writes.
fn sampler_step(
    index: usize,
    step: &StepFile,
    sampler: &Sampler,
    take: &mut dyn FnMut(&str) -> Result<Tensor>,
) -> Result<SamplerStep> {
    let pred_original_sample = take("pred_original_sample")?;
    Ok(match (sampler, &step.sampler) {
        (Sampler::Ddim(_), &StepScalars::Ddim { prev_timestep, alpha_prod_t_prev, beta_prod_t, std_dev_t }) => {
            SamplerStep::Ddim(DdimStep {
                // equal to the schedule's (checked), so a whole number
                timestep: step.timestep as usize,
                prev_timestep,
                alpha_prod_t: step.alpha_prod_t,
                alpha_prod_t_prev,
                beta_prod_t,
                std_dev_t,
                pred_original_sample,
                pred_epsilon: take("pred_epsilon")?,
                prev_sample: take("prev_sample")?,
            })
        }
        (Sampler::Euler(..), &StepScalars::Sigma { sigma, sigma_next, sigma_up, sigma_down }) => {
            SamplerStep::Euler(EulerStep {
                index,
                timestep: step.timestep,
                sigma,
                sigma_next,
                alpha_prod_t: step.alpha_prod_t,
                sigma_up,
                sigma_down,
                pred_original_sample,
                derivative: take("derivative")?,
                prev_sample: take("prev_sample")?,
            })
        }
        (Sampler::Dpm(..), &StepScalars::Multistep { sigma, sigma_next, order, h }) => SamplerStep::Dpm(DpmStep {
            index,
            timestep: step.timestep,
            sigma,
            sigma_next,
            alpha_prod_t: step.alpha_prod_t,
            order,
            h: h.unwrap_or(f64::INFINITY),
            pred_original_sample,
            prev_sample: take("prev_sample")?,
        }),
        (Sampler::UniPc(_), &StepScalars::UniPc { sigma, sigma_next, order, corrector_order }) => {
            SamplerStep::UniPc(UniPcStep {
                index,
                timestep: step.timestep,
                sigma,
                sigma_next,
                alpha_prod_t: step.alpha_prod_t,
                order,
                corrector_order,
                pred_original_sample,
                corrected_sample: take("corrected_sample")?,
                prev_sample: take("prev_sample")?,
            })
        }
        (Sampler::Pndm(_), &StepScalars::Plms { step_from, prev_timestep, alpha_prod_t_prev, mixed }) => {
            SamplerStep::Pndm(PndmStep {
                index,
                // equal to the schedule's (checked), so a whole number
                timestep: step.timestep as usize,
                step_from,
                prev_timestep,
                alpha_prod_t: step.alpha_prod_t,
                alpha_prod_t_prev,
                mixed,
                model_output: take("model_output")?,
                sample_in: if index == 0 { Some(take("sample_in")?) } else { None },
                pred_original_sample,
                prev_sample: take("prev_sample")?,
            })
        }
        (Sampler::Lms(_), StepScalars::Lms { sigma, sigma_next, coefficients }) => SamplerStep::Lms(LmsStep {
            index,
            timestep: step.timestep,
            sigma: *sigma,
            sigma_next: *sigma_next,
            alpha_prod_t: step.alpha_prod_t,
            coefficients: coefficients.clone(),
            pred_original_sample,
            derivative: take("derivative")?,
            prev_sample: take("prev_sample")?,
        }),
        (Sampler::Heun(_), &StepScalars::Heun { sigma, sigma_next, first_order, dt }) => SamplerStep::Heun(HeunStep {
            index,
            timestep: step.timestep,
            sigma,
            sigma_next,
            alpha_prod_t: step.alpha_prod_t,
            first_order,
            derivative: take("derivative")?,
            dt,
            sample_in: if first_order { Some(take("sample_in")?) } else { None },
            pred_original_sample,
            prev_sample: take("prev_sample")?,
        }),
        (Sampler::Lcm(_), &StepScalars::Lcm { prev_timestep, alpha_prod_t_prev, c_skip, c_out }) => {
            SamplerStep::Lcm(LcmStep {
                index,
                // equal to the schedule's (checked), so a whole number
                timestep: step.timestep as usize,
                prev_timestep,
                alpha_prod_t: step.alpha_prod_t,
                alpha_prod_t_prev,
                c_skip,
                c_out,
                pred_original_sample,
                prev_sample: take("prev_sample")?,
            })
        }
        (_, StepScalars::Lcm { .. }) => {
            bail!("steps[{index}] holds LCM's values, the run's sampler is {}", sampler.name())
        }
        (_, StepScalars::Heun { .. }) => {
            bail!("steps[{index}] holds Heun's values, the run's sampler is {}", sampler.name())
        }
        (_, StepScalars::Lms { .. }) => {
            bail!("steps[{index}] holds LMS's values, the run's sampler is {}", sampler.name())
        }
        (_, StepScalars::Plms { .. }) => {
            bail!("steps[{index}] holds PNDM's values, the run's sampler is {}", sampler.name())
        }
        (_, StepScalars::Ddim { .. }) => {
            bail!("steps[{index}] holds DDIM's values, the run's sampler is {}", sampler.name())
        }
        (_, StepScalars::Sigma { .. }) => {
            bail!("steps[{index}] holds Euler's sigmas, the run's sampler is {}", sampler.name())
        }
        (_, StepScalars::UniPc { .. }) => {
            bail!("steps[{index}] holds UniPC's values, the run's sampler is {}", sampler.name())
        }
        (_, StepScalars::Multistep { .. }) => {
            bail!("steps[{index}] holds a multistep solver's values, the run's sampler is {}", sampler.name())
        }
    })
}

fn tokens_from(file: TokensFile, ids: Vec<u32>) -> Result<TokenizedPrompt> {
    if file.tokens.len() != ids.len() || file.kinds.len() != ids.len() {
        bail!("encoding: {} ids but {} tokens and {} kinds are listed", ids.len(), file.tokens.len(), file.kinds.len());
    }
    let tokens =
        ids.iter().zip(file.tokens).zip(file.kinds).map(|((&id, text), kind)| Token { id, text, kind }).collect();
    Ok(TokenizedPrompt { ids, tokens, truncated: file.truncated })
}

/// A problem with `tensors.safetensors` rather than `session.json`, so the error
/// names the right file.
#[derive(Debug)]
pub(super) struct TensorError(pub(super) String);

impl std::fmt::Display for TensorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TensorError {}

pub(super) struct TensorReader {
    tensors: HashMap<String, Tensor>,
    /// The dtype the next float tensors must have.
    dtype: DType,
}

impl TensorReader {
    pub(super) fn new(tensors: HashMap<String, Tensor>) -> Self {
        Self { tensors, dtype: DType::F32 }
    }

    fn take(&mut self, name: &str, shape_ok: impl Fn(&[usize]) -> bool) -> Result<Tensor> {
        let Some(t) = self.tensors.remove(name) else {
            return Err(TensorError(format!("missing tensor {name} (session.json says the run reached it)")).into());
        };
        if t.dtype() != self.dtype {
            return Err(TensorError(format!(
                "{name}: expected dtype {}, found {}",
                self.dtype.as_str(),
                t.dtype().as_str()
            ))
            .into());
        }
        if !shape_ok(t.dims()) {
            return Err(TensorError(format!("{name}: unexpected shape {:?}", t.dims())).into());
        }
        Ok(t)
    }

    fn ids(&mut self, name: &str) -> Result<Vec<u32>> {
        let dtype = std::mem::replace(&mut self.dtype, DType::I64);
        let t = self.take(name, |d| d.len() == 1 && d[0] > 0);
        self.dtype = dtype;
        t?.to_vec1::<i64>()?
            .into_iter()
            .map(|id| u32::try_from(id).map_err(|_| TensorError(format!("{name}: token id {id} out of range")).into()))
            .collect()
    }
}

/// Checks `format` before anything else, so that a file from a newer sdlab gets
/// "upgrade" rather than a confusing missing-field error.
pub(super) fn check_format(value: &Value) -> Result<()> {
    let Some(format) = value.get("format") else {
        bail!("no \"format\" field: not an sdlab session");
    };
    match format.as_u64() {
        // format 1 is format 2 without branches: read as it is, written as 2
        Some(n) if (1..=u64::from(FORMAT)).contains(&n) => Ok(()),
        Some(n) if n > u64::from(FORMAT) => bail!(
            "format {n} was written by a newer sdlab; this one ({}) reads format {FORMAT}: upgrade sdlab",
            env!("CARGO_PKG_VERSION")
        ),
        _ => bail!("unknown format {format}: expected 1 to {FORMAT}"),
    }
}

/// Deserializes with the failing field's path in the message (`steps[3].generator`).
pub(super) fn from_value<T: serde::de::DeserializeOwned>(value: Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let field = err.path().to_string();
        if field == "." {
            anyhow!("{}", err.into_inner())
        } else {
            anyhow!("field `{field}`: {}", err.into_inner())
        }
    })
}

pub(super) fn parse_session_json(bytes: &[u8]) -> Result<SessionFile> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| anyhow!("not valid JSON ({e})"))?;
    check_format(&value)?;
    from_value(value)
}

fn whole_or_float<S: serde::Serializer>(t: &f64, s: S) -> Result<S::Ok, S::Error> {
    if t.fract() == 0.0 && t.abs() < 1e15 {
        s.serialize_i64(*t as i64)
    } else {
        s.serialize_f64(*t)
    }
}

/// The config as read (see [`SchedulerConfig::to_json`]), so another sampler built
/// from a saved session sees the keys the model's file had.
pub(super) fn write_scheduler_config<S: serde::Serializer>(config: &SchedulerConfig, s: S) -> Result<S::Ok, S::Error> {
    config.to_json().serialize(s)
}

pub(super) fn scheduler_config<'de, D: Deserializer<'de>>(de: D) -> Result<SchedulerConfig, D::Error> {
    let value = Value::deserialize(de)?;
    SchedulerConfig::from_json(&value).map_err(|e| serde::de::Error::custom(format!("{e:#}")))
}

/// Pretty JSON, but an array of plain values (a generator's 624 words, a token
/// list) stays on one line instead of one line per number.
pub(super) fn json_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let pretty = serde_json::to_string_pretty(value)?;
    let lines: Vec<&str> = pretty.lines().collect();
    let mut out = String::with_capacity(pretty.len());
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.ends_with('[') {
            // Pretty JSON opens every nested array or object on a line ending in `[` or `{`
            // (a string value cannot: its line ends in `"` or `",`).
            let close = lines[i + 1..].iter().position(|l| {
                let t = l.trim_start();
                t.starts_with(']') || l.ends_with('[') || l.ends_with('{')
            });
            if let Some(n) = close.filter(|&n| lines[i + 1 + n].trim_start().starts_with(']')) {
                let items: Vec<&str> = lines[i + 1..i + 1 + n].iter().map(|l| l.trim()).collect();
                out.push_str(line);
                out.push_str(&items.join(" "));
                out.push_str(lines[i + 1 + n].trim_start());
                out.push('\n');
                i += n + 2;
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
        i += 1;
    }
    Ok(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_arrays_stay_on_one_line() {
        let value = serde_json::json!({"a": [1, 2, 3], "b": [{"c": ["x,", "y["]}], "d": [], "e": "[", "f": [[1], [2]]});
        let text = String::from_utf8(json_bytes(&value).unwrap()).unwrap();
        assert!(text.contains("\"a\": [1, 2, 3]"), "{text}");
        assert!(text.contains("\"c\": [\"x,\", \"y[\"]"), "{text}");
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn floats_survive_json_exactly() {
        for x in [0.1f64, 1.0 / 3.0, 0.999_999_999_999_999_9, 5e-324, 0.004_660_799_913_108_349, 7.5] {
            let back: f64 = serde_json::from_str(&serde_json::to_string(&x).unwrap()).unwrap();
            assert_eq!(back.to_bits(), x.to_bits());
        }
    }
}
