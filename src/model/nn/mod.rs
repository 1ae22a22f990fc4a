//! The layers the UNet and the VAE share, loaded by diffusers' tensor names, with
//! the CPU kernels of `kernels` behind the two that dominate the time.

pub mod attention;
pub mod kernels;
pub mod resnet;

use anyhow::{bail, Result};
use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

/// A 2D convolution. On the CPU (float32) a k x k convolution runs as im2col plus
/// one matmul per image, about three times faster than candle's tiled conv2d for
/// the UNet's shapes; elsewhere it is candle's conv2d.
pub struct Conv2d {
    weight: Tensor,
    /// `weight` as `(Cout, Cin*k*k)`, the left side of the im2col matmul.
    weight_matrix: Tensor,
    bias: Option<Tensor>,
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    pub fn new(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let weight = vb.get((out_channels, in_channels, kernel, kernel), "weight")?;
        let bias = Some(vb.get(out_channels, "bias")?);
        let weight_matrix = weight.reshape((out_channels, in_channels * kernel * kernel))?;
        Ok(Self { weight, weight_matrix, bias, kernel, stride, padding })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = if kernels::applies(x) && self.kernel > 1 {
            let (b, _, h, w) = x.dims4()?;
            let im2col =
                kernels::Im2Col { kernel: (self.kernel, self.kernel), stride: self.stride, padding: self.padding };
            let (ho, wo) = im2col.output_size(h, w);
            let cols = x.contiguous()?.apply_op1_no_bwd(&im2col)?;
            let (cout, k) = self.weight_matrix.dims2()?;
            self.weight_matrix.broadcast_as((b, cout, k))?.matmul(&cols)?.reshape((b, cout, ho, wo))?
        } else {
            x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?
        };
        Ok(match &self.bias {
            Some(bias) => y.broadcast_add(&bias.reshape((1, (), 1, 1))?)?,
            None => y,
        })
    }
}

/// Group normalisation, optionally followed by SiLU (fused on the CPU).
pub struct GroupNorm {
    groups: usize,
    eps: f64,
    weight: Tensor,
    bias: Tensor,
    /// Host copies for the CPU kernel (a few KiB).
    weight_host: Vec<f32>,
    bias_host: Vec<f32>,
}

impl GroupNorm {
    pub fn new(vb: VarBuilder, groups: usize, channels: usize, eps: f64) -> Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            bail!("{}: {groups} groups do not divide {channels} channels", vb.prefix());
        }
        let weight = vb.get(channels, "weight")?;
        let bias = vb.get(channels, "bias")?;
        let host = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.to_dtype(candle_core::DType::F32)?.to_vec1()?) };
        Ok(Self { groups, eps, weight_host: host(&weight)?, bias_host: host(&bias)?, weight, bias })
    }

    pub fn forward(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        if kernels::applies(x) {
            let op = kernels::GroupNormSilu {
                groups: self.groups,
                eps: self.eps,
                weight: &self.weight_host,
                bias: &self.bias_host,
                silu,
            };
            return Ok(x.contiguous()?.apply_op1_no_bwd(&op)?);
        }
        let channels = self.weight.dim(0)?;
        let norm = candle_nn::GroupNorm::new(self.weight.clone(), self.bias.clone(), channels, self.groups, self.eps)?;
        let y = norm.forward(x)?;
        Ok(if silu { candle_nn::ops::silu(&y)? } else { y })
    }
}

/// diffusers' GEGLU: `hidden * gelu(gate)` over the two halves of the last dimension.
pub fn geglu(x: &Tensor) -> Result<Tensor> {
    if kernels::applies(x) {
        return Ok(x.contiguous()?.apply_op1_no_bwd(&kernels::Geglu)?);
    }
    let halves = x.chunk(2, candle_core::D::Minus1)?;
    Ok((&halves[0] * halves[1].gelu_erf()?)?)
}

/// The weight of a linear layer, accepting the 1x1-convolution shape `(out, in, 1, 1)`
/// that some converted VAE checkpoints store for their attention projections.
pub fn linear(vb: VarBuilder, in_dim: usize, out_dim: usize, bias: bool) -> Result<candle_nn::Linear> {
    let weight = vb.get_unchecked("weight")?;
    let weight = match weight.dims() {
        [o, i] if (*o, *i) == (out_dim, in_dim) => weight,
        [o, i, 1, 1] if (*o, *i) == (out_dim, in_dim) => weight.reshape((out_dim, in_dim))?,
        other => bail!("{}.weight: expected shape [{out_dim}, {in_dim}], found {other:?}", vb.prefix()),
    };
    let bias = if bias { Some(vb.get(out_dim, "bias")?) } else { None };
    Ok(candle_nn::Linear::new(weight, bias))
}
