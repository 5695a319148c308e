//! How much a principal slice leaves out: at each world scale, the facts of one account
//! whole (what `GET /v1/slice/{principal}` serves) against the principal slices of a
//! sample of its users and a guest: entities, attribute values, tuples, JSON bytes, and
//! the time to cut each from the whole world's facts (the account's as the host cuts
//! them).
//!
//! `cargo run --release -p clearance-benches --example slice_size`

use clearance_benches::{default_schema, scales, world};
use clearance_core::slice::Reads;
use clearance_core::{Facts, FactsJson};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// The account measured: the first of every scale.
const ACCOUNT: &str = "a0";
/// How many of its users are sliced, spread over its users in name order.
const USERS: usize = 4;

fn main() -> Result<(), String> {
    let schema = default_schema();
    let reads = Reads::of(&schema);
    println!("| scale | facts | entities | attribute values | tuples | JSON bytes | cut in |");
    println!("|---|---|--:|--:|--:|--:|--:|");
    for scale in scales() {
        let w = world(scale, 7);
        let t = Instant::now();
        let whole = account_facts(&w.facts, ACCOUNT);
        let took = t.elapsed();
        let what = format!("account `{ACCOUNT}`, whole");
        row(scale.name, &what, &whole, took)?;
        let of_type = |ty: &str| -> Vec<&String> {
            w.facts
                .entities
                .iter()
                .filter(|(_, e)| e.account == ACCOUNT && e.ty == ty)
                .map(|(k, _)| k)
                .collect()
        };
        let users = of_type("user");
        let step = (users.len() / USERS).max(1);
        let guests = of_type("invitee");
        let sample = users.iter().step_by(step).take(USERS).chain(guests.first());
        for p in sample {
            let t = Instant::now();
            let slice = reads
                .slice(&schema, &w.facts, p)
                .map_err(|e| format!("{p}: {e}"))?;
            let took = t.elapsed();
            row(scale.name, &format!("slice of `{p}`"), &slice, took)?;
        }
    }
    Ok(())
}

/// The facts of `account`: its entities and the tuples on them, as the host serves them.
fn account_facts(facts: &Facts, account: &str) -> FactsJson {
    let doc = facts.to_doc();
    let entities: Vec<_> = doc
        .entities
        .into_iter()
        .filter(|e| e.account.as_deref().unwrap_or(&e.id) == account)
        .collect();
    let keys: BTreeSet<String> = entities
        .iter()
        .map(|e| format!("{}:{}", e.ty, e.id))
        .collect();
    let tuples = doc
        .tuples
        .into_iter()
        .filter(|t| keys.contains(&t.resource))
        .collect();
    FactsJson {
        revision: doc.revision,
        entities,
        tuples,
        omitted: BTreeMap::new(),
        counts: Vec::new(),
    }
}

fn row(scale: &str, what: &str, doc: &FactsJson, took: Duration) -> Result<(), String> {
    let bytes = serde_json::to_string(doc).map_err(|e| e.to_string())?.len();
    let values: usize = doc.entities.iter().map(|e| e.attrs.len()).sum();
    let ms = took.as_secs_f64() * 1e3;
    println!(
        "| {scale} | {what} | {} | {values} | {} | {bytes} | {ms:.1} ms |",
        doc.entities.len(),
        doc.tuples.len()
    );
    Ok(())
}
