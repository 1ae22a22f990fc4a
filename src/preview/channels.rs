//! One latent channel at a time, for the talk's "a latent is four images".

use anyhow::{bail, Result};
use candle_core::Tensor;
use image::{Rgb, RgbImage};

use super::{stats::Stats, unit_to_u8, Planes};

/// Channel `channel` of a `(1, C, h, w)` or `(C, h, w)` latent as a `w` x `h`
/// grey image, with that channel's mean at mid-grey and mean ± 3 std at black
/// and white (beyond that clamps).
///
/// Each channel gets its own scale because the four SD channels sit at
/// different offsets and spreads (after denoising, one of them is typically
/// shifted well away from 0): a single fixed range would leave some channels
/// flat grey or saturated. Normalising shows each channel's structure side by
/// side; ± 3 std keeps about 99.7% of Gaussian values, so the initial noise
/// shows its full texture without clipping. The price is that brightness is not
/// comparable between channels, which is what [`super::per_channel_stats`] is
/// for. A constant channel is all mid-grey.
pub fn channel_grey(latents: &Tensor, channel: usize) -> Result<RgbImage> {
    let planes = Planes::of(latents)?;
    if channel >= planes.channels {
        bail!("channel {channel} asked for, but the latent has {} channels", planes.channels);
    }
    let plane = planes.plane(channel);
    let Stats { mean, std, .. } = Stats::of(plane)?;
    let span = 6.0 * std;
    let grey = |v: f32| {
        let level = if span > 0.0 { unit_to_u8(((v as f64 - mean) / span + 0.5) as f32) } else { 128 };
        Rgb([level; 3])
    };
    let width = planes.width;
    Ok(RgbImage::from_fn(width as u32, planes.height as u32, |x, y| grey(plane[y as usize * width + x as usize])))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};
    use image::Rgb;

    use super::*;

    #[test]
    fn each_value_is_placed_by_its_channels_mean_and_std() {
        // Channel 0 is zeros, so only channel 1's own statistics may matter.
        let channel_one = [2.0f32, 4.0, 3.0, 0.0, 6.0, 1.5];
        let mut data = vec![0f32; 2 * 6];
        data[6..].copy_from_slice(&channel_one);
        let latent = Tensor::from_vec(data, (1, 2, 2, 3), &Device::Cpu).unwrap();
        let n = channel_one.len() as f64;
        let mean = channel_one.iter().map(|&v| v as f64).sum::<f64>() / n;
        let std = (channel_one.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        let expect = |v: f64| (((v - mean) / (6.0 * std) + 0.5).clamp(0.0, 1.0) * 255.0).round() as u8;

        let image = channel_grey(&latent, 1).unwrap();
        assert_eq!((image.width(), image.height()), (3, 2));
        for (i, &v) in channel_one.iter().enumerate() {
            let pixel = *image.get_pixel(i as u32 % 3, i as u32 / 3);
            assert_eq!(pixel, Rgb([expect(v as f64); 3]), "value {v}");
        }
    }

    #[test]
    fn a_spike_beyond_three_std_saturates() {
        // 15 zeros and one 10: mean 0.625, std 2.42, so 10 is 3.9 std out.
        let mut data = vec![0f32; 16];
        data[5] = 10.0;
        let latent = Tensor::from_vec(data, (4, 4), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let image = channel_grey(&latent, 0).unwrap();
        assert_eq!(*image.get_pixel(1, 1), Rgb([255; 3]));
        // 0 is (0 - 0.625) / (6 * 2.4206) + 0.5 = 0.457 -> 116.5.
        assert_eq!(*image.get_pixel(0, 0), Rgb([117; 3]));
    }

    #[test]
    fn the_mean_is_mid_grey() {
        // -1, 0, 1, 0: mean 0, population std sqrt(1/2), so ±1 is ±0.2357 of the range
        // around 0.5: 67.4 and 187.6.
        let latent = Tensor::from_vec(vec![-1f32, 0.0, 1.0, 0.0], (1, 1, 2, 2), &Device::Cpu).unwrap();
        let image = channel_grey(&latent, 0).unwrap();
        let levels: Vec<u8> = image.pixels().map(|p| p[0]).collect();
        assert_eq!(levels, [67, 128, 188, 128]);
        // A constant channel is mid-grey, not a division by zero.
        let flat = Tensor::full(7f32, (1, 1, 2, 2), &Device::Cpu).unwrap();
        assert!(channel_grey(&flat, 0).unwrap().pixels().all(|p| *p == Rgb([128; 3])));
    }

    #[test]
    fn grey_is_monotone_in_the_value() {
        let reference = super::super::sd2_tiny_reference();
        let latent = &reference["init_latents"];
        let values = latent.squeeze(0).unwrap().get(2).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let image = channel_grey(latent, 2).unwrap();
        let levels: Vec<u8> = image.pixels().map(|p| p[0]).collect();
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
        assert!(order.windows(2).all(|w| levels[w[0]] <= levels[w[1]]));
        assert!(levels.iter().any(|&l| l < 64) && levels.iter().any(|&l| l > 192), "noise spans the range");
    }

    #[test]
    fn channel_out_of_range_is_an_error() {
        let latent = Tensor::zeros((1, 4, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(channel_grey(&latent, 4).unwrap_err().to_string().contains("4 channels"));
    }
}
