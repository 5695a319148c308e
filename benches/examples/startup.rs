//! Start-up at each world scale, from a checkpoint against a replay of the whole history:
//! the service started on a SQLite store holding a generated world as its base and
//! `CHANGES` one-delta changes after it (an event's title set), until it serves (its
//! snapshot loaded into a module instance on wasmtime).
//!
//! Two copies of the same store: one with no checkpoint (start-up replays the base and
//! every change, then builds the snapshot), one with a checkpoint `AFTER` changes before
//! the end (start-up loads it, and applies those changes to the facts and the snapshot).
//! Started interleaved, `ROUNDS` times each; medians. Also the time to write the
//! checkpoint, and its size.
//!
//! `cargo xtask wasm && cargo run --release -p clearance-benches --example startup`
//! (`CLEARANCE_BENCH_SCALES=large` picks scales).

// A benchmark: it indexes its own generated inputs.
#![allow(clippy::indexing_slicing)]

use clearance_benches::{percentile, scales, world};
use clearance_core::Delta;
use clearance_host::policy_dir::read_policies;
use clearance_host::service::{Service, ServiceConfig};
use clearance_host::store::StoredPolicy;
use clearance_host::store::{Change, SqliteFile, SqliteStore};
use clearance_host::{Runtime, RuntimeConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Changes stored after the base.
const CHANGES: usize = 20_000;
/// Changes after the checkpoint.
const AFTER: usize = 1_000;
/// Starts of each kind.
const ROUNDS: usize = 3;

fn main() {
    if let Err(e) = run() {
        eprintln!("startup: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let root = clearance_benches::root();
    let Some((wasm, hash)) = clearance_benches::built_module() else {
        return Ok(());
    };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let sources = read_policies(&root.join("policies"))?;
    let policy = StoredPolicy::of(&sources)?;
    println!(
        "| scale | replay of the base and {CHANGES} changes, median of {ROUNDS} | from a checkpoint and {AFTER} changes, median of {ROUNDS} | writing the checkpoint (storing it) | checkpoint facts / snapshot |"
    );
    println!("|---|--:|--:|--:|--:|");
    for scale in scales() {
        let w = world(scale, 7);
        let events: Vec<(String, String)> = w
            .facts
            .entities
            .iter()
            .filter(|(_, e)| e.ty == "event")
            .map(|(k, e)| (k.clone(), e.account.clone()))
            .collect();
        if events.is_empty() {
            return Err(format!("{}: no event", scale.name));
        }
        let dir = std::env::temp_dir().join(format!(
            "clearance-startup-{}-{}",
            scale.name,
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let (full, checkpointed) = (dir.join("full.db"), dir.join("checkpointed.db"));
        let facts = w.facts;
        let base = facts.revision;
        let change = |i: usize| {
            let (event, account) = &events[i.wrapping_mul(7_919) % events.len()];
            Change {
                revision: base + 1 + i as u64,
                author: "user:bench".into(),
                at: 1_777_593_600,
                deltas: vec![Delta::SetAttr {
                    entity: event.clone(),
                    attr: "title".into(),
                    value: serde_json::json!(format!("title {i}")),
                }],
                policy: None,
                via: None,
                accounts: Some(vec![format!("account:{account}")]),
            }
        };
        let append = |store: &mut SqliteFile, range: std::ops::Range<usize>| {
            let all: Vec<Change> = range.map(change).collect();
            for chunk in all.chunks(1_000) {
                store.append_all(chunk).map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        };
        {
            let policy = policy.clone();
            let (mut store, _) = SqliteFile::open_or_create(&full, move || Ok((facts, policy)))
                .map_err(|e| e.to_string())?;
            append(&mut store, 0..CHANGES - AFTER)?;
        }
        std::fs::copy(&full, &checkpointed).map_err(|e| e.to_string())?;
        let t = Instant::now();
        let written = {
            let store = SqliteFile::open(&checkpointed).map_err(|e| e.to_string())?;
            let upto = store.last_revision().map_err(|e| e.to_string())?;
            let store = SqliteStore::new(store);
            tokio
                .block_on(clearance_host::store::checkpoint::write_checkpoint(
                    &store, upto,
                ))?
                .ok_or("no checkpoint written")?
        };
        let writing = t.elapsed();
        for db in [&full, &checkpointed] {
            let mut store = SqliteFile::open(db).map_err(|e| e.to_string())?;
            append(&mut store, CHANGES - AFTER..CHANGES)?;
        }
        let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..ROUNDS {
            for (k, db) in [&full, &checkpointed].into_iter().enumerate() {
                let rt = Arc::new(
                    Runtime::new(
                        &wasm,
                        hash.trim(),
                        RuntimeConfig {
                            instances: 2,
                            ..RuntimeConfig::default()
                        },
                    )
                    .map_err(|e| e.to_string())?,
                );
                let store = SqliteFile::open(db).map_err(|e| e.to_string())?;
                let sources = sources.clone();
                let (took, from) = tokio.block_on(async move {
                    let t = Instant::now();
                    let s = Service::start(
                        rt,
                        sources,
                        Arc::new(SqliteStore::new(store)),
                        None,
                        ServiceConfig {
                            checkpoint_changes: 0,
                            checkpoint_interval: Duration::ZERO,
                            ..ServiceConfig::default()
                        },
                    )
                    .await?;
                    Ok::<_, String>((t.elapsed(), s.started_from()))
                })?;
                let expected = if k == 0 {
                    (base, CHANGES as u64)
                } else {
                    (written.revision, AFTER as u64)
                };
                if from != expected {
                    return Err(format!("started from {from:?}, not {expected:?}"));
                }
                times[k].push(took.as_secs_f64());
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            percentile(v, 0.5)
        };
        let [mut a, mut b] = times;
        println!(
            "| {} | {:.2} s | {:.2} s | {:.2} s ({:.2} s) | {:.1} MB / {:.1} MB |",
            scale.name,
            median(&mut a),
            median(&mut b),
            writing.as_secs_f64(),
            written.stored_in.as_secs_f64(),
            written.facts_bytes as f64 / 1e6,
            written.snapshot_bytes as f64 / 1e6,
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
