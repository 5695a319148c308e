//! Deltas applied in place ([`Snapshot::apply`]) decide as a snapshot built again from
//! the facts after the same deltas: over generated worlds and random delta lists (new
//! and removed entities, attributes set and cleared, tuples added, re-added with another
//! expiry and removed, roles changed, and lists that fail part-way), every principal's
//! every request is decided alike (allowed, reasons, `valid_until`), with the same
//! explanations, allowed actions, listings and matrices; a list that fails leaves the
//! snapshot's bytes exactly as they were, and fails when the rebuild fails (or, where
//! the rebuild checks only the end state, when a prefix of it fails the rebuild too).

use crate::generate::{EPOCH, SPREAD, WorldSize, attrs, pick, world};
use crate::slice::{members, pages, principals, requests, schema};
use clearance_core::policy::{LEVEL_ACTIONS, ValueType};
use clearance_core::{Delta, EntityJson, Facts, Schema, Snapshot, TimeValue, TupleJson};
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::sync::Arc;

const SIZE: WorldSize = WorldSize {
    accounts: 2,
    per_type: 3,
    fanout: 2,
};

/// A random delta against `facts` (most apply; some do not, on purpose).
fn delta(schema: &Schema, facts: &Facts, rng: &mut SmallRng, fresh: &mut u32) -> Delta {
    let keys: Vec<&String> = facts.entities.keys().collect();
    let tuples: Vec<_> = facts.tuples.keys().collect();
    let strings: Vec<String> = schema
        .literals
        .iter()
        .cloned()
        .chain(["x".to_string()])
        .collect();
    let roles: Vec<String> = schema.role_index.keys().cloned().collect();
    let entity = |rng: &mut SmallRng| (*pick(rng, &keys).unwrap()).clone();
    match rng.gen_range(0..100) {
        // A new entity of a random type in the account of a random entity.
        0..15 => {
            let of = &facts.entities[&entity(rng)];
            let types: Vec<&String> = schema
                .types
                .iter()
                .map(|t| &t.name)
                .filter(|t| *t != "account" && *t != "role")
                .collect();
            let ty = (*pick(rng, &types).unwrap()).clone();
            *fresh += 1;
            // Names that sort before, among and after the built ones.
            let id = match rng.gen_range(0..3) {
                0 => format!("a{fresh}"),
                1 => format!("{}_{ty}{fresh}", of.account),
                _ => format!("zz{fresh}"),
            };
            Delta::AddEntity {
                entity: EntityJson {
                    attrs: attrs(schema, &ty, rng, &strings, &roles),
                    ty,
                    id,
                    account: Some(of.account.clone()),
                },
            }
        }
        // A new account, now and then.
        15..17 => {
            *fresh += 1;
            Delta::AddEntity {
                entity: EntityJson {
                    ty: "account".into(),
                    id: format!("acct_new{fresh}"),
                    account: None,
                    attrs: attrs(schema, "account", rng, &strings, &roles),
                },
            }
        }
        17..25 => Delta::RemoveEntity {
            entity: entity(rng),
        },
        // An attribute set to a value of its type, cleared, or set to a wrong value.
        25..50 => {
            let key = entity(rng);
            let e = &facts.entities[&key];
            let t = schema.ty(schema.type_id(&e.ty).unwrap()).unwrap();
            let Some(a) = pick(rng, &t.attrs) else {
                return Delta::RemoveEntity { entity: key };
            };
            let value = match rng.gen_range(0..10) {
                0 => Value::Null,
                1 => json!({ "not": "a value" }),
                _ => attrs(schema, &e.ty, rng, &strings, &roles)
                    .remove(&a.name)
                    .unwrap_or(Value::Null),
            };
            let value = if a.name == "roles" && rng.gen_bool(0.1) {
                json!(["no_such_role"])
            } else {
                value
            };
            let _ = matches!(a.ty, ValueType::StrSet);
            Delta::SetAttr {
                entity: key,
                attr: a.name.clone(),
                value,
            }
        }
        // A tuple of a relation of the resource's type, to an entity of a target type,
        // mostly of the same account.
        50..80 => {
            let key = entity(rng);
            let e = &facts.entities[&key];
            let t = schema.ty(schema.type_id(&e.ty).unwrap()).unwrap();
            let Some(rel) = pick(rng, &t.rels) else {
                return Delta::RemoveEntity { entity: key };
            };
            let targets: Vec<String> = rel
                .targets
                .iter()
                .filter_map(|x| schema.ty(*x).map(|x| x.name.clone()))
                .collect();
            let cross = rng.gen_bool(0.05);
            let subjects: Vec<&String> = facts
                .entities
                .iter()
                .filter(|(_, s)| targets.contains(&s.ty) && (cross || s.account == e.account))
                .map(|(k, _)| k)
                .collect();
            let Some(subject) = pick(rng, &subjects) else {
                return Delta::RemoveEntity { entity: key };
            };
            Delta::AddTuple {
                tuple: TupleJson {
                    resource: key.clone(),
                    relation: rel.name.clone(),
                    subject: (*subject).clone(),
                    expires: rng
                        .gen_bool(0.3)
                        .then(|| TimeValue::Seconds(EPOCH + rng.gen_range(-SPREAD..SPREAD))),
                },
            }
        }
        // An existing tuple removed, or one that is not there.
        _ => match pick(rng, &tuples) {
            Some((r, rel, s)) if rng.gen_bool(0.95) => Delta::RemoveTuple {
                tuple: TupleJson {
                    resource: r.clone(),
                    relation: rel.clone(),
                    subject: s.clone(),
                    expires: None,
                },
            },
            _ => Delta::RemoveTuple {
                tuple: TupleJson {
                    resource: entity(rng),
                    relation: "member".into(),
                    subject: entity(rng),
                    expires: None,
                },
            },
        },
    }
}

/// Where `got` (applied in place) decides differently from `want` (built again).
fn differs(
    schema: &Arc<Schema>,
    facts: &Facts,
    want: &Snapshot,
    got: &Snapshot,
    nows: &[i64],
) -> Option<String> {
    if want.revision != got.revision || want.tuple_count() != got.tuple_count() {
        return Some(format!(
            "revision {} vs {}, tuples {} vs {}",
            want.revision,
            got.revision,
            want.tuple_count(),
            got.tuple_count()
        ));
    }
    for p in principals(schema, facts) {
        let account = &facts.entities[&p].account;
        for &now in nows {
            let t = TimeValue::Seconds(now);
            for r in requests(schema, want, facts, &p, now) {
                let (w, g) = (want.check(&r), got.check(&r));
                if w != g {
                    return Some(format!("{r:?}:\n  built   {w:?}\n  applied {g:?}"));
                }
                let (w, g) = (want.explain(&r), got.explain(&r));
                if w != g {
                    return Some(format!("explain {r:?}:\n  built   {w:?}\n  applied {g:?}"));
                }
            }
            for r in members(facts, account).cloned().chain(pages(schema)) {
                let (w, g) = (
                    want.allowed_actions(&p, &r, &t),
                    got.allowed_actions(&p, &r, &t),
                );
                if w != g {
                    return Some(format!("allowed_actions({p}, {r}): {w:?} vs {g:?}"));
                }
            }
            for td in &schema.types {
                for perm in td.perms.iter().filter(|x| x.target.is_none()) {
                    let (w, g) = (
                        want.list_resources(&p, &perm.name, &td.name, &t),
                        got.list_resources(&p, &perm.name, &td.name, &t),
                    );
                    if w != g {
                        return Some(format!(
                            "list_resources({p}, {}, {}): {w:?} vs {g:?}",
                            perm.name, td.name
                        ));
                    }
                }
            }
            for m in &schema.matrices {
                let actions: Vec<String> = if m.levels {
                    LEVEL_ACTIONS.iter().map(|a| a.to_string()).collect()
                } else {
                    m.actions.clone()
                };
                for a in actions {
                    let (w, g) = (
                        want.list_resources(&p, &a, &m.name, &t),
                        got.list_resources(&p, &a, &m.name, &t),
                    );
                    if w != g {
                        return Some(format!(
                            "list_resources({p}, {a}, {}): {w:?} vs {g:?}",
                            m.name
                        ));
                    }
                }
            }
        }
    }
    for r in facts.entities.keys().cloned().chain(pages(schema)) {
        for a in want.action_names(&r) {
            let t = TimeValue::Seconds(nows[0]);
            let (w, g) = (
                want.list_principals(&r, &a, &t, None),
                got.list_principals(&r, &a, &t, None),
            );
            if w != g {
                return Some(format!("list_principals({r}, {a}): {w:?} vs {g:?}"));
            }
        }
    }
    for m in &schema.matrices {
        let (w, g) = (want.matrix(&m.name, None), got.matrix(&m.name, None));
        if w != g {
            return Some(format!("matrix {}: {w:?} vs {g:?}", m.name));
        }
    }
    None
}

/// Applies `rounds` random delta lists to a generated world, in place and by rebuilding,
/// and compares them after each: the first difference.
fn run(seed: u64, rounds: usize, nows: &[i64]) -> Result<(usize, usize), String> {
    let schema = schema();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut facts = Facts::from_doc(world(&schema, seed, SIZE).facts).unwrap();
    let mut applied = Snapshot::build(Arc::clone(&schema), &facts).unwrap();
    let mut fresh = 0;
    let (mut ok, mut failed) = (0, 0);
    for round in 0..rounds {
        let n = rng.gen_range(1..5);
        let deltas: Vec<Delta> = (0..n)
            .map(|_| delta(&schema, &facts, &mut rng, &mut fresh))
            .collect();
        let rebuilt = facts
            .apply(&deltas)
            .and_then(|f| Snapshot::build(Arc::clone(&schema), &f).map(|s| (f, s)));
        let before = applied.to_bytes().unwrap();
        let result = applied.apply(&deltas);
        match (rebuilt, result) {
            (Ok((f, want)), Ok(())) => {
                if let Some(d) = differs(&schema, &f, &want, &applied, nows) {
                    return Err(format!("round {round}, after {deltas:?}:\n{d}"));
                }
                facts = f;
                ok += 1;
            }
            (Err(_), Err(_)) => {
                if applied.to_bytes().unwrap() != before {
                    return Err(format!(
                        "round {round}: {deltas:?} failed and changed the snapshot"
                    ));
                }
                failed += 1;
            }
            // In place, each delta is checked as it is applied; the facts check only what
            // is left at the end. So a list may apply to the facts but not in place when
            // a delta breaks a rule and a later one removes what broke it (a tuple across
            // accounts, then its subject removed): then the shortest prefix refused in
            // place is refused by a rebuild too.
            (Ok(_), Err(e)) => {
                let refused = (1..=deltas.len())
                    .find(|&k| applied.clone().apply(&deltas[..k]).is_err())
                    .unwrap_or(deltas.len());
                let prefix = &deltas[..refused];
                if facts
                    .apply(prefix)
                    .and_then(|f| Snapshot::build(Arc::clone(&schema), &f))
                    .is_ok()
                {
                    return Err(format!(
                        "round {round}: {prefix:?} applies to the facts but not in place: {} {e}",
                        e.code
                    ));
                }
                if applied.to_bytes().unwrap() != before {
                    return Err(format!(
                        "round {round}: {deltas:?} failed and changed the snapshot"
                    ));
                }
                failed += 1;
            }
            (Err(e), Ok(())) => {
                return Err(format!(
                    "round {round}: {deltas:?} applies in place but not to the facts: {} {e}",
                    e.code
                ));
            }
        }
    }
    // The bytes of a snapshot changed in place read back to the same decisions.
    let again = Snapshot::from_bytes(&applied.to_bytes().unwrap()).map_err(|e| e.to_string())?;
    let want = Snapshot::build(Arc::clone(&schema), &facts).unwrap();
    if let Some(d) = differs(&schema, &facts, &want, &again, nows) {
        return Err(format!("read back from bytes:\n{d}"));
    }
    Ok((ok, failed))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn deltas_applied_in_place_decide_as_a_rebuild(
        seed in any::<u64>(),
        dts in prop::collection::vec(-SPREAD..SPREAD, 2),
    ) {
        let nows: Vec<i64> = dts.iter().map(|dt| EPOCH + dt).collect();
        let r = run(seed, 30, &nows);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}

/// The generator makes lists that apply and lists that fail, so both paths are compared.
#[test]
fn the_delta_lists_both_apply_and_fail() {
    let (mut ok, mut failed) = (0, 0);
    for seed in 0..4 {
        let (o, f) = run(seed, 40, &[EPOCH]).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        ok += o;
        failed += f;
    }
    assert!(ok >= 30 && failed >= 10, "{ok} applied, {failed} failed");
}

/// A new organisation whose name sorts before one already assigned, both assigned to an
/// event with different expiries and both holding the same technician: a decision walks
/// them in name order, as a build numbers them, so the reasons and `valid_until` it gives
/// after the change in place are those a rebuild gives.
#[test]
fn a_new_subject_is_walked_in_name_order() {
    let schema = schema();
    let facts = crate::slice::demo_facts();
    let at = |s: &str| TimeValue::Text(s.into());
    let tuple = |r: &str, rel: &str, s: &str, expires: Option<&str>| Delta::AddTuple {
        tuple: TupleJson {
            resource: r.into(),
            relation: rel.into(),
            subject: s.into(),
            expires: expires.map(at),
        },
    };
    let deltas = vec![
        Delta::AddEntity {
            entity: EntityJson {
                ty: "organization".into(),
                id: "a_first".into(),
                account: Some("skyways".into()),
                attrs: [("kind".to_string(), json!("maintenance"))].into(),
            },
        },
        tuple("organization:a_first", "serves", "station:lhr", None),
        tuple(
            "organization:a_first",
            "member",
            "user:aeroserv_tech",
            Some("2026-05-01T12:00:00Z"),
        ),
        tuple(
            "event:aog_lhr",
            "assigned",
            "organization:a_first",
            Some("2026-05-01T14:00:00Z"),
        ),
        tuple(
            "event:aog_lhr",
            "assigned",
            "organization:aeroserv",
            Some("2026-05-01T16:00:00Z"),
        ),
    ];
    let mut applied = Snapshot::build(Arc::clone(&schema), &facts).unwrap();
    applied.apply(&deltas).unwrap();
    let after = facts.apply(&deltas).unwrap();
    let built = Snapshot::build(Arc::clone(&schema), &after).unwrap();
    for now in [
        "2026-05-01T10:00:00Z",
        "2026-05-01T13:00:00Z",
        "2026-05-01T15:00:00Z",
    ] {
        for action in ["view", "update", "message"] {
            let r = clearance_core::Request {
                principal: "user:aeroserv_tech".into(),
                action: action.into(),
                resource: "event:aog_lhr".into(),
                target: None,
                now: at(now),
            };
            assert_eq!(applied.check(&r), built.check(&r), "{r:?}");
            assert_eq!(applied.explain(&r), built.explain(&r), "{r:?}");
        }
    }
    let differs = differs(
        &schema,
        &after,
        &built,
        &applied,
        &[EPOCH, EPOCH + 13 * 3_600],
    );
    assert!(differs.is_none(), "{}", differs.unwrap_or_default());
}

/// A list that adds a tuple across accounts and then removes its subject applies to the
/// facts (nothing is left across accounts at the end) but not in place (the tuple is
/// refused as it is applied): the rebuild refuses the same list cut after the tuple, so
/// the two agree on what is a bad delta. Found by the property test above.
#[test]
fn a_delta_refused_in_place_is_refused_by_a_rebuild_of_its_prefix() {
    let r = run(8903089596620363113, 30, &[EPOCH + 700_529, EPOCH - 231_140]);
    assert!(r.is_ok(), "{}", r.unwrap_err());
}

/// Follows every principal's slice through `rounds` random changes by the projected
/// deltas ([`Reads::project`]): each followed change leaves the follower's facts equal
/// to the slice cut after it, and a snapshot built from them decides as that slice.
/// Answers the changes followed and those that asked for a refetch.
fn follow(seed: u64, rounds: usize) -> Result<(usize, usize), String> {
    use clearance_core::slice::{Projected, Reads};
    let schema = schema();
    let reads = Reads::of(&schema);
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut facts = Facts::from_doc(world(&schema, seed, SIZE).facts).unwrap();
    let mut followers: Vec<(String, Facts)> = principals(&schema, &facts)
        .into_iter()
        .map(|p| {
            let slice = reads.slice(&schema, &facts, &p).unwrap();
            (p, Facts::from_doc(slice).unwrap())
        })
        .collect();
    let mut fresh = 0;
    let (mut followed, mut refetched) = (0, 0);
    for round in 0..rounds {
        let n = rng.gen_range(1..5);
        let deltas: Vec<Delta> = (0..n)
            .map(|_| delta(&schema, &facts, &mut rng, &mut fresh))
            .collect();
        let Ok(after) = facts.apply(&deltas) else {
            continue;
        };
        if Snapshot::build(Arc::clone(&schema), &after).is_err() {
            continue;
        }
        let account_of = |k: &str| {
            facts
                .entities
                .get(k)
                .or_else(|| after.entities.get(k))
                .map(|e| e.account.clone())
        };
        let mut next = Vec::new();
        for (p, mut mine) in followers {
            let Some(account) = after.entities.get(&p).map(|e| e.account.clone()) else {
                continue;
            };
            let want = reads.slice(&schema, &after, &p).unwrap();
            match reads.project(&schema, &p, &account, &deltas, account_of) {
                Projected::Deltas(ds) => {
                    mine.extend(&ds).map_err(|e| {
                        format!("round {round}, {p}: {ds:?} from {deltas:?} do not apply: {e}")
                    })?;
                    mine.revision = want.revision;
                    let want = Facts::from_doc(want).unwrap();
                    if mine != want {
                        return Err(format!(
                            "round {round}, {p}: {deltas:?} projected as {ds:?} leave\n{:?}\nnot the slice\n{:?}",
                            mine.to_doc(),
                            want.to_doc()
                        ));
                    }
                    Snapshot::build(Arc::clone(&schema), &mine).map_err(|e| {
                        format!("round {round}, {p}: the followed slice does not build: {e}")
                    })?;
                    followed += 1;
                    next.push((p, mine));
                }
                Projected::Refetch(_) => {
                    refetched += 1;
                    next.push((p, Facts::from_doc(want).unwrap()));
                }
            }
        }
        followers = next;
        facts = after;
    }
    Ok((followed, refetched))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// A slice followed by the projected deltas of every change is the slice cut after
    /// it (or the change asks for a refetch).
    #[test]
    fn a_slice_followed_by_projected_deltas_is_the_slice_after(seed in any::<u64>()) {
        let r = follow(seed, 40);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}

/// Most changes are followed, not refetched: the projection is not "always refetch".
#[test]
fn most_changes_are_followed_by_deltas() {
    let (mut followed, mut refetched) = (0, 0);
    for seed in 0..4 {
        let (f, r) = follow(seed, 40).unwrap_or_else(|e| panic!("{e}"));
        followed += f;
        refetched += r;
    }
    assert!(
        followed > 4 * refetched,
        "{followed} followed, {refetched} refetched"
    );
}

/// Applies `deltas` one by one the plain way: an entity removed takes every tuple naming
/// it, found by a pass over all of them.
fn extend_plainly(f: &mut Facts, deltas: &[Delta]) -> Result<(), String> {
    for d in deltas {
        match d.clone() {
            Delta::AddEntity { entity } => f.add_entity(entity, "-").map_err(|e| e.to_string())?,
            Delta::RemoveEntity { entity } => {
                f.entities.remove(&entity).ok_or("no entity")?;
                f.tuples.retain(|(r, _, s), _| *r != entity && *s != entity);
            }
            Delta::SetAttr {
                entity,
                attr,
                value,
            } => {
                let e = f.entities.get_mut(&entity).ok_or("no entity")?;
                if value.is_null() {
                    e.attrs.remove(&attr);
                } else {
                    e.attrs.insert(attr, value);
                }
            }
            Delta::AddTuple { tuple } => f.add_tuple(tuple, "-").map_err(|e| e.to_string())?,
            Delta::RemoveTuple { tuple } => {
                f.tuples
                    .remove(&(tuple.resource, tuple.relation, tuple.subject))
                    .ok_or("no tuple")?;
            }
        }
    }
    Ok(())
}

/// A group of changes applied with the removals found once before the group equals the
/// same changes applied plainly, change by change. The host finds them under a read lock
/// and holds the write lock only to apply.
fn removals_found_beforehand(seed: u64, changes: usize) -> Result<usize, String> {
    let schema = schema();
    let mut rng = SmallRng::seed_from_u64(seed);
    let start = Facts::from_doc(world(&schema, seed, SIZE).facts).unwrap();
    let mut plain = start.clone();
    let mut fresh = 0;
    let mut group: Vec<Vec<Delta>> = Vec::new();
    while group.len() < changes {
        let n = rng.gen_range(1..5);
        let mut deltas: Vec<Delta> = (0..n)
            .map(|_| delta(&schema, &plain, &mut rng, &mut fresh))
            .collect();
        // A tuple naming a subject, then that subject removed, in the same change.
        if rng.gen_bool(0.3)
            && let Some(((r, rel, s), _)) = plain
                .tuples
                .iter()
                .nth(rng.gen_range(0..plain.tuples.len().max(1)))
        {
            deltas.push(Delta::RemoveEntity { entity: s.clone() });
            let _ = (r, rel);
        }
        let mut next = plain.clone();
        if extend_plainly(&mut next, &deltas).is_ok() {
            plain = next;
            group.push(deltas);
        }
    }
    let mut found = start.removals(group.iter().map(Vec::as_slice));
    let mut applied = start;
    for (i, deltas) in group.iter().enumerate() {
        applied
            .extend_found(deltas, &mut found)
            .map_err(|e| format!("change {i}: {deltas:?}: {e}"))?;
    }
    if applied.entities != plain.entities {
        return Err("the entities differ".into());
    }
    if applied.tuples != plain.tuples {
        let extra: Vec<_> = applied
            .tuples
            .keys()
            .filter(|k| !plain.tuples.contains_key(*k))
            .collect();
        let missing: Vec<_> = plain
            .tuples
            .keys()
            .filter(|k| !applied.tuples.contains_key(*k))
            .collect();
        return Err(format!(
            "the tuples differ: kept {extra:?}, lost {missing:?}\nafter {group:?}"
        ));
    }
    let removed = group
        .iter()
        .flatten()
        .filter(|d| matches!(d, Delta::RemoveEntity { .. }))
        .count();
    Ok(removed)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn removals_found_before_a_group_apply_as_plain_removals(seed in any::<u64>()) {
        let r = removals_found_beforehand(seed, 12);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}

/// The groups compared remove entities (the comparison is not vacuous).
#[test]
fn the_groups_compared_remove_entities() {
    let removed: usize = (0..4)
        .map(|seed| removals_found_beforehand(seed, 12).unwrap_or_else(|e| panic!("{e}")))
        .sum();
    assert!(removed >= 8, "{removed} entities removed");
}
