//! Observing a UNet pass: the path of the tensor through the blocks, and where
//! each image position looks in the prompt (cross-attention).
//!
//! The observer is an optional argument of the forward pass; with `None` nothing
//! below runs, so an unobserved pass is the same computation, bit for bit.

use anyhow::Result;
use candle_core::{DType, Tensor};

/// What a UNet forward pass reports while it runs.
pub trait UNetObserver {
    /// The output of each top-level part, in order: `sample` (the input),
    /// `conv_in`, `down_blocks.N`, `mid_block`, `up_blocks.N`, `conv_out`.
    fn block(&mut self, name: &str, output: &Tensor) -> Result<()>;

    /// Each cross-attention layer's probabilities from every latent position of a
    /// `size = (height, width)` grid to every text token, averaged over heads:
    /// `(batch, height*width, tokens)`.
    fn cross_attention(&mut self, layer: &str, size: (usize, usize), probs: &Tensor) -> Result<()>;
}

/// Lends the observer (if any) to one call. An `Option<&mut dyn _>` cannot be
/// reborrowed with `as_deref_mut` more than once: the trait object's lifetime is
/// tied to the reference's; going through `&mut **o` lets it shorten.
pub fn reborrow<'b>(obs: &'b mut Option<&mut dyn UNetObserver>) -> Option<&'b mut dyn UNetObserver> {
    match obs {
        Some(o) => Some(&mut **o),
        None => None,
    }
}

/// Summary statistics of a tensor, computed in float32.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TensorStats {
    pub mean: f32,
    pub std: f32,
    pub min: f32,
    pub max: f32,
}

impl TensorStats {
    pub fn of(x: &Tensor) -> Result<Self> {
        let x = x.to_dtype(DType::F32)?.flatten_all()?;
        let mean = x.mean_all()?.to_scalar::<f32>()?;
        let var = x.broadcast_sub(&x.mean_all()?)?.sqr()?.mean_all()?.to_scalar::<f32>()?;
        Ok(Self { mean, std: var.sqrt(), min: x.min(0)?.to_scalar()?, max: x.max(0)?.to_scalar()? })
    }
}

/// One row of the talk's table: a block, the shape of its output and its statistics.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BlockTap {
    pub name: String,
    pub shape: Vec<usize>,
    pub stats: TensorStats,
}

/// An observer that keeps what the lab shows: every block's shape and statistics,
/// and the cross-attention maps of one batch entry (the prompt's, the last one),
/// brought to the latent's resolution and averaged over layers (the aggregation
/// of DAAM, "diffusion attentive attribution maps", Tang et al. 2022).
pub struct TapRecorder {
    pub blocks: Vec<BlockTap>,
    /// The latent grid `(height, width)` the maps are brought to.
    latent_size: (usize, usize),
    /// Sum over layers of `(tokens, height, width)` maps, and how many were added.
    attention_sum: Option<Tensor>,
    pub attention_layers: Vec<(String, (usize, usize))>,
}

impl TapRecorder {
    pub fn new(latent_size: (usize, usize)) -> Self {
        Self { blocks: Vec::new(), latent_size, attention_sum: None, attention_layers: Vec::new() }
    }

    /// The averaged map, `(tokens, height, width)`, or `None` if the UNet has no
    /// cross-attention.
    pub fn attention_map(&self) -> Result<Option<Tensor>> {
        match &self.attention_sum {
            Some(sum) => Ok(Some((sum / self.attention_layers.len() as f64)?)),
            None => Ok(None),
        }
    }

    /// What was recorded, as plain data for the session and the lab.
    pub fn finish(self) -> Result<StepTaps> {
        let attention = match self.attention_map()? {
            Some(map) => {
                let (tokens, height, width) = map.dims3()?;
                let data = map.flatten_all()?.to_vec1()?;
                Some(AttentionMaps { tokens, height, width, layers: self.attention_layers, data })
            }
            None => None,
        };
        Ok(StepTaps { blocks: self.blocks, attention })
    }
}

/// One UNet pass, observed: the block table and the token attention maps.
#[derive(Clone, Debug, PartialEq)]
pub struct StepTaps {
    pub blocks: Vec<BlockTap>,
    pub attention: Option<AttentionMaps>,
}

/// Per text token, where the image attends to it: `(tokens, height, width)` values,
/// each the mean over the cross-attention layers (listed with their grid sizes).
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionMaps {
    pub tokens: usize,
    pub height: usize,
    pub width: usize,
    pub layers: Vec<(String, (usize, usize))>,
    pub data: Vec<f32>,
}

impl AttentionMaps {
    /// The `height x width` map of one token, row-major.
    pub fn token(&self, index: usize) -> Option<&[f32]> {
        let size = self.height * self.width;
        self.data.get(index * size..(index + 1) * size)
    }
}

impl UNetObserver for TapRecorder {
    fn block(&mut self, name: &str, output: &Tensor) -> Result<()> {
        self.blocks.push(BlockTap {
            name: name.to_string(),
            shape: output.dims().to_vec(),
            stats: TensorStats::of(output)?,
        });
        Ok(())
    }

    fn cross_attention(&mut self, layer: &str, (h, w): (usize, usize), probs: &Tensor) -> Result<()> {
        let (batch, _, tokens) = probs.dims3()?;
        let map = probs.get(batch - 1)?.t()?.reshape((1, tokens, h, w))?;
        let (lh, lw) = self.latent_size;
        let map = map.upsample_nearest2d(lh, lw)?.squeeze(0)?;
        self.attention_sum = Some(match self.attention_sum.take() {
            Some(sum) => (sum + map)?,
            None => map,
        });
        self.attention_layers.push((layer.to_string(), (h, w)));
        Ok(())
    }
}
