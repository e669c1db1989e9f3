//! hubd: the Flotilla hub. Accepts agents and operators over QUIC with mutual TLS, enrols new
//! identities from join tokens, keeps the registry and audit log in SQLite and live state in memory,
//! keeps every agent's shared-folder tree and relays file transfers between agents and operators.
//!
//! Main entry points: [`init`] (create a hub's data directory), [`start`] (serve until cancelled),
//! [`offline_request`] (run an admin request against a stopped hub's database).

mod accept;
pub mod admin;
mod admin_socket;
pub mod alerts;
pub mod backup;
pub mod cli;
pub mod config;
mod endpoint;
mod error;
pub mod exec;
pub mod history;
pub mod host;
pub mod host_history;
mod local_socket;
pub mod maint;
pub mod notify;
mod prometheus;
pub mod registry;
mod relay;
pub mod reload;
pub mod service;
mod session;
pub mod settings;
pub mod shell;
pub mod stats;
pub mod store;
pub mod workloads;

pub use admin_socket::request as admin_request;
pub use config::{HubConfig, HubPaths};
pub use error::HubError;
pub use registry::Registry;
pub use relay::Files;
pub use stats::Stats;

use flotilla_certs::{Ca, IDENTITY_STEM, Identity};
use flotilla_wire::msg::{OpRequest, OpResponse};
use flotilla_wire::{ErrorCode, IdentityId, Role};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Time in-flight work gets to finish after shutdown starts, before it is cut off.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);
/// How long the endpoint may take to finish closing connections. Every CONNECTION_CLOSE is sent at
/// once; what remains is QUIC's draining period (three probe timeouts per connection), which only
/// absorbs stray packets. With thousands of agents waiting on it the old hub held its port for
/// the whole drain deadline, and a restart started that much later.
const ENDPOINT_DRAIN: Duration = Duration::from_secs(1);

/// What every task of a running (or offline) hub shares.
pub struct HubCtx {
    /// The database.
    pub store: store::Store,
    /// Live state.
    pub registry: Registry,
    /// The fleet CA (signs enrolments).
    pub ca: Arc<Ca>,
    /// Settings.
    pub config: HubConfig,
    /// `host:port` addresses tokens carry.
    pub advertised: Vec<String>,
    /// Counters.
    pub stats: Stats,
    /// Metrics history writer.
    pub history: history::History,
    /// Running exec jobs.
    pub jobs: exec::Jobs,
    /// Shared-folder trees, file events and transfers in flight.
    pub files: Arc<Files>,
    /// The TLS session tickets the hub issues and opens (counts resumable handshakes).
    pub tickets: Arc<flotilla_certs::tickets::SessionTickets>,
    /// Containers and units of every agent, as their last deltas left them.
    pub workloads: workloads::Workloads,
    /// Container history writer.
    pub container_history: workloads::history::ContainerHistory,
    /// Alert delivery: the outbox and its receivers.
    pub notifier: notify::Notifier,
    /// Alert rules, alerts and silences.
    pub alerts: alerts::Alerts,
    /// Latest host depth (GPUs, disk health, per-device I/O…) per agent.
    pub host: host::HostState,
    /// Shell session records: where recordings go and how long they stay.
    pub sessions: shell::sessions::Sessions,
    /// Live shell sessions and where they are recorded.
    pub shells: Arc<shell::Shells>,
}

/// What `hubd init` made.
#[derive(Debug, serde::Serialize)]
pub struct InitReport {
    /// SHA-256 of the fleet CA.
    pub ca_fingerprint: String,
    /// The admin identity's id.
    pub admin_id: IdentityId,
    /// Where the admin identity lives (use with `flotilla --login-dir`).
    pub admin_dir: String,
    /// The data directory.
    pub data_dir: String,
}

/// Mode of the hub's files that hold state or secrets (database, backups, lock, log): the hub's
/// user only.
pub(crate) const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of the hub's files a monitoring group may read (configuration, bound addresses).
pub(crate) const SHARED_FILE_MODE: u32 = 0o640;

/// Opens `path` for writing (created if missing, not truncated) with exactly `mode`: a new file gets
/// it from creation and an existing one is set to it, whatever the umask.
pub(crate) fn open_with_mode(
    path: &std::path::Path,
    mode: u32,
    append: bool,
) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).write(true);
    if append {
        opts.append(true);
    } else {
        opts.truncate(false);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
    let file = opts.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if file.metadata()?.permissions().mode() & 0o777 != mode {
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
    }
    #[cfg(not(unix))]
    let _ = mode;
    Ok(file)
}

/// Writes a small text file atomically with `mode` (see [`open_with_mode`]).
pub(crate) fn write_with_mode(
    path: &std::path::Path,
    text: &str,
    mode: u32,
) -> Result<(), HubError> {
    deploy::files::write_atomic(path, text.as_bytes(), mode)
        .map_err(|e| HubError::io(format!("write {}", path.display()), e.source))?;
    // `write_atomic` creates with `mode`, which the umask may only narrow; make it exact.
    deploy::files::set_mode(path, mode)
        .map_err(|e| HubError::io(format!("chmod {}", path.display()), e.source))
}

/// Creates a hub in `paths.data_dir`: fleet CA, hub certificate, admin identity, database, config.
/// Refuses to touch a directory that already holds a CA.
pub async fn init(paths: &HubPaths, config: &HubConfig) -> Result<InitReport, HubError> {
    config.validate()?;
    flotilla_certs::create_private_dir(&paths.data_dir)?;
    let ca = Ca::create(&paths.data_dir)?;
    let mut names = config.advertise.clone();
    if !config.listen.ip().is_unspecified() {
        names.push(config.listen.ip().to_string());
    }
    names.push("127.0.0.1".into());
    names.push("localhost".into());
    names.sort();
    names.dedup();
    let hub = ca.issue_hub_cert(&names)?;
    flotilla_certs::write_private(&paths.hub_key(), &hub.key_der)?;
    flotilla_certs::write_cert_pem(&paths.hub_cert(), &hub.cert_der)?;
    endpoint::reset_secret(paths)?;
    endpoint::session_tickets(paths)?;

    let admin_id = IdentityId::from_random(Role::Admin, flotilla_certs::random_bytes());
    let admin = ca.issue_local_identity(&admin_id, Role::Admin)?;
    let admin_dir = paths.admin_dir();
    flotilla_certs::create_private_dir(&admin_dir)?;
    Identity {
        key_der: admin.key_der,
        cert_der: admin.cert_der,
        ca_der: ca.cert_der().to_vec(),
    }
    .save(&admin_dir, IDENTITY_STEM)?;
    Identity::save_hubs(&admin_dir, &config.advertised(config.listen.port()))?;

    let (store, thread) = store::Store::open(&paths.db())?;
    let now = store::now_ms();
    let row = store::IdentityRow {
        id: admin_id.clone(),
        role: Role::Admin,
        name: "admin".into(),
        labels: Vec::new(),
        token_id: "init".into(),
        first_seen_ms: now,
        last_seen_ms: now,
        version: String::new(),
        os: String::new(),
        hostname: String::new(),
        addr: String::new(),
        revoked_ms: None,
    };
    store
        .call(move |c| {
            store::identities::insert(c, &row)?;
            store::audit::append(c, now, "init", "init", row.id.as_str(), "")?;
            Ok(())
        })
        .await?;
    drop(store);
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    config.save(&paths.data_dir)?;
    Ok(InitReport {
        ca_fingerprint: ca.fingerprint().to_string(),
        admin_id,
        admin_dir: admin_dir.display().to_string(),
        data_dir: paths.data_dir.display().to_string(),
    })
}

/// A hub serving in the background.
pub struct RunningHub {
    /// The bound UDP address.
    pub local_addr: SocketAddr,
    /// The bound Prometheus endpoint, when `metrics_listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    /// Shared state (tests inspect it).
    pub ctx: Arc<HubCtx>,
    task: tokio::task::JoinHandle<Result<(), HubError>>,
}

impl RunningHub {
    /// Waits until the hub has shut down (after its cancel token fires).
    pub async fn wait(self) -> Result<(), HubError> {
        // The hub task ends by joining the store thread, which runs until every handle to the
        // store is gone: this one must not be held while waiting for it.
        let Self { task, ctx, .. } = self;
        drop(ctx);
        task.await
            .map_err(|e| HubError::io("hub task", std::io::Error::other(e.to_string())))?
    }
}

/// Holds an exclusive lock on the data directory for the life of the hub: two hubs on one database
/// would fight over the admin socket and the registry.
pub(crate) struct DirLock(#[allow(dead_code)] std::fs::File);

pub(crate) fn lock_data_dir(paths: &HubPaths) -> Result<DirLock, HubError> {
    let path = paths.data_dir.join("hub.lock");
    let file = open_with_mode(&path, PRIVATE_FILE_MODE, false)
        .map_err(|e| HubError::io(format!("open {}", path.display()), e))?;
    // `flock(LOCK_EX | LOCK_NB)` on Unix, `LockFileEx` on Windows.
    match file.try_lock() {
        Ok(()) => Ok(DirLock(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(HubError::Config(format!(
            "another hubd is already running on {}",
            paths.data_dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(HubError::io(format!("lock {}", path.display()), e))
        }
    }
}

async fn open_ctx(
    paths: &HubPaths,
    config: HubConfig,
    port: u16,
    tickets: Arc<flotilla_certs::tickets::SessionTickets>,
) -> Result<(Arc<HubCtx>, std::thread::JoinHandle<()>), HubError> {
    let ca = Ca::load(&paths.data_dir)?;
    let (store, store_thread) = store::Store::open(&paths.db())?;
    let advertised = config.advertised(port);
    let retention = history::Retention {
        minute_days: config.history_minute_days,
        ten_minute_days: config.history_ten_minute_days,
        container_days: config.container_history_days(),
    };
    let history = history::History::start(store.clone(), retention).await;
    let container_history =
        workloads::history::ContainerHistory::start(store.clone(), history.retention_watch()).await;
    let registry = Registry::new(config.metrics_interval_ms);
    let notifier = notify::Notifier::new(store.clone(), &config);
    let config_for_sessions = config.clone();
    let shells = Arc::new(shell::Shells::new(
        paths.data_dir.join(shell::RECORDINGS_DIR),
        config.recordings_input,
        config.recordings_required,
    ));
    let ctx = HubCtx {
        store,
        registry,
        ca: Arc::new(ca),
        config,
        advertised,
        stats: Stats::default(),
        history,
        jobs: exec::Jobs::default(),
        files: Arc::new(Files::new()),
        tickets,
        workloads: workloads::Workloads::default(),
        container_history,
        notifier,
        alerts: alerts::Alerts::default(),
        host: host::HostState::default(),
        sessions: shell::sessions::Sessions::new(paths.recordings_dir(), &config_for_sessions),
        shells,
    };
    Ok((Arc::new(ctx), store_thread))
}

/// Waits for the store thread to write what is queued and close the database. Bounded: a task
/// still holding a store handle must not keep the process from exiting.
async fn join_store(thread: std::thread::JoinHandle<()>) {
    let joined = tokio::time::timeout(
        DRAIN_DEADLINE,
        tokio::task::spawn_blocking(move || thread.join()),
    )
    .await;
    if joined.is_err() {
        tracing::warn!("store still busy at the drain deadline");
    }
}

/// Starts serving: binds the endpoint and the admin socket and returns once both listen.
pub async fn start(
    paths: HubPaths,
    config: HubConfig,
    cancel: CancellationToken,
) -> Result<RunningHub, HubError> {
    config.validate()?;
    let lock = lock_data_dir(&paths)?;
    let hub_key = flotilla_certs::read_private(&paths.hub_key())?;
    let hub_cert = flotilla_certs::read_cert_pem(&paths.hub_cert())?;
    let ca = Ca::load(&paths.data_dir)?;
    let tickets = endpoint::session_tickets(&paths)?;
    let crypto =
        flotilla_certs::tls::server_config(ca.cert_der(), &hub_cert, &hub_key, tickets.clone())?;
    let mut server = quinn::ServerConfig::with_crypto(crypto);
    let mut bulk = server.clone();
    server.transport_config(endpoint::transport(config.idle_timeout_s));
    bulk.transport_config(endpoint::bulk_transport(config.idle_timeout_s));
    let bulk = Arc::new(bulk);
    let reset_secret = endpoint::reset_secret(&paths)?;
    let endpoint = endpoint::bind(config.listen, server, &reset_secret)?;
    drop(reset_secret);
    let local_addr = endpoint
        .local_addr()
        .map_err(|e| HubError::io("local address", e))?;
    let (ctx, store_thread) = open_ctx(&paths, config.clone(), local_addr.port(), tickets).await?;
    exec::recover(&ctx).await;
    relay::recover(&ctx).await;
    shell::sessions::recover(&ctx).await;
    // Before serving, so a restart with tighter retention has applied it when it answers.
    shell::sessions::prune(&ctx).await;
    let admin_listener = admin_socket::bind(&paths.admin_socket())?;
    let maint_listener = maint::bind(&paths.data_dir.join(maint::SOCKET))?;
    let metrics_listener = match ctx.config.metrics_listen {
        Some(addr) => Some(prometheus::bind(addr).await?),
        None => None,
    };
    let metrics_addr = match &metrics_listener {
        Some(l) => Some(
            l.local_addr()
                .map_err(|e| HubError::io("metrics endpoint address", e))?,
        ),
        None => None,
    };
    write_with_mode(
        &paths.addr_file(),
        &format!("{local_addr}\n"),
        SHARED_FILE_MODE,
    )?;
    let metrics_addr_file = paths.data_dir.join("metrics.addr");
    match metrics_addr {
        Some(addr) => write_with_mode(&metrics_addr_file, &format!("{addr}\n"), SHARED_FILE_MODE)?,
        None => {
            let _ = std::fs::remove_file(&metrics_addr_file);
        }
    }
    if paths.admin_dir().is_dir() {
        Identity::save_hubs(&paths.admin_dir(), &ctx.advertised)?;
    }
    tracing::info!(%local_addr, ca = %ctx.ca.fingerprint().short(), advertised = ?ctx.advertised, metrics = ?metrics_addr, "hub listening");

    let started_ms = store::now_ms();
    let tracker = TaskTracker::new();
    tracker.spawn(maint::serve(
        ctx.clone(),
        maint::Facts {
            paths: paths.clone(),
            listen: local_addr,
            metrics_listen: metrics_addr,
            started_ms,
        },
        maint_listener,
        tracker.clone(),
        cancel.clone(),
    ));
    if let Some(listener) = metrics_listener {
        tracker.spawn(prometheus::serve(
            ctx.clone(),
            listener,
            started_ms,
            tracker.clone(),
            cancel.clone(),
        ));
    }
    tracker.spawn(log_stats(ctx.clone(), cancel.clone()));
    tracker.spawn(notify::deliver::run(ctx.notifier.clone(), cancel.clone()));
    ctx.alerts.set_sink(Arc::new(ctx.notifier.clone()));
    alerts::Alerts::start(ctx.clone(), &tracker, cancel.clone()).await?;
    tracker.spawn(shell::sessions::pruner(ctx.clone(), cancel.clone()));
    tracker.spawn(admin_socket::serve(
        ctx.clone(),
        admin_listener,
        tracker.clone(),
        cancel.clone(),
    ));
    let task_ctx = ctx.clone();
    let task = tokio::spawn(async move {
        let ctx = task_ctx;
        let admission = accept::Admission::new(
            ctx.config.max_handshakes,
            ctx.config.max_handshakes_per_source,
        );
        loop {
            let incoming = tokio::select! {
                _ = cancel.cancelled() => break,
                incoming = endpoint.accept() => match incoming {
                    Some(i) => i,
                    None => break,
                },
            };
            // The accept loop only admits, retries or refuses, and spawns: the handshake slot is
            // taken in the task.
            let source = incoming.remote_address().ip();
            match admission.judge(source, incoming.remote_address_validated()) {
                Ok(admitted) => {
                    tracker.spawn(session::serve(
                        ctx.clone(),
                        incoming,
                        bulk.clone(),
                        admitted,
                        cancel.child_token(),
                    ));
                }
                Err(accept::Verdict::Retry) => {
                    tracing::debug!(remote = %incoming.remote_address(), "address validation (retry)");
                    // Only a validated Incoming cannot be retried, and validated ones are never
                    // judged Retry; refuse should it happen all the same.
                    if let Err(e) = incoming.retry() {
                        e.into_incoming().refuse();
                    }
                }
                Err(_) => {
                    ctx.stats.connection_accepted();
                    ctx.stats.handshake_refused();
                    tracing::debug!(remote = %incoming.remote_address(), "too many handshakes from this address");
                    incoming.refuse();
                }
            }
        }
        // New connections now would only be refused or cut off mid-handshake: drop their packets
        // instead, so that clients keep retransmitting and reach the next hub as soon as it listens.
        endpoint.set_server_config(None);
        tracing::info!("shutting down");
        let stopping = std::time::Instant::now();
        let phase = |what: &str| {
            tracing::info!(
                elapsed_ms = stopping.elapsed().as_millis() as u64,
                "shutdown: {what}"
            )
        };
        // Sessions see the cancel, close their connections with ShuttingDown and record the agents
        // offline; what is still open at the deadline is closed here.
        tracker.close();
        if tokio::time::timeout(DRAIN_DEADLINE, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("sessions still running at the drain deadline");
        }
        phase("sessions ended");
        ctx.jobs.wait(DRAIN_DEADLINE).await;
        ctx.registry.close_all(ErrorCode::ShuttingDown);
        endpoint.close(
            ErrorCode::ShuttingDown.as_u32().into(),
            ErrorCode::ShuttingDown.describe().as_bytes(),
        );
        let _ = tokio::time::timeout(ENDPOINT_DRAIN, endpoint.wait_idle()).await;
        phase("connections closed");
        let _ = std::fs::remove_file(paths.admin_socket());
        let _ = std::fs::remove_file(paths.data_dir.join(maint::SOCKET));
        if !ctx.history.close(DRAIN_DEADLINE).await {
            tracing::warn!("metrics history still being written at the drain deadline");
        }
        let open_minutes = ctx.workloads.close_all_minutes();
        if !ctx
            .container_history
            .close(open_minutes, DRAIN_DEADLINE)
            .await
        {
            tracing::warn!("container history still being written at the drain deadline");
        }
        drop(ctx);
        join_store(store_thread).await;
        phase("history and store flushed");
        drop(lock);
        tracing::info!("hub stopped");
        Ok(())
    });
    Ok(RunningHub {
        local_addr,
        metrics_addr,
        ctx,
        task,
    })
}

/// How often the hub logs its counters: often enough to graph from logs, rare enough not to spam.
const STATS_EVERY: Duration = Duration::from_secs(60);

async fn log_stats(ctx: Arc<HubCtx>, cancel: CancellationToken) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + STATS_EVERY, STATS_EVERY);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        tracing::info!(
            agents_online = ctx.registry.online_count(),
            operators_online = ctx.registry.operator_count(),
            metrics_samples = ctx.stats.metrics_samples.load(Relaxed),
            handshakes_ok = ctx.stats.handshakes_ok.load(Relaxed),
            handshakes_failed = ctx.stats.handshakes_failed.load(Relaxed),
            tickets_accepted = ctx.tickets.accepted(),
            enrolments = ctx.stats.enrolments_ok.load(Relaxed),
            "stats"
        );
    }
}

/// Runs an admin request: through the running hub's admin socket if one is serving this data
/// directory, else directly against the database (revocations then take effect at the next start).
pub async fn offline_request(paths: &HubPaths, req: OpRequest) -> Result<OpResponse, HubError> {
    offline_request_with(paths, || HubConfig::load(&paths.data_dir), req).await
}

/// [`offline_request`] with the configuration from `config` (only called when the hub is
/// stopped): for a hub whose configuration lives outside its data directory.
pub async fn offline_request_with(
    paths: &HubPaths,
    config: impl FnOnce() -> Result<HubConfig, HubError>,
    req: OpRequest,
) -> Result<OpResponse, HubError> {
    if let Some(resp) = admin_socket::request(&paths.admin_socket(), &req).await? {
        return Ok(resp);
    }
    let config = config()?;
    let port = config.listen.port();
    // No handshakes here: tickets under a throwaway key, so that the key file is not touched.
    let tickets = flotilla_certs::tickets::SessionTickets::new(&flotilla_certs::random_bytes::<
        { flotilla_certs::tickets::TICKET_KEY_LEN },
    >())?;
    let (ctx, store_thread) = open_ctx(paths, config, port, Arc::new(tickets)).await?;
    let actor = admin::Actor {
        name: "local-admin".into(),
        role: Role::Admin,
    };
    let resp = admin::handle(&ctx, &actor, req).await;
    ctx.history.close(DRAIN_DEADLINE).await;
    ctx.container_history
        .close(Vec::new(), DRAIN_DEADLINE)
        .await;
    drop(ctx);
    join_store(store_thread).await;
    Ok(resp)
}
