//! The call protocol: every op has one row and its calls round-trip through JSON; a
//! session's state is one of its kinds, never a policy of one and a snapshot of another.

use clearance_core::protocol::{Call, OPS, Session, SourceJson};
use clearance_core::{FactsJson, Request, TimeValue};

#[test]
fn every_op_has_one_row_and_round_trips_through_json() {
    let now = TimeValue::Seconds(0);
    let calls = [
        Call::LoadPolicy {
            sources: Vec::new(),
        },
        Call::LoadFacts {
            facts: FactsJson::default(),
        },
        Call::ApplyDeltas { deltas: Vec::new() },
        Call::Check {
            request: Request {
                principal: "user:a".into(),
                action: "view".into(),
                resource: "event:e".into(),
                target: None,
                now: now.clone(),
            },
        },
        Call::CheckBatch {
            requests: Vec::new(),
        },
        Call::Gates {
            principal: "user:a".into(),
            now: now.clone(),
        },
        Call::AllowedActions {
            principal: "user:a".into(),
            resource: "event:e".into(),
            now: now.clone(),
        },
        Call::ListResources {
            principal: "user:a".into(),
            action: "view".into(),
            ty: "event".into(),
            now: now.clone(),
        },
        Call::ListPrincipals {
            resource: "event:e".into(),
            action: "view".into(),
            now: now.clone(),
            account: Some("x".into()),
        },
        Call::Explain {
            request: Request {
                principal: "user:a".into(),
                action: "view".into(),
                resource: "event:e".into(),
                target: None,
                now: now.clone(),
            },
        },
        Call::Matrix {
            matrix: "operations".into(),
            account: None,
        },
        Call::Resolve {
            requests: Vec::new(),
        },
        Call::AuthorizeDeltas {
            author: "user:a".into(),
            now: now.clone(),
            deltas: Vec::new(),
        },
        Call::Write {
            author: "user:a".into(),
            now,
            deltas: Vec::new(),
        },
        Call::Info,
        Call::Facts,
        Call::Schema,
    ];
    assert_eq!(calls.len(), OPS.len());
    for c in &calls {
        let spec = c.op().spec().expect("a row");
        assert_eq!(OPS.iter().filter(|s| s.op == c.op()).count(), 1);
        let json = c.to_json().unwrap();
        let back = Call::parse(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
        assert_eq!(back.op(), c.op(), "{}", spec.name);
        assert_eq!(back.to_json().unwrap(), json);
    }
}

/// The shipped policies, in name order, and the airline demo world.
fn shipped() -> (Vec<SourceJson>, FactsJson) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files: Vec<_> = std::fs::read_dir(root.join("policies"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "policy"))
        .collect();
    files.sort();
    let sources = files
        .iter()
        .map(|f| SourceJson {
            name: f.display().to_string(),
            text: std::fs::read_to_string(f).unwrap(),
        })
        .collect();
    let facts = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/worlds/airline.json")).unwrap(),
    )
    .unwrap();
    (sources, facts)
}

/// A snapshot loaded from bytes, then another policy: nothing decides under the old
/// policy while the session reports the new one.
#[test]
fn a_policy_loaded_after_a_snapshot_replaces_it_whole() {
    let (mut sources, facts) = shipped();
    let check = || Call::Check {
        request: Request {
            principal: "user:aeroserv_tech".into(),
            action: "view".into(),
            resource: "event:aog_lhr".into(),
            target: None,
            now: TimeValue::Text("2026-05-01T10:00:00Z".into()),
        },
    };
    let mut a = Session::default();
    let loaded = a.answer(Call::LoadPolicy {
        sources: sources.clone(),
    });
    assert!(loaded.starts_with("{\"ok\""), "{loaded}");
    let loaded = a.answer(Call::LoadFacts { facts });
    assert!(loaded.starts_with("{\"ok\""), "{loaded}");
    assert!(a.answer(check()).contains("\"allowed\":true"));
    let bytes = a.snapshot_bytes().unwrap();
    let mut b = Session::default();
    assert!(b.load_snapshot(&bytes).starts_with("{\"ok\""));
    assert!(b.answer(check()).contains("\"allowed\":true"));
    sources.push(SourceJson {
        name: "hangar.policy".into(),
        text: "type hangar {\n  keeper: user\n  permission edit = keeper\n}\n".into(),
    });
    let loaded = b.answer(Call::LoadPolicy { sources });
    assert!(loaded.starts_with("{\"ok\""), "{loaded}");
    // The old snapshot no longer decides, and nothing reports it.
    let answer: serde_json::Value = serde_json::from_str(&b.answer(check())).unwrap();
    assert_eq!(answer["error"]["code"], "session.not_loaded", "{answer}");
    let info: serde_json::Value = serde_json::from_str(&b.answer(Call::Info)).unwrap();
    assert_eq!(info["error"]["code"], "session.not_loaded", "{info}");
    let outline = b.answer(Call::Schema);
    assert!(outline.contains("hangar"), "{outline}");
}

/// `gates`: whether a principal passes the gates of its type, the first failing one
/// named as a check would name it; an unknown principal, an entity of no principal type
/// and an unreadable time are denials too.
#[test]
fn gates_name_the_first_gate_a_principal_fails() {
    let (sources, facts) = shipped();
    let mut s = Session::default();
    assert!(
        s.answer(Call::LoadPolicy { sources })
            .starts_with("{\"ok\"")
    );
    assert!(s.answer(Call::LoadFacts { facts }).starts_with("{\"ok\""));
    let now = TimeValue::Text("2026-05-01T10:00:00Z".into());
    let gates = |s: &mut Session, principal: &str, now: &TimeValue| -> serde_json::Value {
        let answer = s.answer(Call::Gates {
            principal: principal.into(),
            now: now.clone(),
        });
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
        v["ok"].clone()
    };
    for (who, allowed, code) in [
        ("user:occ_controller", true, None),
        ("user:new_planner", false, Some("gate.invitation_accepted")),
        (
            "user:resent_engineer",
            false,
            Some("gate.invitation_accepted"),
        ),
        ("user:former_controller", false, Some("gate.active")),
        ("invitee:g_revoked", false, Some("gate.not_revoked")),
        ("invitee:g_email", true, None),
        ("user:nobody", false, Some("entity.unknown")),
        ("event:aog_lhr", false, Some("principal.invalid")),
    ] {
        let v = gates(&mut s, who, &now);
        assert_eq!(v["allowed"], allowed, "{who}: {v}");
        assert_eq!(v["reasons"][0]["code"].as_str(), code, "{who}: {v}");
    }
    let v = gates(
        &mut s,
        "user:occ_controller",
        &TimeValue::Text("yesterday".into()),
    );
    assert_eq!(v["allowed"], false, "{v}");
    assert_eq!(v["reasons"][0]["code"], "request.invalid", "{v}");
}
