//! diffusers' `unet/config.json`: the only place the UNet's sizes come from.
//!
//! Everything sdlab's UNet cannot build (class embeddings, other block kinds, ...)
//! is refused with an error naming the field, so sdlab never silently builds a
//! different network.

use std::path::Path;

use anyhow::{bail, Result};
#[cfg(test)]
use candle_transformers::models::stable_diffusion::unet_2d::{BlockConfig, UNet2DConditionModelConfig};
use serde::{Deserialize, Serialize};

use crate::model::json::read_json;

/// A config value diffusers accepts either once for all blocks or once per block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    All(T),
    Each(Vec<T>),
}

impl<T: Copy> PerBlock<T> {
    pub(crate) fn for_blocks(&self, n: usize, field: &str) -> Result<Vec<T>> {
        match self {
            PerBlock::All(v) => Ok(vec![*v; n]),
            PerBlock::Each(v) if v.len() == n => Ok(v.clone()),
            PerBlock::Each(v) => bail!("{field}: expected {n} values, one per block, found {}", v.len()),
        }
    }
}

/// The fields of diffusers' `UNet2DConditionModel` config that decide its shape.
/// Defaults are diffusers' own, so a sparse config means what it means there.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UNetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub sample_size: usize,
    pub block_out_channels: Vec<usize>,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    #[serde(default = "two")]
    pub layers_per_block: usize,
    #[serde(default)]
    pub attention_head_dim: Option<PerBlock<usize>>,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock<usize>>,
    pub cross_attention_dim: usize,
    #[serde(default = "one_per_block")]
    pub transformer_layers_per_block: PerBlock<usize>,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default)]
    pub upcast_attention: bool,
    #[serde(default = "yes")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "one")]
    pub downsample_padding: usize,
    #[serde(default = "one_f64")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    #[serde(default = "norm_eps")]
    pub norm_eps: f64,
    #[serde(default = "mid_block_type")]
    pub mid_block_type: Option<String>,
    #[serde(default)]
    pub only_cross_attention: PerBlock<bool>,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default)]
    pub reverse_transformer_layers_per_block: Option<serde_json::Value>,
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    #[serde(default)]
    pub encoder_hid_dim: Option<usize>,
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    #[serde(default = "positional")]
    pub time_embedding_type: String,
    #[serde(default = "silu")]
    pub act_fn: String,
    #[serde(default = "default_str")]
    pub resnet_time_scale_shift: String,
    #[serde(default = "three")]
    pub conv_in_kernel: usize,
    #[serde(default = "three")]
    pub conv_out_kernel: usize,
    #[serde(default)]
    pub dual_cross_attention: bool,
}

impl Default for PerBlock<bool> {
    fn default() -> Self {
        PerBlock::All(false)
    }
}

fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn two() -> usize {
    2
}
fn three() -> usize {
    3
}
fn thirty_two() -> usize {
    32
}
fn one_f64() -> f64 {
    1.0
}
fn norm_eps() -> f64 {
    1e-5
}
fn one_per_block() -> PerBlock<usize> {
    PerBlock::All(1)
}
fn mid_block_type() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}
fn positional() -> String {
    "positional".into()
}
fn silu() -> String {
    "silu".into()
}
fn default_str() -> String {
    "default".into()
}

impl UNetConfig {
    /// Reads and checks `unet/config.json`: the result is one sdlab can build.
    pub fn from_file(path: &Path) -> Result<Self> {
        let config: Self = read_json(path)?;
        config.check().map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
        Ok(config)
    }

    /// diffusers' `num_attention_heads`: the historical `attention_head_dim` field holds
    /// the head count when `num_attention_heads` is null (a naming slip kept for
    /// compatibility in diffusers, see its UNet2DConditionModel.__init__).
    pub fn heads_per_block(&self) -> Result<Vec<usize>> {
        let n = self.block_out_channels.len();
        match (&self.num_attention_heads, &self.attention_head_dim) {
            (Some(heads), _) => heads.for_blocks(n, "num_attention_heads"),
            (None, Some(heads)) => heads.for_blocks(n, "attention_head_dim"),
            (None, None) => Ok(vec![8; n]),
        }
    }

    /// Checks that sdlab's UNet can build this network, naming the first field it
    /// cannot: exotic conditioning (class or added embeddings), other block kinds.
    pub fn check(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 {
            bail!("block_out_channels: expected at least one block, found none");
        }
        for (field, len) in
            [("down_block_types", self.down_block_types.len()), ("up_block_types", self.up_block_types.len())]
        {
            if len != n {
                bail!("{field}: expected {n} entries (one per block_out_channels), found {len}");
            }
        }
        let unsupported = [
            ("class_embed_type", self.class_embed_type.is_some()),
            ("num_class_embeds", self.num_class_embeds.is_some()),
            ("addition_embed_type", self.addition_embed_type.is_some()),
            (
                "reverse_transformer_layers_per_block",
                self.reverse_transformer_layers_per_block.as_ref().is_some_and(|v| !v.is_null()),
            ),
            ("time_cond_proj_dim", self.time_cond_proj_dim.is_some()),
            ("encoder_hid_dim", self.encoder_hid_dim.is_some()),
            ("time_embedding_dim", self.time_embedding_dim.is_some()),
            ("time_embedding_type", self.time_embedding_type != "positional"),
            ("act_fn", self.act_fn != "silu"),
            ("resnet_time_scale_shift", self.resnet_time_scale_shift != "default"),
            ("conv_in_kernel", self.conv_in_kernel != 3),
            ("conv_out_kernel", self.conv_out_kernel != 3),
            ("dual_cross_attention", self.dual_cross_attention),
            ("mid_block_type", !matches!(self.mid_block_type.as_deref(), None | Some("UNetMidBlock2DCrossAttn"))),
            ("only_cross_attention", self.only_cross_attention.for_blocks(n, "only_cross_attention")?.contains(&true)),
        ];
        if let Some((field, _)) = unsupported.iter().find(|(_, bad)| *bad) {
            bail!("{field}: this value is not supported by sdlab's UNet");
        }
        self.transformer_layers_per_block.for_blocks(n, "transformer_layers_per_block")?;
        for (i, kind) in self.down_block_types.iter().enumerate() {
            if !matches!(kind.as_str(), "CrossAttnDownBlock2D" | "DownBlock2D") {
                bail!("down_block_types[{i}]: expected CrossAttnDownBlock2D or DownBlock2D, found {kind:?}");
            }
        }
        for (i, kind) in self.up_block_types.iter().enumerate() {
            if !matches!(kind.as_str(), "CrossAttnUpBlock2D" | "UpBlock2D") {
                bail!("up_block_types[{i}]: expected CrossAttnUpBlock2D or UpBlock2D, found {kind:?}");
            }
        }
        for (i, (&channels, heads)) in self.block_out_channels.iter().zip(self.heads_per_block()?).enumerate() {
            if heads == 0 || !channels.is_multiple_of(heads) {
                bail!("attention heads: {heads} heads do not divide block {i}'s {channels} channels");
            }
            if !channels.is_multiple_of(self.norm_num_groups) {
                bail!("norm_num_groups: {} groups do not divide block {i}'s {channels} channels", self.norm_num_groups);
            }
        }
        Ok(())
    }

    /// The same network as candle-transformers' config, for the tests that use its
    /// UNet as a second oracle. Errors name what candle cannot represent (its up
    /// blocks must mirror the down blocks).
    #[cfg(test)]
    pub fn to_candle(&self) -> Result<UNet2DConditionModelConfig> {
        self.check()?;
        let n = self.block_out_channels.len();
        if self.mid_block_type.is_none() {
            bail!("mid_block_type: candle's UNet always has a mid block");
        }
        let heads = self.heads_per_block()?;
        let layers = self.transformer_layers_per_block.for_blocks(n, "transformer_layers_per_block")?;
        let mut blocks = Vec::with_capacity(n);
        for (i, kind) in self.down_block_types.iter().enumerate() {
            let cross_attn = kind == "CrossAttnDownBlock2D";
            let mirror = if cross_attn { "CrossAttnUpBlock2D" } else { "UpBlock2D" };
            let up = &self.up_block_types[n - 1 - i];
            if up != mirror {
                bail!(
                    "up_block_types[{}]: expected {mirror} (the mirror of down_block_types[{i}] = {kind}), found {up:?}",
                    n - 1 - i
                );
            }
            blocks.push(BlockConfig {
                out_channels: self.block_out_channels[i],
                use_cross_attn: cross_attn.then_some(layers[i]),
                attention_head_dim: heads[i],
            });
        }
        if blocks[n - 1].use_cross_attn.is_none() && layers[n - 1] != 1 {
            bail!("transformer_layers_per_block: candle's mid block takes its depth from the last down block");
        }
        Ok(UNet2DConditionModelConfig {
            center_input_sample: self.center_input_sample,
            flip_sin_to_cos: self.flip_sin_to_cos,
            freq_shift: self.freq_shift,
            blocks,
            layers_per_block: self.layers_per_block,
            downsample_padding: self.downsample_padding,
            mid_block_scale_factor: self.mid_block_scale_factor,
            norm_num_groups: self.norm_num_groups,
            norm_eps: self.norm_eps,
            cross_attention_dim: self.cross_attention_dim,
            // candle 0.11.1's sliced attention fails; never enable it.
            sliced_attention_size: None,
            use_linear_projection: self.use_linear_projection,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> UNetConfig {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name).join("model/unet/config.json");
        UNetConfig::from_file(&path).unwrap()
    }

    #[test]
    fn sd2_tiny_maps_per_block_heads_and_cross_attention() {
        let c = fixture("sd2-tiny").to_candle().unwrap();
        let blocks: Vec<_> =
            c.blocks.iter().map(|b| (b.out_channels, b.use_cross_attn, b.attention_head_dim)).collect();
        assert_eq!(blocks, vec![(32, None, 2), (64, Some(1), 4)]);
        assert!(c.use_linear_projection);
        assert_eq!(c.cross_attention_dim, 32);
    }

    #[test]
    fn sd15_tiny_maps_a_single_head_count_to_every_block() {
        let c = fixture("sd15-tiny").to_candle().unwrap();
        let blocks: Vec<_> =
            c.blocks.iter().map(|b| (b.out_channels, b.use_cross_attn, b.attention_head_dim)).collect();
        assert_eq!(blocks, vec![(32, Some(1), 8), (64, None, 8)]);
        assert!(!c.use_linear_projection);
    }

    #[test]
    fn num_attention_heads_wins_over_attention_head_dim() {
        let mut c = fixture("sd2-tiny");
        c.num_attention_heads = Some(PerBlock::All(16));
        assert_eq!(c.heads_per_block().unwrap(), vec![16, 16]);
    }

    #[test]
    fn refuses_what_sdlab_cannot_build() {
        let mut c = fixture("sd2-tiny");
        c.class_embed_type = Some("timestep".into());
        let msg = c.check().unwrap_err().to_string();
        assert!(msg.starts_with("class_embed_type: "), "{msg}");

        let mut c = fixture("sd2-tiny");
        c.attention_head_dim = Some(PerBlock::Each(vec![2, 4, 8]));
        let msg = c.check().unwrap_err().to_string();
        assert_eq!(msg, "attention_head_dim: expected 2 values, one per block, found 3");

        let mut c = fixture("sd2-tiny");
        c.up_block_types[0] = "AttnUpBlock2D".into();
        let msg = c.check().unwrap_err().to_string();
        assert!(msg.starts_with("up_block_types[0]: expected CrossAttnUpBlock2D or UpBlock2D"), "{msg}");

        let mut c = fixture("sd2-tiny");
        c.mid_block_type = Some("UNetMidBlock2D".into());
        assert!(c.check().unwrap_err().to_string().starts_with("mid_block_type"));
    }

    #[test]
    fn sdlab_builds_layouts_that_candle_cannot() {
        let mut c = fixture("sd2-tiny");
        c.up_block_types.swap(0, 1);
        c.check().unwrap();
        let msg = c.to_candle().unwrap_err().to_string();
        assert!(msg.starts_with("up_block_types[1]: expected UpBlock2D"), "{msg}");
        let mut c = fixture("sd2-tiny");
        c.mid_block_type = None;
        c.check().unwrap();
        assert!(c.to_candle().unwrap_err().to_string().starts_with("mid_block_type"));
    }
}
