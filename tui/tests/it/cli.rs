//! The `flotilla` binary as a script sees it before any hub exists: exit statuses and the words of
//! its errors. (Being an integration test of this package also makes cargo build the binary before
//! the test run, which hubd's console tests start.)

use std::process::Command;

fn flotilla() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
}

#[test]
fn version_names_the_package_version() {
    let out = flotilla().arg("--version").output().expect("run flotilla");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(env!("CARGO_PKG_VERSION")),
        "--version printed {text:?}"
    );
}

#[test]
fn a_command_without_a_login_says_how_to_get_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = flotilla()
        .args(["agents", "--json", "--login-dir"])
        .arg(dir.path().join("nowhere"))
        .env_remove("FLOTILLA_HUB")
        .output()
        .expect("run flotilla");
    assert!(!out.status.success(), "no login must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    // `--login-dir` came after the subcommand and must still be the one used.
    assert!(
        err.contains("no login in")
            && err.contains("nowhere")
            && err.contains("flotilla login --token"),
        "stderr: {err}"
    );
}

/// A subcommand's help lists the global options, which may follow it.
#[test]
fn subcommand_help_lists_the_global_options() {
    let out = flotilla()
        .args(["exec", "--help"])
        .output()
        .expect("run flotilla");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for option in [
        "--login-dir",
        "--hub",
        "--no-mux",
        "--mux-socket",
        "--config",
    ] {
        assert!(help.contains(option), "exec --help lacks {option}:\n{help}");
    }
}

#[test]
fn an_unknown_subcommand_is_a_usage_error() {
    let out = flotilla().arg("frobnicate").output().expect("run flotilla");
    assert_eq!(out.status.code(), Some(2), "clap usage errors exit 2");
    assert!(String::from_utf8_lossy(&out.stderr).contains("frobnicate"));
}

#[test]
fn completions_name_the_subcommands_and_man_writes_a_page_each() {
    let out = flotilla()
        .args(["completions", "bash"])
        .output()
        .expect("run flotilla");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bash = String::from_utf8_lossy(&out.stdout);
    assert!(bash.contains("complete -F _flotilla"), "{bash}");
    for sub in ["exec", "cp", "ls", "watch", "mux", "login", "completions"] {
        assert!(bash.contains(sub), "{sub} missing from\n{bash}");
    }
    for (shell, marker) in [
        ("zsh", "#compdef flotilla"),
        ("fish", "complete -c flotilla"),
    ] {
        let out = flotilla()
            .args(["completions", shell])
            .output()
            .expect("run flotilla");
        assert!(out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(marker),
            "{shell}"
        );
    }
    let out = flotilla()
        .args(["completions", "tcsh"])
        .output()
        .expect("run flotilla");
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let man = dir.path().join("man1");
    let out = flotilla()
        .arg("man")
        .arg(&man)
        .output()
        .expect("run flotilla");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(man.join("flotilla-cp.1")).expect("cp page");
    assert!(page.contains(".TH flotilla-cp 1"), "{page}");
    assert!(man.join("flotilla.1").is_file());
}
