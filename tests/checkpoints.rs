//! Single-file checkpoints (the original CompVis names, as A1111 and ComfyUI share
//! them) and LoRA files, against diffusers' `from_single_file`, `load_lora_weights`
//! and `fuse_lora` on the same files.

mod common;

use common::trace::{check_trace, generate_trace};
use common::*;

fn run_dir(fixture_name: &str, run: &str) -> std::path::PathBuf {
    fixture(fixture_name).join(run)
}

/// The LoRA and scale a reference run fused, as `--lora FILE:SCALE`.
fn lora_arg(fixture_name: &str, run: &str) -> String {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir(fixture_name, run).join("run.json")).unwrap()).unwrap();
    let file = fixture(fixture_name).join(json["lora"].as_str().unwrap());
    format!("{}:{}", file.display(), json["lora_scale"])
}

fn check(fixture_name: &str, file: &str, run: &str, with_lora: bool) {
    let dir = tempfile::tempdir().unwrap();
    let lora = with_lora.then(|| lora_arg(fixture_name, run));
    let extra: Vec<&str> = lora.iter().flat_map(|l| ["--lora", l.as_str()]).collect();
    let model = fixture(fixture_name).join(file);
    let ours = generate_trace(&model, &run_dir(fixture_name, run), "ddim", &extra, dir.path());
    check_trace(&format!("{fixture_name} {run}"), &ours, &model, &run_dir(fixture_name, run), "ddim", dir.path());
}

#[test]
fn an_sd15_single_file_matches_diffusers_from_single_file() {
    check("sd15-shaped", "tiny-sd15-shaped.safetensors", "run-plain", false);
}

#[test]
fn a_kohya_lora_matches_diffusers_fuse_lora() {
    check("sd15-shaped", "tiny-sd15-shaped.safetensors", "run-lora", true);
}

#[test]
fn a_peft_lora_matches_diffusers_fuse_lora() {
    check("sd15-shaped", "tiny-sd15-shaped.safetensors", "run-peft", true);
}

fn sdlab_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sdlab")).current_dir(dir).args(args).output().unwrap()
}

/// A `.ckpt` is read by a pickle reader that never calls what the pickle names:
/// this one would `touch sdlab-pickle-ran` if unpickled by Python's own reader.
#[test]
fn a_pickle_checkpoint_never_runs_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let evil = fixture("evil-ckpt/evil.ckpt");
    let out = sdlab_in(dir.path(), &["generate", "--model", evil.to_str().unwrap(), "--prompt", "x", "--steps", "1"]);
    let msg = stderr(&out);
    assert!(!out.status.success());
    assert!(!dir.path().join("sdlab-pickle-ran").exists(), "the pickle's command ran");
    // it was read (its VAE found), and refused for what it lacks
    assert!(msg.contains("evil.ckpt: not an SD 1.x/2.x checkpoint"), "{msg}");
    assert!(msg.contains("found 244 tensors such as first_stage_model."), "{msg}");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "nothing written");
}

/// The run's LoRA (file, sha256, scale) is in the PNG's text, A1111's `<lora:NAME:SCALE>`
/// included, and `resume image.png` reruns it to the same pixels; a changed LoRA file is refused.
#[test]
fn a_png_remembers_its_lora_and_reruns_to_the_same_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let lora_file = dir.path().join("tiny-lora.safetensors");
    std::fs::copy(fixture("sd15-shaped/tiny-lora.safetensors"), &lora_file).unwrap();
    let model = fixture("sd15-shaped/tiny-sd15-shaped.safetensors");
    let png = dir.path().join("fox.png");
    let lora = format!("{}:0.8", lora_file.display());
    let args = ["generate", "--model", model.to_str().unwrap(), "--lora", &lora, "--prompt", "a fox", "--steps", "3"];
    let sizes = ["--width", "64", "--height", "64", "--out", png.to_str().unwrap()];
    let out = sdlab(&[&args[..], &sizes[..]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read(&png).unwrap();
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("a fox <lora:tiny-lora:0.8>"), "A1111 parameters name the LoRA");
    assert!(text.contains("Lora hashes: \"tiny-lora: "), "and its hash");

    let again = dir.path().join("again.png");
    let out = sdlab(&["resume", png.to_str().unwrap(), "--out", again.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (a, b) = (image::open(&png).unwrap().to_rgb8(), image::open(&again).unwrap().to_rgb8());
    assert_eq!(a.as_raw(), b.as_raw(), "the rerun draws the same pixels");

    // the same name, other content: not the run's LoRA
    std::fs::copy(fixture("sd15-shaped/peft-lora.safetensors"), &lora_file).unwrap();
    let out = sdlab(&["resume", png.to_str().unwrap(), "--out", again.to_str().unwrap()]);
    let msg = stderr(&out);
    assert!(!out.status.success());
    assert!(msg.contains("the run was made with") && msg.contains("tiny-lora.safetensors:0.8 (sha256"), "{msg}");
}

/// Bad files get errors naming the file and what was found.
#[test]
fn other_files_are_refused_with_what_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let save = |name: &str, keys: &[&str]| {
        let t = candle_core::Tensor::zeros((2, 2), candle_core::DType::F16, &candle_core::Device::Cpu).unwrap();
        let map: std::collections::HashMap<String, candle_core::Tensor> =
            keys.iter().map(|k| (k.to_string(), t.clone())).collect();
        candle_core::safetensors::save(&map, path(name)).unwrap();
    };
    save("sdxl.safetensors", &["conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight"]);
    save("sd3.safetensors", &["model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"]);
    // the x4 upscaler: SD 2.x's text encoder, a UNet taking 7 channels (latent + low-res picture)
    let cpu = candle_core::Device::Cpu;
    let upscaler: std::collections::HashMap<String, candle_core::Tensor> = [
        ("cond_stage_model.model.token_embedding.weight", (4, 2, 1, 1)),
        ("model.diffusion_model.input_blocks.0.0.weight", (8, 7, 3, 3)),
    ]
    .into_iter()
    .map(|(k, s)| (k.to_string(), candle_core::Tensor::zeros(s, candle_core::DType::F16, &cpu).unwrap()))
    .collect();
    candle_core::safetensors::save(&upscaler, path("x4-upscaler.safetensors")).unwrap();
    let sd15 = fixture("sd15-shaped/tiny-sd15-shaped.safetensors");
    let bytes = std::fs::read(&sd15).unwrap();
    std::fs::write(path("truncated.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let sd2_lora = fixture("sd2-shaped/tiny-lora.safetensors");
    let png = path("x.png");
    let generate = |model: &std::path::Path, extra: &[&str]| {
        let mut args = vec!["generate", "--model", model.to_str().unwrap(), "--prompt", "x", "--steps", "1"];
        args.extend_from_slice(extra);
        args.extend(["--out", png.to_str().unwrap()]);
        let out = sdlab(&args);
        assert!(!out.status.success());
        stderr(&out)
    };
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            generate(&path("sdxl.safetensors"), &[]),
            vec!["sdxl.safetensors: an SDXL checkpoint", "conditioner.embedders.*"],
        ),
        (generate(&path("sd3.safetensors"), &[]), vec!["an SD3 checkpoint"]),
        (
            generate(&path("x4-upscaler.safetensors"), &[]),
            vec![
                "x4-upscaler.safetensors: model.diffusion_model.input_blocks.0.0.weight: 7 input channels",
                "upscaler",
            ],
        ),
        (generate(&path("truncated.safetensors"), &[]), vec!["truncated.safetensors: not a valid safetensors file"]),
        (generate(&fixture("sd15-shaped/tiny-lora.safetensors"), &[]), vec!["a LoRA (pass it with --lora)"]),
        (
            generate(&sd15, &["--lora", sd2_lora.to_str().unwrap()]),
            vec!["sd2-shaped/tiny-lora.safetensors: lora_", "does not fit", "(a LoRA for another model?)"],
        ),
        (generate(&sd15, &["--lora", sd15.to_str().unwrap()]), vec!["tiny-sd15-shaped.safetensors: not a LoRA"]),
        (
            generate(&sd15, &["--lora", "nowhere.safetensors:0.5"]),
            vec!["--lora nowhere.safetensors:0.5: no file nowhere.safetensors"],
        ),
        (generate(&sd15, &["--prediction-type", "x0"]), vec!["--prediction-type x0: expected one of epsilon"]),
    ];
    for (msg, wanted) in cases {
        for w in wanted {
            assert!(msg.contains(w), "expected {w:?} in: {msg}");
        }
        assert!(!msg.contains("panicked"), "{msg}");
    }
    assert!(!png.exists());
}

/// SD 2.x's OpenCLIP names (q/k/v fused, one more layer than used), linear
/// projections, 64-wide heads; taken as v-prediction, as diffusers takes it.
#[test]
fn an_sd2_single_file_matches_diffusers_from_single_file() {
    check("sd2-shaped", "tiny-sd2-shaped.safetensors", "run-plain", false);
}

#[test]
fn a_kohya_lora_on_sd2_matches_diffusers_fuse_lora() {
    check("sd2-shaped", "tiny-sd2-shaped.safetensors", "run-lora", true);
}

/// `--config DIR`: the diffusers folder's configs and tokenizer, as
/// `from_single_file(config=DIR)` takes them, give the same run.
#[test]
fn a_single_file_with_its_diffusers_configs_matches_diffusers() {
    let dir = tempfile::tempdir().unwrap();
    let config = fixture("sd2-shaped/config");
    let run = run_dir("sd2-shaped", "run-plain");
    let model = fixture("sd2-shaped/tiny-sd2-shaped.safetensors");
    let ours = generate_trace(&model, &run, "ddim", &["--config", config.to_str().unwrap()], dir.path());
    check_trace("sd2-shaped --config", &ours, &model, &run, "ddim", dir.path());
    // a folder model has its own configs
    let out = sdlab(&[
        "generate",
        "--model",
        fixture("sd2-tiny/model").to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--prompt",
        "x",
        "--out",
        dir.path().join("x.png").to_str().unwrap(),
    ]);
    let msg = stderr(&out);
    assert!(msg.contains("only a single-file checkpoint takes its configs from a folder"), "{msg}");
}

/// What a file holds unused is listed (SD 2.x's last text layer, its projection);
/// a tensor the model needs and the file lacks is named by both names.
#[test]
fn unused_and_missing_tensors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("x.png");
    let model = fixture("sd2-shaped/tiny-sd2-shaped.safetensors");
    let args = ["--prompt", "x", "--steps", "1", "--width", "64", "--height", "64", "--out", png.to_str().unwrap()];
    let out = sdlab(&[&["generate", "--model", model.to_str().unwrap()][..], &args[..]].concat());
    let msg = stderr(&out);
    assert!(out.status.success(), "{msg}");
    assert!(msg.contains("tiny-sd2-shaped.safetensors: ignored 14 tensors no model uses:"), "{msg}");
    assert!(msg.contains("cond_stage_model.model.transformer.resblocks.2.* (12)"), "{msg}");
    assert!(msg.contains("cond_stage_model.model.text_projection"), "{msg}");

    let mut tensors =
        candle_core::safetensors::load(fixture("sd15-shaped/tiny-sd15-shaped.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    tensors.remove("model.diffusion_model.output_blocks.5.2.conv.weight").unwrap();
    let damaged = dir.path().join("damaged.safetensors");
    candle_core::safetensors::save(&tensors, &damaged).unwrap();
    let out = sdlab(&[&["generate", "--model", damaged.to_str().unwrap()][..], &args[..]].concat());
    let msg = stderr(&out);
    assert!(!out.status.success());
    assert!(
        msg.contains("missing tensor up_blocks.1.upsamplers.0.conv.weight (looked for model.diffusion_model.output_blocks.5.2.conv.weight)"),
        "{msg}"
    );
}

/// LoRA keys that name nothing in the model are listed, not silently dropped; a
/// session records the LoRA, and `resume` goes on with it fused.
#[test]
fn unmatched_lora_keys_are_listed_and_a_session_keeps_its_lora() {
    let dir = tempfile::tempdir().unwrap();
    let cpu = candle_core::Device::Cpu;
    let mut lora = candle_core::safetensors::load(fixture("sd15-shaped/tiny-lora.safetensors"), &cpu).unwrap();
    let t = candle_core::Tensor::zeros((4, 8), candle_core::DType::F16, &cpu).unwrap();
    lora.insert("lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight".into(), t.clone());
    lora.insert(
        "lora_unet_down_blocks_9_attentions_0_proj_in.lora_up.weight".into(),
        t.t().unwrap().contiguous().unwrap(),
    );
    let file = dir.path().join("extra.safetensors");
    candle_core::safetensors::save(&lora, &file).unwrap();
    let model = fixture("sd15-shaped/tiny-sd15-shaped.safetensors");
    let sessions = dir.path().join("sessions");
    let lora = format!("{}:0.5", file.display());
    let run = ["generate", "--model", model.to_str().unwrap(), "--lora", &lora, "--prompt", "a fox", "--steps", "3"];
    let run = [&run[..], &["--width", "64", "--height", "64"]].concat();
    let stopped = ["--session", "fox", "--dir", sessions.to_str().unwrap(), "--stop-at", "1"];
    let out = sdlab(&[&run[..], &stopped[..]].concat());
    let msg = stderr(&out);
    assert!(out.status.success(), "{msg}");
    assert!(msg.contains("extra.safetensors: 1 of "), "{msg}");
    assert!(
        msg.contains("match nothing in this model and were not applied: lora_unet_down_blocks_9_attentions_0_proj_in"),
        "{msg}"
    );
    let json = std::fs::read_to_string(sessions.join("fox/session.json")).unwrap();
    assert!(
        json.contains("\"loras\"") && json.contains("extra.safetensors") && json.contains("\"scale\": 0.5"),
        "{json}"
    );
    let png = dir.path().join("fox.png");
    let out = sdlab(&["resume", "fox", "--dir", sessions.to_str().unwrap(), "--out", png.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // the same three steps in one go, with the LoRA, give the same picture
    let whole = dir.path().join("whole.png");
    let out = sdlab(&[&run[..], &["--out", whole.to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let (a, b) = (image::open(&png).unwrap().to_rgb8(), image::open(&whole).unwrap().to_rgb8());
    assert_eq!(a.as_raw(), b.as_raw());
}

/// On the CPU the text encoder's weights go once a prompt is encoded (a quarter of
/// an SD pipeline's memory) and are built again for the next prompt: from a single
/// file with a LoRA, the rebuilt encoder gives the first one's embeddings bit for
/// bit, LoRA included.
#[test]
fn the_text_encoder_is_released_after_a_prompt_and_rebuilt_alike() {
    use sdlab::model::lora::LoraSpec;
    use sdlab::model::{self, LoadOptions, Progress, Runtime};
    use sdlab::session::{Session, Settings};
    use std::sync::Arc;

    let file = fixture("sd15-shaped/tiny-sd15-shaped.safetensors");
    let open = |loras: Vec<LoraSpec>| {
        let options = LoadOptions { loras, ..LoadOptions::default() };
        Arc::new(model::open_with(file.to_str().unwrap(), None, options, Runtime::cpu(), &Progress::Quiet).unwrap())
    };
    let embeds = |model: &Arc<sdlab::model::StableDiffusion>| {
        let mut session = Session::new(model.clone(), Settings::new("a red cube", 64)).unwrap();
        session.encode_prompt().unwrap().prompt_embeds.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    let with_lora = open(vec![LoraSpec::parse(&lora_arg("sd15-shaped", "run-lora")).unwrap()]);
    assert!(with_lora.text_encoder.is_resident());
    let first = embeds(&with_lora);
    assert!(!with_lora.text_encoder.is_resident(), "kept after encoding");
    let rebuilt = embeds(&with_lora);
    assert!(!with_lora.text_encoder.is_resident());
    assert_eq!(first, rebuilt);
    let plain = embeds(&open(Vec::new()));
    let moved = first.iter().zip(&plain).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(moved > 1e-3, "the LoRA changed the embeddings by only {moved}");
}
