//! What observing a request costs the host: counting it in the metrics (its route,
//! status, latency and, for a check, the decision) and writing its JSON log line, per
//! request, against doing neither. The log line is formatted as the server formats it
//! and written to a sink, so the figure is the host's own work, not the terminal's.
//!
//! `cargo run --release -p clearance-benches --example observe_cost`

// A benchmark: it indexes its own inputs; nothing here takes outside input.
#![allow(clippy::indexing_slicing, missing_docs)]

use clearance_host::observe::{Decided, Metrics};
use serde_json::json;
use std::hint::black_box;
use std::time::{Duration, Instant};
use tracing_subscriber::layer::SubscriberExt;

const N: u32 = 200_000;

/// Nanoseconds per call of `f`, the median of 7 rounds.
fn per_call(mut f: impl FnMut(u32)) -> f64 {
    let mut rounds: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            for i in 0..N {
                f(i);
            }
            t.elapsed().as_nanos() as f64 / f64::from(N)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[3]
}

fn main() {
    let metrics = Metrics::new();
    let allow =
        json!({ "allowed": true, "reasons": [{ "code": "granted" }], "revision": 7 }).to_string();
    let deny =
        json!({ "allowed": false, "reasons": [{ "code": "relation.missing" }], "revision": 7 })
            .to_string();
    let count = |i: u32| {
        let answer = if i.is_multiple_of(2) { &allow } else { &deny };
        metrics.request("/v1/check", "POST", 200, Duration::from_micros(300));
        metrics.op("check", Duration::from_micros(200));
        let decided = Decided::read(black_box(answer));
        metrics.decisions("check", &decided);
        black_box(decided.note());
    };
    let log = |i: u32| {
        tracing::info!(
            target: "clearance::request",
            route = "/v1/check",
            method = "POST",
            status = 200u16,
            duration_us = 300u64,
            principal = Some("key:1a4c548606527357"),
            revision = 7u64,
            decision = Some(if i.is_multiple_of(2) { "allow" } else { "deny:relation.missing" }),
            "request"
        );
    };
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::sink)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false),
    );
    let _guard = tracing::subscriber::set_default(subscriber);
    // Interleaved: each kind once per round of three, three rounds; medians.
    let mut seen = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..3 {
        seen[0].push(per_call(|i| {
            black_box(i);
        }));
        seen[1].push(per_call(count));
        seen[2].push(per_call(|i| {
            count(i);
            log(i);
        }));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let [none, counted, logged] = seen.map(|mut v| median(&mut v));
    println!("per request, medians of 3 interleaved rounds of 7 x {N}:");
    println!("  nothing:                 {none:8.0} ns");
    println!("  metrics counted:         {counted:8.0} ns");
    println!("  metrics and a JSON line: {logged:8.0} ns");
}
