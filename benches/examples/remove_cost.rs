//! What removing an entity costs, applied in place to the snapshot (`Snapshot::apply`)
//! and to the host's facts, at each world scale: an entity takes its tuples with it,
//! those naming it as their resource and those naming it as a subject. The host finds
//! the latter first (`Facts::removals`, a pass over the tuples while others read), then
//! holds the facts to apply the change (`Facts::extend_found`).
//!
//! `cargo run --release -p clearance-benches --example remove_cost`

// A benchmark: it indexes its own generated inputs.
#![allow(clippy::indexing_slicing)]

use clearance_benches::{default_schema, percentiles, scales, snapshot, world};
use clearance_core::Delta;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

/// Entities removed of each type.
const REMOVED: usize = 40;

fn main() {
    let schema = default_schema();
    println!(
        "| scale | type | tuples taken, mean | snapshot, p50 / max | facts: finding, p50 / max | facts: applying (write lock), p50 / max |"
    );
    println!("|---|---|--:|--:|--:|--:|");
    for scale in scales() {
        let w = world(scale, 7);
        let mut snap = snapshot(&schema, &w);
        let mut facts = w.facts.clone();
        let mut rng = SmallRng::seed_from_u64(5);
        for ty in ["user", "aircraft", "event"] {
            let keys: Vec<String> = facts
                .entities
                .iter()
                .filter(|(_, e)| e.ty == ty)
                .map(|(k, _)| k.clone())
                .collect();
            if keys.is_empty() {
                continue;
            }
            let (mut a, mut b, mut c, mut taken) = (Vec::new(), Vec::new(), Vec::new(), 0usize);
            for _ in 0..REMOVED {
                let key = keys[rng.gen_range(0..keys.len())].clone();
                if !facts.entities.contains_key(&key) {
                    continue;
                }
                let deltas = [Delta::RemoveEntity { entity: key }];
                let before = facts.tuples.len();
                let t = Instant::now();
                if let Err(e) = snap.apply(&deltas) {
                    eprintln!("{}: {deltas:?}: {e}", scale.name);
                    std::process::exit(1);
                }
                a.push(t.elapsed().as_secs_f64() * 1e3);
                let t = Instant::now();
                let mut found = facts.removals([deltas.as_slice()]);
                b.push(t.elapsed().as_secs_f64() * 1e3);
                let t = Instant::now();
                if let Err(e) = facts.extend_found(&deltas, &mut found) {
                    eprintln!("{}: {deltas:?}: {e}", scale.name);
                    std::process::exit(1);
                }
                c.push(t.elapsed().as_secs_f64() * 1e3);
                taken += before - facts.tuples.len();
            }
            let n = a.len().max(1);
            let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
            let (amax, bmax, cmax) = (max(&a), max(&b), max(&c));
            let ((a50, _), (b50, _), (c50, _)) = (percentiles(a), percentiles(b), percentiles(c));
            println!(
                "| {} | {ty} | {:.1} | {a50:.2} / {amax:.2} ms | {b50:.2} / {bmax:.2} ms | {c50:.3} / {cmax:.3} ms |",
                scale.name,
                taken as f64 / n as f64
            );
        }
    }
}
