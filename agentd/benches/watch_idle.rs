//! What an idle shared folder costs the agent: context switches (wake-ups) of the whole process
//! while nothing changes in a watched folder, for the watcher as `agentd/src/watch.rs` runs it
//! (notify's thread hands events to a task that waits on a `Notify`, timers armed only while
//! events arrive) and for `notify-debouncer-full` (its own thread, woken every quarter of the
//! debounce window). Figures in docs/benchmarks.md.
//!
//! `cargo bench -p flotilla-agentd --bench watch_idle [-- SECONDS]` (default 10 s per setup).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The agent's debounce window (`watch::DEBOUNCE`).
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Context switches, voluntary and not, of every thread of this process so far.
fn switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// Wake-ups per second over `idle`, with `setup`'s watcher live and the folder untouched.
fn measure(name: &str, idle: Duration, setup: impl FnOnce(&std::path::Path) -> Box<dyn FnOnce()>) {
    let dir = tempfile::tempdir().expect("tempdir");
    for i in 0..100 {
        std::fs::create_dir_all(dir.path().join(format!("d{i}"))).expect("mkdir");
    }
    let stop = setup(dir.path());
    // Let start-up settle before counting.
    std::thread::sleep(Duration::from_millis(500));
    let (before, t0) = (switches(), Instant::now());
    std::thread::sleep(idle);
    let (after, secs) = (switches(), t0.elapsed().as_secs_f64());
    stop();
    println!(
        "{name:<34} {:>8} switches in {secs:.1} s = {:>6.1}/s",
        after - before,
        (after - before) as f64 / secs
    );
}

fn main() {
    let idle = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<u64>().ok())
        .map_or(Duration::from_secs(10), Duration::from_secs);

    measure("nothing watched (baseline)", idle, |_| Box::new(|| {}));

    measure("notify + task on a Notify (agentd)", idle, |root| {
        use notify::Watcher;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let inbox = Arc::new((Mutex::new(Vec::new()), tokio::sync::Notify::new()));
        let sink = inbox.clone();
        let mut watcher = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
            if let Ok(e) = e {
                sink.0.lock().expect("inbox").extend(e.paths);
                sink.1.notify_one();
            }
        })
        .expect("watcher");
        watcher
            .watch(root, notify::RecursiveMode::Recursive)
            .expect("watch");
        let cancel = Arc::new(tokio::sync::Notify::new());
        let stop = cancel.clone();
        let task = std::thread::spawn(move || {
            rt.block_on(async {
                loop {
                    tokio::select! {
                        _ = inbox.1.notified() => {
                            // A batch would start here: sleep out the quiet window, then take it.
                            tokio::time::sleep(DEBOUNCE).await;
                            inbox.0.lock().expect("inbox").clear();
                        }
                        _ = cancel.notified() => break,
                    }
                }
            });
        });
        Box::new(move || {
            stop.notify_one();
            let _ = task.join();
            drop(watcher);
        })
    });

    measure("notify-debouncer-full 0.7, 200 ms", idle, |root| {
        let mut debouncer = notify_debouncer_full::new_debouncer(
            DEBOUNCE,
            None,
            |_: notify_debouncer_full::DebounceEventResult| {},
        )
        .expect("debouncer");
        debouncer
            .watch(root, notify::RecursiveMode::Recursive)
            .expect("watch");
        Box::new(move || drop(debouncer))
    });
}
