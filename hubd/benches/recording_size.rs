//! Shell recording overhead: bytes on disk per MiB of terminal output, and how fast the recorder
//! takes output, for the kinds of output a shell session produces. Each kind is 16 MiB fed in
//! 16 KiB chunks (the relay's largest) through the real writer into a real file.
//! Run: `cargo bench -p flotilla-hubd --bench recording_size`.

use hubd::shell::recording::{Recording, RecordingMeta};
use std::time::Instant;

/// Output per kind: enough for the compressor's steady state, small enough to run in seconds.
const TOTAL: usize = 16 << 20;
/// The relay's largest data chunk.
const CHUNK: usize = 16 * 1024;

/// Text like `ls -l` or a log: lines that repeat in shape with changing numbers.
fn log_lines() -> Vec<u8> {
    let mut out = Vec::with_capacity(TOTAL);
    let mut i = 0u64;
    while out.len() < TOTAL {
        out.extend_from_slice(
            format!(
                "2026-12-07T22:{:02}:{:02}.{:03}Z INFO hubd::session: request served conn={} bytes={} ms={}\r\n",
                i / 60 % 60,
                i % 60,
                i * 7 % 1000,
                i * 31 % 9973,
                i * 131 % 65536,
                i % 97
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(TOTAL);
    out
}

/// `yes`: the most compressible burst.
fn yes() -> Vec<u8> {
    b"y\r\n".iter().copied().cycle().take(TOTAL).collect()
}

/// Random bytes (`cat` of a binary file): incompressible, and not UTF-8, so stored with their
/// exact bytes beside the lossy text.
fn random() -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..TOTAL)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        println!("kind         output MiB  file bytes  bytes per MiB  ratio  MiB/s");
        for (i, (kind, data)) in [
            ("log lines", log_lines()),
            ("yes", yes()),
            ("random", random()),
        ]
        .into_iter()
        .enumerate()
        {
            let meta = RecordingMeta {
                id: format!("bench-{i}"),
                started_ms: 1_800_000_000_000,
                cols: 80,
                rows: 24,
                command: String::new(),
                title: "bench@local".into(),
                term: "xterm".into(),
                record_input: false,
            };
            let rec = Recording::create(dir.path(), meta).await.expect("create");
            let started = Instant::now();
            for (n, chunk) in data.chunks(CHUNK).enumerate() {
                rec.output(1_800_000_000_000 + n as u64, chunk)
                    .await
                    .expect("output");
            }
            let summary = rec.finish(Some(0), "done").await.expect("finish");
            let secs = started.elapsed().as_secs_f64();
            let mib = TOTAL as f64 / f64::from(1 << 20);
            println!(
                "{kind:<11}  {mib:>10.0}  {:>10}  {:>13.0}  {:>5.3}  {:>5.0}",
                summary.size,
                summary.size as f64 / mib,
                summary.size as f64 / TOTAL as f64,
                mib / secs
            );
        }
    });
}
