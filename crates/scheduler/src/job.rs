//! The job trait domain crates implement, one type per kind of work.

use std::future::Future;

use chrono::NaiveDateTime;
use herald_core::DbConnection;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{JobError, SchedulerError};
use crate::storage::{self, NewJob};

/// A kind of background work. Its fields are the payload, stored as JSON.
pub trait BackgroundJob: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Stable name stored with each job; renaming it orphans queued jobs.
    const JOB_NAME: &'static str;
    /// A label for operators, shown by `herald jobs list`; a runner claims the jobs of every type
    /// it has registered, whatever their queue.
    const QUEUE: &'static str = "default";
    /// Runs in total, the first included, before the job goes to `dead`.
    const MAX_ATTEMPTS: i32 = 10;

    /// What the job needs to run (database, clients, config), shared by all jobs of a runner.
    type Context: Clone + Send + Sync + 'static;

    fn run(&self, ctx: Self::Context) -> impl Future<Output = Result<(), JobError>> + Send;

    /// Enqueues to run now, in the caller's transaction: if it rolls back, the job never runs.
    fn enqueue(&self, conn: &mut DbConnection) -> Result<i64, SchedulerError> {
        self.enqueue_at(conn, herald_core::time::now())
    }

    /// Enqueues to run at `run_at` (UTC), in the caller's transaction.
    fn enqueue_at(
        &self,
        conn: &mut DbConnection,
        run_at: NaiveDateTime,
    ) -> Result<i64, SchedulerError> {
        let payload = serde_json::to_string(self)?;
        Ok(storage::enqueue(
            conn,
            &NewJob {
                job_type: Self::JOB_NAME,
                queue: Self::QUEUE,
                payload: &payload,
                max_attempts: Self::MAX_ATTEMPTS,
                run_at,
            },
        )?)
    }
}
