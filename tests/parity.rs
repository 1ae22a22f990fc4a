//! `sdlab generate --trace` against diffusers' reference run of each fixture: the
//! definition of "correct". Every check prints the difference it measured.

mod common;

use candle_core::Device;
use common::*;

/// Runs `sdlab generate` with the settings of the fixture's `run.json`.
fn generate_trace(name: &str, dir: &std::path::Path) -> std::collections::HashMap<String, candle_core::Tensor> {
    let run = run_json(name);
    let model = fixture(name).join("model");
    let trace = dir.join("trace.safetensors");
    let png = dir.join("image.png");
    let (seed, steps, guidance) = (run.seed.to_string(), run.steps.to_string(), run.guidance_scale.to_string());
    let (width, height) = (run.width.to_string(), run.height.to_string());
    let out = sdlab(&[
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
        "--width",
        &width,
        "--height",
        &height,
        "--scheduler",
        "ddim",
        "--device",
        "cpu",
        "--dtype",
        "f32",
        "--out",
        png.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "sdlab generate failed: {}", stderr(&out));
    candle_core::safetensors::load(&trace, &Device::Cpu).unwrap()
}

fn check_fixture(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let ours = generate_trace(name, dir.path());
    let reference = reference(name);
    let mut names: Vec<_> = reference.keys().cloned().collect();
    names.sort();
    for key in names {
        let want = &reference[&key];
        let got = ours.get(&key).unwrap_or_else(|| panic!("{name}: trace lacks {key}"));
        assert_eq!(got.dims(), want.dims(), "{name}: {key} shape");
        assert_eq!(got.dtype(), want.dtype(), "{name}: {key} dtype");
        let diff = max_abs_diff(got, want);
        let tolerance = match key.as_str() {
            "input_ids" | "negative_input_ids" | "timesteps" => 0.0,
            "alpha_prod_t" => 1e-9,
            "init_latents" => 1e-6,
            "prompt_embeds" => 1e-4,
            _ => 1e-3,
        };
        println!("{name}: {key:<22} max abs diff {diff:.3e} (tolerance {tolerance:.0e})");
        assert!(diff <= tolerance, "{name}: {key} differs from diffusers by {diff:e} > {tolerance:e}");
    }

    // The 8-bit PNG rounds the same float image; allow one level where the two
    // float images straddle a rounding boundary.
    let ours = image::open(dir.path().join("image.png")).unwrap().to_rgb8();
    let theirs = image::open(fixture(name).join("image.png")).unwrap().to_rgb8();
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
