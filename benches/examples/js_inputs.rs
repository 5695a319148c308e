//! Writes the inputs of the JS benchmarks (`web/bench/js-path.mjs`, `web/bench/js-face.mjs`)
//! without running the runtimes benchmark that also writes them: the medium world's
//! snapshot, its resolved queries and 2,000 requests by names, in `target/bench-js/`.
//!
//! `cargo run --release -p clearance-benches --example js_inputs`

// A benchmark's input writer: it indexes its own generated inputs.
#![allow(clippy::indexing_slicing, missing_docs)]

use clearance_benches::{default_schema, js_inputs_dir, query_batch, scales, snapshot, world};

fn main() -> Result<(), String> {
    let scale = scales()
        .into_iter()
        .find(|s| s.name == "medium")
        .ok_or("no medium scale")?;
    let w = world(scale, 42);
    let snap = snapshot(&default_schema(), &w);
    let (_, encoded) = query_batch(&w, &snap, 16_384, 7);
    let dir = js_inputs_dir();
    clearance_benches::write_js_inputs(&dir, &w, &snap, &encoded);
    println!("wrote {}", dir.display());
    Ok(())
}
