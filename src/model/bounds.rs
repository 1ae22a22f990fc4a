//! Bounds on the sizes and floats of a model's configs, shared by the UNet's, the
//! VAE's and the text encoder's checks: a config past them fails with its field
//! named, before anything derived from it overflows or becomes NaN.

use std::fmt::Display;

/// The UNet's and the VAE's limits, far past SD's (4 blocks of at most 1280
/// channels, 2 layers per block) and far from what would overflow: the scale factor
/// `2^(blocks - 1)`, `4 * block_out_channels[0]`, `layers_per_block + 1`.
pub const MAX_BLOCKS: usize = 8;
pub const MAX_CHANNELS: usize = 65536;
pub const MAX_LAYERS: usize = 64;

/// The first `(field, value, max)` whose value is outside `1..=max`, as the message
/// naming it.
pub fn first_out_of_range<F: Display>(sizes: &[(F, usize, usize)]) -> Result<(), String> {
    match sizes.iter().find(|(_, value, max)| !(1..=*max).contains(value)) {
        Some((field, value, max)) => Err(format!("{field}: expected 1 to {max}, found {value}")),
        None => Ok(()),
    }
}

/// A factor the model multiplies and divides by in float32: it and its inverse must
/// be ordinary float32 numbers, or values become 0 or inf.
pub fn fits_f32_both_ways(factor: f64) -> bool {
    (factor as f32).is_normal() && ((1.0 / factor) as f32).is_normal()
}

/// A norm's epsilon, added in float32 before a square root and a division.
pub fn check_eps(field: &str, eps: f64) -> Result<(), String> {
    let as_f32 = eps as f32;
    if as_f32.is_normal() && as_f32.is_sign_positive() {
        Ok(())
    } else {
        Err(format!("{field}: expected a positive number float32 can hold (1.2e-38 or more), found {eps:?}"))
    }
}
