//! A policy directory on disk: the `*.policy` files a server starts with or reloads.

use clearance_core::Source;
use std::path::{Path, PathBuf};

/// Reads every `*.policy` file of a directory, in name order, each named
/// `policies/<file>` (the name its errors are reported under, and part of the policy
/// hash, so a policy hashes alike wherever its directory is).
pub fn read_policies(dir: &Path) -> Result<Vec<Source>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "policy"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            let name = p
                .file_name()
                .map(|n| format!("policies/{}", n.to_string_lossy()))
                .ok_or_else(|| format!("{}: not a file", p.display()))?;
            Ok(Source::new(name, text))
        })
        .collect()
}
