//! Templates (T1–T5): CRUD with personal and shared scopes, and rendering for a record.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use herald_core::pagination::Page;
use herald_mailbox::Mailbox;
use herald_templates::context::{self, RecordRef, SenderMailbox};
use herald_templates::{Rendered, Saved, Template, TemplateError, TemplateInput, TemplatePatch};
use serde::Deserialize;

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{Caller, JsonBody, PageParams, Path, Query};
use crate::idempotent::{idempotent, json_response};
use crate::routes::ListResponse;
use crate::state::AppState;

/// Templates the caller can see (their personal ones and the account's shared ones), newest first.
#[utoipa::path(get, path = "/api/v1/templates", tag = "templates", security(("bearer" = [])), params(PageParams),
    responses((status = 200, body = ListResponse<Template>), (status = 401, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    Caller(me): Caller,
    Query(params): Query<PageParams>,
) -> ApiResult<Json<Page<Template>>> {
    let page = params.page()?;
    let user = me.user;
    let templates = state
        .db
        .run(move |conn| Template::list(conn, &user, page).map_err(TemplateError::from))
        .await?;
    Ok(Json(templates))
}

/// Creates a template. A syntax error is a 422 with the part, line and column; placeholders no
/// CRM data can fill come back as `warnings`.
#[utoipa::path(post, path = "/api/v1/templates", tag = "templates", security(("bearer" = [])), request_body = TemplateInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "retries with the same key return the first response")),
    responses((status = 201, body = Saved), (status = 422, body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    Caller(me): Caller,
    uri: Uri,
    headers: HeaderMap,
    body: JsonBody<TemplateInput>,
) -> ApiResult<Response> {
    let (engine, user, input) = (state.templates.clone(), me.user.clone(), body.value);
    idempotent(
        &state,
        &me,
        &headers,
        "POST",
        uri.path(),
        &body.raw,
        move |conn| {
            let saved = Template::create(conn, &engine, &user, &input)?;
            json_response(StatusCode::CREATED, &saved)
        },
    )
    .await
}

#[utoipa::path(get, path = "/api/v1/templates/{id}", tag = "templates", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 200, body = Template), (status = 404, body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<Template>> {
    let user = me.user;
    Ok(Json(
        state
            .db
            .run(move |conn| Template::find(conn, &user, id))
            .await?,
    ))
}

/// Changes a template: its author, or an admin for a shared one (others get 403).
#[utoipa::path(patch, path = "/api/v1/templates/{id}", tag = "templates", security(("bearer" = [])), params(("id" = i64, Path)),
    request_body = TemplatePatch,
    responses((status = 200, body = Saved), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn update(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path(id): Path<i64>,
    body: JsonBody<TemplatePatch>,
) -> ApiResult<Json<Saved>> {
    let (engine, user, patch) = (state.templates.clone(), me.user, body.value);
    let saved = state
        .db
        .run(move |conn| conn.write(|conn| Template::update(conn, &engine, &user, id, patch)))
        .await?;
    Ok(Json(saved))
}

#[utoipa::path(delete, path = "/api/v1/templates/{id}", tag = "templates", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 204, description = "deleted"), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn delete(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    let user = me.user;
    state
        .db
        .run(move |conn| conn.write(|conn| Template::delete(conn, &user, id)))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// What to render a template for.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenderRequest {
    /// `{"type": "person" | "company" | "deal" | "lead", "id": …}`; its linked person and company
    /// are filled in too.
    pub record: Option<RecordRef>,
    /// The mailbox the email would go out from (its address, display name and signature fill
    /// `sender`); default: the caller's sending mailbox.
    #[serde(default)]
    pub mailbox_id: Option<i64>,
    /// Values for placeholders that are not CRM data, e.g. `{"discount": 10}`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: serde_json::Map<String, serde_json::Value>,
}

/// Renders the subject and bodies for a record, as the caller would send them. Placeholders with
/// no value (and no `default`) are a 422 listing every missing name.
#[utoipa::path(post, path = "/api/v1/templates/{id}/render", tag = "templates", security(("bearer" = [])), params(("id" = i64, Path)),
    request_body = RenderRequest,
    responses((status = 200, body = Rendered), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn render(
    State(state): State<AppState>,
    Caller(me): Caller,
    Path(id): Path<i64>,
    body: JsonBody<RenderRequest>,
) -> ApiResult<Json<Rendered>> {
    let (engine, user, request) = (state.templates.clone(), me.user, body.value);
    let (template, context) = state
        .db
        .run(move |conn| {
            let template = Template::find(conn, &user, id)?;
            let mailbox = match request.mailbox_id {
                Some(mailbox_id) => {
                    let mailbox = Mailbox::find(conn, &user, mailbox_id)?;
                    if mailbox.owner_id != user.id {
                        return Err(ApiError::Core(herald_core::CoreError::invalid(
                            "mailbox_id",
                            "must be one of your own mailboxes",
                        )));
                    }
                    Some(mailbox)
                }
                None => {
                    Mailbox::default_sending(conn, &user).map_err(herald_core::CoreError::from)?
                }
            };
            let sender = mailbox.map(|m| SenderMailbox {
                address: m.address,
                display_name: m.display_name,
                signature: m.signature,
            });
            let context = context::build(
                conn,
                user.account_id,
                &user,
                sender.as_ref(),
                request.record,
                &request.variables,
            )?;
            Ok::<_, ApiError>((template, context))
        })
        .await?;
    // Rendering is CPU work: on the blocking pool, without holding a database connection.
    let rendered =
        tokio::task::spawn_blocking(move || engine.render(&template.sources(), &context))
            .await
            .map_err(|e| {
                herald_core::CoreError::Unavailable(format!("render task failed: {e}"))
            })??;
    Ok(Json(rendered))
}
