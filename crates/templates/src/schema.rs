//! The table this crate owns.

diesel::table! {
    templates (id) {
        id -> BigInt,
        account_id -> BigInt,
        author_id -> BigInt,
        name -> Text,
        subject -> Text,
        html -> Nullable<Text>,
        text -> Nullable<Text>,
        scope -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}
