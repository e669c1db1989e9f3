//! Framing: any byte stream, delivered in two pieces cut anywhere, never panics, refuses a length
//! over the stream kind's limit before reading the body, and every frame it decodes re-encodes to a
//! frame that decodes to the same bytes again.

#![no_main]

use bytes::BytesMut;
use flotilla_wire::frame::{self, DecodeError};
use flotilla_wire::msg::ClientOpen;
use libfuzzer_sys::fuzz_target;

/// A small limit, so that short inputs reach the over-limit path too.
const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    // The first byte picks where the stream is cut, as a socket may deliver it in pieces.
    let Some((&cut, data)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut).min(data.len());
    let mut buf = BytesMut::new();
    for piece in [&data[..cut], &data[cut..]] {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match frame::decode::<ClientOpen>(&mut buf, MAX) {
                Ok(Some(msg)) => {
                    assert!(buf.len() < before, "a decoded frame consumed nothing");
                    let mut once = BytesMut::new();
                    frame::encode(&msg, &mut once, MAX).expect("a decoded message re-encodes");
                    let mut copy = once.clone();
                    let back = frame::decode::<ClientOpen>(&mut copy, MAX)
                        .expect("its encoding decodes")
                        .expect("a whole frame");
                    assert!(copy.is_empty(), "a re-encoded frame left bytes over");
                    let mut twice = BytesMut::new();
                    frame::encode(&back, &mut twice, MAX).expect("re-encodes");
                    assert_eq!(once, twice, "decode and encode disagree");
                }
                Ok(None) => break,
                Err(DecodeError::TooLong { len, max }) => {
                    assert!(len > max && max == MAX, "limit reported wrongly");
                    return;
                }
                Err(_) => return,
            }
        }
    }
});
