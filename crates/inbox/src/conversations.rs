//! The inbox (M5–M8): views with counts, a conversation with its messages and its audit trail,
//! assignment (only to available users), close and reopen. Every query is limited to the
//! viewer's account.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use herald_core::identity::User;
use herald_core::pagination::{Page, PageRequest};
use herald_core::schema::users;
use herald_core::time::{now, rfc3339, rfc3339_opt};
use herald_core::{CoreError, CoreResult, DbConnection};
use serde::Serialize;

use crate::inbound::Media;
use crate::schema::{conversation_counts, conversation_events, conversations, messages};

/// `GET /api/v1/conversations?view=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// Open, assigned to me.
    Mine,
    /// Open, no assignee.
    Unassigned,
    /// Open, assigned to someone else.
    Others,
    Closed,
    All,
}

impl View {
    pub const ALL: [View; 5] = [
        View::Mine,
        View::Unassigned,
        View::Others,
        View::Closed,
        View::All,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            View::Mine => "mine",
            View::Unassigned => "unassigned",
            View::Others => "others",
            View::Closed => "closed",
            View::All => "all",
        }
    }

    pub fn parse(value: &str) -> CoreResult<View> {
        View::ALL
            .into_iter()
            .find(|v| v.as_str() == value)
            .ok_or_else(|| {
                CoreError::invalid(
                    "view",
                    format!("`{value}` is not one of: mine, unassigned, others, closed, all"),
                )
            })
    }
}

#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = conversations)]
struct Row {
    id: i64,
    channel_id: i64,
    contact_id: String,
    contact_name: Option<String>,
    status: String,
    assignee_id: Option<i64>,
    last_message_at: NaiveDateTime,
    last_inbound_at: Option<NaiveDateTime>,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationView {
    pub id: i64,
    pub channel_id: i64,
    /// `whatsapp:+15551234567`, or the contact's Messenger id.
    pub contact_id: String,
    pub contact_name: Option<String>,
    /// `open` or `closed`
    pub status: String,
    pub assignee_id: Option<i64>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub last_message_at: NaiveDateTime,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_inbound_at: Option<NaiveDateTime>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: NaiveDateTime,
}

impl From<Row> for ConversationView {
    fn from(r: Row) -> Self {
        ConversationView {
            id: r.id,
            channel_id: r.channel_id,
            contact_id: r.contact_id,
            contact_name: r.contact_name,
            status: r.status,
            assignee_id: r.assignee_id,
            last_message_at: r.last_message_at,
            last_inbound_at: r.last_inbound_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// One entry of a conversation's audit trail.
#[derive(Clone, Debug, Queryable, Serialize, utoipa::ToSchema)]
pub struct EventView {
    pub id: i64,
    /// `assigned`, `closed` or `reopened`
    pub kind: String,
    /// Who did it; null when the contact's message reopened it.
    pub actor_id: Option<i64>,
    pub from_user_id: Option<i64>,
    pub to_user_id: Option<i64>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
}

/// A conversation with its audit trail.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationDetail {
    #[serde(flatten)]
    pub conversation: ConversationView,
    pub events: Vec<EventView>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct MessageView {
    pub id: i64,
    /// `inbound` or `outbound`
    pub direction: String,
    pub provider_message_id: Option<String>,
    pub body: Option<String>,
    pub media: Vec<Media>,
    /// `received`, `queued`, `sent`, `delivered`, `read` or `failed`
    pub status: String,
    pub failure_reason: Option<String>,
    pub author_id: Option<i64>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: NaiveDateTime,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = messages)]
struct MessageRow {
    id: i64,
    direction: String,
    provider_message_id: Option<String>,
    body: Option<String>,
    media: String,
    status: String,
    failure_reason: Option<String>,
    author_id: Option<i64>,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

impl From<MessageRow> for MessageView {
    fn from(r: MessageRow) -> Self {
        MessageView {
            id: r.id,
            direction: r.direction,
            provider_message_id: r.provider_message_id,
            body: r.body,
            media: serde_json::from_str(&r.media).unwrap_or_default(),
            status: r.status,
            failure_reason: r.failure_reason,
            author_id: r.author_id,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// One message by id (the caller checked the conversation's account).
pub fn message(conn: &mut DbConnection, id: i64) -> CoreResult<MessageView> {
    Ok(messages::table
        .find(id)
        .select(MessageRow::as_select())
        .first::<MessageRow>(conn)?
        .into())
}

type Boxed<'a> = conversations::BoxedQuery<'a, herald_core::db::MultiBackend>;

fn in_view(viewer: &User, view: View) -> Boxed<'static> {
    let query = conversations::table
        .filter(conversations::account_id.eq(viewer.account_id))
        .into_boxed();
    let open = conversations::status.eq("open");
    match view {
        View::Mine => query
            .filter(open)
            .filter(conversations::assignee_id.eq(viewer.id)),
        View::Unassigned => query
            .filter(open)
            .filter(conversations::assignee_id.is_null()),
        View::Others => query
            .filter(open)
            .filter(conversations::assignee_id.is_not_null())
            .filter(conversations::assignee_id.ne(viewer.id)),
        View::Closed => query.filter(conversations::status.eq("closed")),
        View::All => query,
    }
}

/// Whether a conversation with this status and assignee is in the viewer's view (the same
/// rules as [`in_view`], for the kept counts).
fn holds(view: View, viewer: &User, status: &str, assignee: Option<i64>) -> bool {
    let open = status == "open";
    match view {
        View::Mine => open && assignee == Some(viewer.id),
        View::Unassigned => open && assignee.is_none(),
        View::Others => open && assignee.is_some_and(|a| a != viewer.id),
        View::Closed => status == "closed",
        View::All => true,
    }
}

/// How many conversations each view holds for the viewer, from the counts the database keeps
/// (a handful of rows per account, not a count over its conversations).
pub fn counts(conn: &mut DbConnection, viewer: &User) -> CoreResult<Vec<(View, i64)>> {
    let kept: Vec<(String, i64, i64)> = conversation_counts::table
        .filter(conversation_counts::account_id.eq(viewer.account_id))
        .select((
            conversation_counts::status,
            conversation_counts::assignee_id,
            conversation_counts::n,
        ))
        .load(conn)?;
    Ok(View::ALL
        .into_iter()
        .map(|view| {
            let n = kept
                .iter()
                .filter(|(status, assignee, _)| {
                    holds(view, viewer, status, Some(*assignee).filter(|a| *a != 0))
                })
                .map(|(_, _, n)| n)
                .sum();
            (view, n)
        })
        .collect())
}

/// A view, newest activity first; the cursor is the last item's (time, id).
pub fn list(
    conn: &mut DbConnection,
    viewer: &User,
    view: View,
    limit: i64,
    after: Option<(NaiveDateTime, i64)>,
) -> CoreResult<Vec<ConversationView>> {
    let mut query = in_view(viewer, view)
        .order((
            conversations::last_message_at.desc(),
            conversations::id.desc(),
        ))
        .limit(limit);
    if let Some((at, id)) = after {
        query = query.filter(
            conversations::last_message_at
                .lt(at)
                .or(conversations::last_message_at
                    .eq(at)
                    .and(conversations::id.lt(id))),
        );
    }
    Ok(query
        .select(Row::as_select())
        .load::<Row>(conn)?
        .into_iter()
        .map(ConversationView::from)
        .collect())
}

fn find_row(conn: &mut DbConnection, viewer: &User, id: i64) -> CoreResult<Row> {
    conversations::table
        .filter(conversations::account_id.eq(viewer.account_id))
        .filter(conversations::id.eq(id))
        .select(Row::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| CoreError::not_found("conversation", id))
}

fn events(conn: &mut DbConnection, id: i64) -> CoreResult<Vec<EventView>> {
    Ok(conversation_events::table
        .filter(conversation_events::conversation_id.eq(id))
        .order(conversation_events::id.asc())
        .select((
            conversation_events::id,
            conversation_events::kind,
            conversation_events::actor_id,
            conversation_events::from_user_id,
            conversation_events::to_user_id,
            conversation_events::created_at,
        ))
        .load(conn)?)
}

pub fn find(conn: &mut DbConnection, viewer: &User, id: i64) -> CoreResult<ConversationDetail> {
    let row = find_row(conn, viewer, id)?;
    Ok(ConversationDetail {
        conversation: row.into(),
        events: events(conn, id)?,
    })
}

/// A conversation's messages, oldest first (the order they arrived in).
pub fn messages(
    conn: &mut DbConnection,
    viewer: &User,
    id: i64,
    page: PageRequest,
) -> CoreResult<Page<MessageView>> {
    find_row(conn, viewer, id)?;
    let mut query = messages::table
        .filter(messages::conversation_id.eq(id))
        .order(messages::id.asc())
        .limit(page.limit + 1)
        .into_boxed();
    // The cursor walks forward here: `before_id` holds the last id seen.
    if let Some(after) = page.before_id {
        query = query.filter(messages::id.gt(after));
    }
    let views: Vec<MessageView> = query
        .select(MessageRow::as_select())
        .load::<MessageRow>(conn)?
        .into_iter()
        .map(MessageView::from)
        .collect();
    Ok(Page::from_rows(views, page.limit, |m: &MessageView| m.id))
}

fn record(
    conn: &mut DbConnection,
    id: i64,
    kind: &str,
    actor: &User,
    from: Option<i64>,
    to: Option<i64>,
) -> QueryResult<()> {
    diesel::insert_into(conversation_events::table)
        .values((
            conversation_events::conversation_id.eq(id),
            conversation_events::kind.eq(kind),
            conversation_events::actor_id.eq(Some(actor.id)),
            conversation_events::from_user_id.eq(from),
            conversation_events::to_user_id.eq(to),
            conversation_events::created_at.eq(now()),
        ))
        .execute(conn)?;
    Ok(())
}

/// Assigns an open conversation to an available user of the account, or unassigns it (M6, M7);
/// any user of the account may. Call inside a write transaction.
pub fn assign(
    conn: &mut DbConnection,
    actor: &User,
    id: i64,
    assignee: Option<i64>,
) -> CoreResult<ConversationDetail> {
    let row = find_row(conn, actor, id)?;
    if row.status != "open" {
        return Err(CoreError::Conflict {
            code: "conversation_closed",
            message: "a closed conversation is reopened before it is assigned".into(),
        });
    }
    if let Some(user_id) = assignee {
        let (account_id, available): (i64, bool) = users::table
            .find(user_id)
            .select((users::account_id, users::available))
            .first(conn)
            .optional()?
            .filter(|(account, _)| *account == actor.account_id)
            .ok_or_else(|| {
                CoreError::invalid("assignee_id", format!("user {user_id} does not exist"))
            })?;
        let _ = account_id;
        if !available {
            return Err(CoreError::Conflict {
                code: "assignee_unavailable",
                message: format!("user {user_id} is unavailable and cannot be given conversations"),
            });
        }
    }
    if row.assignee_id != assignee {
        diesel::update(conversations::table.find(id))
            .set((
                conversations::assignee_id.eq(assignee),
                conversations::updated_at.eq(now()),
            ))
            .execute(conn)?;
        record(conn, id, "assigned", actor, row.assignee_id, assignee)?;
    }
    find(conn, actor, id)
}

/// Closes or reopens a conversation (M8); doing it twice changes nothing.
pub fn set_open(
    conn: &mut DbConnection,
    actor: &User,
    id: i64,
    open: bool,
) -> CoreResult<ConversationDetail> {
    let row = find_row(conn, actor, id)?;
    let (status, kind) = if open {
        ("open", "reopened")
    } else {
        ("closed", "closed")
    };
    if row.status != status {
        diesel::update(conversations::table.find(id))
            .set((
                conversations::status.eq(status),
                conversations::updated_at.eq(now()),
            ))
            .execute(conn)?;
        record(conn, id, kind, actor, None, None)?;
    }
    find(conn, actor, id)
}
