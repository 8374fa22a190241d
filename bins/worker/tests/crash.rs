//! The worker killed with SIGKILL again and again during a burst of 1,000 sends, on both
//! backends: afterwards every email is `sent` and reached the server, and a message reached it
//! twice only when a kill came while its SMTP outcome was in flight (counted, and bounded by the
//! sends one process can have in flight).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use diesel::prelude::*;
use herald_core::config::PlanLimits;
use herald_core::crypto::SecretKey;
use herald_core::domain::Plan;
use herald_core::identity::{Account, NewUser, User};
use herald_core::records::{Person, Record};
use herald_mailbox::outbox::{self, ComposeInput};
use herald_mailbox::schema::{emails, mailboxes};
use herald_mailbox::{Draft, MailboxInput};
use herald_testdb::{SmtpSink, TestDb, backend_tests, mail_env};
use serde_json::json;

const EMAILS: usize = 1000;
/// What one worker process can have in flight: 2 loops × 2 batches × 16 jobs (the defaults).
const IN_FLIGHT: usize = 64;

fn status_counts(test: &TestDb) -> HashMap<String, i64> {
    emails::table
        .group_by(emails::status)
        .select((emails::status, diesel::dsl::count_star()))
        .load::<(String, i64)>(&mut test.connect())
        .unwrap()
        .into_iter()
        .collect()
}

async fn sigkill_during_a_burst_loses_no_send(test: TestDb) {
    let sink = SmtpSink::start(None, &[]);
    let key_text = SecretKey::generate_base64();
    let key = SecretKey::from_base64(&key_text).unwrap();
    let mut conn = test.connect();
    let account = Account::create(&mut conn, "Crash", Plan::Base).unwrap();
    let user = User::create(
        &mut conn,
        account.id,
        &NewUser {
            email: "owner@crash.example.com".into(),
            name: "Owner".into(),
            role: None,
        },
    )
    .unwrap();
    let person = <Person as Record>::create(
        &mut conn,
        account.id,
        &serde_json::from_value(json!({"first_name": "Bob", "last_name": "Lee",
            "emails": ["bob@herald.test"]}))
        .unwrap(),
    )
    .unwrap();
    let input: MailboxInput = serde_json::from_value(json!({
        "address": "alice@herald.test",
        "imap": {"host": mail_env("HERALD_TEST_IMAP_HOST"), "port": mail_env("HERALD_TEST_IMAP_PORT").parse::<u16>().unwrap(),
                 "security": "none", "username": "alice@herald.test", "password": "alice-pass"},
        "smtp": {"host": "127.0.0.1", "port": sink.port, "security": "none",
                 "username": "alice@herald.test", "password": "alice-pass"},
        "sending_enabled": true,
        "save_sent_copy": false
    }))
    .unwrap();
    let draft = Draft::prepare(&mut conn, PlanLimits::default(), &user, &input).unwrap();
    let mailbox = conn
        .write(|conn| draft.insert(conn, &key, PlanLimits::default(), account.id))
        .unwrap();
    // Keeps the worker's syncer off this mailbox: this test is about sending.
    diesel::update(mailboxes::table.find(mailbox.id))
        .set(mailboxes::state.eq("auth_failed"))
        .execute(&mut conn)
        .unwrap();
    let engine = herald_templates::Engine::default();
    for chunk in 0..EMAILS / 100 {
        conn.write(|conn| {
            for n in 0..100 {
                let input: ComposeInput = serde_json::from_value(json!({
                    "record": {"type": "person", "id": person.id},
                    "subject": format!("Burst {}", chunk * 100 + n),
                    "text": "x".repeat(2048),
                }))
                .unwrap();
                outbox::compose(conn, &engine, &user, &input, None)?;
            }
            Ok::<_, herald_mailbox::MailboxError>(())
        })
        .unwrap();
    }

    let worker = || {
        Command::new(env!("CARGO_BIN_EXE_herald-worker"))
            .env("HERALD_DATABASE_URL", test.url_string())
            .env("HERALD_SECRET_KEY", &key_text)
            // A killed worker's claims come back after three seconds (the shortest lease).
            .env("HERALD_QUEUE__LEASE_SECS", "3")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut kills = 0;
    for round in 0..200 {
        let mut child = worker();
        // Long enough to start and send some, short enough to die mid-burst.
        tokio::time::sleep(Duration::from_millis(300 + (round % 5) * 150)).await;
        if let Some(exit) = child.try_wait().unwrap() {
            panic!("the worker exited by itself: {exit}");
        }
        let left = status_counts(&test).get("sending").copied().unwrap_or(0);
        if left == 0 {
            child.kill().unwrap();
            child.wait().unwrap();
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
    }
    let counts = status_counts(&test);
    assert_eq!(
        counts.get("sent").copied(),
        Some(EMAILS as i64),
        "every email sent: {counts:?}"
    );
    let ids: Vec<String> = emails::table
        .select(emails::message_id.assume_not_null())
        .load(&mut test.connect())
        .unwrap();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for message in sink.messages() {
        if let Some(id) = ids.iter().find(|id| message.contains(id.as_str())) {
            *seen.entry(id.clone()).or_default() += 1;
        }
    }
    let lost = ids.iter().filter(|id| !seen.contains_key(*id)).count();
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "{}: {EMAILS} sends, {kills} SIGKILLs, {lost} lost, {duplicates} sent twice",
        test.backend().as_str()
    );
    assert_eq!(lost, 0, "no send lost");
    assert!(kills >= 3, "the burst outlived only {kills} kills");
    assert!(
        duplicates <= kills * IN_FLIGHT,
        "{duplicates} duplicates for {kills} kills"
    );
}

backend_tests!(sigkill_during_a_burst_loses_no_send);
