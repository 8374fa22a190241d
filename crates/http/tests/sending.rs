//! Composing and replying over the API on both backends (the sends themselves run in the worker:
//! `crates/runtime/tests/sending.rs`): records, templates rendered at compose time, timelines,
//! Idempotency-Key, visibility, reply rules, and the errors of bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use diesel::prelude::*;
use herald_testdb::{TestDb, backend_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Login, TestApp, mailbox};

fn set_plan(app: &TestApp, login: &Login, plan: &str) {
    diesel::update(herald_core::schema::accounts::table.find(login.account_id))
        .set(herald_core::schema::accounts::plan.eq(plan))
        .execute(&mut app.test.connect())
        .unwrap();
}

async fn sender(app: &TestApp, name: &str) -> (Login, Value, i64) {
    let me = app.login(name, "member");
    set_plan(app, &me, "automation");
    let (status, created) = app
        .post(&me, "/api/v1/mailboxes", mailbox("alice", true))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (_, person) = app
        .post(
            &me,
            "/api/v1/persons",
            json!({"first_name": "Bob", "last_name": "Lee", "emails": ["bob@herald.test"]}),
        )
        .await;
    (me, created, person["id"].as_i64().unwrap())
}

fn send_jobs(app: &TestApp) -> usize {
    herald_scheduler::storage::list(&mut app.test.connect(), None, Some("send_email"), 100)
        .unwrap()
        .len()
}

async fn an_email_composed_from_a_record_is_on_its_timeline_at_once(test: TestDb) {
    let app = TestApp::spawn(test).await;
    let (me, mailbox, person) = sender(&app, "compose").await;
    let (status, email) = app
        .post(
            &me,
            "/api/v1/emails",
            json!({"record": {"type": "person", "id": person}, "subject": "Offer",
                   "text": "Hello", "html": "<p>Hello</p>"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{email}");
    assert_eq!(email["status"], "sending");
    assert_eq!(email["mailbox_id"], mailbox["id"]);
    assert_eq!(
        email["to"][0]["address"], "bob@herald.test",
        "the primary address"
    );
    assert_eq!(email["author"], "user");
    assert_eq!(email["can_reply"], false);
    let (_, timeline) = app
        .get(&me, &format!("/api/v1/persons/{person}/timeline"))
        .await;
    assert_eq!(timeline["items"][0]["id"], email["id"]);
    assert_eq!(timeline["items"][0]["data"]["status"], "sending");
    let (_, listed) = app.get(&me, "/api/v1/emails?status=sending").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(send_jobs(&app), 1);

    // From a deal: to its person, with a template rendered now (T4), on the deal's timeline.
    let (_, deal) = app
        .post(
            &me,
            "/api/v1/deals",
            json!({"title": "Renewal", "person_id": person}),
        )
        .await;
    let (_, template) = app
        .post(
            &me,
            "/api/v1/templates",
            json!({"name": "Deal", "subject": "About {{ deal.title }}",
                   "text": "Hi {{ person.first_name }}, {{ sender.address }} here."}),
        )
        .await;
    let (status, from_deal) = app
        .post(
            &me,
            "/api/v1/emails",
            json!({"record": {"type": "deal", "id": deal["id"]}, "template_id": template["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{from_deal}");
    assert_eq!(from_deal["subject"], "About Renewal");
    assert_eq!(from_deal["text"], "Hi Bob, alice@herald.test here.");
    assert_eq!(from_deal["to"][0]["address"], "bob@herald.test");
    let (_, timeline) = app
        .get(&me, &format!("/api/v1/deals/{}/timeline", deal["id"]))
        .await;
    assert_eq!(timeline["items"][0]["id"], from_deal["id"]);
}

async fn a_retry_with_the_same_idempotency_key_does_not_send_again(test: TestDb) {
    let app = TestApp::spawn(test).await;
    let (me, _, person) = sender(&app, "idem").await;
    let body = json!({"record": {"type": "person", "id": person}, "subject": "Once", "text": "x"});
    let post = || {
        app.client
            .post(app.url("/api/v1/emails"))
            .bearer_auth(&me.token)
            .header("Idempotency-Key", "compose-1")
            .json(&body)
            .send()
    };
    let first = post().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let second = post().await.unwrap();
    assert_eq!(second.status(), StatusCode::CREATED);
    assert_eq!(second.headers().get("idempotent-replayed").unwrap(), "true");
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["id"], second["id"]);
    assert_eq!(send_jobs(&app), 1, "one send");
}

async fn bad_input_is_refused_with_the_field_named(test: TestDb) {
    let app = TestApp::spawn(test).await;
    let nobody = app.login("nomailbox", "member");
    let (_, lone) = app
        .post(
            &nobody,
            "/api/v1/persons",
            json!({"first_name": "No", "last_name": "Mail"}),
        )
        .await;
    let (status, problem) = app
        .post(
            &nobody,
            "/api/v1/emails",
            json!({"record": {"type": "person", "id": lone["id"]}, "subject": "s", "text": "t"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["field"], "mailbox_id", "{problem}");

    let (me, _, person) = sender(&app, "badinput").await;
    let (_, no_address) = app
        .post(
            &me,
            "/api/v1/persons",
            json!({"first_name": "No", "last_name": "Address"}),
        )
        .await;
    let record = json!({"type": "person", "id": person});
    for (body, field) in [
        // Another account's person does not exist here.
        (
            json!({"record": {"type": "person", "id": lone["id"]}, "subject": "s", "text": "t"}),
            "record",
        ),
        (
            json!({"record": {"type": "person", "id": no_address["id"]}, "subject": "s", "text": "t"}),
            "to",
        ),
        (
            json!({"record": {"type": "lead", "id": 1}, "subject": "s", "text": "t"}),
            "record.type",
        ),
        (json!({"record": record, "text": "t"}), "subject"),
        (json!({"record": record, "subject": "s"}), "text"),
        (
            json!({"record": record, "subject": "s", "text": "t",
                "to": [{"address": "bob@herald.test\r\nBcc: evil@x.example"}]}),
            "to[0].address",
        ),
        (
            json!({"record": record, "subject": "s", "text": "t", "to": [{"address": "not an address"}]}),
            "to[0].address",
        ),
        (
            json!({"record": record, "subject": "s", "text": "t", "send_at": "2020-01-01T10:00:00Z"}),
            "send_at",
        ),
        (
            json!({"record": record, "subject": "s", "text": "t", "send_at": "2030-01-01T10:00"}),
            "time_zone",
        ),
        (
            json!({"record": record, "subject": "s", "text": "t", "send_at": "2030-01-01T10:00",
                "time_zone": "Mars/Olympus"}),
            "time_zone",
        ),
        (
            json!({"record": record, "subject": "s", "text": "t", "send_at": "next tuesday"}),
            "send_at",
        ),
    ] {
        let (status, problem) = app.post(&me, "/api/v1/emails", body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {problem}"
        );
        assert_eq!(problem["field"], field, "{body}: {problem}");
    }
    assert_eq!(send_jobs(&app), 0, "nothing queued");
    // A subject or name trying to start a header is one line.
    let (status, email) = app
        .post(
            &me,
            "/api/v1/emails",
            json!({"record": record, "subject": "Hi\r\nBcc: evil@x.example", "text": "t",
                   "to": [{"name": "Bob\r\nX-Evil: 1", "address": "bob@herald.test"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{email}");
    assert_eq!(email["subject"], "Hi  Bcc: evil@x.example");
    assert_eq!(email["to"][0]["name"], "Bob  X-Evil: 1");
}

async fn replies_follow_the_rules_and_owner_only_mailboxes_hide_their_sends(test: TestDb) {
    let app = TestApp::spawn(test).await;
    let (me, mailbox, person) = sender(&app, "replies").await;
    let colleague = app.add_user(me.account_id, "colleague@replies.example.com", "member");
    let (_, email) = app
        .post(
            &me,
            "/api/v1/emails",
            json!({"record": {"type": "person", "id": person}, "subject": "Mine", "text": "x"}),
        )
        .await;
    let path = format!("/api/v1/emails/{}", email["id"]);
    // Written by a user of the CRM: no reply.
    let (status, problem) = app.get(&me, &format!("{path}/reply-draft")).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("reply_not_allowed"))
    );
    let (status, problem) = app
        .post(&me, &format!("{path}/reply"), json!({"text": "x"}))
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("reply_not_allowed"))
    );
    // Once sending has started it cannot be cancelled, rescheduled or sent now.
    for (method, suffix) in [("POST", "/cancel"), ("POST", "/send-now")] {
        let (status, problem) = app
            .send(
                method.parse().unwrap(),
                &me,
                &format!("{path}{suffix}"),
                None,
            )
            .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (StatusCode::CONFLICT, Some("send_started")),
            "{suffix}"
        );
    }
    let (status, problem) = app
        .patch(&me, &path, json!({"send_at": "2031-01-01T09:00:00Z"}))
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("send_started"))
    );
    // A colleague sees it, but may not change its sending.
    assert_eq!(app.get(&colleague, &path).await.0, StatusCode::OK);
    let (status, _) = app
        .post(&colleague, &format!("{path}/retry"), json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Owner-only: hidden from the colleague everywhere.
    let (status, _) = app
        .patch(
            &me,
            &format!("/api/v1/mailboxes/{}", mailbox["id"]),
            json!({"visibility": "owner"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.get(&colleague, &path).await.0, StatusCode::NOT_FOUND);
    let (_, listed) = app.get(&colleague, "/api/v1/emails").await;
    assert!(listed["items"].as_array().unwrap().is_empty());
    assert_eq!(app.get(&me, &path).await.0, StatusCode::OK);
}

backend_tests!(
    an_email_composed_from_a_record_is_on_its_timeline_at_once,
    a_retry_with_the_same_idempotency_key_does_not_send_again,
    bad_input_is_refused_with_the_field_named,
    replies_follow_the_rules_and_owner_only_mailboxes_hide_their_sends,
);
