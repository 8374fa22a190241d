//! The send job's work (E8): build the MIME message, send it through the mailbox's SMTP server
//! with mail-send, record the outcome; and the sent copy's APPEND to the Sent folder.
//!
//! A send is at-least-once: if the worker dies after the server accepted the message and before
//! `sent` is recorded, the job runs again and the message goes out twice (same Message-ID, which
//! most clients collapse). Nothing else sends twice: the status and the token are checked and
//! set in one transaction before the SMTP conversation starts.
//!
//! The start and the outcome of a send are grouped writes ([`Db::write_grouped`]): those of
//! sends running at the same time share transactions, a savepoint each, so a burst costs a few
//! commits instead of two per message. Messages go out over reused SMTP sessions
//! ([`crate::smtp_pool`]).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::NaiveDateTime;
use diesel::prelude::*;
use herald_core::crypto::SecretKey;
use herald_core::time::now;
use herald_core::{CoreError, Db, DbConnection};
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

/// Starts an attempt if the job is still the email's: `sending`, attempts + 1.
fn start(conn: &mut DbConnection, job: &SendEmail) -> Result<Option<Attempt>, CoreError> {
    conn.write(|conn| {
        let found: Option<((String, i32, String), Outgoing)> = email_sends::table
            .inner_join(emails::table)
            .filter(email_sends::email_id.eq(job.email_id))
            .select((
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
            .first(conn)
            .optional()?;
        let Some(((token, attempts, bcc), email)) = found else {
            return Ok(None);
        };
        if token != job.token || !["scheduled", "sending"].contains(&email.status.as_str()) {
            return Ok(None);
        }
        let at = now();
        diesel::update(emails::table.find(job.email_id))
            .set((emails::status.eq("sending"), emails::updated_at.eq(at)))
            .execute(conn)?;
        diesel::update(email_sends::table.find(job.email_id))
            .set((
                email_sends::attempts.eq(attempts + 1),
                email_sends::started_at.eq(Some(at)),
                email_sends::updated_at.eq(at),
            ))
            .execute(conn)?;
        let mailbox = match email.mailbox_id {
            Some(id) => Mailbox::find_any(conn, id).ok(),
            None => None,
        };
        let Some(mailbox) = mailbox else {
            finish(conn, job, Outcome::Failed("its mailbox was removed".into()))?;
            return Ok(None);
        };
        Ok(Some(Attempt {
            email,
            bcc: serde_json::from_str(&bcc).unwrap_or_default(),
            attempts: attempts + 1,
            mailbox,
        }))
    })
}

enum Outcome {
    /// `raw` is kept only for the sent copy's APPEND.
    Sent {
        raw: Option<Vec<u8>>,
    },
    Failed(String),
    Retrying(String),
}

/// Records an attempt's outcome, if the job is still the email's (its token in every WHERE).
fn finish(conn: &mut DbConnection, job: &SendEmail, outcome: Outcome) -> Result<(), CoreError> {
    conn.write(|conn| {
        let at = now();
        let this_send = email_sends::table
            .filter(email_sends::email_id.eq(job.email_id))
            .filter(email_sends::token.eq(&job.token));
        // emails before email_sends, as everywhere: the same lock order as cancel and PATCH.
        let still_sending = emails::table
            .filter(emails::id.eq(job.email_id))
            .filter(emails::status.eq("sending"))
            .filter(diesel::dsl::exists(this_send));
        match outcome {
            Outcome::Sent { raw } => {
                diesel::update(still_sending)
                    .set((
                        emails::status.eq("sent"),
                        emails::sent_at.eq(Some(at)),
                        emails::updated_at.eq(at),
                    ))
                    .execute(conn)?;
                let updated = diesel::update(this_send)
                    .set((
                        email_sends::failure_reason.eq(None::<String>),
                        email_sends::raw_message.eq(raw.as_ref().map(|raw| STANDARD.encode(raw))),
                        email_sends::updated_at.eq(at),
                    ))
                    .execute(conn)?;
                if updated == 1 && raw.is_some() {
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
                        email_sends::failure_reason.eq(Some(reason)),
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
        Ok(())
    })
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
    db: &Db,
    key: &SecretKey,
    job: &SendEmail,
    settings: &DeliverSettings,
) -> Result<Delivered, CoreError> {
    let started = {
        let job = job.clone();
        db.write_grouped(move |conn| start(conn, &job)).await?
    };
    let Some(attempt) = started else {
        return Ok(Delivered::Skipped);
    };
    let Some(smtp) = attempt
        .mailbox
        .smtp_settings(key)?
        .filter(|_| attempt.mailbox.sending_enabled)
    else {
        let reason = format!("sending is not enabled on {}", attempt.mailbox.address);
        let (job, outcome) = (job.clone(), Outcome::Failed(reason.clone()));
        db.write_grouped(move |conn| finish(conn, &job, outcome))
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
    let job = job.clone();
    db.write_grouped(move |conn| finish(conn, &job, outcome))
        .await?;
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
}
