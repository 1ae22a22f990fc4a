//! Everything a user can set for one run, checked before any work starts.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// The settings of a run. Defaults are diffusers' (`seed` 0 being sdlab's choice,
/// since diffusers draws a random one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub prompt: String,
    pub negative_prompt: String,
    pub seed: u64,
    pub steps: usize,
    pub guidance_scale: f64,
    pub eta: f64,
    pub width: usize,
    pub height: usize,
}

impl Settings {
    /// Settings for `prompt` at the model's default size, with diffusers' defaults.
    pub fn new(prompt: impl Into<String>, default_size: usize) -> Self {
        Self {
            prompt: prompt.into(),
            negative_prompt: String::new(),
            seed: 0,
            steps: 50,
            guidance_scale: 7.5,
            eta: 0.0,
            width: default_size,
            height: default_size,
        }
    }

    /// Refuses values no stage could honour, naming the command-line option.
    pub fn check(&self, vae_scale_factor: usize, num_train_timesteps: usize) -> Result<()> {
        if self.steps == 0 || self.steps > num_train_timesteps {
            bail!("--steps {}: expected 1 to {num_train_timesteps} (the scheduler's num_train_timesteps)", self.steps);
        }
        for (name, value) in [("--width", self.width), ("--height", self.height)] {
            if value == 0 || value % vae_scale_factor != 0 {
                bail!("{name} {value}: expected a positive multiple of {vae_scale_factor} (the VAE scale factor of this model)");
            }
        }
        if !self.guidance_scale.is_finite() {
            bail!("--guidance {}: expected a finite number", self.guidance_scale);
        }
        if !(self.eta.is_finite() && self.eta >= 0.0) {
            bail!("--eta {}: expected a number >= 0", self.eta);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_option_that_is_wrong() {
        let ok = Settings::new("a fox", 64);
        ok.check(2, 1000).unwrap();
        let cases = [
            (Settings { steps: 0, ..ok.clone() }, "--steps 0: expected 1 to 1000"),
            (Settings { width: 63, ..ok.clone() }, "--width 63: expected a positive multiple of 2"),
            (Settings { height: 0, ..ok.clone() }, "--height 0: expected a positive multiple of 2"),
            (Settings { eta: -0.5, ..ok.clone() }, "--eta -0.5: expected a number >= 0"),
            (Settings { guidance_scale: f64::NAN, ..ok.clone() }, "--guidance NaN: expected a finite number"),
        ];
        for (settings, expected) in cases {
            let msg = settings.check(2, 1000).unwrap_err().to_string();
            assert!(msg.starts_with(expected), "{msg}");
        }
    }
}
