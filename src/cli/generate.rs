//! `sdlab generate`: the four stages end to end, with a progress bar.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use sdlab::fsutil::{check_output, write_atomic};
use sdlab::image_out::to_rgb8;
use sdlab::scheduler::SamplerName;
use sdlab::session::picture::{pixels_sha256, read_picture, Picture};
use sdlab::session::store::{self, SaveOptions};
use sdlab::session::{trace::write_trace, Img2Img, Session, Settings, DEFAULT_STRENGTH};
use sdlab::text::printable;
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
    /// Denoising steps (default: 20 for shapes, 50 for other models).
    #[arg(long)]
    steps: Option<usize>,
    /// Classifier-free guidance scale, 1 or less turns guidance off (default: 4 for
    /// shapes, 7.5 for other models).
    #[arg(long)]
    guidance: Option<f64>,
    /// Image width in pixels (default: unet sample_size x VAE factor).
    #[arg(long)]
    width: Option<usize>,
    #[arg(long)]
    height: Option<usize>,
    /// The sampler: ddim, pndm, lms, heun, euler, euler_karras, euler_a,
    /// dpmpp_2m, dpmpp_2m_karras, unipc, lcm, or model (the class the model's
    /// scheduler_config.json names).
    #[arg(long, default_value = "ddim", value_parser = parse_scheduler)]
    scheduler: String,
    /// Image to image: start from this picture (its size is the run's) instead of
    /// pure noise.
    #[arg(long)]
    init_image: Option<PathBuf>,
    /// Image to image: how much of the schedule runs, above 0 and at most 1 (the
    /// picture is noised to the first of the last int(steps x strength) timesteps).
    #[arg(long, requires = "init_image", allow_negative_numbers = true)]
    strength: Option<f64>,
    /// DDIM eta: 0 is deterministic, > 0 adds seeded noise at every step.
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    #[arg(long, default_value = "sdlab.png")]
    out: PathBuf,
    /// Also write every intermediate (the names of diffusers' reference traces) as safetensors.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Save the run as a session of this name (under --dir), to resume or replay it.
    #[arg(long)]
    session: Option<String>,
    /// Stop after this many denoising steps (0 to --steps) and save the session, without decoding.
    #[arg(long, requires = "session")]
    stop_at: Option<usize>,
    /// The folder sessions are saved in.
    #[arg(long, default_value = store::DEFAULT_ROOT)]
    dir: PathBuf,
    /// Replace a session of the same name.
    #[arg(long)]
    force: bool,
    /// Allow image sides past 4096 pixels (memory grows with the square of the side).
    #[arg(long)]
    allow_large: bool,
    /// Show the image in the terminal when done (sixel, kitty, iTerm2 or half-blocks).
    #[arg(long)]
    show: bool,
    /// How --show draws: auto (ask the terminal), sixel, kitty, iterm2, halfblocks.
    #[arg(long, default_value = "auto")]
    graphics: GraphicsMode,
}

/// A sampler's name (one of `SamplerName::ALL`), or `model` for the class the
/// model's `scheduler_config.json` names (resolved once the model is open).
pub fn parse_scheduler(name: &str) -> Result<String, String> {
    if name == "model" {
        return Ok(name.into());
    }
    SamplerName::from_name(name).map(|s| s.as_str().into()).map_err(|e| e.to_string())
}

pub fn run(args: GenerateArgs) -> Result<()> {
    if args.out.as_os_str().is_empty() {
        bail!("--out: expected a file path");
    }
    for path in std::iter::once(&args.out).chain(&args.trace) {
        check_output(path)?;
    }
    let save_to = session_target(&args.dir, args.session.as_deref(), args.force)?;
    let suggested = args.model.suggested();
    let steps = args.steps.unwrap_or(suggested.steps);
    let strength = args.strength.unwrap_or(DEFAULT_STRENGTH);
    if !(strength > 0.0 && strength <= 1.0) {
        bail!("--strength {strength:?}: expected a number above 0 and at most 1");
    }
    let model = args.model.open()?;
    let default_size = model.default_size();
    let picture = match &args.init_image {
        Some(path) => Some(init_image(path, strength, model.vae_scale_factor(), args.width, args.height)?),
        None => None,
    };
    let (width, height) = match &picture {
        Some((_, p)) => (p.rgb.width() as usize, p.rgb.height() as usize),
        None => (args.width.unwrap_or(default_size), args.height.unwrap_or(default_size)),
    };
    let settings = Settings {
        prompt: args.prompt,
        negative_prompt: args.negative_prompt,
        seed: args.seed,
        steps,
        guidance_scale: args.guidance.unwrap_or(suggested.guidance),
        eta: args.eta,
        width,
        height,
        scheduler: SamplerName::parse(&args.scheduler, &model.scheduler_config)?,
        img2img: picture.as_ref().map(|(i, _)| i.clone()),
    };
    let mut session = Session::new_with(model, settings, args.allow_large)?;
    if let Some((_, picture)) = picture {
        session.set_init_image(picture.rgb)?;
    }
    if let Some(k) = args.stop_at.filter(|&k| k > session.calls()) {
        // calls, not steps: PNDM makes one more, Heun two per step but the last
        bail!("--stop-at {k}: expected 0 to {} (the run's sampler calls for --steps {steps})", session.calls());
    }

    let encoding = session.encode_prompt()?;
    if let Some(note) = dropped_tokens_note(&encoding.prompt.truncated) {
        eprintln!("{note}");
    }
    session.get_latent()?;
    let outputs = Outputs {
        png: Some(&args.out),
        trace: args.trace.as_deref(),
        session: save_to.as_deref(),
        show: args.show.then_some(args.graphics),
    };
    finish(&mut session, args.stop_at, &[], &outputs, args.force)
}

/// `--init-image`: the picture, read and sized for the VAE, and the settings that
/// name it (its absolute path, so a rerun from another folder finds it). The run
/// takes the picture's size: `--width` / `--height` must agree with it.
fn init_image(
    path: &Path,
    strength: f64,
    factor: usize,
    width: Option<usize>,
    height: Option<usize>,
) -> Result<(Img2Img, Picture)> {
    let picture = read_picture(path, factor)?;
    if let Some(note) = &picture.note {
        eprintln!("note: {}", printable(note));
    }
    let (w, h) = (picture.rgb.width() as usize, picture.rgb.height() as usize);
    for (flag, given, size) in [("--width", width, w), ("--height", height, h)] {
        if let Some(given) = given.filter(|&g| g != size) {
            bail!("{flag} {given}: image to image takes the picture's size, {w}x{h} ({})", path.display());
        }
    }
    let image = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()).display().to_string();
    let img2img = Img2Img { image, sha256: pixels_sha256(&picture.rgb), strength };
    Ok((img2img, picture))
}

/// What the text encoder never saw, said once: a 120 KB prompt drops tens of
/// thousands of tokens, and the first few say which part was cut.
pub fn dropped_tokens_note(truncated: &[String]) -> Option<String> {
    const SHOWN: usize = 12;
    let (shown, more) = match truncated.len() {
        0 => return None,
        n if n <= SHOWN => (truncated, String::new()),
        n => (&truncated[..SHOWN], format!(" … and {} more", n - SHOWN)),
    };
    // BPE tokens: `</w>` ends a word.
    let text: String =
        shown.iter().map(|t| t.strip_suffix("</w>").map_or_else(|| t.clone(), |w| format!("{w} "))).collect();
    Some(printable(&format!(
        "note: the prompt is longer than the text encoder reads; {} tokens were dropped: {}{more}",
        truncated.len(),
        text.trim_end()
    )))
}

/// The folder `--session NAME` saves into, checked before any computing so that a
/// name clash is found in a second, not after the run.
pub fn session_target(root: &Path, name: Option<&str>, force: bool) -> Result<Option<PathBuf>> {
    let Some(name) = name else { return Ok(None) };
    let dir = store::session_dir(root, name)?;
    store::check_can_save(&dir, force)?;
    Ok(Some(dir))
}

/// Where a finished (or stopped) run goes.
pub struct Outputs<'a> {
    pub png: Option<&'a Path>,
    pub trace: Option<&'a Path>,
    pub session: Option<&'a Path>,
    /// Draw the image in the terminal, with this protocol.
    pub show: Option<GraphicsMode>,
}

/// Takes the remaining steps (up to `stop_at`), with `guidance_scales[i]` for step
/// `i` where given, decodes unless stopped early, and writes the outputs.
pub fn finish(
    session: &mut Session,
    stop_at: Option<usize>,
    guidance_scales: &[f64],
    outputs: &Outputs,
    force: bool,
) -> Result<()> {
    let steps = session.calls();
    let target = stop_at.unwrap_or(steps);
    let bar = ProgressBar::new(steps as u64).with_style(
        ProgressStyle::with_template("denoise {bar:30} {pos}/{len} {msg} [{elapsed} < {eta}]").expect("valid template"),
    );
    bar.set_position(session.history().len() as u64);
    while session.history().len() < target {
        if let Some(&scale) = guidance_scales.get(session.history().len()) {
            session.set_guidance_scale(scale)?;
        }
        let record = session.step()?;
        let s = &record.denoise.scheduler;
        bar.set_message(format!("t={:.2} alpha_prod_t={:.4}", s.timestep(), s.alpha_prod_t()));
        bar.inc(1);
    }
    bar.finish_and_clear();
    if target == steps {
        let image = to_rgb8(session.vae_decode()?)?;
        if let Some(out) = outputs.png {
            write_atomic(out, &session.png_with_settings(&image)?)?;
            eprintln!("wrote {} ({}x{})", out.display(), image.width(), image.height());
        }
        if let Some(mode) = outputs.show {
            let (cols, rows) = crossterm::terminal::size().unwrap_or((80, 24));
            print_image(&image, mode, cols, rows.saturating_sub(2))?;
        }
    }
    if let Some(trace) = outputs.trace {
        write_trace(session, trace)?;
        eprintln!("wrote {}", trace.display());
    }
    if let Some(dir) = outputs.session {
        session.save(dir, SaveOptions { force })?;
        eprintln!("saved session {} ({} of {steps} steps)", dir.display(), session.history().len());
    }
    Ok(())
}
