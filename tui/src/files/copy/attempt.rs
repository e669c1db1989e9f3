//! One try at one file's transfer: the hub's frames read in a task of their own, and the three
//! shapes of a copy (agent to agent, upload, download) with what each end does on a cancel.

use super::{Attempt, CopyEvent, Job, retry};
use crate::client::Client;
use crate::files::local::{LocalSink, LocalSource, meta_of};
use crate::files::{FilesError, Place};
use flotilla_wire::files::{
    CopyEnd, CopyRequest, TransferDone, TransferError, TransferErrorKind, TransferFrame, WriteKind,
};
use flotilla_wire::io::{FrameError, read_frame, write_frame};
use flotilla_wire::limits::{MAX_CONTROL_FRAME, MAX_TRANSFER_FRAME};
use flotilla_wire::msg::StreamOpen;
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Frames read ahead from the hub by a copy's reader task.
const FRAME_QUEUE: usize = 8;
/// Chunks read ahead of the network, or waiting for the disk.
const PIPELINE_DEPTH: usize = 4;
/// Bytes between two acknowledgements a download sends the hub.
const ACK_EVERY: u64 = 1024 * 1024;
/// Time the hub gets to confirm a cancel (both ends cleaned).
const CANCEL_WAIT: Duration = Duration::from_secs(15);
/// Time to wait for the hub's reason after it stopped reading an upload: longer than the hub
/// itself waits (10 s) for a destination that stopped taking data to say why.
const VERDICT_WAIT: Duration = Duration::from_secs(15);

/// Reads frames from the hub in a task of its own, so waiting for one never races a cancel.
struct Frames {
    rx: mpsc::Receiver<Result<TransferFrame, String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Frames {
    fn spawn(mut recv: quinn::RecvStream) -> Self {
        let (tx, rx) = mpsc::channel(FRAME_QUEUE);
        let task = tokio::spawn(async move {
            loop {
                let r = read_frame::<TransferFrame, _>(&mut recv, MAX_TRANSFER_FRAME).await;
                let end = !matches!(r, Ok(Some(_)));
                let item = match r {
                    Ok(Some(f)) => Ok(f),
                    Ok(None) => Err("the hub ended the transfer stream".to_string()),
                    Err(e) => Err(reset_words(&e)),
                };
                if tx.send(item).await.is_err() || end {
                    return;
                }
            }
        });
        Self { rx, task }
    }

    /// The next frame, or why there is none. Cancel-safe.
    async fn next(&mut self) -> Result<TransferFrame, String> {
        self.rx
            .recv()
            .await
            .unwrap_or_else(|| Err("the hub ended the transfer stream".into()))
    }
}

impl Drop for Frames {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Words for a broken transfer stream; a reset carries the hub's code.
fn reset_words(e: &FrameError) -> String {
    if let FrameError::Io(io) = e
        && let Some(quinn::ReadError::Reset(code)) = io
            .get_ref()
            .and_then(|i| i.downcast_ref::<quinn::ReadError>())
        && let Some(code) = flotilla_wire::ErrorCode::from_u32(code.into_inner())
    {
        return format!("the hub stopped the transfer ({code})");
    }
    format!("transfer stream: {e}")
}

async fn open_copy(
    client: &Client,
    req: &CopyRequest,
) -> Result<(quinn::SendStream, Frames), Attempt> {
    let (mut send, recv) = client.open_stream(&StreamOpen::Copy).await.map_err(retry)?;
    write_frame(&mut send, req, MAX_CONTROL_FRAME)
        .await
        .map_err(retry)?;
    Ok((send, Frames::spawn(recv)))
}

fn agent_end(p: &Place) -> CopyEnd {
    match p {
        Place::Agent { agent, path } => CopyEnd::Agent {
            agent: agent.clone(),
            path: path.clone(),
        },
        Place::Local(path) => CopyEnd::Local {
            path: path.display().to_string(),
            meta: None,
        },
    }
}

/// A frame the hub should not have sent at this point of the exchange: a protocol error, final.
fn unexpected(frame: &TransferFrame, when: &str) -> Attempt {
    Attempt::Fatal(FilesError::Transfer(TransferError::new(
        TransferErrorKind::Protocol,
        format!("hub sent {frame:?} {when}"),
    )))
}

/// Sends `Cancel` and waits for the hub to confirm both ends are clean.
async fn cancel_remote(send: &mut quinn::SendStream, frames: &mut Frames) -> Attempt {
    let _ = write_frame(send, &TransferFrame::Cancel, MAX_TRANSFER_FRAME).await;
    let wait = async {
        loop {
            match frames.next().await {
                Ok(TransferFrame::Cancelled) => return Attempt::Cancelled,
                Ok(TransferFrame::Failed(e)) if e.kind == TransferErrorKind::Cancelled => {
                    return Attempt::Fatal(FilesError::Transfer(e));
                }
                Ok(TransferFrame::Done(_)) => return Attempt::Cancelled,
                Ok(_) => {}
                Err(_) => return Attempt::Cancelled,
            }
        }
    };
    tokio::time::timeout(CANCEL_WAIT, wait)
        .await
        .unwrap_or(Attempt::Cancelled)
}

/// Agent to agent (or making a directory on an agent): the hub moves the data; this only watches.
pub(super) async fn attempt_remote(
    client: &Client,
    job: &Job<'_>,
    cancel: &CancellationToken,
    on_event: &mut (dyn FnMut(&CopyEvent) + Send),
) -> Result<TransferDone, Attempt> {
    let req = CopyRequest {
        transfer: job.transfer,
        src: agent_end(job.src),
        dst: agent_end(job.dst),
        kind: job.kind,
    };
    let (mut send, mut frames) = open_copy(client, &req).await?;
    let mut size = 0;
    loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => return Err(cancel_remote(&mut send, &mut frames).await),
            f = frames.next() => f.map_err(retry)?,
        };
        match frame {
            TransferFrame::Started(s) => {
                size = s.size;
                on_event(&job.started(s.size, s.offset, s.discarded));
            }
            TransferFrame::Progress { written } => on_event(&job.progress(written, size)),
            TransferFrame::Done(d) => {
                let _ = send.finish();
                return Ok(d);
            }
            TransferFrame::Failed(e) => return Err(e.into()),
            TransferFrame::Cancelled => return Err(Attempt::Cancelled),
            other => {
                return Err(unexpected(&other, "to a watching console"));
            }
        }
    }
}

/// What the blocking reader of an upload hands the network side.
enum Upload {
    Chunk(Vec<u8>),
    End(flotilla_wire::files::Digest),
    Failed(String),
}

/// Local file to an agent: this console is the source.
pub(super) async fn attempt_upload(
    client: &Client,
    job: &Job<'_>,
    path: &Path,
    cancel: &CancellationToken,
    on_event: &mut (dyn FnMut(&CopyEvent) + Send),
) -> Result<TransferDone, Attempt> {
    let local_err =
        |e: std::io::Error| Attempt::Fatal(FilesError::Local(format!("{}: {e}", path.display())));
    let abs = std::fs::canonicalize(path).map_err(local_err)?;
    let md = std::fs::metadata(&abs).map_err(local_err)?;
    if !md.is_file() {
        return Err(Attempt::Fatal(FilesError::Usage(format!(
            "{} is not a regular file",
            path.display()
        ))));
    }
    let meta = meta_of(&md);
    let req = CopyRequest {
        transfer: job.transfer,
        src: CopyEnd::Local {
            path: abs.display().to_string(),
            meta: Some(meta),
        },
        dst: agent_end(job.dst),
        kind: WriteKind::File,
    };
    let (mut send, mut frames) = open_copy(client, &req).await?;
    let (offset, prefix) = {
        let frame = tokio::select! {
            _ = cancel.cancelled() => return Err(cancel_remote(&mut send, &mut frames).await),
            f = frames.next() => f.map_err(retry)?,
        };
        match frame {
            TransferFrame::ReadFrom { offset, prefix } => (offset, prefix),
            TransferFrame::Failed(e) => return Err(e.into()),
            other => {
                return Err(unexpected(&other, "before the data"));
            }
        }
    };
    let p = abs.clone();
    let source = tokio::task::spawn_blocking(move || LocalSource::open(&p, meta, offset, prefix))
        .await
        .map_err(|e| Attempt::Fatal(FilesError::Local(e.to_string())))?
        .map_err(local_err)?;
    let start = source.start;
    write_frame(
        &mut send,
        &TransferFrame::Begin { offset: start },
        MAX_TRANSFER_FRAME,
    )
    .await
    .map_err(retry)?;
    let (tx, mut data) = mpsc::channel::<Upload>(PIPELINE_DEPTH);
    let reader = tokio::task::spawn_blocking(move || {
        let mut source = source;
        loop {
            let msg = match source.next_chunk() {
                Ok(Some(c)) => Upload::Chunk(c),
                Ok(None) => Upload::End(source.digest()),
                Err(e) => Upload::Failed(e.to_string()),
            };
            let last = !matches!(msg, Upload::Chunk(_));
            if tx.blocking_send(msg).is_err() || last {
                return;
            }
        }
    });
    let _reader = AbortOnDrop(reader);
    let mut sending = true;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Err(cancel_remote(&mut send, &mut frames).await),
            msg = data.recv(), if sending => match msg {
                Some(Upload::Chunk(c)) => {
                    let frame = TransferFrame::Chunk(flotilla_wire::files::Chunk(c));
                    if let Err(e) = write_frame(&mut send, &frame, MAX_TRANSFER_FRAME).await {
                        return Err(verdict_after(&mut frames, e).await);
                    }
                }
                Some(Upload::End(digest)) => {
                    let end = TransferFrame::End { digest };
                    if let Err(e) = write_frame(&mut send, &end, MAX_TRANSFER_FRAME).await {
                        return Err(verdict_after(&mut frames, e).await);
                    }
                    sending = false;
                }
                Some(Upload::Failed(why)) => {
                    let err = TransferError::new(
                        TransferErrorKind::SourceChanged,
                        format!("{}: {why}", path.display()),
                    );
                    let _ = write_frame(&mut send, &TransferFrame::Failed(err.clone()), MAX_TRANSFER_FRAME).await;
                    let _ = send.finish();
                    return Err(Attempt::Fatal(FilesError::Transfer(err)));
                }
                None => sending = false,
            },
            f = frames.next() => match f.map_err(retry)? {
                TransferFrame::Started(s) => on_event(&job.started(s.size, s.offset, s.discarded)),
                TransferFrame::Progress { written } => on_event(&job.progress(written, meta.size)),
                TransferFrame::Done(d) => {
                    let _ = send.finish();
                    return Ok(d);
                }
                TransferFrame::Failed(e) => return Err(e.into()),
                TransferFrame::Cancelled => return Err(Attempt::Cancelled),
                other => {
                    return Err(unexpected(&other, "during an upload"));
                }
            },
        }
    }
}

/// A write to the hub failed: the hub stops reading once the copy has ended, and says why on the
/// receive side (a full destination's "no space" is final). Waits up to [`VERDICT_WAIT`] for that
/// reason; without one the write's own error stands and the attempt is retried.
async fn verdict_after(frames: &mut Frames, write_err: impl std::fmt::Display) -> Attempt {
    let wait = async {
        loop {
            match frames.next().await {
                Ok(TransferFrame::Failed(e)) => return Some(Attempt::from(e)),
                Ok(TransferFrame::Cancelled) => return Some(Attempt::Cancelled),
                // Progress still on its way.
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    };
    match tokio::time::timeout(VERDICT_WAIT, wait).await {
        Ok(Some(attempt)) => attempt,
        _ => retry(write_err),
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Words for a local write failure; a full disk says so.
fn local_write_error(e: &std::io::Error, path: &Path) -> TransferError {
    match e.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => TransferError::new(
            TransferErrorKind::NoSpace,
            format!(
                "no space left on this machine (writing {}: {e})",
                path.display()
            ),
        ),
        _ => TransferError::new(
            TransferErrorKind::Io,
            format!("writing {}: {e}", path.display()),
        ),
    }
}

/// Tells the hub this end failed, and finishes the stream.
async fn tell_failed(send: &mut quinn::SendStream, err: TransferError) -> TransferError {
    let _ = write_frame(
        send,
        &TransferFrame::Failed(err.clone()),
        MAX_TRANSFER_FRAME,
    )
    .await;
    let _ = send.finish();
    err
}

/// An agent's file to a local path: this console is the destination.
pub(super) async fn attempt_download(
    client: &Client,
    job: &Job<'_>,
    path: &Path,
    cancel: &CancellationToken,
    on_event: &mut (dyn FnMut(&CopyEvent) + Send),
) -> Result<TransferDone, Attempt> {
    let dest = std::path::absolute(path)
        .map_err(|e| Attempt::Fatal(FilesError::Local(format!("{}: {e}", path.display()))))?;
    let req = CopyRequest {
        transfer: job.transfer,
        src: agent_end(job.src),
        dst: CopyEnd::Local {
            path: dest.display().to_string(),
            meta: None,
        },
        kind: WriteKind::File,
    };
    let (mut send, mut frames) = open_copy(client, &req).await?;
    let (meta, key) = {
        let frame = tokio::select! {
            _ = cancel.cancelled() => return Err(cancel_remote(&mut send, &mut frames).await),
            f = frames.next() => f.map_err(retry)?,
        };
        match frame {
            TransferFrame::Prepare { meta, resume_key } => (meta, resume_key),
            TransferFrame::Failed(e) => return Err(e.into()),
            other => {
                return Err(unexpected(&other, "before the data"));
            }
        }
    };
    let d = dest.clone();
    let sink = match tokio::task::spawn_blocking(move || LocalSink::plan(&d, key, meta)).await {
        Ok(Ok(sink)) => sink,
        Ok(Err(e)) => {
            let err = local_write_error(&e, &dest);
            let _ = write_frame(
                &mut send,
                &TransferFrame::Failed(err.clone()),
                MAX_TRANSFER_FRAME,
            )
            .await;
            return Err(Attempt::Fatal(FilesError::Transfer(err)));
        }
        Err(e) => return Err(Attempt::Fatal(FilesError::Local(e.to_string()))),
    };
    let have = sink.have;
    let ready = TransferFrame::Ready {
        offset: have,
        prefix: sink.prefix(),
    };
    write_frame(&mut send, &ready, MAX_TRANSFER_FRAME)
        .await
        .map_err(retry)?;
    let start = {
        let frame = tokio::select! {
            _ = cancel.cancelled() => {
                let a = cancel_remote(&mut send, &mut frames).await;
                sink.discard();
                return Err(a);
            }
            f = frames.next() => f.map_err(retry)?,
        };
        match frame {
            TransferFrame::Begin { offset } if offset == 0 || offset == have => offset,
            TransferFrame::Failed(e) => {
                if e.kind.retryable() {
                    sink.keep();
                } else {
                    sink.discard();
                }
                return Err(e.into());
            }
            other => {
                return Err(unexpected(&other, "instead of the data"));
            }
        }
    };
    on_event(&job.started(meta.size, start, if start < have { have } else { 0 }));
    // The disk side runs on a blocking thread fed through a short queue.
    let (tx, rx) = mpsc::channel::<Vec<u8>>(PIPELINE_DEPTH);
    let mut sink = sink;
    let writer = tokio::task::spawn_blocking(move || {
        let mut rx = rx;
        let r = sink.begin(start).and_then(|()| {
            while let Some(chunk) = rx.blocking_recv() {
                sink.write(&chunk)?;
            }
            Ok(())
        });
        (sink, r)
    });
    let mut tx = Some(tx);
    let mut received = start;
    let mut acked = start;
    let ending: Result<TransferFrame, String> = loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => break Ok(TransferFrame::Cancel),
            f = frames.next() => f,
        };
        match frame {
            Ok(TransferFrame::Chunk(c)) => {
                received += c.0.len() as u64;
                let Some(sender) = tx.as_ref() else { continue };
                if sender.send(c.0).await.is_err() {
                    tx = None;
                    break Ok(TransferFrame::Failed(TransferError::new(
                        TransferErrorKind::Io,
                        "local writer stopped".to_string(),
                    )));
                }
                on_event(&job.progress(received, meta.size));
                if received - acked >= ACK_EVERY {
                    acked = received;
                    let _ = write_frame(
                        &mut send,
                        &TransferFrame::Ack { written: received },
                        MAX_TRANSFER_FRAME,
                    )
                    .await;
                }
            }
            other => break other,
        }
    };
    drop(tx);
    let (sink, wrote) = writer
        .await
        .map_err(|e| Attempt::Fatal(FilesError::Local(e.to_string())))?;
    if let Err(e) = wrote {
        let err = tell_failed(&mut send, local_write_error(&e, &dest)).await;
        sink.discard();
        return Err(Attempt::Fatal(FilesError::Transfer(err)));
    }
    match ending {
        Ok(TransferFrame::End { digest }) => {
            let got = sink.digest();
            if received != meta.size || got != digest {
                let err = TransferError::new(
                    TransferErrorKind::HashMismatch,
                    format!(
                        "{}: BLAKE3 of the data received ({got}) does not match the source ({digest}); nothing was written under its name",
                        dest.display()
                    ),
                );
                let err = tell_failed(&mut send, err).await;
                sink.discard();
                return Err(Attempt::Fatal(FilesError::Transfer(err)));
            }
            let d = dest.clone();
            let finished = tokio::task::spawn_blocking(move || sink.finish(meta))
                .await
                .map_err(|e| Attempt::Fatal(FilesError::Local(e.to_string())))?;
            if let Err(e) = finished {
                let err = tell_failed(&mut send, local_write_error(&e, &d)).await;
                return Err(Attempt::Fatal(FilesError::Transfer(err)));
            }
            let done = TransferDone {
                size: meta.size,
                digest: got,
                resumed_from: start,
            };
            let _ = write_frame(
                &mut send,
                &TransferFrame::Done(done.clone()),
                MAX_TRANSFER_FRAME,
            )
            .await;
            let _ = send.finish();
            let _ = tokio::time::timeout(CANCEL_WAIT, send.stopped()).await;
            Ok(done)
        }
        Ok(TransferFrame::Cancel) => {
            let _ = write_frame(&mut send, &TransferFrame::Cancel, MAX_TRANSFER_FRAME).await;
            let _ = send.finish();
            sink.discard();
            // The hub ends the stream once the source is stopped and the cancel recorded.
            let ended = async { while frames.next().await.is_ok() {} };
            let _ = tokio::time::timeout(CANCEL_WAIT, ended).await;
            Err(Attempt::Cancelled)
        }
        Ok(TransferFrame::Failed(e)) => {
            if e.kind.retryable() {
                sink.keep();
            } else {
                sink.discard();
            }
            Err(e.into())
        }
        Ok(other) => {
            sink.keep();
            Err(unexpected(&other, "during the data"))
        }
        Err(why) => {
            sink.keep();
            Err(Attempt::Retry(why))
        }
    }
}
