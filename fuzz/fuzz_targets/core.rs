//! Input surface: the whole balancing core, driven by a sequence of operations.
//!
//! The input is read as operations on a `kvlb::nf::Core` with three backends and small
//! tables: frames (arbitrary bytes, or client requests and backend replies built from
//! fields in the input), clock steps, ticks, drains, lost, duplicated and reordered
//! datagrams. The interpreter and its invariants (counters that add up, frames out that
//! classify and go where they may, the anti-amplification bound, the flow table and caches
//! within their bounds) live in `tests/core_ops/mod.rs`, which the stable test
//! `tests/core_fuzz.rs` also runs; see there. Each input runs twice: kvlb must send the
//! same frames both times.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/core_ops/mod.rs"]
mod core_ops;

fuzz_target!(|data: &[u8]| {
    let first = core_ops::run(data).digest;
    assert_eq!(
        first,
        core_ops::run(data).digest,
        "the same input sent other frames"
    );
});
