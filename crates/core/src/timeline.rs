//! Record timelines: what happened to a Person, Company, Deal or Lead, newest first.
//!
//! A timeline merges entries from sources. The core crate provides the record's own history;
//! the mail and notes crates add their sources (emails, notes) when a binary composes them, so
//! this module never needs to know their tables.

use std::sync::Arc;

use chrono::NaiveDateTime;
use serde::Serialize;

use crate::db::DbConnection;
use crate::error::{CoreError, CoreResult};
use crate::pagination::{decode_cursor, encode_cursor};
use crate::records::{Company, Deal, Lead, Person, Record, RecordKind};
use crate::time::rfc3339;

/// One item on a timeline.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    /// What it is: `record_created`, later `email`, `note`.
    pub kind: String,
    /// The id of the item within its kind.
    pub id: i64,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub occurred_at: NaiveDateTime,
    /// The item itself, as its own endpoint shows it.
    pub data: serde_json::Value,
}

/// The record whose timeline is asked for, with the viewer (sources filter by visibility).
#[derive(Clone, Copy, Debug)]
pub struct TimelineQuery {
    pub account_id: i64,
    pub viewer_id: i64,
    pub kind: RecordKind,
    pub record_id: i64,
}

/// Position after the last entry of a page, in the order (occurred_at, kind, id) descending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineCursor {
    pub occurred_at: NaiveDateTime,
    pub kind: String,
    pub id: i64,
}

impl TimelineCursor {
    fn of(entry: &TimelineEntry) -> Self {
        TimelineCursor {
            occurred_at: entry.occurred_at,
            kind: entry.kind.clone(),
            id: entry.id,
        }
    }

    pub fn encode(&self) -> String {
        encode_cursor(&format!(
            "t:{}:{}:{}",
            self.occurred_at.and_utc().timestamp_micros(),
            self.kind,
            self.id
        ))
    }

    pub fn decode(cursor: &str) -> CoreResult<Self> {
        let bad = || CoreError::invalid("cursor", "is not a cursor returned by this timeline");
        let raw = decode_cursor(cursor)?;
        let mut parts = raw.strip_prefix("t:").ok_or_else(bad)?.splitn(3, ':');
        let micros: i64 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let kind = parts.next().ok_or_else(bad)?.to_owned();
        let id: i64 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let occurred_at = chrono::DateTime::from_timestamp_micros(micros)
            .ok_or_else(bad)?
            .naive_utc();
        Ok(TimelineCursor {
            occurred_at,
            kind,
            id,
        })
    }

    /// Whether `entry` comes after this cursor in timeline order. Sources that filter in SQL use
    /// the same order: `occurred_at` descending, then `kind`, then `id` descending.
    pub fn admits(&self, entry: &TimelineEntry) -> bool {
        sort_key(entry)
            > (
                std::cmp::Reverse(self.occurred_at),
                self.kind.clone(),
                std::cmp::Reverse(self.id),
            )
    }
}

fn sort_key(
    e: &TimelineEntry,
) -> (
    std::cmp::Reverse<NaiveDateTime>,
    String,
    std::cmp::Reverse<i64>,
) {
    (
        std::cmp::Reverse(e.occurred_at),
        e.kind.clone(),
        std::cmp::Reverse(e.id),
    )
}

/// A source of timeline entries. It returns at most `limit` entries after `after`, in timeline
/// order, visible to the viewer.
pub trait TimelineSource: Send + Sync {
    fn entries(
        &self,
        conn: &mut DbConnection,
        query: &TimelineQuery,
        after: Option<&TimelineCursor>,
        limit: i64,
    ) -> CoreResult<Vec<TimelineEntry>>;
}

/// The record's own history: its creation.
#[derive(Debug, Default)]
pub struct RecordHistory;

impl TimelineSource for RecordHistory {
    fn entries(
        &self,
        conn: &mut DbConnection,
        query: &TimelineQuery,
        after: Option<&TimelineCursor>,
        _limit: i64,
    ) -> CoreResult<Vec<TimelineEntry>> {
        let (created_at, data) = match query.kind {
            RecordKind::Person => {
                record_snapshot(Person::find(conn, query.account_id, query.record_id)?)
            }
            RecordKind::Company => {
                record_snapshot(Company::find(conn, query.account_id, query.record_id)?)
            }
            RecordKind::Deal => {
                record_snapshot(Deal::find(conn, query.account_id, query.record_id)?)
            }
            RecordKind::Lead => {
                record_snapshot(Lead::find(conn, query.account_id, query.record_id)?)
            }
        };
        let entry = TimelineEntry {
            kind: "record_created".into(),
            id: query.record_id,
            occurred_at: created_at,
            data,
        };
        Ok(after
            .is_none_or(|c| c.admits(&entry))
            .then_some(entry)
            .into_iter()
            .collect())
    }
}

fn record_snapshot<R: Record>(record: R) -> (NaiveDateTime, serde_json::Value) {
    (
        record.created_at(),
        serde_json::to_value(&record).unwrap_or_default(),
    )
}

/// A page of a timeline.
#[derive(Debug, Serialize)]
pub struct TimelinePage {
    pub items: Vec<TimelineEntry>,
    pub next_cursor: Option<String>,
}

/// The sources a deployment shows on timelines.
#[derive(Clone)]
pub struct Timeline {
    sources: Vec<Arc<dyn TimelineSource>>,
}

impl std::fmt::Debug for Timeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeline")
            .field("sources", &self.sources.len())
            .finish()
    }
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline {
            sources: vec![Arc::new(RecordHistory)],
        }
    }
}

impl Timeline {
    pub fn with_source(mut self, source: Arc<dyn TimelineSource>) -> Self {
        self.sources.push(source);
        self
    }

    /// One page: `limit` entries from all sources merged in timeline order.
    pub fn page(
        &self,
        conn: &mut DbConnection,
        query: &TimelineQuery,
        cursor: Option<&str>,
        limit: i64,
    ) -> CoreResult<TimelinePage> {
        let after = cursor.map(TimelineCursor::decode).transpose()?;
        let mut merged = Vec::new();
        for source in &self.sources {
            merged.extend(source.entries(conn, query, after.as_ref(), limit + 1)?);
        }
        merged.sort_by_key(sort_key);
        let more = merged.len() as i64 > limit;
        merged.truncate(limit as usize);
        let next_cursor = if more {
            merged.last().map(|e| TimelineCursor::of(e).encode())
        } else {
            None
        };
        Ok(TimelinePage {
            items: merged,
            next_cursor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &str, id: i64, secs: i64) -> TimelineEntry {
        TimelineEntry {
            kind: kind.into(),
            id,
            occurred_at: chrono::DateTime::from_timestamp(secs, 0)
                .unwrap()
                .naive_utc(),
            data: serde_json::Value::Null,
        }
    }

    #[test]
    fn cursor_round_trips_and_admits_only_later_entries() {
        let cursor = TimelineCursor::of(&entry("email", 7, 100));
        assert_eq!(TimelineCursor::decode(&cursor.encode()).unwrap(), cursor);
        assert!(cursor.admits(&entry("email", 6, 100)));
        assert!(cursor.admits(&entry("note", 9, 100)));
        assert!(cursor.admits(&entry("email", 99, 99)));
        assert!(!cursor.admits(&entry("email", 7, 100)));
        assert!(!cursor.admits(&entry("email", 1, 101)));
        assert!(!cursor.admits(&entry("a_kind", 1, 100)));
    }
}
