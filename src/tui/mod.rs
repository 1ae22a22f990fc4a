//! The terminal lab's UI: widgets and the glue that puts them on a terminal.

pub mod graphics;
