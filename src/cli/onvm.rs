//! `kvlb onvm`: kvlb as an OpenNetVM network function, launched like ONVM's example NFs:
//!
//! ```text
//! kvlb onvm [EAL args] -- [ONVM args: -r SERVICE_ID ...] -- [kvlb args]
//! kvlb onvm -F CONFIG.json [more EAL args --] [kvlb args]
//! ```
//!
//! A `-F` config has ONVM's example layout (`"dpdk": {"corelist", "memory_channels"}`,
//! `"onvm": {"serviceid", "instanceid"}`) plus `"dpdk": {"args": [...]}` for further EAL
//! arguments (e.g. `--no-pci`) and a `"kvlb"` object of kvlb options. It is read here, not by
//! ONVM's own `-F` code, which cannot pass extra EAL arguments.

use std::ffi::OsString;

/// Text of `kvlb onvm --help`.
pub fn help() -> String {
    let mut s = String::from(
        "kvlb onvm: kvlb as an OpenNetVM network function\n\n\
         usage:\n  \
         kvlb onvm [EAL args] -- [ONVM args] -- [NF options] [kvlb options]\n  \
         kvlb onvm -F CONFIG.json [more EAL args --] [NF options] [kvlb options]\n\n\
         EAL args: as for ONVM's NFs, e.g. -l 2 -n 3 --proc-type=secondary --no-pci\n\
         ONVM args: -r SERVICE_ID (required) [-n INSTANCE_ID] [-t TIME_TO_LIVE] [-l PKT_LIMIT] [-m] [-s]\n\n\
         NF options:\n  \
         -p PRINT_DELAY\n        refresh the stats screen every PRINT_DELAY packets (as ONVM's examples; \
         --stats-interval refreshes it by time)\n  \
         -d SERVICE\n        send what kvlb would send out of a port to service SERVICE instead \
         (kvlb in front of another NF; then it also runs on a manager without ports)\n\n\
         CONFIG.json: {\"dpdk\": {\"corelist\": \"2\", \"memory_channels\": 3, \"args\": [\"--no-pci\"]},\n              \
         \"onvm\": {\"serviceid\": 1, \"instanceid\": 9}, \"kvlb\": {\"backend\": [\"10.0.0.2:11211\"], ...}}\n\n\
         Each packet leaves kvlb with its ONVM action set: OUT port, TONF service, NEXT or DROP.\n\
         On exit ONVM writes kvlb_stats.csv into the working directory.\n\n",
    );
    s.push_str(&crate::config::Config::help_text());
    s
}

/// Entry point of `kvlb onvm`.
pub fn run(args: Vec<OsString>) -> anyhow::Result<()> {
    if args.first().is_some_and(|a| a == "--help" || a == "-h") {
        print!("{}", help());
        #[cfg(not(feature = "onvm"))]
        println!("\nnote: this kvlb was built without the `onvm` feature.");
        return Ok(());
    }
    imp::run(args)
}

#[cfg(not(feature = "onvm"))]
mod imp {
    use std::ffi::OsString;

    pub fn run(_args: Vec<OsString>) -> anyhow::Result<()> {
        anyhow::bail!(
            "this kvlb was built without ONVM support. Rebuild with `cargo build --release \
             --features onvm`, with ONVM_HOME set to a built openNetVM v21.10 checkout and \
             RTE_SDK/RTE_TARGET to the DPDK v20.05 it was built with (see ONVM's install guide)"
        )
    }
}

#[cfg(any(feature = "onvm", test))]
mod launch {
    //! Turning `kvlb onvm` arguments into EAL, ONVM and kvlb settings (no ONVM needed).

    use std::ffi::OsString;
    use std::path::Path;

    use anyhow::{bail, Context};
    use lexopt::ValueExt;

    use crate::config::Config;

    /// What `kvlb onvm` was asked to do.
    #[derive(Debug)]
    pub struct Launch {
        pub eal_args: Vec<String>,
        pub onvm_args: Vec<String>,
        pub print_delay: u64,
        pub out_to_nf: Option<u16>,
        pub config: Config,
    }

    use crate::cli::utf8_args;

    /// Splits the command line; reads a `-F` config. `None` when kvlb's options asked for
    /// `--help`, which is printed.
    pub fn parse(args: Vec<OsString>) -> anyhow::Result<Option<Launch>> {
        let mut config = Config::default();
        let (eal_args, onvm_args, rest) = if args.first().is_some_and(|a| a == "-F") {
            let path = args
                .get(1)
                .context("-F needs a config file (see `kvlb onvm --help`)")?;
            let (mut eal, onvm) = read_onvm_config(Path::new(path), &mut config)?;
            // `-F FILE [more EAL args --] [kvlb args]`
            let rest = &args[2..];
            let kvlb_args = match rest.iter().position(|a| a == "--") {
                Some(dash) => {
                    eal.extend(utf8_args(&rest[..dash])?);
                    &rest[dash + 1..]
                }
                None => rest,
            };
            (eal, onvm, kvlb_args.to_vec())
        } else {
            let dashes: Vec<usize> = args
                .iter()
                .enumerate()
                .filter(|(_, a)| *a == "--")
                .map(|(i, _)| i)
                .take(2)
                .collect();
            let [first, second] = dashes[..] else {
                bail!(
                    "expected `kvlb onvm [EAL args] -- [ONVM args] -- [kvlb args]` or \
                     `kvlb onvm -F CONFIG.json` (see `kvlb onvm --help`)"
                );
            };
            (
                utf8_args(&args[..first])?,
                utf8_args(&args[first + 1..second])?,
                args[second + 1..].to_vec(),
            )
        };
        if !onvm_args.iter().any(|a| a.starts_with("-r")) {
            bail!("ONVM needs a service id: pass `-r SERVICE_ID` among the ONVM arguments");
        }
        let mut print_delay = 0;
        let mut out_to_nf = None;
        let mut parser = lexopt::Parser::from_args(rest);
        while let Some(arg) = parser.next()? {
            match arg {
                lexopt::Arg::Short('p') => {
                    print_delay = parser
                        .value()?
                        .parse()
                        .context("-p expects a packet count")?
                }
                lexopt::Arg::Short('d') => {
                    let service: u16 =
                        parser.value()?.parse().context("-d expects a service id")?;
                    if service == 0 {
                        bail!("-d: service id 0 is reserved by ONVM");
                    }
                    out_to_nf = Some(service);
                }
                lexopt::Arg::Long("help") => {
                    print!("{}", super::help());
                    return Ok(None);
                }
                lexopt::Arg::Long(name) => {
                    let name = name.to_string();
                    if !config.parse_long(&name, &mut parser)? {
                        bail!("unknown option '--{name}' (see `kvlb onvm --help`)");
                    }
                }
                other => return Err(other.unexpected().into()),
            }
        }
        config.validate()?;
        Ok(Some(Launch {
            eal_args,
            onvm_args,
            print_delay,
            out_to_nf,
            config,
        }))
    }

    /// Reads an ONVM-style NF config: EAL and ONVM arguments, and the `"kvlb"` options
    /// applied to `config`.
    pub fn read_onvm_config(
        path: &Path,
        config: &mut Config,
    ) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let ctx = || format!("in {}", path.display());
        let dpdk = json
            .get("dpdk")
            .and_then(|v| v.as_object())
            .with_context(|| format!("no \"dpdk\" object {}", ctx()))?;
        let onvm = json
            .get("onvm")
            .and_then(|v| v.as_object())
            .with_context(|| format!("no \"onvm\" object {}", ctx()))?;
        let mut eal = Vec::new();
        if let Some(cores) = dpdk.get("corelist") {
            let cores = match cores {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => bail!("\"corelist\" must be a string {}", ctx()),
            };
            eal.extend(["-l".to_string(), cores]);
        }
        if let Some(n) = dpdk.get("memory_channels") {
            let n = n
                .as_u64()
                .with_context(|| format!("\"memory_channels\" must be a number {}", ctx()))?;
            eal.extend(["-n".to_string(), n.to_string()]);
        }
        eal.push("--proc-type=secondary".into());
        if let Some(extra) = dpdk.get("args") {
            let extra = extra
                .as_array()
                .with_context(|| format!("\"dpdk\".\"args\" must be an array {}", ctx()))?;
            for a in extra {
                let a = a
                    .as_str()
                    .with_context(|| format!("\"dpdk\".\"args\" holds strings {}", ctx()))?;
                eal.push(a.to_string());
            }
        }
        let service = onvm
            .get("serviceid")
            .and_then(|v| v.as_u64())
            .with_context(|| format!("\"onvm\".\"serviceid\" (a number) is required {}", ctx()))?;
        let mut onvm_args = vec!["-r".to_string(), service.to_string()];
        if let Some(instance) = onvm.get("instanceid") {
            let instance = instance
                .as_u64()
                .with_context(|| format!("\"instanceid\" must be a number {}", ctx()))?;
            onvm_args.extend(["-n".to_string(), instance.to_string()]);
        }
        if let Some(kvlb) = json.get("kvlb") {
            config
                .apply_json(&kvlb.to_string())
                .with_context(|| format!("in the \"kvlb\" object of {}", path.display()))?;
        }
        Ok((eal, onvm_args))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn args(v: &[&str]) -> Vec<OsString> {
            v.iter().map(OsString::from).collect()
        }

        /// [`super::parse`] of a command line that does not ask for `--help`.
        fn parse(v: Vec<OsString>) -> anyhow::Result<Launch> {
            super::parse(v).map(|l| l.expect("not a --help"))
        }

        #[test]
        fn help_among_kvlb_args_is_not_a_run() {
            let l = super::parse(args(&["-l", "1", "--", "-r", "1", "--", "--help"])).unwrap();
            assert!(l.is_none());
        }

        #[test]
        fn three_part_command_line() {
            let l = parse(args(&[
                "-l",
                "2",
                "--no-pci",
                "--",
                "-r",
                "5",
                "-n",
                "9",
                "--",
                "-p",
                "1000",
                "--backend",
                "127.0.0.1:11211",
            ]))
            .unwrap();
            assert_eq!(l.eal_args, ["-l", "2", "--no-pci"]);
            assert_eq!(l.onvm_args, ["-r", "5", "-n", "9"]);
            assert_eq!(l.print_delay, 1000);
            assert_eq!(l.out_to_nf, None);
            let l = parse(args(&[
                "--",
                "-r",
                "5",
                "--",
                "-d",
                "3",
                "--backend",
                "127.0.0.1:1",
            ]))
            .unwrap();
            assert_eq!(l.out_to_nf, Some(3));
            assert_eq!(l.config.backends.len(), 1);
        }

        #[test]
        fn config_file_gives_all_three_parts() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("kvlb.json");
            std::fs::write(
                &path,
                r#"{"dpdk": {"corelist": "1", "memory_channels": 3, "args": ["--no-pci"]},
                    "onvm": {"output": "stdout", "serviceid": 2, "instanceid": 7},
                    "kvlb": {"backend": ["10.0.0.2:11211"], "vip": "10.0.0.1:11211"}}"#,
            )
            .unwrap();
            let p = path.to_str().unwrap();
            let l = parse(args(&["-F", p, "--replicas", "1"])).unwrap();
            assert_eq!(
                l.eal_args,
                ["-l", "1", "-n", "3", "--proc-type=secondary", "--no-pci"]
            );
            let l = parse(args(&["-F", p, "--file-prefix=x", "--", "--replicas", "1"])).unwrap();
            assert_eq!(l.eal_args.last().unwrap(), "--file-prefix=x");
            assert_eq!(l.config.replicas, 1);
            assert_eq!(l.onvm_args, ["-r", "2", "-n", "7"]);
            assert_eq!(l.config.backends.len(), 1);
            assert_eq!(
                l.config.replicas, 1,
                "command-line options follow the file's"
            );
        }

        #[test]
        fn the_repo_configs_parse() {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("onvm_config");
            let mut n = 0;
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "json") {
                    let l = parse(args(&["-F", path.to_str().unwrap()]))
                        .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                    assert!(l.onvm_args.contains(&"-r".to_string()));
                    n += 1;
                }
            }
            assert!(n >= 2, "onvm_config/ holds the example configs");
        }

        #[test]
        fn mistakes_are_explained() {
            let e = parse(args(&["-l", "1", "--", "-r", "1"])).unwrap_err();
            assert!(e.to_string().contains("-- [ONVM args] --"), "{e}");
            let e = parse(args(&["--", "-n", "1", "--", "--backend", "127.0.0.1:1"])).unwrap_err();
            assert!(e.to_string().contains("-r SERVICE_ID"), "{e}");
            let e = parse(args(&["-F", "/nonexistent/kvlb.json"])).unwrap_err();
            assert!(format!("{e:#}").contains("/nonexistent/kvlb.json"), "{e:#}");
            let e = parse(args(&["--", "-r", "1", "--", "-p", "many"])).unwrap_err();
            assert!(format!("{e:#}").contains("-p"), "{e:#}");
        }
    }
}

#[cfg(feature = "onvm")]
mod imp {
    use std::ffi::OsString;
    use std::io::IsTerminal;
    use std::time::Instant as WallInstant;

    use anyhow::Context;

    use super::launch;
    use crate::config::Config;
    use crate::datapath::dpdk::{report_first_panic_only, MacFmt};
    use crate::datapath::onvm::{NfCounters, NfOptions, OnvmNf};
    use crate::nf::{Core, PortInfo};

    /// With `-d SERVICE` every frame kvlb sends goes to that NF, whatever port it names, so
    /// kvlb can run as a pure chain stage on a manager without ports (e.g. behind
    /// speed_tester): the port ids it is configured with (`--client-port`,
    /// `--server-port`) that the manager lacks become ports of kvlb's own, with `--mac` or
    /// a locally administered address.
    fn chain_only_ports(ports: &mut Vec<PortInfo>, cfg: &Config, out_to_nf: Option<u16>) {
        let Some(service) = out_to_nf else { return };
        for id in [cfg.client_port, cfg.server_port] {
            if !ports.iter().any(|p| p.id == id) {
                let mac = cfg.mac.unwrap_or(CHAIN_MAC);
                log::info!(
                    "port {id} is not an ONVM port: frames for it go to service {service} (-d), sent from {}",
                    MacFmt(mac)
                );
                ports.push(PortInfo { id, mac });
            }
        }
    }

    /// kvlb's address on ports it makes up for a chain-only run (locally administered).
    const CHAIN_MAC: [u8; 6] = [0x02, 0x6b, 0x76, 0x6c, 0x62, 0x10];

    pub fn run(args: Vec<OsString>) -> anyhow::Result<()> {
        let Some(l) = launch::parse(args)? else {
            return Ok(());
        };
        let mut nf = OnvmNf::init("kvlb", &l.eal_args, &l.onvm_args)?;
        let (service, instance) = (nf.service_id(), nf.instance_id());
        let ports = nf.ports();
        for p in &ports {
            log::info!("ONVM port {}: {}", p.id, MacFmt(p.mac));
        }
        let mut ports = ports;
        if let Some(mac) = l.config.mac {
            for p in &mut ports {
                p.mac = mac;
            }
        }
        chain_only_ports(&mut ports, &l.config, l.out_to_nf);
        let mut core = Core::new(&l.config, &ports).context("invalid kvlb settings")?;
        report_first_panic_only();
        let opts = NfOptions {
            print_delay: l.print_delay,
            stats_interval: if l.print_delay > 0 {
                std::time::Duration::ZERO
            } else {
                l.config.stats_interval
            },
            exit_when_idle: l.config.exit_when_idle,
            out_to_nf: l.out_to_nf,
            ..NfOptions::default()
        };
        let clear = std::io::stdout().is_terminal();
        let started = WallInstant::now();
        let mut last = (0u64, started);
        let mut stats_out = crate::cli::StatsOutput::open(&l.config)?;
        let mut report = move |core: &mut Core, now, c: &NfCounters| {
            let wall = WallInstant::now();
            let dt = wall.duration_since(last.1).as_secs_f64();
            let rate = if dt > 0.0 {
                (c.rx - last.0) as f64 / dt / 1e6
            } else {
                0.0
            };
            last = (c.rx, wall);
            print!("{}", screen(core, c, service, instance, rate, clear));
            // The core's own report: a human line on stderr, JSON lines with --stats-json.
            stats_out.write(core.report(now));
        };
        let counters = nf.run(&mut core, &opts, &mut report);
        log::info!(
            "kvlb NF (service {service}, instance {instance}) stopped after {} packets",
            counters.rx
        );
        drop(nf);
        Ok(())
    }

    /// The stats screen, in the style of ONVM's example NFs.
    fn screen(
        core: &Core,
        c: &NfCounters,
        service: u16,
        instance: u16,
        mpps: f64,
        clear: bool,
    ) -> String {
        let s = core.stats();
        let mut out = String::new();
        if clear {
            // Clear the screen, cursor to the top left.
            out.push_str("\x1b[2J\x1b[1;1H");
        }
        out.push_str(&format!(
            "KVLB (service {service}, instance {instance})\n-----\n"
        ));
        for (name, v) in [
            ("rx", c.rx),
            ("out", c.out),
            ("tonf", c.to_nf),
            ("next", c.next),
            ("drop", c.dropped),
            ("emitted", c.emitted),
            ("core in", s.frames_in),
            ("core out", s.frames_out),
        ] {
            out.push_str(&format!("{name:<12}: {v}\n"));
        }
        out.push_str(&format!("{:<12}: {mpps:.3}\n", "rx Mpps"));
        for (reason, n) in &s.drops {
            out.push_str(&format!("drop.{reason:<7}: {n}\n"));
        }
        for (reason, n) in &s.passed {
            out.push_str(&format!("pass.{reason:<7}: {n}\n"));
        }
        for (name, n) in [
            ("emit_failed", c.emit_failed),
            ("multi_seg", c.multi_segment),
            ("panics", c.panics),
        ] {
            if n > 0 {
                out.push_str(&format!("{name:<12}: {n}\n"));
            }
        }
        out.push('\n');
        out
    }
}
