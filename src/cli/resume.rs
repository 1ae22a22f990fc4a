//! `sdlab resume`: finish a saved session, or run again what a PNG remembers.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use sdlab::fsutil::{check_output, limits, read_regular};
use sdlab::model::runtime::{DTypeChoice, DeviceChoice};
use sdlab::model::{self, Progress, Runtime, StableDiffusion};
use sdlab::png_meta::{read_text_chunks, A1111Parameters, PARAMETERS_KEY, SDLAB_KEY};
use sdlab::scheduler::SamplerName;
use sdlab::session::picture::read_picture;
use sdlab::session::store::{self, ImageSettings, ModelInfo, OpenOptions, SessionRecord};
use sdlab::session::{Change, Limits, Origin, Session, SettingError, Settings};
use sdlab::text::printable_line;

use super::generate::{finish, session_target, Outputs};

#[derive(Args)]
pub struct ResumeArgs {
    /// A session name (under --dir), a session folder, or a PNG written by sdlab
    /// (or by a tool that writes AUTOMATIC1111's `parameters` chunk).
    target: String,
    /// The folder sessions are saved in.
    #[arg(long, default_value = store::DEFAULT_ROOT)]
    dir: PathBuf,
    /// Use this model instead of the one the session or image names.
    #[arg(long)]
    model: Option<String>,
    /// f32 or f16 (default: what the run used).
    #[arg(long)]
    dtype: Option<DTypeChoice>,
    /// cpu or cuda (default: what the run used, when this machine has it).
    #[arg(long)]
    device: Option<DeviceChoice>,
    /// Also write the finished image here (a session keeps it in images/final.png).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write every intermediate of the finished run as safetensors.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Save a run rebuilt from a PNG as a session of this name.
    #[arg(long)]
    session: Option<String>,
    /// Go on with a model whose weights differ from the saved run's (a warning, not
    /// an error), and replace an existing session given by --session.
    #[arg(long)]
    force: bool,
    /// Allow image sides past 4096 pixels.
    #[arg(long)]
    allow_large: bool,
}

pub fn run(args: ResumeArgs) -> Result<()> {
    for path in args.out.iter().chain(&args.trace) {
        check_output(path)?;
    }
    let path = Path::new(&args.target);
    let is_png = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if is_png {
        return from_png(path, &args);
    }
    if args.session.is_some() {
        bail!("--session: a resumed session is saved back into its own folder; --session names a new one for a PNG");
    }
    // A bare name is a session under --dir, whatever the working folder holds, and
    // NAME/BRANCH one of its branches; any other path is a folder read where it is.
    let dir = store::run_dir(&args.dir, &args.target)?;
    let mut record = SessionRecord::load(&dir).map_err(|e| {
        if !args.target.contains('/') && path.is_dir() {
            anyhow!("{e:#}; a folder named {0} is here too: name it as ./{0} to resume it", args.target)
        } else {
            e
        }
    })?;
    if let Some(note) = record.recovered.take() {
        eprintln!("note: {note}");
    }
    let model = open_model(&args, &record.model, &record.runtime.device, &record.runtime.dtype)?;
    let options = OpenOptions { force: args.force, allow_large: args.allow_large };
    let opened = Session::from_record(model, record, options)
        .map_err(|e| anyhow!("{}: {e}", dir.join(store::SESSION_JSON).display()))?;
    for warning in &opened.warnings {
        eprintln!("warning: {}", printable_line(warning));
    }
    let mut session = opened.session;
    eprintln!("resuming {} at step {} of {}", dir.display(), session.history().len(), session.calls());
    let outputs = Outputs { png: args.out.as_deref(), trace: args.trace.as_deref(), session: Some(&dir), show: None };
    // The session folder is this run's own: saving the finished run over it is the point.
    finish(&mut session, None, &[], &outputs, true)
}

/// Runs again, from the start, what `png`'s text chunks say: the exact `sdlab`
/// JSON when present, else the AUTOMATIC1111 `parameters` text.
fn from_png(png: &Path, args: &ResumeArgs) -> Result<()> {
    let bytes = read_regular(png, limits::PNG)?;
    let chunks = read_text_chunks(&bytes).map_err(|e| anyhow!("{}: {e}", png.display()))?;
    let chunk = |key: &str| chunks.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let (remembered, origin, source) = match (chunk(SDLAB_KEY), chunk(PARAMETERS_KEY)) {
        (Some(json), _) => {
            let settings =
                ImageSettings::from_json(json).map_err(|e| anyhow!("{}: sdlab text chunk: {e}", png.display()))?;
            (settings, Origin::SettingsJson, "sdlab text chunk")
        }
        (None, Some(text)) => {
            let settings = from_parameters(text, args).map_err(|e| anyhow!("{}: {e}", png.display()))?;
            (settings, Origin::Parameters, "parameters text chunk")
        }
        (None, None) => bail!("{}: no sdlab or parameters text chunk: nothing says how it was made", png.display()),
    };
    let in_chunk = |e: anyhow::Error| anyhow!("{}: {source}: {:#}", png.display(), SettingError::rename(e, origin));
    // What can be checked without the model is, before it loads.
    let num_train = match origin {
        Origin::SettingsJson => remembered.scheduler_config.num_train_timesteps,
        _ => usize::MAX,
    };
    let limits = Limits::without_model(num_train, args.allow_large);
    remembered.settings.check(&limits).map_err(|e| in_chunk(e.into()))?;
    if args.session.is_some() && !remembered.earlier.is_empty() {
        bail!(
            "{}: --session: this picture is a branch's (its first {} steps ran with another prompt or eta); \
             it reruns to a PNG, and `sdlab branch` makes such a run inside a session",
            png.display(),
            remembered.earlier.last().map_or(0, |s| s.until)
        );
    }
    let save_to = session_target(&args.dir, args.session.as_deref(), args.force)?;
    let model = open_model(args, &remembered.model, &remembered.runtime.device, &remembered.runtime.dtype)?;
    if !remembered.model.fingerprint.is_empty() {
        let here = ModelInfo::of(&model.files)?;
        if here.fingerprint != remembered.model.fingerprint {
            let problem = format!(
                "{}: model {} has weights fingerprint {}, the image was made with {} (fingerprint {})",
                png.display(),
                here.source,
                here.fingerprint,
                remembered.model.source,
                remembered.model.fingerprint
            );
            if !args.force {
                bail!("{problem}; use --force to go on anyway");
            }
            eprintln!("warning: {}", printable_line(&problem));
        }
    }
    if let Err(e) = remembered.model.check_loras(&model) {
        let problem = format!("{}: {e}", png.display());
        if !args.force {
            bail!("{problem}; use --force to go on anyway");
        }
        eprintln!("warning: {}", printable_line(&problem));
    }
    let img2img = remembered.settings.img2img.clone();
    // A branch's picture starts with the settings of its first segment.
    let first = remembered.earlier.first().map(|s| Settings {
        prompt: s.prompt.clone(),
        negative_prompt: s.negative_prompt.clone(),
        eta: s.eta,
        ..remembered.settings.clone()
    });
    let start = first.unwrap_or_else(|| remembered.settings.clone());
    let mut session = Session::new_with(model, start, args.allow_large).map_err(in_chunk)?;
    if let Some(img2img) = img2img {
        // the picture the image was made from, where it was then
        let factor = session.model().vae_scale_factor();
        let picture = read_picture(Path::new(&img2img.image), factor)
            .with_context(|| format!("{}: the image was made from the picture {}", png.display(), img2img.image))?;
        session.set_init_image(picture.rgb).map_err(|e| anyhow!("{}: {e}", png.display()))?;
    }
    session.encode_prompt()?;
    session.get_latent()?;
    let segments = remembered.earlier.iter().map(|s| s.until).zip(
        remembered.earlier.iter().skip(1).map(Some).chain([None]).map(|next| match next {
            Some(s) => (s.prompt.clone(), s.negative_prompt.clone(), s.eta),
            None => (
                remembered.settings.prompt.clone(),
                remembered.settings.negative_prompt.clone(),
                remembered.settings.eta,
            ),
        }),
    );
    let quiet = Outputs { png: None, trace: None, session: None, show: None };
    for (until, (prompt, negative_prompt, eta)) in segments {
        finish(&mut session, Some(until), &remembered.guidance_scales, &quiet, false)?;
        let change = Change {
            prompt: Some(prompt),
            negative_prompt: Some(negative_prompt),
            eta: Some(eta),
            ..Change::default()
        };
        session = session.fork(until, None, &change).map_err(|e| anyhow!("{}: {e:#}", png.display()))?;
    }
    let default_out = PathBuf::from("sdlab.png");
    let outputs = Outputs {
        png: Some(args.out.as_deref().unwrap_or(&default_out)),
        trace: args.trace.as_deref(),
        session: save_to.as_deref(),
        show: None,
    };
    finish(&mut session, None, &remembered.guidance_scales, &outputs, args.force)
}

/// What AUTOMATIC1111-style text gives: prompts, steps, seed, scale, size, eta and
/// the model name; the rest takes sdlab's defaults (the model's scheduler config).
fn from_parameters(text: &str, args: &ResumeArgs) -> Result<ImageSettings> {
    let p = A1111Parameters::parse(text);
    let need = |key: &str| anyhow!("parameters: no {key}");
    let named = p.get("Sampler");
    let scheduler = named
        .and_then(|name| SamplerName::ALL.iter().find(|s| s.a1111_name().eq_ignore_ascii_case(name)))
        .copied()
        .unwrap_or_default();
    if let Some(sampler) = named.filter(|name| !scheduler.a1111_name().eq_ignore_ascii_case(name)) {
        let sampler = printable_line(sampler);
        eprintln!("note: the image was made with the {sampler} sampler, which sdlab does not compute; it runs DDIM, so it will differ");
    }
    let (width, height) = p.size()?.ok_or_else(|| need("Size"))?;
    let source = match (&args.model, p.get("Model")) {
        (Some(m), _) => m.clone(),
        (None, Some(m)) => m.to_string(),
        (None, None) => bail!("parameters: no Model; name one with --model"),
    };
    let settings = Settings {
        prompt: p.prompt.clone(),
        negative_prompt: p.negative_prompt.clone(),
        seed: p.number("Seed")?.ok_or_else(|| need("Seed"))?,
        steps: p.number("Steps")?.ok_or_else(|| need("Steps"))?,
        guidance_scale: p.number("CFG scale")?.ok_or_else(|| need("CFG scale"))?,
        eta: p.number("Eta")?.or(p.number("Eta DDIM")?).unwrap_or(0.0),
        width,
        height,
        scheduler,
        // the picture is not in the text: the run is text to image
        img2img: None,
    };
    Ok(ImageSettings {
        format: store::FORMAT,
        sdlab_version: String::new(),
        model: ModelInfo {
            source,
            variant: None,
            fingerprint: String::new(),
            config: None,
            prediction_type: None,
            loras: Vec::new(),
        },
        runtime: store::RuntimeInfo { device: "cpu".into(), dtype: "f32".into() },
        scheduler: settings.scheduler.as_str().into(),
        settings,
        scheduler_config: Default::default(),
        guidance_scales: Vec::new(),
        earlier: Vec::new(),
    })
}

/// The model the run names (or --model), on the device and dtype it ran on unless
/// overridden; a CUDA run resumes on the CPU, with a note, where there is no GPU.
fn open_model(args: &ResumeArgs, info: &ModelInfo, device: &str, dtype: &str) -> Result<StableDiffusion> {
    let chosen = Chosen { model: args.model.as_deref(), device: args.device, dtype: args.dtype };
    open_saved_model(chosen, info, device, dtype)
}

/// What the command line picks over the saved run's model, device and dtype.
#[derive(Clone, Copy, Default)]
pub struct Chosen<'a> {
    pub model: Option<&'a str>,
    pub device: Option<DeviceChoice>,
    pub dtype: Option<DTypeChoice>,
}

/// [`open_model`] for any command that goes on with a saved run.
pub fn open_saved_model(args: Chosen, info: &ModelInfo, device: &str, dtype: &str) -> Result<StableDiffusion> {
    let device = match args.device {
        Some(d) => Some(d),
        None if device == "cuda" && !candle_core::utils::cuda_is_available() => {
            eprintln!("note: the run used CUDA, which this machine lacks; going on on the CPU (not bit-exact)");
            Some(DeviceChoice::Cpu)
        }
        None => Some(device.parse().unwrap_or(DeviceChoice::Cpu)),
    };
    let dtype = match args.dtype {
        Some(d) => Some(d),
        None => dtype.parse().ok(),
    };
    let runtime = Runtime::select(device, dtype)?;
    let spec = args.model.unwrap_or(&info.source);
    let model = model::open_with(spec, info.variant.as_deref(), info.load_options()?, runtime, &Progress::Bars)
        .context("opening the model of the saved run")?;
    for note in &model.notes {
        eprintln!("note: {note}");
    }
    Ok(model)
}
