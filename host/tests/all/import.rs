//! `clearance import` into a store a host is serving: a malformed file, a delta the
//! facts refuse and facts the policy refuses each write nothing and say where; a good
//! file is one revision, which the serving host catches up on and decides with.

use super::{block, create_event};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const NOW: &str = "2026-05-01T10:00:00Z";

/// Runs `clearance import --data db --from file`: exit code and what it printed.
fn import(db: &Path, file: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_clearance"))
        .current_dir(super::root())
        .arg("import")
        .arg("--data")
        .arg(db)
        .arg("--from")
        .arg(file)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn lines(deltas: &[Value]) -> String {
    deltas.iter().map(|d| format!("{d}\n")).collect::<String>()
}

async fn revision(base: &str) -> u64 {
    super::get_json(&super::admin(), &format!("{base}/v1/revision")).await["revision"]
        .as_u64()
        .unwrap()
}

async fn view(base: &str, event: &str) -> Value {
    super::admin()
        .post(format!("{base}/v1/check"))
        .json(&json!({ "principal": "user:occ_controller", "action": "view", "resource": event, "now": NOW }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[test]
fn an_import_is_one_checked_revision_and_a_bad_line_writes_nothing() {
    let dir = super::scratch("import");
    let db = dir.join("facts.db");
    let server = super::faults::start(&db, &["--follow-interval-ms", "100"]).unwrap();
    let base = server.base.clone();
    let event = |id: &str| -> Vec<Value> { create_event(id).as_array().unwrap().clone() };

    // Line 3 is not a delta.
    let bad = dir.join("bad.ndjson");
    let mut text = lines(&event("imp0")[..2]);
    text.push_str("{\"op\": \"add_tuple\", \"tuple\": \n");
    text.push_str(&lines(&event("imp0")[2..]));
    std::fs::write(&bad, text).unwrap();
    let (code, said) = import(&db, &bad);
    assert_eq!(code, 2, "{said}");
    assert!(said.contains("bad.ndjson:3: not a delta"), "{said}");

    // Line 2 names an entity that is nowhere (after a blank line 1).
    let dangling = dir.join("dangling.ndjson");
    let mut deltas = event("imp0");
    deltas.remove(0);
    std::fs::write(&dangling, format!("\n{}", lines(&deltas))).unwrap();
    let (code, said) = import(&db, &dangling);
    assert_eq!(code, 2, "{said}");
    assert!(
        said.contains("dangling.ndjson:2:") && said.contains("nothing was written"),
        "{said}"
    );

    // Facts the policy does not have: a type it does not declare.
    let untyped = dir.join("untyped.ndjson");
    let mut deltas = event("imp0");
    deltas.push(json!({ "op": "add_entity", "entity": { "type": "spaceship", "id": "x1", "account": "skyways" } }));
    std::fs::write(&untyped, lines(&deltas)).unwrap();
    let (code, said) = import(&db, &untyped);
    assert_eq!(code, 2, "{said}");
    assert!(
        said.contains("spaceship") && said.contains("nothing was written"),
        "{said}"
    );

    // A tuple across two accounts: the check goes account by account, and refuses it.
    let across = dir.join("across.ndjson");
    let mut deltas = event("imp0");
    deltas[1]["tuple"]["subject"] = json!("station:blue_lhr");
    std::fs::write(&across, lines(&deltas)).unwrap();
    let (code, said) = import(&db, &across);
    assert_eq!(code, 2, "{said}");
    assert!(
        said.contains("facts.cross_account") && said.contains("nothing was written"),
        "{said}"
    );

    block(async {
        assert_eq!(revision(&base).await, 0, "a refused import wrote something");
        assert_eq!(
            view(&base, "event:imp1").await["reasons"][0]["code"],
            "entity.unknown"
        );
    });

    // Two events, one revision; the host serving the store catches up on it.
    let good = dir.join("good.ndjson");
    let mut deltas = event("imp1");
    deltas.extend(event("imp2"));
    std::fs::write(&good, lines(&deltas)).unwrap();
    let (code, said) = import(&db, &good);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("as revision 1"), "{said}");
    block(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while revision(&base).await < 1 {
            assert!(Instant::now() < deadline, "the host never caught up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(revision(&base).await, 1);
        for id in ["event:imp1", "event:imp2"] {
            let d = view(&base, id).await;
            assert_eq!(d["allowed"], true, "{d}");
        }
        let facts = super::get_json(&super::admin(), &format!("{base}/v1/facts")).await;
        assert_eq!(facts["revision"], 1, "{facts}");
    });

    // A bulk import reaches a change feed as a `reset` (fetch the state again), not as
    // one event of every delta.
    let bulk = dir.join("bulk.ndjson");
    let deltas: Vec<Value> = (0..10_001)
        .map(|i| json!({ "op": "set_attr", "entity": "event:imp1", "attr": "ends_at", "value": format!("2026-05-{:02}T00:00:00Z", 3 + i % 20) }))
        .collect();
    std::fs::write(&bulk, lines(&deltas)).unwrap();
    block(async {
        let mut feed = super::admin()
            .get(format!("{base}/v1/changes?since=1"))
            .send()
            .await
            .unwrap();
        let (code, said) = tokio::task::block_in_place(|| import(&db, &bulk));
        assert_eq!(code, 0, "{said}");
        let mut text = String::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !text.contains("event: reset") {
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, feed.chunk())
                .await
                .expect("no reset on the feed")
                .unwrap()
                .expect("the feed ended");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(text.contains("bulk change of 10001 deltas"), "{text}");
        assert!(!text.contains("event: change"), "{text}");
    });
}

/// An import leaves a checkpoint at its revision: a host starting on the store reads the
/// imported state instead of replaying the import, builds the snapshot the checkpoint
/// lacks (an import cannot hold both in its memory) and adds it, so that the next start
/// carries it too.
#[test]
fn an_import_leaves_a_checkpoint_that_the_first_start_completes() {
    use clearance_host::store::SqliteFile;
    let dir = super::scratch("import-checkpoint");
    let db = dir.join("facts.db");
    // A store of the demo's facts, then no host on it.
    drop(super::faults::start(&db, &[]).unwrap());
    let good = dir.join("good.ndjson");
    let mut deltas: Vec<Value> = create_event("cp1").as_array().unwrap().clone();
    deltas.extend(create_event("cp2").as_array().unwrap().clone());
    std::fs::write(&good, lines(&deltas)).unwrap();
    let (code, said) = import(&db, &good);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("a checkpoint at revision 1"), "{said}");
    let latest = || SqliteFile::open(&db).unwrap().latest(None).unwrap();
    let l = latest();
    assert_eq!(
        (l.revision, l.changes.len()),
        (1, 0),
        "start-up would replay the import"
    );
    assert_eq!(
        l.snapshot.as_deref(),
        Some(&[][..]),
        "the import's checkpoint holds a snapshot"
    );

    let server = super::faults::start(&db, &[]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while latest().snapshot.as_deref().is_none_or(<[u8]>::is_empty) {
        assert!(
            Instant::now() < deadline,
            "the checkpoint was never completed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    block(async {
        assert_eq!(view(&server.base, "event:cp1").await["allowed"], true);
    });
    let log = server.log.lock().unwrap().clone();
    assert!(log.contains("holds no snapshot yet"), "{log}");
    assert!(log.contains("now holds its snapshot"), "{log}");
    drop(server);

    // The next start carries the snapshot: nothing is built.
    let server = super::faults::start(&db, &[]).unwrap();
    block(async {
        assert_eq!(revision(&server.base).await, 1);
        assert_eq!(view(&server.base, "event:cp2").await["allowed"], true);
    });
    let log = server.log.lock().unwrap().clone();
    assert!(!log.contains("holds no snapshot"), "{log}");
    assert!(!log.contains("building it"), "{log}");
}
