//! `herald-api`: the HTTP API, with the job worker in-process when configured (the default on
//! SQLite). Composition only; the work is in the crates.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use herald_core::identity::bootstrap_if_empty;
use herald_http::AppState;
use herald_runtime::Started;
use herald_scheduler::QueueWaker;
use secrecy::ExposeSecret;

/// Herald's HTTP API server.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML config file; `HERALD_*` variables override it.
    #[arg(long, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
    /// Run the job worker in this process (default: on with SQLite, off with PostgreSQL).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    embedded_worker: Option<bool>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = herald_runtime::load_config(args.config.as_deref())?;
    if args.embedded_worker.is_some() {
        config.embedded_worker = args.embedded_worker;
    }
    let Started {
        config,
        db,
        secret_key,
    } = herald_runtime::start(config, "herald-api")?;

    let waker = QueueWaker::new();
    let shutdown = herald_runtime::shutdown_on_signal();
    let worker = if config.embedded_worker() {
        let started = Started {
            config: config.clone(),
            db: db.clone(),
            secret_key: secret_key.clone(),
        };
        let runner = started.job_runner(waker.clone())?;
        let syncer = herald_runtime::spawn_mailbox_syncer(&started, shutdown.clone());
        let token = shutdown.clone();
        Some(tokio::spawn(async move {
            runner.run(token).await;
            let _ = syncer.await;
        }))
    } else {
        None
    };

    let intake = herald_http::Intake::new(db.clone(), secret_key.clone());
    let state = AppState {
        intake,
        db: db.clone(),
        config: config.clone(),
        secret_key,
        waker,
        timeline: herald_core::timeline::Timeline::default()
            .with_source(std::sync::Arc::new(herald_mailbox::emails::EmailTimeline)),
        templates: herald_templates::Engine::default(),
        metrics: herald_http::metrics_handle(),
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener.local_addr()?;
    // With `listen = …:0` the configured address is not the one to call.
    let public_url = match &config.public_url {
        Some(_) => config.public_url(),
        None => format!("http://{address}"),
    };
    if config.bootstrap() {
        let db = db.clone();
        let created = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let mut conn = db.get()?;
            Ok(bootstrap_if_empty(&mut conn)?)
        })
        .await??;
        if let Some(first) = created {
            // Printed once, on purpose: it is the only way in on a fresh install.
            let token = first.token.expose_secret();
            println!(
                "Herald created a first account and its admin user ({}).",
                first.admin.email
            );
            println!("Admin API token (shown once, keep it safe): {token}");
            println!(
                "Try it: curl -H 'Authorization: Bearer {token}' {}/api/v1/me",
                public_url
            );
        }
    }

    tracing::info!(%address, "listening");
    println!("Herald API listening on http://{address}");

    herald_http::serve(listener, state, shutdown.clone().cancelled_owned()).await?;
    if let Some(worker) = worker {
        shutdown.cancel();
        worker.await?;
    }
    Ok(())
}
