//! The real `herald` binary on both backends: `--json` output, exit codes, and the queue
//! commands.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use diesel::prelude::*;

use herald_testdb::{TestDb, backend_tests};
use serde_json::Value;

struct Cli {
    test: TestDb,
    data: tempfile::TempDir,
}

impl Cli {
    fn new(test: TestDb) -> Cli {
        Cli {
            test,
            data: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> (i32, Value, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_herald"))
            .env_clear()
            .env("HERALD_DATABASE_URL", self.test.url_string())
            .env("HERALD_DATA_DIR", self.data.path())
            .arg("--json")
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "--json prints one object: {stdout}");
        let value = serde_json::from_str(lines[0]).unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        let code = output
            .status
            .code()
            .unwrap_or_else(|| panic!("herald died: {:?} {stderr}", output.status));
        (code, value, stderr)
    }
}

async fn accounts_users_and_tokens_are_created_and_revoked(test: TestDb) {
    let cli = Cli::new(test);
    let (code, account, _) = cli.run(&[
        "account",
        "create",
        "--name",
        "Acme",
        "--plan",
        "automation",
    ]);
    assert_eq!(code, 0);
    let account_id = account["id"].as_i64().unwrap();
    assert_eq!(account["plan"], "automation");
    let (code, user, _) = cli.run(&[
        "user",
        "create",
        "--account",
        &account_id.to_string(),
        "--email",
        "ann@acme.example",
        "--name",
        "Ann",
        "--admin",
    ]);
    assert_eq!(code, 0, "{user}");
    assert_eq!(user["role"], "admin");
    let user_id = user["id"].as_i64().unwrap().to_string();
    let (code, token, _) = cli.run(&["token", "create", "--user", &user_id]);
    assert_eq!(code, 0);
    let secret = token["token"].as_str().unwrap().to_owned();
    let principal =
        herald_core::identity::ApiToken::authenticate(&mut cli.test.connect(), &secret).unwrap();
    assert_eq!(principal.unwrap().user.id.to_string(), user_id);
    let (code, revoked, _) = cli.run(&["token", "revoke", &secret]);
    assert_eq!((code, revoked["revoked"].as_bool()), (0, Some(true)));
    assert!(
        herald_core::identity::ApiToken::authenticate(&mut cli.test.connect(), &secret)
            .unwrap()
            .is_none()
    );
}

async fn errors_are_json_with_a_code_and_a_non_zero_exit(test: TestDb) {
    let cli = Cli::new(test);
    let (code, error, _) = cli.run(&[
        "user",
        "create",
        "--account",
        "4242",
        "--email",
        "a@b.example",
        "--name",
        "A",
    ]);
    assert_eq!(
        (code, error["error"]["code"].as_str()),
        (3, Some("not_found"))
    );
    let (_, account, _) = cli.run(&["account", "create", "--name", "Acme"]);
    let id = account["id"].to_string();
    let (code, error, _) = cli.run(&[
        "user",
        "create",
        "--account",
        &id,
        "--email",
        "not-an-email",
        "--name",
        "A",
    ]);
    assert_eq!(
        (code, error["error"]["code"].as_str()),
        (4, Some("validation_failed"))
    );
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("email")
    );
    let (code, error, _) = cli.run(&["token", "create", "--user", "999"]);
    assert_eq!(
        (code, error["error"]["code"].as_str()),
        (3, Some("not_found"))
    );
    let (code, error, _) = cli.run(&["jobs", "retry", "999"]);
    assert_eq!(
        (code, error["error"]["code"].as_str()),
        (3, Some("not_found"))
    );
}

async fn jobs_are_listed_retried_and_cancelled(test: TestDb) {
    let cli = Cli::new(test);
    let (dead, queued) = {
        let mut conn = cli.test.connect();
        let dead = herald_scheduler::storage::enqueue(
            &mut conn,
            &herald_scheduler::storage::NewJob {
                job_type: "send_email",
                queue: "default",
                payload: "{}",
                max_attempts: 1,
                run_at: herald_core::time::now(),
            },
        )
        .unwrap();
        let at = herald_core::time::now();
        herald_scheduler::storage::claim(
            &mut conn,
            "w",
            &["send_email"],
            1,
            at,
            at + chrono::TimeDelta::seconds(30),
        )
        .unwrap();
        herald_scheduler::storage::bury(&mut conn, "w", dead, "550 no such user").unwrap();
        let queued = herald_scheduler::storage::enqueue(
            &mut conn,
            &herald_scheduler::storage::NewJob {
                job_type: "sync_mailbox",
                queue: "default",
                payload: "{}",
                max_attempts: 5,
                run_at: herald_core::time::now() + chrono::TimeDelta::hours(1),
            },
        )
        .unwrap();
        (dead, queued)
    };
    let (code, list, _) = cli.run(&["jobs", "list", "--status", "dead"]);
    assert_eq!(code, 0);
    let jobs = list["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0]["id"].as_i64(), jobs[0]["last_error"].as_str()),
        (Some(dead), Some("550 no such user"))
    );
    let (code, retried, _) = cli.run(&["jobs", "retry", &dead.to_string()]);
    assert_eq!(
        (
            code,
            retried["job"]["status"].as_str(),
            retried["job"]["attempts"].as_i64()
        ),
        (0, Some("queued"), Some(0))
    );
    let (code, cancelled, _) = cli.run(&["jobs", "cancel", &queued.to_string()]);
    assert_eq!(
        (code, cancelled["job"]["status"].as_str()),
        (0, Some("cancelled"))
    );
    let (code, error, _) = cli.run(&["jobs", "cancel", &queued.to_string()]);
    assert_eq!(
        (code, error["error"]["code"].as_str()),
        (5, Some("invalid_state"))
    );
}

async fn doctor_reports_each_check(test: TestDb) {
    let cli = Cli::new(test);
    let (code, report, _) = cli.run(&["doctor"]);
    let postgres = cli.test.backend() == herald_core::BackendKind::Postgres;
    // Without HERALD_SECRET_KEY, PostgreSQL setups fail the secret_key check.
    assert_eq!(code, if postgres { 1 } else { 0 }, "{report}");
    let checks = report["checks"].as_array().unwrap();
    let by_name = |n: &str| {
        checks.iter().find(|c| c["check"] == n).unwrap()["ok"]
            .as_bool()
            .unwrap()
    };
    assert!(by_name("database") && by_name("migrations") && by_name("config"));
    assert_eq!(by_name("secret_key"), !postgres);
}

async fn migrate_reverts_and_reapplies(test: TestDb) {
    let cli = Cli::new(test);
    let (code, out, _) = cli.run(&["migrate"]);
    assert_eq!(
        (code, out["applied"].as_array().map(Vec::len)),
        (0, Some(0))
    );
    let (code, out, _) = cli.run(&["migrate", "--revert"]);
    assert_eq!(code, 0);
    assert!(out["reverted"].is_string());
    let (code, report, _) = cli.run(&["doctor"]);
    assert_eq!(code, 1, "pending migrations fail the doctor: {report}");
    let (code, out, _) = cli.run(&["migrate"]);
    assert_eq!(
        (code, out["applied"].as_array().map(Vec::len)),
        (0, Some(1))
    );
}

async fn mailboxes_are_listed_and_tested_against_their_servers(test: TestDb) {
    let cli = Cli::new(test);
    let env = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run scripts/test.sh"))
    };
    let mut conn = cli.test.connect();
    let account =
        herald_core::identity::Account::create(&mut conn, "Mail", herald_core::domain::Plan::Base)
            .unwrap();
    let user = herald_core::identity::User::create(
        &mut conn,
        account.id,
        &herald_core::identity::NewUser {
            email: "alice@herald.test".into(),
            name: "Alice".into(),
            role: None,
        },
    )
    .unwrap();
    let input: herald_mailbox::MailboxInput = serde_json::from_value(serde_json::json!({
        "address": "alice@herald.test",
        "imap": {"host": env("HERALD_TEST_IMAP_HOST"), "port": env("HERALD_TEST_IMAP_PORT").parse::<u16>().unwrap(),
                 "security": "none", "username": "alice@herald.test", "password": "alice-pass"},
        "smtp": {"host": env("HERALD_TEST_SMTP_HOST"), "port": env("HERALD_TEST_SUBMISSION_PORT").parse::<u16>().unwrap(),
                 "security": "starttls", "username": "alice@herald.test", "password": "alice-pass"},
        "sending_enabled": true,
        "verify_tls": false
    }))
    .unwrap();
    // The CLI reads the key from the data dir, as herald-api wrote it there.
    let (key, _) = herald_core::crypto::SecretKey::load_or_generate(None, cli.data.path()).unwrap();
    let limits = herald_core::config::PlanLimits::default();
    let draft = herald_mailbox::Draft::prepare(&mut conn, limits, &user, &input).unwrap();
    let mailbox = conn
        .write(|conn| draft.insert(conn, &key, limits, account.id))
        .unwrap();

    let (code, list, _) = cli.run(&["mailbox", "list"]);
    assert_eq!(code, 0);
    assert_eq!(list["mailboxes"][0]["address"], "alice@herald.test");
    let (code, report, _) = cli.run(&["mailbox", "test", &mailbox.id.to_string()]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        (
            report["imap"]["ok"].as_bool(),
            report["smtp"]["ok"].as_bool()
        ),
        (Some(true), Some(true))
    );
    assert!(
        report["imap"]["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "IDLE"),
        "{report}"
    );
    // A resync reads everything again and stores nothing twice.
    let mut session = herald_mailbox::imap::Session::open(&mailbox.imap_settings(&key).unwrap())
        .await
        .unwrap();
    let raw = format!(
        "From: ann@acme.example\r\nTo: alice@herald.test\r\nSubject: Resync\r\nMessage-ID: <resync-{}@acme.example>\r\n\r\nHi\r\n",
        std::process::id()
    );
    session.append("INBOX", None, raw.as_bytes()).await.unwrap();
    session.logout().await;
    let (code, first, _) = cli.run(&["mailbox", "resync", &mailbox.id.to_string()]);
    assert_eq!(code, 0, "{first}");
    assert!(first["report"]["fetched"].as_u64().unwrap() >= 1, "{first}");
    let (code, second, _) = cli.run(&["mailbox", "resync", &mailbox.id.to_string()]);
    assert_eq!(code, 0, "{second}");
    // Everything the first pass stored is recognised (other tests may add mail to the same
    // inbox meanwhile, so only what came after may be new), and our message is stored once.
    let known =
        second["report"]["known"].as_u64().unwrap() + second["report"]["seen"].as_u64().unwrap();
    assert!(
        known >= first["report"]["fetched"].as_u64().unwrap(),
        "{first} {second}"
    );
    let ours: i64 = herald_mailbox::schema::emails::table
        .filter(
            herald_mailbox::schema::emails::message_id
                .eq(format!("resync-{}@acme.example", std::process::id())),
        )
        .count()
        .get_result(&mut cli.test.connect())
        .unwrap();
    assert_eq!(ours, 1);
    let (code, error, _) = cli.run(&["mailbox", "test", "999999"]);
    assert_eq!(
        (code, error["error"]["code"].as_str()),
        (3, Some("not_found"))
    );
}

backend_tests!(
    mailboxes_are_listed_and_tested_against_their_servers,
    accounts_users_and_tokens_are_created_and_revoked,
    errors_are_json_with_a_code_and_a_non_zero_exit,
    jobs_are_listed_retried_and_cancelled,
    doctor_reports_each_check,
    migrate_reverts_and_reapplies,
);

#[test]
fn keygen_prints_a_usable_key() {
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["keygen", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let value: Value = serde_json::from_slice(&output.stdout).unwrap();
    herald_core::crypto::SecretKey::from_base64(value["key"].as_str().unwrap()).unwrap();
}

#[test]
fn unreachable_database_fails_the_doctor_with_a_message() {
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .env_clear()
        .env("HERALD_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env(
            "HERALD_SECRET_KEY",
            herald_core::crypto::SecretKey::generate_base64(),
        )
        .arg("doctor")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("FAIL database: cannot connect"), "{stdout}");
}

#[test]
fn a_bad_database_url_is_a_clear_config_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .env_clear()
        .env("HERALD_DATABASE_URL", "mysql://x")
        .args(["jobs", "list"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("must start with postgres:// or sqlite://"),
        "{stderr}"
    );
}
