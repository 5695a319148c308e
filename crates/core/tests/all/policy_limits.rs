//! Limits of the compiled form: types, rows and the members of a type are named by `u16`
//! ids, and a policy set with more than an id type can name is refused at the first item
//! too many, with its place. The compiler used to narrow counts with `as`, so that the
//! 65,537th attribute of a type got id 0, the first attribute's, and the policy compiled.

use clearance_core::{Schema, Source};

fn compile(text: &str) -> Result<Schema, Vec<String>> {
    Schema::compile(&[Source::new("t.policy", text)])
        .map_err(|e| e.0.iter().map(|x| x.to_string()).collect())
}

/// `type doc` with attributes `a0` .. `a{n-1}`, `a{i}` on line `i + 2`.
fn attributes(n: usize) -> String {
    let mut text = String::from("type doc {\n");
    for i in 0..n {
        text.push_str(&format!("  a{i}: bool\n"));
    }
    text.push_str("}\n");
    text
}

/// 65,535 attributes of one type compile, each with its own id; the 65,536th is refused
/// where it is written (ids stop below `u16::MAX`), once, not once per attribute past
/// the limit.
#[test]
fn a_type_past_the_attribute_limit_is_refused_at_the_first_one_too_many() {
    let schema = compile(&attributes(65_535)).unwrap();
    let doc = schema.ty(schema.type_id("doc").unwrap()).unwrap();
    assert_eq!(doc.attrs.len(), 65_535);
    assert_eq!(doc.attr("a65534"), Some(65_534));

    let errors = compile(&attributes(65_537)).err().unwrap_or_default();
    assert_eq!(
        errors,
        ["t.policy:65537:3: type `doc` takes at most 65535 attributes: `a65535` is one too many"]
    );
}

/// The prelude's four types and 65,531 more compile; one more is refused.
#[test]
fn a_policy_set_past_the_type_limit_is_refused() {
    let types = |n: usize| -> String { (0..n).map(|i| format!("type t{i} {{}}\n")).collect() };
    let schema = compile(&types(65_531)).unwrap();
    assert_eq!(schema.types.len(), 65_535);
    assert_eq!(schema.type_id("t65530"), Some(65_534));

    let errors = compile(&types(65_533)).err().unwrap_or_default();
    assert_eq!(
        errors,
        ["t.policy:65532:6: a policy set takes at most 65535 types: `t65531` is one too many"]
    );
}

/// A matrix takes at most 65,535 rows.
#[test]
fn a_matrix_past_the_row_limit_is_refused() {
    let mut text = String::from("matrix m {\n  levels\n");
    for i in 0..65_537 {
        text.push_str(&format!("  row r{i}\n"));
    }
    text.push_str("}\n");
    let errors = compile(&text).err().unwrap_or_default();
    assert_eq!(
        errors,
        ["t.policy:65538:7: matrix `m` takes at most 65535 rows: `r65535` is one too many"]
    );
}
