//! sdlab's own `AutoencoderKL` (diffusers' models/autoencoders/autoencoder_kl.py and
//! vae.py): the decoder that turns latents into the picture, and the encoder that
//! goes the other way (img2img), built from `vae/config.json` by diffusers' names.

pub mod config;

use anyhow::Result;
use candle_core::Tensor;
use candle_nn::VarBuilder;

pub use config::VaeConfig;

use crate::model::nn::attention::{Attention, AttentionConfig};
use crate::model::nn::layout::swap_last_two;
use crate::model::nn::resnet::{Downsample2D, ResnetBlock2D, ResnetConfig, Upsample2D};
use crate::model::nn::{Conv2d, GroupNorm};

/// The VAE's ResNet blocks and norms use a fixed epsilon, not a config field.
const EPS: f64 = 1e-6;

fn resnet(vb: VarBuilder, groups: usize, cin: usize, cout: usize) -> Result<ResnetBlock2D> {
    let config = ResnetConfig {
        in_channels: cin,
        out_channels: cout,
        temb_channels: None,
        groups,
        eps: EPS,
        output_scale_factor: 1.0,
    };
    ResnetBlock2D::new(vb, &config)
}

/// Single-head self-attention over every pixel, with its own GroupNorm and a
/// residual connection (diffusers' `Attention` with `residual_connection=True`).
struct AttentionBlock {
    group_norm: GroupNorm,
    attention: Attention,
}

impl AttentionBlock {
    fn new(vb: VarBuilder, groups: usize, channels: usize) -> Result<Self> {
        let config = AttentionConfig {
            query_dim: channels,
            context_dim: channels,
            heads: 1,
            head_dim: channels,
            qkv_bias: true,
            upcast: true,
        };
        Ok(Self {
            group_norm: GroupNorm::new(vb.pp("group_norm"), groups, channels, EPS)?,
            attention: Attention::new(vb, &config)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let tokens = swap_last_two(&self.group_norm.forward(x, false)?.reshape((b, c, h * w))?)?;
        let out = self.attention.forward(&tokens, None, None)?;
        Ok((swap_last_two(&out)?.reshape((b, c, h, w))? + x)?)
    }
}

/// resnet -> attention -> resnet at the lowest resolution (`UNetMidBlock2D`).
struct MidBlock {
    resnets: [ResnetBlock2D; 2],
    attention: Option<AttentionBlock>,
}

impl MidBlock {
    fn new(vb: VarBuilder, config: &VaeConfig, channels: usize) -> Result<Self> {
        let groups = config.norm_num_groups;
        Ok(Self {
            resnets: [
                resnet(vb.pp("resnets.0"), groups, channels, channels)?,
                resnet(vb.pp("resnets.1"), groups, channels, channels)?,
            ],
            attention: match config.mid_block_add_attention {
                true => Some(AttentionBlock::new(vb.pp("attentions.0"), groups, channels)?),
                false => None,
            },
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = self.resnets[0].forward(x, None)?;
        if let Some(attention) = &self.attention {
            x = attention.forward(&x)?;
        }
        self.resnets[1].forward(&x, None)
    }
}

/// Latents -> image: conv_in, mid block, up blocks (resnets, then 2x nearest
/// upsampling except in the last), GroupNorm, SiLU, conv_out.
pub struct Decoder {
    conv_in: Conv2d,
    mid_block: MidBlock,
    up_blocks: Vec<(Vec<ResnetBlock2D>, Option<Upsample2D>)>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    fn new(vb: VarBuilder, config: &VaeConfig) -> Result<Self> {
        let channels = &config.block_out_channels;
        let n = channels.len();
        let groups = config.norm_num_groups;
        let mut up_blocks = Vec::with_capacity(n);
        let mut prev = channels[n - 1];
        for i in 0..n {
            let out = channels[n - 1 - i];
            let vb = vb.pp(format!("up_blocks.{i}"));
            let resnets = (0..=config.layers_per_block)
                .map(|j| resnet(vb.pp(format!("resnets.{j}")), groups, if j == 0 { prev } else { out }, out))
                .collect::<Result<_>>()?;
            let upsampler = if i + 1 < n { Some(Upsample2D::new(vb.pp("upsamplers.0"), out)?) } else { None };
            up_blocks.push((resnets, upsampler));
            prev = out;
        }
        Ok(Self {
            conv_in: Conv2d::new(vb.pp("conv_in"), config.latent_channels, channels[n - 1], 3, 1, 1)?,
            mid_block: MidBlock::new(vb.pp("mid_block"), config, channels[n - 1])?,
            up_blocks,
            conv_norm_out: GroupNorm::new(vb.pp("conv_norm_out"), groups, channels[0], EPS)?,
            conv_out: Conv2d::new(vb.pp("conv_out"), channels[0], config.out_channels, 3, 1, 1)?,
        })
    }

    fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let mut x = self.mid_block.forward(&self.conv_in.forward(z)?)?;
        for (resnets, upsampler) in &self.up_blocks {
            for resnet in resnets {
                x = resnet.forward(&x, None)?;
            }
            if let Some(up) = upsampler {
                x = up.forward(&x, None)?;
            }
        }
        self.conv_out.forward(&self.conv_norm_out.forward(&x, true)?)
    }
}

/// Image -> the latent distribution's moments: conv_in, down blocks (resnets,
/// then a stride-2 convolution except in the last), mid block, GroupNorm, SiLU,
/// conv_out to twice the latent channels (mean and log-variance).
pub struct Encoder {
    conv_in: Conv2d,
    down_blocks: Vec<(Vec<ResnetBlock2D>, Option<Downsample2D>)>,
    mid_block: MidBlock,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    fn new(vb: VarBuilder, config: &VaeConfig) -> Result<Self> {
        let channels = &config.block_out_channels;
        let n = channels.len();
        let groups = config.norm_num_groups;
        let mut down_blocks = Vec::with_capacity(n);
        let mut prev = channels[0];
        for (i, &out) in channels.iter().enumerate() {
            let vb = vb.pp(format!("down_blocks.{i}"));
            let resnets = (0..config.layers_per_block)
                .map(|j| resnet(vb.pp(format!("resnets.{j}")), groups, if j == 0 { prev } else { out }, out))
                .collect::<Result<_>>()?;
            let downsampler = if i + 1 < n { Some(Downsample2D::new(vb.pp("downsamplers.0"), out, 0)?) } else { None };
            down_blocks.push((resnets, downsampler));
            prev = out;
        }
        Ok(Self {
            conv_in: Conv2d::new(vb.pp("conv_in"), config.in_channels, channels[0], 3, 1, 1)?,
            down_blocks,
            mid_block: MidBlock::new(vb.pp("mid_block"), config, channels[n - 1])?,
            conv_norm_out: GroupNorm::new(vb.pp("conv_norm_out"), groups, channels[n - 1], EPS)?,
            conv_out: Conv2d::new(vb.pp("conv_out"), channels[n - 1], 2 * config.latent_channels, 3, 1, 1)?,
        })
    }

    fn forward(&self, image: &Tensor) -> Result<Tensor> {
        let mut x = self.conv_in.forward(image)?;
        for (resnets, downsampler) in &self.down_blocks {
            for resnet in resnets {
                x = resnet.forward(&x, None)?;
            }
            if let Some(down) = downsampler {
                x = down.forward(&x)?;
            }
        }
        let x = self.mid_block.forward(&x)?;
        self.conv_out.forward(&self.conv_norm_out.forward(&x, true)?)
    }
}

pub struct AutoencoderKL {
    encoder: Encoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    decoder: Decoder,
}

impl AutoencoderKL {
    pub fn new(vb: VarBuilder, config: &VaeConfig) -> Result<Self> {
        let latent = config.latent_channels;
        Ok(Self {
            encoder: Encoder::new(vb.pp("encoder"), config)?,
            quant_conv: match config.use_quant_conv {
                true => Some(Conv2d::new(vb.pp("quant_conv"), 2 * latent, 2 * latent, 1, 1, 0)?),
                false => None,
            },
            post_quant_conv: match config.use_post_quant_conv {
                true => Some(Conv2d::new(vb.pp("post_quant_conv"), latent, latent, 1, 1, 0)?),
                false => None,
            },
            decoder: Decoder::new(vb.pp("decoder"), config)?,
        })
    }

    /// Unscaled latents (already divided by `scaling_factor`) to an image in [-1, 1].
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        match &self.post_quant_conv {
            Some(conv) => self.decoder.forward(&conv.forward(z)?),
            None => self.decoder.forward(z),
        }
    }

    /// An image in [-1, 1] to the mean and log-variance of its latent distribution
    /// (unscaled: multiply by `scaling_factor` for the UNet).
    pub fn encode(&self, image: &Tensor) -> Result<(Tensor, Tensor)> {
        let moments = self.encoder.forward(image)?;
        let moments = match &self.quant_conv {
            Some(conv) => conv.forward(&moments)?,
            None => moments,
        };
        let halves = moments.chunk(2, 1)?;
        Ok((halves[0].clone(), halves[1].clamp(-30f32, 20f32)?))
    }
}
