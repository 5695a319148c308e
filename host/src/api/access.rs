//! Who may ask what: a caller's scope over principals, accounts and entities, a user's
//! gates, the server's clock for users, and `min_revision` waited for.
//!
//! A deciding route's handler never checks these itself: it takes its body as
//! [`Asked`], which reads the body ([`Fresh`], so `min_revision` is waited for) and hands
//! over only what the body asks once it is checked against the caller who sent it: the
//! principal in the caller's scope, `now` the server's clock for a user.

use crate::api::extract::ApiJson;
use crate::auth::{Caller, Scope};
use crate::codes::Code;
use crate::service::error::{ServiceError, forbidden};
use crate::service::state::{Served, Service, account_key};
use axum::extract::FromRequest;
use clearance_core::TimeValue;
use clearance_core::protocol::Call;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Refuses, before its handler runs and its body is read, a caller of an admin route
/// ([`crate::routes::Callers::Admin`]) that is not an admin key; runs inside
/// [`authenticated`](crate::api::extract::authenticated), which gives the caller.
pub(crate) async fn admin_only(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match req.extensions().get::<Caller>() {
        Some(caller) if caller.is_admin() => next.run(req).await,
        Some(_) => forbidden("this route needs an admin key").into_response(),
        None => {
            ServiceError::internal("an admin route is served without a credential").into_response()
        }
    }
}

/// What a caller may touch, checked against the facts being served.
pub(crate) struct Access<'a> {
    pub(crate) caller: &'a Caller,
    pub(crate) served: &'a Served,
}

impl Access<'_> {
    /// The account of an entity, `account:<id>`.
    pub(crate) fn account_of(&self, entity: &str) -> Option<String> {
        self.served
            .facts
            .read()
            .entities
            .get(entity)
            .map(|e| account_key(&e.account))
    }

    /// Whether a key's accounts hold `account`.
    pub(crate) fn scoped(accounts: &[String], account: Option<&str>) -> bool {
        account.is_some_and(|a| accounts.iter().any(|x| x == a))
    }

    /// Deciding, listing or explaining for `principal`.
    pub(crate) fn decide_for(&self, principal: &str) -> Result<(), ServiceError> {
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
    pub(crate) fn read_account(
        &self,
        account: Option<&str>,
        users: bool,
    ) -> Result<(), ServiceError> {
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
pub(crate) async fn user_gates(s: &Service, caller: &Caller) -> Result<(), ServiceError> {
    let Caller::User { principal } = caller else {
        return Ok(());
    };
    let call = Call::Gates {
        principal: principal.clone(),
        now: TimeValue::Seconds(s.clock()),
    };
    let answer = s.runtime.run(&call).await?;
    let view: clearance_core::DecisionView = serde_json::from_value(answer).map_err(|e| {
        ServiceError::new(
            Code::HostProtocol,
            format!("unreadable answer to `gates`: {e}"),
        )
        .help("the module and the host disagree on the protocol")
    })?;
    if view.allowed {
        return Ok(());
    }
    let (code, message) = view.reasons.first().map_or_else(
        || {
            (
                Code::AuthForbidden.as_str().to_string(),
                "the caller's gates failed".to_string(),
            )
        },
        |r| (r.code.clone(), r.message.clone()),
    );
    Err(ServiceError::gate(
        &code,
        format!("`{principal}` may read nothing yet: {message}"),
    ))
}

/// The caller may decide, list or explain for `principal` (its scope, against the facts
/// being served).
pub(crate) fn decide_for(
    s: &Service,
    caller: &Caller,
    principal: &str,
) -> Result<(), ServiceError> {
    let served = s.served();
    Access {
        caller,
        served: &served,
    }
    .decide_for(principal)
}

/// The time a request is decided at: the server's clock for a user, who may not send
/// one; for a key, the request's own, or the server's clock when it gives none.
pub(crate) fn clock_for(
    s: &Service,
    caller: &Caller,
    now: Option<TimeValue>,
) -> Result<TimeValue, ServiceError> {
    match (caller, now) {
        (Caller::User { .. }, Some(_)) => Err(now_not_allowed()),
        (Caller::User { .. }, None) => Ok(TimeValue::Seconds(s.clock())),
        (_, Some(now)) => Ok(now),
        (_, None) => Ok(TimeValue::Seconds(s.clock())),
    }
}

/// The answer to a user's request that names a `now`.
pub(crate) fn now_not_allowed() -> ServiceError {
    ServiceError::new(
        Code::RequestNowNotAllowed,
        "a user token is decided at the server's clock: leave `now` out",
    )
}

/// A body that may ask to be decided at a revision at least as new as its
/// `min_revision`.
pub(crate) trait AtRevision {
    /// The revision the body asks for, if any.
    fn min_revision(&self) -> Option<u64>;
}

/// A body read as [`ApiJson`] and handed to its handler only once the host serves the
/// revision it asks for ([`AtRevision`]): waited for briefly, then 503
/// `revision.unavailable`. Every deciding route reads its body through it, so none can
/// forget the wait.
pub(crate) struct Fresh<T>(pub T);

impl<T: AtRevision + DeserializeOwned + Send + 'static> FromRequest<Arc<Service>> for Fresh<T> {
    type Rejection = ServiceError;

    async fn from_request(
        req: axum::extract::Request,
        state: &Arc<Service>,
    ) -> Result<Self, ServiceError> {
        let ApiJson(body) = ApiJson::<T>::from_request(req, state).await?;
        wait_for_revision(state, body.min_revision()).await?;
        Ok(Fresh(body))
    }
}

/// Waits briefly for revision `min`, when given, or fails clearly.
pub(crate) async fn wait_for_revision(s: &Service, min: Option<u64>) -> Result<(), ServiceError> {
    let Some(min) = min else {
        return Ok(());
    };
    if min > s.revision() {
        s.follow_now();
    }
    let mut rx = s.revision.subscribe();
    let wait = tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|r| *r >= min)).await;
    match wait {
        Ok(Ok(_)) => Ok(()),
        _ => Err(ServiceError::new(
            Code::RevisionUnavailable,
            format!("revision {min} is not here yet (current {})", s.revision()),
        )),
    }
}

/// A deciding body, made into what it asks for the caller that sent it.
pub(crate) trait Ask: AtRevision + DeserializeOwned + Send + 'static {
    /// What is asked, once checked against the caller (a request to decide, a call).
    type Asked: Send;

    /// What the body asks for `caller`; refused when the caller may not ask it.
    fn ask(
        self,
        s: &Arc<Service>,
        caller: &Caller,
    ) -> impl Future<Output = Result<Self::Asked, ServiceError>> + Send;
}

/// A body read through [`Fresh`] and made into what it asks for its caller ([`Ask`]),
/// before the handler runs: the scope over principals and the server's clock are checked
/// here, once for every deciding route.
pub(crate) struct Asked<T: Ask>(pub T::Asked);

impl<T: Ask> FromRequest<Arc<Service>> for Asked<T> {
    type Rejection = ServiceError;

    async fn from_request(
        req: axum::extract::Request,
        state: &Arc<Service>,
    ) -> Result<Self, ServiceError> {
        let caller = req.extensions().get::<Caller>().cloned().ok_or_else(|| {
            ServiceError::internal("a deciding route is served without a credential")
        })?;
        let Fresh(body) = Fresh::<T>::from_request(req, state).await?;
        body.ask(state, &caller).await.map(Asked)
    }
}
