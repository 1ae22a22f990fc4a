//! Parity with diffusers: the fixtures' reference runs and the cases of
//! `tests/fixtures/scheduler/make_scheduler_cases.py`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use super::{DdimScheduler, SchedulerConfig};

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(path)
}

fn read_json(path: &str) -> Value {
    let text = std::fs::read_to_string(fixture(path)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn load(path: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(path), &Device::Cpu).unwrap()
}

/// Largest absolute difference; NaN in one tensor only counts as infinite.
fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    max_scaled_diff(a, b, |_| 1.0)
}

/// Largest difference relative to `max(1, |b|)`: a float32 value of
/// magnitude 30 cannot be closer than 2e-6 to another, so an absolute bound of
/// 1e-6 would demand bit equality there.
fn max_rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    max_scaled_diff(a, b, |y| y.abs().max(1.0))
}

fn max_scaled_diff(a: &Tensor, b: &Tensor, scale: impl Fn(f64) -> f64) -> f64 {
    assert_eq!(a.dims(), b.dims());
    let flat = |t: &Tensor| t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    flat(a)
        .iter()
        .zip(flat(b))
        .map(|(x, y)| match (x.is_nan(), y.is_nan()) {
            (true, true) => 0.0,
            (false, false) => (x - y).abs() / scale(y),
            _ => f64::INFINITY,
        })
        .fold(0.0, f64::max)
}

fn config_of(base: &Value, overrides: &Value) -> SchedulerConfig {
    let mut json = base.clone();
    let map = json.as_object_mut().unwrap();
    for (k, v) in overrides.as_object().unwrap() {
        map.insert(k.clone(), v.clone());
    }
    SchedulerConfig::from_json(&json).unwrap()
}

/// Each step of a fixture's reference run, fed the same model output and the
/// same previous latent, must give diffusers' x0 and next latent.
fn check_reference_run(name: &str) {
    let run = read_json(&format!("{name}/run.json"));
    let steps = run["steps"].as_u64().unwrap() as usize;
    let config = SchedulerConfig::from_file(fixture(&format!("{name}/model/scheduler/scheduler_config.json"))).unwrap();
    let scheduler = DdimScheduler::new(&config, steps).unwrap();
    let reference = load(&format!("{name}/reference.safetensors"));
    let timesteps = reference["timesteps"].to_vec1::<i64>().unwrap();
    let expected: Vec<usize> = timesteps.iter().map(|&t| t as usize).collect();
    assert_eq!(scheduler.timesteps(), expected.as_slice());
    let alpha_prod_t = reference["alpha_prod_t"].to_vec1::<f64>().unwrap();

    let mut latent = reference["init_latents"].clone();
    let (mut worst_alpha, mut worst_x0, mut worst_prev) = (0f64, 0f64, 0f64);
    for (i, &t) in scheduler.timesteps().iter().enumerate() {
        let model_output = reference["guided_model_output"].get(i).unwrap().unsqueeze(0).unwrap();
        let out = scheduler.step(&model_output, t, &latent, 0.0, None).unwrap();
        let x0 = reference["pred_original_sample"].get(i).unwrap().unsqueeze(0).unwrap();
        let next = reference["latents"].get(i).unwrap().unsqueeze(0).unwrap();
        let d_alpha = (out.alpha_prod_t - alpha_prod_t[i]).abs();
        let d_x0 = max_diff(&out.pred_original_sample, &x0);
        let d_prev = max_diff(&out.prev_sample, &next);
        println!("{name} step {i} t={t}: |d alpha_prod_t| {d_alpha:.1e}, |d x0| {d_x0:.1e}, |d latent| {d_prev:.1e}");
        (worst_alpha, worst_x0, worst_prev) = (worst_alpha.max(d_alpha), worst_x0.max(d_x0), worst_prev.max(d_prev));
        latent = next;
    }
    println!(
        "{name}: max |d alpha_prod_t| {worst_alpha:.1e}, max |d x0| {worst_x0:.1e}, max |d latent| {worst_prev:.1e}"
    );
    assert!(worst_alpha <= 1e-9, "{name}: alpha_prod_t off by {worst_alpha}");
    assert!(worst_x0 <= 1e-5 && worst_prev <= 1e-5, "{name}: step off by {worst_x0} / {worst_prev}");
}

#[test]
fn sd2_tiny_reference_run() {
    check_reference_run("sd2-tiny");
}

#[test]
fn sd15_tiny_reference_run() {
    check_reference_run("sd15-tiny");
}

/// Timesteps, `alphas_cumprod` and `alpha_prod_t_prev` over the grid of
/// spacings, step counts, offsets and beta schedules diffusers was run on;
/// the cases diffusers refuses (or would index out of range) must be errors.
#[test]
fn schedule_grid_matches_diffusers() {
    let cases = read_json("scheduler/schedule_cases.json");
    let alphas = load("scheduler/alphas_cumprod.safetensors");
    let (mut worst_cumprod, mut worst_prev, mut checked, mut refused) = (0f64, 0f64, 0, 0);
    let mut per_betas = std::collections::BTreeMap::new();
    for case in cases["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let betas = case["betas"].as_str().unwrap();
        let config = config_of(&cases["betas"][betas], &case["config"]);
        let steps = case["steps"].as_u64().unwrap() as usize;
        let result = DdimScheduler::new(&config, steps);
        let Some(prevs) = case["alpha_prod_t_prev"].as_array() else {
            let err = result.expect_err(name);
            let said = case["error"].as_str().unwrap_or("(no error, timesteps out of range)");
            println!("{name}: refused: {err:#}\n    diffusers: {said}");
            refused += 1;
            continue;
        };
        let scheduler = result.unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let key = case["timesteps"].as_str().unwrap();
        let expected: Vec<usize> =
            cases["timesteps"][key].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as usize).collect();
        assert_eq!(scheduler.timesteps(), expected.as_slice(), "{name}");

        let reference = alphas[betas].to_vec1::<f32>().unwrap();
        assert_eq!(scheduler.alphas_cumprod().len(), reference.len(), "{name}");
        let d_cumprod = scheduler
            .alphas_cumprod()
            .iter()
            .zip(&reference)
            .map(|(ours, theirs)| (ours - f64::from(*theirs)).abs())
            .fold(0.0, f64::max);
        per_betas.entry(betas).and_modify(|d: &mut f64| *d = d.max(d_cumprod)).or_insert(d_cumprod);
        worst_cumprod = worst_cumprod.max(d_cumprod);
        let exact = !betas.ends_with("_zsnr");
        let last = &scheduler.timesteps()[scheduler.timesteps().len().saturating_sub(3)..];
        for (&t, theirs) in last.iter().zip(prevs) {
            let d = (scheduler.alpha_prod_t_prev(t) - theirs.as_f64().unwrap()).abs();
            assert!(!exact || d <= 1e-9, "{name}: alpha_prod_t_prev({t}) off by {d}");
            worst_prev = worst_prev.max(d);
        }
        checked += 1;
    }
    for (betas, d) in &per_betas {
        println!("alphas_cumprod of {betas}: max |d| {d:.1e}");
    }
    println!(
        "{checked} schedules checked, {refused} refused: max |d alphas_cumprod| {worst_cumprod:.1e}, \
         max |d alpha_prod_t_prev| {worst_prev:.1e}"
    );
    assert!(checked > 250);
    // torch's CPU sqrt (used only by rescale_betas_zero_snr) is MKL's vsSqrt, not
    // correctly rounded (1 ulp off for ~20% of float32 inputs with torch 2.15 on the
    // machine that made the cases); everything else must be bit-identical.
    for (betas, d) in per_betas {
        let bound = if betas.ends_with("_zsnr") { 1e-6 } else { 1e-9 };
        assert!(d <= bound, "alphas_cumprod of {betas} off by {d}");
    }
    assert!(worst_prev <= 1e-6);
}

/// `step` against diffusers' `DDIMScheduler.step` for every prediction type,
/// clip on/off, eta 0 and 0.7 (with the recorded variance noise), at the
/// first, middle and last timestep of three configs.
#[test]
fn step_cases_match_diffusers() {
    let cases = read_json("scheduler/step_cases.json");
    let tensors = load("scheduler/step_cases.safetensors");
    let (sample, model_output, noise) = (&tensors["sample"], &tensors["model_output"], &tensors["variance_noise"]);
    let (mut worst_abs, mut worst_rel) = (0f64, 0f64);
    for case in cases["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let config = config_of(&case["config"], &Value::Object(Default::default()));
        let steps = case["steps"].as_u64().unwrap() as usize;
        let scheduler = DdimScheduler::new(&config, steps).unwrap();
        let t = case["timestep"].as_u64().unwrap() as usize;
        let eta = case["eta"].as_f64().unwrap();
        let out = scheduler.step(model_output, t, sample, eta, (eta > 0.0).then_some(noise)).unwrap();
        let prev = &tensors[&format!("{name}/prev_sample")];
        let x0 = &tensors[&format!("{name}/pred_original_sample")];
        let (d_prev, d_x0) = (max_diff(&out.prev_sample, prev), max_diff(&out.pred_original_sample, x0));
        let (r_prev, r_x0) = (max_rel_diff(&out.prev_sample, prev), max_rel_diff(&out.pred_original_sample, x0));
        println!(
            "{name}: prev_sample |d| {d_prev:.1e} (rel {r_prev:.1e}), \
             pred_original_sample |d| {d_x0:.1e} (rel {r_x0:.1e})"
        );
        worst_abs = worst_abs.max(d_prev).max(d_x0);
        worst_rel = worst_rel.max(r_prev).max(r_x0);
    }
    println!(
        "{} step cases: max |d| {worst_abs:.1e}, max |d| / max(1, |x|) {worst_rel:.1e}",
        cases["cases"].as_array().unwrap().len()
    );
    // The step's coefficients are square roots; torch's are not correctly
    // rounded (see schedule_grid_matches_diffusers), so outputs may be an ulp
    // or two off: 1e-6 relative to the value's size (at least 1).
    assert!(worst_rel <= 1e-6, "max relative diff {worst_rel}");
}

#[test]
fn scheduler_is_shareable() {
    fn assert_traits<T: Send + Sync + Clone>() {}
    assert_traits::<DdimScheduler>();
}

#[test]
fn bad_step_counts_and_missing_noise_are_errors() {
    let config = SchedulerConfig::default();
    let err = DdimScheduler::new(&config, 0).unwrap_err();
    println!("{err:#}");
    assert!(format!("{err:#}").contains("at least 1"));
    let err = DdimScheduler::new(&config, 1001).unwrap_err();
    println!("{err:#}");
    assert!(format!("{err:#}").contains("cannot be larger than num_train_timesteps (1000)"));

    let scheduler = DdimScheduler::new(&config, 10).unwrap();
    let x = Tensor::zeros((1, 4, 2, 2), DType::F32, &Device::Cpu).unwrap();
    let err = scheduler.step(&x, 901, &x, 0.5, None).unwrap_err();
    println!("{err}");
    assert!(err.to_string().contains("needs variance_noise"));
    let err = scheduler.step(&x, 1000, &x, 0.0, None).unwrap_err();
    assert!(err.to_string().contains("outside 0..1000"), "{err}");
}

/// Half-precision inputs come back in half precision, equal to the f32
/// result rounded to f16.
#[test]
fn half_precision_keeps_its_dtype() {
    let tensors = load("scheduler/step_cases.safetensors");
    let config = config_of(
        &serde_json::json!({"beta_schedule": "scaled_linear", "beta_start": 0.00085,
                            "beta_end": 0.012, "prediction_type": "v_prediction"}),
        &Value::Object(Default::default()),
    );
    let scheduler = DdimScheduler::new(&config, 10).unwrap();
    let half = |t: &Tensor| t.to_dtype(DType::F16).unwrap();
    let (sample, model_output, noise) =
        (half(&tensors["sample"]), half(&tensors["model_output"]), half(&tensors["variance_noise"]));
    let f16_out = scheduler.step(&model_output, 501, &sample, 0.7, Some(&noise)).unwrap();
    assert_eq!(f16_out.prev_sample.dtype(), DType::F16);
    assert_eq!(f16_out.pred_original_sample.dtype(), DType::F16);
    let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
    let f32_out = scheduler.step(&f32(&model_output), 501, &f32(&sample), 0.7, Some(&f32(&noise))).unwrap();
    let d = max_diff(&f16_out.prev_sample, &half(&f32_out.prev_sample));
    println!("f16 vs f32 rounded to f16: {d:.1e}");
    assert_eq!(d, 0.0);
}

fn finite(t: &Tensor) -> bool {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|v| v.is_finite())
}

/// At eta 1, `1 - alpha_prod_t_prev - std_dev_t^2` is 0 or more in exact
/// arithmetic but can round to -9e-10 in float32 (here from t = 1 to 0), where
/// the square root used to give NaN (as torch's does): it is taken as 0.
#[test]
fn eta_one_stays_finite_where_rounding_goes_below_zero() {
    let config =
        SchedulerConfig::from_json_str(r#"{"num_train_timesteps": 2, "trained_betas": [0.015, 0.999999]}"#).unwrap();
    let scheduler = DdimScheduler::new(&config, 2).unwrap();
    assert_eq!(scheduler.timesteps(), [1, 0]);
    let x = Tensor::new(&[[[[0.5f32, -1.0]]]], &Device::Cpu).unwrap();
    let out = scheduler.step(&x, 1, &x, 1.0, Some(&x)).unwrap();
    assert!(finite(&out.prev_sample), "{}", out.prev_sample);
    // No direction term is left: prev_sample = sqrt(a_prev) x0 + std_dev_t noise.
    let a_prev = out.alpha_prod_t_prev as f32;
    assert_eq!(f64::from(a_prev), 0.985f32 as f64);
    assert!((out.std_dev_t - f64::from(1.0 - a_prev).sqrt()).abs() < 1e-6, "{}", out.std_dev_t);
}

/// Above eta 1 the noise can be more than the step can hold; the step used to
/// return NaN latents (a black image), it is now an error naming eta.
#[test]
fn eta_too_large_for_a_step_is_an_error() {
    let config = SchedulerConfig::from_json_str(
        r#"{"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
            "steps_offset": 1, "set_alpha_to_one": false}"#,
    )
    .unwrap();
    let scheduler = DdimScheduler::new(&config, 50).unwrap();
    let x = Tensor::new(&[[[[0.5f32, -1.0]]]], &Device::Cpu).unwrap();
    let ok = scheduler.step(&x, 1, &x, 1.2, Some(&x)).unwrap();
    assert!(finite(&ok.prev_sample), "eta 1.2 still fits the last step of SD's schedule");
    let err = scheduler.step(&x, 1, &x, 2.0, Some(&x)).unwrap_err().to_string();
    println!("{err}");
    assert!(err.starts_with("DDIM step: eta 2 is too large for the step from timestep 1"), "{err}");
}

/// rescale_betas_zero_snr makes alpha_prod_t 0 at the last training timestep,
/// where an epsilon prediction divides by zero (inf / NaN in diffusers).
#[test]
fn epsilon_at_zero_snr_is_an_error() {
    let zsnr = r#"{"rescale_betas_zero_snr": true, "timestep_spacing": "trailing", "clip_sample": false"#;
    let x = Tensor::new(&[[[[0.5f32, -1.0]]]], &Device::Cpu).unwrap();
    let epsilon = SchedulerConfig::from_json_str(&format!("{zsnr}}}")).unwrap();
    let scheduler = DdimScheduler::new(&epsilon, 10).unwrap();
    assert_eq!(scheduler.timesteps()[0], 999);
    let err = scheduler.step(&x, 999, &x, 0.0, None).unwrap_err().to_string();
    assert!(err.starts_with("DDIM step: timestep 999 has alphas_cumprod 0"), "{err}");
    assert!(finite(&scheduler.step(&x, 899, &x, 0.0, None).unwrap().prev_sample));
    let v = SchedulerConfig::from_json_str(&format!(r#"{zsnr}, "prediction_type": "v_prediction"}}"#)).unwrap();
    let out = DdimScheduler::new(&v, 10).unwrap().step(&x, 999, &x, 0.0, None).unwrap();
    assert!(finite(&out.prev_sample) && finite(&out.pred_original_sample));
}

/// A config built in code is checked like one read from JSON: these used to
/// panic (`alphas_cumprod[0]` of an empty schedule) or overflow.
#[test]
fn configs_built_in_code_are_checked_too() {
    let empty = SchedulerConfig { trained_betas: Some(Vec::new()), set_alpha_to_one: false, ..Default::default() };
    let err = DdimScheduler::new(&empty, 10).unwrap_err().to_string();
    assert_eq!(err, "trained_betas: expected 1000 values (num_train_timesteps), found 0");
    let offset = SchedulerConfig { steps_offset: usize::MAX, ..Default::default() };
    let err = DdimScheduler::new(&offset, 10).unwrap_err().to_string();
    assert!(err.starts_with("steps_offset: expected 0 to 999"), "{err}");
}
