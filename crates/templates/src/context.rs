//! The data a template sees: `person`, `company`, `deal`, `lead`, `sender`, and the caller's
//! variables at the top level.
//!
//! Empty and missing values are left out, so `{{ company.domain }}` with no domain is a missing
//! placeholder (an error, or its `default`) rather than a blank.

use herald_core::identity::User;
use herald_core::records::{Company, Deal, Lead, Person, RecordKind};
use herald_core::{CoreError, DbConnection};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::TemplateError;

/// The names CRM data fills, with their fields.
pub const KNOWN_FIELDS: &[(&str, &[&str])] = &[
    (
        "person",
        &[
            "first_name",
            "last_name",
            "full_name",
            "email",
            "emails",
            "phone",
            "phones",
        ],
    ),
    ("company", &["name", "domain", "email", "emails"]),
    ("deal", &["title", "value", "currency"]),
    ("lead", &["title"]),
    (
        "sender",
        &[
            "name",
            "first_name",
            "email",
            "address",
            "display_name",
            "signature",
        ],
    ),
];

pub const ROOTS: &[&str] = &["person", "company", "deal", "lead", "sender"];

/// Caller variables: at most this many bytes of JSON, so a render's inputs stay small.
pub const MAX_VARIABLES_BYTES: usize = 16 * 1024;

/// The record a template is rendered for.
#[derive(Clone, Copy, Debug, Deserialize, utoipa::ToSchema)]
pub struct RecordRef {
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "person")]
    pub kind: RecordKind,
    pub id: i64,
}

fn object(pairs: Vec<(&str, Value)>) -> Value {
    let map: Map<String, Value> = pairs
        .into_iter()
        .filter(|(_, v)| match v {
            Value::Null => false,
            Value::String(s) => !s.trim().is_empty(),
            Value::Array(a) => !a.is_empty(),
            _ => true,
        })
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    Value::Object(map)
}

fn person_value(p: &Person) -> Value {
    object(vec![
        ("first_name", json!(p.first_name)),
        ("last_name", json!(p.last_name)),
        (
            "full_name",
            json!(format!("{} {}", p.first_name, p.last_name).trim()),
        ),
        ("email", json!(p.emails.first())),
        ("emails", json!(p.emails)),
        ("phone", json!(p.phones.first())),
        ("phones", json!(p.phones)),
    ])
}

fn company_value(c: &Company) -> Value {
    object(vec![
        ("name", json!(c.name)),
        ("domain", json!(c.domain)),
        ("email", json!(c.emails.first())),
        ("emails", json!(c.emails)),
    ])
}

/// The mailbox an email goes out from, as templates see it.
#[derive(Clone, Debug, Default)]
pub struct SenderMailbox {
    pub address: String,
    pub display_name: Option<String>,
    pub signature: Option<String>,
}

fn sender_value(user: &User, mailbox: Option<&SenderMailbox>) -> Value {
    object(vec![
        ("name", json!(user.name)),
        ("first_name", json!(user.name.split_whitespace().next())),
        ("email", json!(user.email)),
        ("address", json!(mailbox.map(|m| &m.address))),
        (
            "display_name",
            json!(
                mailbox
                    .and_then(|m| m.display_name.clone())
                    .or_else(|| Some(user.name.clone()))
            ),
        ),
        (
            "signature",
            json!(mailbox.and_then(|m| m.signature.clone())),
        ),
    ])
}

/// Builds the context for `record` (and the records it points at) as `sender` sees it, sending
/// from `mailbox`, with the caller's variables beside them.
pub fn build(
    conn: &mut DbConnection,
    account_id: i64,
    sender: &User,
    mailbox: Option<&SenderMailbox>,
    record: Option<RecordRef>,
    variables: &Map<String, Value>,
) -> Result<Value, TemplateError> {
    let size = serde_json::to_string(variables)
        .map(|s| s.len())
        .unwrap_or(usize::MAX);
    if size > MAX_VARIABLES_BYTES {
        return Err(CoreError::invalid(
            "variables",
            format!("must be at most {MAX_VARIABLES_BYTES} bytes of JSON"),
        )
        .into());
    }
    let mut context = Map::new();
    for (name, value) in variables {
        if ROOTS.contains(&name.as_str()) {
            return Err(CoreError::invalid(
                format!("variables.{name}"),
                format!("`{name}` is filled from CRM data and cannot be a variable"),
            )
            .into());
        }
        // A null or blank variable is no value: it is reported missing (or takes its default).
        let blank = match value {
            Value::Null => true,
            Value::String(s) => s.trim().is_empty(),
            _ => false,
        };
        if !blank {
            context.insert(name.clone(), value.clone());
        }
    }
    context.insert("sender".into(), sender_value(sender, mailbox));

    let (mut person_id, mut company_id) = (None, None);
    if let Some(record) = record {
        let field = "record";
        let not_found = |e: CoreError| match e {
            CoreError::NotFound { kind, id } => {
                CoreError::invalid(field, format!("{kind} {id} does not exist"))
            }
            other => other,
        };
        match record.kind {
            RecordKind::Person => person_id = Some(record.id),
            RecordKind::Company => company_id = Some(record.id),
            RecordKind::Deal => {
                let deal = Deal::find(conn, account_id, record.id).map_err(not_found)?;
                context.insert(
                    "deal".into(),
                    object(vec![
                        ("title", json!(deal.title)),
                        ("value", json!(deal.value)),
                        ("currency", json!(deal.currency)),
                    ]),
                );
                (person_id, company_id) = (deal.person_id, deal.company_id);
            }
            RecordKind::Lead => {
                let lead = Lead::find(conn, account_id, record.id).map_err(not_found)?;
                context.insert("lead".into(), object(vec![("title", json!(lead.title))]));
                (person_id, company_id) = (lead.person_id, lead.company_id);
            }
        }
        if let Some(id) = person_id {
            let person = Person::find(conn, account_id, id).map_err(not_found)?;
            company_id = company_id.or(person.company_id);
            context.insert("person".into(), person_value(&person));
        }
        if let Some(id) = company_id {
            let company = Company::find(conn, account_id, id).map_err(not_found)?;
            context.insert("company".into(), company_value(&company));
        }
    }
    // Every root exists, if only empty, so `{{ deal.title | default('…') }}` works without a deal
    // and `{% if deal %}` is simply false; printing `{{ deal.title }}` is still a missing value.
    for root in ROOTS {
        context.entry(*root).or_insert_with(|| json!({}));
    }
    Ok(Value::Object(context))
}
