//! 3x3 convolutions (stride 1, padding 1) by Winograd's minimal filtering F(2x2, 3x3)
//! (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2015).
//!
//! Each 2x2 block of outputs costs 16 products per channel pair instead of 36, so the
//! gemm, where a convolution spends its time, does 2.25 times less work: the input's
//! 4x4 tiles and the 3x3 filters are transformed into 16 planes, multiplied plane by
//! plane (16 gemms of `Cout x Cin` by `Cin x tiles`), and transformed back. The
//! transforms use only 0, ±1 and ±1/2, so every value stays within a few roundings
//! of the direct sum, as a reordered sum would.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape};
use rayon::prelude::*;

use super::kernels::{conv_operands, run_tiles, ConvOperands, OutPtr, TILE_FLOATS};
use super::simd::widest;

/// Transformed planes: a 4x4 input tile gives 16 values, one per plane.
const PLANES: usize = 16;

/// The convolution, for inputs `(B, Cin, H, W)`, the weight as `(Cout, Cin*9)` and the
/// bias `(Cout)`, like `kernels::Conv2dGemm`, whose 3x3 stride-1 padding-1 case it
/// replaces where the image is large enough (`worth_it`).
pub struct Winograd3x3;

impl Winograd3x3 {
    /// Whether the image has tiles enough for 16 narrow gemms to beat one im2col gemm
    /// (measured per UNet and VAE level at 512x512).
    pub fn worth_it(h: usize, w: usize) -> bool {
        h * w >= 32 * 32
    }
}

impl CustomOp3 for Winograd3x3 {
    fn name(&self) -> &'static str {
        "sdlab-winograd3x3"
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
            conv_operands(self.name(), 3, (xs, xl), (ws, wl), (bs, bl))?;
        let u = transform_weights(weight, cout, cin);
        let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
        // blocks of equal height, each holding about TILE_FLOATS transformed values
        let per_image = th.div_ceil((TILE_FLOATS / (PLANES * cin.max(cout) * tw)).clamp(1, th));
        let rows_per_block = th.div_ceil(per_image);
        let blocks: Vec<(usize, usize)> =
            (0..b).flat_map(|img| (0..th).step_by(rows_per_block).map(move |ty0| (img, ty0))).collect();
        let mut out = vec![0f32; b * cout * h * w];
        let out_ptr = OutPtr(out.as_mut_ptr());
        let geometry = Geometry { cin, cout, h, w, tw };
        let run = |&(img, ty0): &(usize, usize), (v, m): &mut (Vec<f32>, Vec<f32>), parallelism| {
            let rows = ty0..(ty0 + rows_per_block).min(th);
            let tiles = rows.len() * tw;
            v.resize(PLANES * cin * tiles, 0.0);
            m.resize(PLANES * cout * tiles, 0.0);
            let image = &x[img * cin * h * w..(img + 1) * cin * h * w];
            widest(
                #[inline(always)]
                || geometry.transform_input(image, rows.clone(), v),
            );
            for plane in 0..PLANES {
                // SAFETY: m's plane is (cout x tiles) row-major, u's (cout x cin) with row
                // stride 16 cin, v's (cin x tiles), all inside their buffers. m = u @ v.
                unsafe {
                    gemm::gemm(
                        cout,
                        tiles,
                        cin,
                        m[plane * cout * tiles..].as_mut_ptr(),
                        1,
                        tiles as isize,
                        false,
                        u[plane * cin..].as_ptr(),
                        1,
                        (PLANES * cin) as isize,
                        v[plane * cin * tiles..].as_ptr(),
                        1,
                        tiles as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        parallelism,
                    );
                }
            }
            widest(
                #[inline(always)]
                || geometry.transform_output(m, bias, rows.clone(), out_ptr, img * cout * h * w),
            );
        };
        run_tiles(&blocks, run);
        Ok((CpuStorage::F32(out), Shape::from((b, cout, h, w))))
    }
}

/// `G g Gᵀ` for every filter, as `(Cout, 16, Cin)` (so each output channel's rows are
/// one chunk, transformed in parallel), with `G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1]`.
fn transform_weights(weight: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    let mut u = vec![0f32; cout * PLANES * cin];
    let g_rows = |a: f32, b: f32, c: f32| [a, (a + b + c) * 0.5, (a - b + c) * 0.5, c];
    u.par_chunks_mut(PLANES * cin).zip(weight.par_chunks(cin * 9)).for_each(|(u, filters)| {
        for (ci, g) in filters.chunks_exact(9).enumerate() {
            // columns of G g (4 rows x 3 columns), then each of its rows times Gᵀ
            let cols = [g_rows(g[0], g[3], g[6]), g_rows(g[1], g[4], g[7]), g_rows(g[2], g[5], g[8])];
            for i in 0..4 {
                let row = g_rows(cols[0][i], cols[1][i], cols[2][i]);
                for (j, value) in row.into_iter().enumerate() {
                    u[(i * 4 + j) * cin + ci] = value;
                }
            }
        }
    });
    u
}

/// The sizes one convolution's transforms share. Tiles are 2x2 blocks of outputs,
/// `tw` to a row; a block of tile rows is transformed at once.
#[derive(Clone, Copy)]
struct Geometry {
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    tw: usize,
}

impl Geometry {
    /// `Bᵀ d B` for each 4x4 input tile `d` of tile rows `rows` (input rows `2ty-1` to
    /// `2ty+2`, zero outside the image), into `v` as 16 planes of `(Cin, tiles)`, with
    /// `Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]`. Loops run along a tile row, so
    /// they vectorise.
    #[inline(always)]
    fn transform_input(&self, image: &[f32], rows: std::ops::Range<usize>, v: &mut [f32]) {
        let Self { cin, h, w, tw, .. } = *self;
        let tiles = rows.len() * tw;
        // one input row split into the padded row's even and odd columns: even[k] is
        // x = 2k - 1 (x = -1 is the left padding), odd[k] is x = 2k; zero past the end
        let (mut even, mut odd) = (vec![0f32; tw + 1], vec![0f32; tw + 1]);
        // Bᵀ applied along each of the four input rows: [row][column of Bᵀ d][tile]
        let mut across = vec![0f32; 16 * tw];
        let mut planes: Vec<&mut [f32]> = v.chunks_exact_mut(cin * tiles).collect();
        for c in 0..cin {
            let plane = &image[c * h * w..(c + 1) * h * w];
            for ty in rows.clone() {
                for r in 0..4 {
                    let y = (2 * ty + r).wrapping_sub(1);
                    if y < h {
                        let src = &plane[y * w..][..w];
                        for ((pair, o), e) in src.chunks_exact(2).zip(odd.iter_mut()).zip(even[1..].iter_mut()) {
                            *o = pair[0];
                            *e = pair[1];
                        }
                        if w % 2 == 1 {
                            odd[w / 2] = src[w - 1];
                        }
                        odd[w.div_ceil(2)..].fill(0.0);
                        even[w / 2 + 1..].fill(0.0);
                    } else {
                        even.fill(0.0);
                        odd.fill(0.0);
                    }
                    // tile tx reads d = (even[tx], odd[tx], even[tx + 1], odd[tx + 1])
                    let (e0, e1, o0, o1) = (&even[..tw], &even[1..], &odd[..tw], &odd[1..]);
                    let (a0, rest) = across[r * 4 * tw..][..4 * tw].split_at_mut(tw);
                    let (a1, rest) = rest.split_at_mut(tw);
                    let (a2, a3) = rest.split_at_mut(tw);
                    for (a, (&x, &y)) in a0.iter_mut().zip(e0.iter().zip(e1)) {
                        *a = x - y;
                    }
                    for (a, (&x, &y)) in a1.iter_mut().zip(o0.iter().zip(e1)) {
                        *a = x + y;
                    }
                    for (a, (&x, &y)) in a2.iter_mut().zip(e1.iter().zip(o0)) {
                        *a = x - y;
                    }
                    for (a, (&x, &y)) in a3.iter_mut().zip(o0.iter().zip(o1)) {
                        *a = x - y;
                    }
                }
                let t0 = (ty - rows.start) * tw;
                for j in 0..4 {
                    let row = |r: usize| &across[(r * 4 + j) * tw..][..tw];
                    // Bᵀ's rows: (0, 2, -), (1, 2, +), (2, 1, -), (1, 3, -)
                    for (i, (a, b, sign)) in
                        [(0, 2, -1.0), (1, 2, 1.0), (2, 1, -1.0), (1, 3, -1.0)].into_iter().enumerate()
                    {
                        let dst = &mut planes[i * 4 + j][c * tiles + t0..][..tw];
                        for ((o, &x), &y) in dst.iter_mut().zip(row(a)).zip(row(b)) {
                            *o = x + sign * y;
                        }
                    }
                }
            }
        }
    }

    /// `Aᵀ m A` plus the bias for each tile's 16 products `m` (planes of `(Cout,
    /// tiles)`), written to output rows `2ty` and `2ty+1` of image `offset` in `out`,
    /// with `Aᵀ = [1 1 1 0; 0 1 -1 -1]`.
    #[inline(always)]
    fn transform_output(&self, m: &[f32], bias: &[f32], rows: std::ops::Range<usize>, out: OutPtr, offset: usize) {
        let Self { cout, h, w, tw, .. } = *self;
        let tiles = rows.len() * tw;
        let mut pair = [vec![0f32; 2 * tw], vec![0f32; 2 * tw]];
        // Aᵀ down the columns: s_j = m_0j + m_1j + m_2j, d_j = m_1j - m_2j - m_3j
        let mut sums = vec![0f32; 4 * tw];
        let mut diffs = vec![0f32; 4 * tw];
        for co in 0..cout {
            let bias = bias[co];
            for ty in rows.clone() {
                let t0 = (ty - rows.start) * tw;
                let p = |plane: usize| &m[(plane * cout + co) * tiles + t0..][..tw];
                for j in 0..4 {
                    let (m0, m1, m2, m3) = (p(j), p(4 + j), p(8 + j), p(12 + j));
                    let s = &mut sums[j * tw..][..tw];
                    for (((o, &a), &b), &c) in s.iter_mut().zip(m0).zip(m1).zip(m2) {
                        *o = a + b + c;
                    }
                    let d = &mut diffs[j * tw..][..tw];
                    for (((o, &a), &b), &c) in d.iter_mut().zip(m1).zip(m2).zip(m3) {
                        *o = a - b - c;
                    }
                }
                // Aᵀ along the rows, into the two output rows' interleaved columns
                for (dst, src) in pair.iter_mut().zip([&sums, &diffs]) {
                    let (x0, x1, x2, x3) = (&src[..tw], &src[tw..2 * tw], &src[2 * tw..3 * tw], &src[3 * tw..]);
                    for (o, (((&a, &b), &c), &d)) in dst.chunks_exact_mut(2).zip(x0.iter().zip(x1).zip(x2).zip(x3)) {
                        o[0] = a + b + c + bias;
                        o[1] = b - c - d + bias;
                    }
                }
                for (i, values) in pair.iter().enumerate() {
                    let y = 2 * ty + i;
                    if y < h {
                        // SAFETY: row y of channel co lies inside this image's output,
                        // and only this block writes output rows 2ty and 2ty+1.
                        let dst = unsafe { std::slice::from_raw_parts_mut(out.at(offset + (co * h + y) * w), w) };
                        dst.copy_from_slice(&values[..w]);
                    }
                }
            }
        }
    }
}
