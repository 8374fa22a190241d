//! Liveness, readiness and Prometheus metrics.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use herald_core::db::migrations_current;
use serde_json::json;

use crate::state::AppState;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, description = "alive")))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// The database answers and its migrations are current.
#[utoipa::path(get, path = "/readyz", tag = "system",
    responses((status = 200, description = "ready"), (status = 503, description = "not ready, with the reason")))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let check = state.db.run(migrations_current).await;
    match check {
        Ok(true) => Json(json!({"status": "ready"})).into_response(),
        Ok(false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "reason": "migrations are pending (run `herald migrate`)"})),
        )
            .into_response(),
        Err(e) => {
            // The cause (host names, driver messages) goes to the log, not to an unauthenticated probe.
            tracing::warn!(error = %e, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "not_ready", "reason": "the database is unreachable"})),
            )
                .into_response()
        }
    }
}

/// Prometheus text format: HTTP latency, job outcomes, queue depth, mailbox states and sync lag.
#[utoipa::path(get, path = "/metrics", tag = "system", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    // Queue depth is read at scrape time, so it is right whichever process changed the queue.
    if let Ok(counts) = state
        .db
        .run(|conn| Ok::<_, herald_core::CoreError>(herald_scheduler::storage::counts(conn)?))
        .await
    {
        for status in herald_scheduler::storage::STATUSES {
            let total: i64 = counts
                .iter()
                .filter(|(s, _, _)| s == status)
                .map(|(_, _, n)| n)
                .sum();
            metrics::gauge!("herald_queue_jobs", "status" => *status).set(total as f64);
        }
    }
    if let Ok((states, lag)) = state
        .db
        .run(|conn| Ok::<_, herald_core::CoreError>(herald_mailbox::worker::sync_health(conn)?))
        .await
    {
        for name in ["connected", "synced", "error", "auth_failed"] {
            let n = states
                .iter()
                .find(|(s, _)| s == name)
                .map_or(0, |(_, n)| *n);
            metrics::gauge!("herald_mailboxes", "state" => name).set(n as f64);
        }
        metrics::gauge!("herald_mailbox_sync_lag_seconds").set(lag as f64);
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
        .into_response()
}
