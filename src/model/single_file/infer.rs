//! A single file carries no `config.json`: the architecture is read from the
//! tensors themselves (their names say which blocks exist, their shapes the
//! widths), and what no tensor shows comes from the family's rules. The result
//! is the JSON a diffusers folder would hold, parsed by the same code.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use super::names::{UNetLayout, CLIP, OPEN_CLIP, UNET, VAE};
use super::Family;

pub type Shapes = BTreeMap<String, Vec<usize>>;

/// The shape of `name`, or an error naming the tensor a model of this family must have.
fn shape<'a>(shapes: &'a Shapes, name: &str) -> Result<&'a [usize]> {
    shapes.get(name).map(Vec::as_slice).ok_or_else(|| anyhow!("missing tensor {name}"))
}

fn dim(shapes: &Shapes, name: &str, axis: usize) -> Result<usize> {
    let s = shape(shapes, name)?;
    s.get(axis).copied().ok_or_else(|| anyhow!("tensor {name}: expected at least {} dimensions, found {s:?}", axis + 1))
}

/// Counts `prefix{i}suffix` for i = 0, 1, ... while present.
fn count(shapes: &Shapes, prefix: &str, suffix: &str) -> usize {
    (0..).take_while(|i| shapes.contains_key(&format!("{prefix}{i}{suffix}"))).count()
}

fn has_prefix(shapes: &Shapes, prefix: &str) -> bool {
    shapes.range(prefix.to_string()..).next().is_some_and(|(name, _)| name.starts_with(prefix))
}

/// The UNet's config and the layout its names follow.
pub fn unet(shapes: &Shapes, family: Family) -> Result<(Value, UNetLayout)> {
    let conv_in = format!("{UNET}input_blocks.0.0.weight");
    let (c0, in_channels) = (dim(shapes, &conv_in, 0)?, dim(shapes, &conv_in, 1)?);
    let out_channels = dim(shapes, &format!("{UNET}out.2.weight"), 0)?;
    // input_blocks 1.. are the resnets of each level, each level but the last
    // closed by a downsampler (`.0.op.weight`).
    let (mut channels, mut attends, mut layers) = (vec![], vec![], vec![0usize]);
    let mut level_attends = false;
    let mut i = 1;
    while has_prefix(shapes, &format!("{UNET}input_blocks.{i}.")) {
        let block = format!("{UNET}input_blocks.{i}.");
        if shapes.contains_key(&format!("{block}0.op.weight")) {
            channels.push(dim(shapes, &format!("{block}0.op.weight"), 0)?);
            attends.push(level_attends);
            level_attends = false;
            layers.push(0);
        } else {
            *layers.last_mut().expect("starts with one level") += 1;
            level_attends |= has_prefix(shapes, &format!("{block}1."));
        }
        i += 1;
    }
    let last = dim(shapes, &format!("{UNET}input_blocks.{}.0.out_layers.3.weight", i - 1), 0)?;
    channels.push(last);
    attends.push(level_attends);
    let layers_per_block = layers[0];
    if layers.iter().any(|&n| n != layers_per_block) || layers_per_block == 0 {
        bail!("{UNET}input_blocks: expected the same number of resnets per level, found {layers:?}");
    }
    let stride = layers_per_block + 1;
    let levels = channels.len();
    let up_attention: Vec<bool> = (0..levels)
        .map(|i| has_prefix(shapes, &format!("{UNET}output_blocks.{}.1.transformer_blocks.", stride * i)))
        .collect();
    // Any attention block tells the text width and the projection kind.
    let attention = (1..i)
        .map(|b| format!("{UNET}input_blocks.{b}.1."))
        .find(|p| has_prefix(shapes, p))
        .ok_or_else(|| anyhow!("{UNET}input_blocks: no attention block (not a text-to-image UNet)"))?;
    let cross_attention_dim = dim(shapes, &format!("{attention}transformer_blocks.0.attn2.to_k.weight"), 1)?;
    let use_linear_projection = shape(shapes, &format!("{attention}proj_in.weight"))?.len() == 2;
    let transformer_layers = count(shapes, &format!("{attention}transformer_blocks."), ".attn1.to_q.weight");
    let down_block_types: Vec<&str> =
        attends.iter().map(|&a| if a { "CrossAttnDownBlock2D" } else { "DownBlock2D" }).collect();
    let up_block_types: Vec<&str> =
        up_attention.iter().map(|&a| if a { "CrossAttnUpBlock2D" } else { "UpBlock2D" }).collect();
    // diffusers' SD configs name the head count `attention_head_dim`.
    let heads: Vec<usize> = match family {
        Family::Sd1 => vec![8; levels],
        Family::Sd2 => channels.iter().map(|c| (c / 64).max(1)).collect(),
    };
    let time_embed = dim(shapes, &format!("{UNET}time_embed.0.weight"), 0)?;
    if Some(time_embed) != c0.checked_mul(4) {
        bail!("{UNET}time_embed.0.weight: expected {} rows (4 x {c0} channels), found {time_embed}", 4 * c0);
    }
    let config = json!({
        "_class_name": "UNet2DConditionModel",
        "in_channels": in_channels,
        "out_channels": out_channels,
        "sample_size": family.default_size() / 8,
        "block_out_channels": channels,
        "down_block_types": down_block_types,
        "up_block_types": up_block_types,
        "layers_per_block": layers_per_block,
        "attention_head_dim": heads,
        "cross_attention_dim": cross_attention_dim,
        "transformer_layers_per_block": transformer_layers,
        "use_linear_projection": use_linear_projection,
        "upcast_attention": family == Family::Sd2,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "act_fn": "silu",
    });
    Ok((config, UNetLayout { layers_per_block, up_attention }))
}

pub fn vae(shapes: &Shapes) -> Result<Value> {
    let in_channels = dim(shapes, &format!("{VAE}encoder.conv_in.weight"), 1)?;
    let levels = count(shapes, &format!("{VAE}encoder.down."), ".block.0.conv1.weight");
    let channels: Vec<usize> = (0..levels)
        .map(|i| dim(shapes, &format!("{VAE}encoder.down.{i}.block.0.conv2.weight"), 0))
        .collect::<Result<_>>()?;
    if levels == 0 {
        bail!("missing tensor {VAE}encoder.down.0.block.0.conv1.weight");
    }
    Ok(json!({
        "_class_name": "AutoencoderKL",
        "in_channels": in_channels,
        "out_channels": dim(shapes, &format!("{VAE}decoder.conv_out.weight"), 0)?,
        "block_out_channels": channels,
        "down_block_types": vec!["DownEncoderBlock2D"; levels],
        "up_block_types": vec!["UpDecoderBlock2D"; levels],
        "layers_per_block": count(shapes, &format!("{VAE}encoder.down.0.block."), ".conv1.weight"),
        "latent_channels": dim(shapes, &format!("{VAE}decoder.conv_in.weight"), 1)?,
        "norm_num_groups": 32,
        "scaling_factor": 0.18215,
        "act_fn": "silu",
    }))
}

/// The text encoder's config; `text_model_level` says whether SD 1.x's names hold `text_model.`.
pub fn text_encoder(shapes: &Shapes, family: Family, text_model_level: bool) -> Result<Value> {
    let (token, positions, layers, fc1, act) = match family {
        Family::Sd1 => {
            let p = if text_model_level { format!("{CLIP}text_model.") } else { CLIP.to_string() };
            (
                format!("{p}embeddings.token_embedding.weight"),
                format!("{p}embeddings.position_embedding.weight"),
                count(shapes, &format!("{p}encoder.layers."), ".self_attn.q_proj.weight"),
                format!("{p}encoder.layers.0.mlp.fc1.weight"),
                "quick_gelu",
            )
        }
        // SD 2.x takes the penultimate layer's output: the last block is unused,
        // as in diffusers' converted configs (23 of OpenCLIP ViT-H's 24).
        Family::Sd2 => (
            format!("{OPEN_CLIP}token_embedding.weight"),
            format!("{OPEN_CLIP}positional_embedding"),
            count(shapes, &format!("{OPEN_CLIP}transformer.resblocks."), ".attn.in_proj_weight").saturating_sub(1),
            format!("{OPEN_CLIP}transformer.resblocks.0.mlp.c_fc.weight"),
            "gelu",
        ),
    };
    let [vocab, width] = shape(shapes, &token)?[..] else { bail!("tensor {token}: expected 2 dimensions") };
    if layers == 0 {
        bail!("the text encoder has no layers (expected {fc1} and what follows)");
    }
    Ok(json!({
        "vocab_size": vocab,
        "hidden_size": width,
        "intermediate_size": dim(shapes, &fc1, 0)?,
        "num_hidden_layers": layers,
        // CLIP's and OpenCLIP's text encoders use 64-wide heads.
        "num_attention_heads": (width / 64).max(1),
        "max_position_embeddings": dim(shapes, &positions, 0)?,
        "hidden_act": act,
        "layer_norm_eps": 1e-5,
    }))
}

/// SD 1.x and 2.x's scaled-linear betas, with the prediction type asked for.
pub fn scheduler(prediction_type: &str) -> Value {
    json!({
        "_class_name": "DDIMScheduler",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000,
        "steps_offset": 1,
        "clip_sample": false,
        "set_alpha_to_one": false,
        "prediction_type": prediction_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tensor_file::TensorFile;

    fn sd15_shapes() -> Shapes {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/sd15-shaped/tiny-sd15-shaped.safetensors");
        TensorFile::open(&path).unwrap().shapes()
    }

    #[test]
    fn sd15_shaped_reads_as_its_diffusers_configs() {
        let shapes = sd15_shapes();
        let (unet, layout) = unet(&shapes, Family::Sd1).unwrap();
        assert_eq!(unet["block_out_channels"], json!([32, 32, 64, 64]));
        assert_eq!(unet["down_block_types"][3], "DownBlock2D");
        assert_eq!(unet["up_block_types"][0], "UpBlock2D");
        assert_eq!(unet["cross_attention_dim"], 64);
        assert_eq!(unet["use_linear_projection"], false);
        assert_eq!(unet["attention_head_dim"], json!([8, 8, 8, 8]));
        assert_eq!((layout.layers_per_block, layout.up_attention), (2, vec![false, true, true, true]));
        let vae = vae(&shapes).unwrap();
        assert_eq!(
            (vae["block_out_channels"].clone(), vae["layers_per_block"].clone()),
            (json!([32, 32, 64, 64]), json!(2))
        );
        let text = text_encoder(&shapes, Family::Sd1, true).unwrap();
        assert_eq!((text["hidden_size"].clone(), text["num_hidden_layers"].clone()), (json!(64), json!(2)));
        assert_eq!((text["intermediate_size"].clone(), text["num_attention_heads"].clone()), (json!(96), json!(1)));
    }

    /// A file's shapes are the user's input: any tensor of any rank (none, one axis,
    /// a huge one) gives an answer or an error, never a panic.
    #[test]
    fn odd_shapes_are_errors_not_panics() {
        let shapes = sd15_shapes();
        for name in shapes.keys() {
            for odd in [vec![], vec![1], vec![usize::MAX, 3, 3, 3]] {
                let mut bad = shapes.clone();
                bad.insert(name.clone(), odd);
                let _ = unet(&bad, Family::Sd1);
                let _ = unet(&bad, Family::Sd2);
                let _ = vae(&bad);
                let _ = text_encoder(&bad, Family::Sd1, true);
            }
            let mut missing = shapes.clone();
            missing.remove(name);
            let _ = unet(&missing, Family::Sd1);
            let _ = vae(&missing);
        }
    }
}
