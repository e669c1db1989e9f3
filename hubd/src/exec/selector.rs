//! Agent selectors: `all`, or comma-separated terms whose `+`-joined parts must all match.
//!
//! A part is `all`, a name glob (`web-*`, `db-?`), an exact name, an agent id (`a-…`), or a label
//! `key=value`. Terms are ORed, parts within a term ANDed: `web-*,env=prod+role=db` is every web
//! agent plus the production databases. Every term must match at least one agent, so a typo fails
//! before anything runs instead of silently shrinking the fleet.

use crate::store::Selectable;
use flotilla_wire::IdentityId;

/// Label-only terms a selector may look up one scan each; beyond this, listing every live agent
/// once is cheaper (a scan for a pair costs about a third of a listing at 20,000 agents).
pub const MAX_LABEL_SCANS: usize = 2;

/// A parsed selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    terms: Vec<Term>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Term {
    text: String,
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    All,
    Name(String),
    Glob(String),
    Id(IdentityId),
    Label { key: String, value: String },
}

/// Why a selector is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// Nothing was given.
    #[error("empty selector: use `all`, a name, a glob such as web-*, an agent id, or key=value")]
    Empty,
    /// `a,,b`, a trailing comma, or `a++b`.
    #[error("selector {selector:?} has an empty term (doubled or trailing ',' or '+')")]
    EmptyPart {
        /// The selector as given.
        selector: String,
    },
    /// A character outside the name and label alphabet.
    #[error(
        "selector part {part:?} has the invalid character {ch:?}: names use letters, digits, '-', '_', '.', and globs '*' and '?'"
    )]
    BadChar {
        /// The part.
        part: String,
        /// The character.
        ch: char,
    },
    /// `=prod` or `env=`.
    #[error("label part {part:?} needs a key and a value: write key=value")]
    BadLabel {
        /// The part.
        part: String,
    },
    /// An exact name no agent has.
    #[error("no agent named {name:?} (see `flotilla agents`)")]
    UnknownName {
        /// The name.
        name: String,
    },
    /// An id no (non-revoked) agent has.
    #[error("no agent with id {id} (unknown or revoked)")]
    UnknownId {
        /// The id.
        id: String,
    },
    /// A glob or label term that matches nothing.
    #[error("selector term {term:?} matches no agent")]
    NoMatch {
        /// The term.
        term: String,
    },
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn parse_part(text: &str) -> Result<Part, SelectorError> {
    if text == "all" {
        return Ok(Part::All);
    }
    if let Some((key, value)) = text.split_once('=') {
        if key.is_empty() || value.is_empty() {
            return Err(SelectorError::BadLabel { part: text.into() });
        }
        let bad = key.chars().find(|c| !is_name_char(*c)).or_else(|| {
            value
                .chars()
                .find(|c| !is_name_char(*c) && !matches!(c, '/' | ':'))
        });
        if let Some(ch) = bad {
            return Err(SelectorError::BadChar {
                part: text.into(),
                ch,
            });
        }
        return Ok(Part::Label {
            key: key.into(),
            value: value.into(),
        });
    }
    if let Some(ch) = text
        .chars()
        .find(|c| !is_name_char(*c) && !matches!(c, '*' | '?'))
    {
        return Err(SelectorError::BadChar {
            part: text.into(),
            ch,
        });
    }
    if let Some(id) = IdentityId::parse(text) {
        return Ok(Part::Id(id));
    }
    if text.contains(['*', '?']) {
        Ok(Part::Glob(text.into()))
    } else {
        Ok(Part::Name(text.into()))
    }
}

impl Selector {
    /// Parses the grammar described in the module docs. Whitespace around terms is ignored.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(SelectorError::Empty);
        }
        let mut terms = Vec::new();
        for term in text.split(',') {
            let term = term.trim();
            let mut parts = Vec::new();
            for part in term.split('+') {
                let part = part.trim();
                if part.is_empty() {
                    return Err(SelectorError::EmptyPart {
                        selector: text.into(),
                    });
                }
                parts.push(parse_part(part)?);
            }
            terms.push(Term {
                text: term.into(),
                parts,
            });
        }
        Ok(Self { terms })
    }

    /// For each term, a lookup that finds every agent the term can match without reading the whole
    /// fleet into the hub: its exact name or id, or the literal start of a name glob (`web-*` reads
    /// the names from `web-` up), all by index; failing those, one of its labels (a scan that
    /// SQLite filters itself). What the lookups return is a superset of each term's matches,
    /// which [`Selector::resolve`] then filters exactly, so the outcome is the same as over the
    /// whole fleet. `None` when a term has no such part (`all`, a glob that starts with a
    /// wildcard), or when more than [`MAX_LABEL_SCANS`] terms would each scan for a label: then
    /// every live agent is listed once.
    pub fn lookups(&self) -> Option<Vec<Lookup<'_>>> {
        let lookups: Vec<Lookup<'_>> =
            self.terms.iter().map(Term::lookup).collect::<Option<_>>()?;
        let scans = lookups
            .iter()
            .filter(|l| matches!(l, Lookup::Label { .. }))
            .count();
        (scans <= MAX_LABEL_SCANS).then_some(lookups)
    }

    /// The agents among `candidates` (non-revoked agents) that match, sorted by name then id, each
    /// once. Fails naming the first term that matches nothing.
    pub fn resolve<'a>(
        &self,
        candidates: &'a [Selectable],
    ) -> Result<Vec<&'a Selectable>, SelectorError> {
        let mut chosen = vec![false; candidates.len()];
        for term in &self.terms {
            let mut any = false;
            for (i, row) in candidates.iter().enumerate() {
                if term.parts.iter().all(|p| part_matches(p, row)) {
                    chosen[i] = true;
                    any = true;
                }
            }
            if !any {
                return Err(match term.parts.as_slice() {
                    [Part::Name(name)] => SelectorError::UnknownName { name: name.clone() },
                    [Part::Id(id)] => SelectorError::UnknownId { id: id.to_string() },
                    _ => SelectorError::NoMatch {
                        term: term.text.clone(),
                    },
                });
            }
        }
        let mut out: Vec<&Selectable> = candidates
            .iter()
            .zip(chosen)
            .filter_map(|(row, c)| c.then_some(row))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }
}

/// How the agents one selector term can match are found without listing the fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Agents with this exact name.
    Name(&'a str),
    /// The agent with this id.
    Id(&'a IdentityId),
    /// Agents whose name starts with this (the literal start of a glob; never empty).
    Prefix(&'a str),
    /// Agents that carry this label.
    Label {
        /// Its key.
        key: &'a str,
        /// Its value.
        value: &'a str,
    },
}

impl Term {
    /// The narrowest lookup among this term's parts: every part must match, so any one of them
    /// bounds the term's agents.
    fn lookup(&self) -> Option<Lookup<'_>> {
        let exact = self.parts.iter().find_map(|p| match p {
            Part::Name(name) => Some(Lookup::Name(name)),
            Part::Id(id) => Some(Lookup::Id(id)),
            _ => None,
        });
        exact
            .or_else(|| {
                self.parts
                    .iter()
                    .filter_map(|p| match p {
                        Part::Glob(glob) => {
                            let literal = &glob[..glob.find(['*', '?']).unwrap_or(glob.len())];
                            (!literal.is_empty()).then_some(literal)
                        }
                        _ => None,
                    })
                    .max_by_key(|literal| literal.len())
                    .map(Lookup::Prefix)
            })
            .or_else(|| {
                self.parts.iter().find_map(|p| match p {
                    Part::Label { key, value } => Some(Lookup::Label { key, value }),
                    _ => None,
                })
            })
    }
}

fn part_matches(part: &Part, row: &Selectable) -> bool {
    part_matches_agent(part, &row.id, &row.name, &row.labels)
}

fn part_matches_agent(
    part: &Part,
    id: &IdentityId,
    name: &str,
    labels: &flotilla_wire::msg::Labels,
) -> bool {
    match part {
        Part::All => true,
        Part::Name(n) => name == n,
        Part::Glob(glob) => glob_matches(glob, name),
        Part::Id(i) => id == i,
        Part::Label { key, value } => labels.iter().any(|(k, v)| k == key && v == value),
    }
}

impl Selector {
    /// Whether one agent matches any term. Unlike [`Selector::resolve`], a term matching no
    /// agent is not an error: standing rules (alerts, silences) select from a fleet that changes.
    pub fn matches(
        &self,
        id: &IdentityId,
        name: &str,
        labels: &flotilla_wire::msg::Labels,
    ) -> bool {
        self.terms.iter().any(|t| {
            t.parts
                .iter()
                .all(|p| part_matches_agent(p, id, name, labels))
        })
    }
}

/// Shell-style wildcard match: `*` any run of characters, `?` exactly one. Backtracks only to the
/// last star, so the cost is at most pattern × text (names are 64 characters), never exponential.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_wire::Role;

    fn row(n: u8, name: &str, labels: &[(&str, &str)]) -> Selectable {
        Selectable {
            id: IdentityId::from_random(Role::Agent, [n; 8]),
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            last_seen_ms: 0,
        }
    }

    fn fleet() -> Vec<Selectable> {
        vec![
            row(1, "web-1", &[("env", "prod"), ("role", "web")]),
            row(2, "web-2", &[("env", "staging"), ("role", "web")]),
            row(3, "db-1", &[("env", "prod"), ("role", "db")]),
            row(4, "db-2", &[("env", "staging"), ("role", "db")]),
            row(5, "cache-10", &[("env", "prod")]),
        ]
    }

    fn names(sel: &str) -> Result<Vec<String>, SelectorError> {
        let f = fleet();
        Selector::parse(sel)?
            .resolve(&f)
            .map(|rows| rows.iter().map(|r| r.name.clone()).collect())
    }

    #[test]
    fn names_ids_glob_starts_and_labels_are_looked_up_instead_of_listing_the_fleet() {
        let id = IdentityId::from_random(Role::Agent, [7; 8]);
        let sel = Selector::parse(&format!(
            "web-1, {id},db-?,web-*+env=prod,ca*-e?u*+app-1,*-1+role=db+env=prod"
        ))
        .expect("parse");
        assert_eq!(
            sel.lookups().expect("indexed"),
            [
                Lookup::Name("web-1"),
                Lookup::Id(&id),
                Lookup::Prefix("db-"),
                Lookup::Prefix("web-"),
                Lookup::Name("app-1"),
                Lookup::Label {
                    key: "role",
                    value: "db"
                },
            ]
        );
        let longest = Selector::parse("w*+web-e*").expect("parse");
        assert_eq!(longest.lookups(), Some(vec![Lookup::Prefix("web-e")]));
        let labelled = Selector::parse("env=prod+*").expect("parse");
        assert_eq!(
            labelled.lookups(),
            Some(vec![Lookup::Label {
                key: "env",
                value: "prod"
            }])
        );
        let two = Selector::parse("env=prod,role=db").expect("parse");
        assert_eq!(two.lookups().map(|l| l.len()), Some(2));
        for listing in [
            "all",
            "web-1,*-1",
            "?eb-1",
            "web-*,all",
            "*+all",
            "env=prod,role=db,site=a",
        ] {
            assert!(
                Selector::parse(listing).expect("parse").lookups().is_none(),
                "{listing} must list the fleet"
            );
        }
    }

    #[test]
    fn terms_union_and_parts_intersect() {
        assert_eq!(
            names("all").expect("all"),
            ["cache-10", "db-1", "db-2", "web-1", "web-2"]
        );
        assert_eq!(names("web-*").expect("glob"), ["web-1", "web-2"]);
        assert_eq!(names("db-1").expect("exact"), ["db-1"]);
        assert_eq!(
            names("env=prod").expect("label"),
            ["cache-10", "db-1", "web-1"]
        );
        assert_eq!(names("env=prod+role=db").expect("and"), ["db-1"]);
        assert_eq!(
            names("web-*, env=prod+role=db").expect("or"),
            ["db-1", "web-1", "web-2"]
        );
        assert_eq!(
            names("web-*+env=staging").expect("glob and label"),
            ["web-2"]
        );
        assert_eq!(names("web-1,web-*").expect("dedup"), ["web-1", "web-2"]);
        assert_eq!(names("cache-??").expect("?"), ["cache-10"]);
        let id = fleet()[2].id.to_string();
        assert_eq!(names(&id).expect("id"), ["db-1"]);
    }

    #[test]
    fn typos_fail_before_anything_runs() {
        assert_eq!(
            names("web-1,wbe-2"),
            Err(SelectorError::UnknownName {
                name: "wbe-2".into()
            })
        );
        assert_eq!(
            names("wbe-*"),
            Err(SelectorError::NoMatch {
                term: "wbe-*".into()
            })
        );
        assert_eq!(
            names("env=prod+role=cache"),
            Err(SelectorError::NoMatch {
                term: "env=prod+role=cache".into()
            })
        );
        let ghost = IdentityId::from_random(Role::Agent, [9; 8]).to_string();
        assert_eq!(
            names(&ghost),
            Err(SelectorError::UnknownId { id: ghost.clone() })
        );
        assert_eq!(names(""), Err(SelectorError::Empty));
        assert_eq!(names("  "), Err(SelectorError::Empty));
        assert!(matches!(
            names("web-1,,db-1"),
            Err(SelectorError::EmptyPart { .. })
        ));
        assert!(matches!(
            names("web-1,"),
            Err(SelectorError::EmptyPart { .. })
        ));
        assert!(matches!(
            names("env=prod+"),
            Err(SelectorError::EmptyPart { .. })
        ));
        assert_eq!(
            names("=prod"),
            Err(SelectorError::BadLabel {
                part: "=prod".into()
            })
        );
        assert_eq!(
            names("env="),
            Err(SelectorError::BadLabel {
                part: "env=".into()
            })
        );
        assert_eq!(
            names("web;rm"),
            Err(SelectorError::BadChar {
                part: "web;rm".into(),
                ch: ';'
            })
        );
        assert_eq!(
            SelectorError::UnknownName {
                name: "wbe-2".into()
            }
            .to_string(),
            "no agent named \"wbe-2\" (see `flotilla agents`)"
        );
    }

    #[test]
    fn globs_match_like_a_shell() {
        assert!(glob_matches("*", ""));
        assert!(glob_matches("web-*", "web-"));
        assert!(glob_matches("web-*", "web-12"));
        assert!(!glob_matches("web-*", "db-1"));
        assert!(glob_matches("*-1", "web-1"));
        assert!(glob_matches("w*b*1", "web-1"));
        assert!(!glob_matches("w*b*2", "web-1"));
        assert!(glob_matches("db-?", "db-1"));
        assert!(!glob_matches("db-?", "db-10"));
        assert!(glob_matches("**a**", "xxaxx"));
        // A pathological pattern finishes quickly.
        let long = "a".repeat(5000);
        assert!(!glob_matches(&format!("{}b", "*a".repeat(50)), &long));
    }
}
