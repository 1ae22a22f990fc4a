//! The real binary in tmux, driven as a person would: type a prompt, encode, step
//! three times, browse back, decode, save. Asserts on what the screen shows.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// A tmux server of its own (its own socket), killed when the test ends.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `command` with `cwd` as its working folder (autosaves land in `cwd/sessions`).
    fn start_in(cwd: &std::path::Path, command: &[&str], width: u16, height: u16) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        // one server per test: tests run in parallel and each names its session "lab"
        let socket = format!("sdlab-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let tmux = Tmux { socket };
        let (w, h) = (width.to_string(), height.to_string());
        let cwd = cwd.to_str().unwrap();
        let mut args = vec!["-f", "/dev/null", "new-session", "-d", "-s", "lab", "-c", cwd, "-x", &w, "-y", &h, "--"];
        args.extend_from_slice(command);
        tmux.run(&args);
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").arg("-L").arg(&self.socket).args(args).output().expect("tmux runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "lab"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", "lab", "-l", text]);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "lab"])
    }

    /// Polls the screen until it shows every one of `needles` and has settled (a bounded
    /// wait, not a timing check). Settled: two captures 100 ms apart agree, since tmux
    /// draws a frame as it reads it and a capture in between shows half of each frame.
    fn wait_for(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut before = String::new();
        loop {
            let screen = self.screen();
            if screen == before && needles.iter().all(|n| screen.contains(n)) {
                return screen;
            }
            assert!(Instant::now() < deadline, "waited for {needles:?}; the screen shows:\n{screen}");
            before = screen;
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

#[test]
fn a_person_runs_the_four_stages_in_tmux() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("sd2-tiny").join("model");
    let run = run_json("sd2-tiny");
    let reference = reference("sd2-tiny");
    let bin = env!("CARGO_BIN_EXE_sdlab");
    let tmux = Tmux::start_in(
        dir.path(),
        &[
            bin,
            "tui",
            "--model",
            model.to_str().unwrap(),
            "--steps",
            "10",
            "--seed",
            "42",
            "--graphics",
            "halfblocks",
            "--prompt",
            "a fox",
        ],
        120,
        40,
    );
    tmux.wait_for(&["loaded", "[1 encode_prompt]", "e edit the prompt"]);

    // type the talk's prompt into the prompt field and encode it
    tmux.keys(&["e", "C-u"]);
    tmux.type_text(&run.prompt);
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for(&["tokens 19 / 77", "3086  painting</w>", "PAD x 58"]);
    assert!(screen.contains("49406  <|startoftext|>"), "{screen}");

    // step three times on the denoise screen
    tmux.keys(&["3"]);
    tmux.wait_for(&["[3 denoise 0/10]", "n takes one step"]);
    for step in 1..=3 {
        tmux.keys(&["n"]);
        tmux.wait_for(&[&format!("step {step} / 10")]);
    }
    let alpha = reference["alpha_prod_t"].to_vec1::<f64>().unwrap()[2];
    let screen = tmux.wait_for(&["paused", "denoise 3/10"]);
    assert!(screen.contains(&format!("alpha_prod_t        {alpha:.4}")), "alpha {alpha} not shown:\n{screen}");

    // browse back one step
    tmux.keys(&["Left"]);
    tmux.wait_for(&["step 2 / 10", "browsing history"]);

    // decode and save
    tmux.keys(&["4", "d"]);
    tmux.wait_for(&["decoded after step 3/10", "s saves it as PNG"]);
    let png = dir.path().join("fox.png");
    tmux.keys(&["s"]);
    tmux.wait_for(&["save as"]);
    tmux.keys(&["C-u"]);
    tmux.type_text(png.to_str().unwrap());
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["saved"]);
    let image = image::open(&png).expect("a valid PNG").to_rgb8();
    assert_eq!(image.dimensions(), (run.width as u32, run.height as u32));

    // write the session, then quit: the quit autosaves under sessions/
    let saved = dir.path().join("fox-session");
    tmux.keys(&["w"]);
    tmux.wait_for(&["save session to:"]);
    tmux.keys(&["C-u"]);
    tmux.type_text(saved.to_str().unwrap());
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["saved the session in"]);
    assert!(saved.join("session.json").is_file());
    tmux.keys(&["w", "C-u"]);
    tmux.type_text(saved.to_str().unwrap());
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["holds a saved session: y replaces it"]);
    tmux.keys(&["n"]);
    tmux.wait_for(&["kept the saved session"]);
    tmux.keys(&["q"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let autosaved = loop {
        let found = std::fs::read_dir(dir.path().join("sessions")).into_iter().flatten().flatten().find(|e| {
            e.file_name().to_string_lossy().starts_with("autosave-") && e.path().join("session.json").is_file()
        });
        if let Some(entry) = found {
            break entry.path();
        }
        assert!(Instant::now() < deadline, "no autosave in {}/sessions:\n{}", dir.path().display(), tmux.screen());
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(tmux);

    // replay the written session with no model at all: the fixture folder is not named
    let tmux = Tmux::start_in(
        dir.path(),
        &[bin, "tui", "--session", saved.to_str().unwrap(), "--replay", "--graphics", "halfblocks"],
        120,
        40,
    );
    tmux.wait_for(&["replaying", "replay f32", "tokens 19 / 77"]);
    tmux.keys(&["3", "n", "n", "n"]);
    tmux.wait_for(&["step 3 / 10", "denoise 3/10"]);
    tmux.keys(&["n"]);
    tmux.wait_for(&["the recording ends after step 3"]);
    tmux.keys(&["4", "d"]);
    tmux.wait_for(&["decoded after step 3/10"]);
    tmux.keys(&["q"]);
    assert!(autosaved.join("tensors.safetensors").is_file());
    drop(tmux);

    // the saved PNG remembers its settings: open it and the run starts again from them
    let tmux = Tmux::start_in(
        dir.path(),
        &[
            bin,
            "tui",
            "--session",
            png.to_str().unwrap(),
            "--graphics",
            "halfblocks",
            "--model",
            model.to_str().unwrap(),
        ],
        120,
        40,
    );
    tmux.wait_for(&["loaded", "seed 42", "painting depicting the sea"]);
    tmux.keys(&["q"]);
}

/// A fixture model's `config.json` of one part (`unet`, `vae`).
fn model_config(part: &str) -> serde_json::Value {
    let path = fixture("sd2-tiny").join("model").join(part).join("config.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn numbers(value: &serde_json::Value) -> Vec<usize> {
    value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect()
}

/// The row where `name` is followed (after spaces) by `shape` as the talk prints it.
fn block_row(screen: &str, name: &str, shape: &[usize]) -> Option<usize> {
    let shape = format!("{shape:?}");
    screen.lines().position(|line| {
        line.match_indices(name).any(|(at, _)| {
            let after = &line[at + name.len()..];
            after.starts_with(' ') && after.trim_start().starts_with(&shape)
        })
    })
}

/// Inside the UNet in the real binary: one step, then `u` shows the tensor's path block
/// by block with the shapes the fixture's config implies, in order; `a` lists the
/// prompt's tokens and Down picks the next one.
#[test]
fn a_person_looks_inside_the_unet_in_tmux() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("sd2-tiny").join("model");
    let run = run_json("sd2-tiny");
    let unet = model_config("unet");
    let vae_scale_factor = 1 << (numbers(&model_config("vae")["block_out_channels"]).len() - 1);
    let (h, w) = (run.height / vae_scale_factor, run.width / vae_scale_factor);
    let channels = numbers(&unet["block_out_channels"]);
    let n = channels.len();
    let at = |level: usize, c: usize| vec![2, c, h >> level, w >> level];
    let mut blocks = vec![
        ("sample".to_string(), at(0, unet["in_channels"].as_u64().unwrap() as usize)),
        ("conv_in".to_string(), at(0, channels[0])),
    ];
    for (i, &c) in channels.iter().enumerate() {
        blocks.push((format!("down_blocks.{i}"), at((i + 1).min(n - 1), c)));
    }
    blocks.push(("mid_block".into(), at(n - 1, channels[n - 1])));
    for i in 0..n {
        blocks.push((format!("up_blocks.{i}"), at(if i + 1 < n { n - 2 - i } else { 0 }, channels[n - 1 - i])));
    }
    blocks.push(("conv_out".into(), at(0, unet["out_channels"].as_u64().unwrap() as usize)));

    let bin = env!("CARGO_BIN_EXE_sdlab");
    let model = model.to_str().unwrap();
    let args = [bin, "tui", "--model", model, "--steps", "10", "--seed", "42", "--graphics", "halfblocks"];
    let tmux = Tmux::start_in(dir.path(), &[&args[..], &["--prompt", &run.prompt]].concat(), 120, 40);
    tmux.wait_for(&["loaded", "[1 encode_prompt]"]);
    tmux.keys(&["3", "n"]);
    tmux.wait_for(&["step 1 / 10"]);
    tmux.keys(&["u"]);
    let screen = tmux.wait_for(&["the UNet at step 1 / 10", "conv_out"]);
    let rows: Vec<usize> = blocks
        .iter()
        .map(|(name, shape)| {
            block_row(&screen, name, shape).unwrap_or_else(|| panic!("no {name} {shape:?}:\n{screen}"))
        })
        .collect();
    assert!(rows.windows(2).all(|p| p[0] < p[1]), "blocks out of order {rows:?}:\n{screen}");

    tmux.keys(&["a"]);
    tmux.wait_for(&["tokens ↑↓", "<|startoftext|> BOS", "sunrise</w>", "attention to \"painting</w>\" · step 1 / 10"]);
    tmux.keys(&["Down"]);
    tmux.wait_for(&["attention to \"depicting</w>\" · step 1 / 10"]);
    tmux.keys(&["a"]);
    tmux.wait_for(&["x_t (VAE decode)"]);
    tmux.keys(&["q"]);
}

/// Talk mode on a replayed session, as a speaker with a clicker would present it:
/// PageDown only, from the first slide to the decoded image, every slide showing its
/// title and its stage function's code; a recording that stops early ends its denoise
/// slide where the recording ends.
#[test]
fn a_speaker_walks_a_replayed_session_through_the_slides_with_pagedown() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("sd2-tiny").join("model");
    let run = run_json("sd2-tiny");
    let sessions = dir.path().join("sessions");
    let png = dir.path().join("full.png");
    for (name, stop_at) in [("full", None), ("partial", Some("2"))] {
        let mut args = vec!["generate", "--model", model.to_str().unwrap(), "--prompt", &run.prompt, "--steps", "4"];
        args.extend(["--seed", "42", "--session", name, "--dir", sessions.to_str().unwrap()]);
        args.extend(["--out", png.to_str().unwrap()]);
        if let Some(k) = stop_at {
            args.extend(["--stop-at", k]);
        }
        let out = sdlab(&args);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let bin = env!("CARGO_BIN_EXE_sdlab");
    let replay = |name: &str| {
        let session = sessions.join(name);
        let args = [bin, "tui", "--session", session.to_str().unwrap(), "--replay", "--talk", "--lang", "en"];
        Tmux::start_in(dir.path(), &[&args[..], &["--graphics", "halfblocks"]].concat(), 120, 40)
    };

    let tmux = replay("full");
    tmux.wait_for(&["Step 1: encode_prompt", "pub fn encode_prompt(", "<- prompt_embeds: [2, 77, 32] f32"]);
    let next = |expect: &[&str]| {
        tmux.keys(&["PageDown"]);
        tmux.wait_for(expect)
    };
    next(&["Step 2: get_latent", "pub fn get_latent(", "<- seed 42"]);
    next(&["Step 3: denoise", "step 0 / 4", "pub fn denoise_step("]);
    let mut last = String::new();
    for step in 1..=4 {
        let at = format!("step {step} / 4");
        let unet = next(&[&at, "UNet predicts the noise", "<- latent_model_input: [2, 4, 32, 32]"]);
        // the UNet line is the highlighted one: marked `>` in the gutter, not by colour alone
        let marked = |l: &str| l.starts_with("│>") && l.contains("unet.forward(&latent_model_input");
        assert!(unet.lines().any(marked), "{unet}");
        next(&[&at, "guidance mixes the two predictions", "<- uncond + 7.5 * (text - uncond)"]);
        let scheduler = next(&[&at, "scheduler.step removes one step of noise", "alpha_prod_t_prev"]);
        assert_ne!(scheduler, last, "step {step} looks like the step before");
        last = scheduler;
    }
    next(&["Step 4: vae_decode", "pub fn vae_decode(", "PageDown runs vae_decode"]);
    next(&["decoded after step 4 / 4", "<- image: [1, 3, 64, 64]"]);
    tmux.keys(&["q"]);
    drop(tmux);

    // recorded up to step 2 of 4: the walk goes from step 2 to the last slide
    let tmux = replay("partial");
    // the recording's encoding has arrived: PageDown moves on rather than running the stage
    tmux.wait_for(&["Step 1: encode_prompt", "<- prompt_embeds: [2, 77, 32] f32"]);
    let next = |expect: &[&str]| {
        tmux.keys(&["PageDown"]);
        tmux.wait_for(expect)
    };
    next(&["Step 2: get_latent"]);
    next(&["Step 3: denoise"]);
    for _ in 0..6 {
        next(&["Step 3: denoise"]);
    }
    tmux.wait_for(&["step 2 / 4", "scheduler.step removes one step of noise"]);
    next(&["Step 4: vae_decode"]);
    tmux.keys(&["q"]);
}

/// What the program wrote to the terminal, byte for byte, while it showed the denoise
/// screen with `--graphics MODE`.
fn denoise_screen_output(mode: &str, ready: fn(&str) -> bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("raw.out");
    let model = fixture("sd2-tiny").join("model");
    let bin = env!("CARGO_BIN_EXE_sdlab");
    let tmux = Tmux::start_in(
        dir.path(),
        &[bin, "tui", "--model", model.to_str().unwrap(), "--steps", "10", "--graphics", mode],
        120,
        40,
    );
    tmux.run(&["pipe-pane", "-o", "-t", "lab", &format!("cat >> {}", raw.display())]);
    tmux.wait_for(&["loaded"]);
    tmux.keys(&["3", "n"]);
    tmux.wait_for(&["step 1 / 10"]);
    // the previews are encoded off the UI thread: wait until their bytes have been written
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let bytes = std::fs::read(&raw).unwrap_or_default();
        let text = unwrap_tmux(&String::from_utf8_lossy(&bytes));
        if ready(&text) || Instant::now() > deadline {
            tmux.keys(&["q"]);
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The sequences as the outer terminal receives them: inside tmux, ratatui-image wraps
/// each one in a passthrough (`ESC Ptmux; ... ESC \`, inner escapes doubled).
fn unwrap_tmux(raw: &str) -> String {
    raw.replace("\x1bPtmux;", "").replace("\x1b\x1b", "\x1b")
}

/// Every `ESC <intro> ... ESC \` sequence in `out`, without its delimiters.
fn sequences<'a>(out: &'a str, intro: &str) -> Vec<&'a str> {
    let mut found = Vec::new();
    let mut rest = out;
    while let Some(start) = rest.find(intro) {
        let body = &rest[start + intro.len()..];
        let Some(end) = body.find("\x1b\\") else { break };
        found.push(&body[..end]);
        rest = &body[end..];
    }
    found
}

/// DCS sixel sequences: `ESC P <numeric parameters> q <data> ESC \`.
fn sixel_images(out: &str) -> Vec<&str> {
    sequences(out, "\x1bP")
        .into_iter()
        .filter(|seq| seq.find('q').is_some_and(|q| seq[..q].chars().all(|c| c.is_ascii_digit() || c == ';')))
        .collect()
}

/// Kitty graphics commands that transmit and display an image (`a=T`), not the query.
fn kitty_transmissions(out: &str) -> Vec<&str> {
    sequences(out, "\x1b_G").into_iter().filter(|c| c.split(';').next().unwrap_or("").contains("a=T")).collect()
}

#[test]
fn sixel_mode_writes_sixel_images_on_the_denoise_screen() {
    let out = denoise_screen_output("sixel", |out| sixel_images(out).len() >= 2);
    let images = sixel_images(&out);
    assert!(images.len() >= 2, "expected the x_t and x0 sixel images, found {}", images.len());
    for image in images {
        let data = &image[image.find('q').unwrap() + 1..];
        assert!(data.contains('#'), "no sixel colour registers in {:?}", &data[..data.len().min(40)]);
    }
}

#[test]
fn kitty_mode_transmits_images_directly() {
    let out = denoise_screen_output("kitty", |out| kitty_transmissions(out).len() >= 2);
    let commands = sequences(&out, "\x1b_G");
    let transmissions = kitty_transmissions(&out);
    assert!(!transmissions.is_empty(), "no kitty transmit-and-display command among {} commands", commands.len());
    for command in transmissions {
        let (control, payload) = command.split_once(';').expect("control data;payload");
        assert!(control.split(',').any(|kv| kv == "t=d"), "not direct transmission: {control}");
        assert!(
            !payload.is_empty() && payload.chars().all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c)),
            "payload is not base64"
        );
    }
}

/// Closing the key map over sixel images redraws the screen without asking the terminal
/// anything: ratatui's `Terminal::clear` asked for the cursor position, and a late answer
/// (tmux relaying a large image, a busy terminal) ended the lab with "The cursor position
/// could not be read within a normal duration", in tmux without a message or a save.
#[test]
fn closing_the_key_map_never_asks_for_the_cursor_position() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("raw.out");
    let model = fixture("sd2-tiny").join("model");
    let bin = env!("CARGO_BIN_EXE_sdlab");
    let args = [bin, "tui", "--model", model.to_str().unwrap(), "--steps", "10", "--graphics", "sixel"];
    let tmux = Tmux::start_in(dir.path(), &args, 120, 40);
    tmux.run(&["pipe-pane", "-o", "-t", "lab", &format!("cat >> {}", raw.display())]);
    tmux.wait_for(&["loaded"]);
    tmux.keys(&["3", "n", "n"]);
    tmux.wait_for(&["step 2 / 10"]);
    for close in ["Enter", "Escape", "x"] {
        tmux.keys(&["?"]);
        tmux.wait_for(&["keys (any key closes)"]);
        tmux.keys(&[close]);
        let screen = tmux.wait_for(&["step 2 / 10", "x_t (VAE decode)"]);
        assert!(!screen.contains("keys (any key closes)"), "{close} did not close the key map:\n{screen}");
    }
    let out = String::from_utf8_lossy(&std::fs::read(&raw).unwrap()).into_owned();
    assert!(sixel_images(&unwrap_tmux(&out)).len() >= 2, "no sixel images were drawn");
    assert!(!out.contains("\x1b[6n"), "the lab asked for the cursor position");
    tmux.keys(&["q"]);
}

/// The terminal going away (an SSH connection dropped: SIGHUP) ends the lab with the run
/// saved, and says where.
#[test]
fn a_closed_terminal_saves_the_run_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let err = dir.path().join("err.txt");
    let model = fixture("sd2-tiny").join("model");
    let bin = env!("CARGO_BIN_EXE_sdlab");
    let command =
        format!("'{bin}' tui --model '{}' --steps 10 --graphics halfblocks 2>'{}'", model.display(), err.display());
    let tmux = Tmux::start_in(dir.path(), &["sh", "-c", &command], 120, 40);
    tmux.wait_for(&["loaded"]);
    tmux.keys(&["3", "n", "n"]);
    tmux.wait_for(&["step 2 / 10"]);
    drop(tmux);
    let deadline = Instant::now() + Duration::from_secs(30);
    let message = loop {
        let text = std::fs::read_to_string(&err).unwrap_or_default();
        if text.contains("the lab stopped") {
            break text;
        }
        assert!(Instant::now() < deadline, "no message after the terminal closed: {text:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(message.contains("the terminal closed (SIGHUP); the run is saved in sessions/autosave-"), "{message}");
    let saved = message.split("saved in ").nth(1).unwrap().split(' ').next().unwrap();
    let record = sdlab::session::store::SessionRecord::load(&dir.path().join(saved)).unwrap();
    assert_eq!(record.history.len(), 2, "both steps taken are in the saved run");
}

/// Runs `sdlab tui ARGS` in tmux from `cwd`, waits for it to end, and returns what it
/// printed on stderr with its exit code, and `stty -a` afterwards.
fn lab_ending(cwd: &std::path::Path, args: &str) -> (String, String) {
    let bin = env!("CARGO_BIN_EXE_sdlab");
    let command =
        format!("'{bin}' tui {args} --graphics halfblocks 2>err.txt; echo \"exit=$?\" >>err.txt; stty -a >stty.txt");
    let _tmux = Tmux::start_in(cwd, &["sh", "-c", &command], 120, 40);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stty = std::fs::read_to_string(cwd.join("stty.txt")).unwrap_or_default();
        if !stty.is_empty() {
            return (std::fs::read_to_string(cwd.join("err.txt")).unwrap(), stty);
        }
        assert!(Instant::now() < deadline, "the lab did not end: {:?}", std::fs::read_to_string(cwd.join("err.txt")));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A lab that cannot open its session or its model ends at once, restores the
/// terminal, says why and exits 1. A broken replay showed "loading" forever and
/// exited 0; a panicking VAE config left a blank screen and a cooked keyboard.
#[test]
fn a_lab_that_cannot_start_says_why_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("sd2-tiny").join("model");
    let model = model.to_str().unwrap();
    let made = Command::new(env!("CARGO_BIN_EXE_sdlab"))
        .args(["generate", "--model", model, "--prompt", "a fox", "--steps", "2", "--session", "k", "--stop-at", "1"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(made.status.success());
    let json = dir.path().join("sessions/k/session.json");
    let text = std::fs::read_to_string(&json).unwrap();
    std::fs::write(&json, text.replacen("\"num_train_timesteps\": 1000", "\"num_train_timesteps\": 1000000000000", 1))
        .unwrap();
    let (err, stty) = lab_ending(dir.path(), "--session sessions/k --replay");
    assert!(err.starts_with("error: the lab could not start: "), "{err}");
    assert!(err.contains("session.json: field `scheduler_config`: num_train_timesteps"), "{err}");
    assert!(err.trim_end().ends_with("exit=1"), "{err}");
    assert!(stty.contains(" icanon") && stty.contains(" echo "), "the terminal is cooked again: {stty}");

    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("model");
    copy_dir(std::path::Path::new(model), &broken);
    let config = broken.join("vae/config.json");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    json["norm_num_groups"] = 0.into();
    std::fs::write(&config, json.to_string()).unwrap();
    let (err, stty) = lab_ending(dir.path(), &format!("--model '{}' --steps 2", broken.display()));
    assert!(err.starts_with("error: the lab could not start: "), "{err}");
    assert!(err.contains("vae/config.json: norm_num_groups"), "{err}");
    assert!(err.trim_end().ends_with("exit=1"), "{err}");
    assert!(stty.contains(" icanon"), "{stty}");
}

/// `sdlab tui` with nothing else, as the README's first command: the built-in
/// `shapes` model, a prompt it draws well, its own step count and guidance, and
/// every step's x_t and x0 shown as the VAE decodes them (a 64x64 picture).
#[test]
fn the_first_command_opens_the_built_in_model() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_sdlab");
    let tmux = Tmux::start_in(dir.path(), &[bin, "tui", "--graphics", "halfblocks"], 120, 40);
    let suggested = sdlab::model::builtin::SHAPES.suggested;
    tmux.wait_for(&["loaded shapes on cpu", "[1 encode_prompt]"]);
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["circle</w>", "blue</w>", "background</w>"]);
    tmux.keys(&["3", "n"]);
    let screen = tmux.wait_for(&["step 1 / 20", "x_t (VAE decode)", "predicted x0 (VAE decode)"]);
    assert!(screen.contains(&format!("guidance scale      {}", suggested.guidance)), "{screen}");
    tmux.keys(&["q"]);
}

/// In the lab, S walks the samplers to DPM++ 2M Karras; its steps show their
/// sigmas and x0.
#[test]
fn a_person_picks_dpmpp_2m_karras_in_the_lab() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_sdlab");
    let tmux = Tmux::start_in(dir.path(), &[bin, "tui", "--graphics", "halfblocks"], 120, 40);
    tmux.wait_for(&["loaded shapes on cpu"]);
    tmux.keys(&["3"]);
    tmux.wait_for(&["0 / 20 steps taken"]);
    // ddim -> pndm -> lms -> heun -> euler -> euler_karras -> euler_a -> dpmpp_2m -> dpmpp_2m_karras
    for _ in 0..8 {
        tmux.keys(&["S"]);
    }
    tmux.wait_for(&["sampler dpmpp_2m_karras: 20 calls"]);
    tmux.keys(&["n", "n"]);
    tmux.wait_for(&["step 2 / 20", "sigma -> next", "dpmpp_2m_karras · v_prediction", "predicted x0 (VAE decode)"]);
    tmux.keys(&["q"]);
}

/// Image to image from the lab: `i` on get_latent takes a picture, the screen shows
/// it, its encoded latent and that noised; the run takes the kept steps, decodes and
/// saves a PNG whose metadata makes the same picture again with `sdlab resume`.
#[test]
fn a_person_starts_from_a_picture_in_the_lab_and_the_png_reruns_it() {
    let dir = tempfile::tempdir().unwrap();
    let disc = image::RgbImage::from_fn(64, 64, |x, y| {
        let (dx, dy) = (x as i32 - 20, y as i32 - 32);
        if dx * dx + dy * dy < 144 {
            image::Rgb([220, 30, 30])
        } else {
            image::Rgb([240, 220, 40])
        }
    });
    disc.save(dir.path().join("start.png")).unwrap();
    let bin = env!("CARGO_BIN_EXE_sdlab");
    let tmux = Tmux::start_in(dir.path(), &[bin, "tui", "--graphics", "halfblocks"], 120, 40);
    tmux.wait_for(&["loaded shapes on cpu"]);
    tmux.keys(&["2", "i"]);
    tmux.wait_for(&["start from picture (empty: none):"]);
    tmux.type_text("start.png");
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["image to image, strength 0.8", "then 16 of the 20 steps", "image_latents (encoder)"]);
    tmux.keys(&["-"]);
    tmux.wait_for(&["image to image, strength 0.7", "then 14 of the 20 steps"]);
    tmux.keys(&["3", "g"]);
    tmux.type_text("14");
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["step 14 / 14"]);
    tmux.keys(&["4", "d"]);
    tmux.wait_for(&["decoded after step 14/14"]);
    tmux.keys(&["s"]);
    tmux.wait_for(&["save as"]);
    tmux.keys(&["C-u"]);
    tmux.type_text("made.png");
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["saved made.png"]);
    tmux.keys(&["q"]);

    let again = dir.path().join("again.png");
    let out = Command::new(bin)
        .current_dir(dir.path())
        .args(["resume", "made.png", "--out", again.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let made = image::open(dir.path().join("made.png")).unwrap().to_rgb8();
    let rerun = image::open(&again).unwrap().to_rgb8();
    assert!(made.as_raw() == rerun.as_raw(), "the rerun made other pixels");
}

/// Forks at step 3 with guidance 2.5, steps both runs, compares them, saves; the
/// session reopened with `tui --session` has the tree, and the branch on disk
/// continues the main run.
#[test]
fn a_person_forks_a_run_and_compares_the_branches_in_tmux() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_sdlab");
    let tmux = Tmux::start_in(dir.path(), &[bin, "tui", "--graphics", "halfblocks", "--steps", "8"], 140, 40);
    tmux.wait_for(&["loaded shapes on cpu"]);
    tmux.keys(&["3", "g"]);
    tmux.type_text("3");
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["step 3 / 8"]);
    tmux.keys(&["b"]);
    tmux.wait_for(&["branch: its prompt (Enter, Esc cancels): "]);
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["branch: its guidance scale (Enter forks): 2"]);
    tmux.keys(&["BSpace"]);
    tmux.type_text("2.5");
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["branch b1 forked from main at step 3", "[b1 <main@3 cfg 2.5 3 steps]"]);
    tmux.wait_for(&["┃ forked from main after step 3"]);
    tmux.keys(&["n", "n"]);
    tmux.wait_for(&["[b1 <main@3 cfg 2.5 5 steps]"]);
    tmux.keys(&["["]);
    tmux.wait_for(&["[main cfg 2 3 steps]"]);
    tmux.keys(&["n", "n"]);
    tmux.wait_for(&["[main cfg 2 5 steps]", "step 5 / 8"]);
    tmux.keys(&["c"]);
    let screen =
        tmux.wait_for(&["compare after step 5: main and b1", "main: step 5/8", "b1: step 5/8", "difference: max"]);
    let max: f64 = screen.split("difference: max ").nth(1).and_then(|s| s.split('%').next()).unwrap().parse().unwrap();
    assert!(max > 0.0, "guidance 2.5 against 2 must change x0 after the fork:\n{screen}");
    tmux.keys(&["Left", "Left"]);
    tmux.wait_for(&["compare after step 3: main and b1", "difference: max 0.0%"]);
    tmux.keys(&["w"]);
    tmux.wait_for(&["save session to: "]);
    tmux.keys(&["C-u"]);
    tmux.type_text("sessions/tree");
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["saved the session in sessions/tree"]);
    tmux.keys(&["q"]);
    std::thread::sleep(Duration::from_millis(500));
    drop(tmux);

    let record = sdlab::session::store::SessionRecord::load(&dir.path().join("sessions/tree/branches/b1")).unwrap();
    assert_eq!((record.history.len(), record.fork.as_ref().map(|f| f.at)), (5, Some(3)));
    assert_eq!(record.image_settings().guidance_scales, vec![2.0, 2.0, 2.0, 2.5, 2.5]);
    let tmux = Tmux::start_in(dir.path(), &[bin, "tui", "--graphics", "halfblocks", "--session", "tree/b1"], 140, 40);
    tmux.wait_for(&["[b1 <main@3 cfg 2.5 5 steps]", "main cfg 2 5 steps"]);
}
