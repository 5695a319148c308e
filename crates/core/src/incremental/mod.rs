//! Deltas applied to a snapshot in place, at a cost in proportion to the change: a
//! changed relation row is held whole beside the built rows ([`Csr::patches`]), a new
//! entity takes the next id and appends its row everywhere, a removed one keeps its id
//! with no type ([`REMOVED`]). Every step is logged, so a list that fails part-way is
//! undone and leaves the snapshot exactly as it was.
//!
//! Decisions on the result equal those on a snapshot built again from the facts after
//! the same deltas (a property test holds them equal): rows changed here keep their
//! subjects in name order, the order a build numbers entities in, and listings order by
//! name.
//!
//! What still costs more than the change: removing an entity looks for it as a subject
//! in every relation that can name its type, and a change to a custom role compiles the
//! roles of every principal again.

mod cells;
use crate::error::ErrorCode;
use crate::error::FactsError;
use crate::facts::{Delta, EntityJson, TupleJson, entity_key};
use crate::policy::{TypeId, ValueType};
use crate::snapshot::roles::grant_set;
use crate::snapshot::{
    AccountRole, Column, Csr, Ent, GrantSet, Interner, NEVER, NO_PATCH, NONE_I64, NONE_STR,
    NONE_U8, REMOVED, Row, Snapshot, bad, id16, id32, set_value,
};
use cells::{Cell, add_row, clear_cell, is_none, push_none, put_cell, take_cell, truncate_column};
use compact_str::CompactString;
use serde_json::Value;

/// Which relation rows: a relation of a type, or the authorisations by holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    Rel(TypeId, u16),
    Auth,
}

/// One logged step, undone in reverse order.
#[derive(Debug)]
enum Step {
    Cell {
        t: TypeId,
        a: u16,
        local: u32,
        old: Cell,
    },
    Row {
        at: At,
        row: u32,
        old: Option<Row>,
    },
    Index {
        key: CompactString,
        old: Option<u32>,
    },
    Members {
        account: u32,
        t: TypeId,
        old: Vec<u32>,
    },
    Ent {
        id: u32,
        old: Ent,
    },
    Roles(Box<RolesState>),
    Grant {
        t: TypeId,
        local: u32,
        old: u32,
    },
}

/// Everything role compilation changes.
#[derive(Debug)]
struct RolesState {
    roles: Vec<AccountRole>,
    grant_sets: Vec<GrantSet>,
    grants: Vec<Vec<u32>>,
}

/// The lengths of one relation's arrays.
#[derive(Debug, Clone, Copy, Default)]
struct CsrMarks {
    offsets: usize,
    slots: usize,
    patches: usize,
}

impl CsrMarks {
    fn of(c: &Csr) -> CsrMarks {
        CsrMarks {
            offsets: c.offsets.len(),
            slots: c.patch_slot.len(),
            patches: c.patches.len(),
        }
    }

    fn truncate(self, c: &mut Csr) {
        c.offsets.truncate(self.offsets);
        c.patch_slot.truncate(self.slots);
        c.patches.truncate(self.patches);
    }
}

/// The lengths of everything that only grows, before a list of deltas.
#[derive(Debug, Default)]
struct Marks {
    names: usize,
    strings: usize,
    grant_sets: usize,
    accounts: usize,
    revision: u64,
    /// Per type: entities, grants, and each relation's marks.
    types: Vec<(usize, usize, Vec<CsrMarks>)>,
    auth: CsrMarks,
}

/// The log of one list of deltas.
#[derive(Debug)]
struct Log {
    marks: Marks,
    steps: Vec<Step>,
    /// Entities whose required attributes are checked at the end of the list.
    touched: Vec<u32>,
    /// Principals whose grant set is computed again at the end.
    regrant: Vec<u32>,
    /// Whether a custom role changed: every role is compiled again at the end.
    roles: bool,
    /// Accounts removed: none of their entities may remain.
    removed_accounts: Vec<(u32, String)>,
    /// Whether an authorisation or a licence changed: certifications are checked again.
    certs: bool,
}

/// Deltas applied in place and not yet kept: [`Snapshot::commit`] keeps them,
/// [`Snapshot::rollback`] puts the snapshot back exactly as it was before them.
#[derive(Debug)]
pub struct Pending(Log);

impl Log {
    fn new(marks: Marks) -> Log {
        Log {
            marks,
            steps: Vec::new(),
            touched: Vec::new(),
            regrant: Vec::new(),
            roles: false,
            removed_accounts: Vec::new(),
            certs: false,
        }
    }
}

impl Snapshot {
    /// Applies `deltas` in place, all or nothing, and bumps the revision once. On an
    /// error the snapshot is exactly as it was.
    ///
    /// Each delta is checked as it is applied (a tuple's ends exist and share an account,
    /// its relation takes its subject's type, a value fits its attribute), and the list as
    /// a whole at the end (required attributes, removed accounts left empty, roles known).
    pub fn apply(&mut self, deltas: &[Delta]) -> Result<(), FactsError> {
        let pending = self.apply_pending(deltas)?;
        self.commit(pending);
        Ok(())
    }

    /// Applies `deltas` in place as [`Snapshot::apply`] does, revision bumped, but keeps
    /// what it takes to undo them until [`Snapshot::commit`] or [`Snapshot::rollback`].
    /// On an error the snapshot is exactly as it was.
    pub fn apply_pending(&mut self, deltas: &[Delta]) -> Result<Pending, FactsError> {
        let mut pending = Pending(Log::new(self.marks()));
        self.apply_more(&mut pending, deltas)?;
        self.revision = pending.0.marks.revision + 1;
        Ok(pending)
    }

    /// Applies more deltas within `pending`, in the same revision. On an error every
    /// delta of `pending` is undone too, and the snapshot is as it was before them all.
    pub fn apply_more(
        &mut self,
        pending: &mut Pending,
        deltas: &[Delta],
    ) -> Result<(), FactsError> {
        let log = &mut pending.0;
        let result = deltas
            .iter()
            .enumerate()
            .try_for_each(|(i, d)| self.apply_one(d, &format!("deltas[{i}]"), log))
            .and_then(|()| self.settle(log));
        if let Err(e) = result {
            let taken = std::mem::replace(log, Log::new(Marks::default()));
            self.undo(taken);
            *log = Log::new(self.marks());
            return Err(e);
        }
        Ok(())
    }

    /// Keeps the deltas of `pending`.
    pub fn commit(&mut self, pending: Pending) {
        drop(pending);
    }

    /// Undoes the deltas of `pending`: the snapshot is exactly as it was before them.
    pub fn rollback(&mut self, pending: Pending) {
        self.undo(pending.0);
    }

    fn marks(&self) -> Marks {
        Marks {
            names: self.names.len(),
            strings: self.strings.len(),
            grant_sets: self.grant_sets.len(),
            accounts: self.account_members.len(),
            revision: self.revision,
            types: self
                .types
                .iter()
                .map(|t| {
                    (
                        t.entities.len(),
                        t.grants.len(),
                        t.rels.iter().map(CsrMarks::of).collect(),
                    )
                })
                .collect(),
            auth: CsrMarks::of(&self.auth_by_holder),
        }
    }

    /// Puts everything back as it was before the list.
    fn undo(&mut self, log: Log) {
        for step in log.steps.into_iter().rev() {
            match step {
                Step::Cell { t, a, local, old } => {
                    if let Some(col) = self
                        .types
                        .get_mut(t as usize)
                        .and_then(|td| td.columns.get_mut(a as usize))
                    {
                        put_cell(col, local as usize, old);
                    }
                }
                Step::Row { at, row, old } => {
                    if let Some(c) = self.csr_mut(at)
                        && let Some(slot) = c.patch_slot.get_mut(row as usize)
                    {
                        match old {
                            None => *slot = NO_PATCH,
                            Some(old) => {
                                if let Some(p) = c.patches.get_mut(*slot as usize) {
                                    *p = old;
                                }
                            }
                        }
                    }
                }
                Step::Index { key, old } => match old {
                    Some(id) => {
                        self.index.insert(key, id);
                    }
                    None => {
                        self.index.remove(&key);
                    }
                },
                Step::Members { account, t, old } => {
                    if let Some(m) = self
                        .account_members
                        .get_mut(account as usize)
                        .and_then(|a| a.get_mut(t as usize))
                    {
                        *m = old;
                    }
                }
                Step::Ent { id, old } => {
                    if let Some(e) = self.ents.get_mut(id as usize) {
                        *e = old;
                    }
                }
                Step::Roles(state) => {
                    let RolesState {
                        roles,
                        grant_sets,
                        grants,
                    } = *state;
                    self.roles = roles;
                    self.grant_sets = grant_sets;
                    for (td, g) in self.types.iter_mut().zip(grants) {
                        td.grants = g;
                    }
                }
                Step::Grant { t, local, old } => {
                    if let Some(g) = self
                        .types
                        .get_mut(t as usize)
                        .and_then(|td| td.grants.get_mut(local as usize))
                    {
                        *g = old;
                    }
                }
            }
        }
        let m = log.marks;
        for s in self.strings.drain(m.strings.min(self.strings.len())..) {
            self.string_index.remove(&s);
        }
        self.names.truncate(m.names);
        self.ents.truncate(m.names);
        self.grant_sets.truncate(m.grant_sets);
        self.account_members.truncate(m.accounts);
        for (td, (entities, grants, rels)) in self.types.iter_mut().zip(m.types) {
            td.entities.truncate(entities);
            td.grants.truncate(grants);
            for col in &mut td.columns {
                truncate_column(col, entities);
            }
            for (c, cm) in td.rels.iter_mut().zip(rels) {
                cm.truncate(c);
            }
        }
        m.auth.truncate(&mut self.auth_by_holder);
        self.revision = m.revision;
    }

    fn csr_mut(&mut self, at: At) -> Option<&mut Csr> {
        match at {
            At::Rel(t, r) => self.types.get_mut(t as usize)?.rels.get_mut(r as usize),
            At::Auth => Some(&mut self.auth_by_holder),
        }
    }

    fn csr(&self, at: At) -> Option<&Csr> {
        match at {
            At::Rel(t, r) => self.types.get(t as usize)?.rels.get(r as usize),
            At::Auth => Some(&self.auth_by_holder),
        }
    }

    /// Replaces row `row` of `at` with `new`, logged.
    fn set_row(&mut self, at: At, row: u32, new: Row, log: &mut Log) {
        let Some(c) = self.csr_mut(at) else { return };
        let rows = c.offsets.len().saturating_sub(1);
        if c.patch_slot.len() < rows {
            c.patch_slot.resize(rows, NO_PATCH);
        }
        let Some(slot) = c.patch_slot.get_mut(row as usize) else {
            return;
        };
        if *slot == NO_PATCH {
            *slot = id32(c.patches.len());
            c.patches.push(new);
            log.steps.push(Step::Row { at, row, old: None });
        } else if let Some(p) = c.patches.get_mut(*slot as usize) {
            let old = std::mem::replace(p, new);
            log.steps.push(Step::Row {
                at,
                row,
                old: Some(old),
            });
        }
    }

    /// Where `id` is, or would go, in `row`: by id while the row is in id order and `id`
    /// was numbered by the build, else by name.
    fn find(&self, row: &Row, id: u32) -> Result<usize, usize> {
        if !row.by_name && id < self.built {
            row.subjects.binary_search(&id)
        } else {
            let name = self.name(id);
            match row.subjects.binary_search_by(|&x| self.name(x).cmp(name)) {
                Ok(p) if row.subjects.get(p) == Some(&id) => Ok(p),
                Ok(p) | Err(p) => Err(p),
            }
        }
    }

    /// Adds (or sets the expiry of) subject `sid` in row `row` of `at`.
    fn row_insert(
        &mut self,
        at: At,
        row: u32,
        sid: u32,
        expiry: i64,
        own: Option<i64>,
        log: &mut Log,
    ) {
        let Some(c) = self.csr(at) else { return };
        let mut r = c.owned(row);
        match self.find(&r, sid) {
            Ok(p) => {
                if let Some(e) = r.expires.get_mut(p) {
                    *e = expiry;
                }
                if let (Some(o), Some(own)) = (r.own.get_mut(p), own) {
                    *o = own;
                }
            }
            Err(p) => {
                r.subjects.insert(p, sid);
                r.expires.insert(p, expiry);
                if let Some(own) = own {
                    r.own.insert(p, own);
                }
                r.by_name |= sid >= self.built;
            }
        }
        self.set_row(at, row, r, log);
    }

    /// Removes subject `sid` from row `row` of `at`; whether it was there.
    fn row_remove(&mut self, at: At, row: u32, sid: u32, log: &mut Log) -> bool {
        let Some(c) = self.csr(at) else { return false };
        let mut r = c.owned(row);
        let Some(p) = r.subjects.iter().position(|&x| x == sid) else {
            return false;
        };
        r.subjects.remove(p);
        r.expires.remove(p);
        if p < r.own.len() {
            r.own.remove(p);
        }
        self.set_row(at, row, r, log);
        true
    }

    /// The relation index of `authorization.holder`, when the policy has it.
    fn holder_rel(&self) -> Option<u16> {
        self.schema
            .ty(self.schema.builtins.authorization)
            .and_then(|d| d.rel("holder"))
    }

    fn entity_or(&self, key: &str, at: &str, what: &str) -> Result<u32, FactsError> {
        self.entity(key)
            .ok_or_else(|| bad(ErrorCode::FactsUnknownEntity, at, format!("{what} `{key}`")))
    }

    fn ent_of(&self, id: u32, at: &str) -> Result<Ent, FactsError> {
        self.ent(id)
            .copied()
            .filter(|e| e.ty != REMOVED)
            .ok_or_else(|| {
                bad(
                    ErrorCode::FactsInternal,
                    at,
                    "an entity without a type".into(),
                )
            })
    }

    fn apply_one(&mut self, d: &Delta, at: &str, log: &mut Log) -> Result<(), FactsError> {
        let ty = match d {
            Delta::AddEntity { entity } => entity.ty.as_str(),
            Delta::RemoveEntity { entity } | Delta::SetAttr { entity, .. } => {
                entity.split(':').next().unwrap_or_default()
            }
            Delta::AddTuple { tuple } | Delta::RemoveTuple { tuple } => {
                tuple.resource.split(':').next().unwrap_or_default()
            }
        };
        log.certs |= ty == "authorization" || ty == "licence";
        if !self.counts.is_empty() {
            self.keeps_counts(d, at)?;
        }
        match d {
            Delta::AddEntity { entity } => self.add_entity(entity, at, log),
            Delta::RemoveEntity { entity } => self.remove_entity(entity, at, log),
            Delta::SetAttr {
                entity,
                attr,
                value,
            } => {
                let id = self.entity_or(entity, at, "no entity")?;
                self.set_attr(
                    id,
                    attr,
                    value,
                    &format!("entity `{entity}` attribute `{attr}`"),
                    log,
                )
            }
            Delta::AddTuple { tuple } => self.add_tuple(tuple, at, log),
            Delta::RemoveTuple { tuple } => {
                let (rid, rel, sid) = self.tuple_ids(tuple, at)?;
                let missing = || {
                    bad(
                        ErrorCode::FactsUnknownTuple,
                        at,
                        format!(
                            "no tuple `{}#{}@{}` to remove",
                            tuple.resource, tuple.relation, tuple.subject
                        ),
                    )
                };
                let rel = rel.ok_or_else(missing)?;
                let e = self.ent_of(rid, at)?;
                if !self.row_remove(At::Rel(e.ty, rel), e.local, sid, log) {
                    return Err(missing());
                }
                if e.ty == self.schema.builtins.authorization && Some(rel) == self.holder_rel() {
                    self.row_remove(At::Auth, sid, rid, log);
                }
                Ok(())
            }
        }
    }

    /// Refuses a delta that may change a number these facts carry in place of tuples (a
    /// principal slice's counts): how it changes depends on who the subjects are, which
    /// only the whole facts know.
    fn keeps_counts(&self, d: &Delta, at: &str) -> Result<(), FactsError> {
        let schema = &self.schema;
        let type_of = |key: &str| self.entity(key).and_then(|id| self.type_of(id));
        // The counted relations `moves` says a change may move, named.
        let moved = |moves: &dyn Fn(TypeId, &crate::policy::RelDef) -> bool| {
            self.counts.iter().find_map(|c| {
                let td = schema.ty(c.ty)?;
                c.rels
                    .iter()
                    .filter_map(|&r| td.rels.get(r as usize))
                    .find(|rd| moves(c.ty, rd))
                    .map(|rd| format!("{}#{}", td.name, rd.name))
            })
        };
        let (what, counted) = match d {
            Delta::AddTuple { tuple } | Delta::RemoveTuple { tuple } => {
                let t = type_of(&tuple.resource);
                (
                    &tuple.resource,
                    moved(&|ct, rd| Some(ct) == t && rd.name == tuple.relation),
                )
            }
            Delta::RemoveEntity { entity } => {
                let t = type_of(entity);
                (
                    entity,
                    moved(&|_, rd| t.is_some_and(|t| rd.targets.contains(&t))),
                )
            }
            Delta::SetAttr { entity, attr, .. } => {
                let t = type_of(entity);
                let a = t.and_then(|t| schema.ty(t)).and_then(|td| td.attr(attr));
                (
                    entity,
                    moved(&|ct, rd| Some(ct) == t && a.is_some() && rd.until == a),
                )
            }
            Delta::AddEntity { .. } => return Ok(()),
        };
        match counted {
            Some(rel) => Err(bad(
                ErrorCode::FactsCounted,
                at,
                format!(
                    "the change to `{what}` may move how many subjects `{rel}` has, which these facts carry as a number (a principal slice), not as tuples: it is made only on the whole facts; fetch the slice again"
                ),
            )),
            None => Ok(()),
        }
    }

    /// The ids of a tuple's ends, and its relation's index when the type has it.
    fn tuple_ids(&self, t: &TupleJson, at: &str) -> Result<(u32, Option<u16>, u32), FactsError> {
        let rid = self.entity_or(&t.resource, at, "tuple names unknown entity")?;
        let sid = self.entity_or(&t.subject, at, "tuple names unknown entity")?;
        let rel = self
            .type_of(rid)
            .and_then(|ty| self.schema.ty(ty))
            .and_then(|d| d.rel(&t.relation));
        Ok((rid, rel, sid))
    }

    fn add_entity(&mut self, e: &EntityJson, at: &str, log: &mut Log) -> Result<(), FactsError> {
        crate::facts::valid_id(&e.id).map_err(|m| bad(ErrorCode::FactsInvalidId, at, m))?;
        if e.ty.is_empty() || e.ty.contains(':') {
            return Err(bad(
                ErrorCode::FactsInvalidEntity,
                at,
                "expected a non-empty `type` without `:` and a non-empty `id`".into(),
            ));
        }
        let is_account = e.ty == "account";
        let account = match (is_account, &e.account) {
            (true, None) => e.id.clone(),
            (true, Some(a)) if *a == e.id => a.clone(),
            (true, Some(a)) => {
                return Err(bad(
                    ErrorCode::FactsInvalidEntity,
                    at,
                    format!(
                        "account `{}` names another account `{a}`: an account belongs to itself",
                        e.id
                    ),
                ));
            }
            (false, Some(a)) => a.clone(),
            (false, None) => {
                return Err(bad(
                    ErrorCode::FactsMissingAccount,
                    at,
                    format!(
                        "entity `{}:{}` names no `account`: every entity belongs to exactly one account",
                        e.ty, e.id
                    ),
                ));
            }
        };
        let key = entity_key(&e.ty, &e.id);
        if self.entity(&key).is_some() {
            return Err(bad(
                ErrorCode::FactsDuplicateEntity,
                at,
                format!("entity `{key}` already exists"),
            ));
        }
        let Some(t) = self.schema.type_id(&e.ty) else {
            let known: Vec<&str> = self.schema.type_index.keys().map(String::as_str).collect();
            return Err(bad(
                ErrorCode::FactsUnknownType,
                &format!("entity `{key}`"),
                format!(
                    "unknown type `{}`: expected one of {}",
                    e.ty,
                    known.join(", ")
                ),
            ));
        };
        let id = self.names.len();
        if id >= crate::snapshot::MAX_IDS as usize {
            return Err(bad(
                ErrorCode::FactsTooLarge,
                "entities",
                format!("{} entities is more than a snapshot holds", id + 1),
            ));
        }
        let id = id32(id);
        let account_id = if is_account {
            id
        } else {
            self.entity(&format!("account:{account}")).ok_or_else(|| {
                bad(
                    ErrorCode::FactsUnknownAccount,
                    &format!("entity `{key}`"),
                    format!(
                        "account `{account}` does not exist: add an entity `account:{account}`"
                    ),
                )
            })?
        };
        let Some(td) = self.types.get_mut(t as usize) else {
            return Err(bad(
                ErrorCode::FactsUnknownType,
                at,
                "type out of range".into(),
            ));
        };
        let local = id32(td.entities.len());
        td.entities.push(id);
        for col in &mut td.columns {
            push_none(col);
        }
        for c in &mut td.rels {
            add_row(c);
        }
        // A principal type with roles has a grant set per entity (set at the end).
        if self
            .schema
            .ty(t)
            .is_some_and(|d| d.principal && d.attr("roles").is_some())
        {
            td.grants.push(0);
            log.regrant.push(id);
        }
        add_row(&mut self.auth_by_holder);
        self.names.push(key.clone());
        self.ents.push(Ent {
            local,
            account: account_id,
            ty: t,
        });
        let ck = CompactString::from(key.as_str());
        self.index.insert(ck.clone(), id);
        log.steps.push(Step::Index { key: ck, old: None });
        if is_account {
            self.account_members
                .push(vec![Vec::new(); self.schema.types.len()]);
        }
        self.member_insert(account_id, t, id, log);
        if t == self.schema.builtins.role {
            log.roles = true;
        }
        log.touched.push(id);
        for (name, v) in &e.attrs {
            self.set_attr(
                id,
                name,
                v,
                &format!("entity `{key}` attribute `{name}`"),
                log,
            )?;
        }
        Ok(())
    }

    /// Puts `id` among the entities of type `t` of `account`, in name order.
    fn member_insert(&mut self, account: u32, t: TypeId, id: u32, log: &mut Log) {
        let Some(al) = self.local_of(account) else {
            return;
        };
        let name = self.name(id).to_string();
        let Some(list) = self
            .account_members
            .get(al as usize)
            .and_then(|a| a.get(t as usize))
        else {
            return;
        };
        let pos = list
            .binary_search_by(|&x| self.name(x).cmp(name.as_str()))
            .unwrap_or_else(|p| p);
        if let Some(list) = self
            .account_members
            .get_mut(al as usize)
            .and_then(|a| a.get_mut(t as usize))
        {
            log.steps.push(Step::Members {
                account: al,
                t,
                old: list.clone(),
            });
            list.insert(pos, id);
        }
    }

    fn remove_entity(&mut self, key: &str, at: &str, log: &mut Log) -> Result<(), FactsError> {
        let Some(id) = self.entity(key) else {
            return Err(bad(
                ErrorCode::FactsUnknownEntity,
                at,
                format!("no entity `{key}` to remove"),
            ));
        };
        let e = self.ent_of(id, at)?;
        let auth_ty = self.schema.builtins.authorization;
        let holder = self.holder_rel();
        // Its tuples as resource.
        let rels = self.types.get(e.ty as usize).map_or(0, |td| td.rels.len());
        for r in 0..rels {
            let r = id16(r);
            let Some(c) = self.csr(At::Rel(e.ty, r)) else {
                continue;
            };
            let subjects = c.view(e.local).subjects.to_vec();
            if subjects.is_empty() {
                continue;
            }
            if e.ty == auth_ty && Some(r) == holder {
                for &h in &subjects {
                    self.row_remove(At::Auth, h, id, log);
                }
            }
            self.set_row(At::Rel(e.ty, r), e.local, Row::default(), log);
        }
        // Its tuples as subject: every relation that can name its type.
        let mut naming: Vec<(TypeId, u16)> = Vec::new();
        for (t, def) in self.schema.types.iter().enumerate() {
            for (r, rd) in def.rels.iter().enumerate() {
                if rd.targets.contains(&e.ty) {
                    naming.push((id16(t), id16(r)));
                }
            }
        }
        for (t, r) in naming {
            let Some(c) = self.csr(At::Rel(t, r)) else {
                continue;
            };
            let rows = c.offsets.len().saturating_sub(1);
            let hits: Vec<u32> = (0..rows)
                .map(id32)
                .filter(|&row| c.view(row).position(id).is_some())
                .collect();
            for row in hits {
                self.row_remove(At::Rel(t, r), row, id, log);
                if t == auth_ty
                    && Some(r) == holder
                    && let Some(&aid) = self
                        .types
                        .get(t as usize)
                        .and_then(|td| td.entities.get(row as usize))
                {
                    self.row_remove(At::Auth, id, aid, log);
                }
            }
        }
        // Out of its account's members, out of the index; its id stays, with no type.
        if let Some(al) = self.local_of(e.account)
            && let Some(list) = self
                .account_members
                .get_mut(al as usize)
                .and_then(|a| a.get_mut(e.ty as usize))
            && let Some(p) = list.iter().position(|&x| x == id)
        {
            log.steps.push(Step::Members {
                account: al,
                t: e.ty,
                old: list.clone(),
            });
            list.remove(p);
        }
        let ck = CompactString::from(key);
        self.index.remove(&ck);
        log.steps.push(Step::Index {
            key: ck,
            old: Some(id),
        });
        if let Some(x) = self.ents.get_mut(id as usize) {
            log.steps.push(Step::Ent { id, old: *x });
            x.ty = REMOVED;
        }
        if e.ty == self.schema.builtins.role {
            log.roles = true;
        }
        if e.ty == self.schema.builtins.account {
            log.removed_accounts.push((e.local, key.to_string()));
        }
        Ok(())
    }

    fn set_attr(
        &mut self,
        id: u32,
        attr: &str,
        v: &Value,
        at: &str,
        log: &mut Log,
    ) -> Result<(), FactsError> {
        let e = self.ent_of(id, at)?;
        let schema = std::sync::Arc::clone(&self.schema);
        let Some(def) = schema.ty(e.ty) else {
            return Err(bad(ErrorCode::FactsUnknownType, at, String::new()));
        };
        let Some(a) = def.attr(attr) else {
            let known: Vec<&str> = def.attrs.iter().map(|a| a.name.as_str()).collect();
            return Err(bad(
                ErrorCode::FactsUnknownAttribute,
                at,
                format!(
                    "`{}` has no attribute `{attr}`: expected one of {}",
                    def.name,
                    known.join(", ")
                ),
            ));
        };
        let Some(ad) = def.attrs.get(a as usize) else {
            return Err(bad(ErrorCode::FactsUnknownAttribute, at, String::new()));
        };
        let mut interner = Interner {
            strings: std::mem::take(&mut self.strings),
            index: std::mem::take(&mut self.string_index),
        };
        let result = match self
            .types
            .get_mut(e.ty as usize)
            .and_then(|td| td.columns.get_mut(a as usize))
        {
            Some(col) => {
                let old = take_cell(col, e.local as usize);
                clear_cell(col, e.local as usize);
                let set = set_value(col, e.local as usize, &ad.ty, v, &mut interner);
                log.steps.push(Step::Cell {
                    t: e.ty,
                    a,
                    local: e.local,
                    old,
                });
                set.map_err(|m| bad(ErrorCode::FactsInvalidValue, at, m))
            }
            None => Err(bad(ErrorCode::FactsUnknownAttribute, at, String::new())),
        };
        self.strings = interner.strings;
        self.string_index = interner.index;
        result?;
        log.touched.push(id);
        if def.principal && ad.name == "roles" {
            log.regrant.push(id);
        }
        if e.ty == schema.builtins.role {
            log.roles = true;
        }
        // Relations this attribute bounds (`until`): their expiries follow it.
        let bound = match self
            .types
            .get(e.ty as usize)
            .and_then(|td| td.columns.get(a as usize))
        {
            Some(Column::Time(v)) => v.get(e.local as usize).copied().unwrap_or(NONE_I64),
            _ => NONE_I64,
        };
        for (r, rd) in def.rels.iter().enumerate() {
            if rd.until != Some(a) {
                continue;
            }
            let at_rel = At::Rel(e.ty, id16(r));
            let Some(c) = self.csr(at_rel) else { continue };
            let mut row = c.owned(e.local);
            if row.subjects.is_empty() {
                continue;
            }
            for (x, own) in row.expires.iter_mut().zip(&row.own) {
                *x = if bound == NONE_I64 {
                    *own
                } else {
                    (*own).min(bound)
                };
            }
            self.set_row(at_rel, e.local, row, log);
        }
        Ok(())
    }

    fn add_tuple(&mut self, t: &TupleJson, at: &str, log: &mut Log) -> Result<(), FactsError> {
        let (rid, rel, sid) = self.tuple_ids(t, at)?;
        let own = match &t.expires {
            Some(v) => v
                .seconds()
                .map_err(|m| bad(ErrorCode::FactsInvalidValue, at, m))?,
            None => NEVER,
        };
        let tat = format!("tuple `{}#{}@{}`", t.resource, t.relation, t.subject);
        let re = self.ent_of(rid, &tat)?;
        let se = self.ent_of(sid, &tat)?;
        let schema = std::sync::Arc::clone(&self.schema);
        let def = schema
            .ty(re.ty)
            .ok_or_else(|| bad(ErrorCode::FactsUnknownType, &tat, String::new()))?;
        let Some(ri) = rel else {
            let known: Vec<&str> = def.rels.iter().map(|r| r.name.as_str()).collect();
            return Err(bad(
                ErrorCode::FactsUnknownRelation,
                &tat,
                format!(
                    "`{}` has no relation `{}`: expected one of {}",
                    def.name,
                    t.relation,
                    known.join(", ")
                ),
            ));
        };
        let rd = def
            .rels
            .get(ri as usize)
            .ok_or_else(|| bad(ErrorCode::FactsUnknownRelation, &tat, String::new()))?;
        if !rd.targets.contains(&se.ty) {
            let accepted: Vec<&str> = rd
                .targets
                .iter()
                .filter_map(|x| schema.ty(*x))
                .map(|x| x.name.as_str())
                .collect();
            let sn = schema.ty(se.ty).map_or("?", |x| x.name.as_str());
            return Err(bad(
                ErrorCode::FactsWrongSubjectType,
                &tat,
                format!(
                    "`{}.{}` takes {}, not `{sn}`",
                    def.name,
                    t.relation,
                    accepted.join(" | ")
                ),
            ));
        }
        if re.account != se.account {
            return Err(bad(
                ErrorCode::FactsCrossAccount,
                &tat,
                format!(
                    "`{}` and `{}` belong to different accounts: nothing links two accounts",
                    t.resource, t.subject
                ),
            ));
        }
        let mut expiry = own;
        if let Some(u) = rd.until
            && let Some(Column::Time(v)) = self
                .types
                .get(re.ty as usize)
                .and_then(|x| x.columns.get(u as usize))
        {
            let end = v.get(re.local as usize).copied().unwrap_or(NONE_I64);
            if end != NONE_I64 {
                expiry = expiry.min(end);
            }
        }
        let keep_own = rd.until.is_some().then_some(own);
        self.row_insert(At::Rel(re.ty, ri), re.local, sid, expiry, keep_own, log);
        if re.ty == schema.builtins.authorization && Some(ri) == self.holder_rel() {
            self.row_insert(At::Auth, sid, rid, NEVER, None, log);
        }
        Ok(())
    }

    /// The checks a build makes of the whole facts, made of what the list touched: every
    /// required attribute present, no entity left in a removed account, every principal's
    /// roles known (and their grant sets computed again).
    fn settle(&mut self, log: &mut Log) -> Result<(), FactsError> {
        for &(al, ref key) in &log.removed_accounts {
            let left = self
                .account_members
                .get(al as usize)
                .and_then(|a| a.iter().flatten().next().copied());
            if let Some(x) = left {
                let account = key.strip_prefix("account:").unwrap_or(key);
                return Err(bad(
                    ErrorCode::FactsUnknownAccount,
                    &format!("entity `{}`", self.name(x)),
                    format!("account `{account}` does not exist: add an entity `{key}`"),
                ));
            }
        }
        let schema = std::sync::Arc::clone(&self.schema);
        for &id in &log.touched {
            let Some(e) = self.ent(id).copied().filter(|e| e.ty != REMOVED) else {
                continue;
            };
            let (Some(def), Some(td)) = (schema.ty(e.ty), self.types.get(e.ty as usize)) else {
                continue;
            };
            for (a, ad) in def.attrs.iter().enumerate() {
                if ad.optional
                    || matches!(ad.ty, ValueType::StrSet)
                    || self.omits.contains(&(e.ty, id16(a)))
                {
                    continue;
                }
                if let Some(col) = td.columns.get(a)
                    && is_none(col, e.local as usize)
                {
                    return Err(bad(
                        ErrorCode::FactsMissingAttribute,
                        &format!("entity `{}`", self.name(id)),
                        format!(
                            "attribute `{}` ({}) is required",
                            ad.name,
                            crate::snapshot::describe_col(col)
                        ),
                    ));
                }
            }
        }
        let regrant = std::mem::take(&mut log.regrant);
        if std::mem::take(&mut log.roles) {
            log.steps.push(Step::Roles(Box::new(RolesState {
                roles: self.roles.clone(),
                grant_sets: self.grant_sets.clone(),
                grants: self.types.iter().map(|t| t.grants.clone()).collect(),
            })));
            self.compile_roles()?;
        } else {
            for id in regrant {
                self.regrant(id, log)?;
            }
        }
        if std::mem::take(&mut log.certs) {
            self.check_certifications()?;
        }
        log.touched.clear();
        log.removed_accounts.clear();
        Ok(())
    }

    /// Computes again the grant set of principal `id` from its roles.
    fn regrant(&mut self, id: u32, log: &mut Log) -> Result<(), FactsError> {
        let Some(e) = self.ent(id).copied().filter(|e| e.ty != REMOVED) else {
            return Ok(());
        };
        let schema = std::sync::Arc::clone(&self.schema);
        let Some(roles_attr) = schema.ty(e.ty).and_then(|d| d.attr("roles")) else {
            return Ok(());
        };
        let names = self.set_attr_strings(e.ty, roles_attr, e.local as usize);
        let mut held = Vec::new();
        for rn in &names {
            let custom = self
                .roles
                .iter()
                .position(|r| r.account == Some(e.account) && r.name == *rn);
            match custom.or_else(|| schema.role_index.get(rn).map(|i| *i as usize)) {
                Some(r) => held.push(r),
                None => return Err(self.unknown_role(id, e.account, rn)),
            }
        }
        held.sort_unstable();
        held.dedup();
        let set = grant_set(&schema, &self.roles, &held);
        let gid = match self.grant_sets.iter().position(|g| *g == set) {
            Some(g) => id32(g),
            None => {
                self.grant_sets.push(set);
                id32(self.grant_sets.len() - 1)
            }
        };
        if let Some(g) = self
            .types
            .get_mut(e.ty as usize)
            .and_then(|td| td.grants.get_mut(e.local as usize))
        {
            log.steps.push(Step::Grant {
                t: e.ty,
                local: e.local,
                old: *g,
            });
            *g = gid;
        }
        Ok(())
    }
}
