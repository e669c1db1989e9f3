//! Runs the parsed command: each subcommand's requests and what it prints, and its exit status.

use super::arguments::{Cli, Command};
use super::mux_command::{mux_check, mux_run, mux_stop};
use crate::client::{Client, ClientError, Login, ONE_SHOT_CLOSE_WAIT};
use crate::files::{self, FilesError, Place};
use crate::format;
use crate::mux::{self, MuxOptions};
use crate::util::{create_private_dir, now_ms};
use crate::watch::{watch, watch_files};
use anyhow::Context;
use flotilla_wire::msg::{OpRequest, OpResponse};

/// Runs a subcommand; returns the exit code.
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    let Some(command) = &cli.command else {
        let history = match cli.file_config()?.history {
            Some(false) => None,
            _ => crate::history::HistoryFile::default_location(),
        };
        return crate::console::run_attached(cli.login()?, history).await;
    };
    match command {
        Command::Login { token, name, json } => {
            let dir = cli.login_dir()?;
            create_private_dir(&dir)?;
            let hello = crate::client::local_hello();
            let user = std::env::var("USER").unwrap_or_else(|_| "operator".into());
            let name = name
                .clone()
                .unwrap_or_else(|| format!("{user}-{}", hello.hostname));
            let done = flotilla_certs::enrol::enrol(token, &dir, name, Vec::new(), hello)
                .await
                .context("login failed")?;
            let e = &done.enrolled;
            if *json {
                crate::util::outln!(
                    "{}",
                    serde_json::json!({ "id": e.identity, "name": e.name, "role": e.role, "hubs": done.hubs, "login_dir": dir })
                )?;
            } else {
                crate::util::outln!(
                    "Logged in as {} ({}, role {}); identity in {}",
                    e.name,
                    e.identity,
                    e.role,
                    dir.display()
                )?;
            }
            Ok(0)
        }
        Command::Agents { sort, json } => {
            let client = cli.one_shot_client().await?;
            let result = client.request(&OpRequest::ListAgents).await;
            client.close_within(ONE_SHOT_CLOSE_WAIT).await;
            let mut list = match result? {
                OpResponse::Agents(list) => list,
                other => anyhow::bail!("unexpected reply {other:?}"),
            };
            format::sort_agents(&mut list, sort);
            if *json {
                crate::util::outln!("{}", serde_json::to_string_pretty(&list)?)?;
            } else {
                crate::util::out!("{}", format::agents_table(&list, now_ms()))?;
            }
            Ok(0)
        }
        Command::Agent { name, json, health } => {
            let client = cli.one_shot_client().await?;
            let result = client
                .request(&OpRequest::Agent {
                    query: name.clone(),
                })
                .await;
            let host = match &result {
                Ok(OpResponse::Agent(a)) => {
                    Some(crate::hostdetail::host_view(&client, a.id.to_string(), *health).await)
                }
                _ => None,
            };
            client.close_within(ONE_SHOT_CLOSE_WAIT).await;
            // Host depth is extra: a hub without it still shows the agent, unless it was asked for.
            let host = match host {
                Some(Ok(view)) => view,
                Some(Err(e)) if *health => return Err(e.into()),
                _ => None,
            };
            match result {
                Ok(OpResponse::Agent(a)) => {
                    if *json {
                        let mut value = serde_json::to_value(&a)?;
                        if let (Some(obj), Some(view)) = (value.as_object_mut(), &host) {
                            obj.insert("host".into(), serde_json::to_value(view)?);
                        }
                        crate::util::outln!("{}", serde_json::to_string_pretty(&value)?)?;
                    } else {
                        crate::util::out!("{}", format::agent_detail(&a, now_ms()))?;
                        if let Some(view) = &host {
                            crate::util::out!("{}", crate::hostdetail::host_lines(view))?;
                        }
                    }
                    Ok(0)
                }
                Ok(other) => anyhow::bail!("unexpected reply {other:?}"),
                Err(e) => Err(e.into()),
            }
        }
        Command::Metrics {
            name,
            since,
            series: Some(spec),
            json,
        } => {
            exec_like(&cli, |c| async move {
                crate::host::cli::metrics_series_command(&c, name, spec, *since, *json).await
            })
            .await
        }
        Command::Top(args) => {
            exec_like(&cli, |c| async move {
                crate::host::cli::top_command(&c, args).await
            })
            .await
        }
        Command::Metrics {
            name, since, json, ..
        } => {
            let client = cli.one_shot_client().await?;
            let result = client
                .request(&OpRequest::Metrics {
                    query: name.clone(),
                    since_s: *since,
                })
                .await;
            client.close_within(ONE_SHOT_CLOSE_WAIT).await;
            match result? {
                OpResponse::Series(series) => {
                    if *json {
                        crate::util::outln!("{}", serde_json::to_string_pretty(&series)?)?;
                    } else {
                        crate::util::out!("{}", format::series_table(&series))?;
                    }
                    Ok(0)
                }
                other => anyhow::bail!("unexpected reply {other:?}"),
            }
        }
        Command::Watch {
            metrics,
            files,
            agent,
            json,
        } => {
            let client = Client::connect(&cli.login()?).await?;
            if *files {
                watch_files(&client, agent.clone(), *json).await?;
            } else {
                watch(&client, *metrics, *json).await?;
            }
            Ok(0)
        }
        Command::Ls {
            target,
            recursive,
            json,
        } => {
            let (agent, path) = match Place::parse(target) {
                Place::Agent { agent, path } => (agent, path),
                Place::Local(_) => (target.clone(), String::new()),
            };
            let client = Client::connect(&cli.login()?).await?;
            let listing = files::list(&client, &agent, &path, *recursive).await;
            client.close().await;
            let listing = listing?;
            if *json {
                crate::util::outln!("{}", serde_json::to_string_pretty(&listing)?)?;
            } else {
                crate::util::out!("{}", files::listing_table(&listing))?;
            }
            Ok(0)
        }
        Command::Cp {
            src,
            dst,
            recursive,
            retry_for,
            json,
        } => {
            let opts = files::CopyOptions {
                recursive: *recursive,
                retry_for: std::time::Duration::from_secs(*retry_for),
            };
            cp(&cli.login()?, src, dst, &opts, *json).await
        }
        Command::Demo { agents, no_console } => crate::demo::run(*agents, *no_console).await,
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "flotilla", &mut script);
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            out.write_all(&script)
                .and_then(|()| out.flush())
                .context("write the completion script")?;
            Ok(0)
        }
        Command::Man { dir } => {
            for page in man_pages(dir)? {
                crate::util::outln!("{}", page.display())?;
            }
            Ok(0)
        }
        Command::Mux {
            socket,
            persist,
            check,
            stop,
            json,
        } => {
            let login = cli.login()?;
            let explicit = socket.clone().or_else(|| cli.mux_socket.clone());
            let path = explicit
                .clone()
                .unwrap_or_else(|| mux::default_socket(&login));
            if *check {
                return mux_check(&path, *json).await;
            }
            if *stop {
                return mux_stop(&path).await;
            }
            let opts = MuxOptions {
                socket: path,
                default_dir: explicit.is_none(),
                persist: persist
                    .filter(|s| *s > 0)
                    .map(std::time::Duration::from_secs),
            };
            mux_run(&login, opts).await
        }
        Command::Exec(args) => {
            exec_like(&cli, |c| async move {
                crate::exec::exec_command(&c, &args.request(), args.json).await
            })
            .await
        }
        Command::Service(args) => {
            let requests = match args.requests() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("flotilla service: {e}");
                    return Ok(2);
                }
            };
            exec_like(&cli, |c| async move {
                crate::workloads::services_cli::service_command(&c, &requests, args.json).await
            })
            .await
        }
        Command::Health {
            selector,
            timeout,
            json,
        } => {
            exec_like(&cli, |c| async move {
                let req = crate::exec::health_request(selector, *timeout);
                crate::exec::exec_command(&c, &req, *json).await
            })
            .await
        }
        Command::Ping { selector, json } => {
            exec_like(&cli, |c| async move {
                crate::exec::ping_command(&c, selector, *json).await
            })
            .await
        }
        Command::Jobs { limit, json } => {
            exec_like(&cli, |c| async move {
                crate::exec::jobs_command(&c, *limit, *json).await
            })
            .await
        }
        Command::Job { id, json } => {
            exec_like(&cli, |c| async move {
                crate::exec::job_command(&c, *id, *json).await
            })
            .await
        }
        Command::Logs(args) => {
            let req = match args.request() {
                Ok(r) => r,
                Err(e) => return usage(&e),
            };
            exec_like(&cli, |c| async move {
                crate::workloads::logs::logs_command(&c, &req, args.json).await
            })
            .await
        }
        Command::Shell(crate::shell::ShellArgs { join: Some(id), .. }) => {
            let id = *id;
            exec_like(&cli, |c| async move {
                crate::sessions::join_command(&c, id).await
            })
            .await
        }
        Command::Shell(args) => {
            let req = match args.request(&crate::shell::local_term(), crate::shell::local_size()) {
                Ok(r) => r,
                Err(e) => return usage(&e),
            };
            exec_like(&cli, |c| async move {
                crate::shell::shell_command(&c, &req).await
            })
            .await
        }
        Command::Container(args) => {
            let reqs = match args.requests() {
                Ok(r) => r,
                Err(e) => return usage(&e),
            };
            exec_like(&cli, |c| async move {
                // One job per selector, one after another; the worst exit status wins.
                let mut worst = 0;
                for req in &reqs {
                    let code = crate::exec::exec_command(&c, req, args.json).await?;
                    worst = worst.max(code);
                    if code == crate::exec::EXIT_INTERRUPTED {
                        break;
                    }
                }
                Ok(worst)
            })
            .await
        }
        Command::Compose(args) => {
            let req = match args.request() {
                Ok(r) => r,
                Err(e) => return usage(&e),
            };
            exec_like(&cli, |c| async move {
                crate::exec::exec_command(&c, &req, args.json).await
            })
            .await
        }
        Command::Sessions { limit, json } => {
            exec_like(&cli, |c| async move {
                crate::sessions::sessions_command(&c, *limit, *json).await
            })
            .await
        }
        Command::Replay { id, speed, raw } => {
            let opts = crate::sessions::ReplayOptions {
                speed: *speed,
                raw: *raw,
            };
            exec_like(&cli, |c| async move {
                crate::sessions::replay_command(&c, *id, opts).await
            })
            .await
        }
        Command::Audit { limit, json } => {
            exec_like(&cli, |c| async move {
                crate::exec::audit_command(&c, *limit, *json).await
            })
            .await
        }
        Command::Ps {
            selector,
            all,
            json,
        } => {
            exec_like(&cli, |c| async move {
                crate::workloads::ps::ps_command(&c, selector.as_deref(), *all, *json).await
            })
            .await
        }
        Command::Services {
            selector,
            failed,
            json,
        } => {
            exec_like(&cli, |c| async move {
                crate::workloads::services::services_command(
                    &c,
                    selector.as_deref(),
                    *failed,
                    *json,
                )
                .await
            })
            .await
        }
        Command::Alerts(args) => {
            exec_like(&cli, |c| async move {
                crate::alerts::alerts_command(&c, args.all, args.firing_exit, args.json).await
            })
            .await
        }
        Command::Alert(args) => {
            let rules = match args.rules() {
                Ok(r) => r,
                Err(e) => return usage(&e),
            };
            exec_like(&cli, |c| async move {
                crate::alerts::alert_command(&c, &args.command, &rules).await
            })
            .await
        }
        Command::Silence(args) => {
            exec_like(&cli, |c| async move {
                crate::alerts::silence_command(&c, &args.command).await
            })
            .await
        }
    }
}

/// A usage error found before dialling: said on standard error, exit 2 as clap does.
fn usage(message: &str) -> anyhow::Result<u8> {
    eprintln!("flotilla: {message}");
    Ok(crate::exec::EXIT_USAGE)
}

/// Connects (through the mux when one runs), runs `f`, closes; the exit status comes from `f`.
async fn exec_like<F, Fut>(cli: &Cli, f: F) -> anyhow::Result<u8>
where
    F: FnOnce(std::sync::Arc<Client>) -> Fut,
    Fut: Future<Output = Result<u8, ClientError>>,
{
    let client = std::sync::Arc::new(cli.one_shot_client().await?);
    let result = f(client.clone()).await;
    // Long enough for the close to be sent (the hub then ends the session at once), short enough
    // not to add QUIC's draining period to every `flotilla exec`.
    client.close_within(ONE_SHOT_CLOSE_WAIT).await;
    Ok(result?)
}

/// `flotilla cp`: Ctrl-C cancels on both ends; exit 2 for usage errors, 130 when cancelled.
async fn cp(
    login: &Login,
    src: &str,
    dst: &str,
    opts: &files::CopyOptions,
    json: bool,
) -> anyhow::Result<u8> {
    let (src, dst) = (Place::parse(src), Place::parse(dst));
    let cancel = tokio_util::sync::CancellationToken::new();
    let on_signal = cancel.clone();
    let signals = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });
    let mut progress = files::progress::Progress::new(json);
    let result = files::copy(login, &src, &dst, opts, &cancel, &mut |ev| {
        progress.on_event(ev)
    })
    .await;
    signals.abort();
    progress.finish();
    match result {
        Ok(report) => {
            if json {
                crate::util::outln!(
                    "{}",
                    serde_json::json!({ "event": "summary", "report": report })
                )?;
            } else if report.files != 1 || report.dirs > 0 {
                crate::util::outln!(
                    "{} files ({}), {} directories, {} skipped",
                    report.files,
                    format::bytes(report.bytes),
                    report.dirs,
                    report.skipped
                )?;
            }
            Ok(0)
        }
        Err(FilesError::Cancelled) => {
            eprintln!("flotilla: copy cancelled; partial files removed on both ends");
            Ok(130)
        }
        Err(FilesError::Usage(m)) => {
            eprintln!("flotilla: {}", crate::util::Escaped(&m));
            Ok(2)
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes `flotilla.1` and a page per subcommand (`flotilla-exec.1`) into `dir`.
fn man_pages(dir: &std::path::Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    fn render(
        cmd: clap::Command,
        dir: &std::path::Path,
        out: &mut Vec<std::path::PathBuf>,
    ) -> anyhow::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            render(sub, dir, out)?;
        }
        let man = clap_mangen::Man::new(cmd);
        let mut text = Vec::new();
        man.render(&mut text)?;
        let path = dir.join(man.get_filename());
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        out.push(path);
        Ok(())
    }
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut cmd = <Cli as clap::CommandFactory>::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    render(cmd, dir, &mut pages)?;
    pages.sort();
    Ok(pages)
}
