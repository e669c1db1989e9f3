//! The `flotilla` binary: parses flags, sets up logging (to a file while the console owns the
//! screen), runs the command on a tokio runtime, maps errors to exit codes.

use clap::Parser;
use flotilla::cli::{Cli, Command, EXIT_BROKEN_PIPE};
use std::io::IsTerminal;
use std::process::ExitCode;

/// Logs go to stderr (coloured on a terminal), filtered by `FLOTILLA_LOG` (warnings and errors by
/// default); while the console or the demo owns the terminal they go to `console.log` in the
/// user's cache directory.
fn init_logging(console: bool) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // Without FLOTILLA_LOG a plain level filter: an EnvFilter's directive matching is only worth
    // its start-up cost when someone asked for per-module levels.
    let filter: Box<dyn tracing_subscriber::layer::Layer<_> + Send + Sync> =
        match tracing_subscriber::EnvFilter::try_from_env("FLOTILLA_LOG") {
            Ok(f) => Box::new(f),
            Err(_) => Box::new(tracing_subscriber::filter::LevelFilter::WARN),
        };
    if !console {
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init();
        return;
    }
    let Some(dir) = flotilla::util::project_dirs().map(|d| d.cache_dir().to_owned()) else {
        return;
    };
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    if let Ok(file) = std::fs::File::create(dir.join("console.log")) {
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(std::sync::Mutex::new(file)),
            )
            .try_init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(matches!(cli.command, None | Some(Command::Demo { .. })));
    let one_shot = cli.command.as_ref().is_some_and(Command::is_one_shot);
    flotilla_certs::install_crypto_provider();
    let one_thread = cli
        .command
        .as_ref()
        .is_some_and(Command::runs_on_one_thread);
    let mut builder = if one_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flotilla: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match rt.block_on(flotilla::cli::run(cli)) {
        Ok(code) => code,
        // A reader that went away (`| head`) ends the command quietly, with the status shells
        // give a death by SIGPIPE.
        Err(err) if flotilla::cli::is_broken_pipe(&err) => EXIT_BROKEN_PIPE,
        Err(err) => {
            // Errors can quote what agents sent (names, paths): shown escaped, line by line.
            let text = format!("{err:#}");
            let lines: Vec<_> = text.lines().map(flotilla::util::escaped).collect();
            eprintln!("flotilla: {}", lines.join("\n"));
            1
        }
    };
    if one_shot {
        // A one-shot command is done once `run` returns: nothing left on its runtime (the QUIC
        // endpoint's driver) is waited for. The console, demo and mux drop theirs, which waits for
        // their tasks, whose destructors stop child processes and remove temporary files.
        rt.shutdown_background();
    }
    ExitCode::from(code)
}
