//! One write pipeline (X4, EV5): the same writes made through the wasm module under Node
//! (the session's `write`) and through a host over HTTP end alike: each is allowed or
//! refused with the same code, the tuples the policy derives on creation join the change
//! in both, and the facts left behind and the decisions made on them are the same.

use super::service::{NOW, demo_facts, serve_config, temp_db};
use super::{admin, block, get_json, root};
use clearance_host::policy_dir::read_policies;
use clearance_host::service::ServiceConfig;
use serde_json::{Value, json};

fn add(resource: &str, relation: &str, subject: &str) -> Value {
    json!({ "op": "add_tuple", "tuple": { "resource": resource, "relation": relation, "subject": subject } })
}

fn remove(resource: &str, relation: &str, subject: &str) -> Value {
    json!({ "op": "remove_tuple", "tuple": { "resource": resource, "relation": relation, "subject": subject } })
}

/// An event of `account` at `station`, owned by `org`, created by `by`.
fn event(id: &str, account: &str, station: &str, org: &str, by: &str) -> Value {
    let key = format!("event:{id}");
    json!([
        { "op": "add_entity", "entity": { "type": "event", "id": id, "account": account, "attrs": { "ends_at": "2026-05-03T00:00:00Z" } } },
        add(&key, "station", station),
        add(&key, "owner_org", org),
        add(&key, "created_by", by),
    ])
}

/// The writes: creations that derive assignments (EV5) and one that derives none,
/// changes allowed and refused (denied, no rule), and deltas that do not apply.
fn writes() -> Vec<(&'static str, Value)> {
    let occ = "user:occ_controller";
    vec![
        // EV5: the LHR engineering organisation is assigned on creation.
        (
            occ,
            event(
                "w_lhr",
                "skyways",
                "station:lhr",
                "organization:skyways_occ",
                occ,
            ),
        ),
        // EV5: JetFix serves DUB and is assigned; AeroServ names DUB but does not serve it.
        (
            occ,
            event(
                "w_dub",
                "skyways",
                "station:dub",
                "organization:skyways_occ",
                occ,
            ),
        ),
        // A maintenance technician creates no event (EV2).
        (
            "user:lhr_tech",
            event(
                "w_refused",
                "skyways",
                "station:lhr",
                "organization:skyways_occ",
                "user:lhr_tech",
            ),
        ),
        (
            occ,
            json!([{ "op": "set_attr", "entity": "event:w_lhr", "attr": "title", "value": "Hydraulic leak" }]),
        ),
        (occ, json!([add("event:w_lhr", "guest", "invitee:g_email")])),
        // EV4: AeroServ serves LHR; JetFix does not.
        (
            occ,
            json!([add("event:w_lhr", "assigned", "organization:aeroserv")]),
        ),
        (
            occ,
            json!([add("event:w_lhr", "assigned", "organization:jetfix")]),
        ),
        // EV3: unassigned at once.
        (
            occ,
            json!([remove(
                "event:w_lhr",
                "assigned",
                "organization:skyways_lhr_mx"
            )]),
        ),
        // Deltas that do not apply: a tuple that is not there, an entity that is not.
        (
            occ,
            json!([remove(
                "event:w_lhr",
                "assigned",
                "organization:blue_ams_mx"
            )]),
        ),
        (
            occ,
            json!([{ "op": "set_attr", "entity": "event:nowhere", "attr": "title", "value": "x" }]),
        ),
        // Another account's event, with its own derived assignment.
        (
            "user:blue_controller",
            event(
                "w_ams",
                "blueair",
                "station:ams",
                "organization:blueair_occ",
                "user:blue_controller",
            ),
        ),
        // No rule lets anyone give a station a new code.
        (
            occ,
            json!([{ "op": "set_attr", "entity": "station:lhr", "attr": "code", "value": "XXX" }]),
        ),
        // All or nothing: an allowed title and a refused assignment in one write.
        (
            occ,
            json!([
                { "op": "set_attr", "entity": "event:w_dub", "attr": "title", "value": "Bird strike" },
                add("event:w_dub", "assigned", "organization:skyways_cdg_mx"),
            ]),
        ),
        // OP6: an administrator creates an access-right type and gives it to a user; the
        // next decisions follow it. A manager may not create one; a type still held is
        // not removed.
        (
            "user:a_administrator",
            json!([{ "op": "add_entity", "entity": { "type": "role", "id": "skyline_charter.weekend_sales", "account": "skyline_charter",
                "attrs": { "matrix": "operations", "extends": "sales_read", "cells": ["bookings:write", "dispatch:write"] } } }]),
        ),
        (
            "user:a_administrator",
            json!([{ "op": "set_attr", "entity": "user:a_crew", "attr": "roles", "value": ["weekend_sales"] }]),
        ),
        (
            "user:a_manager",
            json!([{ "op": "add_entity", "entity": { "type": "role", "id": "skyline_charter.manager_made", "account": "skyline_charter",
                "attrs": { "matrix": "operations", "cells": ["dispatch:write"] } } }]),
        ),
        (
            "user:a_administrator",
            json!([{ "op": "remove_entity", "entity": "role:night_dispatch" }]),
        ),
        // AC5: a write is judged on what it leaves: a swap on a full plan is allowed, one
        // more user beyond it is not (an invariant of the aircraft).
        (
            "user:ac_owner",
            json!([
                remove("aircraft:g_skyb", "visitor", "user:pilot_own_rec"),
                add("aircraft:g_skyb", "visitor", "user:jetfix_tech"),
            ]),
        ),
        (
            "user:ac_owner",
            json!([add("aircraft:g_skyb", "visitor", "user:pilot_own_rec")]),
        ),
        // OP3: an owner books a trip on an aircraft they own, not on another.
        (
            "user:a_owner_write",
            json!([
                { "op": "add_entity", "entity": { "type": "flight", "id": "w_trip", "account": "skyline_charter",
                    "attrs": { "number": "SKY900", "departs_at": "2026-05-03T09:00:00Z" } } },
                add("flight:w_trip", "aircraft", "ops_aircraft:a_ac1"),
            ]),
        ),
        (
            "user:a_owner_write",
            json!([
                { "op": "add_entity", "entity": { "type": "flight", "id": "w_trip2", "account": "skyline_charter",
                    "attrs": { "number": "SKY902", "departs_at": "2026-05-03T09:00:00Z" } } },
                add("flight:w_trip2", "aircraft", "ops_aircraft:a_ac3"),
            ]),
        ),
    ]
}

/// Every user and guest of the demo data on every event, for the actions that take no
/// target.
fn requests(facts: &Value) -> Vec<Value> {
    let of = |ty: &str| -> Vec<String> {
        facts["entities"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == ty)
            .map(|e| format!("{ty}:{}", e["id"].as_str().unwrap()))
            .collect()
    };
    let mut out = Vec::new();
    for principal in of("user").iter().chain(of("invitee").iter()) {
        for resource in of("event") {
            for action in ["view", "message", "update", "close"] {
                out.push(json!({ "principal": principal, "action": action, "resource": resource, "now": NOW }));
            }
        }
        for resource in of("flight") {
            for action in ["view", "edit"] {
                out.push(json!({ "principal": principal, "action": action, "resource": resource, "now": NOW }));
            }
        }
        for page in ["operations:bookings", "operations:dispatch"] {
            out.push(
                json!({ "principal": principal, "action": "write", "resource": page, "now": NOW }),
            );
        }
    }
    out
}

/// The facts without their revision, which each side counts from where it started.
fn without_revision(mut facts: Value) -> Value {
    facts.as_object_mut().unwrap().remove("revision");
    facts
}

#[test]
fn writes_through_the_module_in_node_and_through_the_host_end_alike() {
    let writes = writes();
    let start = demo_facts().to_doc();
    // The host.
    let (host_start, host_answers, host_facts, host_decisions) = block(async {
        let db = temp_db("writes-differential");
        let (base, _service) = serve_config(&db, ServiceConfig::default()).await;
        let c = admin();
        let started: Value = get_json(&c, &format!("{base}/v1/revision")).await;
        let mut answers = Vec::new();
        for (author, deltas) in &writes {
            let r = c
                .post(format!("{base}/v1/facts"))
                .json(&json!({ "author": author, "now": NOW, "deltas": deltas }))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            answers.push((status, r.json::<Value>().await.unwrap()));
        }
        let facts: Value = get_json(&c, &format!("{base}/v1/facts")).await;
        let decisions: Value = c
            .post(format!("{base}/v1/check/batch"))
            .json(&json!({ "requests": requests(&facts) }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (
            started["revision"].as_u64().unwrap(),
            answers,
            facts,
            decisions,
        )
    });
    // The module under Node.
    let sources: Vec<Value> = read_policies(&root().join("policies"))
        .unwrap()
        .iter()
        .map(|s| json!({ "name": s.name, "text": s.text }))
        .collect();
    let input = json!({
        "sources": sources,
        "facts": start,
        "now": NOW,
        "writes": writes.iter().map(|(a, d)| json!({ "author": a, "deltas": d })).collect::<Vec<_>>(),
        "requests": requests(&host_facts),
    });
    let dir = temp_db("writes-differential-node");
    let path = dir.with_file_name("input.json");
    std::fs::write(&path, input.to_string()).unwrap();
    let out = std::process::Command::new("node")
        .arg(root().join("web/test/write-runner.mjs"))
        .arg(&path)
        .output()
        .expect("node runs");
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{line}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let node: Value = serde_json::from_str(&line).unwrap();

    // Each write: allowed on both, or refused with the same code; the same tuples derived.
    let node_answers = node["answers"].as_array().unwrap();
    assert_eq!(node_answers.len(), writes.len());
    let mut derived = 0;
    let mut allowed = 0u64;
    for (i, ((status, host), module)) in host_answers.iter().zip(node_answers).enumerate() {
        let what = format!("write {i}: host {status} {host}, module {module}");
        if module["allowed"] == true {
            assert_eq!(*status, 200, "{what}");
            derived += module["derived"].as_array().unwrap().len();
            allowed += 1;
        } else if let Some(refusal) = module.get("refusal") {
            assert_eq!(*status, 403, "{what}");
            assert_eq!(host["error"]["code"], refusal["code"], "{what}");
        } else {
            assert_eq!(*status, 400, "{what}");
            assert_eq!(host["error"]["code"], module["error"]["code"], "{what}");
        }
    }
    // The writes mean something: creations derived assignments, some were refused and
    // some did not apply.
    assert_eq!(derived, 3, "{node_answers:?}");
    assert_eq!(allowed, 11, "{node_answers:?}");
    let assigned = |facts: &Value, event: &str| -> Vec<String> {
        let mut v: Vec<String> = facts["tuples"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["resource"] == event && t["relation"] == "assigned")
            .map(|t| t["subject"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        assigned(&host_facts, "event:w_lhr"),
        ["organization:aeroserv"]
    );
    assert_eq!(
        assigned(&host_facts, "event:w_dub"),
        ["organization:jetfix"]
    );
    assert_eq!(
        assigned(&host_facts, "event:w_ams"),
        ["organization:blue_ams_mx"]
    );
    // The swap was taken and the user beyond the plan refused by its invariant, alike.
    let refused_beyond = &host_answers[host_answers.len() - 3];
    assert_eq!(refused_beyond.0, 403, "{refused_beyond:?}");
    assert_eq!(refused_beyond.1["error"]["code"], "write.invariant");
    // The new access-right type is served: a_crew writes bookings now.
    let crew_books = host_decisions
        .as_array()
        .unwrap()
        .iter()
        .zip(requests(&host_facts))
        .any(|(d, r)| {
            r["principal"] == "user:a_crew"
                && r["resource"] == "operations:bookings"
                && d["allowed"] == true
        });
    assert!(crew_books, "a_crew does not hold the new type");
    // The same facts, and the same revisions gone by.
    assert_eq!(
        without_revision(node["facts"].clone()),
        without_revision(host_facts.clone())
    );
    // The host seeds its store at a revision of its own: each counts from where it began.
    let revision = |facts: &Value| facts["revision"].as_u64().unwrap();
    assert_eq!(revision(&node["facts"]) - start.revision, allowed);
    assert_eq!(revision(&host_facts) - host_start, allowed);
    // The same decisions on them.
    let host_decisions = host_decisions.as_array().unwrap();
    assert!(host_decisions.len() > 1_000, "{}", host_decisions.len());
    assert_eq!(node["decisions"].as_array().unwrap(), host_decisions);
    assert!(host_decisions.iter().any(|d| d["allowed"] == true));
    assert!(host_decisions.iter().any(|d| d["allowed"] == false));
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}
