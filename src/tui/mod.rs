//! The terminal lab: the talk's four stages, live. A worker thread owns the session
//! ([`worker`]); the UI ([`app`], [`ui`]) holds only plain data and answers keys
//! while the model works. [`terminal`] owns the terminal itself.

pub mod app;
mod branch_keys;
mod branches;
mod ending;
pub mod graphics;
pub mod i18n;
pub mod images;
pub mod keys;
pub mod loras;
pub mod replay;
pub mod talk;
pub mod terminal;
pub mod text_field;
pub mod ui;
pub mod views;
pub mod worker;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use anyhow::{bail, Result};
use crossterm::event::{self, Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use app::{App, Message};
use ending::{crashed_worker, exit_saving_on_signals, save_before_exit, saved_sentence};
use graphics::{Graphics, GraphicsMode, Route};
use i18n::Lang;
use images::Images;
use talk::{Talk, Theme, ThemeChoice};
use terminal::{TerminalInfo, TerminalSession};
use worker::{LoadSpec, WorkerHandle};

/// What `sdlab tui` was asked for.
pub struct Options {
    pub load: LoadSpec,
    pub graphics: GraphicsMode,
    /// Start in talk mode, with these labels and this look.
    pub talk: bool,
    pub lang: Lang,
    pub theme: ThemeChoice,
}

/// Runs the lab until the user quits. The terminal is restored on every way out; when
/// the lab stops on an error, a panic or a signal, the run is saved first (if anything
/// was computed) and the message says what happened and where the run is.
pub fn run(options: Options) -> Result<()> {
    terminal::install_panic_hook();
    let load = &options.load;
    let mut app = App::new(&load.prompt, &load.negative_prompt, load.seed, load.guidance_scale);
    let worker = worker::spawn(options.load.clone());
    let mut session = TerminalSession::enter()?;
    let mut images = Images::new(fit_to_terminal(&mut app, &options, &session.info));
    exit_saving_on_signals(worker.commands.clone());
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        session.write_raw(&images.graphics.prepare())?;
        // keys typed while the terminal was being asked are the first keys
        let typed = session.info.replies.as_ref().map(|r| r.typed.clone()).unwrap_or_default();
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

/// What the terminal told decides how images are drawn and how talk mode looks; a
/// fallback's reason goes on the status line, the choice on the key map's last line.
fn fit_to_terminal(app: &mut App, options: &Options, info: &TerminalInfo) -> Graphics {
    let (graphics, note) = graphics::setup(options.graphics, info);
    let background = info.replies.as_ref().and_then(|r| r.background);
    app.talk = Talk {
        on: options.talk,
        lang: options.lang,
        theme: options.theme.resolve(background),
        plain: Theme::matching(background),
        ..Talk::default()
    };
    if let Some(note) = note {
        app.status = Some((app::Level::Info, note));
    }
    app.terminal_summary = graphics.describe(info);
    graphics
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
