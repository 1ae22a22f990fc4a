//! The DDIM scheduler, computed exactly as diffusers' `DDIMScheduler`.
