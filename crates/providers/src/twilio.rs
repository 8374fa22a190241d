//! Twilio's webhook signature (`X-Twilio-Signature`), as Twilio documents it: the full URL Twilio
//! requested, followed by each POST parameter's name and value sorted by name, signed with
//! HMAC-SHA1 under the account's auth token and Base64-encoded. Twilio may have signed the URL with
//! or without its default port, so both spellings are accepted.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;

type HmacSha1 = Hmac<Sha1>;

fn mac(auth_token: &str, url: &str, params: &[(String, String)]) -> HmacSha1 {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    // By name, then by value for a repeated name (MediaUrl0… are distinct names).
    sorted.sort();
    // Any key length is accepted by HMAC.
    let mut mac = match HmacSha1::new_from_slice(auth_token.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

/// The signature Twilio sends for this request.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    STANDARD.encode(mac(auth_token, url, params).finalize().into_bytes())
}

/// The URL as given, and the same URL with its default port added or removed.
fn url_spellings(url: &str) -> Vec<String> {
    let mut spellings = vec![url.to_owned()];
    let (scheme, default) = if let Some(rest) = url.strip_prefix("https://") {
        (("https://", rest), ":443")
    } else if let Some(rest) = url.strip_prefix("http://") {
        (("http://", rest), ":80")
    } else {
        return spellings;
    };
    let (prefix, rest) = scheme;
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(split);
    match authority.strip_suffix(default) {
        Some(host) => spellings.push(format!("{prefix}{host}{tail}")),
        None if !authority.contains(':') || authority.ends_with(']') => {
            spellings.push(format!("{prefix}{authority}{default}{tail}"));
        }
        None => {}
    }
    spellings
}

/// Whether `header` is Twilio's signature of this request, compared in constant time.
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], header: &str) -> bool {
    let Ok(given) = STANDARD.decode(header.trim()) else {
        return false;
    };
    url_spellings(url)
        .iter()
        .any(|url| mac(auth_token, url, params).verify_slice(&given).is_ok())
}

/// The Messages API (`POST /2010-04-01/Accounts/{sid}/Messages.json`, form-encoded, basic auth
/// with the account SID and auth token).
#[derive(Clone, Debug)]
pub struct Client {
    base_url: String,
    http: reqwest::Client,
}

/// What Twilio answered to a send.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct Sent {
    pub sid: String,
    /// `queued` or `accepted`; the status callback tells the rest.
    pub status: String,
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    message: Option<String>,
}

/// A message to send.
#[derive(Clone, Debug)]
pub struct Outgoing<'a> {
    pub account_sid: &'a str,
    pub auth_token: &'a str,
    /// `whatsapp:+14155238886`
    pub from: &'a str,
    pub to: &'a str,
    pub body: &'a str,
    pub status_callback: &'a str,
}

impl Client {
    pub fn new(base_url: &str, http: reqwest::Client) -> Client {
        Client {
            base_url: base_url.trim_end_matches('/').to_owned(),
            http,
        }
    }

    pub async fn send(&self, message: &Outgoing<'_>) -> Result<Sent, crate::ProviderError> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.base_url, message.account_sid
        );
        let response = self
            .http
            .post(url)
            .basic_auth(message.account_sid, Some(message.auth_token))
            .form(&[
                ("From", message.from),
                ("To", message.to),
                ("Body", message.body),
                ("StatusCallback", message.status_callback),
            ])
            .send()
            .await
            .map_err(|e| crate::ProviderError::network("Twilio", &e))?;
        let status = response.status();
        if status.is_success() {
            return response.json::<Sent>().await.map_err(|e| {
                crate::ProviderError::Temporary(format!("Twilio's answer was not understood: {e}"))
            });
        }
        let body: Option<ErrorBody> = response.json().await.ok();
        let reason = match body {
            Some(ErrorBody {
                code: Some(code),
                message: Some(message),
            }) => format!("Twilio refused the message: {message} (error {code})"),
            _ => format!("Twilio answered {status}"),
        };
        Err(crate::ProviderError::from_status(status, reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Twilio's published example (its docs and its helper libraries' tests).
    fn published() -> Vec<(String, String)> {
        params(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ])
    }

    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    #[test]
    fn the_published_example_signs_as_twilio_says() {
        assert_eq!(
            signature("12345", URL, &published()),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert!(verify(
            "12345",
            URL,
            &published(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn parameter_order_does_not_matter_but_every_byte_does() {
        let mut shuffled = published();
        shuffled.reverse();
        assert!(verify(
            "12345",
            URL,
            &shuffled,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        let mut changed = published();
        changed[2].1 = "1235".into();
        assert!(!verify(
            "12345",
            URL,
            &changed,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(!verify(
            "54321",
            URL,
            &published(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(!verify("12345", URL, &published(), "not base64!"));
        assert!(!verify("12345", URL, &published(), ""));
    }

    #[test]
    fn the_url_is_accepted_with_and_without_its_default_port() {
        let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        let signed_with_port = signature("12345", with_port, &published());
        assert!(verify("12345", URL, &published(), &signed_with_port));
        assert!(verify(
            "12345",
            with_port,
            &published(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        // Another port is another URL.
        let other = signature(
            "12345",
            "https://mycompany.com:8443/myapp.php?foo=1&bar=2",
            &published(),
        );
        assert!(!verify("12345", URL, &published(), &other));
        assert_eq!(
            url_spellings("http://h.example/x"),
            vec!["http://h.example/x", "http://h.example:80/x"]
        );
    }
}
