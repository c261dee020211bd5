//! Command-line front ends: one module per `kvlb` subcommand. Each turns arguments into
//! settings, runs a library component, and reports errors with context. The binary only
//! dispatches here.
#![forbid(unsafe_code)]

use std::ffi::OsString;

pub mod dpdk;
pub mod onvm;
pub mod route;

/// A subcommand: its name, a one-line summary, and its entry point (arguments after the
/// subcommand name).
#[derive(Debug)]
pub struct Command {
    pub name: &'static str,
    pub summary: &'static str,
    pub run: fn(Vec<OsString>) -> anyhow::Result<()>,
}

/// Every subcommand, in the order `kvlb --help` lists them.
pub static COMMANDS: &[Command] = &[
    Command {
        name: "onvm",
        summary: "run as an OpenNetVM network function (needs the `onvm` feature)",
        run: onvm::run,
    },
    Command {
        name: "dpdk",
        summary: "run as a standalone DPDK application on EAL ports (needs the `dpdk` feature)",
        run: dpdk::run,
    },
    Command {
        name: "route",
        summary: "print the backend each key on stdin lives on (libmemcached ketama)",
        run: route::run,
    },
];

/// `kvlb --help`.
pub fn usage() -> String {
    let mut s = String::from(
        "kvlb: key-value load balancer for memcached (OpenNetVM NF, DPDK, pcap replay, UDP sockets)\n\n\
         usage: kvlb <command> [args]   (kvlb <command> --help for details)\n\ncommands:\n",
    );
    for c in COMMANDS {
        s.push_str(&format!("  {:<10} {}\n", c.name, c.summary));
    }
    s
}
