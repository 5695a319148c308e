//! What the `clearance` binary carries, so that it runs copied alone onto a host:
//!
//! - the wasm module `cargo xtask wasm` builds (`web/pkg/clearance_bg.wasm`), its SHA-256
//!   checked here against the digest written beside it (a build on a module that does not
//!   match its digest fails), and that digest;
//! - the operations console and the JS package it runs (`web/console`, `web/index.js`,
//!   `web/lib`, the module's glue in `web/pkg`);
//! - the shipped policies (`policies/*.policy`), for `clearance init` and the demo;
//! - the demo's facts (`tests/worlds/*.json`).
//!
//! A checkout where the module is not built yet still builds: the binary then carries no
//! module and says so at start (`--wasm FILE`, or `cargo xtask wasm` and a rebuild).
//! Everything is written to `$OUT_DIR/embedded.rs` as constants that `include_bytes!` the
//! files, the module from a copy of the bytes that were hashed.

use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    if let Err(e) = run() {
        // A build script reports a failure by failing: the message is cargo's error.
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest = PathBuf::from(var("CARGO_MANIFEST_DIR")?);
    let root = manifest
        .parent()
        .ok_or("the host crate is not in the workspace")?
        .to_path_buf();
    let out = PathBuf::from(var("OUT_DIR")?);
    let mut code = String::from("// Written by host/build.rs.\n\n");

    // The module, checked against its digest.
    let pkg = root.join("web/pkg");
    let (wasm, digest) = (
        pkg.join("clearance_bg.wasm"),
        pkg.join("clearance_bg.wasm.sha256"),
    );
    watch(&wasm);
    watch(&digest);
    let module = match (std::fs::read(&wasm), std::fs::read_to_string(&digest)) {
        (Ok(bytes), Ok(written)) => {
            let written = written
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            let actual = hex(&Sha256::digest(&bytes));
            if written != actual {
                return Err(format!(
                    "{} hashes to {actual}, but {} says {written}: rebuild it with `cargo xtask wasm`",
                    wasm.display(),
                    digest.display()
                ));
            }
            let copy = out.join("clearance_bg.wasm");
            std::fs::write(&copy, &bytes).map_err(|e| format!("{}: {e}", copy.display()))?;
            Some((copy, actual))
        }
        (Err(_), Err(_)) => None,
        (Ok(_), Err(e)) => {
            return Err(format!(
                "{}: {e}; rebuild with `cargo xtask wasm`",
                digest.display()
            ));
        }
        (Err(e), Ok(_)) => {
            return Err(format!(
                "{}: {e}; rebuild with `cargo xtask wasm`",
                wasm.display()
            ));
        }
    };
    match &module {
        Some((copy, hash)) => {
            println!("cargo:rustc-env=CLEARANCE_MODULE_SHA256={hash}");
            writeln!(
                code,
                "/// The wasm module this binary was built with, and its SHA-256 (hex).\npub const MODULE: Option<(&[u8], &str)> = Some((include_bytes!({:?}), {hash:?}));\n",
                path_text(copy)?
            )
            .map_err(|e| e.to_string())?;
        }
        None => {
            println!("cargo:rustc-env=CLEARANCE_MODULE_SHA256=none");
            println!(
                "cargo:warning=web/pkg/clearance_bg.wasm is not built: this binary carries no module (run `cargo xtask wasm` first)"
            );
            code.push_str("/// The wasm module this binary was built with: none.\npub const MODULE: Option<(&[u8], &str)> = None;\n\n");
        }
    }

    // The console and the JS package: every file, or none if the module's glue is missing.
    let mut console: Vec<(String, PathBuf)> = Vec::new();
    for (dir, prefix) in [("web/console", "console/"), ("web/lib", "lib/")] {
        for file in files(&root.join(dir), |_| true)? {
            console.push((format!("{prefix}{}", name(&file)?), file));
        }
    }
    console.push(("index.js".to_string(), root.join("web/index.js")));
    let glue = ["clearance.js", "clearance.d.ts", "clearance_bg.wasm.d.ts"];
    let glue_present = glue.iter().all(|g| pkg.join(g).is_file());
    for g in glue {
        watch(&pkg.join(g));
        if glue_present {
            console.push((format!("pkg/{g}"), pkg.join(g)));
        }
    }
    watch(&root.join("web/console"));
    watch(&root.join("web/lib"));
    watch(&root.join("web/index.js"));
    if glue_present && module.is_some() {
        table(
            &mut code,
            "CONSOLE",
            "The console's files, by their path under `/`: the page, its scripts and styles, the JS package and the module's glue.",
            &console,
            true,
        )?;
    } else {
        code.push_str("/// The console's files: none (the module's glue is not built).\npub const CONSOLE: &[(&str, &[u8])] = &[];\n\n");
    }

    // The shipped policies and the demo's facts.
    table(
        &mut code,
        "POLICIES",
        "The shipped policy files, by file name.",
        &by_name(&root.join("policies"), "policy")?,
        false,
    )?;
    table(
        &mut code,
        "DEMO_FACTS",
        "The demo's facts files, by file name, merged in this order.",
        &by_name(&root.join("tests/worlds"), "json")?,
        false,
    )?;

    let target = out.join("embedded.rs");
    std::fs::write(&target, code).map_err(|e| format!("{}: {e}", target.display()))
}

/// A constant table of `(name, contents)`: bytes, or text.
fn table(
    code: &mut String,
    constant: &str,
    doc: &str,
    files: &[(String, PathBuf)],
    bytes: bool,
) -> Result<(), String> {
    let (ty, include) = if bytes {
        ("&[u8]", "include_bytes!")
    } else {
        ("&str", "include_str!")
    };
    writeln!(
        code,
        "/// {doc}\npub const {constant}: &[(&str, {ty})] = &["
    )
    .map_err(|e| e.to_string())?;
    for (name, path) in files {
        watch(path);
        writeln!(code, "    ({name:?}, {include}({:?})),", path_text(path)?)
            .map_err(|e| e.to_string())?;
    }
    code.push_str("];\n\n");
    Ok(())
}

/// The files of `dir` that `keep` keeps, in name order.
fn files(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>, String> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && keep(p))
        .collect();
    v.sort();
    Ok(v)
}

/// The files of `dir` ending in `.{extension}`, each with its file name, in name order;
/// the directory watched for files added or removed.
fn by_name(dir: &Path, extension: &str) -> Result<Vec<(String, PathBuf)>, String> {
    watch(dir);
    files(dir, |p| ext(p, extension))?
        .into_iter()
        .map(|p| Ok((name(&p)?, p)))
        .collect()
}

fn ext(p: &Path, want: &str) -> bool {
    p.extension().is_some_and(|x| x == want)
}

fn name(p: &Path) -> Result<String, String> {
    p.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| format!("{}: a file name that is not UTF-8", p.display()))
}

fn path_text(p: &Path) -> Result<String, String> {
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{}: a path that is not UTF-8", p.display()))
}

fn watch(p: &Path) {
    println!("cargo:rerun-if-changed={}", p.display());
}

fn var(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|e| format!("{name}: {e}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
