//! Reading emails (E11, E12) and showing them on record timelines (E6): every query is limited to
//! the viewer's account and to what the viewer may see. An email is hidden only when every
//! mailbox holding it is another user's with visibility `owner`; one whose mailboxes were all
//! removed stays visible.

use chrono::NaiveDateTime;
use diesel::dsl::{exists, not};
use diesel::prelude::*;
use herald_core::identity::User;
use herald_core::pagination::{Page, PageRequest};
use herald_core::records::{Company, Deal, Person, Record, RecordKind};
use herald_core::time::{rfc3339, rfc3339_opt};
use herald_core::timeline::{TimelineEntry, TimelineQuery, TimelineSource};
use herald_core::{CoreError, CoreResult, DbConnection};
use serde::Serialize;

use crate::parse::Participant;
use crate::schema::{
    email_copies, email_deals, email_participants, email_sends, emails, mailboxes,
};

#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = emails)]
struct Row {
    id: i64,
    message_id: Option<String>,
    thread_id: Option<i64>,
    direction: String,
    status: String,
    author: String,
    mailbox_id: Option<i64>,
    subject: Option<String>,
    from_address: Option<String>,
    from_name: Option<String>,
    participants: String,
    text_body: Option<String>,
    html_body: Option<String>,
    sent_at: Option<NaiveDateTime>,
    received_at: Option<NaiveDateTime>,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

/// An email as the API shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct EmailView {
    pub id: i64,
    /// `received`, `sent`, `scheduled`, `sending`, `failed` or `cancelled`
    pub status: String,
    /// `inbound` or `outbound`
    pub direction: String,
    /// `contact` or `user` (E7)
    pub author: String,
    /// Only emails from contacts can be replied to.
    pub can_reply: bool,
    pub mailbox_id: Option<i64>,
    pub from: Option<Participant>,
    pub to: Vec<Participant>,
    pub cc: Vec<Participant>,
    pub reply_to: Vec<Participant>,
    pub subject: Option<String>,
    pub text: Option<String>,
    /// Sanitized for display: no scripts, event handlers or other active content.
    pub html: Option<String>,
    pub message_id: Option<String>,
    pub thread_id: Option<i64>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub sent_at: Option<NaiveDateTime>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub received_at: Option<NaiveDateTime>,
    /// When a scheduled email is due (UTC), for emails composed in Herald.
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub send_at: Option<NaiveDateTime>,
    /// The time zone `send_at` was given in.
    pub time_zone: Option<String>,
    /// Why a send failed (or was cancelled automatically), in words.
    pub failure_reason: Option<String>,
    /// Sending attempts so far.
    pub send_attempts: Option<i32>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: NaiveDateTime,
}

/// The sending state shown with an email composed in Herald.
#[derive(Clone, Debug, Queryable)]
struct SendRow {
    email_id: i64,
    send_at: Option<NaiveDateTime>,
    time_zone: Option<String>,
    failure_reason: Option<String>,
    attempts: i32,
}

/// Adds the sending state to emails composed in Herald.
fn with_sends(conn: &mut DbConnection, mut views: Vec<EmailView>) -> CoreResult<Vec<EmailView>> {
    let ids: Vec<i64> = views
        .iter()
        .filter(|v| v.direction == "outbound")
        .map(|v| v.id)
        .collect();
    if ids.is_empty() {
        return Ok(views);
    }
    let sends: Vec<SendRow> = email_sends::table
        .filter(email_sends::email_id.eq_any(ids))
        .select((
            email_sends::email_id,
            email_sends::send_at,
            email_sends::time_zone,
            email_sends::failure_reason,
            email_sends::attempts,
        ))
        .load(conn)?;
    for send in sends {
        if let Some(view) = views.iter_mut().find(|v| v.id == send.email_id) {
            view.send_at = send.send_at;
            view.time_zone = send.time_zone;
            view.failure_reason = send.failure_reason;
            view.send_attempts = Some(send.attempts);
        }
    }
    Ok(views)
}

#[derive(Default, serde::Deserialize)]
struct Participants {
    #[serde(default)]
    to: Vec<Participant>,
    #[serde(default)]
    cc: Vec<Participant>,
    #[serde(default)]
    reply_to: Vec<Participant>,
}

impl Row {
    fn view(self) -> EmailView {
        let participants: Participants =
            serde_json::from_str(&self.participants).unwrap_or_default();
        EmailView {
            id: self.id,
            can_reply: self.author == "contact",
            status: self.status,
            direction: self.direction,
            author: self.author,
            mailbox_id: self.mailbox_id,
            from: self.from_address.map(|address| Participant {
                name: self.from_name,
                address,
            }),
            to: participants.to,
            cc: participants.cc,
            reply_to: participants.reply_to,
            subject: self.subject,
            text: self.text_body,
            // Mail HTML comes from strangers: scripts, handlers and other active content are
            // removed before it is served for display (X7).
            html: self.html_body.map(|html| ammonia::clean(&html)),
            message_id: self.message_id,
            thread_id: self.thread_id,
            sent_at: self.sent_at,
            received_at: self.received_at,
            send_at: None,
            time_zone: None,
            failure_reason: None,
            send_attempts: None,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// Which emails to list.
#[derive(Clone, Debug, Default)]
pub struct EmailFilter {
    pub status: Option<String>,
    pub mailbox_id: Option<i64>,
    pub record: Option<(RecordKind, i64)>,
    /// Words in the subject or the text.
    pub text: Option<String>,
}

diesel::define_sql_function!(fn lower(x: diesel::sql_types::Nullable<diesel::sql_types::Text>) -> diesel::sql_types::Nullable<diesel::sql_types::Text>);

pub const STATUSES: &[&str] = &[
    "received",
    "sent",
    "scheduled",
    "sending",
    "failed",
    "cancelled",
];

/// How a record finds its emails (E6).
enum RecordEmails {
    /// A person by their addresses; a company by its domain and its people's addresses.
    Participants(Vec<String>, Option<String>),
    /// A deal by its links: the emails sent from it and the rest of their threads.
    Deal(i64),
    None,
}

fn record_emails(
    conn: &mut DbConnection,
    account_id: i64,
    kind: RecordKind,
    id: i64,
) -> CoreResult<RecordEmails> {
    match kind {
        RecordKind::Person => {
            let person = Person::find(conn, account_id, id)?;
            Ok(RecordEmails::Participants(
                person
                    .emails
                    .iter()
                    .map(|e| e.to_ascii_lowercase())
                    .collect(),
                None,
            ))
        }
        RecordKind::Company => {
            let company = Company::find(conn, account_id, id)?;
            let people: Vec<String> = company
                .people_addresses(conn)?
                .into_iter()
                .chain(company.emails.iter().cloned())
                .map(|e| e.to_ascii_lowercase())
                .collect();
            Ok(RecordEmails::Participants(people, company.domain))
        }
        RecordKind::Deal => Ok(RecordEmails::Deal(
            <Deal as Record>::find(conn, account_id, id)?.id,
        )),
        // E6 links emails to persons, companies and deals only.
        RecordKind::Lead => {
            <herald_core::records::Lead as Record>::find(conn, account_id, id)?;
            Ok(RecordEmails::None)
        }
    }
}

macro_rules! visible_to {
    ($viewer:expr) => {
        exists(
            email_copies::table
                .inner_join(mailboxes::table)
                .filter(email_copies::email_id.eq(emails::id))
                .filter(
                    mailboxes::visibility
                        .eq("everyone")
                        .or(mailboxes::owner_id.eq($viewer)),
                ),
        )
        .or(not(exists(
            email_copies::table.filter(email_copies::email_id.eq(emails::id)),
        ))
        // Not (yet) seen in a folder: composed in Herald, shown as its mailbox allows.
        .and(
            emails::mailbox_id.is_null().or(emails::mailbox_id.eq_any(
                mailboxes::table
                    .filter(
                        mailboxes::visibility
                            .eq("everyone")
                            .or(mailboxes::owner_id.eq($viewer)),
                    )
                    .select(mailboxes::id.nullable()),
            )),
        ))
    };
}

/// Emails the viewer may see, newest first.
pub fn list(
    conn: &mut DbConnection,
    viewer: &User,
    filter: &EmailFilter,
    page: PageRequest,
) -> CoreResult<Page<EmailView>> {
    if let Some(status) = &filter.status
        && !STATUSES.contains(&status.as_str())
    {
        return Err(CoreError::invalid(
            "status",
            format!("`{status}` is not one of: {}", STATUSES.join(", ")),
        ));
    }
    let mut query = emails::table
        .filter(emails::account_id.eq(viewer.account_id))
        .filter(visible_to!(viewer.id))
        .select(Row::as_select())
        .order(emails::id.desc())
        .limit(page.limit + 1)
        .into_boxed();
    if let Some(before) = page.before_id {
        query = query.filter(emails::id.lt(before));
    }
    if let Some(status) = &filter.status {
        query = query.filter(emails::status.eq(status.clone()));
    }
    if let Some(mailbox_id) = filter.mailbox_id {
        query = query.filter(exists(
            email_copies::table
                .filter(email_copies::email_id.eq(emails::id))
                .filter(email_copies::mailbox_id.eq(mailbox_id)),
        ));
    }
    if let Some(text) = filter
        .text
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        // Case-insensitive on both backends; `%` and `_` in the words are taken literally.
        let pattern = format!(
            "%{}%",
            text.to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        query = query.filter(
            lower(emails::subject)
                .like(pattern.clone())
                .escape('\\')
                .or(lower(emails::text_body).like(pattern).escape('\\')),
        );
    }
    if let Some((kind, id)) = filter.record {
        let found = record_emails(conn, viewer.account_id, kind, id).map_err(|e| match e {
            CoreError::NotFound { .. } => {
                CoreError::invalid("record", format!("{} {id} does not exist", kind.as_str()))
            }
            other => other,
        })?;
        match found {
            RecordEmails::Participants(addresses, domain) => {
                let by_address = email_participants::table
                    .filter(email_participants::account_id.eq(viewer.account_id))
                    .filter(email_participants::address.eq_any(addresses))
                    .select(email_participants::email_id);
                let by_domain = email_participants::table
                    .filter(email_participants::account_id.eq(viewer.account_id))
                    .filter(email_participants::domain.eq(domain.unwrap_or_default()))
                    .select(email_participants::email_id);
                query = query.filter(
                    emails::id
                        .eq_any(by_address)
                        .or(emails::id.eq_any(by_domain)),
                );
            }
            RecordEmails::Deal(deal_id) => {
                query = query.filter(
                    emails::id.eq_any(
                        email_deals::table
                            .filter(email_deals::deal_id.eq(deal_id))
                            .select(email_deals::email_id),
                    ),
                );
            }
            RecordEmails::None => {
                return Ok(Page::from_rows(Vec::new(), page.limit, |r: &Row| r.id).map(Row::view));
            }
        }
    }
    let rows: Vec<Row> = query.load(conn)?;
    let mut page = Page::from_rows(rows, page.limit, |r| r.id).map(Row::view);
    page.items = with_sends(conn, page.items)?;
    Ok(page)
}

/// One email the viewer may see.
pub fn find(conn: &mut DbConnection, viewer: &User, id: i64) -> CoreResult<EmailView> {
    let email = emails::table
        .filter(emails::account_id.eq(viewer.account_id))
        .filter(emails::id.eq(id))
        .filter(visible_to!(viewer.id))
        .select(Row::as_select())
        .first(conn)
        .optional()?
        .map(Row::view)
        .ok_or_else(|| CoreError::not_found("email", id))?;
    Ok(with_sends(conn, vec![email])?.remove(0))
}

/// How many pages of emails one timeline read looks through (200 each).
const TIMELINE_PAGES: usize = 25;

/// Emails on person, company and deal timelines.
#[derive(Debug, Default)]
pub struct EmailTimeline;

impl TimelineSource for EmailTimeline {
    fn entries(
        &self,
        conn: &mut DbConnection,
        query: &TimelineQuery,
        after: Option<&herald_core::timeline::TimelineCursor>,
        limit: i64,
    ) -> CoreResult<Vec<TimelineEntry>> {
        let viewer = User::find(conn, query.viewer_id)?;
        let filter = EmailFilter {
            record: Some((query.kind, query.record_id)),
            ..EmailFilter::default()
        };
        // Emails are listed by id, the timeline orders by time: read them all (up to a bound),
        // keep those after the cursor; the timeline sorts, merges and cuts the page.
        let _ = limit;
        let mut entries = Vec::new();
        let mut page = PageRequest::first(herald_core::pagination::MAX_LIMIT);
        for _ in 0..TIMELINE_PAGES {
            let batch = list(conn, &viewer, &filter, page)?;
            for email in &batch.items {
                let entry = TimelineEntry {
                    kind: "email".into(),
                    id: email.id,
                    occurred_at: email
                        .sent_at
                        .or(email.received_at)
                        .unwrap_or(email.created_at),
                    data: serde_json::to_value(email).unwrap_or_default(),
                };
                if after.is_none_or(|c| c.admits(&entry)) {
                    entries.push(entry);
                }
            }
            match batch.next_cursor {
                Some(cursor) => page = PageRequest::parse(Some(page.limit), Some(&cursor))?,
                None => break,
            }
        }
        Ok(entries)
    }
}
