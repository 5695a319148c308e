//! Name resolution: the passes that declare every type, member, matrix and row of a
//! policy set and give each a dense id, then compile every permission, scope, gate, write
//! rule and automatic relation over those ids. [`Compiler`] holds what the passes have
//! declared so far and the errors they found.
//!
//! Each id is checked to fit its integer type: a policy set with more types, members,
//! rows, matrices, rules or string literals than ids can name is refused at the first one
//! too many, never given an id that another already has.

use super::ast::{self, Decl, FieldType, Member, TypeDecl, WriteEvent};
use super::types::{
    AccountAttrs, AttrDef, AuthorizationAttrs, Builtins, ControlDef, Expr, LEVEL_ACTIONS,
    LicenceAttrs, MatrixDef, MemberRef, NamedRule, PermDef, RelDef, RoleAttrs, RowDef, Rule,
    RuleId, StrId, TypeDef, TypeId, ValueType, WriteRule,
};
use crate::error::{PolicyError, Span};
use std::collections::{BTreeMap, BTreeSet};

/// Where an expression is compiled: the current type, the target's type, and the rule it
/// is part of.
#[derive(Clone, Copy)]
pub(super) struct Scope {
    /// The type the rule is evaluated on.
    pub(super) ty: TypeId,
    /// The type of the permission's target, if it takes one.
    pub(super) target: Option<TypeId>,
    /// The permission, scope or gate being compiled.
    pub(super) owner: RuleOwner,
}

/// The permission, scope or gate a rule is part of, for the names of its rules.
#[derive(Clone, Copy)]
pub(super) struct RuleOwner {
    /// Its type.
    pub(super) ty: TypeId,
    /// What it is.
    pub(super) kind: RuleKind,
    /// Its index among the type's permissions, scopes or gates.
    pub(super) idx: u16,
}

/// What kind of named rule a [`RuleOwner`] is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum RuleKind {
    /// A permission (`TypeDef::perms`).
    Permission,
    /// A scope (`TypeDef::scopes`).
    Scope,
    /// A gate (`TypeDef::gates`).
    Gate,
    /// An invariant (`TypeDef::invariants`).
    Invariant,
}

/// What the passes have declared and compiled so far, and the errors they found.
#[derive(Default)]
pub(super) struct Compiler {
    /// Every error, in the order found.
    pub(super) errors: Vec<PolicyError>,
    /// Entity types, by id.
    pub(super) types: Vec<TypeDef>,
    /// Type ids by name.
    pub(super) type_index: BTreeMap<String, TypeId>,
    /// Where each type is first declared.
    type_spans: Vec<Span>,
    /// Every rule, by id.
    pub(super) rules: Vec<Rule>,
    /// String literals, by id.
    pub(super) literals: Vec<String>,
    /// Literal ids by text.
    literal_index: BTreeMap<String, StrId>,
    /// The rule of each authorisation kind.
    kind_rules: BTreeMap<String, RuleId>,
    /// Role matrices, by id.
    pub(super) matrices: Vec<MatrixDef>,
    /// Matrix ids by name.
    pub(super) matrix_index: BTreeMap<String, u16>,
    /// The limits already reported, so each is reported once.
    limits_reported: BTreeSet<String>,
}

/// The id of the item after `len` others, if it is below `max`. The largest value of
/// each id type is never an id (`u16::MAX` is evaluation's "no type").
pub(super) fn next_id<I: TryFrom<usize> + PartialOrd>(len: usize, max: I) -> Option<I> {
    I::try_from(len).ok().filter(|id| *id < max)
}

/// Names for an error message: "`a`, `b`", or "none".
pub(super) fn list<'a>(it: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<String> = it.map(|s| format!("`{s}`")).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// The type declarations, in order (a type may be declared in several parts).
fn type_decls(decls: &[Decl]) -> impl Iterator<Item = &TypeDecl> {
    decls.iter().filter_map(|d| match d {
        Decl::Type(t) => Some(t),
        _ => None,
    })
}

/// Words a member cannot be named: the rule language gives them a meaning.
const RESERVED_MEMBERS: [&str; 11] = [
    "principal",
    "resource",
    "target",
    "account",
    "now",
    "count",
    "role",
    "authorized",
    "separate",
    "true",
    "false",
];

/// Words a type cannot be named.
const RESERVED_TYPES: [&str; 5] = ["principal", "resource", "target", "now", "account_of"];

impl Compiler {
    pub(super) fn err(&mut self, span: &Span, msg: impl Into<String>) {
        self.errors.push(PolicyError::new(span.clone(), msg));
    }

    /// Refuses `name`, one item too many of `whole`, which takes at most `max` `items`;
    /// only the first item past each limit is reported.
    pub(super) fn too_many(&mut self, span: &Span, whole: &str, max: u64, items: &str, name: &str) {
        if self.limits_reported.insert(format!("{whole} {items}")) {
            self.err(
                span,
                format!("{whole} takes at most {max} {items}: `{name}` is one too many"),
            );
        }
    }

    /// The id of a string literal, written at `span`. Past the limit the literal is
    /// refused and the id returned is a placeholder: the policy does not compile.
    pub(super) fn literal(&mut self, s: &str, span: &Span) -> StrId {
        if let Some(id) = self.literal_index.get(s) {
            return *id;
        }
        let Some(id) = next_id(self.literals.len(), StrId::MAX) else {
            self.too_many(
                span,
                "a policy set",
                StrId::MAX.into(),
                "string literals",
                s,
            );
            return 0;
        };
        self.literals.push(s.to_string());
        self.literal_index.insert(s.to_string(), id);
        id
    }

    /// A new rule. Past the limit the rule is refused and the id returned is a
    /// placeholder: the policy does not compile.
    pub(super) fn rule(&mut self, owner: String, text: String, span: &Span) -> RuleId {
        let Some(id) = next_id(self.rules.len(), RuleId::MAX) else {
            self.too_many(span, "a policy set", RuleId::MAX.into(), "rules", &owner);
            return 0;
        };
        self.rules.push(Rule {
            owner,
            text,
            span: span.clone(),
        });
        id
    }

    /// The one rule of an authorisation kind, shared by every control and `authorized`
    /// check of that kind, so a decision names each failed authorisation once.
    pub(super) fn kind_rule(&mut self, kind: &ast::Name) -> RuleId {
        if let Some(r) = self.kind_rules.get(&kind.text) {
            return *r;
        }
        let r = self.rule(
            format!("authorization.{kind}"),
            format!("a valid `{kind}` personnel authorisation"),
            &kind.span,
        );
        self.kind_rules.insert(kind.text.clone(), r);
        r
    }

    pub(super) fn type_name(&self, t: TypeId) -> &str {
        self.types.get(t as usize).map_or("?", |t| t.name.as_str())
    }

    /// The index of the next of a type's members of one kind (`items`, of which it has
    /// `len`), or an error at `name` if the type has as many as indices can name.
    fn next_member(
        &mut self,
        tid: TypeId,
        len: impl Fn(&TypeDef) -> usize,
        items: &str,
        name: &ast::Name,
    ) -> Option<u16> {
        let td = self.types.get(tid as usize)?;
        let id = next_id(len(td), u16::MAX);
        if id.is_none() {
            let whole = format!("type `{}`", td.name);
            self.too_many(&name.span, &whole, u16::MAX.into(), items, &name.text);
        }
        id
    }

    /// Pass 0: the rules of the request's fields, ids `0..=4` in the order of
    /// [`crate::decision::field`], which structural reasons name.
    pub(super) fn request_rules(&mut self) {
        let request = Span {
            file: "<request>".into(),
            line: 1,
            col: 1,
        };
        for f in ["principal", "resource", "action", "target", "now"] {
            self.rule("request".into(), f.into(), &request);
        }
    }

    /// Pass 1: the types, by name (the parts of a type declared more than once are one
    /// type), whether each is a principal type, and no type named by a reserved word.
    pub(super) fn declare_types(&mut self, decls: &[Decl]) {
        for t in type_decls(decls) {
            let id = match self.type_index.get(&t.name.text) {
                Some(id) => *id,
                None => {
                    let Some(id) = next_id(self.types.len(), TypeId::MAX) else {
                        self.too_many(
                            &t.name.span,
                            "a policy set",
                            TypeId::MAX.into(),
                            "types",
                            &t.name.text,
                        );
                        continue;
                    };
                    self.types.push(TypeDef {
                        name: t.name.text.clone(),
                        principal: false,
                        attrs: Vec::new(),
                        rels: Vec::new(),
                        perms: Vec::new(),
                        scopes: Vec::new(),
                        gates: Vec::new(),
                        invariants: Vec::new(),
                        members: BTreeMap::new(),
                        writes: Vec::new(),
                        autos: Vec::new(),
                    });
                    self.type_spans.push(t.name.span.clone());
                    self.type_index.insert(t.name.text.clone(), id);
                    id
                }
            };
            if t.principal
                && let Some(td) = self.types.get_mut(id as usize)
            {
                td.principal = true;
            }
        }
        for reserved in RESERVED_TYPES {
            if let Some(id) = self.type_index.get(reserved) {
                // Every type has the span of its first declaration.
                let span = self
                    .type_spans
                    .get(*id as usize)
                    .cloned()
                    .unwrap_or_else(|| Span {
                        file: String::new(),
                        line: 0,
                        col: 0,
                    });
                self.err(
                    &span,
                    format!("`{reserved}` is a reserved word and cannot name a type"),
                );
            }
        }
    }

    /// Pass 2: the attributes and relations of every type, the built-in `roles`
    /// attribute of principal types first.
    pub(super) fn declare_fields(&mut self, decls: &[Decl]) {
        let principal_types: Vec<TypeId> = self
            .types
            .iter()
            .zip(0..=TypeId::MAX)
            .filter(|(t, _)| t.principal)
            .map(|(_, id)| id)
            .collect();
        for t in principal_types.iter().copied() {
            if let Some(td) = self.types.get_mut(t as usize) {
                // No attribute is declared yet, so `roles` is attribute 0.
                td.attrs.push(AttrDef {
                    name: "roles".into(),
                    ty: ValueType::StrSet,
                    optional: false,
                });
                td.members.insert("roles".into(), MemberRef::Attr(0));
            }
        }
        for t in type_decls(decls) {
            let Some(&tid) = self.type_index.get(&t.name.text) else {
                continue;
            };
            for m in &t.members {
                let Member::Field {
                    name, ty, optional, ..
                } = m
                else {
                    continue;
                };
                let member = match ty {
                    FieldType::Entities(names) => {
                        let mut targets = Vec::new();
                        for n in names {
                            if n.text == "principal" {
                                targets.extend(principal_types.iter().copied());
                            } else {
                                match self.type_index.get(&n.text) {
                                    Some(id) => targets.push(*id),
                                    None => {
                                        let known = list(self.type_index.keys());
                                        self.err(&n.span, format!("unknown type `{n}`: expected bool, int, string, timestamp, set<string>, enum{{...}} or an entity type ({known})"));
                                    }
                                }
                            }
                        }
                        if *optional {
                            self.err(&name.span, format!("relation `{name}` cannot be optional: a relation is a set of tuples, possibly empty"));
                        }
                        let Some(idx) = self.next_member(tid, |t| t.rels.len(), "relations", name)
                        else {
                            continue;
                        };
                        let Some(td) = self.types.get_mut(tid as usize) else {
                            continue;
                        };
                        td.rels.push(RelDef {
                            name: name.text.clone(),
                            targets,
                            until: None,
                        });
                        MemberRef::Rel(idx)
                    }
                    other => {
                        let vt = match other {
                            FieldType::Bool => ValueType::Bool,
                            FieldType::Int => ValueType::Int,
                            FieldType::Str => ValueType::Str,
                            FieldType::Time => ValueType::Time,
                            FieldType::StrSet => ValueType::StrSet,
                            FieldType::Enum(v) => {
                                if v.len() > 250 {
                                    self.err(&name.span, "an enum takes at most 250 values");
                                }
                                ValueType::Enum(v.iter().map(|n| n.text.clone()).collect())
                            }
                            FieldType::Entities(_) => continue,
                        };
                        let Some(idx) =
                            self.next_member(tid, |t| t.attrs.len(), "attributes", name)
                        else {
                            continue;
                        };
                        let Some(td) = self.types.get_mut(tid as usize) else {
                            continue;
                        };
                        td.attrs.push(AttrDef {
                            name: name.text.clone(),
                            ty: vt,
                            optional: *optional,
                        });
                        MemberRef::Attr(idx)
                    }
                };
                self.add_member(tid, name, member);
            }
        }
    }

    /// Pass 3: the timestamp attribute at which each `until` relation's tuples end (it
    /// needs every attribute declared).
    pub(super) fn bound_relations(&mut self, decls: &[Decl]) {
        for t in type_decls(decls) {
            let Some(&tid) = self.type_index.get(&t.name.text) else {
                continue;
            };
            for m in &t.members {
                let Member::Field {
                    name,
                    until: Some(u),
                    ty: FieldType::Entities(_),
                    ..
                } = m
                else {
                    if let Member::Field { until: Some(u), .. } = m {
                        self.err(&u.span, "`until` applies to relations only");
                    }
                    continue;
                };
                let Some(td) = self.types.get(tid as usize) else {
                    continue;
                };
                let attr = td.attr(&u.text);
                let ok = attr
                    .and_then(|a| td.attrs.get(a as usize))
                    .is_some_and(|a| a.ty == ValueType::Time);
                let rel = td.rel(&name.text);
                match (ok, attr, rel) {
                    (true, Some(a), Some(r)) => {
                        if let Some(rd) = self
                            .types
                            .get_mut(tid as usize)
                            .and_then(|t| t.rels.get_mut(r as usize))
                        {
                            rd.until = Some(a);
                        }
                    }
                    _ => {
                        let tn = t.name.text.clone();
                        self.err(
                            &u.span,
                            format!("`until {u}`: expected a timestamp attribute of `{tn}`"),
                        );
                    }
                }
            }
        }
    }

    /// Pass 4: the names of every permission (with its target's type), scope and gate, so
    /// that rules may refer to each other in any order.
    pub(super) fn declare_rules(&mut self, decls: &[Decl]) {
        for t in type_decls(decls) {
            let Some(&tid) = self.type_index.get(&t.name.text) else {
                continue;
            };
            for m in &t.members {
                match m {
                    Member::Permission { name, target, .. } => {
                        let target_ty = match target {
                            Some((_, ty)) => match self.type_index.get(&ty.text) {
                                Some(id) => Some(*id),
                                None => {
                                    self.err(
                                        &ty.span,
                                        format!("unknown type `{ty}` for the target"),
                                    );
                                    None
                                }
                            },
                            None => None,
                        };
                        let Some(idx) =
                            self.next_member(tid, |t| t.perms.len(), "permissions", name)
                        else {
                            continue;
                        };
                        let Some(td) = self.types.get_mut(tid as usize) else {
                            continue;
                        };
                        td.perms.push(PermDef {
                            name: name.text.clone(),
                            target: target_ty,
                            expr: Expr::Const(false),
                            rule: 0,
                        });
                        self.add_member(tid, name, MemberRef::Perm(idx));
                    }
                    Member::Scope { name, .. } => {
                        let Some(idx) = self.next_member(tid, |t| t.scopes.len(), "scopes", name)
                        else {
                            continue;
                        };
                        let Some(td) = self.types.get_mut(tid as usize) else {
                            continue;
                        };
                        td.scopes.push(NamedRule {
                            name: name.text.clone(),
                            expr: Expr::Const(false),
                            rule: 0,
                        });
                        self.add_member(tid, name, MemberRef::Scope(idx));
                    }
                    Member::Gate {
                        name, invariant, ..
                    } => {
                        let principal = self.types.get(tid as usize).is_some_and(|t| t.principal);
                        if !principal && !invariant {
                            self.err(&name.span, format!("gate `{name}` on `{}`: gates belong to principal types (`type {} principal {{...}}`)", t.name, t.name));
                        }
                        let (what, list) = if *invariant {
                            (
                                "invariant",
                                (|t: &TypeDef| &t.invariants) as fn(&TypeDef) -> &Vec<NamedRule>,
                            )
                        } else {
                            (
                                "gate",
                                (|t: &TypeDef| &t.gates) as fn(&TypeDef) -> &Vec<NamedRule>,
                            )
                        };
                        let Some(td) = self.types.get(tid as usize) else {
                            continue;
                        };
                        if list(td).iter().any(|g| g.name == name.text) {
                            self.err(&name.span, format!("{what} `{name}` is declared twice"));
                            continue;
                        }
                        if self
                            .next_member(tid, |t| list(t).len(), what, name)
                            .is_none()
                        {
                            continue;
                        }
                        let Some(td) = self.types.get_mut(tid as usize) else {
                            continue;
                        };
                        let list = if *invariant {
                            &mut td.invariants
                        } else {
                            &mut td.gates
                        };
                        list.push(NamedRule {
                            name: name.text.clone(),
                            expr: Expr::Const(false),
                            rule: 0,
                        });
                    }
                    Member::Field { .. } | Member::On { .. } | Member::Auto { .. } => {}
                }
            }
        }
    }

    /// Pass 5: the role matrices, with their rows and controlled actions.
    pub(super) fn declare_matrices(&mut self, decls: &[Decl]) {
        for d in decls {
            if let Decl::Matrix(m) = d {
                self.matrix(m);
            }
        }
    }

    /// Pass 6: every permission, scope and gate compiled to its expression, and the write
    /// rules and automatic relations, in the order written.
    pub(super) fn compile_rules(&mut self, decls: &[Decl]) {
        // The gates compiled so far: a gate declared twice is an error already, and its
        // second declaration is compiled for its own errors only.
        let mut gates_compiled: BTreeSet<(TypeId, bool, &str)> = BTreeSet::new();
        for t in type_decls(decls) {
            let Some(&tid) = self.type_index.get(&t.name.text) else {
                continue;
            };
            for m in &t.members {
                match m {
                    Member::Permission { name, expr, .. } => {
                        let Some(idx) = self
                            .types
                            .get(tid as usize)
                            .and_then(|t| t.perm(&name.text))
                        else {
                            continue;
                        };
                        let target = self
                            .types
                            .get(tid as usize)
                            .and_then(|t| t.perms.get(idx as usize))
                            .and_then(|p| p.target);
                        let owner = format!("{}.{}", t.name, name);
                        let rule = self.rule(owner, expr.to_string(), &name.span);
                        let sc = Scope {
                            ty: tid,
                            target,
                            owner: RuleOwner {
                                ty: tid,
                                kind: RuleKind::Permission,
                                idx,
                            },
                        };
                        let e = self.expr(sc, expr);
                        if let Some(p) = self
                            .types
                            .get_mut(tid as usize)
                            .and_then(|t| t.perms.get_mut(idx as usize))
                        {
                            p.expr = e;
                            p.rule = rule;
                        }
                    }
                    Member::Scope { name, expr } => {
                        let Some(MemberRef::Scope(idx)) = self
                            .types
                            .get(tid as usize)
                            .and_then(|t| t.members.get(&name.text))
                            .copied()
                        else {
                            continue;
                        };
                        let owner = format!("{}.{}", t.name, name);
                        let rule = self.rule(owner, expr.to_string(), &name.span);
                        let sc = Scope {
                            ty: tid,
                            target: None,
                            owner: RuleOwner {
                                ty: tid,
                                kind: RuleKind::Scope,
                                idx,
                            },
                        };
                        let e = self.expr(sc, expr);
                        if let Some(s) = self
                            .types
                            .get_mut(tid as usize)
                            .and_then(|t| t.scopes.get_mut(idx as usize))
                        {
                            s.expr = e;
                            s.rule = rule;
                        }
                    }
                    Member::Gate {
                        name,
                        expr,
                        message,
                        invariant,
                    } => {
                        let (owner, kind) = if *invariant {
                            (format!("invariant.{name}"), RuleKind::Invariant)
                        } else {
                            (format!("gate.{name}"), RuleKind::Gate)
                        };
                        let rule = self.rule(owner, message.clone(), &name.span);
                        let idx = self
                            .types
                            .get(tid as usize)
                            .map(|t| if *invariant { &t.invariants } else { &t.gates })
                            .and_then(|l| l.iter().position(|g| g.name == name.text))
                            .and_then(|i| u16::try_from(i).ok());
                        let sc = Scope {
                            ty: tid,
                            target: None,
                            owner: RuleOwner {
                                ty: tid,
                                kind,
                                // A gate has an index unless it was refused when declared
                                // (the policy does not compile then).
                                idx: idx.unwrap_or(0),
                            },
                        };
                        let e = self.expr(sc, expr);
                        if gates_compiled.insert((tid, *invariant, name.text.as_str()))
                            && let Some(g) = idx.and_then(|i| {
                                let t = self.types.get_mut(tid as usize)?;
                                let list = if *invariant {
                                    &mut t.invariants
                                } else {
                                    &mut t.gates
                                };
                                list.get_mut(i as usize)
                            })
                        {
                            g.expr = e;
                            g.rule = rule;
                        }
                    }
                    Member::On {
                        event,
                        member,
                        perm,
                    } => self.write_rule(tid, *event, member.as_ref(), perm),
                    Member::Auto { rel, perm } => self.auto_rule(tid, rel, perm),
                    Member::Field { .. } => {}
                }
            }
        }
    }

    /// The ids of the built-in types and of the attributes the engine reads. The prelude
    /// declares each and a policy cannot take one away (declaring it again is an error),
    /// so the placeholder 0 is never used.
    pub(super) fn builtins(&self) -> Builtins {
        let ty = |name: &str| self.type_index.get(name).copied().unwrap_or(0);
        let attr = |t: TypeId, n: &str| {
            self.types
                .get(t as usize)
                .and_then(|t| t.attr(n))
                .unwrap_or(0)
        };
        let (account, role, authorization) = (ty("account"), ty("role"), ty("authorization"));
        let licence = ty("licence");
        Builtins {
            account,
            role,
            authorization,
            account_attrs: AccountAttrs {
                features: attr(account, "features"),
                setup_mode: attr(account, "setup_mode"),
            },
            role_attrs: RoleAttrs {
                matrix: attr(role, "matrix"),
                extends: attr(role, "extends"),
                cells: attr(role, "cells"),
            },
            auth_attrs: AuthorizationAttrs {
                kind: attr(authorization, "kind"),
                valid_from: attr(authorization, "valid_from"),
                valid_until: attr(authorization, "valid_until"),
                scope: attr(authorization, "scope"),
                revoked: attr(authorization, "revoked"),
                categories: attr(authorization, "categories"),
                chapters: attr(authorization, "chapters"),
                task_kinds: attr(authorization, "task_kinds"),
                licence: self
                    .types
                    .get(authorization as usize)
                    .and_then(|t| t.rel("licence"))
                    .unwrap_or(0),
            },
            licence,
            licence_attrs: LicenceAttrs {
                categories: attr(licence, "categories"),
                valid_until: attr(licence, "valid_until"),
                revoked: attr(licence, "revoked"),
            },
        }
    }

    fn auto_rule(&mut self, tid: TypeId, rel: &ast::Name, perm: &ast::Name) {
        let Some(td) = self.types.get(tid as usize) else {
            return;
        };
        let tn = td.name.clone();
        let Some(r) = td.rel(&rel.text) else {
            self.err(&rel.span, format!("`{tn}` has no relation `{rel}`"));
            return;
        };
        let Some(p) = td.perm(&perm.text) else {
            self.err(&perm.span, format!("`{tn}` has no permission `{perm}`"));
            return;
        };
        let target = td.perms.get(p as usize).and_then(|x| x.target);
        let fits = td
            .rels
            .get(r as usize)
            .is_some_and(|x| target.is_some_and(|t| x.targets.contains(&t)));
        if !fits {
            self.err(
                &perm.span,
                format!("`{tn}.{perm}` must take a target of a type `{tn}.{rel}` relates to"),
            );
            return;
        }
        if let Some(td) = self.types.get_mut(tid as usize) {
            td.autos.push((r, p));
        }
    }

    fn write_rule(
        &mut self,
        tid: TypeId,
        event: WriteEvent,
        member: Option<&ast::Name>,
        perm: &ast::Name,
    ) {
        let Some(td) = self.types.get(tid as usize) else {
            return;
        };
        let tn = td.name.clone();
        let Some(p) = td.perm(&perm.text) else {
            self.err(
                &perm.span,
                format!("`{tn}` has no permission `{perm}` to authorise this change"),
            );
            return;
        };
        let takes_target = td.perms.get(p as usize).and_then(|x| x.target);
        let member_id = match (event, member) {
            (WriteEvent::Add | WriteEvent::Remove, Some(m)) => match td.rel(&m.text) {
                Some(r) => {
                    // `r` is a relation of `td`, just looked up.
                    let targets = td
                        .rels
                        .get(r as usize)
                        .map(|x| x.targets.clone())
                        .unwrap_or_default();
                    if let Some(t) = takes_target
                        && !targets.contains(&t)
                    {
                        self.err(
                            &perm.span,
                            format!(
                                "`{tn}.{perm}` takes a target that `{tn}.{m}` never relates to"
                            ),
                        );
                    }
                    Some(r)
                }
                None => {
                    self.err(&m.span, format!("`{tn}` has no relation `{m}`"));
                    return;
                }
            },
            (WriteEvent::Set, Some(m)) => match td.attr(&m.text) {
                Some(a) => {
                    if takes_target.is_some() {
                        self.err(
                            &perm.span,
                            format!("`{tn}.{perm}` takes a target; an attribute change has none"),
                        );
                    }
                    Some(a)
                }
                None => {
                    self.err(&m.span, format!("`{tn}` has no attribute `{m}`"));
                    return;
                }
            },
            _ => {
                if takes_target.is_some() {
                    self.err(
                        &perm.span,
                        format!(
                            "`{tn}.{perm}` takes a target; creating or deleting an entity has none"
                        ),
                    );
                }
                None
            }
        };
        let Some(td) = self.types.get_mut(tid as usize) else {
            return;
        };
        if td.write_rule(event, member_id).is_some() {
            self.err(&perm.span, "this change already has a write rule");
            return;
        }
        td.writes.push(WriteRule {
            event,
            member: member_id,
            perm: p,
        });
    }

    fn add_member(&mut self, tid: TypeId, name: &ast::Name, m: MemberRef) {
        if RESERVED_MEMBERS.contains(&name.text.as_str()) {
            self.err(
                &name.span,
                format!("`{name}` is a reserved word and cannot name a member"),
            );
            return;
        }
        let Some(td) = self.types.get_mut(tid as usize) else {
            return;
        };
        if td.members.contains_key(&name.text) {
            let tn = td.name.clone();
            self.err(&name.span, format!("`{tn}.{name}` is declared twice"));
            return;
        }
        td.members.insert(name.text.clone(), m);
    }

    fn matrix(&mut self, m: &ast::MatrixDecl) {
        if self.matrix_index.contains_key(&m.name.text) {
            self.err(
                &m.name.span,
                format!("matrix `{}` is declared twice", m.name),
            );
            return;
        }
        if self.type_index.contains_key(&m.name.text) {
            self.err(
                &m.name.span,
                format!(
                    "matrix `{}` has the name of a type: page requests `{}:row` would be ambiguous",
                    m.name, m.name
                ),
            );
            return;
        }
        let levels = m.actions.is_none();
        let actions: Vec<String> = match &m.actions {
            Some(a) => a.iter().map(|n| n.text.clone()).collect(),
            None => LEVEL_ACTIONS.iter().map(|s| s.to_string()).collect(),
        };
        if actions.len() > 31 {
            self.err(&m.name.span, "a matrix takes at most 31 actions");
        }
        let mut def = MatrixDef {
            name: m.name.text.clone(),
            levels,
            actions,
            rows: Vec::new(),
            controls: Vec::new(),
            row_index: BTreeMap::new(),
        };
        for r in &m.rows {
            if def.row_index.contains_key(&r.name.text) {
                self.err(&r.name.span, format!("row `{}` is declared twice", r.name));
                continue;
            }
            if r.operation && !levels {
                self.err(&r.name.span, "`operation` rows belong to level matrices; in an action matrix use a row with actions");
            }
            let feature = r.feature.as_ref().map(|f| self.literal(&f.text, &f.span));
            let mut text = String::from("row");
            if let Some(f) = &r.feature {
                text.push_str(&format!(" feature {f}"));
            }
            if r.setup_only {
                text.push_str(" setup_only");
            }
            let rule = self.rule(format!("{}.{}", m.name, r.name), text, &r.name.span);
            let Some(row) = next_id(def.rows.len(), u16::MAX) else {
                let whole = format!("matrix `{}`", m.name);
                self.too_many(&r.name.span, &whole, u16::MAX.into(), "rows", &r.name.text);
                continue;
            };
            // A cell names a scope of its row by its index, a `u8`.
            if let Some(s) = r.scopes.get(usize::from(u8::MAX)) {
                let whole = format!("row `{}` of matrix `{}`", r.name, m.name);
                self.too_many(&s.span, &whole, u8::MAX.into(), "scopes", &s.text);
            }
            def.row_index.insert(r.name.text.clone(), row);
            def.rows.push(RowDef {
                name: r.name.text.clone(),
                operation: r.operation,
                feature,
                setup_only: r.setup_only,
                scopes: r.scopes.iter().map(|s| s.text.clone()).collect(),
                rule,
            });
        }
        for c in &m.controls {
            let Some(&row) = def.row_index.get(&c.row.text) else {
                self.err(
                    &c.row.span,
                    format!("unknown row `{}` of matrix `{}`", c.row, m.name),
                );
                continue;
            };
            let Some(action) = def.action_bit(row, &c.action.text) else {
                self.err(
                    &c.action.span,
                    format!("unknown action `{}` on row `{}`", c.action, c.row),
                );
                continue;
            };
            let kind = self.literal(&c.kind.text, &c.kind.span);
            let rule = self.kind_rule(&c.kind);
            def.controls.push(ControlDef {
                row,
                action,
                kind,
                rule,
            });
        }
        let Some(id) = next_id(self.matrices.len(), u16::MAX) else {
            self.too_many(
                &m.name.span,
                "a policy set",
                u16::MAX.into(),
                "matrices",
                &m.name.text,
            );
            return;
        };
        self.matrix_index.insert(m.name.text.clone(), id);
        self.matrices.push(def);
    }
}
