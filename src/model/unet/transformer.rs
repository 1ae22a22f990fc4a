//! diffusers' `Transformer2DModel` and `BasicTransformerBlock` (models/transformers/
//! transformer_2d.py, models/attention.py): where the text enters the UNet.

use anyhow::Result;
use candle_core::Tensor;
use candle_nn::{LayerNorm, Linear, Module, VarBuilder};

use super::taps::{reborrow, UNetObserver};
use crate::model::nn::attention::{Attention, AttentionConfig};
use crate::model::nn::layout::swap_last_two;
use crate::model::nn::{geglu, Conv2d, GroupNorm};

/// Self-attention, cross-attention to the text, then a GEGLU feed-forward; each
/// after a LayerNorm and added to its input.
struct BasicTransformerBlock {
    /// `down_blocks.1.attentions.0.transformer_blocks.0.attn2`: the name the taps report.
    cross_attention_name: String,
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
}

impl BasicTransformerBlock {
    fn new(vb: VarBuilder, dim: usize, heads: usize, context_dim: usize, upcast: bool) -> Result<Self> {
        let attention = |context_dim| AttentionConfig {
            query_dim: dim,
            context_dim,
            heads,
            head_dim: dim / heads,
            qkv_bias: false,
            upcast,
        };
        Ok(Self {
            cross_attention_name: format!("{}.attn2", vb.prefix()),
            norm1: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm1"))?,
            attn1: Attention::new(vb.pp("attn1"), &attention(dim))?,
            norm2: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm2"))?,
            attn2: Attention::new(vb.pp("attn2"), &attention(context_dim))?,
            norm3: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm3"))?,
            ff_in: candle_nn::linear(dim, dim * 8, vb.pp("ff.net.0.proj"))?,
            ff_out: candle_nn::linear(dim * 4, dim, vb.pp("ff.net.2"))?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        context: &Tensor,
        size: (usize, usize),
        obs: Option<&mut dyn UNetObserver>,
    ) -> Result<Tensor> {
        let x = (self.attn1.forward(&self.norm1.forward(x)?, None, None)? + x)?;
        let cross = match obs {
            Some(obs) => {
                let name = &self.cross_attention_name;
                let mut tap = |probs: &Tensor| obs.cross_attention(name, size, probs);
                self.attn2.forward(&self.norm2.forward(&x)?, Some(context), Some(&mut tap))?
            }
            None => self.attn2.forward(&self.norm2.forward(&x)?, Some(context), None)?,
        };
        let x = (cross + x)?;
        let ff = self.ff_out.forward(&geglu(&self.ff_in.forward(&self.norm3.forward(&x)?)?)?)?;
        Ok((ff + x)?)
    }
}

/// The projection in and out of the transformer's token layout: a 1x1 convolution
/// (SD 1.x) or a linear layer (`use_linear_projection`, SD 2.x).
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

pub struct TransformerConfig {
    pub channels: usize,
    pub heads: usize,
    pub layers: usize,
    pub context_dim: usize,
    pub groups: usize,
    pub use_linear_projection: bool,
    pub upcast_attention: bool,
}

/// GroupNorm -> proj_in -> transformer blocks over the `h*w` tokens -> proj_out,
/// added to the input.
pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

impl Transformer2DModel {
    pub fn new(vb: VarBuilder, c: &TransformerConfig) -> Result<Self> {
        let ch = c.channels;
        let projection = |name: &str| -> Result<Projection> {
            Ok(if c.use_linear_projection {
                Projection::Linear(candle_nn::linear(ch, ch, vb.pp(name))?)
            } else {
                Projection::Conv(Conv2d::new(vb.pp(name), ch, ch, 1, 1, 0)?)
            })
        };
        let blocks = (0..c.layers)
            .map(|i| {
                BasicTransformerBlock::new(
                    vb.pp(format!("transformer_blocks.{i}")),
                    ch,
                    c.heads,
                    c.context_dim,
                    c.upcast_attention,
                )
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            norm: GroupNorm::new(vb.pp("norm"), c.groups, ch, 1e-6)?,
            proj_in: projection("proj_in")?,
            blocks,
            proj_out: projection("proj_out")?,
        })
    }

    pub fn forward(&self, x: &Tensor, context: &Tensor, mut obs: Option<&mut dyn UNetObserver>) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let to_tokens = |t: Tensor| -> Result<Tensor> { swap_last_two(&t.reshape((b, c, h * w))?) };
        let normed = self.norm.forward(x, false)?;
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(conv.forward(&normed)?)?,
            Projection::Linear(linear) => linear.forward(&to_tokens(normed)?)?,
        };
        for block in &self.blocks {
            tokens = block.forward(&tokens, context, (h, w), reborrow(&mut obs))?;
        }
        let to_image = |t: Tensor| -> Result<Tensor> { Ok(swap_last_two(&t)?.reshape((b, c, h, w))?) };
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(&to_image(tokens)?)?,
            Projection::Linear(linear) => to_image(linear.forward(&tokens)?)?,
        };
        Ok((out + x)?)
    }
}
