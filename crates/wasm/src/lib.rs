//! The one WebAssembly module of Clearance. Two faces over the same operations
//! ([`ops::Engine`]): a wasm-bindgen class for JavaScript and a raw ABI for wasmtime.
//! No decision logic lives here; it all comes from `clearance-core`.

pub mod abi;
pub mod bindgen;
pub mod ops;
