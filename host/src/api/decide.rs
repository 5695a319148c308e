//! The routes that decide: check, batch, allowed actions, resource and principal lists,
//! explain, the access-rights matrix and an account's facts; and the routes that tell
//! what the service is (revision, metrics, health, readiness, the demo issuer).

use crate::api::access::clock_for;
use crate::api::access::decide_for;
use crate::api::access::{Access, user_gates};
use crate::api::access::{Ask, Asked, AtRevision};
use crate::api::error::{ApiResult, answer};
use crate::api::extract::{ApiJson, ApiPath, ApiQuery, S};
use crate::auth::{Caller, Scope};
use crate::clock::now_seconds;
use crate::codes::Code;
use crate::observe::Decided;
use crate::runtime::{HostError, Turn};
use crate::schemas::{self, ServerClock};
use crate::service::error::{ServiceError, forbidden};
use crate::service::state::{Service, account_key, blocking};
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use clearance_core::protocol::Call;
use clearance_core::{Facts, FactsJson, Request, TimeValue};
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;

/// `{principal}`: the user a demo token is for.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DemoTokenBody {
    /// The principal, `user:<id>`.
    pub(crate) principal: String,
}

/// The demo issuer (`serve --demo` only): a token for a principal of the facts, valid
/// for an hour, signed by a key made at start-up and verified like any other.
pub(crate) async fn demo_token(State(s): S, ApiJson(body): ApiJson<DemoTokenBody>) -> ApiResult {
    let Some(issuer) = &s.config.demo else {
        return Err(ServiceError::new(
            Code::RouteUnknown,
            "no demo issuer runs here",
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
        return Err(
            ServiceError::new(Code::EntityUnknown, format!("no principal `{principal}`"))
                .help("name a principal of the demo data, as `type:id`"),
        );
    }
    let now = now_seconds();
    let ttl = 3600;
    let token = issuer
        .token(&principal, now, ttl)
        .map_err(ServiceError::internal)?;
    answer(schemas::DemoToken {
        token,
        principal,
        expires: now + ttl,
    })
}

/// Runs `call` through the module and answers with its result as the module wrote it:
/// the JSON text passes through unparsed; the metrics and the request's log line read
/// what was decided from it, typed ([`Decided`]).
pub(crate) async fn op(s: &Service, call: Call) -> Result<Response, ServiceError> {
    let name = call.op().spec().map_or("unknown", |spec| spec.name);
    let counted = matches!(name, "check" | "check_batch" | "explain");
    let started = std::time::Instant::now();
    let span = tracing::info_span!("module", op = name);
    let answer = tracing::Instrument::instrument(decide(s, call, counted), span).await;
    s.metrics.op(name, started.elapsed());
    let (body, decided) = answer?;
    if let Some(decided) = decided {
        s.metrics.decisions(name, &decided);
        crate::observe::note(|n| n.decision = decided.note());
    }
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The most requests of a batch decided in one call: a larger batch is decided a chunk at
/// a time, each chunk waiting for an instance as a single check does, so that another
/// caller's check waits for a chunk at most, never for a whole batch.
pub(crate) const BATCH_CHUNK: usize = 256;

/// Runs `call` on the instances, answered with the module's JSON text and, when
/// `counted`, what it decided (read where the module answered, under its permit); a batch
/// of more than [`BATCH_CHUNK`] requests a chunk at a time, each chunk decided at the
/// latest revision when it runs, the chunks' lists joined into one off the async
/// workers.
pub(crate) async fn decide(
    s: &Service,
    call: Call,
    counted: bool,
) -> Result<(String, Option<Decided>), ServiceError> {
    let read: fn(&str) -> Option<Decided> = if counted {
        |text| Some(Decided::read(text))
    } else {
        |_| None
    };
    let requests = match call {
        Call::CheckBatch { requests } if requests.len() > BATCH_CHUNK => requests,
        call => {
            let (raw, decided) = s.runtime.run_raw_with(&call, read).await?;
            return Ok((String::from(Box::<str>::from(raw)), decided));
        }
    };
    let mut parts = Vec::new();
    let mut decided = Decided {
        each: Vec::with_capacity(requests.len()),
        list: true,
    };
    let mut rest = requests.into_iter();
    loop {
        let chunk: Vec<Request> = rest.by_ref().take(BATCH_CHUNK).collect();
        if chunk.is_empty() {
            break;
        }
        let (part, seen) = s
            .runtime
            .run_raw_with(&Call::CheckBatch { requests: chunk }, read)
            .await?;
        if let Some(seen) = seen {
            decided.each.extend(seen.each);
        }
        parts.push(part);
    }
    let text = blocking(move || {
        let mut joined = String::from("[");
        for part in &parts {
            let inner = part
                .get()
                .trim()
                .strip_prefix('[')
                .and_then(|p| p.strip_suffix(']'))
                .ok_or_else(|| {
                    ServiceError::from(HostError::Protocol("a batch's answer is not a list".into()))
                })?
                .trim();
            if !inner.is_empty() {
                if joined.len() > 1 {
                    joined.push(',');
                }
                joined.push_str(inner);
            }
        }
        joined.push(']');
        Ok(joined)
    })
    .await?;
    Ok((text, counted.then_some(decided)))
}

/// The body of a check or an explanation, read typed: the request, `now` (which a user
/// leaves out: the server's clock decides for users) and `min_revision`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecideBody {
    principal: String,
    action: String,
    resource: String,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    now: Option<TimeValue>,
    #[serde(default)]
    min_revision: Option<u64>,
}

impl Ask for DecideBody {
    type Asked = Request;

    /// The request to decide for `caller` ([`RequestBody::request`]).
    async fn ask(self, s: &Arc<Service>, caller: &Caller) -> Result<Request, ServiceError> {
        let one = RequestBody {
            principal: self.principal,
            action: self.action,
            resource: self.resource,
            target: self.target,
            now: self.now,
        };
        one.request(s, caller)
    }
}

/// A batch's requests, each checked against its caller; a batch of more than
/// [`BATCH_CHUNK`] requests holds one of its caller's turns, taken before its requests
/// are checked, until it is decided.
pub(crate) struct Batch {
    requests: Vec<Request>,
    turn: Option<Turn>,
}

impl Ask for BatchBody {
    type Asked = Batch;

    /// The batch's requests for `caller`, within the batch limit and charged to the
    /// caller's budget before any is checked.
    async fn ask(self, s: &Arc<Service>, caller: &Caller) -> Result<Batch, ServiceError> {
        let n = self.requests.len();
        if n > s.config.max_batch {
            return Err(ServiceError::new(
                Code::RequestTooMany,
                format!(
                    "{n} requests in one batch; the limit is {}",
                    s.config.max_batch
                ),
            )
            .help("split the batch"));
        }
        s.charge(caller, n, || format!("a batch of {n} requests"))?;
        let read = {
            let (s, caller) = (Arc::clone(s), caller.clone());
            move || {
                self.requests
                    .into_iter()
                    .map(|r| r.request(&s, &caller))
                    .collect::<Result<Vec<Request>, ServiceError>>()
            }
        };
        if n <= BATCH_CHUNK {
            return Ok(Batch {
                requests: read()?,
                turn: None,
            });
        }
        // A large batch is checked and decided in one of its caller's turns, and checked
        // off the async workers, which serve every other caller's requests meanwhile.
        let turn = s.runtime.turn(&caller.name()).await?;
        Ok(Batch {
            requests: blocking(read).await?,
            turn: Some(turn),
        })
    }
}

/// The bodies that may name a `min_revision`: read through [`Fresh`], which waits for it.
macro_rules! at_revision {
    ($($body:ty),+) => {
        $(impl AtRevision for $body {
            fn min_revision(&self) -> Option<u64> {
                self.min_revision
            }
        })+
    };
}

at_revision!(
    DecideBody,
    BatchBody,
    ActionsBody,
    ResourcesBody,
    PrincipalsBody
);

/// `{requests: [...]}`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchBody {
    /// The requests, decided in order.
    #[schemars(with = "Vec<ServerClock<Request>>")]
    pub(crate) requests: Vec<RequestBody>,
    #[serde(default)]
    #[schemars(skip)]
    pub(crate) min_revision: Option<u64>,
}

/// A request of a batch as sent: `now` left out by users.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequestBody {
    principal: String,
    action: String,
    resource: String,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    now: Option<TimeValue>,
}

impl RequestBody {
    /// The request to decide for `caller`, who must be scoped to its principal, at the
    /// server's clock for a user (who may not send `now`), at its own `now` for a key.
    fn request(self, s: &Service, caller: &Caller) -> Result<Request, ServiceError> {
        decide_for(s, caller, &self.principal)?;
        Ok(Request {
            now: clock_for(s, caller, self.now)?,
            principal: self.principal,
            action: self.action,
            resource: self.resource,
            target: self.target,
        })
    }
}

/// `{principal, resource, now}`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActionsBody {
    /// The principal, `type:id`.
    pub(crate) principal: String,
    /// The resource, `type:id`, or a page `matrix:row`.
    pub(crate) resource: String,
    /// The time of the request.
    // Not `serde(default)`: a missing `Option` is `None` already, and the schema keeps
    // no `default` (the document says when it may be left out).
    #[schemars(with = "TimeValue")]
    pub(crate) now: Option<TimeValue>,
    #[serde(default)]
    #[schemars(skip)]
    pub(crate) min_revision: Option<u64>,
}

/// `{principal, action, type, now}`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResourcesBody {
    /// The principal, `type:id`.
    pub(crate) principal: String,
    /// The action.
    pub(crate) action: String,
    /// The entity type, or a matrix (its rows are listed).
    #[serde(rename = "type")]
    pub(crate) ty: String,
    /// The time of the request.
    // Not `serde(default)`: a missing `Option` is `None` already, and the schema keeps
    // no `default` (the document says when it may be left out).
    #[schemars(with = "TimeValue")]
    pub(crate) now: Option<TimeValue>,
    #[serde(default)]
    #[schemars(skip)]
    pub(crate) min_revision: Option<u64>,
}

/// `{resource, action, now, account?}`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PrincipalsBody {
    /// The resource, `type:id`, or a page `matrix:row`.
    pub(crate) resource: String,
    /// The action.
    pub(crate) action: String,
    /// The time of the request.
    #[schemars(with = "TimeValue")]
    pub(crate) now: Option<TimeValue>,
    /// For a page: only this account's principals.
    pub(crate) account: Option<String>,
    #[serde(default)]
    #[schemars(skip)]
    pub(crate) min_revision: Option<u64>,
}

impl Ask for ActionsBody {
    type Asked = Call;

    /// The actions `principal` may take on the resource, for a caller scoped to it.
    async fn ask(self, s: &Arc<Service>, caller: &Caller) -> Result<Call, ServiceError> {
        decide_for(s, caller, &self.principal)?;
        Ok(Call::AllowedActions {
            now: clock_for(s, caller, self.now)?,
            principal: self.principal,
            resource: self.resource,
        })
    }
}

impl Ask for ResourcesBody {
    type Asked = Call;

    /// The resources `principal` may act on, for a caller scoped to it.
    async fn ask(self, s: &Arc<Service>, caller: &Caller) -> Result<Call, ServiceError> {
        decide_for(s, caller, &self.principal)?;
        Ok(Call::ListResources {
            now: clock_for(s, caller, self.now)?,
            principal: self.principal,
            action: self.action,
            ty: self.ty,
        })
    }
}

impl Ask for PrincipalsBody {
    type Asked = Call;

    /// Who may act on a resource names other principals: keys only, for the resource's
    /// account (or, for a page, the account named).
    async fn ask(self, s: &Arc<Service>, caller: &Caller) -> Result<Call, ServiceError> {
        let PrincipalsBody {
            resource,
            action,
            now,
            account,
            ..
        } = self;
        {
            let served = s.served();
            let access = Access {
                caller,
                served: &served,
            };
            let of = access
                .account_of(&resource)
                .or_else(|| account.as_deref().map(account_key));
            access.read_account(of.as_deref(), false)?;
        }
        Ok(Call::ListPrincipals {
            now: clock_for(s, caller, now)?,
            resource,
            action,
            account,
        })
    }
}

pub(crate) async fn revision(State(s): S, _caller: Caller) -> ApiResult {
    let served = s.served();
    answer(schemas::Revision {
        revision: served.revision,
        policy_hash: served.schema.hash_hex(),
        module_hash: s.runtime.module_hash().to_string(),
    })
}

pub(crate) async fn metrics(State(s): S) -> Result<Response, ServiceError> {
    metrics_answer(&s)
}

/// The metrics as `/metrics` answers them.
pub(crate) fn metrics_answer(s: &Service) -> Result<Response, ServiceError> {
    let text = s
        .metrics_text()
        .map_err(|e| ServiceError::internal(format!("writing the metrics: {e}")))?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            crate::observe::CONTENT_TYPE,
        )],
        text,
    )
        .into_response())
}

pub(crate) async fn healthz(State(_s): S) -> ApiResult {
    answer(schemas::Alive { alive: true })
}

pub(crate) async fn readyz(State(s): S) -> ApiResult {
    match s.readiness() {
        Ok(ready) => answer(ready),
        Err(why) => Err(ServiceError::new(Code::HostNotReady, why)
            .help("wait, or send traffic to another host")),
    }
}

pub(crate) async fn check(
    State(s): S,
    Asked(request): Asked<DecideBody>,
) -> Result<Response, ServiceError> {
    op(&s, Call::Check { request }).await
}

pub(crate) async fn check_batch(
    State(s): S,
    Asked(batch): Asked<BatchBody>,
) -> Result<Response, ServiceError> {
    let Batch { requests, turn } = batch;
    let answer = op(&s, Call::CheckBatch { requests }).await;
    drop(turn);
    answer
}

pub(crate) async fn allowed_actions(
    State(s): S,
    Asked(call): Asked<ActionsBody>,
) -> Result<Response, ServiceError> {
    op(&s, call).await
}

pub(crate) async fn resources(
    State(s): S,
    caller: Caller,
    Asked(call): Asked<ResourcesBody>,
) -> Result<Response, ServiceError> {
    // A list is as long as the account is large: it takes one of its caller's turns.
    let _turn = s.runtime.turn(&caller.name()).await?;
    op(&s, call).await
}

pub(crate) async fn principals(
    State(s): S,
    caller: Caller,
    Asked(call): Asked<PrincipalsBody>,
) -> Result<Response, ServiceError> {
    let _turn = s.runtime.turn(&caller.name()).await?;
    op(&s, call).await
}

pub(crate) async fn explain(
    State(s): S,
    Asked(request): Asked<DecideBody>,
) -> Result<Response, ServiceError> {
    op(&s, Call::Explain { request }).await
}

/// `?account=`.
#[derive(Deserialize, JsonSchema)]
pub(crate) struct AccountQuery {
    /// An account's id: only its data.
    pub(crate) account: Option<String>,
}

pub(crate) async fn matrix(
    State(s): S,
    caller: Caller,
    ApiPath(matrix): ApiPath<String>,
    ApiQuery(q): ApiQuery<AccountQuery>,
) -> Result<Response, ServiceError> {
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

pub(crate) async fn facts(
    State(s): S,
    caller: Caller,
    ApiQuery(q): ApiQuery<AccountQuery>,
) -> ApiResult {
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
            .map_err(|e| ServiceError::internal(e.to_string()))
    })
    .await
}

/// The facts of one account (`account:<id>`): its entities and the tuples on them.
pub(crate) fn account_facts(facts: &Facts, account: &str) -> FactsJson {
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
