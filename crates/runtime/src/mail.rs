//! Mail jobs.

use std::time::Duration;

use herald_core::config::MailConfig;
use herald_mailbox::deliver::{DeliverSettings, Delivered, append_sent_copy, deliver};
use herald_mailbox::worker::{SyncerSettings, mark_sync_requested, sync_one};
use herald_scheduler::{BackgroundJob, JobError};
use serde::{Deserialize, Serialize};

use crate::JobContext;

/// The mailbox syncer's settings from `[mail]`.
pub fn syncer_settings(mail: &MailConfig) -> SyncerSettings {
    SyncerSettings {
        interval: Duration::from_secs(mail.sync_interval_secs.max(5)),
        lease: Duration::from_secs(mail.lease_secs.max(15)),
        max_backoff: Duration::from_secs(mail.max_backoff_secs.max(5)),
        idle: mail.idle,
        options: herald_mailbox::sync::SyncOptions {
            history: Some(herald_core::time::TimeDelta::days(mail.history_days.max(1))),
            max_attachment_bytes: mail.max_attachment_bytes,
            ..herald_mailbox::sync::SyncOptions::default()
        },
        ..SyncerSettings::default()
    }
}

/// `POST /api/v1/mailboxes/{id}/sync`: a sync pass of a mailbox now. The worker watching it
/// runs the pass; when none does, this job runs it.
#[derive(Debug, Serialize, Deserialize)]
pub struct SyncMailboxNow {
    pub mailbox_id: i64,
}

impl BackgroundJob for SyncMailboxNow {
    const JOB_NAME: &'static str = herald_mailbox::worker::SYNC_NOW_JOB;
    const QUEUE: &'static str = "mail";
    const MAX_ATTEMPTS: i32 = 3;
    type Context = JobContext;

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let settings = syncer_settings(&ctx.config.mail);
        let id = self.mailbox_id;
        ctx.db
            .run(move |conn| mark_sync_requested(conn, id).map_err(herald_core::CoreError::from))
            .await
            .map_err(JobError::temporary)?;
        let worker = format!("job-{}", std::process::id());
        // Skipped when a worker watches the mailbox: it sees the request within a tick. A failed
        // pass is recorded on the mailbox (state, last_error); the job itself is done.
        sync_one(
            &ctx.db,
            &ctx.secret_key,
            &worker,
            self.mailbox_id,
            &settings,
        )
        .await
        .map(|_| ())
        .map_err(JobError::temporary)
    }
}

/// Sends an email composed in Herald (E8): one attempt per run; a temporary failure comes back
/// after the email's own backoff, a permanent one (or the last attempt) marks it `failed`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SendEmailJob(pub herald_mailbox::outbox::SendEmail);

impl BackgroundJob for SendEmailJob {
    const JOB_NAME: &'static str = herald_mailbox::outbox::SEND_JOB;
    const QUEUE: &'static str = "mail";
    const MAX_ATTEMPTS: i32 = 25;
    type Context = JobContext;

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let mail = &ctx.config.mail;
        let settings = DeliverSettings {
            max_attempts: mail.send_attempts.max(1),
            retry_base: Duration::from_secs(mail.send_retry_secs.max(1)),
            sessions_per_server: mail.smtp_sessions_per_server,
            ..DeliverSettings::default()
        };
        match deliver(&ctx.sends, &ctx.secret_key, &self.0, &settings)
            .await
            .map_err(JobError::temporary)?
        {
            Delivered::Sent | Delivered::Skipped | Delivered::Failed(_) => Ok(()),
            Delivered::RetryLater { reason, after } => Err(JobError::Temporary {
                message: reason,
                retry_after: Some(after),
            }),
        }
    }
}

/// Saves a sent email in its mailbox's Sent folder.
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AppendSentCopyJob(pub herald_mailbox::deliver::AppendSentCopy);

impl BackgroundJob for AppendSentCopyJob {
    const JOB_NAME: &'static str = herald_mailbox::deliver::APPEND_SENT_JOB;
    const QUEUE: &'static str = "mail";
    const MAX_ATTEMPTS: i32 = 5;
    type Context = JobContext;

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        append_sent_copy(&ctx.db, &ctx.secret_key, self.0.email_id)
            .await
            .map_err(JobError::temporary)
    }
}
