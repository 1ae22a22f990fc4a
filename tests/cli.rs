//! The `sdlab` command as a user meets it: bad input gets one clear line and a
//! non-zero exit, never a panic; `tokens` and hub-cache loading work offline.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A private copy of a fixture's model folder that a test may break.
fn model_copy(dir: &Path) -> PathBuf {
    let to = dir.join("model");
    copy_dir(&fixture("sd2-tiny").join("model"), &to);
    to
}

fn generate(model: &Path, extra: &[&str], out_dir: &Path) -> std::process::Output {
    let png = out_dir.join("out.png");
    let mut args =
        vec!["generate", "--model", model.to_str().unwrap(), "--prompt", "a fox", "--out", png.to_str().unwrap()];
    if !extra.contains(&"--steps") {
        args.extend(["--steps", "2"]);
    }
    args.extend_from_slice(extra);
    sdlab(&args)
}

/// The error is one line that contains `expected`, the exit code is not 0, nothing panicked.
fn assert_clear_error(out: &std::process::Output, expected: &str) {
    let err = stderr(out);
    println!("stderr: {err}");
    assert!(!out.status.success(), "expected failure, got success");
    assert!(!err.contains("panicked"), "panicked: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(expected), "expected {expected:?} in {err:?}");
}

#[test]
fn missing_model_folder() {
    let out = generate(Path::new("/no/such/model"), &[], Path::new("/tmp"));
    assert_clear_error(&out, "--model /no/such/model: expected a diffusers folder");
}

#[test]
fn missing_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_copy(dir.path());
    std::fs::remove_file(model.join("unet/config.json")).unwrap();
    assert_clear_error(&generate(&model, &[], dir.path()), "unet/config.json: missing");
}

#[test]
fn config_with_a_wrong_field() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_copy(dir.path());
    let path = model.join("unet/config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace("\"cross_attention_dim\": 32", "\"cross_attention_dim\": \"wide\"");
    std::fs::write(&path, text).unwrap();
    assert_clear_error(
        &generate(&model, &[], dir.path()),
        "unet/config.json: field `cross_attention_dim`: invalid type: string \"wide\", expected usize",
    );
}

#[test]
fn config_with_a_missing_field() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_copy(dir.path());
    let path = model.join("vae/config.json");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    json.as_object_mut().unwrap().remove("block_out_channels");
    std::fs::write(&path, json.to_string()).unwrap();
    assert_clear_error(&generate(&model, &[], dir.path()), "vae/config.json: missing field `block_out_channels`");
}

#[test]
fn truncated_weights() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_copy(dir.path());
    let path = model.join("unet/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert_clear_error(
        &generate(&model, &[], dir.path()),
        "unet/diffusion_pytorch_model.safetensors: not a valid safetensors file",
    );
}

#[test]
fn width_not_divisible_by_the_vae_factor() {
    let dir = tempfile::tempdir().unwrap();
    let out = generate(&fixture("sd2-tiny").join("model"), &["--width", "63"], dir.path());
    assert_clear_error(&out, "--width 63: expected a positive multiple of 2");
}

#[test]
fn zero_steps() {
    let dir = tempfile::tempdir().unwrap();
    let out = generate(&fixture("sd2-tiny").join("model"), &["--steps", "0"], dir.path());
    assert_clear_error(&out, "--steps 0: expected 1 to 1000");
}

#[test]
fn unknown_scheduler() {
    let dir = tempfile::tempdir().unwrap();
    let out = generate(&fixture("sd2-tiny").join("model"), &["--scheduler", "dpm_fast"], dir.path());
    assert_clear_error(
        &out,
        "unknown scheduler \"dpm_fast\": expected one of ddim, pndm, lms, heun, euler, euler_karras, euler_a, dpmpp_2m, dpmpp_2m_karras, unipc, lcm, or model",
    );
    assert_eq!(out.status.code(), Some(2));
}

/// Talk mode's options say what they accept before any terminal or model is touched.
#[test]
fn unknown_talk_language_or_theme() {
    let out = sdlab(&["tui", "--talk", "--lang", "xx"]);
    assert_clear_error(&out, "--lang xx: expected en (English) or ja (Japanese)");
    assert_eq!(out.status.code(), Some(2));
    let out = sdlab(&["tui", "--talk", "--theme", "neon"]);
    assert_clear_error(&out, "--theme neon: expected auto, light, dark or high-contrast");
}

#[test]
fn tokens_of_the_talk_prompt() {
    let model = fixture("sd2-tiny").join("model");
    let run = run_json("sd2-tiny");
    let out = sdlab(&["tokens", "--model", model.to_str().unwrap(), "--prompt", &run.prompt, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<u64> = json["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    let mut expected = vec![
        49406, 3086, 24970, 518, 2102, 267, 5610, 267, 1158, 267, 1486, 2631, 267, 275, 330, 267, 6353, 794, 49407,
    ];
    expected.resize(77, 0);
    assert_eq!(ids, expected);

    let table = sdlab(&["tokens", "--model", model.to_str().unwrap(), "--prompt", &run.prompt]);
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.contains("49406  <|startoftext|>"), "{table}");
    assert!(table.contains("PAD x 58 (19..76)"), "{table}");
}

/// The hub path on a machine with no network: a Hugging Face cache laid out as
/// huggingface_hub writes it, read with HF_HUB_OFFLINE=1 and HF_HOME.
#[test]
fn loads_a_repo_from_the_hugging_face_cache_offline() {
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("hub/models--sdlab--tiny-sd2");
    copy_dir(&fixture("sd2-tiny").join("model"), &repo.join("snapshots/0123abcd"));
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();

    let run = |model: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sdlab"))
            .args(["tokens", "--model", model, "--prompt", "a fox", "--json"])
            .env("HF_HOME", home.path())
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap()
    };
    let out = run("sdlab/tiny-sd2");
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["ids"][0], 49406);

    let out = run("sdlab/not-cached");
    assert_clear_error(&out, "sdlab/not-cached: HF_HUB_OFFLINE is set and the model is not in the Hugging Face cache");
}

/// `sdlab bench --json` as CI runs it: a smoke test of the fields, not of the times.
#[test]
fn bench_prints_one_json_line_with_every_stage() {
    let model = fixture("sd2-tiny").join("model");
    let out = sdlab(&["bench", "--model", model.to_str().unwrap(), "--steps", "2", "--repeats", "1", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.trim_end().lines().count(), 1, "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    for key in ["load_s", "encode_s", "decode_s", "tokenize_s", "latent_s", "scheduler_s", "preview_s", "peak_rss_mb"] {
        let value = json[key].as_f64().unwrap_or_else(|| panic!("{key} is not a number in {json}"));
        assert!(value.is_finite() && value >= 0.0, "{key} = {value}");
    }
    let steps = json["step_s"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert!(steps.iter().all(|s| s.as_f64().is_some_and(|s| s > 0.0)));
    assert!(json["peak_rss_mb"].as_f64().unwrap() > 1.0);
    assert_eq!((json["width"].as_u64(), json["height"].as_u64()), (Some(64), Some(64)));
    assert_eq!(json["device"], "cpu");
    assert!(json["peak_device_mb"].is_null(), "peak_device_mb on the CPU: {json}");
}

/// The README's first command: no `--model`, an empty working folder, an empty
/// home (no Hugging Face cache), offline. It draws with the built-in `shapes`,
/// the same picture as `shapes`'s folder in the repository gives.
#[test]
fn the_first_run_needs_no_files_and_no_network() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let prompt = "a big yellow star on the right, on a purple background";
    let run = |model: Option<&Path>, out: &str| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sdlab"));
        cmd.current_dir(dir.path()).env_clear().env("HOME", &home).env("HF_HUB_OFFLINE", "1");
        cmd.args(["generate", "--prompt", prompt, "--out", out]);
        if let Some(model) = model {
            // A folder is not known by name: it gets diffusers' defaults unless told.
            cmd.args(["--model", model.to_str().unwrap(), "--steps", "20", "--guidance", "2"]);
        }
        let result = cmd.output().unwrap();
        assert!(result.status.success(), "{}", stderr(&result));
        image::open(dir.path().join(out)).unwrap().to_rgb8()
    };
    let builtin = run(None, "star.png");
    assert_eq!(builtin.dimensions(), (64, 64));
    let bytes = std::fs::read(dir.path().join("star.png")).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("Steps: 20, Sampler: DDIM, CFG scale: 2"), "the suggested settings are used");
    assert!(text.contains("Model: shapes"), "the model is named shapes");
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/shapes/model");
    assert_eq!(builtin, run(Some(&folder), "from-folder.png"), "built in and on disk differ");
}

/// `sdlab bench --model shapes` says what a whole run at its suggested 20 steps costs.
#[test]
fn bench_reports_a_whole_run_of_the_built_in_model() {
    let out = sdlab(&["bench", "--model", "shapes", "--steps", "3", "--repeats", "1", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["run_steps"], 20);
    let parts = ["load_s", "encode_s", "decode_s"].map(|k| json[k].as_f64().unwrap());
    let steps: Vec<f64> = json["step_s"].as_array().unwrap().iter().map(|s| s.as_f64().unwrap()).collect();
    let mut sorted = steps.clone();
    sorted.sort_by(f64::total_cmp);
    let run_s = json["run_s"].as_f64().unwrap();
    // The run is the sum of its measured parts (the one-off stages as medians).
    assert!(run_s > parts[0] + 20.0 * sorted[1], "{json}");
    assert_eq!((json["width"].as_u64(), json["height"].as_u64()), (Some(64), Some(64)));
}

#[test]
fn scheduler_model_names_the_class_it_cannot_run() {
    // `model` takes the class the model's config names; KDPM2 is not computed
    let dir = tempfile::tempdir().unwrap();
    let model = model_copy(dir.path());
    let config = model.join("scheduler/scheduler_config.json");
    let text = std::fs::read_to_string(&config).unwrap().replace("DDIMScheduler", "KDPM2DiscreteScheduler");
    std::fs::write(&config, text).unwrap();
    let out = generate(&model, &["--scheduler", "model"], dir.path());
    assert_clear_error(&out, "--scheduler model: the model's scheduler_config.json names KDPM2DiscreteScheduler");
    assert!(stderr(&out).contains("dpmpp_2m_karras"));
    assert!(!dir.path().join("out.png").exists());
}

/// Image to image's inputs: the strength's range, a picture that is missing, not
/// a picture, or of another size than asked.
#[test]
fn image_to_image_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("sd2-tiny").join("model");
    let input = fixture("sd2-tiny").join("samplers/img2img/ddim/input.png");
    let input = input.to_str().unwrap();
    for (strength, expected) in [
        ("0", "--strength 0.0: expected a number above 0 and at most 1"),
        ("1.5", "--strength 1.5: expected a number above 0 and at most 1"),
        ("NaN", "--strength NaN: expected a number above 0 and at most 1"),
        ("-0.5", "--strength -0.5: expected a number above 0 and at most 1"),
    ] {
        let out = generate(&model, &["--init-image", input, "--strength", strength], dir.path());
        assert_clear_error(&out, expected);
    }
    // 2 steps x 0.3 keeps no step
    let out = generate(&model, &["--init-image", input, "--strength", "0.3"], dir.path());
    assert_clear_error(&out, "--strength 0.3: expected at least 1 / steps: with 2 steps it keeps int(2 x 0.3) = 0");
    let out = generate(&model, &["--init-image", "/no/such/picture.png"], dir.path());
    assert_clear_error(&out, "/no/such/picture.png");
    let not_a_picture = dir.path().join("notes.png");
    std::fs::write(&not_a_picture, "not a picture").unwrap();
    let out = generate(&model, &["--init-image", not_a_picture.to_str().unwrap()], dir.path());
    assert_clear_error(&out, "notes.png: cannot read the picture");
    let out = generate(&model, &["--init-image", input, "--width", "32"], dir.path());
    assert_clear_error(&out, "--width 32: image to image takes the picture's size, 64x64");
    let out = generate(&model, &["--strength", "0.5"], dir.path());
    assert!(!out.status.success() && stderr(&out).contains("--init-image"), "{}", stderr(&out));
}

/// A picture whose sides are not multiples of the VAE factor is resized, with a note.
#[test]
fn image_to_image_resizes_an_odd_sized_picture_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let picture = dir.path().join("odd.png");
    image::RgbImage::from_pixel(37, 21, image::Rgb([200, 30, 30])).save(&picture).unwrap();
    let out = generate(&fixture("sd2-tiny").join("model"), &["--init-image", picture.to_str().unwrap()], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("37x21 is not a multiple of 2 (the VAE factor); resized to 36x20"),
        "{}",
        stderr(&out)
    );
    let made = image::open(dir.path().join("out.png")).unwrap();
    assert_eq!((made.width(), made.height()), (36, 20));
}

/// An image-to-image PNG remembers its picture and strength: `resume image.png`
/// makes the same pixels again, and refuses clearly once the picture has changed.
#[test]
fn an_image_to_image_png_reruns_and_notices_a_changed_picture() {
    let dir = tempfile::tempdir().unwrap();
    let picture = dir.path().join("start.png");
    std::fs::copy(fixture("sd2-tiny").join("samplers/img2img/ddim/input.png"), &picture).unwrap();
    let model = fixture("sd2-tiny").join("model");
    let args =
        ["--init-image", picture.to_str().unwrap(), "--strength", "0.5", "--steps", "4", "--scheduler", "euler_a"];
    let out = generate(&model, &args, dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let png = dir.path().join("out.png");
    let chunks = sdlab::png_meta::read_text_chunks(&std::fs::read(&png).unwrap()).unwrap();
    let parameters = &chunks.iter().find(|(k, _)| k == "parameters").unwrap().1;
    assert!(parameters.contains("Denoising strength: 0.5") && parameters.contains("Sampler: Euler a"), "{parameters}");
    let again = dir.path().join("again.png");
    let out = sdlab(&["resume", png.to_str().unwrap(), "--out", again.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (a, b) = (image::open(&png).unwrap().to_rgb8(), image::open(&again).unwrap().to_rgb8());
    assert!(a.as_raw() == b.as_raw(), "the rerun made other pixels");
    image::RgbImage::from_pixel(64, 64, image::Rgb([0, 0, 0])).save(&picture).unwrap();
    let out = sdlab(&["resume", png.to_str().unwrap(), "--out", again.to_str().unwrap()]);
    assert_clear_error(&out, "are not the picture the run was made with");
}
