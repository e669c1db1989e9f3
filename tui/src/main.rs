//! The `flotilla` binary: parses flags, sets up logging (to a file while the console owns the
//! screen), runs the command, maps errors to exit codes.
//!
//! `main` is the C entry point rather than Rust's: `flotilla exec` is run in shell loops and its
//! start-up is part of every command's latency (docs/benchmarks.md, "Session 9"). Rust's own start
//! reads `/proc/self/maps` to place a stack-overflow handler and installs it with an alternate
//! signal stack, about 0.1 ms per run here; [`start`] keeps the two parts of it that matter to a
//! CLI. A stack overflow therefore ends in a plain SIGSEGV, without Rust's one-line message.

#![no_main]

use flotilla::cli::{Cli, Command};

fn init_logging(console: bool, one_shot: bool) {
    if one_shot && std::env::var_os("FLOTILLA_LOG").is_none() {
        // Warnings only, without fmt's span registry and filter (see `flotilla::warnings`).
        let _ = tracing_subscriber::util::SubscriberInitExt::try_init(
            flotilla::warnings::Warnings::default(),
        );
        return;
    }
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

#[unsafe(no_mangle)]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    start();
    // `exit` flushes standard output as returning from Rust's main would.
    std::process::exit(i32::from(run()))
}

/// What Rust's start does that a CLI relies on: descriptors 0 to 2 open (a closed one is pointed
/// at /dev/null, so that no file we open later takes its place and receives our output), and
/// SIGPIPE ignored, so that a closed pipe is an error we report (`| head` ends quietly, see
/// `exec::EXIT_BROKEN_PIPE`) rather than a death by signal.
fn start() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: `fds` is a valid array of three pollfd; a zero timeout returns at once.
    let polled = unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) };
    if polled > 0 {
        for pfd in fds.iter().filter(|p| p.revents & libc::POLLNVAL != 0) {
            // SAFETY: a NUL-terminated path; the new descriptor is the lowest free one, which is
            // the closed one we are filling, as descriptors below it are open.
            let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
            if fd != pfd.fd {
                std::process::abort();
            }
        }
    }
    // SAFETY: no other thread exists yet; SIG_IGN is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

fn run() -> u8 {
    let cli = Cli::parse_args();
    let one_shot = cli.command.as_ref().is_some_and(Command::is_one_shot);
    init_logging(
        matches!(cli.command, None | Some(Command::Demo { .. })),
        one_shot,
    );
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
            return 1;
        }
    };
    let code = match rt.block_on(flotilla::cli::run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("flotilla: {err:#}");
            1
        }
    };
    if one_shot {
        // A one-shot command has finished with the hub and left nothing running; tearing its
        // runtime down would only delay the exit. Others (the console, demo, mux) drop theirs:
        // their tasks' destructors stop child processes and remove temporary files.
        std::mem::forget(rt);
    }
    code
}
