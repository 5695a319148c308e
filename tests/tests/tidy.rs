//! Conventions the code base keeps, checked: the core stays pure, every module says what
//! it is for, nothing is left half-done, tests never pass on a missing input, and the
//! project speaks only of itself.

// A test: a failed check panics, as tests do.
#![allow(clippy::panic)]

use clearance_tests::root;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The files under `dir` (from the root) with one of the extensions, leaving out build
/// output and installed packages. A directory that is not there is a failure: a check
/// over no files passes.
fn files(dir: &str, ext: &[&str]) -> Vec<PathBuf> {
    let top = root().join(dir);
    assert!(top.is_dir(), "{}: no such directory", top.display());
    let mut out = Vec::new();
    walk(&top, ext, &mut out);
    out
}

fn walk(dir: &Path, ext: &[&str], out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for e in entries {
        let p = e
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if p.is_dir() {
            if !["target", "node_modules", ".git", "pkg"].contains(&name.as_str()) {
                walk(&p, ext, out);
            }
        } else if ext.iter().any(|e| name.ends_with(&format!(".{e}"))) {
            out.push(p);
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn toml_file(path: &Path) -> toml::Table {
    read(path)
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Crates the core may not depend on, directly or through another crate: the wasm
/// boundary and its JS glue, the wasmtime host, async runtimes and sockets, HTTP, the
/// store. Each is a crate of `Cargo.lock`, so a misspelt name fails instead of banning
/// nothing.
const NOT_IN_THE_CORE: &[&str] = &[
    "wasm-bindgen",
    "js-sys",
    "web-sys",
    "wasmtime",
    "tokio",
    "mio",
    "hyper",
    "axum",
    "tower-http",
    "reqwest",
    "rusqlite",
    "libsqlite3-sys",
];

/// What the core's sources may not use: files, sockets, processes, the environment, the
/// clock and the terminal.
const NOT_IN_THE_CORE_SOURCES: &[&str] = &[
    "std::fs",
    "std::net",
    "std::process",
    "std::env",
    "SystemTime",
    "Instant::now",
    "now_utc",
    "now_local",
    "println!",
    "eprintln!",
];

/// The names of the packages of a lock file, each with the packages it depends on.
fn lock_graph(lock: &toml::Table) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let packages = lock
        .get("package")
        .and_then(|p| p.as_array())
        .map(Vec::as_slice)
        .unwrap_or_default();
    for p in packages {
        let Some(name) = p.get("name").and_then(|n| n.as_str()) else {
            continue;
        };
        let deps = p
            .get("dependencies")
            .and_then(|d| d.as_array())
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|d| d.as_str()?.split_whitespace().next())
            .map(str::to_string);
        graph.entry(name.to_string()).or_default().extend(deps);
    }
    graph
}

/// The crates a package links, directly or not: its normal and build dependencies (of
/// every target) from its manifest, then theirs from the lock file. Its
/// dev-dependencies are not part of it.
fn linked_crates(manifest: &toml::Table, lock: &toml::Table) -> BTreeSet<String> {
    let mut tables: Vec<&toml::Table> = Vec::new();
    for kind in ["dependencies", "build-dependencies"] {
        tables.extend(manifest.get(kind).and_then(|t| t.as_table()));
        let targets = manifest.get("target").and_then(|t| t.as_table());
        for target in targets.into_iter().flat_map(|t| t.values()) {
            tables.extend(target.get(kind).and_then(|t| t.as_table()));
        }
    }
    let mut todo: Vec<String> = tables
        .iter()
        .flat_map(|t| t.iter())
        .map(|(key, spec)| {
            spec.get("package")
                .and_then(|p| p.as_str())
                .unwrap_or(key)
                .to_string()
        })
        .collect();
    let graph = lock_graph(lock);
    let mut seen = BTreeSet::new();
    while let Some(name) = todo.pop() {
        if seen.insert(name.clone()) {
            todo.extend(graph.get(&name).into_iter().flatten().cloned());
        }
    }
    seen
}

/// **Architecture invariant**: the core has no wasm-bindgen, wasmtime, tokio or I/O
/// dependency, and does no I/O.
#[test]
fn core_is_pure() {
    let lock = toml_file(&root().join("Cargo.lock"));
    let graph = lock_graph(&lock);
    let unknown: Vec<&&str> = NOT_IN_THE_CORE
        .iter()
        .filter(|c| !graph.contains_key(**c))
        .collect();
    assert!(
        unknown.is_empty(),
        "the core's banned crates {unknown:?} are no crates of Cargo.lock: misspelt, or gone \
         from the workspace (then drop them from the list)"
    );
    let linked = linked_crates(&toml_file(&root().join("crates/core/Cargo.toml")), &lock);
    assert!(
        linked.contains("serde") && linked.contains("serde_derive"),
        "the core's dependencies were not found: {linked:?}"
    );
    for banned in NOT_IN_THE_CORE {
        assert!(
            !linked.contains(*banned),
            "crates/core depends on `{banned}`"
        );
    }
    let sources = files("crates/core/src", &["rs"]);
    assert!(!sources.is_empty());
    for f in sources {
        let text = read(&f);
        for banned in NOT_IN_THE_CORE_SOURCES {
            assert!(
                !text.contains(banned),
                "{} uses `{banned}`: the core does no I/O and reads no clock",
                f.display()
            );
        }
    }
}

/// The dependency rule of [`core_is_pure`] on a sample: a crate reached through another
/// crate counts, a dev-dependency does not, and a renamed dependency counts by its name.
#[test]
fn the_purity_rule_sees_through_other_crates() {
    let manifest: toml::Table = r#"
        [package]
        name = "sample"
        [dependencies]
        helper = "1"
        quick = { package = "fast-hash", version = "1" }
        [target.'cfg(unix)'.dependencies]
        sockets = "1"
        [dev-dependencies]
        proptest = "1"
    "#
    .parse()
    .unwrap_or_else(|e| panic!("{e}"));
    let lock: toml::Table = r#"
        [[package]]
        name = "sample"
        version = "0.1.0"
        dependencies = ["fast-hash", "helper", "proptest", "sockets"]
        [[package]]
        name = "helper"
        version = "1.0.0"
        dependencies = ["tokio 1.0.0"]
        [[package]]
        name = "tokio"
        version = "1.0.0"
        dependencies = ["mio"]
        [[package]]
        name = "proptest"
        version = "1.0.0"
        dependencies = ["tempfile"]
    "#
    .parse()
    .unwrap_or_else(|e| panic!("{e}"));
    let linked = linked_crates(&manifest, &lock);
    let want: BTreeSet<String> = ["fast-hash", "helper", "mio", "sockets", "tokio"]
        .into_iter()
        .map(str::to_string)
        .collect();
    assert_eq!(linked, want);
}

/// Every Rust source file opens with a `//!` line saying what it is for (or is a crate
/// root that includes its README), and so does every JS and TS module of `web/`, with a
/// comment (after its `#!` line, if it has one).
#[test]
fn every_module_says_what_it_is_for() {
    let mut sources = Vec::new();
    for dir in ["crates", "host", "tests", "benches", "xtask"] {
        sources.extend(files(dir, &["rs"]));
    }
    let mut found = Vec::new();
    for f in sources {
        let text = read(&f);
        let first = text.lines().next().unwrap_or_default();
        if !(first.starts_with("//!") || first.starts_with("#![doc = include_str!")) {
            found.push(format!("{} does not open with a `//!` line", f.display()));
        }
    }
    let scripts = files("web", &["js", "mjs", "ts"]);
    assert!(!scripts.is_empty());
    for f in scripts {
        let text = read(&f);
        let first = text
            .lines()
            .find(|l| !l.starts_with("#!"))
            .unwrap_or_default();
        if !(first.starts_with("//") || first.starts_with("/*")) {
            found.push(format!(
                "{} does not open with a comment saying what it is for",
                f.display()
            ));
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// No half-done work is committed, and the project speaks only of itself.
#[test]
fn no_leftovers_and_no_foreign_names() {
    let mut all = Vec::new();
    for dir in [
        "crates", "host", "tests", "benches", "xtask", "policies", "docs",
    ] {
        all.extend(files(dir, &["rs", "policy", "toml", "json", "md", "snap"]));
    }
    all.extend(files(
        "web",
        &["js", "mjs", "ts", "html", "css", "json", "md"],
    ));
    for name in ["README.md", "ARCHITECTURE.md", "BENCHMARKS.md"] {
        all.push(root().join(name));
    }
    // Product names of the platforms the requirements were drawn from, kept out of the
    // project (spelled in pieces so this file does not name them either).
    let foreign: Vec<String> = [
        ["Aire", "Xpert"],
        ["Flight", "Logger"],
        ["Plane", "logix"],
        ["FL", "3XX"],
    ]
    .iter()
    .map(|p| p.concat().to_lowercase())
    .collect();
    let marker = ["TO", "DO"].concat();
    let paths = [["/wo", "rk/"].concat(), ["/ro", "ot/"].concat()];
    let mut found = Vec::new();
    for f in all {
        let text = read(&f);
        let lower = text.to_lowercase();
        if foreign.iter().any(|n| lower.contains(n.as_str())) {
            found.push(format!("{} names another product", f.display()));
        }
        if text.contains(&marker) {
            found.push(format!(
                "{} has a {marker}: finish it or file an issue",
                f.display()
            ));
        }
        if paths.iter().any(|p| text.contains(p.as_str())) {
            found.push(format!("{} names a machine path", f.display()));
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// A test never reads its input with a default for when it is missing: a fixture that is
/// not there would be an empty input, and the test would pass on nothing.
#[test]
fn tests_never_default_a_missing_input() {
    let mut sources = Vec::new();
    for dir in ["tests", "crates/core/tests", "host/tests"] {
        sources.extend(files(dir, &["rs"]));
    }
    // Spelled in pieces so this file does not match itself.
    let default = [".unwrap_or", "_default()"].concat();
    let reads = [
        "read_to_string(",
        "fs::read(",
        "read_dir(",
        "policy_sources(",
    ];
    let mut found = Vec::new();
    for f in sources {
        // Statements, roughly: split at `;` and where a block opens or closes a line.
        let text = read(&f).replace("{\n", ";").replace("\n}", ";");
        for statement in text.split(';') {
            if statement.contains(&default) && reads.iter().any(|r| statement.contains(r)) {
                found.push(format!("{}: {}", f.display(), statement.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "inputs read with a default, so a missing file passes the test:\n{}",
        found.join("\n")
    );
}
