//! Mailbox first-sync benchmark: one mailbox's first sync into a fresh database, then a resync
//! with nothing new, each timed on its own.
//!
//! ```text
//! cargo run --release -p herald-mailbox --example sync_bench -- \
//!     --database-url sqlite:///tmp/bench.db --user bench@herald.test --password bench-pass \
//!     --expect 10000
//! ```
//! Prints one JSON line per phase. `scripts/bench-mail.sh` fills the mailbox and runs this beside
//! mbsync on both backends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use diesel::prelude::*;
use herald_core::config::PlanLimits;
use herald_core::crypto::SecretKey;
use herald_core::db::run_migrations;
use herald_core::domain::Plan;
use herald_core::identity::{Account, NewUser, User};
use herald_core::{DatabaseUrl, Db};
use herald_mailbox::schema::emails;
use herald_mailbox::sync::{SyncOptions, SyncReport, sync_mailbox};
use herald_mailbox::{Draft, MailboxInput};
use serde_json::json;

struct Args {
    database_url: String,
    imap_host: String,
    imap_port: u16,
    user: String,
    password: String,
    /// Messages the first sync must store as new; anything else fails the run.
    expect: Option<usize>,
    batch: usize,
}

/// A handful of `--name value` flags: not worth a dependency.
fn args() -> Args {
    let mut args = Args {
        database_url: String::new(),
        imap_host: "127.0.0.1".into(),
        imap_port: 10143,
        user: String::new(),
        password: String::new(),
        expect: None,
        batch: SyncOptions::default().batch,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--database-url" => args.database_url = value,
            "--imap-host" => args.imap_host = value,
            "--imap-port" => args.imap_port = value.parse().expect("--imap-port"),
            "--user" => args.user = value,
            "--password" => args.password = value,
            "--expect" => args.expect = Some(value.parse().expect("--expect")),
            "--batch" => args.batch = value.parse().expect("--batch"),
            _ => panic!("unknown flag {flag}"),
        }
    }
    assert!(
        !args.database_url.is_empty() && !args.user.is_empty(),
        "--database-url and --user are required"
    );
    args
}

/// The process's peak resident set so far (VmHWM), in KiB: the RSS a phase ends with is not the
/// figure that matters, its high-water mark is.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn print_phase(backend: &str, phase: &str, report: &SyncReport, seconds: f64, emails: &Counts) {
    println!(
        "{}",
        json!({
            "backend": backend,
            "phase": phase,
            "messages": report.fetched,
            "new": report.new,
            "seconds": (seconds * 1000.0).round() / 1000.0,
            "msgs_per_sec": (report.fetched as f64 / seconds).round(),
            "emails": emails.emails,
            "threads": emails.threads,
            "peak_rss_kib": peak_rss_kib(),
        })
    );
}

/// What the database holds afterwards, to show the sync threaded as well as stored.
struct Counts {
    emails: i64,
    /// Distinct threads: fewer than `emails` when replies joined their parents.
    threads: i64,
}

async fn counts(db: &Db) -> Counts {
    db.run(|conn| {
        let emails_count = emails::table.count().get_result(conn)?;
        // A thread's first email is its own thread.
        let threads = emails::table
            .filter(emails::thread_id.eq(emails::id.nullable()))
            .count()
            .get_result(conn)?;
        Ok::<_, herald_core::CoreError>(Counts {
            emails: emails_count,
            threads,
        })
    })
    .await
    .unwrap()
}

#[tokio::main]
async fn main() {
    let args = args();
    let url = DatabaseUrl::parse(&args.database_url).unwrap();
    let backend = url.backend().as_str();
    let db = Db::open(&url, 4).unwrap();
    let key = SecretKey::from_base64(&SecretKey::generate_base64()).unwrap();

    // Setup, not timed: schema, an account with one user, and the mailbox, saved as the API
    // saves it (plan rules, sealed password) but without the login check.
    let mailbox = {
        let mut conn = db.get().unwrap();
        run_migrations(&mut conn).unwrap();
        let account = Account::create(&mut conn, "Bench", Plan::Automation).unwrap();
        let owner = User::create(
            &mut conn,
            account.id,
            &NewUser {
                email: "owner@bench.example".into(),
                name: "Owner".into(),
                role: None,
            },
        )
        .unwrap();
        let input: MailboxInput = serde_json::from_value(json!({
            "address": args.user,
            "imap": {"host": args.imap_host, "port": args.imap_port, "security": "none",
                     "username": args.user, "password": args.password},
        }))
        .unwrap();
        let draft = Draft::prepare(&mut conn, PlanLimits::default(), &owner, &input).unwrap();
        conn.write(|conn| draft.insert(conn, &key, PlanLimits::default(), account.id))
            .unwrap()
    };

    let options = SyncOptions {
        // The whole mailbox, as mbsync reads it, not the default 90-day window.
        history: None,
        batch: args.batch,
        ..SyncOptions::default()
    };

    let started = Instant::now();
    let first = sync_mailbox(&db, &key, mailbox.id, &options).await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let after_first = counts(&db).await;
    print_phase(backend, "first", &first, seconds, &after_first);
    if let Some(expect) = args.expect {
        assert!(
            first.fetched == expect && first.new == expect && after_first.emails == expect as i64,
            "the first sync should store {expect} new emails: {first:?}, {} in the database",
            after_first.emails
        );
    }

    // Nothing changed on the server: the pass should find nothing to fetch.
    let started = Instant::now();
    let resync = sync_mailbox(&db, &key, mailbox.id, &options).await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let after_resync = counts(&db).await;
    print_phase(backend, "resync", &resync, seconds, &after_resync);
    assert!(
        resync == SyncReport::default() && after_resync.emails == after_first.emails,
        "the resync should find nothing new: {resync:?}"
    );
}
