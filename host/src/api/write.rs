//! The write route: the body read, the author authorised (who may write as whom, in which
//! accounts), the deltas charged to the caller's budget and what they create to the
//! creation quotas, then the write queued for the group commit.

use crate::api::access::Access;
use crate::api::error::{ApiResult, answer};
use crate::api::extract::{ApiJson, S};
use crate::auth::{Caller, Scope};
use crate::codes::Code;
use crate::codes::Kind;
use crate::service::commit::queue_write;
use crate::service::error::{ServiceError, forbidden};
use crate::service::queue::{Authored, WriteBody};
use crate::service::state::Service;
use axum::extract::State;
use serde_json::json;

pub(crate) fn authorise_write(
    s: &Service,
    caller: &Caller,
    body: &WriteBody,
) -> Result<Authored, ServiceError> {
    if body.deltas.is_empty() {
        return Err(ServiceError::new(
            Code::RequestEmpty,
            "a write with no deltas changes nothing",
        )
        .help("nothing was written"));
    }
    if body.deltas.len() > s.config.max_deltas {
        return Err(ServiceError::new(
            Code::RequestTooMany,
            format!(
                "{} deltas in one write; the limit is {}",
                body.deltas.len(),
                s.config.max_deltas
            ),
        )
        .help("split the write; nothing was written"));
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
                return Err(ServiceError::new(
                    Code::RequestNowNotAllowed,
                    "a write is checked at the server's clock: leave `now` out",
                )
                .help("only an admin key importing facts may set `now`; nothing was written"));
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
                ServiceError::new(
                    Code::RequestMalformed,
                    "a write with a key names its `author`, the principal it is made for",
                )
                .help("nothing was written")
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
                Scope::Service => Err(ServiceError::new(
                    Code::RequestNowNotAllowed,
                    "a write is checked at the server's clock: leave `now` out",
                )
                .help("only an admin key importing facts may set `now`; nothing was written")),
                Scope::Read => Err(forbidden("a read key decides only; it cannot write")),
            }
        }
    }
}

pub(crate) async fn write(
    State(s): S,
    caller: Caller,
    body: Result<ApiJson<WriteBody>, ServiceError>,
) -> ApiResult {
    let started = std::time::Instant::now();
    let span = tracing::info_span!("write");
    let answer = tracing::Instrument::instrument(submit(&s, &caller, body), span).await;
    s.metrics.write(answer.is_ok(), started.elapsed());
    answer
}

/// A write's body read, its author authorised, charged its deltas and what it creates
/// taken from the creation quotas; then queued ([`queue_write`]).
pub(crate) async fn submit(
    s: &Service,
    caller: &Caller,
    body: Result<ApiJson<WriteBody>, ServiceError>,
) -> ApiResult {
    let ApiJson(body) = body.map_err(|mut err| {
        if err.kind != Kind::Timeout {
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
    answer(queue_write(s, caller, body, authored, charge).await?)
}
