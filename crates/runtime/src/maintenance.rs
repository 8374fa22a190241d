//! Housekeeping jobs.

use herald_core::idempotency::purge_expired;
use herald_core::time::TimeDelta;
use herald_scheduler::{BackgroundJob, JobError, storage};
use serde::{Deserialize, Serialize};

use crate::JobContext;

/// Deletes idempotency keys past their 24 hours, then schedules its next run in an hour.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PurgeIdempotencyKeys;

impl PurgeIdempotencyKeys {
    /// Queues a run at `at` unless one is already queued, so restarts never multiply the chain.
    pub fn ensure_scheduled(
        conn: &mut herald_core::DbConnection,
        at: herald_core::time::NaiveDateTime,
    ) -> Result<(), herald_scheduler::SchedulerError> {
        conn.write(|conn| {
            let queued = storage::list(conn, Some(storage::QUEUED), Some(Self::JOB_NAME), 1)?;
            if queued.is_empty() {
                PurgeIdempotencyKeys.enqueue_at(conn, at)?;
            }
            Ok(())
        })
    }
}

impl BackgroundJob for PurgeIdempotencyKeys {
    const JOB_NAME: &'static str = "purge_idempotency_keys";
    const QUEUE: &'static str = "maintenance";
    type Context = JobContext;

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        ctx.db
            .run(|conn| {
                let purged = purge_expired(conn)?;
                if purged > 0 {
                    tracing::info!(purged, "purged expired idempotency keys");
                }
                let next = herald_core::time::now() + TimeDelta::hours(1);
                PurgeIdempotencyKeys::ensure_scheduled(conn, next)
                    .map_err(|e| herald_core::CoreError::Unavailable(e.to_string()))?;
                Ok::<_, herald_core::CoreError>(())
            })
            .await
            .map_err(JobError::temporary)
    }
}
