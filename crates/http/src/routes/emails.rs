//! The email list and one email (E11, E12); composing, replying, scheduling and retrying
//! (E8–E10).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use herald_core::pagination::{Page, PageRequest};
use herald_core::records::RecordKind;
use herald_mailbox::emails::{self, EmailFilter, EmailView};
use herald_mailbox::outbox::{self, ComposeInput, ReplyDraft, Reschedule};
use serde::Deserialize;

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{Caller, JsonBody, Path, Query};
use crate::idempotent::{idempotent, json_response};
use crate::routes::ListResponse;
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EmailQuery {
    /// `received`, `sent`, `scheduled`, `sending`, `failed` or `cancelled`
    pub status: Option<String>,
    pub mailbox_id: Option<i64>,
    /// `person`, `company` or `deal` (with `record_id`)
    pub record_type: Option<String>,
    pub record_id: Option<i64>,
    /// Words in the subject or the text.
    pub q: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// Emails the caller may see, newest first.
#[utoipa::path(get, path = "/api/v1/emails", tag = "emails", security(("bearer" = [])), params(EmailQuery),
    responses((status = 200, body = ListResponse<EmailView>), (status = 422, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    Caller(me): Caller,
    Query(query): Query<EmailQuery>,
) -> ApiResult<Json<Page<EmailView>>> {
    let page = PageRequest::parse(query.limit, query.cursor.as_deref())?;
    let record = match (&query.record_type, query.record_id) {
        (Some(kind), Some(id)) => Some((
            kind.parse::<RecordKind>().map_err(|_| {
                herald_core::CoreError::invalid("record_type", "must be person, company or deal")
            })?,
            id,
        )),
        (None, None) => None,
        _ => {
            return Err(herald_core::CoreError::invalid(
                "record_id",
                "record_type and record_id go together",
            )
            .into());
        }
    };
    let filter = EmailFilter {
        status: query.status,
        mailbox_id: query.mailbox_id,
        record,
        text: query.q,
    };
    let user = me.user;
    let page = state
        .db
        .run(move |conn| emails::list(conn, &user, &filter, page).map_err(ApiError::from))
        .await?;
    Ok(Json(page))
}

#[utoipa::path(get, path = "/api/v1/emails/{id}", tag = "emails", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 200, body = EmailView), (status = 404, body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<EmailView>> {
    let user = me.user;
    Ok(Json(
        state
            .db
            .run(move |conn| emails::find(conn, &user, id))
            .await?,
    ))
}

/// Composes an email from a Person, Company or Deal and queues it (E8): 201 with status
/// `sending`, or `scheduled` with `send_at` (E10). With `template_id` the template is rendered
/// now. `Idempotency-Key` makes a client's retry return the first result instead of sending
/// again.
#[utoipa::path(post, path = "/api/v1/emails", tag = "emails", security(("bearer" = [])), request_body = ComposeInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "retries with the same key return the first response")),
    responses((status = 201, body = EmailView), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    Caller(me): Caller,
    uri: Uri,
    headers: HeaderMap,
    body: JsonBody<ComposeInput>,
) -> ApiResult<Response> {
    let (engine, user, input) = (state.templates.clone(), me.user.clone(), body.value);
    let response = idempotent(
        &state,
        &me,
        &headers,
        "POST",
        uri.path(),
        &body.raw,
        move |conn| {
            let email = outbox::compose(conn, &engine, &user, &input, None)?;
            json_response(StatusCode::CREATED, &email)
        },
    )
    .await?;
    state.waker.wake();
    Ok(response)
}

/// A reply to an email from a contact, prefilled (E9): the Reply-To (else the sender), the
/// subject with one `Re: `, the original quoted under an attribution line. On an email written
/// by a CRM user: 409 `reply_not_allowed`.
#[utoipa::path(get, path = "/api/v1/emails/{id}/reply-draft", tag = "emails", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 200, body = ReplyDraft), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn reply_draft(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<ReplyDraft>> {
    let user = me.user;
    Ok(Json(
        state
            .db
            .run(move |conn| outbox::reply_draft(conn, &user, id))
            .await?,
    ))
}

/// Sends a reply (E9): threaded under the original (In-Reply-To, References), linked to the same
/// records. Fields left out come from the reply draft.
#[utoipa::path(post, path = "/api/v1/emails/{id}/reply", tag = "emails", security(("bearer" = [])), params(("id" = i64, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "retries with the same key return the first response")),
    request_body = ComposeInput,
    responses((status = 201, body = EmailView), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn reply(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path(id): Path<i64>,
    uri: Uri,
    headers: HeaderMap,
    body: JsonBody<ComposeInput>,
) -> ApiResult<Response> {
    let (engine, user, input) = (state.templates.clone(), me.user.clone(), body.value);
    let response = idempotent(
        &state,
        &me,
        &headers,
        "POST",
        uri.path(),
        &body.raw,
        move |conn| {
            let email = outbox::reply(conn, &engine, &user, id, &input)?;
            json_response(StatusCode::CREATED, &email)
        },
    )
    .await?;
    state.waker.wake();
    Ok(response)
}

/// Reschedules a scheduled email (E10); once the send has started: 409 `send_started`.
#[utoipa::path(patch, path = "/api/v1/emails/{id}", tag = "emails", security(("bearer" = [])), params(("id" = i64, Path)),
    request_body = Reschedule,
    responses((status = 200, body = EmailView), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn update(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path(id): Path<i64>,
    body: JsonBody<Reschedule>,
) -> ApiResult<Json<EmailView>> {
    let (user, input) = (me.user, body.value);
    let email = state
        .db
        .run(move |conn| conn.write(|conn| outbox::reschedule(conn, &user, id, &input)))
        .await?;
    Ok(Json(email))
}

/// Cancels a scheduled email (E10); once the send has started: 409 `send_started`.
#[utoipa::path(post, path = "/api/v1/emails/{id}/cancel", tag = "emails", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 200, body = EmailView), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn cancel(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<EmailView>> {
    let user = me.user;
    let email = state
        .db
        .run(move |conn| conn.write(|conn| outbox::cancel(conn, &user, id)))
        .await?;
    Ok(Json(email))
}

/// Sends a scheduled email now (E10); once the send has started: 409 `send_started`.
#[utoipa::path(post, path = "/api/v1/emails/{id}/send-now", tag = "emails", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 200, body = EmailView), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn send_now(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<EmailView>> {
    let user = me.user;
    let email = state
        .db
        .run(move |conn| conn.write(|conn| outbox::send_now(conn, &user, id)))
        .await?;
    state.waker.wake();
    Ok(Json(email))
}

/// Sends a failed email again, for real (E8); other statuses: 409 `invalid_email_status`.
#[utoipa::path(post, path = "/api/v1/emails/{id}/retry", tag = "emails", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 200, body = EmailView), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn retry(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<EmailView>> {
    let user = me.user;
    let email = state
        .db
        .run(move |conn| conn.write(|conn| outbox::retry(conn, &user, id)))
        .await?;
    state.waker.wake();
    Ok(Json(email))
}
