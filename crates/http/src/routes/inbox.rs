//! The messaging inbox: channels (M1), conversations and their views (M5), availability (M6),
//! assignment (M7), close and reopen (M8).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use chrono::NaiveDateTime;
use diesel::prelude::*;
use herald_core::CoreError;
use herald_core::identity::User;
use herald_core::pagination::{Page, PageRequest, decode_cursor, encode_cursor, parse_limit};
use herald_inbox::conversations::{self, ConversationDetail, View};
use herald_inbox::{Channel, ChannelInput, ChannelView, ConversationView, MessageView};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{Caller, JsonBody, PageParams, Path, Query};
use crate::idempotent::{idempotent, json_response};
use crate::routes::ListResponse;
use crate::state::AppState;

/// Installs a channel; the caller owns it (M1). The response carries the webhook URL to give
/// the provider; credentials are sealed and never returned.
#[utoipa::path(post, path = "/api/v1/channels", tag = "inbox", security(("bearer" = [])), request_body = ChannelInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "retries with the same key return the first response")),
    responses((status = 201, body = ChannelView), (status = 422, body = Problem)))]
pub async fn create_channel(
    State(state): State<AppState>,
    Caller(me): Caller,
    uri: Uri,
    headers: HeaderMap,
    body: JsonBody<ChannelInput>,
) -> ApiResult<Response> {
    let (key, user, input) = (state.secret_key.clone(), me.user.clone(), body.value);
    let public_url = state.config.public_url();
    idempotent(
        &state,
        &me,
        &headers,
        "POST",
        uri.path(),
        &body.raw,
        move |conn| {
            let channel = Channel::create(conn, &key, &user, &input)?;
            json_response(StatusCode::CREATED, &channel.view(&public_url))
        },
    )
    .await
}

/// The account's channels.
#[utoipa::path(get, path = "/api/v1/channels", tag = "inbox", security(("bearer" = [])),
    responses((status = 200, body = ListResponse<ChannelView>)))]
pub async fn list_channels(
    State(state): State<AppState>,
    Caller(me): Caller,
) -> ApiResult<Json<Page<ChannelView>>> {
    let (user, public_url) = (me.user, state.config.public_url());
    let channels = state.db.run(move |conn| Channel::list(conn, &user)).await?;
    Ok(Json(Page {
        items: channels.iter().map(|c| c.view(&public_url)).collect(),
        next_cursor: None,
    }))
}

/// Removes a channel and its conversations: its owner or an admin (others 403).
#[utoipa::path(delete, path = "/api/v1/channels/{id}", tag = "inbox", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn delete_channel(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    let user = me.user;
    state.intake.delete_channel(user, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConversationQuery {
    /// `mine`, `unassigned`, `others`, `closed` or `all` (default)
    pub view: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// A page of a view, with the count of every view.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationPage {
    pub items: Vec<ConversationView>,
    pub next_cursor: Option<String>,
    /// Conversations per view: `mine`, `unassigned`, `others`, `closed`, `all`.
    #[schema(value_type = Object)]
    pub counts: serde_json::Map<String, serde_json::Value>,
}

/// `<last_message_at micros>:<id>` of the last item.
fn conversation_cursor(c: &ConversationView) -> String {
    encode_cursor(&format!(
        "{}:{}",
        c.last_message_at.and_utc().timestamp_micros(),
        c.id
    ))
}

fn parse_conversation_cursor(cursor: &str) -> Result<(NaiveDateTime, i64), CoreError> {
    let invalid = || CoreError::invalid("cursor", "is not a cursor this list gave");
    let raw = decode_cursor(cursor)?;
    let (micros, id) = raw.split_once(':').ok_or_else(invalid)?;
    let at = chrono::DateTime::from_timestamp_micros(micros.parse().map_err(|_| invalid())?)
        .ok_or_else(invalid)?
        .naive_utc();
    Ok((at, id.parse().map_err(|_| invalid())?))
}

/// Conversations of a view (M5), newest activity first, with counts.
#[utoipa::path(get, path = "/api/v1/conversations", tag = "inbox", security(("bearer" = [])), params(ConversationQuery),
    responses((status = 200, body = ConversationPage), (status = 422, body = Problem)))]
pub async fn list_conversations(
    State(state): State<AppState>,
    Caller(me): Caller,
    Query(query): Query<ConversationQuery>,
) -> ApiResult<Json<ConversationPage>> {
    let view = View::parse(query.view.as_deref().unwrap_or("all"))?;
    let limit = parse_limit(query.limit)?;
    let after = query
        .cursor
        .as_deref()
        .map(parse_conversation_cursor)
        .transpose()?;
    let user = me.user;
    let (mut items, counts) = state
        .db
        .run(move |conn| {
            let items = conversations::list(conn, &user, view, limit + 1, after)?;
            Ok::<_, CoreError>((items, conversations::counts(conn, &user)?))
        })
        .await?;
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    Ok(Json(ConversationPage {
        next_cursor: if more {
            items.last().map(conversation_cursor)
        } else {
            None
        },
        items,
        counts: counts
            .into_iter()
            .map(|(view, n)| (view.as_str().to_owned(), n.into()))
            .collect(),
    }))
}

/// One conversation with its audit trail (assignments, closes, reopens).
#[utoipa::path(get, path = "/api/v1/conversations/{id}", tag = "inbox", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 200, body = ConversationDetail), (status = 404, body = Problem)))]
pub async fn get_conversation(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<ConversationDetail>> {
    let user = me.user;
    Ok(Json(
        state
            .db
            .run(move |conn| conversations::find(conn, &user, id))
            .await?,
    ))
}

/// A conversation's messages in the order they arrived.
#[utoipa::path(get, path = "/api/v1/conversations/{id}/messages", tag = "inbox", security(("bearer" = [])),
    params(("id" = i64, Path), PageParams),
    responses((status = 200, body = ListResponse<MessageView>), (status = 404, body = Problem)))]
pub async fn list_messages(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path(id): Path<i64>,
    Query(params): Query<PageParams>,
) -> ApiResult<Json<Page<MessageView>>> {
    let page: PageRequest = params.page()?;
    let user = me.user;
    Ok(Json(
        state
            .db
            .run(move |conn| conversations::messages(conn, &user, id, page))
            .await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssigneeInput {
    /// A user of the account who is available, or null to unassign.
    pub assignee_id: Option<i64>,
}

/// Assigns, reassigns or unassigns (M7); an unavailable assignee is refused with
/// `assignee_unavailable` (M6). Every change is kept in the audit trail.
#[utoipa::path(put, path = "/api/v1/conversations/{id}/assignee", tag = "inbox", security(("bearer" = [])), params(("id" = i64, Path)),
    request_body = AssigneeInput,
    responses((status = 200, body = ConversationDetail), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn assign(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path(id): Path<i64>,
    body: JsonBody<AssigneeInput>,
) -> ApiResult<Json<ConversationDetail>> {
    let (user, assignee) = (me.user, body.value.assignee_id);
    Ok(Json(
        state
            .db
            .run(move |conn| conn.write(|conn| conversations::assign(conn, &user, id, assignee)))
            .await?,
    ))
}

/// Closes a conversation (M8).
#[utoipa::path(post, path = "/api/v1/conversations/{id}/close", tag = "inbox", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 200, body = ConversationDetail), (status = 404, body = Problem)))]
pub async fn close(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<ConversationDetail>> {
    let user = me.user;
    Ok(Json(
        state
            .db
            .run(move |conn| conn.write(|conn| conversations::set_open(conn, &user, id, false)))
            .await?,
    ))
}

/// Reopens a conversation into the view its assignment gives (M8).
#[utoipa::path(post, path = "/api/v1/conversations/{id}/reopen", tag = "inbox", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 200, body = ConversationDetail), (status = 404, body = Problem)))]
pub async fn reopen(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<ConversationDetail>> {
    let user = me.user;
    Ok(Json(
        state
            .db
            .run(move |conn| conn.write(|conn| conversations::set_open(conn, &user, id, true)))
            .await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AvailabilityInput {
    /// `available` or `unavailable`
    pub availability: String,
}

/// Sets the caller's availability (M6): only available users can be given conversations; the
/// ones they have stay theirs.
#[utoipa::path(put, path = "/api/v1/me/availability", tag = "users", security(("bearer" = [])), request_body = AvailabilityInput,
    responses((status = 200, body = User), (status = 422, body = Problem)))]
pub async fn set_availability(
    State(state): State<AppState>,
    Caller(me): Caller,
    body: JsonBody<AvailabilityInput>,
) -> ApiResult<Json<User>> {
    let available = match body.value.availability.as_str() {
        "available" => true,
        "unavailable" => false,
        other => {
            return Err(CoreError::invalid(
                "availability",
                format!("`{other}` is not one of: available, unavailable"),
            )
            .into());
        }
    };
    let id = me.user.id;
    let user = state
        .db
        .run(move |conn| {
            use herald_core::schema::users;
            diesel::update(users::table.find(id))
                .set((
                    users::available.eq(available),
                    users::updated_at.eq(herald_core::time::now()),
                ))
                .execute(conn)
                .map_err(CoreError::from)?;
            Ok::<_, ApiError>(User::find(conn, id)?)
        })
        .await?;
    Ok(Json(user))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyInput {
    pub body: String,
}

/// Queues a reply (M4): 201 with the message `queued`; the worker sends it through the
/// provider. A WhatsApp reply more than 24 hours after the contact's last message: 409
/// `outside_messaging_window`.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/messages", tag = "inbox", security(("bearer" = [])),
    params(("id" = i64, Path), ("Idempotency-Key" = Option<String>, Header, description = "retries with the same key return the first response")),
    request_body = ReplyInput,
    responses((status = 201, body = MessageView), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn reply(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path(id): Path<i64>,
    uri: Uri,
    headers: HeaderMap,
    body: JsonBody<ReplyInput>,
) -> ApiResult<Response> {
    let (user, input) = (me.user.clone(), body.value);
    let response = idempotent(
        &state,
        &me,
        &headers,
        "POST",
        uri.path(),
        &body.raw,
        move |conn| {
            let message = herald_inbox::outbound::queue_reply(conn, &user, id, &input.body)?;
            json_response(StatusCode::CREATED, &message)
        },
    )
    .await?;
    state.waker.wake();
    Ok(response)
}

/// Deletes a conversation and its messages for good (M10): only the channel's owner (others
/// 403). A late provider retry of an old message does not bring it back.
#[utoipa::path(delete, path = "/api/v1/conversations/{id}", tag = "inbox", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn delete_conversation(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    let user = me.user;
    state
        .db
        .run(move |conn| {
            conn.write(|conn| herald_inbox::outbound::delete_conversation(conn, &user, id))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
