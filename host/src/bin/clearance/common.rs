//! What the subcommands share: reading policies and facts, starting the module.

use crate::Cli;
use clearance_core::{Facts, Schema, Snapshot, Source};
use clearance_host::policy_dir::read_policies;
use clearance_host::{Runtime, RuntimeConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// The policy files of a directory.
pub fn sources(dir: &Path) -> Result<Vec<Source>, String> {
    read_policies(dir)
}

/// Facts from a JSON file, or the merge of a directory's `*.json` files.
pub fn load_facts(path: &Path) -> Result<Facts, String> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    };
    let mut merged = clearance_core::FactsJson::default();
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let doc: clearance_core::FactsJson =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", f.display()))?;
        merged.entities.extend(doc.entities);
        merged.tuples.extend(doc.tuples);
    }
    Facts::from_doc(merged).map_err(|e| e.to_string())
}

/// The per-user cache of compiled modules, for the commands that run without a store.
pub fn user_cache() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("clearance").join("cwasm"))
}

/// The module on wasmtime, its hash checked.
pub fn runtime(wasm: &Path, config: RuntimeConfig) -> Result<Arc<Runtime>, String> {
    let bytes = std::fs::read(wasm)
        .map_err(|e| format!("{}: {e}; build it with `cargo xtask wasm`", wasm.display()))?;
    let hash_file = PathBuf::from(format!("{}.sha256", wasm.display()));
    let hash = std::fs::read_to_string(&hash_file).map_err(|e| {
        format!(
            "{}: {e}; build it with `cargo xtask wasm`",
            hash_file.display()
        )
    })?;
    let rt = Runtime::new(&bytes, hash.trim(), config).map_err(|e| e.to_string())?;
    tracing::info!("module {} ({} bytes)", rt.module_hash(), bytes.len());
    Ok(Arc::new(rt))
}

/// The module on the policy files and the facts at `facts_path`.
pub async fn loaded(cli: &Cli, facts_path: &Path) -> Result<Arc<Runtime>, String> {
    let t = Instant::now();
    let schema = Arc::new(Schema::compile(&sources(&cli.policies)?).map_err(|e| e.to_string())?);
    let facts = load_facts(facts_path)?;
    let snap = Snapshot::build(schema, &facts).map_err(|e| e.to_string())?;
    tracing::info!(
        "{} entities, {} tuples compiled in {} ms",
        snap.names.len(),
        snap.tuple_count(),
        t.elapsed().as_millis()
    );
    let rt = runtime(
        &cli.wasm,
        RuntimeConfig {
            instances: 1,
            cache_dir: user_cache(),
            ..RuntimeConfig::default()
        },
    )?;
    rt.load_snapshot(snap.to_bytes().map_err(|e| e.to_string())?)
        .await
        .map_err(|e| e.to_string())?;
    Ok(rt)
}

/// The server's clock, as RFC 3339.
pub fn now_text() -> String {
    clearance_core::time::format(clearance_host::clock::now_seconds())
}
