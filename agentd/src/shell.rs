//! Interactive shells: a PTY running the login shell of the configured account (or a command), or
//! an exec with a TTY in a container, relayed to the hub on a `HubStreamOpen::Shell` stream.

use crate::exec::ExecContext;
use flotilla_wire::ErrorCode;
use flotilla_wire::io::write_frame;
use flotilla_wire::limits::MAX_SHELL_FRAME;
use flotilla_wire::shell::{ShellFrame, ShellOpen};
use std::sync::Arc;

/// Serves one shell stream the hub opened.
pub async fn serve(
    _exec: Arc<ExecContext>,
    mut send: quinn::SendStream,
    _recv: quinn::RecvStream,
    _open: ShellOpen,
) {
    let frame = ShellFrame::refused(ErrorCode::Forbidden, "shells are not served yet");
    let _ = write_frame(&mut send, &frame, MAX_SHELL_FRAME).await;
    let _ = send.finish();
}
