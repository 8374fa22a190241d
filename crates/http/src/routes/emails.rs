//! The email list and one email (E11, E12).

use axum::Json;
use axum::extract::State;
use herald_core::pagination::{Page, PageRequest};
use herald_core::records::RecordKind;
use herald_mailbox::emails::{self, EmailFilter, EmailView};
use serde::Deserialize;

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{Caller, Path, Query};
use crate::routes::ListResponse;
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EmailQuery {
    /// `received`, `sent`, `scheduled`, `sending`, `failed` or `cancelled`
    pub status: Option<String>,
    pub mailbox_id: Option<i64>,
    /// `person` or `company` (with `record_id`)
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
                herald_core::CoreError::invalid("record_type", "must be person or company")
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
