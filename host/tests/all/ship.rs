//! The binary as an operator installs it: copied alone into an empty directory, it
//! serves with no other file beside it (the module, the console, the shipped policies
//! and the demo's facts are in it); `init` writes a starting point, and every command the
//! binary suggests works as printed.

use crate::faults::{Server, start_in};
use crate::{ADMIN, add_key, admin, block, get_json, root, scratch};
use clearance_host::auth::Scope;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// An empty directory holding only a copy of the binary.
fn alone(name: &str) -> (PathBuf, PathBuf) {
    let dir = scratch(name);
    let bin = dir.join("clearance");
    std::fs::copy(env!("CARGO_BIN_EXE_clearance"), &bin).unwrap();
    (dir, bin)
}

/// The binary run in `dir` with `args`, none of the settings' environment variables set:
/// exit code, standard output and standard error.
fn run_in(bin: &Path, dir: &Path, args: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(bin);
    c.current_dir(dir).args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CLEARANCE_") {
            c.env_remove(k);
        }
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The SHA-256 of the module `cargo xtask wasm` built.
fn artifact_hash() -> String {
    std::fs::read_to_string(root().join("web/pkg/clearance_bg.wasm.sha256"))
        .unwrap()
        .trim()
        .to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `status` of `GET path` without credentials, and the body.
async fn get(base: &str, path: &str) -> (u16, String, Vec<u8>) {
    let r = reqwest::get(format!("{base}{path}")).await.unwrap();
    let status = r.status().as_u16();
    let ty = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, ty, r.bytes().await.unwrap().to_vec())
}

/// The module's hash and the count of entities, as an admin reads them.
async fn served(base: &str) -> (String, usize) {
    let c = admin();
    let revision = get_json(&c, &format!("{base}/v1/revision")).await;
    let facts = get_json(&c, &format!("{base}/v1/facts")).await;
    (
        revision["module_hash"].as_str().unwrap().to_string(),
        facts["entities"].as_array().map_or(0, Vec::len),
    )
}

fn start_alone(bin: &Path, dir: &Path, args: &[&str], db: &Path) -> Server {
    let args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
    start_in(bin, dir, &args, &|| add_key(db, ADMIN, Scope::Admin, &[]))
        .unwrap_or_else(|log| panic!("the server did not start: {log}"))
}

#[test]
fn version_names_the_module_the_binary_carries() {
    let (dir, bin) = alone("ship-version");
    let (code, out, err) = run_in(&bin, &dir, &["--version"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&artifact_hash()), "{out}");
}

/// `serve --demo` from the binary alone: today's demo (its facts, its policies, its
/// console), and the page's module the very bytes the server decides with.
#[test]
fn the_binary_alone_serves_the_demo_with_its_console() {
    let (dir, bin) = alone("ship-demo");
    let db = dir.join("store.db");
    let server = start_alone(&bin, &dir, &["--demo", "--data", "store.db"], &db);
    let log = server.log.lock().unwrap().clone();
    assert!(log.contains("serving the shipped policies"), "{log}");
    assert!(log.contains("seeding it with the demo's facts"), "{log}");
    block(async {
        let (module_hash, entities) = served(&server.base).await;
        assert_eq!(module_hash, artifact_hash());
        assert!(
            entities > 100,
            "{entities} entities: the demo was not seeded"
        );
        let (status, ty, page) = get(&server.base, "/").await;
        assert_eq!((status, ty.as_str()), (200, "text/html; charset=utf-8"));
        assert!(String::from_utf8_lossy(&page).contains("<html"));
        let (status, ty, wasm) = get(&server.base, "/pkg/clearance_bg.wasm").await;
        assert_eq!((status, ty.as_str()), (200, "application/wasm"));
        assert_eq!(hex(&Sha256::digest(&wasm)), module_hash);
        for path in [
            "/index.js",
            "/lib/session.js",
            "/console/console.js",
            "/pkg/clearance.js",
        ] {
            assert_eq!(get(&server.base, path).await.0, 200, "{path}");
        }
        for path in [
            "/pkg/store.db",
            "/store.db",
            "/clearance",
            "/lib/../store.db",
            "/console/../../clearance",
        ] {
            assert_eq!(get(&server.base, path).await.0, 404, "{path}");
        }
    });
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without `--demo`: no policies here is a refusal that names the way out; `init`
/// writes them and a config file; the server serves them on a new store that it says is
/// empty, with no console; and the key command it suggests works as printed.
#[test]
fn the_binary_alone_serves_a_policy_directory_from_init_and_its_suggestions_work() {
    let (dir, bin) = alone("ship-init");
    let (code, _, err) = run_in(
        &bin,
        &dir,
        &["serve", "--addr", "127.0.0.1:0", "--data", "s.db"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("clearance init DIR"), "{err}");
    assert!(!dir.join("s.db").exists(), "a refused start made a store");

    let (code, out, err) = run_in(&bin, &dir, &["init", "site"]);
    assert_eq!(code, 0, "{err}");
    let site = dir.join("site");
    assert!(site.join("clearance.toml").is_file() && site.join("policies").is_dir());
    // What `init` suggests, in order, works as printed in the directory it names.
    let steps: Vec<&str> = out
        .lines()
        .skip_while(|l| *l != "next:")
        .skip(1)
        .map(str::trim)
        .collect();
    assert_eq!(steps.len(), 4, "{out}");
    assert!(steps[0].starts_with("cd "), "{out}");
    assert_eq!(steps[1], "clearance validate");
    let (code, _, err) = run_in(&bin, &site, &["validate"]);
    assert_eq!(code, 0, "{err}");
    // A second `init` into the same directory writes nothing.
    let (code, _, err) = run_in(&bin, &dir, &["init", "site"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("exists"), "{err}");

    // `serve --config clearance.toml`, on another port than the file's.
    assert_eq!(steps[2], "clearance serve --config clearance.toml");
    let db = site.join("clearance.db");
    let server = start_alone(&bin, &site, &["--config", "clearance.toml"], &db);
    let log = server.log.lock().unwrap().clone();
    assert!(log.contains("a new store, empty"), "{log}");
    block(async {
        let (module_hash, entities) = served(&server.base).await;
        assert_eq!(module_hash, artifact_hash());
        assert_eq!(entities, 0);
        for path in [
            "/",
            "/index.js",
            "/pkg/clearance_bg.wasm",
            "/console/console.js",
        ] {
            assert_eq!(
                get(&server.base, path).await.0,
                404,
                "{path} without --console"
            );
        }
    });
    // The key command the server suggests, and `init`'s last step, as printed.
    let suggested = log
        .split("create one with `")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .unwrap_or_else(|| panic!("no key command suggested: {log}"));
    let init_step = steps[3].split('#').next().unwrap_or_default().trim();
    for command in [suggested, init_step] {
        let words: Vec<String> = command
            .split_whitespace()
            .map(|w| w.trim_matches('\'').to_string())
            .collect();
        assert_eq!(
            words.first().map(String::as_str),
            Some("clearance"),
            "{command}"
        );
        let args: Vec<&str> = words.iter().skip(1).map(String::as_str).collect();
        let (code, out, err) = run_in(&bin, &site, &args);
        assert_eq!(code, 0, "`{command}`: {err}");
        assert!(out.contains("clr_"), "`{command}` printed no key: {out}");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One licence and one version across the crates and the JS package, and the licence's
/// text at the root.
#[test]
fn the_crates_and_the_package_share_one_licence_and_one_version() {
    let cargo: toml::Table = std::fs::read_to_string(root().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let workspace = &cargo["workspace"]["package"];
    let package: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("web/package.json")).unwrap())
            .unwrap();
    assert_eq!(workspace["license"].as_str(), Some("Apache-2.0"));
    assert_eq!(package["license"].as_str(), workspace["license"].as_str());
    assert_eq!(package["version"].as_str(), workspace["version"].as_str());
    assert_eq!(
        workspace["version"].as_str(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    let licence = std::fs::read_to_string(root().join("LICENSE")).unwrap();
    assert!(
        licence.contains("Apache License") && licence.contains("Version 2.0, January 2004"),
        "LICENSE is not the Apache License 2.0"
    );
    // The changelog has the version's section, and the image is labelled with it.
    let version = env!("CARGO_PKG_VERSION");
    let changelog = std::fs::read_to_string(root().join("CHANGELOG.md")).unwrap();
    assert!(
        changelog.contains(&format!("\n## {version} ")),
        "CHANGELOG.md has no section for {version}"
    );
    let image = std::fs::read_to_string(root().join("Containerfile")).unwrap();
    assert!(
        image.contains(&format!("org.opencontainers.image.version=\"{version}\"")),
        "the Containerfile's version label is not {version}"
    );
}
