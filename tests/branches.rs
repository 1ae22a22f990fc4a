//! Branches: a saved run forked after K steps with another prompt, guidance or
//! eta computes what diffusers computes when `callback_on_step_end` swaps them;
//! a branch of a branch resumes bit for bit; bad input is one clear line.

mod common;

use std::path::Path;

use candle_core::{Device, Tensor};
use common::*;
use sdlab::model::{self, Progress, Runtime};
use sdlab::session::store::SessionRecord;
use sdlab::session::trace::trace_tensors;
use sdlab::session::{Change, Session, Settings};
use serde::Deserialize;

#[derive(Deserialize)]
struct BranchRun {
    prompt: String,
    negative_prompt: String,
    seed: u64,
    steps: usize,
    guidance_scale: f64,
    eta: f64,
    width: usize,
    height: usize,
    branch: BranchSpec,
}

#[derive(Deserialize)]
struct BranchSpec {
    at: usize,
    guidance_scale: Option<f64>,
    prompt: Option<String>,
}

const CASES: [&str; 4] = ["none", "guidance", "prompt", "both"];

fn branch_run(case: &str) -> BranchRun {
    let path = fixture("sd2-tiny/branches").join(case).join("run.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn ok(out: std::process::Output) -> String {
    assert!(out.status.success(), "sdlab failed:\n{}", stderr(&out));
    stderr(&out)
}

fn fails(out: std::process::Output) -> String {
    assert!(!out.status.success(), "sdlab should have failed");
    stderr(&out)
}

fn load(path: &Path) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

/// The parent run of the fixtures, saved as session `main` under `root`, with its trace.
fn parent_session(root: &Path) {
    let run = branch_run("none");
    let model = fixture("sd2-tiny/model");
    let (seed, steps, guidance) = (run.seed.to_string(), run.steps.to_string(), run.guidance_scale.to_string());
    let (width, height, eta) = (run.width.to_string(), run.height.to_string(), run.eta.to_string());
    let trace = root.join("main.safetensors");
    let png = root.join("main.png");
    ok(sdlab(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        &run.prompt,
        "--negative-prompt",
        &run.negative_prompt,
        "--seed",
        &seed,
        "--steps",
        &steps,
        "--guidance",
        &guidance,
        "--eta",
        &eta,
        "--width",
        &width,
        "--height",
        &height,
        "--dir",
        root.to_str().unwrap(),
        "--session",
        "main",
        "--trace",
        trace.to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
    ]));
}

/// The four fixture branches through `sdlab branch --trace`: latents, x0, guided
/// output and image within 1e-3 of diffusers at every step, the shared first K
/// steps included; `none` equals the parent bit for bit.
#[test]
fn fixture_branches_match_diffusers() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    parent_session(root);
    let parent = load(&root.join("main.safetensors"));
    for case in CASES {
        let run = branch_run(case);
        let at = run.branch.at.to_string();
        let trace = root.join(format!("{case}.safetensors"));
        let mut args = vec!["branch", "main", "--at", &at, "--name", case, "--dir", root.to_str().unwrap()];
        let guidance = run.branch.guidance_scale.map(|g| g.to_string());
        if let Some(g) = &guidance {
            args.extend(["--guidance", g]);
        }
        if let Some(p) = &run.branch.prompt {
            args.extend(["--prompt", p]);
        }
        args.extend(["--trace", trace.to_str().unwrap()]);
        ok(sdlab(&args));
        let ours = load(&trace);
        let reference = load(&fixture("sd2-tiny/branches").join(case).join("reference.safetensors"));
        for name in ["latents", "pred_original_sample", "guided_model_output", "image"] {
            let diff = max_abs_diff(&ours[name], &reference[name]);
            eprintln!("{case} {name}: {diff:.2e}");
            assert!(diff < 1e-3, "{case} {name} differs from diffusers by {diff}");
        }
        if case == "none" {
            for (name, t) in &parent {
                assert_eq!(bits(t), bits(&ours[name.as_str()]), "none: {name} differs from the parent");
            }
        } else {
            // what changed shows after the fork and only there
            let k = run.branch.at;
            let (a, b) = (&ours["latents"], &parent["latents"]);
            assert_eq!(bits(&a.narrow(0, 0, k).unwrap()), bits(&b.narrow(0, 0, k).unwrap()), "{case}: shared steps");
            assert!(max_abs_diff(&a.get(k).unwrap(), &b.get(k).unwrap()) > 1e-4, "{case}: no change after the fork");
        }
    }
    let listing = String::from_utf8(sdlab(&["sessions", "--dir", root.to_str().unwrap()]).stdout).unwrap();
    for case in CASES {
        let line = listing.lines().find(|l| l.starts_with(&format!("main/{case} "))).expect(case);
        assert!(line.contains("main@4") && line.contains("done"), "{line}");
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_dtype(candle_core::DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// A branch of a branch (eta above 0 throughout, so the generator matters at every
/// step), stopped midway and resumed in a new process, equals the same tree made
/// in one go in this process, bit for bit; so does its PNG run again.
#[test]
fn branch_of_branch_resumes_bit_exact() {
    let model_dir = fixture("sd15-tiny/model");
    let settings =
        Settings { eta: 0.3, steps: 8, width: 32, height: 32, ..Settings::new("a red boat on a calm lake", 32) };
    let model = model::open(model_dir.to_str().unwrap(), None, Runtime::cpu(), &Progress::Quiet).unwrap();
    let mut main = Session::new(model, settings.clone()).unwrap();
    main.encode_prompt().unwrap();
    main.get_latent().unwrap();
    main.run_to(3).unwrap();
    let mut a = main.fork(3, None, &Change { guidance_scale: Some(2.5), eta: Some(0.6), ..Change::default() }).unwrap();
    a.run_to(6).unwrap();
    let change = Change { prompt: Some("a red boat in a storm".into()), ..Change::default() };
    let mut b = a.fork(6, Some("a".into()), &change).unwrap();
    b.run_to(b.calls()).unwrap();
    b.vae_decode().unwrap();
    let one_go: Vec<(String, Vec<u32>)> =
        trace_tensors(&b).unwrap().iter().map(|(n, t)| (n.to_string(), bits(t))).collect();

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_str().unwrap();
    ok(sdlab(&[
        "generate",
        "--model",
        model_dir.to_str().unwrap(),
        "--prompt",
        &settings.prompt,
        "--seed",
        &settings.seed.to_string(),
        "--steps",
        "8",
        "--eta",
        "0.3",
        "--width",
        "32",
        "--height",
        "32",
        "--dir",
        root,
        "--session",
        "main",
        "--stop-at",
        "4",
    ]));
    ok(sdlab(&["branch", "main", "--at", "3", "--guidance", "2.5", "--eta", "0.6", "--name", "a", "--dir", root]));
    ok(sdlab(&[
        "branch",
        "main/a",
        "--at",
        "6",
        "--prompt",
        "a red boat in a storm",
        "--name",
        "b",
        "--stop-at",
        "7",
        "--dir",
        root,
    ]));
    let record = SessionRecord::load(&tmp.path().join("main/branches/b")).unwrap();
    assert_eq!((record.history.len(), record.fork.as_ref().map(|f| f.at)), (7, Some(6)));
    let trace = tmp.path().join("b.safetensors");
    let png = tmp.path().join("b.png");
    ok(sdlab(&["resume", "main/b", "--dir", root, "--trace", trace.to_str().unwrap(), "--out", png.to_str().unwrap()]));
    let resumed = load(&trace);
    assert_eq!(resumed.len(), one_go.len());
    for (name, want) in &one_go {
        assert_eq!(&bits(&resumed[name.as_str()]), want, "{name} differs from the run made in one go");
    }
    // b's own folder holds only its own steps (6 and 7), its parent's are not copied
    let own = load(&tmp.path().join("main/branches/b/tensors.safetensors"));
    let mut steps: Vec<usize> =
        own.keys().filter_map(|k| k.strip_prefix("steps.")?.split('.').next()?.parse().ok()).collect();
    steps.sort();
    steps.dedup();
    assert_eq!(steps, vec![6, 7]);
    // the picture remembers the prompts and eta before each fork: rerun, it is the same
    let again = tmp.path().join("again.png");
    ok(sdlab(&["resume", png.to_str().unwrap(), "--out", again.to_str().unwrap()]));
    let pixels = |p: &Path| image::open(p).unwrap().to_rgb8().into_raw();
    assert_eq!(pixels(&again), pixels(&png));
}

/// `--at` past the parent's steps, an unknown branch, a name that exists, a parent
/// changed after the fork, a corrupt branch (the rest still opens), a format 1 session.
#[test]
fn bad_branches_are_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let dir = root.to_str().unwrap();
    let model = fixture("sd15-tiny/model");
    let generate_with = |name: &str, seed: &str, stop: &str, prompt: &str| {
        ok(sdlab(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            prompt,
            "--seed",
            seed,
            "--steps",
            "6",
            "--width",
            "32",
            "--height",
            "32",
            "--dir",
            dir,
            "--session",
            name,
            "--stop-at",
            stop,
            "--force",
        ]))
    };
    let generate = |name: &str, seed: &str, stop: &str| generate_with(name, seed, stop, "a fox");
    generate("main", "1", "4");
    let err = fails(sdlab(&["branch", "main", "--at", "5", "--name", "x", "--dir", dir]));
    assert!(err.contains("--at 5: main has taken 4 of its 6 steps; fork at 0 to 4"), "{err}");
    ok(sdlab(&["branch", "main", "--at", "2", "--guidance", "3", "--name", "x", "--dir", dir]));
    ok(sdlab(&["branch", "main", "--at", "4", "--eta", "0.5", "--name", "y", "--dir", dir]));
    let err = fails(sdlab(&["branch", "main", "--at", "2", "--name", "x", "--dir", dir]));
    assert!(err.contains("branches/x: a session is already saved here; use --force to replace it"), "{err}");
    ok(sdlab(&["branch", "main", "--at", "1", "--name", "x", "--dir", dir, "--force"]));
    let err = fails(sdlab(&["branch", "main", "--at", "2", "--seed", "9", "--name", "s", "--dir", dir]));
    assert!(err.contains("--seed 9: a branch forked after step 2 goes on from its parent's noise"), "{err}");
    let err = fails(sdlab(&["resume", "main/nope", "--dir", dir]));
    assert!(err.contains("main: no branch named nope (it has x, y)"), "{err}");
    let err = fails(sdlab(&["branch", "main/nope", "--at", "1", "--name", "z", "--dir", dir]));
    assert!(err.contains("main: no branch named nope"), "{err}");

    // a corrupt branch: named in the listing and when opened; the others still open
    std::fs::write(root.join("main/branches/y/tensors.safetensors"), b"not tensors").unwrap();
    let listing = String::from_utf8(sdlab(&["sessions", "--dir", dir]).stdout).unwrap();
    assert!(listing.lines().any(|l| l.starts_with("main/x ") && l.contains("main@1")), "{listing}");
    let err = fails(sdlab(&["resume", "main/y", "--dir", dir]));
    assert!(err.contains("branches/y/tensors.safetensors: not a valid safetensors file"), "{err}");
    ok(sdlab(&["resume", "main/x", "--dir", dir]));

    // the parent made again, another prompt or fewer steps: the branch says so
    generate_with("main", "1", "4", "a grey fox");
    let err = fails(sdlab(&["resume", "main/x", "--dir", dir]));
    assert!(err.contains("its parent changed after the fork: its first 1 steps are not the ones"), "{err}");
    generate("main", "1", "0");
    let err = fails(sdlab(&["resume", "main/x", "--dir", dir]));
    assert!(err.contains("forked at step 1, but its parent has only 0 steps now"), "{err}");
    generate("main", "2", "4");
    let err = fails(sdlab(&["resume", "main/x", "--dir", dir]));
    assert!(err.contains("its parent changed after the fork: settings.seed is not the branch's"), "{err}");
    assert!(err.contains("branches/x/session.json"), "{err}");

    // a format 1 session (before branches) opens, and is written as format 2
    generate("old", "1", "2");
    let json = root.join("old/session.json");
    let mut value: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    value["format"] = 1.into();
    std::fs::write(&json, serde_json::to_vec(&value).unwrap()).unwrap();
    ok(sdlab(&["branch", "old", "--at", "2", "--name", "b", "--dir", dir]));
    ok(sdlab(&["resume", "old", "--dir", dir]));
    let value: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(value["format"], 2);
}

/// `grid` on a tiny fixture: a sheet of the expected size with its labels inked,
/// each cell's final picture equal to a plain `generate` of that seed and guidance,
/// and every cell saved as a run of the session that opens again.
#[test]
fn grid_cells_are_plain_runs_saved_as_branches() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, dir) = (tmp.path(), tmp.path().to_str().unwrap());
    let model = fixture("sd2-tiny/model");
    let sheet = root.join("grid.png");
    let common = ["--model", model.to_str().unwrap(), "--prompt", "a ship at sea", "--steps", "4"];
    let mut args = vec!["grid", "--seeds", "1,2", "--guidance", "3,7.5", "--steps-shown", "2"];
    args.extend(common);
    args.extend(["--dir", dir, "--session", "g", "--out", sheet.to_str().unwrap()]);
    let log = ok(sdlab(&args));
    assert!(log.contains("cell 4/4: seed 2, guidance 7.5") && log.contains("saved as g/seed2-cfg7.5"), "{log}");
    let sheet = image::open(&sheet).unwrap().to_rgb8();
    // 64-pixel pictures: labels "seed 1" (48 px) + 2 gaps of 4; two lines of header
    // (12 px each) under a gap; strips of two pictures and a gap, 2 gaps apart
    let (left, top, pitch_x, pitch_y) = (56u32, 28u32, 140u32, 68u32);
    assert_eq!(sheet.dimensions(), (left + 2 * pitch_x, top + 2 * pitch_y + 4));
    let ink = |x0: u32, y0: u32, w: u32, h: u32| {
        (x0..x0 + w)
            .flat_map(|x| (y0..y0 + h).map(move |y| (x, y)))
            .filter(|&(x, y)| sheet.get_pixel(x, y).0 == [0, 0, 0])
            .count()
    };
    assert!(ink(left, 4, 40, 8) > 20 && ink(4, top + 28, 48, 8) > 20, "labels are drawn");
    for (r, seed) in ["1", "2"].iter().enumerate() {
        for (c, guidance) in ["3", "7.5"].iter().enumerate() {
            let png = root.join(format!("{seed}-{guidance}.png"));
            let mut args = vec!["generate", "--seed", seed, "--guidance", guidance, "--out", png.to_str().unwrap()];
            args.extend(common);
            ok(sdlab(&args));
            let plain = image::open(&png).unwrap().to_rgb8();
            let (x, y) = (left + c as u32 * pitch_x + 68, top + r as u32 * pitch_y);
            let cell = image::imageops::crop_imm(&sheet, x, y, 64, 64).to_image();
            assert_eq!(cell.as_raw(), plain.as_raw(), "seed {seed} guidance {guidance}");
            let address = if r + c == 0 { "g".to_string() } else { format!("g/seed{seed}-cfg{guidance}") };
            let record = SessionRecord::load(&sdlab::session::store::run_dir(root, &address).unwrap()).unwrap();
            assert_eq!((record.settings.seed.to_string(), record.history.len()), (seed.to_string(), 4));
        }
    }
}
