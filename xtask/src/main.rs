//! Automation for Clearance: `cargo xtask test` runs everything CI runs; `cargo xtask
//! wasm` builds the one wasm artifact (the one code path every consumer uses);
//! `cargo xtask bench` runs the benchmarks.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  test    the whole test suite: formatting, lints, the core built for wasm32,
          unit, scenario, property, fail-closed and snapshot tests, the JS package's
          tests and types, the console in Chromium, Clearance and Cedar deciding alike,
          doctests, benches run once, and the parity suite
  wasm    build the one wasm artifact into web/pkg/ (glue, .d.ts, clearance_bg.wasm)
          and print its SHA-256
  repro   build it twice, from two checkout paths, and compare the bytes
  image   `dist`, then the container image built from it and run by podman: ready,
          healthy, a check and a write, the data kept across restarts
          (CLEARANCE_PODMAN_OPTIONS='--runtime runc' where crun cannot run containers)
  dist    the shipped binary: built static for Linux (musl) with paths remapped, its
          symbols split into dist/clearance.debug and dist/clearance stripped; prints
          its SHA-256 (`dist --repro`: built a second time from another checkout path
          and target directory, and the bytes compared)
  serve   build the artifact, then run `clearance serve --demo` (the demo data on an
          embedded store, seeded on first start; a token issuer for the console's
          personas; an admin key printed once); arguments after `serve` go to it
  hosts   build the artifact, then run `clearance hosts`: a throwaway PostgreSQL and
          three demo hosts on it, to watch a write on one appear on the others
  bench   the criterion benchmarks (small, medium and large worlds; CLEARANCE_BENCH_SCALES
          picks some), then the JS path in Node
  cedar   Clearance and Cedar on the same world and requests: every decision compared,
          then the per-check ratio (a separate package; arguments: [small|medium] [requests])";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("wasm") => wasm().map(|hash| println!("{hash}  web/pkg/clearance_bg.wasm")),
        Some("repro") => wasm().and_then(|_| reproducible()),
        Some("image") => wasm().and_then(|_| {
            let root = root();
            dist(&root, &target_dir(&root), &root.join("dist"))?;
            run(
                "the image",
                "cargo",
                &[
                    "test",
                    "--release",
                    "-p",
                    "clearance-host",
                    "--test",
                    "all",
                    "image::",
                    "--",
                    "--ignored",
                ],
                &[],
            )
        }),
        Some("dist") => wasm().and_then(|_| {
            let root = root();
            let first = dist(&root, &target_dir(&root), &root.join("dist"))?;
            println!("{first}  dist/clearance");
            if args.iter().any(|a| a == "--repro") {
                let scratch =
                    std::env::temp_dir().join(format!("clearance-dist-{}", std::process::id()));
                let copy = scratch.join("elsewhere/checkout");
                copy_checkout(&root, &copy)?;
                let second = dist(&copy, &copy.join("target"), &scratch.join("dist"));
                // The other build's binary and symbols are kept beside the first's, to
                // compare.
                for (from, to) in [
                    ("clearance", "clearance.other"),
                    ("clearance.debug", "clearance.other.debug"),
                ] {
                    let _ =
                        std::fs::copy(scratch.join("dist").join(from), root.join("dist").join(to));
                }
                let _ = std::fs::remove_dir_all(&scratch);
                let second = second?;
                if first != second {
                    return Err(format!(
                        "the binary is not reproducible: {first} here, {second} from another path"
                    ));
                }
                eprintln!(
                    "xtask: reproducible: the same bytes ({second}) from another checkout path"
                );
            }
            Ok(())
        }),
        Some("serve") => wasm().and_then(|_| {
            let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
            let mut cargo = vec![
                "run",
                "--release",
                "-p",
                "clearance-host",
                "--bin",
                "clearance",
                "--",
                "serve",
                // The demo: its token issuer for the console's personas, and the clock
                // at the demo data's time.
                "--demo",
                "--demo-time",
                "2026-05-01T10:00:00Z",
            ];
            cargo.extend(rest);
            run("the server", "cargo", &cargo, &[])
        }),
        Some("hosts") => wasm().and_then(|_| {
            let mut cargo = vec![
                "run",
                "--release",
                "-p",
                "clearance-host",
                "--bin",
                "clearance",
                "--",
                "hosts",
            ];
            cargo.extend(args.iter().skip(1).map(String::as_str));
            run("the hosts", "cargo", &cargo, &[])
        }),
        Some("bench") => wasm().and_then(|_| {
            run(
                "benchmarks",
                "cargo",
                &["bench", "-p", "clearance-benches"],
                &[],
            )?;
            run("the JS path", "node", &["web/bench/js-path.mjs"], &[])
        }),
        Some("cedar") => {
            let root = root();
            let target = target_dir(&root);
            let target = target.to_string_lossy();
            let mut cargo = vec![
                "run",
                "--release",
                "--manifest-path",
                "benches/cedar/Cargo.toml",
                "--",
            ];
            cargo.extend(args.iter().skip(1).map(String::as_str));
            run(
                "Clearance and Cedar",
                "cargo",
                &cargo,
                &[("CARGO_TARGET_DIR", &target)],
            )
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn test() -> Result<(), String> {
    run(
        "test dependencies (Chromium, playwright-core, typescript)",
        "bash",
        &["scripts/install-test-deps"],
        &[],
    )?;
    run(
        "formatting",
        "cargo",
        &["fmt", "--all", "--", "--check"],
        &[],
    )?;
    run(
        "lints",
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    run(
        "core for wasm32",
        "cargo",
        &[
            "build",
            "-p",
            "clearance-core",
            "--target",
            "wasm32-unknown-unknown",
        ],
        &[],
    )?;
    wasm()?;
    reproducible()?;
    run("node tests", "node", &["--test", "web/test/"], &[])?;
    // One profile and one feature set (`--workspace` everywhere), so wasmtime is built
    // once (release). This runs the core's behaviour tests (`crates/core/tests/all`), the
    // host's, and `tests/` (tidy, the module's JSON boundary, parity's quick test);
    // `--all-targets` also runs each benchmark once, as a test, on the small world. The
    // parity suite runs on its own below, to show its figures. A snapshot that differs
    // from its committed file fails the step, whatever INSTA_UPDATE the caller has set
    // (`no`: insta writes nothing; update with `INSTA_UPDATE=always cargo test ...`).
    run(
        "tests",
        "cargo",
        &["test", "--workspace", "--release", "--all-targets"],
        &[
            ("CLEARANCE_BENCH_SCALES", "small"),
            ("INSTA_UPDATE", "no"),
            ("INSTA_FORCE_PASS", "0"),
        ],
    )?;
    // The fair-share test measures latencies under load, so it runs alone, not beside
    // the rest of the suite.
    run(
        "fair share under one greedy caller",
        "cargo",
        &[
            "test",
            "--workspace",
            "--release",
            "--test",
            "all",
            "security::fairness::one_greedy_caller_leaves_another_its_share",
            "--",
            "--include-ignored",
            "--nocapture",
        ],
        &[],
    )?;
    run(
        "types of the JS package",
        "node",
        &[
            "web/node_modules/typescript/bin/tsc",
            "--noEmit",
            "-p",
            "web/tsconfig.json",
        ],
        &[],
    )?;
    run(
        "types of the JS package's JavaScript (checkJs)",
        "node",
        &[
            "web/node_modules/typescript/bin/tsc",
            "-p",
            "web/tsconfig.checkjs.json",
        ],
        &[],
    )?;
    run(
        "the console in Chromium",
        "node",
        &["--test", "web/browser/"],
        &[],
    )?;
    {
        // The Cedar comparison is its own workspace; its decisions are compared here on
        // the small world, so the two models cannot drift apart unnoticed.
        let target = target_dir(&root());
        let target = target.to_string_lossy();
        run(
            "Clearance and Cedar decide alike (small world)",
            "cargo",
            &[
                "run",
                "--locked",
                "--manifest-path",
                "benches/cedar/Cargo.toml",
                "--",
                "small",
                "3000",
                "--decisions-only",
            ],
            &[("CARGO_TARGET_DIR", &target)],
        )?;
    }
    run(
        "doctests",
        "cargo",
        &["test", "--workspace", "--release", "--doc"],
        &[],
    )?;
    run(
        "parity of native, wasmtime, node, chromium and workerd",
        "cargo",
        &[
            "test",
            "--workspace",
            "--release",
            "--test",
            "parity",
            "every_runtime_decides_identically",
            "--",
            "--include-ignored",
            "--nocapture",
        ],
        &[],
    )?;
    eprintln!("xtask: every step passed");
    Ok(())
}

fn run(step: &str, program: &str, args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    eprintln!("xtask: {step}: {program} {}", args.join(" "));
    let status = Command::new(program)
        .current_dir(root())
        .args(args)
        .envs(env.iter().copied())
        .status()
        .map_err(|e| format!("{step}: cannot run `{program}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{step} failed ({status})"))
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// Builds the artifact into `web/pkg/` and returns its SHA-256.
fn wasm() -> Result<String, String> {
    let root = root();
    build_artifact(&root, &target_dir(&root), &root.join("web/pkg"))
}

/// Builds the artifact a second time from a copy of the checkout at another path, with
/// another target directory, and fails unless the bytes are identical.
fn reproducible() -> Result<(), String> {
    let root = root();
    let first = std::fs::read_to_string(root.join("web/pkg/clearance_bg.wasm.sha256"))
        .map_err(|e| e.to_string())?;
    let scratch = std::env::temp_dir().join(format!("clearance-repro-{}", std::process::id()));
    let copy = scratch.join("elsewhere/checkout");
    copy_checkout(&root, &copy)?;
    let second = build_artifact(&copy, &scratch.join("target"), &scratch.join("pkg"));
    let _ = std::fs::remove_dir_all(&scratch);
    let second = second?;
    if first.trim() != second {
        return Err(format!(
            "the artifact is not reproducible: {} here, {second} from another path",
            first.trim()
        ));
    }
    eprintln!("xtask: reproducible: the same bytes ({second}) from another checkout path");
    Ok(())
}

/// Copies the files of the checkout at `root` that git tracks or would (the built module
/// in `web/pkg` among them) to `copy`.
fn copy_checkout(root: &Path, copy: &Path) -> Result<(), String> {
    let listed = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root)
        .output()
        .map_err(|e| format!("git: {e}"))?;
    // What `cargo xtask wasm` wrote (ignored by git), which the binary embeds: the
    // module, its digest and its glue (without the glue it carries no console).
    let built = [
        "web/pkg/clearance_bg.wasm",
        "web/pkg/clearance_bg.wasm.sha256",
        "web/pkg/clearance.js",
        "web/pkg/clearance.d.ts",
        "web/pkg/clearance_bg.wasm.d.ts",
    ];
    let names = listed
        .stdout
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| std::str::from_utf8(n).map_err(|e| e.to_string()))
        .chain(built.iter().map(|n| Ok(*n)));
    for name in names {
        let rel = Path::new(name?);
        let (from, to) = (root.join(rel), copy.join(rel));
        if from.is_file() {
            if let Some(dir) = to.parent() {
                std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            }
            std::fs::copy(&from, &to).map_err(|e| format!("{}: {e}", from.display()))?;
        }
    }
    Ok(())
}

/// A file's size and SHA-256 (hex).
fn sha256_of(path: &Path) -> Result<(usize, String), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let hash = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((bytes.len(), hash))
}

/// Cargo's home, whose path the builds remap.
fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_default()
}

/// The Linux target the shipped binary is built for: static, with musl.
const DIST_TARGET: &str = "x86_64-unknown-linux-musl";

/// Builds the shipped binary from the checkout at `root` with the target directory
/// `target` into `out` (`clearance`, stripped, and `clearance.debug`, its symbols), and
/// returns the SHA-256 of `clearance`, also written beside it.
fn dist(root: &Path, target: &Path, out: &Path) -> Result<String, String> {
    ensure_target(root, DIST_TARGET)?;
    if Command::new("musl-gcc").arg("--version").output().is_err() {
        return Err(
            "no musl-gcc, which builds the C parts (SQLite, ring) for musl: install Debian's musl-tools"
                .into(),
        );
    }
    let cargo_home = cargo_home();
    // The target directory lies inside the checkout (its build scripts' output, which
    // the binary embeds, is named by path), so the checkout's prefix covers it. musl
    // targets link statically by default.
    if !target.starts_with(root) {
        return Err(format!(
            "the target directory {} is outside the checkout {}: the binary would name it",
            target.display(),
            root.display()
        ));
    }
    let flags = format!(
        "--remap-path-prefix={}=/cargo --remap-path-prefix={}=/clearance",
        cargo_home.display(),
        root.display()
    );
    let cflags = format!(
        "-ffile-prefix-map={}=/cargo -ffile-prefix-map={}=/clearance",
        cargo_home.display(),
        root.display()
    );
    let manifest = root.join("Cargo.toml");
    let (manifest, target_s) = (manifest.to_string_lossy(), target.to_string_lossy());
    run(
        "the shipped binary",
        "cargo",
        &[
            "build",
            "--manifest-path",
            &manifest,
            "--target-dir",
            &target_s,
            "-p",
            "clearance-host",
            "--bin",
            "clearance",
            "--target",
            DIST_TARGET,
            "--profile",
            "dist",
        ],
        &[
            ("CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS", &flags),
            ("CC_x86_64_unknown_linux_musl", "musl-gcc"),
            // The C parts (SQLite, ring) name their sources in their debug information,
            // which the linker's build id covers: remapped as the Rust parts are.
            ("CFLAGS_x86_64_unknown_linux_musl", &cflags),
        ],
    )?;
    let built = target.join(DIST_TARGET).join("dist/clearance");
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let (binary, debug) = (out.join("clearance"), out.join("clearance.debug"));
    let (built_s, binary_s, debug_s) = (
        built.to_string_lossy(),
        binary.to_string_lossy(),
        debug.to_string_lossy(),
    );
    run(
        "the symbols",
        "objcopy",
        &["--only-keep-debug", &built_s, &debug_s],
        &[],
    )?;
    // The link names the symbols' file by its name alone, with its CRC: a debugger finds
    // it beside the binary or in its debug directory.
    let link = format!("--add-gnu-debuglink={debug_s}");
    run(
        "the stripped binary",
        "objcopy",
        &["--strip-all", &link, &built_s, &binary_s],
        &[],
    )?;
    let (size, hash) = sha256_of(&binary)?;
    std::fs::write(out.join("clearance.sha256"), format!("{hash}  clearance\n"))
        .map_err(|e| e.to_string())?;
    eprintln!(
        "xtask: {} ({size} bytes; symbols in {})",
        binary.display(),
        debug.display()
    );
    Ok(hash)
}

/// Builds the artifact: cargo for wasm32 with the size profile and paths remapped (so the
/// bytes do not depend on where the checkout or the cargo home is), then wasm-bindgen
/// (the library, at the exact version of the module's wasm-bindgen) into `out`.
/// Returns the SHA-256 of `clearance_bg.wasm`, also written next to it.
/// The target the module is built for.
const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// Whether the toolchain at `sysroot` has the standard library for `target`.
fn has_target(sysroot: &Path, target: &str) -> bool {
    sysroot
        .join("lib/rustlib")
        .join(target)
        .join("lib")
        .is_dir()
}

/// Installs `target` for the pinned toolchain when it is missing (a machine with the
/// toolchain but not its target fails with "can't find crate for `core`"), so the first
/// command does its whole set-up.
fn ensure_target(root: &Path, target: &str) -> Result<(), String> {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(root)
        .output()
        .map_err(|e| format!("rustc: {e}"))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if out.status.success() && has_target(&sysroot, target) {
        return Ok(());
    }
    eprintln!("xtask: the toolchain has no {target} target; installing it");
    run(
        "rustup target add",
        "rustup",
        &["target", "add", target],
        &[],
    )
}

fn build_artifact(root: &Path, target: &Path, out: &Path) -> Result<String, String> {
    ensure_target(root, WASM_TARGET)?;
    let cargo_home = cargo_home();
    // SIMD (wasm's fixed 128-bit SIMD, in every runtime the module targets: wasmtime,
    // Node, Chromium, Firefox, Safari 16.4+, workerd) makes the module 2% smaller and its
    // batches a few per cent faster. LLVM's inline threshold at 100 instead of opt-level
    // 3's 225 takes the module from 661 to 592 KB at the same speed: the hot paths are
    // inlined either way, and the rest is code that runs once per load (BENCHMARKS.md).
    let flags = format!(
        "--remap-path-prefix={}=/cargo --remap-path-prefix={}=/clearance -C target-feature=+simd128 -C llvm-args=-inline-threshold=100",
        cargo_home.display(),
        root.display()
    );
    let manifest = root.join("Cargo.toml");
    let manifest = manifest.to_string_lossy();
    let target_s = target.to_string_lossy();
    run(
        "wasm module",
        "cargo",
        &[
            "build",
            "--manifest-path",
            &manifest,
            "--target-dir",
            &target_s,
            "-p",
            "clearance-wasm",
            "--target",
            "wasm32-unknown-unknown",
            "--profile",
            "wasm",
        ],
        &[("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS", &flags)],
    )?;
    let input = target.join("wasm32-unknown-unknown/wasm/clearance.wasm");
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!("xtask: wasm-bindgen -> {}", out.display());
    wasm_bindgen_cli_support::Bindgen::new()
        .input_path(&input)
        .out_name("clearance")
        .web(true)
        .map_err(|e| format!("wasm-bindgen: {e}"))?
        .typescript(true)
        // `CLEARANCE_WASM_NAMES=1` keeps the functions' names, for a profiler to show
        // (BENCHMARKS.md); the artifact itself never has them.
        .remove_name_section(std::env::var_os("CLEARANCE_WASM_NAMES").is_none())
        .remove_producers_section(true)
        .generate(out)
        .map_err(|e| format!("wasm-bindgen: {e}"))?;
    let (size, hash) = sha256_of(&out.join("clearance_bg.wasm"))?;
    std::fs::write(out.join("clearance_bg.wasm.sha256"), format!("{hash}\n"))
        .map_err(|e| e.to_string())?;
    eprintln!("xtask: clearance_bg.wasm is {size} bytes, sha256 {hash}");
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::{WASM_TARGET, has_target};

    /// A sysroot without the target's library is found missing (and installed), one with
    /// it is left alone.
    #[test]
    fn a_toolchain_without_the_wasm_target_is_found_missing() {
        let sysroot = std::env::temp_dir().join(format!("xtask-sysroot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&sysroot);
        std::fs::create_dir_all(sysroot.join("lib/rustlib/x86_64-unknown-linux-gnu/lib")).unwrap();
        assert!(!has_target(&sysroot, WASM_TARGET));
        std::fs::create_dir_all(sysroot.join("lib/rustlib").join(WASM_TARGET).join("lib")).unwrap();
        assert!(has_target(&sysroot, WASM_TARGET));
        let _ = std::fs::remove_dir_all(&sysroot);
    }
}
