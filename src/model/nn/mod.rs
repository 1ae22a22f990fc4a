//! The layers the UNet and the VAE share, loaded by diffusers' tensor names, with
//! the CPU kernels of `kernels` and `winograd` behind the ones that dominate the time.

pub mod attention;
pub mod kernels;
pub mod layout;
pub mod resnet;
mod simd;
pub mod winograd;

use anyhow::{bail, Result};
use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

/// A 2D convolution (square kernel). On the CPU (float32) it is `winograd::Winograd3x3`
/// for the 3x3 stride-1 convolutions of images from 32x32 up (1.6 to 2 times faster
/// than im2col there), `kernels::Conv2dGemm` otherwise, about three times faster than
/// candle's conv2d and without its full im2col buffer; elsewhere candle's conv2d.
pub struct Conv2d {
    weight: Tensor,
    /// `weight` as `(Cout, Cin*k*k)`, the left side of the im2col product.
    weight_matrix: Tensor,
    bias: Tensor,
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
        let bias = vb.get(out_channels, "bias")?;
        let weight_matrix = weight.reshape((out_channels, in_channels * kernel * kernel))?;
        Ok(Self { weight, weight_matrix, bias, kernel, stride, padding })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if kernels::applies(x) {
            let (_, _, h, w) = x.dims4()?;
            if (self.kernel, self.stride, self.padding) == (3, 1, 1) && winograd::Winograd3x3::worth_it(h, w) {
                return Ok(x.contiguous()?.apply_op3_no_bwd(
                    &self.weight_matrix,
                    &self.bias,
                    &winograd::Winograd3x3,
                )?);
            }
            let op = kernels::Conv2dGemm { kernel: self.kernel, stride: self.stride, padding: self.padding };
            return Ok(x.contiguous()?.apply_op3_no_bwd(&self.weight_matrix, &self.bias, &op)?);
        }
        let y = x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?;
        Ok(y.broadcast_add(&self.bias.reshape((1, (), 1, 1))?)?)
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

/// Softmax over the last dimension (the CPU kernel for float32).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if kernels::applies(x) {
        return Ok(x.contiguous()?.apply_op1_no_bwd(&kernels::SoftmaxLastDim)?);
    }
    Ok(candle_nn::ops::softmax_last_dim(x)?)
}

/// diffusers' GEGLU: `hidden * gelu(gate)` over the two halves of the last dimension.
pub fn geglu(x: &Tensor) -> Result<Tensor> {
    if kernels::applies(x) {
        return Ok(x.contiguous()?.apply_op1_no_bwd(&kernels::Geglu)?);
    }
    let halves = x.chunk(2, candle_core::D::Minus1)?;
    Ok((&halves[0] * halves[1].gelu_erf()?)?)
}

/// The exact (erf) GELU, as `torch.nn.functional.gelu` (the CPU kernel for float32).
pub fn gelu_erf(x: &Tensor) -> candle_core::Result<Tensor> {
    if kernels::applies(x) {
        return x.contiguous()?.apply_op1_no_bwd(&kernels::GeluErf);
    }
    x.gelu_erf()
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

#[cfg(test)]
mod tests {
    //! Each CPU kernel against the plain candle ops it replaces, on shapes that
    //! exercise padding, strides, odd sizes and tiling.
    use super::*;
    use candle_core::{DType, Device};

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        // A cheap deterministic generator: the values only need to be varied.
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let data: Vec<f32> = (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    #[test]
    fn conv_kernel_matches_candle_conv2d() {
        // (batch, cin, cout, h, w, kernel, stride, padding)
        let cases = [
            (2, 3, 5, 7, 9, 3, 1, 1),
            (1, 4, 6, 8, 8, 3, 2, 1),
            (2, 4, 6, 9, 7, 3, 2, 0),
            (2, 5, 3, 6, 11, 1, 1, 0),
            (1, 8, 8, 1, 1, 3, 1, 1),
            (2, 64, 32, 40, 40, 3, 1, 1),  // Winograd, one block per image
            (1, 16, 24, 33, 35, 3, 1, 1),  // Winograd, odd sides: partial tiles
            (2, 256, 16, 64, 96, 3, 1, 1), // Winograd, several blocks per image
            (1, 8, 8, 31, 33, 3, 1, 1),    // im2col: too small for Winograd
        ];
        assert!(winograd::Winograd3x3::worth_it(33, 35) && !winograd::Winograd3x3::worth_it(31, 33));
        for (i, &(b, cin, cout, h, w, k, s, p)) in cases.iter().enumerate() {
            let x = randn(&[b, cin, h, w], i as u64);
            let weight = randn(&[cout, cin, k, k], 100 + i as u64);
            let bias = randn(&[cout], 200 + i as u64);
            let conv = Conv2d {
                weight_matrix: weight.reshape((cout, cin * k * k)).unwrap(),
                weight: weight.clone(),
                bias: bias.clone(),
                kernel: k,
                stride: s,
                padding: p,
            };
            let ours = conv.forward(&x).unwrap();
            let reference =
                x.conv2d(&weight, p, s, 1, 1).unwrap().broadcast_add(&bias.reshape((1, cout, 1, 1)).unwrap()).unwrap();
            let diff = max_diff(&ours, &reference);
            assert!(diff < 1e-4, "case {i}: max diff {diff}");
        }
    }

    #[test]
    fn group_norm_kernel_matches_candle_with_and_without_silu() {
        let x = randn(&[2, 64, 5, 7], 1);
        let weight = randn(&[64], 2);
        let bias = randn(&[64], 3);
        let norm = GroupNorm {
            groups: 32,
            eps: 1e-6,
            weight_host: weight.to_vec1().unwrap(),
            bias_host: bias.to_vec1().unwrap(),
            weight: weight.clone(),
            bias: bias.clone(),
        };
        let reference = candle_nn::GroupNorm::new(weight, bias, 64, 32, 1e-6).unwrap().forward(&x).unwrap();
        assert!(max_diff(&norm.forward(&x, false).unwrap(), &reference) < 1e-5);
        let silu = candle_nn::ops::silu(&reference).unwrap();
        assert!(max_diff(&norm.forward(&x, true).unwrap(), &silu) < 1e-5);
    }

    #[test]
    fn softmax_kernel_matches_candle_and_exp_stays_within_2_ulp() {
        let x = (randn(&[3, 5, 200], 5) * 40.0).unwrap();
        let reference = candle_nn::ops::softmax_last_dim(&x).unwrap();
        let ours = softmax_last_dim(&x).unwrap();
        assert!(max_diff(&ours, &reference) < 1e-6);
        let sums = ours.sum(2).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5), "{sums:?}");
        let mut worst = 0u32;
        for i in 0..=200_000 {
            let v = -87.0 + 175.0 * i as f32 / 200_000.0;
            let (a, b) = (kernels::exp_for_test(v), v.exp());
            worst = worst.max(a.to_bits().abs_diff(b.to_bits()));
        }
        assert!(worst <= 2, "exp is {worst} ulp off");
    }

    #[test]
    fn erf_stays_within_1_4_ulp_of_the_correctly_rounded_value() {
        let mut worst = 0f64;
        for i in 0..=2_000_000 {
            let x = -6.0 + 12.0 * i as f32 / 2_000_000.0;
            let exact = candle_core::cpu::erf::erf_f64(f64::from(x));
            let ulp =
                f64::from((exact as f32).abs().next_up() - (exact as f32).abs()).max(f64::from(f32::MIN_POSITIVE));
            worst = worst.max((f64::from(kernels::erf_for_test(x)) - exact).abs() / ulp);
            assert_eq!(kernels::erf_for_test(-x), -kernels::erf_for_test(x), "erf is odd, at {x}");
        }
        assert!(worst <= 1.4, "erf is {worst:.2} ulp off");
        assert_eq!((kernels::erf_for_test(4.5), kernels::erf_for_test(1e30)), (1.0, 1.0));
        assert!(kernels::erf_for_test(f32::NAN).is_nan());
    }

    #[test]
    fn geglu_kernel_matches_candle_gelu_erf() {
        let x = randn(&[2, 3, 10], 4);
        let halves = x.chunk(2, 2).unwrap();
        let reference = (&halves[0] * halves[1].gelu_erf().unwrap()).unwrap();
        assert!(max_diff(&geglu(&x).unwrap(), &reference) < 1e-6);
        // the generic path (non-f32) agrees too
        let f64_out = geglu(&x.to_dtype(DType::F64).unwrap()).unwrap().to_dtype(DType::F32).unwrap();
        assert!(max_diff(&f64_out, &reference) < 1e-6);
    }

    #[test]
    fn gelu_kernel_matches_candle_gelu_erf_across_chunks() {
        // three parallel chunks, the last one partial; scaled so that both erf branches
        // and the saturated tails are taken
        let x = (randn(&[3, 12_345], 5) * 3.0).unwrap();
        let reference = x.to_dtype(DType::F64).unwrap().gelu_erf().unwrap().to_dtype(DType::F32).unwrap();
        let out = gelu_erf(&x).unwrap();
        assert_eq!(out.dims(), x.dims());
        assert!(max_diff(&out, &reference) < 2e-6, "{}", max_diff(&out, &reference));
        // a strided input is made contiguous first, not read in the wrong order
        let t = x.t().unwrap();
        assert!(max_diff(&gelu_erf(&t).unwrap(), &reference.t().unwrap()) < 2e-6);
    }
}
