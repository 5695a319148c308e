//! The call protocol: every op has one row and its calls round-trip through JSON; a
//! session's state is one of its kinds, never a policy of one and a snapshot of another.

use clearance_core::protocol::{Call, OPS, Op, Session, SourceJson, ok};
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

/// A message without the places in a text (` at line 1 column 9`) it names.
fn unplaced(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some((before, after)) = rest.split_once(" at line ") {
        out.push_str(before);
        let after = after.trim_start_matches(|c: char| c.is_ascii_digit());
        let after = after.strip_prefix(" column ").unwrap_or(after);
        rest = after.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// A call read from other serde data (the module reads JS values so) is the call read
/// from its JSON text, and so is its error, but for the place in the text.
#[test]
fn calls_read_from_values_are_those_read_from_text() {
    let texts = [
        r#"{"op":"info"}"#,
        r#"{"op":"check","request":{"principal":"user:a","action":"view","resource":"event:e","now":5}}"#,
        r#"{"op":"list_principals","resource":"event:e","action":"view","now":"2026-05-01T10:00:00Z","account":"x"}"#,
        r#"{"op":"write","author":"user:a","now":0,"deltas":[{"op":"set_attr","entity":"user:a","attr":"status","value":null}]}"#,
        r#"{"op":"info","colour":1}"#,
        r#"{"op":"launch"}"#,
        r#"{"op":"check"}"#,
        r#"{"op":"check","request":{"principal":"user:a","action":"view","resource":"event:e"}}"#,
        r#"{"op":"apply_deltas","deltas":[{"op":"set_attr","entity":"user:a","attr":"status"}]}"#,
    ];
    for text in texts {
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        let by_value = Call::read(value).map(|c| c.to_json().unwrap());
        let by_text = Call::parse(text)
            .map(|c| c.to_json().unwrap())
            .map_err(|e| unplaced(&e));
        assert_eq!(by_value, by_text, "{text}");
    }
    let request = r#"{"principal":"user:a","action":"view","resource":"event:e","now":5}"#;
    for (op, arg) in [
        (Op::Check, request),
        (Op::Explain, request),
        (Op::CheckBatch, "[]"),
        (Op::Check, r#"{"principal":"user:a"}"#),
        (Op::Info, "null"),
    ] {
        let value: serde_json::Value = serde_json::from_str(arg).unwrap();
        let by_value = Call::read_arg(op, value)
            .map(|c| c.to_json().unwrap())
            .map_err(|e| e.to_string());
        let by_text = Call::from_arg(op, arg)
            .map(|c| c.to_json().unwrap())
            .map_err(|e| unplaced(&e.to_string()));
        assert_eq!(by_value, by_text, "{arg}");
    }
}

/// A call's typed answer ([`Session::run`]) is what its JSON answer holds, the error too.
#[test]
fn typed_answers_are_the_json_answers() {
    let (sources, facts) = shipped();
    let now = || TimeValue::Text("2026-05-01T10:00:00Z".into());
    let calls = || {
        vec![
            Call::Info,
            Call::LoadPolicy {
                sources: sources.clone(),
            },
            Call::Schema,
            Call::LoadFacts {
                facts: facts.clone(),
            },
            Call::Info,
            Call::Explain {
                request: Request {
                    principal: "user:aeroserv_tech".into(),
                    action: "view".into(),
                    resource: "event:aog_lhr".into(),
                    target: None,
                    now: now(),
                },
            },
            Call::ListResources {
                principal: "user:aeroserv_tech".into(),
                action: "view".into(),
                ty: "event".into(),
                now: now(),
            },
            Call::Matrix {
                matrix: "operations".into(),
                account: None,
            },
            Call::Matrix {
                matrix: "nope".into(),
                account: None,
            },
            Call::Facts,
        ]
    };
    let mut typed = Session::default();
    let mut json = Session::default();
    for (a, b) in calls().into_iter().zip(calls()) {
        let written = match typed.run(a) {
            Ok(answer) => ok(&answer.to_json()),
            Err(e) => clearance_core::protocol::err(&e),
        };
        assert_eq!(written, json.answer(b));
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
