pub mod emails;
pub mod inbox;
pub mod mailboxes;
pub mod me;
pub mod records;
pub mod system;
pub mod templates;
pub mod webhooks;

use serde::Serialize;

/// A page of a list: `{"items": [...], "next_cursor": "..." | null}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ListResponse<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}
