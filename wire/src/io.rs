//! Async framing helpers over any `AsyncRead`/`AsyncWrite` (quinn's streams among them).
//!
//! The length prefix is read and checked against the limit before the body buffer is allocated.

use crate::frame::{DecodeError, EncodeError, HEADER_LEN, decode_body, peek_len};
use serde::{Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream failed (connection lost, reset by the peer).
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes arrived but do not form a valid message.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The message could not be encoded within the limit.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame")]
    Truncated,
}

/// Reads one frame. `Ok(None)` when the stream ends cleanly at a frame boundary.
///
/// Not cancel-safe: a frame half-read when the future is dropped is lost, so callers that `select!`
/// on it must close the stream afterwards.
pub async fn read_frame<T, R>(reader: &mut R, max: usize) -> Result<Option<T>, FrameError>
where
    T: DeserializeOwned,
    R: AsyncRead + Unpin,
{
    match read_frame_body(reader, max).await? {
        Some(body) => Ok(Some(decode_body(&body)?)),
        None => Ok(None),
    }
}

/// Reads one frame's length prefix and checks it against `max`, before anything is allocated for
/// the body. `Ok(None)` when the stream ends cleanly at a frame boundary. For readers that gather
/// the body their own way; not cancel-safe, like [`read_frame`].
pub async fn read_frame_len<R>(reader: &mut R, max: usize) -> Result<Option<usize>, FrameError>
where
    R: AsyncRead + Unpin,
{
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        let n = reader.read(&mut header[filled..]).await?;
        if n == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        filled += n;
    }
    Ok(Some(peek_len(&header, max)?.unwrap_or(0)))
}

/// Reads one frame's body without decoding it, for a relay that forwards it as it came. `Ok(None)`
/// when the stream ends cleanly at a frame boundary. Not cancel-safe, like [`read_frame`].
pub async fn read_frame_body<R>(reader: &mut R, max: usize) -> Result<Option<Vec<u8>>, FrameError>
where
    R: AsyncRead + Unpin,
{
    let Some(len) = read_frame_len(reader, max).await? else {
        return Ok(None);
    };
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Truncated
        } else {
            FrameError::Io(e)
        }
    })?;
    Ok(Some(body))
}

/// Writes one frame (prefix and body in one write call, so small frames go out in one packet).
pub async fn write_frame<T, W>(writer: &mut W, msg: &T, max: usize) -> Result<(), FrameError>
where
    T: Serialize,
    W: AsyncWrite + Unpin,
{
    let mut buf = bytes::BytesMut::new();
    crate::encode(msg, &mut buf, max)?;
    writer.write_all(&buf).await?;
    Ok(())
}

/// Writes an operator reply, splitting a long agent list into `AgentsMore` frames.
pub async fn write_response<W: AsyncWrite + Unpin>(
    writer: &mut W,
    resp: crate::msg::OpResponse,
) -> Result<(), FrameError> {
    use crate::msg::{AGENTS_PER_FRAME, OpResponse};
    let max = crate::limits::MAX_REQUEST_FRAME;
    match resp {
        OpResponse::Agents(mut list) if list.len() > AGENTS_PER_FRAME => {
            let last = list.split_off((list.len() - 1) / AGENTS_PER_FRAME * AGENTS_PER_FRAME);
            for chunk in list.chunks(AGENTS_PER_FRAME) {
                write_frame(writer, &OpResponse::AgentsMore(chunk.to_vec()), max).await?;
            }
            write_frame(writer, &OpResponse::Agents(last), max).await
        }
        OpResponse::Alerts(mut list) if list.len() > crate::alerts::ALERTS_PER_FRAME => {
            let per = crate::alerts::ALERTS_PER_FRAME;
            let last = list.split_off((list.len() - 1) / per * per);
            for chunk in list.chunks(per) {
                write_frame(writer, &OpResponse::AlertsMore(chunk.to_vec()), max).await?;
            }
            write_frame(writer, &OpResponse::Alerts(last), max).await
        }
        other => write_frame(writer, &other, max).await,
    }
}

/// Reads an operator reply written by [`write_response`], joining `AgentsMore` and `AlertsMore`
/// parts.
/// `Ok(None)` if the stream ended before any reply. Not cancel-safe.
pub async fn read_response<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<crate::msg::OpResponse>, FrameError> {
    use crate::msg::OpResponse;
    let max = crate::limits::MAX_REQUEST_FRAME;
    let mut parts = Vec::new();
    let mut alerts = Vec::new();
    loop {
        match read_frame::<OpResponse, _>(reader, max).await? {
            Some(OpResponse::AgentsMore(more)) if alerts.is_empty() => parts.extend(more),
            Some(OpResponse::Agents(last)) if alerts.is_empty() => {
                parts.extend(last);
                return Ok(Some(OpResponse::Agents(parts)));
            }
            Some(OpResponse::AlertsMore(more)) if parts.is_empty() => alerts.extend(more),
            Some(OpResponse::Alerts(last)) if parts.is_empty() => {
                alerts.extend(last);
                return Ok(Some(OpResponse::Alerts(alerts)));
            }
            Some(other) if parts.is_empty() && alerts.is_empty() => return Ok(Some(other)),
            Some(_) => return Err(FrameError::Truncated),
            None if parts.is_empty() && alerts.is_empty() => return Ok(None),
            None => return Err(FrameError::Truncated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::StreamOpen;

    #[tokio::test]
    async fn reads_back_what_was_written_then_clean_eof() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frame(&mut a, &StreamOpen::Metrics, 16)
            .await
            .expect("write");
        write_frame(&mut a, &StreamOpen::Events, 16)
            .await
            .expect("write");
        drop(a);
        assert_eq!(
            read_frame::<StreamOpen, _>(&mut b, 16).await.expect("read"),
            Some(StreamOpen::Metrics)
        );
        assert_eq!(
            read_frame::<StreamOpen, _>(&mut b, 16).await.expect("read"),
            Some(StreamOpen::Events)
        );
        assert_eq!(
            read_frame::<StreamOpen, _>(&mut b, 16).await.expect("eof"),
            None
        );
    }

    #[tokio::test]
    async fn oversized_header_refused_without_reading_body() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&u32::MAX.to_be_bytes()).await.expect("write");
        let err = read_frame::<StreamOpen, _>(&mut b, 1024)
            .await
            .expect_err("too long");
        assert!(
            matches!(err, FrameError::Decode(DecodeError::TooLong { len, max: 1024 }) if len == u32::MAX as usize)
        );
    }

    #[tokio::test]
    async fn long_agent_lists_are_split_and_joined() {
        use crate::msg::{AGENTS_PER_FRAME, AgentInfo, OpResponse, Status};
        use crate::{IdentityId, Role};
        let agent = |i: usize| AgentInfo {
            id: IdentityId::from_random(Role::Agent, (i as u64).to_be_bytes()),
            name: format!("a{i}"),
            role: Role::Agent,
            labels: vec![],
            status: Status::Online,
            first_seen_ms: 0,
            last_seen_ms: 0,
            version: String::new(),
            os: String::new(),
            hostname: String::new(),
            addr: String::new(),
            latest: None,
        };
        for n in [
            0,
            1,
            AGENTS_PER_FRAME,
            AGENTS_PER_FRAME + 1,
            3 * AGENTS_PER_FRAME + 7,
        ] {
            let list: Vec<AgentInfo> = (0..n).map(agent).collect();
            let (mut a, mut b) = tokio::io::duplex(1 << 20);
            let writer = tokio::spawn(async move {
                write_response(&mut a, OpResponse::Agents(list))
                    .await
                    .expect("write");
            });
            let back = read_response(&mut b).await.expect("read").expect("reply");
            writer.await.expect("writer");
            match back {
                OpResponse::Agents(got) => {
                    assert_eq!(got.len(), n);
                    assert!(
                        got.iter()
                            .enumerate()
                            .all(|(i, a)| a.name == format!("a{i}")),
                        "order kept"
                    );
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn truncated_frame_is_an_error() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 5, 1]).await.expect("write");
        drop(a);
        assert!(matches!(
            read_frame::<StreamOpen, _>(&mut b, 1024).await,
            Err(FrameError::Truncated)
        ));
    }
}
