//! diffusers' `vae/config.json`: the VAE's sizes and how latents are scaled.

use std::path::Path;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::model::json::read_json;

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
        let config: Self = read_json(path)?;
        config.check().map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        if self.block_out_channels.is_empty() {
            bail!("block_out_channels: expected at least one block, found none");
        }
        if self.act_fn != "silu" {
            bail!("act_fn: expected \"silu\", found {:?}", self.act_fn);
        }
        if self.scaling_factor == 0.0 || !self.scaling_factor.is_finite() {
            bail!("scaling_factor: expected a non-zero number, found {}", self.scaling_factor);
        }
        if let Some(bad) = self.block_out_channels.iter().find(|c| *c % self.norm_num_groups != 0) {
            bail!("norm_num_groups: {} groups do not divide {bad} channels", self.norm_num_groups);
        }
        Ok(())
    }

    /// The ratio between image and latent size: `2^(len(block_out_channels) - 1)`, as
    /// diffusers' pipelines compute it (8 for SD, 2 for the tiny test models).
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

    #[test]
    fn refuses_a_zero_scaling_factor() {
        let c: VaeConfig = serde_json::from_str(r#"{"block_out_channels": [32], "scaling_factor": 0.0}"#).unwrap();
        assert!(c.check().unwrap_err().to_string().starts_with("scaling_factor"));
    }
}
