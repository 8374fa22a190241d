//! Inbound messages (M2, M3, M8): each provider message id is stored once per channel, ever
//! (a late retry after the conversation was deleted is dropped too); a contact's message opens a
//! conversation (in Unassigned) or adds to the one they have, and reopens it if it was closed,
//! into the view its assignment gives.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use diesel::prelude::*;
use diesel::sql_types::{Nullable, Timestamp};
use herald_core::crypto::SecretKey;
use herald_core::identity::User;
use herald_core::time::now;
use herald_core::{CoreError, CoreResult, Db, DbConnection, WriteBatcher};
use serde::{Deserialize, Serialize};

use crate::channels::{Channel, ChannelCache, OpenChannel};
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

/// What the webhooks share across requests: channels looked up and opened once, and the messages
/// of concurrent requests stored together ([`receive_all`] over each batch).
#[derive(Clone)]
pub struct Intake {
    db: Db,
    key: SecretKey,
    channels: Arc<ChannelCache>,
    messages: Arc<WriteBatcher<Arriving, Received>>,
}

impl Intake {
    pub fn new(db: Db, key: SecretKey) -> Self {
        Self {
            messages: Arc::new(WriteBatcher::new(
                db.clone(),
                receive_all,
                Some(Arriving::lane),
            )),
            channels: Arc::default(),
            db,
            key,
        }
    }

    /// A channel of this kind (`twilio_whatsapp`, `messenger`) with its credentials, from the
    /// cache; another kind is not found.
    pub async fn channel(&self, id: i64, kind: &str) -> CoreResult<Arc<OpenChannel>> {
        let open = self.channels.get(&self.db, &self.key, id).await?;
        if open.channel.kind != kind {
            return Err(CoreError::not_found("channel", id));
        }
        Ok(open)
    }

    /// Removes a channel (its owner or an admin) and forgets it here at once.
    pub async fn delete_channel(&self, actor: User, id: i64) -> CoreResult<()> {
        self.db
            .run(move |conn| conn.write(|conn| Channel::delete(conn, &actor, id)))
            .await?;
        self.channels.forget(id);
        Ok(())
    }

    /// Stores a message with the others arriving meanwhile; returns once it is committed.
    pub async fn receive(&self, arriving: Arriving) -> CoreResult<Received> {
        self.messages.write(arriving).await
    }

    /// A Messenger webhook's events: the messages with the other webhooks' (submitted together,
    /// so they keep their order), then the delivery and read events.
    pub async fn receive_messenger(
        &self,
        channel: &Channel,
        batch: MessengerBatch,
    ) -> CoreResult<()> {
        futures::future::try_join_all(
            batch
                .messages
                .into_iter()
                .map(|message| self.receive(Arriving::new(channel, message))),
        )
        .await?;
        if batch.delivered.is_empty() && batch.read_by.is_empty() {
            return Ok(());
        }
        let channel = channel.clone();
        self.db
            .write_grouped(move |conn| {
                mark_delivered(conn, &channel, &batch.delivered)?;
                for contact in &batch.read_by {
                    mark_read(conn, &channel, contact)?;
                }
                Ok::<_, CoreError>(())
            })
            .await
    }
}

/// A message arriving on a channel, as the webhooks hand it to [`receive_all`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arriving {
    pub channel_id: i64,
    pub account_id: i64,
    pub message: Inbound,
}

impl Arriving {
    pub fn new(channel: &Channel, message: Inbound) -> Self {
        Self {
            channel_id: channel.id,
            account_id: channel.account_id,
            message,
        }
    }

    fn contact(&self) -> (i64, &str) {
        (self.channel_id, &self.message.contact_id)
    }

    /// One contact's messages are written by one lane, in the order they came.
    fn lane(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        self.contact().hash(&mut hasher);
        hasher.finish()
    }
}

/// A contact's conversation as an arrival finds it.
struct Found {
    id: i64,
    contact_name: Option<String>,
}

/// The conversations of these contacts (channel, contact id) that exist.
fn conversations_of(
    conn: &mut DbConnection,
    contacts: &BTreeSet<(i64, &str)>,
) -> QueryResult<HashMap<(i64, String), Found>> {
    let channel_ids: BTreeSet<i64> = contacts.iter().map(|(channel, _)| *channel).collect();
    let contact_ids: BTreeSet<&str> = contacts.iter().map(|(_, contact)| *contact).collect();
    let rows: Vec<(i64, i64, String, Option<String>)> = conversations::table
        .filter(conversations::channel_id.eq_any(channel_ids))
        .filter(conversations::contact_id.eq_any(contact_ids))
        .select((
            conversations::id,
            conversations::channel_id,
            conversations::contact_id,
            conversations::contact_name,
        ))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter(|(_, channel, contact, ..)| contacts.contains(&(*channel, contact.as_str())))
        .map(|(id, channel, contact, contact_name)| {
            ((channel, contact), Found { id, contact_name })
        })
        .collect())
}

/// What a batch brings to one conversation.
#[derive(Default)]
struct Visit<'a> {
    /// From the contact (not only echoes of the page's own messages): opens the 24-hour window
    /// and reopens a closed conversation.
    inbound: bool,
    /// The latest profile name the contact's messages gave.
    contact_name: Option<&'a str>,
}

/// Stores messages from contacts (call inside a write transaction), each provider message id
/// once per channel, ever; the result is in the messages' order. A contact's first message opens
/// a conversation in Unassigned, the next ones add to it, and one from the contact reopens it if
/// it was closed. The whole batch takes a few set-based statements, whatever its size: the
/// webhooks write what arrives meanwhile together ([`herald_core::WriteBatcher`]).
pub fn receive_all(conn: &mut DbConnection, arriving: &[Arriving]) -> CoreResult<Vec<Received>> {
    if arriving.is_empty() {
        return Ok(Vec::new());
    }
    let at = now();
    // Rows taken in one order (provider ids, new conversations, conversations by id), so the
    // batches of several API processes wait for each other instead of deadlocking.
    let mut sorted: Vec<&Arriving> = arriving.iter().collect();
    sorted.sort_by(|a, b| {
        (a.channel_id, &a.message.provider_message_id)
            .cmp(&(b.channel_id, &b.message.provider_message_id))
    });
    let keys: Vec<_> = sorted
        .iter()
        .map(|a| {
            (
                channel_message_ids::channel_id.eq(a.channel_id),
                channel_message_ids::provider_message_id.eq(&a.message.provider_message_id),
                channel_message_ids::created_at.eq(at),
            )
        })
        .collect();
    let seen = diesel::insert_into(channel_message_ids::table)
        .values(keys)
        .on_conflict_do_nothing()
        .returning((
            channel_message_ids::channel_id,
            channel_message_ids::provider_message_id,
        ));
    // Backend arms: neither ON CONFLICT nor a multi-row INSERT is in the multi-backend's SQL.
    let mut first_seen: HashSet<(i64, String)> = match conn {
        DbConnection::Postgres(c) => seen.get_results(c)?,
        DbConnection::Sqlite(c) => seen.get_results(c)?,
    }
    .into_iter()
    .collect();
    // A key the insert returned is new; a repeat within the batch is a duplicate of its first.
    let fresh: Vec<bool> = arriving
        .iter()
        .map(|a| first_seen.remove(&(a.channel_id, a.message.provider_message_id.clone())))
        .collect();
    if !fresh.contains(&true) {
        return Ok(vec![Received::Duplicate; arriving.len()]);
    }
    let new = || {
        arriving
            .iter()
            .zip(&fresh)
            .filter(|(_, f)| **f)
            .map(|(a, _)| a)
    };

    // The contacts' conversations, created for those who have none; the unique key decides
    // between concurrent first messages (another process's), so the created ones are read back.
    let contacts: BTreeSet<(i64, &str)> = new().map(Arriving::contact).collect();
    let mut found = conversations_of(conn, &contacts)?;
    let missing: BTreeMap<(i64, &str), i64> = new()
        .filter(|a| !found.contains_key(&(a.channel_id, a.message.contact_id.clone())))
        .map(|a| (a.contact(), a.account_id))
        .collect();
    if !missing.is_empty() {
        let rows: Vec<_> = missing
            .iter()
            .map(|((channel_id, contact_id), account_id)| {
                (
                    conversations::account_id.eq(*account_id),
                    conversations::channel_id.eq(*channel_id),
                    conversations::contact_id.eq(*contact_id),
                    conversations::status.eq("open"),
                    conversations::last_message_at.eq(at),
                    conversations::created_at.eq(at),
                    conversations::updated_at.eq(at),
                )
            })
            .collect();
        let insert = diesel::insert_into(conversations::table)
            .values(rows)
            .on_conflict((conversations::channel_id, conversations::contact_id))
            .do_nothing();
        match conn {
            DbConnection::Postgres(c) => insert.execute(c)?,
            DbConnection::Sqlite(c) => insert.execute(c)?,
        };
        found.extend(conversations_of(conn, &missing.keys().copied().collect())?);
    }
    let conversation = |a: &Arriving| {
        found
            .get(&(a.channel_id, a.message.contact_id.clone()))
            .ok_or_else(|| CoreError::Unavailable("a conversation was not created".into()))
    };

    let mut visits: BTreeMap<i64, Visit> = BTreeMap::new();
    for a in new() {
        let visit = visits.entry(conversation(a)?.id).or_default();
        if !a.message.echo {
            visit.inbound = true;
            visit.contact_name = a.message.contact_name.as_deref().or(visit.contact_name);
        }
    }
    let inbound: Vec<i64> = visits
        .iter()
        .filter(|(_, v)| v.inbound)
        .map(|(id, _)| *id)
        .collect();
    // One statement moves every conversation of the batch up, taking their row locks at once
    // (in id order where PostgreSQL walks the primary key), so the statements after it wait on
    // nothing: the batches of several API processes wait for each other rather than deadlock
    // (this process's lanes never share a contact). An echo (our own page's message) does not
    // open the 24-hour window.
    let visited: Vec<i64> = visits.keys().copied().collect();
    diesel::update(conversations::table.filter(conversations::id.eq_any(&visited)))
        .set((
            conversations::last_message_at.eq(at),
            conversations::updated_at.eq(at),
            conversations::last_inbound_at.eq(diesel::dsl::case_when(
                conversations::id.eq_any(&inbound),
                Some(at).into_sql::<Nullable<Timestamp>>(),
            )
            .otherwise(conversations::last_inbound_at)),
        ))
        .execute(conn)?;
    // Reopened by the contact: decided by the UPDATE itself, under each row's lock, so a close
    // committed since the read above is seen.
    if !inbound.is_empty() {
        let reopened: Vec<i64> = diesel::update(
            conversations::table
                .filter(conversations::id.eq_any(&inbound))
                .filter(conversations::status.eq("closed")),
        )
        .set(conversations::status.eq("open"))
        .returning(conversations::id)
        .get_results(conn)?;
        let events: Vec<_> = reopened
            .iter()
            .map(|id| {
                (
                    conversation_events::conversation_id.eq(*id),
                    conversation_events::kind.eq("reopened"),
                    conversation_events::created_at.eq(at),
                )
            })
            .collect();
        if !events.is_empty() {
            let insert = diesel::insert_into(conversation_events::table).values(events);
            // Backend arms: the multi-backend has no multi-row INSERT.
            match conn {
                DbConnection::Postgres(c) => insert.execute(c)?,
                DbConnection::Sqlite(c) => insert.execute(c)?,
            };
        }
    }
    // A profile name is written when it changed; a message without one keeps the name known.
    for c in found.values() {
        if let Some(name) = visits.get(&c.id).and_then(|v| v.contact_name)
            && c.contact_name.as_deref() != Some(name)
        {
            diesel::update(conversations::table.find(c.id))
                .set(conversations::contact_name.eq(name))
                .execute(conn)?;
        }
    }

    let mut rows = Vec::new();
    for a in new() {
        let m = &a.message;
        rows.push((
            messages::conversation_id.eq(conversation(a)?.id),
            messages::direction.eq(if m.echo { "outbound" } else { "inbound" }),
            messages::provider_message_id.eq(&m.provider_message_id),
            messages::body.eq(&m.body),
            messages::media.eq(serde_json::to_string(&m.media)
                .map_err(|e| CoreError::Unavailable(e.to_string()))?),
            messages::status.eq(if m.echo { "sent" } else { "received" }),
            messages::created_at.eq(at),
            messages::updated_at.eq(at),
        ));
    }
    let insert = diesel::insert_into(messages::table)
        .values(rows)
        .returning((
            messages::conversation_id,
            messages::provider_message_id,
            messages::id,
        ));
    // Backend arms: no multi-row INSERT in the multi-backend. RETURNING's order is not promised: each message is found by its conversation and id.
    let stored: HashMap<(i64, Option<String>), i64> = match conn {
        DbConnection::Postgres(c) => insert.get_results::<(i64, Option<String>, i64)>(c)?,
        DbConnection::Sqlite(c) => insert.get_results::<(i64, Option<String>, i64)>(c)?,
    }
    .into_iter()
    .map(|(conversation_id, provider_id, id)| ((conversation_id, provider_id), id))
    .collect();
    arriving
        .iter()
        .zip(fresh)
        .map(|(a, fresh)| {
            if !fresh {
                return Ok(Received::Duplicate);
            }
            let conversation_id = conversation(a)?.id;
            let message_id = stored
                .get(&(conversation_id, Some(a.message.provider_message_id.clone())))
                .copied()
                .ok_or_else(|| CoreError::Unavailable("a message was not stored".into()))?;
            Ok(Received::Stored {
                conversation_id,
                message_id,
            })
        })
        .collect()
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
