//! Shell completions (`clap_complete`) and manual pages (`clap_mangen`) generated from a daemon's
//! own command line, for its `completions` and `man` subcommands and for `install` to put where
//! bash, zsh, fish and man look on a Linux system.

pub use clap_complete::Shell;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The shells a system install writes completions for, with the folder each looks in (Debian's
/// `bash-completion`, zsh's vendor folder, fish's vendor folder) and the file name it expects.
pub const SYSTEM_COMPLETIONS: [(Shell, &str); 3] = [
    (Shell::Bash, "/usr/share/bash-completion/completions"),
    (Shell::Zsh, "/usr/share/zsh/vendor-completions"),
    (Shell::Fish, "/usr/share/fish/vendor_completions.d"),
];

/// Where a system install writes manual pages (section 1: user commands).
pub const SYSTEM_MAN_DIR: &str = "/usr/share/man/man1";

/// The file name `shell` loads completions for `bin` from.
pub fn completion_file_name(shell: Shell, bin: &str) -> String {
    match shell {
        Shell::Bash => bin.to_string(),
        Shell::Zsh => format!("_{bin}"),
        Shell::Fish => format!("{bin}.fish"),
        Shell::PowerShell => format!("_{bin}.ps1"),
        Shell::Elvish => format!("{bin}.elv"),
        _ => format!("{bin}.{shell}"),
    }
}

/// The completion script of `cmd` for `shell`.
pub fn completion(mut cmd: clap::Command, shell: Shell) -> Vec<u8> {
    let bin = cmd.get_name().to_string();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, bin, &mut out);
    out
}

/// One manual page per command and subcommand (`hubd.1`, `hubd-token-create.1`, …): file name and
/// roff text.
pub fn man_pages(cmd: clap::Command) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    fn collect(cmd: clap::Command, out: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            collect(sub, out)?;
        }
        let man = clap_mangen::Man::new(cmd);
        let mut text = Vec::new();
        man.render(&mut text)?;
        out.push((man.get_filename(), text));
        Ok(())
    }
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    collect(cmd, &mut out)?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Writes the manual pages of `cmd` into `dir` (created if missing); returns the files written.
pub fn write_man_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .map_err(|e| std::io::Error::new(e.kind(), format!("create {}: {e}", dir.display())))?;
    let mut written = Vec::new();
    for (name, text) in man_pages(cmd)? {
        let path = dir.join(name);
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(&text))
            .map_err(|e| std::io::Error::new(e.kind(), format!("write {}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}

/// What a daemon's `completions` or `man` subcommand asked for.
#[derive(Clone, Copy, Debug)]
pub enum Request<'a> {
    /// Print the completion script for this shell.
    Completions(Shell),
    /// Write the manual pages into this folder.
    Man(&'a Path),
}

/// Runs `BIN completions SHELL` or `BIN man DIR` for `cmd`: the script on stdout, or the pages
/// written and their paths on stdout; an error on stderr and exit 1.
pub fn run(cmd: clap::Command, request: Request<'_>) -> std::process::ExitCode {
    let bin = cmd.get_name().to_string();
    let result = match request {
        Request::Completions(shell) => {
            let text = completion(cmd, shell);
            let mut out = std::io::stdout().lock();
            out.write_all(&text)
                .and_then(|()| out.flush())
                .map_err(|e| std::io::Error::new(e.kind(), format!("write to stdout: {e}")))
        }
        Request::Man(dir) => write_man_pages(cmd, dir).map(|files| {
            for f in files {
                println!("{}", f.display());
            }
        }),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{bin}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// What `install` writes for one binary: completions per shell and manual pages.
#[derive(Clone, Debug, Default)]
pub struct ShellDocs {
    /// The binary's name (`hubd`, `agentd`).
    pub bin: String,
    /// Completion scripts for the shells of [`SYSTEM_COMPLETIONS`].
    pub completions: Vec<(Shell, Vec<u8>)>,
    /// Manual pages: file name and roff text.
    pub man_pages: Vec<(String, Vec<u8>)>,
}

impl ShellDocs {
    /// Everything for `cmd`.
    pub fn of(cmd: &clap::Command) -> std::io::Result<Self> {
        Ok(Self {
            bin: cmd.get_name().to_string(),
            completions: SYSTEM_COMPLETIONS
                .iter()
                .map(|(shell, _)| (*shell, completion(cmd.clone(), *shell)))
                .collect(),
            man_pages: man_pages(cmd.clone())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> clap::Command {
        clap::Command::new("demo")
            .about("A demo daemon")
            .subcommand(clap::Command::new("run").about("Serve"))
            .subcommand(
                clap::Command::new("token")
                    .about("Tokens")
                    .subcommand(clap::Command::new("create").about("Create one")),
            )
    }

    #[test]
    fn completions_name_the_subcommands_and_man_pages_cover_each() {
        let bash = String::from_utf8(completion(cli(), Shell::Bash)).expect("utf8");
        assert!(bash.contains("run") && bash.contains("token"), "{bash}");
        assert!(bash.contains("complete -F"), "a bash completion: {bash}");
        let names: Vec<String> = man_pages(cli())
            .expect("render")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            names,
            [
                "demo-run.1",
                "demo-token-create.1",
                "demo-token.1",
                "demo.1"
            ]
        );
        assert_eq!(completion_file_name(Shell::Zsh, "hubd"), "_hubd");
        assert_eq!(completion_file_name(Shell::Fish, "hubd"), "hubd.fish");
    }
}
