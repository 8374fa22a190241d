#![doc = include_str!("../README.md")]

pub mod inbox;
pub mod mail;
pub mod maintenance;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use herald_core::config::LogFormat;
use herald_core::crypto::{KeySource, SecretKey};
use herald_core::db::run_migrations;
use herald_core::{Config, Db};
use herald_scheduler::{QueueWaker, Runner, RunnerSettings};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// What every job gets to run.
#[derive(Clone)]
pub struct JobContext {
    pub db: Db,
    pub config: Arc<Config>,
    pub secret_key: SecretKey,
    pub waker: QueueWaker,
    /// The send jobs' batched writes, one per process.
    pub sends: Arc<herald_mailbox::deliver::SendWrites>,
}

impl JobContext {
    pub fn new(db: Db, config: Arc<Config>, secret_key: SecretKey, waker: QueueWaker) -> Self {
        JobContext {
            sends: Arc::new(herald_mailbox::deliver::SendWrites::new(db.clone())),
            db,
            config,
            secret_key,
            waker,
        }
    }
}

/// Loads the config from the optional TOML file and `HERALD_*`.
pub fn load_config(file: Option<&Path>) -> anyhow::Result<Config> {
    Ok(Config::load(file)?)
}

/// `RUST_LOG` filters (default `info`); `log_format = "json"` for log shippers.
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Opens the pool and, when configured, applies pending migrations.
pub fn open_database(config: &Config) -> anyhow::Result<Db> {
    let url = config.database()?;
    let db = Db::open(&url, config.db_pool_size).with_context(|| format!("opening {url}"))?;
    if config.run_migrations {
        let mut conn = db.get()?;
        let applied = run_migrations(&mut conn)?;
        if !applied.is_empty() {
            tracing::info!(?applied, "applied migrations");
        }
    }
    Ok(db)
}

/// The key for stored secrets; warns when it was generated into the data dir.
pub fn secret_key(config: &Config) -> anyhow::Result<SecretKey> {
    if config.secret_key.is_none()
        && config.database()?.backend() == herald_core::BackendKind::Postgres
    {
        anyhow::bail!(
            "HERALD_SECRET_KEY is required with PostgreSQL: every process must share one key \
             (make one with `herald keygen`)"
        );
    }
    let (key, source) = SecretKey::load_or_generate(config.secret_key.as_ref(), &config.data_dir)?;
    if let KeySource::DataDirFile { path, created } = source {
        if created {
            tracing::warn!(%path, "generated a secret key for stored secrets; back this file up, or set HERALD_SECRET_KEY");
        } else {
            tracing::warn!(%path, "using the secret key from the data dir; set HERALD_SECRET_KEY in production");
        }
    }
    Ok(key)
}

/// What every process has once started: its config, database and secret key.
#[derive(Clone)]
pub struct Started {
    pub config: Arc<Config>,
    pub db: Db,
    pub secret_key: SecretKey,
}

/// Logging, the database (with migrations when configured) and the secret key, in that order.
pub fn start(config: Config, process: &str) -> anyhow::Result<Started> {
    init_tracing(config.log_format);
    tracing::info!(?config, "starting {process}");
    let db = open_database(&config)?;
    let secret_key = secret_key(&config)?;
    Ok(Started {
        config: Arc::new(config),
        db,
        secret_key,
    })
}

impl Started {
    /// The job runner with every job type, its housekeeping scheduled.
    pub fn job_runner(&self, waker: QueueWaker) -> anyhow::Result<Runner<JobContext>> {
        let mut conn = self.db.get()?;
        maintenance::PurgeIdempotencyKeys::ensure_scheduled(&mut conn, herald_core::time::now())?;
        Ok(job_runner(JobContext::new(
            self.db.clone(),
            self.config.clone(),
            self.secret_key.clone(),
            waker,
        )))
    }
}

/// Keeps mailboxes synced until `shutdown` (herald-worker, and herald-api's embedded worker).
pub fn spawn_mailbox_syncer(
    started: &Started,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let settings = mail::syncer_settings(&started.config.mail);
    tokio::spawn(herald_mailbox::worker::run(
        started.db.clone(),
        started.secret_key.clone(),
        settings,
        shutdown,
    ))
}

/// The runner with every job type Herald has.
pub fn job_runner(context: JobContext) -> Runner<JobContext> {
    let settings = RunnerSettings::from(&context.config.queue);
    let waker = context.waker.clone();
    Runner::builder(context.db.clone(), context)
        .register::<maintenance::PurgeIdempotencyKeys>()
        .register::<mail::SyncMailboxNow>()
        .register::<mail::SendEmailJob>()
        .register::<mail::AppendSentCopyJob>()
        .register::<inbox::SendMessageJob>()
        .settings(settings)
        .waker(waker)
        .build()
}

/// Cancelled on SIGTERM or Ctrl-C.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        cancel.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
