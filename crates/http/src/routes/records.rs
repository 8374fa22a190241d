//! CRUD and timelines of persons, companies, deals and leads.
//!
//! One generic implementation; `record_api!` stamps out the typed, documented handlers for each
//! record type.

use axum::Json;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use herald_core::CoreError;
use herald_core::pagination::{Page, parse_limit};
use herald_core::records::Record;
use herald_core::timeline::{TimelinePage, TimelineQuery};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, JsonBody, PageParams};
use crate::idempotent::{idempotent, json_response};
use crate::state::AppState;

async fn list<R: Record>(
    state: AppState,
    caller: Caller,
    params: PageParams,
) -> ApiResult<Json<Page<R>>> {
    let page = params.page()?;
    let account_id = caller.0.account.id;
    let records = state
        .db
        .run(move |conn| {
            Ok::<_, ApiError>(R::list(conn, account_id, page).map_err(CoreError::from)?)
        })
        .await?;
    Ok(Json(records))
}

async fn create<R: Record>(
    state: AppState,
    caller: Caller,
    uri: Uri,
    headers: HeaderMap,
    body: JsonBody<R::Input>,
) -> ApiResult<Response> {
    let account_id = caller.0.account.id;
    let input = body.value;
    idempotent(
        &state,
        &caller.0,
        &headers,
        "POST",
        uri.path(),
        &body.raw,
        move |conn| {
            let record = R::create(conn, account_id, &input)?;
            json_response(StatusCode::CREATED, &record)
        },
    )
    .await
}

async fn get<R: Record>(state: AppState, caller: Caller, id: i64) -> ApiResult<Json<R>> {
    let account_id = caller.0.account.id;
    Ok(Json(
        state
            .db
            .run(move |conn| R::find(conn, account_id, id))
            .await?,
    ))
}

async fn update<R: Record>(
    state: AppState,
    caller: Caller,
    id: i64,
    body: JsonBody<R::Patch>,
) -> ApiResult<Json<R>> {
    let account_id = caller.0.account.id;
    let patch = body.value;
    let record = state
        .db
        .run(move |conn| conn.write(|conn| R::update(conn, account_id, id, patch)))
        .await?;
    Ok(Json(record))
}

async fn delete<R: Record>(state: AppState, caller: Caller, id: i64) -> ApiResult<Response> {
    let account_id = caller.0.account.id;
    state
        .db
        .run(move |conn| conn.write(|conn| R::delete(conn, account_id, id)))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn timeline<R: Record>(
    state: AppState,
    caller: Caller,
    id: i64,
    params: PageParams,
) -> ApiResult<Json<TimelinePage>> {
    let limit = parse_limit(params.limit)?;
    let query = TimelineQuery {
        account_id: caller.0.account.id,
        viewer_id: caller.0.user.id,
        kind: R::RECORD_KIND,
        record_id: id,
    };
    let timeline = state.timeline.clone();
    let page = state
        .db
        .run(move |conn| timeline.page(conn, &query, params.cursor.as_deref(), limit))
        .await?;
    Ok(Json(page))
}

macro_rules! record_api {
    ($module:ident, $model:ident, $input:ident, $patch:ident, $tag:tt, $collection:tt, $item:tt, $timeline:tt) => {
        pub mod $module {
            use axum::Json;
            use axum::extract::State;
            use axum::http::{HeaderMap, Uri};
            use axum::response::Response;
            use herald_core::pagination::Page;
            use herald_core::records::{$input, $model, $patch};
            use herald_core::timeline::{TimelineEntry, TimelinePage};

            use crate::error::{ApiResult, Problem};
            use crate::extract::{Caller, JsonBody, PageParams, Path, Query};
            use crate::routes::ListResponse;
            use crate::state::AppState;

            /// List, newest first.
            #[utoipa::path(get, path = $collection, tag = $tag, security(("bearer" = [])), params(PageParams),
                responses((status = 200, body = ListResponse<$model>), (status = 401, body = Problem), (status = 422, body = Problem)))]
            pub async fn list(State(state): State<AppState>, caller: Caller, Query(params): Query<PageParams>) -> ApiResult<Json<Page<$model>>> {
                super::list::<$model>(state, caller, params).await
            }

            /// Create; a bad field is a 422 naming it.
            #[utoipa::path(post, path = $collection, tag = $tag, security(("bearer" = [])), request_body = $input,
                params(("Idempotency-Key" = Option<String>, Header, description = "retries with the same key return the first response")),
                responses((status = 201, body = $model), (status = 401, body = Problem), (status = 422, body = Problem)))]
            pub async fn create(State(state): State<AppState>, caller: Caller, uri: Uri, headers: HeaderMap, body: JsonBody<$input>) -> ApiResult<Response> {
                super::create::<$model>(state, caller, uri, headers, body).await
            }

            /// Get one of the caller's account.
            #[utoipa::path(get, path = $item, tag = $tag, security(("bearer" = [])), params(("id" = i64, Path)),
                responses((status = 200, body = $model), (status = 404, body = Problem)))]
            pub async fn get(State(state): State<AppState>, caller: Caller, Path(id): Path<i64>) -> ApiResult<Json<$model>> {
                super::get::<$model>(state, caller, id).await
            }

            /// Change the given fields; `null` clears an optional one.
            #[utoipa::path(patch, path = $item, tag = $tag, security(("bearer" = [])), params(("id" = i64, Path)), request_body = $patch,
                responses((status = 200, body = $model), (status = 404, body = Problem), (status = 422, body = Problem)))]
            pub async fn update(State(state): State<AppState>, caller: Caller, Path(id): Path<i64>, body: JsonBody<$patch>) -> ApiResult<Json<$model>> {
                super::update::<$model>(state, caller, id, body).await
            }

            /// Delete.
            #[utoipa::path(delete, path = $item, tag = $tag, security(("bearer" = [])), params(("id" = i64, Path)),
                responses((status = 204, description = "deleted"), (status = 404, body = Problem)))]
            pub async fn delete(State(state): State<AppState>, caller: Caller, Path(id): Path<i64>) -> ApiResult<Response> {
                super::delete::<$model>(state, caller, id).await
            }

            /// What happened to the record (emails, notes, its creation), newest first.
            #[utoipa::path(get, path = $timeline, tag = $tag, security(("bearer" = [])), params(("id" = i64, Path), PageParams),
                responses((status = 200, body = ListResponse<TimelineEntry>), (status = 404, body = Problem)))]
            pub async fn timeline(State(state): State<AppState>, caller: Caller, Path(id): Path<i64>, Query(params): Query<PageParams>) -> ApiResult<Json<TimelinePage>> {
                super::timeline::<$model>(state, caller, id, params).await
            }
        }
    };
}

record_api!(
    persons,
    Person,
    PersonInput,
    PersonPatch,
    "persons",
    "/api/v1/persons",
    "/api/v1/persons/{id}",
    "/api/v1/persons/{id}/timeline"
);
record_api!(
    companies,
    Company,
    CompanyInput,
    CompanyPatch,
    "companies",
    "/api/v1/companies",
    "/api/v1/companies/{id}",
    "/api/v1/companies/{id}/timeline"
);
record_api!(
    deals,
    Deal,
    DealInput,
    DealPatch,
    "deals",
    "/api/v1/deals",
    "/api/v1/deals/{id}",
    "/api/v1/deals/{id}/timeline"
);
record_api!(
    leads,
    Lead,
    LeadInput,
    LeadPatch,
    "leads",
    "/api/v1/leads",
    "/api/v1/leads/{id}",
    "/api/v1/leads/{id}/timeline"
);
