//! `herald-worker`: runs the job queue (syncs, sends, provider calls, housekeeping). Start more
//! processes to scale out on PostgreSQL. Composition only; the work is in the crates.

use std::path::PathBuf;

use clap::Parser;
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
    let started = herald_runtime::start(
        herald_runtime::load_config(args.config.as_deref())?,
        "herald-worker",
    )?;
    let runner = started.job_runner(QueueWaker::new())?;
    let shutdown = herald_runtime::shutdown_on_signal();
    let syncer = herald_runtime::spawn_mailbox_syncer(&started, shutdown.clone());
    runner.run(shutdown).await;
    syncer.await?;
    Ok(())
}
