//! What every handler can reach.

use std::sync::Arc;

use herald_core::crypto::SecretKey;
use herald_core::timeline::Timeline;
use herald_core::{Config, Db};
use herald_scheduler::QueueWaker;
use metrics_exporter_prometheus::PrometheusHandle;

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    /// Seals and opens stored secrets (mailbox passwords, provider tokens).
    pub secret_key: SecretKey,
    /// Wakes this process's workers after an enqueue.
    pub waker: QueueWaker,
    pub timeline: Timeline,
    /// Renders templates within the sandbox limits.
    pub templates: herald_templates::Engine,
    pub metrics: PrometheusHandle,
    /// The webhooks' channel cache and message batcher.
    pub intake: herald_inbox::inbound::Intake,
}
