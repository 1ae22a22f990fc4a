//! The samplers other than DDIM against diffusers' runs
//! (`tests/fixtures/<model>/samplers/txt2img/<name>/`): each step call is fed the
//! guided model output and the latent diffusers had, so the scheduler's own
//! arithmetic is checked call by call, with no UNet in between.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use super::{DpmSolverPP, Euler, Pndm, PndmStep, UniPc, UniPcStep};
use crate::rng::torch::TorchRng;

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(path)
}

/// Python's json writes `-Infinity` (DPM-Solver's `lambda_min_clipped`), which is not JSON.
fn read_json(path: &str) -> Value {
    let text = std::fs::read_to_string(fixture(path)).unwrap().replace("-Infinity", "null");
    serde_json::from_str(&text).unwrap()
}

fn load(path: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(path), &Device::Cpu).unwrap()
}

fn to_f64(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

/// Largest difference relative to `max(1, |expected|)`.
fn max_rel_diff(a: &Tensor, expected: &Tensor) -> f64 {
    assert_eq!(a.dims(), expected.dims());
    to_f64(a).iter().zip(to_f64(expected)).map(|(x, y)| (x - y).abs() / y.abs().max(1.0)).fold(0.0, f64::max)
}

const MODELS: [&str; 2] = ["sd2-tiny", "sd15-tiny"];

/// One diffusers run of an Euler-family sampler, replayed call by call.
fn check_euler_run(model: &str, name: &str, karras: bool, ancestral: bool) {
    let dir = format!("{model}/samplers/txt2img/{name}");
    let run = read_json(&format!("{dir}/run.json"));
    let reference = load(&format!("{dir}/reference.safetensors"));
    let config = read_json(&format!("{model}/model/scheduler/scheduler_config.json"));
    let steps = run["steps"].as_u64().unwrap() as usize;
    let euler = Euler::from_config(&config, steps, karras, ancestral).unwrap();

    let timesteps: Vec<f64> = euler.timesteps().iter().map(|&t| f64::from(t)).collect();
    let expected_t = to_f64(&reference["timesteps"]);
    assert_eq!(timesteps.len(), expected_t.len(), "{dir}: step calls");
    for (t, e) in timesteps.iter().zip(&expected_t) {
        assert!((t - e).abs() <= 1e-3, "{dir}: timesteps {timesteps:?}, diffusers {expected_t:?}");
    }
    let sigmas: Vec<f64> = euler.sigmas().iter().map(|&s| f64::from(s)).collect();
    let expected_s = to_f64(&reference["sigmas"]);
    for (s, e) in sigmas.iter().zip(&expected_s) {
        assert!((s - e).abs() <= 1e-6 * e.max(1.0), "{dir}: sigmas {sigmas:?}, diffusers {expected_s:?}");
    }

    let init = &reference["init_latents"];
    let mut rng = TorchRng::new(run["seed"].as_u64().unwrap());
    let noise = rng.randn_tensor(init.dims()).unwrap().affine(euler.init_noise_sigma(), 0.0).unwrap();
    let d = max_rel_diff(&noise, init);
    assert!(d < 1e-6, "{dir}: init_latents differ by {d}");

    let (outputs, latents, x0s) =
        (&reference["guided_model_output"], &reference["latents"], &reference["pred_original_sample"]);
    let mut worst = (0.0f64, 0.0f64);
    for (i, &t) in expected_t.iter().enumerate() {
        let sample = if i == 0 { init.clone() } else { latents.get(i - 1).unwrap().unsqueeze(0).unwrap() };
        let output = outputs.get(i).unwrap().unsqueeze(0).unwrap();
        let noise = ancestral.then(|| rng.randn_tensor(sample.dims()).unwrap());
        let step = euler.step(i, &output, &sample, noise.as_ref()).unwrap();
        assert!((step.timestep - t).abs() <= 1e-3);
        let dx = max_rel_diff(&step.pred_original_sample, &x0s.get(i).unwrap().unsqueeze(0).unwrap());
        let dl = max_rel_diff(&step.prev_sample, &latents.get(i).unwrap().unsqueeze(0).unwrap());
        worst = (worst.0.max(dx), worst.1.max(dl));
    }
    println!("{dir}: x0 {:.1e}, latents {:.1e}", worst.0, worst.1);
    assert!(worst.0 < 1e-5 && worst.1 < 1e-5, "{dir}: x0 {:e}, latents {:e}", worst.0, worst.1);
}

#[test]
fn euler_matches_diffusers_call_by_call() {
    for model in MODELS {
        check_euler_run(model, "euler", false, false);
    }
}

#[test]
fn euler_karras_matches_diffusers_call_by_call() {
    for model in MODELS {
        check_euler_run(model, "euler_karras", true, false);
    }
}

#[test]
fn euler_ancestral_matches_diffusers_with_the_runs_generator() {
    for model in MODELS {
        check_euler_run(model, "euler_a", false, true);
    }
}

#[test]
fn euler_refuses_what_it_does_not_compute_by_key() {
    let error = |json: &str| Euler::from_config(&serde_json::from_str(json).unwrap(), 10, false, false).unwrap_err();
    let e = error(r#"{"use_exponential_sigmas": true}"#).to_string();
    assert!(e.contains("use_exponential_sigmas"), "{e}");
    let e = error(r#"{"final_sigmas_type": "one"}"#).to_string();
    assert!(e.contains("final_sigmas_type") && e.contains("zero, sigma_min"), "{e}");
    let e = error(r#"{"timestep_type": "continuous"}"#).to_string();
    assert!(e.contains("timestep_type"), "{e}");
    let e = format!("{:#}", error(r#"{"num_train_timesteps": 5}"#));
    assert!(e.contains("num_inference_steps (10)"), "{e}");
}

#[test]
fn keys_diffusers_marks_as_defaults_take_each_class_default() {
    // a config saved by diffusers lists the keys it filled in; from_config drops them
    let config: Value = serde_json::from_str(
        r#"{"timestep_spacing": "trailing", "steps_offset": 1, "_use_default_values": ["timestep_spacing"]}"#,
    )
    .unwrap();
    let euler = Euler::from_config(&config, 4, false, false).unwrap();
    // linspace (Euler's default), not trailing (999, 749, 499, 249)
    assert_eq!(euler.timesteps(), &[999.0, 666.0, 333.0, 0.0]);
    let ddim = super::SchedulerConfig::from_json(&config).unwrap();
    assert_eq!(ddim.timestep_spacing, super::TimestepSpacing::Leading, "DDIM's own default is leading");
}

/// One diffusers DPM-Solver++(2M) run replayed call by call, each step given the
/// x0 diffusers' previous step converted.
fn check_dpmpp_run(model: &str, name: &str, karras: bool) {
    let dir = format!("{model}/samplers/txt2img/{name}");
    let run = read_json(&format!("{dir}/run.json"));
    let reference = load(&format!("{dir}/reference.safetensors"));
    let config = read_json(&format!("{model}/model/scheduler/scheduler_config.json"));
    let steps = run["steps"].as_u64().unwrap() as usize;
    let dpm = DpmSolverPP::from_config(&config, steps, karras).unwrap();
    let timesteps: Vec<f64> = dpm.timesteps().iter().map(|&t| f64::from(t)).collect();
    assert_eq!(timesteps, to_f64(&reference["timesteps"]), "{dir}: timesteps");
    let sigmas: Vec<f64> = dpm.sigmas().iter().map(|&s| f64::from(s)).collect();
    let expected_s = to_f64(&reference["sigmas"]);
    for (s, e) in sigmas.iter().zip(&expected_s) {
        assert!((s - e).abs() <= 1e-6 * e.max(1.0), "{dir}: sigmas {sigmas:?}, diffusers {expected_s:?}");
    }
    let (init, outputs, latents, x0s) = (
        &reference["init_latents"],
        &reference["guided_model_output"],
        &reference["latents"],
        &reference["pred_original_sample"],
    );
    let row = |t: &Tensor, i: usize| t.get(i).unwrap().unsqueeze(0).unwrap();
    let mut worst = (0.0f64, 0.0f64);
    let mut orders = Vec::new();
    for i in 0..steps {
        let sample = if i == 0 { init.clone() } else { row(latents, i - 1) };
        let previous = (i > 0).then(|| row(x0s, i - 1));
        let step = dpm.step(i, &row(outputs, i), &sample, previous.as_ref()).unwrap();
        orders.push(step.order);
        worst.0 = worst.0.max(max_rel_diff(&step.pred_original_sample, &row(x0s, i)));
        worst.1 = worst.1.max(max_rel_diff(&step.prev_sample, &row(latents, i)));
    }
    println!("{dir}: orders {orders:?}, x0 {:.1e}, latents {:.1e}", worst.0, worst.1);
    // first order on the first step (no history) and the last (final sigma 0)
    assert_eq!((orders[0], orders[steps - 1]), (1, 1));
    assert!(orders[1..steps - 1].iter().all(|&o| o == 2));
    assert!(worst.0 < 1e-5 && worst.1 < 1e-5, "{dir}: x0 {:e}, latents {:e}", worst.0, worst.1);
}

#[test]
fn dpmpp_2m_matches_diffusers_call_by_call() {
    for model in MODELS {
        check_dpmpp_run(model, "dpmpp_2m", false);
        check_dpmpp_run(model, "dpmpp_2m_karras", true);
    }
}

/// UniPC's diffusers runs replayed call by call, each call given the records of
/// the earlier ones as computed here (the corrected latents are UniPC's own).
#[test]
fn unipc_matches_diffusers_call_by_call() {
    for model in MODELS {
        let dir = format!("{model}/samplers/txt2img/unipc");
        let run = read_json(&format!("{dir}/run.json"));
        let reference = load(&format!("{dir}/reference.safetensors"));
        let config = read_json(&format!("{model}/model/scheduler/scheduler_config.json"));
        let steps = run["steps"].as_u64().unwrap() as usize;
        let unipc = UniPc::from_config(&config, steps).unwrap();
        let timesteps: Vec<f64> = unipc.timesteps().iter().map(|&t| f64::from(t)).collect();
        assert_eq!(timesteps, to_f64(&reference["timesteps"]), "{dir}: timesteps");
        let (init, outputs, latents, x0s) = (
            &reference["init_latents"],
            &reference["guided_model_output"],
            &reference["latents"],
            &reference["pred_original_sample"],
        );
        let row = |t: &Tensor, i: usize| t.get(i).unwrap().unsqueeze(0).unwrap();
        let mut done: Vec<UniPcStep> = Vec::new();
        let mut worst = (0.0f64, 0.0f64);
        for i in 0..steps {
            let sample = if i == 0 { init.clone() } else { row(latents, i - 1) };
            let earlier: Vec<&UniPcStep> = done.iter().collect();
            let step = unipc.step(i, &row(outputs, i), &sample, &earlier).unwrap();
            worst.0 = worst.0.max(max_rel_diff(&step.pred_original_sample, &row(x0s, i)));
            worst.1 = worst.1.max(max_rel_diff(&step.prev_sample, &row(latents, i)));
            done.push(step);
        }
        let orders: Vec<(u8, u8)> = done.iter().map(|s| (s.order, s.corrector_order)).collect();
        println!("{dir}: (order, corrector order) {orders:?}, x0 {:.1e}, latents {:.1e}", worst.0, worst.1);
        // warm-up and lower_order_final: first order first and last, second order between;
        // the corrector runs from the second call on with the previous call's order
        assert_eq!(orders[0], (1, 0));
        assert_eq!(orders[1], (2, 1));
        assert!(orders[2..steps - 1].iter().all(|&o| o == (2, 2)));
        assert_eq!(orders[steps - 1], (1, 2));
        assert!(worst.0 < 1e-5 && worst.1 < 1e-5, "{dir}: x0 {:e}, latents {:e}", worst.0, worst.1);
    }
}

/// PNDM's diffusers runs replayed call by call, each call given the records of
/// the earlier ones (as computed here: they hold only what the inputs determine).
#[test]
fn pndm_matches_diffusers_call_by_call() {
    for model in MODELS {
        let dir = format!("{model}/samplers/txt2img/pndm");
        let run = read_json(&format!("{dir}/run.json"));
        let reference = load(&format!("{dir}/reference.safetensors"));
        let config = read_json(&format!("{model}/model/scheduler/scheduler_config.json"));
        let steps = run["steps"].as_u64().unwrap() as usize;
        let pndm = Pndm::from_config(&config, steps).unwrap();
        let timesteps: Vec<f64> = pndm.timesteps().iter().map(|&t| t as f64).collect();
        assert_eq!(timesteps, to_f64(&reference["timesteps"]), "{dir}: timesteps");
        assert_eq!(timesteps.len(), steps + 1);
        let (init, outputs, latents) =
            (&reference["init_latents"], &reference["guided_model_output"], &reference["latents"]);
        let row = |t: &Tensor, i: usize| t.get(i).unwrap().unsqueeze(0).unwrap();
        let mut done: Vec<PndmStep> = Vec::new();
        let mut worst = 0.0f64;
        for i in 0..timesteps.len() {
            let sample = if i == 0 { init.clone() } else { row(latents, i - 1) };
            let history: Vec<&PndmStep> = done.iter().collect();
            let step = pndm.step(i, &row(outputs, i), &sample, &history).unwrap();
            worst = worst.max(max_rel_diff(&step.prev_sample, &row(latents, i)));
            done.push(step);
        }
        let mixed: Vec<usize> = done.iter().map(|s| s.mixed).collect();
        println!("{dir}: mixed {mixed:?}, latents {worst:.1e}");
        assert_eq!(&mixed[..4], &[1, 2, 2, 3]);
        assert!(worst < 1e-5, "{dir}: latents {worst:e}");
    }
}
