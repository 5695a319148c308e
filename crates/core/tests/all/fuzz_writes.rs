//! A bounded fuzz harness over the write pipeline and the call protocol, driven by
//! proptest so that it runs (for a few seconds, by its case counts) in the ordinary test
//! command and shrinks what it finds. Inputs are what an attacker sends: deltas of every
//! op with ids holding odd characters (`:`, `#`, `@`, newlines, NUL, zero-width spaces),
//! huge strings, values of the wrong type, unknown types, attributes and relations, and
//! plausible writes mixed in; calls of every op with such fields, arbitrary JSON, and
//! text that is not JSON at all.
//!
//! Properties: nothing panics; every answer of the protocol is JSON, `{"ok": ...}` or a
//! structured error; a write that fails leaves the snapshot exactly as it was, as does
//! one rolled back; and no write is allowed that the reference judgement of
//! [`crate::write_reference`] refuses (every change held to its rule, every entity named
//! in the author's account).

use crate::generate::EPOCH;
use crate::privilege::pools;
use crate::random_deltas::{self, Pools};
use crate::slice::schema;
use crate::world as demo_world;
use crate::write_reference::{Judged, gate_attrs};
use clearance_core::protocol::{OPS, Session};
use clearance_core::writes::{WriteError, write};
use clearance_core::{Delta, EntityJson, Facts, FactsJson, Snapshot, TimeValue, TupleJson};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

/// Ids with what an id should not hold.
const ODD_IDS: &[&str] = &[
    "",
    " ",
    ":",
    "a:b",
    "a#b@c",
    "evil\nline",
    "evil\u{0}nul",
    "\u{200b}jetfix_tech",
    "jetfix_tech\u{200b}",
    "../../etc/passwd",
    "\u{202e}evil",
    "%00",
    "🛩",
];

/// The airline world, its snapshot's bytes, and what fuzzed writes may name.
struct Airline {
    facts: Facts,
    snap: Snapshot,
    bytes: Vec<u8>,
    pools: Pools,
    names: Vec<String>,
    authors: Vec<String>,
    /// The authors who pass their gates.
    active: Vec<String>,
    attrs: Vec<String>,
    relations: Vec<String>,
    types: Vec<String>,
    facts_json: String,
    sources_json: String,
}

fn airline() -> &'static Airline {
    static AIRLINE: OnceLock<Airline> = OnceLock::new();
    AIRLINE.get_or_init(|| {
        let schema = schema();
        let facts = demo_world("airline").unwrap_or_else(|e| panic!("{e}"));
        let snap = Snapshot::build(Arc::clone(&schema), &facts).unwrap_or_else(|e| panic!("{e}"));
        let bytes = snap.to_bytes().unwrap_or_else(|e| panic!("{e}"));
        let mut pools = pools(&schema, &facts);
        pools
            .names
            .extend(ODD_IDS.iter().map(|i| format!("invitee:{i}")));
        pools.names.push("user:jetfix_tech\n".into());
        pools.new_ids.extend(ODD_IDS.iter().map(|i| i.to_string()));
        pools.new_ids.push("x".repeat(100_000));
        pools.strings.push("y".repeat(100_000));
        pools.strings.extend(ODD_IDS.iter().map(|i| i.to_string()));
        let names: Vec<String> = pools.names.clone();
        let authors = crate::slice::principals(&schema, &facts);
        let at = TimeValue::Text("2026-05-01T10:00:00Z".into());
        let active = authors
            .iter()
            .filter(|a| snap.gates(a, &at).allowed)
            .cloned()
            .collect();
        let mut attrs: Vec<String> = schema
            .types
            .iter()
            .flat_map(|t| t.attrs.iter().map(|a| a.name.clone()))
            .collect();
        attrs.sort();
        attrs.dedup();
        let mut relations: Vec<String> = schema
            .types
            .iter()
            .flat_map(|t| t.rels.iter().map(|r| r.name.clone()))
            .collect();
        relations.sort();
        relations.dedup();
        let types = schema.types.iter().map(|t| t.name.clone()).collect();
        let facts_json = serde_json::to_string(&facts.to_doc()).unwrap_or_else(|e| panic!("{e}"));
        let sources: Vec<Value> = crate::policy_sources()
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|s| json!({ "name": s.name, "text": s.text }))
            .collect();
        Airline {
            facts,
            snap,
            bytes,
            pools,
            names,
            authors,
            active,
            attrs,
            relations,
            types,
            facts_json,
            sources_json: Value::Array(sources).to_string(),
        }
    })
}

/// An id: mostly one of the world, or odd, or huge.
fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(airline().names.clone())
            .prop_map(|n| n.split_once(':').map_or(n.clone(), |(_, i)| i.to_string())),
        2 => prop::sample::select(ODD_IDS).prop_map(str::to_string),
        2 => "\\PC{0,24}",
        1 => (1usize..300_000).prop_map(|n| "z".repeat(n)),
    ]
}

/// A `type:id` name.
fn name() -> impl Strategy<Value = String> {
    let a = airline();
    prop_oneof![
        6 => prop::sample::select(a.names.clone()),
        2 => (prop::sample::select(a.types.clone()), id()).prop_map(|(t, i)| format!("{t}:{i}")),
        1 => "\\PC{0,24}",
    ]
}

/// Any JSON value.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,16}".prop_map(Value::String),
        prop::sample::select(vec![
            "administrator",
            "accepted",
            "active",
            "sms",
            "operations"
        ])
        .prop_map(|s| json!(s)),
        (1usize..200_000).prop_map(|n| Value::String("w".repeat(n))),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

fn now() -> impl Strategy<Value = TimeValue> {
    prop_oneof![
        4 => Just(TimeValue::Text("2026-05-01T10:00:00Z".into())),
        2 => (-10 * 86_400i64..10 * 86_400).prop_map(|d| TimeValue::Seconds(EPOCH + d)),
        1 => any::<i64>().prop_map(TimeValue::Seconds),
        1 => "\\PC{0,24}".prop_map(TimeValue::Text),
    ]
}

fn tuple() -> impl Strategy<Value = TupleJson> {
    let a = airline();
    (
        name(),
        prop_oneof![4 => prop::sample::select(a.relations.clone()), 1 => "\\PC{0,12}"],
        name(),
        prop::option::of(now()),
    )
        .prop_map(|(resource, relation, subject, expires)| TupleJson {
            resource,
            relation,
            subject,
            expires,
        })
}

/// A delta of any op with fuzzed fields.
fn odd_delta() -> impl Strategy<Value = Delta> {
    let a = airline();
    let attr = prop_oneof![4 => prop::sample::select(a.attrs.clone()), 1 => "\\PC{0,12}"].boxed();
    let ty = prop_oneof![4 => prop::sample::select(a.types.clone()), 1 => "\\PC{0,12}"].boxed();
    let account = prop::option::of(prop_oneof![
        4 => prop::sample::select(vec!["skyways".to_string(), "blueair".to_string()]),
        1 => id(),
    ]);
    let attrs = prop::collection::btree_map(attr.clone(), value(), 0..5);
    prop_oneof![
        (ty, id(), account, attrs).prop_map(|(ty, id, account, attrs)| Delta::AddEntity {
            entity: EntityJson {
                ty,
                id,
                account,
                attrs
            },
        }),
        name().prop_map(|entity| Delta::RemoveEntity { entity }),
        (name(), attr, value()).prop_map(|(entity, attr, value)| Delta::SetAttr {
            entity,
            attr,
            value
        }),
        tuple().prop_map(|tuple| Delta::AddTuple { tuple }),
        tuple().prop_map(|tuple| Delta::RemoveTuple { tuple }),
    ]
}

/// A list of deltas: a plausible write in account `home` (from a seed, over the world's
/// pools with odd ids added) with, half the time, fuzzed deltas put in among it.
fn deltas(home: Option<String>) -> impl Strategy<Value = Vec<Delta>> {
    (
        any::<u64>(),
        prop_oneof![
            Just(Vec::new()),
            prop::collection::vec((odd_delta(), any::<prop::sample::Index>()), 1..3),
        ],
    )
        .prop_map(move |(seed, odd)| {
            let schema = schema();
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut out =
                random_deltas::deltas(&mut rng, &schema, &airline().pools, home.as_deref(), 4);
            for (d, at) in odd {
                let i = at.index(out.len() + 1);
                out.insert(i, d);
            }
            out
        })
}

/// The account of `author` in the airline world, if it has one.
fn home(author: &str) -> Option<String> {
    airline()
        .facts
        .entities
        .get(author)
        .map(|e| e.account.clone())
}

/// An author and a list of deltas mostly in the author's account.
fn write_of_author() -> impl Strategy<Value = (String, Vec<Delta>)> {
    author().prop_flat_map(|a| {
        let h = home(&a);
        (Just(a), deltas(h))
    })
}

fn author() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(airline().active.clone()),
        2 => prop::sample::select(airline().authors.clone()),
        1 => name(),
    ]
}

/// The reference's verdict on an allowed write: its violations, described.
fn refused_by_reference(
    before: &Facts,
    before_snap: &Snapshot,
    after_snap: &Snapshot,
    author: &str,
    now: &TimeValue,
    deltas: &[Delta],
    derived: &[Delta],
) -> Vec<String> {
    let schema = schema();
    let gates = gate_attrs(&schema);
    Judged {
        schema: &schema,
        before,
        before_snap,
        after_snap,
        author,
        now,
        deltas,
        derived,
        gates: &gates,
    }
    .violations()
    .into_iter()
    .map(|v| format!("{:?}: {}", v.kind, v.what))
    .collect()
}

/// A call of the protocol: an op with its fields (some left out, some of another op),
/// arbitrary JSON, or text that is not JSON.
fn call() -> impl Strategy<Value = String> {
    let request = (
        name(),
        prop::sample::select(vec!["view", "update", "change_access", "register", "read", "use", "nope"]),
        name(),
        prop::option::of(name()),
        now(),
    )
        .prop_map(|(p, a, r, t, n)| json!({ "principal": p, "action": a, "resource": r, "target": t, "now": n }))
        .boxed();
    let field = |f: &'static str| -> BoxedStrategy<Value> {
        match f {
            "deltas" => prop_oneof![
                9 => deltas(Some("skyways".into())).prop_map(|d| serde_json::to_value(d).unwrap_or(Value::Null)),
                1 => value(),
            ]
            .boxed(),
            "author" | "principal" => prop_oneof![9 => author().prop_map(Value::String), 1 => value()].boxed(),
            "resource" => prop_oneof![9 => name().prop_map(Value::String), 1 => value()].boxed(),
            "now" => prop_oneof![9 => now().prop_map(|n| serde_json::to_value(n).unwrap_or(Value::Null)), 1 => value()].boxed(),
            "sources" => prop_oneof![
                1 => Just(serde_json::from_str(&airline().sources_json).unwrap_or(Value::Null)),
                1 => "\\PC{0,64}".prop_map(|t| json!([{ "name": "fuzz.policy", "text": t }])),
                1 => value(),
            ]
            .boxed(),
            "facts" => prop_oneof![
                1 => Just(serde_json::from_str(&airline().facts_json).unwrap_or(Value::Null)),
                2 => value(),
            ]
            .boxed(),
            "type" => prop_oneof![4 => prop::sample::select(airline().types.clone()).prop_map(Value::String), 1 => value()].boxed(),
            "account" => prop_oneof![Just(json!("skyways")), Just(json!("blueair")), value()].boxed(),
            "matrix" => prop_oneof![Just(json!("operations")), Just(json!("maintenance")), value()].boxed(),
            "action" => prop_oneof![Just(json!("view")), Just(json!("read")), value()].boxed(),
            _ => value().boxed(),
        }
    };
    // One strategy per op: its fields, each left out now and then, and now and then a
    // field of no op.
    // Writes most often: they are what the reference judges.
    let per_op: Vec<(u32, BoxedStrategy<String>)> = OPS
        .iter()
        .map(|spec| {
            let weight = if matches!(spec.name, "write" | "authorize_deltas") {
                8
            } else {
                1
            };
            let op = spec.name;
            let fields: Vec<&'static str> =
                spec.required.iter().chain(spec.optional).copied().collect();
            let values: Vec<BoxedStrategy<Option<Value>>> = fields
                .iter()
                .map(|f| match *f {
                    "request" => prop::option::weighted(0.95, request.clone()).boxed(),
                    "requests" => prop::option::weighted(
                        0.95,
                        prop::collection::vec(request.clone(), 0..4).prop_map(Value::Array),
                    )
                    .boxed(),
                    _ => prop::option::weighted(0.95, field(f)).boxed(),
                })
                .collect();
            let strategy = (
                values,
                prop::option::weighted(0.05, ("[a-z]{1,8}", value())),
            )
                .prop_map(move |(vals, extra)| {
                    let mut m = Map::new();
                    m.insert("op".into(), json!(op));
                    for (f, v) in fields.iter().zip(vals) {
                        if let Some(v) = v {
                            m.insert((*f).to_string(), v);
                        }
                    }
                    if let Some((k, v)) = extra {
                        m.insert(k, v);
                    }
                    Value::Object(m).to_string()
                })
                .boxed();
            (weight, strategy)
        })
        .collect();
    let structured = prop::strategy::Union::new_weighted(per_op);
    prop_oneof![
        8 => structured,
        1 => value().prop_map(|v| v.to_string()),
        1 => "\\PC{0,64}",
        1 => (1usize..100_000).prop_map(|n| "[".repeat(n)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8000, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    /// The write pipeline on the airline world: no panic, the snapshot as it was after a
    /// failed or rolled-back write, and no allow the reference refuses.
    #[test]
    fn fuzzed_writes_never_panic_and_never_allow_what_the_rules_refuse(
        (author, deltas) in write_of_author(),
        now in now(),
    ) {
        let a = airline();
        let mut snap = a.snap.clone();
        match write(&mut snap, &author, &now, &deltas) {
            Ok((pending, derived)) => {
                let violations = refused_by_reference(&a.facts, &a.snap, &snap, &author, &now, &deltas, &derived);
                snap.rollback(pending);
                prop_assert!(violations.is_empty(), "`{}` was allowed {}:\n  {}", author, serde_json::to_string(&deltas).unwrap_or_default(), violations.join("\n  "));
            }
            Err(WriteError::Refused(_) | WriteError::Invalid(_)) => {}
        }
        prop_assert!(snap.to_bytes().map_err(|e| TestCaseError::fail(e.to_string()))? == a.bytes, "the snapshot changed");
    }
}

/// The state a fuzzed session holds facts in, as a facts document; `None` if it holds none.
fn session_facts(s: &mut Session) -> Option<Facts> {
    let answer: Value = serde_json::from_str(&s.call(r#"{"op":"facts"}"#)).ok()?;
    let doc: FactsJson = serde_json::from_value(answer.get("ok")?.clone()).ok()?;
    Facts::from_doc(doc).ok()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 800, max_shrink_iters: 500, ..ProptestConfig::default() })]

    /// The call protocol on a session holding the shipped policies and the airline world:
    /// every answer is JSON (`ok` or a structured error), nothing panics, and no write or
    /// `authorize_deltas` is allowed that the reference refuses.
    #[test]
    fn fuzzed_calls_answer_json_and_never_allow_what_the_rules_refuse(calls in prop::collection::vec(call(), 1..8)) {
        let a = airline();
        let schema = schema();
        let mut s = Session::default();
        let loaded = s.call(&format!(r#"{{"op":"load_policy","sources":{}}}"#, a.sources_json));
        prop_assert!(loaded.starts_with("{\"ok\""), "{}", loaded);
        let loaded = s.call(&format!(r#"{{"op":"load_facts","facts":{}}}"#, a.facts_json));
        prop_assert!(loaded.starts_with("{\"ok\""), "{}", loaded);
        let mut own_policy = true;
        for c in &calls {
            let parsed: Option<Value> = serde_json::from_str(c).ok();
            let op = parsed.as_ref().and_then(|v| v.get("op")).and_then(Value::as_str).map(str::to_string);
            let judged = own_policy && matches!(op.as_deref(), Some("write" | "authorize_deltas"));
            let before = if judged { session_facts(&mut s) } else { None };
            let answer = s.call(c);
            let v: Value = serde_json::from_str(&answer).map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {answer}")))?;
            let ok = v.get("ok");
            let error = v.get("error");
            prop_assert!(ok.is_some() != error.is_some(), "neither ok nor error: {}", answer);
            if let Some(e) = error {
                prop_assert!(e.get("code").and_then(Value::as_str).is_some_and(|c| !c.is_empty()), "{}", answer);
                prop_assert!(v.get("allowed") == Some(&Value::Bool(false)), "{}", answer);
            }
            if op.as_deref() == Some("load_policy") && ok.is_some() {
                own_policy = false;
            }
            let allowed = ok.and_then(|o| o.get("allowed")) == Some(&Value::Bool(true));
            let (Some(before), true, Some(call)) = (before, allowed, parsed) else { continue };
            let get = |k: &str| call.get(k).cloned().unwrap_or(Value::Null);
            let author: String = serde_json::from_value(get("author")).unwrap_or_default();
            let now: TimeValue = serde_json::from_value(get("now")).unwrap_or(TimeValue::Seconds(0));
            let deltas: Vec<Delta> = serde_json::from_value(get("deltas")).unwrap_or_default();
            let derived: Vec<Delta> = ok
                .and_then(|o| o.get("derived"))
                .and_then(|d| serde_json::from_value(d.clone()).ok())
                .unwrap_or_default();
            let after = before
                .apply(&deltas.iter().chain(&derived).cloned().collect::<Vec<_>>())
                .map_err(|e| TestCaseError::fail(format!("the facts refuse an allowed write: {e}")))?;
            let build = |f: &Facts| Snapshot::build(Arc::clone(&schema), f).map_err(|e| TestCaseError::fail(e.to_string()));
            let (before_snap, after_snap) = (build(&before)?, build(&after)?);
            let violations = refused_by_reference(&before, &before_snap, &after_snap, &author, &now, &deltas, &derived);
            prop_assert!(violations.is_empty(), "{} allowed:\n  {}", c, violations.join("\n  "));
        }
    }
}

/// The fuzzed inputs reach the pipeline's allowing path (they are not all refused as
/// malformed): over a fixed run, some writes are allowed, some refused and some invalid.
#[test]
fn fuzzed_writes_reach_every_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let a = airline();
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    let strategy = (write_of_author(), now());
    for _ in 0..2000 {
        let ((author, deltas), now) = strategy
            .new_tree(&mut runner)
            .unwrap_or_else(|e| panic!("{e}"))
            .current();
        let mut snap = a.snap.clone();
        let kind = match write(&mut snap, &author, &now, &deltas) {
            Ok(_) => "allowed",
            Err(WriteError::Refused(_)) => "refused",
            Err(WriteError::Invalid(_)) => "invalid",
        };
        *outcomes.entry(kind).or_default() += 1;
    }
    assert!(
        outcomes.get("allowed").copied().unwrap_or(0) >= 3
            && outcomes.get("refused").copied().unwrap_or(0) >= 5
            && outcomes.get("invalid").copied().unwrap_or(0) >= 5,
        "{outcomes:?}"
    );
}
