//! The runner: worker loops that claim due jobs, run them, and record the outcome.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use herald_core::Db;
use herald_core::config::QueueConfig;
use herald_core::time::now;
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::error::JobError;
use crate::job::BackgroundJob;
use crate::storage::{self, ClaimedJob};

type RunFuture = Pin<Box<dyn Future<Output = Result<(), JobError>> + Send>>;
type RunFn<C> = Arc<dyn Fn(C, &str) -> Result<RunFuture, JobError> + Send + Sync>;

/// Wakes idle workers of this process at once after an enqueue; on PostgreSQL the listener
/// calls it for enqueues made by other processes. A wake-up that arrives while a worker is busy is
/// not lost: the worker sees it when it next goes idle.
#[derive(Clone, Debug)]
pub struct QueueWaker(Arc<watch::Sender<u64>>);

impl Default for QueueWaker {
    fn default() -> Self {
        QueueWaker(Arc::new(watch::Sender::new(0)))
    }
}

impl QueueWaker {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn wake(&self) {
        self.0
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// How the runner behaves; built from [`QueueConfig`] with test-friendly overrides.
#[derive(Clone, Debug)]
pub struct RunnerSettings {
    pub workers: usize,
    pub batch_size: i64,
    pub poll_interval: Duration,
    pub lease: Duration,
    pub shutdown_grace: Duration,
    /// First retry delay; doubled per attempt up to `backoff_max`, with ±25 % jitter.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl From<&QueueConfig> for RunnerSettings {
    fn from(c: &QueueConfig) -> Self {
        RunnerSettings {
            workers: c.workers,
            batch_size: c.batch_size,
            poll_interval: Duration::from_millis(c.poll_interval_ms),
            lease: Duration::from_secs(c.lease_secs),
            shutdown_grace: Duration::from_secs(c.shutdown_grace_secs),
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(3600),
        }
    }
}

impl Default for RunnerSettings {
    fn default() -> Self {
        Self::from(&QueueConfig::default())
    }
}

/// Delay before the run after `attempts` failed runs: capped exponential backoff with jitter.
pub fn backoff(settings: &RunnerSettings, attempts: i32) -> Duration {
    let exp = attempts.saturating_sub(1).clamp(0, 30) as u32;
    let base = settings
        .backoff_base
        .saturating_mul(2u32.saturating_pow(exp));
    let capped = base.min(settings.backoff_max);
    let jitter = rand::rng().random_range(0.75..=1.25);
    capped.mul_f64(jitter).min(settings.backoff_max)
}

pub struct RunnerBuilder<C> {
    db: Db,
    context: C,
    jobs: HashMap<&'static str, RunFn<C>>,
    settings: RunnerSettings,
    waker: QueueWaker,
}

impl<C: Clone + Send + Sync + 'static> RunnerBuilder<C> {
    /// Registers a job type: the runner claims and runs jobs of the registered types only.
    pub fn register<J: BackgroundJob<Context = C>>(mut self) -> Self {
        let run: RunFn<C> = Arc::new(|ctx: C, payload: &str| {
            let job: J = serde_json::from_str(payload).map_err(|e| {
                JobError::permanent(format!("payload does not decode as {}: {e}", J::JOB_NAME))
            })?;
            Ok(Box::pin(async move { job.run(ctx).await }))
        });
        self.jobs.insert(J::JOB_NAME, run);
        self
    }

    pub fn settings(mut self, settings: RunnerSettings) -> Self {
        self.settings = settings;
        self
    }

    pub fn waker(mut self, waker: QueueWaker) -> Self {
        self.waker = waker;
        self
    }

    pub fn build(self) -> Runner<C> {
        Runner {
            inner: Arc::new(Inner {
                db: self.db,
                context: self.context,
                job_types: self.jobs.keys().copied().collect(),
                jobs: self.jobs,
                settings: self.settings,
                waker: self.waker,
                instance: format!(
                    "{}-{:06x}",
                    std::process::id(),
                    rand::rng().random_range(0..0xFF_FFFF)
                ),
            }),
        }
    }
}

struct Inner<C> {
    db: Db,
    context: C,
    jobs: HashMap<&'static str, RunFn<C>>,
    job_types: Vec<&'static str>,
    settings: RunnerSettings,
    waker: QueueWaker,
    /// Unique per runner; worker ids are `{instance}-{n}`.
    instance: String,
}

/// Runs registered jobs with several worker loops; clone-cheap.
pub struct Runner<C> {
    inner: Arc<Inner<C>>,
}

impl<C> Clone for Runner<C> {
    fn clone(&self) -> Self {
        Runner {
            inner: self.inner.clone(),
        }
    }
}

/// What one pass of a worker did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassStats {
    pub claimed: usize,
    pub succeeded: usize,
    pub retried: usize,
    pub dead: usize,
    pub released: usize,
}

impl PassStats {
    fn add(&mut self, other: PassStats) {
        self.claimed += other.claimed;
        self.succeeded += other.succeeded;
        self.retried += other.retried;
        self.dead += other.dead;
        self.released += other.released;
    }
}

enum Outcome {
    Done,
    Failed(JobError),
    /// Not run to the end (shutdown): released without counting the attempt.
    Unfinished,
    /// The lease went to another worker: nothing to record, the new holder owns the job.
    Lost,
}

/// A job task's output: its slot and how the run went.
type JobResult = (u64, Result<(), JobError>);

/// The jobs one worker loop has claimed and not yet recorded.
struct Flight {
    tasks: JoinSet<JobResult>,
    /// Running jobs by slot.
    running: HashMap<u64, (ClaimedJob, tokio::task::AbortHandle)>,
    /// Task id → slot, so a panicking task can still be attributed to its job.
    slots: HashMap<tokio::task::Id, u64>,
    next_slot: u64,
    /// Finished jobs waiting to be recorded.
    finished: Vec<(ClaimedJob, Outcome)>,
    /// When the oldest of them finished.
    finished_since: Option<tokio::time::Instant>,
}

impl Flight {
    fn new() -> Self {
        Flight {
            tasks: JoinSet::new(),
            running: HashMap::new(),
            slots: HashMap::new(),
            next_slot: 0,
            finished: Vec::new(),
            finished_since: None,
        }
    }

    fn finish(&mut self, job: ClaimedJob, outcome: Outcome) {
        self.finished_since
            .get_or_insert_with(tokio::time::Instant::now);
        self.finished.push((job, outcome));
    }

    /// Takes a joined task's result; a panic is a temporary failure, an aborted task unfinished.
    fn joined(&mut self, joined: Result<(tokio::task::Id, JobResult), tokio::task::JoinError>) {
        let (slot, outcome) = match joined {
            Ok((id, (slot, result))) => {
                self.slots.remove(&id);
                (
                    slot,
                    match result {
                        Ok(()) => Outcome::Done,
                        Err(e) => Outcome::Failed(e),
                    },
                )
            }
            Err(join_error) => {
                let Some(slot) = self.slots.remove(&join_error.id()) else {
                    return;
                };
                let outcome = if join_error.is_panic() {
                    let message = panic_message(join_error.into_panic());
                    Outcome::Failed(JobError::temporary(format!("the job panicked: {message}")))
                } else {
                    Outcome::Unfinished
                };
                (slot, outcome)
            }
        };
        // A job stopped for a lost lease was already recorded as lost.
        if let Some((job, _)) = self.running.remove(&slot) {
            self.finish(job, outcome);
        }
    }

    /// Stops a running job whose lease is gone.
    fn lose(&mut self, job_id: i64) {
        let slot = self
            .running
            .iter()
            .find(|(_, (job, _))| job.id == job_id)
            .map(|(slot, _)| *slot);
        if let Some((job, abort)) = slot.and_then(|slot| self.running.remove(&slot)) {
            warn!(
                job.id = job.id,
                "lost the lease on a running job; stopping it here"
            );
            abort.abort();
            self.finish(job, Outcome::Lost);
        }
    }

    fn take_finished(&mut self) -> Vec<(ClaimedJob, Outcome)> {
        self.finished_since = None;
        std::mem::take(&mut self.finished)
    }
}

/// How long a finished job may wait for batch-mates before its outcome is written.
const RECORD_DELAY: Duration = Duration::from_millis(50);

impl<C: Clone + Send + Sync + 'static> Runner<C> {
    pub fn builder(db: Db, context: C) -> RunnerBuilder<C> {
        RunnerBuilder {
            db,
            context,
            jobs: HashMap::new(),
            settings: RunnerSettings::default(),
            waker: QueueWaker::new(),
        }
    }

    pub fn waker(&self) -> QueueWaker {
        self.inner.waker.clone()
    }

    pub fn job_types(&self) -> &[&'static str] {
        &self.inner.job_types
    }

    /// Runs the worker loops until `shutdown` is cancelled, then lets in-flight jobs finish for
    /// the grace period and releases the rest.
    pub async fn run(&self, shutdown: CancellationToken) {
        let listener = crate::listener::spawn(
            self.inner.db.url().clone(),
            self.inner.waker.clone(),
            shutdown.clone(),
        );
        let mut loops = JoinSet::new();
        let mut names = HashMap::new();
        let mut restarts = 0u32;
        for n in 0..self.inner.settings.workers {
            let worker = format!("{}-{n}", self.inner.instance);
            let handle = loops.spawn(self.clone().worker_loop(worker.clone(), shutdown.clone()));
            names.insert(handle.id(), worker);
        }
        // Leases of dead workers are recovered on a timer, busy or idle.
        let recovery = {
            let (this, shutdown) = (self.clone(), shutdown.clone());
            let every = (self.inner.settings.lease / 2).max(Duration::from_secs(1));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tick.tick() => this.recover_expired().await,
                    }
                }
            })
        };
        info!(workers = self.inner.settings.workers, job_types = ?self.inner.job_types, "job runner started");
        while let Some(ended) = loops.join_next_with_id().await {
            // A loop only ends on shutdown; one that panicked is started again.
            if let Err(e) = ended
                && let Some(worker) = names.remove(&e.id())
                && !shutdown.is_cancelled()
            {
                error!(%worker, error = %e, "a worker loop failed; starting it again");
                // A new worker id: the failed loop's jobs are not renewed by the new one and
                // are recovered when their lease runs out.
                restarts += 1;
                let worker = format!("{worker}-r{restarts}");
                let handle =
                    loops.spawn(self.clone().worker_loop(worker.clone(), shutdown.clone()));
                names.insert(handle.id(), worker);
            }
        }
        let _ = recovery.await;
        if let Some(listener) = listener {
            let _ = tokio::task::spawn_blocking(move || listener.join()).await;
        }
        info!("job runner stopped");
    }

    /// Runs the worker loops until no job is due, then returns what they did (tests, benchmarks,
    /// maintenance). Jobs made due while it runs are picked up if a loop is still claiming.
    pub async fn run_until_empty(&self) -> PassStats {
        self.recover_expired().await;
        let mut loops = JoinSet::new();
        for n in 0..self.inner.settings.workers {
            let worker = format!("{}-drain-{n}", self.inner.instance);
            loops.spawn(self.clone().drive(worker, CancellationToken::new(), true));
        }
        let mut total = PassStats::default();
        while let Some(stats) = loops.join_next().await {
            if let Ok(stats) = stats {
                total.add(stats);
            }
        }
        total
    }

    async fn worker_loop(self, worker: String, shutdown: CancellationToken) {
        self.drive(worker, shutdown, false).await;
    }

    /// One worker loop: keeps up to two batches of jobs running, claiming a batch whenever one
    /// batch's worth of slots is free, and records outcomes in groups (one acknowledgement for
    /// many jobs, or whatever finished within 50 ms). With
    /// `until_empty` it returns once nothing is due and nothing runs; otherwise on shutdown.
    async fn drive(
        self,
        worker: String,
        shutdown: CancellationToken,
        until_empty: bool,
    ) -> PassStats {
        let settings = self.inner.settings.clone();
        // Up to two batches in flight: a full batch is claimed whenever one batch's worth of
        // slots is free, so slow jobs never stop the loop from claiming and round trips stay one
        // claim and one acknowledgement per batch.
        let batch = settings.batch_size.max(1) as usize;
        let capacity = 2 * batch;
        let refill_at = batch;
        let renew_every = settings.lease / 3;
        let mut renew =
            tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_renewed = tokio::time::Instant::now();
        let mut wake_ups = self.inner.waker.subscribe();
        let mut flight = Flight::new();
        let mut stats = PassStats::default();
        // Whether a claim may find something: false after a claim came back short, true again
        // after a wake-up or a poll interval.
        let mut maybe_due = true;
        let mut next_poll = tokio::time::Instant::now();
        let mut grace: Option<Pin<Box<tokio::time::Sleep>>> = None;
        loop {
            let stopping = shutdown.is_cancelled();
            let free = capacity - flight.running.len();
            if !stopping && maybe_due && free >= refill_at.min(capacity) {
                let claimed = self.claim(&worker, free as i64).await;
                maybe_due = claimed.len() == free;
                if !maybe_due {
                    next_poll = self.next_poll().await;
                }
                if !claimed.is_empty() {
                    // A fresh lease: the renewal clock starts now, not at the last renewal
                    // before an idle spell.
                    if flight.running.is_empty() {
                        last_renewed = tokio::time::Instant::now();
                        renew.reset();
                    }
                    stats.claimed += claimed.len();
                }
                self.start(&mut flight, claimed);
            }
            let record_now = !flight.finished.is_empty()
                && (flight.running.is_empty()
                    || flight.finished.len() >= refill_at
                    || flight
                        .finished_since
                        .is_some_and(|t| t.elapsed() >= RECORD_DELAY));
            if record_now {
                let finished = flight.take_finished();
                let recorded = match self.record(&worker, &finished).await {
                    Some(recorded) => recorded,
                    None => {
                        // Keep the outcomes and try again shortly: the jobs stay leased (and
                        // renewed) meanwhile, so none runs twice.
                        flight.finished = finished;
                        flight.finished_since = Some(tokio::time::Instant::now());
                        tokio::time::sleep(settings.poll_interval).await;
                        continue;
                    }
                };
                // Draining: a retry due at once (no backoff) is picked up before returning.
                maybe_due |= until_empty && (recorded.retried > 0 || recorded.released > 0);
                stats.add(recorded);
                continue;
            }
            if flight.running.is_empty() {
                // A job may have enqueued another as it finished: look once more before leaving.
                if until_empty && !maybe_due && wake_ups.has_changed().unwrap_or(false) {
                    wake_ups.borrow_and_update();
                    maybe_due = true;
                    continue;
                }
                if stopping || (until_empty && !maybe_due) {
                    return stats;
                }
                if !maybe_due {
                    // Idle: wait for a wake-up (an enqueue here, or NOTIFY), the earliest queued
                    // job's time or the next poll.
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = wake_ups.changed() => {}
                        _ = tokio::time::sleep_until(next_poll) => {}
                    }
                    maybe_due = true;
                }
                continue;
            }
            let record_deadline = flight.finished_since.map(|t| t + RECORD_DELAY);
            tokio::select! {
                joined = flight.tasks.join_next_with_id() => {
                    if let Some(joined) = joined {
                        flight.joined(joined);
                    }
                }
                _ = async { if let Some(at) = record_deadline { tokio::time::sleep_until(at).await } }, if record_deadline.is_some() => {}
                _ = wake_ups.changed(), if !maybe_due => maybe_due = true,
                // Jobs that become due by time (scheduled, backed off) have no wake-up: poll for
                // them on a fixed schedule even while jobs keep finishing.
                _ = tokio::time::sleep_until(next_poll), if !maybe_due && !until_empty => maybe_due = true,
                _ = renew.tick() => {
                    let held: Vec<i64> = flight
                        .running
                        .values()
                        .map(|(job, _)| job.id)
                        .chain(flight.finished.iter().map(|(job, _)| job.id))
                        .collect();
                    match self.renew(&worker, held).await {
                        Some(held) => {
                            last_renewed = tokio::time::Instant::now();
                            let lost: Vec<i64> = flight
                                .running
                                .values()
                                .map(|(job, _)| job.id)
                                .filter(|id| !held.contains(id))
                                .collect();
                            for id in lost {
                                flight.lose(id);
                            }
                        }
                        // Cannot reach the database: once the lease may have run out elsewhere,
                        // stop rather than risk running alongside a new holder.
                        None if last_renewed.elapsed() + renew_every >= settings.lease => {
                            error!("could not renew job leases before they ran out; stopping the running jobs");
                            let ids: Vec<i64> = flight.running.values().map(|(job, _)| job.id).collect();
                            for id in ids {
                                flight.lose(id);
                            }
                        }
                        None => {}
                    }
                }
                _ = shutdown.cancelled(), if grace.is_none() => {
                    info!(in_flight = flight.running.len(), "shutting down: letting in-flight jobs finish");
                    grace = Some(Box::pin(tokio::time::sleep(settings.shutdown_grace)));
                }
                _ = async { if let Some(g) = grace.as_mut() { g.await } }, if grace.is_some() => {
                    warn!(in_flight = flight.running.len(), "grace period over: releasing unfinished jobs");
                    flight.tasks.abort_all();
                    // Jobs that finished meanwhile keep their outcome; aborted ones are unfinished.
                    // A job blocked outside an await point never sees the abort: stop waiting
                    // after a few seconds and release what is left (its lease would run out anyway).
                    let drain = async {
                        while let Some(joined) = flight.tasks.join_next_with_id().await {
                            flight.joined(joined);
                        }
                    };
                    if tokio::time::timeout(Duration::from_secs(5), drain).await.is_err() {
                        let stuck: Vec<u64> = flight.running.keys().copied().collect();
                        for slot in stuck {
                            if let Some((job, _)) = flight.running.remove(&slot) {
                                flight.finish(job, Outcome::Unfinished);
                            }
                        }
                        flight.tasks.detach_all();
                    }
                }
            }
        }
    }

    async fn recover_expired(&self) {
        match self
            .inner
            .db
            .run(|conn| Ok::<_, herald_core::CoreError>(storage::recover_expired(conn, now())?))
            .await
        {
            Ok((0, 0)) => {}
            Ok((requeued, buried)) => warn!(requeued, buried, "recovered jobs whose lease expired"),
            Err(e) => error!(error = %e, "could not recover expired leases"),
        }
    }

    /// The next time to look for due jobs: the poll interval from now, or sooner when a queued
    /// job is due before that (a scheduled send goes out at its second, not up to a poll late).
    async fn next_poll(&self) -> tokio::time::Instant {
        let poll = self.inner.settings.poll_interval;
        let job_types = self.inner.job_types.clone();
        let next = self
            .inner
            .db
            .run(move |conn| {
                Ok::<_, herald_core::CoreError>(storage::next_run_at(conn, &job_types)?)
            })
            .await;
        let until_due = match next {
            Ok(Some(run_at)) => (run_at - now()).to_std().unwrap_or(Duration::ZERO),
            // A failed look is the claim's problem; poll as usual.
            Ok(None) | Err(_) => poll,
        };
        // At least a moment: a due job another worker is claiming right now must not spin this loop.
        tokio::time::Instant::now()
            + until_due.clamp(
                Duration::from_millis(10),
                poll.max(Duration::from_millis(10)),
            )
    }

    /// Claims up to `limit` due jobs; none when the database cannot be reached (logged).
    async fn claim(&self, worker: &str, limit: i64) -> Vec<ClaimedJob> {
        let lease = TimeDelta::from_std(self.inner.settings.lease).unwrap_or(TimeDelta::minutes(5));
        let job_types = self.inner.job_types.clone();
        let owner = worker.to_owned();
        let claimed = self
            .inner
            .db
            .run(move |conn| {
                let at = now();
                Ok::<_, herald_core::CoreError>(storage::claim(
                    conn,
                    &owner,
                    &job_types,
                    limit,
                    at,
                    at + lease,
                )?)
            })
            .await;
        match claimed {
            Ok(jobs) => jobs,
            Err(e) => {
                error!(error = %e, "could not claim jobs");
                tokio::time::sleep(self.inner.settings.poll_interval).await;
                Vec::new()
            }
        }
    }

    /// Starts each claimed job in its own task, so a panic is caught as a failure.
    fn start(&self, flight: &mut Flight, claimed: Vec<ClaimedJob>) {
        for job in claimed {
            let span = info_span!("job", job.id = job.id, job.type = %job.job_type, job.attempt = job.attempts);
            let started = match self.inner.jobs.get(job.job_type.as_str()) {
                Some(run) => run(self.inner.context.clone(), &job.payload),
                None => Err(JobError::permanent(format!(
                    "no runner registered for {}",
                    job.job_type
                ))),
            };
            let fut = match started {
                Ok(fut) => fut,
                Err(e) => {
                    flight.finish(job, Outcome::Failed(e));
                    continue;
                }
            };
            let slot = flight.next_slot;
            flight.next_slot += 1;
            let job_type = job.job_type.clone();
            let handle = flight.tasks.spawn(
                async move {
                    let started = std::time::Instant::now();
                    let result = fut.await;
                    metrics::histogram!("herald_job_duration_seconds", "job" => job_type)
                        .record(started.elapsed().as_secs_f64());
                    (slot, result)
                }
                .instrument(span),
            );
            flight.slots.insert(handle.id(), slot);
            flight.running.insert(slot, (job, handle));
        }
    }

    /// Renews the lease of every job this worker holds; the ids still held, or `None` when the
    /// database could not be reached.
    async fn renew(&self, worker: &str, held: Vec<i64>) -> Option<Vec<i64>> {
        let lease = TimeDelta::from_std(self.inner.settings.lease).unwrap_or(TimeDelta::minutes(5));
        let owner = worker.to_owned();
        match self
            .inner
            .db
            .run(move |conn| {
                Ok::<_, herald_core::CoreError>(storage::extend_leases(
                    conn,
                    &owner,
                    &held,
                    now() + lease,
                )?)
            })
            .await
        {
            Ok(held) => Some(held),
            Err(e) => {
                warn!(error = %e, "could not renew job leases");
                None
            }
        }
    }

    /// Writes the outcomes in one transaction: successes acknowledged in one statement, failures
    /// retried later or buried, unfinished jobs released.
    async fn record(&self, worker: &str, finished: &[(ClaimedJob, Outcome)]) -> Option<PassStats> {
        let mut done = Vec::new();
        let mut failed = Vec::new();
        let mut unfinished = Vec::new();
        for (job, outcome) in finished {
            match outcome {
                Outcome::Done => done.push(job.id),
                Outcome::Failed(e) => failed.push((job.clone(), e.clone())),
                Outcome::Unfinished => unfinished.push(job.id),
                Outcome::Lost => {}
            }
        }
        let settings = self.inner.settings.clone();
        let owner = worker.to_owned();
        let result = self
            .inner
            .db
            .run(move |conn| conn.write(|conn| {
                let mut stats = PassStats::default();
                let acked = storage::ack(conn, &owner, &done)?;
                if acked < done.len() {
                    warn!(expected = done.len(), acked, "some finished jobs were no longer held by this worker");
                }
                stats.succeeded = acked;
                for (job, error) in &failed {
                    let message = error.to_string();
                    let give_up = matches!(error, JobError::Permanent(_)) || job.attempts >= job.max_attempts;
                    if give_up {
                        error!(job.id = job.id, job.type = %job.job_type, attempts = job.attempts, error = %message, "job failed for good");
                        storage::bury(conn, &owner, job.id, &message)?;
                        metrics::counter!("herald_jobs_total", "job" => job.job_type.clone(), "outcome" => "dead").increment(1);
                        stats.dead += 1;
                    } else {
                        let delay = match error {
                            JobError::Temporary { retry_after: Some(d), .. } => *d,
                            _ => backoff(&settings, job.attempts),
                        };
                        warn!(job.id = job.id, job.type = %job.job_type, attempts = job.attempts, retry_in = ?delay, error = %message, "job failed; will retry");
                        let run_at = now() + TimeDelta::from_std(delay).unwrap_or(TimeDelta::hours(1));
                        storage::retry_later(conn, &owner, job.id, run_at, &message)?;
                        metrics::counter!("herald_jobs_total", "job" => job.job_type.clone(), "outcome" => "retry").increment(1);
                        stats.retried += 1;
                    }
                }
                if !unfinished.is_empty() {
                    stats.released = storage::release(conn, &owner, &unfinished)?;
                }
                Ok::<_, herald_core::CoreError>(stats)
            }))
            .await;
        match result {
            Ok(stats) => {
                if stats.succeeded > 0 {
                    metrics::counter!("herald_jobs_total", "job" => "all", "outcome" => "done")
                        .increment(stats.succeeded as u64);
                }
                debug!(?stats, "outcomes recorded");
                Some(stats)
            }
            // Nothing was written (one transaction): the caller keeps the outcomes and retries.
            Err(e) => {
                error!(error = %e, "could not record job outcomes; will retry");
                None
            }
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}
