//! The text encoder config reader on arbitrary text: `text_encoder/config.json` is
//! read before any weight, and whatever the file holds, the result is a config or an
//! error naming the field, never a panic. An accepted config must split its hidden
//! size into whole heads and, when small enough to build here, give a CLIP text
//! transformer (of zero weights) that encodes a prompt to finite embeddings.
#![no_main]

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use libfuzzer_sys::fuzz_target;
use sdlab::model::clip::{ClipTextConfig, ClipTextTransformer};

fuzz_target!(|data: &[u8]| {
    // sdlab reads configs as UTF-8 text and refuses anything else before parsing.
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = ClipTextConfig::parse(text, Path::new("text_encoder/config.json")) else { return };
    let heads = config.num_attention_heads;
    assert!(heads > 0 && config.hidden_size % heads == 0, "{heads} heads for {}", config.hidden_size);
    // The attention scale and the LayerNorm epsilon, as float32.
    let scale = ((config.hidden_size / heads) as f64).powf(-0.5) as f32;
    assert!(scale.is_normal() && (config.layer_norm_eps as f32).is_normal());
    // The causal mask is positions^2 floats.
    assert!(config.max_position_embeddings.checked_mul(config.max_position_embeddings).is_some());
    if is_small(&config) {
        encode_with_zero_weights(&config);
    }
});

/// Small enough that a zero-weight encoder is built and run in milliseconds.
fn is_small(c: &ClipTextConfig) -> bool {
    c.vocab_size <= 1024 && c.hidden_size <= 64 && c.intermediate_size <= 256 && c.num_hidden_layers <= 4
}

/// A checked config builds, and a prompt of up to 77 tokens encodes to finite values.
fn encode_with_zero_weights(config: &ClipTextConfig) {
    let device = &Device::Cpu;
    let vb = VarBuilder::zeros(DType::F32, device);
    let model =
        ClipTextTransformer::new(vb, config).unwrap_or_else(|e| panic!("a checked config does not build: {e:#}"));
    let tokens = config.max_position_embeddings.min(77);
    let ids = Tensor::zeros((1, tokens), DType::U32, device).unwrap();
    let out = model.forward(&ids).unwrap_or_else(|e| panic!("forward failed: {e:#}"));
    assert_eq!(out.dims(), [1, tokens, config.hidden_size]);
    let values = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(values.iter().all(|v| v.is_finite()), "non-finite embeddings");
}
