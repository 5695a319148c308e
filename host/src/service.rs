//! The HTTP service: the JSON API under `/v1`, deciding only through the wasm module,
//! writing only what the policy allows, durably, and telling followers about every
//! change.

use crate::runtime::{HostError, Runtime};
use crate::store::{Change, FactStore};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clearance_core::{Delta, ErrorData, Facts, FactsJson, Schema, Snapshot, Source, TimeValue};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, broadcast, watch};
use tokio_stream::wrappers::BroadcastStream;

/// Every route of the API: method and path, as the OpenAPI document lists them.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/v1/revision"),
    ("post", "/v1/check"),
    ("post", "/v1/check/batch"),
    ("post", "/v1/allowed-actions"),
    ("post", "/v1/resources"),
    ("post", "/v1/principals"),
    ("post", "/v1/explain"),
    ("get", "/v1/matrix/{matrix}"),
    ("get", "/v1/facts"),
    ("post", "/v1/facts"),
    ("get", "/v1/changes"),
    ("get", "/v1/slice/{principal}"),
    ("post", "/v1/policy/validate"),
    ("post", "/v1/policy/reload"),
    ("get", "/v1/openapi.json"),
];

/// An API error: a status and `{code, message, help}`, always with `"allowed": false`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    data: ErrorData,
    extra: Option<Value>,
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
        }
    }

    fn bad(data: ErrorData) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            data,
            extra: None,
        }
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
            HostError::NotLoaded => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            status,
            data: e.data(),
            extra: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.data, "allowed": false });
        if let (Some(Value::Object(extra)), Some(obj)) = (self.extra, body.as_object_mut()) {
            obj.extend(extra);
        }
        (self.status, Json(body)).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

struct Inner {
    sources: Vec<Source>,
    schema: Arc<Schema>,
    facts: Facts,
    store: Box<dyn FactStore>,
}

/// The service's state.
pub struct Service {
    runtime: Arc<Runtime>,
    inner: Mutex<Inner>,
    changes: broadcast::Sender<Value>,
    revision: watch::Sender<u64>,
    policy_dir: Option<PathBuf>,
}

/// Reads every `*.policy` file of a directory, in name order.
pub fn read_policies(dir: &std::path::Path) -> Result<Vec<Source>, String> {
    clearance_scenarios::policy_sources(dir)
}

impl Service {
    /// Starts the service on a store: facts from the store (or `seed` for an empty one),
    /// compiled with `sources`, loaded into the module.
    pub async fn start(
        runtime: Arc<Runtime>,
        sources: Vec<Source>,
        mut store: Box<dyn FactStore>,
        seed: impl FnOnce() -> Result<Facts, String>,
        policy_dir: Option<PathBuf>,
    ) -> Result<Arc<Service>, String> {
        let schema = Arc::new(Schema::compile(&sources).map_err(|e| e.to_string())?);
        let facts = match store.load().map_err(|e| e.to_string())? {
            Some((base, changes)) => {
                let mut facts = base;
                for c in changes {
                    facts = facts
                        .apply(&c.deltas)
                        .map_err(|e| format!("replaying revision {}: {e}", c.revision))?;
                    facts.revision = c.revision;
                }
                facts
            }
            None => {
                let facts = seed()?;
                store.init(&facts).map_err(|e| e.to_string())?;
                facts
            }
        };
        let snap = Snapshot::build(Arc::clone(&schema), &facts).map_err(|e| e.to_string())?;
        runtime
            .load_snapshot(snap.to_bytes().map_err(|e| e.to_string())?)
            .await
            .map_err(|e| e.to_string())?;
        let (changes, _) = broadcast::channel(256);
        let (revision, _) = watch::channel(facts.revision);
        Ok(Arc::new(Service {
            runtime,
            inner: Mutex::new(Inner {
                sources,
                schema,
                facts,
                store,
            }),
            changes,
            revision,
            policy_dir,
        }))
    }

    /// The current revision.
    pub fn revision(&self) -> u64 {
        *self.revision.borrow()
    }

    /// The SHA-256 of the module the service decides with.
    pub fn module_hash(&self) -> &str {
        self.runtime.module_hash()
    }
}

/// The router of the API.
pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/v1/revision", get(revision))
        .route("/v1/check", post(check))
        .route("/v1/check/batch", post(check_batch))
        .route("/v1/allowed-actions", post(allowed_actions))
        .route("/v1/resources", post(resources))
        .route("/v1/principals", post(principals))
        .route("/v1/explain", post(explain))
        .route("/v1/matrix/{matrix}", get(matrix))
        .route("/v1/facts", get(facts).post(write))
        .route("/v1/changes", get(changes))
        .route("/v1/slice/{principal}", get(slice))
        .route("/v1/policy/validate", post(validate))
        .route("/v1/policy/reload", post(reload))
        .route("/v1/openapi.json", get(openapi))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "route.unknown",
                "no such route",
                "see /v1/openapi.json",
            )
        })
        .with_state(service)
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

/// The body as a call of `op`: the body must be a JSON object.
fn with_op(body: Value, name: &str) -> Result<Value, ApiError> {
    match body {
        Value::Object(mut map) => {
            map.insert("op".into(), json!(name));
            Ok(Value::Object(map))
        }
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "request.malformed",
            "expected a JSON object",
            "see /v1/openapi.json",
        )),
    }
}

async fn op(s: &Service, call: Value) -> ApiResult {
    Ok(Json(s.runtime.call(call.to_string()).await?))
}

async fn revision(State(s): S) -> ApiResult {
    let inner = s.inner.lock().await;
    Ok(Json(
        json!({ "revision": s.revision(), "policy_hash": inner.schema.hash_hex(), "module_hash": s.runtime.module_hash() }),
    ))
}

async fn check(State(s): S, Json(mut body): Json<Value>) -> ApiResult {
    at_least(&s, &mut body).await?;
    op(&s, json!({ "op": "check", "request": body })).await
}

async fn check_batch(State(s): S, Json(mut body): Json<Value>) -> ApiResult {
    at_least(&s, &mut body).await?;
    let requests = body.get("requests").cloned().unwrap_or(Value::Null);
    op(&s, json!({ "op": "check_batch", "requests": requests })).await
}

async fn allowed_actions(State(s): S, Json(mut body): Json<Value>) -> ApiResult {
    at_least(&s, &mut body).await?;
    op(&s, with_op(body, "allowed_actions")?).await
}

async fn resources(State(s): S, Json(mut body): Json<Value>) -> ApiResult {
    at_least(&s, &mut body).await?;
    op(&s, with_op(body, "list_resources")?).await
}

async fn principals(State(s): S, Json(mut body): Json<Value>) -> ApiResult {
    at_least(&s, &mut body).await?;
    op(&s, with_op(body, "list_principals")?).await
}

async fn explain(State(s): S, Json(mut body): Json<Value>) -> ApiResult {
    at_least(&s, &mut body).await?;
    op(&s, json!({ "op": "explain", "request": body })).await
}

#[derive(Deserialize)]
struct AccountQuery {
    account: Option<String>,
}

async fn matrix(
    State(s): S,
    Path(matrix): Path<String>,
    Query(q): Query<AccountQuery>,
) -> ApiResult {
    op(
        &s,
        json!({ "op": "matrix", "matrix": matrix, "account": q.account }),
    )
    .await
}

async fn facts(State(s): S) -> ApiResult {
    let inner = s.inner.lock().await;
    Ok(Json(
        serde_json::to_value(inner.facts.to_doc()).unwrap_or(Value::Null),
    ))
}

/// A write: who makes it, the deltas, when, and optionally the parity token of the
/// client-side decision it relied on.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteBody {
    author: String,
    deltas: Vec<Delta>,
    now: Option<TimeValue>,
    parity: Option<ParityToken>,
}

/// What a client-side decision was made on.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParityToken {
    module_hash: String,
    policy_hash: String,
    revision: u64,
    /// The client-side decision itself: the request and its outcome. When the token is
    /// from an older revision, the host decides the request again and refuses the write if
    /// the outcome has changed since.
    request: Option<Value>,
    allowed: Option<bool>,
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

async fn write(
    State(s): S,
    body: Result<Json<WriteBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let Json(body) = body.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "request.malformed",
            e.body_text(),
            "a write is {author, deltas, now?, parity?}; nothing was written",
        )
    })?;
    let mut inner = s.inner.lock().await;
    if let Some(p) = &body.parity {
        if p.module_hash != s.runtime.module_hash() || p.policy_hash != inner.schema.hash_hex() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "parity.stale",
                format!(
                    "the client decided on module {} and policy {}, the host runs module {} and policy {}",
                    p.module_hash,
                    p.policy_hash,
                    s.runtime.module_hash(),
                    inner.schema.hash_hex()
                ),
                "reload the module and the policy, decide again, then write",
            ));
        }
        if p.revision > s.revision() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "parity.future",
                format!(
                    "the client decided on revision {}, ahead of the host's {}",
                    p.revision,
                    s.revision()
                ),
                "",
            ));
        }
        if let (Some(request), Some(allowed)) = (&p.request, p.allowed)
            && p.revision < s.revision()
        {
            let now = s
                .runtime
                .call(json!({ "op": "check", "request": request }).to_string())
                .await?;
            if now.get("allowed").and_then(Value::as_bool) != Some(allowed) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "parity.outcome_changed",
                    format!(
                        "the client's decision (allowed: {allowed}) was made at revision {}; at revision {} it is no longer so",
                        p.revision,
                        s.revision()
                    ),
                    "decide again on the current facts, then write",
                ));
            }
        }
    }
    let now = body.now.unwrap_or(TimeValue::Seconds(now_seconds()));
    let next = inner
        .facts
        .apply(&body.deltas)
        .map_err(|e| ApiError::bad(e.into()))?;
    let after =
        Snapshot::build(Arc::clone(&inner.schema), &next).map_err(|e| ApiError::bad(e.into()))?;
    let after_bytes = after.to_bytes().map_err(|e| ApiError::bad(e.into()))?;
    let request = json!({ "author": body.author, "now": now, "deltas": body.deltas });
    let verdict = s
        .runtime
        .authorize(request.to_string(), after_bytes.clone())
        .await?;
    if verdict.get("allowed") != Some(&Value::Bool(true)) {
        let refusal = verdict.get("refusal").cloned().unwrap_or(Value::Null);
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
        return Err(e);
    }
    // Tuples the policy adds by itself on creation (EV5) join the same change.
    let derived: Vec<Delta> = verdict
        .get("derived")
        .cloned()
        .map(serde_json::from_value)
        .and_then(Result::ok)
        .unwrap_or_default();
    let mut deltas = body.deltas.clone();
    let (next, after_bytes) = if derived.is_empty() {
        (next, after_bytes)
    } else {
        deltas.extend(derived);
        let next = inner
            .facts
            .apply(&deltas)
            .map_err(|e| ApiError::bad(e.into()))?;
        let after = Snapshot::build(Arc::clone(&inner.schema), &next)
            .map_err(|e| ApiError::bad(e.into()))?;
        (next, after.to_bytes().map_err(|e| ApiError::bad(e.into()))?)
    };
    let change = Change {
        revision: next.revision,
        author: body.author.clone(),
        at: now_seconds(),
        deltas,
    };
    inner.store.append(&change).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store.failed",
            e.to_string(),
            "nothing was written",
        )
    })?;
    s.runtime.load_snapshot(after_bytes).await?;
    inner.facts = next;
    let revision = inner.facts.revision;
    drop(inner);
    s.revision.send_replace(revision);
    let _ = s.changes.send(change_json(&change));
    Ok(Json(json!({ "allowed": true, "revision": revision })))
}

fn change_json(c: &Change) -> Value {
    json!({ "revision": c.revision, "author": c.author, "at": c.at, "deltas": c.deltas })
}

#[derive(Deserialize)]
struct Since {
    since: Option<u64>,
}

async fn changes(
    State(s): S,
    Query(q): Query<Since>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let live = BroadcastStream::new(s.changes.subscribe());
    let since = q.since.unwrap_or_else(|| s.revision());
    let past = {
        let inner = s.inner.lock().await;
        inner.store.changes_since(since).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store.failed",
                e.to_string(),
                "",
            )
        })?
    };
    let last = past.last().map_or(since, |c| c.revision);
    let event = |v: Value| {
        let id = v
            .get("revision")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .to_string();
        Ok(Event::default().event("change").id(id).data(v.to_string()))
    };
    let past = stream::iter(past.into_iter().map(move |c| event(change_json(&c))));
    let live = live.filter_map(move |m| async move {
        match m {
            Ok(v)
                if v.get("revision")
                    .and_then(Value::as_u64)
                    .is_some_and(|r| r > last) =>
            {
                Some(event(v))
            }
            _ => None,
        }
    });
    Ok(Sse::new(past.chain(live)).keep_alive(KeepAlive::default()))
}

/// The facts that can influence a principal's decisions: its account's, and nothing of
/// any other account (tenancy is structural, so nothing outside the account can matter),
/// with the policy to load them under.
async fn slice(State(s): S, Path(principal): Path<String>) -> ApiResult {
    let inner = s.inner.lock().await;
    let Some(p) = inner.facts.entities.get(&principal) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "entity.unknown",
            format!("no principal `{principal}`"),
            "name a principal as `type:id`",
        ));
    };
    let account = p.account.clone();
    let entities: Vec<_> = inner
        .facts
        .to_doc()
        .entities
        .into_iter()
        .filter(|e| e.account.as_deref().unwrap_or(&e.id) == account)
        .collect();
    let keys: std::collections::BTreeSet<String> = entities
        .iter()
        .map(|e| format!("{}:{}", e.ty, e.id))
        .collect();
    let tuples = inner
        .facts
        .to_doc()
        .tuples
        .into_iter()
        .filter(|t| keys.contains(&t.resource))
        .collect();
    let facts = FactsJson {
        revision: inner.facts.revision,
        entities,
        tuples,
    };
    let policy: Vec<Value> = inner
        .sources
        .iter()
        .map(|s| json!({ "name": s.name, "text": s.text }))
        .collect();
    Ok(Json(
        json!({ "principal": principal, "account": account, "revision": inner.facts.revision, "policy_hash": inner.schema.hash_hex(), "policy": policy, "facts": facts }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    sources: Option<Vec<SourceBody>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceBody {
    name: String,
    text: String,
}

fn policy_errors(e: clearance_core::PolicyErrors) -> ApiError {
    let list: Vec<Value> = e.0.iter().map(|x| json!({ "file": x.span.file, "line": x.span.line, "col": x.span.col, "message": x.message })).collect();
    let mut err = ApiError::bad(ErrorData::from(e));
    err.extra = Some(json!({ "errors": list }));
    err
}

async fn validate(Json(body): Json<PolicyBody>) -> ApiResult {
    let sources: Vec<Source> = body
        .sources
        .unwrap_or_default()
        .into_iter()
        .map(|s| Source::new(s.name, s.text))
        .collect();
    let schema = Schema::compile(&sources).map_err(policy_errors)?;
    Ok(Json(
        json!({ "valid": true, "policy_hash": schema.hash_hex() }),
    ))
}

/// Replaces the policy atomically: the new one must compile and every fact must hold under
/// it; otherwise it is refused with its errors and the old one keeps serving.
async fn reload(State(s): S, Json(body): Json<PolicyBody>) -> ApiResult {
    let sources = match body.sources {
        Some(list) => list
            .into_iter()
            .map(|s| Source::new(s.name, s.text))
            .collect(),
        None => match &s.policy_dir {
            Some(dir) => read_policies(dir)
                .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "policy.unreadable", m, ""))?,
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
    let schema = Arc::new(Schema::compile(&sources).map_err(policy_errors)?);
    let mut inner = s.inner.lock().await;
    let snap =
        Snapshot::build(Arc::clone(&schema), &inner.facts).map_err(|e| ApiError::bad(e.into()))?;
    s.runtime
        .load_snapshot(snap.to_bytes().map_err(|e| ApiError::bad(e.into()))?)
        .await?;
    inner.schema = schema;
    inner.sources = sources;
    Ok(Json(
        json!({ "reloaded": true, "policy_hash": inner.schema.hash_hex() }),
    ))
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
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

/// Adds the operations console to a router: the page at `/`, its files under `/console`,
/// the JS package at `/index.js` and the module under `/pkg`.
pub fn with_console(router: Router, files: &ConsoleFiles) -> Router {
    use tower_http::services::{ServeDir, ServeFile};
    router
        .route_service("/", ServeFile::new(files.web.join("console/index.html")))
        .route_service("/index.js", ServeFile::new(files.web.join("index.js")))
        .nest_service("/console", ServeDir::new(files.web.join("console")))
        .nest_service("/pkg", ServeDir::new(&files.pkg))
}

/// Serves the API on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Arc<Service>,
) -> std::io::Result<()> {
    axum::serve(listener, router(service)).await
}
