//! What a queued write carries: its body as the caller sent it, who it is authored as,
//! and where its answer goes, with what it took of the creation quotas.

use crate::limits::Place;
use crate::schemas::Written;
use crate::service::error::ServiceError;

/// What a queued write is answered: the change it became, or why not.
pub(crate) type WriteResult = Result<Written, ServiceError>;
use crate::service::quota::Charge;
use clearance_core::{Delta, Request, TimeValue};
use schemars::JsonSchema;
use serde::Deserialize;

/// Where a queued write's answer goes, with what it took of the creation quotas: kept
/// when the writer answers that it was stored, given back otherwise (the reply dropped
/// unsent too), whether or not its client is still there to read the answer.
pub(crate) struct Reply {
    pub(crate) to: tokio::sync::oneshot::Sender<WriteResult>,
    pub(crate) charge: Option<Charge>,
}

/// A write waiting for the group commit, with where its answer goes.
pub(crate) struct QueuedWrite {
    pub(crate) body: WriteBody,
    pub(crate) authored: Authored,
    pub(crate) reply: Reply,
    /// Who sent it (`Caller::name`): the writer takes callers in turn.
    pub(crate) caller: String,
    /// Its place among the writes waiting, given back once it is answered.
    pub(crate) _place: Place,
}

/// A write: who makes it, the deltas, when, and optionally the parity token of the
/// client-side decision it relied on.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WriteBody {
    /// Who the write is by: a user token's own principal (which it may leave out), or
    /// the principal a key writes on behalf of.
    pub(crate) author: Option<String>,
    /// The changes, applied all or nothing.
    pub(crate) deltas: Vec<Delta>,
    /// When the write is made: only an admin key importing facts sets it.
    pub(crate) now: Option<TimeValue>,
    /// The client-side decision the write relied on.
    pub(crate) parity: Option<ParityToken>,
}

/// What a client-side decision was made on.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ParityToken {
    /// The module that decided (hex SHA-256).
    pub(crate) module_hash: String,
    /// The policy it decided with (hex SHA-256).
    pub(crate) policy_hash: String,
    /// The revision it decided at.
    pub(crate) revision: u64,
    /// The client-side decision itself: the request and its outcome. When the token is
    /// from an older revision, the host decides the request again and refuses the write if
    /// the outcome has changed since.
    pub(crate) request: Option<Request>,
    /// The client-side decision's outcome.
    pub(crate) allowed: Option<bool>,
}

/// A write's author and how it was made, once the caller may make it.
pub(crate) struct Authored {
    pub(crate) author: String,
    /// A user's write: its parity decision is made again at the server's clock.
    pub(crate) user: bool,
    pub(crate) via: Option<String>,
    /// The accounts a key may write to; `None` for an admin (every account).
    pub(crate) accounts: Option<Vec<String>>,
}

impl Reply {
    /// Answers the write; only a stored one (an `Ok` answer) keeps its creations.
    pub(crate) fn send(mut self, answer: WriteResult) -> Result<(), WriteResult> {
        if answer.is_ok()
            && let Some(charge) = self.charge.take()
        {
            charge.keep();
        }
        self.to.send(answer)
    }
}
