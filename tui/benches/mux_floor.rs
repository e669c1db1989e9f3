//! Exec round trips through a running `flotilla mux`, from one process: what `flotilla exec AGENT
//! -- true` costs once a client process has started, and so the least a one-shot command can cost.
//!
//!     cargo bench -p flotilla-tui --bench mux_floor -- SOCKET [AGENT] [RUNS]
//!
//! Each round does what a one-shot client does through the mux, with blocking calls and nothing
//! else: connect, read the welcome, send the opening and the request, read events up to `Done`.
//! `hubd/benches/exec_vs_ssh.py --floor` runs it beside the process-level figures.

use bytes::BytesMut;
use flotilla_wire::exec::{ExecCommand, ExecEvent, ExecRequest};
use flotilla_wire::frame::{HEADER_LEN, peek_len};
use flotilla_wire::limits::{MAX_CONTROL_FRAME, MAX_EXEC_FRAME, MAX_EXEC_REQUEST_FRAME};
use flotilla_wire::msg::{ServerOpen, StreamOpen};
use flotilla_wire::{decode_body, encode};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// A round that takes longer than this is a stuck stack, not a figure.
const ROUND_LIMIT: Duration = Duration::from_secs(10);

/// One frame's body, read with blocking calls; the prefix is wire's (`frame::peek_len`).
fn read_body(s: &mut UnixStream, max: usize) -> Vec<u8> {
    let mut header = [0u8; HEADER_LEN];
    s.read_exact(&mut header).expect("frame length");
    let len = peek_len(&header, max)
        .expect("frame within its limit")
        .expect("a whole prefix");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("frame body");
    body
}

fn round(socket: &str, opening: &[u8]) -> Duration {
    let start = Instant::now();
    let mut s = UnixStream::connect(socket).expect("connect to the mux");
    s.set_read_timeout(Some(ROUND_LIMIT)).expect("timeout");
    match decode_body::<ServerOpen>(&read_body(&mut s, MAX_CONTROL_FRAME)) {
        Ok(ServerOpen::Welcome(_)) => {}
        other => panic!("the mux did not welcome us: {other:?}"),
    }
    s.write_all(opening).expect("send the request");
    loop {
        match decode_body::<ExecEvent>(&read_body(&mut s, MAX_EXEC_FRAME)) {
            Ok(ExecEvent::Done(summary)) => {
                assert_eq!(
                    summary.counts.succeeded, 1,
                    "the command failed: {summary:?}"
                );
                return start.elapsed();
            }
            Ok(ExecEvent::Refused(r)) => panic!("refused: {}", r.message),
            Ok(_) => {}
            Err(e) => panic!("undecodable event: {e}"),
        }
    }
}

fn main() {
    // `cargo bench` appends `--bench`; positional arguments are ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Some(socket) = args.first() else {
        eprintln!("usage: mux_floor SOCKET [AGENT] [RUNS]");
        std::process::exit(2);
    };
    let agent = args.get(1).map_or("one", String::as_str);
    let runs: usize = args.get(2).map_or(200, |r| r.parse().expect("RUNS"));
    let req = ExecRequest {
        selector: agent.into(),
        command: ExecCommand::Argv {
            argv: vec!["true".into()],
            shell: false,
        },
        timeout_ms: 0,
        batch: 0,
    };
    let mut opening = BytesMut::new();
    encode(&StreamOpen::Exec, &mut opening, MAX_CONTROL_FRAME).expect("opening");
    encode(&req, &mut opening, MAX_EXEC_REQUEST_FRAME).expect("request");
    for _ in 0..runs.min(20) {
        round(socket, &opening);
    }
    let mut times: Vec<Duration> = (0..runs).map(|_| round(socket, &opening)).collect();
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "exec round trip through the mux, in-process  p50 {:7.2} ms  p90 {:7.2} ms  p99 {:7.2} ms  ({runs} runs)",
        at(0.5),
        at(0.9),
        at(0.99)
    );
}
