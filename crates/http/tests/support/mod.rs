//! The real router on port 0 over a test database, and a client that checks every error is
//! problem+json.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::sync::Arc;

use herald_core::Config;
use herald_core::crypto::SecretKey;
use herald_core::domain::Plan;
use herald_core::identity::{Account, ApiToken, NewUser, User};
use herald_http::AppState;
use herald_scheduler::QueueWaker;
use herald_testdb::TestDb;
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::Value;

pub struct TestApp {
    pub base: String,
    /// The key the app seals secrets with (tests that sync mailboxes need it).
    pub key: SecretKey,
    pub client: reqwest::Client,
    pub test: TestDb,
    _server: tokio::task::JoinHandle<()>,
}

/// A user with a token, in a fresh account.
pub struct Login {
    pub token: String,
    pub user_id: i64,
    pub account_id: i64,
}

impl TestApp {
    pub async fn spawn(test: TestDb) -> TestApp {
        let key = SecretKey::from_base64(&SecretKey::generate_base64()).unwrap();
        let mut config = Config::default();
        config.api.body_limit_bytes = 64 * 1024;
        let state = AppState {
            db: test.db.clone(),
            config: Arc::new(config),
            secret_key: key.clone(),
            waker: QueueWaker::new(),
            timeline: herald_core::timeline::Timeline::default()
                .with_source(std::sync::Arc::new(herald_mailbox::emails::EmailTimeline)),
            templates: herald_templates::Engine::default(),
            metrics: herald_http::metrics_handle(),
            intake: herald_http::Intake::new(test.db.clone(), key.clone()),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            herald_http::serve(listener, state, std::future::pending())
                .await
                .unwrap();
        });
        TestApp {
            base,
            key,
            client: reqwest::Client::new(),
            test,
            _server: server,
        }
    }

    pub fn login(&self, account: &str, role: &str) -> Login {
        let mut conn = self.test.connect();
        let acct = Account::create(&mut conn, account, Plan::Base).unwrap();
        self.add_user(acct.id, &format!("{role}@{account}.example.com"), role)
    }

    pub fn add_user(&self, account_id: i64, email: &str, role: &str) -> Login {
        let conn = &mut self.test.connect();
        let user = User::create(
            conn,
            account_id,
            &NewUser {
                email: email.into(),
                name: "Someone".into(),
                role: Some(role.into()),
            },
        )
        .unwrap();
        let (_, token) = ApiToken::create(conn, user.id, "test").unwrap();
        Login {
            token: token.expose_secret().to_owned(),
            user_id: user.id,
            account_id,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        login: &Login,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&login.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        read(request.send().await.unwrap()).await
    }

    pub async fn get(&self, login: &Login, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, login, path, None).await
    }

    pub async fn post(&self, login: &Login, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, login, path, Some(body))
            .await
    }

    pub async fn patch(&self, login: &Login, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::PATCH, login, path, Some(body))
            .await
    }

    pub async fn delete(&self, login: &Login, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::DELETE, login, path, None).await
    }
}

pub async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let problem = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("application/problem+json"));
    let text = response.text().await.unwrap();
    let value: Value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    };
    if status.is_client_error() || status.is_server_error() {
        assert!(problem, "errors are problem+json: {status} {text}");
        for member in ["type", "title", "status", "detail", "code"] {
            assert!(
                value.get(member).is_some(),
                "problem lacks {member}: {text}"
            );
        }
        assert_eq!(value["status"], status.as_u16());
    }
    (status, value)
}

/// A mailbox for `user` (alice, bob or carol) on the loopback servers.
pub fn mailbox(user: &str, sending: bool) -> Value {
    serde_json::json!({
        "address": format!("{user}@herald.test"),
        "display_name": user,
        "imap": {"host": herald_testdb::mail_env("HERALD_TEST_IMAP_HOST"), "port": herald_testdb::mail_env("HERALD_TEST_IMAP_PORT").parse::<u16>().unwrap(),
                 "security": "starttls", "username": format!("{user}@herald.test"), "password": format!("{user}-pass")},
        "smtp": {"host": herald_testdb::mail_env("HERALD_TEST_SMTP_HOST"), "port": herald_testdb::mail_env("HERALD_TEST_SUBMISSION_PORT").parse::<u16>().unwrap(),
                 "security": "starttls", "username": format!("{user}@herald.test"), "password": format!("{user}-pass")},
        "sending_enabled": sending,
        "verify_tls": false
    })
}
