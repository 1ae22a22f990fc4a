//! diffusers' `vae/config.json`: the VAE's sizes and how latents are scaled.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

use crate::fsutil::{limits, read_text};
use crate::model::bounds::{first_out_of_range, fits_f32_both_ways, MAX_BLOCKS, MAX_CHANNELS, MAX_LAYERS};
use crate::model::json::parse_json;

/// The fields of diffusers' `AutoencoderKL` config that decide its shape and how
/// latents are scaled. Defaults are diffusers' own.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "three")]
    pub in_channels: usize,
    #[serde(default = "three")]
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    #[serde(default = "one")]
    pub layers_per_block: usize,
    #[serde(default = "four")]
    pub latent_channels: usize,
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    #[serde(default = "scaling_factor")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default = "yes")]
    pub use_quant_conv: bool,
    #[serde(default = "yes")]
    pub use_post_quant_conv: bool,
    #[serde(default = "yes")]
    pub mid_block_add_attention: bool,
    /// SD's VAE overflows in float16; diffusers then decodes in float32. Absent means
    /// true, as in diffusers (SD 2's published config predates the key).
    #[serde(default = "yes")]
    pub force_upcast: bool,
    #[serde(default = "silu")]
    pub act_fn: String,
}

fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn three() -> usize {
    3
}
fn four() -> usize {
    4
}
fn thirty_two() -> usize {
    32
}
fn scaling_factor() -> f64 {
    0.18215
}
fn silu() -> String {
    "silu".into()
}

impl VaeConfig {
    /// Reads and checks `vae/config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::parse(&read_text(path, limits::CONFIG)?, path)
    }

    /// Parses and checks the text of a `vae/config.json`; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let config: Self = parse_json(text, path)?;
        config.check().map_err(|err| anyhow!("{}: {err}", path.display()))?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        let blocks = self.block_out_channels.len();
        if !(1..=MAX_BLOCKS).contains(&blocks) {
            bail!("block_out_channels: expected 1 to {MAX_BLOCKS} blocks, found {blocks}");
        }
        self.check_sizes()?;
        if self.act_fn != "silu" {
            bail!("act_fn: expected \"silu\", found {:?}", self.act_fn);
        }
        // The decoder's input is `latents / scaling_factor` in float32: both the factor
        // and its inverse must be ordinary float32 numbers, or latents become 0 or inf.
        let factor = self.scaling_factor;
        if !fits_f32_both_ways(factor) {
            bail!(
                "scaling_factor: expected a number whose size and inverse fit float32 (1.2e-38 to 8.5e37), \
                 found {factor:?}"
            );
        }
        if let Some(shift) = self.shift_factor.filter(|s| !(*s as f32).is_finite()) {
            bail!("shift_factor: expected a finite number, found {shift:?}");
        }
        Ok(())
    }

    /// Every count within its bound, and the groups dividing every block's channels.
    fn check_sizes(&self) -> Result<()> {
        let mut sizes = vec![
            ("in_channels".to_owned(), self.in_channels, MAX_CHANNELS),
            ("out_channels".to_owned(), self.out_channels, MAX_CHANNELS),
            ("latent_channels".to_owned(), self.latent_channels, MAX_CHANNELS),
            ("norm_num_groups".to_owned(), self.norm_num_groups, MAX_CHANNELS),
            ("layers_per_block".to_owned(), self.layers_per_block, MAX_LAYERS),
        ];
        let blocks = self.block_out_channels.iter().enumerate();
        sizes.extend(blocks.map(|(i, &c)| (format!("block_out_channels[{i}]"), c, MAX_CHANNELS)));
        first_out_of_range(&sizes).map_err(anyhow::Error::msg)?;
        if let Some(bad) = self.block_out_channels.iter().find(|c| !c.is_multiple_of(self.norm_num_groups)) {
            bail!("norm_num_groups: {} groups do not divide {bad} channels", self.norm_num_groups);
        }
        Ok(())
    }

    /// The ratio between image and latent size: `2^(len(block_out_channels) - 1)`, as
    /// diffusers' pipelines compute it (8 for SD, 2 for the tiny test models); at most
    /// 128 for a checked config.
    pub fn scale_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_fixture_has_factor_two_and_sd_scaling() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd2-tiny/model/vae/config.json");
        let c = VaeConfig::from_file(&path).unwrap();
        assert_eq!(c.scale_factor(), 2);
        assert_eq!(c.scaling_factor, 0.18215);
        assert_eq!(c.shift_factor, None);
        assert!(c.force_upcast);
    }

    #[test]
    fn sd_shape_has_factor_eight() {
        let c: VaeConfig = serde_json::from_str(r#"{"block_out_channels": [128, 256, 512, 512]}"#).unwrap();
        assert_eq!(c.scale_factor(), 8);
        assert_eq!(c.latent_channels, 4);
        assert!(c.force_upcast, "diffusers' default");
    }

    /// The error `parse` gives for a two-block config with the keys `edit` added.
    fn error_of(edit: &str) -> String {
        let text = format!(r#"{{"block_out_channels": [32, 64], {edit}}}"#);
        let err = VaeConfig::parse(&text, Path::new("vae/config.json")).unwrap_err().to_string();
        println!("{edit} -> {err}");
        err
    }

    #[test]
    fn refuses_a_zero_scaling_factor() {
        let c: VaeConfig = serde_json::from_str(r#"{"block_out_channels": [32], "scaling_factor": 0.0}"#).unwrap();
        assert!(c.check().unwrap_err().to_string().starts_with("scaling_factor"));
    }

    #[test]
    fn parse_errors_name_the_file_and_the_field() {
        let err = VaeConfig::parse(r#"{"block_out_channels": "32"}"#, Path::new("vae/config.json")).unwrap_err();
        assert!(err.to_string().starts_with("vae/config.json: "), "{err}");
        assert!(err.to_string().contains("block_out_channels"), "{err}");
        assert_eq!(error_of(r#""act_fn": "relu""#), r#"vae/config.json: act_fn: expected "silu", found "relu""#);
    }

    /// `0` groups used to panic (remainder by zero) instead of being an error.
    #[test]
    fn refuses_zero_groups() {
        assert_eq!(
            error_of(r#""norm_num_groups": 0"#),
            "vae/config.json: norm_num_groups: expected 1 to 65536, found 0"
        );
        assert_eq!(
            error_of(r#""norm_num_groups": 3"#),
            "vae/config.json: norm_num_groups: 3 groups do not divide 32 channels"
        );
    }

    /// 65 blocks used to overflow `scale_factor`'s shift.
    #[test]
    fn refuses_sizes_that_overflow_what_is_derived_from_them() {
        let blocks = format!(r#""block_out_channels": [{}]"#, vec!["32"; 65].join(", "));
        let text = format!("{{{blocks}}}");
        let err = VaeConfig::parse(&text, Path::new("vae/config.json")).unwrap_err().to_string();
        assert_eq!(err, "vae/config.json: block_out_channels: expected 1 to 8 blocks, found 65");
        let err = VaeConfig::parse(r#"{"block_out_channels": []}"#, Path::new("c.json")).unwrap_err().to_string();
        assert_eq!(err, "c.json: block_out_channels: expected 1 to 8 blocks, found 0");
        let eight = VaeConfig::parse(r#"{"block_out_channels": [32, 32, 32, 32, 32, 32, 32, 32]}"#, Path::new("c"));
        assert_eq!(eight.unwrap().scale_factor(), 128);
        assert_eq!(
            error_of(r#""latent_channels": 9223372036854775808"#),
            "vae/config.json: latent_channels: expected 1 to 65536, found 9223372036854775808"
        );
        let err = VaeConfig::parse(r#"{"block_out_channels": [32, 0]}"#, Path::new("c")).unwrap_err().to_string();
        assert_eq!(err, "c: block_out_channels[1]: expected 1 to 65536, found 0");
    }

    /// A factor whose inverse is not a float32 number turns every latent into inf or 0.
    #[test]
    fn refuses_factors_float32_cannot_hold() {
        for factor in ["1e-300", "1e300", "-1e-39"] {
            let err = error_of(&format!(r#""scaling_factor": {factor}"#));
            assert!(err.starts_with("vae/config.json: scaling_factor: expected a number whose size"), "{err}");
        }
        let negative = VaeConfig::parse(r#"{"block_out_channels": [32], "scaling_factor": -0.5}"#, Path::new("c"));
        assert_eq!(negative.unwrap().scaling_factor, -0.5, "a sign is no danger");
        assert_eq!(
            error_of(r#""shift_factor": 1e39"#),
            "vae/config.json: shift_factor: expected a finite number, found 1e39"
        );
    }
}
