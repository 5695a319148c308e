//! Random lists of deltas for the write properties and the fuzz harness: each delta names
//! entities from a pool (entities that exist, ids guessed in another account, entities
//! created earlier in the same list), attributes and relations of their types, and values
//! of the declared types or, now and then, not. A list is what an author could send, in
//! any order: an entity created and then given roles, gate attributes or tuples by later
//! deltas of the same list, as much as changes to entities that exist. Most deltas name
//! the author's own account and change what the policy has a rule for, so that enough
//! lists are allowed for the properties to be about allowed writes.

use crate::generate::{EPOCH, SPREAD, attrs, pick, value};
use clearance_core::policy::{LEVELS, WriteEvent};
use clearance_core::{Delta, EntityJson, Schema, TimeValue, TupleJson};
use rand::Rng;
use rand::rngs::SmallRng;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// What the deltas of a list may name.
#[derive(Debug, Clone, Default)]
pub struct Pools {
    /// Entities (`type:id`) a delta may name: some exist, some do not.
    pub names: Vec<String>,
    /// The account of each name whose account is known.
    pub account_of: BTreeMap<String, String>,
    /// Ids an `add_entity` may take, `{ty}` standing for the type's name.
    pub new_ids: Vec<String>,
    /// Accounts an `add_entity` may put its entity in.
    pub accounts: Vec<String>,
    /// Tuples a `remove_tuple` may name.
    pub tuples: Vec<TupleJson>,
    /// Role names a `roles` value may hold.
    pub roles: Vec<String>,
    /// Strings for string attributes.
    pub strings: Vec<String>,
}

/// The type name of `type:id`.
pub fn type_of(name: &str) -> &str {
    name.split_once(':').map_or(name, |(t, _)| t)
}

/// One list being made: the pools, the author's account, what the list created so far.
struct Making<'a> {
    schema: &'a Schema,
    pools: &'a Pools,
    home: Option<&'a str>,
    created: Vec<(String, String)>,
}

/// A random list of 1 to `max` deltas over `pools`, most of them in account `home`.
pub fn deltas(
    rng: &mut SmallRng,
    schema: &Schema,
    pools: &Pools,
    home: Option<&str>,
    max: usize,
) -> Vec<Delta> {
    // Short lists mostly: each delta more is one more chance of a refusal.
    let n = (1..max.max(1)).take_while(|_| rng.gen_bool(0.55)).count() + 1;
    let mut m = Making {
        schema,
        pools,
        home,
        created: Vec::new(),
    };
    let mut out = Vec::with_capacity(n);
    // A third of the lists create an entity first and then change it: give it roles or
    // other attributes, or tuples on it or naming it.
    let compound = max >= 2 && rng.gen_bool(0.35);
    for i in 0..n.max(usize::from(compound) * 2) {
        let d = if compound && i == 0 {
            m.add_entity(rng)
        } else if compound {
            m.change_created(rng)
        } else {
            m.delta(rng)
        };
        if let Delta::AddEntity { entity } = &d {
            let account = entity.account.clone().unwrap_or_else(|| entity.id.clone());
            m.created
                .push((format!("{}:{}", entity.ty, entity.id), account));
        }
        out.push(d);
    }
    out
}

impl Making<'_> {
    fn account_of(&self, name: &str) -> Option<&str> {
        self.created
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a.as_str())
            .or_else(|| self.pools.account_of.get(name).map(String::as_str))
    }

    /// An entity to name among those `fits` accepts: one created earlier in the list half
    /// the time, else one of the pool, of the author's account four times in five.
    fn named(&self, rng: &mut SmallRng, fits: &dyn Fn(&str) -> bool) -> Option<String> {
        let created: Vec<&String> = self
            .created
            .iter()
            .map(|(n, _)| n)
            .filter(|n| fits(n))
            .collect();
        if !created.is_empty() && rng.gen_bool(0.5) {
            return pick(rng, &created).map(|s| (*s).clone());
        }
        let home = self.home.filter(|_| rng.gen_bool(0.8));
        let names: Vec<&String> = self
            .pools
            .names
            .iter()
            .filter(|n| fits(n))
            .filter(|n| home.is_none() || self.account_of(n) == home)
            .collect();
        pick(rng, &names)
            .map(|s| (*s).clone())
            .or_else(|| pick(rng, &self.pools.names).cloned())
    }

    /// A change to the entity created first in the list: an attribute (roles half the
    /// time on a principal), a tuple on it, or a tuple naming it as subject.
    fn change_created(&self, rng: &mut SmallRng) -> Delta {
        let Some((created, _)) = self.created.first() else {
            return self.delta(rng);
        };
        let created = created.clone();
        let td = self.def(&created);
        match rng.gen_range(0..3) {
            0 => {
                let attr = match td {
                    Some(t) if t.principal && rng.gen_bool(0.5) => {
                        t.attrs.iter().find(|a| a.name == "roles")
                    }
                    Some(t) => pick(rng, &t.attrs),
                    None => None,
                };
                let Some(a) = attr else {
                    return self.delta(rng);
                };
                let value = if a.name == "roles" {
                    json!([pick(rng, &self.pools.roles).cloned().unwrap_or_default()])
                } else {
                    value(a, rng, &self.pools.strings, &self.pools.roles)
                };
                Delta::SetAttr {
                    entity: created,
                    attr: a.name.clone(),
                    value,
                }
            }
            1 => match self.add_tuple(rng) {
                Delta::AddTuple { tuple } if tuple.resource == created => Delta::AddTuple { tuple },
                _ => {
                    let Some(rel) = td.and_then(|t| pick(rng, &t.rels)) else {
                        return self.delta(rng);
                    };
                    let targets: Vec<&str> = rel
                        .targets
                        .iter()
                        .filter_map(|t| self.schema.ty(*t).map(|d| d.name.as_str()))
                        .collect();
                    let subject = self
                        .named(rng, &|n| targets.contains(&type_of(n)) && n != created)
                        .unwrap_or_else(|| self.any(rng));
                    Delta::AddTuple {
                        tuple: TupleJson {
                            resource: created,
                            relation: rel.name.clone(),
                            subject,
                            expires: None,
                        },
                    }
                }
            },
            _ => {
                // A relation of some type that takes the created entity's type.
                let ty = type_of(&created);
                let takes = |n: &str| {
                    self.def(n).is_some_and(|t| {
                        t.rels.iter().any(|r| {
                            r.targets
                                .iter()
                                .any(|x| self.schema.ty(*x).is_some_and(|d| d.name == ty))
                        })
                    })
                };
                let Some(resource) = self.named(rng, &|n| takes(n) && n != created) else {
                    return self.delta(rng);
                };
                let rels: Vec<&clearance_core::policy::RelDef> = self
                    .def(&resource)
                    .map(|t| {
                        t.rels
                            .iter()
                            .filter(|r| {
                                r.targets
                                    .iter()
                                    .any(|x| self.schema.ty(*x).is_some_and(|d| d.name == ty))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let Some(rel) = pick(rng, &rels) else {
                    return self.delta(rng);
                };
                Delta::AddTuple {
                    tuple: TupleJson {
                        resource,
                        relation: rel.name.clone(),
                        subject: created,
                        expires: None,
                    },
                }
            }
        }
    }

    fn any(&self, rng: &mut SmallRng) -> String {
        self.named(rng, &|_| true).unwrap_or_default()
    }

    fn def(&self, name: &str) -> Option<&clearance_core::policy::TypeDef> {
        self.schema
            .type_id(type_of(name))
            .and_then(|t| self.schema.ty(t))
    }

    fn delta(&self, rng: &mut SmallRng) -> Delta {
        match rng.gen_range(0..100) {
            0..25 => self.add_entity(rng),
            25..55 => self.set_attr(rng),
            55..80 => self.add_tuple(rng),
            80..90 => self.remove_tuple(rng),
            _ => {
                // Mostly of a type the policy lets an author delete.
                let ruled = rng.gen_bool(0.7);
                let fits = |n: &str| {
                    !ruled
                        || self
                            .def(n)
                            .is_some_and(|t| t.write_rule(WriteEvent::Delete, None).is_some())
                };
                Delta::RemoveEntity {
                    entity: self.named(rng, &fits).unwrap_or_else(|| self.any(rng)),
                }
            }
        }
    }

    /// Whether the policy has a rule for `event` on relation `rel` of `name`'s type.
    fn rel_ruled(&self, name: &str, event: WriteEvent, rel: &str) -> bool {
        self.def(name).is_some_and(|t| {
            t.rel(rel)
                .is_some_and(|r| t.write_rule(event, Some(r)).is_some())
        })
    }

    fn add_entity(&self, rng: &mut SmallRng) -> Delta {
        let creatable: Vec<String> = self
            .schema
            .types
            .iter()
            .filter(|t| t.write_rule(WriteEvent::Create, None).is_some())
            .map(|t| t.name.clone())
            .collect();
        let ty = if rng.gen_bool(0.85) {
            pick(rng, &creatable).cloned()
        } else {
            pick(rng, &self.schema.types).map(|t| t.name.clone())
        }
        .unwrap_or_else(|| "invitee".into());
        let id = pick(rng, &self.pools.new_ids)
            .map(|i| i.replace("{ty}", &ty))
            .unwrap_or_else(|| "new".into());
        let account = match self.home {
            Some(h) if rng.gen_bool(0.85) => h.to_string(),
            _ => pick(rng, &self.pools.accounts).cloned().unwrap_or_default(),
        };
        let mut attrs = attrs(
            self.schema,
            &ty,
            rng,
            &self.pools.strings,
            &self.pools.roles,
        );
        if ty == "role" {
            self.role_attrs(rng, &mut attrs);
        }
        // Roles at creation, or none, each a third of the time.
        if self.def(&format!("{ty}:")).is_some_and(|t| t.principal) {
            match rng.gen_range(0..3) {
                0 => {
                    let role = pick(rng, &self.pools.roles).cloned().unwrap_or_default();
                    attrs.insert("roles".into(), json!([role]));
                }
                1 => {
                    attrs.insert("roles".into(), json!([]));
                }
                _ => {}
            }
        }
        // An account names itself.
        let account = (ty != "account").then_some(account);
        Delta::AddEntity {
            entity: EntityJson {
                ty,
                id,
                account,
                attrs,
            },
        }
    }

    /// A custom role's attributes that mostly compile: a matrix of the policy, cells of
    /// its rows, and now and then a policy role of it to extend.
    fn role_attrs(&self, rng: &mut SmallRng, attrs: &mut BTreeMap<String, Value>) {
        let Some(m) = pick(rng, &self.schema.matrices) else {
            return;
        };
        let mut cells = Vec::new();
        for _ in 0..rng.gen_range(0..4) {
            let Some(row) = pick(rng, &m.rows) else { break };
            let cell = if m.levels && row.operation {
                format!(
                    "{}:{}",
                    row.name,
                    if rng.gen_bool(0.5) { "use" } else { "none" }
                )
            } else if m.levels {
                format!(
                    "{}:{}",
                    row.name,
                    pick(rng, &LEVELS).copied().unwrap_or("none")
                )
            } else {
                let actions: Vec<&str> = m
                    .actions
                    .iter()
                    .filter(|_| rng.gen_bool(0.5))
                    .map(String::as_str)
                    .collect();
                let first = m.actions.first().map_or("none", String::as_str);
                format!(
                    "{}:{}",
                    row.name,
                    if actions.is_empty() {
                        first.to_string()
                    } else {
                        actions.join("+")
                    }
                )
            };
            cells.push(cell);
        }
        attrs.insert("matrix".into(), json!(m.name));
        attrs.insert("cells".into(), json!(cells));
        let of_matrix: Vec<&String> = self
            .schema
            .roles
            .iter()
            .filter(|r| {
                self.schema
                    .matrices
                    .get(r.matrix as usize)
                    .is_some_and(|x| x.name == m.name)
            })
            .map(|r| &r.name)
            .collect();
        match pick(rng, &of_matrix) {
            Some(base) if rng.gen_bool(0.3) => {
                attrs.insert("extends".into(), json!(base));
            }
            _ => {
                attrs.remove("extends");
            }
        }
    }

    fn set_attr(&self, rng: &mut SmallRng) -> Delta {
        let entity = self.any(rng);
        let td = self.def(&entity);
        let ruled: Vec<&clearance_core::policy::AttrDef> = td
            .map(|t| {
                t.attrs
                    .iter()
                    .zip(0u16..)
                    .filter(|(_, i)| t.write_rule(WriteEvent::Set, Some(*i)).is_some())
                    .map(|(a, _)| a)
                    .collect()
            })
            .unwrap_or_default();
        let attr = match td {
            // Roles, the attribute that grants, half the time on a principal.
            Some(t) if t.principal && rng.gen_bool(0.5) => {
                t.attrs.iter().find(|a| a.name == "roles")
            }
            // An attribute the policy has a rule for, mostly.
            Some(t) => match pick(rng, &ruled) {
                Some(a) if rng.gen_bool(0.7) => Some(*a),
                _ => pick(rng, &t.attrs),
            },
            None => None,
        };
        let Some(a) = attr.filter(|_| rng.gen_bool(0.98)) else {
            return Delta::SetAttr {
                entity,
                attr: "no_such_attr".into(),
                value: json!(true),
            };
        };
        let value = match rng.gen_range(0..40) {
            0 => Value::Null,
            1 => json!({ "not": "a value" }),
            _ if a.name == "roles" => {
                let n = rng.gen_range(1..3);
                json!(
                    (0..n)
                        .filter_map(|_| pick(rng, &self.pools.roles).cloned())
                        .collect::<Vec<_>>()
                )
            }
            _ => value(a, rng, &self.pools.strings, &self.pools.roles),
        };
        Delta::SetAttr {
            entity,
            attr: a.name.clone(),
            value,
        }
    }

    fn add_tuple(&self, rng: &mut SmallRng) -> Delta {
        // Mostly a relation the policy has an `on add` rule for, or one of an entity
        // created in the list.
        let ruled = rng.gen_bool(0.7);
        let has_rels = |n: &str| {
            self.def(n).is_some_and(|t| {
                t.rels.iter().any(|r| {
                    !ruled
                        || self.created.iter().any(|(c, _)| c == n)
                        || self.rel_ruled(n, WriteEvent::Add, &r.name)
                })
            })
        };
        let resource = self.named(rng, &has_rels).unwrap_or_default();
        let td = self.def(&resource);
        let new = self.created.iter().any(|(c, _)| *c == resource);
        let rels: Vec<&clearance_core::policy::RelDef> = td
            .map(|t| {
                t.rels
                    .iter()
                    .filter(|r| {
                        !ruled || new || self.rel_ruled(&resource, WriteEvent::Add, &r.name)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let Some(rel) = pick(rng, &rels)
            .copied()
            .or_else(|| td.and_then(|t| pick(rng, &t.rels)))
        else {
            return Delta::AddTuple {
                tuple: TupleJson {
                    resource,
                    relation: "member".into(),
                    subject: self.any(rng),
                    expires: None,
                },
            };
        };
        let targets: Vec<&str> = rel
            .targets
            .iter()
            .filter_map(|t| self.schema.ty(*t).map(|d| d.name.as_str()))
            .collect();
        let account = self.account_of(&resource).map(str::to_string);
        let same = rng.gen_bool(0.9);
        let fits = |n: &str| {
            targets.contains(&type_of(n))
                && (!same || account.is_none() || self.account_of(n) == account.as_deref())
        };
        let subject = self.named(rng, &fits).unwrap_or_else(|| self.any(rng));
        Delta::AddTuple {
            tuple: TupleJson {
                resource,
                relation: rel.name.clone(),
                subject,
                expires: rng
                    .gen_bool(0.2)
                    .then(|| TimeValue::Seconds(EPOCH + rng.gen_range(-SPREAD..SPREAD))),
            },
        }
    }

    fn remove_tuple(&self, rng: &mut SmallRng) -> Delta {
        let ruled = rng.gen_bool(0.7);
        let home: Vec<&TupleJson> = self
            .pools
            .tuples
            .iter()
            .filter(|t| self.home.is_none() || self.account_of(&t.resource) == self.home)
            .filter(|t| !ruled || self.rel_ruled(&t.resource, WriteEvent::Remove, &t.relation))
            .collect();
        let from = if rng.gen_bool(0.8) && !home.is_empty() {
            pick(rng, &home).map(|t| (*t).clone())
        } else {
            pick(rng, &self.pools.tuples).cloned()
        };
        match from {
            Some(t) if rng.gen_bool(0.8) => Delta::RemoveTuple {
                tuple: TupleJson { expires: None, ..t },
            },
            _ => match self.add_tuple(rng) {
                Delta::AddTuple { tuple } => Delta::RemoveTuple { tuple },
                other => other,
            },
        }
    }
}
