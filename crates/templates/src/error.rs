//! Errors of the templates crate.
//!
//! Policy: what the template author or the caller got wrong carries enough to point at it (the
//! part, line and column of a syntax error; every missing name); limits say which one was hit.

use thiserror::Error;

use crate::engine::Part;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The template does not parse, or uses a construct templates may not use.
    #[error("{part}: line {line}, column {column}: {message}")]
    Syntax {
        part: Part,
        line: usize,
        column: usize,
        message: String,
    },

    /// Placeholders with no value and no `default`, across all parts, sorted.
    #[error("no value for: {}", names.join(", "))]
    MissingValues { names: Vec<String> },

    /// The render used more than its fuel (a loop that does not end) or wrote more than the
    /// output limit.
    #[error("{0}")]
    LimitExceeded(String),

    /// Any other failure while rendering (a filter given the wrong type, a division by zero…).
    #[error("{part}: line {line}: {message}")]
    Render {
        part: Part,
        line: usize,
        message: String,
    },

    #[error(transparent)]
    Core(#[from] herald_core::CoreError),
}

impl From<diesel::result::Error> for TemplateError {
    fn from(e: diesel::result::Error) -> Self {
        TemplateError::Core(e.into())
    }
}
