//! Session folders: saved, resumed bit for bit at every step, replayed without the
//! model, refused with one clear line when broken; PNGs that remember their settings.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use sdlab::model::{self, Progress, Runtime, StableDiffusion};
use sdlab::png_meta::{read_text_chunks, A1111Parameters, PARAMETERS_KEY, SDLAB_KEY};
use sdlab::scheduler::SamplerName;
use sdlab::session::picture::pixels_sha256;
use sdlab::session::store::{ImageSettings, OpenOptions, SaveOptions, SessionRecord};
use sdlab::session::trace::trace_tensors;
use sdlab::session::{Img2Img, Session, Settings, Stage};

fn open_model(dir: &Path) -> StableDiffusion {
    model::open(dir.to_str().unwrap(), None, Runtime::cpu(), &Progress::Quiet).unwrap()
}

fn settings(name: &str, eta: f64) -> Settings {
    let run = run_json(name);
    Settings {
        prompt: run.prompt,
        negative_prompt: run.negative_prompt,
        seed: run.seed,
        steps: run.steps,
        guidance_scale: run.guidance_scale,
        eta,
        width: run.width,
        height: run.height,
        scheduler: Default::default(),
        img2img: None,
    }
}

/// The trace as bytes: equal bytes mean every intermediate is equal, bit for bit.
fn trace_bytes(s: &Session) -> Vec<u8> {
    let tensors = trace_tensors(s).unwrap();
    safetensors::serialize(tensors.iter().map(|(n, t)| (*n, t)), None).unwrap()
}

fn finish(s: &mut Session) {
    let calls = s.calls();
    s.run_to(calls).unwrap();
    s.vae_decode().unwrap();
}

/// A 10-step run resumes exactly at every step (see [`exact_resume_with`]).
fn exact_resume_at_every_step(name: &str, eta: f64) {
    exact_resume_with(name, Settings { eta, steps: 10, ..settings(name, eta) });
}

/// For every stop K of the run's calls, a session saved at K, then opened on a
/// freshly loaded model and finished, gives the uninterrupted run's trace exactly.
/// The sessions are saved along one run (saving does not change a run); each is
/// resumed on its own. 32x32 images keep the resumes quick.
fn exact_resume_with(name: &str, settings: Settings) {
    exact_resume_from(name, settings, None)
}

/// [`exact_resume_with`], image to image from `picture` (32x32) where given.
fn exact_resume_from(name: &str, settings: Settings, picture: Option<image::RgbImage>) {
    let (eta, scheduler) = (settings.eta, settings.scheduler);
    let model_dir = fixture(name).join("model");
    let img2img =
        picture.as_ref().map(|p| Img2Img { image: "picture.png".into(), sha256: pixels_sha256(p), strength: 0.6 });
    let settings = Settings { width: 32, height: 32, img2img, ..settings };
    let tmp = tempfile::tempdir().unwrap();
    let mut straight = Session::new(open_model(&model_dir), settings).unwrap();
    if let Some(picture) = picture {
        straight.set_init_image(picture).unwrap();
    }
    straight.encode_prompt().unwrap();
    straight.get_latent().unwrap();
    let calls = straight.calls();
    for k in 0..=calls {
        straight.run_to(k).unwrap();
        straight.save(&tmp.path().join(format!("stop-{k}")), SaveOptions::default()).unwrap();
    }
    straight.vae_decode().unwrap();
    let expected = trace_bytes(&straight);
    drop(straight);

    for k in 0..=calls {
        let dir = tmp.path().join(format!("stop-{k}"));
        let opened = Session::open(&dir, open_model(&model_dir), OpenOptions::default()).unwrap();
        assert!(opened.warnings.is_empty(), "{:?}", opened.warnings);
        let mut s = opened.session;
        assert_eq!(s.history().len(), k);
        finish(&mut s);
        assert!(trace_bytes(&s) == expected, "{name} {scheduler} eta {eta}: resumed at step {k} differs");
    }
    println!(
        "{name} {scheduler} eta {eta}: resumed at each of steps 0..={calls}, all {} traces equal the uninterrupted one",
        calls + 1
    );
}

#[test]
fn exact_resume_at_every_step_with_eta() {
    exact_resume_at_every_step("sd15-tiny", 0.8);
}

#[test]
fn exact_resume_at_every_step_deterministic() {
    exact_resume_at_every_step("sd2-tiny", 0.0);
}

/// The ancestral sampler draws fresh noise each step from the run's generator,
/// Karras sigmas give fractional timesteps, DPM++ 2M uses the previous step's x0,
/// UniPC the earlier x0s and its corrected latent,
/// PNDM the earlier predictions and the first latent, LMS the earlier derivatives,
/// Heun's second call its Euler call's slope and latent, LCM fresh noise: all
/// resume bit for bit.
#[test]
fn exact_resume_at_every_step_with_each_sampler() {
    for scheduler in [
        SamplerName::EulerA,
        SamplerName::EulerKarras,
        SamplerName::Dpmpp2mKarras,
        SamplerName::UniPc,
        SamplerName::Pndm,
        SamplerName::Lms,
        SamplerName::Heun,
        SamplerName::Lcm,
    ] {
        // 5 steps: each multistep solver's history is full by then (PNDM mixes 4)
        exact_resume_with("sd15-tiny", Settings { scheduler, steps: 5, ..settings("sd15-tiny", 0.0) });
    }
}

/// Image to image resumes bit for bit too: the picture and its latent are saved
/// with the session, the generator state after the picture's draw and the noise.
#[test]
fn exact_resume_of_image_to_image() {
    let picture = image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([(x * 8) as u8, (y * 8) as u8, 200]));
    for scheduler in [SamplerName::EulerA, SamplerName::Dpmpp2m, SamplerName::Lms, SamplerName::Heun] {
        let settings = Settings { scheduler, steps: 8, ..settings("sd15-tiny", 0.0) };
        exact_resume_from("sd15-tiny", settings, Some(picture.clone()));
    }
}

/// A session saved before anything ran resumes too (prompt and latent computed on resume).
#[test]
fn a_session_saved_at_the_start_resumes() {
    let model_dir = fixture("sd2-tiny").join("model");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fresh");
    let s = Session::new(open_model(&model_dir), settings("sd2-tiny", 0.0)).unwrap();
    s.save(&dir, SaveOptions::default()).unwrap();
    let record = SessionRecord::load(&dir).unwrap();
    assert_eq!(record.stage(), Stage::Start);
    let mut s = Session::from_record(open_model(&model_dir), record, OpenOptions::default()).unwrap().session;
    s.encode_prompt().unwrap();
    s.get_latent().unwrap();
    finish(&mut s);
    let mut straight = Session::new(open_model(&model_dir), settings("sd2-tiny", 0.0)).unwrap();
    straight.encode_prompt().unwrap();
    straight.get_latent().unwrap();
    finish(&mut straight);
    assert!(trace_bytes(&s) == trace_bytes(&straight));
}

/// The replay record of a finished session loads with the model folder deleted, and
/// holds every stage: tokens, embeddings, noise, each step's values, the image.
#[test]
fn replay_needs_no_model() {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("model");
    copy_dir(&fixture("sd2-tiny").join("model"), &model_dir);
    let dir = tmp.path().join("sessions/finished");
    let mut s = Session::new(open_model(&model_dir), settings("sd2-tiny", 0.3)).unwrap();
    s.encode_prompt().unwrap();
    s.get_latent().unwrap();
    finish(&mut s);
    s.save(&dir, SaveOptions::default()).unwrap();
    let expected = trace_bytes(&s);
    drop(s);
    std::fs::remove_dir_all(&model_dir).unwrap();

    let record = SessionRecord::load(&dir).unwrap();
    assert_eq!(record.stage(), Stage::VaeDecode);
    let enc = record.encoding.as_ref().unwrap();
    assert_eq!(enc.prompt.ids.len(), 77);
    assert_eq!(enc.prompt.tokens[0].text, "<|startoftext|>");
    assert_eq!(enc.prompt_embeds.dims(), [2, 77, 32]);
    assert_eq!(record.init_latents().unwrap().dims(), [1, 4, 32, 32]);
    let schedule = record.sampler().unwrap();
    assert_eq!(record.history.len(), 10);
    for (i, step) in record.history.iter().enumerate() {
        assert_eq!(step.index, i);
        assert_eq!(step.denoise.scheduler.timestep(), schedule.timesteps()[i]);
        assert!(step.denoise.noise_pred_uncond.is_some());
    }
    assert_eq!(record.image.as_ref().unwrap().dims(), [1, 3, 64, 64]);
    assert!(dir.join("images/final.png").is_file());
    // The record's tensors are the run's, bit for bit (the trace is built from a session;
    // compare the latents, x0 and image it is made of).
    let reference = safetensors::SafeTensors::deserialize(&expected).unwrap();
    let last = record.history.last().unwrap();
    let latents = reference.tensor("latents").unwrap();
    let row = latents.data().len() / 10;
    let got = last.denoise.scheduler.prev_sample().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let got: Vec<u8> = got.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert!(got == latents.data()[9 * row..]);
}

#[test]
fn png_chunks_and_parameters_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = fixture("sd2-tiny").join("model");
    let png = tmp.path().join("fox.png");
    let out = sdlab(&[
        "generate",
        "--model",
        model_dir.to_str().unwrap(),
        "--prompt",
        "a fox, in snow: at dawn",
        "--negative-prompt",
        "blurry",
        "--seed",
        "42",
        "--steps",
        "3",
        "--guidance",
        "6.5",
        "--eta",
        "0.25",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let chunks = read_text_chunks(&std::fs::read(&png).unwrap()).unwrap();
    let get = |key: &str| chunks.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap();
    let text = get(PARAMETERS_KEY);
    println!("{text}");
    let p = A1111Parameters::parse(&text);
    assert_eq!(p.prompt, "a fox, in snow: at dawn");
    assert_eq!(p.negative_prompt, "blurry");
    assert_eq!(p.number::<usize>("Steps").unwrap(), Some(3));
    assert_eq!(p.get("Sampler"), Some("DDIM"));
    assert_eq!(p.number::<f64>("CFG scale").unwrap(), Some(6.5));
    assert_eq!(p.number::<u64>("Seed").unwrap(), Some(42));
    assert_eq!(p.size().unwrap(), Some((64, 64)));
    assert_eq!(p.number::<f64>("Eta").unwrap(), Some(0.25));
    assert!(p.get("Model").unwrap().ends_with("sd2-tiny/model"));
    let exact = ImageSettings::from_json(&get(SDLAB_KEY)).unwrap();
    assert_eq!(exact.settings.prompt, "a fox, in snow: at dawn");
    assert_eq!(exact.guidance_scales, vec![6.5; 3]);
    assert_eq!(exact.settings.eta, 0.25);

    // `resume image.png` runs it again: same pixels, same chunks.
    let again = tmp.path().join("again.png");
    let out = sdlab(&["resume", png.to_str().unwrap(), "--out", again.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let a = image::open(&png).unwrap().to_rgb8();
    let b = image::open(&again).unwrap().to_rgb8();
    assert!(a == b, "the rebuilt run made another image");

    // A PNG with only an AUTOMATIC1111 `parameters` chunk works too (given the model).
    let a1111 = tmp.path().join("a1111.png");
    let params = "a fox, in snow: at dawn\nNegative prompt: blurry\nSteps: 3, Sampler: DDIM, CFG scale: 6.5, \
                  Seed: 42, Size: 64x64, Eta: 0.25, Model hash: 0123456789";
    std::fs::write(&a1111, sdlab::png_meta::encode_png(&a, &[(PARAMETERS_KEY, params)]).unwrap()).unwrap();
    let third = tmp.path().join("third.png");
    let out = sdlab(&[
        "resume",
        a1111.to_str().unwrap(),
        "--model",
        model_dir.to_str().unwrap(),
        "--out",
        third.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(image::open(&third).unwrap().to_rgb8() == a);
}

/// The command line round trip: stop at step 4, save, resume in a new process; the
/// trace equals an uninterrupted run's byte for byte.
#[test]
fn generate_stop_at_then_resume_in_another_process() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture("sd15-tiny").join("model");
    let root = tmp.path().join("sessions");
    let path = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let common = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "a ship at sunrise",
            "--seed",
            "7",
            "--steps",
            "10",
            "--eta",
            "0.6",
        ];
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = sdlab(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        out
    };
    run(common(&["--out", &path("straight.png"), "--trace", &path("straight.safetensors")]));
    let dir = root.to_str().unwrap().to_string();
    run(common(&["--out", &path("unused.png"), "--stop-at", "4", "--session", "ship", "--dir", &dir]));
    assert!(!tmp.path().join("unused.png").exists(), "a stopped run writes no image");
    let listing = run(vec!["sessions".into(), "--dir".into(), dir.clone()]);
    let listing = String::from_utf8(listing.stdout).unwrap();
    println!("{listing}");
    assert!(listing.contains("ship") && listing.contains("4/10") && listing.contains("a ship at sunrise"));

    run(vec![
        "resume".into(),
        "ship".into(),
        "--dir".into(),
        dir.clone(),
        "--trace".into(),
        path("resumed.safetensors"),
        "--out".into(),
        path("resumed.png"),
    ]);
    let straight = std::fs::read(tmp.path().join("straight.safetensors")).unwrap();
    let resumed = std::fs::read(tmp.path().join("resumed.safetensors")).unwrap();
    assert!(straight == resumed, "resumed trace differs from the uninterrupted one");
    assert!(root.join("ship/images/final.png").is_file());
    let record = SessionRecord::load(&root.join("ship")).unwrap();
    assert_eq!(record.stage(), Stage::VaeDecode);
    let listing = String::from_utf8(run(vec!["sessions".into(), "--dir".into(), dir]).stdout).unwrap();
    assert!(listing.contains("done"), "{listing}");
}

/// A small saved session (3 steps, stopped at 2, eta > 0) to break in various ways.
fn saved_session(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    let settings = Settings { steps: 3, ..settings("sd2-tiny", 0.3) };
    let mut s = Session::new(open_model(&fixture("sd2-tiny").join("model")), settings).unwrap();
    s.encode_prompt().unwrap();
    s.get_latent().unwrap();
    s.run_to(2).unwrap();
    s.save(&dir, SaveOptions::default()).unwrap();
    dir
}

fn edit_json(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("session.json");
    let mut json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut json);
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
}

fn edit_tensor(dir: &Path, name: &str, edit: impl FnOnce(candle_core::Tensor) -> candle_core::Tensor) {
    let path = dir.join("tensors.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
    let t = tensors.remove(name).unwrap();
    tensors.insert(name.to_string(), edit(t));
    candle_core::safetensors::save(&tensors, &path).unwrap();
}

/// The error is one line naming `expected`, the exit code is not 0, nothing panicked.
fn assert_clear_error(out: &std::process::Output, expected: &[&str]) {
    let err = stderr(out);
    println!("stderr: {err}");
    assert!(!out.status.success(), "expected failure, got success");
    assert!(!err.contains("panicked"), "panicked: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    for e in expected {
        assert!(err.contains(e), "expected {e:?} in {err:?}");
    }
}

#[test]
fn broken_sessions_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let dir = root.to_str().unwrap();
    type Break = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Break, Vec<&str>)> = vec![
        (
            "truncated-json",
            Box::new(|d| {
                let p = d.join("session.json");
                let b = std::fs::read(&p).unwrap();
                std::fs::write(&p, &b[..b.len() / 2]).unwrap();
            }),
            vec!["session.json: not valid JSON (EOF while parsing"],
        ),
        (
            "not-an-object",
            Box::new(|d| std::fs::write(d.join("session.json"), "[1, 2]").unwrap()),
            vec!["session.json: no \"format\" field: not an sdlab session"],
        ),
        (
            "missing-field",
            Box::new(|d| edit_json(d, |j| drop(j.as_object_mut().unwrap().remove("settings")))),
            vec!["session.json: missing field `settings`"],
        ),
        (
            "wrong-type",
            Box::new(|d| edit_json(d, |j| j["settings"]["seed"] = "many".into())),
            vec!["session.json: field `settings.seed`: invalid type: string \"many\""],
        ),
        (
            "unknown-format",
            Box::new(|d| edit_json(d, |j| j["format"] = "one".into())),
            vec!["session.json: unknown format \"one\": expected 1 to 2"],
        ),
        (
            "newer-format",
            Box::new(|d| edit_json(d, |j| j["format"] = 3.into())),
            vec!["session.json: format 3 was written by a newer sdlab", "upgrade sdlab"],
        ),
        (
            "missing-tensors",
            Box::new(|d| std::fs::remove_file(d.join("tensors.safetensors")).unwrap()),
            vec!["tensors.safetensors: cannot read"],
        ),
        (
            "truncated-tensors",
            Box::new(|d| {
                let p = d.join("tensors.safetensors");
                let b = std::fs::read(&p).unwrap();
                std::fs::write(&p, &b[..b.len() / 2]).unwrap();
            }),
            vec!["tensors.safetensors: not a valid safetensors file"],
        ),
        (
            "wrong-shape",
            Box::new(|d| edit_tensor(d, "steps.1.prev_sample", |t| t.narrow(3, 0, 16).unwrap())),
            vec!["tensors.safetensors: steps.1.prev_sample: unexpected shape [1, 4, 32, 16]"],
        ),
        (
            "wrong-dtype",
            Box::new(|d| edit_tensor(d, "init_latents", |t| t.to_dtype(candle_core::DType::F16).unwrap())),
            vec!["tensors.safetensors: init_latents: expected dtype f32, found f16"],
        ),
        (
            "missing-tensor",
            Box::new(|d| {
                let p = d.join("tensors.safetensors");
                let mut t = candle_core::safetensors::load(&p, &candle_core::Device::Cpu).unwrap();
                t.remove("steps.0.pred_epsilon");
                candle_core::safetensors::save(&t, &p).unwrap();
            }),
            vec!["tensors.safetensors: missing tensor steps.0.pred_epsilon"],
        ),
        (
            "short-generator",
            Box::new(|d| edit_json(d, |j| j["steps"][1]["generator"]["state"].as_array_mut().unwrap().truncate(5))),
            vec!["session.json: field `steps[1].generator`", "expected 624 words of MT19937 state, found 5"],
        ),
        (
            "wrong-timestep",
            Box::new(|d| edit_json(d, |j| j["steps"][0]["timestep"] = 3.into())),
            vec!["session.json: steps[0].timestep is 3, the schedule says"],
        ),
        (
            "other-model",
            Box::new(|d| edit_json(d, |j| j["model"]["fingerprint"] = "00ff".into())),
            vec!["session.json: model ", "has weights fingerprint", "(fingerprint 00ff); use --force to go on anyway"],
        ),
    ];
    for (name, break_it, expected) in &cases {
        println!("case {name}");
        let session = saved_session(root, name);
        break_it(&session);
        let out = sdlab(&["resume", name, "--dir", dir]);
        assert_clear_error(&out, expected);
        assert!(stderr(&out).contains(&format!("{name}/")), "the error names the session's file");
    }

    // With --force a different model is a warning, and the run goes on.
    let out = sdlab(&["resume", "other-model", "--dir", dir, "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning: model "), "{}", stderr(&out));
}

#[test]
fn sessions_are_never_overwritten_without_force_nor_written_outside_the_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let model = fixture("sd2-tiny").join("model");
    let png = tmp.path().join("x.png");
    let generate = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "a fox",
            "--steps",
            "2",
            "--dir",
            dir,
            "--out",
            png.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        sdlab(&args)
    };
    assert!(generate(&["--session", "fox"]).status.success());
    let before = std::fs::read(tmp.path().join("fox/session.json")).unwrap();
    assert_clear_error(
        &generate(&["--session", "fox"]),
        &["fox: a session is already saved here; use --force to replace it"],
    );
    assert_eq!(std::fs::read(tmp.path().join("fox/session.json")).unwrap(), before);
    let out = generate(&["--session", "fox", "--force", "--seed", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(std::fs::read(tmp.path().join("fox/session.json")).unwrap(), before);
    // no temporary folders are left behind
    let names: Vec<String> =
        std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");

    for bad in ["../escape", "/tmp/abs", "a/b", ".."] {
        assert_clear_error(&generate(&["--session", bad]), &[&format!("session name {bad:?}: expected a plain name")]);
    }
    // A folder that is not a session is never replaced, even with --force.
    std::fs::create_dir_all(tmp.path().join("photos")).unwrap();
    std::fs::write(tmp.path().join("photos/cat.jpg"), b"cat").unwrap();
    assert_clear_error(&generate(&["--session", "photos", "--force"]), &["photos: exists and is not a session folder"]);
    assert!(tmp.path().join("photos/cat.jpg").is_file());
    // --stop-at past the end, and without --session
    assert_clear_error(
        &generate(&["--session", "late", "--stop-at", "3"]),
        &["--stop-at 3: expected 0 to 2 (the run's sampler calls for --steps 2)"],
    );
}
