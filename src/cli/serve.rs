//! `kvlb serve`: the kernel-socket datapath.

use std::ffi::OsString;
use std::net::SocketAddrV4;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context};
use lexopt::ValueExt;

use crate::config::Config;
use crate::datapath::socket::{self, Sockets};

const HELP: &str = "\
kvlb serve: balance memcached UDP traffic with plain kernel sockets (no privileges needed)

usage: kvlb serve --listen IP:PORT --backend HOST:PORT [--backend ...] [kvlb options]

Clients send memcached UDP requests to --listen (the VIP); kvlb forwards them to the
backends from --source-ports sockets on --local-ip, answers GETs of hot keys from its
caches, and prints a stats line every --stats-interval. Stops on SIGINT/SIGTERM and prints
a final report.

serve options:
  --listen IP:PORT
        address to receive client requests on (also the VIP unless --vip is given)
  -h, --help
        this help
";

pub fn run(args: Vec<OsString>) -> anyhow::Result<()> {
    let mut cfg = Config::default();
    let mut listen: Option<SocketAddrV4> = None;
    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next()? {
        match arg {
            lexopt::Arg::Short('h') | lexopt::Arg::Long("help") => {
                print!("{HELP}\n{}", Config::help_text());
                return Ok(());
            }
            lexopt::Arg::Long("listen") => {
                let v: String = p.value()?.string()?;
                listen = Some(
                    v.parse()
                        .with_context(|| format!("--listen '{v}': expected IPv4:PORT"))?,
                );
            }
            lexopt::Arg::Long(name) => {
                let name = name.to_string();
                if !cfg.parse_long(&name, &mut p)? {
                    bail!("unknown option '--{name}' (see kvlb serve --help)");
                }
            }
            other => return Err(other.unexpected().into()),
        }
    }
    let listen = listen
        .or(cfg.vip)
        .context("--listen IP:PORT is required (see kvlb serve --help)")?;
    let sockets = Sockets::bind(&cfg, listen)?;
    if cfg.vip.is_none() {
        cfg.vip = Some(sockets.vip());
    }
    let mut core = sockets.core(&cfg).context("invalid settings")?;
    log::info!(
        "kvlb serve: VIP {} → {} backends ({}), source ports {:?}",
        sockets.vip(),
        cfg.backends.len(),
        cfg.backends
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        sockets.source_ports()
    );
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing signal handler")?;
    }
    let mut out = super::StatsOutput::open(&cfg)?;
    let counters = socket::serve(&cfg, &sockets, &mut core, &stop, |report, _| {
        out.write(report);
    })?;
    log::info!(
        "kvlb serve: stopped; {} datagrams in ({} receive calls), {} out ({} send calls), {} send errors",
        counters.datagrams_in,
        counters.recv_calls,
        counters.datagrams_out,
        counters.send_calls,
        counters.send_errors
    );
    Ok(())
}
