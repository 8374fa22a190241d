//! Typed configuration from `HERALD_*` environment variables and an optional TOML file.
//!
//! Loaded once by a binary and passed explicitly; there is no global. Nested sections use a double
//! underscore in the environment: `HERALD_QUEUE__WORKERS=4` sets `[queue] workers = 4`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::db::{BackendKind, DatabaseUrl};
use crate::error::CoreError;

#[derive(Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct Config {
    /// `postgres://…` or `sqlite://path`; default `sqlite://{data_dir}/herald.db`.
    #[serde(serialize_with = "serialize_secret_opt")]
    pub database_url: Option<SecretString>,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Base64 of 32 bytes; encrypts stored secrets (mailbox passwords, provider tokens).
    #[serde(serialize_with = "serialize_secret_opt")]
    pub secret_key: Option<SecretString>,
    /// The URL providers and users reach this API at; default `http://{listen}`.
    pub public_url: Option<String>,
    /// Run the job runner inside `herald-api`; default on with SQLite, off with PostgreSQL.
    pub embedded_worker: Option<bool>,
    /// Create a first account and admin on an empty database; default on with SQLite only.
    pub bootstrap: Option<bool>,
    /// Apply pending migrations at start-up.
    pub run_migrations: bool,
    pub log_format: LogFormat,
    /// Connections in each process's pool.
    pub db_pool_size: u32,
    pub queue: QueueConfig,
    pub api: ApiConfig,
    pub plans: PlanLimits,
    pub mail: MailConfig,
    pub providers: ProvidersConfig,
}

/// Where the messaging providers' APIs are (`[providers]`): their public addresses by default;
/// another base URL for a proxy or a test server.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct ProvidersConfig {
    pub twilio_base_url: String,
    pub graph_base_url: String,
    /// Seconds a provider call may take.
    pub timeout_secs: u64,
}

impl Default for ProvidersConfig {
    fn default() -> Self {
        ProvidersConfig {
            twilio_base_url: "https://api.twilio.com".into(),
            graph_base_url: "https://graph.facebook.com/v21.0".into(),
            timeout_secs: 30,
        }
    }
}

/// Mailbox sync in the worker (`[mail]`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct MailConfig {
    /// Seconds between full passes of a mailbox: its polling interval where the server has no
    /// IDLE (with IDLE, new inbox mail is picked up at once).
    pub sync_interval_secs: u64,
    /// Wait in IDLE for new mail where the server offers it.
    pub idle: bool,
    /// How long a worker holds a mailbox without renewing; a dead worker's mailboxes are taken
    /// over after this.
    pub lease_secs: u64,
    /// Longest wait between reconnection attempts after failures (doubling from 5 seconds).
    pub max_backoff_secs: u64,
    /// Attempts of a send before a temporary SMTP failure (4xx, network) makes it `failed`.
    pub send_attempts: i32,
    /// Wait before a send's second attempt; doubled after each, up to 30 minutes.
    pub send_retry_secs: u64,
    /// SMTP sessions a worker process keeps open at once to one server with one login (in use
    /// and idle); more sends to it wait for a session. Providers limit a mailbox's concurrent
    /// connections (Exchange Online: 3) and refuse or throttle past the limit.
    pub smtp_sessions_per_server: usize,
    /// How far back the first sync of a mailbox reads.
    pub history_days: i64,
    /// Attachments larger than this are described but not stored.
    pub max_attachment_bytes: usize,
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            sync_interval_secs: 60,
            idle: true,
            lease_secs: 90,
            max_backoff_secs: 300,
            send_attempts: 5,
            send_retry_secs: 30,
            smtp_sessions_per_server: 3,
            history_days: 90,
            max_attachment_bytes: 10 * 1024 * 1024,
        }
    }
}

/// The plan limits on mailboxes (E3), in one place; `[plans]` in the config.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct PlanLimits {
    /// `base`: mailboxes with sending enabled, per user.
    pub base_sending_mailboxes: usize,
    /// `automation`: mailboxes per user (each may send).
    pub automation_mailboxes: usize,
}

impl Default for PlanLimits {
    fn default() -> Self {
        PlanLimits {
            base_sending_mailboxes: 1,
            automation_mailboxes: 3,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// How a process runs the job queue.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct QueueConfig {
    /// Worker loops in this process; each claims its own batches.
    pub workers: usize,
    /// Jobs claimed per round trip.
    pub batch_size: i64,
    /// Sleep between polls when the queue is empty (an in-process enqueue wakes workers at once).
    pub poll_interval_ms: u64,
    /// How long a claim holds a job before another worker may recover it; renewed while running.
    pub lease_secs: u64,
    /// On shutdown, how long in-flight jobs may finish before they are released.
    pub shutdown_grace_secs: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            workers: 2,
            batch_size: 16,
            poll_interval_ms: 500,
            lease_secs: 300,
            shutdown_grace_secs: 30,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct ApiConfig {
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            body_limit_bytes: 1024 * 1024,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            secret_key: None,
            public_url: None,
            embedded_worker: None,
            bootstrap: None,
            run_migrations: true,
            log_format: LogFormat::Text,
            db_pool_size: 10,
            queue: QueueConfig::default(),
            api: ApiConfig::default(),
            plans: PlanLimits::default(),
            mail: MailConfig::default(),
            providers: ProvidersConfig::default(),
        }
    }
}

fn serialize_secret_opt<S: serde::Serializer>(
    value: &Option<SecretString>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.serialize_some(v.expose_secret()),
        None => s.serialize_none(),
    }
}

impl Config {
    /// Defaults, then the TOML file (when given), then `HERALD_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Self, CoreError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(CoreError::Config(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(
            Env::prefixed("HERALD_")
                .split("__")
                .ignore(&["config", "test_postgres_url"]),
        );
        let config: Config = figment
            .extract()
            .map_err(|e| CoreError::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), CoreError> {
        self.database()?;
        if self.db_pool_size == 0 {
            return Err(CoreError::Config("db_pool_size must be at least 1".into()));
        }
        if self.queue.workers == 0 || self.queue.batch_size < 1 {
            return Err(CoreError::Config(
                "queue.workers and queue.batch_size must be at least 1".into(),
            ));
        }
        if self.mail.smtp_sessions_per_server == 0 {
            return Err(CoreError::Config(
                "mail.smtp_sessions_per_server must be at least 1".into(),
            ));
        }
        // The lease is renewed every third of it, so it needs a few seconds of room.
        if self.queue.lease_secs < 3 {
            return Err(CoreError::Config(
                "queue.lease_secs must be at least 3".into(),
            ));
        }
        if self.queue.poll_interval_ms < 10 {
            return Err(CoreError::Config(
                "queue.poll_interval_ms must be at least 10".into(),
            ));
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(CoreError::Config(format!(
                "public_url must start with http:// or https://, got `{url}`"
            )));
        }
        Ok(())
    }

    pub fn database(&self) -> Result<DatabaseUrl, CoreError> {
        match &self.database_url {
            Some(url) => DatabaseUrl::parse(url.expose_secret()),
            None => Ok(DatabaseUrl::Sqlite(self.data_dir.join("herald.db"))),
        }
    }

    fn backend(&self) -> BackendKind {
        self.database()
            .map(|u| u.backend())
            .unwrap_or(BackendKind::Sqlite)
    }

    pub fn embedded_worker(&self) -> bool {
        self.embedded_worker
            .unwrap_or(self.backend() == BackendKind::Sqlite)
    }

    pub fn bootstrap(&self) -> bool {
        self.bootstrap
            .unwrap_or(self.backend() == BackendKind::Sqlite)
    }

    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }
}

/// Secrets redacted: safe to log.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let database = match self.database() {
            Ok(url) => url.to_string(),
            Err(_) => "<invalid>".to_owned(),
        };
        f.debug_struct("Config")
            .field("database", &database)
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "<redacted>"),
            )
            .field("public_url", &self.public_url())
            .field("embedded_worker", &self.embedded_worker())
            .field("bootstrap", &self.bootstrap())
            .field("run_migrations", &self.run_migrations)
            .field("log_format", &self.log_format)
            .field("db_pool_size", &self.db_pool_size)
            .field("queue", &self.queue)
            .field("api", &self.api)
            .field("plans", &self.plans)
            .field("mail", &self.mail)
            .field("providers", &self.providers)
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail closures return its own error type
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn env_overrides_the_file_and_nested_keys_use_double_underscores() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "herald.toml",
                "listen = \"0.0.0.0:9000\"\npublic_url = \"https://herald.example.com/\"\n[queue]\nworkers = 3\nbatch_size = 7\n",
            )?;
            jail.set_env("HERALD_QUEUE__WORKERS", "5");
            jail.set_env("HERALD_DATABASE_URL", "postgres://herald:s3cret@db/herald");
            let config = Config::load(Some(Path::new("herald.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.listen.to_string(), "0.0.0.0:9000");
            assert_eq!((config.queue.workers, config.queue.batch_size), (5, 7));
            assert_eq!(config.public_url(), "https://herald.example.com");
            assert_eq!(config.database().unwrap().backend(), BackendKind::Postgres);
            assert!(
                !config.embedded_worker() && !config.bootstrap(),
                "PostgreSQL defaults"
            );
            let shown = format!("{config:?}");
            assert!(!shown.contains("s3cret"), "{shown}");
            Ok(())
        });
    }

    #[test]
    fn defaults_run_on_sqlite_in_the_data_dir() {
        Jail::expect_with(|_| {
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(
                config.database().unwrap(),
                DatabaseUrl::Sqlite(PathBuf::from("./data/herald.db"))
            );
            assert!(config.embedded_worker() && config.bootstrap());
            assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_config_errors_that_say_what_is_wrong() {
        Jail::expect_with(|jail| {
            jail.set_env("HERALD_DATABASE_URL", "mysql://x");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("postgres:// or sqlite://"), "{err}");
            jail.set_env("HERALD_DATABASE_URL", "sqlite://x.db");
            jail.set_env("HERALD_LISTEN", "not-an-address");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.to_lowercase().contains("listen"), "{err}");
            Ok(())
        });
        let err = Config::load(Some(Path::new("/nonexistent/herald.toml")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
    }
}
