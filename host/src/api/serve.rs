//! The listener: connections accepted under their limits (per address, a global cap that
//! makes room by closing silent connections, a whole-body deadline and minimum rate) and
//! served by the router.

use crate::api::extract::Peer;
use crate::api::router;
use crate::codes::Code;
use crate::service::state::Service;
use axum::Router;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The limits of the HTTP server, against slow and greedy clients.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// How long a client has to send a request's head. hyper starts this clock whenever
    /// it waits for a head, so it also closes a kept-alive connection left idle this long.
    /// An HTTP/2 connection that starts no request for this long is sent `GOAWAY` and
    /// closed once the requests it has open are answered.
    pub header_timeout: Duration,
    /// How long a client has to send a request's whole body, from its head; past it the
    /// request is answered 408 `request.timeout` and the connection closed.
    pub body_timeout: Duration,
    /// How long a body may take at any pace before it must keep to `body_min_rate`.
    pub body_grace: Duration,
    /// The least rate, in bytes a second on average since the head, a body must keep to
    /// once its grace is over (408 `request.timeout` otherwise); 0: any.
    pub body_min_rate: u64,
    /// Connections held at once; past it, a connection that has sent no request yet, of
    /// an address holding more such than the new one's, is closed to make room
    /// ([`crate::limits::Waiting`]), or else the new one is answered 503 `host.busy` and
    /// closed.
    pub max_connections: usize,
    /// Connections one network address (an IPv4 address, an IPv6 /64) may hold at once;
    /// one more from it is answered 503 `host.busy` and closed.
    pub max_connections_per_address: usize,
    /// How long, once shutting down, the server lets open connections finish the
    /// requests they are in (writes included) before it returns anyway.
    pub drain: Duration,
    /// TLS for every connection (HTTP/2 or HTTP/1.1 by ALPN); `None`: plain HTTP/1.1.
    /// The handshake must finish within `header_timeout`.
    pub tls: Option<crate::tls::Tls>,
    /// The proxies whose `Forwarded`/`X-Forwarded-For` name a request's client, for its
    /// rate limits and log line ([`crate::api::TrustedProxies`]); the connection limits
    /// still count the proxy's own address.
    pub trusted_proxies: crate::api::TrustedProxies,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            body_grace: Duration::from_secs(5),
            body_min_rate: 1024,
            max_connections: 1024,
            max_connections_per_address: 64,
            drain: Duration::from_secs(10),
            tls: None,
            trusted_proxies: crate::api::TrustedProxies::default(),
        }
    }
}

/// Serves `app` on `listener` with `limits` until `shutdown` completes; then stops
/// accepting, lets every open connection finish the request it is in (an idle one is
/// closed at once) for up to `limits.drain`, and returns.
pub async fn serve_with_limits(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    use crate::limits::{Address, AddressSlots, BodyLimits, DeadlineBody, Waiting};
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    let body_limits = BodyLimits {
        deadline: limits.body_timeout,
        grace: limits.body_grace,
        min_rate: limits.body_min_rate,
    };
    let acceptor = limits.tls.as_ref().map(crate::tls::Tls::acceptor);
    let trusted = Arc::new(limits.trusted_proxies.clone());
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let addresses = Arc::new(AddressSlots::default());
    let waiting = Arc::new(Waiting::default());
    let (closing, closed) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => {
                drop(listener);
                closing.send_replace(true);
                let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
                let drained =
                    tokio::time::timeout(limits.drain, permits.acquire_many(all)).await;
                if drained.is_err() {
                    tracing::warn!(
                        "some connections were still open after {} s; closing them",
                        limits.drain.as_secs()
                    );
                }
                return Ok(());
            }
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok((stream, peer)) => (stream, Peer(peer.ip())),
            Err(e) => {
                // Out of descriptors or a connection reset before it was taken: wait a
                // little rather than spin.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // An address's own share first, so that one address at its share takes none of
        // the others' places.
        let address = Address::of(peer.0);
        let Some(slot) = addresses.take(address, limits.max_connections_per_address) else {
            let cap = limits.max_connections_per_address;
            tokio::spawn(refuse(
                stream,
                acceptor.clone(),
                format!("`{address}` holds its limit of {cap} connections"),
            ));
            continue;
        };
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => permit,
            // At the cap, a connection that has sent no request yet makes room: the
            // oldest of the address holding the most of them closes (if that is not this
            // one's address, nor one holding no more than it), and this one takes its
            // place once it has.
            Err(_) if waiting.evict(address) => {
                match tokio::time::timeout(
                    Duration::from_millis(500),
                    Arc::clone(&permits).acquire_owned(),
                )
                .await
                {
                    Ok(Ok(permit)) => permit,
                    _ => {
                        let cap = limits.max_connections;
                        tokio::spawn(refuse(
                            stream,
                            acceptor.clone(),
                            format!("the server holds its limit of {cap} connections"),
                        ));
                        continue;
                    }
                }
            }
            Err(_) => {
                let cap = limits.max_connections;
                tokio::spawn(refuse(
                    stream,
                    acceptor.clone(),
                    format!("the server holds its limit of {cap} connections"),
                ));
                continue;
            }
        };
        let place = Arc::new(waiting.enter(address));
        let evicted = Arc::clone(&place.evicted);
        let app = app.clone();
        let sent = Arc::clone(&place);
        let trusted = Arc::clone(&trusted);
        let opened = std::time::Instant::now();
        let last_request = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let noted = Arc::clone(&last_request);
        let service = TowerToHyperService::new(tower::util::MapRequest::new(
            app,
            move |req: axum::http::Request<hyper::body::Incoming>| {
                sent.served();
                noted.store(millis_since(opened), std::sync::atomic::Ordering::Relaxed);
                // The body's deadline runs from now, as its head has arrived.
                let mut req = req.map(|body| DeadlineBody::new(body, body_limits));
                let client = if trusted.is_empty() {
                    peer
                } else {
                    Peer(trusted.client(peer.0, req.headers()))
                };
                req.extensions_mut().insert(client);
                req
            },
        ));
        let header_timeout = limits.header_timeout;
        let mut closed = closed.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _held = (permit, slot, place);
            let Some((io, h2)) = handshake(stream, acceptor.as_ref(), header_timeout).await else {
                return;
            };
            let mut builder = Builder::new(TokioExecutor::new());
            builder = if h2 {
                builder.http2_only()
            } else {
                builder.http1_only()
            };
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(MAX_STREAMS);
            let connection = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = async { let _ = closed.wait_for(|c| *c).await; } => {
                    // Shutting down: the request in flight is finished, then the
                    // connection closes.
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
                // It sent nothing, and another connection needs its place: closed.
                () = evicted.notified() => {}
                // HTTP/2 has no head to wait for between requests: a connection that
                // starts none for as long as HTTP/1.1 may wait for a head is told to go
                // away, and closes once what it has open is answered.
                () = idle(h2, opened, &last_request, header_timeout) => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
}

/// Milliseconds from `since` to now.
fn millis_since(since: std::time::Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Resolves once an HTTP/2 connection opened at `opened` has started no request for
/// `timeout` (`last_request`: milliseconds from `opened` to the last one); never for
/// HTTP/1.1, whose idle connections hyper closes itself.
async fn idle(
    h2: bool,
    opened: std::time::Instant,
    last_request: &std::sync::atomic::AtomicU64,
    timeout: Duration,
) {
    if !h2 {
        return std::future::pending().await;
    }
    loop {
        let last = last_request.load(std::sync::atomic::Ordering::Relaxed);
        let quiet = Duration::from_millis(millis_since(opened).saturating_sub(last));
        if quiet >= timeout {
            return;
        }
        tokio::time::sleep(timeout - quiet).await;
    }
}

/// The requests one HTTP/2 connection may have in flight at once.
const MAX_STREAMS: u32 = 64;

/// A connection's byte stream, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// The connection's stream, through a TLS handshake when `acceptor` is given (within
/// `within`), and whether it speaks HTTP/2 (chosen by ALPN); `None` when the handshake
/// fails or takes too long (the connection is then closed).
async fn handshake(
    stream: tokio::net::TcpStream,
    acceptor: Option<&tokio_rustls::TlsAcceptor>,
    within: Duration,
) -> Option<(Box<dyn Io>, bool)> {
    let Some(acceptor) = acceptor else {
        return Some((Box::new(stream), false));
    };
    match tokio::time::timeout(within, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
            Some((Box::new(tls), h2))
        }
        Ok(Err(e)) => {
            tracing::debug!("TLS handshake: {e}");
            None
        }
        Err(_) => None,
    }
}

/// Answers a connection past a cap with 503 `host.busy` (`message` says which) and
/// closes it: over TLS when the server speaks it (after a handshake of at most a second).
pub(crate) async fn refuse(
    stream: tokio::net::TcpStream,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    message: String,
) {
    match acceptor {
        None => refuse_on(stream, message).await,
        Some(acceptor) => {
            if let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(1), acceptor.accept(stream)).await
            {
                refuse_on(tls, message).await;
            }
        }
    }
}

async fn refuse_on(mut stream: impl tokio::io::AsyncWrite + Unpin, message: String) {
    use tokio::io::AsyncWriteExt;
    let body = json!({ "error": { "code": Code::HostBusy.as_str(), "message": message, "help": "retry after the time in `retry-after`, with fewer connections open" }, "allowed": false }).to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Serves the API on `listener`, with the default limits, until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Arc<Service>,
) -> std::io::Result<()> {
    serve_with_limits(
        listener,
        router(service),
        ServerLimits::default(),
        std::future::pending(),
    )
    .await
}
