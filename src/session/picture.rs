//! The picture an image-to-image run starts from: read from a file, sized for the
//! VAE, and identified by its pixels.

use std::path::Path;

use anyhow::{anyhow, Result};
use candle_core::{Device, Tensor};
use image::RgbImage;
use sha2::{Digest, Sha256};

use crate::fsutil::{limits, read_regular};

/// A picture read for image to image, and what was done to it.
pub struct Picture {
    pub rgb: RgbImage,
    /// Said when the picture was resized (its sides were not multiples of the VAE factor).
    pub note: Option<String>,
}

/// Reads the PNG `path` (alpha is dropped) and, as
/// diffusers' `VaeImageProcessor` does, shrinks it to the nearest multiple of
/// `factor` on each side with a Lanczos filter when it is not one already.
pub fn read_picture(path: &Path, factor: usize) -> Result<Picture> {
    let bytes = read_regular(path, limits::PNG)?;
    let decoded =
        image::load_from_memory(&bytes).map_err(|e| anyhow!("{}: cannot read the picture ({e})", path.display()))?;
    let rgb = decoded.to_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let (tw, th) = (w - w % factor, h - h % factor);
    if tw == 0 || th == 0 {
        anyhow::bail!("{}: the picture is {w}x{h}, expected sides of at least {factor} pixels", path.display());
    }
    if (tw, th) == (w, h) {
        return Ok(Picture { rgb, note: None });
    }
    let resized = image::imageops::resize(&rgb, tw as u32, th as u32, image::imageops::FilterType::Lanczos3);
    let note = format!(
        "{}: {w}x{h} is not a multiple of {factor} (the VAE factor); resized to {tw}x{th} (diffusers' PIL resize \
         differs in the last bits: resize it yourself to compare with diffusers exactly)",
        path.display()
    );
    Ok(Picture { rgb: resized, note: Some(note) })
}

/// sha256 of the picture's size and RGB bytes, hex.
pub fn pixels_sha256(rgb: &RgbImage) -> String {
    let mut hash = Sha256::new();
    hash.update(rgb.width().to_le_bytes());
    hash.update(rgb.height().to_le_bytes());
    hash.update(rgb.as_raw());
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `(1, 3, H, W)` float32 in [0, 1], as diffusers' image processor makes it (`/ 255`).
pub fn picture_tensor(rgb: &RgbImage, device: &Device) -> Result<Tensor> {
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let values: Vec<f32> = rgb.as_raw().iter().map(|&v| f32::from(v) / 255.0).collect();
    Ok(Tensor::from_vec(values, (1, h, w, 3), &Device::Cpu)?.permute((0, 3, 1, 2))?.contiguous()?.to_device(device)?)
}
