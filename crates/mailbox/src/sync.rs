//! One sync pass of a mailbox (E2, E4): the inbox, and the Sent folder when the mailbox syncs
//! sent mail. The first pass (or one after a UIDVALIDITY change) reads the history window; later
//! passes read from the stored UIDNEXT on. Each batch is stored with the folder's new position
//! in one transaction, so a pass cut short resumes where it stopped and stores nothing twice.

use chrono::TimeDelta;
use herald_core::crypto::SecretKey;
use herald_core::time::now;
use herald_core::{CoreError, Db};
use serde::Serialize;

use crate::connect::ConnectError;
use crate::imap::{Fetched, Session};
use crate::model::Mailbox;
use crate::parse::parse;
use crate::store::{FolderState, Incoming, Role, StoreError, Stored, store_batch, user_addresses};

/// Where a pass stands, for progress bars.
#[derive(Clone, Debug)]
pub struct Progress {
    pub folder: String,
    /// Messages stored (or recognised) so far in this folder.
    pub done: usize,
    /// Messages this pass will read in this folder.
    pub total: usize,
}

pub type ProgressFn = std::sync::Arc<dyn Fn(&Progress) + Send + Sync>;

#[derive(Clone)]
pub struct SyncOptions {
    /// How far back a first sync reads; `None` reads everything.
    pub history: Option<TimeDelta>,
    /// Messages fetched and stored per round trip.
    pub batch: usize,
    pub max_attachment_bytes: usize,
    /// The folder synced as the inbox.
    pub inbox: String,
    /// Called after each batch.
    pub progress: Option<ProgressFn>,
}

impl std::fmt::Debug for SyncOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncOptions")
            .field("history", &self.history)
            .field("batch", &self.batch)
            .field("max_attachment_bytes", &self.max_attachment_bytes)
            .field("inbox", &self.inbox)
            .finish_non_exhaustive()
    }
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            history: Some(TimeDelta::days(90)),
            batch: 100,
            max_attachment_bytes: 10 * 1024 * 1024,
            inbox: "INBOX".into(),
            progress: None,
        }
    }
}

/// What a pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    pub fetched: usize,
    /// New emails.
    pub new: usize,
    /// Messages already stored from elsewhere (another mailbox, folder, or UIDVALIDITY).
    pub known: usize,
    /// Copies stored before.
    pub seen: usize,
}

impl SyncReport {
    fn add(&mut self, outcomes: Vec<Stored>) {
        for outcome in outcomes {
            match outcome {
                Stored::New(_) => self.new += 1,
                Stored::Known(_) => self.known += 1,
                Stored::Seen(_) => self.seen += 1,
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<diesel::result::Error> for SyncError {
    fn from(e: diesel::result::Error) -> Self {
        SyncError::Core(e.into())
    }
}

/// Syncs `mailbox_id` once, over a connection of its own.
pub async fn sync_mailbox(
    db: &Db,
    key: &SecretKey,
    mailbox_id: i64,
    options: &SyncOptions,
) -> Result<SyncReport, SyncError> {
    let mailbox = db
        .run(move |conn| Mailbox::find_any(conn, mailbox_id))
        .await?;
    let mut session = Session::open(&mailbox.imap_settings(key)?).await?;
    let report = sync_pass(db, &mut session, &mailbox, options).await?;
    session.logout().await;
    Ok(report)
}

/// One pass over an open session (the worker keeps its session between passes and IDLEs on it).
pub async fn sync_pass(
    db: &Db,
    session: &mut Session,
    mailbox: &Mailbox,
    options: &SyncOptions,
) -> Result<SyncReport, SyncError> {
    let mut folders = vec![(Role::Inbox, options.inbox.clone())];
    if mailbox.sync == "received_and_sent"
        && let Some(sent) = session.sent_folder().await?
    {
        folders.push((Role::Sent, sent));
    }
    let account_id = mailbox.account_id;
    let addresses = db
        .run(move |conn| Ok::<_, CoreError>(user_addresses(conn, account_id)?))
        .await?;
    let mut report = SyncReport::default();
    for (role, folder) in folders {
        sync_folder(
            db,
            session,
            mailbox,
            role,
            &folder,
            &addresses,
            options,
            &mut report,
        )
        .await?;
    }
    let mailbox_id = mailbox.id;
    db.run(move |conn| {
        use crate::schema::mailboxes;
        use diesel::prelude::*;
        diesel::update(mailboxes::table.find(mailbox_id))
            .set((
                mailboxes::state.eq("synced"),
                mailboxes::last_synced_at.eq(Some(now())),
                mailboxes::last_error.eq(None::<String>),
            ))
            .execute(conn)
            .map_err(CoreError::from)
    })
    .await?;
    metrics::counter!("herald_mail_messages_stored_total").increment(report.new as u64);
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn sync_folder(
    db: &Db,
    session: &mut Session,
    mailbox: &Mailbox,
    role: Role,
    folder: &str,
    addresses: &[String],
    options: &SyncOptions,
    report: &mut SyncReport,
) -> Result<(), SyncError> {
    let status = session.select(folder).await?;
    let mailbox_id = mailbox.id;
    let state = db
        .run(move |conn| Ok::<_, CoreError>(FolderState::load(conn, mailbox_id, role)?))
        .await?;
    let uid_validity = i64::from(status.uid_validity);
    // Same folder and UIDVALIDITY: go on from the stored position. Otherwise read the history
    // window again; messages already stored are recognised and only gain a copy.
    let (from_uid, since) = match &state {
        Some(s) if s.uid_validity == uid_validity && s.folder == folder => {
            (u32::try_from(s.uid_next).unwrap_or(1), None)
        }
        _ => (1, options.history.map(|h| (now() - h).date())),
    };
    let uids = session.uids(from_uid, since).await?;
    let mut done = 0;
    let report_progress = |done: usize| {
        if let Some(progress) = &options.progress {
            progress(&Progress {
                folder: folder.to_owned(),
                done,
                total: uids.len(),
            });
        }
    };
    report_progress(0);
    let highest_modseq = status.highest_modseq.and_then(|m| i64::try_from(m).ok());
    let max_attachment = options.max_attachment_bytes;
    let store = |fetched: Vec<Fetched>, position: FolderState| {
        let (mailbox, addresses) = (mailbox.clone(), addresses.to_vec());
        db.run(move |conn| {
            let parsed: Vec<_> = fetched
                .iter()
                .map(|f| parse(&f.raw, max_attachment))
                .collect();
            let messages: Vec<Incoming> = fetched
                .iter()
                .zip(&parsed)
                .map(|(message, parsed)| Incoming {
                    uid: i64::from(message.uid),
                    raw: &message.raw,
                    parsed,
                })
                .collect();
            store_batch(conn, &mailbox, role, &position, &messages, &addresses)
                .map_err(SyncError::from)
        })
    };
    // A batch is parsed and stored while the next one is fetched, so the mail server and the
    // database work at the same time; batches still commit one after the other, in UID order.
    let mut previous = None;
    for chunk in uids.chunks(options.batch.max(1)) {
        let fetch = session.fetch(chunk);
        let fetched = match previous.take() {
            Some((storing, count)) => {
                let (fetched, outcomes) = tokio::join!(fetch, storing);
                report.add(outcomes?);
                done += count;
                report_progress(done);
                fetched?
            }
            None => fetch.await?,
        };
        report.fetched += fetched.len();
        let position = FolderState {
            folder: folder.to_owned(),
            uid_validity,
            uid_next: i64::from(chunk.last().copied().unwrap_or(from_uid)) + 1,
            highest_modseq,
        };
        previous = Some((store(fetched, position), chunk.len()));
    }
    if let Some((storing, count)) = previous {
        report.add(storing.await?);
        done += count;
        report_progress(done);
    }
    // Nothing (more) to fetch: remember where the folder stands.
    let caught_up = FolderState {
        folder: folder.to_owned(),
        uid_validity,
        uid_next: i64::from(status.uid_next)
            .max(uids.last().map(|u| i64::from(*u) + 1).unwrap_or(0)),
        highest_modseq,
    };
    db.run(move |conn| Ok::<_, CoreError>(caught_up.save(conn, mailbox_id, role)?))
        .await?;
    Ok(())
}
