//! The CRM records mail and conversations attach to: persons, companies, deals and leads.
//!
//! Every query takes the caller's `account_id`: a record of another account is "not found".
//! Create and update share one validation path: a PATCH is applied onto the stored values and the
//! result validated as a whole, so a record can never be saved in a state a create would refuse.

use chrono::NaiveDateTime;
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::prelude::*;
use diesel::sql_types::Text;
use serde::{Deserialize, Deserializer, Serialize};

use crate::db::{DbConnection, MultiBackend};
use crate::domain::{parse_domain, parse_email_list, parse_name, parse_phone};
use crate::error::{CoreError, CoreResult};
use crate::pagination::{Page, PageRequest};
use crate::schema::{companies, deals, leads, persons};
use crate::text_enum;
use crate::time::{now, rfc3339};

text_enum!(
    /// The kinds of record a timeline, an email or a link can point at.
    RecordKind { Person => "person", Company => "company", Deal => "deal", Lead => "lead" }
);

/// A JSON list of strings stored in a Text column.
#[derive(Debug, Clone, Default, FromSqlRow)]
pub struct JsonStrings(pub Vec<String>);

impl FromSql<Text, MultiBackend> for JsonStrings {
    fn from_sql(
        bytes: <MultiBackend as diesel::backend::Backend>::RawValue<'_>,
    ) -> deserialize::Result<Self> {
        let text = <String as FromSql<Text, MultiBackend>>::from_sql(bytes)?;
        Ok(JsonStrings(serde_json::from_str(&text)?))
    }
}

impl From<JsonStrings> for Vec<String> {
    fn from(value: JsonStrings) -> Self {
        value.0
    }
}

fn to_json(values: &[String]) -> String {
    serde_json::to_string(values).unwrap_or_else(|_| "[]".to_owned())
}

/// Distinguishes an absent PATCH field (`None`) from an explicit `null` (`Some(None)`).
pub fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Generates the account-scoped queries every record type shares.
macro_rules! record_queries {
    ($model:ident, $table:ident, $kind:literal) => {
        impl $model {
            pub const KIND: &'static str = $kind;

            pub fn find(conn: &mut DbConnection, account_id: i64, id: i64) -> CoreResult<$model> {
                $table::table
                    .filter($table::account_id.eq(account_id))
                    .filter($table::id.eq(id))
                    .select($model::as_select())
                    .first(conn)
                    .optional()?
                    .ok_or_else(|| CoreError::not_found($kind, id))
            }

            /// Like `find`, and on PostgreSQL locks the row until the transaction ends, so two
            /// concurrent PATCHes apply one after the other instead of overwriting each other.
            fn find_for_update(
                conn: &mut DbConnection,
                account_id: i64,
                id: i64,
            ) -> CoreResult<$model> {
                // Backend arm: SQLite's write transaction already excludes other writers.
                if let DbConnection::Postgres(c) = conn {
                    $table::table
                        .filter($table::account_id.eq(account_id))
                        .filter($table::id.eq(id))
                        .select($table::id)
                        .for_update()
                        .first::<i64>(c)
                        .optional()?;
                }
                $model::find(conn, account_id, id)
            }

            pub fn list(
                conn: &mut DbConnection,
                account_id: i64,
                page: PageRequest,
            ) -> QueryResult<Page<$model>> {
                let mut query = $table::table
                    .filter($table::account_id.eq(account_id))
                    .select($model::as_select())
                    .order($table::id.desc())
                    .limit(page.limit + 1)
                    .into_boxed();
                if let Some(before) = page.before_id {
                    query = query.filter($table::id.lt(before));
                }
                Ok(Page::from_rows(query.load(conn)?, page.limit, |r| r.id))
            }

            pub fn delete(conn: &mut DbConnection, account_id: i64, id: i64) -> CoreResult<()> {
                let deleted = diesel::delete(
                    $table::table
                        .filter($table::account_id.eq(account_id))
                        .filter($table::id.eq(id)),
                )
                .execute(conn)?;
                if deleted == 0 {
                    return Err(CoreError::not_found($kind, id));
                }
                Ok(())
            }

            fn insert_row(
                conn: &mut DbConnection,
                account_id: i64,
                row: &<$model as Record>::Row,
            ) -> CoreResult<$model> {
                let at = now();
                Ok(diesel::insert_into($table::table)
                    .values((
                        row,
                        $table::account_id.eq(account_id),
                        $table::created_at.eq(at),
                        $table::updated_at.eq(at),
                    ))
                    .returning($table::all_columns)
                    .get_result(conn)?)
            }

            fn update_row(
                conn: &mut DbConnection,
                account_id: i64,
                id: i64,
                row: &<$model as Record>::Row,
            ) -> CoreResult<$model> {
                Ok(diesel::update(
                    $table::table
                        .filter($table::account_id.eq(account_id))
                        .filter($table::id.eq(id)),
                )
                .set((row, $table::updated_at.eq(now())))
                .returning($table::all_columns)
                .get_result(conn)?)
            }
        }
    };
}

/// The operations the API offers on every record type.
pub trait Record: Sized + Serialize + Send + 'static {
    /// The validated columns a create or update writes.
    type Row;
    type Input: for<'de> Deserialize<'de> + Send + 'static;
    type Patch: for<'de> Deserialize<'de> + Send + 'static;
    const RECORD_KIND: RecordKind;

    fn id(&self) -> i64;
    fn find(conn: &mut DbConnection, account_id: i64, id: i64) -> CoreResult<Self>;
    fn list(conn: &mut DbConnection, account_id: i64, page: PageRequest)
    -> QueryResult<Page<Self>>;
    fn delete(conn: &mut DbConnection, account_id: i64, id: i64) -> CoreResult<()>;
    fn created_at(&self) -> NaiveDateTime;
    fn validate(
        conn: &mut DbConnection,
        account_id: i64,
        input: &Self::Input,
    ) -> CoreResult<Self::Row>;
    fn patched(&self, patch: Self::Patch) -> Self::Input;
    fn create(conn: &mut DbConnection, account_id: i64, input: &Self::Input) -> CoreResult<Self>;
    fn update(
        conn: &mut DbConnection,
        account_id: i64,
        id: i64,
        patch: Self::Patch,
    ) -> CoreResult<Self>;
}

macro_rules! impl_record {
    ($model:ident, $kind:expr, $row:ident, $input:ident, $patch:ident) => {
        impl Record for $model {
            type Row = $row;
            type Input = $input;
            type Patch = $patch;
            const RECORD_KIND: RecordKind = $kind;

            fn id(&self) -> i64 {
                self.id
            }
            fn created_at(&self) -> NaiveDateTime {
                self.created_at
            }
            fn find(conn: &mut DbConnection, account_id: i64, id: i64) -> CoreResult<Self> {
                $model::find(conn, account_id, id)
            }
            fn list(
                conn: &mut DbConnection,
                account_id: i64,
                page: PageRequest,
            ) -> QueryResult<Page<Self>> {
                $model::list(conn, account_id, page)
            }
            fn delete(conn: &mut DbConnection, account_id: i64, id: i64) -> CoreResult<()> {
                $model::delete(conn, account_id, id)
            }
            fn validate(
                conn: &mut DbConnection,
                account_id: i64,
                input: &Self::Input,
            ) -> CoreResult<Self::Row> {
                input.validate(conn, account_id)
            }
            fn patched(&self, patch: Self::Patch) -> Self::Input {
                patch.apply_to(self)
            }
            fn create(
                conn: &mut DbConnection,
                account_id: i64,
                input: &Self::Input,
            ) -> CoreResult<Self> {
                let row = input.validate(conn, account_id)?;
                Self::insert_row(conn, account_id, &row)
            }
            fn update(
                conn: &mut DbConnection,
                account_id: i64,
                id: i64,
                patch: Self::Patch,
            ) -> CoreResult<Self> {
                let current = Self::find_for_update(conn, account_id, id)?;
                let row = patch.apply_to(&current).validate(conn, account_id)?;
                Self::update_row(conn, account_id, id, &row)
            }
        }
    };
}

/// Checks that a referenced record exists in the same account; the error names the field.
fn check_reference<T>(found: CoreResult<T>, field: &str, kind: &str, id: i64) -> CoreResult<()> {
    match found {
        Ok(_) => Ok(()),
        Err(CoreError::NotFound { .. }) => Err(CoreError::invalid(
            field,
            format!("{kind} {id} does not exist"),
        )),
        Err(other) => Err(other),
    }
}

fn parse_phones(values: &[String], field: &str) -> CoreResult<Vec<String>> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| parse_phone(v, &format!("{field}[{i}]")))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Company

#[derive(Clone, Debug, Queryable, Selectable, Identifiable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = companies)]
pub struct Company {
    pub id: i64,
    #[serde(skip)]
    pub account_id: i64,
    pub name: String,
    pub domain: Option<String>,
    #[diesel(deserialize_as = JsonStrings)]
    pub emails: Vec<String>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompanyInput {
    pub name: String,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub emails: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompanyPatch {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub domain: Option<Option<String>>,
    pub emails: Option<Vec<String>>,
}

#[derive(Debug, Insertable, AsChangeset)]
#[diesel(table_name = companies, treat_none_as_null = true)]
pub struct CompanyRow {
    name: String,
    domain: Option<String>,
    emails: String,
}

impl CompanyInput {
    fn validate(&self, _conn: &mut DbConnection, _account_id: i64) -> CoreResult<CompanyRow> {
        Ok(CompanyRow {
            name: parse_name(&self.name, "name", 200)?,
            domain: self
                .domain
                .as_deref()
                .map(|d| parse_domain(d, "domain"))
                .transpose()?,
            emails: to_json(
                &parse_email_list(&self.emails, "emails")?
                    .into_iter()
                    .map(String::from)
                    .collect::<Vec<_>>(),
            ),
        })
    }
}

impl CompanyPatch {
    fn apply_to(self, current: &Company) -> CompanyInput {
        CompanyInput {
            name: self.name.unwrap_or_else(|| current.name.clone()),
            domain: self.domain.unwrap_or_else(|| current.domain.clone()),
            emails: self.emails.unwrap_or_else(|| current.emails.clone()),
        }
    }
}

impl Company {
    /// The email addresses of the company's people (for finding its emails).
    pub fn people_addresses(&self, conn: &mut DbConnection) -> QueryResult<Vec<String>> {
        Ok(persons::table
            .filter(persons::account_id.eq(self.account_id))
            .filter(persons::company_id.eq(self.id))
            .select(persons::emails)
            .load::<String>(conn)?
            .iter()
            .flat_map(|json| serde_json::from_str::<Vec<String>>(json).unwrap_or_default())
            .collect())
    }
}

record_queries!(Company, companies, "company");
impl_record!(
    Company,
    RecordKind::Company,
    CompanyRow,
    CompanyInput,
    CompanyPatch
);

// ---------------------------------------------------------------------------------------------
// Person

#[derive(Clone, Debug, Queryable, Selectable, Identifiable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = persons)]
pub struct Person {
    pub id: i64,
    #[serde(skip)]
    pub account_id: i64,
    pub first_name: String,
    pub last_name: String,
    #[diesel(deserialize_as = JsonStrings)]
    pub emails: Vec<String>,
    #[diesel(deserialize_as = JsonStrings)]
    pub phones: Vec<String>,
    pub company_id: Option<i64>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PersonInput {
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    /// The first address is the primary one.
    #[serde(default)]
    pub emails: Vec<String>,
    #[serde(default)]
    pub phones: Vec<String>,
    #[serde(default)]
    pub company_id: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PersonPatch {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub emails: Option<Vec<String>>,
    pub phones: Option<Vec<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>)]
    pub company_id: Option<Option<i64>>,
}

#[derive(Debug, Insertable, AsChangeset)]
#[diesel(table_name = persons, treat_none_as_null = true)]
pub struct PersonRow {
    first_name: String,
    last_name: String,
    emails: String,
    phones: String,
    company_id: Option<i64>,
}

impl PersonInput {
    fn validate(&self, conn: &mut DbConnection, account_id: i64) -> CoreResult<PersonRow> {
        let first_name = parse_name(&self.first_name, "first_name", 200)?;
        let last_name = self.last_name.trim().to_owned();
        if last_name.chars().count() > 200 {
            return Err(CoreError::invalid(
                "last_name",
                "must be at most 200 characters",
            ));
        }
        let emails = parse_email_list(&self.emails, "emails")?;
        let phones = parse_phones(&self.phones, "phones")?;
        if let Some(company_id) = self.company_id {
            check_reference(
                Company::find(conn, account_id, company_id),
                "company_id",
                "company",
                company_id,
            )?;
        }
        Ok(PersonRow {
            first_name,
            last_name,
            emails: to_json(&emails.into_iter().map(String::from).collect::<Vec<_>>()),
            phones: to_json(&phones),
            company_id: self.company_id,
        })
    }
}

impl PersonPatch {
    fn apply_to(self, current: &Person) -> PersonInput {
        PersonInput {
            first_name: self
                .first_name
                .unwrap_or_else(|| current.first_name.clone()),
            last_name: self.last_name.unwrap_or_else(|| current.last_name.clone()),
            emails: self.emails.unwrap_or_else(|| current.emails.clone()),
            phones: self.phones.unwrap_or_else(|| current.phones.clone()),
            company_id: self.company_id.unwrap_or(current.company_id),
        }
    }
}

impl Person {
    /// The address mail to this person goes to by default.
    pub fn primary_email(&self) -> Option<&str> {
        self.emails.first().map(String::as_str)
    }
}

record_queries!(Person, persons, "person");
impl_record!(
    Person,
    RecordKind::Person,
    PersonRow,
    PersonInput,
    PersonPatch
);

// ---------------------------------------------------------------------------------------------
// Deal

/// A deal's value: a decimal given as a string (exact) or a JSON number (refused beyond the 15
/// digits a float holds exactly), kept as a string so no amount is rounded.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Amount {
    Number(serde_json::Number),
    Text(String),
}

fn parse_amount(amount: &Amount, field: &str) -> CoreResult<String> {
    let raw = match amount {
        // A JSON number arrives as a float: take it only while a float holds it exactly
        // (15 significant digits, no exponent).
        Amount::Number(n) => {
            let text = n.to_string();
            let digits = text.chars().filter(char::is_ascii_digit).count();
            if digits > 15 || text.contains(['e', 'E']) {
                return Err(CoreError::invalid(
                    field,
                    format!(
                        "`{text}` has too many digits for a JSON number; send it as a string like \"1250.50\""
                    ),
                ));
            }
            text
        }
        Amount::Text(s) => s.trim().to_owned(),
    };
    let (int, frac) = raw.split_once('.').unwrap_or((&raw, ""));
    let digits = int.strip_prefix('-').unwrap_or(int);
    let ok = !digits.is_empty()
        && digits.len() <= 15
        && digits.chars().all(|c| c.is_ascii_digit())
        && frac.len() <= 4
        && frac.chars().all(|c| c.is_ascii_digit())
        && !(raw.contains('.') && frac.is_empty());
    if !ok {
        return Err(CoreError::invalid(
            field,
            format!("`{raw}` is not an amount like 1250.50"),
        ));
    }
    Ok(raw)
}

fn parse_currency(code: &str, field: &str) -> CoreResult<String> {
    let code = code.trim().to_ascii_uppercase();
    if code.len() == 3 && code.chars().all(|c| c.is_ascii_uppercase()) {
        Ok(code)
    } else {
        Err(CoreError::invalid(
            field,
            format!("`{code}` is not an ISO 4217 currency code like EUR"),
        ))
    }
}

#[derive(Clone, Debug, Queryable, Selectable, Identifiable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = deals)]
pub struct Deal {
    pub id: i64,
    #[serde(skip)]
    pub account_id: i64,
    pub title: String,
    /// A decimal string such as `"1250.50"`.
    pub value: Option<String>,
    pub currency: Option<String>,
    pub person_id: Option<i64>,
    pub company_id: Option<i64>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DealInput {
    pub title: String,
    /// A decimal as a JSON number or string, e.g. `1250.50` or `"1250.50"`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub value: Option<Amount>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub person_id: Option<i64>,
    #[serde(default)]
    pub company_id: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DealPatch {
    pub title: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub value: Option<Option<Amount>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub currency: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>)]
    pub person_id: Option<Option<i64>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>)]
    pub company_id: Option<Option<i64>>,
}

#[derive(Debug, Insertable, AsChangeset)]
#[diesel(table_name = deals, treat_none_as_null = true)]
pub struct DealRow {
    title: String,
    value: Option<String>,
    currency: Option<String>,
    person_id: Option<i64>,
    company_id: Option<i64>,
}

/// Checks the optional person and company a deal or lead points at.
fn check_parties(
    conn: &mut DbConnection,
    account_id: i64,
    person_id: Option<i64>,
    company_id: Option<i64>,
) -> CoreResult<()> {
    if let Some(id) = person_id {
        check_reference(
            Person::find(conn, account_id, id),
            "person_id",
            "person",
            id,
        )?;
    }
    if let Some(id) = company_id {
        check_reference(
            Company::find(conn, account_id, id),
            "company_id",
            "company",
            id,
        )?;
    }
    Ok(())
}

impl DealInput {
    fn validate(&self, conn: &mut DbConnection, account_id: i64) -> CoreResult<DealRow> {
        let title = parse_name(&self.title, "title", 300)?;
        let value = self
            .value
            .as_ref()
            .map(|v| parse_amount(v, "value"))
            .transpose()?;
        let currency = self
            .currency
            .as_deref()
            .map(|c| parse_currency(c, "currency"))
            .transpose()?;
        if value.is_some() && currency.is_none() {
            return Err(CoreError::invalid(
                "currency",
                "is required when value is given",
            ));
        }
        check_parties(conn, account_id, self.person_id, self.company_id)?;
        Ok(DealRow {
            title,
            value,
            currency,
            person_id: self.person_id,
            company_id: self.company_id,
        })
    }
}

impl DealPatch {
    fn apply_to(self, current: &Deal) -> DealInput {
        DealInput {
            title: self.title.unwrap_or_else(|| current.title.clone()),
            value: self
                .value
                .unwrap_or_else(|| current.value.clone().map(Amount::Text)),
            currency: self.currency.unwrap_or_else(|| current.currency.clone()),
            person_id: self.person_id.unwrap_or(current.person_id),
            company_id: self.company_id.unwrap_or(current.company_id),
        }
    }
}

record_queries!(Deal, deals, "deal");
impl_record!(Deal, RecordKind::Deal, DealRow, DealInput, DealPatch);

// ---------------------------------------------------------------------------------------------
// Lead

#[derive(Clone, Debug, Queryable, Selectable, Identifiable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = leads)]
pub struct Lead {
    pub id: i64,
    #[serde(skip)]
    pub account_id: i64,
    pub title: String,
    pub person_id: Option<i64>,
    pub company_id: Option<i64>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadInput {
    pub title: String,
    #[serde(default)]
    pub person_id: Option<i64>,
    #[serde(default)]
    pub company_id: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadPatch {
    pub title: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>)]
    pub person_id: Option<Option<i64>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>)]
    pub company_id: Option<Option<i64>>,
}

#[derive(Debug, Insertable, AsChangeset)]
#[diesel(table_name = leads, treat_none_as_null = true)]
pub struct LeadRow {
    title: String,
    person_id: Option<i64>,
    company_id: Option<i64>,
}

impl LeadInput {
    fn validate(&self, conn: &mut DbConnection, account_id: i64) -> CoreResult<LeadRow> {
        let title = parse_name(&self.title, "title", 300)?;
        check_parties(conn, account_id, self.person_id, self.company_id)?;
        Ok(LeadRow {
            title,
            person_id: self.person_id,
            company_id: self.company_id,
        })
    }
}

impl LeadPatch {
    fn apply_to(self, current: &Lead) -> LeadInput {
        LeadInput {
            title: self.title.unwrap_or_else(|| current.title.clone()),
            person_id: self.person_id.unwrap_or(current.person_id),
            company_id: self.company_id.unwrap_or(current.company_id),
        }
    }
}

record_queries!(Lead, leads, "lead");
impl_record!(Lead, RecordKind::Lead, LeadRow, LeadInput, LeadPatch);
