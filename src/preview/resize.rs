//! Enlarging tiny previews for display.

use image::imageops::{self, FilterType};
use image::RgbImage;

/// Each pixel becomes a `factor` x `factor` block. A 32 x 32 latent preview is
/// too small for a terminal's pixel protocols, and smoothing would invent
/// detail the latent does not have, so nearest neighbour keeps one latent
/// position one visible square. A factor of 0 is taken as 1.
pub fn upscale_nearest(img: &RgbImage, factor: u32) -> RgbImage {
    let factor = factor.max(1);
    imageops::resize(img, img.width() * factor, img.height() * factor, FilterType::Nearest)
}

#[cfg(test)]
mod tests {
    use image::Rgb;

    use super::*;

    #[test]
    fn every_pixel_becomes_a_block() {
        let small = RgbImage::from_fn(5, 3, |x, y| Rgb([x as u8 * 40, y as u8 * 80, (x + y) as u8]));
        for factor in [1, 2, 3, 8] {
            let big = upscale_nearest(&small, factor);
            assert_eq!((big.width(), big.height()), (5 * factor, 3 * factor));
            for (x, y, pixel) in big.enumerate_pixels() {
                assert_eq!(pixel, small.get_pixel(x / factor, y / factor), "factor {factor} at ({x}, {y})");
            }
        }
        assert_eq!(upscale_nearest(&small, 0), small);
    }
}
