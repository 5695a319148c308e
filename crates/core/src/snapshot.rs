//! Snapshots: facts validated against a policy and compiled to dense ids, columns,
//! indexed relations and role bitsets, ready to decide requests.

use crate::error::FactsError;
use crate::facts::{CountsJson, EntityCount, Facts};
use crate::policy::{CellDef, RoleCells, Schema, TypeId, ValueType, parse_cell};
use compact_str::CompactString;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// How long a chain of custom roles extending each other may be.
pub const MAX_EXTENDS: usize = 32;

/// "No value" in integer-like columns.
pub const NONE_I64: i64 = i64::MIN;
/// "No value" in string columns.
pub const NONE_STR: u32 = u32::MAX;
/// "No value" in bool and enum columns.
pub const NONE_U8: u8 = u8::MAX;
pub use crate::time::NEVER;

/// The licence categories a certification authorisation or a licence may name: those of
/// aircraft maintenance licences (`A` and `B1` with their subcategories, `B2`, `B2L`,
/// `B3`, `C`). A category covers its subcategories (`B1` covers `B1.1`).
pub const LICENCE_CATEGORIES: [&str; 14] = [
    "A", "A1", "A2", "A3", "A4", "B1", "B1.1", "B1.2", "B1.3", "B1.4", "B2", "B2L", "B3", "C",
];

/// One attribute of every entity of a type.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Column {
    /// 0 false, 1 true, [`NONE_U8`] absent.
    Bool(Vec<u8>),
    /// [`NONE_I64`] absent.
    Int(Vec<i64>),
    /// String ids; [`NONE_STR`] absent.
    Str(Vec<u32>),
    /// Seconds; [`NONE_I64`] absent.
    Time(Vec<i64>),
    /// Value index; [`NONE_U8`] absent.
    Enum(Vec<u8>),
    /// Sorted string ids.
    Set(Vec<Box<[u32]>>),
}

/// A relation's edges as a build collects them: `(row, subject, expiry, own expiry)`.
type Edge = (u32, u32, i64, i64);

/// A relation of every entity of a type: compressed rows of sorted subjects, and the rows
/// changed since they were built ([`Snapshot::apply`]), each held whole on the side.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Csr {
    /// Row `i` is `subjects[offsets[i]..offsets[i + 1]]`.
    pub offsets: Vec<u32>,
    /// Subject entity ids, sorted within each row.
    pub subjects: Vec<u32>,
    /// Expiry per subject, or empty when no tuple of the relation expires.
    pub expires: Vec<i64>,
    /// For a relation bounded by an attribute (`until`): each tuple's own expiry, before
    /// the bound, so a change of the bound can be applied; empty otherwise.
    pub own: Vec<i64>,
    /// Per row, the index in `patches` of the row that replaces it, or [`NO_PATCH`];
    /// empty while no row is replaced.
    pub patch_slot: Vec<u32>,
    /// Rows changed since the build.
    pub patches: Vec<Row>,
}

/// No patch for this row.
pub const NO_PATCH: u32 = u32::MAX;

/// A row changed since the build: its subjects in the order of their names (the order a
/// build gives ids, so decisions walk rows in the same order after a change as after a
/// rebuild), with their expiries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// Subject entity ids, in name order.
    pub subjects: Vec<u32>,
    /// Expiry per subject.
    pub expires: Vec<i64>,
    /// Each tuple's own expiry, for a relation bounded by an attribute; else empty.
    pub own: Vec<i64>,
    /// Whether name order differs from id order here (a subject added since the build):
    /// then a subject is found by a scan, not a binary search.
    pub by_name: bool,
}

/// One row as decisions read it.
#[derive(Debug, Clone, Copy)]
pub struct RowView<'a> {
    /// The subjects, in name order.
    pub subjects: &'a [u32],
    /// Their expiries, or empty when none expires.
    pub expires: &'a [i64],
    /// See [`Row::by_name`].
    pub by_name: bool,
}

impl RowView<'_> {
    /// The expiry of the subject at `pos`.
    #[inline]
    pub fn expiry(&self, pos: usize) -> i64 {
        self.expires.get(pos).copied().unwrap_or(NEVER)
    }

    /// Where subject `id` is in the row.
    #[inline]
    pub fn position(&self, id: u32) -> Option<usize> {
        if self.by_name {
            self.subjects.iter().position(|&s| s == id)
        } else {
            self.subjects.binary_search(&id).ok()
        }
    }
}

impl Csr {
    /// Row `i` as decisions read it: its patch when it was changed since the build.
    #[inline]
    pub fn view(&self, i: u32) -> RowView<'_> {
        if !self.patch_slot.is_empty()
            && let Some(p) = self
                .patch_slot
                .get(i as usize)
                .filter(|&&p| p != NO_PATCH)
                .and_then(|&p| self.patches.get(p as usize))
        {
            return RowView {
                subjects: &p.subjects,
                expires: &p.expires,
                by_name: p.by_name,
            };
        }
        let range = self.range(i);
        RowView {
            subjects: self.subjects.get(range.clone()).unwrap_or(&[]),
            expires: self.expires.get(range).unwrap_or(&[]),
            by_name: false,
        }
    }

    /// The number of subjects of every row, changes included.
    pub fn len(&self) -> usize {
        let mut n = self.subjects.len();
        for (i, &p) in self.patch_slot.iter().enumerate() {
            if let Some(row) = self.patches.get(p as usize) {
                n = n - self.range(id32(i)).len() + row.subjects.len();
            }
        }
        n
    }

    /// Whether no row has a subject.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The range of row `i` in the built arrays (its patch aside).
    #[inline]
    pub fn range(&self, i: u32) -> std::ops::Range<usize> {
        let i = i as usize;
        // A row past the end (an id that names no entity) is empty.
        match (
            self.offsets.get(i),
            i.checked_add(1).and_then(|j| self.offsets.get(j)),
        ) {
            (Some(&a), Some(&b)) => a as usize..(b as usize).max(a as usize),
            _ => 0..0,
        }
    }

    /// The subjects of row `i`.
    #[inline]
    pub fn row(&self, i: u32) -> &[u32] {
        self.view(i).subjects
    }

    /// Row `i` as an owned [`Row`], to change.
    pub fn owned(&self, i: u32) -> Row {
        if let Some(p) = self
            .patch_slot
            .get(i as usize)
            .and_then(|&p| self.patches.get(p as usize))
        {
            return p.clone();
        }
        let range = self.range(i);
        let subjects: Vec<u32> = self.subjects.get(range.clone()).unwrap_or(&[]).to_vec();
        let expires = match self.expires.get(range.clone()) {
            Some(e) if !self.expires.is_empty() => e.to_vec(),
            _ => vec![NEVER; subjects.len()],
        };
        let own = if self.own.is_empty() {
            Vec::new()
        } else {
            self.own.get(range).map(<[i64]>::to_vec).unwrap_or_default()
        };
        Row {
            subjects,
            expires,
            own,
            by_name: false,
        }
    }

    fn build(rows: usize, edges: Vec<(u32, u32, i64)>) -> Csr {
        Csr::build_with_own(
            rows,
            edges
                .into_iter()
                .map(|(r, s, e)| (r, s, e, NEVER))
                .collect(),
            false,
        )
    }

    /// A relation from its edges `(row, subject, expiry, own expiry)`; `keep_own` keeps the
    /// own expiries (a relation bounded by an attribute).
    fn build_with_own(rows: usize, mut edges: Vec<Edge>, keep_own: bool) -> Csr {
        edges.sort_unstable();
        let mut offsets = vec![0u32; rows + 1];
        for (r, _, _, _) in &edges {
            if let Some(o) = offsets.get_mut(*r as usize + 1) {
                *o += 1;
            }
        }
        let mut total = 0;
        for o in &mut offsets {
            total += *o;
            *o = total;
        }
        let any_expiry = edges.iter().any(|e| e.2 != NEVER);
        let subjects = edges.iter().map(|e| e.1).collect();
        let expires = if any_expiry {
            edges.iter().map(|e| e.2).collect()
        } else {
            Vec::new()
        };
        let own = if keep_own {
            edges.iter().map(|e| e.3).collect()
        } else {
            Vec::new()
        };
        Csr {
            offsets,
            subjects,
            expires,
            own,
            patch_slot: Vec::new(),
            patches: Vec::new(),
        }
    }
}

/// The entities of one type.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TypeData {
    /// Entity ids by local index.
    pub entities: Vec<u32>,
    /// Attribute columns, by attribute index.
    pub columns: Vec<Column>,
    /// Relations, by relation index.
    pub rels: Vec<Csr>,
    /// For principal types: the grant set of each entity.
    pub grants: Vec<u32>,
}

/// Where an entity is, by entity id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ent {
    /// Its index within its type.
    pub local: u32,
    /// Its account (an entity id).
    pub account: u32,
    /// Its type.
    pub ty: TypeId,
}

/// Relations of one type whose subjects the facts carry as numbers, not tuples (a
/// principal slice's [`CountsJson`]): a `count(...)` of exactly these relations reads them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carried {
    /// The type.
    pub ty: TypeId,
    /// Its relations, each once.
    pub rels: Vec<u16>,
    /// By the local index of an entity of the type, its count's index in `of`, or
    /// [`NO_PATCH`]; an entity past the end (added since the build) has none.
    pub slot: Vec<u32>,
    /// The counts of the entities that have one.
    pub of: Vec<EntityCount>,
}

/// A scoped cell held by a principal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopedGrant {
    /// The row.
    pub row: u16,
    /// Action bits on records where a scope holds.
    pub record: u32,
    /// Indices into the row's scopes.
    pub scopes: Vec<u8>,
}

/// What a principal's roles grant on one matrix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatrixGrant {
    /// Whether any role of this matrix is held.
    pub has_role: bool,
    /// Unscoped action bits per row (records and pages).
    pub record: Vec<u32>,
    /// Action bits per row on the page, scoped cells included.
    pub page: Vec<u32>,
    /// Scoped cells.
    pub scoped: Vec<ScopedGrant>,
}

/// The union of a set of roles, per matrix. Principals with the same roles share one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantSet {
    /// Per matrix.
    pub matrices: Vec<MatrixGrant>,
}

/// A role as the facts of one account see it: a policy role, or a custom role.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountRole {
    /// Its name.
    pub name: String,
    /// The account entity id, for custom roles.
    pub account: Option<u32>,
    /// Its matrix.
    pub matrix: u16,
    /// Its cells.
    pub cells: Vec<CellDef>,
}

/// Facts compiled against a policy: the thing decisions are made on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// The compiled policy; its bytes hold the policy sources, compiled again on reading.
    #[serde(with = "policy_sources")]
    pub schema: Arc<Schema>,
    /// The facts revision.
    pub revision: u64,
    /// Interned strings; the policy's literals come first.
    pub strings: Vec<String>,
    /// String ids by text (rebuilt on load, not serialised).
    #[serde(skip)]
    pub string_index: FxHashMap<String, u32>,
    /// `type:id` of every entity, by entity id.
    pub names: Vec<String>,
    /// Entity ids by `type:id` (rebuilt on load, not serialised). Keys of up to 24 bytes
    /// are held inline in the table, so a lookup compares them without a second cache
    /// miss into the heap.
    #[serde(skip)]
    pub index: FxHashMap<CompactString, u32>,
    /// Where every entity is: its type, its index within the type and its account, in
    /// one row, so a check that visits an entity loads one cache line, not three.
    pub ents: Vec<Ent>,
    /// Per type.
    pub types: Vec<TypeData>,
    /// Distinct grant sets.
    pub grant_sets: Vec<GrantSet>,
    /// Roles in effect: policy roles, then custom roles.
    pub roles: Vec<AccountRole>,
    /// Authorisation entity ids by holder entity id.
    pub auth_by_holder: Csr,
    /// Per account (by the account's local index), per type, the entity ids, in name
    /// order.
    pub account_members: Vec<Vec<Vec<u32>>>,
    /// Ids below this were given by the build, in name order; those from it on were
    /// added since ([`Snapshot::apply`]).
    pub built: u32,
    /// The attributes the facts leave out (`omitted`), which may be absent: `(type, attr)`.
    pub omits: Vec<(TypeId, u16)>,
    /// The relations the facts carry as numbers (`counts`); empty for whole facts.
    pub counts: Vec<Carried>,
}

/// The type of an entity removed since the build ([`Snapshot::apply`]): no type, so no
/// rule reads it; its id is not given again.
pub const REMOVED: TypeId = TypeId::MAX;

/// The version of the snapshot bytes, the first thing in them: a snapshot of another
/// version is refused rather than read as if it were this one.
pub const SNAPSHOT_FORMAT: u32 = 5;

/// A snapshot's policy as bytes: its sources. [`Snapshot::from_bytes`] compiles them
/// again, so the bytes need not hold the compiled form (whose readers and writers were a
/// tenth of the wasm module) and a snapshot can only ever carry a policy that passes the
/// compiler's checks.
mod policy_sources {
    use crate::policy::{Schema, Source};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::sync::Arc;

    pub fn serialize<S: Serializer>(schema: &Arc<Schema>, s: S) -> Result<S::Ok, S::Error> {
        schema.sources.serialize(s)
    }

    /// The sources only, in an otherwise empty schema: the caller compiles them.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Schema>, D::Error> {
        let sources = Vec::<Source>::deserialize(d)?;
        Ok(Arc::new(Schema {
            sources,
            ..Schema::default()
        }))
    }
}

pub(crate) struct Interner {
    pub(crate) strings: Vec<String>,
    pub(crate) index: FxHashMap<String, u32>,
}

impl Interner {
    fn id(&mut self, s: &str) -> Result<u32, String> {
        if let Some(i) = self.index.get(s) {
            return Ok(*i);
        }
        let i = u32::try_from(self.strings.len())
            .ok()
            .filter(|i| *i < MAX_IDS)
            .ok_or_else(|| format!("more than {MAX_IDS} distinct strings"))?;
        self.strings.push(s.to_string());
        self.index.insert(s.to_string(), i);
        Ok(i)
    }
}

/// The most entities, and the most distinct strings, one snapshot holds: ids are `u32`,
/// with room above for sentinels.
pub(crate) const MAX_IDS: u32 = u32::MAX / 2;

/// Entity index `i` as an id. Every caller indexes entities of a snapshot (or grant sets,
/// at most one per entity), and `build` and `from_bytes` refuse more than [`MAX_IDS`]
/// entities, so the index always fits.
#[allow(clippy::cast_possible_truncation)]
#[inline]
pub(crate) fn id32(i: usize) -> u32 {
    i as u32
}

/// A type, attribute or relation index as the policy numbers it (the compiler refuses a
/// policy past `u16`).
pub(crate) fn id16(i: usize) -> u16 {
    u16::try_from(i).unwrap_or(u16::MAX)
}

pub(crate) fn bad(code: &str, at: &str, msg: String) -> FactsError {
    FactsError {
        code: code.to_string(),
        at: at.to_string(),
        message: msg,
    }
}

impl Snapshot {
    /// Validates `facts` against `schema` and compiles them.
    pub fn build(schema: Arc<Schema>, facts: &Facts) -> Result<Snapshot, FactsError> {
        let mut strings = Interner {
            strings: Vec::new(),
            index: FxHashMap::default(),
        };
        for l in &schema.literals {
            strings
                .id(l)
                .map_err(|m| bad("facts.too_large", "policy literals", m))?;
        }
        let n = facts.entities.len();
        if n >= MAX_IDS as usize {
            return Err(bad(
                "facts.too_large",
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
                    "facts.unknown_type",
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
                .ok_or_else(|| bad("facts.unknown_type", &at, "type out of range".into()))?;
            ent_local.push(id32(td.entities.len()));
            td.entities.push(id);
            ent_type.push(t);
            index.insert(CompactString::from(key.as_str()), id);
            names.push(key.clone());
        }
        // Accounts.
        let account_ty = schema.builtins.account;
        let mut ent_account = Vec::with_capacity(n);
        for (key, e) in &facts.entities {
            let akey = format!("account:{}", e.account);
            match index.get(akey.as_str()) {
                Some(a) => ent_account.push(*a),
                None => {
                    return Err(bad(
                        "facts.unknown_account",
                        &format!("entity `{key}`"),
                        format!(
                            "account `{}` does not exist: add an entity `{akey}`",
                            e.account
                        ),
                    ));
                }
            }
        }
        // Attributes.
        for (t, td) in types.iter_mut().enumerate() {
            let Some(def) = schema.types.get(t) else {
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
        for ((key, e), (&t, &local)) in facts.entities.iter().zip(ent_type.iter().zip(&ent_local)) {
            let local = local as usize;
            let Some(def) = schema.types.get(t as usize) else {
                continue;
            };
            let Some(td) = types.get_mut(t as usize) else {
                continue;
            };
            for (name, v) in &e.attrs {
                let at = format!("entity `{key}` attribute `{name}`");
                let Some(a) = def.attr(name) else {
                    let known: Vec<&str> = def.attrs.iter().map(|a| a.name.as_str()).collect();
                    return Err(bad(
                        "facts.unknown_attribute",
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
                    .ok_or_else(|| bad("facts.unknown_attribute", &at, String::new()))?;
                let col = td
                    .columns
                    .get_mut(a as usize)
                    .ok_or_else(|| bad("facts.unknown_attribute", &at, String::new()))?;
                set_value(col, local, &ad.ty, v, &mut strings)
                    .map_err(|m| bad("facts.invalid_value", &at, m))?;
            }
            for (a, ad) in def.attrs.iter().enumerate() {
                if ad.optional
                    || matches!(ad.ty, ValueType::StrSet)
                    || e.attrs.contains_key(&ad.name)
                    // Attributes the facts leave out (a principal slice's) may be absent.
                    || facts.omits(&def.name, &ad.name)
                {
                    continue;
                }
                if let Some(col) = td.columns.get(a) {
                    return Err(bad(
                        "facts.missing_attribute",
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
        // Tuples.
        let mut edges: Vec<Vec<Vec<Edge>>> = schema
            .types
            .iter()
            .map(|t| vec![Vec::new(); t.rels.len()])
            .collect();
        for ((r, rel, s), exp) in &facts.tuples {
            let at = format!("tuple `{r}#{rel}@{s}`");
            let (Some(&rid), Some(&sid)) = (index.get(r.as_str()), index.get(s.as_str())) else {
                return Err(bad(
                    "facts.unknown_entity",
                    &at,
                    "the tuple names an unknown entity".into(),
                ));
            };
            // `index` and the per-entity vectors are filled together, one entry per entity.
            let (Some(&rt), Some(&st), Some(&local)) = (
                ent_type.get(rid as usize),
                ent_type.get(sid as usize),
                ent_local.get(rid as usize),
            ) else {
                return Err(bad(
                    "facts.internal",
                    &at,
                    "an entity without a type".into(),
                ));
            };
            let def = schema
                .ty(rt)
                .ok_or_else(|| bad("facts.unknown_type", &at, String::new()))?;
            let Some(ri) = def.rel(rel) else {
                let known: Vec<&str> = def.rels.iter().map(|r| r.name.as_str()).collect();
                return Err(bad(
                    "facts.unknown_relation",
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
                .ok_or_else(|| bad("facts.unknown_relation", &at, String::new()))?;
            if !rd.targets.contains(&st) {
                let accepted: Vec<&str> = rd
                    .targets
                    .iter()
                    .filter_map(|t| schema.ty(*t))
                    .map(|t| t.name.as_str())
                    .collect();
                let sn = schema.ty(st).map_or("?", |t| t.name.as_str());
                return Err(bad(
                    "facts.wrong_subject_type",
                    &at,
                    format!(
                        "`{}.{rel}` takes {}, not `{sn}`",
                        def.name,
                        accepted.join(" | ")
                    ),
                ));
            }
            if ent_account.get(rid as usize) != ent_account.get(sid as usize) {
                return Err(bad(
                    "facts.cross_account",
                    &at,
                    format!(
                        "`{r}` and `{s}` belong to different accounts: nothing links two accounts"
                    ),
                ));
            }
            let own = exp.unwrap_or(NEVER);
            let mut expiry = own;
            if let Some(u) = rd.until
                && let Some(Column::Time(v)) = types
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
            let Some(td) = types.get_mut(t) else { continue };
            let len = td.entities.len();
            let def = schema.types.get(t);
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
        // Authorisations by holder.
        let auth_ty = schema.builtins.authorization;
        let mut auth_edges = Vec::new();
        if let (Some(td), Some(def)) = (types.get(auth_ty as usize), schema.ty(auth_ty))
            && let Some(holder) = def.rel("holder").and_then(|h| td.rels.get(h as usize))
        {
            for (local, &aid) in td.entities.iter().enumerate() {
                for &h in holder.row(id32(local)) {
                    auth_edges.push((h, aid, NEVER));
                }
            }
        }
        let auth_by_holder = Csr::build(n, auth_edges);
        let counts = carried(&schema, &facts.counts, &types, |key| {
            let id = *index.get(key)?;
            Some((*ent_type.get(id as usize)?, *ent_local.get(id as usize)?))
        })?;
        // Account members.
        let n_accounts = types
            .get(account_ty as usize)
            .map_or(0, |t| t.entities.len());
        let mut account_members = vec![vec![Vec::new(); schema.types.len()]; n_accounts];
        for (id, (&a, &t)) in ent_account.iter().zip(&ent_type).enumerate() {
            let Some(&al) = ent_local.get(a as usize) else {
                return Err(bad(
                    "facts.internal",
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

    /// The subjects entity `e` holds through relations `rels` (of its type) at `now`, and
    /// the first instant after `now` at which one of their tuples ends, where the facts
    /// carry them as numbers; `None` where the tuples are to be counted.
    #[inline]
    pub(crate) fn carried_count(
        &self,
        e: u32,
        rels: &[(TypeId, u16)],
        now: i64,
    ) -> Option<(i64, i64)> {
        if self.counts.is_empty() {
            return None;
        }
        let ent = self.ent(e)?;
        let c = self.counts.iter().find(|c| {
            c.ty == ent.ty
                && rels
                    .iter()
                    .all(|&(t, r)| t == ent.ty && c.rels.contains(&r))
                && c.rels.iter().all(|r| rels.iter().any(|&(_, x)| x == *r))
        })?;
        let n = c
            .slot
            .get(ent.local as usize)
            .and_then(|&i| c.of.get(i as usize));
        Some(n.map_or((0, NEVER), |n| n.at(now)))
    }

    /// The time attribute `a` of entity `id`, if set.
    fn time_of(&self, id: u32, a: u16) -> Option<i64> {
        let e = self.ent(id)?;
        match self.types.get(e.ty as usize)?.columns.get(a as usize)? {
            Column::Time(v) => v.get(e.local as usize).copied().filter(|t| *t != NONE_I64),
            _ => None,
        }
    }

    /// Every certification authorisation and licence holds together: their categories
    /// are licence categories ([`LICENCE_CATEGORIES`]), and an authorisation resting on
    /// a licence does not outlast it.
    pub(crate) fn check_certifications(&self) -> Result<(), FactsError> {
        let b = &self.schema.builtins;
        let (aa, la) = (b.auth_attrs, b.licence_attrs);
        let known = |t: TypeId, a: u16, local: usize, id: u32| -> Result<(), FactsError> {
            for c in self.set_attr_strings(t, a, local) {
                if !LICENCE_CATEGORIES.contains(&c.as_str()) {
                    return Err(bad(
                        "facts.invalid_value",
                        &format!("entity `{}` attribute `categories`", self.name(id)),
                        format!(
                            "unknown licence category `{c}`: expected one of {}",
                            LICENCE_CATEGORIES.join(", ")
                        ),
                    ));
                }
            }
            Ok(())
        };
        let live = |t: TypeId| -> Vec<u32> {
            self.types
                .get(t as usize)
                .map(|x| x.entities.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|&e| self.type_of(e).is_some_and(|x| x != REMOVED))
                .collect()
        };
        for id in live(b.licence) {
            let local = self.ent(id).map_or(0, |e| e.local as usize);
            known(b.licence, la.categories, local, id)?;
        }
        for id in live(b.authorization) {
            let local = self.ent(id).map_or(0, |e| e.local as usize);
            known(b.authorization, aa.categories, local, id)?;
            let Some(csr) = self
                .types
                .get(b.authorization as usize)
                .and_then(|t| t.rels.get(aa.licence as usize))
            else {
                continue;
            };
            // A slice leaves out the validity of authorisations its principal does not
            // hold; only those whose validity is known are checked.
            let until_omitted = self.omits.contains(&(b.authorization, aa.valid_until));
            for &licence in csr.view(id32(local)).subjects {
                let Some(ends) = self.time_of(licence, la.valid_until) else {
                    continue;
                };
                let until = self.time_of(id, aa.valid_until);
                if until.is_none() && until_omitted {
                    continue;
                }
                if until.is_none_or(|u| u > ends) {
                    return Err(bad(
                        "facts.invalid_authorization",
                        &format!("entity `{}`", self.name(id)),
                        format!(
                            "the authorisation is valid until {}, after the licence `{}` it rests on ends ({}): an authorisation cannot outlast its licence",
                            until.map_or_else(|| "no end".to_string(), crate::time::format),
                            self.name(licence),
                            crate::time::format(ends)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Resolves custom roles and every principal's roles into shared grant sets.
    /// The account of entity `id`, which `build` gave every entity it holds.
    fn account_or_err(&self, id: u32, at: &str) -> Result<u32, FactsError> {
        self.account_of(id)
            .ok_or_else(|| bad("facts.internal", at, "an entity without an account".into()))
    }

    pub(crate) fn compile_roles(&mut self) -> Result<(), FactsError> {
        let schema = Arc::clone(&self.schema);
        let mut roles: Vec<AccountRole> = schema
            .roles
            .iter()
            .map(|r| AccountRole {
                name: r.name.clone(),
                account: None,
                matrix: r.matrix,
                cells: r.cells.clone(),
            })
            .collect();
        // Custom roles, per account: name -> index in `roles`.
        let mut custom: BTreeMap<(u32, String), usize> = BTreeMap::new();
        let role_ty = schema.builtins.role;
        if schema.ty(role_ty).is_none() {
            return Err(bad("facts.unknown_type", "role", "no role type".into()));
        }
        let a_matrix = schema.builtins.role_attrs.matrix;
        // In name order (the order of ids a build gives), without those removed since.
        let mut entities: Vec<(usize, u32)> = self
            .types
            .get(role_ty as usize)
            .map(|t| t.entities.iter().copied().enumerate().collect())
            .unwrap_or_default();
        entities.retain(|&(_, id)| self.type_of(id) == Some(role_ty));
        if entities.iter().any(|&(_, id)| id >= self.built) {
            entities.sort_by(|a, b| self.name(a.1).cmp(self.name(b.1)));
        }
        // Two passes so a custom role may extend another custom role declared later.
        let mut pending: Vec<(u32, usize)> = Vec::new();
        for &(local, id) in &entities {
            let name = self.names.get(id as usize).cloned().unwrap_or_default();
            let at = format!("entity `{name}`");
            let role_name = self.custom_role_name(id);
            let matrix_name = self.str_attr(role_ty, a_matrix, local).unwrap_or_default();
            let Some(&matrix) = schema.matrix_index.get(&matrix_name) else {
                let known: Vec<&str> = schema.matrix_index.keys().map(String::as_str).collect();
                return Err(bad(
                    "facts.invalid_role",
                    &at,
                    format!(
                        "unknown matrix `{matrix_name}`: expected one of {}",
                        known.join(", ")
                    ),
                ));
            };
            let account = self.account_or_err(id, &at)?;
            let idx = roles.len();
            roles.push(AccountRole {
                name: role_name.clone(),
                account: Some(account),
                matrix,
                cells: Vec::new(),
            });
            if custom.insert((account, role_name.clone()), idx).is_some() {
                return Err(bad(
                    "facts.invalid_role",
                    &at,
                    format!("another custom role of the account is named `{role_name}`"),
                ));
            }
            pending.push((id, local));
        }
        // Resolve `extends` in dependency order with a visiting set to refuse cycles.
        let mut done = vec![false; roles.len()];
        for (id, local) in pending.clone() {
            let mut stack = Vec::new();
            self.resolve_custom(
                id, local, &pending, &custom, &mut roles, &mut done, &mut stack,
            )?;
        }
        // Principals.
        let mut sets: Vec<GrantSet> = Vec::new();
        let mut set_index: BTreeMap<Vec<usize>, u32> = BTreeMap::new();
        for (t, def) in schema.types.iter().enumerate() {
            if !def.principal {
                continue;
            }
            let Some(roles_attr) = def.attr("roles") else {
                continue;
            };
            let ids = self
                .types
                .get(t)
                .map(|x| x.entities.clone())
                .unwrap_or_default();
            let mut grants = Vec::with_capacity(ids.len());
            for (local, &id) in ids.iter().enumerate() {
                if self.type_of(id) == Some(REMOVED) {
                    grants.push(0);
                    continue;
                }
                let account = self.account_or_err(id, "roles")?;
                let names = self.set_attr_strings(id16(t), roles_attr, local);
                let mut held = Vec::new();
                for rn in &names {
                    let r = custom
                        .get(&(account, rn.clone()))
                        .copied()
                        .or_else(|| schema.role_index.get(rn).map(|i| *i as usize));
                    match r {
                        Some(r) => held.push(r),
                        None => return Err(self.unknown_role(id, account, rn)),
                    }
                }
                held.sort_unstable();
                held.dedup();
                let gid = match set_index.get(&held) {
                    Some(g) => *g,
                    None => {
                        let g = id32(sets.len());
                        sets.push(grant_set(&schema, &roles, &held));
                        set_index.insert(held, g);
                        g
                    }
                };
                grants.push(gid);
            }
            if let Some(td) = self.types.get_mut(t) {
                td.grants = grants;
            }
        }
        self.grant_sets = sets;
        self.roles = roles;
        Ok(())
    }

    /// The name custom role `id` is held by: its id, less its account's id and a dot when
    /// it begins with them (`role:mro_north.shift_lead` is `shift_lead` of `mro_north`),
    /// so every account has its own role names and none can take another's.
    pub(crate) fn custom_role_name(&self, id: u32) -> String {
        let name = self.name(id);
        let bare = name.strip_prefix("role:").unwrap_or(name);
        let own = self
            .account_of(id)
            .map(|a| self.name(a))
            .and_then(|a| a.strip_prefix("account:"))
            .and_then(|a| bare.strip_prefix(a))
            .and_then(|rest| rest.strip_prefix('.'))
            .filter(|rest| !rest.is_empty());
        own.unwrap_or(bare).to_string()
    }

    #[allow(clippy::too_many_arguments)]
    fn resolve_custom(
        &self,
        id: u32,
        local: usize,
        pending: &[(u32, usize)],
        custom: &BTreeMap<(u32, String), usize>,
        roles: &mut [AccountRole],
        done: &mut [bool],
        stack: &mut Vec<u32>,
    ) -> Result<usize, FactsError> {
        let role_ty = self.schema.builtins.role;
        let attrs = self.schema.builtins.role_attrs;
        let name = self.names.get(id as usize).cloned().unwrap_or_default();
        let at = format!("entity `{name}`");
        let account = self.account_or_err(id, &at)?;
        let role_name = self.custom_role_name(id);
        let idx = *custom
            .get(&(account, role_name.clone()))
            .ok_or_else(|| bad("facts.invalid_role", &at, String::new()))?;
        if done.get(idx).copied().unwrap_or(false) {
            return Ok(idx);
        }
        if stack.len() >= MAX_EXTENDS {
            return Err(bad(
                "facts.invalid_role",
                &at,
                format!("role `{role_name}` extends a chain of more than {MAX_EXTENDS} roles"),
            ));
        }
        if stack.contains(&id) {
            return Err(bad(
                "facts.invalid_role",
                &at,
                format!("role `{role_name}` extends itself through a cycle"),
            ));
        }
        stack.push(id);
        let matrix = roles
            .get(idx)
            .map(|r| r.matrix)
            .ok_or_else(|| bad("facts.internal", &at, "a custom role out of range".into()))?;
        let mut inherited: Vec<CellDef> = Vec::new();
        if let Some(base) = self.str_attr(role_ty, attrs.extends, local) {
            // A custom role extends another custom role of its account, or a policy role.
            let base_idx = if base != role_name {
                match custom.get(&(account, base.clone())) {
                    Some(_) => {
                        let (bid, blocal) = pending
                            .iter()
                            .copied()
                            .find(|&(i, _)| {
                                self.account_of(i) == Some(account)
                                    && self.custom_role_name(i) == base
                            })
                            .ok_or_else(|| bad("facts.invalid_role", &at, String::new()))?;
                        Some(self.resolve_custom(bid, blocal, pending, custom, roles, done, stack)?)
                    }
                    None => None,
                }
            } else {
                None
            };
            let base_role = match base_idx {
                Some(b) => roles.get(b).cloned(),
                None => self
                    .schema
                    .role_index
                    .get(&base)
                    .and_then(|i| roles.get(*i as usize))
                    .cloned(),
            };
            let Some(b) = base_role else {
                return Err(bad(
                    "facts.invalid_role",
                    &format!("{at} attribute `extends`"),
                    format!("unknown role `{base}` to extend"),
                ));
            };
            if b.matrix != matrix {
                return Err(bad(
                    "facts.invalid_role",
                    &format!("{at} attribute `extends`"),
                    format!("role `{base}` is of another matrix"),
                ));
            }
            inherited = b.cells;
        }
        // Without `extends`, a custom role starts from no cells; one with a policy role's
        // name replaces that role for its account.
        let written = self.set_attr_strings(role_ty, attrs.cells, local);
        let mut cells = RoleCells::extending(inherited);
        for text in &written {
            let cat = format!("{at} cell `{text}`");
            let decl =
                parse_cell(&cat, text).map_err(|e| bad("facts.invalid_role", &cat, e.message))?;
            let cell = self
                .schema
                .compile_cell(matrix, &decl)
                .map_err(|e| bad("facts.invalid_role", &cat, e.message))?;
            if cells.write(cell).is_err() {
                return Err(bad(
                    "facts.invalid_role",
                    &cat,
                    "the row appears twice in the role".into(),
                ));
            }
        }
        if let Some(r) = roles.get_mut(idx) {
            r.cells = cells.into_cells();
        }
        if let Some(d) = done.get_mut(idx) {
            *d = true;
        }
        stack.pop();
        Ok(idx)
    }

    /// The error for principal `id` holding role `name`, unknown in `account`: it names
    /// every principal of the account that holds it (a custom role removed while held is
    /// refused so, naming whose roles to change first).
    pub(crate) fn unknown_role(&self, id: u32, account: u32, name: &str) -> FactsError {
        let mut holders = Vec::new();
        for (t, def) in self.schema.types.iter().enumerate() {
            let Some(attr) = def.attr("roles").filter(|_| def.principal) else {
                continue;
            };
            let ids = self.types.get(t).map_or(&[][..], |x| x.entities.as_slice());
            for (local, &e) in ids.iter().enumerate() {
                if self.type_of(e) != Some(REMOVED)
                    && self.account_of(e) == Some(account)
                    && self
                        .set_attr_strings(id16(t), attr, local)
                        .iter()
                        .any(|r| r == name)
                {
                    holders.push(self.name(e));
                }
            }
        }
        const LISTED: usize = 20;
        let mut who = holders
            .iter()
            .take(LISTED)
            .map(|h| format!("`{h}`"))
            .collect::<Vec<_>>()
            .join(", ");
        if holders.len() > LISTED {
            who.push_str(&format!(" and {} more", holders.len() - LISTED));
        }
        bad(
            "facts.unknown_role",
            &format!("entity `{}` attribute `roles`", self.name(id)),
            format!(
                "unknown role `{name}`, held by {who}: expected a role of the policy or a custom role of the account (a custom role still held cannot be removed: change the holders' roles first)"
            ),
        )
    }

    /// The strings of set attribute `a` of entity `local` of type `t` (none when it is
    /// not a set), sorted: what an error names first must not depend on the order in which
    /// the facts' strings were interned, which another account's strings change.
    pub(crate) fn set_attr_strings(&self, t: TypeId, a: u16, local: usize) -> Vec<String> {
        let mut out = self.set_attr_interned(t, a, local);
        out.sort_unstable();
        out
    }

    /// The strings of a set attribute in the order of their interning, which depends on
    /// every string of the facts (another account's too): not for an answer.
    fn set_attr_interned(&self, t: TypeId, a: u16, local: usize) -> Vec<String> {
        match self
            .types
            .get(t as usize)
            .and_then(|x| x.columns.get(a as usize))
        {
            Some(Column::Set(v)) => v
                .get(local)
                .map(|s| {
                    s.iter()
                        .filter_map(|i| self.strings.get(*i as usize).cloned())
                        .collect()
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    fn str_attr(&self, t: TypeId, a: u16, local: usize) -> Option<String> {
        match self.types.get(t as usize)?.columns.get(a as usize)? {
            Column::Str(v) => {
                let s = *v.get(local)?;
                if s == NONE_STR {
                    None
                } else {
                    self.strings.get(s as usize).cloned()
                }
            }
            _ => None,
        }
    }

    /// The entity id of `type:id`.
    pub fn entity(&self, key: &str) -> Option<u32> {
        self.index.get(key).copied()
    }

    /// The `type:id` of an entity.
    pub fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("?", String::as_str)
    }

    /// Where entity `e` is.
    #[inline]
    pub fn ent(&self, e: u32) -> Option<&Ent> {
        self.ents.get(e as usize)
    }

    /// The type of entity `e`.
    #[inline]
    pub fn type_of(&self, e: u32) -> Option<TypeId> {
        self.ent(e).map(|x| x.ty)
    }

    /// The index of entity `e` within its type.
    #[inline]
    pub fn local_of(&self, e: u32) -> Option<u32> {
        self.ent(e).map(|x| x.local)
    }

    /// The account of entity `e`.
    #[inline]
    pub fn account_of(&self, e: u32) -> Option<u32> {
        self.ent(e).map(|x| x.account)
    }

    /// How many relation rows were changed in place since the build.
    pub fn patched_rows(&self) -> usize {
        self.types
            .iter()
            .flat_map(|t| t.rels.iter())
            .chain(std::iter::once(&self.auth_by_holder))
            .map(|c| c.patches.len())
            .sum()
    }

    /// The number of tuples.
    pub fn tuple_count(&self) -> usize {
        self.types
            .iter()
            .flat_map(|t| t.rels.iter())
            .map(Csr::len)
            .sum()
    }

    /// Serialises the snapshot (the policy's sources included) to bytes: the format
    /// version first, then the snapshot.
    pub fn to_bytes(&self) -> Result<Vec<u8>, FactsError> {
        postcard::to_allocvec(&(SNAPSHOT_FORMAT, self))
            .map_err(|e| bad("snapshot.encode", "snapshot", e.to_string()))
    }

    /// Reads a snapshot from [`Snapshot::to_bytes`] output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Snapshot, FactsError> {
        let malformed = |m: String| bad("snapshot.malformed", "snapshot", m);
        let (format, rest) = postcard::take_from_bytes::<u32>(bytes)
            .map_err(|e| malformed(format!("not a snapshot: {e}")))?;
        if format != SNAPSHOT_FORMAT {
            return Err(malformed(format!(
                "snapshot format {format}, this core reads format {SNAPSHOT_FORMAT}"
            )));
        }
        let mut s: Snapshot = postcard::from_bytes(rest)
            .map_err(|e| malformed(format!("not a snapshot of this version: {e}")))?;
        s.schema = Schema::compile(&s.schema.sources)
            .map(Arc::new)
            .map_err(|e| malformed(format!("its policy does not compile: {e}")))?;
        if s.names.len() >= MAX_IDS as usize || s.strings.len() >= MAX_IDS as usize {
            return Err(malformed(format!(
                "more than {MAX_IDS} entities or strings"
            )));
        }
        s.string_index = s
            .strings
            .iter()
            .enumerate()
            .map(|(i, x)| (x.clone(), id32(i)))
            .collect();
        s.index = s
            .names
            .iter()
            .zip(&s.ents)
            .enumerate()
            .filter(|(_, (_, e))| e.ty != REMOVED)
            .map(|(i, (x, _))| (CompactString::from(x.as_str()), id32(i)))
            .collect();
        Ok(s)
    }
}

pub(crate) fn describe_col(c: &Column) -> &'static str {
    match c {
        Column::Bool(_) => "bool",
        Column::Int(_) => "int",
        Column::Str(_) => "string",
        Column::Time(_) => "timestamp",
        Column::Enum(_) => "enum",
        Column::Set(_) => "set<string>",
    }
}

pub(crate) fn set_value(
    col: &mut Column,
    i: usize,
    ty: &ValueType,
    v: &Value,
    strings: &mut Interner,
) -> Result<(), String> {
    // The value as compact JSON text (not `Value`'s `Display`, whose pretty-printing
    // variant would cost the wasm module a second JSON writer).
    let mismatch = || {
        format!(
            "expected a {} value, found `{}`",
            describe_ty(ty),
            serde_json::to_string(v).unwrap_or_default()
        )
    };
    if v.is_null() {
        return Ok(());
    }
    match (col, ty) {
        (Column::Bool(c), _) => {
            let b = v.as_bool().ok_or_else(mismatch)?;
            if let Some(x) = c.get_mut(i) {
                *x = b as u8;
            }
        }
        (Column::Int(c), _) => {
            let n = v.as_i64().ok_or_else(mismatch)?;
            if n == NONE_I64 {
                return Err(mismatch());
            }
            if let Some(x) = c.get_mut(i) {
                *x = n;
            }
        }
        (Column::Str(c), _) => {
            let s = v.as_str().ok_or_else(mismatch)?;
            if let Some(x) = c.get_mut(i) {
                *x = strings.id(s)?;
            }
        }
        (Column::Time(c), _) => {
            let t = match v {
                Value::Number(n) => n.as_i64().ok_or_else(mismatch)?,
                Value::String(s) => crate::time::parse(s)?,
                _ => return Err(mismatch()),
            };
            if let Some(x) = c.get_mut(i) {
                *x = t;
            }
        }
        (Column::Enum(c), ValueType::Enum(values)) => {
            let s = v.as_str().ok_or_else(mismatch)?;
            let p = values.iter().position(|x| x == s).ok_or_else(|| {
                format!("unknown value `{s}`: expected one of {}", values.join(", "))
            })?;
            if let Some(x) = c.get_mut(i) {
                *x = u8::try_from(p).map_err(|_| format!("enum value `{s}` past 255"))?;
            }
        }
        (Column::Set(c), _) => {
            let arr = v.as_array().ok_or_else(mismatch)?;
            let mut ids = Vec::with_capacity(arr.len());
            for item in arr {
                ids.push(strings.id(item.as_str().ok_or_else(mismatch)?)?);
            }
            ids.sort_unstable();
            ids.dedup();
            if let Some(x) = c.get_mut(i) {
                *x = ids.into_boxed_slice();
            }
        }
        (Column::Enum(_), _) => return Err(mismatch()),
    }
    Ok(())
}

fn describe_ty(t: &ValueType) -> String {
    match t {
        ValueType::Bool => "bool".into(),
        ValueType::Int => "int".into(),
        ValueType::Str => "string".into(),
        ValueType::Time => "timestamp (RFC 3339 text or seconds)".into(),
        ValueType::StrSet => "set<string> (an array of strings)".into(),
        ValueType::Enum(v) => format!("enum ({})", v.join(", ")),
    }
}

pub(crate) fn grant_set(schema: &Schema, roles: &[AccountRole], held: &[usize]) -> GrantSet {
    let mut matrices: Vec<MatrixGrant> = schema
        .matrices
        .iter()
        .map(|m| MatrixGrant {
            has_role: false,
            record: vec![0; m.rows.len()],
            page: vec![0; m.rows.len()],
            scoped: Vec::new(),
        })
        .collect();
    for &r in held {
        let Some(role) = roles.get(r) else { continue };
        let Some(g) = matrices.get_mut(role.matrix as usize) else {
            continue;
        };
        g.has_role = true;
        for c in &role.cells {
            if let Some(p) = g.page.get_mut(c.row as usize) {
                *p |= c.page;
            }
            if c.scopes.is_empty() {
                if let Some(x) = g.record.get_mut(c.row as usize) {
                    *x |= c.record;
                }
            } else {
                g.scoped.push(ScopedGrant {
                    row: c.row,
                    record: c.record,
                    scopes: c.scopes.clone(),
                });
            }
        }
    }
    GrantSet { matrices }
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
        let invalid = |m: String| Err(bad("facts.invalid_value", &at, m));
        let Some((ty, def)) = schema.type_id(&c.ty).and_then(|t| Some((t, schema.ty(t)?))) else {
            return Err(bad(
                "facts.unknown_type",
                &at,
                format!("unknown type `{}`", c.ty),
            ));
        };
        let mut rels = Vec::with_capacity(c.relations.len());
        for name in &c.relations {
            let Some(r) = def.rel(name) else {
                return Err(bad(
                    "facts.unknown_relation",
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
            let invalid = |m: String| Err(bad("facts.invalid_value", &eat, m));
            let Some(s) = entity(&key)
                .filter(|(t, _)| *t == ty)
                .and_then(|(_, local)| slot.get_mut(local as usize))
            else {
                return Err(bad(
                    "facts.unknown_entity",
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
