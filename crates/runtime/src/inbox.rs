//! Messaging jobs.

use std::sync::OnceLock;
use std::time::Duration;

use herald_core::Config;
use herald_inbox::outbound::{Providers, SEND_MESSAGE_JOB, SendMessage, Sent, deliver, fail};
use herald_scheduler::{BackgroundJob, JobError};
use serde::{Deserialize, Serialize};

use crate::JobContext;

/// The providers' clients from `[providers]`, sharing one connection pool per process.
pub fn providers(config: &Config) -> Providers {
    static HTTP: OnceLock<reqwest::Client> = OnceLock::new();
    let timeout = Duration::from_secs(config.providers.timeout_secs.max(1));
    let http = HTTP
        .get_or_init(|| {
            reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .unwrap_or_default()
        })
        .clone();
    Providers {
        twilio: herald_providers::twilio::Client::new(
            &config.providers.twilio_base_url,
            http.clone(),
        ),
        messenger: herald_providers::messenger::Client::new(&config.providers.graph_base_url, http),
        public_url: config.public_url(),
    }
}

/// Sends a queued reply through its provider (M4); 429, 5xx and network errors come back with
/// the queue's backoff, and the last attempt marks the message `failed`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SendMessageJob(pub SendMessage);

impl BackgroundJob for SendMessageJob {
    const JOB_NAME: &'static str = SEND_MESSAGE_JOB;
    const QUEUE: &'static str = "messaging";
    const MAX_ATTEMPTS: i32 = 8;
    type Context = JobContext;

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let providers = providers(&ctx.config);
        match deliver(&ctx.db, &ctx.secret_key, &providers, self.0.message_id)
            .await
            .map_err(JobError::temporary)?
        {
            Sent::Sent | Sent::Skipped | Sent::Failed(_) => Ok(()),
            Sent::RetryLater(reason) => {
                // The queue buries the job after its last attempt: the message says why.
                fail_if_last(&ctx, self.0.message_id, &reason).await;
                Err(JobError::temporary(reason))
            }
        }
    }
}

/// Marks the message failed when this run was the job's last.
async fn fail_if_last(ctx: &JobContext, message_id: i64, reason: &str) {
    let payload = serde_json::to_string(&SendMessage { message_id }).unwrap_or_default();
    let last = ctx
        .db
        .run(move |conn| {
            use diesel::prelude::*;
            use herald_core::schema::jobs;
            Ok::<_, herald_core::CoreError>(
                jobs::table
                    .filter(jobs::job_type.eq(SEND_MESSAGE_JOB))
                    .filter(jobs::payload.eq(payload))
                    .filter(jobs::status.eq("running"))
                    .select(jobs::attempts.ge(jobs::max_attempts))
                    .first::<bool>(conn)
                    .optional()?
                    .unwrap_or(false),
            )
        })
        .await
        .unwrap_or(false);
    if last {
        let _ = fail(
            &ctx.db,
            message_id,
            format!(
                "gave up after {} attempts: {reason}",
                SendMessageJob::MAX_ATTEMPTS
            ),
        )
        .await;
    }
}
