//! The four stages of the talk, in the order they run, one file each:
//!
//! ```text
//! prompt_embeds = encode_prompt(prompt, negative_prompt)
//! latents       = get_latent(seed, width, height)  // or a picture's latent, noised
//! latents       = denoise(latents, prompt_embeds)      // one `denoise_step` per timestep
//! image         = vae_decode(latents)
//! ```
//!
//! Each stage is a plain function of the models and its inputs; the
//! [`crate::session::Session`] calls them one at a time and keeps what they return.

pub mod denoise;
pub mod encode_prompt;
pub mod get_latent;
pub mod vae_decode;

pub use denoise::{denoise_step, DenoiseStep, Guidance};
pub use encode_prompt::{encode_prompt, PromptEncoding};
pub use get_latent::{encode_image, get_latent, latent_shape, noise_image_latents};
pub use vae_decode::vae_decode;
