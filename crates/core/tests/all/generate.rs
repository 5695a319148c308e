//! Random worlds for property tests, driven by the schema: every type of the policy gets
//! entities with values of the declared types, and every relation gets tuples between
//! entities of the same account, some of them expiring.

use clearance_core::policy::{AttrDef, ValueType};
use clearance_core::{EntityJson, FactsJson, Schema, TimeValue, TupleJson};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The instant generated times are spread around (2026-05-01T00:00:00Z).
pub const EPOCH: i64 = 1_777_593_600;
/// How far generated times spread around [`EPOCH`], in seconds.
pub const SPREAD: i64 = 10 * 86_400;

/// Sizes of a generated world.
#[derive(Debug, Clone, Copy)]
pub struct WorldSize {
    /// Accounts.
    pub accounts: usize,
    /// Entities per type per account.
    pub per_type: usize,
    /// Tuples per relation per entity, at most.
    pub fanout: usize,
}

/// A generated world: facts, and the names of its entities by type.
pub struct World {
    /// The facts.
    pub facts: FactsJson,
    /// `type:id` names by type.
    pub by_type: BTreeMap<String, Vec<String>>,
}

/// Generates a world for `schema` from `seed`.
pub fn world(schema: &Schema, seed: u64, size: WorldSize) -> World {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut entities = Vec::new();
    let mut by_type: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut account_of: BTreeMap<String, String> = BTreeMap::new();
    let strings: Vec<String> = schema
        .literals
        .iter()
        .cloned()
        .chain(["x".to_string(), "y".to_string()])
        .collect();
    let roles: Vec<String> = schema.role_index.keys().cloned().collect();
    for a in 0..size.accounts {
        let acct = format!("acct{a}");
        entities.push(EntityJson {
            ty: "account".into(),
            id: acct.clone(),
            account: None,
            attrs: attrs(schema, "account", &mut rng, &strings, &roles),
        });
        by_type
            .entry("account".into())
            .or_default()
            .push(format!("account:{acct}"));
        account_of.insert(format!("account:{acct}"), acct.clone());
        for t in &schema.types {
            if t.name == "account" || t.name == "role" {
                continue;
            }
            for i in 0..size.per_type {
                let id = format!("{acct}_{}{i}", t.name);
                let key = format!("{}:{id}", t.name);
                entities.push(EntityJson {
                    ty: t.name.clone(),
                    id,
                    account: Some(acct.clone()),
                    attrs: attrs(schema, &t.name, &mut rng, &strings, &roles),
                });
                by_type.entry(t.name.clone()).or_default().push(key.clone());
                account_of.insert(key, acct.clone());
            }
        }
    }
    let mut tuples = Vec::new();
    for t in &schema.types {
        let Some(resources) = by_type.get(&t.name) else {
            continue;
        };
        for r in resources {
            for rel in &t.rels {
                let n = rng.gen_range(0..=size.fanout);
                for _ in 0..n {
                    let Some(&st) = pick(&mut rng, &rel.targets) else {
                        continue;
                    };
                    let Some(sname) = schema.ty(st).map(|x| x.name.clone()) else {
                        continue;
                    };
                    let same: Vec<&String> = by_type
                        .get(&sname)
                        .map(|v| {
                            v.iter()
                                .filter(|s| account_of.get(*s) == account_of.get(r))
                                .collect()
                        })
                        .unwrap_or_default();
                    let Some(&subject) = pick(&mut rng, &same) else {
                        continue;
                    };
                    let expires = rng
                        .gen_bool(0.2)
                        .then(|| TimeValue::Seconds(EPOCH + rng.gen_range(-SPREAD..SPREAD)));
                    tuples.push(TupleJson {
                        resource: r.clone(),
                        relation: rel.name.clone(),
                        subject: subject.clone(),
                        expires,
                    });
                }
            }
        }
    }
    // A certification authorisation does not outlast the licence it rests on.
    let ends = |e: &EntityJson| {
        e.attrs
            .get("valid_until")
            .and_then(serde_json::Value::as_i64)
    };
    let licence_ends: BTreeMap<String, i64> = entities
        .iter()
        .filter(|e| e.ty == "licence")
        .filter_map(|e| Some((format!("licence:{}", e.id), ends(e)?)))
        .collect();
    for t in tuples.iter().filter(|t| t.relation == "licence") {
        let Some(&until) = licence_ends.get(&t.subject) else {
            continue;
        };
        if let Some(a) = entities
            .iter_mut()
            .find(|e| e.ty == "authorization" && format!("authorization:{}", e.id) == t.resource)
            && ends(a).is_none_or(|u| u > until)
        {
            a.attrs.insert("valid_until".into(), json!(until));
        }
    }
    World {
        facts: FactsJson {
            revision: rng.gen_range(0..5),
            entities,
            tuples,
            omitted: BTreeMap::new(),
            counts: Vec::new(),
        },
        by_type,
    }
}

pub fn pick<'a, T>(rng: &mut SmallRng, v: &'a [T]) -> Option<&'a T> {
    if v.is_empty() {
        None
    } else {
        v.get(rng.gen_range(0..v.len()))
    }
}

pub fn attrs(
    schema: &Schema,
    ty: &str,
    rng: &mut SmallRng,
    strings: &[String],
    roles: &[String],
) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let Some(t) = schema.type_id(ty).and_then(|id| schema.ty(id)) else {
        return out;
    };
    for a in &t.attrs {
        if a.optional && rng.gen_bool(0.2) {
            continue;
        }
        out.insert(a.name.clone(), value(a, rng, strings, roles));
    }
    out
}

/// A random value of attribute `a`'s type: `roles` from `roles`, licence categories from
/// the known ones, other strings from `strings`.
pub fn value(a: &AttrDef, rng: &mut SmallRng, strings: &[String], roles: &[String]) -> Value {
    match &a.ty {
        ValueType::Bool => json!(rng.gen_bool(0.5)),
        ValueType::Int => json!(rng.gen_range(0..6)),
        ValueType::Str => json!(pick(rng, strings).cloned().unwrap_or_default()),
        ValueType::Time => json!(EPOCH + rng.gen_range(-SPREAD..SPREAD)),
        ValueType::Enum(values) => json!(pick(rng, values).cloned().unwrap_or_default()),
        ValueType::StrSet if a.name == "roles" => {
            let n = rng.gen_range(0..3);
            json!(
                (0..n)
                    .filter_map(|_| pick(rng, roles).cloned())
                    .collect::<Vec<_>>()
            )
        }
        ValueType::StrSet if a.name == "categories" => {
            let n = rng.gen_range(0..3);
            let known = &clearance_core::LICENCE_CATEGORIES;
            json!(
                (0..n)
                    .filter_map(|_| pick(rng, known).map(|c| c.to_string()))
                    .collect::<Vec<_>>()
            )
        }
        ValueType::StrSet => {
            let n = rng.gen_range(0..4);
            json!(
                (0..n)
                    .filter_map(|_| pick(rng, strings).cloned())
                    .collect::<Vec<_>>()
            )
        }
    }
}
