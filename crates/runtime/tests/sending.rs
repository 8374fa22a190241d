//! Sending through the job runner against real servers, on both backends: the full loop through
//! Postfix into Dovecot with the Sent copy synced back once; Postfix's smtp-sink playing servers
//! that answer 4xx or 5xx; retry, schedule, reschedule, cancel, send now and their refusals; a
//! scheduled reply cancelled when the contact writes first; SMTP sessions kept between sends
//! and replaced when the server dropped them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;
use herald_core::config::PlanLimits;
use herald_core::crypto::SecretKey;
use herald_core::domain::Plan;
use herald_core::identity::{Account, NewUser, User};
use herald_core::records::{Person, Record, RecordKind};
use herald_mailbox::emails::{EmailFilter, EmailView};
use herald_mailbox::imap::Session;
use herald_mailbox::outbox::{self, ComposeInput};
use herald_mailbox::schema::{email_copies, emails};
use herald_mailbox::sync::{SyncOptions, sync_mailbox};
use herald_mailbox::{Draft, Mailbox, MailboxInput};
use herald_runtime::{JobContext, job_runner};
use herald_scheduler::QueueWaker;
use herald_testdb::{SmtpSink as Sink, TestDb, backend_tests};
use serde_json::json;

use herald_testdb::mail_env as env;

struct Env {
    test: TestDb,
    key: SecretKey,
    user: User,
    person: Person,
    tag: String,
}

impl Env {
    fn new(test: TestDb, name: &str) -> Env {
        let mut conn = test.connect();
        let account = Account::create(&mut conn, "Sending", Plan::Automation).unwrap();
        let user = User::create(
            &mut conn,
            account.id,
            &NewUser {
                email: "owner@sending.example.com".into(),
                name: "Alice Owner".into(),
                role: None,
            },
        )
        .unwrap();
        let person = <Person as Record>::create(
            &mut conn,
            account.id,
            &serde_json::from_value(json!({"first_name": "Bob", "last_name": "Contact",
                "emails": ["bob@herald.test"]}))
            .unwrap(),
        )
        .unwrap();
        let tag = format!(
            "{name}-{}-{}-{}",
            test.backend().as_str(),
            std::process::id(),
            chrono::Utc::now().timestamp_micros()
        );
        Env {
            key: SecretKey::from_base64(&SecretKey::generate_base64()).unwrap(),
            test,
            user,
            person,
            tag,
        }
    }

    /// Alice's mailbox, sending through `smtp` (host, port, security); saved without the check.
    fn mailbox(&self, smtp: (String, u16, &str), save_sent_copy: bool) -> Mailbox {
        let mut conn = self.test.connect();
        let input: MailboxInput = serde_json::from_value(json!({
            "address": "alice@herald.test",
            "display_name": "Alice at Herald",
            "imap": {"host": env("HERALD_TEST_IMAP_HOST"), "port": env("HERALD_TEST_IMAP_PORT").parse::<u16>().unwrap(),
                     "security": "none", "username": "alice@herald.test", "password": "alice-pass"},
            "smtp": {"host": smtp.0, "port": smtp.1, "security": smtp.2,
                     "username": "alice@herald.test", "password": "alice-pass"},
            "sending_enabled": true,
            "sync": "received_and_sent",
            "save_sent_copy": save_sent_copy,
            "verify_tls": false
        }))
        .unwrap();
        let draft = Draft::prepare(&mut conn, PlanLimits::default(), &self.user, &input).unwrap();
        conn.write(|conn| {
            draft.insert(conn, &self.key, PlanLimits::default(), self.user.account_id)
        })
        .unwrap()
    }

    fn sink_mailbox(&self, sink: &Sink) -> Mailbox {
        self.mailbox(("127.0.0.1".into(), sink.port, "none"), false)
    }

    fn compose(&self, extra: serde_json::Value) -> Result<EmailView, herald_mailbox::MailboxError> {
        let mut input = json!({
            "record": {"type": "person", "id": self.person.id},
            "subject": format!("Offer {}", self.tag),
            "text": "Hello Bob",
            "html": "<p>Hello <b>Bob</b></p>",
        });
        input
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let input: ComposeInput = serde_json::from_value(input).unwrap();
        let engine = herald_templates::Engine::default();
        self.test
            .connect()
            .write(|conn| outbox::compose(conn, &engine, &self.user, &input, None))
    }

    fn email(&self, id: i64) -> EmailView {
        herald_mailbox::emails::find(&mut self.test.connect(), &self.user, id).unwrap()
    }

    /// Runs every due job; retries come back after a second (`mail.send_retry_secs`).
    async fn work(&self) {
        let mut config = herald_core::Config::default();
        config.mail.send_retry_secs = 1;
        self.work_with(config).await;
    }

    async fn work_with(&self, config: herald_core::Config) {
        let context = JobContext::new(
            self.test.db.clone(),
            Arc::new(config),
            self.key.clone(),
            QueueWaker::new(),
        );
        job_runner(context).run_until_empty().await;
    }

    /// Works until `id` has `status` (retries are a second apart), at most 30 seconds.
    async fn work_until(&self, id: i64, status: &str) -> EmailView {
        for _ in 0..60 {
            self.work().await;
            let email = self.email(id);
            if email.status == status {
                return email;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("email {id} never became {status}: {:?}", self.email(id));
    }
}

fn doveadm_finds(user: &str, folder: &str, message_id: &str) -> bool {
    let doveadm = env("HERALD_TEST_DOVEADM");
    let mut words = doveadm.split_whitespace();
    let out = Command::new(words.next().unwrap())
        .args(words)
        .args([
            "search",
            "-u",
            user,
            "mailbox",
            folder,
            "header",
            "message-id",
            message_id,
        ])
        .output()
        .unwrap();
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

async fn an_email_goes_through_the_mta_and_its_sent_copy_syncs_back_once(test: TestDb) {
    let env_ = Env::new(test, "loop");
    let mailbox = env_.mailbox(
        (
            env("HERALD_TEST_SMTP_HOST"),
            env("HERALD_TEST_SUBMISSION_PORT").parse().unwrap(),
            "starttls",
        ),
        true,
    );
    let email = env_.compose(json!({})).unwrap();
    assert_eq!(email.status, "sending");
    // On the person's timeline at once.
    let listed = herald_mailbox::emails::list(
        &mut env_.test.connect(),
        &env_.user,
        &EmailFilter {
            record: Some((RecordKind::Person, env_.person.id)),
            ..EmailFilter::default()
        },
        herald_core::pagination::PageRequest::first(10),
    )
    .unwrap();
    assert_eq!(listed.items[0].id, email.id);
    assert_eq!(listed.items[0].status, "sending");

    let sent = env_.work_until(email.id, "sent").await;
    assert!(sent.sent_at.is_some());
    // The sent copy's APPEND is a job of its own, queued with the outcome.
    env_.work().await;
    let message_id = sent.message_id.clone().unwrap();
    assert!(message_id.ends_with("@herald.test"), "{message_id}");
    // Postfix delivers to Dovecot over LMTP, in its own time.
    for _ in 0..100 {
        if doveadm_finds("bob@herald.test", "INBOX", &message_id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        doveadm_finds("bob@herald.test", "INBOX", &message_id),
        "delivered to bob"
    );
    assert!(
        doveadm_finds("alice@herald.test", "Sent", &message_id),
        "the sent copy was appended"
    );
    // The next sync of Alice's Sent folder recognises it: still one email, now with a copy.
    let folder = format!("herald-{}", env_.tag);
    let mut session = Session::open(&mailbox.imap_settings(&env_.key).unwrap())
        .await
        .unwrap();
    session.create(&folder).await.unwrap();
    let report = sync_mailbox(
        &env_.test.db,
        &env_.key,
        mailbox.id,
        &SyncOptions {
            inbox: folder.clone(),
            history: Some(chrono::TimeDelta::days(1)),
            ..SyncOptions::default()
        },
    )
    .await
    .unwrap();
    session.delete(&folder).await.unwrap();
    session.logout().await;
    assert!(report.known >= 1, "{report:?}");
    let mut conn = env_.test.connect();
    let stored: i64 = emails::table
        .filter(emails::message_id.eq(&message_id))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(stored, 1, "the sent copy is not a second email");
    let copies: i64 = email_copies::table
        .filter(email_copies::email_id.eq(email.id))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(copies, 1);
    assert_eq!(env_.email(email.id).status, "sent");
}

async fn a_temporary_failure_is_retried_until_it_goes_through(test: TestDb) {
    let env_ = Env::new(test, "temporary");
    let refusing = Sink::start(None, &["-r", "rcpt"]);
    env_.sink_mailbox(&refusing);
    let email = env_.compose(json!({})).unwrap();
    env_.work().await;
    let waiting = env_.email(email.id);
    assert_eq!(waiting.status, "sending", "{waiting:?}");
    let reason = waiting.failure_reason.unwrap();
    assert!(
        reason.contains("will try again") && reason.contains("45"),
        "{reason}"
    );
    let port = refusing.port;
    drop(refusing);
    let accepting = Sink::start(Some(port), &[]);
    let sent = env_.work_until(email.id, "sent").await;
    assert_eq!(sent.send_attempts, Some(2));
    assert_eq!(sent.failure_reason, None);
    assert_eq!(accepting.received(&sent.message_id.unwrap()), 1);
}

async fn a_permanent_failure_fails_at_once_and_a_retry_really_sends(test: TestDb) {
    let env_ = Env::new(test, "permanent");
    let refusing = Sink::start(None, &["-f", "rcpt"]);
    env_.sink_mailbox(&refusing);
    let email = env_.compose(json!({})).unwrap();
    let failed = env_.work_until(email.id, "failed").await;
    assert_eq!(failed.send_attempts, Some(1), "no retry of a 5xx");
    let reason = failed.failure_reason.unwrap();
    assert!(
        reason.contains("refused it") && reason.contains("5"),
        "{reason}"
    );
    let port = refusing.port;
    drop(refusing);
    let accepting = Sink::start(Some(port), &[]);
    let retried = outbox::retry(&mut env_.test.connect(), &env_.user, email.id).unwrap();
    assert_eq!(retried.status, "sending");
    let sent = env_.work_until(email.id, "sent").await;
    assert_eq!(accepting.received(&sent.message_id.unwrap()), 1);
    // Only failed emails are retried.
    let again = outbox::retry(&mut env_.test.connect(), &env_.user, email.id).unwrap_err();
    assert!(matches!(
        again,
        herald_core::CoreError::Conflict {
            code: "invalid_email_status",
            ..
        }
    ));
}

async fn scheduled_emails_wait_and_can_be_rescheduled_cancelled_or_sent_now(test: TestDb) {
    let env_ = Env::new(test, "schedule");
    let sink = Sink::start(None, &[]);
    env_.sink_mailbox(&sink);
    let later = (chrono::Utc::now() + chrono::TimeDelta::hours(1))
        .with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap())
        .to_rfc3339();
    // A time in the past is refused.
    let past = env_
        .compose(json!({"send_at": "2020-01-01T09:00:00", "time_zone": "Europe/Berlin"}))
        .unwrap_err();
    assert!(
        past.to_string().contains("send_at: is in the past"),
        "{past}"
    );

    let kept = env_.compose(json!({"send_at": later})).unwrap();
    let cancelled = env_.compose(json!({"send_at": later})).unwrap();
    let now_please = env_.compose(json!({"send_at": later})).unwrap();
    assert_eq!(kept.status, "scheduled");
    assert!(kept.send_at.is_some());
    env_.work().await;
    assert_eq!(env_.email(kept.id).status, "scheduled", "not due yet");

    let mut conn = env_.test.connect();
    let cancel = outbox::cancel(&mut conn, &env_.user, cancelled.id).unwrap();
    assert_eq!(cancel.status, "cancelled");
    outbox::send_now(&mut conn, &env_.user, now_please.id).unwrap();
    // Local time in a named zone, two seconds from now.
    let zone: chrono_tz::Tz = "America/New_York".parse().unwrap();
    let soon = (chrono::Utc::now() + chrono::TimeDelta::seconds(2))
        .with_timezone(&zone)
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    let moved = outbox::reschedule(
        &mut conn,
        &env_.user,
        kept.id,
        &serde_json::from_value(json!({"send_at": soon, "time_zone": "America/New_York"})).unwrap(),
    )
    .unwrap();
    assert_eq!(moved.time_zone.as_deref(), Some("America/New_York"));
    let sent_now = env_.work_until(now_please.id, "sent").await;
    let sent_later = env_.work_until(kept.id, "sent").await;
    assert!(sent_later.sent_at.unwrap() >= moved.send_at.unwrap());
    assert_eq!(env_.email(cancelled.id).status, "cancelled");
    // The old jobs of the rescheduled and sent-now emails sent nothing twice.
    assert_eq!(sink.received(&sent_now.message_id.unwrap()), 1);
    assert_eq!(sink.received(&sent_later.message_id.unwrap()), 1);
    assert_eq!(sink.received(&cancelled.message_id.clone().unwrap()), 0);

    // Once the send has started, nothing can be changed.
    for result in [
        outbox::cancel(&mut conn, &env_.user, kept.id),
        outbox::send_now(&mut conn, &env_.user, kept.id),
    ] {
        assert!(
            matches!(
                result,
                Err(herald_core::CoreError::Conflict {
                    code: "send_started",
                    ..
                })
            ),
            "{result:?}"
        );
    }
    let sending = env_.compose(json!({})).unwrap();
    assert!(matches!(
        outbox::cancel(&mut conn, &env_.user, sending.id),
        Err(herald_core::CoreError::Conflict {
            code: "send_started",
            ..
        })
    ));
    assert!(matches!(
        outbox::send_now(&mut conn, &env_.user, cancelled.id),
        Err(herald_core::CoreError::Conflict {
            code: "invalid_email_status",
            ..
        })
    ));
}

async fn a_scheduled_reply_is_cancelled_when_the_contact_writes_first(test: TestDb) {
    let env_ = Env::new(test, "replyfirst");
    let sink = Sink::start(None, &[]);
    let mailbox = env_.sink_mailbox(&sink);
    let folder = format!("herald-{}", env_.tag);
    let mut session = Session::open(&mailbox.imap_settings(&env_.key).unwrap())
        .await
        .unwrap();
    session.create(&folder).await.unwrap();
    let tag = &env_.tag;
    session
        .append(&folder, None, format!(
            "From: Bob Contact <bob@herald.test>\r\nReply-To: bob.sales@herald.test\r\nTo: alice@herald.test\r\n\
             Subject: Re: RE: Offer\r\nMessage-ID: <q-{tag}@herald.test>\r\n\r\nCan you send the offer?\r\nThanks\r\n").as_bytes())
        .await
        .unwrap();
    let options = SyncOptions {
        inbox: folder.clone(),
        ..SyncOptions::default()
    };
    sync_mailbox(&env_.test.db, &env_.key, mailbox.id, &options)
        .await
        .unwrap();
    let question: i64 = emails::table
        .filter(emails::message_id.eq(format!("q-{tag}@herald.test")))
        .select(emails::id)
        .first(&mut env_.test.connect())
        .unwrap();
    let draft = outbox::reply_draft(&mut env_.test.connect(), &env_.user, question).unwrap();
    assert_eq!(
        draft.to[0].address, "bob.sales@herald.test",
        "Reply-To honoured"
    );
    assert_eq!(draft.subject, "Re: Offer");
    assert!(
        draft
            .text
            .contains("Bob Contact <bob@herald.test> wrote:\n> Can you send the offer?\n> Thanks"),
        "{}",
        draft.text
    );
    let later = (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339();
    let engine = herald_templates::Engine::default();
    let input: ComposeInput = serde_json::from_value(
        json!({"text": "Here it is", "send_at": later, "cancel_on_reply": true}),
    )
    .unwrap();
    let reply = env_
        .test
        .connect()
        .write(|conn| outbox::reply(conn, &engine, &env_.user, question, &input))
        .unwrap();
    assert_eq!(reply.status, "scheduled");
    assert_eq!(reply.thread_id, env_.email(question).thread_id);
    session
        .append(&folder, None, format!(
            "From: bob@herald.test\r\nTo: alice@herald.test\r\nSubject: Re: Offer\r\nMessage-ID: <again-{tag}@herald.test>\r\n\
             In-Reply-To: <q-{tag}@herald.test>\r\n\r\nNever mind, found it.\r\n").as_bytes())
        .await
        .unwrap();
    sync_mailbox(&env_.test.db, &env_.key, mailbox.id, &options)
        .await
        .unwrap();
    session.delete(&folder).await.unwrap();
    session.logout().await;
    let cancelled = env_.email(reply.id);
    assert_eq!(cancelled.status, "cancelled");
    assert_eq!(
        cancelled.failure_reason.as_deref(),
        Some("cancelled: the contact replied first")
    );
    env_.work().await;
    assert_eq!(
        sink.received(&format!("q-{tag}@herald.test")),
        0,
        "never sent"
    );
}

/// A TCP relay in front of `port` that counts the connections made through it.
async fn counting_relay(port: u16) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_port = listener.local_addr().unwrap().port();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (relay_port, connections)
}

async fn smtp_sessions_are_kept_between_sends_and_replaced_when_dropped(test: TestDb) {
    use std::sync::atomic::Ordering::SeqCst;
    let env_ = Env::new(test, "sessions");
    let sink = Sink::start(None, &[]);
    let (relay, connections) = counting_relay(sink.port).await;
    env_.mailbox(("127.0.0.1".into(), relay, "none"), false);
    let mut ids = Vec::new();
    for n in 0..3 {
        let email = env_
            .compose(json!({"subject": format!("Offer {} #{n}", env_.tag)}))
            .unwrap();
        let sent = env_.work_until(email.id, "sent").await;
        ids.push(sent.message_id.unwrap());
    }
    for id in &ids {
        assert_eq!(sink.received(id), 1);
    }
    assert_eq!(connections.load(SeqCst), 1, "three sends over one session");

    // The server goes away with the session idle: the next send notices before sending anything
    // and goes out on a new session, in its first attempt.
    let port = sink.port;
    drop(sink);
    let sink = Sink::start(Some(port), &[]);
    let email = env_.compose(json!({})).unwrap();
    let sent = env_.work_until(email.id, "sent").await;
    assert_eq!(sent.send_attempts, Some(1), "{sent:?}");
    assert_eq!(sink.received(&sent.message_id.unwrap()), 1);
    assert_eq!(connections.load(SeqCst), 2);
}

/// Many sends due together to one server use at most `mail.smtp_sessions_per_server`
/// sessions: the others wait for a free one.
async fn sends_to_one_server_share_its_capped_sessions(test: TestDb) {
    use std::sync::atomic::Ordering::SeqCst;
    let env_ = Env::new(test, "capped");
    let sink = Sink::start(None, &[]);
    let (relay, connections) = counting_relay(sink.port).await;
    env_.mailbox(("127.0.0.1".into(), relay, "none"), false);
    let emails: Vec<_> = (0..8)
        .map(|n| {
            env_.compose(json!({"subject": format!("Capped {} #{n}", env_.tag)}))
                .unwrap()
        })
        .collect();
    let mut config = herald_core::Config::default();
    config.mail.smtp_sessions_per_server = 2;
    // The runner's default batches run all eight at once.
    env_.work_with(config).await;
    for email in &emails {
        let sent = env_.email(email.id);
        assert_eq!(sent.status, "sent", "{sent:?}");
        assert_eq!(sink.received(&sent.message_id.unwrap()), 1);
    }
    let opened = connections.load(SeqCst);
    assert!((1..=2).contains(&opened), "{opened} sessions for 8 sends");
}

/// Sends started and recorded in batches: a job whose token is not its email's (one left
/// behind by a reschedule, say) does nothing, beside the jobs that send.
async fn a_batch_of_sends_skips_a_job_that_is_not_its_emails(test: TestDb) {
    let env_ = Env::new(test, "batch");
    let sink = Sink::start(None, &[]);
    env_.sink_mailbox(&sink);
    let emails: Vec<_> = (0..3)
        .map(|n| {
            env_.compose(json!({"subject": format!("Batch {} #{n}", env_.tag)}))
                .unwrap()
        })
        .collect();
    let payload = serde_json::to_string(&outbox::SendEmail {
        email_id: emails[1].id,
        token: "not-its-token".into(),
    })
    .unwrap();
    herald_scheduler::storage::enqueue(
        &mut env_.test.connect(),
        &herald_scheduler::storage::NewJob {
            job_type: outbox::SEND_JOB,
            queue: "mail",
            payload: &payload,
            max_attempts: 25,
            // Due before the email's own job: claimed, and most likely started, ahead of it.
            run_at: herald_core::time::now() - chrono::TimeDelta::minutes(1),
        },
    )
    .unwrap();
    env_.work().await;
    for email in &emails {
        let sent = env_.email(email.id);
        assert_eq!(sent.status, "sent", "{sent:?}");
        assert_eq!(sent.send_attempts, Some(1), "{sent:?}");
        assert_eq!(sink.received(&sent.message_id.unwrap()), 1, "sent once");
    }
}

backend_tests!(
    a_batch_of_sends_skips_a_job_that_is_not_its_emails,
    sends_to_one_server_share_its_capped_sessions,
    an_email_goes_through_the_mta_and_its_sent_copy_syncs_back_once,
    a_temporary_failure_is_retried_until_it_goes_through,
    a_permanent_failure_fails_at_once_and_a_retry_really_sends,
    scheduled_emails_wait_and_can_be_rescheduled_cancelled_or_sent_now,
    a_scheduled_reply_is_cancelled_when_the_contact_writes_first,
    smtp_sessions_are_kept_between_sends_and_replaced_when_dropped,
);
