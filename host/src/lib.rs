//! The Clearance host: the one wasm module run on wasmtime, with its artifact hash
//! checked, instances pooled and bounded (deadlines and memory), and every trap turned
//! into a denial with an error; and the service around it: the HTTP API, the durable fact
//! store, writes validated by the policy, the change feed and principal slices. Decisions
//! come only from the module.

pub mod api;
pub mod auth;
pub mod clock;
pub mod codes;
pub mod embedded;
pub mod limits;
pub mod observe;
pub mod oidc;
pub mod openapi;
pub mod pgcluster;
pub mod policy_dir;
pub mod routes;
pub mod runtime;
pub mod schemas;
pub mod service;
pub mod signer;
pub mod store;
pub mod tls;

pub use runtime::{HostError, Runtime, RuntimeConfig, Verdict};
