//! One exec stream: the request sent, its events read ahead in a task, Ctrl-C turned into a cancel,
//! and the loop that renders until the summary.

use super::rendering::{RenderOptions, Renderer};
use super::{EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_USAGE};
use crate::client::{Client, ClientError, SendHalf};
use flotilla_wire::ErrorCode;
use flotilla_wire::exec::{ExecControl, ExecEvent, ExecRequest};
use flotilla_wire::io::{read_frame, write_frame};
use flotilla_wire::limits::{MAX_EXEC_FRAME, MAX_EXEC_REQUEST_FRAME};
use flotilla_wire::msg::StreamOpen;
use std::io::{self, Write};
use tokio::sync::mpsc;

/// Events read ahead of the renderer: a little slack, then back-pressure to the hub.
const READ_AHEAD: usize = 16;

/// An exec stream as events, over either link.
pub struct ExecSession {
    send: SendHalf,
    events: mpsc::Receiver<Result<ExecEvent, ClientError>>,
    reader: tokio::task::JoinHandle<()>,
}

impl ExecSession {
    /// Opens an exec stream and sends the request.
    pub async fn open(client: &Client, req: &ExecRequest) -> Result<Self, ClientError> {
        let link = client.link().clone();
        let (mut send, mut recv) = client.open_bi().await?;
        send.write_opening(&StreamOpen::Exec, req, MAX_EXEC_REQUEST_FRAME)
            .await
            .map_err(|e| link.stream_error(e))?;
        let (tx, events) = mpsc::channel(READ_AHEAD);
        // The reader owns the receive half so that a frame is never dropped half-read by a select.
        let reader = tokio::spawn(async move {
            loop {
                let ev = match read_frame::<ExecEvent, _>(&mut recv, MAX_EXEC_FRAME).await {
                    Ok(Some(ev)) => Ok(ev),
                    Ok(None) => return,
                    Err(e) => Err(link.stream_error(e)),
                };
                let stop = ev.is_err();
                if tx.send(ev).await.is_err() || stop {
                    return;
                }
            }
        });
        Ok(Self {
            send,
            events,
            reader,
        })
    }

    /// The next event; `None` when the hub finished the stream. Cancel-safe.
    pub async fn next(&mut self) -> Option<Result<ExecEvent, ClientError>> {
        self.events.recv().await
    }

    /// Asks the hub to cancel the job.
    pub async fn cancel(&mut self) {
        let _ = write_frame(&mut self.send, &ExecControl::Cancel, MAX_EXEC_FRAME).await;
    }
}

impl Drop for ExecSession {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Where Ctrl-C comes from: the terminal, or a channel in tests.
pub enum Interrupts<'a> {
    /// SIGINT.
    Signal(tokio::signal::unix::Signal),
    /// Each message is one Ctrl-C.
    Channel(&'a mut mpsc::Receiver<()>),
    /// None will come.
    Never,
}

impl Interrupts<'_> {
    /// SIGINT, or never if the handler cannot be installed.
    pub fn sigint() -> Self {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map(Self::Signal)
            .unwrap_or(Self::Never)
    }

    /// Cancel-safe.
    async fn recv(&mut self) -> Option<()> {
        match self {
            Self::Signal(s) => s.recv().await,
            Self::Channel(rx) => rx.recv().await,
            Self::Never => std::future::pending().await,
        }
    }
}

/// Runs `req`, rendering to `out` and `err`, until the summary. Returns the exit status: 0 only if
/// every target exited 0; [`EXIT_INTERRUPTED`] after Ctrl-C; [`EXIT_USAGE`] for a bad selector.
pub async fn run_exec(
    client: &Client,
    req: &ExecRequest,
    opts: RenderOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
    mut interrupts: Interrupts<'_>,
) -> Result<u8, ClientError> {
    let mut session = ExecSession::open(client, req).await?;
    let mut r = Renderer::new(opts);
    let mut interrupted = false;
    let io_err = |e: io::Error| ClientError::Stream(format!("cannot write output: {e}"));
    loop {
        tokio::select! {
            ev = session.next() => {
                let ev = match ev {
                    Some(ev) => ev?,
                    None => return Err(ClientError::Stream("hub ended the job stream before its summary".into())),
                };
                if let ExecEvent::Refused(refusal) = &ev {
                    r.handle(ev.clone(), out, err).map_err(io_err)?;
                    let status = if matches!(refusal.code, ErrorCode::BadRequest | ErrorCode::NotFound) { EXIT_USAGE } else { 1 };
                    if !opts.json {
                        writeln!(err, "flotilla: {}", crate::util::Escaped(&refusal.message)).map_err(io_err)?;
                    }
                    return Ok(status);
                }
                let done = matches!(ev, ExecEvent::Done(_));
                let idle = session.events.is_empty();
                let written = r.handle(ev, out, err).and_then(|()| if done || idle { out.flush() } else { Ok(()) });
                if let Err(e) = written {
                    // Our output is gone: nobody reads the rest, stop the job. A closed pipe
                    // (`| head`) ends quietly, as SIGPIPE would.
                    session.cancel().await;
                    if e.kind() == io::ErrorKind::BrokenPipe {
                        return Ok(EXIT_BROKEN_PIPE);
                    }
                    return Err(io_err(e));
                }
                if done {
                    return Ok(if interrupted { EXIT_INTERRUPTED } else { r.exit_status() });
                }
            }
            Some(()) = interrupts.recv() => {
                if interrupted {
                    return Ok(EXIT_INTERRUPTED);
                }
                interrupted = true;
                session.cancel().await;
                if !opts.json {
                    let job = r.job().map(|j| j.to_string()).unwrap_or_default();
                    let _ = writeln!(err, "cancelling job {job}: agents are stopping their commands (Ctrl-C again to quit now)");
                }
            }
        }
    }
}
