//! The session loader on arbitrary `session.json` and `tensors.safetensors` bytes:
//! whatever a crash, a disk or a person left in a session folder, loading it is an
//! error message, never a panic. The input is split at the first NUL byte.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sdlab::session::store::{ImageSettings, SessionRecord};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (json, rest) = data.split_at(split);
    let tensors = rest.get(1..).unwrap_or_default();
    let _ = SessionRecord::parse(Path::new("fuzz"), json, tensors, None);
    if let Ok(text) = std::str::from_utf8(json) {
        let _ = ImageSettings::from_json(text);
    }
});
