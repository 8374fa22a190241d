//! Replies through the providers' APIs, against a local server that plays Twilio and the Graph
//! API the way they check requests (basic auth, access token, required fields) and answer (their
//! success and error shapes); status callbacks and Messenger events moving messages on; the
//! WhatsApp window; deletion. On both backends, through the real router and job runner.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::{Json, Router, routing::post};
use herald_core::crypto::SecretKey;
use herald_core::domain::Plan;
use herald_core::identity::{Account, ApiToken, NewUser, User};
use herald_runtime::{JobContext, job_runner};
use herald_scheduler::QueueWaker;
use herald_testdb::{TestDb, backend_tests};
use serde_json::{Value, json};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "twilio-auth-token";
const PAGE_TOKEN: &str = "EAAB-page-token";
const PUBLIC: &str = "http://127.0.0.1:8080";

/// What the fake providers were asked.
#[derive(Clone, Default)]
struct Seen {
    requests: Arc<Mutex<Vec<Value>>>,
    rate_limited: Arc<Mutex<bool>>,
}

fn twilio_error(status: StatusCode, code: i64, message: &str) -> axum::response::Response {
    (
        status,
        Json(json!({"code": code, "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status.as_u16()})),
    )
        .into_response()
}

async fn fake_twilio(
    State(seen): State<Seen>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use base64::Engine as _;
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{SID}:{TOKEN}"))
    );
    let authorised = headers
        .get("authorization")
        .is_some_and(|v| v.to_str().unwrap() == expected);
    if !authorised || account.trim_end_matches(".json") != SID {
        return twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let (Some(from), Some(to)) = (get("From"), get("To")) else {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21604,
            "A 'To' phone number is required.",
        );
    };
    if !from.starts_with("whatsapp:+") || !to.starts_with("whatsapp:+") {
        return twilio_error(StatusCode::BAD_REQUEST, 21211, "Invalid 'To' Phone Number");
    }
    let body = get("Body").unwrap_or_default();
    if body.is_empty() {
        return twilio_error(StatusCode::BAD_REQUEST, 21602, "Message body is required.");
    }
    if !get("StatusCallback").is_some_and(|u| u.starts_with("http")) {
        return twilio_error(StatusCode::BAD_REQUEST, 21609, "Invalid StatusCallback");
    }
    seen.requests
        .lock()
        .unwrap()
        .push(json!({"provider": "twilio", "form": form}));
    if body.contains("PERMANENT") {
        return twilio_error(StatusCode::BAD_REQUEST, 21211, "Invalid 'To' Phone Number");
    }
    if body.contains("RATE") && !std::mem::replace(&mut *seen.rate_limited.lock().unwrap(), true) {
        return twilio_error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests");
    }
    let n = seen.requests.lock().unwrap().len();
    (
        StatusCode::CREATED,
        Json(
            json!({"sid": format!("SM{n:032x}"), "status": "queued", "account_sid": SID,
            "from": from, "to": to, "body": body, "num_segments": "1",
            "date_created": "Sat, 21 Nov 2026 10:00:00 +0000", "error_code": null}),
        ),
    )
        .into_response()
}

async fn fake_graph(
    State(seen): State<Seen>,
    Query(query): Query<Vec<(String, String)>>,
    Json(body): Json<Value>,
) -> axum::response::Response {
    let token = query
        .iter()
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.as_str());
    if token != Some(PAGE_TOKEN) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"message": "Invalid OAuth access token - Cannot parse access token",
                "type": "OAuthException", "code": 190, "fbtrace_id": "Afake"}})),
        )
            .into_response();
    }
    let valid_type = ["RESPONSE", "UPDATE", "MESSAGE_TAG"]
        .contains(&body["messaging_type"].as_str().unwrap_or_default());
    if !valid_type || !body["recipient"]["id"].is_string() || !body["message"]["text"].is_string() {
        return (
            StatusCode::BAD_REQUEST,
            Json(
                json!({"error": {"message": "(#100) Invalid parameter", "type": "OAuthException",
                "code": 100, "fbtrace_id": "Afake"}}),
            ),
        )
            .into_response();
    }
    seen.requests
        .lock()
        .unwrap()
        .push(json!({"provider": "messenger", "body": body}));
    let n = seen.requests.lock().unwrap().len();
    Json(json!({"recipient_id": body["recipient"]["id"], "message_id": format!("m_sent{n}")}))
        .into_response()
}

struct Harness {
    test: TestDb,
    key: SecretKey,
    config: herald_core::Config,
    base: String,
    token: String,
    user: User,
    seen: Seen,
    client: reqwest::Client,
}

impl Harness {
    async fn start(test: TestDb) -> Harness {
        let seen = Seen::default();
        let fake = Router::new()
            .route(
                "/2010-04-01/Accounts/{account}/Messages.json",
                post(fake_twilio),
            )
            .route("/me/messages", post(fake_graph))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, fake).await.unwrap() });

        let key = SecretKey::from_base64(&SecretKey::generate_base64()).unwrap();
        let mut config = herald_core::Config::default();
        config.providers.twilio_base_url = fake_url.clone();
        config.providers.graph_base_url = fake_url;
        let state = herald_http::AppState {
            db: test.db.clone(),
            config: Arc::new(config.clone()),
            secret_key: key.clone(),
            waker: QueueWaker::new(),
            timeline: herald_core::timeline::Timeline::default(),
            templates: herald_templates::Engine::default(),
            metrics: herald_http::metrics_handle(),
            intake: herald_http::Intake::new(test.db.clone(), key.clone()),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            herald_http::serve(listener, state, std::future::pending())
                .await
                .unwrap()
        });
        let mut conn = test.connect();
        let account = Account::create(&mut conn, "Messaging", Plan::Base).unwrap();
        let user = User::create(
            &mut conn,
            account.id,
            &NewUser {
                email: "owner@messaging.example.com".into(),
                name: "Owner".into(),
                role: None,
            },
        )
        .unwrap();
        let (_, token) = ApiToken::create(&mut conn, user.id, "test").unwrap();
        Harness {
            test,
            key,
            config,
            base,
            token: secrecy::ExposeSecret::expose_secret(&token).to_owned(),
            user,
            seen,
            client: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn twilio_form(&self, path: &str, form: &[(&str, &str)]) -> StatusCode {
        let form: Vec<(String, String)> = form
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let signature =
            herald_providers::twilio::signature(TOKEN, &format!("{PUBLIC}{path}"), &form);
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("X-Twilio-Signature", signature)
            .form(&form)
            .send()
            .await
            .unwrap();
        StatusCode::from_u16(response.status().as_u16()).unwrap()
    }

    async fn messenger_event(&self, channel: i64, body: Value) -> StatusCode {
        let body = body.to_string();
        let response = self
            .client
            .post(format!("{}/webhooks/messenger/{channel}", self.base))
            .header(
                "X-Hub-Signature-256",
                herald_providers::messenger::signature("app-secret", body.as_bytes()),
            )
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        StatusCode::from_u16(response.status().as_u16()).unwrap()
    }

    async fn work(&self) {
        let context = JobContext::new(
            self.test.db.clone(),
            Arc::new(self.config.clone()),
            self.key.clone(),
            QueueWaker::new(),
        );
        job_runner(context).run_until_empty().await;
    }

    async fn message(&self, conversation: &Value, n: usize) -> Value {
        let (_, page) = self
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/conversations/{}/messages", conversation["id"]),
                None,
            )
            .await;
        page["items"][n].clone()
    }
}

async fn twilio_replies_go_out_and_callbacks_move_them_on(test: TestDb) {
    let h = Harness::start(test).await;
    let (_, channel) = h
        .call(
            reqwest::Method::POST,
            "/api/v1/channels",
            Some(
                json!({"kind": "twilio_whatsapp", "account_sid": SID, "auth_token": TOKEN,
                        "sender": "+14155238886"}),
            ),
        )
        .await;
    let inbound = format!("/webhooks/twilio/{}", channel["id"]);
    let contact = "whatsapp:+15551239999";
    assert_eq!(
        h.twilio_form(
            &inbound,
            &[
                ("AccountSid", SID),
                ("MessageSid", "SMin1"),
                ("From", contact),
                ("To", "whatsapp:+14155238886"),
                ("Body", "Do you ship to Lyon?"),
                ("NumMedia", "0")
            ]
        )
        .await,
        StatusCode::OK
    );
    let (_, all) = h
        .call(reqwest::Method::GET, "/api/v1/conversations", None)
        .await;
    let conversation = all["items"][0].clone();
    let replies = format!("/api/v1/conversations/{}/messages", conversation["id"]);
    let (status, queued) = h
        .call(
            reqwest::Method::POST,
            &replies,
            Some(json!({"body": "Yes, in two days."})),
        )
        .await;
    assert_eq!(
        (status, queued["status"].as_str()),
        (StatusCode::CREATED, Some("queued"))
    );
    h.work().await;
    let asked = h.seen.requests.lock().unwrap()[0].clone();
    let form: Vec<(String, String)> = serde_json::from_value(asked["form"].clone()).unwrap();
    let field = |k: &str| form.iter().find(|(n, _)| n == k).unwrap().1.clone();
    assert_eq!(field("To"), contact);
    assert_eq!(field("From"), "whatsapp:+14155238886");
    assert_eq!(field("Body"), "Yes, in two days.");
    assert_eq!(
        field("StatusCallback"),
        format!("{PUBLIC}/webhooks/twilio/{}/status", channel["id"])
    );
    let sent = h.message(&conversation, 1).await;
    let sid = sent["provider_message_id"].as_str().unwrap().to_owned();
    assert!(sid.starts_with("SM"), "{sent}");

    // Status callbacks, signed; a late `sent` never moves it back.
    let status_path = format!("/webhooks/twilio/{}/status", channel["id"]);
    for (status, expected) in [
        ("sent", "sent"),
        ("delivered", "delivered"),
        ("sent", "delivered"),
        ("read", "read"),
    ] {
        assert_eq!(
            h.twilio_form(
                &status_path,
                &[
                    ("AccountSid", SID),
                    ("MessageSid", &sid),
                    ("MessageStatus", status)
                ]
            )
            .await,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            h.message(&conversation, 1).await["status"],
            expected,
            "after {status}"
        );
    }
    let unsigned = h
        .client
        .post(format!("{}{status_path}", h.base))
        .form(&[("MessageSid", sid.as_str()), ("MessageStatus", "failed")])
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status().as_u16(), 403);

    // A refusal fails at once with Twilio's reason; a 429 is tried again.
    h.call(
        reqwest::Method::POST,
        &replies,
        Some(json!({"body": "PERMANENT"})),
    )
    .await;
    h.call(
        reqwest::Method::POST,
        &replies,
        Some(json!({"body": "RATE limited once"})),
    )
    .await;
    h.work().await;
    let refused = h.message(&conversation, 2).await;
    assert_eq!(refused["status"], "failed");
    assert_eq!(
        refused["failure_reason"],
        "Twilio refused the message: Invalid 'To' Phone Number (error 21211)"
    );
    assert_eq!(
        h.message(&conversation, 3).await["status"],
        "queued",
        "waiting to retry"
    );
    for _ in 0..40 {
        h.work().await;
        if h.message(&conversation, 3).await["status"] != "queued" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(h.message(&conversation, 3).await["provider_message_id"].is_string());

    // Past WhatsApp's 24 hours: only templates.
    {
        use diesel::prelude::*;
        use herald_inbox::schema::conversations;
        diesel::update(conversations::table.find(conversation["id"].as_i64().unwrap()))
            .set(conversations::last_inbound_at.eq(Some(
                herald_core::time::now() - chrono::TimeDelta::hours(25),
            )))
            .execute(&mut h.test.connect())
            .unwrap();
    }
    let (status, problem) = h
        .call(
            reqwest::Method::POST,
            &replies,
            Some(json!({"body": "Still there?"})),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("outside_messaging_window"))
    );

    // Deleted for good: a late retry of an old message does not bring it back; a new one starts
    // a new conversation.
    let colleague = {
        let mut conn = h.test.connect();
        let other = User::create(
            &mut conn,
            h.user.account_id,
            &NewUser {
                email: "colleague@messaging.example.com".into(),
                name: "C".into(),
                role: None,
            },
        )
        .unwrap();
        secrecy::ExposeSecret::expose_secret(&ApiToken::create(&mut conn, other.id, "t").unwrap().1)
            .to_owned()
    };
    let path = format!("/api/v1/conversations/{}", conversation["id"]);
    let forbidden = h
        .client
        .delete(format!("{}{path}", h.base))
        .bearer_auth(&colleague)
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status().as_u16(), 403);
    assert_eq!(
        h.call(reqwest::Method::DELETE, &path, None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        h.call(reqwest::Method::GET, &path, None).await.0,
        StatusCode::NOT_FOUND
    );
    let late = [
        ("AccountSid", SID),
        ("MessageSid", "SMin1"),
        ("From", contact),
        ("To", "whatsapp:+14155238886"),
        ("Body", "Do you ship to Lyon?"),
        ("NumMedia", "0"),
    ];
    assert_eq!(h.twilio_form(&inbound, &late).await, StatusCode::OK);
    let (_, all) = h
        .call(reqwest::Method::GET, "/api/v1/conversations", None)
        .await;
    assert_eq!(all["counts"]["all"], 0, "{all}");
    let fresh = [
        ("AccountSid", SID),
        ("MessageSid", "SMin2"),
        ("From", contact),
        ("To", "whatsapp:+14155238886"),
        ("Body", "Hello again"),
        ("NumMedia", "0"),
    ];
    assert_eq!(h.twilio_form(&inbound, &fresh).await, StatusCode::OK);
    let (_, all) = h
        .call(reqwest::Method::GET, "/api/v1/conversations", None)
        .await;
    assert_eq!(all["counts"]["all"], 1);
    assert_ne!(all["items"][0]["id"], conversation["id"]);
}

async fn messenger_replies_go_out_and_events_move_them_on(test: TestDb) {
    let h = Harness::start(test).await;
    let (_, channel) = h
        .call(
            reqwest::Method::POST,
            "/api/v1/channels",
            Some(json!({"kind": "messenger", "page_id": "1234567890", "page_access_token": PAGE_TOKEN,
                        "app_secret": "app-secret", "verify_token": "v"})),
        )
        .await;
    let id = channel["id"].as_i64().unwrap();
    let event = |messaging: Value| json!({"object": "page", "entry": [{"id": "1234567890", "time": 1, "messaging": [messaging]}]});
    assert_eq!(
        h.messenger_event(
            id,
            event(
                json!({"sender": {"id": "PSID-7"}, "recipient": {"id": "1234567890"},
            "timestamp": 1, "message": {"mid": "m_in", "text": "Is it in stock?"}})
            )
        )
        .await,
        StatusCode::OK
    );
    let (_, all) = h
        .call(reqwest::Method::GET, "/api/v1/conversations", None)
        .await;
    let conversation = all["items"][0].clone();
    let replies = format!("/api/v1/conversations/{}/messages", conversation["id"]);
    h.call(
        reqwest::Method::POST,
        &replies,
        Some(json!({"body": "It is."})),
    )
    .await;
    h.work().await;
    let asked = h.seen.requests.lock().unwrap()[0].clone();
    assert_eq!(
        asked["body"],
        json!({"recipient": {"id": "PSID-7"}, "messaging_type": "RESPONSE", "message": {"text": "It is."}})
    );
    let sent = h.message(&conversation, 1).await;
    assert_eq!(
        (
            sent["status"].as_str(),
            sent["provider_message_id"].as_str()
        ),
        (Some("sent"), Some("m_sent1"))
    );
    // Meta echoes our own send: not a second message. Then delivery and read.
    h.messenger_event(
        id,
        event(
            json!({"sender": {"id": "1234567890"}, "recipient": {"id": "PSID-7"},
        "timestamp": 2, "message": {"mid": "m_sent1", "text": "It is.", "is_echo": true}}),
        ),
    )
    .await;
    h.messenger_event(
        id,
        event(
            json!({"sender": {"id": "PSID-7"}, "recipient": {"id": "1234567890"},
        "timestamp": 3, "delivery": {"mids": ["m_sent1"], "watermark": 3}}),
        ),
    )
    .await;
    assert_eq!(h.message(&conversation, 1).await["status"], "delivered");
    h.messenger_event(
        id,
        event(
            json!({"sender": {"id": "PSID-7"}, "recipient": {"id": "1234567890"},
        "timestamp": 4, "read": {"watermark": 4}}),
        ),
    )
    .await;
    assert_eq!(h.message(&conversation, 1).await["status"], "read");
    assert!(
        h.message(&conversation, 2).await.is_null(),
        "the echo is not stored twice"
    );
}

backend_tests!(
    twilio_replies_go_out_and_callbacks_move_them_on,
    messenger_replies_go_out_and_events_move_them_on,
);
