//! Provider webhooks (M2): unauthenticated routes whose requests prove themselves by signature.
//! A bad or missing signature is a 403 and stores nothing; a provider's retry of a message it
//! sent before is stored once. The handlers store and answer at once.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use herald_core::CoreError;
use herald_inbox::channels::{Credentials, OpenChannel};
use herald_inbox::inbound::{self, Arriving, Received};
use secrecy::ExposeSecret;

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::Path;
use crate::state::AppState;

fn rejected(provider: &'static str, reason: &'static str) -> ApiError {
    metrics::counter!("herald_webhook_rejections_total", "provider" => provider, "reason" => reason)
        .increment(1);
    ApiError::Webhook {
        code: "invalid_signature",
        detail: format!("the {provider} signature is missing or does not match this request"),
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Twilio's signature over the public URL Twilio requested and the form fields.
fn check_twilio(
    state: &AppState,
    channel: &OpenChannel,
    uri: &Uri,
    headers: &HeaderMap,
    params: &[(String, String)],
) -> ApiResult<()> {
    let Credentials::Twilio { auth_token } = &channel.credentials else {
        return Err(rejected("twilio", "wrong_kind"));
    };
    // The URL Twilio requested: the public URL, this path, and the query string as sent.
    let url = format!(
        "{}{}",
        state.config.public_url(),
        uri.path_and_query().map_or(uri.path(), |p| p.as_str())
    );
    let Some(signature) = header(headers, "x-twilio-signature") else {
        return Err(rejected("twilio", "missing"));
    };
    if !herald_providers::twilio::verify(auth_token.expose_secret(), &url, params, signature) {
        return Err(rejected("twilio", "mismatch"));
    }
    Ok(())
}

/// Twilio's inbound message webhook, checked with `X-Twilio-Signature` over the public URL and
/// the sorted form parameters.
#[utoipa::path(post, path = "/webhooks/twilio/{channel_id}", tag = "webhooks", params(("channel_id" = i64, Path)),
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "Twilio's message fields"),
    responses((status = 200, description = "stored (or a retry of a stored message)"), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn twilio(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let channel = state.intake.channel(id, "twilio_whatsapp").await?;
    let params: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
        .map_err(|e| CoreError::invalid("body", format!("not a form: {e}")))?;
    check_twilio(&state, &channel, &uri, &headers, &params)?;
    let message = inbound::twilio_message(&channel.channel, &params)
        .map_err(|e| CoreError::invalid("body", e.to_string()))?;
    // Batched with the other webhooks arriving meanwhile: a few statements and one commit for
    // many messages, and the 200 only once this one is durable.
    let received = state
        .intake
        .receive(Arriving::new(&channel.channel, message))
        .await?;
    if received == Received::Duplicate {
        metrics::counter!("herald_webhook_duplicates_total", "provider" => "twilio").increment(1);
    }
    // Twilio reads the body as TwiML: an empty response sends no reply.
    Ok((
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "text/xml")],
        "<Response/>",
    )
        .into_response())
}

/// The Messenger verification handshake: `hub.challenge` back when `hub.verify_token` is the
/// channel's.
#[utoipa::path(get, path = "/webhooks/messenger/{channel_id}", tag = "webhooks", params(("channel_id" = i64, Path)),
    responses((status = 200, description = "the challenge"), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn messenger_verify(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let channel = state.intake.channel(id, "messenger").await?;
    let params: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or_default()).unwrap_or_default();
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let Credentials::Messenger { verify_token, .. } = &channel.credentials else {
        return Err(rejected("messenger", "wrong_kind"));
    };
    let token_matches = get("hub.verify_token").is_some_and(|given| {
        herald_providers::messenger::verify_token_matches(verify_token.expose_secret(), given)
    });
    match (get("hub.mode"), get("hub.challenge")) {
        (Some("subscribe"), Some(challenge)) if token_matches => Ok((
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "text/plain")],
            challenge.to_owned(),
        )
            .into_response()),
        _ => Err(rejected("messenger", "verify_token")),
    }
}

/// Messenger's webhook: messages, echoes of the page's own, delivery and read events, checked
/// with `X-Hub-Signature-256` over the raw bytes.
#[utoipa::path(post, path = "/webhooks/messenger/{channel_id}", tag = "webhooks", params(("channel_id" = i64, Path)),
    request_body(content = String, content_type = "application/json", description = "Meta's page webhook"),
    responses((status = 200, description = "stored"), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn messenger(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let channel = state.intake.channel(id, "messenger").await?;
    let Credentials::Messenger { app_secret, .. } = &channel.credentials else {
        return Err(rejected("messenger", "wrong_kind"));
    };
    let Some(signature) = header(&headers, "x-hub-signature-256") else {
        return Err(rejected("messenger", "missing"));
    };
    if !herald_providers::messenger::verify(app_secret.expose_secret(), &body, signature) {
        return Err(rejected("messenger", "mismatch"));
    }
    let batch = inbound::messenger_events(&channel.channel, &body)
        .map_err(|e| CoreError::invalid("body", e.to_string()))?;
    state
        .intake
        .receive_messenger(&channel.channel, batch)
        .await?;
    Ok(StatusCode::OK)
}

/// Twilio's status callback for a message Herald sent (M4): `MessageSid`, `MessageStatus`,
/// `ErrorCode`; signed like the inbound webhook.
#[utoipa::path(post, path = "/webhooks/twilio/{channel_id}/status", tag = "webhooks", params(("channel_id" = i64, Path)),
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "Twilio's status fields"),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn twilio_status(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let channel = state.intake.channel(id, "twilio_whatsapp").await?;
    let params: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
        .map_err(|e| CoreError::invalid("body", format!("not a form: {e}")))?;
    check_twilio(&state, &channel, &uri, &headers, &params)?;
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let sid = get("MessageSid").ok_or_else(|| CoreError::invalid("MessageSid", "is required"))?;
    let status =
        get("MessageStatus").ok_or_else(|| CoreError::invalid("MessageStatus", "is required"))?;
    let error_code = get("ErrorCode");
    state
        .db
        .write_grouped(move |conn| {
            herald_inbox::outbound::twilio_status(
                conn,
                &channel.channel,
                &sid,
                &status,
                error_code.as_deref(),
            )
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
