//! CLIP's BPE tokenizer, loaded from a diffusers `tokenizer/` folder.
//!
//! Stable Diffusion conditions on exactly `model_max_length` (77) token ids per
//! prompt, so a prompt that tokenizes differently from diffusers is a different
//! prompt to the UNet. Everything here is shaped by "same ids as diffusers":
//! the public SD 2.x repositories ship only `vocab.json` + `merges.txt` (so the
//! tokenizer has to be rebuilt from them the way transformers does), and they
//! pad with `!` (id 0) where SD 1.x pads with `<|endoftext|>` (id 49407), which
//! only `special_tokens_map.json` says.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokenizers::{AddedToken, Tokenizer};

use super::file::{ModelFile, ModelFolder};
use crate::fsutil::limits;

/// Every prompt is padded to `model_max_length` ids: a typo of 10^12 must not
/// allocate it. CLIP's is 77; no text encoder sdlab loads has 4096 positions.
const MAX_LENGTH: usize = 4096;

/// CLIP's BPE tokenizer as diffusers' pipelines call it (pad/truncate to
/// model_max_length, BOS/EOS).
///
/// Text cleanup follows the tokenizers-backed CLIP tokenizer: NFC, whitespace
/// runs to one space, lowercase, CLIP's word regex, byte-level BPE. Since
/// transformers 5 that is what `CLIPTokenizer` is, from `vocab.json` +
/// `merges.txt` as from `tokenizer.json`, so it is what current diffusers
/// feeds the text encoder (the fixtures' reference runs included). The
/// pure-Python `CLIPTokenizer` of transformers 4 cleaned text differently and
/// gives other ids for some prompts (`slow_ftfy` / `slow_basic` in
/// `tests/fixtures/tokenizer/cases.json`): with ftfy it also fixed curly
/// quotes, fullwidth letters, ligatures, mojibake, HTML entities and control
/// characters; without ftfy its BasicTokenizer split CJK ideographs into one
/// word each and dropped format characters (zero-width space, the joiner in
/// emoji sequences). Plain ASCII and accented Latin prompts agree everywhere.
#[derive(Clone, Debug)]
pub struct ClipTokenizer {
    tokenizer: Tokenizer,
    max_length: usize,
    bos: (u32, String),
    eos: (u32, String),
    pad: (u32, String),
}

/// One prompt as the text encoder sees it, plus what the 77-token limit cut off,
/// so a front end can show the user which words never reached the model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizedPrompt {
    /// Exactly `max_length` ids: BOS, the words (truncated), EOS, padding.
    pub ids: Vec<u32>,
    /// One per id, in the same order.
    pub tokens: Vec<Token>,
    /// Vocab strings of the words dropped by the limit (empty when it fits);
    /// diffusers keeps BOS + the first `max_length - 2` words + EOS.
    pub truncated: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub id: u32,
    /// The vocab string, e.g. `painting</w>`: `</w>` marks a word's last piece
    /// and non-ASCII bytes appear in GPT-2's byte-to-unicode alphabet.
    pub text: String,
    pub kind: TokenKind,
}

/// Where a token sits, which the id alone cannot say: with pad
/// `<|endoftext|>` the EOS and every pad share id 49407, yet only the EOS
/// position feeds CLIP's pooled output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenKind {
    Bos,
    Word,
    Eos,
    Pad,
}

/// CLIP's word regex as transformers 5's `CLIPTokenizer` writes it: the two
/// special tokens whole, contractions, letter runs, single digits, runs of
/// anything else; whitespace is dropped.
const CLIP_WORD_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

impl ClipTokenizer {
    /// `dir` is a model's `tokenizer/` folder: `tokenizer.json` when present,
    /// else `vocab.json` + `merges.txt`. Special tokens come from
    /// `tokenizer_config.json`, overridden by `special_tokens_map.json` as
    /// transformers' `from_pretrained` does (stable-diffusion-2 relies on it:
    /// its config says pad `<|endoftext|>`, its map says `!`).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Self::from_folder(&ModelFolder::disk(dir))
    }

    /// [`Self::from_dir`] of a folder on disk or built in.
    pub fn from_folder(dir: &ModelFolder) -> Result<Self> {
        if !dir.is_dir() {
            bail!(
                "tokenizer folder {} not found (expected a folder with tokenizer_config.json and tokenizer.json or vocab.json + merges.txt)",
                dir.display()
            );
        }
        let config_path = dir.file("tokenizer_config.json");
        let config = read_json_object(&config_path)?;
        let max_length = config
            .get("model_max_length")
            .and_then(Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| (2..=MAX_LENGTH).contains(n))
            .ok_or_else(|| {
                anyhow!("{}: model_max_length: expected an integer from 2 to {MAX_LENGTH}", config_path.display())
            })?;
        let specials = SpecialTokens::read(dir, &config_path, &config)?;

        let json_path = dir.file("tokenizer.json");
        let mut tokenizer = if json_path.is_file() {
            let bytes = json_path.read(limits::TOKENIZER)?;
            Tokenizer::from_bytes(bytes)
                .map_err(|e| anyhow!("{}: not a tokenizers JSON file: {e}", json_path.display()))?
        } else {
            build_from_vocab_and_merges(dir, &specials.unk.content)?
        };
        // Padding and truncation are done in `encode`, where the dropped words
        // can be reported; a tokenizer.json's own settings would hide them.
        tokenizer.with_truncation(None).map_err(|e| anyhow!("{}: clearing truncation: {e}", dir.display()))?;
        tokenizer.with_padding(None);
        // transformers registers every special token as an added token, so
        // the text is split around it before BPE: with pad `!`, a `!` in the
        // prompt becomes id 0 rather than BPE's `!</w>`. Tokens a
        // tokenizer.json already declares keep its flags, as in transformers.
        let present: Vec<String> = tokenizer.get_added_tokens_decoder().into_values().map(|t| t.content).collect();
        let mut missing: Vec<AddedToken> = Vec::new();
        for token in [&specials.bos, &specials.eos, &specials.unk, &specials.pad] {
            if !present.contains(&token.content) && !missing.iter().any(|t| t.content == token.content) {
                missing.push(token.clone());
            }
        }
        tokenizer.add_special_tokens(missing).map_err(|e| anyhow!("{}: adding special tokens: {e}", dir.display()))?;
        let with_id = |token: &AddedToken| match tokenizer.token_to_id(&token.content) {
            Some(id) => Ok((id, token.content.clone())),
            None => Err(anyhow!("special token {:?} is not in the vocabulary of {}", token.content, dir.display())),
        };
        Ok(Self {
            bos: with_id(&specials.bos)?,
            eos: with_id(&specials.eos)?,
            pad: with_id(&specials.pad)?,
            tokenizer,
            max_length,
        })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    pub fn pad_id(&self) -> u32 {
        self.pad.0
    }

    pub fn bos_id(&self) -> u32 {
        self.bos.0
    }

    pub fn eos_id(&self) -> u32 {
        self.eos.0
    }

    /// `tokenizer(prompt, padding="max_length", max_length=77, truncation=True)`.
    /// BOS and EOS are added here rather than by a post-processor so that both
    /// loading paths wrap the same way and the cut is made on words only.
    pub fn encode(&self, prompt: &str) -> Result<TokenizedPrompt> {
        let encoding = self.tokenizer.encode(prompt, false).map_err(|e| anyhow!("tokenizing {prompt:?}: {e}"))?;
        let room = self.max_length - 2;
        let words = encoding.get_ids().iter().zip(encoding.get_tokens());
        let truncated = words.clone().skip(room).map(|(_, t)| t.clone()).collect();
        let token = |(id, text): &(u32, String), kind| Token { id: *id, text: text.clone(), kind };
        let mut tokens = Vec::with_capacity(self.max_length);
        tokens.push(token(&self.bos, TokenKind::Bos));
        tokens.extend(words.take(room).map(|(&id, text)| Token { id, text: text.clone(), kind: TokenKind::Word }));
        tokens.push(token(&self.eos, TokenKind::Eos));
        let pad = token(&self.pad, TokenKind::Pad);
        tokens.resize(self.max_length, pad);
        Ok(TokenizedPrompt { ids: tokens.iter().map(|t| t.id).collect(), tokens, truncated })
    }
}

/// BOS/EOS/UNK/PAD as transformers' `from_pretrained` resolves them.
struct SpecialTokens {
    bos: AddedToken,
    eos: AddedToken,
    unk: AddedToken,
    pad: AddedToken,
}

impl SpecialTokens {
    /// Each key from `special_tokens_map.json` when it has it, else from
    /// `tokenizer_config.json`; a config saved by transformers >= 4.34 has
    /// `added_tokens_decoder`, and then transformers ignores the map and takes
    /// each token's flags from there. The `normalized` flag matters: the SD 2
    /// map marks `<|endoftext|>` normalized, so `<|ENDOFTEXT|>` in a prompt is
    /// lowercased into EOS, where SD 1.5's tokenizer.json leaves it as text.
    fn read(dir: &ModelFolder, config_path: &ModelFile, config: &Map<String, Value>) -> Result<Self> {
        let decoder = config.get("added_tokens_decoder").and_then(Value::as_object);
        let map_path = dir.file("special_tokens_map.json");
        let map = if decoder.is_none() && map_path.is_file() { read_json_object(&map_path)? } else { Map::new() };
        let token = |key: &str| -> Result<AddedToken> {
            let (value, path) = match map.get(key) {
                Some(v) if !v.is_null() => (v, &map_path),
                _ => (config.get(key).unwrap_or(&Value::Null), config_path),
            };
            let token = match value {
                Value::String(s) => AddedToken::from(s.as_str(), true),
                Value::Object(o) => {
                    added_token(o).ok_or_else(|| anyhow!("{}: {key} has no string \"content\"", path.display()))?
                }
                Value::Null => bail!("no {key} in {} or {}", config_path.display(), map_path.display()),
                _ => bail!("{}: expected {key} to be a string or an object with \"content\"", path.display()),
            };
            let declared = decoder
                .into_iter()
                .flat_map(|d| d.values())
                .filter_map(|v| v.as_object().and_then(added_token))
                .find(|t| t.content == token.content);
            Ok(declared.unwrap_or(token).special(true))
        };
        Ok(Self {
            bos: token("bos_token")?,
            eos: token("eos_token")?,
            unk: token("unk_token")?,
            pad: token("pad_token")?,
        })
    }
}

/// An `AddedToken` as transformers serializes one; flags default as its
/// special tokens do (matched on the raw text, no stripping).
fn added_token(o: &Map<String, Value>) -> Option<AddedToken> {
    let flag = |key: &str| o.get(key).and_then(Value::as_bool).unwrap_or(false);
    let content = o.get("content")?.as_str()?;
    Some(
        AddedToken::from(content, true)
            .normalized(flag("normalized"))
            .lstrip(flag("lstrip"))
            .rstrip(flag("rstrip"))
            .single_word(flag("single_word")),
    )
}

fn read_json_object(path: &ModelFile) -> Result<Map<String, Value>> {
    let text = path.read_text(limits::TOKENIZER)?;
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => bail!("{}: expected a JSON object", path.display()),
        Err(e) => bail!("{}: invalid JSON, expected an object: {e}", path.display()),
    }
}

/// The tokenizer transformers' CLIP converter builds from `vocab.json` +
/// `merges.txt`, written as tokenizer.json so that the tokenizers crate's own
/// deserializer checks it (every merge must produce a vocab entry).
fn build_from_vocab_and_merges(dir: &ModelFolder, unk: &str) -> Result<Tokenizer> {
    let vocab_path = dir.file("vocab.json");
    let merges_path = dir.file("merges.txt");
    if !vocab_path.is_file() {
        bail!(
            "{} not found (expected tokenizer.json or vocab.json + merges.txt in {})",
            vocab_path.display(),
            dir.display()
        );
    }
    let vocab = read_json_object(&vocab_path)?;
    if let Some((token, _)) = vocab.iter().find(|(_, id)| !id.is_u64()) {
        bail!("{}: id of {token:?} is not a non-negative integer (expected {{token: id}})", vocab_path.display());
    }
    let merges_text =
        merges_path.read_text(limits::TOKENIZER).context("expected BPE merges, one \"left right\" pair a line")?;
    // The first line is a `#version: 0.2` header.
    let mut merges = Vec::new();
    for (n, line) in merges_text.lines().enumerate() {
        if line.is_empty() || (n == 0 && line.starts_with("#version")) {
            continue;
        }
        match line.split_once(' ') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => merges.push(json!([a, b])),
            _ => bail!("{} line {}: expected \"left right\", got {line:?}", merges_path.display(), n + 1),
        }
    }
    let spec = json!({
        "version": "1.0",
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "},
            {"type": "Lowercase"},
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": CLIP_WORD_PATTERN}, "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        ]},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": unk,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "</w>",
            "fuse_unk": false,
            "byte_fallback": false,
            "vocab": vocab,
            "merges": merges,
        },
    });
    Tokenizer::from_bytes(spec.to_string())
        .map_err(|e| anyhow!("{} + {}: not a BPE vocabulary: {e}", vocab_path.display(), merges_path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::PathBuf;

    const TALK_PROMPT: &str = "painting depicting the sea, sunrise, ship, artstation, 4k, concept art";

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
    }

    fn tokenizer_dir(name: &str) -> PathBuf {
        fixture(name).join("model/tokenizer")
    }

    fn tokenizer(name: &str) -> ClipTokenizer {
        ClipTokenizer::from_dir(&tokenizer_dir(name)).unwrap()
    }

    /// sd2-tiny's vocab.json + merges.txt in a temp folder, with the given
    /// tokenizer_config.json and (optionally) special_tokens_map.json.
    fn sd2_files_with(config: Value, map: Option<Value>) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        for file in ["vocab.json", "merges.txt"] {
            fs::copy(tokenizer_dir("sd2-tiny").join(file), tmp.path().join(file)).unwrap();
        }
        fs::write(tmp.path().join("tokenizer_config.json"), config.to_string()).unwrap();
        if let Some(map) = map {
            fs::write(tmp.path().join("special_tokens_map.json"), map.to_string()).unwrap();
        }
        tmp
    }

    #[test]
    fn sd2_prompt_from_the_talk() {
        let tok = tokenizer("sd2-tiny");
        let encoded = tok.encode(TALK_PROMPT).unwrap();
        let mut expected = vec![
            49406, 3086, 24970, 518, 2102, 267, 5610, 267, 1158, 267, 1486, 2631, 267, 275, 330, 267, 6353, 794, 49407,
        ];
        expected.resize(77, 0);
        assert_eq!(encoded.ids, expected);
        assert_eq!(encoded.tokens[1].text, "painting</w>");
        assert_eq!(encoded.tokens[5].text, ",</w>");
        assert!(encoded.truncated.is_empty());
    }

    #[test]
    fn ids_match_the_diffusers_reference_runs() {
        for name in ["sd2-tiny", "sd15-tiny"] {
            let tok = tokenizer(name);
            let run: Value =
                serde_json::from_str(&fs::read_to_string(fixture(name).join("run.json")).unwrap()).unwrap();
            let reference =
                candle_core::safetensors::load(fixture(name).join("reference.safetensors"), &candle_core::Device::Cpu)
                    .unwrap();
            for (prompt_key, tensor) in [("prompt", "input_ids"), ("negative_prompt", "negative_input_ids")] {
                let prompt = run[prompt_key].as_str().unwrap();
                let expected: Vec<i64> = reference[tensor].to_vec1().unwrap();
                let ids: Vec<i64> = tok.encode(prompt).unwrap().ids.into_iter().map(i64::from).collect();
                assert_eq!(ids, expected, "{name} {prompt_key} {prompt:?}");
            }
        }
    }

    /// Every prompt of tests/fixtures/tokenizer/cases.json (made by
    /// make_tokenizer_cases.py with transformers) through both fixtures'
    /// tokenizers: ids, the dropped words, and how many words got in.
    #[test]
    fn matches_transformers_on_awkward_prompts() {
        let cases: Value = serde_json::from_str(&fs::read_to_string(fixture("tokenizer/cases.json")).unwrap()).unwrap();
        let tokenizers = [("sd2", tokenizer("sd2-tiny")), ("sd15", tokenizer("sd15-tiny"))];
        let cases = cases["cases"].as_array().unwrap();
        assert!(cases.len() >= 30);
        let mut failures = Vec::new();
        for case in cases {
            let prompt = case["prompt"].as_str().unwrap();
            for (key, tok) in &tokenizers {
                let expected = &case[*key];
                let ids: Vec<u32> = serde_json::from_value(expected["ids"].clone()).unwrap();
                let truncated: Vec<String> = serde_json::from_value(expected["truncated"].clone()).unwrap();
                let words = expected["words"].as_u64().unwrap() as usize;
                let got = tok.encode(prompt).unwrap();
                let got_words = got.tokens.iter().filter(|t| t.kind == TokenKind::Word).count();
                if got.ids != ids || got.truncated != truncated || got_words + got.truncated.len() != words {
                    failures.push(format!(
                        "{key} {:?} {prompt:?}:\n  got  {:?} cut {:?}\n  want {ids:?} cut {truncated:?}",
                        case["note"], got.ids, got.truncated
                    ));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn kinds_come_from_positions_with_both_pad_conventions() {
        use TokenKind::*;
        for (name, pad_id) in [("sd2-tiny", 0), ("sd15-tiny", 49407)] {
            let tok = tokenizer(name);
            assert_eq!(
                (tok.max_length(), tok.bos_id(), tok.eos_id(), tok.pad_id()),
                (77, 49406, 49407, pad_id),
                "{name}"
            );
            let encoded = tok.encode("a cat").unwrap();
            let kinds: Vec<TokenKind> = encoded.tokens.iter().map(|t| t.kind).collect();
            let mut expected = vec![Bos, Word, Word, Eos];
            expected.resize(77, Pad);
            assert_eq!(kinds, expected, "{name}");
            assert_eq!(encoded.ids[3], 49407);
            assert_eq!(encoded.tokens[3].text, "<|endoftext|>");
            assert!(encoded.ids[4..].iter().all(|&id| id == pad_id), "{name}");
            let pad_text = if pad_id == 0 { "!" } else { "<|endoftext|>" };
            assert_eq!(encoded.tokens[76].text, pad_text);

            let empty = tok.encode("").unwrap();
            assert_eq!(empty.tokens[0].kind, Bos);
            assert_eq!(empty.tokens[1].kind, Eos);
            assert_eq!(empty.tokens[2].kind, Pad);
        }
    }

    #[test]
    fn truncation_keeps_eos_and_reports_dropped_words() {
        let tok = tokenizer("sd15-tiny");
        let prompt = vec!["cat"; 80].join(" ");
        let encoded = tok.encode(&prompt).unwrap();
        assert_eq!(encoded.ids.len(), 77);
        assert_eq!(encoded.tokens[76].kind, TokenKind::Eos);
        assert_eq!(encoded.ids[76], tok.eos_id());
        assert!(encoded.tokens[1..76].iter().all(|t| t.kind == TokenKind::Word && t.text == "cat</w>"));
        assert_eq!(encoded.truncated, vec!["cat</w>"; 5]);
    }

    #[test]
    fn special_tokens_map_overrides_tokenizer_config() {
        // The stable-diffusion-2 layout: config says pad <|endoftext|>, map says `!`.
        let config = json!({
            "model_max_length": 77,
            "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
        });
        let dir = sd2_files_with(config.clone(), Some(json!({"pad_token": "!"})));
        assert_eq!(ClipTokenizer::from_dir(dir.path()).unwrap().pad_id(), 0);
        // A config saved by transformers >= 4.34 is complete; the map is ignored.
        let mut saved = config;
        saved["added_tokens_decoder"] = json!({});
        let dir = sd2_files_with(saved, Some(json!({"pad_token": "!"})));
        assert_eq!(ClipTokenizer::from_dir(dir.path()).unwrap().pad_id(), 49407);
    }

    #[test]
    fn tokenized_prompt_round_trips_through_json() {
        let encoded = tokenizer("sd2-tiny").encode(TALK_PROMPT).unwrap();
        let json = serde_json::to_string(&encoded).unwrap();
        assert!(json.contains(r#"{"id":49406,"text":"<|startoftext|>","kind":"Bos"}"#));
        let back: TokenizedPrompt = serde_json::from_str(&json).unwrap();
        assert_eq!(back, encoded);
    }

    fn load_error(dir: &Path) -> String {
        format!("{:#}", ClipTokenizer::from_dir(dir).unwrap_err())
    }

    #[test]
    fn errors_name_the_file_and_what_was_expected() {
        let missing = fixture("no-such-model/tokenizer");
        let message = load_error(&missing);
        assert!(message.contains(&*missing.to_string_lossy()), "{message}");
        assert!(!message.contains('\n'), "{message}");

        let config = json!({"model_max_length": 77, "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "!"});
        let dir = sd2_files_with(config.clone(), None);
        let vocab = dir.path().join("vocab.json");
        let text = fs::read(&vocab).unwrap();
        fs::write(&vocab, &text[..text.len() / 2]).unwrap();
        let message = load_error(dir.path());
        assert!(message.contains(&*vocab.to_string_lossy()), "{message}");
        assert!(message.contains("invalid JSON"), "{message}");
        assert!(!message.contains('\n'), "{message}");

        let dir = sd2_files_with(config.clone(), None);
        let merges = dir.path().join("merges.txt");
        fs::remove_file(&merges).unwrap();
        let message = load_error(dir.path());
        assert!(message.contains(&*merges.to_string_lossy()), "{message}");

        let dir = sd2_files_with(config, None);
        fs::remove_file(dir.path().join("vocab.json")).unwrap();
        let message = load_error(dir.path());
        assert!(message.contains("vocab.json"), "{message}");

        let dir = sd2_files_with(json!({"pad_token": "!"}), None);
        let message = load_error(dir.path());
        assert!(message.contains("model_max_length"), "{message}");
    }
}
