//! Criterion benchmarks of the native core on generated worlds at three scales: `check`
//! on resolved requests and on names, `allowed_actions`, `list_resources` (a contractor's
//! events, an owner's flights), `list_principals`, snapshot build and a delta applied.
//! Each scale first prints a `report` line: sizes, build time, retained and peak memory,
//! the request mix, and per-request latency percentiles.
//!
//! `CLEARANCE_BENCH_SCALES` picks the scales: `small`, `medium`, `large`, or a comma list;
//! all three by default.

// A benchmark: it indexes its own generated inputs, and criterion's macros define
// undocumented functions; neither is reachable from outside input.
#![allow(clippy::indexing_slicing, missing_docs)]

use clearance_benches::{Scale, default_schema, percentiles, scales, snapshot, world};
use clearance_core::{Delta, Request, Snapshot, TimeValue};
use criterion::{BatchSize, Criterion, Throughput, black_box, criterion_group, criterion_main};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;
use std::sync::Arc;
use std::time::Instant;

/// Counts allocations, to measure what a snapshot really holds.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const REQUESTS: usize = 20_000;

/// The process's peak resident memory since the last reset, in bytes (Linux), and resets
/// it; `None` elsewhere.
fn peak_rss_reset() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    Some(kb * 1024)
}

/// Times `f` once per item (repeated `reps` times), in nanoseconds per call.
fn per_call<T>(items: &[T], reps: u32, mut f: impl FnMut(&T)) -> Vec<f64> {
    items
        .iter()
        .map(|x| {
            let t = Instant::now();
            for _ in 0..reps {
                f(x);
            }
            t.elapsed().as_nanos() as f64 / reps as f64
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let schema = default_schema();
    for scale in scales() {
        let w = world(scale, 42);
        let _ = peak_rss_reset();
        let before = peak_rss_reset().unwrap_or(0);
        let region = Region::new(GLOBAL);
        let t = Instant::now();
        let snap = snapshot(&schema, &w);
        let build = t.elapsed();
        let change = region.change();
        let peak = peak_rss_reset().unwrap_or(0).saturating_sub(before);
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
        let (p50, p99) = percentiles(per_call(&queries, 32, |q| {
            black_box(snap.decide(black_box(q)));
        }));
        // What a denial's reasons cost: the batch decided with reasons (`decide`) against
        // the same batch decided without them (`allows`, one pass), interleaved; the
        // median of 9 pairs.
        let mut with_reasons: Vec<f64> = (0..9)
            .map(|_| {
                let t = Instant::now();
                let mut n = 0usize;
                for q in &queries {
                    n += snap.decide(q).allowed as usize;
                }
                black_box(n);
                let full = t.elapsed().as_secs_f64();
                let t = Instant::now();
                for q in &queries {
                    n += snap.allows(q) as usize;
                }
                black_box(n);
                full / t.elapsed().as_secs_f64()
            })
            .collect();
        with_reasons.sort_by(|a, b| a.total_cmp(b));
        let reasons_cost = with_reasons.get(4).copied().unwrap_or(0.0);
        let (named_p50, _) = percentiles(per_call(&requests, 16, |r| {
            black_box(snap.check(black_box(r)));
        }));
        let now = TimeValue::Seconds(clearance_benches::EPOCH + 3_600);
        let probes: Vec<_> = (0..w.account_count().min(8)).map(|a| w.probes(a)).collect();
        let (events_p50, events_max, events_n) = listing(&probes, |p| {
            snap.list_resources(&p.contractor, "view", "event", &now)
        });
        let (flights_p50, flights_max, flights_n) = listing(&probes, |p| {
            snap.list_resources(&p.owner, "view", "flight", &now)
        });
        let (principals_p50, _, principals_n) = listing(&probes, |p| {
            snap.list_principals(&p.event, "view", &now, None)
        });
        let (actions_p50, _) =
            percentiles(per_call(&requests[..2_000.min(requests.len())], 4, |r| {
                let _ = black_box(snap.allowed_actions(&r.principal, &r.resource, &r.now));
            }));
        let tuples = snap.tuple_count();
        println!(
            "report scale={} users={} resources={} entities={} tuples={} build_ms={:.0} allocated_bytes={} bytes_per_tuple={:.0} peak_build_rss_mb={:.0} requests={} allowed_pct={:.1} check_p50_ns={:.0} check_p99_ns={:.0} check_by_name_p50_ns={:.0} decide_over_allows={:.2} allowed_actions_p50_us={:.2} list_contractor_events_p50_ms={:.3} max_ms={:.3} (found {}) list_owner_flights_p50_ms={:.3} max_ms={:.3} (found {}) list_principals_p50_ms={:.3} (found {})",
            scale.name,
            scale.accounts * scale.users,
            scale.accounts * scale.resources,
            snap.names.len(),
            tuples,
            build.as_secs_f64() * 1e3,
            retained,
            retained as f64 / tuples.max(1) as f64,
            peak as f64 / 1e6,
            requests.len(),
            allowed as f64 * 100.0 / requests.len() as f64,
            p50,
            p99,
            named_p50,
            reasons_cost,
            actions_p50 / 1e3,
            events_p50,
            events_max,
            events_n,
            flights_p50,
            flights_max,
            flights_n,
            principals_p50,
            principals_n,
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
        decisions_group(c, scale, &snap, &requests, &queries);
        listings_group(c, scale, &snap, &probes, &requests, &now);
        build_group(c, scale, &schema, &w, &probes);
    }
}

/// Times a listing over the probes: (p50 ms, max ms, items found by the first probe).
fn listing<P, E>(
    probes: &[P],
    mut f: impl FnMut(&P) -> Result<Vec<String>, E>,
) -> (f64, f64, usize) {
    let found = probes
        .first()
        .map(|p| f(p).map(|v| v.len()).unwrap_or(0))
        .unwrap_or(0);
    let times = per_call(probes, 3, |p| {
        let _ = black_box(f(p));
    });
    let max = times.iter().copied().fold(0.0, f64::max) / 1e6;
    let (p50, _) = percentiles(times);
    (p50 / 1e6, max, found)
}

fn decisions_group(
    c: &mut Criterion,
    scale: Scale,
    snap: &Snapshot,
    requests: &[Request],
    queries: &[clearance_core::Query],
) {
    let mut g = c.benchmark_group(scale.name.to_string());
    g.throughput(Throughput::Elements(queries.len() as u64));
    g.bench_function("check_batch_resolved", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for q in queries {
                n += snap.decide(q).allowed as usize;
            }
            black_box(n)
        })
    });
    g.throughput(Throughput::Elements(requests.len() as u64));
    g.bench_function("check_by_name", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for r in requests {
                n += snap.check(r).allowed as usize;
            }
            black_box(n)
        })
    });
    g.finish();
}

fn listings_group(
    c: &mut Criterion,
    scale: Scale,
    snap: &Snapshot,
    probes: &[clearance_benches::Probes],
    requests: &[Request],
    now: &TimeValue,
) {
    let Some(p) = probes.first() else { return };
    let mut g = c.benchmark_group(format!("{}_lists", scale.name));
    g.bench_function("list_resources_contractor_events", |b| {
        b.iter(|| black_box(snap.list_resources(&p.contractor, "view", "event", now)))
    });
    g.bench_function("list_resources_owner_flights", |b| {
        b.iter(|| black_box(snap.list_resources(&p.owner, "view", "flight", now)))
    });
    g.bench_function("list_principals_event_view", |b| {
        b.iter(|| black_box(snap.list_principals(&p.event, "view", now, None)))
    });
    let sample: Vec<&Request> = requests.iter().take(256).collect();
    g.throughput(Throughput::Elements(sample.len() as u64));
    g.bench_function("allowed_actions", |b| {
        b.iter(|| {
            for r in &sample {
                let _ = black_box(snap.allowed_actions(&r.principal, &r.resource, &r.now));
            }
        })
    });
    g.finish();
}

fn build_group(
    c: &mut Criterion,
    scale: Scale,
    schema: &Arc<clearance_core::Schema>,
    w: &clearance_benches::World,
    probes: &[clearance_benches::Probes],
) {
    let mut g = c.benchmark_group(format!("{}_build", scale.name));
    g.sample_size(10);
    g.bench_function("snapshot_build", |b| {
        b.iter_batched(
            || (),
            |_| black_box(snapshot(schema, w)),
            BatchSize::PerIteration,
        )
    });
    // A write as the host applies it: the deltas on the facts, then the snapshot rebuilt.
    if let Some(p) = probes.first() {
        let delta = vec![Delta::SetAttr {
            entity: p.event.clone(),
            attr: "title".into(),
            value: serde_json::json!("renamed"),
        }];
        g.bench_function("delta_apply_and_rebuild", |b| {
            b.iter_batched(
                || (),
                |_| {
                    let next = w.facts.apply(&delta);
                    black_box(next.map(|f| Snapshot::build(Arc::clone(schema), &f).is_ok()))
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
