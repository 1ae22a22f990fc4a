//! The text encoder, kept only while it is needed where memory is short.
//!
//! It runs once per prompt, yet on the CPU its float32 weights are a quarter of
//! the pipeline's memory (1.4 GB of SD 2's 5.2 GB). There they are dropped once
//! a prompt is encoded and built again from the weight file (from the page
//! cache, LoRAs fused in again) for the next prompt. On a GPU they stay.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use candle_core::{DType, Device};

use super::clip::{ClipTextConfig, ClipTextTransformer};
use super::file::ModelFile;
use super::lora::LoraSet;
use super::single_file::names::UNetLayout;
use super::single_file::{self, Checkpoint, Component};
use super::weights;

/// Where the text encoder's weights are read from.
pub enum TextWeights {
    /// diffusers' `text_encoder/model.safetensors` (or the built-in bytes).
    File(ModelFile),
    /// The text encoder's tensors of the single-file checkpoint at `path`.
    SingleFile { path: PathBuf, layout: UNetLayout, vae_levels: usize },
}

/// Everything needed to build the text encoder again.
pub struct Recipe {
    pub weights: TextWeights,
    pub config: ClipTextConfig,
    pub loras: Arc<LoraSet>,
    pub dtype: DType,
    pub device: Device,
}

impl Recipe {
    /// Builds it; a single file is read through `checkpoint` (where the other models'
    /// tensors are counted as used), or opened again when none is given.
    fn build(&self, checkpoint: Option<&Checkpoint>) -> Result<ClipTextTransformer> {
        let (backend, what): (Box<dyn candle_nn::var_builder::SimpleBackend>, String) = match &self.weights {
            TextWeights::File(file) => {
                (weights::file_backend(file, self.dtype, &self.device)?, file.display().to_string())
            }
            TextWeights::SingleFile { path, layout, vae_levels } => {
                let reopened;
                let checkpoint = match checkpoint {
                    Some(checkpoint) => checkpoint,
                    None => {
                        reopened = Checkpoint::open(path)?;
                        &reopened
                    }
                };
                (
                    Box::new(checkpoint.component(Component::TextEncoder, layout, *vae_levels)),
                    single_file::describe(path, Component::TextEncoder),
                )
            }
        };
        weights::build(backend, Some((&self.loras, Component::TextEncoder)), &what, self.dtype, &self.device, |vb| {
            Ok(ClipTextTransformer::new(vb, &self.config)?)
        })
    }
}

pub struct TextEncoder {
    model: Mutex<Option<Arc<ClipTextTransformer>>>,
    recipe: Recipe,
}

impl TextEncoder {
    /// Builds it now, through the checkpoint already open for the other models.
    pub fn load(recipe: Recipe, checkpoint: Option<&Checkpoint>) -> Result<Self> {
        let model = recipe.build(checkpoint)?;
        Ok(Self { model: Mutex::new(Some(Arc::new(model))), recipe })
    }

    /// The model, built again if it was released.
    pub fn get(&self) -> Result<Arc<ClipTextTransformer>> {
        let mut slot = self.model.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(model) = slot.as_ref() {
            return Ok(model.clone());
        }
        let model = Arc::new(self.recipe.build(None)?);
        *slot = Some(model.clone());
        Ok(model)
    }

    /// Drops the weights until the next `get`, on the CPU; a no-op on a GPU.
    pub fn release(&self) {
        if self.recipe.device.is_cpu() {
            *self.model.lock().unwrap_or_else(|e| e.into_inner()) = None;
            // Weights under glibc's mmap threshold (32 MB) were freed into its heap,
            // which keeps them from the system until trimmed (0.8 GB of SD 2's).
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only returns free heap memory to the system.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }

    /// Whether the weights are in memory now.
    pub fn is_resident(&self) -> bool {
        self.model.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }
}
