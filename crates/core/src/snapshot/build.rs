//! Building a snapshot from facts: accounts, attributes into columns, tuples into
//! indexed relations, authorisations by holder, account members, the relations carried as
//! numbers; then the roles compiled and the certifications checked.

use super::{
    Carried, Column, Csr, Edge, Ent, Interner, MAX_IDS, NEVER, NO_PATCH, NONE_I64, NONE_STR,
    NONE_U8, Snapshot, TypeData, bad, describe_col, id16, id32, set_value,
};
use crate::error::ErrorCode;
use crate::error::FactsError;
use crate::facts::{CountsJson, Facts};
use crate::policy::{Schema, TypeId, ValueType};
use compact_str::CompactString;
use rustc_hash::FxHashMap;
use std::sync::Arc;

/// What a build carries from one phase to the next: the entities' ids, where each is
/// (type, index within the type, account), and the columns and relations filled so far.
struct Builder<'a> {
    schema: &'a Schema,
    facts: &'a Facts,
    strings: Interner,
    names: Vec<String>,
    index: FxHashMap<CompactString, u32>,
    ent_type: Vec<TypeId>,
    ent_local: Vec<u32>,
    ent_account: Vec<u32>,
    types: Vec<TypeData>,
}

impl Snapshot {
    /// Validates `facts` against `schema` and compiles them: ids for the entities, then
    /// their accounts, attributes and tuples, each checked against the policy as it is
    /// read; the indexes derived from them; then the roles and certifications.
    pub fn build(schema: Arc<Schema>, facts: &Facts) -> Result<Snapshot, FactsError> {
        let mut b = Builder::entities(&schema, facts)?;
        b.accounts()?;
        b.attributes()?;
        b.tuples()?;
        let auth_by_holder = b.authorisations_by_holder();
        let counts = carried(&schema, &facts.counts, &b.types, |key| {
            let id = *b.index.get(key)?;
            Some((
                *b.ent_type.get(id as usize)?,
                *b.ent_local.get(id as usize)?,
            ))
        })?;
        let account_members = b.account_members()?;
        let n = b.names.len();
        let Builder {
            strings,
            names,
            index,
            ent_type,
            ent_local,
            ent_account,
            types,
            ..
        } = b;
        let mut snap = Snapshot {
            schema,
            revision: facts.revision,
            strings: strings.strings,
            string_index: strings.index,
            names,
            index,
            ents: ent_type
                .iter()
                .zip(&ent_local)
                .zip(&ent_account)
                .map(|((&ty, &local), &account)| Ent { local, account, ty })
                .collect(),
            types,
            grant_sets: Vec::new(),
            roles: Vec::new(),
            auth_by_holder,
            account_members,
            built: id32(n),
            omits: Vec::new(),
            counts,
        };
        for (t, def) in snap.schema.types.iter().enumerate() {
            for (a, ad) in def.attrs.iter().enumerate() {
                if facts.omits(&def.name, &ad.name) {
                    snap.omits.push((id16(t), id16(a)));
                }
            }
        }
        snap.compile_roles()?;
        snap.check_certifications()?;
        Ok(snap)
    }
}

impl<'a> Builder<'a> {
    /// An id for every entity, in the facts' order, with its type and its index within
    /// the type; the policy's literals interned first.
    fn entities(schema: &'a Schema, facts: &'a Facts) -> Result<Builder<'a>, FactsError> {
        let mut strings = Interner {
            strings: Vec::new(),
            index: FxHashMap::default(),
        };
        for l in &schema.literals {
            strings
                .id(l)
                .map_err(|m| bad(ErrorCode::FactsTooLarge, "policy literals", m))?;
        }
        let n = facts.entities.len();
        if n >= MAX_IDS as usize {
            return Err(bad(
                ErrorCode::FactsTooLarge,
                "entities",
                format!("{n} entities is more than a snapshot holds"),
            ));
        }
        let mut names = Vec::with_capacity(n);
        let mut index = FxHashMap::default();
        index.reserve(n);
        let mut ent_type = Vec::with_capacity(n);
        let mut ent_local = Vec::with_capacity(n);
        let mut types: Vec<TypeData> = schema.types.iter().map(|_| TypeData::default()).collect();
        for (key, e) in &facts.entities {
            let at = format!("entity `{key}`");
            let Some(t) = schema.type_id(&e.ty) else {
                let known: Vec<&str> = schema.type_index.keys().map(String::as_str).collect();
                return Err(bad(
                    ErrorCode::FactsUnknownType,
                    &at,
                    format!(
                        "unknown type `{}`: expected one of {}",
                        e.ty,
                        known.join(", ")
                    ),
                ));
            };
            let id = id32(names.len());
            let td = types
                .get_mut(t as usize)
                .ok_or_else(|| bad(ErrorCode::FactsUnknownType, &at, "type out of range".into()))?;
            ent_local.push(id32(td.entities.len()));
            td.entities.push(id);
            ent_type.push(t);
            index.insert(CompactString::from(key.as_str()), id);
            names.push(key.clone());
        }
        Ok(Builder {
            schema,
            facts,
            strings,
            names,
            index,
            ent_type,
            ent_local,
            ent_account: Vec::new(),
            types,
        })
    }

    /// Every entity's account, which must exist.
    fn accounts(&mut self) -> Result<(), FactsError> {
        let n = self.names.len();
        self.ent_account = Vec::with_capacity(n);
        for (key, e) in &self.facts.entities {
            let akey = format!("account:{}", e.account);
            match self.index.get(akey.as_str()) {
                Some(a) => self.ent_account.push(*a),
                None => {
                    return Err(bad(
                        ErrorCode::FactsUnknownAccount,
                        &format!("entity `{key}`"),
                        format!(
                            "account `{}` does not exist: add an entity `{akey}`",
                            e.account
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The columns of every type, each attribute's value checked against its type, and
    /// every required attribute present.
    fn attributes(&mut self) -> Result<(), FactsError> {
        for (t, td) in self.types.iter_mut().enumerate() {
            let Some(def) = self.schema.types.get(t) else {
                continue;
            };
            let len = td.entities.len();
            td.columns = def
                .attrs
                .iter()
                .map(|a| match a.ty {
                    ValueType::Bool => Column::Bool(vec![NONE_U8; len]),
                    ValueType::Int => Column::Int(vec![NONE_I64; len]),
                    ValueType::Str => Column::Str(vec![NONE_STR; len]),
                    ValueType::Time => Column::Time(vec![NONE_I64; len]),
                    ValueType::Enum(_) => Column::Enum(vec![NONE_U8; len]),
                    ValueType::StrSet => Column::Set(vec![Box::from([]); len]),
                })
                .collect();
        }
        for ((key, e), (&t, &local)) in self
            .facts
            .entities
            .iter()
            .zip(self.ent_type.iter().zip(&self.ent_local))
        {
            let local = local as usize;
            let Some(def) = self.schema.types.get(t as usize) else {
                continue;
            };
            let Some(td) = self.types.get_mut(t as usize) else {
                continue;
            };
            for (name, v) in &e.attrs {
                let at = format!("entity `{key}` attribute `{name}`");
                let Some(a) = def.attr(name) else {
                    let known: Vec<&str> = def.attrs.iter().map(|a| a.name.as_str()).collect();
                    return Err(bad(
                        ErrorCode::FactsUnknownAttribute,
                        &at,
                        format!(
                            "`{}` has no attribute `{name}`: expected one of {}",
                            def.name,
                            known.join(", ")
                        ),
                    ));
                };
                let ad = def
                    .attrs
                    .get(a as usize)
                    .ok_or_else(|| bad(ErrorCode::FactsUnknownAttribute, &at, String::new()))?;
                let col = td
                    .columns
                    .get_mut(a as usize)
                    .ok_or_else(|| bad(ErrorCode::FactsUnknownAttribute, &at, String::new()))?;
                set_value(col, local, &ad.ty, v, &mut self.strings)
                    .map_err(|m| bad(ErrorCode::FactsInvalidValue, &at, m))?;
            }
            for (a, ad) in def.attrs.iter().enumerate() {
                if ad.optional
                    || matches!(ad.ty, ValueType::StrSet)
                    || e.attrs.contains_key(&ad.name)
                    // Attributes the facts leave out (a principal slice's) may be absent.
                    || self.facts.omits(&def.name, &ad.name)
                {
                    continue;
                }
                if let Some(col) = td.columns.get(a) {
                    return Err(bad(
                        ErrorCode::FactsMissingAttribute,
                        &format!("entity `{key}`"),
                        format!(
                            "attribute `{}` ({}) is required",
                            ad.name,
                            describe_col(col)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The relations of every type, indexed: each tuple checked (its entities, relation,
    /// subject type and account), its expiry the earlier of its own and its `until`.
    fn tuples(&mut self) -> Result<(), FactsError> {
        let mut edges: Vec<Vec<Vec<Edge>>> = self
            .schema
            .types
            .iter()
            .map(|t| vec![Vec::new(); t.rels.len()])
            .collect();
        for ((r, rel, s), exp) in &self.facts.tuples {
            let at = format!("tuple `{r}#{rel}@{s}`");
            let (Some(&rid), Some(&sid)) = (self.index.get(r.as_str()), self.index.get(s.as_str()))
            else {
                return Err(bad(
                    ErrorCode::FactsUnknownEntity,
                    &at,
                    "the tuple names an unknown entity".into(),
                ));
            };
            // `index` and the per-entity vectors are filled together, one entry per entity.
            let (Some(&rt), Some(&st), Some(&local)) = (
                self.ent_type.get(rid as usize),
                self.ent_type.get(sid as usize),
                self.ent_local.get(rid as usize),
            ) else {
                return Err(bad(
                    ErrorCode::FactsInternal,
                    &at,
                    "an entity without a type".into(),
                ));
            };
            let def = self
                .schema
                .ty(rt)
                .ok_or_else(|| bad(ErrorCode::FactsUnknownType, &at, String::new()))?;
            let Some(ri) = def.rel(rel) else {
                let known: Vec<&str> = def.rels.iter().map(|r| r.name.as_str()).collect();
                return Err(bad(
                    ErrorCode::FactsUnknownRelation,
                    &at,
                    format!(
                        "`{}` has no relation `{rel}`: expected one of {}",
                        def.name,
                        known.join(", ")
                    ),
                ));
            };
            let rd = def
                .rels
                .get(ri as usize)
                .ok_or_else(|| bad(ErrorCode::FactsUnknownRelation, &at, String::new()))?;
            if !rd.targets.contains(&st) {
                let accepted: Vec<&str> = rd
                    .targets
                    .iter()
                    .filter_map(|t| self.schema.ty(*t))
                    .map(|t| t.name.as_str())
                    .collect();
                let sn = self.schema.ty(st).map_or("?", |t| t.name.as_str());
                return Err(bad(
                    ErrorCode::FactsWrongSubjectType,
                    &at,
                    format!(
                        "`{}.{rel}` takes {}, not `{sn}`",
                        def.name,
                        accepted.join(" | ")
                    ),
                ));
            }
            if self.ent_account.get(rid as usize) != self.ent_account.get(sid as usize) {
                return Err(bad(
                    ErrorCode::FactsCrossAccount,
                    &at,
                    format!(
                        "`{r}` and `{s}` belong to different accounts: nothing links two accounts"
                    ),
                ));
            }
            let own = exp.unwrap_or(NEVER);
            let mut expiry = own;
            if let Some(u) = rd.until
                && let Some(Column::Time(v)) = self
                    .types
                    .get(rt as usize)
                    .and_then(|t| t.columns.get(u as usize))
            {
                let end = v.get(local as usize).copied().unwrap_or(NONE_I64);
                if end != NONE_I64 {
                    expiry = expiry.min(end);
                }
            }
            if let Some(list) = edges
                .get_mut(rt as usize)
                .and_then(|t| t.get_mut(ri as usize))
            {
                list.push((local, sid, expiry, own));
            }
        }
        for (t, rels) in edges.into_iter().enumerate() {
            let Some(td) = self.types.get_mut(t) else {
                continue;
            };
            let len = td.entities.len();
            let def = self.schema.types.get(t);
            td.rels = rels
                .into_iter()
                .enumerate()
                .map(|(r, e)| {
                    let until = def
                        .and_then(|d| d.rels.get(r))
                        .is_some_and(|rd| rd.until.is_some());
                    Csr::build_with_own(len, e, until)
                })
                .collect();
        }
        Ok(())
    }

    /// Authorisations indexed by holder.
    fn authorisations_by_holder(&self) -> Csr {
        let n = self.names.len();
        let auth_ty = self.schema.builtins.authorization;
        let mut auth_edges = Vec::new();
        if let (Some(td), Some(def)) = (self.types.get(auth_ty as usize), self.schema.ty(auth_ty))
            && let Some(holder) = def.rel("holder").and_then(|h| td.rels.get(h as usize))
        {
            for (local, &aid) in td.entities.iter().enumerate() {
                for &h in holder.row(id32(local)) {
                    auth_edges.push((h, aid, NEVER));
                }
            }
        }
        Csr::build(n, auth_edges)
    }

    /// The entities of each account, by type.
    fn account_members(&self) -> Result<Vec<Vec<Vec<u32>>>, FactsError> {
        let account_ty = self.schema.builtins.account;
        let n_accounts = self
            .types
            .get(account_ty as usize)
            .map_or(0, |t| t.entities.len());
        let mut account_members = vec![vec![Vec::new(); self.schema.types.len()]; n_accounts];
        for (id, (&a, &t)) in self.ent_account.iter().zip(&self.ent_type).enumerate() {
            let Some(&al) = self.ent_local.get(a as usize) else {
                return Err(bad(
                    ErrorCode::FactsInternal,
                    "accounts",
                    "an unknown account".into(),
                ));
            };
            if let Some(v) = account_members
                .get_mut(al as usize)
                .and_then(|x| x.get_mut(t as usize))
            {
                v.push(id32(id));
            }
        }
        Ok(account_members)
    }
}

/// The relations `counts` carry as numbers, checked against `schema`; `entity` finds an
/// entity's type and local index by `type:id`, among `types`.
fn carried(
    schema: &Schema,
    counts: &[CountsJson],
    types: &[TypeData],
    entity: impl Fn(&str) -> Option<(TypeId, u32)>,
) -> Result<Vec<Carried>, FactsError> {
    let mut out: Vec<Carried> = Vec::with_capacity(counts.len());
    for (i, c) in counts.iter().enumerate() {
        let at = format!("counts[{i}]");
        let invalid = |m: String| Err(bad(ErrorCode::FactsInvalidValue, &at, m));
        let Some((ty, def)) = schema.type_id(&c.ty).and_then(|t| Some((t, schema.ty(t)?))) else {
            return Err(bad(
                ErrorCode::FactsUnknownType,
                &at,
                format!("unknown type `{}`", c.ty),
            ));
        };
        let mut rels = Vec::with_capacity(c.relations.len());
        for name in &c.relations {
            let Some(r) = def.rel(name) else {
                return Err(bad(
                    ErrorCode::FactsUnknownRelation,
                    &at,
                    format!("`{}` has no relation `{name}`", def.name),
                ));
            };
            if rels.contains(&r) {
                return invalid(format!("relation `{name}` is listed twice"));
            }
            rels.push(r);
        }
        if rels.is_empty() {
            return invalid("expected at least one relation to count".into());
        }
        if out.iter().any(|o| {
            o.ty == ty && o.rels.len() == rels.len() && rels.iter().all(|r| o.rels.contains(r))
        }) {
            return invalid(format!(
                "these relations of `{}` are counted twice",
                def.name
            ));
        }
        let len = types.get(ty as usize).map_or(0, |t| t.entities.len());
        let mut slot = vec![NO_PATCH; len];
        for (j, n) in c.of.iter().enumerate() {
            let key = format!("{}:{}", c.ty, n.id);
            let eat = format!("{at} `{key}`");
            let invalid = |m: String| Err(bad(ErrorCode::FactsInvalidValue, &eat, m));
            let Some(s) = entity(&key)
                .filter(|(t, _)| *t == ty)
                .and_then(|(_, local)| slot.get_mut(local as usize))
            else {
                return Err(bad(
                    ErrorCode::FactsUnknownEntity,
                    &eat,
                    format!("no entity `{key}` to count"),
                ));
            };
            if *s != NO_PATCH {
                return invalid("counted twice".into());
            }
            *s = id32(j);
            if n.subject_ends.len() > n.subjects as usize {
                return invalid(format!(
                    "{} subject ends for {} subjects: expected at most one per subject",
                    n.subject_ends.len(),
                    n.subjects
                ));
            }
            if !n.subject_ends.is_sorted()
                || !n
                    .tuple_ends
                    .windows(2)
                    .all(|w| matches!(w, [a, b] if a < b))
            {
                return invalid("expected the ends in ascending order, each tuple end once".into());
            }
        }
        out.push(Carried {
            ty,
            rels,
            slot,
            of: c.of.clone(),
        });
    }
    Ok(out)
}
