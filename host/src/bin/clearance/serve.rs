//! `clearance serve`: the HTTP API on a store, with the operations console.

use crate::Cli;
use crate::common::{load_facts, module, sources};
use crate::logs::LogFormat;
use clearance_host::RuntimeConfig;
use clearance_host::api::ServerLimits;
use clearance_host::auth::{
    DEFAULT_MAX_LIFETIME, DemoIssuer, Scope, TokenRules, TokenVerifier, new_key,
};
use clearance_host::service::{Service, ServiceConfig};
use clearance_host::signer::SliceSigner;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

/// What `serve` takes.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// A TOML file of settings, named as the flags (`addr = "127.0.0.1:8080"`,
    /// `follow-interval-ms = 200`, `demo = true`). A flag beats an environment variable
    /// (`CLEARANCE_<SETTING>`), which beats the file, which beats the default.
    #[arg(long, env = "CLEARANCE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "CLEARANCE_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Serve HTTPS with this certificate chain (PEM), HTTP/2 and HTTP/1.1 offered by
    /// ALPN; needs `--tls-key`. The files are read again when they change, and a renewed
    /// certificate is served to the next connection.
    #[arg(long, env = "CLEARANCE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `--tls-cert`.
    #[arg(long, env = "CLEARANCE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// An origin whose pages may call the API from a browser (CORS), as
    /// `https://host[:port]`; repeat, or separate with commas. Preflights are answered
    /// and credentials allowed for these origins only. None: same-origin only.
    #[arg(
        long = "cors-origin",
        env = "CLEARANCE_CORS_ORIGIN",
        value_delimiter = ','
    )]
    pub cors_origin: Vec<String>,
    /// Networks (CIDR blocks or addresses) of reverse proxies whose `Forwarded` or
    /// `X-Forwarded-For` header names the client: its address is then the one rate
    /// limits count and log lines name. The headers of any other address are ignored.
    #[arg(long = "trusted-proxies", env = "CLEARANCE_TRUSTED_PROXIES", value_delimiter = ',', num_args = 1..)]
    pub trusted_proxies: Vec<String>,
    /// How often, in milliseconds, the TLS files are checked for a change.
    #[arg(long, env = "CLEARANCE_TLS_CHECK_INTERVAL_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..))]
    pub tls_check_interval_ms: u64,
    /// The SQLite fact store.
    #[arg(long, env = "CLEARANCE_DATA", default_value = "clearance.db")]
    pub data: PathBuf,
    /// A PostgreSQL fact store (`postgres://user@host:port/db`), instead of `--data`:
    /// several hosts may serve one, each following the changes of the others. Migrate
    /// it first (`clearance migrate --store URL`).
    #[arg(long, env = "CLEARANCE_STORE")]
    pub store: Option<String>,
    /// How often, in milliseconds, the host asks the store whether another host appended
    /// (besides PostgreSQL's notifications), and so learns whether the store answers
    /// (`/readyz`); 0: every second.
    #[arg(long, env = "CLEARANCE_FOLLOW_INTERVAL_MS", default_value_t = 1000)]
    pub follow_interval_ms: u64,
    /// How many revisions behind the store the host may be and still answer `/readyz`
    /// with 200.
    #[arg(long, env = "CLEARANCE_READY_LAG", default_value_t = 1000)]
    pub ready_lag: u64,
    /// Facts to seed a new, empty store with: a JSON facts file, or a directory whose
    /// `*.json` facts are merged. Without it a new store starts empty, except with
    /// `--demo`, which seeds the demo's facts.
    #[arg(long, env = "CLEARANCE_SEED")]
    pub seed: Option<PathBuf>,
    /// Instances of the module.
    #[arg(long, env = "CLEARANCE_INSTANCES", default_value_t = 2)]
    pub instances: u32,
    /// Serve the operations console at `/` (the page, the JS package and the module it
    /// runs in the browser). On with `--demo`; off otherwise.
    #[arg(long, env = "CLEARANCE_CONSOLE")]
    pub console: bool,
    /// Serve the console from this `web/` directory instead of the files the binary
    /// carries, for working on it (the module's files from `--wasm`'s directory, or
    /// `<web>/pkg`).
    #[arg(long, env = "CLEARANCE_WEB")]
    pub web: Option<PathBuf>,
    /// Where compiled modules are cached (a directory only this user may write to;
    /// default: `<data>.cache`).
    #[arg(long, env = "CLEARANCE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Serve the policy files even when the store holds another policy, after
    /// checking every stored fact against them (the adoption is stored as a change).
    /// Without it, the stored policy wins.
    #[arg(long, env = "CLEARANCE_ADOPT_POLICY")]
    pub adopt_policy: bool,
    /// Callers that may wait for an instance before more are answered 503.
    #[arg(long, env = "CLEARANCE_QUEUE", default_value_t = 1024)]
    pub queue: u32,
    /// Connections held at once; past it, a connection that has sent no request yet, of
    /// an address holding more such than the new one's, is closed to make room, or else
    /// the new one is answered 503 and closed.
    #[arg(long, env = "CLEARANCE_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Connections one network address (an IPv4 address, an IPv6 /64) may hold at once;
    /// more from it are answered 503 and closed. Behind a proxy every client shares the
    /// proxy's address.
    #[arg(
        long,
        env = "CLEARANCE_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 64
    )]
    pub max_connections_per_address: usize,
    /// The least rate, in bytes a second, a request body must keep to once 5 s have
    /// passed (a body must also arrive whole within 30 s); slower: 408 and the connection
    /// closed. 0: any rate.
    #[arg(long, env = "CLEARANCE_BODY_MIN_RATE", default_value_t = 1024)]
    pub body_min_rate: u64,
    /// Changes kept for live followers of the change feed; a follower that falls
    /// further behind gets a `reset` event.
    #[arg(long, env = "CLEARANCE_FEED_BUFFER", default_value_t = 1024)]
    pub feed_buffer: usize,
    /// Demo mode: runs a token issuer for the principals of the facts (`POST
    /// /demo/token`, a key made at start-up) and, on a store without keys, creates an
    /// admin key and prints it. Never for real data.
    #[arg(long, env = "CLEARANCE_DEMO")]
    pub demo: bool,
    /// With `--demo`: the server's clock for decisions and writes starts at this time
    /// (RFC 3339), for demo data that is dated.
    #[arg(long, env = "CLEARANCE_DEMO_TIME", requires = "demo")]
    pub demo_time: Option<String>,
    /// Verify user tokens against the public keys of this JWKS file.
    #[arg(long, env = "CLEARANCE_JWKS", requires_all = ["token_issuer", "token_audience"], conflicts_with = "demo")]
    pub jwks: Option<PathBuf>,
    /// Verify user tokens from this OpenID Connect provider (an https URL, exactly as its
    /// tokens' `iss` names it): its discovery document and key set are fetched over
    /// https and kept current as it rotates its keys. `--ca-cert` adds a private CA.
    #[arg(long, env = "CLEARANCE_OIDC_ISSUER", requires = "token_audience", conflicts_with_all = ["demo", "jwks", "token_issuer"])]
    pub oidc_issuer: Option<String>,
    /// The longest, in seconds, the provider's key set is kept before it is fetched
    /// again (a shorter `Cache-Control: max-age` from the provider wins).
    #[arg(long, env = "CLEARANCE_OIDC_REFRESH_INTERVAL", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub oidc_refresh_interval: u64,
    /// The least seconds between two fetches of the provider's key set: a token naming a
    /// key the set does not hold has it fetched again at most this often, and a failed
    /// fetch is tried again after this.
    #[arg(long, env = "CLEARANCE_OIDC_MIN_REFRESH_INTERVAL", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub oidc_min_refresh_interval: u64,
    /// The issuer (`iss`) user tokens must name.
    #[arg(long, env = "CLEARANCE_TOKEN_ISSUER")]
    pub token_issuer: Option<String>,
    /// The audience (`aud`) user tokens must name.
    #[arg(long, env = "CLEARANCE_TOKEN_AUDIENCE")]
    pub token_audience: Option<String>,
    /// The claim that names the principal.
    #[arg(long, env = "CLEARANCE_TOKEN_CLAIM", default_value = "sub")]
    pub token_claim: String,
    /// The principal type the claim names an id of.
    #[arg(long, env = "CLEARANCE_TOKEN_PRINCIPAL_TYPE", default_value = "user")]
    pub token_principal_type: String,
    /// The longest a user token may be valid, in seconds: a token whose `exp` is further
    /// ahead of the server's clock (past the 30 s leeway), or further after its `iat`, is
    /// refused, as is one whose `iat` is in the future.
    #[arg(long, env = "CLEARANCE_TOKEN_MAX_LIFETIME", default_value_t = DEFAULT_MAX_LIFETIME, value_parser = clap::value_parser!(u64).range(1..))]
    pub token_max_lifetime: u64,
    /// Requests a second each caller (a key or a user) may make, with as many at once;
    /// past it: 429 with `retry-after`. 0: no limit.
    #[arg(long, env = "CLEARANCE_RATE_LIMIT", default_value_t = 5000)]
    pub rate_limit: u32,
    /// Work a second each caller (a key or a user) may ask for, however few its
    /// requests: a batch costs its requests and a write its deltas (refused or not), any
    /// other request 1; as much at once, or the largest batch or write if more. Past it:
    /// 429 with `retry-after`, naming the cost and the budget. 0: no limit.
    #[arg(long, env = "CLEARANCE_WORK_LIMIT", default_value_t = 50_000)]
    pub work_limit: u32,
    /// Failed authentications a minute one network address may make, with as many at
    /// once; past it the address is answered 429 with `retry-after` until its budget
    /// refills. Behind a proxy every caller shares the proxy's address. 0: no limit.
    #[arg(long, env = "CLEARANCE_AUTH_FAILURE_LIMIT", default_value_t = 120)]
    pub auth_failure_limit: u32,
    /// Entities one author may create an hour through writes, with as many at once; past
    /// it a write creating more is answered 429 `write.quota`. Admin keys are not counted.
    /// 0: no quota.
    #[arg(
        long,
        env = "CLEARANCE_AUTHOR_CREATIONS_PER_HOUR",
        default_value_t = 2000
    )]
    pub author_creations_per_hour: u32,
    /// The same for all the authors of one account together. 0: no quota.
    #[arg(
        long,
        env = "CLEARANCE_ACCOUNT_CREATIONS_PER_HOUR",
        default_value_t = 20000
    )]
    pub account_creations_per_hour: u32,
    /// The Ed25519 private key (PKCS#8 DER) slices are signed with. Without it a key is
    /// made at start-up; either way its public half is served at `GET /v1/slice-keys`.
    #[arg(long, env = "CLEARANCE_SLICE_KEY")]
    pub slice_key: Option<PathBuf>,
    /// Seconds a signed slice may be loaded after it is issued.
    #[arg(long, env = "CLEARANCE_SLICE_TTL", default_value_t = 900)]
    pub slice_ttl: u64,
    /// Write a checkpoint (the state, so start-up need not replay the whole history)
    /// once this many changes follow the last one. 0: not by count.
    #[arg(long, env = "CLEARANCE_CHECKPOINT_CHANGES", default_value_t = 50_000)]
    pub checkpoint_changes: u64,
    /// Write a checkpoint once this many seconds have passed since the last one, if a
    /// change followed it. 0: not by time.
    #[arg(long, env = "CLEARANCE_CHECKPOINT_INTERVAL", default_value_t = 600)]
    pub checkpoint_interval: u64,
    /// The least seconds between two checkpoints.
    #[arg(long, env = "CLEARANCE_CHECKPOINT_GAP", default_value_t = 30)]
    pub checkpoint_gap: u64,
    /// How log lines are written to standard error: `json` (one object a line, with each
    /// request's route, status, duration, principal, revision and decision), `text`, or
    /// `auto` (text on a terminal, JSON otherwise).
    #[arg(long, env = "CLEARANCE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// What is logged: a level (`error`, `warn`, `info`, `debug`) or `tracing`
    /// directives (`info,clearance::request=warn` leaves out the line per request).
    #[arg(long, env = "CLEARANCE_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Also serve `/metrics` on this address, without credentials, for a scraper on the
    /// operator's network (on the API's address `/metrics` needs an admin key).
    #[arg(long, env = "CLEARANCE_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Send traces (a span for each request and each call into the module) to this
    /// OpenTelemetry collector's OTLP/HTTP traces URL (`http://127.0.0.1:4318/v1/traces`),
    /// in batches; the last are sent on shutdown. Needs a build with the feature `otel`
    /// (the default).
    #[arg(long, env = "CLEARANCE_OTEL_ENDPOINT")]
    pub otel_endpoint: Option<String>,
}

/// Serves until SIGINT.
pub async fn run(cli: &Cli, args: &ServeArgs) -> Result<ExitCode, String> {
    let ServeArgs {
        config: _,
        addr,
        tls_cert,
        tls_key,
        tls_check_interval_ms,
        cors_origin,
        trusted_proxies,
        data,
        store,
        follow_interval_ms,
        ready_lag,
        seed,
        instances,
        console,
        web,
        cache_dir,
        adopt_policy,
        queue,
        max_connections,
        max_connections_per_address,
        body_min_rate,
        feed_buffer,
        demo,
        demo_time,
        jwks,
        oidc_issuer,
        oidc_refresh_interval,
        oidc_min_refresh_interval,
        token_issuer,
        token_audience,
        token_claim,
        token_principal_type,
        token_max_lifetime,
        rate_limit,
        work_limit,
        auth_failure_limit,
        author_creations_per_hour,
        account_creations_per_hour,
        slice_key,
        slice_ttl,
        checkpoint_changes,
        checkpoint_interval,
        checkpoint_gap,
        log_format: _,
        log_level: _,
        metrics_addr,
        otel_endpoint: _,
    } = args;
    let tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => Some(clearance_host::tls::Tls::from_files(cert, key)?),
        _ => None,
    };
    let cors = clearance_host::api::CorsOrigins::parse(cors_origin)?;
    let trusted_proxies = clearance_host::api::TrustedProxies::parse(trusted_proxies)?;
    let slice_signer = match slice_key {
        Some(path) => Some(Arc::new(SliceSigner::from_file(path)?)),
        None => None,
    };
    let issuer = if *demo {
        Some(Arc::new(DemoIssuer::new()?))
    } else {
        None
    };
    let rules = TokenRules {
        issuer: token_issuer.clone().unwrap_or_default(),
        audience: token_audience.clone().unwrap_or_default(),
        claim: token_claim.clone(),
        principal_type: Some(token_principal_type.clone()),
        max_lifetime: *token_max_lifetime,
        ..TokenRules::default()
    };
    let oidc = match oidc_issuer {
        Some(url) => {
            let provider = clearance_host::oidc::Provider::new(
                url,
                rules.clone(),
                clearance_host::oidc::Refresh {
                    max_age: std::time::Duration::from_secs(*oidc_refresh_interval),
                    min_interval: std::time::Duration::from_secs(*oidc_min_refresh_interval),
                },
                clearance_host::tls::extra_roots(cli.ca_cert.as_deref())?,
            )?;
            // A provider that cannot be reached now is tried again in the background: the
            // host serves service keys meanwhile, and refuses user tokens saying why.
            let (first, _keeps_current) = provider.start().await;
            if first.is_err() {
                tracing::warn!(
                    "user tokens are refused until the identity provider's keys are fetched"
                );
            }
            Some(provider)
        }
        None => None,
    };
    let tokens = match (&issuer, jwks, &oidc) {
        (Some(i), _, _) => Some(Arc::new(TokenVerifier::new(
            &i.jwks,
            TokenRules {
                max_lifetime: *token_max_lifetime,
                ..i.rules.clone()
            },
        )?)),
        (None, Some(path), _) => Some(Arc::new(TokenVerifier::from_file(path, rules)?)),
        (None, None, Some(provider)) => Some(Arc::clone(provider.verifier())),
        (None, None, None) => None,
    };
    let clock_offset = match demo_time {
        Some(t) => clearance_core::time::parse(t)
            .map_err(|m| format!("--demo-time: {m}"))?
            .saturating_sub(clearance_host::clock::now_seconds()),
        None => 0,
    };
    let cache = cache_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.cache", data.display())));
    let (module_bytes, module_hash) = module(cli.wasm.as_deref())?;
    let rt = clearance_host::Runtime::new(
        &module_bytes,
        &module_hash,
        RuntimeConfig {
            instances: *instances,
            queue: *queue,
            cache_dir: Some(cache),
            ..RuntimeConfig::default()
        },
    )
    .map_err(|e| e.to_string())?;
    tracing::info!(
        "module {} ({} bytes{})",
        rt.module_hash(),
        module_bytes.len(),
        if cli.wasm.is_some() {
            ", from --wasm"
        } else {
            ""
        }
    );
    let rt = Arc::new(rt);
    let (seed, demo_seed) = (seed.clone(), *demo);
    let seeded = move || match (seed, demo_seed) {
        (Some(seed), _) => {
            tracing::info!("a new store: seeding it from {}", seed.display());
            load_facts(&seed)
        }
        (None, true) => {
            tracing::info!("a new store: seeding it with the demo's facts");
            clearance_host::embedded::demo_facts()
        }
        (None, false) => {
            tracing::warn!(
                "a new store, empty: no facts yet (give --seed FILE on a first start, write facts through POST /v1/facts, or `clearance import` them)"
            );
            Ok(clearance_core::Facts::default())
        }
    };
    let t = Instant::now();
    let config = ServiceConfig {
        adopt_policy: *adopt_policy,
        feed_buffer: *feed_buffer,
        tokens,
        oidc,
        demo: issuer,
        clock_offset,
        rate_limit: std::num::NonZeroU32::new(*rate_limit),
        work_limit: std::num::NonZeroU32::new(*work_limit),
        auth_failure_limit: std::num::NonZeroU32::new(*auth_failure_limit),
        author_creations_per_hour: std::num::NonZeroU32::new(*author_creations_per_hour),
        account_creations_per_hour: std::num::NonZeroU32::new(*account_creations_per_hour),
        slice_signer,
        slice_ttl: std::time::Duration::from_secs(*slice_ttl),
        checkpoint_changes: *checkpoint_changes,
        checkpoint_interval: std::time::Duration::from_secs(*checkpoint_interval),
        checkpoint_gap: std::time::Duration::from_secs(*checkpoint_gap),
        follow_interval: std::time::Duration::from_millis(*follow_interval_ms),
        ready_lag: *ready_lag,
        ..ServiceConfig::default()
    };
    let (files, dir) = policies(cli, *demo)?;
    let service = match store {
        Some(url) if clearance_host::store::postgres::is_postgres(url) => {
            Service::open_postgres(rt, files, url, seeded, dir, config).await?
        }
        Some(other) => {
            return Err(format!(
                "--store `{other}`: expected a PostgreSQL URL (postgres://…); a SQLite file is given with --data"
            ));
        }
        None => Service::open(rt, files, data, seeded, dir, config).await?,
    };
    let (from, replayed) = service.started_from();
    tracing::info!(
        "revision {} loaded in {} ms (from revision {from} and {replayed} changes after it)",
        service.revision(),
        t.elapsed().as_millis()
    );
    if *demo {
        tracing::warn!(
            "DEMO MODE: POST /demo/token {{\"principal\": \"user:…\"}} gives a user token for any principal of the facts (a key made at start-up); never serve real data like this"
        );
        if service.key_count() == 0 {
            let key = new_key(
                Scope::Admin,
                &[],
                "demo admin",
                clearance_host::clock::now_seconds(),
            )?;
            service
                .add_key(key.stored.clone())
                .await
                .map_err(|e| e.to_string())?;
            tracing::warn!(
                "DEMO MODE: created an admin key (shown once): {}",
                key.token
            );
        }
    } else if service.key_count() == 0 {
        tracing::warn!(
            "the store has no service keys: every /v1 call needs one; create one with `{}`",
            keys_command(data, store.as_deref())
        );
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    if let Some(tls) = &tls {
        tls.watch(std::time::Duration::from_millis(*tls_check_interval_ms));
    }
    let console = *console || *demo;
    if console {
        tracing::info!("console at {scheme}://{local}/");
    }
    tracing::info!("API at {scheme}://{local}/v1 (OpenAPI at /v1/openapi.json)");
    if let Some(at) = metrics_addr {
        let listener = tokio::net::TcpListener::bind(at)
            .await
            .map_err(|e| format!("--metrics-addr {at}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!("metrics at {scheme}://{local}/metrics (without credentials)");
        let closed = service.closed();
        let tls = tls.clone();
        let app = clearance_host::api::metrics_router(Arc::clone(&service));
        tokio::spawn(async move {
            let limits = ServerLimits {
                max_connections: 64,
                tls,
                ..ServerLimits::default()
            };
            if let Err(e) =
                clearance_host::api::serve_with_limits(listener, app, limits, closed).await
            {
                tracing::warn!("the metrics listener stopped: {e}");
            }
        });
    }
    let stopping = Arc::clone(&service);
    let app = clearance_host::api::router(service);
    let app = match (console, web) {
        (false, _) => app,
        (true, Some(web)) => {
            let files = clearance_host::api::ConsoleFiles {
                web: web.clone(),
                pkg: match &cli.wasm {
                    Some(wasm) => wasm
                        .parent()
                        .map_or_else(|| PathBuf::from("."), PathBuf::from),
                    None => web.join("pkg"),
                },
            };
            clearance_host::api::with_console(app, &files)
        }
        (true, None) => {
            clearance_host::api::with_embedded_console(app, module_bytes.into(), &module_hash)
                .map_err(|e| format!("--console: {e}"))?
        }
    };
    let app = clearance_host::api::with_cors(app, &cors);
    clearance_host::api::serve_with_limits(
        listener,
        app,
        ServerLimits {
            max_connections: *max_connections,
            max_connections_per_address: *max_connections_per_address,
            body_min_rate: *body_min_rate,
            tls,
            trusted_proxies,
            ..ServerLimits::default()
        },
        async move {
            let signal = match tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::terminate(),
            ) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => "SIGINT",
                        _ = term.recv() => "SIGTERM",
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    "SIGINT"
                }
            };
            tracing::info!(
                "{signal}: shutting down (no new connections; requests in flight finish, change feeds end)"
            );
            stopping.shut_down();
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The policies `serve` starts with, and the directory a reload reads: `--policies`, or
/// `policies` if it is here, or, for the demo, the shipped policies (no directory).
fn policies(
    cli: &Cli,
    demo: bool,
) -> Result<(Vec<clearance_core::Source>, Option<PathBuf>), String> {
    let dir = cli.policy_dir();
    if cli.policies.is_some() || dir.is_dir() {
        return Ok((sources(&dir)?, Some(dir)));
    }
    if demo {
        tracing::info!("no policy directory here: serving the shipped policies");
        return Ok((clearance_host::embedded::policies(), None));
    }
    Err(format!(
        "no policy directory `{}` here: give --policies DIR, or write a starting one with `clearance init DIR`",
        dir.display()
    ))
}

/// The command that creates an admin key for this store, as it must be typed.
pub fn keys_command(data: &std::path::Path, store: Option<&str>) -> String {
    match store {
        // Not the URL itself: it may hold a password.
        Some(_) => "clearance keys --store URL create --scope admin (URL: this server's --store)"
            .to_string(),
        None => format!(
            "clearance keys --data '{}' create --scope admin",
            data.display()
        ),
    }
}
