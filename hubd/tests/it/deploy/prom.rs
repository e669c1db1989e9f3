//! A scrape checked by Prometheus's own tool, `promtool check metrics` (Debian package
//! `prometheus`; `.ci/run` installs it): the parser a real Prometheus uses, plus its lint of names,
//! types and units. promtool lets a series repeat, so that is checked here too. Values are then
//! looked up line by line; the checks are what vouch for the format.

use std::io::Write;
use std::process::{Command, Stdio};

/// A scrape promtool accepted.
#[derive(Debug)]
pub(crate) struct Scrape {
    text: String,
}

/// Runs `promtool check metrics` on `text`; its complaints (or the reason it could not run) on error.
pub(crate) fn promtool_check(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run promtool ({e}): install Debian's prometheus package (apt-get install prometheus)"
            )
        })?;
    let mut stdin = child.stdin.take().ok_or("promtool stdin")?;
    stdin
        .write_all(text.as_bytes())
        .map_err(|e| format!("write to promtool: {e}"))?;
    drop(stdin);
    let out = child
        .wait_with_output()
        .map_err(|e| format!("promtool: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "promtool check metrics failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Checks `text` with promtool, and that no series repeats, and keeps it for lookups.
pub(crate) fn parse(text: &str) -> Result<Scrape, String> {
    promtool_check(text)?;
    let mut seen = std::collections::HashSet::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let series = line.rsplit_once(' ').map_or(line, |(s, _)| s);
        if !seen.insert(series) {
            return Err(format!("series {series} twice"));
        }
    }
    Ok(Scrape { text: text.into() })
}

impl Scrape {
    /// The value of the series `name` with exactly `labels` (in any order). Label values holding
    /// `,` are not supported: none of ours do.
    pub(crate) fn one(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        want.sort();
        self.text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (series_name, mut got) = match series.split_once('{') {
                    Some((n, rest)) => {
                        let body = rest.strip_suffix('}')?;
                        (n, body.split(',').map(str::to_owned).collect::<Vec<_>>())
                    }
                    None => (series, Vec::new()),
                };
                got.sort();
                (series_name == name && got == want).then(|| value.parse().ok())?
            })
    }

    /// The `# TYPE` of family `name`.
    pub(crate) fn type_of(&self, name: &str) -> Option<&str> {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("# TYPE {name} ")))
    }
}

#[test]
fn promtool_rejects_what_scrapers_reject() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{k=\"v\",j=\"w\"} 3\n";
    let s = parse(good).expect("good");
    assert_eq!(s.one("a_total", &[("j", "w"), ("k", "v")]), Some(3.0));
    assert_eq!(s.one("a_total", &[("k", "v")]), None);
    assert_eq!(s.type_of("a_total"), Some("counter"));
    for bad in [
        "# TYPE a_total counter\na_total{k=v} 1\n",
        "# TYPE a gauge\na 1\n",
        "# HELP a A.\n# TYPE a gauge\na 1\na 2\n",
        "# HELP a A.\n# TYPE a gauge\na{k=\"1\",k=\"2\"} 1\n",
        "# HELP a A.\n# TYPE a gauge\n# TYPE a gauge\na 1\n",
        "# HELP a A.\n# TYPE a gauge\na x\n",
        "# TYPE 1a gauge\n",
        "# HELP a A.\n# TYPE a counter\na 1\n",
    ] {
        assert!(parse(bad).is_err(), "accepted {bad:?}");
    }
}
