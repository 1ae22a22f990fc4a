//! CPU kernels for the three operations where candle's generic CPU path costs the
//! UNet and the VAE most of their time (measured with `sdlab bench` and perf at
//! 512x512): 3x3 convolutions, group norm (+ SiLU) and GEGLU.
//!
//! candle's CPU conv2d tiles its im2col and reaches about a third of what its own
//! matmul does on the same numbers; its group norm is a chain of single-threaded
//! tensor ops (about ten passes over the activation); its GELU is single-threaded.
//! Each kernel here is one parallel pass that feeds candle's matmul or replaces the
//! chain. They run for contiguous float32 CPU tensors only; every other case takes
//! the plain candle ops, which the tests use as the reference.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// The im2col matrix of a convolution input: for each image, one row per
/// (input channel, kernel row, kernel column) and one column per output pixel, so
/// that `weight (Cout, Cin*kh*kw) @ cols` is the convolution.
pub struct Im2Col {
    pub kernel: (usize, usize),
    pub stride: usize,
    pub padding: usize,
}

impl Im2Col {
    pub fn output_size(&self, h: usize, w: usize) -> (usize, usize) {
        let (kh, kw) = self.kernel;
        ((h + 2 * self.padding - kh) / self.stride + 1, (w + 2 * self.padding - kw) / self.stride + 1)
    }
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "sdlab-im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, self.name())?;
        let (b, c, h, w) = layout.shape().dims4()?;
        let (kh, kw) = self.kernel;
        let (ho, wo) = self.output_size(h, w);
        let (s, p) = (self.stride, self.padding);
        let rows = c * kh * kw;
        let mut cols = vec![0f32; b * rows * ho * wo];
        // One task per (image, input channel): kh*kw output rows written from one input plane.
        cols.par_chunks_mut(kh * kw * ho * wo).enumerate().for_each(|(bc, out)| {
            let plane = &x[bc * h * w..(bc + 1) * h * w];
            for ky in 0..kh {
                for kx in 0..kw {
                    let row = &mut out[(ky * kw + kx) * ho * wo..(ky * kw + kx + 1) * ho * wo];
                    for oy in 0..ho {
                        let iy = (oy * s + ky) as isize - p as isize;
                        let dst = &mut row[oy * wo..(oy + 1) * wo];
                        if iy < 0 || iy >= h as isize {
                            continue; // stays zero: padding
                        }
                        let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                        if s == 1 {
                            // Output x maps to input x + kx - p: one copy of the valid span.
                            let lo = p.saturating_sub(kx);
                            let hi = (w + p - kx).min(wo);
                            if lo < hi {
                                dst[lo..hi].copy_from_slice(&src[lo + kx - p..hi + kx - p]);
                            }
                        } else {
                            for (ox, d) in dst.iter_mut().enumerate() {
                                let ix = (ox * s + kx) as isize - p as isize;
                                if ix >= 0 && ix < w as isize {
                                    *d = src[ix as usize];
                                }
                            }
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(cols), Shape::from((b, rows, ho * wo))))
    }
}

/// Group normalisation with its affine weight and bias, optionally followed by SiLU
/// (as every ResNet block and the UNet's and VAE's output heads apply it), in one
/// parallel pass per group. Statistics are accumulated in f64.
pub struct GroupNormSilu<'a> {
    pub groups: usize,
    pub eps: f64,
    pub weight: &'a [f32],
    pub bias: &'a [f32],
    pub silu: bool,
}

impl CustomOp1 for GroupNormSilu<'_> {
    fn name(&self) -> &'static str {
        "sdlab-group-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, self.name())?;
        let dims = layout.shape().dims();
        let c = dims[1];
        let spatial: usize = dims[2..].iter().product();
        let per_group = c / self.groups * spatial;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(per_group).zip(x.par_chunks(per_group)).enumerate().for_each(|(bg, (out, inp))| {
            let n = inp.len() as f64;
            let mean = inp.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = inp.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            let rstd = 1.0 / (var + self.eps).sqrt();
            let first_channel = (bg % self.groups) * (c / self.groups);
            for (i, (o, v)) in out.chunks_mut(spatial).zip(inp.chunks(spatial)).enumerate() {
                let ch = first_channel + i;
                let scale = (rstd * self.weight[ch] as f64) as f32;
                let shift = (self.bias[ch] as f64 - mean * rstd * self.weight[ch] as f64) as f32;
                for (o, &v) in o.iter_mut().zip(v) {
                    let z = v * scale + shift;
                    *o = if self.silu { z / (1.0 + (-z).exp()) } else { z };
                }
            }
        });
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }
}

/// diffusers' GEGLU activation on the last dimension: `hidden * gelu(gate)` where
/// the input is `[hidden | gate]`, with the exact (erf) GELU that torch uses.
pub struct Geglu;

impl CustomOp1 for Geglu {
    fn name(&self) -> &'static str {
        "sdlab-geglu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, self.name())?;
        let mut dims = layout.shape().dims().to_vec();
        let width = dims.last().copied().unwrap_or(0);
        let half = width / 2;
        *dims.last_mut().expect("rank >= 1") = half;
        let mut y = vec![0f32; x.len() / 2];
        y.par_chunks_mut(half).zip(x.par_chunks(width)).for_each(|(out, row)| {
            let (hidden, gate) = row.split_at(half);
            for ((o, &h), &g) in out.iter_mut().zip(hidden).zip(gate) {
                let gelu = 0.5 * g * (1.0 + candle_core::cpu::erf::erf_f32(g * std::f32::consts::FRAC_1_SQRT_2));
                *o = h * gelu;
            }
        });
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }
}

/// Whether a tensor can take the kernels above.
pub fn applies(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32
}

fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: expected float32 input, found {:?}", storage.dtype());
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: expected a contiguous input"),
    }
}
