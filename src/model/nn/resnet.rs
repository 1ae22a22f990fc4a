//! diffusers' `ResnetBlock2D`, `Downsample2D` and `Upsample2D` (models/resnet.py,
//! models/downsampling.py, models/upsampling.py), the convolutional half of the
//! UNet and all of the VAE.

use anyhow::Result;
use candle_core::Tensor;
use candle_nn::{Module, VarBuilder};

use super::{Conv2d, GroupNorm};

/// norm1 -> SiLU -> conv1 (+ the time embedding) -> norm2 -> SiLU -> conv2, added to
/// the input (through a 1x1 `conv_shortcut` when the channel count changes).
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    /// The UNet's blocks add the time embedding per channel; the VAE's have none.
    time_emb_proj: Option<candle_nn::Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    output_scale_factor: f64,
}

pub struct ResnetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub temb_channels: Option<usize>,
    pub groups: usize,
    pub eps: f64,
    pub output_scale_factor: f64,
}

impl ResnetBlock2D {
    pub fn new(vb: VarBuilder, c: &ResnetConfig) -> Result<Self> {
        let (cin, cout) = (c.in_channels, c.out_channels);
        Ok(Self {
            norm1: GroupNorm::new(vb.pp("norm1"), c.groups, cin, c.eps)?,
            conv1: Conv2d::new(vb.pp("conv1"), cin, cout, 3, 1, 1)?,
            time_emb_proj: match c.temb_channels {
                Some(temb) => Some(candle_nn::linear(temb, cout, vb.pp("time_emb_proj"))?),
                None => None,
            },
            norm2: GroupNorm::new(vb.pp("norm2"), c.groups, cout, c.eps)?,
            conv2: Conv2d::new(vb.pp("conv2"), cout, cout, 3, 1, 1)?,
            conv_shortcut: if cin != cout {
                Some(Conv2d::new(vb.pp("conv_shortcut"), cin, cout, 1, 1, 0)?)
            } else {
                None
            },
            output_scale_factor: c.output_scale_factor,
        })
    }

    /// `temb` is the SiLU'd time embedding, shared by every block of a UNet pass.
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let mut h = self.conv1.forward(&self.norm1.forward(x, true)?)?;
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            h = h.broadcast_add(&proj.forward(temb)?.unsqueeze(2)?.unsqueeze(3)?)?;
        }
        let h = self.conv2.forward(&self.norm2.forward(&h, true)?)?;
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        let out = (shortcut + h)?;
        Ok(if self.output_scale_factor == 1.0 { out } else { (out / self.output_scale_factor)? })
    }
}

/// A stride-2 3x3 convolution. With `padding = 0` diffusers pads only the right and
/// bottom edges (by one), which the VAE's encoder relies on.
pub struct Downsample2D {
    conv: Conv2d,
    pad_right_bottom: bool,
}

impl Downsample2D {
    pub fn new(vb: VarBuilder, channels: usize, padding: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(vb.pp("conv"), channels, channels, 3, 2, padding)?,
            pad_right_bottom: padding == 0,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.pad_right_bottom {
            let x = x.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?;
            return self.conv.forward(&x);
        }
        self.conv.forward(x)
    }
}

/// Nearest-neighbour upsampling to `size`, then a 3x3 convolution. The size is the
/// skip connection's, which is twice the input except where the latent's side is
/// not divisible by the UNet's total downsampling (diffusers' `upsample_size`).
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Self { conv: Conv2d::new(vb.pp("conv"), channels, channels, 3, 1, 1)? })
    }

    pub fn forward(&self, x: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (th, tw) = size.unwrap_or((2 * h, 2 * w));
        self.conv.forward(&x.upsample_nearest2d(th, tw)?)
    }
}
