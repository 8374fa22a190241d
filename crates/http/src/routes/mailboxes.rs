//! Mailboxes (E1, E3, E12): connect with a server check first, the plan rules, and no passwords
//! in any response.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use herald_core::pagination::Page;
use herald_mailbox::model::check_servers;
use herald_mailbox::{Draft, Mailbox, MailboxError, MailboxInput, MailboxPatch, MailboxView};

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{Caller, JsonBody, PageParams, Path, Query};
use crate::routes::ListResponse;
use crate::state::AppState;

/// The caller's mailboxes and those of colleagues shared with everyone, newest first.
#[utoipa::path(get, path = "/api/v1/mailboxes", tag = "mailboxes", security(("bearer" = [])), params(PageParams),
    responses((status = 200, body = ListResponse<MailboxView>), (status = 401, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    Caller(me): Caller,
    Query(params): Query<PageParams>,
) -> ApiResult<Json<Page<MailboxView>>> {
    let page = params.page()?;
    let user = me.user;
    let mailboxes = state
        .db
        .run(move |conn| {
            Ok::<_, ApiError>(
                Mailbox::list(conn, &user, page).map_err(herald_core::CoreError::from)?,
            )
        })
        .await?;
    Ok(Json(mailboxes.map(|m| m.view())))
}

/// Connects a mailbox for the caller. The IMAP login (and, with sending enabled, the SMTP
/// handshake and authentication) is checked first: a failure is a 422
/// `mailbox_connection_failed` whose `field` says which side (`imap` or `smtp`) and whose detail
/// says why. Plan rules (E3) are a 422 `plan_limit` naming the rule.
#[utoipa::path(post, path = "/api/v1/mailboxes", tag = "mailboxes", security(("bearer" = [])), request_body = MailboxInput,
    responses((status = 201, body = MailboxView), (status = 422, body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    Caller(me): Caller,
    body: JsonBody<MailboxInput>,
) -> ApiResult<Response> {
    let limits = state.config.plans;
    let (user, input) = (me.user.clone(), body.value);
    let draft = state
        .db
        .run(move |conn| Draft::prepare(conn, limits, &user, &input))
        .await?;
    // The servers are checked outside any transaction.
    check_servers(&draft).await.map_err(MailboxError::from)?;
    let (key, account_id) = (state.secret_key.clone(), me.account.id);
    let mailbox = state
        .db
        .run(move |conn| conn.write(|conn| draft.insert(conn, &key, limits, account_id)))
        .await?;
    Ok((StatusCode::CREATED, Json(mailbox.view())).into_response())
}

#[utoipa::path(get, path = "/api/v1/mailboxes/{id}", tag = "mailboxes", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 200, body = MailboxView), (status = 404, body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<MailboxView>> {
    let user = me.user;
    let mailbox = state
        .db
        .run(move |conn| Mailbox::find(conn, &user, id))
        .await?;
    Ok(Json(mailbox.view()))
}

/// Changes a mailbox (its owner only). Changed credentials are checked again before saving; a
/// password left out keeps the stored one.
#[utoipa::path(patch, path = "/api/v1/mailboxes/{id}", tag = "mailboxes", security(("bearer" = [])), params(("id" = i64, Path)),
    request_body = MailboxPatch,
    responses((status = 200, body = MailboxView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn update(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path(id): Path<i64>,
    body: JsonBody<MailboxPatch>,
) -> ApiResult<Json<MailboxView>> {
    let limits = state.config.plans;
    let (key, user, patch) = (state.secret_key.clone(), me.user, body.value);
    let draft = {
        let key = key.clone();
        state
            .db
            .run(move |conn| Draft::prepare_update(conn, &key, limits, &user, id, &patch))
            .await?
    };
    check_servers(&draft).await.map_err(MailboxError::from)?;
    let mailbox = state
        .db
        .run(move |conn| conn.write(|conn| draft.update(conn, &key, limits)))
        .await?;
    Ok(Json(mailbox.view()))
}

/// Removes a mailbox: its owner or an admin.
#[utoipa::path(delete, path = "/api/v1/mailboxes/{id}", tag = "mailboxes", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 204, description = "removed"), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn delete(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    let user = me.user;
    state
        .db
        .run(move |conn| conn.write(|conn| Mailbox::delete(conn, &user, id)))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Asks for a sync of the mailbox now (E4): a worker runs it as soon as one is free. 202 with the
/// job id; an `auth_failed` mailbox needs new credentials first (409 `mailbox_auth_failed`).
#[utoipa::path(post, path = "/api/v1/mailboxes/{id}/sync", tag = "mailboxes", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 202, description = "sync requested"), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn sync(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    let user = me.user;
    let job = state
        .db
        .run(move |conn| conn.write(|conn| herald_mailbox::worker::request_sync(conn, &user, id)))
        .await?;
    // The embedded worker hears at once; other processes by NOTIFY.
    state.waker.wake();
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "job_id": job })),
    )
        .into_response())
}
