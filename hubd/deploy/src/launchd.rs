//! launchd property lists for macOS: a LaunchDaemon (system, at boot) or a LaunchAgent (user, at
//! login), kept alive after failures but not after a clean exit, throttled between restarts.

use crate::{Scope, ServiceSpec};

/// Seconds launchd waits between restarts (its own default is 10; we say so explicitly).
const THROTTLE_INTERVAL_S: u32 = 10;
/// Seconds between SIGTERM and SIGKILL at stop: the daemons drain within this.
const EXIT_TIMEOUT_S: u32 = 30;
/// `Umask` 077 in decimal, as plists take it: files the daemon creates are private.
const UMASK_077: u32 = 0o077;

/// Escapes text for an XML element.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The plist text for `spec`.
pub fn plist(spec: &ServiceSpec) -> String {
    let s = |text: &str| format!("<string>{}</string>", xml_escape(text));
    let mut out = String::new();
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str("<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n");
    out.push_str(&format!(
        "<!-- {}: written by `{} install`, which rewrites it. -->\n",
        spec.daemon.display_name(),
        spec.daemon.binary()
    ));
    out.push_str("<plist version=\"1.0\">\n<dict>\n");
    let mut kv = |key: &str, value: String| {
        out.push_str(&format!("  <key>{key}</key>\n  {value}\n"));
    };
    kv("Label", s(spec.daemon.launchd_label()));
    let mut args = format!("<array>\n    {}\n", s(&spec.program.display().to_string()));
    for a in &spec.args {
        args.push_str(&format!("    {}\n", s(a)));
    }
    args.push_str("  </array>");
    kv("ProgramArguments", args);
    kv("RunAtLoad", "<true/>".into());
    // Restart after a crash or an error exit, not after `launchctl bootout` or a clean stop.
    kv(
        "KeepAlive",
        "<dict>\n    <key>SuccessfulExit</key>\n    <false/>\n  </dict>".into(),
    );
    kv(
        "ThrottleInterval",
        format!("<integer>{THROTTLE_INTERVAL_S}</integer>"),
    );
    kv(
        "ExitTimeOut",
        format!("<integer>{EXIT_TIMEOUT_S}</integer>"),
    );
    kv("Umask", format!("<integer>{UMASK_077}</integer>"));
    kv("ProcessType", s("Background"));
    if spec.scope == Scope::System
        && let Some(user) = &spec.user
    {
        kv("UserName", s(user));
    }
    if let Some(log) = &spec.log_file {
        let log = log.display().to_string();
        kv("StandardOutPath", s(&log));
        kv("StandardErrorPath", s(&log));
    }
    out.push_str("</dict>\n</plist>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Daemon;
    use std::path::PathBuf;

    /// Checks that tags nest and close (enough XML for what we write).
    fn well_formed(xml: &str) -> bool {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = xml;
        while let Some(start) = rest.find('<') {
            let Some(end) = rest[start..].find('>') else {
                return false;
            };
            let tag = &rest[start + 1..start + end];
            rest = &rest[start + end + 1..];
            if tag.starts_with('?') || tag.starts_with('!') || tag.ends_with('/') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                if stack.pop().as_deref() != Some(name) {
                    return false;
                }
            } else {
                stack.push(tag.split_whitespace().next().unwrap_or("").to_string());
            }
        }
        stack.is_empty()
    }

    #[test]
    fn plist_is_well_formed_and_escaped() {
        let spec = ServiceSpec {
            daemon: Daemon::Agent,
            scope: Scope::System,
            program: PathBuf::from("/usr/local/bin/agentd"),
            args: vec!["--data-dir".into(), "/var/lib/a&b <x>".into(), "run".into()],
            user: Some("_flotilla".into()),
            data_dir: PathBuf::from("/var/lib/a&b <x>"),
            config_file: PathBuf::from("/etc/flotilla/agent.toml"),
            log_file: Some(PathBuf::from("/var/log/flotilla/agent.log")),
            low_port: false,
        };
        let text = plist(&spec);
        assert!(well_formed(&text), "{text}");
        assert!(text.contains("<string>/var/lib/a&amp;b &lt;x&gt;</string>"));
        assert!(text.contains("<key>Label</key>\n  <string>dev.flotilla.agent</string>"));
        assert!(text.contains("<key>UserName</key>\n  <string>_flotilla</string>"));
        assert!(text.contains("<key>SuccessfulExit</key>\n    <false/>"));
        assert!(text.contains("<key>StandardErrorPath</key>"));
        assert!(text.contains("<integer>63</integer>"), "umask 077");
        assert!(!well_formed("<a><b></a></b>"));
    }
}
