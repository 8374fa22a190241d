//! The `jobs` table and every statement on it.
//!
//! A job is `queued` until a worker claims it (`running`, with `locked_by` and `locked_until`).
//! A finished job is deleted; a failed one goes back to `queued` with a later `run_at`, or to
//! `dead` with its last error. Ack, retry and lease renewal only touch rows still locked by the
//! caller, so a worker whose lease expired and was recovered cannot overwrite the new holder.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use herald_core::DbConnection;
use herald_core::schema::jobs;
use herald_core::time::{now, rfc3339, rfc3339_opt};
use serde::Serialize;

pub const QUEUED: &str = "queued";
pub const RUNNING: &str = "running";
pub const DEAD: &str = "dead";
pub const CANCELLED: &str = "cancelled";
pub const STATUSES: &[&str] = &[QUEUED, RUNNING, DEAD, CANCELLED];

#[derive(Debug)]
pub struct NewJob<'a> {
    pub job_type: &'a str,
    pub queue: &'a str,
    pub payload: &'a str,
    pub max_attempts: i32,
    pub run_at: NaiveDateTime,
}

#[derive(Clone, Debug, Queryable, Selectable, Serialize)]
#[diesel(table_name = jobs)]
pub struct Job {
    pub id: i64,
    pub queue: String,
    pub job_type: String,
    pub payload: String,
    pub status: String,
    #[serde(serialize_with = "rfc3339")]
    pub run_at: NaiveDateTime,
    pub attempts: i32,
    pub max_attempts: i32,
    pub locked_by: Option<String>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub locked_until: Option<NaiveDateTime>,
    pub last_error: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: NaiveDateTime,
}

/// What a worker needs of a claimed job.
#[derive(Clone, Debug, QueryableByName)]
#[diesel(table_name = jobs)]
pub struct ClaimedJob {
    pub id: i64,
    pub job_type: String,
    pub payload: String,
    /// Runs so far, this one included.
    pub attempts: i32,
    pub max_attempts: i32,
}

/// The job `id` while `worker` still holds it.
macro_rules! held {
    ($id:expr, $worker:expr) => {
        jobs::table
            .filter(jobs::id.eq($id))
            .filter(jobs::locked_by.eq($worker))
            .filter(jobs::status.eq(RUNNING))
    };
}

/// The row an enqueue writes.
#[derive(Insertable)]
#[diesel(table_name = jobs)]
struct JobRow<'a> {
    queue: &'a str,
    job_type: &'a str,
    payload: &'a str,
    status: &'a str,
    run_at: NaiveDateTime,
    max_attempts: i32,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

impl<'a> JobRow<'a> {
    fn new(job: &NewJob<'a>, at: NaiveDateTime) -> Self {
        JobRow {
            queue: job.queue,
            job_type: job.job_type,
            payload: job.payload,
            status: QUEUED,
            run_at: job.run_at,
            max_attempts: job.max_attempts,
            created_at: at,
            updated_at: at,
        }
    }
}

pub fn enqueue(conn: &mut DbConnection, job: &NewJob<'_>) -> QueryResult<i64> {
    diesel::insert_into(jobs::table)
        .values(JobRow::new(job, now()))
        .returning(jobs::id)
        .get_result(conn)
}

/// Enqueues many jobs with multi-row inserts (bulk sends, imports, benchmarks); returns how many.
pub fn enqueue_batch(conn: &mut DbConnection, batch: &[NewJob<'_>]) -> QueryResult<usize> {
    let at = now();
    let mut inserted = 0;
    // 8 bound values a row: 500 rows stay well under SQLite's 32,766-variable limit.
    for chunk in batch.chunks(500) {
        let rows: Vec<JobRow> = chunk.iter().map(|job| JobRow::new(job, at)).collect();
        let insert = diesel::insert_into(jobs::table).values(rows);
        // Backend arms: multi-row VALUES is not in the multi-backend's common SQL.
        inserted += match conn {
            DbConnection::Postgres(c) => insert.execute(c)?,
            DbConnection::Sqlite(c) => insert.execute(c)?,
        };
    }
    Ok(inserted)
}

/// Claims up to `limit` due jobs of the given types for `worker`, until `lease_until`.
/// The claim is its own statement and commits before any job runs.
pub fn claim(
    conn: &mut DbConnection,
    worker: &str,
    job_types: &[&str],
    limit: i64,
    at: NaiveDateTime,
    lease_until: NaiveDateTime,
) -> QueryResult<Vec<ClaimedJob>> {
    use diesel::sql_types::{Array, BigInt, Text, Timestamp};
    // Backend arms: PostgreSQL skips rows other workers hold; SQLite runs one writer at a time,
    // so the single UPDATE … WHERE id IN (SELECT …) is already exclusive. On PostgreSQL,
    // `= ANY(ARRAY(subquery))` makes the ids an init-plan looked up by primary key; `IN (subquery)`
    // lets a stale-statistics plan hash-join against a scan of the whole table.
    let mut claimed: Vec<ClaimedJob> = match conn {
        DbConnection::Postgres(c) => without_flush_wait(c, CLAIM_SETTINGS, |c| {
            diesel::sql_query(
                "UPDATE jobs SET status = 'running', locked_by = $1, locked_until = $2, \
                 attempts = attempts + 1, updated_at = $3 \
             WHERE id = ANY(ARRAY(SELECT id FROM jobs \
                 WHERE status = 'queued' AND run_at <= $3 AND job_type = ANY($4) \
                 ORDER BY run_at, id LIMIT $5 FOR UPDATE SKIP LOCKED)) \
             RETURNING id, job_type, payload, attempts, max_attempts",
            )
            .bind::<Text, _>(worker)
            .bind::<Timestamp, _>(lease_until)
            .bind::<Timestamp, _>(at)
            .bind::<Array<Text>, _>(job_types)
            .bind::<BigInt, _>(limit)
            .load(c)
        })?,
        DbConnection::Sqlite(c) => diesel::sql_query(
            "UPDATE jobs SET status = 'running', locked_by = ?1, locked_until = ?2, \
                 attempts = attempts + 1, updated_at = ?3 \
             WHERE id IN (SELECT id FROM jobs \
                 WHERE status = 'queued' AND run_at <= ?3 \
                   AND job_type IN (SELECT value FROM json_each(?4)) \
                 ORDER BY run_at, id LIMIT ?5) \
             RETURNING id, job_type, payload, attempts, max_attempts",
        )
        .bind::<Text, _>(worker)
        .bind::<Timestamp, _>(lease_until)
        .bind::<Timestamp, _>(at)
        .bind::<Text, _>(serde_json::to_string(job_types).unwrap_or_else(|_| "[]".into()))
        .bind::<BigInt, _>(limit)
        .load(c)?,
    };
    claimed.sort_by_key(|j| j.id);
    Ok(claimed)
}

/// When the earliest queued job of these types is due (it may be now or past): the runner sleeps
/// until then rather than a whole poll interval.
pub fn next_run_at(
    conn: &mut DbConnection,
    job_types: &[&str],
) -> QueryResult<Option<NaiveDateTime>> {
    jobs::table
        .filter(jobs::status.eq(QUEUED))
        .filter(jobs::job_type.eq_any(job_types))
        .order((jobs::run_at, jobs::id))
        .select(jobs::run_at)
        .first(conn)
        .optional()
}

/// Deletes finished jobs still held by `worker`; returns how many were.
pub fn ack(conn: &mut DbConnection, worker: &str, ids: &[i64]) -> QueryResult<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    let delete = diesel::delete(
        jobs::table
            .filter(jobs::id.eq_any(ids))
            .filter(jobs::locked_by.eq(worker))
            .filter(jobs::status.eq(RUNNING)),
    );
    match conn {
        DbConnection::Postgres(c) => {
            without_flush_wait(c, "SET LOCAL synchronous_commit TO OFF", |c| {
                delete.execute(c)
            })
        }
        DbConnection::Sqlite(_) => delete.execute(conn),
    }
}

/// Runs a queue bookkeeping statement on PostgreSQL without waiting for its WAL flush
/// (`synchronous_commit = off` for this transaction only). Losing it in a database crash is
/// harmless: a lost claim leaves the job queued, a lost ack leaves it leased, and the lease
/// recovery runs it again, which at-least-once jobs allow. WAL is written in order, so any later
/// durable commit (a job's own domain change) makes it durable too. It saves an fsync per batch.
fn without_flush_wait<T>(
    conn: &mut diesel::PgConnection,
    settings: &str,
    f: impl FnOnce(&mut diesel::PgConnection) -> QueryResult<T>,
) -> QueryResult<T> {
    use diesel::connection::SimpleConnection;
    conn.transaction(|c| {
        c.batch_execute(settings)?;
        f(c)
    })
}

/// The claim's only good plan is to walk `jobs_queued` in order and stop after a batch. Right
/// after a burst of enqueues the statistics still describe a near-empty table, and the planner
/// then prefers a bitmap scan of every queued row plus a sort (tens of milliseconds per claim at
/// 100,000 rows), so the claim transaction rules those two out.
const CLAIM_SETTINGS: &str = "SET LOCAL synchronous_commit TO OFF; SET LOCAL enable_bitmapscan TO OFF; SET LOCAL enable_sort TO OFF";

/// Puts a failed job back to run at `run_at`; false if `worker` no longer holds it.
pub fn retry_later(
    conn: &mut DbConnection,
    worker: &str,
    id: i64,
    run_at: NaiveDateTime,
    error: &str,
) -> QueryResult<bool> {
    record_failure(conn, worker, id, QUEUED, run_at, error)
}

/// Moves a job that cannot succeed to `dead`, keeping its last error.
pub fn bury(conn: &mut DbConnection, worker: &str, id: i64, error: &str) -> QueryResult<bool> {
    record_failure(conn, worker, id, DEAD, now(), error)
}

fn record_failure(
    conn: &mut DbConnection,
    worker: &str,
    id: i64,
    status: &str,
    run_at: NaiveDateTime,
    error: &str,
) -> QueryResult<bool> {
    let n = diesel::update(held!(id, worker))
        .set((
            jobs::status.eq(status),
            jobs::run_at.eq(run_at),
            jobs::last_error.eq(error),
            jobs::locked_by.eq(None::<String>),
            jobs::locked_until.eq(None::<NaiveDateTime>),
            jobs::updated_at.eq(now()),
        ))
        .execute(conn)?;
    Ok(n == 1)
}

/// Gives back jobs that did not run to the end (shutdown), without counting the attempt.
pub fn release(conn: &mut DbConnection, worker: &str, ids: &[i64]) -> QueryResult<usize> {
    diesel::update(
        jobs::table
            .filter(jobs::id.eq_any(ids))
            .filter(jobs::locked_by.eq(worker))
            .filter(jobs::status.eq(RUNNING)),
    )
    .set((
        jobs::status.eq(QUEUED),
        jobs::attempts.eq(jobs::attempts - 1),
        jobs::locked_by.eq(None::<String>),
        jobs::locked_until.eq(None::<NaiveDateTime>),
        jobs::updated_at.eq(now()),
    ))
    .execute(conn)
}

/// Renews the leases of `ids` that `worker` still holds; returns those ids. Jobs the worker no
/// longer tracks (a failed loop, an abandoned run) are left to expire and be recovered.
pub fn extend_leases(
    conn: &mut DbConnection,
    worker: &str,
    ids: &[i64],
    until: NaiveDateTime,
) -> QueryResult<Vec<i64>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    diesel::update(
        jobs::table
            .filter(jobs::id.eq_any(ids))
            .filter(jobs::locked_by.eq(worker))
            .filter(jobs::status.eq(RUNNING)),
    )
    .set(jobs::locked_until.eq(until))
    .returning(jobs::id)
    .get_results(conn)
}

/// Returns jobs whose lease ran out (their worker died) to the queue, or to `dead` when that run
/// was their last attempt. Returns (requeued, buried).
pub fn recover_expired(conn: &mut DbConnection, at: NaiveDateTime) -> QueryResult<(usize, usize)> {
    let expired = || {
        jobs::table
            .filter(jobs::status.eq(RUNNING))
            .filter(jobs::locked_until.lt(at))
    };
    let buried = diesel::update(expired().filter(jobs::attempts.ge(jobs::max_attempts)))
        .set((
            jobs::status.eq(DEAD),
            jobs::last_error
                .eq("the worker running this job stopped before it finished (lease expired)"),
            jobs::locked_by.eq(None::<String>),
            jobs::locked_until.eq(None::<NaiveDateTime>),
            jobs::updated_at.eq(at),
        ))
        .execute(conn)?;
    let requeued = diesel::update(expired())
        .set((
            jobs::status.eq(QUEUED),
            jobs::run_at.eq(at),
            jobs::last_error
                .eq("the worker running this job stopped before it finished (lease expired)"),
            jobs::locked_by.eq(None::<String>),
            jobs::locked_until.eq(None::<NaiveDateTime>),
            jobs::updated_at.eq(at),
        ))
        .execute(conn)?;
    Ok((requeued, buried))
}

// ---- administration (CLI, metrics) ----

pub fn find(conn: &mut DbConnection, id: i64) -> QueryResult<Option<Job>> {
    jobs::table
        .find(id)
        .select(Job::as_select())
        .first(conn)
        .optional()
}

/// Jobs, oldest due first, optionally of one status and job type.
pub fn list(
    conn: &mut DbConnection,
    status: Option<&str>,
    job_type: Option<&str>,
    limit: i64,
) -> QueryResult<Vec<Job>> {
    let mut query = jobs::table.select(Job::as_select()).into_boxed();
    if let Some(status) = status {
        query = query.filter(jobs::status.eq(status.to_owned()));
    }
    if let Some(job_type) = job_type {
        query = query.filter(jobs::job_type.eq(job_type.to_owned()));
    }
    query
        .order((jobs::run_at.asc(), jobs::id.asc()))
        .limit(limit)
        .load(conn)
}

/// Jobs per (status, job type): queue depth for `/metrics` and `herald jobs list`.
pub fn counts(conn: &mut DbConnection) -> QueryResult<Vec<(String, String, i64)>> {
    jobs::table
        .group_by((jobs::status, jobs::job_type))
        .select((jobs::status, jobs::job_type, diesel::dsl::count_star()))
        .load(conn)
}

/// Makes a dead, cancelled or waiting job due now with a fresh set of attempts.
pub fn retry_now(conn: &mut DbConnection, id: i64) -> QueryResult<usize> {
    diesel::update(jobs::table.find(id).filter(jobs::status.ne(RUNNING)))
        .set((
            jobs::status.eq(QUEUED),
            jobs::run_at.eq(now()),
            jobs::attempts.eq(0),
            jobs::updated_at.eq(now()),
        ))
        .execute(conn)
}

/// Cancels a job that has not started; a running job cannot be cancelled.
pub fn cancel(conn: &mut DbConnection, id: i64) -> QueryResult<usize> {
    diesel::update(jobs::table.find(id).filter(jobs::status.eq(QUEUED)))
        .set((jobs::status.eq(CANCELLED), jobs::updated_at.eq(now())))
        .execute(conn)
}
