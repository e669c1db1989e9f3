//! A unit's journal on a logs stream: `journalctl --output=json` (spawned without a shell, the unit
//! passed as one `--unit=` argument) tails N entries and follows; each entry becomes one
//! [`LogFrame::Data`] holding its message and a newline, stamped with `__REALTIME_TIMESTAMP`,
//! on stderr when its priority is 3 (error) or more urgent.
//!
//! Flow control: the next line is read from journalctl only after the last frame was accepted by
//! the stream, so a slow reader holds journalctl back through its pipe instead of filling memory.
//! journalctl is killed when the stream closes, when the agent stops, or when the pump ends.

use flotilla_wire::ErrorCode;
use flotilla_wire::exec::{Chunk, MAX_CHUNK, OutputStream};
use flotilla_wire::io::write_frame;
use flotilla_wire::limits::MAX_LOGS_FRAME;
use flotilla_wire::msg::Refusal;
use flotilla_wire::workloads::{Access, LogFrame, valid_workload_name};
use serde::Deserialize;
use std::future::Future;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Longest journal entry read as JSON; longer ones are skipped. journald cuts messages at 48 KiB
/// by default (`LineMax=`), so an entry with its fields fits with room to spare.
const MAX_ENTRY_JSON: u64 = 1024 * 1024;
/// Search path for journalctl: the agent's own environment is not handed down.
const CLEAN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// journalctl's stderr kept for an error message; the rest is dropped.
const MAX_STDERR: u64 = 4096;
/// `PRIORITY` at or below this (emerg, alert, crit, err) goes to stderr.
const STDERR_PRIORITY: u8 = 3;

/// What the journal request asks for, resolved from [`flotilla_wire::workloads::LogsOpen`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalRequest {
    /// The unit, as asked.
    pub unit: String,
    /// Entries from before the request.
    pub tail: u32,
    /// Keep streaming.
    pub follow: bool,
    /// The user's manager's unit (a non-root agent) rather than a system unit.
    pub user: bool,
    /// Read the journal files in this folder instead of the machine's journal (a container's
    /// journal mounted on the host).
    pub directory: Option<std::path::PathBuf>,
}

impl JournalRequest {
    /// The unit name systemd would use: a name without a type suffix is a service.
    pub fn resolved(&self) -> String {
        if self.unit.contains('.') {
            self.unit.clone()
        } else {
            format!("{}.service", self.unit)
        }
    }

    /// journalctl's arguments, one per element (no shell ever sees them).
    pub fn args(&self) -> Vec<String> {
        let unit = self.resolved();
        let mut args = vec![
            "--output=json".to_string(),
            "--no-pager".to_string(),
            "--quiet".to_string(),
            if self.user {
                format!("--user-unit={unit}")
            } else {
                format!("--unit={unit}")
            },
            format!("--lines={}", self.tail),
        ];
        if let Some(dir) = &self.directory {
            args.push(format!("--directory={}", dir.display()));
        }
        if self.follow {
            args.push("--follow".into());
        }
        args
    }
}

fn refusal(code: ErrorCode, message: String) -> LogFrame {
    LogFrame::Error(Refusal { code, message })
}

/// Checks the request against the services policy and the unit name rules.
pub fn check(access: Access, unit: &str) -> Result<(), LogFrame> {
    if access == Access::Off {
        return Err(refusal(
            ErrorCode::Forbidden,
            "refused by this agent's services policy (services = \"off\"): unit logs need services = \"read\" or \"manage\" in agent.toml".into(),
        ));
    }
    if !valid_workload_name(unit) {
        return Err(refusal(
            ErrorCode::BadRequest,
            format!("invalid unit name {unit:?}: give a unit name such as nginx.service"),
        ));
    }
    Ok(())
}

/// Serves a unit's journal on a stream the hub opened, until journalctl ends or `closed` resolves
/// (the hub stopped reading, the connection went away, the agent is stopping).
pub async fn serve<W, C>(access: Access, req: JournalRequest, mut send: W, closed: C)
where
    W: AsyncWrite + Unpin + Send,
    C: Future<Output = ()> + Send,
{
    if let Err(frame) = check(access, &req.unit) {
        let _ = write_frame(&mut send, &frame, MAX_LOGS_FRAME).await;
        let _ = send.shutdown().await;
        return;
    }
    let spawned = tokio::process::Command::new("journalctl")
        .args(req.args())
        .env_clear()
        .env("PATH", CLEAN_PATH)
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let frame = refusal(
                ErrorCode::Internal,
                format!("cannot run journalctl for unit logs: {e}"),
            );
            let _ = write_frame(&mut send, &frame, MAX_LOGS_FRAME).await;
            let _ = send.shutdown().await;
            return;
        }
    };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return;
    };
    let started = LogFrame::Started {
        resolved: req.resolved(),
    };
    if write_frame(&mut send, &started, MAX_LOGS_FRAME)
        .await
        .is_err()
    {
        return;
    }
    let end = tokio::select! {
        end = pump(stdout, &mut send) => end,
        () = closed => Pumped::Closed,
    };
    match end {
        Pumped::Eof => {
            // journalctl ended by itself: not following, or it failed.
            let mut text = String::new();
            let _ = stderr.take(MAX_STDERR).read_to_string(&mut text).await;
            let frame = match child.wait().await {
                Ok(st) if st.success() => LogFrame::End,
                Ok(st) => {
                    let detail = text.lines().next().unwrap_or("no message").to_string();
                    refusal(
                        ErrorCode::Internal,
                        format!("journalctl failed ({st}): {detail}"),
                    )
                }
                Err(e) => refusal(ErrorCode::Internal, format!("journalctl: {e}")),
            };
            let _ = write_frame(&mut send, &frame, MAX_LOGS_FRAME).await;
            let _ = send.shutdown().await;
        }
        Pumped::Closed => {
            let _ = child.kill().await;
        }
    }
}

/// How the pump ended.
enum Pumped {
    /// journalctl closed its output.
    Eof,
    /// The stream is gone.
    Closed,
}

/// Forwards entries one by one, each written before the next is read. Not cancel-safe (an entry
/// read and not yet written is lost), which is fine: cancelling it ends the stream.
async fn pump<R, W>(stdout: R, send: &mut W) -> Pumped
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut reader)
            .take(MAX_ENTRY_JSON)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) | Err(_) => return Pumped::Eof,
            Ok(_) => {}
        }
        if buf.last() != Some(&b'\n') && buf.len() as u64 == MAX_ENTRY_JSON {
            tracing::debug!("journal entry over {MAX_ENTRY_JSON} bytes skipped");
            if skip_line(&mut reader).await {
                return Pumped::Eof;
            }
            continue;
        }
        let Some(frame) = entry_frame(&buf) else {
            continue;
        };
        if write_frame(send, &frame, MAX_LOGS_FRAME).await.is_err() {
            return Pumped::Closed;
        }
    }
}

/// Discards the rest of an oversized line; true at end of output.
async fn skip_line<R: AsyncRead + Unpin>(reader: &mut BufReader<R>) -> bool {
    loop {
        let (done, used) = match reader.fill_buf().await {
            Ok([]) | Err(_) => return true,
            Ok(bytes) => match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => (true, i + 1),
                None => (false, bytes.len()),
            },
        };
        reader.consume(used);
        if done {
            return false;
        }
    }
}

/// The fields of an entry the stream uses. journalctl writes every value as a string, a byte
/// array when it is not UTF-8, or an array of those when a field repeats.
#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "MESSAGE")]
    message: Option<serde_json::Value>,
    #[serde(rename = "__REALTIME_TIMESTAMP")]
    realtime_us: Option<String>,
    #[serde(rename = "PRIORITY")]
    priority: Option<String>,
}

/// A journal entry as a data frame; `None` for lines that are not entries or have no message.
fn entry_frame(json: &[u8]) -> Option<LogFrame> {
    let entry: Entry = serde_json::from_slice(json).ok()?;
    let mut data = message_bytes(entry.message.as_ref()?)?;
    data.truncate(MAX_CHUNK - 1);
    data.push(b'\n');
    let at_ms = entry
        .realtime_us
        .and_then(|us| us.parse::<u64>().ok())
        .map(|us| us / 1000);
    let urgent = entry
        .priority
        .and_then(|p| p.parse::<u8>().ok())
        .is_some_and(|p| p <= STDERR_PRIORITY);
    Some(LogFrame::Data {
        stream: if urgent {
            OutputStream::Stderr
        } else {
            OutputStream::Stdout
        },
        at_ms,
        data: Chunk(data),
    })
}

fn message_bytes(v: &serde_json::Value) -> Option<Vec<u8>> {
    use serde_json::Value;
    match v {
        Value::String(s) => Some(s.clone().into_bytes()),
        Value::Array(items) if items.iter().all(Value::is_u64) => Some(
            items
                .iter()
                .filter_map(Value::as_u64)
                .map(|b| b as u8)
                .collect(),
        ),
        // A repeated field: its values, one per line.
        Value::Array(items) => {
            let parts: Vec<Vec<u8>> = items.iter().filter_map(message_bytes).collect();
            Some(parts.join(&b'\n'))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_wire::io::read_frame;

    #[test]
    fn arguments_are_single_words_and_name_one_unit() {
        let req = JournalRequest {
            unit: "nginx".into(),
            tail: 20,
            follow: true,
            user: false,
            directory: None,
        };
        assert_eq!(
            req.args(),
            [
                "--output=json",
                "--no-pager",
                "--quiet",
                "--unit=nginx.service",
                "--lines=20",
                "--follow"
            ]
        );
        let user = JournalRequest {
            unit: "app.timer".into(),
            follow: false,
            user: true,
            ..req
        };
        assert_eq!(user.args()[3], "--user-unit=app.timer");
        assert!(!user.args().contains(&"--follow".to_string()));
    }

    #[test]
    fn policy_off_and_bad_names_are_refused() {
        let Err(LogFrame::Error(r)) = check(Access::Off, "nginx.service") else {
            panic!("off must refuse");
        };
        assert_eq!(r.code, ErrorCode::Forbidden);
        assert!(r.message.contains("services = \"off\""), "{}", r.message);
        for bad in ["-f", "a/b", "x\ny"] {
            let Err(LogFrame::Error(r)) = check(Access::Read, bad) else {
                panic!("{bad:?} must be refused");
            };
            assert_eq!(r.code, ErrorCode::BadRequest);
        }
        assert!(check(Access::Read, "nginx.service").is_ok());
    }

    #[test]
    fn entries_become_frames() {
        let plain =
            br#"{"MESSAGE":"hello","__REALTIME_TIMESTAMP":"1700000000123456","PRIORITY":"6"}"#;
        assert_eq!(
            entry_frame(plain),
            Some(LogFrame::Data {
                stream: OutputStream::Stdout,
                at_ms: Some(1_700_000_000_123),
                data: Chunk(b"hello\n".to_vec()),
            })
        );
        let urgent = br#"{"MESSAGE":[104,105,255],"PRIORITY":"3"}"#;
        assert_eq!(
            entry_frame(urgent),
            Some(LogFrame::Data {
                stream: OutputStream::Stderr,
                at_ms: None,
                data: Chunk(vec![b'h', b'i', 255, b'\n']),
            })
        );
        assert_eq!(entry_frame(br#"{"MESSAGE":null}"#), None);
        assert_eq!(entry_frame(b"not json"), None);
    }

    #[tokio::test]
    async fn the_pump_writes_each_entry_and_skips_giants() {
        let mut input = Vec::new();
        input.extend_from_slice(b"{\"MESSAGE\":\"one\"}\n");
        input.extend_from_slice(b"{\"MESSAGE\":\"");
        input.extend(std::iter::repeat_n(b'x', MAX_ENTRY_JSON as usize + 10));
        input.extend_from_slice(b"\"}\n{\"MESSAGE\":\"two\"}\n");
        let (mut hub, mut agent) = tokio::io::duplex(1 << 20);
        let pumped = tokio::spawn(async move {
            let end = pump(&input[..], &mut agent).await;
            drop(agent);
            matches!(end, Pumped::Eof)
        });
        let mut got = Vec::new();
        while let Ok(Some(frame)) = read_frame::<LogFrame, _>(&mut hub, MAX_LOGS_FRAME).await {
            if let LogFrame::Data { data, .. } = frame {
                got.push(String::from_utf8_lossy(&data.0).into_owned());
            }
        }
        assert!(pumped.await.expect("pump"));
        assert_eq!(got, ["one\n", "two\n"]);
    }
}
