//! Length-prefixed postcard frames: a big-endian `u32` length, then the postcard body.
//!
//! Sans-IO: [`encode`] appends to a buffer and [`decode`] takes from one, returning `Ok(None)` while
//! more bytes are needed. The length is checked against the stream's limit before anything is
//! allocated, and a body with trailing bytes is refused so a newer message never silently decodes as
//! an older one.

use bytes::{Buf, BufMut, BytesMut};
use serde::{Serialize, de::DeserializeOwned};

/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The length prefix announces more than the stream kind allows.
    #[error("frame of {len} bytes exceeds limit {max}")]
    TooLong {
        /// Announced length.
        len: usize,
        /// Limit of the stream kind.
        max: usize,
    },
    /// The body names an enum variant this version does not know (a newer peer), or a value outside
    /// its type's domain (such as a malformed identity id): serde reports both the same way.
    #[error("unknown message variant or invalid value (peer is newer or corrupt)")]
    UnknownVariant,
    /// The body decoded but left bytes over.
    #[error("{extra} trailing bytes after message")]
    TrailingBytes {
        /// Bytes left after the message.
        extra: usize,
    },
    /// The body is not a valid encoding of the expected message.
    #[error("malformed message: {reason}")]
    Malformed {
        /// postcard's description of the fault.
        reason: String,
    },
}

/// Why a message could not be encoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    /// The encoded message is larger than the stream kind allows.
    #[error("message of {len} bytes exceeds limit {max}")]
    TooLong {
        /// Encoded length.
        len: usize,
        /// Limit of the stream kind.
        max: usize,
    },
    /// serde refused the value (cannot happen for our types; kept for completeness).
    #[error("cannot encode message: {reason}")]
    Serialize {
        /// postcard's description of the fault.
        reason: String,
    },
}

/// Appends `msg` as one frame to `dst`, refusing a body over `max` bytes.
pub fn encode<T: Serialize>(msg: &T, dst: &mut BytesMut, max: usize) -> Result<(), EncodeError> {
    let body = postcard::to_stdvec(msg).map_err(|e| EncodeError::Serialize {
        reason: e.to_string(),
    })?;
    if body.len() > max {
        return Err(EncodeError::TooLong {
            len: body.len(),
            max,
        });
    }
    dst.reserve(HEADER_LEN + body.len());
    dst.put_u32(body.len() as u32);
    dst.put_slice(&body);
    Ok(())
}

/// Reads the length prefix at the front of `src`, if complete, and checks it against `max`.
pub fn peek_len(src: &[u8], max: usize) -> Result<Option<usize>, DecodeError> {
    let Some(header) = src.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len > max {
        return Err(DecodeError::TooLong { len, max });
    }
    Ok(Some(len))
}

/// Takes one frame from the front of `src`. `Ok(None)` means more bytes are needed.
pub fn decode<T: DeserializeOwned>(
    src: &mut BytesMut,
    max: usize,
) -> Result<Option<T>, DecodeError> {
    let Some(len) = peek_len(src, max)? else {
        return Ok(None);
    };
    if src.len() < HEADER_LEN + len {
        return Ok(None);
    }
    src.advance(HEADER_LEN);
    let body = src.split_to(len);
    decode_body(&body).map(Some)
}

/// Decodes one frame body (without its prefix), refusing trailing bytes.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((msg, [])) => Ok(msg),
        Ok((_, rest)) => Err(DecodeError::TrailingBytes { extra: rest.len() }),
        // serde's derive reports an out-of-range variant index through `custom`, which postcard
        // surfaces as `SerdeDeCustom`; so do our checked newtypes (`IdentityId`).
        Err(postcard::Error::DeserializeBadEnum | postcard::Error::SerdeDeCustom) => {
            Err(DecodeError::UnknownVariant)
        }
        Err(e) => Err(DecodeError::Malformed {
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{ClientOpen, Hello};
    use proptest::prelude::*;

    fn hello() -> ClientOpen {
        ClientOpen::Hello(Hello {
            protocol_version: 1,
            software_version: "0.1.0".into(),
            hostname: "web-1".into(),
            os: "linux".into(),
        })
    }

    #[test]
    fn partial_frames_need_more_bytes() {
        let mut buf = BytesMut::new();
        encode(&hello(), &mut buf, 1024).expect("encode");
        let full = buf.clone();
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert_eq!(
                decode::<ClientOpen>(&mut part, 1024),
                Ok(None),
                "cut at {cut}"
            );
        }
        let mut all = full;
        assert_eq!(decode::<ClientOpen>(&mut all, 1024), Ok(Some(hello())));
        assert!(all.is_empty());
    }

    #[test]
    fn oversized_length_fails_before_body_arrives() {
        let mut buf = BytesMut::new();
        buf.put_u32(9_000_000);
        assert_eq!(
            decode::<ClientOpen>(&mut buf, 4_194_304),
            Err(DecodeError::TooLong {
                len: 9_000_000,
                max: 4_194_304
            })
        );
        assert_eq!(
            DecodeError::TooLong {
                len: 9_000_000,
                max: 4_194_304
            }
            .to_string(),
            "frame of 9000000 bytes exceeds limit 4194304"
        );
    }

    #[test]
    fn encode_refuses_oversized_message() {
        let mut buf = BytesMut::new();
        let err = encode(&vec![0u8; 100], &mut buf, 10).expect_err("too long");
        assert_eq!(err, EncodeError::TooLong { len: 101, max: 10 });
        assert!(buf.is_empty(), "nothing written on refusal");
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut body = postcard::to_stdvec(&hello()).expect("encode");
        body.extend_from_slice(&[0, 0]);
        assert_eq!(
            decode_body::<ClientOpen>(&body),
            Err(DecodeError::TrailingBytes { extra: 2 })
        );
    }

    #[test]
    fn unknown_variant_is_typed() {
        assert_eq!(
            decode_body::<ClientOpen>(&[7]),
            Err(DecodeError::UnknownVariant)
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = BytesMut::from(&bytes[..]);
            // Decode repeatedly until an error or "need more": must never panic or loop forever.
            for _ in 0..64 {
                match decode::<ClientOpen>(&mut buf, 256) {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
            let _ = decode_body::<crate::msg::OpRequest>(&bytes);
            let _ = decode_body::<crate::msg::FleetEvent>(&bytes);
            let _ = decode_body::<crate::msg::MetricsFrame>(&bytes);
            let _ = decode_body::<crate::msg::OpResponse>(&bytes);
            let _ = decode_body::<crate::msg::ServerOpen>(&bytes);
        }
    }
}
