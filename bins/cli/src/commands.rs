//! The commands, and the one place errors become messages and exit codes.

use std::process::ExitCode;

use herald_core::crypto::SecretKey;
use herald_core::db::{migration_status, revert_last_migration, run_migrations};
use herald_core::domain::Plan;
use herald_core::identity::{Account, ApiToken, NewUser, User};
use herald_core::{BackendKind, Config, CoreError};
use herald_scheduler::{SchedulerError, cancel_job, retry_job, storage};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::{AccountCommand, Cli, Command, JobsCommand, MailboxCommand, TokenCommand, UserCommand};

/// What a command prints: a line for people and an object for `--json`.
pub struct Output {
    text: String,
    json: Value,
}

impl Output {
    fn new(text: impl Into<String>, json: Value) -> Self {
        Output {
            text: text.into(),
            json,
        }
    }

    pub fn print(&self, json: bool) {
        if json {
            println!("{}", self.json);
        } else {
            println!("{}", self.text);
        }
    }
}

/// A doctor check that failed: printed like any output, but the exit code is non-zero.
#[derive(Debug, thiserror::Error)]
#[error("{summary}")]
struct DoctorFailed {
    summary: String,
    report: Value,
}

pub fn run(cli: Cli) -> anyhow::Result<Output> {
    let json = cli.json;
    if let Command::Keygen = cli.command {
        let key = SecretKey::generate_base64();
        return Ok(Output::new(key.clone(), json!({ "key": key })));
    }
    let config = Config::load(cli.config.as_deref())?;
    if let Command::Doctor = cli.command {
        return doctor(&config);
    }
    // One connection, no pool: a pool's background threads outlive a short command.
    let url = config.database()?;
    let mut conn = url
        .connect()
        .map_err(|e| CoreError::Unavailable(format!("cannot connect to {url}: {e}")))?;
    let conn = &mut conn;
    match cli.command {
        Command::Keygen | Command::Doctor => unreachable_command(),
        Command::Migrate { revert: false } => {
            let applied = run_migrations(conn)?;
            let text = if applied.is_empty() {
                "migrations are current".to_owned()
            } else {
                format!("applied {}", applied.join(", "))
            };
            Ok(Output::new(text, json!({ "applied": applied })))
        }
        Command::Migrate { revert: true } => {
            let reverted = revert_last_migration(conn)?;
            Ok(Output::new(
                format!("reverted {reverted}"),
                json!({ "reverted": reverted }),
            ))
        }
        Command::Account(AccountCommand::Create { name, plan }) => {
            let plan: Plan = plan.parse()?;
            let account = Account::create(conn, &name, plan)?;
            Ok(Output::new(
                format!(
                    "created account {} ({}, plan {})",
                    account.id, account.name, account.plan
                ),
                json!({ "id": account.id, "name": account.name, "plan": account.plan }),
            ))
        }
        Command::User(UserCommand::Create {
            account,
            email,
            name,
            admin,
        }) => {
            let role = if admin { "admin" } else { "member" };
            let user = User::create(
                conn,
                account,
                &NewUser {
                    email,
                    name,
                    role: Some(role.into()),
                },
            )?;
            Ok(Output::new(
                format!("created user {} ({}, {})", user.id, user.email, user.role),
                json!({ "id": user.id, "email": user.email, "role": user.role, "account_id": user.account_id }),
            ))
        }
        Command::Token(TokenCommand::Create { user, name }) => {
            let (token, secret) = ApiToken::create(conn, user, &name)?;
            // Printed once, on purpose: only its hash is stored.
            let secret = secret.expose_secret().to_owned();
            Ok(Output::new(
                secret.clone(),
                json!({ "token": secret, "id": token.id, "user_id": token.user_id }),
            ))
        }
        Command::Token(TokenCommand::Revoke { token }) => {
            let revoked = ApiToken::revoke(conn, &token)?;
            let text = if revoked {
                "token revoked"
            } else {
                "token was already revoked"
            };
            Ok(Output::new(text, json!({ "revoked": revoked })))
        }
        Command::Jobs(JobsCommand::List {
            status,
            job_type,
            limit,
        }) => {
            let jobs = storage::list(
                conn,
                status.as_deref(),
                job_type.as_deref(),
                limit.clamp(1, 10_000),
            )
            .map_err(CoreError::from)?;
            let mut text = format!(
                "{:>8}  {:<10} {:<28} {:>8}  {:<25} last error",
                "id", "status", "type", "attempts", "run at"
            );
            for job in &jobs {
                text.push_str(&format!(
                    "\n{:>8}  {:<10} {:<28} {:>4}/{:<3}  {:<25} {}",
                    job.id,
                    job.status,
                    job.job_type,
                    job.attempts,
                    job.max_attempts,
                    herald_core::time::to_rfc3339(&job.run_at),
                    job.last_error.as_deref().unwrap_or("")
                ));
            }
            if jobs.is_empty() {
                text = "no jobs".into();
            }
            Ok(Output::new(text, json!({ "jobs": jobs })))
        }
        Command::Jobs(JobsCommand::Retry { id }) => {
            let job = retry_job(conn, id)?;
            Ok(Output::new(
                format!("job {id} is queued to run now"),
                json!({ "job": job }),
            ))
        }
        Command::Mailbox(MailboxCommand::List) => {
            let mailboxes = herald_mailbox::Mailbox::list_all(conn).map_err(CoreError::from)?;
            let views: Vec<_> = mailboxes.iter().map(|m| m.view()).collect();
            let mut text = format!(
                "{:>6}  {:<32} {:<8} {:<12} {:<8} last error",
                "id", "address", "owner", "state", "sending"
            );
            for m in &views {
                text.push_str(&format!(
                    "\n{:>6}  {:<32} {:<8} {:<12} {:<8} {}",
                    m.id,
                    m.address,
                    m.owner_id,
                    m.state,
                    if m.sending_enabled { "yes" } else { "no" },
                    m.last_error.as_deref().unwrap_or("")
                ));
            }
            if views.is_empty() {
                text = "no mailboxes".into();
            }
            Ok(Output::new(text, json!({ "mailboxes": views })))
        }
        Command::Mailbox(MailboxCommand::Resync { id, history_days }) => {
            resync(&config, id, history_days, json)
        }
        Command::Mailbox(MailboxCommand::Test { id }) => {
            let mailbox = herald_mailbox::Mailbox::find_any(conn, id)?;
            let (key, _) =
                SecretKey::load_or_generate(config.secret_key.as_ref(), &config.data_dir)?;
            let imap = mailbox.imap_settings(&key)?;
            let smtp = mailbox.smtp_settings(&key)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (imap_result, smtp_result) = runtime.block_on(async {
                let imap_result = herald_mailbox::connect::check_imap(&imap).await;
                let smtp_result = match &smtp {
                    Some(smtp) => Some(herald_mailbox::connect::check_smtp(smtp).await),
                    None => None,
                };
                (imap_result, smtp_result)
            });
            let mut text = match &imap_result {
                Ok(r) => format!(
                    "imap ok: {}:{}\n  greeting: {}\n  capabilities: {}",
                    imap.host,
                    imap.port,
                    r.greeting,
                    r.capabilities.join(" ")
                ),
                Err(e) => format!("imap FAILED: {e}"),
            };
            match &smtp_result {
                Some(Ok(r)) => text.push_str(&format!(
                    "\nsmtp ok: {}\n  capabilities: {}",
                    smtp.as_ref()
                        .map(|s| format!("{}:{}", s.host, s.port))
                        .unwrap_or_default(),
                    r.capabilities.join(" ")
                )),
                Some(Err(e)) => text.push_str(&format!("\nsmtp FAILED: {e}")),
                None => text.push_str("\nsmtp: not configured"),
            }
            let report = json!({
                "imap": match &imap_result { Ok(r) => json!({"ok": true, "greeting": r.greeting, "capabilities": r.capabilities}), Err(e) => json!({"ok": false, "error": e.to_string()}) },
                "smtp": match &smtp_result { Some(Ok(r)) => json!({"ok": true, "capabilities": r.capabilities}), Some(Err(e)) => json!({"ok": false, "error": e.to_string()}), None => Value::Null },
            });
            let failed = imap_result.is_err() || matches!(smtp_result, Some(Err(_)));
            if failed {
                return Err(DoctorFailed {
                    summary: text,
                    report,
                }
                .into());
            }
            Ok(Output::new(text, report))
        }
        Command::Jobs(JobsCommand::Cancel { id }) => {
            let job = cancel_job(conn, id)?;
            Ok(Output::new(
                format!("job {id} cancelled"),
                json!({ "job": job }),
            ))
        }
    }
}

/// `herald mailbox resync`: forget the sync positions and run one pass with a progress bar.
fn resync(config: &Config, id: i64, history_days: i64, json: bool) -> anyhow::Result<Output> {
    use herald_mailbox::sync::{SyncOptions, sync_mailbox};
    if history_days < 1 {
        return Err(CoreError::invalid("history-days", "must be at least 1").into());
    }
    let db = herald_core::Db::open(&config.database()?, 2)?;
    let mailbox = herald_mailbox::Mailbox::find_any(&mut *db.get()?, id)?;
    let (key, _) = SecretKey::load_or_generate(config.secret_key.as_ref(), &config.data_dir)?;
    herald_mailbox::store::FolderState::reset(&mut *db.get()?, mailbox.id)
        .map_err(CoreError::from)?;
    let bar = if json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} messages")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let shown = bar.clone();
    let options = SyncOptions {
        history: Some(chrono::TimeDelta::days(history_days)),
        progress: Some(std::sync::Arc::new(
            move |p: &herald_mailbox::sync::Progress| {
                shown.set_message(p.folder.clone());
                shown.set_length(p.total as u64);
                shown.set_position(p.done as u64);
            },
        )),
        ..SyncOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = runtime.block_on(sync_mailbox(&db, &key, mailbox.id, &options));
    bar.finish_and_clear();
    let report = report.map_err(|e| anyhow::anyhow!("resync of mailbox {id} failed: {e}"))?;
    Ok(Output::new(
        format!(
            "mailbox {id} ({}): {} messages read, {} new, {} already stored",
            mailbox.address,
            report.fetched,
            report.new,
            report.known + report.seen
        ),
        json!({ "mailbox_id": id, "report": report }),
    ))
}

fn unreachable_command() -> anyhow::Result<Output> {
    anyhow::bail!("internal error: command handled earlier")
}

fn doctor(config: &Config) -> anyhow::Result<Output> {
    let mut checks = Vec::new();
    let mut failed = false;
    let mut check = |name: &str, result: Result<String, String>| {
        let (ok, detail) = match result {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        failed |= !ok;
        checks.push(json!({ "check": name, "ok": ok, "detail": detail }));
    };
    let url = config.database();
    check(
        "config",
        url.as_ref()
            .map(|u| format!("database {u}"))
            .map_err(|e| e.to_string()),
    );
    let key = match (&config.secret_key, url.as_ref().map(|u| u.backend())) {
        (Some(k), _) => SecretKey::from_base64(k.expose_secret())
            .map(|_| "secret key configured".to_owned())
            .map_err(|e| e.to_string()),
        (None, Ok(BackendKind::Postgres)) => {
            Err("HERALD_SECRET_KEY is not set; it is required with PostgreSQL".to_owned())
        }
        (None, _) => Ok(format!(
            "secret key kept in {}",
            config.data_dir.join("secret.key").display()
        )),
    };
    check("secret_key", key);
    if let Ok(url) = &url {
        match url.connect() {
            Ok(mut conn) => {
                check(
                    "database",
                    Ok(format!("{} reachable", url.backend().as_str())),
                );
                let migrations = migration_status(&mut conn)
                    .map_err(|e| e.to_string())
                    .and_then(|s| {
                        if s.pending.is_empty() {
                            Ok(format!("{} applied, none pending", s.applied.len()))
                        } else {
                            Err(format!(
                                "pending: {} (run `herald migrate`)",
                                s.pending.join(", ")
                            ))
                        }
                    });
                check("migrations", migrations);
            }
            Err(e) => check("database", Err(format!("cannot connect to {url}: {e}"))),
        }
    }
    let text = checks
        .iter()
        .map(|c| {
            format!(
                "{} {}: {}",
                if c["ok"] == true { "ok  " } else { "FAIL" },
                c["check"].as_str().unwrap_or(""),
                c["detail"].as_str().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let report = json!({ "ok": !failed, "checks": checks });
    if failed {
        return Err(DoctorFailed {
            summary: text,
            report,
        }
        .into());
    }
    Ok(Output::new(text, report))
}

/// Maps an error to a message and an exit code: 1 failure, 3 not found, 4 invalid input,
/// 5 conflict, 6 unavailable.
pub fn report(error: &anyhow::Error, json: bool) -> ExitCode {
    if let Some(doctor) = error.downcast_ref::<DoctorFailed>() {
        if json {
            println!("{}", doctor.report);
        } else {
            println!("{}", doctor.summary);
        }
        return ExitCode::from(1);
    }
    let core = error.downcast_ref::<CoreError>().or_else(|| {
        match error.downcast_ref::<SchedulerError>() {
            Some(SchedulerError::Core(c)) => Some(c),
            _ => None,
        }
    });
    let (code, exit) = match (core, error.downcast_ref::<SchedulerError>()) {
        (Some(CoreError::NotFound { .. }), _) | (_, Some(SchedulerError::NotFound(_))) => {
            ("not_found", 3)
        }
        (Some(CoreError::Invalid { .. }), _) => ("validation_failed", 4),
        (Some(CoreError::Config(_)), _) => ("config", 4),
        (Some(CoreError::Conflict { code, .. }), _) => (*code, 5),
        (_, Some(SchedulerError::InvalidState { .. })) => ("invalid_state", 5),
        (Some(CoreError::Unavailable(_)), _) => ("unavailable", 6),
        _ => ("error", 1),
    };
    let message = format!("{error:#}");
    if json {
        println!(
            "{}",
            json!({ "error": { "code": code, "message": message } })
        );
    } else {
        eprintln!("herald: {message}");
    }
    ExitCode::from(exit)
}
