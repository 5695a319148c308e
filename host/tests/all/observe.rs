//! What an operator sees of a running `clearance serve`: `/metrics` after known traffic
//! shows exactly that traffic (requests by route and status, decisions by outcome and
//! reason, writes stored and refused, appends, change feeds, the revision and hashes
//! served), on the API's address for an admin key only and on the metrics address for
//! anyone; and each request is one JSON log line with its route, status, duration,
//! caller, revision and decision.

use super::service::post;
use super::{ADMIN, block, create_event};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const NOW: &str = "2026-05-01T10:00:00Z";
const READ_KEY: &str = "clr_4e4e4e4e4e4e4e4e_read-key-of-skyways-for-the-tests-only-xx";

/// The samples of an OpenMetrics text: `name{labels}` to value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn sample(all: &HashMap<String, f64>, name: &str) -> f64 {
    *all.get(name)
        .unwrap_or_else(|| panic!("no sample `{name}` in {:#?}", all.keys()))
}

/// The JSON log lines of requests, once `n` are there (they are written as each answer
/// leaves).
fn request_lines(log: &std::sync::Mutex<String>, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<Value> = log
            .lock()
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == "request")
            .collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn metrics_and_request_logs_show_the_traffic_sent() {
    let dir = super::scratch("observe");
    let server = super::faults::start(
        &dir.join("facts.db"),
        &["--metrics-addr", "127.0.0.1:0", "--log-format", "json"],
    )
    .unwrap();
    let base = server.base.clone();
    let metrics_at = {
        let log = server.log.lock().unwrap();
        let rest = log
            .split("metrics at http://")
            .nth(1)
            .expect("the host announces its metrics address");
        format!("http://{}", rest.split('/').next().unwrap())
    };
    let before = request_lines(&server.log, 0).len();
    let (text, open, revision) = block(async {
        let admin = super::admin();
        let nobody = reqwest::Client::new();
        let check = |p: &str, r: &str| json!({ "principal": p, "action": "view", "resource": r, "now": NOW });
        // 3 allowed and 2 denied checks, and a batch of 2 allowed and 2 denied.
        for _ in 0..3 {
            let (_, d) = post(
                &admin,
                &format!("{base}/v1/check"),
                check("user:aeroserv_tech", "event:aog_lhr"),
            )
            .await;
            assert_eq!(d["allowed"], true, "{d}");
        }
        for _ in 0..2 {
            let (_, d) = post(
                &admin,
                &format!("{base}/v1/check"),
                check("user:jetfix_tech", "event:aog_lhr"),
            )
            .await;
            assert_eq!(d["reasons"][0]["code"], "relation.missing", "{d}");
        }
        let batch = json!({ "requests": [
            check("user:aeroserv_tech", "event:aog_lhr"),
            check("user:jetfix_tech", "event:aog_lhr"),
            check("user:aeroserv_tech", "event:aog_lhr"),
            check("user:jetfix_tech", "event:aog_lhr"),
        ] });
        let (r, _) = post(&admin, &format!("{base}/v1/check/batch"), batch).await;
        assert_eq!(r, 200);
        // One write stored, one refused.
        let (stored, _) = post(
            &admin,
            &format!("{base}/v1/facts"),
            json!({ "author": "user:occ_controller", "now": NOW, "deltas": create_event("obs1") }),
        )
        .await;
        assert_eq!(stored, 200);
        let (refused, _) = post(
            &admin,
            &format!("{base}/v1/facts"),
            json!({ "author": "user:jetfix_tech", "now": NOW, "deltas": create_event("obs2") }),
        )
        .await;
        assert_eq!(refused, 403);
        // Unauthenticated: counted, by route (never by the path asked).
        for principal in ["user:a", "user:b"] {
            let r = nobody
                .get(format!("{base}/v1/slice/{principal}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401);
        }
        let r = nobody
            .get(format!("{base}/no/such/route/{}", 7))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        // A change feed left open.
        let feed = admin
            .get(format!("{base}/v1/changes"))
            .send()
            .await
            .unwrap();
        assert_eq!(feed.status(), 200);
        // /metrics on the API needs an admin key; on its own address, nothing.
        let r = nobody.get(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let reader = super::client_with(READ_KEY);
        super::add_key(
            &dir.join("facts.db"),
            READ_KEY,
            clearance_host::auth::Scope::Read,
            &["skyways"],
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = reader.get(format!("{base}/metrics")).send().await.unwrap();
            if r.status() == 403 {
                break;
            }
            assert_eq!(r.status(), 401, "a read key may not read the metrics");
            assert!(Instant::now() < deadline, "the read key was never taken");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let r = admin.get(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        let open = nobody
            .get(format!("{metrics_at}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(open.status(), 200);
        let text = open.text().await.unwrap();
        let revision: Value = admin
            .get(format!("{base}/v1/revision"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        drop(feed);
        (text, r.text().await.unwrap(), revision)
    });
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(open.ends_with("# EOF\n"));
    let m = samples(&text);
    let check_ok = r#"clearance_http_requests_total{route="/v1/check",method="POST",status="200"}"#;
    assert_eq!(sample(&m, check_ok), 5.0);
    assert_eq!(
        sample(
            &m,
            r#"clearance_http_requests_total{route="/v1/slice/{principal}",method="GET",status="401"}"#
        ),
        2.0
    );
    assert_eq!(
        sample(
            &m,
            r#"clearance_http_requests_total{route="unmatched",method="GET",status="404"}"#
        ),
        1.0
    );
    assert!(
        !text.contains("user:a") && !text.contains("/no/such"),
        "a caller's paths make no series"
    );
    let decisions = |op: &str, outcome: &str, reason: &str| {
        sample(
            &m,
            &format!(
                r#"clearance_decisions_total{{op="{op}",outcome="{outcome}",reason="{reason}"}}"#
            ),
        )
    };
    assert_eq!(decisions("check", "allow", "granted"), 3.0);
    assert_eq!(decisions("check", "deny", "relation.missing"), 2.0);
    assert_eq!(decisions("check_batch", "allow", "granted"), 2.0);
    assert_eq!(decisions("check_batch", "deny", "relation.missing"), 2.0);
    assert_eq!(
        sample(
            &m,
            r#"clearance_decision_duration_seconds_count{op="check"}"#
        ),
        5.0
    );
    assert_eq!(
        sample(&m, r#"clearance_writes_total{outcome="stored"}"#),
        1.0
    );
    assert_eq!(
        sample(&m, r#"clearance_writes_total{outcome="refused"}"#),
        1.0
    );
    assert_eq!(sample(&m, "clearance_write_duration_seconds_count"), 2.0);
    assert_eq!(
        sample(&m, "clearance_store_append_duration_seconds_count"),
        1.0
    );
    assert_eq!(sample(&m, "clearance_revision"), 1.0);
    assert_eq!(revision["revision"], 1);
    assert_eq!(sample(&m, "clearance_change_feed_subscribers"), 1.0);
    assert_eq!(sample(&m, "clearance_ready"), 1.0);
    assert_eq!(sample(&m, "clearance_module_traps_total"), 0.0);
    let info = format!(
        r#"clearance_build_info{{module_hash="{}",policy_hash="{}"}}"#,
        revision["module_hash"].as_str().unwrap(),
        revision["policy_hash"].as_str().unwrap()
    );
    assert_eq!(sample(&m, &info), 1.0);

    // One log line a request, each a JSON object with what an operator needs. 16 sent:
    // 5 checks, a batch, 2 writes, 2 slices, a stray path, a feed, 4 metrics.
    let lines = request_lines(&server.log, before + 16);
    let lines = &lines[before..];
    let checks: Vec<&Value> = lines.iter().filter(|l| l["route"] == "/v1/check").collect();
    assert_eq!(checks.len(), 5, "{lines:#?}");
    let key = format!("key:{}", &ADMIN[4..20]);
    for line in &checks {
        assert_eq!(line["status"], 200);
        assert_eq!(line["method"], "POST");
        assert_eq!(line["principal"], key.as_str(), "{line}");
        assert_eq!(line["revision"], 0);
        assert!(line["duration_us"].as_u64().is_some(), "{line}");
        assert_eq!(line["level"], "INFO");
    }
    let decided: Vec<&str> = checks
        .iter()
        .map(|l| l["decision"].as_str().unwrap())
        .collect();
    assert_eq!(
        decided,
        [
            "allow",
            "allow",
            "allow",
            "deny:relation.missing",
            "deny:relation.missing"
        ]
    );
    let batch = lines
        .iter()
        .find(|l| l["route"] == "/v1/check/batch")
        .unwrap();
    assert_eq!(batch["decision"], "2 allowed of 4");
    let slices: Vec<&Value> = lines
        .iter()
        .filter(|l| l["route"] == "/v1/slice/{principal}")
        .collect();
    assert_eq!(slices.len(), 2);
    assert!(
        slices
            .iter()
            .all(|l| l["status"] == 401 && l["principal"].is_null())
    );
    let writes: Vec<u64> = lines
        .iter()
        .filter(|l| l["route"] == "/v1/facts" && l["method"] == "POST")
        .map(|l| l["status"].as_u64().unwrap())
        .collect();
    assert_eq!(writes, [200, 403]);
}

/// What a collector received: each request's path, headers and body.
type Posts = std::sync::Arc<std::sync::Mutex<Vec<(String, String, Vec<u8>)>>>;

/// A stand-in OpenTelemetry collector on loopback: takes HTTP posts, keeps them and
/// answers 200, until the test ends; over TLS with `tls`.
fn collector(tls: Option<std::sync::Arc<rustls::ServerConfig>>) -> (String, Posts) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = match tls {
        Some(_) => format!("https://localhost:{port}/v1/traces"),
        None => format!("http://127.0.0.1:{port}/v1/traces"),
    };
    let posts: Posts = Default::default();
    let kept = std::sync::Arc::clone(&posts);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let kept = std::sync::Arc::clone(&kept);
            let tls = tls.clone();
            std::thread::spawn(move || match tls {
                Some(config) => {
                    let Ok(connection) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    take_posts(rustls::StreamOwned::new(connection, stream), &kept);
                }
                None => take_posts(stream, &kept),
            });
        }
    });
    (url, posts)
}

/// Reads HTTP/1.1 posts off `stream`, keeping each and answering 200.
fn take_posts(stream: impl std::io::Read + std::io::Write, kept: &Posts) {
    use std::io::{BufRead, BufReader, Read};
    let mut reader = BufReader::new(stream);
    loop {
        let mut head = String::new();
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
            head.push_str(&line.to_ascii_lowercase());
            line.clear();
        }
        if head.is_empty() {
            return;
        }
        let path = head.split(' ').nth(1).unwrap_or_default().to_string();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |n| n.trim().parse().unwrap_or(0));
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        kept.lock().unwrap().push((path, head, body));
        let out = reader.get_mut();
        let _ = out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        let _ = out.flush();
    }
}

/// A TLS configuration serving a certificate of `ca` for localhost.
fn collector_tls(ca: &super::tls::Ca) -> std::sync::Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let (cert, key) = super::tls::leaf(ca);
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    std::sync::Arc::new(config)
}

/// Stops `server` with SIGTERM and waits for it to exit cleanly.
fn shut_down(server: &mut super::faults::Server) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the host did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

/// `--otel-endpoint`: a span for each request and module call reaches the collector
/// over OTLP/HTTP, the last of them sent as the host shuts down; an endpoint that is not
/// a URL stops start-up, naming the setting.
#[test]
fn traces_reach_an_otlp_collector_the_last_on_shutdown() {
    let dir = super::scratch("otel");
    let refused = super::faults::start(&dir.join("bad.db"), &["--otel-endpoint", "nowhere"])
        .err()
        .expect("a bad endpoint was taken");
    assert!(refused.contains("--otel-endpoint `nowhere`"), "{refused}");

    // Over plain HTTP, and over https to a collector whose certificate only the CA named
    // by `--ca-cert` vouches for.
    let ca = super::tls::ca("collector");
    std::fs::write(dir.join("collector-ca.pem"), &ca.pem).unwrap();
    let ca_file = dir.join("collector-ca.pem");
    for tls in [false, true] {
        let (url, posts) = collector(tls.then(|| collector_tls(&ca)));
        let mut args = vec!["--otel-endpoint", url.as_str()];
        if tls {
            args.extend(["--ca-cert", ca_file.to_str().unwrap()]);
        }
        let mut server = super::faults::start(&dir.join(format!("facts-{tls}.db")), &args).unwrap();
        let base = server.base.clone();
        block(async {
            let d: Value = super::admin()
                .post(format!("{base}/v1/check"))
                .json(&json!({ "principal": "user:aeroserv_tech", "action": "view", "resource": "event:aog_lhr", "now": NOW }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(d["allowed"], true);
        });
        // Batches go every 5 s; shutting down sends what waits.
        shut_down(&mut server);
        let posts = posts.lock().unwrap();
        let log = server.log.lock().unwrap().clone();
        assert!(!posts.is_empty(), "no traces were sent (tls: {tls}): {log}");
        let body: Vec<u8> = posts.iter().flat_map(|p| p.2.clone()).collect();
        for (path, head, _) in posts.iter() {
            assert_eq!(path, "/v1/traces");
            assert!(
                head.contains("content-type: application/x-protobuf"),
                "{head}"
            );
        }
        // Protobuf keeps strings as they are: the spans' names and fields are there.
        let has = |s: &str| body.windows(s.len()).any(|w| w == s.as_bytes());
        for expected in ["clearance", "request", "/v1/check", "module", "check"] {
            assert!(has(expected), "no `{expected}` in the traces sent");
        }
    }
}
