//! `clearance test`: runs scenario files (a world, requests, expected decisions) with the
//! native core the module is built from: pass and fail counts, exit code 1 on a failure.

use crate::common::sources;
use clearance_core::Schema;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Runs the scenario files of `paths` on the worlds of `worlds`.
pub fn run(
    policies: &Path,
    paths: &[PathBuf],
    worlds: &Path,
    verbose: bool,
) -> Result<ExitCode, String> {
    let schema = Arc::new(Schema::compile(&sources(policies)?).map_err(|e| e.to_string())?);
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            files.extend(clearance_scenarios::load_dir(p)?);
        } else {
            files.push(clearance_scenarios::load_file(p)?);
        }
    }
    let (mut passed, mut failed) = (0usize, 0usize);
    for (name, file) in &files {
        let outcomes = clearance_scenarios::run_file(&schema, worlds, file)?;
        let fails = outcomes.iter().filter(|(_, o)| o.is_err()).count();
        println!("{name}: {} passed, {fails} failed", outcomes.len() - fails);
        for (case, outcome) in &outcomes {
            match outcome {
                Err(e) => println!("  FAIL {case}: {e}"),
                Ok(()) if verbose => println!("  ok   {case}"),
                Ok(()) => {}
            }
        }
        passed += outcomes.len() - fails;
        failed += fails;
    }
    println!("{passed} passed, {failed} failed, in {} files", files.len());
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
