//! Channels (M1): a Twilio WhatsApp sender or a Facebook page. The user who installs one owns it;
//! its credentials are sealed with the secret key and never returned; the response carries the
//! webhook URL to give the provider.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use diesel::prelude::*;
use herald_core::crypto::SecretKey;
use herald_core::identity::User;
use herald_core::time::{now, rfc3339};
use herald_core::{CoreError, CoreResult, Db, DbConnection};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::schema::channels;

#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = channels)]
pub struct Channel {
    pub id: i64,
    pub account_id: i64,
    pub owner_id: i64,
    /// `twilio_whatsapp` or `messenger`
    pub kind: String,
    pub name: String,
    pub external_id: String,
    pub sender: Option<String>,
    secrets: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// `POST /api/v1/channels`: the fields of one kind.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChannelInput {
    TwilioWhatsapp {
        #[serde(default)]
        name: Option<String>,
        account_sid: String,
        #[schema(value_type = String, format = Password)]
        auth_token: SecretString,
        /// The WhatsApp sender number, `+14155238886` or `whatsapp:+14155238886`.
        sender: String,
    },
    Messenger {
        #[serde(default)]
        name: Option<String>,
        page_id: String,
        #[schema(value_type = String, format = Password)]
        page_access_token: SecretString,
        #[schema(value_type = String, format = Password)]
        app_secret: SecretString,
        /// What Meta sends back in the verification handshake.
        #[schema(value_type = String, format = Password)]
        verify_token: SecretString,
    },
}

/// The sealed credentials, by kind.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Secrets {
    Twilio {
        auth_token: String,
    },
    Messenger {
        page_access_token: String,
        app_secret: String,
        verify_token: String,
    },
}

/// A channel's credentials, opened for a webhook check or a send.
#[derive(Debug)]
pub enum Credentials {
    Twilio {
        auth_token: SecretString,
    },
    Messenger {
        page_access_token: SecretString,
        app_secret: SecretString,
        verify_token: SecretString,
    },
}

/// A channel as the API shows it: never its credentials.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ChannelView {
    pub id: i64,
    pub kind: String,
    pub name: String,
    pub owner_id: i64,
    /// Twilio's account SID or the page id.
    pub external_id: String,
    pub sender: Option<String>,
    /// Give this URL to the provider: Twilio's "when a message comes in", Meta's callback URL.
    pub webhook_url: String,
    /// Twilio only: the status callback URL Herald sets on each message it sends.
    pub status_callback_url: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: NaiveDateTime,
}

fn required(value: &str, field: &str, max: usize) -> CoreResult<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(CoreError::invalid(field, "is required"));
    }
    if value.len() > max || value.chars().any(char::is_control) {
        return Err(CoreError::invalid(
            field,
            format!("must be at most {max} characters, without control characters"),
        ));
    }
    Ok(value.to_owned())
}

fn secret(value: &SecretString, field: &str) -> CoreResult<String> {
    required(value.expose_secret(), field, 512)
}

/// `whatsapp:+E.164`.
fn whatsapp_number(value: &str) -> CoreResult<String> {
    let number = value.trim().trim_start_matches("whatsapp:");
    let digits = number.strip_prefix('+').unwrap_or_default();
    if digits.len() < 6 || digits.len() > 15 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(CoreError::invalid(
            "sender",
            "must be a number in E.164 form, e.g. +14155238886",
        ));
    }
    Ok(format!("whatsapp:{number}"))
}

impl Channel {
    pub fn create(
        conn: &mut DbConnection,
        key: &SecretKey,
        owner: &User,
        input: &ChannelInput,
    ) -> CoreResult<Channel> {
        let (kind, name, external_id, sender, secrets) = match input {
            ChannelInput::TwilioWhatsapp {
                name,
                account_sid,
                auth_token,
                sender,
            } => {
                let sid = required(account_sid, "account_sid", 64)?;
                if !sid.starts_with("AC") || !sid[2..].chars().all(|c| c.is_ascii_alphanumeric()) {
                    return Err(CoreError::invalid(
                        "account_sid",
                        "must be a Twilio account SID (AC followed by 32 characters)",
                    ));
                }
                let sender = whatsapp_number(sender)?;
                (
                    "twilio_whatsapp",
                    name.clone().unwrap_or_else(|| format!("WhatsApp {sender}")),
                    sid,
                    Some(sender),
                    Secrets::Twilio {
                        auth_token: secret(auth_token, "auth_token")?,
                    },
                )
            }
            ChannelInput::Messenger {
                name,
                page_id,
                page_access_token,
                app_secret,
                verify_token,
            } => {
                let page = required(page_id, "page_id", 64)?;
                if !page.chars().all(|c| c.is_ascii_digit()) {
                    return Err(CoreError::invalid("page_id", "must be a numeric page id"));
                }
                (
                    "messenger",
                    name.clone().unwrap_or_else(|| format!("Messenger {page}")),
                    page,
                    None,
                    Secrets::Messenger {
                        page_access_token: secret(page_access_token, "page_access_token")?,
                        app_secret: secret(app_secret, "app_secret")?,
                        verify_token: secret(verify_token, "verify_token")?,
                    },
                )
            }
        };
        let name = required(&name, "name", 200)?;
        let sealed = key.seal(
            &serde_json::to_string(&secrets).map_err(|e| CoreError::Unavailable(e.to_string()))?,
        )?;
        let at = now();
        let id: i64 = diesel::insert_into(channels::table)
            .values((
                channels::account_id.eq(owner.account_id),
                channels::owner_id.eq(owner.id),
                channels::kind.eq(kind),
                channels::name.eq(name),
                channels::external_id.eq(external_id),
                channels::sender.eq(sender),
                channels::secrets.eq(sealed),
                channels::created_at.eq(at),
                channels::updated_at.eq(at),
            ))
            .returning(channels::id)
            .get_result(conn)?;
        Channel::find_any(conn, id)
    }

    /// A channel of the viewer's account.
    pub fn find(conn: &mut DbConnection, viewer: &User, id: i64) -> CoreResult<Channel> {
        channels::table
            .filter(channels::account_id.eq(viewer.account_id))
            .filter(channels::id.eq(id))
            .select(Channel::as_select())
            .first(conn)
            .optional()?
            .ok_or_else(|| CoreError::not_found("channel", id))
    }

    /// A channel by id alone, for its webhooks (the signature proves the caller).
    pub fn find_any(conn: &mut DbConnection, id: i64) -> CoreResult<Channel> {
        channels::table
            .find(id)
            .select(Channel::as_select())
            .first(conn)
            .optional()?
            .ok_or_else(|| CoreError::not_found("channel", id))
    }

    pub fn list(conn: &mut DbConnection, viewer: &User) -> CoreResult<Vec<Channel>> {
        Ok(channels::table
            .filter(channels::account_id.eq(viewer.account_id))
            .order(channels::id.asc())
            .select(Channel::as_select())
            .load(conn)?)
    }

    /// Removes a channel and its conversations: its owner or an admin.
    pub fn delete(conn: &mut DbConnection, actor: &User, id: i64) -> CoreResult<()> {
        let channel = Channel::find(conn, actor, id)?;
        if channel.owner_id != actor.id && !actor.is_admin() {
            return Err(CoreError::Forbidden(
                "only the channel's owner or an admin may remove it".into(),
            ));
        }
        diesel::delete(channels::table.find(id)).execute(conn)?;
        Ok(())
    }

    pub fn credentials(&self, key: &SecretKey) -> CoreResult<Credentials> {
        let opened = key.open(&self.secrets)?;
        let secrets: Secrets =
            serde_json::from_str(opened.expose_secret()).map_err(|_| CoreError::Decrypt)?;
        Ok(match secrets {
            Secrets::Twilio { auth_token } => Credentials::Twilio {
                auth_token: auth_token.into(),
            },
            Secrets::Messenger {
                page_access_token,
                app_secret,
                verify_token,
            } => Credentials::Messenger {
                page_access_token: page_access_token.into(),
                app_secret: app_secret.into(),
                verify_token: verify_token.into(),
            },
        })
    }

    /// The path of its inbound webhook.
    pub fn webhook_path(&self) -> String {
        match self.kind.as_str() {
            "twilio_whatsapp" => format!("/webhooks/twilio/{}", self.id),
            _ => format!("/webhooks/messenger/{}", self.id),
        }
    }

    pub fn view(&self, public_url: &str) -> ChannelView {
        let base = public_url.trim_end_matches('/');
        ChannelView {
            id: self.id,
            kind: self.kind.clone(),
            name: self.name.clone(),
            owner_id: self.owner_id,
            external_id: self.external_id.clone(),
            sender: self.sender.clone(),
            webhook_url: format!("{base}{}", self.webhook_path()),
            status_callback_url: (self.kind == "twilio_whatsapp")
                .then(|| format!("{base}/webhooks/twilio/{}/status", self.id)),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// A channel with its credentials opened.
#[derive(Debug)]
pub struct OpenChannel {
    pub channel: Channel,
    pub credentials: Credentials,
}

/// Channels looked up and opened for the webhooks, which need one on every request: kept for
/// [`ChannelCache::TTL`]. Channels are never edited, only removed; a removal in this process
/// drops the entry at once, one in another process is seen within the TTL (meanwhile the
/// removed channel's messages fail to store and the provider retries them).
#[derive(Default)]
pub(crate) struct ChannelCache {
    entries: Mutex<HashMap<i64, (Instant, Arc<OpenChannel>)>>,
}

impl ChannelCache {
    pub(crate) const TTL: Duration = Duration::from_secs(10);

    pub(crate) async fn get(
        &self,
        db: &Db,
        key: &SecretKey,
        id: i64,
    ) -> CoreResult<Arc<OpenChannel>> {
        if let Some(open) = self.cached(id) {
            return Ok(open);
        }
        let channel = db.run(move |conn| Channel::find_any(conn, id)).await?;
        let open = Arc::new(OpenChannel {
            credentials: channel.credentials(key)?,
            channel,
        });
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, (at, _)| at.elapsed() < Self::TTL);
        entries.insert(id, (Instant::now(), Arc::clone(&open)));
        Ok(open)
    }

    fn cached(&self, id: i64) -> Option<Arc<OpenChannel>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&id)
            .filter(|(at, _)| at.elapsed() < Self::TTL)
            .map(|(_, open)| Arc::clone(open))
    }

    /// Forgets a removed channel.
    pub(crate) fn forget(&self, id: i64) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}
