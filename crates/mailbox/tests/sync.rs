//! Sync against the loopback Dovecot, on both backends: first and incremental sync, the Sent
//! folder, the same message in two mailboxes (also at the same moment), a UIDVALIDITY change,
//! resyncs — nothing twice; threads and deal links, within a batch too; the worker's watching
//! tasks (IDLE, sync requests, Dovecot restarted mid-sync).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use diesel::prelude::*;
use herald_core::config::PlanLimits;
use herald_core::crypto::SecretKey;
use herald_core::domain::Plan;
use herald_core::identity::{Account, NewUser, User};
use herald_mailbox::imap::Session;
use herald_mailbox::parse::parse;
use herald_mailbox::schema::{email_copies, emails};
use herald_mailbox::store::{FolderState, Incoming, Role, StoreError, Stored, store_batch};
use herald_mailbox::sync::{SyncOptions, sync_mailbox};
use herald_mailbox::worker::{SyncerSettings, mark_sync_requested, run};
use herald_mailbox::{Draft, Mailbox, MailboxInput};
use herald_testdb::{TestDb, backend_tests};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use herald_testdb::mail_env as env;

struct Fixture {
    test: TestDb,
    key: SecretKey,
    account: Account,
    /// A folder of this test's own, synced as the inbox.
    folder: String,
    tag: String,
}

impl Fixture {
    async fn new(test: TestDb, name: &str) -> Fixture {
        let mut conn = test.connect();
        let account = Account::create(&mut conn, "Sync", Plan::Automation).unwrap();
        let tag = format!(
            "{name}-{}-{}-{}",
            test.backend().as_str(),
            std::process::id(),
            chrono::Utc::now().timestamp_micros()
        );
        let fixture = Fixture {
            key: SecretKey::from_base64(&SecretKey::generate_base64()).unwrap(),
            account,
            folder: format!("herald-{tag}"),
            tag,
            test,
        };
        for user in ["alice", "bob"] {
            let mut session = Session::open(&fixture.settings(user)).await.unwrap();
            session.create(&fixture.folder).await.unwrap();
            session.logout().await;
        }
        fixture
    }

    fn settings(&self, user: &str) -> herald_mailbox::connect::ServerSettings {
        herald_mailbox::connect::ServerSettings {
            host: env("HERALD_TEST_IMAP_HOST"),
            port: env("HERALD_TEST_IMAP_PORT").parse().unwrap(),
            security: herald_mailbox::connect::Security::None,
            username: format!("{user}@herald.test"),
            password: secrecy::SecretString::from(format!("{user}-pass")),
            verify_tls: false,
        }
    }

    /// A "Renewal" deal, and in Bob's folder the first message of its thread
    /// (`first-{tag}@acme.example`), not yet synced.
    async fn renewal_thread(&self) -> herald_core::records::Deal {
        let deal = <herald_core::records::Deal as herald_core::records::Record>::create(
            &mut self.test.connect(),
            self.account.id,
            &serde_json::from_value(serde_json::json!({"title": "Renewal"})).unwrap(),
        )
        .unwrap();
        let tag = &self.tag;
        self.append(
            "bob",
            &self.folder,
            format!("From: ann@acme.example\r\nTo: bob@herald.test\r\nSubject: Renewal\r\nMessage-ID: <first-{tag}@acme.example>\r\n\r\nHi\r\n").as_bytes(),
        )
        .await;
        deal
    }

    fn mailbox(&self, user: &str, sync: &str) -> Mailbox {
        let mut conn = self.test.connect();
        let owner = User::create(
            &mut conn,
            self.account.id,
            &NewUser {
                email: format!("{user}-{}@crm.example", self.tag.len()),
                name: user.into(),
                role: None,
            },
        )
        .or_else(|_| User::find(&mut conn, 0))
        .unwrap();
        let input: MailboxInput = serde_json::from_value(serde_json::json!({
            "address": format!("{user}@herald.test"),
            "imap": {"host": env("HERALD_TEST_IMAP_HOST"), "port": env("HERALD_TEST_IMAP_PORT").parse::<u16>().unwrap(),
                     "security": "none", "username": format!("{user}@herald.test"), "password": format!("{user}-pass")},
            "sync": sync
        }))
        .unwrap();
        let draft = Draft::prepare(&mut conn, PlanLimits::default(), &owner, &input).unwrap();
        conn.write(|conn| draft.insert(conn, &self.key, PlanLimits::default(), self.account.id))
            .unwrap()
    }

    fn options(&self) -> SyncOptions {
        SyncOptions {
            inbox: self.folder.clone(),
            batch: 2,
            ..SyncOptions::default()
        }
    }

    fn message(&self, n: usize, from: &str) -> Vec<u8> {
        format!(
            "From: {from}\r\nTo: bob@herald.test\r\nSubject: Message {n}\r\nDate: Sat, 21 Nov 2026 10:00:00 +0000\r\n\
             Message-ID: <{n}-{}@crm.example>\r\n\r\nBody {n}\r\n",
            self.tag
        )
        .into_bytes()
    }

    async fn append(&self, user: &str, folder: &str, raw: &[u8]) {
        let mut session = Session::open(&self.settings(user)).await.unwrap();
        session.append(folder, None, raw).await.unwrap();
        session.logout().await;
    }

    fn count(&self, n: usize) -> i64 {
        emails::table
            .filter(emails::message_id.eq(format!("{n}-{}@crm.example", self.tag)))
            .count()
            .get_result(&mut self.test.connect())
            .unwrap()
    }

    async fn cleanup(&self) {
        for user in ["alice", "bob"] {
            let mut session = Session::open(&self.settings(user)).await.unwrap();
            let _ = session.delete(&self.folder).await;
            session.logout().await;
        }
    }
}

async fn first_and_incremental_syncs_store_each_message_once(test: TestDb) {
    let f = Fixture::new(test, "incremental").await;
    let mailbox = f.mailbox("bob", "received");
    for n in 1..=3 {
        f.append("bob", &f.folder, &f.message(n, "Ann <ann@acme.example>"))
            .await;
    }
    let report = sync_mailbox(&f.test.db, &f.key, mailbox.id, &f.options())
        .await
        .unwrap();
    assert_eq!((report.fetched, report.new), (3, 3));
    let again = sync_mailbox(&f.test.db, &f.key, mailbox.id, &f.options())
        .await
        .unwrap();
    assert_eq!(again.fetched, 0, "a resync fetches nothing new: {again:?}");
    f.append("bob", &f.folder, &f.message(4, "Ann <ann@acme.example>"))
        .await;
    let next = sync_mailbox(&f.test.db, &f.key, mailbox.id, &f.options())
        .await
        .unwrap();
    assert_eq!((next.fetched, next.new), (1, 1));
    for n in 1..=4 {
        assert_eq!(f.count(n), 1, "message {n}");
    }
    let stored: (String, String, String) = emails::table
        .filter(emails::message_id.eq(format!("1-{}@crm.example", f.tag)))
        .select((emails::direction, emails::status, emails::author))
        .first(&mut f.test.connect())
        .unwrap();
    assert_eq!(
        stored,
        ("inbound".into(), "received".into(), "contact".into())
    );
    let state: String = herald_mailbox::schema::mailboxes::table
        .find(mailbox.id)
        .select(herald_mailbox::schema::mailboxes::state)
        .first(&mut f.test.connect())
        .unwrap();
    assert_eq!(state, "synced");
    f.cleanup().await;
}

async fn the_same_message_in_two_mailboxes_is_one_email(test: TestDb) {
    let f = Fixture::new(test, "two-mailboxes").await;
    let alice = f.mailbox("alice", "received");
    let bob = f.mailbox("bob", "received");
    let raw = f.message(1, "Ann <ann@acme.example>");
    f.append("alice", &f.folder, &raw).await;
    f.append("bob", &f.folder, &raw).await;
    let first = sync_mailbox(&f.test.db, &f.key, alice.id, &f.options())
        .await
        .unwrap();
    let second = sync_mailbox(&f.test.db, &f.key, bob.id, &f.options())
        .await
        .unwrap();
    assert_eq!((first.new, second.new, second.known), (1, 0, 1));
    assert_eq!(f.count(1), 1);
    let copies: i64 = email_copies::table
        .count()
        .get_result(&mut f.test.connect())
        .unwrap();
    assert_eq!(copies, 2, "one copy per mailbox");
    f.cleanup().await;
}

async fn a_uidvalidity_change_stores_nothing_twice(test: TestDb) {
    let f = Fixture::new(test, "uidvalidity").await;
    let mailbox = f.mailbox("bob", "received");
    for n in 1..=2 {
        f.append("bob", &f.folder, &f.message(n, "ann@acme.example"))
            .await;
    }
    sync_mailbox(&f.test.db, &f.key, mailbox.id, &f.options())
        .await
        .unwrap();
    let doveadm = env("HERALD_TEST_DOVEADM");
    let mut words = doveadm.split_whitespace();
    let status = std::process::Command::new(words.next().unwrap())
        .args(words)
        .args([
            "mailbox",
            "update",
            "--uid-validity",
            "4242",
            "-u",
            "bob@herald.test",
            &f.folder,
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let after = sync_mailbox(&f.test.db, &f.key, mailbox.id, &f.options())
        .await
        .unwrap();
    assert_eq!(
        (after.fetched, after.new, after.known),
        (2, 0, 2),
        "re-read, recognised: {after:?}"
    );
    assert_eq!((f.count(1), f.count(2)), (1, 1));
    f.cleanup().await;
}

async fn mail_in_the_sent_folder_is_sent_mail(test: TestDb) {
    let f = Fixture::new(test, "sent").await;
    let mailbox = f.mailbox("bob", "received_and_sent");
    // Bob sent it from another mail client.
    f.append("bob", "Sent", &f.message(1, "Bob <bob@herald.test>"))
        .await;
    let report = sync_mailbox(&f.test.db, &f.key, mailbox.id, &f.options())
        .await
        .unwrap();
    assert!(report.new >= 1, "{report:?}");
    let stored: (String, String, String) = emails::table
        .filter(emails::message_id.eq(format!("1-{}@crm.example", f.tag)))
        .select((emails::direction, emails::status, emails::author))
        .first(&mut f.test.connect())
        .unwrap();
    assert_eq!(stored, ("outbound".into(), "sent".into(), "user".into()));
    f.cleanup().await;
}

async fn replies_join_their_thread(test: TestDb) {
    let f = Fixture::new(test, "threads").await;
    let mailbox = f.mailbox("bob", "received");
    let tag = &f.tag;
    let messages = [
        format!(
            "From: ann@acme.example\r\nTo: bob@herald.test\r\nSubject: Quarterly numbers\r\nMessage-ID: <root-{tag}@acme.example>\r\n\r\nNumbers\r\n"
        ),
        format!(
            "From: bob@herald.test\r\nTo: ann@acme.example\r\nSubject: Re: Quarterly numbers\r\nMessage-ID: <reply-{tag}@herald.test>\r\n\
             In-Reply-To: <root-{tag}@acme.example>\r\nReferences: <root-{tag}@acme.example>\r\n\r\nThanks\r\n"
        ),
        // No threading headers (some clients drop them): the subject and a shared participant do.
        format!(
            "From: ann@acme.example\r\nTo: bob@herald.test\r\nSubject: RE: RE:  quarterly   numbers\r\nMessage-ID: <again-{tag}@acme.example>\r\n\r\nMore\r\n"
        ),
        // Same words, not a reply, other people: a thread of its own.
        format!(
            "From: carol@other.example\r\nTo: bob@herald.test\r\nSubject: Quarterly numbers\r\nMessage-ID: <other-{tag}@other.example>\r\n\r\nMine\r\n"
        ),
    ];
    for raw in &messages {
        f.append("bob", &f.folder, raw.as_bytes()).await;
    }
    sync_mailbox(&f.test.db, &f.key, mailbox.id, &f.options())
        .await
        .unwrap();
    let thread = |prefix: &str| -> i64 {
        emails::table
            .filter(emails::message_id.like(format!("{prefix}-{tag}@%")))
            .select(emails::thread_id)
            .first::<Option<i64>>(&mut f.test.connect())
            .unwrap()
            .unwrap()
    };
    let root = thread("root");
    assert_eq!(thread("reply"), root, "In-Reply-To");
    assert_eq!(thread("again"), root, "subject fallback");
    assert_ne!(thread("other"), root, "unrelated");
    f.cleanup().await;
}

async fn replies_join_the_deals_of_their_thread(test: TestDb) {
    let f = Fixture::new(test, "deal-threads").await;
    let mailbox = f.mailbox("bob", "received");
    let tag = &f.tag;
    let mut conn = f.test.connect();
    let deal = f.renewal_thread().await;
    sync_mailbox(&f.test.db, &f.key, mailbox.id, &f.options())
        .await
        .unwrap();
    let first: i64 = emails::table
        .filter(emails::message_id.eq(format!("first-{tag}@acme.example")))
        .select(emails::id)
        .first(&mut conn)
        .unwrap();
    // As if it had been sent from the deal.
    herald_mailbox::store::link_deal(&mut conn, f.account.id, first, deal.id).unwrap();
    for (name, headers) in [
        (
            "reply",
            format!("In-Reply-To: <first-{tag}@acme.example>\r\n"),
        ),
        ("unrelated", String::new()),
    ] {
        f.append(
            "bob",
            &f.folder,
            format!("From: ann@acme.example\r\nTo: bob@herald.test\r\nSubject: {name}\r\nMessage-ID: <{name}-{tag}@acme.example>\r\n{headers}\r\nText\r\n").as_bytes(),
        )
        .await;
    }
    sync_mailbox(&f.test.db, &f.key, mailbox.id, &f.options())
        .await
        .unwrap();
    let owner = User::find(&mut conn, mailbox.owner_id).unwrap();
    let on_deal = herald_mailbox::emails::list(
        &mut conn,
        &owner,
        &herald_mailbox::emails::EmailFilter {
            record: Some((herald_core::records::RecordKind::Deal, deal.id)),
            ..Default::default()
        },
        herald_core::pagination::PageRequest::first(50),
    )
    .unwrap();
    let ids: Vec<_> = on_deal
        .items
        .iter()
        .map(|e| e.message_id.clone().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![
            format!("reply-{tag}@acme.example"),
            format!("first-{tag}@acme.example")
        ],
        "newest first, the unrelated email is not on the deal"
    );
    f.cleanup().await;
}

/// A batch whose messages reply to each other is threaded as if they came one by one: the
/// batch's own earlier messages are found by In-Reply-To and by subject, a duplicate is one
/// email, and replies joining an older thread (directly or through a reply in the same batch)
/// inherit its deal.
async fn a_batch_threads_replies_to_its_own_messages(test: TestDb) {
    let f = Fixture::new(test, "one-batch").await;
    let mailbox = f.mailbox("bob", "received");
    let tag = &f.tag;
    let mut conn = f.test.connect();
    let deal = f.renewal_thread().await;
    let options = SyncOptions {
        batch: 10,
        ..f.options()
    };
    sync_mailbox(&f.test.db, &f.key, mailbox.id, &options)
        .await
        .unwrap();
    let id = |prefix: &str| -> (i64, Option<i64>) {
        emails::table
            .filter(emails::message_id.like(format!("{prefix}-{tag}@%")))
            .select((emails::id, emails::thread_id))
            .first(&mut f.test.connect())
            .unwrap()
    };
    herald_mailbox::store::link_deal(&mut conn, f.account.id, id("first").0, deal.id).unwrap();
    let messages = [
        format!(
            "From: ann@acme.example\r\nTo: bob@herald.test\r\nSubject: Quarterly numbers\r\nMessage-ID: <root-{tag}@acme.example>\r\n\r\nNumbers\r\n"
        ),
        format!(
            "From: bob@herald.test\r\nTo: ann@acme.example\r\nSubject: Re: Quarterly numbers\r\nMessage-ID: <reply-{tag}@herald.test>\r\n\
             In-Reply-To: <root-{tag}@acme.example>\r\n\r\nThanks\r\n"
        ),
        format!(
            "From: ann@acme.example\r\nTo: bob@herald.test\r\nSubject: RE: quarterly numbers\r\nMessage-ID: <again-{tag}@acme.example>\r\n\r\nMore\r\n"
        ),
        // The same message again, as a second delivery: one email, two copies.
        format!(
            "From: ann@acme.example\r\nTo: bob@herald.test\r\nSubject: Quarterly numbers\r\nMessage-ID: <root-{tag}@acme.example>\r\n\r\nNumbers\r\n\r\n"
        ),
        format!(
            "From: ann@acme.example\r\nTo: bob@herald.test\r\nSubject: Re: Renewal\r\nMessage-ID: <onrenewal-{tag}@acme.example>\r\n\
             In-Reply-To: <first-{tag}@acme.example>\r\n\r\nSigned\r\n"
        ),
        format!(
            "From: bob@herald.test\r\nTo: ann@acme.example\r\nSubject: Re: Renewal\r\nMessage-ID: <thanks-{tag}@herald.test>\r\n\
             In-Reply-To: <onrenewal-{tag}@acme.example>\r\n\r\nGreat\r\n"
        ),
    ];
    for raw in &messages {
        f.append("bob", &f.folder, raw.as_bytes()).await;
    }
    let report = sync_mailbox(&f.test.db, &f.key, mailbox.id, &options)
        .await
        .unwrap();
    assert_eq!(
        (report.fetched, report.new, report.known, report.seen),
        (6, 5, 1, 0),
        "{report:?}"
    );
    let (root, root_thread) = id("root");
    assert_eq!(root_thread, Some(root), "a thread of its own");
    assert_eq!(id("reply").1, Some(root), "In-Reply-To, same batch");
    assert_eq!(id("again").1, Some(root), "subject fallback, same batch");
    let first = id("first");
    assert_eq!(id("onrenewal").1, first.1, "an older thread");
    assert_eq!(id("thanks").1, first.1, "through a reply of the same batch");
    let mut on_deal: Vec<i64> = herald_mailbox::schema::email_deals::table
        .filter(herald_mailbox::schema::email_deals::deal_id.eq(deal.id))
        .select(herald_mailbox::schema::email_deals::email_id)
        .load(&mut conn)
        .unwrap();
    on_deal.sort_unstable();
    assert_eq!(on_deal, vec![first.0, id("onrenewal").0, id("thanks").0]);
    // Forgotten positions: every copy is recognised, nothing is stored again.
    herald_mailbox::store::FolderState::reset(&mut conn, mailbox.id).unwrap();
    let again = sync_mailbox(&f.test.db, &f.key, mailbox.id, &options)
        .await
        .unwrap();
    assert_eq!(
        (again.fetched, again.new, again.known, again.seen),
        (7, 0, 0, 7),
        "{again:?}"
    );
    f.cleanup().await;
}

/// Two mailboxes store the same message at the same moment: the second waits for the first's
/// transaction (PostgreSQL's unique key, SQLite's write lock), finds the email stored, and only
/// adds its copy; its reply in the same batch joins that email's thread.
async fn a_message_stored_by_another_mailbox_at_the_same_moment_is_known(test: TestDb) {
    let f = Fixture::new(test, "same-moment").await;
    let alice = f.mailbox("alice", "received");
    let bob = f.mailbox("bob", "received");
    let tag = &f.tag;
    let root = f.message(1, "Ann <ann@acme.example>");
    let reply = format!(
        "From: ann@acme.example\r\nTo: bob@herald.test\r\nSubject: Re: Message 1\r\nMessage-ID: <2-{tag}@crm.example>\r\n\
         In-Reply-To: <1-{tag}@crm.example>\r\n\r\nReply\r\n"
    )
    .into_bytes();
    let (parsed_root, parsed_reply) = (parse(&root, 1 << 20), parse(&reply, 1 << 20));
    let position = FolderState {
        folder: f.folder.clone(),
        uid_validity: 1,
        uid_next: 9,
        highest_modseq: None,
    };
    let alone = [Incoming {
        uid: 1,
        raw: &root,
        parsed: &parsed_root,
    }];
    let with_reply = [
        Incoming {
            uid: 7,
            raw: &root,
            parsed: &parsed_root,
        },
        Incoming {
            uid: 8,
            raw: &reply,
            parsed: &parsed_reply,
        },
    ];
    let (inserted, wait) = std::sync::mpsc::channel();
    let (first, second) = std::thread::scope(|s| {
        let first = s.spawn(|| {
            f.test
                .connect()
                .write(|conn| {
                    let stored = store_batch(conn, &alice, Role::Inbox, &position, &alone, &[])?;
                    inserted.send(()).unwrap();
                    // Uncommitted while the other mailbox stores the same message.
                    std::thread::sleep(Duration::from_millis(500));
                    Ok::<_, StoreError>(stored)
                })
                .unwrap()
        });
        wait.recv().unwrap();
        let second = store_batch(
            &mut f.test.connect(),
            &bob,
            Role::Inbox,
            &position,
            &with_reply,
            &[],
        )
        .unwrap();
        (first.join().unwrap(), second)
    });
    let [Stored::New(email)] = first[..] else {
        panic!("{first:?}")
    };
    let [Stored::Known(known), Stored::New(answer)] = second[..] else {
        panic!("{second:?}")
    };
    assert_eq!(known, email);
    let thread: Option<i64> = emails::table
        .find(answer)
        .select(emails::thread_id)
        .first(&mut f.test.connect())
        .unwrap();
    assert_eq!(
        thread,
        Some(email),
        "the reply joins the email the other mailbox stored"
    );
    assert_eq!((f.count(1), f.count(2)), (1, 1));
    let copies: i64 = email_copies::table
        .count()
        .get_result(&mut f.test.connect())
        .unwrap();
    assert_eq!(copies, 3);
    f.cleanup().await;
}

/// Two mailboxes of the account holding the same mail sync at once: each message is one email,
/// with a copy per mailbox, and replies sit in their parents' threads.
async fn two_mailboxes_syncing_the_same_mail_at_once_store_it_once(test: TestDb) {
    let f = Fixture::new(test, "at-once").await;
    let alice = f.mailbox("alice", "received");
    let bob = f.mailbox("bob", "received");
    const MESSAGES: usize = 24;
    let tag = &f.tag;
    for n in 1..=MESSAGES {
        // Every even message replies to the one before it.
        let raw = if n % 2 == 0 {
            format!(
                "From: ann@acme.example\r\nTo: bob@herald.test\r\nSubject: Re: Message {}\r\nMessage-ID: <{n}-{tag}@crm.example>\r\n\
                 In-Reply-To: <{}-{tag}@crm.example>\r\n\r\nReply {n}\r\n",
                n - 1,
                n - 1
            )
            .into_bytes()
        } else {
            f.message(n, "Ann <ann@acme.example>")
        };
        f.append("alice", &f.folder, &raw).await;
        f.append("bob", &f.folder, &raw).await;
    }
    let options = SyncOptions {
        batch: 5,
        ..f.options()
    };
    let (a, b) = tokio::join!(
        sync_mailbox(&f.test.db, &f.key, alice.id, &options),
        sync_mailbox(&f.test.db, &f.key, bob.id, &options)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.new + b.new, MESSAGES, "{a:?} {b:?}");
    assert_eq!(a.known + b.known, MESSAGES, "{a:?} {b:?}");
    for n in 1..=MESSAGES {
        assert_eq!(f.count(n), 1, "message {n}");
    }
    let copies: i64 = email_copies::table
        .count()
        .get_result(&mut f.test.connect())
        .unwrap();
    assert_eq!(copies, 2 * MESSAGES as i64, "one copy per mailbox");
    let thread = |n: usize| -> Option<i64> {
        emails::table
            .filter(emails::message_id.eq(format!("{n}-{tag}@crm.example")))
            .select(emails::thread_id)
            .first(&mut f.test.connect())
            .unwrap()
    };
    for n in (2..=MESSAGES).step_by(2) {
        assert_eq!(thread(n), thread(n - 1), "reply {n}");
    }
    f.cleanup().await;
}

/// A watcher that only IDLE or a request can bring new mail to in time (no polling).
fn watcher(f: &Fixture, options: SyncOptions) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let settings = SyncerSettings {
        interval: Duration::from_secs(3600),
        tick: Duration::from_millis(100),
        min_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(1),
        options,
        ..SyncerSettings::default()
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(
        f.test.db.clone(),
        f.key.clone(),
        settings,
        shutdown.clone(),
    ));
    (shutdown, task)
}

/// Waits up to 60 seconds for `check` (a bound for a stuck test, not a speed target).
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..600 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("gave up waiting for {what}");
}

fn mailbox_state(f: &Fixture, id: i64) -> (String, Option<String>) {
    herald_mailbox::schema::mailboxes::table
        .find(id)
        .select((
            herald_mailbox::schema::mailboxes::state,
            herald_mailbox::schema::mailboxes::sync_locked_by,
        ))
        .first(&mut f.test.connect())
        .unwrap()
}

async fn the_watcher_picks_up_new_mail_with_idle(test: TestDb) {
    let f = Fixture::new(test, "idle").await;
    let mailbox = f.mailbox("bob", "received");
    f.append("bob", &f.folder, &f.message(1, "ann@acme.example"))
        .await;
    let (shutdown, task) = watcher(&f, f.options());
    eventually("the first pass", || f.count(1) == 1).await;
    for n in 2..=3 {
        f.append("bob", &f.folder, &f.message(n, "ann@acme.example"))
            .await;
        eventually(&format!("IDLE to bring message {n}"), || f.count(n) == 1).await;
    }
    shutdown.cancel();
    task.await.unwrap();
    assert_eq!(
        mailbox_state(&f, mailbox.id),
        ("synced".into(), None),
        "the lease is released at shutdown"
    );
    f.cleanup().await;
}

async fn a_sync_asked_for_reaches_the_watching_worker(test: TestDb) {
    let f = Fixture::new(test, "requested").await;
    let mailbox = f.mailbox("bob", "received_and_sent");
    f.append("bob", &f.folder, &f.message(1, "ann@acme.example"))
        .await;
    let (shutdown, task) = watcher(&f, f.options());
    eventually("the first pass", || f.count(1) == 1).await;
    // In the Sent folder, which IDLE on the inbox does not watch.
    f.append("bob", "Sent", &f.message(2, "Bob <bob@herald.test>"))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        f.count(2),
        0,
        "nothing syncs the Sent folder before the interval"
    );
    mark_sync_requested(&mut f.test.connect(), mailbox.id).unwrap();
    eventually("the requested pass", || f.count(2) == 1).await;
    shutdown.cancel();
    task.await.unwrap();
    f.cleanup().await;
}

/// Stops or starts the loopback Dovecot (the test runs alone: see .config/nextest.toml).
fn dovecot(start: bool) {
    // To a file, not a pipe: the Dovecot it starts would hold the test's output open.
    let log_path = format!("{}/log/restart-test.log", env("HERALD_TEST_MAIL_STATE_DIR"));
    let log = std::fs::File::create(&log_path).unwrap();
    let status = std::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/mail-servers.sh"
    ))
    .args([
        if start { "start" } else { "stop-dovecot" },
        &env("HERALD_TEST_MAIL_STATE_DIR"),
    ])
    .stdout(std::process::Stdio::null())
    .stderr(log)
    .status()
    .unwrap();
    assert!(
        status.success(),
        "dovecot start={start}: {status}\n{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
}

async fn dovecot_restart_mid_sync_loses_nothing_and_stores_nothing_twice(test: TestDb) {
    let f = Fixture::new(test, "restart").await;
    let mailbox = f.mailbox("bob", "received");
    const MESSAGES: usize = 40;
    for n in 1..=MESSAGES {
        f.append("bob", &f.folder, &f.message(n, "ann@acme.example"))
            .await;
    }
    let stopped = Arc::new(AtomicBool::new(false));
    let options = SyncOptions {
        batch: 4,
        progress: Some(Arc::new({
            let stopped = stopped.clone();
            move |p: &herald_mailbox::sync::Progress| {
                if p.done >= 8 && !stopped.swap(true, Ordering::SeqCst) {
                    dovecot(false);
                }
            }
        })),
        ..f.options()
    };
    let (shutdown, task) = watcher(&f, options);
    eventually("the failed pass to be recorded", || {
        mailbox_state(&f, mailbox.id).0 == "error"
    })
    .await;
    let stored = (1..=MESSAGES).filter(|n| f.count(*n) == 1).count();
    assert!(
        (8..MESSAGES).contains(&stored),
        "cut mid-sync after the second batch: {stored}"
    );
    dovecot(true);
    eventually("the reconnected pass", || {
        (1..=MESSAGES).all(|n| f.count(n) == 1)
    })
    .await;
    let copies: i64 = email_copies::table
        .filter(email_copies::mailbox_id.eq(mailbox.id))
        .count()
        .get_result(&mut f.test.connect())
        .unwrap();
    assert_eq!(copies, MESSAGES as i64, "each message stored once");
    eventually("the mailbox to be synced", || {
        mailbox_state(&f, mailbox.id).0 == "synced"
    })
    .await;
    shutdown.cancel();
    task.await.unwrap();
    f.cleanup().await;
}

backend_tests!(
    the_watcher_picks_up_new_mail_with_idle,
    a_sync_asked_for_reaches_the_watching_worker,
    dovecot_restart_mid_sync_loses_nothing_and_stores_nothing_twice,
    replies_join_their_thread,
    replies_join_the_deals_of_their_thread,
    first_and_incremental_syncs_store_each_message_once,
    the_same_message_in_two_mailboxes_is_one_email,
    a_batch_threads_replies_to_its_own_messages,
    a_message_stored_by_another_mailbox_at_the_same_moment_is_known,
    two_mailboxes_syncing_the_same_mail_at_once_store_it_once,
    a_uidvalidity_change_stores_nothing_twice,
    mail_in_the_sent_folder_is_sent_mail,
);
