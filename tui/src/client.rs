//! The console's link to the hub: dial with the operator identity, one stream per request, and a
//! subscription stream for fleet events.
//!
//! A [`Client`] reaches the hub over one of two [`Link`]s: its own QUIC connection, or a running
//! `flotilla mux` (see [`crate::mux`]) that holds one for this login, in which case every stream is
//! a new Unix connection to the mux and the bytes on it are exactly those of a QUIC stream. Streams
//! are [`SendHalf`] and [`RecvHalf`], which work the same over either link; the console, `watch`
//! and file transfers use the QUIC-only calls and always dial.

use flotilla_certs::dial::{self, DialError};
use flotilla_certs::{IDENTITY_STEM, Identity};
use flotilla_wire::io::{FrameError, read_frame, write_frame};
use flotilla_wire::limits::{MAX_CONTROL_FRAME, MAX_EVENTS_FRAME, MAX_REQUEST_FRAME};
use flotilla_wire::msg::{FleetEvent, Hello, OpRequest, OpResponse, Refusal, StreamOpen, Welcome};
use flotilla_wire::{ErrorCode, PROTOCOL_VERSION};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// Why talking to the hub failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No login identity where we looked.
    #[error("no login in {0}: run `flotilla login --token …` (or pass --login-dir)")]
    NoLogin(PathBuf),
    /// The identity files are unreadable.
    #[error(transparent)]
    Cert(#[from] flotilla_certs::CertError),
    /// Dialling failed or the hub refused.
    #[error(transparent)]
    Dial(#[from] DialError),
    /// The hub refused the request.
    #[error("{}", .0.message)]
    Refused(Refusal),
    /// A stream broke.
    #[error("hub stream: {0}")]
    Stream(String),
    /// A stream through the mux broke: the mux stopped, or lost the hub (its output says which).
    #[error("stream through the mux at {}: {reason} (see the mux's output, or pass --no-mux)", socket.display())]
    MuxStream {
        /// The mux's socket.
        socket: PathBuf,
        /// What the stream reported.
        reason: String,
    },
    /// A call that needs our own QUIC connection was made on a client that goes through the mux.
    #[error("{0} needs a direct connection to the hub, not the mux")]
    NeedsDirect(&'static str),
    /// Writing the command's output failed (its reader went away, for one).
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
}

impl ClientError {
    /// The hub's refusal code, if it refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Refused(r) => Some(r.code),
            Self::Dial(d) => d.code(),
            _ => None,
        }
    }
}

/// Where the operator identity lives and which hub to dial.
#[derive(Clone, Debug)]
pub struct Login {
    /// Directory with identity.key, identity.pem, ca.pem and hubs.
    pub dir: PathBuf,
    /// Hub addresses to dial (from `--hub`, env, config, else the login's own list).
    pub hubs: Vec<String>,
}

impl Login {
    /// Loads the login in `dir`, with `hub_override` replacing its hub list.
    pub fn load(dir: &Path, hub_override: Option<String>) -> Result<Self, ClientError> {
        if !Identity::exists(dir, IDENTITY_STEM) {
            return Err(ClientError::NoLogin(dir.to_owned()));
        }
        let hubs = match hub_override {
            Some(h) => vec![h],
            None => Identity::load_hubs(dir)?,
        };
        Ok(Self {
            dir: dir.to_owned(),
            hubs,
        })
    }
}

/// A connected operator session.
pub struct Client {
    link: Link,
    /// The Unix connection [`Client::via_mux`] opened to read the welcome, kept for the first
    /// stream so a one-shot command connects to the mux once.
    spare: Mutex<Option<UnixStream>>,
    /// What the hub said about us.
    pub welcome: Welcome,
}

/// How a [`Client`] reaches the hub. Cheap to clone: stream readers keep one to explain errors.
#[derive(Clone, Debug)]
pub enum Link {
    /// Our own QUIC connection.
    Direct {
        /// The endpoint, to wait for the close to go out.
        endpoint: quinn::Endpoint,
        /// The connection.
        conn: quinn::Connection,
    },
    /// A `flotilla mux` listening on this socket holds the connection.
    Mux {
        /// The mux's socket.
        socket: Arc<Path>,
    },
}

impl Link {
    /// The error for a stream that failed with `e`: the connection's close reason when it closed
    /// (the hub's words), else the stream's own error.
    pub fn stream_error(&self, e: impl std::fmt::Display) -> ClientError {
        match self {
            Self::Direct { conn, .. } => match conn.close_reason() {
                Some(reason) => ClientError::Dial(dial::explain(&reason)),
                None => ClientError::Stream(e.to_string()),
            },
            Self::Mux { socket } => ClientError::MuxStream {
                socket: socket.to_path_buf(),
                reason: e.to_string(),
            },
        }
    }

    /// Whether streams go through a mux.
    pub fn is_mux(&self) -> bool {
        matches!(self, Self::Mux { .. })
    }
}

/// The sending half of a stream to the hub, over either link. Shut it down
/// ([`AsyncWriteExt::shutdown`]) to end our side: that finishes a QUIC stream, and half-closes a
/// Unix connection, which the mux turns into a finish.
#[derive(Debug)]
pub enum SendHalf {
    /// A QUIC stream of our own connection.
    Quic(quinn::SendStream),
    /// A Unix connection to the mux.
    Mux(OwnedWriteHalf),
}

/// The receiving half of a stream from the hub, over either link.
#[derive(Debug)]
pub enum RecvHalf {
    /// A QUIC stream of our own connection.
    Quic(quinn::RecvStream),
    /// A Unix connection to the mux.
    Mux(OwnedReadHalf),
}

impl SendHalf {
    /// Writes a stream's opening frame and its first message in one write, so that they leave in
    /// one packet and, through the mux, in one relay step.
    pub async fn write_opening<T: serde::Serialize>(
        &mut self,
        kind: &StreamOpen,
        first: &T,
        max: usize,
    ) -> Result<(), FrameError> {
        let mut buf = Vec::new();
        write_frame(&mut buf, kind, MAX_CONTROL_FRAME).await?;
        write_frame(&mut buf, first, max).await?;
        self.write_all(&buf).await?;
        Ok(())
    }
}

impl AsyncWrite for SendHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Quic(s) => AsyncWrite::poll_write(Pin::new(s), cx, buf),
            Self::Mux(s) => AsyncWrite::poll_write(Pin::new(s), cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Quic(s) => AsyncWrite::poll_flush(Pin::new(s), cx),
            Self::Mux(s) => AsyncWrite::poll_flush(Pin::new(s), cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Quic(s) => AsyncWrite::poll_shutdown(Pin::new(s), cx),
            Self::Mux(s) => AsyncWrite::poll_shutdown(Pin::new(s), cx),
        }
    }
}

impl AsyncRead for RecvHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Quic(s) => AsyncRead::poll_read(Pin::new(s), cx, buf),
            Self::Mux(s) => AsyncRead::poll_read(Pin::new(s), cx, buf),
        }
    }
}

/// What the console says about itself in hello.
pub fn local_hello() -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        software_version: env!("CARGO_PKG_VERSION").into(),
        hostname: hostname(),
        os: std::env::consts::OS.into(),
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into a buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// How long a one-shot command waits, after closing its connection, for the close to leave.
///
/// `conn.close()` only queues the CONNECTION_CLOSE; quinn's driver task sends it the next time it
/// runs, within microseconds on an idle machine. `endpoint.wait_idle()` however resolves only after
/// QUIC's draining period (three probe timeouts, ~80 ms on loopback), so a wait on it always runs
/// to this cap. 1 ms leaves the driver a scheduling slot on a busy 2-core machine; if the close
/// still has not gone out, the hub drops the session at its idle timeout, which costs it a little
/// memory and us nothing.
pub const ONE_SHOT_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_millis(1);

impl Client {
    /// Dials the hub and says hello.
    pub async fn connect(login: &Login) -> Result<Self, ClientError> {
        Self::dial(login, false).await
    }

    /// Dials the hub for uploads and downloads: a connection with bulk-lane transport settings
    /// (larger packets, see [`dial::bulk_transport`]), which the hub tells apart by its initial
    /// connection ID. It says hello like any operator connection.
    pub async fn connect_bulk(login: &Login) -> Result<Self, ClientError> {
        Self::dial(login, true).await
    }

    async fn dial(login: &Login, bulk: bool) -> Result<Self, ClientError> {
        let identity = Identity::load(&login.dir, IDENTITY_STEM)?;
        let config = if bulk {
            dial::identity_bulk_config(&identity)?
        } else {
            dial::identity_config(&identity)?
        };
        let endpoint = dial::client_endpoint(dial::wants_ipv6(&login.hubs))?;
        let (conn, _send, _recv, welcome) =
            dial::hello(&endpoint, &login.hubs, config, local_hello()).await?;
        Ok(Self {
            link: Link::Direct { endpoint, conn },
            spare: Mutex::new(None),
            welcome,
        })
    }

    /// A client whose streams go through the mux at `socket`, if one of ours answers there with a
    /// welcome in our protocol version; `None` otherwise (no socket, a stale one, another user's,
    /// a mux that lost its hub), after a debug line saying why, so the caller dials instead.
    pub async fn via_mux(socket: &Path) -> Option<Self> {
        match crate::mux::probe(socket).await {
            crate::mux::Probe::Answered(answer) => {
                if answer.welcome.protocol_version != PROTOCOL_VERSION {
                    tracing::debug!(socket = %socket.display(), theirs = answer.welcome.protocol_version, ours = PROTOCOL_VERSION, "mux speaks another protocol version; dialling the hub");
                    return None;
                }
                tracing::debug!(socket = %socket.display(), pid = ?answer.pid, "using the mux");
                Some(Self {
                    link: Link::Mux {
                        socket: Arc::from(socket),
                    },
                    spare: Mutex::new(Some(answer.stream)),
                    welcome: answer.welcome,
                })
            }
            crate::mux::Probe::Foreign { uid } => {
                tracing::warn!(socket = %socket.display(), uid, "a process of another user listens on the mux socket; not using it");
                None
            }
            other => {
                tracing::debug!(socket = %socket.display(), state = %other, "no usable mux; dialling the hub");
                None
            }
        }
    }

    /// The mux at `socket` when one answers (unless `no_mux`), else a direct connection: what
    /// one-shot commands use.
    pub async fn connect_one_shot(
        login: &Login,
        socket: &Path,
        no_mux: bool,
    ) -> Result<Self, ClientError> {
        if !no_mux && let Some(client) = Self::via_mux(socket).await {
            return Ok(client);
        }
        Self::connect(login).await
    }

    /// How this client reaches the hub.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Opens a bidirectional stream to the hub: a QUIC stream of our connection, or a new Unix
    /// connection to the mux (whose welcome is read and checked first).
    pub async fn open_bi(&self) -> Result<(SendHalf, RecvHalf), ClientError> {
        match &self.link {
            Link::Direct { conn, .. } => {
                let (send, recv) = conn
                    .open_bi()
                    .await
                    .map_err(|e| ClientError::Dial(dial::explain(&e)))?;
                Ok((SendHalf::Quic(send), RecvHalf::Quic(recv)))
            }
            Link::Mux { socket } => {
                let spare = self.spare.lock().ok().and_then(|mut s| s.take());
                let stream = match spare {
                    Some(stream) => stream,
                    None => crate::mux::open(socket)
                        .await
                        .map_err(|e| self.link.stream_error(e))?,
                };
                let (recv, send) = stream.into_split();
                Ok((SendHalf::Mux(send), RecvHalf::Mux(recv)))
            }
        }
    }

    fn conn(&self, what: &'static str) -> Result<&quinn::Connection, ClientError> {
        match &self.link {
            Link::Direct { conn, .. } => Ok(conn),
            Link::Mux { .. } => Err(ClientError::NeedsDirect(what)),
        }
    }

    /// Sends one request on its own stream and reads the reply; a hub refusal becomes an error.
    pub async fn request(&self, req: &OpRequest) -> Result<OpResponse, ClientError> {
        let (mut send, mut recv) = self.open_bi().await?;
        send.write_opening(&StreamOpen::Request, req, MAX_REQUEST_FRAME)
            .await
            .map_err(|e| self.link.stream_error(e))?;
        let _ = send.shutdown().await;
        match flotilla_wire::io::read_response(&mut recv).await {
            Ok(Some(OpResponse::Error(r))) => Err(ClientError::Refused(r)),
            Ok(Some(resp)) => Ok(resp),
            Ok(None) => Err(self
                .link
                .stream_error("hub closed the request stream without answering")),
            Err(e) => Err(self.link.stream_error(e)),
        }
    }

    /// Opens a stream of `kind` with its opening frame sent; the caller speaks that kind's protocol
    /// (file listings, watches and copies). Direct connections only.
    pub async fn open_stream(
        &self,
        kind: &StreamOpen,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), ClientError> {
        let conn = self.conn("a file stream")?;
        let (mut send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| ClientError::Dial(dial::explain(&e)))?;
        write_frame(&mut send, kind, MAX_CONTROL_FRAME)
            .await
            .map_err(|e| self.link.stream_error(e))?;
        Ok((send, recv))
    }

    /// Why the connection to the hub ended, if it did (always `None` through the mux, whose
    /// connection is not ours to watch).
    pub fn closed_reason(&self) -> Option<ClientError> {
        match &self.link {
            Link::Direct { conn, .. } => conn
                .close_reason()
                .map(|r| ClientError::Dial(dial::explain(&r))),
            Link::Mux { .. } => None,
        }
    }

    /// Opens a subscription to fleet events; the first event is a snapshot of the fleet. Direct
    /// connections only.
    pub async fn subscribe(&self) -> Result<Events, ClientError> {
        let conn = self.conn("a fleet event subscription")?;
        let (mut send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| ClientError::Dial(dial::explain(&e)))?;
        write_frame(&mut send, &StreamOpen::Events, MAX_CONTROL_FRAME)
            .await
            .map_err(|e| self.link.stream_error(e))?;
        Ok(Events {
            _send: send,
            recv,
            link: self.link.clone(),
        })
    }

    /// Starts watching an agent (1 s samples while the returned stream lives). Direct connections
    /// only.
    pub async fn watch(&self, query: &str) -> Result<quinn::SendStream, ClientError> {
        let conn = self.conn("watching an agent")?;
        let (mut send, _recv) = conn
            .open_bi()
            .await
            .map_err(|e| ClientError::Dial(dial::explain(&e)))?;
        let open = StreamOpen::WatchAgent {
            query: query.to_string(),
        };
        write_frame(&mut send, &open, MAX_CONTROL_FRAME)
            .await
            .map_err(|e| self.link.stream_error(e))?;
        Ok(send)
    }

    /// Closes the connection and waits at most `limit` for the close to go out, instead of the
    /// full draining period (three probe timeouts, ~80 ms on loopback) that [`Client::close`]
    /// waits: for one-shot commands whose exit time counts (see [`ONE_SHOT_CLOSE_WAIT`]). Through
    /// the mux there is nothing to close: the mux keeps its connection.
    pub async fn close_within(&self, limit: std::time::Duration) {
        if let Link::Direct { endpoint, conn } = &self.link {
            conn.close(ErrorCode::Ok.as_u32().into(), b"bye");
            let _ = tokio::time::timeout(limit, endpoint.wait_idle()).await;
        }
    }

    /// Closes the connection cleanly (nothing to do through the mux).
    pub async fn close(&self) {
        self.close_within(std::time::Duration::from_secs(1)).await;
    }

    /// Resolves when our own connection closes (never, through the mux). Cancel-safe.
    pub async fn closed(&self) -> ClientError {
        match &self.link {
            Link::Direct { conn, .. } => ClientError::Dial(dial::explain(&conn.closed().await)),
            Link::Mux { .. } => std::future::pending().await,
        }
    }
}

/// A stream of fleet events.
pub struct Events {
    _send: quinn::SendStream,
    recv: quinn::RecvStream,
    link: Link,
}

impl Events {
    /// The next event; `Ok(None)` when the hub ends the subscription. Not cancel-safe.
    pub async fn next(&mut self) -> Result<Option<FleetEvent>, ClientError> {
        read_frame::<FleetEvent, _>(&mut self.recv, MAX_EVENTS_FRAME)
            .await
            .map_err(|e: FrameError| self.link.stream_error(e))
    }
}
