//! A single-file checkpoint's architecture is read from its tensors' names and
//! shapes, which are the user's input: on any listing (one `name dim dim ...` a
//! line) the inference gives configs or an error, never a panic, and the configs it
//! gives are ones sdlab's own config readers accept or refuse with an error.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sdlab::model::clip::ClipTextConfig;
use sdlab::model::single_file::infer::{self, Shapes};
use sdlab::model::single_file::Family;
use sdlab::model::unet::UNetConfig;
use sdlab::model::vae::VaeConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut shapes = Shapes::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let Some(name) = parts.next() else { continue };
        let dims: Vec<usize> = parts.filter_map(|d| d.parse().ok()).collect();
        shapes.insert(name.to_string(), dims);
    }
    let path = Path::new("model.safetensors");
    for family in [Family::Sd1, Family::Sd2] {
        if let Ok((unet, layout)) = infer::unet(&shapes, family) {
            assert_eq!(layout.up_attention.len(), unet["block_out_channels"].as_array().map_or(0, |a| a.len()));
            let _ = UNetConfig::parse(&unet.to_string(), path);
        }
        for level in [true, false] {
            if let Ok(text) = infer::text_encoder(&shapes, family, level) {
                let _ = ClipTextConfig::parse(&text.to_string(), path);
            }
        }
    }
    if let Ok(vae) = infer::vae(&shapes) {
        let _ = VaeConfig::parse(&vae.to_string(), path);
    }
});
