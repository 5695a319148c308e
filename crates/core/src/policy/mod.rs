//! Policy sets: parsing policy text and resolving it into a typed, compiled schema.
//!
//! The compiled form names everything by dense integer ids so a check never does
//! string work: types, attributes, relations, permissions, matrices, rows, actions.
//!
//! [`Schema::compile`] runs the phases in order, each in its own module: `parser` turns
//! every source (the built-in [`PRELUDE`] first) into declarations; `resolve` declares
//! every type, member, matrix and row with its id and compiles each rule with `expr`,
//! which resolves its paths and has `typecheck` check its comparisons; `roles` compiles
//! the policy's roles to cells of action bits; `cost` bounds what one check may visit.
//! Each phase reports every error it finds, with its place, and the next phase goes on
//! from what is left, so one compile reports as much as it can; a policy set with any
//! error is refused.
//!
//! Ids have fixed widths, and a policy set past a limit is refused at the first item too
//! many: at most 65,535 types, matrices, and per type attributes, relations,
//! permissions, scopes and gates (`u16` ids); per matrix 65,535 rows and 31 actions; per
//! row 255 scopes; 250 values per enum; and 4,294,967,295 rules, string literals and
//! roles (`u32` ids).

pub mod ast;
mod cost;
mod expr;
mod lexer;
mod parser;
mod resolve;
mod roles;
mod schema;
mod typecheck;
mod types;

use crate::error::PolicyErrors;
use ast::Decl;
use resolve::Compiler;

pub use ast::{CmpOp, WriteEvent};
pub use cost::{EVAL_DEPTH_LIMIT, MAX_RULE_COST, MAX_RULE_DEPTH, RuleCost};
pub use parser::parse_cell;
pub(crate) use roles::RoleCells;
pub use schema::{
    ActionOutline, MatrixOutline, Outline, PRELUDE, PRELUDE_NAME, Schema, Source, TypeOutline,
    WriteOutline, hex,
};
pub use types::{
    AccountAttrs, AttrDef, AuthorizationAttrs, Base, Builtins, CellDef, ControlDef, Expr,
    LEVEL_ACTIONS, LEVELS, LicenceAttrs, Limits, MatrixDef, MemberRef, NamedRule, Operand, PermDef,
    RelDef, RoleAttrs, RoleDef, RowDef, Rule, RuleId, StrId, TypeDef, TypeId, USE_BIT, ValueType,
    WriteRule,
};

impl Schema {
    /// Parses, validates and compiles a policy set (the prelude is added first).
    pub fn compile(sources: &[Source]) -> Result<Schema, PolicyErrors> {
        let decls = parse(sources)?;
        let mut c = Compiler::default();
        c.request_rules();
        c.declare_types(&decls);
        c.declare_fields(&decls);
        c.bound_relations(&decls);
        c.declare_rules(&decls);
        c.declare_matrices(&decls);
        c.compile_rules(&decls);
        let (roles, role_index) = c.roles(&decls);
        // The cost bound: a policy is bounded before it runs. Only a policy without other
        // errors has every rule compiled to cost.
        if c.errors.is_empty() {
            let over = cost::check(&c.types, &c.rules);
            c.errors.extend(over);
        }
        if !c.errors.is_empty() {
            return Err(PolicyErrors(c.errors));
        }
        Ok(Schema {
            builtins: c.builtins(),
            types: c.types,
            type_index: c.type_index,
            matrices: c.matrices,
            matrix_index: c.matrix_index,
            roles,
            role_index,
            rules: c.rules,
            literals: c.literals,
            hash: schema::policy_hash(sources),
            sources: sources.to_vec(),
        })
    }
}

/// The declarations of the prelude and of every source, in order, or every source's
/// syntax error.
fn parse(sources: &[Source]) -> Result<Vec<Decl>, PolicyErrors> {
    let prelude = Source::new(PRELUDE_NAME, PRELUDE);
    let mut decls = Vec::new();
    let mut errors = Vec::new();
    for s in std::iter::once(&prelude).chain(sources) {
        match parser::parse_file(&s.name, &s.text) {
            Ok(d) => decls.extend(d),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(decls)
    } else {
        Err(PolicyErrors(errors))
    }
}
