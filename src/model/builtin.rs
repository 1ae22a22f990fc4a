//! Models compiled into the binary, so that the first run draws a picture with
//! no download and no files: `shapes`, trained by `models/shapes/train.py`.

use super::single_file::Family;

/// A diffusers folder held in memory: each file's path inside the folder and its
/// bytes, and the settings it draws well with.
#[derive(Debug, PartialEq)]
pub struct BuiltinModel {
    pub name: &'static str,
    pub files: &'static [(&'static str, &'static [u8])],
    pub suggested: Suggested,
}

/// A run's settings where the command line is silent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Suggested {
    pub prompt: &'static str,
    pub steps: usize,
    pub guidance: f64,
}

/// The talk's prompt, and the steps and guidance diffusers' SD pipelines default to:
/// the suggestion for any model sdlab does not carry.
pub const FOR_ANY_MODEL: Suggested = Suggested {
    prompt: "painting depicting the sea, sunrise, ship, artstation, 4k, concept art",
    steps: 50,
    guidance: 7.5,
};

impl BuiltinModel {
    pub fn file(&self, path: &str) -> Option<&'static [u8]> {
        self.files.iter().find(|(name, _)| *name == path).map(|(_, bytes)| *bytes)
    }
}

macro_rules! folder {
    ($dir:literal: $($file:literal),* ; $($name:literal => $bytes:expr),* $(,)?) => {
        &[
            $(($file, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/", $dir, "/", $file))),)*
            $(($name, $bytes),)*
        ]
    };
}

/// CLIP's BPE vocabulary and merges (the real ones, 49,408 tokens): every SD 1.x
/// and 2.x text encoder's, and `shapes`'.
const CLIP_VOCAB: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/models/shapes/model/tokenizer/vocab.json"));
const CLIP_MERGES: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/models/shapes/model/tokenizer/merges.txt"));

/// The tiny model trained on flat shapes in named colours, places and sizes
/// (`models/shapes/README.md` says what it draws and how it was trained).
pub static SHAPES: BuiltinModel = BuiltinModel {
    name: "shapes",
    files: folder!("models/shapes/model":
        "model_index.json",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "tokenizer/special_tokens_map.json",
        "tokenizer/tokenizer_config.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors";
        "tokenizer/vocab.json" => CLIP_VOCAB,
        "tokenizer/merges.txt" => CLIP_MERGES,
    ),
    // A prompt it draws well, few steps (a run is about a second on a
    // 2-core CPU, half of it the load), and the guidance its tests use: at 4
    // guidance overshoots colours between two others (orange on green comes out
    // red in 10 seeds of 10), at 2 it does not.
    suggested: Suggested { prompt: "a big red circle on the left, on a blue background", steps: 20, guidance: 2.0 },
};

/// Every built-in model, by the name `--model` takes.
pub static ALL: &[&BuiltinModel] = &[&SHAPES];

/// The tokenizer folders of the SD 1.x and 2.x families, for a single-file
/// checkpoint, which carries none: CLIP's vocabulary, padded as each family pads
/// (`<|endoftext|>` in 1.x, `!` in 2.x).
pub static CLIP_TOKENIZER_SD1: BuiltinModel = BuiltinModel {
    name: "SD 1.x CLIP tokenizer",
    files: &[
        ("tokenizer/vocab.json", CLIP_VOCAB),
        ("tokenizer/merges.txt", CLIP_MERGES),
        ("tokenizer/tokenizer_config.json", br#"{"model_max_length": 77, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}"#),
    ],
    suggested: FOR_ANY_MODEL,
};

pub static CLIP_TOKENIZER_SD2: BuiltinModel = BuiltinModel {
    name: "SD 2.x CLIP tokenizer",
    files: &[
        ("tokenizer/vocab.json", CLIP_VOCAB),
        ("tokenizer/merges.txt", CLIP_MERGES),
        ("tokenizer/tokenizer_config.json", br#"{"model_max_length": 77, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "!"}"#),
    ],
    suggested: FOR_ANY_MODEL,
};

pub fn tokenizer_of(family: Family) -> &'static BuiltinModel {
    match family {
        Family::Sd1 => &CLIP_TOKENIZER_SD1,
        Family::Sd2 => &CLIP_TOKENIZER_SD2,
    }
}

pub fn find(name: &str) -> Option<&'static BuiltinModel> {
    ALL.iter().copied().find(|m| m.name == name)
}

/// The model sdlab opens when none is named.
pub const DEFAULT: &str = "shapes";
