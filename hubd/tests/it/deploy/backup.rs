//! `hubd backup` while the hub serves, `hubd restore` refusals, then a restore and a start: the
//! agents and tokens of the backup are what the hub serves again.

use crate::harness::binaries::{Agent, Hub, code, enrol, hubd, json, run, stderr};
use serde_json::Value;
use std::collections::BTreeSet;

fn ids(list: &Value, key: &str) -> BTreeSet<String> {
    list.as_array()
        .expect("list")
        .iter()
        .map(|x| x[key].as_str().expect("string").to_string())
        .collect()
}

fn status_of(agents: &Value, name: &str) -> String {
    agents
        .as_array()
        .expect("agents")
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {agents:#}"))["status"]
        .as_str()
        .expect("status")
        .to_string()
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_serving_then_restore_and_start() {
    let mut hub = Hub::init().await;
    hub.start().await;
    let token = hub.token("agent", 2).await;
    let dir = hub.dir.path().to_path_buf();
    let a1 = enrol(&dir, "web-1", &token).await;
    let a2 = enrol(&dir, "web-2", &token).await;
    let spare = hub.token("agent", 5).await;
    let mut agents = vec![Agent::start(&a1), Agent::start(&a2)];
    for a in &mut agents {
        a.connected().await;
    }
    let (_, tokens_before) = hub.admin(&["token", "list"]).await;

    let file = dir.join("backups/hub-1.db");
    std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
    let out = run(hubd(&hub.data).arg("backup").arg(&file).arg("--json")).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["ok"], true);
    assert_eq!(report["online"], true, "made by the running hub");
    assert_eq!(report["agents"], 2);
    assert_eq!(report["tokens"], 2);
    #[cfg(unix)]
    assert_eq!(mode(&file), 0o600, "a backup holds token hashes");
    let leftovers: Vec<_> = std::fs::read_dir(hub.data.join("backups"))
        .expect("hub backup dir")
        .collect();
    assert!(leftovers.is_empty(), "the hub's copy was moved out");

    let out = run(hubd(&hub.data).arg("backup").arg(&file)).await;
    assert_eq!(code(&out), 2, "never overwrites without --force");
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));

    // Changes after the backup, which the restore undoes.
    let (c, _) = hub.admin(&["revoke", "web-2"]).await;
    assert_eq!(c, 0);
    agents[1].disconnected().await;
    hub.token("agent", 1).await;

    let out = run(hubd(&hub.data).arg("restore").arg(&file).arg("--json")).await;
    assert_eq!(code(&out), 1);
    assert_eq!(json(&out)["error"]["code"], "hub_running");

    for a in agents {
        a.stop().await;
    }
    assert!(hub.stop().await.success());

    let junk = dir.join("junk.db");
    std::fs::write(&junk, vec![0x5a; 8192]).expect("junk");
    let out = run(hubd(&hub.data).arg("restore").arg(&junk).arg("--json")).await;
    assert_eq!(code(&out), 1);
    assert_eq!(json(&out)["error"]["code"], "not_a_hub_database");
    let out = run(hubd(&hub.data).args(["agents", "--json"])).await;
    assert_eq!(
        status_of(&json(&out), "web-2"),
        "revoked",
        "a refused restore changes nothing"
    );

    // Another hub's backup is refused unless forced.
    let mut other = Hub::init().await;
    other.start().await;
    let foreign = dir.join("foreign.db");
    let out = run(hubd(&other.data).arg("backup").arg(&foreign)).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(other.stop().await.success());
    let out = run(hubd(&hub.data).arg("restore").arg(&foreign).arg("--json")).await;
    assert_eq!(json(&out)["error"]["code"], "other_hub");

    let out = run(hubd(&hub.data).arg("restore").arg(&file).arg("--json")).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["restored"]["agents"], 2);
    assert!(
        hub.data.join("hub.db.bak").is_file(),
        "the old database is kept"
    );

    hub.start().await;
    let (_, listed) = hub.admin(&["agents"]).await;
    assert_eq!(status_of(&listed, "web-1"), "offline");
    assert_eq!(
        status_of(&listed, "web-2"),
        "offline",
        "the revocation came after the backup"
    );
    let (_, tokens) = hub.admin(&["token", "list"]).await;
    assert_eq!(ids(&tokens, "id"), ids(&tokens_before, "id"));
    // Agents enrolled before the backup connect to the restored hub, and the spare token works.
    let mut back = Agent::start(&a2);
    back.connected().await;
    let a3 = enrol(&dir, "web-3", &spare).await;
    let mut third = Agent::start(&a3);
    third.connected().await;
    back.stop().await;
    third.stop().await;
    assert!(hub.stop().await.success());

    // A stopped hub is backed up directly.
    let offline = dir.join("offline.db");
    let out = run(hubd(&hub.data).arg("backup").arg(&offline).arg("--json")).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["online"], false);
    assert_eq!(json(&out)["agents"], 3);
}
