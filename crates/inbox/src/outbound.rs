//! Replies (M4) and deletion (M10). A reply is stored `queued` with its send job in one
//! transaction; the job sends it through the provider's API; the provider's status callbacks
//! (Twilio) or delivery and read events (Messenger) move it on. A free-form WhatsApp reply more
//! than 24 hours after the contact's last message is refused: WhatsApp only allows templates then.

use chrono::TimeDelta;
use diesel::prelude::*;
use herald_core::crypto::SecretKey;
use herald_core::identity::User;
use herald_core::time::now;
use herald_core::{CoreError, CoreResult, Db, DbConnection};
use herald_providers::ProviderError;
use secrecy::ExposeSecret;

use crate::channels::{Channel, Credentials};
use crate::conversations::MessageView;
use crate::schema::{channel_message_ids, conversations, messages};

/// Name of the send job; the runtime registers it.
pub const SEND_MESSAGE_JOB: &str = "send_message";

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct SendMessage {
    pub message_id: i64,
}

/// WhatsApp's customer service window.
pub const MESSAGING_WINDOW: TimeDelta = TimeDelta::hours(24);
/// Longest reply accepted (WhatsApp's limit for a text body).
const MAX_BODY_CHARS: usize = 4096;

/// The providers' API clients.
#[derive(Clone, Debug)]
pub struct Providers {
    pub twilio: herald_providers::twilio::Client,
    pub messenger: herald_providers::messenger::Client,
    /// Where Twilio's status callbacks go: `{public_url}/webhooks/twilio/{channel}/status`.
    pub public_url: String,
}

/// Queues a reply in a conversation of the sender's account (call inside a write transaction).
pub fn queue_reply(
    conn: &mut DbConnection,
    sender: &User,
    conversation_id: i64,
    body: &str,
) -> CoreResult<MessageView> {
    let body = body.trim();
    if body.is_empty() || body.chars().count() > MAX_BODY_CHARS {
        return Err(CoreError::invalid(
            "body",
            format!("must be 1 to {MAX_BODY_CHARS} characters"),
        ));
    }
    let (channel_id, last_inbound): (i64, Option<chrono::NaiveDateTime>) = conversations::table
        .filter(conversations::account_id.eq(sender.account_id))
        .filter(conversations::id.eq(conversation_id))
        .select((conversations::channel_id, conversations::last_inbound_at))
        .first(conn)
        .optional()?
        .ok_or_else(|| CoreError::not_found("conversation", conversation_id))?;
    let channel = Channel::find_any(conn, channel_id)?;
    let at = now();
    if channel.kind == "twilio_whatsapp" && last_inbound.is_none_or(|t| at - t > MESSAGING_WINDOW) {
        return Err(CoreError::Conflict {
            code: "outside_messaging_window",
            message: "the contact's last message is more than 24 hours old: WhatsApp allows only \
                      approved templates until they write again"
                .into(),
        });
    }
    let id: i64 = diesel::insert_into(messages::table)
        .values((
            messages::conversation_id.eq(conversation_id),
            messages::direction.eq("outbound"),
            messages::body.eq(Some(body)),
            messages::media.eq("[]"),
            messages::status.eq("queued"),
            messages::author_id.eq(Some(sender.id)),
            messages::created_at.eq(at),
            messages::updated_at.eq(at),
        ))
        .returning(messages::id)
        .get_result(conn)?;
    diesel::update(conversations::table.find(conversation_id))
        .set((
            conversations::last_message_at.eq(at),
            conversations::updated_at.eq(at),
        ))
        .execute(conn)?;
    let payload = serde_json::to_string(&SendMessage { message_id: id })
        .map_err(|e| CoreError::Unavailable(e.to_string()))?;
    herald_scheduler::storage::enqueue(
        conn,
        &herald_scheduler::storage::NewJob {
            job_type: SEND_MESSAGE_JOB,
            queue: "messaging",
            payload: &payload,
            max_attempts: 8,
            run_at: at,
        },
    )?;
    crate::conversations::message(conn, id)
}

/// What a send attempt came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sent {
    Sent,
    /// Not `queued` any more (sent by an earlier run, or its conversation deleted).
    Skipped,
    Failed(String),
    /// A 429, a 5xx or a network error: the queue tries again.
    RetryLater(String),
}

/// Sends a queued reply through its channel's provider.
pub async fn deliver(
    db: &Db,
    key: &SecretKey,
    providers: &Providers,
    message_id: i64,
) -> CoreResult<Sent> {
    let found = db
        .run(move |conn| {
            let row: Option<(String, Option<String>, i64, String)> = messages::table
                .inner_join(conversations::table)
                .filter(messages::id.eq(message_id))
                .select((
                    messages::status,
                    messages::body,
                    conversations::channel_id,
                    conversations::contact_id,
                ))
                .first(conn)
                .optional()?;
            let Some((status, body, channel_id, contact)) = row else {
                return Ok(None);
            };
            Ok::<_, CoreError>(Some((
                status,
                body,
                Channel::find_any(conn, channel_id)?,
                contact,
            )))
        })
        .await?;
    let Some((status, body, channel, contact)) = found else {
        return Ok(Sent::Skipped);
    };
    if status != "queued" {
        return Ok(Sent::Skipped);
    }
    let body = body.unwrap_or_default();
    let result = match channel.credentials(key)? {
        Credentials::Twilio { auth_token } => {
            let callback = format!(
                "{}/webhooks/twilio/{}/status",
                providers.public_url.trim_end_matches('/'),
                channel.id
            );
            providers
                .twilio
                .send(&herald_providers::twilio::Outgoing {
                    account_sid: &channel.external_id,
                    auth_token: auth_token.expose_secret(),
                    from: channel.sender.as_deref().unwrap_or_default(),
                    to: &contact,
                    body: &body,
                    status_callback: &callback,
                })
                .await
                .map(|sent| (sent.sid, "queued"))
        }
        Credentials::Messenger {
            page_access_token, ..
        } => providers
            .messenger
            .send_text(page_access_token.expose_secret(), &contact, &body)
            .await
            .map(|sent| (sent.message_id, "sent")),
    };
    let channel_id = channel.id;
    match result {
        Ok((provider_id, status)) => {
            db.run(move |conn| {
                conn.write(|conn| {
                    // The provider's id is the channel's now: its echo is not a second message.
                    diesel::insert_into(channel_message_ids::table)
                        .values((
                            channel_message_ids::channel_id.eq(channel_id),
                            channel_message_ids::provider_message_id.eq(&provider_id),
                            channel_message_ids::created_at.eq(now()),
                        ))
                        .execute(conn)?;
                    diesel::update(messages::table.find(message_id))
                        .set((
                            messages::provider_message_id.eq(Some(&provider_id)),
                            messages::status.eq(status),
                            messages::updated_at.eq(now()),
                        ))
                        .execute(conn)?;
                    Ok::<_, CoreError>(())
                })
            })
            .await?;
            Ok(Sent::Sent)
        }
        Err(ProviderError::Temporary(reason)) => Ok(Sent::RetryLater(reason)),
        Err(ProviderError::Permanent(reason)) => {
            fail(db, message_id, reason.clone()).await?;
            Ok(Sent::Failed(reason))
        }
    }
}

/// Marks a reply `failed` with its reason (also when the queue gives up retrying).
pub async fn fail(db: &Db, message_id: i64, reason: String) -> CoreResult<()> {
    db.run(move |conn| {
        diesel::update(messages::table.find(message_id))
            .filter(messages::status.eq("queued"))
            .set((
                messages::status.eq("failed"),
                messages::failure_reason.eq(Some(reason)),
                messages::updated_at.eq(now()),
            ))
            .execute(conn)?;
        Ok::<_, CoreError>(())
    })
    .await
}

/// How far a status is along; a late callback never moves a message back.
fn rank(status: &str) -> u8 {
    match status {
        "queued" => 0,
        "sent" => 1,
        "delivered" => 2,
        "read" => 3,
        _ => 4,
    }
}

/// Twilio's status callback for a message sent on `channel`: `MessageStatus` (`queued`, `sent`,
/// `delivered`, `read`, `failed`, `undelivered`) and `ErrorCode`.
pub fn twilio_status(
    conn: &mut DbConnection,
    channel: &Channel,
    sid: &str,
    status: &str,
    error_code: Option<&str>,
) -> CoreResult<bool> {
    let (status, reason) = match status {
        "queued" | "accepted" | "sending" => ("queued", None),
        "sent" => ("sent", None),
        "delivered" => ("delivered", None),
        "read" => ("read", None),
        "failed" | "undelivered" => (
            "failed",
            Some(match error_code {
                Some("63016") => {
                    "outside WhatsApp's 24-hour window: only a template can be sent".to_owned()
                }
                Some("63003") => "the number is not on WhatsApp".to_owned(),
                Some(code) => format!("Twilio reports the message {status} (error {code})"),
                None => format!("Twilio reports the message {status}"),
            }),
        ),
        other => {
            return Err(CoreError::invalid(
                "MessageStatus",
                format!("`{other}` is not a message status"),
            ));
        }
    };
    let current: Option<(i64, String)> = messages::table
        .inner_join(conversations::table)
        .filter(conversations::channel_id.eq(channel.id))
        .filter(messages::provider_message_id.eq(sid))
        .select((messages::id, messages::status))
        .first(conn)
        .optional()?;
    let Some((id, current)) = current else {
        return Ok(false);
    };
    if rank(status) <= rank(&current) && status != "failed" || current == "failed" {
        return Ok(true);
    }
    diesel::update(messages::table.find(id))
        .set((
            messages::status.eq(status),
            messages::failure_reason.eq(reason),
            messages::updated_at.eq(now()),
        ))
        .execute(conn)?;
    Ok(true)
}

/// Deletes a conversation and its messages for good (M10): only the channel's owner. The
/// channel keeps the provider message ids it saw, so a late retry stays dropped; a new message
/// from the contact starts a new conversation.
pub fn delete_conversation(conn: &mut DbConnection, actor: &User, id: i64) -> CoreResult<()> {
    let channel_id: i64 = conversations::table
        .filter(conversations::account_id.eq(actor.account_id))
        .filter(conversations::id.eq(id))
        .select(conversations::channel_id)
        .first(conn)
        .optional()?
        .ok_or_else(|| CoreError::not_found("conversation", id))?;
    let channel = Channel::find_any(conn, channel_id)?;
    if channel.owner_id != actor.id {
        return Err(CoreError::Forbidden(
            "only the user who installed the channel can delete its conversations".into(),
        ));
    }
    diesel::delete(conversations::table.find(id)).execute(conn)?;
    Ok(())
}
