//! Exec through the console's own library: a fleet of exec agents, a job run to its end as text or
//! as events, queries, and the process-level checks the exec tests make (a pid gone, this
//! process's memory).

pub(crate) use super::{AgentSpec, Fleet, WORK_DEADLINE as DEADLINE};
use flotilla::client::Client;
use flotilla_wire::IdentityId;
use flotilla_wire::exec::{AgentEvent, ExecEvent, ExecRequest, JobId, Query, QueryReply};

/// A hub and `agents`, every one online.
pub(crate) async fn exec_fleet(agents: Vec<AgentSpec>) -> Fleet {
    Fleet::builder().agents(agents).start().await
}

/// Runs a request to its end with the console's renderer into buffers; returns (exit status,
/// stdout, stderr).
pub(crate) async fn exec_text(client: &Client, req: &ExecRequest) -> (u8, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = tokio::time::timeout(
        DEADLINE,
        flotilla::exec::run_exec(
            client,
            req,
            flotilla::exec::RenderOptions::default(),
            &mut out,
            &mut err,
            flotilla::exec::Interrupts::Never,
        ),
    )
    .await
    .expect("job finished in time")
    .expect("job ran");
    (
        status,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// Every event of a job, to its summary.
pub(crate) async fn exec_events(client: &Client, req: &ExecRequest) -> Vec<ExecEvent> {
    let mut session = flotilla::exec::ExecSession::open(client, req)
        .await
        .expect("exec opens");
    let mut events = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while let Some(ev) = session.next().await {
            let ev = ev.expect("event");
            let end = matches!(ev, ExecEvent::Done(_) | ExecEvent::Refused(_));
            events.push(ev);
            if end {
                return;
            }
        }
        panic!("stream ended before the summary");
    })
    .await
    .expect("job finished in time");
    events
}

/// The final event of `agent` in `events`.
pub(crate) fn last_of<'a>(events: &'a [ExecEvent], agent: &IdentityId) -> &'a AgentEvent {
    events
        .iter()
        .rev()
        .find_map(|e| match e {
            ExecEvent::Agent { agent: a, event } if a == agent => Some(event),
            _ => None,
        })
        .expect("agent has events")
}

/// The job id announced in `events`.
pub(crate) fn job_of(events: &[ExecEvent]) -> JobId {
    events
        .iter()
        .find_map(|e| match e {
            ExecEvent::Accepted { job, .. } => Some(*job),
            _ => None,
        })
        .expect("accepted")
}

/// Runs a query to its end.
pub(crate) async fn query(
    client: &Client,
    q: Query,
) -> Result<Vec<QueryReply>, flotilla::client::ClientError> {
    tokio::time::timeout(DEADLINE, flotilla::exec::query(client, &q))
        .await
        .expect("query answered in time")
}

/// Waits on a pidfd (no polling) until `pid` has exited; false if it still runs at the deadline.
/// A zombie waiting for its reaper counts as exited.
pub(crate) async fn process_gone(pid: i32) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    // SAFETY: the descriptor was just created and is owned here alone.
    let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    // SAFETY: `owned` is an open pidfd that the AsyncFd owns until it is dropped.
    let fd = unsafe { tokio::io::unix::AsyncFd::register(owned) }.expect("register pidfd");
    tokio::time::timeout(DEADLINE, fd.readable()).await.is_ok()
}

/// Resident set size of this process now, and its peak, in bytes.
pub(crate) fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .expect("field")
    };
    (field("VmRSS:"), field("VmHWM:"))
}
