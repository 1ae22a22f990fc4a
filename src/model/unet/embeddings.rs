//! The timestep's way into the UNet: diffusers' `Timesteps` (sinusoidal features)
//! and `TimestepEmbedding` (two linear layers), models/embeddings.py.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::{Linear, Module, VarBuilder};

/// `get_timestep_embedding`: `dim` sinusoidal features of the timestep, computed in
/// float32 as diffusers does, `[cos | sin]` when `flip_sin_to_cos`.
pub fn timestep_features(
    t: f64,
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    device: &Device,
) -> Result<Tensor> {
    let half = dim / 2;
    let mut sin = Vec::with_capacity(half);
    let mut cos = Vec::with_capacity(half);
    for i in 0..half {
        let exponent = -(10000f64.ln() as f32) * i as f32 / (half as f32 - freq_shift as f32);
        let arg = t as f32 * exponent.exp();
        sin.push(arg.sin());
        cos.push(arg.cos());
    }
    let mut features = if flip_sin_to_cos { [cos, sin].concat() } else { [sin, cos].concat() };
    features.resize(dim, 0.0); // an odd dim is zero-padded
    Ok(Tensor::from_vec(features, (1, dim), device)?)
}

/// linear_1 -> SiLU -> linear_2.
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    pub fn new(vb: VarBuilder, in_dim: usize, embed_dim: usize) -> Result<Self> {
        Ok(Self {
            linear_1: candle_nn::linear(in_dim, embed_dim, vb.pp("linear_1"))?,
            linear_2: candle_nn::linear(embed_dim, embed_dim, vb.pp("linear_2"))?,
        })
    }

    pub fn forward(&self, features: &Tensor, dtype: DType) -> Result<Tensor> {
        let h = candle_nn::ops::silu(&self.linear_1.forward(&features.to_dtype(dtype)?)?)?;
        Ok(self.linear_2.forward(&h)?)
    }
}
