//! Templates over the API on both backends: scopes and permissions, validation, rendering from
//! each record type, escaping, missing values, the sandbox.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use herald_testdb::{TestDb, backend_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::TestApp;

fn welcome() -> Value {
    json!({
        "name": "Welcome",
        "subject": "Welcome, {{ person.first_name }}!",
        "html": "<p>Hi {{ person.first_name }} from {{ company.name | default('your team') }},</p><p>{{ sender.name }}</p>",
        "text": "Hi {{ person.first_name }}, {{ sender.name }}",
        "scope": "shared"
    })
}

async fn personal_templates_are_private_and_shared_ones_editable_by_author_and_admins(
    test: TestDb,
) {
    let app = TestApp::spawn(test).await;
    let author = app.login("scopes", "member");
    let colleague = app.add_user(author.account_id, "colleague@scopes.example.com", "member");
    let admin = app.add_user(author.account_id, "admin@scopes.example.com", "admin");
    let outsider = app.login("elsewhere", "admin");

    let (status, personal) = app
        .post(
            &author,
            "/api/v1/templates",
            json!({"name": "Mine", "subject": "Hi", "text": "Hello {{ person.first_name }}"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{personal}");
    assert_eq!(personal["scope"], "personal");
    let personal_path = format!("/api/v1/templates/{}", personal["id"]);
    let (status, shared) = app.post(&author, "/api/v1/templates", welcome()).await;
    assert_eq!(status, StatusCode::CREATED, "{shared}");
    let shared_path = format!("/api/v1/templates/{}", shared["id"]);

    // Visibility.
    assert_eq!(
        app.get(&colleague, &personal_path).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.get(&colleague, &shared_path).await.0, StatusCode::OK);
    assert_eq!(
        app.get(&outsider, &shared_path).await.0,
        StatusCode::NOT_FOUND
    );
    let names = |list: Value| -> Vec<String> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names(app.get(&author, "/api/v1/templates").await.1),
        ["Welcome", "Mine"]
    );
    assert_eq!(
        names(app.get(&colleague, "/api/v1/templates").await.1),
        ["Welcome"]
    );
    assert!(names(app.get(&outsider, "/api/v1/templates").await.1).is_empty());

    // Editing a shared template: author and admins only.
    let (status, problem) = app
        .patch(&colleague, &shared_path, json!({"name": "Mine now"}))
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    assert_eq!(
        app.delete(&colleague, &shared_path).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, edited) = app
        .patch(&admin, &shared_path, json!({"name": "Welcome v2"}))
        .await;
    assert_eq!(
        (status, edited["name"].as_str()),
        (StatusCode::OK, Some("Welcome v2"))
    );
    let (status, _) = app
        .patch(
            &author,
            &shared_path,
            json!({"subject": "Hello {{ person.first_name }}"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // Nobody else edits a personal one, not even an admin (they cannot see it).
    assert_eq!(
        app.patch(&admin, &personal_path, json!({"name": "x"}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.delete(&author, &personal_path).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&author, &personal_path).await.0,
        StatusCode::NOT_FOUND
    );
}

async fn saving_reports_syntax_errors_with_position_and_unfillable_placeholders_as_warnings(
    test: TestDb,
) {
    let app = TestApp::spawn(test).await;
    let me = app.login("valid", "member");
    let (status, problem) = app
        .post(&me, "/api/v1/templates", json!({"name": "Broken", "subject": "Hi", "html": "<p>\n  Hi {{ person.first_name </p>"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["code"], "template_syntax_error");
    assert_eq!(
        (problem["field"].as_str(), problem["line"].as_u64()),
        (Some("html"), Some(2))
    );
    assert!(problem["column"].as_u64().unwrap() > 1, "{problem}");

    let (status, saved) = app
        .post(
            &me,
            "/api/v1/templates",
            json!({"name": "Warned", "subject": "{{ person.nickname }}", "text": "{{ discount }}% for {{ person.first_name }}"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{saved}");
    let warned: Vec<_> = saved["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(warned, ["person.nickname", "discount"]);

    for (body, field) in [
        (json!({"name": "", "subject": "x", "text": "y"}), "name"),
        (json!({"name": "N", "subject": "x"}), "html"),
        (
            json!({"name": "N", "subject": "x", "text": "y", "scope": "public"}),
            "scope",
        ),
    ] {
        let (status, problem) = app.post(&me, "/api/v1/templates", body).await;
        assert_eq!(
            (status, problem["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(field))
        );
    }
    let (status, problem) = app
        .post(&me, "/api/v1/templates", json!({"name": "Op", "subject": "x", "text": "{{ person.first_name ~ person.last_name }}"}))
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("template_syntax_error")
        )
    );
    assert_eq!(problem["column"], 22);
}

async fn renders_from_each_record_type_with_html_escaping(test: TestDb) {
    let app = TestApp::spawn(test).await;
    let me = app.login("render", "member");
    let (_, company) = app
        .post(
            &me,
            "/api/v1/companies",
            json!({"name": "Acme & Sons", "domain": "acme.example"}),
        )
        .await;
    let (_, person) = app
        .post(&me, "/api/v1/persons", json!({"first_name": "<script>alert(1)</script>", "last_name": "Lee", "company_id": company["id"]}))
        .await;
    let (_, deal) = app
        .post(&me, "/api/v1/deals", json!({"title": "Renewal", "value": "1200.00", "currency": "EUR", "person_id": person["id"]}))
        .await;
    let (_, lead) = app
        .post(
            &me,
            "/api/v1/leads",
            json!({"title": "Inbound", "person_id": person["id"]}),
        )
        .await;
    let (_, template) = app
        .post(
            &me,
            "/api/v1/templates",
            json!({
                "name": "All",
                "subject": "{{ deal.title | default('Hello') }} for {{ company.name }}",
                "html": "<p>{{ person.first_name }} at {{ company.name }}: {{ deal.value | default('-') }} {{ discount }}%</p>",
                "text": "{{ person.first_name }} at {{ company.name }}, from {{ sender.name }}"
            }),
        )
        .await;
    let render = format!("/api/v1/templates/{}/render", template["id"]);

    let (status, out) = app
        .post(&me, &render, json!({"record": {"type": "person", "id": person["id"]}, "variables": {"discount": 10}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["subject"], "Hello for Acme & Sons");
    assert_eq!(
        out["html"],
        "<p>&lt;script&gt;alert(1)&lt;&#x2f;script&gt; at Acme &amp; Sons: - 10%</p>"
    );
    assert_eq!(
        out["text"],
        "<script>alert(1)</script> at Acme & Sons, from Someone"
    );

    let (status, out) = app
        .post(
            &me,
            &render,
            json!({"record": {"type": "deal", "id": deal["id"]}, "variables": {"discount": 5}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(
        out["subject"], "Renewal for Acme & Sons",
        "the deal's person brings their company"
    );
    assert!(out["html"].as_str().unwrap().contains("1200.00 5%"));

    let (status, out) = app
        .post(
            &me,
            &render,
            json!({"record": {"type": "lead", "id": lead["id"]}, "variables": {"discount": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");

    // A company alone has no person: every missing name is listed.
    let (status, problem) = app
        .post(
            &me,
            &render,
            json!({"record": {"type": "company", "id": company["id"]}}),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("missing_values"))
    );
    assert_eq!(problem["missing"], json!(["discount", "person.first_name"]));

    // A null or blank variable is no value.
    let (status, problem) = app
        .post(&me, &render, json!({"record": {"type": "person", "id": person["id"]}, "variables": {"discount": null}}))
        .await;
    assert_eq!(
        (status, problem["missing"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!(["discount"]))
    );

    let (status, problem) = app
        .post(
            &me,
            &render,
            json!({"record": {"type": "person", "id": 999999}}),
        )
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("record"))
    );
    let (status, problem) = app
        .post(
            &me,
            &render,
            json!({"record": {"type": "person", "id": person["id"]}, "variables": {"person": "x"}}),
        )
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("variables.person"))
    );
    // Another account's record is not found either.
    let other = app.login("other", "member");
    let (_, theirs) = app
        .post(&other, "/api/v1/persons", json!({"first_name": "Zed"}))
        .await;
    let (status, _) = app
        .post(
            &me,
            &render,
            json!({"record": {"type": "person", "id": theirs["id"]}, "variables": {"discount": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

async fn a_runaway_template_fails_with_a_clear_error(test: TestDb) {
    let app = TestApp::spawn(test).await;
    let me = app.login("sandbox", "member");
    let (_, template) = app
        .post(
            &me,
            "/api/v1/templates",
            json!({"name": "Loop", "subject": "x", "text": "{% for i in range(100000) %}{% for j in range(100000) %}.{% endfor %}{% endfor %}"}),
        )
        .await;
    let (status, problem) = app
        .post(
            &me,
            &format!("/api/v1/templates/{}/render", template["id"]),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("template_limit_exceeded")
        )
    );
    assert!(
        problem["detail"].as_str().unwrap().contains("ran too long"),
        "{problem}"
    );
}

backend_tests!(
    personal_templates_are_private_and_shared_ones_editable_by_author_and_admins,
    saving_reports_syntax_errors_with_position_and_unfillable_placeholders_as_warnings,
    renders_from_each_record_type_with_html_escaping,
    a_runaway_template_fails_with_a_clear_error,
);
