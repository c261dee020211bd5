//! kvlb: a key-value load balancer for memcached clusters.
//!
//! kvlb sits in the data path in front of a memcached cluster, parses memcached requests at
//! packet level, detects hot keys with the lossy counting family, answers GETs of hot keys
//! from its own caches, replicates hot keys across servers and routes everything else by
//! libmemcached-compatible ketama hashing.
//!
//! The balancing logic lives in one deterministic core, [`nf::Core`]: bytes and a timestamp
//! in, decisions and frames out, with no I/O, clocks or threads inside. The datapaths in
//! [`datapath`] (OpenNetVM, standalone DPDK, pcap replay, kernel UDP sockets) are thin
//! shells around it.
//!
//! `unsafe` lives only in the `onvm-sys` crate and in the DPDK/ONVM safe layer
//! ([`datapath`] behind the `dpdk`/`onvm` features).
//!
//! kvbench (the load generator) and the detector experiments are crates of their own in
//! this workspace; they use this library without its features for what they share with the
//! NF: [`proto`], [`wire`], [`ring`], [`hotkey`] and [`random`].

// The lint policy is the workspace's (`[workspace.lints]` in Cargo.toml, `clippy.toml`).
// Without the DPDK datapaths this crate has no FFI and forbids `unsafe` outright; with
// them, `unsafe` stays denied everywhere but in the safe layer, which allows it where
// `datapath` declares it.
#![cfg_attr(not(feature = "dpdk"), forbid(unsafe_code))]

pub mod backend;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod config;
pub mod datapath;
pub mod flow;
pub mod hotkey;
pub mod keyhash;
pub mod nf;
pub mod proto;
pub mod random;
pub mod ring;
pub mod stats;
pub mod wire;

/// How unit tests that need a real component report running it or skipping it: the same
/// file the integration tests include (`tests/skip/mod.rs`).
#[cfg(test)]
#[path = "../tests/skip/mod.rs"]
pub(crate) mod test_skip;
