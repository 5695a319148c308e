//! Type checking of rule expressions: the kind of every compiled operand, and which
//! kinds a comparison, a membership test or an `authorized` scope may take, with the
//! error that says what was found instead.

use super::ast::{self, CmpOp};
use super::types::ValueType;

/// The kind of a compiled operand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    /// A value of a type.
    Value(ValueType),
    /// A set of entities (or one entity).
    Entities,
    /// A bare name that is no member: an enum value, once the other side says of which
    /// enum.
    EnumName(String),
}

impl Kind {
    fn describe(&self) -> String {
        match self {
            Kind::Value(v) => v.describe(),
            Kind::Entities => "entities".into(),
            Kind::EnumName(n) => format!("unknown name `{n}`"),
        }
    }
}

/// `lhs op rhs` compares two values of one type, not sets; `<`, `<=`, `>`, `>=` only
/// integers and timestamps.
pub(super) fn check_cmp(
    op: CmpOp,
    (lhs, l): (&ast::Operand, &Kind),
    (rhs, r): (&ast::Operand, &Kind),
) -> Result<(), String> {
    let ok = match (l, r) {
        (Kind::Value(a), Kind::Value(b)) => {
            a == b
                && !matches!(a, ValueType::StrSet)
                && (matches!(op, CmpOp::Eq | CmpOp::Ne)
                    || matches!(a, ValueType::Int | ValueType::Time))
        }
        _ => false,
    };
    if ok {
        return Ok(());
    }
    Err(format!(
        "cannot compare `{lhs}` ({}) with `{rhs}` ({}) using `{}`",
        l.describe(),
        r.describe(),
        op.as_str()
    ))
}

/// `lhs in rhs` tests a string in a `set<string>`, or entities in entities.
pub(super) fn check_in(
    (lhs, l): (&ast::Operand, &Kind),
    (rhs, r): (&ast::Operand, &Kind),
) -> Result<(), String> {
    let ok = matches!(
        (l, r),
        (Kind::Value(ValueType::Str), Kind::Value(ValueType::StrSet))
            | (Kind::Entities, Kind::Entities)
    );
    if ok {
        return Ok(());
    }
    Err(format!(
        "`{lhs} in {rhs}`: expected a string in a set<string>, or entities in a relation; found {} in {}",
        l.describe(),
        r.describe()
    ))
}

/// The scope of `authorized(kind, scope)` is a string.
pub(super) fn check_authorized_scope(scope: &ast::Operand, k: &Kind) -> Result<(), String> {
    match k {
        Kind::Value(ValueType::Str) => Ok(()),
        _ => Err(format!(
            "the scope of `authorized` must be a string, found `{scope}`"
        )),
    }
}
