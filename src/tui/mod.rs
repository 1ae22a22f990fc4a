//! The terminal lab: the talk's four stages, live. A worker thread owns the session
//! ([`worker`]); the UI ([`app`], [`ui`]) holds only plain data and answers keys
//! while the model works. [`terminal`] owns the terminal itself.

pub mod app;
pub mod graphics;
pub mod i18n;
pub mod images;
pub mod keys;
pub mod replay;
pub mod talk;
pub mod terminal;
pub mod text_field;
pub mod ui;
pub mod views;
pub mod worker;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use crossterm::event::{self, Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use app::{App, Message};
use graphics::{GraphicsMode, Route};
use i18n::Lang;
use images::Images;
use talk::{Talk, Theme, ThemeChoice};
use terminal::TerminalSession;
use worker::{saved_sentence, Command, Event, LoadSpec, WorkerHandle};

/// What `sdlab tui` was asked for.
pub struct Options {
    pub load: LoadSpec,
    pub graphics: GraphicsMode,
    /// Start in talk mode, with these labels and this look.
    pub talk: bool,
    pub lang: Lang,
    pub theme: ThemeChoice,
}

/// How long the lab waits, after a failure, for the worker to save the run (it finishes
/// the step in progress first).
const SAVE_BEFORE_EXIT: Duration = Duration::from_secs(300);

/// Runs the lab until the user quits. The terminal is restored on every way out; when
/// the lab stops on an error, a panic or a signal, the run is saved first (if anything
/// was computed) and the message says what happened and where the run is.
pub fn run(options: Options) -> Result<()> {
    terminal::install_panic_hook();
    let mut app =
        App::new(&options.load.prompt, &options.load.negative_prompt, options.load.seed, options.load.guidance_scale);
    let worker = worker::spawn(options.load);
    let mut session = TerminalSession::enter()?;
    let (graphics, note) = graphics::setup(options.graphics, &session.info);
    let background = session.info.replies.as_ref().and_then(|r| r.background);
    let plain = Theme::matching(background);
    app.talk = Talk {
        on: options.talk,
        lang: options.lang,
        theme: options.theme.resolve(background),
        plain,
        ..Talk::default()
    };
    if let Some(note) = note {
        app.status = Some((app::Level::Info, note));
    }
    app.terminal_summary = graphics.describe(&session.info);
    let mut images = Images::new(graphics);
    exit_saving_on_signals(worker.commands.clone());
    let typed = session.info.replies.as_ref().map(|r| r.typed.clone()).unwrap_or_default();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        session.write_raw(&graphics.prepare())?;
        // keys typed while the terminal was being asked are the first keys
        for command in typed.chars().filter_map(typed_key).flat_map(|key| app.update(Message::Key(key))) {
            let _ = worker.commands.send(command);
        }
        event_loop(&mut session, &mut app, &mut images, &worker)
    }));
    let _ = session.write_raw(&images.release());
    drop(session);
    let failure = match outcome {
        Ok(Ok(())) => return crashed_worker(&app),
        Ok(Err(err)) => format!("{err:#}"),
        Err(_) => terminal::take_panic_report().unwrap_or_else(|| "a panic".into()),
    };
    let saved = if app.has_work_to_keep() { save_before_exit(&worker) } else { Ok(None) };
    bail!("the lab stopped: {failure}; {}", saved_sentence(saved))
}

/// A character typed before the lab read keys, as the key event it stands for.
fn typed_key(c: char) -> Option<KeyEvent> {
    let code = match c {
        '\r' | '\n' => KeyCode::Enter,
        '\t' => KeyCode::Tab,
        '\x7f' => KeyCode::Backspace,
        '\x03' => return Some(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
        c if !c.is_control() => KeyCode::Char(c),
        _ => return None,
    };
    Some(KeyEvent::new(code, KeyModifiers::NONE))
}

/// The worker's own failure, reported after it saved what it could.
fn crashed_worker(app: &App) -> Result<()> {
    match &app.crashed {
        None => Ok(()),
        Some((what, saved)) => bail!("the lab stopped: the worker failed: {what}; {}", saved_sentence(saved.clone())),
    }
}

/// Asks the worker to save the run, and waits for the answer.
fn save_before_exit(worker: &WorkerHandle) -> Result<Option<PathBuf>, String> {
    terminal::tell("sdlab: saving the run before exiting (it finishes the step in progress first)");
    worker.commands.send(Command::Autosave).map_err(|_| "the worker had stopped".to_string())?;
    let deadline = Instant::now() + SAVE_BEFORE_EXIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match worker.events.recv_timeout(left) {
            Ok(Event::SessionSaved(dir)) => return Ok((!dir.as_os_str().is_empty()).then_some(dir)),
            Ok(Event::Error(err)) => return Err(err),
            Ok(Event::Crashed { what, .. }) => return Err(format!("the worker failed too: {what}")),
            Ok(_) => {}
            Err(_) => return Err("the worker did not answer in time".into()),
        }
    }
}

/// SIGHUP (the SSH connection or the terminal closed) and SIGTERM end the lab with the
/// run saved: a thread of its own hands the worker the last command (save, then end the
/// process), since the UI thread may never return from reading a terminal that is gone.
/// Should the worker not answer in time, this thread ends the process itself.
fn exit_saving_on_signals(commands: Sender<Command>) {
    use signal_hook::consts::{SIGHUP, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGHUP, SIGTERM]) else { return };
    std::thread::spawn(move || {
        let Some(signal) = signals.forever().next() else { return };
        let why = if signal == SIGHUP { "the terminal closed (SIGHUP)" } else { "asked to stop (SIGTERM)" };
        let code = 128 + signal;
        if commands.send(Command::ExitSaving { why: why.into(), code }).is_ok() {
            std::thread::sleep(SAVE_BEFORE_EXIT);
        }
        terminal::restore();
        terminal::tell(&format!("error: the lab stopped: {why}; the run could not be saved in time"));
        std::process::exit(code);
    });
}

fn event_loop(session: &mut TerminalSession, app: &mut App, images: &mut Images, worker: &WorkerHandle) -> Result<()> {
    while !app.quit {
        images.sync(app);
        session.terminal.draw(|frame| ui::draw(frame, app, images))?;
        let cleanup = images.end_frame();
        if !cleanup.erase.is_empty() {
            session.write_raw(&cleanup.erase)?;
        }
        if cleanup.redraw {
            // a sixel or iTerm2 image left its place: its pixels go with a full redraw
            session.force_redraw()?;
            session.terminal.draw(|frame| ui::draw(frame, app, images))?;
            images.end_frame();
        }

        let mut messages = Vec::new();
        if event::poll(Duration::from_millis(40))? {
            match event::read()? {
                TermEvent::Key(key) if key.kind != KeyEventKind::Release => messages.push(Message::Key(key)),
                TermEvent::Paste(text) => messages.push(Message::Paste(text)),
                TermEvent::Resize(..) => {
                    if let (Some(tmux), Route::Tmux { .. }) = (&session.info.tmux, images.graphics.route) {
                        let origin = tmux.pane_origin().unwrap_or((0, 0));
                        images.set_route(Route::Tmux { origin });
                    }
                }
                _ => {}
            }
        }
        messages.extend(worker.events.try_iter().map(Message::Worker));
        for message in messages {
            for command in app.update(message) {
                // the worker only stops when this end is dropped, so sending cannot fail while we run
                let _ = worker.commands.send(command);
            }
        }
        images.pump();
    }
    Ok(())
}
