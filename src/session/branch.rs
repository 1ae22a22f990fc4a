//! Branches: a run forked from another after K steps, going on with another
//! prompt, negative prompt, guidance scale or eta. The generator runs on unbroken,
//! so a branch that changes nothing is its parent, bit for bit; what diffusers
//! computes when `callback_on_step_end` swaps the guidance scale or the prompt
//! embeddings after step K.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};

use super::{Latent, Session, Settings, StepRecord};
use crate::rng::torch::TorchRng;
use crate::stages;

/// What a branch changes; `None` keeps the parent's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Change {
    pub prompt: Option<String>,
    pub negative_prompt: Option<String>,
    pub guidance_scale: Option<f64>,
    pub eta: Option<f64>,
    /// Another seed: new noise, so only a branch forked at step 0 can take it.
    pub seed: Option<u64>,
}

impl Change {
    fn apply(&self, settings: &Settings) -> Settings {
        let mut s = settings.clone();
        if let Some(p) = &self.prompt {
            s.prompt = p.clone();
        }
        if let Some(n) = &self.negative_prompt {
            s.negative_prompt = n.clone();
        }
        if let Some(g) = self.guidance_scale {
            s.guidance_scale = g;
        }
        if let Some(e) = self.eta {
            s.eta = e;
        }
        if let Some(seed) = self.seed {
            s.seed = seed;
        }
        s
    }
}

/// The prompts and eta the steps before `until` (and after the previous
/// segment's) were taken with. Guidance is kept per step already.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub until: usize,
    pub prompt: String,
    pub negative_prompt: String,
    pub eta: f64,
}

/// Where a branch leaves its parent.
#[derive(Clone, Debug, PartialEq)]
pub struct Fork {
    /// The parent branch's name; `None` for the session's main run.
    pub parent: Option<String>,
    /// Steps taken before the fork: the parent's; the branch's own after.
    pub at: usize,
    /// What the steps before `at` ran with, oldest first (see [`Segment`]).
    pub earlier: Vec<Segment>,
}

impl Fork {
    /// Rewound to `steps`: the fork moves back with it, and the segments past it go.
    fn rewind(&mut self, steps: usize) {
        if steps >= self.at {
            return;
        }
        self.at = steps;
        let mut start = 0;
        self.earlier.retain_mut(|s| {
            let keep = start < steps;
            start = s.until;
            s.until = s.until.min(steps);
            keep
        });
    }
}

impl Session {
    /// Where this run leaves its parent, when it is a branch.
    pub fn fork_point(&self) -> Option<&Fork> {
        self.fork.as_ref()
    }

    /// A branch of this run after its first `at` steps, going on with `change`:
    /// it shares those steps (and the model) and continues the generator from them.
    /// `parent` names this run in the session's tree (`None`: the main run).
    pub fn fork(&self, at: usize, parent: Option<String>, change: &Change) -> Result<Session> {
        let (Some(encoding), Some(latent)) = (&self.encoding, &self.latent) else {
            bail!("a branch starts from the run's prompt_embeds and latent: run encode_prompt and get_latent first");
        };
        if at > self.history.len() {
            bail!(
                "--at {at}: the run has taken {} of its {} steps; fork at one of 0..={0}",
                self.history.len(),
                self.calls()
            );
        }
        let settings = change.apply(&self.settings);
        settings.check(&super::Limits::of_model(&self.model, self.max_side))?;
        let new_noise = settings.seed != self.settings.seed;
        if new_noise && at > 0 {
            bail!(
                "--seed {}: a branch forked after step {at} goes on from its parent's noise; another seed forks at 0",
                settings.seed
            );
        }
        let encoding = if (&settings.prompt, &settings.negative_prompt)
            == (&self.settings.prompt, &self.settings.negative_prompt)
        {
            encoding.clone()
        } else {
            let m = &self.model;
            let encoding = stages::encode_prompt(
                &m.tokenizer,
                &*m.text_encoder.get()?,
                &settings.prompt,
                &settings.negative_prompt,
                m.device(),
            )?;
            m.text_encoder.release();
            encoding
        };
        let mut earlier = self.fork.as_ref().map(|f| f.earlier.clone()).unwrap_or_default();
        earlier.push(Segment {
            until: self.history.len(),
            prompt: self.settings.prompt.clone(),
            negative_prompt: self.settings.negative_prompt.clone(),
            eta: self.settings.eta,
        });
        let mut fork = Fork { parent, at: usize::MAX, earlier };
        fork.rewind(at);
        let mut branch = Session {
            model: self.model.clone(),
            settings,
            sampler: self.sampler.clone(),
            encoding: Some(encoding),
            latent: Some(latent.clone()),
            history: self.history[..at].iter().map(StepRecord::share).collect(),
            image: None,
            init_image: self.init_image.clone(),
            created: None,
            record_taps: self.record_taps,
            max_side: self.max_side,
            fork: Some(fork),
        };
        if new_noise {
            branch.get_latent()?;
        }
        Ok(branch)
    }

    /// The model, shared with the runs of the same tree.
    pub fn shared_model(&self) -> std::sync::Arc<crate::model::StableDiffusion> {
        self.model.clone()
    }

    /// [`fork_digest`] of the state after the first `at` steps taken.
    pub fn digest_at(&self, at: usize) -> Result<String> {
        state_digest(self.latent.as_ref(), &self.history, at)
    }

    /// The steps before which the run may not rewind without moving its fork.
    pub(super) fn fork_at(&self) -> usize {
        self.fork.as_ref().map_or(0, |f| f.at)
    }

    /// Rewinding a branch into its shared steps moves the fork back with it.
    pub(super) fn rewind_fork(&mut self, steps: usize) {
        if let Some(fork) = &mut self.fork {
            fork.rewind(steps);
        }
    }

    /// Another seed, size, sampler, step count or picture: nothing is shared with
    /// the parent any more, the branch starts at step 0.
    pub(super) fn unshare(&mut self) {
        if let Some(fork) = &mut self.fork {
            fork.rewind(0);
        }
    }
}

/// [`fork_digest`] of a run (live or saved) after its first `at` steps.
pub(super) fn state_digest(latent: Option<&Latent>, history: &[StepRecord], at: usize) -> Result<String> {
    let Some(latent) = latent else { bail!("no latent to fork from: run get_latent first") };
    match at.checked_sub(1) {
        None => fork_digest(0, &latent.init_latents, &latent.rng_after),
        Some(i) => {
            let Some(r) = history.get(i) else { bail!("the run has taken {} steps, not {at}", history.len()) };
            fork_digest(at, r.denoise.scheduler.prev_sample(), &r.rng_after)
        }
    }
}

/// What a branch's first `at` steps end in, as a sha256: the latent there (the
/// initial one when `at` is 0) bit for bit and the generator's state. A branch
/// keeps it to find out that its parent was changed after it was forked.
pub fn fork_digest(at: usize, latent: &Tensor, rng: &TorchRng) -> Result<String> {
    let mut hasher = Sha256::new();
    hasher.update((at as u64).to_le_bytes());
    hasher.update(latent.dtype().as_str());
    for v in latent.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()? {
        hasher.update(v.to_bits().to_le_bytes());
    }
    hasher.update(serde_json::to_vec(rng)?);
    Ok(format!("{:x}", hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(until: usize, prompt: &str) -> Segment {
        Segment { until, prompt: prompt.into(), negative_prompt: String::new(), eta: 0.0 }
    }

    #[test]
    fn rewinding_a_fork_drops_and_cuts_its_segments() {
        let fork = Fork { parent: None, at: 6, earlier: vec![seg(2, "a"), seg(6, "b")] };
        let mut f = fork.clone();
        f.rewind(7);
        assert_eq!(f, fork, "past the fork, nothing moves");
        f.rewind(4);
        assert_eq!((f.at, f.earlier.clone()), (4, vec![seg(2, "a"), seg(4, "b")]));
        f.rewind(2);
        assert_eq!((f.at, f.earlier.clone()), (2, vec![seg(2, "a")]));
        f.rewind(0);
        assert_eq!((f.at, f.earlier), (0, vec![]));
    }
}
