//! The job queue on both backends: claims, leases, retries, dead-lettering, shutdown, and two
//! processes sharing one PostgreSQL queue.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::TimeDelta;
use diesel::{Connection, ExpressionMethods, QueryDsl, RunQueryDsl};
use herald_core::schema::jobs;
use herald_core::time::now;
use herald_scheduler::storage::{self, DEAD, NewJob, QUEUED, RUNNING};
use herald_scheduler::{BackgroundJob, JobError, Runner, RunnerSettings};
use herald_testdb::{TestDb, backend_tests};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Counts runs per job number; fails or panics as the job asks.
#[derive(Clone, Default)]
struct Ctx {
    runs: Arc<Mutex<HashMap<i64, u32>>>,
    log: Option<Arc<Mutex<std::fs::File>>>,
}

impl Ctx {
    fn runs_of(&self, n: i64) -> u32 {
        self.runs.lock().unwrap().get(&n).copied().unwrap_or(0)
    }
}

#[derive(Serialize, Deserialize)]
enum Behaviour {
    Succeed,
    PanicOnce,
    AlwaysTemporary,
    Permanent,
    Sleep(u64),
}

#[derive(Serialize, Deserialize)]
struct Probe {
    n: i64,
    behaviour: Behaviour,
}

impl BackgroundJob for Probe {
    const JOB_NAME: &'static str = "probe";
    const MAX_ATTEMPTS: i32 = 3;
    type Context = Ctx;

    async fn run(&self, ctx: Ctx) -> Result<(), JobError> {
        let run = {
            let mut runs = ctx.runs.lock().unwrap();
            let count = runs.entry(self.n).or_default();
            *count += 1;
            *count
        };
        if let Some(log) = &ctx.log {
            writeln!(log.lock().unwrap(), "{}", self.n).unwrap();
        }
        match self.behaviour {
            Behaviour::Succeed => Ok(()),
            Behaviour::PanicOnce if run == 1 => panic!("boom on first run"),
            Behaviour::PanicOnce => Ok(()),
            Behaviour::AlwaysTemporary => {
                Err(JobError::temporary(format!("temporary failure #{run}")))
            }
            Behaviour::Permanent => Err(JobError::permanent("550 mailbox unavailable")),
            Behaviour::Sleep(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(())
            }
        }
    }
}

fn fast_settings() -> RunnerSettings {
    RunnerSettings {
        workers: 2,
        batch_size: 8,
        poll_interval: Duration::from_millis(20),
        lease: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(5),
        backoff_base: Duration::ZERO,
        backoff_max: Duration::ZERO,
    }
}

fn runner(test: &TestDb, ctx: Ctx, settings: RunnerSettings) -> Runner<Ctx> {
    Runner::builder(test.db.clone(), ctx)
        .register::<Probe>()
        .settings(settings)
        .build()
}

/// Claims up to `limit` probes for `worker` with a lease of `lease_secs` from now (negative: a
/// lease that has already run out, as if the worker died).
fn claim_as(
    conn: &mut herald_core::DbConnection,
    worker: &str,
    limit: i64,
    lease_secs: i64,
) -> Vec<storage::ClaimedJob> {
    let at = now();
    storage::claim(
        conn,
        worker,
        &["probe"],
        limit,
        at,
        at + TimeDelta::seconds(lease_secs),
    )
    .unwrap()
}

/// Starts `runner.run` in the background; cancel the token to stop it.
fn spawn_runner(runner: &Runner<Ctx>) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let token = CancellationToken::new();
    let handle = tokio::spawn({
        let (runner, token) = (runner.clone(), token.clone());
        async move { runner.run(token).await }
    });
    (token, handle)
}

fn enqueue(test: &TestDb, n: i64, behaviour: Behaviour) -> i64 {
    let mut conn = test.connect();
    Probe { n, behaviour }.enqueue(&mut conn).unwrap()
}

async fn claimed_job_is_invisible_to_other_workers(test: TestDb) {
    let id = enqueue(&test, 1, Behaviour::Succeed);
    let mut conn = test.connect();
    let first = claim_as(&mut conn, "w1", 10, 30);
    assert_eq!(first.iter().map(|j| j.id).collect::<Vec<_>>(), vec![id]);
    assert_eq!(first[0].attempts, 1);
    let second = claim_as(&mut conn, "w2", 10, 30);
    assert!(second.is_empty(), "a claimed job must not be claimed again");
    let job = storage::find(&mut conn, id).unwrap().unwrap();
    assert_eq!(
        (job.status.as_str(), job.locked_by.as_deref()),
        (RUNNING, Some("w1"))
    );
}

async fn job_is_not_claimed_before_its_run_at(test: TestDb) {
    let mut conn = test.connect();
    let later = now() + TimeDelta::minutes(5);
    Probe {
        n: 1,
        behaviour: Behaviour::Succeed,
    }
    .enqueue_at(&mut conn, later)
    .unwrap();
    assert!(claim_as(&mut conn, "w", 10, 30).is_empty());
    let due = later + TimeDelta::seconds(1);
    assert_eq!(
        storage::claim(
            &mut conn,
            "w",
            &["probe"],
            10,
            due,
            due + TimeDelta::seconds(30)
        )
        .unwrap()
        .len(),
        1
    );
}

async fn job_enqueued_in_a_rolled_back_transaction_never_runs(test: TestDb) {
    let mut conn = test.connect();
    let result: Result<(), diesel::result::Error> = conn.transaction(|conn| {
        Probe {
            n: 7,
            behaviour: Behaviour::Succeed,
        }
        .enqueue(conn)
        .unwrap();
        Err(diesel::result::Error::RollbackTransaction)
    });
    assert!(result.is_err());
    let ctx = Ctx::default();
    let stats = runner(&test, ctx.clone(), fast_settings())
        .run_until_empty()
        .await;
    assert_eq!(stats.claimed, 0);
    assert_eq!(ctx.runs_of(7), 0);
    assert!(storage::list(&mut conn, None, None, 10).unwrap().is_empty());
}

async fn finished_jobs_are_removed_and_each_runs_once(test: TestDb) {
    for n in 0..40 {
        enqueue(&test, n, Behaviour::Succeed);
    }
    let ctx = Ctx::default();
    let stats = runner(&test, ctx.clone(), fast_settings())
        .run_until_empty()
        .await;
    assert_eq!((stats.claimed, stats.succeeded), (40, 40));
    for n in 0..40 {
        assert_eq!(ctx.runs_of(n), 1, "job {n}");
    }
    assert!(
        storage::list(&mut test.connect(), None, None, 100)
            .unwrap()
            .is_empty()
    );
}

async fn panicking_job_is_retried(test: TestDb) {
    let id = enqueue(&test, 1, Behaviour::PanicOnce);
    let ctx = Ctx::default();
    let stats = runner(&test, ctx.clone(), fast_settings())
        .run_until_empty()
        .await;
    assert_eq!((stats.retried, stats.succeeded, stats.dead), (1, 1, 0));
    assert_eq!(ctx.runs_of(1), 2);
    assert!(
        storage::find(&mut test.connect(), id).unwrap().is_none(),
        "done after the retry"
    );
}

async fn temporary_failures_back_off_then_go_dead_with_the_last_error(test: TestDb) {
    let id = enqueue(&test, 1, Behaviour::AlwaysTemporary);
    let ctx = Ctx::default();
    let mut settings = fast_settings();
    settings.backoff_base = Duration::from_secs(60);
    settings.backoff_max = Duration::from_secs(600);
    let runner = runner(&test, ctx.clone(), settings);
    runner.run_until_empty().await;
    let mut conn = test.connect();
    let job = storage::find(&mut conn, id).unwrap().unwrap();
    assert_eq!(job.status, QUEUED);
    assert_eq!(job.attempts, 1);
    assert_eq!(job.last_error.as_deref(), Some("temporary failure #1"));
    let delay = job.run_at - now();
    assert!(
        delay > TimeDelta::seconds(40) && delay <= TimeDelta::seconds(76),
        "backoff {delay}"
    );
    // Make it due again: the third run is the last attempt (MAX_ATTEMPTS = 3).
    for attempt in 2..=3 {
        diesel::update(jobs::table.find(id))
            .set(jobs::run_at.eq(now()))
            .execute(&mut conn)
            .unwrap();
        runner.run_until_empty().await;
        let job = storage::find(&mut conn, id).unwrap().unwrap();
        assert_eq!(job.attempts, attempt);
    }
    let job = storage::find(&mut conn, id).unwrap().unwrap();
    assert_eq!(job.status, DEAD);
    assert_eq!(job.last_error.as_deref(), Some("temporary failure #3"));
    assert_eq!(ctx.runs_of(1), 3);
}

async fn permanent_failure_goes_dead_at_once(test: TestDb) {
    let id = enqueue(&test, 1, Behaviour::Permanent);
    let ctx = Ctx::default();
    let stats = runner(&test, ctx.clone(), fast_settings())
        .run_until_empty()
        .await;
    assert_eq!(stats.dead, 1);
    let job = storage::find(&mut test.connect(), id).unwrap().unwrap();
    assert_eq!((job.status.as_str(), job.attempts), (DEAD, 1));
    assert_eq!(job.last_error.as_deref(), Some("550 mailbox unavailable"));
    // An operator can retry it; it runs again (and fails again, for good).
    herald_scheduler::retry_job(&mut test.connect(), id).unwrap();
    runner(&test, ctx.clone(), fast_settings())
        .run_until_empty()
        .await;
    assert_eq!(ctx.runs_of(1), 2);
}

async fn expired_lease_is_recovered_and_the_job_runs(test: TestDb) {
    let id = enqueue(&test, 1, Behaviour::Succeed);
    let mut conn = test.connect();
    // A worker claims it and dies: its lease runs out.
    claim_as(&mut conn, "dead-worker", 1, -1);
    let ctx = Ctx::default();
    let stats = runner(&test, ctx.clone(), fast_settings())
        .run_until_empty()
        .await;
    assert_eq!(stats.succeeded, 1);
    assert_eq!(ctx.runs_of(1), 1);
    assert!(storage::find(&mut conn, id).unwrap().is_none());
}

async fn expired_lease_on_the_last_attempt_goes_dead(test: TestDb) {
    let id = enqueue(&test, 1, Behaviour::Succeed);
    let mut conn = test.connect();
    for _ in 0..3 {
        claim_as(&mut conn, "crashy", 1, -1);
        storage::recover_expired(&mut conn, now()).unwrap();
    }
    let job = storage::find(&mut conn, id).unwrap().unwrap();
    assert_eq!((job.status.as_str(), job.attempts), (DEAD, 3));
    assert!(job.last_error.unwrap().contains("lease expired"));
}

async fn ack_and_retry_are_fenced_by_the_lease_holder(test: TestDb) {
    let id = enqueue(&test, 1, Behaviour::Succeed);
    let mut conn = test.connect();
    claim_as(&mut conn, "slow", 1, -1);
    storage::recover_expired(&mut conn, now()).unwrap();
    claim_as(&mut conn, "fresh", 1, 30);
    // The slow worker finally finishes: it no longer holds the job, so nothing changes.
    assert_eq!(storage::ack(&mut conn, "slow", &[id]).unwrap(), 0);
    assert!(!storage::retry_later(&mut conn, "slow", id, now(), "late").unwrap());
    assert!(!storage::bury(&mut conn, "slow", id, "late").unwrap());
    let job = storage::find(&mut conn, id).unwrap().unwrap();
    assert_eq!(
        (job.status.as_str(), job.locked_by.as_deref()),
        (RUNNING, Some("fresh"))
    );
    assert_eq!(storage::ack(&mut conn, "fresh", &[id]).unwrap(), 1);
}

async fn shutdown_lets_in_flight_jobs_finish(test: TestDb) {
    let id = enqueue(&test, 1, Behaviour::Sleep(400));
    let ctx = Ctx::default();
    let runner = runner(&test, ctx.clone(), fast_settings());
    let (token, handle) = spawn_runner(&runner);
    wait_until_running(&test, id).await;
    token.cancel();
    handle.await.unwrap();
    assert_eq!(ctx.runs_of(1), 1);
    assert!(
        storage::find(&mut test.connect(), id).unwrap().is_none(),
        "finished within the grace period"
    );
}

async fn shutdown_releases_jobs_still_running_after_the_grace_period(test: TestDb) {
    let id = enqueue(&test, 1, Behaviour::Sleep(60_000));
    let mut settings = fast_settings();
    settings.shutdown_grace = Duration::from_millis(100);
    let runner = runner(&test, Ctx::default(), settings);
    let (token, handle) = spawn_runner(&runner);
    wait_until_running(&test, id).await;
    token.cancel();
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .unwrap()
        .unwrap();
    let job = storage::find(&mut test.connect(), id).unwrap().unwrap();
    assert_eq!(
        (job.status.as_str(), job.attempts, job.locked_by),
        (QUEUED, 0, None),
        "released, attempt not counted"
    );
}

async fn wait_until_running(test: &TestDb, id: i64) {
    for _ in 0..200 {
        let job = storage::find(&mut test.connect(), id).unwrap();
        if job.is_some_and(|j| j.status == RUNNING) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("job {id} never started");
}

async fn cancelled_job_does_not_run_and_a_running_one_cannot_be_cancelled(test: TestDb) {
    let a = enqueue(&test, 1, Behaviour::Succeed);
    let b = enqueue(&test, 2, Behaviour::Succeed);
    let mut conn = test.connect();
    herald_scheduler::cancel_job(&mut conn, a).unwrap();
    claim_as(&mut conn, "w", 10, 30);
    let err = herald_scheduler::cancel_job(&mut conn, b).unwrap_err();
    assert!(err.to_string().contains("running"), "{err}");
    let job = storage::find(&mut conn, a).unwrap().unwrap();
    assert_eq!(job.status, "cancelled");
}

async fn batch_enqueue_stores_every_job_across_chunks(test: TestDb) {
    let payload = serde_json::to_string(&Probe {
        n: 1,
        behaviour: Behaviour::Succeed,
    })
    .unwrap();
    let at = now();
    let batch: Vec<NewJob> = (0..1_234)
        .map(|_| NewJob {
            job_type: Probe::JOB_NAME,
            queue: "default",
            payload: &payload,
            max_attempts: 3,
            run_at: at,
        })
        .collect();
    let mut conn = test.connect();
    assert_eq!(
        conn.write(|conn| storage::enqueue_batch(conn, &batch))
            .unwrap(),
        1_234
    );
    let queued: i64 = jobs::table
        .filter(jobs::status.eq(QUEUED))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(queued, 1_234);
}

/// Waits for `n` runs of job `job`, for at most `limit`.
async fn runs_within(ctx: &Ctx, job: i64, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if ctx.runs_of(job) > 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// With a poll interval of a minute, only a wake-up can start a job within seconds.
fn sleepy_settings() -> RunnerSettings {
    RunnerSettings {
        poll_interval: Duration::from_secs(60),
        ..fast_settings()
    }
}

async fn an_enqueue_in_this_process_wakes_idle_workers(test: TestDb) {
    let ctx = Ctx::default();
    let runner = runner(&test, ctx.clone(), sleepy_settings());
    let (token, handle) = spawn_runner(&runner);
    tokio::time::sleep(Duration::from_millis(300)).await; // idle, waiting
    enqueue(&test, 1, Behaviour::Succeed);
    runner.waker().wake();
    assert!(
        runs_within(&ctx, 1, Duration::from_secs(10)).await,
        "woken at once, not after the poll"
    );
    token.cancel();
    handle.await.unwrap();
}

/// A job due in a moment runs at its time, though nothing wakes the runner and its poll interval
/// is a minute: the runner sleeps until the earliest queued job's `run_at`.
async fn a_job_due_soon_runs_at_its_time_not_a_poll_later(test: TestDb) {
    let due = now() + TimeDelta::milliseconds(1_500);
    Probe {
        n: 1,
        behaviour: Behaviour::Succeed,
    }
    .enqueue_at(&mut test.connect(), due)
    .unwrap();
    let ctx = Ctx::default();
    let (token, handle) = spawn_runner(&runner(&test, ctx.clone(), sleepy_settings()));
    assert!(
        runs_within(&ctx, 1, Duration::from_secs(20)).await,
        "run at its time, not after the minute's poll"
    );
    token.cancel();
    handle.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_enqueued_by_another_process_wakes_idle_workers_on_postgres() {
    let test = TestDb::postgres();
    let ctx = Ctx::default();
    let runner = runner(&test, ctx.clone(), sleepy_settings());
    let (token, handle) = spawn_runner(&runner);
    tokio::time::sleep(Duration::from_millis(500)).await; // idle, listening
    // Another connection, no in-process wake-up: only NOTIFY can tell the runner.
    enqueue(&test, 1, Behaviour::Succeed);
    assert!(
        runs_within(&ctx, 1, Duration::from_secs(10)).await,
        "woken by NOTIFY, not after the poll"
    );
    token.cancel();
    handle.await.unwrap();
}

async fn a_job_running_longer_than_its_lease_keeps_it(test: TestDb) {
    let id = enqueue(&test, 1, Behaviour::Sleep(4_500));
    let ctx = Ctx::default();
    let settings = RunnerSettings {
        lease: Duration::from_secs(3),
        ..fast_settings()
    };
    // A second runner polls all along: it must never get the job while the first renews it.
    let (first, second) = (
        runner(&test, ctx.clone(), settings.clone()),
        runner(&test, ctx.clone(), settings),
    );
    let (token, handle) = spawn_runner(&first);
    wait_until_running(&test, id).await;
    let (token2, handle2) = spawn_runner(&second);
    assert!(runs_within(&ctx, 1, Duration::from_secs(10)).await);
    for _ in 0..100 {
        if storage::find(&mut test.connect(), id).unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    token.cancel();
    token2.cancel();
    handle.await.unwrap();
    handle2.await.unwrap();
    assert_eq!(
        ctx.runs_of(1),
        1,
        "renewed leases keep the job with its first worker"
    );
    assert!(
        storage::find(&mut test.connect(), id).unwrap().is_none(),
        "done once"
    );
}

async fn a_worker_that_loses_its_lease_stops_the_job(test: TestDb) {
    let id = enqueue(&test, 1, Behaviour::Sleep(30_000));
    let settings = RunnerSettings {
        lease: Duration::from_secs(3),
        ..fast_settings()
    };
    let runner = runner(&test, Ctx::default(), settings);
    let (token, handle) = spawn_runner(&runner);
    wait_until_running(&test, id).await;
    // Another worker took the job over (as after a recovery).
    diesel::update(jobs::table.find(id))
        .set(jobs::locked_by.eq("thief"))
        .execute(&mut test.connect())
        .unwrap();
    // At the next renewal (within a second) the runner sees it lost the job and stops it, so its
    // pass ends long before the 30-second job would.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    token.cancel();
    tokio::time::timeout(Duration::from_secs(3), handle)
        .await
        .expect("the lost job was stopped")
        .unwrap();
    let job = storage::find(&mut test.connect(), id).unwrap().unwrap();
    assert_eq!(
        (job.status.as_str(), job.locked_by.as_deref()),
        (RUNNING, Some("thief")),
        "left to its new holder"
    );
}

async fn expired_leases_are_recovered_while_workers_are_busy(test: TestDb) {
    let lost = enqueue(&test, 1, Behaviour::Succeed);
    claim_as(&mut test.connect(), "dead-worker", 1, -1);
    // One worker loop with room for two jobs (two batches of one), both taken by slow jobs.
    let busy = [
        enqueue(&test, 2, Behaviour::Sleep(6_000)),
        enqueue(&test, 3, Behaviour::Sleep(6_000)),
    ];
    let settings = RunnerSettings {
        lease: Duration::from_secs(3),
        workers: 1,
        batch_size: 1,
        ..fast_settings()
    };
    let runner = runner(&test, Ctx::default(), settings);
    let (token, handle) = spawn_runner(&runner);
    for id in busy {
        wait_until_running(&test, id).await;
    }
    // The recovery timer (every 1.5 s) frees the dead worker's job even though no loop is idle.
    let mut recovered = false;
    for _ in 0..40 {
        let job = storage::find(&mut test.connect(), lost).unwrap().unwrap();
        if job.status == QUEUED && job.locked_by.is_none() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    token.cancel();
    handle.await.unwrap();
    assert!(recovered, "recovered while the worker was busy");
}

async fn a_slow_job_does_not_hold_back_the_others(test: TestDb) {
    let slow = enqueue(&test, 0, Behaviour::Sleep(5_000));
    let fast: Vec<i64> = (1..=6)
        .map(|n| enqueue(&test, n, Behaviour::Sleep(10)))
        .collect();
    let settings = RunnerSettings {
        workers: 1,
        batch_size: 4,
        ..fast_settings()
    };
    let ctx = Ctx::default();
    let runner = runner(&test, ctx.clone(), settings);
    let (token, handle) = spawn_runner(&runner);
    // All six fast jobs run and are acknowledged while the slow one is still running.
    let mut fast_done = false;
    for _ in 0..40 {
        let mut conn = test.connect();
        if fast
            .iter()
            .all(|id| storage::find(&mut conn, *id).unwrap().is_none())
        {
            fast_done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let slow_job = storage::find(&mut test.connect(), slow).unwrap().unwrap();
    token.cancel();
    handle.await.unwrap();
    assert!(
        fast_done,
        "fast jobs finished and were acknowledged within two seconds"
    );
    assert_eq!(slow_job.status, RUNNING, "while the slow one still ran");
    for n in 1..=6 {
        assert_eq!(ctx.runs_of(n), 1);
    }
}

backend_tests!(
    a_slow_job_does_not_hold_back_the_others,
    a_job_running_longer_than_its_lease_keeps_it,
    a_worker_that_loses_its_lease_stops_the_job,
    expired_leases_are_recovered_while_workers_are_busy,
    an_enqueue_in_this_process_wakes_idle_workers,
    a_job_due_soon_runs_at_its_time_not_a_poll_later,
    batch_enqueue_stores_every_job_across_chunks,
    claimed_job_is_invisible_to_other_workers,
    job_is_not_claimed_before_its_run_at,
    job_enqueued_in_a_rolled_back_transaction_never_runs,
    finished_jobs_are_removed_and_each_runs_once,
    panicking_job_is_retried,
    temporary_failures_back_off_then_go_dead_with_the_last_error,
    permanent_failure_goes_dead_at_once,
    expired_lease_is_recovered_and_the_job_runs,
    expired_lease_on_the_last_attempt_goes_dead,
    ack_and_retry_are_fenced_by_the_lease_holder,
    shutdown_lets_in_flight_jobs_finish,
    shutdown_releases_jobs_still_running_after_the_grace_period,
    cancelled_job_does_not_run_and_a_running_one_cannot_be_cancelled,
);

// ---- several workers, several processes ----

const CHILD_DB: &str = "HERALD_QUEUE_TEST_CHILD_DB";
const CHILD_LOG: &str = "HERALD_QUEUE_TEST_CHILD_LOG";

fn read_log(path: &std::path::Path) -> Vec<i64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

fn assert_each_ran_once(runs: &[i64], jobs: i64) {
    let mut counts: HashMap<i64, u32> = HashMap::new();
    for n in runs {
        *counts.entry(*n).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "jobs ran more than once: {twice:?}");
    assert_eq!(counts.len() as i64, jobs, "every job ran");
}

/// Drains the queue with four worker loops, logging each run to a file. As a child process of
/// `two_processes_never_run_one_job` it drains the parent's PostgreSQL database; run on its own it
/// checks that four loops in one process never run a job twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_loops_never_run_one_job_twice() {
    let child = std::env::var(CHILD_DB).ok();
    let (test, url, log_path, jobs) = match child {
        Some(url) => (
            None,
            url,
            std::path::PathBuf::from(std::env::var(CHILD_LOG).unwrap()),
            0,
        ),
        None => {
            let test = TestDb::sqlite();
            let url = test.url_string();
            let dir = tempfile::tempdir().unwrap().keep();
            for n in 0..300 {
                enqueue(&test, n, Behaviour::Sleep(1));
            }
            (Some(test), url, dir.join("runs.log"), 300)
        }
    };
    let db = herald_core::Db::open(&herald_core::DatabaseUrl::parse(&url).unwrap(), 6).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .unwrap();
    let ctx = Ctx {
        log: Some(Arc::new(Mutex::new(log))),
        ..Ctx::default()
    };
    let mut settings = fast_settings();
    settings.workers = 4;
    settings.batch_size = 5;
    Runner::builder(db, ctx)
        .register::<Probe>()
        .settings(settings)
        .build()
        .run_until_empty()
        .await;
    if let Some(test) = test {
        assert_each_ran_once(&read_log(&log_path), jobs);
        drop(test);
    }
}

#[test]
fn two_processes_never_run_one_job() {
    let test = TestDb::postgres();
    let jobs = 1_000;
    {
        let mut conn = test.connect();
        conn.transaction(|conn| {
            for n in 0..jobs {
                Probe {
                    n,
                    behaviour: Behaviour::Sleep(2),
                }
                .enqueue(conn)
                .unwrap();
            }
            Ok::<_, diesel::result::Error>(())
        })
        .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|i| {
            let log = dir.path().join(format!("child{i}.log"));
            let child = std::process::Command::new(&exe)
                .args([
                    "worker_loops_never_run_one_job_twice",
                    "--exact",
                    "--nocapture",
                ])
                .env(CHILD_DB, test.url_string())
                .env(CHILD_LOG, &log)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            (child, log)
        })
        .collect();
    let mut all = Vec::new();
    for (mut child, log) in children {
        assert!(
            child.wait().unwrap().success(),
            "child worker process failed"
        );
        let runs = read_log(&log);
        assert!(!runs.is_empty(), "both processes took part");
        all.extend(runs);
    }
    assert_each_ran_once(&all, jobs);
    assert!(
        storage::list(&mut test.connect(), None, None, 10)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn backoff_doubles_per_attempt_up_to_the_cap() {
    let settings = RunnerSettings {
        backoff_base: Duration::from_secs(10),
        backoff_max: Duration::from_secs(100),
        ..fast_settings()
    };
    let within = |attempt: i32, expected: f64| {
        let d = herald_scheduler::backoff(&settings, attempt).as_secs_f64();
        assert!(
            d >= expected * 0.75 - 1e-9 && d <= (expected * 1.25).min(100.0) + 1e-9,
            "attempt {attempt}: {d}"
        );
    };
    within(1, 10.0);
    within(2, 20.0);
    within(3, 40.0);
    within(4, 80.0);
    within(10, 100.0);
    within(1000, 100.0);
}
