//! The job registry runs the domain jobs: a requested mailbox sync against the loopback Dovecot,
//! on both backends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use diesel::prelude::*;
use herald_core::config::PlanLimits;
use herald_core::crypto::SecretKey;
use herald_core::domain::Plan;
use herald_core::identity::{Account, NewUser, User};
use herald_mailbox::{Draft, MailboxInput};
use herald_runtime::{JobContext, job_runner};
use herald_scheduler::QueueWaker;
use herald_testdb::{TestDb, backend_tests};

use herald_testdb::mail_env as env;

async fn a_requested_sync_runs_in_the_worker(test: TestDb) {
    let key = SecretKey::from_base64(&SecretKey::generate_base64()).unwrap();
    let mut conn = test.connect();
    let account = Account::create(&mut conn, "Jobs", Plan::Base).unwrap();
    let owner = User::create(
        &mut conn,
        account.id,
        &NewUser {
            email: "owner@jobs.example.com".into(),
            name: "Owner".into(),
            role: None,
        },
    )
    .unwrap();
    let input: MailboxInput = serde_json::from_value(serde_json::json!({
        "address": "alice@herald.test",
        "imap": {"host": env("HERALD_TEST_IMAP_HOST"), "port": env("HERALD_TEST_IMAP_PORT").parse::<u16>().unwrap(),
                 "security": "none", "username": "alice@herald.test", "password": "alice-pass"},
    }))
    .unwrap();
    let draft = Draft::prepare(&mut conn, PlanLimits::default(), &owner, &input).unwrap();
    let mailbox = conn
        .write(|conn| draft.insert(conn, &key, PlanLimits::default(), account.id))
        .unwrap();
    conn.write(|conn| herald_mailbox::worker::request_sync(conn, &owner, mailbox.id))
        .unwrap();

    let context = JobContext::new(
        test.db.clone(),
        Arc::new(herald_core::Config::default()),
        key,
        QueueWaker::new(),
    );
    let stats = job_runner(context).run_until_empty().await;
    assert_eq!((stats.succeeded, stats.dead), (1, 0));
    let state: String = herald_mailbox::schema::mailboxes::table
        .find(mailbox.id)
        .select(herald_mailbox::schema::mailboxes::state)
        .first(&mut conn)
        .unwrap();
    assert_eq!(state, "synced");
}

backend_tests!(a_requested_sync_runs_in_the_worker);
