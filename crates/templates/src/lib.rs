#![doc = include_str!("../README.md")]

pub mod context;
pub mod engine;
pub mod error;
pub mod model;
pub mod schema;

pub use engine::{Compiled, Engine, Limits, Part, Rendered, Sources, Warning};
pub use error::TemplateError;
pub use model::{Saved, Scope, Template, TemplateInput, TemplatePatch};
