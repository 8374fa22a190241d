//! The send job's work (E8): build the MIME message, send it through the mailbox's SMTP server
//! with mail-send, record the outcome; and the sent copy's APPEND to the Sent folder.
//!
//! A send is at-least-once: if the worker dies after the server accepted the message and before
//! `sent` is recorded, the job runs again and the message goes out twice (same Message-ID, which
//! most clients collapse). Nothing else sends twice: the status and the token are checked and
//! set in one transaction before the SMTP conversation starts.
//!
//! The start and the outcome of a send are batched ([`SendWrites`]): those of sends running at
//! the same time are written together with a few set-based statements and one commit, so a burst
//! costs a few statements per batch instead of several per message. Messages go out over reused SMTP sessions
//! ([`crate::smtp_pool`]).

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::NaiveDateTime;
use diesel::prelude::*;
use herald_core::crypto::SecretKey;
use herald_core::time::now;
use herald_core::{CoreError, CoreResult, Db, DbConnection, WriteBatcher};
use mail_send::mail_builder::MessageBuilder;
use mail_send::mail_builder::headers::address::Address;

use crate::connect::{Failure, smtp_failure};
use crate::imap::Session;
use crate::model::Mailbox;
use crate::outbox::{SendEmail, header_text};
use crate::parse::Participant;
use crate::schema::{email_sends, emails};

/// Name of the job that appends a sent copy to the Sent folder; the runtime registers it.
pub const APPEND_SENT_JOB: &str = "append_sent_copy";

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct AppendSentCopy {
    pub email_id: i64,
}

#[derive(Clone, Debug)]
pub struct DeliverSettings {
    /// Attempts before a temporary failure becomes `failed`.
    pub max_attempts: i32,
    /// Wait before the second attempt; doubled after each, up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// The whole SMTP conversation of one attempt, from when it has a session slot.
    pub timeout: Duration,
    /// Sessions open at once to one server and login ([`crate::smtp_pool`]).
    pub sessions_per_server: usize,
}

impl Default for DeliverSettings {
    fn default() -> Self {
        DeliverSettings {
            max_attempts: 5,
            retry_base: Duration::from_secs(30),
            retry_max: Duration::from_secs(1800),
            timeout: Duration::from_secs(120),
            sessions_per_server: 3,
        }
    }
}

/// What an attempt came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivered {
    Sent,
    /// The email was cancelled, rescheduled, sent now or retried by another job: nothing done.
    Skipped,
    /// `failed`, with the reason shown to the user.
    Failed(String),
    /// A temporary failure: try again after this long.
    RetryLater {
        reason: String,
        after: Duration,
    },
}

#[derive(Debug, Queryable)]
struct Outgoing {
    status: String,
    mailbox_id: Option<i64>,
    message_id: Option<String>,
    subject: Option<String>,
    from_name: Option<String>,
    participants: String,
    text_body: Option<String>,
    html_body: Option<String>,
    in_reply_to: Option<String>,
    message_references: String,
}

#[derive(Default, serde::Deserialize)]
struct Recipients {
    #[serde(default)]
    to: Vec<Participant>,
    #[serde(default)]
    cc: Vec<Participant>,
}

/// What an attempt needs, read when it starts.
struct Attempt {
    email: Outgoing,
    bcc: Vec<Participant>,
    attempts: i32,
    mailbox: Mailbox,
}

fn address(p: &Participant) -> Address<'static> {
    Address::new_address(
        p.name.as_deref().map(header_text).filter(|n| !n.is_empty()),
        p.address.clone(),
    )
}

/// A Message-ID as it may appear between angle brackets: no spaces, brackets or controls.
fn safe_id(id: &str) -> Option<String> {
    let id = id.trim().trim_start_matches('<').trim_end_matches('>');
    (!id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '<' && c != '>'))
    .then(|| id.to_owned())
}

/// The MIME message: text and HTML alternatives, encoded headers, the stored Message-ID, Date,
/// and In-Reply-To/References for replies. Blind copies are not in it (only in the envelope).
fn build_message(email: &Outgoing, from: &str, date: NaiveDateTime) -> Result<Vec<u8>, CoreError> {
    let recipients: Recipients = serde_json::from_str(&email.participants).unwrap_or_default();
    let mut message = MessageBuilder::new()
        .from(Address::new_address(
            email.from_name.as_deref().map(header_text),
            from.to_owned(),
        ))
        .subject(header_text(email.subject.as_deref().unwrap_or_default()))
        .date(date.and_utc().timestamp());
    if !recipients.to.is_empty() {
        message = message.to(recipients.to.iter().map(address).collect::<Vec<_>>());
    }
    if !recipients.cc.is_empty() {
        message = message.cc(recipients.cc.iter().map(address).collect::<Vec<_>>());
    }
    if let Some(id) = email.message_id.as_deref().and_then(safe_id) {
        message = message.message_id(id);
    }
    if let Some(id) = email.in_reply_to.as_deref().and_then(safe_id) {
        message = message.in_reply_to(id);
    }
    let references: Vec<String> = serde_json::from_str::<Vec<String>>(&email.message_references)
        .unwrap_or_default()
        .iter()
        .filter_map(|r| safe_id(r))
        .collect();
    if !references.is_empty() {
        message = message.references(references);
    }
    if let Some(text) = &email.text_body {
        message = message.text_body(text.clone());
    }
    if let Some(html) = &email.html_body {
        message = message.html_body(html.clone());
    }
    message
        .write_to_vec()
        .map_err(|e| CoreError::Unavailable(format!("building the message failed: {e}")))
}

/// Starts the attempts of the jobs that are still their email's: `sending`, attempts + 1 (call
/// inside a write transaction). A few statements for the whole batch; one result per job.
fn start_all(conn: &mut DbConnection, jobs: &[SendEmail]) -> CoreResult<Vec<Option<Attempt>>> {
    let ids: Vec<i64> = jobs.iter().map(|j| j.email_id).collect();
    // Backend arm: on PostgreSQL the emails are locked first, in id order (emails before
    // email_sends, as cancel, reschedule and PATCH lock them), so none of them changes between
    // this read and the updates. SQLite's write transaction already excludes other writers.
    if let DbConnection::Postgres(c) = conn {
        emails::table
            .filter(emails::id.eq_any(&ids))
            .order(emails::id)
            .select(emails::id)
            .for_update()
            .load::<i64>(c)?;
    }
    let mut found: HashMap<i64, ((String, i32, String), Outgoing)> = email_sends::table
        .inner_join(emails::table)
        .filter(email_sends::email_id.eq_any(&ids))
        .select((
            email_sends::email_id,
            (email_sends::token, email_sends::attempts, email_sends::bcc),
            (
                emails::status,
                emails::mailbox_id,
                emails::message_id,
                emails::subject,
                emails::from_name,
                emails::participants,
                emails::text_body,
                emails::html_body,
                emails::in_reply_to,
                emails::message_references,
            ),
        ))
        .load::<(i64, (String, i32, String), Outgoing)>(conn)?
        .into_iter()
        .map(|(id, send, email)| (id, (send, email)))
        .collect();
    // Only the job holding the email's token goes on; a cancelled, rescheduled or retried email
    // has another token (or another status) and its old job does nothing.
    found.retain(|id, ((token, _, _), email)| {
        jobs.iter().any(|j| j.email_id == *id && j.token == *token)
            && ["scheduled", "sending"].contains(&email.status.as_str())
    });
    if !found.is_empty() {
        let going: Vec<i64> = found.keys().copied().collect();
        let at = now();
        // emails before email_sends, as everywhere: the same lock order as cancel and PATCH.
        // An email composed to go now is `sending` already: its row (with the bodies) is left
        // as it is.
        diesel::update(
            emails::table
                .filter(emails::id.eq_any(&going))
                .filter(emails::status.ne("sending")),
        )
        .set((emails::status.eq("sending"), emails::updated_at.eq(at)))
        .execute(conn)?;
        diesel::update(email_sends::table.filter(email_sends::email_id.eq_any(&going)))
            .set((
                email_sends::attempts.eq(email_sends::attempts + 1),
                email_sends::started_at.eq(Some(at)),
                email_sends::updated_at.eq(at),
            ))
            .execute(conn)?;
    }
    let mut mailboxes: HashMap<i64, Option<Mailbox>> = HashMap::new();
    for id in found.values().filter_map(|(_, email)| email.mailbox_id) {
        mailboxes
            .entry(id)
            .or_insert_with(|| Mailbox::find_any(conn, id).ok());
    }
    let mut attempts = Vec::with_capacity(jobs.len());
    for job in jobs {
        // The attempt is the job's that holds the email's token; a job twice in one batch
        // starts once.
        let holds_token = found
            .get(&job.email_id)
            .is_some_and(|((token, _, _), _)| *token == job.token);
        let Some(((_, sent_before, bcc), email)) =
            holds_token.then(|| found.remove(&job.email_id)).flatten()
        else {
            attempts.push(None);
            continue;
        };
        let mailbox = email
            .mailbox_id
            .and_then(|id| mailboxes.get(&id).cloned().flatten());
        let Some(mailbox) = mailbox else {
            let removed = Outcome::Failed("its mailbox was removed".into());
            finish_all(conn, &[(job.clone(), removed)])?;
            attempts.push(None);
            continue;
        };
        attempts.push(Some(Attempt {
            email,
            bcc: serde_json::from_str(&bcc).unwrap_or_default(),
            attempts: sent_before + 1,
            mailbox,
        }));
    }
    Ok(attempts)
}

enum Outcome {
    /// `raw` is kept only for the sent copy's APPEND.
    Sent {
        raw: Option<Vec<u8>>,
    },
    Failed(String),
    Retrying(String),
}

/// Records the outcomes of a batch of attempts (call inside a write transaction), each only if
/// its job still holds the email's token and the email is still `sending`: the `sent` ones in
/// two statements for all (and a stored copy, with its APPEND job, for those that keep one),
/// the failures one by one.
fn finish_all(conn: &mut DbConnection, outcomes: &[(SendEmail, Outcome)]) -> CoreResult<Vec<()>> {
    let at = now();
    let sent: Vec<&SendEmail> = outcomes
        .iter()
        .filter(|(_, outcome)| matches!(outcome, Outcome::Sent { .. }))
        .map(|(job, _)| job)
        .collect();
    if !sent.is_empty() {
        let ids: Vec<i64> = sent.iter().map(|job| job.email_id).collect();
        let tokens: Vec<&str> = sent.iter().map(|job| job.token.as_str()).collect();
        // Tokens are random and each belongs to one email: matching any of the batch's is
        // matching the email's own.
        let this_send = email_sends::table
            .filter(email_sends::email_id.eq(emails::id))
            .filter(email_sends::token.eq_any(&tokens));
        // emails before email_sends, as everywhere: the same lock order as cancel and PATCH.
        diesel::update(
            emails::table
                .filter(emails::id.eq_any(&ids))
                .filter(emails::status.eq("sending"))
                .filter(diesel::dsl::exists(this_send)),
        )
        .set((
            emails::status.eq("sent"),
            emails::sent_at.eq(Some(at)),
            emails::updated_at.eq(at),
        ))
        .execute(conn)?;
        diesel::update(
            email_sends::table
                .filter(email_sends::email_id.eq_any(&ids))
                .filter(email_sends::token.eq_any(&tokens)),
        )
        .set((
            email_sends::failure_reason.eq(None::<String>),
            email_sends::raw_message.eq(None::<String>),
            email_sends::updated_at.eq(at),
        ))
        .execute(conn)?;
    }
    for (job, outcome) in outcomes {
        let this_send = email_sends::table
            .filter(email_sends::email_id.eq(job.email_id))
            .filter(email_sends::token.eq(&job.token));
        let still_sending = emails::table
            .filter(emails::id.eq(job.email_id))
            .filter(emails::status.eq("sending"))
            .filter(diesel::dsl::exists(this_send));
        match outcome {
            Outcome::Sent { raw: None } => {}
            // Kept only for the sent copy's APPEND, which the job enqueued here makes.
            Outcome::Sent { raw: Some(raw) } => {
                let kept = diesel::update(this_send)
                    .set(email_sends::raw_message.eq(Some(STANDARD.encode(raw))))
                    .execute(conn)?;
                if kept == 1 {
                    let payload = serde_json::to_string(&AppendSentCopy {
                        email_id: job.email_id,
                    })
                    .map_err(|e| CoreError::Unavailable(e.to_string()))?;
                    herald_scheduler::storage::enqueue(
                        conn,
                        &herald_scheduler::storage::NewJob {
                            job_type: APPEND_SENT_JOB,
                            queue: "mail",
                            payload: &payload,
                            max_attempts: 5,
                            run_at: at,
                        },
                    )?;
                }
            }
            Outcome::Failed(reason) => {
                diesel::update(still_sending)
                    .set((emails::status.eq("failed"), emails::updated_at.eq(at)))
                    .execute(conn)?;
                diesel::update(this_send)
                    .set((
                        email_sends::failure_reason.eq(Some(reason.as_str())),
                        email_sends::updated_at.eq(at),
                    ))
                    .execute(conn)?;
            }
            Outcome::Retrying(reason) => {
                diesel::update(this_send)
                    .set((
                        email_sends::failure_reason.eq(Some(format!("will try again: {reason}"))),
                        email_sends::updated_at.eq(at),
                    ))
                    .execute(conn)?;
            }
        }
    }
    Ok(vec![(); outcomes.len()])
}

/// The send job's writes, shared by a process's sends: the starts and the outcomes of sends
/// running at the same time are written in batches, a few statements and one commit for many.
pub struct SendWrites {
    starts: WriteBatcher<SendEmail, Option<Attempt>>,
    outcomes: WriteBatcher<(SendEmail, Outcome), ()>,
}

impl SendWrites {
    pub fn new(db: Db) -> Self {
        SendWrites {
            // One lane: sends share no rows and need no order among themselves.
            starts: WriteBatcher::new(db.clone(), start_all, None),
            outcomes: WriteBatcher::new(db, finish_all, None),
        }
    }
}

/// Whether a failure may pass, and what it means to a person.
fn classify(error: mail_send::Error) -> (bool, String) {
    match error {
        mail_send::Error::UnexpectedReply(reply) => {
            let said = format!("{} {}", reply.code(), reply.message().trim());
            if (400..500).contains(&reply.code()) {
                (
                    true,
                    format!("the mail server is temporarily not accepting it ({said})"),
                )
            } else {
                (false, format!("the mail server refused it ({said})"))
            }
        }
        other => match smtp_failure(other) {
            Failure::BadCredentials(said) => (
                false,
                format!(
                    "the mail server refused the mailbox's username or password ({said}); save \
                     the right password and retry"
                ),
            ),
            Failure::Refused(d) => (true, format!("the mail server could not be reached ({d})")),
            Failure::Timeout(d) => (
                true,
                format!("the mail server did not answer in time ({d})"),
            ),
            Failure::Dns(d) => (
                true,
                format!("the mail server's name did not resolve ({d})"),
            ),
            Failure::Tls(d) => (
                false,
                format!("a secure connection to the mail server failed ({d})"),
            ),
            Failure::Protocol(d) => (true, format!("the mail server conversation failed ({d})")),
        },
    }
}

/// Runs one attempt of a send job.
pub async fn deliver(
    writes: &SendWrites,
    key: &SecretKey,
    job: &SendEmail,
    settings: &DeliverSettings,
) -> Result<Delivered, CoreError> {
    let Some(attempt) = writes.starts.write(job.clone()).await? else {
        return Ok(Delivered::Skipped);
    };
    let Some(smtp) = attempt
        .mailbox
        .smtp_settings(key)?
        .filter(|_| attempt.mailbox.sending_enabled)
    else {
        let reason = format!("sending is not enabled on {}", attempt.mailbox.address);
        writes
            .outcomes
            .write((job.clone(), Outcome::Failed(reason.clone())))
            .await?;
        return Ok(Delivered::Failed(reason));
    };
    let raw = build_message(&attempt.email, &attempt.mailbox.address, now())?;
    let recipients: Recipients =
        serde_json::from_str(&attempt.email.participants).unwrap_or_default();
    let envelope: Vec<String> = recipients
        .to
        .iter()
        .chain(&recipients.cc)
        .chain(&attempt.bcc)
        .map(|p| p.address.clone())
        .collect();
    let result = crate::smtp_pool::send(
        &smtp,
        settings.sessions_per_server,
        settings.timeout,
        &attempt.mailbox.address,
        &envelope,
        &raw,
    )
    .await;
    let (outcome, delivered) = match result {
        Ok(()) => (
            Outcome::Sent {
                raw: attempt.mailbox.save_sent_copy.then_some(raw),
            },
            Delivered::Sent,
        ),
        Err(error) => {
            let (temporary, reason) = classify(error);
            if temporary && attempt.attempts < settings.max_attempts {
                let exp = u32::try_from(attempt.attempts - 1).unwrap_or(0).min(16);
                let after = settings
                    .retry_base
                    .saturating_mul(2u32.pow(exp))
                    .min(settings.retry_max);
                (
                    Outcome::Retrying(reason.clone()),
                    Delivered::RetryLater { reason, after },
                )
            } else {
                let reason = if temporary {
                    format!("gave up after {} attempts: {reason}", attempt.attempts)
                } else {
                    reason
                };
                (Outcome::Failed(reason.clone()), Delivered::Failed(reason))
            }
        }
    };
    writes.outcomes.write((job.clone(), outcome)).await?;
    metrics::counter!("herald_emails_sent_total", "outcome" => match &delivered {
        Delivered::Sent => "sent",
        Delivered::Failed(_) => "failed",
        Delivered::RetryLater { .. } => "retry",
        Delivered::Skipped => "skipped",
    })
    .increment(1);
    Ok(delivered)
}

/// Appends a sent email to its mailbox's Sent folder (created when the server has none); the
/// next sync recognises it by its Message-ID.
pub async fn append_sent_copy(
    db: &Db,
    key: &SecretKey,
    email_id: i64,
) -> Result<(), SentCopyError> {
    let (mailbox, raw) = db
        .run(move |conn| {
            let (mailbox_id, raw): (Option<i64>, Option<String>) = emails::table
                .inner_join(email_sends::table)
                .filter(emails::id.eq(email_id))
                .select((emails::mailbox_id, email_sends::raw_message))
                .first(conn)?;
            let mailbox = mailbox_id
                .map(|id| Mailbox::find_any(conn, id))
                .transpose()?;
            Ok::<_, CoreError>((mailbox, raw))
        })
        .await?;
    let (Some(mailbox), Some(raw)) = (mailbox, raw) else {
        return Ok(());
    };
    let raw = STANDARD
        .decode(raw)
        .map_err(|e| CoreError::Unavailable(format!("stored message unreadable: {e}")))?;
    let mut session = Session::open(&mailbox.imap_settings(key)?).await?;
    let folder = match session.sent_folder().await? {
        Some(folder) => folder,
        None => {
            session.create("Sent").await?;
            "Sent".to_owned()
        }
    };
    session.append(&folder, Some("(\\Seen)"), &raw).await?;
    session.logout().await;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SentCopyError {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error(transparent)]
    Imap(#[from] crate::connect::ConnectError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outgoing(subject: &str, name: &str) -> Outgoing {
        Outgoing {
            status: "sending".into(),
            mailbox_id: Some(1),
            message_id: Some("abc@herald.test".into()),
            subject: Some(subject.into()),
            from_name: Some(name.into()),
            participants:
                serde_json::json!({"to": [{"name": name, "address": "ann@acme.example"}]})
                    .to_string(),
            text_body: Some("Hello\r\nBcc: evil@x.example\r\n".into()),
            html_body: Some("<p>Hello</p>".into()),
            in_reply_to: Some("parent@acme.example>\r\nBcc: evil@x.example".into()),
            message_references: serde_json::json!(["root@acme.example", "bad id"]).to_string(),
        }
    }

    fn header_names(raw: &[u8]) -> Vec<String> {
        let text = String::from_utf8_lossy(raw);
        let head = text.split("\r\n\r\n").next().unwrap_or_default();
        head.lines()
            .filter(|l| !l.starts_with([' ', '\t']))
            .filter_map(|l| l.split_once(':').map(|(n, _)| n.to_ascii_lowercase()))
            .collect()
    }

    #[test]
    fn subjects_names_and_ids_cannot_inject_headers() {
        let email = outgoing(
            "Offer\r\nBcc: evil@x.example\nX-Injected: 1",
            "Ann\r\nBcc: evil@x.example",
        );
        let raw = build_message(&email, "bob@herald.test", now()).unwrap();
        let mut names = header_names(&raw);
        names.sort();
        names.dedup();
        for name in &names {
            assert!(
                [
                    "from",
                    "to",
                    "subject",
                    "date",
                    "message-id",
                    "references",
                    "mime-version",
                    "content-type",
                ]
                .contains(&name.as_str()),
                "unexpected header {name} in\n{}",
                String::from_utf8_lossy(&raw)
            );
        }
        assert!(
            !names.contains(&"in-reply-to".to_owned()),
            "unsafe id dropped"
        );
        let parsed = mail_parser::MessageParser::default().parse(&raw).unwrap();
        assert_eq!(
            parsed.subject(),
            Some("Offer  Bcc: evil@x.example X-Injected: 1")
        );
        assert_eq!(parsed.message_id(), Some("abc@herald.test"));
        assert!(parsed.bcc().is_none());
        assert_eq!(
            parsed.references().as_text_list().unwrap_or_default(),
            vec!["root@acme.example"]
        );
    }

    #[test]
    fn text_and_html_are_alternatives() {
        let raw = build_message(&outgoing("Hi", "Ann"), "bob@herald.test", now()).unwrap();
        let parsed = mail_parser::MessageParser::default().parse(&raw).unwrap();
        assert_eq!(
            parsed.body_text(0).as_deref(),
            Some("Hello\r\nBcc: evil@x.example\r\n")
        );
        assert!(parsed.body_html(0).unwrap().contains("<p>Hello</p>"));
        assert!(String::from_utf8_lossy(&raw).contains("multipart/alternative"));
    }

    #[test]
    fn temporary_and_permanent_replies_are_told_apart() {
        let reply = |code: u16| {
            mail_send::Error::UnexpectedReply(smtp_proto::Response::new(
                code,
                0,
                0,
                0,
                "nope".to_string(),
            ))
        };
        assert!(classify(reply(451)).0);
        let (temporary, reason) = classify(reply(550));
        assert!(!temporary);
        assert!(reason.contains("550 nope"), "{reason}");
        assert!(classify(mail_send::Error::Timeout).0);
    }

    /// A started batch holding a stale job of an email before the email's own job: the attempt
    /// is the current job's, whichever comes first.
    async fn only_the_job_holding_the_token_starts(test: herald_testdb::TestDb) {
        use herald_core::domain::Plan;
        use herald_core::identity::{Account, NewUser, User};
        use herald_core::records::{Person, Record};

        let mut conn = test.connect();
        let account = Account::create(&mut conn, "Start", Plan::Automation).unwrap();
        let user = User::create(
            &mut conn,
            account.id,
            &NewUser {
                email: "owner@start.example.com".into(),
                name: "Owner".into(),
                role: None,
            },
        )
        .unwrap();
        let person = <Person as Record>::create(
            &mut conn,
            account.id,
            &serde_json::from_value(
                serde_json::json!({"first_name": "Bob", "emails": ["bob@herald.test"]}),
            )
            .unwrap(),
        )
        .unwrap();
        let key = SecretKey::from_base64(&SecretKey::generate_base64()).unwrap();
        let server = serde_json::json!({"host": "127.0.0.1", "port": 1, "security": "none",
            "username": "alice@herald.test", "password": "pass"});
        let input: crate::MailboxInput = serde_json::from_value(serde_json::json!({
            "address": "alice@herald.test", "imap": server, "smtp": server,
            "sending_enabled": true, "save_sent_copy": false
        }))
        .unwrap();
        let limits = herald_core::config::PlanLimits::default();
        let draft = crate::Draft::prepare(&mut conn, limits, &user, &input).unwrap();
        conn.write(|c| draft.insert(c, &key, limits, account.id))
            .unwrap();
        let compose: crate::outbox::ComposeInput = serde_json::from_value(serde_json::json!({
            "record": {"type": "person", "id": person.id}, "subject": "Hi", "text": "Hello"
        }))
        .unwrap();
        let engine = herald_templates::Engine::default();
        let email = conn
            .write(|c| crate::outbox::compose(c, &engine, &user, &compose, None))
            .unwrap();
        let token: String = email_sends::table
            .find(email.id)
            .select(email_sends::token)
            .first(&mut conn)
            .unwrap();
        let current = SendEmail {
            email_id: email.id,
            token,
        };
        let stale = SendEmail {
            email_id: email.id,
            token: "stale".into(),
        };
        let started = conn
            .write(|c| start_all(c, &[stale.clone(), current.clone()]))
            .unwrap();
        assert!(started[0].is_none(), "the stale job does nothing");
        assert_eq!(started[1].as_ref().map(|a| a.attempts), Some(1));
        let again = conn.write(|c| start_all(c, &[current, stale])).unwrap();
        assert_eq!(again[0].as_ref().map(|a| a.attempts), Some(2));
        assert!(again[1].is_none());
    }

    herald_testdb::backend_tests!(only_the_job_holding_the_token_starts);
}
