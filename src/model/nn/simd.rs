//! Runs a kernel's inner loops compiled for the widest vector unit the CPU has.
//!
//! The build targets baseline x86-64, so the loops the compiler vectorises run four
//! floats wide; the same loops compiled for AVX-512 run sixteen wide (the softmax of
//! the UNet's attention took 12% of a 512x512 step before). The choice is made at run
//! time, so one binary serves every x86-64 CPU. No floating-point operation changes:
//! Rust never contracts a multiply and an add into an FMA, so every path rounds alike.

/// Calls `f` from a function compiled with AVX-512 (or AVX2 and FMA) enabled when the
/// CPU has it; `f` and what it inlines are vectorised for that unit. Mark the closure
/// `#[inline(always)]`: it has three call sites here, and a large closure left out of
/// line is compiled for the baseline only.
#[inline(always)]
pub fn widest<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            return unsafe { avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Lanes of the reductions below: a reduction over independent lanes vectorises,
/// one running total (a chain of dependent adds) does not. They use `for` loops
/// rather than iterator adapters, whose `fold` may stay out of line (see `widest`).
const LANES: usize = 16;

/// `xs`'s elements mapped by `map` and folded by `combine` from `init`, over
/// independent lanes, then the lanes and the tail folded likewise.
#[inline(always)]
fn fold_lanes<T: Copy>(xs: &[f32], init: T, map: impl Fn(f32) -> T, combine: impl Fn(T, T) -> T) -> T {
    let mut lanes = [init; LANES];
    let chunks = xs.chunks_exact(LANES);
    let mut total = init;
    for &v in chunks.remainder() {
        total = combine(total, map(v));
    }
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = combine(*lane, map(v));
        }
    }
    for lane in lanes {
        total = combine(total, lane);
    }
    total
}

/// `xs`'s elements mapped by `f` and summed in f64, over independent lanes.
#[inline(always)]
pub fn sum_f64(xs: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    fold_lanes(xs, 0.0, f, |a, b| a + b)
}

/// The sum of `xs` in f32, over independent lanes.
#[inline(always)]
pub fn sum_f32(xs: &[f32]) -> f32 {
    fold_lanes(xs, 0.0, |v| v, |a, b| a + b)
}

/// The largest element of `xs` (negative infinity when empty), over independent lanes.
#[inline(always)]
pub fn max_f32(xs: &[f32]) -> f32 {
    fold_lanes(xs, f32::NEG_INFINITY, |v| v, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_match_plain_loops_on_every_length() {
        for n in [0, 1, 15, 16, 17, 100, 4096 + 3] {
            let xs: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.25).collect();
            let exact: f64 = xs.iter().map(|&v| v as f64).sum();
            assert_eq!(sum_f64(&xs, |v| v as f64), exact, "n {n}");
            assert_eq!(sum_f64(&xs, |v| (v as f64).powi(2)), xs.iter().map(|&v| (v as f64).powi(2)).sum::<f64>());
            // quarters sum exactly in f32 too, in any order
            assert_eq!(widest(|| sum_f32(&xs)), exact as f32, "n {n}");
            let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(widest(|| max_f32(&xs)), max, "n {n}");
        }
    }
}
