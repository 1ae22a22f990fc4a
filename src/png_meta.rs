//! PNG files that remember how they were made: text chunks in, text chunks out.
//!
//! Two chunks are written. `parameters` holds the settings in the plain-text form
//! AUTOMATIC1111's web UI writes and the tools around it (image browsers, prompt
//! readers, model sites) read:
//!
//! ```text
//! a fox in the snow
//! Negative prompt: blurry
//! Steps: 50, Sampler: DDIM, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: sd15
//! ```
//!
//! `sdlab` holds the exact settings as JSON (see [`crate::session::store::ImageSettings`]),
//! which `sdlab resume image.png` prefers because the text form rounds nothing but
//! cannot say everything (the scheduler config, a guidance scale changed mid-run).

use std::io::Cursor;

use anyhow::{anyhow, bail, Result};
use image::RgbImage;

/// The keyword of the AUTOMATIC1111-style settings text.
pub const PARAMETERS_KEY: &str = "parameters";
/// The keyword of sdlab's own JSON settings.
pub const SDLAB_KEY: &str = "sdlab";

/// The most text a compressed chunk may inflate to; a settings chunk is a few KiB,
/// and a crafted file must not make the reader allocate gigabytes.
const TEXT_LIMIT: usize = 1 << 20;

/// Encodes `image` as a PNG with the given text chunks before the pixels (where
/// readers that stop at the first image data still find them). Text that is
/// Latin-1 goes in a `tEXt` chunk, as PIL (and so AUTOMATIC1111) writes it; other
/// text in an uncompressed UTF-8 `iTXt` chunk.
pub fn encode_png(image: &RgbImage, chunks: &[(&str, &str)]) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, image.width(), image.height());
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    for &(keyword, text) in chunks {
        let result = if text.chars().all(|c| u32::from(c) < 256) {
            encoder.add_text_chunk(keyword.into(), text.into())
        } else {
            encoder.add_itxt_chunk(keyword.into(), text.into())
        };
        result.map_err(|e| anyhow!("PNG text chunk {keyword:?}: {e}"))?;
    }
    let mut writer = encoder.write_header().map_err(|e| anyhow!("encoding the PNG: {e}"))?;
    writer.write_image_data(image.as_raw()).map_err(|e| anyhow!("encoding the PNG: {e}"))?;
    writer.finish().map_err(|e| anyhow!("encoding the PNG: {e}"))?;
    Ok(bytes)
}

/// Every text chunk (`tEXt`, `zTXt`, `iTXt`) before the image data, as
/// `(keyword, text)` in file order by kind. Errors say what is wrong with the
/// file, without its name (the caller adds it).
pub fn read_text_chunks(bytes: &[u8]) -> Result<Vec<(String, String)>> {
    check_text_chunks(bytes)?;
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_ignore_text_chunk(false);
    let reader = decoder.read_info().map_err(|e| anyhow!("not a readable PNG ({e})"))?;
    let info = reader.info();
    let mut out: Vec<(String, String)> =
        info.uncompressed_latin1_text.iter().map(|c| (c.keyword.clone(), c.text.clone())).collect();
    for chunk in &info.compressed_latin1_text {
        let mut chunk = chunk.clone();
        chunk.decompress_text_with_limit(TEXT_LIMIT).map_err(|e| anyhow!("zTXt {:?}: {e}", chunk.keyword))?;
        out.push((chunk.keyword.clone(), chunk.get_text().map_err(|e| anyhow!("zTXt {:?}: {e}", chunk.keyword))?));
    }
    for chunk in &info.utf8_text {
        let mut chunk = chunk.clone();
        chunk.decompress_text_with_limit(TEXT_LIMIT).map_err(|e| anyhow!("iTXt {:?}: {e}", chunk.keyword))?;
        out.push((chunk.keyword.clone(), chunk.get_text().map_err(|e| anyhow!("iTXt {:?}: {e}", chunk.keyword))?));
    }
    Ok(out)
}

/// Walks the chunks before the image data and checks each text chunk's size and
/// CRC: the PNG decoder silently skips a damaged text chunk, which would then be
/// reported as missing rather than damaged.
fn check_text_chunks(bytes: &[u8]) -> Result<()> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if !bytes.starts_with(SIGNATURE) {
        bail!("not a PNG (no PNG signature)");
    }
    let mut at = SIGNATURE.len();
    while let Some(header) = bytes.get(at..at + 8) {
        let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let kind = &header[4..8];
        if kind == b"IDAT" || kind == b"IEND" {
            break;
        }
        let name = String::from_utf8_lossy(kind);
        let Some(data) = bytes.get(at + 8..(at + 8).saturating_add(len)) else {
            bail!("{name} chunk of {len} bytes runs past the end of the file (truncated)");
        };
        if matches!(kind, b"tEXt" | b"zTXt" | b"iTXt") {
            if len > TEXT_LIMIT {
                bail!("{name} chunk of {len} bytes: expected at most {TEXT_LIMIT} bytes of settings text");
            }
            let stored = bytes.get(at + 8 + len..at + 12 + len).map(|c| u32::from_be_bytes(c.try_into().expect("4")));
            if stored != Some(crc32(&bytes[at + 4..at + 8 + len])) {
                let keyword = String::from_utf8_lossy(data.split(|&b| b == 0).next().unwrap_or_default());
                bail!("{name} chunk {keyword:?}: its CRC does not match: the file is damaged");
            }
        }
        at += 12 + len;
    }
    Ok(())
}

/// The CRC-32 of PNG chunks (ISO 3309, reflected, polynomial 0xedb88320).
fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut n = 0;
        while n < 256 {
            let mut c = n as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            table[n] = c;
            n += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |c, &b| TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8))
}

/// The `parameters` text of AUTOMATIC1111's web UI, parsed as its own
/// `parse_generation_parameters` does: prompt lines, then the lines after
/// `Negative prompt:`, then a last line of `Key: value` pairs (at least three of
/// them, or it is part of the prompt). Keys may come in any order and unknown keys
/// are kept; values with a comma, colon or newline are JSON-quoted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct A1111Parameters {
    pub prompt: String,
    pub negative_prompt: String,
    /// The `Key: value` pairs in the order written, values unquoted.
    pub params: Vec<(String, String)>,
}

impl A1111Parameters {
    /// Never fails: text it cannot read as pairs becomes prompt, as in the web UI.
    pub fn parse(text: &str) -> Self {
        let trimmed = text.trim();
        let mut lines: Vec<&str> = trimmed.split('\n').collect();
        let last = lines.pop().unwrap_or("");
        let pairs = parse_pairs(last);
        let params = if pairs.len() >= 3 {
            pairs
        } else {
            lines.push(last);
            Vec::new()
        };
        let (mut prompt, mut negative_prompt, mut in_negative) = (String::new(), String::new(), false);
        for line in lines {
            let mut line = line.trim();
            if let Some(rest) = line.strip_prefix("Negative prompt:") {
                in_negative = true;
                line = rest.trim();
            }
            let target = if in_negative { &mut negative_prompt } else { &mut prompt };
            if !target.is_empty() {
                target.push('\n');
            }
            target.push_str(line);
        }
        Self { prompt, negative_prompt, params }
    }

    /// The text as the web UI writes it (the negative prompt line only when there is one).
    pub fn to_text(&self) -> String {
        let mut text = self.prompt.clone();
        if !self.negative_prompt.is_empty() {
            text.push_str("\nNegative prompt: ");
            text.push_str(&self.negative_prompt);
        }
        let pairs: Vec<String> = self.params.iter().map(|(k, v)| format!("{k}: {}", quote(v))).collect();
        text.push('\n');
        text.push_str(&pairs.join(", "));
        text
    }

    /// The value of the first `key` (case-sensitive, as the web UI's keys are).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// `key` parsed as a number, `None` when absent; an error names the key and the value.
    pub fn number<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.trim().parse() {
                Ok(n) => Ok(Some(n)),
                Err(_) => bail!("parameters: {key}: expected a number, found {v:?}"),
            },
        }
    }

    /// `Size: WxH` as `(width, height)`.
    pub fn size(&self) -> Result<Option<(usize, usize)>> {
        let Some(v) = self.get("Size") else { return Ok(None) };
        let parsed = v.trim().split_once('x').and_then(|(w, h)| Some((w.trim().parse().ok()?, h.trim().parse().ok()?)));
        match parsed {
            Some(size) => Ok(Some(size)),
            None => bail!("parameters: Size: expected WIDTHxHEIGHT, found {v:?}"),
        }
    }
}

/// The web UI's `quote`: a value that would break the `Key: value, ` line is
/// written as a JSON string; so is one that the reader would change (a leading
/// quote, or whitespace at either end), which the web UI leaves as it is.
fn quote(value: &str) -> String {
    let changed_on_reading = value.starts_with('"') || value.trim() != value;
    if value.contains([',', '\n', ':']) || changed_on_reading {
        serde_json::to_string(value).expect("a string serializes")
    } else {
        value.to_string()
    }
}

/// `re.findall(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)', line)` as
/// the web UI runs it: scan for pairs, skipping characters that start none.
fn parse_pairs(line: &str) -> Vec<(String, String)> {
    let chars: Vec<char> = line.chars().collect();
    let mut pairs = Vec::new();
    let mut pos = 0;
    while pos < chars.len() {
        match pair_at(&chars, pos) {
            Some((key, value, next)) => {
                pairs.push((key, value));
                pos = next.max(pos + 1);
            }
            None => pos += 1,
        }
    }
    pairs
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// One pair starting at `start`: the key, the unquoted value, and where the next
/// search starts (after the comma).
fn pair_at(chars: &[char], start: usize) -> Option<(String, String, usize)> {
    let mut pos = start;
    while pos < chars.len() && chars[pos].is_whitespace() {
        pos += 1;
    }
    let key_start = pos;
    if !chars.get(pos).is_some_and(|&c| is_word(c)) {
        return None;
    }
    pos += 1;
    while pos < chars.len() && (is_word(chars[pos]) || " -/".contains(chars[pos])) {
        pos += 1;
    }
    // The regex's greedy key backtracks to the last colon-free position before ':'.
    if pos - key_start < 2 || chars.get(pos) != Some(&':') {
        return None;
    }
    let key: String = chars[key_start..pos].iter().collect();
    pos += 1;
    while pos < chars.len() && chars[pos].is_whitespace() {
        pos += 1;
    }
    if let Some(end) = quoted_end(chars, pos) {
        if end == chars.len() || chars[end] == ',' {
            let raw: String = chars[pos..end].iter().collect();
            let value = serde_json::from_str::<String>(&raw).unwrap_or(raw);
            return Some((key, value, end + 1));
        }
    }
    let value_end = chars[pos..].iter().position(|&c| c == ',').map_or(chars.len(), |i| pos + i);
    let value: String = chars[pos..value_end].iter().collect();
    Some((key, value, value_end + 1))
}

/// The end (one past the closing quote) of a `"..."` value with backslash escapes
/// and at least one character inside, starting at `pos`.
fn quoted_end(chars: &[char], pos: usize) -> Option<usize> {
    if chars.get(pos) != Some(&'"') {
        return None;
    }
    let mut i = pos + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' if i > pos + 1 => return Some(i + 1),
            '"' => return None,
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_with(chunks: &[(&str, &str)]) -> Vec<u8> {
        encode_png(&RgbImage::new(2, 2), chunks).unwrap()
    }

    /// Where chunk `kind`'s data starts and how long it is.
    fn find_chunk(png: &[u8], kind: &[u8]) -> (usize, usize) {
        let at = png.windows(4).position(|w| w == kind).unwrap();
        (at + 4, u32::from_be_bytes(png[at - 4..at].try_into().unwrap()) as usize)
    }

    #[test]
    fn a_damaged_text_chunk_is_reported_as_damaged_not_missing() {
        let mut png = png_with(&[(PARAMETERS_KEY, "a fox\nSteps: 2, Seed: 1, Size: 64x64")]);
        assert_eq!(read_text_chunks(&png).unwrap().len(), 1);
        let (data, len) = find_chunk(&png, b"tEXt");
        png[data + len] ^= 0xff;
        let msg = read_text_chunks(&png).unwrap_err().to_string();
        assert_eq!(msg, "tEXt chunk \"parameters\": its CRC does not match: the file is damaged");
        png[data + len] ^= 0xff;
        png[data + 2] ^= 0x01;
        assert!(read_text_chunks(&png).unwrap_err().to_string().contains("CRC does not match"));
        let msg = read_text_chunks(&png[..data + 4]).unwrap_err().to_string();
        assert!(msg.contains("runs past the end of the file (truncated)"), "{msg}");
        assert_eq!(read_text_chunks(b"GIF89a").unwrap_err().to_string(), "not a PNG (no PNG signature)");
    }

    #[test]
    fn a_huge_text_chunk_is_refused_unread() {
        let text = "x".repeat(TEXT_LIMIT + 1);
        let png = png_with(&[(PARAMETERS_KEY, &text)]);
        let msg = read_text_chunks(&png).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!("tEXt chunk of {} bytes: expected at most {TEXT_LIMIT} bytes of settings text", TEXT_LIMIT + 12)
        );
    }

    #[test]
    fn crc32_matches_the_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn parses_what_the_web_ui_writes() {
        let text = "a fox, in the snow\nsecond line\nNegative prompt: blurry, low quality\nSteps: 30, Sampler: \
                    DPM++ 2M Karras, CFG scale: 7, Seed: 1234, Size: 512x768, Model hash: abcdef1234, Model: \
                    v1-5-pruned-emaonly, Lora hashes: \"name: 0123, other: 4567\", Version: v1.9.4";
        let p = A1111Parameters::parse(text);
        assert_eq!(p.prompt, "a fox, in the snow\nsecond line");
        assert_eq!(p.negative_prompt, "blurry, low quality");
        assert_eq!(p.number::<usize>("Steps").unwrap(), Some(30));
        assert_eq!(p.get("Sampler"), Some("DPM++ 2M Karras"));
        assert_eq!(p.number::<f64>("CFG scale").unwrap(), Some(7.0));
        assert_eq!(p.number::<u64>("Seed").unwrap(), Some(1234));
        assert_eq!(p.size().unwrap(), Some((512, 768)));
        assert_eq!(p.get("Lora hashes"), Some("name: 0123, other: 4567"));
        assert_eq!(p.get("Version"), Some("v1.9.4"));
        assert_eq!(p.get("Eta"), None);
    }

    #[test]
    fn key_order_extra_keys_and_no_negative_prompt() {
        let p = A1111Parameters::parse("just a prompt\nSeed: 7, Foo bar: baz, Size: 64x64, Steps: 10");
        assert_eq!(p.prompt, "just a prompt");
        assert_eq!(p.negative_prompt, "");
        assert_eq!(p.number::<u64>("Seed").unwrap(), Some(7));
        assert_eq!(p.get("Foo bar"), Some("baz"));
        assert_eq!(p.size().unwrap(), Some((64, 64)));
    }

    #[test]
    fn a_last_line_with_fewer_than_three_pairs_is_prompt() {
        let p = A1111Parameters::parse("a photo\nstyle: noir, mood: dark");
        assert_eq!(p.prompt, "a photo\nstyle: noir, mood: dark");
        assert!(p.params.is_empty());
        assert_eq!(A1111Parameters::parse(""), A1111Parameters::default());
    }

    #[test]
    fn bad_numbers_name_the_key() {
        let p = A1111Parameters::parse("x\nSteps: many, Seed: 1, Size: 8x8y");
        assert_eq!(
            p.number::<usize>("Steps").unwrap_err().to_string(),
            "parameters: Steps: expected a number, found \"many\""
        );
        assert_eq!(p.size().unwrap_err().to_string(), "parameters: Size: expected WIDTHxHEIGHT, found \"8x8y\"");
    }

    #[test]
    fn writes_text_that_parses_back() {
        let p = A1111Parameters {
            prompt: "painting, sea: sunrise".into(),
            negative_prompt: "ugly\nblurry".into(),
            params: vec![
                ("Steps".into(), "50".into()),
                ("Sampler".into(), "DDIM".into()),
                ("Model".into(), "/models/sd, v1:5".into()),
                ("Note".into(), "say \"hi\"\\".into()),
            ],
        };
        let text = p.to_text();
        assert!(text.contains("Model: \"/models/sd, v1:5\""), "{text}");
        assert_eq!(A1111Parameters::parse(&text), p);
    }

    #[test]
    fn png_chunks_read_back() {
        let image = RgbImage::from_pixel(3, 2, image::Rgb([10, 20, 30]));
        let chunks =
            [(PARAMETERS_KEY, "caf\u{e9}\nSteps: 1, Seed: 2, Size: 3x2"), (SDLAB_KEY, "{\"prompt\":\"\u{72d0}\"}")];
        let bytes = encode_png(&image, &chunks).unwrap();
        let read = read_text_chunks(&bytes).unwrap();
        let read: Vec<(&str, &str)> = read.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(read, chunks);
        let decoded = image::load_from_memory(&bytes).unwrap().to_rgb8();
        assert_eq!(decoded, image);
        assert!(read_text_chunks(b"not a png").unwrap_err().to_string().starts_with("not a PNG"));
    }
}
