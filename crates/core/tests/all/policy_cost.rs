//! The cost bound: a policy is bounded before it runs. A permission that doubles itself
//! forty levels deep used to compile and then run every denied check into the evaluation
//! deadline (2^42 rule nodes); the compiler now refuses every permission, scope and gate
//! whose expanded cost or nesting is over the bound, with the place it is defined.

use clearance_core::policy::{EVAL_DEPTH_LIMIT, MAX_RULE_COST, MAX_RULE_DEPTH};
use clearance_core::{Facts, Request, Schema, Snapshot, Source, TimeValue};
use std::sync::Arc;

fn compile(text: &str) -> Result<Schema, Vec<String>> {
    Schema::compile(&[Source::new("t.policy", text)])
        .map_err(|e| e.0.iter().map(|x| x.to_string()).collect())
}

fn errors_of(text: &str) -> Vec<String> {
    compile(text).err().unwrap_or_default()
}

/// `permission p0 = viewer`, then `permission pK = pJ OP pJ` for K up to `levels`:
/// `pK` is on line K + 4, its name at column 14.
fn doubling(levels: usize, op: &str) -> String {
    let mut text = String::from("type user principal {}\ntype doc {\n  viewer: user\n");
    text.push_str("  permission p0 = viewer\n");
    for k in 1..=levels {
        text.push_str(&format!("  permission p{k} = p{} {op} p{}\n", k - 1, k - 1));
    }
    text.push_str("}\n");
    text
}

/// The cost bound: forty levels of `p | p` (and of `p & p`) are refused, the error names
/// the permission, its place, its cost and the bound, and says how to fix it.
#[test]
fn forty_levels_of_doubling_are_refused() {
    for op in ["|", "&"] {
        let errors = errors_of(&doubling(40, op));
        // pK visits 1 node for its `OP` and 1 + cost(pJ) for each of its two references.
        let cost = |k: u32| 4 * (1u64 << k) - 3;
        let expected = format!(
            "t.policy:44:14: `doc.p40` may visit {} rule nodes in one check, more than the bound of {MAX_RULE_COST}: ",
            cost(40)
        );
        assert!(
            errors.iter().any(|e| e.starts_with(&expected)),
            "expected an error starting `{expected}`, got {errors:#?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("use each permission or scope once per rule")),
            "{errors:#?}"
        );
        // Every level over the bound is reported, and none under it.
        let over: Vec<u32> = (0..=40).filter(|k| cost(*k) > MAX_RULE_COST).collect();
        assert_eq!(errors.len(), over.len(), "{errors:#?}");
        for k in over {
            let at = format!("t.policy:{}:14: `doc.p{k}` may visit {} ", k + 4, cost(k));
            assert!(
                errors.iter().any(|e| e.starts_with(&at)),
                "{at}: {errors:#?}"
            );
        }
    }
}

/// The cost bound: doubling through `->` steps to another type's permission is refused
/// too; each step is one level of evaluation depth and each reference another.
#[test]
fn doubling_through_arrows_to_other_types_is_refused() {
    let levels = 40;
    let mut text = String::from(
        "type user principal {}\ntype t0 {\n  viewer: user\n  permission p = viewer\n}\n",
    );
    for k in 1..=levels {
        text.push_str(&format!(
            "type t{k} {{\n  next: t{}\n  permission p = next->p | next->p\n}}\n",
            k - 1
        ));
    }
    let errors = errors_of(&text);
    // Evaluation stops at its depth limit, so the cost is that of the levels it reaches:
    // `|`, then per `->`: the step, and with a level left, the reference and its rule.
    fn cost(k: u32, left: u32) -> u64 {
        if k == 0 {
            return 1;
        }
        let step = match left {
            0 => 1,
            1 => 2,
            _ => 2 + cost(k - 1, left - 2),
        };
        1 + 2 * step
    }
    // `t40.p` is defined on line 4 * 40 + 4, at column 14.
    let expected = format!(
        "t.policy:164:14: `t40.p` may visit {} rule nodes in one check, more than the bound of {MAX_RULE_COST}",
        cost(40, EVAL_DEPTH_LIMIT)
    );
    assert!(
        errors.iter().any(|e| e.starts_with(&expected)),
        "expected an error starting `{expected}`, got {errors:#?}"
    );
}

/// The cost bound: the scopes a `role(...)` check evaluates count, and a scope that
/// doubles is refused like a permission.
#[test]
fn doubling_scopes_of_a_matrix_row_are_refused() {
    let mut text = String::from(
        "matrix m {\n  levels\n  row r scopes s20\n}\ntype user principal {}\ntype doc {\n  viewer: user\n  scope s0 = viewer\n",
    );
    for k in 1..=20 {
        text.push_str(&format!("  scope s{k} = s{} | s{}\n", k - 1, k - 1));
    }
    text.push_str("  permission view = role(m.r.read)\n}\n");
    let errors = errors_of(&text);
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("t.policy:28:9: `doc.s20` may visit ")),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("t.policy:29:14: `doc.view` may visit ")),
        "{errors:#?}"
    );
}

/// The cost bound: rules under it compile, a chain of references as deep as the depth
/// bound compiles and one level more is refused, and a rule that recurs through a
/// relation is costed to evaluation's depth limit rather than refused.
#[test]
fn moderate_rules_compile_and_the_depth_bound_holds() {
    // Ten levels of doubling: 4 * 2^10 - 3 = 4093 nodes.
    let schema = compile(&doubling(10, "|")).unwrap_or_else(|e| panic!("{e:#?}"));
    let top = schema.rule_costs().iter().map(|c| c.cost).max();
    assert_eq!(top, Some(4093));

    let chain = |levels: u32| {
        let mut text = String::from("type user principal {}\ntype doc {\n  viewer: user\n");
        text.push_str("  permission c0 = viewer\n");
        for k in 1..=levels {
            text.push_str(&format!("  permission c{k} = c{}\n", k - 1));
        }
        text.push_str("}\n");
        text
    };
    let schema = compile(&chain(MAX_RULE_DEPTH)).unwrap_or_else(|e| panic!("{e:#?}"));
    let deepest = schema.rule_costs().iter().filter_map(|c| c.depth).max();
    assert_eq!(deepest, Some(MAX_RULE_DEPTH));
    let errors = errors_of(&chain(MAX_RULE_DEPTH + 1));
    let expected = format!(
        "t.policy:{}:14: `doc.c{}` nests {} references and `->` steps deep, more than the bound of {MAX_RULE_DEPTH}",
        MAX_RULE_DEPTH + 5,
        MAX_RULE_DEPTH + 1,
        MAX_RULE_DEPTH + 1
    );
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].starts_with(&expected), "{errors:#?}");

    // A folder hierarchy where each permission includes the next and all recur.
    let folders = "type user principal {}
type folder {
  parent: folder
  owner: user
  editor: user
  viewer: user
  permission admin = owner | parent->admin
  permission edit = editor | admin | parent->edit
  permission view = viewer | edit | parent->view
}
";
    let schema = compile(folders).unwrap_or_else(|e| panic!("{e:#?}"));
    let costs: Vec<(String, u64)> = schema
        .rule_costs()
        .iter()
        .map(|c| {
            let owner = schema.rule(c.rule).unwrap().owner.clone();
            assert!(c.depth.is_none(), "{owner} recurs: {c:?}");
            (owner, c.cost)
        })
        .collect();
    // `admin` unfolds 24 times (a `->` step and a reference each) at 4 nodes a time, and
    // each of `edit` and `view` unfolds the one before at every step.
    let expected = [
        ("folder.admin", 99),
        ("folder.edit", 1324),
        ("folder.view", 11724),
    ];
    let expected: Vec<(String, u64)> = expected.iter().map(|(o, c)| (o.to_string(), *c)).collect();
    assert_eq!(costs, expected);
    assert!(costs.iter().all(|(_, c)| *c <= MAX_RULE_COST));
}

/// A rule that reaches itself without following a relation never ends: refused, with the
/// loop named.
#[test]
fn a_loop_without_a_relation_is_refused() {
    let errors = errors_of(
        "type user principal {}\ntype doc {\n  viewer: user\n  permission p = viewer | q\n  permission q = p\n}\n",
    );
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].starts_with(
            "t.policy:4:14: `doc.p` refers to itself without following a relation (`doc.p` -> `doc.q` -> `doc.p`)"
        ),
        "{errors:#?}"
    );
    let errors = errors_of("type doc {\n  permission p = p\n}\n");
    assert!(
        errors[0].starts_with(
            "t.policy:2:14: `doc.p` refers to itself without following a relation (`doc.p` -> `doc.p`)"
        ),
        "{errors:#?}"
    );
}

/// The cost of a recursive rule is its unfolding to [`EVAL_DEPTH_LIMIT`], as evaluation
/// unfolds it: a `->` step and a reference are one level each. On a chain of `next`
/// tuples, `member | next->p` reaches the member `floor(limit / 2)` steps away and no
/// further; `member | next->p | next->member`, whose last step is one level only,
/// `floor((limit + 1) / 2)`. Together they pin the evaluator's limit to this constant.
#[test]
fn evaluation_stops_at_the_depth_limit_the_costs_assume() {
    let cases = [
        ("member | next->p", EVAL_DEPTH_LIMIT / 2),
        (
            "member | next->p | next->member",
            EVAL_DEPTH_LIMIT.div_ceil(2),
        ),
    ];
    for (rule, reach) in cases {
        let policy = format!(
            "type user principal {{}}\ntype node {{\n  next: node\n  member: user\n  permission p = {rule}\n}}\n"
        );
        let schema = Arc::new(compile(&policy).unwrap_or_else(|e| panic!("{e:#?}")));
        let allowed = |steps: u32| {
            let mut entities = vec![
                r#"{"type":"account","id":"a"}"#.to_string(),
                r#"{"type":"user","id":"u","account":"a","attrs":{"roles":[]}}"#.to_string(),
            ];
            let mut tuples = Vec::new();
            for i in 0..=steps {
                entities.push(format!(r#"{{"type":"node","id":"n{i}","account":"a"}}"#));
                if i > 0 {
                    tuples.push(format!(
                        r#"{{"resource":"node:n{}","relation":"next","subject":"node:n{i}"}}"#,
                        i - 1
                    ));
                }
            }
            tuples.push(format!(
                r#"{{"resource":"node:n{steps}","relation":"member","subject":"user:u"}}"#
            ));
            let text = format!(
                r#"{{"entities":[{}],"tuples":[{}]}}"#,
                entities.join(","),
                tuples.join(",")
            );
            let facts = Facts::from_json(&text).unwrap_or_else(|e| panic!("{e}"));
            let snap =
                Snapshot::build(Arc::clone(&schema), &facts).unwrap_or_else(|e| panic!("{e}"));
            snap.check(&Request {
                principal: "user:u".into(),
                action: "p".into(),
                resource: "node:n0".into(),
                target: None,
                now: TimeValue::Seconds(0),
            })
            .allowed
        };
        assert!(allowed(reach), "`{rule}` reaches {reach} steps");
        assert!(!allowed(reach + 1), "`{rule}` stops after {reach} steps");
    }
}

/// Every shipped policy still compiles, well under both bounds; prints the figures.
#[test]
fn shipped_policies_compile_under_the_bounds() {
    let sources = crate::policy_sources().unwrap_or_else(|e| panic!("{e}"));
    assert!(!sources.is_empty());
    let schema = Schema::compile(&sources).unwrap_or_else(|e| panic!("{e}"));
    let costs = schema.rule_costs();
    let owner = |c: &clearance_core::policy::RuleCost| schema.rule(c.rule).unwrap().owner.clone();
    let costliest = costs.iter().max_by_key(|c| c.cost).unwrap();
    let deepest = costs.iter().max_by_key(|c| c.depth).unwrap();
    println!(
        "shipped policies: {} rules; max cost {} (`{}`), max depth {:?} (`{}`); recursive: {}",
        costs.len(),
        costliest.cost,
        owner(costliest),
        deepest.depth,
        owner(deepest),
        costs.iter().filter(|c| c.depth.is_none()).count()
    );
    assert!(costliest.cost * 100 <= MAX_RULE_COST, "{costliest:?}");
    assert!(
        deepest.depth.unwrap_or(u32::MAX) * 4 <= MAX_RULE_DEPTH,
        "{deepest:?}"
    );
}
