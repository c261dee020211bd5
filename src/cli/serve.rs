//! `kvlb serve`: the kernel-socket datapath.

use std::ffi::OsString;
use std::net::SocketAddrV4;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context};
use lexopt::ValueExt;

use crate::config::{Cidr, Config};
use crate::datapath::socket::{self, Sockets};
use crate::datapath::tcp::{TcpFront, TcpSettings};

const HELP: &str = "\
kvlb serve: balance memcached UDP and TCP traffic with plain kernel sockets (no privileges needed)

usage: kvlb serve --listen IP:PORT --backend HOST:PORT [--backend ...] [kvlb options]

Clients send memcached UDP requests to --listen (the VIP); kvlb forwards them to the
backends from --source-ports sockets on --local-ip, answers GETs of hot keys from its
caches, and prints a stats line every --stats-interval. Stops on SIGINT/SIGTERM and prints
a final report. With --tcp on (the default), kvlb also accepts memcached TCP connections on
the same address, as memcached does, and balances every request on them through the same
core, over --backend-conns persistent TCP connections per backend.

serve options:
  --listen IP:PORT
        address to receive client requests on (also the VIP unless --vip is given)
  (the TCP options --tcp, --backend-conns, --own-requests, --max-item-size, --max-conns,
  --idle-timeout, --max-pending and --max-client-buffer are among kvlb's options below)
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
    let mut front = if cfg.tcp {
        let vip = cfg.vip.unwrap_or(sockets.vip());
        let tcp = TcpSettings {
            max_item_size: cfg.max_item_size,
            backend_conns: cfg.backend_conns,
            max_conns: cfg.max_conns,
            idle_timeout: cfg.idle_timeout,
            max_pending: cfg.max_pending,
            max_buffered: cfg.max_client_buffer,
            request_timeout: cfg.request_timeout,
            allow: cfg.allow.clone(),
            cache_max_value: cfg.cache_max_value,
            own_over_tcp: cfg.own_requests_over_tcp,
        };
        let backends: Vec<SocketAddrV4> = cfg.backends.iter().map(|b| b.addr).collect();
        Some(
            TcpFront::bind(tcp, sockets.vip(), &backends, sockets.source_ports(), vip)
                .context("TCP listener")?,
        )
    } else {
        None
    };
    // TCP clients reach the core from synthetic addresses in 0.0.0.0/8 (see
    // datapath::tcp::front): the front end checks --allow on accept, and a TCP client,
    // which completed a handshake, is not capped as an unverified UDP source is.
    let mut core_cfg = cfg.clone();
    if front.is_some() {
        let synthetic: Cidr = "0.0.0.0/8".parse().expect("a valid prefix");
        if !core_cfg.allow.is_empty() {
            core_cfg.allow.push(synthetic);
        }
        let mut trusted = core_cfg.effective_trusted();
        trusted.push(synthetic);
        core_cfg.trusted = Some(trusted);
    }
    let mut core = sockets.core(&core_cfg).context("invalid settings")?;
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
    let counters = socket::serve_with_tcp(
        &cfg,
        &sockets,
        front.as_mut(),
        &mut core,
        &stop,
        |report, _| {
            out.write(report);
        },
    )?;
    if let Some(f) = &front {
        log::info!(
            "kvlb serve: TCP {}",
            serde_json::to_string(&f.counters()).unwrap_or_default()
        );
    }
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
