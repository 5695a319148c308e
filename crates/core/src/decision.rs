//! Requests and decisions: what is asked, and the answer with its reasons.

use crate::policy::RuleId;
use crate::time::TimeValue;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// A request as written in JSON: names, not ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The principal, `type:id`.
    pub principal: String,
    /// The action.
    pub action: String,
    /// The resource, `type:id`, or a page `matrix:row`.
    pub resource: String,
    /// The second entity of permissions that take a target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The time of the request.
    pub now: TimeValue,
}

/// The resource of a resolved request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resource {
    /// An entity.
    Entity(u32),
    /// A matrix row (a page or area).
    Page {
        /// The matrix.
        matrix: u16,
        /// The row.
        row: u16,
    },
}

/// A request resolved to ids: what the hot path decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// The principal's entity id.
    pub principal: u32,
    /// The resource.
    pub resource: Resource,
    /// The permission index (entities) or action bit (pages).
    pub action: u16,
    /// The target's entity id.
    pub target: Option<u32>,
    /// Seconds since the epoch.
    pub now: i64,
}

/// A stable reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum Code {
    /// The rule that allowed.
    Granted,
    /// The request is malformed.
    RequestInvalid,
    /// An entity of the request does not exist.
    EntityUnknown,
    /// The action does not exist on the resource's type.
    ActionUnknown,
    /// The principal is not of a principal type.
    PrincipalInvalid,
    /// The target is missing, unexpected or of the wrong type.
    TargetInvalid,
    /// A gate of the principal's type failed (`gate.<name>`).
    Gate,
    /// The principal, resource or target belong to different accounts.
    AccountMismatch,
    /// No tuple links the principal.
    RelationMissing,
    /// The tuple linking the principal has expired.
    RelationExpired,
    /// A comparison failed.
    ConditionFailed,
    /// An excluded rule held.
    ExclusionMatched,
    /// The principal holds no role of the matrix.
    RoleNoneAssigned,
    /// No role of the principal grants the action.
    RoleMissingPermission,
    /// The account has not enabled the row's feature.
    FeatureDisabled,
    /// The row exists only in setup mode.
    SetupModeOff,
    /// No personnel authorisation of the kind is held.
    AuthorizationMissing,
    /// The authorisation has expired.
    AuthorizationExpired,
    /// The authorisation is not valid yet.
    AuthorizationNotYetValid,
    /// The authorisation was revoked.
    AuthorizationRevoked,
    /// The authorisation does not cover the scope.
    AuthorizationOutOfScope,
    /// Rules nest deeper than the evaluation limit.
    DepthExceeded,
    /// Separation of duties: the principal is one of the subjects it must not be.
    DutyConflict,
}

impl Code {
    /// The code as text; gates read `gate.<name>` through [`crate::Snapshot::code`].
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Granted => "granted",
            Code::RequestInvalid => "request.invalid",
            Code::EntityUnknown => "entity.unknown",
            Code::ActionUnknown => "action.unknown",
            Code::PrincipalInvalid => "principal.invalid",
            Code::TargetInvalid => "target.invalid",
            Code::Gate => "gate",
            Code::AccountMismatch => "account.mismatch",
            Code::RelationMissing => "relation.missing",
            Code::RelationExpired => "relation.expired",
            Code::ConditionFailed => "condition.failed",
            Code::ExclusionMatched => "exclusion.matched",
            Code::RoleNoneAssigned => "role.none_assigned",
            Code::RoleMissingPermission => "role.missing_permission",
            Code::FeatureDisabled => "feature.disabled",
            Code::SetupModeOff => "setup_mode.off",
            Code::AuthorizationMissing => "authorization.missing",
            Code::AuthorizationExpired => "authorization.expired",
            Code::AuthorizationNotYetValid => "authorization.not_yet_valid",
            Code::AuthorizationRevoked => "authorization.revoked",
            Code::AuthorizationOutOfScope => "authorization.out_of_scope",
            Code::DepthExceeded => "evaluation.too_deep",
            Code::DutyConflict => "duty.conflict",
        }
    }
}

/// Which part of the request a structural reason is about (the rule ids `0..=4`).
pub mod field {
    use crate::policy::RuleId;
    /// The principal.
    pub const PRINCIPAL: RuleId = 0;
    /// The resource.
    pub const RESOURCE: RuleId = 1;
    /// The action.
    pub const ACTION: RuleId = 2;
    /// The target.
    pub const TARGET: RuleId = 3;
    /// The time.
    pub const NOW: RuleId = 4;
}

/// One reason of a decision: a code and the rule it is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reason {
    /// The code.
    pub code: Code,
    /// The rule (or, for structural reasons, the request field: see [`field`]).
    pub rule: RuleId,
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Allow or deny.
    pub allowed: bool,
    /// For an allow, the rule that granted; for a deny, every failed check in order.
    pub reasons: SmallVec<[Reason; 2]>,
    /// The snapshot revision decided on.
    pub revision: u64,
    /// The SHA-256 of the policy set decided with.
    pub policy_hash: [u8; 32],
    /// The next instant (seconds) at which time alone could change the decision.
    pub valid_until: Option<i64>,
}
