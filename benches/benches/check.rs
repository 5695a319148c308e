//! Criterion benchmarks of the native core on generated worlds: `check` on resolved
//! requests and on names, snapshot build, plus a per-request latency distribution and the
//! snapshot's memory per tuple printed as a report.

use clearance_benches::{MEDIUM, SMALL, Scale, default_schema, snapshot, world};
use criterion::{BatchSize, Criterion, Throughput, black_box, criterion_group, criterion_main};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;
use std::time::Instant;

/// Counts allocations, to measure what a snapshot really holds.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const REQUESTS: usize = 20_000;

fn scales() -> Vec<Scale> {
    match std::env::var("CLEARANCE_BENCH_SCALES").ok().as_deref() {
        Some("small") => vec![SMALL],
        _ => vec![SMALL, MEDIUM],
    }
}

fn bench(c: &mut Criterion) {
    let schema = default_schema();
    for scale in scales() {
        let w = world(scale, 42);
        let region = Region::new(GLOBAL);
        let t = Instant::now();
        let snap = snapshot(&schema, &w);
        let build = t.elapsed();
        let change = region.change();
        let retained = change
            .bytes_allocated
            .saturating_sub(change.bytes_deallocated) as isize
            + change.bytes_reallocated;
        let requests = w.requests(REQUESTS, 7);
        let queries: Vec<_> = requests
            .iter()
            .filter_map(|r| snap.resolve(r).ok())
            .collect();
        let allowed = requests.iter().filter(|r| snap.check(r).allowed).count();
        // Per-request latency: each request decided 32 times in a row, so clock reads do
        // not dominate; percentiles are over the requests.
        let mut per: Vec<f64> = queries
            .iter()
            .map(|q| {
                let t = Instant::now();
                for _ in 0..32 {
                    black_box(snap.decide(black_box(q)));
                }
                t.elapsed().as_nanos() as f64 / 32.0
            })
            .collect();
        per.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| {
            per.get(((per.len() as f64 - 1.0) * p) as usize)
                .copied()
                .unwrap_or(0.0)
        };
        let tuples = snap.tuple_count();
        println!(
            "report scale={} users={} entities={} tuples={} build_ms={:.0} allocated_bytes={} bytes_per_tuple={:.0} requests={} allowed_pct={:.1} check_p50_ns={:.0} check_p99_ns={:.0}",
            scale.name,
            scale.accounts * scale.users,
            snap.names.len(),
            tuples,
            build.as_secs_f64() * 1e3,
            retained,
            retained as f64 / tuples.max(1) as f64,
            requests.len(),
            allowed as f64 * 100.0 / requests.len() as f64,
            pct(0.5),
            pct(0.99),
        );
        let mut kinds: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
        for r in &requests {
            let kind = format!(
                "{}.{}",
                r.resource.split(':').next().unwrap_or_default(),
                r.action
            );
            let e = kinds.entry(kind).or_default();
            e.0 += 1;
            e.1 += snap.check(r).allowed as usize;
        }
        let mix: Vec<String> = kinds
            .iter()
            .map(|(k, (n, a))| format!("{k}={n}/{:.0}%", *a as f64 * 100.0 / *n as f64))
            .collect();
        println!("mix scale={} {}", scale.name, mix.join(" "));
        let mut g = c.benchmark_group(scale.name.to_string());
        g.throughput(Throughput::Elements(queries.len() as u64));
        g.bench_function("check_resolved", |b| {
            b.iter(|| {
                let mut n = 0usize;
                for q in &queries {
                    n += snap.decide(q).allowed as usize;
                }
                black_box(n)
            })
        });
        g.throughput(Throughput::Elements(requests.len() as u64));
        g.bench_function("check_by_name", |b| {
            b.iter(|| {
                let mut n = 0usize;
                for r in &requests {
                    n += snap.check(r).allowed as usize;
                }
                black_box(n)
            })
        });
        g.finish();
        let mut g = c.benchmark_group(format!("{}_build", scale.name));
        g.sample_size(10);
        g.bench_function("snapshot_build", |b| {
            b.iter_batched(
                || (),
                |_| black_box(snapshot(&schema, &w)),
                BatchSize::PerIteration,
            )
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
