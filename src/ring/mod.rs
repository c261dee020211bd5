//! Ketama consistent hashing, bit-compatible with libmemcached, and replica sets.
//!
//! Owns: key → server placement. Must not: know whether a server is healthy (the caller
//! rebuilds or filters).
