//! The raw ABI for wasmtime: plain exports over the module's one engine, with memory
//! handed across as (pointer, length) pairs. See ARCHITECTURE.md for the contract.
//!
//! - `clr_alloc(len) -> ptr` and `clr_free(ptr, len)`: the host's buffers in module memory.
//! - `clr_call(ptr, len) -> packed`: a JSON call, answered in JSON.
//! - `clr_check(ptr, len) -> packed`: binary queries in, framed binary decisions out.
//! - `clr_load_snapshot(ptr, len) -> packed`: a snapshot's bytes in, JSON out.
//! - `clr_snapshot() -> packed`: the loaded snapshot's bytes, framed.
//!
//! `packed` is `ptr << 32 | len` of an answer buffer the host reads and then frees with
//! `clr_free`. Input buffers stay the host's to free.
#![allow(unsafe_code)]

use crate::bindgen::framed;
use clearance_core::protocol::Session;
use std::cell::RefCell;

thread_local! {
    static SESSION: RefCell<Session> = RefCell::new(Session::default());
}

fn give(bytes: Vec<u8>) -> u64 {
    let boxed = bytes.into_boxed_slice();
    let len = boxed.len() as u64;
    let ptr = Box::into_raw(boxed) as *mut u8 as usize as u64;
    (ptr << 32) | len
}

/// Reads the host's input buffer.
///
/// # Safety
/// `ptr..ptr + len` must be a buffer from `clr_alloc` that the host filled.
unsafe fn input<'a>(ptr: u32, len: u32) -> &'a [u8] {
    if len == 0 {
        return &[];
    }
    // SAFETY: the caller passes a live buffer of `len` bytes from `clr_alloc`.
    unsafe { std::slice::from_raw_parts(ptr as usize as *const u8, len as usize) }
}

/// Allocates `len` bytes for the host to write into.
#[unsafe(no_mangle)]
// The ABI is for wasm32, whose addresses are 32 bits: a pointer always fits in `u32`.
#[allow(clippy::cast_possible_truncation)]
pub extern "C" fn clr_alloc(len: u32) -> u32 {
    let boxed = vec![0u8; len as usize].into_boxed_slice();
    Box::into_raw(boxed) as *mut u8 as usize as u32
}

/// Frees a buffer from `clr_alloc` or an answer.
///
/// # Safety
/// `ptr` and `len` must describe exactly one buffer from `clr_alloc` or an answer, not
/// freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn clr_free(ptr: u32, len: u32) {
    if ptr == 0 {
        return;
    }
    let slice = std::ptr::slice_from_raw_parts_mut(ptr as usize as *mut u8, len as usize);
    // SAFETY: the caller gives back a buffer this module allocated with this length.
    drop(unsafe { Box::from_raw(slice) });
}

/// A JSON call.
///
/// # Safety
/// See [`input`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn clr_call(ptr: u32, len: u32) -> u64 {
    // SAFETY: forwarded contract.
    let bytes = unsafe { input(ptr, len) };
    let text = String::from_utf8_lossy(bytes);
    give(SESSION.with(|e| e.borrow_mut().call(&text)).into_bytes())
}

/// Binary queries in, framed binary decisions out.
///
/// # Safety
/// See [`input`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn clr_check(ptr: u32, len: u32) -> u64 {
    // SAFETY: forwarded contract.
    let bytes = unsafe { input(ptr, len) };
    give(SESSION.with(|e| e.borrow().check_ids(bytes)))
}

/// Loads a snapshot from its bytes.
///
/// # Safety
/// See [`input`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn clr_load_snapshot(ptr: u32, len: u32) -> u64 {
    // SAFETY: forwarded contract.
    let bytes = unsafe { input(ptr, len) };
    give(
        SESSION
            .with(|e| e.borrow_mut().load_snapshot(bytes))
            .into_bytes(),
    )
}

/// The loaded snapshot's bytes, framed.
#[unsafe(no_mangle)]
pub extern "C" fn clr_snapshot() -> u64 {
    give(SESSION.with(|e| framed(e.borrow().snapshot_bytes())))
}
