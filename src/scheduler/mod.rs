//! The DDIM scheduler, computed exactly as diffusers' `DDIMScheduler`.
//!
//! [`SchedulerConfig`] reads a checkpoint's `scheduler/scheduler_config.json`
//! (whatever scheduler it names) the way `DDIMScheduler.from_config` does,
//! and [`DdimScheduler`] reproduces diffusers' schedule, timesteps and steps
//! with torch's float32 arithmetic, returning every intermediate of a step.

mod config;
mod ddim;
mod schedule;

pub use config::{BetaSchedule, PredictionType, SchedulerConfig, TimestepSpacing};
pub use ddim::{DdimScheduler, DdimStep};

#[cfg(test)]
mod tests;
