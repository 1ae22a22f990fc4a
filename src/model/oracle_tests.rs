//! sdlab's UNet and VAE against candle-transformers' on the same weights (a second
//! oracle beside the diffusers fixtures), and the taps against the config.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::stable_diffusion as reference;

use super::unet::{TapRecorder, UNetConfig, UNetObserver};
use super::{open, weights, Progress, Runtime, StableDiffusion};

const FIXTURES: [&str; 2] = ["sd2-tiny", "sd15-tiny"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn unet_file(model: &StableDiffusion) -> &crate::model::ModelFile {
    match &model.files.weights {
        crate::model::WeightFiles::Components { unet, .. } => unet,
        crate::model::WeightFiles::SingleFile(_) => unreachable!("the fixtures are folders"),
    }
}

fn vae_file(model: &StableDiffusion) -> &crate::model::ModelFile {
    match &model.files.weights {
        crate::model::WeightFiles::Components { vae, .. } => vae,
        crate::model::WeightFiles::SingleFile(_) => unreachable!("the fixtures are folders"),
    }
}

fn load(name: &str) -> StableDiffusion {
    open(fixture(name).join("model").to_str().unwrap(), None, Runtime::cpu(), &Progress::Quiet).unwrap()
}

fn reference_tensor(name: &str, key: &str) -> Tensor {
    let mut all = candle_core::safetensors::load(fixture(name).join("reference.safetensors"), &Device::Cpu).unwrap();
    all.remove(key).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

/// The UNet's input at the first step of the fixture's run: the initial latent,
/// twice (negative + prompt), with both prompts' embeddings.
fn first_step_input(name: &str) -> (Tensor, f64, Tensor) {
    let latent = reference_tensor(name, "init_latents");
    let t = reference_tensor(name, "timesteps").to_vec1::<i64>().unwrap()[0] as f64;
    (Tensor::cat(&[&latent, &latent], 0).unwrap(), t, reference_tensor(name, "prompt_embeds"))
}

#[test]
fn unet_agrees_with_candle_transformers() {
    for name in FIXTURES {
        let model = load(name);
        let c = &model.unet_config;
        let theirs = weights::load(unet_file(&model), DType::F32, &Device::Cpu, |vb| {
            Ok(reference::unet_2d::UNet2DConditionModel::new(vb, c.in_channels, c.out_channels, false, c.to_candle()?)?)
        })
        .unwrap();
        let (sample, t, context) = first_step_input(name);
        let ours = model.unet.forward(&sample, t, &context, None).unwrap();
        let diff = max_diff(&ours, &theirs.forward(&sample, t, &context).unwrap());
        println!("{name}: UNet vs candle-transformers max abs diff {diff:.3e}");
        assert!(diff < 1e-4, "{name}: {diff}");
    }
}

#[test]
fn vae_decoder_agrees_with_candle_transformers() {
    for name in FIXTURES {
        let model = load(name);
        let v = &model.vae_config;
        let config = reference::vae::AutoEncoderKLConfig {
            block_out_channels: v.block_out_channels.clone(),
            layers_per_block: v.layers_per_block,
            latent_channels: v.latent_channels,
            norm_num_groups: v.norm_num_groups,
            use_quant_conv: v.use_quant_conv,
            use_post_quant_conv: v.use_post_quant_conv,
        };
        let theirs = weights::load(vae_file(&model), DType::F32, &Device::Cpu, |vb| {
            Ok(reference::vae::AutoEncoderKL::new(vb, v.in_channels, v.out_channels, config)?)
        })
        .unwrap();
        let all = reference_tensor(name, "latents");
        let last = all.dim(0).unwrap() - 1;
        let latents = (all.narrow(0, last, 1).unwrap() / v.scaling_factor).unwrap();
        let image = model.vae.decode(&latents).unwrap();
        let decode_diff = max_diff(&image, &theirs.decode(&latents).unwrap());
        println!("{name}: VAE decode vs candle-transformers max abs diff {decode_diff:.3e}");
        assert!(decode_diff < 1e-4, "{name}: {decode_diff}");
    }
}

/// candle-transformers' encoder only returns a sampled latent, so the encoder is
/// checked against diffusers itself (tests/fixtures/make_vae_encode.py).
#[test]
fn vae_encoder_matches_diffusers() {
    for name in FIXTURES {
        let model = load(name);
        let path = fixture(name).join("vae_encode.safetensors");
        let expected = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
        let (mean, logvar) = model.vae.encode(&expected["image"]).unwrap();
        let (mean_diff, logvar_diff) = (max_diff(&mean, &expected["mean"]), max_diff(&logvar, &expected["logvar"]));
        println!("{name}: VAE encode vs diffusers max abs diff: mean {mean_diff:.3e}, logvar {logvar_diff:.3e}");
        assert!(mean_diff < 1e-4 && logvar_diff < 1e-4, "{name}: {mean_diff} {logvar_diff}");
    }
}

/// The talk's table, derived from the config alone: every top-level part's output
/// shape for a `(batch, in_channels, h, w)` input.
fn expected_blocks(c: &UNetConfig, batch: usize, h: usize, w: usize) -> Vec<(String, Vec<usize>)> {
    let n = c.block_out_channels.len();
    let at = |level: usize, ch: usize| vec![batch, ch, h >> level, w >> level];
    let mut rows =
        vec![("sample".to_string(), at(0, c.in_channels)), ("conv_in".into(), at(0, c.block_out_channels[0]))];
    for (i, &ch) in c.block_out_channels.iter().enumerate() {
        rows.push((format!("down_blocks.{i}"), at((i + 1).min(n - 1), ch)));
    }
    rows.push(("mid_block".into(), at(n - 1, c.block_out_channels[n - 1])));
    for i in 0..n {
        let level = if i + 1 < n { n - 2 - i } else { 0 };
        rows.push((format!("up_blocks.{i}"), at(level, c.block_out_channels[n - 1 - i])));
    }
    rows.push(("conv_out".into(), at(0, c.out_channels)));
    rows
}

/// How many cross-attention layers the config implies.
fn cross_attention_layers(c: &UNetConfig) -> usize {
    let depth = c.transformer_layers_per_block.for_blocks(c.block_out_channels.len(), "").unwrap();
    let n = depth.len();
    let down: usize = (0..n)
        .filter(|&i| c.down_block_types[i] == "CrossAttnDownBlock2D")
        .map(|i| c.layers_per_block * depth[i])
        .sum();
    let up: usize = (0..n)
        .filter(|&i| c.up_block_types[i] == "CrossAttnUpBlock2D")
        .map(|i| (c.layers_per_block + 1) * depth[n - 1 - i])
        .sum();
    down + up + depth[n - 1]
}

/// Checks every attention map as it arrives, then records it.
struct Checking {
    recorder: TapRecorder,
    worst_row_sum_error: f32,
}

impl UNetObserver for Checking {
    fn block(&mut self, name: &str, output: &Tensor) -> anyhow::Result<()> {
        self.recorder.block(name, output)
    }

    fn cross_attention(&mut self, layer: &str, size: (usize, usize), probs: &Tensor) -> anyhow::Result<()> {
        let (_, positions, _) = probs.dims3()?;
        assert_eq!(positions, size.0 * size.1, "{layer}");
        let error = (probs.sum(2)? - 1.0)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        self.worst_row_sum_error = self.worst_row_sum_error.max(error);
        self.recorder.cross_attention(layer, size, probs)
    }
}

#[test]
fn taps_follow_the_config_and_leave_the_output_bit_identical() {
    for name in FIXTURES {
        let model = load(name);
        let (sample, t, context) = first_step_input(name);
        let (_, _, h, w) = sample.dims4().unwrap();
        let plain = model.unet.forward(&sample, t, &context, None).unwrap();
        let mut checking = Checking { recorder: TapRecorder::new((h, w)), worst_row_sum_error: 0.0 };
        let observed = model.unet.forward(&sample, t, &context, Some(&mut checking)).unwrap();
        assert_eq!(
            plain.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            observed.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );

        let taps = checking.recorder.finish().unwrap();
        let got: Vec<(String, Vec<usize>)> = taps.blocks.iter().map(|b| (b.name.clone(), b.shape.clone())).collect();
        assert_eq!(got, expected_blocks(&model.unet_config, 2, h, w), "{name}");
        assert_eq!(taps.blocks.last().unwrap().stats, super::unet::TensorStats::of(&plain).unwrap());

        println!("{name}: attention rows sum to 1 within {:.1e}", checking.worst_row_sum_error);
        assert!(checking.worst_row_sum_error < 1e-5, "{name}");
        let maps = taps.attention.unwrap();
        assert_eq!(maps.layers.len(), cross_attention_layers(&model.unet_config), "{name}: {:?}", maps.layers);
        assert_eq!((maps.tokens, maps.height, maps.width), (77, h, w));
        // averaged over layers, each position's attention still sums to 1 over tokens
        for p in [0, h * w / 2 + 3, h * w - 1] {
            let total: f32 = (0..77).map(|k| maps.token(k).unwrap()[p]).sum();
            assert!((total - 1.0).abs() < 1e-5, "{name}: position {p} sums to {total}");
        }
    }
}

/// VAE checkpoints saved before diffusers 0.14 name the mid-block attention's
/// projections `query`/`key`/`value`/`proj_attn`, some as 1x1 convolutions: the
/// same weights under those names must decode to the same image.
#[test]
fn vae_loads_the_old_attention_names_and_conv_shapes() {
    let model = load("sd2-tiny");
    let tensors = candle_core::safetensors::load(vae_file(&model).path(), &Device::Cpu).unwrap();
    let renamed: std::collections::HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(name, t)| {
            let old =
                [(".to_q.", ".query."), (".to_k.", ".key."), (".to_v.", ".value."), (".to_out.0.", ".proj_attn.")]
                    .iter()
                    .find(|(new, _)| name.contains("attentions") && name.contains(new));
            match old {
                Some((new, old)) => {
                    let t = if name.ends_with("weight") { t.unsqueeze(2).unwrap().unsqueeze(3).unwrap() } else { t };
                    (name.replace(new, old), t)
                }
                None => (name, t),
            }
        })
        .collect();
    assert!(renamed.keys().any(|k| k.ends_with("attentions.0.proj_attn.weight")));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.safetensors");
    candle_core::safetensors::save(&renamed, &path).unwrap();
    let old = weights::load(&super::ModelFile::disk(&path), DType::F32, &Device::Cpu, |vb| {
        super::vae::AutoencoderKL::new(vb, &model.vae_config)
    })
    .unwrap();
    let latents = reference_tensor("sd2-tiny", "init_latents");
    let expected = model.vae.decode(&latents).unwrap();
    assert_eq!(max_diff(&old.decode(&latents).unwrap(), &expected), 0.0);
}
