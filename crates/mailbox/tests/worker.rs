//! The worker's sync rounds against the loopback Dovecot, on both backends: leases keep two
//! workers off one mailbox; repeated authentication failures stop the retries.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use diesel::prelude::*;
use herald_core::config::PlanLimits;
use herald_core::crypto::SecretKey;
use herald_core::domain::Plan;
use herald_core::identity::{Account, NewUser, User};
use herald_mailbox::schema::mailboxes;
use herald_mailbox::worker::{SyncerSettings, round};
use herald_mailbox::{Draft, Mailbox, MailboxInput};
use herald_testdb::{TestDb, backend_tests};

use herald_testdb::mail_env as env;

fn mailbox(test: &TestDb, key: &SecretKey, user: &str, password: &str) -> Mailbox {
    let mut conn = test.connect();
    let account = Account::create(&mut conn, "Worker", Plan::Automation).unwrap();
    let owner = User::create(
        &mut conn,
        account.id,
        &NewUser {
            email: format!("owner@{user}.example.com"),
            name: "Owner".into(),
            role: None,
        },
    )
    .unwrap();
    let input: MailboxInput = serde_json::from_value(serde_json::json!({
        "address": format!("{user}@herald.test"),
        "imap": {"host": env("HERALD_TEST_IMAP_HOST"), "port": env("HERALD_TEST_IMAP_PORT").parse::<u16>().unwrap(),
                 "security": "none", "username": format!("{user}@herald.test"), "password": password},
    }))
    .unwrap();
    // Saved without the connection check: as if the password changed on the server afterwards.
    let draft = Draft::prepare(&mut conn, PlanLimits::default(), &owner, &input).unwrap();
    conn.write(|conn| draft.insert(conn, key, PlanLimits::default(), account.id))
        .unwrap()
}

fn state(test: &TestDb, id: i64) -> (String, i32, Option<String>) {
    mailboxes::table
        .find(id)
        .select((
            mailboxes::state,
            mailboxes::auth_failures,
            mailboxes::last_error,
        ))
        .first(&mut test.connect())
        .unwrap()
}

async fn a_round_syncs_what_it_can_lease(test: TestDb) {
    let key = SecretKey::from_base64(&SecretKey::generate_base64()).unwrap();
    let free = mailbox(&test, &key, "alice", "alice-pass");
    let held = mailbox(&test, &key, "bob", "bob-pass");
    // Another worker holds bob's mailbox right now.
    diesel::update(mailboxes::table.find(held.id))
        .set((
            mailboxes::sync_locked_by.eq("other"),
            mailboxes::sync_locked_until
                .eq(herald_core::time::now() + chrono::TimeDelta::minutes(5)),
        ))
        .execute(&mut test.connect())
        .unwrap();
    let settings = SyncerSettings::default();
    let report = round(&test.db, &key, "me", &settings).await.unwrap();
    assert_eq!(report.synced, vec![free.id]);
    assert!(report.failed.is_empty());
    assert_eq!(state(&test, free.id).0, "synced");
    assert_eq!(
        state(&test, held.id).0,
        "connected",
        "left to the worker holding it"
    );
}

async fn repeated_authentication_failures_stop_the_retries(test: TestDb) {
    let key = SecretKey::from_base64(&SecretKey::generate_base64()).unwrap();
    let broken = mailbox(&test, &key, "carol", "not-her-password");
    let settings = SyncerSettings::default();
    for attempt in 1..=3 {
        let report = round(&test.db, &key, "me", &settings).await.unwrap();
        assert_eq!(report.failed, vec![broken.id], "attempt {attempt}");
    }
    let (status, failures, error) = state(&test, broken.id);
    assert_eq!((status.as_str(), failures), ("auth_failed", 3));
    assert!(error.unwrap().contains("username or password"));
    // No hot retry loop: an auth_failed mailbox is left alone.
    let report = round(&test.db, &key, "me", &settings).await.unwrap();
    assert!(report.failed.is_empty() && report.synced.is_empty());
    // Its owner is told, once.
    let told = herald_core::notifications::Notification::for_user(
        &mut test.connect(),
        broken.owner_id,
        10,
    )
    .unwrap();
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0].kind, "mailbox_auth_failed");
    assert_eq!(told[0].subject_id, Some(broken.id));
    assert!(
        told[0].title.contains("carol@herald.test"),
        "{}",
        told[0].title
    );
}

backend_tests!(
    a_round_syncs_what_it_can_lease,
    repeated_authentication_failures_stop_the_retries
);
