//! Every screen of the terminal lab rendered with ratatui's TestBackend, on the tiny
//! fixture model, at 80x24 and 200x60, asserting on real content.

mod common;

use std::sync::mpsc::{channel, Receiver};

use common::*;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use ratatui_image::picker::ProtocolType;
use sdlab::model::{self, Progress, Runtime};
use sdlab::tui::app::{App, Message, Screen};
use sdlab::tui::graphics::picker_without_query;
use sdlab::tui::images::Images;
use sdlab::tui::replay::Replay;
use sdlab::tui::ui;
use sdlab::tui::worker::{self, Command, Event, LoadSpec, Worker};

const SIZES: [(u16, u16); 2] = [(80, 24), (200, 60)];

/// The app and an in-process worker on the sd2-tiny fixture (no thread: each
/// command's events are fed to the app right away).
struct Lab {
    app: App,
    worker: Worker,
    events: Receiver<Event>,
    images: Images,
}

impl Lab {
    fn new() -> Self {
        let run = run_json("sd2-tiny");
        let spec = LoadSpec {
            model: fixture("sd2-tiny").join("model").display().to_string(),
            variant: None,
            runtime: Runtime::cpu(),
            prompt: run.prompt.clone(),
            negative_prompt: run.negative_prompt.clone(),
            seed: run.seed,
            steps: run.steps,
            guidance_scale: run.guidance_scale,
            eta: 0.0,
            width: Some(run.width),
            height: Some(run.height),
            session: None,
            model_given: true,
            replay: false,
            force: false,
        };
        let model = model::open(&spec.model, None, spec.runtime.clone(), &Progress::Quiet).unwrap();
        let session = worker::session_for(model, &spec).unwrap();
        let (tx, events) = channel();
        let worker = Worker { session, events: tx };
        let mut app = App::new(&spec.prompt, &spec.negative_prompt, spec.seed, spec.guidance_scale);
        app.update(Message::Worker(Event::Loaded(Box::new(worker::model_info(&worker.session)))));
        Lab { app, worker, events, images: Images::new(picker_without_query(ProtocolType::Halfblocks, None)) }
    }

    /// Runs commands through the worker until the app asks for nothing more.
    fn command(&mut self, command: Command) {
        let mut pending = vec![command];
        while let Some(command) = pending.pop() {
            self.worker.handle(command).unwrap();
            let events: Vec<Event> = self.events.try_iter().collect();
            for event in events {
                pending.extend(self.app.update(Message::Worker(event)));
            }
        }
    }

    /// Saves the run so far as a session folder under `dir`.
    fn save(&mut self, dir: &std::path::Path) -> std::path::PathBuf {
        let folder = dir.join("saved");
        self.command(Command::SaveSession { dir: folder.clone(), force: false });
        assert!(folder.join("session.json").is_file(), "{:?}", self.app.status);
        folder
    }

    fn key(&mut self, code: KeyCode) {
        for command in self.app.update(Message::Key(KeyEvent::new(code, KeyModifiers::NONE))) {
            self.command(command);
        }
    }

    fn render(&mut self, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        self.images.sync(&self.app);
        // the first draw sizes the panes and starts their encodings; the second shows them
        terminal.draw(|frame| ui::draw(frame, &self.app, &mut self.images)).unwrap();
        self.images.settle();
        terminal.draw(|frame| ui::draw(frame, &self.app, &mut self.images)).unwrap();
        let buffer = terminal.backend().buffer();
        let mut text = String::new();
        for y in 0..height {
            for x in 0..width {
                text.push_str(buffer[(x, y)].symbol());
            }
            text.push('\n');
        }
        text
    }
}

fn assert_all(screen: &str, needles: &[&str]) {
    for needle in needles {
        assert!(screen.contains(needle), "missing {needle:?} in:\n{screen}");
    }
}

#[test]
fn encode_prompt_screen_shows_tokens_and_embedding_stats() {
    let mut lab = Lab::new();
    let before = lab.render(80, 24);
    assert_all(&before, &["[1 encode_prompt]", "Enter encodes the prompt", "e edit the prompt"]);
    lab.key(KeyCode::Enter);
    for (w, h) in SIZES {
        let screen = lab.render(w, h);
        assert_all(&screen, &["49406", "<|startoftext|>", "BOS", "tokens 19 / 77", "[2, 77, 32]", "e edit the prompt"]);
        assert!(screen.contains("3086  painting</w>"), "{w}x{h}:\n{screen}");
    }
    let wide = lab.render(200, 60);
    assert_all(
        &wide,
        &["EOS", "PAD x 58", "L2/token prompt", "mean/token prompt", "std/token prompt", "cos(prompt, neg)"],
    );
}

#[test]
fn get_latent_screen_shows_seed_shape_and_channels() {
    let mut lab = Lab::new();
    lab.key(KeyCode::Char('2'));
    lab.key(KeyCode::Enter);
    for (w, h) in SIZES {
        let screen = lab.render(w, h);
        assert_all(&screen, &["[2 get_latent]", "seed 42", "shape [1, 4, 32, 32]", "r random seed"]);
    }
    let wide = lab.render(200, 60);
    assert_all(&wide, &["channel 0", "channel 3", "latent as colour"]);
}

#[test]
fn denoise_screen_shows_the_current_steps_scheduler_values() {
    let reference = reference("sd2-tiny");
    let alphas = reference["alpha_prod_t"].to_vec1::<f64>().unwrap();
    let timesteps = reference["timesteps"].to_vec1::<i64>().unwrap();
    let mut lab = Lab::new();
    lab.key(KeyCode::Char('3'));
    assert_all(&lab.render(80, 24), &["0 / 10 steps taken", "Space run / pause", "n one step"]);
    lab.key(KeyCode::Char('n'));
    lab.key(KeyCode::Char('n'));
    for (w, h) in SIZES {
        let screen = lab.render(w, h);
        assert_all(&screen, &[&format!("step 2 / 10 · t = {}", timesteps[1]), "[3 denoise 2/10]"]);
        assert!(screen.contains(&format!("alpha_prod_t        {:.4}", alphas[1])), "{w}x{h}:\n{screen}");
        assert!(screen.contains(&format!("alpha_prod_t_prev   {:.4}", alphas[2])), "{w}x{h}:\n{screen}");
    }
    let wide = lab.render(200, 60);
    assert_all(&wide, &["x_t (latent preview)", "predicted x0", "alpha_prod_t over the schedule", "▲ step 2"]);

    // browsing back shows the first step's values
    lab.key(KeyCode::Left);
    let screen = lab.render(200, 60);
    assert_all(&screen, &[&format!("step 1 / 10 · t = {}", timesteps[0]), "browsing history"]);

    // guidance changes live, for the steps to come
    lab.key(KeyCode::Char('+'));
    assert_eq!(lab.app.guidance_scale, 8.0);
    assert_all(&lab.render(200, 60), &["next steps use    8"]);
}

#[test]
fn vae_decode_screen_decodes_and_offers_to_save() {
    let mut lab = Lab::new();
    lab.key(KeyCode::Char('4'));
    assert_all(&lab.render(80, 24), &["[4 vae_decode]", "d decodes the current latent", "s save as PNG"]);
    lab.key(KeyCode::Char('d'));
    for (w, h) in SIZES {
        let screen = lab.render(w, h);
        assert_all(&screen, &["decoded after step 0/10", "64 x 64 pixels"]);
    }
    lab.key(KeyCode::Char('s'));
    assert_eq!(lab.app.save_field.text(), "sessions/sdlab-seed42-step0.png");
    assert_all(&lab.render(80, 24), &["save as"]);
}

#[test]
fn help_lists_every_key_and_tiny_terminals_do_not_panic() {
    let mut lab = Lab::new();
    lab.key(KeyCode::Char('?'));
    let screen = lab.render(120, 40);
    assert_all(&screen, &["keys (any key closes)", "run / pause", "go to step", "save as PNG", "quit"]);
    lab.key(KeyCode::Esc);
    assert!(!lab.app.show_help);
    for screen in Screen::ALL {
        lab.app.screen = screen;
        for (w, h) in [(1, 1), (10, 5), (80, 24), (20, 80)] {
            lab.render(w, h);
        }
    }
}

/// A saved session replayed without any model: stages 1 and 2 come back as recorded,
/// the steps one key at a time, and what needs the model says so.
#[test]
fn replay_walks_a_saved_session_without_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::new();
    lab.key(KeyCode::Char('3'));
    for _ in 0..3 {
        lab.key(KeyCode::Char('n'));
    }
    let folder = lab.save(dir.path());

    let (tx, events) = channel();
    let send = move |event| tx.send(event).unwrap();
    let mut replay = Replay::load(&folder).unwrap();
    let mut app = App::new("", "", 0, 1.0);
    replay.start(&send).unwrap();
    let feed = |app: &mut App, replay: &mut Replay, events: &Receiver<Event>| loop {
        let pending: Vec<Event> = events.try_iter().collect();
        if pending.is_empty() {
            break;
        }
        for event in pending {
            for command in app.update(Message::Worker(event)) {
                replay
                    .handle(command, &send)
                    .unwrap_or_else(|e| app.status = Some((sdlab::tui::app::Level::Error, e.to_string())));
            }
        }
    };
    feed(&mut app, &mut replay, &events);
    assert!(app.replay);
    assert_eq!(app.prompt.text(), run_json("sd2-tiny").prompt);
    let mut images = Images::new(picker_without_query(ProtocolType::Halfblocks, None));
    let mut render = |app: &App| {
        let mut terminal = Terminal::new(TestBackend::new(120, 40)).unwrap();
        images.sync(app);
        terminal.draw(|frame| ui::draw(frame, app, &mut images)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        (0..40)
            .map(|y| (0..120).map(|x| buffer[(x, y)].symbol().to_string()).collect::<String>() + "\n")
            .collect::<String>()
    };
    let screen = render(&app);
    assert_all(&screen, &["replay", "tokens 19 / 77"]);

    app.screen = Screen::Denoise;
    for expected in 1..=3 {
        for command in app.update(Message::Key(KeyEvent::new(KeyCode::Char('n'), KeyModifiers::NONE))) {
            replay.handle(command, &send).unwrap();
        }
        feed(&mut app, &mut replay, &events);
        assert_all(&render(&app), &[&format!("step {expected} / 10")]);
    }
    // the recording ends after step 3
    assert!(replay.handle(Command::Step, &send).unwrap_err().to_string().contains("ends after step 3"));
    assert!(replay.handle(Command::DecodeX0(0), &send).unwrap_err().to_string().contains("no VAE"));
}

/// `o` on a saved session: the run comes back at the stage and step where it was left,
/// with its whole history to browse.
#[test]
fn opening_a_session_restores_its_stage_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::new();
    lab.key(KeyCode::Char('3'));
    for _ in 0..4 {
        lab.key(KeyCode::Char('n'));
    }
    let folder = lab.save(dir.path());

    let mut fresh = Lab::new();
    assert!(fresh.app.history.is_empty());
    fresh.command(Command::OpenSession(folder));
    assert_eq!(fresh.app.screen, Screen::Denoise);
    assert_eq!(fresh.app.history.len(), 4);
    assert_all(&fresh.render(120, 40), &["step 4 / 10", "[3 denoise 4/10]", "opened the session"]);
    fresh.key(KeyCode::Left);
    assert_all(&fresh.render(120, 40), &["step 3 / 10", "browsing history"]);
    // and it goes on from there exactly as the original would
    fresh.key(KeyCode::Right);
    fresh.key(KeyCode::Char('n'));
    lab.key(KeyCode::Char('n'));
    assert_eq!(fresh.app.history.len(), 5);
    let (a, b) = (&fresh.app.history[4], &lab.app.history[4]);
    assert_eq!((a.timestep, a.alpha_prod_t, &a.x0_rgb), (b.timestep, b.alpha_prod_t, &b.x0_rgb));
}
