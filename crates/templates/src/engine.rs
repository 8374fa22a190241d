//! The sandboxed renderer: minijinja with no loader (no file access), no environment access, a
//! curated set of filters, fuel and an output cap.
//!
//! Memory is bounded as well as time. Templates may use placeholders, filters, `{% if %}` and
//! `{% for %}`; other statements (`set`, `macro`, `call`, `include`…), operators that build
//! strings (`~`, `+`, `*`, `**`) and `namespace()` are refused when a template is saved, the
//! filters that can grow a string in one step (`indent`, `format`, `pprint`, `string`, `tojson`)
//! are removed, and `join` and `replace` are capped at the output limit. What is left only grows
//! output by emitting it, one value per instruction, so fuel and the output cap bound the render.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, Write};

use minijinja::machinery::{Token, tokenize};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Serde, Value};
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde::Serialize;

use crate::context::{KNOWN_FIELDS, ROOTS};
use crate::error::TemplateError;

/// The parts of a template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Subject,
    Html,
    Text,
}

impl Part {
    fn file_name(self) -> &'static str {
        match self {
            Part::Subject => "subject.txt",
            Part::Html => "body.html",
            Part::Text => "body.txt",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Part::Subject => "subject",
            Part::Html => "html",
            Part::Text => "text",
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a render may use.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Instructions per part.
    pub fuel: u64,
    /// Bytes written per part.
    pub max_output_bytes: usize,
    /// Bytes of template source per part.
    pub max_source_bytes: usize,
    /// Nesting of macro calls and includes.
    pub recursion: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 200_000,
            max_output_bytes: 512 * 1024,
            max_source_bytes: 64 * 1024,
            recursion: 16,
        }
    }
}

/// The sources of one template.
#[derive(Clone, Copy, Debug)]
pub struct Sources<'a> {
    pub subject: &'a str,
    pub html: Option<&'a str>,
    pub text: Option<&'a str>,
}

impl<'a> Sources<'a> {
    fn parts(&self) -> impl Iterator<Item = (Part, &'a str)> {
        [
            (Part::Subject, Some(self.subject)),
            (Part::Html, self.html),
            (Part::Text, self.text),
        ]
        .into_iter()
        .filter_map(|(part, source)| source.map(|s| (part, s)))
    }
}

/// A rendered template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Rendered {
    pub subject: String,
    pub html: Option<String>,
    pub text: Option<String>,
}

/// A placeholder that no context can fill (returned when a template is saved).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Warning {
    pub part: Part,
    pub name: String,
    pub message: String,
}

#[derive(Clone, Debug, Default)]
pub struct Engine {
    limits: Limits,
}

/// Operators that can build a string larger than their inputs.
const GROWING_OPERATORS: &[&str] = &["`~`", "`+`", "`*`", "`**`"];

/// Statements a template may use. `set`, `macro`, `call`, `with`, `filter` and friends would let
/// a template bind values that refer to each other (`{% set b = [a, a] %}`), which some filters
/// and printing then expand exponentially within a single instruction, out of fuel's reach.
const ALLOWED_STATEMENTS: &[&str] = &["if", "elif", "else", "endif", "for", "endfor"];

impl Engine {
    pub fn new(limits: Limits) -> Self {
        Engine { limits }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn environment(&self) -> Environment<'static> {
        let mut env = Environment::new();
        // Undefined values are falsy in `{% if %}` but printing one is an error: no silent blanks.
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.set_debug(true);
        env.set_fuel(Some(self.limits.fuel));
        env.set_recursion_limit(self.limits.recursion);
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        env.remove_global("namespace");
        env.remove_global("debug");
        // Filters that can build a string or list much larger than their input in one step.
        for filter in [
            "indent", "format", "pprint", "string", "tojson", "batch", "slice",
        ] {
            env.remove_filter(filter);
        }
        let cap = self.limits.max_output_bytes;
        // Every filter that makes a string counts what it makes against the render's work budget
        // and the output cap, so chaining them (`|e|title|e|…`) cannot grow without bound.
        env.add_filter("join", move |value: &Value, joiner: Option<&str>| {
            account(cap, capped_join(cap, value, joiner.unwrap_or(""))?)
        });
        env.add_filter("replace", move |value: &str, from: &str, to: &str| {
            account(cap, capped_replace(cap, value, from, to)?)
        });
        let escape = move |state: &mut minijinja::State, value: &Value| {
            account_value(cap, minijinja::filters::escape(state, value)?)
        };
        env.add_filter("escape", escape);
        env.add_filter("e", escape);
        env.add_filter("upper", move |value: &Value| {
            account(cap, text_of(value)?.to_uppercase())
        });
        env.add_filter("lower", move |value: &Value| {
            account(cap, text_of(value)?.to_lowercase())
        });
        env.add_filter("title", move |value: &Value| {
            account(cap, minijinja::filters::title(text_of(value)?.into()))
        });
        env.add_filter("capitalize", move |value: &Value| {
            let text = text_of(value)?;
            let mut chars = text.chars();
            let out = match chars.next() {
                Some(first) => first
                    .to_uppercase()
                    .chain(chars.flat_map(char::to_lowercase))
                    .collect(),
                None => String::new(),
            };
            account(cap, out)
        });
        // Printing a list or a map would format it whole before the output cap sees a byte.
        env.set_formatter(|out, state, value| {
            if matches!(
                value.kind(),
                minijinja::value::ValueKind::Seq | minijinja::value::ValueKind::Map
            ) {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    "a list or a map cannot be printed; use `join` or a `{% for %}` loop",
                ));
            }
            minijinja::escape_formatter(out, state, value)
        });
        env
    }

    /// Parses every part and checks it uses only what templates may use; returns the
    /// placeholders no context can fill as warnings.
    pub fn check(&self, sources: &Sources<'_>) -> Result<Vec<Warning>, TemplateError> {
        let env = self.environment();
        let globals: BTreeSet<String> = env.globals().map(|(name, _)| name.to_owned()).collect();
        let mut warnings = Vec::new();
        for (part, source) in sources.parts() {
            self.check_source(part, source)?;
            let template = env
                .template_from_named_str(part.file_name(), source)
                .map_err(|e| syntax_error(part, source, &e))?;
            let mut names: Vec<String> = template.undeclared_variables(true).into_iter().collect();
            names.sort();
            for name in names {
                let root = name.split('.').next().unwrap_or_default();
                if globals.contains(root) {
                    continue;
                }
                if let Some(message) = unfillable(&name) {
                    warnings.push(Warning {
                        part,
                        name,
                        message,
                    });
                }
            }
        }
        Ok(warnings)
    }

    fn check_source(&self, part: Part, source: &str) -> Result<(), TemplateError> {
        if source.len() > self.limits.max_source_bytes {
            return Err(TemplateError::Syntax {
                part,
                line: 1,
                column: 1,
                message: format!("is longer than {} bytes", self.limits.max_source_bytes),
            });
        }
        let mut after_block_start = false;
        for token in tokenize(source, false, SyntaxConfig::default()) {
            let (token, span) = token.map_err(|e| syntax_error(part, source, &e))?;
            let statement = after_block_start;
            after_block_start = matches!(token, Token::BlockStart);
            if statement
                && let Token::Ident(name) = token
                && !ALLOWED_STATEMENTS.contains(&name)
            {
                return Err(TemplateError::Syntax {
                    part,
                    line: span.start_line as usize,
                    column: span.start_col as usize + 1,
                    message: format!(
                        "`{{% {name} %}}` is not allowed in templates; use placeholders, filters, \
                         `{{% if %}}` and `{{% for %}}`"
                    ),
                });
            }
            let shown = token.to_string();
            if GROWING_OPERATORS.contains(&shown.as_str()) {
                return Err(TemplateError::Syntax {
                    part,
                    line: span.start_line as usize,
                    column: span.start_col as usize + 1,
                    message: format!(
                        "the operator {shown} is not allowed in templates (write placeholders side \
                         by side instead: {{{{ a }}}}{{{{ b }}}})"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Checks and compiles once, to render many times.
    pub fn compile(&self, sources: &Sources<'_>) -> Result<Compiled, TemplateError> {
        let mut env = self.environment();
        let mut parts = Vec::new();
        for (part, source) in sources.parts() {
            self.check_source(part, source)?;
            env.add_template_owned(part.file_name(), source.to_owned())
                .map_err(|e| syntax_error(part, source, &e))?;
            parts.push(part);
        }
        Ok(Compiled {
            env,
            parts,
            limits: self.limits,
        })
    }

    /// Compiles and renders.
    pub fn render(
        &self,
        sources: &Sources<'_>,
        context: &serde_json::Value,
    ) -> Result<Rendered, TemplateError> {
        self.compile(sources)?.render(context)
    }
}

/// Why a placeholder cannot be filled from CRM data, if it cannot.
fn unfillable(name: &str) -> Option<String> {
    let mut segments = name.split('.');
    let root = segments.next().unwrap_or_default();
    let Some(fields) = KNOWN_FIELDS
        .iter()
        .find(|(r, _)| *r == root)
        .map(|(_, f)| *f)
    else {
        return Some(format!(
            "`{root}` is not CRM data ({}); it needs a value in `variables` when rendering",
            ROOTS.join(", ")
        ));
    };
    match segments.next() {
        None => None,
        Some(field) if fields.contains(&field) => None,
        Some(field) => Some(format!(
            "{root} has no field `{field}` (it has: {})",
            fields.join(", ")
        )),
    }
}

thread_local! {
    /// Bytes made by string filters in the current part's render (renders run one at a time on
    /// a blocking thread); reset before each.
    static WORK: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Work a part's render may do in string filters: a few times the output cap.
const WORK_FACTOR: usize = 8;

fn reset_work() {
    WORK.with(|w| w.set(0));
}

/// Counts a filter's result against the output cap and the render's work budget.
fn account(cap: usize, out: String) -> Result<String, minijinja::Error> {
    if out.len() > cap {
        return Err(too_large(cap));
    }
    let total = WORK.with(|w| {
        let total = w.get().saturating_add(out.len());
        w.set(total);
        total
    });
    if total > cap.saturating_mul(WORK_FACTOR) {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            "the template's filters produce too much text (more than a few times the output limit)",
        ));
    }
    Ok(out)
}

fn account_value(cap: usize, value: Value) -> Result<Value, minijinja::Error> {
    if let Some(text) = value.as_str() {
        let safe = value.is_safe();
        let counted = account(cap, text.to_owned())?;
        return Ok(if safe {
            Value::from_safe_string(counted)
        } else {
            Value::from(counted)
        });
    }
    Ok(value)
}

/// The text of a value for a string filter; a missing value is reported, not treated as blank.
fn text_of(value: &Value) -> Result<String, minijinja::Error> {
    if value.is_undefined() {
        return Err(minijinja::Error::new(
            ErrorKind::UndefinedError,
            "the value is undefined",
        ));
    }
    Ok(match value.as_str() {
        Some(s) => s.to_owned(),
        None => value.to_string(),
    })
}

fn too_large(cap: usize) -> minijinja::Error {
    minijinja::Error::new(
        ErrorKind::InvalidOperation,
        format!("the result is larger than the {cap}-byte output limit"),
    )
}

/// `join`, stopping as soon as the result passes the output limit.
fn capped_join(cap: usize, value: &Value, joiner: &str) -> Result<String, minijinja::Error> {
    // A missing list is a missing value, not an empty one.
    if value.is_undefined() {
        return Err(minijinja::Error::new(
            ErrorKind::UndefinedError,
            "the value is undefined",
        ));
    }
    let mut out = String::new();
    for (i, item) in value.try_iter()?.enumerate() {
        if i > 0 {
            out.push_str(joiner);
        }
        match item.as_str() {
            Some(s) => out.push_str(s),
            None => out.push_str(&item.to_string()),
        }
        if out.len() > cap {
            return Err(too_large(cap));
        }
    }
    Ok(out)
}

/// `replace`, refusing an empty pattern and a result past the output limit.
fn capped_replace(
    cap: usize,
    value: &str,
    from: &str,
    to: &str,
) -> Result<String, minijinja::Error> {
    if from.is_empty() {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            "replace needs a non-empty string to look for",
        ));
    }
    let count = value.matches(from).count();
    let grown = value.len() + count.saturating_mul(to.len().saturating_sub(from.len()));
    if grown > cap {
        return Err(too_large(cap));
    }
    Ok(value.replace(from, to))
}

fn column_of(source: &str, offset: usize) -> usize {
    let before = &source[..offset.min(source.len())];
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    before[line_start..].chars().count() + 1
}

fn syntax_error(part: Part, source: &str, e: &minijinja::Error) -> TemplateError {
    let line = e.line().unwrap_or(1);
    let column = e.range().map(|r| column_of(source, r.start)).unwrap_or(1);
    let message = e
        .detail()
        .map(str::to_owned)
        .unwrap_or_else(|| e.kind().to_string());
    TemplateError::Syntax {
        part,
        line,
        column,
        message,
    }
}

/// A template ready to render many times.
pub struct Compiled {
    env: Environment<'static>,
    parts: Vec<Part>,
    limits: Limits,
}

impl fmt::Debug for Compiled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compiled")
            .field("parts", &self.parts)
            .finish()
    }
}

/// Most missing names one render reports (each costs a render of its own).
const MAX_MISSING: usize = 20;

/// A writer that refuses to go past the output limit.
struct CappedWriter {
    buffer: Vec<u8>,
    cap: usize,
}

impl Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buffer.len() + data.len() > self.cap {
            return Err(io::Error::other("output limit"));
        }
        self.buffer.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum PartOutcome {
    Done(String),
    Missing(String),
}

impl Compiled {
    /// Renders every part. Every placeholder without a value (and without `default`) is reported
    /// at once: each missing name is filled with a stand-in and the render retried, so the caller
    /// gets the whole list rather than the first one.
    pub fn render(&self, context: &serde_json::Value) -> Result<Rendered, TemplateError> {
        let mut context = context.clone();
        let mut missing: BTreeSet<String> = BTreeSet::new();
        // Each retry fills one more name and renders again with fresh fuel, so the retries are
        // bounded: past MAX_MISSING names the list is cut short.
        for _ in 0..=MAX_MISSING {
            match self.render_once(&context)? {
                Ok(rendered) if missing.is_empty() => return Ok(rendered),
                Ok(_) => {
                    return Err(TemplateError::MissingValues {
                        names: missing.into_iter().collect(),
                    });
                }
                Err(name) => {
                    if !missing.insert(name.clone()) || !fill(&mut context, &name) {
                        missing.insert(name);
                        return Err(TemplateError::MissingValues {
                            names: missing.into_iter().collect(),
                        });
                    }
                }
            }
        }
        Err(TemplateError::MissingValues {
            names: missing.into_iter().collect(),
        })
    }

    /// `Ok(Err(name))` when a placeholder has no value.
    fn render_once(
        &self,
        context: &serde_json::Value,
    ) -> Result<Result<Rendered, String>, TemplateError> {
        let value = Value::from(Serde(context));
        let mut rendered = Rendered {
            subject: String::new(),
            html: None,
            text: None,
        };
        for part in &self.parts {
            let output = match self.render_part(*part, &value)? {
                PartOutcome::Done(output) => output,
                PartOutcome::Missing(name) => return Ok(Err(name)),
            };
            match part {
                // A subject is one line.
                Part::Subject => {
                    rendered.subject = output.split_whitespace().collect::<Vec<_>>().join(" ")
                }
                Part::Html => rendered.html = Some(output),
                Part::Text => rendered.text = Some(output),
            }
        }
        Ok(Ok(rendered))
    }

    fn render_part(&self, part: Part, context: &Value) -> Result<PartOutcome, TemplateError> {
        let template =
            self.env
                .get_template(part.file_name())
                .map_err(|e| TemplateError::Render {
                    part,
                    line: 1,
                    message: e.to_string(),
                })?;
        reset_work();
        let mut out = CappedWriter {
            buffer: Vec::new(),
            cap: self.limits.max_output_bytes,
        };
        match template.render_captured_to(context, &mut out) {
            Ok(_) => Ok(PartOutcome::Done(
                String::from_utf8_lossy(&out.buffer).into_owned(),
            )),
            Err(e) => {
                let source = template.source();
                match e.kind() {
                    ErrorKind::UndefinedError => {
                        Ok(PartOutcome::Missing(undefined_name(source, &e)))
                    }
                    ErrorKind::OutOfFuel => Err(TemplateError::LimitExceeded(format!(
                        "{part}: the template ran too long (more than {} steps): is there a loop that does not end?",
                        self.limits.fuel
                    ))),
                    ErrorKind::WriteFailure => Err(TemplateError::LimitExceeded(format!(
                        "{part}: the output is larger than {} bytes",
                        self.limits.max_output_bytes
                    ))),
                    _ => Err(TemplateError::Render {
                        part,
                        line: e.line().unwrap_or(1),
                        message: e
                            .detail()
                            .map(str::to_owned)
                            .unwrap_or_else(|| e.kind().to_string()),
                    }),
                }
            }
        }
    }
}

/// The dotted name of the undefined placeholder: the failing expression when it is a plain path
/// (`person.nickname`), else the name minijinja reports.
fn undefined_name(source: &str, e: &minijinja::Error) -> String {
    let is_path = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|seg| {
                !seg.is_empty()
                    && seg.chars().all(|c| c.is_alphanumeric() || c == '_')
                    && !seg.starts_with(|c: char| c.is_ascii_digit())
            })
    };
    if let Some(range) = e.range()
        && let Some(text) = source.get(range)
    {
        // `person.phones | join(', ')`: the placeholder is what the filters were given.
        let head = text.split('|').next().unwrap_or_default().trim();
        if is_path(head) {
            return head.to_owned();
        }
        // A filter that found its input missing points at itself: the input is the path just
        // before its `|`.
        if let Some(range) = e.range()
            && let Some(before) = source.get(..range.start)
        {
            let before = before.trim_end().trim_end_matches('|').trim_end();
            let start = before
                .char_indices()
                .rev()
                .take_while(|(_, c)| c.is_alphanumeric() || *c == '_' || *c == '.')
                .last()
                .map(|(i, _)| i)
                .unwrap_or(before.len());
            if is_path(&before[start..]) {
                return before[start..].to_owned();
            }
        }
    }
    e.detail()
        .and_then(|d| d.split('`').nth(1))
        .map(str::to_owned)
        .unwrap_or_else(|| "a placeholder".to_owned())
}

/// Puts a stand-in value at `path` so the retried render gets past it; false if it cannot.
fn fill(context: &mut serde_json::Value, path: &str) -> bool {
    let mut node = context;
    let segments: Vec<&str> = path.split('.').collect();
    for (i, segment) in segments.iter().enumerate() {
        let Some(object) = node.as_object_mut() else {
            return false;
        };
        if i == segments.len() - 1 {
            object.insert(
                (*segment).to_owned(),
                serde_json::Value::String(String::new()),
            );
            return true;
        }
        node = object
            .entry((*segment).to_owned())
            .or_insert_with(|| serde_json::json!({}));
    }
    false
}
