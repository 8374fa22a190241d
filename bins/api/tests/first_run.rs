//! The real `herald-api` binary: first run on an empty SQLite database, and the switches that
//! turn the bootstrap off.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use herald_testdb::TestDb;

struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Server {
    fn start(envs: &[(&str, String)]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_herald-api"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HERALD_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in envs {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Server { child, lines }
    }

    /// Lines printed up to and including the "listening" line.
    fn startup_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .expect("herald-api printed its address");
            let done = line.starts_with("Herald API listening on ");
            out.push(line);
            if done {
                return out;
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn address(lines: &[String]) -> String {
    lines
        .last()
        .unwrap()
        .trim_start_matches("Herald API listening on ")
        .to_owned()
}

fn token(lines: &[String]) -> Option<String> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix("Admin API token (shown once, keep it safe): "))
        .map(str::to_owned)
}

#[tokio::test]
async fn first_run_on_sqlite_prints_a_working_admin_token_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let lines = {
        let server = Server::start(&[("HERALD_DATA_DIR", data.clone())]);
        let lines = server.startup_lines();
        let token = token(&lines).expect("a token on first run");
        let curl = lines
            .iter()
            .find(|l| l.contains("curl -H 'Authorization: Bearer"))
            .expect("a curl line");
        assert!(
            curl.ends_with(&format!("{}/api/v1/me", address(&lines))),
            "the curl line calls the bound address: {curl}"
        );
        let me: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/api/v1/me", address(&lines)))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(me["user"]["role"], "admin");
        lines
    };
    assert!(std::path::Path::new(&data).join("herald.db").exists());
    assert!(std::path::Path::new(&data).join("secret.key").exists());
    // Second start on the same database: no new account, no token.
    let server = Server::start(&[("HERALD_DATA_DIR", data)]);
    let again = server.startup_lines();
    assert!(token(&again).is_none(), "{again:?}");
    assert_ne!(lines, again);
}

#[tokio::test]
async fn bootstrap_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&[
        ("HERALD_DATA_DIR", dir.path().display().to_string()),
        ("HERALD_BOOTSTRAP", "false".into()),
    ]);
    let lines = server.startup_lines();
    assert!(token(&lines).is_none(), "{lines:?}");
}

#[tokio::test]
async fn postgres_is_not_bootstrapped_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let test = TestDb::postgres();
    let key = herald_core::crypto::SecretKey::generate_base64();
    let base = vec![
        ("HERALD_DATA_DIR", dir.path().display().to_string()),
        ("HERALD_DATABASE_URL", test.url_string()),
        ("HERALD_SECRET_KEY", key),
    ];
    {
        let server = Server::start(&base);
        assert!(token(&server.startup_lines()).is_none());
    }
    let mut asked = base.clone();
    asked.push(("HERALD_BOOTSTRAP", "true".into()));
    let server = Server::start(&asked);
    let lines = server.startup_lines();
    let token = token(&lines).expect("bootstrap when asked");
    let status = reqwest::Client::new()
        .get(format!("{}/api/v1/me", address(&lines)))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
}

#[test]
fn postgres_without_a_secret_key_refuses_to_start() {
    let test = TestDb::postgres();
    let output = Command::new(env!("CARGO_BIN_EXE_herald-api"))
        .env_clear()
        .env("HERALD_DATABASE_URL", test.url_string())
        .env("HERALD_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("HERALD_SECRET_KEY is required"), "{stderr}");
}
