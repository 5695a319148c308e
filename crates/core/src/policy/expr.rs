//! Rule expressions compiled: each permission, scope and gate written in the policy
//! becomes an [`Expr`] over ids, its names resolved along paths (`rel->member`,
//! `target.attr`, `account.attr`), each comparison's operands with their kinds checked
//! by [`typecheck`](super::typecheck), and a rule for every part a decision may name.

use super::ast::{self, CmpOp, Sep};
use super::resolve::{Compiler, RuleKind, RuleOwner, Scope, list};
use super::typecheck::{self, Kind};
use super::types::{Base, Expr, Limits, MemberRef, Operand, RuleId, TypeId, ValueType};
use crate::error::Span;

impl Compiler {
    /// Compiles rule `e` on type `sc.ty`.
    pub(super) fn expr(&mut self, sc: Scope, e: &ast::Expr) -> Expr {
        match e {
            ast::Expr::Or(v) => Expr::Or(v.iter().map(|x| self.expr(sc, x)).collect()),
            ast::Expr::And(v) => Expr::And(v.iter().map(|x| self.expr(sc, x)).collect()),
            ast::Expr::Minus(a, b) => {
                let rule = self.leaf_rule(sc, &format!("{} - {}", a, b), b.span());
                Expr::Minus(Box::new(self.expr(sc, a)), Box::new(self.expr(sc, b)), rule)
            }
            ast::Expr::Not(a, span) => {
                let rule = self.leaf_rule(sc, &e.to_string(), span);
                Expr::Not(Box::new(self.expr(sc, a)), rule)
            }
            ast::Expr::Separate(p) => {
                let rule = self.leaf_rule(sc, &e.to_string(), &p.head.span);
                Expr::Separate(Box::new(self.membership(sc, p)), rule)
            }
            ast::Expr::Const(b, _) => Expr::Const(*b),
            ast::Expr::Path(p) => self.membership(sc, p),
            ast::Expr::Role {
                matrix,
                row,
                action,
            } => {
                let Some(&mid) = self.matrix_index.get(&matrix.text) else {
                    let known = list(self.matrix_index.keys());
                    self.err(
                        &matrix.span,
                        format!("unknown matrix `{matrix}`: expected one of {known}"),
                    );
                    return Expr::Const(false);
                };
                let Some(m) = self.matrices.get(mid as usize).cloned() else {
                    return Expr::Const(false);
                };
                let Some(&rid) = m.row_index.get(&row.text) else {
                    self.err(
                        &row.span,
                        format!(
                            "unknown row `{row}` of matrix `{matrix}`: expected one of {}",
                            list(m.row_index.keys())
                        ),
                    );
                    return Expr::Const(false);
                };
                let Some(bit) = m.action_bit(rid, &action.text) else {
                    self.err(
                        &action.span,
                        format!("row `{row}` of matrix `{matrix}` takes no action `{action}`"),
                    );
                    return Expr::Const(false);
                };
                let mut scopes = Vec::new();
                // `rid` is a row of `m`, just looked up.
                let row_scopes = m
                    .rows
                    .get(rid as usize)
                    .map(|r| r.scopes.clone())
                    .unwrap_or_default();
                for s in &row_scopes {
                    match self
                        .types
                        .get(sc.ty as usize)
                        .and_then(|t| t.members.get(s))
                    {
                        Some(MemberRef::Scope(i)) => scopes.push(*i),
                        _ => {
                            let tn = self.type_name(sc.ty).to_string();
                            self.err(&row.span, format!("`{tn}` checks `{matrix}.{row}`, whose cells may be scoped by `{s}`: declare `scope {s} = ...` on `{tn}`"));
                        }
                    }
                }
                let rule = self.leaf_rule(sc, &e.to_string(), &matrix.span);
                Expr::Matrix {
                    matrix: mid,
                    row: rid,
                    action: bit,
                    scopes,
                    rule,
                }
            }
            ast::Expr::Authorized {
                kind,
                scope,
                limits,
            } => {
                let kid = self.literal(&kind.text, &kind.span);
                let string = |this: &mut Self, s: &ast::Operand| {
                    let (op, k) = this.operand(sc, s, None)?;
                    match typecheck::check_authorized_scope(s, &k) {
                        Ok(()) => Some(op),
                        Err(message) => {
                            this.err(s.span(), message);
                            None
                        }
                    }
                };
                let scope = scope.as_ref().and_then(|s| string(self, s));
                let mut l = Limits::default();
                for (name, o) in limits {
                    let slot = match name.text.as_str() {
                        "category" => &mut l.category,
                        "chapter" => &mut l.chapter,
                        "task_kind" => &mut l.task_kind,
                        other => {
                            self.err(
                                &name.span,
                                format!("`authorized` has no limit `{other}`: expected `category`, `chapter` or `task_kind`"),
                            );
                            continue;
                        }
                    };
                    if slot.is_some() {
                        self.err(&name.span, format!("the limit `{name}` is given twice"));
                        continue;
                    }
                    *slot = string(self, o);
                }
                let rule = self.kind_rule(kind);
                Expr::Authorized {
                    kind: kid,
                    scope,
                    limits: Box::new(l),
                    rule,
                }
            }
            ast::Expr::Cmp { op, lhs, rhs } => {
                let rule = self.leaf_rule(sc, &e.to_string(), lhs.span());
                let l = self.operand(sc, lhs, None);
                let r = self.operand(sc, rhs, l.as_ref().map(|x| &x.1));
                let l = match (&l, &r) {
                    (Some((_, Kind::EnumName(_))), Some((_, k))) => self.operand(sc, lhs, Some(k)),
                    _ => l,
                };
                let (Some((lo, lk)), Some((ro, rk))) = (l, r) else {
                    return Expr::Const(false);
                };
                if let Err(message) = typecheck::check_cmp(*op, (lhs, &lk), (rhs, &rk)) {
                    self.err(lhs.span(), message);
                    return Expr::Const(false);
                }
                Expr::Cmp {
                    op: *op,
                    lhs: lo,
                    rhs: ro,
                    rule,
                }
            }
            ast::Expr::In { lhs, rhs } => {
                let rule = self.leaf_rule(sc, &e.to_string(), lhs.span());
                let (Some((lo, lk)), Some((ro, rk))) =
                    (self.operand(sc, lhs, None), self.operand(sc, rhs, None))
                else {
                    return Expr::Const(false);
                };
                if let Err(message) = typecheck::check_in((lhs, &lk), (rhs, &rk)) {
                    self.err(lhs.span(), message);
                    return Expr::Const(false);
                }
                Expr::In {
                    lhs: lo,
                    rhs: ro,
                    rule,
                }
            }
        }
    }

    /// A rule for reasons of a part of the rule `sc.owner`.
    fn leaf_rule(&mut self, sc: Scope, text: &str, span: &Span) -> RuleId {
        let owner = self.owner_name(sc.owner);
        self.rule(owner, text.to_string(), span)
    }

    /// `type.member`, or `type.gate name`, for the rules of a permission, scope or gate.
    fn owner_name(&self, o: RuleOwner) -> String {
        let Some(t) = self.types.get(o.ty as usize) else {
            return String::new();
        };
        let member = match o.kind {
            RuleKind::Permission => t.perms.get(o.idx as usize).map(|p| p.name.clone()),
            RuleKind::Scope => t.scopes.get(o.idx as usize).map(|p| p.name.clone()),
            RuleKind::Gate => t
                .gates
                .get(o.idx as usize)
                .map(|p| format!("gate {}", p.name)),
            RuleKind::Invariant => t
                .invariants
                .get(o.idx as usize)
                .map(|p| format!("invariant {}", p.name)),
        };
        format!("{}.{}", t.name, member.unwrap_or_default())
    }

    /// A membership path: `rel`, `rel->member->...`, `target->member`, a bool attribute.
    fn membership(&mut self, sc: Scope, p: &ast::Path) -> Expr {
        let mut segs: Vec<(Sep, &ast::Name)> = vec![(Sep::Dot, &p.head)];
        segs.extend(p.rest.iter().map(|(s, n)| (*s, n)));
        let text = p.to_string();
        match p.head.text.as_str() {
            "target" => {
                let Some(tt) = sc.target else {
                    self.err(&p.head.span, "`target` is used but the permission takes no target: declare `permission name(target: type) = ...`");
                    return Expr::Const(false);
                };
                if segs.len() < 2 {
                    self.err(&p.head.span, "`target` alone is not a rule: expected `target->member` or `target.relation`");
                    return Expr::Const(false);
                }
                let inner = Scope {
                    ty: tt,
                    target: None,
                    owner: sc.owner,
                };
                Expr::OnTarget(Box::new(self.member_path(
                    inner,
                    segs.get(1..).unwrap_or(&[]),
                    &text,
                )))
            }
            "resource" if segs.len() >= 2 => {
                self.member_path(sc, segs.get(1..).unwrap_or(&[]), &text)
            }
            "principal" | "resource" | "account" | "now" => {
                self.err(
                    &p.head.span,
                    format!(
                        "`{text}` is not a rule: expected a relation, a permission or a comparison"
                    ),
                );
                Expr::Const(false)
            }
            _ => self.member_path(sc, &segs, &text),
        }
    }

    fn member_path(&mut self, sc: Scope, segs: &[(Sep, &ast::Name)], text: &str) -> Expr {
        let Some(((_, name), rest)) = segs.split_first() else {
            return Expr::Const(false);
        };
        let Some(td) = self.types.get(sc.ty as usize) else {
            return Expr::Const(false);
        };
        let tn = td.name.clone();
        let Some(m) = td.members.get(&name.text).copied() else {
            let known = list(td.members.keys());
            self.err(
                &name.span,
                format!("`{tn}` has no member `{name}`: expected one of {known}"),
            );
            return Expr::Const(false);
        };
        if let Some(((sep, next), _)) = rest.split_first() {
            let MemberRef::Rel(r) = m else {
                self.err(
                    &next.span,
                    format!("`{tn}.{name}` is not a relation, so `->{next}` cannot follow it"),
                );
                return Expr::Const(false);
            };
            if *sep == Sep::Dot {
                self.err(&next.span, format!("expected `{name}->{next}`: `->` follows a relation to a member of its subjects"));
                return Expr::Const(false);
            }
            // `r` is a relation of `td`, just looked up.
            let targets = td
                .rels
                .get(r as usize)
                .map(|r| r.targets.clone())
                .unwrap_or_default();
            let mut bodies = Vec::new();
            let before = self.errors.len();
            for t in targets {
                let has = self
                    .types
                    .get(t as usize)
                    .is_some_and(|td| td.members.contains_key(&next.text));
                if !has {
                    continue;
                }
                let inner = Scope {
                    ty: t,
                    target: None,
                    owner: sc.owner,
                };
                bodies.push((t, self.member_path(inner, rest, text)));
            }
            if bodies.is_empty() && self.errors.len() == before {
                self.err(
                    &next.span,
                    format!("no subject type of `{tn}.{name}` has a member `{next}`"),
                );
            }
            let rule = self.leaf_rule(sc, text, &name.span);
            return Expr::Arrow {
                rel: r,
                bodies,
                rule,
            };
        }
        match m {
            MemberRef::Rel(r) => {
                let rule = self.leaf_rule(sc, text, &name.span);
                Expr::Rel { rel: r, rule }
            }
            MemberRef::Perm(i) => {
                let has_target = td.perms.get(i as usize).is_some_and(|p| p.target.is_some());
                if has_target {
                    self.err(
                        &name.span,
                        format!(
                            "`{tn}.{name}` takes a target and cannot be used inside another rule"
                        ),
                    );
                }
                Expr::Perm(sc.ty, i)
            }
            MemberRef::Scope(i) => Expr::Scope(sc.ty, i),
            MemberRef::Attr(a) => {
                let is_bool = td
                    .attrs
                    .get(a as usize)
                    .is_some_and(|x| x.ty == ValueType::Bool);
                if !is_bool {
                    self.err(
                        &name.span,
                        format!("`{tn}.{name}` is an attribute: compare it, e.g. `{name} == ...`"),
                    );
                    return Expr::Const(false);
                }
                let rule = self.leaf_rule(sc, text, &name.span);
                Expr::Cmp {
                    op: CmpOp::Eq,
                    lhs: Operand::Attr {
                        base: Base::Current,
                        path: Vec::new(),
                        attr: (sc.ty, a),
                    },
                    rhs: Operand::Bool(true),
                    rule,
                }
            }
        }
    }

    /// Compiles an operand; `other` is the kind of the other side of a comparison, used to
    /// read a bare name as an enum value.
    fn operand(
        &mut self,
        sc: Scope,
        o: &ast::Operand,
        other: Option<&Kind>,
    ) -> Option<(Operand, Kind)> {
        match o {
            ast::Operand::Now(_) => Some((Operand::Now, Kind::Value(ValueType::Time))),
            ast::Operand::Int(i, _) => Some((Operand::Int(*i), Kind::Value(ValueType::Int))),
            ast::Operand::Str(s, span) => Some((
                Operand::Str(self.literal(s, span)),
                Kind::Value(ValueType::Str),
            )),
            ast::Operand::Bool(b, _) => Some((Operand::Bool(*b), Kind::Value(ValueType::Bool))),
            ast::Operand::Count(paths, span) => {
                let mut rels = Vec::new();
                let mut base = None;
                for p in paths {
                    let (b, path) = self.entity_path(sc, p)?;
                    if base.is_some_and(|x| x != b) {
                        self.err(
                            span,
                            "every relation in `count(...)` must start from the same entity",
                        );
                        return None;
                    }
                    base = Some(b);
                    if path.len() != 1 {
                        self.err(
                            &p.head.span,
                            format!("`count({p})`: expected a relation of one entity, not a path"),
                        );
                        return None;
                    }
                    rels.extend(path);
                }
                Some((
                    Operand::Count {
                        base: base.unwrap_or(Base::Current),
                        rels,
                    },
                    Kind::Value(ValueType::Int),
                ))
            }
            ast::Operand::Path(p) => {
                if p.rest.is_empty() {
                    // An enum has at most 250 values (compiling refuses more), so its
                    // index is a `u8`.
                    if let Some(Kind::Value(ValueType::Enum(values))) = other
                        && let Some(i) = values
                            .iter()
                            .position(|v| *v == p.head.text)
                            .and_then(|i| u8::try_from(i).ok())
                    {
                        return Some((
                            Operand::Enum(i),
                            Kind::Value(ValueType::Enum(values.clone())),
                        ));
                    }
                    match p.head.text.as_str() {
                        "principal" => {
                            return Some((Operand::This(Base::Principal), Kind::Entities));
                        }
                        "target" if sc.target.is_some() => {
                            return Some((Operand::This(Base::Target), Kind::Entities));
                        }
                        "resource" => return Some((Operand::This(Base::Current), Kind::Entities)),
                        _ => {}
                    }
                    let td = self.types.get(sc.ty as usize)?;
                    if !td.members.contains_key(&p.head.text) && other.is_none() {
                        return Some((Operand::Int(0), Kind::EnumName(p.head.text.clone())));
                    }
                }
                self.value_path(sc, p)
            }
        }
    }

    /// Resolves the start of a path: its base entity and type, and the remaining names.
    fn path_base<'p>(
        &mut self,
        sc: Scope,
        p: &'p ast::Path,
    ) -> Option<(Base, TypeId, Vec<&'p ast::Name>)> {
        let mut names: Vec<&ast::Name> = vec![&p.head];
        names.extend(p.rest.iter().map(|(_, n)| n));
        let (base, ty, skip) = match p.head.text.as_str() {
            "target" => match sc.target {
                Some(t) => (Base::Target, t, 1),
                None => {
                    self.err(
                        &p.head.span,
                        "`target` is used but the permission takes no target",
                    );
                    return None;
                }
            },
            "account" => (Base::Account, self.type_index.get("account").copied()?, 1),
            "resource" => (Base::Current, sc.ty, 1),
            "principal" => {
                self.err(&p.head.span, format!("`{p}`: principal attributes are checked by the principal type's gates, not in permissions"));
                return None;
            }
            _ => (Base::Current, sc.ty, 0),
        };
        if names.len() <= skip {
            self.err(
                &p.head.span,
                format!(
                    "`{p}`: expected an attribute or relation after `{}`",
                    p.head
                ),
            );
            return None;
        }
        Some((base, ty, names.split_off(skip)))
    }

    fn entity_path(&mut self, sc: Scope, p: &ast::Path) -> Option<(Base, Vec<(TypeId, u16)>)> {
        let (base, mut ty, names) = self.path_base(sc, p)?;
        let mut path = Vec::new();
        for n in names {
            let td = self.types.get(ty as usize)?;
            let Some(r) = td.rel(&n.text) else {
                let tn = td.name.clone();
                self.err(&n.span, format!("`{tn}` has no relation `{n}`"));
                return None;
            };
            path.push((ty, r));
            ty = self.single_target(ty, r, n).unwrap_or(ty);
        }
        Some((base, path))
    }

    fn single_target(&mut self, ty: TypeId, r: u16, n: &ast::Name) -> Option<TypeId> {
        let targets = self
            .types
            .get(ty as usize)?
            .rels
            .get(r as usize)?
            .targets
            .clone();
        match targets.as_slice() {
            [one] => Some(*one),
            _ => {
                self.err(
                    &n.span,
                    format!("`{n}` relates to several types; a path through it must end here"),
                );
                None
            }
        }
    }

    fn value_path(&mut self, sc: Scope, p: &ast::Path) -> Option<(Operand, Kind)> {
        let (base, mut ty, names) = self.path_base(sc, p)?;
        let mut path = Vec::new();
        let last = names.len().saturating_sub(1);
        for (i, n) in names.into_iter().enumerate() {
            let td = self.types.get(ty as usize)?;
            let tn = td.name.clone();
            match td.members.get(&n.text).copied() {
                Some(MemberRef::Attr(a)) if i == last => {
                    let vt = td.attrs.get(a as usize)?.ty.clone();
                    return Some((
                        Operand::Attr {
                            base,
                            path,
                            attr: (ty, a),
                        },
                        Kind::Value(vt),
                    ));
                }
                Some(MemberRef::Rel(r)) => {
                    path.push((ty, r));
                    if i == last {
                        return Some((Operand::Entities { base, path }, Kind::Entities));
                    }
                    ty = self.single_target(ty, r, n)?;
                }
                Some(_) => {
                    self.err(
                        &n.span,
                        format!("`{tn}.{n}` is not an attribute or a relation"),
                    );
                    return None;
                }
                None => {
                    let known = list(td.members.keys());
                    self.err(
                        &n.span,
                        format!(
                            "`{tn}` has no attribute or relation `{n}`: expected one of {known}"
                        ),
                    );
                    return None;
                }
            }
        }
        None
    }
}
