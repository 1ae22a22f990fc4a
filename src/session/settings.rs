//! Everything a user can set for one run, checked before any work starts.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::scheduler::{Sampler, SamplerName, SchedulerConfig};

/// The largest image side a run takes unless the user allows more (`--allow-large`):
/// 8x SD 1.5's 512. A 65536-pixel side would allocate tens of GB before failing.
pub const MAX_SIDE: usize = 4096;
/// The largest guidance scale taken: past it the guided prediction is noise times a
/// huge number (`1e300` overflows to NaN), never a picture.
pub const MAX_GUIDANCE: f64 = 100.0;

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
    /// The sampler; sessions written before there was a choice ran DDIM.
    #[serde(default)]
    pub scheduler: SamplerName,
    /// Image to image: start from a picture instead of pure noise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub img2img: Option<Img2Img>,
}

/// The picture an image-to-image run starts from, and how far it is noised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Img2Img {
    /// The picture's file as the user named it, for the record and for reruns.
    pub image: String,
    /// sha256 of the picture's RGB pixels, so a rerun knows it has the same one.
    pub sha256: String,
    /// The share of the schedule run: the picture is noised to the first of the
    /// last `int(steps * strength)` timesteps (1: all of it, the picture only
    /// shaping the start; diffusers' default 0.8).
    pub strength: f64,
}

/// diffusers' default strength.
pub const DEFAULT_STRENGTH: f64 = 0.8;

/// What the model and the user allow: settings are checked against these.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Sides must be multiples of it (8 for SD).
    pub vae_scale_factor: usize,
    /// Steps can be at most this (the scheduler's `num_train_timesteps`).
    pub num_train_timesteps: usize,
    /// [`MAX_SIDE`], or more with `--allow-large`.
    pub max_side: usize,
}

impl Limits {
    /// The largest side taken: [`MAX_SIDE`], or any with `--allow-large`.
    pub fn max_side(allow_large: bool) -> usize {
        if allow_large {
            usize::MAX
        } else {
            MAX_SIDE
        }
    }

    /// What can be checked before a model is loaded (any side is a multiple of 1), so
    /// that values from a file fail in a second, named as the file names them.
    pub fn without_model(num_train_timesteps: usize, allow_large: bool) -> Self {
        Self { vae_scale_factor: 1, num_train_timesteps, max_side: Self::max_side(allow_large) }
    }
}

/// A setting of [`Settings`], named the way each source of settings names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Steps,
    Width,
    Height,
    Guidance,
    Eta,
    Strength,
}

/// Where settings came from, so that a bad value is reported under the name its
/// source uses: the flag typed, the session file's key, the PNG chunk's field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Flags,
    /// `session.json`, or the `sdlab` text chunk of a PNG (the same keys).
    SettingsJson,
    /// AUTOMATIC1111's `parameters` text chunk.
    Parameters,
}

impl Field {
    pub fn name(self, origin: Origin) -> &'static str {
        use Field::*;
        match origin {
            Origin::Flags => match self {
                Steps => "--steps",
                Width => "--width",
                Height => "--height",
                Guidance => "--guidance",
                Eta => "--eta",
                Strength => "--strength",
            },
            Origin::SettingsJson => match self {
                Steps => "settings.steps",
                Width => "settings.width",
                Height => "settings.height",
                Guidance => "settings.guidance_scale",
                Eta => "settings.eta",
                Strength => "settings.img2img.strength",
            },
            Origin::Parameters => match self {
                Steps => "Steps",
                Width => "Size (width)",
                Height => "Size (height)",
                Guidance => "CFG scale",
                Eta => "Eta",
                Strength => "Denoising strength",
            },
        }
    }
}

/// A setting no stage could honour: which, its value, and what was expected.
#[derive(Clone, Debug, PartialEq)]
pub struct SettingError {
    pub field: Field,
    pub value: String,
    pub expected: String,
}

impl SettingError {
    /// The message, with the field named as `origin` names it.
    pub fn describe(&self, origin: Origin) -> String {
        format!("{} {}: expected {}", self.field.name(origin), self.value, self.expected)
    }

    /// Renames the field of a [`SettingError`] inside `err` for `origin`; other
    /// errors pass through.
    pub fn rename(err: anyhow::Error, origin: Origin) -> anyhow::Error {
        match err.downcast_ref::<SettingError>() {
            Some(e) => anyhow::anyhow!("{}", e.describe(origin)),
            None => err,
        }
    }
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe(Origin::Flags))
    }
}

impl std::error::Error for SettingError {}

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
            scheduler: SamplerName::Ddim,
            img2img: None,
        }
    }

    /// The run's sampler: `scheduler` with `steps` timesteps, the last
    /// `int(steps * strength)` of them for image to image.
    pub fn sampler(&self, config: &SchedulerConfig) -> anyhow::Result<Sampler> {
        let sampler = Sampler::new(self.scheduler, config, self.steps)?;
        match &self.img2img {
            Some(i) => sampler.img2img(self.steps, i.strength),
            None => Ok(sampler),
        }
    }

    /// Refuses values no stage could honour, or that would only make NaN, before
    /// anything is allocated. The error is a [`SettingError`].
    pub fn check(&self, limits: &Limits) -> Result<(), SettingError> {
        let fail = |field, value: String, expected: String| Err(SettingError { field, value, expected });
        let n = limits.num_train_timesteps;
        if self.steps == 0 || self.steps > n {
            return fail(
                Field::Steps,
                self.steps.to_string(),
                format!("1 to {n} (the scheduler's num_train_timesteps)"),
            );
        }
        let (f, max) = (limits.vae_scale_factor, limits.max_side);
        for (field, value) in [(Field::Width, self.width), (Field::Height, self.height)] {
            if value == 0 || !value.is_multiple_of(f) {
                return fail(
                    field,
                    value.to_string(),
                    format!("a positive multiple of {f} (the VAE scale factor of this model)"),
                );
            }
            if value > max {
                let more = if max == MAX_SIDE { "; --allow-large lifts the limit" } else { "" };
                return fail(field, value.to_string(), format!("at most {max} pixels{more}"));
            }
        }
        if !(self.guidance_scale.is_finite() && (0.0..=MAX_GUIDANCE).contains(&self.guidance_scale)) {
            return fail(
                Field::Guidance,
                format!("{:?}", self.guidance_scale),
                format!("a number from 0 to {MAX_GUIDANCE} (1 or less turns guidance off)"),
            );
        }
        // DDIM's sigma grows past the noise it can take out when eta > 1: sqrt of a
        // negative number, NaN from the first step.
        if !(self.eta.is_finite() && (0.0..=1.0).contains(&self.eta)) {
            return fail(Field::Eta, format!("{:?}", self.eta), "a number from 0 to 1".into());
        }
        if let Some(i) = &self.img2img {
            if !(i.strength > 0.0 && i.strength <= 1.0) {
                return fail(Field::Strength, format!("{:?}", i.strength), "a number above 0 and at most 1".into());
            }
            if (self.steps as f64 * i.strength) < 1.0 {
                return fail(
                    Field::Strength,
                    format!("{:?}", i.strength),
                    format!(
                        "at least 1 / steps: with {} steps it keeps int({} x {}) = 0 of them",
                        self.steps, self.steps, i.strength
                    ),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { vae_scale_factor: 2, num_train_timesteps: 1000, max_side: MAX_SIDE };

    #[test]
    fn names_the_option_that_is_wrong() {
        let ok = Settings::new("a fox", 64);
        ok.check(&LIMITS).unwrap();
        let cases = [
            (
                Settings { steps: 0, ..ok.clone() },
                "--steps 0: expected 1 to 1000 (the scheduler's num_train_timesteps)",
            ),
            (Settings { width: 63, ..ok.clone() }, "--width 63: expected a positive multiple of 2"),
            (Settings { height: 0, ..ok.clone() }, "--height 0: expected a positive multiple of 2"),
            (Settings { eta: -0.5, ..ok.clone() }, "--eta -0.5: expected a number from 0 to 1"),
            (Settings { eta: 1.01, ..ok.clone() }, "--eta 1.01: expected a number from 0 to 1"),
            (Settings { guidance_scale: f64::NAN, ..ok.clone() }, "--guidance NaN: expected a number from 0 to 100"),
            (Settings { guidance_scale: 1e300, ..ok.clone() }, "--guidance 1e300: expected a number from 0 to 100"),
            (
                Settings { width: 65536, ..ok.clone() },
                "--width 65536: expected at most 4096 pixels; --allow-large lifts the limit",
            ),
        ];
        for (settings, expected) in cases {
            let msg = settings.check(&LIMITS).unwrap_err().to_string();
            assert!(msg.starts_with(expected), "{msg}");
        }
        let large = Limits { max_side: 1 << 20, ..LIMITS };
        Settings { width: 65536, ..ok.clone() }.check(&large).unwrap();
        ok.check(&Limits { max_side: 62, ..LIMITS }).unwrap_err();
    }

    #[test]
    fn each_source_names_the_field_its_own_way() {
        let err = Settings { steps: 999_999_999, ..Settings::new("a fox", 64) }.check(&LIMITS).unwrap_err();
        assert_eq!(
            err.describe(Origin::Parameters),
            "Steps 999999999: expected 1 to 1000 (the scheduler's num_train_timesteps)"
        );
        assert!(err.describe(Origin::SettingsJson).starts_with("settings.steps 999999999: "));
        let renamed = SettingError::rename(anyhow::Error::new(err), Origin::SettingsJson).to_string();
        assert!(renamed.starts_with("settings.steps 999999999: expected 1 to 1000"), "{renamed}");
    }
}
