//! The HTTP service: the JSON API under `/v1`, deciding only through the wasm module,
//! writing only what the policy allows, durably, and telling followers about every
//! change.
//!
//! A write is atomic across the store and memory: the next snapshot is built off the
//! async workers and loaded into an instance (proven loadable) before the change is
//! appended; once appended, making it current cannot fail. The write runs as a task of
//! its own, so a client that hangs up cannot stop it half-way. A failed append is read
//! back from the store: stored means acknowledged, not stored means refused, and nothing
//! wedges. A policy reload is a change like any other, stored with its sources.

use crate::auth::{AuthError, Caller, DemoIssuer, Keys, Scope, TokenVerifier};
use crate::limits::{FairQueue, Full, Place, Places};
use crate::routes::{
    Answer, Availability, Callers, Deployment, Failure, Input, Method, Route, inline, named,
};
use crate::runtime::{HostError, Runtime};
use crate::schemas::{self, MinRevision, ServerClock};
use crate::signer::SliceSigner;
use crate::store::{
    Change, FactStore, SqliteFile, SqliteStore, StoreError, StoreErrorKind, StoredPolicy,
};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::on;
use axum::{Json, Router};
use clearance_core::protocol::Call;
use clearance_core::slice::{Projected, Reads};
use clearance_core::{
    AccessMatrix, DecisionView, Delta, ErrorData, Explanation, Facts, FactsJson, Request, Schema,
    Snapshot, Source, TimeValue,
};
use futures_util::stream::{self, Stream, StreamExt};
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{Mutex, broadcast, mpsc, watch};

const DECIDERS: &str = "an admin key; a service or read key of the principal's account; a user token for itself only, decided at the server's clock (a `now` is refused)";

const FORBIDDEN: Failure = Failure {
    status: 403,
    when: "a caller not scoped to it (auth.forbidden), or a user failing its gates (gate.*)",
};
const INTERNAL: Failure = Failure {
    status: 500,
    when: "the host failed (host.internal, host.trap, host.protocol); nothing was written",
};
const BUSY: Failure = Failure {
    status: 503,
    when: "every instance is busy (host.busy); retry after retry-after",
};
const WAITED: Failure = Failure {
    status: 503,
    when: "`min_revision` did not come within 2 s (revision.unavailable), or every instance is busy (host.busy)",
};
const BAD_REQUEST: Failure = Failure {
    status: 400,
    when: "a request the module refuses (request.invalid, request.now_not_allowed)",
};
/// The errors of a route that decides.
const DECIDING: &[Failure] = &[BAD_REQUEST, FORBIDDEN, INTERNAL, WAITED];

/// Every route of the API: the router serves exactly these (authenticating those that
/// need a credential) and the OpenAPI document describes exactly these.
pub const ROUTES: &[Route<Arc<Service>>] = &[
    Route {
        method: Method::Get,
        path: "/v1/revision",
        summary: "The current revision, policy hash and module hash",
        who: "any authenticated caller",
        callers: Callers::Authenticated,
        input: Input::Nothing,
        answer: Answer::Json(named::<schemas::Revision>),
        failures: &[],
        availability: Availability::Always,
        handler: |m| on(m, revision),
    },
    Route {
        method: Method::Post,
        path: "/v1/check",
        summary: "Decide one request",
        who: DECIDERS,
        callers: Callers::Authenticated,
        input: Input::Body(inline::<MinRevision<ServerClock<Request>>>),
        answer: Answer::Json(named::<DecisionView>),
        failures: DECIDING,
        availability: Availability::Always,
        handler: |m| on(m, check),
    },
    Route {
        method: Method::Post,
        path: "/v1/check/batch",
        summary: "Decide many requests, in order",
        who: DECIDERS,
        callers: Callers::Authenticated,
        input: Input::Body(inline::<MinRevision<BatchBody>>),
        answer: Answer::Json(named::<Vec<DecisionView>>),
        failures: &[
            BAD_REQUEST,
            FORBIDDEN,
            Failure {
                status: 413,
                when: "more requests than a batch may carry (request.too_many)",
            },
            INTERNAL,
            WAITED,
        ],
        availability: Availability::Always,
        handler: |m| on(m, check_batch),
    },
    Route {
        method: Method::Post,
        path: "/v1/allowed-actions",
        summary: "Every action a principal may take on a resource",
        who: DECIDERS,
        callers: Callers::Authenticated,
        input: Input::Body(inline::<MinRevision<ServerClock<ActionsBody>>>),
        answer: Answer::Json(named::<clearance_core::protocol::Actions>),
        failures: DECIDING,
        availability: Availability::Always,
        handler: |m| on(m, allowed_actions),
    },
    Route {
        method: Method::Post,
        path: "/v1/resources",
        summary: "The resources of a type (or the rows of a matrix) a principal may act on",
        who: DECIDERS,
        callers: Callers::Authenticated,
        input: Input::Body(inline::<MinRevision<ServerClock<ResourcesBody>>>),
        answer: Answer::Json(named::<Vec<String>>),
        failures: DECIDING,
        availability: Availability::Always,
        handler: |m| on(m, resources),
    },
    Route {
        method: Method::Post,
        path: "/v1/principals",
        summary: "The principals who may act on a resource",
        who: "an admin key; a service or read key of the resource's account (users may not list other principals)",
        callers: Callers::Authenticated,
        input: Input::Body(inline::<MinRevision<PrincipalsBody>>),
        answer: Answer::Json(named::<Vec<String>>),
        failures: &[
            Failure {
                status: 400,
                when: "a request the module refuses (request.invalid)",
            },
            FORBIDDEN,
            INTERNAL,
            WAITED,
        ],
        availability: Availability::Always,
        handler: |m| on(m, principals),
    },
    Route {
        method: Method::Post,
        path: "/v1/explain",
        summary: "Decide and explain: every failed check, or the granting path",
        who: DECIDERS,
        callers: Callers::Authenticated,
        input: Input::Body(inline::<MinRevision<ServerClock<Request>>>),
        answer: Answer::Json(named::<Explanation>),
        failures: DECIDING,
        availability: Availability::Always,
        handler: |m| on(m, explain),
    },
    Route {
        method: Method::Get,
        path: "/v1/matrix/{matrix}",
        summary: "The access-rights matrix: roles x rows with their cells",
        who: "an admin key; a service or read key of `account`; a user token for its own account",
        callers: Callers::Authenticated,
        input: Input::Query(inline::<AccountQuery>),
        answer: Answer::Json(named::<AccessMatrix>),
        failures: &[
            Failure {
                status: 400,
                when: "an unknown matrix or account (request.invalid)",
            },
            FORBIDDEN,
            INTERNAL,
            BUSY,
        ],
        availability: Availability::Always,
        handler: |m| on(m, matrix),
    },
    Route {
        method: Method::Get,
        path: "/v1/facts",
        summary: "Every fact (or one account's), at the current revision",
        who: "an admin key (every account, or `account`); a service key of `account`",
        callers: Callers::Authenticated,
        input: Input::Query(inline::<AccountQuery>),
        answer: Answer::Json(named::<FactsJson>),
        failures: &[
            Failure {
                status: 403,
                when: "a caller not scoped to the account, or not a key that reads facts (auth.forbidden)",
            },
            INTERNAL,
        ],
        availability: Availability::Always,
        handler: |m| on(m, facts),
    },
    Route {
        method: Method::Post,
        path: "/v1/facts",
        summary: "Apply deltas, if the policy allows their author to make them",
        who: "an admin key (as any author; `now` only when importing, recorded); a service key on behalf of an author of its accounts (recorded as made through the key); a user token as itself",
        callers: Callers::Authenticated,
        input: Input::Body(named::<WriteBody>),
        answer: Answer::Json(named::<schemas::Written>),
        failures: &[
            Failure {
                status: 400,
                when: "deltas that do not apply (facts.*), none at all (request.empty), a `now` not allowed (request.now_not_allowed); nothing was written",
            },
            Failure {
                status: 403,
                when: "the policy refuses the write (write.denied, write.no_rule, write.invalid, with `refusal`), or a caller not scoped to the author or an account it touches (auth.forbidden); nothing was written",
            },
            Failure {
                status: 409,
                when: "a parity token from another module or policy (parity.stale), from the future (parity.future), or whose decision no longer holds (parity.outcome_changed); nothing was written",
            },
            Failure {
                status: 413,
                when: "more deltas than a write may carry (request.too_many)",
            },
            INTERNAL,
            Failure {
                status: 503,
                when: "the store failed (store.failed) or every instance is busy (host.busy); nothing was written",
            },
        ],
        availability: Availability::Always,
        handler: |m| on(m, write),
    },
    Route {
        method: Method::Get,
        path: "/v1/changes",
        summary: "Server-sent events: every change after a revision",
        who: "an admin key (every change); a service key (the changes of its accounts); a user token (the changes of its account)",
        callers: Callers::Authenticated,
        input: Input::Query(inline::<Since>),
        answer: Answer::Events(&[
            ("change", named::<schemas::Changed>),
            ("reset", named::<schemas::ResetEvent>),
            ("error", named::<ErrorData>),
        ]),
        failures: &[
            Failure {
                status: 400,
                when: "a `Last-Event-ID` that is not a revision (request.malformed)",
            },
            FORBIDDEN,
            Failure {
                status: 409,
                when: "a revision ahead of the host's (revision.future)",
            },
            Failure {
                status: 429,
                when: "the caller holds as many feeds as one caller may (feed.too_many)",
            },
            INTERNAL,
            Failure {
                status: 503,
                when: "as many followers as the host takes (host.busy), or every instance is busy",
            },
        ],
        availability: Availability::Always,
        handler: |m| on(m, changes),
    },
    Route {
        method: Method::Get,
        path: "/v1/slice/{principal}",
        summary: "The facts that can influence a principal's decisions, with the policy, signed",
        who: "an admin key; a service key of the principal's account; a user token for itself",
        callers: Callers::Authenticated,
        input: Input::Nothing,
        answer: Answer::Json(named::<schemas::SignedSlice>),
        failures: &[
            FORBIDDEN,
            Failure {
                status: 400,
                when: "a principal that is not text (request.malformed), or facts its slice cannot be cut from (facts.*)",
            },
            Failure {
                status: 404,
                when: "no such principal (entity.unknown)",
            },
            INTERNAL,
            BUSY,
        ],
        availability: Availability::Always,
        handler: |m| on(m, slice),
    },
    Route {
        method: Method::Get,
        path: "/v1/slice-keys",
        summary: "The public keys that verify slices, as a JWKS",
        who: "anyone, without credentials (the public keys that verify slices)",
        callers: Callers::Anyone,
        input: Input::Nothing,
        answer: Answer::Json(named::<schemas::SliceKeys>),
        failures: &[],
        availability: Availability::Always,
        handler: |m| on(m, slice_keys),
    },
    Route {
        method: Method::Post,
        path: "/v1/policy/validate",
        summary: "Compile a policy set without loading it",
        who: "an admin key",
        callers: Callers::Authenticated,
        input: Input::Body(named::<PolicyBody>),
        answer: Answer::Json(named::<schemas::Validated>),
        failures: &[
            Failure {
                status: 400,
                when: "a policy set that does not compile (policy.invalid, with `errors`)",
            },
            Failure {
                status: 403,
                when: "not an admin key (auth.forbidden)",
            },
            INTERNAL,
        ],
        availability: Availability::Always,
        handler: |m| on(m, validate),
    },
    Route {
        method: Method::Post,
        path: "/v1/policy/reload",
        summary: "Replace the policy atomically (refused with its errors if it does not load)",
        who: "an admin key",
        callers: Callers::Authenticated,
        input: Input::Body(named::<PolicyBody>),
        answer: Answer::Json(named::<schemas::Reloaded>),
        failures: &[
            Failure {
                status: 400,
                when: "a policy set that does not compile or that a fact breaks (policy.invalid with `errors`, facts.*), or no sources and no policy directory (policy.missing, policy.unreadable)",
            },
            Failure {
                status: 403,
                when: "not an admin key (auth.forbidden)",
            },
            INTERNAL,
            Failure {
                status: 503,
                when: "the store failed (store.failed) or every instance is busy (host.busy)",
            },
        ],
        availability: Availability::Always,
        handler: |m| on(m, reload),
    },
    Route {
        method: Method::Get,
        path: "/healthz",
        summary: "Whether the process is alive (it answers); never waits on a write or the store",
        who: "anyone, without credentials",
        callers: Callers::Anyone,
        input: Input::Nothing,
        answer: Answer::Json(named::<schemas::Alive>),
        failures: &[],
        availability: Availability::Always,
        handler: |m| on(m, healthz),
    },
    Route {
        method: Method::Get,
        path: "/readyz",
        summary: "Whether the host is ready to serve: a snapshot loaded, the store answering (as the follower last found it), and the host within `ready_lag` revisions of the store; never waits on a write or the store",
        who: "anyone, without credentials",
        callers: Callers::Anyone,
        input: Input::Nothing,
        answer: Answer::Json(named::<schemas::Ready>),
        failures: &[Failure {
            status: 503,
            when: "not ready (host.not_ready): no snapshot, the store not answering, or too far behind it",
        }],
        availability: Availability::Always,
        handler: |m| on(m, readyz),
    },
    Route {
        method: Method::Get,
        path: "/metrics",
        summary: "The host's metrics in the OpenMetrics text format: requests by route and status, latencies, decisions by outcome and reason, writes and appends, change feeds and their lag, the module's traps and instances, the revision and hashes served. A host run with `metrics_addr` also serves them there, without credentials",
        who: "an admin key",
        callers: Callers::Authenticated,
        input: Input::Nothing,
        answer: Answer::Text(crate::observe::CONTENT_TYPE),
        failures: &[FORBIDDEN],
        availability: Availability::Always,
        handler: |m| on(m, metrics),
    },
    Route {
        method: Method::Get,
        path: "/v1/openapi.json",
        summary: "This document",
        who: "anyone, without credentials",
        callers: Callers::Anyone,
        input: Input::Nothing,
        answer: Answer::Json(named::<schemas::OpenApiDocument>),
        failures: &[],
        availability: Availability::Always,
        handler: |m| on(m, openapi),
    },
    Route {
        method: Method::Post,
        path: "/demo/token",
        summary: "A token for a user of the demo data, valid for an hour",
        who: "anyone, without credentials (`serve --demo` only)",
        callers: Callers::Anyone,
        input: Input::Body(named::<DemoTokenBody>),
        answer: Answer::Json(named::<schemas::DemoToken>),
        failures: &[
            Failure {
                status: 404,
                when: "no principal of that name (entity.unknown)",
            },
            INTERNAL,
        ],
        availability: Availability::Demo,
        handler: |m| on(m, demo_token),
    },
];

/// How the service bounds its work and its followers.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Changes kept for live followers; one that falls further behind gets a `reset`.
    pub feed_buffer: usize,
    /// Changes read from the store per page when a follower catches up.
    pub feed_page: usize,
    /// About how many bytes of stored changes a page may hold (at least one change).
    pub feed_page_bytes: usize,
    /// Followers of the change feed at once; one more is answered `host.busy`.
    pub max_subscribers: usize,
    /// Followers of the change feed one caller (a key or a user) may hold at once, so one
    /// caller cannot take every place.
    pub max_feeds_per_caller: usize,
    /// The largest request body, in bytes.
    pub body_limit: usize,
    /// Start on the policy files even when the store holds another policy, after
    /// checking every stored fact against them; the adoption is stored as a change.
    pub adopt_policy: bool,
    /// How user tokens are verified; without it only service keys are accepted.
    pub tokens: Option<Arc<TokenVerifier>>,
    /// The demo token issuer (`serve --demo` only): `POST /demo/token` gives a token for
    /// a user of the facts.
    pub demo: Option<Arc<DemoIssuer>>,
    /// How often the service keys are read again from the store (a new or revoked key
    /// takes effect within this).
    pub keys_refresh: Duration,
    /// The most deltas one write may carry.
    pub max_deltas: usize,
    /// The most requests one batch may carry.
    pub max_batch: usize,
    /// Requests a second each caller (a key, or a user) may make, with as many at once;
    /// past it the caller is answered 429 with `retry-after`. `None`: no limit.
    pub rate_limit: Option<std::num::NonZeroU32>,
    /// Work a second each caller may ask for, whatever the number of requests: a batch
    /// costs its requests and a write its deltas (refused or not), any other request 1;
    /// as much at once, or the largest batch or write if more. Past it the caller is
    /// answered 429 with `retry-after`, naming the cost and the budget. `None`: no limit.
    pub work_limit: Option<std::num::NonZeroU32>,
    /// Failed authentications (`auth.invalid`) a minute one network address may make,
    /// with as many at once; past it every request from the address is answered 429 with
    /// `retry-after` until its budget refills, before any credential is checked. Behind a
    /// proxy every caller shares the proxy's address. `None`: no limit.
    pub auth_failure_limit: Option<std::num::NonZeroU32>,
    /// Entities one author may create an hour through writes, with as many at once; past
    /// it a write creating more is answered 429 `write.quota` with `retry-after`, before it
    /// is judged. An admin key's writes are not counted. `None`: no quota.
    pub author_creations_per_hour: Option<std::num::NonZeroU32>,
    /// The same for all the authors of one account together.
    pub account_creations_per_hour: Option<std::num::NonZeroU32>,
    /// The key slices are signed with; without one a key is made at start-up (its public
    /// half is served at `GET /v1/slice-keys`).
    pub slice_signer: Option<Arc<SliceSigner>>,
    /// How long a signed slice may be loaded after it is issued.
    pub slice_ttl: Duration,
    /// Seconds added to the system clock where the server's clock decides (user
    /// decisions and writes): 0, except for a demo whose data is dated (`--demo-time`).
    /// Token lifetimes and change times always use the system clock.
    pub clock_offset: i64,
    /// A checkpoint is written once this many changes follow the last one (0: never
    /// for the count). Start-up then applies at most about this many changes.
    pub checkpoint_changes: u64,
    /// A checkpoint is written once this long has passed since the last one, if any
    /// change followed it (zero: never for the time). A policy change is checkpointed
    /// at once.
    pub checkpoint_interval: Duration,
    /// The least time between two checkpoints, so that a steady stream of writes does
    /// not keep one core writing checkpoints.
    pub checkpoint_gap: Duration,
    /// How often the service asks the store whether another host (or process) appended,
    /// besides the store's own signal (PostgreSQL's NOTIFY), and so learns whether the
    /// store answers (`/readyz`); zero: every second.
    pub follow_interval: Duration,
    /// How far behind the store's last revision the host may be and still be ready
    /// (`/readyz`).
    pub ready_lag: u64,
    /// How many times a group of writes is judged again after another host took its
    /// revision first, each time on the state caught up; past it the writes are answered
    /// 409 (`revision.conflict`).
    pub conflict_retries: u32,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            feed_buffer: 1024,
            feed_page: 256,
            feed_page_bytes: 1 << 20,
            max_subscribers: 1024,
            max_feeds_per_caller: 16,
            body_limit: 1 << 20,
            adopt_policy: false,
            tokens: None,
            demo: None,
            keys_refresh: Duration::from_secs(1),
            max_deltas: 10_000,
            max_batch: 10_000,
            clock_offset: 0,
            rate_limit: None,
            work_limit: None,
            auth_failure_limit: None,
            author_creations_per_hour: std::num::NonZeroU32::new(2_000),
            account_creations_per_hour: std::num::NonZeroU32::new(20_000),
            slice_signer: None,
            slice_ttl: Duration::from_secs(900),
            checkpoint_changes: 50_000,
            checkpoint_interval: Duration::from_secs(600),
            checkpoint_gap: Duration::from_secs(30),
            follow_interval: Duration::from_secs(1),
            ready_lag: 1_000,
            conflict_retries: 8,
        }
    }
}

/// An API error: a status and `{code, message, help}`, always with `"allowed": false`.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    data: ErrorData,
    extra: Option<Value>,
    /// Seconds to wait before retrying (`retry-after`); 503 answers default to 1.
    retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>, help: &str) -> ApiError {
        ApiError {
            status,
            data: ErrorData {
                code: code.into(),
                message: message.into(),
                help: help.into(),
            },
            extra: None,
            retry_after: None,
        }
    }

    fn bad(data: ErrorData) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            data,
            extra: None,
            retry_after: None,
        }
    }

    fn store(e: StoreError, help: &str) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store.failed",
            e.to_string(),
            help,
        )
    }

    fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "host.internal",
            message,
            "nothing was written",
        )
    }
}

impl From<HostError> for ApiError {
    fn from(e: HostError) -> ApiError {
        let status = match &e {
            HostError::Module(d)
                if d.code.starts_with("request.")
                    || d.code.starts_with("facts.")
                    || d.code.starts_with("policy.") =>
            {
                StatusCode::BAD_REQUEST
            }
            HostError::NotLoaded | HostError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            status,
            data: e.data(),
            extra: None,
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.data, "allowed": false });
        if let (Some(Value::Object(extra)), Some(obj)) = (self.extra, body.as_object_mut()) {
            obj.extend(extra);
        }
        let mut response = (self.status, Json(body)).into_response();
        let retry = match (self.retry_after, self.status) {
            (Some(s), _) => Some(s),
            (None, StatusCode::SERVICE_UNAVAILABLE) => Some(1),
            _ => None,
        };
        if let Some(s) = retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        // A request whose body was cut off ends its connection: the rest of the body is
        // not waited for.
        if self.status == StatusCode::REQUEST_TIMEOUT {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            e.code,
            e.message,
            "send `Authorization: Bearer <credential>`: a service key (clearance keys create) or a user token from the configured issuer",
        )
    }
}

fn admin_only(caller: &Caller) -> Result<(), ApiError> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(forbidden("this route needs an admin key"))
    }
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "auth.forbidden",
        message,
        "nothing was decided, written or revealed; ask with a credential scoped to it",
    )
}

/// `account:<id>` for an account id or key.
fn account_key(a: &str) -> String {
    if a.starts_with("account:") {
        a.to_string()
    } else {
        format!("account:{a}")
    }
}

/// The caller [`authenticated`] proved: a handler that takes one is served only behind it.
impl FromRequestParts<Arc<Service>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &Arc<Service>) -> Result<Self, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::internal("this route is served without a credential, yet it needs a caller")
        })
    }
}

/// Authenticates the routes of the table that need a credential: the caller its
/// credential proves, within its rate limit, is handed to the handler; any other request
/// is answered 401 (or 429) before the handler runs.
async fn authenticated(
    State(s): S,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let peer = req.extensions().get::<Peer>().map(|p| p.failure_key());
    if let Some(e) = peer.and_then(|p| s.throttled(p)) {
        return e.into_response();
    }
    match admit(req.headers(), &s) {
        Ok(caller) => {
            crate::observe::note(|n| n.principal = Some(caller.name()));
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) if e.data.code == "auth.invalid" => {
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
    fn throttled(&self, peer: std::net::IpAddr) -> Option<ApiError> {
        let until = *self.throttled.lock().ok()?.get(&peer)?;
        let wait = until.checked_duration_since(std::time::Instant::now())?;
        Some(self.too_many_failures(peer, wait))
    }

    /// Counts a failed authentication from `peer`: 429 once it is past its budget.
    fn failed(&self, peer: std::net::IpAddr) -> Option<ApiError> {
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

    fn too_many_failures(&self, peer: std::net::IpAddr, wait: Duration) -> ApiError {
        let from = match peer {
            std::net::IpAddr::V4(_) => peer.to_string(),
            std::net::IpAddr::V6(_) => format!("{peer}/64"),
        };
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "auth.rate_limited",
            format!(
                "{from} failed to authenticate more than {} times a minute",
                self.config
                    .auth_failure_limit
                    .map_or(0, std::num::NonZeroU32::get)
            ),
            "check the credential; wait for retry-after before sending another",
        );
        e.retry_after = Some(u32::try_from(wait.as_secs().max(1)).unwrap_or(u32::MAX));
        e
    }
}

/// The most addresses held as throttled at once; past it an address past its budget is
/// still answered 429, but not refused before its credential is checked.
const MAX_THROTTLED: usize = 100_000;

/// The caller a request's credential proves, if it is within its rate limit and its
/// budget of work: the request costs one of each ([`Service::charge`] charges the rest of
/// a batch or a write).
fn admit(headers: &HeaderMap, s: &Service) -> Result<Caller, ApiError> {
    let caller = authenticate(headers, s)?;
    if let Some(limiter) = &s.limiter
        && let Err(until) = limiter.check_key(&caller.name())
    {
        let wait = until.wait_time_from(governor::clock::Clock::now(limiter.clock()));
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "auth.rate_limited",
            format!(
                "{} made more than {} requests a second",
                caller.name(),
                s.config.rate_limit.map_or(0, std::num::NonZeroU32::get)
            ),
            "wait for retry-after, then send fewer, or batch them",
        );
        e.retry_after = Some(u32::try_from(wait.as_secs().max(1)).unwrap_or(u32::MAX));
        return Err(e);
    }
    s.charge(&caller, 1, || "a request".to_string())?;
    Ok(caller)
}

/// The most a caller's budget of work holds at once: its rate, or the largest batch or
/// write if larger, so that every request the limits allow can be served from a full
/// budget.
fn budget_burst(config: &ServiceConfig, rate: std::num::NonZeroU32) -> std::num::NonZeroU32 {
    let largest = config.max_batch.max(config.max_deltas);
    rate.max(
        std::num::NonZeroU32::new(u32::try_from(largest).unwrap_or(u32::MAX))
            .unwrap_or(std::num::NonZeroU32::MIN),
    )
}

impl Service {
    /// Charges `caller`'s budget of work for `what`, of `cost` in all (a batch's requests,
    /// a write's deltas), of which [`admit`] charged one already unless `what` is the
    /// request itself (`cost` 1): 429 with `retry-after` when the budget holds less,
    /// naming the cost and the budget.
    fn charge(
        &self,
        caller: &Caller,
        cost: usize,
        what: impl FnOnce() -> String,
    ) -> Result<(), ApiError> {
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
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "auth.rate_limited",
            format!(
                "{} costs {cost} of `{}`'s budget of {rate} a second ({burst} at most at once), more than it has left (a batch costs its requests, a write its deltas)",
                what(),
                caller.name()
            ),
            "wait for retry-after, then send less at a time; nothing was decided or written",
        );
        let wait = wait.unwrap_or(Duration::from_secs(u64::from(burst.get() / rate.get())));
        e.retry_after = Some(u32::try_from(wait.as_secs().max(1)).unwrap_or(u32::MAX));
        Err(e)
    }
}

/// The caller a request's credential proves.
fn authenticate(headers: &HeaderMap, s: &Service) -> Result<Caller, ApiError> {
    // Two credentials are no credential: which one a proxy or a framework reads is not
    // for the caller to choose.
    if headers.get_all(header::AUTHORIZATION).iter().count() > 1 {
        return Err(ApiError::from(AuthError {
            code: "auth.invalid",
            message: "more than one Authorization header".into(),
        }));
    }
    let value = match headers.get(header::AUTHORIZATION) {
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::from(AuthError {
                code: "auth.invalid",
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
        return Err(ApiError::from(AuthError {
            code: "auth.invalid",
            message: "this host accepts service keys only (no user token issuer is configured)"
                .into(),
        }));
    };
    let principal = tokens.verify(credential, now_seconds())?;
    if !s.served().facts.read().entities.contains_key(&principal) {
        return Err(ApiError::from(AuthError {
            code: "auth.invalid",
            message: format!("the token names `{principal}`, which does not exist"),
        }));
    }
    Ok(Caller::User { principal })
}

/// What a caller may touch, checked against the facts being served.
struct Access<'a> {
    caller: &'a Caller,
    served: &'a Served,
}

impl Access<'_> {
    /// The account of an entity, `account:<id>`.
    fn account_of(&self, entity: &str) -> Option<String> {
        self.served
            .facts
            .read()
            .entities
            .get(entity)
            .map(|e| account_key(&e.account))
    }

    /// Whether a key's accounts hold `account`.
    fn scoped(accounts: &[String], account: Option<&str>) -> bool {
        account.is_some_and(|a| accounts.iter().any(|x| x == a))
    }

    /// Deciding, listing or explaining for `principal`.
    fn decide_for(&self, principal: &str) -> Result<(), ApiError> {
        match self.caller {
            Caller::Key {
                scope: Scope::Admin,
                ..
            } => Ok(()),
            Caller::Key { accounts, .. } => {
                if Self::scoped(accounts, self.account_of(principal).as_deref()) {
                    Ok(())
                } else {
                    Err(forbidden(format!(
                        "`{principal}` is not a principal of this key's accounts"
                    )))
                }
            }
            Caller::User { principal: me } => {
                if me == principal {
                    Ok(())
                } else {
                    Err(forbidden(format!(
                        "a user token decides only for itself (`{me}`), not for `{principal}`"
                    )))
                }
            }
        }
    }

    /// Reading the data of `account` (`account:<id>`); users only their own.
    fn read_account(&self, account: Option<&str>, users: bool) -> Result<(), ApiError> {
        let ok = match self.caller {
            Caller::Key {
                scope: Scope::Admin,
                ..
            } => true,
            Caller::Key { accounts, .. } => Self::scoped(accounts, account),
            Caller::User { principal } => {
                users && account.is_some() && self.account_of(principal).as_deref() == account
            }
        };
        if ok {
            Ok(())
        } else {
            Err(forbidden(match account {
                Some(a) => format!("`{a}` is not an account of this caller"),
                None => "name an `account` of this caller".to_string(),
            }))
        }
    }
}

/// A user reads nothing for itself (its slice, the access-rights matrix, its account's
/// changes) unless it passes the gates of its type at the server's clock, as each of its
/// requests does first: an invited user who has not accepted, a deactivated user, a
/// removed one are refused with the gate's code. Keys have no gates.
async fn user_gates(s: &Service, caller: &Caller) -> Result<(), ApiError> {
    let Caller::User { principal } = caller else {
        return Ok(());
    };
    let call = Call::Gates {
        principal: principal.clone(),
        now: TimeValue::Seconds(s.clock()),
    };
    let answer = s.runtime.run(&call).await?;
    let view: clearance_core::DecisionView = serde_json::from_value(answer).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "host.protocol",
            format!("unreadable answer to `gates`: {e}"),
            "the module and the host disagree on the protocol",
        )
    })?;
    if view.allowed {
        return Ok(());
    }
    let (code, message) = view.reasons.first().map_or_else(
        || {
            (
                "auth.forbidden".to_string(),
                "the caller's gates failed".to_string(),
            )
        },
        |r| (r.code.clone(), r.message.clone()),
    );
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        &code,
        format!("`{principal}` may read nothing yet: {message}"),
        "nothing was revealed; the principal passes its gates before it reads anything",
    ))
}

/// The server's clock decides for users: a `now` of theirs is refused, and the server's
/// is put in its place. Keys may pass `now` (replay, tests).
fn server_clock(caller: &Caller, request: &mut Value, now: i64) -> Result<(), ApiError> {
    if !matches!(caller, Caller::User { .. }) {
        return Ok(());
    }
    let Some(obj) = request.as_object_mut() else {
        return Ok(());
    };
    if obj.contains_key("now") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "request.now_not_allowed",
            "a user token is decided at the server's clock: leave `now` out",
            "",
        ));
    }
    obj.insert("now".into(), Value::from(now));
    Ok(())
}

/// The `principal` field of a request body.
fn principal_of(body: &Value) -> Result<String, ApiError> {
    body.get("principal")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "request.malformed",
                "missing field `principal`",
                "see /v1/openapi.json",
            )
        })
}

/// A JSON body, read within the body limit; a bad one is an [`ApiError`] in the API's
/// shape (not axum's plain-text rejection). A large body is read as JSON off the async
/// workers, which serve every other request meanwhile, and in one of its caller's turns
/// ([`Runtime::turn`]), so that one caller's large bodies take no more of the machine
/// than its share.
pub struct ApiJson<T>(pub T);

/// Bodies longer than this (or of no declared length) are read as JSON off the async
/// workers.
const LARGE_BODY: u64 = 64 << 10;

impl<T: DeserializeOwned + Send + 'static> FromRequest<Arc<Service>> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(
        req: axum::extract::Request,
        state: &Arc<Service>,
    ) -> Result<Self, ApiError> {
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
fn json_content_type(headers: &HeaderMap) -> bool {
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

fn json_rejection(r: JsonRejection) -> ApiError {
    // A body cut off for its deadline or its rate: 408, and the connection is closed.
    if let Some(slow) = crate::limits::BodyTooSlow::within(&r) {
        return ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request.timeout",
            slow.to_string(),
            "send the whole body at once, without pauses; nothing was written",
        );
    }
    // 413 and 415 say what is wrong with the body as a whole; anything else about its
    // content is a 400, as every other bad input.
    let (status, code) = match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => (StatusCode::PAYLOAD_TOO_LARGE, "request.too_large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "request.malformed")
        }
        _ => (StatusCode::BAD_REQUEST, "request.malformed"),
    };
    ApiError::new(
        status,
        code,
        r.body_text(),
        "send a JSON object (content-type: application/json) within the body limit; see /v1/openapi.json; nothing was written",
    )
}

/// A query string, with rejections in the API's shape.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|r: QueryRejection| {
                ApiError::new(
                    r.status(),
                    "request.malformed",
                    r.body_text(),
                    "see /v1/openapi.json",
                )
            })
    }
}

/// A path parameter, with rejections in the API's shape.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|r: PathRejection| {
                ApiError::new(
                    r.status(),
                    "request.malformed",
                    r.body_text(),
                    "see /v1/openapi.json",
                )
            })
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// What the service serves: replaced whole by each change, read by readers without
/// waiting on a write. The facts are shared by every `Served` of one policy and changed
/// in place by each write ([`LiveFacts`]).
struct Served {
    revision: u64,
    schema: Arc<Schema>,
    sources: Arc<Vec<Source>>,
    facts: Arc<LiveFacts>,
}

/// The facts being served. A write changes them in place under the write lock, which it
/// holds only while it applies its deltas in memory (after they were judged and stored),
/// at a cost in proportion to the change; readers hold the read lock while they read.
/// Their own `revision` says which change they are at.
struct LiveFacts(std::sync::RwLock<Facts>);

impl LiveFacts {
    fn new(facts: Facts) -> Arc<LiveFacts> {
        Arc::new(LiveFacts(std::sync::RwLock::new(facts)))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Facts> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Facts> {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The service's state.
pub struct Service {
    runtime: Arc<Runtime>,
    /// Held by the one group of writes (or reload) in progress.
    writer: Mutex<()>,
    /// Writes waiting for the group commit ([`group_commit`]).
    writes: mpsc::Sender<QueuedWrite>,
    /// The places of the writes waiting, per caller and in all.
    write_places: Arc<Places>,
    /// Groups of writes appended, and the writes in them.
    groups: std::sync::atomic::AtomicU64,
    grouped: std::sync::atomic::AtomicU64,
    served: RwLock<Arc<Served>>,
    store: Arc<dyn FactStore>,
    changes: broadcast::Sender<Arc<Change>>,
    revision: watch::Sender<u64>,
    /// The revision of the store's base: changes before it are not kept.
    base_revision: u64,
    subscribers: Arc<AtomicUsize>,
    /// Set when memory may be behind the store; the next write reads it again first.
    needs_resync: AtomicBool,
    policy_dir: Option<PathBuf>,
    config: ServiceConfig,
    /// The live service keys, read again from the store every `keys_refresh`.
    keys: RwLock<Arc<Keys>>,
    /// Requests per caller, when limited.
    limiter: Option<governor::DefaultKeyedRateLimiter<String>>,
    /// Work per caller (a batch's requests, a write's deltas), when limited.
    work: Option<governor::DefaultKeyedRateLimiter<String>>,
    /// The entity creation quotas, per author and per account.
    creations: Arc<Creations>,
    /// Failed authentications per network address, when limited.
    failures: Option<governor::DefaultKeyedRateLimiter<std::net::IpAddr>>,
    /// Addresses past their failure budget, and until when.
    throttled: std::sync::Mutex<HashMap<std::net::IpAddr, std::time::Instant>>,
    /// Signs every slice served.
    signer: Arc<SliceSigner>,
    /// Open change feeds per caller.
    feeds: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    /// Held while a checkpoint is written: one at a time.
    checkpointing: Mutex<()>,
    /// Wakes the checkpoint task before its time (a policy change).
    checkpoint_soon: Arc<tokio::sync::Notify>,
    /// The revision of the checkpoint (or base) start-up began from, and the changes it
    /// applied after it.
    started_from: (u64, u64),
    /// What the served policy reads, by its hash: how changes are cut for slices.
    reads: std::sync::Mutex<Option<(String, Arc<Reads>)>>,
    /// Wakes the follower ([`follow`]) before its time.
    follow_soon: Arc<tokio::sync::Notify>,
    /// Set when the host shuts down: change-feed streams end.
    closing: watch::Sender<bool>,
    /// What the follower last learnt of the store, for `/readyz`: when it last answered
    /// and its last revision then, or the error it gave.
    store_health: std::sync::Mutex<StoreHealth>,
    /// The counters and histograms `/metrics` serves.
    metrics: crate::observe::Metrics,
    /// The last revision each open change feed sent, by feed: its lag at a scrape.
    feed_marks: Arc<std::sync::Mutex<HashMap<u64, Arc<AtomicU64>>>>,
    /// Numbers change feeds.
    feed_ids: AtomicU64,
}

/// The store as the follower last found it.
#[derive(Debug, Clone)]
struct StoreHealth {
    /// When the store last answered, and with which last revision.
    answered: Option<(std::time::Instant, u64)>,
    /// Whether the last try failed.
    failing: bool,
}

/// Reads every `*.policy` file of a directory, in name order, each named
/// `policies/<file>` (the name its errors are reported under, and part of the policy
/// hash, so a policy hashes alike wherever its directory is).
pub fn read_policies(dir: &FsPath) -> Result<Vec<Source>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "policy"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            let name = p
                .file_name()
                .map(|n| format!("policies/{}", n.to_string_lossy()))
                .ok_or_else(|| format!("{}: not a file", p.display()))?;
            Ok(Source::new(name, text))
        })
        .collect()
}

/// The seconds since the epoch, by the server's clock.
pub fn now_seconds() -> i64 {
    let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    // A clock set before 1970 gives a negative time, not a made-up one.
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => secs(d),
        Err(e) => secs(e.duration()).saturating_neg(),
    }
}

/// A policy as the store keeps it.
pub fn stored_policy(sources: &[Source]) -> Result<StoredPolicy, String> {
    let schema = Schema::compile(sources).map_err(|e| e.to_string())?;
    Ok(StoredPolicy {
        hash: schema.hash_hex(),
        sources: sources.to_vec(),
    })
}

pub(crate) fn compile_stored(p: &StoredPolicy, at: &str) -> Result<Arc<Schema>, String> {
    let schema = Schema::compile(&p.sources).map_err(|e| format!("{at}: {e}"))?;
    if schema.hash_hex() != p.hash {
        return Err(format!(
            "{at}: the stored policy compiles to {}, not the stored hash {}",
            schema.hash_hex(),
            p.hash
        ));
    }
    Ok(Arc::new(schema))
}

/// Runs CPU-heavy work (compiling, building snapshots) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("a worker thread failed: {e}")))?
}

impl Service {
    /// Opens the SQLite store at `data` (creating it, seeded with `seed()` under the
    /// policy `files`, when no file is there) and starts the service on it.
    pub async fn open(
        runtime: Arc<Runtime>,
        files: Vec<Source>,
        data: &FsPath,
        seed: impl FnOnce() -> Result<Facts, String> + Send + 'static,
        policy_dir: Option<PathBuf>,
        config: ServiceConfig,
    ) -> Result<Arc<Service>, String> {
        let (data, seed_files) = (data.to_path_buf(), files.clone());
        let file = tokio::task::spawn_blocking(move || {
            SqliteFile::open_or_create(&data, || {
                let facts = seed()?;
                tracing::info!(
                    "created the store at {} ({} entities, {} tuples seeded)",
                    data.display(),
                    facts.entities.len(),
                    facts.tuples.len()
                );
                Ok((facts, stored_policy(&seed_files)?))
            })
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?
        .0;
        let store = Arc::new(SqliteStore::new(file));
        Service::start(runtime, files, store, policy_dir, config).await
    }

    /// Connects to the PostgreSQL store at `url` (its schema migrated: `clearance
    /// migrate`), seeds it with `seed()` under the policy `files` when it holds no facts
    /// yet, and starts the service on it. Several hosts may share one database.
    pub async fn open_postgres(
        runtime: Arc<Runtime>,
        files: Vec<Source>,
        url: &str,
        seed: impl FnOnce() -> Result<Facts, String> + Send + 'static,
        policy_dir: Option<PathBuf>,
        config: ServiceConfig,
    ) -> Result<Arc<Service>, String> {
        let store = crate::pgstore::PgStore::connect(url)
            .await
            .map_err(|e| e.to_string())?;
        let (where_, seed_files) = (store.describe(), files.clone());
        store
            .seed_if_empty(move || {
                let facts = seed()?;
                tracing::info!(
                    "seeded {where_} ({} entities, {} tuples)",
                    facts.entities.len(),
                    facts.tuples.len()
                );
                Ok((facts, stored_policy(&seed_files)?))
            })
            .await
            .map_err(|e| e.to_string())?;
        Service::start(runtime, files, Arc::new(store), policy_dir, config).await
    }

    /// Stores a new service key and serves it at once.
    pub async fn add_key(&self, key: crate::store::StoredKey) -> Result<(), StoreError> {
        self.store.add_key(key).await?;
        self.refresh_keys().await
    }

    /// Starts the service on a store: its facts replayed under its stored policies
    /// (verified on the way), compiled and loaded into the module.
    ///
    /// The stored policy wins over the `files`: when they differ the service says so and
    /// serves the stored one, unless `config.adopt_policy`, which checks every fact
    /// against the files and stores them as a change. A store from before policies were
    /// stored adopts the files the same way.
    pub async fn start(
        runtime: Arc<Runtime>,
        files: Vec<Source>,
        store: Arc<dyn FactStore>,
        policy_dir: Option<PathBuf>,
        config: ServiceConfig,
    ) -> Result<Arc<Service>, String> {
        let adopt = config.adopt_policy;
        let latest = store.latest(None).await.map_err(|e| e.to_string())?;
        // The snapshot carried from a checkpoint is loaded into the module while the facts
        // are still being read; it is kept if start-up serves it.
        let early: Arc<std::sync::Mutex<Option<Early>>> = Arc::default();
        let (slot, rt, handle) = (
            Arc::clone(&early),
            Arc::clone(&runtime),
            tokio::runtime::Handle::current(),
        );
        let ((served, snapshot, base_revision, started_from), adopted) =
            tokio::task::spawn_blocking(move || {
                let load = move |s: &Snapshot| {
                    let prepared = s.to_bytes().map_err(|e| e.to_string()).and_then(|bytes| {
                        handle
                            .block_on(rt.prepare(bytes))
                            .map_err(|e| e.to_string())
                    });
                    match (prepared, slot.lock()) {
                        (Ok(p), Ok(mut slot)) => *slot = Some((s.revision, s.schema.hash, p)),
                        (Err(e), _) => {
                            tracing::warn!("loading the checkpoint's snapshot early: {e}");
                        }
                        (Ok(_), Err(_)) => {}
                    }
                };
                replay_with(latest, files, adopt, &load)
            })
            .await
            .map_err(|e| e.to_string())??;
        if let Some(change) = adopted {
            store.append(change).await.map_err(|e| e.to_string())?;
        }
        let carried = early.lock().ok().and_then(|mut e| e.take());
        match carried {
            Some((revision, hash, prepared))
                if revision == served.revision && hash == served.schema.hash =>
            {
                runtime.install(prepared);
            }
            _ => {
                let bytes = tokio::task::spawn_blocking(move || snapshot.to_bytes())
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                runtime
                    .load_snapshot(bytes)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        if started_from.0 != base_revision {
            // Start-up from a checkpoint did not read the base; it is checked now, so that
            // a damaged store is reported while it can still be restored.
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                if let Err(e) = store.verify_base().await {
                    tracing::warn!("checking the store's base: {e}");
                }
            });
        }
        let (changes, _) = broadcast::channel(config.feed_buffer.max(1));
        let (revision, _) = watch::channel(served.revision);
        let keys = store.keys().await.map_err(|e| e.to_string())?;
        let signer = match &config.slice_signer {
            Some(s) => Arc::clone(s),
            None => Arc::new(SliceSigner::generate()?),
        };
        let limiter = config
            .rate_limit
            .map(|n| governor::RateLimiter::dashmap(governor::Quota::per_second(n)));
        let work = config.work_limit.map(|n| {
            let quota = governor::Quota::per_second(n).allow_burst(budget_burst(&config, n));
            governor::RateLimiter::dashmap(quota)
        });
        let failures = config
            .auth_failure_limit
            .map(|n| governor::RateLimiter::dashmap(governor::Quota::per_minute(n)));
        let creations = Arc::new(Creations::new(
            config.author_creations_per_hour,
            config.account_creations_per_hour,
        ));
        let (writes, queue) = mpsc::channel(WRITE_QUEUE);
        let started_revision = served.revision;
        let service = Arc::new(Service {
            runtime,
            writer: Mutex::new(()),
            writes,
            write_places: Arc::new(Places::new(WRITES_PER_CALLER, WRITE_QUEUE)),
            groups: std::sync::atomic::AtomicU64::new(0),
            grouped: std::sync::atomic::AtomicU64::new(0),
            served: RwLock::new(Arc::new(served)),
            store,
            changes,
            revision,
            base_revision,
            subscribers: Arc::new(AtomicUsize::new(0)),
            needs_resync: AtomicBool::new(false),
            policy_dir,
            config,
            limiter,
            work,
            failures,
            creations,
            throttled: std::sync::Mutex::default(),
            keys: RwLock::new(Arc::new(Keys::new(keys))),
            signer,
            feeds: Arc::default(),
            checkpointing: Mutex::new(()),
            checkpoint_soon: Arc::default(),
            started_from,
            reads: std::sync::Mutex::default(),
            follow_soon: Arc::default(),
            closing: watch::channel(false).0,
            store_health: std::sync::Mutex::new(StoreHealth {
                answered: Some((std::time::Instant::now(), started_revision)),
                failing: false,
            }),
            metrics: crate::observe::Metrics::new(),
            feed_marks: Arc::default(),
            feed_ids: AtomicU64::new(0),
        });
        tokio::spawn(follow(
            Arc::downgrade(&service),
            service.store.appended_elsewhere(),
            Arc::clone(&service.follow_soon),
        ));
        tokio::spawn(group_commit(Arc::downgrade(&service), queue));
        tokio::spawn(checkpoints(
            Arc::downgrade(&service),
            started_from.0,
            Arc::clone(&service.checkpoint_soon),
        ));
        // Keys are read again from the store periodically, for as long as the service
        // lives: `clearance keys create|revoke` on the same store takes effect meanwhile.
        let weak = Arc::downgrade(&service);
        let every = service.config.keys_refresh.max(Duration::from_millis(10));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(s) = weak.upgrade() else { return };
                if let Err(e) = s.refresh_keys().await {
                    tracing::warn!("reading the service keys: {e}");
                }
                // Callers whose budget is full again are forgotten.
                if let Some(l) = &s.limiter {
                    l.retain_recent();
                    l.shrink_to_fit();
                }
                if let Some(l) = &s.failures {
                    l.retain_recent();
                    l.shrink_to_fit();
                }
                let now = std::time::Instant::now();
                if let Ok(mut t) = s.throttled.lock() {
                    t.retain(|_, until| *until > now);
                }
            }
        });
        Ok(service)
    }

    /// Writes a checkpoint at the revision served, off the async workers and through a
    /// second handle on the store, so that writes and reads go on meanwhile. `None` when
    /// the latest checkpoint is already there.
    pub async fn checkpoint(&self) -> Result<Option<crate::checkpoint::Written>, String> {
        let _one = self.checkpointing.lock().await;
        let upto = self.revision();
        let t = std::time::Instant::now();
        let written = crate::checkpoint::write_checkpoint(self.store.as_ref(), upto).await?;
        if let Some(w) = &written {
            tracing::info!(
                "checkpoint at revision {} ({} bytes of facts, {} of snapshot, {} changes applied to the one before) in {} ms, {} ms of it storing",
                w.revision,
                w.facts_bytes,
                w.snapshot_bytes,
                w.replayed,
                t.elapsed().as_millis(),
                w.stored_in.as_millis()
            );
        }
        Ok(written)
    }

    /// Change `c` as it applies to `principal`'s slice, cut by what the served policy
    /// reads; entities are placed in accounts by the change's own accounts when it
    /// touches the principal's alone, or else by the facts as they are now.
    fn project(&self, principal: &str, c: &Change) -> Projected {
        let served = self.served();
        let hash = served.schema.hash_hex();
        let reads = {
            let mut cache = self
                .reads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match &*cache {
                Some((h, r)) if *h == hash => Arc::clone(r),
                _ => {
                    let r = Arc::new(Reads::of(&served.schema));
                    *cache = Some((hash, Arc::clone(&r)));
                    r
                }
            }
        };
        let facts = served.facts.read();
        let Some(account) = facts.entities.get(principal).map(|e| e.account.clone()) else {
            return Projected::Refetch(format!("`{principal}` is gone"));
        };
        let alone = c
            .accounts
            .as_deref()
            .is_some_and(|a| matches!(a, [one] if *one == account_key(&account)));
        reads.project(&served.schema, principal, &account, &c.deltas, |k| {
            if alone {
                Some(account.clone())
            } else {
                facts.entities.get(k).map(|e| e.account.clone())
            }
        })
    }

    /// The revision of the checkpoint (or the base) start-up began from, and how many
    /// changes it applied after it.
    pub fn started_from(&self) -> (u64, u64) {
        self.started_from
    }

    /// The server's clock for decisions and writes (seconds).
    pub fn clock(&self) -> i64 {
        now_seconds().saturating_add(self.config.clock_offset)
    }

    /// Reads the service keys again from the store now.
    pub async fn refresh_keys(&self) -> Result<(), StoreError> {
        let all = self.store.keys().await?;
        match self.keys.write() {
            Ok(mut k) => *k = Arc::new(Keys::new(all)),
            Err(p) => *p.into_inner() = Arc::new(Keys::new(all)),
        }
        Ok(())
    }

    /// How many live service keys the service knows.
    pub fn key_count(&self) -> usize {
        self.live_keys().len()
    }

    fn live_keys(&self) -> Arc<Keys> {
        match self.keys.read() {
            Ok(k) => Arc::clone(&k),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Groups of writes appended to the store (each one transaction and one sync to
    /// disk), and the writes in them.
    pub fn group_commits(&self) -> (u64, u64) {
        (
            self.groups.load(Ordering::Relaxed),
            self.grouped.load(Ordering::Relaxed),
        )
    }

    /// The current revision.
    pub fn revision(&self) -> u64 {
        *self.revision.borrow()
    }

    /// The SHA-256 of the module the service decides with.
    pub fn module_hash(&self) -> &str {
        self.runtime.module_hash()
    }

    /// The hash of the policy being served.
    pub fn policy_hash(&self) -> String {
        self.served().schema.hash_hex()
    }

    fn served(&self) -> Arc<Served> {
        match self.served.read() {
            Ok(s) => Arc::clone(&s),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn publish(&self, next: Served) {
        let revision = next.revision;
        match self.served.write() {
            Ok(mut s) => *s = Arc::new(next),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(next),
        }
        self.revision.send_replace(revision);
    }

    /// Appends changes to the store, in one transaction, off the async workers. A failed
    /// append is read back: if these very changes are stored after all, they count as
    /// appended; if not,
    /// nothing changed. When the store cannot say, or holds something else at that
    /// revision, the service reads its state again from the store before the next write
    /// ([`Service::resync`]).
    async fn append(&self, changes: &Arc<Vec<Change>>) -> Result<(), ApiError> {
        let started = std::time::Instant::now();
        let span = tracing::info_span!("store.append", changes = changes.len());
        let appended =
            tracing::Instrument::instrument(self.store.append_all(Arc::clone(changes)), span).await;
        self.metrics.append(started.elapsed());
        if let Err(e) = appended {
            if e.kind == StoreErrorKind::Conflict {
                // Nothing was stored: another host holds the revision.
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    CONFLICT,
                    e.to_string(),
                    "another host wrote first; nothing was written: retry",
                ));
            }
            // One transaction: the last change stored means all of them are.
            let Some(last) = changes.last() else {
                return Err(ApiError::store(e, "nothing was written; retry"));
            };
            let revision = last.revision;
            let ours = last.clone();
            let read_back = self
                .store
                .changes_page(revision - 1, 1, usize::MAX)
                .await
                .map(|page| {
                    page.first()
                        .filter(|c| c.revision == revision)
                        .map(|c| same_change(c, &ours))
                });
            match read_back {
                Ok(Some(true)) => {
                    tracing::info!(
                        "the append of revision {revision} reported `{e}` but it is stored; serving it"
                    );
                }
                Ok(found) => {
                    if found.is_some() {
                        // Another change holds this revision: memory is behind the store.
                        self.needs_resync.store(true, Ordering::Release);
                    }
                    return Err(ApiError::store(e, "nothing was written; retry"));
                }
                Err(again) => {
                    // Neither stored nor known not to be: no answer either way; the state
                    // is read again from the store before the next write.
                    self.needs_resync.store(true, Ordering::Release);
                    tracing::warn!(
                        "revision {revision}: the append failed (`{e}`) and the store cannot say whether it holds it (`{again}`)"
                    );
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "store.unknown",
                        format!("{e}; reading it back: {again}"),
                        "whether this write was stored is unknown: read it back after the store recovers",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Appends a change and makes `prepared` (a snapshot built whole: a new policy)
    /// current.
    async fn commit(
        &self,
        change: Change,
        prepared: crate::runtime::Prepared,
        next: Served,
    ) -> Result<(), ApiError> {
        let change = Arc::new(change);
        self.append(&Arc::new(vec![change.as_ref().clone()]))
            .await?;
        self.runtime.install(prepared);
        self.publish(next);
        let _ = self.changes.send(change);
        Ok(())
    }

    /// Commits a group of writes ([`group_commit`]) and answers each: the checks made
    /// before judging, then every write judged in order on one instance, each on the
    /// state the ones before it leave (`writes::write` in the module, kept pending), the
    /// allowed ones appended in one transaction, and only then applied in place to the
    /// facts (under their write lock, for as long as the deltas take) and handed to the
    /// instances, each before its next call. Nothing is copied or rebuilt.
    async fn commit_writes(self: &Arc<Self>, group: Vec<QueuedWrite>) {
        let _writer = self.writer.lock().await;
        self.commit_writes_locked(group).await;
        // Other hosts' appends, if this group held them off and stored nothing.
        if let Err(e) = self.store.release_appends().await {
            tracing::warn!("letting other hosts append again: {e}");
        }
    }

    /// [`Service::commit_writes`], under the writer's lock.
    async fn commit_writes_locked(self: &Arc<Self>, group: Vec<QueuedWrite>) {
        let ready = async {
            self.resync().await?;
            if self.store.appended_elsewhere().is_some() {
                // A store other hosts append to: their appends wait while this group is
                // caught up, judged and stored, so it is judged on the latest state and
                // never loses the compare-and-set (a loss would cost the judging
                // instance, which holds the group's changes, and a reload).
                self.store
                    .hold_appends()
                    .await
                    .map_err(|e| ApiError::store(e, "nothing was written; retry"))?;
                self.catch_up().await?;
            }
            Ok::<(), ApiError>(())
        };
        if let Err(e) = ready.await {
            for w in group {
                let _ = w.reply.send(Err(e.clone()));
            }
            return;
        }
        let mut served = self.served();
        let mut ready = Vec::new();
        for w in group {
            match prepare_write(self, &served, w.body, w.authored).await {
                Ok((call, deltas, authored)) => ready.push(Ready {
                    call,
                    authored,
                    deltas,
                    reply: w.reply,
                }),
                Err(e) => {
                    let _ = w.reply.send(Err(e));
                }
            }
        }
        let mut attempts = 0;
        // Judged in order; a write that traps, or that turns out to touch an account its
        // caller may not write to, is answered and taken out, and the rest judged again
        // on a fresh instance (the ones after it were judged on a state holding it).
        let (held, judged, group) = 'judge: loop {
            let (held, judged) = loop {
                if ready.is_empty() {
                    return;
                }
                let calls = ready.iter().map(|r| r.call.clone()).collect();
                let (answers, held) = match self.runtime.write_in_order(calls).await {
                    Ok(x) => x,
                    Err((Some(i), e)) if i < ready.len() => {
                        let r = ready.remove(i);
                        let _ = r.reply.send(Err(ApiError::from(e)));
                        continue;
                    }
                    Err((_, e)) => {
                        let e = ApiError::from(e);
                        for r in ready {
                            let _ = r.reply.send(Err(e.clone()));
                        }
                        return;
                    }
                };
                match self.judged(&served, &ready, answers).map_err(|j| *j) {
                    Ok(judged) => break (held, judged),
                    Err(Judged::Fault(e)) => {
                        // The instance's state and the host's count of revisions disagree:
                        // nothing of the group is stored, and the instance is dropped.
                        self.runtime.release(held, None);
                        for r in ready {
                            let _ = r.reply.send(Err(e.clone()));
                        }
                        return;
                    }
                    Err(Judged::OutOfScope(i, e)) => {
                        self.runtime.release(held, None);
                        let r = ready.remove(i);
                        let _ = r.reply.send(Err(e));
                    }
                }
            };
            let mut revision = served.revision;
            let mut changes = Vec::new();
            for (r, verdict) in ready.iter().zip(&judged) {
                if let Ok((derived, accounts)) = verdict {
                    revision += 1;
                    let mut all = r.deltas.clone();
                    all.extend(derived.iter().cloned());
                    changes.push(Change {
                        revision,
                        author: r.authored.author.clone(),
                        at: now_seconds(),
                        deltas: all,
                        policy: None,
                        via: r.authored.via.clone(),
                        accounts: Some(accounts.clone()),
                    });
                }
            }
            let group = Arc::new(changes);
            if !group.is_empty()
                && let Err(e) = self.append(&group).await
            {
                self.runtime.release(held, None);
                // Another host took the revision: catch up, and judge the group again on
                // the state it left.
                let e = if e.data.code == CONFLICT && attempts < self.config.conflict_retries {
                    attempts += 1;
                    if attempts > 1 {
                        // Lost twice: the other hosts' appends wait while this one
                        // catches up and judges again, so it cannot lose a third time.
                        if let Err(e) = self.store.hold_appends().await {
                            tracing::warn!("holding off other hosts' appends: {e}");
                        }
                    }
                    match self.catch_up().await {
                        Ok(()) => {
                            served = self.served();
                            continue 'judge;
                        }
                        Err(caught) => caught,
                    }
                } else {
                    e
                };
                // The refusals were judged after writes that are not stored: they are
                // answered with the store's error too, to be tried again.
                for r in ready {
                    let _ = r.reply.send(Err(e.clone()));
                }
                return;
            }
            break (held, judged, group);
        };
        let revision = group.last().map_or(served.revision, |c| c.revision);
        let mut replies = Vec::new();
        let mut refused = Vec::new();
        for (r, verdict) in ready.into_iter().zip(judged) {
            match verdict {
                Ok(_) => replies.push(r.reply),
                Err(e) => refused.push((r.reply, e)),
            }
        }
        if !group.is_empty() {
            self.groups.fetch_add(1, Ordering::Relaxed);
            self.grouped.fetch_add(
                u64::try_from(group.len()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        }
        if self.apply_stored(&served, &group).await {
            self.runtime.release(held, Some(revision));
        } else {
            // The stored changes could not be applied in memory: the judging instance
            // holds them while nothing else does, so it goes, and the whole state is read
            // again from the store, which holds them.
            self.runtime.release(held, None);
            self.needs_resync.store(true, Ordering::Release);
            if let Err(e) = self.resync().await {
                tracing::warn!("reading the store again failed: {e:?}");
            }
        }
        for change in group.iter() {
            let _ = self.changes.send(Arc::new(change.clone()));
        }
        for (reply, change) in replies.into_iter().zip(group.iter()) {
            let _ = reply.send(answer(schemas::Written {
                allowed: true,
                revision: change.revision,
            }));
        }
        for (reply, e) in refused {
            let _ = reply.send(Err(e));
        }
    }

    /// Reads the module's answers to a group judged in order: for each write, its derived
    /// tuples and the accounts it touches when allowed, its refusal when not. The accounts
    /// are those of the entities it names on the facts served, or created by the allowed
    /// writes before it; a write that touches one its caller may not write to is
    /// [`Judged::OutOfScope`].
    fn judged(
        &self,
        served: &Served,
        ready: &[Ready],
        answers: Vec<Result<Value, HostError>>,
    ) -> Result<Vec<Result<Allowed, ApiError>>, Box<Judged>> {
        let facts = served.facts.read();
        let mut created = HashMap::new();
        let mut revision = served.revision;
        let mut out = Vec::with_capacity(ready.len());
        for (i, (r, answer)) in ready.iter().zip(answers).enumerate() {
            let derived = match answer {
                Ok(a) => verdict(&a, revision + 1).map_err(|e| Box::new(Judged::Fault(e)))?,
                Err(e) => Err(ApiError::from(e)),
            };
            let Ok(derived) = derived else {
                out.push(derived.map(|d| (d, Vec::new())));
                continue;
            };
            // The tuples the policy derives on creation are of the created entity's
            // account, so the deltas asked for name every account the change touches.
            let accounts = touched_accounts(&facts, &created, &r.deltas);
            if let Some(mine) = &r.authored.accounts
                && let Some(other) = accounts.iter().find(|a| !mine.contains(a))
            {
                return Err(Box::new(Judged::OutOfScope(
                    i,
                    forbidden(format!(
                        "the write touches `{other}`, which is not an account of this caller; nothing was written"
                    )),
                )));
            }
            created.extend(created_accounts(&r.deltas));
            revision += 1;
            out.push(Ok((derived, accounts)));
        }
        Ok(out)
    }

    /// Applies stored changes of facts in place, off the async workers: to the facts,
    /// then to the instances (each before its next call); then serves them. False when the
    /// facts refused one (they are then not to be trusted: the caller reads the store
    /// again).
    async fn apply_stored(self: &Arc<Self>, served: &Served, group: &Arc<Vec<Change>>) -> bool {
        let Some(last) = group.last() else {
            return true;
        };
        let (facts, changes) = (Arc::clone(&served.facts), Arc::clone(group));
        let applied = tokio::task::spawn_blocking(move || {
            // The tuples that entities removed take with them are found while others read;
            // the write lock is then held only for what the changes change.
            let lists = || changes.iter().map(|c| c.deltas.as_slice());
            let mut found = facts.read().removals(lists());
            let mut facts = facts.write();
            if found.revision() != facts.revision {
                found = facts.removals(lists());
            }
            for change in changes.iter() {
                facts
                    .extend_found(&change.deltas, &mut found)
                    .map_err(|e| format!("revision {}: {e}", change.revision))?;
                facts.revision = change.revision;
            }
            Ok::<(), String>(())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        if let Err(e) = applied {
            tracing::warn!(
                "the facts refused a stored change the module took ({e}); reading the store again"
            );
            return false;
        }
        for change in group.iter() {
            let call = Call::ApplyDeltas {
                deltas: change.deltas.clone(),
            }
            .to_json();
            match call {
                Ok(call) => self.runtime.push_change(change.revision, call),
                Err(e) => {
                    // Not expected (the deltas were read from JSON); the instances are
                    // given the whole state again instead.
                    tracing::warn!("revision {}: {e:?}", change.revision);
                    return false;
                }
            }
        }
        self.publish(Served {
            revision: last.revision,
            schema: Arc::clone(&served.schema),
            sources: Arc::clone(&served.sources),
            facts: Arc::clone(&served.facts),
        });
        true
    }

    /// Serves the changes other hosts (or processes) appended after the revision served,
    /// in order, applied in place as this host's own writes are, and hands them to the
    /// change feeds. A policy change among them is served by reading the state again.
    /// Called under the writer's lock.
    async fn catch_up(self: &Arc<Self>) -> Result<(), ApiError> {
        loop {
            let served = self.served();
            let page = self
                .store
                .changes_page(
                    served.revision,
                    self.config.feed_page,
                    self.config.feed_page_bytes,
                )
                .await
                .map_err(|e| ApiError::store(e, "nothing was written; retry"))?;
            let Some(first) = page.first() else {
                return Ok(());
            };
            let facts_only: Vec<Change> = page
                .iter()
                .take_while(|c| c.policy.is_none())
                .cloned()
                .collect();
            if first.revision != served.revision + 1 || facts_only.is_empty() {
                // A policy change (or changes this host cannot apply in place): the whole
                // state is read again; followers of the feed page what they missed.
                self.needs_resync.store(true, Ordering::Release);
                self.resync().await?;
                let _ = self.changes.send(Arc::new(first.clone()));
                continue;
            }
            let group = Arc::new(facts_only);
            if !self.apply_stored(&served, &group).await {
                self.needs_resync.store(true, Ordering::Release);
                self.resync().await?;
                continue;
            }
            for change in group.iter() {
                let _ = self.changes.send(Arc::new(change.clone()));
            }
        }
    }

    /// Notes what the store answered the follower, for `/readyz`.
    fn note_store(&self, answered: &Result<u64, StoreError>) {
        let mut h = self
            .store_health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match answered {
            Ok(last) => {
                h.answered = Some((std::time::Instant::now(), *last));
                h.failing = false;
            }
            Err(_) => h.failing = true,
        }
    }

    /// The metrics' text: the counters kept, and what the host holds now.
    pub fn metrics_text(&self) -> Result<String, std::fmt::Error> {
        let served = self.served();
        let stats = self.runtime.stats();
        let store_revision = self
            .store_health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .answered
            .map_or(0, |(_, r)| r);
        let revision = self.revision();
        let (mut lag_max, mut lagging) = (0, 0);
        for mark in self
            .feed_marks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
        {
            let lag = revision.saturating_sub(mark.load(Ordering::Relaxed));
            lag_max = lag_max.max(lag);
            lagging += u64::from(lag > 0);
        }
        let now = crate::observe::Now {
            module_hash: self.runtime.module_hash().to_string(),
            policy_hash: served.schema.hash_hex(),
            revision,
            store_revision,
            ready: self.readiness().is_ok(),
            subscribers: u64::try_from(self.subscribers.load(Ordering::Acquire))
                .unwrap_or(u64::MAX),
            feed_lag_max: lag_max,
            feed_lagging: lagging,
            traps: stats.traps.load(Ordering::Relaxed),
            instances_created: stats.instances_created.load(Ordering::Relaxed),
            busy: stats.busy.load(Ordering::Relaxed),
        };
        self.metrics.render(&now)
    }

    /// Completes once the host is shutting down.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closing.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }

    /// Whether the host is ready to serve, from what it holds (never waiting on a write
    /// or the store): `Err` says why not.
    pub fn readiness(&self) -> Result<schemas::Ready, String> {
        let revision = self.revision();
        if self.runtime.revision().is_none() {
            return Err("no snapshot is loaded".into());
        }
        let h = self
            .store_health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let every = if self.config.follow_interval.is_zero() {
            Duration::from_secs(1)
        } else {
            self.config.follow_interval
        };
        // The follower asks every `every`; three missed answers mean the store is not
        // answering.
        let stale = every.saturating_mul(3).max(Duration::from_secs(2));
        let Some((at, store_revision)) = h.answered else {
            return Err("the store has not answered yet".into());
        };
        let since = at.elapsed();
        // `/readyz` answers anyone: the store's error itself stays in the host's log.
        if h.failing && since > stale {
            return Err(format!(
                "the store has not answered for {} ms (its error is in the host's log)",
                since.as_millis()
            ));
        }
        let lag = store_revision.saturating_sub(revision);
        if lag > self.config.ready_lag {
            return Err(format!(
                "the host is {lag} revisions behind the store (the bound is {})",
                self.config.ready_lag
            ));
        }
        Ok(schemas::Ready {
            ready: true,
            behind: lag,
            store_answered_ms_ago: u64::try_from(since.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Ends every change-feed stream (each gets an `error` event `host.shutdown`), so
    /// that their connections close while the server drains; for a graceful shutdown.
    pub fn shut_down(&self) {
        self.closing.send_replace(true);
    }

    /// Wakes the follower now, as when a caller asks for a revision this host has not
    /// served yet.
    fn follow_now(&self) {
        self.follow_soon.notify_one();
    }

    /// Reads the served state again from the store (after an append whose outcome was
    /// unknown), under the writer's lock. Followers page the changes they missed.
    async fn resync(&self) -> Result<(), ApiError> {
        if !self.needs_resync.load(Ordering::Acquire) {
            return Ok(());
        }
        let sources = self.served().sources.as_ref().clone();
        let latest = self
            .store
            .latest(None)
            .await
            .map_err(|e| ApiError::store(e, "nothing was written; retry"))?;
        let ((served, snapshot, _, _), adopted) = blocking(move || {
            replay_with(latest, sources, false, &|_| {}).map_err(|m| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store.failed",
                    m,
                    "nothing was written; retry",
                )
            })
        })
        .await?;
        if let Some(change) = adopted {
            // Only a store that kept no policy adopts one here, and a started service
            // has stored its own.
            self.store
                .append(change)
                .await
                .map_err(|e| ApiError::store(e, "nothing was written; retry"))?;
        }
        let bytes = blocking(move || {
            snapshot
                .to_bytes()
                .map_err(|e| ApiError::internal(e.to_string()))
        })
        .await?;
        let prepared = self.runtime.prepare(bytes).await?;
        self.runtime.install(prepared);
        tracing::info!(
            "read the state again from the store: revision {}",
            served.revision
        );
        self.publish(served);
        self.needs_resync.store(false, Ordering::Release);
        Ok(())
    }
}

/// Whether a stored change is this one.
fn same_change(stored: &Change, ours: &Change) -> bool {
    stored.revision == ours.revision
        && stored.author == ours.author
        && stored.at == ours.at
        && stored.policy == ours.policy
        && serde_json::to_string(&stored.deltas).ok() == serde_json::to_string(&ours.deltas).ok()
}

/// What start-up serves: the state, its snapshot, the base revision, and the
/// revision recovery began from with the changes applied after it.
type Started = (Served, Snapshot, u64, (u64, u64));

/// A snapshot loaded into the module early: its revision and policy hash, prepared.
type Early = (u64, [u8; 32], crate::runtime::Prepared);

/// Recovers what a store holds (`latest`: its latest checkpoint and the changes after
/// it, or the base and every change), handing the snapshot carried from a checkpoint to
/// `carried` as soon as it is ready ([`crate::checkpoint::recover_with`]); then applies
/// the start rule for the policy files. Returns what to serve, its snapshot, the base
/// revision, the revision recovery began from with the changes applied after it, and the
/// change adopting the policy files, for the caller to store before serving. Blocking.
fn replay_with(
    latest: crate::store::Latest,
    files: Vec<Source>,
    adopt: bool,
    carried: &(dyn Fn(&Snapshot) + Sync),
) -> Result<(Started, Option<Change>), String> {
    let recovered = crate::checkpoint::recover_with(latest, carried)?;
    let mut adopted = None;
    let base_revision = recovered.base_revision;
    let started_from = (
        recovered.from,
        u64::try_from(recovered.replayed).unwrap_or(u64::MAX),
    );
    let carried = recovered.snapshot;
    let policy = recovered.policy;
    let schema = recovered.schema;
    let mut facts = recovered.facts;
    let file_policy = stored_policy(&files).map_err(|e| format!("the policy files: {e}"))?;
    let differs = policy.as_ref().is_none_or(|p| p.hash != file_policy.hash);
    let (schema, sources) = match (schema, policy) {
        (Some(schema), Some(p)) if !differs || !adopt => {
            if differs {
                tracing::warn!(
                    "the policy files (hash {}) differ from the stored policy (hash {}); serving the stored policy. Start with --adopt-policy to adopt the files, or reload them through the API",
                    file_policy.hash,
                    p.hash
                );
            }
            (schema, p.sources)
        }
        (stored_schema, _) => {
            // Adopt the files: every stored fact must hold under them first.
            let schema = Arc::new(Schema::compile(&files).map_err(|e| e.to_string())?);
            Snapshot::build(Arc::clone(&schema), &facts)
                .map_err(|e| format!("the stored facts do not hold under the policy files: {e}"))?;
            facts.revision += 1;
            let change = Change {
                revision: facts.revision,
                author: "host:start".into(),
                at: now_seconds(),
                deltas: Vec::new(),
                policy: Some(file_policy.clone()),
                via: None,
                accounts: Some(Vec::new()),
            };
            adopted = Some(change);
            tracing::info!(
                "adopted the policy files (hash {}) at revision {}{}",
                file_policy.hash,
                facts.revision,
                if stored_schema.is_some() {
                    " (--adopt-policy)"
                } else {
                    " (the store kept no policy)"
                }
            );
            (schema, files)
        }
    };
    // The snapshot carried from a checkpoint, when it is of the policy served.
    let snapshot =
        match carried.filter(|c| c.schema.hash == schema.hash && c.revision == facts.revision) {
            Some(c) => c,
            None => Snapshot::build(Arc::clone(&schema), &facts).map_err(|e| e.to_string())?,
        };
    Ok((
        (
            Served {
                revision: facts.revision,
                schema,
                sources: Arc::new(sources),
                facts: LiveFacts::new(facts),
            },
            snapshot,
            base_revision,
            started_from,
        ),
        adopted,
    ))
}

/// Follows the changes other hosts (or processes) append to a shared store, for as long
/// as the service lives: on the store's signal, when asked ([`Service::follow_now`]), and
/// every `follow_interval` besides, it asks the store for its last revision and, when
/// that is past the one served, catches up under the writer's lock.
async fn follow(
    service: std::sync::Weak<Service>,
    signal: Option<Arc<tokio::sync::Notify>>,
    soon: Arc<tokio::sync::Notify>,
) {
    let mut failing = false;
    loop {
        let Some(every) = service.upgrade().map(|s| s.config.follow_interval) else {
            return;
        };
        let every = if every.is_zero() {
            Duration::from_secs(1)
        } else {
            every
        };
        let tick = tokio::time::sleep(every);
        let signalled = async {
            match &signal {
                Some(n) => n.notified().await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = tick => {}
            () = signalled => {}
            () = soon.notified() => {}
        }
        let Some(s) = service.upgrade() else { return };
        let answered = s.store.last_revision().await;
        s.note_store(&answered);
        let last = match answered {
            Ok(last) => {
                if failing {
                    tracing::info!("the store answers again ({})", s.store.describe());
                    failing = false;
                }
                last
            }
            Err(e) => {
                if !failing {
                    tracing::warn!("following the store: {e}");
                    failing = true;
                }
                continue;
            }
        };
        if last <= s.revision() {
            continue;
        }
        let _writer = s.writer.lock().await;
        if let Err(e) = s.catch_up().await {
            tracing::warn!("catching up with the store: {e:?}");
        }
    }
}

/// Writes checkpoints for as long as the service lives: once `checkpoint_changes`
/// changes follow the last one, or `checkpoint_interval` has passed with a change since,
/// or at once after a policy change; never two within `checkpoint_gap`.
async fn checkpoints(
    service: std::sync::Weak<Service>,
    mut last: u64,
    soon: Arc<tokio::sync::Notify>,
) {
    let Some(mut revision) = service.upgrade().map(|s| s.revision.subscribe()) else {
        return;
    };
    let mut since = tokio::time::Instant::now();
    let mut urgent = false;
    loop {
        let (every, interval, gap) = match service.upgrade() {
            Some(s) => (
                s.config.checkpoint_changes,
                s.config.checkpoint_interval,
                s.config.checkpoint_gap,
            ),
            None => return,
        };
        let current = *revision.borrow_and_update();
        let enabled = every > 0 || !interval.is_zero();
        let due = enabled
            && current > last
            && (urgent
                || (every > 0 && current - last >= every)
                || (!interval.is_zero() && since.elapsed() >= interval));
        if due && since.elapsed() >= gap {
            let Some(s) = service.upgrade() else { return };
            match s.checkpoint().await {
                Ok(Some(w)) => last = w.revision,
                Ok(None) => last = current,
                Err(e) => tracing::warn!("writing a checkpoint at revision {current}: {e}"),
            }
            drop(s);
            since = tokio::time::Instant::now();
            urgent = false;
            continue;
        }
        // Wait for a change, a policy change, the interval, or the end of the gap.
        let wake = if due {
            gap.saturating_sub(since.elapsed())
        } else if interval.is_zero() {
            Duration::from_secs(3600)
        } else {
            interval
                .saturating_sub(since.elapsed())
                .max(Duration::from_millis(10))
        };
        tokio::select! {
            changed = revision.changed() => if changed.is_err() { return },
            () = soon.notified() => urgent = true,
            () = tokio::time::sleep(wake) => {}
        }
    }
}

/// The router of the API: every route of [`ROUTES`] this service serves, those that need
/// a credential behind [`authenticated`]; the body limit, and the API's error shape for
/// unknown routes and methods.
pub fn router(service: Arc<Service>) -> Router {
    let limit = service.config.body_limit;
    let deployment = service.deployment();
    let not_found = || async {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "route.unknown",
            "no such route",
            "see /v1/openapi.json",
        )
    };
    let mut routes = Router::new();
    for route in ROUTES.iter().filter(|r| r.is_served(deployment)) {
        let handler = (route.handler)(route.method.filter());
        let handler = match route.callers {
            Callers::Anyone => handler,
            Callers::Authenticated => handler.route_layer(axum::middleware::from_fn_with_state(
                Arc::clone(&service),
                authenticated,
            )),
        };
        routes = routes.route(route.path, handler);
    }
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "route.method",
                "this route does not take that method",
                "see /v1/openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(limit, declared_length))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&service),
            observe_request,
        ))
        .with_state(service)
}

/// Counts and logs each request: its route (as the table names it), method, status,
/// duration, caller, the revision served and, for a decision, what was decided.
async fn observe_request(
    State(s): S,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = std::time::Instant::now();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = req.method().clone();
    let span = tracing::info_span!("request", route = %route, method = %method);
    let (response, note) =
        tracing::Instrument::instrument(crate::observe::noted(next.run(req)), span).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    s.metrics.request(&route, method.as_str(), status, took);
    tracing::info!(
        target: "clearance::request",
        route,
        method = method.as_str(),
        status,
        duration_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        principal = note.principal.as_deref(),
        revision = s.revision(),
        decision = note.decision.as_deref(),
        "request"
    );
    response
}

impl Service {
    /// What this service serves: whether a rate limit is set and the demo issuer runs.
    pub fn deployment(&self) -> Deployment {
        Deployment {
            rate_limited: self.config.rate_limit.is_some()
                || self.config.work_limit.is_some()
                || self.config.auth_failure_limit.is_some(),
            demo: self.config.demo.is_some(),
        }
    }

    /// The OpenAPI document of the routes this service serves.
    pub fn document(&self) -> Value {
        crate::openapi::document(ROUTES, self.deployment())
    }
}

/// `{principal}`: the user a demo token is for.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct DemoTokenBody {
    /// The principal, `user:<id>`.
    principal: String,
}

/// The demo issuer (`serve --demo` only): a token for a principal of the facts, valid
/// for an hour, signed by a key made at start-up and verified like any other.
async fn demo_token(State(s): S, ApiJson(body): ApiJson<DemoTokenBody>) -> ApiResult {
    let Some(issuer) = &s.config.demo else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "route.unknown",
            "no demo issuer runs here",
            "",
        ));
    };
    let served = s.served();
    let principal = body.principal;
    let is_principal = served
        .facts
        .read()
        .entities
        .get(&principal)
        .is_some_and(|e| {
            served
                .schema
                .type_id(&e.ty)
                .and_then(|t| served.schema.ty(t))
                .is_some_and(|t| t.principal)
        });
    if !is_principal {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "entity.unknown",
            format!("no principal `{principal}`"),
            "name a principal of the demo data, as `type:id`",
        ));
    }
    let now = now_seconds();
    let ttl = 3600;
    let token = issuer
        .token(&principal, now, ttl)
        .map_err(ApiError::internal)?;
    answer(schemas::DemoToken {
        token,
        principal,
        expires: now + ttl,
    })
}

/// Refuses a body whose declared length is past the limit before reading any of it (a
/// body without a declared length is cut at the limit as it is read).
async fn declared_length(
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
        Some(n) if n > limit as u64 => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request.too_large",
            format!("the body is {n} bytes; the limit is {limit}"),
            "send less; nothing was written",
        )
        .into_response(),
        _ => next.run(req).await,
    }
}

type S = State<Arc<Service>>;

/// Waits briefly for `min_revision`, or fails clearly.
async fn at_least(s: &Service, body: &mut Value) -> Result<(), ApiError> {
    let Some(min) = body.as_object_mut().and_then(|o| o.remove("min_revision")) else {
        return Ok(());
    };
    let min = min.as_u64().ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "request.invalid",
            "`min_revision` must be a revision number",
            "",
        )
    })?;
    if min > s.revision() {
        s.follow_now();
    }
    let mut rx = s.revision.subscribe();
    let wait = tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|r| *r >= min)).await;
    match wait {
        Ok(Ok(_)) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "revision.unavailable",
            format!("revision {min} is not here yet (current {})", s.revision()),
            "retry later, or ask without `min_revision`",
        )),
    }
}

/// The body read as the typed fields of a call.
fn typed<T: DeserializeOwned>(body: Value) -> Result<T, ApiError> {
    serde_json::from_value(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "request.malformed",
            format!("malformed request: {e}"),
            "see /v1/openapi.json",
        )
    })
}

async fn op(s: &Service, call: Call) -> ApiResult {
    let name = call.op().spec().map_or("unknown", |spec| spec.name);
    let started = std::time::Instant::now();
    let span = tracing::info_span!("module", op = name);
    let answer = tracing::Instrument::instrument(decide(s, call), span).await;
    s.metrics.op(name, started.elapsed());
    let answer = answer?;
    if matches!(name, "check" | "check_batch" | "explain") {
        s.metrics.decisions(name, &answer);
        crate::observe::note(|n| n.decision = crate::observe::decision_note(&answer));
    }
    Ok(Json(answer))
}

/// The most requests of a batch decided in one call: a larger batch is decided a chunk at
/// a time, each chunk waiting for an instance as a single check does, so that another
/// caller's check waits for a chunk at most, never for a whole batch.
const BATCH_CHUNK: usize = 256;

/// Runs `call` on the instances; a batch of more than [`BATCH_CHUNK`] requests a chunk at
/// a time, each chunk decided at the latest revision when it runs.
async fn decide(s: &Service, call: Call) -> Result<Value, HostError> {
    let requests = match call {
        Call::CheckBatch { requests } if requests.len() > BATCH_CHUNK => requests,
        call => return s.runtime.run(&call).await,
    };
    let mut views = Vec::with_capacity(requests.len());
    let mut rest = requests.into_iter();
    loop {
        let chunk: Vec<Request> = rest.by_ref().take(BATCH_CHUNK).collect();
        if chunk.is_empty() {
            return Ok(Value::Array(views));
        }
        match s.runtime.run(&Call::CheckBatch { requests: chunk }).await? {
            Value::Array(part) => views.extend(part),
            _ => return Err(HostError::Protocol("a batch's answer is not a list".into())),
        }
    }
}

/// `{requests: [...]}`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    /// The requests, decided in order.
    #[schemars(with = "Vec<ServerClock<Request>>")]
    requests: Vec<Request>,
}

/// `{principal, resource, now}`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ActionsBody {
    /// The principal, `type:id`.
    principal: String,
    /// The resource, `type:id`, or a page `matrix:row`.
    resource: String,
    /// The time of the request.
    now: TimeValue,
}

/// `{principal, action, type, now}`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ResourcesBody {
    /// The principal, `type:id`.
    principal: String,
    /// The action.
    action: String,
    /// The entity type, or a matrix (its rows are listed).
    #[serde(rename = "type")]
    ty: String,
    /// The time of the request.
    now: TimeValue,
}

/// `{resource, action, now, account?}`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PrincipalsBody {
    /// The resource, `type:id`, or a page `matrix:row`.
    resource: String,
    /// The action.
    action: String,
    /// The time of the request.
    now: TimeValue,
    /// For a page: only this account's principals.
    account: Option<String>,
}

async fn revision(State(s): S, _caller: Caller) -> ApiResult {
    let served = s.served();
    answer(schemas::Revision {
        revision: served.revision,
        policy_hash: served.schema.hash_hex(),
        module_hash: s.runtime.module_hash().to_string(),
    })
}

async fn metrics(State(s): S, caller: Caller) -> Result<Response, ApiError> {
    admin_only(&caller)?;
    metrics_answer(&s)
}

/// The metrics as `/metrics` answers them.
fn metrics_answer(s: &Service) -> Result<Response, ApiError> {
    let text = s
        .metrics_text()
        .map_err(|e| ApiError::internal(format!("writing the metrics: {e}")))?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            crate::observe::CONTENT_TYPE,
        )],
        text,
    )
        .into_response())
}

/// A router of `/metrics` alone, without credentials, for a listener of its own that only
/// the operator's network reaches (`metrics_addr`).
pub fn metrics_router(service: Arc<Service>) -> Router {
    Router::new()
        .route(
            "/metrics",
            axum::routing::get(|State(s): S| async move { metrics_answer(&s) }),
        )
        .with_state(service)
}

async fn healthz(State(_s): S) -> ApiResult {
    answer(schemas::Alive { alive: true })
}

async fn readyz(State(s): S) -> ApiResult {
    match s.readiness() {
        Ok(ready) => answer(ready),
        Err(why) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "host.not_ready",
            why,
            "wait, or send traffic to another host",
        )),
    }
}

/// An answer of the host's own, as JSON.
fn answer<T: serde::Serialize>(value: T) -> ApiResult {
    serde_json::to_value(value)
        .map(Json)
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// The checks every decision route makes before deciding: the caller may decide for the
/// body's principal, and a user's `now` is the server's.
fn gate_decision(s: &Service, caller: &Caller, body: &mut Value) -> Result<(), ApiError> {
    let served = s.served();
    Access {
        caller,
        served: &served,
    }
    .decide_for(&principal_of(body)?)?;
    server_clock(caller, body, s.clock())
}

async fn check(State(s): S, caller: Caller, ApiJson(mut body): ApiJson<Value>) -> ApiResult {
    gate_decision(&s, &caller, &mut body)?;
    at_least(&s, &mut body).await?;
    op(
        &s,
        Call::Check {
            request: typed(body)?,
        },
    )
    .await
}

async fn check_batch(
    State(s): S,
    caller: Caller,
    ApiJson(mut body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    at_least(&s, &mut body).await?;
    let n = body
        .get("requests")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if n > s.config.max_batch {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request.too_many",
            format!(
                "{n} requests in one batch; the limit is {}",
                s.config.max_batch
            ),
            "split the batch",
        ));
    }
    s.charge(&caller, n, || format!("a batch of {n} requests"))?;
    let read = {
        let (s, caller) = (Arc::clone(&s), caller.clone());
        move || {
            if let Some(list) = body.get_mut("requests").and_then(Value::as_array_mut) {
                for r in list.iter_mut() {
                    gate_decision(&s, &caller, r)?;
                }
            }
            let BatchBody { requests } = typed(body)?;
            Ok(requests)
        }
    };
    if n <= BATCH_CHUNK {
        let requests = read()?;
        let Json(answer) = op(&s, Call::CheckBatch { requests }).await?;
        return Ok(Json(answer).into_response());
    }
    // A large batch is read, decided and its answer written in one of its caller's turns,
    // and off the async workers, which serve every other caller's requests meanwhile.
    let _turn = s.runtime.turn(&caller.name()).await?;
    let requests = blocking(read).await?;
    let Json(answer) = op(&s, Call::CheckBatch { requests }).await?;
    let text = blocking(move || {
        serde_json::to_vec(&answer).map_err(|e| ApiError::internal(e.to_string()))
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], text).into_response())
}

async fn allowed_actions(
    State(s): S,
    caller: Caller,
    ApiJson(mut body): ApiJson<Value>,
) -> ApiResult {
    gate_decision(&s, &caller, &mut body)?;
    at_least(&s, &mut body).await?;
    let ActionsBody {
        principal,
        resource,
        now,
    } = typed(body)?;
    op(
        &s,
        Call::AllowedActions {
            principal,
            resource,
            now,
        },
    )
    .await
}

async fn resources(State(s): S, caller: Caller, ApiJson(mut body): ApiJson<Value>) -> ApiResult {
    gate_decision(&s, &caller, &mut body)?;
    at_least(&s, &mut body).await?;
    let ResourcesBody {
        principal,
        action,
        ty,
        now,
    } = typed(body)?;
    // A list is as long as the account is large: it takes one of its caller's turns.
    let _turn = s.runtime.turn(&caller.name()).await?;
    op(
        &s,
        Call::ListResources {
            principal,
            action,
            ty,
            now,
        },
    )
    .await
}

async fn principals(State(s): S, caller: Caller, ApiJson(mut body): ApiJson<Value>) -> ApiResult {
    at_least(&s, &mut body).await?;
    let PrincipalsBody {
        resource,
        action,
        now,
        account,
    } = typed(body)?;
    // Who may do something names other principals: keys only, for the resource's account.
    {
        let served = s.served();
        let access = Access {
            caller: &caller,
            served: &served,
        };
        let of = access
            .account_of(&resource)
            .or_else(|| account.as_deref().map(account_key));
        access.read_account(of.as_deref(), false)?;
    }
    let _turn = s.runtime.turn(&caller.name()).await?;
    op(
        &s,
        Call::ListPrincipals {
            resource,
            action,
            now,
            account,
        },
    )
    .await
}

async fn explain(State(s): S, caller: Caller, ApiJson(mut body): ApiJson<Value>) -> ApiResult {
    gate_decision(&s, &caller, &mut body)?;
    at_least(&s, &mut body).await?;
    op(
        &s,
        Call::Explain {
            request: typed(body)?,
        },
    )
    .await
}

/// `?account=`.
#[derive(Deserialize, JsonSchema)]
struct AccountQuery {
    /// An account's id: only its data.
    account: Option<String>,
}

async fn matrix(
    State(s): S,
    caller: Caller,
    ApiPath(matrix): ApiPath<String>,
    ApiQuery(q): ApiQuery<AccountQuery>,
) -> ApiResult {
    {
        let served = s.served();
        Access {
            caller: &caller,
            served: &served,
        }
        .read_account(q.account.as_deref().map(account_key).as_deref(), true)
        .or_else(|e| if caller.is_admin() { Ok(()) } else { Err(e) })?;
    }
    user_gates(&s, &caller).await?;
    op(
        &s,
        Call::Matrix {
            matrix,
            account: q.account,
        },
    )
    .await
}

async fn facts(State(s): S, caller: Caller, ApiQuery(q): ApiQuery<AccountQuery>) -> ApiResult {
    let served = s.served();
    let account = q.account.as_deref().map(account_key);
    if !(caller.is_admin() && account.is_none()) {
        if !matches!(
            caller,
            Caller::Key {
                scope: Scope::Admin | Scope::Service,
                ..
            }
        ) {
            return Err(forbidden(
                "the facts are read with an admin or service key; a user reads its slice",
            ));
        }
        Access {
            caller: &caller,
            served: &served,
        }
        .read_account(account.as_deref(), false)?;
    }
    blocking(move || {
        let facts = served.facts.read();
        let facts = match account {
            None => facts.to_doc(),
            Some(a) => account_facts(&facts, &a),
        };
        serde_json::to_value(facts)
            .map(Json)
            .map_err(|e| ApiError::internal(e.to_string()))
    })
    .await
}

/// The facts of one account (`account:<id>`): its entities and the tuples on them.
fn account_facts(facts: &Facts, account: &str) -> FactsJson {
    let revision = facts.revision;
    let doc = facts.to_doc();
    let entities: Vec<_> = doc
        .entities
        .into_iter()
        .filter(|e| account_key(e.account.as_deref().unwrap_or(&e.id)) == account)
        .collect();
    let keys: std::collections::BTreeSet<String> = entities
        .iter()
        .map(|e| clearance_core::facts::entity_key(&e.ty, &e.id))
        .collect();
    let tuples = doc
        .tuples
        .into_iter()
        .filter(|t| keys.contains(&t.resource))
        .collect();
    FactsJson {
        revision,
        entities,
        tuples,
        omitted: Default::default(),
        counts: Vec::new(),
    }
}

/// A write: who makes it, the deltas, when, and optionally the parity token of the
/// client-side decision it relied on.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct WriteBody {
    /// Who the write is by: a user token's own principal (which it may leave out), or
    /// the principal a key writes on behalf of.
    author: Option<String>,
    /// The changes, applied all or nothing.
    deltas: Vec<Delta>,
    /// When the write is made: only an admin key importing facts sets it.
    now: Option<TimeValue>,
    /// The client-side decision the write relied on.
    parity: Option<ParityToken>,
}

/// What a client-side decision was made on.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ParityToken {
    /// The module that decided (hex SHA-256).
    module_hash: String,
    /// The policy it decided with (hex SHA-256).
    policy_hash: String,
    /// The revision it decided at.
    revision: u64,
    /// The client-side decision itself: the request and its outcome. When the token is
    /// from an older revision, the host decides the request again and refuses the write if
    /// the outcome has changed since.
    request: Option<Request>,
    /// The client-side decision's outcome.
    allowed: Option<bool>,
}

/// A write's author and how it was made, once the caller may make it.
struct Authored {
    author: String,
    /// A user's write: its parity decision is made again at the server's clock.
    user: bool,
    via: Option<String>,
    /// The accounts a key may write to; `None` for an admin (every account).
    accounts: Option<Vec<String>>,
}

fn authorise_write(s: &Service, caller: &Caller, body: &WriteBody) -> Result<Authored, ApiError> {
    if body.deltas.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "request.empty",
            "a write with no deltas changes nothing",
            "nothing was written",
        ));
    }
    if body.deltas.len() > s.config.max_deltas {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request.too_many",
            format!(
                "{} deltas in one write; the limit is {}",
                body.deltas.len(),
                s.config.max_deltas
            ),
            "split the write; nothing was written",
        ));
    }
    let served = s.served();
    let access = Access {
        caller,
        served: &served,
    };
    // The parity token's decision is decided again: only for a principal the caller may
    // decide for, or a write would answer whether another principal is allowed.
    if let Some(request) = body.parity.as_ref().and_then(|p| p.request.as_ref()) {
        access.decide_for(&request.principal)?;
    }
    match caller {
        Caller::User { principal } => {
            if body.now.is_some() {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "request.now_not_allowed",
                    "a write is checked at the server's clock: leave `now` out",
                    "only an admin key importing facts may set `now`; nothing was written",
                ));
            }
            match &body.author {
                Some(a) if a != principal => Err(forbidden(format!(
                    "a user token writes only as itself (`{principal}`), not as `{a}`; nothing was written"
                ))),
                _ => Ok(Authored {
                    author: principal.clone(),
                    user: true,
                    via: None,
                    accounts: access.account_of(principal).map(|a| vec![a]),
                }),
            }
        }
        Caller::Key {
            id,
            scope,
            accounts,
        } => {
            let author = body.author.clone().ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "request.malformed",
                    "a write with a key names its `author`, the principal it is made for",
                    "nothing was written",
                )
            })?;
            match scope {
                Scope::Admin => Ok(Authored {
                    user: false,
                    via: Some(match &body.now {
                        Some(now) => format!("key:{id} import at {}", json!(now)),
                        None => format!("key:{id}"),
                    }),
                    author,
                    accounts: None,
                }),
                Scope::Service if body.now.is_none() => {
                    access.decide_for(&author)?;
                    Ok(Authored {
                        author,
                        user: false,
                        via: Some(format!("key:{id}")),
                        accounts: Some(accounts.clone()),
                    })
                }
                Scope::Service => Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "request.now_not_allowed",
                    "a write is checked at the server's clock: leave `now` out",
                    "only an admin key importing facts may set `now`; nothing was written",
                )),
                Scope::Read => Err(forbidden("a read key decides only; it cannot write")),
            }
        }
    }
}

/// Quotas on the entities writes create: any user may create some (a guest record, an
/// event), so the number an author, and an account, creates an hour is bounded. A write's
/// creations are taken from both budgets while it is judged and given back if it is not
/// stored, so refused writes cannot use up an account's budget.
struct Creations {
    per_author: Option<Buckets>,
    per_account: Option<Buckets>,
}

/// Token buckets by key: each holds up to `per_hour` and refills at that rate.
struct Buckets {
    per_hour: f64,
    held: std::sync::Mutex<HashMap<String, (f64, std::time::Instant)>>,
}

/// The most keys a quota remembers; past it, buckets refilled to the full are dropped
/// first (a full bucket is the same as none).
const MAX_BUCKETS: usize = 100_000;

impl Buckets {
    fn new(per_hour: std::num::NonZeroU32) -> Buckets {
        Buckets {
            per_hour: f64::from(per_hour.get()),
            held: std::sync::Mutex::default(),
        }
    }

    /// Takes `n` from `key`'s bucket, or says how long until it holds `n` (`None`: never,
    /// `n` is more than a bucket holds).
    fn take(&self, key: &str, n: f64) -> Result<(), Option<Duration>> {
        if n > self.per_hour {
            return Err(None);
        }
        let now = std::time::Instant::now();
        let rate = self.per_hour / 3600.0;
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if held.len() >= MAX_BUCKETS && !held.contains_key(key) {
            let full = self.per_hour;
            held.retain(|_, (level, at)| *level + at.elapsed().as_secs_f64() * rate < full);
        }
        let (level, at) = held.entry(key.to_string()).or_insert((self.per_hour, now));
        *level = (*level + now.duration_since(*at).as_secs_f64() * rate).min(self.per_hour);
        *at = now;
        if *level < n {
            return Err(Some(Duration::from_secs_f64((n - *level) / rate)));
        }
        *level -= n;
        Ok(())
    }

    /// Gives `n` back to `key`'s bucket.
    fn give_back(&self, key: &str, n: f64) {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((level, _)) = held.get_mut(key) {
            *level = (*level + n).min(self.per_hour);
        }
    }
}

/// A write's creations, taken from its quotas: given back when dropped unless kept. It
/// travels with the write to the writer ([`Reply`]), so that a client hanging up cannot
/// take back what a stored write took.
struct Charge {
    creations: Arc<Creations>,
    taken: Vec<(bool, String)>,
    n: f64,
}

impl Charge {
    /// The write was stored: what it took stays taken.
    fn keep(mut self) {
        self.taken.clear();
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        for (author, key) in &self.taken {
            let buckets = if *author {
                &self.creations.per_author
            } else {
                &self.creations.per_account
            };
            if let Some(b) = buckets {
                b.give_back(key, self.n);
            }
        }
    }
}

impl Creations {
    fn new(
        author: Option<std::num::NonZeroU32>,
        account: Option<std::num::NonZeroU32>,
    ) -> Creations {
        Creations {
            per_author: author.map(Buckets::new),
            per_account: account.map(Buckets::new),
        }
    }

    /// Takes the creations of `deltas` from `author`'s and its `account`'s quotas, or says
    /// which quota they exceed and when to retry.
    fn charge(
        self: &Arc<Self>,
        author: &str,
        account: Option<&str>,
        deltas: &[Delta],
    ) -> Result<Charge, ApiError> {
        let made = deltas
            .iter()
            .filter(|d| matches!(d, Delta::AddEntity { .. }))
            .count();
        let mut charge = Charge {
            creations: Arc::clone(self),
            taken: Vec::new(),
            n: made as f64,
        };
        if made == 0 {
            return Ok(charge);
        }
        let quotas = [
            (true, self.per_author.as_ref(), Some(author), "the author"),
            (
                false,
                self.per_account.as_ref(),
                account,
                "the author's account",
            ),
        ];
        for (is_author, buckets, key, whose) in quotas {
            let (Some(buckets), Some(key)) = (buckets, key) else {
                continue;
            };
            if let Err(retry) = buckets.take(key, charge.n) {
                let budget = match retry {
                    Some(_) => "used up for now".to_string(),
                    None => format!("at most {} an hour", buckets.per_hour),
                };
                let mut e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "write.quota",
                    format!(
                        "the write creates {made} entities, past the quota of {whose}: {budget}"
                    ),
                    "create fewer entities, or wait for retry-after; nothing was written",
                );
                e.retry_after =
                    retry.map(|w| u32::try_from(w.as_secs().max(1)).unwrap_or(u32::MAX));
                return Err(e);
            }
            charge.taken.push((is_author, key.to_string()));
        }
        Ok(charge)
    }
}

/// The entities `deltas` create, with their accounts (`account:<id>`).
fn created_accounts(deltas: &[Delta]) -> HashMap<String, String> {
    deltas
        .iter()
        .filter_map(|d| match d {
            Delta::AddEntity { entity } => Some((
                clearance_core::facts::entity_key(&entity.ty, &entity.id),
                account_key(entity.account.as_deref().unwrap_or(&entity.id)),
            )),
            _ => None,
        })
        .collect()
}

/// The accounts whose facts `deltas` touch: those of the entities they name, from the
/// facts before them or, for an entity they or the allowed writes before them in the same
/// group (`earlier`) create, from its creation.
/// The accounts (`account:<id>`) whose facts `deltas` touch, applied to `before`: what a
/// change records, so that followers scoped to accounts see it.
pub fn accounts_touched(before: &Facts, deltas: &[Delta]) -> Vec<String> {
    touched_accounts(before, &HashMap::new(), deltas)
}

fn touched_accounts(
    before: &Facts,
    earlier: &HashMap<String, String>,
    deltas: &[Delta],
) -> Vec<String> {
    let created = created_accounts(deltas);
    let mut declared = Vec::new();
    let mut out = std::collections::BTreeSet::new();
    let mut see = |key: &str| {
        // An entity that exists is of its own account, whatever a write claims.
        if let Some(e) = before.entities.get(key) {
            out.insert(account_key(&e.account));
        } else if let Some(a) = created.get(key).or_else(|| earlier.get(key)) {
            out.insert(a.clone());
        }
    };
    for d in deltas {
        match d {
            // The account it names, and the one of an entity of that name already there.
            Delta::AddEntity { entity } => {
                see(&clearance_core::facts::entity_key(&entity.ty, &entity.id));
                declared.push(account_key(entity.account.as_deref().unwrap_or(&entity.id)));
            }
            Delta::RemoveEntity { entity } | Delta::SetAttr { entity, .. } => see(entity),
            Delta::AddTuple { tuple } | Delta::RemoveTuple { tuple } => {
                see(&tuple.resource);
                see(&tuple.subject);
            }
        }
    }
    out.extend(declared);
    out.into_iter().collect()
}

async fn write(
    State(s): S,
    caller: Caller,
    body: Result<ApiJson<WriteBody>, ApiError>,
) -> ApiResult {
    let started = std::time::Instant::now();
    let span = tracing::info_span!("write");
    let answer = tracing::Instrument::instrument(queue_write(&s, &caller, body), span).await;
    s.metrics.write(answer.is_ok(), started.elapsed());
    answer
}

/// Queues a write for the group commit and waits for its answer. The write is charged
/// its deltas first; a large one is judged on an instance before it is queued, so that
/// one the policy refuses never takes the writer; and a caller may have at most
/// [`WRITES_PER_CALLER`] writes waiting.
async fn queue_write(
    s: &Service,
    caller: &Caller,
    body: Result<ApiJson<WriteBody>, ApiError>,
) -> ApiResult {
    let ApiJson(body) = body.map_err(|mut err| {
        if err.status != StatusCode::REQUEST_TIMEOUT {
            err.data.help =
                "a write is {author?, deltas, now?, parity?}; nothing was written".into();
        }
        err
    })?;
    let authored = authorise_write(s, caller, &body)?;
    let n = body.deltas.len();
    s.charge(caller, n, || format!("a write of {n} deltas"))?;
    // Admin keys are not counted.
    let charge = match &authored.accounts {
        Some(_) => {
            let account = Access {
                caller,
                served: &s.served(),
            }
            .account_of(&authored.author);
            Some(
                s.creations
                    .charge(&authored.author, account.as_deref(), &body.deltas)?,
            )
        }
        None => None,
    };
    let body = if n > PREJUDGED_DELTAS && body.parity.is_none() {
        prejudge(s, caller, body, &authored).await?
    } else {
        body
    };
    let name = caller.name();
    let place = s.write_places.take(&name).map_err(|full| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "host.busy",
            match full {
                Full::Caller(n) => format!("`{name}` has {n} writes waiting already"),
                Full::All(n) => format!("{n} writes are already waiting"),
            },
            "retry later; nothing was written",
        )
    })?;
    // The group commit's task, not this one, carries the write through: a client hanging
    // up cannot stop a write between the store and memory.
    let (to, answer) = tokio::sync::oneshot::channel();
    s.writes
        .try_send(QueuedWrite {
            body,
            authored,
            reply: Reply { to, charge },
            caller: name,
            _place: place,
        })
        .map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "host.busy",
                format!("{WRITE_QUEUE} writes are already waiting"),
                "retry later; nothing was written",
            ),
            mpsc::error::TrySendError::Closed(_) => {
                ApiError::internal("the service is stopping; nothing was written")
            }
        })?;
    answer
        .await
        .map_err(|_| ApiError::internal("the write's task ended without an answer"))?
}

/// Where a queued write's answer goes, with what it took of the creation quotas: kept
/// when the writer answers that it was stored, given back otherwise (the reply dropped
/// unsent too), whether or not its client is still there to read the answer.
struct Reply {
    to: tokio::sync::oneshot::Sender<ApiResult>,
    charge: Option<Charge>,
}

impl Reply {
    /// Answers the write; only a stored one (an `Ok` answer) keeps its creations.
    fn send(mut self, answer: ApiResult) -> Result<(), ApiResult> {
        if answer.is_ok()
            && let Some(charge) = self.charge.take()
        {
            charge.keep();
        }
        self.to.send(answer)
    }
}

/// Writes of more deltas than this are judged on an instance, in their caller's turn,
/// before they are queued for the writer ([`prejudge`]).
const PREJUDGED_DELTAS: usize = 64;

/// Judges a large write on an instance at the latest revision, in its caller's turn
/// (`authorize_deltas`: the write pipeline, undone whatever it finds), before it takes the
/// writer, and answers a refusal at once: a refused write changes nothing, so refusing it
/// on the revision it was judged on is as if it had been judged in order there. An allowed
/// write is given back, to be judged again in order by the group commit.
async fn prejudge(
    s: &Service,
    caller: &Caller,
    mut body: WriteBody,
    authored: &Authored,
) -> Result<WriteBody, ApiError> {
    let call = Call::AuthorizeDeltas {
        author: authored.author.clone(),
        now: body.now.clone().unwrap_or(TimeValue::Seconds(s.clock())),
        deltas: std::mem::take(&mut body.deltas),
    };
    let turn = s.runtime.turn(&caller.name()).await?;
    // Its text is written off the async workers, which serve other callers meanwhile.
    let (json, deltas) = blocking(move || {
        let json = call.to_json().map_err(ApiError::bad);
        let Call::AuthorizeDeltas { deltas, .. } = call else {
            return Err(ApiError::internal("the judgement's call changed"));
        };
        Ok((json, deltas))
    })
    .await?;
    body.deltas = deltas;
    let answer = s.runtime.call(json?).await?;
    drop(turn);
    if answer.get("allowed") != Some(&Value::Bool(true))
        && let Ok(Err(refused)) = verdict(&answer, 0)
    {
        return Err(refused);
    }
    Ok(body)
}

/// A change of more deltas than this (an import) reaches change feeds as a `reset`.
const BULK_DELTAS: usize = 10_000;

/// Writes that may wait for the group commit; one more is answered 503 `host.busy`.
const WRITE_QUEUE: usize = 1024;

/// Writes one caller may have waiting for the group commit; one more is answered 503
/// `host.busy`, so that no caller takes every place.
const WRITES_PER_CALLER: usize = WRITE_QUEUE / 4;

/// The code of a write refused because another host took its revision, past the retries.
const CONFLICT: &str = "revision.conflict";

/// Writes committed together at most: one store transaction, one sync to disk.
const GROUP: usize = 64;

/// Deltas a group holds at most, unless its first write alone has more: a write waits for
/// about this much of others' work, or one large write, before its own group.
const GROUP_DELTAS: usize = 1024;

/// A write waiting for the group commit, with where its answer goes.
struct QueuedWrite {
    body: WriteBody,
    authored: Authored,
    reply: Reply,
    /// Who sent it (`Caller::name`): the writer takes callers in turn.
    caller: String,
    /// Its place among the writes waiting, given back once it is answered.
    _place: Place,
}

/// A write that passed the checks made before judging, about to be judged.
struct Ready {
    call: String,
    authored: Authored,
    deltas: Vec<Delta>,
    reply: Reply,
}

/// An allowed write of a group: the tuples the policy derived, and the accounts it touches.
type Allowed = (Vec<Delta>, Vec<String>);

/// Why a group judged in order cannot be stored as judged.
enum Judged {
    /// The module and the host disagree (on a revision, say): nothing of it is stored.
    Fault(ApiError),
    /// The write at this index touches an account its caller may not write to.
    OutOfScope(usize, ApiError),
}

/// The group commit: takes the writes waiting, a caller at a time in turn (up to
/// [`GROUP`] writes and [`GROUP_DELTAS`] deltas, or one larger write alone), judges them in
/// order on one instance (each on the state the ones before it leave), appends the
/// allowed ones in one transaction, then applies them and answers each. Runs for as long
/// as the service lives. One caller's many or large writes so delay another's by a group
/// at most.
///
/// A write with a parity token starts a group of its own making, so the decision it relied
/// on is checked again on the state it is judged on. Each group runs in a task of its own:
/// were one to panic, its writes are answered 500 and the next group goes on.
async fn group_commit(service: std::sync::Weak<Service>, mut queue: mpsc::Receiver<QueuedWrite>) {
    let mut waiting: FairQueue<QueuedWrite> = FairQueue::default();
    loop {
        if waiting.is_empty() {
            match queue.recv().await {
                Some(w) => waiting.push(&w.caller.clone(), w),
                None => return,
            }
        }
        while let Ok(w) = queue.try_recv() {
            waiting.push(&w.caller.clone(), w);
        }
        let mut batch: Vec<QueuedWrite> = Vec::new();
        let mut deltas = 0;
        while batch.len() < GROUP {
            let first = batch.is_empty();
            let next = waiting.pop_if(|w| {
                first || (w.body.parity.is_none() && deltas + w.body.deltas.len() <= GROUP_DELTAS)
            });
            let Some(w) = next else { break };
            deltas += w.body.deltas.len();
            batch.push(w);
        }
        let Some(s) = service.upgrade() else { return };
        let _ = tokio::spawn(async move { s.commit_writes(batch).await }).await;
    }
}

/// The checks of one write made before it is judged, on the state being served: its
/// parity token, and the accounts it touches (`created`: the accounts of the entities
/// created by the writes before it in the same group).
async fn prepare_write(
    s: &Arc<Service>,
    served: &Served,
    body: WriteBody,
    authored: Authored,
) -> Result<(String, Vec<Delta>, Authored), ApiError> {
    if let Some(p) = &body.parity {
        if p.module_hash != s.runtime.module_hash() || p.policy_hash != served.schema.hash_hex() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "parity.stale",
                format!(
                    "the client decided on module {} and policy {}, the host runs module {} and policy {}",
                    p.module_hash,
                    p.policy_hash,
                    s.runtime.module_hash(),
                    served.schema.hash_hex()
                ),
                "reload the module and the policy, decide again, then write",
            ));
        }
        if p.revision > served.revision {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "parity.future",
                format!(
                    "the client decided on revision {}, ahead of the host's {}",
                    p.revision, served.revision
                ),
                "",
            ));
        }
        if let (Some(request), Some(allowed)) = (&p.request, p.allowed)
            && p.revision < served.revision
        {
            let mut request = request.clone();
            if authored.user {
                request.now = TimeValue::Seconds(s.clock());
            }
            let now = s.runtime.run(&Call::Check { request }).await?;
            if now.get("allowed").and_then(Value::as_bool) != Some(allowed) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "parity.outcome_changed",
                    format!(
                        "the client's decision (allowed: {allowed}) was made at revision {}; at revision {} it is no longer so",
                        p.revision, served.revision
                    ),
                    "decide again on the current facts, then write",
                ));
            }
        }
    }
    let now = body.now.unwrap_or(TimeValue::Seconds(s.clock()));
    // The core's write pipeline (`writes::write`), run in the module on the bytes every
    // runtime runs, keeping what it allows until the group is stored or dropped.
    let call = Call::Write {
        author: authored.author.clone(),
        now,
        deltas: body.deltas,
    };
    let json = call.to_json().map_err(ApiError::bad)?;
    let Call::Write { deltas, .. } = call else {
        return Err(ApiError::internal("the write's call changed"));
    };
    Ok((json, deltas, authored))
}

/// A module's answer to a write: the derived tuples when allowed, the refusal (403) when
/// not; a fault when the module took it as another revision than `expected`.
fn verdict(answer: &Value, expected: u64) -> Result<Result<Vec<Delta>, ApiError>, ApiError> {
    if answer.get("allowed") != Some(&Value::Bool(true)) {
        let refusal = answer.get("refusal").cloned().unwrap_or(Value::Null);
        let message = refusal
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("refused")
            .to_string();
        let code = refusal
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or("write.denied")
            .to_string();
        let mut e = ApiError::new(StatusCode::FORBIDDEN, &code, message, "nothing was written");
        e.extra = Some(json!({ "refusal": refusal }));
        return Ok(Err(e));
    }
    if answer.get("revision").and_then(Value::as_u64) != Some(expected) {
        return Err(ApiError::internal(format!(
            "the module took the write as revision {:?}, the host expected {expected}",
            answer.get("revision")
        )));
    }
    // Tuples the policy adds by itself on creation (EV5) join the same change.
    match answer.get("derived") {
        None | Some(Value::Null) => Ok(Ok(Vec::new())),
        Some(v) => serde_json::from_value(v.clone()).map(Ok).map_err(|e| {
            ApiError::internal(format!("unreadable derived tuples from the module: {e}"))
        }),
    }
}

fn change_json(c: &Change) -> Value {
    let mut v =
        json!({ "revision": c.revision, "author": c.author, "at": c.at, "deltas": c.deltas });
    if let Some(obj) = v.as_object_mut() {
        if let Some(p) = &c.policy {
            obj.insert("policy_hash".into(), Value::from(p.hash.clone()));
        }
        if let Some(via) = &c.via {
            obj.insert("via".into(), Value::from(via.clone()));
        }
    }
    v
}

/// `?since=`.
#[derive(Deserialize, JsonSchema)]
struct Since {
    /// Follow from after this revision (default: the current one).
    since: Option<u64>,
}

/// Counts a follower of the change feed while its stream lives, and shows the last
/// revision it sent to `/metrics` (its lag).
struct Subscriber {
    count: Arc<AtomicUsize>,
    marks: Arc<std::sync::Mutex<HashMap<u64, Arc<AtomicU64>>>>,
    id: u64,
    /// The last revision the feed sent.
    mark: Arc<AtomicU64>,
}

impl Subscriber {
    /// Counts a follower of `s`'s feed that has sent up to `after`.
    fn new(s: &Service, after: u64) -> Subscriber {
        let id = s.feed_ids.fetch_add(1, Ordering::Relaxed);
        let mark = Arc::new(AtomicU64::new(after));
        s.feed_marks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, Arc::clone(&mark));
        Subscriber {
            count: Arc::clone(&s.subscribers),
            marks: Arc::clone(&s.feed_marks),
            id,
            mark,
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
        self.marks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// Counts one caller's follower of the change feed while its stream lives.
struct CallerFeed {
    feeds: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    caller: String,
}

impl CallerFeed {
    /// Takes a place for `caller`, unless it holds `limit` already (then `Err` with the
    /// count it holds).
    fn take(
        feeds: &Arc<std::sync::Mutex<HashMap<String, usize>>>,
        caller: String,
        limit: usize,
    ) -> Result<CallerFeed, usize> {
        let mut map = feeds.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(caller.clone()).or_insert(0);
        if *n >= limit {
            return Err(*n);
        }
        *n += 1;
        Ok(CallerFeed {
            feeds: Arc::clone(feeds),
            caller,
        })
    }
}

impl Drop for CallerFeed {
    fn drop(&mut self) {
        let mut map = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.caller) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.caller);
            }
        }
    }
}

enum Phase {
    /// Reading stored changes after `after`, a page at a time.
    Paging,
    /// Following new changes as they are made.
    Live,
    /// The stream ends after what is queued.
    Done,
}

struct Feed {
    service: Arc<Service>,
    rx: broadcast::Receiver<Arc<Change>>,
    /// The last revision sent.
    after: u64,
    phase: Phase,
    /// The accounts the follower may see; `None` for an admin, who sees every change.
    filter: Option<Vec<String>>,
    /// The key the follower proved itself with: the stream ends once it is revoked.
    key: Option<String>,
    /// The user following its account: the stream ends once it fails its gates.
    user: Option<String>,
    _own: CallerFeed,
    subscriber: Subscriber,
}

/// What a follower scoped to `filter` is sent of change `c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sight {
    /// Nothing: the change is of other accounts.
    Hidden,
    /// The change (as [`change_event`] shows it to the follower).
    Whole,
    /// A `reset`: the change touched the follower's accounts and others (an import), and
    /// only its own part may reach it, so it fetches its state again at this revision.
    Reset,
}

/// What a follower scoped to `filter` sees of change `c`: a policy change concerns every
/// follower; a change of facts, those of the accounts it touches, whole when it touches
/// only theirs; a change stored before the store recorded its accounts, only an admin.
fn sight(filter: Option<&[String]>, c: &Change) -> Sight {
    match (filter, &c.policy, &c.accounts) {
        (None, _, _) | (Some(_), Some(_), _) => Sight::Whole,
        (Some(mine), None, Some(touched)) if touched.iter().all(|a| mine.contains(a)) => {
            Sight::Whole
        }
        (Some(mine), None, Some(touched)) if touched.iter().any(|a| mine.contains(a)) => {
            Sight::Reset
        }
        (Some(_), None, _) => Sight::Hidden,
    }
}

/// The event a follower scoped to `filter` (a user: `user`) is sent for change `c`.
fn event_for(
    filter: Option<&[String]>,
    c: &Change,
    user: Option<(&Service, &str)>,
) -> Option<Event> {
    match sight(filter, c) {
        Sight::Hidden => None,
        Sight::Whole => Some(change_event(c, user)),
        Sight::Reset => Some(reset_event(
            c.revision,
            c.revision.saturating_sub(1),
            // The reason says nothing of the other accounts: not even that there were any.
            &format!(
                "revision {} is not sent as deltas; read your accounts' state again",
                c.revision
            ),
        )),
    }
}

/// A change as its follower sees it. A user sees its revision, author, time and the
/// entities it touched, and the deltas as they apply to the user's slice
/// ([`clearance_core::slice::Reads::project`]): only what the slice keeps, attributes cut
/// as the slice cuts them, so no other user's email or guest's address, nor the key that
/// made it. A follower applies them to its slice; a change that cannot be followed so
/// (a policy change, the authorisations the user holds moved) says `refetch`, with why:
/// the follower fetches its slice again.
fn change_event(c: &Change, user: Option<(&Service, &str)>) -> Event {
    // A bulk change (an import) is not sent delta by delta: the follower fetches the
    // state again, at this revision, as after a reset.
    if c.deltas.len() > BULK_DELTAS {
        return reset_event(
            c.revision,
            c.revision.saturating_sub(1),
            &format!(
                "revision {} is a bulk change of {} deltas",
                c.revision,
                c.deltas.len()
            ),
        );
    }
    let data = if let Some((service, principal)) = user {
        let mut touched = std::collections::BTreeSet::new();
        for d in &c.deltas {
            match d {
                Delta::AddEntity { entity } => {
                    touched.insert(clearance_core::facts::entity_key(&entity.ty, &entity.id));
                }
                Delta::RemoveEntity { entity } | Delta::SetAttr { entity, .. } => {
                    touched.insert(entity.clone());
                }
                Delta::AddTuple { tuple } | Delta::RemoveTuple { tuple } => {
                    touched.insert(tuple.resource.clone());
                    touched.insert(tuple.subject.clone());
                }
            }
        }
        let mut v =
            json!({ "revision": c.revision, "author": c.author, "at": c.at, "entities": touched });
        let follow = match &c.policy {
            Some(p) => {
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("policy_hash".into(), Value::from(p.hash.clone()));
                }
                Projected::Refetch("the policy changed".into())
            }
            None => service.project(principal, c),
        };
        if let Some(obj) = v.as_object_mut() {
            match follow {
                Projected::Deltas(ds) => {
                    obj.insert("deltas".into(), json!(ds));
                }
                Projected::Refetch(why) => {
                    obj.insert("refetch".into(), Value::from(why));
                }
            }
        }
        v
    } else {
        change_json(c)
    };
    Event::default()
        .event("change")
        .id(c.revision.to_string())
        .data(data.to_string())
}

fn reset_event(revision: u64, after: u64, reason: &str) -> Event {
    Event::default()
        .event("reset")
        .id(revision.to_string())
        .data(
            json!({ "revision": revision, "last_sent": after, "reason": reason, "help": "changes were skipped: fetch the state again (a slice or /v1/facts) at this revision; the feed goes on from it" })
                .to_string(),
        )
}

/// The last event of a feed whose key was revoked (and the feed marked done), if it was.
fn revoked(f: &mut Feed) -> Option<Event> {
    let id = f.key.as_ref()?;
    if matches!(f.phase, Phase::Done) || f.service.live_keys().is_live(id) {
        return None;
    }
    f.phase = Phase::Done;
    Some(Event::default().event("error").data(
        json!({ "code": "auth.invalid", "message": "the key this feed was opened with was revoked", "help": "follow again with a live credential" }).to_string(),
    ))
}

/// Ends a user's feed once the user fails its gates (deactivated, removed, its
/// invitation taken back), before anything more is sent.
async fn gated(f: &mut Feed) -> Option<Event> {
    let principal = f.user.clone()?;
    if matches!(f.phase, Phase::Done) {
        return None;
    }
    let e = user_gates(&f.service, &Caller::User { principal })
        .await
        .err()?;
    f.phase = Phase::Done;
    Some(Event::default().event("error").data(
        json!({ "code": e.data.code, "message": e.data.message, "help": e.data.help }).to_string(),
    ))
}

/// The next events of a feed: a page from the store while catching up, then each new
/// change; a `reset` when the follower fell further behind than the live buffer holds.
async fn feed_step(mut f: Feed) -> Option<(Vec<Result<Event, Infallible>>, Feed)> {
    // Every event before this step has been taken by the connection.
    f.subscriber.mark.store(f.after, Ordering::Relaxed);
    loop {
        if let Some(end) = revoked(&mut f) {
            return Some((vec![Ok(end)], f));
        }
        match f.phase {
            Phase::Done => return None,
            Phase::Paging => {
                let (after, n, bytes) = (
                    f.after,
                    f.service.config.feed_page,
                    f.service.config.feed_page_bytes,
                );
                let page = f.service.store.changes_page(after, n, bytes).await;
                match page {
                    Ok(page) if page.is_empty() => f.phase = Phase::Live,
                    Ok(page) => {
                        f.after = page.last().map_or(f.after, |c| c.revision);
                        let events: Vec<_> = page
                            .iter()
                            .filter_map(|c| {
                                event_for(
                                    f.filter.as_deref(),
                                    c,
                                    f.user.as_deref().map(|p| (f.service.as_ref(), p)),
                                )
                            })
                            .map(Ok)
                            .collect();
                        if !events.is_empty() {
                            if let Some(end) = gated(&mut f).await {
                                return Some((vec![Ok(end)], f));
                            }
                            return Some((events, f));
                        }
                    }
                    Err(e) => {
                        f.phase = Phase::Done;
                        let event = Event::default().event("error").data(
                            json!({ "code": "store.failed", "message": e.to_string(), "help": "reconnect with Last-Event-ID" }).to_string(),
                        );
                        return Some((vec![Ok(event)], f));
                    }
                }
            }
            Phase::Live => match {
                let mut closing = f.service.closing.subscribe();
                tokio::select! {
                    received = f.rx.recv() => Some(received),
                    () = async { let _ = closing.wait_for(|c| *c).await; } => None,
                }
            } {
                None => {
                    // The host is shutting down: the stream ends, so its connection can
                    // close.
                    f.phase = Phase::Done;
                    let event = Event::default().event("error").data(
                        json!({ "code": "host.shutdown", "message": "the host is shutting down", "help": "reconnect, to this host or another, with Last-Event-ID" }).to_string(),
                    );
                    return Some((vec![Ok(event)], f));
                }
                Some(received) => match received {
                    Ok(c) if c.revision <= f.after => {}
                    // The service read its state again from the store: the changes between
                    // are there.
                    Ok(c) if c.revision > f.after + 1 => f.phase = Phase::Paging,
                    Ok(c) => {
                        f.after = c.revision;
                        // The key may have been revoked while the follower waited.
                        if let Some(end) = revoked(&mut f) {
                            return Some((vec![Ok(end)], f));
                        }
                        if sight(f.filter.as_deref(), &c) != Sight::Hidden {
                            if let Some(end) = gated(&mut f).await {
                                return Some((vec![Ok(end)], f));
                            }
                            let user = f.user.as_deref().map(|p| (f.service.as_ref(), p));
                            if let Some(event) = event_for(f.filter.as_deref(), &c, user) {
                                return Some((vec![Ok(event)], f));
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        let revision = f.service.revision();
                        let event = reset_event(
                            revision,
                            f.after,
                            &format!("the follower fell {missed} changes behind the live buffer"),
                        );
                        f.after = revision;
                        return Some((vec![Ok(event)], f));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            },
        }
    }
}

async fn changes(
    State(s): S,
    caller: Caller,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<Since>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // An admin follows every change; a service key its accounts'; a user its account's.
    let filter = match &caller {
        Caller::Key {
            scope: Scope::Admin,
            ..
        } => None,
        Caller::Key {
            scope: Scope::Service,
            accounts,
            ..
        } => Some(accounts.clone()),
        Caller::Key {
            scope: Scope::Read, ..
        } => {
            return Err(forbidden(
                "a read key decides only; it cannot follow changes",
            ));
        }
        Caller::User { principal } => {
            let served = s.served();
            let account = Access {
                caller: &caller,
                served: &served,
            }
            .account_of(principal);
            Some(account.into_iter().collect())
        }
    };
    user_gates(&s, &caller).await?;
    // A reconnecting EventSource says where it was; that wins over the query.
    let last_event = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "request.malformed",
                        "`Last-Event-ID` must be a revision number",
                        "",
                    )
                })?,
        ),
        None => None,
    };
    let current = s.revision();
    let since = last_event.or(q.since).unwrap_or(current);
    if since > current {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "revision.future",
            format!("revision {since} is ahead of the host's {current}"),
            "follow from a revision this host has",
        ));
    }
    let own =
        CallerFeed::take(&s.feeds, caller.name(), s.config.max_feeds_per_caller).map_err(|n| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "feed.too_many",
                format!(
                    "this caller follows {n} feeds already; the limit is {}",
                    s.config.max_feeds_per_caller
                ),
                "close a feed first: one feed carries every change the caller may see",
            )
        })?;
    let count = s.subscribers.fetch_add(1, Ordering::AcqRel);
    let subscriber = Subscriber::new(&s, since.min(current));
    if count >= s.config.max_subscribers {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "host.busy",
            format!(
                "{count} followers already; the limit is {}",
                s.config.max_subscribers
            ),
            "retry later",
        ));
    }
    // Subscribed before the first page is read, so nothing falls between the two.
    let rx = s.changes.subscribe();
    let mut first = Vec::new();
    let after = if since < s.base_revision {
        first.push(Ok(reset_event(
            current,
            since,
            &format!("changes before revision {} are not kept", s.base_revision),
        )));
        current
    } else {
        since
    };
    let feed = Feed {
        service: Arc::clone(&s),
        rx,
        after,
        phase: Phase::Paging,
        filter,
        key: match &caller {
            Caller::Key { id, .. } => Some(id.clone()),
            Caller::User { .. } => None,
        },
        user: match &caller {
            Caller::User { principal } => Some(principal.clone()),
            Caller::Key { .. } => None,
        },
        _own: own,
        subscriber,
    };
    let events = stream::iter(first).chain(stream::unfold(feed, feed_step).flat_map(stream::iter));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// The facts that can influence a principal's decisions, with the policy to load them
/// under, signed: of its account only (tenancy is structural, so nothing outside the
/// account can matter), and of that only what the policy reads for this principal.
async fn slice(State(s): S, caller: Caller, ApiPath(principal): ApiPath<String>) -> ApiResult {
    let served = s.served();
    if matches!(
        caller,
        Caller::Key {
            scope: Scope::Read,
            ..
        }
    ) {
        return Err(forbidden("a read key decides only; it cannot fetch facts"));
    }
    Access {
        caller: &caller,
        served: &served,
    }
    .decide_for(&principal)?;
    user_gates(&s, &caller).await?;
    // A slice is built off the instances, but as large as what its principal may reach
    // (a guest list of thousands): it takes one of its caller's turns, so one caller's
    // slices are built one fewer at a time than there are instances, however many it
    // sends.
    let turn = s.runtime.turn(&caller.name()).await?;
    let (signer, ttl) = (Arc::clone(&s.signer), s.config.slice_ttl);
    blocking(move || {
        let _turn = turn;
        let live = served.facts.read();
        let Some(p) = live.entities.get(&principal) else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "entity.unknown",
                format!("no principal `{principal}`"),
                "name a principal as `type:id`",
            ));
        };
        let account = p.account.clone();
        // Only what the policy reads when it decides for this principal (core's
        // `principal_slice`): other users' emails, guests' addresses, others' roles and
        // authorisations stay on the server.
        let facts = clearance_core::principal_slice(&served.schema, &live, &principal)
            .map_err(|e| ApiError::bad(ErrorData::from(e)))?;
        let revision = live.revision;
        drop(live);
        let policy: Vec<Value> = served
            .sources
            .iter()
            .map(|s| json!({ "name": s.name, "text": s.text }))
            .collect();
        // Issued and expiring by the wall clock (not a demo's dated one): the expiry
        // bounds how long a copy is trusted where it is loaded.
        let issued = now_seconds();
        let expires = issued.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        let slice = json!({ "principal": principal, "account": account, "revision": revision, "policy_hash": served.schema.hash_hex(), "issued": issued, "expires": expires, "policy": policy, "facts": facts });
        Ok(Json(signer.sign(slice.to_string())))
    })
    .await
}

/// The public keys that verify slices, as a JWKS.
async fn slice_keys(State(s): S) -> Json<Value> {
    Json(s.signer.jwks())
}

/// `{sources?}`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    /// The policy's sources; for a reload, without them the policy directory is read
    /// again.
    sources: Option<Vec<SourceBody>>,
}

/// A policy source.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SourceBody {
    /// The file name its errors are reported under.
    name: String,
    /// The policy text.
    text: String,
}

fn policy_errors(e: clearance_core::PolicyErrors) -> ApiError {
    let list: Vec<Value> = e.0.iter().map(|x| json!({ "file": x.span.file, "line": x.span.line, "col": x.span.col, "message": x.message })).collect();
    let mut err = ApiError::bad(ErrorData::from(e));
    err.extra = Some(json!({ "errors": list }));
    err
}

fn sources_of(body: PolicyBody) -> Option<Vec<Source>> {
    body.sources.map(|list| {
        list.into_iter()
            .map(|s| Source::new(s.name, s.text))
            .collect()
    })
}

async fn validate(caller: Caller, ApiJson(body): ApiJson<PolicyBody>) -> ApiResult {
    admin_only(&caller)?;
    let sources = sources_of(body).unwrap_or_default();
    blocking(move || {
        let schema = Schema::compile(&sources).map_err(policy_errors)?;
        answer(schemas::Validated {
            valid: true,
            policy_hash: schema.hash_hex(),
        })
    })
    .await
}

/// Replaces the policy atomically: the new one must compile and every fact must hold under
/// it; otherwise it is refused with its errors and the old one keeps serving. An accepted
/// policy is stored as a change (its sources and hash), so a restart serves it.
async fn reload(State(s): S, caller: Caller, ApiJson(body): ApiJson<PolicyBody>) -> ApiResult {
    admin_only(&caller)?;
    let sources = match sources_of(body) {
        Some(list) => list,
        None => match &s.policy_dir {
            Some(dir) => {
                let dir = dir.clone();
                blocking(move || {
                    read_policies(&dir).map_err(|m| {
                        ApiError::new(StatusCode::BAD_REQUEST, "policy.unreadable", m, "")
                    })
                })
                .await?
            }
            None => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "policy.missing",
                    "no sources given and no policy directory",
                    "",
                ));
            }
        },
    };
    tokio::spawn(async move { apply_reload(&s, sources).await })
        .await
        .map_err(|e| ApiError::internal(format!("the reload's task failed: {e}")))?
}

async fn apply_reload(s: &Arc<Service>, sources: Vec<Source>) -> ApiResult {
    let compiled = sources.clone();
    let schema = blocking(move || {
        Schema::compile(&compiled)
            .map(Arc::new)
            .map_err(policy_errors)
    })
    .await?;
    let _writer = s.writer.lock().await;
    s.resync().await?;
    let served = s.served();
    let (facts, next_schema) = (Arc::clone(&served.facts), Arc::clone(&schema));
    let (next, bytes) = blocking(move || {
        let mut next = facts.read().clone();
        next.revision += 1;
        let bytes = Snapshot::build(next_schema, &next)
            .and_then(|s| s.to_bytes())
            .map_err(|e| ApiError::bad(e.into()))?;
        Ok((next, bytes))
    })
    .await?;
    let prepared = s.runtime.prepare(bytes).await?;
    let hash = schema.hash_hex();
    let revision = next.revision;
    let change = Change {
        revision,
        author: "operator".into(),
        at: now_seconds(),
        deltas: Vec::new(),
        policy: Some(StoredPolicy {
            hash: hash.clone(),
            sources: sources.clone(),
        }),
        via: None,
        accounts: Some(Vec::new()),
    };
    s.commit(
        change,
        prepared,
        Served {
            revision,
            schema,
            sources: Arc::new(sources),
            facts: LiveFacts::new(next),
        },
    )
    .await?;
    // Start-up after a policy change builds the snapshot unless a checkpoint follows it.
    s.checkpoint_soon.notify_one();
    answer(schemas::Reloaded {
        reloaded: true,
        policy_hash: hash,
        revision,
    })
}

async fn openapi(State(s): S) -> Json<Value> {
    Json(s.document())
}

/// Where the operations console's files are: `web/` (the page under `console/`, the
/// package's `index.js`) and the directory of the module the host runs, so the page runs
/// exactly the host's bytes.
#[derive(Debug, Clone)]
pub struct ConsoleFiles {
    /// The `web/` directory.
    pub web: PathBuf,
    /// The directory of `clearance_bg.wasm` and its glue.
    pub pkg: PathBuf,
}

/// The files of the module's directory the console may fetch: the module, its hash, its
/// glue and their type declarations. Nothing else of that directory is served, whatever
/// sits beside the module (a store, a log).
pub const MODULE_FILES: [&str; 5] = [
    "clearance_bg.wasm",
    "clearance_bg.wasm.sha256",
    "clearance.js",
    "clearance.d.ts",
    "clearance_bg.wasm.d.ts",
];

/// Adds the operations console to a router: the page at `/`, its files under `/console`,
/// the JS package at `/index.js` and the module's own files ([`MODULE_FILES`], by name)
/// under `/pkg`.
pub fn with_console(router: Router, files: &ConsoleFiles) -> Router {
    use tower_http::services::{ServeDir, ServeFile};
    let router = router
        .route_service("/", ServeFile::new(files.web.join("console/index.html")))
        .route_service("/index.js", ServeFile::new(files.web.join("index.js")))
        .nest_service("/console", ServeDir::new(files.web.join("console")));
    MODULE_FILES.iter().fold(router, |router, name| {
        router.route_service(
            &format!("/pkg/{name}"),
            ServeFile::new(files.pkg.join(name)),
        )
    })
}

/// The limits of the HTTP server, against slow and greedy clients.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// How long a client has to send a request's head. hyper starts this clock whenever
    /// it waits for a head, so it also closes a kept-alive connection left idle this long.
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
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let body_limits = BodyLimits {
        deadline: limits.body_timeout,
        grace: limits.body_grace,
        min_rate: limits.body_min_rate,
    };
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
                    format!("the server holds its limit of {cap} connections"),
                ));
                continue;
            }
        };
        let place = Arc::new(waiting.enter(address));
        let evicted = Arc::clone(&place.evicted);
        let app = app.clone();
        let sent = Arc::clone(&place);
        let service = TowerToHyperService::new(tower::util::MapRequest::new(
            app,
            move |req: axum::http::Request<hyper::body::Incoming>| {
                sent.served();
                // The body's deadline runs from now, as its head has arrived.
                let mut req = req.map(|body| DeadlineBody::new(body, body_limits));
                req.extensions_mut().insert(peer);
                req
            },
        ));
        let header_timeout = limits.header_timeout;
        let mut closed = closed.clone();
        tokio::spawn(async move {
            let _held = (permit, slot, place);
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service);
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
            }
        });
    }
}

/// Answers a connection past a cap with 503 `host.busy` (`message` says which) and
/// closes it.
async fn refuse(mut stream: tokio::net::TcpStream, message: String) {
    use tokio::io::AsyncWriteExt;
    let body = json!({ "error": { "code": "host.busy", "message": message, "help": "retry after the time in `retry-after`, with fewer connections open" }, "allowed": false }).to_string();
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

#[cfg(test)]
mod tests {
    use super::{HashMap, created_accounts, touched_accounts};
    use clearance_core::{Delta, Facts, FactsJson};

    fn facts() -> Facts {
        let doc: FactsJson = serde_json::from_value(serde_json::json!({
            "entities": [
                { "type": "account", "id": "victim" },
                { "type": "account", "id": "evil" },
                { "type": "station", "id": "x", "account": "victim" }
            ],
            "tuples": []
        }))
        .unwrap_or_default();
        Facts::from_doc(doc).unwrap_or_default()
    }

    fn deltas(v: serde_json::Value) -> Vec<Delta> {
        serde_json::from_value(v).unwrap_or_default()
    }

    /// An entity that exists is of its own account, whatever an earlier write of the group
    /// claimed by creating one of that name; a creation counts the account it names too.
    #[test]
    fn the_accounts_a_write_touches_are_those_of_the_entities_as_they_are() {
        let facts = facts();
        assert_eq!(facts.entities.len(), 3);
        let claim = deltas(serde_json::json!([
            { "op": "add_entity", "entity": { "type": "station", "id": "x", "account": "evil" } }
        ]));
        let earlier: HashMap<String, String> = created_accounts(&claim);
        assert_eq!(
            earlier.get("station:x").map(String::as_str),
            Some("account:evil")
        );
        let set = deltas(serde_json::json!([
            { "op": "set_attr", "entity": "station:x", "attr": "code", "value": "X" }
        ]));
        assert_eq!(touched_accounts(&facts, &earlier, &set), ["account:victim"]);
        let moved = deltas(serde_json::json!([
            { "op": "remove_entity", "entity": "station:x" },
            { "op": "add_entity", "entity": { "type": "station", "id": "x", "account": "evil" } }
        ]));
        assert_eq!(
            touched_accounts(&facts, &HashMap::new(), &moved),
            ["account:evil", "account:victim"]
        );
        let new = deltas(serde_json::json!([
            { "op": "set_attr", "entity": "station:y", "attr": "code", "value": "Y" }
        ]));
        let made = deltas(serde_json::json!([
            { "op": "add_entity", "entity": { "type": "station", "id": "y", "account": "evil" } }
        ]));
        assert_eq!(
            touched_accounts(&facts, &created_accounts(&made), &new),
            ["account:evil"]
        );
    }
}
