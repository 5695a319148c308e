//! The one WebAssembly module of Clearance. Two faces over one session of the core's
//! call protocol ([`clearance_core::protocol::Session`]): a wasm-bindgen class for
//! JavaScript and a raw ABI for wasmtime. Neither decides nor reads calls itself; it all
//! comes from `clearance-core`.

pub mod abi;
pub mod bindgen;
pub mod read;
pub mod structured;
pub mod values;
