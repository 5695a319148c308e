//! The service below the HTTP face: the live state (facts, snapshot, policy, keys), the
//! write queue and its group commit, following other hosts through the store, policy
//! reloads and start-up.
//!
//! A write is atomic across the store and memory: the next snapshot is built off the
//! async workers and loaded into an instance (proven loadable) before the change is
//! appended; once appended, making it current cannot fail. The write runs as a task of
//! its own, so a client that hangs up cannot stop it half-way. A failed append is read
//! back from the store: stored means acknowledged, not stored means refused, and nothing
//! wedges. A policy reload is a change like any other, stored with its sources.

pub mod commit;
pub mod error;
pub mod follow;
pub mod group;
pub mod policy;
pub mod queue;
pub mod quota;
pub mod start;
pub mod state;

pub use commit::accounts_touched;
pub use error::ServiceError;
pub use state::{Service, ServiceConfig};
