//! The UNet config reader on arbitrary text: `unet/config.json` is read before any
//! weight, and whatever the file holds, the result is a config or an error naming
//! the field, never a panic. What sdlab derives from an accepted config must be
//! sane: heads that divide every block, the time-embedding and up-block sizes, the
//! default image size, and finite timestep features.
#![no_main]

use std::path::Path;

use candle_core::Device;
use libfuzzer_sys::fuzz_target;
use sdlab::model::unet::embeddings::timestep_features;
use sdlab::model::unet::UNetConfig;

fuzz_target!(|data: &[u8]| {
    // sdlab reads configs as UTF-8 text and refuses anything else before parsing.
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = UNetConfig::parse(text, Path::new("unet/config.json")) else { return };
    let channels = &config.block_out_channels;
    let heads = config.heads_per_block().unwrap_or_else(|e| panic!("heads after the check: {e:#}"));
    assert_eq!(heads.len(), channels.len());
    assert!(channels.iter().zip(&heads).all(|(c, h)| *h > 0 && c % h == 0), "{heads:?} heads for {channels:?}");
    assert!(channels.iter().all(|c| c % config.norm_num_groups == 0));
    // What UNet2DConditionModel::new computes before its first weight.
    assert!(channels[0].checked_mul(4).is_some() && config.layers_per_block.checked_add(1).is_some());
    // diffusers' default image size, with the largest VAE scale factor sdlab accepts.
    assert!(config.sample_size.checked_mul(128).is_some());
    // The first thing the UNet computes, at both ends of SD's training range.
    for t in [0.0, 999.0] {
        let features = timestep_features(t, channels[0], config.flip_sin_to_cos, config.freq_shift, &Device::Cpu);
        let features = features.unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(features.iter().all(|f| f.is_finite()), "timestep {t}: non-finite features");
    }
});
