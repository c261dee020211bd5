//! Memcached ASCII protocol (and recognition of binary/meta requests): request parsing,
//! response parsing and emitting, multi-datagram responses.
//!
//! Owns: the text grammar and memcached's limits. Must not: touch frame headers or decide
//! where a request goes.
