//! `clearance keys create|list|revoke`: the service keys of a store. A key's secret is
//! printed once, at creation; the store keeps only its SHA-256. A running host picks up a
//! new or revoked key within its refresh interval (a second by default).

use clearance_host::auth::{Scope, new_key};
use clearance_host::clock::now_seconds;

use std::process::ExitCode;

/// What `keys` does.
#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Creates a key and prints it, once.
    Create {
        /// `admin` (the policy, every account), `service` (decisions and writes on behalf
        /// of the principals of its accounts) or `read` (decisions for its accounts).
        #[arg(long)]
        scope: String,
        /// An account the key is for (`service` and `read`; repeat for several).
        #[arg(long = "account")]
        accounts: Vec<String>,
        /// What the key is for.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Lists the keys (never their secrets).
    List,
    /// Revokes a key by its id.
    Revoke {
        /// The key's id (the part after `clr_`, before the second `_`).
        id: String,
    },
}

/// Runs a `keys` subcommand on the store `spec` names (a SQLite file or a PostgreSQL
/// URL).
pub async fn run(spec: &str, command: &KeysCommand) -> Result<ExitCode, String> {
    let store = clearance_host::store::open_existing(spec)
        .await
        .map_err(|e| e.to_string())?;
    match command {
        KeysCommand::Create {
            scope,
            accounts,
            label,
        } => {
            let scope = Scope::parse(scope)
                .ok_or_else(|| format!("scope `{scope}`: expected admin, service or read"))?;
            let key = new_key(scope, accounts, label, now_seconds())?;
            store
                .add_key(key.stored.clone())
                .await
                .map_err(|e| e.to_string())?;
            eprintln!(
                "clearance: created {} key {} (shown once; the store keeps only its hash)",
                scope.as_str(),
                key.stored.id
            );
            println!("{}", key.token);
        }
        KeysCommand::List => {
            for k in store.keys().await.map_err(|e| e.to_string())? {
                let state = match k.revoked {
                    Some(at) => format!("revoked {}", clearance_core::time::format(at)),
                    None => "live".into(),
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    k.id,
                    k.scope,
                    k.accounts.join(","),
                    clearance_core::time::format(k.created),
                    state,
                    k.label
                );
            }
        }
        KeysCommand::Revoke { id } => {
            if !store
                .revoke_key(id.clone(), now_seconds())
                .await
                .map_err(|e| e.to_string())?
            {
                return Err(format!("no live key `{id}`"));
            }
            eprintln!("clearance: revoked key {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
