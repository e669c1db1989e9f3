//! The console's alerts against a real hub with two real agents: a live rule (`cpu above -1` on
//! web-1) fires at web-1's next sample and the hub pushes it; the admin's console counts it in the
//! header at 80×24, marks web-1 in the fleet view and not db-1, lists it in the alerts view (`8`),
//! acknowledges it with `a` and silences it with `S`, each through the hub; a viewer's console
//! shows the same alert without the acting keys.

use crate::harness::console::{key, keys, render, until};
use crate::harness::{AgentSpec, Fleet};
use crossterm::event::KeyCode;
use flotilla::app::View;
use flotilla::console::Console;
use flotilla_wire::Role;
use flotilla_wire::alerts::{AlertState, RuleSpec, Severity};
use flotilla_wire::msg::{OpRequest, OpResponse};

/// The clock the console renders relative times against.
const NOW_MS: u64 = 1_800_000_000_000;

fn line_of<'a>(screen: &'a str, name: &str) -> &'a str {
    screen
        .lines()
        .find(|l| l.contains(name))
        .unwrap_or_else(|| panic!("no {name} in\n{screen}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_firing_alert_shows_in_the_fleet_and_is_acknowledged_and_silenced_from_the_console() {
    let fleet = Fleet::builder()
        .agent(AgentSpec::new("web-1"))
        .agent(AgentSpec::new("db-1"))
        .start()
        .await;
    let mut console = Console::attach(fleet.admin_login().clone(), NOW_MS);
    until(
        &mut console,
        "both agents online",
        |app| app.can_act() && app.counts() == (2, 2),
        |_| {},
    )
    .await;
    let before = render(&console.app, 80, 24);
    assert!(!before.contains("firing"), "nothing fires yet:\n{before}");

    let rule = RuleSpec {
        name: "cpu-any".into(),
        kind: "cpu".into(),
        selector: Some("web-1".into()),
        severity: Severity::Critical,
        above: Some(-1.0),
        ..RuleSpec::default()
    }
    .to_rule()
    .expect("rule");
    let admin = fleet.admin_client().await;
    match admin
        .request(&OpRequest::AlertRuleAdd(rule))
        .await
        .expect("rule added")
    {
        OpResponse::AlertRule(info) => assert_eq!(info.rule.name, "cpu-any"),
        other => panic!("unexpected reply {other:?}"),
    }

    // Pushed by the hub: no key pressed, no view opened.
    until(
        &mut console,
        "web-1's alert firing",
        |app| app.alerts.firing() == 1,
        |_| {},
    )
    .await;
    let screen = render(&console.app, 80, 24);
    assert!(
        screen
            .lines()
            .next()
            .is_some_and(|h| h.contains("1 firing")),
        "the header counts it:\n{screen}"
    );
    assert!(
        line_of(&screen, "web-1").starts_with(" ●!"),
        "web-1 marked:\n{screen}"
    );
    assert!(
        line_of(&screen, "db-1").starts_with(" ● "),
        "db-1 out of the rule's scope:\n{screen}"
    );

    // `8`: the alerts view.
    keys(&mut console, "8");
    assert_eq!(console.app.view, View::Alerts);
    let screen = render(&console.app, 80, 24);
    for shown in [
        "1 firing",
        "cpu-any",
        "web-1",
        "crit",
        "a acknowledge",
        "S silence",
    ] {
        assert!(screen.contains(shown), "no {shown} in\n{screen}");
    }

    // `a` acknowledges it through the hub, as the admin (by name or identity id).
    let me: Vec<String> = match admin
        .request(&OpRequest::ListOperators)
        .await
        .expect("operators")
    {
        OpResponse::Agents(list) => list
            .into_iter()
            .filter(|o| o.name == "admin")
            .flat_map(|o| [o.name, o.id.to_string()])
            .collect(),
        other => panic!("unexpected reply {other:?}"),
    };
    keys(&mut console, "a");
    until(
        &mut console,
        "the acknowledgement",
        |app| {
            app.alerts.list().any(|a| {
                a.rule == "cpu-any" && a.acked_by.as_ref().is_some_and(|by| me.contains(by))
            })
        },
        |_| {},
    )
    .await;
    let screen = render(&console.app, 80, 24);
    assert!(screen.contains("acked by"), "{screen}");

    // `S`, then how long and why: silenced, no longer counted or marked.
    keys(&mut console, "S1h replacing fans");
    console.apply(key(KeyCode::Enter));
    until(
        &mut console,
        "the alert silenced",
        |app| {
            app.alerts.firing() == 0
                && app
                    .alerts
                    .list()
                    .any(|a| a.state == AlertState::Firing && a.silenced_by.is_some())
        },
        |_| {},
    )
    .await;
    let screen = render(&console.app, 80, 24);
    assert!(
        screen.contains("silenced") && screen.contains("silence #"),
        "{screen}"
    );
    let header = screen.lines().next().unwrap_or_default();
    assert!(!header.contains("firing"), "{header}");
    match admin
        .request(&OpRequest::Silences {
            include_expired: false,
        })
        .await
        .expect("silences")
    {
        OpResponse::Silences(list) => {
            assert_eq!(list.len(), 1, "{list:?}");
            assert_eq!(list[0].comment, "replacing fans");
            assert_eq!(list[0].rule, "cpu-any");
        }
        other => panic!("unexpected reply {other:?}"),
    }

    // A viewer sees the alert, without `a` and `S`.
    let viewer_login = fleet.login_as(Role::Viewer, "eve").await;
    let mut viewer = Console::attach(viewer_login, NOW_MS);
    until(
        &mut viewer,
        "the viewer's list",
        |app| app.role() == Some(Role::Viewer) && app.alerts.len() == 1,
        |_| {},
    )
    .await;
    keys(&mut viewer, "8");
    let screen = render(&viewer.app, 80, 24);
    assert!(screen.contains("cpu-any"), "{screen}");
    let footer = screen.lines().last().unwrap_or_default();
    assert!(
        !footer.contains("acknowledge") && !footer.contains("silence"),
        "{footer}"
    );
    keys(&mut viewer, "aS");
    assert!(
        viewer.app.prompt.is_none(),
        "no silence prompt for a viewer"
    );
    assert!(
        viewer.app.notice.is_none(),
        "nothing asked: {:?}",
        viewer.app.notice
    );
}

/// The same as a sysadmin over SSH meets it: the real `flotilla` binary in tmux at 80×24.
#[tokio::test(flavor = "multi_thread")]
async fn the_real_console_in_tmux_counts_marks_and_acknowledges_an_alert() {
    use crate::console_tmux::{Tmux, flotilla_bin};
    let fleet = Fleet::builder()
        .agent(AgentSpec::new("web-1"))
        .agent(AgentSpec::new("db-1"))
        .start()
        .await;
    let rule = RuleSpec {
        name: "cpu-any".into(),
        kind: "cpu".into(),
        selector: Some("db-1".into()),
        severity: Severity::Warning,
        above: Some(-1.0),
        ..RuleSpec::default()
    }
    .to_rule()
    .expect("rule");
    let admin = fleet.admin_client().await;
    admin
        .request(&OpRequest::AlertRuleAdd(rule))
        .await
        .expect("rule added");
    let tmux = Tmux::start(&format!(
        "NO_COLOR=1 FLOTILLA_LOGIN_DIR={} {}",
        fleet.admin_login().dir.display(),
        flotilla_bin().display()
    ));
    let screen = tmux
        .wait_for("db-1's alert counted and marked", |s| {
            s.lines().next().is_some_and(|h| h.contains("1 firing"))
                && s.lines()
                    .any(|l| l.starts_with(" ●!") && l.contains("db-1"))
        })
        .await;
    assert!(
        screen
            .lines()
            .any(|l| l.starts_with(" ● ") && l.contains("web-1")),
        "web-1 unmarked:\n{screen}"
    );
    tmux.text("8");
    tmux.wait_for("the alerts view", |s| {
        s.contains("cpu-any") && s.contains("warn") && s.contains("a acknowledge")
    })
    .await;
    tmux.text("a");
    tmux.wait_for("the acknowledgement", |s| s.contains("acked by"))
        .await;
    tmux.text("S1h replacing fans");
    tmux.keys(&["Enter"]);
    let screen = tmux
        .wait_for("the alert silenced", |s| {
            s.contains("silence #") && !s.lines().next().is_some_and(|h| h.contains("firing"))
        })
        .await;
    assert!(screen.contains("1 silenced"), "{screen}");
    tmux.text("q");
}
