//! `clearance init DIR`: a starting point an operator edits, written from what the
//! binary carries: the shipped policies in `DIR/policies` and `DIR/clearance.toml`, the
//! settings of `serve` with their defaults.

use std::path::Path;
use std::process::ExitCode;

/// The config file `init` writes: every line a setting `serve` reads (`serve --help`
/// names them all), relative paths read from the directory `serve` runs in.
const CONFIG: &str = r#"# clearance serve --config clearance.toml
#
# Each setting is named as its flag (`clearance serve --help`). A flag on the command
# line, or the environment variable CLEARANCE_<SETTING>, beats the file. Relative paths
# are read from the directory the server starts in.

# Where the API listens. Put TLS and a load balancer in front of it, or keep it on
# loopback.
addr = "127.0.0.1:8080"

# The policy directory (`*.policy`): edit the files, then `clearance validate` them.
policies = "policies"

# The store: a SQLite file (made on the first start), or a PostgreSQL URL in `store`
# (migrate it first: `clearance migrate --store URL`).
data = "clearance.db"
# store = "postgres://clearance@db.internal/clearance"

# Facts to seed a new store with on its first start (a JSON facts file or a directory of
# them). Without it, a new store starts empty.
# seed = "facts.json"

# User tokens: from an OpenID Connect provider (its keys by discovery, rotation
# followed), or verified against a fixed JWKS file with their issuer.
# oidc-issuer = "https://login.example.com/realms/ops"
# token-audience = "clearance"
# jwks = "jwks.json"
# token-issuer = "https://login.example.com/"

# The operations console at `/`.
# console = true

# Logs: `json` lines (what a collector reads), or `text`.
log-format = "json"
log-level = "info"

# /metrics without credentials, on an address only the operator's network reaches.
# metrics-addr = "127.0.0.1:9090"
"#;

/// Writes the starting policy directory and config file into `dir`.
pub fn run(dir: &Path) -> Result<ExitCode, String> {
    let policies = dir.join("policies");
    let config = dir.join("clearance.toml");
    for existing in [&policies, &config] {
        if existing.exists() {
            return Err(format!(
                "{} exists: `init` writes only into a directory that holds neither `policies` nor `clearance.toml`",
                existing.display()
            ));
        }
    }
    std::fs::create_dir_all(&policies).map_err(|e| format!("{}: {e}", policies.display()))?;
    for (name, text) in clearance_host::embedded::policy_files() {
        let path = policies.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    std::fs::write(&config, CONFIG).map_err(|e| format!("{}: {e}", config.display()))?;
    println!(
        "wrote {} ({} policy files) and {}",
        policies.display(),
        clearance_host::embedded::policy_files().len(),
        config.display()
    );
    println!("next:");
    for step in next_steps(dir) {
        println!("  {step}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The commands `init` suggests, in order, as they must be typed: check the policies,
/// start the server (which makes the store), and, once it runs, make an admin key (the
/// server picks it up within a second).
pub fn next_steps(dir: &Path) -> [String; 4] {
    [
        format!("cd '{}'", dir.display()),
        "clearance validate".to_string(),
        "clearance serve --config clearance.toml".to_string(),
        "clearance keys --data clearance.db create --scope admin   # once the server runs"
            .to_string(),
    ]
}
