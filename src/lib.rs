//! sdlab: Stable Diffusion, one stage and one timestep at a time.
//!
//! The crate follows the talk "understand Stable Diffusion from its source code":
//! [`stages`] holds the four stages (`encode_prompt`, `get_latent`, `denoise`,
//! `vae_decode`), [`session`] drives them one call at a time and keeps every
//! intermediate, [`model`] turns a diffusers folder into candle modules, and
//! [`scheduler`] and [`rng`] reproduce diffusers' DDIM and torch's CPU `randn`.

pub mod contact_sheet;
pub mod fsutil;
pub mod image_out;
pub mod model;
pub mod png_meta;
pub mod preview;
pub mod rng;
pub mod scheduler;
pub mod session;
pub mod stages;
pub mod text;
pub mod tui;
