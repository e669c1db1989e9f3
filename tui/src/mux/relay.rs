//! One client of the mux: check its uid, send it the welcome, then copy bytes between its Unix
//! connection and one new QUIC stream on the hub connection until both directions end.
//!
//! Ends map across as the client would have made them on a QUIC stream of its own:
//! - the client shuts down its write half: the QUIC send side is finished (a request sent);
//! - the hub finishes its side: the Unix write half is shut down (the client reads the end);
//! - the client goes away (exits, is killed) while the hub still has something to say, or any
//!   error on either side: the QUIC stream is reset and stopped, as closing its connection would,
//!   so the hub cancels an exec job at once, and the Unix connection is dropped.
//!
//! The QUIC stream is opened on the client's first byte, so a probe (`flotilla mux --check`, a
//! client reading the welcome) costs the hub nothing.

use flotilla_wire::ErrorCode;
use flotilla_wire::io::write_frame;
use flotilla_wire::limits::MAX_CONTROL_FRAME;
use flotilla_wire::msg::{ServerOpen, Welcome};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Client-to-hub copy buffer. What clients send is small (requests, exec cancels); bulk data flows
/// the other way, in quinn's own chunks.
const UP_BUFFER: usize = 16 * 1024;
/// Largest chunk taken from quinn per Unix write: the size of an exec output frame.
const DOWN_CHUNK: usize = 128 * 1024;

/// Why a relay ended early.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    /// A process of another user connected.
    #[error("client of uid {0} refused: the mux serves its own user only")]
    Foreign(u32),
    /// The Unix side failed.
    #[error("client: {0}")]
    Client(std::io::Error),
    /// The client went away before the hub finished its side.
    #[error("client went away while the hub still had data")]
    Abandoned,
    /// The QUIC side failed (reset by the hub, connection lost).
    #[error("hub: {0}")]
    Hub(String),
    /// The mux is stopping.
    #[error("mux stopping")]
    Shutdown,
}

impl RelayError {
    /// The code we reset and stop the hub's stream with.
    fn code(&self) -> ErrorCode {
        match self {
            Self::Shutdown => ErrorCode::ShuttingDown,
            _ => ErrorCode::Cancelled,
        }
    }
}

/// Serves one accepted Unix connection to its end. Errors are the client's business (it sees its
/// connection end) and are logged at debug, except a client of another uid.
pub(super) async fn serve(
    conn: quinn::Connection,
    unix: UnixStream,
    welcome: Arc<Welcome>,
    cancel: CancellationToken,
) {
    let cred = unix.peer_cred();
    let pid = cred.as_ref().ok().and_then(|c| c.pid());
    let span = tracing::debug_span!("mux_client", pid);
    async move {
        let result = match cred {
            Ok(c) if c.uid() == super::euid() => relay(conn, unix, &welcome, cancel).await,
            Ok(c) => Err(RelayError::Foreign(c.uid())),
            Err(e) => Err(RelayError::Client(e)),
        };
        match result {
            Ok(streamed) => tracing::debug!(streamed, "client done"),
            Err(e @ RelayError::Foreign(_)) => tracing::warn!(error = %e, "refused a client"),
            Err(e) => tracing::debug!(error = %e, "client ended early"),
        }
    }
    .instrument(span)
    .await
}

/// Welcomes a client of our uid and relays its stream. Returns whether a QUIC stream was opened
/// (false for a probe).
async fn relay(
    conn: quinn::Connection,
    mut unix: UnixStream,
    welcome: &Welcome,
    cancel: CancellationToken,
) -> Result<bool, RelayError> {
    write_frame(
        &mut unix,
        &ServerOpen::Welcome(welcome.clone()),
        MAX_CONTROL_FRAME,
    )
    .await
    .map_err(|e| RelayError::Client(std::io::Error::other(e)))?;
    let (mut ur, mut uw) = unix.into_split();
    let mut buf = vec![0u8; UP_BUFFER];
    let first = tokio::select! {
        _ = cancel.cancelled() => return Err(RelayError::Shutdown),
        n = ur.read(&mut buf) => n.map_err(RelayError::Client)?,
    };
    if first == 0 {
        return Ok(false);
    }
    let (mut send, mut recv) = tokio::select! {
        _ = cancel.cancelled() => return Err(RelayError::Shutdown),
        opened = conn.open_bi() => opened.map_err(|e| RelayError::Hub(e.to_string()))?,
    };
    let result = tokio::select! {
        _ = cancel.cancelled() => Err(RelayError::Shutdown),
        r = pump(&mut ur, &mut uw, &mut send, &mut recv, &mut buf, first) => r,
    };
    if let Err(e) = &result {
        // Dropping a quinn stream would finish it cleanly, and the hub would take a half-sent
        // request or an abandoned exec for a normal end.
        let code = e.code().as_u32().into();
        let _ = send.reset(code);
        let _ = recv.stop(code);
    }
    result.map(|()| true)
}

/// Copies both ways until both directions ended cleanly, or the first error. `first` bytes of
/// `buf` were already read from the client. Not cancel-safe (bytes in flight are lost), so the
/// caller resets the streams when it drops this.
async fn pump(
    ur: &mut OwnedReadHalf,
    uw: &mut OwnedWriteHalf,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    buf: &mut [u8],
    first: usize,
) -> Result<(), RelayError> {
    let hub_done = AtomicBool::new(false);
    let up = async {
        let mut n = first;
        loop {
            if n == 0 {
                if !hub_done.load(Ordering::Acquire) && hung_up(ur) {
                    return Err(RelayError::Abandoned);
                }
                let _ = send.finish();
                return Ok(());
            }
            send.write_all(&buf[..n])
                .await
                .map_err(|e| RelayError::Hub(e.to_string()))?;
            n = ur.read(buf).await.map_err(RelayError::Client)?;
        }
    };
    let down = async {
        while let Some(chunk) = recv
            .read_chunk(DOWN_CHUNK, true)
            .await
            .map_err(|e| RelayError::Hub(e.to_string()))?
        {
            uw.write_all(&chunk.bytes)
                .await
                .map_err(RelayError::Client)?;
        }
        hub_done.store(true, Ordering::Release);
        uw.shutdown().await.map_err(RelayError::Client)
    };
    tokio::try_join!(up, down).map(drop)
}

/// Whether the client closed its whole connection rather than only its write half. Both read as
/// end of file; only a full close also shuts our sending side, which poll reports as a hang-up.
fn hung_up(ur: &OwnedReadHalf) -> bool {
    let stream: &UnixStream = ur.as_ref();
    let mut fd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    // SAFETY: one pollfd we own, for a descriptor that stays open while `ur` is borrowed; a zero
    // timeout never blocks.
    let ready = unsafe { libc::poll(&mut fd, 1, 0) };
    ready == 1 && fd.revents & libc::POLLHUP != 0
}
