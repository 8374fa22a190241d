//! The IMAP layer against the loopback Dovecot: folders, SELECT with CONDSTORE, UID search and
//! fetch, APPEND, and a UIDVALIDITY change made with doveadm.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use herald_mailbox::connect::{Security, ServerSettings};
use herald_mailbox::imap::Session;
use herald_mailbox::parse::parse;
use secrecy::SecretString;

use herald_testdb::mail_env as env;

fn alice() -> ServerSettings {
    ServerSettings {
        host: env("HERALD_TEST_IMAP_HOST"),
        port: env("HERALD_TEST_IMAP_PORT").parse().unwrap(),
        security: Security::Starttls,
        username: "alice@herald.test".into(),
        password: SecretString::from("alice-pass".to_owned()),
        verify_tls: false,
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

/// A folder of its own per test run, so runs and tests never see each other's mail.
fn folder_name(test: &str) -> String {
    format!(
        "herald-{test}-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    )
}

#[tokio::test]
async fn appended_messages_are_listed_and_fetched_by_uid() {
    let mut session = Session::open(&alice()).await.unwrap();
    assert!(session.has("CONDSTORE") && session.has("IDLE"));
    let folder = folder_name("fetch");
    session.create(&folder).await.unwrap();
    for name in [
        "plain.eml",
        "nested-multipart.eml",
        "reply-with-references.eml",
    ] {
        session.append(&folder, None, &fixture(name)).await.unwrap();
    }
    let status = session.select(&folder).await.unwrap();
    assert_eq!((status.exists, status.uid_next), (3, 4));
    assert!(status.highest_modseq.is_some(), "Dovecot offers CONDSTORE");

    assert_eq!(session.uids(1, None).await.unwrap(), vec![1, 2, 3]);
    assert_eq!(session.uids(3, None).await.unwrap(), vec![3]);
    assert!(
        session.uids(4, None).await.unwrap().is_empty(),
        "nothing past UIDNEXT"
    );
    let tomorrow = chrono::Utc::now().date_naive() + chrono::TimeDelta::days(1);
    assert!(
        session.uids(1, Some(tomorrow)).await.unwrap().is_empty(),
        "history window"
    );

    let fetched = session.fetch(&[1, 3]).await.unwrap();
    let ids: Vec<_> = fetched
        .iter()
        .map(|f| (f.uid, parse(&f.raw, 1024).message_id.unwrap()))
        .collect();
    assert_eq!(
        ids,
        [
            (1, "q3-numbers@acme.example".to_owned()),
            (3, "reply-2@herald.test".to_owned())
        ]
    );

    session.delete(&folder).await.unwrap();
    session.logout().await;
}

#[tokio::test]
async fn the_sent_folder_is_found_by_its_special_use() {
    let mut session = Session::open(&alice()).await.unwrap();
    assert_eq!(
        session.sent_folder().await.unwrap().as_deref(),
        Some("Sent")
    );
    session.logout().await;
}

#[tokio::test]
async fn a_uidvalidity_change_is_seen_on_select() {
    let mut session = Session::open(&alice()).await.unwrap();
    let folder = folder_name("uidvalidity");
    session.create(&folder).await.unwrap();
    session
        .append(&folder, None, &fixture("plain.eml"))
        .await
        .unwrap();
    let before = session.select(&folder).await.unwrap().uid_validity;
    session.logout().await;

    let new_value = before.wrapping_add(1000).max(1);
    let doveadm = env("HERALD_TEST_DOVEADM");
    let mut words = doveadm.split_whitespace();
    let status = std::process::Command::new(words.next().unwrap())
        .args(words)
        .args([
            "mailbox",
            "update",
            "--uid-validity",
            &new_value.to_string(),
            "-u",
            "alice@herald.test",
            &folder,
        ])
        .status()
        .unwrap();
    assert!(status.success(), "doveadm mailbox update");

    let mut session = Session::open(&alice()).await.unwrap();
    assert_eq!(
        session.select(&folder).await.unwrap().uid_validity,
        new_value
    );
    session.delete(&folder).await.unwrap();
    session.logout().await;
}
