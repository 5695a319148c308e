//! `clearance`: the server and its command line, a module per subcommand. `serve` runs
//! the HTTP API on a store; `check`, `explain` and `matrix` decide through the same wasm
//! module; `validate` checks policy files; `test` runs scenario files (natively, with the
//! core the module is built from); `keys` manages a store's service keys; `migrate`
//! brings a store to this host's format.

mod backup;
mod common;
mod config;
mod decide;
mod hosts;
mod import;
mod init;
mod keys;
mod logs;
mod matrix;
mod remote;
mod scenarios;
mod serve;
mod validate;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// The version `--version` prints: the crate's, and the SHA-256 of the module the binary
/// carries (the digest `/v1/revision` reports as `module_hash` when it runs it).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (module sha256 ",
    env!("CLEARANCE_MODULE_SHA256"),
    ")"
);

#[derive(Parser)]
#[command(
    // A setting from a config file comes first on the command line; the command line's
    // own, later, wins.
    args_override_self = true,
    name = "clearance",
    version = VERSION,
    about = "Access checks for aviation operations: one wasm module decides, everywhere"
)]
struct Cli {
    /// The policy directory (`*.policy`) [default: `policies`; `serve --demo` without
    /// one serves the shipped policies]. `clearance init DIR` writes a starting one.
    #[arg(long, global = true, env = "CLEARANCE_POLICIES")]
    policies: Option<PathBuf>,
    /// A wasm module to run instead of the one this binary carries, for development (its
    /// SHA-256 is read from `<file>.sha256`, written by `cargo xtask wasm`).
    #[arg(long, global = true, env = "CLEARANCE_WASM")]
    wasm: Option<PathBuf>,
    /// A running server to ask instead of deciding here (`http://127.0.0.1:8080`):
    /// `check` and `explain` go to it; `resources`, `principals`, `write` and `watch`
    /// need it.
    #[arg(long, global = true, env = "CLEARANCE_SERVER")]
    server: Option<String>,
    /// The credential for `--server`: a service key or a user token (never printed).
    #[arg(long, global = true, env = "CLEARANCE_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Certificates (PEM) to trust for outgoing https besides the web's roots, as a
    /// private CA: `--server`, the identity provider (`serve --oidc-issuer`) and the
    /// OpenTelemetry collector (`serve --otel-endpoint`).
    #[arg(long, global = true, env = "CLEARANCE_CA_CERT")]
    ca_cert: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API on a store (`--demo`: the demo, its data and its console).
    Serve(Box<serve::ServeArgs>),
    /// Write a starting policy directory (the shipped policies, to edit) and a config
    /// file for `serve` into DIR, which must not hold either yet.
    Init {
        /// The directory to write into (made if it does not exist).
        dir: PathBuf,
    },
    /// Exit 0 if URL answers a GET with a 2xx status within 5 s, 1 otherwise: a health
    /// check for an image with no other program (`clearance probe
    /// http://127.0.0.1:8080/readyz`).
    Probe {
        /// The URL to ask (http or https; `--ca-cert` for a private CA).
        url: String,
    },
    /// Manage the service keys of a store.
    Keys {
        /// The SQLite fact store.
        #[arg(long, default_value = "clearance.db")]
        data: PathBuf,
        /// A PostgreSQL fact store (`postgres://…`), instead of `--data`.
        #[arg(long)]
        store: Option<String>,
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Several hosts on one history, to watch: a throwaway PostgreSQL and `--count`
    /// demo hosts on it (Ctrl-C stops them and removes the database).
    Hosts(hosts::HostsArgs),
    /// Back up a store, online, into a new SQLite file: its state at one revision, its
    /// policy and its service keys.
    Backup {
        /// The SQLite fact store.
        #[arg(long, default_value = "clearance.db")]
        data: PathBuf,
        /// A PostgreSQL fact store (`postgres://…`), instead of `--data`.
        #[arg(long)]
        store: Option<String>,
        /// The backup file to write (it must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup into an empty store (a new SQLite file, or a migrated PostgreSQL
    /// database holding nothing yet).
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// The SQLite fact store to create.
        #[arg(long, default_value = "clearance.db")]
        data: PathBuf,
        /// A PostgreSQL fact store (`postgres://…`), instead of `--data`.
        #[arg(long)]
        store: Option<String>,
    },
    /// Import a large file of facts into a store as one revision: one delta a line (as
    /// in a write), read as a stream, all checked before anything is written; an error
    /// names its line and writes nothing. A SQLite file that does not exist is created.
    Import {
        /// The file: one delta a line (`{"op": "add_entity", "entity": {...}}`).
        #[arg(long)]
        from: PathBuf,
        /// The SQLite fact store.
        #[arg(long, default_value = "clearance.db")]
        data: PathBuf,
        /// A PostgreSQL fact store (`postgres://…`), instead of `--data`.
        #[arg(long)]
        store: Option<String>,
        /// Who the change is recorded as made by.
        #[arg(long, default_value = "import")]
        author: String,
    },
    /// Migrate a store to this host's format (a host refuses to start on an older one).
    Migrate {
        /// The SQLite fact store.
        #[arg(long, default_value = "clearance.db")]
        data: PathBuf,
        /// A PostgreSQL fact store (`postgres://…`), instead of `--data`.
        #[arg(long)]
        store: Option<String>,
    },
    /// On `--server`: the resources of a type a principal may act on.
    Resources {
        #[command(flatten)]
        args: remote::ResourcesArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = remote::Output::Text)]
        format: remote::Output,
    },
    /// On `--server`: the principals that may act on a resource.
    Principals {
        #[command(flatten)]
        args: remote::PrincipalsArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = remote::Output::Text)]
        format: remote::Output,
    },
    /// On `--server`: write deltas, judged by the policy as the author; prints the
    /// revision, or the refusal and why (exit 1).
    Write {
        #[command(flatten)]
        args: remote::WriteArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = remote::Output::Text)]
        format: remote::Output,
    },
    /// On `--server`: follow the changes, a line each, until the server ends the feed.
    Watch {
        /// Start after this revision (default: the current one).
        #[arg(long)]
        since: Option<u64>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = remote::Output::Text)]
        format: remote::Output,
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
    let argv = match config::expand(std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(e) => return fail(&e),
    };
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) => {
            let code = u8::try_from(e.exit_code()).unwrap_or(2);
            let _ = e.print();
            if code != 0 && argv.len() != std::env::args_os().count() {
                eprintln!("clearance: (some settings came from the --config file)");
            }
            return ExitCode::from(code);
        }
    };
    let traces = match &cli.command {
        Command::Serve(args) => logs::serve(
            args.log_format,
            &args.log_level,
            args.otel_endpoint.as_deref(),
            cli.ca_cert.as_deref(),
        )
        .map(Some),
        _ => {
            logs::command();
            Ok(None)
        }
    };
    let traces = match traces {
        Ok(t) => t,
        Err(e) => return fail(&e),
    };
    let tokio = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(t) => t,
        Err(e) => return fail(&format!("cannot start tokio: {e}")),
    };
    let result = tokio.block_on(run(cli));
    // Background work (a follower, a checkpoint being written, a store's listener) is not
    // waited for past a bound: a stopped host exits.
    tokio.shutdown_timeout(std::time::Duration::from_secs(5));
    // The spans still waiting are sent before the process exits.
    drop(traces);
    match result {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

impl Cli {
    /// The policy directory: as given, or `policies`.
    fn policy_dir(&self) -> PathBuf {
        self.policies
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_POLICIES))
    }
}

/// The policy directory when none is given.
const DEFAULT_POLICIES: &str = "policies";

fn fail(message: &str) -> ExitCode {
    eprintln!("clearance: {message}");
    ExitCode::from(2)
}

async fn run(cli: Cli) -> Result<ExitCode, String> {
    match &cli.command {
        Command::Validate => validate::run(&cli.policy_dir()),
        Command::Test {
            paths,
            worlds,
            verbose,
        } => scenarios::run(&cli.policy_dir(), paths, worlds, *verbose),
        Command::Check(args) | Command::Explain(args) => {
            let explain = matches!(cli.command, Command::Explain(_));
            match &cli.server {
                Some(server) => {
                    let remote =
                        remote::Remote::new(server, cli.key.as_deref(), cli.ca_cert.as_deref())?;
                    remote::decide(&remote, args, explain).await
                }
                None => decide::run(&cli, args, explain).await,
            }
        }
        Command::Resources { args, format } => {
            remote::resources(&on_server(&cli)?, args, *format).await
        }
        Command::Principals { args, format } => {
            remote::principals(&on_server(&cli)?, args, *format).await
        }
        Command::Write { args, format } => {
            match remote::write(&on_server(&cli)?, args, *format).await {
                Ok(code) => Ok(code),
                Err(remote::Failed(1, message)) => {
                    eprintln!("clearance: {message}");
                    Ok(ExitCode::FAILURE)
                }
                Err(remote::Failed(_, message)) => Err(message),
            }
        }
        Command::Watch { since, format } => remote::watch(&on_server(&cli)?, *since, *format).await,
        Command::Matrix {
            matrix,
            account,
            format,
            facts,
        } => matrix::run(&cli, matrix, account.as_deref(), *format, facts).await,
        Command::Serve(args) => serve::run(&cli, args).await,
        Command::Init { dir } => init::run(dir),
        Command::Probe { url } => probe(url, cli.ca_cert.as_deref()).await,
        Command::Keys {
            data,
            store,
            command,
        } => keys::run(&store_spec(data, store.as_deref())?, command).await,
        Command::Hosts(args) => hosts::run(&cli, args).await,
        Command::Backup { data, store, out } => {
            backup::backup(&store_spec(data, store.as_deref())?, out).await
        }
        Command::Restore { from, data, store } => {
            backup::restore(from, &store_spec(data, store.as_deref())?).await
        }
        Command::Import {
            from,
            data,
            store,
            author,
        } => {
            import::run(
                &store_spec(data, store.as_deref())?,
                from,
                author,
                &cli.policy_dir(),
            )
            .await
        }
        Command::Migrate { data, store } => {
            let spec = store_spec(data, store.as_deref())?;
            let done = clearance_host::store::migrate(&spec)
                .await
                .map_err(|e| e.to_string())?;
            eprintln!("clearance: {done}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `clearance probe URL`.
async fn probe(url: &str, ca_cert: Option<&std::path::Path>) -> Result<ExitCode, String> {
    let mut client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(5));
    for root in clearance_host::tls::extra_roots(ca_cert)? {
        client = client.add_root_certificate(root);
    }
    let client = client.build().map_err(|e| e.to_string())?;
    match client.get(url).send().await {
        Ok(r) if r.status().is_success() => Ok(ExitCode::SUCCESS),
        Ok(r) => {
            eprintln!("clearance: {url} answered {}", r.status());
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            eprintln!("clearance: {url}: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// The server a command needs (`--server` and `--key`).
fn on_server(cli: &Cli) -> Result<remote::Remote, String> {
    let server = cli.server.as_deref().ok_or(
        "this command asks a running server: give --server URL (or CLEARANCE_SERVER) and --key",
    )?;
    remote::Remote::new(server, cli.key.as_deref(), cli.ca_cert.as_deref())
}

/// The store a command works on: the PostgreSQL URL when one is given, or else the
/// SQLite file.
fn store_spec(data: &std::path::Path, store: Option<&str>) -> Result<String, String> {
    match store {
        Some(url) if clearance_host::store::postgres::is_postgres(url) => Ok(url.to_string()),
        Some(other) => Err(format!(
            "--store `{other}`: expected a PostgreSQL URL (postgres://…); a SQLite file is given with --data"
        )),
        None => data
            .to_str()
            .map(str::to_string)
            .ok_or_else(|| format!("--data {}: not UTF-8", data.display())),
    }
}
