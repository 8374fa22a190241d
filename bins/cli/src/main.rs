//! `herald`: the administration tool. Every command takes `--json` and then prints one JSON
//! object; errors print a message (or `{"error": …}`) and exit non-zero.

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "herald", version, about = "Herald administration")]
pub struct Cli {
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// TOML config file; `HERALD_*` variables override it.
    #[arg(long, global = true, env = "HERALD_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Apply pending migrations (or revert the last one).
    Migrate {
        /// Revert the most recent migration instead.
        #[arg(long)]
        revert: bool,
    },
    /// Print a new random key for HERALD_SECRET_KEY.
    Keygen,
    /// Accounts (tenants).
    #[command(subcommand)]
    Account(AccountCommand),
    /// Users of an account.
    #[command(subcommand)]
    User(UserCommand),
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The job queue.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Check the database, the migrations and the configuration.
    Doctor,
    /// Connected mailboxes.
    #[command(subcommand)]
    Mailbox(MailboxCommand),
}

#[derive(Subcommand)]
pub enum MailboxCommand {
    /// Every mailbox, with its state.
    List,
    /// Connect to a mailbox's servers now and show what they answered.
    Test { id: i64 },
    /// Read the mailbox again from the start of its history window, with a progress bar; what
    /// is already stored is recognised, not duplicated.
    Resync {
        id: i64,
        /// How many days back to read (default 90).
        #[arg(long, default_value_t = 90)]
        history_days: i64,
    },
}

#[derive(Subcommand)]
pub enum AccountCommand {
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = ["base", "automation"], default_value = "base")]
        plan: String,
    },
}

#[derive(Subcommand)]
pub enum UserCommand {
    Create {
        #[arg(long)]
        account: i64,
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        admin: bool,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once.
    Create {
        #[arg(long)]
        user: i64,
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// Revoke a token, by its id or by the token itself.
    Revoke { token: String },
}

#[derive(Subcommand)]
pub enum JobsCommand {
    /// Jobs, oldest due first.
    List {
        #[arg(long, value_parser = ["queued", "running", "dead", "cancelled"])]
        status: Option<String>,
        #[arg(long = "type")]
        job_type: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Make a dead, cancelled or waiting job due now, with fresh attempts.
    Retry { id: i64 },
    /// Cancel a job that has not started.
    Cancel { id: i64 },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    match commands::run(cli) {
        Ok(output) => {
            output.print(json);
            ExitCode::SUCCESS
        }
        Err(error) => commands::report(&error, json),
    }
}
