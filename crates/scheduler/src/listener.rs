//! Cross-process wake-up on PostgreSQL: a trigger on `jobs` sends `NOTIFY herald_jobs` when jobs
//! are inserted; each runner keeps one connection listening and wakes its idle workers.
//!
//! diesel's connection reads notifications without blocking (`PQconsumeInput`, a local socket
//! read with no round trip to the server), so the listener checks every few milliseconds.

use std::time::Duration;

use diesel::RunQueryDsl;
use herald_core::{DatabaseUrl, DbConnection};
use tokio_util::sync::CancellationToken;

use crate::runner::QueueWaker;

pub const CHANNEL: &str = "herald_jobs";
const CHECK_EVERY: Duration = Duration::from_millis(5);
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// Listens until `shutdown`, reconnecting with capped backoff when the connection drops.
/// Does nothing on SQLite, where every writer is in this process.
pub fn spawn(
    url: DatabaseUrl,
    waker: QueueWaker,
    shutdown: CancellationToken,
) -> Option<std::thread::JoinHandle<()>> {
    if !matches!(url, DatabaseUrl::Postgres(_)) {
        return None;
    }
    let thread = std::thread::Builder::new().name("herald-jobs-listener".into()).spawn(move || {
        let mut backoff = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            match listen(&url, &waker, &shutdown) {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "job notification listener lost its connection");
                    // Workers still poll meanwhile; a wake-up now covers anything missed.
                    waker.wake();
                    sleep_unless_cancelled(backoff, &shutdown);
                    backoff = (backoff * 2).min(RECONNECT_MAX);
                }
            }
        }
    });
    match thread {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::warn!(error = %e, "could not start the job notification listener; workers will poll");
            None
        }
    }
}

/// Sleeps in short steps so a shutdown is not held up by a long reconnect backoff.
fn sleep_unless_cancelled(total: Duration, shutdown: &CancellationToken) {
    let step = Duration::from_millis(100);
    let mut slept = Duration::ZERO;
    while slept < total && !shutdown.is_cancelled() {
        std::thread::sleep(step);
        slept += step;
    }
}

fn listen(
    url: &DatabaseUrl,
    waker: &QueueWaker,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let DbConnection::Postgres(mut conn) = url.connect().map_err(|e| e.to_string())? else {
        return Ok(());
    };
    diesel::sql_query(format!("LISTEN {CHANNEL}"))
        .execute(&mut conn)
        .map_err(|e| e.to_string())?;
    tracing::debug!("listening for job notifications");
    while !shutdown.is_cancelled() {
        let mut woke = false;
        for notification in conn.notifications_iter() {
            notification.map_err(|e| e.to_string())?;
            woke = true;
        }
        if woke {
            waker.wake();
        }
        std::thread::sleep(CHECK_EVERY);
    }
    Ok(())
}
