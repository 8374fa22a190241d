//! The API over real HTTP on port 0, on both backends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use herald_core::identity::ApiToken;
use herald_testdb::{TestDb, backend_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Login, TestApp, read};

async fn requests_without_a_valid_token_are_unauthorized(test: TestDb) {
    let app = TestApp::spawn(test).await;
    let login = app.login("acme", "admin");
    let (status, _) = app.get(&login, "/api/v1/me").await;
    assert_eq!(status, StatusCode::OK);

    let r = app.client.get(app.url("/api/v1/me")).send().await.unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let (status, body) = read(r).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );

    let bad = Login {
        token: "hrld_not-a-real-token".into(),
        ..login
    };
    assert_eq!(
        app.get(&bad, "/api/v1/persons").await.0,
        StatusCode::UNAUTHORIZED
    );

    let r = app
        .client
        .get(app.url("/api/v1/me"))
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(read(r).await.0, StatusCode::UNAUTHORIZED);

    let login = Login {
        token: bad.token.clone(),
        ..app.login("acme2", "member")
    };
    let real = app.login("acme3", "member");
    ApiToken::revoke(&mut app.test.connect(), &real.token).unwrap();
    assert_eq!(
        app.get(&real, "/api/v1/me").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get(&login, "/api/v1/me").await.0,
        StatusCode::UNAUTHORIZED
    );
}

async fn another_accounts_records_are_not_found(test: TestDb) {
    let app = TestApp::spawn(test).await;
    let alice = app.login("alpha", "admin");
    let bob = app.login("beta", "admin");
    for (path, body) in [
        ("/api/v1/persons", json!({"first_name": "Ann"})),
        ("/api/v1/companies", json!({"name": "Acme"})),
        ("/api/v1/deals", json!({"title": "Big one"})),
        ("/api/v1/leads", json!({"title": "Maybe"})),
    ] {
        let (status, created) = app.post(&alice, path, body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let item = format!("{path}/{}", created["id"]);
        assert_eq!(app.get(&alice, &item).await.0, StatusCode::OK);
        let (status, problem) = app.get(&bob, &item).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );
        assert_eq!(
            app.patch(&bob, &item, json!({})).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            app.get(&bob, &format!("{item}/timeline")).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(app.delete(&bob, &item).await.0, StatusCode::NOT_FOUND);
        let (_, list) = app.get(&bob, path).await;
        assert_eq!(list["items"], json!([]));
        assert_eq!(
            app.get(&alice, &item).await.0,
            StatusCode::OK,
            "still there"
        );
    }
    // Bob cannot point his records at Alice's either.
    let (_, company) = app
        .post(&alice, "/api/v1/companies", json!({"name": "Alpha Inc"}))
        .await;
    let (status, problem) = app
        .post(
            &bob,
            "/api/v1/persons",
            json!({"first_name": "B", "company_id": company["id"]}),
        )
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("company_id"))
    );
}

async fn records_support_create_read_update_delete(test: TestDb) {
    let app = TestApp::spawn(test).await;
    let me = app.login("crud", "member");
    let (status, company) = app
        .post(
            &me,
            "/api/v1/companies",
            json!({"name": "Acme", "domain": "ACME.example", "emails": ["info@acme.example"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{company}");
    assert_eq!(company["domain"], "acme.example");
    for member in ["id", "created_at", "updated_at"] {
        assert!(company.get(member).is_some());
    }
    assert!(company["created_at"].as_str().unwrap().ends_with('Z'));

    let (status, person) = app
        .post(
            &me,
            "/api/v1/persons",
            json!({"first_name": "Ann", "last_name": "Lee", "emails": ["ann@acme.example"], "phones": ["+1 415 555 0100"], "company_id": company["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{person}");
    assert_eq!(person["phones"], json!(["+14155550100"]));
    let person_path = format!("/api/v1/persons/{}", person["id"]);

    let (status, deal) = app
        .post(&me, "/api/v1/deals", json!({"title": "Renewal", "value": 1250.5, "currency": "usd", "person_id": person["id"], "company_id": company["id"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{deal}");
    assert_eq!(
        (deal["value"].as_str(), deal["currency"].as_str()),
        (Some("1250.5"), Some("USD"))
    );
    let (status, lead) = app
        .post(
            &me,
            "/api/v1/leads",
            json!({"title": "Inbound", "person_id": person["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{lead}");

    let (status, patched) = app
        .patch(
            &me,
            &person_path,
            json!({"last_name": "Smith", "company_id": null}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            patched["last_name"].as_str(),
            patched["first_name"].as_str()
        ),
        (Some("Smith"), Some("Ann"))
    );
    assert_eq!(patched["company_id"], Value::Null);
    assert_eq!(patched["emails"], person["emails"]);

    let (status, timeline) = app.get(&me, &format!("{person_path}/timeline")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(timeline["items"][0]["kind"], "record_created");
    assert_eq!(timeline["next_cursor"], Value::Null);

    let (status, body) = app.delete(&me, &person_path).await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    assert_eq!(app.get(&me, &person_path).await.0, StatusCode::NOT_FOUND);
    let (_, deal_after) = app.get(&me, &format!("/api/v1/deals/{}", deal["id"])).await;
    assert_eq!(
        deal_after["person_id"],
        Value::Null,
        "a deleted person leaves the deal without one"
    );
}

async fn bad_input_is_refused_with_the_field_named(test: TestDb) {
    let app = TestApp::spawn(test).await;
    let me = app.login("valid", "member");
    let cases = [
        (
            json!({"first_name": "Ann", "emails": ["ann@example.com", "not-an-email"]}),
            "emails[1]",
        ),
        (json!({"first_name": "  "}), "first_name"),
        (json!({"last_name": "No first name"}), "body"),
        (
            json!({"first_name": "Ann", "emails": "ann@example.com"}),
            "emails",
        ),
        (
            json!({"first_name": "Ann", "phones": ["call me"]}),
            "phones[0]",
        ),
        (json!({"first_name": "Ann", "shoe_size": 44}), "shoe_size"),
        (
            json!({"first_name": "Ann", "company_id": 999999}),
            "company_id",
        ),
    ];
    for (body, field) in cases {
        let (status, problem) = app.post(&me, "/api/v1/persons", body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {problem}"
        );
        assert_eq!(problem["code"], "validation_failed");
        assert_eq!(problem["field"], field, "{body}: {problem}");
    }
    let (status, problem) = app
        .post(
            &me,
            "/api/v1/deals",
            json!({"title": "X", "value": "12,50", "currency": "EUR"}),
        )
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("value"))
    );
    assert_eq!(
        app.post(&me, "/api/v1/persons", json!([])).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (_, list) = app.get(&me, "/api/v1/persons").await;
    assert_eq!(list["items"], json!([]), "nothing was stored");

    let r = app
        .client
        .post(app.url("/api/v1/persons"))
        .bearer_auth(&me.token)
        .header("content-type", "application/json")
        .body("{\"first_name\": ")
        .send()
        .await
        .unwrap();
    let (status, problem) = read(r).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_json"))
    );

    let r = app
        .client
        .post(app.url("/api/v1/persons"))
        .bearer_auth(&me.token)
        .body("first_name=Ann")
        .send()
        .await
        .unwrap();
    let (status, problem) = read(r).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("unsupported_media_type")
        )
    );

    let huge = json!({"first_name": "A".repeat(100 * 1024)});
    let (status, problem) = app.post(&me, "/api/v1/persons", huge).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );

    let (status, problem) = app.get(&me, "/api/v1/persons?limit=0").await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("limit"))
    );
    let (status, problem) = app.get(&me, "/api/v1/persons?cursor=garbage!").await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("cursor"))
    );
    assert_eq!(
        app.get(&me, "/api/v1/persons/not-a-number").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&me, "/api/v1/nothing-here").await.0,
        StatusCode::NOT_FOUND
    );
    let r = app
        .client
        .put(app.url("/api/v1/persons"))
        .bearer_auth(&me.token)
        .send()
        .await
        .unwrap();
    assert_eq!(read(r).await.0, StatusCode::METHOD_NOT_ALLOWED);
}

async fn lists_page_with_cursors_newest_first(test: TestDb) {
    let app = TestApp::spawn(test).await;
    let me = app.login("pages", "member");
    for i in 0..5 {
        app.post(&me, "/api/v1/companies", json!({"name": format!("C{i}")}))
            .await;
    }
    let mut names = Vec::new();
    let mut path = "/api/v1/companies?limit=2".to_owned();
    loop {
        let (status, page) = app.get(&me, &path).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page["items"].as_array().unwrap().len() <= 2);
        names.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/companies?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(names, ["C4", "C3", "C2", "C1", "C0"]);
}

async fn idempotency_key_returns_the_first_response(test: TestDb) {
    let app = TestApp::spawn(test).await;
    let me = app.login("idem", "member");
    let send = |body: Value| {
        app.client
            .post(app.url("/api/v1/persons"))
            .bearer_auth(&me.token)
            .header("idempotency-key", "create-ann-1")
            .json(&body)
            .send()
    };
    let first = send(json!({"first_name": "Ann"})).await.unwrap();
    assert!(first.headers().get("idempotent-replayed").is_none());
    let (status, first) = read(first).await;
    assert_eq!(status, StatusCode::CREATED);
    let again = send(json!({"first_name": "Ann"})).await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let (status, again) = read(again).await;
    assert_eq!((status, &again), (StatusCode::CREATED, &first));
    let (_, list) = app.get(&me, "/api/v1/persons").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "created once");
    let (status, problem) = read(send(json!({"first_name": "Bob"})).await.unwrap()).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("idempotency_key_reused")
        )
    );
}

async fn concurrent_retries_with_one_idempotency_key_create_once(test: TestDb) {
    let app = TestApp::spawn(test).await;
    let me = app.login("race", "member");
    let requests = (0..8).map(|_| {
        app.client
            .post(app.url("/api/v1/companies"))
            .bearer_auth(&me.token)
            .header("idempotency-key", "same")
            .json(&json!({"name": "Once"}))
            .send()
    });
    let responses = futures::future::join_all(requests).await;
    let mut ids = Vec::new();
    for r in responses {
        let (status, body) = read(r.unwrap()).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(body["id"].clone());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1);
    let (_, list) = app.get(&me, "/api/v1/companies").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

async fn only_admins_add_users_and_users_are_listed_with_availability(test: TestDb) {
    let app = TestApp::spawn(test).await;
    let admin = app.login("team", "admin");
    let member = app.add_user(admin.account_id, "member@team.example.com", "member");
    let (status, problem) = app
        .post(
            &member,
            "/api/v1/users",
            json!({"email": "x@team.example.com", "name": "X"}),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let (status, user) = app
        .post(
            &admin,
            "/api/v1/users",
            json!({"email": "New@Team.example.com", "name": "Newbie"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    assert_eq!(
        (user["role"].as_str(), user["available"].as_bool()),
        (Some("member"), Some(true))
    );
    let (status, problem) = app
        .post(
            &admin,
            "/api/v1/users",
            json!({"email": "new@team.example.com", "name": "Again"}),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("user_exists"))
    );
    let (status, problem) = app
        .post(
            &admin,
            "/api/v1/users",
            json!({"email": "ok@team.example.com", "name": "R", "role": "owner"}),
        )
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("role"))
    );
    let (_, users) = app.get(&member, "/api/v1/users").await;
    let emails: Vec<_> = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(
        emails,
        [
            "new@team.example.com",
            "member@team.example.com",
            "admin@team.example.com"
        ]
    );
    let (_, me) = app.get(&member, "/api/v1/me").await;
    assert_eq!(
        (me["user"]["id"].as_i64(), me["account"]["id"].as_i64()),
        (Some(member.user_id), Some(admin.account_id))
    );
    // Another account's users are not listed.
    let other = app.login("elsewhere", "admin");
    let (_, users) = app.get(&other, "/api/v1/users").await;
    assert_eq!(users["items"].as_array().unwrap().len(), 1);
}

async fn health_readiness_metrics_and_openapi_are_served(test: TestDb) {
    let app = TestApp::spawn(test).await;
    let get = |path: &str| app.client.get(app.url(path)).send();
    let r = get("/healthz").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = get("/readyz").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let me = app.login("obs", "member");
    app.get(&me, "/api/v1/persons").await;
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("herald_http_request_duration_seconds"),
        "{metrics}"
    );
    assert!(metrics.contains("herald_queue_jobs"), "{metrics}");
    assert!(
        metrics.contains("herald_mailbox_sync_lag_seconds"),
        "{metrics}"
    );
    assert!(
        metrics.contains("herald_mailboxes{state=\"auth_failed\"} 0"),
        "{metrics}"
    );
    let doc: Value = get("/api/v1/openapi.json")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/api/v1/me",
        "/api/v1/users",
        "/api/v1/persons",
        "/api/v1/persons/{id}",
        "/api/v1/persons/{id}/timeline",
        "/api/v1/companies/{id}",
        "/api/v1/deals/{id}/timeline",
        "/api/v1/leads",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/templates",
        "/api/v1/templates/{id}",
        "/api/v1/templates/{id}/render",
        "/api/v1/mailboxes",
        "/api/v1/mailboxes/{id}",
        "/api/v1/emails",
        "/api/v1/emails/{id}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "OpenAPI lacks {path}");
    }
    assert!(doc["components"]["schemas"].get("Person").is_some());
    assert!(doc["components"]["securitySchemes"].get("bearer").is_some());
}

async fn auth_scheme_and_media_type_are_case_insensitive(test: TestDb) {
    let app = TestApp::spawn(test).await;
    let me = app.login("cases", "member");
    let r = app
        .client
        .post(app.url("/api/v1/persons"))
        .header("authorization", format!("BEARER {}", me.token))
        .header("content-type", "Application/JSON; charset=utf-8")
        .body(r#"{"first_name": "Ann"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(read(r).await.0, StatusCode::CREATED);
}

async fn readiness_fails_while_migrations_are_pending(test: TestDb) {
    let app = TestApp::spawn(test).await;
    let ready = |app: &TestApp| app.client.get(app.url("/readyz")).send();
    assert_eq!(ready(&app).await.unwrap().status(), StatusCode::OK);
    herald_core::db::revert_last_migration(&mut app.test.connect()).unwrap();
    let r = ready(&app).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["reason"].as_str().unwrap().contains("herald migrate"),
        "{body}"
    );
}

backend_tests!(
    auth_scheme_and_media_type_are_case_insensitive,
    readiness_fails_while_migrations_are_pending,
    requests_without_a_valid_token_are_unauthorized,
    another_accounts_records_are_not_found,
    records_support_create_read_update_delete,
    bad_input_is_refused_with_the_field_named,
    lists_page_with_cursors_newest_first,
    idempotency_key_returns_the_first_response,
    concurrent_retries_with_one_idempotency_key_create_once,
    only_admins_add_users_and_users_are_listed_with_availability,
    health_readiness_metrics_and_openapi_are_served,
);
