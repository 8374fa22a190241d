#![doc = include_str!("../README.md")]

pub mod error;
pub mod job;
pub mod listener;
pub mod runner;
pub mod storage;

pub use error::{JobError, SchedulerError};
pub use job::BackgroundJob;
pub use runner::{PassStats, QueueWaker, Runner, RunnerBuilder, RunnerSettings, backoff};

use herald_core::DbConnection;

/// `herald jobs retry ID`: makes a dead, cancelled or waiting job due now with fresh attempts.
pub fn retry_job(conn: &mut DbConnection, id: i64) -> Result<storage::Job, SchedulerError> {
    let job = storage::find(conn, id)?.ok_or(SchedulerError::NotFound(id))?;
    if job.status == storage::RUNNING {
        return Err(SchedulerError::InvalidState {
            id,
            status: job.status,
            message: "it is running now; wait for its outcome".into(),
        });
    }
    storage::retry_now(conn, id)?;
    storage::find(conn, id)?.ok_or(SchedulerError::NotFound(id))
}

/// `herald jobs cancel ID`: cancels a job that has not started.
pub fn cancel_job(conn: &mut DbConnection, id: i64) -> Result<storage::Job, SchedulerError> {
    let job = storage::find(conn, id)?.ok_or(SchedulerError::NotFound(id))?;
    if storage::cancel(conn, id)? == 0 {
        return Err(SchedulerError::InvalidState {
            id,
            status: job.status,
            message: "only a queued job can be cancelled".into(),
        });
    }
    storage::find(conn, id)?.ok_or(SchedulerError::NotFound(id))
}
