//! Every example configuration in docs/ parses as the daemon would read it.

use std::path::Path;

/// TOML blocks whose first line names the file (`# hub.toml`, `# agent.toml`).
fn examples(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("```toml\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").expect("closed block");
        let block = &body[..end];
        if let Some(first) = block.lines().next()
            && let Some(name) = first.strip_prefix("# ")
            && name.ends_with(".toml")
        {
            out.push((
                name.split_whitespace().next().unwrap_or("").to_string(),
                block.to_string(),
            ));
        }
        rest = &body[end + 3..];
    }
    out
}

#[test]
fn example_configs_in_docs_parse() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let mut found = 0;
    for entry in std::fs::read_dir(&docs).expect("docs") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        for (name, block) in examples(&text) {
            let at = format!("{} ({name})", path.display());
            match name.as_str() {
                "hub.toml" => {
                    let c: hubd::HubConfig =
                        toml::from_str(&block).unwrap_or_else(|e| panic!("{at}: {e}"));
                    c.validate().unwrap_or_else(|e| panic!("{at}: {e}"));
                }
                "agent.toml" => {
                    let c: agentd::AgentConfig =
                        toml::from_str(&block).unwrap_or_else(|e| panic!("{at}: {e}"));
                    c.validate().unwrap_or_else(|e| panic!("{at}: {e}"));
                }
                other => panic!("{at}: unknown example file {other}"),
            }
            found += 1;
        }
    }
    assert!(
        found >= 2,
        "expected hub.toml and agent.toml examples in docs/, found {found}"
    );
}
