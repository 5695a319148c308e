//! Writes validated by the policy (X4): every change in a list of deltas must be allowed,
//! for its author, by the permission the policy's `on` rules name for it. A change the
//! policy names no rule for is refused.
//!
//! A change is judged on the facts before the list, unless it concerns an entity the list
//! creates (then on the facts after it). The tuples and attributes of an entity created
//! in the same list are covered by its `on create` rule, unless the policy has a rule for
//! that relation or attribute, which is then checked too (assigning a maintenance
//! organisation while creating an event still needs `assign`).

use crate::api::DecisionView;
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
    let on_before = judging.before(before);
    judging.after(after, on_before)
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
        judge_pass(before, Phase::Before, self, self.deltas.len())
    }

    /// The second pass, on `after`, up to the first pass's refusal: the first refusal of
    /// the two, by index.
    fn after(
        &self,
        after: &Snapshot,
        on_before: Result<(), WriteRefusal>,
    ) -> Result<(), WriteRefusal> {
        let upto = on_before
            .as_ref()
            .err()
            .map_or(self.deltas.len(), |r| r.index);
        judge_pass(after, Phase::After, self, upto)?;
        on_before?;
        self.left(after)
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
                    code: "write.invalid".into(),
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
                code: "write.invariant".into(),
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

/// Judges the changes among the first `upto` of `deltas` that are judged on `phase`,
/// on `snap`, the state of that phase: the first refused.
fn judge_pass(
    snap: &Snapshot,
    phase: Phase,
    judging: &Judging<'_>,
    upto: usize,
) -> Result<(), WriteRefusal> {
    let Judging {
        author,
        deltas,
        now,
        ref created,
    } = *judging;
    let refuse = |index: usize, code: &str, message: String| WriteRefusal {
        index,
        code: code.into(),
        message,
        decision: None,
    };
    for (index, d) in deltas.iter().enumerate().take(upto) {
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
                "write.invalid",
                format!("`{entity}` does not exist"),
            ));
        };
        let ty = snap.type_of(id).and_then(|t| snap.schema.ty(t));
        let Some(td) = ty else {
            return Err(refuse(
                index,
                "write.invalid",
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
            // The parts of a new entity are covered by its creation.
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
                "write.no_rule",
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
        // A new principal's roles grant access: given at creation, they need the rule that
        // setting them later needs (`on set roles`), not only the rule for creating.
        if let Delta::AddEntity { entity: e } = d
            && td.principal
            && e.attrs
                .get("roles")
                .and_then(serde_json::Value::as_array)
                .is_some_and(|roles| !roles.is_empty())
        {
            let Some(rule) = td.write_rule(WriteEvent::Set, td.attr("roles")) else {
                return Err(refuse(
                    index,
                    "write.no_rule",
                    format!(
                        "no rule of the policy permits creating {what} with roles: declare `on set roles` on `{}`",
                        td.name
                    ),
                ));
            };
            change.permitted(rule.perm, None, &format!("give {what} roles"))?;
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
                code: "write.invalid".into(),
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
            code: "write.denied".into(),
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

/// The one write pipeline, in place: the deltas applied to `snap` (all or nothing,
/// each checked as it is applied), the author judged against the states before and
/// after them, and the tuples the policy derives on creation (EV5) applied too, in the
/// same revision. Each change is judged on the state before the list unless it concerns
/// an entity the list creates, so the changes judged before are judged first, then the
/// deltas applied, then the rest judged.
///
/// On success the snapshot holds the write, pending: the caller keeps it
/// ([`Snapshot::commit`]) or undoes it ([`Snapshot::rollback`]); with it come the derived
/// tuples (the change is the deltas asked for, then these). On an error the snapshot is
/// exactly as it was. A list that does not apply is [`WriteError::Invalid`] even when the
/// author could not have made it either.
pub fn write(
    snap: &mut Snapshot,
    author: &str,
    now: &TimeValue,
    deltas: &[Delta],
) -> Result<(crate::incremental::Pending, Vec<Delta>), WriteError> {
    let judging = Judging::new(author, deltas, now);
    let on_before = judging.before(snap);
    let mut pending = snap
        .apply_pending(deltas)
        .map_err(|e| WriteError::Invalid(e.into()))?;
    let judged = judging.after(snap, on_before);
    if let Err(r) = judged {
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
