//! The Clearance host: the one wasm module run on wasmtime, with its artifact hash
//! checked, instances pooled and bounded (fuel and memory), and every trap turned into a
//! denial with an error. Decisions come only from the module.

pub mod runtime;

pub use runtime::{HostError, Runtime, RuntimeConfig, Verdict};
