//! Cursor pagination: `{"items": [...], "next_cursor": "..." | null}` with `limit` and `cursor`.
//!
//! Cursors are opaque to clients: base64url of the sort key of the last item returned.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use crate::error::CoreError;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;

/// A validated page request over an id-ordered list (newest first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: i64,
    /// Only items with an id below this one.
    pub before_id: Option<i64>,
}

impl PageRequest {
    pub fn parse(limit: Option<i64>, cursor: Option<&str>) -> Result<Self, CoreError> {
        Ok(PageRequest {
            limit: parse_limit(limit)?,
            before_id: cursor.map(decode_id_cursor).transpose()?,
        })
    }

    pub fn first(limit: i64) -> Self {
        PageRequest {
            limit,
            before_id: None,
        }
    }
}

pub fn parse_limit(limit: Option<i64>) -> Result<i64, CoreError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(CoreError::invalid(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        )),
    }
}

#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// From `limit + 1` rows fetched newest first: the extra row only says there is more.
    pub fn from_rows(mut rows: Vec<T>, limit: i64, id_of: impl Fn(&T) -> i64) -> Self {
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = if more {
            rows.last()
                .map(|r| encode_cursor(&format!("id:{}", id_of(r))))
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

pub fn encode_cursor(raw: &str) -> String {
    URL_SAFE_NO_PAD.encode(raw)
}

pub fn decode_cursor(cursor: &str) -> Result<String, CoreError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor.trim())
        .map_err(|_| CoreError::invalid("cursor", "is not a cursor returned by this list"))?;
    String::from_utf8(bytes)
        .map_err(|_| CoreError::invalid("cursor", "is not a cursor returned by this list"))
}

fn decode_id_cursor(cursor: &str) -> Result<i64, CoreError> {
    decode_cursor(cursor)?
        .strip_prefix("id:")
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| CoreError::invalid("cursor", "is not a cursor returned by this list"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_carries_a_cursor_only_when_more_rows_exist() {
        let page = Page::from_rows(vec![9, 8, 7], 2, |r| *r);
        assert_eq!(page.items, vec![9, 8]);
        let next = PageRequest::parse(Some(2), page.next_cursor.as_deref()).unwrap();
        assert_eq!(next.before_id, Some(8));
        assert!(Page::from_rows(vec![9, 8], 2, |r| *r).next_cursor.is_none());
    }

    #[test]
    fn bad_limit_and_cursor_are_field_errors() {
        assert!(
            matches!(PageRequest::parse(Some(0), None), Err(CoreError::Invalid { field, .. }) if field == "limit")
        );
        assert!(
            matches!(PageRequest::parse(None, Some("%%")), Err(CoreError::Invalid { field, .. }) if field == "cursor")
        );
    }
}
