//! SIGHUP: the configuration is read again and what can change under a running hub is applied —
//! the metrics interval, history retention, the log filter and the alert receivers. Everything else (addresses,
//! timeouts, limits, any key added later) needs a restart and is reported as such: a key is
//! live only if this module says so.

use crate::{HubConfig, HubCtx, history};
use serde::Serialize;

/// Keys applied while serving.
pub const LIVE_KEYS: &[&str] = &[
    "metrics_interval_ms",
    "history_minute_days",
    "history_ten_minute_days",
    "container_history_days",
    "log_level",
    "receiver",
    "notify",
    "alert",
];

/// What a reload did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReloadReport {
    /// `key: old -> new` for each key applied.
    pub applied: Vec<String>,
    /// Keys that changed in the file but need a restart.
    pub needs_restart: Vec<String>,
    /// The log filter changed (the caller owns the subscriber and applies it).
    pub log_level_changed: bool,
    /// Receivers or `[notify]` changed (the caller hands them to the notifier, which writes).
    pub notify_changed: bool,
}

fn table(config: &HubConfig) -> toml::Table {
    match toml::Value::try_from(config) {
        Ok(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    }
}

fn show(v: Option<&toml::Value>) -> String {
    v.map_or_else(|| "(unset)".to_string(), ToString::to_string)
}

/// Applies the live keys of `new` that differ from `running` and lists the others. Returns the
/// report and the configuration now in force (`running` with the live keys of `new`).
pub fn apply(ctx: &HubCtx, running: &HubConfig, new: &HubConfig) -> (ReloadReport, HubConfig) {
    let (old_t, new_t) = (table(running), table(new));
    let mut keys: Vec<&String> = old_t.keys().chain(new_t.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut report = ReloadReport::default();
    let mut effective = running.clone();
    for key in keys {
        let (a, b) = (old_t.get(key), new_t.get(key));
        if a == b {
            continue;
        }
        if LIVE_KEYS.contains(&key.as_str()) {
            report
                .applied
                .push(format!("{key}: {} -> {}", show(a), show(b)));
        } else {
            report.needs_restart.push(key.clone());
        }
    }
    if effective.metrics_interval_ms != new.metrics_interval_ms {
        effective.metrics_interval_ms = new.metrics_interval_ms;
        ctx.registry
            .set_default_interval_ms(new.metrics_interval_ms);
    }
    if (
        effective.history_minute_days,
        effective.history_ten_minute_days,
        effective.container_history_days,
    ) != (
        new.history_minute_days,
        new.history_ten_minute_days,
        new.container_history_days,
    ) {
        effective.history_minute_days = new.history_minute_days;
        effective.history_ten_minute_days = new.history_ten_minute_days;
        effective.container_history_days = new.container_history_days;
        ctx.history.set_retention(history::Retention {
            minute_days: new.history_minute_days,
            ten_minute_days: new.history_ten_minute_days,
            container_days: new.container_history_days(),
        });
    }
    if effective.alert != new.alert {
        effective.alert = new.alert.clone();
        let changes = ctx.alerts.set_config_rules(ctx, &new.alert);
        report.applied.retain(|a| !a.starts_with("alert:"));
        report.applied.extend(changes);
    }
    if effective.log_level != new.log_level {
        effective.log_level = new.log_level.clone();
        report.log_level_changed = true;
    }
    if (&effective.receiver, &effective.notify) != (&new.receiver, &new.notify) {
        // Secrets print as `***`, so a changed secret alone is invisible in the table diff.
        if !report.applied.iter().any(|a| a.starts_with("receiver:"))
            && effective.receiver != new.receiver
        {
            report.applied.push("receiver: a secret changed".into());
        }
        effective.receiver = new.receiver.clone();
        effective.notify = new.notify.clone();
        report.notify_changed = true;
    }
    (report, effective)
}

/// The log filter of the running binary, which SIGHUP may change (`log_level`) unless `RUST_LOG`
/// set it: the variable is an operator's explicit, temporary override and wins.
pub struct LogControl {
    handle: tracing_subscriber::reload::Handle<
        tracing_subscriber::EnvFilter,
        tracing_subscriber::Registry,
    >,
    from_env: bool,
}

impl LogControl {
    /// Wraps the reload handle of the installed subscriber; `from_env`: `RUST_LOG` chose the filter.
    pub fn new(
        handle: tracing_subscriber::reload::Handle<
            tracing_subscriber::EnvFilter,
            tracing_subscriber::Registry,
        >,
        from_env: bool,
    ) -> Self {
        Self { handle, from_env }
    }

    /// Sets the filter from `log_level` (`info` when unset). Returns what happened, in words.
    pub fn apply(&self, log_level: Option<&str>) -> String {
        if self.from_env {
            return "RUST_LOG is set and wins over log_level".into();
        }
        let level = log_level.unwrap_or("info");
        match tracing_subscriber::EnvFilter::try_new(level) {
            Ok(filter) => match self.handle.reload(filter) {
                Ok(()) => format!("log filter is now {level:?}"),
                Err(e) => format!("log filter unchanged: {e}"),
            },
            Err(e) => format!("log filter unchanged: {level:?}: {e}"),
        }
    }
}

/// `hubd run`: serves until SIGTERM or SIGINT (a drain, then exit 0); SIGHUP reloads.
pub async fn serve(
    paths: crate::HubPaths,
    source: crate::settings::Source,
    log: LogControl,
    service: tokio_util::sync::CancellationToken,
) -> anyhow::Result<std::process::ExitCode> {
    let resolved = {
        let source = source.clone();
        tokio::task::spawn_blocking(move || source.resolve()).await?
    };
    let mut running = resolved.map_err(crate::HubError::from)?.config;
    if running.log_level.is_some() {
        let said = log.apply(running.log_level.as_deref());
        tracing::info!(%said, "log filter from the configuration");
    }
    let notifier = deploy::notify::Notifier::new(std::env::var_os("NOTIFY_SOCKET"));
    let stop = deploy::stop::requested(service);
    tokio::pin!(stop);
    let mut hup = Hangup::register()?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let hub = crate::start(paths, running.clone(), cancel.clone()).await?;
    let serving = format!("serving on {}", hub.local_addr);
    if let Err(e) = notifier.ready(&serving) {
        tracing::warn!(error = %e, "could not notify the service manager");
    }
    loop {
        tokio::select! {
            () = &mut stop => break,
            () = hup.recv() => {
                let _ = notifier.reloading();
                let again = {
                    let source = source.clone();
                    tokio::task::spawn_blocking(move || source.resolve()).await?
                };
                match again {
                    Ok(effective) => {
                        let (report, now) = apply(&hub.ctx, &running, &effective.config);
                        if report.notify_changed
                            && let Err(e) = hub.ctx.notifier.reconfigure(&now).await
                        {
                            tracing::warn!(error = %e, "alert receivers changed, but held messages were not rescheduled");
                        }
                        let log_said = report
                            .log_level_changed
                            .then(|| log.apply(now.log_level.as_deref()));
                        running = now;
                        tracing::info!(
                            applied = ?report.applied,
                            needs_restart = ?report.needs_restart,
                            log = ?log_said,
                            "configuration reloaded"
                        );
                        if !report.needs_restart.is_empty() {
                            tracing::warn!(
                                keys = ?report.needs_restart,
                                "changed keys take effect at the next restart (systemctl restart flotilla-hub)"
                            );
                        }
                    }
                    Err(invalid) => tracing::error!(
                        error = %invalid.error,
                        "configuration reload failed; the running configuration is kept"
                    ),
                }
                let _ = notifier.ready(&serving);
            }
        }
    }
    tracing::info!("stop requested, draining");
    let _ = notifier.stopping();
    cancel.cancel();
    hub.wait().await?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// SIGHUP, the reload request. Windows has none: there a reload is a restart.
struct Hangup(#[cfg(unix)] tokio::signal::unix::Signal);

impl Hangup {
    #[cfg(unix)]
    fn register() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self(signal(SignalKind::hangup())?))
    }

    #[cfg(not(unix))]
    fn register() -> std::io::Result<Self> {
        Ok(Self())
    }

    /// Resolves at the next SIGHUP (never off Unix). Cancel-safe.
    async fn recv(&mut self) {
        #[cfg(unix)]
        if self.0.recv().await.is_some() {
            return;
        }
        std::future::pending::<()>().await;
    }
}
