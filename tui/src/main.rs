//! The `flotilla` binary: parses flags, sets up logging (to a file while the console owns the
//! screen), runs the command, maps errors to exit codes.

use clap::Parser;
use flotilla::cli::{Cli, Command};
use std::process::ExitCode;

fn init_logging(console: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOTILLA_LOG")
        .unwrap_or_else(|_| "warn".into());
    let log_dir = directories::ProjectDirs::from("dev", "flotilla", "flotilla")
        .map(|d| d.cache_dir().to_owned());
    match (console, log_dir) {
        (true, Some(dir)) if std::fs::create_dir_all(&dir).is_ok() => {
            if let Ok(file) = std::fs::File::create(dir.join("console.log")) {
                tracing_subscriber::fmt()
                    .with_env_filter(filter)
                    .with_ansi(false)
                    .with_writer(std::sync::Mutex::new(file))
                    .init();
            }
        }
        (true, _) => {}
        (false, _) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(matches!(cli.command, None | Some(Command::Demo { .. })));
    flotilla_certs::install_crypto_provider();
    let mut builder = if cli.command.as_ref().is_some_and(Command::is_one_shot) {
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
    match rt.block_on(flotilla::cli::run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("flotilla: {err:#}");
            ExitCode::FAILURE
        }
    }
}
