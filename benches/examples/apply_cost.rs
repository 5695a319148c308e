//! What a change costs when applied in place (`Snapshot::apply`) against building the
//! snapshot again from the facts after it, at each world scale; and what 10,000 changes
//! held in place (not yet merged by a rebuild) cost every check afterwards.
//!
//! A change is one delta: a tuple of the world removed, or added back with an expiry (a
//! year on, so decisions hardly move), each on a row picked at random.
//!
//! `cargo run --release -p clearance-benches --example apply_cost`

use clearance_benches::{default_schema, percentiles, scales, snapshot, world};
use clearance_core::{Delta, Snapshot, TimeValue, TupleJson};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::Instant;

/// Changes held in place before checks are timed again.
const HELD: usize = 10_000;
/// Requests of the mix timed per round.
const REQUESTS: usize = 16_384;
/// Interleaved rounds of the check timing.
const ROUNDS: usize = 7;

fn main() {
    let schema = default_schema();
    println!(
        "| scale | one delta in place, p50 / p99 | rebuild from the facts, median of 3 | check, built (ns per request, median of 7 rounds) | check, {HELD} changes held | ratio |"
    );
    println!("|---|--:|--:|--:|--:|--:|");
    for scale in scales() {
        let w = world(scale, 7);
        let tuples: Vec<_> = w.facts.tuples.keys().cloned().collect();
        let mut rng = SmallRng::seed_from_u64(11);
        let year_on = TimeValue::Seconds(1_777_593_600 + 365 * 86_400);
        let mut changed = snapshot(&schema, &w);
        let mut facts = w.facts.clone();
        let mut took = Vec::with_capacity(HELD);
        let mut removed: Vec<(String, String, String)> = Vec::new();
        for i in 0..HELD {
            // Remove a tuple, or put back one removed before with an expiry.
            let delta = if i % 2 == 0 || removed.is_empty() {
                let Some((r, rel, s)) = tuples.get(rng.gen_range(0..tuples.len())).cloned() else {
                    continue;
                };
                if facts
                    .tuples
                    .contains_key(&(r.clone(), rel.clone(), s.clone()))
                {
                    removed.push((r.clone(), rel.clone(), s.clone()));
                    Delta::RemoveTuple {
                        tuple: TupleJson {
                            resource: r,
                            relation: rel,
                            subject: s,
                            expires: None,
                        },
                    }
                } else {
                    Delta::AddTuple {
                        tuple: TupleJson {
                            resource: r,
                            relation: rel,
                            subject: s,
                            expires: Some(year_on.clone()),
                        },
                    }
                }
            } else {
                let (r, rel, s) = removed.swap_remove(rng.gen_range(0..removed.len()));
                Delta::AddTuple {
                    tuple: TupleJson {
                        resource: r,
                        relation: rel,
                        subject: s,
                        expires: Some(year_on.clone()),
                    },
                }
            };
            let deltas = [delta];
            let t = Instant::now();
            if let Err(e) = changed.apply(&deltas) {
                eprintln!("{}: {deltas:?}: {} {e}", scale.name, e.code);
                std::process::exit(1);
            }
            took.push(t.elapsed().as_secs_f64() * 1e6);
            if let Err(e) = facts.extend(&deltas) {
                eprintln!("{}: the facts refused {deltas:?}: {e}", scale.name);
                std::process::exit(1);
            }
        }
        let (p50, p99) = percentiles(took);
        let mut rebuilds = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let next = facts
                .apply(&[])
                .and_then(|f| Snapshot::build(Arc::clone(&schema), &f));
            rebuilds.push(t.elapsed().as_secs_f64() * 1e3);
            drop(next);
        }
        rebuilds.sort_by(f64::total_cmp);
        // Checks on the built snapshot and on the changed one, interleaved.
        let requests = w.requests(REQUESTS, 3);
        facts.revision = changed.revision;
        let merged = Snapshot::build(Arc::clone(&schema), &facts).unwrap_or_else(|e| {
            eprintln!("{}: {e}", scale.name);
            std::process::exit(1)
        });
        let time = |s: &Snapshot| {
            let t = Instant::now();
            let mut allowed = 0usize;
            for r in &requests {
                allowed += usize::from(s.check(r).allowed);
            }
            std::hint::black_box(allowed);
            t.elapsed().as_secs_f64() * 1e9 / requests.len() as f64
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            a.push(time(&merged));
            b.push(time(&changed));
        }
        let (ma, _) = percentiles(a);
        let (mb, _) = percentiles(b);
        // The same decisions either way.
        for r in &requests {
            if merged.check(r) != changed.check(r) {
                eprintln!(
                    "{}: {r:?} decided differently after the changes in place",
                    scale.name
                );
                std::process::exit(1);
            }
        }
        println!(
            "| {} | {p50:.1} µs / {p99:.1} µs | {:.1} ms | {ma:.0} ns | {mb:.0} ns | {:.2} |",
            scale.name,
            rebuilds.get(1).copied().unwrap_or_default(),
            mb / ma
        );
    }
}
