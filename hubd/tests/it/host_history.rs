//! Per-series host history and top processes end to end: a real agentd's samples become series
//! minutes that survive a hub restart and roll up into ten-minute buckets, `flotilla metrics
//! --series` reads them, history past retention is pruned at start, and `flotilla top --at` names
//! a process this test starts burning CPU in the minute it ran and not after it was stopped (that
//! test waits for real minutes to pass: about three).

use crate::harness::exec::query;
use crate::harness::flotilla_bin;
use crate::harness::{DEADLINE, Fleet, run_cmd, within};
use agentd::AgentConfig;
use flotilla_wire::exec::{Query, QueryReply};
use flotilla_wire::history::{Metric, SeriesKind, SeriesPoints, SeriesSelector, TopMinute};
use flotilla_wire::host::TopProcess;
use flotilla_wire::{ErrorCode, IdentityId};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const MINUTE_MS: u64 = 60_000;
const DAY_MS: u64 = 86_400_000;
/// The burner must show within this: a few one-second samples, on a loaded machine.
const BURN_SEEN: Duration = Duration::from_secs(60);
/// A whole minute after the burner stopped must pass before we can look at it.
const MINUTE_AFTER: Duration = Duration::from_secs(150);

/// Pause between polls of the history (nothing to subscribe to: minutes are folded in memory).
const POLL: Duration = Duration::from_millis(500);

/// `flotilla --no-mux --login-dir DIR args… --json` that must succeed: its JSON.
async fn flotilla_json(login_dir: &Path, args: &[&str]) -> Value {
    let mut all = vec![
        "--no-mux",
        "--login-dir",
        login_dir.to_str().expect("utf-8 path"),
    ];
    all.extend_from_slice(args);
    all.push("--json");
    let out = run_cmd(&flotilla_bin(), &all).await;
    let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
    assert!(
        out.status.success(),
        "flotilla {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("flotilla {args:?}: {e}: {stdout}"))
}

fn sel(kind: SeriesKind, name: &str) -> SeriesSelector {
    SeriesSelector {
        kind,
        name: name.into(),
    }
}

async fn series(
    client: &flotilla::client::Client,
    agent: &str,
    selectors: Vec<SeriesSelector>,
    since_s: u64,
) -> Vec<SeriesPoints> {
    let q = Query::HostSeries {
        agent: agent.into(),
        series: selectors,
        since_s,
    };
    query(client, q)
        .await
        .expect("series query")
        .into_iter()
        .filter_map(|r| match r {
            QueryReply::HostSeries(s) => Some(s),
            _ => None,
        })
        .collect()
}

async fn top(
    client: &flotilla::client::Client,
    agent: &str,
    from_ms: u64,
    to_ms: u64,
) -> Vec<TopMinute> {
    let q = Query::HostTop {
        agent: agent.into(),
        from_ms,
        to_ms,
    };
    query(client, q)
        .await
        .expect("top query")
        .into_iter()
        .flat_map(|r| match r {
            QueryReply::HostTop(page) => page,
            _ => Vec::new(),
        })
        .collect()
}

fn samples(s: &SeriesPoints) -> u64 {
    s.points.iter().map(|p| u64::from(p.samples)).sum()
}

fn find<'a>(list: &'a [SeriesPoints], metric: Metric, name: &str) -> &'a SeriesPoints {
    list.iter()
        .find(|s| s.metric == metric && s.name == name)
        .unwrap_or_else(|| panic!("no {metric:?} {name} in {list:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn series_survive_a_restart_roll_up_and_are_read_by_the_cli() {
    let mut fleet = Fleet::new().await;
    let mut events = fleet.events();
    let agent = fleet.enrol_agent("hh-1", Vec::new()).await;
    let cancel = CancellationToken::new();
    let config = AgentConfig::default().with_metrics_interval(1000);
    let running = agentd::start(&agent.paths, config, cancel.clone()).expect("agent start");
    events.online(&agent.id).await;
    // This machine's real mounts and interfaces, as the agent reports them.
    let sample = events.metrics(&agent.id).await;
    let mount = sample
        .disks
        .first()
        .expect("a mounted file system")
        .mount
        .clone();
    let iface = sample
        .nets
        .first()
        .expect("a network interface")
        .iface
        .clone();
    let mut seen = 1u64;
    for _ in 0..3 {
        events.metrics(&agent.id).await;
        seen += 1;
    }
    // A block device from the agent's diskstats collector (its details follow the samples).
    let ctx = fleet.ctx().clone();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let device = loop {
        if let Some(io) = ctx
            .host
            .detail(&agent.id)
            .and_then(|d| d.block_io.first().cloned())
        {
            break io.device;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no block device in the agent's details"
        );
        tokio::time::sleep(POLL).await;
    };
    // Enough samples after the first detail that every series has several.
    for _ in 0..3 {
        events.metrics(&agent.id).await;
        seen += 1;
    }
    drop(ctx);
    let client = fleet.admin_client().await;
    let wanted = vec![
        sel(SeriesKind::Disk, &mount),
        sel(SeriesKind::Net, &iface),
        sel(SeriesKind::Io, &device),
    ];
    // The minute in progress shows before anything is written.
    let live = series(&client, "hh-1", wanted.clone(), 3600).await;
    let used = find(&live, Metric::DiskUsed, &mount);
    assert!(used.points.last().is_some_and(|p| p.avg > 0.0), "{used:?}");
    find(&live, Metric::NetRx, &iface);
    find(&live, Metric::NetTx, &iface);
    for m in [Metric::IoRead, Metric::IoWrite, Metric::IoBusy] {
        find(&live, m, &device);
    }
    client.close().await;

    cancel.cancel();
    within(DEADLINE, "agent stop", running.wait()).await;
    events.offline(&agent.id, DEADLINE).await;
    // A clean restart writes what is queued; the series must come back from the database file.
    fleet.restart().await;
    let client = fleet.admin_client().await;
    let stored = series(&client, "hh-1", wanted.clone(), 3600).await;
    let pct = find(&stored, Metric::DiskPct, &mount);
    assert_eq!(pct.resolution_s, 60);
    assert!(
        samples(pct) >= seen,
        "stored {} samples of {mount}, saw {seen}",
        samples(pct)
    );
    assert!(
        pct.points
            .iter()
            .all(|p| p.avg > 0.0 && p.avg <= 100.0 && p.max >= p.avg),
        "{pct:?}"
    );
    let busy = find(&stored, Metric::IoBusy, &device);
    assert!(
        samples(busy) >= 2 && busy.points.iter().all(|p| (0.0..=100.0).contains(&p.avg)),
        "{busy:?}"
    );
    // Ten-minute buckets hold the same samples.
    let long = series(&client, "hh-1", wanted, 24 * 3600).await;
    let long_pct = find(&long, Metric::DiskPct, &mount);
    assert_eq!(long_pct.resolution_s, 600);
    assert_eq!(samples(long_pct), samples(pct));
    client.close().await;

    // The CLI reads the same, by name and kind.
    let spec = format!("disk:{mount},net:{iface}");
    let out = flotilla_json(
        &fleet.paths.admin_dir(),
        &["metrics", "hh-1", "--series", &spec, "--since", "1h"],
    )
    .await;
    let listed = out["series"].as_array().expect("series array");
    let disk_pct = listed
        .iter()
        .find(|s| s["metric"] == "disk_pct" && s["name"] == mount.as_str())
        .unwrap_or_else(|| panic!("disk_pct of {mount} in {out}"));
    assert_eq!(disk_pct["kind"], "disk");
    let points = disk_pct["points"].as_array().expect("points");
    let cli_samples: u64 = points
        .iter()
        .map(|p| p["samples"].as_u64().expect("samples"))
        .sum();
    assert_eq!(cli_samples, samples(pct));
    assert!(
        listed
            .iter()
            .any(|s| s["metric"] == "net_rx" && s["name"] == iface.as_str()),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn history_past_retention_is_pruned_at_start() {
    let mut fleet = Fleet::new().await;
    let agent = fleet.spawn_agent("hh-old").await;
    let id: IdentityId = agent.id.clone();
    fleet.stop().await;
    let now = hubd::store::now_ms();
    let minute = |ms: u64| ms - ms % (10 * MINUTE_MS);
    let row = |start_ms: u64, avg: f64| hubd::store::series::SeriesMinute {
        agent: id.clone(),
        metric: Metric::Custom,
        name: "jobs".into(),
        start_ms,
        samples: 1,
        avg,
        max: avg,
    };
    let (old, recent, ancient) = (
        minute(now - 40 * DAY_MS),
        minute(now - 2 * DAY_MS),
        minute(now - 400 * DAY_MS),
    );
    {
        // Rows written straight into the database file, as an older hub would have left them
        // (each insert also rolls up its ten-minute bucket).
        let (store, thread) = hubd::store::Store::open(&fleet.paths.db()).expect("open store");
        let rows = vec![row(ancient, 1.0), row(old, 2.0), row(recent, 3.0)];
        let id = id.clone();
        store
            .call(move |c| {
                hubd::store::series::upsert_minutes(c, &rows)?;
                let top = |start_ms| TopMinute {
                    start_ms,
                    samples: 1,
                    by_cpu: vec![TopProcess {
                        pid: 7,
                        name: "cron".into(),
                        cpu_pct: 5.0,
                        ..TopProcess::default()
                    }],
                    by_mem: Vec::new(),
                };
                hubd::store::series::upsert_top(c, &id, &top(old))?;
                hubd::store::series::upsert_top(c, &id, &top(recent))?;
                Ok(())
            })
            .await
            .expect("insert old history");
        drop(store);
        thread.join().expect("store thread");
    }
    fleet.start().await;
    let client = fleet.admin_client().await;
    // 60 days back reads ten-minute buckets: the 400-day one is gone (365 days kept), the 40-day
    // one is kept.
    let ten = series(
        &client,
        "hh-old",
        vec![sel(SeriesKind::Custom, "jobs")],
        60 * 86_400,
    )
    .await;
    let jobs = find(&ten, Metric::Custom, "jobs");
    assert_eq!(jobs.resolution_s, 600);
    let starts: Vec<u64> = jobs.points.iter().map(|p| p.start_ms).collect();
    assert_eq!(starts, vec![old, recent], "{jobs:?}");
    // Minutes: 30 days kept, so the 40-day-old minute is gone and the 2-day-old one is kept.
    let ctx = fleet.ctx().clone();
    let counts = ctx
        .store
        .call(move |c| {
            let n = |sql: &str, at: u64| -> rusqlite::Result<i64> {
                c.query_row(sql, [(at / MINUTE_MS) as i64], |r| r.get(0))
            };
            Ok((
                n("SELECT count(*) FROM series_1m WHERE minute = ?1", old)?,
                n("SELECT count(*) FROM series_1m WHERE minute = ?1", recent)?,
                n("SELECT count(*) FROM top_1m WHERE minute = ?1", old)?,
                n("SELECT count(*) FROM top_1m WHERE minute = ?1", recent)?,
            ))
        })
        .await
        .expect("count");
    assert_eq!(counts, (0, 1, 0, 1), "(old, recent) minutes and top rows");
    let minutes = top(&client, "hh-old", recent, recent + MINUTE_MS).await;
    assert_eq!(minutes.len(), 1);
    assert_eq!(minutes[0].by_cpu[0].name, "cron");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_history_queries_are_refused_by_name() {
    let fleet = Fleet::new().await;
    fleet.spawn_agent("hh-q").await;
    let viewer = fleet.login_as(flotilla_wire::Role::Viewer, "vic").await;
    let client = flotilla::client::Client::connect(&viewer)
        .await
        .expect("viewer connects");
    let refused = |r: Result<Vec<QueryReply>, flotilla::client::ClientError>| match r {
        Err(flotilla::client::ClientError::Refused(r)) => (r.code, r.message),
        other => panic!("not refused: {other:?}"),
    };
    let (code, msg) = refused(
        query(
            &client,
            Query::HostSeries {
                agent: "nobody".into(),
                series: vec![sel(SeriesKind::Disk, "/")],
                since_s: 60,
            },
        )
        .await,
    );
    assert_eq!(
        (code, msg.as_str()),
        (ErrorCode::NotFound, "no agent \"nobody\"")
    );
    let (code, msg) = refused(
        query(
            &client,
            Query::HostSeries {
                agent: "hh-q".into(),
                series: Vec::new(),
                since_s: 60,
            },
        )
        .await,
    );
    assert_eq!(code, ErrorCode::BadRequest);
    assert_eq!(msg, "name 1 to 64 series, not 0");
    let (code, msg) = refused(
        query(
            &client,
            Query::HostTop {
                agent: "hh-q".into(),
                from_ms: 1000,
                to_ms: 1000,
            },
        )
        .await,
    );
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(msg.contains("must end after it starts"), "{msg}");
    // A viewer may read; a series the agent does not have is simply absent.
    let none = series(&client, "hh-q", vec![sel(SeriesKind::Gpu, "7")], 60).await;
    assert!(none.is_empty(), "{none:?}");
    client.close().await;

    // The CLI: the hub's refusal exits 1 naming the agent; bad arguments are usage errors (2)
    // naming the entry; a series that matches nothing is said on stderr.
    let viewer_dir = fleet.dir.path().join("login-vic");
    let run = |args: &'static [&'static str]| {
        let dir = viewer_dir.clone();
        async move {
            let mut all = vec!["--no-mux", "--login-dir", dir.to_str().expect("utf-8 path")];
            all.extend_from_slice(args);
            let out = run_cmd(&flotilla_bin(), &all).await;
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (code, err) = run(&["metrics", "nobody", "--series", "disk:/"]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no agent \"nobody\""), "{err}");
    let (code, err) = run(&["metrics", "hh-q", "--series", "cpu:0"]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("unknown series kind \"cpu\""), "{err}");
    let (code, err) = run(&["top", "hh-q", "--at", "25:00"]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("hour 25 is out of range"), "{err}");
    let (code, err) = run(&["top", "hh-q"]).await;
    assert_eq!(code, Some(2), "--at or --since is required: {err}");
    let (code, err) = run(&[
        "metrics",
        "hh-q",
        "--series",
        "io:nosuchdev",
        "--since",
        "5m",
    ])
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("no history for io:nosuchdev on hh-q"), "{err}");
}

/// A copy of `yes` under a name no other process has: its CPU use is easy to find in a top list.
struct Burner {
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

const BURNER: &str = "hh-burner";

impl Burner {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("burner dir");
        let exe = dir.path().join(BURNER);
        let yes = ["/usr/bin/yes", "/bin/yes"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("yes(1) installed");
        std::fs::copy(yes, &exe).expect("copy yes");
        let child = tokio::process::Command::new(&exe)
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start burner");
        Self { child, _dir: dir }
    }
}

fn burns(m: &TopMinute) -> bool {
    m.by_cpu.iter().any(|p| p.name == BURNER)
}

#[tokio::test(flavor = "multi_thread")]
async fn top_at_a_minute_names_the_process_that_burned_cpu_then_and_not_after() {
    let fleet = Fleet::new().await;
    let mut events = fleet.events();
    let agent = fleet.enrol_agent("hh-top", Vec::new()).await;
    let cancel = CancellationToken::new();
    let config = AgentConfig::default().with_metrics_interval(1000);
    let running = agentd::start(&agent.paths, config, cancel.clone()).expect("agent start");
    events.online(&agent.id).await;
    let client = fleet.admin_client().await;

    let mut burner = Burner::start();
    let started = hubd::store::now_ms();
    // It shows in the minute in progress within a few samples.
    let deadline = tokio::time::Instant::now() + BURN_SEEN;
    loop {
        let now = hubd::store::now_ms();
        let minutes = top(
            &client,
            "hh-top",
            started - started % MINUTE_MS,
            now + MINUTE_MS,
        )
        .await;
        if minutes.iter().any(burns) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{BURNER} never among the top CPU users: {minutes:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    // The first whole minute it ran: it burns through all of it, so that its mean over the minute
    // beats whatever else the machine runs, then stops just after.
    let burn_minute = started - started % MINUTE_MS + MINUTE_MS;
    let stop_at = burn_minute + MINUTE_MS + 2_000;
    let wait = stop_at.saturating_sub(hubd::store::now_ms());
    // Not an assertion's wait: the process must run until the clock has passed that minute.
    tokio::time::sleep(Duration::from_millis(wait)).await;
    burner.child.kill().await.expect("stop burner");
    let stopped = hubd::store::now_ms();

    // The next whole minute after the stop: wait until its samples are in (the minute in progress
    // counts once it has a few).
    let after = stopped - stopped % MINUTE_MS + MINUTE_MS;
    let deadline = tokio::time::Instant::now() + MINUTE_AFTER;
    let later = loop {
        let minutes = top(&client, "hh-top", after, after + 10 * MINUTE_MS).await;
        if minutes.iter().any(|m| m.samples >= 5) {
            break minutes;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no minute after the burner stopped: {minutes:?}"
        );
        tokio::time::sleep(POLL).await;
    };
    assert!(
        !later.iter().any(burns),
        "{BURNER} listed after it stopped: {later:?}"
    );

    // `flotilla top --at HH:MM` names it at its minute; RFC 3339 names the same minute.
    let hhmm = flotilla_wire::text::UtcTime::from_unix_ms(burn_minute as i64);
    let at = format!("{:02}:{:02}", hhmm.hour, hhmm.minute);
    let rfc = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:30Z",
        hhmm.year, hhmm.month, hhmm.day, hhmm.hour, hhmm.minute
    );
    for when in [at.as_str(), rfc.as_str()] {
        let out = flotilla_json(&fleet.paths.admin_dir(), &["top", "hh-top", "--at", when]).await;
        let minutes = out["minutes"].as_array().expect("minutes");
        assert_eq!(minutes.len(), 1, "--at {when}: {out}");
        assert_eq!(minutes[0]["start_ms"].as_u64(), Some(burn_minute));
        let by_cpu = minutes[0]["by_cpu"].as_array().expect("by_cpu");
        let burned = by_cpu
            .iter()
            .find(|p| p["name"] == BURNER)
            .unwrap_or_else(|| panic!("--at {when}: {out}"));
        // The agent's details name its command line and user.
        assert!(
            burned["cmd"].as_str().is_some_and(|c| c.contains(BURNER)),
            "{burned}"
        );
        assert!(
            burned["user"].as_str().is_some_and(|u| !u.is_empty()),
            "{burned}"
        );
    }
    client.close().await;
    cancel.cancel();
    within(DEADLINE, "agent stop", running.wait()).await;
}
