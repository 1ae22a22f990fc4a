//! The instant "what does the latent look like" preview, without the VAE.

use anyhow::{bail, Result};
use candle_core::Tensor;
use image::RgbImage;

use super::{rgb_image, unit_to_u8, Planes};

/// How much each of the four latent channels adds to R, G and B (one row per
/// channel). These are ComfyUI's `latent_formats.SD15.latent_rgb_factors`
/// (`comfy/latent_formats.py`, which gives SD15 no bias), also used by
/// stable-diffusion.cpp as `sd_latent_rgb_proj` with a zero bias
/// (`latent-preview.h`). They were fitted for the SD 1.x autoencoder; ComfyUI
/// applies them to SD 2.x too (`supported_models.SD20` uses
/// `latent_formats.SD15`), since SD 2.x keeps that autoencoder's latent space
/// and its scaling factor 0.18215. They apply to latents as the UNet sees
/// them, i.e. after that scaling, which is what the session stores.
const SD15_LATENT_RGB_FACTORS: [[f32; 3]; 4] =
    [[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]];

/// One pixel per latent position: the linear 4 -> 3 projection above, then
/// [-1, 1] mapped to [0, 255] and clamped, as ComfyUI's `preview_to_image`
/// and stable-diffusion.cpp do (they truncate to bytes where this rounds, so a
/// channel may differ from theirs by one level). It costs a few thousand
/// multiplications, so the UI can show it after every step, long before a VAE
/// decode would finish; it is only a colour sketch of the final image.
///
/// Accepts `(1, 4, h, w)` or `(4, h, w)`; the image is `w` x `h`.
pub fn latent_to_rgb(latents: &Tensor) -> Result<RgbImage> {
    let planes = Planes::of(latents)?;
    if planes.channels != 4 {
        bail!("the latent-to-RGB factors are for 4-channel latents, found {} channels", planes.channels);
    }
    let channels: [&[f32]; 4] = std::array::from_fn(|c| planes.plane(c));
    let pixels = (0..planes.height * planes.width)
        .flat_map(|position| {
            let latent: [f32; 4] = std::array::from_fn(|c| channels[c][position]);
            (0..3).map(move |colour| {
                let value: f32 = latent.iter().zip(&SD15_LATENT_RGB_FACTORS).map(|(v, row)| v * row[colour]).sum();
                unit_to_u8((value + 1.0) / 2.0)
            })
        })
        .collect();
    Ok(rgb_image(planes.width, planes.height, pixels))
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};
    use image::Rgb;

    use super::*;

    /// A (1, 4, 2, 3) latent that is `value` in `channel` and 0 elsewhere.
    fn one_hot(channel: usize, value: f32) -> Tensor {
        let mut data = vec![0f32; 4 * 2 * 3];
        data[channel * 6..(channel + 1) * 6].fill(value);
        Tensor::from_vec(data, (1, 4, 2, 3), &Device::Cpu).unwrap()
    }

    #[test]
    fn one_in_a_channel_gives_that_channels_factors() {
        // Channel 0: (0.3512 + 1) / 2 * 255 = 172.28, (0.2297 + 1) / 2 * 255 = 156.79,
        // (0.3227 + 1) / 2 * 255 = 168.64.
        let image = latent_to_rgb(&one_hot(0, 1.0)).unwrap();
        assert_eq!((image.width(), image.height()), (3, 2));
        assert!(image.pixels().all(|p| *p == Rgb([172, 157, 169])));
        // Channel 3: (1 - 0.2120) / 2 * 255 = 100.47, (1 - 0.2616) / 2 * 255 = 94.15,
        // (1 - 0.7177) / 2 * 255 = 35.99.
        let image = latent_to_rgb(&one_hot(3, 1.0)).unwrap();
        assert!(image.pixels().all(|p| *p == Rgb([100, 94, 36])));
        // Zero is mid-grey.
        let image = latent_to_rgb(&one_hot(1, 0.0)).unwrap();
        assert_eq!(*image.get_pixel(0, 0), Rgb([128, 128, 128]));
    }

    #[test]
    fn channels_add_and_out_of_range_values_clamp() {
        let image = latent_to_rgb(&one_hot(0, 10.0)).unwrap();
        assert_eq!(*image.get_pixel(2, 1), Rgb([255, 255, 255]));
        let image = latent_to_rgb(&one_hot(3, 10.0)).unwrap();
        assert_eq!(*image.get_pixel(2, 1), Rgb([0, 0, 0]));
        // 1 in channels 1 and 2: R = 0.3250 - 0.2829 = 0.0421 -> 132.87,
        // G = 0.4974 + 0.1762 = 0.6736 -> 213.38, B = 0.2350 + 0.2721 = 0.5071 -> 192.16.
        let latent = (one_hot(1, 1.0) + one_hot(2, 1.0)).unwrap();
        assert_eq!(*latent_to_rgb(&latent).unwrap().get_pixel(1, 0), Rgb([133, 213, 192]));
    }

    #[test]
    fn pixels_follow_positions_and_dtypes() {
        // Only position (row 1, column 2) is lit; the bare (4, h, w) form and f16 work too.
        let mut data = vec![0f32; 4 * 2 * 3];
        data[5] = 1.0;
        let latent = Tensor::from_vec(data, (4, 2, 3), &Device::Cpu).unwrap().to_dtype(DType::F16).unwrap();
        let image = latent_to_rgb(&latent).unwrap();
        assert_eq!(*image.get_pixel(2, 1), Rgb([172, 157, 169]));
        assert_eq!(*image.get_pixel(1, 1), Rgb([128, 128, 128]));
        assert_eq!(*image.get_pixel(2, 0), Rgb([128, 128, 128]));
    }

    #[test]
    fn other_shapes_are_errors() {
        let three = Tensor::zeros((1, 3, 4, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(latent_to_rgb(&three).unwrap_err().to_string().contains("3 channels"));
        let batch = Tensor::zeros((2, 4, 4, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(latent_to_rgb(&batch).is_err());
        let flat = Tensor::zeros((4, 16), DType::F32, &Device::Cpu).unwrap();
        assert!(latent_to_rgb(&flat).is_err());
    }

    #[test]
    fn fixture_latent_is_32_by_32() {
        let reference = super::super::sd2_tiny_reference();
        let image = latent_to_rgb(&reference["init_latents"]).unwrap();
        assert_eq!((image.width(), image.height()), (32, 32));
        // Unit-variance noise should spread over many colours, not saturate to a few.
        let distinct: std::collections::HashSet<_> = image.pixels().collect();
        assert!(distinct.len() > 500, "{} distinct colours", distinct.len());
    }
}
