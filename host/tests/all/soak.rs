//! The soak: a bounded mixed load on loopback against the real server with its serving
//! defaults (single checks, batches, writes that must be accepted, writes that must be
//! refused, change-feed subscribers), then the books are balanced: no answer 500, every
//! acknowledged write present, whole and in order, every refused write absent, the
//! change feed saw every revision once and in order, and the revision served equals the
//! store's. About 30 s (`CLEARANCE_SOAK_SECS` sets another length); all traffic is to
//! 127.0.0.1 and stops by itself.

use super::service::{NOW, serve, temp_db};
use super::{block, create_event};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// What the load saw.
#[derive(Default)]
struct Tally {
    /// Status code -> count, per kind of request.
    statuses: BTreeMap<(&'static str, u16), u64>,
    /// Latencies in microseconds, per kind.
    latencies: BTreeMap<&'static str, Vec<u64>>,
    /// Acknowledged writes: (writer, sequence, revision), in acknowledgement order.
    acked: Vec<(usize, u64, u64)>,
    /// Writes refused (event ids that must not exist).
    refused: Vec<String>,
    /// Errors with 5xx: the first few bodies, to say what went wrong.
    failures: Vec<String>,
}

fn soak_secs() -> u64 {
    std::env::var("CLEARANCE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
}

/// The key the soak sends: the test admin key, or `CLEARANCE_SOAK_KEY` for another
/// server (`CLEARANCE_SOAK_URL`).
fn soak_key() -> String {
    std::env::var("CLEARANCE_SOAK_KEY").unwrap_or_else(|_| super::ADMIN.to_string())
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

// The rank is in `0..sorted.len()`: a float index into the samples.
#[allow(clippy::cast_possible_truncation)]
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[test]
fn a_mixed_load_never_fails_a_check_and_never_loses_or_invents_a_write() {
    let _alone = super::measured_load();
    block(async {
        // Another server may be soaked: `CLEARANCE_SOAK_URL` (and `CLEARANCE_SOAK_DB`, its
        // SQLite store, to compare with). Otherwise one is started here on the demo data.
        let (base, db, _service) = match std::env::var("CLEARANCE_SOAK_URL") {
            Ok(url) => (
                url,
                std::env::var_os("CLEARANCE_SOAK_DB").map(std::path::PathBuf::from),
                None,
            ),
            Err(_) => {
                let db = temp_db("soak");
                let (base, service) = serve(&db).await;
                (base, Some(db), Some(service))
            }
        };
        let served_revision = |base: String| async move {
            let r: Value = super::client_with(&soak_key())
                .get(format!("{base}/v1/revision"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            r["revision"].as_u64().unwrap()
        };
        let secs = soak_secs();
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let client = super::client_with(&soak_key());
        let checks = [
            ("user:aeroserv_tech", "view", "event:aog_lhr"),
            ("user:jetfix_tech", "view", "event:aog_lhr"),
            ("user:former_controller", "view", "event:aog_lhr"),
            ("user:occ_controller", "update", "event:aog_lhr"),
        ];
        let mut tasks = Vec::new();
        let record = |tally: Arc<Mutex<Tally>>,
                      kind: &'static str,
                      status: u16,
                      micros: u64,
                      body: &Value| {
            let body = body.to_string();
            async move {
                let mut t = tally.lock().await;
                *t.statuses.entry((kind, status)).or_default() += 1;
                t.latencies.entry(kind).or_default().push(micros);
                if status >= 500 && status != 503 && t.failures.len() < 5 {
                    t.failures.push(format!("{kind} {status}: {body}"));
                }
            }
        };
        // 16 clients checking one request at a time.
        for k in 0..16usize {
            let (c, base, stop, tally) = (
                client.clone(),
                base.clone(),
                Arc::clone(&stop),
                Arc::clone(&tally),
            );
            tasks.push(tokio::spawn(async move {
                let mut i = k;
                while !stop.load(Ordering::Relaxed) {
                    let (p, a, r) = checks[i % checks.len()];
                    i += 1;
                    let t = Instant::now();
                    let resp = c
                        .post(format!("{base}/v1/check"))
                        .json(&json!({ "principal": p, "action": a, "resource": r, "now": NOW }))
                        .send()
                        .await
                        .unwrap();
                    let status = resp.status().as_u16();
                    let body: Value = resp.json().await.unwrap_or(Value::Null);
                    record(
                        Arc::clone(&tally),
                        "check",
                        status,
                        micros(t.elapsed()),
                        &body,
                    )
                    .await;
                }
            }));
        }
        // 4 clients checking batches of 20.
        for _ in 0..4usize {
            let (c, base, stop, tally) = (
                client.clone(),
                base.clone(),
                Arc::clone(&stop),
                Arc::clone(&tally),
            );
            tasks.push(tokio::spawn(async move {
                let batch: Vec<Value> = (0..20)
                    .map(|i| {
                        let (p, a, r) = checks[i % checks.len()];
                        json!({ "principal": p, "action": a, "resource": r, "now": NOW })
                    })
                    .collect();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let resp = c
                        .post(format!("{base}/v1/check/batch"))
                        .json(&json!({ "requests": batch }))
                        .send()
                        .await
                        .unwrap();
                    let status = resp.status().as_u16();
                    let body: Value = resp.json().await.unwrap_or(Value::Null);
                    if status == 200 {
                        assert_eq!(body.as_array().map(Vec::len), Some(20), "{body}");
                    }
                    record(
                        Arc::clone(&tally),
                        "batch",
                        status,
                        micros(t.elapsed()),
                        &body,
                    )
                    .await;
                }
            }));
        }
        // 2 writers: each write creates one event (accepted), every fifth is made by a
        // user who may not (refused).
        for w in 0..2usize {
            let (c, base, stop, tally) = (
                client.clone(),
                base.clone(),
                Arc::clone(&stop),
                Arc::clone(&tally),
            );
            tasks.push(tokio::spawn(async move {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    let id = format!("soak_{w}_{seq}");
                    let refused = seq.is_multiple_of(5);
                    let author = if refused {
                        "user:jetfix_tech"
                    } else {
                        "user:occ_controller"
                    };
                    let t = Instant::now();
                    let resp = c
                        .post(format!("{base}/v1/facts"))
                        .json(&json!({ "author": author, "now": NOW, "deltas": create_event(&id) }))
                        .send()
                        .await
                        .unwrap();
                    let status = resp.status().as_u16();
                    let body: Value = resp.json().await.unwrap_or(Value::Null);
                    record(
                        Arc::clone(&tally),
                        "write",
                        status,
                        micros(t.elapsed()),
                        &body,
                    )
                    .await;
                    let mut t = tally.lock().await;
                    match status {
                        200 => {
                            assert!(!refused, "a write that must be refused was accepted");
                            let revision = body["revision"].as_u64().unwrap();
                            t.acked.push((w, seq, revision));
                        }
                        403 => {
                            assert!(refused, "a permitted write was refused: {body}");
                            t.refused.push(id);
                        }
                        503 => {}
                        _ => {}
                    }
                }
            }));
        }
        // 2 change-feed subscribers from revision 0: every change once, in order.
        // They read until they have seen the last revision (`target`, known once the
        // writers stopped), or for 10 s more.
        let seen: Vec<Arc<AtomicU64>> = (0..2).map(|_| Arc::new(AtomicU64::new(0))).collect();
        let target = Arc::new(AtomicU64::new(u64::MAX));
        let mut feeds = Vec::new();
        for s in &seen {
            let (c, base, target, last) = (
                client.clone(),
                base.clone(),
                Arc::clone(&target),
                Arc::clone(s),
            );
            feeds.push(tokio::spawn(async move {
                let mut feed = c
                    .get(format!("{base}/v1/changes?since=0"))
                    .send()
                    .await
                    .unwrap()
                    .bytes_stream();
                let mut text = String::new();
                let mut deadline: Option<Instant> = None;
                while last.load(Ordering::Relaxed) < target.load(Ordering::Relaxed) {
                    if target.load(Ordering::Relaxed) != u64::MAX {
                        let d = *deadline
                            .get_or_insert_with(|| Instant::now() + Duration::from_secs(10));
                        if Instant::now() > d {
                            break;
                        }
                    }
                    let Ok(Some(Ok(chunk))) =
                        tokio::time::timeout(Duration::from_millis(200), feed.next()).await
                    else {
                        continue;
                    };
                    text.push_str(&String::from_utf8_lossy(&chunk));
                    while let Some(end) = text.find("\n\n") {
                        let event: String = text.drain(..end + 2).collect();
                        if let Some(id) = event.lines().find_map(|l| l.strip_prefix("id: ")) {
                            let id: u64 = id.trim().parse().unwrap();
                            let before = last.swap(id, Ordering::Relaxed);
                            assert_eq!(id, before + 1, "the feed skipped or repeated a revision");
                        }
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        target.store(served_revision(base.clone()).await, Ordering::Relaxed);
        for f in feeds {
            f.await.unwrap();
        }

        let tally = tally.lock().await;
        eprintln!(
            "soak: {secs} s on {}",
            if _service.is_some() {
                "the demo world".to_string()
            } else {
                base.clone()
            }
        );
        for (kind, lat) in &tally.latencies {
            let mut lat = lat.clone();
            lat.sort_unstable();
            let ok = tally.statuses.get(&(kind, 200)).copied().unwrap_or(0);
            eprintln!(
                "soak: {kind:<5} {:>7} answers ({ok} ok, {:.0}/s), p50 {} us, p99 {} us",
                lat.len(),
                lat.len() as f64 / secs as f64,
                percentile(&lat, 0.5),
                percentile(&lat, 0.99)
            );
        }
        eprintln!("soak: statuses {:?}", tally.statuses);
        let server_errors: u64 = tally
            .statuses
            .iter()
            .filter(|((_, s), _)| *s >= 500 && *s != 503)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(server_errors, 0, "answers 5xx: {:?}", tally.failures);
        // Another server's world may be large enough that writes take seconds each.
        let least = if _service.is_some() { 10 } else { 1 };
        assert!(
            tally.acked.len() >= least,
            "only {} writes were acknowledged",
            tally.acked.len()
        );

        // The books: every acknowledged write is there, whole, at the revision it was
        // acknowledged with; no refused write is.
        let c = super::admin();
        let facts: Value = c
            .get(format!("{base}/v1/facts"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let entities: std::collections::HashSet<String> = facts["entities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{}:{}",
                    e["type"].as_str().unwrap(),
                    e["id"].as_str().unwrap()
                )
            })
            .collect();
        let mut tuples: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in facts["tuples"].as_array().unwrap() {
            tuples
                .entry(t["resource"].as_str().unwrap().to_string())
                .or_default()
                .push(t["relation"].as_str().unwrap().to_string());
        }
        let mut revisions: Vec<u64> = tally.acked.iter().map(|a| a.2).collect();
        revisions.sort_unstable();
        revisions.dedup();
        assert_eq!(
            revisions.len(),
            tally.acked.len(),
            "two writes acknowledged at one revision"
        );
        for (w, seq, _) in &tally.acked {
            let key = format!("event:soak_{w}_{seq}");
            assert!(entities.contains(&key), "acknowledged {key} is missing");
            let relations = tuples.get(&key).cloned().unwrap_or_default();
            assert!(
                ["station", "owner_org", "created_by"]
                    .iter()
                    .all(|r| relations.iter().any(|x| x == r)),
                "{key} is half-applied: {relations:?}"
            );
        }
        for id in &tally.refused {
            assert!(
                !entities.contains(&format!("event:{id}")),
                "refused {id} is stored"
            );
        }
        let served = served_revision(base.clone()).await;
        assert_eq!(facts["revision"].as_u64(), Some(served));
        if _service.is_some() {
            assert_eq!(
                served,
                *revisions.last().unwrap(),
                "a write nobody was told of"
            );
        }
        for s in &seen {
            assert_eq!(
                s.load(Ordering::Relaxed),
                served,
                "a subscriber did not see every change"
            );
        }
        // The store holds exactly the served history.
        if let Some(db) = db {
            let conn = rusqlite::Connection::open(&db).unwrap();
            let stored: i64 = conn
                .query_row("SELECT COALESCE(MAX(revision), 0) FROM changes", [], |r| {
                    r.get(0)
                })
                .unwrap();
            assert_eq!(stored as u64, served, "the store and the service disagree");
        }
    });
}
