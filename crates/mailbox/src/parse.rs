//! Parsing a raw message into what Herald stores (E5), with mail-parser: addresses, date,
//! Message-ID, In-Reply-To, References, subject, text and HTML bodies (charsets and encoded words
//! decoded) and attachments. A malformed message yields what could be read, with its problems
//! listed; parsing never fails.

use mail_parser::{Address, HeaderValue, MessageParser, MimeHeaders};
use serde::{Deserialize, Serialize};

/// A name and address from a header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Participant {
    pub name: Option<String>,
    pub address: String,
}

/// An attachment; its bytes are kept only under the size limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attachment {
    pub filename: Option<String>,
    pub content_type: String,
    pub size: usize,
    pub content_id: Option<String>,
    /// False when the attachment was larger than the limit and only its description was kept.
    pub stored: bool,
    #[serde(skip)]
    pub data: Option<Vec<u8>>,
}

/// What Herald keeps of a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParsedEmail {
    /// Without angle brackets.
    pub message_id: Option<String>,
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    pub subject: Option<String>,
    /// RFC 3339, UTC.
    pub date: Option<String>,
    pub from: Vec<Participant>,
    pub to: Vec<Participant>,
    pub cc: Vec<Participant>,
    pub reply_to: Vec<Participant>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub attachments: Vec<Attachment>,
    /// What was wrong with the message; empty for a well-formed one.
    pub problems: Vec<String>,
}

/// Longest body kept from a message that could not be parsed at all.
const UNPARSEABLE_TEXT_LIMIT: usize = 64 * 1024;

fn participants(address: Option<&Address<'_>>) -> Vec<Participant> {
    address
        .map(|a| {
            a.iter()
                .filter_map(|addr| {
                    let address = addr.address.as_deref()?.trim().to_owned();
                    if address.is_empty() {
                        return None;
                    }
                    Some(Participant {
                        name: addr
                            .name
                            .as_deref()
                            .map(str::trim)
                            .filter(|n| !n.is_empty())
                            .map(str::to_owned),
                        address,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    value
        .as_text_list()
        .map(|list| {
            list.iter()
                .map(|id| id.trim_matches(['<', '>', ' ']).to_owned())
                .filter(|id| !id.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Parses `raw`; attachments larger than `max_attachment_bytes` are described but not kept.
pub fn parse(raw: &[u8], max_attachment_bytes: usize) -> ParsedEmail {
    let Some(message) = MessageParser::default().parse(raw) else {
        let text =
            String::from_utf8_lossy(&raw[..raw.len().min(UNPARSEABLE_TEXT_LIMIT)]).into_owned();
        return ParsedEmail {
            message_id: None,
            in_reply_to: Vec::new(),
            references: Vec::new(),
            subject: None,
            date: None,
            from: Vec::new(),
            to: Vec::new(),
            cc: Vec::new(),
            reply_to: Vec::new(),
            text: Some(text).filter(|t| !t.trim().is_empty()),
            html: None,
            attachments: Vec::new(),
            problems: vec!["not a MIME message: kept as text".to_owned()],
        };
    };
    let mut problems = Vec::new();
    let from = participants(message.from());
    if from.is_empty() {
        problems.push("no sender address".to_owned());
    }
    let message_id = message
        .message_id()
        .map(|id| id.trim_matches(['<', '>', ' ']).to_owned())
        .filter(|id| !id.is_empty());
    if message_id.is_none() {
        problems.push("no Message-ID".to_owned());
    }
    let date = message.date().filter(|d| d.is_valid()).map(|d| {
        chrono::DateTime::from_timestamp(d.to_timestamp(), 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_else(|| d.to_rfc3339())
    });
    if date.is_none() {
        problems.push("no valid Date".to_owned());
    }
    // mail-parser offers a text rendering of an HTML-only message (kept: replies quote it) and an
    // HTML rendering of a text-only one (dropped: `html` is only what the sender wrote).
    let text = (message.text_body_count() > 0)
        .then(|| message.body_text(0))
        .flatten()
        .map(|t| t.into_owned());
    let html = message
        .html_part(0)
        .filter(|part| part.is_text_html())
        .and_then(|_| message.body_html(0))
        .map(|h| h.into_owned());
    let mut attachments: Vec<Attachment> = message
        .attachments()
        .map(|part| {
            let content_type = part
                .content_type()
                .map(|ct| match ct.subtype() {
                    Some(sub) => format!("{}/{}", ct.ctype(), sub),
                    None => ct.ctype().to_owned(),
                })
                .unwrap_or_else(|| "application/octet-stream".to_owned())
                .to_ascii_lowercase();
            let contents = part.contents();
            let stored = contents.len() <= max_attachment_bytes;
            Attachment {
                filename: part.attachment_name().map(str::to_owned),
                content_type,
                size: contents.len(),
                content_id: part
                    .content_id()
                    .map(|id| id.trim_matches(['<', '>']).to_owned()),
                stored,
                data: stored.then(|| contents.to_vec()),
            }
        })
        .collect();
    let mut text = text;
    // A broken structure can leave the only readable text as an unnamed text part.
    if text.is_none()
        && html.is_none()
        && let Some(i) = attachments.iter().position(|a| {
            a.filename.is_none() && a.content_type == "text/plain" && a.data.is_some()
        })
    {
        let part = attachments.remove(i);
        text = part.data.map(|d| String::from_utf8_lossy(&d).into_owned());
        problems.push("no readable body structure: text recovered from a part".to_owned());
    }
    ParsedEmail {
        message_id,
        in_reply_to: ids(message.in_reply_to()),
        references: ids(message.references()),
        subject: message.subject().map(|s| s.trim().to_owned()),
        date,
        from,
        to: participants(message.to()),
        cc: participants(message.cc()),
        reply_to: participants(message.reply_to()),
        text,
        html,
        attachments,
        problems,
    }
}
