//! CPU kernels for the three operations where candle's generic CPU path costs the
//! UNet and the VAE most of their time (measured with `sdlab bench` and perf at
//! 512x512): 3x3 convolutions, group norm (+ SiLU) and GEGLU.
//!
//! candle's CPU conv2d tiles its im2col and reaches about a third of what gemm does
//! on the same numbers; its group norm is a chain of single-threaded
//! tensor ops (about ten passes over the activation); its GELU is single-threaded.
//! Each kernel here is one parallel pass that feeds candle's matmul or replaces the
//! chain. They run for contiguous float32 CPU tensors only; every other case takes
//! the plain candle ops, which the tests use as the reference.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::layout::swapped;
use super::simd::{self, max_f32, sum_f32, sum_f64};

/// A 2D convolution as tiles of im2col feeding gemm, written straight into the
/// output. Inputs: the image `(B, Cin, H, W)`, the weight as a matrix
/// `(Cout, Cin*k*k)` and the bias `(Cout)`.
///
/// Each tile covers a few output rows, so its im2col block stays around 4 MiB
/// (cache-sized, reused per thread) instead of one `Cin*k*k x H*W` matrix, which is
/// 1.2 GB for the VAE's 512x512 convolutions. Tiles run in parallel, each gemm
/// single-threaded; with too few tiles (the UNet's 8x8 level) gemm takes the threads.
pub struct Conv2dGemm {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

/// Floats per im2col tile (4 MiB): measured best of 1, 4, 16 and 64 MiB for the
/// UNet's 3x3 convolutions at 512x512.
pub(super) const TILE_FLOATS: usize = 1 << 20;

/// A pointer to disjoint parts of one output buffer, shared by the tile tasks.
#[derive(Clone, Copy)]
pub(super) struct OutPtr(pub(super) *mut f32);
// SAFETY: every task writes a distinct (image, row range) block of the output.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Through a method, so closures capture the whole (Send) wrapper, not its field.
    pub(super) fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

impl Conv2dGemm {
    pub fn output_size(&self, h: usize, w: usize) -> (usize, usize) {
        let k = self.kernel;
        ((h + 2 * self.padding - k) / self.stride + 1, (w + 2 * self.padding - k) / self.stride + 1)
    }

    /// Rows `oy0..oy1` of the im2col matrix of one image plane stack `x` (`Cin` planes
    /// of `h x w`), as `(Cin*k*k, (oy1-oy0)*wo)` row-major into `cols`.
    #[allow(clippy::too_many_arguments)]
    fn im2col_rows(
        &self,
        x: &[f32],
        cin: usize,
        h: usize,
        w: usize,
        wo: usize,
        oy0: usize,
        oy1: usize,
        cols: &mut [f32],
    ) {
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        let tile = (oy1 - oy0) * wo;
        for c in 0..cin {
            let plane = &x[c * h * w..(c + 1) * h * w];
            for ky in 0..k {
                for kx in 0..k {
                    let row = &mut cols[((c * k + ky) * k + kx) * tile..][..tile];
                    for oy in oy0..oy1 {
                        let dst = &mut row[(oy - oy0) * wo..][..wo];
                        let iy = (oy * s + ky) as isize - p as isize;
                        if iy < 0 || iy >= h as isize {
                            dst.fill(0.0);
                            continue;
                        }
                        let src = &plane[iy as usize * w..][..w];
                        if s == 1 {
                            // Output x reads input x + kx - p: one copy of the valid span.
                            let lo = p.saturating_sub(kx).min(wo);
                            let hi = (w + p).saturating_sub(kx).min(wo).max(lo);
                            dst[..lo].fill(0.0);
                            dst[lo..hi].copy_from_slice(&src[lo + kx - p..hi + kx - p]);
                            dst[hi..].fill(0.0);
                        } else {
                            for (ox, d) in dst.iter_mut().enumerate() {
                                let ix = (ox * s + kx) as isize - p as isize;
                                *d = if ix >= 0 && ix < w as isize { src[ix as usize] } else { 0.0 };
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A convolution kernel's operands: the image `(B, Cin, H, W)`, the weight as a
/// matrix `(Cout, Cin*k*k)` and the bias `(Cout)`, contiguous float32.
pub(super) struct ConvOperands<'a> {
    pub x: &'a [f32],
    pub weight: &'a [f32],
    pub bias: &'a [f32],
    pub dims: (usize, usize, usize, usize),
    pub cout: usize,
}

/// The operands of a `kernel x kernel` convolution, checked to fit one another.
pub(super) fn conv_operands<'a>(
    op: &str,
    kernel: usize,
    (xs, xl): (&'a CpuStorage, &Layout),
    (ws, wl): (&'a CpuStorage, &Layout),
    (bs, bl): (&'a CpuStorage, &Layout),
) -> Result<ConvOperands<'a>> {
    let (x, weight, bias) = (contiguous_f32(xs, xl, op)?, contiguous_f32(ws, wl, op)?, contiguous_f32(bs, bl, op)?);
    let dims = xl.shape().dims4()?;
    let (cout, kdim) = wl.shape().dims2()?;
    if kdim != dims.1 * kernel * kernel || bias.len() != cout {
        candle_core::bail!("{op}: weight {:?} / bias {} do not fit input {:?}", wl.shape(), bias.len(), xl.shape());
    }
    Ok(ConvOperands { x, weight, bias, dims, cout })
}

/// Runs `run` on every tile with a per-thread scratch `B`: in parallel, each gemm on
/// one thread, when there are at least two tiles per thread; otherwise one tile after
/// the other, with gemm taking the threads.
pub(super) fn run_tiles<T: Sync, B: Default + Send>(tiles: &[T], run: impl Fn(&T, &mut B, gemm::Parallelism) + Sync) {
    let threads = rayon::current_num_threads();
    if tiles.len() >= 2 * threads {
        tiles.par_iter().for_each_init(B::default, |scratch, t| run(t, scratch, gemm::Parallelism::None));
    } else {
        let mut scratch = B::default();
        for t in tiles {
            run(t, &mut scratch, gemm::Parallelism::Rayon(threads));
        }
    }
}

impl candle_core::CustomOp3 for Conv2dGemm {
    fn name(&self) -> &'static str {
        "sdlab-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let ConvOperands { x, weight, bias, dims: (b, cin, h, w), cout } =
            conv_operands(self.name(), self.kernel, (xs, xl), (ws, wl), (bs, bl))?;
        let kdim = cin * self.kernel * self.kernel;
        let (ho, wo) = self.output_size(h, w);
        let n = ho * wo;
        let mut out = Vec::with_capacity(b * cout * n);
        for _ in 0..b {
            for &v in bias {
                out.extend(std::iter::repeat_n(v, n));
            }
        }
        let rows_per_tile = (TILE_FLOATS / (kdim * wo).max(1)).clamp(1, ho);
        let tiles: Vec<(usize, usize)> =
            (0..b).flat_map(|img| (0..ho).step_by(rows_per_tile).map(move |oy0| (img, oy0))).collect();
        let direct = self.kernel == 1 && self.stride == 1 && self.padding == 0;
        let out_ptr = OutPtr(out.as_mut_ptr());
        let run = |&(img, oy0): &(usize, usize), cols: &mut Vec<f32>, parallelism| {
            let oy1 = (oy0 + rows_per_tile).min(ho);
            let tile = (oy1 - oy0) * wo;
            let image = &x[img * cin * h * w..(img + 1) * cin * h * w];
            // A 1x1 convolution reads the input planes as they are.
            let (rhs, rhs_rs): (*const f32, isize) = if direct {
                (image[oy0 * wo..].as_ptr(), (h * w) as isize)
            } else {
                cols.resize(kdim * tile, 0.0);
                self.im2col_rows(image, cin, h, w, wo, oy0, oy1, cols);
                (cols.as_ptr(), tile as isize)
            };
            // SAFETY: dst is this tile's (cout x tile) block of image `img`, with row
            // stride n; lhs is (cout x kdim) row-major; rhs is (kdim x tile) with row
            // stride rhs_rs; all within their buffers. dst = 1 * dst + 1 * lhs @ rhs.
            unsafe {
                gemm::gemm(
                    cout,
                    tile,
                    kdim,
                    out_ptr.at(img * cout * n + oy0 * wo),
                    1,
                    n as isize,
                    true,
                    weight.as_ptr(),
                    1,
                    kdim as isize,
                    rhs,
                    1,
                    rhs_rs,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism,
                );
            }
        };
        run_tiles(&tiles, run);
        Ok((CpuStorage::F32(out), Shape::from((b, cout, ho, wo))))
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
            simd::widest(
                #[inline(always)]
                || self.normalise_group(bg, c, spatial, inp, out),
            )
        });
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }
}

impl GroupNormSilu<'_> {
    /// One group of one image: `inp` and `out` hold its `c / groups` channels.
    #[inline(always)]
    fn normalise_group(&self, bg: usize, c: usize, spatial: usize, inp: &[f32], out: &mut [f32]) {
        let n = inp.len() as f64;
        let mean = sum_f64(inp, |v| v as f64) / n;
        let var = sum_f64(inp, |v| (v as f64 - mean).powi(2)) / n;
        let rstd = 1.0 / (var + self.eps).sqrt();
        let first_channel = (bg % self.groups) * (c / self.groups);
        for (i, (o, v)) in out.chunks_mut(spatial).zip(inp.chunks(spatial)).enumerate() {
            let ch = first_channel + i;
            let scale = (rstd * self.weight[ch] as f64) as f32;
            let shift = (self.bias[ch] as f64 - mean * rstd * self.weight[ch] as f64) as f32;
            for (o, &v) in o.iter_mut().zip(v) {
                let z = v * scale + shift;
                *o = if self.silu { z / (1.0 + exp(-z)) } else { z };
            }
        }
    }
}

/// diffusers' GEGLU activation on the last dimension: `hidden * gelu(gate)` where
/// the input is `[hidden | gate]`, with the exact (erf) GELU, vectorised.
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
            simd::widest(
                #[inline(always)]
                || {
                    let (hidden, gate) = row.split_at(half);
                    for ((o, &h), &g) in out.iter_mut().zip(hidden).zip(gate) {
                        *o = h * gelu(g);
                    }
                },
            )
        });
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }
}

/// The exact (erf) GELU, as `torch.nn.functional.gelu`, vectorised and over all
/// threads: candle's runs libm's `erff` per element on one thread (4.1-4.5 ms of each
/// of SD 2's 23 text-encoder layers, 154 x 4096 values).
pub struct GeluErf;

/// Elements per parallel task: a few pages, so small inputs stay on one thread.
const GELU_CHUNK: usize = 16 * 1024;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "sdlab-gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, self.name())?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(GELU_CHUNK).zip(x.par_chunks(GELU_CHUNK)).for_each(|(out, x)| {
            simd::widest(
                #[inline(always)]
                || {
                    for (o, &v) in out.iter_mut().zip(x) {
                        *o = gelu(v);
                    }
                },
            )
        });
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }
}

#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// softmax(scale q kᵀ) v per head, for float32 tensors in the token layout
/// `(batch, tokens, heads * d)` that the projections produce: each head is read in
/// place through the gemm's strides (no copies into and out of `(batch * heads,
/// tokens, d)`); each block of queries is scaled as it is gathered. Query rows go in
/// blocks that each keep their scores in a per-thread buffer: a block's scores (64
/// rows x 4096 keys at 512x512, 1 MiB) stay in cache between the two gemms and the
/// softmax, where the chunked tensor version writes and re-reads tens of fresh
/// megabytes per chunk (measured 1.7 s against torch's 0.4 s for the UNet's first
/// self-attention at 512x512).
pub struct FusedAttention {
    pub heads: usize,
    pub scale: f32,
}

/// Query rows per block.
const ATTENTION_ROWS: usize = 64;

impl candle_core::CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "sdlab-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (q, k, v) = (
            contiguous_f32(qs, ql, self.name())?,
            contiguous_f32(ks, kl, self.name())?,
            contiguous_f32(vs, vl, self.name())?,
        );
        let heads = self.heads;
        let (b, nq, qdim) = ql.shape().dims3()?;
        let (_, nk, vdim) = vl.shape().dims3()?;
        if heads == 0
            || !qdim.is_multiple_of(heads)
            || !vdim.is_multiple_of(heads)
            || kl.shape().dims3()? != (b, nk, qdim)
            || vl.shape().dims3()?.0 != b
        {
            candle_core::bail!(
                "{}: q {:?}, k {:?}, v {:?} do not fit {heads} heads",
                self.name(),
                ql.shape(),
                kl.shape(),
                vl.shape()
            );
        }
        let (d, dv) = (qdim / heads, vdim / heads);
        // Each head's keys as (d, nk) rows: (b, nk, heads * d) swapped is (b * heads, d, nk).
        // The first gemm then packs them from contiguous rows instead of gathering every
        // key across the other heads' columns, once per query block (measured 10-25%
        // faster for the UNet's 64x64 self-attention).
        let keys = swapped(k, (b, nk, qdim));
        let mut out = vec![0f32; b * nq * vdim];
        let out_ptr = OutPtr(out.as_mut_ptr());
        let tasks: Vec<(usize, usize)> =
            (0..b * heads).flat_map(|bh| (0..nq).step_by(ATTENTION_ROWS).map(move |r0| (bh, r0))).collect();
        tasks.par_iter().for_each_init(Default::default, |(scores, q_block): &mut (Vec<f32>, Vec<f32>), &(bh, r0)| {
            let (img, head) = (bh / heads, bh % heads);
            let rows = ATTENTION_ROWS.min(nq - r0);
            scores.resize(rows * nk, 0.0);
            // the block's queries, scaled as diffusers scales them before the product
            q_block.clear();
            for r in r0..r0 + rows {
                let at = (img * nq + r) * qdim + head * d;
                q_block.extend(q[at..at + d].iter().map(|&x| x * self.scale));
            }
            // SAFETY: the q block (rows x d), the head's keys (d x nk, row stride nk) and
            // v (nk x dv, row stride vdim, head `head`'s columns of image `img`) lie
            // within their buffers; the scores buffer holds rows x nk; the output block
            // (rows x dv, row stride vdim) is this task's alone. scores = (scale q) kᵀ;
            // out = scores v.
            unsafe {
                gemm::gemm(
                    rows,
                    nk,
                    d,
                    scores.as_mut_ptr(),
                    1,
                    nk as isize,
                    false,
                    q_block.as_ptr(),
                    1,
                    d as isize,
                    keys.as_ptr().add(bh * d * nk),
                    1,
                    nk as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            simd::widest(
                #[inline(always)]
                || {
                    for row in scores.chunks_mut(nk) {
                        softmax_in_place(row);
                    }
                },
            );
            unsafe {
                gemm::gemm(
                    rows,
                    dv,
                    nk,
                    out_ptr.at((img * nq + r0) * vdim + head * dv),
                    1,
                    vdim as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    nk as isize,
                    v.as_ptr().add(img * nk * vdim + head * dv),
                    1,
                    vdim as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, nq, vdim))))
    }
}

/// Softmax over the last dimension, one row per task, with a vectorisable exp.
/// candle's CPU softmax calls the scalar libm `expf` (about 5 ns per element); at
/// 512x512 the UNet's first self-attention exponentiates 168 million scores per pass.
pub struct SoftmaxLastDim;

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "sdlab-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, self.name())?;
        let width = layout.shape().dims().last().copied().unwrap_or(1).max(1);
        let mut y = x.to_vec();
        y.par_chunks_mut(width).for_each(|row| {
            simd::widest(
                #[inline(always)]
                || softmax_in_place(row),
            )
        });
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }
}

/// One row's softmax, shared by the softmax and attention kernels.
#[inline(always)]
fn softmax_in_place(row: &mut [f32]) {
    // `for` loops, not `for_each`: an iterator's `fold` is a function of its own,
    // which inlined into three dispatch paths is left out of line and unvectorised.
    let max = max_f32(row);
    for x in row.iter_mut() {
        *x = exp(*x - max);
    }
    let inv = 1.0 / sum_f32(row);
    for x in row.iter_mut() {
        *x *= inv;
    }
}

/// `e^x`, branch-free so loops over it vectorise (libm's `expf` is a call per
/// element): Cody-Waite range reduction to `r` in [-ln2/2, ln2/2] and Cephes'
/// degree-6 polynomial, within 2 ulp of libm on [-87.3, 88] (tested), the range it
/// clamps to: below it softmax's and SiLU's results do not change, above it the
/// power of two would overflow the exponent bits.
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.0);
    // round(x / ln 2) with the 1.5 * 2^23 trick (no branch, no call): `shifted`'s
    // low mantissa bits hold n as a two's-complement integer
    let shifted = x * std::f32::consts::LOG2_E + 12582912.0;
    let n = shifted - 12582912.0;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5e-1;
    let e = p * r * r + r + 1.0;
    // 2^n * e: n's bits shifted into the exponent field, without a float-to-int
    // conversion (|n| < 2^8, so the low 9 bits carry it and the rest shift out)
    f32::from_bits(e.to_bits().wrapping_add(shifted.to_bits() << 23))
}

#[cfg(test)]
pub fn exp_for_test(x: f32) -> f32 {
    exp(x)
}

/// `erf(x)` within 1.4 ulp (tested), branch-free so that GEGLU's loop vectorises:
/// libm's `erff` is a call per element and took most of GEGLU's time (84 ms of
/// 4096 x 2560 at 512x512, torch 52 ms). Below 0.921875 it is `x + x p(x^2)`, above
/// `1 - e^q(|x|)` with `q` fitting `ln erfc` on [0.921875, 4] (past 4, erf rounds to 1);
/// both polynomials are least-squares fits in float64 (Chebyshev nodes). torch's own
/// vectorised GELU uses Abramowitz and Stegun 7.1.26, up to 5e-7 off in float32; this
/// one stays about as close to erf as libm's.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let s = x * x;
    let p = 8.392_699e-5 * s - 8.148_509e-4;
    let p = p * s + 5.201_592_6e-3;
    let p = p * s - 2.685_964_9e-2;
    let p = p * s + 1.128_370_1e-1;
    let p = p * s - 3.761_263_5e-1;
    let p = p * s + 1.283_791_7e-1;
    let small = x + x * p;
    let t = a.min(4.0);
    let q = -3.989_859_5e-8 * t + 2.496_777_1e-6;
    let q = q * t - 5.405_705_8e-5;
    let q = q * t + 6.388_862_4e-4;
    let q = q * t - 4.897_125_5e-3;
    let q = q * t + 2.670_983_2e-2;
    let q = q * t - 1.104_680_9e-1;
    let q = q * t - 6.315_051_3e-1;
    let q = q * t - 1.130_381_2;
    let q = q * t + 3.488_806_8e-4;
    let large = (1.0 - exp(q)).copysign(x);
    // NaN compares false and keeps `small`'s NaN
    if a > 0.921_875 {
        large
    } else {
        small
    }
}

#[cfg(test)]
pub fn erf_for_test(x: f32) -> f32 {
    erf(x)
}

/// Whether a tensor can take the kernels above.
pub fn applies(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32
}

pub(super) fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: expected float32 input, found {:?}", storage.dtype());
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: expected a contiguous input"),
    }
}
