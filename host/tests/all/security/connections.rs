//! Finding 4: connections held without doing anything. Idle sockets from one address may
//! not lock out every other client, and a request body trickled in may not hold its
//! connection past a deadline for the whole body.

use crate::service::{demo_facts, runtime_with, temp_db};
use crate::{ADMIN, block, root};
use clearance_host::RuntimeConfig;
use clearance_host::api::{ServerLimits, router};
use clearance_host::policy_dir::read_policies;
use clearance_host::service::{Service, ServiceConfig};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A server on a loopback port with `limits`; its address.
async fn server(name: &str, limits: ServerLimits) -> SocketAddr {
    let policies = root().join("policies");
    let db = temp_db(name);
    let service = Service::open(
        runtime_with(RuntimeConfig {
            instances: 2,
            ..RuntimeConfig::default()
        }),
        read_policies(&policies).unwrap(),
        &db,
        || Ok(demo_facts()),
        None,
        ServiceConfig::default(),
    )
    .await
    .unwrap();
    crate::add_key(&db, ADMIN, clearance_host::auth::Scope::Admin, &[]);
    service.refresh_keys().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(clearance_host::api::serve_with_limits(
        listener,
        router(service),
        limits,
        std::future::pending(),
    ));
    addr
}

/// Sends `head` on a fresh connection, then reads the answer (what arrives within `wait`).
fn answer_of(mut s: TcpStream, head: &[u8], wait: Duration) -> String {
    let _ = s.write_all(head);
    s.set_read_timeout(Some(wait)).unwrap();
    let mut text = Vec::new();
    let _ = s.read_to_end(&mut text);
    String::from_utf8_lossy(&text).into_owned()
}

/// A client from the loopback address `from` (127.0.0.0/8 all reach a server on
/// 127.0.0.1), with the admin key.
fn admin_from(from: [u8; 4]) -> reqwest::Client {
    crate::bearer(ADMIN)
        .local_address(std::net::IpAddr::from(from))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// The report's first reproduction: idle sockets, from one address and without any
/// credential, as many as the server holds. They fill that address's share of
/// connections; the surplus is answered like the global cap (503 `host.busy`, with
/// `retry-after`, and closed); a client from another address is served all along.
#[test]
fn idle_sockets_from_one_address_do_not_lock_out_another() {
    block(async {
        let limits = ServerLimits {
            max_connections: 100,
            ..ServerLimits::default()
        };
        let addr = server("sec-idle-sockets", limits).await;
        let held = tokio::task::spawn_blocking(move || {
            (0..100)
                .map(|_| TcpStream::connect(addr).unwrap())
                .collect::<Vec<_>>()
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Another address: served.
        let r = admin_from([127, 0, 0, 2])
            .get(format!("http://{addr}/v1/revision"))
            .send()
            .await;
        let status = r.map(|r| r.status().as_u16()).unwrap_or(0);
        assert_eq!(
            status, 200,
            "a client from another address was locked out by 100 idle sockets from 127.0.0.1"
        );
        // The same address: refused at once, as past the global cap, and closed.
        let busy = tokio::task::spawn_blocking(move || {
            let s = TcpStream::connect(addr).unwrap();
            answer_of(
                s,
                b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                Duration::from_secs(3),
            )
        })
        .await
        .unwrap();
        assert!(busy.starts_with("HTTP/1.1 503"), "{busy}");
        assert!(busy.contains("\"host.busy\""), "{busy}");
        assert!(busy.to_lowercase().contains("retry-after: "), "{busy}");
        assert!(
            busy.contains("127.0.0.1"),
            "the refusal names the address: {busy}"
        );
        // Of the idle sockets, those past the address's share were refused and closed
        // (their answer is waiting; the others have none).
        let refused = held
            .iter()
            .filter(|s| {
                s.set_nonblocking(true).unwrap();
                let mut buf = [0u8; 4096];
                let n = (&**s).read(&mut buf).unwrap_or(0);
                String::from_utf8_lossy(&buf[..n]).contains("host.busy")
            })
            .count();
        assert!(
            (1..100).contains(&refused),
            "{refused} of 100 idle sockets from one address were refused"
        );
    });
}

/// The second attack's fourth finding: silent sockets from many addresses, each within
/// its address's share, filled the server's cap, and every client was refused until the
/// head timeout closed them. Now a connection past the cap takes the place of a silent
/// one (of the address holding the most): a client from yet another address is served,
/// and a client that has sent requests keeps its connection.
#[test]
fn silent_sockets_from_many_addresses_do_not_lock_out_a_client() {
    block(async {
        let limits = ServerLimits {
            max_connections: 60,
            max_connections_per_address: 20,
            ..ServerLimits::default()
        };
        let addr = server("sec-silent-many", limits).await;
        // A client already served, on a kept-alive connection.
        let served = admin_from([127, 0, 0, 9]);
        let ok = served
            .get(format!("http://{addr}/v1/revision"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        assert_eq!(ok, 200);
        // Three addresses at their share: 60 connections with the client's, past the cap.
        let held = tokio::task::spawn_blocking(move || {
            let mut held = Vec::new();
            for a in 2..5u8 {
                for _ in 0..20 {
                    let s = connect_from([127, 0, 0, a], addr);
                    held.push(s);
                }
            }
            held
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        // A new client from another address is served.
        let status = admin_from([127, 0, 0, 7])
            .get(format!("http://{addr}/v1/revision"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        assert_eq!(
            status, 200,
            "a new client was refused while silent sockets filled the server's cap"
        );
        // The client served before keeps being served on its connection.
        let again = served
            .get(format!("http://{addr}/v1/revision"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        assert_eq!(again, 200);
        // Some silent sockets were closed to make room.
        let closed = held
            .iter()
            .filter(|s| {
                s.set_nonblocking(true).unwrap();
                let mut buf = [0u8; 4096];
                matches!((&**s).read(&mut buf), Ok(0))
                    || String::from_utf8_lossy(&buf).contains("host.busy")
            })
            .count();
        assert!(closed > 0, "no silent socket was closed");
    });
}

/// A connection to `addr` from the loopback address `from`.
fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::from((from, 0))).unwrap();
            socket.connect(addr).await.unwrap().into_std().unwrap()
        })
}

/// A body trickled a byte at a time, each byte well within the old per-frame timeout:
/// the whole body has `body_timeout` to arrive, so the request is answered 408 with a
/// structured error at the deadline and its connection closed.
#[test]
fn a_trickled_body_is_cut_off_at_the_deadline_for_the_whole_body() {
    block(async {
        let limits = ServerLimits {
            body_timeout: Duration::from_secs(2),
            ..ServerLimits::default()
        };
        let addr = server("sec-trickle-deadline", limits).await;
        let (answer, took) = tokio::task::spawn_blocking(move || {
            trickle(addr, Duration::from_millis(300), Duration::from_secs(6))
        })
        .await
        .unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "a body trickled for {took:?} was not cut off: {answer:?}"
        );
        assert!(answer.contains("\"request.timeout\""), "{answer}");
        assert!(
            took < Duration::from_millis(3500),
            "cut off after {took:?}, past the 2 s deadline"
        );
    });
}

/// A byte every half second meets no deadline of its own for a long time (30 s by
/// default), but falls under the least rate a body must keep once its grace is over:
/// cut off within a few seconds, with the rate said.
#[test]
fn a_body_slower_than_the_least_rate_is_cut_off_after_its_grace() {
    block(async {
        let addr = server("sec-trickle-rate", ServerLimits::default()).await;
        let (answer, took) = tokio::task::spawn_blocking(move || {
            trickle(addr, Duration::from_millis(500), Duration::from_secs(9))
        })
        .await
        .unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "a body trickled for {took:?} was not cut off: {answer:?}"
        );
        assert!(answer.contains("\"request.timeout\""), "{answer}");
        assert!(answer.contains("bytes a second"), "{answer}");
        assert!(
            took < Duration::from_millis(7000),
            "cut off after {took:?}, past the grace"
        );
    });
}

/// Sends a check's head with a long declared body, then one byte every `every` for up
/// to `limit`; gives what the server answered and when (its answer, or the connection
/// closing, ends the trickle).
fn trickle(addr: SocketAddr, every: Duration, limit: Duration) -> (String, Duration) {
    let mut s = TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /v1/check HTTP/1.1\r\nHost: x\r\nauthorization: Bearer {ADMIN}\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{{"
    );
    s.write_all(head.as_bytes()).unwrap();
    s.set_read_timeout(Some(every)).unwrap();
    let started = Instant::now();
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                text.extend_from_slice(&buf[..n]);
                // The answer is in; read what follows until the server closes.
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let _ = s.read_to_end(&mut text);
                break;
            }
            Err(_) => {
                if s.write_all(b" ").is_err() {
                    break;
                }
            }
        }
    }
    (
        String::from_utf8_lossy(&text).into_owned(),
        started.elapsed(),
    )
}
