//! kvbench: a load generator and consistency checker for memcached and for kvlb in front
//! of it (the `kvbench` binary, `src/main.rs`, is a thin shell over this library).
//!
//! A crate of its own in kvlb's workspace: it depends on the kvlb library for the protocol
//! code it shares with the NF, without kvlb's DPDK/ONVM features, so building the NF never
//! compiles kvbench and building kvbench never compiles DPDK.
//!
//! It speaks memcached's ASCII protocol over UDP (frame header, replies matched by request
//! id, multi-datagram and one-message-per-key multi-get replies reassembled, losses
//! counted as timeouts) and over TCP (pipelined), classic or meta commands, to one or
//! several servers (libmemcached-compatible ketama) or to a kvlb VIP. Load is closed loop
//! (N requests outstanding per connection) or open loop at a target rate with latency
//! measured from each request's intended send time (no coordinated omission). Every value
//! written carries its key's version and a checksum, so every value read is checked for
//! staleness and corruption.
//!
//! Owns: workload generation ([`dist`], [`workload`]; the generator and the Zipf law are
//! [`kvlb::random`]'s), pacing ([`rate`]), the
//! client side of requests ([`exchange`], [`udp`], [`tcp`]), validation ([`value`],
//! [`validate`]), the run ([`engine`]), reporting ([`report`]), server stats ([`stats`]),
//! and the command line ([`config`]). Must not: implement memcached's protocol a second
//! time — requests are built and replies parsed by [`kvlb::proto`], frame headers by
//! [`kvlb::wire::McHeader`], key placement by [`kvlb::ring`]; nor print (the binary
//! does).
//!
//! For scripts and the demo: [`stats::fetch_stats`] reads a server's `stats` over UDP or
//! TCP, [`stats::StatsDelta`] differences two readings, [`engine::run`] runs a benchmark
//! from [`config::Settings`] and returns a [`report::Summary`].
#![forbid(unsafe_code)]

pub mod config;
pub mod dist;
pub mod engine;
pub mod exchange;
pub mod rate;
pub mod report;
pub mod stats;
pub mod tcp;
pub mod udp;
pub mod validate;
pub mod value;
pub mod workload;

pub use config::{parse_args, Command, Settings, Transport};
pub use engine::{read_stats, run, BenchError};
pub use report::Summary;
pub use stats::{fetch_stats, ServerStats, StatsDelta};
