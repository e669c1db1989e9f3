//! An output flood through the whole path — agent pipes, agent → hub stream, hub job queue, hub →
//! console stream, the console's line buffers — must not grow memory with the output, nor hold up
//! a quiet agent of the same job. It runs in a process of its own ([`in_own_process`]), so the
//! process's peak RSS is this test's alone (hub, agents and console all live in it).

use crate::harness::exec::{AgentSpec, DEADLINE, exec_fleet, rss};
use crate::harness::in_own_process;
use flotilla_wire::exec::{AgentEvent, ExecCommand, ExecEvent, ExecRequest, Outcome, OutputStream};

/// Output of the flooding agent.
const FLOOD: u64 = 200 * 1024 * 1024;
/// Peak RSS growth allowed while it flows: under half the output, and far above what the bounded
/// queues and QUIC windows hold (a few MiB) plus allocator slack.
const MAX_GROWTH: u64 = 96 * 1024 * 1024;

fn agent(tmp: &std::path::Path, name: &str, bytes: u64) -> AgentSpec {
    let dir = tmp.join(format!("{name}-work"));
    std::fs::create_dir_all(&dir).expect("workdir");
    std::fs::write(dir.join("n"), bytes.to_string()).expect("write");
    let mut spec = AgentSpec::any(name);
    spec.config.workdir = Some(dir);
    spec
}

fn flood(selector: &str) -> ExecRequest {
    ExecRequest {
        selector: selector.into(),
        command: ExecCommand::Argv {
            argv: vec!["head -c $(cat n) /dev/zero".into()],
            shell: true,
        },
        timeout_ms: 0,
        batch: 0,
    }
}

/// Resets the kernel's peak-RSS mark of this process (`VmHWM`), so the next reading is the peak
/// of what follows.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_flood_keeps_memory_bounded_and_others_moving() {
    if !in_own_process("exec_flood::output_flood_keeps_memory_bounded_and_others_moving") {
        return;
    }
    let work = tempfile::tempdir().expect("tmp");
    let fleet = exec_fleet(vec![
        agent(work.path(), "flood", FLOOD),
        agent(work.path(), "quiet", 10),
    ])
    .await;
    let admin = fleet.admin_client().await;
    let flood_id = fleet.agent("flood").id.clone();
    let quiet_id = fleet.agent("quiet").id.clone();

    // A small run first, so buffers and allocator arenas that are used anyway already exist.
    let mut warm = flood("quiet");
    warm.command = ExecCommand::Argv {
        argv: vec!["head -c 8000000 /dev/zero".into()],
        shell: true,
    };
    crate::harness::exec::exec_events(&admin, &warm).await;

    let (before, _) = rss();
    reset_peak();
    let mut session = flotilla::exec::ExecSession::open(&admin, &flood("all"))
        .await
        .expect("exec");
    let mut renderer = flotilla::exec::Renderer::new(flotilla::exec::RenderOptions::default());
    let (mut out, mut err) = (std::io::sink(), std::io::sink());
    let mut flood_bytes = 0u64;
    let mut finals = Vec::new();
    tokio::time::timeout(DEADLINE * 4, async {
        while let Some(ev) = session.next().await {
            let ev = ev.expect("event");
            if let ExecEvent::Agent { agent, event } = &ev {
                if let AgentEvent::Output {
                    stream: OutputStream::Stdout,
                    data,
                } = event
                    && *agent == flood_id
                {
                    flood_bytes += data.0.len() as u64;
                }
                if Outcome::of_event(event).is_some() {
                    finals.push((agent.clone(), flood_bytes));
                }
            }
            let done = matches!(ev, ExecEvent::Done(_));
            renderer.handle(ev, &mut out, &mut err).expect("render");
            if done {
                return;
            }
        }
        panic!("stream ended before the summary");
    })
    .await
    .expect("flood delivered in time");
    let (_, peak) = rss();
    let growth = peak.saturating_sub(before);
    eprintln!(
        "flooded {} MiB: RSS before {} MiB, peak {} MiB, growth {} MiB",
        FLOOD >> 20,
        before >> 20,
        peak >> 20,
        growth >> 20
    );
    assert_eq!(flood_bytes, FLOOD, "every byte arrived");
    assert_eq!(renderer.exit_status(), 0);
    assert_eq!(finals.len(), 2);
    assert_eq!(finals[0].0, quiet_id, "the quiet agent finished first");
    assert!(
        finals[0].1 < FLOOD,
        "the quiet agent was not held up behind the flood"
    );
    assert!(
        growth < MAX_GROWTH,
        "peak RSS grew by {} MiB while {} MiB flowed through",
        growth >> 20,
        FLOOD >> 20
    );

    let replies = crate::harness::exec::query(
        &admin,
        flotilla_wire::exec::Query::Job {
            job: renderer.job().expect("job"),
        },
    )
    .await
    .expect("job");
    let (_, results) = flotilla::exec::split_job(replies).expect("job");
    let stored = results
        .iter()
        .find(|r| r.name == "flood")
        .expect("flood row");
    assert_eq!(stored.stdout_bytes, FLOOD);
    assert_eq!(
        stored.stdout_tail.0.len(),
        flotilla_wire::exec::OUTPUT_TAIL,
        "only the tail is kept"
    );
    fleet.shutdown().await;
}
