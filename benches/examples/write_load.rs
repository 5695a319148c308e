//! Validated, durable writes over HTTP at each world scale: `clearance serve`'s service in
//! this process on a generated world (SQLite store, `synchronous=FULL`), two module
//! instances on wasmtime, a client in the same process on loopback.
//!
//! Each write is one delta (an event's title set) by a user the policy lets update that
//! event (`on set title = update`), judged in the module, stored, then applied in place.
//!
//! 1. one writer, one write after another: latency p50 / p99;
//! 2. 16 writers at once for 10 s: validated durable writes per second;
//! 3. single checks at 1,000 per second for 10 s while 100 writes per second land: the
//!    checks' latency p50 / p99.
//!
//! `cargo xtask wasm && cargo run --release -p clearance-benches --example write_load`
//! (`CLEARANCE_BENCH_SCALES=medium,large` picks scales).

// A benchmark: it indexes its own generated inputs.
#![allow(clippy::indexing_slicing)]

use clearance_benches::{default_schema, percentile, scales, world};
use clearance_host::api::serve;
use clearance_host::policy_dir::read_policies;
use clearance_host::service::{Service, ServiceConfig};
use clearance_host::{Runtime, RuntimeConfig};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Writes of the single writer.
const SEQUENTIAL: usize = 300;
/// Concurrent writers, and how long they write.
const WRITERS: usize = 16;
const WRITING: Duration = Duration::from_secs(10);

fn main() {
    let root = clearance_benches::root();
    let Some((wasm, hash)) = clearance_benches::built_module() else {
        return;
    };
    let Ok(tokio) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    else {
        return;
    };
    let schema = default_schema();
    println!(
        "| scale | one writer p50 / p99 | writes/s, {WRITERS} writers | failed | checks at 1,000/s under 100 writes/s, p50 / p99 | checks failed |"
    );
    println!("|---|--:|--:|--:|--:|--:|");
    for scale in scales() {
        let w = world(scale, 7);
        let writes = clearance_benches::title_writes(&schema, &w);
        let checks = clearance_benches::check_bodies(&w);
        if writes.is_empty() {
            eprintln!("{}: no allowed write found", scale.name);
            continue;
        }
        let facts = w.facts;
        let (wasm, hash, root) = (wasm.clone(), hash.clone(), root.clone());
        let row = tokio.block_on(async move {
            let db = std::env::temp_dir().join(format!(
                "clearance-writes-{}-{}.db",
                scale.name,
                std::process::id()
            ));
            clearance_benches::remove_store(&db);
            let rt = Runtime::new(
                &wasm,
                hash.trim(),
                RuntimeConfig {
                    instances: std::env::var("CLEARANCE_BENCH_INSTANCES").ok().and_then(|v| v.parse().ok()).unwrap_or(2),
                    ..RuntimeConfig::default()
                },
            )
            .map_err(|e| e.to_string())?;
            let sources = read_policies(&root.join("policies"))?;
            let service = Service::open(
                Arc::new(rt),
                sources,
                &db,
                move || Ok(facts),
                None,
                ServiceConfig::default(),
            )
            .await?;
            let key =
                clearance_host::auth::new_key(clearance_host::auth::Scope::Admin, &[], "bench", 0)?;
            {
                clearance_host::store::SqliteFile::open(&db)
                    .and_then(|mut st| st.add_key(&key.stored))
                    .map_err(|e| e.to_string())?;
            }
            service.refresh_keys().await.map_err(|e| e.to_string())?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| e.to_string())?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                let _ = serve(listener, service).await;
            });
            let mut headers = reqwest::header::HeaderMap::new();
            let bearer = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", key.token))
                .map_err(|e| e.to_string())?;
            headers.insert(reqwest::header::AUTHORIZATION, bearer);
            let client = reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .map_err(|e| e.to_string())?;
            let base = format!("http://{addr}/v1");
            let writes = Arc::new(writes);
            let counter = Arc::new(AtomicUsize::new(0));
            // One write: the next pair's event gets a new title.
            let write = {
                let (client, url, writes, counter) = (
                    client.clone(),
                    format!("{base}/facts"),
                    Arc::clone(&writes),
                    Arc::clone(&counter),
                );
                move || {
                    let (client, url) = (client.clone(), url.clone());
                    let i = counter.fetch_add(1, Ordering::Relaxed);
                    let (author, event, now) = writes[i % writes.len()].clone();
                    async move {
                        let body = json!({ "author": author, "now": now, "deltas": [
                            { "op": "set_attr", "entity": event, "attr": "title", "value": format!("title {i}") }
                        ]});
                        let t = Instant::now();
                        let ok = match client.post(&url).json(&body).send().await {
                            Ok(r) => r.status().is_success(),
                            Err(_) => false,
                        };
                        (t.elapsed().as_secs_f64() * 1e3, ok)
                    }
                }
            };
            // 1. One writer.
            let mut lat = Vec::with_capacity(SEQUENTIAL);
            let mut failed = 0;
            for _ in 0..SEQUENTIAL {
                let (ms, ok) = write().await;
                lat.push(ms);
                failed += usize::from(!ok);
            }
            lat.sort_by(f64::total_cmp);
            let (w50, w99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
            // 2. Writers at once.
            let t = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..WRITERS {
                let write = write.clone();
                tasks.push(tokio::spawn(async move {
                    let (mut n, mut bad) = (0usize, 0usize);
                    while t.elapsed() < WRITING {
                        let (_, ok) = write().await;
                        n += usize::from(ok);
                        bad += usize::from(!ok);
                    }
                    (n, bad)
                }));
            }
            let (mut done, mut bad) = (0, 0);
            for task in tasks {
                let (n, b) = task.await.unwrap_or((0, 0));
                done += n;
                bad += b;
            }
            let rate = done as f64 / t.elapsed().as_secs_f64();
            failed += bad;
            // 3. Checks at 1,000/s while 100 writes/s land.
            let writer = {
                let write = write.clone();
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_millis(10));
                    for _ in 0..1_000 {
                        tick.tick().await;
                        tokio::spawn(write());
                    }
                })
            };
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            let mut handles = Vec::new();
            for i in 0..10_000 {
                tick.tick().await;
                let (client, url, body) = (
                    client.clone(),
                    format!("{base}/check"),
                    checks[i % checks.len()].clone(),
                );
                handles.push(tokio::spawn(async move {
                    let t = Instant::now();
                    let ok = client
                        .post(&url)
                        .json(&body)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    (t.elapsed().as_secs_f64() * 1e3, ok)
                }));
            }
            let _ = writer.await;
            let mut clat = Vec::new();
            let mut cfailed = 0;
            for h in handles {
                if let Ok((ms, ok)) = h.await {
                    clat.push(ms);
                    cfailed += usize::from(!ok);
                }
            }
            clat.sort_by(f64::total_cmp);
            clearance_benches::remove_store(&db);
            Ok::<String, String>(format!(
                "| {} | {w50:.2} / {w99:.2} ms | {rate:.0} | {failed} | {:.3} / {:.3} ms | {cfailed} |",
                scale.name,
                percentile(&clat, 0.5),
                percentile(&clat, 0.99)
            ))
        });
        match row {
            Ok(row) => println!("{row}"),
            Err(e) => eprintln!("{}: {e}", scale.name),
        }
    }
}
