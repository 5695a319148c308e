//! Non-interference between tenants (issue 29): whatever a principal of account A asks,
//! the answer does not depend on facts it is not scoped to. Each case generates one world
//! of three accounts, A, B and C, and then a second B part; the two worlds share A's and
//! C's parts and differ only in B's (other entities, attributes, tuples and custom roles,
//! some ids present in one and not the other, and now and then no B at all). For every
//! principal of A, its checks and explanations (of its own entities, of its account's
//! pages and of every id of B's pool, guessed as an attacker would), its gates, allowed
//! actions, listings, access-rights matrices, slice, and the answers to random writes it
//! authors (then rolled back), with what a follower of each of A's principals' slices
//! takes from them, must be byte-identical JSON in the two worlds.
//!
//! What the answers may say about an entity outside the principal's account is what they
//! say about one that does not exist: a write naming one is refused before anything is
//! applied, with one fixed message that does not tell whether it exists, and a refused
//! write answers with the refusal alone. The properties assert that the two worlds agree,
//! not which code they agree on.
//!
//! One difference is allowed, and kept out of the writes generated: an `add_entity` whose
//! id another account already holds. Entity ids are one namespace per type across
//! accounts (review finding 11), so creating `invitee:x` must fail when B holds
//! `invitee:x` and may succeed when it does not; the generated `add_entity` deltas take
//! ids from A's own pool and fresh ids only. (Every other delta may name B's ids.)
//!
//! `list_principals` is asked only of A's resources and of pages for account A: users
//! may not list principals, and a key of A is refused another account's resources by
//! the host before the core answers.

use crate::generate::{EPOCH, SPREAD, WorldSize, pick, world};
use crate::random_deltas::{self, Pools, type_of};
use crate::slice::{pages, schema};
use clearance_core::facts::FactsJson;
use clearance_core::policy::LEVEL_ACTIONS;
use clearance_core::protocol::Actions;
use clearance_core::slice::Reads;
use clearance_core::writes::{WriteError, write};
use clearance_core::{
    Delta, EntityJson, Facts, Request, Schema, Snapshot, TimeValue, TupleJson, principal_slice,
};
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The account whose principals ask.
const A: &str = "acct0";
/// The account whose part differs between the two worlds.
const B: &str = "acct1";

const SIZE: WorldSize = WorldSize {
    accounts: 3,
    per_type: 2,
    fanout: 2,
};

/// The revision of both worlds (a generated world's own is random).
const REVISION: u64 = 7;

/// Custom roles an account may define: matrix and cells.
const CUSTOM_ROLES: [(&str, &[&str]); 3] = [
    (
        "operations",
        &["timeline:read", "bookings:read", "dispatch:read"],
    ),
    ("maintenance", &["work_packages:view+edit+approve"]),
    ("operations", &["reports:none", "timeline:read"]),
];

/// The two worlds of a case, and what A's principals may name.
struct Tenants {
    /// A's and C's parts with the first B part, then with the second.
    facts: [Facts; 2],
    snaps: [Snapshot; 2],
    /// A's principals.
    principals: Vec<String>,
    /// A's entities.
    a_names: Vec<String>,
    /// Every id of B's pool: every name B's entities take in either world.
    b_pool: Vec<String>,
    /// Random writes: what they may name.
    pools: Pools,
}

/// The entities and tuples of `account` in a generated world.
fn part(doc: &FactsJson, account: &str) -> (Vec<EntityJson>, Vec<TupleJson>) {
    let entities: Vec<EntityJson> = doc
        .entities
        .iter()
        .filter(|e| e.account.as_deref() == Some(account) || (e.ty == "account" && e.id == account))
        .cloned()
        .collect();
    let names: BTreeSet<String> = entities
        .iter()
        .map(|e| format!("{}:{}", e.ty, e.id))
        .collect();
    let tuples = doc
        .tuples
        .iter()
        .filter(|t| names.contains(&t.resource))
        .cloned()
        .collect();
    (entities, tuples)
}

/// Custom roles for `account` (`role:<account>_role<i>`), some of them held by its users.
fn custom_roles(rng: &mut SmallRng, account: &str, entities: &mut Vec<EntityJson>, all: bool) {
    for (i, (matrix, cells)) in CUSTOM_ROLES.iter().enumerate() {
        if !all && rng.gen_bool(0.5) {
            continue;
        }
        let name = format!("{account}_role{i}");
        entities.push(EntityJson {
            ty: "role".into(),
            id: name.clone(),
            account: Some(account.into()),
            attrs: BTreeMap::from([
                ("matrix".to_string(), json!(matrix)),
                ("cells".to_string(), json!(cells)),
            ]),
        });
        for e in entities.iter_mut().filter(|e| e.ty == "user") {
            if rng.gen_bool(0.4)
                && let Some(Value::Array(roles)) = e.attrs.get_mut("roles")
            {
                roles.push(json!(name));
            }
        }
    }
}

/// B's part from `seed`: a generated account B with entities left out at random, or
/// now and then no B at all.
fn b_part(schema: &Schema, seed: u64) -> (Vec<EntityJson>, Vec<TupleJson>) {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed_b0b0);
    if rng.gen_bool(0.15) {
        return (Vec::new(), Vec::new());
    }
    let (mut entities, tuples) = part(&world(schema, seed, SIZE).facts, B);
    let drop = rng.gen_range(0.0..0.5);
    entities.retain(|e| e.ty == "account" || !rng.gen_bool(drop));
    custom_roles(&mut rng, B, &mut entities, false);
    let names: BTreeSet<String> = entities
        .iter()
        .map(|e| format!("{}:{}", e.ty, e.id))
        .collect();
    let tuples = tuples
        .into_iter()
        .filter(|t| names.contains(&t.resource) && names.contains(&t.subject))
        .collect();
    (entities, tuples)
}

/// The two worlds for A's seed and two B seeds, or why they do not build.
fn tenants(seed: u64, b_seeds: [u64; 2]) -> Result<Tenants, String> {
    let schema = schema();
    let base = world(&schema, seed, SIZE).facts;
    let mut rng = SmallRng::seed_from_u64(seed ^ 0xa11ce);
    let (mut a_entities, a_tuples) = part(&base, A);
    custom_roles(&mut rng, A, &mut a_entities, true);
    let (c_entities, c_tuples) = part(&base, "acct2");
    let mut b_pool: BTreeSet<String> = part(&world(&schema, b_seeds[0], SIZE).facts, B)
        .0
        .iter()
        .map(|e| format!("{}:{}", e.ty, e.id))
        .collect();
    b_pool.extend((0..CUSTOM_ROLES.len()).map(|i| format!("role:{B}_role{i}")));
    let mut facts = Vec::new();
    let mut b_tuples = Vec::new();
    for &b in &b_seeds {
        let (b_entities, bt) = b_part(&schema, b);
        b_tuples.extend(bt.iter().cloned());
        let doc = FactsJson {
            revision: REVISION,
            entities: a_entities
                .iter()
                .chain(&c_entities)
                .chain(&b_entities)
                .cloned()
                .collect(),
            tuples: a_tuples
                .iter()
                .chain(&c_tuples)
                .chain(&bt)
                .cloned()
                .collect(),
            omitted: BTreeMap::new(),
            counts: Vec::new(),
        };
        facts.push(Facts::from_doc(doc).map_err(|e| format!("facts: {e}"))?);
    }
    let facts: [Facts; 2] = facts.try_into().map_err(|_| "two worlds".to_string())?;
    let snaps = [
        Snapshot::build(Arc::clone(&schema), &facts[0]).map_err(|e| format!("{} {e}", e.code))?,
        Snapshot::build(Arc::clone(&schema), &facts[1]).map_err(|e| format!("{} {e}", e.code))?,
    ];
    let a_names: Vec<String> = a_entities
        .iter()
        .map(|e| format!("{}:{}", e.ty, e.id))
        .collect();
    let principals = a_entities
        .iter()
        .filter(|e| {
            schema
                .type_id(&e.ty)
                .and_then(|t| schema.ty(t))
                .is_some_and(|t| t.principal)
        })
        .map(|e| format!("{}:{}", e.ty, e.id))
        .collect();
    let b_pool: Vec<String> = b_pool.into_iter().collect();
    let roles = schema
        .role_index
        .keys()
        .cloned()
        .chain(
            (0..CUSTOM_ROLES.len()).flat_map(|i| [format!("{A}_role{i}"), format!("{B}_role{i}")]),
        )
        .collect();
    let account_of = a_names
        .iter()
        .map(|n| (n.clone(), A.to_string()))
        .chain([("account:acct2".to_string(), "acct2".to_string())])
        .collect();
    let pools = Pools {
        account_of,
        names: a_names
            .iter()
            .chain(&b_pool)
            .cloned()
            .chain(["account:acct2".to_string()])
            .collect(),
        // A's own pool (some taken, some free) and fresh ids: never B's (see above).
        new_ids: vec![
            format!("{A}_{{ty}}0"),
            format!("{A}_{{ty}}7"),
            "new0".into(),
            "new1".into(),
        ],
        accounts: vec![A.into(), A.into(), A.into(), B.into()],
        tuples: a_tuples.iter().chain(&b_tuples).cloned().collect(),
        roles,
        strings: schema
            .literals
            .iter()
            .cloned()
            .chain(["x".to_string()])
            .collect(),
    };
    Ok(Tenants {
        facts,
        snaps,
        principals,
        a_names,
        b_pool,
        pools,
    })
}

/// The actions a request may name on `resource` (whether or not it exists): its type's
/// permissions, with their target's type, or a page's matrix's actions; and one unknown.
fn actions_of(schema: &Schema, resource: &str) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    let ty = type_of(resource);
    if let Some(td) = schema.type_id(ty).and_then(|t| schema.ty(t)) {
        for p in &td.perms {
            let target = p.target.and_then(|t| schema.ty(t)).map(|t| t.name.clone());
            out.push((p.name.clone(), target));
        }
    } else if let Some(m) = schema
        .matrix_index
        .get(ty)
        .and_then(|&m| schema.matrices.get(m as usize))
    {
        let actions: Vec<String> = if m.levels {
            LEVEL_ACTIONS.iter().map(|a| a.to_string()).collect()
        } else {
            m.actions.clone()
        };
        out.extend(actions.into_iter().map(|a| (a, None)));
    }
    out.push(("no_such_action".into(), None));
    out
}

/// Every request `p` can make: on A's entities, A's pages and B's pool, each action,
/// with each entity of A and of B's pool of the target's type as target.
fn requests(schema: &Schema, t: &Tenants, p: &str, now: i64) -> Vec<Request> {
    let mut out = Vec::new();
    let named: Vec<&String> = t.a_names.iter().chain(&t.b_pool).collect();
    let resources = named.iter().map(|s| s.to_string()).chain(pages(schema));
    for r in resources {
        for (action, target) in actions_of(schema, &r) {
            let req = |target: Option<String>| Request {
                principal: p.into(),
                action: action.clone(),
                resource: r.clone(),
                target,
                now: TimeValue::Seconds(now),
            };
            match &target {
                None => out.push(req(None)),
                Some(tt) => {
                    for x in named.iter().filter(|x| type_of(x) == tt) {
                        out.push(req(Some(x.to_string())));
                    }
                }
            }
        }
    }
    out
}

/// What is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    /// Checks, explanations and gates.
    Decisions,
    /// Allowed actions.
    AllowedActions,
    /// Listed resources and principals, matrices.
    Listings,
    /// The principal's slice.
    Slice,
}

fn text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("unserialisable: {e}"))
}

fn result<T: serde::Serialize>(r: Result<T, clearance_core::ErrorData>) -> String {
    match r {
        Ok(v) => text(&json!({ "ok": v })),
        Err(e) => text(&json!({ "error": e })),
    }
}

/// The answers to `asked` for principal `p` in world `w`: (call, answer) pairs.
fn answers(
    schema: &Schema,
    t: &Tenants,
    w: usize,
    asked: Asked,
    p: &str,
    reqs: &[Request],
    now: i64,
) -> Vec<(String, String)> {
    let snap = &t.snaps[w];
    let at = TimeValue::Seconds(now);
    let mut out = Vec::new();
    match asked {
        Asked::Decisions => {
            let gates = snap.gates(p, &at);
            let req = Request {
                principal: p.into(),
                action: String::new(),
                resource: p.into(),
                target: None,
                now: at.clone(),
            };
            out.push((format!("gates {p}"), text(&snap.view(&gates, &req))));
            for r in reqs {
                let call = format!("{} {} {} {:?}", r.principal, r.action, r.resource, r.target);
                out.push((format!("check {call}"), text(&snap.view(&snap.check(r), r))));
                out.push((format!("explain {call}"), text(&snap.explain(r))));
            }
        }
        Asked::AllowedActions => {
            let resources = t
                .a_names
                .iter()
                .chain(&t.b_pool)
                .cloned()
                .chain(pages(schema));
            for r in resources {
                let answer = match snap.allowed_actions(p, &r, &at) {
                    Ok(actions) => Actions {
                        actions,
                        denied: None,
                    },
                    Err(d) => {
                        let req = Request {
                            principal: p.into(),
                            action: String::new(),
                            resource: r.clone(),
                            target: None,
                            now: at.clone(),
                        };
                        Actions {
                            actions: Vec::new(),
                            denied: Some(snap.view(&d, &req)),
                        }
                    }
                };
                out.push((format!("allowed_actions {p} {r}"), text(&answer)));
            }
        }
        Asked::Listings => {
            for td in &schema.types {
                for perm in td
                    .perms
                    .iter()
                    .map(|x| x.name.as_str())
                    .chain(["no_such_action"])
                {
                    out.push((
                        format!("list_resources {p} {perm} {}", td.name),
                        result(snap.list_resources(p, perm, &td.name, &at)),
                    ));
                }
            }
            for m in &schema.matrices {
                for (a, _) in actions_of(schema, &format!("{}:x", m.name)) {
                    out.push((
                        format!("list_resources {p} {a} {}", m.name),
                        result(snap.list_resources(p, &a, &m.name, &at)),
                    ));
                }
                for account in [Some(A), None] {
                    out.push((
                        format!("matrix {} {account:?}", m.name),
                        result(snap.matrix(&m.name, account)),
                    ));
                }
            }
            // As a key of A asks: A's resources, and A's pages.
            for r in t.a_names.iter().cloned().chain(pages(schema)) {
                let page = !t.a_names.contains(&r);
                for (a, target) in actions_of(schema, &r) {
                    if target.is_some() {
                        continue;
                    }
                    let account = page.then_some(A);
                    out.push((
                        format!("list_principals {r} {a} {account:?}"),
                        result(snap.list_principals(&r, &a, &at, account)),
                    ));
                }
            }
        }
        Asked::Slice => {
            let slice =
                principal_slice(schema, &t.facts[w], p).map_err(clearance_core::ErrorData::from);
            out.push((format!("slice {p}"), result(slice)));
        }
    }
    out
}

/// The codes an answer carries, to tell differences apart.
fn codes(answer: &str) -> BTreeSet<String> {
    answer
        .match_indices("\"code\":\"")
        .filter_map(|(i, m)| {
            let rest = answer.get(i + m.len()..)?;
            rest.split('"').next().map(str::to_string)
        })
        .collect()
}

/// The answers that differ between the two worlds, up to a few of each kind (the call's
/// first word and the codes of the two answers), described.
fn differences(a: &[(String, String)], b: &[(String, String)]) -> Vec<String> {
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for ((call, x), (call2, y)) in a.iter().zip(b) {
        assert_eq!(call, call2, "the same calls in both worlds");
        if x == y {
            continue;
        }
        let verb = call.split(' ').next().unwrap_or_default();
        let kind = format!("{verb} {:?} vs {:?}", codes(x), codes(y));
        let seen = kinds.entry(kind.clone()).or_default();
        *seen += 1;
        if *seen == 1 {
            out.push(format!(
                "[{kind}]\n  call: {call}\n  world 1: {x}\n  world 2: {y}"
            ));
        }
    }
    if a.len() != b.len() {
        out.push(format!("{} answers vs {}", a.len(), b.len()));
    }
    out
}

fn compare(t: &Tenants, asked: Asked, now: i64) -> Result<usize, String> {
    let schema = schema();
    let mut compared = 0;
    for p in &t.principals {
        let reqs = if asked == Asked::Decisions {
            requests(&schema, t, p, now)
        } else {
            Vec::new()
        };
        let one = answers(&schema, t, 0, asked, p, &reqs, now);
        let two = answers(&schema, t, 1, asked, p, &reqs, now);
        compared += one.len();
        let diff = differences(&one, &two);
        if !diff.is_empty() {
            return Err(format!(
                "{asked:?} of `{p}` differ between the worlds:\n{}",
                diff.join("\n")
            ));
        }
    }
    Ok(compared)
}

/// What answering a write needs besides the world: the policy, its reads, the
/// followers (A's principals) and the time.
struct Writing<'a> {
    schema: &'a Schema,
    reads: &'a Reads,
    followers: &'a [String],
    now: &'a TimeValue,
}

impl Writing<'_> {
    /// The answer to a write by `author` on `snap` (rolled back), as the protocol gives
    /// it, with what a follower of each of A's principals' slices takes from an allowed
    /// one; `facts` are the snapshot's.
    fn answer(&self, snap: &mut Snapshot, facts: &Facts, author: &str, deltas: &[Delta]) -> String {
        match write(snap, author, self.now, deltas) {
            Ok((pending, derived)) => {
                let revision = snap.revision;
                snap.rollback(pending);
                let change: Vec<Delta> = deltas.iter().chain(&derived).cloned().collect();
                let account_of = |name: &str| facts.entities.get(name).map(|e| e.account.clone());
                let feeds: Vec<String> = self
                    .followers
                    .iter()
                    .map(|f| {
                        let account = facts
                            .entities
                            .get(f)
                            .map(|e| e.account.as_str())
                            .unwrap_or_default();
                        format!(
                            "{:?}",
                            self.reads
                                .project(self.schema, f, account, &change, account_of)
                        )
                    })
                    .collect();
                text(
                    &json!({ "allowed": true, "derived": derived, "revision": revision, "feeds": feeds }),
                )
            }
            Err(WriteError::Refused(r)) => text(&json!({ "allowed": false, "refusal": r })),
            Err(WriteError::Invalid(e)) => text(&json!({ "allowed": false, "error": e })),
        }
    }
}

/// `deltas` with deltas left out for as long as `still` holds: a shorter list that
/// shows the same difference.
fn minimise(mut deltas: Vec<Delta>, still: &mut dyn FnMut(&[Delta]) -> bool) -> Vec<Delta> {
    let mut i = deltas.len();
    while i > 0 {
        i -= 1;
        if deltas.len() > 1 {
            let mut shorter = deltas.clone();
            shorter.remove(i);
            if still(&shorter) {
                deltas = shorter;
                i = i.min(deltas.len());
            }
        }
    }
    deltas
}

/// Random writes by each of A's principals: the same answers in both worlds (when
/// `stop`, the first difference, its deltas cut down), and how many were allowed in the
/// first.
fn compare_writes(
    t: &Tenants,
    seed: u64,
    now: i64,
    per_principal: usize,
    stop: bool,
) -> Result<usize, String> {
    let schema = schema();
    let reads = Reads::of(&schema);
    let mut rng = SmallRng::seed_from_u64(seed);
    let at = TimeValue::Seconds(now);
    let mut snaps = [t.snaps[0].clone(), t.snaps[1].clone()];
    let writing = Writing {
        schema: &schema,
        reads: &reads,
        followers: &t.principals,
        now: &at,
    };
    let mut allowed = 0;
    for p in &t.principals {
        for _ in 0..per_principal {
            let deltas = random_deltas::deltas(&mut rng, &schema, &t.pools, Some(A), 4);
            let [s0, s1] = &mut snaps;
            let mut answer = |deltas: &[Delta]| {
                (
                    writing.answer(s0, &t.facts[0], p, deltas),
                    writing.answer(s1, &t.facts[1], p, deltas),
                )
            };
            let (x, y) = answer(&deltas);
            allowed += usize::from(x.starts_with("{\"allowed\":true"));
            if x == y || !stop {
                continue;
            }
            let small = minimise(deltas, &mut |d| {
                let (x, y) = answer(d);
                x != y
            });
            let (x, y) = answer(&small);
            return Err(format!(
                "a write by `{p}` is answered differently in the two worlds:\n  deltas: {}\n  world 1: {x}\n  world 2: {y}",
                text(&small)
            ));
        }
    }
    Ok(allowed)
}

/// Random writes made inside B (by B's principals, naming B's pool): a follower of any of
/// A's principals' slices takes nothing of them, in either world. The number of changes
/// made in B, or the first that a follower of A takes something of.
fn b_writes_reach_no_follower_of_a(t: &Tenants, seed: u64, now: i64) -> Result<usize, String> {
    let schema = schema();
    let reads = Reads::of(&schema);
    let mut rng = SmallRng::seed_from_u64(seed ^ 0xfeed);
    let at = TimeValue::Seconds(now);
    let mut changes = 0;
    for w in 0..2 {
        let facts = &t.facts[w];
        let mut snap = t.snaps[w].clone();
        // B's principals who pass their gates: the others are refused everything.
        let b_principals: Vec<String> = facts
            .entities
            .iter()
            .filter(|(k, e)| e.account == B && snap.gates(k, &at).allowed)
            .map(|(k, _)| k.clone())
            .collect();
        let pools = Pools {
            names: facts
                .entities
                .iter()
                .filter(|(_, e)| e.account == B)
                .map(|(k, _)| k.clone())
                .collect(),
            account_of: facts
                .entities
                .iter()
                .filter(|(_, e)| e.account == B)
                .map(|(k, e)| (k.clone(), e.account.clone()))
                .collect(),
            new_ids: vec!["bnew0".into(), "bnew1".into()],
            accounts: vec![B.into()],
            tuples: Vec::new(),
            ..t.pools.clone()
        };
        for _ in 0..60 {
            let Some(author) = pick(&mut rng, &b_principals).cloned() else {
                break;
            };
            let deltas = random_deltas::deltas(&mut rng, &schema, &pools, Some(B), 3);
            let Ok((pending, derived)) = write(&mut snap, &author, &at, &deltas) else {
                continue;
            };
            snap.rollback(pending);
            let change: Vec<Delta> = deltas.iter().chain(&derived).cloned().collect();
            let account_of = |name: &str| facts.entities.get(name).map(|e| e.account.clone());
            changes += 1;
            for f in &t.principals {
                let got = reads.project(&schema, f, A, &change, account_of);
                if got != clearance_core::slice::Projected::Deltas(Vec::new()) {
                    return Err(format!(
                        "world {}: `{f}` follows a change made in B by `{author}`:\n  deltas: {}\n  takes: {got:?}",
                        w + 1,
                        text(&change)
                    ));
                }
            }
        }
    }
    Ok(changes)
}

/// The generated worlds are not vacuous: A's principals do get some allows, B's two parts
/// do differ, and A's writes, and B's, are sometimes allowed.
#[test]
fn the_two_worlds_differ_in_b_only_and_are_not_vacuous() {
    let schema = schema();
    let (mut allowed, mut differ, mut writes, mut b_changes) = (0, 0, 0, 0);
    for seed in 0..6u64 {
        let spread = |n: u64| n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let t = tenants(seed, [spread(seed + 100), spread(seed + 200)])
            .unwrap_or_else(|e| panic!("{e}"));
        let a_of = |f: &Facts| -> BTreeMap<String, _> {
            f.entities
                .iter()
                .filter(|(_, e)| e.account != B)
                .map(|(k, e)| (k.clone(), e.clone()))
                .collect()
        };
        assert_eq!(a_of(&t.facts[0]), a_of(&t.facts[1]));
        differ += usize::from(t.facts[0] != t.facts[1]);
        for p in &t.principals {
            for r in requests(&schema, &t, p, EPOCH) {
                allowed += usize::from(t.snaps[0].check(&r).allowed);
            }
        }
        writes += compare_writes(&t, seed, EPOCH, 40, false).unwrap_or_else(|e| panic!("{e}"));
        b_changes +=
            b_writes_reach_no_follower_of_a(&t, seed, EPOCH).unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(
        allowed > 0 && differ >= 5 && writes > 0 && b_changes > 0,
        "allowed {allowed}, differ {differ}, writes {writes}, changes in B {b_changes}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 8, ..ProptestConfig::default() })]

    /// Checks, explanations and gates of A's principals, on A's entities and pages and on
    /// every id of B's pool (as resource and as target).
    #[test]
    fn decisions_do_not_depend_on_another_account(seed in any::<u64>(), b in any::<[u64; 2]>(), dt in -SPREAD..SPREAD) {
        let t = tenants(seed, b).map_err(TestCaseError::fail)?;
        compare(&t, Asked::Decisions, EPOCH + dt).map_err(TestCaseError::fail)?;
    }

    /// The actions A's principals may take on A's entities, pages and B's pool.
    #[test]
    fn allowed_actions_do_not_depend_on_another_account(seed in any::<u64>(), b in any::<[u64; 2]>(), dt in -SPREAD..SPREAD) {
        let t = tenants(seed, b).map_err(TestCaseError::fail)?;
        compare(&t, Asked::AllowedActions, EPOCH + dt).map_err(TestCaseError::fail)?;
    }

    /// Listed resources of every type and matrix, listed principals of A's resources and
    /// pages, and A's access-rights matrices.
    #[test]
    fn listings_do_not_depend_on_another_account(seed in any::<u64>(), b in any::<[u64; 2]>(), dt in -SPREAD..SPREAD) {
        let t = tenants(seed, b).map_err(TestCaseError::fail)?;
        compare(&t, Asked::Listings, EPOCH + dt).map_err(TestCaseError::fail)?;
    }

    /// The slice of each of A's principals.
    #[test]
    fn slices_do_not_depend_on_another_account(seed in any::<u64>(), b in any::<[u64; 2]>()) {
        let t = tenants(seed, b).map_err(TestCaseError::fail)?;
        compare(&t, Asked::Slice, EPOCH).map_err(TestCaseError::fail)?;
    }

    /// Random writes authored by A's principals, naming A's entities and B's pool: the
    /// same answer (allowed with the same derived tuples and feeds, or the same refusal
    /// or error) in both worlds.
    #[test]
    fn writes_do_not_depend_on_another_account(seed in any::<u64>(), b in any::<[u64; 2]>(), dt in -SPREAD..SPREAD) {
        let t = tenants(seed, b).map_err(TestCaseError::fail)?;
        compare_writes(&t, seed, EPOCH + dt, 60, true).map_err(TestCaseError::fail)?;
    }

    /// A follower of an A principal's slice takes nothing of a change made inside B.
    #[test]
    fn feeds_of_a_take_nothing_of_changes_in_b(seed in any::<u64>(), b in any::<[u64; 2]>(), dt in -SPREAD..SPREAD) {
        let t = tenants(seed, b).map_err(TestCaseError::fail)?;
        b_writes_reach_no_follower_of_a(&t, seed, EPOCH + dt).map_err(TestCaseError::fail)?;
    }
}
