//! diffusers' tensor names to the original (CompVis / A1111 / ComfyUI) names of a
//! single-file checkpoint: the inverse of diffusers' `convert_ldm_*_checkpoint`.
//!
//! The original UNet numbers its blocks flat (`input_blocks.4`), so the mapping
//! depends on the architecture: layers per block, and which up blocks attend
//! (their upsampler sits after the attention).

/// How a stored tensor becomes the one diffusers' module expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    Same,
    /// A 1x1 convolution stored where diffusers has a linear layer (the VAE's attention).
    Squeeze,
    /// Part `i` of `n` along the first axis (OpenCLIP's fused q/k/v `in_proj`).
    Part(usize, usize),
}

/// Where one diffusers tensor lives in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Original {
    pub name: String,
    pub transform: Transform,
}

fn same(name: String) -> Option<Original> {
    Some(Original { name, transform: Transform::Same })
}

pub const UNET: &str = "model.diffusion_model.";
pub const VAE: &str = "first_stage_model.";
pub const CLIP: &str = "cond_stage_model.transformer.";
pub const OPEN_CLIP: &str = "cond_stage_model.model.";

/// The UNet's shape as far as the names depend on it.
#[derive(Clone, Debug)]
pub struct UNetLayout {
    pub layers_per_block: usize,
    /// Per up block (diffusers' order), whether it attends.
    pub up_attention: Vec<bool>,
}

fn resnet(rest: &[&str]) -> Option<String> {
    let first = match *rest.first()? {
        "norm1" => "in_layers.0",
        "conv1" => "in_layers.2",
        "norm2" => "out_layers.0",
        "conv2" => "out_layers.3",
        "time_emb_proj" => "emb_layers.1",
        "conv_shortcut" => "skip_connection",
        other => other,
    };
    Some(std::iter::once(first).chain(rest[1..].iter().copied()).collect::<Vec<_>>().join("."))
}

pub fn unet(name: &str, layout: &UNetLayout) -> Option<Original> {
    for (ours, theirs) in [
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("conv_in.", "input_blocks.0.0."),
        ("conv_norm_out.", "out.0."),
        ("conv_out.", "out.2."),
    ] {
        if let Some(rest) = name.strip_prefix(ours) {
            return same(format!("{UNET}{theirs}{rest}"));
        }
    }
    let parts: Vec<&str> = name.split('.').collect();
    let stride = layout.layers_per_block + 1;
    let index = |at: usize| parts.get(at)?.parse::<usize>().ok();
    let tail = |from: usize| parts.get(from..).map(|p| p.join("."));
    let theirs = match (parts[0], parts.get(2).copied()) {
        ("down_blocks", Some("resnets")) => {
            format!("input_blocks.{}.0.{}", stride * index(1)? + index(3)? + 1, resnet(parts.get(4..)?)?)
        }
        ("down_blocks", Some("attentions")) => {
            format!("input_blocks.{}.1.{}", stride * index(1)? + index(3)? + 1, tail(4)?)
        }
        // down_blocks.i.downsamplers.0.conv.weight
        ("down_blocks", Some("downsamplers")) => format!("input_blocks.{}.0.op.{}", stride * (index(1)? + 1), tail(5)?),
        ("up_blocks", Some("resnets")) => {
            format!("output_blocks.{}.0.{}", stride * index(1)? + index(3)?, resnet(parts.get(4..)?)?)
        }
        ("up_blocks", Some("attentions")) => format!("output_blocks.{}.1.{}", stride * index(1)? + index(3)?, tail(4)?),
        // up_blocks.i.upsamplers.0.conv.weight
        ("up_blocks", Some("upsamplers")) => {
            let i = index(1)?;
            let slot = if *layout.up_attention.get(i)? { 2 } else { 1 };
            format!("output_blocks.{}.{slot}.{}", stride * i + layout.layers_per_block, tail(4)?)
        }
        ("mid_block", _) if parts.get(1) == Some(&"attentions") => format!("middle_block.1.{}", tail(3)?),
        ("mid_block", _) if parts.get(1) == Some(&"resnets") => {
            format!("middle_block.{}.{}", 2 * index(2)?, resnet(parts.get(3..)?)?)
        }
        _ => return None,
    };
    same(format!("{UNET}{theirs}"))
}

pub fn vae(name: &str, levels: usize) -> Option<Original> {
    let parts: Vec<&str> = name.split('.').collect();
    let side = parts[0];
    if matches!(side, "quant_conv" | "post_quant_conv") {
        return same(format!("{VAE}{name}"));
    }
    if !matches!(side, "encoder" | "decoder") {
        return None;
    }
    let index = |at: usize| parts.get(at)?.parse::<usize>().ok();
    let tail = |from: usize| parts.get(from..).map(|p| p.join("."));
    let block = |from: usize| {
        let rest = parts.get(from..)?;
        let first = match *rest.first()? {
            "conv_shortcut" => "nin_shortcut",
            other => other,
        };
        Some(std::iter::once(first).chain(rest[1..].iter().copied()).collect::<Vec<_>>().join("."))
    };
    let theirs = match (parts.get(1).copied()?, parts.get(3).copied()) {
        ("conv_in" | "conv_out", _) => name.to_string(),
        ("conv_norm_out", _) => format!("{side}.norm_out.{}", tail(2)?),
        ("down_blocks", Some("resnets")) => format!("{side}.down.{}.block.{}.{}", index(2)?, index(4)?, block(5)?),
        ("down_blocks", Some("downsamplers")) => format!("{side}.down.{}.downsample.{}", index(2)?, tail(5)?),
        ("up_blocks", Some("resnets")) => {
            format!("{side}.up.{}.block.{}.{}", levels.checked_sub(index(2)? + 1)?, index(4)?, block(5)?)
        }
        ("up_blocks", Some("upsamplers")) => {
            format!("{side}.up.{}.upsample.{}", levels.checked_sub(index(2)? + 1)?, tail(5)?)
        }
        ("mid_block", _) if parts.get(2) == Some(&"resnets") => {
            format!("{side}.mid.block_{}.{}", index(3)? + 1, block(4)?)
        }
        ("mid_block", _) if parts.get(2) == Some(&"attentions") => {
            // mid_block.attentions.0.{group_norm,to_q,to_k,to_v,to_out.0}.{weight,bias}
            let (ours, field) = match parts.get(4..)? {
                ["to_out", "0", field] => ("proj_out", *field),
                [module, field] => (*module, *field),
                _ => return None,
            };
            let theirs = match ours {
                "group_norm" => "norm",
                "to_q" => "q",
                "to_k" => "k",
                "to_v" => "v",
                "proj_out" => "proj_out",
                _ => return None,
            };
            let transform = if theirs != "norm" && field == "weight" { Transform::Squeeze } else { Transform::Same };
            return Some(Original { name: format!("{VAE}{side}.mid.attn_1.{theirs}.{field}"), transform });
        }
        _ => return None,
    };
    same(format!("{VAE}{theirs}"))
}

/// SD 1.x's text encoder: transformers' CLIP names under `cond_stage_model.transformer.`
/// (some files leave out the `text_model.` level).
pub fn clip(name: &str, has_text_model_level: bool) -> Option<Original> {
    let name = name.strip_prefix("text_model.").unwrap_or(name);
    let level = if has_text_model_level { "text_model." } else { "" };
    same(format!("{CLIP}{level}{name}"))
}

/// SD 2.x's text encoder: OpenCLIP's names, q/k/v fused.
pub fn open_clip(name: &str) -> Option<Original> {
    let name = name.strip_prefix("text_model.").unwrap_or(name);
    let top = match name {
        "embeddings.token_embedding.weight" => Some("token_embedding.weight".to_string()),
        "embeddings.position_embedding.weight" => Some("positional_embedding".to_string()),
        _ => name.strip_prefix("final_layer_norm.").map(|rest| format!("ln_final.{rest}")),
    };
    if let Some(top) = top {
        return same(format!("{OPEN_CLIP}{top}"));
    }
    let rest = name.strip_prefix("encoder.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let block = format!("{OPEN_CLIP}transformer.resblocks.{layer}.");
    let (module, field) = rest.rsplit_once('.')?;
    let fused = |i| {
        let name = format!("{block}attn.in_proj_{field}");
        Some(Original { name, transform: Transform::Part(i, 3) })
    };
    let theirs = match module {
        "self_attn.q_proj" => return fused(0),
        "self_attn.k_proj" => return fused(1),
        "self_attn.v_proj" => return fused(2),
        "self_attn.out_proj" => "attn.out_proj",
        "layer_norm1" => "ln_1",
        "layer_norm2" => "ln_2",
        "mlp.fc1" => "mlp.c_fc",
        "mlp.fc2" => "mlp.c_proj",
        _ => return None,
    };
    same(format!("{block}{theirs}.{field}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd15() -> UNetLayout {
        UNetLayout { layers_per_block: 2, up_attention: vec![false, true, true, true] }
    }

    fn name(o: Option<Original>) -> String {
        o.unwrap().name
    }

    /// Spot checks against the names of the real SD 1.5 checkpoint.
    #[test]
    fn unet_names_follow_the_flat_block_numbering() {
        let l = sd15();
        let cases = [
            ("conv_in.weight", "input_blocks.0.0.weight"),
            ("time_embedding.linear_2.bias", "time_embed.2.bias"),
            ("down_blocks.0.resnets.1.conv1.weight", "input_blocks.2.0.in_layers.2.weight"),
            ("down_blocks.1.attentions.0.proj_in.weight", "input_blocks.4.1.proj_in.weight"),
            ("down_blocks.2.downsamplers.0.conv.weight", "input_blocks.9.0.op.weight"),
            ("down_blocks.1.resnets.0.conv_shortcut.bias", "input_blocks.4.0.skip_connection.bias"),
            ("mid_block.resnets.1.time_emb_proj.weight", "middle_block.2.emb_layers.1.weight"),
            (
                "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight",
                "middle_block.1.transformer_blocks.0.attn2.to_k.weight",
            ),
            ("up_blocks.0.upsamplers.0.conv.weight", "output_blocks.2.1.conv.weight"),
            ("up_blocks.1.upsamplers.0.conv.bias", "output_blocks.5.2.conv.bias"),
            ("up_blocks.3.resnets.2.norm2.weight", "output_blocks.11.0.out_layers.0.weight"),
            ("conv_out.bias", "out.2.bias"),
        ];
        for (ours, theirs) in cases {
            assert_eq!(name(unet(ours, &l)), format!("{UNET}{theirs}"), "{ours}");
        }
        assert_eq!(unet("nonsense.weight", &l), None);
    }

    #[test]
    fn vae_attention_projections_are_squeezed_convolutions() {
        let q = vae("decoder.mid_block.attentions.0.to_q.weight", 4).unwrap();
        assert_eq!(q, Original { name: format!("{VAE}decoder.mid.attn_1.q.weight"), transform: Transform::Squeeze });
        let out = vae("encoder.mid_block.attentions.0.to_out.0.bias", 4).unwrap();
        assert_eq!(out.name, format!("{VAE}encoder.mid.attn_1.proj_out.bias"));
        assert_eq!(out.transform, Transform::Same);
        assert_eq!(
            name(vae("decoder.up_blocks.0.resnets.2.conv_shortcut.weight", 4)),
            format!("{VAE}decoder.up.3.block.2.nin_shortcut.weight")
        );
        assert_eq!(
            name(vae("decoder.up_blocks.1.upsamplers.0.conv.weight", 4)),
            format!("{VAE}decoder.up.2.upsample.conv.weight")
        );
        assert_eq!(
            name(vae("encoder.mid_block.resnets.1.norm1.bias", 4)),
            format!("{VAE}encoder.mid.block_2.norm1.bias")
        );
        assert_eq!(name(vae("encoder.conv_norm_out.weight", 4)), format!("{VAE}encoder.norm_out.weight"));
    }

    #[test]
    fn open_clip_splits_the_fused_projection() {
        let k = open_clip("text_model.encoder.layers.3.self_attn.k_proj.bias").unwrap();
        assert_eq!(k.name, format!("{OPEN_CLIP}transformer.resblocks.3.attn.in_proj_bias"));
        assert_eq!(k.transform, Transform::Part(1, 3));
        assert_eq!(
            name(open_clip("text_model.encoder.layers.0.mlp.fc2.weight")),
            format!("{OPEN_CLIP}transformer.resblocks.0.mlp.c_proj.weight")
        );
        assert_eq!(
            name(open_clip("text_model.embeddings.position_embedding.weight")),
            format!("{OPEN_CLIP}positional_embedding")
        );
        assert_eq!(name(open_clip("text_model.final_layer_norm.bias")), format!("{OPEN_CLIP}ln_final.bias"));
        assert_eq!(
            name(clip("text_model.final_layer_norm.bias", true)),
            format!("{CLIP}text_model.final_layer_norm.bias")
        );
    }
}
