//! The parity suite's machinery: the same snapshot and the same binary queries decided by
//! the native core, by the wasm module on wasmtime, and by the same module in Node; every
//! decision compared byte for byte, with one digest over all of them.

use clearance_core::decision::{Query, Resource};
use clearance_core::wire::{QUERY_LEN, decode_decisions, encode_decision, encode_query};
use clearance_core::{Request, Snapshot, TimeValue};
use clearance_host::{Runtime, RuntimeConfig};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// The built artifact: `web/pkg/clearance_bg.wasm` and the hash the build recorded.
pub struct Artifact {
    /// The module's bytes.
    pub wasm: Vec<u8>,
    /// The SHA-256 recorded by `cargo xtask wasm`.
    pub sha256: String,
}

/// Reads the artifact, or says how to build it.
pub fn artifact() -> Result<Artifact, String> {
    let dir = crate::root().join("web/pkg");
    let wasm = std::fs::read(dir.join("clearance_bg.wasm"))
        .map_err(|e| format!("web/pkg/clearance_bg.wasm: {e}; build it with `cargo xtask wasm`"))?;
    let sha256 = std::fs::read_to_string(dir.join("clearance_bg.wasm.sha256"))
        .map_err(|e| {
            format!("web/pkg/clearance_bg.wasm.sha256: {e}; build it with `cargo xtask wasm`")
        })?
        .trim()
        .to_string();
    Ok(Artifact { wasm, sha256 })
}

/// Starts the wasmtime runtime on the artifact.
pub fn runtime(a: &Artifact) -> Result<Arc<Runtime>, String> {
    let config = RuntimeConfig {
        instances: 2,
        cache_dir: Some(std::env::temp_dir().join("clearance-cwasm")),
        ..RuntimeConfig::default()
    };
    Runtime::new(&a.wasm, &a.sha256, config)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// Encodes a request as a binary query; names that do not resolve become ids that do not
/// exist, so every runtime denies them the same way.
pub fn query(s: &Snapshot, r: &Request) -> Query {
    if let Ok(q) = s.resolve(r) {
        return q;
    }
    let entity = |name: &str| s.entity(name).unwrap_or(u32::MAX);
    let resource = match s.entity(&r.resource) {
        Some(e) => Resource::Entity(e),
        None => match r.resource.split_once(':').and_then(|(m, row)| {
            let mi = *s.schema.matrix_index.get(m)?;
            let ri = *s.schema.matrices.get(mi as usize)?.row_index.get(row)?;
            Some(Resource::Page {
                matrix: mi,
                row: ri,
            })
        }) {
            Some(p) => p,
            None => Resource::Entity(u32::MAX),
        },
    };
    let action = match resource {
        Resource::Entity(e) => s
            .type_of(e)
            .and_then(|t| s.schema.ty(t))
            .and_then(|t| t.perm(&r.action))
            .unwrap_or(u16::MAX),
        Resource::Page { matrix, row } => s
            .schema
            .matrices
            .get(matrix as usize)
            .and_then(|m| m.action_bit(row, &r.action))
            .map_or(u16::MAX, u16::from),
    };
    Query {
        principal: entity(&r.principal),
        resource,
        action,
        target: r.target.as_deref().map(entity),
        now: r.now.seconds().unwrap_or(i64::MIN),
    }
}

/// One snapshot and its queries, decided in every runtime.
pub struct Job {
    /// What the job is (a world, or a scenario case with deltas).
    pub name: String,
    /// The snapshot decided on natively: the state after `changes`.
    pub snapshot: Snapshot,
    /// Changes each other runtime applies in place, in order, to the snapshot it loads
    /// before it decides (none: it loads `snapshot` itself).
    pub changes: Vec<Vec<clearance_core::Delta>>,
    /// The queries.
    pub queries: Vec<Query>,
}

/// What one runtime decided, as wire bytes, and what it reported.
#[derive(Debug, Clone)]
pub struct RuntimeRun {
    /// The runtime.
    pub runtime: &'static str,
    /// The artifact hash it reports (`native` has none).
    pub module_sha256: Option<String>,
    /// The encoded decisions, one per query, in order.
    pub decisions: Vec<Vec<u8>>,
}

/// A decision on which two runtimes differ.
#[derive(Debug, Clone)]
pub struct Mismatch {
    /// The job.
    pub job: String,
    /// The query's index in the job.
    pub index: usize,
    /// The runtime that differs from native.
    pub runtime: &'static str,
    /// The native decision and the other, decoded, for the report.
    pub native: String,
    /// The other runtime's decision.
    pub other: String,
}

/// The outcome of the suite.
#[derive(Debug, Default)]
pub struct Report {
    /// Queries compared (per runtime).
    pub compared: usize,
    /// SHA-256 over every native decision, in order.
    pub digest: String,
    /// Artifact hashes reported by the wasm runtimes.
    pub module_hashes: Vec<(String, String)>,
    /// Every difference.
    pub mismatches: Vec<Mismatch>,
}

/// Decides every job natively.
pub fn native(jobs: &[Job]) -> Vec<RuntimeRun> {
    jobs.iter()
        .map(|j| RuntimeRun {
            runtime: "native",
            module_sha256: None,
            decisions: j
                .queries
                .iter()
                .map(|q| {
                    let mut b = Vec::new();
                    encode_decision(&j.snapshot.decide_checked(q), &mut b);
                    b
                })
                .collect(),
        })
        .collect()
}

fn split(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let decoded = decode_decisions(bytes).ok_or("undecodable decisions")?;
    Ok(decoded
        .iter()
        .map(|d| {
            let mut b = Vec::new();
            let full = clearance_core::Decision {
                allowed: d.allowed,
                reasons: d.reasons.clone(),
                revision: 0,
                policy_hash: [0; 32],
                valid_until: d.valid_until,
            };
            encode_decision(&full, &mut b);
            b
        })
        .collect())
}

fn encode_all(queries: &[Query]) -> Vec<u8> {
    let mut b = Vec::with_capacity(queries.len() * QUERY_LEN);
    for q in queries {
        encode_query(q, &mut b);
    }
    b
}

/// Decides every job on wasmtime, loading each job's snapshot `snapshots[i]` (usually the
/// job's own; a test may pass another to show the suite notices).
pub fn wasmtime(
    rt: &Arc<Runtime>,
    jobs: &[Job],
    snapshots: &[Vec<u8>],
) -> Result<Vec<RuntimeRun>, String> {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    tokio.block_on(async {
        let mut runs = Vec::new();
        for (j, bytes) in jobs.iter().zip(snapshots) {
            let info = rt
                .load_snapshot(bytes.clone())
                .await
                .map_err(|e| format!("{}: {e}", j.name))?;
            // Each change handed to the instances as a write hands it: applied in place
            // by an instance before its next call.
            let mut revision = info.revision;
            for deltas in &j.changes {
                revision += 1;
                let call = clearance_core::protocol::Call::ApplyDeltas {
                    deltas: deltas.clone(),
                }
                .to_json()
                .map_err(|e| format!("{}: {e}", j.name))?;
                rt.push_change(revision, call);
            }
            let mut decisions = Vec::with_capacity(j.queries.len());
            for chunk in j.queries.chunks(16_384) {
                let ds = rt
                    .check_ids(encode_all(chunk))
                    .await
                    .map_err(|e| format!("{}: {e}", j.name))?;
                for d in ds {
                    let full = clearance_core::Decision {
                        allowed: d.allowed,
                        reasons: d.reasons,
                        revision: 0,
                        policy_hash: [0; 32],
                        valid_until: d.valid_until,
                    };
                    let mut b = Vec::new();
                    encode_decision(&full, &mut b);
                    decisions.push(b);
                }
            }
            runs.push(RuntimeRun {
                runtime: "wasmtime",
                module_sha256: Some(rt.module_hash().to_string()),
                decisions,
            });
        }
        Ok(runs)
    })
}

/// Decides every job in Node with the same module (`web/test/parity-runner.mjs`).
pub fn node(jobs: &[Job], snapshots: &[Vec<u8>], work: &Path) -> Result<Vec<RuntimeRun>, String> {
    std::fs::create_dir_all(work).map_err(|e| e.to_string())?;
    let runner = crate::root().join("web/test/parity-runner.mjs");
    let mut runs = Vec::new();
    for (i, (j, bytes)) in jobs.iter().zip(snapshots).enumerate() {
        let snap: PathBuf = work.join(format!("job{i}.snapshot"));
        let queries = work.join(format!("job{i}.queries"));
        let out = work.join(format!("job{i}.decisions"));
        let changes = work.join(format!("job{i}.changes"));
        std::fs::write(&snap, bytes).map_err(|e| e.to_string())?;
        std::fs::write(&queries, encode_all(&j.queries)).map_err(|e| e.to_string())?;
        let text = serde_json::to_string(&j.changes).map_err(|e| e.to_string())?;
        std::fs::write(&changes, text).map_err(|e| e.to_string())?;
        let output = Command::new("node")
            .arg(&runner)
            .arg("--snapshot")
            .arg(&snap)
            .arg("--changes")
            .arg(&changes)
            .arg("--queries")
            .arg(&queries)
            .arg("--out")
            .arg(&out)
            .output()
            .map_err(|e| format!("cannot run node: {e}"))?;
        let line = String::from_utf8_lossy(&output.stdout).to_string();
        if !output.status.success() {
            return Err(format!(
                "{}: node runner failed: {line} {}",
                j.name,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let report: serde_json::Value = serde_json::from_str(line.trim())
            .map_err(|e| format!("{}: node said `{line}`: {e}", j.name))?;
        let decisions = split(&std::fs::read(&out).map_err(|e| e.to_string())?)?;
        runs.push(RuntimeRun {
            runtime: "node",
            module_sha256: report
                .get("module_sha256")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            decisions,
        });
    }
    Ok(runs)
}

/// Decides every job inside headless Chromium with the same module
/// (`web/browser/parity-chromium.mjs`), from the job files [`node`] wrote to `work`.
pub fn chromium(jobs: &[Job], work: &Path) -> Result<Vec<RuntimeRun>, String> {
    runner(
        "chromium",
        "web/browser/parity-chromium.mjs",
        "browser",
        jobs,
        work,
    )
}

/// Decides every job inside workerd, an edge platform's runtime, through Miniflare
/// (`web/test/parity-workerd.mjs`), from the job files [`node`] wrote to `work`.
pub fn workerd(jobs: &[Job], work: &Path) -> Result<Vec<RuntimeRun>, String> {
    runner(
        "workerd",
        "web/test/parity-workerd.mjs",
        "runtime",
        jobs,
        work,
    )
}

/// Runs a Node script that decides every job of `work` in `runtime` and writes
/// `job<i>.<runtime>`; its one line of JSON names the module's hash and, under `what`, the
/// runtime's version.
fn runner(
    runtime: &'static str,
    script: &str,
    what: &str,
    jobs: &[Job],
    work: &Path,
) -> Result<Vec<RuntimeRun>, String> {
    let output = Command::new("node")
        .arg(crate::root().join(script))
        .arg("--work")
        .arg(work)
        .arg("--jobs")
        .arg(jobs.len().to_string())
        .output()
        .map_err(|e| format!("cannot run node: {e}"))?;
    let line = String::from_utf8_lossy(&output.stdout).to_string();
    if !output.status.success() {
        return Err(format!(
            "the {runtime} runner failed: {line} {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let report: serde_json::Value = serde_json::from_str(line.trim())
        .map_err(|e| format!("the {runtime} runner said `{line}`: {e}"))?;
    println!(
        "parity: {runtime} is {}",
        report
            .get(what)
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
    );
    let module = report
        .get("module_sha256")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    (0..jobs.len())
        .map(|i| {
            let bytes = std::fs::read(work.join(format!("job{i}.{runtime}")))
                .map_err(|e| format!("{runtime} job {i}: {e}"))?;
            Ok(RuntimeRun {
                runtime,
                module_sha256: module.clone(),
                decisions: split(&bytes)?,
            })
        })
        .collect()
}

/// Compares every runtime's runs with the native ones.
pub fn compare(jobs: &[Job], native: &[RuntimeRun], others: &[Vec<RuntimeRun>]) -> Report {
    let mut report = Report::default();
    let mut hasher = Sha256::new();
    for (ji, (job, n)) in jobs.iter().zip(native).enumerate() {
        report.compared += n.decisions.len();
        for d in &n.decisions {
            hasher.update(d);
        }
        for runs in others {
            let Some(o) = runs.get(ji) else {
                report.mismatches.push(Mismatch {
                    job: job.name.clone(),
                    index: 0,
                    runtime: "?",
                    native: "a job".into(),
                    other: "missing".into(),
                });
                continue;
            };
            if let Some(h) = &o.module_sha256
                && !report
                    .module_hashes
                    .iter()
                    .any(|(r, x)| r == o.runtime && x == h)
            {
                report
                    .module_hashes
                    .push((o.runtime.to_string(), h.clone()));
            }
            for i in 0..n.decisions.len().max(o.decisions.len()) {
                let (a, b) = (n.decisions.get(i), o.decisions.get(i));
                if a != b {
                    let show = |x: Option<&Vec<u8>>| {
                        x.and_then(|x| decode_decisions(x))
                            .map_or("missing".to_string(), |d| format!("{d:?}"))
                    };
                    report.mismatches.push(Mismatch {
                        job: job.name.clone(),
                        index: i,
                        runtime: o.runtime,
                        native: show(a),
                        other: show(b),
                    });
                }
            }
        }
    }
    report.digest = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    report
}

/// A request at `now` (seconds).
pub fn request(p: &str, a: &str, r: &str, now: i64) -> Request {
    Request {
        principal: p.into(),
        action: a.into(),
        resource: r.into(),
        target: None,
        now: TimeValue::Seconds(now),
    }
}
