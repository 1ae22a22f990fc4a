//! `sdlab tui`: the terminal lab.

use anyhow::Result;
use clap::Args;
use sdlab::model::runtime::{DTypeChoice, DeviceChoice};
use sdlab::model::Runtime;
use sdlab::tui::graphics::GraphicsMode;
use sdlab::tui::worker::LoadSpec;
use sdlab::tui::{self, Options};

/// The prompt of the talk sdlab grew from.
const TALK_PROMPT: &str = "painting depicting the sea, sunrise, ship, artstation, 4k, concept art";

#[derive(Args)]
pub struct TuiArgs {
    /// A diffusers folder, a hub repo id (owner/name[@revision]), or a preset: sd15, sd2, sd2-base, sd-turbo.
    #[arg(long, default_value = "sd2-base")]
    model: String,
    #[arg(long)]
    variant: Option<String>,
    #[arg(long)]
    dtype: Option<DTypeChoice>,
    #[arg(long)]
    device: Option<DeviceChoice>,
    #[arg(long, default_value = TALK_PROMPT)]
    prompt: String,
    #[arg(long, default_value = "")]
    negative_prompt: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 50)]
    steps: usize,
    #[arg(long, default_value_t = 7.5)]
    guidance: f64,
    #[arg(long)]
    width: Option<usize>,
    #[arg(long)]
    height: Option<usize>,
    #[arg(long, default_value = "ddim", value_parser = super::generate::parse_scheduler)]
    scheduler: String,
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    /// How images are drawn: auto (ask the terminal), sixel, kitty, iterm2, halfblocks.
    #[arg(long, default_value = "auto")]
    graphics: GraphicsMode,
}

pub fn run(args: TuiArgs) -> Result<()> {
    let load = LoadSpec {
        model: args.model,
        variant: args.variant,
        runtime: Runtime::select(args.device, args.dtype)?,
        prompt: args.prompt,
        negative_prompt: args.negative_prompt,
        seed: args.seed,
        steps: args.steps,
        guidance_scale: args.guidance,
        eta: args.eta,
        width: args.width,
        height: args.height,
    };
    tui::run(Options { load, graphics: args.graphics })
}
