//! The U: down blocks (`CrossAttnDownBlock2D`, `DownBlock2D`), the mid block
//! (`UNetMidBlock2DCrossAttn`) and up blocks (`CrossAttnUpBlock2D`, `UpBlock2D`),
//! models/unets/unet_2d_blocks.py. A block without attention is the same block
//! with an empty `attentions` list.

use anyhow::Result;
use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::taps::{reborrow, UNetObserver};
use super::transformer::{Transformer2DModel, TransformerConfig};
use crate::model::nn::resnet::{Downsample2D, ResnetBlock2D, ResnetConfig, Upsample2D};

/// What every block of one UNet shares.
pub struct BlockContext<'a> {
    pub temb_channels: usize,
    pub groups: usize,
    pub eps: f64,
    pub transformer: &'a dyn Fn(usize, usize, usize) -> TransformerConfig,
}

/// The per-block choices read from the config.
pub struct BlockSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    pub layers: usize,
    /// `Some((heads, transformer depth))` for a cross-attention block.
    pub attention: Option<(usize, usize)>,
    /// Downsampler padding (down blocks) or whether to upsample (up blocks).
    pub resample: Option<usize>,
}

fn resnet(vb: VarBuilder, ctx: &BlockContext, cin: usize, cout: usize, scale: f64) -> Result<ResnetBlock2D> {
    let config = ResnetConfig {
        in_channels: cin,
        out_channels: cout,
        temb_channels: Some(ctx.temb_channels),
        groups: ctx.groups,
        eps: ctx.eps,
        output_scale_factor: scale,
    };
    ResnetBlock2D::new(vb, &config)
}

fn attentions(vb: &VarBuilder, ctx: &BlockContext, spec: &BlockSpec, n: usize) -> Result<Vec<Transformer2DModel>> {
    let Some((heads, depth)) = spec.attention else { return Ok(Vec::new()) };
    let config = (ctx.transformer)(spec.out_channels, heads, depth);
    (0..n).map(|i| Transformer2DModel::new(vb.pp(format!("attentions.{i}")), &config)).collect()
}

/// Resnets (each followed by a transformer in a cross-attention block), then a
/// stride-2 downsampler except in the last block. Every intermediate output is a
/// skip connection for the up path.
pub struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    downsampler: Option<Downsample2D>,
}

impl DownBlock {
    pub fn new(vb: VarBuilder, ctx: &BlockContext, spec: &BlockSpec) -> Result<Self> {
        let resnets = (0..spec.layers)
            .map(|i| {
                let cin = if i == 0 { spec.in_channels } else { spec.out_channels };
                resnet(vb.pp(format!("resnets.{i}")), ctx, cin, spec.out_channels, 1.0)
            })
            .collect::<Result<_>>()?;
        let downsampler = match spec.resample {
            Some(padding) => Some(Downsample2D::new(vb.pp("downsamplers.0"), spec.out_channels, padding)?),
            None => None,
        };
        Ok(Self { resnets, attentions: attentions(&vb, ctx, spec, spec.layers)?, downsampler })
    }

    pub fn forward(
        &self,
        mut x: Tensor,
        temb: &Tensor,
        context: &Tensor,
        skips: &mut Vec<Tensor>,
        mut obs: Option<&mut dyn UNetObserver>,
    ) -> Result<Tensor> {
        for (i, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(&x, Some(temb))?;
            if let Some(attention) = self.attentions.get(i) {
                x = attention.forward(&x, context, reborrow(&mut obs))?;
            }
            skips.push(x.clone());
        }
        if let Some(down) = &self.downsampler {
            x = down.forward(&x)?;
            skips.push(x.clone());
        }
        Ok(x)
    }
}

/// resnet, then (transformer, resnet) pairs, at the lowest resolution.
pub struct MidBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
}

impl MidBlock {
    pub fn new(vb: VarBuilder, ctx: &BlockContext, spec: &BlockSpec, output_scale_factor: f64) -> Result<Self> {
        let ch = spec.out_channels;
        let resnets = (0..=spec.layers)
            .map(|i| resnet(vb.pp(format!("resnets.{i}")), ctx, ch, ch, output_scale_factor))
            .collect::<Result<_>>()?;
        Ok(Self { resnets, attentions: attentions(&vb, ctx, spec, spec.layers)? })
    }

    pub fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        context: &Tensor,
        mut obs: Option<&mut dyn UNetObserver>,
    ) -> Result<Tensor> {
        let mut x = self.resnets[0].forward(x, Some(temb))?;
        for (attention, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            x = attention.forward(&x, context, reborrow(&mut obs))?;
            x = resnet.forward(&x, Some(temb))?;
        }
        Ok(x)
    }
}

/// `layers` resnets, each taking the previous output concatenated (on channels)
/// with the last remaining skip connection, then an upsampler except in the last
/// block.
pub struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    upsampler: Option<Upsample2D>,
}

impl UpBlock {
    /// `prev_channels`: the channels coming up from below; `skip_channels`: those of
    /// the matching down block's input, which its last skip carries.
    pub fn new(vb: VarBuilder, ctx: &BlockContext, spec: &BlockSpec, prev_channels: usize) -> Result<Self> {
        let (cin, cout) = (spec.in_channels, spec.out_channels);
        let resnets = (0..spec.layers)
            .map(|i| {
                let skip = if i == spec.layers - 1 { cin } else { cout };
                let from_below = if i == 0 { prev_channels } else { cout };
                resnet(vb.pp(format!("resnets.{i}")), ctx, from_below + skip, cout, 1.0)
            })
            .collect::<Result<_>>()?;
        let upsampler = match spec.resample {
            Some(_) => Some(Upsample2D::new(vb.pp("upsamplers.0"), cout)?),
            None => None,
        };
        Ok(Self { resnets, attentions: attentions(&vb, ctx, spec, spec.layers)?, upsampler })
    }

    /// Consumes this block's skip connections from the end of `skips`.
    pub fn forward(
        &self,
        mut x: Tensor,
        temb: &Tensor,
        context: &Tensor,
        skips: &mut Vec<Tensor>,
        mut obs: Option<&mut dyn UNetObserver>,
    ) -> Result<Tensor> {
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = skips.pop().ok_or_else(|| anyhow::anyhow!("UNet: ran out of skip connections"))?;
            x = resnet.forward(&Tensor::cat(&[&x, &skip], 1)?, Some(temb))?;
            if let Some(attention) = self.attentions.get(i) {
                x = attention.forward(&x, context, reborrow(&mut obs))?;
            }
        }
        if let Some(up) = &self.upsampler {
            // The next block's skips set the size: twice ours unless a side was odd.
            let size = skips.last().map(|s| (s.dim(2), s.dim(3)));
            let size = match size {
                Some((Ok(h), Ok(w))) => Some((h, w)),
                _ => None,
            };
            x = up.forward(&x, size)?;
        }
        Ok(x)
    }
}
