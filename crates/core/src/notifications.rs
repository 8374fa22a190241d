//! What a user is told: a mailbox that needs new credentials today; the inbox events of M9 later
//! (they add kinds, delivery by event stream and email, and read/unread through the API).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;

use crate::DbConnection;
use crate::schema::notifications;
use crate::time::{now, rfc3339, rfc3339_opt};

#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable, Serialize)]
#[diesel(table_name = notifications)]
pub struct Notification {
    pub id: i64,
    pub account_id: i64,
    pub user_id: i64,
    /// e.g. `mailbox_auth_failed`
    pub kind: String,
    pub title: String,
    pub body: Option<String>,
    /// What it is about, e.g. `mailbox`.
    pub subject_type: Option<String>,
    pub subject_id: Option<i64>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "rfc3339_opt")]
    pub read_at: Option<NaiveDateTime>,
}

/// A notification to record.
#[derive(Clone, Debug)]
pub struct NewNotification<'a> {
    pub account_id: i64,
    pub user_id: i64,
    pub kind: &'a str,
    pub title: &'a str,
    pub body: Option<&'a str>,
    pub subject: Option<(&'a str, i64)>,
}

impl Notification {
    pub fn create(conn: &mut DbConnection, new: &NewNotification<'_>) -> QueryResult<i64> {
        diesel::insert_into(notifications::table)
            .values((
                notifications::account_id.eq(new.account_id),
                notifications::user_id.eq(new.user_id),
                notifications::kind.eq(new.kind),
                notifications::title.eq(new.title),
                notifications::body.eq(new.body),
                notifications::subject_type.eq(new.subject.map(|s| s.0)),
                notifications::subject_id.eq(new.subject.map(|s| s.1)),
                notifications::created_at.eq(now()),
            ))
            .returning(notifications::id)
            .get_result(conn)
    }

    /// A user's notifications, newest first.
    pub fn for_user(
        conn: &mut DbConnection,
        user_id: i64,
        limit: i64,
    ) -> QueryResult<Vec<Notification>> {
        notifications::table
            .filter(notifications::user_id.eq(user_id))
            .order(notifications::id.desc())
            .limit(limit)
            .select(Notification::as_select())
            .load(conn)
    }
}
