//! systemd units through systemd's D-Bus API: the inventory and the cgroup stats of the units on
//! this machine (a root agent: the system manager; any other: its user's manager).
//!
//! Cost per poll: one `ListUnits`, then one `Properties.GetAll` of the `Service` interface for each
//! active service (main PID, restarts, memory, CPU change while it runs), and one of the `Unit`
//! interface only for units new or changed since the last poll (or all, after unit files changed).
//! Nothing parses `systemctl` output.

use flotilla_wire::workloads::{Access, SourceState, UnitInfo, UnitStats};
use futures::StreamExt;
use std::collections::HashMap;
use std::time::Instant;
use zbus::{Connection, OwnedObjectPath, OwnedVariant};

/// systemd's well-known bus name.
const SYSTEMD: &str = "org.freedesktop.systemd1";
/// The unit interface (timestamps, unit file state).
pub(crate) const UNIT_IFACE: &str = "org.freedesktop.systemd1.Unit";
/// The service interface (main PID, restarts, cgroup accounting).
const SERVICE_IFACE: &str = "org.freedesktop.systemd1.Service";
/// systemd's "not set" for accounting counters.
const UNSET: u64 = u64::MAX;

/// The manager's D-Bus interface, as much as the agent uses.
#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
pub(crate) trait Manager {
    /// Units loaded in memory.
    #[allow(clippy::type_complexity)]
    fn list_units(
        &self,
    ) -> zbus::Result<
        Vec<(
            String,
            String,
            String,
            String,
            String,
            String,
            OwnedObjectPath,
            u32,
            String,
            OwnedObjectPath,
        )>,
    >;
    /// Queues a start job.
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// Queues a stop job.
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// Queues a restart job.
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// Queues a reload job.
    fn reload_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// Enables unit files: whether they had install info, and the symlinks changed.
    fn enable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<(bool, Vec<(String, String, String)>)>;
    /// Disables unit files: the symlinks removed.
    fn disable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
    ) -> zbus::Result<Vec<(String, String, String)>>;
    /// The object of a loaded unit.
    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    /// `daemon-reload`.
    fn reload(&self) -> zbus::Result<()>;
    /// Asks the manager to send job and unit signals to this connection.
    fn subscribe(&self) -> zbus::Result<()>;
    /// A job finished: `done`, `canceled`, `timeout`, `failed`, `dependency` or `skipped`.
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
    /// Unit files were enabled, disabled, linked or masked.
    #[zbus(signal)]
    fn unit_files_changed(&self) -> zbus::Result<()>;
    /// The manager's version.
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
}

/// Which manager the agent talks to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bus {
    /// The system manager (a root agent).
    System,
    /// The user's manager (`systemd --user`) on the session bus.
    Session,
    /// A bus at a D-Bus address (`unix:path=…`): a manager in a container, whose bus socket is
    /// mounted where the agent can reach it.
    Address(String),
}

impl Bus {
    /// The bus for an agent running as this process's user.
    pub fn for_this_process() -> Self {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            Self::System
        } else {
            Self::Session
        }
    }

    /// Connects to it.
    pub async fn connect(&self) -> zbus::Result<Connection> {
        match self {
            Self::System => Connection::system().await,
            Self::Session => Connection::session().await,
            Self::Address(addr) => {
                zbus::connection::Builder::address(addr.as_str())
                    .build()
                    .await
            }
        }
    }
}

/// A manager proxy without property caching: the agent reads what it needs when it needs it.
pub(crate) async fn manager(conn: &Connection) -> zbus::Result<ManagerProxy<'static>> {
    ManagerProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
}

/// One row of `ListUnits`, the part that says whether the unit changed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Listed {
    description: String,
    load_state: String,
    active_state: String,
    sub_state: String,
}

/// What the source remembers of a unit between polls.
struct Known {
    listed: Listed,
    info: UnitInfo,
    /// Last `CPUUsageNSec` and when it was read, for the percentage over the interval.
    cpu: Option<(u64, Instant)>,
}

/// A live connection to the manager.
struct Link {
    conn: Connection,
    manager: ManagerProxy<'static>,
    files_changed: UnitFilesChangedStream,
}

/// The units of this machine's (or this user's) systemd, polled once per metrics interval.
pub struct UnitSource {
    access: Access,
    bus: Bus,
    link: Option<Link>,
    state: SourceState,
    known: HashMap<String, Known>,
    calls: u32,
}

impl UnitSource {
    /// Connects to the manager the agent's user has (never fails: without a bus, or with
    /// `services = "off"`, the source is [`SourceState::Absent`] and polls return nothing).
    pub async fn open(settings: &super::WorkloadSettings) -> Self {
        Self::open_on(settings.services, Bus::for_this_process()).await
    }

    /// [`Self::open`] on a given bus.
    pub async fn open_on(access: Access, bus: Bus) -> Self {
        let mut source = Self {
            access,
            bus,
            link: None,
            state: SourceState::Absent,
            known: HashMap::new(),
            calls: 0,
        };
        if access != Access::Off {
            source.connect().await;
        }
        source
    }

    /// Whether systemd answers.
    pub fn state(&self) -> SourceState {
        self.state.clone()
    }

    /// D-Bus calls the last poll made (for the docs' cost figures and the bench).
    pub fn calls_last_poll(&self) -> u32 {
        self.calls
    }

    async fn connect(&mut self) {
        match self.try_connect().await {
            Ok((link, version)) => {
                tracing::info!(%version, bus = ?self.bus, "systemd answers");
                self.link = Some(link);
                self.state = SourceState::Up {
                    name: "systemd".into(),
                    version,
                };
            }
            Err(e) => {
                // Never there: absent, not an error. Gone after being there: down, retried.
                if self.state != SourceState::Absent {
                    self.state = SourceState::Down {
                        error: format!("systemd over D-Bus: {e}"),
                    };
                }
            }
        }
    }

    async fn try_connect(&self) -> zbus::Result<(Link, String)> {
        let conn = self.bus.connect().await?;
        let manager = manager(&conn).await?;
        let version = manager.version().await?;
        // Signals only reach subscribed clients; the stream must exist before anything changes.
        let files_changed = manager.receive_unit_files_changed().await?;
        manager.subscribe().await?;
        Ok((
            Link {
                conn,
                manager,
                files_changed,
            },
            version,
        ))
    }

    fn lost(&mut self, e: &zbus::Error) {
        tracing::warn!(error = %e, "systemd stopped answering");
        self.link = None;
        self.known.clear();
        self.state = SourceState::Down {
            error: format!("systemd over D-Bus: {e}"),
        };
    }

    /// The service units (and any failed unit) with their stats: the whole inventory every time,
    /// empty while systemd is absent or down (a lost bus is reconnected on the next poll).
    /// Not cancel-safe: a cancelled poll leaves the stats' reference points of some units stale.
    pub async fn poll(&mut self) -> (Vec<UnitInfo>, Vec<UnitStats>) {
        self.calls = 0;
        if self.access == Access::Off {
            self.state = SourceState::Absent;
            return (Vec::new(), Vec::new());
        }
        if self.link.is_none() {
            self.connect().await;
        }
        let Some(link) = self.link.as_mut() else {
            return (Vec::new(), Vec::new());
        };
        let mut files_changed = false;
        while let Some(Some(_)) = futures::FutureExt::now_or_never(link.files_changed.next()) {
            files_changed = true;
        }
        self.calls += 1;
        let listed = match link.manager.list_units().await {
            Ok(l) => l,
            Err(e) => {
                self.lost(&e);
                return (Vec::new(), Vec::new());
            }
        };
        let conn = link.conn.clone();
        let mut units = Vec::new();
        let mut stats = Vec::new();
        let mut seen = HashMap::with_capacity(listed.len());
        for (name, description, load_state, active_state, sub_state, _, path, ..) in listed {
            let is_service = name.ends_with(".service");
            if !is_service && active_state != "failed" {
                continue;
            }
            let row = Listed {
                description,
                load_state,
                active_state,
                sub_state,
            };
            let previous = self.known.remove(&name);
            let changed = files_changed || previous.as_ref().is_none_or(|k| k.listed != row);
            let running = matches!(
                row.active_state.as_str(),
                "active" | "activating" | "deactivating" | "reloading"
            );
            let mut known = previous.unwrap_or_else(|| Known {
                listed: row.clone(),
                info: UnitInfo {
                    name: name.clone(),
                    description: String::new(),
                    load_state: String::new(),
                    active_state: String::new(),
                    sub_state: String::new(),
                    since_ms: None,
                    main_pid: None,
                    restarts: 0,
                    unit_file_state: String::new(),
                },
                cpu: None,
            });
            known.info.description.clone_from(&row.description);
            known.info.load_state.clone_from(&row.load_state);
            known.info.active_state.clone_from(&row.active_state);
            known.info.sub_state.clone_from(&row.sub_state);
            known.listed = row;
            if changed {
                self.calls += 1;
                if let Ok(props) = get_all(&conn, &path, UNIT_IFACE).await {
                    let since = [u64_of(&props, "StateChangeTimestamp")]
                        .into_iter()
                        .chain([u64_of(&props, "ActiveEnterTimestamp")])
                        .flatten()
                        .find(|&us| us != 0);
                    known.info.since_ms = since.map(|us| us / 1000);
                    known.info.unit_file_state = string_of(&props, "UnitFileState");
                }
            }
            if is_service && (running || changed) {
                self.calls += 1;
                if let Ok(props) = get_all(&conn, &path, SERVICE_IFACE).await {
                    known.info.main_pid = u64_of(&props, "MainPID")
                        .filter(|&p| p != 0)
                        .and_then(|p| u32::try_from(p).ok());
                    known.info.restarts = u64_of(&props, "NRestarts")
                        .and_then(|n| u32::try_from(n).ok())
                        .unwrap_or(0);
                    if running {
                        let now = Instant::now();
                        let nsec = u64_of(&props, "CPUUsageNSec").filter(|&n| n != UNSET);
                        let cpu_pct = match (nsec, known.cpu) {
                            (Some(n), Some((before, at))) => {
                                cpu_percent(before, n, now.duration_since(at).as_nanos())
                            }
                            _ => None,
                        };
                        known.cpu = nsec.map(|n| (n, now));
                        stats.push(UnitStats {
                            name: name.clone(),
                            cpu_pct,
                            memory_bytes: u64_of(&props, "MemoryCurrent").filter(|&m| m != UNSET),
                        });
                    }
                }
            }
            if !running {
                known.cpu = None;
                known.info.main_pid = None;
            }
            units.push(known.info.clone());
            seen.insert(name, known);
        }
        self.known = seen;
        (units, stats)
    }
}

/// CPU percent of one core between two `CPUUsageNSec` readings `elapsed_ns` apart; `None` when the
/// counter went backwards (the unit restarted and its cgroup is new) or no time passed.
fn cpu_percent(before: u64, after: u64, elapsed_ns: u128) -> Option<f32> {
    if after < before || elapsed_ns == 0 {
        return None;
    }
    Some(((after - before) as f64 * 100.0 / elapsed_ns as f64) as f32)
}

/// `Properties.GetAll` of one interface of one unit object.
pub(crate) async fn get_all(
    conn: &Connection,
    path: &OwnedObjectPath,
    iface: &str,
) -> zbus::Result<HashMap<String, OwnedVariant>> {
    let reply = conn
        .call_method(
            Some(SYSTEMD),
            path.as_str(),
            Some("org.freedesktop.DBus.Properties"),
            "GetAll",
            &(iface,),
        )
        .await?;
    reply.body().deserialize()
}

fn u64_of(props: &HashMap<String, OwnedVariant>, key: &str) -> Option<u64> {
    let v = props.get(key)?;
    u64::try_from(v)
        .ok()
        .or_else(|| u32::try_from(v).ok().map(u64::from))
}

fn string_of(props: &HashMap<String, OwnedVariant>, key: &str) -> String {
    props
        .get(key)
        .and_then(|v| <&str>::try_from(v).ok())
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_is_per_core_over_the_interval() {
        // Half a second of CPU in one second: 50 %.
        assert_eq!(cpu_percent(1_000, 500_001_000, 1_000_000_000), Some(50.0));
        // Two cores busy for a second: 200 %.
        assert_eq!(cpu_percent(0, 2_000_000_000, 1_000_000_000), Some(200.0));
        // A restarted unit's counter starts again from zero.
        assert_eq!(cpu_percent(5_000, 10, 1_000_000_000), None);
        assert_eq!(cpu_percent(0, 10, 0), None);
    }

    #[tokio::test]
    async fn no_bus_is_absent_and_polls_nothing() {
        // `services = "off"` never touches the bus.
        let source = UnitSource::open_on(Access::Off, Bus::Session).await;
        assert_eq!(source.state(), SourceState::Absent);
        let mut source = source;
        let (units, stats) = source.poll().await;
        assert!(units.is_empty() && stats.is_empty());
        assert_eq!(source.calls_last_poll(), 0);
    }
}
