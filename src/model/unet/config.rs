//! diffusers' `unet/config.json`: the only place the UNet's sizes come from.
//!
//! Everything sdlab's UNet cannot build (class embeddings, other block kinds, ...)
//! is refused with an error naming the field, so sdlab never silently builds a
//! different network.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
#[cfg(test)]
use candle_transformers::models::stable_diffusion::unet_2d::{BlockConfig, UNet2DConditionModelConfig};
use serde::{Deserialize, Serialize};

use crate::fsutil::{limits, read_text};
use crate::model::bounds::{check_eps, first_out_of_range, fits_f32_both_ways, MAX_BLOCKS, MAX_CHANNELS, MAX_LAYERS};
use crate::model::json::parse_json;

/// Keeps the default image size `sample_size * vae_scale_factor` far from overflow
/// (the other bounds are [`crate::model::bounds`]'s). SD uses sample_size 64 or 96.
const MAX_SAMPLE_SIZE: usize = 1024;

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
        Self::parse(&read_text(path, limits::CONFIG)?, path)
    }

    /// Parses and checks the text of a `unet/config.json`; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let config: Self = parse_json(text, path)?;
        config.check().map_err(|err| anyhow!("{}: {err}", path.display()))?;
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
        if !(1..=MAX_BLOCKS).contains(&n) {
            bail!("block_out_channels: expected 1 to {MAX_BLOCKS} blocks, found {n}");
        }
        self.check_sizes()?;
        self.check_numbers()?;
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

    /// Every count within its bound (so nothing derived from it overflows).
    fn check_sizes(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        let mut sizes = vec![
            ("in_channels".to_owned(), self.in_channels, MAX_CHANNELS),
            ("out_channels".to_owned(), self.out_channels, MAX_CHANNELS),
            ("cross_attention_dim".to_owned(), self.cross_attention_dim, MAX_CHANNELS),
            ("norm_num_groups".to_owned(), self.norm_num_groups, MAX_CHANNELS),
            ("sample_size".to_owned(), self.sample_size, MAX_SAMPLE_SIZE),
            ("layers_per_block".to_owned(), self.layers_per_block, MAX_LAYERS),
        ];
        let blocks = self.block_out_channels.iter().enumerate();
        sizes.extend(blocks.map(|(i, &c)| (format!("block_out_channels[{i}]"), c, MAX_CHANNELS)));
        let depths = self.transformer_layers_per_block.for_blocks(n, "transformer_layers_per_block")?;
        sizes.extend(depths.iter().map(|&d| ("transformer_layers_per_block".to_owned(), d, MAX_LAYERS)));
        first_out_of_range(&sizes).map_err(anyhow::Error::msg)?;
        // diffusers pads 1 on each side, or with 0 only right and bottom; other values
        // give skip connections of other sizes than the up blocks expect.
        if self.downsample_padding > 1 {
            bail!("downsample_padding: expected 0 or 1, found {}", self.downsample_padding);
        }
        Ok(())
    }

    /// The float settings, checked as the float32 values the UNet computes with.
    fn check_numbers(&self) -> Result<()> {
        check_eps("norm_eps", self.norm_eps).map_err(anyhow::Error::msg)?;
        // The mid block divides by it: the factor and its inverse must be float32 numbers.
        let scale = self.mid_block_scale_factor;
        if !fits_f32_both_ways(scale) {
            bail!("mid_block_scale_factor: expected a number whose size and inverse fit float32, found {scale:?}");
        }
        // The timestep features divide by `block_out_channels[0] / 2 - freq_shift`
        // (embeddings.rs): zero or below gives NaN or inf features.
        let (half, shift) = (self.block_out_channels[0] / 2, self.freq_shift as f32);
        if !shift.is_finite() || (half > 0 && half as f32 - shift <= 0.0) {
            bail!(
                "freq_shift: expected a number below block_out_channels[0] / 2 ({half}), found {:?}",
                self.freq_shift
            );
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

    /// `check`'s message for the sd2-tiny config changed by `edit`.
    fn error_of(edit: impl FnOnce(&mut UNetConfig)) -> String {
        let mut c = fixture("sd2-tiny");
        edit(&mut c);
        let msg = c.check().unwrap_err().to_string();
        println!("{msg}");
        msg
    }

    #[test]
    fn parse_errors_name_the_file_and_the_field() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd2-tiny/model/unet/config.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed = UNetConfig::parse(&text, Path::new("unet/config.json")).unwrap();
        assert_eq!(parsed.block_out_channels, vec![32, 64]);
        let bad = text.replace(r#""norm_num_groups": 32"#, r#""norm_num_groups": 0"#);
        let msg = UNetConfig::parse(&bad, Path::new("unet/config.json")).unwrap_err().to_string();
        assert_eq!(msg, "unet/config.json: norm_num_groups: expected 1 to 65536, found 0");
    }

    /// Sizes whose derived values overflowed (`4 * block_out_channels[0]`,
    /// `layers_per_block + 1`, `sample_size * vae_scale_factor`) in
    /// `UNet2DConditionModel::new` or `default_size`, after `check` had passed.
    #[test]
    fn refuses_sizes_that_overflow_what_is_derived_from_them() {
        assert_eq!(
            error_of(|c| c.block_out_channels = vec![1 << 62, 1 << 62]),
            format!("block_out_channels[0]: expected 1 to 65536, found {}", 1u64 << 62)
        );
        assert_eq!(
            error_of(|c| c.layers_per_block = usize::MAX),
            format!("layers_per_block: expected 1 to 64, found {}", usize::MAX)
        );
        assert_eq!(
            error_of(|c| c.sample_size = usize::MAX / 4),
            format!("sample_size: expected 1 to 1024, found {}", usize::MAX / 4)
        );
        assert_eq!(
            error_of(|c| c.block_out_channels = vec![32; 9]),
            "block_out_channels: expected 1 to 8 blocks, found 9"
        );
        assert_eq!(
            error_of(|c| c.transformer_layers_per_block = PerBlock::Each(vec![1, 0])),
            "transformer_layers_per_block: expected 1 to 64, found 0"
        );
        assert_eq!(
            error_of(|c| c.downsample_padding = 1 << 40),
            format!("downsample_padding: expected 0 or 1, found {}", 1u64 << 40)
        );
    }

    /// freq_shift at `block_out_channels[0] / 2` divides by zero in the timestep features.
    #[test]
    fn refuses_floats_that_make_nan() {
        let features =
            crate::model::unet::embeddings::timestep_features(500.0, 32, true, 16.0, &candle_core::Device::Cpu);
        let features = features.unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(features[0].is_nan(), "the reason for the check: {features:?}");
        assert_eq!(
            error_of(|c| c.freq_shift = 16.0),
            "freq_shift: expected a number below block_out_channels[0] / 2 (16), found 16.0"
        );
        assert!(error_of(|c| c.freq_shift = 1e39).starts_with("freq_shift: "));
        let mut ok = fixture("sd2-tiny");
        ok.freq_shift = 1.0;
        ok.check().unwrap();
        assert!(error_of(|c| c.norm_eps = 0.0).starts_with("norm_eps: expected a positive number"));
        assert!(error_of(|c| c.norm_eps = 1e-50).starts_with("norm_eps: "));
        for scale in [0.0, 1e-300, 1e300] {
            let msg = error_of(|c| c.mid_block_scale_factor = scale);
            assert!(msg.starts_with("mid_block_scale_factor: expected a number whose size"), "{msg}");
        }
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
