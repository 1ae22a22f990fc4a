//! `sdlab generate`: the four stages end to end, with a progress bar.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use sdlab::image_out::{save_png, to_rgb8};
use sdlab::session::{trace::write_trace, Session, Settings};
use sdlab::tui::graphics::{print_image, GraphicsMode};

use super::ModelArgs;

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value = "")]
    negative_prompt: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Classifier-free guidance scale (1 or less turns guidance off).
    #[arg(long, default_value_t = 7.5)]
    guidance: f64,
    /// Image width in pixels (default: unet sample_size x VAE factor).
    #[arg(long)]
    width: Option<usize>,
    #[arg(long)]
    height: Option<usize>,
    #[arg(long, default_value = "ddim", value_parser = parse_scheduler)]
    scheduler: String,
    /// DDIM eta: 0 is deterministic, > 0 adds seeded noise at every step.
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    #[arg(long, default_value = "sdlab.png")]
    out: PathBuf,
    /// Also write every intermediate (the names of diffusers' reference traces) as safetensors.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Show the image in the terminal when done (sixel, kitty, iTerm2 or half-blocks).
    #[arg(long)]
    show: bool,
    /// How --show draws: auto (ask the terminal), sixel, kitty, iterm2, halfblocks.
    #[arg(long, default_value = "auto")]
    graphics: GraphicsMode,
}

/// DDIM is the scheduler sdlab implements (from any scheduler_config.json).
pub fn parse_scheduler(name: &str) -> Result<String, String> {
    match name {
        "ddim" => Ok(name.into()),
        other => Err(format!("unknown scheduler {other:?}: expected ddim")),
    }
}

pub fn run(args: GenerateArgs) -> Result<()> {
    if args.out.as_os_str().is_empty() {
        bail!("--out: expected a file path");
    }
    let model = args.model.open()?;
    let default_size = model.default_size();
    let settings = Settings {
        prompt: args.prompt,
        negative_prompt: args.negative_prompt,
        seed: args.seed,
        steps: args.steps,
        guidance_scale: args.guidance,
        eta: args.eta,
        width: args.width.unwrap_or(default_size),
        height: args.height.unwrap_or(default_size),
    };
    let mut session = Session::new(model, settings)?;

    let encoding = session.encode_prompt()?;
    if !encoding.prompt.truncated.is_empty() {
        eprintln!(
            "note: the prompt is longer than the text encoder reads; {} tokens were dropped: {}",
            encoding.prompt.truncated.len(),
            encoding.prompt.truncated.join(" ")
        );
    }
    session.get_latent()?;
    let steps = session.settings().steps;
    let bar = ProgressBar::new(steps as u64).with_style(
        ProgressStyle::with_template("denoise {bar:30} {pos}/{len} {msg} [{elapsed} < {eta}]").expect("valid template"),
    );
    for _ in 0..steps {
        let record = session.step()?;
        let s = &record.denoise.scheduler;
        bar.set_message(format!("t={} alpha_prod_t={:.4}", s.timestep, s.alpha_prod_t));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let image = to_rgb8(session.vae_decode()?)?;
    save_png(&image, &args.out)?;
    eprintln!("wrote {} ({}x{})", args.out.display(), image.width(), image.height());
    if let Some(trace) = &args.trace {
        write_trace(&session, trace)?;
        eprintln!("wrote {}", trace.display());
    }
    if args.show {
        let (cols, rows) = crossterm::terminal::size().unwrap_or((80, 24));
        print_image(&image, args.graphics, cols, rows.saturating_sub(2))?;
    }
    Ok(())
}
