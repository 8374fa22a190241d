//! Errors of the scheduler crate.
//!
//! Policy: storage functions return `diesel::QueryResult`; what a job reports is a [`JobError`],
//! where the job says whether trying again can help. Administrative calls return
//! [`SchedulerError`].

use std::time::Duration;

use thiserror::Error;

/// How a job run failed.
#[derive(Clone, Debug, Error)]
#[non_exhaustive]
pub enum JobError {
    /// Worth trying again later (a network error, a 4xx SMTP reply, a 429).
    #[error("{message}")]
    Temporary {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Trying again cannot help (a 5xx SMTP reply, bad input): the job goes to `dead` now.
    #[error("{0}")]
    Permanent(String),
}

impl JobError {
    pub fn temporary(message: impl std::fmt::Display) -> Self {
        JobError::Temporary {
            message: message.to_string(),
            retry_after: None,
        }
    }

    pub fn permanent(message: impl std::fmt::Display) -> Self {
        JobError::Permanent(message.to_string())
    }
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SchedulerError {
    #[error("job {0} not found")]
    NotFound(i64),
    /// The job is in a state that does not allow the operation (e.g. cancelling a running job).
    #[error("job {id} is {status}: {message}")]
    InvalidState {
        id: i64,
        status: String,
        message: String,
    },
    #[error("job payload could not be encoded: {0}")]
    Payload(#[from] serde_json::Error),
    #[error(transparent)]
    Core(#[from] herald_core::CoreError),
}

impl From<diesel::result::Error> for SchedulerError {
    fn from(e: diesel::result::Error) -> Self {
        SchedulerError::Core(e.into())
    }
}
