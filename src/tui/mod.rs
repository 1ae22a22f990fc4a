//! The terminal lab: the talk's four stages, live. A worker thread owns the session
//! ([`worker`]); the UI ([`app`], [`ui`]) holds only plain data and answers keys
//! while the model works.

pub mod app;
pub mod graphics;
pub mod i18n;
pub mod images;
pub mod keys;
pub mod replay;
pub mod talk;
pub mod text_field;
pub mod ui;
pub mod views;
pub mod worker;

use std::io::stdout;
use std::time::Duration;

use anyhow::Result;
use crossterm::event::{self, DisableBracketedPaste, EnableBracketedPaste, Event as TermEvent, KeyEventKind};
use ratatui::DefaultTerminal;

use app::{App, Message};
use graphics::GraphicsMode;
use i18n::Lang;
use images::Images;
use talk::{Talk, Theme};
use worker::{LoadSpec, WorkerHandle};

/// What `sdlab tui` was asked for.
pub struct Options {
    pub load: LoadSpec,
    pub graphics: GraphicsMode,
    /// Start in talk mode, with these labels and this look.
    pub talk: bool,
    pub lang: Lang,
    pub theme: Theme,
}

/// Runs the lab until the user quits. The terminal is restored on every way out,
/// panics included (ratatui's `init` installs that hook).
pub fn run(options: Options) -> Result<()> {
    // Ask the terminal what it can draw before the UI takes over the screen.
    let (picker, note) = graphics::make_picker(options.graphics);
    let mut app =
        App::new(&options.load.prompt, &options.load.negative_prompt, options.load.seed, options.load.guidance_scale);
    app.talk = Talk { on: options.talk, lang: options.lang, theme: options.theme, ..Talk::default() };
    if let Some(note) = note {
        app.status = Some((app::Level::Info, note));
    }
    let mut images = Images::new(picker);
    let worker = worker::spawn(options.load);
    let mut terminal = ratatui::init();
    let _ = crossterm::execute!(stdout(), EnableBracketedPaste);
    graphics::prepare_terminal(images.protocol, &mut stdout())?;
    let result = event_loop(&mut terminal, &mut app, &mut images, &worker);
    let _ = crossterm::execute!(stdout(), DisableBracketedPaste);
    ratatui::restore();
    result
}

fn event_loop(terminal: &mut DefaultTerminal, app: &mut App, images: &mut Images, worker: &WorkerHandle) -> Result<()> {
    let mut help_was_open = false;
    while !app.quit {
        images.sync(app);
        if help_was_open && !app.show_help && graphics::needs_clear_after_overlay(images.protocol) {
            // a sixel image under the closed overlay would leave stale cells behind
            terminal.clear()?;
        }
        help_was_open = app.show_help;
        terminal.draw(|frame| ui::draw(frame, app, images))?;

        let mut messages = Vec::new();
        if event::poll(Duration::from_millis(40))? {
            match event::read()? {
                TermEvent::Key(key) if key.kind != KeyEventKind::Release => messages.push(Message::Key(key)),
                TermEvent::Paste(text) => messages.push(Message::Paste(text)),
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
