//! The copy between the image layout `(B, C, H*W)` and the transformer's token
//! layout `(B, H*W, C)`, in parallel cache-sized tiles: candle's strided copy runs on
//! one thread and took 9 ms each way for the UNet's 64x64 level (torch 3 ms or a view).

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::kernels::{applies, contiguous_f32, OutPtr};

/// `(B, M, N)` to `(B, N, M)`, contiguous.
pub fn swap_last_two(x: &Tensor) -> anyhow::Result<Tensor> {
    if applies(x) {
        return Ok(x.contiguous()?.apply_op1_no_bwd(&SwapLastTwo)?);
    }
    Ok(x.transpose(1, 2)?.contiguous()?)
}

struct SwapLastTwo;

/// Rows and columns per tile: 32 x 32 floats, 4 KiB read and 4 KiB written.
const TILE: usize = 32;

impl CustomOp1 for SwapLastTwo {
    fn name(&self) -> &'static str {
        "sdlab-swap-last-two"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, self.name())?;
        let (b, m, n) = layout.shape().dims3()?;
        Ok((CpuStorage::F32(swapped(x, (b, m, n))), Shape::from((b, n, m))))
    }
}

/// `x`, a contiguous `(b, m, n)`, as a contiguous `(b, n, m)`.
pub(super) fn swapped(x: &[f32], (b, m, n): (usize, usize, usize)) -> Vec<f32> {
    let mut out = vec![0f32; b * m * n];
    let out_ptr = OutPtr(out.as_mut_ptr());
    // a task per band of TILE input rows, which becomes a band of output columns
    let bands: Vec<(usize, usize)> = (0..b).flat_map(|img| (0..m).step_by(TILE).map(move |r| (img, r))).collect();
    bands.par_iter().for_each(|&(img, r0)| {
        let src = &x[img * m * n..(img + 1) * m * n];
        let r1 = (r0 + TILE).min(m);
        for c0 in (0..n).step_by(TILE) {
            for c in c0..(c0 + TILE).min(n) {
                // SAFETY: output row c, columns r0..r1 of image img: this band's alone.
                let dst = unsafe { std::slice::from_raw_parts_mut(out_ptr.at(img * m * n + c * m + r0), r1 - r0) };
                for (d, r) in dst.iter_mut().zip(r0..r1) {
                    *d = src[r * n + c];
                }
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn swaps_like_a_transpose_on_ragged_sizes() {
        for (b, m, n) in [(1, 1, 1), (2, 33, 70), (1, 64, 32), (3, 5, 100)] {
            let x = Tensor::arange(0f32, (b * m * n) as f32, &Device::Cpu).unwrap().reshape((b, m, n)).unwrap();
            let ours = swap_last_two(&x).unwrap();
            let reference = x.transpose(1, 2).unwrap().contiguous().unwrap();
            assert_eq!(ours.dims(), &[b, n, m]);
            assert_eq!(
                ours.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                reference.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
        }
    }
}
