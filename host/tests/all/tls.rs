//! The API over TLS (`serve --tls-cert --tls-key`), with a throwaway CA made here: a
//! client that trusts the CA is served, over HTTP/2 or HTTP/1.1 as ALPN chooses; one
//! that does not is refused, as is plain HTTP; a renewed certificate written over the
//! files is served to the next connection without a restart; a key that is not the
//! certificate's is refused at start.

use crate::faults::start_in;
use crate::{ADMIN, add_key, block, root, scratch};
use clearance_host::auth::Scope;
use clearance_host::store::FactStore;
use clearance_host::tls::Tls;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::Path;
use std::time::{Duration, Instant};

/// A CA: its certificate (PEM) and what signs with it.
pub(crate) struct Ca {
    pub(crate) pem: String,
    issuer: Issuer<'static, KeyPair>,
}

pub(crate) fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A certificate for `localhost` and 127.0.0.1 signed by `ca`, and its key (PEM).
pub(crate) fn leaf(ca: &Ca) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write_pair(dir: &Path, (cert, key): &(String, String)) {
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
}

/// A client that trusts only `ca` (none of the system's roots).
fn trusting(ca: &Ca, http1: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10));
    if http1 {
        b = b.http1_only();
    }
    b.build().unwrap()
}

fn with_bearer(c: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    c.header("authorization", format!("Bearer {ADMIN}"))
}

#[test]
fn the_api_over_tls_serves_clients_that_trust_its_ca_and_takes_a_renewed_certificate() {
    let dir = scratch("tls");
    let (first, second) = (ca("first"), ca("second"));
    write_pair(&dir, &leaf(&first));
    let db = dir.join("facts.db");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let args: Vec<std::ffi::OsString> = vec![
        "--data".into(),
        db.clone().into(),
        "--seed".into(),
        root().join("tests/worlds").into(),
        "--tls-cert".into(),
        cert.into(),
        "--tls-key".into(),
        key.into(),
        "--tls-check-interval-ms".into(),
        "100".into(),
    ];
    let server = start_in(
        Path::new(env!("CARGO_BIN_EXE_clearance")),
        &root(),
        &args,
        &|| add_key(&db, ADMIN, Scope::Admin, &[]),
    )
    .unwrap_or_else(|log| panic!("the server did not start: {log}"));
    let base = server.base.clone();
    assert!(base.starts_with("https://"), "{base}");
    let https = base.replace("https://127.0.0.1", "https://localhost");
    block(async {
        // Trusted: HTTP/2 by ALPN, or HTTP/1.1 when the client offers only it; a check
        // and a write both served.
        for (http1, version) in [
            (false, reqwest::Version::HTTP_2),
            (true, reqwest::Version::HTTP_11),
        ] {
            let c = trusting(&first, http1);
            let r = c.get(format!("{https}/healthz")).send().await.unwrap();
            assert_eq!((r.status().as_u16(), r.version()), (200, version));
            let r = with_bearer(c.post(format!("{https}/v1/check")))
                .json(&serde_json::json!({
                    "principal": "user:occ_controller", "action": "view",
                    "resource": "event:aog_lhr", "now": "2026-05-01T10:00:00Z"
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.version(), version);
            let answer: serde_json::Value = r.json().await.unwrap();
            assert!(answer["allowed"].is_boolean(), "{answer}");
            let r = with_bearer(c.post(format!("{https}/v1/facts")))
                .json(&serde_json::json!({ "author": "user:occ_controller", "now": "2026-05-01T10:00:00Z", "deltas": crate::create_event(&format!("tls_{http1}")) }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
        }
        // The command line against the server over https: with `--ca-cert` naming the CA
        // it decides; without, the certificate is refused and nothing is decided.
        std::fs::write(dir.join("first-ca.pem"), &first.pem).unwrap();
        let remote = |trust: bool| {
            let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_clearance"));
            c.args(["--server", &https, "--key", ADMIN]);
            if trust {
                c.arg("--ca-cert").arg(dir.join("first-ca.pem"));
            }
            c.args([
                "check",
                "user:occ_controller",
                "view",
                "event:aog_lhr",
                "--now",
                "2026-05-01T10:00:00Z",
            ]);
            let out = c.output().unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).to_string()
                    + &String::from_utf8_lossy(&out.stderr),
            )
        };
        let (code, said) = remote(true);
        assert!(matches!(code, Some(0 | 1)), "{said}");
        assert!(said.contains("allow") || said.contains("deny"), "{said}");
        let (code, said) = remote(false);
        assert_eq!(code, Some(2), "an untrusted server was asked: {said}");
        // Not trusted: refused in the handshake. Plain HTTP to the port: not served.
        let untrusting = trusting(&second, false);
        let refused = untrusting.get(format!("{https}/healthz")).send().await;
        assert!(
            refused.is_err(),
            "a client that does not trust the CA was served"
        );
        let plain = reqwest::Client::new()
            .get(format!("{}/healthz", base.replace("https://", "http://")))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        assert!(
            plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()),
            "plain HTTP was served on the TLS port"
        );

        // A certificate of the second CA written over the files: the next connection
        // gets it, with no restart.
        write_pair(&dir, &leaf(&second));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let renewed = trusting(&second, false)
                .get(format!("{https}/healthz"))
                .send()
                .await;
            if renewed.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the renewed certificate was not served"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let old = trusting(&first, false)
            .get(format!("{https}/healthz"))
            .send()
            .await;
        assert!(old.is_err(), "the old certificate is still served");
    });
    let log = server.log.lock().unwrap().clone();
    assert!(log.contains("TLS: serving the certificate"), "{log}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_files_that_do_not_belong_together_are_refused_and_a_bad_renewal_keeps_the_old() {
    let dir = scratch("tls-files");
    let ca = ca("files");
    let (cert, _) = leaf(&ca);
    let (_, other_key) = leaf(&ca);
    std::fs::write(dir.join("cert.pem"), &cert).unwrap();
    std::fs::write(dir.join("key.pem"), &other_key).unwrap();
    let e = Tls::from_files(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap_err();
    assert!(e.contains("is not the key of"), "{e}");
    std::fs::write(dir.join("key.pem"), "not a key").unwrap();
    let e = Tls::from_files(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap_err();
    assert!(e.contains("--tls-key"), "{e}");
    let e = Tls::from_files(&dir.join("missing.pem"), &dir.join("key.pem")).unwrap_err();
    assert!(e.contains("--tls-cert"), "{e}");
    // A good pair, then a renewal whose key does not match: refused, the pair kept.
    write_pair(&dir, &leaf(&ca));
    let tls = Tls::from_files(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap();
    assert!(!tls.reload_if_changed(), "nothing changed, yet it reloaded");
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(dir.join("key.pem"), other_key).unwrap();
    assert!(
        !tls.reload_if_changed(),
        "a key of another certificate was taken"
    );
    std::thread::sleep(Duration::from_millis(20));
    write_pair(&dir, &leaf(&ca));
    assert!(tls.reload_if_changed(), "a good renewal was not taken");
    let _ = std::fs::remove_dir_all(&dir);
}

/// PostgreSQL over TLS: a harness cluster that takes TCP connections only over TLS, with
/// a certificate of a test CA. With `sslmode=verify-full` and that CA the store is
/// migrated, keyed and served by a host; with another CA it is refused, as is a
/// connection without TLS.
#[test]
fn a_store_on_postgresql_over_tls_is_verified_and_served_by_three_hosts() {
    let dir = scratch("tls-pg");
    let (good, other) = (ca("postgres"), ca("not postgres"));
    let (cert, key) = leaf(&good);
    std::fs::write(dir.join("good-ca.pem"), &good.pem).unwrap();
    std::fs::write(dir.join("other-ca.pem"), &other.pem).unwrap();
    let pg = clearance_host::pgcluster::Cluster::start_tls(&dir.join("cluster"), &cert, &key)
        .unwrap_or_else(|e| panic!("a PostgreSQL with ssl=on did not start: {e}"));
    let plain = pg.database("tlsdb").unwrap();
    let with = |mode: &str, ca: &str| {
        format!(
            "{plain}?sslmode={mode}&sslrootcert={}",
            dir.join(ca).display()
        )
    };
    let clearance = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_clearance"))
            .current_dir(root())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    // Refused: without TLS (the server takes none), and with a CA that did not sign it.
    let (ok, said) = clearance(&["migrate", "--store", &format!("{plain}?sslmode=disable")]);
    assert!(!ok, "a connection without TLS was taken: {said}");
    let (ok, said) = clearance(&["migrate", "--store", &with("verify-full", "other-ca.pem")]);
    assert!(
        !ok,
        "a server certificate of another CA was trusted: {said}"
    );
    // Verified: migrated, keyed, and served by a host.
    let url = with("verify-full", "good-ca.pem");
    let (ok, said) = clearance(&["migrate", "--store", &url]);
    assert!(ok, "migrate over verify-full: {said}");
    let admin_key = clearance_host::auth::stored_key(ADMIN, Scope::Admin, &[], "test", 0).unwrap();
    block(async {
        clearance_host::store::postgres::PgStore::connect(&url)
            .await
            .unwrap()
            .add_key(admin_key)
            .await
            .unwrap();
    });
    // Three hosts on it, as docs/deploy.md sets them up: each its own cache, following
    // the others every 500 ms besides their notifications.
    let hosts: Vec<crate::faults::Server> = (0..3)
        .map(|i| {
            let args: Vec<std::ffi::OsString> = vec![
                "--store".into(),
                url.clone().into(),
                "--cache-dir".into(),
                dir.join(format!("cache-{i}")).into(),
                "--follow-interval-ms".into(),
                "500".into(),
            ];
            crate::faults::start_with(&args, &|| {})
                .unwrap_or_else(|log| panic!("a host on PostgreSQL over TLS did not start: {log}"))
        })
        .collect();
    block(async {
        // The demo's facts, seeded through TLS and read back.
        let facts = crate::get_json(&crate::admin(), &format!("{}/v1/facts", hosts[0].base)).await;
        assert!(
            facts["entities"].as_array().is_some_and(|e| !e.is_empty()),
            "{facts}"
        );
        // A write through one host is served by the others.
        let r = crate::admin()
            .post(format!("{}/v1/facts", hosts[0].base))
            .json(&serde_json::json!({ "author": "user:occ_controller", "now": "2026-05-01T10:00:00Z", "deltas": crate::create_event("over_tls") }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let written: serde_json::Value = r.json().await.unwrap();
        let revision = written["revision"].as_u64().unwrap();
        for host in &hosts[1..] {
            let d: serde_json::Value = crate::admin()
                .post(format!("{}/v1/check", host.base))
                .json(&serde_json::json!({
                    "principal": "user:occ_controller", "action": "view", "resource": "event:over_tls",
                    "now": "2026-05-01T10:00:00Z", "min_revision": revision
                }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(d["allowed"], true, "{d}");
        }
    });
    drop(hosts);
    let _ = pg.down();
}

/// An HTTP/2 connection that starts no request is sent `GOAWAY` and closed after the
/// time a HTTP/1.1 connection may wait for a head (10 s), as an idle HTTP/1.1 connection
/// is: HTTP/2 has no head to wait for, so without it an idle connection held its place
/// for ever.
#[test]
fn an_idle_http2_connection_is_sent_away() {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = scratch("tls-idle");
    let authority = ca("idle");
    write_pair(&dir, &leaf(&authority));
    let db = dir.join("facts.db");
    let args: Vec<std::ffi::OsString> = vec![
        "--data".into(),
        db.clone().into(),
        "--tls-cert".into(),
        dir.join("cert.pem").into(),
        "--tls-key".into(),
        dir.join("key.pem").into(),
    ];
    let server = start_in(
        Path::new(env!("CARGO_BIN_EXE_clearance")),
        &root(),
        &args,
        &|| add_key(&db, ADMIN, Scope::Admin, &[]),
    )
    .unwrap_or_else(|log| panic!("the server did not start: {log}"));
    let port: u16 = server.base.rsplit(':').next().unwrap().parse().unwrap();
    let (gone, after) = block(async move {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(
                rustls::pki_types::CertificateDer::from_pem_slice(authority.pem.as_bytes())
                    .unwrap(),
            )
            .unwrap();
        #[allow(deprecated)]
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        // The client's preface and an empty SETTINGS frame; then nothing.
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        let started = Instant::now();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let read = tokio::time::timeout(Duration::from_secs(25), tls.read(&mut buf)).await;
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => return (true, started.elapsed()),
                Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
                Err(_) => return (false, started.elapsed()),
            }
            // Frames: a 9-byte head (length, type, flags, stream) and the payload.
            let mut at = 0;
            while seen.len() >= at + 9 {
                let len = usize::from(seen[at]) << 16
                    | usize::from(seen[at + 1]) << 8
                    | usize::from(seen[at + 2]);
                if seen[at + 3] == 0x7 {
                    return (true, started.elapsed());
                }
                at += 9 + len;
            }
        }
    });
    assert!(gone, "an idle HTTP/2 connection was kept {after:?}");
    assert!(
        after >= Duration::from_secs(9),
        "an HTTP/2 connection was sent away after {after:?}, before it was idle for 10 s"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
