//! The `templates` table: personal templates are their author's alone; shared ones are seen by
//! the whole account and changed by their author or an admin (T1).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use herald_core::domain::parse_name;
use herald_core::identity::User;
use herald_core::pagination::{Page, PageRequest};
use herald_core::text_enum;
use herald_core::time::{now, rfc3339};
use herald_core::{CoreError, DbConnection};
use serde::{Deserialize, Serialize};

use crate::engine::{Engine, Sources, Warning};
use crate::error::TemplateError;
use crate::schema::templates;

text_enum!(
    /// Who sees a template.
    Scope { Personal => "personal", Shared => "shared" }
);

#[derive(Clone, Debug, Queryable, Selectable, Identifiable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = templates)]
pub struct Template {
    pub id: i64,
    #[serde(skip)]
    pub account_id: i64,
    pub author_id: i64,
    pub name: String,
    pub subject: String,
    pub html: Option<String>,
    pub text: Option<String>,
    /// `personal` or `shared`
    pub scope: String,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateInput {
    pub name: String,
    pub subject: String,
    #[serde(default)]
    pub html: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    /// `personal` (default) or `shared`
    #[serde(default)]
    pub scope: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplatePatch {
    pub name: Option<String>,
    pub subject: Option<String>,
    #[serde(default, deserialize_with = "herald_core::records::double_option")]
    #[schema(value_type = Option<String>)]
    pub html: Option<Option<String>>,
    #[serde(default, deserialize_with = "herald_core::records::double_option")]
    #[schema(value_type = Option<String>)]
    pub text: Option<Option<String>>,
    pub scope: Option<String>,
}

#[derive(Debug, Insertable, AsChangeset)]
#[diesel(table_name = templates, treat_none_as_null = true)]
struct TemplateRow {
    name: String,
    subject: String,
    html: Option<String>,
    text: Option<String>,
    scope: String,
}

/// A saved template and the placeholders no context can fill.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Saved {
    #[serde(flatten)]
    pub template: Template,
    pub warnings: Vec<Warning>,
}

impl TemplateInput {
    fn validate(&self, engine: &Engine) -> Result<(TemplateRow, Vec<Warning>), TemplateError> {
        let name = parse_name(&self.name, "name", 200)?;
        if self.subject.trim().is_empty() {
            return Err(CoreError::invalid("subject", "must not be empty").into());
        }
        let blank = |s: &Option<String>| s.as_deref().is_none_or(|s| s.trim().is_empty());
        if blank(&self.html) && blank(&self.text) {
            return Err(CoreError::invalid(
                "html",
                "a template needs an HTML body, a text body, or both",
            )
            .into());
        }
        let scope: Scope = match &self.scope {
            Some(s) => s.parse().map_err(|_| {
                CoreError::invalid("scope", format!("`{s}` is not one of: personal, shared"))
            })?,
            None => Scope::Personal,
        };
        let keep = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
        let row = TemplateRow {
            name,
            subject: self.subject.clone(),
            html: keep(&self.html),
            text: keep(&self.text),
            scope: scope.as_str().to_owned(),
        };
        let warnings = engine.check(&row.sources())?;
        Ok((row, warnings))
    }
}

impl TemplateRow {
    fn sources(&self) -> Sources<'_> {
        Sources {
            subject: &self.subject,
            html: self.html.as_deref(),
            text: self.text.as_deref(),
        }
    }
}

impl Template {
    pub fn sources(&self) -> Sources<'_> {
        Sources {
            subject: &self.subject,
            html: self.html.as_deref(),
            text: self.text.as_deref(),
        }
    }

    pub fn scope(&self) -> Scope {
        self.scope.parse().unwrap_or(Scope::Personal)
    }

    /// Whether `user` may change or delete it (it is visible to them already).
    pub fn editable_by(&self, user: &User) -> bool {
        self.author_id == user.id || (self.scope() == Scope::Shared && user.is_admin())
    }

    pub fn create(
        conn: &mut DbConnection,
        engine: &Engine,
        author: &User,
        input: &TemplateInput,
    ) -> Result<Saved, TemplateError> {
        let (row, warnings) = input.validate(engine)?;
        let at = now();
        let template = diesel::insert_into(templates::table)
            .values((
                &row,
                templates::account_id.eq(author.account_id),
                templates::author_id.eq(author.id),
                templates::created_at.eq(at),
                templates::updated_at.eq(at),
            ))
            .returning(templates::all_columns)
            .get_result(conn)?;
        Ok(Saved { template, warnings })
    }

    /// A template the viewer can see; another user's personal template is "not found".
    pub fn find(
        conn: &mut DbConnection,
        viewer: &User,
        id: i64,
    ) -> Result<Template, TemplateError> {
        templates::table
            .filter(templates::account_id.eq(viewer.account_id))
            .filter(templates::id.eq(id))
            .filter(
                templates::scope
                    .eq(Scope::Shared.as_str())
                    .or(templates::author_id.eq(viewer.id)),
            )
            .select(Template::as_select())
            .first(conn)
            .optional()?
            .ok_or_else(|| CoreError::not_found("template", id).into())
    }

    pub fn list(
        conn: &mut DbConnection,
        viewer: &User,
        page: PageRequest,
    ) -> QueryResult<Page<Template>> {
        let mut query = templates::table
            .filter(templates::account_id.eq(viewer.account_id))
            .filter(
                templates::scope
                    .eq(Scope::Shared.as_str())
                    .or(templates::author_id.eq(viewer.id)),
            )
            .select(Template::as_select())
            .order(templates::id.desc())
            .limit(page.limit + 1)
            .into_boxed();
        if let Some(before) = page.before_id {
            query = query.filter(templates::id.lt(before));
        }
        Ok(Page::from_rows(query.load(conn)?, page.limit, |t| t.id))
    }

    fn editable(conn: &mut DbConnection, actor: &User, id: i64) -> Result<Template, TemplateError> {
        let template = Self::find(conn, actor, id)?;
        if !template.editable_by(actor) {
            return Err(CoreError::Forbidden(
                "only its author or an admin can change a shared template".into(),
            )
            .into());
        }
        Ok(template)
    }

    pub fn update(
        conn: &mut DbConnection,
        engine: &Engine,
        actor: &User,
        id: i64,
        patch: TemplatePatch,
    ) -> Result<Saved, TemplateError> {
        let current = Self::editable(conn, actor, id)?;
        let input = TemplateInput {
            name: patch.name.unwrap_or(current.name),
            subject: patch.subject.unwrap_or(current.subject),
            html: patch.html.unwrap_or(current.html),
            text: patch.text.unwrap_or(current.text),
            scope: Some(patch.scope.unwrap_or(current.scope)),
        };
        let (row, warnings) = input.validate(engine)?;
        let template = diesel::update(templates::table.find(id))
            .set((&row, templates::updated_at.eq(now())))
            .returning(templates::all_columns)
            .get_result(conn)?;
        Ok(Saved { template, warnings })
    }

    pub fn delete(conn: &mut DbConnection, actor: &User, id: i64) -> Result<(), TemplateError> {
        Self::editable(conn, actor, id)?;
        diesel::delete(templates::table.find(id)).execute(conn)?;
        Ok(())
    }
}
