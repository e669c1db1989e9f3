//! The Prometheus endpoint scraped over plain HTTP and checked by `promtool check metrics`.

use super::prom::{self, Scrape};
use crate::harness::binaries::{Agent, DEADLINE, Hub, enrol, run};
use flotilla_wire::msg::FleetEvent;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends one request and returns the status line and body.
async fn http(addr: SocketAddr, request: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut raw))
        .await
        .expect("answer within the deadline")
        .expect("read");
    let text = String::from_utf8(raw).expect("utf8");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head.lines().next().unwrap_or("").to_string();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("content length")
        .parse()
        .expect("number");
    if !request.starts_with("HEAD") {
        assert_eq!(length, body.len(), "Content-Length matches the body");
    }
    (status, body.to_string())
}

async fn scrape(addr: SocketAddr) -> Scrape {
    let (status, body) = http(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    prom::parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_valid_prometheus_text() {
    let mut hub = Hub::init().await;
    hub.run_args = vec!["--metrics-listen".into(), "127.0.0.1:0".into()];
    // Samples every second (the minimum), set through the environment.
    hub.env = vec![("FLOTILLA_HUB_METRICS_INTERVAL_MS".into(), "1000".into())];
    hub.start().await;
    let addr = hub.metrics_addr();

    let token = hub.token("agent", 3).await;
    let dir = hub.dir.path().to_path_buf();
    let online = enrol(&dir, "online-1", &token).await;
    enrol(&dir, "offline-1", &token).await;
    enrol(&dir, "revoked-1", &token).await;
    let (c, _) = hub.admin(&["revoke", "revoked-1"]).await;
    assert_eq!(c, 0);
    // An operator subscribed to fleet events sees each sample after the hub has counted it.
    let login = flotilla::client::Login::load(&hub.data.join("admin"), None).expect("admin login");
    let operator = flotilla::client::Client::connect(&login)
        .await
        .expect("operator");
    let mut events = operator.subscribe().await.expect("subscribe");
    let mut agent = Agent::start(&online);
    agent.connected().await;
    tokio::time::timeout(DEADLINE, async {
        loop {
            match events.next().await.expect("fleet events") {
                Some(FleetEvent::Metrics { .. }) => break,
                Some(_) => {}
                None => panic!("the hub ended the subscription"),
            }
        }
    })
    .await
    .expect("a metrics sample within the deadline");

    let s = scrape(addr).await;
    assert!(s.one("flotilla_hub_metrics_samples_total", &[]) >= Some(1.0));
    let agents = |state| s.one("flotilla_hub_agents", &[("state", state)]);
    assert_eq!(agents("online"), Some(1.0));
    assert_eq!(agents("offline"), Some(1.0));
    assert_eq!(agents("revoked"), Some(1.0));
    assert_eq!(
        s.one("flotilla_hub_connections", &[("role", "agent")]),
        Some(1.0)
    );
    assert_eq!(
        s.one("flotilla_hub_enrolments_total", &[("result", "ok")]),
        Some(3.0)
    );
    assert!(
        s.one("flotilla_hub_handshakes_total", &[("result", "ok")]) >= Some(4.0),
        "three enrolments and one connection"
    );
    assert_eq!(
        s.one("flotilla_hub_handshakes_total", &[("result", "failed")]),
        Some(0.0)
    );
    let traffic = |name, kind, dir| {
        s.one(name, &[("kind", kind), ("direction", dir)])
            .unwrap_or_else(|| panic!("{name} {kind} {dir} missing"))
    };
    assert!(traffic("flotilla_hub_messages_total", "metrics", "in") >= 1.0);
    assert!(traffic("flotilla_hub_bytes_total", "metrics", "in") > 0.0);
    assert!(
        traffic("flotilla_hub_messages_total", "control", "out") >= 4.0,
        "three certificates and a welcome"
    );
    assert!(traffic("flotilla_hub_bytes_total", "control", "in") > 0.0);
    for kind in ["exec", "transfer"] {
        assert_eq!(traffic("flotilla_hub_messages_total", kind, "in"), 0.0);
    }
    assert_eq!(s.one("flotilla_hub_exec_jobs_total", &[]), Some(0.0));
    assert_eq!(
        s.one("flotilla_hub_transfers_total", &[("event", "started")]),
        Some(0.0)
    );
    let calls = s
        .one("flotilla_hub_store_call_duration_seconds_count", &[])
        .expect("store histogram");
    assert!(calls >= 3.0, "enrolments went through the store: {calls}");
    assert!(s.one("flotilla_hub_store_call_duration_seconds_sum", &[]) > Some(0.0));
    assert_eq!(
        s.type_of("flotilla_hub_store_call_duration_seconds"),
        Some("histogram")
    );
    assert_eq!(
        s.one(
            "flotilla_hub_store_call_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        Some(calls)
    );
    assert_eq!(s.type_of("flotilla_hub_handshakes_total"), Some("counter"));
    assert_eq!(
        s.type_of("flotilla_hub_session_tickets_accepted_total"),
        Some("counter")
    );
    assert!(
        s.one("flotilla_hub_session_tickets_accepted_total", &[])
            .is_some(),
        "resumed handshakes are exported"
    );
    assert!(s.one("process_open_fds", &[]) > Some(0.0));
    assert!(
        s.one(
            "flotilla_hub_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ) == Some(1.0)
    );

    let (status, _) = http(addr, "GET /other HTTP/1.1\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _) = http(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    let (status, body) = http(addr, "HEAD /metrics HTTP/1.1\r\n\r\n").await;
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", ""));
    let (status, _) = http(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(
        status, "HTTP/1.1 200 OK",
        "still serving after the odd requests"
    );

    agent.stop().await;
    assert!(hub.stop().await.success());
    let out = run(crate::harness::binaries::hubd(&hub.data).args(["agents", "--json"])).await;
    assert_eq!(crate::harness::binaries::code(&out), 0);
}
