//! Template rendering benchmark: a typical template (subject + about 2 KiB of HTML with ten
//! placeholders and a loop), compiled once and rendered many times.
//!
//! ```text
//! cargo run --release -p herald-templates --example render_bench -- 200000
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use herald_templates::{Engine, Sources};
use serde_json::json;

const HTML: &str = r#"<!doctype html>
<html><body style="font-family: Helvetica, Arial, sans-serif; color: #222; line-height: 1.5">
<table width="100%" cellpadding="0" cellspacing="0"><tr><td align="center">
<table width="600" cellpadding="24" cellspacing="0" style="border: 1px solid #e5e5e5; border-radius: 6px">
<tr><td>
<h1 style="font-size: 20px; margin: 0 0 16px">Hello {{ person.first_name }},</h1>
<p>Thank you for your interest in working with us. I am following up on our conversation about
<strong>{{ deal.title }}</strong> for {{ company.name }}. As discussed, the proposal covers the
items below, and the total comes to {{ deal.value }} {{ deal.currency }}.</p>
<table width="100%" cellpadding="6" cellspacing="0" style="border-collapse: collapse; margin: 16px 0">
<tr style="background: #f6f6f6"><th align="left">Item</th><th align="right">Quantity</th></tr>
{% for item in items %}<tr><td>{{ item.name }}</td><td align="right">{{ item.quantity }}</td></tr>
{% endfor %}</table>
<p>If anything in the proposal needs to change, reply to this email or call me at
{{ sender.phone | default('the number in my signature') }}. I am happy to walk your team through
the details, answer questions about the onboarding plan, or adjust the scope so it fits
{{ company.name }} better. We can also set up a short call with our implementation lead.</p>
<p>The offer is valid until {{ valid_until }}. After that date prices and availability may change,
so let me know as soon as you can whether you would like to go ahead.</p>
<p style="margin-top: 24px">Kind regards,<br>{{ sender.name }}<br>
<a href="mailto:{{ sender.email }}" style="color: #0b66c3">{{ sender.email }}</a></p>
<p style="font-size: 12px; color: #888; margin-top: 32px">You receive this email because you are
in touch with {{ sender.name }}. This message was written for {{ person.full_name }} and may
contain confidential information; if you received it by mistake, please let us know and delete it.</p>
</td></tr></table>
</td></tr></table>
</body></html>"#;

fn main() {
    let renders: u32 = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("a number of renders"))
        .unwrap_or(100_000);
    let subject = "{{ deal.title }}: proposal for {{ company.name }}";
    let sources = Sources {
        subject,
        html: Some(HTML),
        text: None,
    };
    let context = json!({
        "person": {"first_name": "Ann", "full_name": "Ann Lee"},
        "company": {"name": "Acme & Sons"},
        "deal": {"title": "Annual renewal", "value": "12500.00", "currency": "EUR"},
        "sender": {"name": "Bob Smith", "email": "bob@herald.example"},
        "valid_until": "December 31",
        "items": [
            {"name": "Platform licence", "quantity": 25},
            {"name": "Onboarding", "quantity": 1},
            {"name": "Priority support", "quantity": 12}
        ]
    });
    let engine = Engine::default();
    let started = Instant::now();
    let compiled = engine.compile(&sources).unwrap();
    let compile_us = started.elapsed().as_secs_f64() * 1e6;
    let first = compiled.render(&context).unwrap();
    let started = Instant::now();
    for _ in 0..renders {
        std::hint::black_box(compiled.render(std::hint::black_box(&context)).unwrap());
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "benchmark": "template_render",
            "template_html_bytes": HTML.len(),
            "rendered_html_bytes": first.html.as_ref().map(String::len),
            "compile_us": (compile_us * 10.0).round() / 10.0,
            "renders": renders,
            "seconds": (seconds * 1000.0).round() / 1000.0,
            "renders_per_sec": (renders as f64 / seconds).round(),
            "us_per_render": (seconds / renders as f64 * 1e6 * 100.0).round() / 100.0,
        })
    );
}
