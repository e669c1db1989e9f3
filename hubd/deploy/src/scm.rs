//! Running under the Windows Service Control Manager (SCM), for `hubd run --service` and
//! `agentd run --service` (the command line [`crate::windows::install_commands`] registers).
//!
//! A service process must connect to the SCM within 30 s of starting, register a control handler,
//! report Running, stop when told and report Stopped with its exit code; otherwise the SCM kills
//! it. [`run`] does that around the daemon's body: Stop and Shutdown cancel the token the body
//! receives, the same token its Unix SIGTERM path cancels (see [`crate::stop::requested`]).
//!
//! Only the Windows build talks to the SCM; elsewhere [`run`] refuses with
//! [`ServiceError::NotWindows`]. What the two share (exit codes, the flag) is tested everywhere.

use crate::Daemon;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The flag after `run` that makes a daemon speak the SCM protocol. `install` writes it into the
/// service's command line; a daemon started with it anywhere else refuses to run.
pub const SERVICE_FLAG: &str = "--service";

/// How long the SCM should wait after Stop before it considers the service hung: the hub drains
/// for up to 10 s, then waits up to 10 s for the endpoint and again for jobs, so 60 s is margin.
pub const STOP_WAIT_HINT: Duration = Duration::from_secs(60);

/// `ERROR_SERVICE_SPECIFIC_ERROR`: the SCM's code for "look at the service-specific exit code".
pub const ERROR_SERVICE_SPECIFIC_ERROR: u32 = 1066;

/// Why a daemon could not run as a service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// `--service` was given on a system without the Windows SCM.
    #[error(
        "--service is for the Windows Service Control Manager: on this system run without it (systemd and launchd start the daemon directly)"
    )]
    NotWindows,
    /// `--service` was given but the SCM did not start the process (typically: run from a
    /// console, where `StartServiceCtrlDispatcher` fails with error 1063).
    #[error(
        "--service: cannot connect to the Service Control Manager ({reason}): start the service with `sc.exe start {service}`, or run without --service from a console"
    )]
    NoDispatcher {
        /// The service name.
        service: &'static str,
        /// What Windows said.
        reason: String,
    },
    /// The SCM connected but registering the control handler or reporting a state failed.
    #[error("service {service}: {what} failed: {reason}")]
    Control {
        /// The service name.
        service: &'static str,
        /// Which call.
        what: &'static str,
        /// What Windows said.
        reason: String,
    },
    /// The dispatcher returned without ever calling the service's main function.
    #[error("service {service}: the Service Control Manager never started it")]
    NeverStarted {
        /// The service name.
        service: &'static str,
    },
}

/// The exit code a stopped service reports, as `(dwWin32ExitCode, dwServiceSpecificExitCode)`:
/// success is `NO_ERROR`; a daemon's exit code `n` is service-specific error `n`, which the SCM
/// counts as a failure (the failure actions run, since `install` sets `failureflag 1`).
pub fn exit_codes(code: u8) -> (u32, u32) {
    match code {
        0 => (0, 0),
        n => (ERROR_SERVICE_SPECIFIC_ERROR, u32::from(n)),
    }
}

/// The daemon's body: given the token that Stop cancels, it runs to the end and returns the
/// process exit code (0 clean, 1 failure, 2 configuration).
pub type Body = Box<dyn FnOnce(CancellationToken) -> u8 + Send>;

/// Runs `body` as the service `daemon.windows_name()`: connects to the SCM (blocking this thread,
/// which must be the main thread, until the service stops), reports Running, cancels the body's
/// token on Stop or Shutdown, and reports Stopped with the body's exit code, which it returns.
#[cfg(windows)]
pub fn run(daemon: Daemon, body: Body) -> Result<u8, ServiceError> {
    imp::run(daemon, body)
}

/// Refuses: there is no Service Control Manager here.
#[cfg(not(windows))]
pub fn run(_daemon: Daemon, _body: Body) -> Result<u8, ServiceError> {
    Err(ServiceError::NotWindows)
}

#[cfg(windows)]
mod imp {
    use super::{Body, ServiceError, exit_codes};
    use crate::Daemon;
    use crate::sync::lock;
    use std::ffi::OsString;
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;
    use windows_service::service::{
        ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus,
        ServiceType,
    };
    use windows_service::service_control_handler::{
        self, ServiceControlHandlerResult, ServiceStatusHandle,
    };
    use windows_service::service_dispatcher;

    /// What the dispatcher thread hands to the service thread: `service_main` is a plain function
    /// the SCM calls on its own thread, so it cannot capture anything.
    static PENDING: Mutex<Option<(Daemon, Body)>> = Mutex::new(None);
    /// What the service thread hands back.
    static OUTCOME: Mutex<Option<Result<u8, ServiceError>>> = Mutex::new(None);

    windows_service::define_windows_service!(ffi_service_main, service_main);

    pub(super) fn run(daemon: Daemon, body: Body) -> Result<u8, ServiceError> {
        let service = daemon.windows_name();
        *lock(&PENDING) = Some((daemon, body));
        service_dispatcher::start(service, ffi_service_main).map_err(|e| {
            ServiceError::NoDispatcher {
                service,
                reason: e.to_string(),
            }
        })?;
        lock(&OUTCOME)
            .take()
            .unwrap_or(Err(ServiceError::NeverStarted { service }))
    }

    fn service_main(_arguments: Vec<OsString>) {
        let outcome = serve();
        if let Err(e) = &outcome {
            tracing::error!(error = %e, "service failed");
        }
        *lock(&OUTCOME) = Some(outcome);
    }

    fn status(state: ServiceState, code: u8, wait_hint: Duration) -> ServiceStatus {
        let exit_code = match exit_codes(code) {
            (0, _) => ServiceExitCode::NO_ERROR,
            (_, specific) => ServiceExitCode::ServiceSpecific(specific),
        };
        ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: if state == ServiceState::Running {
                ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
            } else {
                ServiceControlAccept::empty()
            },
            exit_code,
            checkpoint: 0,
            wait_hint,
            process_id: None,
        }
    }

    fn serve() -> Result<u8, ServiceError> {
        let Some((daemon, body)) = lock(&PENDING).take() else {
            return Err(ServiceError::NeverStarted { service: "unknown" });
        };
        let service = daemon.windows_name();
        let control = |what: &'static str| {
            move |e: windows_service::Error| ServiceError::Control {
                service,
                what,
                reason: e.to_string(),
            }
        };
        let cancel = CancellationToken::new();
        let handle: Arc<OnceLock<ServiceStatusHandle>> = Arc::new(OnceLock::new());
        let handler = {
            let (cancel, handle) = (cancel.clone(), handle.clone());
            move |event| match event {
                ServiceControl::Stop | ServiceControl::Shutdown => {
                    tracing::info!(?event, "stop requested by the service control manager");
                    if let Some(h) = handle.get() {
                        let _ = h.set_service_status(status(
                            ServiceState::StopPending,
                            0,
                            super::STOP_WAIT_HINT,
                        ));
                    }
                    cancel.cancel();
                    ServiceControlHandlerResult::NoError
                }
                ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
                _ => ServiceControlHandlerResult::NotImplemented,
            }
        };
        let registered = service_control_handler::register(service, handler)
            .map_err(control("register the control handler"))?;
        let _ = handle.set(registered);
        registered
            .set_service_status(status(ServiceState::Running, 0, Duration::ZERO))
            .map_err(control("report Running"))?;
        tracing::info!(service, "running as a Windows service");
        // A panic must not unwind into the SCM's thread (it would abort without reporting).
        let code =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(cancel))).unwrap_or(1);
        registered
            .set_service_status(status(ServiceState::Stopped, code, Duration::ZERO))
            .map_err(control("report Stopped"))?;
        Ok(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_map_failures_to_service_specific_errors() {
        assert_eq!(exit_codes(0), (0, 0));
        assert_eq!(exit_codes(1), (ERROR_SERVICE_SPECIFIC_ERROR, 1));
        assert_eq!(exit_codes(2), (ERROR_SERVICE_SPECIFIC_ERROR, 2));
    }

    #[cfg(not(windows))]
    #[test]
    fn service_mode_is_refused_off_windows() {
        let err = run(Daemon::Agent, Box::new(|_| 0)).expect_err("no SCM here");
        assert!(matches!(err, ServiceError::NotWindows), "{err}");
    }
}
