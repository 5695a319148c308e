//! Facts: entities with attributes and relationship tuples, their JSON format, and
//! deltas that change them, each applied list bumping the revision.

use crate::error::ErrorCode;
use crate::error::FactsError;
use crate::time::{NEVER, TimeValue};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// An entity as written in facts and deltas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct EntityJson {
    /// Its type.
    #[serde(rename = "type")]
    pub ty: String,
    /// Its id, unique within the type.
    pub id: String,
    /// Its account's id (an account names itself or omits this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Attribute values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, Value>,
}

/// A relationship tuple as written in facts and deltas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TupleJson {
    /// The entity, `type:id`.
    pub resource: String,
    /// The relation of the entity's type.
    pub relation: String,
    /// The subject, `type:id`.
    pub subject: String,
    /// When the tuple ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<TimeValue>,
}

/// The facts file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FactsJson {
    /// The revision of these facts.
    #[serde(default)]
    pub revision: u64,
    /// Entities.
    #[serde(default)]
    pub entities: Vec<EntityJson>,
    /// Tuples.
    #[serde(default)]
    pub tuples: Vec<TupleJson>,
    /// Attributes these facts leave out: by type name, an array of attribute names. A
    /// principal slice omits what no rule reads for that principal, and a snapshot then
    /// accepts an entity of the type without a listed attribute even where the policy
    /// requires it. (JSON values, as attributes are, so that the module reads them with
    /// the reader it has.)
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub omitted: BTreeMap<String, Value>,
    /// Relations these facts carry as numbers in place of their tuples: a principal slice
    /// holds, of a relation the policy reads only through `count(...)`, how many subjects
    /// each entity has, not who they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counts: Vec<CountsJson>,
}

/// One change: `{"op": "add_entity" | "remove_entity" | "set_attr" | "add_tuple" |
/// "remove_tuple", ...}` with that op's fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "op", rename_all = "snake_case")]
// Read through `DeltaFields`, which takes no other field.
#[cfg_attr(feature = "schema", schemars(deny_unknown_fields))]
pub enum Delta {
    /// Adds an entity.
    AddEntity {
        /// The entity.
        entity: EntityJson,
    },
    /// Removes an entity and every tuple naming it.
    RemoveEntity {
        /// `type:id`
        entity: String,
    },
    /// Sets (or with `null`, clears) an attribute.
    SetAttr {
        /// `type:id`
        entity: String,
        /// The attribute.
        attr: String,
        /// The value.
        value: Value,
    },
    /// Adds a tuple (or changes its expiry).
    AddTuple {
        /// The tuple.
        tuple: TupleJson,
    },
    /// Removes a tuple.
    RemoveTuple {
        /// The tuple (its expiry is ignored).
        tuple: TupleJson,
    },
}

/// The fields any delta may carry; [`Delta`]'s reader checks which its op takes. Read
/// this way rather than through serde's internally tagged enums, which buffer every delta
/// into an intermediate tree and cost the wasm module a second deserializer per type.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeltaFields {
    op: String,
    entity: Option<EntityField>,
    attr: Option<String>,
    // Present and `null` (clear the attribute) differs from absent.
    #[serde(default, deserialize_with = "present")]
    value: Option<Value>,
    tuple: Option<TupleJson>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Checks which fields of a JSON object read op first are present: every `required` one,
/// and none but those and the `optional` ones. `what` names the object in the error, e.g.
/// ``the delta `set_attr` ``.
pub fn check_fields(
    what: &str,
    present: &[(&str, bool)],
    required: &[&str],
    optional: &[&str],
) -> Result<(), String> {
    for &(name, is) in present {
        if is && !required.contains(&name) && !optional.contains(&name) {
            return Err(format!("{what} takes no field `{name}`"));
        }
        if !is && required.contains(&name) {
            return Err(format!("{what} needs the field `{name}`"));
        }
    }
    Ok(())
}

/// `entity`: a whole entity (`add_entity`) or a `type:id` (the others).
enum EntityField {
    Record(EntityJson),
    Name(String),
}

impl<'de> Deserialize<'de> for EntityField {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = EntityField;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an entity object or a `type:id`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EntityField, E> {
                Ok(EntityField::Name(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<EntityField, A::Error> {
                EntityJson::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(EntityField::Record)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Delta {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let f = DeltaFields::deserialize(d)?;
        let op = f.op.as_str();
        let fields: [(&str, bool); 4] = [
            ("entity", f.entity.is_some()),
            ("attr", f.attr.is_some()),
            ("value", f.value.is_some()),
            ("tuple", f.tuple.is_some()),
        ];
        let takes: &[&str] = match op {
            "add_entity" | "remove_entity" => &["entity"],
            "set_attr" => &["entity", "attr", "value"],
            "add_tuple" | "remove_tuple" => &["tuple"],
            _ => {
                return Err(D::Error::custom(format!(
                    "unknown delta op `{op}`, expected one of add_entity, remove_entity, set_attr, add_tuple, remove_tuple"
                )));
            }
        };
        check_fields(&format!("the delta `{op}`"), &fields, takes, &[])
            .map_err(D::Error::custom)?;
        let wrong =
            |want: &str| D::Error::custom(format!("the delta `{op}` needs {want} as `entity`"));
        Ok(match (op, f.entity, f.tuple) {
            ("add_entity", Some(EntityField::Record(entity)), _) => Delta::AddEntity { entity },
            ("add_entity", _, _) => return Err(wrong("an entity object")),
            ("remove_entity", Some(EntityField::Name(entity)), _) => Delta::RemoveEntity { entity },
            ("set_attr", Some(EntityField::Name(entity)), _) => Delta::SetAttr {
                entity,
                attr: f.attr.unwrap_or_default(),
                value: f.value.unwrap_or_default(),
            },
            ("remove_entity" | "set_attr", _, _) => return Err(wrong("a `type:id`")),
            ("add_tuple", _, Some(tuple)) => Delta::AddTuple { tuple },
            (_, _, Some(tuple)) => Delta::RemoveTuple { tuple },
            _ => {
                return Err(D::Error::custom(format!(
                    "the delta `{op}` needs the field `tuple`"
                )));
            }
        })
    }
}

/// An entity held in [`Facts`].
#[derive(Debug, Clone, PartialEq)]
pub struct EntityRecord {
    /// Its type.
    pub ty: String,
    /// Its id.
    pub id: String,
    /// Its account id.
    pub account: String,
    /// Attribute values as JSON.
    pub attrs: BTreeMap<String, Value>,
}

/// The key of a tuple: resource, relation, subject.
pub type TupleKey = (String, String, String);

/// The facts of every account, at a revision. Validation against a policy happens when a
/// snapshot is built from them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    /// The revision: bumped by every applied list of deltas.
    pub revision: u64,
    /// Entities by `type:id`.
    pub entities: BTreeMap<String, EntityRecord>,
    /// Tuples, with their expiry in seconds.
    pub tuples: BTreeMap<TupleKey, Option<i64>>,
    /// Attributes left out, by type name, each an array of attribute names
    /// ([`FactsJson::omitted`]).
    pub omitted: BTreeMap<String, Value>,
    /// Relations carried as numbers ([`FactsJson::counts`]).
    pub counts: Vec<CountsJson>,
}

/// The tuples naming as their subject the entities a list of changes removes, as found
/// before the changes ([`Facts::removals`]); kept up to date by
/// [`Facts::extend_found`] as the changes are applied.
#[derive(Debug, Clone, Default)]
pub struct Removals {
    /// The revision of the facts they were found on.
    revision: u64,
    /// By entity removed: the tuples naming it as their subject.
    naming: FxHashMap<String, Vec<TupleKey>>,
}

impl Removals {
    /// The revision of the facts they were found on.
    pub fn revision(&self) -> u64 {
        self.revision
    }
}

/// The longest id a delta may give a new entity, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Whether `id` may name a new entity: 1 to [`MAX_ID_LEN`] ASCII letters, digits, `_`, `-`
/// and `.`. So an id never holds the `:`, `#` and `@` that tuples are written with, a line
/// break, or a character that looks like another; ids loaded from facts already stored are
/// not held to it. `Err` says what is wrong.
pub fn valid_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(format!(
            "an id has 1 to {MAX_ID_LEN} characters, got {}",
            id.len()
        ));
    }
    match id
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        Some((at, c)) => Err(format!(
            "the id `{}` has {c:?} at byte {at}: an id is made of ASCII letters, digits, `_`, `-` and `.`",
            id.escape_default()
        )),
        None => Ok(()),
    }
}

/// `type:id` of an entity.
pub fn entity_key(ty: &str, id: &str) -> String {
    format!("{ty}:{id}")
}

fn duplicate(i: usize, record: &EntityRecord) -> FactsError {
    FactsError::new(
        ErrorCode::FactsDuplicateEntity,
        format!("entities[{i}]"),
        format!("entity `{}:{}` already exists", record.ty, record.id),
    )
}

/// An entity as held, with its key; or the error's code and message.
fn entity_record(e: EntityJson) -> Result<(String, EntityRecord), (ErrorCode, String)> {
    if e.ty.is_empty() || e.id.is_empty() || e.ty.contains(':') {
        return Err((
            ErrorCode::FactsInvalidEntity,
            "expected a non-empty `type` without `:` and a non-empty `id`".into(),
        ));
    }
    let account = match (e.ty.as_str(), e.account) {
        ("account", None) => e.id.clone(),
        ("account", Some(a)) if a == e.id => a,
        ("account", Some(a)) => {
            return Err((
                ErrorCode::FactsInvalidEntity,
                format!(
                    "account `{}` names another account `{a}`: an account belongs to itself",
                    e.id
                ),
            ));
        }
        (_, Some(a)) => a,
        (_, None) => {
            return Err((
                ErrorCode::FactsMissingAccount,
                format!(
                    "entity `{}:{}` names no `account`: every entity belongs to exactly one account",
                    e.ty, e.id
                ),
            ));
        }
    };
    let key = entity_key(&e.ty, &e.id);
    Ok((
        key,
        EntityRecord {
            ty: e.ty,
            id: e.id,
            account,
            attrs: e.attrs,
        },
    ))
}

/// A tuple's expiry, once both its ends are among `entities`; or the error's code and
/// message.
fn tuple_checked(
    exists: impl Fn(&str) -> bool,
    t: &TupleJson,
) -> Result<Option<i64>, (ErrorCode, String)> {
    for end in [&t.resource, &t.subject] {
        if !exists(end) {
            return Err((
                ErrorCode::FactsUnknownEntity,
                format!("tuple names unknown entity `{end}`"),
            ));
        }
    }
    t.expires
        .as_ref()
        .map(|v| v.seconds().map_err(|m| (ErrorCode::FactsInvalidValue, m)))
        .transpose()
}

impl Facts {
    /// Reads facts from JSON text.
    pub fn from_json(text: &str) -> Result<Facts, FactsError> {
        let doc: FactsJson = serde_json::from_str(text).map_err(|e| {
            FactsError::new(
                ErrorCode::FactsMalformed,
                format!("line {} column {}", e.line(), e.column()),
                format!("malformed facts JSON: {e}"),
            )
        })?;
        Facts::from_doc(doc)
    }

    /// Builds facts from the parsed JSON document.
    pub fn from_doc(doc: FactsJson) -> Result<Facts, FactsError> {
        for (ty, names) in &doc.omitted {
            let names = names.as_array().map(|v| v.iter().all(Value::is_string));
            if names != Some(true) {
                return Err(FactsError::new(
                    ErrorCode::FactsInvalidValue,
                    format!("omitted `{ty}`"),
                    "expected an array of attribute names",
                ));
            }
        }
        #[cfg(not(target_arch = "wasm32"))]
        return Facts::from_doc_sorted(doc);
        #[cfg(target_arch = "wasm32")]
        return Facts::from_doc_in_order(doc);
    }

    /// [`Facts::from_doc`] one row at a time: small code, for the module, whose
    /// documents are slices.
    #[doc(hidden)]
    pub fn from_doc_in_order(doc: FactsJson) -> Result<Facts, FactsError> {
        let mut entities = BTreeMap::new();
        for (i, e) in doc.entities.into_iter().enumerate() {
            let at = || format!("entities[{i}]");
            let (key, record) =
                entity_record(e).map_err(|(code, m)| FactsError::new(code, at(), m))?;
            if let Some(record) = entities.insert(key, record) {
                return Err(duplicate(i, &record));
            }
        }
        let mut tuples = BTreeMap::new();
        for (i, t) in doc.tuples.into_iter().enumerate() {
            let expires = tuple_checked(|k| entities.contains_key(k), &t)
                .map_err(|(code, m)| FactsError::new(code, format!("tuples[{i}]"), m))?;
            tuples.insert((t.resource, t.relation, t.subject), expires);
        }
        Ok(Facts {
            revision: doc.revision,
            omitted: doc.omitted,
            counts: doc.counts,
            entities,
            tuples,
        })
    }

    /// [`Facts::from_doc`] in bulk: the rows sorted by key (a document this crate wrote
    /// is sorted already), each map built from its sorted rows in one pass. About a third
    /// faster than one row at a time at a million entities, and about 37 KB of code
    /// (the sorts), so native only. Answers exactly what [`Facts::from_doc_in_order`]
    /// answers, the first error in document order included.
    #[doc(hidden)]
    pub fn from_doc_sorted(doc: FactsJson) -> Result<Facts, FactsError> {
        let mut entities = Vec::with_capacity(doc.entities.len());
        let mut invalid = None;
        for (i, e) in doc.entities.into_iter().enumerate() {
            match entity_record(e) {
                Ok((key, record)) => entities.push((key, record, i)),
                Err((code, m)) => {
                    invalid = Some(FactsError::new(code, format!("entities[{i}]"), m));
                    break;
                }
            }
        }
        // Of equal keys, the later document position is the duplicate; the first one in
        // the document wins, before an invalid entity further on.
        entities.sort_by(|a, b| a.0.cmp(&b.0));
        let first_duplicate = entities
            .windows(2)
            .filter_map(|w| match w {
                [a, b] if a.0 == b.0 => Some(a.2.max(b.2)),
                _ => None,
            })
            .min();
        if let Some(i) = first_duplicate
            && let Some((_, record, _)) = entities.iter().find(|e| e.2 == i)
        {
            return Err(duplicate(i, record));
        }
        if let Some(e) = invalid {
            return Err(e);
        }
        let entities: BTreeMap<String, EntityRecord> =
            entities.into_iter().map(|(k, r, _)| (k, r)).collect();
        let keys: rustc_hash::FxHashSet<&str> = entities.keys().map(String::as_str).collect();
        let mut tuples = Vec::with_capacity(doc.tuples.len());
        for (i, t) in doc.tuples.into_iter().enumerate() {
            let expires = tuple_checked(|k| keys.contains(k), &t)
                .map_err(|(code, m)| FactsError::new(code, format!("tuples[{i}]"), m))?;
            tuples.push(((t.resource, t.relation, t.subject), expires));
        }
        drop(keys);
        // Stable: of two equal tuples the later is kept, as inserting in order does.
        tuples.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Facts {
            revision: doc.revision,
            omitted: doc.omitted,
            counts: doc.counts,
            entities,
            tuples: tuples.into_iter().collect(),
        })
    }

    /// The facts as a JSON document.
    pub fn to_doc(&self) -> FactsJson {
        FactsJson {
            revision: self.revision,
            entities: self
                .entities
                .values()
                .map(|e| EntityJson {
                    ty: e.ty.clone(),
                    id: e.id.clone(),
                    account: if e.ty == "account" {
                        None
                    } else {
                        Some(e.account.clone())
                    },
                    attrs: e.attrs.clone(),
                })
                .collect(),
            tuples: self
                .tuples
                .iter()
                .map(|((r, rel, s), exp)| TupleJson {
                    resource: r.clone(),
                    relation: rel.clone(),
                    subject: s.clone(),
                    expires: exp.map(TimeValue::Seconds),
                })
                .collect(),
            omitted: self.omitted.clone(),
            counts: self.counts.clone(),
        }
    }

    /// The facts as a JSON document, serialized straight from the facts: the same
    /// document as [`Facts::into_doc`]'s, with nothing copied and nothing taken apart, so
    /// that writing the facts of a large world costs no memory beside them.
    pub fn doc(&self) -> FactsDoc<'_> {
        FactsDoc(self)
    }

    /// The facts as a JSON document, taken apart rather than copied.
    pub fn into_doc(self) -> FactsJson {
        FactsJson {
            revision: self.revision,
            entities: self
                .entities
                .into_values()
                .map(|e| EntityJson {
                    account: if e.ty == "account" {
                        None
                    } else {
                        Some(e.account)
                    },
                    ty: e.ty,
                    id: e.id,
                    attrs: e.attrs,
                })
                .collect(),
            tuples: self
                .tuples
                .into_iter()
                .map(|((resource, relation, subject), exp)| TupleJson {
                    resource,
                    relation,
                    subject,
                    expires: exp.map(TimeValue::Seconds),
                })
                .collect(),
            omitted: self.omitted,
            counts: self.counts,
        }
    }

    /// Whether these facts leave out attribute `attr` of type `ty` (`omitted`).
    pub fn omits(&self, ty: &str, attr: &str) -> bool {
        self.omitted
            .get(ty)
            .and_then(Value::as_array)
            .is_some_and(|names| names.iter().any(|n| n.as_str() == Some(attr)))
    }

    /// Adds an entity (a delta's: its id must be a [`valid_id`]); `at` names it in errors.
    pub fn add_entity(&mut self, e: EntityJson, at: &str) -> Result<(), FactsError> {
        valid_id(&e.id).map_err(|m| FactsError::new(ErrorCode::FactsInvalidId, at, m))?;
        let (key, record) = entity_record(e).map_err(|(code, m)| FactsError::new(code, at, m))?;
        if self.entities.contains_key(&key) {
            return Err(FactsError::new(
                ErrorCode::FactsDuplicateEntity,
                at,
                format!("entity `{key}` already exists"),
            ));
        }
        self.entities.insert(key, record);
        Ok(())
    }

    /// Adds a tuple (both ends must exist); `at` names it in errors.
    pub fn add_tuple(&mut self, t: TupleJson, at: &str) -> Result<(), FactsError> {
        let expires = tuple_checked(|k| self.entities.contains_key(k), &t)
            .map_err(|(code, m)| FactsError::new(code, at, m))?;
        self.tuples
            .insert((t.resource, t.relation, t.subject), expires);
        Ok(())
    }

    /// Applies deltas to a copy of these facts, all or nothing, bumping the revision once.
    /// The caller validates the result against the policy by building a snapshot.
    pub fn apply(&self, deltas: &[Delta]) -> Result<Facts, FactsError> {
        let mut f = self.clone();
        f.extend(deltas)?;
        f.revision = self.revision + 1;
        Ok(f)
    }

    /// Applies deltas to these facts in place, in the same revision. On an error the
    /// facts are left part-way: callers apply to a copy ([`Facts::apply`]) or drop them.
    pub fn extend(&mut self, deltas: &[Delta]) -> Result<(), FactsError> {
        // Natively, the tuples naming entities removed are found in one pass first. The
        // module's facts are a slice, where a pass per entity removed costs little and
        // the smaller code counts.
        #[cfg(not(target_arch = "wasm32"))]
        let mut removals = self.removals([deltas]);
        #[cfg(target_arch = "wasm32")]
        let mut removals = Removals::default();
        self.extend_found(deltas, &mut removals)
    }

    /// The tuples naming as their subject an entity that `changes` remove, found in one
    /// pass over the tuples, for [`Facts::extend_found`]. A reader can find them while
    /// others read, so that the changes then hold the facts only for what they change.
    pub fn removals<'a>(&self, changes: impl IntoIterator<Item = &'a [Delta]>) -> Removals {
        let mut naming: FxHashMap<String, Vec<TupleKey>> = FxHashMap::default();
        for d in changes.into_iter().flatten() {
            if let Delta::RemoveEntity { entity } = d {
                naming.entry(entity.clone()).or_default();
            }
        }
        let one = naming.len() == 1;
        match naming.iter_mut().next() {
            // One entity removed (the usual case): a comparison per tuple, not a lookup.
            Some((entity, found)) if one => {
                found.extend(self.tuples.keys().filter(|k| k.2 == *entity).cloned())
            }
            Some(_) => {
                for key in self.tuples.keys() {
                    if let Some(found) = naming.get_mut(&key.2) {
                        found.push(key.clone());
                    }
                }
            }
            None => {}
        }
        Removals {
            revision: self.revision,
            naming,
        }
    }

    /// [`Facts::extend`], with the tuples naming removed entities found beforehand by
    /// [`Facts::removals`] on these facts, for these deltas (or for a list of changes that
    /// begins with them, applied in order). Costs what the deltas change, times a log
    /// factor. An entity removed that `removals` did not look for is found by a pass
    /// over the tuples. The facts must not have changed otherwise since `removals` were
    /// found ([`Removals::revision`]).
    pub fn extend_found(
        &mut self,
        deltas: &[Delta],
        removals: &mut Removals,
    ) -> Result<(), FactsError> {
        let f = self;
        for (i, d) in deltas.iter().enumerate() {
            let at = format!("deltas[{i}]");
            match d.clone() {
                Delta::AddEntity { entity } => f.add_entity(entity, &at)?,
                Delta::RemoveEntity { entity } => {
                    let Some(gone) = f.entities.remove(&entity) else {
                        return Err(FactsError::new(
                            ErrorCode::FactsUnknownEntity,
                            at,
                            format!("no entity `{entity}` to remove"),
                        ));
                    };
                    // Its counts go with its tuples.
                    for c in f.counts.iter_mut().filter(|c| c.ty == gone.ty) {
                        c.of.retain(|n| n.id != gone.id);
                    }
                    // Its tuples as resource: a range of the map.
                    let start = (entity.clone(), String::new(), String::new());
                    let own: Vec<TupleKey> = f
                        .tuples
                        .range(start..)
                        .map(|(k, _)| k)
                        .take_while(|k| k.0 == entity)
                        .cloned()
                        .collect();
                    for k in &own {
                        f.tuples.remove(k);
                    }
                    // Its tuples as subject: found beforehand, or added since.
                    match removals.naming.get_mut(&entity) {
                        Some(found) => {
                            for k in found.drain(..) {
                                f.tuples.remove(&k);
                            }
                        }
                        None => f.tuples.retain(|(_, _, s), _| *s != entity),
                    }
                }
                Delta::SetAttr {
                    entity,
                    attr,
                    value,
                } => {
                    let Some(e) = f.entities.get_mut(&entity) else {
                        return Err(FactsError::new(
                            ErrorCode::FactsUnknownEntity,
                            at,
                            format!("no entity `{entity}`"),
                        ));
                    };
                    if value.is_null() {
                        e.attrs.remove(&attr);
                    } else {
                        e.attrs.insert(attr, value);
                    }
                }
                Delta::AddTuple { tuple } => {
                    if let Some(found) = removals.naming.get_mut(&tuple.subject) {
                        found.push((
                            tuple.resource.clone(),
                            tuple.relation.clone(),
                            tuple.subject.clone(),
                        ));
                    }
                    f.add_tuple(tuple, &at)?;
                }
                Delta::RemoveTuple { tuple } => {
                    let key = (tuple.resource, tuple.relation, tuple.subject);
                    if f.tuples.remove(&key).is_none() {
                        return Err(FactsError::new(
                            ErrorCode::FactsUnknownTuple,
                            at,
                            format!("no tuple `{}#{}@{}` to remove", key.0, key.1, key.2),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// [`Facts::doc`]: the facts, serialized as a [`FactsJson`].
#[derive(Debug, Clone, Copy)]
pub struct FactsDoc<'a>(&'a Facts);

impl Serialize for FactsDoc<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        #[derive(Serialize)]
        struct Entity<'a> {
            #[serde(rename = "type")]
            ty: &'a str,
            id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            account: Option<&'a str>,
            #[serde(skip_serializing_if = "BTreeMap::is_empty")]
            attrs: &'a BTreeMap<String, Value>,
        }
        #[derive(Serialize)]
        struct Tuple<'a> {
            resource: &'a str,
            relation: &'a str,
            subject: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            expires: Option<TimeValue>,
        }
        /// A sequence serialized from the items a function gives.
        struct Seq<F>(F);
        impl<T: Serialize, I: Iterator<Item = T>, F: Fn() -> I> Serialize for Seq<F> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq((self.0)())
            }
        }
        let facts = self.0;
        let fields =
            3 + usize::from(!facts.omitted.is_empty()) + usize::from(!facts.counts.is_empty());
        let mut doc = s.serialize_struct("FactsJson", fields)?;
        doc.serialize_field("revision", &facts.revision)?;
        let entities = || {
            facts.entities.values().map(|e| Entity {
                ty: &e.ty,
                id: &e.id,
                account: (e.ty != "account").then_some(e.account.as_str()),
                attrs: &e.attrs,
            })
        };
        doc.serialize_field("entities", &Seq(entities))?;
        let tuples = || {
            facts.tuples.iter().map(|((r, rel, sub), exp)| Tuple {
                resource: r,
                relation: rel,
                subject: sub,
                expires: exp.map(TimeValue::Seconds),
            })
        };
        doc.serialize_field("tuples", &Seq(tuples))?;
        if !facts.omitted.is_empty() {
            doc.serialize_field("omitted", &facts.omitted)?;
        }
        if !facts.counts.is_empty() {
            doc.serialize_field("counts", &facts.counts)?;
        }
        doc.end()
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_ID_LEN, valid_id};

    #[test]
    fn the_borrowed_document_is_the_document() {
        use crate::facts::{Facts, FactsJson};
        let doc: FactsJson = serde_json::from_value(serde_json::json!({
            "revision": 7,
            "entities": [
                { "type": "account", "id": "a1", "attrs": { "name": "A" } },
                { "type": "event", "id": "e1", "account": "a1" },
                { "type": "user", "id": "u1", "account": "a1", "attrs": { "n": 1, "t": [1, 2] } }
            ],
            "tuples": [
                { "resource": "event:e1", "relation": "owner", "subject": "user:u1" },
                { "resource": "event:e1", "relation": "viewer", "subject": "user:u1", "expires": 1800000000 }
            ],
            "omitted": { "user": ["phone"] }
        }))
        .unwrap();
        let facts = Facts::from_doc(doc).unwrap();
        let borrowed = serde_json::to_string(&facts.doc()).unwrap();
        let owned = serde_json::to_string(&facts.clone().into_doc()).unwrap();
        assert_eq!(borrowed, owned);
        assert!(borrowed.contains("\"omitted\""), "{borrowed}");
    }

    #[test]
    fn an_id_is_plain_ascii_of_bounded_length() {
        for bad in [
            "",
            "a\nb",
            "x#guest@user:ops_manager",
            "g_sms\u{200b}",
            "é",
            "a b",
            "a/b",
        ] {
            assert!(valid_id(bad).is_err(), "{bad:?}");
        }
        assert!(valid_id(&"x".repeat(MAX_ID_LEN + 1)).is_err());
        for good in ["g_new-1.2", "a", "A9", &"x".repeat(MAX_ID_LEN)] {
            assert_eq!(valid_id(good), Ok(()), "{good:?}");
        }
    }
}

/// Relations of one type counted together, carried as numbers in place of their tuples
/// (the `counts` of facts): what a `count(...)` of those relations needs, of each entity
/// of the type, without the names of the subjects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CountsJson {
    /// The type whose entities hold the relations.
    #[serde(rename = "type")]
    pub ty: String,
    /// The relations, counted together: a subject of several of them counts once.
    pub relations: Vec<String>,
    /// The subjects of each entity of the type that has any, in the order of their ids;
    /// every other entity of the type has none.
    #[serde(default)]
    pub of: Vec<EntityCount>,
}

/// The subjects an entity holds through a set of counted relations, without their names.
/// A subject counts while one of its tuples of those relations has not ended: at `now`,
/// `subjects` less those whose last tuple ended at or before `now`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct EntityCount {
    /// The entity's id (of the type counted).
    pub id: String,
    /// How many distinct subjects hold a tuple of the relations, ended or not.
    pub subjects: u32,
    /// When each subject whose tuples all end stops counting (the end of its last tuple),
    /// in seconds since the epoch, ascending: one per such subject.
    // Written even when empty, as `tuple_ends` is: a snapshot's bytes hold this type too,
    // and they cannot leave out a field.
    #[serde(default)]
    pub subject_ends: Vec<i64>,
    /// Every other instant at which one of the tuples ends, ascending, each once: the
    /// count does not change then, but a decision that counted is valid until the first
    /// of these or of `subject_ends` after its `now`, as one on the tuples is.
    #[serde(default)]
    pub tuple_ends: Vec<i64>,
}

impl EntityCount {
    /// The subjects counted at `now`, and the first instant after `now` at which one of
    /// the tuples ends ([`NEVER`] if none does): what counting the tuples gives.
    pub fn at(&self, now: i64) -> (i64, i64) {
        let ends = self.subject_ends.len();
        let ended = self.subject_ends.partition_point(|&t| t <= now);
        // A subject whose tuples never end counts while `now` is before the end of time.
        let endless = if now < NEVER {
            (self.subjects as usize).saturating_sub(ends)
        } else {
            0
        };
        let next = |v: &[i64]| {
            v.get(v.partition_point(|&t| t <= now))
                .copied()
                .unwrap_or(NEVER)
        };
        let counted = i64::try_from(ends - ended + endless).unwrap_or(i64::MAX);
        (
            counted,
            next(&self.subject_ends).min(next(&self.tuple_ends)),
        )
    }
}
