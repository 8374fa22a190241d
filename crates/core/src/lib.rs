//! Herald's core domain: storage on PostgreSQL and SQLite, accounts, users, API tokens, CRM
//! records (persons, companies, deals, leads), timelines, idempotency keys, configuration and
//! secret encryption.
//!
//! It owns the tables it names and their queries. It must not know HTTP, run network I/O, or
//! depend on the mail, inbox or scheduler crates: those build on it.

pub mod config;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod error;
pub mod idempotency;
pub mod identity;
pub mod pagination;
pub mod records;
pub mod schema;
pub mod time;
pub mod timeline;

pub use config::Config;
pub use db::{BackendKind, DatabaseUrl, Db, DbConnection};
pub use error::{CoreError, CoreResult};
