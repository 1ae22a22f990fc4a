//! What each slide shows of the code: the stage function's source, embedded from
//! `src/stages/` at build time so it is always the code that runs, which of its lines
//! the current operation is, and the run's values beside the lines they belong to.
//!
//! Lines are found by marker substrings, each of which must be on exactly one line of
//! the function: the tests below fail when a stage's source changes under a marker.

use std::sync::OnceLock;

use super::source::{extract, Function};
use super::{DenoiseAt, DenoiseOp};
use crate::scheduler::SamplerName;
use crate::tui::app::{App, Screen};
use crate::tui::views::Landing;

/// Where a stage function lives.
pub struct StageSource {
    /// The file, as the README and the panel name it.
    pub path: &'static str,
    /// The function that runs the stage.
    pub function: &'static str,
    file: &'static str,
}

const SOURCES: [StageSource; 4] = [
    StageSource {
        path: "src/stages/encode_prompt.rs",
        function: "encode_prompt",
        file: include_str!("../../stages/encode_prompt.rs"),
    },
    StageSource {
        path: "src/stages/get_latent.rs",
        function: "get_latent",
        file: include_str!("../../stages/get_latent.rs"),
    },
    StageSource {
        path: "src/stages/denoise.rs",
        function: "denoise_step",
        file: include_str!("../../stages/denoise.rs"),
    },
    StageSource {
        path: "src/stages/vae_decode.rs",
        function: "vae_decode",
        file: include_str!("../../stages/vae_decode.rs"),
    },
];

/// The stage's file and function.
pub fn source(screen: Screen) -> &'static StageSource {
    &SOURCES[screen.index()]
}

/// Each sampler's `step`, which the denoise slide shows at its scheduler operation,
/// with the lines that predict x0 and that make the next latent.
struct SamplerSource {
    names: &'static [SamplerName],
    source: StageSource,
    x0: &'static str,
    prev: &'static str,
}

macro_rules! sampler_source {
    ($names:expr, $file:literal, $x0:literal, $prev:literal) => {
        SamplerSource {
            names: $names,
            source: StageSource {
                path: concat!("src/scheduler/", $file),
                function: "step",
                file: include_str!(concat!("../../scheduler/", $file)),
            },
            x0: $x0,
            prev: $prev,
        }
    };
}

const SAMPLER_SOURCES: [SamplerSource; 8] = [
    sampler_source!(
        &[SamplerName::Ddim],
        "ddim.rs",
        "let pred_original_sample = if self.config.clip_sample",
        "let mut prev_sample = (pred_original_sample.affine(sqrt_a_prev"
    ),
    sampler_source!(&[SamplerName::Pndm], "pndm.rs", "let eps = match ets.len()", "self.prev_sample(&start, step_from"),
    sampler_source!(&[SamplerName::Lms], "lms.rs", "let x0 = sigma_x0(", "let prev_sample = (&sample + sum"),
    sampler_source!(&[SamplerName::Heun], "heun.rs", "let x0 = sigma_x0(", "let prev_sample = (&from + derivative"),
    sampler_source!(
        &[SamplerName::Euler, SamplerName::EulerKarras, SamplerName::EulerA],
        "euler.rs",
        "let pred_original_sample = sigma_x0(",
        "let mut prev_sample = (&sample + derivative"
    ),
    sampler_source!(
        &[SamplerName::Dpmpp2m, SamplerName::Dpmpp2mKarras],
        "dpmpp.rs",
        "let x0 = match self.prediction_type",
        "let first_order = (&sample.affine("
    ),
    sampler_source!(
        &[SamplerName::UniPc],
        "unipc.rs",
        "let x0 = self.convert_model_output(",
        "let prev_sample = self.bh_update(&corrected"
    ),
    sampler_source!(&[SamplerName::Lcm], "lcm.rs", "let denoised = (x0.affine(", "let prev_sample = if last"),
];

/// The `step` function of sampler `name`, its file, and its x0 and next-latent markers.
pub fn sampler_step(
    name: SamplerName,
) -> Option<(&'static StageSource, &'static Function<'static>, [&'static str; 2])> {
    static FUNCTIONS: OnceLock<Vec<Option<Function<'static>>>> = OnceLock::new();
    let functions =
        FUNCTIONS.get_or_init(|| SAMPLER_SOURCES.iter().map(|s| extract(s.source.file, s.source.function)).collect());
    let i = SAMPLER_SOURCES.iter().position(|s| s.names.contains(&name))?;
    let s = &SAMPLER_SOURCES[i];
    Some((&s.source, functions[i].as_ref()?, [s.x0, s.prev]))
}

/// The stage function's source, cut out of its file once. `None` only if a stage
/// function were renamed without updating [`SOURCES`], which the tests catch.
pub fn function(screen: Screen) -> Option<&'static Function<'static>> {
    static FUNCTIONS: OnceLock<Vec<Option<Function<'static>>>> = OnceLock::new();
    let functions = FUNCTIONS.get_or_init(|| SOURCES.iter().map(|s| extract(s.file, s.function)).collect());
    functions[screen.index()].as_ref()
}

/// Lines of `encode_prompt`.
mod encode {
    pub const PROMPT: &str = "let prompt = tokenizer.encode(prompt)";
    pub const NEGATIVE: &str = "let negative = tokenizer.encode(negative_prompt)";
    pub const INPUT_IDS: &str = "let input_ids = Tensor::new(";
    pub const FORWARD: &str = "text_encoder.forward(&input_ids)";
    #[cfg(test)]
    pub const ALL: &[&str] = &[PROMPT, NEGATIVE, INPUT_IDS, FORWARD];
}

/// Lines of `get_latent`.
mod latent {
    pub const RNG: &str = "rng: &mut TorchRng,";
    pub const SHAPE: &str = "shape: [usize; 4],";
    pub const RANDN: &str = "rng.randn_tensor(&shape)";
    pub const CAST: &str = "noise.to_dtype(dtype)?.to_device(device)";
    #[cfg(test)]
    pub const ALL: &[&str] = &[RNG, SHAPE, RANDN, CAST];
}

/// Lines of `denoise_step`.
mod denoise {
    pub const LATENTS: &str = "latents: &Tensor,";
    pub const PROMPT_EMBEDS: &str = "prompt_embeds: &Tensor,";
    pub const GUIDE: &str = "Guidance { guidance_scale, eta }: Guidance,";
    pub const T: &str = "let t = sampler.timestep(index)?;";
    pub const CAT: &str = "Tensor::cat(&[&scaled, &scaled], 0)";
    pub const UNET: &str = "unet.forward(&latent_model_input";
    pub const CHUNK: &str = "noise_pred.narrow(0, 0, 1)";
    pub const TEXT_EMBEDS: &str = "prompt_embeds.narrow(0, 1, 1)";
    pub const UNET_TEXT: &str = "unet.forward(&scaled";
    pub const GUIDANCE: &str = "(&noise_pred_text - uncond)? * guidance_scale";
    pub const NO_GUIDANCE: &str = "None => noise_pred_text.clone()";
    pub const STEP: &str = "sampler.step(index, &guided_model_output";
    #[cfg(test)]
    pub const ALL: &[&str] =
        &[LATENTS, PROMPT_EMBEDS, GUIDE, T, CAT, UNET, CHUNK, TEXT_EMBEDS, UNET_TEXT, GUIDANCE, NO_GUIDANCE, STEP];
}

/// Lines of `vae_decode`.
mod decode {
    pub const LATENTS: &str = "latents: &Tensor) -> Result<Tensor>";
    pub const TO_DTYPE: &str = "latents.to_dtype(vae_dtype)";
    pub const DECODE: &str = "vae.decode(&latents)";
    #[cfg(test)]
    pub const ALL: &[&str] = &[LATENTS, TO_DTYPE, DECODE];
}

/// What the code panel marks now: markers of the lines to highlight, and values to show
/// beside the lines their markers find.
#[derive(Debug, Default, PartialEq)]
pub struct Live {
    pub highlight: Vec<&'static str>,
    pub values: Vec<(&'static str, String)>,
    /// At the denoise slide's scheduler operation: the panel shows this sampler's
    /// `step` (and the markers are its lines), not the stage function.
    pub sampler: Option<SamplerName>,
}

/// The current slide's highlighted lines and values, from the plain data the app holds.
pub fn live(app: &App) -> Live {
    match app.screen {
        Screen::EncodePrompt => encode_live(app),
        Screen::GetLatent => latent_live(app),
        Screen::Denoise => denoise_live(app),
        Screen::VaeDecode => decode_live(app),
    }
}

fn encode_live(app: &App) -> Live {
    let mut live = Live::default();
    if let Some(view) = &app.encode {
        let words = |p: &crate::model::tokenizer::TokenizedPrompt| {
            p.tokens.iter().filter(|t| t.kind != crate::model::tokenizer::TokenKind::Pad).count()
        };
        let total = view.prompt.ids.len();
        live.values = vec![
            (encode::PROMPT, format!("{} / {total} tokens", words(&view.prompt))),
            (encode::NEGATIVE, format!("{} / {total} tokens", words(&view.negative))),
            (encode::INPUT_IDS, format!("input_ids: [2, {total}]")),
            (encode::FORWARD, format!("prompt_embeds: {:?} {}", view.shape, view.dtype)),
        ];
        live.highlight = vec![encode::PROMPT, encode::FORWARD];
    } else if app.busy.is_some() {
        live.highlight = vec![encode::FORWARD];
    }
    live
}

fn latent_live(app: &App) -> Live {
    let mut live = Live::default();
    if let Some(view) = &app.latent {
        // every channel has as many values, so the overall moments follow from theirs
        let n = view.channel_stats.len().max(1) as f64;
        let mean = view.channel_stats.iter().map(|s| s.mean).sum::<f64>() / n;
        let square = view.channel_stats.iter().map(|s| s.std * s.std + s.mean * s.mean).sum::<f64>() / n;
        let std = (square - mean * mean).max(0.0).sqrt();
        live.values = vec![
            (latent::RNG, format!("seed {}", view.seed)),
            (latent::SHAPE, format!("{:?}", view.shape)),
            (latent::RANDN, format!("noise: mean {mean:.4}, std {std:.4}")),
        ];
        if let Some(info) = &app.info {
            live.values.push((latent::CAST, format!("{} on {}", info.dtype, info.device)));
        }
        live.highlight = vec![latent::RANDN];
    } else if app.busy.is_some() {
        live.highlight = vec![latent::RANDN];
    }
    live
}

fn denoise_live(app: &App) -> Live {
    let mut live = Live::default();
    let latent_shape = app.latent.as_ref().map(|l| l.shape.clone());
    if let Some(shape) = &latent_shape {
        live.values.push((denoise::LATENTS, format!("{shape:?}")));
    }
    if let Some(view) = &app.encode {
        live.values.push((denoise::PROMPT_EMBEDS, format!("{:?}", view.shape)));
    }
    let index = app.talk.denoise.step().unwrap_or(0);
    let done = app.history.get(index);
    let guidance_scale = done.map_or(app.guidance_scale, |s| s.guidance_scale);
    let eta = app.info.as_ref().map_or(0.0, |i| i.settings.eta);
    live.values.push((denoise::GUIDE, format!("guidance_scale = {guidance_scale}, eta = {eta}")));
    if let Some(t) = app.talk_timestep(index) {
        live.values.push((denoise::T, format!("t = {t}")));
    }
    let DenoiseAt::Step { op, .. } = app.talk.denoise else { return live };
    let guided = guidance_scale > 1.0;
    match op {
        DenoiseOp::Unet if guided => {
            live.highlight = vec![denoise::CAT, denoise::UNET, denoise::CHUNK];
            if let Some(shape) = &latent_shape {
                let doubled: Vec<usize> =
                    shape.iter().enumerate().map(|(i, &d)| if i == 0 { 2 * d } else { d }).collect();
                live.values.push((denoise::CAT, format!("latent_model_input: {doubled:?}")));
                live.values.push((denoise::UNET, format!("noise_pred: {doubled:?}")));
            }
        }
        DenoiseOp::Unet => {
            live.highlight = vec![denoise::TEXT_EMBEDS, denoise::UNET_TEXT];
            if let Some(shape) = &latent_shape {
                live.values.push((denoise::UNET_TEXT, format!("UNet input: {shape:?}")));
            }
        }
        DenoiseOp::Guidance if guided => {
            live.highlight = vec![denoise::GUIDANCE];
            live.values.push((denoise::GUIDANCE, format!("uncond + {guidance_scale} * (text - uncond)")));
        }
        DenoiseOp::Guidance => live.highlight = vec![denoise::NO_GUIDANCE],
        DenoiseOp::Scheduler => {
            let sampler = app.info.as_ref().and_then(|i| SamplerName::from_name(&i.sampler).ok());
            let Some((_, _, [x0, prev])) = sampler.and_then(sampler_step) else {
                live.highlight = vec![denoise::STEP];
                return live;
            };
            // the sampler's own step, its values beside the lines that use them
            live = Live { sampler, highlight: vec![x0, prev], ..Live::default() };
            if let Some(s) = done {
                let (at, to) = match s.landing {
                    Landing::Timestep(prev) => (
                        format!("t {}: alpha_prod_t {:.4}", s.timestep, s.alpha_prod_t),
                        format!("-> t {prev}: alpha_prod_t_prev {:.4}", s.alpha_prod_t_prev),
                    ),
                    Landing::Sigma { sigma, next } => (
                        format!("t {}: sigma {sigma:.4} (alpha_prod_t {:.4})", s.timestep, s.alpha_prod_t),
                        format!("-> sigma {next:.4}"),
                    ),
                };
                live.values = vec![(x0, at), (prev, to)];
            }
        }
    }
    live
}

fn decode_live(app: &App) -> Live {
    let mut live = Live::default();
    if let Some(info) = &app.info {
        live.values.push((decode::TO_DTYPE, format!("vae_dtype = {}", info.dtype)));
    }
    match &app.decoded {
        Some(view) => {
            let steps = format!("after step {} / {}", view.steps_done, app.total_steps());
            let shape = app.latent.as_ref().map(|l| format!("{:?} ", l.shape)).unwrap_or_default();
            live.values.push((decode::LATENTS, format!("latents: {shape}{steps}")));
            let (w, h) = view.image.dimensions();
            live.values.push((decode::DECODE, format!("image: [1, 3, {h}, {w}]")));
            live.highlight = vec![decode::DECODE];
        }
        None if app.busy.is_some() => live.highlight = vec![decode::DECODE],
        None => {}
    }
    live
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each stage's markers, as the slides use them.
    const MARKERS: [(Screen, &[&str]); 4] = [
        (Screen::EncodePrompt, encode::ALL),
        (Screen::GetLatent, latent::ALL),
        (Screen::Denoise, denoise::ALL),
        (Screen::VaeDecode, decode::ALL),
    ];

    #[test]
    fn every_stage_function_is_found_in_its_own_file() {
        for screen in Screen::ALL {
            let source = source(screen);
            let function =
                function(screen).unwrap_or_else(|| panic!("no pub fn {} in {}", source.function, source.path));
            assert!(function.text.starts_with(&format!("pub fn {}(", source.function)), "{}", function.text);
            assert!(function.text.ends_with('}'));
            // the line number is where the function is in the file on disk
            let file = std::fs::read_to_string(source.path).unwrap();
            let line = file.lines().nth(function.first_line - 1).unwrap();
            assert_eq!(line, function.text.lines().next().unwrap());
        }
    }

    /// A stage's source changed under a marker: update the marker in this file (and
    /// check that the slide still highlights the operation it means).
    #[test]
    fn every_marker_is_on_exactly_one_line_of_its_stage_function() {
        for (screen, markers) in MARKERS {
            let function = function(screen).unwrap();
            for marker in markers {
                assert!(
                    function.line_of(marker).is_some(),
                    "{marker:?} is on {} lines of {}",
                    function.text.lines().filter(|l| l.contains(marker)).count(),
                    source(screen).function
                );
            }
        }
    }

    /// Each sampler's step is found in its file, with its two markers on one line each.
    #[test]
    fn every_sampler_step_and_its_markers_are_found() {
        for &name in SamplerName::ALL {
            let (source, function, markers) = sampler_step(name).unwrap_or_else(|| panic!("no step for {name}"));
            assert!(function.text.trim_start().starts_with("pub fn step("), "{}", source.path);
            let file = std::fs::read_to_string(source.path).unwrap();
            let line = file.lines().nth(function.first_line - 1).unwrap();
            assert_eq!(line, function.text.lines().next().unwrap());
            for marker in markers {
                assert!(function.line_of(marker).is_some(), "{marker:?} is not on exactly one line of {}", source.path);
            }
        }
    }

    /// The slides are meant to be read whole: at 120x40 the code panel has about 33 rows.
    #[test]
    fn every_stage_function_fits_a_slide() {
        for screen in Screen::ALL {
            let lines = function(screen).unwrap().text.lines().count();
            assert!(lines <= 28, "{} has {lines} lines: too long for a slide", source(screen).function);
        }
    }
}
