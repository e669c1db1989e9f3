//! The console's link to the hub: dial with the operator identity, one stream per request, and a
//! subscription stream for fleet events.

use flotilla_certs::dial::{self, DialError};
use flotilla_certs::{IDENTITY_STEM, Identity};
use flotilla_wire::io::{FrameError, read_frame, write_frame};
use flotilla_wire::limits::{MAX_CONTROL_FRAME, MAX_EVENTS_FRAME, MAX_REQUEST_FRAME};
use flotilla_wire::msg::{FleetEvent, Hello, OpRequest, OpResponse, Refusal, StreamOpen, Welcome};
use flotilla_wire::{ErrorCode, PROTOCOL_VERSION};
use std::path::{Path, PathBuf};

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
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    /// What the hub said about us.
    pub welcome: Welcome,
}

fn stream_err(conn: &quinn::Connection, e: impl std::fmt::Display) -> ClientError {
    match conn.close_reason() {
        Some(reason) => ClientError::Dial(dial::explain(&reason)),
        None => ClientError::Stream(e.to_string()),
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

impl Client {
    /// Dials the hub and says hello.
    pub async fn connect(login: &Login) -> Result<Self, ClientError> {
        let identity = Identity::load(&login.dir, IDENTITY_STEM)?;
        let config = dial::identity_config(&identity)?;
        let endpoint = dial::client_endpoint(dial::wants_ipv6(&login.hubs))?;
        let (conn, _send, _recv, welcome) =
            dial::hello(&endpoint, &login.hubs, config, local_hello()).await?;
        Ok(Self {
            endpoint,
            conn,
            welcome,
        })
    }

    /// Sends one request on its own stream and reads the reply; a hub refusal becomes an error.
    pub async fn request(&self, req: &OpRequest) -> Result<OpResponse, ClientError> {
        let (mut send, mut recv) = self
            .conn
            .open_bi()
            .await
            .map_err(|e| ClientError::Dial(dial::explain(&e)))?;
        write_frame(&mut send, &StreamOpen::Request, MAX_CONTROL_FRAME)
            .await
            .map_err(|e| stream_err(&self.conn, e))?;
        write_frame(&mut send, req, MAX_REQUEST_FRAME)
            .await
            .map_err(|e| stream_err(&self.conn, e))?;
        let _ = send.finish();
        match flotilla_wire::io::read_response(&mut recv).await {
            Ok(Some(OpResponse::Error(r))) => Err(ClientError::Refused(r)),
            Ok(Some(resp)) => Ok(resp),
            Ok(None) => Err(stream_err(
                &self.conn,
                "hub closed the request stream without answering",
            )),
            Err(e) => Err(stream_err(&self.conn, e)),
        }
    }

    /// Opens a stream of `kind` with its opening frame sent; the caller speaks that kind's protocol
    /// (file listings, watches and copies).
    pub async fn open_stream(
        &self,
        kind: &StreamOpen,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), ClientError> {
        let (mut send, recv) = self
            .conn
            .open_bi()
            .await
            .map_err(|e| ClientError::Dial(dial::explain(&e)))?;
        write_frame(&mut send, kind, MAX_CONTROL_FRAME)
            .await
            .map_err(|e| stream_err(&self.conn, e))?;
        Ok((send, recv))
    }

    /// Why the connection to the hub ended, if it did.
    pub fn closed_reason(&self) -> Option<ClientError> {
        self.conn
            .close_reason()
            .map(|r| ClientError::Dial(dial::explain(&r)))
    }

    /// Opens a subscription to fleet events; the first event is a snapshot of the fleet.
    pub async fn subscribe(&self) -> Result<Events, ClientError> {
        let (mut send, recv) = self
            .conn
            .open_bi()
            .await
            .map_err(|e| ClientError::Dial(dial::explain(&e)))?;
        write_frame(&mut send, &StreamOpen::Events, MAX_CONTROL_FRAME)
            .await
            .map_err(|e| stream_err(&self.conn, e))?;
        Ok(Events {
            _send: send,
            recv,
            conn: self.conn.clone(),
        })
    }

    /// Starts watching an agent (1 s samples while the returned stream lives).
    pub async fn watch(&self, query: &str) -> Result<quinn::SendStream, ClientError> {
        let (mut send, _recv) = self
            .conn
            .open_bi()
            .await
            .map_err(|e| ClientError::Dial(dial::explain(&e)))?;
        let open = StreamOpen::WatchAgent {
            query: query.to_string(),
        };
        write_frame(&mut send, &open, MAX_CONTROL_FRAME)
            .await
            .map_err(|e| stream_err(&self.conn, e))?;
        Ok(send)
    }

    /// The QUIC connection, for streams other modules open (exec, queries).
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Closes the connection cleanly.
    pub async fn close(&self) {
        self.conn.close(ErrorCode::Ok.as_u32().into(), b"bye");
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.endpoint.wait_idle())
            .await;
    }
}

/// A stream of fleet events.
pub struct Events {
    _send: quinn::SendStream,
    recv: quinn::RecvStream,
    conn: quinn::Connection,
}

impl Events {
    /// The next event; `Ok(None)` when the hub ends the subscription. Not cancel-safe.
    pub async fn next(&mut self) -> Result<Option<FleetEvent>, ClientError> {
        read_frame::<FleetEvent, _>(&mut self.recv, MAX_EVENTS_FRAME)
            .await
            .map_err(|e: FrameError| stream_err(&self.conn, e))
    }
}
