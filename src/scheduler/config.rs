//! A diffusers `scheduler/scheduler_config.json`, read the way
//! `DDIMScheduler.from_config(cfg)` reads it.
//!
//! Stable Diffusion checkpoints ship a config for whatever scheduler their
//! authors liked (`PNDMScheduler`, `EulerDiscreteScheduler`, `DDIMScheduler`,
//! ...). diffusers builds a DDIM scheduler from any of them by taking the keys
//! `DDIMScheduler.__init__` knows, ignoring the rest and falling back to DDIM's
//! own defaults for missing keys. [`SchedulerConfig`] does the same, so a
//! config means the same schedule here as in a diffusers DDIM run.

use std::fmt;
use std::path::Path;

use anyhow::{anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Defines a config enum whose serde names (and error messages) are the
/// strings diffusers uses in `scheduler_config.json`.
macro_rules! config_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in the order diffusers' documentation lists them.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The name diffusers uses for this value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

config_enum! {
    /// How the training betas are laid out over `beta_start..=beta_end`.
    BetaSchedule {
        /// `torch.linspace(beta_start, beta_end, n)` in float32.
        Linear => "linear",
        /// `torch.linspace(beta_start ** 0.5, beta_end ** 0.5, n) ** 2` in float32,
        /// the schedule every Stable Diffusion 1.x / 2.x checkpoint uses.
        ScaledLinear => "scaled_linear",
        /// The Glide / improved-DDPM cosine schedule, betas capped at 0.999.
        SquaredcosCapV2 => "squaredcos_cap_v2",
    }
}

config_enum! {
    /// How the inference timesteps are picked out of the training ones.
    TimestepSpacing {
        /// `0, r, 2r, ...` with `r = num_train_timesteps / steps` (integer
        /// division), plus `steps_offset`: the Stable Diffusion default.
        Leading => "leading",
        /// Counted back from `num_train_timesteps - 1`, so the first step is at
        /// the last training timestep (needed with `rescale_betas_zero_snr`).
        Trailing => "trailing",
        /// `steps` rounded points of `linspace(0, num_train_timesteps - 1)`.
        Linspace => "linspace",
    }
}

config_enum! {
    /// What the UNet was trained to predict.
    PredictionType {
        /// The noise that was added (SD 1.x, SD 2 base).
        Epsilon => "epsilon",
        /// `v = sqrt(alpha_prod) * noise - sqrt(1 - alpha_prod) * x0` (SD 2 768-v).
        VPrediction => "v_prediction",
        /// The clean sample x0 itself.
        Sample => "sample",
    }
}

/// The scheduler settings of a Stable Diffusion checkpoint, as the DDIM
/// scheduler of diffusers sees them.
///
/// Guarantee: for any `scheduler_config.json` that diffusers 0.42 accepts with
/// `DDIMScheduler.from_config`, the fields hold what that DDIM scheduler's
/// `config` holds (missing keys take DDIM's defaults, see [`Default`]; keys
/// DDIM does not know are ignored). Configs that ask for something sdlab does
/// not compute (`thresholding: true`) are refused rather than run differently.
/// Serializes back to diffusers' key names: the keys as read when it was read
/// from JSON (so that the other samplers' classes see the same keys missing),
/// else every DDIM key.
#[derive(Debug, Clone, Serialize)]
pub struct SchedulerConfig {
    /// The scheduler the checkpoint's authors chose (`_class_name`), kept only
    /// for display: sdlab always runs DDIM.
    #[serde(rename = "_class_name", skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    /// Explicit betas; when present they replace `beta_schedule` entirely, as
    /// in diffusers. Stored as read from JSON, used after rounding to float32.
    pub trained_betas: Option<Vec<f64>>,
    /// Clamp the predicted x0 to `[-clip_sample_range, clip_sample_range]`.
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    /// Whether the step after the last training timestep sees
    /// `alpha_prod = 1` (true) or `alphas_cumprod[0]` (false).
    pub set_alpha_to_one: bool,
    pub steps_offset: usize,
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
    /// Rescale the betas so the last training timestep has zero SNR
    /// ("Common Diffusion Noise Schedules and Sample Steps are Flawed").
    pub rescale_betas_zero_snr: bool,
    /// The keys as read, after `_use_default_values` (see [`effective_keys`]);
    /// empty for a config built in code. Other samplers' classes read their own
    /// keys and defaults from it, as their `from_config` would.
    #[serde(skip)]
    pub source: Map<String, Value>,
}

impl PartialEq for SchedulerConfig {
    /// The same DDIM schedule; `source` may differ in keys that say what DDIM's
    /// defaults say (an older session wrote every key).
    fn eq(&self, other: &Self) -> bool {
        let view = |c: &Self| Self { source: Map::new(), ..c.clone() };
        serde_json::to_value(view(self)).ok() == serde_json::to_value(view(other)).ok()
    }
}

impl SchedulerConfig {
    /// What a session and a PNG keep: the keys as read, else the DDIM view.
    pub fn to_json(&self) -> Value {
        if self.source.is_empty() {
            serde_json::to_value(self).unwrap_or(Value::Null)
        } else {
            Value::Object(self.source.clone())
        }
    }
}

impl Default for SchedulerConfig {
    /// The defaults of diffusers' `DDIMScheduler.__init__` (not those of the
    /// Stable Diffusion checkpoints, which override most of them).
    fn default() -> Self {
        Self {
            class_name: None,
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            clip_sample: true,
            clip_sample_range: 1.0,
            set_alpha_to_one: true,
            steps_offset: 0,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: TimestepSpacing::Leading,
            rescale_betas_zero_snr: false,
            source: Map::new(),
        }
    }
}

impl SchedulerConfig {
    /// Reads a `scheduler_config.json`. Errors name the file, the key and what
    /// was expected, e.g. `scheduler/scheduler_config.json: beta_schedule:
    /// expected one of linear, scaled_linear, squaredcos_cap_v2, found "foo"`.
    pub fn from_file(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let path = path.as_ref();
        let text = crate::fsutil::read_text(path, crate::fsutil::limits::CONFIG)?;
        Self::from_json_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
    }

    /// Reads the text of a `scheduler_config.json`; errors name the key and
    /// what was expected, but no file.
    pub fn from_json_str(text: &str) -> anyhow::Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| anyhow!("not valid JSON: {e}"))?;
        Self::from_json(&value)
    }

    /// Builds the config from parsed JSON, as `DDIMScheduler.from_config` would.
    pub fn from_json(value: &Value) -> anyhow::Result<Self> {
        let map = effective_keys(value)?;
        let map = &map;
        let d = Self::default();
        let fields = Fields(map);
        if fields.get("thresholding", Fields::bool)?.unwrap_or(false) {
            bail!(
                "thresholding: dynamic thresholding is not implemented by sdlab \
                 (only pixel-space models use it); set it to false"
            );
        }
        let config = Self {
            class_name: map.get("_class_name").and_then(Value::as_str).map(str::to_owned),
            num_train_timesteps: fields.get("num_train_timesteps", Fields::usize)?.unwrap_or(d.num_train_timesteps),
            beta_start: fields.get("beta_start", Fields::f64)?.unwrap_or(d.beta_start),
            beta_end: fields.get("beta_end", Fields::f64)?.unwrap_or(d.beta_end),
            beta_schedule: fields.get("beta_schedule", Fields::choice(BetaSchedule::ALL))?.unwrap_or(d.beta_schedule),
            trained_betas: fields.get("trained_betas", Fields::betas)?.flatten(),
            clip_sample: fields.get("clip_sample", Fields::bool)?.unwrap_or(d.clip_sample),
            clip_sample_range: fields.get("clip_sample_range", Fields::f64)?.unwrap_or(d.clip_sample_range),
            set_alpha_to_one: fields.get("set_alpha_to_one", Fields::bool)?.unwrap_or(d.set_alpha_to_one),
            steps_offset: fields.get("steps_offset", Fields::usize)?.unwrap_or(d.steps_offset),
            prediction_type: fields
                .get("prediction_type", Fields::choice(PredictionType::ALL))?
                .unwrap_or(d.prediction_type),
            timestep_spacing: fields
                .get("timestep_spacing", Fields::choice(TimestepSpacing::ALL))?
                .unwrap_or(d.timestep_spacing),
            rescale_betas_zero_snr: fields
                .get("rescale_betas_zero_snr", Fields::bool)?
                .unwrap_or(d.rescale_betas_zero_snr),
            source: map.clone(),
        };
        config.validate()?;
        Ok(config)
    }

    /// Refuses configs diffusers would only fail on later (index errors,
    /// division by zero), that would not fit in memory, or whose schedule
    /// would make a DDIM step NaN, with a message that says which key is wrong.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        let train = self.num_train_timesteps;
        if !(1..=MAX_TRAIN_TIMESTEPS).contains(&train) {
            bail!("num_train_timesteps: expected 1 to {MAX_TRAIN_TIMESTEPS}, found {train}");
        }
        // Only used by the leading spacing, where timesteps above the range are refused
        // per step count; beyond it no step count could work.
        if self.steps_offset >= train {
            bail!("steps_offset: expected 0 to {} (below num_train_timesteps), found {}", train - 1, self.steps_offset);
        }
        check_beta("beta_start", self.beta_start)?;
        check_beta("beta_end", self.beta_end)?;
        if let Some(betas) = &self.trained_betas {
            if betas.len() != train {
                bail!("trained_betas: expected {train} values (num_train_timesteps), found {}", betas.len());
            }
            for (i, &beta) in betas.iter().enumerate() {
                check_beta(&format!("trained_betas[{i}]"), beta)?;
            }
        }
        if !(self.clip_sample_range.is_finite() && self.clip_sample_range > 0.0) {
            bail!("clip_sample_range: expected a finite number above 0, found {:?}", self.clip_sample_range);
        }
        self.check_alphas_cumprod()
    }

    /// A DDIM step divides by `alpha_prod_t` and `1 - alpha_prod_t` and by their
    /// ratio to the previous one, so every `alphas_cumprod` must be in (0, 1) in
    /// float32 (betas that round to 0 or 1, or a product that underflows, break
    /// that), except the last one that `rescale_betas_zero_snr` sets to 0 on purpose.
    fn check_alphas_cumprod(&self) -> anyhow::Result<()> {
        let alphas = super::schedule::alphas_cumprod(self);
        let last = alphas.len() - 1;
        let bad = alphas.iter().enumerate().find(|&(i, &a)| {
            let zero_snr_end = self.rescale_betas_zero_snr && i == last && a == 0.0;
            !(zero_snr_end || (a > 0.0 && a < 1.0))
        });
        let Some((i, a)) = bad else { return Ok(()) };
        let keys = match (&self.trained_betas, self.rescale_betas_zero_snr) {
            (Some(_), false) => "trained_betas",
            (Some(_), true) => "trained_betas with rescale_betas_zero_snr",
            (None, false) => "beta_start, beta_end, beta_schedule, num_train_timesteps",
            (None, true) => "beta_start, beta_end, beta_schedule, num_train_timesteps with rescale_betas_zero_snr",
        };
        bail!(
            "{keys}: the schedule's alphas_cumprod[{i}] is {a:?} in float32, expected a value between 0 and 1 \
             (exclusive): a DDIM step would divide by zero there"
        )
    }
}

/// A class's own true/false key: absent or null is the class's `default`.
pub(super) fn class_flag(map: &Map<String, Value>, key: &str, default: bool) -> anyhow::Result<bool> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => bail!("{key}: expected true or false, found {other}"),
    }
}

/// A class's own string key: absent or null is the class's `default`.
pub(super) fn class_text(map: &Map<String, Value>, key: &str, default: &str) -> anyhow::Result<String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(default.to_owned()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => bail!("{key}: expected a string, found {other}"),
    }
}

/// The keys of a config object that `from_config` passes on: diffusers drops
/// those its `_use_default_values` lists (they were not in the original file, so
/// each class takes its own default for them) and the list itself.
pub(crate) fn effective_keys(value: &Value) -> anyhow::Result<Map<String, Value>> {
    let Some(map) = value.as_object() else {
        bail!("expected a JSON object, found {}", describe(value));
    };
    let defaults: Vec<&str> = match map.get("_use_default_values") {
        None => Vec::new(),
        Some(Value::Array(keys)) => keys.iter().filter_map(Value::as_str).collect(),
        Some(other) => bail!("_use_default_values: expected a list of key names, found {}", describe(other)),
    };
    Ok(map
        .iter()
        .filter(|(k, _)| k.as_str() != "_use_default_values" && !defaults.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect())
}

/// The most training timesteps a config may have: SD uses 1000, and the
/// schedule holds one float per timestep.
const MAX_TRAIN_TIMESTEPS: usize = 100_000;

/// A beta is a noise variance per timestep: `1 - beta` must be a probability.
fn check_beta(key: &str, beta: f64) -> anyhow::Result<()> {
    if !(beta > 0.0 && beta < 1.0) {
        bail!("{key}: expected a number between 0 and 1 (exclusive), found {beta:?}");
    }
    Ok(())
}

impl<'de> Deserialize<'de> for SchedulerConfig {
    /// Same rules and messages as [`SchedulerConfig::from_json`].
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Self::from_json(&value).map_err(serde::de::Error::custom)
    }
}

/// Typed access to the keys of a config object, with errors that name the key.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    /// `None` when the key is absent; `parse` returns what was expected on failure.
    fn get<T>(&self, key: &str, parse: impl Fn(&Value) -> Result<T, String>) -> anyhow::Result<Option<T>> {
        match self.0.get(key) {
            None => Ok(None),
            Some(v) => {
                parse(v).map(Some).map_err(|expected| anyhow!("{key}: expected {expected}, found {}", describe(v)))
            }
        }
    }

    fn usize(v: &Value) -> Result<usize, String> {
        v.as_u64().and_then(|n| usize::try_from(n).ok()).ok_or_else(|| "a non-negative integer".to_owned())
    }

    fn f64(v: &Value) -> Result<f64, String> {
        v.as_f64().ok_or_else(|| "a number".to_owned())
    }

    fn bool(v: &Value) -> Result<bool, String> {
        v.as_bool().ok_or_else(|| "true or false".to_owned())
    }

    fn betas(v: &Value) -> Result<Option<Vec<f64>>, String> {
        let expected = || "null or a list of numbers".to_owned();
        match v {
            Value::Null => Ok(None),
            Value::Array(items) => {
                items.iter().map(Value::as_f64).collect::<Option<Vec<_>>>().map(Some).ok_or_else(expected)
            }
            _ => Err(expected()),
        }
    }

    fn choice<T: Copy + fmt::Display>(all: &'static [T]) -> impl Fn(&Value) -> Result<T, String> {
        move |v| {
            v.as_str().and_then(|s| all.iter().copied().find(|c| c.to_string() == s)).ok_or_else(|| {
                let names: Vec<String> = all.iter().map(ToString::to_string).collect();
                format!("one of {}", names.join(", "))
            })
        }
    }
}

/// A JSON value as it appears in the file, shortened when long.
fn describe(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 60 {
        let head: String = text.chars().take(57).collect();
        format!("{head}...")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(path)
    }

    fn error_of(json: &str) -> String {
        let err = SchedulerConfig::from_json_str(json).expect_err(json);
        println!("{json} -> {err}");
        err.to_string()
    }

    #[test]
    fn empty_config_takes_ddim_defaults() {
        let config = SchedulerConfig::from_json_str("{}").unwrap();
        assert_eq!(config, SchedulerConfig::default());
        assert_eq!(config.beta_schedule, BetaSchedule::Linear);
        assert!(config.clip_sample && config.set_alpha_to_one);
        assert_eq!(config.timestep_spacing, TimestepSpacing::Leading);
    }

    #[test]
    fn pndm_config_is_read_as_ddim_would() {
        let config = SchedulerConfig::from_file(fixture("sd15-tiny/model/scheduler/scheduler_config.json")).unwrap();
        assert_eq!(config.class_name.as_deref(), Some("PNDMScheduler"));
        assert_eq!(config.beta_schedule, BetaSchedule::ScaledLinear);
        assert_eq!((config.beta_start, config.beta_end), (0.00085, 0.012));
        assert_eq!(config.trained_betas, None);
        assert!(!config.clip_sample && !config.set_alpha_to_one);
        assert_eq!(config.steps_offset, 1);
        // not in the file: DDIM's defaults
        assert_eq!(config.prediction_type, PredictionType::Epsilon);
        assert_eq!(config.timestep_spacing, TimestepSpacing::Leading);
        assert_eq!(config.clip_sample_range, 1.0);
        assert!(!config.rescale_betas_zero_snr);

        let sd2 = SchedulerConfig::from_file(fixture("sd2-tiny/model/scheduler/scheduler_config.json")).unwrap();
        assert_eq!(sd2.class_name.as_deref(), Some("DDIMScheduler"));
        assert_eq!(sd2.prediction_type, PredictionType::VPrediction);
    }

    #[test]
    fn every_ddim_key_is_read_and_unknown_keys_are_ignored() {
        let config = SchedulerConfig::from_json_str(
            r#"{"_class_name": "EulerDiscreteScheduler", "num_train_timesteps": 3,
                "beta_start": 0.1, "beta_end": 0.5, "beta_schedule": "squaredcos_cap_v2",
                "trained_betas": [0.1, 0.2, 0.3], "clip_sample": false, "clip_sample_range": 2,
                "set_alpha_to_one": false, "steps_offset": 2, "prediction_type": "sample",
                "timestep_spacing": "trailing", "rescale_betas_zero_snr": true,
                "thresholding": false, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 3.0,
                "interpolation_type": "linear", "use_karras_sigmas": false, "skip_prk_steps": true}"#,
        )
        .unwrap();
        let expected = SchedulerConfig {
            class_name: Some("EulerDiscreteScheduler".into()),
            num_train_timesteps: 3,
            beta_start: 0.1,
            beta_end: 0.5,
            beta_schedule: BetaSchedule::SquaredcosCapV2,
            trained_betas: Some(vec![0.1, 0.2, 0.3]),
            clip_sample: false,
            clip_sample_range: 2.0,
            set_alpha_to_one: false,
            steps_offset: 2,
            prediction_type: PredictionType::Sample,
            timestep_spacing: TimestepSpacing::Trailing,
            rescale_betas_zero_snr: true,
            source: Map::new(),
        };
        assert_eq!(config, expected);
        // serializes back to diffusers' names, and reads back the same
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["beta_schedule"], "squaredcos_cap_v2");
        assert_eq!(json["prediction_type"], "sample");
        assert_eq!(SchedulerConfig::from_json(&json).unwrap(), config);
        let via_serde: SchedulerConfig = serde_json::from_value(json).unwrap();
        assert_eq!(via_serde, config);
    }

    #[test]
    fn wrong_types_name_the_key_and_the_expectation() {
        assert_eq!(
            error_of(r#"{"num_train_timesteps": "a"}"#),
            r#"num_train_timesteps: expected a non-negative integer, found "a""#
        );
        assert_eq!(error_of(r#"{"steps_offset": -1}"#), "steps_offset: expected a non-negative integer, found -1");
        assert_eq!(error_of(r#"{"beta_start": null}"#), "beta_start: expected a number, found null");
        assert_eq!(error_of(r#"{"clip_sample": "yes"}"#), r#"clip_sample: expected true or false, found "yes""#);
        assert_eq!(
            error_of(r#"{"trained_betas": [0.1, "x"]}"#),
            r#"trained_betas: expected null or a list of numbers, found [0.1,"x"]"#
        );
        assert_eq!(
            error_of(r#"{"prediction_type": "v-prediction"}"#),
            r#"prediction_type: expected one of epsilon, v_prediction, sample, found "v-prediction""#
        );
        assert_eq!(
            error_of(r#"{"timestep_spacing": 1}"#),
            "timestep_spacing: expected one of leading, trailing, linspace, found 1"
        );
        assert_eq!(error_of("[1]"), "expected a JSON object, found [1]");
        assert!(error_of("{").starts_with("not valid JSON: "));
    }

    #[test]
    fn impossible_or_unsupported_settings_are_refused() {
        let msg = error_of(r#"{"thresholding": true}"#);
        assert!(msg.starts_with("thresholding: "), "{msg}");
        assert_eq!(error_of(r#"{"num_train_timesteps": 0}"#), "num_train_timesteps: expected 1 to 100000, found 0");
        assert_eq!(
            error_of(r#"{"num_train_timesteps": 3, "trained_betas": [0.1, 0.2]}"#),
            "trained_betas: expected 3 values (num_train_timesteps), found 2"
        );
    }

    /// 10^12 timesteps used to pass, and `DdimScheduler::new` then asked for a 4 TB
    /// schedule and aborted; a huge steps_offset overflowed the leading timesteps.
    #[test]
    fn sizes_that_cannot_be_allocated_or_added_are_refused() {
        assert_eq!(
            error_of(r#"{"num_train_timesteps": 1000000000000}"#),
            "num_train_timesteps: expected 1 to 100000, found 1000000000000"
        );
        assert_eq!(
            error_of(r#"{"steps_offset": 18446744073709551615}"#),
            "steps_offset: expected 0 to 999 (below num_train_timesteps), found 18446744073709551615"
        );
        assert_eq!(
            error_of(r#"{"num_train_timesteps": 10, "steps_offset": 10}"#),
            "steps_offset: expected 0 to 9 (below num_train_timesteps), found 10"
        );
        let config = SchedulerConfig::from_json_str(r#"{"num_train_timesteps": 10, "steps_offset": 9}"#).unwrap();
        assert_eq!(config.steps_offset, 9);
    }

    /// Betas outside (0, 1) used to pass and give NaN alphas_cumprod (a negative
    /// alpha's square root, `0 / 0` in the step), hence black images.
    #[test]
    fn betas_that_make_nan_are_refused() {
        for (json, expected) in [
            (r#"{"beta_start": 0}"#, "beta_start: expected a number between 0 and 1 (exclusive), found 0.0"),
            (r#"{"beta_start": -0.5}"#, "beta_start: expected a number between 0 and 1 (exclusive), found -0.5"),
            (r#"{"beta_end": 1}"#, "beta_end: expected a number between 0 and 1 (exclusive), found 1.0"),
            (r#"{"beta_end": 1e300}"#, "beta_end: expected a number between 0 and 1 (exclusive), found 1e300"),
            (
                r#"{"num_train_timesteps": 3, "trained_betas": [0.1, 1.5, 0.2]}"#,
                "trained_betas[1]: expected a number between 0 and 1 (exclusive), found 1.5",
            ),
            (r#"{"clip_sample_range": 0}"#, "clip_sample_range: expected a finite number above 0, found 0.0"),
            (r#"{"clip_sample_range": -1}"#, "clip_sample_range: expected a finite number above 0, found -1.0"),
        ] {
            assert_eq!(error_of(json), expected);
        }
    }

    /// Valid betas can still give alphas_cumprod of 0 (float32 underflow of the
    /// product) or 1 (`1 - beta` rounding to 1), where a step divides by zero.
    #[test]
    fn schedules_that_reach_0_or_1_are_refused() {
        let underflow = error_of(r#"{"num_train_timesteps": 100000}"#);
        assert!(underflow.starts_with("beta_start, beta_end, beta_schedule, num_train_timesteps: "), "{underflow}");
        assert!(underflow.contains("is 0.0 in float32, expected a value between 0 and 1"), "{underflow}");
        let one = error_of(r#"{"beta_start": 1e-10}"#);
        assert!(one.contains("alphas_cumprod[0] is 1.0 in float32"), "{one}");
        let trained = error_of(r#"{"num_train_timesteps": 2, "trained_betas": [1e-9, 0.5]}"#);
        assert!(trained.starts_with("trained_betas: the schedule's alphas_cumprod[0] is 1.0"), "{trained}");
        // One timestep rescaled to zero SNR is 0 / 0.
        let single = error_of(r#"{"num_train_timesteps": 1, "rescale_betas_zero_snr": true}"#);
        assert!(single.contains("with rescale_betas_zero_snr: the schedule's alphas_cumprod[0] is NaN"), "{single}");
        // ...while the zero at the end of a rescaled schedule is what it is for.
        let config = SchedulerConfig::from_json_str(r#"{"rescale_betas_zero_snr": true}"#).unwrap();
        assert_eq!(super::super::schedule::alphas_cumprod(&config).last(), Some(&0.0));
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scheduler_config.json");
        std::fs::write(&path, r#"{"beta_schedule": "foo"}"#).unwrap();
        let err = SchedulerConfig::from_file(&path).unwrap_err().to_string();
        println!("{err}");
        assert_eq!(
            err,
            format!(
                r#"{}: beta_schedule: expected one of linear, scaled_linear, squaredcos_cap_v2, found "foo""#,
                path.display()
            )
        );
        let missing = dir.path().join("missing.json");
        let err = format!("{:#}", SchedulerConfig::from_file(&missing).unwrap_err());
        println!("{err}");
        assert!(err.starts_with(&format!("{}: cannot read", missing.display())), "{err}");
    }
}
