//! Keeping mailboxes synced in the worker (E4). [`run`] gives every mailbox it can lease a task
//! of its own: the task holds the mailbox's lease (renewed while it lives, so PostgreSQL workers
//! share the mailboxes and never sync one twice), syncs, then waits in IDLE on the inbox for new
//! mail (or polls every `interval` where the server has no IDLE), and reconnects with capped
//! backoff after a failure. Repeated authentication failures put a mailbox in `auth_failed`, tell
//! its owner, and end its task until its credentials are saved again.
//!
//! [`sync_one`] and [`round`] are single passes under the same lease, for the `sync_mailbox_now`
//! job and for tests.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use diesel::prelude::*;
use herald_core::crypto::SecretKey;
use herald_core::time::now;
use herald_core::{CoreError, Db};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::connect::Failure;
use crate::imap::Session;
use crate::model::Mailbox;
use crate::schema::mailboxes;
use crate::store::{FolderState, Role};
use crate::sync::{SyncError, SyncOptions, sync_mailbox, sync_pass};

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
    /// Time between full passes of a mailbox (its polling interval without IDLE; with IDLE new
    /// inbox mail comes at once and the Sent folder is read at least this often).
    pub interval: Duration,
    /// How long a worker holds a mailbox without renewing; a crashed worker's mailboxes are
    /// taken over after this.
    pub lease: Duration,
    /// How often [`run`] looks for mailboxes to watch and for syncs asked through the API.
    pub tick: Duration,
    /// First wait after a failed pass; doubled after each failure up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Use IDLE where the server offers it.
    pub idle: bool,
    pub options: SyncOptions,
}

impl Default for SyncerSettings {
    fn default() -> Self {
        SyncerSettings {
            interval: Duration::from_secs(60),
            lease: Duration::from_secs(90),
            tick: Duration::from_secs(2),
            min_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(300),
            idle: true,
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

/// Leases the mailbox for `worker` if nobody else holds it (or renews `worker`'s lease).
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
                    .or(mailboxes::sync_locked_until.lt(at))
                    .or(mailboxes::sync_locked_by.eq(worker)),
            ),
    )
    .set((
        mailboxes::sync_locked_by.eq(worker),
        mailboxes::sync_locked_until.eq(until),
    ))
    .execute(conn)?;
    Ok(n == 1)
}

/// Records a failed pass; releases the lease unless `keep_lease` (a watching task retries
/// itself). Returns the mailbox's new state.
fn record_failure(
    conn: &mut herald_core::DbConnection,
    id: i64,
    worker: &str,
    error: &SyncError,
    keep_lease: bool,
) -> QueryResult<&'static str> {
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
    let release = !keep_lease || state == "auth_failed";
    let updated = diesel::update(
        mailboxes::table
            .filter(mailboxes::id.eq(id))
            .filter(mailboxes::sync_locked_by.eq(worker)),
    )
    .set((
        mailboxes::state.eq(state),
        mailboxes::last_error.eq(Some(error.to_string())),
        mailboxes::updated_at.eq(now()),
    ))
    .execute(conn)?;
    if release {
        release_lease(conn, id, worker)?;
    }
    if state == "auth_failed" && updated == 1 {
        tracing::warn!(
            mailbox.id = id,
            "authentication failed {failures} times in a row: mailbox set to auth_failed"
        );
        tell_owner_auth_failed(conn, id, error)?;
    }
    Ok(state)
}

/// The owner learns that their mailbox stopped syncing and needs the right password (E4).
fn tell_owner_auth_failed(
    conn: &mut herald_core::DbConnection,
    id: i64,
    error: &SyncError,
) -> QueryResult<()> {
    use herald_core::notifications::{NewNotification, Notification};
    let (account_id, owner_id, address): (i64, i64, String) = mailboxes::table
        .find(id)
        .select((
            mailboxes::account_id,
            mailboxes::owner_id,
            mailboxes::address,
        ))
        .first(conn)?;
    let title = format!("{address} stopped syncing: its password was refused");
    let body = format!(
        "The mail server refused the login {AUTH_FAILURES_LIMIT} times in a row ({error}). \
         Save the mailbox's current password to resume syncing."
    );
    Notification::create(
        conn,
        &NewNotification {
            account_id,
            user_id: owner_id,
            kind: "mailbox_auth_failed",
            title: &title,
            body: Some(&body),
            subject: Some(("mailbox", id)),
        },
    )?;
    Ok(())
}

fn release_lease(conn: &mut herald_core::DbConnection, id: i64, worker: &str) -> QueryResult<()> {
    diesel::update(
        mailboxes::table
            .filter(mailboxes::id.eq(id))
            .filter(mailboxes::sync_locked_by.eq(worker)),
    )
    .set((
        mailboxes::sync_locked_by.eq(None::<String>),
        mailboxes::sync_locked_until.eq(None::<chrono::NaiveDateTime>),
    ))
    .execute(conn)?;
    Ok(())
}

/// A pass succeeded: authentication failures start counting again.
fn record_success(conn: &mut herald_core::DbConnection, id: i64, worker: &str) -> QueryResult<()> {
    diesel::update(
        mailboxes::table
            .filter(mailboxes::id.eq(id))
            .filter(mailboxes::sync_locked_by.eq(worker)),
    )
    .set(mailboxes::auth_failures.eq(0))
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
            db.run(move |conn| {
                record_success(conn, id, &owner)?;
                Ok::<_, CoreError>(release_lease(conn, id, &owner)?)
            })
            .await?;
            Ok(SyncOutcome::Synced)
        }
        Err(error) => {
            tracing::warn!(mailbox.id = id, error = %error, "mailbox sync failed");
            db.run(move |conn| {
                Ok::<_, CoreError>(record_failure(conn, id, &owner, &error, false)?)
            })
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

/// Keeps every mailbox this worker can lease synced, one task per mailbox, until `shutdown`.
pub async fn run(db: Db, key: SecretKey, settings: SyncerSettings, shutdown: CancellationToken) {
    let worker = format!(
        "sync-{}-{:06x}",
        std::process::id(),
        rand::random::<u32>() & 0xFF_FFFF
    );
    let settings = Arc::new(settings);
    let mut watched: HashMap<i64, (Arc<Notify>, tokio::task::JoinHandle<()>)> = HashMap::new();
    loop {
        watched.retain(|_, (_, task)| !task.is_finished());
        match db
            .run({
                let worker = worker.clone();
                move |conn| Ok::<_, CoreError>(watch_list(conn, &worker)?)
            })
            .await
        {
            Ok((free, requested)) => {
                for id in free {
                    if watched.contains_key(&id) {
                        continue;
                    }
                    let wake = Arc::new(Notify::new());
                    let task = tokio::spawn(watch(
                        db.clone(),
                        key.clone(),
                        worker.clone(),
                        id,
                        settings.clone(),
                        wake.clone(),
                        shutdown.clone(),
                    ));
                    watched.insert(id, (wake, task));
                }
                for id in requested {
                    if let Some((wake, _)) = watched.get(&id) {
                        wake.notify_one();
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "looking for mailboxes to sync failed"),
        }
        metrics::gauge!("herald_mailboxes_watched").set(watched.len() as f64);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(settings.tick) => {}
        }
    }
    // Each task releases its lease on the way out, so another worker takes over at once.
    for (_, (_, task)) in watched {
        let _ = task.await;
    }
}

/// Mailboxes nobody watches (or this worker's), and this worker's mailboxes with a sync asked
/// for through the API.
fn watch_list(
    conn: &mut herald_core::DbConnection,
    worker: &str,
) -> QueryResult<(Vec<i64>, Vec<i64>)> {
    let at = now();
    let free = mailboxes::table
        .filter(mailboxes::state.ne("auth_failed"))
        .filter(
            mailboxes::sync_locked_until
                .is_null()
                .or(mailboxes::sync_locked_until.lt(at))
                .or(mailboxes::sync_locked_by.eq(worker)),
        )
        .select(mailboxes::id)
        .load(conn)?;
    let requested = mailboxes::table
        .filter(mailboxes::sync_locked_by.eq(worker))
        .filter(mailboxes::sync_requested_at.is_not_null())
        .select(mailboxes::id)
        .load(conn)?;
    Ok((free, requested))
}

/// Marks a sync as asked for: the worker watching the mailbox runs a pass within a tick.
pub fn mark_sync_requested(conn: &mut herald_core::DbConnection, id: i64) -> QueryResult<()> {
    diesel::update(mailboxes::table.find(id))
        .set(mailboxes::sync_requested_at.eq(Some(now())))
        .execute(conn)?;
    Ok(())
}

/// Why a watching task waits before its next pass.
enum Wait {
    /// Synced: IDLE (or sleep) until new mail, a request or the interval.
    Synced(Option<Session>),
    /// Failed: sleep the backoff, unless woken.
    Backoff(Duration),
}

/// One mailbox's task: lease, sync, wait for news, again; ends when the lease is lost, the
/// mailbox is removed or goes to `auth_failed`, or at shutdown.
async fn watch(
    db: Db,
    key: SecretKey,
    worker: String,
    id: i64,
    settings: Arc<SyncerSettings>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let lease_for = TimeDelta::from_std(settings.lease).unwrap_or(TimeDelta::seconds(90));
    let lost = shutdown.child_token();
    let took = {
        let owner = worker.clone();
        db.run(move |conn| Ok::<_, CoreError>(lease(conn, id, &owner, now() + lease_for)?))
            .await
    };
    if !matches!(took, Ok(true)) {
        return;
    }
    let renewer = tokio::spawn(renew_lease(
        db.clone(),
        worker.clone(),
        id,
        settings.lease,
        lost.clone(),
    ));
    let mut session: Option<(Session, chrono::NaiveDateTime)> = None;
    let mut backoff = settings.min_backoff;
    loop {
        if lost.is_cancelled() {
            break;
        }
        let mailbox = match db
            .run(move |conn| {
                diesel::update(mailboxes::table.find(id))
                    .set(mailboxes::sync_requested_at.eq(None::<chrono::NaiveDateTime>))
                    .execute(conn)?;
                Mailbox::find_any(conn, id)
            })
            .await
        {
            Ok(mailbox) => mailbox,
            Err(CoreError::NotFound { .. }) => break,
            Err(e) => {
                tracing::warn!(mailbox.id = id, error = %e, "reading the mailbox failed");
                if sleep_or_wake(settings.max_backoff.min(backoff), &wake, &lost).await {
                    break;
                }
                continue;
            }
        };
        if mailbox.state == "auth_failed" {
            break;
        }
        // Saved again (new password, other server): a new connection with the new settings.
        let open = session
            .take()
            .filter(|(_, opened)| *opened == mailbox.updated_at);
        let started = std::time::Instant::now();
        let result = pass(&db, &key, &mailbox, open.map(|(s, _)| s), &settings.options).await;
        metrics::histogram!("herald_mailbox_sync_seconds").record(started.elapsed().as_secs_f64());
        let owner = worker.clone();
        let wait = match result {
            Ok(open) => {
                backoff = settings.min_backoff;
                let _ = db
                    .run(move |conn| Ok::<_, CoreError>(record_success(conn, id, &owner)?))
                    .await;
                Wait::Synced(Some(open))
            }
            Err(error) => {
                tracing::warn!(mailbox.id = id, error = %error, "mailbox sync failed");
                let state = db
                    .run(move |conn| {
                        Ok::<_, CoreError>(record_failure(conn, id, &owner, &error, true)?)
                    })
                    .await;
                if matches!(state, Ok("auth_failed")) {
                    break;
                }
                let wait = backoff;
                backoff = (backoff * 2).min(settings.max_backoff);
                Wait::Backoff(wait)
            }
        };
        match wait {
            Wait::Backoff(wait) => {
                if sleep_or_wake(wait, &wake, &lost).await {
                    break;
                }
            }
            Wait::Synced(Some(open)) if settings.idle && open.has("IDLE") => {
                match idle(&db, id, open, &settings, &wake, &lost).await {
                    Ok(open) => session = Some((open, mailbox.updated_at)),
                    // The connection broke while waiting: the next pass reconnects.
                    Err(e) => tracing::debug!(mailbox.id = id, error = %e, "IDLE ended"),
                }
            }
            Wait::Synced(open) => {
                session = open.map(|s| (s, mailbox.updated_at));
                if sleep_or_wake(settings.interval, &wake, &lost).await {
                    break;
                }
            }
        }
    }
    renewer.abort();
    if let Some((open, _)) = session {
        open.logout().await;
    }
    let _ = db
        .run(move |conn| Ok::<_, CoreError>(release_lease(conn, id, &worker)?))
        .await;
}

/// A pass over `open`, or over a new session when there is none.
async fn pass(
    db: &Db,
    key: &SecretKey,
    mailbox: &Mailbox,
    open: Option<Session>,
    options: &SyncOptions,
) -> Result<Session, SyncError> {
    let mut session = match open {
        Some(session) => session,
        None => Session::open(&mailbox.imap_settings(key)?).await?,
    };
    sync_pass(db, &mut session, mailbox, options).await?;
    Ok(session)
}

/// IDLE on the inbox until new mail, a wake-up, the interval, or the lease is lost.
async fn idle(
    db: &Db,
    id: i64,
    mut session: Session,
    settings: &SyncerSettings,
    wake: &Notify,
    lost: &CancellationToken,
) -> Result<Session, SyncError> {
    let status = session.select(&settings.options.inbox).await?;
    // Mail that arrived between the pass and this SELECT raises no IDLE report: sync now.
    let stored = db
        .run(move |conn| Ok::<_, CoreError>(FolderState::load(conn, id, Role::Inbox)?))
        .await?;
    if stored.is_none_or(|s| i64::from(status.uid_next) > s.uid_next) {
        return Ok(session);
    }
    let (session, _changed) = session
        .idle(settings.interval, async {
            tokio::select! {
                _ = wake.notified() => {}
                _ = lost.cancelled() => {}
            }
        })
        .await?;
    Ok(session)
}

/// Sleeps `wait` unless woken; true when the task should end.
async fn sleep_or_wake(wait: Duration, wake: &Notify, lost: &CancellationToken) -> bool {
    tokio::select! {
        _ = lost.cancelled() => true,
        _ = wake.notified() => false,
        _ = tokio::time::sleep(wait) => false,
    }
}

/// Renews the lease every third of its length; cancels `lost` when another worker has it.
async fn renew_lease(db: Db, worker: String, id: i64, lease: Duration, lost: CancellationToken) {
    let lease_for = TimeDelta::from_std(lease).unwrap_or(TimeDelta::seconds(90));
    loop {
        tokio::select! {
            _ = lost.cancelled() => return,
            _ = tokio::time::sleep(lease / 3) => {}
        }
        let owner = worker.clone();
        let renewed = db
            .run(move |conn| {
                Ok::<_, CoreError>(
                    diesel::update(
                        mailboxes::table
                            .filter(mailboxes::id.eq(id))
                            .filter(mailboxes::sync_locked_by.eq(&owner)),
                    )
                    .set(mailboxes::sync_locked_until.eq(now() + lease_for))
                    .execute(conn)?,
                )
            })
            .await;
        match renewed {
            Ok(0) => {
                tracing::warn!(mailbox.id = id, "another worker took the mailbox over");
                lost.cancel();
                return;
            }
            Ok(_) => {}
            // A database hiccup: the lease has two more thirds to go.
            Err(e) => tracing::warn!(mailbox.id = id, error = %e, "renewing the lease failed"),
        }
    }
}

/// Mailboxes per state, and the oldest successful sync among those still syncing, in seconds
/// (the sync lag `/metrics` reports; a mailbox never synced counts from its creation).
pub fn sync_health(conn: &mut herald_core::DbConnection) -> QueryResult<(Vec<(String, i64)>, i64)> {
    let rows: Vec<(String, Option<chrono::NaiveDateTime>, chrono::NaiveDateTime)> =
        mailboxes::table
            .select((
                mailboxes::state,
                mailboxes::last_synced_at,
                mailboxes::created_at,
            ))
            .load(conn)?;
    let at = now();
    let mut states: Vec<(String, i64)> = Vec::new();
    let mut lag = 0;
    for (state, synced, created) in rows {
        if state != "auth_failed" {
            lag = lag.max((at - synced.unwrap_or(created)).num_seconds());
        }
        match states.iter_mut().find(|(s, _)| *s == state) {
            Some((_, n)) => *n += 1,
            None => states.push((state, 1)),
        }
    }
    Ok((states, lag.max(0)))
}
