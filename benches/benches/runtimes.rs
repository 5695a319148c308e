//! The same checks natively and through the wasm module on wasmtime (the binary batch
//! ABI), at every scale `CLEARANCE_BENCH_SCALES` names (all three by default): batch
//! throughput, single-call latency, a fresh instance loading the snapshot, and the
//! artifact's size. It also writes the medium world's snapshot and queries to
//! `target/bench-js/` for the Node script of the JS path (`web/bench/js-path.mjs`).

// A benchmark: it indexes its own generated inputs, and criterion's macros define
// undocumented functions; neither is reachable from outside input.
#![allow(clippy::indexing_slicing, missing_docs)]

use clearance_benches::{default_schema, percentiles, query_batch, scales, snapshot, world};
use clearance_core::wire::QUERY_LEN;
use clearance_host::{Runtime, RuntimeConfig};
use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use std::sync::Arc;
use std::time::Instant;

const BATCH: usize = 16_384;

fn bench(c: &mut Criterion) {
    let Some((wasm, hash)) = clearance_benches::built_module() else {
        return;
    };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build();
    let Ok(tokio) = tokio else { return };
    let schema = default_schema();
    for scale in scales() {
        let w = world(scale, 42);
        let snap = snapshot(&schema, &w);
        let bytes = snap.to_bytes().unwrap_or_default();
        let (queries, encoded) = query_batch(&w, &snap, BATCH, 7);
        if scale.name == "medium" {
            clearance_benches::write_js_inputs(
                &clearance_benches::js_inputs_dir(),
                &w,
                &snap,
                &encoded,
            );
        }
        let config = RuntimeConfig {
            instances: 1,
            // The service's default cap, except for the large world, whose snapshot
            // needs wasm32's whole address space.
            memory_limit: if scale.name == "large" {
                (4usize << 30) - (64 << 10)
            } else {
                RuntimeConfig::default().memory_limit
            },
            load_deadline: std::time::Duration::from_secs(120),
            // `CLEARANCE_PERFMAP=1` to profile the module under `perf` (BENCHMARKS.md).
            perf_map: std::env::var_os("CLEARANCE_PERFMAP").is_some(),
            ..RuntimeConfig::default()
        };
        let t = Instant::now();
        let Ok(rt) = Runtime::new(&wasm, &hash, config.clone()) else {
            eprintln!("the runtime does not start");
            return;
        };
        let startup = t.elapsed();
        let rt = Arc::new(rt);
        let t = Instant::now();
        let loaded = tokio.block_on(rt.load_snapshot(bytes.clone()));
        let load = t.elapsed();
        if let Err(e) = loaded {
            eprintln!("{}: the snapshot does not load: {e}", scale.name);
            continue;
        }
        // The same decisions, or the comparison is meaningless.
        let native: Vec<bool> = queries
            .iter()
            .map(|q| snap.decide_checked(q).allowed)
            .collect();
        let wasm_side: Vec<bool> = tokio
            .block_on(rt.check_ids(encoded.clone()))
            .map(|d| d.iter().map(|x| x.allowed).collect())
            .unwrap_or_default();
        assert_eq!(native, wasm_side, "wasmtime and native disagree");
        // One query per call: what a caller asking one question at a time pays.
        let single: Vec<f64> = encoded
            .chunks(QUERY_LEN)
            .take(2_000)
            .map(|q| {
                let t = Instant::now();
                black_box(tokio.block_on(rt.check_ids(q.to_vec())).is_ok());
                t.elapsed().as_nanos() as f64
            })
            .collect();
        let (single_p50, single_p99) = percentiles(single);
        // The ratio with both sides interleaved, batch after batch, so a noisy machine
        // slows both alike: the median of 15 pairs.
        let mut pairs: Vec<(f64, f64)> = (0..15)
            .map(|_| {
                let t = Instant::now();
                let mut n = 0usize;
                for q in &queries {
                    n += snap.decide_checked(q).allowed as usize;
                }
                black_box(n);
                let native = t.elapsed().as_secs_f64();
                let t = Instant::now();
                black_box(tokio.block_on(rt.check_ids(encoded.clone())).is_ok());
                (native, t.elapsed().as_secs_f64())
            })
            .collect();
        pairs.sort_by(|a, b| (a.1 / a.0).total_cmp(&(b.1 / b.0)));
        let (native_s, wasm_s) = pairs.get(pairs.len() / 2).copied().unwrap_or((1.0, 1.0));
        let ratio = wasm_s / native_s;
        let wasm_mps = queries.len() as f64 / wasm_s / 1e6;
        let native_mps = queries.len() as f64 / native_s / 1e6;
        println!(
            "report runtimes scale={} module_bytes={} engine_and_module_ms={:.1} instantiate_and_load_snapshot_ms={:.1} snapshot_bytes={} wasmtime_single_call_p50_us={:.2} p99_us={:.2} wasmtime_over_native_interleaved={:.2} (native {:.2} M/s, wasmtime {:.2} M/s in that pair)",
            scale.name,
            wasm.len(),
            startup.as_secs_f64() * 1e3,
            load.as_secs_f64() * 1e3,
            bytes.len(),
            single_p50 / 1e3,
            single_p99 / 1e3,
            ratio,
            native_mps,
            wasm_mps,
        );
        let mut g = c.benchmark_group(format!("{}_batch", scale.name));
        g.throughput(Throughput::Elements(queries.len() as u64));
        g.bench_function("native_decide_checked", |b| {
            b.iter(|| {
                let mut n = 0usize;
                for q in &queries {
                    n += snap.decide_checked(q).allowed as usize;
                }
                black_box(n)
            })
        });
        g.bench_function("native_decide_checked_and_encode", |b| {
            let mut out = Vec::with_capacity(queries.len() * 16);
            b.iter(|| {
                out.clear();
                for q in &queries {
                    clearance_core::wire::encode_decision(&snap.decide_checked(q), &mut out);
                }
                black_box(out.len())
            })
        });
        g.bench_function("wasmtime_check_ids", |b| {
            b.iter(|| {
                black_box(
                    tokio
                        .block_on(rt.check_ids(encoded.clone()))
                        .map(|d| d.len())
                        .unwrap_or(0),
                )
            })
        });
        g.finish();
        let mut g = c.benchmark_group(format!("{}_load", scale.name));
        g.sample_size(10);
        g.bench_function("fresh_instance_and_snapshot", |b| {
            b.iter(|| {
                let fresh = Runtime::new(&wasm, &hash, config.clone()).map(Arc::new);
                if let Ok(fresh) = fresh {
                    black_box(tokio.block_on(fresh.load_snapshot(bytes.clone())).is_ok());
                }
            })
        });
        g.finish();
        drop(rt);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
