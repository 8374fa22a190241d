//! Errors of the core crate.
//!
//! Policy: query-only functions return `diesel::QueryResult`; operations that apply domain rules
//! return [`CoreError`], whose variants carry what a caller needs to explain the failure. Binaries
//! map these to HTTP problems or exit codes in one place each; nothing here knows about HTTP.

use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The record does not exist in the caller's account (another account's id looks the same).
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },

    /// A field of the input is invalid; `field` names it as the client sent it.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },

    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),

    /// The request conflicts with the current state (a duplicate, a reused idempotency key…).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },

    #[error("configuration error: {0}")]
    Config(String),

    #[error("migration failed: {0}")]
    Migration(String),

    /// The database cannot be reached or the pool is exhausted.
    #[error("database unavailable: {0}")]
    Unavailable(String),

    #[error("database error: {0}")]
    Database(diesel::result::Error),

    #[error("secret decryption failed: the key does not match or the data is corrupt")]
    Decrypt,
}

impl CoreError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        CoreError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn not_found(kind: &'static str, id: impl ToString) -> Self {
        CoreError::NotFound {
            kind,
            id: id.to_string(),
        }
    }
}

/// Database errors a caller can act on get their own variants: a duplicate or a concurrent
/// change is a conflict, a busy database is "unavailable, try again"; the rest stay `Database`.
impl From<diesel::result::Error> for CoreError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::DatabaseErrorKind as Kind;
        use diesel::result::Error as E;
        match &e {
            E::NotFound => CoreError::NotFound {
                kind: "record",
                id: "requested".into(),
            },
            E::DatabaseError(Kind::UniqueViolation, _) => CoreError::Conflict {
                code: "conflict",
                message: "a record with the same unique value already exists".into(),
            },
            E::DatabaseError(Kind::ForeignKeyViolation, _) => CoreError::Conflict {
                code: "conflict",
                message: "a record this one refers to was changed at the same time; try again"
                    .into(),
            },
            E::DatabaseError(Kind::SerializationFailure, _) => {
                CoreError::Unavailable("the database was busy; try again".into())
            }
            // SQLite reports a write lock held past busy_timeout as a plain error.
            E::DatabaseError(_, info) if info.message().contains("database is locked") => {
                CoreError::Unavailable("the database was busy; try again".into())
            }
            _ => CoreError::Database(e),
        }
    }
}

pub type CoreResult<T> = Result<T, CoreError>;
