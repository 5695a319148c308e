//! Policy sets: parsing policy text and resolving it into a typed, compiled schema.
//!
//! The compiled form names everything by dense integer ids so a check never does
//! string work: types, attributes, relations, permissions, matrices, rows, actions.

pub mod ast;
mod cost;
mod lexer;
mod parser;

use crate::error::{PolicyError, PolicyErrors, Span};
pub use ast::CmpOp;
pub use ast::WriteEvent;
use ast::{Decl, FieldType, Member, Sep};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub use cost::{EVAL_DEPTH_LIMIT, MAX_RULE_COST, MAX_RULE_DEPTH, RuleCost};
pub use parser::parse_cell;

/// A type's index in [`Schema::types`].
pub type TypeId = u16;
/// An index into [`Schema::rules`].
pub type RuleId = u32;
/// An index into [`Schema::literals`] (and the snapshot's string table).
pub type StrId = u32;

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
}
";

/// The name under which the prelude's errors are reported.
pub const PRELUDE_NAME: &str = "<prelude>";

/// The type of an attribute value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueType {
    /// `bool`
    Bool,
    /// `int`
    Int,
    /// `string`
    Str,
    /// `timestamp` (seconds since the Unix epoch)
    Time,
    /// `set<string>`
    StrSet,
    /// `enum{...}`: the value names
    Enum(Vec<String>),
}

impl ValueType {
    fn describe(&self) -> String {
        match self {
            ValueType::Bool => "bool".into(),
            ValueType::Int => "int".into(),
            ValueType::Str => "string".into(),
            ValueType::Time => "timestamp".into(),
            ValueType::StrSet => "set<string>".into(),
            ValueType::Enum(v) => format!("enum{{{}}}", v.join(", ")),
        }
    }
}

/// An attribute of a type.
#[derive(Debug, Clone)]
pub struct AttrDef {
    /// Its name.
    pub name: String,
    /// Its value type.
    pub ty: ValueType,
    /// Whether it may be absent.
    pub optional: bool,
}

/// A relation of a type.
#[derive(Debug, Clone)]
pub struct RelDef {
    /// Its name.
    pub name: String,
    /// The subject types it accepts.
    pub targets: Vec<TypeId>,
    /// The timestamp attribute at which every tuple ends.
    pub until: Option<u16>,
}

/// A permission: a checkable action.
#[derive(Debug, Clone)]
pub struct PermDef {
    /// The action's name.
    pub name: String,
    /// The target's type, for permissions about a second entity.
    pub target: Option<TypeId>,
    /// The rule.
    pub expr: Expr,
    /// The permission as a rule, for reasons.
    pub rule: RuleId,
}

/// A scope or a gate: a named rule.
#[derive(Debug, Clone)]
pub struct NamedRule {
    /// Its name.
    pub name: String,
    /// The rule.
    pub expr: Expr,
    /// The rule, for reasons.
    pub rule: RuleId,
}

/// What a name means on a type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberRef {
    /// An attribute.
    Attr(u16),
    /// A relation.
    Rel(u16),
    /// A permission.
    Perm(u16),
    /// A scope.
    Scope(u16),
}

/// An entity type, compiled.
#[derive(Debug, Clone)]
pub struct TypeDef {
    /// Its name.
    pub name: String,
    /// Whether its entities can be principals.
    pub principal: bool,
    /// Attributes.
    pub attrs: Vec<AttrDef>,
    /// Relations.
    pub rels: Vec<RelDef>,
    /// Permissions (actions).
    pub perms: Vec<PermDef>,
    /// Record scopes.
    pub scopes: Vec<NamedRule>,
    /// Gates (principal types only).
    pub gates: Vec<NamedRule>,
    /// Every member by name.
    pub members: BTreeMap<String, MemberRef>,
    /// Which permission authorises which change (X4).
    pub writes: Vec<WriteRule>,
    /// Relations filled in automatically when an entity is created (EV5): the relation
    /// and the permission that picks each subject.
    pub autos: Vec<(u16, u16)>,
}

/// A write rule, compiled: a change and the permission that must allow its author.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRule {
    /// The kind of change.
    pub event: WriteEvent,
    /// The relation (`add`, `remove`) or attribute (`set`) index.
    pub member: Option<u16>,
    /// The permission.
    pub perm: u16,
}

impl TypeDef {
    /// The write rule for a change, if the policy has one.
    pub fn write_rule(&self, event: WriteEvent, member: Option<u16>) -> Option<&WriteRule> {
        self.writes
            .iter()
            .find(|w| w.event == event && w.member == member)
    }
}

impl TypeDef {
    /// The index of attribute `name`.
    pub fn attr(&self, name: &str) -> Option<u16> {
        match self.members.get(name) {
            Some(MemberRef::Attr(i)) => Some(*i),
            _ => None,
        }
    }

    /// The index of relation `name`.
    pub fn rel(&self, name: &str) -> Option<u16> {
        match self.members.get(name) {
            Some(MemberRef::Rel(i)) => Some(*i),
            _ => None,
        }
    }

    /// The index of permission `name`. A scan of the few permissions (lengths compare
    /// first) is quicker than the ordered map of every member on the per-request path.
    pub fn perm(&self, name: &str) -> Option<u16> {
        self.perms
            .iter()
            .position(|p| p.name == name)
            .and_then(|i| u16::try_from(i).ok())
    }
}

/// Where an operand takes its entity from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// The entity the rule is evaluated on (the resource, or a subject reached by `->`).
    Current,
    /// The request's target.
    Target,
    /// The request's account.
    Account,
    /// The request's principal.
    Principal,
}

/// A value in a compiled comparison.
#[derive(Debug, Clone)]
pub enum Operand {
    /// The request time.
    Now,
    /// An integer.
    Int(i64),
    /// A string literal.
    Str(StrId),
    /// A boolean literal.
    Bool(bool),
    /// An enum value (its index).
    Enum(u8),
    /// An attribute, reached from `base` through single-subject relations.
    Attr {
        /// The starting entity.
        base: Base,
        /// Relations to follow (taking the first subject), each with its source type.
        path: Vec<(TypeId, u16)>,
        /// The attribute's type and index.
        attr: (TypeId, u16),
    },
    /// The set of subjects at the end of a relation path.
    Entities {
        /// The starting entity.
        base: Base,
        /// Relations to follow, each with its source type (the last gives the set).
        path: Vec<(TypeId, u16)>,
    },
    /// The entity `base` itself.
    This(Base),
    /// The number of distinct non-expired subjects of these relations of `base`.
    Count {
        /// The entity.
        base: Base,
        /// Its type and relations.
        rels: Vec<(TypeId, u16)>,
    },
}

/// The kind of a compiled operand, for type checking.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Value(ValueType),
    Entities,
    EnumName(String),
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub enum Expr {
    /// A constant.
    Const(bool),
    /// Union.
    Or(Vec<Expr>),
    /// Intersection.
    And(Vec<Expr>),
    /// Exclusion: the first holds and the second does not.
    Minus(Box<Expr>, Box<Expr>, RuleId),
    /// Negation.
    Not(Box<Expr>, RuleId),
    /// The principal is a subject of the current entity's relation.
    Rel {
        /// The relation.
        rel: u16,
        /// The rule, for reasons.
        rule: RuleId,
    },
    /// Some subject of the relation satisfies the body for its type.
    Arrow {
        /// The relation.
        rel: u16,
        /// Per subject type, the rule evaluated on the subject.
        bodies: Vec<(TypeId, Expr)>,
        /// The rule, for reasons.
        rule: RuleId,
    },
    /// The body, evaluated on the request's target.
    OnTarget(Box<Expr>),
    /// A permission of a type, evaluated on the current entity.
    Perm(TypeId, u16),
    /// A scope of a type, evaluated on the current entity.
    Scope(TypeId, u16),
    /// A role matrix check.
    Matrix {
        /// The matrix.
        matrix: u16,
        /// The row.
        row: u16,
        /// The action's bit index.
        action: u8,
        /// The current type's scope index for each of the row's scopes.
        scopes: Vec<u16>,
        /// The rule, for reasons.
        rule: RuleId,
    },
    /// A personnel authorisation check.
    Authorized {
        /// The kind.
        kind: StrId,
        /// The value the authorisation's scope must contain.
        scope: Option<Operand>,
        /// The rule, for reasons.
        rule: RuleId,
    },
    /// A comparison.
    Cmp {
        /// The operator.
        op: CmpOp,
        /// Left side.
        lhs: Operand,
        /// Right side.
        rhs: Operand,
        /// The rule, for reasons.
        rule: RuleId,
    },
    /// Membership of a value or entity set in a set.
    In {
        /// The value or entities.
        lhs: Operand,
        /// The set attribute or entity set.
        rhs: Operand,
        /// The rule, for reasons.
        rule: RuleId,
    },
}

/// The action space of level matrices: the levels above `none`, then `use`.
pub const LEVEL_ACTIONS: [&str; 5] = ["own", "limited", "read", "write", "use"];
/// The levels of level matrices, in order.
pub const LEVELS: [&str; 5] = ["none", "own", "limited", "read", "write"];
/// The bit of action `use` in level matrices.
pub const USE_BIT: u8 = 4;

/// A row of a matrix.
#[derive(Debug, Clone)]
pub struct RowDef {
    /// Its name.
    pub name: String,
    /// Whether it is a named operation (action `use` only).
    pub operation: bool,
    /// The feature the account must have enabled.
    pub feature: Option<StrId>,
    /// Whether the row exists only in setup mode.
    pub setup_only: bool,
    /// The record scopes its cells may name.
    pub scopes: Vec<String>,
    /// The row as a rule, for reasons of page requests.
    pub rule: RuleId,
}

/// A controlled action: it also needs a personnel authorisation.
#[derive(Debug, Clone)]
pub struct ControlDef {
    /// The row.
    pub row: u16,
    /// The action bit.
    pub action: u8,
    /// The authorisation kind.
    pub kind: StrId,
    /// The control, for reasons.
    pub rule: RuleId,
}

/// A role matrix, compiled.
#[derive(Debug, Clone)]
pub struct MatrixDef {
    /// Its name.
    pub name: String,
    /// Whether cells are levels (else action sets).
    pub levels: bool,
    /// The action names; bit `i` is action `i`.
    pub actions: Vec<String>,
    /// Rows in order.
    pub rows: Vec<RowDef>,
    /// Controlled actions.
    pub controls: Vec<ControlDef>,
    /// Rows by name.
    pub row_index: BTreeMap<String, u16>,
}

impl MatrixDef {
    /// The bit of `action` on `row`, if the row takes it.
    pub fn action_bit(&self, row: u16, action: &str) -> Option<u8> {
        let r = self.rows.get(row as usize)?;
        if self.levels {
            match (r.operation, action) {
                (true, "use") => Some(USE_BIT),
                (false, a) if a != "use" => {
                    LEVEL_ACTIONS.iter().position(|x| *x == a).map(|i| i as u8)
                }
                _ => None,
            }
        } else {
            self.actions
                .iter()
                .position(|x| x == action)
                .map(|i| i as u8)
        }
    }

    /// The action bits a row takes.
    pub fn row_actions(&self, row: u16) -> u32 {
        match self.rows.get(row as usize) {
            Some(r) if self.levels && r.operation => 1 << USE_BIT,
            Some(_) if self.levels => 0b1111,
            Some(_) => (1u32 << self.actions.len()) - 1,
            None => 0,
        }
    }
}

/// One cell of a role, compiled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellDef {
    /// The row.
    pub row: u16,
    /// The action bits granted on the page (the pseudo resource `matrix:row`).
    pub page: u32,
    /// The action bits granted on records where a scope holds (all records if unscoped).
    pub record: u32,
    /// Indices into the row's scopes; empty means every record.
    pub scopes: Vec<u8>,
    /// The level or actions as written, for the access-rights matrix.
    pub label: String,
}

/// A role, compiled.
#[derive(Debug, Clone)]
pub struct RoleDef {
    /// Its name.
    pub name: String,
    /// Its matrix.
    pub matrix: u16,
    /// Its cells, one per row at most, in row order.
    pub cells: Vec<CellDef>,
}

/// What a rule is, for reasons and explanations.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Where it is written, `type.member` or `matrix.row.action`.
    pub owner: String,
    /// The rule as text.
    pub text: String,
    /// Where it was written.
    pub span: Span,
}

/// Ids of the built-in types.
#[derive(Debug, Clone, Default)]
pub struct Builtins {
    /// `account`
    pub account: TypeId,
    /// `role`
    pub role: TypeId,
    /// `authorization`
    pub authorization: TypeId,
    /// `account.features`, `account.setup_mode`
    pub account_attrs: [u16; 2],
    /// `authorization.kind`, `.valid_from`, `.valid_until`, `.scope`, `.revoked`
    pub auth_attrs: [u16; 5],
}

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

impl Schema {
    /// Parses, validates and compiles a policy set (the prelude is added first).
    pub fn compile(sources: &[Source]) -> Result<Schema, PolicyErrors> {
        let mut hasher = Sha256::new();
        let mut errors = Vec::new();
        let mut decls = Vec::new();
        let prelude = Source::new(PRELUDE_NAME, PRELUDE);
        for s in std::iter::once(&prelude).chain(sources) {
            hasher.update((s.name.len() as u64).to_le_bytes());
            hasher.update(s.name.as_bytes());
            hasher.update((s.text.len() as u64).to_le_bytes());
            hasher.update(s.text.as_bytes());
            match parser::parse_file(&s.name, &s.text) {
                Ok(d) => decls.extend(d),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(PolicyErrors(errors));
        }
        let mut c = Compiler::default();
        let schema = c.compile(decls, hasher.finalize().into());
        match schema {
            Some(mut s) if c.errors.is_empty() => {
                s.sources = sources.to_vec();
                Ok(s)
            }
            _ => Err(PolicyErrors(c.errors)),
        }
    }

    /// The static cost and depth of every permission, scope and gate, which compiling
    /// holds within [`MAX_RULE_COST`] and [`MAX_RULE_DEPTH`].
    pub fn rule_costs(&self) -> Vec<RuleCost> {
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
            Some(m) => compile_cell(m, cell),
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
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn compile_cell(m: &MatrixDef, cell: &ast::CellDecl) -> Result<CellDef, PolicyError> {
    let row = *m.row_index.get(&cell.row.text).ok_or_else(|| {
        PolicyError::new(
            cell.row.span.clone(),
            format!(
                "unknown row `{}` of matrix `{}`: expected one of {}",
                cell.row,
                m.name,
                list(m.row_index.keys())
            ),
        )
    })?;
    let r = m
        .rows
        .get(row as usize)
        .ok_or_else(|| PolicyError::new(cell.row.span.clone(), "unknown row"))?;
    let mut scopes = Vec::new();
    for s in &cell.scopes {
        match r.scopes.iter().position(|x| *x == s.text) {
            Some(i) => scopes.push(i as u8),
            None => {
                return Err(PolicyError::new(
                    s.span.clone(),
                    format!(
                        "row `{}` takes no scope `{}`: expected one of {}",
                        r.name,
                        s,
                        list(r.scopes.iter())
                    ),
                ));
            }
        }
    }
    let first = cell
        .values
        .first()
        .map(|n| n.text.as_str())
        .unwrap_or("none");
    let label_scopes = if cell.scopes.is_empty() {
        String::new()
    } else {
        format!(
            "({})",
            cell.scopes
                .iter()
                .map(|s| s.text.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    if m.levels {
        if cell.values.len() != 1 {
            return Err(PolicyError::new(
                cell.row.span.clone(),
                format!(
                    "a cell of level matrix `{}` takes one level, found {}",
                    m.name,
                    cell.values.len()
                ),
            ));
        }
        if r.operation {
            if !cell.scopes.is_empty() {
                return Err(PolicyError::new(
                    cell.row.span.clone(),
                    "an operation cell takes no scopes",
                ));
            }
            let page = match first {
                "allow" => 1 << USE_BIT,
                "none" => 0,
                other => {
                    return Err(PolicyError::new(
                        cell.row.span.clone(),
                        format!(
                            "operation `{}` takes `allow` or `none`, found `{other}`",
                            r.name
                        ),
                    ));
                }
            };
            return Ok(CellDef {
                row,
                page,
                record: page,
                scopes,
                label: first.to_string(),
            });
        }
        let level = LEVELS.iter().position(|l| *l == first).ok_or_else(|| {
            PolicyError::new(
                cell.row.span.clone(),
                format!("expected a level (none, own, limited, read, write), found `{first}`"),
            )
        })?;
        if level == 1 && scopes.is_empty() {
            match r.scopes.iter().position(|x| x == "self") {
                Some(i) => scopes.push(i as u8),
                None => {
                    return Err(PolicyError::new(
                        cell.row.span.clone(),
                        format!(
                            "`own` means `own(self)` but row `{}` declares no scope `self`: name a scope, e.g. `own({})`",
                            r.name,
                            r.scopes.first().map(String::as_str).unwrap_or("...")
                        ),
                    ));
                }
            }
        }
        let page: u32 = (1u32 << level) - 1;
        let record = if level == 1 { 0b111 } else { page };
        let label = if level == 1 && cell.scopes.is_empty() {
            "own(self)".to_string()
        } else {
            format!("{first}{label_scopes}")
        };
        Ok(CellDef {
            row,
            page,
            record,
            scopes,
            label,
        })
    } else {
        if !cell.scopes.is_empty() {
            return Err(PolicyError::new(
                cell.row.span.clone(),
                format!("cells of action matrix `{}` take no scopes", m.name),
            ));
        }
        let mut bits = 0u32;
        for v in &cell.values {
            if v.text == "none" {
                continue;
            }
            match m.actions.iter().position(|a| *a == v.text) {
                Some(i) => bits |= 1 << i,
                None => {
                    return Err(PolicyError::new(
                        v.span.clone(),
                        format!(
                            "unknown action `{}` of matrix `{}`: expected one of {}",
                            v,
                            m.name,
                            list(m.actions.iter())
                        ),
                    ));
                }
            }
        }
        let label = cell
            .values
            .iter()
            .map(|v| v.text.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        Ok(CellDef {
            row,
            page: bits,
            record: bits,
            scopes,
            label,
        })
    }
}

fn list<'a>(it: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<String> = it.map(|s| format!("`{s}`")).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[derive(Default)]
struct Compiler {
    errors: Vec<PolicyError>,
    types: Vec<TypeDef>,
    type_index: BTreeMap<String, TypeId>,
    type_spans: Vec<Span>,
    rules: Vec<Rule>,
    literals: Vec<String>,
    literal_index: BTreeMap<String, StrId>,
    kind_rules: BTreeMap<String, RuleId>,
    matrices: Vec<MatrixDef>,
    matrix_index: BTreeMap<String, u16>,
}

/// Where an expression is compiled: the current type and the target's type.
#[derive(Clone, Copy)]
struct Scope {
    ty: TypeId,
    target: Option<TypeId>,
    owner: RuleOwner,
}

#[derive(Clone, Copy)]
struct RuleOwner {
    ty: TypeId,
    kind: u8,
    idx: u16,
}

impl Compiler {
    fn err(&mut self, span: &Span, msg: impl Into<String>) {
        self.errors.push(PolicyError::new(span.clone(), msg));
    }

    fn literal(&mut self, s: &str) -> StrId {
        if let Some(id) = self.literal_index.get(s) {
            return *id;
        }
        let id = self.literals.len() as StrId;
        self.literals.push(s.to_string());
        self.literal_index.insert(s.to_string(), id);
        id
    }

    fn rule(&mut self, owner: String, text: String, span: &Span) -> RuleId {
        self.rules.push(Rule {
            owner,
            text,
            span: span.clone(),
        });
        (self.rules.len() - 1) as RuleId
    }

    fn type_name(&self, t: TypeId) -> &str {
        self.types.get(t as usize).map_or("?", |t| t.name.as_str())
    }

    fn compile(&mut self, decls: Vec<Decl>, hash: [u8; 32]) -> Option<Schema> {
        let request = Span {
            file: "<request>".into(),
            line: 1,
            col: 1,
        };
        for f in ["principal", "resource", "action", "target", "now"] {
            self.rule("request".into(), f.into(), &request);
        }
        // Pass 1: type names.
        for d in &decls {
            if let Decl::Type(t) = d {
                let id = match self.type_index.get(&t.name.text) {
                    Some(id) => *id,
                    None => {
                        let id = self.types.len() as TypeId;
                        self.types.push(TypeDef {
                            name: t.name.text.clone(),
                            principal: false,
                            attrs: Vec::new(),
                            rels: Vec::new(),
                            perms: Vec::new(),
                            scopes: Vec::new(),
                            gates: Vec::new(),
                            members: BTreeMap::new(),
                            writes: Vec::new(),
                            autos: Vec::new(),
                        });
                        self.type_spans.push(t.name.span.clone());
                        self.type_index.insert(t.name.text.clone(), id);
                        id
                    }
                };
                if t.principal
                    && let Some(td) = self.types.get_mut(id as usize)
                {
                    td.principal = true;
                }
            }
        }
        for reserved in ["principal", "resource", "target", "now", "account_of"] {
            if let Some(id) = self.type_index.get(reserved) {
                let span = self
                    .type_spans
                    .get(*id as usize)
                    .cloned()
                    .unwrap_or_else(|| Span {
                        file: String::new(),
                        line: 0,
                        col: 0,
                    });
                self.err(
                    &span,
                    format!("`{reserved}` is a reserved word and cannot name a type"),
                );
            }
        }
        let principal_types: Vec<TypeId> = self
            .types
            .iter()
            .enumerate()
            .filter(|(_, t)| t.principal)
            .map(|(i, _)| i as TypeId)
            .collect();
        for t in principal_types.iter().copied() {
            if let Some(td) = self.types.get_mut(t as usize) {
                let idx = td.attrs.len() as u16;
                td.attrs.push(AttrDef {
                    name: "roles".into(),
                    ty: ValueType::StrSet,
                    optional: false,
                });
                td.members.insert("roles".into(), MemberRef::Attr(idx));
            }
        }
        // Pass 2: fields.
        for d in &decls {
            let Decl::Type(t) = d else { continue };
            let Some(&tid) = self.type_index.get(&t.name.text) else {
                continue;
            };
            for m in &t.members {
                let Member::Field {
                    name, ty, optional, ..
                } = m
                else {
                    continue;
                };
                let member = match ty {
                    FieldType::Entities(names) => {
                        let mut targets = Vec::new();
                        for n in names {
                            if n.text == "principal" {
                                targets.extend(principal_types.iter().copied());
                            } else {
                                match self.type_index.get(&n.text) {
                                    Some(id) => targets.push(*id),
                                    None => {
                                        let known = list(self.type_index.keys());
                                        self.err(&n.span, format!("unknown type `{n}`: expected bool, int, string, timestamp, set<string>, enum{{...}} or an entity type ({known})"));
                                    }
                                }
                            }
                        }
                        if *optional {
                            self.err(&name.span, format!("relation `{name}` cannot be optional: a relation is a set of tuples, possibly empty"));
                        }
                        let Some(td) = self.types.get_mut(tid as usize) else {
                            continue;
                        };
                        let idx = td.rels.len() as u16;
                        td.rels.push(RelDef {
                            name: name.text.clone(),
                            targets,
                            until: None,
                        });
                        MemberRef::Rel(idx)
                    }
                    other => {
                        let vt = match other {
                            FieldType::Bool => ValueType::Bool,
                            FieldType::Int => ValueType::Int,
                            FieldType::Str => ValueType::Str,
                            FieldType::Time => ValueType::Time,
                            FieldType::StrSet => ValueType::StrSet,
                            FieldType::Enum(v) => {
                                if v.len() > 250 {
                                    self.err(&name.span, "an enum takes at most 250 values");
                                }
                                ValueType::Enum(v.iter().map(|n| n.text.clone()).collect())
                            }
                            FieldType::Entities(_) => continue,
                        };
                        let Some(td) = self.types.get_mut(tid as usize) else {
                            continue;
                        };
                        let idx = td.attrs.len() as u16;
                        td.attrs.push(AttrDef {
                            name: name.text.clone(),
                            ty: vt,
                            optional: *optional,
                        });
                        MemberRef::Attr(idx)
                    }
                };
                self.add_member(tid, name, member);
            }
        }
        // `until` needs every attribute known.
        for d in &decls {
            let Decl::Type(t) = d else { continue };
            let Some(&tid) = self.type_index.get(&t.name.text) else {
                continue;
            };
            for m in &t.members {
                let Member::Field {
                    name,
                    until: Some(u),
                    ty: FieldType::Entities(_),
                    ..
                } = m
                else {
                    if let Member::Field { until: Some(u), .. } = m {
                        self.err(&u.span, "`until` applies to relations only");
                    }
                    continue;
                };
                let Some(td) = self.types.get(tid as usize) else {
                    continue;
                };
                let attr = td.attr(&u.text);
                let ok = attr
                    .and_then(|a| td.attrs.get(a as usize))
                    .is_some_and(|a| a.ty == ValueType::Time);
                let rel = td.rel(&name.text);
                match (ok, attr, rel) {
                    (true, Some(a), Some(r)) => {
                        if let Some(rd) = self
                            .types
                            .get_mut(tid as usize)
                            .and_then(|t| t.rels.get_mut(r as usize))
                        {
                            rd.until = Some(a);
                        }
                    }
                    _ => {
                        let tn = t.name.text.clone();
                        self.err(
                            &u.span,
                            format!("`until {u}`: expected a timestamp attribute of `{tn}`"),
                        );
                    }
                }
            }
        }
        // Pass 3: names of permissions, scopes, gates.
        for d in &decls {
            let Decl::Type(t) = d else { continue };
            let Some(&tid) = self.type_index.get(&t.name.text) else {
                continue;
            };
            for m in &t.members {
                match m {
                    Member::Permission { name, target, .. } => {
                        let target_ty = match target {
                            Some((_, ty)) => match self.type_index.get(&ty.text) {
                                Some(id) => Some(*id),
                                None => {
                                    self.err(
                                        &ty.span,
                                        format!("unknown type `{ty}` for the target"),
                                    );
                                    None
                                }
                            },
                            None => None,
                        };
                        let Some(td) = self.types.get_mut(tid as usize) else {
                            continue;
                        };
                        let idx = td.perms.len() as u16;
                        td.perms.push(PermDef {
                            name: name.text.clone(),
                            target: target_ty,
                            expr: Expr::Const(false),
                            rule: 0,
                        });
                        self.add_member(tid, name, MemberRef::Perm(idx));
                    }
                    Member::Scope { name, .. } => {
                        let Some(td) = self.types.get_mut(tid as usize) else {
                            continue;
                        };
                        let idx = td.scopes.len() as u16;
                        td.scopes.push(NamedRule {
                            name: name.text.clone(),
                            expr: Expr::Const(false),
                            rule: 0,
                        });
                        self.add_member(tid, name, MemberRef::Scope(idx));
                    }
                    Member::Gate { name, .. } => {
                        let principal = self.types.get(tid as usize).is_some_and(|t| t.principal);
                        if !principal {
                            self.err(&name.span, format!("gate `{name}` on `{}`: gates belong to principal types (`type {} principal {{...}}`)", t.name, t.name));
                        }
                        let Some(td) = self.types.get_mut(tid as usize) else {
                            continue;
                        };
                        if td.gates.iter().any(|g| g.name == name.text) {
                            self.err(&name.span, format!("gate `{name}` is declared twice"));
                            continue;
                        }
                        td.gates.push(NamedRule {
                            name: name.text.clone(),
                            expr: Expr::Const(false),
                            rule: 0,
                        });
                    }
                    Member::Field { .. } | Member::On { .. } | Member::Auto { .. } => {}
                }
            }
        }
        // Matrices.
        for d in &decls {
            if let Decl::Matrix(m) = d {
                self.matrix(m);
            }
        }
        // Expressions.
        let mut gate_counter: BTreeMap<TypeId, u16> = BTreeMap::new();
        for d in &decls {
            let Decl::Type(t) = d else { continue };
            let Some(&tid) = self.type_index.get(&t.name.text) else {
                continue;
            };
            for m in &t.members {
                match m {
                    Member::Permission { name, expr, .. } => {
                        let Some(idx) = self
                            .types
                            .get(tid as usize)
                            .and_then(|t| t.perm(&name.text))
                        else {
                            continue;
                        };
                        let target = self
                            .types
                            .get(tid as usize)
                            .and_then(|t| t.perms.get(idx as usize))
                            .and_then(|p| p.target);
                        let owner = format!("{}.{}", t.name, name);
                        let rule = self.rule(owner, expr.to_string(), &name.span);
                        let sc = Scope {
                            ty: tid,
                            target,
                            owner: RuleOwner {
                                ty: tid,
                                kind: 0,
                                idx,
                            },
                        };
                        let e = self.expr(sc, expr);
                        if let Some(p) = self
                            .types
                            .get_mut(tid as usize)
                            .and_then(|t| t.perms.get_mut(idx as usize))
                        {
                            p.expr = e;
                            p.rule = rule;
                        }
                    }
                    Member::Scope { name, expr } => {
                        let Some(MemberRef::Scope(idx)) = self
                            .types
                            .get(tid as usize)
                            .and_then(|t| t.members.get(&name.text))
                            .copied()
                        else {
                            continue;
                        };
                        let owner = format!("{}.{}", t.name, name);
                        let rule = self.rule(owner, expr.to_string(), &name.span);
                        let sc = Scope {
                            ty: tid,
                            target: None,
                            owner: RuleOwner {
                                ty: tid,
                                kind: 1,
                                idx,
                            },
                        };
                        let e = self.expr(sc, expr);
                        if let Some(s) = self
                            .types
                            .get_mut(tid as usize)
                            .and_then(|t| t.scopes.get_mut(idx as usize))
                        {
                            s.expr = e;
                            s.rule = rule;
                        }
                    }
                    Member::Gate {
                        name,
                        expr,
                        message,
                    } => {
                        let idx = *gate_counter.entry(tid).or_insert(0);
                        let owner = format!("gate.{name}");
                        let rule = self.rule(owner, message.clone(), &name.span);
                        let sc = Scope {
                            ty: tid,
                            target: None,
                            owner: RuleOwner {
                                ty: tid,
                                kind: 2,
                                idx,
                            },
                        };
                        let e = self.expr(sc, expr);
                        if let Some(g) = self
                            .types
                            .get_mut(tid as usize)
                            .and_then(|t| t.gates.iter_mut().find(|g| g.name == name.text))
                            && g.rule < 5
                        {
                            g.expr = e;
                            g.rule = rule;
                            gate_counter.insert(tid, idx + 1);
                        }
                    }
                    Member::On {
                        event,
                        member,
                        perm,
                    } => self.write_rule(tid, *event, member.as_ref(), perm),
                    Member::Auto { rel, perm } => self.auto_rule(tid, rel, perm),
                    Member::Field { .. } => {}
                }
            }
        }
        let roles = self.roles(&decls);
        let account = self.type_index.get("account").copied().unwrap_or(0);
        let authorization = self.type_index.get("authorization").copied().unwrap_or(0);
        let attr = |t: TypeId, n: &str| {
            self.types
                .get(t as usize)
                .and_then(|t| t.attr(n))
                .unwrap_or(0)
        };
        let builtins = Builtins {
            account,
            role: self.type_index.get("role").copied().unwrap_or(0),
            authorization,
            account_attrs: [attr(account, "features"), attr(account, "setup_mode")],
            auth_attrs: [
                attr(authorization, "kind"),
                attr(authorization, "valid_from"),
                attr(authorization, "valid_until"),
                attr(authorization, "scope"),
                attr(authorization, "revoked"),
            ],
        };
        let (roles, role_index) = roles?;
        // The cost bound: a policy is bounded before it runs. Only a policy without other
        // errors has every rule compiled to cost.
        if self.errors.is_empty() {
            let over = cost::check(&self.types, &self.rules);
            self.errors.extend(over);
        }
        Some(Schema {
            types: std::mem::take(&mut self.types),
            type_index: std::mem::take(&mut self.type_index),
            matrices: std::mem::take(&mut self.matrices),
            matrix_index: std::mem::take(&mut self.matrix_index),
            roles,
            role_index,
            rules: std::mem::take(&mut self.rules),
            literals: std::mem::take(&mut self.literals),
            builtins,
            hash,
            sources: Vec::new(),
        })
    }

    fn auto_rule(&mut self, tid: TypeId, rel: &ast::Name, perm: &ast::Name) {
        let Some(td) = self.types.get(tid as usize) else {
            return;
        };
        let tn = td.name.clone();
        let Some(r) = td.rel(&rel.text) else {
            self.err(&rel.span, format!("`{tn}` has no relation `{rel}`"));
            return;
        };
        let Some(p) = td.perm(&perm.text) else {
            self.err(&perm.span, format!("`{tn}` has no permission `{perm}`"));
            return;
        };
        let target = td.perms.get(p as usize).and_then(|x| x.target);
        let fits = td
            .rels
            .get(r as usize)
            .is_some_and(|x| target.is_some_and(|t| x.targets.contains(&t)));
        if !fits {
            self.err(
                &perm.span,
                format!("`{tn}.{perm}` must take a target of a type `{tn}.{rel}` relates to"),
            );
            return;
        }
        if let Some(td) = self.types.get_mut(tid as usize) {
            td.autos.push((r, p));
        }
    }

    fn write_rule(
        &mut self,
        tid: TypeId,
        event: WriteEvent,
        member: Option<&ast::Name>,
        perm: &ast::Name,
    ) {
        let Some(td) = self.types.get(tid as usize) else {
            return;
        };
        let tn = td.name.clone();
        let Some(p) = td.perm(&perm.text) else {
            self.err(
                &perm.span,
                format!("`{tn}` has no permission `{perm}` to authorise this change"),
            );
            return;
        };
        let takes_target = td.perms.get(p as usize).and_then(|x| x.target);
        let member_id = match (event, member) {
            (WriteEvent::Add | WriteEvent::Remove, Some(m)) => match td.rel(&m.text) {
                Some(r) => {
                    let targets = td
                        .rels
                        .get(r as usize)
                        .map(|x| x.targets.clone())
                        .unwrap_or_default();
                    if let Some(t) = takes_target
                        && !targets.contains(&t)
                    {
                        self.err(
                            &perm.span,
                            format!(
                                "`{tn}.{perm}` takes a target that `{tn}.{m}` never relates to"
                            ),
                        );
                    }
                    Some(r)
                }
                None => {
                    self.err(&m.span, format!("`{tn}` has no relation `{m}`"));
                    return;
                }
            },
            (WriteEvent::Set, Some(m)) => match td.attr(&m.text) {
                Some(a) => {
                    if takes_target.is_some() {
                        self.err(
                            &perm.span,
                            format!("`{tn}.{perm}` takes a target; an attribute change has none"),
                        );
                    }
                    Some(a)
                }
                None => {
                    self.err(&m.span, format!("`{tn}` has no attribute `{m}`"));
                    return;
                }
            },
            _ => {
                if takes_target.is_some() {
                    self.err(
                        &perm.span,
                        format!(
                            "`{tn}.{perm}` takes a target; creating or deleting an entity has none"
                        ),
                    );
                }
                None
            }
        };
        let Some(td) = self.types.get_mut(tid as usize) else {
            return;
        };
        if td.write_rule(event, member_id).is_some() {
            self.err(&perm.span, "this change already has a write rule");
            return;
        }
        td.writes.push(WriteRule {
            event,
            member: member_id,
            perm: p,
        });
    }

    fn add_member(&mut self, tid: TypeId, name: &ast::Name, m: MemberRef) {
        if [
            "principal",
            "resource",
            "target",
            "account",
            "now",
            "count",
            "role",
            "authorized",
            "true",
            "false",
        ]
        .contains(&name.text.as_str())
        {
            self.err(
                &name.span,
                format!("`{name}` is a reserved word and cannot name a member"),
            );
            return;
        }
        let Some(td) = self.types.get_mut(tid as usize) else {
            return;
        };
        if td.members.contains_key(&name.text) {
            let tn = td.name.clone();
            self.err(&name.span, format!("`{tn}.{name}` is declared twice"));
            return;
        }
        td.members.insert(name.text.clone(), m);
    }

    fn matrix(&mut self, m: &ast::MatrixDecl) {
        if self.matrix_index.contains_key(&m.name.text) {
            self.err(
                &m.name.span,
                format!("matrix `{}` is declared twice", m.name),
            );
            return;
        }
        if self.type_index.contains_key(&m.name.text) {
            self.err(
                &m.name.span,
                format!(
                    "matrix `{}` has the name of a type: page requests `{}:row` would be ambiguous",
                    m.name, m.name
                ),
            );
            return;
        }
        let levels = m.actions.is_none();
        let actions: Vec<String> = match &m.actions {
            Some(a) => a.iter().map(|n| n.text.clone()).collect(),
            None => LEVEL_ACTIONS.iter().map(|s| s.to_string()).collect(),
        };
        if actions.len() > 31 {
            self.err(&m.name.span, "a matrix takes at most 31 actions");
        }
        let mut def = MatrixDef {
            name: m.name.text.clone(),
            levels,
            actions,
            rows: Vec::new(),
            controls: Vec::new(),
            row_index: BTreeMap::new(),
        };
        for r in &m.rows {
            if def.row_index.contains_key(&r.name.text) {
                self.err(&r.name.span, format!("row `{}` is declared twice", r.name));
                continue;
            }
            if r.operation && !levels {
                self.err(&r.name.span, "`operation` rows belong to level matrices; in an action matrix use a row with actions");
            }
            let feature = r.feature.as_ref().map(|f| self.literal(&f.text));
            let mut text = String::from("row");
            if let Some(f) = &r.feature {
                text.push_str(&format!(" feature {f}"));
            }
            if r.setup_only {
                text.push_str(" setup_only");
            }
            let rule = self.rule(format!("{}.{}", m.name, r.name), text, &r.name.span);
            def.row_index
                .insert(r.name.text.clone(), def.rows.len() as u16);
            def.rows.push(RowDef {
                name: r.name.text.clone(),
                operation: r.operation,
                feature,
                setup_only: r.setup_only,
                scopes: r.scopes.iter().map(|s| s.text.clone()).collect(),
                rule,
            });
        }
        for c in &m.controls {
            let Some(&row) = def.row_index.get(&c.row.text) else {
                self.err(
                    &c.row.span,
                    format!("unknown row `{}` of matrix `{}`", c.row, m.name),
                );
                continue;
            };
            let Some(action) = def.action_bit(row, &c.action.text) else {
                self.err(
                    &c.action.span,
                    format!("unknown action `{}` on row `{}`", c.action, c.row),
                );
                continue;
            };
            let kind = self.literal(&c.kind.text);
            let rule = self.kind_rule(&c.kind);
            def.controls.push(ControlDef {
                row,
                action,
                kind,
                rule,
            });
        }
        self.matrix_index
            .insert(m.name.text.clone(), self.matrices.len() as u16);
        self.matrices.push(def);
    }

    fn roles(&mut self, decls: &[Decl]) -> Option<(Vec<RoleDef>, BTreeMap<String, u32>)> {
        let decls: Vec<&ast::RoleDecl> = decls
            .iter()
            .filter_map(|d| if let Decl::Role(r) = d { Some(r) } else { None })
            .collect();
        let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
        for (i, r) in decls.iter().enumerate() {
            if by_name.insert(r.name.text.clone(), i).is_some() {
                self.err(&r.name.span, format!("role `{}` is declared twice", r.name));
            }
        }
        let mut done: Vec<Option<RoleDef>> = vec![None; decls.len()];
        for i in 0..decls.len() {
            let mut stack = Vec::new();
            self.role(i, &decls, &by_name, &mut done, &mut stack);
        }
        let mut roles = Vec::new();
        let mut index = BTreeMap::new();
        for r in done.into_iter().flatten() {
            index.insert(r.name.clone(), roles.len() as u32);
            roles.push(r);
        }
        Some((roles, index))
    }

    fn role(
        &mut self,
        i: usize,
        decls: &[&ast::RoleDecl],
        by_name: &BTreeMap<String, usize>,
        done: &mut Vec<Option<RoleDef>>,
        stack: &mut Vec<usize>,
    ) -> Option<RoleDef> {
        if let Some(Some(r)) = done.get(i) {
            return Some(r.clone());
        }
        let d = *decls.get(i)?;
        if stack.contains(&i) {
            self.err(
                &d.name.span,
                format!("role `{}` extends itself through a cycle", d.name),
            );
            return None;
        }
        let Some(&matrix) = self.matrix_index.get(&d.matrix.text) else {
            let known = list(self.matrix_index.keys());
            self.err(
                &d.matrix.span,
                format!("unknown matrix `{}`: expected one of {known}", d.matrix),
            );
            return None;
        };
        let mut cells: Vec<CellDef> = Vec::new();
        if let Some(base) = &d.extends {
            let Some(&bi) = by_name.get(&base.text) else {
                self.err(&base.span, format!("unknown role `{base}` to extend"));
                return None;
            };
            stack.push(i);
            let b = self.role(bi, decls, by_name, done, stack);
            stack.pop();
            let b = b?;
            if b.matrix != matrix {
                self.err(&base.span, format!("role `{base}` is of another matrix"));
                return None;
            }
            cells = b.cells;
        }
        let m = self.matrices.get(matrix as usize)?.clone();
        let mut seen = Vec::new();
        for c in &d.cells {
            match compile_cell(&m, c) {
                Ok(cell) => {
                    if seen.contains(&cell.row) {
                        self.err(
                            &c.row.span,
                            format!("row `{}` appears twice in role `{}`", c.row, d.name),
                        );
                        continue;
                    }
                    seen.push(cell.row);
                    cells.retain(|x| x.row != cell.row);
                    if cell.page != 0 {
                        cells.push(cell);
                    }
                }
                Err(e) => self.errors.push(e),
            }
        }
        cells.sort_by_key(|c| c.row);
        let r = RoleDef {
            name: d.name.text.clone(),
            matrix,
            cells,
        };
        if let Some(slot) = done.get_mut(i) {
            *slot = Some(r.clone());
        }
        Some(r)
    }

    fn expr(&mut self, sc: Scope, e: &ast::Expr) -> Expr {
        match e {
            ast::Expr::Or(v) => Expr::Or(v.iter().map(|x| self.expr(sc, x)).collect()),
            ast::Expr::And(v) => Expr::And(v.iter().map(|x| self.expr(sc, x)).collect()),
            ast::Expr::Minus(a, b) => {
                let rule = self.leaf_rule(sc, &format!("{} - {}", a, b), b.span());
                Expr::Minus(Box::new(self.expr(sc, a)), Box::new(self.expr(sc, b)), rule)
            }
            ast::Expr::Not(a, span) => {
                let rule = self.leaf_rule(sc, &e.to_string(), span);
                Expr::Not(Box::new(self.expr(sc, a)), rule)
            }
            ast::Expr::Const(b, _) => Expr::Const(*b),
            ast::Expr::Path(p) => self.membership(sc, p),
            ast::Expr::Role {
                matrix,
                row,
                action,
            } => {
                let Some(&mid) = self.matrix_index.get(&matrix.text) else {
                    let known = list(self.matrix_index.keys());
                    self.err(
                        &matrix.span,
                        format!("unknown matrix `{matrix}`: expected one of {known}"),
                    );
                    return Expr::Const(false);
                };
                let Some(m) = self.matrices.get(mid as usize).cloned() else {
                    return Expr::Const(false);
                };
                let Some(&rid) = m.row_index.get(&row.text) else {
                    self.err(
                        &row.span,
                        format!(
                            "unknown row `{row}` of matrix `{matrix}`: expected one of {}",
                            list(m.row_index.keys())
                        ),
                    );
                    return Expr::Const(false);
                };
                let Some(bit) = m.action_bit(rid, &action.text) else {
                    self.err(
                        &action.span,
                        format!("row `{row}` of matrix `{matrix}` takes no action `{action}`"),
                    );
                    return Expr::Const(false);
                };
                let mut scopes = Vec::new();
                let row_scopes = m
                    .rows
                    .get(rid as usize)
                    .map(|r| r.scopes.clone())
                    .unwrap_or_default();
                for s in &row_scopes {
                    match self
                        .types
                        .get(sc.ty as usize)
                        .and_then(|t| t.members.get(s))
                    {
                        Some(MemberRef::Scope(i)) => scopes.push(*i),
                        _ => {
                            let tn = self.type_name(sc.ty).to_string();
                            self.err(&row.span, format!("`{tn}` checks `{matrix}.{row}`, whose cells may be scoped by `{s}`: declare `scope {s} = ...` on `{tn}`"));
                        }
                    }
                }
                let rule = self.leaf_rule(sc, &e.to_string(), &matrix.span);
                Expr::Matrix {
                    matrix: mid,
                    row: rid,
                    action: bit,
                    scopes,
                    rule,
                }
            }
            ast::Expr::Authorized { kind, scope } => {
                let kid = self.literal(&kind.text);
                let scope = scope.as_ref().and_then(|s| {
                    let (op, k) = self.operand(sc, s, None)?;
                    match k {
                        Kind::Value(ValueType::Str) => Some(op),
                        _ => {
                            self.err(
                                s.span(),
                                format!("the scope of `authorized` must be a string, found `{s}`"),
                            );
                            None
                        }
                    }
                });
                let rule = self.kind_rule(kind);
                Expr::Authorized {
                    kind: kid,
                    scope,
                    rule,
                }
            }
            ast::Expr::Cmp { op, lhs, rhs } => {
                let rule = self.leaf_rule(sc, &e.to_string(), lhs.span());
                let l = self.operand(sc, lhs, None);
                let r = self.operand(sc, rhs, l.as_ref().map(|x| &x.1));
                let l = match (&l, &r) {
                    (Some((_, Kind::EnumName(_))), Some((_, k))) => self.operand(sc, lhs, Some(k)),
                    _ => l,
                };
                let (Some((lo, lk)), Some((ro, rk))) = (l, r) else {
                    return Expr::Const(false);
                };
                let ok = match (&lk, &rk) {
                    (Kind::Value(a), Kind::Value(b)) => {
                        a == b
                            && !matches!(a, ValueType::StrSet)
                            && (matches!(op, CmpOp::Eq | CmpOp::Ne)
                                || matches!(a, ValueType::Int | ValueType::Time))
                    }
                    _ => false,
                };
                if !ok {
                    self.err(
                        lhs.span(),
                        format!(
                            "cannot compare `{lhs}` ({}) with `{rhs}` ({}) using `{}`",
                            describe(&lk),
                            describe(&rk),
                            op.as_str()
                        ),
                    );
                    return Expr::Const(false);
                }
                Expr::Cmp {
                    op: *op,
                    lhs: lo,
                    rhs: ro,
                    rule,
                }
            }
            ast::Expr::In { lhs, rhs } => {
                let rule = self.leaf_rule(sc, &e.to_string(), lhs.span());
                let (Some((lo, lk)), Some((ro, rk))) =
                    (self.operand(sc, lhs, None), self.operand(sc, rhs, None))
                else {
                    return Expr::Const(false);
                };
                let ok = matches!(
                    (&lk, &rk),
                    (Kind::Value(ValueType::Str), Kind::Value(ValueType::StrSet))
                        | (Kind::Entities, Kind::Entities)
                );
                if !ok {
                    self.err(lhs.span(), format!("`{lhs} in {rhs}`: expected a string in a set<string>, or entities in a relation; found {} in {}", describe(&lk), describe(&rk)));
                    return Expr::Const(false);
                }
                Expr::In {
                    lhs: lo,
                    rhs: ro,
                    rule,
                }
            }
        }
    }

    /// The one rule of an authorisation kind, shared by every control and `authorized`
    /// check of that kind, so a decision names each failed authorisation once.
    fn kind_rule(&mut self, kind: &ast::Name) -> RuleId {
        if let Some(r) = self.kind_rules.get(&kind.text) {
            return *r;
        }
        let r = self.rule(
            format!("authorization.{kind}"),
            format!("a valid `{kind}` personnel authorisation"),
            &kind.span,
        );
        self.kind_rules.insert(kind.text.clone(), r);
        r
    }

    fn leaf_rule(&mut self, sc: Scope, text: &str, span: &Span) -> RuleId {
        let owner = self.owner_name(sc.owner);
        self.rule(owner, text.to_string(), span)
    }

    fn owner_name(&self, o: RuleOwner) -> String {
        let Some(t) = self.types.get(o.ty as usize) else {
            return String::new();
        };
        let member = match o.kind {
            0 => t.perms.get(o.idx as usize).map(|p| p.name.clone()),
            1 => t.scopes.get(o.idx as usize).map(|p| p.name.clone()),
            _ => t
                .gates
                .get(o.idx as usize)
                .map(|p| format!("gate {}", p.name)),
        };
        format!("{}.{}", t.name, member.unwrap_or_default())
    }

    /// A membership path: `rel`, `rel->member->...`, `target->member`, a bool attribute.
    fn membership(&mut self, sc: Scope, p: &ast::Path) -> Expr {
        let mut segs: Vec<(Sep, &ast::Name)> = vec![(Sep::Dot, &p.head)];
        segs.extend(p.rest.iter().map(|(s, n)| (*s, n)));
        let text = p.to_string();
        match p.head.text.as_str() {
            "target" => {
                let Some(tt) = sc.target else {
                    self.err(&p.head.span, "`target` is used but the permission takes no target: declare `permission name(target: type) = ...`");
                    return Expr::Const(false);
                };
                if segs.len() < 2 {
                    self.err(&p.head.span, "`target` alone is not a rule: expected `target->member` or `target.relation`");
                    return Expr::Const(false);
                }
                let inner = Scope {
                    ty: tt,
                    target: None,
                    owner: sc.owner,
                };
                Expr::OnTarget(Box::new(self.member_path(
                    inner,
                    segs.get(1..).unwrap_or(&[]),
                    &text,
                )))
            }
            "resource" if segs.len() >= 2 => {
                self.member_path(sc, segs.get(1..).unwrap_or(&[]), &text)
            }
            "principal" | "resource" | "account" | "now" => {
                self.err(
                    &p.head.span,
                    format!(
                        "`{text}` is not a rule: expected a relation, a permission or a comparison"
                    ),
                );
                Expr::Const(false)
            }
            _ => self.member_path(sc, &segs, &text),
        }
    }

    fn member_path(&mut self, sc: Scope, segs: &[(Sep, &ast::Name)], text: &str) -> Expr {
        let Some(((_, name), rest)) = segs.split_first() else {
            return Expr::Const(false);
        };
        let Some(td) = self.types.get(sc.ty as usize) else {
            return Expr::Const(false);
        };
        let tn = td.name.clone();
        let Some(m) = td.members.get(&name.text).copied() else {
            let known = list(td.members.keys());
            self.err(
                &name.span,
                format!("`{tn}` has no member `{name}`: expected one of {known}"),
            );
            return Expr::Const(false);
        };
        if let Some(((sep, next), _)) = rest.split_first() {
            let MemberRef::Rel(r) = m else {
                self.err(
                    &next.span,
                    format!("`{tn}.{name}` is not a relation, so `->{next}` cannot follow it"),
                );
                return Expr::Const(false);
            };
            if *sep == Sep::Dot {
                self.err(&next.span, format!("expected `{name}->{next}`: `->` follows a relation to a member of its subjects"));
                return Expr::Const(false);
            }
            let targets = td
                .rels
                .get(r as usize)
                .map(|r| r.targets.clone())
                .unwrap_or_default();
            let mut bodies = Vec::new();
            let before = self.errors.len();
            for t in targets {
                let has = self
                    .types
                    .get(t as usize)
                    .is_some_and(|td| td.members.contains_key(&next.text));
                if !has {
                    continue;
                }
                let inner = Scope {
                    ty: t,
                    target: None,
                    owner: sc.owner,
                };
                bodies.push((t, self.member_path(inner, rest, text)));
            }
            if bodies.is_empty() && self.errors.len() == before {
                self.err(
                    &next.span,
                    format!("no subject type of `{tn}.{name}` has a member `{next}`"),
                );
            }
            let rule = self.leaf_rule(sc, text, &name.span);
            return Expr::Arrow {
                rel: r,
                bodies,
                rule,
            };
        }
        match m {
            MemberRef::Rel(r) => {
                let rule = self.leaf_rule(sc, text, &name.span);
                Expr::Rel { rel: r, rule }
            }
            MemberRef::Perm(i) => {
                let has_target = td.perms.get(i as usize).is_some_and(|p| p.target.is_some());
                if has_target {
                    self.err(
                        &name.span,
                        format!(
                            "`{tn}.{name}` takes a target and cannot be used inside another rule"
                        ),
                    );
                }
                Expr::Perm(sc.ty, i)
            }
            MemberRef::Scope(i) => Expr::Scope(sc.ty, i),
            MemberRef::Attr(a) => {
                let is_bool = td
                    .attrs
                    .get(a as usize)
                    .is_some_and(|x| x.ty == ValueType::Bool);
                if !is_bool {
                    self.err(
                        &name.span,
                        format!("`{tn}.{name}` is an attribute: compare it, e.g. `{name} == ...`"),
                    );
                    return Expr::Const(false);
                }
                let rule = self.leaf_rule(sc, text, &name.span);
                Expr::Cmp {
                    op: CmpOp::Eq,
                    lhs: Operand::Attr {
                        base: Base::Current,
                        path: Vec::new(),
                        attr: (sc.ty, a),
                    },
                    rhs: Operand::Bool(true),
                    rule,
                }
            }
        }
    }

    /// Compiles an operand; `other` is the kind of the other side of a comparison, used to
    /// read a bare name as an enum value.
    fn operand(
        &mut self,
        sc: Scope,
        o: &ast::Operand,
        other: Option<&Kind>,
    ) -> Option<(Operand, Kind)> {
        match o {
            ast::Operand::Now(_) => Some((Operand::Now, Kind::Value(ValueType::Time))),
            ast::Operand::Int(i, _) => Some((Operand::Int(*i), Kind::Value(ValueType::Int))),
            ast::Operand::Str(s, _) => {
                Some((Operand::Str(self.literal(s)), Kind::Value(ValueType::Str)))
            }
            ast::Operand::Bool(b, _) => Some((Operand::Bool(*b), Kind::Value(ValueType::Bool))),
            ast::Operand::Count(paths, span) => {
                let mut rels = Vec::new();
                let mut base = None;
                for p in paths {
                    let (b, path) = self.entity_path(sc, p)?;
                    if base.is_some_and(|x| x != b) {
                        self.err(
                            span,
                            "every relation in `count(...)` must start from the same entity",
                        );
                        return None;
                    }
                    base = Some(b);
                    if path.len() != 1 {
                        self.err(
                            &p.head.span,
                            format!("`count({p})`: expected a relation of one entity, not a path"),
                        );
                        return None;
                    }
                    rels.extend(path);
                }
                Some((
                    Operand::Count {
                        base: base.unwrap_or(Base::Current),
                        rels,
                    },
                    Kind::Value(ValueType::Int),
                ))
            }
            ast::Operand::Path(p) => {
                if p.rest.is_empty() {
                    if let Some(Kind::Value(ValueType::Enum(values))) = other
                        && let Some(i) = values.iter().position(|v| *v == p.head.text)
                    {
                        return Some((
                            Operand::Enum(i as u8),
                            Kind::Value(ValueType::Enum(values.clone())),
                        ));
                    }
                    match p.head.text.as_str() {
                        "principal" => {
                            return Some((Operand::This(Base::Principal), Kind::Entities));
                        }
                        "target" if sc.target.is_some() => {
                            return Some((Operand::This(Base::Target), Kind::Entities));
                        }
                        "resource" => return Some((Operand::This(Base::Current), Kind::Entities)),
                        _ => {}
                    }
                    let td = self.types.get(sc.ty as usize)?;
                    if !td.members.contains_key(&p.head.text) && other.is_none() {
                        return Some((Operand::Int(0), Kind::EnumName(p.head.text.clone())));
                    }
                }
                self.value_path(sc, p)
            }
        }
    }

    /// Resolves the start of a path: its base entity and type, and the remaining names.
    fn path_base<'p>(
        &mut self,
        sc: Scope,
        p: &'p ast::Path,
    ) -> Option<(Base, TypeId, Vec<&'p ast::Name>)> {
        let mut names: Vec<&ast::Name> = vec![&p.head];
        names.extend(p.rest.iter().map(|(_, n)| n));
        let (base, ty, skip) = match p.head.text.as_str() {
            "target" => match sc.target {
                Some(t) => (Base::Target, t, 1),
                None => {
                    self.err(
                        &p.head.span,
                        "`target` is used but the permission takes no target",
                    );
                    return None;
                }
            },
            "account" => (Base::Account, self.type_index.get("account").copied()?, 1),
            "resource" => (Base::Current, sc.ty, 1),
            "principal" => {
                self.err(&p.head.span, format!("`{p}`: principal attributes are checked by the principal type's gates, not in permissions"));
                return None;
            }
            _ => (Base::Current, sc.ty, 0),
        };
        if names.len() <= skip {
            self.err(
                &p.head.span,
                format!(
                    "`{p}`: expected an attribute or relation after `{}`",
                    p.head
                ),
            );
            return None;
        }
        Some((base, ty, names.split_off(skip)))
    }

    fn entity_path(&mut self, sc: Scope, p: &ast::Path) -> Option<(Base, Vec<(TypeId, u16)>)> {
        let (base, mut ty, names) = self.path_base(sc, p)?;
        let mut path = Vec::new();
        for n in names {
            let td = self.types.get(ty as usize)?;
            let Some(r) = td.rel(&n.text) else {
                let tn = td.name.clone();
                self.err(&n.span, format!("`{tn}` has no relation `{n}`"));
                return None;
            };
            path.push((ty, r));
            ty = self.single_target(ty, r, n).unwrap_or(ty);
        }
        Some((base, path))
    }

    fn single_target(&mut self, ty: TypeId, r: u16, n: &ast::Name) -> Option<TypeId> {
        let targets = self
            .types
            .get(ty as usize)?
            .rels
            .get(r as usize)?
            .targets
            .clone();
        match targets.as_slice() {
            [one] => Some(*one),
            _ => {
                self.err(
                    &n.span,
                    format!("`{n}` relates to several types; a path through it must end here"),
                );
                None
            }
        }
    }

    fn value_path(&mut self, sc: Scope, p: &ast::Path) -> Option<(Operand, Kind)> {
        let (base, mut ty, names) = self.path_base(sc, p)?;
        let mut path = Vec::new();
        let last = names.len().saturating_sub(1);
        for (i, n) in names.into_iter().enumerate() {
            let td = self.types.get(ty as usize)?;
            let tn = td.name.clone();
            match td.members.get(&n.text).copied() {
                Some(MemberRef::Attr(a)) if i == last => {
                    let vt = td.attrs.get(a as usize)?.ty.clone();
                    return Some((
                        Operand::Attr {
                            base,
                            path,
                            attr: (ty, a),
                        },
                        Kind::Value(vt),
                    ));
                }
                Some(MemberRef::Rel(r)) => {
                    path.push((ty, r));
                    if i == last {
                        return Some((Operand::Entities { base, path }, Kind::Entities));
                    }
                    ty = self.single_target(ty, r, n)?;
                }
                Some(_) => {
                    self.err(
                        &n.span,
                        format!("`{tn}.{n}` is not an attribute or a relation"),
                    );
                    return None;
                }
                None => {
                    let known = list(td.members.keys());
                    self.err(
                        &n.span,
                        format!(
                            "`{tn}` has no attribute or relation `{n}`: expected one of {known}"
                        ),
                    );
                    return None;
                }
            }
        }
        None
    }
}

fn describe(k: &Kind) -> String {
    match k {
        Kind::Value(v) => v.describe(),
        Kind::Entities => "entities".into(),
        Kind::EnumName(n) => format!("unknown name `{n}`"),
    }
}
