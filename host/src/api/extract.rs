//! What a handler takes from a request, each refused with the API's error shape: the
//! caller its credential proves (admitted under the rate limits and the failed-
//! authentication limit), a JSON body (bounded, of JSON content type), a query, a path.

use crate::auth::{AuthError, Caller};
use crate::clock::now_seconds;
use crate::codes::Code;
use crate::service::error::ServiceError;
use crate::service::state::{Service, blocking, budget_burst};
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;

/// The caller [`authenticated`] proved: a handler that takes one is served only behind it.
impl FromRequestParts<Arc<Service>> for Caller {
    type Rejection = ServiceError;

    async fn from_request_parts(parts: &mut Parts, _: &Arc<Service>) -> Result<Self, ServiceError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ServiceError::internal(
                "this route is served without a credential, yet it needs a caller",
            )
        })
    }
}

/// Authenticates the routes of the table that need a credential: the caller its
/// credential proves, within its rate limit, is handed to the handler; any other request
/// is answered 401 (or 429) before the handler runs.
pub(crate) async fn authenticated(
    State(s): S,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let peer = req.extensions().get::<Peer>().map(|p| p.failure_key());
    if let Some(e) = peer.and_then(|p| s.throttled(p)) {
        return e.into_response();
    }
    match admit(req.headers(), &s).await {
        Ok(caller) => {
            crate::observe::note(|n| n.principal = Some(caller.name()));
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) if e.is(Code::AuthInvalid) => {
            peer.and_then(|p| s.failed(p)).unwrap_or(e).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// The network address a request came from, as its connection says (never a header).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub std::net::IpAddr);

impl Peer {
    /// The address failed authentications are counted against: an IPv4 address itself
    /// (an IPv4-mapped IPv6 address, as a dual-stack listener sees an IPv4 client, as that
    /// IPv4 address), an IPv6 address by its /64 prefix, since one IPv6 client commonly
    /// holds a whole /64 and could otherwise take a fresh budget for every address of it.
    pub fn failure_key(self) -> std::net::IpAddr {
        match self.0 {
            std::net::IpAddr::V4(v4) => std::net::IpAddr::V4(v4),
            std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => std::net::IpAddr::V4(v4),
                None => std::net::IpAddr::V6(std::net::Ipv6Addr::from(
                    v6.to_bits() & !u128::from(u64::MAX),
                )),
            },
        }
    }
}

impl Service {
    /// 429 if `peer` is past its budget of failed authentications.
    pub(crate) fn throttled(&self, peer: std::net::IpAddr) -> Option<ServiceError> {
        let until = *self.throttled.lock().ok()?.get(&peer)?;
        let wait = until.checked_duration_since(std::time::Instant::now())?;
        Some(self.too_many_failures(peer, wait))
    }

    /// Counts a failed authentication from `peer`: 429 once it is past its budget.
    pub(crate) fn failed(&self, peer: std::net::IpAddr) -> Option<ServiceError> {
        let until = self.failures.as_ref()?.check_key(&peer).err()?;
        let wait =
            until.wait_time_from(governor::clock::Clock::now(self.failures.as_ref()?.clock()));
        if let Ok(mut t) = self.throttled.lock()
            && t.len() < MAX_THROTTLED
        {
            t.insert(peer, std::time::Instant::now() + wait);
        }
        Some(self.too_many_failures(peer, wait))
    }

    pub(crate) fn too_many_failures(&self, peer: std::net::IpAddr, wait: Duration) -> ServiceError {
        let from = match peer {
            std::net::IpAddr::V4(_) => peer.to_string(),
            std::net::IpAddr::V6(_) => format!("{peer}/64"),
        };
        let mut e = ServiceError::new(
            Code::AuthRateLimited,
            format!(
                "{from} failed to authenticate more than {} times a minute",
                self.config
                    .auth_failure_limit
                    .map_or(0, std::num::NonZeroU32::get)
            ),
        )
        .help("check the credential; wait for retry-after before sending another");
        e.retry_after = Some(u32::try_from(wait.as_secs().max(1)).unwrap_or(u32::MAX));
        e
    }
}

/// The most addresses held as throttled at once; past it an address past its budget is
/// still answered 429, but not refused before its credential is checked.
pub(crate) const MAX_THROTTLED: usize = 100_000;

/// The caller a request's credential proves, if it is within its rate limit and its
/// budget of work: the request costs one of each ([`Service::charge`] charges the rest of
/// a batch or a write).
pub(crate) async fn admit(headers: &HeaderMap, s: &Service) -> Result<Caller, ServiceError> {
    let caller = authenticate(headers, s).await?;
    if let Some(limiter) = &s.limiter
        && let Err(until) = limiter.check_key(&caller.name())
    {
        let wait = until.wait_time_from(governor::clock::Clock::now(limiter.clock()));
        let mut e = ServiceError::new(
            Code::AuthRateLimited,
            format!(
                "{} made more than {} requests a second",
                caller.name(),
                s.config.rate_limit.map_or(0, std::num::NonZeroU32::get)
            ),
        )
        .help("wait for retry-after, then send fewer, or batch them");
        e.retry_after = Some(u32::try_from(wait.as_secs().max(1)).unwrap_or(u32::MAX));
        return Err(e);
    }
    s.charge(&caller, 1, || "a request".to_string())?;
    Ok(caller)
}

impl Service {
    /// Charges `caller`'s budget of work for `what`, of `cost` in all (a batch's requests,
    /// a write's deltas), of which [`admit`] charged one already unless `what` is the
    /// request itself (`cost` 1): 429 with `retry-after` when the budget holds less,
    /// naming the cost and the budget.
    pub(crate) fn charge(
        &self,
        caller: &Caller,
        cost: usize,
        what: impl FnOnce() -> String,
    ) -> Result<(), ServiceError> {
        let (Some(work), Some(rate)) = (&self.work, self.config.work_limit) else {
            return Ok(());
        };
        // The request itself was charged one when it was admitted.
        let more = if cost <= 1 { cost } else { cost - 1 };
        let Some(more) = std::num::NonZeroU32::new(u32::try_from(more).unwrap_or(u32::MAX)) else {
            return Ok(());
        };
        let burst = budget_burst(&self.config, rate);
        let wait = match work.check_key_n(&caller.name(), more) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(until)) => Some(until.wait_time_from(governor::clock::Clock::now(work.clock()))),
            Err(_) => None,
        };
        let mut e = ServiceError::new(Code::AuthRateLimited, format!(
                "{} costs {cost} of `{}`'s budget of {rate} a second ({burst} at most at once), more than it has left (a batch costs its requests, a write its deltas)",
                what(),
                caller.name()
            )).help("wait for retry-after, then send less at a time; nothing was decided or written");
        let wait = wait.unwrap_or(Duration::from_secs(u64::from(burst.get() / rate.get())));
        e.retry_after = Some(u32::try_from(wait.as_secs().max(1)).unwrap_or(u32::MAX));
        Err(e)
    }
}

/// The caller a request's credential proves.
pub(crate) async fn authenticate(headers: &HeaderMap, s: &Service) -> Result<Caller, ServiceError> {
    // Two credentials are no credential: which one a proxy or a framework reads is not
    // for the caller to choose.
    if headers.get_all(header::AUTHORIZATION).iter().count() > 1 {
        return Err(ServiceError::from(AuthError {
            code: Code::AuthInvalid,
            message: "more than one Authorization header".into(),
        }));
    }
    let value = match headers.get(header::AUTHORIZATION) {
        Some(v) => Some(v.to_str().map_err(|_| {
            ServiceError::from(AuthError {
                code: Code::AuthInvalid,
                message: "the Authorization header is not text".into(),
            })
        })?),
        None => None,
    };
    let credential = crate::auth::bearer(value)?;
    if credential.starts_with("clr_") {
        return Ok(s.live_keys().verify(credential)?);
    }
    let Some(tokens) = &s.config.tokens else {
        return Err(ServiceError::from(AuthError {
            code: Code::AuthInvalid,
            message: "this host accepts service keys only (no user token issuer is configured)"
                .into(),
        }));
    };
    // A key the provider's set does not hold may be one it has just rotated in.
    if let Some(provider) = &s.config.oidc
        && let Ok(kid) = crate::auth::key_id(credential)
        && !tokens.knows(&kid)
    {
        provider.unknown_key(&kid).await;
    }
    let principal = tokens.verify(credential, now_seconds())?;
    if !s.served().facts.read().entities.contains_key(&principal) {
        return Err(ServiceError::from(AuthError {
            code: Code::AuthInvalid,
            message: format!("the token names `{principal}`, which does not exist"),
        }));
    }
    Ok(Caller::User { principal })
}

/// A JSON body, read within the body limit; a bad one is an [`ServiceError`] in the API's
/// shape (not axum's plain-text rejection). A large body is read as JSON off the async
/// workers, which serve every other request meanwhile, and in one of its caller's turns
/// ([`Runtime::turn`]), so that one caller's large bodies take no more of the machine
/// than its share.
pub struct ApiJson<T>(pub T);

/// Bodies longer than this (or of no declared length) are read as JSON off the async
/// workers.
pub(crate) const LARGE_BODY: u64 = 64 << 10;

impl<T: DeserializeOwned + Send + 'static> FromRequest<Arc<Service>> for ApiJson<T> {
    type Rejection = ServiceError;

    async fn from_request(
        req: axum::extract::Request,
        state: &Arc<Service>,
    ) -> Result<Self, ServiceError> {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n <= LARGE_BODY) {
            return match Json::<T>::from_request(req, state).await {
                Ok(Json(v)) => Ok(ApiJson(v)),
                Err(r) => Err(json_rejection(r)),
            };
        }
        if !json_content_type(req.headers()) {
            return Err(json_rejection(JsonRejection::MissingJsonContentType(
                Default::default(),
            )));
        }
        let caller = req.extensions().get::<Caller>().map(Caller::name);
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| json_rejection(JsonRejection::from(r)))?;
        let _turn = match caller {
            Some(name) => Some(state.runtime.turn(&name).await?),
            None => None,
        };
        blocking(move || {
            Json::<T>::from_bytes(&bytes)
                .map(|Json(v)| ApiJson(v))
                .map_err(json_rejection)
        })
        .await
    }
}

/// Whether a request says its body is JSON (`application/json`, or `application/*+json`),
/// as axum's own JSON extractor asks.
pub(crate) fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((ty, subtype)) = essence.split_once('/') else {
        return false;
    };
    let subtype = subtype.to_ascii_lowercase();
    ty.eq_ignore_ascii_case("application") && (subtype == "json" || subtype.ends_with("+json"))
}

pub(crate) fn json_rejection(r: JsonRejection) -> ServiceError {
    // A body cut off for its deadline or its rate: 408, and the connection is closed.
    if let Some(slow) = crate::limits::BodyTooSlow::within(&r) {
        return ServiceError::new(Code::RequestTimeout, slow.to_string());
    }
    // 413 and 415 say what is wrong with the body as a whole; anything else about its
    // content is a 400, as every other bad input.
    let code = match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Code::RequestTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Code::RequestMediaType,
        _ => Code::RequestMalformed,
    };
    ServiceError::new(code, r.body_text()).help(Code::RequestMediaType.help())
}

/// A query or path that does not read: a 400, or the host's fault where the extractor
/// says so (a route whose path lacks the parameter).
fn unreadable(status: StatusCode, text: String) -> ServiceError {
    if status.is_client_error() {
        ServiceError::new(Code::RequestMalformed, text)
    } else {
        ServiceError::new(Code::HostInternal, text)
    }
}

/// A query string, with rejections in the API's shape.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ServiceError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ServiceError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|r: QueryRejection| unreadable(r.status(), r.body_text()))
    }
}

/// A path parameter, with rejections in the API's shape.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ServiceError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ServiceError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|r: PathRejection| unreadable(r.status(), r.body_text()))
    }
}

/// Refuses a body whose declared length is past the limit before reading any of it (a
/// body without a declared length is cut at the limit as it is read).
pub(crate) async fn declared_length(
    State(limit): State<usize>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > limit as u64 => ServiceError::new(
            Code::RequestTooLarge,
            format!("the body is {n} bytes; the limit is {limit}"),
        )
        .into_response(),
        _ => next.run(req).await,
    }
}

pub(crate) type S = State<Arc<Service>>;
