//! The diesel schema, common column types only (see `docs/architecture.md`): BigInt ids,
//! UTC `Timestamp`s, enums and JSON as Text.

diesel::table! {
    accounts (id) {
        id -> BigInt,
        name -> Text,
        plan -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    users (id) {
        id -> BigInt,
        account_id -> BigInt,
        email -> Text,
        name -> Text,
        role -> Text,
        available -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    api_tokens (id) {
        id -> BigInt,
        account_id -> BigInt,
        user_id -> BigInt,
        name -> Text,
        token_hash -> Text,
        created_at -> Timestamp,
        last_used_at -> Nullable<Timestamp>,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    companies (id) {
        id -> BigInt,
        account_id -> BigInt,
        name -> Text,
        domain -> Nullable<Text>,
        emails -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    persons (id) {
        id -> BigInt,
        account_id -> BigInt,
        first_name -> Text,
        last_name -> Text,
        emails -> Text,
        phones -> Text,
        company_id -> Nullable<BigInt>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    deals (id) {
        id -> BigInt,
        account_id -> BigInt,
        title -> Text,
        value -> Nullable<Text>,
        currency -> Nullable<Text>,
        person_id -> Nullable<BigInt>,
        company_id -> Nullable<BigInt>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    leads (id) {
        id -> BigInt,
        account_id -> BigInt,
        title -> Text,
        person_id -> Nullable<BigInt>,
        company_id -> Nullable<BigInt>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    jobs (id) {
        id -> BigInt,
        queue -> Text,
        job_type -> Text,
        payload -> Text,
        status -> Text,
        run_at -> Timestamp,
        attempts -> Integer,
        max_attempts -> Integer,
        locked_by -> Nullable<Text>,
        locked_until -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    idempotency_keys (user_id, idempotency_key) {
        user_id -> BigInt,
        idempotency_key -> Text,
        account_id -> BigInt,
        request_hash -> Text,
        response_status -> Nullable<Integer>,
        response_body -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    notifications (id) {
        id -> BigInt,
        account_id -> BigInt,
        user_id -> BigInt,
        kind -> Text,
        title -> Text,
        body -> Nullable<Text>,
        subject_type -> Nullable<Text>,
        subject_id -> Nullable<BigInt>,
        created_at -> Timestamp,
        read_at -> Nullable<Timestamp>,
    }
}

diesel::joinable!(users -> accounts (account_id));
diesel::joinable!(api_tokens -> users (user_id));
diesel::joinable!(persons -> companies (company_id));
diesel::joinable!(leads -> persons (person_id));

diesel::allow_tables_to_appear_in_same_query!(
    accounts,
    users,
    api_tokens,
    companies,
    persons,
    deals,
    leads,
    jobs,
    idempotency_keys,
    notifications,
);
