//! `--trace`: every intermediate of a run in one safetensors file, under the names,
//! shapes and dtypes of the fixtures' `reference.safetensors`, so that a run can be
//! compared with diffusers or studied in Python.

use std::path::Path;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};

use super::Session;
use crate::fsutil::write_atomic;
use crate::scheduler::Sampler;

/// The trace of what the session has computed so far; stages not reached yet are
/// simply absent, and per-step tensors have one row per step taken.
pub fn trace_tensors(session: &Session) -> Result<Vec<(&'static str, Tensor)>> {
    let cpu = |t: &Tensor| -> Result<Tensor> { Ok(t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?) };
    let ids = |ids: &[u32]| -> Result<Tensor> {
        let ids: Vec<i64> = ids.iter().map(|&id| i64::from(id)).collect();
        Ok(Tensor::new(ids, &Device::Cpu)?)
    };
    let mut out = Vec::new();
    if let Some(enc) = session.encoding() {
        out.push(("input_ids", ids(&enc.prompt.ids)?));
        out.push(("negative_input_ids", ids(&enc.negative.ids)?));
        out.push(("prompt_embeds", cpu(&enc.prompt_embeds)?));
    }
    if let Some(image_latents) = session.image_latents() {
        out.push(("image_latents", cpu(image_latents)?));
    }
    if let Some(init) = session.init_latents() {
        out.push(("init_latents", cpu(init)?));
    }
    let history = session.history();
    if !history.is_empty() {
        let timesteps: Vec<f64> = history.iter().map(|r| r.denoise.scheduler.timestep()).collect();
        let alphas: Vec<f64> = history.iter().map(|r| r.denoise.scheduler.alpha_prod_t()).collect();
        // DDIM's timesteps are whole numbers, written as integers as diffusers keeps them
        match session.sampler() {
            Sampler::Ddim(_) => {
                let whole: Vec<i64> = timesteps.iter().map(|&t| t as i64).collect();
                out.push(("timesteps", Tensor::new(whole, &Device::Cpu)?));
            }
            _ => out.push(("timesteps", Tensor::new(timesteps, &Device::Cpu)?)),
        }
        // the whole schedule's, as diffusers' scheduler holds them (image to image runs its tail)
        let settings = session.settings();
        let schedule = Sampler::new(settings.scheduler, &session.model().scheduler_config, settings.steps)?;
        if let Some(sigmas) = schedule.sigmas() {
            out.push(("sigmas", Tensor::new(sigmas, &Device::Cpu)?));
        }
        out.push(("alpha_prod_t", Tensor::new(alphas, &Device::Cpu)?));
        let stack = |pick: fn(&super::StepRecord) -> &Tensor| -> Result<Tensor> {
            let rows = history.iter().map(|r| cpu(&pick(r).squeeze(0)?)).collect::<Result<Vec<_>>>()?;
            Ok(Tensor::stack(&rows, 0)?)
        };
        out.push(("guided_model_output", stack(|r| &r.denoise.guided_model_output)?));
        out.push(("pred_original_sample", stack(|r| r.denoise.scheduler.pred_original_sample())?));
        out.push(("latents", stack(|r| r.denoise.scheduler.prev_sample())?));
    }
    if let Some(image) = session.image() {
        out.push(("image", cpu(&image.squeeze(0)?.permute((1, 2, 0))?.contiguous()?)?));
    }
    Ok(out)
}

/// Writes [`trace_tensors`] to `path` atomically.
pub fn write_trace(session: &Session, path: &Path) -> Result<()> {
    let tensors = trace_tensors(session)?;
    let bytes = safetensors::serialize(tensors.iter().map(|(name, t)| (*name, t)), None)?;
    write_atomic(path, &bytes)
}
