//! The terminal lab's interface pieces, kept apart from the pipeline so they can be tested without a model.

pub mod text_field;
