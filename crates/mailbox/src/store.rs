//! Storing fetched messages once per account (E4, E5): a copy (mailbox, folder, UIDVALIDITY, UID)
//! already seen is skipped; a message already stored from another mailbox, another folder or
//! before a UIDVALIDITY change only gains a copy; a new one becomes an email with its
//! attachments. Sync positions per folder live here too.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::NaiveDateTime;
use diesel::prelude::*;
use herald_core::DbConnection;
use herald_core::schema::users;
use herald_core::time::now;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::model::Mailbox;
use crate::parse::ParsedEmail;
use crate::schema::{
    email_attachments, email_copies, email_deals, email_participants, email_sends, emails,
    mailbox_folders, mailboxes,
};

/// Which folder of a mailbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Inbox,
    Sent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Inbox => "inbox",
            Role::Sent => "sent",
        }
    }
}

/// Where a folder's sync stands.
#[derive(Clone, Debug, PartialEq, Eq, Queryable)]
pub struct FolderState {
    pub folder: String,
    pub uid_validity: i64,
    /// Every UID below this one has been stored.
    pub uid_next: i64,
    pub highest_modseq: Option<i64>,
}

impl FolderState {
    /// Forgets where every folder of the mailbox stands: the next pass reads the history window
    /// again and recognises what it already stored (`herald mailbox resync`).
    pub fn reset(conn: &mut DbConnection, mailbox_id: i64) -> QueryResult<usize> {
        diesel::delete(mailbox_folders::table.filter(mailbox_folders::mailbox_id.eq(mailbox_id)))
            .execute(conn)
    }

    pub fn load(
        conn: &mut DbConnection,
        mailbox_id: i64,
        role: Role,
    ) -> QueryResult<Option<FolderState>> {
        mailbox_folders::table
            .find((mailbox_id, role.as_str()))
            .select((
                mailbox_folders::folder,
                mailbox_folders::uid_validity,
                mailbox_folders::uid_next,
                mailbox_folders::highest_modseq,
            ))
            .first(conn)
            .optional()
    }

    pub fn save(&self, conn: &mut DbConnection, mailbox_id: i64, role: Role) -> QueryResult<()> {
        let at = now();
        let updated = diesel::update(mailbox_folders::table.find((mailbox_id, role.as_str())))
            .set((
                mailbox_folders::folder.eq(&self.folder),
                mailbox_folders::uid_validity.eq(self.uid_validity),
                mailbox_folders::uid_next.eq(self.uid_next),
                mailbox_folders::highest_modseq.eq(self.highest_modseq),
                mailbox_folders::synced_at.eq(at),
            ))
            .execute(conn)?;
        if updated == 0 {
            diesel::insert_into(mailbox_folders::table)
                .values((
                    mailbox_folders::mailbox_id.eq(mailbox_id),
                    mailbox_folders::role.eq(role.as_str()),
                    mailbox_folders::folder.eq(&self.folder),
                    mailbox_folders::uid_validity.eq(self.uid_validity),
                    mailbox_folders::uid_next.eq(self.uid_next),
                    mailbox_folders::highest_modseq.eq(self.highest_modseq),
                    mailbox_folders::synced_at.eq(at),
                ))
                .execute(conn)?;
        }
        Ok(())
    }
}

/// Where a fetched message was found.
#[derive(Clone, Copy, Debug)]
pub struct CopyRef<'a> {
    pub folder: &'a str,
    pub role: Role,
    pub uid_validity: i64,
    pub uid: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// A new email.
    New(i64),
    /// Already stored (another copy of the same message); only the copy was recorded.
    Known(i64),
    /// This very copy was stored before.
    Seen(i64),
}

/// `mid:<Message-ID>`, or a digest of the raw message when it has none.
pub fn dedupe_key(parsed: &ParsedEmail, raw: &[u8]) -> String {
    match &parsed.message_id {
        Some(id) => format!("mid:{}", id.to_ascii_lowercase()),
        None => format!("sha:{}", hex::encode(Sha256::digest(raw))),
    }
}

/// Addresses that make a sender a CRM user (E7): the account's users and mailboxes.
pub fn user_addresses(conn: &mut DbConnection, account_id: i64) -> QueryResult<Vec<String>> {
    let mut addresses: Vec<String> = users::table
        .filter(users::account_id.eq(account_id))
        .select(users::email)
        .load(conn)?;
    addresses.extend(
        mailboxes::table
            .filter(mailboxes::account_id.eq(account_id))
            .select(mailboxes::address)
            .load::<String>(conn)?,
    );
    Ok(addresses
        .into_iter()
        .map(|a| a.to_ascii_lowercase())
        .collect())
}

fn timestamp(rfc3339: &Option<String>) -> Option<NaiveDateTime> {
    rfc3339
        .as_deref()
        .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
        .map(|d| d.naive_utc())
}

/// Stores one fetched message of `mailbox` (call inside a write transaction).
pub fn store(
    conn: &mut DbConnection,
    mailbox: &Mailbox,
    copy: CopyRef<'_>,
    raw: &[u8],
    parsed: &ParsedEmail,
    user_addresses: &[String],
) -> QueryResult<Stored> {
    let seen: Option<i64> = email_copies::table
        .find((mailbox.id, copy.folder, copy.uid_validity, copy.uid))
        .select(email_copies::email_id)
        .first(conn)
        .optional()?;
    if let Some(id) = seen {
        return Ok(Stored::Seen(id));
    }
    let key = dedupe_key(parsed, raw);
    // Inserted straight away, in a savepoint: the unique key (account, dedupe key) tells a
    // message already stored from another mailbox, folder or UIDVALIDITY, also when another
    // mailbox stores it at the same moment (PostgreSQL). No lookup first: a first sync is all
    // new messages, and the lookup's plan, made while the table was empty, got slower with every
    // email stored.
    let stored = match conn
        .transaction(|conn| insert_email(conn, mailbox, copy.role, &key, parsed, user_addresses))
    {
        Ok(id) => Stored::New(id),
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) => Stored::Known(
            emails::table
                .filter(emails::account_id.eq(mailbox.account_id))
                .filter(emails::dedupe_key.eq(&key))
                .select(emails::id)
                .first(conn)?,
        ),
        Err(e) => return Err(e),
    };
    let email_id = match stored {
        Stored::New(id) | Stored::Known(id) | Stored::Seen(id) => id,
    };
    diesel::insert_into(email_copies::table)
        .values((
            email_copies::mailbox_id.eq(mailbox.id),
            email_copies::folder.eq(copy.folder),
            email_copies::uid_validity.eq(copy.uid_validity),
            email_copies::uid.eq(copy.uid),
            email_copies::email_id.eq(email_id),
        ))
        .execute(conn)?;
    Ok(stored)
}

/// `Re: Fwd: AW: Quarterly numbers` → `quarterly numbers`.
pub fn thread_subject(subject: &str) -> String {
    let mut rest = subject.trim();
    loop {
        let lower = rest.to_ascii_lowercase();
        let stripped = ["re:", "fwd:", "fw:", "aw:", "wg:", "sv:", "tr:"]
            .iter()
            .find(|p| lower.starts_with(**p))
            .map(|p| rest[p.len()..].trim_start());
        match stripped {
            Some(next) => rest = next,
            None => break,
        }
    }
    rest.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The thread a new email belongs to (E6): the thread of a message it replies to or references,
/// else of a recent email with the same subject and a participant in common.
fn find_thread(
    conn: &mut DbConnection,
    account_id: i64,
    id: i64,
    parsed: &ParsedEmail,
) -> QueryResult<Option<i64>> {
    let mut ids: Vec<&String> = parsed.in_reply_to.iter().collect();
    ids.extend(parsed.references.iter().rev());
    for message_id in ids {
        let found: Option<(i64, Option<i64>)> = emails::table
            .filter(emails::account_id.eq(account_id))
            .filter(emails::message_id.eq(message_id))
            .filter(emails::id.ne(id))
            .select((emails::id, emails::thread_id))
            .first(conn)
            .optional()?;
        if let Some((parent, thread)) = found {
            return Ok(Some(thread.unwrap_or(parent)));
        }
    }
    // Subject fallback: only for replies and forwards, and only with someone in common.
    let Some(subject) = parsed.subject.as_deref() else {
        return Ok(None);
    };
    let key = thread_subject(subject);
    if key.is_empty() || key == subject.trim().to_lowercase() {
        return Ok(None);
    }
    let addresses: Vec<String> = parsed
        .from
        .iter()
        .chain(&parsed.to)
        .chain(&parsed.cc)
        .map(|p| p.address.to_ascii_lowercase())
        .collect();
    let candidates: Vec<(i64, Option<i64>, Option<String>)> = emails::table
        .filter(emails::account_id.eq(account_id))
        .filter(emails::id.ne(id))
        .filter(
            emails::id.eq_any(
                email_participants::table
                    .filter(email_participants::account_id.eq(account_id))
                    .filter(email_participants::address.eq_any(addresses))
                    .select(email_participants::email_id),
            ),
        )
        .order(emails::id.desc())
        .limit(200)
        .select((emails::id, emails::thread_id, emails::subject))
        .load(conn)?;
    Ok(candidates
        .into_iter()
        .find(|(_, _, s)| s.as_deref().is_some_and(|s| thread_subject(s) == key))
        .map(|(parent, thread, _)| thread.unwrap_or(parent)))
}

fn insert_email(
    conn: &mut DbConnection,
    mailbox: &Mailbox,
    role: Role,
    key: &str,
    parsed: &ParsedEmail,
    user_addresses: &[String],
) -> QueryResult<i64> {
    let from = parsed.from.first();
    let from_user = from.is_some_and(|f| user_addresses.contains(&f.address.to_ascii_lowercase()));
    let (direction, status) = match role {
        Role::Sent => ("outbound", "sent"),
        Role::Inbox if from_user => ("outbound", "sent"),
        Role::Inbox => ("inbound", "received"),
    };
    let at = now();
    let date = timestamp(&parsed.date);
    let id: i64 = diesel::insert_into(emails::table)
        .values((
            emails::account_id.eq(mailbox.account_id),
            emails::dedupe_key.eq(key),
            emails::message_id.eq(&parsed.message_id),
            emails::direction.eq(direction),
            emails::status.eq(status),
            emails::author.eq(if from_user { "user" } else { "contact" }),
            emails::mailbox_id.eq(Some(mailbox.id)),
            emails::subject.eq(&parsed.subject),
            emails::from_address.eq(from.map(|f| f.address.clone())),
            emails::from_name.eq(from.and_then(|f| f.name.clone())),
            emails::participants.eq(
                json!({"to": parsed.to, "cc": parsed.cc, "reply_to": parsed.reply_to}).to_string(),
            ),
            emails::text_body.eq(&parsed.text),
            emails::html_body.eq(&parsed.html),
            emails::in_reply_to.eq(parsed.in_reply_to.first()),
            emails::message_references.eq(json!(parsed.references).to_string()),
            emails::problems.eq(json!(parsed.problems).to_string()),
            emails::sent_at.eq(if direction == "outbound" { date } else { None }),
            emails::received_at.eq(if direction == "inbound" {
                date.or(Some(at))
            } else {
                None
            }),
            emails::created_at.eq(at),
            emails::updated_at.eq(at),
        ))
        .returning(emails::id)
        .get_result(conn)?;
    insert_participants(
        conn,
        mailbox.account_id,
        id,
        &[
            ("from", &parsed.from),
            ("to", &parsed.to),
            ("cc", &parsed.cc),
            ("reply_to", &parsed.reply_to),
        ],
    )?;
    for attachment in &parsed.attachments {
        diesel::insert_into(email_attachments::table)
            .values((
                email_attachments::email_id.eq(id),
                email_attachments::filename.eq(&attachment.filename),
                email_attachments::content_type.eq(&attachment.content_type),
                email_attachments::size.eq(attachment.size as i64),
                email_attachments::content_id.eq(&attachment.content_id),
                email_attachments::content.eq(attachment.data.as_ref().map(|d| STANDARD.encode(d))),
            ))
            .execute(conn)?;
    }
    let thread = find_thread(conn, mailbox.account_id, id, parsed)?.unwrap_or(id);
    diesel::update(emails::table.find(id))
        .set(emails::thread_id.eq(thread))
        .execute(conn)?;
    // Deals and scheduled replies belong to earlier messages of a thread.
    if thread != id {
        inherit_deals(conn, mailbox.account_id, id, thread)?;
        if direction == "inbound" {
            cancel_scheduled_on_reply(conn, thread)?;
        }
    }
    Ok(id)
}

/// Indexes an email's addresses for record timelines (E6).
pub fn insert_participants(
    conn: &mut DbConnection,
    account_id: i64,
    email_id: i64,
    lists: &[(&str, &Vec<crate::parse::Participant>)],
) -> QueryResult<()> {
    let mut seen = std::collections::HashSet::new();
    for (role, list) in lists {
        for participant in list.iter() {
            let address = participant.address.to_ascii_lowercase();
            if !seen.insert((*role, address.clone())) {
                continue;
            }
            let domain = address
                .rsplit_once('@')
                .map(|(_, d)| d.to_owned())
                .unwrap_or_default();
            diesel::insert_into(email_participants::table)
                .values((
                    email_participants::email_id.eq(email_id),
                    email_participants::account_id.eq(account_id),
                    email_participants::address.eq(&address),
                    email_participants::domain.eq(domain),
                    email_participants::role.eq(*role),
                ))
                .execute(conn)?;
        }
    }
    Ok(())
}

/// A reply belongs to the deals of the conversation it continues (E6).
pub fn inherit_deals(
    conn: &mut DbConnection,
    account_id: i64,
    id: i64,
    thread: i64,
) -> QueryResult<()> {
    let deals: Vec<i64> = email_deals::table
        .filter(
            email_deals::email_id.eq_any(
                emails::table
                    .filter(emails::thread_id.eq(thread))
                    .filter(emails::id.ne(id))
                    .select(emails::id),
            ),
        )
        .select(email_deals::deal_id)
        .distinct()
        .load(conn)?;
    for deal_id in deals {
        link_deal(conn, account_id, id, deal_id)?;
    }
    Ok(())
}

/// The contact wrote first: scheduled emails of the thread that asked for it are cancelled (E10).
fn cancel_scheduled_on_reply(conn: &mut DbConnection, thread: i64) -> QueryResult<()> {
    let waiting: Vec<i64> = emails::table
        .filter(emails::thread_id.eq(thread))
        .filter(emails::status.eq("scheduled"))
        .filter(
            emails::id.eq_any(
                email_sends::table
                    .filter(email_sends::cancel_on_reply.eq(true))
                    .select(email_sends::email_id),
            ),
        )
        .select(emails::id)
        .load(conn)?;
    if waiting.is_empty() {
        return Ok(());
    }
    let at = now();
    diesel::update(emails::table.filter(emails::id.eq_any(&waiting)))
        .filter(emails::status.eq("scheduled"))
        .set((emails::status.eq("cancelled"), emails::updated_at.eq(at)))
        .execute(conn)?;
    diesel::update(email_sends::table.filter(email_sends::email_id.eq_any(&waiting)))
        .set((
            email_sends::failure_reason.eq("cancelled: the contact replied first"),
            email_sends::updated_at.eq(at),
        ))
        .execute(conn)?;
    Ok(())
}

/// Links an email to a deal (the deal it was sent from, or one of its thread's).
pub fn link_deal(
    conn: &mut DbConnection,
    account_id: i64,
    email_id: i64,
    deal_id: i64,
) -> QueryResult<()> {
    let linked = email_deals::table
        .find((email_id, deal_id))
        .count()
        .get_result::<i64>(conn)?;
    if linked == 0 {
        diesel::insert_into(email_deals::table)
            .values((
                email_deals::email_id.eq(email_id),
                email_deals::deal_id.eq(deal_id),
                email_deals::account_id.eq(account_id),
            ))
            .execute(conn)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::thread_subject;

    #[test]
    fn reply_and_forward_prefixes_are_stripped_for_threading() {
        assert_eq!(
            thread_subject("Re: Fwd: AW:  Quarterly   Numbers "),
            "quarterly numbers"
        );
        assert_eq!(thread_subject("RE:RE: x"), "x");
        assert_eq!(thread_subject("Quarterly numbers"), "quarterly numbers");
        assert_eq!(thread_subject("Re:"), "");
    }
}
