//! The table this crate owns.

diesel::table! {
    mailboxes (id) {
        id -> BigInt,
        account_id -> BigInt,
        owner_id -> BigInt,
        address -> Text,
        display_name -> Nullable<Text>,
        signature -> Nullable<Text>,
        imap_host -> Text,
        imap_port -> Integer,
        imap_security -> Text,
        imap_username -> Text,
        imap_password -> Text,
        smtp_host -> Nullable<Text>,
        smtp_port -> Nullable<Integer>,
        smtp_security -> Nullable<Text>,
        smtp_username -> Nullable<Text>,
        smtp_password -> Nullable<Text>,
        verify_tls -> Bool,
        sync -> Text,
        sending_enabled -> Bool,
        visibility -> Text,
        state -> Text,
        last_synced_at -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
        auth_failures -> Integer,
        sync_locked_by -> Nullable<Text>,
        sync_locked_until -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        sync_requested_at -> Nullable<Timestamp>,
        save_sent_copy -> Bool,
    }
}

diesel::table! {
    emails (id) {
        id -> BigInt,
        account_id -> BigInt,
        dedupe_key -> Text,
        message_id -> Nullable<Text>,
        thread_id -> Nullable<BigInt>,
        direction -> Text,
        status -> Text,
        author -> Text,
        mailbox_id -> Nullable<BigInt>,
        subject -> Nullable<Text>,
        from_address -> Nullable<Text>,
        from_name -> Nullable<Text>,
        participants -> Text,
        text_body -> Nullable<Text>,
        html_body -> Nullable<Text>,
        in_reply_to -> Nullable<Text>,
        message_references -> Text,
        problems -> Text,
        sent_at -> Nullable<Timestamp>,
        received_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    email_sends (email_id) {
        email_id -> BigInt,
        created_by -> Nullable<BigInt>,
        send_at -> Nullable<Timestamp>,
        time_zone -> Nullable<Text>,
        token -> Text,
        started_at -> Nullable<Timestamp>,
        attempts -> Integer,
        failure_reason -> Nullable<Text>,
        cancel_on_reply -> Bool,
        bcc -> Text,
        raw_message -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    email_copies (mailbox_id, folder, uid_validity, uid) {
        mailbox_id -> BigInt,
        folder -> Text,
        uid_validity -> BigInt,
        uid -> BigInt,
        email_id -> BigInt,
    }
}

diesel::table! {
    mailbox_folders (mailbox_id, role) {
        mailbox_id -> BigInt,
        role -> Text,
        folder -> Text,
        uid_validity -> BigInt,
        uid_next -> BigInt,
        highest_modseq -> Nullable<BigInt>,
        synced_at -> Timestamp,
    }
}

diesel::table! {
    email_attachments (id) {
        id -> BigInt,
        email_id -> BigInt,
        filename -> Nullable<Text>,
        content_type -> Text,
        size -> BigInt,
        content_id -> Nullable<Text>,
        content -> Nullable<Text>,
    }
}

diesel::table! {
    email_participants (email_id, address, role) {
        email_id -> BigInt,
        account_id -> BigInt,
        address -> Text,
        domain -> Text,
        role -> Text,
    }
}

diesel::table! {
    email_deals (email_id, deal_id) {
        email_id -> BigInt,
        deal_id -> BigInt,
        account_id -> BigInt,
    }
}

diesel::joinable!(email_copies -> mailboxes (mailbox_id));
diesel::joinable!(email_copies -> emails (email_id));
diesel::joinable!(email_participants -> emails (email_id));
diesel::joinable!(email_deals -> emails (email_id));
diesel::joinable!(email_sends -> emails (email_id));

diesel::allow_tables_to_appear_in_same_query!(
    mailboxes,
    emails,
    email_copies,
    mailbox_folders,
    email_attachments,
    email_participants,
    email_deals,
    email_sends,
);
