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

/// Facts from a JSON file, or the merge of a directory's `*.json` files in name order.
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
    let docs = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
            Ok((f.display().to_string(), text))
        })
        .collect::<Result<Vec<_>, String>>()?;
    clearance_host::embedded::merge_facts(docs)
}

/// The per-user cache of compiled modules, for the commands that run without a store.
pub fn user_cache() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("clearance").join("cwasm"))
}

/// The module on wasmtime: the one this binary carries, or `wasm` (its hash read from
/// `<wasm>.sha256` and checked).
pub fn runtime(wasm: Option<&Path>, config: RuntimeConfig) -> Result<Arc<Runtime>, String> {
    let (bytes, hash) = module(wasm)?;
    let rt = Runtime::new(&bytes, &hash, config).map_err(|e| e.to_string())?;
    tracing::info!("module {} ({} bytes)", rt.module_hash(), bytes.len());
    Ok(Arc::new(rt))
}

/// The module's bytes and SHA-256: `wasm`'s, or the module this binary carries.
pub fn module(wasm: Option<&Path>) -> Result<(Vec<u8>, String), String> {
    let Some(wasm) = wasm else {
        return clearance_host::embedded::module()
            .map(|(bytes, hash)| (bytes.to_vec(), hash.to_string()))
            .ok_or_else(|| {
                "this binary carries no module (it was built before `cargo xtask wasm`): rebuild it after `cargo xtask wasm`, or give --wasm FILE".to_string()
            });
    };
    let bytes = std::fs::read(wasm)
        .map_err(|e| format!("{}: {e}; build it with `cargo xtask wasm`", wasm.display()))?;
    let hash_file = PathBuf::from(format!("{}.sha256", wasm.display()));
    let hash = std::fs::read_to_string(&hash_file).map_err(|e| {
        format!(
            "{}: {e}; build it with `cargo xtask wasm`",
            hash_file.display()
        )
    })?;
    Ok((bytes, hash.trim().to_string()))
}

/// The module on the policy files and the facts at `facts_path`.
pub async fn loaded(cli: &Cli, facts_path: &Path) -> Result<Arc<Runtime>, String> {
    let t = Instant::now();
    let schema =
        Arc::new(Schema::compile(&sources(&cli.policy_dir())?).map_err(|e| e.to_string())?);
    let facts = load_facts(facts_path)?;
    let snap = Snapshot::build(schema, &facts).map_err(|e| e.to_string())?;
    tracing::info!(
        "{} entities, {} tuples compiled in {} ms",
        snap.names.len(),
        snap.tuple_count(),
        t.elapsed().as_millis()
    );
    let rt = runtime(
        cli.wasm.as_deref(),
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
