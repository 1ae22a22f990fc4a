//! The session object: stages in order, settings that invalidate exactly what
//! depends on them, and stepping that can pause, rewind and resume bit for bit.

mod common;

use candle_core::Tensor;
use common::*;
use sdlab::model::{self, Progress, Runtime};
use sdlab::session::{Session, Settings, Stage};

fn session(name: &str, eta: f64) -> Session {
    let run = run_json(name);
    let model =
        model::open(fixture(name).join("model").to_str().unwrap(), None, Runtime::cpu(), &Progress::Quiet).unwrap();
    let settings = Settings {
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
    };
    Session::new(model, settings).unwrap()
}

fn latents(s: &Session) -> Tensor {
    s.latents().unwrap().clone()
}

#[test]
fn stages_out_of_order_are_clear_errors() {
    let mut s = session("sd2-tiny", 0.0);
    assert_eq!(s.stage(), Stage::Start);
    let msg = s.vae_decode().unwrap_err().to_string();
    assert_eq!(msg, "vae_decode needs a latent: run get_latent (and denoise) first");
    s.get_latent().unwrap();
    let msg = s.step().err().unwrap().to_string();
    assert_eq!(msg, "denoise needs prompt_embeds: run encode_prompt first");
    s.encode_prompt().unwrap();
    s.run_to(10).unwrap();
    assert_eq!(s.stage(), Stage::Denoise(10));
    let msg = s.step().err().unwrap().to_string();
    assert!(msg.starts_with("all 10 denoising steps are done"), "{msg}");
    assert!(s.run_to(11).is_err());
    s.vae_decode().unwrap();
    assert_eq!(s.stage(), Stage::VaeDecode);
}

#[test]
fn every_intermediate_matches_the_reference_through_the_api() {
    let reference = reference("sd2-tiny");
    let mut s = session("sd2-tiny", 0.0);
    let embeds = s.encode_prompt().unwrap().prompt_embeds.clone();
    println!("prompt_embeds diff {:.2e}", max_abs_diff(&embeds, &reference["prompt_embeds"]));
    assert!(max_abs_diff(&embeds, &reference["prompt_embeds"]) <= 1e-4);
    s.get_latent().unwrap();
    for i in 0..3 {
        let record = s.step().unwrap();
        let x0 = record.denoise.scheduler.pred_original_sample().squeeze(0).unwrap();
        let want = reference["pred_original_sample"].get(i).unwrap();
        let diff = max_abs_diff(&x0, &want);
        println!("step {i}: x0 diff {diff:.2e}, alpha_prod_t {}", record.denoise.scheduler.alpha_prod_t());
        assert!(diff <= 1e-3);
        // both halves of classifier-free guidance are kept for inspection
        assert!(record.denoise.noise_pred_uncond.is_some());
        assert_eq!(record.index, i);
    }
}

/// Pausing, rewinding and going on reproduce an uninterrupted run exactly,
/// eta noise included (the generator state is restored with the step).
#[test]
fn rewinding_and_resuming_is_bit_exact_with_eta() {
    let mut straight = session("sd15-tiny", 0.8);
    straight.encode_prompt().unwrap();
    straight.get_latent().unwrap();
    straight.run_to(8).unwrap();

    let mut wandering = session("sd15-tiny", 0.8);
    wandering.encode_prompt().unwrap();
    wandering.get_latent().unwrap();
    wandering.run_to(5).unwrap();
    wandering.run_to(2).unwrap();
    assert_eq!(wandering.history().len(), 2);
    wandering.run_to(8).unwrap();

    let diff = max_abs_diff(&latents(&straight), &latents(&wandering));
    println!("rewound run vs straight run: {diff:e}");
    assert_eq!(diff, 0.0);
    // and eta really changed the result
    let mut deterministic = session("sd15-tiny", 0.0);
    deterministic.encode_prompt().unwrap();
    deterministic.get_latent().unwrap();
    deterministic.run_to(8).unwrap();
    assert!(max_abs_diff(&latents(&straight), &latents(&deterministic)) > 1e-2);
}

#[test]
fn settings_drop_only_what_depends_on_them() {
    let mut s = session("sd2-tiny", 0.0);
    s.encode_prompt().unwrap();
    s.get_latent().unwrap();
    s.run_to(3).unwrap();

    // guidance changes between steps and is recorded per step
    s.set_guidance_scale(2.0).unwrap();
    s.step().unwrap();
    let scales: Vec<f64> = s.history().iter().map(|r| r.denoise.guidance_scale).collect();
    assert_eq!(scales, vec![7.5, 7.5, 7.5, 2.0]);

    // a new seed keeps the encoding, drops the latent and the history
    let settings = Settings { seed: 1, ..s.settings().clone() };
    s.update_settings(settings).unwrap();
    assert!(s.encoding().is_some());
    assert!(s.init_latents().is_none());
    assert!(s.history().is_empty());

    // a new prompt keeps the latent, drops the encoding
    s.get_latent().unwrap();
    let settings = Settings { prompt: "a ship".into(), ..s.settings().clone() };
    s.update_settings(settings).unwrap();
    assert!(s.encoding().is_none());
    assert!(s.init_latents().is_some());

    // invalid settings are refused and the old ones stay
    let bad = Settings { width: 7, ..s.settings().clone() };
    assert!(s.update_settings(bad).is_err());
    assert_eq!(s.settings().width, 64);
}
