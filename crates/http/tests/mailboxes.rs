//! Mailboxes over the API on both backends, checked against the real loopback Dovecot and
//! Postfix (`scripts/test.sh` starts them): connect, failures per side, plan rules, visibility,
//! secrets never shown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use diesel::prelude::*;
use herald_testdb::{TestDb, backend_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Login, TestApp, mailbox};

use herald_testdb::mail_env as env;

fn set_plan(app: &TestApp, login: &Login, plan: &str) {
    diesel::update(herald_core::schema::accounts::table.find(login.account_id))
        .set(herald_core::schema::accounts::plan.eq(plan))
        .execute(&mut app.test.connect())
        .unwrap();
}

async fn a_mailbox_is_checked_then_saved_without_showing_its_password(test: TestDb) {
    let app = TestApp::spawn(test).await;
    let me = app.login("connect", "member");
    let r = app
        .client
        .post(app.url("/api/v1/mailboxes"))
        .bearer_auth(&me.token)
        .json(&mailbox("alice", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let text = r.text().await.unwrap();
    assert!(
        !text.contains("alice-pass"),
        "no password in the response: {text}"
    );
    let created: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (
            created["state"].as_str(),
            created["sending_enabled"].as_bool()
        ),
        (Some("connected"), Some(true))
    );
    assert_eq!(created["imap"]["security"], "starttls");
    assert!(created["imap"].get("password").is_none());
    // Stored sealed, not in plain text.
    let stored: String = herald_mailbox::schema::mailboxes::table
        .select(herald_mailbox::schema::mailboxes::imap_password)
        .first(&mut app.test.connect())
        .unwrap();
    assert!(stored.starts_with("v1:") && !stored.contains("alice-pass"));
    let (status, listed) = app.get(&me, "/api/v1/mailboxes").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["items"][0]["address"], "alice@herald.test");
}

async fn a_failed_check_says_which_side_and_why(test: TestDb) {
    let app = TestApp::spawn(test).await;
    let me = app.login("failures", "member");
    let mut wrong_imap = mailbox("alice", false);
    wrong_imap["imap"]["password"] = json!("nope");
    let (status, problem) = app.post(&me, "/api/v1/mailboxes", wrong_imap).await;
    assert_eq!(
        (status, problem["code"].as_str(), problem["field"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("mailbox_connection_failed"),
            Some("imap")
        )
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("username or password"),
        "{problem}"
    );

    let mut wrong_smtp = mailbox("alice", true);
    wrong_smtp["smtp"]["password"] = json!("nope");
    let (status, problem) = app.post(&me, "/api/v1/mailboxes", wrong_smtp).await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("smtp"))
    );

    let mut refused = mailbox("alice", false);
    refused["imap"]["port"] = json!(1);
    let (status, problem) = app.post(&me, "/api/v1/mailboxes", refused).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        problem["detail"].as_str().unwrap().contains("refused"),
        "{problem}"
    );

    let mut no_smtp = mailbox("alice", true);
    no_smtp.as_object_mut().unwrap().remove("smtp");
    let (status, problem) = app.post(&me, "/api/v1/mailboxes", no_smtp).await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("smtp"))
    );
    let (_, listed) = app.get(&me, "/api/v1/mailboxes").await;
    assert_eq!(listed["items"], json!([]), "nothing saved");
}

async fn plan_rules_name_the_rule(test: TestDb) {
    let app = TestApp::spawn(test).await;
    let base = app.login("baseplan", "member");
    assert_eq!(
        app.post(&base, "/api/v1/mailboxes", mailbox("alice", true))
            .await
            .0,
        StatusCode::CREATED
    );
    let (status, problem) = app
        .post(&base, "/api/v1/mailboxes", mailbox("bob", true))
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("plan_limit"))
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("base_sending_mailboxes"),
        "{problem}"
    );
    let (status, second) = app
        .post(&base, "/api/v1/mailboxes", mailbox("bob", false))
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "receiving only is allowed: {second}"
    );
    // Turning sending on for the second one breaks the rule too.
    let (status, problem) = app
        .patch(
            &base,
            &format!("/api/v1/mailboxes/{}", second["id"]),
            json!({"sending_enabled": true}),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("plan_limit"))
    );

    let auto = app.login("autoplan", "member");
    set_plan(&app, &auto, "automation");
    for user in ["alice", "bob", "carol"] {
        assert_eq!(
            app.post(&auto, "/api/v1/mailboxes", mailbox(user, true))
                .await
                .0,
            StatusCode::CREATED,
            "{user}"
        );
    }
    let (status, problem) = app
        .post(&auto, "/api/v1/mailboxes", mailbox("alice", false))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("automation_mailboxes"),
        "{problem}"
    );
}

async fn owner_only_mailboxes_are_hidden_and_only_owners_change_theirs(test: TestDb) {
    let app = TestApp::spawn(test).await;
    let owner = app.login("team", "member");
    let colleague = app.add_user(owner.account_id, "colleague@team.example.com", "member");
    let admin = app.add_user(owner.account_id, "boss@team.example.com", "admin");
    let mut private = mailbox("alice", false);
    private["visibility"] = json!("owner");
    let (_, private) = app.post(&owner, "/api/v1/mailboxes", private).await;
    let (_, shared) = app
        .post(&owner, "/api/v1/mailboxes", mailbox("bob", false))
        .await;
    let private_path = format!("/api/v1/mailboxes/{}", private["id"]);
    let shared_path = format!("/api/v1/mailboxes/{}", shared["id"]);
    assert_eq!(
        app.get(&colleague, &private_path).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.get(&colleague, &shared_path).await.0, StatusCode::OK);
    let (_, listed) = app.get(&colleague, "/api/v1/mailboxes").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        app.patch(&colleague, &shared_path, json!({"display_name": "mine"}))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.delete(&colleague, &shared_path).await.0,
        StatusCode::FORBIDDEN
    );

    // The owner renames without re-entering a password; a wrong new password is refused and
    // leaves the stored one working.
    let (status, renamed) = app
        .patch(&owner, &shared_path, json!({"display_name": "Bob's box"}))
        .await;
    assert_eq!(
        (status, renamed["display_name"].as_str()),
        (StatusCode::OK, Some("Bob's box"))
    );
    let mut imap = mailbox("bob", false)["imap"].clone();
    imap["password"] = json!("wrong");
    let (status, problem) = app.patch(&owner, &shared_path, json!({"imap": imap})).await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("imap"))
    );
    // The stored password never follows the mailbox to another host.
    let mut elsewhere = mailbox("bob", false)["imap"].clone();
    elsewhere.as_object_mut().unwrap().remove("password");
    elsewhere["host"] = json!("localhost");
    let (status, problem) = app
        .patch(&owner, &shared_path, json!({"imap": elsewhere}))
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("imap.password"))
    );
    let mut same = mailbox("bob", false)["imap"].clone();
    same.as_object_mut().unwrap().remove("password");
    let (status, _) = app.patch(&owner, &shared_path, json!({"imap": same})).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the stored password is checked again and still works"
    );

    assert_eq!(
        app.delete(&admin, &shared_path).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.get(&owner, &shared_path).await.0, StatusCode::NOT_FOUND);
    let outsider = app.login("elsewhere", "admin");
    assert_eq!(
        app.get(&outsider, &private_path).await.0,
        StatusCode::NOT_FOUND
    );
}

async fn templates_sign_with_the_sending_mailbox(test: TestDb) {
    let app = TestApp::spawn(test).await;
    let me = app.login("signature", "member");
    let mut input = mailbox("alice", true);
    input["display_name"] = json!("Alice at Acme");
    input["signature"] = json!("-- \nAlice, Acme Sales");
    let (status, created) = app.post(&me, "/api/v1/mailboxes", input).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["signature"], "-- \nAlice, Acme Sales");
    let (_, template) = app
        .post(
            &me,
            "/api/v1/templates",
            json!({"name": "Signed", "subject": "Hi", "text": "From {{ sender.display_name }} <{{ sender.address }}>\n{{ sender.signature }}"}),
        )
        .await;
    assert!(
        template["warnings"].as_array().unwrap().is_empty(),
        "sender fields are known: {template}"
    );
    let render = format!("/api/v1/templates/{}/render", template["id"]);
    let (status, out) = app.post(&me, &render, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(
        out["text"],
        "From Alice at Acme <alice@herald.test>\n-- \nAlice, Acme Sales"
    );
    // Someone else's mailbox cannot sign for the caller.
    let colleague = app.add_user(me.account_id, "colleague@signature.example.com", "member");
    let (status, problem) = app
        .post(&colleague, &render, json!({"mailbox_id": created["id"]}))
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a personal template of another user: {problem}"
    );
}

async fn a_sync_can_be_requested_now(test: TestDb) {
    let app = TestApp::spawn(test).await;
    let me = app.login("syncnow", "member");
    let (_, created) = app
        .post(&me, "/api/v1/mailboxes", mailbox("alice", false))
        .await;
    let path = format!("/api/v1/mailboxes/{}/sync", created["id"]);
    let r = app
        .client
        .post(app.url(&path))
        .bearer_auth(&me.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body: Value = r.json().await.unwrap();
    let job =
        herald_scheduler::storage::find(&mut app.test.connect(), body["job_id"].as_i64().unwrap())
            .unwrap()
            .unwrap();
    assert_eq!(
        (job.job_type.as_str(), job.status.as_str()),
        ("sync_mailbox_now", "queued")
    );
    // Not for a mailbox whose credentials were refused.
    diesel::update(herald_mailbox::schema::mailboxes::table.find(created["id"].as_i64().unwrap()))
        .set(herald_mailbox::schema::mailboxes::state.eq("auth_failed"))
        .execute(&mut app.test.connect())
        .unwrap();
    let (status, problem) = app.post(&me, &path, json!({})).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("mailbox_auth_failed"))
    );
    let other = app.login("nosync", "member");
    assert_eq!(
        app.post(&other, &path, json!({})).await.0,
        StatusCode::NOT_FOUND
    );
}

backend_tests!(
    a_sync_can_be_requested_now,
    templates_sign_with_the_sending_mailbox,
    a_mailbox_is_checked_then_saved_without_showing_its_password,
    a_failed_check_says_which_side_and_why,
    plan_rules_name_the_rule,
    owner_only_mailboxes_are_hidden_and_only_owners_change_theirs,
);

mod synced {
    use super::*;
    use herald_mailbox::imap::Session;
    use herald_mailbox::sync::{SyncOptions, sync_mailbox};

    fn bob() -> herald_mailbox::connect::ServerSettings {
        herald_mailbox::connect::ServerSettings {
            host: env("HERALD_TEST_IMAP_HOST"),
            port: env("HERALD_TEST_IMAP_PORT").parse().unwrap(),
            security: herald_mailbox::connect::Security::None,
            username: "bob@herald.test".into(),
            password: secrecy::SecretString::from("bob-pass".to_owned()),
            verify_tls: false,
        }
    }

    fn message(tag: &str, n: usize, from: &str, subject: &str) -> Vec<u8> {
        format!(
            "From: {from}\r\nTo: Bob <bob@herald.test>\r\nSubject: {subject}\r\nDate: Sat, 21 Nov 2026 1{n}:00:00 +0000\r\n\
             Message-ID: <{n}-{tag}@acme.example>\r\n\r\nHello from message {n}\r\n"
        )
        .into_bytes()
    }

    pub async fn synced_emails_are_listed_on_timelines_and_follow_visibility(test: TestDb) {
        let app = TestApp::spawn(test).await;
        let owner = app.login("synced", "member");
        let colleague = app.add_user(owner.account_id, "colleague@synced.example.com", "member");
        let (status, mailbox) = app
            .post(&owner, "/api/v1/mailboxes", mailbox("bob", false))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{mailbox}");

        let tag = format!(
            "{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_micros()
        );
        let folder = format!("herald-api-{tag}");
        let mut session = Session::open(&bob()).await.unwrap();
        session.create(&folder).await.unwrap();
        session
            .append(
                &folder,
                None,
                &message(&tag, 1, "Ann Lee <ann@acme.example>", "Pricing question"),
            )
            .await
            .unwrap();
        session
            .append(
                &folder,
                None,
                &message(&tag, 2, "someone@other.example", "Newsletter"),
            )
            .await
            .unwrap();
        let html = format!(
            "From: mallory@evil.example\r\nTo: bob@herald.test\r\nSubject: Click\r\nDate: Sat, 21 Nov 2026 09:00:00 +0000\r\n\
             Message-ID: <3-{tag}@evil.example>\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
             <p onclick=\"steal()\">Hi<script>alert(1)</script><a href=\"javascript:alert(2)\">x</a></p>\r\n"
        );
        session
            .append(&folder, None, html.as_bytes())
            .await
            .unwrap();
        let options = SyncOptions {
            inbox: folder.clone(),
            ..SyncOptions::default()
        };
        let report = sync_mailbox(
            &app.test.db,
            &app.key,
            mailbox["id"].as_i64().unwrap(),
            &options,
        )
        .await
        .unwrap();
        assert_eq!(report.new, 3);
        let (_, synced) = app
            .get(&owner, &format!("/api/v1/mailboxes/{}", mailbox["id"]))
            .await;
        assert_eq!(synced["state"], "synced");
        assert!(
            synced["lag_seconds"].as_i64().is_some_and(|lag| lag < 3600),
            "{synced}"
        );
        assert!(
            mailbox["lag_seconds"].is_null(),
            "not synced yet: {mailbox}"
        );
        // HTML from strangers is served without active content (X7).
        let (_, scripted) = app.get(&owner, "/api/v1/emails?q=click").await;
        let shown = scripted["items"][0]["html"].as_str().unwrap();
        assert!(
            shown.contains("Hi")
                && !shown.contains("script")
                && !shown.contains("onclick")
                && !shown.contains("javascript:"),
            "{shown}"
        );

        let (status, list) = app.get(&owner, "/api/v1/emails?status=received").await;
        assert_eq!(status, StatusCode::OK);
        let subjects: Vec<_> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["subject"].as_str().unwrap())
            .collect();
        assert_eq!(
            subjects,
            ["Click", "Newsletter", "Pricing question"],
            "newest first"
        );
        let first = &list["items"][2];
        assert_eq!(
            (
                first["author"].as_str(),
                first["can_reply"].as_bool(),
                first["direction"].as_str()
            ),
            (Some("contact"), Some(true), Some("inbound"))
        );
        assert_eq!(first["from"]["address"], "ann@acme.example");
        let (_, found) = app.get(&owner, "/api/v1/emails?q=pricing").await;
        assert_eq!(found["items"].as_array().unwrap().len(), 1);
        let (status, problem) = app.get(&owner, "/api/v1/emails?status=lost").await;
        assert_eq!(
            (status, problem["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("status"))
        );

        // A person and a company created after the emails arrived find them (E6).
        let (_, company) = app
            .post(
                &owner,
                "/api/v1/companies",
                json!({"name": "Acme", "domain": "acme.example"}),
            )
            .await;
        let (_, person) = app
            .post(
                &owner,
                "/api/v1/persons",
                json!({"first_name": "Ann", "emails": ["Ann@Acme.example"]}),
            )
            .await;
        for path in [
            format!("/api/v1/persons/{}/timeline", person["id"]),
            format!("/api/v1/companies/{}/timeline", company["id"]),
        ] {
            let (status, timeline) = app.get(&owner, &path).await;
            assert_eq!(status, StatusCode::OK);
            let kinds: Vec<_> = timeline["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["kind"].as_str().unwrap())
                .collect();
            assert!(kinds.contains(&"email"), "{path}: {timeline}");
            let email = timeline["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["kind"] == "email")
                .unwrap();
            assert_eq!(email["data"]["subject"], "Pricing question");
        }
        let (_, by_person) = app
            .get(
                &owner,
                &format!(
                    "/api/v1/emails?record_type=person&record_id={}",
                    person["id"]
                ),
            )
            .await;
        assert_eq!(by_person["items"].as_array().unwrap().len(), 1);

        // Visibility `owner` hides the mailbox's emails from everyone else (E12).
        let email_path = format!("/api/v1/emails/{}", first["id"]);
        assert_eq!(app.get(&colleague, &email_path).await.0, StatusCode::OK);
        let (status, _) = app
            .patch(
                &owner,
                &format!("/api/v1/mailboxes/{}", mailbox["id"]),
                json!({"visibility": "owner"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            app.get(&colleague, &email_path).await.0,
            StatusCode::NOT_FOUND
        );
        let (_, theirs) = app.get(&colleague, "/api/v1/emails").await;
        assert_eq!(theirs["items"], json!([]));
        let (_, timeline) = app
            .get(
                &colleague,
                &format!("/api/v1/persons/{}/timeline", person["id"]),
            )
            .await;
        assert!(
            timeline["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["kind"] != "email"),
            "{timeline}"
        );
        assert_eq!(app.get(&owner, &email_path).await.0, StatusCode::OK);
        let outsider = app.login("outside", "admin");
        assert_eq!(
            app.get(&outsider, &email_path).await.0,
            StatusCode::NOT_FOUND
        );

        session.delete(&folder).await.unwrap();
        session.logout().await;
    }
}

use synced::synced_emails_are_listed_on_timelines_and_follow_visibility;

backend_tests!(synced_emails_are_listed_on_timelines_and_follow_visibility);
