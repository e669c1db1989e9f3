//! SIGHUP: live keys are applied while the hub serves, the rest are reported as needing a
//! restart, and a broken file keeps the running configuration.

use crate::harness::binaries::{Agent, Hub, enrol, signal, status};

fn set(file: &std::path::Path, key: &str, value: &str) {
    let text = std::fs::read_to_string(file).expect("read");
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with(&format!("{key} =")))
        .map(str::to_string)
        .collect();
    // Top-level keys must come before any table; hub.toml has none.
    lines.insert(0, format!("{key} = {value}"));
    std::fs::write(file, lines.join("\n") + "\n").expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_what_is_safe_and_reports_the_rest() {
    let mut hub = Hub::init().await;
    hub.start().await;
    let token = hub.token("agent", 1).await;
    let paths = enrol(hub.dir.path(), "app-1", &token).await;
    let mut agent = Agent::start(&paths);
    agent.connected().await;
    let before = status(&hub.data).await.expect("status");
    assert_eq!(before.metrics_interval_ms, 5000);
    assert_eq!(before.history_minute_days, 30);

    let file = hub.data.join("hub.toml");
    set(&file, "metrics_interval_ms", "2000");
    set(&file, "history_minute_days", "7");
    set(&file, "log_level", "\"debug\"");
    set(&file, "listen", "\"127.0.0.1:1\"");
    signal(hub.pid(), "-HUP").await;
    hub.reloaded().await;
    let now = status(&hub.data).await.expect("status");
    assert_eq!(
        (now.metrics_interval_ms, now.history_minute_days),
        (2000, 7),
        "the reload applied"
    );
    assert_eq!(now.listen, before.listen, "the address needs a restart");
    assert_eq!(now.pid, before.pid, "same process");
    let log = hub.log();
    assert!(log.contains("configuration reloaded"), "{log}");
    assert!(log.contains("metrics_interval_ms: 5000 -> 2000"), "{log}");
    assert!(log.contains("take effect at the next restart"), "{log}");
    assert!(
        log.contains("\"listen\""),
        "listen is named as needing a restart: {log}"
    );
    assert!(log.contains("log filter is now"), "{log}");

    // The log filter follows the file: at warn, a token creation (info) is not logged...
    let count = |what: &str| hub.log().matches(what).count();
    let restarts = count("take effect at the next restart");
    let created = count("token created");
    set(&file, "log_level", "\"warn\"");
    signal(hub.pid(), "-HUP").await;
    hub.reloaded().await;
    // The still-pending listen change is warned about at every reload: the reload happened.
    assert!(count("take effect at the next restart") > restarts);
    hub.token("agent", 1).await;
    assert_eq!(
        count("token created"),
        created,
        "info is filtered out at warn"
    );
    // ...and at info again, it is.
    set(&file, "log_level", "\"info\"");
    signal(hub.pid(), "-HUP").await;
    hub.reloaded().await;
    assert!(count("take effect at the next restart") > restarts + 1);
    hub.token("agent", 1).await;
    assert_eq!(count("token created"), created + 1);

    // A broken file is refused and the running configuration kept.
    set(&file, "metrics_interval_ms", "5");
    signal(hub.pid(), "-HUP").await;
    hub.reloaded().await;
    assert!(
        hub.log().contains("configuration reload failed"),
        "{}",
        hub.log()
    );
    assert!(
        hub.log().contains("metrics_interval_ms = 5 is below"),
        "{}",
        hub.log()
    );
    let kept = status(&hub.data).await.expect("still serving");
    assert_eq!(kept.metrics_interval_ms, 2000);
    assert_eq!(kept.agents_online, 1, "agents undisturbed by reloads");

    agent.stop().await;
    assert!(hub.stop().await.success());
}
