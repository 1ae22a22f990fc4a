//! `sdlab generate --trace` against diffusers' reference run of each fixture: the
//! definition of "correct". Every check prints the difference it measured.

mod common;

use common::trace::{check_trace, generate_trace};
use common::*;

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
    let model = fixture(name).join("model");
    let ours = generate_trace(&model, run_dir, scheduler, &[], dir.path());
    check_trace(&format!("{name} {scheduler}"), &ours, &model, run_dir, scheduler, dir.path());
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
