//! The worker thread: it owns the model and the session, runs the stages the UI
//! asks for one command at a time, and answers with plain data ([`super::views`]).
//!
//! Commands are handled in order, so a pause lands between two steps: the UI simply
//! stops asking for the next one. A stage that needs an earlier one runs it first.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use candle_core::Tensor;

use super::branches::{split_branch_dir, Tree};
use super::replay::Replay;
use super::views::{
    BranchBar, CompareView, DecodedView, EncodeView, Img2ImgView, Landing, LatentView, LoraView, ModelInfo, StepView,
    Timestep,
};
use crate::fsutil::write_atomic;
use crate::image_out::to_rgb8;
use crate::model::{self, LoadOptions, Progress, Runtime, StableDiffusion};
use crate::preview;
use crate::scheduler::{Sampler, SamplerName, SamplerStep, SchedulerConfig, TimestepSpacing};
use crate::session::picture::{pixels_sha256, read_picture};
use crate::session::store::{self, OpenOptions, SessionRecord};
use crate::session::{Change, Img2Img, Session, Settings, Stage, StepRecord};
use crate::stages::PromptEncoding;

/// What the UI asks of the worker.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Stage 1 with these prompts (changing them drops what depended on the old ones).
    Encode {
        prompt: String,
        negative_prompt: String,
    },
    /// Stage 2 with this seed.
    GetLatent {
        seed: u64,
    },
    /// One denoising step (running stages 1 and 2 first when needed).
    Step,
    /// Rewinds to `n` steps taken (later steps are dropped).
    RewindTo(usize),
    SetGuidance(f64),
    /// Another sampler: the steps are dropped, and the latent drawn again (its scale
    /// is the sampler's `init_noise_sigma`).
    SetScheduler(SamplerName),
    /// Image to image from the picture at `path` with `strength`; `None` goes back
    /// to text to image. The latent is drawn again.
    SetInitImage {
        path: Option<PathBuf>,
        strength: f64,
    },
    /// Decodes step i's predicted x0 with the real VAE.
    DecodeX0(usize),
    /// Stage 4 on the current latent.
    Decode,
    SavePng(PathBuf),
    /// Saves the session folder; without `force` an existing session is not replaced
    /// (the UI is asked to confirm instead).
    SaveSession {
        dir: PathBuf,
        force: bool,
    },
    /// Replaces the run with the session saved in this folder.
    OpenSession(PathBuf),
    /// `b`: fork the run on screen after `at` steps, with another prompt and/or
    /// guidance scale; the branch goes on screen.
    Fork {
        at: usize,
        prompt: Option<String>,
        guidance: Option<f64>,
    },
    /// `[` / `]`: the previous or next run of the session's tree.
    SwitchBranch {
        forward: bool,
    },
    /// `L`: the model with these LoRAs (`FILE[:SCALE]` separated by `;`), the run
    /// restarted from its latent.
    SetLoras(String),
    /// `c`: the run on screen and the one it is compared with, after this many steps.
    Compare(usize),
    /// Saves the run under a new name in `sessions/`, if anything was computed (on quit).
    Autosave,
    /// The process is ending (a signal): save as [`Command::Autosave`] does, put the
    /// terminal back, say why and where the run is, and exit with `code`.
    ExitSaving {
        why: String,
        code: i32,
    },
}

/// What the worker tells the UI.
#[derive(Clone, Debug)]
pub enum Event {
    Loading(String),
    Loaded(Box<ModelInfo>),
    /// The worker started something long; the UI shows it until the next event.
    Busy(String),
    Encoded(Box<EncodeView>),
    Latent(Box<LatentView>),
    /// Something the user should know that is not an error.
    Note(String),
    Stepped(Box<StepView>),
    /// The history now has this many steps.
    Rewound(usize),
    /// A settings change dropped these results.
    Invalidated {
        steps: usize,
        image: bool,
        what: &'static str,
    },
    GuidanceSet(f64),
    /// The sampler changed: the schedule (timesteps, calls, alphas) is this.
    SamplerSet(Box<ModelInfo>),
    Decoded(Box<DecodedView>),
    Saved(PathBuf),
    /// A session folder was written.
    SessionSaved(PathBuf),
    /// A session is already saved there: replace it?
    ConfirmOverwrite(PathBuf),
    /// Everything the UI shows is about to be sent again (a session was opened).
    Reset,
    /// A session was opened: go to the stage it reached; warnings say what is not as saved.
    Opened {
        stage: Stage,
        warnings: Vec<String>,
    },
    /// The session's runs changed (a fork, a switch, a session opened).
    Branches(Box<BranchBar>),
    Compared(Box<CompareView>),
    Error(String),
    /// The session or the model could not be opened: the lab ends with this message.
    LoadFailed(String),
    /// The worker panicked and stopped: what happened, and where it saved the run (none
    /// when nothing was computed) or why saving failed too. The lab ends with it.
    Crashed {
        what: String,
        saved: Result<Option<PathBuf>, String>,
    },
}

/// How to load the model, as the command line said.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub model: String,
    pub variant: Option<String>,
    /// LoRAs, a single file's configs, the prediction type.
    pub options: LoadOptions,
    pub runtime: Runtime,
    pub prompt: String,
    pub negative_prompt: String,
    pub seed: u64,
    pub steps: usize,
    pub guidance_scale: f64,
    pub eta: f64,
    /// A sampler's name, or `model` (see `SamplerName::parse`).
    pub scheduler: String,
    pub width: Option<usize>,
    pub height: Option<usize>,
    /// Start from this saved session (its model, unless `model_given`).
    pub session: Option<PathBuf>,
    /// Whether `model` was named on the command line (and so wins over the session's).
    pub model_given: bool,
    /// Walk a saved session without loading any model.
    pub replay: bool,
    /// Open a session whose model fingerprint differs, with a warning.
    pub force: bool,
    /// Take image sides past 4096 pixels.
    pub allow_large: bool,
}

/// The two ends the UI keeps.
pub struct WorkerHandle {
    pub commands: Sender<Command>,
    pub events: Receiver<Event>,
    pub thread: JoinHandle<()>,
}

/// Starts the worker; it loads the model first and reports `Loaded` or `Error`.
pub fn spawn(spec: LoadSpec) -> WorkerHandle {
    let (commands, command_rx) = channel();
    let (event_tx, events) = channel();
    let thread = std::thread::Builder::new()
        .name("sdlab-worker".into())
        .spawn(move || {
            let crash_tx = event_tx.clone();
            let ran = catch_unwind(AssertUnwindSafe(|| work(spec, command_rx, event_tx)));
            if ran.is_err() {
                // a panic while loading: nothing was computed yet
                let _ = crash_tx.send(Event::Crashed { what: panic_report(), saved: Ok(None) });
            }
        })
        .expect("spawning the worker thread");
    WorkerHandle { commands, events, thread }
}

/// What the last panic said, and where.
fn panic_report() -> String {
    crate::tui::terminal::take_panic_report().unwrap_or_else(|| "a panic".into())
}

/// The worker thread's life: load, then answer commands until the UI hangs up.
fn work(spec: LoadSpec, command_rx: Receiver<Command>, event_tx: Sender<Event>) {
    let _ = event_tx.send(Event::Loading(format!("loading {} ...", spec.model)));
    let loading = event_tx.clone();
    let progress = Progress::Report(Arc::new(move |line| {
        let _ = loading.send(Event::Loading(line));
    }));
    if spec.replay {
        match spec.session.as_deref().map(Replay::load) {
            Some(Ok(replay)) => replay.run(command_rx, &event_tx),
            Some(Err(err)) => {
                let _ = event_tx.send(Event::LoadFailed(format!("{err:#}")));
            }
            None => {
                let _ = event_tx.send(Event::LoadFailed("--replay needs --session DIR".into()));
            }
        }
        return;
    }
    match open_session(&spec, &progress) {
        Ok((session, warnings)) => {
            let mut worker = Worker::new(session, event_tx);
            if let Some(dir) = &spec.session {
                let opened = worker.open_tree(dir, warnings).and_then(|warnings| {
                    worker.send(Event::Loaded(Box::new(model_info(&worker.session))));
                    worker.send_everything(warnings)
                });
                if let Err(err) = opened {
                    worker.send(Event::Error(format!("{err:#}")));
                }
                worker.send_branches();
            } else {
                worker.send(Event::Loaded(Box::new(model_info(&worker.session))));
            }
            worker.run(command_rx)
        }
        Err(err) => {
            let _ = event_tx.send(Event::LoadFailed(format!("{err:#}")));
        }
    }
}

/// The session to start with: a saved one (on its own model unless another was named),
/// or a fresh one from the command line's settings.
fn open_session(spec: &LoadSpec, progress: &Progress) -> Result<(Session, Vec<String>)> {
    let Some(dir) = &spec.session else {
        let model = model::open_with(
            &spec.model,
            spec.variant.as_deref(),
            spec.options.clone(),
            spec.runtime.clone(),
            progress,
        )?;
        let notes = model.notes.clone();
        return Ok((session_for(model, spec)?, notes));
    };
    // the session's main run; its branches join it in the worker's tree
    let mut record = SessionRecord::load(&split_branch_dir(dir).0)?;
    let recovered = record.recovered.take();
    let (source, variant, load) = if spec.model_given {
        (spec.model.clone(), spec.variant.clone(), spec.options.clone())
    } else {
        (record.model.source.clone(), record.model.variant.clone(), record.model.load_options()?)
    };
    let model = model::open_with(&source, variant.as_deref(), load, spec.runtime.clone(), progress)?;
    let notes = model.notes.clone();
    let options = OpenOptions { force: spec.force, allow_large: spec.allow_large };
    let opened = Session::from_record(model, record, options).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    Ok((opened.session, recovered.into_iter().chain(notes).chain(opened.warnings).collect()))
}

/// A session for `model` with the command line's settings (the model's default size
/// where none was given).
pub fn session_for(model: StableDiffusion, spec: &LoadSpec) -> Result<Session> {
    let size = model.default_size();
    let settings = Settings {
        prompt: spec.prompt.clone(),
        negative_prompt: spec.negative_prompt.clone(),
        seed: spec.seed,
        steps: spec.steps,
        guidance_scale: spec.guidance_scale,
        eta: spec.eta,
        width: spec.width.unwrap_or(size),
        height: spec.height.unwrap_or(size),
        scheduler: SamplerName::parse(&spec.scheduler, &model.scheduler_config)?,
        img2img: None,
    };
    Session::new_with(model, settings, spec.allow_large)
}

/// The worker's state: the session, and where to send what it computes.
pub struct Worker {
    /// The run on screen.
    pub session: Session,
    pub events: Sender<Event>,
    /// The session's other runs (its main run or branches).
    pub tree: Tree,
}

impl Worker {
    /// The lab shows every step's UNet taps, so its session records them.
    pub fn new(mut session: Session, events: Sender<Event>) -> Self {
        session.set_record_taps(true);
        Self { session, events, tree: Tree::new() }
    }

    /// The session, as the decoder of every step's pictures, when they are small.
    fn vae(&self) -> Option<&Session> {
        decodes_every_step(self.session.settings()).then_some(&self.session)
    }

    /// Answers commands until the UI hangs up. A panic in a command ends the worker, after
    /// saving the run as it stands (the steps before the failing one) so nothing is lost.
    fn run(mut self, commands: Receiver<Command>) {
        for command in commands {
            match catch_unwind(AssertUnwindSafe(|| self.handle(command))) {
                Ok(Ok(())) => {}
                Ok(Err(err)) => self.send(Event::Error(format!("{err:#}"))),
                Err(_) => {
                    let what = panic_report();
                    let saved = self.save_after_panic();
                    self.send(Event::Crashed { what, saved });
                    return;
                }
            }
        }
    }

    /// Saves the run under a new autosave name, if anything was computed.
    fn save_after_panic(&mut self) -> Result<Option<PathBuf>, String> {
        if self.session.stage() == Stage::Start {
            return Ok(None);
        }
        let saved = catch_unwind(AssertUnwindSafe(|| self.autosave()));
        match saved {
            Ok(Ok(dir)) => Ok(Some(dir)),
            Ok(Err(err)) => Err(format!("{err:#}")),
            Err(_) => Err(panic_report()),
        }
    }

    /// Saves the session in a new `sessions/autosave-<time>` folder.
    fn autosave(&mut self) -> Result<PathBuf> {
        let name = format!("autosave-{}", store::now_rfc3339().replace(':', "-"));
        let dir = store::session_dir(Path::new(store::DEFAULT_ROOT), &name)?;
        self.save_tree(&dir, false)?;
        Ok(dir)
    }

    pub(super) fn send(&self, event: Event) {
        // The UI has quit when this fails; the loop ends when the command channel closes.
        let _ = self.events.send(event);
    }

    /// Runs one command, sending every result it produces.
    pub fn handle(&mut self, command: Command) -> Result<()> {
        match command {
            Command::Encode { prompt, negative_prompt } => {
                let old = self.session.settings().clone();
                let settings = Settings { prompt, negative_prompt, ..old.clone() };
                if settings != old || self.session.encoding().is_none() {
                    self.update(settings, "the prompt changed")?;
                    self.encode()?;
                }
            }
            Command::GetLatent { seed } => {
                let settings = Settings { seed, ..self.session.settings().clone() };
                self.update(settings, "the seed changed")?;
                self.get_latent()?;
            }
            Command::Step => {
                if self.session.encoding().is_none() {
                    self.encode()?;
                }
                if self.session.init_latents().is_none() {
                    self.get_latent()?;
                }
                self.send(Event::Busy(format!("denoise step {}", self.session.history().len() + 1)));
                let started = Instant::now();
                self.session.step()?;
                let elapsed = started.elapsed();
                let record = self.session.history().last().expect("a step was just taken");
                let view = step_view(record, elapsed, self.vae())?;
                self.send(Event::Stepped(Box::new(view)));
            }
            Command::RewindTo(steps) => {
                let had_image = self.session.image().is_some();
                self.session.run_to(steps.min(self.session.history().len()))?;
                self.send(Event::Rewound(self.session.history().len()));
                if had_image {
                    self.send(Event::Invalidated { steps: 0, image: true, what: "rewinding" });
                }
            }
            Command::SetGuidance(scale) => {
                self.session.set_guidance_scale(scale)?;
                self.send(Event::GuidanceSet(scale));
            }
            Command::SetLoras(list) => self.set_loras(&list)?,
            Command::SetScheduler(name) => {
                let had_latent = self.session.init_latents().is_some();
                let settings = Settings { scheduler: name, ..self.session.settings().clone() };
                self.update(settings, "changing the sampler")?;
                self.send(Event::SamplerSet(Box::new(model_info(&self.session))));
                if had_latent {
                    self.get_latent()?;
                }
            }
            Command::SetInitImage { path, strength } => {
                let old = self.session.settings().clone();
                let (settings, picture) = match &path {
                    None => (Settings { img2img: None, ..old }, None),
                    Some(path) => {
                        let picture = read_picture(path, self.session.model().vae_scale_factor())?;
                        let (width, height) = (picture.rgb.width() as usize, picture.rgb.height() as usize);
                        let image = std::path::absolute(path).unwrap_or_else(|_| path.clone()).display().to_string();
                        let img2img = Img2Img { image, sha256: pixels_sha256(&picture.rgb), strength };
                        (Settings { img2img: Some(img2img), width, height, ..old }, Some(picture))
                    }
                };
                self.update(settings, "changing the starting picture")?;
                let note = match picture {
                    Some(picture) => {
                        self.session.set_init_image(picture.rgb)?;
                        picture.note
                    }
                    None => None,
                };
                self.send(Event::SamplerSet(Box::new(model_info(&self.session))));
                self.get_latent()?;
                if let Some(note) = note {
                    self.send(Event::Note(note));
                }
            }
            Command::DecodeX0(index) => {
                let record = self.session.history().get(index).with_context(|| format!("no step {}", index + 1))?;
                let x0 = record.denoise.scheduler.pred_original_sample().clone();
                self.send(Event::Busy(format!("decoding x0 of step {} with the VAE", index + 1)));
                let started = Instant::now();
                let image = to_rgb8(&self.session.decode(&x0)?)?;
                let view = DecodedView {
                    image,
                    from_x0_of_step: Some(index),
                    steps_done: self.session.history().len(),
                    elapsed: started.elapsed(),
                };
                self.send(Event::Decoded(Box::new(view)));
            }
            Command::Decode => {
                if self.session.init_latents().is_none() {
                    self.get_latent()?;
                }
                self.send(Event::Busy("vae_decode".into()));
                let started = Instant::now();
                let image = to_rgb8(self.session.vae_decode()?)?;
                let view = DecodedView {
                    image,
                    from_x0_of_step: None,
                    steps_done: self.session.history().len(),
                    elapsed: started.elapsed(),
                };
                self.send(Event::Decoded(Box::new(view)));
            }
            Command::SavePng(path) => {
                let image = self.session.image().context("nothing to save yet: decode first (d)")?;
                let png = self.session.png_with_settings(&to_rgb8(image)?)?;
                write_atomic(&path, &png)?;
                self.send(Event::Saved(path));
            }
            Command::SaveSession { dir, force } => {
                if !force && dir.join(store::SESSION_JSON).is_file() {
                    self.send(Event::ConfirmOverwrite(dir));
                    return Ok(());
                }
                for note in self.save_tree(&dir, force)? {
                    self.send(Event::Note(note));
                }
                self.send(Event::SessionSaved(dir));
            }
            Command::OpenSession(dir) => {
                // Load the record first: a bad folder leaves the current run untouched.
                let record = SessionRecord::load(&split_branch_dir(&dir).0)?;
                self.send(Event::Busy(format!("opening {}", dir.display())));
                let model = self.reload_model(self.session.model().options.clone())?;
                let opened = Session::from_record(model, record, OpenOptions::default())
                    .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
                self.session = opened.session;
                // its saved steps have no taps; the steps taken from here on do
                let warnings = self.open_tree(&dir, opened.warnings)?;
                self.send(Event::Loaded(Box::new(model_info(&self.session))));
                self.send_everything(warnings)?;
                self.send_branches();
            }
            Command::Fork { at, prompt, guidance } => {
                self.fork(at, Change { prompt, guidance_scale: guidance, ..Change::default() })?
            }
            Command::SwitchBranch { forward } => self.switch(forward)?,
            Command::Compare(step) => {
                self.compare(step)?;
                return Ok(());
            }
            Command::ExitSaving { why, code } => {
                let saved = if self.session.stage() == Stage::Start {
                    Ok(None)
                } else {
                    self.autosave().map(Some).map_err(|err| format!("{err:#}"))
                };
                super::ending::exit_saving(&why, saved, code);
            }
            Command::Autosave => {
                if self.session.stage() != Stage::Start {
                    let dir = self.autosave()?;
                    self.send(Event::SessionSaved(dir));
                } else {
                    self.send(Event::SessionSaved(PathBuf::new()));
                }
            }
        }
        // the branch bar's step counts and scales follow the runs
        if self.tree.order.len() > 1 {
            self.send_branches();
        }
        Ok(())
    }

    /// Sends the views of everything the session holds, then where it stands.
    pub(super) fn send_everything(&self, warnings: Vec<String>) -> Result<()> {
        self.send(Event::Reset);
        let s = &self.session;
        if let Some(encoding) = s.encoding() {
            self.send(Event::Encoded(Box::new(encode_view(encoding)?)));
        }
        if s.init_latents().is_some() {
            self.send(Event::Latent(Box::new(self.latent_view()?)));
        }
        for record in s.history() {
            self.send(Event::Stepped(Box::new(step_view(record, Duration::ZERO, self.vae())?)));
        }
        if let Some(image) = s.image() {
            let view = DecodedView {
                image: to_rgb8(image)?,
                from_x0_of_step: None,
                steps_done: s.history().len(),
                elapsed: Duration::ZERO,
            };
            self.send(Event::Decoded(Box::new(view)));
        }
        self.send(Event::Opened { stage: s.stage(), warnings });
        Ok(())
    }

    /// Applies new settings and tells the UI what they dropped.
    fn update(&mut self, settings: Settings, what: &'static str) -> Result<()> {
        let steps = self.session.history().len();
        let image = self.session.image().is_some();
        self.session.update_settings(settings)?;
        let dropped_steps = steps - self.session.history().len();
        let dropped_image = image && self.session.image().is_none();
        if dropped_steps > 0 || dropped_image {
            self.send(Event::Invalidated { steps: dropped_steps, image: dropped_image, what });
        }
        Ok(())
    }

    /// The model on screen loaded again (same source, variant, device and dtype) with `options`.
    pub(super) fn reload_model(&self, options: LoadOptions) -> Result<StableDiffusion> {
        let current = self.session.model();
        let variant = current.files.variant();
        model::open_with(&current.files.name, variant.as_deref(), options, current.runtime.clone(), &Progress::Quiet)
    }

    fn encode(&mut self) -> Result<()> {
        self.send(Event::Busy("encode_prompt".into()));
        let view = encode_view(self.session.encode_prompt()?)?;
        self.send(Event::Encoded(Box::new(view)));
        Ok(())
    }

    fn get_latent(&mut self) -> Result<()> {
        self.session.get_latent()?;
        self.send(Event::Latent(Box::new(self.latent_view()?)));
        Ok(())
    }

    fn latent_view(&self) -> Result<LatentView> {
        let s = &self.session;
        let latents = s.init_latents().context("no latent yet")?;
        let img2img = img2img_view(s.settings(), s.sampler(), s.init_image(), s.image_latents())?;
        latent_view(s.settings().seed, latents, img2img)
    }
}

/// The header's facts about the model and the schedule.
pub fn model_info(session: &Session) -> ModelInfo {
    let model = session.model();
    let device = if model.device().is_cuda() { "cuda" } else { "cpu" };
    let run = RunFacts { name: &model.files.name, device, dtype: model.dtype().as_str() };
    let loras = LoraView {
        specs: model.loras.loras.iter().map(|l| format!("{}:{}", l.path.display(), l.scale)).collect(),
        blocks: model.loras.by_block(),
    };
    ModelInfo {
        loras,
        ..run.info(session.settings(), session.sampler(), &model.scheduler_config, model.vae_scale_factor())
    }
}

/// What the header says about where a run happens, for a live or a replayed run.
pub struct RunFacts<'a> {
    pub name: &'a str,
    pub device: &'a str,
    pub dtype: &'a str,
}

impl RunFacts<'_> {
    pub fn info(
        &self,
        settings: &Settings,
        sampler: &Sampler,
        config: &SchedulerConfig,
        vae_scale_factor: usize,
    ) -> ModelInfo {
        ModelInfo {
            name: self.name.to_string(),
            device: self.device.to_string(),
            dtype: self.dtype.to_string(),
            width: settings.width,
            height: settings.height,
            vae_scale_factor,
            scheduler_class: config.class_name.clone().unwrap_or_else(|| "DDIMScheduler".into()),
            prediction_type: config.prediction_type.to_string(),
            sampler: sampler.name().to_string(),
            timestep_spacing: match sampler {
                Sampler::Ddim(_) => config.timestep_spacing.to_string(),
                // the class's own default where the model's file says nothing
                _ => config
                    .source
                    .get("timestep_spacing")
                    .and_then(|v| v.as_str())
                    .unwrap_or(TimestepSpacing::Linspace.as_str())
                    .to_string(),
            },
            steps: sampler.calls(),
            timesteps: sampler.timesteps().into_iter().map(Timestep).collect(),
            alpha_prod_t: sampler.alpha_prod_t(),
            settings: settings.clone(),
            recorded_steps: None,
            loras: LoraView::default(),
        }
    }
}

/// Stage 1's results for the screen.
pub fn encode_view(encoding: &PromptEncoding) -> Result<EncodeView> {
    let embeds = &encoding.prompt_embeds;
    let negative = embeds.get(0)?;
    let prompt = embeds.get(1)?;
    Ok(EncodeView {
        prompt: encoding.prompt.clone(),
        negative: encoding.negative.clone(),
        shape: embeds.dims().to_vec(),
        dtype: embeds.dtype().as_str().into(),
        prompt_stats: preview::stats(&prompt)?,
        negative_stats: preview::stats(&negative)?,
        prompt_tokens: preview::per_token_stats(&prompt)?,
        negative_tokens: preview::per_token_stats(&negative)?,
        cosine: preview::cosine_per_token(&prompt, &negative)?,
        heatmap: preview::stacked_heatmap(&negative, &prompt)?,
    })
}

/// Stage 2's results for the screen.
pub fn latent_view(seed: u64, latents: &Tensor, img2img: Option<Img2ImgView>) -> Result<LatentView> {
    let channels = (0..latents.dim(1)?).map(|c| preview::channel_grey(latents, c)).collect::<Result<Vec<_>>>()?;
    Ok(LatentView {
        seed,
        shape: latents.dims().to_vec(),
        channel_stats: preview::per_channel_stats(latents)?,
        channels,
        rgb: preview::latent_to_rgb(latents)?,
        img2img,
    })
}

/// The image-to-image part of the get_latent screen, when the run has a picture.
pub fn img2img_view(
    settings: &Settings,
    sampler: &Sampler,
    picture: Option<&image::RgbImage>,
    image_latents: Option<&Tensor>,
) -> Result<Option<Img2ImgView>> {
    let (Some(i), Some(picture), Some(image_latents)) = (&settings.img2img, picture, image_latents) else {
        return Ok(None);
    };
    Ok(Some(Img2ImgView {
        path: i.image.clone(),
        strength: i.strength,
        picture: picture.clone(),
        encoded: preview::latent_to_rgb(image_latents)?,
        first_timestep: Timestep(sampler.timestep(0)?),
        calls: sampler.calls(),
        steps: settings.steps,
    }))
}

/// Pictures up to this many pixels (SD at 128x128, or the built-in `shapes` at
/// 64x64) cost the VAE a few milliseconds to decode on a CPU, so the lab shows
/// every step's x_t and x0 as the VAE decodes them rather than as the latent's
/// colour sketch, whose factors fit only SD's own VAE.
const DECODE_EVERY_STEP_PIXELS: usize = 128 * 128;

/// Whether [`step_view`] gets the VAE's pictures for a run of these settings.
pub fn decodes_every_step(settings: &Settings) -> bool {
    settings.width * settings.height <= DECODE_EVERY_STEP_PIXELS
}

/// One step's results for the screen: its x_t and x0 decoded by `vae` when one
/// is given, else as the latent preview.
pub fn step_view(record: &StepRecord, elapsed: Duration, vae: Option<&Session>) -> Result<StepView> {
    let s = &record.denoise.scheduler;
    let latent: &Tensor = s.prev_sample();
    let x0 = s.pred_original_sample();
    let (landing, alpha_prod_t_prev) = match s {
        SamplerStep::Ddim(d) => (Landing::Timestep(d.prev_timestep), d.alpha_prod_t_prev),
        SamplerStep::Pndm(p) => (Landing::Timestep(p.prev_timestep), p.alpha_prod_t_prev),
        SamplerStep::Lcm(l) => (Landing::Timestep(l.prev_timestep as i64), l.alpha_prod_t_prev),
        SamplerStep::Euler(e) => {
            (Landing::Sigma { sigma: e.sigma, next: e.sigma_next }, 1.0 / (1.0 + e.sigma_next * e.sigma_next))
        }
        SamplerStep::Heun(h) => {
            (Landing::Sigma { sigma: h.sigma, next: h.sigma_next }, 1.0 / (1.0 + h.sigma_next * h.sigma_next))
        }
        SamplerStep::Lms(l) => {
            (Landing::Sigma { sigma: l.sigma, next: l.sigma_next }, 1.0 / (1.0 + l.sigma_next * l.sigma_next))
        }
        SamplerStep::Dpm(d) => {
            (Landing::Sigma { sigma: d.sigma, next: d.sigma_next }, 1.0 / (1.0 + d.sigma_next * d.sigma_next))
        }
        SamplerStep::UniPc(u) => {
            (Landing::Sigma { sigma: u.sigma, next: u.sigma_next }, 1.0 / (1.0 + u.sigma_next * u.sigma_next))
        }
    };
    let picture = |latent: &Tensor| match vae {
        Some(session) => to_rgb8(&session.decode(latent)?),
        None => preview::latent_to_rgb(latent),
    };
    Ok(StepView {
        index: record.index,
        timestep: Timestep(s.timestep()),
        landing,
        alpha_prod_t: s.alpha_prod_t(),
        alpha_prod_t_prev,
        beta_prod_t: 1.0 - s.alpha_prod_t(),
        guidance_scale: record.denoise.guidance_scale,
        latent_rgb: picture(latent)?,
        x0_rgb: picture(x0)?,
        decoded: vae.is_some(),
        latent_stats: preview::stats(latent)?,
        x0_stats: preview::stats(x0)?,
        elapsed,
        taps: record.taps.clone(),
    })
}
