//! Principal slices: a snapshot of a principal's slice decides every request of that
//! principal as the whole facts do (checks with their reasons and `valid_until`,
//! explanations, allowed actions, listed resources), over generated worlds and the demo
//! worlds; and a slice holds nothing of another account and no attribute or tuple the
//! policy does not read for that principal.

use crate::default_schema;
use crate::generate::{EPOCH, SPREAD, WorldSize, world};
use clearance_core::facts::FactsJson;
use clearance_core::policy::LEVEL_ACTIONS;
use clearance_core::slice::{AttrRead, Reads, RelRead};
use clearance_core::{Facts, Request, Schema, Snapshot, TimeValue, principal_slice};
use proptest::prelude::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::Path;
use std::sync::{Arc, OnceLock};

pub(crate) fn schema() -> Arc<Schema> {
    static SCHEMA: OnceLock<Arc<Schema>> = OnceLock::new();
    Arc::clone(SCHEMA.get_or_init(|| default_schema().unwrap_or_else(|e| panic!("{e}"))))
}

const SIZE: WorldSize = WorldSize {
    accounts: 2,
    per_type: 3,
    fanout: 2,
};

/// Every principal of `facts`, by name.
pub(crate) fn principals(schema: &Schema, facts: &Facts) -> Vec<String> {
    facts
        .entities
        .iter()
        .filter(|(_, e)| {
            schema
                .type_id(&e.ty)
                .and_then(|t| schema.ty(t))
                .is_some_and(|t| t.principal)
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// The entities of `account`, by name.
pub(crate) fn members<'a>(facts: &'a Facts, account: &'a str) -> impl Iterator<Item = &'a String> {
    facts
        .entities
        .iter()
        .filter(move |(_, e)| e.account == account)
        .map(|(k, _)| k)
}

/// Every page of every matrix.
pub(crate) fn pages(schema: &Schema) -> Vec<String> {
    schema
        .matrices
        .iter()
        .flat_map(|m| m.rows.iter().map(move |r| format!("{}:{}", m.name, r.name)))
        .collect()
}

/// Every request `principal` can make of its account at `now`: each action of each entity
/// and page, and for permissions that take a target, each entity of the target's type.
pub(crate) fn requests(
    schema: &Schema,
    full: &Snapshot,
    facts: &Facts,
    principal: &str,
    now: i64,
) -> Vec<Request> {
    let account = &facts.entities[principal].account;
    let req = |action: &str, resource: &str, target: Option<&str>| Request {
        principal: principal.into(),
        action: action.into(),
        resource: resource.into(),
        target: target.map(str::to_string),
        now: TimeValue::Seconds(now),
    };
    let mut out = Vec::new();
    for r in members(facts, account) {
        for a in full.action_names(r) {
            out.push(req(&a, r, None));
        }
        let td = schema
            .ty(schema.type_id(&facts.entities[r].ty).unwrap())
            .unwrap();
        for p in td.perms.iter().filter(|p| p.target.is_some()) {
            let tt = &schema.ty(p.target.unwrap()).unwrap().name;
            for t in members(facts, account).filter(|t| facts.entities[*t].ty == *tt) {
                out.push(req(&p.name, r, Some(t)));
            }
        }
    }
    for page in pages(schema) {
        for a in full.action_names(&page) {
            out.push(req(&a, &page, None));
        }
    }
    out
}

/// What [`agrees`] compares.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Compare {
    /// Every request's decision: allowed or not, its reasons and `valid_until`.
    Decisions,
    /// Every request's explanation (its decision and the checks that held), allowed
    /// actions and listed resources.
    Everything,
}

/// Whether a snapshot of `slice` decides as `full` for `principal` at each of `nows`:
/// the number of requests compared, or the first difference.
fn agrees(
    schema: &Arc<Schema>,
    facts: &Facts,
    full: &Snapshot,
    slice: &FactsJson,
    principal: &str,
    nows: &[i64],
    compare: Compare,
) -> Result<usize, String> {
    let sliced = Facts::from_doc(slice.clone()).map_err(|e| format!("{principal}: {e}"))?;
    let sliced = Snapshot::build(Arc::clone(schema), &sliced)
        .map_err(|e| format!("the slice of {principal} does not build: {} {e}", e.code))?;
    let account = &facts.entities[principal].account;
    let mut compared = 0;
    for &now in nows {
        let t = TimeValue::Seconds(now);
        for r in requests(schema, full, facts, principal, now) {
            let differs = match compare {
                Compare::Decisions => {
                    let (want, got) = (full.check(&r), sliced.check(&r));
                    (want != got).then(|| {
                        format!(
                            "{:?}\n  slice {:?}",
                            full.view(&want, &r),
                            sliced.view(&got, &r)
                        )
                    })
                }
                Compare::Everything => {
                    let (want, got) = (full.explain(&r), sliced.explain(&r));
                    (want != got).then(|| format!("{want:?}\n  slice {got:?}"))
                }
            };
            if let Some(d) = differs {
                return Err(format!("{r:?}:\n  whole facts {d}"));
            }
            compared += 1;
        }
        if compare == Compare::Decisions {
            continue;
        }
        for r in members(facts, account).cloned().chain(pages(schema)) {
            let (want, got) = (
                full.allowed_actions(principal, &r, &t),
                sliced.allowed_actions(principal, &r, &t),
            );
            if want != got {
                return Err(format!(
                    "allowed_actions({principal}, {r}, {now}): {want:?} vs {got:?}"
                ));
            }
        }
        let mut listings: Vec<(String, String)> = Vec::new();
        for td in &schema.types {
            for p in td.perms.iter().filter(|p| p.target.is_none()) {
                listings.push((td.name.clone(), p.name.clone()));
            }
        }
        for m in &schema.matrices {
            let actions: Vec<String> = if m.levels {
                LEVEL_ACTIONS.iter().map(|a| a.to_string()).collect()
            } else {
                m.actions.clone()
            };
            listings.extend(actions.into_iter().map(|a| (m.name.clone(), a)));
        }
        for (ty, action) in listings {
            let (want, got) = (
                full.list_resources(principal, &action, &ty, &t),
                sliced.list_resources(principal, &action, &ty, &t),
            );
            if want != got {
                return Err(format!(
                    "list_resources({principal}, {action}, {ty}, {now}): {want:?} vs {got:?}"
                ));
            }
        }
    }
    Ok(compared)
}

/// Whether `slice` holds only what `reads` keep for `principal`: every entity of its
/// account with the facts' values and nothing of another account, attributes read on any
/// entity, or on the principal itself, or on the authorisations it holds; tuples of the
/// account read whole, or naming the principal as subject.
fn holds_only_reads(
    schema: &Schema,
    reads: &Reads,
    facts: &Facts,
    slice: &FactsJson,
    principal: &str,
) -> Result<(), String> {
    let account = &facts.entities[principal].account;
    let mut held: BTreeSet<&str> = facts
        .tuples
        .keys()
        .filter(|(r, rel, s)| s == principal && rel == "holder" && r.starts_with("authorization:"))
        .map(|(r, _, _)| r.as_str())
        .collect();
    // And the licences the held authorisations rest on.
    let licences: Vec<&str> = facts
        .tuples
        .keys()
        .filter(|(r, rel, _)| rel == "licence" && held.contains(r.as_str()))
        .map(|(_, _, s)| s.as_str())
        .collect();
    held.extend(licences);
    let whole = members(facts, account).count();
    if slice.entities.len() != whole {
        return Err(format!(
            "the slice of {principal} holds {} entities, its account {whole}",
            slice.entities.len()
        ));
    }
    for e in &slice.entities {
        let key = format!("{}:{}", e.ty, e.id);
        let Some(f) = facts.entities.get(&key) else {
            return Err(format!("{key} is not in the facts"));
        };
        if f.account != *account || e.account.as_deref().unwrap_or(&e.id) != account {
            return Err(format!(
                "{key} of another account in the slice of {principal}"
            ));
        }
        let t = schema.type_id(&e.ty).unwrap();
        let td = schema.ty(t).unwrap();
        for (name, v) in &e.attrs {
            let read = td
                .attr(name)
                .map_or(AttrRead::Unread, |a| reads.attr_read(t, a));
            let kept = match read {
                AttrRead::Any => true,
                AttrRead::Principal => key == principal,
                AttrRead::Held => held.contains(key.as_str()),
                AttrRead::Unread => false,
            };
            if !kept {
                return Err(format!(
                    "the slice of {principal} holds {key}.{name}, read {read:?}"
                ));
            }
            if f.attrs.get(name) != Some(v) {
                return Err(format!("{key}.{name} differs from the facts"));
            }
        }
    }
    for tu in &slice.tuples {
        for end in [&tu.resource, &tu.subject] {
            if facts
                .entities
                .get(end)
                .is_none_or(|e| e.account != *account)
            {
                return Err(format!(
                    "{end} of another account in the slice of {principal}"
                ));
            }
        }
        let t = schema.type_id(&facts.entities[&tu.resource].ty).unwrap();
        let read = schema
            .ty(t)
            .and_then(|td| td.rel(&tu.relation))
            .map_or(RelRead::Unread, |r| reads.rel_read(t, r));
        let kept = match read {
            RelRead::Any => true,
            RelRead::Principal => tu.subject == principal,
            RelRead::Unread => false,
        };
        if !kept {
            return Err(format!(
                "the slice of {principal} holds {}#{}@{}, read {read:?}",
                tu.resource, tu.relation, tu.subject
            ));
        }
    }
    // Numbers of exactly the counted sets the reads carry, of the account's entities.
    let sets: Vec<(String, Vec<String>)> = reads
        .counts
        .iter()
        .map(|(t, rels)| {
            let td = schema.ty(*t).unwrap();
            let names = rels.iter().map(|&r| td.rels[r as usize].name.clone());
            (td.name.clone(), names.collect())
        })
        .collect();
    let carried: Vec<(String, Vec<String>)> = slice
        .counts
        .iter()
        .map(|c| (c.ty.clone(), c.relations.clone()))
        .collect();
    if carried != sets {
        return Err(format!(
            "the slice of {principal} counts {carried:?}, the reads {sets:?}"
        ));
    }
    for c in &slice.counts {
        for n in &c.of {
            let key = format!("{}:{}", c.ty, n.id);
            if facts
                .entities
                .get(&key)
                .is_none_or(|e| e.account != *account)
            {
                return Err(format!(
                    "the slice of {principal} counts {key}, not of its account"
                ));
            }
        }
    }
    Ok(())
}

/// Every principal's slice of `facts` under `reads`, checked: the first problem, or the
/// number of requests compared.
fn check_slices(
    facts: &Facts,
    reads: &Reads,
    nows: &[i64],
    compare: Compare,
) -> Result<usize, String> {
    let schema = schema();
    let full = Snapshot::build(Arc::clone(&schema), facts)
        .map_err(|e| format!("the facts do not build: {} {e}", e.code))?;
    let mut compared = 0;
    for p in principals(&schema, facts) {
        let slice = reads
            .slice(&schema, facts, &p)
            .map_err(|e| format!("{p}: {e}"))?;
        holds_only_reads(&schema, reads, facts, &slice, &p)?;
        compared += agrees(&schema, facts, &full, &slice, &p, nows, compare)?;
    }
    Ok(compared)
}

/// The demo worlds of `tests/worlds/`, merged (they share no entity).
pub(crate) fn demo_facts() -> Facts {
    let mut doc = FactsJson::default();
    for name in ["airline", "maintenance", "operations"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/worlds")
            .join(format!("{name}.json"));
        let w: FactsJson = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        doc.revision = doc.revision.max(w.revision);
        doc.entities.extend(w.entities);
        doc.tuples.extend(w.tuples);
    }
    Facts::from_doc(doc).unwrap()
}

/// Instants around the demo data's dates (May 2026), before and after its expiries.
const DEMO_NOWS: [i64; 4] = [
    EPOCH - 400 * 86_400,
    EPOCH,
    EPOCH + 12 * 3_600 + 1_800,
    EPOCH + 400 * 86_400,
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Over generated worlds: every principal's slice holds only what the policy reads
    /// for it, and decides every request of that principal as the whole facts.
    #[test]
    fn a_slice_decides_as_the_whole_facts(
        seed in any::<u64>(),
        dts in prop::collection::vec(-SPREAD..SPREAD, 3),
    ) {
        let w = world(&schema(), seed, SIZE);
        let facts = Facts::from_doc(w.facts).unwrap();
        let nows: Vec<i64> = dts.iter().map(|dt| EPOCH + dt).collect();
        let compared = check_slices(&facts, &Reads::of(&schema()), &nows, Compare::Everything);
        prop_assert!(compared.is_ok(), "{}", compared.unwrap_err());
    }
}

#[test]
fn demo_slices_decide_as_the_demo_facts() {
    let compared = check_slices(
        &demo_facts(),
        &Reads::of(&schema()),
        &DEMO_NOWS,
        Compare::Everything,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(compared > 10_000, "only {compared} requests compared");
}

/// The property is not vacuous: slices cut with nothing read decide differently, and
/// are caught.
#[test]
fn an_over_eager_cut_is_caught() {
    let err = check_slices(
        &demo_facts(),
        &Reads::none(&schema()),
        &[EPOCH],
        Compare::Decisions,
    )
    .expect_err("slices with nothing read decide as the whole facts");
    println!("nothing read: {err}");
}

/// The read set of the shipped policies is as small as this cut can make it: reading any
/// one attribute on fewer entities (none, for one read on the principal only), or any
/// one relation's tuples more narrowly (only those to the principal, or none), changes
/// a decision of the demo worlds or of a generated one.
#[test]
fn every_read_is_needed() {
    let schema = schema();
    let reads = Reads::of(&schema);
    // The demo facts, and with an aircraft whose plan is full of grants that only a
    // count of its seats reads (the invariant of writes, the invitation of a user).
    let full: Vec<clearance_core::Delta> = serde_json::from_value(serde_json::json!([
        { "op": "add_entity", "entity": { "type": "aircraft", "id": "g_full", "account": "skyways",
          "attrs": { "registration": "G-FULL", "plan": "starter", "seat_limit": 3 } } },
        { "op": "add_tuple", "tuple": { "resource": "aircraft:g_full", "relation": "owner", "subject": "user:ac_owner" } },
        { "op": "add_tuple", "tuple": { "resource": "aircraft:g_full", "relation": "pilot_own_records", "subject": "user:pilot_own_rec" } },
        { "op": "add_tuple", "tuple": { "resource": "aircraft:g_full", "relation": "mechanic_own_records", "subject": "user:mech_full" } },
        { "op": "add_tuple", "tuple": { "resource": "aircraft:g_full", "relation": "pilot_all_squawks", "subject": "user:pilot_all_sq" } },
    ]))
    .unwrap();
    // And with certification authorisations on licences, and tasks that state their
    // category, chapter and kind: each limit allows one sign-off and refuses another.
    let task = |id: &str, chapter: &str, kind: &str| {
        serde_json::json!({ "op": "add_entity", "entity": { "type": "task", "id": id, "account": "mro_north",
            "attrs": { "title": id, "aircraft_type": "B737", "category": "B1.1", "ata_chapter": chapter, "task_kind": kind } } })
    };
    let certified = |who: &str, categories: &str, revoked: bool| {
        let (l, a) = (format!("{who}_aml_t"), format!("{who}_cert_t"));
        serde_json::json!([
            { "op": "add_entity", "entity": { "type": "licence", "id": l, "account": "mro_north",
                "attrs": { "categories": [categories], "valid_until": "2027-06-01T00:00:00Z", "revoked": revoked } } },
            { "op": "add_tuple", "tuple": { "resource": format!("licence:{l}"), "relation": "holder", "subject": format!("user:{who}") } },
            { "op": "add_entity", "entity": { "type": "authorization", "id": a, "account": "mro_north",
                "attrs": { "kind": "certifying_staff", "scope": ["B737"], "categories": [categories], "chapters": ["32"],
                           "task_kinds": ["replacement"], "valid_until": "2027-03-31T00:00:00Z" } } },
            { "op": "add_tuple", "tuple": { "resource": format!("authorization:{a}"), "relation": "holder", "subject": format!("user:{who}") } },
            { "op": "add_tuple", "tuple": { "resource": format!("authorization:{a}"), "relation": "licence", "subject": format!("licence:{l}") } },
        ])
    };
    let mut certs = vec![
        serde_json::json!({ "op": "remove_entity", "entity": "authorization:n_lead_crs" }),
        serde_json::json!({ "op": "remove_entity", "entity": "authorization:n_technician_crs" }),
        task("t_c32", "32", "replacement"),
        task("t_c27", "27", "replacement"),
        task("t_kind", "32", "inspection"),
    ];
    for (who, categories, revoked) in [
        ("n_lead", "B1", false),
        ("n_technician", "B2", false),
        ("n_shift_lead", "B1", true),
    ] {
        certs.extend(
            certified(who, categories, revoked)
                .as_array()
                .unwrap()
                .iter()
                .cloned(),
        );
    }
    let certs: Vec<clearance_core::Delta> =
        serde_json::from_value(serde_json::Value::Array(certs)).unwrap();
    let worlds: Vec<Facts> = [
        demo_facts(),
        demo_facts().apply(&full).unwrap(),
        demo_facts().apply(&certs).unwrap(),
    ]
    .into_iter()
    .chain((0..8).map(|seed| Facts::from_doc(world(&schema, seed, SIZE).facts).unwrap()))
    .collect();
    let caught = |narrow: &Reads| {
        worlds
            .iter()
            .any(|f| check_slices(f, narrow, &[EPOCH], Compare::Decisions).is_err())
    };
    let mut missed = Vec::new();
    // A set of relations counted as tuples of the principal alone, not as numbers.
    for i in 0..reads.counts.len() {
        let mut narrow = reads.clone();
        let (t, rels) = narrow.counts.remove(i);
        if !caught(&narrow) {
            missed.push(format!("count {} {rels:?}", schema.types[t as usize].name));
        }
    }
    for (t, td) in (0..).zip(&schema.types) {
        for (a, ad) in (0..).zip(&td.attrs) {
            if reads.attr_read(t, a) == AttrRead::Unread {
                continue;
            }
            let mut narrow = reads.clone();
            narrow.attrs[t as usize][a as usize] = AttrRead::Unread;
            if !caught(&narrow) {
                missed.push(format!("{}.{}", td.name, ad.name));
            }
        }
        for (r, rd) in (0..).zip(&td.rels) {
            let less = match reads.rel_read(t, r) {
                RelRead::Any => RelRead::Principal,
                RelRead::Principal => RelRead::Unread,
                RelRead::Unread => continue,
            };
            let mut narrow = reads.clone();
            narrow.rels[t as usize][r as usize] = less;
            if !caught(&narrow) {
                missed.push(format!("{}#{}", td.name, rd.name));
            }
        }
    }
    assert!(
        missed.is_empty(),
        "narrowed without a changed decision: {missed:?}"
    );
}

#[test]
fn demo_slices_leave_out_what_no_rule_reads() {
    let schema = schema();
    let facts = demo_facts();
    let slice = |p: &str| principal_slice(&schema, &facts, p).unwrap_or_else(|e| panic!("{e}"));
    let attrs = |s: &FactsJson, key: &str| -> BTreeSet<String> {
        let e = s
            .entities
            .iter()
            .find(|e| format!("{}:{}", e.ty, e.id) == key)
            .unwrap_or_else(|| panic!("{key} not in the slice"));
        e.attrs.keys().cloned().collect()
    };
    let names = |v: &[&str]| -> BTreeSet<String> { v.iter().map(|s| s.to_string()).collect() };

    let s = slice("user:occ_controller");
    assert!(
        s.entities
            .iter()
            .all(|e| e.account.as_deref().unwrap_or(&e.id) == "skyways")
    );
    for e in s.entities.iter().filter(|e| e.ty == "user") {
        assert!(
            !e.attrs.contains_key("email"),
            "user:{} keeps its email",
            e.id
        );
    }
    for e in s.entities.iter().filter(|e| e.ty == "invitee") {
        assert!(
            !e.attrs.contains_key("address") && !e.attrs.contains_key("channel"),
            "invitee:{} keeps its address or channel",
            e.id
        );
    }
    assert_eq!(
        attrs(&s, "user:occ_controller"),
        names(&["invitation", "roles", "status"])
    );
    assert_eq!(attrs(&s, "user:engineer"), names(&[]));
    assert_eq!(attrs(&s, "invitee:g_revoked"), names(&[]));
    assert_eq!(attrs(&s, "organization:aeroserv"), names(&["kind"]));
    assert_eq!(attrs(&s, "station:lhr"), names(&[]));
    assert_eq!(
        s.omitted["user"],
        json!(["roles", "email", "invitation", "status"])
    );
    assert_eq!(
        s.omitted["invitee"],
        json!(["roles", "channel", "address", "revoked"])
    );
    // Organisation memberships are read only as `member` alone: the principal's own.
    assert!(
        s.tuples
            .iter()
            .filter(|t| t.relation == "member")
            .all(|t| t.subject == "user:occ_controller")
    );

    // A guest keeps its own revocation, and sees no other guest's invitations.
    let s = slice("invitee:g_revoked");
    assert_eq!(attrs(&s, "invitee:g_revoked"), names(&["revoked", "roles"]));
    assert_eq!(attrs(&s, "invitee:g_email"), names(&[]));
    let guests: Vec<&str> = s
        .tuples
        .iter()
        .filter(|t| t.relation == "guest")
        .map(|t| t.subject.as_str())
        .collect();
    assert_eq!(guests, ["invitee:g_revoked"]);

    // A technician keeps its own authorisation's terms, and sees none of another's.
    let s = slice("user:n_technician");
    assert_eq!(
        attrs(&s, "authorization:n_technician_crs"),
        names(&["kind", "scope", "valid_from", "valid_until"])
    );
    assert_eq!(attrs(&s, "authorization:n_lead_crs"), names(&[]));
    let holders: Vec<&str> = s
        .tuples
        .iter()
        .filter(|t| t.relation == "holder")
        .map(|t| t.resource.as_str())
        .collect();
    assert_eq!(holders, ["authorization:n_technician_crs"]);
    // Custom roles stay whole: any of them may be extended by the principal's roles.
    assert_eq!(
        attrs(&s, "role:shift_lead"),
        names(&["cells", "extends", "matrix"])
    );

    let other = principal_slice(&schema, &facts, "account:skyways").unwrap_err();
    assert_eq!(other.code, "slice.not_principal");
    let unknown = principal_slice(&schema, &facts, "user:nobody").unwrap_err();
    assert_eq!(unknown.code, "slice.unknown_principal");
}

/// What the shipped policies read, per attribute and relation: `any` entity, only the
/// requesting `principal`, only the authorisations it holds (`held`), or nothing; and the
/// relations counted as numbers.
#[test]
fn the_shipped_policies_read() {
    let schema = schema();
    let reads = Reads::of(&schema);
    let mut text = String::new();
    for (t, td) in (0..).zip(&schema.types) {
        for (a, ad) in (0..).zip(&td.attrs) {
            let read = match reads.attr_read(t, a) {
                AttrRead::Any => "any",
                AttrRead::Principal => "principal",
                AttrRead::Held => "held",
                AttrRead::Unread => "unread",
            };
            writeln!(text, "{}.{}: {read}", td.name, ad.name).unwrap();
        }
        for (r, rd) in (0..).zip(&td.rels) {
            let read = match reads.rel_read(t, r) {
                RelRead::Any => "every tuple",
                RelRead::Principal => "tuples to the principal",
                RelRead::Unread => "unread",
            };
            writeln!(text, "{}#{}: {read}", td.name, rd.name).unwrap();
        }
    }
    for (t, rels) in &reads.counts {
        let td = &schema.types[*t as usize];
        let names: Vec<&str> = rels
            .iter()
            .map(|&r| td.rels[r as usize].name.as_str())
            .collect();
        writeln!(text, "count {}({}): numbers", td.name, names.join(" | ")).unwrap();
    }
    insta::assert_snapshot!("shipped_policies_read", text);
}

/// A contractor's technician reads no aircraft, yet every aircraft's seat count is read
/// by the rules of its invitation and the invariant of writes (`count(...)`). Its slice
/// names no other user holding a grant on an aircraft it cannot read (a count needs the
/// number, not the names), and decides every request of the technician as the whole
/// facts, around the end of a grant that expires.
#[test]
fn a_technician_slice_names_no_grant_holder_of_an_aircraft_it_cannot_read() {
    let schema = schema();
    let facts = demo_facts();
    let full = Snapshot::build(Arc::clone(&schema), &facts).unwrap();
    let principal = "user:aeroserv_tech";
    let slice = principal_slice(&schema, &facts, principal).unwrap();
    let unreadable: BTreeSet<&String> = members(&facts, "skyways")
        .filter(|k| k.starts_with("aircraft:"))
        .filter(|k| {
            let r = Request {
                principal: principal.into(),
                action: "read".into(),
                resource: (*k).clone(),
                target: None,
                now: TimeValue::Seconds(EPOCH),
            };
            !full.check(&r).allowed
        })
        .collect();
    assert_eq!(unreadable.len(), 3, "{unreadable:?}");
    let named: Vec<String> = slice
        .tuples
        .iter()
        .filter(|t| unreadable.contains(&t.resource) && t.subject != principal)
        .map(|t| format!("{}#{}@{}", t.resource, t.relation, t.subject))
        .collect();
    assert!(named.is_empty(), "the slice names {named:?}");
    // The grant of `aircraft:g_skyc` to `user:ac_visitor2` ends at 12:00.
    let ends = EPOCH + 12 * 3_600;
    // In their place, how many hold a seat of each aircraft, and when one stops holding it.
    assert_eq!(
        serde_json::to_value(&slice.counts).unwrap(),
        json!([{ "type": "aircraft",
            "relations": ["co_owner", "pilot_own_records", "pilot_own_squawks", "pilot_all_squawks",
                          "mechanic_read", "mechanic_full", "mechanic_own_records", "visitor"],
            "of": [{ "id": "g_skya", "subjects": 9, "subject_ends": [], "tuple_ends": [] },
                   { "id": "g_skyb", "subjects": 3, "subject_ends": [], "tuple_ends": [] },
                   { "id": "g_skyc", "subjects": 2, "subject_ends": [ends], "tuple_ends": [] }] }])
    );
    let mut nows = DEMO_NOWS.to_vec();
    nows.extend([ends - 1, ends, ends + 1]);
    let compared = agrees(
        &schema,
        &facts,
        &full,
        &slice,
        principal,
        &nows,
        Compare::Everything,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(compared > 1_000, "only {compared} requests compared");
}

/// Worlds with more grant holders per aircraft than seats, several grants per holder.
const COUNTED: WorldSize = WorldSize {
    accounts: 2,
    per_type: 4,
    fanout: 3,
};

/// The instants at which a number `slice` carries changes or ends a decision's validity,
/// each with the second before and after: where counting numbers could differ from
/// counting tuples. At most `most` ends, spread over them.
fn count_instants(slice: &FactsJson, most: usize) -> Vec<i64> {
    let ends: BTreeSet<i64> = slice
        .counts
        .iter()
        .flat_map(|c| &c.of)
        .flat_map(|n| n.subject_ends.iter().chain(&n.tuple_ends).copied())
        .collect();
    let step = ends.len().div_ceil(most.max(1)).max(1);
    ends.iter()
        .step_by(step)
        .flat_map(|&t| [t - 1, t, t + 1])
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Over generated worlds whose aircraft hold several grants per user, some ending:
    /// every principal's slice carries the counted relations as numbers, holds of them
    /// only the tuples it reads otherwise (those naming the principal), and decides every
    /// request of the principal as the whole facts at the instants the numbers change,
    /// the seconds around them, and one more.
    #[test]
    fn slices_carrying_counts_decide_as_the_whole_facts(
        seed in any::<u64>(),
        dt in -SPREAD..SPREAD,
    ) {
        let schema = schema();
        let reads = Reads::of(&schema);
        prop_assert!(!reads.counts.is_empty());
        let facts = Facts::from_doc(world(&schema, seed, COUNTED).facts).unwrap();
        let full = Snapshot::build(Arc::clone(&schema), &facts).unwrap();
        for p in principals(&schema, &facts) {
            let slice = reads.slice(&schema, &facts, &p).unwrap();
            let held = holds_only_reads(&schema, &reads, &facts, &slice, &p);
            prop_assert!(held.is_ok(), "{}", held.unwrap_err());
            for t in &slice.tuples {
                let ty = schema.type_id(t.resource.split(':').next().unwrap()).unwrap();
                let r = schema.ty(ty).unwrap().rel(&t.relation).unwrap();
                prop_assert!(
                    !reads.counted(ty, r) || t.subject == p,
                    "the slice of {} names {}#{}@{}", p, t.resource, t.relation, t.subject
                );
            }
            let mut nows = count_instants(&slice, 4);
            nows.push(EPOCH + dt);
            let compared = agrees(&schema, &facts, &full, &slice, &p, &nows, Compare::Decisions);
            prop_assert!(compared.is_ok(), "{}", compared.unwrap_err());
        }
    }
}

/// The property above is not vacuous: generated worlds carry counts of several subjects,
/// some ending, with tuples ending before their subject's last; and counting the numbers
/// differs from counting the principal's own tuples (the slice without its numbers is
/// caught deciding otherwise).
#[test]
fn generated_worlds_carry_counts_that_end() {
    let schema = schema();
    let reads = Reads::of(&schema);
    let (mut subjects, mut subject_ends, mut tuple_ends) = (0, 0, 0);
    for seed in 0..4 {
        let facts = Facts::from_doc(world(&schema, seed, COUNTED).facts).unwrap();
        for p in principals(&schema, &facts).iter().take(2) {
            for n in reads
                .slice(&schema, &facts, p)
                .unwrap()
                .counts
                .iter()
                .flat_map(|c| &c.of)
            {
                subjects = subjects.max(n.subjects);
                subject_ends += n.subject_ends.len();
                tuple_ends += n.tuple_ends.len();
            }
        }
    }
    assert!(
        subjects >= 3 && subject_ends > 0 && tuple_ends > 0,
        "{subjects} subjects at most, {subject_ends} subject ends, {tuple_ends} tuple ends"
    );
    let mut uncounted = reads.clone();
    uncounted.counts.clear();
    let caught = (0..8).any(|seed| {
        let facts = Facts::from_doc(world(&schema, seed, COUNTED).facts).unwrap();
        check_slices(&facts, &uncounted, &[EPOCH], Compare::Decisions).is_err()
    });
    assert!(
        caught,
        "slices without their numbers decide as the whole facts"
    );
}

/// A snapshot of a slice refuses a delta that may move a number it carries (only the
/// whole facts know who the subjects are), names the change, and is left as it was; a
/// change elsewhere applies. Counts that do not hold together do not load.
#[test]
fn a_slice_refuses_what_may_move_a_number_it_carries() {
    let schema = schema();
    let facts = demo_facts();
    let slice = principal_slice(&schema, &facts, "user:aeroserv_tech").unwrap();
    let loaded = Facts::from_doc(slice.clone()).unwrap();
    assert_eq!(loaded.to_doc(), slice, "counts do not survive a round trip");
    let mut snap = Snapshot::build(Arc::clone(&schema), &loaded).unwrap();
    // The numbers survive the snapshot's bytes, as a host's instance loads them.
    let bytes = snap.to_bytes().unwrap();
    let again = Snapshot::from_bytes(&bytes).unwrap();
    assert!(!again.counts.is_empty());
    assert_eq!(again.counts, snap.counts);
    assert_eq!(again.to_bytes().unwrap(), bytes);
    let refused = [
        json!({ "op": "add_tuple", "tuple": { "resource": "aircraft:g_skyb", "relation": "visitor", "subject": "user:engineer" } }),
        json!({ "op": "remove_tuple", "tuple": { "resource": "aircraft:g_skya", "relation": "mechanic_full", "subject": "user:mech_gone" } }),
        json!({ "op": "remove_entity", "entity": "user:mech_gone" }),
    ];
    for d in refused {
        let d: clearance_core::Delta = serde_json::from_value(d).unwrap();
        let err = snap.apply(std::slice::from_ref(&d)).unwrap_err();
        assert_eq!(err.code, "facts.counted", "{d:?}: {err}");
        assert!(err.message.contains("fetch the slice again"), "{err}");
    }
    assert_eq!(snap.revision, slice.revision);
    let elsewhere: Vec<clearance_core::Delta> = serde_json::from_value(json!([
        { "op": "add_tuple", "tuple": { "resource": "aircraft:g_skya", "relation": "owner", "subject": "user:engineer" } },
        { "op": "remove_entity", "entity": "aircraft:g_skyc" },
    ]))
    .unwrap();
    snap.apply(&elsewhere).unwrap();

    let broken = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut doc = serde_json::to_value(&slice).unwrap();
        edit(&mut doc);
        let facts = Facts::from_doc(serde_json::from_value(doc).unwrap()).unwrap();
        Snapshot::build(Arc::clone(&schema), &facts).unwrap_err()
    };
    let e = broken(&|d| d["counts"][0]["relations"][0] = json!("pilot"));
    assert_eq!(e.code, "facts.unknown_relation", "{e}");
    let e = broken(&|d| d["counts"][0]["of"][0]["id"] = json!("nowhere"));
    assert_eq!(e.code, "facts.unknown_entity", "{e}");
    let e = broken(&|d| d["counts"][0]["of"][1]["subject_ends"] = json!([1, 2, 3, 4]));
    assert_eq!(e.code, "facts.invalid_value", "{e}");
    let e = broken(&|d| d["counts"][0]["of"][2]["subject_ends"] = json!([2, 1]));
    assert_eq!(e.code, "facts.invalid_value", "{e}");
    let e = broken(&|d| d["counts"][0]["of"][1]["id"] = json!("g_skya"));
    assert_eq!(e.code, "facts.invalid_value", "{e}");
    let e = broken(&|d| {
        let twice = d["counts"][0].clone();
        d["counts"].as_array_mut().unwrap().push(twice);
    });
    assert_eq!(e.code, "facts.invalid_value", "{e}");
}
