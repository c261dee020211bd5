//! `kvlb dpdk` as a process: the real binary on real DPDK (`--no-huge --no-pci`) with
//! net_pcap ports, and its error messages.

mod dpdk_support;
mod skip;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const KVLB: &str = env!("CARGO_BIN_EXE_kvlb");

/// Kills the child (by PID, through its handle) if the test ends before it does.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn wait(mut self, limit: Duration) -> Output {
        let mut child = self.0.take().expect("waited once");
        let deadline = Instant::now() + limit;
        loop {
            if child.try_wait().expect("try_wait").is_some() {
                return child.wait_with_output().expect("output");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "kvlb did not exit within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn kvlb(args: &[String]) -> Output {
    let child = Command::new(KVLB)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kvlb runs");
    ChildGuard(Some(child)).wait(Duration::from_secs(60))
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn help_explains_the_argument_layout() {
    let o = kvlb(&strings(&["dpdk", "--help"]));
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("kvlb dpdk [EAL args] -- "), "{out}");
    assert!(out.contains("--clock"), "{out}");
    assert!(
        out.contains("--backend"),
        "kvlb's options are listed: {out}"
    );
}

#[cfg(not(feature = "dpdk"))]
#[test]
fn without_the_feature_it_says_how_to_build() {
    skip::skip(
        "dpdk",
        skip::Need::Installed,
        "built without --features dpdk: the real-DPDK tests of dpdk_cli and dpdk_layer are \
         compiled out (scripts/test.sh builds with it)",
    );
    let o = kvlb(&strings(&[
        "dpdk",
        "--no-huge",
        "--",
        "--backend",
        "127.0.0.1:1",
    ]));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--features dpdk"),
        "{}",
        text(&o)
    );
}

#[cfg(feature = "dpdk")]
mod with_dpdk {
    use super::*;
    use dpdk_support::*;

    /// Runs `kvlb dpdk` over one net_pcap port reading `input`; returns its output frames
    /// and stdout.
    fn run_over_pcap(input: &[PcapRecord], kvlb_args: &[&str]) -> (Vec<PcapRecord>, String) {
        let dir = tempfile::tempdir().unwrap();
        let rx = dir.path().join("in.pcap");
        let tx = dir.path().join("out.pcap");
        write_pcap(&rx, input);
        let prefix = unique_prefix("cli");
        let _runtime = RuntimeDir::new(&prefix);
        let mut args = vec!["dpdk".to_string()];
        args.extend(eal_test_args(&prefix));
        args.push(format!(
            "--vdev=net_pcap0,rx_pcap={},tx_pcap={}",
            rx.display(),
            tx.display()
        ));
        args.push("--".into());
        args.extend(strings(kvlb_args));
        let o = kvlb(&args);
        assert!(o.status.success(), "{}", text(&o));
        skip::used("dpdk", "kvlb dpdk over net_pcap, --no-huge --no-pci");
        (
            read_pcap(&tx),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    }

    fn gets(n: u16) -> Vec<PcapRecord> {
        (0..n)
            .map(|i| PcapRecord {
                sec: 1_700_000_000 + u32::from(i / 100),
                nsec: u32::from(i % 100) * 1_000_000,
                data: memcached_get(i, &format!("key:{}", i % 17)),
            })
            .collect()
    }

    /// kvlb's settings for these runs (both datapaths).
    const KVLB: &[&str] = &[
        "--mac",
        "02:00:00:00:00:01",
        "--backend",
        "10.0.0.2:11211",
        "--backend",
        "10.0.0.3:11211",
        "--vip",
        "10.0.0.1:11211",
        "--neighbor",
        "10.0.0.2=02:00:00:00:00:02",
        "--neighbor",
        "10.0.0.3=02:00:00:00:00:03",
        "--neighbor",
        "10.0.0.9=02:00:00:00:00:09",
        "--stats-interval",
        "0",
    ];

    /// The replay datapath and `kvlb dpdk --clock pcap` over one net_pcap port give the same
    /// frames, byte for byte: per port, `kvlb dpdk`'s output is replay's forwarded frames
    /// (`port0.pcap`) and emitted frames (`emitted-port0.pcap`) interleaved.
    #[test]
    fn replay_and_kvlb_dpdk_agree_byte_for_byte() {
        let input = gets(400);
        let mut dpdk_args = strings(KVLB);
        dpdk_args.extend(strings(&["--clock", "pcap", "--exit-when-idle"]));
        let args: Vec<&str> = dpdk_args.iter().map(String::as_str).collect();
        let (live, _) = run_over_pcap(&input, &args);

        let dir = tempfile::tempdir().unwrap();
        let pcap = dir.path().join("in.pcap");
        write_pcap(&pcap, &input);
        let cfg = kvlb::config::Config::from_args(KVLB.iter().copied()).unwrap();
        let ports = [kvlb::nf::PortInfo {
            id: kvlb::nf::PortId(0),
            mac: cfg.mac.unwrap(),
        }];
        let mut core = kvlb::nf::Core::new(&cfg, &ports).unwrap();
        let out = dir.path().join("replay");
        kvlb::datapath::replay::replay(&mut core, &pcap, kvlb::nf::PortId(0), &out).unwrap();
        let frames_of = |name: &str| -> Vec<Vec<u8>> {
            let p = out.join(name);
            if p.exists() {
                read_pcap(&p).into_iter().map(|r| r.data).collect()
            } else {
                Vec::new()
            }
        };
        let (forwarded, emitted) = (frames_of("port0.pcap"), frames_of("emitted-port0.pcap"));
        let live: Vec<Vec<u8>> = live.into_iter().map(|r| r.data).collect();
        eprintln!(
            "kvlb dpdk wrote {} frames; replay {} forwarded, {} emitted",
            live.len(),
            forwarded.len(),
            emitted.len()
        );
        // Nothing answers in this capture: the core forwards GETs until the backends time
        // out, then probes them (emitted frames) and drops requests meanwhile. Both kinds of
        // output must be there for the comparison to mean something.
        assert!(!forwarded.is_empty() && !emitted.is_empty());
        assert!(
            is_interleaving(&live, &forwarded, &emitted),
            "kvlb dpdk wrote {} frames; replay {} forwarded and {} emitted",
            live.len(),
            forwarded.len(),
            emitted.len()
        );
    }

    const ARGS: &[&str] = &[
        "--backend",
        "10.0.0.2:11211",
        "--backend",
        "10.0.0.3:11211",
        "--vip",
        "10.0.0.1:11211",
        "--neighbor",
        "10.0.0.2=02:00:00:00:00:02",
        "--neighbor",
        "10.0.0.3=02:00:00:00:00:03",
        "--neighbor",
        "10.0.0.9=02:00:00:00:00:09",
        "--clock",
        "pcap",
        "--exit-when-idle",
        "--stats-interval",
        "0",
    ];

    #[test]
    fn every_frame_reaches_the_core_and_runs_repeat_exactly() {
        let input = gets(500);
        let (out1, stdout) = run_over_pcap(&input, ARGS);
        // The final report: every frame received and handed to the core.
        let last = stdout
            .lines()
            .rev()
            .find(|l| l.contains("core in"))
            .expect(&stdout);
        assert!(last.contains("rx 500 "), "{stdout}");
        assert!(last.contains("core in 500 "), "{stdout}");
        assert!(stdout.contains("port 0 (net_pcap0): rx 500"), "{stdout}");
        // Same frames, same capture times: same output, byte for byte.
        let (out2, _) = run_over_pcap(&input, ARGS);
        let bytes = |v: &[PcapRecord]| v.iter().map(|r| r.data.clone()).collect::<Vec<_>>();
        assert_eq!(bytes(&out1), bytes(&out2));
    }

    #[test]
    fn argument_errors_are_explained() {
        let prefix = unique_prefix("cli");
        let _runtime = RuntimeDir::new(&prefix);
        let mut eal = strings(&["dpdk"]);
        eal.extend(eal_test_args(&prefix));

        // No `--`.
        let o = kvlb(&eal);
        assert!(!o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("[EAL args] --"),
            "{}",
            text(&o)
        );

        // kvlb's own validation before EAL starts.
        let mut a = eal.clone();
        a.push("--".into());
        let o = kvlb(&a);
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("no --backend"),
            "{}",
            text(&o)
        );

        // An EAL argument EAL rejects.
        let mut a = eal.clone();
        a.extend(strings(&[
            "--no-such-eal-flag",
            "--",
            "--backend",
            "127.0.0.1:1",
        ]));
        let o = kvlb(&a);
        assert!(!o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("EAL initialisation failed"),
            "{}",
            text(&o)
        );

        // A port that EAL did not create.
        let mut a = eal.clone();
        a.extend(strings(&[
            "--vdev=net_null0",
            "--",
            "--backend",
            "127.0.0.1:1",
            "--server-port",
            "3",
        ]));
        let o = kvlb(&a);
        assert!(!o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stderr)
                .contains("--server-port 3 is not one of EAL's ports"),
            "{}",
            text(&o)
        );
    }
}
