//! Timestamps are stored as UTC `NaiveDateTime` and shown as RFC 3339 with `Z`.

use chrono::{DateTime, SubsecRound, Utc};
pub use chrono::{NaiveDateTime, TimeDelta};
use serde::Serializer;

/// Now, truncated to microseconds so a value read back from either database compares equal.
pub fn now() -> NaiveDateTime {
    Utc::now().naive_utc().trunc_subsecs(6)
}

pub fn to_rfc3339(value: &NaiveDateTime) -> String {
    DateTime::<Utc>::from_naive_utc_and_offset(*value, Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// `#[serde(serialize_with = "rfc3339")]`
pub fn rfc3339<S: Serializer>(value: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&to_rfc3339(value))
}

/// `#[serde(serialize_with = "rfc3339_opt")]`
pub fn rfc3339_opt<S: Serializer>(value: &Option<NaiveDateTime>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.serialize_str(&to_rfc3339(v)),
        None => s.serialize_none(),
    }
}
