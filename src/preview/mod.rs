//! Tensors turned into small pictures and numbers for the terminal lab to show.
//!
//! The UI never holds a tensor: a worker thread calls these functions on the
//! session's intermediates (prompt embeddings, latents) and sends the results,
//! plain [`RgbImage`]s and [`Stats`], to the UI thread. Nothing here knows about
//! terminals; sizing for a terminal is only [`upscale_nearest`].
//!
//! Every function accepts f32 or f16 tensors on any device: values are copied
//! to the host as f32 first, so a preview never keeps the GPU busy, and sums
//! are accumulated in f64. The exception is [`attention_overlay`], which blends
//! maps that already arrived as plain data.

mod attention;
mod channels;
mod heatmap;
mod latent_rgb;
mod resize;
mod stats;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use image::RgbImage;

pub use attention::{attention_overlay, HOT};
pub use channels::channel_grey;
pub use heatmap::{heatmap, stacked_heatmap};
pub use latent_rgb::latent_to_rgb;
pub use resize::upscale_nearest;
pub use stats::{cosine_per_token, per_channel_stats, per_token_stats, stats, Stats, TokenStats};

/// All of `t`'s values on the host, row-major, as f32.
fn host_values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// A latent's values plane by plane, so that per-channel work is slicing.
struct Planes {
    channels: usize,
    height: usize,
    width: usize,
    values: Vec<f32>,
}

impl Planes {
    /// Takes the pipeline's `(1, C, h, w)` as well as a bare `(C, h, w)`.
    fn of(latents: &Tensor) -> Result<Self> {
        let latents = match latents.rank() {
            4 if latents.dim(0)? == 1 => latents.squeeze(0)?,
            3 => latents.clone(),
            _ => bail!("expected a latent (1, C, h, w) or (C, h, w), found shape {:?}", latents.shape()),
        };
        let (channels, height, width) = latents.dims3()?;
        Ok(Self { channels, height, width, values: host_values(&latents)? })
    }

    fn plane(&self, channel: usize) -> &[f32] {
        let size = self.height * self.width;
        &self.values[channel * size..(channel + 1) * size]
    }
}

/// A fraction of full intensity to a channel byte, rounding as
/// [`crate::image_out::to_rgb8`] does so that all of the lab's pictures agree.
fn unit_to_u8(x: f32) -> u8 {
    (x.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Packs interleaved RGB bytes whose length the caller computed from the size.
fn rgb_image(width: usize, height: usize, pixels: Vec<u8>) -> RgbImage {
    RgbImage::from_raw(width as u32, height as u32, pixels).expect("buffer matches the image size")
}

#[cfg(test)]
fn sd2_tiny_reference() -> std::collections::HashMap<String, Tensor> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd2-tiny/reference.safetensors");
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}
