//! A reference judgement of a write, written from the rules `writes.rs` documents (X4) and
//! the facts before and after the write rather than from its deltas' order: what the
//! write changed, and for each change the rule its author must pass.
//!
//! - an entity created needs its type's `on create`, judged on the state after;
//!   one removed needs `on delete`, judged on the state before;
//! - an attribute changed on an entity that existed needs its `on set`, judged before;
//!   on an entity created in the write, its `on set` if the policy has one (judged
//!   after), and otherwise the creation covers it, except a principal's non-empty
//!   `roles`, which always need `on set roles`: roles grant access however they are set;
//! - a tuple added (or given another expiry) needs its relation's `on add` for the
//!   author with the subject as target, judged after when either end is created in the
//!   write and before otherwise; without a rule, only on an entity created in the write;
//! - a tuple removed (not with one of its ends) needs `on remove`, judged before;
//! - every entity the write names is in the author's account.
//!
//! Invariants (`write.invariant`) are not judged here. A write the pipeline allows must
//! pass every one of these; each failure is a [`Violation`].

use crate::random_deltas::type_of;
use clearance_core::policy::{Expr, Operand, WriteEvent};
use clearance_core::{Delta, Facts, Request, Schema, Snapshot, TimeValue};
use serde_json::Value;
use std::collections::BTreeSet;

/// What kind of change a violation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A principal's `roles`.
    Roles,
    /// An attribute a gate reads.
    Gate,
    /// Another attribute.
    Attr,
    /// A tuple added.
    TupleAdded,
    /// A tuple removed.
    TupleRemoved,
    /// An entity created or removed.
    Entity,
    /// An entity outside the author's account named by the write.
    Tenancy,
    /// The facts do not take what the snapshot took.
    Facts,
}

/// A change the write made that its author may not make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// What kind of change.
    pub kind: Kind,
    /// The change and the rule, in words.
    pub what: String,
}

/// The attributes (`type`, `attr`) the gates of `schema` read, on the principal or
/// through it, following the permissions and scopes they name.
pub fn gate_attrs(schema: &Schema) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for td in &schema.types {
        for g in &td.gates {
            walk(schema, &g.expr, &mut out, &mut seen);
        }
    }
    out
}

fn walk(
    schema: &Schema,
    e: &Expr,
    out: &mut BTreeSet<(String, String)>,
    seen: &mut BTreeSet<(bool, u16, u16)>,
) {
    let operand = |o: &Operand, out: &mut BTreeSet<(String, String)>| {
        if let Operand::Attr { attr: (t, a), .. } = o
            && let Some(td) = schema.ty(*t)
            && let Some(ad) = td.attrs.get(*a as usize)
        {
            out.insert((td.name.clone(), ad.name.clone()));
        }
    };
    match e {
        Expr::Const(_) | Expr::Rel { .. } | Expr::Matrix { .. } => {}
        Expr::Or(v) | Expr::And(v) => v.iter().for_each(|c| walk(schema, c, out, seen)),
        Expr::Minus(a, b, _) => {
            walk(schema, a, out, seen);
            walk(schema, b, out, seen);
        }
        Expr::Not(a, _) | Expr::Separate(a, _) | Expr::OnTarget(a) => walk(schema, a, out, seen),
        Expr::Arrow { bodies, .. } => bodies.iter().for_each(|(_, b)| walk(schema, b, out, seen)),
        Expr::Perm(t, i) | Expr::Scope(t, i) => {
            let perm = matches!(e, Expr::Perm(..));
            if !seen.insert((perm, *t, *i)) {
                return;
            }
            let td = schema.ty(*t);
            let body = if perm {
                td.and_then(|d| d.perms.get(*i as usize)).map(|p| &p.expr)
            } else {
                td.and_then(|d| d.scopes.get(*i as usize)).map(|s| &s.expr)
            };
            if let Some(b) = body {
                walk(schema, b, out, seen);
            }
        }
        Expr::Authorized { scope, limits, .. } => {
            for o in [scope, &limits.category, &limits.chapter, &limits.task_kind]
                .into_iter()
                .flatten()
            {
                operand(o, out);
            }
        }
        Expr::Cmp { lhs, rhs, .. } | Expr::In { lhs, rhs, .. } => {
            operand(lhs, out);
            operand(rhs, out);
        }
    }
}

/// A write, with the states around it.
pub struct Judged<'a> {
    /// The policy.
    pub schema: &'a Schema,
    /// The facts before the write.
    pub before: &'a Facts,
    /// Decides on the facts before.
    pub before_snap: &'a Snapshot,
    /// Decides on the facts after (the write and what it derived).
    pub after_snap: &'a Snapshot,
    /// The author.
    pub author: &'a str,
    /// The write's time.
    pub now: &'a TimeValue,
    /// The deltas asked for.
    pub deltas: &'a [Delta],
    /// The deltas the policy derived (`auto add`).
    pub derived: &'a [Delta],
    /// The attributes gates read.
    pub gates: &'a BTreeSet<(String, String)>,
}

impl Judged<'_> {
    /// Whether the author holds permission `perm` of `entity`'s type on `entity` in
    /// `snap`, with `target` when the permission takes one.
    fn permits(&self, snap: &Snapshot, entity: &str, perm: u16, target: Option<&str>) -> bool {
        let Some(td) = self
            .schema
            .type_id(type_of(entity))
            .and_then(|t| self.schema.ty(t))
        else {
            return false;
        };
        let Some(p) = td.perms.get(perm as usize) else {
            return false;
        };
        let request = Request {
            principal: self.author.to_string(),
            action: p.name.clone(),
            resource: entity.to_string(),
            target: p.target.and(target.map(str::to_string)),
            now: self.now.clone(),
        };
        snap.check(&request).allowed
    }

    /// The changes of the write its author may not make.
    pub fn violations(&self) -> Vec<Violation> {
        let all: Vec<Delta> = self.deltas.iter().chain(self.derived).cloned().collect();
        let after = match self.before.apply(&all) {
            Ok(f) => f,
            Err(e) => {
                return vec![Violation {
                    kind: Kind::Facts,
                    what: format!("the facts refuse the write the snapshot took: {e}"),
                }];
            }
        };
        let created: BTreeSet<String> = self
            .deltas
            .iter()
            .filter_map(|d| match d {
                Delta::AddEntity { entity } => Some(format!("{}:{}", entity.ty, entity.id)),
                _ => None,
            })
            .filter(|k| after.entities.contains_key(k))
            .collect();
        let removed: BTreeSet<String> = self
            .deltas
            .iter()
            .filter_map(|d| match d {
                Delta::RemoveEntity { entity } => Some(entity.clone()),
                _ => None,
            })
            .filter(|k| self.before.entities.contains_key(k))
            .collect();
        let mut out = Vec::new();
        let mut fail = |kind: Kind, what: String| out.push(Violation { kind, what });
        let rule_of = |name: &str, event: WriteEvent, member: Option<&str>| {
            let td = self
                .schema
                .type_id(type_of(name))
                .and_then(|t| self.schema.ty(t))?;
            let m = match (event, member) {
                (WriteEvent::Set, Some(a)) => Some(td.attr(a)?),
                (WriteEvent::Add | WriteEvent::Remove, Some(r)) => Some(td.rel(r)?),
                _ => None,
            };
            td.write_rule(event, m).map(|w| w.perm)
        };
        let account_of = |name: &str| {
            after
                .entities
                .get(name)
                .or_else(|| self.before.entities.get(name))
                .map(|e| e.account.clone())
        };
        let own = account_of(self.author);
        for d in self.deltas {
            let named: Vec<String> = match d {
                Delta::AddEntity { entity } => vec![format!("{}:{}", entity.ty, entity.id)],
                Delta::RemoveEntity { entity } | Delta::SetAttr { entity, .. } => {
                    vec![entity.clone()]
                }
                Delta::AddTuple { tuple } | Delta::RemoveTuple { tuple } => {
                    vec![tuple.resource.clone(), tuple.subject.clone()]
                }
            };
            for n in named {
                let theirs = account_of(&n);
                if theirs.is_none() || theirs != own {
                    fail(
                        Kind::Tenancy,
                        format!("names `{n}` of account {theirs:?}, the author's is {own:?}"),
                    );
                }
            }
        }
        for key in &created {
            match rule_of(key, WriteEvent::Create, None) {
                Some(p) if self.permits(self.after_snap, key, p, None) => {}
                Some(_) => fail(Kind::Entity, format!("created `{key}`: `on create` denies")),
                None => fail(Kind::Entity, format!("created `{key}`: no `on create`")),
            }
        }
        for key in &removed {
            match rule_of(key, WriteEvent::Delete, None) {
                Some(p) if self.permits(self.before_snap, key, p, None) => {}
                Some(_) => fail(Kind::Entity, format!("removed `{key}`: `on delete` denies")),
                None => fail(Kind::Entity, format!("removed `{key}`: no `on delete`")),
            }
        }
        for (key, e) in &after.entities {
            let new = created.contains(key);
            let old = match self.before.entities.get(key) {
                Some(b) if !new => Some(&b.attrs),
                _ => None,
            };
            let principal = self
                .schema
                .type_id(&e.ty)
                .and_then(|t| self.schema.ty(t))
                .is_some_and(|t| t.principal);
            let names: BTreeSet<&String> = e
                .attrs
                .keys()
                .chain(old.into_iter().flatten().map(|(k, _)| k))
                .collect();
            for a in names {
                let now_v = e.attrs.get(a).unwrap_or(&Value::Null);
                let was = old.and_then(|o| o.get(a)).unwrap_or(&Value::Null);
                if now_v == was {
                    continue;
                }
                let kind = if principal && a == "roles" {
                    Kind::Roles
                } else if self.gates.contains(&(e.ty.clone(), a.clone())) {
                    Kind::Gate
                } else {
                    Kind::Attr
                };
                let (snap, when) = if new {
                    (self.after_snap, "after")
                } else {
                    (self.before_snap, "before")
                };
                let given = now_v.as_array().is_some_and(|v| !v.is_empty());
                let change = |new: bool| {
                    if new {
                        format!("`{key}.{a}` = {now_v} on an entity created in the write")
                    } else {
                        format!("`{key}.{a}` {was} -> {now_v}")
                    }
                };
                match rule_of(key, WriteEvent::Set, Some(a)) {
                    Some(p) if self.permits(snap, key, p, None) => {}
                    Some(_) => fail(
                        kind,
                        format!(
                            "{}: `on set {a}` denies `{}` ({when})",
                            change(new),
                            self.author
                        ),
                    ),
                    None if new && !(kind == Kind::Roles && given) => {}
                    None => fail(kind, format!("{}: no `on set {a}` rule", change(new))),
                }
            }
        }
        for ((r, rel, s), exp) in &after.tuples {
            let key = (r.clone(), rel.clone(), s.clone());
            if self.before.tuples.get(&key) == Some(exp)
                && !created.contains(r)
                && !created.contains(s)
            {
                continue;
            }
            let new = created.contains(r) || created.contains(s);
            let snap = if new {
                self.after_snap
            } else {
                self.before_snap
            };
            match rule_of(r, WriteEvent::Add, Some(rel)) {
                Some(p) if self.permits(snap, r, p, Some(s)) => {}
                Some(_) => fail(
                    Kind::TupleAdded,
                    format!(
                        "added `{r}#{rel}@{s}`: `on add {rel}` denies `{}`",
                        self.author
                    ),
                ),
                None if created.contains(r) => {}
                None => fail(
                    Kind::TupleAdded,
                    format!("added `{r}#{rel}@{s}`: no `on add {rel}` rule"),
                ),
            }
        }
        for (r, rel, s) in self.before.tuples.keys() {
            let key = (r.clone(), rel.clone(), s.clone());
            if after.tuples.contains_key(&key) || removed.contains(r) || removed.contains(s) {
                continue;
            }
            match rule_of(r, WriteEvent::Remove, Some(rel)) {
                Some(p) if self.permits(self.before_snap, r, p, Some(s)) => {}
                Some(_) => fail(
                    Kind::TupleRemoved,
                    format!(
                        "removed `{r}#{rel}@{s}`: `on remove {rel}` denies `{}`",
                        self.author
                    ),
                ),
                None => fail(
                    Kind::TupleRemoved,
                    format!("removed `{r}#{rel}@{s}`: no `on remove {rel}` rule"),
                ),
            }
        }
        out
    }
}
