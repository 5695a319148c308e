//! `clearance`: the server and its command line. `serve` runs the HTTP API on the demo
//! data or a store; `check`, `explain` and `matrix` decide through the same wasm module;
//! `validate` checks policy files; `test` runs scenario files (natively, with the core the
//! module is built from).

use clap::{Parser, Subcommand, ValueEnum};
use clearance_core::{Facts, Schema, Snapshot, Source};
use clearance_host::service::{self, ServerLimits, Service, ServiceConfig, read_policies};
use clearance_host::{Runtime, RuntimeConfig};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "clearance",
    version,
    about = "Access checks for aviation operations: one wasm module decides, everywhere"
)]
struct Cli {
    /// The policy directory (`*.policy`).
    #[arg(long, global = true, default_value = "policies")]
    policies: PathBuf,
    /// The wasm artifact (its SHA-256 is read from `<file>.sha256`, written by `cargo xtask wasm`).
    #[arg(long, global = true, default_value = "web/pkg/clearance_bg.wasm")]
    wasm: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (seeds the demo data on first start with no store).
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
        /// The SQLite fact store.
        #[arg(long, default_value = "clearance.db")]
        data: PathBuf,
        /// Facts to seed an empty store with: a JSON facts file, or a directory whose
        /// `*.json` facts are merged.
        #[arg(long, default_value = "tests/worlds")]
        seed: PathBuf,
        /// Instances of the module.
        #[arg(long, default_value_t = 2)]
        instances: u32,
        /// The `web/` directory the operations console is served from (at `/`).
        #[arg(long, default_value = "web")]
        web: PathBuf,
        /// Where compiled modules are cached (a directory only this user may write to;
        /// default: `<data>.cache`).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Serve the policy files even when the store holds another policy, after
        /// checking every stored fact against them (the adoption is stored as a change).
        /// Without it, the stored policy wins.
        #[arg(long)]
        adopt_policy: bool,
        /// Callers that may wait for an instance before more are answered 503.
        #[arg(long, default_value_t = 1024)]
        queue: u32,
        /// Connections held at once; more are answered 503 and closed.
        #[arg(long, default_value_t = 1024)]
        max_connections: usize,
        /// Changes kept for live followers of the change feed; a follower that falls
        /// further behind gets a `reset` event.
        #[arg(long, default_value_t = 1024)]
        feed_buffer: usize,
    },
    /// Decide one request.
    Check(RequestArgs),
    /// Decide one request and explain every failed check (or the granting path).
    Explain(RequestArgs),
    /// Print the access-rights matrix (roles x rows) of a matrix.
    Matrix {
        /// The matrix.
        #[arg(default_value = "operations")]
        matrix: String,
        /// Show it as this account sees it (with its custom roles).
        #[arg(long)]
        account: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Facts (a JSON file or a directory of them).
        #[arg(long, default_value = "tests/worlds")]
        facts: PathBuf,
    },
    /// Check policy files; print every error as file:line:col.
    Validate,
    /// Run scenario files (a world, requests, expected decisions): pass and fail counts,
    /// exit code 1 on any failure.
    Test {
        /// Scenario files or directories of them.
        #[arg(default_value = "tests/scenarios")]
        paths: Vec<PathBuf>,
        /// Where the scenarios' worlds are.
        #[arg(long, default_value = "tests/worlds")]
        worlds: PathBuf,
        /// Print every case, not only failures.
        #[arg(long)]
        verbose: bool,
    },
}

#[derive(clap::Args)]
struct RequestArgs {
    /// The principal, `type:id`.
    principal: String,
    /// The action.
    action: String,
    /// The resource, `type:id` or a page `matrix:row`.
    resource: String,
    /// The time of the request (RFC 3339); now if not given.
    #[arg(long)]
    now: Option<String>,
    /// The target entity, for permissions that take one.
    #[arg(long)]
    target: Option<String>,
    /// Facts (a JSON file or a directory of them).
    #[arg(long, default_value = "tests/worlds")]
    facts: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
    Html,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let tokio = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(t) => t,
        Err(e) => return fail(&format!("cannot start tokio: {e}")),
    };
    match tokio.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("clearance: {message}");
    ExitCode::from(2)
}

fn sources(dir: &Path) -> Result<Vec<Source>, String> {
    read_policies(dir)
}

/// Facts from a JSON file, or the merge of a directory's `*.json` files.
fn load_facts(path: &Path) -> Result<Facts, String> {
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
    let mut merged = clearance_core::FactsJson::default();
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let doc: clearance_core::FactsJson =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", f.display()))?;
        merged.entities.extend(doc.entities);
        merged.tuples.extend(doc.tuples);
    }
    Facts::from_doc(merged).map_err(|e| e.to_string())
}

/// The per-user cache of compiled modules, for the commands that run without a store.
fn user_cache() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("clearance").join("cwasm"))
}

fn runtime(wasm: &Path, config: RuntimeConfig) -> Result<Arc<Runtime>, String> {
    let bytes = std::fs::read(wasm)
        .map_err(|e| format!("{}: {e}; build it with `cargo xtask wasm`", wasm.display()))?;
    let hash_file = PathBuf::from(format!("{}.sha256", wasm.display()));
    let hash = std::fs::read_to_string(&hash_file).map_err(|e| {
        format!(
            "{}: {e}; build it with `cargo xtask wasm`",
            hash_file.display()
        )
    })?;
    let rt = Runtime::new(&bytes, hash.trim(), config).map_err(|e| e.to_string())?;
    eprintln!(
        "clearance: module {} ({} bytes)",
        rt.module_hash(),
        bytes.len()
    );
    Ok(Arc::new(rt))
}

async fn loaded(cli: &Cli, facts_path: &Path) -> Result<Arc<Runtime>, String> {
    let t = Instant::now();
    let schema = Arc::new(Schema::compile(&sources(&cli.policies)?).map_err(|e| e.to_string())?);
    let facts = load_facts(facts_path)?;
    let snap = Snapshot::build(schema, &facts).map_err(|e| e.to_string())?;
    eprintln!(
        "clearance: {} entities, {} tuples compiled in {} ms",
        snap.names.len(),
        snap.tuple_count(),
        t.elapsed().as_millis()
    );
    let rt = runtime(
        &cli.wasm,
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

fn now_text() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    clearance_core::time::format(secs)
}

async fn run(cli: Cli) -> Result<ExitCode, String> {
    match &cli.command {
        Command::Validate => {
            let sources = sources(&cli.policies)?;
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
        Command::Test {
            paths,
            worlds,
            verbose,
        } => {
            let schema =
                Arc::new(Schema::compile(&sources(&cli.policies)?).map_err(|e| e.to_string())?);
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
                        Ok(()) if *verbose => println!("  ok   {case}"),
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
        Command::Check(args) | Command::Explain(args) => {
            let rt = loaded(&cli, &args.facts).await?;
            let request = json!({ "principal": args.principal, "action": args.action, "resource": args.resource, "target": args.target, "now": args.now.clone().unwrap_or_else(now_text) });
            let explain = matches!(cli.command, Command::Explain(_));
            let op = if explain { "explain" } else { "check" };
            let answer = rt
                .call(json!({ "op": op, "request": request }).to_string())
                .await
                .map_err(|e| e.to_string())?;
            let decision = if explain {
                answer.get("decision").cloned().unwrap_or(Value::Null)
            } else {
                answer.clone()
            };
            let allowed = decision.get("allowed") == Some(&Value::Bool(true));
            println!("{}", if allowed { "ALLOW" } else { "DENY" });
            for r in decision
                .get("reasons")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                println!(
                    "  {:<26} {}",
                    r.get("code").and_then(Value::as_str).unwrap_or(""),
                    r.get("message").and_then(Value::as_str).unwrap_or("")
                );
            }
            if let Some(u) = decision.get("valid_until").and_then(Value::as_str) {
                println!("  valid until {u}");
            }
            for h in answer
                .get("held")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                println!(
                    "  held: {} {}",
                    h.get("rule").and_then(Value::as_str).unwrap_or(""),
                    h.get("message").and_then(Value::as_str).unwrap_or("")
                );
            }
            Ok(if allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Matrix {
            matrix,
            account,
            format,
            facts,
        } => {
            let rt = loaded(&cli, facts).await?;
            let m = rt
                .call(json!({ "op": "matrix", "matrix": matrix, "account": account }).to_string())
                .await
                .map_err(|e| e.to_string())?;
            print!("{}", render_matrix(&m, *format));
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            addr,
            data,
            seed,
            instances,
            web,
            cache_dir,
            adopt_policy,
            queue,
            max_connections,
            feed_buffer,
        } => {
            let cache = cache_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("{}.cache", data.display())));
            let rt = runtime(
                &cli.wasm,
                RuntimeConfig {
                    instances: *instances,
                    queue: *queue,
                    cache_dir: Some(cache),
                    ..RuntimeConfig::default()
                },
            )?;
            let seed = seed.clone();
            let seeded = move || {
                eprintln!(
                    "clearance: new store; seeding the demo data from {}",
                    seed.display()
                );
                load_facts(&seed)
            };
            let t = Instant::now();
            let service = Service::open(
                rt,
                sources(&cli.policies)?,
                data,
                seeded,
                Some(cli.policies.clone()),
                ServiceConfig {
                    adopt_policy: *adopt_policy,
                    feed_buffer: *feed_buffer,
                    ..ServiceConfig::default()
                },
            )
            .await?;
            eprintln!(
                "clearance: revision {} loaded in {} ms",
                service.revision(),
                t.elapsed().as_millis()
            );
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("{addr}: {e}"))?;
            let local = listener.local_addr().map_err(|e| e.to_string())?;
            eprintln!(
                "clearance: console at http://{local}/, API at http://{local}/v1 (OpenAPI at /v1/openapi.json)"
            );
            let files = service::ConsoleFiles {
                web: web.clone(),
                pkg: cli
                    .wasm
                    .parent()
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from(".")),
            };
            let app = service::with_console(service::router(service), &files);
            service::serve_with_limits(
                listener,
                app,
                ServerLimits {
                    max_connections: *max_connections,
                    ..ServerLimits::default()
                },
                async {
                    let _ = tokio::signal::ctrl_c().await;
                },
            )
            .await
            .map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn render_matrix(m: &Value, format: Format) -> String {
    let rows: Vec<&str> = m["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let roles: Vec<(&str, Vec<&str>)> = m["roles"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r.get("name").and_then(Value::as_str).unwrap_or(""),
                r["cells"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect(),
            )
        })
        .collect();
    match format {
        Format::Json => format!("{m:#}\n"),
        Format::Csv => {
            let mut out = format!("role,{}\n", rows.join(","));
            for (name, cells) in &roles {
                out.push_str(&format!(
                    "{name},{}\n",
                    cells
                        .iter()
                        .map(|c| if c.contains(',') {
                            format!("\"{c}\"")
                        } else {
                            c.to_string()
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                ));
            }
            out
        }
        Format::Html => {
            let mut out = String::from("<table class=\"matrix\">\n<tr><th>role</th>");
            for r in &rows {
                out.push_str(&format!("<th>{r}</th>"));
            }
            out.push_str("</tr>\n");
            for (name, cells) in &roles {
                out.push_str(&format!("<tr><th>{name}</th>"));
                for c in cells {
                    let level = c.split('(').next().unwrap_or(c);
                    out.push_str(&format!("<td class=\"{level}\">{c}</td>"));
                }
                out.push_str("</tr>\n");
            }
            out.push_str("</table>\n");
            out
        }
        Format::Table => {
            let width = rows
                .iter()
                .map(|r| r.len())
                .chain(roles.iter().flat_map(|(_, c)| c.iter().map(|x| x.len())))
                .max()
                .unwrap_or(8);
            let name_width = roles.iter().map(|(n, _)| n.len()).max().unwrap_or(4).max(4);
            let mut out = format!("{:<name_width$}", "role");
            for r in &rows {
                out.push_str(&format!(" {r:<width$}"));
            }
            out.push('\n');
            for (name, cells) in &roles {
                out.push_str(&format!("{name:<name_width$}"));
                for c in cells {
                    out.push_str(&format!(" {c:<width$}"));
                }
                out.push('\n');
            }
            out
        }
    }
}
