//! Keeping mailboxes synced in the worker (E4): each round, every mailbox that is due and not
//! held by another worker is leased, synced, and released. The lease lets several worker
//! processes share the mailboxes on PostgreSQL without two syncing one. Repeated authentication
//! failures put a mailbox in `auth_failed`, which is not retried until its credentials change.
//!
//! Push with IDLE is not here yet: mailboxes are polled every `interval`.

use std::time::Duration;

use chrono::TimeDelta;
use diesel::prelude::*;
use herald_core::crypto::SecretKey;
use herald_core::time::now;
use herald_core::{CoreError, Db};
use tokio_util::sync::CancellationToken;

use crate::connect::Failure;
use crate::schema::mailboxes;
use crate::sync::{SyncError, SyncOptions, sync_mailbox};

/// The job that syncs one mailbox now (`POST /api/v1/mailboxes/{id}/sync`); the runtime
/// registers it with this name and payload.
pub const SYNC_NOW_JOB: &str = "sync_mailbox_now";

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct SyncNow {
    pub mailbox_id: i64,
}

/// Asks for a sync of a mailbox the viewer may see, as soon as a worker is free; returns the
/// job id. An `auth_failed` mailbox needs new credentials first.
pub fn request_sync(
    conn: &mut herald_core::DbConnection,
    viewer: &herald_core::identity::User,
    id: i64,
) -> Result<i64, CoreError> {
    let mailbox = crate::model::Mailbox::find(conn, viewer, id)?;
    if mailbox.state == "auth_failed" {
        return Err(CoreError::Conflict {
            code: "mailbox_auth_failed",
            message: "the mailbox's credentials were refused; save the right password first".into(),
        });
    }
    let payload = serde_json::to_string(&SyncNow { mailbox_id: id })
        .map_err(|e| CoreError::Unavailable(e.to_string()))?;
    Ok(herald_scheduler::storage::enqueue(
        conn,
        &herald_scheduler::storage::NewJob {
            job_type: SYNC_NOW_JOB,
            queue: "mail",
            payload: &payload,
            max_attempts: 3,
            run_at: now(),
        },
    )?)
}

/// Authentication failures in a row before a mailbox stops being tried.
pub const AUTH_FAILURES_LIMIT: i32 = 3;

#[derive(Clone, Debug)]
pub struct SyncerSettings {
    /// Time between rounds (the polling interval of a mailbox).
    pub interval: Duration,
    /// How long a worker holds a mailbox it is syncing.
    pub lease: Duration,
    pub options: SyncOptions,
}

impl Default for SyncerSettings {
    fn default() -> Self {
        SyncerSettings {
            interval: Duration::from_secs(60),
            lease: Duration::from_secs(600),
            options: SyncOptions::default(),
        }
    }
}

/// What one round did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoundReport {
    pub synced: Vec<i64>,
    pub failed: Vec<i64>,
}

/// Leases the mailbox for `worker` if nobody else holds it.
fn lease(
    conn: &mut herald_core::DbConnection,
    id: i64,
    worker: &str,
    until: chrono::NaiveDateTime,
) -> QueryResult<bool> {
    let at = now();
    let n = diesel::update(
        mailboxes::table
            .filter(mailboxes::id.eq(id))
            .filter(mailboxes::state.ne("auth_failed"))
            .filter(
                mailboxes::sync_locked_until
                    .is_null()
                    .or(mailboxes::sync_locked_until.lt(at)),
            ),
    )
    .set((
        mailboxes::sync_locked_by.eq(worker),
        mailboxes::sync_locked_until.eq(until),
    ))
    .execute(conn)?;
    Ok(n == 1)
}

/// Records a failed pass (the lease is released with it).
fn record_failure(
    conn: &mut herald_core::DbConnection,
    id: i64,
    worker: &str,
    error: &SyncError,
) -> QueryResult<()> {
    let auth =
        matches!(error, SyncError::Connect(e) if matches!(e.failure, Failure::BadCredentials(_)));
    let held = mailboxes::table
        .filter(mailboxes::id.eq(id))
        .filter(mailboxes::sync_locked_by.eq(worker));
    let failures: i32 = if auth {
        diesel::update(held)
            .set(mailboxes::auth_failures.eq(mailboxes::auth_failures + 1))
            .returning(mailboxes::auth_failures)
            .get_result::<i32>(conn)
            .optional()?
            .unwrap_or(0)
    } else {
        0
    };
    let state = if failures >= AUTH_FAILURES_LIMIT {
        "auth_failed"
    } else {
        "error"
    };
    if state == "auth_failed" {
        tracing::warn!(
            mailbox.id = id,
            "authentication failed {failures} times in a row: mailbox set to auth_failed"
        );
    }
    diesel::update(
        mailboxes::table
            .filter(mailboxes::id.eq(id))
            .filter(mailboxes::sync_locked_by.eq(worker)),
    )
    .set((
        mailboxes::state.eq(state),
        mailboxes::last_error.eq(Some(error.to_string())),
        mailboxes::sync_locked_by.eq(None::<String>),
        mailboxes::sync_locked_until.eq(None::<chrono::NaiveDateTime>),
        mailboxes::updated_at.eq(now()),
    ))
    .execute(conn)?;
    Ok(())
}

fn release(conn: &mut herald_core::DbConnection, id: i64, worker: &str) -> QueryResult<()> {
    diesel::update(
        mailboxes::table
            .filter(mailboxes::id.eq(id))
            .filter(mailboxes::sync_locked_by.eq(worker)),
    )
    .set((
        mailboxes::auth_failures.eq(0),
        mailboxes::sync_locked_by.eq(None::<String>),
        mailboxes::sync_locked_until.eq(None::<chrono::NaiveDateTime>),
    ))
    .execute(conn)?;
    Ok(())
}

/// What [`sync_one`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncOutcome {
    /// Another worker holds the mailbox (its pass picks up the same mail), or it is `auth_failed`.
    Skipped,
    Synced,
    /// Recorded on the mailbox (`state`, `last_error`, `auth_failures`).
    Failed,
}

/// Leases one mailbox, syncs it and records the outcome.
pub async fn sync_one(
    db: &Db,
    key: &SecretKey,
    worker: &str,
    id: i64,
    settings: &SyncerSettings,
) -> Result<SyncOutcome, CoreError> {
    let lease_for = TimeDelta::from_std(settings.lease).unwrap_or(TimeDelta::minutes(10));
    let owner = worker.to_owned();
    if !db
        .run(move |conn| Ok::<_, CoreError>(lease(conn, id, &owner, now() + lease_for)?))
        .await?
    {
        return Ok(SyncOutcome::Skipped);
    }
    let result = sync_mailbox(db, key, id, &settings.options).await;
    let owner = worker.to_owned();
    match result {
        Ok(_) => {
            db.run(move |conn| Ok::<_, CoreError>(release(conn, id, &owner)?))
                .await?;
            Ok(SyncOutcome::Synced)
        }
        Err(error) => {
            tracing::warn!(mailbox.id = id, error = %error, "mailbox sync failed");
            db.run(move |conn| Ok::<_, CoreError>(record_failure(conn, id, &owner, &error)?))
                .await?;
            Ok(SyncOutcome::Failed)
        }
    }
}

/// One round: sync every mailbox this worker can lease.
pub async fn round(
    db: &Db,
    key: &SecretKey,
    worker: &str,
    settings: &SyncerSettings,
) -> Result<RoundReport, CoreError> {
    let ids: Vec<i64> = db
        .run(|conn| {
            Ok::<_, CoreError>(
                mailboxes::table
                    .filter(mailboxes::state.ne("auth_failed"))
                    .select(mailboxes::id)
                    .order(mailboxes::last_synced_at.asc())
                    .load(conn)?,
            )
        })
        .await?;
    let mut report = RoundReport::default();
    for id in ids {
        match sync_one(db, key, worker, id, settings).await? {
            SyncOutcome::Synced => report.synced.push(id),
            SyncOutcome::Failed => report.failed.push(id),
            SyncOutcome::Skipped => {}
        }
    }
    Ok(report)
}

/// Runs rounds until `shutdown`.
pub async fn run(db: Db, key: SecretKey, settings: SyncerSettings, shutdown: CancellationToken) {
    let worker = format!(
        "sync-{}-{:06x}",
        std::process::id(),
        rand::random::<u32>() & 0xFF_FFFF
    );
    loop {
        if let Err(e) = round(&db, &key, &worker, &settings).await {
            tracing::error!(error = %e, "mailbox sync round failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(settings.interval) => {}
        }
    }
}
