//! Writes validated by the policy (X4): every change in a list of deltas must be allowed,
//! for its author, by the permission the policy's `on` rules name for it. A change the
//! policy names no rule for is refused.
//!
//! Before anything else, every entity a delta names must be of the author's account (or
//! be created by the list in it): a delta naming anything else is refused with one fixed
//! message, whether the entity is in another account or nowhere, so a write never tells
//! its author anything of another tenant.
//!
//! A change is judged on the facts before the list, unless it concerns an entity the list
//! creates (then on the facts after it). The tuples and attributes of an entity created
//! in the same list are covered by its `on create` rule, unless the policy has a rule for
//! that relation or attribute, which is then checked too (assigning a maintenance
//! organisation while creating an event still needs `assign`), whether the attribute is
//! given in the creation itself or by a later delta of the list: the two are the same
//! write. A principal's `roles` grant access, so a created principal given roles (either
//! way) needs the rule that setting them later needs (`on set roles`), and without one
//! the list is refused.

use crate::api::DecisionView;
use crate::error::ErrorCode;
use crate::facts::{Delta, TupleJson};
use crate::policy::WriteEvent;
use crate::snapshot::Snapshot;
use crate::{Request, TimeValue};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Why a list of deltas was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WriteRefusal {
    /// The index of the first refused delta.
    pub index: usize,
    /// `write.denied` (the permission denied the author), `write.no_rule` (the policy
    /// names no permission for this change), `write.invariant` (the write would leave
    /// an entity breaking an invariant of its type) or `write.invalid`.
    pub code: String,
    /// What was refused, in words.
    pub message: String,
    /// The denial, with every failed check, when a permission was checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Box<DecisionView>>,
}

/// Checks that `author` may make every change of `deltas`; `before` and `after` are the
/// snapshots before and after the whole list.
pub fn authorize_writes(
    before: &Snapshot,
    after: &Snapshot,
    author: &str,
    deltas: &[Delta],
    now: &TimeValue,
) -> Result<(), WriteRefusal> {
    let judging = Judging::new(author, deltas, now);
    judging.tenancy(before)?;
    judging.before(before)?;
    judging.after(after)
}

/// The changes of one list, judged in two passes: those judged on the state before the
/// list, then (on the state after it) those that concern an entity the list creates.
struct Judging<'a> {
    author: &'a str,
    deltas: &'a [Delta],
    now: &'a TimeValue,
    created: BTreeSet<String>,
}

impl<'a> Judging<'a> {
    fn new(author: &'a str, deltas: &'a [Delta], now: &'a TimeValue) -> Judging<'a> {
        Judging {
            author,
            deltas,
            now,
            created: created(deltas),
        }
    }

    /// The first pass, on `before`: its first refusal.
    fn before(&self, before: &Snapshot) -> Result<(), WriteRefusal> {
        judge_pass(before, Phase::Before, self)
    }

    /// The second pass, on `after`, once the first allowed every change it judges: its
    /// first refusal, then the invariants the list leaves.
    fn after(&self, after: &Snapshot) -> Result<(), WriteRefusal> {
        judge_pass(after, Phase::After, self)?;
        self.left(after)
    }

    /// The pass before all others, on the state before the list: every entity a delta
    /// names is of the author's account, or is created by the list in that account. The
    /// refusal says the same whether the entity is in another account or does not exist,
    /// and names no account but the author's.
    fn tenancy(&self, before: &Snapshot) -> Result<(), WriteRefusal> {
        let refuse = |index: usize, message: String| WriteRefusal {
            index,
            code: ErrorCode::WriteOutsideAccount.into(),
            message,
            decision: None,
        };
        let Some(account) = before
            .entity(self.author)
            .and_then(|a| before.account_of(a))
        else {
            return Err(refuse(
                0,
                format!(
                    "the author `{}` is not a principal of the facts",
                    self.author
                ),
            ));
        };
        let role_type = before
            .schema
            .ty(before.schema.builtins.role)
            .map_or("role", |t| t.name.as_str());
        let account_name = before.name(account);
        let account_id = account_name
            .strip_prefix("account:")
            .unwrap_or(account_name);
        let ours = |key: &str| match before.entity(key) {
            Some(e) => before.account_of(e) == Some(account),
            None => self.created.contains(key),
        };
        for (index, d) in self.deltas.iter().enumerate() {
            let outside = match d {
                Delta::AddEntity { entity } => {
                    let declared = match (entity.ty.as_str(), &entity.account) {
                        ("account", _) => Some(entity.id.as_str()),
                        (_, a) => a.as_deref(),
                    };
                    if declared == Some(account_id) && entity.ty == role_type {
                        // A custom role's id is its account's and its name: no account
                        // takes another's role names.
                        let named = entity
                            .id
                            .strip_prefix(account_id)
                            .and_then(|rest| rest.strip_prefix('.'))
                            .is_some_and(|name| !name.is_empty());
                        if !named {
                            return Err(WriteRefusal {
                                index,
                                code: ErrorCode::WriteInvalid.into(),
                                message: format!(
                                    "a new custom role's id is its account's id, a dot and its name (`{account_id}.{}`), so that no account can take another's role names",
                                    entity.id
                                ),
                                decision: None,
                            });
                        }
                    }
                    (declared != Some(account_id))
                        .then(|| crate::facts::entity_key(&entity.ty, &entity.id))
                }
                Delta::RemoveEntity { entity } | Delta::SetAttr { entity, .. } => {
                    (!ours(entity)).then(|| entity.clone())
                }
                Delta::AddTuple { tuple } | Delta::RemoveTuple { tuple } => {
                    [&tuple.resource, &tuple.subject]
                        .into_iter()
                        .find(|k| !ours(k))
                        .cloned()
                }
            };
            if let Some(key) = outside {
                return Err(refuse(
                    index,
                    format!(
                        "`{key}` is not an entity of account `{account_id}`, the author's: a write changes only its author's account"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The last pass, on `after`, once every change is permitted: each entity the list
    /// changes and leaves in place keeps its type's invariants (a limit counted after
    /// every removal and addition of the list). The refusal is at the first delta that
    /// changes the entity.
    fn left(&self, after: &Snapshot) -> Result<(), WriteRefusal> {
        let mut seen = BTreeSet::new();
        for (index, d) in self.deltas.iter().enumerate() {
            let entity = match d {
                Delta::AddEntity { entity } => crate::facts::entity_key(&entity.ty, &entity.id),
                Delta::SetAttr { entity, .. } => entity.clone(),
                Delta::AddTuple { tuple } | Delta::RemoveTuple { tuple } => tuple.resource.clone(),
                Delta::RemoveEntity { .. } => continue,
            };
            if !seen.insert(entity.clone()) {
                continue;
            }
            // An entity the list removes later is left as nothing.
            let Some(id) = after.entity(&entity) else {
                continue;
            };
            let Ok(at) = self.now.seconds() else {
                return Err(WriteRefusal {
                    index,
                    code: ErrorCode::WriteInvalid.into(),
                    message: "the write's `now` is not a timestamp".into(),
                    decision: None,
                });
            };
            let Some((inv, decision)) = after.broken_invariant(self.author, id, at) else {
                continue;
            };
            let ty = after
                .type_of(id)
                .and_then(|t| after.schema.ty(t))
                .map_or("", |t| t.name.as_str());
            let message = after.schema.rule(inv.rule).map_or("", |r| r.text.as_str());
            let request = Request {
                principal: self.author.to_string(),
                action: format!("invariant {}", inv.name),
                resource: entity.clone(),
                target: None,
                now: self.now.clone(),
            };
            return Err(WriteRefusal {
                index,
                code: ErrorCode::WriteInvariant.into(),
                message: format!(
                    "the write would leave `{entity}` breaking `{ty}.{}`: {message}",
                    inv.name
                ),
                decision: Some(Box::new(after.view(&decision, &request))),
            });
        }
        Ok(())
    }
}

/// Whether a `roles` value gives no role (an empty list or nothing).
fn no_roles(value: &serde_json::Value) -> bool {
    value.is_null() || value.as_array().is_some_and(Vec::is_empty)
}

/// The entities a list of deltas creates.
fn created(deltas: &[Delta]) -> BTreeSet<String> {
    deltas
        .iter()
        .filter_map(|d| match d {
            Delta::AddEntity { entity } => Some(crate::facts::entity_key(&entity.ty, &entity.id)),
            _ => None,
        })
        .collect()
}

/// Which state a change is judged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The state before the list.
    Before,
    /// The state after it: changes that concern an entity the list creates.
    After,
}

/// Judges the changes of the list that are judged on `phase`, on `snap`, the state of
/// that phase: the first refused.
fn judge_pass(snap: &Snapshot, phase: Phase, judging: &Judging<'_>) -> Result<(), WriteRefusal> {
    let Judging {
        author,
        deltas,
        now,
        ref created,
    } = *judging;
    let refuse = |index: usize, code: ErrorCode, message: String| WriteRefusal {
        index,
        code: code.into(),
        message,
        decision: None,
    };
    for (index, d) in deltas.iter().enumerate() {
        let (judged_on, entity, event, member, subject) = match d {
            Delta::AddEntity { entity } => (
                Phase::After,
                crate::facts::entity_key(&entity.ty, &entity.id),
                WriteEvent::Create,
                None,
                None,
            ),
            Delta::RemoveEntity { entity } => (
                Phase::Before,
                entity.clone(),
                WriteEvent::Delete,
                None,
                None,
            ),
            Delta::SetAttr { entity, attr, .. } => {
                let s = if created.contains(entity) {
                    Phase::After
                } else {
                    Phase::Before
                };
                (s, entity.clone(), WriteEvent::Set, Some(attr.clone()), None)
            }
            Delta::AddTuple {
                tuple:
                    TupleJson {
                        resource,
                        relation,
                        subject,
                        ..
                    },
            } => {
                let new = created.contains(resource) || created.contains(subject);
                (
                    if new { Phase::After } else { Phase::Before },
                    resource.clone(),
                    WriteEvent::Add,
                    Some(relation.clone()),
                    Some(subject.clone()),
                )
            }
            Delta::RemoveTuple {
                tuple:
                    TupleJson {
                        resource,
                        relation,
                        subject,
                        ..
                    },
            } => (
                Phase::Before,
                resource.clone(),
                WriteEvent::Remove,
                Some(relation.clone()),
                Some(subject.clone()),
            ),
        };
        if judged_on != phase {
            continue;
        }
        let Some(id) = snap.entity(&entity) else {
            return Err(refuse(
                index,
                ErrorCode::WriteInvalid,
                format!("`{entity}` does not exist"),
            ));
        };
        let ty = snap.type_of(id).and_then(|t| snap.schema.ty(t));
        let Some(td) = ty else {
            return Err(refuse(
                index,
                ErrorCode::WriteInvalid,
                format!("`{entity}` has no type"),
            ));
        };
        let member_id = match (event, &member) {
            (WriteEvent::Add | WriteEvent::Remove, Some(m)) => td.rel(m),
            (WriteEvent::Set, Some(m)) => td.attr(m),
            _ => None,
        };
        let what = match (&member, &subject) {
            (Some(m), Some(s)) => format!("`{entity}#{m}@{s}`"),
            (Some(m), None) => format!("`{entity}.{m}`"),
            _ => format!("`{entity}`"),
        };
        let rule = td.write_rule(event, member_id);
        let Some(rule) = rule else {
            // The parts of a new entity are covered by its creation, but for a principal's
            // roles, which need their own rule however they are given.
            let gives_roles = matches!(d, Delta::SetAttr { attr, value, .. }
                if td.principal && attr == "roles" && !no_roles(value));
            if gives_roles {
                return Err(refuse(
                    index,
                    ErrorCode::WriteNoRule,
                    format!(
                        "no rule of the policy permits giving {what} roles: declare `on set roles` on `{}`",
                        td.name
                    ),
                ));
            }
            if matches!(event, WriteEvent::Set | WriteEvent::Add) && created.contains(&entity) {
                continue;
            }
            let verb = match event {
                WriteEvent::Add => "adding",
                WriteEvent::Remove => "removing",
                WriteEvent::Set => "setting",
                WriteEvent::Create => "creating",
                WriteEvent::Delete => "deleting",
            };
            return Err(refuse(
                index,
                ErrorCode::WriteNoRule,
                format!(
                    "no rule of the policy permits {verb} {what}: declare `on ...` on `{}`",
                    td.name
                ),
            ));
        };
        let change = Change {
            snap,
            td,
            author,
            entity: &entity,
            now,
            index,
        };
        change.permitted(
            rule.perm,
            subject.clone(),
            &format!("make this change to {what}"),
        )?;
        // The attributes given at creation are judged as if set by a later delta of the
        // list: by their `on set` rule when the policy has one. A new principal's roles
        // grant access, so they need that rule.
        if let Delta::AddEntity { entity: e } = d {
            for (name, value) in &e.attrs {
                let rule = td.write_rule(WriteEvent::Set, td.attr(name));
                match rule {
                    Some(rule) => change.permitted(
                        rule.perm,
                        None,
                        &format!("create {what} with `{name}` set"),
                    )?,
                    None if td.principal && name == "roles" && !no_roles(value) => {
                        return Err(refuse(
                            index,
                            ErrorCode::WriteNoRule,
                            format!(
                                "no rule of the policy permits creating {what} with roles: declare `on set roles` on `{}`",
                                td.name
                            ),
                        ));
                    }
                    None => {}
                }
            }
        }
    }
    Ok(())
}

/// One change of a write, about to be judged by a permission of its entity's type.
struct Change<'a> {
    snap: &'a Snapshot,
    td: &'a crate::policy::TypeDef,
    author: &'a str,
    entity: &'a str,
    now: &'a TimeValue,
    index: usize,
}

impl Change<'_> {
    /// Whether the author holds permission `perm` on the entity (with `target` when the
    /// permission takes one); `doing` says what the author tried, for the refusal.
    fn permitted(
        &self,
        perm: u16,
        target: Option<String>,
        doing: &str,
    ) -> Result<(), WriteRefusal> {
        let Some(p) = self.td.perms.get(perm as usize) else {
            return Err(WriteRefusal {
                index: self.index,
                code: ErrorCode::WriteInvalid.into(),
                message: "unknown permission".into(),
                decision: None,
            });
        };
        let request = Request {
            principal: self.author.to_string(),
            action: p.name.clone(),
            resource: self.entity.to_string(),
            target: p.target.and(target),
            now: self.now.clone(),
        };
        let decision = self.snap.check(&request);
        if decision.allowed {
            return Ok(());
        }
        Err(WriteRefusal {
            index: self.index,
            code: ErrorCode::WriteDenied.into(),
            message: format!(
                "`{}` may not {doing}: `{}.{}` denies it",
                self.author, self.td.name, p.name
            ),
            decision: Some(Box::new(self.snap.view(&decision, &request))),
        })
    }
}

/// The tuples the policy adds by itself when `deltas` create entities (`auto add` rules,
/// EV5): for each created entity and each of its type's rules, every entity of the
/// relation's subject type in the same account for which the rule's permission allows
/// `author` (with the candidate as target), judged on `after`. Tuples already in `deltas`
/// are left out.
pub fn derive_on_create(
    after: &Snapshot,
    author: &str,
    deltas: &[Delta],
    now: &TimeValue,
) -> Vec<Delta> {
    let mut out = Vec::new();
    for d in deltas {
        let Delta::AddEntity { entity } = d else {
            continue;
        };
        let key = crate::facts::entity_key(&entity.ty, &entity.id);
        let Some(id) = after.entity(&key) else {
            continue;
        };
        let Some(td) = after.type_of(id).and_then(|t| after.schema.ty(t)) else {
            continue;
        };
        let Some(account) = after.account_of(id) else {
            continue;
        };
        for &(rel, perm) in &td.autos {
            let (Some(r), Some(p)) = (td.rels.get(rel as usize), td.perms.get(perm as usize))
            else {
                continue;
            };
            let Some(target_ty) = p.target else { continue };
            for &c in after.members(account, target_ty as usize) {
                let subject = after.name(c).to_string();
                let present = deltas.iter().any(|x| matches!(x, Delta::AddTuple { tuple } if tuple.resource == key && tuple.relation == r.name && tuple.subject == subject));
                if present {
                    continue;
                }
                let request = Request {
                    principal: author.to_string(),
                    action: p.name.clone(),
                    resource: key.clone(),
                    target: Some(subject.clone()),
                    now: now.clone(),
                };
                if after.check(&request).allowed {
                    out.push(Delta::AddTuple {
                        tuple: TupleJson {
                            resource: key.clone(),
                            relation: r.name.clone(),
                            subject,
                            expires: None,
                        },
                    });
                }
            }
        }
    }
    out
}

/// Why a write did not happen: the policy refused it (an answer), or its deltas cannot be
/// applied to the facts at all (an error, with where).
#[derive(Debug, Clone, PartialEq)]
pub enum WriteError {
    /// The author may not make a change of the list: nothing is applied.
    Refused(WriteRefusal),
    /// The deltas do not apply (an unknown entity, a tuple already there, a value of the
    /// wrong type): nothing is applied.
    Invalid(crate::ErrorData),
}

/// The one write pipeline, in place: the entities the deltas name checked to be of the
/// author's account, the changes judged on the state before the list judged, and only
/// if all of them are allowed the deltas applied to `snap` (all or nothing, each checked
/// as it is applied), the changes that concern an entity the list creates judged on the
/// state after, and the tuples the policy derives on creation (EV5) applied too, in the
/// same revision. A refusal is answered alone: nothing of a refused list is applied, so
/// no error of applying it (which would describe the facts it names) reaches its author.
///
/// On success the snapshot holds the write, pending: the caller keeps it
/// ([`Snapshot::commit`]) or undoes it ([`Snapshot::rollback`]); with it come the derived
/// tuples (the change is the deltas asked for, then these). On an error the snapshot is
/// exactly as it was. A list refused on the state before it is [`WriteError::Refused`]
/// whether or not it would apply.
pub fn write(
    snap: &mut Snapshot,
    author: &str,
    now: &TimeValue,
    deltas: &[Delta],
) -> Result<(crate::incremental::Pending, Vec<Delta>), WriteError> {
    let judging = Judging::new(author, deltas, now);
    judging.tenancy(snap).map_err(WriteError::Refused)?;
    judging.before(snap).map_err(WriteError::Refused)?;
    let mut pending = snap
        .apply_pending(deltas)
        .map_err(|e| WriteError::Invalid(e.into()))?;
    if let Err(r) = judging.after(snap) {
        snap.rollback(pending);
        return Err(WriteError::Refused(r));
    }
    let derived = derive_on_create(snap, author, deltas, now);
    if !derived.is_empty() {
        snap.apply_more(&mut pending, &derived)
            .map_err(|e| WriteError::Invalid(e.into()))?;
    }
    Ok((pending, derived))
}
