//! `sdlab generate --trace` against a diffusers reference run: the definition of
//! "correct". Every check prints the difference it measured.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use super::{max_abs_diff, sdlab, stderr};

/// Runs `sdlab generate --model MODEL` with the settings of the `run.json` in
/// `run_dir`, the sampler `scheduler` and `extra` arguments.
pub fn generate_trace(
    model: &Path,
    run_dir: &Path,
    scheduler: &str,
    extra: &[&str],
    dir: &Path,
) -> HashMap<String, Tensor> {
    // Python's json writes DPM-Solver's lambda_min_clipped as -Infinity, which is not JSON
    let text = std::fs::read_to_string(run_dir.join("run.json")).unwrap().replace("-Infinity", "null");
    let run: serde_json::Value = serde_json::from_str(&text).unwrap();
    let field = |key: &str| match &run[key] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
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
    args.extend(extra.iter().map(|a| a.to_string()));
    args.extend(["--out".into(), png.to_str().unwrap().into(), "--trace".into(), trace.to_str().unwrap().into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = sdlab(&args);
    assert!(out.status.success(), "sdlab generate failed: {}", stderr(&out));
    candle_core::safetensors::load(&trace, &Device::Cpu).unwrap()
}

pub fn max_abs(t: &candle_core::Tensor) -> f64 {
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

/// Whether the diffusers folder `model` (not a single file) rescales its schedule
/// to zero terminal SNR.
fn rescales_to_zero_snr(model: &Path) -> bool {
    let config = model.join("scheduler/scheduler_config.json");
    config.is_file() && ::sdlab::scheduler::SchedulerConfig::from_file(&config).unwrap().rescale_betas_zero_snr
}

/// Compares a trace of `model` with diffusers' `reference.safetensors` in
/// `run_dir`, and the PNG written into `dir` with its `image.png` where it has one.
pub fn check_trace(
    name: &str,
    ours: &HashMap<String, Tensor>,
    model: &Path,
    run_dir: &Path,
    scheduler: &str,
    dir: &Path,
) {
    let reference: HashMap<String, Tensor> =
        candle_core::safetensors::load(run_dir.join("reference.safetensors"), &Device::Cpu).unwrap();
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
            // The zero-SNR rescale takes square roots, and torch's CPU sqrt is MKL's
            // vsSqrt, not correctly rounded (up to 0.75 ulp on the AVX2 machine that
            // made the shapes reference; ours is exact): the unit tests' bound.
            "alpha_prod_t" if rescales_to_zero_snr(model) => 1e-6,
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
    if !run_dir.join("image.png").exists() {
        return;
    }
    let ours = image::open(dir.join("image.png")).unwrap().to_rgb8();
    let theirs = image::open(run_dir.join("image.png")).unwrap().to_rgb8();
    assert_eq!(ours.dimensions(), theirs.dimensions());
    let worst = ours.as_raw().iter().zip(theirs.as_raw()).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
    println!("{name}: image.png             max level diff {worst}");
    assert!(worst <= 1, "{name}: PNG differs by {worst} levels");
}
