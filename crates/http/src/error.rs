//! Every error the API returns, mapped to `application/problem+json` (RFC 9457) in one place.
//!
//! Policy: handlers return `Result<_, ApiError>`; domain crates' errors convert with `From`; the
//! `code` member is stable and documented, `detail` is for people. Internal errors are logged
//! with their cause and shown without it.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_core::CoreError;
use herald_mailbox::MailboxError;
use herald_scheduler::SchedulerError;
use herald_templates::TemplateError;
use serde::Serialize;

/// The problem document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:herald:problem:{code}`
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable code, e.g. `validation_failed`, `not_found`, `unauthorized`.
    pub code: String,
    /// For `validation_failed`: the input field at fault, e.g. `emails[1]`; for template errors
    /// the part (`subject`, `html`, `text`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For `template_syntax_error`: where, 1-based.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// For `missing_values`: every placeholder without a value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error(transparent)]
    Scheduler(SchedulerError),
    #[error(transparent)]
    Template(TemplateError),
    #[error(transparent)]
    Mailbox(MailboxError),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    /// A provider webhook whose signature does not prove it (403).
    #[error("{detail}")]
    Webhook { code: &'static str, detail: String },
    /// A request that cannot be read at all (bad JSON syntax, wrong content type, too large).
    #[error("{detail}")]
    BadRequest {
        status: StatusCode,
        code: &'static str,
        detail: String,
    },
    #[error("no route for this path")]
    NoRoute,
    #[error("method not allowed on this path")]
    MethodNotAllowed,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, String, Option<String>) {
        match self {
            ApiError::Core(e) => match e {
                CoreError::NotFound { .. } => {
                    (StatusCode::NOT_FOUND, "not_found", e.to_string(), None)
                }
                CoreError::Invalid { field, message } => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "validation_failed",
                    format!("{field}: {message}"),
                    Some(field.clone()),
                ),
                CoreError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m.clone(), None),
                CoreError::Conflict {
                    code: code @ "idempotency_key_reused",
                    message,
                } => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    code,
                    message.clone(),
                    None,
                ),
                CoreError::Conflict { code, message } => {
                    (StatusCode::CONFLICT, code, message.clone(), None)
                }
                CoreError::Unavailable(_) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is unavailable; try again shortly".into(),
                    None,
                ),
                _ => internal(),
            },
            ApiError::Scheduler(e) => match e {
                SchedulerError::NotFound(_) => {
                    (StatusCode::NOT_FOUND, "not_found", e.to_string(), None)
                }
                SchedulerError::InvalidState { .. } => {
                    (StatusCode::CONFLICT, "invalid_state", e.to_string(), None)
                }
                _ => internal(),
            },
            ApiError::Template(e) => {
                let code = match e {
                    TemplateError::Syntax { .. } => "template_syntax_error",
                    TemplateError::MissingValues { .. } => "missing_values",
                    TemplateError::LimitExceeded(_) => "template_limit_exceeded",
                    _ => "template_render_failed",
                };
                let field = match e {
                    TemplateError::Syntax { part, .. } | TemplateError::Render { part, .. } => {
                        Some(part.to_string())
                    }
                    _ => None,
                };
                (StatusCode::UNPROCESSABLE_ENTITY, code, e.to_string(), field)
            }
            ApiError::Mailbox(e) => match e {
                MailboxError::Plan(v) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "plan_limit",
                    format!("{} (rule {}, limit {})", v.message, v.rule, v.limit),
                    Some("sending_enabled".to_owned()),
                ),
                MailboxError::Connect(c) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "mailbox_connection_failed",
                    c.to_string(),
                    Some(c.side.to_string()),
                ),
                _ => internal(),
            },
            ApiError::Unauthorized(m) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                (*m).to_owned(),
                None,
            ),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m.clone(), None),
            ApiError::Webhook { code, detail } => {
                (StatusCode::FORBIDDEN, *code, detail.clone(), None)
            }
            ApiError::BadRequest {
                status,
                code,
                detail,
            } => (*status, code, detail.clone(), None),
            ApiError::NoRoute => (StatusCode::NOT_FOUND, "not_found", self.to_string(), None),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                self.to_string(),
                None,
            ),
        }
    }
}

fn internal() -> (StatusCode, &'static str, String, Option<String>) {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "an internal error occurred; it has been logged".into(),
        None,
    )
}

impl From<MailboxError> for ApiError {
    fn from(e: MailboxError) -> Self {
        match e {
            MailboxError::Core(core) => ApiError::Core(core),
            MailboxError::Template(template) => ApiError::from(template),
            other => ApiError::Mailbox(other),
        }
    }
}

impl From<TemplateError> for ApiError {
    fn from(e: TemplateError) -> Self {
        match e {
            TemplateError::Core(core) => ApiError::Core(core),
            other => ApiError::Template(other),
        }
    }
}

impl From<SchedulerError> for ApiError {
    fn from(e: SchedulerError) -> Self {
        match e {
            SchedulerError::Core(core) => ApiError::Core(core),
            other => ApiError::Scheduler(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, detail, field) = self.parts();
        if status.is_server_error() {
            tracing::error!(error = %self, code, "request failed");
        }
        let problem = Problem {
            kind: format!("urn:herald:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            code: code.to_owned(),
            field,
            line: match &self {
                ApiError::Template(
                    TemplateError::Syntax { line, .. } | TemplateError::Render { line, .. },
                ) => Some(*line),
                _ => None,
            },
            column: match &self {
                ApiError::Template(TemplateError::Syntax { column, .. }) => Some(*column),
                _ => None,
            },
            missing: match &self {
                ApiError::Template(TemplateError::MissingValues { names }) => Some(names.clone()),
                _ => None,
            },
        };
        let mut response = (status, axum::Json(problem)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
