//! The evaluator: decides one rule for one principal on one entity, tracking the next
//! instant time could change the answer and, when asked, every failed check.

use crate::decision::{Code, Reason};
use crate::policy::{Base, CmpOp, Expr, Operand};
use crate::snapshot::{Column, NEVER, NONE_I64, NONE_STR, NONE_U8, Snapshot};
use smallvec::SmallVec;

/// How deep permissions may call each other through relations.
const MAX_DEPTH: u32 = 48;

/// Failed and held checks, collected when explaining.
///
/// Two modes. *Explaining* (`full`) evaluates every child of a failed conjunction, every
/// expired subject and every check of a matrix cell, to report each failed check and each
/// one that held. *Collecting* evaluates exactly as a plain decision does (short-circuits
/// included) and keeps the failed checks only, noting in `cut` each place where
/// explaining would have looked further: a denial whose collection was never cut has the
/// very reasons explaining would give, so the second, explaining pass can be skipped.
#[derive(Debug, Default)]
pub(crate) struct Trace {
    pub fails: SmallVec<[Reason; 8]>,
    pub holds: SmallVec<[Reason; 8]>,
    full: bool,
    pub cut: bool,
}

/// The certification limits an `authorized` check asks, as string ids.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Asked {
    category: Option<u32>,
    chapter: Option<u32>,
    task_kind: Option<u32>,
}

/// How an evaluation records its checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Decide only.
    Decide,
    /// Decide, keeping the failed checks while nothing was cut short.
    Collect,
    /// Evaluate everything, keeping every failed and held check.
    Explain,
}

pub(crate) struct Eval<'a> {
    pub s: &'a Snapshot,
    pub principal: u32,
    pub target: Option<u32>,
    pub account: u32,
    pub now: i64,
    /// The earliest instant after `now` at which a checked fact changes with time.
    pub until: i64,
    depth: u32,
    pub trace: Option<Trace>,
}

#[derive(Debug, Clone)]
enum Val<'a> {
    None,
    Bool(bool),
    Int(i64),
    Str(u32),
    Enum(u8),
    Set(&'a [u32]),
    Ents(SmallVec<[u32; 4]>),
}

impl<'a> Eval<'a> {
    pub fn new(
        s: &'a Snapshot,
        principal: u32,
        target: Option<u32>,
        now: i64,
        mode: Mode,
    ) -> Eval<'a> {
        let account = s.account_of(principal).unwrap_or(u32::MAX);
        Eval {
            s,
            principal,
            target,
            account,
            now,
            until: NEVER,
            depth: 0,
            trace: match mode {
                Mode::Decide => None,
                Mode::Collect => Some(Trace::default()),
                Mode::Explain => Some(Trace {
                    full: true,
                    ..Trace::default()
                }),
            },
        }
    }

    #[inline]
    fn note(&mut self, t: i64) {
        if t > self.now && t < self.until {
            self.until = t;
        }
    }

    #[inline]
    fn fail(&mut self, code: Code, rule: u32) {
        if let Some(t) = &mut self.trace {
            t.fails.push(Reason { code, rule });
        }
    }

    /// Whether every check is evaluated (explaining), not only as many as decide.
    #[inline]
    fn explaining(&self) -> bool {
        self.trace.as_ref().is_some_and(|t| t.full)
    }

    /// Notes that evaluation stopped where explaining would have gone on.
    #[inline]
    fn cut(&mut self) {
        if let Some(t) = &mut self.trace {
            t.cut = true;
        }
    }

    #[inline]
    fn hold(&mut self, rule: u32) {
        if let Some(t) = &mut self.trace
            && t.full
        {
            t.holds.push(Reason {
                code: Code::Granted,
                rule,
            });
        }
    }

    fn marks(&self) -> (usize, usize) {
        self.trace
            .as_ref()
            .map_or((0, 0), |t| (t.fails.len(), t.holds.len()))
    }

    fn truncate(&mut self, fails: Option<usize>, holds: Option<usize>) {
        if let Some(t) = &mut self.trace {
            if let Some(f) = fails {
                t.fails.truncate(f);
            }
            if let Some(h) = holds {
                t.holds.truncate(h);
            }
        }
    }

    #[inline]
    fn local(&self, e: u32) -> u32 {
        // An id that names no entity has no row: `u32::MAX` lies past the end of every
        // column and relation, so each lookup on it finds nothing (a denial) rather than
        // the facts of entity 0.
        self.s.local_of(e).unwrap_or(u32::MAX)
    }

    #[inline]
    fn row(&self, e: u32) -> usize {
        self.local(e) as usize
    }

    #[inline]
    fn ty(&self, e: u32) -> u16 {
        self.s.type_of(e).unwrap_or(u16::MAX)
    }

    /// Evaluates `e` on entity `cur`.
    pub fn eval(&mut self, e: &Expr, cur: u32) -> bool {
        match e {
            Expr::Const(b) => *b,
            Expr::Or(children) => {
                let (f0, _) = self.marks();
                for c in children {
                    let (_, h) = self.marks();
                    if self.eval(c, cur) {
                        self.truncate(Some(f0), None);
                        return true;
                    }
                    self.truncate(None, Some(h));
                }
                false
            }
            Expr::And(children) => {
                let (_, h0) = self.marks();
                let explain = self.explaining();
                let mut all = true;
                for (i, c) in children.iter().enumerate() {
                    if !self.eval(c, cur) {
                        all = false;
                        if !explain {
                            if i + 1 < children.len() {
                                self.cut();
                            }
                            return false;
                        }
                    }
                }
                if !all {
                    self.truncate(None, Some(h0));
                }
                all
            }
            Expr::Minus(a, b, rule) => {
                if !self.eval(a, cur) {
                    return false;
                }
                let (f, h) = self.marks();
                let excluded = self.eval(b, cur);
                self.truncate(Some(f), Some(h));
                if excluded {
                    self.fail(Code::ExclusionMatched, *rule);
                }
                !excluded
            }
            Expr::Not(a, rule) | Expr::Separate(a, rule) => {
                let (f, h) = self.marks();
                let v = self.eval(a, cur);
                self.truncate(Some(f), Some(h));
                if v {
                    let code = match e {
                        Expr::Separate(..) => Code::DutyConflict,
                        _ => Code::ConditionFailed,
                    };
                    self.fail(code, *rule);
                } else {
                    self.hold(*rule);
                }
                !v
            }
            Expr::Rel { rel, rule } => self.member(cur, *rel, *rule),
            Expr::Arrow { rel, bodies, rule } => self.arrow(cur, *rel, bodies, *rule),
            Expr::OnTarget(body) => match self.target {
                Some(t) => self.eval(body, t),
                None => false,
            },
            Expr::Perm(t, i) => {
                let Some(p) = self
                    .s
                    .schema
                    .ty(*t)
                    .and_then(|td| td.perms.get(*i as usize))
                else {
                    return false;
                };
                self.nested(&p.expr, cur, p.rule)
            }
            Expr::Scope(t, i) => {
                let Some(p) = self
                    .s
                    .schema
                    .ty(*t)
                    .and_then(|td| td.scopes.get(*i as usize))
                else {
                    return false;
                };
                self.nested(&p.expr, cur, p.rule)
            }
            Expr::Matrix {
                matrix,
                row,
                action,
                scopes,
                rule,
            } => self.matrix(*matrix, *row, *action, Some((cur, scopes)), *rule),
            Expr::Authorized {
                kind,
                scope,
                limits,
                rule,
            } => {
                let mut string = |o: &Option<crate::policy::Operand>| match o {
                    None => None,
                    Some(op) => match self.operand(op, cur) {
                        Val::Str(s) => Some(s),
                        _ => Some(NONE_STR),
                    },
                };
                let scope = string(scope);
                // A limit the task does not state (an absent attribute) is not asked.
                let mut limit = |o| string(o).filter(|s| *s != NONE_STR);
                let asked = Asked {
                    category: limit(&limits.category),
                    chapter: limit(&limits.chapter),
                    task_kind: limit(&limits.task_kind),
                };
                self.authorized(*kind, scope, asked, *rule)
            }
            Expr::Cmp { op, lhs, rhs, rule } => {
                let v = self.compare(*op, lhs, rhs, cur);
                if v {
                    self.hold(*rule);
                } else {
                    self.fail(Code::ConditionFailed, *rule);
                }
                v
            }
            Expr::In { lhs, rhs, rule } => {
                let l = self.operand(lhs, cur);
                let r = self.operand(rhs, cur);
                let v = match (l, r) {
                    (Val::Str(x), Val::Set(s)) => s.binary_search(&x).is_ok(),
                    (Val::Ents(a), Val::Ents(b)) => a.iter().any(|x| b.contains(x)),
                    _ => false,
                };
                if v {
                    self.hold(*rule);
                } else {
                    self.fail(Code::ConditionFailed, *rule);
                }
                v
            }
        }
    }

    fn nested(&mut self, e: &Expr, cur: u32, rule: u32) -> bool {
        if self.depth >= MAX_DEPTH {
            self.fail(Code::DepthExceeded, rule);
            return false;
        }
        self.depth += 1;
        let v = self.eval(e, cur);
        self.depth -= 1;
        v
    }

    fn member(&mut self, cur: u32, rel: u16, rule: u32) -> bool {
        let t = self.ty(cur);
        let local = self.local(cur);
        let Some(csr) = self
            .s
            .types
            .get(t as usize)
            .and_then(|td| td.rels.get(rel as usize))
        else {
            return false;
        };
        let row = csr.view(local);
        match row.position(self.principal) {
            Some(pos) => {
                let exp = row.expiry(pos);
                if self.now < exp {
                    self.note(exp);
                    self.hold(rule);
                    true
                } else {
                    self.fail(Code::RelationExpired, rule);
                    false
                }
            }
            None => {
                self.fail(Code::RelationMissing, rule);
                false
            }
        }
    }

    fn arrow(&mut self, cur: u32, rel: u16, bodies: &[(u16, Expr)], rule: u32) -> bool {
        let t = self.ty(cur);
        let local = self.local(cur);
        let s = self.s;
        let Some(csr) = s
            .types
            .get(t as usize)
            .and_then(|td| td.rels.get(rel as usize))
        else {
            return false;
        };
        if self.depth >= MAX_DEPTH {
            self.fail(Code::DepthExceeded, rule);
            return false;
        }
        let (f0, h0) = self.marks();
        let row = csr.view(local);
        let mut expired_match = false;
        self.depth += 1;
        for (pos, &sub) in row.subjects.iter().enumerate() {
            let exp = row.expiry(pos);
            let live = self.now < exp;
            if !live && !self.explaining() {
                self.cut();
                continue;
            }
            let st = self.ty(sub);
            let Some((_, body)) = bodies.iter().find(|(bt, _)| *bt == st) else {
                continue;
            };
            let (f, h) = self.marks();
            if self.eval(body, sub) {
                if live {
                    self.note(exp);
                    self.depth -= 1;
                    self.truncate(Some(f0), None);
                    self.hold(rule);
                    return true;
                }
                expired_match = true;
            } else if live && self.inner_expired(f) {
                // The subject is linked, but what it needed from the principal has expired.
                expired_match = true;
            }
            self.truncate(None, Some(h));
        }
        self.depth -= 1;
        self.truncate(Some(f0), Some(h0));
        self.fail(
            if expired_match {
                Code::RelationExpired
            } else {
                Code::RelationMissing
            },
            rule,
        );
        false
    }

    fn inner_expired(&self, from: usize) -> bool {
        self.trace.as_ref().is_some_and(|t| {
            t.fails
                .get(from..)
                .is_some_and(|f| f.iter().any(|r| r.code == Code::RelationExpired))
        })
    }

    /// A matrix check; `record` is the record and the type's scope indices, or `None` for
    /// the page itself.
    pub fn matrix(
        &mut self,
        m: u16,
        row: u16,
        action: u8,
        record: Option<(u32, &[u16])>,
        rule: u32,
    ) -> bool {
        let s = self.s;
        let Some(md) = s.schema.matrices.get(m as usize) else {
            return false;
        };
        let bit = 1u32 << action;
        let pt = self.ty(self.principal);
        let gs = s
            .types
            .get(pt as usize)
            .and_then(|td| td.grants.get(self.row(self.principal)))
            .and_then(|g| s.grant_sets.get(*g as usize))
            .and_then(|g| g.matrices.get(m as usize));
        let explain = self.explaining();
        // Whether checks after the role's could fail too (explaining reports them all);
        // asked only when a role check fails while collecting.
        let more = || {
            md.rows.get(row as usize).is_some_and(|r| {
                r.feature.is_some()
                    || r.setup_only
                    || md
                        .controls
                        .iter()
                        .any(|c| c.row == row && c.action == action)
            })
        };
        let has_role = gs.is_some_and(|g| g.has_role);
        let mut ok = true;
        if !has_role {
            self.fail(Code::RoleNoneAssigned, rule);
            ok = false;
            if !explain {
                if more() {
                    self.cut();
                }
                return false;
            }
        }
        if has_role {
            let granted = match (gs, record) {
                (Some(g), None) => g.page.get(row as usize).is_some_and(|x| x & bit != 0),
                (Some(g), Some((cur, scopes))) => {
                    g.record.get(row as usize).is_some_and(|x| x & bit != 0)
                        || g.scoped
                            .iter()
                            .filter(|c| c.row == row && c.record & bit != 0)
                            .any(|c| {
                                c.scopes.iter().any(|si| {
                                    let Some(&ti) = scopes.get(*si as usize) else {
                                        return false;
                                    };
                                    let t = self.ty(cur);
                                    let Some(sc) =
                                        s.schema.ty(t).and_then(|td| td.scopes.get(ti as usize))
                                    else {
                                        return false;
                                    };
                                    let (f, h) = self.marks();
                                    let v = self.nested(&sc.expr, cur, sc.rule);
                                    self.truncate(Some(f), Some(h));
                                    v
                                })
                            })
                }
                (None, _) => false,
            };
            if !granted {
                self.fail(Code::RoleMissingPermission, rule);
                ok = false;
                if !explain {
                    if more() {
                        self.cut();
                    }
                    return false;
                }
            }
        }
        let Some(r) = md.rows.get(row as usize) else {
            return false;
        };
        if let Some(f) = r.feature {
            let on = match self.account_column(s.schema.builtins.account_attrs.features) {
                Some(Column::Set(v)) => v
                    .get(self.row(self.account))
                    .is_some_and(|set| set.binary_search(&f).is_ok()),
                _ => false,
            };
            if !on {
                self.fail(Code::FeatureDisabled, rule);
                ok = false;
                if !explain {
                    self.cut();
                    return false;
                }
            }
        }
        if r.setup_only {
            let on = match self.account_column(s.schema.builtins.account_attrs.setup_mode) {
                Some(Column::Bool(v)) => v.get(self.row(self.account)).is_some_and(|b| *b == 1),
                _ => false,
            };
            if !on {
                self.fail(Code::SetupModeOff, rule);
                ok = false;
                if !explain {
                    self.cut();
                    return false;
                }
            }
        }
        for c in md
            .controls
            .iter()
            .filter(|c| c.row == row && c.action == action)
        {
            if !self.authorized(c.kind, None, Asked::default(), c.rule) {
                ok = false;
                if !explain {
                    self.cut();
                    return false;
                }
            }
        }
        if ok {
            self.hold(rule);
        }
        ok
    }

    fn account_column(&self, attr: u16) -> Option<&'a Column> {
        let s = self.s;
        s.types
            .get(s.schema.builtins.account as usize)?
            .columns
            .get(attr as usize)
    }

    /// Whether string `c` (a licence category) is covered by category `by`: the same, or
    /// a subcategory of it (`B1` covers `B1.1`).
    fn covers(&self, by: u32, c: u32) -> bool {
        if by == c {
            return true;
        }
        let strings = &self.s.strings;
        match (strings.get(by as usize), strings.get(c as usize)) {
            (Some(by), Some(c)) => c
                .strip_prefix(by.as_str())
                .is_some_and(|rest| rest.starts_with('.')),
            _ => false,
        }
    }

    /// The set of set attribute `a` of entity `l` of a type's columns.
    fn set_of(columns: &[Column], a: u16, l: usize) -> &[u32] {
        match columns.get(a as usize) {
            Some(Column::Set(v)) => v.get(l).map_or(&[][..], |s| &s[..]),
            _ => &[],
        }
    }

    /// Whether the certification limits asked hold of authorisation `aid`, and the
    /// instant its licence stops covering it (`NEVER` when none is asked): `Err` with
    /// the code of the failure.
    fn certifies(&mut self, aid: u32, asked: &Asked) -> Result<i64, Code> {
        let s = self.s;
        let b = &s.schema.builtins;
        let (attrs, la) = (b.auth_attrs, b.licence_attrs);
        let Some(td) = s.types.get(b.authorization as usize) else {
            return Err(Code::AuthorizationMissing);
        };
        let l = self.row(aid);
        let any_or = |set: &[u32], x: Option<u32>| {
            x.is_none_or(|x| set.is_empty() || set.binary_search(&x).is_ok())
        };
        if !any_or(Self::set_of(&td.columns, attrs.chapters, l), asked.chapter)
            || !any_or(
                Self::set_of(&td.columns, attrs.task_kinds, l),
                asked.task_kind,
            )
        {
            return Err(Code::AuthorizationOutOfScope);
        }
        if let Some(c) = asked.category
            && !Self::set_of(&td.columns, attrs.categories, l)
                .iter()
                .any(|&g| self.covers(g, c))
        {
            return Err(Code::AuthorizationOutOfScope);
        }
        // The licence it rests on: not revoked, not expired, and covering the category.
        // A category is certified only on a licence.
        let Some(lic) = self.first_subject(aid, attrs.licence) else {
            return match asked.category {
                Some(_) => Err(Code::AuthorizationOutOfScope),
                None => Ok(NEVER),
            };
        };
        let Some(lt) = s.types.get(b.licence as usize) else {
            return Err(Code::AuthorizationMissing);
        };
        let ll = self.row(lic);
        if matches!(lt.columns.get(la.revoked as usize), Some(Column::Bool(v)) if v.get(ll) == Some(&1))
        {
            return Err(Code::AuthorizationRevoked);
        }
        // Its expiry is not read: an authorisation never outlasts its licence (facts
        // that say otherwise do not load), so the authorisation's own ends it first.
        if let Some(c) = asked.category
            && !Self::set_of(&lt.columns, la.categories, ll)
                .iter()
                .any(|&g| self.covers(g, c))
        {
            return Err(Code::AuthorizationOutOfScope);
        }
        Ok(NEVER)
    }

    fn authorized(&mut self, kind: u32, scope: Option<u32>, asked: Asked, rule: u32) -> bool {
        let s = self.s;
        let at = s.schema.builtins.authorization;
        let attrs = s.schema.builtins.auth_attrs;
        let Some(td) = s.types.get(at as usize) else {
            return false;
        };
        let col = |a: u16| td.columns.get(a as usize);
        let mut best = Code::AuthorizationMissing;
        let rank = |c: Code| match c {
            Code::AuthorizationOutOfScope => 4,
            Code::AuthorizationNotYetValid => 3,
            Code::AuthorizationExpired => 2,
            Code::AuthorizationRevoked => 1,
            _ => 0,
        };
        for &aid in s.auth_by_holder.row(self.principal) {
            let l = self.row(aid);
            let k = match col(attrs.kind) {
                Some(Column::Str(v)) => v.get(l).copied().unwrap_or(NONE_STR),
                _ => NONE_STR,
            };
            if k != kind {
                continue;
            }
            let time = |a: u16| match col(a) {
                Some(Column::Time(v)) => v.get(l).copied().unwrap_or(NONE_I64),
                _ => NONE_I64,
            };
            let (from, until) = (time(attrs.valid_from), time(attrs.valid_until));
            let revoked =
                matches!(col(attrs.revoked), Some(Column::Bool(v)) if v.get(l) == Some(&1));
            let in_scope = match scope {
                None => true,
                Some(x) => match col(attrs.scope) {
                    Some(Column::Set(v)) => v
                        .get(l)
                        .is_none_or(|set| set.is_empty() || set.binary_search(&x).is_ok()),
                    _ => true,
                },
            };
            let status = if revoked {
                Code::AuthorizationRevoked
            } else if until != NONE_I64 && self.now >= until {
                Code::AuthorizationExpired
            } else if from != NONE_I64 && self.now < from {
                self.note(from);
                Code::AuthorizationNotYetValid
            } else if !in_scope {
                Code::AuthorizationOutOfScope
            } else {
                match self.certifies(aid, &asked) {
                    Err(code) => code,
                    Ok(licence_until) => {
                        // Valid until the earlier of the authorisation's and the licence's
                        // expiry.
                        if until != NONE_I64 {
                            self.note(until);
                        }
                        if licence_until != NEVER {
                            self.note(licence_until);
                        }
                        self.hold(rule);
                        return true;
                    }
                }
            };
            if rank(status) > rank(best) {
                best = status;
            }
        }
        self.fail(best, rule);
        false
    }

    fn base(&self, b: Base, cur: u32) -> Option<u32> {
        match b {
            Base::Current => Some(cur),
            Base::Target => self.target,
            Base::Account => Some(self.account),
            Base::Principal => Some(self.principal),
        }
    }

    /// The first live subject of relation `rel` of entity `e`.
    fn first_subject(&mut self, e: u32, rel: u16) -> Option<u32> {
        let csr = self
            .s
            .types
            .get(self.ty(e) as usize)?
            .rels
            .get(rel as usize)?;
        let row = csr.view(self.local(e));
        for (pos, &sub) in row.subjects.iter().enumerate() {
            let exp = row.expiry(pos);
            if self.now < exp {
                self.note(exp);
                return Some(sub);
            }
        }
        None
    }

    fn live_subjects(&mut self, e: u32, rel: u16, out: &mut SmallVec<[u32; 4]>) {
        let Some(csr) = self
            .s
            .types
            .get(self.ty(e) as usize)
            .and_then(|t| t.rels.get(rel as usize))
        else {
            return;
        };
        let row = csr.view(self.local(e));
        for (pos, &x) in row.subjects.iter().enumerate() {
            let exp = row.expiry(pos);
            if self.now < exp {
                self.note(exp);
                out.push(x);
            }
        }
    }

    fn operand(&mut self, o: &Operand, cur: u32) -> Val<'a> {
        match o {
            Operand::Now => Val::Int(self.now),
            Operand::Int(i) => Val::Int(*i),
            Operand::Str(s) => Val::Str(*s),
            Operand::Bool(b) => Val::Bool(*b),
            Operand::Enum(e) => Val::Enum(*e),
            Operand::This(b) => match self.base(*b, cur) {
                Some(e) => Val::Ents(smallvec::smallvec![e]),
                None => Val::None,
            },
            Operand::Attr { base, path, attr } => {
                let Some(mut e) = self.base(*base, cur) else {
                    return Val::None;
                };
                for (_, rel) in path {
                    match self.first_subject(e, *rel) {
                        Some(x) => e = x,
                        None => return Val::None,
                    }
                }
                if self.ty(e) != attr.0 {
                    return Val::None;
                }
                let l = self.row(e);
                let s = self.s;
                match s
                    .types
                    .get(attr.0 as usize)
                    .and_then(|t| t.columns.get(attr.1 as usize))
                {
                    Some(Column::Bool(v)) => match v.get(l) {
                        Some(&b) if b != NONE_U8 => Val::Bool(b == 1),
                        _ => Val::None,
                    },
                    Some(Column::Int(v)) | Some(Column::Time(v)) => match v.get(l) {
                        Some(&i) if i != NONE_I64 => Val::Int(i),
                        _ => Val::None,
                    },
                    Some(Column::Str(v)) => match v.get(l) {
                        Some(&x) if x != NONE_STR => Val::Str(x),
                        _ => Val::None,
                    },
                    Some(Column::Enum(v)) => match v.get(l) {
                        Some(&x) if x != NONE_U8 => Val::Enum(x),
                        _ => Val::None,
                    },
                    Some(Column::Set(v)) => Val::Set(v.get(l).map_or(&[][..], |b| &b[..])),
                    None => Val::None,
                }
            }
            Operand::Entities { base, path } => {
                let Some(e) = self.base(*base, cur) else {
                    return Val::None;
                };
                let mut set: SmallVec<[u32; 4]> = smallvec::smallvec![e];
                for (_, rel) in path {
                    let mut next = SmallVec::new();
                    for x in set {
                        self.live_subjects(x, *rel, &mut next);
                    }
                    next.sort_unstable();
                    next.dedup();
                    set = next;
                }
                Val::Ents(set)
            }
            Operand::Count { base, rels } => {
                let Some(e) = self.base(*base, cur) else {
                    return Val::None;
                };
                // A principal slice carries the number, not the tuples.
                if let Some((n, next)) = self.s.carried_count(e, rels, self.now) {
                    self.note(next);
                    return Val::Int(n);
                }
                let mut all = SmallVec::new();
                for (_, rel) in rels {
                    self.live_subjects(e, *rel, &mut all);
                }
                all.sort_unstable();
                all.dedup();
                Val::Int(all.len() as i64)
            }
        }
    }

    fn compare(&mut self, op: CmpOp, lhs: &Operand, rhs: &Operand, cur: u32) -> bool {
        let l = self.operand(lhs, cur);
        let r = self.operand(rhs, cur);
        let holds = |a: i64, b: i64| match op {
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
        };
        let (a, b) = match (l, r) {
            (Val::Int(a), Val::Int(b)) => (a, b),
            (Val::Str(a), Val::Str(b)) => (a as i64, b as i64),
            (Val::Enum(a), Val::Enum(b)) => (a as i64, b as i64),
            (Val::Bool(a), Val::Bool(b)) => (a as i64, b as i64),
            _ => return false,
        };
        let v = holds(a, b);
        // A comparison with `now` flips at most once more: find when.
        let now_left = matches!(lhs, Operand::Now);
        let now_right = matches!(rhs, Operand::Now);
        if now_left != now_right {
            let t = if now_left { b } else { a };
            for c in [t, t.saturating_add(1)] {
                if c > self.now {
                    let flipped = if now_left { holds(c, t) } else { holds(t, c) };
                    if flipped != v {
                        self.note(c);
                        break;
                    }
                }
            }
        }
        v
    }
}
