//! What a single check costs the service beyond the decision: `clearance serve`'s service
//! in this process on a generated world (medium unless `CLEARANCE_BENCH_SCALES` names
//! others), a service key of one account, one client on one keep-alive connection on
//! loopback, sending one request after another.
//!
//! Interleaved rounds of `POST /v1/check` (the account's principals, the world's request
//! mix), `GET /healthz` and `GET /v1/revision`; for each, the round trip the client sees
//! and the server time the request log gives (`duration_us` of `clearance::request`).
//! Medians of the rounds' p50s.
//!
//! Where the client runs (`CLEARANCE_BENCH_CLIENT`):
//! - `apart` (the default): the service's threads on the first CPU, the client on a
//!   thread of its own on the second, as a server sees a client on another machine;
//! - `shared`: the client's requests on the service's own two async workers, unpinned,
//!   so the client's work and the kernel's for both ends share the caches the service
//!   decides with (how this benchmark measured before it had the choice).
//!
//! `cargo xtask wasm && cargo run --release -p clearance-benches --example check_path`

// A benchmark: it indexes its own generated inputs.
#![allow(clippy::indexing_slicing)]

use clearance_benches::{percentile, scales, world};
use clearance_host::api::serve;
use clearance_host::auth::{Scope, new_key};
use clearance_host::policy_dir::read_policies;
use clearance_host::service::{Service, ServiceConfig};
use clearance_host::{Runtime, RuntimeConfig};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tracing_subscriber::layer::SubscriberExt;

/// Requests of each kind per round, and rounds.
const PER_ROUND: usize = 2_000;
const ROUNDS: usize = 7;

/// The server times the request log gives, by route.
#[derive(Default)]
struct Logged(Mutex<Vec<(String, u64)>>);

struct Capture(Arc<Logged>);

#[derive(Default)]
struct Fields {
    route: String,
    duration_us: u64,
}

impl tracing::field::Visit for Fields {
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "duration_us" {
            self.duration_us = value;
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "route" {
            self.route = value.to_string();
        }
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "route" {
            self.route = format!("{value:?}").trim_matches('"').to_string();
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "clearance::request" {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        if let Ok(mut v) = self.0.0.lock() {
            v.push((f.route, f.duration_us));
        }
    }
}

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

fn median(v: &[f64]) -> f64 {
    p50(v.to_vec())
}

fn main() {
    let root = clearance_benches::root();
    let Some((wasm, hash)) = clearance_benches::built_module() else {
        return;
    };
    let logged = Arc::new(Logged::default());
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::INFO)
        .with(Capture(Arc::clone(&logged)));
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        return;
    }
    let apart = match std::env::var("CLEARANCE_BENCH_CLIENT").as_deref() {
        Ok("shared") => false,
        Ok("apart") | Err(_) => true,
        Ok(other) => {
            eprintln!("CLEARANCE_BENCH_CLIENT is `apart` or `shared`, not `{other}`");
            return;
        }
    };
    if apart && !(cpus() > CLIENT_CPU && pin(SERVICE_CPU)) {
        eprintln!("the client cannot have a CPU of its own here: CLEARANCE_BENCH_CLIENT=shared");
        return;
    }
    let Ok(tokio) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(move || {
            if apart {
                pin(SERVICE_CPU);
            }
        })
        .enable_all()
        .build()
    else {
        return;
    };
    let layout = if apart { "apart" } else { "shared" };
    let chosen: Vec<_> = match std::env::var("CLEARANCE_BENCH_SCALES") {
        Ok(_) => scales(),
        Err(_) => scales()
            .into_iter()
            .filter(|s| s.name == "medium")
            .collect(),
    };
    println!(
        "| scale | client | check: round trip / server | /healthz: round trip / server | /v1/revision: round trip / server | check ÷ healthz |"
    );
    println!("|---|---|--:|--:|--:|--:|");
    for scale in chosen {
        let w = world(scale, 7);
        let facts = w.facts.clone();
        // The account of the first request's principal, and its principals' requests.
        let account_of = |name: &str| facts.entities.get(name).map(|e| e.account.clone());
        let requests = w.requests(20_000, 5);
        let Some(account) = requests.first().and_then(|r| account_of(&r.principal)) else {
            eprintln!("{}: no request", scale.name);
            continue;
        };
        let bodies: Vec<String> = requests
            .iter()
            .filter(|r| account_of(&r.principal).as_deref() == Some(account.as_str()))
            .map(|r| {
                serde_json::json!({ "principal": r.principal, "action": r.action, "resource": r.resource, "target": r.target, "now": r.now })
                    .to_string()
            })
            .collect();
        let (wasm, hash, root, logged) = (
            wasm.clone(),
            hash.clone(),
            root.clone(),
            Arc::clone(&logged),
        );
        let facts = w.facts;
        let row = tokio.block_on(async move {
            let db = std::env::temp_dir().join(format!(
                "clearance-check-path-{}-{}.db",
                scale.name,
                std::process::id()
            ));
            clearance_benches::remove_store(&db);
            let rt = Runtime::new(
                &wasm,
                hash.trim(),
                RuntimeConfig {
                    instances: 2,
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
            let key = new_key(Scope::Service, std::slice::from_ref(&account), "bench", 0)?;
            clearance_host::store::SqliteFile::open(&db)
                .and_then(|mut st| st.add_key(&key.stored))
                .map_err(|e| e.to_string())?;
            service.refresh_keys().await.map_err(|e| e.to_string())?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| e.to_string())?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                let _ = serve(listener, service).await;
            });
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .map_err(|e| e.to_string())?;
            let bearer = format!("Bearer {}", key.token);
            let (check, health, revision) = (
                format!("http://{addr}/v1/check"),
                format!("http://{addr}/healthz"),
                format!("http://{addr}/v1/revision"),
            );
            eprintln!("{}: serving on {addr}, measuring", scale.name);
            let logged = Arc::clone(&logged);
            let measure = async move {
            let mut rounds: [Vec<[f64; 2]>; 3] = Default::default();
            let mut refused = 0usize;
            // For a profiler: checks only, many more rounds.
            let only_checks = std::env::var_os("CLEARANCE_BENCH_CHECKS_ONLY").is_some();
            let rounds_n = if only_checks { ROUNDS * 10 } else { ROUNDS };
            for round in 0..rounds_n {
                for (kind, url) in [&check, &health, &revision].into_iter().enumerate() {
                    if kind > 0 && only_checks {
                        rounds[kind].push([0.0, 0.0]);
                        continue;
                    }
                    if let Ok(mut v) = logged.0.lock() {
                        v.clear();
                    }
                    let mut trips = Vec::with_capacity(PER_ROUND);
                    for i in 0..PER_ROUND {
                        let req = if kind == 0 {
                            client
                                .post(url)
                                .header("content-type", "application/json")
                                .body(bodies[(round * PER_ROUND + i) % bodies.len()].clone())
                        } else {
                            client.get(url)
                        };
                        let t = Instant::now();
                        let ok = req
                            .header("authorization", &bearer)
                            .send()
                            .await
                            .map(|r| r.status().is_success());
                        trips.push(t.elapsed().as_secs_f64() * 1e6);
                        refused += usize::from(!matches!(ok, Ok(true)));
                    }
                    let server: Vec<f64> = logged
                        .0
                        .lock()
                        .map(|v| v.iter().map(|(_, us)| *us as f64).collect())
                        .unwrap_or_default();
                    rounds[kind].push([p50(trips), p50(server)]);
                }
            }
            (rounds, refused)
            };
            let (rounds, refused) = if apart {
                on_client_cpu(measure)?
            } else {
                measure.await
            };
            let m =
                |k: usize, i: usize| median(&rounds[k].iter().map(|r| r[i]).collect::<Vec<_>>());
            if refused > 0 {
                eprintln!("{}: {refused} requests were not answered 2xx", scale.name);
            }
            clearance_benches::remove_store(&db);
            Ok::<_, String>(format!(
                "| {} | {layout} | {:.0} / {:.0} µs | {:.0} / {:.0} µs | {:.0} / {:.0} µs | {:.2}× |",
                scale.name,
                m(0, 0),
                m(0, 1),
                m(1, 0),
                m(1, 1),
                m(2, 0),
                m(2, 1),
                m(0, 0) / m(1, 0)
            ))
        });
        match row {
            Ok(row) => println!("{row}"),
            Err(e) => eprintln!("{}: {e}", scale.name),
        }
    }
}

/// The CPUs of the service's threads and of the client's, when the client runs apart.
const SERVICE_CPU: usize = 0;
const CLIENT_CPU: usize = 1;

/// Runs `measure` to its end on a thread of its own, pinned to [`CLIENT_CPU`], on a
/// runtime of its own: the client shares no thread, and no CPU, with the service.
fn on_client_cpu<T: Send + 'static>(
    measure: impl Future<Output = T> + Send + 'static,
) -> Result<T, String> {
    std::thread::spawn(move || {
        if !pin(CLIENT_CPU) {
            return Err("cannot pin the client's thread".to_string());
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(rt.block_on(measure))
    })
    .join()
    .map_err(|_| "the client's thread panicked".to_string())?
}

/// The CPUs this process may run on (before any thread of it is pinned).
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Pins the calling thread to `cpu` (one of the first two); false if it cannot be.
// `sched_setaffinity` on a set this function owns; std has no call for it.
#[allow(unsafe_code)]
fn pin(cpu: usize) -> bool {
    // SAFETY: `cpu_set_t` is plain data, zero is the empty set, and `CPU_SET` and
    // `sched_setaffinity` read and write only the set passed, of the size given.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}
