//! The samplers, each computed exactly as its diffusers class.
//!
//! [`SchedulerConfig`] reads a checkpoint's `scheduler/scheduler_config.json`
//! (whatever scheduler it names) the way `DDIMScheduler.from_config` does,
//! and keeps the keys as read for the other classes. [`DdimScheduler`]
//! reproduces diffusers' DDIM schedule, timesteps and steps with torch's float32
//! arithmetic, returning every intermediate of a step; [`Euler`] does the same
//! for the Euler samplers; [`Sampler`] is the one interface a run uses.

mod config;
mod ddim;
mod dpmpp;
mod euler;
mod heun;
mod lcm;
mod lms;
mod pndm;
mod sampler;
mod schedule;
mod sigmas;
mod unipc;

pub use config::{BetaSchedule, PredictionType, SchedulerConfig, TimestepSpacing};
pub use ddim::{DdimScheduler, DdimStep};
pub use dpmpp::{DpmSolverPP, DpmStep};
pub use euler::{Euler, EulerStep};
pub use heun::{Heun, HeunStep};
pub use lcm::{Lcm, LcmStep};
pub use lms::{Lms, LmsStep};
pub use pndm::{Pndm, PndmStep};
pub use sampler::{Sampler, SamplerName, SamplerStep};
pub use unipc::{UniPc, UniPcStep};

#[cfg(test)]
mod sampler_tests;
#[cfg(test)]
mod tests;
