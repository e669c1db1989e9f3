//! `flotilla mux`: a local multiplexer holding one operator connection to the hub, like ssh's
//! ControlMaster, so that one-shot commands (`exec`, `agents`, `jobs`…) skip process-to-hub dialling
//! and the QUIC and mTLS handshake.
//!
//! The mux listens on a Unix socket ([`default_socket`]: the user's runtime directory, or a
//! per-user directory in the temp dir, then `flotilla/mux-<hash of login and hubs>.sock`), in a
//! 0700 directory with mode 0600. Each accepted connection from a process of our own uid becomes one
//! bidirectional QUIC stream on the hub connection (see `relay`): the mux first writes one frame,
//! the hub's [`ServerOpen::Welcome`] as it welcomed the mux, then copies bytes both ways, so the
//! client speaks exactly the framed protocol of a QUIC stream. Anyone who can connect to the socket
//! acts with this operator identity; the uid check and the modes keep that to the same user.
//!
//! Clients find the socket by the same hash ([`probe`]), fall back to dialling when it is absent,
//! stale or not ours, and open one Unix connection per stream ([`open`]).

mod relay;

use crate::client::{Client, ClientError, Link, Login};
use flotilla_wire::io::read_frame;
use flotilla_wire::limits::MAX_CONTROL_FRAME;
use flotilla_wire::msg::{Refusal, ServerOpen, Welcome};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a client waits for a mux that accepted its connection to send the welcome before it
/// dials the hub itself: the mux writes it at once, so only a wedged mux takes this long.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// Unix clients relayed at once; more wait in the listen backlog. The hub lets one connection
/// have 64 streams open, so a few hundred local clients are already queued there; this bounds
/// the mux's own memory (a 16 KiB buffer per client) against a runaway script.
pub const MAX_CLIENTS: usize = 512;
/// How long relays get to reset their streams at shutdown before the connection closes anyway.
const RELAY_DRAIN: Duration = Duration::from_secs(2);
/// Pause after a failed `accept` (out of descriptors, say) so that the loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Hex digits of the login hash in the socket name: 64 bits keep logins apart and the path well
/// inside the 108 bytes a Unix socket path may have.
const HASH_DIGITS: usize = 16;

/// Why the mux could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    /// Another mux answers on the socket.
    #[error("a mux already runs on {} (pid {pid}): use it, or stop it with `flotilla mux --stop`", path.display())]
    AlreadyRunning {
        /// The socket.
        path: PathBuf,
        /// Its process id, or `unknown`.
        pid: String,
    },
    /// Something we will not remove sits at the socket path.
    #[error("{} is taken: {why}; remove it or pass --socket", path.display())]
    Occupied {
        /// The path.
        path: PathBuf,
        /// What is there.
        why: String,
    },
    /// The socket directory is not safe to use (another owner, a symlink).
    #[error("socket directory {}: {why}; remove it or pass --socket", path.display())]
    UnsafeDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What we tried.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The hub could not be reached at start.
    #[error("cannot connect to the hub: {0}")]
    Dial(ClientError),
    /// The hub connection ended while the mux ran.
    #[error("lost the hub: {0}")]
    HubLost(ClientError),
}

fn io_error<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> MuxError + 'a {
    move |source| MuxError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Our effective uid.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// The directory of mux sockets: `$XDG_RUNTIME_DIR/flotilla` (through `directories`), else
/// `flotilla-<uid>` in the temp dir (a per-user name, since the temp dir is shared).
pub fn socket_dir() -> PathBuf {
    directories::ProjectDirs::from("dev", "flotilla", "flotilla")
        .and_then(|d| d.runtime_dir().map(Path::to_path_buf))
        .unwrap_or_else(|| std::env::temp_dir().join(format!("flotilla-{}", euid())))
}

/// The socket of the mux for `login`: [`socket_dir`] then `mux-<hash>.sock`, the hash over the
/// canonical login directory and the hub list, so each login (and a `--hub` override) has its own.
pub fn default_socket(login: &Login) -> PathBuf {
    socket_dir().join(socket_name(login))
}

fn socket_name(login: &Login) -> String {
    let dir = std::fs::canonicalize(&login.dir).unwrap_or_else(|_| login.dir.clone());
    let mut hash = blake3::Hasher::new();
    hash.update(dir.as_os_str().as_encoded_bytes());
    for hub in &login.hubs {
        // NUL cannot occur in a path or an address, so the input is unambiguous.
        hash.update(b"\0");
        hash.update(hub.as_bytes());
    }
    format!("mux-{}.sock", &hash.finalize().to_hex()[..HASH_DIGITS])
}

/// A mux that answered: the open connection (ready to carry one stream), its welcome and pid.
#[derive(Debug)]
pub struct Answer {
    /// The connection, welcome read.
    pub stream: UnixStream,
    /// The hub's welcome of the mux.
    pub welcome: Welcome,
    /// The mux's process id, from the socket's credentials.
    pub pid: Option<i32>,
}

/// What is at a mux socket path.
#[derive(Debug)]
pub enum Probe {
    /// No file.
    Absent,
    /// A file that is not a socket.
    NotSocket,
    /// A socket file nobody listens on: a mux that died (connection refused).
    Stale(std::io::Error),
    /// A socket that could not be connected to for another reason (no permission, say).
    Unreachable(std::io::Error),
    /// A process of another uid listens there.
    Foreign {
        /// Its uid.
        uid: u32,
    },
    /// A listener that did not welcome us in time or sent something else.
    Broken(String),
    /// A mux that refused us (it is shutting down).
    Refused(Refusal),
    /// A mux of ours, welcoming.
    Answered(Answer),
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Absent => write!(f, "no socket"),
            Self::NotSocket => write!(f, "not a socket"),
            Self::Stale(e) => write!(f, "stale socket ({e})"),
            Self::Unreachable(e) => write!(f, "cannot connect ({e})"),
            Self::Foreign { uid } => write!(f, "a process of uid {uid} listens"),
            Self::Broken(why) => write!(f, "{why}"),
            Self::Refused(r) => write!(f, "refused: {}", r.message),
            Self::Answered(a) => write!(f, "mux running (pid {})", pid_text(a.pid)),
        }
    }
}

fn pid_text(pid: Option<i32>) -> String {
    pid.map(|p| p.to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Connects to the socket at `path` and reads the mux's welcome; says what is there. Waits at most
/// [`ANSWER_TIMEOUT`] for the welcome.
pub async fn probe(path: &Path) -> Probe {
    let stream = match UnixStream::connect(path).await {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Probe::Absent,
        Err(e) => {
            return match std::fs::symlink_metadata(path) {
                Ok(m) if !m.file_type().is_socket() => Probe::NotSocket,
                Err(_) => Probe::Absent,
                Ok(_) if e.kind() == std::io::ErrorKind::ConnectionRefused => Probe::Stale(e),
                Ok(_) => Probe::Unreachable(e),
            };
        }
    };
    let cred = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => return Probe::Broken(format!("cannot read the socket's credentials: {e}")),
    };
    if cred.uid() != euid() {
        return Probe::Foreign { uid: cred.uid() };
    }
    let mut stream = stream;
    let answer = tokio::time::timeout(
        ANSWER_TIMEOUT,
        read_frame::<ServerOpen, _>(&mut stream, MAX_CONTROL_FRAME),
    )
    .await;
    match answer {
        Ok(Ok(Some(ServerOpen::Welcome(welcome)))) => Probe::Answered(Answer {
            stream,
            welcome,
            pid: cred.pid(),
        }),
        Ok(Ok(Some(ServerOpen::Refused(r)))) => Probe::Refused(r),
        Ok(Ok(Some(ServerOpen::Enrolled(_)))) => {
            Probe::Broken("the socket answered with an enrolment".into())
        }
        Ok(Ok(None)) => Probe::Broken("the socket closed without a welcome".into()),
        Ok(Err(e)) => Probe::Broken(format!("the socket sent no welcome: {e}")),
        Err(_) => Probe::Broken(format!("no welcome within {} s", ANSWER_TIMEOUT.as_secs())),
    }
}

/// A new connection to the mux at `path`, welcome read: one stream to the hub.
pub async fn open(path: &Path) -> Result<UnixStream, String> {
    match probe(path).await {
        Probe::Answered(a) => Ok(a.stream),
        other => Err(other.to_string()),
    }
}

/// Options of `flotilla mux`.
#[derive(Clone, Debug)]
pub struct MuxOptions {
    /// Where to listen.
    pub socket: PathBuf,
    /// Whether `socket` is the default one, whose directory we own and check strictly.
    pub default_dir: bool,
    /// Exit after this long without clients (like ssh's ControlPersist); `None`: run until stopped.
    pub persist: Option<Duration>,
}

/// Creates the socket's directory 0700. The default directory must be a real directory of ours
/// (it may sit in the shared temp dir), and loose modes are tightened with a warning; a directory
/// given with `--socket` is the user's choice and only created when missing.
fn prepare_dir(dir: &Path, strict: bool) -> Result<(), MuxError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.mode(0o700).recursive(!strict);
    match builder.create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_error("create socket directory", dir)(e)),
    }
    if !strict {
        return Ok(());
    }
    let meta = std::fs::symlink_metadata(dir).map_err(io_error("inspect", dir))?;
    let unsafe_dir = |why: String| MuxError::UnsafeDir {
        path: dir.to_owned(),
        why,
    };
    if !meta.file_type().is_dir() {
        return Err(unsafe_dir("not a directory (a symlink?)".into()));
    }
    if meta.uid() != euid() {
        return Err(unsafe_dir(format!("owned by uid {}, not us", meta.uid())));
    }
    if meta.mode() & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), mode = format!("{:o}", meta.mode() & 0o777), "socket directory was open to others; set to 0700");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_error("chmod", dir))?;
    }
    Ok(())
}

/// Removes the socket file when the mux ends, if it is still the one we bound (same inode): a mux
/// started after ours was stopped by hand keeps its socket.
struct SocketGuard {
    path: PathBuf,
    inode: u64,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Why a mux ended without error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MuxEnd {
    /// SIGINT or SIGTERM.
    Stopped,
    /// No client for the `--persist` time.
    Idle,
}

/// A started mux: connected to the hub and listening.
pub struct Master {
    client: Client,
    conn: quinn::Connection,
    listener: UnixListener,
    guard: SocketGuard,
    persist: Option<Duration>,
}

impl Master {
    /// Refuses if a mux already answers on the socket, removes a stale one, dials the hub, then
    /// binds the socket 0600 in its 0700 directory.
    pub async fn start(login: &Login, opts: &MuxOptions) -> Result<Self, MuxError> {
        let path = &opts.socket;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            prepare_dir(dir, opts.default_dir)?;
        }
        let occupied = |why: String| MuxError::Occupied {
            path: path.clone(),
            why,
        };
        match probe(path).await {
            Probe::Absent => {}
            Probe::Stale(e) => {
                // Only our own dead socket is ours to remove.
                let meta = std::fs::symlink_metadata(path).map_err(io_error("inspect", path))?;
                if meta.uid() != euid() {
                    return Err(occupied(format!("a stale socket of uid {}", meta.uid())));
                }
                tracing::info!(socket = %path.display(), error = %e, "removing stale mux socket");
                std::fs::remove_file(path).map_err(io_error("remove stale socket", path))?;
            }
            Probe::Answered(Answer { pid, .. }) => {
                return Err(MuxError::AlreadyRunning {
                    path: path.clone(),
                    pid: pid_text(pid),
                });
            }
            Probe::Refused(_) => {
                return Err(MuxError::AlreadyRunning {
                    path: path.clone(),
                    pid: "unknown".into(),
                });
            }
            other @ (Probe::NotSocket
            | Probe::Unreachable(_)
            | Probe::Foreign { .. }
            | Probe::Broken(_)) => return Err(occupied(other.to_string())),
        }
        let client = Client::connect(login).await.map_err(MuxError::Dial)?;
        let Link::Direct { conn, .. } = client.link() else {
            return Err(MuxError::Dial(ClientError::NeedsDirect("the mux")));
        };
        let conn = conn.clone();
        let listener = UnixListener::bind(path).map_err(io_error("listen on", path))?;
        let meta = std::fs::symlink_metadata(path).map_err(io_error("inspect", path))?;
        let guard = SocketGuard {
            path: path.clone(),
            inode: meta.ino(),
        };
        // The directory already keeps others out; the mode says so on the file too. The uid check
        // on every connection covers a `--socket` in a shared directory between bind and chmod.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_error("chmod", path))?;
        Ok(Self {
            client,
            conn,
            listener,
            guard,
            persist: opts.persist,
        })
    }

    /// What the hub said when the mux connected.
    pub fn welcome(&self) -> &Welcome {
        &self.client.welcome
    }

    /// Where it listens.
    pub fn socket(&self) -> &Path {
        &self.guard.path
    }

    /// Relays clients until `cancel` (SIGINT, SIGTERM), the `--persist` idle time, or the hub
    /// connection ends; then stops accepting, removes the socket, resets the streams still open and
    /// closes the connection.
    pub async fn run(self, cancel: CancellationToken) -> Result<MuxEnd, MuxError> {
        let Self {
            client,
            conn,
            listener,
            guard,
            persist,
        } = self;
        let welcome = Arc::new(client.welcome.clone());
        let relays_cancel = cancel.child_token();
        let mut relays = JoinSet::new();
        let mut last_busy = Instant::now();
        let mut paused_until: Option<Instant> = None;
        let ended = loop {
            let idle_at = persist.map(|p| last_busy + p);
            tokio::select! {
                _ = cancel.cancelled() => break Ok(MuxEnd::Stopped),
                lost = client.closed() => break Err(MuxError::HubLost(lost)),
                accepted = listener.accept(), if paused_until.is_none() && relays.len() < MAX_CLIENTS => {
                    match accepted {
                        Ok((stream, _)) => {
                            last_busy = Instant::now();
                            relays.spawn(relay::serve(
                                conn.clone(),
                                stream,
                                welcome.clone(),
                                relays_cancel.child_token(),
                            ));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "mux cannot accept a client; retrying shortly");
                            paused_until = Some(Instant::now() + ACCEPT_RETRY);
                        }
                    }
                }
                _ = tokio::time::sleep_until(paused_until.unwrap_or_else(Instant::now)), if paused_until.is_some() => {
                    paused_until = None;
                }
                Some(joined) = relays.join_next() => {
                    last_busy = Instant::now();
                    if let Err(e) = joined && e.is_panic() {
                        tracing::error!(error = %e, "mux relay panicked");
                    }
                }
                _ = tokio::time::sleep_until(idle_at.unwrap_or(last_busy)), if idle_at.is_some() && relays.is_empty() => {
                    break Ok(MuxEnd::Idle);
                }
            }
        };
        drop(listener);
        drop(guard);
        relays_cancel.cancel();
        let _ = tokio::time::timeout(RELAY_DRAIN, async {
            while relays.join_next().await.is_some() {}
        })
        .await;
        relays.abort_all();
        client.close().await;
        ended
    }
}

/// `flotilla mux --stop`: SIGTERM to the mux answering on `path`, then wait (bounded) until its
/// socket is gone. Returns its pid, or `None` when no mux answers.
pub async fn stop(path: &Path, deadline: Duration) -> Result<Option<i32>, String> {
    let pid = match probe(path).await {
        Probe::Answered(Answer { pid: Some(pid), .. }) => pid,
        Probe::Answered(_) => return Err("the mux's process id is unknown".into()),
        _ => return Ok(None),
    };
    // SAFETY: kill(2) with a pid the kernel reported for a socket of our own uid; no memory.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        return Err(format!(
            "cannot signal pid {pid}: {}",
            std::io::Error::last_os_error()
        ));
    }
    let until = Instant::now() + deadline;
    // The mux removes its socket as it exits; another process gives us no event to wait on, so
    // poll the path briefly.
    while std::fs::symlink_metadata(path).is_ok() {
        if Instant::now() > until {
            return Err(format!(
                "pid {pid} still holds {} after {} s",
                path.display(),
                deadline.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(Some(pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(dir: &Path, hubs: &[&str]) -> Login {
        Login {
            dir: dir.to_owned(),
            hubs: hubs.iter().map(|h| h.to_string()).collect(),
        }
    }

    #[test]
    fn each_login_and_hub_list_has_its_own_short_socket() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir(&a).expect("a");
        std::fs::create_dir(&b).expect("b");
        let one = socket_name(&login(&a, &["hub:7443"]));
        assert_eq!(one, socket_name(&login(&a, &["hub:7443"])), "stable");
        // The same directory by another spelling is the same login.
        assert_eq!(
            one,
            socket_name(&login(&a.join("..").join("a"), &["hub:7443"]))
        );
        assert_ne!(one, socket_name(&login(&b, &["hub:7443"])));
        assert_ne!(one, socket_name(&login(&a, &["other:7443"])));
        assert_ne!(one, socket_name(&login(&a, &["hub:7443", "hub2:7443"])));
        assert_eq!(one.len(), "mux-.sock".len() + HASH_DIGITS);
        assert!(one.starts_with("mux-") && one.ends_with(".sock"), "{one}");
    }

    #[test]
    fn a_loose_socket_directory_is_tightened_and_a_symlink_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("flotilla");
        prepare_dir(&dir, true).expect("created");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("loosen");
        prepare_dir(&dir, true).expect("tightened");
        assert_eq!(mode(&dir), 0o700);
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).expect("symlink");
        match prepare_dir(&link, true) {
            Err(MuxError::UnsafeDir { why, .. }) => assert!(why.contains("symlink"), "{why}"),
            other => panic!("a symlinked socket directory was accepted: {other:?}"),
        }
    }

    #[tokio::test]
    async fn probes_tell_absent_stale_and_foreign_files_apart() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("mux.sock");
        assert!(matches!(probe(&path).await, Probe::Absent));
        // A socket whose listener is gone, as a killed mux leaves it.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        assert!(matches!(probe(&path).await, Probe::Stale(_)));
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").expect("file");
        assert!(matches!(probe(&file).await, Probe::NotSocket));
    }

    #[tokio::test]
    async fn a_mux_removes_its_own_stale_socket_but_nothing_else() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // No identity here: start gets as far as dialling, after the socket checks.
        let no_login = login(&tmp.path().join("login"), &["127.0.0.1:9"]);
        let opts = |socket: PathBuf| MuxOptions {
            socket,
            default_dir: false,
            persist: None,
        };
        let file = tmp.path().join("notes.txt");
        std::fs::write(&file, b"keep me").expect("file");
        match Master::start(&no_login, &opts(file.clone())).await {
            Err(MuxError::Occupied { why, .. }) => assert_eq!(why, "not a socket"),
            Err(other) => panic!("expected occupied, got {other}"),
            Ok(_) => panic!("a mux started on a regular file"),
        }
        assert_eq!(std::fs::read(&file).expect("still there"), b"keep me");

        let stale = tmp.path().join("run").join("mux.sock");
        std::fs::create_dir(tmp.path().join("run")).expect("dir");
        drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
        match Master::start(&no_login, &opts(stale.clone())).await {
            Err(MuxError::Dial(_)) => {}
            Err(other) => panic!("expected a dial error, got {other}"),
            Ok(_) => panic!("a mux started without an identity"),
        }
        assert!(!stale.exists(), "the stale socket was removed");
    }

    #[tokio::test]
    async fn a_listener_that_says_nothing_useful_is_broken() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("mux.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            drop(stream);
        });
        match probe(&path).await {
            Probe::Broken(why) => assert!(why.contains("without a welcome"), "{why}"),
            other => panic!("expected broken, got {other}"),
        }
        server.await.expect("server");
    }
}
