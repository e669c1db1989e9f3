//! Stop requests, whatever asked: SIGTERM or SIGINT on Unix; Ctrl+C, Ctrl+Break, closing the
//! console or shutting the system down on Windows; and, through a token, the Windows Service
//! Control Manager's Stop or Shutdown (see [`crate::scm`]).

use tokio_util::sync::CancellationToken;

/// Registers for the stop signals now (a signal arriving before the returned future is awaited is
/// not lost to the default action) and resolves when one arrives or `service` is cancelled.
///
/// Cancel-safe: dropping the future unregisters the handlers and loses nothing else.
pub fn requested(service: CancellationToken) -> impl Future<Output = ()> + Send {
    let signals = Signals::register();
    async move {
        tokio::select! {
            () = signals.recv() => {}
            () = service.cancelled() => {}
        }
    }
}

/// The platform's stop signals, registered.
#[cfg(unix)]
struct Signals(std::io::Result<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

#[cfg(unix)]
impl Signals {
    fn register() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Self(
            signal(SignalKind::terminate()).and_then(|t| Ok((t, signal(SignalKind::interrupt())?))),
        )
    }

    async fn recv(self) {
        let Ok((mut term, mut int)) = self.0 else {
            // No handler could be installed: Ctrl+C is still worth waiting for.
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}

/// The platform's stop signals, registered.
#[cfg(windows)]
struct Signals(std::io::Result<WindowsSignals>);

#[cfg(windows)]
struct WindowsSignals {
    ctrl_c: tokio::signal::windows::CtrlC,
    ctrl_break: tokio::signal::windows::CtrlBreak,
    close: tokio::signal::windows::CtrlClose,
    shutdown: tokio::signal::windows::CtrlShutdown,
}

#[cfg(windows)]
impl Signals {
    fn register() -> Self {
        use tokio::signal::windows;
        Self((|| {
            Ok(WindowsSignals {
                ctrl_c: windows::ctrl_c()?,
                ctrl_break: windows::ctrl_break()?,
                close: windows::ctrl_close()?,
                shutdown: windows::ctrl_shutdown()?,
            })
        })())
    }

    async fn recv(self) {
        let Ok(mut s) = self.0 else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = s.ctrl_c.recv() => {}
            _ = s.ctrl_break.recv() => {}
            _ = s.close.recv() => {}
            _ = s.shutdown.recv() => {}
        }
    }
}
