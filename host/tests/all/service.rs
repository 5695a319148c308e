//! The real server on a loopback port: every route, refused writes with each reason, a
//! policy reload with an error, the change feed, a slice that decides exactly as the
//! server for its principal, and a restart that keeps every acknowledged write.

use super::{artifact, block, root};
use clearance_core::{Facts, FactsJson, Schema, Snapshot, Source};
use clearance_host::api::{ConsoleFiles, PACKAGE_MODULES, router, with_console};
use clearance_host::policy_dir::read_policies;
use clearance_host::service::{Service, ServiceConfig};
use clearance_host::{Runtime, RuntimeConfig};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) const NOW: &str = "2026-05-01T10:00:00Z";

pub(crate) fn demo_facts() -> Facts {
    let mut merged = FactsJson::default();
    for w in ["airline", "maintenance", "operations"] {
        let doc: FactsJson = serde_json::from_str(
            &std::fs::read_to_string(root().join(format!("tests/worlds/{w}.json"))).unwrap(),
        )
        .unwrap();
        merged.entities.extend(doc.entities);
        merged.tuples.extend(doc.tuples);
    }
    Facts::from_doc(merged).unwrap()
}

fn runtime() -> Arc<Runtime> {
    runtime_with(RuntimeConfig {
        instances: 2,
        ..RuntimeConfig::default()
    })
}

pub(crate) fn runtime_with(config: RuntimeConfig) -> Arc<Runtime> {
    let (wasm, hash) = artifact();
    Arc::new(Runtime::new(&wasm, &hash, config).unwrap())
}

/// A server on a loopback port over the store at `db`; returns its base URL.
pub(crate) async fn serve(db: &Path) -> (String, Arc<Service>) {
    serve_config(db, ServiceConfig::default()).await
}

/// A server as [`serve`], with `config`.
pub(crate) async fn serve_config(db: &Path, config: ServiceConfig) -> (String, Arc<Service>) {
    serve_on(db, config, runtime()).await
}

/// [`serve_config`] on a runtime of the caller's.
pub(crate) async fn serve_on(
    db: &Path,
    config: ServiceConfig,
    runtime: Arc<Runtime>,
) -> (String, Arc<Service>) {
    let policies = root().join("policies");
    let service = Service::open(
        runtime,
        read_policies(&policies).unwrap(),
        db,
        || Ok(demo_facts()),
        Some(policies),
        config,
    )
    .await
    .unwrap();
    super::add_key(db, super::ADMIN, clearance_host::auth::Scope::Admin, &[]);
    service.refresh_keys().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let files = ConsoleFiles {
        web: root().join("web"),
        pkg: root().join("web/pkg"),
    };
    let app = with_console(router(Arc::clone(&service)), &files);
    tokio::spawn(async move {
        let _ = clearance_host::api::serve_with_limits(
            listener,
            app,
            Default::default(),
            std::future::pending(),
        )
        .await;
    });
    (format!("http://{addr}"), service)
}

pub(crate) fn temp_db(name: &str) -> PathBuf {
    super::scratch(&format!("service-{name}")).join("facts.db")
}

pub(crate) async fn post(c: &reqwest::Client, url: &str, body: Value) -> (u16, Value) {
    let r = c.post(url).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn get(c: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = c.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn req(p: &str, a: &str, r: &str) -> Value {
    json!({ "principal": p, "action": a, "resource": r, "now": NOW })
}

/// The console serves the package's modules by a list of names; the list is every module
/// of `web/lib/`, so a new module cannot be left out (the page would not load).
#[test]
fn the_package_modules_served_are_those_of_web_lib() {
    let mut on_disk: Vec<String> = std::fs::read_dir(root().join("web/lib"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|name| name.ends_with(".js"))
        .collect();
    on_disk.sort();
    let mut served: Vec<String> = PACKAGE_MODULES.iter().map(|m| m.to_string()).collect();
    served.sort();
    assert_eq!(served, on_disk);
}

#[test]
fn the_console_is_served_with_the_hosts_own_module() {
    block(async {
        let (base, s) = serve(&temp_db("console")).await;
        let c = super::admin();
        let page = c.get(format!("{base}/")).send().await.unwrap();
        assert_eq!(page.status().as_u16(), 200);
        assert!(page.text().await.unwrap().contains("operations console"));
        let modules = PACKAGE_MODULES.iter().map(|m| format!("/lib/{m}"));
        for path in [
            "/console/console.js",
            "/console/personas.json",
            "/index.js",
            "/pkg/clearance.js",
        ]
        .map(String::from)
        .into_iter()
        .chain(modules)
        {
            let r = c.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "{path}");
        }
        let wasm = c
            .get(format!("{base}/pkg/clearance_bg.wasm"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            wasm.headers()["content-type"].to_str().unwrap(),
            "application/wasm"
        );
        let bytes = wasm.bytes().await.unwrap();
        let hash = clearance_core::policy::hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        assert_eq!(
            hash,
            s.module_hash(),
            "the page runs the bytes the host runs"
        );
        let missing = c
            .get(format!("{base}/console/nope.js"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status().as_u16(), 404);
    });
}

#[test]
fn decisions_through_the_server_match_the_core() {
    block(async {
        let (base, _s) = serve(&temp_db("decide")).await;
        let c = super::admin();
        let (status, d) = post(
            &c,
            &format!("{base}/v1/check"),
            req("user:aeroserv_tech", "view", "event:aog_lhr"),
        )
        .await;
        assert_eq!((status, d["allowed"].clone()), (200, json!(true)));
        let (_, d) = post(
            &c,
            &format!("{base}/v1/check"),
            req("user:former_controller", "view", "event:aog_lhr"),
        )
        .await;
        assert_eq!(d["reasons"][0]["code"], "gate.active");
        let (_, b) = post(&c, &format!("{base}/v1/check/batch"), json!({ "requests": [req("user:aeroserv_tech", "view", "event:aog_lhr"), req("user:jetfix_tech", "view", "event:aog_lhr")] })).await;
        assert_eq!(
            b.as_array()
                .unwrap()
                .iter()
                .map(|d| d["allowed"].clone())
                .collect::<Vec<_>>(),
            vec![json!(true), json!(false)]
        );
        let (_, a) = post(
            &c,
            &format!("{base}/v1/allowed-actions"),
            json!({ "principal": "user:occ_controller", "resource": "event:aog_lhr", "now": NOW }),
        )
        .await;
        assert!(a["actions"].as_array().unwrap().contains(&json!("view")));
        let (_, r) = post(&c, &format!("{base}/v1/resources"), json!({ "principal": "user:jetfix_tech", "action": "view", "type": "event", "now": NOW })).await;
        assert!(!r.as_array().unwrap().contains(&json!("event:aog_lhr")));
        let (_, p) = post(
            &c,
            &format!("{base}/v1/principals"),
            json!({ "resource": "event:aog_lhr", "action": "view", "now": NOW }),
        )
        .await;
        assert!(p.as_array().unwrap().contains(&json!("user:aeroserv_tech")));
        let (_, e) = post(
            &c,
            &format!("{base}/v1/explain"),
            req("user:jetfix_tech", "view", "event:aog_lhr"),
        )
        .await;
        assert_eq!(e["decision"]["reasons"].as_array().unwrap().len(), 3);
        let (_, m) = get(&c, &format!("{base}/v1/matrix/operations")).await;
        assert_eq!(m["roles"].as_array().unwrap().len(), 27);
        // Bad input: a structured error and a deny.
        let (status, bad) = post(&c, &format!("{base}/v1/check"), json!({ "principal": 5 })).await;
        assert_eq!((status, bad["allowed"].clone()), (400, json!(false)));
        assert_eq!(bad["error"]["code"], "request.malformed");
    });
}

/// `view`, `update` and `assign` by every principal of the demo data on every event,
/// aircraft and squawk, decided by the server: the allowed flags, in order.
pub(crate) async fn decision_mix(c: &reqwest::Client, base: &str) -> Vec<Value> {
    let (_, facts) = get(c, &format!("{base}/v1/facts")).await;
    let key = |e: &Value| {
        format!(
            "{}:{}",
            e["type"].as_str().unwrap_or(""),
            e["id"].as_str().unwrap_or("")
        )
    };
    let entities = facts["entities"].as_array().cloned().unwrap_or_default();
    let of = |types: &[&str]| -> Vec<String> {
        entities
            .iter()
            .filter(|e| types.contains(&e["type"].as_str().unwrap_or("")))
            .map(key)
            .collect()
    };
    let (principals, resources) = (
        of(&["user", "invitee"]),
        of(&["event", "aircraft", "squawk"]),
    );
    let mut requests = Vec::new();
    for p in &principals {
        for r in &resources {
            for a in ["view", "update", "assign"] {
                requests.push(json!({ "principal": p, "action": a, "resource": r, "now": NOW }));
            }
        }
    }
    assert!(requests.len() > 500, "a mix of {} requests", requests.len());
    let mut out = Vec::new();
    for chunk in requests.chunks(1_000) {
        let (status, answer) = post(
            c,
            &format!("{base}/v1/check/batch"),
            json!({ "requests": chunk }),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        out.extend(
            answer
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|d| d["allowed"].clone()),
        );
    }
    assert_eq!(out.len(), requests.len());
    out
}

#[test]
fn refused_writes_say_why_and_write_nothing() {
    block(async {
        let (base, _s) = serve(&temp_db("writes")).await;
        let c = super::admin();
        let facts = format!("{base}/v1/facts");
        let write =
            |author: &str, deltas: Value| json!({ "author": author, "now": NOW, "deltas": deltas });
        let tuple = |op: &str, r: &str, rel: &str, s: &str| json!([{ "op": op, "tuple": { "resource": r, "relation": rel, "subject": s } }]);
        let cases = [
            (
                write(
                    "user:occ_controller",
                    tuple(
                        "add_tuple",
                        "event:aog_lhr",
                        "assigned",
                        "organization:jetfix",
                    ),
                ),
                403,
                "write.denied",
            ),
            (
                write(
                    "user:jetfix_tech",
                    tuple(
                        "add_tuple",
                        "event:unassigned_jfk",
                        "assigned",
                        "organization:jetfix",
                    ),
                ),
                403,
                "write.denied",
            ),
            (
                write(
                    "user:ac_owner",
                    tuple(
                        "add_tuple",
                        "aircraft:g_skyb",
                        "visitor",
                        "user:jetfix_tech",
                    ),
                ),
                403,
                "write.invariant",
            ),
            (
                write(
                    "user:a_manager",
                    json!([{ "op": "set_attr", "entity": "user:a_crew", "attr": "roles", "value": ["administrator"] }]),
                ),
                403,
                "write.denied",
            ),
            (
                write(
                    "user:occ_controller",
                    json!([{ "op": "set_attr", "entity": "station:lhr", "attr": "code", "value": "X" }]),
                ),
                403,
                "write.no_rule",
            ),
            (
                write(
                    "user:occ_controller",
                    tuple(
                        "add_tuple",
                        "event:aog_lhr",
                        "assigned",
                        "organization:nowhere",
                    ),
                ),
                403,
                "write.outside_account",
            ),
            (
                write(
                    "user:ac_owner",
                    tuple("add_tuple", "aircraft:g_skya", "visitor", "user:blue_pilot"),
                ),
                403,
                "write.outside_account",
            ),
            (
                write(
                    "user:occ_controller",
                    json!([{ "op": "add_entity", "entity": { "type": "invitee", "id": "bad id", "account": "skyways", "attrs": { "channel": "sms", "address": "1" } } },
                           { "op": "add_tuple", "tuple": { "resource": "invitee:bad id", "relation": "registered_by", "subject": "organization:skyways_occ" } }]),
                ),
                400,
                "facts.invalid_id",
            ),
            (
                json!({ "author": "user:occ_controller", "deltas": "not a list" }),
                400,
                "request.malformed",
            ),
        ];
        // Every decision of a mix, before and after the refusals: a refused list, even
        // one the module applied part of (or all of, before judging it), leaves every
        // instance as it was.
        let mix = decision_mix(&c, &base).await;
        // An assignment the author may make, then one that does not apply or that the
        // author may not make.
        let partly = |second: &str| {
            write(
                "user:occ_controller",
                json!([
                    { "op": "add_tuple", "tuple": { "resource": "event:unassigned_jfk", "relation": "assigned", "subject": "organization:jetfix" } },
                    { "op": "add_tuple", "tuple": { "resource": "event:aog_lhr", "relation": "assigned", "subject": second } }
                ]),
            )
        };
        let partly = [
            (partly("organization:nowhere"), 403, "write.outside_account"),
            (partly("organization:jetfix"), 403, "write.denied"),
        ];
        for (body, status, code) in cases.into_iter().chain(partly) {
            let (got, answer) = post(&c, &facts, body.clone()).await;
            assert_eq!(
                (got, answer["error"]["code"].as_str().unwrap_or("")),
                (status, code),
                "{body}: {answer}"
            );
            assert_eq!(answer["allowed"], false);
        }
        assert!(
            decision_mix(&c, &base).await == mix,
            "a refused write changed a decision"
        );
        // A refusal carries the denial's every failed check.
        let (_, refused) = post(
            &c,
            &facts,
            write(
                "user:occ_controller",
                tuple(
                    "add_tuple",
                    "event:aog_lhr",
                    "assigned",
                    "organization:jetfix",
                ),
            ),
        )
        .await;
        assert_eq!(
            refused["refusal"]["decision"]["reasons"][0]["code"],
            "condition.failed"
        );
        // A stale parity token is refused.
        let stale = json!({ "author": "user:occ_controller", "now": NOW, "deltas": tuple("add_tuple", "event:unassigned_jfk", "assigned", "organization:jetfix"), "parity": { "module_hash": "0", "policy_hash": "0", "revision": 0 } });
        let (status, answer) = post(&c, &facts, stale).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str().unwrap_or("")),
            (409, "parity.stale")
        );
        let (_, rev) = get(&c, &format!("{base}/v1/revision")).await;
        assert_eq!(rev["revision"], 0, "a refused write changed the revision");
        // The allowed write lands, with a current parity token.
        let ok = json!({ "author": "user:occ_controller", "now": NOW, "deltas": tuple("add_tuple", "event:unassigned_jfk", "assigned", "organization:jetfix"), "parity": { "module_hash": rev["module_hash"], "policy_hash": rev["policy_hash"], "revision": 0 } });
        let (status, answer) = post(&c, &facts, ok).await;
        assert_eq!((status, answer["revision"].clone()), (200, json!(1)));
        // A token from revision 0 whose decision no longer holds at revision 1 is refused:
        // jetfix_tech could not view the event then, and now can.
        let relied = json!({ "principal": "user:jetfix_tech", "action": "view", "resource": "event:unassigned_jfk", "now": NOW });
        let outdated = json!({ "author": "user:occ_controller", "now": NOW, "deltas": tuple("remove_tuple", "event:aog_lhr", "guest", "invitee:g_email"), "parity": { "module_hash": rev["module_hash"], "policy_hash": rev["policy_hash"], "revision": 0, "request": relied, "allowed": false } });
        let (status, answer) = post(&c, &facts, outdated).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str().unwrap_or("")),
            (409, "parity.outcome_changed")
        );
        let (_, d) = post(&c, &format!("{base}/v1/check"), json!({ "principal": "user:jetfix_tech", "action": "view", "resource": "event:unassigned_jfk", "now": NOW, "min_revision": 1 })).await;
        assert_eq!(d["allowed"], true);
        let (status, later) = post(&c, &format!("{base}/v1/check"), json!({ "principal": "user:jetfix_tech", "action": "view", "resource": "event:unassigned_jfk", "now": NOW, "min_revision": 9 })).await;
        assert_eq!(
            (status, later["error"]["code"].as_str().unwrap_or("")),
            (503, "revision.unavailable")
        );
    });
}

#[test]
fn a_policy_reload_with_an_error_is_refused_and_the_old_policy_keeps_serving() {
    block(async {
        let (base, _s) = serve(&temp_db("reload")).await;
        let c = super::admin();
        let (_, before) = get(&c, &format!("{base}/v1/revision")).await;
        let mut sources: Vec<Value> = read_policies(&root().join("policies"))
            .unwrap()
            .iter()
            .map(|s| json!({ "name": s.name, "text": s.text }))
            .collect();
        let broken = json!({ "name": "policies/broken.policy", "text": "type event {\n  permission peek = nosuch\n}\n" });
        sources.push(broken);
        let (status, answer) = post(
            &c,
            &format!("{base}/v1/policy/reload"),
            json!({ "sources": sources }),
        )
        .await;
        assert_eq!(
            (status, answer["error"]["code"].as_str().unwrap_or("")),
            (400, "policy.invalid")
        );
        assert_eq!(answer["errors"][0]["file"], "policies/broken.policy");
        assert_eq!(
            (
                answer["errors"][0]["line"].clone(),
                answer["errors"][0]["col"].clone()
            ),
            (json!(2), json!(21))
        );
        let (_, after) = get(&c, &format!("{base}/v1/revision")).await;
        assert_eq!(before["policy_hash"], after["policy_hash"]);
        let (_, d) = post(
            &c,
            &format!("{base}/v1/check"),
            req("user:aeroserv_tech", "view", "event:aog_lhr"),
        )
        .await;
        assert_eq!(d["allowed"], true);
        // Validation alone says the same without touching anything.
        let (status, _) = post(
            &c,
            &format!("{base}/v1/policy/validate"),
            json!({ "sources": [{ "name": "x.policy", "text": "type a { b: nosuch }" }] }),
        )
        .await;
        assert_eq!(status, 400);
        // A good reload swaps the policy.
        let (status, answer) = post(&c, &format!("{base}/v1/policy/reload"), json!({})).await;
        assert_eq!((status, answer["reloaded"].clone()), (200, json!(true)));
    });
}

#[test]
fn the_change_feed_streams_every_change_from_a_revision_on() {
    block(async {
        let (base, _s) = serve(&temp_db("feed")).await;
        let c = super::admin();
        let w = json!({ "author": "user:occ_controller", "now": NOW, "deltas": [{ "op": "remove_tuple", "tuple": { "resource": "event:aog_lhr", "relation": "guest", "subject": "invitee:g_email" } }] });
        assert_eq!(post(&c, &format!("{base}/v1/facts"), w).await.0, 200);
        let mut feed = c
            .get(format!("{base}/v1/changes?since=0"))
            .send()
            .await
            .unwrap()
            .bytes_stream();
        let w2 = json!({ "author": "user:occ_controller", "now": NOW, "deltas": [{ "op": "add_tuple", "tuple": { "resource": "event:unassigned_jfk", "relation": "assigned", "subject": "organization:aeroserv" } }] });
        assert_eq!(post(&c, &format!("{base}/v1/facts"), w2).await.0, 200);
        let mut text = String::new();
        while !(text.contains("id: 1") && text.contains("id: 2")) {
            let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), feed.next())
                .await
                .expect("the feed went quiet")
                .unwrap()
                .unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(
            text.contains("event: change")
                && text.contains("organization:aeroserv")
                && text.contains("invitee:g_email"),
            "{text}"
        );
    });
}

/// Whether the signature of a signed slice holds for `text` under the host's published
/// slice keys (`GET /v1/slice-keys`).
async fn slice_signature_holds(
    c: &reqwest::Client,
    base: &str,
    text: &str,
    signed: &Value,
) -> bool {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (status, jwks) = get(c, &format!("{base}/v1/slice-keys")).await;
    assert_eq!(status, 200, "{jwks}");
    assert_eq!(signed["alg"], "EdDSA");
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == signed["key_id"])
        .expect("the slice's key is published");
    let x: [u8; 32] = b64
        .decode(jwk["x"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let key = ed25519_dalek::VerifyingKey::from_bytes(&x).unwrap();
    let sig = b64.decode(signed["signature"].as_str().unwrap()).unwrap();
    let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
    let message = format!("{}{text}", clearance_host::signer::DOMAIN);
    key.verify_strict(message.as_bytes(), &sig).is_ok()
}

/// The slice a signed envelope carries, once its signature is checked.
pub(crate) async fn verified_slice(c: &reqwest::Client, base: &str, signed: &Value) -> Value {
    let text = signed["slice"].as_str().expect("a signed slice");
    assert!(
        slice_signature_holds(c, base, text, signed).await,
        "the slice's signature does not hold"
    );
    serde_json::from_str(text).unwrap()
}

#[test]
fn a_slice_decides_exactly_as_the_server_and_holds_no_other_account() {
    block(async {
        let (base, service) = serve(&temp_db("slice")).await;
        let c = super::admin();
        let principal = "user:aeroserv_tech";
        let (_, signed) = get(&c, &format!("{base}/v1/slice/{principal}")).await;
        let slice = verified_slice(&c, &base, &signed).await;
        assert_eq!(slice["principal"], principal);
        let ttl = slice["expires"].as_i64().unwrap() - slice["issued"].as_i64().unwrap();
        assert_eq!(ttl, 900, "{slice}");
        // One changed character of the slice, or another key, and it no longer verifies.
        let text = signed["slice"].as_str().unwrap();
        let tampered = text.replacen("aeroserv_tech", "aeroserv_lead", 1);
        assert!(!slice_signature_holds(&c, &base, &tampered, &signed).await);
        assert!(slice_signature_holds(&c, &base, text, &signed).await);
        let account = slice["account"].as_str().unwrap().to_string();
        let facts: FactsJson = serde_json::from_value(slice["facts"].clone()).unwrap();
        assert!(
            facts
                .entities
                .iter()
                .all(|e| e.account.as_deref().unwrap_or(&e.id) == account),
            "the slice holds another account's entities"
        );
        // Only what the policy reads: no one's email, no guest's address, no one else's
        // invitation or roles.
        let text = slice["facts"].to_string();
        for private in [
            "occ.controller@skyways.example",
            "parts.desk@supplier.example",
            "+447700900123",
            "\"pending\"",
        ] {
            assert!(!text.contains(private), "the slice reveals {private}");
        }
        let other_ids: Vec<&str> = ["blueair", "skyline_charter", "mro_north"].into();
        let text = slice["facts"].to_string();
        assert!(
            other_ids
                .iter()
                .all(|a| !text.contains(&format!("\"{a}\""))),
            "the slice names another account"
        );
        // A module loaded with the slice only.
        let sources: Vec<Source> = slice["policy"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| Source::new(s["name"].as_str().unwrap(), s["text"].as_str().unwrap()))
            .collect();
        let snap = Snapshot::build(
            Arc::new(Schema::compile(&sources).unwrap()),
            &Facts::from_doc(facts).unwrap(),
        )
        .unwrap();
        let edge = runtime();
        edge.load_snapshot(snap.to_bytes().unwrap()).await.unwrap();
        // Every resource of the demo data (every account) x every action x several times.
        let everything = demo_facts();
        let full = Snapshot::build(
            Arc::new(Schema::compile(&read_policies(&root().join("policies")).unwrap()).unwrap()),
            &everything,
        )
        .unwrap();
        // Every six hours from 2026-04-28 to 2026-05-05, across events' ends and expiries.
        let instants: Vec<i64> = (0..30).map(|k| 1_777_334_400 + k * 6 * 3_600).collect();
        let mut requests = Vec::new();
        for name in &full.names {
            for action in full.action_names(name) {
                for now in &instants {
                    requests.push(json!({ "principal": principal, "action": action, "resource": name, "now": now }));
                }
            }
        }
        for m in &full.schema.matrices {
            for row in &m.rows {
                let page = format!("{}:{}", m.name, row.name);
                for action in full.action_names(&page) {
                    requests.push(json!({ "principal": principal, "action": action, "resource": page, "now": instants[12] }));
                }
            }
        }
        assert!(requests.len() >= 10_000, "only {} requests", requests.len());
        let mut compared = 0;
        for chunk in requests.chunks(2_000) {
            let (_, server) = post(
                &c,
                &format!("{base}/v1/check/batch"),
                json!({ "requests": chunk }),
            )
            .await;
            let local = edge
                .call(json!({ "op": "check_batch", "requests": chunk }).to_string())
                .await
                .unwrap();
            let strip = |v: &Value| json!({ "allowed": v["allowed"], "codes": v["reasons"].as_array().unwrap().iter().map(|r| r["code"].clone()).collect::<Vec<_>>(), "valid_until": v["valid_until"] });
            for (i, (a, b)) in server
                .as_array()
                .unwrap()
                .iter()
                .zip(local.as_array().unwrap())
                .enumerate()
            {
                // Resources of other accounts are unknown to the slice, and to the
                // principal at the server too: the same denial, for the same reason.
                assert_eq!(strip(a), strip(b), "{}", chunk[i]);
                compared += 1;
            }
        }
        assert!(compared >= 10_000);
        assert_eq!(service.revision(), 0);
    });
}

#[test]
fn a_restart_keeps_every_acknowledged_write() {
    let db = temp_db("restart");
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let w = json!({ "author": "user:occ_controller", "now": NOW, "deltas": [{ "op": "add_tuple", "tuple": { "resource": "event:unassigned_jfk", "relation": "assigned", "subject": "organization:jetfix" } }] });
    tokio.block_on(async {
        let (base, _s) = serve(&db).await;
        let (status, _) = post(&super::admin(), &format!("{base}/v1/facts"), w).await;
        assert_eq!(status, 200);
    });
    drop(tokio);
    block(async {
        let (base, _s) = serve(&db).await;
        let c = super::admin();
        let (_, rev) = get(&c, &format!("{base}/v1/revision")).await;
        assert_eq!(rev["revision"], 1);
        let (_, d) = post(
            &c,
            &format!("{base}/v1/check"),
            req("user:jetfix_tech", "view", "event:unassigned_jfk"),
        )
        .await;
        assert_eq!(d["allowed"], true, "the acknowledged write was lost");
    });
}

/// 64 writes sent at once, each setting the same event's title: they are committed in
/// groups (one transaction each), every one is acknowledged with its own revision, the
/// title served is the one of the last revision, and a restart finds them all.
#[test]
fn concurrent_writes_are_committed_in_groups_in_order_and_kept() {
    const N: u64 = 64;
    let db = temp_db("groups");
    let title = |body: &Value| {
        body["entities"].as_array().and_then(|es| {
            es.iter()
                .find(|e| e["type"] == "event" && e["id"] == "aog_lhr")
                .map(|e| e["attrs"]["title"].clone())
        })
    };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let last = tokio.block_on(async {
        let (base, s) = serve(&db).await;
        let c = super::admin();
        let url = format!("{base}/v1/facts");
        let tasks: Vec<_> = (0..N)
            .map(|i| {
                let (c, url) = (c.clone(), url.clone());
                tokio::spawn(async move {
                    let body = json!({ "author": "user:occ_controller", "now": NOW, "deltas": [
                        { "op": "set_attr", "entity": "event:aog_lhr", "attr": "title", "value": format!("title {i}") }
                    ]});
                    (i, post(&c, &url, body).await)
                })
            })
            .collect();
        let mut by_revision = Vec::new();
        for t in tasks {
            let (i, (status, answer)) = t.await.unwrap();
            assert_eq!(status, 200, "{answer}");
            by_revision.push((answer["revision"].as_u64().unwrap(), i));
        }
        by_revision.sort_unstable();
        let revisions: Vec<u64> = by_revision.iter().map(|(r, _)| *r).collect();
        assert_eq!(revisions, (1..=N).collect::<Vec<_>>());
        let (groups, grouped) = s.group_commits();
        assert_eq!(grouped, N);
        assert!(groups < N, "{N} writes sent at once were committed one by one");
        let last = format!("title {}", by_revision.last().unwrap().1);
        let (_, facts) = get(&c, &url).await;
        assert_eq!(title(&facts), Some(json!(last)));
        last
    });
    drop(tokio);
    block(async {
        let (base, _s) = serve(&db).await;
        let c = super::admin();
        let (_, rev) = get(&c, &format!("{base}/v1/revision")).await;
        assert_eq!(rev["revision"], N);
        let (_, facts) = get(&c, &format!("{base}/v1/facts")).await;
        assert_eq!(title(&facts), Some(json!(last)));
    });
}

#[test]
fn creating_an_event_applies_the_auto_assignment_rules() {
    block(async {
        let (base, _s) = serve(&temp_db("auto")).await;
        let c = super::admin();
        let add = |r: &str, rel: &str, s: &str| json!({ "op": "add_tuple", "tuple": { "resource": r, "relation": rel, "subject": s } });
        let create = json!({ "author": "user:occ_controller", "now": NOW, "deltas": [
            { "op": "add_entity", "entity": { "type": "event", "id": "aog_dub", "account": "skyways", "attrs": { "ends_at": "2026-05-03T00:00:00Z" } } },
            add("event:aog_dub", "station", "station:dub"),
            add("event:aog_dub", "owner_org", "organization:skyways_occ"),
            add("event:aog_dub", "created_by", "user:occ_controller"),
        ] });
        let (status, answer) = post(&c, &format!("{base}/v1/facts"), create).await;
        assert_eq!(status, 200, "{answer}");
        // jetfix serves DUB and has a rule for it: assigned. aeroserv has a rule for DUB
        // but does not serve it: not assigned.
        let (_, d) = post(
            &c,
            &format!("{base}/v1/check"),
            req("user:jetfix_tech", "view", "event:aog_dub"),
        )
        .await;
        assert_eq!(d["allowed"], true, "{d}");
        let (_, d) = post(
            &c,
            &format!("{base}/v1/check"),
            req("user:aeroserv_tech", "view", "event:aog_dub"),
        )
        .await;
        assert_eq!(d["allowed"], false);
        let (_, facts) = get(&c, &format!("{base}/v1/facts")).await;
        let assigned: Vec<&Value> = facts["tuples"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["resource"] == "event:aog_dub" && t["relation"] == "assigned")
            .collect();
        assert_eq!(assigned.len(), 1);
        assert_eq!(assigned[0]["subject"], "organization:jetfix");
    });
}

#[test]
fn a_reloaded_policy_is_stored_and_a_restart_serves_it_with_the_writes_made_under_it() {
    let db = temp_db("reload-restart");
    let hangar = "type hangar {\n  label: string?\n  owner_org: organization\n  created_by: user\n  permission create = owner_org->internal & created_by\n  on create = create\n}\n";
    let (reloaded_hash, revision) = block(async {
        let (base, _s) = serve(&db).await;
        let c = super::admin();
        let mut sources: Vec<Value> = read_policies(&root().join("policies"))
            .unwrap()
            .iter()
            .map(|s| json!({ "name": s.name, "text": s.text }))
            .collect();
        sources.push(json!({ "name": "policies/hangar.policy", "text": hangar }));
        let (status, answer) = post(
            &c,
            &format!("{base}/v1/policy/reload"),
            json!({ "sources": sources }),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let add = |rel: &str, s: &str| json!({ "op": "add_tuple", "tuple": { "resource": "hangar:h1", "relation": rel, "subject": s } });
        let w = json!({ "author": "user:occ_controller", "now": NOW, "deltas": [
            { "op": "add_entity", "entity": { "type": "hangar", "id": "h1", "account": "skyways" } },
            add("owner_org", "organization:skyways_occ"),
            add("created_by", "user:occ_controller"),
        ] });
        let (status, written) = post(&c, &format!("{base}/v1/facts"), w).await;
        assert_eq!(status, 200, "{written}");
        assert_eq!(
            written["revision"],
            answer["revision"].as_u64().unwrap() + 1
        );
        (
            answer["policy_hash"].as_str().unwrap().to_string(),
            written["revision"].as_u64().unwrap(),
        )
    });
    // The files on disk do not have the hangar type: the stored policy wins.
    block(async {
        let (base, s) = serve(&db).await;
        let c = super::admin();
        let (_, rev) = get(&c, &format!("{base}/v1/revision")).await;
        assert_eq!(rev["revision"], revision);
        assert_eq!(rev["policy_hash"], reloaded_hash.as_str());
        assert_eq!(s.policy_hash(), reloaded_hash);
        let (_, facts) = get(&c, &format!("{base}/v1/facts")).await;
        assert!(
            facts["entities"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["type"] == "hangar" && e["id"] == "h1")
        );
        // The policy change is in the change feed, with its hash.
        let mut feed = c
            .get(format!("{base}/v1/changes?since={}", revision - 2))
            .send()
            .await
            .unwrap()
            .bytes_stream();
        let mut text = String::new();
        while !text.contains(&format!("id: {revision}")) {
            let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), feed.next())
                .await
                .expect("the feed went quiet")
                .unwrap()
                .unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(text.contains(&reloaded_hash), "{text}");
    });
}

#[test]
fn every_rejection_has_the_api_error_shape_and_bodies_are_bounded() {
    block(async {
        let (base, _s) = serve(&temp_db("shapes")).await;
        let c = super::admin();
        // Not JSON, wrong content type, too large, wrong method: each a JSON error.
        let not_json = c
            .post(format!("{base}/v1/check"))
            .header("content-type", "application/json")
            .body("{")
            .send()
            .await
            .unwrap();
        let no_type = c
            .post(format!("{base}/v1/check"))
            .body("{}")
            .send()
            .await
            .unwrap();
        let method = c.delete(format!("{base}/v1/check")).send().await.unwrap();
        let query = c
            .get(format!("{base}/v1/changes?since=minus"))
            .send()
            .await
            .unwrap();
        for (r, status, code) in [
            (not_json, 400, "request.malformed"),
            (no_type, 415, "request.malformed"),
            (method, 405, "route.method"),
            (query, 400, "request.malformed"),
        ] {
            assert_eq!(r.status().as_u16(), status);
            let body: Value = r.json().await.expect("a JSON error body");
            assert_eq!(body["error"]["code"], code, "{body}");
            assert_eq!(body["allowed"], false);
        }
        // A body past the limit is refused from its declared length, before it is read.
        let addr = base.trim_start_matches("http://").to_string();
        let answer = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"POST /v1/facts HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 5242880\r\nconnection: close\r\n\r\n").unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            let mut text = String::new();
            let _ = s.read_to_string(&mut text);
            text
        })
        .await
        .unwrap();
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("request.too_large"), "{answer}");
    });
}

#[test]
fn slow_and_surplus_connections_are_closed_not_held() {
    use std::io::{Read, Write};
    block(async {
        let policies = root().join("policies");
        let db = temp_db("limits");
        let service = Service::open(
            runtime(),
            read_policies(&policies).unwrap(),
            &db,
            || Ok(demo_facts()),
            None,
            ServiceConfig::default(),
        )
        .await
        .unwrap();
        super::add_key(&db, super::ADMIN, clearance_host::auth::Scope::Admin, &[]);
        service.refresh_keys().await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = clearance_host::api::ServerLimits {
            header_timeout: std::time::Duration::from_secs(1),
            max_connections: 50,
            ..Default::default()
        };
        tokio::spawn(clearance_host::api::serve_with_limits(
            listener,
            router(service),
            limits,
            std::future::pending(),
        ));
        let outcome = tokio::task::spawn_blocking(move || {
            // 200 connections that never finish their headers.
            let mut held: Vec<std::net::TcpStream> = (0..200)
                .map(|_| {
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    let _ = s.write_all(b"GET /v1/revision HTTP/1.1\r\nHost: x\r\n");
                    s
                })
                .collect();
            std::thread::sleep(std::time::Duration::from_secs(3));
            let (mut closed, mut busy) = (0, 0);
            for s in &mut held {
                s.set_read_timeout(Some(std::time::Duration::from_millis(200)))
                    .unwrap();
                let mut text = Vec::new();
                match s.read_to_end(&mut text) {
                    Ok(_) => closed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
                    Err(_) => {}
                }
                if String::from_utf8_lossy(&text).contains("host.busy") {
                    busy += 1;
                }
            }
            (closed, busy)
        })
        .await
        .unwrap();
        assert_eq!(
            outcome.0, 200,
            "connections still held after the header timeout"
        );
        assert!(
            outcome.1 >= 100,
            "only {} surplus connections were told busy",
            outcome.1
        );
        // And the server still answers.
        let (status, _) = get(&super::admin(), &format!("http://{addr}/v1/revision")).await;
        assert_eq!(status, 200);
    });
}

/// A policy whose evaluation would double forty times is refused before it runs, with
/// where it is, by validation and by reload alike; compiling it does not hold up checks.
#[test]
fn an_exponential_policy_is_refused_at_validation_with_its_location() {
    block(async {
        let (base, _s) = serve(&temp_db("exponential")).await;
        let c = super::admin();
        let mut text = String::from("type hangar {\n  keeper: user\n  permission p0 = keeper\n");
        for k in 1..=40 {
            text.push_str(&format!("  permission p{k} = p{} | p{}\n", k - 1, k - 1));
        }
        text.push_str("}\n");
        let mut sources: Vec<Value> = read_policies(&root().join("policies"))
            .unwrap()
            .iter()
            .map(|s| json!({ "name": s.name, "text": s.text }))
            .collect();
        sources.push(json!({ "name": "policies/hangar.policy", "text": text }));
        let (_, before) = get(&c, &format!("{base}/v1/revision")).await;
        for route in ["validate", "reload"] {
            let (status, answer) = post(
                &c,
                &format!("{base}/v1/policy/{route}"),
                json!({ "sources": sources }),
            )
            .await;
            assert_eq!(status, 400, "{route}: {answer}");
            assert_eq!(answer["error"]["code"], "policy.invalid");
            let p40 = answer["errors"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["message"].as_str().unwrap().contains("`hangar.p40`"))
                .unwrap_or_else(|| panic!("{route}: no error for p40: {answer}"));
            assert_eq!(p40["file"], "policies/hangar.policy");
            assert_eq!(
                (p40["line"].clone(), p40["col"].clone()),
                (json!(43), json!(14))
            );
        }
        let (_, after) = get(&c, &format!("{base}/v1/revision")).await;
        assert_eq!(before, after, "a refused policy changed what is served");
        let (_, d) = post(
            &c,
            &format!("{base}/v1/check"),
            req("user:aeroserv_tech", "view", "event:aog_lhr"),
        )
        .await;
        assert_eq!(d["allowed"], true);
    });
}
