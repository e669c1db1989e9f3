//! `flotilla logs AGENT/CONTAINER` and `flotilla logs AGENT --unit NAME`: the hub relays the
//! agent's log frames; standard output lines go to our standard output, standard error lines to
//! our standard error. Our side of the stream stays open while we want lines: Ctrl-C or the end
//! of this process closes it, which stops the hub and the agent.
//!
//! Exit status: 0 at the end of the logs, 1 when the agent or hub refused or failed (no such
//! container, policy `off`, agent offline), 2 for a malformed request, 130 after Ctrl-C, 141 when
//! our standard output was closed.

use crate::client::{Client, ClientError};
use crate::exec::{EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_USAGE};
use flotilla_wire::ErrorCode;
use flotilla_wire::exec::OutputStream;
use flotilla_wire::io::read_frame;
use flotilla_wire::limits::MAX_LOGS_FRAME;
use flotilla_wire::msg::StreamOpen;
use flotilla_wire::workloads::{LogFrame, LogSource, LogsRequest, MAX_LOG_TAIL};
use std::io::{self, Write};

/// `flotilla logs`.
#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// AGENT/CONTAINER (a container name or id), or AGENT with --unit.
    pub target: String,
    /// A systemd unit's journal instead of a container's output.
    #[arg(long, value_name = "NAME")]
    pub unit: Option<String>,
    /// Keep printing new lines until Ctrl-C.
    #[arg(short, long)]
    pub follow: bool,
    /// Lines from before now to start with.
    #[arg(short = 'n', long = "tail", default_value_t = 100)]
    pub tail: u32,
    /// Print NDJSON events (started, line, end, error).
    #[arg(long)]
    pub json: bool,
}

impl LogsArgs {
    /// The request this command line makes.
    pub fn request(&self) -> Result<LogsRequest, String> {
        if self.tail > MAX_LOG_TAIL {
            return Err(format!(
                "--tail {} exceeds the {MAX_LOG_TAIL}-line limit",
                self.tail
            ));
        }
        let (agent, source) = match &self.unit {
            Some(unit) => (self.target.clone(), LogSource::Unit(unit.clone())),
            None => match self.target.split_once('/') {
                Some((a, c)) if !a.is_empty() && !c.is_empty() => {
                    (a.to_string(), LogSource::Container(c.to_string()))
                }
                _ => {
                    return Err(format!(
                        "{:?}: give AGENT/CONTAINER, or AGENT --unit NAME",
                        self.target
                    ));
                }
            },
        };
        let name = match &source {
            LogSource::Container(n) | LogSource::Unit(n) => n,
        };
        if !flotilla_wire::workloads::valid_workload_name(name) {
            return Err(format!("{name:?} is not a container or unit name"));
        }
        Ok(LogsRequest {
            agent,
            source,
            tail: self.tail,
            follow: self.follow,
        })
    }
}

/// Runs `flotilla logs` on the real terminal; Ctrl-C ends it.
pub async fn logs_command(
    client: &Client,
    req: &LogsRequest,
    json: bool,
) -> Result<u8, ClientError> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut err = io::stderr();
    tokio::select! {
        r = run_logs(client, req, json, &mut out, &mut err) => r,
        _ = tokio::signal::ctrl_c() => {
            let _ = out.flush();
            Ok(EXIT_INTERRUPTED)
        }
    }
}

/// Streams the logs `req` asks for into `out` and `err` until the end, a refusal or a failure.
pub async fn run_logs(
    client: &Client,
    req: &LogsRequest,
    json: bool,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<u8, ClientError> {
    let link = client.link();
    let (mut send, mut recv) = client.open_bi().await?;
    send.write_opening(&StreamOpen::Logs, req, MAX_LOGS_FRAME)
        .await
        .map_err(|e| link.stream_error(e))?;
    // `send` stays open until we return: closing it would tell the hub to stop.
    let _keep = send;
    loop {
        let frame = match read_frame::<LogFrame, _>(&mut recv, MAX_LOGS_FRAME).await {
            Ok(Some(f)) => f,
            Ok(None) => {
                return Err(link.stream_error("hub closed the logs stream without an end"));
            }
            Err(e) => return Err(link.stream_error(e)),
        };
        let written = match &frame {
            LogFrame::Started { resolved } if json => writeln!(
                out,
                "{}",
                serde_json::json!({ "event": "started", "id": resolved })
            ),
            LogFrame::Started { .. } => Ok(()),
            LogFrame::Data {
                stream,
                at_ms,
                data,
            } if json => writeln!(
                out,
                "{}",
                serde_json::json!({
                    "event": "line",
                    "stream": match stream { OutputStream::Stdout => "stdout", OutputStream::Stderr => "stderr" },
                    "at_ms": at_ms,
                    "data": String::from_utf8_lossy(&data.0),
                })
            ),
            LogFrame::Data { stream, data, .. } => match stream {
                OutputStream::Stdout => out.write_all(&data.0).and_then(|()| out.flush()),
                OutputStream::Stderr => {
                    let _ = out.flush();
                    err.write_all(&data.0)
                }
            },
            LogFrame::End => {
                if json {
                    let _ = writeln!(out, "{}", serde_json::json!({ "event": "end" }));
                }
                let _ = out.flush();
                return Ok(0);
            }
            LogFrame::Error(r) => {
                let _ = out.flush();
                if json {
                    let _ = writeln!(
                        out,
                        "{}",
                        serde_json::json!({ "event": "error", "code": r.code.to_string(), "message": r.message })
                    );
                    let _ = out.flush();
                }
                let _ = writeln!(err, "flotilla: {}", r.message);
                return Ok(if r.code == ErrorCode::BadRequest {
                    EXIT_USAGE
                } else {
                    1
                });
            }
        };
        if let Err(e) = written {
            if e.kind() == io::ErrorKind::BrokenPipe {
                return Ok(EXIT_BROKEN_PIPE);
            }
            return Err(ClientError::Output(e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(target: &str, unit: Option<&str>) -> LogsArgs {
        LogsArgs {
            target: target.into(),
            unit: unit.map(String::from),
            follow: true,
            tail: 10,
            json: false,
        }
    }

    #[test]
    fn targets_name_an_agent_and_a_source() {
        let r = args("web-1/nginx", None).request().expect("container");
        assert_eq!(r.agent, "web-1");
        assert_eq!(r.source, LogSource::Container("nginx".into()));
        assert!(r.follow);
        let r = args("web-1", Some("nginx.service"))
            .request()
            .expect("unit");
        assert_eq!(r.source, LogSource::Unit("nginx.service".into()));
        assert!(
            args("web-1", None)
                .request()
                .expect_err("no container")
                .contains("AGENT/CONTAINER")
        );
        assert!(
            args("web-1", Some("-x"))
                .request()
                .expect_err("bad")
                .contains("not a container or unit name")
        );
    }
}
