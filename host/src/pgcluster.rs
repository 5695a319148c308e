//! A throwaway PostgreSQL cluster on a loopback port, for the store tests, the
//! benchmarks and the several-hosts demo: `initdb` in a directory of its own, started
//! with `pg_ctl`, as an unprivileged user (`nobody` when this process is root, which
//! PostgreSQL refuses), stopped and removed when dropped. The programs come from
//! Debian's packages (`scripts/install-test-deps` installs them).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A running cluster.
pub struct Cluster {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
    /// Whether it serves TLS ([`Cluster::start_tls`]).
    tls: bool,
}

/// The directory of the PostgreSQL programs: `CLEARANCE_PG_BIN`, or else the newest
/// Debian installation (`/usr/lib/postgresql/<version>/bin`).
pub fn bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("CLEARANCE_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "no PostgreSQL server programs in /usr/lib/postgresql (scripts/install-test-deps installs Debian's; or set CLEARANCE_PG_BIN)".into()
    })
}

fn as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn text(p: &Path) -> Result<&str, String> {
    p.to_str()
        .ok_or_else(|| format!("{}: not UTF-8", p.display()))
}

/// Runs a PostgreSQL program (as `nobody` when this process is root); `Err` with what
/// it printed when it fails.
fn run(bin: &Path, program: &str, args: &[&str]) -> Result<Output, String> {
    let exe = bin.join(program);
    let mut cmd = if as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let out = cmd
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", exe.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{program}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

impl Cluster {
    /// A new cluster in `dir` (created empty; removed when the cluster is dropped),
    /// started on a free loopback port.
    pub fn start(dir: &Path) -> Result<Cluster, String> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if as_root() {
            let ok = Command::new("chown")
                .args(["-R", "nobody"])
                .arg(dir)
                .status()
                .map_err(|e| format!("chown: {e}"))?
                .success();
            if !ok {
                return Err(format!("chown nobody {}: failed", dir.display()));
            }
        }
        let bin = bin_dir()?;
        let data = dir.join("data");
        run(
            &bin,
            "initdb",
            &[
                "-D",
                text(&data)?,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        let cluster = Cluster {
            dir: dir.to_path_buf(),
            port: free_port()?,
            bin,
            tls: false,
        };
        cluster.up()?;
        Ok(cluster)
    }

    /// [`Cluster::start`], serving TLS with the certificate chain `cert` and its key `key`
    /// (PEM) and accepting TCP connections only over TLS (`hostssl`); local connections
    /// (the cluster's own `sql`) need none.
    pub fn start_tls(dir: &Path, cert: &str, key: &str) -> Result<Cluster, String> {
        let mut cluster = Cluster::start(dir)?;
        cluster.down()?;
        let data = dir.join("data");
        let write = |name: &str, text: &str, mode: u32| -> Result<(), String> {
            use std::os::unix::fs::PermissionsExt;
            let path = data.join(name);
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if as_root() {
                let ok = Command::new("chown")
                    .arg("nobody")
                    .arg(&path)
                    .status()
                    .map_err(|e| format!("chown: {e}"))?
                    .success();
                if !ok {
                    return Err(format!("chown nobody {}: failed", path.display()));
                }
            }
            Ok(())
        };
        write("server.crt", cert, 0o644)?;
        write("server.key", key, 0o600)?;
        write(
            "pg_hba.conf",
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
            0o600,
        )?;
        cluster.tls = true;
        cluster.up()?;
        Ok(cluster)
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn up(&self) -> Result<(), String> {
        let mut opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.dir.display()
        );
        if self.tls {
            opts.push_str(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
        }
        let (data, log) = (self.dir.join("data"), self.dir.join("log"));
        run(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                text(&data)?,
                "-l",
                text(&log)?,
                "-w",
                "-t",
                "30",
                "-o",
                &opts,
                "start",
            ],
        )
        .map_err(|e| format!("{e}{}", std::fs::read_to_string(&log).unwrap_or_default()))
        .map(|_| ())
    }

    /// Stops the server, ending open connections (`fast`), waiting until it is down.
    pub fn down(&self) -> Result<(), String> {
        self.stop("fast")
    }

    fn stop(&self, mode: &str) -> Result<(), String> {
        let data = self.dir.join("data");
        run(
            &self.bin,
            "pg_ctl",
            &["-D", text(&data)?, "-m", mode, "-w", "stop"],
        )
        .map(|_| ())
    }

    /// Creates database `name`; answers its URL.
    pub fn database(&self, name: &str) -> Result<String, String> {
        self.sql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url(name))
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs SQL on database `name` with psql: what it printed, unaligned.
    pub fn sql(&self, name: &str, sql: &str) -> Result<String, String> {
        let port = self.port.to_string();
        let out = run(
            &self.bin,
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                name,
                "-tA",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop("immediate");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
