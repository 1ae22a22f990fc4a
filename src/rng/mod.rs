//! Random numbers that match torch's, so a seed means the same noise as in diffusers.

pub mod torch;
