//! Herald's durable job queue: jobs are rows in the `jobs` table, enqueued in the caller's
//! transaction, claimed with a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL), retried with capped
//! exponential backoff and kept as `dead` with their last error when they cannot succeed.
//! `run_at` serves both scheduled work (a send at 9:00) and retry backoff.
//!
//! It is generic: domain crates implement [`BackgroundJob`] and binaries register them on a
//! [`Runner`]. It must not know any domain job, and it never holds a transaction open while a
//! job runs.

pub mod error;
pub mod job;
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
