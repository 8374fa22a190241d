#![doc = include_str!("../README.md")]

pub mod error;
pub mod extract;
pub mod idempotent;
pub mod routes;
pub mod state;

use std::future::Future;
use std::sync::OnceLock;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::{ApiError, Problem};
pub use herald_inbox::inbound::Intake;
pub use state::AppState;

use routes::records::{companies, deals, leads, persons};
use routes::{emails, inbox, mailboxes, me, system, templates, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(title = "Herald API", description = "Herald's communications engine for CRMs. Errors are application/problem+json with a stable `code`."),
    modifiers(&BearerAuth),
    components(schemas(Problem))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The process-wide Prometheus recorder (metrics recorders are global by design).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding application's): then ours
            // only renders what is recorded through it, which is nothing; say so once.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}

fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(system::healthz))
        .routes(routes!(system::readyz))
        .routes(routes!(system::metrics))
        .routes(routes!(me::me))
        .routes(routes!(me::list_users, me::create_user))
        .routes(routes!(persons::list, persons::create))
        .routes(routes!(persons::get, persons::update, persons::delete))
        .routes(routes!(persons::timeline))
        .routes(routes!(companies::list, companies::create))
        .routes(routes!(
            companies::get,
            companies::update,
            companies::delete
        ))
        .routes(routes!(companies::timeline))
        .routes(routes!(deals::list, deals::create))
        .routes(routes!(deals::get, deals::update, deals::delete))
        .routes(routes!(deals::timeline))
        .routes(routes!(leads::list, leads::create))
        .routes(routes!(leads::get, leads::update, leads::delete))
        .routes(routes!(leads::timeline))
        .routes(routes!(templates::list, templates::create))
        .routes(routes!(
            templates::get,
            templates::update,
            templates::delete
        ))
        .routes(routes!(templates::render))
        .routes(routes!(mailboxes::list, mailboxes::create))
        .routes(routes!(
            mailboxes::get,
            mailboxes::update,
            mailboxes::delete
        ))
        .routes(routes!(mailboxes::sync))
        .routes(routes!(emails::list, emails::create))
        .routes(routes!(emails::get, emails::update))
        .routes(routes!(emails::reply_draft))
        .routes(routes!(emails::reply))
        .routes(routes!(emails::cancel))
        .routes(routes!(emails::send_now))
        .routes(routes!(emails::retry))
        .routes(routes!(inbox::set_availability))
        .routes(routes!(inbox::list_channels, inbox::create_channel))
        .routes(routes!(inbox::delete_channel))
        .routes(routes!(inbox::list_conversations))
        .routes(routes!(inbox::get_conversation, inbox::delete_conversation))
        .routes(routes!(inbox::list_messages, inbox::reply))
        .routes(routes!(inbox::assign))
        .routes(routes!(inbox::close))
        .routes(routes!(inbox::reopen))
        .routes(routes!(webhooks::twilio))
        .routes(routes!(webhooks::twilio_status))
        .routes(routes!(webhooks::messenger_verify, webhooks::messenger))
}

/// The OpenAPI document, as served at `/api/v1/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_routes().split_for_parts().1
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    let (router, doc) = api_routes().split_for_parts();
    let doc = std::sync::Arc::new(doc);
    let body_limit = state.config.api.body_limit_bytes;
    router
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(track_http))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                // `user_id` is filled in by the `Caller` extractor once the token is checked.
                tracing::info_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path(),
                    user_id = tracing::field::Empty,
                )
            }),
        )
        .with_state(state)
}

/// Records latency per route and status.
async fn track_http(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().to_string();
    let response = next.run(request).await;
    metrics::histogram!(
        "herald_http_request_duration_seconds",
        "method" => method,
        "route" => route,
        "status" => response.status().as_u16().to_string(),
    )
    .record(started.elapsed().as_secs_f64());
    response.into_response()
}

/// Serves on `listener` until `shutdown` completes, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
