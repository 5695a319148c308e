//! The core's behaviour tests, in one binary (wasmtime's `tests/all` pattern): scenario
//! files naming requirements, properties over generated worlds, fail-closed inputs, the
//! cost bound, snapshots (insta) of the policy error text and the shipped policies'
//! outline, non-interference between tenants, privilege through writes, and a bounded
//! fuzz harness over the write pipeline and the call protocol. They build against the core and the scenario runner only, so a change
//! to the compiler is tested without building the host (`cargo test -p clearance-core`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod compiled_digest;
mod fail_closed;
mod fuzz_writes;
mod generate;
mod incremental;
mod noninterference;
mod outline;
mod policy_cost;
mod policy_errors;
mod policy_limits;
mod privilege;
mod properties;
mod protocol;
mod random_deltas;
mod scenarios;
mod slice;
mod write_reference;
mod writes;

use clearance_core::{Facts, Schema, Source};
use clearance_scenarios::ScenarioFile;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The repository root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The sources of the default policies of `policies/`.
fn policy_sources() -> Result<Vec<Source>, String> {
    clearance_scenarios::policy_sources(&root().join("policies"))
}

/// The default policies of `policies/`, compiled.
fn default_schema() -> Result<Arc<Schema>, String> {
    Schema::compile(&policy_sources()?)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// A world of `tests/worlds/`, by name.
fn world(name: &str) -> Result<Facts, String> {
    let path = root().join("tests/worlds").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Facts::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Every scenario file of `tests/scenarios/`, with its file name.
fn scenario_files() -> Result<Vec<(String, ScenarioFile)>, String> {
    clearance_scenarios::load_dir(&root().join("tests/scenarios"))
}

/// The requirement IDs of `docs/requirements.md`.
fn requirement_ids() -> Result<Vec<String>, String> {
    let path = root().join("docs/requirements.md");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("- "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|id| {
            let letters = id.trim_end_matches(|c: char| c.is_ascii_digit());
            !letters.is_empty()
                && letters.len() < id.len()
                && letters.chars().all(|c| c.is_ascii_uppercase())
        })
        .map(str::to_string)
        .collect())
}
