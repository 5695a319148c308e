//! The container image (`Containerfile`), run by a real container engine: built from the
//! shipped binary (`cargo xtask dist`), started with a read-only root filesystem on a
//! named volume, it becomes ready and healthy, runs as the unprivileged user, decides a
//! check and takes a write; restarted, and replaced by a new container on the same
//! volume, it serves the write.
//!
//! It needs the static binary in `dist/` and podman, so it runs by `cargo xtask image`
//! (which builds both) rather than in every test run: building the host a second time
//! for musl takes longer than the rest of the suite's budget.

use crate::{block, create_event, root};
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs podman with `args`: its standard output, or a panic with what it said.
fn podman(args: &[&str]) -> String {
    let out = Command::new("podman")
        .args(engine_options())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("podman: {e} (install Debian's podman)"));
    assert!(
        out.status.success(),
        "podman {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `CLEARANCE_PODMAN_OPTIONS`: options before podman's command, such as `--runtime runc`
/// where crun cannot run containers (a host with cgroups v1 and v2 mixed).
fn engine_options() -> Vec<String> {
    std::env::var("CLEARANCE_PODMAN_OPTIONS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The limits a container is started with: no higher than the machine's own, which a
/// container may not raise (podman's defaults are higher than some hosts allow). Threads
/// are held to 4096, plenty for the server.
fn limits() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/limits").unwrap();
    let hard = |what: &str, most: u64| {
        text.lines()
            .find(|l| l.starts_with(what))
            .and_then(|l| l[what.len()..].split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(most, |v| v.min(most))
    };
    let nofile = hard("Max open files", 65_536);
    let nproc = hard("Max processes", 4096);
    vec![
        "--ulimit".into(),
        format!("nofile={nofile}:{nofile}"),
        "--ulimit".into(),
        format!("nproc={nproc}:{nproc}"),
    ]
}

/// A free port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Removes what the test made, whatever happened.
struct Cleanup {
    containers: Vec<String>,
    volume: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = Command::new("podman")
                .args(engine_options())
                .args(["rm", "-f", c])
                .output();
        }
        let _ = Command::new("podman")
            .args(engine_options())
            .args(["volume", "rm", "-f", &self.volume])
            .output();
        let _ = Command::new("podman")
            .args(engine_options())
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

/// Starts a container `name` of the image on the volume, published at `port`.
fn run(image: &str, name: &str, volume: &str, port: u16) {
    let seed = root().join("tests/worlds");
    let mut args: Vec<String> = vec![
        "run".into(),
        "-d".into(),
        "--name".into(),
        name.into(),
        "--read-only".into(),
        "-p".into(),
        format!("127.0.0.1:{port}:8080"),
        "-v".into(),
        format!("{volume}:/data"),
        "-v".into(),
        format!("{}:/seed:ro", seed.display()),
    ];
    args.extend(limits());
    args.extend([
        image.to_string(),
        "serve".into(),
        "--seed".into(),
        "/seed".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    podman(&args);
}

/// Waits until `/readyz` answers 200 at `base`.
async fn ready(base: &str, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = reqwest::Client::new()
            .get(format!("{base}/readyz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if r.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        if Instant::now() > deadline {
            let logs = Command::new("podman")
                .args(engine_options())
                .args(["logs", name])
                .output()
                .unwrap();
            panic!(
                "{name} was never ready: {}",
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn check(base: &str, key: &str, event: &str) -> Value {
    reqwest::Client::new()
        .post(format!("{base}/v1/check"))
        .bearer_auth(key)
        .json(&json!({ "principal": "user:occ_controller", "action": "view", "resource": event, "now": "2026-05-01T10:00:00Z" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[test]
#[ignore = "needs the static binary and podman: run by `cargo xtask image`"]
fn the_image_serves_from_a_volume_read_only_and_keeps_its_data_across_restarts() {
    let dist = root().join("dist/clearance");
    assert!(
        dist.is_file(),
        "no {}: `cargo xtask dist` builds it",
        dist.display()
    );
    let tag = format!(
        "localhost/clearance-test:{}-{}",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    );
    let volume = format!("clearance-test-data-{}", std::process::id());
    let first = format!("clearance-test-{}", std::process::id());
    let second = format!("{first}-again");
    let _cleanup = Cleanup {
        containers: vec![first.clone(), second.clone()],
        volume: volume.clone(),
        image: tag.clone(),
    };
    let root_s = root().to_string_lossy().to_string();
    podman(&[
        "build",
        "--format",
        "docker",
        "-t",
        &tag,
        "-f",
        "Containerfile",
        &root_s,
    ]);
    // What the image says of itself.
    let config = podman(&["image", "inspect", &tag, "--format", "{{json .Config}}"]);
    let config: Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["User"], "65532:65532", "{config}");
    assert!(
        config["Volumes"].get("/data").is_some(),
        "/data is not a volume: {config}"
    );
    assert_eq!(
        config["Labels"]["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    let health = podman(&[
        "image",
        "inspect",
        &tag,
        "--format",
        "{{json .HealthCheck}}",
    ]);
    assert!(health.contains("/readyz"), "{health}");

    podman(&["volume", "create", &volume]);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    run(&tag, &first, &volume, port);
    block(ready(&base, &first));
    // The health check the image declares passes.
    podman(&["healthcheck", "run", &first]);
    // An admin key, made with the image's own binary on the volume's store.
    let key = podman(&[
        "exec",
        &first,
        "/usr/local/bin/clearance",
        "keys",
        "--data",
        "/data/clearance.db",
        "create",
        "--scope",
        "admin",
    ]);
    assert!(key.starts_with("clr_"), "{key}");
    let written = block(async {
        // The key is read within a second.
        let deadline = Instant::now() + Duration::from_secs(10);
        let d = loop {
            let d = check(&base, &key, "event:aog_lhr").await;
            if d["error"].is_null() || Instant::now() > deadline {
                break d;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(d["allowed"], true, "{d}");
        let r = reqwest::Client::new()
            .post(format!("{base}/v1/facts"))
            .bearer_auth(&key)
            .json(&json!({ "author": "user:occ_controller", "now": "2026-05-01T10:00:00Z", "deltas": create_event("in_a_container") }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let written: Value = r.json().await.unwrap();
        assert_eq!(
            check(&base, &key, "event:in_a_container").await["allowed"],
            true
        );
        written["revision"].as_u64().unwrap()
    });

    // Restarted: the write is there.
    podman(&["restart", &first]);
    block(async {
        ready(&base, &first).await;
        assert_eq!(
            check(&base, &key, "event:in_a_container").await["allowed"],
            true
        );
    });
    // A new container on the same volume: the write and the key are there.
    podman(&["rm", "-f", &first]);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    run(&tag, &second, &volume, port);
    block(async {
        ready(&base, &second).await;
        let r: Value = reqwest::Client::new()
            .get(format!("{base}/v1/revision"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["revision"].as_u64(), Some(written), "{r}");
        assert_eq!(
            check(&base, &key, "event:in_a_container").await["allowed"],
            true
        );
    });
}
