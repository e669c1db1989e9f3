//! A hostile or broken network: a flood of handshakes that never complete must not lock real
//! clients out, and a hub that crashed and came back must tell its agents at once.

use crate::harness::{
    Client, DEADLINE, Daemon, Fleet as TestFleet, HubProc, agentd_bin, hubd_bin, mode_of, run_json,
    within,
};
use flotilla_wire::IdentityId;
use flotilla_wire::exec::{ExecCommand, ExecRequest};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::watch;

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// `hubd init` in `data`, then `hubd run`.
async fn init_and_run(data: &Path) -> HubProc {
    let init = run_json(
        &hubd_bin(),
        &[
            "--data-dir",
            path_str(data),
            "init",
            "--listen",
            "127.0.0.1:0",
            "--json",
        ],
    )
    .await;
    assert!(init["ca_fingerprint"].as_str().is_some(), "{init}");
    HubProc::run(data, None).await
}

/// `agentd enroll` with a fresh token of the hub in `data`, then `agentd run`.
async fn enrol_and_run_agent(data: &Path, dir: &Path, name: &str) -> (IdentityId, Daemon) {
    let token = run_json(
        &hubd_bin(),
        &[
            "--data-dir",
            path_str(data),
            "token",
            "create",
            "--role",
            "agent",
            "--json",
        ],
    )
    .await;
    let token = token["token"].as_str().expect("token text");
    let json = run_json(
        &agentd_bin(),
        &[
            "--data-dir",
            path_str(dir),
            "enroll",
            "--token",
            token,
            "--name",
            name,
            "--json",
        ],
    )
    .await;
    let id = IdentityId::parse(json["id"].as_str().expect("id")).expect("id shape");
    let agent = Daemon::spawn(
        &agentd_bin(),
        &[
            "--data-dir",
            path_str(dir),
            "run",
            "--metrics-interval-ms",
            "1000",
        ],
    );
    (id, agent)
}

/// After `kill -9` of the hub and a restart on the same port, the agent learns from the new hub's
/// stateless reset that its connection is gone and is back well before its 15 s idle timeout
/// would have told it (the deadline here is [`DEADLINE`], 10 s; the measured figure is in
/// docs/benchmarks.md).
#[tokio::test(flavor = "multi_thread")]
async fn killed_hub_resets_its_agents_and_they_are_back_before_the_idle_timeout() {
    flotilla_certs::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("hub");
    let mut hub = init_and_run(&data).await;
    let addr = hub.addr;
    let key = data.join("quic-reset.key");
    assert_eq!(
        mode_of(&key),
        0o600,
        "the reset key is private from creation"
    );
    let secret = std::fs::read(&key).expect("reset key");

    let (id, mut agent) = enrol_and_run_agent(&data, &dir.path().join("agent"), "agent-1").await;
    {
        let admin = Client::from_dir(&data.join("admin"))
            .await
            .expect("admin hello");
        let mut sub = admin.subscribe().await;
        sub.all_online(std::slice::from_ref(&id), DEADLINE).await;
    }

    hub.daemon.kill9().await;
    let hub = HubProc::run(&data, Some(addr)).await;
    let listening = Instant::now();
    assert_eq!(hub.addr, addr);
    assert_eq!(
        std::fs::read(&key).expect("reset key"),
        secret,
        "the key survives restarts"
    );

    let admin = Client::from_dir(&data.join("admin"))
        .await
        .expect("admin hello after restart");
    let mut sub = admin.subscribe().await;
    sub.all_online(std::slice::from_ref(&id), DEADLINE).await;
    eprintln!(
        "agent back {:?} after the new hub listened",
        listening.elapsed()
    );
    agent.wait_log("stateless reset", DEADLINE).await;
    assert!(agent.running(), "the agent outlived its hub");
}

/// The hub's reset key is made by `hubd init`, not only at first run; a hub whose key is missing
/// (initialised before resets existed) makes one when it starts.
#[tokio::test(flavor = "multi_thread")]
async fn reset_key_is_made_at_init_and_remade_when_missing() {
    let mut fleet = TestFleet::new().await;
    let key = fleet.paths.reset_key();
    assert_eq!(mode_of(&key), 0o600);
    assert_eq!(std::fs::read(&key).expect("key").len(), 32);
    fleet.stop().await;
    std::fs::remove_file(&key).expect("remove key");
    fleet.start().await;
    assert_eq!(mode_of(&key), 0o600);
    assert_eq!(std::fs::read(&key).expect("key").len(), 32);
}

/// Largest number of connection attempts the flood makes: bounds the test if the exec hangs.
const FLOOD_MAX: usize = 6000;
/// Pause between flood attempts: 200 a second, above the ~150 a second that locked real clients
/// out with the hub's former 10 s handshake hold.
const FLOOD_EVERY: Duration = Duration::from_millis(5);
/// Handshake slots of the flooded hub: few, so that the flood fills them at once.
const FLOODED_SLOTS: usize = 32;

/// A UDP relay in front of the hub that forwards the first datagram of each connection attempt
/// (told apart by its destination connection ID) and drops everything else, both ways: each
/// handshake through it stalls after the client's first flight, as a flood of abandoned (or
/// spoofed) Initials does. Publishes how many first flights it forwarded.
async fn first_flight_relay(
    hub: SocketAddr,
) -> (
    SocketAddr,
    watch::Receiver<usize>,
    tokio::task::JoinHandle<()>,
) {
    let front = UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("relay front socket");
    let upstream = UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("relay upstream socket");
    let addr = front.local_addr().expect("relay address");
    let (tx, rx) = watch::channel(0usize);
    let task = tokio::spawn(async move {
        let mut seen = HashSet::new();
        let mut buf = vec![0u8; 65_536];
        // Bounded by the flood's own bound: every attempt sends a handful of datagrams at most.
        for _ in 0..FLOOD_MAX * 16 {
            let Ok((n, _)) = front.recv_from(&mut buf).await else {
                return;
            };
            // Long header: flags, version (4), DCID length, DCID.
            if n < 6 || buf[0] & 0x80 == 0 {
                continue;
            }
            let len = usize::from(buf[5]);
            let Some(dcid) = buf.get(6..6 + len) else {
                continue;
            };
            if seen.insert(dcid.to_vec()) {
                let _ = upstream.send_to(&buf[..n], hub).await;
                tx.send_modify(|c| *c += 1);
            }
        }
    });
    (addr, rx, task)
}

/// A flood of handshakes that never complete, from one host at 200 a second, does not lock out a
/// real client: the hub answers with Retry once half its slots are taken, which the flood never
/// gets past, gives each stalled handshake back after the handshake timeout, and keeps the other
/// half of its slots for clients that proved their address. An operator's exec goes through
/// while the flood runs (with the hub's former admission it was refused: "hub busy").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_flood_does_not_lock_out_a_real_exec() {
    let mut fleet = TestFleet::new().await;
    fleet.stop().await;
    fleet.config.max_handshakes = FLOODED_SLOTS;
    fleet.start().await;

    let agent = fleet.enrol_agent("target", Vec::new()).await;
    let config = agentd::AgentConfig {
        exec: agentd::ExecMode::Any,
        ..agentd::AgentConfig::default()
    };
    let mut events = fleet.events();
    let cancel_agent = tokio_util::sync::CancellationToken::new();
    let _running = agentd::start(&agent.paths, config, cancel_agent.clone()).expect("agent start");
    events.online(&agent.id).await;

    let (relay, mut forwarded, relay_task) = first_flight_relay(fleet.addr()).await;
    let flooder = flotilla_certs::dial::client_endpoint(false).expect("flood endpoint");
    let flood_config = flotilla_certs::dial::identity_config(&fleet.admin_identity()).expect("tls");
    let stop = tokio_util::sync::CancellationToken::new();
    let flood = tokio::spawn({
        let stop = stop.clone();
        async move {
            // Held, not dropped: a dropped attempt would stop retransmitting its first flight.
            let mut attempts = Vec::new();
            let mut tick = tokio::time::interval(FLOOD_EVERY);
            while attempts.len() < FLOOD_MAX && !stop.is_cancelled() {
                tick.tick().await;
                if let Ok(c) = flooder.connect_with(
                    flood_config.clone(),
                    relay,
                    flotilla_wire::HUB_SERVER_NAME,
                ) {
                    attempts.push(c);
                }
            }
            attempts.len()
        }
    });
    // The flood has reached the hub with more first flights than it has slots.
    within(
        DEADLINE,
        "the flood to fill the hub's slots",
        forwarded.wait_for(|n| *n >= 4 * FLOODED_SLOTS),
    )
    .await
    .expect("relay running");

    let login = flotilla::client::Login::load(&fleet.paths.admin_dir(), None).expect("admin login");
    let client = within(
        DEADLINE,
        "operator connect under flood",
        flotilla::client::Client::connect(&login),
    )
    .await
    .unwrap_or_else(|e| panic!("a real client was locked out by the flood: {e}"));
    let req = ExecRequest {
        selector: "target".into(),
        command: ExecCommand::Argv {
            argv: vec!["echo".into(), "still-served".into()],
            shell: false,
        },
        timeout_ms: 0,
        batch: 0,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = within(
        DEADLINE,
        "exec under flood",
        flotilla::exec::run_exec(
            &client,
            &req,
            flotilla::exec::RenderOptions::default(),
            &mut out,
            &mut err,
            flotilla::exec::Interrupts::Never,
        ),
    )
    .await
    .expect("exec ran");
    let during = *forwarded.borrow();
    stop.cancel();
    let attempts = within(DEADLINE, "the flood to stop", flood)
        .await
        .expect("flood task");
    relay_task.abort();
    let out = String::from_utf8_lossy(&out);
    assert_eq!(
        status,
        0,
        "exec failed: {out}{}",
        String::from_utf8_lossy(&err)
    );
    assert!(out.contains("still-served"), "{out}");
    assert!(
        during >= 4 * FLOODED_SLOTS,
        "the flood ran throughout ({during} first flights, {attempts} attempts)"
    );
    cancel_agent.cancel();
}
