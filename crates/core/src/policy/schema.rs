//! The compiled policy set as a whole: [`Schema`] with its look-ups, the sources it is
//! compiled from (the built-in prelude first), the policy hash over them, and the
//! outline of what it declares by name.

use super::ast::{self, WriteEvent};
use super::types::{
    Builtins, CellDef, LEVEL_ACTIONS, MatrixDef, RoleDef, Rule, RuleId, TypeDef, TypeId,
};
use super::{RuleCost, cost, roles};
use crate::error::PolicyError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The built-in prelude: types the engine gives meaning to.
pub const PRELUDE: &str = "\
# the tenant: every entity belongs to exactly one account
type account {
  features: set<string>
  setup_mode: bool?
}
# a custom role defined as data by its account
type role {
  matrix: string
  extends: string?
  cells: set<string>
}
# a personnel authorisation held by a principal
type authorization {
  kind: string
  valid_from: timestamp?
  valid_until: timestamp?
  scope: set<string>
  revoked: bool?
  holder: principal
  # a certification authorisation: the licence categories it grants (`B1` covers its
  # subcategories `B1.1` to `B1.4`), the ATA chapters and task kinds it is limited to
  # (none: any), and the licence it rests on
  categories: set<string>
  chapters: set<string>
  task_kinds: set<string>
  licence: licence
}
# a licence a person holds (an aircraft maintenance licence): its categories and expiry
type licence {
  categories: set<string>
  valid_until: timestamp?
  revoked: bool?
  holder: principal
}
";

/// The name under which the prelude's errors are reported.
pub const PRELUDE_NAME: &str = "<prelude>";

/// A loaded, validated and compiled policy set (the default is an empty placeholder).
#[derive(Debug, Clone, Default)]
pub struct Schema {
    /// Entity types.
    pub types: Vec<TypeDef>,
    /// Types by name.
    pub type_index: BTreeMap<String, TypeId>,
    /// Role matrices.
    pub matrices: Vec<MatrixDef>,
    /// Matrices by name.
    pub matrix_index: BTreeMap<String, u16>,
    /// Roles of the policy files.
    pub roles: Vec<RoleDef>,
    /// Roles by name.
    pub role_index: BTreeMap<String, u32>,
    /// Every rule, for reasons.
    pub rules: Vec<Rule>,
    /// String literals of the policy; their ids come first in every snapshot's string table.
    pub literals: Vec<String>,
    /// Built-in type ids.
    pub builtins: Builtins,
    /// SHA-256 of the policy sources, in load order.
    pub hash: [u8; 32],
    /// The sources it was compiled from (the prelude not included): a snapshot carries
    /// these and compiles them again when it is read, rather than the compiled form.
    pub sources: Vec<Source>,
}

/// Policy source text with the name its errors are reported under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// A file name.
    pub name: String,
    /// The text.
    pub text: String,
}

impl Source {
    /// A new source.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Source {
            name: name.into(),
            text: text.into(),
        }
    }
}

/// The policy hash: SHA-256 over the prelude and the sources in load order, each as its
/// name's length, its name, its text's length and its text (lengths as little-endian
/// `u64`).
pub(super) fn policy_hash(sources: &[Source]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let prelude = Source::new(PRELUDE_NAME, PRELUDE);
    for s in std::iter::once(&prelude).chain(sources) {
        hasher.update((s.name.len() as u64).to_le_bytes());
        hasher.update(s.name.as_bytes());
        hasher.update((s.text.len() as u64).to_le_bytes());
        hasher.update(s.text.as_bytes());
    }
    hasher.finalize().into()
}

impl Schema {
    /// The static cost and depth of every permission, scope and gate, which compiling
    /// holds within [`MAX_RULE_COST`](super::MAX_RULE_COST) and
    /// [`MAX_RULE_DEPTH`](super::MAX_RULE_DEPTH).
    pub fn rule_costs(&self) -> Vec<RuleCost> {
        // Compiling refuses a loop of references without a relation, the one error of
        // `rule_costs`, so a compiled schema always has its costs.
        cost::rule_costs(&self.types, &self.rules).unwrap_or_default()
    }

    /// The type named `name`.
    pub fn type_id(&self, name: &str) -> Option<TypeId> {
        self.type_index.get(name).copied()
    }

    /// The type with id `id`.
    pub fn ty(&self, id: TypeId) -> Option<&TypeDef> {
        self.types.get(id as usize)
    }

    /// The rule with id `id`.
    pub fn rule(&self, id: RuleId) -> Option<&Rule> {
        self.rules.get(id as usize)
    }

    /// The policy hash as lowercase hex.
    pub fn hash_hex(&self) -> String {
        hex(&self.hash)
    }

    /// What the policy declares, by name: the types with their actions and write rules,
    /// and the matrices with their rows and roles. User interfaces build their pages and
    /// "why not?" lists from it.
    pub fn outline(&self) -> Outline {
        // Every id of a compiled schema names one of its items, so no look-up below
        // falls back to its empty default.
        let type_name = |t: TypeId| self.ty(t).map(|d| d.name.clone()).unwrap_or_default();
        let types = self
            .types
            .iter()
            .map(|t| TypeOutline {
                name: t.name.clone(),
                principal: t.principal,
                actions: t
                    .perms
                    .iter()
                    .map(|p| ActionOutline {
                        name: p.name.clone(),
                        target: p.target.map(type_name),
                    })
                    .collect(),
                writes: t
                    .writes
                    .iter()
                    .map(|w| {
                        let (change, member) = match w.event {
                            WriteEvent::Add | WriteEvent::Remove => (
                                if w.event == WriteEvent::Add {
                                    "add"
                                } else {
                                    "remove"
                                },
                                w.member
                                    .and_then(|m| t.rels.get(m as usize))
                                    .map(|r| r.name.clone()),
                            ),
                            WriteEvent::Set => (
                                "set",
                                w.member
                                    .and_then(|m| t.attrs.get(m as usize))
                                    .map(|a| a.name.clone()),
                            ),
                            WriteEvent::Create => ("create", None),
                            WriteEvent::Delete => ("delete", None),
                        };
                        WriteOutline {
                            change: change.into(),
                            member,
                            action: t
                                .perms
                                .get(w.perm as usize)
                                .map(|p| p.name.clone())
                                .unwrap_or_default(),
                        }
                    })
                    .collect(),
            })
            .collect();
        let matrices = self
            .matrices
            .iter()
            .enumerate()
            .map(|(i, m)| MatrixOutline {
                name: m.name.clone(),
                levels: m.levels,
                actions: if m.levels {
                    LEVEL_ACTIONS.iter().map(|a| a.to_string()).collect()
                } else {
                    m.actions.clone()
                },
                rows: m.rows.iter().map(|r| r.name.clone()).collect(),
                operations: m
                    .rows
                    .iter()
                    .filter(|r| r.operation)
                    .map(|r| r.name.clone())
                    .collect(),
                roles: self
                    .roles
                    .iter()
                    .filter(|r| r.matrix as usize == i)
                    .map(|r| r.name.clone())
                    .collect(),
            })
            .collect();
        Outline {
            policy_hash: self.hash_hex(),
            types,
            matrices,
        }
    }

    /// Compiles a role cell for `matrix` (used for policy roles and custom roles).
    pub fn compile_cell(&self, matrix: u16, cell: &ast::CellDecl) -> Result<CellDef, PolicyError> {
        match self.matrices.get(matrix as usize) {
            Some(m) => roles::compile_cell(m, cell),
            None => Err(PolicyError::new(cell.row.span.clone(), "unknown matrix")),
        }
    }
}

/// What a policy declares, by name ([`Schema::outline`]).
#[derive(Debug, Clone, Serialize)]
pub struct Outline {
    /// The policy hash.
    pub policy_hash: String,
    /// Entity types in declaration order (built-in types first).
    pub types: Vec<TypeOutline>,
    /// Role matrices.
    pub matrices: Vec<MatrixOutline>,
}

/// A type of an [`Outline`].
#[derive(Debug, Clone, Serialize)]
pub struct TypeOutline {
    /// Its name.
    pub name: String,
    /// Whether its entities can be principals.
    pub principal: bool,
    /// Its actions (permissions), in order.
    pub actions: Vec<ActionOutline>,
    /// Which action authorises which change (X4).
    pub writes: Vec<WriteOutline>,
}

/// An action of a type.
#[derive(Debug, Clone, Serialize)]
pub struct ActionOutline {
    /// Its name.
    pub name: String,
    /// The target's type, for actions about a second entity.
    pub target: Option<String>,
}

/// A write rule: `on <change> <member> = <action>`.
#[derive(Debug, Clone, Serialize)]
pub struct WriteOutline {
    /// `add`, `remove`, `set`, `create` or `delete`.
    pub change: String,
    /// The relation or attribute, for `add`, `remove` and `set`.
    pub member: Option<String>,
    /// The action that must allow the author.
    pub action: String,
}

/// A matrix of an [`Outline`].
#[derive(Debug, Clone, Serialize)]
pub struct MatrixOutline {
    /// Its name.
    pub name: String,
    /// Whether cells are levels.
    pub levels: bool,
    /// The actions a cell can grant (for levels: `own`, `limited`, `read`, `write`).
    pub actions: Vec<String>,
    /// Its rows (pages, then operations), in order.
    pub rows: Vec<String>,
    /// The rows that are named operations (action `use`).
    pub operations: Vec<String>,
    /// The roles of the policy files on this matrix.
    pub roles: Vec<String>,
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    // By table rather than `write!("{b:02x}")`: a decision carries its policy's hash, and
    // 32 trips through `core::fmt` were a third of building a decision's view in wasm.
    fn digit(n: u8) -> char {
        char::from(if n < 10 { b'0' + n } else { b'a' + n - 10 })
    }
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(digit(b >> 4));
        s.push(digit(b & 15));
    }
    s
}
