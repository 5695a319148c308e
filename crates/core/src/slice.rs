//! Principal slices: the facts of one principal's account, cut down to what the policy
//! reads when it decides that principal's requests.
//!
//! [`Reads`] is what a policy reads: every permission, scope and gate is walked for the
//! attributes and relations its rules read, and what the engine reads by itself is
//! added (a principal's `roles`, custom roles, the account's `features` and
//! `setup_mode`, personnel authorisations). [`Reads::slice`] keeps every entity of the
//! principal's account (any of them may be a request's resource or target), each
//! attribute only where it is read, each tuple only where its relation is read, and
//! nothing of another account. A relation the policy reads only through `count(...)` (or
//! whose tuples it reads otherwise only where they name the principal) is carried as
//! numbers ([`CountsJson`]): per entity, how many subjects its counted relations hold and
//! when each stops counting, never who they are. A snapshot built from the slice decides
//! every request of that principal exactly as one built from the whole facts.
//!
//! Only the host slices; the module decides on slices but never makes one.

use crate::error::ErrorCode;
use crate::error::FactsError;
use crate::facts::{
    CountsJson, Delta, EntityCount, EntityJson, EntityRecord, Facts, FactsJson, TupleJson, TupleKey,
};
use crate::policy::{Base, Expr, Operand, Schema, TypeDef, TypeId};
use crate::snapshot::NEVER;
use crate::time::TimeValue;
use rustc_hash::FxHashMap;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// On which entities the policy reads an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrRead {
    /// On none: no decision depends on it.
    Unread,
    /// Only on the requesting principal itself: in a gate (which is evaluated on the
    /// principal), or the built-in `roles`, from which the principal's grants come.
    Principal,
    /// Only on the personnel authorisations the requesting principal holds (`holder`):
    /// the built-in attributes of `authorization`, which `authorized(...)` and matrix
    /// controls read.
    Held,
    /// On any entity of its type.
    Any,
}

/// Which tuples of a relation the policy reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelRead {
    /// None.
    Unread,
    /// Only those whose subject is the requesting principal: a relation named alone in a
    /// rule asks whether the principal is a subject, and the engine finds the
    /// principal's authorisations by their `holder`.
    Principal,
    /// Every tuple: a rule follows the relation (`->`, a path, `in`, `count`).
    Any,
}

impl AttrRead {
    /// Both reads: two different restricted reads make a read on any entity.
    fn join(self, other: AttrRead) -> AttrRead {
        match (self, other) {
            (a, b) if a == b => a,
            (AttrRead::Unread, x) | (x, AttrRead::Unread) => x,
            _ => AttrRead::Any,
        }
    }
}

impl RelRead {
    fn join(self, other: RelRead) -> RelRead {
        match (self, other) {
            (a, b) if a == b => a,
            (RelRead::Unread, x) | (x, RelRead::Unread) => x,
            _ => RelRead::Any,
        }
    }
}

/// What a policy reads, per attribute and relation of every type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reads {
    /// By type id, then attribute index.
    pub attrs: Vec<Vec<AttrRead>>,
    /// By type id, then relation index. A `count(...)` reads no tuple here: it reads
    /// numbers (`counts`).
    pub rels: Vec<Vec<RelRead>>,
    /// The sets of relations `count(...)` counts (a type, its relation indices ascending)
    /// whose tuples are not all read otherwise, in order: a slice carries, per entity, how
    /// many subjects they hold ([`CountsJson`]) in place of the tuples.
    pub counts: Vec<(TypeId, Vec<u16>)>,
}

/// Whether a rule is evaluated on the requesting principal itself (the top level of a
/// gate) or on any entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    Principal,
    Any,
}

impl Reads {
    /// Nothing read: every attribute and relation of `schema` unread.
    pub fn none(schema: &Schema) -> Reads {
        Reads {
            attrs: schema
                .types
                .iter()
                .map(|t| vec![AttrRead::Unread; t.attrs.len()])
                .collect(),
            rels: schema
                .types
                .iter()
                .map(|t| vec![RelRead::Unread; t.rels.len()])
                .collect(),
            counts: Vec::new(),
        }
    }

    /// What `schema` reads: its rules' reads and the engine's own.
    pub fn of(schema: &Schema) -> Reads {
        let mut r = Reads::none(schema);
        let mut authorisations = false;
        // Every type id of a compiled schema fits a `TypeId`.
        for (td, t) in schema.types.iter().zip(0..=TypeId::MAX) {
            for p in &td.perms {
                authorisations |= r.expr(&p.expr, t, p.target, On::Any);
            }
            for s in &td.scopes {
                authorisations |= r.expr(&s.expr, t, None, On::Any);
            }
            for g in &td.gates {
                authorisations |= r.expr(&g.expr, t, None, On::Principal);
            }
            // A write a page checks before it sends it keeps the invariants, as the host's.
            for i in &td.invariants {
                authorisations |= r.expr(&i.expr, t, None, On::Any);
            }
            // The principal's roles give its grants; only the requesting principal's are
            // consulted.
            if td.principal
                && let Some(a) = td.attr("roles")
            {
                r.attr(t, a, AttrRead::Principal);
            }
        }
        let b = &schema.builtins;
        // Every custom role of the account is compiled when a snapshot is built (any of
        // them may be extended by a role the principal holds) and is a line of the
        // access-rights matrix.
        for a in [
            b.role_attrs.matrix,
            b.role_attrs.extends,
            b.role_attrs.cells,
        ] {
            r.attr(b.role, a, AttrRead::Any);
        }
        for m in &schema.matrices {
            authorisations |= !m.controls.is_empty();
            if m.rows.iter().any(|row| row.feature.is_some()) {
                r.attr(b.account, b.account_attrs.features, AttrRead::Any);
            }
            if m.rows.iter().any(|row| row.setup_only) {
                r.attr(b.account, b.account_attrs.setup_mode, AttrRead::Any);
            }
        }
        if authorisations {
            let a = b.auth_attrs;
            for attr in [
                a.kind,
                a.valid_from,
                a.valid_until,
                a.scope,
                a.revoked,
                a.categories,
                a.chapters,
                a.task_kinds,
            ] {
                r.attr(b.authorization, attr, AttrRead::Held);
            }
            if let Some(h) = schema.ty(b.authorization).and_then(|td| td.rel("holder")) {
                r.rel(b.authorization, h, RelRead::Principal);
            }
            // The licence a held certification authorisation rests on.
            r.rel(b.authorization, a.licence, RelRead::Any);
            let l = b.licence_attrs;
            for attr in [l.categories, l.revoked] {
                r.attr(b.licence, attr, AttrRead::Held);
            }
        }
        // A relation's `until` attribute ends its tuples wherever they are read.
        for (td, t) in schema.types.iter().zip(0..=TypeId::MAX) {
            for (rd, i) in td.rels.iter().zip(0..=u16::MAX) {
                if let Some(u) = rd.until
                    && r.rel_read(t, i) != RelRead::Unread
                {
                    r.attr(t, u, AttrRead::Any);
                }
            }
        }
        // A count whose relations are all read whole is counted on the tuples; any other
        // is carried as numbers, which a slice computes with the relations' `until`.
        r.counts.sort_unstable();
        r.counts.dedup();
        let counts = std::mem::take(&mut r.counts);
        r.counts = counts
            .into_iter()
            .filter(|(t, rels)| rels.iter().any(|&i| r.rel_read(*t, i) != RelRead::Any))
            .collect();
        r
    }

    /// Whether relation `r` of type `t` is among the relations counted as numbers.
    pub fn counted(&self, t: TypeId, r: u16) -> bool {
        self.counts
            .iter()
            .any(|(ct, rels)| *ct == t && rels.contains(&r))
    }

    /// A relation counted as numbers whose subjects may be of type `t`: removing an entity
    /// of that type may change a count.
    fn counting(&self, schema: &Schema, t: TypeId) -> Option<String> {
        self.counts.iter().find_map(|(ct, rels)| {
            let td = schema.ty(*ct)?;
            rels.iter()
                .filter_map(|&i| td.rels.get(i as usize))
                .find(|rd| rd.targets.contains(&t))
                .map(|rd| format!("{}#{}", td.name, rd.name))
        })
    }

    /// Where attribute `a` of type `t` is read.
    pub fn attr_read(&self, t: TypeId, a: u16) -> AttrRead {
        self.attrs
            .get(t as usize)
            .and_then(|v| v.get(a as usize))
            .copied()
            .unwrap_or(AttrRead::Unread)
    }

    /// Which tuples of relation `r` of type `t` are read.
    pub fn rel_read(&self, t: TypeId, r: u16) -> RelRead {
        self.rels
            .get(t as usize)
            .and_then(|v| v.get(r as usize))
            .copied()
            .unwrap_or(RelRead::Unread)
    }

    fn attr(&mut self, t: TypeId, a: u16, read: AttrRead) {
        if let Some(x) = self
            .attrs
            .get_mut(t as usize)
            .and_then(|v| v.get_mut(a as usize))
        {
            *x = x.join(read);
        }
    }

    fn rel(&mut self, t: TypeId, r: u16, read: RelRead) {
        if let Some(x) = self
            .rels
            .get_mut(t as usize)
            .and_then(|v| v.get_mut(r as usize))
        {
            *x = x.join(read);
        }
    }

    /// Notes what `e`, a rule on type `ty` with target type `target`, reads; whether it
    /// checks a personnel authorisation. Permissions and scopes it names are walked on
    /// their own, as every rule of the policy is.
    fn expr(&mut self, e: &Expr, ty: TypeId, target: Option<TypeId>, on: On) -> bool {
        match e {
            Expr::Const(_) | Expr::Perm(..) | Expr::Scope(..) | Expr::Matrix { .. } => false,
            Expr::Or(v) | Expr::And(v) => v
                .iter()
                .fold(false, |acc, c| self.expr(c, ty, target, on) | acc),
            Expr::Minus(a, b, _) => self.expr(a, ty, target, on) | self.expr(b, ty, target, on),
            Expr::Not(a, _) | Expr::Separate(a, _) => self.expr(a, ty, target, on),
            Expr::Rel { rel, .. } => {
                self.rel(ty, *rel, RelRead::Principal);
                false
            }
            Expr::Arrow { rel, bodies, .. } => {
                self.rel(ty, *rel, RelRead::Any);
                bodies
                    .iter()
                    .fold(false, |acc, (t, b)| self.expr(b, *t, None, On::Any) | acc)
            }
            Expr::OnTarget(b) => self.expr(b, target.unwrap_or(ty), None, On::Any),
            Expr::Authorized { scope, limits, .. } => {
                for o in [scope, &limits.category, &limits.chapter, &limits.task_kind]
                    .into_iter()
                    .flatten()
                {
                    self.operand(o, on);
                }
                true
            }
            Expr::Cmp { lhs, rhs, .. } | Expr::In { lhs, rhs, .. } => {
                self.operand(lhs, on);
                self.operand(rhs, on);
                false
            }
        }
    }

    fn operand(&mut self, o: &Operand, on: On) {
        match o {
            Operand::Attr { base, path, attr } => {
                for &(t, r) in path {
                    self.rel(t, r, RelRead::Any);
                }
                let own = path.is_empty()
                    && (*base == Base::Principal
                        || (*base == Base::Current && on == On::Principal));
                let read = if own {
                    AttrRead::Principal
                } else {
                    AttrRead::Any
                };
                self.attr(attr.0, attr.1, read);
            }
            Operand::Entities { path: rels, .. } => {
                for &(t, r) in rels {
                    self.rel(t, r, RelRead::Any);
                }
            }
            // The number of subjects, not who they are.
            Operand::Count { rels, .. } => {
                if let Some(&(t, _)) = rels.first() {
                    let mut set: Vec<u16> = rels.iter().map(|&(_, r)| r).collect();
                    set.sort_unstable();
                    set.dedup();
                    self.counts.push((t, set));
                }
            }
            Operand::Now
            | Operand::Int(_)
            | Operand::Str(_)
            | Operand::Bool(_)
            | Operand::Enum(_)
            | Operand::This(_) => {}
        }
    }

    /// The slice of `facts` for `principal` (`type:id`) under these reads, which must be
    /// those of `schema` ([`Reads::of`]): every entity of the principal's account, with
    /// the attributes read on it, the tuples read of the account, and in `omitted` the
    /// attributes of each type present that are not read on every entity.
    pub fn slice(
        &self,
        schema: &Schema,
        facts: &Facts,
        principal: &str,
    ) -> Result<FactsJson, FactsError> {
        let at = format!("principal `{principal}`");
        let Some(p) = facts.entities.get(principal) else {
            return Err(FactsError::new(
                ErrorCode::SliceUnknownPrincipal,
                at,
                format!("no entity `{principal}`"),
            ));
        };
        if !schema
            .type_id(&p.ty)
            .and_then(|t| schema.ty(t))
            .is_some_and(|td| td.principal)
        {
            return Err(FactsError::new(
                ErrorCode::SliceNotPrincipal,
                at,
                format!("`{}` is not a principal type", p.ty),
            ));
        }
        let account = p.account.as_str();
        // The account's entities with their types.
        let mut members: FxHashMap<&str, TypeId> = FxHashMap::default();
        let mut in_account = Vec::new();
        for (key, e) in &facts.entities {
            if e.account != account {
                continue;
            }
            let Some(t) = schema.type_id(&e.ty) else {
                return Err(FactsError::new(
                    ErrorCode::FactsUnknownType,
                    format!("entity `{key}`"),
                    format!("unknown type `{}`", e.ty),
                ));
            };
            members.insert(key.as_str(), t);
            in_account.push((key, e, t));
        }
        let b = &schema.builtins;
        // The authorisations the principal holds, as the snapshot finds them: every
        // `holder` tuple naming it, expired or not.
        let mut held: BTreeSet<&str> = in_account
            .iter()
            .filter(|(key, _, t)| {
                *t == b.authorization
                    && tuples_of(facts, key)
                        .any(|((_, rel, s), _)| rel == "holder" && s == principal)
            })
            .map(|(key, _, _)| key.as_str())
            .collect();
        // And the licences they rest on.
        let licences: Vec<&str> = held
            .iter()
            .flat_map(|a| tuples_of(facts, a))
            .filter(|((_, rel, _), _)| rel == "licence")
            .map(|((_, _, s), _)| s.as_str())
            .collect();
        held.extend(licences);
        let mut entities = Vec::with_capacity(in_account.len());
        let mut tuples = Vec::new();
        for &(key, e, t) in &in_account {
            let Some(td) = schema.ty(t) else { continue };
            let keep = |name: &str| match td.attr(name).map(|a| self.attr_read(t, a)) {
                Some(AttrRead::Any) => true,
                Some(AttrRead::Principal) => key == principal,
                Some(AttrRead::Held) => held.contains(key.as_str()),
                Some(AttrRead::Unread) | None => false,
            };
            entities.push(EntityJson {
                ty: e.ty.clone(),
                id: e.id.clone(),
                account: (t != b.account).then(|| e.account.clone()),
                attrs: e
                    .attrs
                    .iter()
                    .filter(|(name, _)| keep(name))
                    .map(|(name, v)| (name.clone(), v.clone()))
                    .collect(),
            });
            for ((r, rel, s), exp) in tuples_of(facts, key) {
                let keep = match td.rel(rel).map(|i| self.rel_read(t, i)) {
                    Some(RelRead::Any) => true,
                    Some(RelRead::Principal) => s == principal,
                    Some(RelRead::Unread) | None => false,
                };
                if keep && members.contains_key(s.as_str()) {
                    tuples.push(TupleJson {
                        resource: r.clone(),
                        relation: rel.clone(),
                        subject: s.clone(),
                        expires: exp.map(TimeValue::Seconds),
                    });
                }
            }
        }
        // Every type of the policy, present or not, so that a follower adding the first
        // entity of a type ([`Reads::project`]) reads it as the slice after would.
        let mut omitted = BTreeMap::new();
        for t in (0..=TypeId::MAX).take(schema.types.len()) {
            let Some(td) = schema.ty(t) else { continue };
            let names: Vec<Value> = td
                .attrs
                .iter()
                .zip(0..=u16::MAX)
                .filter(|(_, a)| self.attr_read(t, *a) != AttrRead::Any)
                .map(|(ad, _)| Value::String(ad.name.clone()))
                .collect();
            if !names.is_empty() {
                omitted.insert(td.name.clone(), Value::Array(names));
            }
        }
        // The counted relations' numbers, of every entity of the account that holds any.
        let mut counts = Vec::with_capacity(self.counts.len());
        for (t, rels) in &self.counts {
            let Some(td) = schema.ty(*t) else { continue };
            let mut of = Vec::new();
            for &(key, e, _) in in_account.iter().filter(|(_, _, et)| et == t) {
                let c = entity_count(td, rels, facts, key, e)?;
                if c.subjects > 0 {
                    of.push(c);
                }
            }
            counts.push(CountsJson {
                ty: td.name.clone(),
                relations: rels
                    .iter()
                    .filter_map(|&i| td.rels.get(i as usize))
                    .map(|rd| rd.name.clone())
                    .collect(),
                of,
            });
        }
        Ok(FactsJson {
            revision: facts.revision,
            entities,
            tuples,
            omitted,
            counts,
        })
    }
}

/// What a `count(...)` of relations `rels` of entity `key` (`e`, of type `td`) needs:
/// its distinct subjects and when their tuples end, each tuple's end bounded by its
/// relation's `until` as a snapshot bounds it.
fn entity_count(
    td: &TypeDef,
    rels: &[u16],
    facts: &Facts,
    key: &str,
    e: &EntityRecord,
) -> Result<EntityCount, FactsError> {
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    let mut ends = BTreeSet::new();
    for ((_, rel, s), exp) in tuples_of(facts, key) {
        let Some(rd) = td
            .rel(rel)
            .filter(|i| rels.contains(i))
            .and_then(|i| td.rels.get(i as usize))
        else {
            continue;
        };
        let mut end = exp.unwrap_or(NEVER);
        if let Some(bound) = rd
            .until
            .and_then(|u| td.attrs.get(u as usize))
            .and_then(|ad| e.attrs.get(&ad.name))
        {
            let bound = seconds(bound).map_err(|m| {
                FactsError::new(ErrorCode::FactsInvalidValue, format!("entity `{key}`"), m)
            })?;
            if let Some(b) = bound.filter(|&b| b != crate::snapshot::NONE_I64) {
                end = end.min(b);
            }
        }
        let l = last.entry(s.as_str()).or_insert(end);
        *l = (*l).max(end);
        if end != NEVER {
            ends.insert(end);
        }
    }
    let mut subject_ends: Vec<i64> = last.values().copied().filter(|&t| t != NEVER).collect();
    subject_ends.sort_unstable();
    let tuple_ends = ends
        .into_iter()
        .filter(|t| subject_ends.binary_search(t).is_err())
        .collect();
    let subjects = u32::try_from(last.len()).map_err(|_| {
        FactsError::new(
            ErrorCode::FactsTooLarge,
            format!("entity `{key}`"),
            "more subjects than a count holds",
        )
    })?;
    Ok(EntityCount {
        id: e.id.clone(),
        subjects,
        subject_ends,
        tuple_ends,
    })
}

/// A timestamp attribute's value in seconds, read as a snapshot reads it; `None` when it
/// is null.
fn seconds(v: &Value) -> Result<Option<i64>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("expected a timestamp, found `{n}`")),
        Value::String(s) => crate::time::parse(s).map(Some),
        _ => Err("expected a timestamp (RFC 3339 text or seconds)".into()),
    }
}

/// What a follower of a principal's slice takes from a change ([`Reads::project`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Projected {
    /// These deltas (perhaps none), applied to the slice before the change, give the
    /// slice after it.
    Deltas(Vec<Delta>),
    /// The change cannot be followed by deltas (why): fetch the slice again.
    Refetch(String),
}

impl Reads {
    /// `deltas`, one change, as they apply to the slice of `principal` (of account
    /// `account`) under these reads, which must be those of `schema`: the deltas on the
    /// account's entities that touch what the slice keeps, attributes cut as the slice
    /// cuts them. `account_of` answers the account of an entity a delta names (before or
    /// after the change); an entity added by the change is known from it. A change that
    /// moves which authorisations the principal holds, sets an attribute read only on
    /// held authorisations, may change a number the slice carries in place of tuples (a
    /// tuple of a counted relation, the `until` bounding one, an entity removed that may
    /// be counted), or names an entity whose account or type is unknown, is not followed:
    /// [`Projected::Refetch`].
    pub fn project(
        &self,
        schema: &Schema,
        principal: &str,
        account: &str,
        deltas: &[Delta],
        account_of: impl Fn(&str) -> Option<String>,
    ) -> Projected {
        let b = &schema.builtins;
        let mut added: BTreeMap<String, String> = BTreeMap::new();
        let mut out = Vec::new();
        let refetch = |m: String| Projected::Refetch(m);
        for d in deltas {
            let named = match d {
                Delta::AddEntity { entity } => crate::facts::entity_key(&entity.ty, &entity.id),
                Delta::RemoveEntity { entity } | Delta::SetAttr { entity, .. } => entity.clone(),
                Delta::AddTuple { tuple } | Delta::RemoveTuple { tuple } => tuple.resource.clone(),
            };
            let Some(t) = named.split_once(':').and_then(|(ty, _)| schema.type_id(ty)) else {
                return refetch(format!("`{named}` is of no type of the policy"));
            };
            let Some(td) = schema.ty(t) else {
                return refetch(format!("`{named}` is of no type of the policy"));
            };
            let acct = match d {
                Delta::AddEntity { entity } => {
                    let a = if t == b.account {
                        entity.id.clone()
                    } else {
                        entity.account.clone().unwrap_or_default()
                    };
                    added.insert(named.clone(), a.clone());
                    Some(a)
                }
                _ => added.get(&named).cloned().or_else(|| account_of(&named)),
            };
            let Some(acct) = acct else {
                return refetch(format!("the account of `{named}` is not known"));
            };
            if acct != account {
                continue;
            }
            match d {
                Delta::AddEntity { entity } => {
                    // A new entity is held by nobody yet: attributes read only on held
                    // authorisations are left out, as the slice leaves them out.
                    let attrs = entity
                        .attrs
                        .iter()
                        .filter(
                            |(name, _)| match td.attr(name).map(|a| self.attr_read(t, a)) {
                                Some(AttrRead::Any) => true,
                                Some(AttrRead::Principal) => named == principal,
                                Some(AttrRead::Held | AttrRead::Unread) | None => false,
                            },
                        )
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    out.push(Delta::AddEntity {
                        entity: EntityJson {
                            attrs,
                            ..entity.clone()
                        },
                    });
                }
                // The licences a slice keeps are those of the authorisations its principal
                // holds, which a follower does not know of others: removing one is not
                // followed.
                Delta::RemoveEntity { .. } if t == b.authorization => {
                    return refetch(format!("the authorisation `{named}` is removed"));
                }
                // Counts are carried without their subjects' names: whether the entity
                // removed was counted is not known here.
                Delta::RemoveEntity { .. } => match self.counting(schema, t) {
                    Some(counted) => {
                        return refetch(format!(
                            "`{named}` may be counted in `{counted}`, which the slice holds as numbers"
                        ));
                    }
                    None => out.push(d.clone()),
                },
                Delta::SetAttr { attr, .. }
                    if td.attr(attr).is_some_and(|a| {
                        td.rels
                            .iter()
                            .zip(0..=u16::MAX)
                            .any(|(rd, i)| rd.until == Some(a) && self.counted(t, i))
                    }) =>
                {
                    return refetch(format!(
                        "`{attr}` of `{named}` ends tuples the slice holds as numbers"
                    ));
                }
                Delta::SetAttr { attr, .. } => match td.attr(attr).map(|a| self.attr_read(t, a)) {
                    Some(AttrRead::Any) => out.push(d.clone()),
                    Some(AttrRead::Principal) if named == principal => out.push(d.clone()),
                    Some(AttrRead::Held) => {
                        return refetch(format!(
                            "`{attr}` of `{named}` is read only where the principal holds it"
                        ));
                    }
                    Some(AttrRead::Principal | AttrRead::Unread) | None => {}
                },
                Delta::AddTuple { tuple } | Delta::RemoveTuple { tuple } => {
                    // A tuple whose subject is of another account cannot outlast the
                    // change (facts link no two accounts): a later delta of the same
                    // change removes it or its subject, and neither is the follower's.
                    let subject = added
                        .get(&tuple.subject)
                        .cloned()
                        .or_else(|| account_of(&tuple.subject));
                    match subject {
                        None => {
                            return refetch(format!(
                                "the account of `{}` is not known",
                                tuple.subject
                            ));
                        }
                        Some(a) if a != account => continue,
                        Some(_) => {}
                    }
                    if t == b.authorization
                        && tuple.relation == "holder"
                        && tuple.subject == principal
                    {
                        return refetch(format!(
                            "the authorisations `{principal}` holds change (`{named}`)"
                        ));
                    }
                    if t == b.authorization && tuple.relation == "licence" {
                        return refetch(format!("the licence `{named}` rests on changes"));
                    }
                    if td.rel(&tuple.relation).is_some_and(|i| self.counted(t, i)) {
                        return refetch(format!(
                            "the number of subjects of `{named}#{}`, which the slice holds as a number, may change",
                            tuple.relation
                        ));
                    }
                    match td.rel(&tuple.relation).map(|i| self.rel_read(t, i)) {
                        Some(RelRead::Any) => out.push(d.clone()),
                        Some(RelRead::Principal) if tuple.subject == principal => {
                            out.push(d.clone());
                        }
                        Some(RelRead::Principal | RelRead::Unread) | None => {}
                    }
                }
            }
        }
        Projected::Deltas(out)
    }
}

/// The facts that can influence `principal`'s decisions: [`Reads::slice`] with the reads
/// of `schema`. A snapshot built from the slice decides every request of that principal
/// (checks, explanations, allowed actions, listed resources) as one built from `facts`.
pub fn principal_slice(
    schema: &Schema,
    facts: &Facts,
    principal: &str,
) -> Result<FactsJson, FactsError> {
    Reads::of(schema).slice(schema, facts, principal)
}

/// The tuples on entity `key`, found as a range: facts order tuples by their entity.
fn tuples_of<'a>(
    facts: &'a Facts,
    key: &'a str,
) -> impl Iterator<Item = (&'a TupleKey, &'a Option<i64>)> {
    facts
        .tuples
        .range((key.to_string(), String::new(), String::new())..)
        .take_while(move |((r, _, _), _)| r == key)
}
