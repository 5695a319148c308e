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
    /// names no permission for this change) or `write.invalid`.
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
    let created: BTreeSet<String> = deltas
        .iter()
        .filter_map(|d| match d {
            Delta::AddEntity { entity } => Some(crate::facts::entity_key(&entity.ty, &entity.id)),
            _ => None,
        })
        .collect();
    let refuse = |index: usize, code: &str, message: String| WriteRefusal {
        index,
        code: code.into(),
        message,
        decision: None,
    };
    for (index, d) in deltas.iter().enumerate() {
        let (snap, entity, event, member, subject) = match d {
            Delta::AddEntity { entity } => (
                after,
                crate::facts::entity_key(&entity.ty, &entity.id),
                WriteEvent::Create,
                None,
                None,
            ),
            Delta::RemoveEntity { entity } => {
                (before, entity.clone(), WriteEvent::Delete, None, None)
            }
            Delta::SetAttr { entity, attr, .. } => {
                let s = if created.contains(entity) {
                    after
                } else {
                    before
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
                    if new { after } else { before },
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
                before,
                resource.clone(),
                WriteEvent::Remove,
                Some(relation.clone()),
                Some(subject.clone()),
            ),
        };
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

/// A write's next state before it is judged: the facts and snapshot after its deltas.
#[derive(Debug, Clone)]
pub struct Staged {
    /// The facts after the deltas, one revision on.
    pub facts: crate::Facts,
    /// Their snapshot.
    pub after: Snapshot,
}

/// A write that was judged and allowed: the state it leaves and every delta it made.
#[derive(Debug, Clone)]
pub struct Written {
    /// The facts after the write.
    pub facts: crate::Facts,
    /// Their snapshot.
    pub snapshot: Snapshot,
    /// The tuples the policy derived (`auto add`, EV5): the change is the deltas asked
    /// for, then these.
    pub derived: Vec<Delta>,
}

/// The one write pipeline, in three steps, so a host that judges in the module (on the
/// bytes every runtime runs) takes the same steps as the module itself:
///
/// 1. [`stage`]: apply the deltas to the facts, all or nothing, and build the snapshot
///    after them;
/// 2. [`judge`]: check the author may make every change, against the snapshots before
///    and after, and derive the tuples the policy adds by itself on creation;
/// 3. [`finish`]: add those tuples to the staged state.
///
/// [`write`] takes all three.
pub fn stage(
    facts: &crate::Facts,
    schema: &std::sync::Arc<crate::Schema>,
    deltas: &[Delta],
) -> Result<Staged, crate::ErrorData> {
    let facts = facts.apply(deltas).map_err(crate::ErrorData::from)?;
    let after =
        Snapshot::build(std::sync::Arc::clone(schema), &facts).map_err(crate::ErrorData::from)?;
    Ok(Staged { facts, after })
}

/// Step 2 of the pipeline: whether `author` may make `deltas` (X4), and if so the tuples
/// the policy derives from them (EV5), judged on the state after them.
pub fn judge(
    before: &Snapshot,
    after: &Snapshot,
    author: &str,
    deltas: &[Delta],
    now: &TimeValue,
) -> Result<Vec<Delta>, WriteRefusal> {
    authorize_writes(before, after, author, deltas, now)?;
    Ok(derive_on_create(after, author, deltas, now))
}

/// Step 3 of the pipeline: the staged state with the derived tuples added, in the same
/// revision.
pub fn finish(staged: Staged, derived: Vec<Delta>) -> Result<Written, crate::ErrorData> {
    let (facts, snapshot) = if derived.is_empty() {
        (staged.facts, staged.after)
    } else {
        let mut facts = staged.facts;
        facts.extend(&derived).map_err(crate::ErrorData::from)?;
        let snapshot = Snapshot::build(std::sync::Arc::clone(&staged.after.schema), &facts)
            .map_err(crate::ErrorData::from)?;
        (facts, snapshot)
    };
    Ok(Written {
        facts,
        snapshot,
        derived,
    })
}

/// A whole write by `author` at `now`: the deltas applied to `facts` (whose snapshot is
/// `before`), judged, and the derived tuples added. Nothing changes on an error.
pub fn write(
    facts: &crate::Facts,
    before: &Snapshot,
    author: &str,
    now: &TimeValue,
    deltas: &[Delta],
) -> Result<Written, WriteError> {
    let staged = stage(facts, &before.schema, deltas).map_err(WriteError::Invalid)?;
    let derived = judge(before, &staged.after, author, deltas, now).map_err(WriteError::Refused)?;
    finish(staged, derived).map_err(WriteError::Invalid)
}
