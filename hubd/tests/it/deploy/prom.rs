//! A small parser of the Prometheus text exposition format (0.0.4), strict enough to catch what a
//! real scraper would reject: bad names, labels or values, samples without a `# TYPE`, duplicate
//! series, and histograms whose buckets do not add up.

use std::collections::{BTreeMap, HashMap};

/// One sample.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Sample {
    /// Metric name (with `_bucket`, `_sum`, `_count` for histograms).
    pub(crate) name: String,
    /// Labels.
    pub(crate) labels: BTreeMap<String, String>,
    /// Value.
    pub(crate) value: f64,
}

/// A parsed scrape.
#[derive(Debug, Default)]
pub(crate) struct Scrape {
    /// Family name to type.
    pub(crate) types: HashMap<String, String>,
    /// Every sample in order.
    pub(crate) samples: Vec<Sample>,
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|e| format!("value {s:?}: {e}")),
    }
}

/// Parses `{a="x",b="y"}` (the braces included) and returns the labels and the rest of the line.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("labels must start with {")?;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !valid_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value must be quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &rest[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// The family a sample belongs to (histogram suffixes removed when the family is a histogram).
fn family<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).map(String::as_str) == Some("histogram")
        {
            return base;
        }
    }
    name
}

/// Parses and checks a whole scrape.
pub(crate) fn parse(text: &str) -> Result<Scrape, String> {
    let mut scrape = Scrape::default();
    let mut seen = std::collections::HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut words = rest.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("HELP"), Some(name), Some(_)) if valid_name(name) => {}
                (Some("TYPE"), Some(name), Some(kind)) if valid_name(name) => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at(format!("unknown type {kind}")));
                    }
                    if scrape.types.insert(name.into(), kind.into()).is_some() {
                        return Err(at("second TYPE for a family".into()));
                    }
                }
                _ => return Err(at("bad comment".into())),
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !valid_name(name) {
            return Err(at(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let value_text = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?;
        let value = parse_value(value_text.split(' ').next().unwrap_or("")).map_err(at)?;
        let fam = family(name, &scrape.types);
        let kind = scrape
            .types
            .get(fam)
            .ok_or_else(|| at(format!("sample of {fam} before its TYPE")))?;
        if kind == "counter" && !name.ends_with("_total") {
            return Err(at("counter without _total".into()));
        }
        if !seen.insert(format!("{name}{labels:?}")) {
            return Err(at("duplicate series".into()));
        }
        scrape.samples.push(Sample {
            name: name.into(),
            labels,
            value,
        });
    }
    scrape.check_histograms()?;
    Ok(scrape)
}

impl Scrape {
    fn check_histograms(&self) -> Result<(), String> {
        for (fam, kind) in &self.types {
            if kind != "histogram" {
                continue;
            }
            let mut buckets: Vec<(f64, f64)> = self
                .samples
                .iter()
                .filter(|s| s.name == format!("{fam}_bucket"))
                .map(|s| {
                    let le = s
                        .labels
                        .get("le")
                        .ok_or(format!("{fam} bucket without le"))?;
                    Ok((parse_value(le)?, s.value))
                })
                .collect::<Result<_, String>>()?;
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                return Err(format!("{fam}: buckets are not cumulative"));
            }
            let inf = buckets
                .last()
                .filter(|b| b.0.is_infinite())
                .ok_or(format!("{fam}: no +Inf bucket"))?;
            let count = self
                .one(&format!("{fam}_count"), &[])
                .ok_or(format!("{fam}: no _count"))?;
            if inf.1 != count {
                return Err(format!("{fam}: +Inf bucket {} != count {count}", inf.1));
            }
            self.one(&format!("{fam}_sum"), &[])
                .ok_or(format!("{fam}: no _sum"))?;
        }
        Ok(())
    }

    /// The value of the series `name` with exactly `labels`.
    pub(crate) fn one(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }
}

#[test]
fn the_parser_rejects_what_scrapers_reject() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{k=\"v\\\"x\"} 3\n";
    let s = parse(good).expect("good");
    assert_eq!(s.one("a_total", &[("k", "v\"x")]), Some(3.0));
    for bad in [
        "a_total 1\n",
        "# TYPE a_total counter\na_total{k=v} 1\n",
        "# TYPE a gauge\na 1\na 2\n",
        "# TYPE 1a gauge\n",
        "# TYPE a counter\na 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 0\n",
        "# TYPE a gauge\na{__x=\"1\"} 1\n",
    ] {
        assert!(parse(bad).is_err(), "accepted {bad:?}");
    }
}
