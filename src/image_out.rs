//! Decoded images to 8-bit pixels.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use image::RgbImage;

/// A `(1, 3, H, W)` or `(3, H, W)` image in [0, 1] to 8-bit RGB, rounding as
/// diffusers' `numpy_to_pil` does (`(x * 255).round()`).
pub fn to_rgb8(image: &Tensor) -> Result<RgbImage> {
    let image = match image.rank() {
        4 => image.squeeze(0)?,
        3 => image.clone(),
        r => bail!("expected an image tensor (1, 3, H, W), found rank {r}"),
    };
    let (channels, height, width) = image.dims3()?;
    if channels != 3 {
        bail!("expected 3 colour channels, found {channels}");
    }
    let pixels: Vec<u8> = image
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .permute((1, 2, 0))?
        .flatten_all()?
        .to_vec1::<f32>()?
        .into_iter()
        .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect();
    Ok(RgbImage::from_raw(width as u32, height as u32, pixels).expect("buffer matches the image size"))
}
