//! Checking a mailbox's servers before it is saved (E1): an IMAP login, and when sending is
//! enabled an SMTP handshake with authentication. A failure says which side failed and why.
//!
//! Protocol code only: no storage. TLS uses the platform's trust store through rustls (the same
//! connector mail-send uses for SMTP), or accepts any certificate when the mailbox says so (a
//! self-hosted server with a self-signed certificate).

use std::fmt;
use std::time::Duration;

use async_imap::types::Capability;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

/// How a connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// TLS from the first byte (IMAPS 993, SMTPS 465).
    Tls,
    /// Plain connection upgraded with STARTTLS (IMAP 143, submission 587).
    Starttls,
    /// No encryption: only for servers on a trusted network.
    None,
}

impl Security {
    pub fn as_str(self) -> &'static str {
        match self {
            Security::Tls => "tls",
            Security::Starttls => "starttls",
            Security::None => "none",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "tls" => Some(Security::Tls),
            "starttls" => Some(Security::Starttls),
            "none" => Some(Security::None),
            _ => None,
        }
    }
}

/// One server of a mailbox, with its secret.
#[derive(Clone)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: String,
    pub password: SecretString,
    /// False accepts any certificate (self-signed servers); the owner chose it.
    pub verify_tls: bool,
}

impl fmt::Debug for ServerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("verify_tls", &self.verify_tls)
            .finish_non_exhaustive()
    }
}

/// Which server a failure came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Imap,
    Smtp,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Imap => "imap",
            Side::Smtp => "smtp",
        })
    }
}

/// Why a connection check failed, in the words a person needs to fix it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "reason", content = "detail")]
pub enum Failure {
    /// The host name does not resolve.
    Dns(String),
    /// Nothing accepts connections on that host and port.
    Refused(String),
    /// No answer in time.
    Timeout(String),
    /// The TLS handshake failed (certificate not trusted, wrong port for the security chosen…).
    Tls(String),
    /// The server refused the username or password.
    BadCredentials(String),
    /// The server answered something unexpected (or lacks STARTTLS, or an auth method we speak).
    Protocol(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Dns(d) => write!(f, "the host name does not resolve ({d})"),
            Failure::Refused(d) => write!(f, "the connection was refused ({d})"),
            Failure::Timeout(d) => write!(f, "no answer in time ({d})"),
            Failure::Tls(d) => write!(f, "the TLS handshake failed ({d})"),
            Failure::BadCredentials(d) => write!(f, "the username or password was refused ({d})"),
            Failure::Protocol(d) => write!(f, "unexpected answer from the server ({d})"),
        }
    }
}

/// A failed check: which side, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, utoipa::ToSchema)]
#[error("{side}: {failure}")]
pub struct ConnectError {
    pub side: Side,
    pub failure: Failure,
}

/// What an IMAP server said during a successful check.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ImapReport {
    pub greeting: String,
    pub capabilities: Vec<String>,
}

/// What an SMTP server said during a successful check.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SmtpReport {
    pub capabilities: Vec<String>,
}

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug> Stream for T {}

fn tls_connector(verify: bool) -> Result<TlsConnector, Failure> {
    mail_send::smtp::tls::build_tls_connector(!verify).map_err(Failure::Tls)
}

async fn tcp(host: &str, port: u16) -> Result<TcpStream, Failure> {
    let target = format!("{host}:{port}");
    let addrs: Vec<_> = tokio::net::lookup_host(&target)
        .await
        .map_err(|e| Failure::Dns(format!("{host}: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(Failure::Dns(format!("{host}: no address")));
    }
    let mut last = Failure::Refused(target.clone());
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = Failure::Refused(target.clone())
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                last = Failure::Timeout(format!("{target}: {e}"))
            }
            Err(e) => last = Failure::Refused(format!("{target}: {e}")),
        }
    }
    Err(last)
}

async fn tls<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    host: &str,
    verify: bool,
) -> Result<tokio_rustls::client::TlsStream<S>, Failure> {
    let name =
        ServerName::try_from(host.to_owned()).map_err(|e| Failure::Tls(format!("{host}: {e}")))?;
    tls_connector(verify)?
        .connect(name, stream)
        .await
        .map_err(|e| Failure::Tls(e.to_string()))
}

pub(crate) fn imap_failure(e: async_imap::error::Error) -> Failure {
    match e {
        async_imap::error::Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            Failure::Tls(e.to_string())
        }
        other => Failure::Protocol(other.to_string()),
    }
}

/// Logs in to the IMAP server and lists its capabilities.
pub async fn check_imap(settings: &ServerSettings) -> Result<ImapReport, ConnectError> {
    let side = Side::Imap;
    let timeout = format!(
        "{}:{} after {}s",
        settings.host,
        settings.port,
        CONNECT_TIMEOUT.as_secs()
    );
    tokio::time::timeout(CONNECT_TIMEOUT, imap_login(settings))
        .await
        .unwrap_or(Err(Failure::Timeout(timeout)))
        .map_err(|failure| ConnectError { side, failure })
}

/// A logged-in IMAP session over any of the three kinds of connection.
pub(crate) type ImapStream = async_imap::Session<Box<dyn Stream>>;

/// Connects and logs in; the greeting comes back with the session.
pub(crate) async fn imap_session(
    settings: &ServerSettings,
) -> Result<(ImapStream, String), Failure> {
    let stream = tcp(&settings.host, settings.port).await?;
    let stream: Box<dyn Stream> = match settings.security {
        Security::Tls => Box::new(tls(stream, &settings.host, settings.verify_tls).await?),
        Security::None | Security::Starttls => Box::new(stream),
    };
    let mut client = async_imap::Client::new(stream);
    let greeting = read_greeting(&mut client).await?;
    let client = if settings.security == Security::Starttls {
        client
            .run_command_and_check_ok("STARTTLS", None)
            .await
            .map_err(|e| Failure::Protocol(format!("STARTTLS refused: {e}")))?;
        let upgraded: Box<dyn Stream> =
            Box::new(tls(client.into_inner(), &settings.host, settings.verify_tls).await?);
        async_imap::Client::new(upgraded)
    } else {
        client
    };
    // After STARTTLS the server sends no new greeting: log in straight away.
    let session = client
        .login(&settings.username, settings.password.expose_secret())
        .await
        .map_err(|(e, _)| match e {
            async_imap::error::Error::No(message) => login_refused(message),
            other => imap_failure(other),
        })?;
    Ok((session, greeting))
}

/// A `NO` to LOGIN: bad credentials unless its response code says otherwise (RFC 5530).
fn login_refused(message: String) -> Failure {
    let upper = message.to_ascii_uppercase();
    if upper.contains("[PRIVACYREQUIRED]") || upper.contains("PLAINTEXT AUTHENTICATION DISALLOWED")
    {
        Failure::Tls(format!(
            "the server wants an encrypted connection; choose `tls` or `starttls` ({message})"
        ))
    } else if upper.contains("[UNAVAILABLE]")
        || upper.contains("[ALERT]")
        || upper.contains("[EXPIRED]")
    {
        Failure::Protocol(message)
    } else {
        Failure::BadCredentials(message)
    }
}

/// The server's capabilities as strings (`IMAP4rev1`, `AUTH=PLAIN`, `IDLE`, `CONDSTORE`…).
pub(crate) async fn imap_capabilities(session: &mut ImapStream) -> Result<Vec<String>, Failure> {
    Ok(session
        .capabilities()
        .await
        .map_err(imap_failure)?
        .iter()
        .map(|c| match c {
            Capability::Imap4rev1 => "IMAP4rev1".to_owned(),
            Capability::Auth(a) => format!("AUTH={a}"),
            Capability::Atom(a) => a.clone(),
        })
        .collect())
}

async fn imap_login(settings: &ServerSettings) -> Result<ImapReport, Failure> {
    let (mut session, greeting) = imap_session(settings).await?;
    let capabilities = imap_capabilities(&mut session).await?;
    let _ = session.logout().await;
    Ok(ImapReport {
        greeting,
        capabilities,
    })
}

async fn read_greeting(
    client: &mut async_imap::Client<Box<dyn Stream>>,
) -> Result<String, Failure> {
    match client.read_response().await {
        Ok(Some(response)) => Ok(format!("{:?}", response.parsed())),
        Ok(None) => Err(Failure::Protocol(
            "the server closed the connection before greeting".into(),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(Failure::Tls(e.to_string())),
        Err(e) => Err(Failure::Protocol(e.to_string())),
    }
}

pub(crate) fn smtp_failure(e: mail_send::Error) -> Failure {
    match e {
        mail_send::Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Failure::Refused(e.to_string())
        }
        mail_send::Error::Io(e) if e.to_string().contains("lookup") => Failure::Dns(e.to_string()),
        mail_send::Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            Failure::Tls(e.to_string())
        }
        mail_send::Error::Tls(e) => Failure::Tls(e.to_string()),
        mail_send::Error::InvalidTLSName => Failure::Tls("invalid TLS name".into()),
        mail_send::Error::AuthenticationFailed(reply) => {
            Failure::BadCredentials(format!("{} {}", reply.code(), reply.message()))
        }
        mail_send::Error::Timeout => {
            Failure::Timeout("the SMTP server did not answer in time".into())
        }
        mail_send::Error::MissingStartTls => {
            Failure::Protocol("the server does not offer STARTTLS; choose `tls` or `none`".into())
        }
        mail_send::Error::UnsupportedAuthMechanism => {
            Failure::Protocol("the server offers no authentication method Herald speaks".into())
        }
        other => Failure::Protocol(other.to_string()),
    }
}

/// How Herald introduces itself in EHLO, in the connection check and in sends.
pub(crate) const EHLO_NAME: &str = "herald.localhost";

/// A mail-send client builder for the server: TLS as the mailbox says, its credentials.
pub(crate) fn smtp_builder(
    settings: &ServerSettings,
) -> Result<mail_send::SmtpClientBuilder<String>, Failure> {
    // Built once per process: reading the system's trust store costs more than a send.
    static VERIFYING: std::sync::OnceLock<Result<tokio_rustls::TlsConnector, String>> =
        std::sync::OnceLock::new();
    static ANY_CERT: std::sync::OnceLock<Result<tokio_rustls::TlsConnector, String>> =
        std::sync::OnceLock::new();
    let connector = if settings.verify_tls {
        &VERIFYING
    } else {
        &ANY_CERT
    }
    .get_or_init(|| mail_send::smtp::tls::build_tls_connector(!settings.verify_tls))
    .clone()
    .map_err(Failure::Tls)?;
    let builder = mail_send::SmtpClientBuilder::new_with_tls_connector(
        settings.host.clone(),
        settings.port,
        connector,
    )
    .implicit_tls(settings.security == Security::Tls)
    .timeout(CONNECT_TIMEOUT)
    .credentials((
        settings.username.clone(),
        settings.password.expose_secret().to_owned(),
    ));
    Ok(builder)
}

/// Connects to the SMTP server, says EHLO (upgrading with STARTTLS when asked) and
/// authenticates.
pub async fn check_smtp(settings: &ServerSettings) -> Result<SmtpReport, ConnectError> {
    let side = Side::Smtp;
    let result = async {
        // DNS and refusals are told apart before mail-send's own connect.
        drop(tcp(&settings.host, settings.port).await?);
        let builder = smtp_builder(settings)?;
        match settings.security {
            Security::None => {
                let mut client = builder.connect_plain().await.map_err(smtp_failure)?;
                let ehlo = client
                    .capabilities(EHLO_NAME, false)
                    .await
                    .map_err(smtp_failure)?;
                let report = SmtpReport {
                    capabilities: capability_names(&ehlo),
                };
                let _ = client.quit().await;
                Ok(report)
            }
            Security::Tls | Security::Starttls => {
                let mut client = builder.connect().await.map_err(smtp_failure)?;
                let ehlo = client
                    .capabilities(EHLO_NAME, false)
                    .await
                    .map_err(smtp_failure)?;
                let report = SmtpReport {
                    capabilities: capability_names(&ehlo),
                };
                let _ = client.quit().await;
                Ok(report)
            }
        }
    };
    let timeout = format!(
        "{}:{} after {}s",
        settings.host,
        settings.port,
        CONNECT_TIMEOUT.as_secs()
    );
    tokio::time::timeout(CONNECT_TIMEOUT, result)
        .await
        .unwrap_or(Err(Failure::Timeout(timeout)))
        .map_err(|failure| ConnectError { side, failure })
}

fn capability_names(ehlo: &smtp_proto::EhloResponse<String>) -> Vec<String> {
    use smtp_proto::*;
    [
        (EXT_START_TLS, "STARTTLS"),
        (EXT_AUTH, "AUTH"),
        (EXT_PIPELINING, "PIPELINING"),
        (EXT_SIZE, "SIZE"),
        (EXT_8BIT_MIME, "8BITMIME"),
        (EXT_SMTP_UTF8, "SMTPUTF8"),
        (EXT_ENHANCED_STATUS_CODES, "ENHANCEDSTATUSCODES"),
        (EXT_CHUNKING, "CHUNKING"),
        (EXT_DSN, "DSN"),
    ]
    .into_iter()
    .filter(|(flag, _)| ehlo.has_capability(*flag))
    .map(|(_, name)| name.to_owned())
    .collect()
}
