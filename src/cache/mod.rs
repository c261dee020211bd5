//! The NF's value caches: L1 hot-key table and the L2 skip list of warm keys, with value
//! memory accounting and per-key versions.
//!
//! Owns: cached values and their freshness bookkeeping. Must not: decide what is hot.
