//! Mail jobs.

use herald_mailbox::worker::{SyncerSettings, sync_one};
use herald_scheduler::{BackgroundJob, JobError};
use serde::{Deserialize, Serialize};

use crate::JobContext;

/// `POST /api/v1/mailboxes/{id}/sync`: one sync pass of a mailbox, as soon as a worker is free.
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
        let mail = &ctx.config.mail;
        let settings = SyncerSettings {
            options: herald_mailbox::sync::SyncOptions {
                history: Some(herald_core::time::TimeDelta::days(mail.history_days.max(1))),
                max_attachment_bytes: mail.max_attachment_bytes,
                ..herald_mailbox::sync::SyncOptions::default()
            },
            ..SyncerSettings::default()
        };
        let worker = format!("job-{}", std::process::id());
        // A failed pass is recorded on the mailbox (state, last_error); the job itself is done.
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
