//! The commands' error: a kind, a code, a message naming what was wrong and where, and
//! what to do. Every failure of every command is this one shape; `api` answers it over
//! HTTP (the kind decides the status there, never here).

use crate::auth::AuthError;
use crate::codes::{Code, Kind};
use crate::runtime::HostError;
use crate::store::StoreError;
use clearance_core::ErrorData;
use serde_json::Value;

/// A command's error: `{code, message, help}` and what kind of failure it is.
#[derive(Debug, Clone)]
pub struct ServiceError {
    pub(crate) kind: Kind,
    pub(crate) data: ErrorData,
    /// Fields answered beside `error` (a refused write's `refusal`, a policy's `errors`).
    pub(crate) extra: Option<Value>,
    /// Seconds to wait before retrying (`retry-after`); answers of kind
    /// [`Kind::Unavailable`] default to 1.
    pub(crate) retry_after: Option<u32>,
}

impl ServiceError {
    /// An error of `code`, with its help from the table.
    pub(crate) fn new(code: Code, message: impl Into<String>) -> ServiceError {
        ServiceError::of(code.kind(), code.as_str(), message, code.help())
    }

    fn of(kind: Kind, code: &str, message: impl Into<String>, help: &str) -> ServiceError {
        ServiceError {
            kind,
            data: ErrorData {
                code: code.into(),
                message: message.into(),
                help: help.into(),
            },
            extra: None,
            retry_after: None,
        }
    }

    /// The same error with the help of the place that answers it.
    pub(crate) fn help(mut self, help: impl Into<String>) -> ServiceError {
        self.data.help = help.into();
        self
    }

    /// An error the module reported, of its code's kind.
    pub(crate) fn module(data: ErrorData) -> ServiceError {
        ServiceError {
            kind: Kind::of_module(&data.code),
            data,
            extra: None,
            retry_after: None,
        }
    }

    /// Input the core refused (facts, a policy, a call that cannot be written).
    pub(crate) fn bad(data: ErrorData) -> ServiceError {
        ServiceError {
            kind: Kind::Malformed,
            data,
            extra: None,
            retry_after: None,
        }
    }

    /// A principal refused by its gate: the gate's own code (`gate.<name>`).
    pub(crate) fn gate(code: &str, message: impl Into<String>) -> ServiceError {
        ServiceError::of(Kind::Forbidden, code, message, Code::Gate.help())
    }

    /// A refused write: the refusal's code (the core's, of kind refused).
    pub(crate) fn refused(code: &str, message: impl Into<String>) -> ServiceError {
        ServiceError::of(Kind::Forbidden, code, message, "nothing was written")
    }

    pub(crate) fn store(e: StoreError, help: &str) -> ServiceError {
        ServiceError::new(Code::StoreFailed, e.to_string()).help(help)
    }

    pub(crate) fn internal(message: impl Into<String>) -> ServiceError {
        ServiceError::new(Code::HostInternal, message)
    }

    /// Whether the error is of `code`.
    pub(crate) fn is(&self, code: Code) -> bool {
        self.kind == code.kind() && self.data.code == code.as_str()
    }
}

impl From<HostError> for ServiceError {
    fn from(e: HostError) -> ServiceError {
        match e {
            HostError::Module(d) => ServiceError::module(d),
            other => {
                let code = other.code();
                ServiceError::new(code, other.to_string())
            }
        }
    }
}

impl From<AuthError> for ServiceError {
    fn from(e: AuthError) -> ServiceError {
        ServiceError::new(e.code, e.message)
    }
}

pub(crate) fn forbidden(message: impl Into<String>) -> ServiceError {
    ServiceError::new(Code::AuthForbidden, message)
}
