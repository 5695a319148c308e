//! The compiled policy: entity types with their attributes, relations, permissions,
//! scopes and gates, rule expressions, role matrices and roles, every name resolved to a
//! dense integer id so that a check never does string work.

use super::ast::{CmpOp, WriteEvent};
use crate::error::Span;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A type's index in [`Schema::types`](super::Schema::types).
pub type TypeId = u16;
/// An index into [`Schema::rules`](super::Schema::rules).
pub type RuleId = u32;
/// An index into [`Schema::literals`](super::Schema::literals) (and the snapshot's string table).
pub type StrId = u32;

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
    /// The type as a policy writes it.
    pub(super) fn describe(&self) -> String {
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
    /// Invariants: what every write leaves true of each entity of the type it changes.
    pub invariants: Vec<NamedRule>,
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
    /// Separation of duties: the membership does not hold (`separate(path)`); failing
    /// gives `duty.conflict`.
    Separate(Box<Expr>, RuleId),
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
        /// A certification check's limits: the licence category the task needs, its ATA
        /// chapter, its kind.
        limits: Box<Limits>,
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
                (false, a) if a != "use" => LEVEL_ACTIONS
                    .iter()
                    .position(|x| *x == a)
                    .and_then(|i| u8::try_from(i).ok()),
                _ => None,
            }
        } else {
            self.actions
                .iter()
                .position(|x| x == action)
                .and_then(|i| u8::try_from(i).ok())
        }
    }

    /// The action bits a row takes.
    pub fn row_actions(&self, row: u16) -> u32 {
        match self.rows.get(row as usize) {
            Some(r) if self.levels && r.operation => 1 << USE_BIT,
            Some(_) if self.levels => 0b1111,
            // Every action's bit: a matrix takes at most 31 actions, and all 32 bits if
            // it had more.
            Some(_) => u32::try_from(self.actions.len())
                .ok()
                .and_then(|n| 1u32.checked_shl(n))
                .map_or(u32::MAX, |b| b - 1),
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

/// Ids of the built-in types of the prelude and of the attributes the engine reads.
#[derive(Debug, Clone, Default)]
pub struct Builtins {
    /// `account`
    pub account: TypeId,
    /// `role`
    pub role: TypeId,
    /// `authorization`
    pub authorization: TypeId,
    /// The attributes of `account`.
    pub account_attrs: AccountAttrs,
    /// The attributes of `role`.
    pub role_attrs: RoleAttrs,
    /// The attributes of `authorization`.
    pub auth_attrs: AuthorizationAttrs,
    /// `licence`
    pub licence: TypeId,
    /// The attributes of `licence`.
    pub licence_attrs: LicenceAttrs,
}

/// The built-in attributes of `account`, by index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountAttrs {
    /// `features`: the features the account has enabled.
    pub features: u16,
    /// `setup_mode`: whether rows marked `setup_only` exist.
    pub setup_mode: u16,
}

/// The built-in attributes of `role` (a custom role defined as data), by index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoleAttrs {
    /// `matrix`: the matrix the role is of.
    pub matrix: u16,
    /// `extends`: the role it extends.
    pub extends: u16,
    /// `cells`: its cells as written.
    pub cells: u16,
}

/// The built-in attributes of `authorization`, by index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthorizationAttrs {
    /// `kind`
    pub kind: u16,
    /// `valid_from`
    pub valid_from: u16,
    /// `valid_until`
    pub valid_until: u16,
    /// `scope`: the values a check's scope may take; empty means any.
    pub scope: u16,
    /// `revoked`
    pub revoked: u16,
    /// `categories`: the licence categories a certification authorisation grants.
    pub categories: u16,
    /// `chapters`: the ATA chapters it is limited to; empty means any.
    pub chapters: u16,
    /// `task_kinds`: the task kinds it is limited to; empty means any.
    pub task_kinds: u16,
    /// The relation `licence`: the licence it rests on.
    pub licence: u16,
}

/// What a certification authorisation must cover, besides its scope (all absent for a
/// plain authorisation check).
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// The licence category the task needs: one of the authorisation's categories, and
    /// of its licence's, must cover it (`B1` covers `B1.1`).
    pub category: Option<Operand>,
    /// The task's ATA chapter: in the authorisation's chapters, or they are empty.
    pub chapter: Option<Operand>,
    /// The task's kind: in the authorisation's task kinds, or they are empty.
    pub task_kind: Option<Operand>,
}

/// The attribute ids of the built-in `licence` type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LicenceAttrs {
    /// `categories`
    pub categories: u16,
    /// `valid_until`
    pub valid_until: u16,
    /// `revoked`
    pub revoked: u16,
}
