//! The HTTP face of the service: the one route table ([`ROUTES`]) the router serves and
//! the OpenAPI document describes, and the handlers, a file per group of routes, each
//! reading its body, deciding who may call it, and calling the service.

pub mod access;
pub mod client;
pub mod decide;
pub mod error;
pub mod extract;
pub mod feed;
pub mod serve;
pub mod slice;
pub mod write;

pub use client::TrustedProxies;
pub use extract::Peer;
pub use serve::{ServerLimits, serve, serve_with_limits};

use crate::api::access::admin_only;
use crate::api::decide::{
    AccountQuery, ActionsBody, BatchBody, DemoTokenBody, PrincipalsBody, ResourcesBody,
    allowed_actions, check, check_batch, demo_token, explain, facts, healthz, matrix, metrics,
    metrics_answer, principals, readyz, resources, revision,
};
use crate::api::extract::{S, authenticated, declared_length};
use crate::api::feed::{Since, changes};
use crate::api::slice::{PolicyBody, reload, slice, slice_keys, validate};
use crate::api::write::write;
use crate::codes::Code;
use crate::routes::{
    Answer, Availability, Callers, Deployment, Failure, Input, Method, Route, inline, named,
};
use crate::schemas::{self, MinRevision, ServerClock};
use crate::service::error::ServiceError;
use crate::service::queue::WriteBody;
use crate::service::state::Service;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::Response;
use axum::routing::on;
use axum::{Json, Router};
use clearance_core::{AccessMatrix, DecisionView, ErrorData, Explanation, FactsJson, Request};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub(crate) const DECIDERS: &str = "an admin key; a service or read key of the principal's account; a user token for itself only, decided at the server's clock (a `now` is refused)";

pub(crate) const FORBIDDEN: Failure = Failure {
    status: 403,
    when: "a caller not scoped to it (auth.forbidden), or a user failing its gates (gate.*)",
};
pub(crate) const INTERNAL: Failure = Failure {
    status: 500,
    when: "the host failed (host.internal, host.trap, host.protocol); nothing was written",
};
pub(crate) const BUSY: Failure = Failure {
    status: 503,
    when: "every instance is busy (host.busy); retry after retry-after",
};
pub(crate) const WAITED: Failure = Failure {
    status: 503,
    when: "`min_revision` did not come within 2 s (revision.unavailable), or every instance is busy (host.busy)",
};
pub(crate) const BAD_REQUEST: Failure = Failure {
    status: 400,
    when: "a request the module refuses (request.invalid, request.now_not_allowed)",
};
/// The errors of a route that decides.
pub(crate) const DECIDING: &[Failure] = &[BAD_REQUEST, FORBIDDEN, INTERNAL, WAITED];

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
        input: Input::Body(inline::<MinRevision<ServerClock<PrincipalsBody>>>),
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
        callers: Callers::Admin,
        input: Input::Body(named::<PolicyBody>),
        answer: Answer::Json(named::<schemas::Validated>),
        failures: &[
            Failure {
                status: 400,
                when: "a policy set that does not compile (policy.invalid, with `errors`)",
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
        callers: Callers::Admin,
        input: Input::Body(named::<PolicyBody>),
        answer: Answer::Json(named::<schemas::Reloaded>),
        failures: &[
            Failure {
                status: 400,
                when: "a policy set that does not compile or that a fact breaks (policy.invalid with `errors`, facts.*), or no sources and no policy directory (policy.missing, policy.unreadable)",
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
        callers: Callers::Admin,
        input: Input::Nothing,
        answer: Answer::Text(crate::observe::CONTENT_TYPE),
        failures: &[],
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

/// The router of the API: every route of [`ROUTES`] this service serves, those that need
/// a credential behind [`authenticated`]; the body limit, and the API's error shape for
/// unknown routes and methods.
pub fn router(service: Arc<Service>) -> Router {
    let limit = service.config.body_limit;
    let deployment = service.deployment();
    let not_found = || async { ServiceError::new(Code::RouteUnknown, "no such route") };
    let mut routes = Router::new();
    for route in ROUTES.iter().filter(|r| r.is_served(deployment)) {
        let handler = (route.handler)(route.method.filter());
        let handler = match route.callers {
            Callers::Anyone => handler,
            Callers::Authenticated => handler.route_layer(axum::middleware::from_fn_with_state(
                Arc::clone(&service),
                authenticated,
            )),
            // The admin check is inside the authentication: it reads the caller that
            // proved itself.
            Callers::Admin => handler
                .route_layer(axum::middleware::from_fn(admin_only))
                .route_layer(axum::middleware::from_fn_with_state(
                    Arc::clone(&service),
                    authenticated,
                )),
        };
        routes = routes.route(route.path, handler);
    }
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(|| async {
            ServiceError::new(Code::RouteMethod, "this route does not take that method")
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
pub(crate) async fn observe_request(
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
    let client = req.extensions().get::<Peer>().map(|p| p.0);
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
        client = client.map(tracing::field::display),
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

pub(crate) async fn openapi(State(s): S) -> Json<Value> {
    Json(s.document())
}

/// Where the operations console's files are: `web/` (the page under `console/`, the
/// package's `index.js` and its modules under `lib/`) and the directory of the module the
/// host runs, so the page runs exactly the host's bytes.
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

/// The modules of the JS package beside its `index.js` (`web/lib/`), which `index.js`
/// imports: served by name, as the module's files are, and nothing else of that directory.
pub const PACKAGE_MODULES: [&str; 7] = [
    "answers.js",
    "errors.js",
    "feed.js",
    "session.js",
    "slices.js",
    "values.js",
    "wire.js",
];

/// The origins whose pages may call the API from a browser (CORS), as
/// `scheme://host[:port]`.
#[derive(Debug, Clone, Default)]
pub struct CorsOrigins(Vec<axum::http::HeaderValue>);

impl CorsOrigins {
    /// From origins as a browser sends them (`https://ops.example.com`,
    /// `http://localhost:5173`): no path, no wildcard.
    pub fn parse<S: AsRef<str>>(origins: &[S]) -> Result<CorsOrigins, String> {
        origins
            .iter()
            .map(|o| {
                let o = o.as_ref().trim();
                let host = o
                    .strip_prefix("https://")
                    .or_else(|| o.strip_prefix("http://"))
                    .unwrap_or_default();
                if host.is_empty() || host.contains(['/', '*', ' ', '?', '#', '@']) {
                    return Err(format!(
                        "--cors-origin `{o}`: an origin is `https://host` or `https://host:port`, with no path and no wildcard"
                    ));
                }
                axum::http::HeaderValue::from_str(o)
                    .map_err(|e| format!("--cors-origin `{o}`: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(CorsOrigins)
    }

    /// Whether no origin is listed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Lets the pages of `origins`, and only them, call `router` from a browser: preflights
/// answered for the API's methods and the headers its clients send (a credential, JSON,
/// a trace, a feed's resume point), credentials allowed for those origins, `retry-after`
/// readable. No origin listed: the router as it is (browsers then call it same-origin
/// only).
pub fn with_cors(router: Router, origins: &CorsOrigins) -> Router {
    use axum::http::{HeaderName, Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return router;
    }
    router.layer(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.0.iter().cloned()))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("last-event-id"),
                HeaderName::from_static("traceparent"),
            ])
            .expose_headers([header::RETRY_AFTER])
            .allow_credentials(true)
            .max_age(Duration::from_secs(600)),
    )
}

/// Adds the operations console the binary carries ([`crate::embedded::CONSOLE`]) to a
/// router, at the paths [`with_console`] serves a `web/` directory at, and the module
/// `wasm` (SHA-256 `sha256`) the page runs at `/pkg/clearance_bg.wasm`: the one the server
/// runs. An error if the binary carries no console (it was built before the module).
pub fn with_embedded_console(
    router: Router,
    wasm: axum::body::Bytes,
    sha256: &str,
) -> Result<Router, String> {
    use axum::http::header;
    if crate::embedded::CONSOLE.is_empty() {
        return Err(
            "this binary carries no console (it was built before `cargo xtask wasm`): rebuild it after `cargo xtask wasm`, or give --web DIR"
                .into(),
        );
    }
    let file = |bytes: axum::body::Bytes, ty: &'static str| {
        axum::routing::get(move || {
            let bytes = bytes.clone();
            async move { ([(header::CONTENT_TYPE, ty)], bytes) }
        })
    };
    let mut router = router;
    for (path, bytes) in crate::embedded::CONSOLE {
        let served = axum::body::Bytes::from_static(bytes);
        let ty = content_type(path);
        if *path == "console/index.html" {
            router = router.route("/", file(served.clone(), ty));
        }
        router = router.route(&format!("/{path}"), file(served, ty));
    }
    Ok(router
        .route("/pkg/clearance_bg.wasm", file(wasm, "application/wasm"))
        .route(
            "/pkg/clearance_bg.wasm.sha256",
            file(
                axum::body::Bytes::from(format!("{sha256}\n")),
                "text/plain; charset=utf-8",
            ),
        ))
}

/// The content type of a console file, by its extension.
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("wasm") => "application/wasm",
        Some("ts") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Adds the operations console to a router: the page at `/`, its files under `/console`,
/// the JS package at `/index.js` with its modules ([`PACKAGE_MODULES`], by name) under
/// `/lib`, and the module's own files ([`MODULE_FILES`], by name) under `/pkg`.
pub fn with_console(router: Router, files: &ConsoleFiles) -> Router {
    use tower_http::services::{ServeDir, ServeFile};
    let router = router
        .route_service("/", ServeFile::new(files.web.join("console/index.html")))
        .route_service("/index.js", ServeFile::new(files.web.join("index.js")))
        .nest_service("/console", ServeDir::new(files.web.join("console")));
    let lib = files.web.join("lib");
    let router = PACKAGE_MODULES.iter().fold(router, |router, name| {
        router.route_service(&format!("/lib/{name}"), ServeFile::new(lib.join(name)))
    });
    MODULE_FILES.iter().fold(router, |router, name| {
        router.route_service(
            &format!("/pkg/{name}"),
            ServeFile::new(files.pkg.join(name)),
        )
    })
}
