//! The host's tests, in one binary: the module on wasmtime is refused unless it is the
//! built artifact, decides like the core, and turns every bad input and every trap into a
//! structured error and a denial, replacing the instance and keeping the host alive.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use clearance_core::wire::{QUERY_LEN, encode_query};
use clearance_core::{Facts, Request, Schema, Snapshot, Source, TimeValue};
use clearance_host::auth::{Scope, stored_key};
use clearance_host::{HostError, Runtime, RuntimeConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod auth;
mod checkpoints;
mod cli;
mod faults;
mod image;
mod import;
mod multihost;
mod observe;
mod oidc;
mod openapi;
mod pg;
mod security;
mod service;
mod ship;
mod soak;
mod stores;
mod tls;
mod token_corpus;
mod writes;

/// The admin key of every test server (added to its store when the server starts).
pub(crate) const ADMIN: &str = "clr_00000000000000ad_test-admin-secret-not-for-production-use";

/// A fresh directory for one test: under `clearance-tests-<pid>` in the temporary
/// directory, so that a run's scratch is one directory. The first call removes those of
/// earlier runs whose process has ended (a test binary has no teardown of its own).
pub(crate) fn scratch(name: &str) -> PathBuf {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    let tmp = std::env::temp_dir();
    SWEPT.call_once(|| {
        for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("clearance-tests-"))
            else {
                continue;
            };
            if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    });
    let dir = tmp
        .join(format!("clearance-tests-{}", std::process::id()))
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Adds a key to the store at `db` (once: a key already there is left as it is).
pub(crate) fn add_key(db: &Path, token: &str, scope: Scope, accounts: &[&str]) {
    let accounts: Vec<String> = accounts.iter().map(|a| a.to_string()).collect();
    let key = stored_key(token, scope, &accounts, "test", 0).unwrap();
    let mut store = clearance_host::store::SqliteFile::open(db).unwrap();
    if !store.keys().unwrap().iter().any(|k| k.id == key.id) {
        store.add_key(&key).unwrap();
    }
}

/// An HTTP client that sends `token` with every request.
pub(crate) fn client_with(token: &str) -> reqwest::Client {
    bearer(token).pool_max_idle_per_host(64).build().unwrap()
}

/// A client builder that sends `token` with every request.
pub(crate) fn bearer(token: &str) -> reqwest::ClientBuilder {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    reqwest::Client::builder().default_headers(headers)
}

/// GET `url` with `c`: the answer's JSON.
pub(crate) async fn get_json(c: &reqwest::Client, url: &str) -> serde_json::Value {
    c.get(url).send().await.unwrap().json().await.unwrap()
}

/// An HTTP client with the admin key.
pub(crate) fn admin() -> reqwest::Client {
    client_with(ADMIN)
}

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn artifact() -> (Vec<u8>, String) {
    let pkg = root().join("web/pkg");
    let wasm = std::fs::read(pkg.join("clearance_bg.wasm"))
        .expect("web/pkg/clearance_bg.wasm: run `cargo xtask wasm`");
    let hash = std::fs::read_to_string(pkg.join("clearance_bg.wasm.sha256"))
        .expect("the artifact hash")
        .trim()
        .to_string();
    (wasm, hash)
}

fn runtime(config: RuntimeConfig) -> Arc<Runtime> {
    let (wasm, hash) = artifact();
    Arc::new(Runtime::new(&wasm, &hash, config).expect("the runtime starts"))
}

pub(crate) fn snapshot() -> Snapshot {
    let mut files: Vec<_> = std::fs::read_dir(root().join("policies"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.retain(|p| p.extension().is_some_and(|x| x == "policy"));
    files.sort();
    let sources: Vec<Source> = files
        .iter()
        .map(|p| Source::new(p.display().to_string(), std::fs::read_to_string(p).unwrap()))
        .collect();
    let schema = Arc::new(Schema::compile(&sources).unwrap());
    let facts = Facts::from_json(
        &std::fs::read_to_string(root().join("tests/worlds/airline.json")).unwrap(),
    )
    .unwrap();
    Snapshot::build(schema, &facts).unwrap()
}

fn request(p: &str, a: &str, r: &str) -> Request {
    Request {
        principal: p.into(),
        action: a.into(),
        resource: r.into(),
        target: None,
        now: TimeValue::Text("2026-05-01T10:00:00Z".into()),
    }
}

fn queries(s: &Snapshot, rs: &[Request]) -> Vec<u8> {
    let mut b = Vec::new();
    for r in rs {
        encode_query(&s.resolve(r).expect("resolvable"), &mut b);
    }
    b
}

/// The deltas of a write that creates an event with its station, owning organisation
/// and creator, all or nothing (the soak and the fault tests write these).
pub(crate) fn create_event(id: &str) -> serde_json::Value {
    let add = |rel: &str, s: &str| serde_json::json!({ "op": "add_tuple", "tuple": { "resource": format!("event:{id}"), "relation": rel, "subject": s } });
    serde_json::json!([
        { "op": "add_entity", "entity": { "type": "event", "id": id, "account": "skyways", "attrs": { "ends_at": "2026-05-03T00:00:00Z" } } },
        add("station", "station:lhr"),
        add("owner_org", "organization:skyways_occ"),
        add("created_by", "user:occ_controller"),
    ])
}

/// Held by the tests that load the machine and measure it (the soak, the fair-share test),
/// so that they take turns rather than measure each other's load.
pub(crate) static MEASURED_LOAD: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes [`MEASURED_LOAD`], whatever a test that panicked holding it left.
pub(crate) fn measured_load() -> std::sync::MutexGuard<'static, ()> {
    MEASURED_LOAD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn refuses_a_module_that_is_not_the_built_artifact() {
    let (mut wasm, hash) = artifact();
    let wrong = Runtime::new(&wasm, &"0".repeat(64), RuntimeConfig::default());
    assert!(matches!(wrong, Err(HostError::ModuleMismatch { .. })));
    if let Some(last) = wasm.last_mut() {
        *last ^= 1;
    }
    let tampered = Runtime::new(&wasm, &hash, RuntimeConfig::default());
    match tampered {
        Err(e @ HostError::ModuleMismatch { .. }) => {
            assert_eq!(e.data().code, "host.module_mismatch")
        }
        other => panic!("a tampered module started: {:?}", other.err()),
    }
}

#[test]
fn decides_through_the_module_like_the_core() {
    let rt = runtime(RuntimeConfig::default());
    let snap = snapshot();
    let rs = [
        request("user:aeroserv_tech", "view", "event:aog_lhr"),
        request("user:jetfix_tech", "view", "event:aog_lhr"),
        request("user:former_controller", "view", "event:aog_lhr"),
    ];
    block(async {
        let info = rt.load_snapshot(snap.to_bytes().unwrap()).await.unwrap();
        assert_eq!(info.policy_hash, snap.schema.hash_hex());
        let ds = rt.check_ids(queries(&snap, &rs)).await.unwrap();
        let native: Vec<bool> = rs.iter().map(|r| snap.check(r).allowed).collect();
        assert_eq!(ds.iter().map(|d| d.allowed).collect::<Vec<_>>(), native);
        assert_eq!(native, vec![true, false, false]);
        let explained = rt
            .call(serde_json::json!({"op": "explain", "request": rs[1]}).to_string())
            .await
            .unwrap();
        assert_eq!(
            explained["decision"]["reasons"][0]["code"],
            "relation.missing"
        );
    });
}

#[test]
fn bad_input_is_an_error_and_a_denial_never_a_dead_host() {
    let rt = runtime(RuntimeConfig::default());
    let snap = snapshot();
    block(async {
        // Before any snapshot: deny, with an error.
        let verdicts = rt.check_or_deny(vec![0; QUERY_LEN]).await;
        assert!(!verdicts[0].allowed);
        assert_eq!(verdicts[0].error.as_ref().unwrap().code, "host.not_loaded");
        // Garbage bytes as a snapshot are refused.
        let garbage = rt.load_snapshot(b"not a snapshot at all".to_vec()).await;
        assert!(
            matches!(garbage, Err(HostError::Module(ref e)) if e.code == "snapshot.malformed"),
            "{garbage:?}"
        );
        rt.load_snapshot(snap.to_bytes().unwrap()).await.unwrap();
        // Malformed JSON.
        let bad = rt.call("{\"op\": \"check\", \"request\": ".into()).await;
        assert!(
            matches!(bad, Err(HostError::Module(ref e)) if e.code == "request.malformed"),
            "{bad:?}"
        );
        // An unknown principal is a denial with its reason, not an error.
        let unknown = rt.call(serde_json::json!({"op": "check", "request": request("user:nobody", "view", "event:aog_lhr")}).to_string()).await.unwrap();
        assert_eq!(unknown["allowed"], false);
        assert_eq!(unknown["reasons"][0]["code"], "entity.unknown");
        // Forged ids in a binary query are denials.
        let mut forged = Vec::new();
        let q = clearance_core::Query {
            principal: u32::MAX - 1,
            resource: clearance_core::Resource::Entity(3),
            action: 0,
            target: None,
            now: 0,
        };
        encode_query(&q, &mut forged);
        let d = rt.check_ids(forged).await.unwrap();
        assert!(!d[0].allowed && d[0].reasons[0].code == clearance_core::Code::EntityUnknown);
        // A batch that is not whole queries.
        let ragged = rt.check_or_deny(vec![1; QUERY_LEN + 3]).await;
        assert!(ragged.iter().all(|v| !v.allowed));
        assert_eq!(ragged[0].error.as_ref().unwrap().code, "request.malformed");
        // A batch above the limit.
        let huge = rt.check_or_deny(vec![0; QUERY_LEN * ((1 << 20) + 1)]).await;
        assert!(huge.iter().all(|v| !v.allowed));
        assert_eq!(huge[0].error.as_ref().unwrap().code, "request.too_large");
        // And the host still decides.
        let ok = rt
            .check_ids(queries(
                &snap,
                &[request("user:aeroserv_tech", "view", "event:aog_lhr")],
            ))
            .await
            .unwrap();
        assert!(ok[0].allowed);
    });
}

#[test]
fn a_call_past_its_deadline_denies_and_the_instance_is_replaced() {
    let rt = runtime(RuntimeConfig {
        call_deadline: std::time::Duration::from_millis(5),
        per_query: std::time::Duration::ZERO,
        instances: 1,
        ..RuntimeConfig::default()
    });
    let snap = snapshot();
    let one = queries(
        &snap,
        &[request("user:aeroserv_tech", "view", "event:aog_lhr")],
    );
    block(async {
        rt.load_snapshot(snap.to_bytes().unwrap()).await.unwrap();
        assert!(rt.check_ids(one.clone()).await.unwrap()[0].allowed);
        let many: Vec<u8> = one
            .iter()
            .copied()
            .cycle()
            .take(one.len() * 1_000_000)
            .collect();
        let verdicts = rt.check_or_deny(many).await;
        assert!(
            verdicts.iter().all(|v| !v.allowed),
            "a trapped batch allowed something"
        );
        let error = verdicts[0].error.as_ref().unwrap();
        assert_eq!(error.code, "host.trap");
        assert!(error.message.contains("interrupt"), "{}", error.message);
        // A fresh instance takes over, with the snapshot loaded again.
        assert!(rt.check_ids(one).await.unwrap()[0].allowed);
    });
}

#[test]
fn a_snapshot_beyond_the_memory_cap_is_refused_and_the_old_one_keeps_serving() {
    let rt = runtime(RuntimeConfig {
        memory_limit: 24 << 20,
        instances: 1,
        ..RuntimeConfig::default()
    });
    let snap = snapshot();
    let one = queries(
        &snap,
        &[request("user:aeroserv_tech", "view", "event:aog_lhr")],
    );
    // A world far larger than 24 MiB: the airline world with many more events.
    let big = {
        let mut facts = Facts::from_json(
            &std::fs::read_to_string(root().join("tests/worlds/airline.json")).unwrap(),
        )
        .unwrap();
        for i in 0..200_000 {
            let e = clearance_core::EntityJson {
                ty: "station".into(),
                id: format!("filler{i}"),
                account: Some("skyways".into()),
                attrs: [("code".to_string(), serde_json::json!(format!("F{i:06}")))].into(),
            };
            facts.add_entity(e, "filler").unwrap();
        }
        Snapshot::build(Arc::clone(&snap.schema), &facts)
            .unwrap()
            .to_bytes()
            .unwrap()
    };
    block(async {
        rt.load_snapshot(snap.to_bytes().unwrap()).await.unwrap();
        let refused = rt.load_snapshot(big).await;
        assert!(matches!(refused, Err(HostError::Trap(_))), "{refused:?}");
        assert!(
            rt.check_ids(one).await.unwrap()[0].allowed,
            "the old snapshot stopped serving"
        );
    });
}

#[test]
fn the_compiled_module_is_cached_by_artifact_hash() {
    let (wasm, hash) = artifact();
    let cache = scratch("cwasm");
    let config = RuntimeConfig {
        cache_dir: Some(cache.clone()),
        ..RuntimeConfig::default()
    };
    let first = Runtime::new(&wasm, &hash, config.clone()).unwrap();
    assert!(
        cache.join(format!("{hash}.cwasm")).is_file(),
        "no .cwasm was written"
    );
    drop(first);
    // A second start reads the cache and decides as well as the first.
    let rt = Arc::new(Runtime::new(&wasm, &hash, config).unwrap());
    assert_eq!(rt.module_hash(), hash);
    let snap = snapshot();
    block(async {
        rt.load_snapshot(snap.to_bytes().unwrap()).await.unwrap();
        let d = rt
            .check_ids(queries(
                &snap,
                &[request("user:aeroserv_tech", "view", "event:aog_lhr")],
            ))
            .await
            .unwrap();
        assert!(d[0].allowed);
    });
    let _ = std::fs::remove_dir_all(&cache);
}

/// Traps, many and at once, never leak a slot of the pool: every trapped instance is
/// replaced, and afterwards every instance still decides.
#[test]
fn traps_at_once_never_leak_a_slot_of_the_pool() {
    let rt = runtime(RuntimeConfig {
        call_deadline: std::time::Duration::from_millis(5),
        per_query: std::time::Duration::ZERO,
        instances: 2,
        ..RuntimeConfig::default()
    });
    let snap = snapshot();
    let one = queries(
        &snap,
        &[request("user:aeroserv_tech", "view", "event:aog_lhr")],
    );
    let many: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * 1_000_000)
        .collect();
    block(async {
        rt.load_snapshot(snap.to_bytes().unwrap()).await.unwrap();
        for _ in 0..5 {
            let calls: Vec<_> = (0..6)
                .map(|_| {
                    let (rt, many) = (Arc::clone(&rt), many.clone());
                    tokio::spawn(async move { rt.check_or_deny(many).await })
                })
                .collect();
            for c in calls {
                let v = c.await.unwrap();
                assert_eq!(v[0].error.as_ref().unwrap().code, "host.trap");
            }
        }
        let traps = rt.stats().traps.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(traps, 30);
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let (rt, one) = (Arc::clone(&rt), one.clone());
                tokio::spawn(async move { rt.check_ids(one).await })
            })
            .collect();
        for c in calls {
            assert!(c.await.unwrap().unwrap()[0].allowed);
        }
    });
}

/// Back-pressure is a bounded queue and a clear 503, never a trap: with one instance
/// busy and no room to wait, a caller is told `host.busy` at once.
#[test]
fn a_full_queue_answers_busy_never_a_trap() {
    let rt = runtime(RuntimeConfig {
        instances: 1,
        queue: 0,
        call_deadline: std::time::Duration::from_secs(2),
        per_query: std::time::Duration::ZERO,
        ..RuntimeConfig::default()
    });
    let snap = snapshot();
    let one = queries(
        &snap,
        &[request("user:aeroserv_tech", "view", "event:aog_lhr")],
    );
    let many: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * 2_000_000)
        .collect();
    block(async {
        rt.load_snapshot(snap.to_bytes().unwrap()).await.unwrap();
        // The long batch takes the one instance; once the pool says none is free, a check
        // is answered busy at once (no room to wait). Waits on the pool's state, not on
        // time: if the long batch ends before it is seen holding the instance (a loaded
        // machine), it is started again.
        let mut busy = None;
        for _ in 0..20 {
            let long = {
                let (rt, many) = (Arc::clone(&rt), many.clone());
                tokio::spawn(async move { rt.check_or_deny(many).await })
            };
            while rt.instances_free() > 0 && !long.is_finished() {
                tokio::task::yield_now().await;
            }
            if rt.instances_free() == 0 {
                // Decided only if the long batch ended in between; then it starts again.
                let v = rt.check_or_deny(one.clone()).await;
                busy = v[0].error.clone();
            }
            long.await.unwrap();
            if busy.is_some() {
                break;
            }
        }
        let error = busy.expect("the long batch was never seen holding the instance");
        assert_eq!(error.code, "host.busy", "{}", error.message);
        assert!(rt.check_ids(one).await.unwrap()[0].allowed);
    });
}
