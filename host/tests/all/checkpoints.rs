//! Checkpoints: start-up loads the latest checkpoint and the changes after it, with the
//! same facts and decisions as replaying the whole history; a checkpoint that does not
//! verify is passed over for the one before it or the base; a policy change after a
//! checkpoint is built, and checkpointed at once; checkpoints follow the write count.

use super::service::{NOW, decision_mix, get, post, runtime_with, serve_config, serve_on, temp_db};
use clearance_host::RuntimeConfig;
use clearance_host::service::ServiceConfig;
use clearance_host::store::SqliteFile;
use clearance_host::store::checkpoint::recover_with;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// No checkpoint but those the test asks for.
fn manual() -> ServiceConfig {
    ServiceConfig {
        checkpoint_changes: 0,
        checkpoint_interval: Duration::ZERO,
        ..ServiceConfig::default()
    }
}

/// Writes `n` changes that move decisions: events created (the station's maintenance
/// organisation assigned on creation, EV5), and every third write unassigns it again.
async fn write(base: &str, from: usize, n: usize) -> u64 {
    let c = super::admin();
    let mut revision = 0;
    for i in from..from + n {
        let id = format!("cp_{i}");
        let deltas = if i % 3 == 2 {
            json!([{ "op": "remove_tuple", "tuple": { "resource": format!("event:cp_{}", i - 1), "relation": "assigned", "subject": "organization:skyways_lhr_mx" } }])
        } else {
            super::create_event(&id)
        };
        let body = json!({ "author": "user:occ_controller", "now": NOW, "deltas": deltas });
        let (status, answer) = post(&c, &format!("{base}/v1/facts"), body).await;
        assert_eq!(status, 200, "write {i}: {answer}");
        revision = answer["revision"].as_u64().unwrap();
    }
    revision
}

/// What a host serves: its revision, its facts and its decisions on the mix.
async fn served(base: &str) -> (u64, Value, Vec<Value>) {
    let c = super::admin();
    let (_, facts) = get(&c, &format!("{base}/v1/facts")).await;
    let revision = facts["revision"].as_u64().unwrap();
    (revision, facts, decision_mix(&c, base).await)
}

/// The facts of a whole replay from the base, against those recovered from the latest
/// checkpoint.
fn same_as_full_replay(db: &Path) {
    let store = SqliteFile::open(db).unwrap();
    let stored = store.load().unwrap();
    let mut full = stored.base;
    for c in &stored.changes {
        full.extend(&c.deltas).unwrap();
        full.revision = c.revision;
    }
    let recovered = recover_with(store.latest(None).unwrap(), &|_| {}).unwrap();
    assert_eq!(
        recovered.facts, full,
        "recovered from a checkpoint vs replayed"
    );
}

fn checkpoints(db: &Path) -> Vec<u64> {
    SqliteFile::open(db).unwrap().checkpoints().unwrap()
}

#[test]
fn start_up_loads_the_latest_checkpoint_and_the_changes_after_it() {
    let db = temp_db("checkpoint-start");
    tokio().block_on(async {
        let (base, s) = serve_config(&db, manual()).await;
        let first = write(&base, 0, 10).await;
        let w = s.checkpoint().await.unwrap().unwrap();
        assert_eq!(w.revision, first);
        assert!(
            s.checkpoint().await.unwrap().is_none(),
            "nothing new to keep"
        );
        let second = write(&base, 10, 10).await;
        assert_eq!(s.checkpoint().await.unwrap().unwrap().revision, second);
        let last = write(&base, 20, 5).await;
        assert_eq!(checkpoints(&db), vec![first, second]);
        let before = served(&base).await;
        assert_eq!(before.0, last);
        same_as_full_replay(&db);

        let (again, s2) = serve_config(&db, manual()).await;
        assert_eq!(s2.started_from(), (second, 5));
        let after = served(&again).await;
        assert_eq!(after.0, before.0);
        assert_eq!(after.1, before.1, "the facts after start-up");
        assert_eq!(after.2, before.2, "the decisions after start-up");

        // Writes go on from there, and a third checkpoint drops the first.
        let more = write(&again, 25, 3).await;
        assert_eq!(s2.checkpoint().await.unwrap().unwrap().revision, more);
        assert_eq!(checkpoints(&db), vec![second, more]);
        let (third, s3) = serve_config(&db, manual()).await;
        assert_eq!(s3.started_from(), (more, 0));
        assert_eq!(served(&third).await, served(&again).await);
    });
}

#[test]
fn a_checkpoint_that_does_not_verify_is_passed_over_for_an_earlier_state() {
    let db = temp_db("checkpoint-damaged");
    tokio().block_on(async {
        let (base, s) = serve_config(&db, manual()).await;
        let first = write(&base, 0, 6).await;
        s.checkpoint().await.unwrap().unwrap();
        let second = write(&base, 6, 6).await;
        s.checkpoint().await.unwrap().unwrap();
        let last = write(&base, 12, 3).await;
        let before = served(&base).await;

        let damage = |revision: u64| {
            let conn =
                rusqlite::Connection::open(clearance_host::store::checkpoint_path(&db)).unwrap();
            let n = conn
                .execute(
                    "UPDATE checkpoints SET facts = replace(facts, 'cp_1', 'cp_9') WHERE revision = ?1",
                    [revision as i64],
                )
                .unwrap();
            assert_eq!(n, 1);
        };
        damage(second);
        let (again, s2) = serve_config(&db, manual()).await;
        assert_eq!(s2.started_from(), (first, last - first));
        assert_eq!(served(&again).await, before);

        damage(first);
        let (third, s3) = serve_config(&db, manual()).await;
        assert_eq!(s3.started_from(), (0, last), "from the base");
        assert_eq!(served(&third).await, before);
    });
}

#[test]
fn a_policy_change_after_a_checkpoint_is_built_then_checkpointed_at_once() {
    let db = temp_db("checkpoint-policy");
    tokio().block_on(async {
        let (base, s) = serve_config(&db, manual()).await;
        let first = write(&base, 0, 4).await;
        s.checkpoint().await.unwrap().unwrap();
        let c = super::admin();
        let (status, answer) = post(&c, &format!("{base}/v1/policy/reload"), json!({})).await;
        assert_eq!(status, 200, "{answer}");
        let last = write(&base, 4, 2).await;
        let before = served(&base).await;
        // Checkpoints off: start-up applies the policy change, so builds the snapshot.
        let (again, s2) = serve_config(&db, manual()).await;
        assert_eq!(s2.started_from(), (first, last - first));
        assert_eq!(served(&again).await, before);

        // Checkpoints on: a policy change is checkpointed at once, past the count.
        let config = ServiceConfig {
            checkpoint_changes: 1_000,
            checkpoint_interval: Duration::from_secs(3_600),
            checkpoint_gap: Duration::ZERO,
            ..ServiceConfig::default()
        };
        let (third, _s3) = serve_config(&db, config).await;
        let (status, answer) = post(&c, &format!("{third}/v1/policy/reload"), json!({})).await;
        assert_eq!(status, 200, "{answer}");
        let reloaded = answer["revision"].as_u64().unwrap();
        let waited = std::time::Instant::now();
        while !checkpoints(&db).contains(&reloaded) {
            assert!(
                waited.elapsed() < Duration::from_secs(30),
                "no checkpoint at {reloaded}: {:?}",
                checkpoints(&db)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (fourth, s4) = serve_config(&db, manual()).await;
        assert_eq!(s4.started_from(), (reloaded, 0));
        assert_eq!(served(&fourth).await, served(&third).await);
    });
}

#[test]
fn checkpoints_follow_the_count_of_changes() {
    let db = temp_db("checkpoint-count");
    tokio().block_on(async {
        let config = ServiceConfig {
            checkpoint_changes: 5,
            checkpoint_interval: Duration::ZERO,
            checkpoint_gap: Duration::ZERO,
            ..ServiceConfig::default()
        };
        let (base, _s) = serve_config(&db, config).await;
        let last = write(&base, 0, 12).await;
        let waited = std::time::Instant::now();
        // At least one within the writes, and the last within five changes of the end.
        while checkpoints(&db).last().is_none_or(|&c| last - c >= 5) {
            assert!(
                waited.elapsed() < Duration::from_secs(30),
                "checkpoints {:?} at revision {last}",
                checkpoints(&db)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let before = served(&base).await;
        let (again, s2) = serve_config(&db, manual()).await;
        let from = s2.started_from();
        assert!(from.0 > 0 && from.0 + from.1 == last, "{from:?}");
        assert_eq!(served(&again).await, before);
        same_as_full_replay(&db);
    });
}

/// Past `rebase_after` changes the instances take one's bytes as their new base (a fresh
/// instance then starts from it rather than replaying every change): the base moves on
/// with the writes, and every instance decides as a host started afresh on the store.
#[test]
fn instances_renew_their_base_and_decide_as_a_fresh_start() {
    let db = temp_db("rebase");
    tokio().block_on(async {
        let rt = runtime_with(RuntimeConfig {
            instances: 3,
            rebase_after: 4,
            ..RuntimeConfig::default()
        });
        let (base, _s) = serve_on(&db, manual(), std::sync::Arc::clone(&rt)).await;
        let start = rt.base_revision().unwrap();
        let mut bases = std::collections::BTreeSet::new();
        for round in 0..6 {
            write(&base, round * 5, 5).await;
            // The renewal runs in the background.
            let waited = std::time::Instant::now();
            while rt.base_revision() == bases.last().copied().or(Some(start)) {
                assert!(
                    waited.elapsed() < Duration::from_secs(30),
                    "the base stays at {:?}",
                    rt.base_revision()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            bases.insert(rt.base_revision().unwrap());
        }
        assert!(bases.len() >= 3, "the base moved to {bases:?} only");
        // Every instance answers the mix: six at once, so the instances idle through the
        // renewals start from the new base.
        let ours = served(&base).await;
        let all: Vec<_> = (0..6)
            .map(|_| {
                let base = base.clone();
                tokio::spawn(async move { served(&base).await })
            })
            .collect();
        for one in all {
            assert!(one.await.unwrap() == ours, "an instance decides otherwise");
        }
        let (again, _) = serve_config(&db, manual()).await;
        assert_eq!(
            served(&again).await,
            ours,
            "a host started afresh decides otherwise"
        );
    });
}
