//! The caller and the users of their account.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use herald_core::identity::{Account, NewUser, User};
use herald_core::pagination::Page;
use serde::Serialize;

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{Caller, JsonBody, PageParams, Query};
use crate::idempotent::{idempotent, json_response};
use crate::routes::ListResponse;
use crate::state::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Me {
    pub user: User,
    pub account: Account,
}

/// Who am I: the caller's user and account.
#[utoipa::path(get, path = "/api/v1/me", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = Problem)))]
pub async fn me(Caller(principal): Caller) -> Json<Me> {
    Json(Me {
        user: principal.user,
        account: principal.account,
    })
}

/// Users of the caller's account, with their availability; newest first.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", security(("bearer" = [])), params(PageParams),
    responses((status = 200, body = ListResponse<User>), (status = 401, body = Problem), (status = 422, body = Problem)))]
pub async fn list_users(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Query(params): Query<PageParams>,
) -> ApiResult<Json<Page<User>>> {
    let page = params.page()?;
    let account_id = principal.account.id;
    let users = state
        .db
        .run(move |conn| {
            Ok::<_, ApiError>(
                User::list(conn, account_id, page).map_err(herald_core::CoreError::from)?,
            )
        })
        .await?;
    Ok(Json(users))
}

/// Adds a user to the caller's account (admins only).
#[utoipa::path(post, path = "/api/v1/users", tag = "users", security(("bearer" = [])), request_body = NewUser,
    params(("Idempotency-Key" = Option<String>, Header, description = "retries with the same key return the first response")),
    responses((status = 201, body = User), (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_user(
    State(state): State<AppState>,
    Caller(principal): Caller,
    uri: Uri,
    headers: HeaderMap,
    body: JsonBody<NewUser>,
) -> ApiResult<Response> {
    if !principal.user.is_admin() {
        return Err(ApiError::Forbidden("only an admin can add users".into()));
    }
    let account_id = principal.account.id;
    let input = body.value;
    idempotent(
        &state,
        &principal,
        &headers,
        "POST",
        uri.path(),
        &body.raw,
        move |conn| {
            let user = User::create(conn, account_id, &input)?;
            json_response(StatusCode::CREATED, &user)
        },
    )
    .await
}
