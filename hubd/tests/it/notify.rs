//! Alert delivery through a real `hubd` process: test alerts queued with `hubd notify test` go
//! through the SQLite outbox to receivers this test runs for real — an HTTP server on loopback
//! that checks each message's HMAC signature, and Python's aiosmtpd speaking SMTP with STARTTLS.
//! Retries, grouping, quiet hours, kill -9 with messages in the outbox, giving up, and receiver
//! configuration refused at SIGHUP while the hub keeps serving.

use crate::harness::binaries::{Hub, code, hubd, json, run, signal, stderr, wait_for_change};
use crate::harness::{DEADLINE, WORK_DEADLINE, within};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

/// The shared secret of the webhook receivers here.
const SECRET: &str = "s3cret-hmac-key";
/// Largest request head the test receiver reads.
const MAX_HEAD: usize = 16 * 1024;
/// Largest body it reads.
const MAX_BODY: usize = 1024 * 1024;
/// Pause between two looks at the outbox through the CLI while waiting for a state (nothing to
/// subscribe to from outside the process): short next to the deadlines, long enough not to spin.
const POLL: Duration = Duration::from_millis(200);

/// One request the test receiver got.
#[derive(Clone, Debug)]
struct Request {
    /// `X-Flotilla-Delivery`.
    delivery: String,
    /// The HMAC in `X-Flotilla-Signature` matched the body under [`SECRET`].
    signed: bool,
    /// The body as JSON.
    body: Value,
    /// What the receiver answered.
    status: u16,
    /// Request path.
    path: String,
    /// Headers, names lowercased.
    headers: Vec<(String, String)>,
    /// The body as text.
    text: String,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A webhook receiver on 127.0.0.1 that answers 503 to its first `fail_first` requests (or
/// while `fail_first` is `usize::MAX`), then 200; it checks signatures itself.
struct Receiver {
    url: String,
    fail_first: Arc<AtomicUsize>,
    seen: watch::Receiver<Vec<Request>>,
    _task: tokio::task::JoinHandle<()>,
}

/// Checks `sha256=<hex>` as a receiver would, with ring's constant-time verify.
fn signature_ok(header: &str, body: &[u8]) -> bool {
    let Some(hex_tag) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Some(tag) = (0..hex_tag.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex_tag.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    ring::hmac::verify(&key, body, &tag).is_ok()
}

impl Receiver {
    async fn start(fail_first: usize) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let fail = Arc::new(AtomicUsize::new(fail_first));
        let (tx, seen) = watch::channel(Vec::new());
        let tx = Arc::new(tx);
        let task = {
            let fail = fail.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((conn, _)) = listener.accept().await else {
                        return;
                    };
                    let (fail, tx) = (fail.clone(), tx.clone());
                    tokio::spawn(async move {
                        let _ = serve(conn, &fail, &tx).await;
                    });
                }
            })
        };
        Self {
            url,
            fail_first: fail,
            seen,
            _task: task,
        }
    }

    /// Waits until the requests so far satisfy `ok`; returns them.
    async fn until(&self, what: &str, ok: impl Fn(&[Request]) -> bool) -> Vec<Request> {
        let mut seen = self.seen.clone();
        within(WORK_DEADLINE, what, seen.wait_for(|v| ok(v)))
            .await
            .expect("receiver running")
            .clone()
    }

    fn requests(&self) -> Vec<Request> {
        self.seen.borrow().clone()
    }
}

/// One HTTP/1.1 exchange, read with limits, answered with `Connection: close`.
async fn serve(
    conn: tokio::net::TcpStream,
    fail: &AtomicUsize,
    tx: &watch::Sender<Vec<Request>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 || head.len() > MAX_HEAD {
            return Ok(());
        }
        if line == "\r\n" {
            break;
        }
        head.push(line);
    }
    let header = |name: &str| {
        head.iter().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let len: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        .min(MAX_BODY);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).await?;
    let failing = fail
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
            0 => None,
            usize::MAX => Some(usize::MAX),
            n => Some(n - 1),
        })
        .is_ok();
    let status = if failing { 503 } else { 200 };
    let request = Request {
        path: head
            .first()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_default()
            .to_string(),
        headers: head
            .iter()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
            })
            .collect(),
        text: String::from_utf8_lossy(&body).into_owned(),
        delivery: header("x-flotilla-delivery").unwrap_or_default(),
        signed: header("x-flotilla-signature").is_some_and(|s| signature_ok(&s, &body)),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        status,
    };
    let mut conn = reader.into_inner();
    let reason = if failing { "Service Unavailable" } else { "OK" };
    conn.write_all(
        format!("HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    conn.shutdown().await?;
    // Recorded once answered: a test that saw it may act on the hub's reaction.
    tx.send_modify(|v| v.push(request));
    Ok(())
}

/// Rewrites the hub's configuration with `notify` settings and `receivers` (TOML tables).
fn configure(hub: &Hub, notify: &str, receivers: &str) {
    let file = hub.data.join("hub.toml");
    let mut table: toml::Table =
        toml::from_str(&std::fs::read_to_string(&file).expect("read hub.toml")).expect("toml");
    table.remove("notify");
    table.remove("receiver");
    let extra: toml::Table =
        toml::from_str(&format!("[notify]\n{notify}\n{receivers}")).expect("test config");
    table.extend(extra);
    std::fs::write(&file, toml::to_string(&table).expect("ser")).expect("write hub.toml");
}

fn webhook(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[[receiver]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n{extra}\n"
    )
}

/// Quick retries for tests; the first message at once, then grouping over `group_interval_ms`.
fn fast(group_interval_ms: u32) -> String {
    format!(
        "group_wait_ms = 0\ngroup_interval_ms = {group_interval_ms}\nretry_initial_ms = 200\nretry_max_s = 1\n"
    )
}

/// `hubd notify test` with `args`; asserts success.
async fn notify_test(hub: &Hub, args: &[&str]) -> Value {
    let mut all = vec!["notify", "test"];
    all.extend_from_slice(args);
    let (c, v) = hub.admin(&all).await;
    assert_eq!(c, 0, "hubd notify test {args:?}: {v}");
    v
}

/// `hubd notify list --json`.
async fn outbox(hub: &Hub) -> Vec<Value> {
    let (c, v) = hub.admin(&["notify", "list"]).await;
    assert_eq!(c, 0, "hubd notify list: {v}");
    v.as_array().expect("list").clone()
}

/// Polls the outbox until `ok` holds.
async fn outbox_until(hub: &Hub, what: &str, ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    within(WORK_DEADLINE, what, async {
        loop {
            let rows = outbox(hub).await;
            if ok(&rows) {
                return rows;
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await
}

fn rules_of(r: &Request) -> Vec<String> {
    r.body["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x["rule"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Each delivery id answered 200 at most once; returns how many were.
fn delivered_once_each(requests: &[Request]) -> usize {
    let mut ok: Vec<&str> = requests
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.delivery.as_str())
        .collect();
    let n = ok.len();
    ok.sort_unstable();
    ok.dedup();
    assert_eq!(ok.len(), n, "a message was delivered twice: {requests:#?}");
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_receiver_is_retried_then_gets_one_signed_message() {
    let receiver = Receiver::start(2).await;
    let mut hub = Hub::init().await;
    configure(&hub, &fast(200), &webhook("ops", &receiver.url, ""));
    hub.start().await;

    let queued = notify_test(
        &hub,
        &[
            "--receiver",
            "ops",
            "--severity",
            "critical",
            "--rule",
            "disk",
            "--agent",
            "web-1",
            "--subject",
            "/",
        ],
    )
    .await;
    assert_eq!(queued["receivers"], serde_json::json!(["ops"]));
    let got = receiver
        .until("the message after two refusals", |v| {
            v.iter().any(|r| r.status == 200)
        })
        .await;
    assert_eq!(got.len(), 3, "two 503s then the 200: {got:#?}");
    assert!(
        got.iter().all(|r| r.signed),
        "every try is signed: {got:#?}"
    );
    let id = &got[0].delivery;
    assert!(id.starts_with("ntf-"), "{id}");
    assert!(got.iter().all(|r| &r.delivery == id), "one id across tries");
    let body = &got[2].body;
    assert_eq!(body["version"], 1);
    assert_eq!(&body["id"], id.as_str());
    assert_eq!(body["receiver"], "ops");
    let alert = &body["alerts"][0];
    assert_eq!(
        (
            &alert["rule"],
            &alert["severity"],
            &alert["state"],
            &alert["agent"],
            &alert["subject"]
        ),
        (
            &"disk".into(),
            &"critical".into(),
            &"firing".into(),
            &"web-1".into(),
            &"/".into()
        )
    );
    let rows = outbox_until(&hub, "the message marked sent", |rows| {
        rows.iter()
            .any(|r| r["id"] == id.as_str() && r["state"] == "sent")
    })
    .await;
    let row = rows.iter().find(|r| r["id"] == id.as_str()).expect("row");
    assert_eq!(row["attempts"], 3);

    // A later message arrives on its own; the first is still delivered exactly once.
    notify_test(&hub, &["--receiver", "ops", "--rule", "later"]).await;
    let all = receiver
        .until("the later message", |v| {
            v.iter()
                .any(|r| r.status == 200 && rules_of(r) == ["later"])
        })
        .await;
    assert_eq!(delivered_once_each(&all), 2);
    assert!(all.iter().all(|r| r.signed));
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_alert_goes_at_once_and_the_next_within_the_interval_share_one_message() {
    let receiver = Receiver::start(0).await;
    let mut hub = Hub::init().await;
    // Five seconds is the default and leaves room for two CLI calls on a loaded machine.
    configure(&hub, &fast(5000), &webhook("ops", &receiver.url, ""));
    hub.start().await;
    notify_test(&hub, &["--rule", "cpu"]).await;
    // The first goes alone, before anything else is queued: nothing waits to group it.
    let got = receiver.until("the first message", |v| !v.is_empty()).await;
    assert_eq!(rules_of(&got[0]), ["cpu"], "{got:#?}");
    for rule in ["mem", "disk"] {
        notify_test(&hub, &["--rule", rule]).await;
    }
    let got = receiver
        .until("the grouped message", |v| v.len() >= 2)
        .await;
    assert_eq!(rules_of(&got[1]), ["mem", "disk"], "{got:#?}");
    let rows = outbox(&hub).await;
    let due: Vec<u64> = rows
        .iter()
        .rev()
        .map(|r| r["due_ms"].as_u64().expect("due_ms"))
        .collect();
    assert!(
        due[1] >= due[0] + 5000,
        "the second is due a group interval after the first: {rows:#?}"
    );
    // The barrier: a message queued after it comes alone, so nothing else was pending.
    notify_test(&hub, &["--rule", "after"]).await;
    let got = receiver.until("the next message", |v| v.len() >= 3).await;
    assert_eq!(got.len(), 3, "{got:#?}");
    assert_eq!(rules_of(&got[2]), ["after"]);
    hub.stop().await;
}

/// `"HH:MM-HH:MM"` UTC around now: from an hour before to an hour after.
fn quiet_now() -> String {
    let now_min = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        / 60)
        % 1440;
    let hm = |m: u64| format!("{:02}:{:02}", m / 60, m % 60);
    format!(
        "{}-{}",
        hm((now_min + 1440 - 60) % 1440),
        hm((now_min + 60) % 1440)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn quiet_hours_let_only_critical_through_and_release_the_rest_after() {
    let receiver = Receiver::start(0).await;
    let mut hub = Hub::init().await;
    let quiet = format!("quiet_hours = [\"{}\"]", quiet_now());
    configure(&hub, &fast(300), &webhook("ops", &receiver.url, &quiet));
    hub.start().await;

    notify_test(&hub, &["--severity", "warning", "--rule", "load"]).await;
    notify_test(&hub, &["--severity", "critical", "--rule", "down"]).await;
    let got = receiver
        .until("the critical alert", |v| !v.is_empty())
        .await;
    assert_eq!(
        rules_of(&got[0]),
        ["down"],
        "only the critical one: {got:#?}"
    );
    let rows = outbox(&hub).await;
    let held: Vec<&Value> = rows.iter().filter(|r| r["held"] == true).collect();
    assert_eq!(held.len(), 1, "{rows:#?}");
    assert_eq!(held[0]["state"], "queued");
    assert_eq!(held[0]["attempts"], 0);
    assert_eq!(held[0]["transitions"][0]["rule"], "load");
    assert!(
        held[0]["next_try_ms"].as_u64().expect("next")
            > held[0]["created_ms"].as_u64().expect("created") + 30 * 60_000,
        "held until the quiet hours end: {held:#?}"
    );

    // The quiet hours are lifted (SIGHUP): what they held goes out now.
    configure(&hub, &fast(300), &webhook("ops", &receiver.url, ""));
    signal(hub.pid(), "-HUP").await;
    hub.reloaded().await;
    let got = receiver.until("the held warning", |v| v.len() >= 2).await;
    assert_eq!(rules_of(&got[1]), ["load"], "{got:#?}");
    assert_eq!(delivered_once_each(&got), 2);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_with_messages_in_the_outbox_loses_and_repeats_nothing() {
    let receiver = Receiver::start(usize::MAX).await;
    let mut hub = Hub::init().await;
    configure(&hub, &fast(1500), &webhook("ops", &receiver.url, ""));
    hub.start().await;
    for rule in ["r1", "r2"] {
        notify_test(&hub, &["--rule", rule]).await;
    }
    // The first message refused once: it is backing off in the outbox.
    receiver.until("a refused try", |v| !v.is_empty()).await;
    // The second is written (the CLI returns once it is) but not yet tried.
    for rule in ["r3", "r4"] {
        notify_test(&hub, &["--rule", rule]).await;
    }
    let mut child = hub.child.take().expect("running");
    child.kill().await.expect("kill -9");
    child.wait().await.expect("reaped");

    receiver.fail_first.store(0, Ordering::SeqCst);
    hub.start().await;
    let got = receiver
        .until("all four alerts after the restart", |v| {
            let mut seen: Vec<String> = v
                .iter()
                .filter(|r| r.status == 200)
                .flat_map(rules_of)
                .collect();
            seen.sort();
            seen.len() >= 4
        })
        .await;
    // The barrier: a message queued after the restart arrives after the resends.
    notify_test(&hub, &["--rule", "after"]).await;
    let got_all = receiver
        .until("the barrier message", |v| {
            v.iter()
                .any(|r| r.status == 200 && rules_of(r) == ["after"])
        })
        .await;
    assert!(got_all.len() >= got.len());
    let mut delivered: Vec<String> = got_all
        .iter()
        .filter(|r| r.status == 200)
        .flat_map(rules_of)
        .collect();
    delivered.sort();
    assert_eq!(
        delivered,
        ["after", "r1", "r2", "r3", "r4"],
        "none lost, none twice"
    );
    delivered_once_each(&got_all);
    assert!(got_all.iter().all(|r| r.signed));
    let rows = outbox_until(&hub, "every message marked sent", |rows| {
        rows.iter().all(|r| r["state"] == "sent")
    })
    .await;
    assert!(!rows.is_empty());
    assert!(
        hub.log()
            .contains("alert outbox: sending what was queued before the start"),
        "{}",
        hub.log()
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undeliverable_message_is_given_up_and_recorded() {
    let receiver = Receiver::start(usize::MAX).await;
    let mut hub = Hub::init().await;
    configure(
        &hub,
        "group_wait_ms = 0\nretry_initial_ms = 200\nretry_max_s = 1\ngive_up_after_s = 2\n",
        &webhook("ops", &receiver.url, ""),
    );
    hub.start().await;
    notify_test(&hub, &["--rule", "doomed"]).await;
    let rows = outbox_until(&hub, "the message given up", |rows| {
        rows.iter().any(|r| r["state"] == "gave_up")
    })
    .await;
    assert_eq!(rows[0]["last_error"], "receiver answered HTTP 503");
    assert!(
        rows[0]["attempts"].as_u64().expect("attempts") >= 2,
        "{rows:#?}"
    );
    assert!(receiver.requests().iter().all(|r| r.status == 503));
    assert!(hub.log().contains("alert notification given up"));
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_receivers_are_refused_at_check_and_sighup_without_showing_secrets() {
    let receiver = Receiver::start(0).await;
    let mut hub = Hub::init().await;
    configure(&hub, &fast(100), &webhook("ops", &receiver.url, ""));
    // `config check` shows the receiver with its secrets masked.
    let out = run(hubd(&hub.data).args(["config", "check", "--json"])).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let checked = json(&out);
    assert_eq!(checked["config"]["receiver"][0]["name"], "ops");
    assert_eq!(checked["config"]["receiver"][0]["secret"], "***");
    assert_eq!(checked["config"]["receiver"][0]["url"], "***");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(SECRET));
    hub.start().await;

    // A token-bearing URL in the clear to another host: refused, named, not printed.
    let bad = webhook("leaky", "http://hooks.example.com/T0K3N", "");
    configure(
        &hub,
        &fast(100),
        &format!("{}{bad}", webhook("ops", &receiver.url, "")),
    );
    let out = run(hubd(&hub.data).args(["config", "check"])).await;
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(
        err.contains("receiver \"leaky\": url uses plain http"),
        "{err}"
    );
    assert!(!err.contains("T0K3N"), "{err}");
    signal(hub.pid(), "-HUP").await;
    hub.reloaded().await;
    let log = hub.log();
    assert!(log.contains("configuration reload failed"), "{log}");
    assert!(!log.contains("T0K3N") && !log.contains(SECRET), "{log}");
    // The hub still serves with the receivers it had.
    let (c, v) = hub.admin(&["notify", "test", "--receiver", "leaky"]).await;
    assert_eq!(c, 1);
    assert_eq!(
        v["error"]["message"],
        "receiver \"leaky\" is not configured (configured: ops)"
    );
    notify_test(&hub, &["--receiver", "ops"]).await;
    receiver
        .until("the message to the kept receiver", |v| !v.is_empty())
        .await;
    hub.stop().await;
}

/// An SMTP server with STARTTLS required and AUTH checked, on aiosmtpd: prints its port, then
/// writes each message it accepts to OUT/NNNN.eml with OUT/NNNN.json (envelope and TLS version).
const SMTP_SERVER: &str = r#"
import asyncio, json, os, ssl, sys
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
cert, key, out, user, password = sys.argv[1:6]
class Handler:
    async def handle_DATA(self, server, session, envelope):
        n = len([f for f in os.listdir(out) if f.endswith(".json")])
        base = os.path.join(out, "%04d" % n)
        with open(base + ".eml", "wb") as f:
            f.write(envelope.content)
        cipher = server.transport.get_extra_info("cipher")
        meta = {"from": envelope.mail_from, "to": envelope.rcpt_tos, "tls": cipher[1] if cipher else None}
        with open(base + ".tmp", "w") as f:
            json.dump(meta, f)
        os.rename(base + ".tmp", base + ".json")
        return "250 OK"
def auth(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login == user.encode() and data.password == password.encode()
    return AuthResult(success=ok)
async def main():
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(Handler(), tls_context=ctx, require_starttls=True, authenticator=auth, auth_required=True),
        "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"#;

/// A server certificate for 127.0.0.1 under a fresh CA (minted by `certs`), as PEM files for
/// Python: returns the CA file a receiver trusts.
fn smtp_certificates(dir: &Path) -> std::path::PathBuf {
    let ca = flotilla_certs::Ca::create(dir).expect("CA");
    let leaf = ca
        .issue_hub_cert(&["127.0.0.1".to_string()])
        .expect("server cert");
    flotilla_certs::write_cert_pem(&dir.join("smtp.pem"), &leaf.cert_der).expect("cert");
    std::fs::write(dir.join("smtp.key.der"), &leaf.key_der).expect("key");
    let status = std::process::Command::new("openssl")
        .args(["pkey", "-inform", "DER", "-in"])
        .arg(dir.join("smtp.key.der"))
        .arg("-out")
        .arg(dir.join("smtp.key"))
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl pkey");
    dir.join("ca.pem")
}

#[tokio::test(flavor = "multi_thread")]
async fn email_goes_out_over_starttls_with_authentication() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca_file = smtp_certificates(tmp.path());
    let mail = tmp.path().join("mail");
    std::fs::create_dir(&mail).expect("mail dir");
    let mut smtp = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(SMTP_SERVER)
        .arg(tmp.path().join("smtp.pem"))
        .arg(tmp.path().join("smtp.key"))
        .arg(&mail)
        .args(["alerts", "smtp-pass-word"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 with aiosmtpd (pip install aiosmtpd)");
    let mut port = String::new();
    within(
        DEADLINE,
        "the SMTP server's port",
        BufReader::new(smtp.stdout.take().expect("stdout")).read_line(&mut port),
    )
    .await
    .expect("read port");
    let port: u16 = port.trim().parse().expect("port");

    let mut hub = Hub::init().await;
    let receiver = format!(
        "[[receiver]]\nname = \"mail\"\nkind = \"email\"\nsmtp = \"127.0.0.1:{port}\"\n\
         from = \"Flotilla <flotilla@example.com>\"\nto = [\"oncall@example.com\"]\n\
         username = \"alerts\"\nsecret = \"smtp-pass-word\"\nca_file = \"{}\"\n",
        ca_file.display()
    );
    configure(&hub, &fast(100), &receiver);
    hub.start().await;
    notify_test(
        &hub,
        &[
            "--severity",
            "critical",
            "--rule",
            "disk",
            "--agent",
            "db-1",
        ],
    )
    .await;
    wait_for_change(&mail, "the mail", || mail.join("0000.json").exists()).await;
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(mail.join("0000.json")).expect("meta"))
            .expect("json");
    assert_eq!(meta["from"], "flotilla@example.com");
    assert_eq!(meta["to"], serde_json::json!(["oncall@example.com"]));
    assert!(
        meta["tls"].as_str().is_some_and(|v| v.starts_with("TLSv1")),
        "sent over STARTTLS: {meta}"
    );
    let eml = std::fs::read_to_string(mail.join("0000.eml")).expect("eml");
    assert!(
        eml.contains("Subject: Flotilla: disk firing on db-1"),
        "{eml}"
    );
    let rows = outbox_until(&hub, "the mail marked sent", |rows| {
        rows.iter().any(|r| r["state"] == "sent")
    })
    .await;
    let id = rows[0]["id"].as_str().expect("id");
    assert!(
        eml.contains(&format!("Message-ID: <{id}@flotilla>")),
        "{eml}"
    );
    assert!(eml.contains("[FIRING] critical disk on db-1"), "{eml}");
    hub.stop().await;
    let _ = smtp.kill().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rule_firing_on_a_real_agent_reaches_the_webhook() {
    let receiver = Receiver::start(0).await;
    let mut hub = Hub::init().await;
    // Memory in use is above 0 % on every host: the rule fires with the agent's first sample.
    let rule = "[[alert]]\nname = \"mem-used\"\nkind = \"mem\"\nabove = 0.0\nseverity = \"critical\"\nreceivers = [\"ops\"]\n";
    configure(
        &hub,
        &fast(200),
        &format!("{}{rule}", webhook("ops", &receiver.url, "")),
    );
    hub.start().await;
    let token = hub.token("agent", 1).await;
    let paths = crate::harness::binaries::enrol(hub.dir.path(), "web-1", &token).await;
    let mut agent = crate::harness::binaries::Agent::start(&paths);
    agent.connected().await;
    let got = receiver
        .until("the rule's notification", |v| {
            v.iter()
                .any(|r| r.status == 200 && rules_of(r) == ["mem-used"])
        })
        .await;
    let alert = &got[0].body["alerts"][0];
    assert_eq!(alert["agent"], "web-1");
    assert_eq!(alert["state"], "firing");
    assert_eq!(alert["severity"], "critical");
    assert!(alert["value"].as_f64().is_some_and(|v| v > 0.0), "{alert}");
    assert_eq!(alert["alert_id"].as_str().map(str::len), Some(16));
    assert!(got[0].signed);
    agent.stop().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hub_killed_at_a_rule_transition_notifies_it_exactly_once_after_the_restart() {
    let receiver = Receiver::start(0).await;
    let mut hub = Hub::init().await;
    // `mem-used` fires with the agent's first sample; `mem-later` two seconds after it, which
    // after the restart proves that the agent's fresh samples were evaluated.
    let rules = "[[alert]]\nname = \"mem-used\"\nkind = \"mem\"\nabove = 0.0\nreceivers = [\"ops\"]\n\
                 [[alert]]\nname = \"mem-later\"\nkind = \"mem\"\nabove = 0.0\nfor = \"2s\"\nreceivers = [\"ops\"]\n";
    configure(
        &hub,
        &fast(200),
        &format!("{}{rules}", webhook("ops", &receiver.url, "")),
    );
    hub.start().await;
    let token = hub.token("agent", 1).await;
    let paths = crate::harness::binaries::enrol(hub.dir.path(), "web-1", &token).await;
    let mut agent = crate::harness::binaries::Agent::start(&paths);
    agent.connected().await;
    // The first sample follows the welcome at once: the kill lands within moments of the
    // `mem-used` transition, before or after its commit. Either way it is told once: the alert
    // state and its notification are stored together or not at all.
    let mut child = hub.child.take().expect("running");
    child.kill().await.expect("kill -9");
    child.wait().await.expect("reaped");
    // The agent finds the hub gone at its next missed heartbeat, then reconnects.
    hub.start().await;
    let got = receiver
        .until("mem-later after the restart", |v| {
            v.iter()
                .any(|r| r.status == 200 && rules_of(r).iter().any(|x| x == "mem-later"))
        })
        .await;
    let mut told: Vec<&str> = got
        .iter()
        .filter(|r| r.status == 200)
        .filter(|r| {
            r.body["alerts"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x["rule"] == "mem-used" && x["state"] == "firing")
            })
        })
        .map(|r| r.delivery.as_str())
        .collect();
    told.dedup();
    assert_eq!(told.len(), 1, "mem-used firing told once: {got:#?}");
    agent.stop().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slack_and_ntfy_receivers_get_their_own_formats() {
    let receiver = Receiver::start(0).await;
    let mut hub = Hub::init().await;
    let base = receiver.url.trim_end_matches("/hook").to_string();
    let receivers = format!(
        "[[receiver]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"{base}/slack\"\n\
         [[receiver]]\nname = \"phone\"\nkind = \"ntfy\"\nurl = \"{base}/alerts\"\nsecret = \"tk_ntfy\"\n"
    );
    configure(&hub, &fast(100), &receivers);
    hub.start().await;
    let queued = notify_test(
        &hub,
        &[
            "--severity",
            "critical",
            "--rule",
            "disk",
            "--agent",
            "db-1",
            "--subject",
            "/var",
        ],
    )
    .await;
    assert_eq!(queued["receivers"], serde_json::json!(["chat", "phone"]));
    let got = receiver.until("both messages", |v| v.len() >= 2).await;
    let slack = got.iter().find(|r| r.path == "/slack").expect("slack");
    let text = slack.body["text"].as_str().expect("slack text");
    assert!(
        text.starts_with("*Flotilla: disk firing on db-1*\n"),
        "{text}"
    );
    assert!(
        text.contains("[FIRING] critical disk on db-1 (/var)"),
        "{text}"
    );
    assert_eq!(
        slack.header("x-flotilla-signature"),
        None,
        "no secret, no signature"
    );
    let ntfy = got.iter().find(|r| r.path == "/alerts").expect("ntfy");
    assert_eq!(ntfy.header("title"), Some("Flotilla: disk firing on db-1"));
    assert_eq!(ntfy.header("priority"), Some("5"));
    assert_eq!(ntfy.header("tags"), Some("rotating_light,flotilla"));
    assert_eq!(ntfy.header("authorization"), Some("Bearer tk_ntfy"));
    assert!(
        ntfy.text
            .starts_with("[FIRING] critical disk on db-1 (/var)"),
        "{}",
        ntfy.text
    );
    assert!(
        ntfy.text
            .ends_with(&format!("notification {}", ntfy.delivery)),
        "{}",
        ntfy.text
    );
    assert_ne!(slack.delivery, ntfy.delivery, "one message per receiver");
    hub.stop().await;
}
