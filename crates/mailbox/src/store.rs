//! Storing fetched messages once per account (E4, E5): a copy (mailbox, folder, UIDVALIDITY, UID)
//! already seen is skipped; a message already stored from another mailbox, another folder or
//! before a UIDVALIDITY change only gains a copy; a new one becomes an email with its
//! attachments. A batch is stored with a handful of statements, not a few per message: each is a
//! round trip on PostgreSQL. Sync positions per folder live here too.

use std::collections::{HashMap, HashSet};

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
use crate::parse::{ParsedEmail, Participant};
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

/// A fetched message.
#[derive(Clone, Copy, Debug)]
pub struct Incoming<'a> {
    pub uid: i64,
    pub raw: &'a [u8],
    pub parsed: &'a ParsedEmail,
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

impl Stored {
    pub fn email_id(self) -> i64 {
        match self {
            Stored::New(id) | Stored::Known(id) | Stored::Seen(id) => id,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),
    /// Other mailboxes of the account kept storing messages of the batch while this one was
    /// storing them (PostgreSQL); the next pass tries again.
    #[error("messages of the batch kept being stored by another mailbox at the same moment")]
    Contended,
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

/// Messages stored per part of a batch: keeps every statement of a part far below SQLite's
/// 32,766 and PostgreSQL's 65,535 bound values (an email row binds 22), whatever the batch size.
const MESSAGES_PER_PART: usize = 500;
/// Rows per multi-row insert, for the tables where one message can bring many rows.
const ROWS_PER_INSERT: usize = 1000;
/// Base64 attachment bytes per insert: a batch of large attachments is not one huge statement.
const ATTACHMENT_BYTES_PER_INSERT: usize = 16 << 20;
/// Times a batch is stored before giving up while other mailboxes keep storing its messages at
/// the same moment.
const ATTEMPTS: usize = 5;
/// Recent emails with someone in common that the subject fallback compares.
const SUBJECT_CANDIDATES: usize = 200;

/// Runs a multi-row insert (`$rows` a slice of `Insertable` rows) in chunks of `$per` rows.
/// Multi-row VALUES is not in the multi-backend's common SQL: each backend gets its arm.
macro_rules! insert_rows {
    ($conn:expr, $table:expr, $rows:expr, $per:expr) => {{
        let mut inserted = 0;
        for chunk in $rows.chunks($per) {
            let insert = diesel::insert_into($table).values(chunk);
            inserted += match &mut *$conn {
                DbConnection::Postgres(c) => insert.execute(c)?,
                DbConnection::Sqlite(c) => insert.execute(c)?,
            };
        }
        inserted
    }};
}

/// Stores a batch of fetched messages of `mailbox`, in UID order, and where their folder stands
/// after them (`position`: its name, UIDVALIDITY and next UID), in one write transaction, so a
/// pass cut short resumes where it stopped. Each message becomes what storing the messages one
/// after the other would make of it, with a handful of statements per batch instead of about
/// ten per message: a copy (mailbox, folder, UIDVALIDITY, UID) stored before is `Seen`; a
/// message already stored for the account, or earlier in the batch, only gains a copy
/// (`Known`); the rest are `New` emails with their participants and attachments, threaded (E6).
pub fn store_batch(
    conn: &mut DbConnection,
    mailbox: &Mailbox,
    role: Role,
    position: &FolderState,
    messages: &[Incoming<'_>],
    user_addresses: &[String],
) -> Result<Vec<Stored>, StoreError> {
    let keys: Vec<String> = messages
        .iter()
        .map(|m| dedupe_key(m.parsed, m.raw))
        .collect();
    // First optimistically, without looking up copies or dedupe keys: a first sync is all new
    // messages, and the lookups would cost every batch. The inserts go through the unique keys
    // and skip a message stored before (from another mailbox, folder or UIDVALIDITY, or this
    // very copy), also one another mailbox stores at the same moment (PostgreSQL: the insert
    // waits for that transaction). A skipped row rolls the transaction back, and the batch is
    // stored again, carefully: with the lookups.
    let mut careful = false;
    for _ in 0..ATTEMPTS {
        let stored = conn.write(|conn| {
            let mut outcomes = Vec::with_capacity(messages.len());
            // Each part sees the parts before it in the database, as a message the ones before.
            let parts = messages
                .chunks(MESSAGES_PER_PART)
                .zip(keys.chunks(MESSAGES_PER_PART));
            for (messages, keys) in parts {
                let part = Part {
                    mailbox,
                    role,
                    folder: &position.folder,
                    uid_validity: position.uid_validity,
                    messages,
                    keys,
                    user_addresses,
                };
                outcomes.extend(store_part(conn, &part, careful)?);
            }
            position.save(conn, mailbox.id, role)?;
            Ok(outcomes)
        });
        match stored {
            Err(StoreError::Contended) => careful = true,
            stored => return stored,
        }
    }
    Err(StoreError::Contended)
}

/// A part of a batch, with what each step of storing it needs.
struct Part<'a> {
    mailbox: &'a Mailbox,
    role: Role,
    folder: &'a str,
    uid_validity: i64,
    messages: &'a [Incoming<'a>],
    /// The messages' dedupe keys, in the same order.
    keys: &'a [String],
    user_addresses: &'a [String],
}

/// `Contended` when a message turns out to be stored already and `careful` is false, or when
/// another mailbox stored one meanwhile.
fn store_part(
    conn: &mut DbConnection,
    part: &Part<'_>,
    careful: bool,
) -> Result<Vec<Stored>, StoreError> {
    let (seen, known) = if careful {
        (seen_copies(conn, part)?, stored_keys(conn, part)?)
    } else {
        (HashMap::new(), HashMap::new())
    };
    let plan = plan(conn, part, &seen, &known)?;
    insert_emails(conn, &plan.rows)?;
    write_the_rest(conn, part, &plan)?;
    Ok(plan.outcomes)
}

/// The copies of these messages stored before: UID → email.
fn seen_copies(conn: &mut DbConnection, part: &Part<'_>) -> QueryResult<HashMap<i64, i64>> {
    let uids: Vec<i64> = part.messages.iter().map(|m| m.uid).collect();
    let seen: Vec<(i64, i64)> = email_copies::table
        .filter(email_copies::mailbox_id.eq(part.mailbox.id))
        .filter(email_copies::folder.eq(part.folder))
        .filter(email_copies::uid_validity.eq(part.uid_validity))
        .filter(email_copies::uid.eq_any(&uids))
        .select((email_copies::uid, email_copies::email_id))
        .load(conn)?;
    Ok(seen.into_iter().collect())
}

/// The emails already stored under these keys: key → email.
fn stored_keys(conn: &mut DbConnection, part: &Part<'_>) -> QueryResult<HashMap<String, i64>> {
    let keys: Vec<&str> = part.keys.iter().map(String::as_str).collect();
    let found = emails_by(conn, part.mailbox.account_id, "dedupe_key", &keys)?;
    Ok(found.into_iter().map(|e| (e.value, e.id)).collect())
}

/// An email found by one of the values looked up.
#[derive(QueryableByName)]
struct Found {
    #[diesel(sql_type = diesel::sql_types::Text)]
    value: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    thread_id: Option<i64>,
}

/// The account's emails whose `column` (`dedupe_key` or `message_id`, each indexed with
/// `account_id`) is one of `values`, in one round trip.
fn emails_by(
    conn: &mut DbConnection,
    account_id: i64,
    column: &'static str,
    values: &[&str],
) -> QueryResult<Vec<Found>> {
    use diesel::sql_types::{Array, BigInt, Text};
    if values.is_empty() {
        return Ok(Vec::new());
    }
    // Backend arms. PostgreSQL looks each value up on its own (LATERAL … LIMIT 1) through the
    // (account_id, column) index: without column statistics (a first sync fills the table long
    // before autovacuum analyzes it) the planner takes `column IN (many values)` for unselective
    // and reads every email of the account, batch after batch. SQLite uses that index either way.
    match conn {
        DbConnection::Postgres(c) => diesel::sql_query(format!(
            "SELECT e.{column} AS value, e.id, e.thread_id FROM unnest($2) AS v (value) \
             CROSS JOIN LATERAL (SELECT {column}, id, thread_id FROM emails \
                 WHERE account_id = $1 AND {column} = v.value LIMIT 1) AS e"
        ))
        .bind::<BigInt, _>(account_id)
        .bind::<Array<Text>, _>(values)
        .load(c),
        DbConnection::Sqlite(c) => diesel::sql_query(format!(
            "SELECT {column} AS value, id, thread_id FROM emails \
             WHERE account_id = ?1 AND {column} IN (SELECT value FROM json_each(?2))"
        ))
        .bind::<BigInt, _>(account_id)
        .bind::<Text, _>(to_json(values)?)
        .load(c),
    }
}

/// A list bound as one JSON value, for SQLite's `json_each`.
fn to_json<T: serde::Serialize + ?Sized>(values: &T) -> QueryResult<String> {
    serde_json::to_string(values).map_err(|e| diesel::result::Error::SerializationError(e.into()))
}

/// A new email's row. Ids are taken before the insert, so a new email's thread, its own id when
/// it starts one, is written with it: no second write of every email.
#[derive(Insertable)]
#[diesel(table_name = emails, treat_none_as_default_value = false)]
struct EmailRow<'a> {
    id: i64,
    account_id: i64,
    dedupe_key: &'a str,
    message_id: Option<&'a str>,
    thread_id: Option<i64>,
    direction: &'static str,
    status: &'static str,
    author: &'static str,
    mailbox_id: Option<i64>,
    subject: Option<&'a str>,
    from_address: Option<&'a str>,
    from_name: Option<&'a str>,
    participants: String,
    text_body: Option<&'a str>,
    html_body: Option<&'a str>,
    in_reply_to: Option<&'a str>,
    message_references: String,
    problems: String,
    sent_at: Option<NaiveDateTime>,
    received_at: Option<NaiveDateTime>,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

/// What a part of a batch will write, decided before anything is written.
struct Plan<'a> {
    outcomes: Vec<Stored>,
    /// The new emails, sorted by dedupe key: mailboxes storing the same messages at the same
    /// moment take their keys' locks in the same order and cannot deadlock.
    rows: Vec<EmailRow<'a>>,
    /// (message, email id) of each new email, in UID order.
    new: Vec<(usize, i64)>,
    /// New emails that join a thread stored before the batch: (email id, thread, inbound).
    /// Their thread's deals and scheduled replies are looked at once for all of them.
    joined: Vec<(i64, i64, bool)>,
}

/// A new email planned earlier in the batch, as a later one's thread lookup would find it.
struct Planned<'a> {
    id: i64,
    thread: i64,
    subject: Option<&'a str>,
    /// Every address on it (from, to, cc, reply-to), lower-cased, as in `email_participants`.
    addresses: HashSet<String>,
}

/// What happens to a message before its thread is known.
enum Fate {
    Stored(Stored),
    New,
    /// The same UID as an earlier message of the batch: that message's copy.
    SameCopy(usize),
    /// The same dedupe key as an earlier new email of the batch.
    SameEmail(usize),
}

/// Decides what becomes of each message of a part, as storing them one after the other would:
/// which are new, their ids and threads; nothing is written yet.
fn plan<'a>(
    conn: &mut DbConnection,
    part: &'a Part<'a>,
    seen: &HashMap<i64, i64>,
    known: &HashMap<String, i64>,
) -> QueryResult<Plan<'a>> {
    let (mailbox, messages) = (part.mailbox, part.messages);
    let mut fates = Vec::with_capacity(messages.len());
    let mut by_uid: HashMap<i64, usize> = HashMap::new();
    let mut by_key: HashMap<&str, usize> = HashMap::new();
    for (i, (message, key)) in messages.iter().zip(part.keys).enumerate() {
        let fate = if let Some(&id) = seen.get(&message.uid) {
            Fate::Stored(Stored::Seen(id))
        } else if let Some(&earlier) = by_uid.get(&message.uid) {
            Fate::SameCopy(earlier)
        } else if let Some(&id) = known.get(key) {
            Fate::Stored(Stored::Known(id))
        } else if let Some(&earlier) = by_key.get(key.as_str()) {
            Fate::SameEmail(earlier)
        } else {
            by_key.insert(key, i);
            Fate::New
        };
        by_uid.entry(message.uid).or_insert(i);
        fates.push(fate);
    }
    let mut ids = allocate_email_ids(conn, by_key.len())?.into_iter();
    let mut outcomes: Vec<Stored> = Vec::with_capacity(messages.len());
    let mut new = Vec::with_capacity(by_key.len());
    for (i, fate) in fates.into_iter().enumerate() {
        let outcome = match fate {
            Fate::Stored(outcome) => outcome,
            Fate::SameCopy(earlier) => Stored::Seen(outcomes[earlier].email_id()),
            Fate::SameEmail(earlier) => Stored::Known(outcomes[earlier].email_id()),
            Fate::New => {
                let id = ids.next().ok_or_else(|| {
                    diesel::result::Error::QueryBuilderError(
                        "fewer email ids than asked for".into(),
                    )
                })?;
                new.push((i, id));
                Stored::New(id)
            }
        };
        outcomes.push(outcome);
    }

    let stored_parents = stored_by_message_id(conn, mailbox.account_id, messages, &new)?;
    let new_ids: HashSet<i64> = new.iter().map(|&(_, id)| id).collect();
    let mut planned: Vec<Planned<'a>> = Vec::with_capacity(new.len());
    let mut planned_by_message_id: HashMap<&str, i64> = HashMap::new();
    let mut rows = Vec::with_capacity(new.len());
    let mut joined = Vec::new();
    for &(i, id) in &new {
        let parsed = messages[i].parsed;
        let mut thread = header_thread(parsed, &planned_by_message_id, &stored_parents);
        if thread.is_none() {
            thread = subject_thread(conn, mailbox.account_id, parsed, &planned)?;
        }
        let thread = thread.unwrap_or(id);
        let row = email_row(part, id, thread, i);
        // A thread started in this batch has no deals or scheduled replies yet.
        if thread != id && !new_ids.contains(&thread) {
            joined.push((id, thread, row.direction == "inbound"));
        }
        if let Some(message_id) = &parsed.message_id {
            planned_by_message_id.insert(message_id, thread);
        }
        planned.push(Planned {
            id,
            thread,
            subject: parsed.subject.as_deref(),
            addresses: [&parsed.from, &parsed.to, &parsed.cc, &parsed.reply_to]
                .into_iter()
                .flatten()
                .map(|p| p.address.to_ascii_lowercase())
                .collect(),
        });
        rows.push(row);
    }
    rows.sort_by(|a, b| a.dedupe_key.cmp(b.dedupe_key));
    Ok(Plan {
        outcomes,
        rows,
        new,
        joined,
    })
}

/// Takes `n` ids for new emails.
fn allocate_email_ids(conn: &mut DbConnection, n: usize) -> QueryResult<Vec<i64>> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    // At most a part's worth.
    let n = n as i64;
    // Backend arms: PostgreSQL hands out ids from the column's identity sequence, never twice.
    // On SQLite the write transaction holds the database's only write lock, so the ids after the
    // highest ever used (AUTOINCREMENT keeps it in sqlite_sequence) are this transaction's.
    match conn {
        DbConnection::Postgres(c) => {
            let mut ids: Vec<i64> = diesel::sql_query(
                "SELECT nextval(pg_get_serial_sequence('emails', 'id')) AS id \
                 FROM generate_series(1, $1)",
            )
            .bind::<diesel::sql_types::BigInt, _>(n)
            .load::<Id>(c)?
            .into_iter()
            .map(|row| row.id)
            .collect();
            ids.sort_unstable();
            Ok(ids)
        }
        DbConnection::Sqlite(c) => {
            let last = diesel::sql_query(
                "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'emails'), 0), \
                            coalesce((SELECT max(id) FROM emails), 0)) AS id",
            )
            .get_result::<Id>(c)?
            .id;
            Ok((last + 1..=last + n).collect())
        }
    }
}

/// Emails stored before the batch that the new ones name in In-Reply-To or References:
/// Message-ID → (email, thread).
fn stored_by_message_id(
    conn: &mut DbConnection,
    account_id: i64,
    messages: &[Incoming<'_>],
    new: &[(usize, i64)],
) -> QueryResult<HashMap<String, (i64, Option<i64>)>> {
    let mut wanted: Vec<&str> = new
        .iter()
        .flat_map(|&(i, _)| {
            let parsed = messages[i].parsed;
            parsed.in_reply_to.iter().chain(&parsed.references)
        })
        .map(String::as_str)
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let found = emails_by(conn, account_id, "message_id", &wanted)?;
    Ok(found
        .into_iter()
        .map(|e| (e.value, (e.id, e.thread_id)))
        .collect())
}

/// The thread of a message a new email replies to or references, the nearest first: one planned
/// earlier in the batch, or one stored before it.
fn header_thread(
    parsed: &ParsedEmail,
    planned: &HashMap<&str, i64>,
    stored: &HashMap<String, (i64, Option<i64>)>,
) -> Option<i64> {
    parsed
        .in_reply_to
        .iter()
        .chain(parsed.references.iter().rev())
        .find_map(|message_id| {
            planned.get(message_id.as_str()).copied().or_else(|| {
                stored
                    .get(message_id)
                    .map(|&(parent, thread)| thread.unwrap_or(parent))
            })
        })
}

/// Subject fallback (E6), only for replies and forwards, and only with someone in common: the
/// thread of the latest of the 200 most recent emails sharing a participant whose subject is the
/// same once prefixes are stripped. The candidates are the emails stored before the batch and
/// those planned earlier in it, as if the batch were stored one message after the other.
fn subject_thread(
    conn: &mut DbConnection,
    account_id: i64,
    parsed: &ParsedEmail,
    planned: &[Planned<'_>],
) -> QueryResult<Option<i64>> {
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
    if addresses.is_empty() {
        return Ok(None);
    }
    let stored: Vec<(i64, Option<i64>, Option<String>)> = emails::table
        .filter(emails::account_id.eq(account_id))
        .filter(
            emails::id.eq_any(
                email_participants::table
                    .filter(email_participants::account_id.eq(account_id))
                    .filter(email_participants::address.eq_any(&addresses))
                    .select(email_participants::email_id),
            ),
        )
        .order(emails::id.desc())
        .limit(SUBJECT_CANDIDATES as i64)
        .select((emails::id, emails::thread_id, emails::subject))
        .load(conn)?;
    let mut candidates: Vec<(i64, i64, Option<&str>)> = stored
        .iter()
        .map(|(id, thread, subject)| (*id, thread.unwrap_or(*id), subject.as_deref()))
        .chain(
            planned
                .iter()
                .filter(|p| addresses.iter().any(|a| p.addresses.contains(a)))
                .map(|p| (p.id, p.thread, p.subject)),
        )
        .collect();
    candidates.sort_unstable_by_key(|&(id, _, _)| std::cmp::Reverse(id));
    candidates.truncate(SUBJECT_CANDIDATES);
    Ok(candidates
        .into_iter()
        .find(|(_, _, s)| s.is_some_and(|s| thread_subject(s) == key))
        .map(|(_, thread, _)| thread))
}

/// The row of the part's `i`th message, a new email.
fn email_row<'a>(part: &'a Part<'a>, id: i64, thread: i64, i: usize) -> EmailRow<'a> {
    let parsed = part.messages[i].parsed;
    let from = parsed.from.first();
    let from_user = from.is_some_and(|f| {
        part.user_addresses
            .contains(&f.address.to_ascii_lowercase())
    });
    let (direction, status) = match part.role {
        Role::Sent => ("outbound", "sent"),
        Role::Inbox if from_user => ("outbound", "sent"),
        Role::Inbox => ("inbound", "received"),
    };
    let at = now();
    let date = timestamp(&parsed.date);
    EmailRow {
        id,
        account_id: part.mailbox.account_id,
        dedupe_key: &part.keys[i],
        message_id: parsed.message_id.as_deref(),
        thread_id: Some(thread),
        direction,
        status,
        author: if from_user { "user" } else { "contact" },
        mailbox_id: Some(part.mailbox.id),
        subject: parsed.subject.as_deref(),
        from_address: from.map(|f| f.address.as_str()),
        from_name: from.and_then(|f| f.name.as_deref()),
        participants: json!({"to": parsed.to, "cc": parsed.cc, "reply_to": parsed.reply_to})
            .to_string(),
        text_body: parsed.text.as_deref(),
        html_body: parsed.html.as_deref(),
        in_reply_to: parsed.in_reply_to.first().map(String::as_str),
        message_references: json!(parsed.references).to_string(),
        problems: json!(parsed.problems).to_string(),
        sent_at: if direction == "outbound" { date } else { None },
        received_at: if direction == "inbound" {
            date.or(Some(at))
        } else {
            None
        },
        created_at: at,
        updated_at: at,
    }
}

/// Inserts the new emails; `Contended` when one of their keys was stored already.
fn insert_emails(conn: &mut DbConnection, rows: &[EmailRow<'_>]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let insert = diesel::insert_into(emails::table)
        .values(rows)
        .on_conflict((emails::account_id, emails::dedupe_key))
        .do_nothing();
    // Backend arms: multi-row VALUES is not in the multi-backend's common SQL.
    let inserted = match conn {
        DbConnection::Postgres(c) => insert.execute(c)?,
        DbConnection::Sqlite(c) => insert.execute(c)?,
    };
    if inserted < rows.len() {
        return Err(StoreError::Contended);
    }
    Ok(())
}

#[derive(Insertable)]
#[diesel(table_name = email_attachments, treat_none_as_default_value = false)]
struct AttachmentRow<'a> {
    email_id: i64,
    filename: Option<&'a str>,
    content_type: &'a str,
    size: i64,
    content_id: Option<&'a str>,
    content: Option<String>,
}

#[derive(Insertable)]
#[diesel(table_name = email_copies, treat_none_as_default_value = false)]
struct CopyRow<'a> {
    mailbox_id: i64,
    folder: &'a str,
    uid_validity: i64,
    uid: i64,
    email_id: i64,
}

#[derive(Insertable)]
#[diesel(table_name = email_deals, treat_none_as_default_value = false)]
struct DealRow {
    email_id: i64,
    deal_id: i64,
    account_id: i64,
}

/// Everything of a part but the emails themselves: participants, attachments, copies, the deals
/// of the threads new emails joined, and the scheduled replies an inbound one cancels.
fn write_the_rest(
    conn: &mut DbConnection,
    part: &Part<'_>,
    plan: &Plan<'_>,
) -> Result<(), StoreError> {
    let (mailbox, messages) = (part.mailbox, part.messages);
    let mut participants = Vec::new();
    for &(i, id) in &plan.new {
        participants.extend(participant_rows(
            mailbox.account_id,
            id,
            &participant_lists(messages[i].parsed),
        ));
    }
    insert_rows!(
        conn,
        email_participants::table,
        participants,
        ROWS_PER_INSERT
    );
    insert_attachments(conn, messages, &plan.new)?;

    let copies: Vec<CopyRow> = messages
        .iter()
        .zip(&plan.outcomes)
        .filter(|(_, outcome)| !matches!(outcome, Stored::Seen(_)))
        .map(|(message, outcome)| CopyRow {
            mailbox_id: mailbox.id,
            folder: part.folder,
            uid_validity: part.uid_validity,
            uid: message.uid,
            email_id: outcome.email_id(),
        })
        .collect();
    // A copy stored before holds the same message, whose key the emails' insert already found;
    // this catches a server that gave a stored UID to another message.
    if !copies.is_empty() {
        let insert = diesel::insert_into(email_copies::table)
            .values(copies.as_slice())
            .on_conflict_do_nothing();
        let inserted = match &mut *conn {
            DbConnection::Postgres(c) => insert.execute(c)?,
            DbConnection::Sqlite(c) => insert.execute(c)?,
        };
        if inserted < copies.len() {
            return Err(StoreError::Contended);
        }
    }

    // Deals and scheduled replies belong to earlier messages of a thread.
    if plan.joined.is_empty() {
        return Ok(());
    }
    let mut threads: Vec<i64> = plan.joined.iter().map(|&(_, thread, _)| thread).collect();
    threads.sort_unstable();
    threads.dedup();
    let deals = thread_deals(conn, &threads)?;
    let links: Vec<DealRow> = plan
        .joined
        .iter()
        .flat_map(|&(email_id, thread, _)| {
            deals
                .iter()
                .filter(move |d| d.thread == thread)
                .map(move |d| DealRow {
                    email_id,
                    deal_id: d.deal_id,
                    account_id: mailbox.account_id,
                })
        })
        .collect();
    insert_rows!(conn, email_deals::table, links, ROWS_PER_INSERT);
    let mut replied: Vec<i64> = plan
        .joined
        .iter()
        .filter(|&&(_, _, inbound)| inbound)
        .map(|&(_, thread, _)| thread)
        .collect();
    replied.sort_unstable();
    replied.dedup();
    Ok(cancel_scheduled_on_reply(
        conn,
        mailbox.account_id,
        &replied,
    )?)
}

#[derive(QueryableByName)]
struct ThreadDeal {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    thread: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    deal_id: i64,
}

/// The deals of these threads' emails. The new emails that joined them carry none yet: these are
/// the deals of the emails before.
fn thread_deals(conn: &mut DbConnection, threads: &[i64]) -> QueryResult<Vec<ThreadDeal>> {
    use diesel::sql_types::{Array, BigInt, Text};
    // Backend arms. PostgreSQL: each thread on its own, through the thread index, as in
    // `emails_by`; SQLite's planner takes that index either way.
    match conn {
        DbConnection::Postgres(c) => diesel::sql_query(
            "SELECT t.thread, d.deal_id FROM unnest($1) AS t (thread) \
             CROSS JOIN LATERAL (SELECT DISTINCT deal_id FROM email_deals WHERE email_id IN \
                 (SELECT id FROM emails WHERE thread_id = t.thread)) AS d",
        )
        .bind::<Array<BigInt>, _>(threads)
        .load(c),
        DbConnection::Sqlite(c) => diesel::sql_query(
            "SELECT DISTINCT emails.thread_id AS thread, email_deals.deal_id \
             FROM emails JOIN email_deals ON email_deals.email_id = emails.id \
             WHERE emails.thread_id IN (SELECT value FROM json_each(?1))",
        )
        .bind::<Text, _>(to_json(threads)?)
        .load(c),
    }
}

fn insert_attachments(
    conn: &mut DbConnection,
    messages: &[Incoming<'_>],
    new: &[(usize, i64)],
) -> QueryResult<()> {
    let mut rows: Vec<AttachmentRow> = Vec::new();
    let mut bytes = 0;
    for &(i, email_id) in new {
        for attachment in &messages[i].parsed.attachments {
            let content = attachment.data.as_ref().map(|d| STANDARD.encode(d));
            bytes += content.as_ref().map_or(0, String::len);
            rows.push(AttachmentRow {
                email_id,
                filename: attachment.filename.as_deref(),
                content_type: &attachment.content_type,
                size: attachment.size as i64,
                content_id: attachment.content_id.as_deref(),
                content,
            });
            if bytes >= ATTACHMENT_BYTES_PER_INSERT {
                insert_rows!(conn, email_attachments::table, rows, ROWS_PER_INSERT);
                rows.clear();
                bytes = 0;
            }
        }
    }
    insert_rows!(conn, email_attachments::table, rows, ROWS_PER_INSERT);
    Ok(())
}

/// An email's address lists by participant role.
fn participant_lists(parsed: &ParsedEmail) -> [(&'static str, &Vec<Participant>); 4] {
    [
        ("from", &parsed.from),
        ("to", &parsed.to),
        ("cc", &parsed.cc),
        ("reply_to", &parsed.reply_to),
    ]
}

#[derive(Insertable)]
#[diesel(table_name = email_participants, treat_none_as_default_value = false)]
struct ParticipantRow<'a> {
    email_id: i64,
    account_id: i64,
    address: String,
    domain: String,
    role: &'a str,
}

/// An email's addresses, lower-cased, once per role.
fn participant_rows<'a>(
    account_id: i64,
    email_id: i64,
    lists: &[(&'a str, &Vec<Participant>)],
) -> Vec<ParticipantRow<'a>> {
    let mut seen = HashSet::new();
    let mut rows = Vec::new();
    for &(role, list) in lists {
        for participant in list {
            let address = participant.address.to_ascii_lowercase();
            if !seen.insert((role, address.clone())) {
                continue;
            }
            let domain = address
                .rsplit_once('@')
                .map(|(_, d)| d.to_owned())
                .unwrap_or_default();
            rows.push(ParticipantRow {
                email_id,
                account_id,
                address,
                domain,
                role,
            });
        }
    }
    rows
}

/// Indexes an email's addresses for record timelines (E6).
pub fn insert_participants(
    conn: &mut DbConnection,
    account_id: i64,
    email_id: i64,
    lists: &[(&str, &Vec<Participant>)],
) -> QueryResult<()> {
    let rows = participant_rows(account_id, email_id, lists);
    insert_rows!(conn, email_participants::table, rows, ROWS_PER_INSERT);
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

/// The contact wrote first: scheduled emails of these threads that asked for it are cancelled
/// (E10).
fn cancel_scheduled_on_reply(
    conn: &mut DbConnection,
    account_id: i64,
    threads: &[i64],
) -> QueryResult<()> {
    if threads.is_empty() {
        return Ok(());
    }
    // Through the account's scheduled emails (index on account and status), few whatever the
    // number of threads or of emails.
    let waiting: Vec<i64> = emails::table
        .filter(emails::account_id.eq(account_id))
        .filter(emails::status.eq("scheduled"))
        .filter(emails::thread_id.eq_any(threads))
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
