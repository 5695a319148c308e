#![doc = include_str!("../README.md")]

pub mod api;
pub mod decision;
pub mod error;
mod eval;
pub mod facts;
pub mod incremental;
pub mod policy;
pub mod protocol;
pub mod slice;
pub mod snapshot;
pub mod time;
pub mod wire;
pub mod writes;

pub use api::{AccessMatrix, DecisionView, Explanation, MatrixRole, ReasonView};
pub use decision::{Code, Decision, Query, Reason, Request, Resource};
pub use error::{ErrorCode, ErrorData, ErrorKind, FactsError, PolicyError, PolicyErrors, Span};
pub use facts::{Delta, EntityJson, Facts, FactsJson, Removals, TupleJson};
pub use policy::{Schema, Source};
pub use slice::principal_slice;
pub use snapshot::Snapshot;
pub use snapshot::aviation::LICENCE_CATEGORIES;
pub use time::TimeValue;
