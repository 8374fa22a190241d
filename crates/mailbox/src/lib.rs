#![doc = include_str!("../README.md")]

pub mod connect;
pub mod deliver;
pub mod emails;
pub mod imap;
pub mod model;
pub mod outbox;
pub mod parse;
pub mod plan;
pub mod schema;
pub mod smtp_pool;
pub mod store;
pub mod sync;
pub mod worker;

pub use model::{Draft, Mailbox, MailboxError, MailboxInput, MailboxPatch, MailboxView};
