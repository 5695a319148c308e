//! What the `clearance` binary carries (written by `host/build.rs`): the wasm module with
//! its SHA-256, the operations console and the JS package, the shipped policies and the
//! demo's facts. A binary copied alone onto a host serves with none of these files
//! beside it.

use clearance_core::{Facts, FactsJson, Source};

mod files {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

pub use files::CONSOLE;

/// The SHA-256 (hex) of the module this binary carries, or `none`.
pub const MODULE_SHA256: &str = env!("CLEARANCE_MODULE_SHA256");

/// The module this binary carries and its SHA-256 (hex): checked against the digest
/// `cargo xtask wasm` wrote beside it when the binary was built. `None` for a binary
/// built before the module was.
pub fn module() -> Option<(&'static [u8], &'static str)> {
    files::MODULE
}

/// The shipped policies, named as a policy directory's files are (`policies/<file>`), so
/// they hash and report alike.
pub fn policies() -> Vec<Source> {
    files::POLICIES
        .iter()
        .map(|(name, text)| Source::new(format!("policies/{name}"), (*text).to_string()))
        .collect()
}

/// The shipped policy files, by file name, as `clearance init` writes them.
pub fn policy_files() -> &'static [(&'static str, &'static str)] {
    files::POLICIES
}

/// The demo's facts: its files merged in name order.
pub fn demo_facts() -> Result<Facts, String> {
    merge_facts(
        files::DEMO_FACTS
            .iter()
            .map(|(name, text)| ((*name).to_string(), (*text).to_string())),
    )
}

/// Facts documents merged in the order given, each `(name, text)`; an error names the
/// document.
pub fn merge_facts(docs: impl IntoIterator<Item = (String, String)>) -> Result<Facts, String> {
    let mut merged = FactsJson::default();
    for (name, text) in docs {
        let doc: FactsJson = serde_json::from_str(&text).map_err(|e| format!("{name}: {e}"))?;
        merged.entities.extend(doc.entities);
        merged.tuples.extend(doc.tuples);
    }
    Facts::from_doc(merged).map_err(|e| e.to_string())
}
