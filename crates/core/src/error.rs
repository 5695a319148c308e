//! Errors of loading policies, facts and requests. A denial is a `Decision`, not an error.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Where something is in a policy file: 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// The file name as given to the loader.
    pub file: String,
    /// The line, from 1.
    pub line: u32,
    /// The column, from 1, in characters.
    pub col: u32,
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// One problem in a policy set, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{span}: {message}")]
pub struct PolicyError {
    /// Where the problem is.
    pub span: Span,
    /// What is wrong and what was expected.
    pub message: String,
}

impl PolicyError {
    /// A new error at `span`.
    pub fn new(span: Span, message: impl Into<String>) -> Self {
        PolicyError {
            span,
            message: message.into(),
        }
    }
}

/// Every problem found in a policy set; the set does not load if there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// What kind of failure a code is, for a boundary to answer by: the caller's input, a
/// write the policy refused, a session not ready for the call, or a fault of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input (a policy, facts, deltas, a request, a call) is not what it must be.
    Input,
    /// A write the policy's rules refused.
    Refused,
    /// The session has not loaded what the call needs.
    State,
    /// A fault of the engine or of stored bytes: not the caller's doing.
    Internal,
}

macro_rules! error_codes {
    ($($(#[doc = $doc:literal])+ $variant:ident = $code:literal, $kind:ident;)+) => {
        /// Every error code the core reports, with its kind and what it means. The code's
        /// text (`ErrorCode::as_str`) is what `ErrorData::code` carries on every boundary.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        pub enum ErrorCode {
            $($(#[doc = $doc])+ #[serde(rename = $code)] $variant,)+
        }

        impl ErrorCode {
            /// Every code, in the order declared.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)+];

            /// The code's stable text, e.g. `facts.unknown_type`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)+
                }
            }

            /// What kind of failure it is.
            pub const fn kind(self) -> ErrorKind {
                match self {
                    $(ErrorCode::$variant => ErrorKind::$kind,)+
                }
            }

            /// What the code means (its documentation, for generated documents).
            pub const fn meaning(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => concat!($($doc),+),)+
                }
            }

            /// The code of a code's text, if the core has it.
            pub fn parse(text: &str) -> Option<ErrorCode> {
                match text {
                    $($code => Some(ErrorCode::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    /// A call, request or argument that does not read: not JSON, a missing or unknown field.
    RequestMalformed = "request.malformed", Input;
    /// A request that reads but cannot be decided as given (an unknown kind of resource).
    RequestInvalid = "request.invalid", Input;
    /// A batch or argument past its limit.
    RequestTooLarge = "request.too_large", Input;
    /// A policy set that does not compile; the errors name file, line and column.
    PolicyInvalid = "policy.invalid", Input;
    /// Facts that are not JSON of the facts format.
    FactsMalformed = "facts.malformed", Input;
    /// Facts past a limit of their size.
    FactsTooLarge = "facts.too_large", Input;
    /// An entity of a type the policy does not declare.
    FactsUnknownType = "facts.unknown_type", Input;
    /// A reference to an entity the facts do not have.
    FactsUnknownEntity = "facts.unknown_entity", Input;
    /// An attribute the entity's type does not declare.
    FactsUnknownAttribute = "facts.unknown_attribute", Input;
    /// A relation the type does not declare.
    FactsUnknownRelation = "facts.unknown_relation", Input;
    /// A role the policy or the account does not have.
    FactsUnknownRole = "facts.unknown_role", Input;
    /// An entity in no account, or in an account the facts do not have.
    FactsUnknownAccount = "facts.unknown_account", Input;
    /// A removal of a tuple the facts do not have.
    FactsUnknownTuple = "facts.unknown_tuple", Input;
    /// A value of the wrong type or out of range.
    FactsInvalidValue = "facts.invalid_value", Input;
    /// A role or custom role that is not well formed.
    FactsInvalidRole = "facts.invalid_role", Input;
    /// An entity that is not well formed.
    FactsInvalidEntity = "facts.invalid_entity", Input;
    /// An id that breaks the id rules (length, characters).
    FactsInvalidId = "facts.invalid_id", Input;
    /// An authorisation that breaks the licence rules.
    FactsInvalidAuthorization = "facts.invalid_authorization", Input;
    /// Two entities with one id.
    FactsDuplicateEntity = "facts.duplicate_entity", Input;
    /// A required attribute left out.
    FactsMissingAttribute = "facts.missing_attribute", Input;
    /// An entity whose type belongs to accounts, given without one.
    FactsMissingAccount = "facts.missing_account", Input;
    /// A tuple whose subject's type is not one the relation takes.
    FactsWrongSubjectType = "facts.wrong_subject_type", Input;
    /// A tuple joining entities of two accounts.
    FactsCrossAccount = "facts.cross_account", Input;
    /// A change to a relation a principal slice carries as a count: only the whole facts take it.
    FactsCounted = "facts.counted", Input;
    /// Facts that broke an invariant of the engine while being applied.
    FactsInternal = "facts.internal", Internal;
    /// A write naming an entity outside the author's account (or one that does not exist).
    WriteOutsideAccount = "write.outside_account", Refused;
    /// A write that cannot be made as given (an entity that does not exist, a bad custom role).
    WriteInvalid = "write.invalid", Refused;
    /// A write no rule of the policy permits.
    WriteNoRule = "write.no_rule", Refused;
    /// A write a rule of the policy denies to its author.
    WriteDenied = "write.denied", Refused;
    /// A write that would leave an entity breaking an invariant of its type.
    WriteInvariant = "write.invariant", Refused;
    /// A call that needs a policy, before one is loaded.
    SessionNoPolicy = "session.no_policy", State;
    /// A call that needs facts, before they are loaded.
    SessionNoFacts = "session.no_facts", State;
    /// A call that needs a snapshot, before one is loaded.
    SessionNotLoaded = "session.not_loaded", State;
    /// A session left unusable by a fault while rebuilding; nothing is loaded.
    SessionInternal = "session.internal", Internal;
    /// Snapshot bytes that do not read (another format, truncated, changed).
    SnapshotMalformed = "snapshot.malformed", Internal;
    /// A snapshot that could not be written as bytes.
    SnapshotEncode = "snapshot.encode", Internal;
    /// A slice asked for an entity the facts do not have.
    SliceUnknownPrincipal = "slice.unknown_principal", Input;
    /// A slice asked for an entity that is not of a principal type.
    SliceNotPrincipal = "slice.not_principal", Input;
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<ErrorCode> for String {
    fn from(code: ErrorCode) -> String {
        code.as_str().to_string()
    }
}

/// A problem in facts or deltas: which item, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{at}: {message}")]
pub struct FactsError {
    /// A stable code, e.g. `facts.unknown_type`.
    pub code: ErrorCode,
    /// Which item: `entities[3]`, `tuples[12]`, `deltas[0]`, or the JSON position.
    pub at: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl FactsError {
    pub(crate) fn new(code: ErrorCode, at: impl Into<String>, message: impl Into<String>) -> Self {
        FactsError {
            code,
            at: at.into(),
            message: message.into(),
        }
    }
}

/// Any error the core reports, as data for a boundary: `{code, message, help}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[error("{code}: {message}")]
pub struct ErrorData {
    /// A stable code, e.g. `policy.invalid`, `facts.unknown_entity`, `request.invalid`.
    pub code: String,
    /// What is wrong, and where.
    pub message: String,
    /// What to do about it.
    pub help: String,
}

impl From<PolicyErrors> for ErrorData {
    fn from(e: PolicyErrors) -> Self {
        ErrorData {
            code: ErrorCode::PolicyInvalid.into(),
            message: e.to_string(),
            help: "fix the policy text at the positions given; the policy set did not load".into(),
        }
    }
}

impl From<FactsError> for ErrorData {
    fn from(e: FactsError) -> Self {
        ErrorData {
            code: e.code.into(),
            message: format!("{}: {}", e.at, e.message),
            help: "see docs/facts-format.md for the facts and delta format; nothing was applied"
                .into(),
        }
    }
}

impl PartialEq<str> for ErrorCode {
    fn eq(&self, text: &str) -> bool {
        self.as_str() == text
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, text: &&str) -> bool {
        self.as_str() == *text
    }
}
