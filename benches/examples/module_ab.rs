//! Compares builds of the module on the same binary batch, interleaved in one process:
//! each round decides the small world's 16,384 queries natively, then through each
//! module on wasmtime, and the best round of each is kept. On a shared machine whose
//! speed drifts by minutes, the best of many interleaved rounds tells two builds apart
//! where medians of separate runs cannot (BENCHMARKS.md).
//!
//! `cargo run --release -p clearance-benches --example module_ab -- 200 web/pkg other/pkg`
//! (each directory holds a `clearance_bg.wasm` and its `.sha256`); `CLEARANCE_AB_SCALE`
//! picks another world than `small`.

// A benchmark: it indexes its own generated inputs, and criterion's macros define
// undocumented functions; neither is reachable from outside input.
#![allow(clippy::indexing_slicing, missing_docs)]

use clearance_benches::{default_schema, query_batch, scales, snapshot, world};
use clearance_host::runtime::{Runtime, RuntimeConfig};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or("usage: module_ab ROUNDS DIR...")?;
    let dirs: Vec<String> = args.collect();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let name = std::env::var("CLEARANCE_AB_SCALE").unwrap_or_else(|_| "small".into());
    let scale = scales()
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| format!("no scale `{name}`"))?;
    let w = world(scale, 42);
    let snap = snapshot(&default_schema(), &w);
    let bytes = snap.to_bytes().map_err(|e| e.to_string())?;
    let (queries, encoded) = query_batch(&w, &snap, 16_384, 7);
    let mut runtimes = Vec::new();
    for d in &dirs {
        let wasm =
            std::fs::read(format!("{d}/clearance_bg.wasm")).map_err(|e| format!("{d}: {e}"))?;
        let hash = std::fs::read_to_string(format!("{d}/clearance_bg.wasm.sha256"))
            .map_err(|e| format!("{d}: {e}"))?;
        let config = RuntimeConfig {
            instances: 1,
            ..RuntimeConfig::default()
        };
        let rt = Arc::new(Runtime::new(&wasm, &hash, config).map_err(|e| e.to_string())?);
        tokio
            .block_on(rt.load_snapshot(bytes.clone()))
            .map_err(|e| e.to_string())?;
        runtimes.push((d, wasm.len(), rt));
    }
    let mut best_native = f64::MAX;
    let mut best = vec![f64::MAX; runtimes.len()];
    for _ in 0..rounds {
        let t = Instant::now();
        let mut allowed = 0usize;
        for q in &queries {
            allowed += snap.decide_checked(q).allowed as usize;
        }
        black_box(allowed);
        best_native = best_native.min(t.elapsed().as_secs_f64());
        for ((_, _, rt), b) in runtimes.iter().zip(best.iter_mut()) {
            let t = Instant::now();
            let decided = tokio.block_on(rt.check_ids(encoded.clone()));
            *b = b.min(t.elapsed().as_secs_f64());
            if decided.map(|d| d.len()) != Ok(queries.len()) {
                return Err("a batch was not decided".into());
            }
        }
    }
    let n = queries.len() as f64;
    println!(
        "{name}: best of {rounds} rounds of {} queries: native {:.2} M/s",
        queries.len(),
        n / best_native / 1e6
    );
    for ((d, size, _), b) in runtimes.iter().zip(&best) {
        println!(
            "  {d} ({size} bytes): {:.2} M/s, {:.2}x native",
            n / b / 1e6,
            b / best_native
        );
    }
    Ok(())
}
