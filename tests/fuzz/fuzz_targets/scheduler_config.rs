//! The scheduler config reader and the DDIM scheduler on arbitrary text: a model's
//! or a session's `scheduler_config.json` is read before any weight, and whatever
//! it holds, the result is a config or an error naming the key, never a panic. An
//! accepted config must give, for any step count and eta, either an error or
//! timesteps in range and DDIM steps with finite results.
//!
//! The input is the JSON text, then optionally a NUL byte and parameters: pairs of
//! bytes choose step counts (a little-endian u16 each, modulo num_train_timesteps,
//! plus 1) and a last odd byte chooses eta (byte / 128, so 0 to 2). Without them,
//! 1, 7, 50 and num_train_timesteps steps at eta 0 and 1 are tried.
#![no_main]

use candle_core::{DType, Device, Tensor};
use libfuzzer_sys::fuzz_target;
use sdlab::scheduler::{DdimScheduler, SchedulerConfig};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (json, params) = data.split_at(split);
    let Ok(text) = std::str::from_utf8(json) else { return };
    let Ok(config) = SchedulerConfig::from_json_str(text) else { return };
    let train = config.num_train_timesteps;
    let params = params.get(1..).unwrap_or_default();
    let (steps, etas) = if params.is_empty() {
        (vec![1, 7, 50, train], vec![0.0, 1.0])
    } else {
        let steps = params.chunks_exact(2).map(|p| usize::from(u16::from_le_bytes([p[0], p[1]])) % train + 1);
        let eta = params.chunks_exact(2).remainder().first().map_or(0.0, |&b| f64::from(b) / 128.0);
        (steps.take(4).collect(), vec![eta])
    };
    for n in steps {
        let Ok(scheduler) = DdimScheduler::new(&config, n) else { continue };
        check_schedule(&scheduler, train);
        for &eta in &etas {
            check_steps(&scheduler, eta);
        }
    }
});

/// Timesteps within the training range, `alphas_cumprod` within [0, 1).
fn check_schedule(scheduler: &DdimScheduler, train: usize) {
    assert!(!scheduler.timesteps().is_empty());
    assert!(scheduler.timesteps().iter().all(|&t| t < train), "{:?}", scheduler.timesteps());
    assert_eq!(scheduler.alphas_cumprod().len(), train);
    assert!(scheduler.alphas_cumprod().iter().all(|a| (0.0..1.0).contains(a)));
    for &t in scheduler.timesteps() {
        let prev = scheduler.alpha_prod_t_prev(t);
        assert!(prev > 0.0 && prev <= 1.0, "alpha_prod_t_prev({t}) = {prev}");
    }
}

/// A step from the first and last few timesteps is an error or finite.
fn check_steps(scheduler: &DdimScheduler, eta: f64) {
    let device = &Device::Cpu;
    let tensor = |v: [f32; 2]| Tensor::new(&v, device).unwrap().reshape((1, 1, 1, 2)).unwrap();
    let (sample, model_output, noise) = (tensor([0.5, -1.0]), tensor([0.25, -0.75]), tensor([1.0, -1.0]));
    let timesteps = scheduler.timesteps();
    let ends = timesteps.iter().take(8).chain(timesteps.iter().rev().take(8));
    for &t in ends {
        let Ok(step) = scheduler.step(&model_output, t, &sample, eta, Some(&noise)) else { continue };
        for (name, out) in [("prev_sample", &step.prev_sample), ("pred_original_sample", &step.pred_original_sample)] {
            let values = out.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(values.iter().all(|v| v.is_finite()), "t {t}, eta {eta}: {name} {values:?}, {step:?}");
        }
    }
}
