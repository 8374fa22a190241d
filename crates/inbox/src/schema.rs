//! The tables this crate owns.

diesel::table! {
    channels (id) {
        id -> BigInt,
        account_id -> BigInt,
        owner_id -> BigInt,
        kind -> Text,
        name -> Text,
        external_id -> Text,
        sender -> Nullable<Text>,
        secrets -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    conversations (id) {
        id -> BigInt,
        account_id -> BigInt,
        channel_id -> BigInt,
        contact_id -> Text,
        contact_name -> Nullable<Text>,
        status -> Text,
        assignee_id -> Nullable<BigInt>,
        last_message_at -> Timestamp,
        last_inbound_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    messages (id) {
        id -> BigInt,
        conversation_id -> BigInt,
        direction -> Text,
        provider_message_id -> Nullable<Text>,
        body -> Nullable<Text>,
        media -> Text,
        status -> Text,
        failure_reason -> Nullable<Text>,
        author_id -> Nullable<BigInt>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    channel_message_ids (channel_id, provider_message_id) {
        channel_id -> BigInt,
        provider_message_id -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    conversation_events (id) {
        id -> BigInt,
        conversation_id -> BigInt,
        kind -> Text,
        actor_id -> Nullable<BigInt>,
        from_user_id -> Nullable<BigInt>,
        to_user_id -> Nullable<BigInt>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    /// Kept by triggers (migration 000008): conversations per account, status and assignee
    /// (0: unassigned).
    conversation_counts (account_id, status, assignee_id) {
        account_id -> BigInt,
        status -> Text,
        assignee_id -> BigInt,
        n -> BigInt,
    }
}

diesel::joinable!(conversations -> channels (channel_id));
diesel::joinable!(messages -> conversations (conversation_id));
diesel::joinable!(conversation_events -> conversations (conversation_id));

diesel::allow_tables_to_appear_in_same_query!(
    channels,
    conversations,
    messages,
    channel_message_ids,
    conversation_events,
);
