#![doc = include_str!("../README.md")]

pub mod config;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod error;
pub mod idempotency;
pub mod identity;
pub mod notifications;
pub mod pagination;
pub mod records;
pub mod schema;
pub mod time;
pub mod timeline;
mod write_groups;

pub use config::Config;
pub use db::{BackendKind, DatabaseUrl, Db, DbConnection};
pub use error::{CoreError, CoreResult};
pub use write_groups::{BatchWrite, LaneKey, WriteBatcher};
