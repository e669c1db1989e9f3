//! Alerts as an operator meets them from the command line: the real `hubd` with its Prometheus
//! endpoint, two real agents, and the real `flotilla` binary adding a rule, listing what fires,
//! acknowledging, silencing, testing a rule without adding it, and removing it again; `flotilla
//! watch --json` printing the state changes as they happen; a viewer who may look but not act; the
//! hub's gauges of firing alerts by rule and severity checked by `promtool check metrics`.
//!
//! A rule `cpu above -1` fires on every agent at its first sample, so nothing has to be forced.

use crate::deploy::prom::{self, Scrape};
use crate::harness::binaries::{Agent, Hub, enrol};
use crate::harness::flotilla_bin;
use crate::harness::{IDLE_DEADLINE, run_cmd};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The rule every test here adds: fires on every agent at its first sample.
const RULE: &str = "cpu-any";

/// `flotilla --no-mux --login-dir DIR args…`: exit code, stdout, stderr.
async fn flotilla(login: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["--no-mux", "--login-dir", login.to_str().expect("utf-8")];
    all.extend_from_slice(args);
    let out = run_cmd(&flotilla_bin(), &all).await;
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `flotilla … --json` that must exit `want`: its JSON.
async fn json(login: &Path, args: &[&str], want: i32) -> Value {
    let (code, out, err) = flotilla(login, args).await;
    assert_eq!(code, want, "flotilla {args:?}: {err}{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("flotilla {args:?}: no JSON ({e}): {out}"))
}

/// Polls `flotilla alerts --json` until `ok` accepts the list. Alerts change on the hub's own
/// evaluation of samples, which no CLI command waits on: polling, bounded by the deadline.
async fn alerts_until(login: &Path, what: &str, ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let list = json(login, &["alerts", "--all", "--json"], 0).await;
        let list = list.as_array().cloned().unwrap_or_default();
        if ok(&list) {
            return list;
        }
        assert!(
            started.elapsed() < IDLE_DEADLINE,
            "alerts never showed {what}: {list:#?}"
        );
        // Polled: this checks what `flotilla alerts` prints, a one-shot query with no push to wait
        // on; bounded by the deadline above.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn of_rule<'a>(list: &'a [Value], rule: &str, state: &str) -> Vec<&'a Value> {
    list.iter()
        .filter(|a| a["rule"] == rule && a["state"] == state)
        .collect()
}

async fn scrape(addr: SocketAddr) -> Scrape {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(IDLE_DEADLINE, stream.read_to_end(&mut raw))
        .await
        .expect("scrape answered")
        .expect("read");
    let text = String::from_utf8(raw).expect("utf-8");
    let (_, body) = text.split_once("\r\n\r\n").expect("head and body");
    prom::parse(body).unwrap_or_else(|e| panic!("{e}\n{body}"))
}

/// Scrapes until the firing gauge of `rule` reads `want`.
async fn gauge_until(addr: SocketAddr, rule: &str, severity: &str, want: f64) -> Scrape {
    let started = Instant::now();
    loop {
        let s = scrape(addr).await;
        let got = s.one(
            "flotilla_hub_alerts_firing",
            &[("rule", rule), ("severity", severity)],
        );
        if got == Some(want) {
            return s;
        }
        assert!(
            started.elapsed() < IDLE_DEADLINE,
            "gauge of {rule} never read {want} (last {got:?})"
        );
        // Polled: Prometheus metrics are pulled, so a scrape is the only way to read the gauge;
        // bounded by the deadline above.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A hub with its Prometheus endpoint and two agents sampling every second.
struct Scene {
    hub: Hub,
    agents: Vec<Agent>,
    admin: PathBuf,
}

impl Scene {
    async fn new() -> Self {
        let mut hub = Hub::init().await;
        hub.run_args = vec!["--metrics-listen".into(), "127.0.0.1:0".into()];
        hub.env = vec![("FLOTILLA_HUB_METRICS_INTERVAL_MS".into(), "1000".into())];
        hub.start().await;
        let token = hub.token("agent", 2).await;
        let dir = hub.dir.path().to_path_buf();
        let mut agents = Vec::new();
        for name in ["web-1", "db-1"] {
            let paths = enrol(&dir, name, &token).await;
            let mut agent = Agent::start(&paths);
            agent.connected().await;
            agents.push(agent);
        }
        let admin = hub.data.join("admin");
        Self { hub, agents, admin }
    }

    /// The admin identity's name and id, as the hub lists operators: who acts in these tests.
    async fn admin_names(&self) -> Vec<String> {
        let (code, list) = self.hub.admin(&["operators"]).await;
        assert_eq!(code, 0, "{list}");
        list.as_array()
            .expect("operators")
            .iter()
            .filter(|o| o["name"] == "admin")
            .flat_map(|o| [o["name"].as_str(), o["id"].as_str()])
            .flatten()
            .map(str::to_owned)
            .collect()
    }

    async fn stop(mut self) {
        for a in self.agents.drain(..) {
            a.stop().await;
        }
        self.hub.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_adds_a_rule_then_lists_acknowledges_silences_and_removes_it() {
    let scene = Scene::new().await;
    let admin = scene.admin.as_path();

    // Watch from the start: the state changes print as NDJSON lines.
    let mut watch = tokio::process::Command::new(flotilla_bin())
        .args([
            "--login-dir",
            admin.to_str().expect("utf-8"),
            "watch",
            "--json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("flotilla watch");
    let mut watch_lines = BufReader::new(watch.stdout.take().expect("stdout")).lines();
    // The snapshot comes first: the subscription is in place before the rule exists.
    let first = tokio::time::timeout(IDLE_DEADLINE, watch_lines.next_line())
        .await
        .expect("watch prints the snapshot")
        .expect("read")
        .expect("a line");
    assert!(first.contains("\"snapshot\""), "{first}");

    // Nothing fires yet; --firing-exit says so with 0.
    let (code, out, err) = flotilla(admin, &["alerts", "--firing-exit"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "no alerts firing or pending");

    // Add with flags mirroring the [[alert]] table.
    let added = json(
        admin,
        &[
            "alert",
            "add",
            "--name",
            RULE,
            "--kind",
            "cpu",
            "--above",
            "-1",
            "--severity",
            "critical",
            "--summary",
            "{agent} busy",
            "--json",
        ],
        0,
    )
    .await;
    assert_eq!(added["name"], RULE);
    assert_eq!(added["kind"], "cpu");
    assert_eq!(added["origin"], "live");
    // Who did it reads as the operator's name, not an identity id.
    assert_eq!(added["added_by"], "admin");
    let rules = json(admin, &["alert", "list", "--json"], 0).await;
    assert!(
        rules
            .as_array()
            .expect("array")
            .iter()
            .any(|r| r["name"] == RULE && r["severity"] == "critical" && r["above"] == -1.0),
        "{rules:#}"
    );
    let (code, text, err) = flotilla(admin, &["alert", "list"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(text.contains(RULE) && text.contains("cpu > -1.0"), "{text}");

    // Both agents' alerts fire at their next sample.
    let list = alerts_until(admin, "two firing", |l| {
        of_rule(l, RULE, "firing").len() == 2
    })
    .await;
    let firing = of_rule(&list, RULE, "firing");
    let mut names: Vec<&str> = firing
        .iter()
        .map(|a| a["agent_name"].as_str().expect("name"))
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["db-1", "web-1"]);
    assert!(firing.iter().all(|a| a["severity"] == "critical"));
    assert!(
        firing.iter().any(|a| a["summary"] == "web-1 busy"),
        "{firing:#?}"
    );
    let (code, table, _) = flotilla(admin, &["alerts", "--firing-exit"]).await;
    assert_eq!(code, 3, "firing: exit 3\n{table}");
    assert!(
        table.contains("firing") && table.contains("web-1"),
        "{table}"
    );

    // The watch saw each fire.
    let started = Instant::now();
    let mut fired = std::collections::HashSet::new();
    while fired.len() < 2 {
        assert!(
            started.elapsed() < IDLE_DEADLINE,
            "watch printed {fired:?} only"
        );
        let line = tokio::time::timeout(IDLE_DEADLINE, watch_lines.next_line())
            .await
            .expect("watch prints")
            .expect("read")
            .expect("a line");
        let ev: Value = serde_json::from_str(&line).expect("NDJSON");
        if ev["event"] == "alert" && ev["alert"]["rule"] == RULE && ev["alert"]["state"] == "firing"
        {
            assert_eq!(ev["alert"]["id"].as_str().map(str::len), Some(16), "{line}");
            fired.insert(ev["alert"]["agent_name"].as_str().unwrap_or("").to_owned());
        }
    }
    let _ = watch.kill().await;

    // Prometheus: two firing of the rule, critical.
    let addr = scene.hub.metrics_addr();
    let s = gauge_until(addr, RULE, "critical", 2.0).await;
    assert_eq!(s.type_of("flotilla_hub_alerts_firing"), Some("gauge"));

    // `show` prints the rule as its [[alert]] table, then its alerts.
    let (code, shown, err) = flotilla(admin, &["alert", "show", RULE]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        shown.contains("[[alert]]")
            && shown.contains("name = \"cpu-any\"")
            && shown.contains("above = -1.0"),
        "{shown}"
    );
    assert!(shown.contains("db-1") && shown.contains("web-1"), "{shown}");
    let (code, _, err) = flotilla(admin, &["alert", "show", "no-such-rule"]).await;
    assert_eq!(code, 1, "an unknown rule is an error");
    assert!(err.contains("no-such-rule"), "{err}");

    // A dry run of another rule: what it would say, adding nothing.
    let dry = json(
        admin,
        &["alert", "test", "--kind", "mem", "--above", "-1", "--json"],
        0,
    )
    .await;
    assert_eq!(dry.as_array().map(Vec::len), Some(2), "{dry:#}");
    let list = json(admin, &["alerts", "--all", "--json"], 0).await;
    assert!(
        list.as_array()
            .expect("array")
            .iter()
            .all(|a| a["rule"] == RULE),
        "a test adds no alert: {list:#}"
    );

    // Acknowledge web-1's.
    let web = firing
        .iter()
        .find(|a| a["agent_name"] == "web-1")
        .expect("web-1 firing");
    let id = web["id"].as_str().expect("hex id").to_owned();
    let acked = json(
        admin,
        &["alert", "ack", &id, "--comment", "looking", "--json"],
        0,
    )
    .await;
    assert_eq!(acked["id"], id.as_str());
    let me = scene.admin_names().await;
    assert_eq!(
        acked["acked_by"], me[0],
        "acked by the admin's name, not its identity id ({me:?})"
    );
    let by = acked["acked_by"].clone();
    alerts_until(admin, "the ack listed", |l| {
        l.iter()
            .any(|a| a["id"] == id.as_str() && a["acked_by"] == by)
    })
    .await;

    // Silence the rule on web-1: its alert is listed as silenced; db-1's still fires.
    let silence = json(
        admin,
        &[
            "silence",
            "add",
            "--rule",
            RULE,
            "--selector",
            "web-1",
            "--for",
            "2h",
            "--comment",
            "replacing fans",
            "--json",
        ],
        0,
    )
    .await;
    let silence_id = silence["id"].as_u64().expect("silence id");
    assert_eq!(silence["comment"], "replacing fans");
    assert_eq!(silence["created_by"], me[0], "{silence:#}");
    let list = alerts_until(admin, "web-1 silenced", |l| {
        l.iter()
            .any(|a| a["id"] == id.as_str() && a["silenced_by"] == silence_id)
    })
    .await;
    assert!(
        list.iter()
            .any(|a| a["agent_name"] == "db-1" && a["shown"] == "firing"),
        "{list:#?}"
    );
    let (code, _, _) = flotilla(admin, &["alerts", "--firing-exit"]).await;
    assert_eq!(code, 3, "db-1 still fires unsilenced");
    let listed = json(admin, &["silence", "list", "--json"], 0).await;
    assert!(
        listed
            .as_array()
            .expect("array")
            .iter()
            .any(|s| s["id"] == silence_id && s["rule"] == RULE),
        "{listed:#}"
    );
    let (code, out, err) = flotilla(admin, &["silence", "rm", &silence_id.to_string()]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("silence #{silence_id} ended")),
        "{out}"
    );
    let listed = json(admin, &["silence", "list", "--json"], 0).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed:#}");

    // Remove the rule: its alerts go, the gauge reads nothing for it.
    let (code, out, err) = flotilla(admin, &["alert", "rm", RULE]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "removed rule cpu-any");
    alerts_until(admin, "no alert of the removed rule firing", |l| {
        of_rule(l, RULE, "firing").is_empty()
    })
    .await;
    let (code, _, _) = flotilla(admin, &["alerts", "--firing-exit"]).await;
    assert_eq!(code, 0);
    let s = scrape(addr).await;
    assert_ne!(
        s.one(
            "flotilla_hub_alerts_firing",
            &[("rule", RULE), ("severity", "critical")]
        ),
        Some(2.0)
    );
    scene.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rules_are_refused_with_the_reason_and_viewers_only_look() {
    let scene = Scene::new().await;
    let admin = scene.admin.as_path();

    // Refused here, before dialling: exit 2 naming the problem in the hub's own words.
    for (args, says) in [
        (
            vec![
                "alert", "add", "--name", "x", "--kind", "cpux", "--above", "1",
            ],
            "unknown kind or series \"cpux\"",
        ),
        (
            vec!["alert", "add", "--name", "x", "--kind", "cpu"],
            "needs exactly one of above or below",
        ),
        (
            vec![
                "alert", "add", "--name", "x", "--kind", "cpu", "--above", "1", "--for", "5x",
            ],
            "unknown unit \"x\"",
        ),
        (
            vec!["alert", "add", "--kind", "cpu", "--above", "1"],
            "give the rule a name with --name",
        ),
        (vec!["alert", "ack", "nothex"], "is no alert id"),
        (
            vec!["silence", "add", "--for", "0s", "--comment", "x"],
            "must last more than 0",
        ),
    ] {
        let (code, _, err) = flotilla(admin, &args).await;
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // A rule file with a key no rule has.
    let file = scene.hub.dir.path().join("rule.toml");
    std::fs::write(
        &file,
        "name = \"x\"\nkind = \"cpu\"\nabove = 1.0\nfour = \"5m\"\n",
    )
    .expect("write");
    let (code, _, err) = flotilla(
        admin,
        &["alert", "add", "--file", file.to_str().expect("utf-8")],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("four"), "{err}");

    // Refused by the hub, whose selector grammar the client does not duplicate.
    let (code, _, err) = flotilla(
        admin,
        &[
            "alert",
            "add",
            "--name",
            "x",
            "--kind",
            "cpu",
            "--above",
            "1",
            "--selector",
            "web-1,",
        ],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("empty term"), "{err}");

    // A file of [[alert]] tables adds each; the same name again is refused.
    std::fs::write(
        &file,
        "[[alert]]\nname = \"a1\"\nkind = \"offline\"\nfor = \"2m\"\n\n[[alert]]\nname = \"a2\"\nkind = \"job_failed\"\nseverity = \"info\"\n",
    )
    .expect("write");
    let (code, out, err) = flotilla(
        admin,
        &["alert", "add", "--file", file.to_str().expect("utf-8")],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("added rule a1") && out.contains("added rule a2"),
        "{out}"
    );
    let (code, _, err) = flotilla(
        admin,
        &["alert", "add", "--file", file.to_str().expect("utf-8")],
    )
    .await;
    assert_ne!(code, 0, "a1 exists");
    assert!(err.contains("a1"), "{err}");

    // A viewer lists rules and alerts but may not add, acknowledge or silence.
    let token = scene.hub.token("viewer", 1).await;
    let viewer = scene.hub.dir.path().join("viewer");
    let (code, _, err) = flotilla(&viewer, &["login", "--token", &token, "--name", "eve"]).await;
    assert_eq!(code, 0, "{err}");
    let rules = json(&viewer, &["alert", "list", "--json"], 0).await;
    assert_eq!(rules.as_array().map(Vec::len), Some(2), "{rules:#}");
    json(&viewer, &["alerts", "--json"], 0).await;
    for args in [
        vec![
            "alert", "add", "--name", "v", "--kind", "cpu", "--above", "1",
        ],
        vec!["alert", "rm", "a1"],
        vec!["silence", "add", "--for", "1h", "--comment", "mine"],
    ] {
        let (code, _, err) = flotilla(&viewer, &args).await;
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.to_lowercase().contains("operator")
                || err.contains("forbidden")
                || err.contains("not allowed"),
            "{args:?}: {err}"
        );
    }
    let rules = json(admin, &["alert", "list", "--json"], 0).await;
    assert_eq!(
        rules.as_array().map(Vec::len),
        Some(2),
        "nothing changed: {rules:#}"
    );
    scene.stop().await;
}
