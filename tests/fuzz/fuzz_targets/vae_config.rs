//! The VAE config reader on arbitrary text: `vae/config.json` is read before any
//! weight, and whatever the file holds, the result is a config or an error naming
//! the field, never a panic. What sdlab derives from an accepted config (the scale
//! factor, the float32 factors the decoder's input is scaled by) must be sane.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sdlab::model::vae::VaeConfig;

fuzz_target!(|data: &[u8]| {
    // sdlab reads configs as UTF-8 text and refuses anything else before parsing.
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = VaeConfig::parse(text, Path::new("vae/config.json")) else { return };
    let factor = config.scale_factor();
    assert!(factor.is_power_of_two() && factor <= 128, "scale factor {factor}");
    assert_eq!(factor, 1 << (config.block_out_channels.len() - 1));
    // The encoder's output channels.
    assert!(config.latent_channels.checked_mul(2).is_some());
    // The decoder's input is `latents / scaling_factor + shift_factor` in float32.
    let inverse = (1.0 / config.scaling_factor) as f32;
    assert!(inverse.is_normal(), "1 / scaling_factor is {inverse} in float32");
    assert!(config.shift_factor.is_none_or(|s| (s as f32).is_finite()));
    assert!(config.block_out_channels.iter().all(|c| c % config.norm_num_groups == 0));
});
