//! The numbers beside the pictures: how big, how spread, how alike.

use anyhow::{bail, ensure, Result};
use candle_core::Tensor;
use serde::Serialize;

use super::{host_values, Planes};

/// Summary of a set of values. `std` is the population standard deviation
/// (divide by n, torch's `std(unbiased=False)`), because these describe the
/// tensor itself, not a sample from something larger, and so that they match
/// numpy's default `std` on the diffusers reference tensors.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stats {
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    /// Two passes in f64, so that the std of large f16 tensors is not eaten by
    /// cancellation.
    pub(super) fn of(values: &[f32]) -> Result<Self> {
        ensure!(!values.is_empty(), "no values to summarise");
        let n = values.len() as f64;
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
        let variance = values.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let min = values.iter().fold(f32::INFINITY, |m, &v| m.min(v)) as f64;
        let max = values.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
        Ok(Self { mean, std: variance.sqrt(), min, max })
    }
}

/// One token position of a prompt embedding: the UI plots these along the 77
/// positions to show where the prompt's tokens end and padding begins.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TokenStats {
    /// Euclidean length of the position's vector.
    pub l2_norm: f64,
    pub mean: f64,
    /// Population std, as in [`Stats`].
    pub std: f64,
}

/// Over every value of `t`, whatever its shape; an error for an empty tensor.
pub fn stats(t: &Tensor) -> Result<Stats> {
    Stats::of(&host_values(t)?)
}

/// One [`TokenStats`] per row of a `(tokens, D)` embedding (one row of
/// `prompt_embeds`).
pub fn per_token_stats(embeds: &Tensor) -> Result<Vec<TokenStats>> {
    let (values, width) = rows(embeds)?;
    values
        .chunks(width)
        .map(|row| {
            let Stats { mean, std, .. } = Stats::of(row)?;
            Ok(TokenStats { l2_norm: dot(row, row).sqrt(), mean, std })
        })
        .collect()
}

/// One [`Stats`] per channel of a `(1, C, h, w)` or `(C, h, w)` latent: the
/// channels drift apart during denoising, which one overall [`stats`] hides.
pub fn per_channel_stats(latents: &Tensor) -> Result<Vec<Stats>> {
    let planes = Planes::of(latents)?;
    (0..planes.channels).map(|c| Stats::of(planes.plane(c))).collect()
}

/// Cosine similarity of `a` and `b` row by row, for two `(tokens, D)`
/// embeddings of the same shape: with `a` the negative prompt's and `b` the
/// prompt's, it shows which positions the prompt actually changes (position 0,
/// the start token, is the same for both). As in torch's `cosine_similarity`, a
/// zero row gives 0 rather than NaN.
pub fn cosine_per_token(a: &Tensor, b: &Tensor) -> Result<Vec<f64>> {
    if a.shape() != b.shape() {
        bail!("cosine per token needs two embeddings of one shape, found {:?} and {:?}", a.shape(), b.shape());
    }
    let (a, width) = rows(a)?;
    let (b, _) = rows(b)?;
    Ok(a.chunks(width)
        .zip(b.chunks(width))
        .map(|(x, y)| {
            let norms = (dot(x, x) * dot(y, y)).sqrt();
            if norms > 0.0 {
                dot(x, y) / norms
            } else {
                0.0
            }
        })
        .collect())
}

/// A 2-D tensor's values and its row length.
fn rows(t: &Tensor) -> Result<(Vec<f32>, usize)> {
    let (_, width) = t.dims2().map_err(|_| anyhow::anyhow!("expected (tokens, D), found shape {:?}", t.shape()))?;
    ensure!(width > 0, "rows of width 0 have no statistics");
    Ok((host_values(t)?, width))
}

fn dot(x: &[f32], y: &[f32]) -> f64 {
    x.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum()
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn stats_of_a_hand_tensor() {
        // 1, 2, 3, 4: mean 2.5, population variance (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25.
        let t = Tensor::from_vec(vec![4f32, 1.0, 3.0, 2.0], (2, 2), &Device::Cpu).unwrap();
        let s = stats(&t).unwrap();
        assert_eq!(s, Stats { mean: 2.5, std: 1.25f64.sqrt(), min: 1.0, max: 4.0 });
    }

    #[test]
    fn f16_input_gives_the_same_stats() {
        // Values exactly representable in f16, so f16 and f32 must agree exactly.
        let values: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) * 0.25).collect();
        let t32 = Tensor::from_vec(values, (1, 4, 4, 4), &Device::Cpu).unwrap();
        let t16 = t32.to_dtype(DType::F16).unwrap();
        assert_eq!(stats(&t16).unwrap(), stats(&t32).unwrap());
        assert_eq!(per_channel_stats(&t16).unwrap(), per_channel_stats(&t32).unwrap());
        // Channel 2 holds 32..48 -> (12..28) * 0.25 = 3.0 .. 6.75.
        let c2 = &per_channel_stats(&t16).unwrap()[2];
        assert_eq!((c2.min, c2.max, c2.mean), (3.0, 6.75, 4.875));
    }

    #[test]
    fn per_channel_stats_of_the_fixture_noise() {
        let reference = super::super::sd2_tiny_reference();
        let latent = &reference["init_latents"];
        let per_channel = per_channel_stats(latent).unwrap();
        assert_eq!(per_channel.len(), 4);
        let planes = latent.squeeze(0).unwrap().to_vec3::<f32>().unwrap();
        for (channel, s) in planes.iter().zip(&per_channel) {
            let values: Vec<f64> = channel.iter().flatten().map(|&v| v as f64).collect();
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64).sqrt();
            assert!(close(s.mean, mean, 1e-12) && close(s.std, std, 1e-12), "{s:?} vs {mean} {std}");
            assert_eq!(s.max, values.iter().cloned().fold(f64::MIN, f64::max));
            // It is unit Gaussian noise: 1024 draws.
            assert!(s.mean.abs() < 0.15 && close(s.std, 1.0, 0.1), "{s:?}");
        }
    }

    #[test]
    fn per_token_norms_of_the_fixture_embeddings() {
        let reference = super::super::sd2_tiny_reference();
        let embeds = reference["prompt_embeds"].to_vec3::<f32>().unwrap();
        for (row, tokens) in embeds.iter().enumerate() {
            let got = per_token_stats(&reference["prompt_embeds"].get(row).unwrap()).unwrap();
            assert_eq!(got.len(), 77);
            for (token, s) in tokens.iter().zip(&got) {
                let mut squares = 0f64;
                let mut sum = 0f64;
                for &v in token {
                    squares += v as f64 * v as f64;
                    sum += v as f64;
                }
                let mean = sum / token.len() as f64;
                assert!(close(s.l2_norm, squares.sqrt(), 1e-9), "{} vs {}", s.l2_norm, squares.sqrt());
                assert!(close(s.mean, mean, 1e-12));
                assert!(close(s.std, (squares / token.len() as f64 - mean * mean).sqrt(), 1e-6));
            }
        }
    }

    #[test]
    fn cosine_per_token_of_hand_rows_and_the_fixture() {
        let a = Tensor::from_vec(vec![1f32, 0.0, 1.0, 1.0, 0.0, 0.0], (3, 2), &Device::Cpu).unwrap();
        let b = Tensor::from_vec(vec![0f32, 2.0, -3.0, -3.0, 5.0, 1.0], (3, 2), &Device::Cpu).unwrap();
        assert_eq!(cosine_per_token(&a, &b).unwrap(), [0.0, -1.0, 0.0]);

        let reference = super::super::sd2_tiny_reference();
        let embeds = &reference["prompt_embeds"];
        let cosine = cosine_per_token(&embeds.get(0).unwrap(), &embeds.get(1).unwrap()).unwrap();
        assert_eq!(cosine.len(), 77);
        // CLIP's causal attention: the start token sees only itself in both prompts.
        assert!(close(cosine[0], 1.0, 1e-6), "{}", cosine[0]);
        assert!(cosine.iter().all(|c| (-1.0 - 1e-9..=1.0 + 1e-9).contains(c)));
        assert!(cosine[1] < 0.9999, "the prompts differ from their first real token on");
    }

    #[test]
    fn wrong_shapes_are_errors() {
        let three_d = Tensor::zeros((2, 3, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(per_token_stats(&three_d).is_err());
        let a = Tensor::zeros((3, 4), DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros((4, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(cosine_per_token(&a, &b).is_err());
        assert!(stats(&Tensor::zeros(0, DType::F32, &Device::Cpu).unwrap()).is_err());
    }
}
