//! Queue benchmark: drains N no-op jobs, then measures enqueue-to-start latency.
//!
//! ```text
//! cargo run --release -p herald-scheduler --example queue_bench -- \
//!     --database-url postgres://postgres@127.0.0.1:5432/herald_bench --jobs 100000
//! ```
//! Prints one JSON object per phase. `scripts/bench-queue.sh` runs it on both backends beside
//! graphile-worker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use herald_core::db::run_migrations;
use herald_core::time::now;
use herald_core::{DatabaseUrl, Db};
use herald_scheduler::storage::{self, NewJob};
use herald_scheduler::{BackgroundJob, JobError, QueueWaker, Runner, RunnerSettings};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    database_url: String,
    #[arg(long, default_value_t = 100_000)]
    jobs: usize,
    /// Worker loops.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Jobs claimed per round trip.
    #[arg(long, default_value_t = 16)]
    batch: i64,
    /// Jobs of the latency phase, enqueued one per transaction at `--rate` per second; 0 skips it.
    #[arg(long, default_value_t = 2_000)]
    latency_jobs: usize,
    #[arg(long, default_value_t = 500)]
    rate: u64,
    #[arg(long, default_value_t = 500)]
    poll_interval_ms: u64,
    /// Wake workers in-process on enqueue, as the API's embedded worker does; without it the
    /// workers only poll, as a separate `herald-worker` process does.
    #[arg(long)]
    wake: bool,
}

#[derive(Clone, Default)]
struct Ctx {
    latencies_us: Arc<Mutex<Vec<i64>>>,
}

#[derive(Serialize, Deserialize)]
struct Noop {
    /// Enqueue time in microseconds since the epoch; 0 in the throughput phase.
    enqueued_us: i64,
}

impl BackgroundJob for Noop {
    const JOB_NAME: &'static str = "bench_noop";
    type Context = Ctx;

    async fn run(&self, ctx: Ctx) -> Result<(), JobError> {
        if self.enqueued_us > 0 {
            let started = chrono::Utc::now().timestamp_micros();
            ctx.latencies_us
                .lock()
                .unwrap()
                .push(started - self.enqueued_us);
        }
        Ok(())
    }
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let url = DatabaseUrl::parse(&args.database_url).unwrap();
    let db = Db::open(&url, (args.workers as u32 + 2).max(4)).unwrap();
    {
        let mut conn = db.get().unwrap();
        run_migrations(&mut conn).unwrap();
        diesel::RunQueryDsl::execute(diesel::delete(herald_core::schema::jobs::table), &mut *conn)
            .unwrap();
    }
    let settings = RunnerSettings {
        workers: args.workers,
        batch_size: args.batch,
        poll_interval: Duration::from_millis(args.poll_interval_ms),
        ..RunnerSettings::default()
    };
    let ctx = Ctx::default();
    let waker = QueueWaker::new();
    let runner = Runner::builder(db.clone(), ctx.clone())
        .register::<Noop>()
        .settings(settings)
        .waker(waker.clone())
        .build();

    // Throughput: enqueue everything first, then time the drain.
    let payload = serde_json::to_string(&Noop { enqueued_us: 0 }).unwrap();
    let run_at = now();
    let batch: Vec<NewJob> = (0..args.jobs)
        .map(|_| NewJob {
            job_type: Noop::JOB_NAME,
            queue: "default",
            payload: &payload,
            max_attempts: 5,
            run_at,
        })
        .collect();
    {
        let mut conn = db.get().unwrap();
        conn.write(|conn| storage::enqueue_batch(conn, &batch))
            .unwrap();
    }
    let started = Instant::now();
    let stats = runner.run_until_empty().await;
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(stats.succeeded, args.jobs, "every job ran once");
    println!(
        "{}",
        serde_json::json!({
            "system": "herald", "phase": "drain", "backend": url.backend().as_str(),
            "jobs": args.jobs, "workers": args.workers, "batch": args.batch,
            "seconds": (seconds * 1000.0).round() / 1000.0,
            "jobs_per_sec": (args.jobs as f64 / seconds).round(),
        })
    );

    if args.latency_jobs == 0 {
        return;
    }
    // Latency: a running worker, jobs enqueued one per transaction at a steady rate.
    let token = CancellationToken::new();
    let handle = tokio::spawn({
        let runner = runner.clone();
        let token = token.clone();
        async move { runner.run(token).await }
    });
    let gap = Duration::from_secs_f64(1.0 / args.rate as f64);
    let mut tick = tokio::time::interval(gap);
    for _ in 0..args.latency_jobs {
        tick.tick().await;
        let db = db.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = db.get().unwrap();
            Noop {
                enqueued_us: chrono::Utc::now().timestamp_micros(),
            }
            .enqueue(&mut conn)
            .unwrap();
        })
        .await
        .unwrap();
        if args.wake {
            waker.wake();
        }
    }
    while ctx.latencies_us.lock().unwrap().len() < args.latency_jobs {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    token.cancel();
    handle.await.unwrap();
    let mut latencies = ctx.latencies_us.lock().unwrap().clone();
    latencies.sort_unstable();
    println!(
        "{}",
        serde_json::json!({
            "system": "herald", "phase": "latency", "backend": url.backend().as_str(),
            "jobs": args.latency_jobs, "rate_per_sec": args.rate, "wake_in_process": args.wake,
            "poll_interval_ms": args.poll_interval_ms,
            "p50_ms": percentile(&latencies, 0.50), "p99_ms": percentile(&latencies, 0.99),
        })
    );
}
