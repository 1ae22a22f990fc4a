//! `sdlab generate --trace` against diffusers' reference run of each fixture: the
//! definition of "correct". Every check prints the difference it measured.

mod common;

use candle_core::Device;
use common::*;

/// Runs `sdlab generate` on fixture `name`'s model with the settings of the
/// `run.json` in `run_dir` and the sampler `scheduler`.
fn generate_trace(
    name: &str,
    run_dir: &std::path::Path,
    scheduler: &str,
    dir: &std::path::Path,
) -> std::collections::HashMap<String, candle_core::Tensor> {
    // Python's json writes DPM-Solver's lambda_min_clipped as -Infinity, which is not JSON
    let text = std::fs::read_to_string(run_dir.join("run.json")).unwrap().replace("-Infinity", "null");
    let run: serde_json::Value = serde_json::from_str(&text).unwrap();
    let field = |key: &str| match &run[key] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let model = fixture(name).join("model");
    let trace = dir.join("trace.safetensors");
    let png = dir.join("image.png");
    let mut args = vec!["generate".to_string(), "--model".into(), model.to_str().unwrap().into()];
    for (flag, key) in [
        ("--prompt", "prompt"),
        ("--negative-prompt", "negative_prompt"),
        ("--seed", "seed"),
        ("--steps", "steps"),
        ("--guidance", "guidance_scale"),
        ("--width", "width"),
        ("--height", "height"),
    ] {
        args.extend([flag.to_string(), field(key)]);
    }
    if let Some(input) = run["input"].as_str() {
        // image to image: the picture and the strength
        args.extend(["--init-image".into(), run_dir.join(input).to_str().unwrap().into()]);
        args.extend(["--strength".into(), field("strength")]);
    }
    args.extend(["--scheduler", scheduler, "--device", "cpu", "--dtype", "f32"].map(String::from));
    args.extend(["--out".into(), png.to_str().unwrap().into(), "--trace".into(), trace.to_str().unwrap().into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = sdlab(&args);
    assert!(out.status.success(), "sdlab generate failed: {}", stderr(&out));
    candle_core::safetensors::load(&trace, &Device::Cpu).unwrap()
}

fn max_abs(t: &candle_core::Tensor) -> f64 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn check_fixture(name: &str) {
    check_run(name, &fixture(name), "ddim");
}

/// Checks one sampler's run against diffusers' (`<fixture>/samplers/txt2img/<sampler>/`).
fn check_sampler(name: &str, sampler: &str) {
    check_run(name, &fixture(name).join("samplers/txt2img").join(sampler), sampler);
}

/// Image to image (`<fixture>/samplers/img2img/<sampler>/`): the picture's latent
/// drawn from the VAE encoder with the run's generator, noised by the sampler's
/// `add_noise` to the first timestep kept, then the tail of the schedule.
fn check_img2img(name: &str, sampler: &str) {
    check_run(name, &fixture(name).join("samplers/img2img").join(sampler), sampler);
}

#[test]
fn img2img_matches_diffusers() {
    for sampler in ["ddim", "dpmpp_2m", "euler_a"] {
        check_img2img("sd15-tiny", sampler);
    }
    // every sampler on one model: each starts its own way (LMS's weights and DPM's
    // order rules count from the schedule's start, Heun skips two calls per step)
    for sampler in [
        "ddim",
        "pndm",
        "lms",
        "euler",
        "euler_karras",
        "euler_a",
        "heun",
        "dpmpp_2m",
        "dpmpp_2m_karras",
        "unipc",
        "lcm",
    ] {
        check_img2img("sd2-tiny", sampler);
    }
}

/// LCM noises each step's result afresh from the run's generator.
#[test]
fn lcm_matches_diffusers() {
    for name in ["sd2-tiny", "sd15-tiny"] {
        check_sampler(name, "lcm");
    }
}

/// Heun makes two calls per step but the last: 2N - 1.
#[test]
fn heun_matches_diffusers() {
    for name in ["sd2-tiny", "sd15-tiny"] {
        check_sampler(name, "heun");
    }
}

#[test]
fn lms_matches_diffusers() {
    for name in ["sd2-tiny", "sd15-tiny"] {
        check_sampler(name, "lms");
    }
}

/// PNDM makes one call more than steps: the second redoes the first step.
#[test]
fn pndm_matches_diffusers() {
    for name in ["sd2-tiny", "sd15-tiny"] {
        check_sampler(name, "pndm");
    }
    // SD 1.x names PNDM in its scheduler_config.json: `model` runs what diffusers' pipeline runs
    check_run("sd15-tiny", &fixture("sd15-tiny").join("samplers/txt2img/pndm"), "model");
}

fn check_run(name: &str, run_dir: &std::path::Path, scheduler: &str) {
    let dir = tempfile::tempdir().unwrap();
    let ours = generate_trace(name, run_dir, scheduler, dir.path());
    let reference: std::collections::HashMap<String, candle_core::Tensor> =
        candle_core::safetensors::load(run_dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    let name = &format!("{name} {scheduler}");
    let mut names: Vec<_> = reference.keys().cloned().collect();
    names.sort();
    for key in names {
        let want = &reference[&key];
        let got = ours.get(&key).unwrap_or_else(|| panic!("{name}: trace lacks {key}"));
        assert_eq!(got.dims(), want.dims(), "{name}: {key} shape");
        // DDIM's whole timesteps are int64 in the trace; the sampler runs store every
        // sampler's as float64 (the values are compared exactly below)
        if key != "timesteps" {
            assert_eq!(got.dtype(), want.dtype(), "{name}: {key} dtype");
        }
        let diff = max_abs_diff(got, want);
        let tolerance = match key.as_str() {
            "input_ids" | "negative_input_ids" => 0.0,
            // whole numbers for DDIM; a sigma sampler's are float32 values of numpy's math
            "timesteps" if ["ddim", "pndm", "lcm", "model"].contains(&scheduler) => 0.0,
            "timesteps" => 1e-3,
            "sigmas" => 1e-6,
            "alpha_prod_t" => 1e-9,
            // seeded noise times init_noise_sigma (14.6 for sigma samplers): an ulp of the
            // largest value, as torch's pow(x, 0.5) rounds sigma an ulp away from sqrt
            "init_latents" => 1e-6 * max_abs(want).max(1.0),
            "prompt_embeds" => 1e-4,
            _ => 1e-3,
        };
        println!("{name}: {key:<22} max abs diff {diff:.3e} (tolerance {tolerance:.0e})");
        assert!(diff <= tolerance, "{name}: {key} differs from diffusers by {diff:e} > {tolerance:e}");
    }

    // The 8-bit PNG rounds the same float image; allow one level where the two
    // float images straddle a rounding boundary.
    let ours = image::open(dir.path().join("image.png")).unwrap().to_rgb8();
    let theirs = image::open(run_dir.join("image.png")).unwrap().to_rgb8();
    assert_eq!(ours.dimensions(), theirs.dimensions());
    let worst = ours.as_raw().iter().zip(theirs.as_raw()).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
    println!("{name}: image.png             max level diff {worst}");
    assert!(worst <= 1, "{name}: PNG differs by {worst} levels");
}

#[test]
fn sd2_tiny_matches_diffusers() {
    check_fixture("sd2-tiny");
}

#[test]
fn sd15_tiny_matches_diffusers() {
    check_fixture("sd15-tiny");
}

/// The trained `shapes` model (models/shapes): real weights, not random ones.
#[test]
fn shapes_matches_diffusers() {
    check_fixture("shapes");
}

#[test]
fn multistep_solvers_match_diffusers() {
    for name in ["sd2-tiny", "sd15-tiny"] {
        for sampler in ["dpmpp_2m", "dpmpp_2m_karras", "unipc"] {
            check_sampler(name, sampler);
        }
    }
}

#[test]
fn euler_samplers_match_diffusers() {
    for name in ["sd2-tiny", "sd15-tiny"] {
        for sampler in ["euler", "euler_karras", "euler_a"] {
            check_sampler(name, sampler);
        }
    }
}
