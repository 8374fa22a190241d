//! Sending from CRM records (E8–E10): compose (with a template rendered at compose time),
//! schedule, reschedule, cancel, send now, retry, reply. Composing writes the email, its sending
//! state and its send job in one transaction; the job ([`crate::deliver`]) does the SMTP work.
//!
//! Every send job carries the email's current `token`: rescheduling, sending now and retrying
//! give the email a new token and a new job, so a job that lost the race finds a token that is
//! no longer the email's and does nothing.

use chrono::{NaiveDateTime, TimeZone};
use diesel::prelude::*;
use herald_core::identity::User;
use herald_core::records::{Company, Deal, Person, Record, RecordKind};
use herald_core::time::now;
use herald_core::{CoreError, DbConnection};
use herald_templates::context::{self, RecordRef, SenderMailbox};
use herald_templates::{Engine, Template};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::emails::{self as email_list, EmailView};
use crate::model::{Mailbox, MailboxError};
use crate::parse::Participant;
use crate::schema::{email_sends, emails};
use crate::store::{inherit_deals, insert_participants, link_deal};

/// Name of the send job; the runtime registers it.
pub const SEND_JOB: &str = "send_email";

/// The send job's payload.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SendEmail {
    pub email_id: i64,
    pub token: String,
}

/// `POST /api/v1/emails`.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ComposeInput {
    /// The Person, Company or Deal the email is sent from.
    pub record: Option<RecordRef>,
    /// Default: the record's primary address.
    #[serde(default)]
    pub to: Option<Vec<Participant>>,
    #[serde(default)]
    pub cc: Vec<Participant>,
    #[serde(default)]
    pub bcc: Vec<Participant>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub html: Option<String>,
    /// Rendered now, for the record and the sending mailbox; `subject`, `text` and `html` given
    /// beside it replace the template's.
    #[serde(default)]
    pub template_id: Option<i64>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: serde_json::Map<String, serde_json::Value>,
    /// Default: the caller's mailbox with sending enabled.
    #[serde(default)]
    pub mailbox_id: Option<i64>,
    /// When to send: RFC 3339 with an offset (`2026-11-23T09:00:00+01:00`), or a local time
    /// (`2026-11-23T09:00:00`) in `time_zone`. Absent: now.
    #[serde(default)]
    pub send_at: Option<String>,
    /// IANA name, e.g. `Europe/Berlin`.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Cancel a scheduled reply if the contact writes in the thread before it goes out.
    #[serde(default)]
    pub cancel_on_reply: bool,
}

/// `PATCH /api/v1/emails/{id}`: a new time for a scheduled email.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reschedule {
    pub send_at: String,
    #[serde(default)]
    pub time_zone: Option<String>,
    #[serde(default)]
    pub cancel_on_reply: Option<bool>,
}

/// `GET /api/v1/emails/{id}/reply-draft`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ReplyDraft {
    pub mailbox_id: Option<i64>,
    pub to: Vec<Participant>,
    pub cc: Vec<Participant>,
    pub subject: String,
    /// An empty line for the answer, the attribution line, and the original quoted.
    pub text: String,
    pub html: Option<String>,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
}

/// The longest header value taken from input (a subject, a name).
const MAX_HEADER_CHARS: usize = 998;
/// Recipients of one email, all fields together.
const MAX_RECIPIENTS: usize = 100;

/// A header value from input: control characters (CR and LF above all, which would start a new
/// header) become spaces.
pub fn header_text(value: &str) -> String {
    let cleaned: String = value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    cleaned.trim().chars().take(MAX_HEADER_CHARS).collect()
}

/// An address that is safe in an SMTP envelope and a header: a valid address without quoting,
/// spaces or control characters.
pub fn checked_address(address: &str, field: &str) -> Result<String, CoreError> {
    let address = address.trim();
    if address
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || "\"\\<>(),;:[]".contains(c))
    {
        return Err(CoreError::invalid(
            field,
            format!("`{}` is not a valid email address", header_text(address)),
        ));
    }
    Ok(
        herald_core::domain::EmailAddress::parse_field(address, field)?
            .as_str()
            .to_owned(),
    )
}

fn checked_list(list: &[Participant], field: &str) -> Result<Vec<Participant>, CoreError> {
    list.iter()
        .enumerate()
        .map(|(i, p)| {
            Ok(Participant {
                name: p.name.as_deref().map(header_text).filter(|n| !n.is_empty()),
                address: checked_address(&p.address, &format!("{field}[{i}].address"))?,
            })
        })
        .collect()
}

/// `send_at` (and its zone) as UTC; must be in the future.
pub fn due_time(
    send_at: &str,
    time_zone: Option<&str>,
    at: NaiveDateTime,
) -> Result<NaiveDateTime, CoreError> {
    let zone = time_zone
        .map(|name| {
            name.parse::<chrono_tz::Tz>().map_err(|_| {
                CoreError::invalid(
                    "time_zone",
                    format!("`{name}` is not a time zone name like Europe/Berlin"),
                )
            })
        })
        .transpose()?;
    let due = match chrono::DateTime::parse_from_rfc3339(send_at) {
        Ok(with_offset) => with_offset.naive_utc(),
        Err(_) => {
            let local = NaiveDateTime::parse_from_str(send_at, "%Y-%m-%dT%H:%M:%S")
                .or_else(|_| NaiveDateTime::parse_from_str(send_at, "%Y-%m-%dT%H:%M"))
                .map_err(|_| {
                    CoreError::invalid(
                        "send_at",
                        "must be RFC 3339 (2026-11-23T09:00:00+01:00) or a local time \
                         (2026-11-23T09:00) with time_zone",
                    )
                })?;
            let zone = zone.ok_or_else(|| {
                CoreError::invalid("time_zone", "is required with a send_at without an offset")
            })?;
            zone.from_local_datetime(&local)
                .earliest()
                .ok_or_else(|| {
                    CoreError::invalid(
                        "send_at",
                        format!("{send_at} does not exist in {zone} (a clock change skips it)"),
                    )
                })?
                .naive_utc()
        }
    };
    if due <= at {
        return Err(CoreError::invalid("send_at", "is in the past"));
    }
    Ok(due)
}

/// The primary address of the record an email is sent from.
fn record_address(
    conn: &mut DbConnection,
    account_id: i64,
    record: RecordRef,
) -> Result<Option<Participant>, CoreError> {
    let person_address = |person: Person| {
        person.emails.first().map(|address| Participant {
            name: Some(
                format!("{} {}", person.first_name, person.last_name)
                    .trim()
                    .to_owned(),
            )
            .filter(|n| !n.is_empty()),
            address: address.clone(),
        })
    };
    let company_address = |company: Company| {
        company.emails.first().map(|address| Participant {
            name: Some(company.name.clone()),
            address: address.clone(),
        })
    };
    Ok(match record.kind {
        RecordKind::Person => person_address(Person::find(conn, account_id, record.id)?),
        RecordKind::Company => company_address(Company::find(conn, account_id, record.id)?),
        RecordKind::Deal => {
            let deal = <Deal as Record>::find(conn, account_id, record.id)?;
            let person = deal
                .person_id
                .map(|id| Person::find(conn, account_id, id))
                .transpose()?
                .and_then(person_address);
            match (person, deal.company_id) {
                (Some(person), _) => Some(person),
                (None, Some(id)) => company_address(Company::find(conn, account_id, id)?),
                (None, None) => None,
            }
        }
        RecordKind::Lead => {
            return Err(CoreError::invalid(
                "record.type",
                "emails are sent from a person, a company or a deal",
            ));
        }
    })
}

/// The mailbox to send from: the one asked for (the caller's own, with sending enabled), else
/// the caller's sending mailbox.
fn sending_mailbox(
    conn: &mut DbConnection,
    user: &User,
    id: Option<i64>,
) -> Result<Mailbox, CoreError> {
    let mailbox = match id {
        Some(id) => Mailbox::find(conn, user, id)?,
        None => Mailbox::default_sending(conn, user)?.ok_or_else(|| {
            CoreError::invalid(
                "mailbox_id",
                "you have no mailbox with sending enabled; connect one or enable sending",
            )
        })?,
    };
    if mailbox.owner_id != user.id {
        return Err(CoreError::invalid(
            "mailbox_id",
            "must be one of your own mailboxes",
        ));
    }
    if !mailbox.sending_enabled || mailbox.smtp_host.is_none() {
        return Err(CoreError::invalid(
            "mailbox_id",
            format!("sending is not enabled on {}", mailbox.address),
        ));
    }
    Ok(mailbox)
}

/// A Message-ID on the mailbox's domain.
fn new_message_id(mailbox: &Mailbox) -> String {
    let domain = mailbox
        .address
        .rsplit_once('@')
        .map(|(_, d)| d)
        .unwrap_or("herald.localhost");
    format!("{}@{domain}", hex::encode(rand::random::<[u8; 16]>()))
}

fn new_token() -> String {
    hex::encode(rand::random::<[u8; 12]>())
}

/// The email a reply answers.
#[derive(Clone, Debug)]
pub struct Parent {
    pub thread_id: i64,
    pub message_id: Option<String>,
    pub references: Vec<String>,
}

/// Composes and queues an email (call inside a write transaction): the email is on its
/// records' timelines at once, with status `sending` or `scheduled`.
pub fn compose(
    conn: &mut DbConnection,
    engine: &Engine,
    user: &User,
    input: &ComposeInput,
    parent: Option<&Parent>,
) -> Result<EmailView, MailboxError> {
    let at = now();
    let mailbox = sending_mailbox(conn, user, input.mailbox_id)?;
    let record = input.record;
    if record.is_none() && parent.is_none() {
        return Err(CoreError::invalid("record", "is required: a person, company or deal").into());
    }
    let to = match &input.to {
        Some(to) => checked_list(to, "to")?,
        None => {
            let default = match record {
                Some(record) => {
                    record_address(conn, user.account_id, record).map_err(|e| match e {
                        CoreError::NotFound { .. } => CoreError::invalid(
                            "record",
                            format!("{} {} does not exist", record.kind.as_str(), record.id),
                        ),
                        other => other,
                    })?
                }
                None => None,
            };
            let address = default.ok_or_else(|| {
                CoreError::invalid("to", "the record has no email address; give recipients")
            })?;
            checked_list(&[address], "to")?
        }
    };
    let cc = checked_list(&input.cc, "cc")?;
    let bcc = checked_list(&input.bcc, "bcc")?;
    if to.is_empty() {
        return Err(CoreError::invalid("to", "at least one recipient is required").into());
    }
    if to.len() + cc.len() + bcc.len() > MAX_RECIPIENTS {
        return Err(CoreError::invalid(
            "to",
            format!("at most {MAX_RECIPIENTS} recipients in to, cc and bcc together"),
        )
        .into());
    }
    // Rendered now, so what is scheduled is exactly what is sent (T4).
    let rendered = match input.template_id {
        Some(template_id) => {
            let template = Template::find(conn, user, template_id)?;
            let sender = SenderMailbox {
                address: mailbox.address.clone(),
                display_name: mailbox.display_name.clone(),
                signature: mailbox.signature.clone(),
            };
            let context = context::build(
                conn,
                user.account_id,
                user,
                Some(&sender),
                record,
                &input.variables,
            )?;
            Some(engine.render(&template.sources(), &context)?)
        }
        None => None,
    };
    let subject = input
        .subject
        .clone()
        .or_else(|| rendered.as_ref().map(|r| r.subject.clone()))
        .map(|s| header_text(&s))
        .unwrap_or_default();
    let text = input
        .text
        .clone()
        .or_else(|| rendered.as_ref().and_then(|r| r.text.clone()));
    let html = input
        .html
        .clone()
        .or_else(|| rendered.as_ref().and_then(|r| r.html.clone()));
    if subject.is_empty() && parent.is_none() {
        return Err(CoreError::invalid("subject", "is required").into());
    }
    if text.as_deref().is_none_or(str::is_empty) && html.as_deref().is_none_or(str::is_empty) {
        return Err(CoreError::invalid("text", "a text or an HTML body is required").into());
    }
    let send_at = input
        .send_at
        .as_deref()
        .map(|s| due_time(s, input.time_zone.as_deref(), at))
        .transpose()?;
    let message_id = new_message_id(&mailbox);
    let (in_reply_to, references) = match parent {
        Some(parent) => {
            let mut references = parent.references.clone();
            references.extend(parent.message_id.clone());
            (parent.message_id.clone(), references)
        }
        None => (None, Vec::new()),
    };
    let status = if send_at.is_some() {
        "scheduled"
    } else {
        "sending"
    };
    let from_name = mailbox
        .display_name
        .clone()
        .unwrap_or_else(|| user.name.clone());
    let id: i64 = diesel::insert_into(emails::table)
        .values((
            emails::account_id.eq(user.account_id),
            emails::dedupe_key.eq(format!("mid:{}", message_id.to_ascii_lowercase())),
            emails::message_id.eq(&message_id),
            emails::direction.eq("outbound"),
            emails::status.eq(status),
            emails::author.eq("user"),
            emails::mailbox_id.eq(Some(mailbox.id)),
            emails::subject.eq(Some(&subject)),
            emails::from_address.eq(Some(&mailbox.address)),
            emails::from_name.eq(Some(header_text(&from_name))),
            emails::participants.eq(json!({"to": to, "cc": cc, "reply_to": []}).to_string()),
            emails::text_body.eq(&text),
            emails::html_body.eq(&html),
            emails::in_reply_to.eq(&in_reply_to),
            emails::message_references.eq(json!(references).to_string()),
            emails::problems.eq("[]"),
            emails::created_at.eq(at),
            emails::updated_at.eq(at),
        ))
        .returning(emails::id)
        .get_result(conn)?;
    let from = vec![Participant {
        name: None,
        address: mailbox.address.clone(),
    }];
    insert_participants(
        conn,
        user.account_id,
        id,
        &[("from", &from), ("to", &to), ("cc", &cc)],
    )?;
    let thread = parent.map_or(id, |p| p.thread_id);
    diesel::update(emails::table.find(id))
        .set(emails::thread_id.eq(thread))
        .execute(conn)?;
    if let Some(RecordRef {
        kind: RecordKind::Deal,
        id: deal_id,
    }) = record
    {
        link_deal(conn, user.account_id, id, deal_id)?;
    }
    inherit_deals(conn, user.account_id, id, thread)?;
    let token = new_token();
    diesel::insert_into(email_sends::table)
        .values((
            email_sends::email_id.eq(id),
            email_sends::created_by.eq(Some(user.id)),
            email_sends::send_at.eq(send_at),
            email_sends::time_zone.eq(&input.time_zone),
            email_sends::token.eq(&token),
            email_sends::cancel_on_reply.eq(input.cancel_on_reply),
            email_sends::bcc.eq(json!(bcc).to_string()),
            email_sends::created_at.eq(at),
            email_sends::updated_at.eq(at),
        ))
        .execute(conn)?;
    enqueue_send(conn, id, &token, send_at.unwrap_or(at))?;
    Ok(email_list::find(conn, user, id)?)
}

fn enqueue_send(
    conn: &mut DbConnection,
    email_id: i64,
    token: &str,
    run_at: NaiveDateTime,
) -> Result<i64, CoreError> {
    let payload = serde_json::to_string(&SendEmail {
        email_id,
        token: token.to_owned(),
    })
    .map_err(|e| CoreError::Unavailable(e.to_string()))?;
    Ok(herald_scheduler::storage::enqueue(
        conn,
        &herald_scheduler::storage::NewJob {
            job_type: SEND_JOB,
            queue: "mail",
            payload: &payload,
            // The job counts its own attempts (`email_sends.attempts`) and fails the email
            // itself; the queue's limit only bounds a job that keeps crashing.
            max_attempts: 25,
            run_at,
        },
    )?)
}

/// An email the caller may change the sending of: composed in Herald, visible, and theirs (its
/// author or the mailbox's owner) or the caller is an admin.
fn own_send(conn: &mut DbConnection, user: &User, id: i64) -> Result<EmailView, CoreError> {
    let email = email_list::find(conn, user, id)?;
    let created_by: Option<Option<i64>> = email_sends::table
        .find(id)
        .select(email_sends::created_by)
        .first(conn)
        .optional()?;
    let Some(created_by) = created_by else {
        return Err(CoreError::Conflict {
            code: "not_sent_from_herald",
            message: "this email was not composed in Herald; there is nothing to send".into(),
        });
    };
    let mailbox_owner = email
        .mailbox_id
        .map(|m| Mailbox::find(conn, user, m).map(|m| m.owner_id))
        .transpose()
        .ok()
        .flatten();
    if created_by != Some(user.id) && mailbox_owner != Some(user.id) && !user.is_admin() {
        return Err(CoreError::Forbidden(
            "only the email's author, its mailbox's owner or an admin may change its sending"
                .into(),
        ));
    }
    Ok(email)
}

fn refused(email: &EmailView, what: &str) -> CoreError {
    let (code, message) = match email.status.as_str() {
        "sending" | "sent" => (
            "send_started",
            format!(
                "the send has started (status {}); it can no longer be {what}",
                email.status
            ),
        ),
        _ => (
            "invalid_email_status",
            format!("an email with status {} cannot be {what}", email.status),
        ),
    };
    CoreError::Conflict { code, message }
}

/// Moves `id` from `from` to a new status and a new send job (or none), atomically: nothing
/// happens if the status changed meanwhile (the worker started the send).
fn transition(
    conn: &mut DbConnection,
    id: i64,
    from: &str,
    to: &str,
    send_at: Option<NaiveDateTime>,
) -> QueryResult<Option<String>> {
    let at = now();
    let moved = diesel::update(emails::table.find(id))
        .filter(emails::status.eq(from))
        .set((emails::status.eq(to), emails::updated_at.eq(at)))
        .execute(conn)?;
    if moved == 0 {
        return Ok(None);
    }
    let token = new_token();
    diesel::update(email_sends::table.find(id))
        .set((
            email_sends::token.eq(&token),
            email_sends::send_at.eq(send_at),
            email_sends::updated_at.eq(at),
        ))
        .execute(conn)?;
    Ok(Some(token))
}

/// `PATCH`: a scheduled email gets a new time.
pub fn reschedule(
    conn: &mut DbConnection,
    user: &User,
    id: i64,
    input: &Reschedule,
) -> Result<EmailView, CoreError> {
    let email = own_send(conn, user, id)?;
    let due = due_time(&input.send_at, input.time_zone.as_deref(), now())?;
    let token = transition(conn, id, "scheduled", "scheduled", Some(due))?
        .ok_or_else(|| refused(&email, "rescheduled"))?;
    diesel::update(email_sends::table.find(id))
        .set(email_sends::time_zone.eq(&input.time_zone))
        .execute(conn)?;
    if let Some(cancel_on_reply) = input.cancel_on_reply {
        diesel::update(email_sends::table.find(id))
            .set(email_sends::cancel_on_reply.eq(cancel_on_reply))
            .execute(conn)?;
    }
    enqueue_send(conn, id, &token, due)?;
    email_list::find(conn, user, id)
}

/// `POST …/cancel`: a scheduled email is not sent.
pub fn cancel(conn: &mut DbConnection, user: &User, id: i64) -> Result<EmailView, CoreError> {
    let email = own_send(conn, user, id)?;
    transition(conn, id, "scheduled", "cancelled", email.send_at)?
        .ok_or_else(|| refused(&email, "cancelled"))?;
    email_list::find(conn, user, id)
}

/// `POST …/send-now`: a scheduled email goes out now.
pub fn send_now(conn: &mut DbConnection, user: &User, id: i64) -> Result<EmailView, CoreError> {
    let email = own_send(conn, user, id)?;
    let token = transition(conn, id, "scheduled", "sending", None)?
        .ok_or_else(|| refused(&email, "sent now"))?;
    enqueue_send(conn, id, &token, now())?;
    email_list::find(conn, user, id)
}

/// `POST …/retry`: a failed email is really sent again.
pub fn retry(conn: &mut DbConnection, user: &User, id: i64) -> Result<EmailView, CoreError> {
    let email = own_send(conn, user, id)?;
    let token =
        transition(conn, id, "failed", "sending", None)?.ok_or_else(|| CoreError::Conflict {
            code: "invalid_email_status",
            message: format!(
                "only a failed email can be retried; this one is {}",
                email.status
            ),
        })?;
    diesel::update(email_sends::table.find(id))
        .set((
            email_sends::attempts.eq(0),
            email_sends::failure_reason.eq(None::<String>),
            email_sends::started_at.eq(None::<NaiveDateTime>),
        ))
        .execute(conn)?;
    enqueue_send(conn, id, &token, now())?;
    email_list::find(conn, user, id)
}

/// `Re: ` once, whatever prefixes the subject had.
pub fn reply_subject(subject: &str) -> String {
    let mut rest = subject.trim();
    loop {
        let lower = rest.to_ascii_lowercase();
        match ["re:", "aw:", "sv:"]
            .iter()
            .find(|p| lower.starts_with(**p))
        {
            Some(prefix) => rest = rest[prefix.len()..].trim_start(),
            None => break,
        }
    }
    format!("Re: {rest}")
}

/// The email a user may reply to: from a contact (E9).
fn replyable(conn: &mut DbConnection, user: &User, id: i64) -> Result<EmailView, CoreError> {
    let email = email_list::find(conn, user, id)?;
    if !email.can_reply {
        return Err(CoreError::Conflict {
            code: "reply_not_allowed",
            message: "this email was written by a user of the CRM; only emails from contacts \
                      can be replied to"
                .into(),
        });
    }
    Ok(email)
}

fn parent_of(conn: &mut DbConnection, email: &EmailView) -> Result<Parent, CoreError> {
    let references: String = emails::table
        .find(email.id)
        .select(emails::message_references)
        .first(conn)?;
    Ok(Parent {
        thread_id: email.thread_id.unwrap_or(email.id),
        message_id: email.message_id.clone(),
        references: serde_json::from_str(&references).unwrap_or_default(),
    })
}

/// A reply, prefilled: to the Reply-To (else the sender), `Re: ` once, the original quoted.
pub fn reply_draft(conn: &mut DbConnection, user: &User, id: i64) -> Result<ReplyDraft, CoreError> {
    let email = replyable(conn, user, id)?;
    let parent = parent_of(conn, &email)?;
    let to = if email.reply_to.is_empty() {
        email.from.clone().into_iter().collect()
    } else {
        email.reply_to.clone()
    };
    // The mailbox it came to, when the user can send from it; else their sending mailbox.
    let mailbox_id = email
        .mailbox_id
        .and_then(|m| sending_mailbox(conn, user, Some(m)).ok())
        .or_else(|| sending_mailbox(conn, user, None).ok())
        .map(|m| m.id);
    let who = email
        .from
        .as_ref()
        .map(|f| match &f.name {
            Some(name) => format!("{name} <{}>", f.address),
            None => f.address.clone(),
        })
        .unwrap_or_else(|| "someone".into());
    let when = email
        .received_at
        .or(email.sent_at)
        .unwrap_or(email.created_at)
        .format("%a, %-d %b %Y at %H:%M UTC");
    let attribution = format!("On {when}, {who} wrote:");
    let original = email.text.clone().unwrap_or_default();
    let quoted: Vec<String> = original
        .lines()
        .map(|line| {
            if line.is_empty() {
                ">".to_owned()
            } else {
                format!("> {line}")
            }
        })
        .collect();
    let text = format!("\n\n{attribution}\n{}\n", quoted.join("\n"));
    let html = email.html.as_ref().map(|html| {
        format!(
            "<p></p><p>{}</p><blockquote type=\"cite\">{html}</blockquote>",
            ammonia::clean_text(&attribution)
        )
    });
    Ok(ReplyDraft {
        mailbox_id,
        to,
        cc: Vec::new(),
        subject: reply_subject(email.subject.as_deref().unwrap_or_default()),
        text,
        html,
        in_reply_to: parent.message_id.clone(),
        references: {
            let mut references = parent.references;
            references.extend(parent.message_id);
            references
        },
    })
}

/// `POST …/reply`: sends a reply, threaded under the original and linked to the same records.
/// Fields left out come from the draft.
pub fn reply(
    conn: &mut DbConnection,
    engine: &Engine,
    user: &User,
    id: i64,
    input: &ComposeInput,
) -> Result<EmailView, MailboxError> {
    let email = replyable(conn, user, id)?;
    let parent = parent_of(conn, &email)?;
    let draft = reply_draft(conn, user, id)?;
    let input = ComposeInput {
        to: input.to.clone().or(Some(draft.to)),
        subject: input.subject.clone().or(Some(draft.subject)),
        mailbox_id: input.mailbox_id.or(draft.mailbox_id),
        ..input.clone()
    };
    compose(conn, engine, user, &input, Some(&parent))
}
