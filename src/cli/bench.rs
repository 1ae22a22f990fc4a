//! `sdlab bench`: how long each stage takes and how much memory a run needs, measured
//! the way `bench/bench_diffusers.py` measures diffusers, so the two can sit side by side.

use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor};
use clap::Args;
use sdlab::preview::latent_to_rgb;
use sdlab::rng::torch::TorchRng;
use sdlab::scheduler::{Sampler, SamplerName};
use sdlab::session::{Limits, Settings};
use sdlab::stages::{self, Guidance};
use serde::Serialize;

use super::ModelArgs;

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Image width (default: the model's).
    #[arg(long)]
    width: Option<usize>,
    #[arg(long)]
    height: Option<usize>,
    /// Timed denoising steps (after one untimed warm-up step).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Repeats of the one-off stages (encode, decode, ...), reported as min and median: 1 to 1000.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=1000))]
    repeats: u16,
    /// The sampler (see `generate --scheduler`).
    #[arg(long, default_value = "ddim", value_parser = super::generate::parse_scheduler)]
    scheduler: String,
    /// Allow image sides past 4096 pixels.
    #[arg(long)]
    allow_large: bool,
    /// Print one JSON object on one line instead of a table.
    #[arg(long)]
    json: bool,
}

/// The measurements; the first four keys are those bench_diffusers.py prints.
#[derive(Serialize)]
struct Report {
    load_s: f64,
    encode_s: f64,
    step_s: Vec<f64>,
    decode_s: f64,
    tokenize_s: f64,
    latent_s: f64,
    scheduler_s: f64,
    preview_s: f64,
    peak_rss_mb: f64,
    /// A whole run at the model's suggested step count (`run_steps`), from the
    /// measurements: load + text encode + steps x median step + VAE decode.
    run_s: f64,
    run_steps: usize,
    /// `null` on the CPU.
    peak_device_mb: Option<f64>,
    device: String,
    dtype: String,
    width: usize,
    height: usize,
    repeats: usize,
}

/// Times `f` once untimed (warm-up: kernels, caches, allocations), then `repeats` times,
/// returning the minimum and median seconds. GPU work is waited for before the clock stops.
fn time<T>(device: &Device, repeats: usize, mut f: impl FnMut() -> Result<T>) -> Result<(f64, f64)> {
    f()?;
    device.synchronize()?;
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        f()?;
        device.synchronize()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok((times[0], times[times.len() / 2]))
}

/// The process's peak resident memory (VmHWM), in MB; 0 where /proc is not there.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The most device memory candle's tensors held at once in this process, model load
/// included, in MB: the high-water mark of the stream-ordered pool cudarc allocates from,
/// read once at the end because the pool hands memory back at every synchronize, so
/// sampling between stages would miss the peaks inside them. Like torch's
/// `max_memory_allocated()`, nothing is subtracted and nothing outside the pool is in it:
/// the CUDA context, cuBLAS's workspace and the kernels come on top (nvidia-smi shows them).
/// `None` on the CPU, and on a GPU without memory pools (candle then allocates outside one).
#[cfg(feature = "cuda")]
fn peak_device_mb(device: &Device) -> Result<Option<f64>> {
    use candle_core::cuda_backend::cudarc::driver::{result, sys};
    let Device::Cuda(cuda) = device else { return Ok(None) };
    let context = cuda.cuda_stream().context().clone();
    if !context.has_async_alloc() {
        return Ok(None);
    }
    let mut used_high = 0u64;
    // SAFETY: the CUdevice comes from a live context, and USED_MEM_HIGH is a cuuint64_t.
    unsafe {
        let pool = result::device::get_mem_pool(context.cu_device())?;
        let attribute = sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH;
        result::mem_pool::get_attribute(pool, attribute, (&mut used_high as *mut u64).cast())?;
    }
    Ok(Some(used_high as f64 / (1024.0 * 1024.0)))
}

#[cfg(not(feature = "cuda"))]
fn peak_device_mb(_: &Device) -> Result<Option<f64>> {
    Ok(None)
}

pub fn run(args: BenchArgs) -> Result<()> {
    let start = Instant::now();
    let model = args.model.open()?;
    let load_s = start.elapsed().as_secs_f64();
    let device = model.device().clone();
    let (width, height) = (args.width.unwrap_or(model.default_size()), args.height.unwrap_or(model.default_size()));
    let scheduler = SamplerName::parse(&args.scheduler, &model.scheduler_config)?;
    let settings = Settings { width, height, steps: args.steps, scheduler, ..Settings::new("a photo of a cat", width) };
    settings.check(&Limits::of_model(&model, Limits::max_side(args.allow_large)))?;
    let repeats = usize::from(args.repeats);

    let prompt = &settings.prompt;
    let tokenize = time(&device, repeats, || Ok((model.tokenizer.encode(prompt)?, model.tokenizer.encode("")?)))?;
    let ids = {
        let (p, n) = (model.tokenizer.encode(prompt)?, model.tokenizer.encode("")?);
        Tensor::new(vec![n.ids, p.ids], &device)?
    };
    let text_encoder = model.text_encoder.get()?;
    let encode = time(&device, repeats, || Ok(text_encoder.forward(&ids)?))?;
    let prompt_embeds = text_encoder.forward(&ids)?;
    // as a session does once the prompt is encoded
    drop(text_encoder);
    model.text_encoder.release();

    let sampler = Sampler::new(settings.scheduler, &model.scheduler_config, settings.steps)?;
    let shape = stages::latent_shape(model.unet_config.in_channels, width, height, model.vae_scale_factor());
    let sigma = sampler.init_noise_sigma();
    let latent =
        time(&device, repeats, || stages::get_latent(&mut TorchRng::new(0), shape, sigma, &device, model.dtype()))?;

    let mut rng = TorchRng::new(0);
    let mut latents = stages::get_latent(&mut rng, shape, sigma, &device, model.dtype())?;
    let guide = Guidance { guidance_scale: settings.guidance_scale, eta: 0.0 };
    // warm-up step, untimed
    stages::denoise_step(&model.unet, &sampler, &latents, &[], &prompt_embeds, 0, guide, &mut rng, None)?;
    device.synchronize()?;
    let mut step_s = Vec::with_capacity(sampler.calls());
    let mut done: Vec<stages::DenoiseStep> = Vec::new();
    for index in 0..sampler.calls() {
        let started = Instant::now();
        let history: Vec<_> = done.iter().map(|s| &s.scheduler).collect();
        let step = stages::denoise_step(
            &model.unet,
            &sampler,
            &latents,
            &history,
            &prompt_embeds,
            index,
            guide,
            &mut rng,
            None,
        )?;
        device.synchronize()?;
        step_s.push(started.elapsed().as_secs_f64());
        latents = step.scheduler.prev_sample().clone();
        done.push(step);
    }
    // the last step again, from its own input and history
    let index = sampler.calls() - 1;
    let (last, earlier) = done.split_last().expect("at least one step");
    let history: Vec<_> = earlier.iter().map(|s| &s.scheduler).collect();
    let input = earlier.last().map_or(&latents, |s| s.scheduler.prev_sample());
    let scheduler_step = time(&device, repeats, || {
        Ok(sampler.step(index, &last.guided_model_output, input, &history, 0.0, &mut TorchRng::new(0))?)
    })?;
    let preview = time(&device, repeats, || latent_to_rgb(&latents))?;
    let decode =
        time(&device, repeats, || stages::vae_decode(&model.vae, &model.vae_config, model.vae_dtype, &latents))?;

    let run_steps = args.model.suggested().steps;
    let mut sorted = step_s.clone();
    sorted.sort_by(f64::total_cmp);
    let run_s = load_s + encode.1 + run_steps as f64 * sorted[sorted.len() / 2] + decode.1;
    let report = Report {
        load_s,
        encode_s: encode.0,
        step_s,
        decode_s: decode.0,
        tokenize_s: tokenize.0,
        latent_s: latent.0,
        scheduler_s: scheduler_step.0,
        preview_s: preview.0,
        peak_rss_mb: peak_rss_mb(),
        run_s,
        run_steps,
        peak_device_mb: peak_device_mb(&device)?,
        device: if device.is_cuda() { "cuda".into() } else { "cpu".into() },
        dtype: model.dtype().as_str().into(),
        width,
        height,
        repeats,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report, [tokenize, encode, latent, scheduler_step, preview, decode]);
    }
    Ok(())
}

fn print_table(r: &Report, timed: [(f64, f64); 6]) {
    println!(
        "sdlab bench: {}x{} on {} {}, min / median of {} repeats",
        r.width, r.height, r.device, r.dtype, r.repeats
    );
    println!("{:<28} {:>10}", "model load", format!("{:.3} s", r.load_s));
    let names = [
        "tokenize (both prompts)",
        "text encode (batch of 2)",
        "latent (torch randn)",
        "scheduler step",
        "latent preview (RGB)",
        "vae decode",
    ];
    for (name, (min, median)) in names.iter().zip(timed) {
        println!("{name:<28} {min:>8.4} s {median:>8.4} s");
    }
    let mut steps = r.step_s.clone();
    steps.sort_by(f64::total_cmp);
    if let (Some(min), Some(median)) = (steps.first(), steps.get(steps.len() / 2)) {
        println!("{:<28} {min:>8.4} s {median:>8.4} s  ({} steps)", "guided UNet step (x2 + CFG)", steps.len());
    }
    println!(
        "{:<28} {:>10}  (load + encode + {} x median step + decode)",
        "a whole run",
        format!("{:.3} s", r.run_s),
        r.run_steps
    );
    println!("{:<28} {:>8.0} MB", "peak resident memory", r.peak_rss_mb);
    if let Some(mb) = r.peak_device_mb {
        println!("{:<28} {mb:>8.0} MB", "peak device memory");
    }
}
