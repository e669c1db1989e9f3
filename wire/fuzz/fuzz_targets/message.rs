//! Every message a peer can send: the first byte picks the type, the rest is its postcard body.
//! Decoding never panics, and whatever decodes re-encodes to a body that decodes the same way.

#![no_main]

use flotilla_wire::exec::{AgentEvent, ExecControl, ExecEvent, ExecRequest, Query, QueryReply};
use flotilla_wire::files::{CopyRequest, FileEvent, ListReply, SnapshotFrame, TransferFrame};
use flotilla_wire::frame::decode_body;
use flotilla_wire::msg::{
    ClientOpen, FleetEvent, HubControl, HubStreamOpen, MetricsFrame, OpRequest, OpResponse,
    ServerOpen, StreamOpen,
};
use libfuzzer_sys::fuzz_target;
use serde::{Serialize, de::DeserializeOwned};

fn check<T: Serialize + DeserializeOwned>(body: &[u8]) {
    let Ok(msg) = decode_body::<T>(body) else {
        return;
    };
    let mut framed = bytes::BytesMut::new();
    flotilla_wire::frame::encode(&msg, &mut framed, usize::MAX)
        .expect("a decoded message re-encodes");
    let again = &framed[flotilla_wire::frame::HEADER_LEN..];
    let back = decode_body::<T>(again).expect("its encoding decodes");
    let mut framed_back = bytes::BytesMut::new();
    flotilla_wire::frame::encode(&back, &mut framed_back, usize::MAX).expect("re-encodes");
    assert_eq!(framed, framed_back, "decode and encode disagree");
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 20 {
        0 => check::<ClientOpen>(body),
        1 => check::<ServerOpen>(body),
        2 => check::<HubControl>(body),
        3 => check::<HubStreamOpen>(body),
        4 => check::<StreamOpen>(body),
        5 => check::<MetricsFrame>(body),
        6 => check::<OpRequest>(body),
        7 => check::<OpResponse>(body),
        8 => check::<FleetEvent>(body),
        9 => check::<ExecRequest>(body),
        10 => check::<ExecControl>(body),
        11 => check::<ExecEvent>(body),
        12 => check::<AgentEvent>(body),
        13 => check::<Query>(body),
        14 => check::<QueryReply>(body),
        15 => check::<SnapshotFrame>(body),
        16 => check::<TransferFrame>(body),
        17 => check::<ListReply>(body),
        18 => check::<FileEvent>(body),
        _ => check::<CopyRequest>(body),
    }
});
