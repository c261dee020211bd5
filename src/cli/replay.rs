//! `kvlb replay`: every frame of a pcap through the core, outputs as pcaps.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Context};
use lexopt::ValueExt;

use crate::clock::Instant;
use crate::config::Config;
use crate::datapath::replay;
use crate::nf::{Core, PortId, PortInfo};

const HELP: &str = "\
kvlb replay: run every frame of a pcap file through kvlb's core, offline

usage: kvlb replay --in FILE.pcap --out DIR [--in-port N] [--mac MAC] [kvlb options]

Frames are processed in file order with the capture's timestamps as the clock, so a replay
is deterministic. What leaves is written to DIR as pcap files, one per output:
  port<N>.pcap           frames sent out of port N
  nf<S>.pcap             frames handed to ONVM service S
  next.pcap              frames passed to the next stage of the chain
  emitted-port<N>.pcap   frames kvlb emitted itself (replica writes, probes, ARP)
  emitted-nf<S>.pcap
and DIR/stats.json holds frames_in, frames_out, drops (reason → count), per-output
counts and the core's full report.

replay options:
  --in FILE      input pcap (Ethernet link type)
  --out DIR      output directory (created if missing)
  --in-port N    port the frames arrive on [default: --client-port]
  -h, --help     this help
";

pub fn run(args: Vec<OsString>) -> anyhow::Result<()> {
    let mut cfg = Config::default();
    let (mut input, mut out, mut in_port): (Option<PathBuf>, Option<PathBuf>, Option<PortId>) =
        (None, None, None);
    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next()? {
        match arg {
            lexopt::Arg::Short('h') | lexopt::Arg::Long("help") => {
                print!("{HELP}\n{}", Config::help_text());
                return Ok(());
            }
            lexopt::Arg::Long("in") => input = Some(p.value()?.into()),
            lexopt::Arg::Long("out") => out = Some(p.value()?.into()),
            lexopt::Arg::Long("in-port") => {
                in_port = Some(p.value()?.string()?.parse().context("--in-port")?)
            }
            lexopt::Arg::Long(name) => {
                let name = name.to_string();
                if !cfg.parse_long(&name, &mut p)? {
                    bail!("unknown option '--{name}' (see kvlb replay --help)");
                }
            }
            other => return Err(other.unexpected().into()),
        }
    }
    let input = input.context("--in FILE.pcap is required (see kvlb replay --help)")?;
    let out = out.context("--out DIR is required (see kvlb replay --help)")?;
    let mac = cfg.mac.unwrap_or(crate::datapath::DEFAULT_MAC);
    let mut ports = vec![PortInfo {
        id: cfg.client_port,
        mac,
    }];
    if cfg.server_port != cfg.client_port {
        ports.push(PortInfo {
            id: cfg.server_port,
            mac,
        });
    }
    let mut core = Core::new(&cfg, &ports).context("invalid settings")?;
    let summary = replay::replay(&mut core, &input, in_port.unwrap_or(cfg.client_port), &out)
        .context("replay failed")?;
    let report = core.report(Instant::from_nanos(summary.last_timestamp_ns));
    let mut stats = serde_json::to_value(&report)?;
    let obj = stats
        .as_object_mut()
        .expect("a report serializes to an object");
    obj.insert("frames_in".into(), summary.frames_in.into());
    obj.insert("frames_out".into(), summary.frames_out.into());
    obj.insert("outputs".into(), serde_json::to_value(&summary.outputs)?);
    obj.insert("oversized".into(), summary.oversized.into());
    let path = out.join("stats.json");
    std::fs::write(&path, serde_json::to_string_pretty(&stats)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "kvlb replay: {} frames in, {} out, {} dropped; outputs in {}",
        summary.frames_in,
        summary.frames_out,
        report.stats.total_drops(),
        out.display()
    );
    Ok(())
}
