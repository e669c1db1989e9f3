//! docs/protocol.md names every variant of every enum that crosses the wire: a variant added
//! without a word in the protocol document fails here.
//!
//! The enums are found in wire's own sources (an enum deriving `Deserialize` is on the wire), so
//! a new message type is covered without touching this test.

use std::collections::BTreeMap;
use std::path::Path;

/// Wire enums and their variants, read from the source text of `wire/src`.
fn wire_enums() -> BTreeMap<String, Vec<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut enums = BTreeMap::new();
    let mut files: Vec<_> = std::fs::read_dir(&src)
        .expect("wire/src")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("source");
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(name) = line
                .strip_prefix("pub enum ")
                .and_then(|r| r.split_whitespace().next())
            else {
                continue;
            };
            // The attributes right above the enum: is it serialised?
            let derives_wire = lines[..i]
                .iter()
                .rev()
                .take_while(|l| l.starts_with("#[") || l.starts_with("///"))
                .any(|l| l.starts_with("#[derive") && l.contains("Deserialize"));
            if !derives_wire {
                continue;
            }
            let variants = lines[i + 1..]
                .iter()
                .take_while(|l| !l.starts_with('}'))
                .filter_map(|l| {
                    let rest = l.strip_prefix("    ")?;
                    let first = rest.chars().next()?;
                    if !first.is_ascii_uppercase() {
                        return None;
                    }
                    let ident: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    Some(ident)
                })
                .collect();
            enums.insert(name.to_string(), variants);
        }
    }
    enums
}

fn mentions(doc: &str, word: &str) -> bool {
    doc.match_indices(word).any(|(at, _)| {
        let before = doc[..at].chars().next_back();
        let after = doc[at + word.len()..].chars().next();
        let boundary = |c: Option<char>| !c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        boundary(before) && boundary(after)
    })
}

#[test]
fn protocol_doc_names_every_wire_variant() {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md");
    let doc = std::fs::read_to_string(&doc_path).expect("docs/protocol.md");
    let enums = wire_enums();
    for must in [
        "ClientOpen",
        "StreamOpen",
        "HubControl",
        "MetricsFrame",
        "TransferFrame",
    ] {
        assert!(enums.contains_key(must), "{must} not found in wire/src");
    }
    let mut missing = Vec::new();
    for (name, variants) in &enums {
        assert!(!variants.is_empty(), "{name}: no variants read");
        if !mentions(&doc, name) {
            missing.push(name.clone());
        }
        missing.extend(
            variants
                .iter()
                .filter(|v| !mentions(&doc, v))
                .map(|v| format!("{name}::{v}")),
        );
    }
    assert!(
        missing.is_empty(),
        "docs/protocol.md does not mention {} wire names: {}",
        missing.len(),
        missing.join(", ")
    );
}
