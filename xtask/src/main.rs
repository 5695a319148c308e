//! Automation for Clearance: `cargo xtask test` runs everything CI runs; `cargo xtask
//! bench` runs the benchmarks.

use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  test    the whole test suite: formatting, lints, the core built for wasm32,
          unit, scenario, property and fail-closed tests, doctests, benches run once
  bench   the criterion benchmarks (small and medium worlds)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("bench") => run(
            "benchmarks",
            "cargo",
            &["bench", "-p", "clearance-benches"],
            &[],
        ),
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
    // `--all-targets` also runs each benchmark once, as a test, on the small world.
    run(
        "tests",
        "cargo",
        &["test", "--workspace", "--all-targets"],
        &[("CLEARANCE_BENCH_SCALES", "small")],
    )?;
    run("doctests", "cargo", &["test", "--workspace", "--doc"], &[])?;
    eprintln!("xtask: every step passed");
    Ok(())
}

fn run(step: &str, program: &str, args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    eprintln!("xtask: {step}: {program} {}", args.join(" "));
    let status = Command::new(program)
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
