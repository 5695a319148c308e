//! The decision API on a snapshot: check, batches, the actions a principal may take,
//! listing resources and principals, explanations and the access-rights matrix.

use crate::decision::{Code, Decision, Query, Reason, Request, Resource, field};
use crate::error::ErrorCode;
use crate::error::ErrorData;
use crate::eval::{Eval, Mode};
use crate::policy::{LEVELS, hex};
use crate::snapshot::{NEVER, Snapshot};
use crate::time::TimeValue;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// A reason with its stable code and a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ReasonView {
    /// The stable code, e.g. `relation.missing` or `gate.active`.
    pub code: String,
    /// The rule or request field it is about, e.g. `event.view` or `request.principal`.
    pub rule: String,
    /// What happened, in words.
    pub message: String,
    /// Where the rule is written (`file:line:col`), if it is written in a policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

/// A decision as data for a boundary (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DecisionView {
    /// Allow or deny.
    pub allowed: bool,
    /// The reasons.
    pub reasons: Vec<ReasonView>,
    /// The snapshot revision.
    pub revision: u64,
    /// The policy hash (hex SHA-256).
    pub policy_hash: String,
    /// When time alone could change the decision (RFC 3339), if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
}

/// A full explanation: the decision, and for an allow the rules that held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Explanation {
    /// The decision with every failed check (deny) or the granting rule (allow).
    pub decision: DecisionView,
    /// For an allow: the checks that held along the granting path, innermost first.
    pub held: Vec<ReasonView>,
}

/// The access-rights matrix of one matrix: roles × rows with their cells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AccessMatrix {
    /// The matrix.
    pub matrix: String,
    /// Whether cells are levels (else action lists).
    pub levels: bool,
    /// Row names, in order.
    pub rows: Vec<String>,
    /// One line per role in effect.
    pub roles: Vec<MatrixRole>,
}

/// One role's line of the access-rights matrix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MatrixRole {
    /// The role.
    pub name: String,
    /// Whether it is a custom role of the account.
    pub custom: bool,
    /// One cell per row: `none`, a level such as `write(owner)`, or actions.
    pub cells: Vec<String>,
}

impl Snapshot {
    /// The type definition of entity `e`; `None` for an id that names no entity, so a
    /// forged id finds no rule rather than the rules of the first type.
    #[inline]
    fn def_of(&self, e: u32) -> Option<&crate::policy::TypeDef> {
        self.type_of(e).and_then(|t| self.schema.ty(t))
    }

    /// The entities of type `t` in account `account`; none for an id that is not an
    /// account.
    pub(crate) fn members(&self, account: u32, t: usize) -> &[u32] {
        if self.type_of(account) != Some(self.schema.builtins.account) {
            return &[];
        }
        self.local_of(account)
            .and_then(|al| self.account_members.get(al as usize))
            .and_then(|a| a.get(t))
            .map_or(&[], Vec::as_slice)
    }

    fn decision(&self, allowed: bool, reasons: SmallVec<[Reason; 2]>, until: i64) -> Decision {
        Decision {
            allowed,
            reasons,
            revision: self.revision,
            policy_hash: self.schema.hash,
            valid_until: (until != NEVER).then_some(until),
        }
    }

    /// Resolves a request's names to ids, or gives the structural denial.
    pub fn resolve(&self, r: &Request) -> Result<Query, Decision> {
        let mut reasons: SmallVec<[Reason; 2]> = SmallVec::new();
        let mut deny = |code, rule| reasons.push(Reason { code, rule });
        let now = r.now.seconds().map_err(|_| ()).ok();
        if now.is_none() {
            deny(Code::RequestInvalid, field::NOW);
        }
        let principal = self.entity(&r.principal);
        if principal.is_none() {
            deny(Code::EntityUnknown, field::PRINCIPAL);
        }
        // An entity of another account than the principal's is, to the principal, one
        // that does not exist: the same denial, so no answer tells whether an id exists
        // in another tenant.
        let ours = |e: u32| principal.is_none_or(|p| self.account_of(e) == self.account_of(p));
        let resource = self
            .resource(&r.resource)
            .filter(|res| !matches!(*res, Resource::Entity(e) if !ours(e)));
        if resource.is_none() {
            deny(Code::EntityUnknown, field::RESOURCE);
        }
        let mut action = None;
        let mut wants_target = None;
        match resource {
            Some(Resource::Entity(e)) => {
                match self.def_of(e).and_then(|td| {
                    td.perm(&r.action)
                        .map(|i| (i, td.perms.get(i as usize).and_then(|p| p.target)))
                }) {
                    Some((i, tt)) => {
                        action = Some(i);
                        wants_target = tt;
                    }
                    None => deny(Code::ActionUnknown, field::ACTION),
                }
            }
            Some(Resource::Page { matrix, row }) => match self
                .schema
                .matrices
                .get(matrix as usize)
                .and_then(|m| m.action_bit(row, &r.action))
            {
                Some(b) => action = Some(b as u16),
                None => deny(Code::ActionUnknown, field::ACTION),
            },
            None => {}
        }
        if let Some(p) = principal
            && !self.def_of(p).is_some_and(|td| td.principal)
        {
            deny(Code::PrincipalInvalid, field::PRINCIPAL);
        }
        let target = match (&r.target, wants_target) {
            (None, None) => None,
            (Some(t), Some(tt)) => match self.entity(t) {
                Some(id) if self.type_of(id) == Some(tt) && ours(id) => Some(id),
                _ => {
                    deny(Code::TargetInvalid, field::TARGET);
                    None
                }
            },
            (None, Some(_)) if action.is_some() => {
                deny(Code::TargetInvalid, field::TARGET);
                None
            }
            (Some(_), None) if action.is_some() => {
                deny(Code::TargetInvalid, field::TARGET);
                None
            }
            _ => None,
        };
        match (principal, resource, action, now) {
            (Some(principal), Some(resource), Some(action), Some(now)) if reasons.is_empty() => {
                Ok(Query {
                    principal,
                    resource,
                    action,
                    target,
                    now,
                })
            }
            _ => Err(self.decision(false, reasons, NEVER)),
        }
    }

    /// The action id of `name` on a resolved resource: a permission's index (entities) or
    /// an action's bit (pages); `None` if the resource has no such action.
    fn action_of(&self, resource: Resource, name: &str) -> Option<u16> {
        match resource {
            Resource::Entity(e) => self.def_of(e)?.perm(name),
            Resource::Page { matrix, row } => self
                .schema
                .matrices
                .get(matrix as usize)?
                .action_bit(row, name)
                .map(|b| b as u16),
        }
    }

    fn resource(&self, name: &str) -> Option<Resource> {
        if let Some(e) = self.entity(name) {
            return Some(Resource::Entity(e));
        }
        let (m, row) = name.split_once(':')?;
        let mi = *self.schema.matrix_index.get(m)?;
        let ri = *self.schema.matrices.get(mi as usize)?.row_index.get(row)?;
        Some(Resource::Page {
            matrix: mi,
            row: ri,
        })
    }

    /// Decides a query that came from outside (a binary batch): ids are checked to exist
    /// and to fit together first, so a forged query is a denial, never a wrong answer.
    pub fn decide_checked(&self, q: &Query) -> Decision {
        let mut reasons: SmallVec<[Reason; 2]> = SmallVec::new();
        let exists = |e: u32| self.ent(e).is_some();
        let is_principal = |e: u32| {
            self.type_of(e)
                .and_then(|t| self.schema.ty(t))
                .is_some_and(|t| t.principal)
        };
        if !exists(q.principal) {
            reasons.push(Reason {
                code: Code::EntityUnknown,
                rule: field::PRINCIPAL,
            });
        }
        // As in `resolve`: an entity of another account is one that does not exist.
        let ours =
            |e: u32| !exists(q.principal) || self.account_of(e) == self.account_of(q.principal);
        let wants_target = match q.resource {
            Resource::Entity(e) if exists(e) && ours(e) => {
                match self
                    .def_of(e)
                    .and_then(|td| td.perms.get(q.action as usize))
                {
                    Some(p) => p.target.map(Some),
                    None => {
                        reasons.push(Reason {
                            code: Code::ActionUnknown,
                            rule: field::ACTION,
                        });
                        None
                    }
                }
            }
            Resource::Entity(_) => {
                reasons.push(Reason {
                    code: Code::EntityUnknown,
                    rule: field::RESOURCE,
                });
                None
            }
            Resource::Page { matrix, row } => match self.schema.matrices.get(matrix as usize) {
                Some(m) if (row as usize) < m.rows.len() => {
                    if q.action > 31 || m.row_actions(row) & (1 << q.action) == 0 {
                        reasons.push(Reason {
                            code: Code::ActionUnknown,
                            rule: field::ACTION,
                        });
                    }
                    Some(None)
                }
                _ => {
                    reasons.push(Reason {
                        code: Code::EntityUnknown,
                        rule: field::RESOURCE,
                    });
                    None
                }
            },
        };
        if exists(q.principal) && !is_principal(q.principal) {
            reasons.push(Reason {
                code: Code::PrincipalInvalid,
                rule: field::PRINCIPAL,
            });
        }
        if let Some(wants) = wants_target {
            let fits = match (wants, q.target) {
                (None, None) => true,
                (Some(tt), Some(t)) => self.type_of(t) == Some(tt) && ours(t),
                _ => false,
            };
            if !fits {
                reasons.push(Reason {
                    code: Code::TargetInvalid,
                    rule: field::TARGET,
                });
            }
        }
        if reasons.is_empty() {
            self.decide(q)
        } else {
            self.decision(false, reasons, NEVER)
        }
    }

    /// Decides a resolved request. This is the hot path.
    pub fn decide(&self, q: &Query) -> Decision {
        self.decide_from(q, Mode::Collect)
    }

    /// The reference decision `decide` must equal: a plain pass, then for a denial by the
    /// rule a second pass that explains every failed check. `decide` skips the second
    /// pass when its first pass lost nothing; the property tests hold the two equal.
    #[doc(hidden)]
    pub fn decide_reference(&self, q: &Query) -> Decision {
        self.decide_from(q, Mode::Decide)
    }

    /// Decides with a first pass in `first` mode; a denial by the rule is explained by a
    /// second pass unless the first one collected its failed checks without cutting any.
    fn decide_from(&self, q: &Query, first: Mode) -> Decision {
        let mut ev = Eval::new(self, q.principal, q.target, q.now, first);
        match self.evaluate(&mut ev, q) {
            Ok(rule) => self.decision(
                true,
                smallvec::smallvec![Reason {
                    code: Code::Granted,
                    rule
                }],
                ev.until,
            ),
            Err(Some(early)) => self.decision(false, smallvec::smallvec![early], ev.until),
            Err(None) => {
                let until = ev.until;
                let fails = match ev.trace.take() {
                    Some(t) if !t.cut => t.fails,
                    _ => {
                        let mut ex = Eval::new(self, q.principal, q.target, q.now, Mode::Explain);
                        if let Err(Some(early)) = self.evaluate(&mut ex, q) {
                            return self.decision(false, smallvec::smallvec![early], until);
                        }
                        ex.trace.map(|t| t.fails).unwrap_or_default()
                    }
                };
                let mut reasons: SmallVec<[Reason; 2]> = SmallVec::new();
                for r in fails {
                    if !reasons.contains(&r) {
                        reasons.push(r);
                    }
                }
                self.decision(false, reasons, until)
            }
        }
    }

    /// Whether a resolved request is allowed, without reasons: one pass.
    pub fn allows(&self, q: &Query) -> bool {
        let mut ev = Eval::new(self, q.principal, q.target, q.now, Mode::Decide);
        self.evaluate(&mut ev, q).is_ok()
    }

    /// Runs gates, tenancy and the permission. `Ok(rule)` allows by `rule`; `Err(Some(r))`
    /// is an early denial with one reason; `Err(None)` a denial by the permission.
    fn evaluate(&self, ev: &mut Eval<'_>, q: &Query) -> Result<u32, Option<Reason>> {
        let ptd = self.def_of(q.principal).ok_or(None)?;
        for g in &ptd.gates {
            if !ev.eval(&g.expr, q.principal) {
                return Err(Some(Reason {
                    code: Code::Gate,
                    rule: g.rule,
                }));
            }
        }
        self.evaluate_past_gates(ev, q)
    }

    /// [`Snapshot::evaluate`] after the gates: tenancy and the permission.
    fn evaluate_past_gates(&self, ev: &mut Eval<'_>, q: &Query) -> Result<u32, Option<Reason>> {
        let schema = &*self.schema;
        if let Some(t) = ev.trace.as_mut() {
            t.fails.clear();
            t.holds.clear();
            t.cut = false;
        }
        let account = self.account_of(q.principal);
        if let Resource::Entity(e) = q.resource
            && self.account_of(e) != account
        {
            return Err(Some(Reason {
                code: Code::AccountMismatch,
                rule: field::RESOURCE,
            }));
        }
        if let Some(t) = q.target
            && self.account_of(t) != account
        {
            return Err(Some(Reason {
                code: Code::AccountMismatch,
                rule: field::TARGET,
            }));
        }
        match q.resource {
            Resource::Entity(e) => {
                let perm = self
                    .def_of(e)
                    .and_then(|td| td.perms.get(q.action as usize))
                    .ok_or(None)?;
                if ev.eval(&perm.expr, e) {
                    Ok(perm.rule)
                } else {
                    Err(None)
                }
            }
            Resource::Page { matrix, row } => {
                let rule = schema
                    .matrices
                    .get(matrix as usize)
                    .and_then(|m| m.rows.get(row as usize))
                    .map_or(0, |r| r.rule);
                // A page's action is a bit of its row; a forged wider one denies.
                let Ok(bit) = u8::try_from(q.action) else {
                    return Err(None);
                };
                if ev.matrix(matrix, row, bit, None, rule) {
                    Ok(rule)
                } else {
                    Err(None)
                }
            }
        }
    }

    /// The first invariant of `entity`'s type that does not hold of it, judged for
    /// `author` at `now`: the invariant, and a denial naming it and every check in it
    /// that failed.
    pub(crate) fn broken_invariant(
        &self,
        author: &str,
        entity: u32,
        now: i64,
    ) -> Option<(&crate::policy::NamedRule, Decision)> {
        let td = self.def_of(entity)?;
        let principal = self.entity(author).unwrap_or(entity);
        for inv in &td.invariants {
            let mut ev = Eval::new(self, principal, None, now, Mode::Explain);
            if !ev.eval(&inv.expr, entity) {
                let mut reasons: SmallVec<[Reason; 2]> = SmallVec::new();
                reasons.push(Reason {
                    code: Code::Gate,
                    rule: inv.rule,
                });
                if let Some(t) = ev.trace {
                    reasons.extend(t.fails);
                }
                return Some((inv, self.decision(false, reasons, NEVER)));
            }
        }
        None
    }

    /// Whether `principal` passes the gates of its type at `now` (an invited user who has
    /// not accepted, a deactivated user, a revoked guest do not): what a caller must pass
    /// before it reads anything for itself, as every request passes them first. Allowed
    /// when every gate holds; else denied with the first failing gate, or with the
    /// reason the principal or `now` is unusable.
    pub fn gates(&self, principal: &str, now: &TimeValue) -> Decision {
        let deny = |code, rule| {
            let mut reasons: SmallVec<[Reason; 2]> = SmallVec::new();
            reasons.push(Reason { code, rule });
            self.decision(false, reasons, NEVER)
        };
        let Ok(at) = now.seconds() else {
            return deny(Code::RequestInvalid, field::NOW);
        };
        let Some(p) = self.entity(principal) else {
            return deny(Code::EntityUnknown, field::PRINCIPAL);
        };
        let Some(ptd) = self.def_of(p).filter(|td| td.principal) else {
            return deny(Code::PrincipalInvalid, field::PRINCIPAL);
        };
        let mut ev = Eval::new(self, p, None, at, Mode::Decide);
        for g in &ptd.gates {
            if !ev.eval(&g.expr, p) {
                return deny(Code::Gate, g.rule);
            }
        }
        self.decision(true, SmallVec::new(), NEVER)
    }

    /// Decides a request given by names.
    pub fn check(&self, r: &Request) -> Decision {
        match self.resolve(r) {
            Ok(q) => self.decide(&q),
            Err(d) => d,
        }
    }

    /// Decides many requests.
    pub fn check_batch(&self, rs: &[Request]) -> Vec<Decision> {
        rs.iter().map(|r| self.check(r)).collect()
    }

    /// Every action `principal` may take on `resource` (an entity or a page) at `now`:
    /// one call for a UI. Permissions that take a target are not listed.
    pub fn allowed_actions(
        &self,
        principal: &str,
        resource: &str,
        now: &TimeValue,
    ) -> Result<Vec<String>, Decision> {
        let names = self.action_names(resource);
        let mut out = Vec::new();
        let mut first_err = None;
        // The request is resolved once, with the first action: what can fail to resolve
        // (the principal, the resource, the time) is the same for every action, and the
        // actions are the resource's own. The others only change the action.
        let mut base: Option<Query> = None;
        for name in &names {
            let q = match base {
                Some(b) => match self.action_of(b.resource, name) {
                    Some(action) => Query { action, ..b },
                    None => continue,
                },
                None => {
                    let req = Request {
                        principal: principal.into(),
                        action: name.clone(),
                        resource: resource.into(),
                        target: None,
                        now: now.clone(),
                    };
                    match self.resolve(&req) {
                        Ok(q) => {
                            base = Some(q);
                            q
                        }
                        Err(d) => {
                            first_err = Some(d);
                            break;
                        }
                    }
                }
            };
            if self.allows(&q) {
                out.push(name.clone());
            }
        }
        if names.is_empty() {
            let req = Request {
                principal: principal.into(),
                action: String::new(),
                resource: resource.into(),
                target: None,
                now: now.clone(),
            };
            if let Err(d) = self.resolve(&req)
                && d.reasons.iter().any(|r| r.code != Code::ActionUnknown)
            {
                return Err(d);
            }
        }
        match first_err {
            Some(d) => Err(d),
            None => Ok(out),
        }
    }

    /// The checkable actions of a resource (an entity or a page), without targets.
    pub fn action_names(&self, resource: &str) -> Vec<String> {
        match self.resource(resource) {
            Some(Resource::Entity(e)) => self
                .def_of(e)
                .map(|td| {
                    td.perms
                        .iter()
                        .filter(|p| p.target.is_none())
                        .map(|p| p.name.clone())
                        .collect()
                })
                .unwrap_or_default(),
            Some(Resource::Page { matrix, row }) => match self.schema.matrices.get(matrix as usize)
            {
                Some(m) => {
                    let bits = m.row_actions(row);
                    m.actions
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| bits & (1 << i) != 0)
                        .map(|(_, a)| a.clone())
                        .collect()
                }
                None => Vec::new(),
            },
            None => Vec::new(),
        }
    }

    /// The entities of type `ty` (or the rows of matrix `ty`) on which `principal` may take
    /// `action` at `now`, by name.
    pub fn list_resources(
        &self,
        principal: &str,
        action: &str,
        ty: &str,
        now: &TimeValue,
    ) -> Result<Vec<String>, ErrorData> {
        let now_s = now.seconds().map_err(|m| request_error(&m))?;
        let p = self
            .entity(principal)
            .ok_or_else(|| request_error(&format!("unknown principal `{principal}`")))?;
        let mut out = Vec::new();
        if let Some(&mi) = self.schema.matrix_index.get(ty) {
            let m = self
                .schema
                .matrices
                .get(mi as usize)
                .ok_or_else(|| request_error("unknown matrix"))?;
            // The compiler gives rows `u16` ids, so the zip visits every row.
            for (ri, r) in (0..=u16::MAX).zip(&m.rows) {
                if let Some(bit) = m.action_bit(ri, action) {
                    let q = Query {
                        principal: p,
                        resource: Resource::Page {
                            matrix: mi,
                            row: ri,
                        },
                        action: bit as u16,
                        target: None,
                        now: now_s,
                    };
                    if self.allows(&q) {
                        out.push(format!("{ty}:{}", r.name));
                    }
                }
            }
            return Ok(out);
        }
        let t = self
            .schema
            .type_id(ty)
            .ok_or_else(|| request_error(&format!("unknown type `{ty}`")))?;
        let perm = self
            .schema
            .ty(t)
            .and_then(|td| td.perm(action))
            .ok_or_else(|| request_error(&format!("`{ty}` has no action `{action}`")))?;
        if self
            .schema
            .ty(t)
            .and_then(|td| td.perms.get(perm as usize))
            .is_some_and(|p| p.target.is_some())
        {
            return Err(request_error(&format!(
                "`{ty}.{action}` takes a target and cannot be listed"
            )));
        }
        let acct = self
            .account_of(p)
            .ok_or_else(|| request_error("unknown principal"))?;
        for &e in self.members(acct, t as usize) {
            let q = Query {
                principal: p,
                resource: Resource::Entity(e),
                action: perm,
                target: None,
                now: now_s,
            };
            if self.allows(&q) {
                out.push(self.name(e).to_string());
            }
        }
        Ok(out)
    }

    /// The principals who may take `action` on `resource` at `now`, by name. For a page,
    /// `account` limits the answer to one account's principals.
    pub fn list_principals(
        &self,
        resource: &str,
        action: &str,
        now: &TimeValue,
        account: Option<&str>,
    ) -> Result<Vec<String>, ErrorData> {
        let now_s = now.seconds().map_err(|m| request_error(&m))?;
        let res = self
            .resource(resource)
            .ok_or_else(|| request_error(&format!("unknown resource `{resource}`")))?;
        let action_id = match res {
            Resource::Entity(e) => {
                let td = self
                    .def_of(e)
                    .ok_or_else(|| request_error("unknown type"))?;
                let i = td.perm(action).ok_or_else(|| {
                    request_error(&format!("`{}` has no action `{action}`", td.name))
                })?;
                if td.perms.get(i as usize).is_some_and(|p| p.target.is_some()) {
                    return Err(request_error(&format!(
                        "`{}.{action}` takes a target and cannot be listed",
                        td.name
                    )));
                }
                i
            }
            Resource::Page { matrix, row } => self
                .schema
                .matrices
                .get(matrix as usize)
                .and_then(|m| m.action_bit(row, action))
                .ok_or_else(|| request_error(&format!("`{resource}` has no action `{action}`")))?
                as u16,
        };
        let accounts: Vec<u32> = match (res, account) {
            (Resource::Entity(e), _) => self.account_of(e).into_iter().collect(),
            (Resource::Page { .. }, Some(a)) => {
                let key = if a.starts_with("account:") {
                    a.to_string()
                } else {
                    format!("account:{a}")
                };
                vec![
                    self.entity(&key)
                        .ok_or_else(|| request_error(&format!("unknown account `{a}`")))?,
                ]
            }
            (Resource::Page { .. }, None) => {
                let account = self.schema.builtins.account;
                let mut all: Vec<u32> = self
                    .types
                    .get(account as usize)
                    .map(|t| t.entities.clone())
                    .unwrap_or_default();
                // Name order, without accounts removed since the build.
                all.retain(|&a| self.type_of(a) == Some(account));
                all.sort_by(|a, b| self.name(*a).cmp(self.name(*b)));
                all
            }
        };
        let mut out = Vec::new();
        for acct in accounts {
            for (t, td) in self.schema.types.iter().enumerate() {
                if !td.principal {
                    continue;
                }
                for &p in self.members(acct, t) {
                    let q = Query {
                        principal: p,
                        resource: res,
                        action: action_id,
                        target: None,
                        now: now_s,
                    };
                    if self.allows(&q) {
                        out.push(self.name(p).to_string());
                    }
                }
            }
        }
        Ok(out)
    }

    /// Decides and explains: every failed check for a deny, the granting path for an allow.
    pub fn explain(&self, r: &Request) -> Explanation {
        let mut d = self.check(r);
        // MX9: a denial by a gate is explained past it: every failed gate, then tenancy,
        // then every failed check of the permission, so that an administrator sees all
        // there is to fix. The decision is the check's, its first reason included.
        if !d.allowed
            && d.reasons.first().is_some_and(|x| x.code == Code::Gate)
            && let Ok(q) = self.resolve(r)
        {
            d.reasons = self.every_failed_check(&q);
        }
        let mut held = Vec::new();
        if d.allowed
            && let Ok(q) = self.resolve(r)
        {
            let mut ex = Eval::new(self, q.principal, q.target, q.now, Mode::Explain);
            let _ = self.evaluate(&mut ex, &q);
            if let Some(t) = ex.trace {
                held = t.holds.iter().map(|x| self.reason_view(x, r)).collect();
            }
        }
        Explanation {
            decision: self.view(&d, r),
            held,
        }
    }

    /// Every check that fails for a request, in the order they are made: each gate of
    /// the principal that fails, then tenancy (a request across accounts is explained no
    /// further), then the permission's failed checks.
    fn every_failed_check(&self, q: &Query) -> SmallVec<[Reason; 2]> {
        let mut out: SmallVec<[Reason; 2]> = SmallVec::new();
        let Some(ptd) = self.def_of(q.principal) else {
            return out;
        };
        let mut ev = Eval::new(self, q.principal, q.target, q.now, Mode::Explain);
        for g in &ptd.gates {
            if !ev.eval(&g.expr, q.principal) {
                out.push(Reason {
                    code: Code::Gate,
                    rule: g.rule,
                });
            }
        }
        match self.evaluate_past_gates(&mut ev, q) {
            Ok(_) => {}
            Err(Some(early)) => out.push(early),
            Err(None) => {
                for r in ev.trace.map(|t| t.fails).unwrap_or_default() {
                    if !out.contains(&r) {
                        out.push(r);
                    }
                }
            }
        }
        out
    }

    /// The stable code of a reason (`gate.<name>` for gates).
    pub fn code(&self, r: &Reason) -> String {
        match r.code {
            Code::Gate => self
                .schema
                .rule(r.rule)
                .map_or_else(|| "gate".to_string(), |x| x.owner.clone()),
            c => c.as_str().to_string(),
        }
    }

    /// A decision as data for a boundary.
    pub fn view(&self, d: &Decision, r: &Request) -> DecisionView {
        DecisionView {
            allowed: d.allowed,
            reasons: d.reasons.iter().map(|x| self.reason_view(x, r)).collect(),
            revision: d.revision,
            policy_hash: hex(&self.schema.hash),
            valid_until: d.valid_until.map(crate::time::format),
        }
    }

    /// A reason with its message.
    pub fn reason_view(&self, x: &Reason, r: &Request) -> ReasonView {
        let rule = self.schema.rule(x.rule);
        ReasonView {
            code: self.code(x),
            rule: self.reason_rule(x),
            message: self.reason_message(x, r),
            at: rule
                .filter(|r| r.owner != "request")
                .map(|r| r.span.to_string()),
        }
    }

    /// Whether the message of a reason with `code` names nothing of the request, so that
    /// it is the same for every request with that code and rule (and can be kept).
    pub fn message_is_fixed(code: Code) -> bool {
        matches!(
            code,
            Code::Granted
                | Code::Gate
                | Code::ConditionFailed
                | Code::ExclusionMatched
                | Code::FeatureDisabled
                | Code::SetupModeOff
                | Code::DepthExceeded
        )
    }

    /// A reason's message with each request field it shows written as a marker: NUL then
    /// `p` (principal), `a` (action), `r` (resource) or `t` (target, empty when absent),
    /// so a face that keeps strings across calls can keep this one and put the fields in.
    /// `None` when the message shows more of the request than those fields' text (an
    /// unknown action lists the resource's actions; a bad `now` shows the time) or when
    /// the policy's own text holds a NUL.
    pub fn reason_template(&self, x: &Reason) -> Option<String> {
        if matches!(x.code, Code::ActionUnknown | Code::RequestInvalid) || x.rule == field::NOW {
            return None;
        }
        let marked = Request {
            principal: "\0p".into(),
            action: "\0a".into(),
            resource: "\0r".into(),
            target: Some("\0t".into()),
            now: TimeValue::Seconds(0),
        };
        let bare = Request {
            principal: String::new(),
            action: String::new(),
            resource: String::new(),
            target: None,
            now: TimeValue::Seconds(0),
        };
        (!self.reason_message(x, &bare).contains('\0')).then(|| self.reason_message(x, &marked))
    }

    /// What happened, in words: a reason's message.
    pub fn reason_message(&self, x: &Reason, r: &Request) -> String {
        let rule = self.schema.rule(x.rule);
        let owner = rule.map_or("", |r| r.owner.as_str());
        let text = rule.map_or("", |r| r.text.as_str());
        let field_value = |f: u32| match f {
            field::PRINCIPAL => r.principal.clone(),
            field::RESOURCE => r.resource.clone(),
            field::ACTION => r.action.clone(),
            field::TARGET => r.target.clone().unwrap_or_default(),
            _ => match &r.now {
                TimeValue::Seconds(n) => n.to_string(),
                TimeValue::Text(t) => t.clone(),
            },
        };
        match x.code {
            Code::Granted => format!("allowed by `{owner}`: {text}"),
            Code::RequestInvalid => format!(
                "the request's `now` ({}) is not a timestamp",
                field_value(field::NOW)
            ),
            Code::EntityUnknown if x.rule == field::PRINCIPAL => {
                format!("the {text} `{}` does not exist", field_value(x.rule))
            }
            Code::EntityUnknown => format!(
                "the {text} `{}` is not an entity of the account of `{}`",
                field_value(x.rule),
                r.principal
            ),
            Code::ActionUnknown => {
                let known = self.action_names(&r.resource);
                format!(
                    "`{}` has no action `{}`: expected one of {}",
                    r.resource,
                    r.action,
                    known.join(", ")
                )
            }
            Code::PrincipalInvalid => format!("`{}` is not of a principal type", r.principal),
            Code::TargetInvalid => format!(
                "`{}` on `{}` needs a target of the declared type; got `{}`",
                r.action,
                r.resource,
                field_value(field::TARGET)
            ),
            Code::Gate => text.to_string(),
            Code::AccountMismatch => format!(
                "`{}` and the {text} `{}` belong to different accounts",
                r.principal,
                field_value(x.rule)
            ),
            Code::RelationMissing => format!(
                "`{owner}` needs `{text}`, and nothing links `{}` that way",
                r.principal
            ),
            Code::RelationExpired => format!(
                "`{owner}` needs `{text}`, and the link to `{}` has expired",
                r.principal
            ),
            Code::ConditionFailed => format!("`{owner}` needs `{text}`, which does not hold"),
            Code::ExclusionMatched => format!("`{owner}` excludes this: `{text}`"),
            Code::RoleNoneAssigned => format!(
                "`{}` holds no role of this matrix (`{owner}`: {text})",
                r.principal
            ),
            Code::RoleMissingPermission => format!(
                "no role of `{}` grants this (`{owner}`: {text})",
                r.principal
            ),
            Code::FeatureDisabled => {
                format!("the account has not enabled the feature this needs (`{owner}`)")
            }
            Code::SetupModeOff => {
                format!("`{owner}` is available only while the account is in setup mode")
            }
            Code::AuthorizationMissing => {
                format!("this needs {text}, and `{}` holds none", r.principal)
            }
            Code::AuthorizationExpired => format!(
                "this needs {text}, and that of `{}` has expired",
                r.principal
            ),
            Code::AuthorizationNotYetValid => format!(
                "this needs {text}, and that of `{}` is not valid yet",
                r.principal
            ),
            Code::AuthorizationRevoked => format!(
                "this needs {text}, and that of `{}` was revoked",
                r.principal
            ),
            Code::AuthorizationOutOfScope => format!(
                "this needs {text}, and that of `{}` does not cover this scope",
                r.principal
            ),
            Code::DepthExceeded => {
                format!("`{owner}` nests rules deeper than the evaluation limit")
            }
            Code::DutyConflict => {
                let path = text
                    .strip_prefix("separate(")
                    .and_then(|t| t.strip_suffix(')'))
                    .unwrap_or(text);
                format!(
                    "separation of duties: `{owner}` needs `{}` to be none of `{path}`, and it is one",
                    r.principal
                )
            }
        }
    }

    /// The rule or request field a reason is about, e.g. `event.view` or
    /// `request.principal`.
    pub fn reason_rule(&self, x: &Reason) -> String {
        match self.schema.rule(x.rule) {
            Some(r) if r.owner == "request" => format!("request.{}", r.text),
            Some(r) => r.owner.clone(),
            None => String::new(),
        }
    }

    /// The access-rights matrix of `matrix` as the account sees it (policy roles, with the
    /// account's custom roles replacing or adding to them).
    pub fn matrix(&self, matrix: &str, account: Option<&str>) -> Result<AccessMatrix, ErrorData> {
        let mi = *self
            .schema
            .matrix_index
            .get(matrix)
            .ok_or_else(|| request_error(&format!("unknown matrix `{matrix}`")))?;
        let m = self
            .schema
            .matrices
            .get(mi as usize)
            .ok_or_else(|| request_error("unknown matrix"))?;
        let acct = match account {
            Some(a) => {
                let key = if a.starts_with("account:") {
                    a.to_string()
                } else {
                    format!("account:{a}")
                };
                Some(
                    self.entity(&key)
                        .ok_or_else(|| request_error(&format!("unknown account `{a}`")))?,
                )
            }
            None => None,
        };
        let mut roles: Vec<MatrixRole> = Vec::new();
        for r in &self.roles {
            if r.matrix != mi || (r.account.is_some() && r.account != acct) {
                continue;
            }
            let cells = (0..m.rows.len())
                .map(|row| {
                    r.cells
                        .iter()
                        .find(|c| c.row as usize == row)
                        .map_or_else(|| LEVELS[0].to_string(), |c| c.label.clone())
                })
                .collect();
            let line = MatrixRole {
                name: r.name.clone(),
                custom: r.account.is_some(),
                cells,
            };
            match roles.iter_mut().find(|x| x.name == line.name) {
                Some(existing) => *existing = line,
                None => roles.push(line),
            }
        }
        Ok(AccessMatrix {
            matrix: m.name.clone(),
            levels: m.levels,
            rows: m.rows.iter().map(|r| r.name.clone()).collect(),
            roles,
        })
    }
}

fn request_error(message: &str) -> ErrorData {
    ErrorData {
        code: ErrorCode::RequestInvalid.into(),
        message: message.to_string(),
        help: "see docs/facts-format.md for the request format".into(),
    }
}
