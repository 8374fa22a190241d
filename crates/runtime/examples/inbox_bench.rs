//! Helpers for the messaging benchmarks (`scripts/bench-inbox.sh`, docs/benchmarks.md).
//!
//! `sign` writes Twilio WhatsApp webhook requests, one a line (`X-Twilio-Signature`, a tab, the
//! form body), signed with `herald_providers::twilio::signature` (the function Herald's check
//! uses), for `bench/wrk/twilio.lua` to post: every request has its own `MessageSid`, from one of
//! `--contacts` contacts picked at random, so some contacts start conversations and most add to
//! theirs. Request `i` goes to file `OUT.(i mod threads)` (one per wrk thread); `OUT.check` holds
//! one more request, with a `MessageSid` of its own, to try the signature before the load.
//!
//! ```text
//! cargo run --release -p herald-runtime --example inbox_bench -- sign \
//!     --url http://127.0.0.1:8080/webhooks/twilio/1 --auth-token secret \
//!     --account-sid AC0123456789abcdef0123456789abcdef --requests 300000 --contacts 5000 \
//!     --threads 2 --tag 1 --out /tmp/bodies
//! ```
//!
//! `seed` fills an account's inbox straight into the database, in multi-row inserts of 1,000 rows
//! and transactions of 50,000, with the encodings diesel gives Herald's own writes:
//! `--conversations` conversations on `--channel` (20 % closed; of the open ones 30 %
//! unassigned, the rest assigned in turn to `--users`), their last activity spread over 90
//! days, and `--messages` messages shared between them (inbound and outbound in turn, the last
//! one at the conversation's `last_message_at`). It assumes nothing else in the inbox tables
//! (ids are given, then the PostgreSQL sequences are moved past them) and prints one JSON line
//! with the time taken and each view's size.
//!
//! ```text
//! cargo run --release -p herald-runtime --example inbox_bench -- seed \
//!     --database-url postgres://postgres@127.0.0.1:5432/herald_bench_inbox \
//!     --account 1 --channel 1 --users 1,2,3,4,5 --conversations 100000 --messages 1000000
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::time::Instant;

use chrono::{Duration, NaiveDateTime};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use herald_core::{DatabaseUrl, Db, DbConnection};
use herald_inbox::schema::{conversations, messages};
use serde_json::json;

/// `--name value` flags: not worth a dependency.
fn flags(args: &[String]) -> HashMap<String, String> {
    let mut map = HashMap::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let name = flag
            .strip_prefix("--")
            .unwrap_or_else(|| panic!("unexpected argument {flag}"));
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        map.insert(name.to_owned(), value.clone());
    }
    map
}

fn get<'a>(flags: &'a HashMap<String, String>, name: &str) -> &'a str {
    flags
        .get(name)
        .unwrap_or_else(|| panic!("--{name} is required"))
}

fn num(flags: &HashMap<String, String>, name: &str, default: u64) -> u64 {
    flags.get(name).map_or(default, |v| {
        v.replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("--{name}"))
    })
}

/// splitmix64: a deterministic spread, so runs are comparable.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

const TEXTS: [&str; 8] = [
    "Hi! Is the blue one still available?",
    "Thanks, I got the invoice. Can you resend it with our VAT number on it please?",
    "ok",
    "Could we move tomorrow's call to 3pm? Something came up in the morning and I won't be at my desk before lunch.",
    "Where is my order? It said it would arrive on Monday and I still have nothing, the tracking link does not work either.",
    "👍 perfect, see you then",
    "Hello, I'd like to know more about the automation plan: how many mailboxes per user, and can I connect Outlook and Gmail at the same time? We are a team of 12.",
    "Can you call me back?",
];

fn contact(n: u64) -> String {
    format!("whatsapp:+1555{n:07}")
}

/// A Twilio WhatsApp inbound-message webhook's fields, as Twilio sends them.
fn twilio_form(account_sid: &str, to: &str, sid: &str, n: u64, i: u64) -> Vec<(String, String)> {
    let text = format!("{} (#{i})", TEXTS[(mix(i ^ 0x5eed) % 8) as usize]);
    let wa_id = format!("1555{n:07}");
    [
        ("SmsMessageSid", sid),
        ("NumMedia", "0"),
        ("ProfileName", &format!("Contact {n}")),
        ("MessageType", "text"),
        ("SmsSid", sid),
        ("WaId", &wa_id),
        ("SmsStatus", "received"),
        ("Body", &text),
        ("To", to),
        ("NumSegments", "1"),
        ("ReferralNumMedia", "0"),
        ("MessageSid", sid),
        ("AccountSid", account_sid),
        ("From", &contact(n)),
        ("ApiVersion", "2010-04-01"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

fn sign(flags: &HashMap<String, String>) {
    let url = get(flags, "url");
    let token = get(flags, "auth-token");
    let account_sid = get(flags, "account-sid");
    let to = flags
        .get("to")
        .map_or("whatsapp:+14155238886", String::as_str);
    let requests = num(flags, "requests", 100_000);
    let contacts = num(flags, "contacts", 5_000);
    let threads = num(flags, "threads", 2);
    let tag = num(flags, "tag", 1);
    let out = get(flags, "out");
    let line = |i: u64| {
        let sid = format!("SM{tag:08x}{i:024x}");
        let form = twilio_form(account_sid, to, &sid, mix(i) % contacts, i);
        let signature = herald_providers::twilio::signature(token, url, &form);
        let body = serde_urlencoded::to_string(&form).unwrap();
        format!("{signature}\t{body}\n")
    };
    let mut files: Vec<BufWriter<std::fs::File>> = (0..threads)
        .map(|t| BufWriter::new(std::fs::File::create(format!("{out}.{t}")).unwrap()))
        .collect();
    let mut bytes = 0;
    for i in 0..requests {
        let line = line(i);
        bytes += line.len();
        files[(i % threads) as usize]
            .write_all(line.as_bytes())
            .unwrap();
    }
    for mut file in files {
        file.flush().unwrap();
    }
    // One more, beyond the others' ids: the signature check before the load.
    std::fs::write(format!("{out}.check"), line(u64::MAX >> 1)).unwrap();
    println!(
        "{}",
        json!({"requests": requests, "contacts": contacts, "threads": threads,
               "avg_line_bytes": bytes / requests.max(1) as usize})
    );
}

#[derive(Insertable)]
#[diesel(table_name = conversations)]
struct NewConversation {
    id: i64,
    account_id: i64,
    channel_id: i64,
    contact_id: String,
    contact_name: Option<String>,
    status: &'static str,
    assignee_id: Option<i64>,
    last_message_at: NaiveDateTime,
    last_inbound_at: Option<NaiveDateTime>,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

#[derive(Insertable)]
#[diesel(table_name = messages)]
struct NewMessage {
    id: i64,
    conversation_id: i64,
    direction: &'static str,
    provider_message_id: Option<String>,
    body: Option<String>,
    media: &'static str,
    status: &'static str,
    author_id: Option<i64>,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

const ROWS_PER_INSERT: usize = 1_000;
const ROWS_PER_TRANSACTION: usize = 50_000;

/// Multi-row inserts (backend arms: multi-row VALUES is not in the multi-backend's common SQL).
macro_rules! insert_all {
    ($conn:expr, $table:expr, $rows:expr) => {{
        let rows = $rows;
        for transaction in rows.chunks(ROWS_PER_TRANSACTION) {
            $conn
                .write(|conn| {
                    for chunk in transaction.chunks(ROWS_PER_INSERT) {
                        let insert = diesel::insert_into($table).values(chunk);
                        match conn {
                            DbConnection::Postgres(c) => insert.execute(c)?,
                            DbConnection::Sqlite(c) => insert.execute(c)?,
                        };
                    }
                    Ok::<_, diesel::result::Error>(())
                })
                .unwrap();
        }
    }};
}

fn seed(flags: &HashMap<String, String>) {
    let url = DatabaseUrl::parse(get(flags, "database-url")).unwrap();
    let db = Db::open(&url, 1).unwrap();
    let mut conn = db.get().unwrap();
    let account = num(flags, "account", 1) as i64;
    let channel = num(flags, "channel", 1) as i64;
    let users: Vec<i64> = get(flags, "users")
        .split(',')
        .map(|u| u.trim().parse().expect("--users"))
        .collect();
    let n_conversations = num(flags, "conversations", 100_000);
    let n_messages = num(flags, "messages", 1_000_000);
    let started = Instant::now();

    let now = herald_core::time::now();
    let window = 90 * 24 * 3600;
    let mut convs = Vec::with_capacity(n_conversations as usize);
    let mut msgs = Vec::with_capacity(n_messages as usize);
    let mut next_message = 1i64;
    let mut assigned = 0usize;
    for c in 0..n_conversations {
        let id = c as i64 + 1;
        let r = mix(c);
        let last = now - Duration::seconds((r % window) as i64);
        let closed = mix(r) % 100 < 20;
        let assignee = if closed || mix(r ^ 1) % 100 < 30 {
            None
        } else {
            assigned += 1;
            Some(users[assigned % users.len()])
        };
        // Closed conversations keep whoever had them.
        let assignee = if closed && mix(r ^ 2).is_multiple_of(2) {
            Some(users[c as usize % users.len()])
        } else {
            assignee
        };
        let count = n_messages / n_conversations + u64::from(c < n_messages % n_conversations);
        // The messages arrive 1 to 60 minutes apart, the last one at `last`.
        let gaps: Vec<i64> = (0..count)
            .map(|k| 60 + (mix(r ^ k) % 3540) as i64)
            .collect();
        let span: i64 = gaps.iter().skip(1).sum();
        let mut at = last - Duration::seconds(span);
        let created = at;
        let mut last_inbound = None;
        for k in 0..count {
            if k > 0 {
                at += Duration::seconds(gaps[k as usize]);
            }
            let inbound = k.is_multiple_of(2) || k + 1 == count;
            if inbound {
                last_inbound = Some(at);
            }
            let text = TEXTS[(mix(r ^ (k << 8)) % 8) as usize];
            msgs.push(NewMessage {
                id: next_message,
                conversation_id: id,
                direction: if inbound { "inbound" } else { "outbound" },
                provider_message_id: Some(format!("SM{:032x}", next_message)),
                body: Some(text.to_owned()),
                media: "[]",
                status: if inbound { "received" } else { "read" },
                author_id: if inbound {
                    None
                } else {
                    Some(assignee.unwrap_or(users[0]))
                },
                created_at: at,
                updated_at: at,
            });
            next_message += 1;
        }
        convs.push(NewConversation {
            id,
            account_id: account,
            channel_id: channel,
            contact_id: contact(c),
            contact_name: Some(format!("Contact {c}")),
            status: if closed { "closed" } else { "open" },
            assignee_id: assignee,
            last_message_at: last,
            last_inbound_at: last_inbound,
            created_at: created,
            updated_at: last,
        });
    }
    let generated = started.elapsed().as_secs_f64();

    let t = Instant::now();
    insert_all!(conn, conversations::table, &convs);
    let conversations_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    insert_all!(conn, messages::table, &msgs);
    let messages_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    if let DbConnection::Postgres(c) = &mut *conn {
        // Backend arm: explicit ids leave the identity sequences behind (SQLite's AUTOINCREMENT
        // follows the largest id by itself); the vacuum and the statistics are what autovacuum
        // gives a table soon after a load.
        for statement in [
            "SELECT setval(pg_get_serial_sequence('conversations', 'id'), (SELECT max(id) FROM conversations))",
            "SELECT setval(pg_get_serial_sequence('messages', 'id'), (SELECT max(id) FROM messages))",
            // One at a time: VACUUM cannot run inside the implicit transaction of a batch.
            "VACUUM ANALYZE conversations",
            "VACUUM ANALYZE messages",
        ] {
            c.batch_execute(statement).unwrap();
        }
    }
    let analyze_secs = t.elapsed().as_secs_f64();

    let by_status: Vec<(String, Option<i64>, i64)> = conversations::table
        .filter(conversations::account_id.eq(account))
        .group_by((conversations::status, conversations::assignee_id))
        .select((
            conversations::status,
            conversations::assignee_id,
            diesel::dsl::count_star(),
        ))
        .load(&mut *conn)
        .unwrap();
    let views: Vec<_> = by_status
        .iter()
        .map(|(s, a, n)| json!({"status": s, "assignee_id": a, "conversations": n}))
        .collect();
    println!(
        "{}",
        json!({
            "backend": format!("{:?}", db.backend()),
            "conversations": convs.len(),
            "messages": msgs.len(),
            "generate_secs": generated,
            "insert_conversations_secs": conversations_secs,
            "insert_messages_secs": messages_secs,
            "vacuum_analyze_secs": analyze_secs,
            "by_status_and_assignee": views,
        })
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((mode, rest)) = args.split_first() else {
        panic!("usage: inbox_bench sign|seed --flag value…");
    };
    let flags = flags(rest);
    match mode.as_str() {
        "sign" => sign(&flags),
        "seed" => seed(&flags),
        other => panic!("unknown mode {other}: sign or seed"),
    }
}
