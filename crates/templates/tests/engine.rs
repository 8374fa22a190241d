//! The renderer on its own: escaping, errors with positions, missing values, the sandbox.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use herald_templates::{Engine, Limits, Part, Sources, TemplateError};
use serde_json::json;

fn sources<'a>(subject: &'a str, html: Option<&'a str>, text: Option<&'a str>) -> Sources<'a> {
    Sources {
        subject,
        html,
        text,
    }
}

fn ann() -> serde_json::Value {
    json!({
        "person": {"first_name": "<script>alert(1)</script>", "last_name": "Lee", "emails": ["ann@acme.example"]},
        "company": {"name": "Acme & Sons"},
        "sender": {"name": "Bob Smith", "email": "bob@herald.example"},
    })
}

#[test]
fn values_are_escaped_in_html_only() {
    let rendered = Engine::default()
        .render(
            &sources(
                "Hi {{ person.first_name }} from {{ company.name }}",
                Some("<p>Hi {{ person.first_name }} from {{ company.name }}</p>"),
                Some("Hi {{ person.first_name }} from {{ company.name }}"),
            ),
            &ann(),
        )
        .unwrap();
    assert_eq!(
        rendered.html.as_deref(),
        Some("<p>Hi &lt;script&gt;alert(1)&lt;&#x2f;script&gt; from Acme &amp; Sons</p>")
    );
    assert_eq!(
        rendered.text.as_deref(),
        Some("Hi <script>alert(1)</script> from Acme & Sons")
    );
    assert_eq!(
        rendered.subject,
        "Hi <script>alert(1)</script> from Acme & Sons"
    );
}

#[test]
fn subject_is_one_line() {
    let rendered = Engine::default()
        .render(
            &sources("Hello\n  {{ sender.name }}\r\n!", None, Some("x")),
            &ann(),
        )
        .unwrap();
    assert_eq!(rendered.subject, "Hello Bob Smith !");
}

#[test]
fn every_missing_placeholder_is_listed_and_defaults_fill_gaps() {
    let err = Engine::default()
        .render(
            &sources(
                "{{ deal.title }} for {{ person.first_name }}",
                Some("{{ person.nickname }} {{ person.title | default('friend') }} {% if lead %}{{ lead.title }}{% endif %}"),
                Some("{{ discount }}% off"),
            ),
            &ann(),
        )
        .unwrap_err();
    match err {
        TemplateError::MissingValues { names } => {
            assert_eq!(names, ["deal.title", "discount", "person.nickname"])
        }
        other => panic!("expected missing values, got {other:?}"),
    }
}

#[test]
fn syntax_errors_carry_part_line_and_column() {
    let err = Engine::default()
        .check(&sources(
            "Hi",
            Some("<p>\n  Hello {{ person.first_name </p>"),
            None,
        ))
        .unwrap_err();
    match err {
        TemplateError::Syntax {
            part,
            line,
            column,
            message,
        } => {
            assert_eq!(part, Part::Html);
            assert_eq!(line, 2);
            assert!(column > 1, "column {column}");
            assert!(!message.is_empty());
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    let err = Engine::default()
        .check(&sources("{% if %}", None, Some("x")))
        .unwrap_err();
    assert!(
        matches!(
            err,
            TemplateError::Syntax {
                part: Part::Subject,
                line: 1,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn unfillable_placeholders_are_warnings() {
    let warnings = Engine::default()
        .check(&sources(
            "{{ person.first_name }} {{ person.shoe_size }}",
            None,
            Some("{% for e in person.emails %}{{ e }}{% endfor %} {{ discount }} {{ range(3) | length }}"),
        ))
        .unwrap();
    let names: Vec<_> = warnings.iter().map(|w| (w.part, w.name.as_str())).collect();
    assert_eq!(
        names,
        [
            (Part::Subject, "person.shoe_size"),
            (Part::Text, "discount")
        ]
    );
    assert!(
        warnings[0].message.contains("first_name"),
        "lists the fields that exist"
    );
}

#[test]
fn a_loop_that_does_not_end_runs_out_of_fuel() {
    let engine = Engine::new(Limits {
        fuel: 5_000,
        ..Limits::default()
    });
    let err = engine
        .render(&sources("x", None, Some("{% for i in range(100000) %}{% for j in range(100000) %}.{% endfor %}{% endfor %}")), &ann())
        .unwrap_err();
    assert!(
        matches!(&err, TemplateError::LimitExceeded(m) if m.contains("ran too long")),
        "{err:?}"
    );
}

#[test]
fn output_past_the_limit_fails() {
    let engine = Engine::new(Limits {
        max_output_bytes: 1_000,
        ..Limits::default()
    });
    let err = engine
        .render(
            &sources(
                "x",
                Some("{% for i in range(500) %}{{ person.last_name }}{% endfor %}"),
                None,
            ),
            &ann(),
        )
        .unwrap_err();
    assert!(
        matches!(&err, TemplateError::LimitExceeded(m) if m.contains("larger than 1000 bytes")),
        "{err:?}"
    );
    let err = engine
        .render(
            &sources("x", None, Some("{{ range(2000) | join(',') }}")),
            &ann(),
        )
        .unwrap_err();
    assert!(
        matches!(&err, TemplateError::Render { message, .. } if message.contains("output limit")),
        "{err:?}"
    );
}

#[test]
fn string_building_operators_and_file_access_are_refused() {
    for (source, operator) in [
        ("{{ person.first_name ~ person.last_name }}", "~"),
        ("{{ 'ab' * 1000 }}", "*"),
        ("{{ 'a' + 'b' }}", "+"),
    ] {
        let err = Engine::default()
            .check(&sources("x", None, Some(source)))
            .unwrap_err();
        let column = source.find(operator).unwrap() + 1;
        match err {
            TemplateError::Syntax {
                part: Part::Text,
                line: 1,
                column: c,
                message,
            } => {
                assert_eq!(c, column, "{source}");
                assert!(message.contains(&format!("`{operator}`")), "{message}");
            }
            other => panic!("{source}: {other:?}"),
        }
    }
    // No file access: including another file is refused before any lookup (and the environment
    // has no loader that could find one).
    let err = Engine::default()
        .render(
            &sources("x", None, Some("{% include '/etc/passwd' %}")),
            &ann(),
        )
        .unwrap_err();
    assert!(
        matches!(&err, TemplateError::Syntax { message, .. } if message.contains("include")),
        "{err:?}"
    );
}

#[test]
fn only_if_and_for_statements_are_allowed() {
    for (source, statement) in [
        ("{% set a = 'x' %}{{ a }}", "set"),
        ("{% macro m(x) %}{{ x }}{% endmacro %}", "macro"),
        ("{% include 'other' %}", "include"),
        ("{% with a = 1 %}{% endwith %}", "with"),
    ] {
        let err = Engine::default()
            .check(&sources("x", None, Some(source)))
            .unwrap_err();
        assert!(
            matches!(&err, TemplateError::Syntax { message, column: 4, .. } if message.contains(statement)),
            "{source}: {err:?}"
        );
    }
    Engine::default()
        .check(&sources(
            "x",
            None,
            Some(
                "{% if a %}1{% elif b %}2{% else %}3{% endif %}{% for x in y %}{{ x }}{% endfor %}",
            ),
        ))
        .unwrap();
}

#[test]
fn namespace_is_not_available() {
    let err = Engine::default()
        .render(
            &sources("x", None, Some("{{ namespace(s='a').s }}")),
            &ann(),
        )
        .unwrap_err();
    assert!(
        matches!(&err, TemplateError::Render { message, .. } if message.contains("namespace")),
        "{err:?}"
    );
}

#[test]
fn compiled_once_renders_many_times() {
    let compiled = Engine::default()
        .compile(&sources(
            "Hi {{ person.last_name }}",
            Some("<b>{{ sender.name }}</b>"),
            None,
        ))
        .unwrap();
    for _ in 0..3 {
        let rendered = compiled.render(&ann()).unwrap();
        assert_eq!(rendered.subject, "Hi Lee");
        assert_eq!(rendered.html.as_deref(), Some("<b>Bob Smith</b>"));
        assert_eq!(rendered.text, None);
    }
}

#[test]
fn filters_that_multiply_data_are_refused_or_capped() {
    let engine = Engine::default();
    for source in [
        "{{ [1] | batch(1000000000, 0) | length }}",
        "{{ [1] | slice(1000000000) | length }}",
    ] {
        let err = engine
            .render(&sources("x", None, Some(source)), &ann())
            .unwrap_err();
        assert!(
            matches!(&err, TemplateError::Render { message, .. } if message.contains("unknown")),
            "{source}: {err:?}"
        );
    }
    // Each escape turns every `&` into five bytes: chained, it would grow without end.
    let chained = "{{ range(60000) | join('&') | e | title | e | title | e | title | e }}";
    let err = engine
        .render(&sources("x", Some(chained), None), &ann())
        .unwrap_err();
    assert!(
        matches!(&err, TemplateError::Render { message, .. } if message.contains("output limit") || message.contains("too much text")),
        "{err:?}"
    );
}

#[test]
fn a_list_cannot_be_printed_whole() {
    let err = Engine::default()
        .render(&sources("x", Some("{{ person.emails }}"), None), &ann())
        .unwrap_err();
    assert!(
        matches!(&err, TemplateError::Render { message, .. } if message.contains("join")),
        "{err:?}"
    );
    let ok = Engine::default()
        .render(
            &sources("x", Some("{{ person.emails | join(', ') }}"), None),
            &ann(),
        )
        .unwrap();
    assert_eq!(ok.html.as_deref(), Some("ann@acme.example"));
}

#[test]
fn joining_a_missing_list_is_a_missing_value() {
    let err = Engine::default()
        .render(
            &sources("x", None, Some("Phones: {{ person.phones | join(', ') }}")),
            &ann(),
        )
        .unwrap_err();
    assert!(
        matches!(&err, TemplateError::MissingValues { names } if names == &["person.phones"]),
        "{err:?}"
    );
}
