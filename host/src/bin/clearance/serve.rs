//! `clearance serve`: the HTTP API on a store, with the operations console.

use crate::Cli;
use crate::common::{load_facts, runtime, sources};
use clearance_host::RuntimeConfig;
use clearance_host::service::{self, ServerLimits, Service, ServiceConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// What `serve` takes.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// The SQLite fact store.
    #[arg(long, default_value = "clearance.db")]
    pub data: PathBuf,
    /// Facts to seed an empty store with: a JSON facts file, or a directory whose
    /// `*.json` facts are merged.
    #[arg(long, default_value = "tests/worlds")]
    pub seed: PathBuf,
    /// Instances of the module.
    #[arg(long, default_value_t = 2)]
    pub instances: u32,
    /// The `web/` directory the operations console is served from (at `/`).
    #[arg(long, default_value = "web")]
    pub web: PathBuf,
    /// Where compiled modules are cached (a directory only this user may write to;
    /// default: `<data>.cache`).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Serve the policy files even when the store holds another policy, after
    /// checking every stored fact against them (the adoption is stored as a change).
    /// Without it, the stored policy wins.
    #[arg(long)]
    pub adopt_policy: bool,
    /// Callers that may wait for an instance before more are answered 503.
    #[arg(long, default_value_t = 1024)]
    pub queue: u32,
    /// Connections held at once; more are answered 503 and closed.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Changes kept for live followers of the change feed; a follower that falls
    /// further behind gets a `reset` event.
    #[arg(long, default_value_t = 1024)]
    pub feed_buffer: usize,
}

/// Serves until SIGINT.
pub async fn run(cli: &Cli, args: &ServeArgs) -> Result<ExitCode, String> {
    let ServeArgs {
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
    } = args;
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
