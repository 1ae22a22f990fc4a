//! What a diffusers folder (or hub repo id) turns into: configs, tokenizer and models.

pub mod clip;
pub mod tokenizer;
