//! [`Chunk`]: a run of bytes on the wire (command output, file data), encoded as one byte string.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Most bytes reserved up front when a self-describing format hands a chunk over as a sequence of
/// numbers: its length hint is the peer's word, so a larger chunk grows as it arrives. Postcard
/// never takes that path (it hands over the whole byte string); the largest chunk we send is
/// [`crate::files::CHUNK_SIZE`].
const PREALLOC_MAX: usize = crate::files::CHUNK_SIZE;

/// Bytes of command output or file data. Encoded with `serialize_bytes`: the same postcard bytes as
/// a `Vec<u8>`, but one length-prefixed copy instead of element by element, each way.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Chunk(pub Vec<u8>);

impl fmt::Debug for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Chunk({} bytes)", self.0.len())
    }
}

impl Serialize for Chunk {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Chunk {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl<'de> serde::de::Visitor<'de> for BytesVisitor {
            type Value = Chunk;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Chunk, E> {
                Ok(Chunk(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Chunk, E> {
                Ok(Chunk(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Chunk, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(PREALLOC_MAX));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(Chunk(out))
            }
        }
        d.deserialize_byte_buf(BytesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_encodes_as_the_same_bytes_as_a_vec() {
        let data = vec![0u8, 1, 2, 255];
        let chunk = postcard::to_stdvec(&Chunk(data.clone())).expect("encode");
        assert_eq!(chunk, postcard::to_stdvec(&data).expect("encode vec"));
        let (back, rest) = postcard::take_from_bytes::<Chunk>(&chunk).expect("decode");
        assert_eq!((back, rest.len()), (Chunk(data), 0));
    }
}
