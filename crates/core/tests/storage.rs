//! Storage behaviour on both backends: migrations, scoping, validation, tokens, idempotency.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use herald_core::db::{migration_status, revert_last_migration, run_migrations};
use herald_core::domain::Plan;
use herald_core::idempotency::{IdempotencyKey, StoredResponse};
use herald_core::identity::{Account, ApiToken, NewUser, User, bootstrap_if_empty};
use herald_core::pagination::PageRequest;
use herald_core::records::{
    Company, CompanyInput, Deal, DealInput, Person, PersonInput, PersonPatch, Record,
};
use herald_core::timeline::{Timeline, TimelineQuery};
use herald_core::{CoreError, CoreResult, DbConnection, WriteBatcher};
use herald_testdb::{TestDb, backend_tests};
use secrecy::ExposeSecret;

fn account_with_user(conn: &mut DbConnection, name: &str) -> (Account, User) {
    let account = Account::create(conn, name, Plan::Base).unwrap();
    let user = User::create(
        conn,
        account.id,
        &NewUser {
            email: format!("owner@{name}.example.com"),
            name: "Owner".into(),
            role: Some("admin".into()),
        },
    )
    .unwrap();
    (account, user)
}

fn person(first: &str, emails: &[&str]) -> PersonInput {
    PersonInput {
        first_name: first.into(),
        last_name: "Lee".into(),
        emails: emails.iter().map(|e| e.to_string()).collect(),
        phones: vec![],
        company_id: None,
    }
}

async fn migrations_run_up_down_and_up_again(test: TestDb) {
    let mut conn = test.connect();
    let status = migration_status(&mut conn).unwrap();
    assert!(status.pending.is_empty(), "test databases start migrated");
    let applied = status.applied.len();
    assert!(applied >= 1);
    for _ in 0..applied {
        revert_last_migration(&mut conn).unwrap();
    }
    let status = migration_status(&mut conn).unwrap();
    assert!(status.applied.is_empty());
    assert_eq!(status.pending.len(), applied);
    assert_eq!(run_migrations(&mut conn).unwrap().len(), applied);
    // The schema is usable after the round trip.
    account_with_user(&mut conn, "roundtrip");
}

async fn records_of_another_account_are_not_found(test: TestDb) {
    let mut conn = test.connect();
    let (a, _) = account_with_user(&mut conn, "alpha");
    let (b, _) = account_with_user(&mut conn, "beta");
    let p = Person::create(&mut conn, a.id, &person("Ann", &["ann@alpha.example.com"])).unwrap();
    assert_eq!(
        Person::find(&mut conn, a.id, p.id).unwrap().first_name,
        "Ann"
    );
    assert!(matches!(
        Person::find(&mut conn, b.id, p.id),
        Err(CoreError::NotFound { .. })
    ));
    assert!(matches!(
        Person::delete(&mut conn, b.id, p.id),
        Err(CoreError::NotFound { .. })
    ));
    assert!(matches!(
        Person::update(&mut conn, b.id, p.id, PersonPatch::default()),
        Err(CoreError::NotFound { .. })
    ));
    assert!(
        Person::list(&mut conn, b.id, PageRequest::first(10))
            .unwrap()
            .items
            .is_empty()
    );
    // A reference to another account's company is refused like a missing one.
    let c = Company::create(
        &mut conn,
        b.id,
        &CompanyInput {
            name: "Beta".into(),
            domain: None,
            emails: vec![],
        },
    )
    .unwrap();
    let mut input = person("Bob", &[]);
    input.company_id = Some(c.id);
    let err = Person::create(&mut conn, a.id, &input).unwrap_err();
    assert!(
        matches!(err, CoreError::Invalid { ref field, .. } if field == "company_id"),
        "{err}"
    );
}

async fn person_fields_round_trip_and_patch_keeps_what_it_does_not_name(test: TestDb) {
    let mut conn = test.connect();
    let (a, _) = account_with_user(&mut conn, "gamma");
    let c = Company::create(
        &mut conn,
        a.id,
        &CompanyInput {
            name: "Gamma".into(),
            domain: Some("Gamma.example.COM".into()),
            emails: vec![],
        },
    )
    .unwrap();
    assert_eq!(c.domain.as_deref(), Some("gamma.example.com"));
    let mut input = person(
        "Ann",
        &["ann@gamma.example.com", "ann.lee@Home.example.com"],
    );
    input.phones = vec!["+44 20 7946 0000".into()];
    input.company_id = Some(c.id);
    let p = Person::create(&mut conn, a.id, &input).unwrap();
    assert_eq!(
        p.emails,
        vec!["ann@gamma.example.com", "ann.lee@home.example.com"]
    );
    assert_eq!(p.phones, vec!["+442079460000"]);
    let patch: PersonPatch =
        serde_json::from_str(r#"{"last_name": "Smith", "company_id": null}"#).unwrap();
    let p2 = Person::update(&mut conn, a.id, p.id, patch).unwrap();
    assert_eq!(p2.last_name, "Smith");
    assert_eq!(p2.first_name, "Ann");
    assert_eq!(p2.emails, p.emails);
    assert_eq!(p2.company_id, None);
    let bad: PersonPatch =
        serde_json::from_str(r#"{"emails": ["ok@x.io", "not-an-address"]}"#).unwrap();
    let err = Person::update(&mut conn, a.id, p.id, bad).unwrap_err();
    assert!(
        matches!(err, CoreError::Invalid { ref field, .. } if field == "emails[1]"),
        "{err}"
    );
    assert_eq!(
        Person::find(&mut conn, a.id, p.id).unwrap().emails,
        p.emails,
        "a refused patch changes nothing"
    );
}

async fn deal_value_is_kept_exactly(test: TestDb) {
    let mut conn = test.connect();
    let (a, _) = account_with_user(&mut conn, "delta");
    let input: DealInput = serde_json::from_str(
        r#"{"title": "Renewal", "value": "12345678901.25", "currency": "eur"}"#,
    )
    .unwrap();
    let d = Deal::create(&mut conn, a.id, &input).unwrap();
    assert_eq!(d.value.as_deref(), Some("12345678901.25"));
    assert_eq!(d.currency.as_deref(), Some("EUR"));
    let too_precise: DealInput =
        serde_json::from_str(r#"{"title": "X", "value": 123456789012345.6789, "currency": "EUR"}"#)
            .unwrap();
    assert!(
        matches!(Deal::create(&mut conn, a.id, &too_precise), Err(CoreError::Invalid { field, .. }) if field == "value")
    );
    let exact: DealInput = serde_json::from_str(
        r#"{"title": "X", "value": "123456789012345.6789", "currency": "EUR"}"#,
    )
    .unwrap();
    assert_eq!(
        Deal::create(&mut conn, a.id, &exact)
            .unwrap()
            .value
            .as_deref(),
        Some("123456789012345.6789")
    );
    let no_currency: DealInput = serde_json::from_str(r#"{"title": "X", "value": 10}"#).unwrap();
    assert!(
        matches!(Deal::create(&mut conn, a.id, &no_currency), Err(CoreError::Invalid { field, .. }) if field == "currency")
    );
}

async fn pages_walk_every_record_once_newest_first(test: TestDb) {
    let mut conn = test.connect();
    let (a, _) = account_with_user(&mut conn, "epsilon");
    for i in 0..7 {
        Person::create(&mut conn, a.id, &person(&format!("P{i}"), &[])).unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = Person::list(
            &mut conn,
            a.id,
            PageRequest::parse(Some(3), cursor.as_deref()).unwrap(),
        )
        .unwrap();
        seen.extend(page.items.iter().map(|p| p.first_name.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, vec!["P6", "P5", "P4", "P3", "P2", "P1", "P0"]);
}

async fn revoked_token_no_longer_authenticates(test: TestDb) {
    let mut conn = test.connect();
    let (a, u) = account_with_user(&mut conn, "zeta");
    let (token, secret) = ApiToken::create(&mut conn, u.id, "cli").unwrap();
    let principal = ApiToken::authenticate(&mut conn, secret.expose_secret())
        .unwrap()
        .unwrap();
    assert_eq!((principal.user.id, principal.account.id), (u.id, a.id));
    assert!(
        ApiToken::authenticate(&mut conn, "hrld_wrong")
            .unwrap()
            .is_none()
    );
    assert!(ApiToken::revoke(&mut conn, &token.id.to_string()).unwrap());
    assert!(
        !ApiToken::revoke(&mut conn, secret.expose_secret()).unwrap(),
        "already revoked"
    );
    assert!(
        ApiToken::authenticate(&mut conn, secret.expose_secret())
            .unwrap()
            .is_none()
    );
}

async fn duplicate_user_email_is_a_conflict(test: TestDb) {
    let mut conn = test.connect();
    let (a, _) = account_with_user(&mut conn, "eta");
    let err = User::create(
        &mut conn,
        a.id,
        &NewUser {
            email: "OWNER@Eta.example.com".into(),
            name: "Dup".into(),
            role: None,
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            CoreError::Conflict {
                code: "user_exists",
                ..
            }
        ),
        "{err}"
    );
}

async fn bootstrap_happens_once(test: TestDb) {
    let mut conn = test.connect();
    let first = bootstrap_if_empty(&mut conn)
        .unwrap()
        .expect("empty database is bootstrapped");
    assert!(first.admin.is_admin());
    assert!(
        ApiToken::authenticate(&mut conn, first.token.expose_secret())
            .unwrap()
            .is_some()
    );
    assert!(bootstrap_if_empty(&mut conn).unwrap().is_none());
}

async fn idempotency_key_replays_the_first_response_and_refuses_another_request(test: TestDb) {
    let mut conn = test.connect();
    let (a, u) = account_with_user(&mut conn, "theta");
    let key = IdempotencyKey::parse(u.id, a.id, "abc-1", "hash-1".into()).unwrap();
    let response = StoredResponse {
        status: 201,
        body: "{\"id\":1}".into(),
    };
    conn.write(|conn| {
        assert!(key.begin(conn)?.is_none());
        key.complete(conn, &response)
    })
    .unwrap();
    let replay = conn.write(|conn| key.begin(conn)).unwrap();
    assert_eq!(replay, Some(response));
    let other = IdempotencyKey::parse(u.id, a.id, "abc-1", "hash-2".into()).unwrap();
    let err = conn.write(|conn| other.begin(conn)).unwrap_err();
    assert!(matches!(
        err,
        CoreError::Conflict {
            code: "idempotency_key_reused",
            ..
        }
    ));
    // A key whose work rolled back is not remembered.
    let failed = IdempotencyKey::parse(u.id, a.id, "abc-2", "hash-3".into()).unwrap();
    let _ = conn.write(|conn| -> Result<(), CoreError> {
        failed.begin(conn)?;
        Err(CoreError::invalid("x", "work failed"))
    });
    assert!(conn.write(|conn| failed.begin(conn)).unwrap().is_none());
}

async fn timeline_shows_the_record_creation(test: TestDb) {
    let mut conn = test.connect();
    let (a, u) = account_with_user(&mut conn, "iota");
    let p = Person::create(&mut conn, a.id, &person("Ann", &[])).unwrap();
    let query = TimelineQuery {
        account_id: a.id,
        viewer_id: u.id,
        kind: herald_core::records::RecordKind::Person,
        record_id: p.id,
    };
    let page = Timeline::default()
        .page(&mut conn, &query, None, 10)
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].kind, "record_created");
    assert_eq!(page.items[0].data["first_name"], "Ann");
    let other = TimelineQuery {
        account_id: a.id + 1000,
        ..query
    };
    assert!(matches!(
        Timeline::default().page(&mut conn, &other, None, 10),
        Err(CoreError::NotFound { .. })
    ));
}

async fn a_write_inside_a_transaction_is_a_savepoint(test: TestDb) {
    let mut conn = test.connect();
    let (a, _) = account_with_user(&mut conn, "kappa");
    let result: Result<(), CoreError> = conn.write(|conn| {
        Person::create(conn, a.id, &person("Outer", &[]))?;
        let inner: Result<(), CoreError> = conn.write(|conn| {
            Person::create(conn, a.id, &person("Inner", &[]))?;
            Err(CoreError::invalid("x", "inner fails"))
        });
        assert!(inner.is_err());
        Ok(())
    });
    result.unwrap();
    let names: Vec<_> = Person::list(&mut conn, a.id, PageRequest::first(10))
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.first_name)
        .collect();
    assert_eq!(names, vec!["Outer"], "the inner write rolled back alone");
}

/// The account's users, up to 100.
fn users_of(test: &TestDb, account_id: i64) -> Vec<User> {
    User::list(
        &mut test.connect(),
        account_id,
        PageRequest {
            limit: 100,
            before_id: None,
        },
    )
    .unwrap()
    .items
}

/// Grouped writes made at the same time: each gets its own result, one that fails is rolled back
/// alone, and every one that succeeded is committed.
async fn grouped_writes_commit_together_and_fail_alone(test: TestDb) {
    let account = Account::create(&mut test.connect(), "grouped", Plan::Base).unwrap();
    let writes: Vec<_> = (0..40)
        .map(|n| {
            let db = test.db.clone();
            tokio::spawn(async move {
                db.write_grouped(move |conn| {
                    let user = User::create(
                        conn,
                        account.id,
                        &NewUser {
                            // Every tenth one repeats an address taken before it: a conflict.
                            email: format!(
                                "user{}@grouped.example.com",
                                if n % 10 == 9 { n - 1 } else { n }
                            ),
                            name: format!("User {n}"),
                            role: None,
                        },
                    )?;
                    Ok::<_, CoreError>(user.id)
                })
                .await
            })
        })
        .collect();
    let mut results = Vec::new();
    for write in writes {
        results.push(write.await.unwrap());
    }
    let failed = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(failed, 4, "{results:?}");
    let stored = users_of(&test, account.id);
    assert_eq!(stored.len(), 36);
    for id in results.into_iter().flatten() {
        assert!(stored.iter().any(|u| u.id == id), "user {id} was committed");
    }
}

/// A batch write for the batcher test: one user per item (account, email).
fn create_users(conn: &mut DbConnection, items: &[(i64, String)]) -> CoreResult<Vec<i64>> {
    items
        .iter()
        .map(|(account_id, email)| {
            let user = User::create(
                conn,
                *account_id,
                &NewUser {
                    email: email.clone(),
                    name: email.clone(),
                    role: None,
                },
            )?;
            Ok(user.id)
        })
        .collect()
}

/// Items written in batches: each gets its own output; a batch holding a bad item is written
/// again item by item, so only the bad one fails and every other is committed.
async fn batched_writes_fail_alone(test: TestDb) {
    let account = Account::create(&mut test.connect(), "batched", Plan::Base).unwrap();
    // Lanes by address: the repeats of one address go to the same lane.
    let batcher = Arc::new(WriteBatcher::new(
        test.db.clone(),
        create_users,
        Some(|(_, email): &(i64, String)| email.len() as u64 + u64::from(email.as_bytes()[4])),
    ));
    let writes: Vec<_> = (0..40)
        .map(|n| {
            let batcher = Arc::clone(&batcher);
            // Every tenth one repeats an address taken before it: a conflict.
            let email = format!(
                "user{}@batched.example.com",
                if n % 10 == 9 { n - 1 } else { n }
            );
            tokio::spawn(async move { batcher.write((account.id, email)).await })
        })
        .collect();
    let mut results = Vec::new();
    for write in writes {
        results.push(write.await.unwrap());
    }
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(failed.len(), 4, "{results:?}");
    assert!(
        failed
            .iter()
            .all(|e| matches!(e, CoreError::Conflict { .. })),
        "{failed:?}"
    );
    let stored = users_of(&test, account.id);
    assert_eq!(stored.len(), 36);
    // Each output is its own item's: the user made from that item's address.
    for (n, result) in results.iter().enumerate() {
        let Ok(id) = result else { continue };
        let user = stored.iter().find(|u| u.id == *id).expect("committed");
        let n = if n % 10 == 9 { n - 1 } else { n };
        assert_eq!(user.email, format!("user{n}@batched.example.com"));
    }
}

backend_tests!(
    batched_writes_fail_alone,
    a_write_inside_a_transaction_is_a_savepoint,
    grouped_writes_commit_together_and_fail_alone,
    migrations_run_up_down_and_up_again,
    records_of_another_account_are_not_found,
    person_fields_round_trip_and_patch_keeps_what_it_does_not_name,
    deal_value_is_kept_exactly,
    pages_walk_every_record_once_newest_first,
    revoked_token_no_longer_authenticates,
    duplicate_user_email_is_a_conflict,
    bootstrap_happens_once,
    idempotency_key_replays_the_first_response_and_refuses_another_request,
    timeline_shows_the_record_creation,
);
