//! Behind a reverse proxy, and in browsers on other origins (`serve --trusted-proxies`,
//! `--cors-origin`): a forwarding header names the client only when it comes from a
//! trusted proxy, so a client cannot pick the address its failed authentications are
//! counted under, nor escape the count by naming a new one each time; and only the
//! listed origins' pages are let call the API.

use crate::block;
use crate::faults::start;
use std::time::Duration;

/// `count` requests with a bad credential, each naming `forwarded` as its client:
/// the statuses answered.
async fn failing(base: &str, forwarded: &[&str]) -> Vec<u16> {
    let c = reqwest::Client::new();
    let mut statuses = Vec::new();
    for f in forwarded {
        let r = c
            .get(format!("{base}/v1/revision"))
            .header("authorization", "Bearer clr_0000000000000000_wrong")
            .header("x-forwarded-for", *f)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    statuses
}

/// The server on a new store in `dir` with `args`, the admin key in the store before it
/// starts (so that the start's own wait for the key fails no authentication).
fn start_keyed(dir: &std::path::Path, args: &[&str]) -> crate::faults::Server {
    let db = dir.join("facts.db");
    drop(start(&db, &[]).unwrap());
    start(&db, args).unwrap()
}

#[test]
fn a_forwarding_header_names_the_client_only_from_a_trusted_proxy() {
    // No proxy trusted: every request is the connection's address, whatever it claims,
    // so a new spoofed address each time does not escape the limit.
    let dir = crate::scratch("sec-proxies-none");
    let server = start_keyed(&dir, &["--auth-failure-limit", "3"]);
    let statuses = block(failing(
        &server.base,
        &[
            "203.0.113.1",
            "203.0.113.2",
            "203.0.113.3",
            "203.0.113.4",
            "203.0.113.5",
        ],
    ));
    assert_eq!(statuses[..3], [401, 401, 401], "{statuses:?}");
    assert_eq!(statuses[3..], [429, 429], "{statuses:?}");
    drop(server);

    // Loopback trusted as the proxy: the client it names is counted, one budget each,
    // and the request's log line names it.
    let dir = crate::scratch("sec-proxies-trusted");
    let server = start_keyed(
        &dir,
        &[
            "--auth-failure-limit",
            "3",
            "--trusted-proxies",
            "127.0.0.0/8,::1",
        ],
    );
    let one = ["198.51.100.7"; 4];
    let statuses = block(failing(&server.base, &one));
    assert_eq!(statuses, [401, 401, 401, 429], "{statuses:?}");
    // Another client behind the same proxy keeps its own budget; a spoofed first hop
    // before the proxy's own entry is not believed (the nearest untrusted hop counts).
    let statuses = block(failing(
        &server.base,
        &["198.51.100.7, 198.51.100.8", "203.0.113.9, 198.51.100.8"],
    ));
    assert_eq!(statuses, [401, 401], "{statuses:?}");
    let statuses = block(failing(&server.base, &["198.51.100.8"]));
    assert_eq!(statuses, [401], "{statuses:?}");
    let statuses = block(failing(&server.base, &["198.51.100.8"]));
    assert_eq!(statuses, [429], "{statuses:?}");
    let log = server.log.lock().unwrap().clone();
    assert!(
        log.lines()
            .any(|l| l.contains("198.51.100.8") && l.contains("clearance::request")),
        "no request line names the client: {log}"
    );
    drop(server);
}

#[test]
fn only_listed_origins_may_call_the_api_from_a_browser() {
    let dir = crate::scratch("sec-cors");
    let server = start(
        &dir.join("facts.db"),
        &[
            "--cors-origin",
            "https://ops.example.com,http://localhost:5173",
        ],
    )
    .unwrap();
    let base = server.base.clone();
    block(async {
        let c = reqwest::Client::new();
        let preflight = |origin: &'static str| {
            c.request(reqwest::Method::OPTIONS, format!("{base}/v1/check"))
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization, content-type",
                )
                .send()
        };
        // A listed origin: the preflight is answered, with credentials allowed.
        let r = preflight("https://ops.example.com").await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let h = r.headers();
        assert_eq!(
            h.get("access-control-allow-origin").unwrap(),
            "https://ops.example.com"
        );
        assert_eq!(h.get("access-control-allow-credentials").unwrap(), "true");
        let allowed = h
            .get("access-control-allow-headers")
            .unwrap()
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        assert!(
            allowed.contains("authorization") && allowed.contains("content-type"),
            "{allowed}"
        );
        // Another origin: no grant a browser would act on (no allowed origin).
        let r = preflight("https://evil.example.net").await.unwrap();
        assert!(r.headers().get("access-control-allow-origin").is_none());
        // A real request from a listed origin carries the grant; from another, none. The
        // answer itself is the same: CORS is the browser's gate, authentication the
        // server's.
        for (origin, granted) in [
            ("http://localhost:5173", true),
            ("https://evil.example.net", false),
        ] {
            let r = crate::admin()
                .get(format!("{base}/v1/revision"))
                .header("origin", origin)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            assert_eq!(
                r.headers().get("access-control-allow-origin").is_some(),
                granted,
                "{origin}"
            );
        }
        // Without credentials a cross-origin caller is refused as any other.
        let r = c
            .get(format!("{base}/v1/revision"))
            .header("origin", "https://ops.example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
    });
    drop(server);
    // A wildcard or a path is refused at start.
    let dir = crate::scratch("sec-cors-bad");
    for bad in ["*", "https://ops.example.com/console", "ops.example.com"] {
        let log = start(&dir.join("facts.db"), &["--cors-origin", bad])
            .err()
            .unwrap_or_else(|| panic!("--cors-origin {bad} was taken"));
        assert!(log.contains("--cors-origin"), "{log}");
    }
}
