//! The Messenger Platform's webhook signature: `X-Hub-Signature-256: sha256=<hex>`, the
//! HMAC-SHA256 of the raw request body under the app secret.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn mac(app_secret: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = match HmacSha256::new_from_slice(app_secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(body);
    mac
}

/// The header value Meta sends for `body`.
pub fn signature(app_secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(app_secret, body).finalize().into_bytes())
    )
}

/// Whether `header` signs exactly these bytes, compared in constant time.
pub fn verify(app_secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_digest) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(given) = hex::decode(hex_digest) else {
        return false;
    };
    mac(app_secret, body).verify_slice(&given).is_ok()
}

/// Whether the handshake's `hub.verify_token` is the channel's, compared in constant time.
pub fn verify_token_matches(expected: &str, given: &str) -> bool {
    let digest = mac(expected, expected.as_bytes()).finalize().into_bytes();
    mac(expected, given.as_bytes())
        .verify_slice(&digest)
        .is_ok()
}

/// The Send API (`POST {graph}/me/messages?access_token=…`, JSON with `messaging_type`).
#[derive(Clone, Debug)]
pub struct Client {
    base_url: String,
    http: reqwest::Client,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct Sent {
    pub recipient_id: String,
    pub message_id: String,
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    error: GraphError,
}

#[derive(serde::Deserialize)]
struct GraphError {
    message: String,
    #[serde(default)]
    code: Option<i64>,
}

impl Client {
    pub fn new(base_url: &str, http: reqwest::Client) -> Client {
        Client {
            base_url: base_url.trim_end_matches('/').to_owned(),
            http,
        }
    }

    /// Sends a text reply (`messaging_type: RESPONSE`, inside the 24-hour window).
    pub async fn send_text(
        &self,
        page_access_token: &str,
        recipient: &str,
        text: &str,
    ) -> Result<Sent, crate::ProviderError> {
        let response = self
            .http
            .post(format!("{}/me/messages", self.base_url))
            .query(&[("access_token", page_access_token)])
            .json(&serde_json::json!({
                "recipient": {"id": recipient},
                "messaging_type": "RESPONSE",
                "message": {"text": text},
            }))
            .send()
            .await
            .map_err(|e| crate::ProviderError::network("Messenger", &e))?;
        let status = response.status();
        if status.is_success() {
            return response.json::<Sent>().await.map_err(|e| {
                crate::ProviderError::Temporary(format!(
                    "Messenger's answer was not understood: {e}"
                ))
            });
        }
        let reason = match response.json::<ErrorBody>().await {
            Ok(ErrorBody {
                error:
                    GraphError {
                        message,
                        code: Some(code),
                    },
            }) => format!("Messenger refused the message: {message} (code {code})"),
            Ok(ErrorBody { error }) => format!("Messenger refused the message: {}", error.message),
            Err(_) => format!("Messenger answered {status}"),
        };
        Err(crate::ProviderError::from_status(status, reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_bytes_are_signed() {
        let body = br#"{"object":"page","entry":[]}"#;
        // `printf '%s' "$body" | openssl dgst -sha256 -hmac secret`
        let header = "sha256=550e646d4869f9eaf9e56ccc2b73b528c8d3aac4a24ff137e0a26e3e45bbd075";
        assert_eq!(signature("secret", body), header);
        let header = header.to_owned();
        assert!(verify("secret", body, &header));
        assert!(!verify(
            "secret",
            br#"{"object":"page","entry":[ ]}"#,
            &header
        ));
        assert!(!verify("other", body, &header));
        assert!(!verify("secret", body, &header.replace("sha256=", "sha1=")));
        assert!(!verify("secret", body, "sha256=zz"));
    }

    #[test]
    fn verify_tokens_match_exactly() {
        assert!(verify_token_matches("tok-123", "tok-123"));
        assert!(!verify_token_matches("tok-123", "tok-124"));
        assert!(!verify_token_matches("tok-123", ""));
    }
}
