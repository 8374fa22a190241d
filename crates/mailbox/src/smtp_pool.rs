//! SMTP sessions kept open between sends (E8 throughput).
//!
//! Opening a session costs a TCP (and often TLS) handshake, the greeting, EHLO and AUTH: several
//! round trips per message, more than the message itself. After a message is accepted its
//! session goes back to an idle list, keyed by the server and credentials, and the next send to
//! the same server starts with MAIL FROM. A session idle for [`IDLE_FOR`] or used for
//! [`MESSAGES_PER_SESSION`] messages is closed with QUIT (servers cap both).
//!
//! Sessions open at once to one server and login are capped (`mail.smtp_sessions_per_server`):
//! a send waits for a slot, then takes an idle session or opens one, and gives the slot back when
//! its session is idle again or closed. Servers limit a login's concurrent connections; the sends
//! waiting meanwhile have their database work done, so a few sessions carry many sends.
//!
//! A reused session may have been closed by the server meanwhile. Its MAIL FROM then fails before
//! anything of the message was sent, so that one failure is not the send's: the send continues
//! on a new session. Any failure after MAIL FROM is the send's, and the session is dropped.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use mail_send::SmtpClient;
use mail_send::smtp::message::Parameters;
use secrecy::ExposeSecret;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::client::TlsStream;

use crate::connect::{EHLO_NAME, Failure, Security, ServerSettings, smtp_builder};

/// How long an idle session is kept: long enough for the next batch of due sends, well under
/// the 300 s most servers allow.
pub const IDLE_FOR: Duration = Duration::from_secs(15);
/// Messages per session before it is closed (Exchange Online allows 30 per session by default,
/// others more; a server that allows fewer answers MAIL FROM with 4xx and a new session follows).
pub const MESSAGES_PER_SESSION: u32 = 30;

enum Client {
    Plain(SmtpClient<TcpStream>),
    Tls(Box<SmtpClient<TlsStream<TcpStream>>>),
}

struct Idle {
    client: Client,
    since: Instant,
    sent: u32,
}

/// Idle sessions by server and credentials; one per process, as sessions are per server.
static IDLE: LazyLock<Mutex<HashMap<u64, Vec<Idle>>>> = LazyLock::new(Default::default);

/// Session slots by server and credentials: the cap on sessions open at once.
static SLOTS: LazyLock<Mutex<HashMap<u64, Arc<Semaphore>>>> = LazyLock::new(Default::default);

/// The slots of a server and login, made with `sessions` the first time (the process's
/// `mail.smtp_sessions_per_server`, validated at least 1).
fn slots(key: u64, sessions: usize) -> Arc<Semaphore> {
    let mut slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    Arc::clone(
        slots
            .entry(key)
            .or_insert_with(|| Arc::new(Semaphore::new(sessions.max(1)))),
    )
}

/// Sessions are shared only between identical settings: a changed password or TLS choice gets
/// sessions of its own, and the old ones expire.
fn key(settings: &ServerSettings) -> u64 {
    let mut hasher = DefaultHasher::new();
    (
        &settings.host,
        settings.port,
        settings.security.as_str(),
        &settings.username,
        settings.password.expose_secret(),
        settings.verify_tls,
    )
        .hash(&mut hasher);
    hasher.finish()
}

/// A live idle session for the key, if any; expired ones are closed on the way.
fn take_idle(key: u64) -> Option<Idle> {
    let mut expired = Vec::new();
    let found = {
        let Ok(mut idle) = IDLE.lock() else {
            return None;
        };
        for sessions in idle.values_mut() {
            expired.extend(sessions.extract_if(.., |s| s.since.elapsed() >= IDLE_FOR));
        }
        idle.retain(|_, sessions| !sessions.is_empty());
        idle.get_mut(&key).and_then(Vec::pop)
    };
    for session in expired {
        session.client.quit_later();
    }
    found
}

fn put_idle(key: u64, client: Client, sent: u32) {
    if sent >= MESSAGES_PER_SESSION {
        return client.quit_later();
    }
    // No bound of its own: a session opens only when none is idle, so the idle ones never
    // outnumber the server's session slots.
    match IDLE.lock() {
        Ok(mut idle) => idle.entry(key).or_default().push(Idle {
            client,
            since: Instant::now(),
            sent,
        }),
        Err(_) => client.quit_later(),
    }
}

impl Client {
    async fn open(settings: &ServerSettings) -> Result<Client, mail_send::Error> {
        // EHLO and AUTH are ours: a relay that offers no AUTH (an internal MTA) is sent to
        // without.
        let builder = smtp_builder(settings)
            .map_err(|f| match f {
                Failure::Tls(_) => mail_send::Error::InvalidTLSName,
                _ => mail_send::Error::MissingCredentials,
            })?
            .say_ehlo(false);
        // No Nagle delay: mail-send writes the body and its final dot separately, and the
        // server's delayed ACK would hold each message about 40 ms.
        Ok(match settings.security {
            Security::None => {
                let mut client = builder.connect_plain().await?;
                let _ = client.stream.set_nodelay(true);
                hello(&mut client, settings).await?;
                Client::Plain(client)
            }
            Security::Tls | Security::Starttls => {
                let mut client = builder.connect().await?;
                let _ = client.stream.get_ref().0.set_nodelay(true);
                hello(&mut client, settings).await?;
                Client::Tls(Box::new(client))
            }
        })
    }

    async fn mail_from(&mut self, from: &str) -> Result<(), mail_send::Error> {
        let none = Parameters::default();
        match self {
            Client::Plain(c) => c.mail_from(from, &none).await,
            Client::Tls(c) => c.mail_from(from, &none).await,
        }
    }

    async fn rest(&mut self, recipients: &[String], raw: &[u8]) -> Result<(), mail_send::Error> {
        match self {
            Client::Plain(c) => rest(c, recipients, raw).await,
            Client::Tls(c) => rest(c.as_mut(), recipients, raw).await,
        }
    }

    /// QUIT without waiting for it: the session's work is done.
    fn quit_later(self) {
        match self {
            Client::Plain(c) => {
                tokio::spawn(async move {
                    let _ = c.quit().await;
                });
            }
            Client::Tls(c) => {
                tokio::spawn(async move {
                    let _ = c.quit().await;
                });
            }
        }
    }
}

async fn hello<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut SmtpClient<T>,
    settings: &ServerSettings,
) -> Result<(), mail_send::Error> {
    let capabilities = client.capabilities(EHLO_NAME, false).await?;
    if capabilities.auth_mechanisms != 0 {
        let credentials = mail_send::Credentials::new(
            settings.username.clone(),
            settings.password.expose_secret().to_owned(),
        );
        client.authenticate(&credentials, &capabilities).await?;
    }
    Ok(())
}

async fn rest<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut SmtpClient<T>,
    recipients: &[String],
    raw: &[u8],
) -> Result<(), mail_send::Error> {
    let none = Parameters::default();
    for rcpt in recipients {
        client.rcpt_to(rcpt, &none).await?;
    }
    client.data(raw).await.map(drop)
}

/// Sends one message once a session slot of the server is free (at most `sessions` open at
/// once, waiting at most `timeout` for one): MAIL FROM on an idle session when there is one that still answers, else on a new
/// session; then RCPT TO each, DATA, all within `timeout`. The session is kept for the next send
/// when the message was accepted.
pub(crate) async fn send(
    settings: &ServerSettings,
    sessions: usize,
    timeout: Duration,
    from: &str,
    recipients: &[String],
    raw: &[u8],
) -> Result<(), mail_send::Error> {
    let key = key(settings);
    // The slot is held until the session is idle again or gone. The wait for one is bounded
    // too: a server that holds its sessions that long is a temporary failure of this attempt.
    let _slot = tokio::time::timeout(timeout, slots(key, sessions).acquire_owned())
        .await
        .map_err(|_| mail_send::Error::Timeout)?
        .map_err(|_| mail_send::Error::Timeout)?;
    tokio::time::timeout(timeout, send_in_slot(key, settings, from, recipients, raw))
        .await
        .unwrap_or(Err(mail_send::Error::Timeout))
}

async fn send_in_slot(
    key: u64,
    settings: &ServerSettings,
    from: &str,
    recipients: &[String],
    raw: &[u8],
) -> Result<(), mail_send::Error> {
    let mut reused = None;
    while let Some(mut idle) = take_idle(key) {
        // A failure here is a session the server closed while idle: nothing was sent.
        if idle.client.mail_from(from).await.is_ok() {
            reused = Some((idle.client, idle.sent));
            break;
        }
        metrics::counter!("herald_smtp_sessions_total", "event" => "stale").increment(1);
    }
    let (mut client, sent) = match reused {
        Some(session) => {
            metrics::counter!("herald_smtp_sessions_total", "event" => "reused").increment(1);
            session
        }
        None => {
            let mut client = Client::open(settings).await?;
            metrics::counter!("herald_smtp_sessions_total", "event" => "opened").increment(1);
            client.mail_from(from).await?;
            (client, 0)
        }
    };
    client.rest(recipients, raw).await?;
    put_idle(key, client, sent + 1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn settings(password: &str) -> ServerSettings {
        ServerSettings {
            host: "smtp.example".into(),
            port: 587,
            security: Security::Starttls,
            username: "ann".into(),
            password: SecretString::from(password.to_owned()),
            verify_tls: true,
        }
    }

    #[test]
    fn sessions_are_shared_only_by_identical_settings() {
        assert_eq!(key(&settings("a")), key(&settings("a")));
        assert_ne!(key(&settings("a")), key(&settings("b")));
        let mut other_port = settings("a");
        other_port.port = 465;
        assert_ne!(key(&settings("a")), key(&other_port));
    }
}
