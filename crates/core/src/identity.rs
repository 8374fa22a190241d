//! Accounts (tenants), users and their API tokens.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use secrecy::SecretString;
use serde::Serialize;

use crate::crypto::{hash_api_token, new_api_token};
use crate::db::DbConnection;
use crate::domain::{EmailAddress, Plan, Role, parse_name};
use crate::error::{CoreError, CoreResult};
use crate::pagination::{Page, PageRequest};
use crate::schema::{accounts, api_tokens, users};
use crate::time::{now, rfc3339, rfc3339_opt};

#[derive(Clone, Debug, Queryable, Selectable, Identifiable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = accounts)]
pub struct Account {
    pub id: i64,
    pub name: String,
    /// `base` or `automation`
    pub plan: String,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: NaiveDateTime,
}

#[derive(Insertable)]
#[diesel(table_name = accounts)]
struct NewAccount<'a> {
    name: &'a str,
    plan: &'a str,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

impl Account {
    pub fn plan(&self) -> Plan {
        self.plan.parse().unwrap_or(Plan::Base)
    }

    pub fn create(conn: &mut DbConnection, name: &str, plan: Plan) -> CoreResult<Account> {
        let name = parse_name(name, "name", 200)?;
        let at = now();
        let account = diesel::insert_into(accounts::table)
            .values(NewAccount {
                name: &name,
                plan: plan.as_str(),
                created_at: at,
                updated_at: at,
            })
            .returning(accounts::all_columns)
            .get_result(conn)?;
        Ok(account)
    }

    pub fn find(conn: &mut DbConnection, id: i64) -> CoreResult<Account> {
        accounts::table
            .find(id)
            .select(Account::as_select())
            .first(conn)
            .optional()?
            .ok_or_else(|| CoreError::not_found("account", id))
    }

    pub fn count(conn: &mut DbConnection) -> QueryResult<i64> {
        accounts::table.count().get_result(conn)
    }
}

#[derive(Clone, Debug, Queryable, Selectable, Identifiable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = users)]
pub struct User {
    pub id: i64,
    pub account_id: i64,
    pub email: String,
    pub name: String,
    /// `admin` or `member`
    pub role: String,
    pub available: bool,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: NaiveDateTime,
}

#[derive(Insertable)]
#[diesel(table_name = users)]
struct NewUserRow<'a> {
    account_id: i64,
    email: &'a str,
    name: &'a str,
    role: &'a str,
    available: bool,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

/// What it takes to create a user; validated by [`User::create`].
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
pub struct NewUser {
    pub email: String,
    pub name: String,
    /// `admin` or `member` (default)
    #[serde(default)]
    pub role: Option<String>,
}

impl User {
    pub fn role(&self) -> Role {
        self.role.parse().unwrap_or(Role::Member)
    }

    pub fn is_admin(&self) -> bool {
        self.role() == Role::Admin
    }

    pub fn create(conn: &mut DbConnection, account_id: i64, input: &NewUser) -> CoreResult<User> {
        // A user's address is their identity in the account: compared without case.
        let email = EmailAddress::parse_field(&input.email.to_lowercase(), "email")?;
        let name = parse_name(&input.name, "name", 200)?;
        let role: Role = match &input.role {
            Some(r) => r.parse().map_err(|_| {
                CoreError::invalid("role", format!("`{r}` is not one of: admin, member"))
            })?,
            None => Role::Member,
        };
        Account::find(conn, account_id)?;
        let taken: i64 = users::table
            .filter(users::account_id.eq(account_id))
            .filter(users::email.eq(email.as_str()))
            .count()
            .get_result(conn)?;
        if taken > 0 {
            return Err(CoreError::Conflict {
                code: "user_exists",
                message: format!("a user with email {email} already exists in this account"),
            });
        }
        let at = now();
        let user = diesel::insert_into(users::table)
            .values(NewUserRow {
                account_id,
                email: email.as_str(),
                name: &name,
                role: role.as_str(),
                available: true,
                created_at: at,
                updated_at: at,
            })
            .returning(users::all_columns)
            .get_result(conn)
            .map_err(|e| match CoreError::from(e) {
                // Two creates at once both passed the check above; the unique index decides.
                CoreError::Conflict { .. } => CoreError::Conflict {
                    code: "user_exists",
                    message: format!("a user with email {email} already exists in this account"),
                },
                other => other,
            })?;
        Ok(user)
    }

    pub fn find(conn: &mut DbConnection, id: i64) -> CoreResult<User> {
        users::table
            .find(id)
            .select(User::as_select())
            .first(conn)
            .optional()?
            .ok_or_else(|| CoreError::not_found("user", id))
    }

    pub fn list(
        conn: &mut DbConnection,
        account_id: i64,
        page: PageRequest,
    ) -> QueryResult<Page<User>> {
        let mut query = users::table
            .filter(users::account_id.eq(account_id))
            .select(User::as_select())
            .order(users::id.desc())
            .limit(page.limit + 1)
            .into_boxed();
        if let Some(before) = page.before_id {
            query = query.filter(users::id.lt(before));
        }
        Ok(Page::from_rows(query.load(conn)?, page.limit, |u| u.id))
    }
}

#[derive(Clone, Debug, Queryable, Selectable, Identifiable, Serialize)]
#[diesel(table_name = api_tokens)]
pub struct ApiToken {
    pub id: i64,
    pub account_id: i64,
    pub user_id: i64,
    pub name: String,
    #[serde(skip)]
    pub token_hash: String,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "rfc3339_opt")]
    pub last_used_at: Option<NaiveDateTime>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub revoked_at: Option<NaiveDateTime>,
}

#[derive(Insertable)]
#[diesel(table_name = api_tokens)]
struct NewApiToken<'a> {
    account_id: i64,
    user_id: i64,
    name: &'a str,
    token_hash: &'a str,
    created_at: NaiveDateTime,
}

/// The caller behind a bearer token.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user: User,
    pub account: Account,
    pub token_id: i64,
}

/// `last_used_at` is refreshed at most this often, so reads stay reads.
const LAST_USED_GRANULARITY: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

impl ApiToken {
    /// Creates a token for `user_id`; the secret is returned once and only its hash is stored.
    pub fn create(
        conn: &mut DbConnection,
        user_id: i64,
        name: &str,
    ) -> CoreResult<(ApiToken, SecretString)> {
        let user = User::find(conn, user_id)?;
        let name = parse_name(name, "name", 100)?;
        let (secret, hash) = new_api_token();
        let token = diesel::insert_into(api_tokens::table)
            .values(NewApiToken {
                account_id: user.account_id,
                user_id: user.id,
                name: &name,
                token_hash: &hash,
                created_at: now(),
            })
            .returning(api_tokens::all_columns)
            .get_result(conn)?;
        Ok((token, secret))
    }

    /// Revokes by token id, or by the token itself; `Ok(false)` if it was already revoked.
    pub fn revoke(conn: &mut DbConnection, id_or_token: &str) -> CoreResult<bool> {
        let id: i64 = if let Ok(id) = id_or_token.parse::<i64>() {
            id
        } else {
            api_tokens::table
                .filter(api_tokens::token_hash.eq(hash_api_token(id_or_token)))
                .select(api_tokens::id)
                .first(conn)
                .optional()?
                .ok_or_else(|| CoreError::not_found("token", "given"))?
        };
        let token: ApiToken = api_tokens::table
            .find(id)
            .select(ApiToken::as_select())
            .first(conn)
            .optional()?
            .ok_or_else(|| CoreError::not_found("token", id))?;
        if token.revoked_at.is_some() {
            return Ok(false);
        }
        diesel::update(api_tokens::table.find(id))
            .set(api_tokens::revoked_at.eq(now()))
            .execute(conn)?;
        Ok(true)
    }

    /// The user and account behind a presented token, if it is known and not revoked.
    pub fn authenticate(
        conn: &mut DbConnection,
        presented: &str,
    ) -> QueryResult<Option<Principal>> {
        let found = api_tokens::table
            .inner_join(users::table.inner_join(accounts::table))
            .filter(api_tokens::token_hash.eq(hash_api_token(presented)))
            .filter(api_tokens::revoked_at.is_null())
            .select((
                ApiToken::as_select(),
                User::as_select(),
                Account::as_select(),
            ))
            .first::<(ApiToken, User, Account)>(conn)
            .optional()?;
        let Some((token, user, account)) = found else {
            return Ok(None);
        };
        let at = now();
        if token
            .last_used_at
            .is_none_or(|last| at - last > LAST_USED_GRANULARITY)
        {
            diesel::update(api_tokens::table.find(token.id))
                .set(api_tokens::last_used_at.eq(at))
                .execute(conn)?;
        }
        Ok(Some(Principal {
            user,
            account,
            token_id: token.id,
        }))
    }
}

/// The first account and admin of an empty database, with a token to use them.
#[derive(Debug)]
pub struct Bootstrap {
    pub account: Account,
    pub admin: User,
    pub token: SecretString,
}

/// Creates a first account, admin and token when the database has no account yet; `None`
/// otherwise. Runs in one write transaction, so two processes starting at once make one.
pub fn bootstrap_if_empty(conn: &mut DbConnection) -> CoreResult<Option<Bootstrap>> {
    conn.write(|conn| {
        if let DbConnection::Postgres(pg) = conn {
            // Backend arm: READ COMMITTED would let two starters both see an empty table.
            diesel::sql_query("SELECT pg_advisory_xact_lock(727172)").execute(pg)?;
        }
        if Account::count(conn)? > 0 {
            return Ok(None);
        }
        let account = Account::create(conn, "My company", Plan::Base)?;
        let admin = User::create(
            conn,
            account.id,
            &NewUser {
                email: "admin@example.com".into(),
                name: "Admin".into(),
                role: Some("admin".into()),
            },
        )?;
        let (_, token) = ApiToken::create(conn, admin.id, "bootstrap")?;
        Ok(Some(Bootstrap {
            account,
            admin,
            token,
        }))
    })
}
