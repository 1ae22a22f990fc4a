//! Matrices such as a prompt embedding as pictures, one pixel per value.

use anyhow::{bail, Result};
use candle_core::Tensor;
use image::{Rgb, RgbImage};

use super::{host_values, unit_to_u8};

/// The quantile of |x| that saturates the colours. CLIP's last hidden state
/// has a handful of dimensions hundreds of times larger than the rest; scaling
/// by the maximum would paint everything else white.
const SATURATION_QUANTILE: f64 = 0.99;

/// Separates the stacked matrices; neither white nor a colour of the map.
const SEPARATOR: Rgb<u8> = Rgb([0, 0, 0]);

/// A `(rows, cols)` tensor as a `cols` x `rows` image: white at 0, towards red
/// for positive and blue for negative values, symmetric, saturating at the
/// 99th percentile of |x| (see [`SATURATION_QUANTILE`]'s reason). A matrix of
/// zeros is all white.
pub fn heatmap(values: &Tensor) -> Result<RgbImage> {
    paint(&[Matrix::of(values)?])
}

/// The negative prompt's `(tokens, D)` embedding above the prompt's, with a
/// one-pixel black row between them, on one colour scale so that the two can
/// be compared value for value: `D` x `2 * tokens + 1` pixels. With
/// `prompt_embeds` of shape `(2, 77, D)`, pass rows 0 and 1.
pub fn stacked_heatmap(uncond: &Tensor, cond: &Tensor) -> Result<RgbImage> {
    if uncond.shape() != cond.shape() {
        bail!("stacked embeddings need one shape, found {:?} and {:?}", uncond.shape(), cond.shape());
    }
    paint(&[Matrix::of(uncond)?, Matrix::of(cond)?])
}

struct Matrix {
    rows: usize,
    cols: usize,
    values: Vec<f32>,
}

impl Matrix {
    fn of(t: &Tensor) -> Result<Self> {
        let (rows, cols) =
            t.dims2().map_err(|_| anyhow::anyhow!("a heatmap needs a 2-D tensor, found shape {:?}", t.shape()))?;
        if rows == 0 || cols == 0 {
            bail!("a heatmap of shape {:?} would be empty", t.shape());
        }
        Ok(Self { rows, cols, values: host_values(t)? })
    }
}

/// Stacks same-width matrices top to bottom with [`SEPARATOR`] rows between,
/// all on the scale of their values taken together.
fn paint(blocks: &[Matrix]) -> Result<RgbImage> {
    let cols = blocks[0].cols;
    let magnitudes: Vec<f32> = blocks.iter().flat_map(|b| b.values.iter().map(|v| v.abs())).collect();
    let scale = quantile(magnitudes, SATURATION_QUANTILE);
    let height = blocks.iter().map(|b| b.rows).sum::<usize>() + blocks.len() - 1;
    let mut image = RgbImage::from_pixel(cols as u32, height as u32, SEPARATOR);
    let mut top = 0;
    for block in blocks {
        for (i, &v) in block.values.iter().enumerate() {
            let colour = diverging(if scale > 0.0 { v / scale } else { 0.0 });
            image.put_pixel((i % cols) as u32, (top + i / cols) as u32, colour);
        }
        top += block.rows + 1;
    }
    Ok(image)
}

/// Nearest-rank quantile of non-negative values.
fn quantile(mut values: Vec<f32>, q: f64) -> f32 {
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    *values.select_nth_unstable_by(rank - 1, f32::total_cmp).1
}

/// -1 blue, 0 white, +1 red, fading linearly; beyond ±1 saturates.
fn diverging(t: f32) -> Rgb<u8> {
    let t = t.clamp(-1.0, 1.0);
    let fade = unit_to_u8(1.0 - t.abs());
    if t >= 0.0 {
        Rgb([255, fade, fade])
    } else {
        Rgb([fade, fade, 255])
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;

    fn row(values: &[f32]) -> Tensor {
        Tensor::from_vec(values.to_vec(), (1, values.len()), &Device::Cpu).unwrap()
    }

    #[test]
    fn zero_is_white_and_the_ends_are_red_and_blue() {
        // 100 values: |x| = 0..=99 (as ±), the 99th percentile is 98; 99 saturates.
        let values: Vec<f32> = (0..100).map(|i| if i % 2 == 0 { i as f32 } else { -(i as f32) }).collect();
        let image = heatmap(&row(&values)).unwrap();
        assert_eq!((image.width(), image.height()), (100, 1));
        assert_eq!(*image.get_pixel(0, 0), Rgb([255, 255, 255]));
        assert_eq!(*image.get_pixel(98, 0), Rgb([255, 0, 0]));
        assert_eq!(*image.get_pixel(99, 0), Rgb([0, 0, 255]));
        // Halfway, 49 of 98: 127.5 -> 128 of the other two channels.
        assert_eq!(*image.get_pixel(49, 0), Rgb([128, 128, 255]));
    }

    #[test]
    fn the_map_is_symmetric() {
        let values = [0.3f32, -0.3, 0.7, -0.7, 1.0, -1.0, 0.05, -0.05];
        let image = heatmap(&row(&values)).unwrap();
        for pair in 0..values.len() as u32 / 2 {
            let (Rgb([r, g, b]), Rgb([r2, g2, b2])) =
                (*image.get_pixel(2 * pair, 0), *image.get_pixel(2 * pair + 1, 0));
            assert_eq!((r, g, b), (b2, g2, r2), "pair {pair}");
            assert!(r == 255 && g == b && g < 255, "positive is red-ish: {:?}", (r, g, b));
        }
    }

    #[test]
    fn outliers_do_not_wash_out_the_rest() {
        // 999 values of ±1 and one of 1000: the scale stays 1, so ±1 saturates.
        let mut values: Vec<f32> = (0..1000).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect();
        values[10] = 1000.0;
        let image = heatmap(&Tensor::from_vec(values, (10, 100), &Device::Cpu).unwrap()).unwrap();
        assert_eq!((image.width(), image.height()), (100, 10));
        assert_eq!(*image.get_pixel(0, 3), Rgb([255, 0, 0]));
        assert_eq!(*image.get_pixel(1, 3), Rgb([0, 0, 255]));
        let zeros = Tensor::zeros((3, 5), DType::F32, &Device::Cpu).unwrap();
        assert!(heatmap(&zeros).unwrap().pixels().all(|p| *p == Rgb([255, 255, 255])));
    }

    #[test]
    fn stacked_fixture_embeddings_share_a_scale() {
        let reference = super::super::sd2_tiny_reference();
        let embeds = &reference["prompt_embeds"];
        let (uncond, cond) = (embeds.get(0).unwrap(), embeds.get(1).unwrap());
        let image = stacked_heatmap(&uncond, &cond).unwrap();
        assert_eq!((image.width(), image.height()), (32, 2 * 77 + 1));
        assert!((0..32).all(|x| *image.get_pixel(x, 77) == SEPARATOR));
        // Same pixels as painting each half alone with the shared scale.
        let all: Vec<f32> = embeds.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = quantile(all.iter().map(|v| v.abs()).collect(), 0.99);
        let cond_values = cond.to_vec2::<f32>().unwrap();
        for (y, token) in cond_values.iter().enumerate() {
            for (x, &v) in token.iter().enumerate() {
                assert_eq!(*image.get_pixel(x as u32, 78 + y as u32), diverging(v / scale));
            }
        }
        // The start token's embedding is the same in both halves.
        assert!((0..32).all(|x| image.get_pixel(x, 0) == image.get_pixel(x, 78)));
    }

    #[test]
    fn wrong_shapes_are_errors() {
        let three_d = Tensor::zeros((2, 3, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(heatmap(&three_d).is_err());
        let a = Tensor::zeros((3, 4), DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros((3, 5), DType::F32, &Device::Cpu).unwrap();
        assert!(stacked_heatmap(&a, &b).is_err());
    }
}
