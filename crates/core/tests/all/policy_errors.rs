//! The text of policy errors, snapshotted: broken policies of every kind the compiler
//! reports (lexer, parser, name resolution, types, the cost bound), each with the
//! messages it gives, located as `file:line:col`. A change to any message is a reviewed
//! diff of `snapshots/all__policy_errors__broken_policies.snap`.

use clearance_core::{Schema, Source};
use std::fmt::Write;

/// `permission p0 = viewer`, then `permission pK = pJ | pJ` up to `levels`: the cost of
/// `pK` doubles with every level.
fn doubling(levels: usize) -> String {
    let mut text = String::from("type user principal {}\ntype doc {\n  viewer: user\n");
    text.push_str("  permission p0 = viewer\n");
    for k in 1..=levels {
        text.push_str(&format!("  permission p{k} = p{} | p{}\n", k - 1, k - 1));
    }
    text.push_str("}\n");
    text
}

#[test]
fn broken_policies_say_where_and_what() {
    let cases: Vec<(&str, String)> = vec![
        (
            "lexer: a string left open",
            "type a {\n  s: \"unterminated\n}".into(),
        ),
        (
            "lexer: a character of no token",
            "type a {\n  permission p = x $ y\n}".into(),
        ),
        (
            "parser: a rule with no expression",
            "type a {\n  permission p =\n}".into(),
        ),
        ("parser: a type left open", "type user {".into()),
        (
            "parser: a gate on a type that is no principal",
            "type a { gate g = true else \"x\" }".into(),
        ),
        (
            "resolution: an invariant declared twice, and one naming an unknown relation",
            "type a {\n  n: int\n  invariant i = n < 3 else \"x\"\n  invariant i = n < 4 else \"y\"\n  invariant j = count(nosuch) < n else \"z\"\n}".into(),
        ),
        (
            "parser: separation of duties from something that is no relation path",
            "type user principal {}\ntype a {\n  n: int\n  permission p = separate(3)\n}".into(),
        ),
        (
            "resolution: separation of duties from an unknown relation",
            "type user principal {}\ntype a {\n  permission p = separate(nosuch)\n}".into(),
        ),
        (
            "parser: an invariant without its message",
            "type a {\n  n: int\n  invariant i = n < 3\n}".into(),
        ),
        (
            "resolution: an unknown type, member and relation, all reported",
            "type a {\n  b: nosuch\n  r: a\n  permission p = missing\n  permission q = r->gone\n}"
                .into(),
        ),
        (
            "resolution: an unknown matrix, action and role",
            "matrix m {\n  actions view\n  row r\n}\nrole x: m {\n  r: fly\n}\nrole y: m extends nobody {\n}\ntype a {\n  permission p = role(nomatrix.x.y)\n}"
                .into(),
        ),
        (
            "resolution: a member declared twice",
            "type a {\n  b: int\n  b: int\n}".into(),
        ),
        (
            "types: a comparison of an int with a string",
            "type a {\n  n: int\n  permission p = n == \"x\"\n}".into(),
        ),
        (
            "types: an expiry that is no timestamp",
            "type a {\n  e: timestamp\n  r: a until nope\n}".into(),
        ),
        ("cost: a permission doubling itself", doubling(13)),
        (
            "cost: a loop with no relation",
            "type doc {\n  permission p = q\n  permission q = p\n}\n".into(),
        ),
    ];
    let mut out = String::new();
    for (what, text) in &cases {
        let _ = writeln!(out, "── {what}");
        for (i, line) in text.lines().enumerate() {
            let _ = writeln!(out, "{:>4} | {line}", i + 1);
        }
        match Schema::compile(&[Source::new("t.policy", text.as_str())]) {
            Ok(_) => panic!("{what}: the policy compiled"),
            Err(errors) => {
                let _ = writeln!(out, "{errors}\n");
            }
        }
    }
    insta::assert_snapshot!("broken_policies", out);
}
