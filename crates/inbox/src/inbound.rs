//! Inbound messages (M2, M3, M8): each provider message id is stored once per channel, ever
//! (a late retry after the conversation was deleted is dropped too); a contact's message opens a
//! conversation (in Unassigned) or adds to the one they have, and reopens it if it was closed,
//! into the view its assignment gives.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use herald_core::time::now;
use herald_core::{CoreError, CoreResult, DbConnection};
use serde::{Deserialize, Serialize};

use crate::channels::Channel;
use crate::schema::{channel_message_ids, conversation_events, conversations, messages};

/// A media attachment, by the provider's URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Media {
    pub url: String,
    pub content_type: Option<String>,
}

/// A message from a contact, whatever the provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    pub contact_id: String,
    pub contact_name: Option<String>,
    pub provider_message_id: String,
    pub body: Option<String>,
    pub media: Vec<Media>,
    /// An echo of a message the page sent (Messenger): outbound.
    pub echo: bool,
}

/// What storing a message did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    Stored {
        conversation_id: i64,
        message_id: i64,
    },
    /// The provider sent this message id before (a retry, an echo of our own send).
    Duplicate,
}

/// The contact's conversation on the channel, created when they have none (call inside a write
/// transaction). Concurrent first messages agree on one: the unique key decides.
fn conversation_for(
    conn: &mut DbConnection,
    channel: &Channel,
    contact_id: &str,
    at: NaiveDateTime,
) -> QueryResult<(i64, String)> {
    let existing = || {
        conversations::table
            .filter(conversations::channel_id.eq(channel.id))
            .filter(conversations::contact_id.eq(contact_id))
            .select((conversations::id, conversations::status))
    };
    if let Some(found) = existing().first(conn).optional()? {
        return Ok(found);
    }
    let insert = diesel::insert_into(conversations::table)
        .values((
            conversations::account_id.eq(channel.account_id),
            conversations::channel_id.eq(channel.id),
            conversations::contact_id.eq(contact_id),
            conversations::status.eq("open"),
            conversations::last_message_at.eq(at),
            conversations::created_at.eq(at),
            conversations::updated_at.eq(at),
        ))
        .on_conflict((conversations::channel_id, conversations::contact_id))
        .do_nothing()
        .returning(conversations::id);
    // Backend arms: ON CONFLICT is not in the multi-backend's common SQL.
    let created: Option<i64> = match conn {
        DbConnection::Postgres(c) => insert.get_result(c).optional()?,
        DbConnection::Sqlite(c) => insert.get_result(c).optional()?,
    };
    match created {
        Some(id) => Ok((id, "open".into())),
        // A concurrent first message made it: the unique key decided.
        None => existing().first(conn),
    }
}

#[derive(AsChangeset)]
#[diesel(table_name = conversations)]
struct Arrival<'a> {
    last_message_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    last_inbound_at: Option<NaiveDateTime>,
    contact_name: Option<&'a str>,
}

/// Stores a message from a contact (call inside a write transaction).
pub fn receive(
    conn: &mut DbConnection,
    channel: &Channel,
    message: &Inbound,
) -> CoreResult<Received> {
    let at = now();
    let seen = diesel::insert_into(channel_message_ids::table)
        .values((
            channel_message_ids::channel_id.eq(channel.id),
            channel_message_ids::provider_message_id.eq(&message.provider_message_id),
            channel_message_ids::created_at.eq(at),
        ))
        .on_conflict_do_nothing();
    // Backend arms: ON CONFLICT is not in the multi-backend's common SQL.
    let first_time = match conn {
        DbConnection::Postgres(c) => seen.execute(c)?,
        DbConnection::Sqlite(c) => seen.execute(c)?,
    };
    if first_time == 0 {
        return Ok(Received::Duplicate);
    }
    let (conversation_id, status) = conversation_for(conn, channel, &message.contact_id, at)?;
    if status == "closed" && !message.echo {
        diesel::update(conversations::table.find(conversation_id))
            .set(conversations::status.eq("open"))
            .execute(conn)?;
        diesel::insert_into(conversation_events::table)
            .values((
                conversation_events::conversation_id.eq(conversation_id),
                conversation_events::kind.eq("reopened"),
                conversation_events::created_at.eq(at),
            ))
            .execute(conn)?;
    }
    // One update for the arrival; `None` fields are left as they are: an echo (our own page's
    // message) does not open the 24-hour window, and a message without a profile name keeps the
    // one known.
    diesel::update(conversations::table.find(conversation_id))
        .set(&Arrival {
            last_message_at: at,
            updated_at: at,
            last_inbound_at: (!message.echo).then_some(at),
            contact_name: message.contact_name.as_deref().filter(|_| !message.echo),
        })
        .execute(conn)?;
    let message_id = diesel::insert_into(messages::table)
        .values((
            messages::conversation_id.eq(conversation_id),
            messages::direction.eq(if message.echo { "outbound" } else { "inbound" }),
            messages::provider_message_id.eq(&message.provider_message_id),
            messages::body.eq(&message.body),
            messages::media.eq(serde_json::to_string(&message.media)
                .map_err(|e| CoreError::Unavailable(e.to_string()))?),
            messages::status.eq(if message.echo { "sent" } else { "received" }),
            messages::created_at.eq(at),
            messages::updated_at.eq(at),
        ))
        .returning(messages::id)
        .get_result(conn)?;
    Ok(Received::Stored {
        conversation_id,
        message_id,
    })
}

/// Why a webhook payload was not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("{0}")]
    Invalid(String),
}

fn field<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A Twilio WhatsApp webhook's form fields: `From`/`To` with the `whatsapp:` prefix,
/// `ProfileName`, `Body`, `NumMedia` with `MediaUrlN`/`MediaContentTypeN`, `MessageSid`.
pub fn twilio_message(
    channel: &Channel,
    params: &[(String, String)],
) -> Result<Inbound, PayloadError> {
    if field(params, "AccountSid") != Some(channel.external_id.as_str()) {
        return Err(PayloadError::Invalid(
            "AccountSid is not this channel's account".into(),
        ));
    }
    let from = field(params, "From").ok_or(PayloadError::Missing("From"))?;
    if !from.starts_with("whatsapp:") {
        return Err(PayloadError::Invalid(format!(
            "From `{from}` is not a WhatsApp address"
        )));
    }
    let sid = field(params, "MessageSid")
        .or_else(|| field(params, "SmsMessageSid"))
        .ok_or(PayloadError::Missing("MessageSid"))?;
    let count: usize = field(params, "NumMedia")
        .unwrap_or("0")
        .parse()
        .map_err(|_| PayloadError::Invalid("NumMedia is not a number".into()))?;
    // Twilio sends at most 10 media per message.
    let media = (0..count.min(10))
        .filter_map(|n| {
            field(params, &format!("MediaUrl{n}")).map(|url| Media {
                url: url.to_owned(),
                content_type: field(params, &format!("MediaContentType{n}")).map(str::to_owned),
            })
        })
        .collect();
    Ok(Inbound {
        contact_id: from.to_owned(),
        contact_name: field(params, "ProfileName")
            .filter(|n| !n.is_empty())
            .map(str::to_owned),
        provider_message_id: sid.to_owned(),
        body: field(params, "Body")
            .filter(|b| !b.is_empty())
            .map(str::to_owned),
        media,
        echo: false,
    })
}

#[derive(Deserialize)]
struct MessengerPayload {
    object: String,
    #[serde(default)]
    entry: Vec<MessengerEntry>,
}

#[derive(Deserialize)]
struct MessengerEntry {
    id: String,
    #[serde(default)]
    messaging: Vec<MessengerEvent>,
}

#[derive(Deserialize)]
struct MessengerEvent {
    sender: MessengerId,
    recipient: MessengerId,
    #[serde(default)]
    message: Option<MessengerMessage>,
    #[serde(default)]
    delivery: Option<MessengerMids>,
    #[serde(default)]
    read: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct MessengerId {
    id: String,
}

#[derive(Deserialize)]
struct MessengerMessage {
    mid: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    attachments: Vec<MessengerAttachment>,
    #[serde(default)]
    is_echo: bool,
}

#[derive(Deserialize)]
struct MessengerAttachment {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    payload: Option<MessengerAttachmentPayload>,
}

#[derive(Deserialize)]
struct MessengerAttachmentPayload {
    #[serde(default)]
    url: Option<String>,
}

#[derive(Deserialize)]
struct MessengerMids {
    #[serde(default)]
    mids: Vec<String>,
}

/// What a Messenger webhook post carries for the inbox.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessengerBatch {
    pub messages: Vec<Inbound>,
    /// Message ids the contact's device received.
    pub delivered: Vec<String>,
    /// Contacts (PSIDs) who read the page's messages.
    pub read_by: Vec<String>,
}

/// A Messenger webhook's JSON: text and attachments, echoes of the page's own messages (by
/// `is_echo`: the contact is then the recipient), delivery and read events.
pub fn messenger_events(channel: &Channel, body: &[u8]) -> Result<MessengerBatch, PayloadError> {
    let payload: MessengerPayload = serde_json::from_slice(body)
        .map_err(|e| PayloadError::Invalid(format!("not a Messenger webhook: {e}")))?;
    if payload.object != "page" {
        return Err(PayloadError::Invalid(format!(
            "object `{}` is not page",
            payload.object
        )));
    }
    let mut batch = MessengerBatch::default();
    for entry in payload.entry {
        if entry.id != channel.external_id {
            return Err(PayloadError::Invalid(format!(
                "entry for page {} on the channel of page {}",
                entry.id, channel.external_id
            )));
        }
        for event in entry.messaging {
            if let Some(message) = event.message {
                let contact = if message.is_echo {
                    event.recipient.id
                } else {
                    event.sender.id
                };
                batch.messages.push(Inbound {
                    contact_id: contact,
                    contact_name: None,
                    provider_message_id: message.mid,
                    body: message.text,
                    media: message
                        .attachments
                        .into_iter()
                        .filter_map(|a| {
                            a.payload.and_then(|p| p.url).map(|url| Media {
                                url,
                                content_type: Some(a.kind),
                            })
                        })
                        .collect(),
                    echo: message.is_echo,
                });
            } else if let Some(delivery) = event.delivery {
                batch.delivered.extend(delivery.mids);
            } else if event.read.is_some() {
                batch.read_by.push(event.sender.id);
            }
        }
    }
    Ok(batch)
}

/// Messenger delivery events: the page's messages reached the contact's device.
pub fn mark_delivered(
    conn: &mut DbConnection,
    channel: &Channel,
    mids: &[String],
) -> CoreResult<()> {
    diesel::update(
        messages::table
            .filter(messages::provider_message_id.eq_any(mids))
            .filter(messages::direction.eq("outbound"))
            .filter(messages::status.eq_any(["queued", "sent"]))
            .filter(
                messages::conversation_id.eq_any(
                    conversations::table
                        .filter(conversations::channel_id.eq(channel.id))
                        .select(conversations::id),
                ),
            ),
    )
    .set((
        messages::status.eq("delivered"),
        messages::updated_at.eq(now()),
    ))
    .execute(conn)?;
    Ok(())
}

/// Messenger read events: the contact read every message the page sent them.
pub fn mark_read(conn: &mut DbConnection, channel: &Channel, contact_id: &str) -> CoreResult<()> {
    diesel::update(
        messages::table
            .filter(messages::direction.eq("outbound"))
            .filter(messages::status.eq_any(["sent", "delivered"]))
            .filter(
                messages::conversation_id.eq_any(
                    conversations::table
                        .filter(conversations::channel_id.eq(channel.id))
                        .filter(conversations::contact_id.eq(contact_id))
                        .select(conversations::id),
                ),
            ),
    )
    .set((messages::status.eq("read"), messages::updated_at.eq(now())))
    .execute(conn)?;
    Ok(())
}
