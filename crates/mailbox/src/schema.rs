//! The table this crate owns.

diesel::table! {
    mailboxes (id) {
        id -> BigInt,
        account_id -> BigInt,
        owner_id -> BigInt,
        address -> Text,
        display_name -> Nullable<Text>,
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
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}
