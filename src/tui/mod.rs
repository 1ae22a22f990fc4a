//! The terminal lab.

pub mod graphics;
pub mod text_field;
