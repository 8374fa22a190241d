//! `Idempotency-Key` support: a client's retry of a POST gets the first response instead of
//! doing the work again.
//!
//! The key row is inserted in the same transaction as the work and completed with the response
//! before commit, so either both are stored or neither. A concurrent retry waits on the key's
//! unique index (PostgreSQL) or the write lock (SQLite) and then reads the stored response.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::DbConnection;
use crate::error::{CoreError, CoreResult};
use crate::schema::idempotency_keys;
use crate::time::now;

/// How long a key is remembered.
pub const KEY_TTL: chrono::TimeDelta = chrono::TimeDelta::hours(24);

#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub user_id: i64,
    pub account_id: i64,
    pub key: String,
    /// Digest of method, path and body: the same key with another request is refused.
    pub request_hash: String,
}

/// A response stored for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
}

#[derive(Insertable)]
#[diesel(table_name = idempotency_keys)]
struct NewKey<'a> {
    user_id: i64,
    idempotency_key: &'a str,
    account_id: i64,
    request_hash: &'a str,
    created_at: NaiveDateTime,
}

impl IdempotencyKey {
    pub fn parse(
        user_id: i64,
        account_id: i64,
        key: &str,
        request_hash: String,
    ) -> CoreResult<Self> {
        let key = key.trim();
        if key.is_empty() || key.len() > 255 || !key.chars().all(|c| c.is_ascii_graphic()) {
            return Err(CoreError::invalid(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            ));
        }
        Ok(IdempotencyKey {
            user_id,
            account_id,
            key: key.to_owned(),
            request_hash,
        })
    }

    /// Call inside the work's write transaction. `Some(response)` means the request was already
    /// done: return that response and do nothing else.
    pub fn begin(&self, conn: &mut DbConnection) -> CoreResult<Option<StoredResponse>> {
        let row = NewKey {
            user_id: self.user_id,
            idempotency_key: &self.key,
            account_id: self.account_id,
            request_hash: &self.request_hash,
            created_at: now(),
        };
        // Backend arms: ON CONFLICT is not in the multi-backend's common SQL.
        let inserted = match conn {
            DbConnection::Postgres(c) => diesel::insert_into(idempotency_keys::table)
                .values(&row)
                .on_conflict_do_nothing()
                .execute(c)?,
            DbConnection::Sqlite(c) => diesel::insert_into(idempotency_keys::table)
                .values(&row)
                .on_conflict_do_nothing()
                .execute(c)?,
        };
        if inserted == 1 {
            return Ok(None);
        }
        let (hash, status, body, created_at): (String, Option<i32>, Option<String>, NaiveDateTime) =
            idempotency_keys::table
                .find((self.user_id, &self.key))
                .select((
                    idempotency_keys::request_hash,
                    idempotency_keys::response_status,
                    idempotency_keys::response_body,
                    idempotency_keys::created_at,
                ))
                .first(conn)?;
        if now() - created_at > KEY_TTL {
            // An expired key is reused as new.
            diesel::update(idempotency_keys::table.find((self.user_id, &self.key)))
                .set((
                    idempotency_keys::request_hash.eq(&self.request_hash),
                    idempotency_keys::response_status.eq(None::<i32>),
                    idempotency_keys::response_body.eq(None::<String>),
                    idempotency_keys::created_at.eq(now()),
                ))
                .execute(conn)?;
            return Ok(None);
        }
        if hash != self.request_hash {
            return Err(CoreError::Conflict {
                code: "idempotency_key_reused",
                message: "this Idempotency-Key was used with a different request".into(),
            });
        }
        match (status, body) {
            (Some(status), Some(body)) => Ok(Some(StoredResponse {
                status: status as u16,
                body,
            })),
            _ => Err(CoreError::Conflict {
                code: "idempotency_key_in_progress",
                message: "a request with this Idempotency-Key is still being processed".into(),
            }),
        }
    }

    /// Stores the response, in the same transaction as the work.
    pub fn complete(&self, conn: &mut DbConnection, response: &StoredResponse) -> CoreResult<()> {
        diesel::update(idempotency_keys::table.find((self.user_id, &self.key)))
            .set((
                idempotency_keys::response_status.eq(Some(i32::from(response.status))),
                idempotency_keys::response_body.eq(Some(&response.body)),
            ))
            .execute(conn)?;
        Ok(())
    }
}

/// Deletes keys older than [`KEY_TTL`]; returns how many.
pub fn purge_expired(conn: &mut DbConnection) -> QueryResult<usize> {
    diesel::delete(idempotency_keys::table.filter(idempotency_keys::created_at.lt(now() - KEY_TTL)))
        .execute(conn)
}

/// Runs `work` in a write transaction, guarded by `key` when the client sent one. Returns the
/// response and whether it is a replay of an earlier request.
pub fn run_idempotent<E>(
    conn: &mut DbConnection,
    key: Option<&IdempotencyKey>,
    work: impl FnOnce(&mut DbConnection) -> Result<StoredResponse, E>,
) -> Result<(StoredResponse, bool), E>
where
    E: From<CoreError> + From<diesel::result::Error>,
{
    conn.write(|conn| {
        if let Some(key) = key
            && let Some(stored) = key.begin(conn)?
        {
            return Ok((stored, true));
        }
        let response = work(conn)?;
        if let Some(key) = key {
            key.complete(conn, &response)?;
        }
        Ok((response, false))
    })
}
