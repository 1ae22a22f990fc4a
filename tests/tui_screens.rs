//! Every screen of the terminal lab rendered with ratatui's TestBackend, on the tiny
//! fixture model, at 80x24 and 200x60, asserting on real content.

mod common;

use std::sync::mpsc::{channel, Receiver};

use common::lab::Lab;
use common::*;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::buffer::{Buffer, CellWidth};
use ratatui::style::Color;
use ratatui::Terminal;
use sdlab::scheduler::SamplerName;
use sdlab::tui::app::{App, Message, Screen};
use sdlab::tui::graphics::Graphics;
use sdlab::tui::i18n::Lang;
use sdlab::tui::images::Images;
use sdlab::tui::replay::Replay;
use sdlab::tui::talk::{DenoiseAt, DenoiseOp, Theme};
use sdlab::tui::ui;
use sdlab::tui::worker::{Command, Event};

const SIZES: [(u16, u16); 2] = [(80, 24), (200, 60)];

/// The screen's text with borders and line breaks as single spaces, to find a sentence
/// that a narrow panel wrapped.
fn flat(screen: &str) -> String {
    screen.replace('│', " ").split_whitespace().collect::<Vec<_>>().join(" ")
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
    assert_all(&wide, &["x_t (VAE decode)", "predicted x0", "alpha_prod_t over the schedule", "▲ step 2"]);

    // browsing back shows the first step's values
    lab.key(KeyCode::Left);
    let screen = lab.render(200, 60);
    assert_all(&screen, &[&format!("step 1 / 10 · t = {}", timesteps[0]), "browsing history"]);

    // guidance changes live, for the steps to come
    lab.key(KeyCode::Char('+'));
    assert_eq!(lab.app.guidance_scale, 8.0);
    assert_all(&lab.render(200, 60), &["next steps use    8"]);
}

/// S picks the next sampler: the run starts over on its schedule, and a sigma
/// sampler's steps show their sigmas.
#[test]
fn denoise_screen_switches_samplers_with_s() {
    let mut lab = Lab::new();
    lab.key(KeyCode::Char('3'));
    lab.key(KeyCode::Char('n'));
    assert_eq!(lab.app.history.len(), 1);
    lab.key(KeyCode::Char('S'));
    assert_eq!(lab.app.info.as_ref().unwrap().sampler, "pndm");
    assert!(lab.app.history.is_empty());
    let status = lab.app.status.as_ref().map(|(_, text)| text.clone()).unwrap_or_default();
    assert!(status.contains("sampler pndm: 11 calls"), "{status}");
    // PNDM's second call redoes the first step: 11 calls for 10 steps
    assert_all(&lab.render(120, 40), &["0 / 11 steps taken"]);
    // pndm -> lms -> heun -> euler
    for _ in 0..3 {
        lab.key(KeyCode::Char('S'));
    }
    assert_eq!(lab.worker.session.settings().scheduler, SamplerName::Euler);
    lab.key(KeyCode::Char('n'));
    assert_all(&lab.render(120, 40), &["sigma -> next", "euler · v_prediction · linspace", "1 / 10"]);
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
    let mut images = Images::new(Graphics::halfblocks());
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
            // a scrolled panel may open on the wrapped rest of a line above it
            Err(_) => {
                if let Some(last) = slide.code.last_mut() {
                    last.1.push_str(&code);
                }
            }
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

/// `pub fn step` of `src/scheduler/<file>`, as (line number, line), up to the `}`
/// that closes it (rustfmt's layout of a method).
fn sampler_step_source(file: &str) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(format!("{}/src/scheduler/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| l.starts_with("    pub fn step(")).expect("the step method");
    let end = start + lines[start..].iter().position(|l| *l == "    }").expect("its closing brace");
    (start..=end).map(|i| (i + 1, lines[i].to_string())).collect()
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
        let ddim_step = sampler_step_source("ddim.rs");
        let mut walked = Vec::new();
        for (step, op, marker) in [
            (0, DenoiseOp::Unet, "unet.forward(&latent_model_input"),
            (0, DenoiseOp::Guidance, "* guidance_scale"),
            (0, DenoiseOp::Scheduler, ""),
            (1, DenoiseOp::Unet, "unet.forward(&latent_model_input"),
            (1, DenoiseOp::Guidance, "* guidance_scale"),
            (1, DenoiseOp::Scheduler, ""),
        ] {
            lab.key(KeyCode::PageDown);
            assert_eq!(lab.app.talk.denoise, DenoiseAt::Step { index: step, op });
            let counter = lang.step_of(step + 1, 10);
            if op == DenoiseOp::Scheduler {
                // the sampler's own step (src/scheduler/ddim.rs), scrolled to its lines that run
                let mut shown = Vec::new();
                for (w, h) in [(120, 40), (200, 60)] {
                    let s = read_slide(&lab.render_buffer(w, h), "src/scheduler/ddim.rs");
                    for (i, (n, code)) in s.code.iter().enumerate() {
                        let (shown, line) = (squeeze(code), squeeze(line_at(&ddim_step, *n)));
                        // the panel's last row may hold only the start of a wrapped line
                        let whole = i + 1 < s.code.len();
                        assert!(
                            if whole { shown == line } else { line.starts_with(&shown) },
                            "{lang} {w}x{h} line {n}"
                        );
                    }
                    shown.push(s);
                }
                let s = shown.remove(0);
                let marked: Vec<&str> = s.highlighted.iter().map(|&n| line_at(&ddim_step, n)).collect();
                assert!(marked.iter().any(|l| l.contains("let pred_original_sample = ")), "{marked:?}");
                assert!(marked.iter().any(|l| l.contains("let mut prev_sample = ")), "{marked:?}");
                let expected = [
                    format!("t {}: alpha_prod_t {:.4}", timesteps[step], alphas[step]),
                    format!("-> t {}: alpha_prod_t_prev {:.4}", timesteps[step + 1], alphas[step + 1]),
                ];
                assert_eq!(s.values, expected, "{lang}: the scheduler's values");
                assert!(s.text.contains(&counter), "{counter}:\n{}", s.text);
                walked.push((op, s));
                continue;
            }
            let s = check(&mut lab, 2);
            let marked: Vec<&str> = s.highlighted.iter().map(|&n| line_at(&source, n)).collect();
            assert!(marked.iter().any(|l| l.contains(marker)), "{op:?}: highlighted {marked:?}");
            assert!(s.values.contains(&format!("t = {}", timesteps[step])), "{:?}", s.values);
            assert!(s.values.contains(&"[1, 4, 32, 32]".to_string()), "latent shape: {:?}", s.values);
            assert!(s.values.contains(&"guidance_scale = 7.5, eta = 0".to_string()), "{:?}", s.values);
            assert!(s.text.contains(&counter), "{counter}:\n{}", s.text);
            walked.push((op, s));
        }
        let values = |i: usize| walked[i].1.values.clone();
        assert!(values(0).contains(&"latent_model_input: [2, 4, 32, 32]".to_string()), "{:?}", values(0));
        assert!(values(1).contains(&"uncond + 7.5 * (text - uncond)".to_string()), "{:?}", values(1));
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

/// At 150 and 120 columns, in both languages, every slide's titles and key line fit:
/// no panel title runs into its corner, the title band's right end and the key line keep
/// a blank column at the edge or end in an ellipsis.
#[test]
fn talk_titles_and_key_lines_shorten_instead_of_being_cut() {
    for lang in [Lang::En, Lang::Ja] {
        let mut lab = Lab::new();
        lab.key(KeyCode::Char('t'));
        lab.app.talk.lang = lang;
        // a long state line: a status that the key line must share its row with
        lab.app.status = Some((sdlab::tui::app::Level::Info, "graphics: the terminal did not answer the graphics query; images are drawn with half-blocks (choose with --graphics)".into()));
        for slide in 0..12 {
            for (w, h) in [(150, 45), (120, 40)] {
                let buffer = lab.render_buffer(w, h);
                let row = |y: u16| -> Vec<&str> {
                    let mut symbols = Vec::new();
                    let mut x = 0;
                    while x < w {
                        let symbol = buffer[(x, y)].symbol();
                        symbols.push(symbol);
                        x += symbol.cell_width().max(1);
                    }
                    symbols
                };
                let at = format!("{lang} {w}x{h} slide {slide}");
                for y in 0..h {
                    let symbols = row(y);
                    for (i, s) in symbols.iter().enumerate() {
                        // a title ends in a border line, or (shortened) in "… " at the corner
                        if *s == "┐" && i > 1 {
                            let fits = symbols[i - 1] == "─" || (symbols[i - 1] == " " && symbols[i - 2] == "…");
                            assert!(fits, "{at}: a title runs into its corner on row {y}: {}", symbols.concat());
                        }
                    }
                }
                for y in [0, 2] {
                    let symbols = row(y);
                    let last = symbols.last().copied().unwrap_or(" ");
                    assert!(
                        last.trim().is_empty() || last == "…",
                        "{at}: row {y} is cut at the edge: {}",
                        symbols.concat()
                    );
                }
            }
            lab.key(KeyCode::PageDown);
        }
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
    let (black, white) = (Color::Indexed(16), Color::Indexed(231));
    assert_eq!((buffer[(3, 0)].fg, buffer[(3, 0)].bg), (black, white), "title band");
    assert_eq!(buffer[(119, 39)].bg, black, "page");
    // at the scheduler operation the panel is the sampler's step: x0, then the next latent
    let slide = read_slide(&buffer, "src/scheduler/ddim.rs");
    assert_eq!(slide.highlighted.len(), 2);

    // guidance off (scale 1): the UNet runs once, on the prompt alone, and the slide
    // highlights that branch
    lab.command(Command::SetGuidance(1.0));
    let source = stage_source("denoise.rs", "denoise_step");
    lab.key(KeyCode::PageDown);
    assert_eq!(lab.app.talk.denoise, DenoiseAt::Step { index: 1, op: DenoiseOp::Unet });
    let unet = read_slide(&lab.render_buffer(120, 40), "src/stages/denoise.rs");
    let marked: Vec<&str> = unet.highlighted.iter().map(|&n| line_at(&source, n)).collect();
    assert!(
        marked.iter().any(|l| l.contains("unet.forward(&scaled, t, &prompt_embeds.narrow(0, 1, 1)?")),
        "{marked:?}"
    );
    assert!(unet.values.contains(&"UNet input: [1, 4, 32, 32]".to_string()), "{:?}", unet.values);
    lab.key(KeyCode::PageDown);
    let guidance = read_slide(&lab.render_buffer(120, 40), "src/stages/denoise.rs");
    let marked: Vec<&str> = guidance.highlighted.iter().map(|&n| line_at(&source, n)).collect();
    assert_eq!(marked, ["        None => noise_pred_text.clone(),"]);

    lab.key(KeyCode::Char('c'));
    assert_eq!(lab.app.talk.theme, Theme::Dark, "back to the theme the terminal's background calls for");
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

/// The sd2-tiny UNet's table as its `unet/config.json` implies it, for a `(2, C, h, w)`
/// input: each top-level part's name and output shape (the down blocks halve the grid
/// but the last; the up blocks double it but the last).
fn expected_blocks(h: usize, w: usize) -> Vec<(String, Vec<usize>)> {
    let path = fixture("sd2-tiny").join("model/unet/config.json");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let number = |key: &str| config[key].as_u64().unwrap() as usize;
    let channels: Vec<usize> =
        config["block_out_channels"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap() as usize).collect();
    let n = channels.len();
    let at = |level: usize, c: usize| vec![2, c, h >> level, w >> level];
    let mut rows = vec![("sample".to_string(), at(0, number("in_channels"))), ("conv_in".into(), at(0, channels[0]))];
    for (i, &c) in channels.iter().enumerate() {
        rows.push((format!("down_blocks.{i}"), at((i + 1).min(n - 1), c)));
    }
    rows.push(("mid_block".into(), at(n - 1, channels[n - 1])));
    for i in 0..n {
        rows.push((format!("up_blocks.{i}"), at(if i + 1 < n { n - 2 - i } else { 0 }, channels[n - 1 - i])));
    }
    rows.push(("conv_out".into(), at(0, number("out_channels"))));
    rows
}

/// Where `name`, followed by `shape` as the talk prints it, is on the screen: (row, column).
fn find_block(screen: &str, name: &str, shape: &[usize]) -> (usize, usize) {
    let shape = format!("{shape:?}");
    for (row, line) in screen.lines().enumerate() {
        for (col, _) in line.match_indices(name) {
            let after = &line[col + name.len()..];
            if after.starts_with(' ') && after.trim_start().starts_with(&shape) {
                return (row, line[..col].chars().count());
            }
        }
    }
    panic!("no {name} {shape} on the screen:\n{screen}");
}

/// The numbers after a block's shape: its mean and std.
fn block_stats(screen: &str, name: &str, shape: &[usize]) -> (f64, f64) {
    let (row, _) = find_block(screen, name, shape);
    let line = screen.lines().nth(row).unwrap();
    let shape = format!("{shape:?}");
    let after = &line[line.find(&format!("{name} ")).unwrap()..];
    // the U labels them (`mean -0.0011 std 0.9960`), the list has a header instead
    let mut numbers =
        after[after.find(&shape).unwrap() + shape.len()..].split_whitespace().filter_map(|t| t.parse().ok());
    (numbers.next().unwrap(), numbers.next().unwrap())
}

/// `u`: every block of the step's UNet pass, in order, with the shape the config implies,
/// as a list at 80x24 and as a U at 200x60; the input's statistics are the latent's.
#[test]
fn unet_view_shows_the_tensors_path_block_by_block() {
    let mut lab = Lab::new();
    lab.key(KeyCode::Char('3'));
    lab.key(KeyCode::Char('u'));
    assert_all(&lab.render(80, 24), &["no step taken yet: n takes one"]);
    lab.key(KeyCode::Char('n'));
    let latent = lab.app.latent.as_ref().unwrap().shape.clone();
    let blocks = expected_blocks(latent[2], latent[3]);
    let split = blocks.iter().position(|(name, _)| name == "mid_block").unwrap();
    for (w, h) in SIZES {
        let screen = lab.render(w, h);
        assert_all(&screen, &["the UNet at step 1 / 10 · t = ", "u the UNet", "batch 2 = negative prompt + prompt"]);
        let at: Vec<(usize, usize)> = blocks.iter().map(|(name, shape)| find_block(&screen, name, shape)).collect();
        if w == 80 {
            // one list in the order the blocks run, indented by depth: in, then back out
            assert!(at.windows(2).all(|p| p[0].0 < p[1].0), "not in order at {w}x{h}: {at:?}\n{screen}");
            assert!(at[2].1 > at[1].1 && at[split].1 > at[2].1, "the down path is not indented:\n{screen}");
            assert_eq!(at[blocks.len() - 1].1, at[0].1, "conv_out is not back at the left:\n{screen}");
        } else {
            // a U: down the left arm, the mid block below both arms, up the right arm
            let (down, up) = (&at[..split], &at[split + 1..]);
            assert!(down.windows(2).all(|p| p[0].0 < p[1].0), "left arm at {w}x{h}: {at:?}\n{screen}");
            assert!(up.windows(2).all(|p| p[0].0 > p[1].0), "right arm at {w}x{h}: {at:?}\n{screen}");
            assert!(up.iter().all(|u| down.iter().all(|d| u.1 > d.1 + 20)), "arms side by side:\n{screen}");
            assert!(at.iter().all(|b| b.0 <= at[split].0), "mid block at the bottom:\n{screen}");
        }
        // step 1's input is the initial latent twice over: the same mean and std
        let (mean, std) = block_stats(&screen, "sample", &blocks[0].1);
        let noise = lab.app.latent.as_ref().unwrap().channel_stats.clone();
        let noise_mean = noise.iter().map(|s| s.mean).sum::<f64>() / noise.len() as f64;
        assert!((mean - noise_mean).abs() < 1e-3, "sample mean {mean} vs the latent's {noise_mean}");
        assert!(std > 0.5 && std < 2.0, "sample std {std}");
    }
    // browsing the history shows that step's pass; u again closes the view
    lab.key(KeyCode::Char('n'));
    assert_all(&lab.render(80, 24), &["the UNet at step 2 / 10"]);
    lab.key(KeyCode::Left);
    assert_all(&lab.render(80, 24), &["the UNet at step 1 / 10"]);
    lab.key(KeyCode::Char('u'));
    assert_all(&lab.render(80, 24), &["x_t (VAE decode)", "step 1 / 10"]);
}

/// The cells of the image in the part of the screen right of column `from`: their
/// colours, which is what half-blocks draw.
fn picture_cells(buffer: &Buffer, from: u16) -> Vec<(u16, u16, Color, Color)> {
    let area = buffer.area;
    let mut cells = Vec::new();
    for y in 0..area.height {
        for x in from..area.width {
            let cell = &buffer[(x, y)];
            if matches!(cell.bg, Color::Rgb(..)) {
                cells.push((x, y, cell.fg, cell.bg));
            }
        }
    }
    cells
}

/// `a`: the prompt's tokens, Up/Down picking one, and its map over x0 changing with it;
/// which layers were averaged, counted from the config.
#[test]
fn attention_view_picks_a_token_and_shows_its_map() {
    let path = fixture("sd2-tiny").join("model/unet/config.json");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let layers_per_block = config["layers_per_block"].as_u64().unwrap() as usize;
    let cross =
        |key: &str, kind: &str| config[key].as_array().unwrap().iter().filter(|t| t.as_str() == Some(kind)).count();
    // one transformer layer per block (transformer_layers_per_block 1): each resnet of
    // a cross-attention block has one, up blocks one more resnet, the mid block one
    assert_eq!(config["transformer_layers_per_block"], 1);
    let layers = cross("down_block_types", "CrossAttnDownBlock2D") * layers_per_block
        + cross("up_block_types", "CrossAttnUpBlock2D") * (layers_per_block + 1)
        + 1;

    let mut lab = Lab::new();
    lab.key(KeyCode::Char('3'));
    lab.key(KeyCode::Char('n'));
    lab.key(KeyCode::Char('a'));
    let tokens = lab.app.encode.as_ref().unwrap().prompt.tokens.clone();
    let words = tokens.iter().filter(|t| t.kind != sdlab::model::tokenizer::TokenKind::Pad).count();
    let title = |i: usize| format!("attention to \"{}\" · step 1 / 10", tokens[i].text);
    assert_eq!(tokens[1].text, "painting</w>");
    for (w, h) in SIZES {
        let screen = lab.render(w, h);
        assert_all(&screen, &["tokens ↑↓", &title(1), "<|startoftext|> BOS", &format!("{} padding", 77 - words)]);
        assert!(screen.contains("Up/Down pick a token"), "the view's keys lead the footer:\n{screen}");
        if w == 200 {
            assert_all(&screen, &[&format!("the mean of {layers} cross-attention layers (DAAM)"), "<|endoftext|> EOS"]);
        }
    }
    // each position's attention over the 77 tokens sums to 1, so the shares do too
    let maps = lab.app.history[0].taps.as_ref().unwrap().attention.clone().unwrap();
    let total: f32 =
        (0..77).map(|i| maps.token(i).unwrap().iter().sum::<f32>() / (maps.height * maps.width) as f32).sum();
    assert!((total - 1.0).abs() < 1e-4, "shares sum to {total}");
    let share = maps.token(1).unwrap().iter().sum::<f32>() / (maps.height * maps.width) as f32;
    assert_all(&lab.render(200, 60), &[&format!("token 1 \"painting</w>\": {:.1}% of the attention", 100.0 * share)]);

    let list_width = 34;
    let before = picture_cells(&lab.render_buffer(200, 60), list_width);
    assert!(before.len() > 100, "no picture beside the list: {} cells", before.len());
    lab.key(KeyCode::Down);
    assert_eq!(lab.app.attention_token, 2);
    assert_all(&lab.render(80, 24), &[&title(2)]);
    let after = picture_cells(&lab.render_buffer(200, 60), list_width);
    assert_eq!(before.len(), after.len(), "the picture moved");
    assert_ne!(before, after, "the map did not change with the token");
    // Up goes back past the first word to BOS, and stops there
    for _ in 0..3 {
        lab.key(KeyCode::Up);
    }
    assert_eq!(lab.app.attention_token, 0);
    assert_all(&lab.render(80, 24), &[&title(0)]);
    assert_eq!(picture_cells(&lab.render_buffer(200, 60), list_width).len(), before.len());
    // Down stops at EOS: the padding is not listed
    for _ in 0..80 {
        lab.key(KeyCode::Down);
    }
    assert_eq!(lab.app.attention_token, words - 1);
    assert_eq!(tokens[words - 1].kind, sdlab::model::tokenizer::TokenKind::Eos);
    // Up and Down do nothing to the steps, Left/Right still browse them
    lab.key(KeyCode::Char('n'));
    lab.key(KeyCode::Left);
    assert_all(&lab.render(80, 24), &["step 1 / 10", "<|endoftext|>"]);
    lab.key(KeyCode::Char('a'));
    assert_all(&lab.render(80, 24), &["x_t (VAE decode)"]);
}

/// Steps that came from a saved session have no taps: both views say so, and what to do;
/// a step taken after opening the session has them again.
#[test]
fn unet_views_say_when_the_steps_were_not_recorded() {
    const NOT_RECORDED: &str =
        "not recorded: steps replayed from a saved session carry no UNet taps; step again to see them";
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::new();
    lab.key(KeyCode::Char('3'));
    lab.key(KeyCode::Char('n'));
    let folder = lab.save(dir.path());

    let mut opened = Lab::new();
    opened.command(Command::OpenSession(folder.clone()));
    assert!(opened.app.history[0].taps.is_none());
    for key in ['u', 'a'] {
        opened.key(KeyCode::Char(key));
        for (w, h) in SIZES {
            let screen = flat(&opened.render(w, h));
            assert_all(
                &screen,
                &[NOT_RECORDED, "g rewinds to an earlier step, and n takes the steps from there again"],
            );
        }
    }
    opened.key(KeyCode::Char('u'));
    opened.key(KeyCode::Char('n'));
    let latent = opened.app.latent.as_ref().unwrap().shape.clone();
    let blocks = expected_blocks(latent[2], latent[3]);
    let screen = opened.render(80, 24);
    assert!(!flat(&screen).contains(NOT_RECORDED), "{screen}");
    find_block(&screen, "conv_out", &blocks.last().unwrap().1);
    opened.key(KeyCode::Left);
    assert_all(&flat(&opened.render(80, 24)), &[NOT_RECORDED]);

    // a replay has no model to step with: it says where to go instead
    let (tx, events) = channel();
    let send = move |event| tx.send(event).unwrap();
    let mut replay = Replay::load(&folder).unwrap();
    let mut app = App::new("", "", 0, 1.0);
    replay.start(&send).unwrap();
    replay.handle(Command::Step, &send).unwrap();
    for event in events.try_iter() {
        app.update(Message::Worker(event));
    }
    app.screen = Screen::Denoise;
    app.update(Message::Key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::NONE)));
    let mut images = Images::new(Graphics::halfblocks());
    let mut terminal = Terminal::new(TestBackend::new(120, 40)).unwrap();
    terminal.draw(|frame| ui::draw(frame, &app, &mut images)).unwrap();
    let buffer = terminal.backend().buffer();
    let screen: String =
        (0..40).map(|y| (0..120).map(|x| buffer[(x, y)].symbol().to_string()).collect::<String>() + "\n").collect();
    assert_all(
        &flat(&screen),
        &[NOT_RECORDED, "a replay has no model to step with: open the session without --replay"],
    );
}

/// The key map lists both views and the token keys; no terminal size makes the views panic.
#[test]
fn unet_views_are_in_the_key_map_and_survive_tiny_terminals() {
    let mut lab = Lab::new();
    lab.key(KeyCode::Char('3'));
    lab.key(KeyCode::Char('?'));
    assert_all(
        &lab.render(120, 40),
        &["the UNet: each block's output shape", "attention to each prompt token, over x0", "Up/Down"],
    );
    lab.key(KeyCode::Esc);
    for taken in [false, true] {
        if taken {
            lab.key(KeyCode::Char('n'));
        }
        for key in ['u', 'a'] {
            lab.key(KeyCode::Char(key));
            for (w, h) in [(1, 1), (10, 5), (20, 80), (40, 12), (80, 24), (300, 8)] {
                lab.render(w, h);
            }
            lab.key(KeyCode::Char('g'));
            lab.render(80, 24);
            lab.key(KeyCode::Esc);
        }
    }
}

/// The compare view of a branch against its parent, in the lab and as talk mode's
/// branch slide: both runs named with their step, the fork named, and a difference
/// that is zero before the fork and not after it. Branches go in the saved session.
#[test]
fn branches_compare_in_the_lab_and_on_the_talk_slide() {
    let mut lab = Lab::new();
    lab.key(KeyCode::Char('3'));
    for _ in 0..3 {
        lab.command(Command::Step);
    }
    lab.key(KeyCode::Char('b'));
    lab.key(KeyCode::End);
    for c in " at night".chars() {
        lab.key(KeyCode::Char(c));
    }
    lab.key(KeyCode::Enter);
    for _ in 0..3 {
        lab.key(KeyCode::Backspace);
    }
    for c in "5.5".chars() {
        lab.key(KeyCode::Char(c));
    }
    lab.key(KeyCode::Enter);
    let branch = lab.worker.session.settings();
    assert!(branch.prompt.ends_with(" at night") && branch.guidance_scale == 5.5, "{branch:?}");
    assert_eq!(lab.worker.session.history().len(), 3, "the branch keeps the shared steps");
    lab.command(Command::Step);
    lab.command(Command::Step);
    let bar = lab.app.branches.clone().unwrap();
    assert_eq!(bar.runs.len(), 2);
    assert_eq!(
        (bar.runs[1].name.as_str(), bar.runs[1].fork.clone(), bar.runs[1].steps_done),
        ("b1", Some(("main".into(), 3)), 5)
    );
    assert_eq!(bar.active, 1);
    lab.key(KeyCode::Char('['));
    lab.command(Command::Step);
    lab.command(Command::Step);
    lab.key(KeyCode::Char('c'));
    let screen = flat(&lab.render(150, 45));
    assert_all(&screen, &["compare after step 5: main and b1", "main: step 5/10", "b1: step 5/10", "difference: max"]);
    let after = lab.app.compare.as_ref().unwrap().max_difference;
    assert!(after > 0.0, "guidance 5.5 against 7.5 changes x0 after the fork");
    lab.key(KeyCode::Left);
    lab.key(KeyCode::Left);
    assert_eq!(lab.app.compare.as_ref().map(|c| (c.step, c.max_difference)), Some((3, 0.0)));

    lab.key(KeyCode::Right);
    lab.key(KeyCode::Right);
    lab.key(KeyCode::Char('t'));
    for lang in [Lang::En, Lang::Ja] {
        lab.app.talk.lang = lang;
        let slide = flat(&lab.render(150, 45));
        let fork = match lang {
            Lang::En => "b1 forked from main after step 3",
            Lang::Ja => "b1: main の 3 ス テ ッ プ 後 か ら 分 岐",
        };
        assert_all(&slide, &[fork, "main", "b1"]);
    }

    let tmp = tempfile::tempdir().unwrap();
    let saved = lab.save(tmp.path());
    let branch = sdlab::session::store::SessionRecord::load(&saved.join("branches/b1")).unwrap();
    assert_eq!((branch.history.len(), branch.fork.map(|f| f.at)), (5, Some(3)));
}

/// A session whose branch is damaged still opens in the lab: the other runs are
/// there, and the message names the branch left out.
#[test]
fn a_damaged_branch_is_left_out_and_named_when_the_lab_opens_the_session() {
    let mut lab = Lab::new();
    lab.key(KeyCode::Char('3'));
    lab.command(Command::Step);
    lab.command(Command::Step);
    for name in ["b1", "b2"] {
        lab.command(Command::Fork { at: 1, prompt: None, guidance: Some(3.0) });
        lab.command(Command::Step);
        assert_eq!(lab.app.branches.as_ref().unwrap().runs.last().unwrap().name, name);
        lab.key(KeyCode::Char(']'));
    }
    let tmp = tempfile::tempdir().unwrap();
    let saved = lab.save(tmp.path());
    std::fs::write(saved.join("branches/b1/session.json"), b"{not json").unwrap();
    lab.command(Command::OpenSession(saved.clone()));
    let names: Vec<String> = lab.app.branches.as_ref().unwrap().runs.iter().map(|r| r.name.clone()).collect();
    assert_eq!(names, vec!["main", "b2"]);
    let status = lab.app.status.as_ref().map(|(_, text)| text.clone()).unwrap_or_default();
    assert!(status.contains("branch b1 left out") && status.contains("b1/session.json"), "{status}");
}

/// `L`'s panel: `a` adds a LoRA, `+`/`-` change its scale, `d` removes it, Enter fuses
/// the list (re-encoding the prompt, restarting the run from its latent: other weights,
/// other steps) and the U view charts where it acts; a bad file is named and the model
/// stays as it was; Esc leaves it untouched.
#[test]
fn the_lora_panel_fuses_loras_and_the_u_view_charts_where_they_act() {
    let model = fixture("sd15-shaped/tiny-sd15-shaped.safetensors");
    let lora = fixture("sd15-shaped/tiny-lora.safetensors");
    let mut lab = Lab::on(model.to_str().unwrap());
    lab.key(KeyCode::Char('3'));
    lab.key(KeyCode::Char('n'));
    let plain = lab.worker.session.history()[0].denoise.guided_model_output.clone();
    let add = |lab: &mut Lab, text: &str| {
        lab.key(KeyCode::Char('a'));
        for c in text.chars() {
            lab.key(KeyCode::Char(c));
        }
        lab.key(KeyCode::Enter);
    };
    lab.key(KeyCode::Char('L'));
    assert_all(&lab.render(160, 45), &["LoRAs fused into the model", "none: a adds one"]);
    add(&mut lab, &format!("{}:0.6", lora.display()));
    lab.key(KeyCode::Char('+'));
    lab.key(KeyCode::Char('+'));
    assert_all(&lab.render(160, 45), &["▶ tiny-lora", "0.80"]);
    lab.key(KeyCode::Enter);
    assert!(lab.app.lora_panel.is_none());
    assert_eq!(lab.app.info.as_ref().unwrap().loras.specs, [format!("{}:0.8", lora.display())]);
    assert!(lab.app.history.is_empty(), "the run restarts");
    assert!(lab.worker.session.init_latents().is_some(), "from its latent");
    lab.key(KeyCode::Char('3'));
    lab.key(KeyCode::Char('n'));
    let fused = lab.worker.session.history()[0].denoise.guided_model_output.clone();
    assert!(max_abs_diff(&plain, &fused) > 0.1, "the LoRA changes the UNet's output");
    lab.key(KeyCode::Char('u'));
    let screen = lab.render(160, 45);
    assert_all(
        &screen,
        &["LoRA: |dW| / |W|", "text 0", "down 0", "mid", "up 3", "tiny-sd15-shaped.safetensors + tiny-lora 0.8"],
    );

    // a file that is not there: named when added, nothing changes
    lab.key(KeyCode::Char('L'));
    add(&mut lab, "nowhere.safetensors:2");
    let status = lab.app.status.as_ref().map(|(_, text)| text.clone()).unwrap_or_default();
    assert!(status.contains("no file nowhere.safetensors"), "{status}");
    lab.key(KeyCode::Esc);
    assert_eq!(lab.worker.session.model().loras.loras.len(), 1, "the model is as it was");

    lab.key(KeyCode::Char('L'));
    lab.key(KeyCode::Char('d'));
    lab.key(KeyCode::Enter);
    assert!(lab.app.info.as_ref().unwrap().loras.specs.is_empty());
    lab.key(KeyCode::Char('3'));
    lab.key(KeyCode::Char('n'));
    let again = lab.worker.session.history()[0].denoise.guided_model_output.clone();
    assert_eq!(max_abs_diff(&plain, &again), 0.0, "without it, the first run's step again");
    lab.key(KeyCode::Char('u'));
    assert!(!lab.render(160, 45).contains("LoRA: |dW|"));
}
