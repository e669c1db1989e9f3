//! The fleet view's host summary end to end: an agent driven by hand over the real protocol reports
//! a GPU and a failed disk, and a console subscribed to the hub is told, draws a `GPU` and a
//! `SMART` column, and a console subscribing later gets the summary right after the snapshot.

use crate::harness::console::render;
use crate::harness::{Client, DEADLINE, Fleet, within};
use flotilla::app::App;
use flotilla::event::Event;
use flotilla_wire::IdentityId;
use flotilla_wire::host::{DiskHealth, Gpu, HostDetail, HostReport, HostSummary, SmartHealth};
use flotilla_wire::io::write_frame;
use flotilla_wire::limits::MAX_METRICS_FRAME;
use flotilla_wire::msg::{MetricsFrame, MetricsSample};

fn detail(util: f32) -> HostDetail {
    HostDetail {
        at_ms: 1_800_000_000_000,
        gpus: vec![Gpu {
            name: "NVIDIA H100".into(),
            util_pct: Some(util),
            ..Gpu::default()
        }],
        ..HostDetail::default()
    }
}

fn failed_disk() -> HostReport {
    HostReport {
        at_ms: 1_800_000_000_000,
        disks: vec![
            DiskHealth {
                device: "/dev/sda".into(),
                health: SmartHealth::Failed,
                ..DiskHealth::default()
            },
            DiskHealth {
                device: "/dev/sdb".into(),
                health: SmartHealth::Passed,
                ..DiskHealth::default()
            },
        ],
        collectors: Vec::new(),
    }
}

/// Feeds `console`'s events into `app` until `app` holds `want` for `id`.
async fn until_summary(
    events: &mut flotilla::client::Events,
    app: &mut App,
    id: &IdentityId,
    want: &HostSummary,
) {
    within(DEADLINE, "the host summary in the console", async {
        loop {
            let ev = events
                .next()
                .await
                .expect("event")
                .expect("subscription open");
            app.update(Event::Fleet(Box::new(ev)));
            if app.host_summaries.get(id) == Some(want) && app.agents.contains_key(id) {
                return;
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_gpu_and_a_failed_disk_reach_the_fleet_view_as_they_change() {
    let fleet = Fleet::new().await;
    let agent = fleet.enrol_agent("gpu-1", Vec::new()).await;
    let console = fleet.admin_client().await;
    let mut app = App::new(1_800_000_000_000);
    app.update(Event::Connected(Box::new(console.welcome.clone())));
    let mut events = console.subscribe().await.expect("subscribe");

    let client = Client::hello(&agent.identity(), &fleet.hubs())
        .await
        .expect("agent hello");
    let mut metrics = client.send_sample(MetricsSample::default()).await;
    write_frame(
        &mut metrics,
        &MetricsFrame::HostDetail(detail(40.4)),
        MAX_METRICS_FRAME,
    )
    .await
    .expect("write detail");
    write_frame(
        &mut metrics,
        &MetricsFrame::HostReport(failed_disk()),
        MAX_METRICS_FRAME,
    )
    .await
    .expect("write report");
    let want = HostSummary {
        gpus: 1,
        gpu_util_mean_pct: Some(40),
        gpu_util_max_pct: Some(40),
        smart_failed: 1,
    };
    until_summary(&mut events, &mut app, &agent.id, &want).await;
    let screen = render(&app, 80, 24);
    let row = screen
        .lines()
        .find(|l| l.contains("gpu-1"))
        .unwrap_or_else(|| panic!("no gpu-1 row in\n{screen}"));
    assert!(
        screen.contains("GPU") && screen.contains("SMART"),
        "{screen}"
    );
    assert!(row.contains("1  40%") && row.contains("1 bad"), "{screen}");

    // A busier GPU is pushed again.
    write_frame(
        &mut metrics,
        &MetricsFrame::HostDetail(detail(87.0)),
        MAX_METRICS_FRAME,
    )
    .await
    .expect("write detail");
    let busier = HostSummary {
        gpu_util_mean_pct: Some(87),
        gpu_util_max_pct: Some(87),
        ..want
    };
    until_summary(&mut events, &mut app, &agent.id, &busier).await;

    // A console subscribing now is told right after the snapshot, without waiting for a change.
    let late = fleet.admin_client().await;
    let mut late_app = App::new(1_800_000_000_000);
    let mut late_events = late.subscribe().await.expect("subscribe");
    until_summary(&mut late_events, &mut late_app, &agent.id, &busier).await;
}
