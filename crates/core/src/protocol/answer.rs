//! What the module's calls answer, typed: each call's answer ([`Answer`]) and the types
//! it is made of, written as JSON inside `{"ok": ...}` by [`Session::answer`](super::Session::answer).

use super::*;

/// What loading a policy answers.
#[derive(Debug, Serialize)]
pub struct PolicyLoaded {
    /// The hash of the policy compiled.
    pub policy_hash: String,
}

/// What is loaded: the answer to `info`, and to loading a snapshot. Hosts read it typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// The core's version.
    pub core_version: String,
    /// How many entities the snapshot holds.
    pub entities: usize,
    /// The hash of the policy it was built under.
    pub policy_hash: String,
    /// Its revision.
    pub revision: u64,
    /// How many tuples it holds.
    pub tuples: usize,
}

/// What `allowed_actions` answers: the actions a principal may take, or none with the
/// denial that says why.
#[derive(Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Actions {
    /// The actions the principal may take on the resource.
    pub actions: Vec<String>,
    /// Why it may take none, when the request itself is denied (an unknown entity, a
    /// failed gate, another account).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denied: Option<crate::DecisionView>,
}

/// A request resolved to its binary query, or its denial.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Resolved {
    /// The request's 24-byte query.
    Query {
        /// The query's bytes.
        query: Vec<u8>,
    },
    /// Why the request does not resolve.
    Denied {
        /// The denial.
        denied: crate::DecisionView,
    },
}

/// A call's answer, typed: what [`Session::run`] gives. [`Session::answer`] writes it as
/// JSON; the module's JS face gives it as a JS value. Written as the value it holds.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Answer {
    /// `load_policy`.
    PolicyLoaded(PolicyLoaded),
    /// `load_facts`, `apply_deltas`, `info`, and loading a snapshot.
    Info(Info),
    /// `check` and `gates`.
    Decision(crate::DecisionView),
    /// `check_batch`.
    Decisions(Vec<crate::DecisionView>),
    /// `allowed_actions`.
    Actions(Actions),
    /// `list_resources` and `list_principals`.
    Names(Vec<String>),
    /// `explain`.
    Explanation(crate::Explanation),
    /// `matrix`.
    Matrix(crate::AccessMatrix),
    /// `resolve`.
    Resolved(Vec<Resolved>),
    /// `write` and `authorize_deltas`.
    Write(WriteAnswer),
    /// `facts`.
    Facts(FactsJson),
    /// `schema`.
    Outline(crate::policy::Outline),
}

impl Answer {
    /// The answer as JSON text, as [`Session::answer`] writes it inside `{"ok": ...}`.
    pub fn to_json(&self) -> String {
        text(self)
    }
}

/// The answer to `authorize_deltas` and `write`: whether the write may be made, the
/// revision it makes and what it derives, or why not. Hosts read it typed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteAnswer {
    /// Whether every delta is allowed.
    pub allowed: bool,
    /// The tuples the policy adds by itself on creation (EV5), when allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derived: Option<Vec<Delta>>,
    /// Why not, when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<crate::writes::WriteRefusal>,
    /// The revision the write makes, when allowed (`write` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
}

impl WriteAnswer {
    pub(super) fn refused(refusal: crate::writes::WriteRefusal) -> WriteAnswer {
        WriteAnswer {
            allowed: false,
            derived: None,
            refusal: Some(refusal),
            revision: None,
        }
    }
}
