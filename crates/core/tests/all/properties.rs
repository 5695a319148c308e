//! Invariants over generated worlds under the default policies: tenancy, gates,
//! agreement of every listing with `check`, and snapshots that survive serialisation.

use crate::default_schema;
use crate::generate::{EPOCH, SPREAD, World, WorldSize, world};
use clearance_core::{Facts, Request, Schema, Snapshot, TimeValue};
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

fn schema() -> Arc<Schema> {
    static SCHEMA: OnceLock<Arc<Schema>> = OnceLock::new();
    Arc::clone(SCHEMA.get_or_init(|| default_schema().unwrap_or_else(|e| panic!("{e}"))))
}

const SIZE: WorldSize = WorldSize {
    accounts: 2,
    per_type: 3,
    fanout: 2,
};

fn build(seed: u64) -> (World, Snapshot) {
    let w = world(&schema(), seed, SIZE);
    let facts = Facts::from_doc(w.facts.clone()).unwrap_or_else(|e| panic!("generated facts: {e}"));
    let snap = Snapshot::build(schema(), &facts)
        .unwrap_or_else(|e| panic!("generated world does not build: {} {e}", e.code));
    (w, snap)
}

fn principals(w: &World, s: &Schema) -> Vec<String> {
    s.types
        .iter()
        .filter(|t| t.principal)
        .flat_map(|t| w.by_type.get(&t.name).cloned().unwrap_or_default())
        .collect()
}

/// Every (resource, action) pair of the world: entity permissions without targets, and
/// every page of every matrix.
fn resources(w: &World, snap: &Snapshot) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for names in w.by_type.values() {
        for r in names {
            for a in snap.action_names(r) {
                out.push((r.clone(), a));
            }
        }
    }
    for m in &snap.schema.matrices {
        for row in &m.rows {
            let page = format!("{}:{}", m.name, row.name);
            for a in snap.action_names(&page) {
                out.push((page.clone(), a));
            }
        }
    }
    out
}

fn req(p: &str, a: &str, r: &str, now: i64) -> Request {
    Request {
        principal: p.into(),
        action: a.into(),
        resource: r.into(),
        target: None,
        now: TimeValue::Seconds(now),
    }
}

fn account_of(snap: &Snapshot, name: &str) -> Option<u32> {
    snap.entity(name).and_then(|e| snap.account_of(e))
}

/// The generated worlds are not vacuous: across seeds, principals do get access within
/// their account, so the properties below are about real decisions.
#[test]
fn generated_worlds_are_not_vacuous() {
    let (mut allowed, mut total) = (0usize, 0usize);
    for seed in 0..16 {
        let (w, snap) = build(seed);
        for p in principals(&w, &snap.schema) {
            for (r, a) in resources(&w, &snap) {
                if account_of(&snap, &p) == account_of(&snap, &r) {
                    total += 1;
                    allowed += snap.check(&req(&p, &a, &r, EPOCH)).allowed as usize;
                }
            }
        }
    }
    assert!(
        allowed * 100 >= total,
        "only {allowed} of {total} same-account checks allowed"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// MX1: nothing in one account is reachable from another.
    #[test]
    fn no_allow_across_accounts(seed in any::<u64>(), dt in -SPREAD..SPREAD) {
        let (w, snap) = build(seed);
        let now = EPOCH + dt;
        for p in principals(&w, &snap.schema) {
            for (r, a) in resources(&w, &snap) {
                let (pa, ra) = (account_of(&snap, &p), account_of(&snap, &r));
                let d = snap.check(&req(&p, &a, &r, now));
                if ra.is_some() && pa != ra {
                    prop_assert!(!d.allowed, "{p} may {a} {r} across accounts");
                    // Denied structurally, before any gate or rule: to the principal an entity
                    // of another account is one that does not exist.
                    let codes: Vec<String> = d.reasons.iter().map(|x| snap.code(x)).collect();
                    prop_assert!(codes == ["entity.unknown"], "{p} {a} {r}: {codes:?}");
                }
            }
        }
    }

    /// What a face may keep of a reason is what the reason's message would be: a message
    /// the core calls fixed is the same for another request with that reason, and a
    /// template with the request's fields put in is the message written for it.
    #[test]
    fn kept_messages_are_the_messages(seed in any::<u64>(), dt in -SPREAD..SPREAD) {
        let (w, snap) = build(seed);
        let now = EPOCH + dt;
        let mut fixed: std::collections::HashMap<(u8, u32), String> = std::collections::HashMap::new();
        let (mut templated, mut kept) = (0, 0);
        for p in principals(&w, &snap.schema).into_iter().take(12) {
            for (r, a) in resources(&w, &snap) {
                let mut request = req(&p, &a, &r, now);
                // Now and then a target, so templates that show one are filled too.
                if r.len() % 3 == 0 {
                    request.target = Some(p.clone());
                }
                for x in &snap.check(&request).reasons {
                    let message = snap.reason_message(x, &request);
                    if Snapshot::message_is_fixed(x.code) {
                        kept += 1;
                        let first = fixed.entry((x.code as u8, x.rule)).or_insert_with(|| message.clone());
                        prop_assert_eq!(&*first, &message);
                    }
                    if let Some(t) = snap.reason_template(x) {
                        templated += 1;
                        let filled = t
                            .replace("\0p", &request.principal)
                            .replace("\0a", &request.action)
                            .replace("\0r", &request.resource)
                            .replace("\0t", request.target.as_deref().unwrap_or(""));
                        prop_assert_eq!(filled, message, "{:?}", x);
                    }
                }
            }
        }
        prop_assert!(templated > 0 && kept > 0, "templated {templated}, kept {kept}");
    }

    /// MX5, MX8: a user who has not accepted the invitation, or is deactivated, is denied
    /// everything of its account, with the gate as the one reason (what is of another
    /// account is unknown to it before any gate).
    #[test]
    fn inactive_users_are_denied_everything(seed in any::<u64>(), dt in -SPREAD..SPREAD) {
        let (w, snap) = build(seed);
        let now = EPOCH + dt;
        let facts = &w.facts;
        let inactive: Vec<String> = facts.entities.iter().filter(|e| e.ty == "user").filter(|e| {
            e.attrs.get("invitation").and_then(|v| v.as_str()) != Some("accepted")
                || e.attrs.get("status").and_then(|v| v.as_str()) != Some("active")
        }).map(|e| format!("user:{}", e.id)).collect();
        for p in &inactive {
            for (r, a) in resources(&w, &snap) {
                let ra = account_of(&snap, &r);
                if ra.is_some() && ra != account_of(&snap, p) {
                    continue;
                }
                let d = snap.check(&req(p, &a, &r, now));
                prop_assert!(!d.allowed, "inactive {p} may {a} {r}");
                let codes: Vec<String> = d.reasons.iter().map(|x| snap.code(x)).collect();
                prop_assert!(codes.len() == 1 && codes[0].starts_with("gate."), "{p} {a} {r}: {codes:?}");
            }
        }
    }

    /// A denial's reasons are every failed check, in order, whether or not the decision
    /// needed its explaining pass: `decide` equals the two-pass reference on every request.
    #[test]
    fn one_pass_denials_give_the_explaining_reasons(seed in any::<u64>(), dt in -SPREAD..SPREAD) {
        let (w, snap) = build(seed);
        let now = EPOCH + dt;
        let mut denials = 0usize;
        for p in principals(&w, &snap.schema) {
            for (r, a) in resources(&w, &snap) {
                let Ok(q) = snap.resolve(&req(&p, &a, &r, now)) else { continue };
                let (got, want) = (snap.decide(&q), snap.decide_reference(&q));
                denials += usize::from(!want.allowed);
                prop_assert_eq!(got, want, "{} {} {}", p, a, r);
            }
        }
        prop_assert!(denials > 0);
    }

    /// MX9: `explain` decides as `check` does (allowed, `valid_until`, the first reason)
    /// and gives the check's reasons, except past a failed gate, where it lists the
    /// failed gates first and then goes on (some explanations do).
    #[test]
    fn explain_decides_as_check_and_lists_past_the_gates(seed in any::<u64>(), dt in -SPREAD..SPREAD) {
        let (w, snap) = build(seed);
        let now = EPOCH + dt;
        let mut past_gates = 0usize;
        for p in principals(&w, &snap.schema) {
            for (r, a) in resources(&w, &snap) {
                let request = req(&p, &a, &r, now);
                let d = snap.view(&snap.check(&request), &request);
                let ex = snap.explain(&request).decision;
                prop_assert_eq!(ex.allowed, d.allowed, "{} {} {}", p, a, r);
                prop_assert_eq!(&ex.valid_until, &d.valid_until, "{} {} {}", p, a, r);
                let gated = d.reasons.first().is_some_and(|x| x.code.starts_with("gate."));
                if !gated {
                    prop_assert_eq!(&ex.reasons, &d.reasons, "{} {} {}", p, a, r);
                    continue;
                }
                prop_assert_eq!(ex.reasons.first(), d.reasons.first(), "{} {} {}", p, a, r);
                let gates: Vec<&str> = ex.reasons.iter().map(|x| x.code.as_str()).take_while(|c| c.starts_with("gate.")).collect();
                prop_assert!(!gates.is_empty());
                past_gates += usize::from(ex.reasons.len() > gates.len());
            }
        }
        prop_assert!(past_gates > 0, "no explanation went past a gate");
    }

    /// X2, MX10: `allowed_actions` lists exactly the actions `check` allows.
    #[test]
    fn allowed_actions_agree_with_check(seed in any::<u64>(), dt in -SPREAD..SPREAD) {
        let (w, snap) = build(seed);
        let now = EPOCH + dt;
        let mut resources: BTreeSet<String> = resources(&w, &snap).into_iter().map(|(r, _)| r).collect();
        resources.retain(|r| !r.starts_with("account:"));
        for p in principals(&w, &snap.schema) {
            for r in &resources {
                let got: BTreeSet<String> = snap.allowed_actions(&p, r, &TimeValue::Seconds(now)).unwrap_or_default().into_iter().collect();
                let want: BTreeSet<String> = snap.action_names(r).into_iter().filter(|a| snap.check(&req(&p, a, r, now)).allowed).collect();
                prop_assert_eq!(got, want, "{} on {}", p, r);
            }
        }
    }

    /// `list_resources` and `list_principals` agree with `check` exactly.
    #[test]
    fn listings_agree_with_check(seed in any::<u64>(), dt in -SPREAD..SPREAD) {
        let (w, snap) = build(seed);
        let now = EPOCH + dt;
        let t = TimeValue::Seconds(now);
        let principals = principals(&w, &snap.schema);
        let pairs = resources(&w, &snap);
        for (r, a) in &pairs {
            let got: BTreeSet<String> = snap.list_principals(r, a, &t, None).unwrap_or_else(|e| panic!("{e}")).into_iter().collect();
            let want: BTreeSet<String> = principals.iter().filter(|p| snap.check(&req(p, a, r, now)).allowed).cloned().collect();
            prop_assert_eq!(got, want, "list_principals({}, {})", r, a);
        }
        let types: BTreeSet<(String, String)> = pairs.iter().map(|(r, a)| (r.split(':').next().unwrap_or_default().to_string(), a.clone())).collect();
        for p in &principals {
            for (ty, a) in &types {
                let got: BTreeSet<String> = snap.list_resources(p, a, ty, &t).unwrap_or_else(|e| panic!("{e}")).into_iter().collect();
                let want: BTreeSet<String> = pairs.iter().filter(|(r, x)| x == a && r.split(':').next() == Some(ty.as_str()))
                    .filter(|(r, _)| snap.check(&req(p, a, r, now)).allowed).map(|(r, _)| r.clone()).collect();
                prop_assert_eq!(got, want, "list_resources({}, {}, {})", p, a, ty);
            }
        }
    }

    /// A snapshot decides the same after serialising and reloading it.
    #[test]
    fn snapshots_survive_serialisation(seed in any::<u64>(), dt in -SPREAD..SPREAD) {
        let (w, snap) = build(seed);
        let now = EPOCH + dt;
        let bytes = snap.to_bytes().unwrap_or_else(|e| panic!("{e}"));
        let back = Snapshot::from_bytes(&bytes).unwrap_or_else(|e| panic!("{e}"));
        prop_assert!(back.to_bytes().unwrap_or_default() == bytes, "a reloaded snapshot serialises to other bytes");
        for p in principals(&w, &snap.schema) {
            for (r, a) in resources(&w, &snap) {
                let q = req(&p, &a, &r, now);
                prop_assert_eq!(snap.check(&q), back.check(&q));
            }
        }
    }

    /// `valid_until` is honest: just before it the decision is unchanged, and a decision
    /// without it is the same at every later time of the world.
    #[test]
    fn valid_until_bounds_the_decision(seed in any::<u64>(), dt in -SPREAD..SPREAD) {
        let (w, snap) = build(seed);
        let now = EPOCH + dt;
        for p in principals(&w, &snap.schema) {
            for (r, a) in resources(&w, &snap) {
                let d = snap.check(&req(&p, &a, &r, now));
                let last = match d.valid_until { Some(u) => u - 1, None => EPOCH + 2 * SPREAD };
                for t in [now + 1, (now + last) / 2, last] {
                    if t >= now {
                        let later = snap.check(&req(&p, &a, &r, t));
                        prop_assert_eq!(later.allowed, d.allowed, "{} {} {} at {} vs {}", p, a, r, t, now);
                    }
                }
            }
        }
    }
}
