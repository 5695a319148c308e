//! The cost bound: a policy is bounded before it runs. Every permission, scope and gate
//! gets a static cost, the number of rule nodes one check may visit in it, and a policy
//! set whose rules cost too much or nest too deep does not compile.
//!
//! Evaluation memoises nothing: each use of a permission or scope (`p`, `rel->p`, a
//! scope of a `role(...)` cell) evaluates that rule again, on every subject a `->` step
//! reaches. So the cost of a rule is the size of its *expanded tree*, every reference
//! replaced by the rule it names, not the size of the shared graph: `p1 = p0 | p0`,
//! `p2 = p1 | p1`, ... doubles at each step, and forty steps cost 2^42 nodes. What facts
//! multiply (a relation with many subjects) is not counted: each `->` step counts its body
//! once per subject type.
//!
//! Rules may recur through relations (`view = viewer | parent->view`): how deep depends
//! on the facts, and evaluation stops at [`EVAL_DEPTH_LIMIT`]. Such a rule is costed as
//! evaluation unfolds it, one `->` step and one reference at a time down to that limit,
//! and the depth bound does not apply to it. A rule that reaches itself without
//! following a relation never ends on any facts and is refused.
//!
//! The costs are memoised per rule and remaining depth, so the check is linear in the
//! size of the policy (times [`EVAL_DEPTH_LIMIT`]).

use super::types::{Expr, NamedRule, Rule, RuleId, TypeDef, TypeId};
use crate::error::PolicyError;

/// The most rule nodes one permission, scope or gate may visit in one check, counting
/// every referenced rule at each place it is used (see the module documentation).
///
/// Evaluation visits a node in about 15 ns natively (a three-level folder hierarchy of
/// 11,724 nodes decides a denied check in 0.16 ms, explains it in 0.22 ms), so this
/// bounds a check at about 0.3 ms before facts multiply it, inside the 2 ms p99 target.
/// The shipped policies cost at most 30 (`squawk_message.delete`); a rule that recurs
/// through a relation, `admin = owner | parent->admin`, costs 99, and the hierarchy
/// `view = viewer | edit | parent->view`, `edit = editor | admin | parent->edit` costs
/// 11,724 for `view`. The forty-level doubling costs 4 * 2^40 - 3.
pub const MAX_RULE_COST: u64 = 16_384;

/// How deeply a rule may nest references (`p`, a scope of a `role(...)` cell) and `->`
/// steps, each one level as evaluation counts them, when it does not recur.
///
/// Below [`EVAL_DEPTH_LIMIT`], so that evaluation never cuts a rule that does not recur.
/// The shipped policies nest at most 4 deep (`squawk_message.delete`).
pub const MAX_RULE_DEPTH: u32 = 32;

/// How deep evaluation follows references and `->` steps before it denies with
/// `evaluation.too_deep`; it must equal the evaluator's own limit (`eval::MAX_DEPTH`),
/// which a test of the core crate checks.
pub const EVAL_DEPTH_LIMIT: u32 = 48;

/// The static cost of one permission, scope or gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCost {
    /// The rule, in [`Schema::rules`](super::Schema::rules): its owner (`type.member`),
    /// text and place.
    pub rule: RuleId,
    /// How many rule nodes one check may visit in it, saturating at `u64::MAX`.
    pub cost: u64,
    /// How deeply it nests references and `->` steps; `None` if it recurs through a
    /// relation (or uses a rule that does), so that the facts decide.
    pub depth: Option<u32>,
}

/// A permission, scope or gate: a node of the reference graph.
struct Node<'a> {
    ty: TypeId,
    target: Option<TypeId>,
    expr: &'a Expr,
    rule: RuleId,
}

/// The node indices at which a type's permissions, scopes and gates start: its nodes
/// are its permissions, then its scopes, then its gates, in order.
struct Starts {
    perms: usize,
    scopes: usize,
    gates: usize,
}

/// The rules of a compiled policy and the references between them.
struct Graph<'a> {
    nodes: Vec<Node<'a>>,
    /// For each type, where its nodes start.
    starts: Vec<Starts>,
    /// For each node, the nodes it references, and whether through a `->` step.
    refs: Vec<Vec<(usize, bool)>>,
}

impl<'a> Graph<'a> {
    fn new(types: &'a [TypeDef]) -> Graph<'a> {
        let mut nodes = Vec::new();
        let mut starts = Vec::with_capacity(types.len());
        // A compiled schema has fewer than `TypeId::MAX` types, each with its id.
        for (td, ty) in types.iter().zip(0..=TypeId::MAX) {
            let perms = nodes.len();
            nodes.extend(td.perms.iter().map(|p| Node {
                ty,
                target: p.target,
                expr: &p.expr,
                rule: p.rule,
            }));
            let scopes = nodes.len();
            let named = |r: &'a NamedRule| Node {
                ty,
                target: None,
                expr: &r.expr,
                rule: r.rule,
            };
            nodes.extend(td.scopes.iter().map(named));
            let gates = nodes.len();
            nodes.extend(td.gates.iter().map(named));
            nodes.extend(td.invariants.iter().map(named));
            starts.push(Starts {
                perms,
                scopes,
                gates,
            });
        }
        let mut g = Graph {
            nodes,
            starts,
            refs: Vec::new(),
        };
        g.refs = g
            .nodes
            .iter()
            .map(|n| {
                let mut out = Vec::new();
                g.collect(n.expr, n.ty, n.target, false, &mut out);
                out
            })
            .collect();
        g
    }

    /// The node of permission `i` of type `t`.
    fn perm(&self, t: TypeId, i: u16) -> Option<usize> {
        let s = self.starts.get(t as usize)?;
        Some(s.perms + i as usize).filter(|n| *n < s.scopes)
    }

    /// The node of scope `i` of type `t`.
    fn scope(&self, t: TypeId, i: u16) -> Option<usize> {
        let s = self.starts.get(t as usize)?;
        Some(s.scopes + i as usize).filter(|n| *n < s.gates)
    }

    /// The references of `e`, evaluated on an entity of type `cur` (whose target, for a
    /// permission taking one, is of type `target`).
    fn collect(
        &self,
        e: &Expr,
        cur: TypeId,
        target: Option<TypeId>,
        arrow: bool,
        out: &mut Vec<(usize, bool)>,
    ) {
        match e {
            Expr::Or(v) | Expr::And(v) => {
                for x in v {
                    self.collect(x, cur, target, arrow, out);
                }
            }
            Expr::Minus(a, b, _) => {
                self.collect(a, cur, target, arrow, out);
                self.collect(b, cur, target, arrow, out);
            }
            Expr::Not(a, _) | Expr::Separate(a, _) => self.collect(a, cur, target, arrow, out),
            Expr::OnTarget(b) => self.collect(b, target.unwrap_or(cur), None, arrow, out),
            Expr::Arrow { bodies, .. } => {
                for (t, b) in bodies {
                    self.collect(b, *t, None, true, out);
                }
            }
            Expr::Perm(t, i) => out.extend(self.perm(*t, *i).map(|n| (n, arrow))),
            Expr::Scope(t, i) => out.extend(self.scope(*t, *i).map(|n| (n, arrow))),
            Expr::Matrix { scopes, .. } => {
                out.extend(
                    scopes
                        .iter()
                        .filter_map(|i| self.scope(cur, *i))
                        .map(|n| (n, arrow)),
                );
            }
            Expr::Const(_)
            | Expr::Rel { .. }
            | Expr::Authorized { .. }
            | Expr::Cmp { .. }
            | Expr::In { .. } => {}
        }
    }

    /// The nodes in an order where each comes after every node it references, and for
    /// each node whether it is left out because it is on or reaches a cycle. References
    /// through a `->` step are followed only if `arrows`.
    fn peel(&self, arrows: bool) -> (Vec<usize>, Vec<bool>) {
        let n = self.nodes.len();
        let follows = |(_, through): &(usize, bool)| arrows || !through;
        let mut pending: Vec<usize> = self
            .refs
            .iter()
            .map(|r| r.iter().filter(|x| follows(x)).count())
            .collect();
        let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (from, r) in self.refs.iter().enumerate() {
            for x in r.iter().filter(|x| follows(x)) {
                if let Some(u) = users.get_mut(x.0) {
                    u.push(from);
                }
            }
        }
        let mut order: Vec<usize> = (0..n)
            .filter(|i| pending.get(*i).is_some_and(|p| *p == 0))
            .collect();
        let mut next = 0;
        while let Some(&done) = order.get(next) {
            next += 1;
            for &u in users.get(done).map_or(&[][..], |v| &v[..]) {
                if let Some(p) = pending.get_mut(u) {
                    *p -= 1;
                    if *p == 0 {
                        order.push(u);
                    }
                }
            }
        }
        let mut left = vec![true; n];
        for i in &order {
            if let Some(l) = left.get_mut(*i) {
                *l = false;
            }
        }
        (order, left)
    }

    fn name(&self, rules: &[Rule], n: usize) -> String {
        self.nodes
            .get(n)
            .and_then(|x| rules.get(x.rule as usize))
            .map_or_else(String::new, |r| r.owner.clone())
    }

    /// The cycles of references that never follow a relation, one error each.
    fn same_entity_cycles(&self, rules: &[Rule]) -> Vec<PolicyError> {
        let (_, left) = self.peel(false);
        let on = |i: usize| left.get(i).copied().unwrap_or(false);
        let mut seen = vec![false; self.nodes.len()];
        let mut errors = Vec::new();
        for start in (0..self.nodes.len()).filter(|i| on(*i)) {
            // Every node left has a reference to another node left: walk until a repeat.
            let mut path: Vec<usize> = Vec::new();
            let mut at = start;
            while !seen.get(at).copied().unwrap_or(true) {
                if let Some(s) = seen.get_mut(at) {
                    *s = true;
                }
                path.push(at);
                let step = self
                    .refs
                    .get(at)
                    .and_then(|r| r.iter().find(|(x, through)| !through && on(*x)));
                match step {
                    Some((x, _)) => at = *x,
                    None => break,
                }
            }
            let Some(pos) = path.iter().position(|x| *x == at) else {
                continue;
            };
            let cycle = path.get(pos..).unwrap_or(&[]);
            let Some(&first) = cycle.iter().min() else {
                continue;
            };
            let from = cycle.iter().position(|x| *x == first).unwrap_or(0);
            let names: Vec<String> = cycle
                .iter()
                .cycle()
                .skip(from)
                .take(cycle.len() + 1)
                .map(|x| format!("`{}`", self.name(rules, *x)))
                .collect();
            let Some(rule) = self
                .nodes
                .get(first)
                .and_then(|x| rules.get(x.rule as usize))
            else {
                continue;
            };
            errors.push(PolicyError::new(
                rule.span.clone(),
                format!(
                    "`{}` refers to itself without following a relation ({}), so evaluating it never ends: remove the loop, or make it go through a relation (e.g. `parent->{}`)",
                    rule.owner,
                    names.join(" -> "),
                    rule.owner.rsplit('.').next().unwrap_or_default(),
                ),
            ));
        }
        errors
    }

    /// How deeply each node nests references and `->` steps, `None` for the nodes that
    /// recur (through relations: cycles without one are refused before).
    fn depths(&self) -> Vec<Option<u32>> {
        let (order, _) = self.peel(true);
        let mut depth: Vec<Option<u32>> = vec![None; self.nodes.len()];
        for i in order {
            let Some(n) = self.nodes.get(i) else { continue };
            let d = self.depth_of(n.expr, n.ty, n.target, &depth);
            if let Some(slot) = depth.get_mut(i) {
                *slot = Some(d);
            }
        }
        depth
    }

    fn depth_of(
        &self,
        e: &Expr,
        cur: TypeId,
        target: Option<TypeId>,
        depth: &[Option<u32>],
    ) -> u32 {
        let of = |n: Option<usize>| {
            n.and_then(|n| depth.get(n).copied().flatten())
                .unwrap_or(0)
                .saturating_add(1)
        };
        match e {
            Expr::Or(v) | Expr::And(v) => v
                .iter()
                .map(|x| self.depth_of(x, cur, target, depth))
                .max()
                .unwrap_or(0),
            Expr::Minus(a, b, _) => self
                .depth_of(a, cur, target, depth)
                .max(self.depth_of(b, cur, target, depth)),
            Expr::Not(a, _) | Expr::Separate(a, _) => self.depth_of(a, cur, target, depth),
            Expr::OnTarget(b) => self.depth_of(b, target.unwrap_or(cur), None, depth),
            Expr::Arrow { bodies, .. } => bodies
                .iter()
                .map(|(t, b)| self.depth_of(b, *t, None, depth))
                .max()
                .unwrap_or(0)
                .saturating_add(1),
            Expr::Perm(t, i) => of(self.perm(*t, *i)),
            Expr::Scope(t, i) => of(self.scope(*t, *i)),
            Expr::Matrix { scopes, .. } => scopes
                .iter()
                .map(|i| of(self.scope(cur, *i)))
                .max()
                .unwrap_or(0),
            Expr::Const(_)
            | Expr::Rel { .. }
            | Expr::Authorized { .. }
            | Expr::Cmp { .. }
            | Expr::In { .. } => 0,
        }
    }

    /// The cost of every node evaluated from the top (with [`EVAL_DEPTH_LIMIT`] levels
    /// left), computed for every remaining depth from 0 up, each from the one below.
    fn costs(&self) -> Vec<u64> {
        let mut table: Vec<Vec<u64>> = Vec::with_capacity(EVAL_DEPTH_LIMIT as usize + 1);
        for left in 0..=EVAL_DEPTH_LIMIT {
            let row = self
                .nodes
                .iter()
                .map(|n| self.cost_of(n.expr, n.ty, n.target, left, &table))
                .collect();
            table.push(row);
        }
        table.pop().unwrap_or_default()
    }

    /// The nodes evaluation may visit in `e` with `left` levels of depth left, given the
    /// cost of every node for each smaller number of levels left.
    fn cost_of(
        &self,
        e: &Expr,
        cur: TypeId,
        target: Option<TypeId>,
        left: u32,
        table: &[Vec<u64>],
    ) -> u64 {
        // A referenced rule is evaluated one level deeper, if any level is left.
        let nested = |n: Option<usize>| match left.checked_sub(1) {
            Some(below) => n
                .and_then(|n| table.get(below as usize)?.get(n).copied())
                .unwrap_or(0),
            None => 0,
        };
        let below = match e {
            Expr::Or(v) | Expr::And(v) => v
                .iter()
                .map(|x| self.cost_of(x, cur, target, left, table))
                .fold(0, u64::saturating_add),
            Expr::Minus(a, b, _) => self
                .cost_of(a, cur, target, left, table)
                .saturating_add(self.cost_of(b, cur, target, left, table)),
            Expr::Not(a, _) | Expr::Separate(a, _) => self.cost_of(a, cur, target, left, table),
            Expr::OnTarget(b) => self.cost_of(b, target.unwrap_or(cur), None, left, table),
            // The subjects' rules are evaluated one level deeper, if any level is left.
            Expr::Arrow { bodies, .. } => match left.checked_sub(1) {
                Some(l) => bodies
                    .iter()
                    .map(|(t, b)| self.cost_of(b, *t, None, l, table))
                    .fold(0, u64::saturating_add),
                None => 0,
            },
            Expr::Perm(t, i) => nested(self.perm(*t, *i)),
            Expr::Scope(t, i) => nested(self.scope(*t, *i)),
            Expr::Matrix { scopes, .. } => scopes
                .iter()
                .map(|i| nested(self.scope(cur, *i)))
                .fold(0, u64::saturating_add),
            Expr::Const(_)
            | Expr::Rel { .. }
            | Expr::Authorized { .. }
            | Expr::Cmp { .. }
            | Expr::In { .. } => 0,
        };
        below.saturating_add(1)
    }
}

/// The cost and depth of every permission, scope and gate, or the cycles of references
/// that never follow a relation (their cost would be that of evaluation's depth limit).
pub(crate) fn rule_costs(
    types: &[TypeDef],
    rules: &[Rule],
) -> Result<Vec<RuleCost>, Vec<PolicyError>> {
    let g = Graph::new(types);
    let cycles = g.same_entity_cycles(rules);
    if !cycles.is_empty() {
        return Err(cycles);
    }
    let depths = g.depths();
    let costs = g.costs();
    Ok(g.nodes
        .iter()
        .zip(costs)
        .zip(depths)
        .map(|((n, cost), depth)| RuleCost {
            rule: n.rule,
            cost,
            depth,
        })
        .collect())
}

/// An error for every permission, scope and gate over [`MAX_RULE_COST`] or
/// [`MAX_RULE_DEPTH`], or in a cycle of references that never follows a relation.
pub(crate) fn check(types: &[TypeDef], rules: &[Rule]) -> Vec<PolicyError> {
    let costs = match rule_costs(types, rules) {
        Ok(c) => c,
        Err(cycles) => return cycles,
    };
    let mut errors = Vec::new();
    for c in costs {
        let Some(rule) = rules.get(c.rule as usize) else {
            continue;
        };
        let owner = &rule.owner;
        let message = if c.cost > MAX_RULE_COST {
            let cost = if c.cost == u64::MAX {
                format!("more than {}", u64::MAX - 1)
            } else {
                c.cost.to_string()
            };
            format!(
                "`{owner}` may visit {cost} rule nodes in one check, more than the bound of {MAX_RULE_COST}: every use of a permission or scope is evaluated again (no result is reused), so a rule that uses another twice costs it twice and each level of such doubling doubles the total; use each permission or scope once per rule (`p | p` is `p`), or keep the repeated part as a relation in the facts"
            )
        } else if let Some(depth) = c.depth.filter(|d| *d > MAX_RULE_DEPTH) {
            format!(
                "`{owner}` nests {depth} references and `->` steps deep, more than the bound of {MAX_RULE_DEPTH} (evaluation stops at {EVAL_DEPTH_LIMIT} and denies): shorten the chain, e.g. refer to the relations a long chain of permissions ends in"
            )
        } else {
            continue;
        };
        errors.push(PolicyError::new(rule.span.clone(), message));
    }
    errors
}
