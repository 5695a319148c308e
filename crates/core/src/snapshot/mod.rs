//! Snapshots: facts validated against a policy and compiled to dense ids, columns,
//! indexed relations and role bitsets, ready to decide requests.
//!
//! This file holds the snapshot's types and what reads them; [`build`] makes one from
//! facts, [`roles`] compiles roles into grant sets, [`aviation`] holds the licence rules.

pub mod aviation;
pub mod build;
pub mod roles;

use crate::error::ErrorCode;
use crate::error::FactsError;
use crate::facts::EntityCount;
use crate::policy::{CellDef, Schema, TypeId, ValueType};
use compact_str::CompactString;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
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

pub(crate) fn bad(code: ErrorCode, at: &str, msg: String) -> FactsError {
    FactsError {
        code,
        at: at.to_string(),
        message: msg,
    }
}

impl Snapshot {
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
            .map_err(|e| bad(ErrorCode::SnapshotEncode, "snapshot", e.to_string()))
    }

    /// Reads a snapshot from [`Snapshot::to_bytes`] output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Snapshot, FactsError> {
        let malformed = |m: String| bad(ErrorCode::SnapshotMalformed, "snapshot", m);
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
