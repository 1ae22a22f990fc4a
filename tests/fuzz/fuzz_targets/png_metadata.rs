//! The PNG text-chunk reader and the AUTOMATIC1111 `parameters` parser on arbitrary
//! bytes: `sdlab resume image.png` runs both on whatever file it is given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sdlab::png_meta::{read_text_chunks, A1111Parameters};

fuzz_target!(|data: &[u8]| {
    if let Ok(chunks) = read_text_chunks(data) {
        for (_, text) in chunks {
            let _ = A1111Parameters::parse(&text);
        }
    }
    let text = String::from_utf8_lossy(data);
    let parsed = A1111Parameters::parse(&text);
    let _ = (parsed.number::<u64>("Seed"), parsed.size());
    // What the writer makes of parsed text must parse back to the same pairs.
    if !parsed.params.is_empty() {
        let again = A1111Parameters::parse(&parsed.to_text());
        assert_eq!(again.params, parsed.params, "pairs changed on rewriting {text:?}");
    }
});
