//! Command-line front ends: one module per `kvlb` subcommand. Each turns arguments into
//! settings, runs a library component, and reports errors with context. The binary only
//! dispatches here.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufWriter, Write};

use anyhow::Context;

use crate::config::Config;
use crate::stats::{Report, Reporter};

mod replay;
mod serve;

pub mod dpdk;
pub mod hotkeys;
pub mod onvm;
pub mod route;

/// Arguments passed on to C (EAL, ONVM) as strings: the first that is not UTF-8 is an
/// error naming it.
#[cfg(any(feature = "dpdk", feature = "onvm", test))]
pub(crate) fn utf8_args(args: &[OsString]) -> anyhow::Result<Vec<String>> {
    args.iter()
        .map(|a| {
            a.to_str()
                .map(str::to_owned)
                .with_context(|| format!("argument {a:?} is not UTF-8"))
        })
        .collect()
}

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
        name: "serve",
        summary: "balance memcached UDP traffic over kernel sockets (the default datapath)",
        run: serve::run,
    },
    Command {
        name: "replay",
        summary: "run a pcap through the core offline; outputs as pcaps + stats.json",
        run: replay::run,
    },
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
    Command {
        name: "hotkeys",
        summary: "run a hot-key detector over a key stream, print the hot keys as JSON",
        run: hotkeys::run,
    },
    Command {
        name: "lc-experiments",
        summary: "lossy counting experiments: accuracy, memory, speed, drift (CSV + summary)",
        run: lc_experiments,
    },
];

/// `kvlb lc-experiments`: the experiments are a crate of their own (`lc-experiments/`), so
/// that building the NF never compiles them; this runs their binary, `kvlb-lc-experiments`,
/// from the directory kvlb's own binary is in (where cargo puts both), in kvlb's place, with
/// the same arguments, so its output and exit status are the command's.
fn lc_experiments(args: Vec<OsString>) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    const BIN: &str = "kvlb-lc-experiments";
    let exe = std::env::current_exe()
        .context("finding kvlb's own binary")?
        .with_file_name(BIN);
    if !exe.is_file() {
        anyhow::bail!(
            "{} is not there: the experiments are a crate of their own; build them beside \
             kvlb with `cargo build --release -p {BIN}` (scripts/lc-experiments.sh does)",
            exe.display()
        );
    }
    // exec only returns when it failed.
    let err = std::process::Command::new(&exe).args(args).exec();
    Err(err).with_context(|| format!("running {}", exe.display()))
}

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

/// Where a long-running command's periodic stats go: a human line on stderr and, with
/// `--stats-json FILE`, one JSON object per line in FILE.
pub(crate) struct StatsOutput {
    reporter: Reporter,
    json: Option<BufWriter<File>>,
}

impl StatsOutput {
    pub(crate) fn open(cfg: &Config) -> anyhow::Result<StatsOutput> {
        let json = match &cfg.stats_json {
            Some(p) => Some(BufWriter::new(
                File::create(p).with_context(|| format!("creating {}", p.display()))?,
            )),
            None => None,
        };
        Ok(StatsOutput {
            reporter: Reporter::new(),
            json,
        })
    }

    pub(crate) fn write(&mut self, report: Report) {
        let mut err = std::io::stderr().lock();
        let json = self.json.as_mut().map(|j| j as &mut dyn Write);
        if let Err(e) = self.reporter.write(report, Some(&mut err), json) {
            log::warn!("writing stats: {e}");
        }
    }
}
