//! `herald-worker`: runs the job queue (syncs, sends, provider calls, housekeeping). Start more
//! processes to scale out on PostgreSQL. Composition only; the work is in the crates.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use herald_runtime::maintenance::PurgeIdempotencyKeys;
use herald_runtime::{
    JobContext, init_tracing, job_runner, load_config, open_database, secret_key,
};
use herald_scheduler::QueueWaker;

/// Herald's background worker.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML config file; `HERALD_*` variables override it.
    #[arg(long, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = load_config(args.config.as_deref())?;
    init_tracing(config.log_format);
    tracing::info!(?config, "starting herald-worker");
    let config = Arc::new(config);
    let db = open_database(&config)?;
    let secret_key = secret_key(&config)?;
    {
        let mut conn = db.get()?;
        PurgeIdempotencyKeys::ensure_scheduled(&mut conn, herald_core::time::now())?;
    }
    let context = JobContext {
        db,
        config,
        secret_key,
        waker: QueueWaker::new(),
    };
    let runner = job_runner(context);
    let shutdown = herald_runtime::shutdown_on_signal();
    runner.run(shutdown).await;
    Ok(())
}
