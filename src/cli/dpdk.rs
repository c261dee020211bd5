//! `kvlb dpdk [EAL args] -- [kvlb args]`: kvlb as a standalone DPDK application on the
//! ports EAL creates (bound NICs, or `--vdev` ports such as net_pcap, net_ring, net_tap).

use std::ffi::OsString;

/// Text of `kvlb dpdk --help`.
pub fn help() -> String {
    let mut s = String::from(
        "kvlb dpdk: kvlb as a standalone DPDK application on EAL's ports (NICs or --vdev ports)\n\n\
         usage: kvlb dpdk [EAL args] -- [datapath options] [kvlb options]\n\n\
         datapath options:\n  \
         --clock tsc|pcap\n        \
         the core's clock: the TSC, or each frame's capture time (net_pcap input; reproducible \
         runs: timers run before each frame, at its time) [default: tsc]\n  \
         --pass-port N|drop\n        \
         where frames the core passes on (NEXT/TONF verdicts) go [default: drop, counted]\n  \
         --burst N\n        frames per receive/transmit burst [default: 32]\n  \
         --mbufs N\n        packet pool size [default: enough for every port's rings]\n\n\
         example:\n  \
         kvlb dpdk --no-huge --no-pci --vdev net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap -- \\\n    \
         --backend 10.0.0.2:11211 --vip 10.0.0.1:11211 --clock pcap --exit-when-idle\n\n",
    );
    s.push_str(&crate::config::Config::help_text());
    s
}

/// Entry point of `kvlb dpdk`.
pub fn run(args: Vec<OsString>) -> anyhow::Result<()> {
    if args.first().is_some_and(|a| a == "--help" || a == "-h") {
        print!("{}", help());
        #[cfg(not(feature = "dpdk"))]
        println!("\nnote: this kvlb was built without the `dpdk` feature.");
        return Ok(());
    }
    imp::run(args)
}

#[cfg(not(feature = "dpdk"))]
mod imp {
    use std::ffi::OsString;

    pub fn run(_args: Vec<OsString>) -> anyhow::Result<()> {
        anyhow::bail!(
            "this kvlb was built without DPDK support. Rebuild with `cargo build --release \
             --features dpdk` (needs DPDK: `apt-get install libdpdk-dev pkg-config` on Debian, \
             or RTE_SDK/RTE_TARGET naming a DPDK make build)"
        )
    }
}

#[cfg(feature = "dpdk")]
mod imp {
    use std::ffi::OsString;
    use std::time::Instant as WallInstant;

    use anyhow::{bail, Context};
    use lexopt::ValueExt;

    use crate::config::Config;
    use crate::datapath::dpdk::{
        report_first_panic_only, ClockSource, DatapathCounters, DpdkDatapath, DpdkOptions, Eal,
        MacFmt, Mempool, Port, PortConfig, StopFlag, TscClock,
    };
    use crate::nf::{Core, PortInfo};

    /// Data room of each mbuf: DPDK's default (2048 bytes of frame + 128 of headroom).
    const MBUF_DATA_ROOM: u16 =
        (onvm_sys::RTE_MBUF_DEFAULT_DATAROOM + onvm_sys::RTE_PKTMBUF_HEADROOM) as u16;

    /// What `kvlb dpdk` was asked to do.
    #[derive(Debug)]
    pub(super) struct Settings {
        pub eal_args: Vec<String>,
        pub opts: DpdkOptions,
        pub mbufs: Option<u32>,
        pub config: Config,
    }

    /// Splits `[EAL args] -- [options]` and parses the options; `None` when the options
    /// asked for `--help`, which is printed.
    pub(super) fn parse(args: Vec<OsString>) -> anyhow::Result<Option<Settings>> {
        let split = args.iter().position(|a| a == "--").with_context(|| {
            "expected `kvlb dpdk [EAL args] -- [kvlb args]` (see `kvlb dpdk --help`)"
        })?;
        let eal_args = crate::cli::utf8_args(&args[..split]).context("EAL arguments")?;
        let mut config = Config::default();
        let mut opts = DpdkOptions::default();
        let mut mbufs = None;
        let mut parser = lexopt::Parser::from_args(args[split + 1..].iter().cloned());
        while let Some(arg) = parser.next()? {
            match arg {
                lexopt::Arg::Long("help") => {
                    print!("{}", super::help());
                    return Ok(None);
                }
                lexopt::Arg::Long("clock") => {
                    opts.clock = match parser.value()?.to_str() {
                        Some("tsc") => ClockSource::Tsc,
                        Some("pcap") => ClockSource::RxTimestamp,
                        _ => bail!("--clock expects tsc or pcap"),
                    }
                }
                lexopt::Arg::Long("pass-port") => {
                    let v = parser.value()?;
                    opts.pass_port = match v.to_str() {
                        Some("drop") => None,
                        Some(n) => Some(n.parse().with_context(|| {
                            format!("--pass-port expects a port id or `drop`, not {n:?}")
                        })?),
                        None => bail!("--pass-port expects a port id or `drop`"),
                    }
                }
                lexopt::Arg::Long("burst") => {
                    let n: u16 = parser.value()?.parse()?;
                    if !(1..=512).contains(&n) {
                        bail!("--burst must lie in 1..=512");
                    }
                    opts.burst = n;
                }
                lexopt::Arg::Long("mbufs") => mbufs = Some(parser.value()?.parse()?),
                lexopt::Arg::Long(name) => {
                    let name = name.to_string();
                    if !config.parse_long(&name, &mut parser)? {
                        bail!("unknown option '--{name}' (see `kvlb dpdk --help`)");
                    }
                }
                other => return Err(other.unexpected().into()),
            }
        }
        config.validate()?;
        opts.exit_when_idle = config.exit_when_idle;
        opts.stats_interval = config.stats_interval;
        Ok(Some(Settings {
            eal_args,
            opts,
            mbufs,
            config,
        }))
    }

    pub fn run(args: Vec<OsString>) -> anyhow::Result<()> {
        let Some(settings) = parse(args)? else {
            return Ok(());
        };
        let eal = Eal::init(&settings.eal_args)?;
        let ids = Port::ids(eal);
        if ids.is_empty() {
            bail!("EAL found no ports: bind a NIC to a DPDK driver or add --vdev (e.g. --vdev net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap)");
        }
        for (what, id) in [
            ("--client-port", Some(settings.config.client_port)),
            ("--server-port", Some(settings.config.server_port)),
            ("--pass-port", settings.opts.pass_port),
        ] {
            if let Some(id) = id {
                if !ids.contains(&id) {
                    let ids: Vec<u16> = ids.iter().map(|p| p.0).collect();
                    bail!("{what} {id} is not one of EAL's ports {ids:?}");
                }
            }
        }
        let port_cfg = PortConfig {
            rx_timestamp: settings.opts.clock == ClockSource::RxTimestamp,
            ..PortConfig::default()
        };
        // Every port's receive ring and transmit ring full, a burst in flight each way, and
        // the per-lcore cache.
        let per_port = u32::from(port_cfg.rx_desc)
            + u32::from(port_cfg.tx_desc)
            + 4 * u32::from(settings.opts.burst);
        let n = settings.mbufs.unwrap_or(per_port * ids.len() as u32 + 4096);
        let pool = Mempool::create(eal, "kvlb_pktmbuf_pool", n, 256, MBUF_DATA_ROOM, eal.socket_id())
            .context("cannot create the packet pool (with hugepages: are there enough? without: pass --no-huge)")?;
        let mut ports = Vec::with_capacity(ids.len());
        for id in ids {
            let port = Port::start(eal, id, pool, &port_cfg)
                .with_context(|| format!("cannot start port {id}"))?;
            log::info!(
                "port {} ({}): {}",
                port.id(),
                port.name(),
                MacFmt(settings.config.mac.unwrap_or(port.mac()))
            );
            ports.push(port);
        }
        let infos: Vec<PortInfo> = ports
            .iter()
            .map(|p| PortInfo {
                id: p.id(),
                mac: settings.config.mac.unwrap_or(p.mac()),
            })
            .collect();
        let mut core = Core::new(&settings.config, &infos)?;
        let stop = StopFlag::install().context("cannot install the SIGINT/SIGTERM handler")?;
        report_first_panic_only();

        let clock = TscClock::new(eal);
        let started = WallInstant::now();
        let mut datapath = DpdkDatapath::new(&mut core, ports, pool, clock, settings.opts.clone());
        let mut last = (0u64, started);
        let mut stats_out = crate::cli::StatsOutput::open(&settings.config)?;
        let mut report = |core: &mut Core, now, c: &DatapathCounters, _ports: &[Port]| {
            let wall = WallInstant::now();
            let dt = wall.duration_since(last.1).as_secs_f64();
            let rate = if dt > 0.0 {
                (c.rx - last.0) as f64 / dt / 1e6
            } else {
                0.0
            };
            last = (c.rx, wall);
            println!(
                "[{:8.3}s] {}",
                wall.duration_since(started).as_secs_f64(),
                format_report(core, c, rate)
            );
            // The core's own report: a human line on stderr, JSON lines with --stats-json.
            stats_out.write(core.report(now));
        };
        datapath.run(stop, &mut report);
        for port in datapath.ports() {
            if let Ok(s) = port.stats() {
                println!(
                    "port {} ({}): rx {} tx {} missed {} rx_nombuf {} errors rx {} tx {}",
                    port.id(),
                    port.name(),
                    s.rx_packets,
                    s.tx_packets,
                    s.rx_missed,
                    s.rx_nombuf,
                    s.rx_errors,
                    s.tx_errors
                );
            }
        }
        // Dropping the ports stops and closes them (net_pcap flushes its output file).
        drop(datapath.into_ports());
        Ok(())
    }

    /// One line of counters.
    fn format_report(core: &Core, c: &DatapathCounters, mpps: f64) -> String {
        let s = core.stats();
        let mut line = format!(
            "rx {} ({mpps:.2} Mpps) tx {} out {} passed {} dropped {} emitted {} | \
             core in {} out {}",
            c.rx, c.tx, c.out, c.passed, c.dropped, c.emitted, s.frames_in, s.frames_out
        );
        for (reason, n) in &s.drops {
            line.push_str(&format!(" drop.{reason} {n}"));
        }
        for (reason, n) in &s.passed {
            line.push_str(&format!(" pass.{reason} {n}"));
        }
        for (name, n) in [
            ("tx_full", c.tx_full),
            ("emit_failed", c.emit_failed),
            ("unknown_port", c.unknown_port),
            ("multi_segment", c.multi_segment),
            ("panics", c.panics),
        ] {
            if n > 0 {
                line.push_str(&format!(" {name} {n}"));
            }
        }
        line
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::nf::PortId;

        fn args(v: &[&str]) -> Vec<OsString> {
            v.iter().map(OsString::from).collect()
        }

        /// [`super::parse`] of a command line that does not ask for `--help`.
        fn parse(v: Vec<OsString>) -> anyhow::Result<Settings> {
            super::parse(v).map(|s| s.expect("not a --help"))
        }

        #[test]
        fn help_after_the_dashes_is_not_a_run() {
            let s = super::parse(args(&["--no-huge", "--", "--help"])).unwrap();
            assert!(s.is_none());
        }

        #[test]
        fn splits_eal_and_kvlb_args() {
            let s = parse(args(&[
                "--no-huge",
                "--vdev",
                "net_null0",
                "--",
                "--backend",
                "127.0.0.1:11211",
                "--clock",
                "pcap",
                "--pass-port",
                "1",
                "--exit-when-idle",
            ]))
            .unwrap();
            assert_eq!(s.eal_args, ["--no-huge", "--vdev", "net_null0"]);
            assert_eq!(s.opts.clock, ClockSource::RxTimestamp);
            assert_eq!(s.opts.pass_port, Some(PortId(1)));
            assert!(s.opts.exit_when_idle);
            assert_eq!(s.config.backends.len(), 1);
        }

        #[test]
        fn rejects_bad_arguments() {
            let no_dashes = parse(args(&["--no-huge"])).unwrap_err().to_string();
            assert!(no_dashes.contains("[EAL args] --"), "{no_dashes}");
            let bad = parse(args(&[
                "--",
                "--backend",
                "127.0.0.1:1",
                "--clock",
                "sundial",
            ]));
            assert!(bad.unwrap_err().to_string().contains("--clock"));
            let unknown = parse(args(&["--", "--backend", "127.0.0.1:1", "--frobnicate"]));
            assert!(unknown.unwrap_err().to_string().contains("--frobnicate"));
            // kvlb's own validation runs too.
            assert!(parse(args(&["--"])).is_err());
        }
    }
}
