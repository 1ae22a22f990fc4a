//! Talk mode: the four stages as slides for a projector, each with the source of the
//! function that runs it (read from sdlab's own files at build time).

pub mod code_panel;
pub mod source;
pub mod theme;

pub use theme::Theme;
