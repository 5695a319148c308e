//! The syntax tree of policy files, as written, before names are resolved.

use crate::error::Span;
use std::fmt;

/// A name with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Name {
    /// The name.
    pub text: String,
    /// Where it was written.
    pub span: Span,
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A top-level declaration.
#[derive(Debug, Clone)]
pub enum Decl {
    /// `type NAME [principal] { ... }`
    Type(TypeDecl),
    /// `matrix NAME { ... }`
    Matrix(MatrixDecl),
    /// `role NAME: MATRIX [extends BASE] { ... }`
    Role(RoleDecl),
}

/// An entity type declaration (one of possibly several for the same type).
#[derive(Debug, Clone)]
pub struct TypeDecl {
    /// The type's name.
    pub name: Name,
    /// Whether entities of the type can be principals.
    pub principal: bool,
    /// Attributes, relations, permissions, scopes and gates.
    pub members: Vec<Member>,
}

/// A member of a type.
#[derive(Debug, Clone)]
pub enum Member {
    /// An attribute or a relation.
    Field {
        /// Its name.
        name: Name,
        /// Its type.
        ty: FieldType,
        /// Whether the value may be absent.
        optional: bool,
        /// For relations: the timestamp attribute at which every tuple ends.
        until: Option<Name>,
    },
    /// A permission: an action that can be checked.
    Permission {
        /// Its name (the action).
        name: Name,
        /// The target parameter: its name and type.
        target: Option<(Name, Name)>,
        /// The rule.
        expr: Expr,
    },
    /// A named record scope for scoped role cells.
    Scope {
        /// Its name.
        name: Name,
        /// The rule.
        expr: Expr,
    },
    /// A write rule: which permission authorises a change (X4).
    On {
        /// The kind of change.
        event: WriteEvent,
        /// The relation or attribute changed (`add`, `remove`, `set`).
        member: Option<Name>,
        /// The permission of this type that must allow the author.
        perm: Name,
    },
    /// `auto add rel = perm`: when an entity of the type is created, every candidate
    /// subject of `rel` for which `perm(target)` allows the author is added (EV5).
    Auto {
        /// The relation filled in.
        rel: Name,
        /// The permission, taking the candidate as its target.
        perm: Name,
    },
    /// A check run first for every request of a principal of this type (`gate`), or,
    /// for an `invariant`, a check that every write leaves true of each entity of this
    /// type it changes, judged on the state after the whole write.
    Gate {
        /// Its name; the reason code is `gate.<name>` (`invariant.<name>`).
        name: Name,
        /// The rule that must hold.
        expr: Expr,
        /// The message of a failure.
        message: String,
        /// An invariant of writes, not a gate of requests.
        invariant: bool,
    },
}

/// A kind of change to facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteEvent {
    /// Adding a tuple of a relation.
    Add,
    /// Removing a tuple of a relation.
    Remove,
    /// Setting or clearing an attribute.
    Set,
    /// Creating an entity of the type.
    Create,
    /// Deleting an entity of the type.
    Delete,
}

/// The declared type of a field.
#[derive(Debug, Clone)]
pub enum FieldType {
    /// `bool`
    Bool,
    /// `int`
    Int,
    /// `string`
    Str,
    /// `timestamp`
    Time,
    /// `set<string>`
    StrSet,
    /// `enum{a, b}`
    Enum(Vec<Name>),
    /// A relation to entities of these types.
    Entities(Vec<Name>),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// How two segments of a path are joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sep {
    /// `.`: an attribute or a relation of the entity.
    Dot,
    /// `->`: through a relation to a member of its subjects.
    Arrow,
}

/// A path such as `owner_org->member`, `resource.ends_at` or `aircraft.seat_limit`.
#[derive(Debug, Clone)]
pub struct Path {
    /// The first name.
    pub head: Name,
    /// The following names with their separators.
    pub rest: Vec<(Sep, Name)>,
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.head)?;
        for (sep, n) in &self.rest {
            match sep {
                Sep::Dot => write!(f, ".{n}")?,
                Sep::Arrow => write!(f, "->{n}")?,
            }
        }
        Ok(())
    }
}

/// A value in a comparison.
#[derive(Debug, Clone)]
pub enum Operand {
    /// `now`
    Now(Span),
    /// An integer.
    Int(i64, Span),
    /// A string.
    Str(String, Span),
    /// `true` or `false`.
    Bool(bool, Span),
    /// An attribute, an entity set, or an enum value name.
    Path(Path),
    /// `count(a | b)`: distinct subjects of relations.
    Count(Vec<Path>, Span),
}

impl Operand {
    /// Where the operand starts.
    pub fn span(&self) -> &Span {
        match self {
            Operand::Now(s) | Operand::Int(_, s) | Operand::Str(_, s) | Operand::Bool(_, s) => s,
            Operand::Path(p) => &p.head.span,
            Operand::Count(_, s) => s,
        }
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Now(_) => f.write_str("now"),
            Operand::Int(i, _) => write!(f, "{i}"),
            Operand::Str(s, _) => write!(f, "\"{s}\""),
            Operand::Bool(b, _) => write!(f, "{b}"),
            Operand::Path(p) => write!(f, "{p}"),
            Operand::Count(ps, _) => {
                f.write_str("count(")?;
                for (i, p) in ps.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" | ")?;
                    }
                    write!(f, "{p}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// A permission expression.
#[derive(Debug, Clone)]
pub enum Expr {
    /// `a | b | ...`
    Or(Vec<Expr>),
    /// `a & b & ...`
    And(Vec<Expr>),
    /// `a - b`
    Minus(Box<Expr>, Box<Expr>),
    /// `!a`
    Not(Box<Expr>, Span),
    /// `true` / `false`
    Const(bool, Span),
    /// A membership path: `rel`, `rel->member`, `target->member`.
    Path(Path),
    /// `role(matrix.row.action)`
    Role {
        /// The matrix.
        matrix: Name,
        /// The row.
        row: Name,
        /// The action or level.
        action: Name,
    },
    /// `separate(path)`: separation of duties, the principal is none of the path's
    /// subjects (the inspector is none of the task's performers).
    Separate(Path),
    /// `authorized(kind[, scope][, category: x][, chapter: y][, task_kind: z])`
    Authorized {
        /// The authorisation kind.
        kind: Name,
        /// The value its scope must contain.
        scope: Option<Operand>,
        /// Named limits of a certification check: `category`, `chapter`, `task_kind`.
        limits: Vec<(Name, Operand)>,
    },
    /// `lhs op rhs`
    Cmp {
        /// The operator.
        op: CmpOp,
        /// Left side.
        lhs: Operand,
        /// Right side.
        rhs: Operand,
    },
    /// `lhs in rhs`
    In {
        /// The value or entity set.
        lhs: Operand,
        /// The set attribute or relation.
        rhs: Operand,
    },
}

impl Expr {
    /// Where the expression starts.
    pub fn span(&self) -> &Span {
        match self {
            Expr::Or(v) | Expr::And(v) => match v.first() {
                Some(e) => e.span(),
                None => unreachable_span(),
            },
            Expr::Minus(a, _) => a.span(),
            Expr::Not(_, s) | Expr::Const(_, s) => s,
            Expr::Path(p) | Expr::Separate(p) => &p.head.span,
            Expr::Role { matrix, .. } => &matrix.span,
            Expr::Authorized { kind, .. } => &kind.span,
            Expr::Cmp { lhs, .. } | Expr::In { lhs, .. } => lhs.span(),
        }
    }
}

fn unreachable_span() -> &'static Span {
    static EMPTY: std::sync::OnceLock<Span> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| Span {
        file: String::new(),
        line: 0,
        col: 0,
    })
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Or(v) => join(f, v, " | "),
            Expr::And(v) => join(f, v, " & "),
            Expr::Minus(a, b) => write!(f, "{} - {}", Paren(a), Paren(b)),
            Expr::Not(a, _) => write!(f, "!{}", Paren(a)),
            Expr::Const(b, _) => write!(f, "{b}"),
            Expr::Path(p) => write!(f, "{p}"),
            Expr::Separate(p) => write!(f, "separate({p})"),
            Expr::Role {
                matrix,
                row,
                action,
            } => write!(f, "role({matrix}.{row}.{action})"),
            Expr::Authorized {
                kind,
                scope,
                limits,
            } => {
                write!(f, "authorized({kind}")?;
                if let Some(s) = scope {
                    write!(f, ", {s}")?;
                }
                for (n, o) in limits {
                    write!(f, ", {n}: {o}")?;
                }
                write!(f, ")")
            }
            Expr::Cmp { op, lhs, rhs } => write!(f, "{lhs} {} {rhs}", op.as_str()),
            Expr::In { lhs, rhs } => write!(f, "{lhs} in {rhs}"),
        }
    }
}

struct Paren<'a>(&'a Expr);

impl fmt::Display for Paren<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Expr::Or(_) | Expr::And(_) | Expr::Minus(..) => write!(f, "({})", self.0),
            e => write!(f, "{e}"),
        }
    }
}

fn join(f: &mut fmt::Formatter<'_>, v: &[Expr], sep: &str) -> fmt::Result {
    for (i, e) in v.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        write!(f, "{}", Paren(e))?;
    }
    Ok(())
}

/// A matrix declaration.
#[derive(Debug, Clone)]
pub struct MatrixDecl {
    /// Its name.
    pub name: Name,
    /// `Some(actions)` for an action matrix, `None` for a level matrix.
    pub actions: Option<Vec<Name>>,
    /// Rows in order.
    pub rows: Vec<RowDecl>,
    /// Controlled actions.
    pub controls: Vec<ControlDecl>,
}

/// A row of a matrix.
#[derive(Debug, Clone)]
pub struct RowDecl {
    /// Its name.
    pub name: Name,
    /// Whether it is a named operation (action `use`).
    pub operation: bool,
    /// The account feature it needs.
    pub feature: Option<Name>,
    /// Whether it exists only in setup mode.
    pub setup_only: bool,
    /// The record scopes its cells may name.
    pub scopes: Vec<Name>,
}

/// `control row.action requires kind`
#[derive(Debug, Clone)]
pub struct ControlDecl {
    /// The row.
    pub row: Name,
    /// The action.
    pub action: Name,
    /// The personnel authorisation kind needed.
    pub kind: Name,
}

/// A role declaration.
#[derive(Debug, Clone)]
pub struct RoleDecl {
    /// Its name.
    pub name: Name,
    /// Its matrix.
    pub matrix: Name,
    /// The role it extends.
    pub extends: Option<Name>,
    /// Its cells.
    pub cells: Vec<CellDecl>,
}

/// One cell of a role: a row and what it grants.
#[derive(Debug, Clone)]
pub struct CellDecl {
    /// The row.
    pub row: Name,
    /// Actions (action matrices) or one level, `allow` or `none` (level matrices).
    pub values: Vec<Name>,
    /// Scopes of a level cell.
    pub scopes: Vec<Name>,
}
