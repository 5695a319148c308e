//! The same checks natively and through the wasm module on wasmtime (the binary batch
//! ABI), on the medium world; plus instantiating the module and loading the snapshot, and
//! the artifact's size.

use clearance_benches::{MEDIUM, SMALL, default_schema, snapshot, world};
use clearance_core::wire::{QUERY_LEN, encode_query};
use clearance_host::{Runtime, RuntimeConfig};
use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const BATCH: usize = 16_384;

fn bench(c: &mut Criterion) {
    let pkg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/pkg");
    let (Ok(wasm), Ok(hash)) = (
        std::fs::read(pkg.join("clearance_bg.wasm")),
        std::fs::read_to_string(pkg.join("clearance_bg.wasm.sha256")),
    ) else {
        eprintln!("web/pkg/clearance_bg.wasm is missing: run `cargo xtask wasm`");
        return;
    };
    let scale = match std::env::var("CLEARANCE_BENCH_SCALES").ok().as_deref() {
        Some("small") => SMALL,
        _ => MEDIUM,
    };
    let schema = default_schema();
    let w = world(scale, 42);
    let snap = snapshot(&schema, &w);
    let bytes = snap.to_bytes().unwrap_or_default();
    let queries: Vec<_> = w
        .requests(BATCH, 7)
        .iter()
        .filter_map(|r| snap.resolve(r).ok())
        .collect();
    let mut encoded = Vec::with_capacity(queries.len() * QUERY_LEN);
    for q in &queries {
        encode_query(q, &mut encoded);
    }
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build();
    let Ok(tokio) = tokio else { return };
    let config = RuntimeConfig {
        instances: 1,
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
        eprintln!("the snapshot does not load: {e}");
        return;
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
    println!(
        "report runtimes scale={} module_bytes={} engine_and_module_ms={:.1} instantiate_and_load_snapshot_ms={:.1} snapshot_bytes={}",
        scale.name,
        wasm.len(),
        startup.as_secs_f64() * 1e3,
        load.as_secs_f64() * 1e3,
        bytes.len()
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
}

criterion_group!(benches, bench);
criterion_main!(benches);
