//! A bounded load test of the service over loopback: the server runs in this process on
//! the demo data, a client sends batches (checks per second) and single checks at a fixed
//! 1,000 requests per second (latency percentiles). It prints one `report` line.

// A benchmark: it indexes its own generated inputs, and criterion's macros define
// undocumented functions; neither is reachable from outside input.
#![allow(clippy::indexing_slicing, missing_docs)]

use clearance_core::{Facts, FactsJson};
use clearance_host::api::serve;
use clearance_host::policy_dir::read_policies;
use clearance_host::service::{Service, ServiceConfig};
use clearance_host::{Runtime, RuntimeConfig};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = clearance_benches::root();
    let Some((wasm, hash)) = clearance_benches::built_module() else {
        return;
    };
    // Under `cargo test` (no `--bench`), a short run that only shows the bench works.
    let quick = !std::env::args().any(|a| a == "--bench");
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let Ok(tokio) = tokio else { return };
    tokio.block_on(async move {
        let mut merged = FactsJson::default();
        for w in ["airline", "maintenance", "operations"] {
            let text = std::fs::read_to_string(root.join(format!("tests/worlds/{w}.json"))).unwrap_or_default();
            if let Ok(doc) = serde_json::from_str::<FactsJson>(&text) {
                merged.entities.extend(doc.entities);
                merged.tuples.extend(doc.tuples);
            }
        }
        let db = std::env::temp_dir().join(format!("clearance-load-{}.db", std::process::id()));
        clearance_benches::remove_store(&db);
        let (Ok(rt), Ok(sources)) = (
            Runtime::new(&wasm, hash.trim(), RuntimeConfig { instances: 2, ..RuntimeConfig::default() }),
            read_policies(&root.join("policies")),
        ) else {
            eprintln!("the service does not start");
            return;
        };
        let Ok(service) = Service::open(Arc::new(rt), sources, &db, move || Facts::from_doc(merged).map_err(|e| e.to_string()), None, ServiceConfig::default()).await else {
            eprintln!("the service does not start");
            return;
        };
        // Every /v1 call names its caller: an admin key, added to the store the bench made.
        let key = clearance_host::auth::new_key(clearance_host::auth::Scope::Admin, &[], "bench", 0);
        let added = key.as_ref().map_err(String::clone).and_then(|k| {
            clearance_host::store::SqliteFile::open(&db)
                .and_then(|mut st| st.add_key(&k.stored))
                .map_err(|e| e.to_string())
        });
        let (Ok(key), Ok(())) = (key, added) else {
            eprintln!("the bench's key was not stored");
            return;
        };
        if service.refresh_keys().await.is_err() {
            return;
        }
        let mut headers = reqwest::header::HeaderMap::new();
        let Ok(bearer) = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", key.token)) else { return };
        headers.insert(reqwest::header::AUTHORIZATION, bearer);
        let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else { return };
        let Ok(addr) = listener.local_addr() else { return };
        tokio::spawn(async move {
            let _ = serve(listener, service).await;
        });
        let base = format!("http://{addr}/v1");
        let Ok(client) = reqwest::Client::builder().default_headers(headers).build() else { return };
        const PRINCIPALS: [&str; 6] = ["user:aeroserv_tech", "user:jetfix_tech", "user:occ_controller", "invitee:g_sms", "user:former_controller", "user:mech_full"];
        const RESOURCES: [&str; 5] = ["event:aog_lhr", "event:unassigned_jfk", "event:aog_cdg", "aircraft:g_skya", "squawk:sq_brakes"];
        fn request(i: usize) -> Value {
             json!({ "principal": PRINCIPALS[i % PRINCIPALS.len()], "action": "view", "resource": RESOURCES[i % RESOURCES.len()], "now": "2026-05-01T10:00:00Z" })
        }
        // Batches of 1,000 from two concurrent clients.
        let batch: Vec<Value> = (0..1_000).map(request).collect();
        let body = json!({ "requests": batch });
        let rounds = if quick { 2 } else { 100 };
        let t = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let (client, url, body) = (client.clone(), format!("{base}/check/batch"), body.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..rounds / 2 {
                    let _ = client.post(&url).json(&body).send().await.map(|r| r.bytes());
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        let batch_rate = (rounds * 1_000) as f64 / t.elapsed().as_secs_f64();
                // Single checks, closed loop: 8 clients, each sending the next request when the
        // previous answer arrives.
        let duration = Duration::from_secs(if quick { 1 } else { 5 });
        let t = Instant::now();
        let mut loops = Vec::new();
        for k in 0..8 {
            let (client, url) = (client.clone(), format!("{base}/check"));
            loops.push(tokio::spawn(async move {
                let mut n = 0usize;
                while t.elapsed() < duration {
                    if client.post(&url).json(&request(n * 8 + k)).send().await.is_ok() {
                        n += 1;
                    }
                }
                n
            }));
        }
        let mut singles = 0;
        for l in loops {
            singles += l.await.unwrap_or(0);
        }
        let single_rate = singles as f64 / t.elapsed().as_secs_f64();
        // Single checks at 1,000 requests per second.
        let seconds = if quick { 1 } else { 10 };
        let mut ticker = tokio::time::interval(Duration::from_millis(1));
        let mut handles = Vec::new();
        for i in 0..seconds * 1_000 {
            ticker.tick().await;
            let (client, url, body) = (client.clone(), format!("{base}/check"), request(i));
            handles.push(tokio::spawn(async move {
                let t = Instant::now();
                let ok = client.post(&url).json(&body).send().await.is_ok();
                (t.elapsed(), ok)
            }));
        }
        let mut lat = Vec::new();
        let mut failed = 0;
        for h in handles {
            if let Ok((d, ok)) = h.await {
                lat.push(d.as_secs_f64() * 1e3);
                failed += usize::from(!ok);
            }
        }
        lat.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| clearance_benches::percentile(&lat, p);
        println!(
                        "report http batch_checks_per_s={batch_rate:.0} single_checks_per_s={single_rate:.0} single_rps=1000 single_requests={} failed={failed} single_p50_ms={:.3} single_p99_ms={:.3} single_max_ms={:.3}",
            lat.len(),
            pct(0.5),
            pct(0.99),
            pct(1.0)
        );
        clearance_benches::remove_store(&db);
    });
}
