//! The IMAP operations sync needs, over one logged-in session: find the inbox and the Sent
//! folder (E2), select with CONDSTORE where offered, fetch messages by UID, append. Protocol only;
//! what to fetch and where it goes is the sync engine's business.

use async_imap::extensions::idle::IdleResponse;
use async_imap::types::NameAttribute;
use futures::TryStreamExt;

use crate::connect::{
    ConnectError, Failure, ServerSettings, Side, imap_capabilities, imap_failure, imap_session,
};

/// Usual names of the Sent folder, for servers without the `\Sent` special-use flag.
const SENT_NAMES: &[&str] = &[
    "Sent",
    "Sent Items",
    "Sent Messages",
    "Sent Mail",
    "INBOX.Sent",
    "[Gmail]/Sent Mail",
    "Gesendet",
    "Envoyés",
];

/// A folder's state as SELECT reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FolderStatus {
    pub uid_validity: u32,
    pub uid_next: u32,
    pub exists: u32,
    /// With CONDSTORE.
    pub highest_modseq: Option<u64>,
}

/// A message as fetched.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub uid: u32,
    pub raw: Vec<u8>,
}

pub struct Session {
    inner: crate::connect::ImapStream,
    capabilities: Vec<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("capabilities", &self.capabilities)
            .finish_non_exhaustive()
    }
}

fn failure(e: async_imap::error::Error) -> ConnectError {
    ConnectError {
        side: Side::Imap,
        failure: imap_failure(e),
    }
}

impl Session {
    pub async fn open(settings: &ServerSettings) -> Result<Session, ConnectError> {
        let side = Side::Imap;
        let (mut inner, _) = imap_session(settings)
            .await
            .map_err(|failure| ConnectError { side, failure })?;
        let capabilities = imap_capabilities(&mut inner)
            .await
            .map_err(|failure| ConnectError { side, failure })?;
        Ok(Session {
            inner,
            capabilities,
        })
    }

    pub fn has(&self, capability: &str) -> bool {
        self.capabilities
            .iter()
            .any(|c| c.eq_ignore_ascii_case(capability))
    }

    /// The Sent folder: the one flagged `\Sent`, else one with a usual name.
    pub async fn sent_folder(&mut self) -> Result<Option<String>, ConnectError> {
        let names: Vec<(String, bool)> = self
            .inner
            .list(Some(""), Some("*"))
            .await
            .map_err(failure)?
            .map_ok(|name| {
                let sent = name
                    .attributes()
                    .iter()
                    .any(|a| matches!(a, NameAttribute::Sent));
                (name.name().to_owned(), sent)
            })
            .try_collect()
            .await
            .map_err(failure)?;
        if let Some((name, _)) = names.iter().find(|(_, sent)| *sent) {
            return Ok(Some(name.clone()));
        }
        Ok(SENT_NAMES.iter().find_map(|usual| {
            names
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(usual))
                .map(|(n, _)| n.clone())
        }))
    }

    /// Selects `folder` (read-only would lose nothing, but SELECT lets flags change later).
    pub async fn select(&mut self, folder: &str) -> Result<FolderStatus, ConnectError> {
        let mailbox = if self.has("CONDSTORE") {
            self.inner.select_condstore(folder).await
        } else {
            self.inner.select(folder).await
        }
        .map_err(failure)?;
        let missing = |what: &str| ConnectError {
            side: Side::Imap,
            failure: Failure::Protocol(format!("the server did not report {what} for {folder}")),
        };
        Ok(FolderStatus {
            uid_validity: mailbox.uid_validity.ok_or_else(|| missing("UIDVALIDITY"))?,
            uid_next: mailbox.uid_next.ok_or_else(|| missing("UIDNEXT"))?,
            exists: mailbox.exists,
            highest_modseq: mailbox.highest_modseq,
        })
    }

    /// UIDs in the selected folder from `from_uid` on, received on or after `since` (the
    /// history window) when given.
    pub async fn uids(
        &mut self,
        from_uid: u32,
        since: Option<chrono::NaiveDate>,
    ) -> Result<Vec<u32>, ConnectError> {
        let mut query = format!("UID {}:*", from_uid.max(1));
        if let Some(date) = since {
            query.push_str(&format!(" SINCE {}", date.format("%-d-%b-%Y")));
        }
        let mut uids: Vec<u32> = self
            .inner
            .uid_search(query)
            .await
            .map_err(failure)?
            .into_iter()
            .filter(|uid| *uid >= from_uid)
            .collect();
        uids.sort_unstable();
        Ok(uids)
    }

    /// Fetches whole messages by UID, without setting `\Seen`.
    pub async fn fetch(&mut self, uids: &[u32]) -> Result<Vec<Fetched>, ConnectError> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let set = uids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut fetched: Vec<Fetched> = self
            .inner
            .uid_fetch(set, "(UID BODY.PEEK[])")
            .await
            .map_err(failure)?
            .try_filter_map(|fetch| async move {
                Ok(match (fetch.uid, fetch.body()) {
                    (Some(uid), Some(body)) => Some(Fetched {
                        uid,
                        raw: body.to_vec(),
                    }),
                    _ => None,
                })
            })
            .try_collect()
            .await
            .map_err(failure)?;
        fetched.sort_by_key(|f| f.uid);
        Ok(fetched)
    }

    /// Appends a message to `folder` with the given flags (e.g. `(\Seen)` for a sent copy).
    pub async fn append(
        &mut self,
        folder: &str,
        flags: Option<&str>,
        raw: &[u8],
    ) -> Result<(), ConnectError> {
        self.inner
            .append(folder, flags, None, raw)
            .await
            .map_err(failure)
    }

    pub async fn create(&mut self, folder: &str) -> Result<(), ConnectError> {
        self.inner.create(folder).await.map_err(failure)
    }

    pub async fn delete(&mut self, folder: &str) -> Result<(), ConnectError> {
        self.inner.delete(folder).await.map_err(failure)
    }

    /// Waits in IDLE on the selected folder until the server reports a change (`true`), `timeout`
    /// passes or `stop` completes (`false`). The session comes back ready for more commands.
    pub async fn idle(
        self,
        timeout: std::time::Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(Session, bool), ConnectError> {
        let capabilities = self.capabilities;
        let mut handle = self.inner.idle();
        handle.init().await.map_err(failure)?;
        let (wait, interrupt) = handle.wait_with_timeout(timeout);
        let changed = tokio::select! {
            response = wait => matches!(response.map_err(failure)?, IdleResponse::NewData(_)),
            () = stop => false,
        };
        drop(interrupt);
        let inner = handle.done().await.map_err(failure)?;
        // EXISTS/EXPUNGE reports collect here; the next pass asks for what it needs.
        while inner.unsolicited_responses.try_recv().is_ok() {}
        Ok((
            Session {
                inner,
                capabilities,
            },
            changed,
        ))
    }

    pub async fn logout(mut self) {
        let _ = self.inner.logout().await;
    }
}
