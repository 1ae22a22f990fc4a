//! Models compiled into the binary, so that the first run draws a picture with
//! no download and no files: `shapes`, trained by `models/shapes/train.py`.

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
    ($dir:literal: $($file:literal),* $(,)?) => {
        &[$(($file, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/", $dir, "/", $file)))),*]
    };
}

/// The tiny model trained on flat shapes in named colours, places and sizes
/// (`models/shapes/README.md` says what it draws and how it was trained).
pub static SHAPES: BuiltinModel = BuiltinModel {
    name: "shapes",
    files: folder!("models/shapes/model":
        "model_index.json",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "tokenizer/merges.txt",
        "tokenizer/special_tokens_map.json",
        "tokenizer/tokenizer_config.json",
        "tokenizer/vocab.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
    ),
    // A prompt it draws well, few steps (a run is about a second on a
    // 2-core CPU, half of it the load), and the guidance its tests use.
    suggested: Suggested { prompt: "a big red circle on the left, on a blue background", steps: 20, guidance: 4.0 },
};

/// Every built-in model, by the name `--model` takes.
pub static ALL: &[&BuiltinModel] = &[&SHAPES];

pub fn find(name: &str) -> Option<&'static BuiltinModel> {
    ALL.iter().copied().find(|m| m.name == name)
}

/// The model sdlab opens when none is named.
pub const DEFAULT: &str = "shapes";
