//! One host and three on one PostgreSQL (a throwaway cluster on loopback, fsync on):
//! `clearance serve`'s service in this process on a generated world, each host with two
//! module instances on wasmtime, clients in the same process on loopback.
//!
//! 1. validated durable writes per second, 16 writers for 10 s: on one host, then spread
//!    over three (each write one delta, an event's title set by a user the policy lets
//!    update it), with the writes answered 409 after every retry;
//! 2. replication lag: one writer on host A, 300 writes one after another; for each, the
//!    time from its acknowledgement to host B serving its revision (p50 / p99);
//! 3. checks per second, 32 clients for 10 s: all on one host, then spread over three.
//!
//! The three hosts share this machine's cores with each other, the database and the
//! clients: the figures say what one history costs, not what three machines give.
//!
//! `cargo xtask wasm && cargo run --release -p clearance-benches --example multihost`
//! (`CLEARANCE_BENCH_SCALES` picks scales; medium by default).

// A benchmark: it indexes its own generated inputs.
#![allow(clippy::indexing_slicing)]

use clearance_benches::{default_schema, percentile, world};
use clearance_host::api::serve;
use clearance_host::pgcluster::Cluster;
use clearance_host::policy_dir::read_policies;
use clearance_host::service::{Service, ServiceConfig};
use clearance_host::store::FactStore;
use clearance_host::store::postgres::PgStore;
use clearance_host::{Runtime, RuntimeConfig};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const WRITERS: usize = 16;
const CHECKERS: usize = 32;
const RUN: Duration = Duration::from_secs(10);
const LAG_WRITES: usize = 300;

struct Host {
    service: Arc<Service>,
    base: String,
}

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
    let scales: Vec<_> = if std::env::var("CLEARANCE_BENCH_SCALES").is_ok() {
        clearance_benches::scales()
    } else {
        vec![clearance_benches::MEDIUM]
    };
    let schema = default_schema();
    for scale in scales {
        let w = world(scale, 7);
        let writes = clearance_benches::title_writes(&schema, &w);
        let checks = clearance_benches::check_bodies(&w);
        let facts = w.facts;
        let (wasm, hash, root) = (wasm.clone(), hash.clone(), root.clone());
        let name = scale.name;
        let done = tokio.block_on(async move {
            let dir = std::env::temp_dir().join(format!("clearance-multihost-{}", std::process::id()));
            let cluster = Cluster::start(&dir)?;
            let url = cluster.database("bench")?;
            PgStore::migrate(&url).await.map_err(|e| e.to_string())?;
            let key = clearance_host::auth::new_key(clearance_host::auth::Scope::Admin, &[], "bench", 0)?;
            PgStore::connect(&url).await.map_err(|e| e.to_string())?.add_key(key.stored.clone()).await.map_err(|e| e.to_string())?;
            let sources = read_policies(&root.join("policies"))?;
            let mut hosts = Vec::new();
            let mut seed = Some(facts);
            for _ in 0..3 {
                let rt = Runtime::new(&wasm, hash.trim(), RuntimeConfig { instances: 2, ..RuntimeConfig::default() }).map_err(|e| e.to_string())?;
                let facts = seed.take();
                let service = Service::open_postgres(
                    Arc::new(rt),
                    sources.clone(),
                    &url,
                    move || facts.ok_or_else(|| "seeded already".to_string()),
                    None,
                    ServiceConfig { checkpoint_changes: 0, checkpoint_interval: Duration::ZERO, ..ServiceConfig::default() },
                )
                .await?;
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
                let addr = listener.local_addr().map_err(|e| e.to_string())?;
                let s = Arc::clone(&service);
                tokio::spawn(async move {
                    let _ = serve(listener, s).await;
                });
                hosts.push(Host { service, base: format!("http://{addr}/v1") });
            }
            let mut headers = reqwest::header::HeaderMap::new();
            let bearer = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", key.token)).map_err(|e| e.to_string())?;
            headers.insert(reqwest::header::AUTHORIZATION, bearer);
            let client = reqwest::Client::builder().default_headers(headers).pool_max_idle_per_host(64).build().map_err(|e| e.to_string())?;
            let writes = Arc::new(writes);
            let counter = Arc::new(AtomicUsize::new(0));
            // One write through `base`: its status and revision.
            let write = {
                let (client, writes, counter) = (client.clone(), Arc::clone(&writes), Arc::clone(&counter));
                move |base: String| {
                    let client = client.clone();
                    let i = counter.fetch_add(1, Ordering::Relaxed);
                    let (author, event, now) = writes[i % writes.len()].clone();
                    async move {
                        let body = json!({ "author": author, "now": now, "deltas": [
                            { "op": "set_attr", "entity": event, "attr": "title", "value": format!("title {i}") }
                        ]});
                        match client.post(format!("{base}/facts")).json(&body).send().await {
                            Ok(r) => {
                                let status = r.status().as_u16();
                                let v: Value = r.json().await.unwrap_or(Value::Null);
                                (status, v["revision"].as_u64().unwrap_or(0))
                            }
                            Err(_) => (0, 0),
                        }
                    }
                }
            };
            let bases: Vec<String> = hosts.iter().map(|h| h.base.clone()).collect();
            let mut out = Vec::new();
            // 1. Writes per second, on one host and on three.
            for spread in [1usize, 3] {
                let t = Instant::now();
                let mut tasks = Vec::new();
                for k in 0..WRITERS {
                    let (write, base) = (write.clone(), bases[k % spread].clone());
                    tasks.push(tokio::spawn(async move {
                        let (mut ok, mut conflict, mut other) = (0usize, 0usize, 0usize);
                        while t.elapsed() < RUN {
                            match write(base.clone()).await.0 {
                                200 => ok += 1,
                                409 => conflict += 1,
                                _ => other += 1,
                            }
                        }
                        (ok, conflict, other)
                    }));
                }
                let (mut ok, mut conflict, mut other) = (0, 0, 0);
                for task in tasks {
                    let (a, b, c) = task.await.unwrap_or((0, 0, 0));
                    ok += a;
                    conflict += b;
                    other += c;
                }
                let rate = ok as f64 / t.elapsed().as_secs_f64();
                out.push(format!("| {name} | writes/s, {WRITERS} writers on {spread} host(s) | {rate:.0} | 409: {conflict}, other failures: {other} |"));
            }
            // 2. Replication lag, host A to host B.
            let top = hosts.iter().map(|h| h.service.revision()).max().unwrap_or(0);
            let deadline = Instant::now() + Duration::from_secs(30);
            while hosts.iter().any(|h| h.service.revision() < top) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let b = Arc::clone(&hosts[1].service);
            let mut lags = Vec::with_capacity(LAG_WRITES);
            let mut failed = 0;
            for _ in 0..LAG_WRITES {
                let (status, revision) = write(bases[0].clone()).await;
                let acked = Instant::now();
                if status != 200 {
                    failed += 1;
                    continue;
                }
                while b.revision() < revision && acked.elapsed() < Duration::from_secs(5) {
                    tokio::time::sleep(Duration::from_micros(100)).await;
                }
                lags.push(acked.elapsed().as_secs_f64() * 1e3);
            }
            lags.sort_by(f64::total_cmp);
            out.push(format!(
                "| {name} | replication lag A→B after the acknowledgement, p50 / p99 ({LAG_WRITES} writes) | {:.2} / {:.2} ms | failed: {failed} |",
                percentile(&lags, 0.5),
                percentile(&lags, 0.99)
            ));
            // 3. Checks per second, on one host and on three.
            let checks = Arc::new(checks);
            for spread in [1usize, 3] {
                let t = Instant::now();
                let mut tasks = Vec::new();
                for k in 0..CHECKERS {
                    let (client, checks, url) = (client.clone(), Arc::clone(&checks), format!("{}/check", bases[k % spread]));
                    tasks.push(tokio::spawn(async move {
                        let (mut ok, mut bad, mut i) = (0usize, 0usize, k * 313);
                        while t.elapsed() < RUN {
                            i += 1;
                            let r = client.post(&url).json(&checks[i % checks.len()]).send().await;
                            if r.is_ok_and(|r| r.status().is_success()) { ok += 1 } else { bad += 1 }
                        }
                        (ok, bad)
                    }));
                }
                let (mut ok, mut bad) = (0, 0);
                for task in tasks {
                    let (a, b) = task.await.unwrap_or((0, 0));
                    ok += a;
                    bad += b;
                }
                out.push(format!(
                    "| {name} | checks/s, {CHECKERS} clients on {spread} host(s) | {:.0} | failed: {bad} |",
                    ok as f64 / t.elapsed().as_secs_f64()
                ));
            }
            let revisions: Vec<u64> = hosts.iter().map(|h| h.service.revision()).collect();
            out.push(format!("| {name} | revisions of the three hosts at the end | {revisions:?} | |"));
            drop(hosts);
            drop(cluster);
            Ok::<Vec<String>, String>(out)
        });
        match done {
            Ok(rows) => {
                println!("| scale | figure | value | |\n|---|---|--:|---|");
                for r in rows {
                    println!("{r}");
                }
            }
            Err(e) => eprintln!("{name}: {e}"),
        }
    }
}
