//! `clearance validate`: checks policy files and prints every error as file:line:col.

use crate::common::sources;
use clearance_core::Schema;
use std::path::Path;
use std::process::ExitCode;

/// Checks the policy files of `policies`.
pub fn run(policies: &Path) -> Result<ExitCode, String> {
    let sources = sources(policies)?;
    match Schema::compile(&sources) {
        Ok(s) => {
            println!(
                "{} policy files are valid: {} types, {} matrices, {} roles; policy hash {}",
                sources.len(),
                s.types.len(),
                s.matrices.len(),
                s.roles.len(),
                s.hash_hex()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for e in &errors.0 {
                println!("{e}");
            }
            println!("{} error(s)", errors.0.len());
            Ok(ExitCode::FAILURE)
        }
    }
}
