//! The backend pool: addresses, outstanding requests, latency, health, failover and probes.
//!
//! Owns: what kvlb knows about each memcached server. Must not: parse packets.
