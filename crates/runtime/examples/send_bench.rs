//! Sending benchmark: N emails composed as the API composes them, then sent by the job runner
//! through `send_email` (MIME build, SMTP sessions reused up to 30 messages, outcome recorded)
//! to an SMTP sink.
//!
//! ```text
//! cargo run --release -p herald-runtime --example send_bench -- \
//!     --database-url postgres://postgres@127.0.0.1:5432/herald_bench_send \
//!     --sink-port 2525 --emails 5000 --concurrency 20 --message-bytes 4096
//! cargo run --release -p herald-runtime --example send_bench -- \
//!     --database-url sqlite:///tmp/send.db --sink-port 2525 --emails 10000 --scheduled
//! ```
//!
//! Throughput mode composes every email first (not timed), then times the runner from its start
//! until the last email is `sent`. `--scheduled` composes every email with the same `send_at`,
//! far enough ahead to compose them all (`--lead-secs`), starts the runner before that moment
//! and, once all are sent, reads the lateness `emails.sent_at − email_sends.send_at` of each from
//! the database.
//!
//! Concurrency: `--concurrency C` is the number of SMTP sessions, as smtp-source's `-s C`:
//! `mail.smtp_sessions_per_server = C`, so at most C sessions are open to the sink while the
//! runner's default batches (`[queue]`: 2 loops, batch 16: up to 64 sends at once) do the other
//! sends' database work meanwhile. Without it the configured default cap applies. `--workers` and
//! `--batch` change the runner's layout; `peak_in_flight` in the output is the most send jobs that
//! ran at once (most of them waiting for a session).
//!
//! Prints one JSON line; `scripts/bench-send.sh` runs it beside Postfix's smtp-source.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::Integer;
use herald_core::config::PlanLimits;
use herald_core::crypto::SecretKey;
use herald_core::db::run_migrations;
use herald_core::domain::Plan;
use herald_core::identity::{Account, NewUser, User};
use herald_core::records::{Person, Record};
use herald_core::time::{NaiveDateTime, now, to_rfc3339};
use herald_core::{Config, DatabaseUrl, Db, DbConnection};
use herald_mailbox::outbox::{self, ComposeInput};
use herald_mailbox::schema::{email_sends, emails};
use herald_mailbox::{Draft, MailboxInput};
use herald_runtime::JobContext;
use herald_runtime::mail::SendEmailJob;
use herald_scheduler::{BackgroundJob, JobError, QueueWaker, Runner, RunnerSettings};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

struct Args {
    database_url: String,
    sink_host: String,
    sink_port: u16,
    emails: usize,
    concurrency: Option<usize>,
    workers: Option<usize>,
    batch: Option<i64>,
    /// Bytes of the text body (smtp-source's `-l` counts its payload the same way).
    message_bytes: usize,
    scheduled: bool,
    /// Scheduled mode: how far ahead `send_at` is, long enough to compose every email first;
    /// default 10 s plus 15 ms per email on PostgreSQL, 2 ms on SQLite.
    lead_secs: Option<f64>,
    /// Database connections of the process (`db_pool_size`, default 10).
    pool: u32,
    /// Emails composed per transaction in the (untimed) setup.
    compose_batch: usize,
    poll_interval_ms: Option<u64>,
}

/// A handful of `--name value` flags (and `--scheduled`): not worth a dependency.
fn args() -> Args {
    let mut args = Args {
        database_url: String::new(),
        sink_host: "127.0.0.1".into(),
        sink_port: 0,
        emails: 1000,
        concurrency: None,
        workers: None,
        batch: None,
        message_bytes: 4096,
        scheduled: false,
        lead_secs: None,
        pool: Config::default().db_pool_size,
        compose_batch: 200,
        poll_interval_ms: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--scheduled" {
            args.scheduled = true;
            continue;
        }
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--database-url" => args.database_url = value,
            "--sink-host" => args.sink_host = value,
            "--sink-port" => args.sink_port = value.parse().expect("--sink-port"),
            "--emails" => args.emails = value.parse().expect("--emails"),
            "--concurrency" => args.concurrency = Some(value.parse().expect("--concurrency")),
            "--workers" => args.workers = Some(value.parse().expect("--workers")),
            "--batch" => args.batch = Some(value.parse().expect("--batch")),
            "--message-bytes" => args.message_bytes = value.parse().expect("--message-bytes"),
            "--lead-secs" => args.lead_secs = Some(value.parse().expect("--lead-secs")),
            "--pool" => args.pool = value.parse().expect("--pool"),
            "--compose-batch" => args.compose_batch = value.parse().expect("--compose-batch"),
            "--poll-interval-ms" => {
                args.poll_interval_ms = Some(value.parse().expect("--poll-interval-ms"));
            }
            _ => panic!("unknown flag {flag}"),
        }
    }
    assert!(
        !args.database_url.is_empty() && args.sink_port != 0,
        "--database-url and --sink-port are required"
    );
    assert!(args.emails > 0 && args.compose_batch > 0);
    args
}

/// Counts the sends of the run; the wrapped job reaches it through a static because
/// `SendEmailJob`'s context is the runtime's `JobContext`.
struct Meter {
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    done: AtomicUsize,
    target: usize,
    all_done: Notify,
    /// Sum of the send jobs' wall times.
    job_nanos: AtomicU64,
}

static METER: OnceLock<Meter> = OnceLock::new();

/// The runtime's send job, counted.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
struct MeteredSend(SendEmailJob);

impl BackgroundJob for MeteredSend {
    const JOB_NAME: &'static str = SendEmailJob::JOB_NAME;
    const QUEUE: &'static str = SendEmailJob::QUEUE;
    const MAX_ATTEMPTS: i32 = SendEmailJob::MAX_ATTEMPTS;
    type Context = JobContext;

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let meter = METER.get().expect("meter");
        let in_flight = meter.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        meter.peak.fetch_max(in_flight, Ordering::SeqCst);
        let started = Instant::now();
        let result = self.0.run(ctx).await;
        meter.job_nanos.fetch_add(
            u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
        meter.in_flight.fetch_sub(1, Ordering::SeqCst);
        if meter.done.fetch_add(1, Ordering::SeqCst) + 1 >= meter.target {
            meter.all_done.notify_one();
        }
        result
    }
}

/// User plus system CPU time of this process so far (`/proc/self/stat`, 100 ticks a second).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line: the 12th and 13th after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// User plus system CPU seconds of PostgreSQL so far, when it runs on this host: its postmaster's
/// own and its reaped children's (backends that ended), plus every live child's (backends,
/// WAL writer, checkpointer…). `None` on SQLite or when the server's processes are not visible.
fn pg_cpu_seconds(db: &Db) -> Option<f64> {
    let mut conn = db.get().ok()?;
    let DbConnection::Postgres(pg) = &mut *conn else {
        return None;
    };
    let backend: i32 = diesel::select(sql::<Integer>("pg_backend_pid()"))
        .get_result(pg)
        .ok()?;
    // Fields after the command name: state is the 1st, ppid the 2nd, utime, stime, cutime and
    // cstime the 12th to 15th.
    let stat = |pid: &str| -> Option<Vec<f64>> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = text.rsplit_once(')')?.1;
        Some(
            rest.split_whitespace()
                .take(15)
                .map(|f| f.parse::<f64>().unwrap_or(0.0))
                .collect(),
        )
    };
    let postmaster = stat(&backend.to_string())?.get(1).copied()?;
    let own = stat(&postmaster.to_string())?;
    let mut ticks = own[11] + own[12] + own[13] + own[14];
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if let Some(fields) = stat(pid).filter(|f| f.len() >= 13 && f[1] == postmaster) {
            ticks += fields[11] + fields[12];
        }
    }
    Some(ticks / 100.0)
}

/// A text body of `bytes` bytes: 78 printable characters and CRLF per line, as mail is written.
fn body(bytes: usize) -> String {
    let line: String =
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempo"
            .chars()
            .take(78)
            .collect();
    let mut text = String::with_capacity(bytes + 80);
    while text.len() + 80 <= bytes {
        text.push_str(&line);
        text.push_str("\r\n");
    }
    text.push_str(&line[..bytes - text.len()]);
    text
}

fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

/// The value at quantile `q` of sorted values (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

struct Setup {
    user: User,
    person: Person,
}

/// Schema, an account with one user, a person to write to, and the user's mailbox sending
/// through the sink (saved as the API saves it, without the connection check).
fn setup(db: &Db, key: &SecretKey, args: &Args) -> Setup {
    let mut conn = db.get().unwrap();
    run_migrations(&mut conn).unwrap();
    let account = Account::create(&mut conn, "Bench", Plan::Automation).unwrap();
    let user = User::create(
        &mut conn,
        account.id,
        &NewUser {
            email: "owner@bench.example".into(),
            name: "Bench Owner".into(),
            role: None,
        },
    )
    .unwrap();
    let person = <Person as Record>::create(
        &mut conn,
        account.id,
        &serde_json::from_value(json!({"first_name": "Bob", "last_name": "Contact",
            "emails": ["bob@bench.example"]}))
        .unwrap(),
    )
    .unwrap();
    let input: MailboxInput = serde_json::from_value(json!({
        "address": "owner@bench.example",
        "display_name": "Bench Owner",
        // Never contacted: the benchmark runs no mailbox syncer.
        "imap": {"host": "127.0.0.1", "port": 10143, "security": "none",
                 "username": "owner@bench.example", "password": "unused"},
        "smtp": {"host": args.sink_host, "port": args.sink_port, "security": "none",
                 "username": "owner@bench.example", "password": "unused"},
        "sending_enabled": true,
        "save_sent_copy": false,
    }))
    .unwrap();
    let draft = Draft::prepare(&mut conn, PlanLimits::default(), &user, &input).unwrap();
    conn.write(|conn| draft.insert(conn, key, PlanLimits::default(), account.id))
        .unwrap();
    Setup { user, person }
}

/// Composes `args.emails` emails, `compose_batch` per transaction; all due at `send_at` if given.
fn compose_all(db: &Db, setup: &Setup, args: &Args, send_at: Option<&str>) {
    let engine = herald_templates::Engine::default();
    let input: ComposeInput = serde_json::from_value(json!({
        "record": {"type": "person", "id": setup.person.id},
        "subject": "Our offer for the new season",
        "text": body(args.message_bytes),
        "send_at": send_at,
    }))
    .unwrap();
    let mut conn = db.get().unwrap();
    let mut left = args.emails;
    while left > 0 {
        let n = left.min(args.compose_batch);
        conn.write(|conn| {
            for _ in 0..n {
                outbox::compose(conn, &engine, &setup.user, &input, None)?;
            }
            Ok::<_, herald_mailbox::MailboxError>(())
        })
        .unwrap();
        left -= n;
    }
}

/// Per sent email: (send_at, started_at, sent_at) and the stored message's size.
type SendTimes = (
    Option<NaiveDateTime>,
    Option<NaiveDateTime>,
    Option<NaiveDateTime>,
);

fn sent_times(db: &Db) -> (Vec<SendTimes>, i64, usize) {
    let mut conn = db.get().unwrap();
    let times: Vec<SendTimes> = emails::table
        .inner_join(email_sends::table)
        .filter(emails::status.eq("sent"))
        .select((
            email_sends::send_at,
            email_sends::started_at,
            emails::sent_at,
        ))
        .load(&mut conn)
        .unwrap();
    let all: i64 = emails::table.count().get_result(&mut conn).unwrap();
    // The message as sent (base64 in the database).
    let raw: Option<String> = email_sends::table
        .select(email_sends::raw_message)
        .first::<Option<String>>(&mut conn)
        .unwrap();
    let raw_bytes = raw.map_or(0, |b64| b64.len() / 4 * 3 - b64.matches('=').count());
    (times, all, raw_bytes)
}

fn millis(later: NaiveDateTime, earlier: NaiveDateTime) -> f64 {
    (later - earlier).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let args = args();
    let url = DatabaseUrl::parse(&args.database_url).unwrap();
    let backend = url.backend().as_str();
    let db = Db::open(&url, args.pool).unwrap();
    let key = SecretKey::from_base64(&SecretKey::generate_base64()).unwrap();

    let mut config = Config::default();
    if let Some(sessions) = args.concurrency {
        config.mail.smtp_sessions_per_server = sessions.max(1);
    }
    if let Some(workers) = args.workers {
        config.queue.workers = workers;
    }
    if let Some(batch) = args.batch {
        config.queue.batch_size = batch;
    }
    if let Some(ms) = args.poll_interval_ms {
        config.queue.poll_interval_ms = ms;
    }
    config.db_pool_size = args.pool;
    let config = Arc::new(config);
    METER
        .set(Meter {
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            target: args.emails,
            all_done: Notify::new(),
            job_nanos: AtomicU64::new(0),
        })
        .ok()
        .expect("meter set once");
    let meter = METER.get().expect("meter");

    // Setup, not timed.
    let setup = setup(&db, &key, &args);
    let compose_started = Instant::now();
    let send_at = args.scheduled.then(|| {
        let per_email = match url.backend() {
            herald_core::BackendKind::Postgres => 0.015,
            herald_core::BackendKind::Sqlite => 0.002,
        };
        let lead = args
            .lead_secs
            .unwrap_or(10.0 + per_email * args.emails as f64);
        let at = now() + chrono::TimeDelta::milliseconds((lead * 1000.0) as i64);
        // Whole seconds, as a person schedules.
        let at = chrono::Timelike::with_nanosecond(&at, 0).unwrap() + chrono::TimeDelta::seconds(1);
        to_rfc3339(&at)
    });
    compose_all(&db, &setup, &args, send_at.as_deref());
    let compose_seconds = compose_started.elapsed().as_secs_f64();

    // The runner as `herald_runtime::job_runner` builds it from `[queue]`, with the send job
    // metered. Nothing else is queued: no mailbox syncer, no housekeeping.
    let context = JobContext::new(db.clone(), config.clone(), key.clone(), QueueWaker::new());
    let runner = Runner::builder(db.clone(), context.clone())
        .register::<MeteredSend>()
        .settings(RunnerSettings::from(&config.queue))
        .waker(context.waker.clone())
        .build();

    let due: Option<NaiveDateTime> = send_at
        .as_deref()
        .map(|s| chrono::DateTime::parse_from_rfc3339(s).unwrap().naive_utc());
    let margin_ms = due.map(|due| millis(due, now()));
    if let Some(margin) = margin_ms {
        assert!(
            margin > 500.0,
            "composing took too long: the runner would start {:.0} ms before the due time; \
             give a larger --lead-secs",
            margin
        );
    }

    let shutdown = CancellationToken::new();
    let pg_before = pg_cpu_seconds(&db);
    let cpu_before = cpu_seconds();
    let started_at = now();
    let started = Instant::now();
    let running = {
        let (runner, shutdown) = (runner.clone(), shutdown.clone());
        tokio::spawn(async move { runner.run(shutdown).await })
    };
    let limit =
        Duration::from_secs(600) + Duration::from_secs_f64(margin_ms.unwrap_or(0.0) / 1000.0);
    let finished = tokio::time::timeout(limit, meter.all_done.notified()).await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    let pg_cpu = pg_before.zip(pg_cpu_seconds(&db)).map(|(a, b)| b - a);
    shutdown.cancel();
    running.await.unwrap();
    assert!(
        finished.is_ok(),
        "only {} of {} sends finished in {limit:?}",
        meter.done.load(Ordering::SeqCst),
        args.emails
    );

    let (times, all, raw_bytes) = sent_times(&db);
    assert_eq!(all as usize, args.emails, "emails composed");
    assert_eq!(
        times.len(),
        args.emails,
        "every email should be sent; sent: {}",
        times.len()
    );
    let sent: Vec<NaiveDateTime> = times.iter().filter_map(|t| t.2).collect();
    let last_sent = sent.iter().max().copied().unwrap();
    let first_sent = sent.iter().min().copied().unwrap();
    // In the job: the start transaction's remainder, the MIME build, the SMTP conversation up
    // to the accepted DATA, and the outcome transaction's first statement.
    let windows: Vec<f64> = times
        .iter()
        .filter_map(|(_, started, sent)| Some(millis((*sent)?, (*started)?)))
        .collect();
    let avg_window = windows.iter().sum::<f64>() / windows.len() as f64;
    let avg_job_ms = meter.job_nanos.load(Ordering::SeqCst) as f64
        / 1e6
        / meter.done.load(Ordering::SeqCst) as f64;

    let mut out = json!({
        "backend": backend,
        "mode": if args.scheduled { "scheduled" } else { "throughput" },
        "emails": args.emails,
        "smtp_sessions": config.mail.smtp_sessions_per_server,
        "workers": config.queue.workers,
        "batch": config.queue.batch_size,
        "pool": args.pool,
        "peak_in_flight": meter.peak.load(Ordering::SeqCst),
        "message_bytes": args.message_bytes,
        "raw_message_bytes": raw_bytes,
        "compose_seconds": round(compose_seconds, 3),
        "avg_job_ms": round(avg_job_ms, 3),
        "avg_start_to_sent_ms": round(avg_window, 3),
        "cpu_seconds": round(cpu, 2),
        "cpu_ms_per_msg": round(cpu * 1000.0 / args.emails as f64, 3),
        // PostgreSQL over the same window (the whole server: other databases' work too).
        "pg_cpu_seconds": pg_cpu.map(|c| round(c, 2)),
        "pg_cpu_ms_per_msg": pg_cpu.map(|c| round(c * 1000.0 / args.emails as f64, 3)),
    });
    let fields = out.as_object_mut().unwrap();
    match due {
        None => {
            let to_last = millis(last_sent, started_at) / 1000.0;
            fields.insert("seconds".into(), json!(round(elapsed, 3)));
            fields.insert(
                "msgs_per_sec".into(),
                json!((args.emails as f64 / elapsed).round()),
            );
            fields.insert(
                "seconds_start_to_last_sent_at".into(),
                json!(round(to_last, 3)),
            );
        }
        Some(due) => {
            let mut lateness: Vec<f64> = times
                .iter()
                .map(|(send_at, _, sent)| millis(sent.unwrap(), send_at.unwrap()))
                .collect();
            assert!(
                times.iter().all(|t| t.0 == Some(due)),
                "every email is due at {due}"
            );
            lateness.sort_by(f64::total_cmp);
            fields.insert("due".into(), json!(to_rfc3339(&due)));
            fields.insert(
                "runner_started_before_due_ms".into(),
                json!(round(margin_ms.unwrap(), 1)),
            );
            fields.insert("first_ms".into(), json!(round(lateness[0], 1)));
            for (name, q) in [("p50_ms", 0.5), ("p90_ms", 0.9), ("p99_ms", 0.99)] {
                fields.insert(name.into(), json!(round(quantile(&lateness, q), 1)));
            }
            fields.insert("max_ms".into(), json!(round(*lateness.last().unwrap(), 1)));
            // The rate once sending began: first to last send.
            let span = millis(last_sent, first_sent) / 1000.0;
            fields.insert(
                "msgs_per_sec_while_sending".into(),
                json!((args.emails as f64 / span.max(1e-3)).round()),
            );
        }
    }
    println!("{out}");
}
