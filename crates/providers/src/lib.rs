#![doc = include_str!("../README.md")]

pub mod messenger;
pub mod twilio;

/// Why a provider call failed, in words a person understands.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Worth trying again: a 429, a 5xx, a network error.
    #[error("{0}")]
    Temporary(String),
    /// Trying again cannot help: the provider refused the request.
    #[error("{0}")]
    Permanent(String),
}

impl ProviderError {
    /// A failure to reach the provider at all.
    pub(crate) fn network(provider: &str, e: &reqwest::Error) -> Self {
        ProviderError::Temporary(format!("{provider} could not be reached: {e}"))
    }

    /// A non-success answer: 429 and 5xx are temporary.
    pub(crate) fn from_status(status: reqwest::StatusCode, reason: String) -> Self {
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            ProviderError::Temporary(reason)
        } else {
            ProviderError::Permanent(reason)
        }
    }
}
