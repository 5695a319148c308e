//! One module, five runtimes: every scenario request and 100,000 generated requests on
//! the medium world, decided by the native core, by the wasm module on wasmtime, in Node,
//! in Chromium and in workerd (an edge platform's runtime, through Miniflare), must give
//! byte-identical decisions (allow/deny, every reason code and rule, valid_until), with
//! every wasm runtime reporting the built artifact's hash. A quarter of the generated
//! requests are decided again after 3,000 changes, which each runtime applies in place
//! itself to the world's bytes (wasmtime as a host hands a write to its instances, the JS
//! runtimes with `applyDeltas`).

// A test: a failed expectation panics, as tests do; it indexes its own generated inputs.
#![allow(clippy::panic, clippy::indexing_slicing)]

use clearance_benches::{MEDIUM, world as bench_world};
use clearance_core::Snapshot;
use clearance_tests::parity::{self, Job};
use clearance_tests::{default_schema, scenario_files, world};
use std::sync::Arc;

const GENERATED: usize = 100_000;

/// Every check of every scenario file (allowed-actions cases expand to one check per
/// action), grouped by the snapshot they run on.
fn scenario_jobs() -> Vec<Job> {
    let schema = default_schema().unwrap_or_else(|e| panic!("{e}"));
    let mut jobs = Vec::new();
    for (file, scenario) in scenario_files().unwrap_or_else(|e| panic!("{e}")) {
        let facts = world(&scenario.world).unwrap_or_else(|e| panic!("{e}"));
        let base = Snapshot::build(Arc::clone(&schema), &facts).unwrap_or_else(|e| panic!("{e}"));
        let mut base_queries = Vec::new();
        for case in &scenario.case {
            if case.write.is_some() {
                continue;
            }
            let snap = match case.snapshot(&schema, &facts, &base) {
                Ok(Some(s)) => s,
                _ => continue,
            };
            let mut requests = Vec::new();
            if let Some(r) = case.request() {
                requests.push(r);
            } else if let (Some(p), Some(res), Some(now)) =
                (&case.principal, &case.resource, &case.now)
            {
                for a in snap.action_names(res) {
                    requests.push(clearance_core::Request {
                        principal: p.clone(),
                        action: a,
                        resource: res.clone(),
                        target: None,
                        now: now.clone(),
                    });
                }
            }
            let queries: Vec<_> = requests.iter().map(|r| parity::query(&snap, r)).collect();
            if case.deltas.is_empty() {
                base_queries.extend(queries);
            } else if !queries.is_empty() {
                jobs.push(Job {
                    name: format!("{file}:{}", case.name),
                    snapshot: snap,
                    changes: Vec::new(),
                    queries,
                });
            }
        }
        jobs.push(Job {
            name: file.clone(),
            snapshot: base,
            changes: Vec::new(),
            queries: base_queries,
        });
    }
    jobs
}

/// The medium world's generated requests, on the world as built and after [`CHANGES`]
/// changes applied in place: natively to the built snapshot, and by every other runtime
/// to the built snapshot's bytes it loads.
fn generated_jobs() -> Vec<Job> {
    let schema = default_schema().unwrap_or_else(|e| panic!("{e}"));
    let w = bench_world(MEDIUM, 42);
    let snapshot = Snapshot::build(schema, &w.facts).unwrap_or_else(|e| panic!("{e}"));
    let requests = w.requests(GENERATED, 2026);
    let mut changed = snapshot.clone();
    let changes = changes(&w.facts, &mut changed);
    let queries = requests
        .iter()
        .map(|r| parity::query(&snapshot, r))
        .collect();
    let after = requests
        .iter()
        .take(GENERATED / 4)
        .map(|r| parity::query(&changed, r))
        .collect();
    vec![
        Job {
            name: "medium world, generated".into(),
            snapshot,
            changes: Vec::new(),
            queries,
        },
        Job {
            name: format!("medium world, after {CHANGES} changes in place"),
            snapshot: changed,
            changes,
            queries: after,
        },
    ]
}

/// Changes applied in place before the second medium job is decided.
const CHANGES: usize = 3_000;

/// [`CHANGES`] random changes of one to three deltas that `snap` takes (applied to it as
/// they are made): tuples removed and put back with an expiry, event titles and ends set
/// and cleared, users deactivated and reactivated, and entities removed.
fn changes(facts: &clearance_core::Facts, snap: &mut Snapshot) -> Vec<Vec<clearance_core::Delta>> {
    use clearance_core::{Delta, TimeValue, TupleJson};
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(17);
    let tuples: Vec<_> = facts.tuples.keys().cloned().collect();
    let of = |ty: &str| -> Vec<String> {
        facts
            .entities
            .keys()
            .filter(|k| k.split(':').next() == Some(ty))
            .cloned()
            .collect()
    };
    let (events, users, squawks) = (of("event"), of("user"), of("squawk"));
    let pick = |rng: &mut rand::rngs::SmallRng, v: &[String]| v[rng.gen_range(0..v.len())].clone();
    let epoch = clearance_benches::EPOCH;
    let mut removed: Vec<(String, String, String)> = Vec::new();
    let mut out = Vec::new();
    while out.len() < CHANGES {
        let n = rng.gen_range(1..=3);
        let deltas: Vec<Delta> = (0..n)
            .map(|_| match rng.gen_range(0..100) {
                0..35 => {
                    let (r, rel, s) = tuples[rng.gen_range(0..tuples.len())].clone();
                    removed.push((r.clone(), rel.clone(), s.clone()));
                    Delta::RemoveTuple {
                        tuple: TupleJson {
                            resource: r,
                            relation: rel,
                            subject: s,
                            expires: None,
                        },
                    }
                }
                35..60 if !removed.is_empty() => {
                    let (r, rel, s) = removed.swap_remove(rng.gen_range(0..removed.len()));
                    Delta::AddTuple {
                        tuple: TupleJson {
                            resource: r,
                            relation: rel,
                            subject: s,
                            expires: rng.gen_bool(0.5).then(|| {
                                TimeValue::Seconds(epoch + rng.gen_range(-86_400..86_400))
                            }),
                        },
                    }
                }
                60..80 => Delta::SetAttr {
                    entity: pick(&mut rng, &events),
                    attr: "ends_at".into(),
                    value: if rng.gen_bool(0.2) {
                        serde_json::Value::Null
                    } else {
                        serde_json::json!(epoch + rng.gen_range(-86_400..2 * 86_400))
                    },
                },
                80..95 => Delta::SetAttr {
                    entity: pick(&mut rng, &users),
                    attr: "status".into(),
                    value: serde_json::json!(if rng.gen_bool(0.5) {
                        "active"
                    } else {
                        "deactivated"
                    }),
                },
                _ => Delta::RemoveEntity {
                    entity: pick(&mut rng, &squawks),
                },
            })
            .collect();
        // A change the snapshot refuses (a tuple already removed, say) is left out.
        if snap.apply(&deltas).is_ok() {
            out.push(deltas);
        }
    }
    out
}

#[test]
#[ignore = "runs in its own step of `cargo xtask test`, which builds the artifact first and shows its figures"]
fn every_runtime_decides_identically() {
    let artifact = parity::artifact().unwrap_or_else(|e| panic!("{e}"));
    let rt = parity::runtime(&artifact).unwrap_or_else(|e| panic!("{e}"));
    let mut jobs = scenario_jobs();
    let generated = generated_jobs();
    // A job with changes is loaded from the bytes of the job before it (the world as
    // built), then changed in place by each runtime.
    let built = generated[0]
        .snapshot
        .to_bytes()
        .unwrap_or_else(|e| panic!("{e}"));
    jobs.extend(generated);
    let snapshots: Vec<Vec<u8>> = jobs
        .iter()
        .map(|j| {
            if j.changes.is_empty() {
                j.snapshot.to_bytes().unwrap_or_else(|e| panic!("{e}"))
            } else {
                built.clone()
            }
        })
        .collect();
    let native = parity::native(&jobs);
    let wasmtime = parity::wasmtime(&rt, &jobs, &snapshots).unwrap_or_else(|e| panic!("{e}"));
    let work = std::env::temp_dir().join(format!("clearance-parity-{}", std::process::id()));
    let node = parity::node(&jobs, &snapshots, &work).unwrap_or_else(|e| panic!("{e}"));
    let chromium = parity::chromium(&jobs, &work).unwrap_or_else(|e| panic!("{e}"));
    let workerd = parity::workerd(&jobs, &work).unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(&work);
    let report = parity::compare(&jobs, &native, &[wasmtime, node, chromium, workerd]);
    println!(
        "parity: {} requests x 5 runtimes (native, wasmtime, node, chromium, workerd) in {} jobs, {} mismatches, decisions digest {}",
        report.compared,
        jobs.len(),
        report.mismatches.len(),
        report.digest
    );
    for (runtime, hash) in &report.module_hashes {
        println!("parity: {runtime} runs module {hash}");
    }
    assert!(
        report.compared >= GENERATED,
        "only {} requests compared",
        report.compared
    );
    let shown: Vec<String> = report
        .mismatches
        .iter()
        .take(20)
        .map(|m| {
            format!(
                "{} #{} {}: native {} / {}",
                m.job, m.index, m.runtime, m.native, m.other
            )
        })
        .collect();
    assert!(
        report.mismatches.is_empty(),
        "{} mismatches, first ones:\n{}",
        report.mismatches.len(),
        shown.join("\n")
    );
    assert_eq!(report.module_hashes.len(), 4, "{:?}", report.module_hashes);
    assert!(
        report
            .module_hashes
            .iter()
            .all(|(_, h)| *h == artifact.sha256),
        "a runtime runs another module: {:?} vs built {}",
        report.module_hashes,
        artifact.sha256
    );
}

/// The suite can fail: wasmtime given a snapshot one delta older than native's is caught.
#[test]
fn an_injected_difference_is_detected() {
    let artifact = parity::artifact().unwrap_or_else(|e| panic!("{e}"));
    let rt = parity::runtime(&artifact).unwrap_or_else(|e| panic!("{e}"));
    let schema = default_schema().unwrap_or_else(|e| panic!("{e}"));
    let facts = world("airline").unwrap_or_else(|e| panic!("{e}"));
    let current = Snapshot::build(Arc::clone(&schema), &facts).unwrap_or_else(|e| panic!("{e}"));
    // Another revision: the maintenance organisation is unassigned from the event.
    let delta: Vec<clearance_core::Delta> = serde_json::from_str(
        r#"[{"op": "remove_tuple", "tuple": {"resource": "event:aog_lhr", "relation": "assigned", "subject": "organization:aeroserv"}}]"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let older = Snapshot::build(
        Arc::clone(&schema),
        &facts.apply(&delta).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let now = 1_777_629_600; // 2026-05-01T10:00:00Z
    let queries = vec![parity::query(
        &current,
        &parity::request("user:aeroserv_tech", "view", "event:aog_lhr", now),
    )];
    let jobs = vec![Job {
        name: "injected".into(),
        snapshot: current,
        changes: Vec::new(),
        queries,
    }];
    let native = parity::native(&jobs);
    let wasmtime = parity::wasmtime(&rt, &jobs, &[older.to_bytes().unwrap_or_default()])
        .unwrap_or_else(|e| panic!("{e}"));
    let report = parity::compare(&jobs, &native, &[wasmtime]);
    assert_eq!(
        report.mismatches.len(),
        1,
        "the suite did not notice a snapshot at another revision"
    );
}
