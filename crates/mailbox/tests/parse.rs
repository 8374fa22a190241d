//! Golden files: every `fixtures/*.eml` parses to its `fixtures/*.json`. After an intended change,
//! regenerate with `HERALD_BLESS=1 cargo test -p herald-mailbox --test parse` and review the diff.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use herald_mailbox::parse::parse;

/// Small enough that the fixture's 10 KiB PNG is described but not kept.
const ATTACHMENT_LIMIT: usize = 4 * 1024;

#[test]
fn fixtures_parse_to_their_golden_json() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let bless = std::env::var("HERALD_BLESS").is_ok();
    let mut emls: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    emls.sort();
    assert!(emls.len() >= 8, "the fixtures are there");
    let mut mismatches = Vec::new();
    for eml in emls {
        let parsed = parse(&std::fs::read(&eml).unwrap(), ATTACHMENT_LIMIT);
        let actual = serde_json::to_string_pretty(&parsed).unwrap() + "\n";
        let golden = eml.with_extension("json");
        if bless {
            std::fs::write(&golden, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_else(|_| {
            panic!(
                "{} has no golden file; run with HERALD_BLESS=1",
                eml.display()
            )
        });
        if actual != expected {
            mismatches.push(format!("{}:\n{actual}", eml.display()));
        }
    }
    assert!(
        mismatches.is_empty(),
        "parsed output differs from the golden files:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn attachments_under_the_limit_keep_their_bytes() {
    let raw = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nested-multipart.eml"),
    )
    .unwrap();
    let parsed = parse(&raw, ATTACHMENT_LIMIT);
    let pdf = &parsed.attachments[0];
    assert!(pdf.stored);
    assert!(pdf.data.as_ref().unwrap().starts_with(b"%PDF-1.4"));
    let png = &parsed.attachments[1];
    assert!(!png.stored && png.data.is_none() && png.size == 10_240);
}
