//! The real binary in real terminals on a virtual X display: xterm as a VT340 (sixel),
//! tmux 3.3 inside that xterm (its default configuration), and Debian's kitty 0.26 with
//! software GL. Keys go in with xdotool; what the terminal shows comes back as a
//! screenshot, judged by its pixels, not by the escape sequences sdlab wrote.
//!
//! Needs (Debian, `.ci/run` installs them):
//! `apt-get install xvfb xterm x11-utils xdotool imagemagick tmux kitty fonts-dejavu-core`.
//! The tests take turns on one display (about four minutes in all): the one-second
//! checks should not race each other for the CPU.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::lab::{block_titled, Lab};
use common::*;
use crossterm::event::KeyCode;
use image::RgbImage;
use ratatui::layout::Rect;
use sdlab::tui::talk::theme::contrast;
use sdlab::tui::ui;

const COLS: u16 = 120;
const ROWS: u16 = 40;
/// The x_t and x0 panes of the denoise screen.
const PANES: [&str; 2] = ["x_t (VAE decode)", "predicted x0 (VAE decode)"];

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An X server of its own, for the terminals of one test.
struct Display {
    name: String,
    server: Child,
    /// Screenshots of failures go here.
    shots: PathBuf,
}

impl Display {
    /// `-noreset`: by default the server resets when its last client leaves, refusing
    /// connections meanwhile, and a terminal started then cannot open the display.
    fn start() -> Display {
        for tool in ["Xvfb", "xterm", "xdotool", "xdpyinfo", "import", "tmux", "kitty"] {
            let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().unwrap();
            assert!(
                found.status.success(),
                "{tool} is missing: apt-get install xvfb xterm x11-utils xdotool imagemagick tmux kitty fonts-dejavu-core"
            );
        }
        let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("real-terminals");
        std::fs::create_dir_all(&shots).unwrap();
        let mut number = 300 + std::process::id() % 500;
        loop {
            let name = format!(":{number}");
            let lock = PathBuf::from(format!("/tmp/.X{number}-lock"));
            if !lock.exists() {
                let server = Command::new("Xvfb")
                    .args([&name, "-screen", "0", "1600x1000x24", "-nolisten", "tcp", "-noreset"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("Xvfb starts");
                let display = Display { name, server, shots };
                for _ in 0..100 {
                    if display.tool("xdpyinfo").stdout(Stdio::null()).status().unwrap().success() {
                        return display;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                panic!("Xvfb {} did not come up", display.name);
            }
            number += 1;
        }
    }

    fn tool(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.env("DISPLAY", &self.name).stderr(Stdio::null());
        command
    }

    /// xdotool key names, e.g. `"3"`, `"question"`, `"Next"`.
    fn key(&self, key: &str) {
        assert!(self.tool("xdotool").args(["key", key]).status().unwrap().success(), "xdotool key {key}");
    }

    fn screenshot(&self) -> RgbImage {
        let out = self.tool("import").args(["-window", "root", "png:-"]).output().unwrap();
        assert!(out.status.success(), "import failed");
        image::load_from_memory(&out.stdout).unwrap().to_rgb8()
    }

    /// Saves `shot` for whoever reads the failure; returns where.
    fn keep(&self, shot: &RgbImage, name: &str) -> PathBuf {
        let path = self.shots.join(format!("{name}.png"));
        shot.save(&path).unwrap();
        path
    }

    /// The position and size in pixels of the first visible window of `class`.
    fn window(&self, class: &str) -> (u32, u32, u32, u32) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self
                .tool("xdotool")
                .args(["search", "--onlyvisible", "--class", class, "getwindowgeometry", "--shell"])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let value = |key: &str| {
                text.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).and_then(|v| v.parse::<u32>().ok())
            };
            if let (Some(x), Some(y), Some(w), Some(h)) = (value("X"), value("Y"), value("WIDTH"), value("HEIGHT")) {
                return (x, y, w, h);
            }
            assert!(Instant::now() < deadline, "no {class} window appeared");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Term {
    Xterm,
    /// tmux (default configuration) inside xterm.
    Tmux,
    Kitty,
}

/// One sdlab run in a terminal; the terminal (and tmux) go when it is dropped.
struct Run<'a> {
    display: &'a Display,
    term: Term,
    terminal: Child,
    tmux_socket: String,
    /// Written with sdlab's exit status when it ends.
    done: PathBuf,
    _dir: tempfile::TempDir,
}

impl<'a> Run<'a> {
    fn start(display: &'a Display, term: Term, background: &str, args: &[&str]) -> Run<'a> {
        let dir = tempfile::tempdir().unwrap();
        let done = dir.path().join("done");
        let model = fixture("sd2-tiny").join("model");
        let mut sdlab = vec![env!("CARGO_BIN_EXE_sdlab").to_string(), "tui".into(), "--model".into()];
        sdlab.push(model.display().to_string());
        sdlab.extend(args.iter().map(|a| a.to_string()));
        let quoted: Vec<String> = sdlab.iter().map(|a| format!("'{a}'")).collect();
        let script = format!("{}; echo $? > '{}'", quoted.join(" "), done.display());
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let tmux_socket = format!("sdlab-real-{}-{}", std::process::id(), RUNS.fetch_add(1, Ordering::Relaxed));
        let inner: Vec<String> = match term {
            Term::Xterm | Term::Kitty => vec!["sh".into(), "-c".into(), script],
            Term::Tmux => {
                ["tmux", "-L", &tmux_socket, "-f", "/dev/null", "new-session", &script].map(String::from).to_vec()
            }
        };
        let foreground = if background == "white" { "black" } else { "white" };
        let mut command = match term {
            Term::Xterm | Term::Tmux => {
                let mut c = display.tool("xterm");
                let geometry = format!("{COLS}x{ROWS}+0+0");
                c.args(["-ti", "vt340", "-xrm", "XTerm*allowWindowOps: true", "-xrm", "XTerm*sixelScrolling: false"])
                    .args([
                        "-geometry",
                        &geometry,
                        "-fa",
                        "Monospace",
                        "-fs",
                        "11",
                        "-bg",
                        background,
                        "-fg",
                        foreground,
                    ])
                    .arg("-e")
                    .args(&inner);
                c
            }
            Term::Kitty => {
                let mut c = display.tool("kitty");
                c.args(["--config", "NONE", "-o", "font_size=11", "-o", "remember_window_size=no"])
                    .args([
                        "-o",
                        &format!("initial_window_width={COLS}c"),
                        "-o",
                        &format!("initial_window_height={ROWS}c"),
                    ])
                    .args(["-o", "placement_strategy=top-left", "-o", "window_padding_width=0"])
                    .env("LIBGL_ALWAYS_SOFTWARE", "1")
                    .args(&inner);
                c
            }
        };
        // a clean environment: not the tmux, kitty or locale the tests themselves run in
        let keep = ["PATH", "HOME", "USER"];
        for (key, _) in std::env::vars() {
            if !keep.contains(&key.as_str()) {
                command.env_remove(key);
            }
        }
        command.env("DISPLAY", &display.name).env("LANG", "C.UTF-8").current_dir(dir.path());
        let log = std::fs::File::create(dir.path().join("terminal.log")).unwrap();
        let terminal = command.stdout(Stdio::null()).stderr(log).spawn().expect("the terminal starts");
        Run { display, term, terminal, tmux_socket, done, _dir: dir }
    }

    /// What the terminal said on stderr, and whether it has ended: for failure messages.
    fn terminal_said(&mut self) -> String {
        let log = std::fs::read_to_string(self._dir.path().join("terminal.log")).unwrap_or_default();
        format!("terminal status {:?}, stderr: {log}", self.terminal.try_wait())
    }

    /// sdlab's exit status, once it has ended.
    fn ended(&self) -> Option<String> {
        std::fs::read_to_string(&self.done).ok().filter(|s| s.ends_with('\n')).map(|s| s.trim().to_string())
    }

    fn wait_for_end(&self, within: Duration) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < within {
            if self.ended().is_some() {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// The screen's top-left pixel and a cell's size in pixels.
    fn cells(&self) -> Cells {
        let class = if self.term == Term::Kitty { "kitty" } else { "xterm" };
        let (x, y, w, h) = self.display.window(class);
        // xterm keeps a 2-pixel border inside its window; kitty, told so, none
        let border = if self.term == Term::Kitty { 0 } else { 2 };
        Cells {
            left: x + border,
            top: y + border,
            width: (w - 2 * border) / u32::from(COLS),
            height: (h - 2 * border) / u32::from(ROWS),
        }
    }

    /// The rows sdlab has: tmux keeps the last for its status line.
    fn rows(&self) -> u16 {
        if self.term == Term::Tmux {
            ROWS - 1
        } else {
            ROWS
        }
    }
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        let _ = self.terminal.kill();
        let _ = self.terminal.wait();
        if self.term == Term::Tmux {
            let _ = Command::new("tmux").args(["-L", &self.tmux_socket, "kill-server"]).stderr(Stdio::null()).status();
        }
    }
}

/// Where cells are on the screenshot.
#[derive(Clone, Copy, Debug)]
struct Cells {
    left: u32,
    top: u32,
    width: u32,
    height: u32,
}

impl Cells {
    /// The pixels of a rectangle of cells.
    fn pixels(&self, r: Rect) -> (u32, u32, u32, u32) {
        let x = self.left + u32::from(r.x) * self.width;
        let y = self.top + u32::from(r.y) * self.height;
        (x, y, u32::from(r.width) * self.width, u32::from(r.height) * self.height)
    }
}

/// The mean over R, G and B of the pixels' variance in `rect`: near 0 for an empty panel,
/// thousands for a noisy picture.
fn variance(shot: &RgbImage, (x, y, w, h): (u32, u32, u32, u32)) -> f64 {
    let mut sum = [0f64; 3];
    let mut squares = [0f64; 3];
    let n = f64::from(w * h);
    for py in y..y + h {
        for px in x..x + w {
            let p = shot.get_pixel(px, py).0;
            for c in 0..3 {
                sum[c] += f64::from(p[c]);
                squares[c] += f64::from(p[c]).powi(2);
            }
        }
    }
    (0..3).map(|c| squares[c] / n - (sum[c] / n).powi(2)).sum::<f64>() / 3.0
}

/// How many pixels of `rect` differ between two screenshots.
fn changed(a: &RgbImage, b: &RgbImage, (x, y, w, h): (u32, u32, u32, u32)) -> usize {
    (y..y + h)
        .flat_map(|py| (x..x + w).map(move |px| (px, py)))
        .filter(|&(px, py)| a.get_pixel(px, py) != b.get_pixel(px, py))
        .count()
}

/// The x_t and x0 panes' insides after two steps, and where the key map opens, at
/// `cols` x `rows`, from the lab drawn in-process with the same layout.
fn layout(rows: u16) -> ([Rect; 2], Rect) {
    let mut lab = Lab::new();
    for key in ['3', 'n', 'n'] {
        lab.key(KeyCode::Char(key));
    }
    let buffer = lab.render_buffer(COLS, rows);
    let inner = |title| {
        let r = block_titled(&buffer, title).unwrap_or_else(|| panic!("no {title:?} pane"));
        Rect::new(r.x + 1, r.y + 1, r.width - 2, r.height - 2)
    };
    lab.app.show_help = true;
    let help = ui::overlays(&lab.app, Rect::new(0, 0, COLS, rows))[0];
    ([inner(PANES[0]), inner(PANES[1])], help)
}

/// Starts sdlab in `term` 30 times; each time, a second and a half after the start, `q`
/// must end it within a second: the keyboard works from the first key (no cooked mode
/// left behind by a startup query).
fn first_key_acts(term: Term) {
    let _turn = one_at_a_time();
    let display = Display::start();
    for start in 1..=30 {
        let mut run = Run::start(&display, term, "black", &["--steps", "5"]);
        let up = Instant::now() + Duration::from_secs(20);
        while display
            .tool("xdotool")
            .args(["search", "--onlyvisible", "--class", "xterm"])
            .stdout(Stdio::null())
            .status()
            .map_or(true, |s| !s.success())
        {
            let ended = run.ended();
            assert!(
                Instant::now() < up,
                "{term:?} start {start}: no window; sdlab ended with {ended:?}; {}",
                run.terminal_said()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(1500));
        display.key("q");
        if run.wait_for_end(Duration::from_secs(1)).is_none() {
            let shot = display.keep(&display.screenshot(), &format!("{term:?}-start-{start}"));
            panic!("{term:?} start {start}: q did not end sdlab within 1 s; the screen: {}", shot.display());
        }
        assert_eq!(run.ended().as_deref(), Some("0"), "{term:?} start {start}: exit status");
    }
}

#[test]
fn xterm_answers_the_first_key_in_30_starts() {
    first_key_acts(Term::Xterm);
}

#[test]
fn tmux_in_xterm_answers_the_first_key_in_30_starts() {
    first_key_acts(Term::Tmux);
}

/// After `3 n n` the x_t and x0 panes hold pictures; `?` during a run keeps the key map
/// whole across further steps (no image drawn over it) while the run goes on; after Esc
/// the pictures are back.
fn images_show_and_stay_under_popups(term: Term) {
    let _turn = one_at_a_time();
    let display = Display::start();
    let run = Run::start(&display, term, "black", &["--steps", "60"]);
    let cells = run.cells();
    let (panes, help) = layout(run.rows());
    std::thread::sleep(Duration::from_millis(2000));
    display.key("3");
    std::thread::sleep(Duration::from_millis(700));
    let empty = display.screenshot();
    for key in ["n", "n"] {
        display.key(key);
        std::thread::sleep(Duration::from_millis(800));
    }
    std::thread::sleep(Duration::from_millis(700));
    let shown = display.screenshot();
    let name = format!("{term:?}");
    for (title, pane) in PANES.iter().zip(panes) {
        let (before, after) = (variance(&empty, cells.pixels(pane)), variance(&shown, cells.pixels(pane)));
        let shot = display.keep(&shown, &format!("{name}-steps"));
        assert!(
            after > 500.0 && after > 20.0 * before,
            "{name}: {title} holds no picture ({before:.0} -> {after:.0}): {}",
            shot.display()
        );
    }

    // running: each step replaces both pictures, which never blink out meanwhile
    display.key("space");
    for i in 0..8 {
        let shot = display.screenshot();
        for (title, pane) in PANES.iter().zip(panes) {
            let during = variance(&shot, cells.pixels(pane));
            let kept = display.keep(&shot, &format!("{name}-running-{i}"));
            assert!(during > 500.0, "{name}: {title} blinked out during the run ({during:.0}): {}", kept.display());
        }
    }
    display.key("question");
    std::thread::sleep(Duration::from_millis(800));
    let opened = display.screenshot();
    let mut later = Vec::new();
    for _ in 0..3 {
        // a step takes about 0.15 s: three screenshots more than three steps apart
        std::thread::sleep(Duration::from_millis(700));
        later.push(display.screenshot());
    }
    // inside the box's border: the glyphs of the text beside it may bleed a pixel into it
    let help_px = cells.pixels(Rect::new(help.x + 1, help.y + 1, help.width - 2, help.height - 2));
    for (i, shot) in later.iter().enumerate() {
        let differing = changed(&opened, shot, help_px);
        let kept = display.keep(shot, &format!("{name}-help-{i}"));
        assert_eq!(
            differing,
            0,
            "{name}: {differing} pixels of the key map changed during the run: {}",
            kept.display()
        );
    }
    let whole = (0, 0, opened.width(), opened.height());
    assert!(changed(&opened, &later[2], whole) > 0, "{name}: the run did not go on under the key map");

    display.key("Escape");
    std::thread::sleep(Duration::from_millis(1000));
    let closed = display.screenshot();
    for (title, pane) in PANES.iter().zip(panes) {
        let after = variance(&closed, cells.pixels(pane));
        let shot = display.keep(&closed, &format!("{name}-closed"));
        assert!(after > 500.0, "{name}: {title} did not come back after Esc ({after:.0}): {}", shot.display());
    }
    display.key("space");
    std::thread::sleep(Duration::from_millis(300));
    display.key("q");
    assert!(run.wait_for_end(Duration::from_secs(20)).is_some(), "{name}: q did not end the lab");
    assert_eq!(run.ended().as_deref(), Some("0"));
}

#[test]
fn xterm_draws_sixel_panes_that_stay_under_the_key_map() {
    images_show_and_stay_under_popups(Term::Xterm);
}

#[test]
fn tmux_in_xterm_draws_sixel_panes_that_stay_under_the_key_map() {
    images_show_and_stay_under_popups(Term::Tmux);
}

#[test]
fn kitty_0_26_draws_images_not_placeholder_boxes() {
    let version = Command::new("kitty").arg("--version").output().expect("kitty runs");
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(version.starts_with("kitty 0."), "{version}");
    images_show_and_stay_under_popups(Term::Kitty);
}

/// Talk mode on xterm's white background, theme chosen by the terminal's answer: the
/// page is light, and the highlighted line's text on its band keeps WCAG's 4.5:1.
#[test]
fn talk_mode_on_a_white_xterm_is_light_and_readable() {
    let _turn = one_at_a_time();
    let display = Display::start();
    let run = Run::start(&display, Term::Xterm, "white", &["--steps", "10", "--talk"]);
    let cells = run.cells();
    std::thread::sleep(Duration::from_millis(2000));
    // encode, then the latent, then step 1's UNet call: its lines are highlighted
    for _ in 0..6 {
        display.key("Next");
        std::thread::sleep(Duration::from_millis(600));
    }
    std::thread::sleep(Duration::from_millis(600));
    let shot = display.screenshot();
    let kept = display.keep(&shot, "talk-white");
    // the slide's page: the most common colour of the screen
    let page =
        most_common(&shot, (cells.left, cells.top, u32::from(COLS) * cells.width, u32::from(ROWS) * cells.height));
    assert!(
        contrast(page, [0, 0, 0]) > contrast(page, [255, 255, 255]),
        "a dark page on white: {page:?}, {}",
        kept.display()
    );
    // the code panel's code columns (past the gutter), each cell row's commonest colour
    let code = Rect::new(8, 4, 60, ROWS - 6);
    let mut band = Vec::new();
    for row in code.y..code.bottom() {
        let px = cells.pixels(Rect::new(code.x, row, code.width, 1));
        let background = most_common(&shot, px);
        if background != page {
            band.push((px, background));
        }
    }
    assert!(!band.is_empty(), "no highlighted line in the code: {}", kept.display());
    for ((x, y, w, h), background) in band {
        let text = second_most_common(&shot, (x, y, w, h), background);
        let ratio = contrast(text, background);
        assert!(ratio >= 4.5, "highlighted text {text:?} on {background:?}: {ratio:.2}:1, {}", kept.display());
    }
    display.key("q");
    assert!(run.wait_for_end(Duration::from_secs(20)).is_some());
}

fn histogram(shot: &RgbImage, (x, y, w, h): (u32, u32, u32, u32)) -> Vec<([u8; 3], usize)> {
    let mut counts = std::collections::HashMap::new();
    for py in y..y + h {
        for px in x..x + w {
            *counts.entry(shot.get_pixel(px, py).0).or_insert(0usize) += 1;
        }
    }
    let mut sorted: Vec<_> = counts.into_iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    sorted
}

fn most_common(shot: &RgbImage, rect: (u32, u32, u32, u32)) -> [u8; 3] {
    histogram(shot, rect)[0].0
}

/// The commonest colour after `background`: the text's, whose glyph stems are solid.
fn second_most_common(shot: &RgbImage, rect: (u32, u32, u32, u32), background: [u8; 3]) -> [u8; 3] {
    histogram(shot, rect).into_iter().map(|(c, _)| c).find(|&c| c != background).unwrap_or(background)
}
