//! The console owns its tasks: quitting cancels every one of them (a running job is stopped on its
//! agent, not left behind on a connection nobody reads) and they have all ended within the quit
//! deadline.

use crate::harness::console::{key, keys};
use crate::harness::exec::{AgentSpec, DEADLINE, exec_fleet, process_gone};
use crossterm::event::KeyCode;
use flotilla::app::{App, View};
use flotilla::client::Login;
use flotilla::console::{Console, QUIT_WAIT};
use flotilla_wire::msg::Status;
use std::time::Duration;

/// Applies the console's events until `done` gives a value.
async fn until<T>(console: &mut Console, what: &str, done: impl Fn(&App) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = done(&console.app) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "console never showed {what}"
        );
        match tokio::time::timeout(Duration::from_millis(500), console.step()).await {
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => panic!("console queue closed while waiting for {what}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quitting_stops_the_running_job_and_ends_every_task() {
    let fleet = exec_fleet(vec![AgentSpec::any("web-1")]).await;
    let login = Login::load(&fleet.paths.admin_dir(), None).expect("admin login");
    let mut console = Console::attach(login, 1_800_000_000_000);
    until(&mut console, "web-1 online", |app| {
        (app.can_act() && app.agents.values().any(|a| a.status == Status::Online)).then_some(())
    })
    .await;

    // A job that would run for a minute; its first line is the process id.
    keys(&mut console, ":echo $$; exec sleep 60");
    console.apply(key(KeyCode::Enter));
    assert_eq!(console.app.view, View::Output);
    let pid: i32 = until(&mut console, "the job's pid", |app| {
        let run = app.run.as_ref()?;
        run.panes.first()?.lines.front()?.text.trim().parse().ok()
    })
    .await;
    // A task of the caller's, ended by the console's token like the tick of the terminal console.
    let token = console.cancel_token();
    console.spawn(async move { token.cancelled().await });
    assert!(console.tasks() >= 3, "network, job and the caller's task");

    let ended = console.shutdown(QUIT_WAIT).await;
    assert!(
        ended,
        "{} console tasks still running after quit",
        console.tasks()
    );
    assert_eq!(console.tasks(), 0);
    assert!(
        process_gone(pid).await,
        "the job's process {pid} outlived the console"
    );
}
