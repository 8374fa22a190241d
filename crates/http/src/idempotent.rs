//! POSTs that honour `Idempotency-Key`.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_core::DbConnection;
use herald_core::crypto::request_digest;
use herald_core::idempotency::{IdempotencyKey, StoredResponse, run_idempotent};
use herald_core::identity::Principal;
use serde::Serialize;

use crate::error::{ApiError, ApiResult};
use crate::extract::idempotency_key;
use crate::state::AppState;

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        ApiError::Core(e.into())
    }
}

pub fn json_response<T: Serialize>(
    status: StatusCode,
    value: &T,
) -> Result<StoredResponse, ApiError> {
    let body = serde_json::to_string(value)
        .map_err(|e| herald_core::CoreError::Migration(e.to_string()))?;
    Ok(StoredResponse {
        status: status.as_u16(),
        body,
    })
}

/// Runs `work` in one write transaction; with an `Idempotency-Key`, a retry of the same request
/// gets the stored response (marked `Idempotent-Replayed: true`) and the work is not done again.
pub async fn idempotent<F>(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    raw_body: &[u8],
    work: F,
) -> ApiResult<Response>
where
    F: FnOnce(&mut DbConnection) -> Result<StoredResponse, ApiError> + Send + 'static,
{
    let key = idempotency_key(headers)?
        .map(|k| {
            let digest = request_digest(&[method.as_bytes(), path.as_bytes(), raw_body]);
            IdempotencyKey::parse(principal.user.id, principal.account.id, &k, digest)
        })
        .transpose()?;
    let (stored, replayed) = state
        .db
        .run(move |conn| run_idempotent(conn, key.as_ref(), work))
        .await?;
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (status, stored.body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}
