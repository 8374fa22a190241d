//! The messaging inbox over the API on both backends: channels, Twilio and Messenger webhooks
//! signed as the providers sign them (and refused when not), replays, concurrent webhooks for one
//! contact, the views with counts, availability, assignment with its audit trail, close and
//! reopen, and other accounts kept out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use diesel::{QueryDsl, RunQueryDsl};
use herald_testdb::{TestDb, backend_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Login, TestApp};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "twilio-auth-token";
/// The URL the app believes it is reached at (the default `public_url`).
const PUBLIC: &str = "http://127.0.0.1:8080";

async fn twilio_channel(app: &TestApp, me: &Login) -> Value {
    let (status, channel) = app
        .post(
            me,
            "/api/v1/channels",
            json!({"kind": "twilio_whatsapp", "account_sid": SID, "auth_token": TOKEN,
                   "sender": "+14155238886"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{channel}");
    channel
}

fn twilio_form(sid: &str, from: &str, body: &str) -> Vec<(String, String)> {
    [
        ("AccountSid", SID),
        ("MessageSid", sid),
        ("From", from),
        ("To", "whatsapp:+14155238886"),
        ("ProfileName", "Ann Lee"),
        ("Body", body),
        ("NumMedia", "1"),
        (
            "MediaUrl0",
            "https://api.twilio.com/2010-04-01/Accounts/AC/Messages/MM/Media/ME1",
        ),
        ("MediaContentType0", "image/jpeg"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

async fn post_twilio(
    app: &TestApp,
    channel: &Value,
    form: &[(String, String)],
    signature: Option<String>,
) -> StatusCode {
    let path = format!("/webhooks/twilio/{}", channel["id"]);
    let signature = signature.unwrap_or_else(|| {
        herald_providers::twilio::signature(TOKEN, &format!("{PUBLIC}{path}"), form)
    });
    app.client
        .post(app.url(&path))
        .header("X-Twilio-Signature", signature)
        .form(form)
        .send()
        .await
        .unwrap()
        .status()
}

async fn view(app: &TestApp, who: &Login, name: &str) -> Value {
    let (status, page) = app
        .get(who, &format!("/api/v1/conversations?view={name}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page
}

async fn twilio_messages_are_checked_stored_once_and_threaded_per_contact(test: TestDb) {
    let app = TestApp::spawn(test).await;
    let me = app.login("twilio", "member");
    let channel = twilio_channel(&app, &me).await;
    assert_eq!(
        channel["webhook_url"],
        format!("{PUBLIC}/webhooks/twilio/{}", channel["id"])
    );
    assert!(channel.get("auth_token").is_none(), "{channel}");
    assert!(!channel.to_string().contains(TOKEN));

    let form = twilio_form("SM0001", "whatsapp:+15551230001", "Hello there");
    // Bad, missing, or for another URL: refused, nothing stored.
    assert_eq!(
        post_twilio(&app, &channel, &form, Some("bm90IGl0".into())).await,
        StatusCode::FORBIDDEN
    );
    let other_url = herald_providers::twilio::signature(TOKEN, "https://evil.example/x", &form);
    assert_eq!(
        post_twilio(&app, &channel, &form, Some(other_url)).await,
        StatusCode::FORBIDDEN
    );
    let unsigned = app
        .client
        .post(app.url(&format!("/webhooks/twilio/{}", channel["id"])))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), StatusCode::FORBIDDEN);
    let (_, problem) = support::read(unsigned).await;
    assert_eq!(problem["code"], "invalid_signature");
    assert_eq!(view(&app, &me, "all").await["counts"]["all"], 0);

    assert_eq!(
        post_twilio(&app, &channel, &form, None).await,
        StatusCode::OK
    );
    // Twilio's retry of the same message: stored once.
    assert_eq!(
        post_twilio(&app, &channel, &form, None).await,
        StatusCode::OK
    );
    let unassigned = view(&app, &me, "unassigned").await;
    assert_eq!(unassigned["counts"]["unassigned"], 1, "{unassigned}");
    let conversation = &unassigned["items"][0];
    assert_eq!(conversation["contact_id"], "whatsapp:+15551230001");
    assert_eq!(conversation["contact_name"], "Ann Lee");
    let (_, messages) = app
        .get(
            &me,
            &format!("/api/v1/conversations/{}/messages", conversation["id"]),
        )
        .await;
    let items = messages["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{messages}");
    assert_eq!(items[0]["body"], "Hello there");
    assert_eq!(items[0]["media"][0]["content_type"], "image/jpeg");
    assert_eq!(items[0]["provider_message_id"], "SM0001");

    // Another account's SID on this channel's URL is refused.
    let mut foreign = twilio_form("SM0002", "whatsapp:+15551230001", "x");
    foreign[0].1 = "AC99999999999999999999999999999999".into();
    assert_eq!(
        post_twilio(&app, &channel, &foreign, None).await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

async fn concurrent_webhooks_for_one_contact_make_one_conversation(test: TestDb) {
    let app = TestApp::spawn(test).await;
    let me = app.login("burst", "member");
    let channel = twilio_channel(&app, &me).await;
    let posts = (0..100).map(|n| {
        let (app, channel) = (&app, &channel);
        async move {
            let form = twilio_form(
                &format!("SM{n:04}"),
                "whatsapp:+15550000000",
                &format!("m{n}"),
            );
            post_twilio(app, channel, &form, None).await
        }
    });
    let statuses = futures::future::join_all(posts).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let all = view(&app, &me, "all").await;
    assert_eq!(all["counts"]["all"], 1, "{all}");
    let id = &all["items"][0]["id"];
    let (_, messages) = app
        .get(
            &me,
            &format!("/api/v1/conversations/{id}/messages?limit=200"),
        )
        .await;
    let mut bodies: Vec<String> = messages["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(bodies.len(), 100, "every message once");
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 100);
    let ids: Vec<i64> = messages["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in the order stored");
}

async fn messenger_handshake_and_signed_events(test: TestDb) {
    let app = TestApp::spawn(test).await;
    let me = app.login("messenger", "member");
    let (status, channel) = app
        .post(
            &me,
            "/api/v1/channels",
            json!({"kind": "messenger", "page_id": "1234567890", "page_access_token": "EAAB",
                   "app_secret": "app-secret", "verify_token": "verify-me"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{channel}");
    let path = format!("/webhooks/messenger/{}", channel["id"]);
    let handshake = |token: &str| {
        app.client
            .get(app.url(&format!(
                "{path}?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444"
            )))
            .send()
    };
    let ok = handshake("verify-me").await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.text().await.unwrap(), "1158201444");
    assert_eq!(
        handshake("wrong").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );

    let body = json!({"object": "page", "entry": [{"id": "1234567890", "time": 1, "messaging": [
        {"sender": {"id": "PSID-1"}, "recipient": {"id": "1234567890"}, "timestamp": 1,
         "message": {"mid": "m_1", "text": "Hi page",
                     "attachments": [{"type": "image", "payload": {"url": "https://cdn.example/a.jpg"}}]}},
        {"sender": {"id": "1234567890"}, "recipient": {"id": "PSID-1"}, "timestamp": 2,
         "message": {"mid": "m_2", "text": "Hi from the page inbox", "is_echo": true}}
    ]}]})
    .to_string();
    let post = |body: String, signature: String| {
        app.client
            .post(app.url(&path))
            .header("X-Hub-Signature-256", signature)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    let signed = herald_providers::messenger::signature("app-secret", body.as_bytes());
    // The signature covers the raw bytes: the same JSON spaced differently is refused.
    let respaced = body.replace("\"Hi page\"", "\"Hi page\" ");
    assert_eq!(
        post(respaced, signed.clone()).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post(body.clone(), signed.clone()).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        post(body, signed).await.unwrap().status(),
        StatusCode::OK,
        "a redelivery"
    );
    let all = view(&app, &me, "all").await;
    assert_eq!(all["counts"]["all"], 1);
    let (_, messages) = app
        .get(
            &me,
            &format!("/api/v1/conversations/{}/messages", all["items"][0]["id"]),
        )
        .await;
    let items = messages["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{messages}");
    assert_eq!(
        (
            items[0]["direction"].as_str(),
            items[1]["direction"].as_str()
        ),
        (Some("inbound"), Some("outbound"))
    );
    assert_eq!(items[0]["media"][0]["url"], "https://cdn.example/a.jpg");
}

async fn views_assignment_availability_close_and_reopen(test: TestDb) {
    let app = TestApp::spawn(test).await;
    let me = app.login("views", "member");
    let colleague = app.add_user(me.account_id, "colleague@views.example.com", "member");
    let outsider = app.login("outside", "member");
    let channel = twilio_channel(&app, &me).await;
    post_twilio(
        &app,
        &channel,
        &twilio_form("SM1", "whatsapp:+15551110001", "first"),
        None,
    )
    .await;
    let id = view(&app, &me, "unassigned").await["items"][0]["id"].clone();
    let path = format!("/api/v1/conversations/{id}");

    // Assigned to the colleague: theirs is `mine`, mine is `others`.
    let (status, assigned) = app
        .send(
            reqwest::Method::PUT,
            &me,
            &format!("{path}/assignee"),
            Some(json!({"assignee_id": colleague.user_id})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{assigned}");
    assert_eq!(view(&app, &colleague, "mine").await["counts"]["mine"], 1);
    assert_eq!(view(&app, &me, "others").await["counts"]["others"], 1);
    assert_eq!(
        view(&app, &me, "unassigned").await["counts"]["unassigned"],
        0
    );

    // Unavailable: nobody may give them a conversation, themselves included; theirs stay.
    let (status, _) = app
        .send(
            reqwest::Method::PUT,
            &colleague,
            "/api/v1/me/availability",
            Some(json!({"availability": "unavailable"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for who in [&me, &colleague] {
        let (status, problem) = app
            .send(
                reqwest::Method::PUT,
                who,
                &format!("{path}/assignee"),
                Some(json!({"assignee_id": colleague.user_id})),
            )
            .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (StatusCode::CONFLICT, Some("assignee_unavailable"))
        );
    }
    let (status, _) = app
        .send(
            reqwest::Method::PUT,
            &me,
            &format!("{path}/assignee"),
            Some(json!({"assignee_id": null})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, problem) = app
        .send(
            reqwest::Method::PUT,
            &colleague,
            &format!("{path}/assignee"),
            Some(json!({"assignee_id": colleague.user_id})),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("assignee_unavailable"))
    );
    let (status, problem) = app
        .send(
            reqwest::Method::PUT,
            &me,
            "/api/v1/me/availability",
            Some(json!({"availability": "away"})),
        )
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("availability"))
    );

    // Back to me, closed, then the contact writes: reopened into `mine`.
    app.send(
        reqwest::Method::PUT,
        &me,
        &format!("{path}/assignee"),
        Some(json!({"assignee_id": me.user_id})),
    )
    .await;
    let (status, closed) = app.post(&me, &format!("{path}/close"), json!({})).await;
    assert_eq!(
        (status, closed["status"].as_str()),
        (StatusCode::OK, Some("closed"))
    );
    assert_eq!(
        view(&app, &colleague, "closed").await["counts"]["closed"],
        1
    );
    assert_eq!(view(&app, &me, "mine").await["counts"]["mine"], 0);
    post_twilio(
        &app,
        &channel,
        &twilio_form("SM2", "whatsapp:+15551110001", "again"),
        None,
    )
    .await;
    let mine = view(&app, &me, "mine").await;
    assert_eq!(mine["counts"]["mine"], 1, "{mine}");
    assert_eq!(mine["counts"]["closed"], 0);
    let (_, detail) = app.get(&me, &path).await;
    let kinds: Vec<&str> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["assigned", "assigned", "assigned", "closed", "reopened"],
        "{detail}"
    );
    let first = &detail["events"][0];
    assert_eq!(
        (
            first["actor_id"].as_i64(),
            first["from_user_id"].as_i64(),
            first["to_user_id"].as_i64()
        ),
        (Some(me.user_id), None, Some(colleague.user_id))
    );
    assert!(
        detail["events"][4]["actor_id"].is_null(),
        "the contact reopened it"
    );

    // Another account sees none of it.
    assert_eq!(app.get(&outsider, &path).await.0, StatusCode::NOT_FOUND);
    assert_eq!(view(&app, &outsider, "all").await["counts"]["all"], 0);
    let (status, _) = app
        .delete(&outsider, &format!("/api/v1/channels/{}", channel["id"]))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .delete(&colleague, &format!("/api/v1/channels/{}", channel["id"]))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only its owner");
    let (status, problem) = app.get(&me, "/api/v1/conversations?view=everything").await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("view"))
    );
}

/// The counts the database keeps follow every way a conversation moves between views: arrival,
/// assignment, close, deletion, and its assignee's deletion; each count is its view's length.
async fn view_counts_follow_every_change(test: TestDb) {
    let app = TestApp::spawn(test).await;
    let me = app.login("counts", "admin");
    let colleague = app.add_user(me.account_id, "colleague@counts.example.com", "member");
    let channel = twilio_channel(&app, &me).await;
    for n in 1..=4 {
        let form = twilio_form(&format!("SM{n}"), &format!("whatsapp:+1555000000{n}"), "hi");
        assert_eq!(
            post_twilio(&app, &channel, &form, None).await,
            StatusCode::OK
        );
    }
    let ids: Vec<i64> = view(&app, &me, "all").await["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    let path = |id: i64| format!("/api/v1/conversations/{id}");
    for (id, assignee) in [(ids[0], colleague.user_id), (ids[1], me.user_id)] {
        let (status, body) = app
            .send(
                reqwest::Method::PUT,
                &me,
                &format!("{}/assignee", path(id)),
                Some(json!({"assignee_id": assignee})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, _) = app
        .post(&me, &format!("{}/close", path(ids[2])), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);

    let check = async |expected: [(&str, usize); 5]| {
        for (name, n) in expected {
            let page = view(&app, &me, name).await;
            assert_eq!(page["counts"][name], n, "{name}: {page}");
            assert_eq!(page["items"].as_array().unwrap().len(), n, "{name}: {page}");
        }
    };
    check([
        ("all", 4),
        ("mine", 1),
        ("unassigned", 1),
        ("others", 1),
        ("closed", 1),
    ])
    .await;

    // The colleague leaves: their conversation is unassigned again.
    diesel::delete(herald_core::schema::users::table.find(colleague.user_id))
        .execute(&mut app.test.connect())
        .unwrap();
    check([
        ("all", 4),
        ("mine", 1),
        ("unassigned", 2),
        ("others", 0),
        ("closed", 1),
    ])
    .await;

    let (status, _) = app.delete(&me, &path(ids[1])).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    check([
        ("all", 3),
        ("mine", 0),
        ("unassigned", 2),
        ("others", 0),
        ("closed", 1),
    ])
    .await;
}

backend_tests!(
    twilio_messages_are_checked_stored_once_and_threaded_per_contact,
    concurrent_webhooks_for_one_contact_make_one_conversation,
    messenger_handshake_and_signed_events,
    views_assignment_availability_close_and_reopen,
    view_counts_follow_every_change,
);
