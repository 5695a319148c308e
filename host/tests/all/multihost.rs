//! Several hosts on one PostgreSQL history, each a real `clearance serve` process on
//! loopback over a cluster of the test's own ([`super::pg::Pg`]): concurrent writers on
//! every host, a host behind asked for a revision it has not served, an unmigrated or
//! newer schema, the database restarted under writes, a host stopped and resumed, a host
//! killed in a write loop. Each ends in the truth: every acknowledged write on every
//! host, the same revision and the same facts and decisions everywhere, nothing half
//! applied, no 500.

use super::faults::{Server, start_with};
use super::pg::Pg;
use super::service::{NOW, decision_mix, get, post};
use super::{ADMIN, block, create_event, root};
use clearance_host::auth::{Scope, stored_key};
use clearance_host::store::FactStore;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

fn clearance() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_clearance"));
    c.current_dir(root());
    c
}

/// `clearance migrate --store url`: what it printed, and whether it succeeded.
fn migrate(url: &str) -> (bool, String) {
    let out = clearance()
        .args(["migrate", "--store", url])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// A migrated database of `pg` holding the tests' admin key.
fn database(pg: &Pg, name: &str) -> String {
    let url = pg.database(name);
    let (ok, said) = migrate(&url);
    assert!(ok, "clearance migrate: {said}");
    let key = stored_key(ADMIN, Scope::Admin, &[], "test", 0).unwrap();
    block(async {
        let store = clearance_host::store::postgres::PgStore::connect(&url)
            .await
            .unwrap();
        store.add_key(key).await.unwrap();
    });
    url
}

/// A host on the database at `url`, following the others every 200 ms besides their
/// notifications, with no budget of work (the tests compare every decision of a growing
/// world, hundreds of thousands a second).
fn host(url: &str, name: &str) -> Result<Server, String> {
    host_with(url, name, &[])
}

/// [`host`], with more arguments.
fn host_with(url: &str, name: &str, extra: &[&str]) -> Result<Server, String> {
    let dir = super::scratch(&format!("multihost-{name}"));
    let mut args: Vec<std::ffi::OsString> = vec![
        "--store".into(),
        url.into(),
        "--cache-dir".into(),
        dir.join("cache").into(),
        "--follow-interval-ms".into(),
        "200".into(),
        "--work-limit".into(),
        "0".into(),
    ];
    args.extend(extra.iter().map(Into::into));
    start_with(&args, &|| {})
}

/// Writes `n` new events named `<prefix><k>` through `base`, each retried on 409 and
/// 503: the acknowledged ones with their revisions, and every status seen.
async fn write_events(base: &str, prefix: &str, n: usize) -> (Vec<(String, u64)>, Vec<u16>) {
    write_events_until(base, prefix, n, None).await
}

/// [`write_events`], starting no new one after `until`.
async fn write_events_until(
    base: &str,
    prefix: &str,
    n: usize,
    until: Option<Instant>,
) -> (Vec<(String, u64)>, Vec<u16>) {
    let c = super::admin();
    let mut acked = Vec::new();
    let mut seen = Vec::new();
    for k in 0..n {
        if until.is_some_and(|u| Instant::now() > u) {
            break;
        }
        let id = format!("{prefix}{k}");
        for _ in 0..50 {
            let r = c
                .post(format!("{base}/v1/facts"))
                .json(&json!({ "author": "user:occ_controller", "now": NOW, "deltas": create_event(&id) }))
                .timeout(Duration::from_secs(20))
                .send()
                .await;
            let Ok(r) = r else {
                seen.push(0);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let status = r.status().as_u16();
            seen.push(status);
            let body: Value = r.json().await.unwrap_or(Value::Null);
            if status == 200 {
                acked.push((id.clone(), body["revision"].as_u64().unwrap()));
                break;
            }
            // An unknown outcome may have been stored: the retry is then refused as a
            // duplicate entity, and the event is found by the final check.
            if body["error"]["code"] == "facts.duplicate_entity" {
                break;
            }
            assert!(
                status == 409 || status == 503,
                "{base}: write {id}: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    (acked, seen)
}

async fn revision(base: &str) -> u64 {
    let (_, r) = get(&super::admin(), &format!("{base}/v1/revision")).await;
    r["revision"].as_u64().unwrap_or(0)
}

/// Waits until every host serves at least `target`; panics after 20 s naming them.
async fn converge(bases: &[&str], target: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut at = Vec::new();
        for b in bases {
            at.push(revision(b).await);
        }
        if at.iter().all(|r| *r >= target) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the hosts did not reach revision {target}: {at:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a host serves: its revision, its facts (entities and tuples, in a set) and a mix
/// of decisions.
async fn state(base: &str) -> (u64, BTreeSet<String>, Vec<Value>) {
    let c = super::admin();
    let (_, facts) = get(&c, &format!("{base}/v1/facts")).await;
    let mut all = BTreeSet::new();
    for k in ["entities", "tuples"] {
        for x in facts[k].as_array().unwrap() {
            all.insert(x.to_string());
        }
    }
    (
        facts["revision"].as_u64().unwrap(),
        all,
        decision_mix(&c, base).await,
    )
}

/// The event ids a host's facts hold, with whether each is whole (its entity and its
/// three tuples).
async fn events(base: &str) -> BTreeSet<String> {
    let (_, facts) = get(&super::admin(), &format!("{base}/v1/facts")).await;
    let tuples: BTreeSet<(String, String)> = facts["tuples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["resource"].as_str().unwrap().to_string(),
                t["relation"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    facts["entities"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "event")
        .map(|e| e["id"].as_str().unwrap().to_string())
        .inspect(|id| {
            for rel in ["station", "owner_org", "created_by"] {
                assert!(
                    tuples.contains(&(format!("event:{id}"), rel.to_string())),
                    "{base}: event {id} is half applied: no {rel}"
                );
            }
        })
        .collect()
}

#[test]
fn three_hosts_on_one_postgres_agree_after_concurrent_writes_on_all_three() {
    let pg = Pg::start("three");
    let url = database(&pg, "three");
    let hosts: Vec<Server> = (0..3)
        .map(|i| host(&url, &format!("three-{i}")).unwrap())
        .collect();
    let bases: Vec<&str> = hosts.iter().map(|h| h.base.as_str()).collect();
    block(async {
        // Two writers on each host at once.
        let mut tasks = Vec::new();
        for (i, b) in bases.iter().enumerate() {
            for w in 0..2 {
                let b = b.to_string();
                tasks.push(tokio::spawn(async move {
                    write_events(&b, &format!("h{i}w{w}e"), 25).await
                }));
            }
        }
        let mut acked = Vec::new();
        let mut statuses = Vec::new();
        for t in tasks {
            let (a, s) = t.await.unwrap();
            acked.extend(a);
            statuses.extend(s);
        }
        assert_eq!(acked.len(), 150, "every write acknowledged");
        let revisions: BTreeSet<u64> = acked.iter().map(|(_, r)| *r).collect();
        assert_eq!(revisions.len(), 150, "no revision given twice");
        let top = *revisions.iter().max().unwrap();
        converge(&bases, top).await;
        let first = state(bases[0]).await;
        assert_eq!(first.0, top);
        for b in &bases[1..] {
            let other = state(b).await;
            assert_eq!(other.0, first.0, "{b}: the revision");
            assert!(
                other.1 == first.1,
                "{b}: the facts differ from the first host's"
            );
            assert_eq!(other.2, first.2, "{b}: the decisions differ");
        }
        let held = events(bases[2]).await;
        for (id, _) in &acked {
            assert!(held.contains(id), "acknowledged event {id} is missing");
        }
        let conflicts = statuses.iter().filter(|s| **s == 409).count();
        assert_eq!(conflicts, 0, "a write was answered 409: {statuses:?}");
    });
}

#[test]
fn a_host_behind_is_asked_for_a_revision_it_has_not_served() {
    let pg = Pg::start("behind");
    let url = database(&pg, "behind");
    let (a, b) = (
        host(&url, "behind-a").unwrap(),
        host(&url, "behind-b").unwrap(),
    );
    block(async {
        let c = super::admin();
        let (acked, _) = write_events(&a.base, "mr", 1).await;
        let written = acked[0].1;
        // Asked at once, before its follower would have polled: it waits for the
        // revision, then decides on it.
        let (status, d) = post(
            &c,
            &format!("{}/v1/check", b.base),
            json!({ "principal": "user:occ_controller", "action": "view", "resource": "event:mr0", "now": NOW, "min_revision": written }),
        )
        .await;
        assert_eq!(status, 200, "{d}");
        assert!(d["revision"].as_u64().unwrap() >= written, "{d}");
        // A revision no host has: 503 naming the revision it has.
        let (status, d) = post(
            &c,
            &format!("{}/v1/check", b.base),
            json!({ "principal": "user:occ_controller", "action": "view", "resource": "event:mr0", "now": NOW, "min_revision": written + 1000 }),
        )
        .await;
        assert_eq!(status, 503);
        assert_eq!(d["error"]["code"], "revision.unavailable");
        assert!(
            d["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("current {written}")),
            "{d}"
        );
    });
}

#[test]
fn a_host_refuses_an_unmigrated_or_newer_schema_and_says_which() {
    let pg = Pg::start("schema");
    let url = pg.database("schema");
    let refused = host(&url, "schema-unmigrated")
        .err()
        .expect("started on no schema");
    assert!(refused.contains("is not migrated"), "{refused}");
    assert!(refused.contains("clearance migrate"), "{refused}");
    let (ok, said) = migrate(&url);
    assert!(ok && said.contains("from version 0 to 1"), "{said}");
    let (ok, said) = migrate(&url);
    assert!(ok && said.contains("at version 1 already"), "{said}");
    pg.sql("schema", "UPDATE clearance_schema SET version = 99");
    let refused = host(&url, "schema-newer")
        .err()
        .expect("started on a newer schema");
    assert!(
        refused.contains("schema version 99, newer than this host's 1"),
        "{refused}"
    );
    let (ok, said) = migrate(&url);
    assert!(!ok && said.contains("newer"), "{said}");

    // SQLite alike: a store of an older format is refused until it is migrated.
    let db = super::scratch("schema-sqlite").join("old.db");
    let server = super::faults::start(&db, &[]).unwrap();
    drop(server);
    rusqlite::Connection::open(&db)
        .unwrap()
        .pragma_update(None, "user_version", 3)
        .unwrap();
    let refused = super::faults::start(&db, &[])
        .err()
        .expect("started on format 3");
    assert!(
        refused.contains("store format 3, older than this host's 4")
            && refused.contains("clearance migrate --data"),
        "{refused}"
    );
    let out = clearance()
        .args(["migrate", "--data"])
        .arg(&db)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.contains("from format 3 to 4"),
        "{said}"
    );
    assert!(super::faults::start(&db, &[]).is_ok());
}

#[test]
fn the_database_restarted_under_writes_is_answered_503_and_loses_nothing() {
    let pg = Pg::start("restart");
    let url = database(&pg, "restart");
    let (a, b) = (
        host(&url, "restart-a").unwrap(),
        host(&url, "restart-b").unwrap(),
    );
    block(async {
        let (ba, bb) = (a.base.clone(), b.base.clone());
        // Writes on both hosts for 8 s; the database is down for 4 s of it, longer than
        // a host waits for a connection (3 s), so that writes meet it down whenever the
        // stop falls (a shorter outage could fall between two transactions and be waited
        // out by every write).
        let until = Some(Instant::now() + Duration::from_secs(8));
        let wa = tokio::spawn(async move { write_events_until(&ba, "ra", 100_000, until).await });
        let wb = tokio::spawn(async move { write_events_until(&bb, "rb", 100_000, until).await });
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let pg = &pg;
        tokio::task::block_in_place(|| pg.down());
        tokio::time::sleep(Duration::from_secs(4)).await;
        tokio::task::block_in_place(|| pg.up());
        let (acked_a, seen_a) = wa.await.unwrap();
        let (acked_b, seen_b) = wb.await.unwrap();
        let seen: Vec<u16> = seen_a.iter().chain(&seen_b).copied().collect();
        assert!(!seen.contains(&500), "a 500 was answered: {seen:?}");
        assert!(
            seen.contains(&503),
            "no write met the database down: {seen:?}"
        );
        let top = acked_a
            .iter()
            .chain(&acked_b)
            .map(|(_, r)| *r)
            .max()
            .unwrap();
        converge(&[&a.base, &b.base], top).await;
        for base in [&a.base, &b.base] {
            let held = events(base).await;
            for (id, _) in acked_a.iter().chain(&acked_b) {
                assert!(held.contains(id), "{base}: acknowledged {id} is missing");
            }
        }
        assert_eq!(state(&a.base).await.1, state(&b.base).await.1);
    });
}

#[test]
fn a_stopped_host_catches_up_and_a_killed_one_loses_no_acknowledged_write() {
    let pg = Pg::start("stopkill");
    let url = database(&pg, "stopkill");
    let mut a = host(&url, "stopkill-a").unwrap();
    let b = host(&url, "stopkill-b").unwrap();
    let c = host(&url, "stopkill-c").unwrap();
    let signal = |pid: u32, sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    block(async {
        // B stopped in the middle of its own writes (it may hold the append lock, which
        // the database takes back from a holder idle for 5 s): A writes on meanwhile,
        // and B, resumed, catches up.
        let bb = b.base.clone();
        let until = Some(Instant::now() + Duration::from_secs(9));
        let b_writer = tokio::spawn(async move { write_events_until(&bb, "bw", 300, until).await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        signal(b.child.id(), "-STOP");
        let stopped = Instant::now();
        let (during, seen) = write_events_until(
            &a.base,
            "aw",
            200,
            Some(Instant::now() + Duration::from_secs(8)),
        )
        .await;
        assert!(
            !during.is_empty(),
            "A wrote nothing while B was stopped: {seen:?}"
        );
        assert!(!seen.contains(&500), "{seen:?}");
        signal(b.child.id(), "-CONT");
        eprintln!(
            "A acknowledged {} writes in {:?} while B was stopped",
            during.len(),
            stopped.elapsed()
        );
        let (b_acked, b_seen) = b_writer.await.unwrap();
        assert!(!b_seen.contains(&500), "{b_seen:?}");
        let top = during
            .iter()
            .chain(&b_acked)
            .map(|(_, r)| *r)
            .max()
            .unwrap();
        converge(&[&a.base, &b.base, &c.base], top).await;
        let held = events(&c.base).await;
        for (id, _) in during.iter().chain(&b_acked) {
            assert!(held.contains(id), "acknowledged {id} is missing");
        }

        // B stopped while A writes; resumed, it catches up.
        signal(b.child.id(), "-STOP");
        let (acked, _) = write_events(&a.base, "s", 20).await;
        signal(b.child.id(), "-CONT");
        let top = acked.last().unwrap().1;
        converge(&[&b.base], top).await;
        assert_eq!(state(&a.base).await.1, state(&b.base).await.1);

        // A killed in a write loop: every write it acknowledged is on B and C, which
        // carry on.
        let base = a.base.clone();
        let writer = tokio::spawn(async move {
            let c = super::admin();
            let mut acked = Vec::new();
            for k in 0..10_000 {
                let r = c
                    .post(format!("{base}/v1/facts"))
                    .json(&json!({ "author": "user:occ_controller", "now": NOW, "deltas": create_event(&format!("k{k}")) }))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 200 => {
                        let body: Value = r.json().await.unwrap();
                        acked.push((format!("k{k}"), body["revision"].as_u64().unwrap()));
                    }
                    _ => break,
                }
            }
            acked
        });
        tokio::time::sleep(Duration::from_millis(700)).await;
        let _ = a.child.kill();
        let acked = writer.await.unwrap();
        assert!(!acked.is_empty(), "no write went through before the kill");
        let top = acked.last().unwrap().1;
        converge(&[&b.base, &c.base], top).await;
        let held = events(&c.base).await;
        for (id, _) in &acked {
            assert!(
                held.contains(id),
                "acknowledged {id} is missing after the kill"
            );
        }
        let (more, _) = write_events(&b.base, "after", 5).await;
        assert_eq!(more.len(), 5);
        converge(&[&c.base], more.last().unwrap().1).await;
        assert_eq!(state(&b.base).await.1, state(&c.base).await.1);
    });
}

#[test]
fn a_new_host_starts_from_the_latest_checkpoint_in_the_database() {
    let pg = Pg::start("checkpoint");
    let url = database(&pg, "checkpoint");
    let a = host_with(
        &url,
        "checkpoint-a",
        &["--checkpoint-changes", "20", "--checkpoint-gap", "0"],
    )
    .unwrap();
    block(async {
        let (acked, _) = write_events(&a.base, "cp", 45).await;
        let top = acked.last().unwrap().1;
        // The checkpoint is written in the background, into the database.
        let deadline = Instant::now() + Duration::from_secs(20);
        while pg
            .sql(
                "checkpoint",
                "SELECT COALESCE(MAX(revision), 0) FROM clearance_checkpoints",
            )
            .parse::<u64>()
            .unwrap()
            < 40
        {
            assert!(Instant::now() < deadline, "no checkpoint at 40 or past it");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let b = tokio::task::block_in_place(|| host(&url, "checkpoint-b").unwrap());
        let log = b.log.lock().unwrap().clone();
        let from: u64 = log
            .split("(from revision ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("no start-up line: {log}"));
        assert!(
            from >= 40,
            "the new host started from revision {from}: {log}"
        );
        assert_eq!(revision(&b.base).await, top);
        assert_eq!(state(&a.base).await, state(&b.base).await);
    });
}

#[test]
fn readiness_flips_while_the_database_is_down_and_liveness_does_not() {
    let pg = Pg::start("ready");
    let url = database(&pg, "ready");
    let a = host(&url, "ready-a").unwrap();
    block(async {
        let c = reqwest::Client::new();
        let status = |path: &'static str| {
            let (c, url) = (c.clone(), format!("{}{path}", a.base));
            async move {
                let r = c.get(url).send().await.unwrap();
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap_or(Value::Null))
            }
        };
        let until = |want: u16, path: &'static str| async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let (got, body) = status(path).await;
                if got == want {
                    return body;
                }
                assert!(
                    Instant::now() < deadline,
                    "{path} never answered {want}: {body}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let ready = until(200, "/readyz").await;
        assert_eq!(ready["ready"], true, "{ready}");
        tokio::task::block_in_place(|| pg.down());
        let not = until(503, "/readyz").await;
        assert_eq!(not["error"]["code"], "host.not_ready", "{not}");
        assert!(
            not["error"]["message"]
                .as_str()
                .unwrap()
                .contains("the store has not answered"),
            "{not}"
        );
        // Alive all the while, without credentials.
        assert_eq!(status("/healthz").await.0, 200);
        tokio::task::block_in_place(|| pg.up());
        until(200, "/readyz").await;
    });
}

/// `clearance import --store url` while a host serves the database: a bad line writes
/// nothing; a good file is one revision, which the host catches up on.
#[test]
fn an_import_into_postgres_is_served_by_the_host_on_it() {
    let pg = Pg::start("import");
    let url = database(&pg, "clearance");
    let a = host(&url, "import-a").unwrap();
    let dir = super::scratch("multihost-import");
    let lines = |deltas: &[Value]| deltas.iter().map(|d| format!("{d}\n")).collect::<String>();
    let import = |file: &std::path::Path| {
        let out = clearance()
            .args(["import", "--store", &url, "--from"])
            .arg(file)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let mut deltas = create_event("pgimp1").as_array().unwrap().clone();
    let bad = dir.join("bad.ndjson");
    std::fs::write(&bad, format!("{}not json\n", lines(&deltas))).unwrap();
    let (code, said) = import(&bad);
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("bad.ndjson:5: not a delta"), "{said}");
    deltas.extend(create_event("pgimp2").as_array().unwrap().clone());
    let good = dir.join("good.ndjson");
    std::fs::write(&good, lines(&deltas)).unwrap();
    let (code, said) = import(&good);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("as revision 1"), "{said}");
    block(async {
        let admin = super::admin();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, r) = get(&admin, &format!("{}/v1/revision", a.base)).await;
            if r["revision"] == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "the host never caught up: {r}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for event in ["event:pgimp1", "event:pgimp2"] {
            let (_, d) = post(
                &admin,
                &format!("{}/v1/check", a.base),
                json!({ "principal": "user:occ_controller", "action": "view", "resource": event, "now": NOW }),
            )
            .await;
            assert_eq!(d["allowed"], true, "{d}");
        }
    });
}

/// An import into PostgreSQL leaves a checkpoint of the facts at its revision; the first
/// host to start on the database builds the snapshot and adds it to that checkpoint.
#[test]
fn an_import_into_postgresql_leaves_a_checkpoint_the_first_start_completes() {
    let pg = Pg::start("import-checkpoint");
    let url = database(&pg, "imported");
    // The demo's facts, seeded by a first host.
    drop(host(&url, "import-seed").unwrap());
    let dir = super::scratch("multihost-import");
    let file = dir.join("events.ndjson");
    let deltas: Vec<Value> = ["pgcp1", "pgcp2"]
        .iter()
        .flat_map(|id| create_event(id).as_array().unwrap().clone())
        .collect();
    std::fs::write(
        &file,
        deltas.iter().map(|d| format!("{d}\n")).collect::<String>(),
    )
    .unwrap();
    let out = clearance()
        .args(["import", "--store", &url, "--from"])
        .arg(&file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("a checkpoint at revision 1"), "{said}");
    let latest = || {
        block(async {
            let store = clearance_host::store::postgres::PgStore::connect(&url)
                .await
                .unwrap();
            store.latest(None).await.unwrap()
        })
    };
    let l = latest();
    assert_eq!((l.revision, l.changes.len()), (1, 0));
    assert_eq!(l.snapshot.as_deref(), Some(&[][..]));
    let h = host(&url, "import-first").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while latest().snapshot.as_deref().is_none_or(<[u8]>::is_empty) {
        assert!(
            Instant::now() < deadline,
            "the checkpoint was never completed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(h);
    let l = latest();
    assert_eq!((l.revision, l.changes.len()), (1, 0));
}
