//! Storing inbound messages a batch at a time (`receive_all`) on both backends: repeats within
//! the batch and of earlier batches, new and existing conversations, reopening, echoes, profile
//! names, and the messages' order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use herald_core::crypto::SecretKey;
use herald_core::domain::Plan;
use herald_core::identity::{Account, NewUser, User};
use herald_core::pagination::PageRequest;
use herald_inbox::conversations;
use herald_inbox::inbound::{Arriving, Inbound, Received, receive_all};
use herald_inbox::{Channel, ChannelInput};
use herald_testdb::{TestDb, backend_tests};

fn message(contact: &str, id: &str, name: Option<&str>, echo: bool) -> Inbound {
    Inbound {
        contact_id: contact.into(),
        contact_name: name.map(str::to_owned),
        provider_message_id: id.into(),
        body: Some(format!("body of {id}")),
        media: Vec::new(),
        echo,
    }
}

fn stored(received: &Received) -> (i64, i64) {
    match received {
        Received::Stored {
            conversation_id,
            message_id,
        } => (*conversation_id, *message_id),
        Received::Duplicate => panic!("not stored"),
    }
}

async fn a_batch_stores_each_message_once_in_order(test: TestDb) {
    let mut conn = test.connect();
    let account = Account::create(&mut conn, "batch", Plan::Base).unwrap();
    let owner = User::create(
        &mut conn,
        account.id,
        &NewUser {
            email: "owner@batch.example.com".into(),
            name: "Owner".into(),
            role: None,
        },
    )
    .unwrap();
    let key = SecretKey::from_base64(&SecretKey::generate_base64()).unwrap();
    let input: ChannelInput = serde_json::from_value(serde_json::json!({
        "kind": "messenger", "page_id": "1234567890", "page_access_token": "EAAB",
        "app_secret": "secret", "verify_token": "verify"
    }))
    .unwrap();
    let channel = Channel::create(&mut conn, &key, &owner, &input).unwrap();
    let arrive = |m: Inbound| Arriving::new(&channel, m);

    // Ann writes first and her conversation is closed.
    let first = conn
        .write(|c| receive_all(c, &[arrive(message("ann", "m0", Some("Ann"), false))]))
        .unwrap();
    let (ann, _) = stored(&first[0]);
    conversations::set_open(&mut conn, &owner, ann, false).unwrap();

    let batch = [
        arrive(message("ann", "m1", Some("Ann Lee"), false)),
        arrive(message("bob", "m2", None, true)),
        arrive(message("ann", "m1", Some("Ann Lee"), false)),
        arrive(message("ann", "m3", None, false)),
        arrive(message("ann", "m0", Some("Ann"), false)),
        arrive(message("bob", "m4", None, true)),
    ];
    let received = conn.write(|c| receive_all(c, &batch)).unwrap();
    assert_eq!(received.len(), batch.len());
    assert_eq!(
        received[2],
        Received::Duplicate,
        "a repeat within the batch"
    );
    assert_eq!(
        received[4],
        Received::Duplicate,
        "a repeat of an earlier batch"
    );
    let (ann_again, m1) = stored(&received[0]);
    let (bob, m2) = stored(&received[1]);
    let (_, m3) = stored(&received[3]);
    let (bob_again, m4) = stored(&received[5]);
    assert_eq!((ann_again, bob_again), (ann, bob));
    assert_ne!(ann, bob);
    assert!(m1 < m2 && m2 < m3 && m3 < m4, "ids in arrival order");

    let ann_now = conversations::find(&mut conn, &owner, ann).unwrap();
    assert_eq!(
        ann_now.conversation.status, "open",
        "the contact reopened it"
    );
    assert_eq!(
        ann_now.conversation.contact_name.as_deref(),
        Some("Ann Lee"),
        "the latest profile name; a message without one keeps it"
    );
    let kinds: Vec<_> = ann_now.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["closed", "reopened"]);
    assert!(ann_now.events[1].actor_id.is_none());
    let bodies: Vec<_> = conversations::messages(&mut conn, &owner, ann, PageRequest::first(10))
        .unwrap()
        .items
        .into_iter()
        .map(|m| (m.provider_message_id.unwrap(), m.direction))
        .collect();
    assert_eq!(
        bodies,
        [
            ("m0".to_owned(), "inbound".to_owned()),
            ("m1".into(), "inbound".into()),
            ("m3".into(), "inbound".into())
        ]
    );

    // Bob's conversation holds only the page's echoes: it is open and listed, but the 24-hour
    // window has not opened and no name is known.
    let bob_now = conversations::find(&mut conn, &owner, bob)
        .unwrap()
        .conversation;
    assert_eq!(bob_now.status, "open");
    assert!(bob_now.last_inbound_at.is_none());
    assert!(bob_now.contact_name.is_none());
    let directions: Vec<_> =
        conversations::messages(&mut conn, &owner, bob, PageRequest::first(10))
            .unwrap()
            .items
            .into_iter()
            .map(|m| (m.direction, m.status))
            .collect();
    assert_eq!(
        directions,
        [
            ("outbound".to_owned(), "sent".to_owned()),
            ("outbound".into(), "sent".into())
        ]
    );

    // A batch of repeats only stores nothing.
    let again = conn.write(|c| receive_all(c, &batch[..2])).unwrap();
    assert_eq!(again, [Received::Duplicate, Received::Duplicate]);

    // Another account's page with a contact and a message id of the same names: its own.
    let other_account = Account::create(&mut conn, "other", Plan::Base).unwrap();
    let other_owner = User::create(
        &mut conn,
        other_account.id,
        &NewUser {
            email: "owner@other.example.com".into(),
            name: "Other".into(),
            role: None,
        },
    )
    .unwrap();
    let other_input: ChannelInput = serde_json::from_value(serde_json::json!({
        "kind": "messenger", "page_id": "999", "page_access_token": "EAAC",
        "app_secret": "secret", "verify_token": "verify"
    }))
    .unwrap();
    let other = Channel::create(&mut conn, &key, &other_owner, &other_input).unwrap();
    let mixed = [
        Arriving::new(&other, message("ann", "m1", Some("Ann B"), false)),
        arrive(message("ann", "m5", None, false)),
    ];
    let received = conn.write(|c| receive_all(c, &mixed)).unwrap();
    let (theirs, _) = stored(&received[0]);
    let (ours, _) = stored(&received[1]);
    assert_eq!(ours, ann);
    assert_ne!(theirs, ann);
    let theirs = conversations::find(&mut conn, &other_owner, theirs).unwrap();
    assert_eq!(theirs.conversation.channel_id, other.id);
    assert_eq!(theirs.conversation.contact_name.as_deref(), Some("Ann B"));
    assert!(
        conversations::find(&mut conn, &owner, theirs.conversation.id).is_err(),
        "not in the first account"
    );
}

backend_tests!(a_batch_stores_each_message_once_in_order);
