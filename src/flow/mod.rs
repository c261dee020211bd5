//! The request table: (client address, client request id) ↔ (backend, kvlb request id),
//! with expiry.
//!
//! Owns: matching responses to requests. Must not: parse packets or choose backends.
