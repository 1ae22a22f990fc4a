//! A text token's cross-attention map over the predicted x0: where in the picture
//! the UNet looked at that word.
//!
//! Unlike the rest of this module this works on plain data (the map as `f32`s
//! and the x0 preview as an image), because the maps reach the lab as plain data
//! and the UI thread blends the one chosen token whenever the choice changes.

use anyhow::{bail, Result};
use image::{Rgb, RgbImage};

use super::unit_to_u8;

/// The colour where the map is at its peak: yellow, the hot end of [`heat`].
pub const HOT: Rgb<u8> = Rgb([255, 255, 0]);

/// `x0` with `map` (row-major, `height` x `width`) laid over it: the map is scaled
/// so that its minimum is 0 and its maximum 1, and each pixel mixes in the colour
/// of [`heat`] in that proportion. So the hottest position shows [`HOT`], the
/// coldest the x0 preview untouched, and a flat map (no position preferred) the
/// preview alone. Each token's share of the attention is small and its range
/// differs from token to token; scaling per token is what makes one map readable.
///
/// The map is sampled by nearest neighbour when the picture is larger than the
/// map's grid (a VAE decode, say, is 8 times the latent's size).
pub fn attention_overlay(x0: &RgbImage, map: &[f32], height: usize, width: usize) -> Result<RgbImage> {
    if map.len() != height * width || map.is_empty() {
        bail!("an attention map of {height} x {width} needs that many values, found {}", map.len());
    }
    let (lo, hi) = map.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let span = hi - lo;
    let (img_w, img_h) = (x0.width() as usize, x0.height() as usize);
    Ok(RgbImage::from_fn(x0.width(), x0.height(), |x, y| {
        let (mx, my) = (x as usize * width / img_w, y as usize * height / img_h);
        let v = if span > 0.0 { ((map[my * width + mx] - lo) / span).clamp(0.0, 1.0) } else { 0.0 };
        let base = x0.get_pixel(x, y).0;
        let hot = heat(v);
        Rgb(std::array::from_fn(|c| unit_to_u8((f32::from(base[c]) / 255.0) * (1.0 - v) + hot[c] * v)))
    }))
}

/// Red for a little attention, through orange, to yellow ([`HOT`]) for the most.
fn heat(v: f32) -> [f32; 3] {
    [1.0, v, 0.0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grey(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| Rgb([(10 * x + 40) as u8, (20 * y + 30) as u8, 90]))
    }

    #[test]
    fn the_peak_is_hot_and_the_rest_keeps_the_x0_colour() {
        let x0 = grey(4, 3);
        let mut map = vec![0.0f32; 12];
        map[4 + 2] = 1.0; // x = 2, y = 1
        let blended = attention_overlay(&x0, &map, 3, 4).unwrap();
        assert_eq!(blended.dimensions(), (4, 3));
        for (x, y, pixel) in blended.enumerate_pixels() {
            let expected = if (x, y) == (2, 1) { HOT } else { *x0.get_pixel(x, y) };
            assert_eq!(*pixel, expected, "({x}, {y})");
        }
    }

    #[test]
    fn the_map_is_scaled_per_token_and_mixed_in_proportion() {
        // tiny probabilities, as a real token's share is: 0.01 is the minimum, 0.03 the maximum
        let x0 = RgbImage::from_pixel(3, 1, Rgb([0, 0, 200]));
        let blended = attention_overlay(&x0, &[0.01, 0.02, 0.03], 1, 3).unwrap();
        assert_eq!(*blended.get_pixel(0, 0), Rgb([0, 0, 200]));
        // halfway: half the preview's blue, half heat(0.5) = (1, 0.5, 0)
        assert_eq!(*blended.get_pixel(1, 0), Rgb([128, 64, 100]));
        assert_eq!(*blended.get_pixel(2, 0), HOT);
        // a flat map prefers no position: the preview alone
        let flat = attention_overlay(&x0, &[0.5; 3], 1, 3).unwrap();
        assert_eq!(flat, x0);
    }

    #[test]
    fn a_larger_picture_samples_the_map_by_nearest_neighbour() {
        let x0 = grey(4, 4);
        let blended = attention_overlay(&x0, &[0.0, 1.0, 0.0, 0.0], 2, 2).unwrap();
        for (x, y, pixel) in blended.enumerate_pixels() {
            let expected = if x >= 2 && y < 2 { HOT } else { *x0.get_pixel(x, y) };
            assert_eq!(*pixel, expected, "({x}, {y})");
        }
    }

    #[test]
    fn a_map_of_the_wrong_size_is_an_error() {
        let x0 = grey(2, 2);
        assert!(attention_overlay(&x0, &[0.0; 3], 2, 2).is_err());
        assert!(attention_overlay(&x0, &[], 0, 0).is_err());
    }
}
