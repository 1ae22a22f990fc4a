//! Command-line parsing and the subcommands, each a thin layer over the session.

mod bench;
mod branch;
mod generate;
mod grid;
mod resume;
mod sessions;
mod tokens;
mod tui;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use sdlab::model::builtin::Suggested;
use sdlab::model::lora::LoraSpec;
use sdlab::model::runtime::{DTypeChoice, DeviceChoice};
use sdlab::model::{self, LoadOptions, Progress, Runtime, StableDiffusion};

/// Watch Stable Diffusion work, one stage and one timestep at a time.
#[derive(Parser)]
#[command(name = "sdlab", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the 77 token ids of a prompt (BOS, words, EOS, padding, truncated).
    Tokens(tokens::TokensArgs),
    /// Run the four stages and write a PNG (and optionally every intermediate).
    Generate(generate::GenerateArgs),
    /// Finish a saved session, or run again what a PNG's text chunks remember.
    Resume(resume::ResumeArgs),
    /// Fork a saved run after K steps with another prompt, guidance or eta; saved inside the session.
    Branch(branch::BranchArgs),
    /// A contact sheet: rows of seeds, columns of guidance scales, each cell a saved run.
    Grid(grid::GridArgs),
    /// List the saved sessions: name, step, date, model, prompt.
    Sessions(sessions::SessionsArgs),
    /// Time every stage and measure peak memory (one JSON line with --json).
    Bench(bench::BenchArgs),
    /// The terminal lab: the four stages live, one step at a time.
    Tui(tui::TuiArgs),
}

/// Which model, and where it runs.
#[derive(Args)]
pub struct ModelArgs {
    /// shapes (built in: no download), a diffusers folder, a single-file SD 1.x/2.x checkpoint
    /// (.safetensors, .ckpt), a hub repo id (owner/name[@revision]), or a preset: sd15, sd2,
    /// sd2-base, sd-turbo.
    #[arg(long, default_value = sdlab::model::builtin::DEFAULT)]
    model: String,
    /// Weight file variant, e.g. fp16 picks `*.fp16.safetensors`.
    #[arg(long)]
    variant: Option<String>,
    #[command(flatten)]
    weights: WeightArgs,
    /// f32 or f16 (default: f16 on CUDA, f32 on the CPU).
    #[arg(long)]
    dtype: Option<DTypeChoice>,
    /// cpu or cuda (default: cuda when built with it and a GPU is present).
    #[arg(long)]
    device: Option<DeviceChoice>,
}

impl ModelArgs {
    /// The run settings the model draws well with, where the command line is silent.
    fn suggested(&self) -> Suggested {
        model::ModelSource::suggested(&self.model)
    }

    fn open(&self) -> Result<StableDiffusion> {
        let runtime = Runtime::select(self.device, self.dtype)?;
        let model = model::open_with(
            &self.model,
            self.variant.as_deref(),
            self.weights.load_options()?,
            runtime,
            &Progress::Bars,
        )?;
        for note in &model.notes {
            eprintln!("note: {note}");
        }
        Ok(model)
    }
}

/// What `--model` alone does not say: a single file's configs, the prediction type, LoRAs.
#[derive(Args)]
pub struct WeightArgs {
    /// A LoRA fused into the weights, FILE[:SCALE] (scale 1.0 by default); kohya or diffusers/PEFT
    /// format; repeatable.
    #[arg(long = "lora", value_name = "FILE[:SCALE]")]
    loras: Vec<String>,
    /// For a single-file checkpoint: a diffusers folder whose configs, tokenizer and scheduler to use
    /// instead of those inferred from the file.
    #[arg(long, value_name = "DIR")]
    config: Option<std::path::PathBuf>,
    /// epsilon, v_prediction or sample: overrides the model's (a single SD 2.x file is taken as
    /// v_prediction, as diffusers does).
    #[arg(long)]
    prediction_type: Option<String>,
}

impl WeightArgs {
    fn given(&self) -> bool {
        !self.loras.is_empty() || self.config.is_some() || self.prediction_type.is_some()
    }

    fn load_options(&self) -> Result<LoadOptions> {
        Ok(LoadOptions {
            config: self.config.clone(),
            prediction_type: self.prediction_type.as_deref().map(LoadOptions::parse_prediction_type).transpose()?,
            loras: self.loras.iter().map(|l| LoraSpec::parse(l)).collect::<Result<_>>()?,
        })
    }
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Tokens(args) => tokens::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Resume(args) => resume::run(args),
        Command::Branch(args) => branch::run(args),
        Command::Sessions(args) => sessions::run(args),
        Command::Grid(args) => grid::run(args),
        Command::Tui(args) => tui::run(args),
        Command::Bench(args) => bench::run(args),
    }
}
