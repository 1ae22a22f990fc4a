//! sdlab's own `UNet2DConditionModel` (diffusers' models/unets/unet_2d_condition.py),
//! built from `unet/config.json` and loaded by diffusers' tensor names, with taps
//! that show the talk's "is the UNet really U-shaped?" table as it runs.
//!
//! The parts live one per file: `embeddings` (timestep), `transformer`
//! (attention to the text), `blocks` (down, mid, up); the ResNet blocks and the
//! attention itself are shared with the VAE in `model::nn`.

pub mod blocks;
pub mod config;
pub mod embeddings;
pub mod taps;
pub mod transformer;

use anyhow::Result;
use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::model::nn::{Conv2d, GroupNorm};
use blocks::{BlockContext, BlockSpec, DownBlock, MidBlock, UpBlock};
pub use config::{PerBlock, UNetConfig};
use embeddings::TimestepEmbedding;
use taps::reborrow;
pub use taps::{AttentionMaps, BlockTap, StepTaps, TapRecorder, TensorStats, UNetObserver};
use transformer::TransformerConfig;

pub struct UNet2DConditionModel {
    config: UNetConfig,
    time_embedding: TimestepEmbedding,
    conv_in: Conv2d,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<MidBlock>,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet2DConditionModel {
    pub fn new(vb: VarBuilder, config: &UNetConfig) -> Result<Self> {
        config.check()?;
        let channels = &config.block_out_channels;
        let n = channels.len();
        let heads = config.heads_per_block()?;
        let depth = config.transformer_layers_per_block.for_blocks(n, "transformer_layers_per_block")?;
        let temb_channels = channels[0] * 4;
        let transformer = |channels, heads, layers| TransformerConfig {
            channels,
            heads,
            layers,
            context_dim: config.cross_attention_dim,
            groups: config.norm_num_groups,
            use_linear_projection: config.use_linear_projection,
            upcast_attention: config.upcast_attention,
        };
        let ctx = BlockContext {
            temb_channels,
            groups: config.norm_num_groups,
            eps: config.norm_eps,
            transformer: &transformer,
        };

        let mut down_blocks = Vec::with_capacity(n);
        for (i, kind) in config.down_block_types.iter().enumerate() {
            let spec = BlockSpec {
                in_channels: if i == 0 { channels[0] } else { channels[i - 1] },
                out_channels: channels[i],
                layers: config.layers_per_block,
                attention: (kind == "CrossAttnDownBlock2D").then_some((heads[i], depth[i])),
                resample: (i + 1 < n).then_some(config.downsample_padding),
            };
            down_blocks.push(DownBlock::new(vb.pp(format!("down_blocks.{i}")), &ctx, &spec)?);
        }
        let mid_block = match config.mid_block_type {
            Some(_) => {
                let spec = BlockSpec {
                    in_channels: channels[n - 1],
                    out_channels: channels[n - 1],
                    layers: 1,
                    attention: Some((heads[n - 1], depth[n - 1])),
                    resample: None,
                };
                Some(MidBlock::new(vb.pp("mid_block"), &ctx, &spec, config.mid_block_scale_factor)?)
            }
            None => None,
        };
        let mut up_blocks = Vec::with_capacity(n);
        let reversed = |v: &[usize], i: usize| v[n - 1 - i];
        for (i, kind) in config.up_block_types.iter().enumerate() {
            let spec = BlockSpec {
                in_channels: reversed(channels, (i + 1).min(n - 1)),
                out_channels: reversed(channels, i),
                layers: config.layers_per_block + 1,
                attention: (kind == "CrossAttnUpBlock2D").then_some((reversed(&heads, i), reversed(&depth, i))),
                resample: (i + 1 < n).then_some(0),
            };
            let prev = reversed(channels, i.saturating_sub(1));
            up_blocks.push(UpBlock::new(vb.pp(format!("up_blocks.{i}")), &ctx, &spec, prev)?);
        }
        Ok(Self {
            config: config.clone(),
            time_embedding: TimestepEmbedding::new(vb.pp("time_embedding"), channels[0], temb_channels)?,
            conv_in: Conv2d::new(vb.pp("conv_in"), config.in_channels, channels[0], 3, 1, 1)?,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::new(
                vb.pp("conv_norm_out"),
                config.norm_num_groups,
                channels[0],
                config.norm_eps,
            )?,
            conv_out: Conv2d::new(vb.pp("conv_out"), channels[0], config.out_channels, 3, 1, 1)?,
        })
    }

    /// The model's prediction (noise or v) for `sample` at `timestep`, conditioned
    /// on the text embeddings `context` (one per batch entry). `obs`, when given,
    /// sees every block's output and every cross-attention map.
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: f64,
        context: &Tensor,
        mut obs: Option<&mut dyn UNetObserver>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let report = |obs: &mut Option<&mut dyn UNetObserver>, name: &str, x: &Tensor| -> Result<()> {
            match obs {
                Some(o) => o.block(name, x),
                None => Ok(()),
            }
        };
        report(&mut obs, "sample", sample)?;
        let sample = if c.center_input_sample { sample.affine(2.0, -1.0)? } else { sample.clone() };
        let features = embeddings::timestep_features(
            timestep,
            c.block_out_channels[0],
            c.flip_sin_to_cos,
            c.freq_shift,
            sample.device(),
        )?;
        // Every ResNet block applies SiLU to the embedding first: do it once.
        let temb = candle_nn::ops::silu(&self.time_embedding.forward(&features, sample.dtype())?)?;

        let mut x = self.conv_in.forward(&sample)?;
        report(&mut obs, "conv_in", &x)?;
        let mut skips = vec![x.clone()];
        for (i, block) in self.down_blocks.iter().enumerate() {
            x = block.forward(x, &temb, context, &mut skips, reborrow(&mut obs))?;
            report(&mut obs, &format!("down_blocks.{i}"), &x)?;
        }
        if let Some(mid) = &self.mid_block {
            x = mid.forward(&x, &temb, context, reborrow(&mut obs))?;
            report(&mut obs, "mid_block", &x)?;
        }
        for (i, block) in self.up_blocks.iter().enumerate() {
            x = block.forward(x, &temb, context, &mut skips, reborrow(&mut obs))?;
            report(&mut obs, &format!("up_blocks.{i}"), &x)?;
        }
        let x = self.conv_out.forward(&self.conv_norm_out.forward(&x, true)?)?;
        report(&mut obs, "conv_out", &x)?;
        Ok(x)
    }
}
