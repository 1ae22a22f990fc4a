//! `sdlab tui`: the terminal lab.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use sdlab::fsutil::{limits, read_regular};
use sdlab::model::runtime::{DTypeChoice, DeviceChoice};
use sdlab::model::{builtin, ModelSource, Runtime};
use sdlab::png_meta::{read_text_chunks, SDLAB_KEY};
use sdlab::session::store::ImageSettings;
use sdlab::session::{Limits, Origin};
use sdlab::tui::graphics::GraphicsMode;
use sdlab::tui::i18n::Lang;
use sdlab::tui::talk::ThemeChoice;
use sdlab::tui::worker::LoadSpec;
use sdlab::tui::{self, Options};

/// The settings an sdlab PNG carries in its `sdlab` text chunk, checked as far as
/// they can be without the model, so that a bad value is named as the chunk names it.
fn remembered_settings(png: &Path, allow_large: bool) -> Result<ImageSettings> {
    let bytes = read_regular(png, limits::PNG)?;
    let chunks = read_text_chunks(&bytes).with_context(|| format!("{}: not a PNG", png.display()))?;
    let (_, json) = chunks.iter().find(|(key, _)| key == SDLAB_KEY).with_context(|| {
        format!("{}: no sdlab settings chunk (sdlab resume reads A1111 parameters with --model)", png.display())
    })?;
    let remembered = ImageSettings::from_json(json).with_context(|| format!("{}: sdlab chunk", png.display()))?;
    let limits = Limits::without_model(remembered.scheduler_config.num_train_timesteps, allow_large);
    remembered
        .settings
        .check(&limits)
        .map_err(|e| anyhow::anyhow!("{}: sdlab chunk: {}", png.display(), e.describe(Origin::SettingsJson)))?;
    Ok(remembered)
}

#[derive(Args)]
pub struct TuiArgs {
    /// shapes (built in: no download), a diffusers folder, a hub repo id (owner/name[@revision]),
    /// or a preset: sd15, sd2, sd2-base, sd-turbo. (default: shapes, or the model of --session)
    #[arg(long)]
    model: Option<String>,
    #[arg(long)]
    variant: Option<String>,
    #[command(flatten)]
    weights: super::WeightArgs,
    #[arg(long)]
    dtype: Option<DTypeChoice>,
    #[arg(long)]
    device: Option<DeviceChoice>,
    /// (default: one the model draws well; for models not built in, the talk's sea painting)
    #[arg(long)]
    prompt: Option<String>,
    #[arg(long, default_value = "")]
    negative_prompt: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// (default: 20 for shapes, 50 for other models)
    #[arg(long)]
    steps: Option<usize>,
    /// (default: 4 for shapes, 7.5 for other models)
    #[arg(long)]
    guidance: Option<f64>,
    #[arg(long)]
    width: Option<usize>,
    #[arg(long)]
    height: Option<usize>,
    /// The sampler (see `generate --scheduler`).
    #[arg(long, default_value = "ddim", value_parser = super::generate::parse_scheduler)]
    scheduler: String,
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    /// How images are drawn: auto (ask the terminal), sixel, kitty, iterm2, halfblocks.
    #[arg(long, default_value = "auto")]
    graphics: GraphicsMode,
    /// Open a saved session folder at the stage and step where it was left (SESSION or
    /// SESSION/BRANCH under sessions/), or a PNG written by sdlab to run its settings again.
    #[arg(long)]
    session: Option<PathBuf>,
    /// With --session: walk the recorded run without loading any model.
    #[arg(long, requires = "session")]
    replay: bool,
    /// With --session: go on with a model whose weights differ from the saved run's.
    #[arg(long)]
    force: bool,
    /// Allow image sides past 4096 pixels (memory grows with the square of the side).
    #[arg(long)]
    allow_large: bool,
    /// Start in talk mode: each stage a slide with its code, for a projector (t toggles it).
    #[arg(long)]
    talk: bool,
    /// Language of talk mode's labels: en or ja. (default: ja when LC_ALL, LC_MESSAGES or
    /// LANG starts with ja, else en)
    #[arg(long)]
    lang: Option<Lang>,
    /// Talk mode's look: auto (light or dark by the terminal's background), light, dark, or
    /// high-contrast for a projector in a lit room (c toggles it).
    #[arg(long, default_value = "auto")]
    theme: ThemeChoice,
}

pub fn run(mut args: TuiArgs) -> Result<()> {
    let mut session = args.session.take();
    let mut remembered_options = None;
    if let Some(png) = session.as_deref().filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"))) {
        // A picture that remembers its settings: run them again, live.
        let remembered = remembered_settings(png, args.allow_large)?;
        let s = remembered.settings;
        // the picture's LoRAs and configs, unless another model or others are named
        if args.model.is_none() && !args.weights.given() {
            remembered_options = Some(remembered.model.load_options()?);
        }
        args.model = args.model.or(Some(remembered.model.source));
        args.variant = args.variant.or(remembered.model.variant);
        (args.prompt, args.negative_prompt, args.seed, args.steps) =
            (Some(s.prompt), s.negative_prompt, s.seed, Some(s.steps));
        (args.guidance, args.eta, args.width, args.height) =
            (Some(s.guidance_scale), s.eta, Some(s.width), Some(s.height));
        session = None;
    }
    // SESSION or SESSION/BRANCH under sessions/, where no such folder is here.
    if let Some(name) = session.as_deref().filter(|p| !p.exists()).and_then(|p| p.to_str()) {
        session =
            Some(sdlab::session::store::run_dir(std::path::Path::new(sdlab::session::store::DEFAULT_ROOT), name)?);
    }
    let model_given = args.model.is_some();
    let model = args.model.unwrap_or_else(|| builtin::DEFAULT.into());
    let suggested = ModelSource::suggested(&model);
    let load = LoadSpec {
        model,
        variant: args.variant,
        options: match remembered_options {
            Some(options) => options,
            None => args.weights.load_options()?,
        },
        runtime: Runtime::select(args.device, args.dtype)?,
        prompt: args.prompt.unwrap_or_else(|| suggested.prompt.into()),
        negative_prompt: args.negative_prompt,
        seed: args.seed,
        steps: args.steps.unwrap_or(suggested.steps),
        guidance_scale: args.guidance.unwrap_or(suggested.guidance),
        eta: args.eta,
        scheduler: args.scheduler,
        width: args.width,
        height: args.height,
        session,
        model_given,
        replay: args.replay,
        force: args.force,
        allow_large: args.allow_large,
    };
    let lang = args.lang.unwrap_or_else(|| Lang::from_locale(|key| std::env::var(key).ok()));
    tui::run(Options { load, graphics: args.graphics, talk: args.talk, lang, theme: args.theme })
}
