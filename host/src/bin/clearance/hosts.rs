//! `clearance hosts`: several hosts on one history, to watch: a throwaway PostgreSQL
//! cluster (Debian's programs, in a temporary directory), migrated, then `count`
//! `clearance serve --demo` processes on it, on consecutive loopback ports. A write on one
//! appears on the others. Ctrl-C (or SIGTERM) stops the hosts and removes the cluster.

use crate::Cli;
use clearance_host::auth::{Scope, new_key};
use clearance_host::pgcluster::Cluster;
use clearance_host::store::FactStore;
use clearance_host::store::postgres::PgStore;
use std::process::{Child, Command, ExitCode};

/// What `hosts` takes.
#[derive(clap::Args)]
pub struct HostsArgs {
    /// How many hosts.
    #[arg(long, default_value_t = 3)]
    pub count: u16,
    /// The port of the first host; the others follow it.
    #[arg(long, default_value_t = 8081)]
    pub first_port: u16,
    /// The server's clock for decisions and writes starts at this time (RFC 3339), for
    /// demo data that is dated.
    #[arg(long, default_value = "2026-05-01T10:00:00Z")]
    pub demo_time: String,
}

/// Stops the hosts when dropped.
struct Hosts(Vec<Child>);

impl Drop for Hosts {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub async fn run(cli: &Cli, args: &HostsArgs) -> Result<ExitCode, String> {
    let dir = std::env::temp_dir().join(format!("clearance-hosts-{}", std::process::id()));
    let cluster = Cluster::start(&dir.join("pg"))?;
    let url = cluster.database("clearance")?;
    eprintln!(
        "clearance: PostgreSQL on 127.0.0.1:{} ({url})",
        cluster.port()
    );
    PgStore::migrate(&url).await.map_err(|e| e.to_string())?;
    let key = new_key(
        Scope::Admin,
        &[],
        "hosts demo admin",
        clearance_host::clock::now_seconds(),
    )?;
    PgStore::connect(&url)
        .await
        .map_err(|e| e.to_string())?
        .add_key(key.stored.clone())
        .await
        .map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut hosts = Hosts(Vec::new());
    let mut bases = Vec::new();
    for i in 0..args.count {
        let port = args.first_port.saturating_add(i);
        let addr = format!("127.0.0.1:{port}");
        let mut command = Command::new(&exe);
        command.arg("--policies").arg(cli.policy_dir());
        if let Some(wasm) = &cli.wasm {
            command.arg("--wasm").arg(wasm);
        }
        let child = command
            .args(["serve", "--store", &url, "--addr", &addr, "--demo"])
            .args(["--demo-time", &args.demo_time])
            .arg("--cache-dir")
            .arg(dir.join(format!("cache-{i}")))
            .spawn()
            .map_err(|e| format!("{}: {e}", exe.display()))?;
        hosts.0.push(child);
        bases.push(format!("http://{addr}"));
        // The first seeds the demo data; the others find it there.
        if i == 0 {
            wait_for(&url).await?;
        }
    }
    let (a, b) = match bases.as_slice() {
        [a, b, ..] => (a.clone(), b.clone()),
        [a] => (a.clone(), a.clone()),
        [] => return Ok(ExitCode::SUCCESS),
    };
    eprintln!(
        "\nclearance: {} hosts on one history: {}\nclearance: the admin key (shown once): {}\n\nWatch the changes on one host, then write on another:\n\n  curl -N -H \"authorization: Bearer {}\" {b}/v1/changes\n\n  curl -H \"authorization: Bearer {}\" -H 'content-type: application/json' {a}/v1/facts \\\n    -d '{{\"author\": \"user:occ_controller\", \"deltas\": [{{\"op\": \"add_entity\", \"entity\": {{\"type\": \"event\", \"id\": \"demo1\", \"account\": \"skyways\", \"attrs\": {{\"ends_at\": \"2026-05-03T00:00:00Z\"}}}}}}, {{\"op\": \"add_tuple\", \"tuple\": {{\"resource\": \"event:demo1\", \"relation\": \"station\", \"subject\": \"station:lhr\"}}}}, {{\"op\": \"add_tuple\", \"tuple\": {{\"resource\": \"event:demo1\", \"relation\": \"owner_org\", \"subject\": \"organization:skyways_occ\"}}}}, {{\"op\": \"add_tuple\", \"tuple\": {{\"resource\": \"event:demo1\", \"relation\": \"created_by\", \"subject\": \"user:occ_controller\"}}}}]}}'\n\nCtrl-C stops the hosts and removes the database.\n",
        bases.len(),
        bases.join(" "),
        key.token,
        key.token,
        key.token
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(hosts);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("clearance: the hosts are stopped and the database removed");
    Ok(ExitCode::SUCCESS)
}

/// Waits up to a minute for the first host to seed the database.
async fn wait_for(url: &str) -> Result<(), String> {
    let store = PgStore::connect(url).await.map_err(|e| e.to_string())?;
    for _ in 0..600 {
        if store.latest(Some(0)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err("the first host did not seed the database within a minute".into())
}
