//! sdlab against careless and hostile input, one test per way it once broke: data
//! lost through outputs and session folders, saves killed mid-way, allocations
//! sized by a typo, aborts, NaN saved as a black PNG, escape sequences printed
//! raw, unbounded reads, and messages that named the wrong thing.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sdlab::session::store::SessionRecord;

fn tiny() -> PathBuf {
    fixture("sd2-tiny").join("model")
}

/// `sdlab ARGS` run in `cwd` (sessions land in `cwd/sessions`).
fn sdlab_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sdlab"))
        .args(args)
        .current_dir(cwd)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("sdlab runs")
}

/// A two-step run of the tiny model in `cwd`, with `extra` arguments.
fn generate_in(cwd: &Path, extra: &[&str]) -> Output {
    let model = tiny();
    let mut args = vec!["generate", "--model", model.to_str().unwrap(), "--prompt", "a fox", "--steps", "2"];
    args.extend_from_slice(extra);
    sdlab_in(cwd, &args)
}

/// Failed with a clear message containing `expected`: not 0, no panic, no abort.
fn assert_fails_with(out: &Output, expected: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "expected a failure, got success: {err}");
    assert!(matches!(out.status.code(), Some(1 | 2)), "exit {:?} (an abort or a signal): {err}", out.status);
    assert!(!err.contains("panicked"), "panicked: {err}");
    assert!(err.contains(expected), "expected {expected:?} in {err:?}");
}

fn ok(out: &Output) {
    assert!(out.status.success(), "sdlab failed: {}", stderr(out));
}

fn mkfifo(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Point 1: `--out` / `--trace` replace only regular files; a link is written through.
#[test]
fn outputs_replace_only_regular_files() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.png");
    mkfifo(&fifo);
    let out = generate_in(dir.path(), &["--out", "pipe.png"]);
    assert_fails_with(&out, "pipe.png: is a FIFO; refusing to replace it with a file");
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo(), "the FIFO is still a FIFO");
    std::fs::create_dir(dir.path().join("traces")).unwrap();
    let out = generate_in(dir.path(), &["--out", "a.png", "--trace", "traces"]);
    assert_fails_with(&out, "traces: is a folder; refusing");
    assert!(!dir.path().join("a.png").exists(), "refused before the run, not after it");

    std::fs::create_dir(dir.path().join("real")).unwrap();
    std::os::unix::fs::symlink("real/picture.png", dir.path().join("link.png")).unwrap();
    ok(&generate_in(dir.path(), &["--out", "link.png"]));
    assert!(std::fs::symlink_metadata(dir.path().join("link.png")).unwrap().file_type().is_symlink());
    assert!(std::fs::read(dir.path().join("real/picture.png")).unwrap().starts_with(b"\x89PNG"));
}

/// Point 2: `resume` and `--force` replace sdlab's files, not the folder.
#[test]
fn saves_keep_the_files_a_user_put_in_the_session_folder() {
    let dir = tempfile::tempdir().unwrap();
    ok(&generate_in(dir.path(), &["--session", "k", "--stop-at", "1"]));
    let k = dir.path().join("sessions/k");
    std::fs::write(k.join("notes.txt"), "my notes").unwrap();
    std::fs::create_dir_all(k.join("images")).unwrap();
    std::fs::write(k.join("images/mine.png"), "my picture").unwrap();
    std::fs::create_dir_all(k.join("drafts/old")).unwrap();
    std::fs::write(k.join("drafts/old/a.txt"), "a draft").unwrap();
    ok(&sdlab_in(dir.path(), &["resume", "k"]));
    ok(&generate_in(dir.path(), &["--session", "k", "--force", "--seed", "3"]));
    assert_eq!(std::fs::read_to_string(k.join("notes.txt")).unwrap(), "my notes");
    assert_eq!(std::fs::read_to_string(k.join("images/mine.png")).unwrap(), "my picture");
    assert_eq!(std::fs::read_to_string(k.join("drafts/old/a.txt")).unwrap(), "a draft");
    let record = SessionRecord::load(&k).unwrap();
    assert_eq!((record.settings.seed, record.history.len()), (3, 2));
    assert!(k.join("images/final.png").is_file());
}

/// The step column of `sdlab sessions` for session `name`.
fn listed_step(cwd: &Path, name: &str) -> String {
    let listed = sdlab_in(cwd, &["sessions"]);
    ok(&listed);
    let stdout = String::from_utf8_lossy(&listed.stdout).into_owned();
    let line = stdout.lines().find(|l| l.split_whitespace().next() == Some(name));
    line.and_then(|l| l.split_whitespace().nth(1)).unwrap_or_else(|| panic!("{name} not listed: {stdout}")).to_string()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

/// Point 3: a save killed at any of its renames leaves a whole session under its
/// name; leftovers alone are recovered, and cleaned up by the next save.
#[test]
fn a_save_killed_at_any_rename_leaves_a_whole_session() {
    let dir = tempfile::tempdir().unwrap();
    ok(&generate_in(dir.path(), &["--session", "k", "--stop-at", "1"]));
    let sessions = dir.path().join("sessions");
    let k = sessions.join("k");
    let bin = env!("CARGO_BIN_EXE_sdlab");
    // `resume k` renames 4 times: the output PNG, then into the new folder
    // tensors.safetensors and session.json, then the folder swap itself.
    for n in 1..=4 {
        let status = Command::new("strace")
            .args(["-f", "-o", "/dev/null", "-e", "trace=rename,renameat,renameat2"])
            .args(["-e", &format!("inject=rename,renameat,renameat2:signal=SIGKILL:when={n}")])
            .args([bin, "resume", "k", "--out", "out.png"])
            .current_dir(dir.path())
            .stderr(Stdio::null())
            .status()
            .expect("strace runs (apt-get install strace)");
        assert!(!status.success(), "rename {n} was not reached");
        let record = SessionRecord::load(&k).unwrap_or_else(|e| panic!("after a kill at rename {n}: {e:#}"));
        assert_eq!(record.history.len(), 1, "the session as saved before the killed save");
        assert_eq!(listed_step(dir.path(), "k"), "1/2");
    }
    ok(&sdlab_in(dir.path(), &["resume", "k"]));
    assert_eq!(names_in(&sessions), vec!["k"], "the next save cleans up the leftovers");

    // What a save killed between moving the old folder aside and the new one in
    // leaves: no `k`, only leftovers (one complete, one not).
    std::fs::rename(&k, sessions.join(".k.old-999999999-abc123")).unwrap();
    std::fs::create_dir(sessions.join(".k.saving-999999998-xyz789")).unwrap();
    let listed = sdlab_in(dir.path(), &["sessions"]);
    ok(&listed);
    assert!(stderr(&listed).contains("recovered the session saved"), "{}", stderr(&listed));
    assert_eq!(listed_step(dir.path(), "k"), "done");
    assert_eq!(SessionRecord::load(&k).unwrap().history.len(), 2);
    let out = generate_in(dir.path(), &["--session", "k"]);
    assert_fails_with(&out, "a session is already saved here; use --force to replace it");
    ok(&generate_in(dir.path(), &["--session", "k", "--force"]));
    assert_eq!(names_in(&sessions), vec!["k"]);
}

/// Point 4: sizes are checked before anything is allocated, from every source.
#[test]
fn image_sides_are_limited_before_any_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let out = generate_in(dir.path(), &["--width", "65536", "--height", "65536"]);
    assert_fails_with(&out, "--width 65536: expected at most 4096 pixels; --allow-large lifts the limit");
    let png = dir.path().join("big.png");
    let text = format!(
        "a fox\nSteps: 2, Sampler: DDIM, CFG scale: 7, Seed: 1, Size: 65536x65536, Model: {}",
        tiny().display()
    );
    std::fs::write(&png, sdlab::png_meta::encode_png(&image::RgbImage::new(2, 2), &[("parameters", &text)]).unwrap())
        .unwrap();
    let out = sdlab_in(dir.path(), &["resume", "big.png"]);
    assert_fails_with(&out, "big.png: parameters text chunk: Size (width) 65536: expected at most 4096 pixels");
}

/// A copy of the tiny model whose `rel` JSON file gets `key: value`.
fn model_with(dir: &Path, rel: &str, key: &str, value: serde_json::Value) -> PathBuf {
    let model = dir.join("model");
    copy_dir(&tiny(), &model);
    let path = model.join(rel);
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    json[key] = value;
    std::fs::write(&path, json.to_string()).unwrap();
    model
}

fn generate_with_model(model: &Path, cwd: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["generate", "--model", model.to_str().unwrap(), "--prompt", "a fox", "--steps", "2"];
    args.extend_from_slice(extra);
    sdlab_in(cwd, &args)
}

/// Points 5 and 6: what aborted or panicked is an error naming the file and field.
#[test]
fn configs_that_aborted_or_panicked_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model =
        model_with(dir.path(), "scheduler/scheduler_config.json", "num_train_timesteps", 1_000_000_000_000u64.into());
    let out = generate_with_model(&model, dir.path(), &[]);
    assert_fails_with(&out, "scheduler/scheduler_config.json: num_train_timesteps: expected");

    let dir = tempfile::tempdir().unwrap();
    let model = model_with(dir.path(), "vae/config.json", "norm_num_groups", 0.into());
    assert_fails_with(&generate_with_model(&model, dir.path(), &[]), "vae/config.json: norm_num_groups");

    let dir = tempfile::tempdir().unwrap();
    let model =
        model_with(dir.path(), "tokenizer/tokenizer_config.json", "model_max_length", 1_000_000_000_000u64.into());
    assert_fails_with(
        &generate_with_model(&model, dir.path(), &[]),
        "model_max_length: expected an integer from 2 to 4096",
    );
    let dir = tempfile::tempdir().unwrap();
    let model = model_with(dir.path(), "vae/config.json", "latent_channels", 8.into());
    assert_fails_with(
        &generate_with_model(&model, dir.path(), &[]),
        "unet/config.json: in_channels: expected 8 (latent_channels in",
    );

    let out = sdlab(&["bench", "--model", tiny().to_str().unwrap(), "--repeats", "4294967296"]);
    assert_fails_with(&out, "invalid value '4294967296' for '--repeats <REPEATS>'");

    // A session whose scheduler config asks for 10^12 timesteps.
    let dir = tempfile::tempdir().unwrap();
    ok(&generate_in(dir.path(), &["--session", "k", "--stop-at", "0"]));
    let json = dir.path().join("sessions/k/session.json");
    let text = std::fs::read_to_string(&json).unwrap();
    let text = text.replacen("\"num_train_timesteps\": 1000", "\"num_train_timesteps\": 1000000000000", 1);
    std::fs::write(&json, text).unwrap();
    assert_fails_with(
        &sdlab_in(dir.path(), &["resume", "k"]),
        "session.json: field `scheduler_config`: num_train_timesteps",
    );
}

/// Point 7: numbers that make NaN are refused up front, and a NaN that still
/// appears stops the run at its step instead of saving a black PNG.
#[test]
fn nothing_silently_black() {
    let dir = tempfile::tempdir().unwrap();
    assert_fails_with(&generate_in(dir.path(), &["--eta", "1.01"]), "--eta 1.01: expected a number from 0 to 1");
    assert_fails_with(
        &generate_in(dir.path(), &["--guidance", "1e300"]),
        "--guidance 1e300: expected a number from 0 to 100",
    );
    let model = model_with(dir.path(), "scheduler/scheduler_config.json", "beta_start", (-0.1).into());
    assert_fails_with(&generate_with_model(&model, dir.path(), &[]), "beta_start");
    assert!(!dir.path().join("sdlab.png").exists());

    // A UNet whose last bias is NaN: every check up front passes.
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    copy_dir(&tiny(), &model);
    let weights = model.join("unet/diffusion_pytorch_model.safetensors");
    let mut tensors = candle_core::safetensors::load(&weights, &candle_core::Device::Cpu).unwrap();
    let bias = &tensors["conv_out.bias"];
    let nan = candle_core::Tensor::full(f32::NAN, bias.dims(), &candle_core::Device::Cpu)
        .unwrap()
        .to_dtype(bias.dtype())
        .unwrap();
    tensors.insert("conv_out.bias".into(), nan);
    candle_core::safetensors::save(&tensors, &weights).unwrap();
    let out = generate_with_model(&model, dir.path(), &["--out", "black.png"]);
    assert_fails_with(&out, "denoise step 1 of 2 (t=");
    assert_fails_with(&out, "prev_sample holds NaN or infinite values");
    assert!(!dir.path().join("black.png").exists(), "no black PNG");
}

/// Point 8: text from files never reaches the terminal as escape sequences.
#[test]
fn prompts_from_files_are_printed_not_obeyed() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny();
    let hostile = "a fox\x1b]0;pwned\x07\x1b[2J";
    let args = ["generate", "--model", model.to_str().unwrap(), "--prompt", hostile, "--steps", "1", "--session", "k"];
    ok(&sdlab_in(dir.path(), &args));
    let listed = sdlab_in(dir.path(), &["sessions"]);
    ok(&listed);
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(!stdout.contains('\x1b') && !stdout.contains('\x07'), "{stdout:?}");
    assert!(stdout.contains("a fox^[]0;pwned^G^[[2J"), "{stdout:?}");
}

/// Runs `sdlab ARGS` in `cwd`, killing it after `limit`: reading a FIFO must not block.
fn sdlab_within(cwd: &Path, args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sdlab"))
        .args(args)
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            panic!("sdlab {args:?} still ran after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Point 9: only regular files are read, and only when their size is sane.
#[test]
fn session_files_are_read_only_when_regular_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    ok(&generate_in(dir.path(), &["--session", "k", "--stop-at", "1"]));
    let k = dir.path().join("sessions/k");
    let json = k.join("session.json");
    let saved = std::fs::read(&json).unwrap();
    let limit = Duration::from_secs(20);

    std::fs::remove_file(&json).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &json).unwrap();
    assert_fails_with(
        &sdlab_within(dir.path(), &["resume", "k"], limit),
        "session.json: expected a regular file, found a device",
    );
    std::fs::remove_file(&json).unwrap();
    mkfifo(&json);
    assert_fails_with(
        &sdlab_within(dir.path(), &["resume", "k"], limit),
        "session.json: expected a regular file, found a FIFO",
    );
    std::fs::remove_file(&json).unwrap();
    let huge = std::fs::File::create(&json).unwrap();
    huge.set_len(100 << 20).unwrap();
    assert_fails_with(
        &sdlab_within(dir.path(), &["resume", "k"], limit),
        "session.json: 104857600 bytes, more than the",
    );
    std::fs::write(&json, saved).unwrap();

    let tensors = k.join("tensors.safetensors");
    let bytes = std::fs::read(&tensors).unwrap();
    std::fs::remove_file(&tensors).unwrap();
    std::os::unix::fs::symlink("/dev/urandom", &tensors).unwrap();
    assert_fails_with(
        &sdlab_within(dir.path(), &["resume", "k"], limit),
        "tensors.safetensors: expected a regular file",
    );
    std::fs::remove_file(&tensors).unwrap();
    let mut padded = bytes.clone();
    padded.extend(std::iter::repeat_n(0u8, 1 << 20));
    std::fs::write(&tensors, &padded).unwrap();
    assert_fails_with(&sdlab_within(dir.path(), &["resume", "k"], limit), "its header describes");
    std::fs::write(&tensors, &bytes).unwrap();
    ok(&sdlab_within(dir.path(), &["resume", "k"], Duration::from_secs(60)));
}

/// Point 10: each message names the real source of the problem.
#[test]
fn messages_name_the_real_source() {
    let dir = tempfile::tempdir().unwrap();
    let out = sdlab(&["generate", "--model", "x"]);
    assert_fails_with(
        &out,
        "the following required arguments were not provided:\n  --prompt <PROMPT>\nUsage: sdlab generate",
    );

    let model = model_with(dir.path(), "unet/config.json", "sample_size", 0.into());
    assert_fails_with(&generate_with_model(&model, dir.path(), &[]), "unet/config.json: sample_size: expected 1 to");

    let png = dir.path().join("many.png");
    let text = format!(
        "a fox\nSteps: 999999999, Sampler: DDIM, CFG scale: 7, Seed: 1, Size: 64x64, Model: {}",
        tiny().display()
    );
    std::fs::write(&png, sdlab::png_meta::encode_png(&image::RgbImage::new(2, 2), &[("parameters", &text)]).unwrap())
        .unwrap();
    assert_fails_with(
        &sdlab_in(dir.path(), &["resume", "many.png"]),
        "many.png: parameters text chunk: Steps 999999999: expected 1 to 1000",
    );
    let mut damaged = std::fs::read(&png).unwrap();
    let at = damaged.windows(4).position(|w| w == b"tEXt").unwrap();
    damaged[at + 10] ^= 0x20;
    std::fs::write(&png, damaged).unwrap();
    assert_fails_with(&sdlab_in(dir.path(), &["resume", "many.png"]), "its CRC does not match: the file is damaged");

    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    copy_dir(&tiny(), &model);
    let weights = model.join("vae/diffusion_pytorch_model.safetensors");
    std::fs::remove_file(&weights).unwrap();
    std::fs::create_dir(&weights).unwrap();
    assert_fails_with(
        &generate_with_model(&model, dir.path(), &[]),
        "safetensors: expected a weights file, found a folder",
    );
    std::fs::remove_dir(&weights).unwrap();
    std::os::unix::fs::symlink("diffusion_pytorch_model.safetensors", &weights).unwrap();
    assert_fails_with(&generate_with_model(&model, dir.path(), &[]), "a symbolic link that loops");

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sessions/notes")).unwrap();
    std::fs::write(dir.path().join("sessions/notes/todo.txt"), "").unwrap();
    assert_fails_with(
        &sdlab_in(dir.path(), &["resume", "notes"]),
        "sessions/notes: a folder, but not a session (it has no session.json)",
    );
    let long = "a".repeat(241);
    assert_fails_with(
        &generate_in(dir.path(), &["--session", &long]),
        "session name of 241 bytes: expected at most 200",
    );

    let prompt = "fox ".repeat(30_000);
    let model = tiny();
    let out =
        sdlab_in(dir.path(), &["generate", "--model", model.to_str().unwrap(), "--prompt", &prompt, "--steps", "1"]);
    ok(&out);
    let note = stderr(&out).lines().find(|l| l.starts_with("note: the prompt is longer")).unwrap().to_string();
    assert!(note.ends_with(&format!("fox fox … and {} more", 30_000 - 75 - 12)), "{note}");
    assert!(note.len() < 200, "{note}");

    let bench = |extra: &[&str]| {
        let mut args = vec!["bench", "--model", model.to_str().unwrap()];
        args.extend_from_slice(extra);
        sdlab(&args)
    };
    assert_fails_with(&bench(&["--steps", "0"]), "--steps 0: expected 1 to 1000");
    assert_fails_with(&bench(&["--repeats", "0"]), "invalid value '0' for '--repeats <REPEATS>': 0 is not in 1..=1000");
}

/// Point 11: outputs get the umask's mode (or keep theirs), and `resume NAME`
/// looks under `--dir` only.
#[test]
fn outputs_honour_the_umask_and_names_stay_under_dir() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_sdlab");
    let model = tiny();
    let run = |umask: &str, out: &str| {
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" generate --model \"$1\" --prompt fox --steps 1 --out \"$2\""))
            .args([bin, model.to_str().unwrap(), out])
            .current_dir(dir.path())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    };
    run("022", "a.png");
    assert_eq!(mode(&dir.path().join("a.png")), 0o644);
    run("002", "b.png");
    assert_eq!(mode(&dir.path().join("b.png")), 0o664);
    std::fs::set_permissions(dir.path().join("b.png"), std::fs::Permissions::from_mode(0o640)).unwrap();
    run("022", "b.png");
    assert_eq!(mode(&dir.path().join("b.png")), 0o640, "a replaced file keeps its mode");

    // A session folder in the working folder is not `resume NAME`'s session.
    ok(&generate_in(dir.path(), &["--session", "k", "--dir", "elsewhere", "--stop-at", "1"]));
    std::fs::rename(dir.path().join("elsewhere/k"), dir.path().join("k")).unwrap();
    let out = sdlab_in(dir.path(), &["resume", "k"]);
    assert_fails_with(
        &out,
        "sessions/k: no such session folder; a folder named k is here too: name it as ./k to resume it",
    );
    ok(&sdlab_in(dir.path(), &["resume", "./k"]));
}
