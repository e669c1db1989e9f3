//! The agent view's time controls and the fleet's sort columns in the real `flotilla` console in
//! tmux at 80x24, against a real hub and real agentd processes: `]` and `[` change every chart's
//! span, `j` scrolls the agent's block devices into view, `<` steps the top-process tables back to
//! a minute the hub kept, `>` returns to live, `c` opens the per-device charts where `j` picks the
//! loopback interface and its chart follows `]`, and `<`/`>` in the fleet pick any sort column,
//! shown in the header, ordering the rows by it.

use crate::console_tmux::{Tmux, flotilla_bin};
use crate::harness::exec::{AgentSpec, exec_fleet};
use std::time::{Duration, Instant};

/// The hub keeps a minute of top processes once that minute is over: an agent started now has
/// one within two minutes; this is generous for a loaded CI box.
const MINUTE_KEPT_DEADLINE: Duration = Duration::from_secs(240);

/// `1.5K`, `512B` back to bytes (the console's own format), for checking an order.
fn parse_bytes(s: &str) -> Option<f64> {
    let unit = s.chars().last()?;
    let n: f64 = s[..s.len() - 1].parse().ok()?;
    let mult = match unit {
        'B' => 1.0,
        'K' => 1024.0,
        'M' => 1024.0 * 1024.0,
        'G' => 1024.0 * 1024.0 * 1024.0,
        'T' => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(n * mult)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_span_picker_relabels_charts_and_the_top_tables_step_back_a_minute() {
    let fleet = exec_fleet(vec![AgentSpec::any("web-1")]).await;
    let command = format!(
        "NO_COLOR=1 FLOTILLA_LOGIN_DIR={} {}",
        fleet.paths.admin_dir().display(),
        flotilla_bin().display()
    );
    let tmux = Tmux::start(&command);
    tmux.wait_for("the agent online", |s| s.contains("1/1 online"))
        .await;
    tmux.keys(&["Enter"]);
    tmux.wait_for("web-1's charts over an hour", |s| {
        s.contains("cpu % 1h") && s.contains("mem % 1h") && s.contains("top by cpu")
    })
    .await;
    tmux.keys(&["]"]);
    tmux.wait_for("charts over six hours", |s| {
        s.contains("cpu % 6h") && s.contains("net 6h") && !s.contains("cpu % 1h")
    })
    .await;
    tmux.keys(&["]", "]", "]", "]"]);
    tmux.wait_for("charts over thirty days, the longest span", |s| {
        s.contains("cpu % 30d")
    })
    .await;
    tmux.keys(&["[", "[", "[", "[", "[", "["]);
    let screen = tmux
        .wait_for("charts over five minutes, the shortest span", |s| {
            s.contains("cpu % 5m")
        })
        .await;
    assert!(
        screen.lines().all(|l| l.chars().count() <= 80),
        "nothing drawn past 80 columns:\n{screen}"
    );
    // The agent's own block devices from /proc/diskstats, scrolled into view under the bars.
    tmux.keys(&["j", "j", "j", "j", "j"]);
    tmux.wait_for("a block device's I/O in the scrolled usage panel", |s| {
        s.contains("usage ↑")
            && s.lines()
                .any(|l| l.starts_with("io ") && l.contains("/s w ") && l.contains('%'))
    })
    .await;

    // A minute back: the hub's table for that minute, with users and command lines, once the hub
    // has one (the agent has only just started, so the first minutes asked may be empty).
    let started = Instant::now();
    let past = loop {
        tmux.keys(&["<"]);
        let screen = tmux
            .wait_for("the top tables a minute back", |s| {
                s.contains("top by cpu at")
                    && s.contains("(1m ago)")
                    && (s.contains("USER") || s.contains("nothing kept for this minute"))
            })
            .await;
        if screen.contains("USER") {
            break screen;
        }
        assert!(
            started.elapsed() < MINUTE_KEPT_DEADLINE,
            "the hub never kept a minute of top processes:\n{screen}"
        );
        tmux.keys(&[">"]);
        tmux.wait_for("live top tables", |s| !s.contains("top by cpu at"))
            .await;
        // Polling: the minute is written when it ends; nothing signals that to a console.
        tokio::time::sleep(Duration::from_secs(5)).await;
    };
    assert!(
        past.contains("COMMAND") && past.contains("top by memory at"),
        "both past tables:\n{past}"
    );
    tmux.keys(&["<"]);
    tmux.wait_for("two minutes back", |s| s.contains("(2m ago)"))
        .await;
    tmux.keys(&[">", ">"]);
    tmux.wait_for("the live tables again", |s| {
        s.contains("top by cpu") && s.contains("NAME") && !s.contains("ago)")
    })
    .await;
    drop(tmux);
    fleet.shutdown().await;
}

/// The `N` of the charts panel's `series N/M` title, where the screen shows it.
fn picked_series(screen: &str) -> Option<usize> {
    let at = screen.find("series ")? + "series ".len();
    let rest = &screen[at..];
    rest[..rest.find('/')?].parse().ok()
}

/// Whether the screen holds a point of a line chart (braille dots or the second line's dots): the
/// host-total sparklines above use block characters only.
fn has_chart_points(screen: &str) -> bool {
    screen
        .chars()
        .any(|c| ('\u{2801}'..='\u{28ff}').contains(&c) || c == '•')
}

#[tokio::test(flavor = "multi_thread")]
async fn the_loopback_interface_is_charted_over_time_and_follows_the_span_picker() {
    let fleet = exec_fleet(vec![AgentSpec::any("web-1")]).await;
    let command = format!(
        "NO_COLOR=1 FLOTILLA_LOGIN_DIR={} {}",
        fleet.paths.admin_dir().display(),
        flotilla_bin().display()
    );
    let tmux = Tmux::start(&command);
    tmux.wait_for("the agent online", |s| s.contains("1/1 online"))
        .await;
    tmux.keys(&["Enter"]);
    tmux.wait_for("web-1's view", |s| s.contains("cpu % 1h"))
        .await;
    tmux.keys(&["c"]);
    let mut screen = tmux
        .wait_for("the series list with the first series picked", |s| {
            picked_series(s) == Some(1) && s.contains("› ")
        })
        .await;
    // Down the list to `lo`, one series at a time: mounts, block devices and other interfaces
    // come first, and their number depends on the machine.
    let mut steps = 0;
    while !screen.lines().any(|l| l.contains("› net lo")) {
        steps += 1;
        assert!(steps <= 64, "no `net lo` in the series list:\n{screen}");
        let before = picked_series(&screen).expect("a picked series");
        tmux.keys(&["j"]);
        screen = tmux
            .wait_for("the next series picked", |s| {
                picked_series(s) == Some(before + 1)
            })
            .await;
    }
    let screen = tmux
        .wait_for("lo's chart over an hour with its axes and points", |s| {
            s.contains("net lo 1h rx ")
                && s.lines()
                    .any(|l| l.trim_start().starts_with("-1h") && l.ends_with("now"))
                && s.contains("B/s")
                && has_chart_points(s)
        })
        .await;
    assert!(
        screen.lines().all(|l| l.chars().count() <= 80),
        "nothing drawn past 80 columns:\n{screen}"
    );
    tmux.keys(&["]"]);
    tmux.wait_for("lo's chart over six hours", |s| {
        s.contains("net lo 6h rx ")
            && !s.contains("net lo 1h")
            && s.lines()
                .any(|l| l.trim_start().starts_with("-6h") && l.ends_with("now"))
            && has_chart_points(s)
    })
    .await;
    tmux.keys(&["]", "]", "]", "]"]);
    tmux.wait_for(
        "lo's chart over thirty days, from ten-minute buckets",
        |s| {
            s.contains("net lo 30d rx ")
                && s.lines()
                    .any(|l| l.trim_start().starts_with("-30d") && l.ends_with("now"))
        },
    )
    .await;
    // `c` again: the usage panel and the top tables are back.
    tmux.keys(&["c"]);
    tmux.wait_for("usage and top tables again", |s| {
        s.contains("usage") && s.contains("top by cpu") && picked_series(s).is_none()
    })
    .await;
    drop(tmux);
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn angle_brackets_pick_any_fleet_column_and_the_rows_follow_it() {
    let fleet = exec_fleet(vec![
        AgentSpec::any("web-1"),
        AgentSpec::any("web-2"),
        AgentSpec::any("db-1"),
    ])
    .await;
    let command = format!(
        "NO_COLOR=1 FLOTILLA_LOGIN_DIR={} {}",
        fleet.paths.admin_dir().display(),
        flotilla_bin().display()
    );
    let tmux = Tmux::start(&command);
    tmux.wait_for("three agents online", |s| s.contains("3/3 online"))
        .await;
    // Back from name wraps to the last column, uptime; back again is network.
    tmux.keys(&["<"]);
    tmux.wait_for("sorted by uptime", |s| s.contains("UP▼"))
        .await;
    tmux.keys(&["<"]);
    let screen = tmux
        .wait_for("sorted by network rate", |s| {
            s.contains("NET/s▼") && !s.contains("UP▼")
        })
        .await;
    let col = screen
        .lines()
        .find_map(|l| l.find("NET/s▼").map(|i| l[..i].chars().count()))
        .expect("header");
    let rates: Vec<f64> = screen
        .lines()
        .filter(|l| l.contains("web-") || l.contains("db-1"))
        .map(|l| {
            let cell: String = l.chars().skip(col).take(7).collect();
            parse_bytes(cell.trim())
                .unwrap_or_else(|| panic!("a rate in {cell:?} of {l:?}:\n{screen}"))
        })
        .collect();
    assert_eq!(rates.len(), 3, "three rows:\n{screen}");
    assert!(
        rates.windows(2).all(|w| w[0] >= w[1]),
        "highest rate first: {rates:?}\n{screen}"
    );
    // Forward twice (uptime, then round to name) returns to names ascending.
    tmux.keys(&[">", ">"]);
    let screen = tmux
        .wait_for("sorted by name", |s| s.contains("NAME▼"))
        .await;
    let names: Vec<&str> = screen
        .lines()
        .filter_map(|l| {
            ["db-1", "web-1", "web-2"]
                .into_iter()
                .find(|n| l.contains(n))
        })
        .collect();
    assert_eq!(names, ["db-1", "web-1", "web-2"], "{screen}");
    drop(tmux);
    fleet.shutdown().await;
}
