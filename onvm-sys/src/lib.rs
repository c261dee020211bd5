//! Raw FFI bindings to DPDK and OpenNetVM's `onvm_nflib`, plus kvlb's C shim (`kvlb_*`)
//! over their static-inline functions and macros.
//!
//! Everything here is `unsafe` to call; kvlb's safe layer (`kvlb::datapath::dpdk` and
//! `kvlb::datapath::onvm`) states and upholds the contracts. Without the `dpdk` or `onvm`
//! feature this crate is empty and links nothing.
//!
//! How DPDK and ONVM are found is described in `build.rs`.
#![allow(
    // The FFI itself: the one crate whose job is `unsafe` (the workspace denies it elsewhere).
    unsafe_code,
    clippy::undocumented_unsafe_blocks,
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    // bindgen's layout tests deref null pointers in const contexts on some versions.
    deref_nullptr,
    clippy::all,
    clippy::pedantic,
    // Generated code: bindgen does not document its items, and cannot derive Debug for
    // unions and opaque blobs.
    missing_docs,
    missing_debug_implementations,
    unsafe_op_in_unsafe_fn
)]

#[cfg(feature = "dpdk")]
include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
#[cfg(feature = "dpdk")]
include!(concat!(env!("OUT_DIR"), "/link.rs"));
