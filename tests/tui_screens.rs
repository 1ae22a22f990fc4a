//! Every screen of the terminal lab rendered with ratatui's TestBackend, on the tiny
//! fixture model, at 80x24 and 200x60, asserting on real content.

mod common;

use std::sync::mpsc::{channel, Receiver};

use common::*;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::buffer::{Buffer, CellWidth};
use ratatui::style::Color;
use ratatui::Terminal;
use ratatui_image::picker::ProtocolType;
use sdlab::model::{self, Progress, Runtime};
use sdlab::tui::app::{App, Message, Screen};
use sdlab::tui::graphics::picker_without_query;
use sdlab::tui::i18n::Lang;
use sdlab::tui::images::Images;
use sdlab::tui::replay::Replay;
use sdlab::tui::talk::{DenoiseAt, DenoiseOp, Theme};
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
        let worker = Worker::new(session, tx);
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

    fn render_buffer(&mut self, width: u16, height: u16) -> Buffer {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        self.images.sync(&self.app);
        // the first draw sizes the panes and starts their encodings; the second shows them
        terminal.draw(|frame| ui::draw(frame, &self.app, &mut self.images)).unwrap();
        self.images.settle();
        terminal.draw(|frame| ui::draw(frame, &self.app, &mut self.images)).unwrap();
        terminal.backend().buffer().clone()
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

/// One talk slide as drawn: all its text, and its code panel read back from the cells.
struct Slide {
    text: String,
    /// File line number and code text of every line in the panel, wrapped rows rejoined,
    /// values left out.
    code: Vec<(usize, String)>,
    /// Line numbers marked `>` (highlighted).
    highlighted: Vec<usize>,
    /// The values shown beside the code (after `<-`).
    values: Vec<String>,
}

/// Reads a rendered slide. The code panel is the box whose title names `path`; inside,
/// each row is a 5-cell gutter (`>` mark, line number) and code, with values after `<-`.
fn read_slide(buffer: &Buffer, path: &str) -> Slide {
    let area = buffer.area;
    // a wide character's symbol is in its first cell; the cell after it is covered
    let row = |y: u16, from: u16, to: u16| {
        let mut text = String::new();
        let mut x = from;
        while x < to {
            let symbol = buffer[(x, y)].symbol();
            text.push_str(symbol);
            x += symbol.cell_width().max(1);
        }
        text
    };
    let text = (0..area.height).map(|y| row(y, 0, area.width) + "\n").collect::<String>();
    let top = (0..area.height).find(|&y| row(y, 0, area.width).contains(path)).expect("a code panel naming the file");
    let right = (1..area.width).find(|&x| buffer[(x, top)].symbol() == "┐").expect("the panel's corner");
    let bottom = (top + 1..area.height).find(|&y| buffer[(0, y)].symbol() == "└").expect("the panel's bottom");
    let mut slide = Slide { text, code: Vec::new(), highlighted: Vec::new(), values: Vec::new() };
    for y in top + 1..bottom {
        let gutter = row(y, 1, 6);
        let mut code = row(y, 6, right);
        if let Some(at) = code.find("<-") {
            slide.values.push(code[at + 2..].trim().to_string());
            code.truncate(at);
        }
        match gutter[1..].trim().parse::<usize>() {
            Ok(number) => {
                if gutter.starts_with('>') {
                    slide.highlighted.push(number);
                }
                slide.code.push((number, code));
            }
            Err(_) => slide.code.last_mut().expect("a numbered row first").1.push_str(&code),
        }
    }
    slide
}

/// `pub fn name` in `src/stages/<file>`, read here, from the file, as (line number, line),
/// up to the `}` that closes it at the start of a line (rustfmt's layout).
fn stage_source(file: &str, name: &str) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(format!("{}/src/stages/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| l.starts_with(&format!("pub fn {name}("))).expect("the stage function");
    let end = start + lines[start..].iter().position(|l| *l == "}").expect("its closing brace");
    (start..=end).map(|i| (i + 1, lines[i].to_string())).collect()
}

fn squeeze(s: &str) -> String {
    s.split_whitespace().collect()
}

/// The panel holds the stage function exactly: every line, at its line number in the file.
fn assert_code_is_the_source(slide: &Slide, source: &[(usize, String)], at: &str) {
    let shown: Vec<(usize, String)> = slide.code.iter().map(|(n, c)| (*n, squeeze(c))).collect();
    let expected: Vec<(usize, String)> = source.iter().map(|(n, c)| (*n, squeeze(c))).collect();
    assert_eq!(shown, expected, "{at}: the code panel is not the source:\n{}", slide.text);
}

/// The text of line `number` of a stage function read by [`stage_source`].
fn line_at(source: &[(usize, String)], number: usize) -> &str {
    &source.iter().find(|(n, _)| *n == number).expect("a line of the function").1
}

const STAGE_FILES: [(&str, &str); 4] = [
    ("encode_prompt.rs", "encode_prompt"),
    ("get_latent.rs", "get_latent"),
    ("denoise.rs", "denoise_step"),
    ("vae_decode.rs", "vae_decode"),
];

/// Every slide, walked with PageDown alone, at 120x40 and 200x60 in both languages: its
/// title, the stage function's real source (read from the file here) in the code panel,
/// and on the denoise slide the highlighted line and the values moving with the walk.
#[test]
fn talk_slides_show_each_stage_with_its_own_code_in_both_languages() {
    let reference = reference("sd2-tiny");
    let alphas = reference["alpha_prod_t"].to_vec1::<f64>().unwrap();
    let timesteps = reference["timesteps"].to_vec1::<i64>().unwrap();
    for lang in [Lang::En, Lang::Ja] {
        let mut lab = Lab::new();
        lab.key(KeyCode::Char('t'));
        assert!(lab.app.talk.on);
        lab.app.talk.lang = lang;
        let title = |n: usize, stage: &str| match lang {
            Lang::En => format!("Step {n}: {stage}"),
            Lang::Ja => format!("ステップ{n}: {stage}"),
        };
        let slide = |lab: &mut Lab, w, h, stage: usize| {
            let (file, _) = STAGE_FILES[stage];
            read_slide(&lab.render_buffer(w, h), &format!("src/stages/{file}"))
        };
        let check = |lab: &mut Lab, stage: usize| {
            let (file, name) = STAGE_FILES[stage];
            let source = stage_source(file, name);
            let mut slides = Vec::new();
            for (w, h) in [(120, 40), (200, 60)] {
                let s = slide(lab, w, h, stage);
                let at = format!("{lang} {w}x{h} {name}");
                assert!(s.text.contains(&title(stage + 1, Screen::ALL[stage].title())), "{at}: no title:\n{}", s.text);
                assert_code_is_the_source(&s, &source, &at);
                // nothing on the bottom row, which projectors cut
                assert_eq!(s.text.lines().last().unwrap().trim(), "", "{at}");
                slides.push(s);
            }
            slides.remove(0)
        };

        // 1 encode_prompt: the code first, PageDown runs it
        let before = check(&mut lab, 0);
        assert!(before.highlighted.is_empty() && before.values.is_empty());
        assert!(before.text.contains(&lang.next_runs("encode_prompt")), "{}", before.text);
        lab.key(KeyCode::PageDown);
        let encoded = check(&mut lab, 0);
        assert!(encoded.values.contains(&"prompt_embeds: [2, 77, 32] f32".to_string()), "{:?}", encoded.values);
        assert!(encoded.values.contains(&"19 / 77 tokens".to_string()), "{:?}", encoded.values);
        assert!(encoded.text.contains("painting</w>"));
        let source = stage_source("encode_prompt.rs", "encode_prompt");
        let marked: Vec<&str> = encoded.highlighted.iter().map(|&n| line_at(&source, n)).collect();
        assert!(marked.iter().any(|l| l.contains("text_encoder.forward")), "{marked:?}");

        // 2 get_latent
        lab.key(KeyCode::PageDown);
        assert_eq!(lab.app.screen, Screen::GetLatent);
        lab.key(KeyCode::PageDown);
        let latent = check(&mut lab, 1);
        assert!(latent.values.contains(&"seed 42".to_string()), "{:?}", latent.values);
        assert!(latent.values.contains(&"[1, 4, 32, 32]".to_string()), "{:?}", latent.values);

        // 3 denoise: each step's UNet, guidance and scheduler step, one PageDown each
        lab.key(KeyCode::PageDown);
        assert_eq!((lab.app.screen, lab.app.talk.denoise), (Screen::Denoise, DenoiseAt::Intro));
        let intro = check(&mut lab, 2);
        assert!(intro.highlighted.is_empty());
        let source = stage_source("denoise.rs", "denoise_step");
        let mut walked = Vec::new();
        for (step, op, marker) in [
            (0, DenoiseOp::Unet, "unet.forward(&latent_model_input"),
            (0, DenoiseOp::Guidance, "* guidance_scale"),
            (0, DenoiseOp::Scheduler, "scheduler.step("),
            (1, DenoiseOp::Unet, "unet.forward(&latent_model_input"),
            (1, DenoiseOp::Guidance, "* guidance_scale"),
            (1, DenoiseOp::Scheduler, "scheduler.step("),
        ] {
            lab.key(KeyCode::PageDown);
            assert_eq!(lab.app.talk.denoise, DenoiseAt::Step { index: step, op });
            let s = check(&mut lab, 2);
            let marked: Vec<&str> = s.highlighted.iter().map(|&n| line_at(&source, n)).collect();
            assert!(marked.iter().any(|l| l.contains(marker)), "{op:?}: highlighted {marked:?}");
            assert!(s.values.contains(&format!("t = {}", timesteps[step])), "{:?}", s.values);
            assert!(s.values.contains(&"[1, 4, 32, 32]".to_string()), "latent shape: {:?}", s.values);
            assert!(s.values.contains(&"guidance_scale = 7.5, eta = 0".to_string()), "{:?}", s.values);
            let counter = lang.step_of(step + 1, 10);
            assert!(s.text.contains(&counter), "{counter}:\n{}", s.text);
            walked.push((op, s));
        }
        let values = |i: usize| walked[i].1.values.clone();
        assert!(values(0).contains(&"latent_model_input: [2, 4, 32, 32]".to_string()), "{:?}", values(0));
        assert!(values(1).contains(&"uncond + 7.5 * (text - uncond)".to_string()), "{:?}", values(1));
        for step in 0..2 {
            let expected = format!(
                "t {} -> {}: alpha_prod_t {:.4}, alpha_prod_t_prev {:.4}",
                timesteps[step],
                timesteps[step + 1],
                alphas[step],
                alphas[step + 1]
            );
            assert!(values(3 * step + 2).contains(&expected), "{expected} not in {:?}", values(3 * step + 2));
        }
        // every PageDown moves the highlight, and the values differ between the two steps
        for pair in walked.windows(2) {
            assert_ne!(pair[0].1.highlighted, pair[1].1.highlighted, "{:?} -> {:?}", pair[0].0, pair[1].0);
            assert_ne!(pair[0].1.values, pair[1].1.values, "{:?} -> {:?}", pair[0].0, pair[1].0);
        }
        for op in 0..3 {
            assert_eq!(walked[op].1.highlighted, walked[op + 3].1.highlighted);
            assert_ne!(walked[op].1.values, walked[op + 3].1.values, "step 1 and 2 show the same values");
        }

        // PageUp goes back without dropping anything; PageDown comes forward again
        lab.key(KeyCode::PageUp);
        assert_eq!(lab.app.talk.denoise, DenoiseAt::Step { index: 1, op: DenoiseOp::Guidance });
        lab.key(KeyCode::PageDown);
        assert_eq!(lab.app.history.len(), 2);

        // run the rest, then 4 vae_decode
        lab.key(KeyCode::Char(' '));
        assert_eq!(lab.app.history.len(), 10);
        assert_eq!(lab.app.talk.denoise, DenoiseAt::Step { index: 9, op: DenoiseOp::Scheduler });
        lab.key(KeyCode::PageDown);
        assert_eq!(lab.app.screen, Screen::VaeDecode);
        lab.key(KeyCode::PageDown);
        let decoded = check(&mut lab, 3);
        assert!(decoded.values.contains(&"image: [1, 3, 64, 64]".to_string()), "{:?}", decoded.values);
        assert!(decoded.text.contains(&lang.decoded_after(10, 10)));
        lab.key(KeyCode::PageUp);
        assert_eq!(
            (lab.app.screen, lab.app.talk.denoise),
            (Screen::Denoise, DenoiseAt::Step { index: 9, op: DenoiseOp::Scheduler })
        );
    }
}

/// The high-contrast theme paints the page black and the title band white, the highlight
/// is marked in the gutter too, and `c` switches themes live; `t` goes back to the lab.
#[test]
fn talk_high_contrast_theme_and_toggles() {
    let mut lab = Lab::new();
    lab.key(KeyCode::Char('3'));
    lab.key(KeyCode::Char('n'));
    lab.key(KeyCode::Char('t'));
    // turned on at the denoise screen, talk mode starts at the step shown
    assert_eq!(lab.app.talk.denoise, DenoiseAt::Step { index: 0, op: DenoiseOp::Scheduler });
    lab.key(KeyCode::Char('c'));
    assert_eq!(lab.app.talk.theme, Theme::HighContrast);
    let buffer = lab.render_buffer(120, 40);
    assert_eq!((buffer[(3, 0)].fg, buffer[(3, 0)].bg), (Color::Black, Color::White), "title band");
    assert_eq!(buffer[(119, 39)].bg, Color::Black, "page");
    let slide = read_slide(&buffer, "src/stages/denoise.rs");
    assert_eq!(slide.highlighted.len(), 1);

    // guidance off (scale 1): the UNet runs once, on the prompt alone, and the slide
    // highlights that branch
    lab.command(Command::SetGuidance(1.0));
    let source = stage_source("denoise.rs", "denoise_step");
    lab.key(KeyCode::PageDown);
    assert_eq!(lab.app.talk.denoise, DenoiseAt::Step { index: 1, op: DenoiseOp::Unet });
    let unet = read_slide(&lab.render_buffer(120, 40), "src/stages/denoise.rs");
    let marked: Vec<&str> = unet.highlighted.iter().map(|&n| line_at(&source, n)).collect();
    assert!(
        marked.iter().any(|l| l.contains("unet.forward(latents, t, &prompt_embeds.narrow(0, 1, 1)?")),
        "{marked:?}"
    );
    assert!(unet.values.contains(&"UNet input: [1, 4, 32, 32]".to_string()), "{:?}", unet.values);
    lab.key(KeyCode::PageDown);
    let guidance = read_slide(&lab.render_buffer(120, 40), "src/stages/denoise.rs");
    let marked: Vec<&str> = guidance.highlighted.iter().map(|&n| line_at(&source, n)).collect();
    assert_eq!(marked, ["        None => noise_pred_text.clone(),"]);

    lab.key(KeyCode::Char('c'));
    assert_eq!(lab.app.talk.theme, Theme::Default);
    lab.key(KeyCode::Char('t'));
    assert!(!lab.app.talk.on);
    assert_all(&lab.render(120, 40), &["[3 denoise 2/10]"]);
    // tiny terminals do not panic in talk mode either
    lab.key(KeyCode::Char('t'));
    for screen in Screen::ALL {
        lab.app.screen = screen;
        for (w, h) in [(1, 1), (10, 5), (80, 24), (20, 80)] {
            lab.render(w, h);
        }
    }
}
