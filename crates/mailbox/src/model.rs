//! The `mailboxes` table: a user's IMAP (and optionally SMTP) account, with its passwords sealed
//! under the configured key. Saving is two steps so no transaction is held across the network:
//! [`Draft::prepare`] validates and applies the plan rules, the caller checks the servers, then
//! [`Draft::insert`] / [`Draft::update`] write it, re-checking the plan inside the write.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use herald_core::crypto::SecretKey;
use herald_core::domain::{EmailAddress, parse_name};
use herald_core::identity::{Account, User};
use herald_core::pagination::{Page, PageRequest};
use herald_core::text_enum;
use herald_core::time::{now, rfc3339, rfc3339_opt};
use herald_core::{CoreError, DbConnection};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::connect::{ConnectError, Security, ServerSettings};
use crate::plan::{self, Owned, PlanLimits, PlanViolation};
use crate::schema::mailboxes;

text_enum!(
    /// Which folders are synced (E2).
    SyncScope { Received => "received", ReceivedAndSent => "received_and_sent" }
);

text_enum!(
    /// Who sees a mailbox's emails (E12).
    Visibility { Everyone => "everyone", Owner => "owner" }
);

/// Errors of the mailbox crate: an invalid field, a plan rule, or a server that failed its check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MailboxError {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error(transparent)]
    Plan(#[from] PlanViolation),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Composing with a template that does not render.
    #[error(transparent)]
    Template(#[from] herald_templates::TemplateError),
}

impl From<diesel::result::Error> for MailboxError {
    fn from(e: diesel::result::Error) -> Self {
        MailboxError::Core(e.into())
    }
}

#[derive(Clone, Debug, Queryable, Selectable, Identifiable)]
#[diesel(table_name = mailboxes)]
pub struct Mailbox {
    pub id: i64,
    pub account_id: i64,
    pub owner_id: i64,
    pub address: String,
    pub display_name: Option<String>,
    pub signature: Option<String>,
    pub imap_host: String,
    pub imap_port: i32,
    pub imap_security: String,
    pub imap_username: String,
    pub imap_password: String,
    pub smtp_host: Option<String>,
    pub smtp_port: Option<i32>,
    pub smtp_security: Option<String>,
    pub smtp_username: Option<String>,
    pub smtp_password: Option<String>,
    pub verify_tls: bool,
    pub sync: String,
    pub sending_enabled: bool,
    pub visibility: String,
    pub state: String,
    pub last_synced_at: Option<NaiveDateTime>,
    pub last_error: Option<String>,
    pub auth_failures: i32,
    pub sync_locked_by: Option<String>,
    pub sync_locked_until: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// A sync asked for through the API, not yet started.
    pub sync_requested_at: Option<NaiveDateTime>,
    pub save_sent_copy: bool,
}

#[derive(Insertable, AsChangeset)]
#[diesel(table_name = mailboxes, treat_none_as_null = true)]
struct MailboxRow {
    display_name: Option<String>,
    signature: Option<String>,
    imap_host: String,
    imap_port: i32,
    imap_security: String,
    imap_username: String,
    imap_password: String,
    smtp_host: Option<String>,
    smtp_port: Option<i32>,
    smtp_security: Option<String>,
    smtp_username: Option<String>,
    smtp_password: Option<String>,
    verify_tls: bool,
    sync: String,
    sending_enabled: bool,
    visibility: String,
    save_sent_copy: bool,
}

/// A server as the API shows it: never the password.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ServerView {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: String,
}

/// A mailbox as the API shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct MailboxView {
    pub id: i64,
    pub owner_id: i64,
    pub address: String,
    pub display_name: Option<String>,
    /// Shown by templates as `{{ sender.signature }}`.
    pub signature: Option<String>,
    pub imap: ServerView,
    pub smtp: Option<ServerView>,
    pub verify_tls: bool,
    /// `received` or `received_and_sent`
    pub sync: String,
    pub sending_enabled: bool,
    /// `everyone` or `owner`
    pub visibility: String,
    /// Herald saves sent mail in the Sent folder (IMAP APPEND); false for providers that do.
    pub save_sent_copy: bool,
    /// `connected` until the sync engine runs it; then `synced`, `error` or `auth_failed`.
    pub state: String,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_synced_at: Option<NaiveDateTime>,
    pub last_error: Option<String>,
    /// Seconds since the last successful sync; null before the first one.
    pub lag_seconds: Option<i64>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: NaiveDateTime,
}

/// A server as the API takes it. On PATCH the password may be left out to keep the stored one.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerInput {
    pub host: String,
    pub port: u16,
    #[schema(value_type = String, example = "tls")]
    pub security: String,
    pub username: String,
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<SecretString>,
}

#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MailboxInput {
    pub address: String,
    #[serde(default)]
    pub display_name: Option<String>,
    /// Plain text or HTML the templates show as `{{ sender.signature }}`.
    #[serde(default)]
    pub signature: Option<String>,
    pub imap: ServerInput,
    /// Required when `sending_enabled` is true.
    #[serde(default)]
    pub smtp: Option<ServerInput>,
    /// `received` (default) or `received_and_sent`
    #[serde(default)]
    pub sync: Option<String>,
    #[serde(default)]
    pub sending_enabled: bool,
    /// `everyone` (default) or `owner`
    #[serde(default)]
    pub visibility: Option<String>,
    /// Default true; false accepts self-signed certificates.
    #[serde(default)]
    pub verify_tls: Option<bool>,
    /// Default true: Herald saves what it sends in the Sent folder. False for providers that
    /// file submitted mail themselves (Gmail, Outlook), to avoid a second copy.
    #[serde(default)]
    pub save_sent_copy: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MailboxPatch {
    pub display_name: Option<String>,
    pub signature: Option<String>,
    pub imap: Option<ServerInput>,
    pub smtp: Option<ServerInput>,
    pub sync: Option<String>,
    pub sending_enabled: Option<bool>,
    pub visibility: Option<String>,
    pub verify_tls: Option<bool>,
    pub save_sent_copy: Option<bool>,
}

fn security(value: &str, field: &str) -> Result<Security, CoreError> {
    Security::parse(value).ok_or_else(|| {
        CoreError::invalid(
            field,
            format!("`{value}` is not one of: tls, starttls, none"),
        )
    })
}

/// Validated servers and settings, ready to be checked and written.
#[derive(Debug)]
pub struct Draft {
    id: Option<i64>,
    owner_id: i64,
    address: String,
    display_name: Option<String>,
    signature: Option<String>,
    pub imap: ServerSettings,
    /// Present when sending is enabled or an SMTP server was given.
    pub smtp: Option<ServerSettings>,
    /// Whether the servers changed and must be checked.
    pub check_imap: bool,
    pub check_smtp: bool,
    sync: SyncScope,
    sending_enabled: bool,
    visibility: Visibility,
    verify_tls: bool,
    save_sent_copy: bool,
}

/// The stored server a PATCH may keep the password of: only when it goes to the same place.
struct StoredServer<'a> {
    host: &'a str,
    port: i32,
    security: &'a str,
    username: &'a str,
    verify_tls: bool,
    password: SecretString,
}

fn server(
    input: &ServerInput,
    side: &str,
    verify_tls: bool,
    stored: Option<StoredServer<'_>>,
) -> Result<ServerSettings, CoreError> {
    let host = input.host.trim().to_ascii_lowercase();
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(CoreError::invalid(
            format!("{side}.host"),
            "must be a host name",
        ));
    }
    if input.port == 0 {
        return Err(CoreError::invalid(
            format!("{side}.port"),
            "must be between 1 and 65535",
        ));
    }
    let username = parse_name(&input.username, &format!("{side}.username"), 320)?;
    let security = security(&input.security, &format!("{side}.security"))?;
    let password = match (&input.password, stored) {
        (Some(p), _) => p.clone(),
        // The stored password is only sent where it was sent before: a new host, port, username
        // or weaker protection needs it typed again, so a stolen token cannot redirect it.
        (None, Some(stored))
            if stored.host == host
                && stored.port == i32::from(input.port)
                && stored.security == security.as_str()
                && stored.username == username
                && (verify_tls || !stored.verify_tls) =>
        {
            stored.password
        }
        (None, Some(_)) => {
            return Err(CoreError::invalid(
                format!("{side}.password"),
                "is required when the host, port, security, username or certificate check changes",
            ));
        }
        (None, None) => {
            return Err(CoreError::invalid(
                format!("{side}.password"),
                "is required",
            ));
        }
    };
    Ok(ServerSettings {
        host,
        port: input.port,
        security,
        username,
        password,
        verify_tls,
    })
}

impl Draft {
    fn new_mailbox(owner: &User, input: &MailboxInput) -> Result<Draft, CoreError> {
        let address = EmailAddress::parse_field(&input.address, "address")?;
        let verify_tls = input.verify_tls.unwrap_or(true);
        let imap = server(&input.imap, "imap", verify_tls, None)?;
        let smtp = input
            .smtp
            .as_ref()
            .map(|s| server(s, "smtp", verify_tls, None))
            .transpose()?;
        if input.sending_enabled && smtp.is_none() {
            return Err(CoreError::invalid(
                "smtp",
                "is required when sending_enabled is true",
            ));
        }
        Ok(Draft {
            id: None,
            owner_id: owner.id,
            address: address.into(),
            display_name: input
                .display_name
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            signature: input.signature.clone().filter(|s| !s.trim().is_empty()),
            check_imap: true,
            check_smtp: smtp.is_some() && input.sending_enabled,
            imap,
            smtp,
            sync: input
                .sync
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|_| CoreError::invalid("sync", "must be received or received_and_sent"))?
                .unwrap_or(SyncScope::Received),
            sending_enabled: input.sending_enabled,
            visibility: input
                .visibility
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|_| CoreError::invalid("visibility", "must be everyone or owner"))?
                .unwrap_or(Visibility::Everyone),
            verify_tls,
            save_sent_copy: input.save_sent_copy.unwrap_or(true),
        })
    }

    /// Validates a new mailbox for `owner` and applies the plan rules.
    pub fn prepare(
        conn: &mut DbConnection,
        limits: PlanLimits,
        owner: &User,
        input: &MailboxInput,
    ) -> Result<Draft, MailboxError> {
        let draft = Draft::new_mailbox(owner, input)?;
        draft.check_plan(conn, limits)?;
        Ok(draft)
    }

    /// Applies `patch` to a mailbox of the caller's; only what changed is checked again.
    pub fn prepare_update(
        conn: &mut DbConnection,
        key: &SecretKey,
        limits: PlanLimits,
        actor: &User,
        id: i64,
        patch: &MailboxPatch,
    ) -> Result<Draft, MailboxError> {
        let current = Mailbox::find(conn, actor, id)?;
        if current.owner_id != actor.id {
            return Err(
                CoreError::Forbidden("only the owner of a mailbox can change it".into()).into(),
            );
        }
        let verify_tls = patch.verify_tls.unwrap_or(current.verify_tls);
        // Turning the certificate check off would send stored passwords to unverified servers:
        // only with the passwords given again.
        if !verify_tls && current.verify_tls {
            let imap_given = patch.imap.as_ref().is_some_and(|i| i.password.is_some());
            let smtp_given = current.smtp_host.is_none()
                || patch.smtp.as_ref().is_some_and(|s| s.password.is_some());
            if !(imap_given && smtp_given) {
                return Err(CoreError::invalid(
                    "verify_tls",
                    "turning the certificate check off needs the passwords given again",
                )
                .into());
            }
        }
        let imap = match &patch.imap {
            Some(input) => {
                let stored = StoredServer {
                    host: &current.imap_host,
                    port: current.imap_port,
                    security: &current.imap_security,
                    username: &current.imap_username,
                    verify_tls: current.verify_tls,
                    password: key.open(&current.imap_password)?,
                };
                server(input, "imap", verify_tls, Some(stored))?
            }
            None => ServerSettings {
                verify_tls,
                ..current.imap_settings(key)?
            },
        };
        let smtp = match &patch.smtp {
            Some(input) => {
                let stored = match (
                    &current.smtp_host,
                    current.smtp_port,
                    &current.smtp_security,
                    &current.smtp_username,
                    &current.smtp_password,
                ) {
                    (Some(host), Some(port), Some(security), Some(username), Some(password)) => {
                        Some(StoredServer {
                            host,
                            port,
                            security,
                            username,
                            verify_tls: current.verify_tls,
                            password: key.open(password)?,
                        })
                    }
                    _ => None,
                };
                Some(server(input, "smtp", verify_tls, stored)?)
            }
            None => current
                .smtp_settings(key)?
                .map(|s| ServerSettings { verify_tls, ..s }),
        };
        let sending_enabled = patch.sending_enabled.unwrap_or(current.sending_enabled);
        if sending_enabled && smtp.is_none() {
            return Err(
                CoreError::invalid("smtp", "is required when sending_enabled is true").into(),
            );
        }
        let draft = Draft {
            id: Some(current.id),
            owner_id: current.owner_id,
            address: current.address.clone(),
            display_name: match &patch.display_name {
                Some(name) => Some(name.trim().to_owned()).filter(|s| !s.is_empty()),
                None => current.display_name.clone(),
            },
            signature: match &patch.signature {
                Some(signature) => Some(signature.clone()).filter(|s| !s.trim().is_empty()),
                None => current.signature.clone(),
            },
            check_imap: patch.imap.is_some() || patch.verify_tls.is_some(),
            // SMTP is checked when sending is on and its server changed or sending was just enabled.
            check_smtp: sending_enabled
                && (patch.smtp.is_some() || patch.verify_tls.is_some() || !current.sending_enabled),
            imap,
            smtp,
            sync: patch
                .sync
                .as_deref()
                .unwrap_or(&current.sync)
                .parse()
                .map_err(|_| CoreError::invalid("sync", "must be received or received_and_sent"))?,
            sending_enabled,
            visibility: patch
                .visibility
                .as_deref()
                .unwrap_or(&current.visibility)
                .parse()
                .map_err(|_| CoreError::invalid("visibility", "must be everyone or owner"))?,
            verify_tls,
            save_sent_copy: patch.save_sent_copy.unwrap_or(current.save_sent_copy),
        };
        draft.check_plan(conn, limits)?;
        Ok(draft)
    }

    /// Inside the write transaction: on PostgreSQL, a lock per owner first, so two concurrent
    /// saves cannot both pass the plan rules (SQLite's write lock already serialises them).
    fn lock_owner(&self, conn: &mut DbConnection) -> Result<(), MailboxError> {
        if let DbConnection::Postgres(pg) = conn {
            diesel::sql_query("SELECT pg_advisory_xact_lock(727174, $1)")
                .bind::<diesel::sql_types::Integer, _>(
                    i32::try_from(self.owner_id % i64::from(i32::MAX)).unwrap_or(0),
                )
                .execute(pg)?;
        }
        Ok(())
    }

    fn check_plan(&self, conn: &mut DbConnection, limits: PlanLimits) -> Result<(), MailboxError> {
        let owner = herald_core::identity::User::find(conn, self.owner_id)?;
        let account = Account::find(conn, owner.account_id)?;
        let existing: Vec<Owned> = mailboxes::table
            .filter(mailboxes::owner_id.eq(self.owner_id))
            .select((mailboxes::id, mailboxes::sending_enabled))
            .load::<(i64, bool)>(conn)?
            .into_iter()
            .map(|(id, sending_enabled)| Owned {
                id,
                sending_enabled,
            })
            .collect();
        plan::check(
            account.plan(),
            limits,
            &existing,
            self.id,
            self.sending_enabled,
        )?;
        Ok(())
    }

    /// The columns a save writes, passwords sealed.
    fn row(&self, key: &SecretKey) -> Result<MailboxRow, CoreError> {
        let smtp = self.smtp.as_ref();
        Ok(MailboxRow {
            display_name: self.display_name.clone(),
            signature: self.signature.clone(),
            imap_host: self.imap.host.clone(),
            imap_port: i32::from(self.imap.port),
            imap_security: self.imap.security.as_str().to_owned(),
            imap_username: self.imap.username.clone(),
            imap_password: key.seal(secrecy::ExposeSecret::expose_secret(&self.imap.password))?,
            smtp_host: smtp.map(|s| s.host.clone()),
            smtp_port: smtp.map(|s| i32::from(s.port)),
            smtp_security: smtp.map(|s| s.security.as_str().to_owned()),
            smtp_username: smtp.map(|s| s.username.clone()),
            smtp_password: smtp
                .map(|s| key.seal(secrecy::ExposeSecret::expose_secret(&s.password)))
                .transpose()?,
            verify_tls: self.verify_tls,
            sync: self.sync.as_str().to_owned(),
            sending_enabled: self.sending_enabled,
            visibility: self.visibility.as_str().to_owned(),
            save_sent_copy: self.save_sent_copy,
        })
    }

    /// Writes a new mailbox (call inside a write transaction, after the servers were checked).
    pub fn insert(
        &self,
        conn: &mut DbConnection,
        key: &SecretKey,
        limits: PlanLimits,
        account_id: i64,
    ) -> Result<Mailbox, MailboxError> {
        self.lock_owner(conn)?;
        self.check_plan(conn, limits)?;
        let at = now();
        let mailbox = diesel::insert_into(mailboxes::table)
            .values((
                &self.row(key)?,
                mailboxes::account_id.eq(account_id),
                mailboxes::owner_id.eq(self.owner_id),
                mailboxes::address.eq(&self.address),
                mailboxes::state.eq("connected"),
                mailboxes::created_at.eq(at),
                mailboxes::updated_at.eq(at),
            ))
            .returning(mailboxes::all_columns)
            .get_result(conn)?;
        Ok(mailbox)
    }

    /// Writes the changes (inside a write transaction, after the changed servers were checked).
    pub fn update(
        &self,
        conn: &mut DbConnection,
        key: &SecretKey,
        limits: PlanLimits,
    ) -> Result<Mailbox, MailboxError> {
        let id = self
            .id
            .ok_or_else(|| CoreError::not_found("mailbox", "new"))?;
        self.lock_owner(conn)?;
        self.check_plan(conn, limits)?;
        let mut mailbox: Mailbox = diesel::update(mailboxes::table.find(id))
            .set((&self.row(key)?, mailboxes::updated_at.eq(now())))
            .returning(mailboxes::all_columns)
            .get_result(conn)?;
        if self.check_imap {
            // Checked credentials: a mailbox in `auth_failed` is tried again.
            mailbox = diesel::update(mailboxes::table.find(id))
                .set((
                    mailboxes::state.eq("connected"),
                    mailboxes::auth_failures.eq(0),
                    mailboxes::last_error.eq(None::<String>),
                ))
                .returning(mailboxes::all_columns)
                .get_result(conn)?;
        }
        Ok(mailbox)
    }
}

impl Mailbox {
    /// A mailbox of the viewer's account that the viewer may see: their own, or another user's
    /// with visibility `everyone`.
    pub fn find(conn: &mut DbConnection, viewer: &User, id: i64) -> Result<Mailbox, CoreError> {
        mailboxes::table
            .filter(mailboxes::account_id.eq(viewer.account_id))
            .filter(mailboxes::id.eq(id))
            .filter(
                mailboxes::owner_id
                    .eq(viewer.id)
                    .or(mailboxes::visibility.eq(Visibility::Everyone.as_str())),
            )
            .select(Mailbox::as_select())
            .first(conn)
            .optional()?
            .ok_or_else(|| CoreError::not_found("mailbox", id))
    }

    pub fn list(
        conn: &mut DbConnection,
        viewer: &User,
        page: PageRequest,
    ) -> QueryResult<Page<Mailbox>> {
        let mut query = mailboxes::table
            .filter(mailboxes::account_id.eq(viewer.account_id))
            .filter(
                mailboxes::owner_id
                    .eq(viewer.id)
                    .or(mailboxes::visibility.eq(Visibility::Everyone.as_str())),
            )
            .select(Mailbox::as_select())
            .order(mailboxes::id.desc())
            .limit(page.limit + 1)
            .into_boxed();
        if let Some(before) = page.before_id {
            query = query.filter(mailboxes::id.lt(before));
        }
        Ok(Page::from_rows(query.load(conn)?, page.limit, |m| m.id))
    }

    /// The mailbox `user` sends from by default: their own with sending enabled (the oldest, if
    /// the plan allows several).
    pub fn default_sending(conn: &mut DbConnection, user: &User) -> QueryResult<Option<Mailbox>> {
        mailboxes::table
            .filter(mailboxes::owner_id.eq(user.id))
            .filter(mailboxes::sending_enabled.eq(true))
            .order(mailboxes::id.asc())
            .select(Mailbox::as_select())
            .first(conn)
            .optional()
    }

    /// Every mailbox of every account (`herald mailbox list`, for operators).
    pub fn list_all(conn: &mut DbConnection) -> QueryResult<Vec<Mailbox>> {
        mailboxes::table
            .select(Mailbox::as_select())
            .order(mailboxes::id.asc())
            .load(conn)
    }

    pub fn find_any(conn: &mut DbConnection, id: i64) -> Result<Mailbox, CoreError> {
        mailboxes::table
            .find(id)
            .select(Mailbox::as_select())
            .first(conn)
            .optional()?
            .ok_or_else(|| CoreError::not_found("mailbox", id))
    }

    /// Deletes a mailbox: its owner, or an admin of the account. Its emails stay where they are
    /// shown (they arrive with sync).
    pub fn delete(conn: &mut DbConnection, actor: &User, id: i64) -> Result<(), CoreError> {
        let mailbox = Mailbox::find(conn, actor, id)?;
        if mailbox.owner_id != actor.id && !actor.is_admin() {
            return Err(CoreError::Forbidden(
                "only the owner of a mailbox or an admin can remove it".into(),
            ));
        }
        diesel::delete(mailboxes::table.find(id)).execute(conn)?;
        Ok(())
    }

    pub fn imap_settings(&self, key: &SecretKey) -> Result<ServerSettings, CoreError> {
        Ok(ServerSettings {
            host: self.imap_host.clone(),
            port: u16::try_from(self.imap_port).unwrap_or(0),
            security: Security::parse(&self.imap_security).unwrap_or(Security::Tls),
            username: self.imap_username.clone(),
            password: key.open(&self.imap_password)?,
            verify_tls: self.verify_tls,
        })
    }

    pub fn smtp_settings(&self, key: &SecretKey) -> Result<Option<ServerSettings>, CoreError> {
        let (Some(host), Some(port), Some(security), Some(username), Some(password)) = (
            &self.smtp_host,
            self.smtp_port,
            &self.smtp_security,
            &self.smtp_username,
            &self.smtp_password,
        ) else {
            return Ok(None);
        };
        Ok(Some(ServerSettings {
            host: host.clone(),
            port: u16::try_from(port).unwrap_or(0),
            security: Security::parse(security).unwrap_or(Security::Tls),
            username: username.clone(),
            password: key.open(password)?,
            verify_tls: self.verify_tls,
        }))
    }

    pub fn view(&self) -> MailboxView {
        let server = |host: &str, port: i32, security: &str, username: &str| ServerView {
            host: host.to_owned(),
            port: u16::try_from(port).unwrap_or(0),
            security: Security::parse(security).unwrap_or(Security::Tls),
            username: username.to_owned(),
        };
        MailboxView {
            id: self.id,
            owner_id: self.owner_id,
            address: self.address.clone(),
            display_name: self.display_name.clone(),
            signature: self.signature.clone(),
            imap: server(
                &self.imap_host,
                self.imap_port,
                &self.imap_security,
                &self.imap_username,
            ),
            smtp: match (
                &self.smtp_host,
                self.smtp_port,
                &self.smtp_security,
                &self.smtp_username,
            ) {
                (Some(h), Some(p), Some(s), Some(u)) => Some(server(h, p, s, u)),
                _ => None,
            },
            verify_tls: self.verify_tls,
            sync: self.sync.clone(),
            sending_enabled: self.sending_enabled,
            visibility: self.visibility.clone(),
            save_sent_copy: self.save_sent_copy,
            state: self.state.clone(),
            last_synced_at: self.last_synced_at,
            lag_seconds: self
                .last_synced_at
                .map(|at| (now() - at).num_seconds().max(0)),
            last_error: self.last_error.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// Checks the servers a draft needs checked: IMAP login, and SMTP when sending is enabled.
pub async fn check_servers(draft: &Draft) -> Result<(), ConnectError> {
    if draft.check_imap {
        crate::connect::check_imap(&draft.imap).await?;
    }
    if draft.check_smtp
        && let Some(smtp) = &draft.smtp
    {
        crate::connect::check_smtp(smtp).await?;
    }
    Ok(())
}
