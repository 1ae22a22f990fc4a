//! The lab driven in-process: the app and an in-process worker on the sd2-tiny
//! fixture, rendered with ratatui's TestBackend.

use std::sync::mpsc::{channel, Receiver};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::Terminal;
use sdlab::model::{self, Progress, Runtime};
use sdlab::tui::app::{App, Message};
use sdlab::tui::graphics::Graphics;
use sdlab::tui::images::Images;
use sdlab::tui::ui;
use sdlab::tui::worker::{self, Command, Event, LoadSpec, Worker};

use super::{fixture, run_json};

/// The app and an in-process worker on the sd2-tiny fixture (no thread: each
/// command's events are fed to the app right away).
pub struct Lab {
    pub app: App,
    pub worker: Worker,
    pub events: Receiver<Event>,
    pub images: Images,
}

impl Lab {
    pub fn new() -> Self {
        Self::on(&fixture("sd2-tiny").join("model").display().to_string())
    }

    /// The lab on `model`, with sd2-tiny's run settings.
    pub fn on(model_spec: &str) -> Self {
        let run = run_json("sd2-tiny");
        let spec = LoadSpec {
            model: model_spec.to_string(),
            variant: None,
            options: Default::default(),
            runtime: Runtime::cpu(),
            prompt: run.prompt.clone(),
            negative_prompt: run.negative_prompt.clone(),
            seed: run.seed,
            steps: run.steps,
            guidance_scale: run.guidance_scale,
            eta: 0.0,
            scheduler: "ddim".into(),
            width: Some(run.width),
            height: Some(run.height),
            session: None,
            model_given: true,
            replay: false,
            force: false,
            allow_large: false,
        };
        let model = model::open(&spec.model, None, spec.runtime.clone(), &Progress::Quiet).unwrap();
        let session = worker::session_for(model, &spec).unwrap();
        let (tx, events) = channel();
        let worker = Worker::new(session, tx);
        let mut app = App::new(&spec.prompt, &spec.negative_prompt, spec.seed, spec.guidance_scale);
        app.update(Message::Worker(Event::Loaded(Box::new(worker::model_info(&worker.session)))));
        Lab { app, worker, events, images: Images::new(Graphics::halfblocks()) }
    }

    /// Runs commands through the worker until the app asks for nothing more.
    pub fn command(&mut self, command: Command) {
        let mut pending = vec![command];
        while let Some(command) = pending.pop() {
            let result = self.worker.handle(command);
            let mut events: Vec<Event> = self.events.try_iter().collect();
            // as the worker's loop does: an error is an event the app shows
            if let Err(err) = result {
                events.push(Event::Error(format!("{err:#}")));
            }
            for event in events {
                pending.extend(self.app.update(Message::Worker(event)));
            }
        }
    }

    /// Saves the run so far as a session folder under `dir`.
    pub fn save(&mut self, dir: &std::path::Path) -> std::path::PathBuf {
        let folder = dir.join("saved");
        self.command(Command::SaveSession { dir: folder.clone(), force: false });
        assert!(folder.join("session.json").is_file(), "{:?}", self.app.status);
        folder
    }

    pub fn key(&mut self, code: KeyCode) {
        for command in self.app.update(Message::Key(KeyEvent::new(code, KeyModifiers::NONE))) {
            self.command(command);
        }
    }

    pub fn render(&mut self, width: u16, height: u16) -> String {
        let buffer = self.render_buffer(width, height);
        let mut text = String::new();
        for y in 0..height {
            for x in 0..width {
                text.push_str(buffer[(x, y)].symbol());
            }
            text.push('\n');
        }
        text
    }

    pub fn render_buffer(&mut self, width: u16, height: u16) -> Buffer {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        self.images.sync(&self.app);
        // the first draw sizes the panes and starts their encodings; the second shows them
        terminal.draw(|frame| ui::draw(frame, &self.app, &mut self.images)).unwrap();
        self.images.settle();
        terminal.draw(|frame| ui::draw(frame, &self.app, &mut self.images)).unwrap();
        terminal.backend().buffer().clone()
    }
}

/// The block titled `title` in `buffer`: its whole rectangle, borders included.
pub fn block_titled(buffer: &Buffer, title: &str) -> Option<Rect> {
    let area = buffer.area;
    for y in 0..area.height {
        let row: String = (0..area.width).map(|x| buffer[(x, y)].symbol().to_string()).collect();
        let Some(at) = row.find(title) else { continue };
        let left = row[..at].chars().count() as u16 - 1;
        if buffer[(left, y)].symbol() != "┌" {
            continue;
        }
        let right = (left + 1..area.width).find(|&x| buffer[(x, y)].symbol() == "┐")?;
        let bottom = (y + 1..area.height).find(|&b| buffer[(left, b)].symbol() == "└")?;
        return Some(Rect::new(left, y, right - left + 1, bottom - y + 1));
    }
    None
}
