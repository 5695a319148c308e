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

/// A problem in facts or deltas: which item, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{at}: {message}")]
pub struct FactsError {
    /// A stable code, e.g. `facts.unknown_type`.
    pub code: String,
    /// Which item: `entities[3]`, `tuples[12]`, `deltas[0]`, or the JSON position.
    pub at: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl FactsError {
    pub(crate) fn new(code: &str, at: impl Into<String>, message: impl Into<String>) -> Self {
        FactsError {
            code: code.to_string(),
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
            code: "policy.invalid".into(),
            message: e.to_string(),
            help: "fix the policy text at the positions given; the policy set did not load".into(),
        }
    }
}

impl From<FactsError> for ErrorData {
    fn from(e: FactsError) -> Self {
        ErrorData {
            code: e.code.clone(),
            message: format!("{}: {}", e.at, e.message),
            help: "see docs/facts-format.md for the facts and delta format; nothing was applied"
                .into(),
        }
    }
}
