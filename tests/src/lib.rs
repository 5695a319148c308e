//! Shared helpers of the cross-runtime tests: loading the default policies, worlds and
//! scenario files, and running the parity suite.

pub mod parity;

use clearance_core::{Facts, Schema};
pub use clearance_scenarios::{Case, ScenarioFile, codes, policy_sources};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The default policies of `policies/`, compiled.
pub fn default_schema() -> Result<Arc<Schema>, String> {
    let sources = policy_sources(&root().join("policies"))?;
    Schema::compile(&sources)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// A world of `tests/worlds/`, by name.
pub fn world(name: &str) -> Result<Facts, String> {
    let path = root().join("tests/worlds").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Facts::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Every scenario file of `tests/scenarios/`, with its file name.
pub fn scenario_files() -> Result<Vec<(String, ScenarioFile)>, String> {
    clearance_scenarios::load_dir(&root().join("tests/scenarios"))
}

/// The repository README's examples, compiled as doctests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
