//! A real ONVM v21.10 manager for the ONVM tests: two `net_tap` ports whose interfaces live
//! in two network namespaces the fixture creates (client side: port 0, server side: port 1),
//! a private EAL file prefix, and teardown by PID when dropped.
//!
//! Tests run only where they can: `ONVM_HOME` pointing to a built openNetVM, root, free
//! hugepages. Otherwise they report the skip (see `tests/skip`) and pass: nothing installs
//! OpenNetVM, so its tests skip loudly in CI too.
#![allow(dead_code)]

#[path = "../kvlb_stats/mod.rs"]
pub mod kvlb_stats;
#[path = "../skip/mod.rs"]
pub mod skip;
#[path = "../workspace_bin/mod.rs"]
pub mod workspace_bin;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Reports a skipped ONVM test on the real stdout and in `$KVLB_SKIP_LOG`.
pub fn skipped(reason: &str) {
    skip::skip("onvm", skip::Need::Optional, reason);
}

/// Why ONVM tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    let home = match std::env::var("ONVM_HOME") {
        Ok(h) => PathBuf::from(h),
        Err(_) => {
            return Some("ONVM_HOME is not set (point it at a built openNetVM v21.10)".into())
        }
    };
    let target =
        std::env::var("RTE_TARGET").unwrap_or_else(|_| "x86_64-native-linuxapp-gcc".into());
    for nf in [
        "onvm/onvm_mgr",
        "examples/simple_forward",
        "examples/bridge",
    ] {
        if find_app(&home, nf, &target).is_none() {
            return Some(format!("no built {nf} under ONVM_HOME={}", home.display()));
        }
    }
    // The effective uid, from /proc (no libc call needed).
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid0 = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"));
    if !uid0 {
        return Some("not running as root (the manager, TAPs and namespaces need it)".into());
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let free: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("HugePages_Free:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if free < 300 {
        return Some(format!(
            "only {free} free 2 MiB hugepages (need 300; e.g. echo 1024 > /proc/sys/vm/nr_hugepages \
             and mount hugetlbfs)"
        ));
    }
    None
}

/// The binary of an ONVM app (`onvm/onvm_mgr`, `examples/bridge`, ...).
pub fn find_app(home: &Path, dir: &str, target: &str) -> Option<PathBuf> {
    let name = Path::new(dir).file_name()?.to_str()?.to_string();
    [
        home.join(dir).join(target).join("app").join(&name),
        home.join(dir).join("build/app").join(&name),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

fn app(dir: &str) -> PathBuf {
    let home = PathBuf::from(std::env::var("ONVM_HOME").unwrap());
    let target =
        std::env::var("RTE_TARGET").unwrap_or_else(|_| "x86_64-native-linuxapp-gcc".into());
    find_app(&home, dir, &target).unwrap()
}

fn sh(args: &[&str]) {
    let st = Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(st.success(), "{args:?} failed");
}

/// Kills a child process by its handle (PID) when dropped.
pub struct Proc {
    pub name: &'static str,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> Proc {
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name,
            child: Some(child),
            log,
        }
    }

    /// Takes over a child started elsewhere (its output already redirected to `log`).
    pub fn adopt(name: &'static str, child: Child, log: PathBuf) -> Proc {
        Proc {
            name,
            child: Some(child),
            log,
        }
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| !matches!(c.try_wait(), Ok(None)))
    }

    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Sends SIGINT (ONVM apps stop cleanly on it) and waits, then SIGKILL if needed.
    pub fn stop(&mut self) {
        self.stop_within(Duration::from_secs(10));
    }

    /// Sends SIGINT and waits up to `limit` for the process to exit, then SIGKILLs it.
    /// Returns whether it exited on its own.
    pub fn stop_within(&mut self, limit: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running manager with its namespaces; torn down on drop.
pub struct Manager {
    pub prefix: String,
    pub client_ns: String,
    pub server_ns: String,
    pub client_if: String,
    pub server_if: String,
    /// 10.X.0.0/24 on the client side, 10.X.1.0/24 on the server side.
    pub net: u8,
    pub dir: tempfile::TempDir,
    pub mgr: Proc,
    pub nfs: Vec<Proc>,
    /// Processes in the namespaces (memcached servers), stopped before the manager.
    pub servers: Vec<Proc>,
}

impl Manager {
    pub fn client_ip(&self) -> String {
        format!("10.{}.0.2", self.net)
    }
    pub fn server_ip(&self) -> String {
        format!("10.{}.1.2", self.net)
    }

    /// Starts the manager and moves its TAP interfaces into fresh namespaces.
    pub fn start(tag: &str) -> Manager {
        let pid = std::process::id();
        let prefix = format!("kvlb{tag}{pid}");
        let net = 100 + (pid % 100) as u8;
        let (client_if, server_if) = (
            format!("kc{tag}{}", pid % 100000),
            format!("ks{tag}{}", pid % 100000),
        );
        let (client_ns, server_ns) = (format!("kvlbc-{tag}-{pid}"), format!("kvlbs-{tag}-{pid}"));
        let dir = tempfile::tempdir().unwrap();
        let mgr = Proc::spawn(
            "onvm_mgr",
            Command::new(app("onvm/onvm_mgr"))
                .args([
                    "--lcores=0@0,1@1,2@1",
                    "-n",
                    "4",
                    "--proc-type=primary",
                    "--base-virtaddr=0x7f000000000",
                    &format!("--file-prefix={prefix}"),
                    "--no-pci",
                    &format!("--vdev=net_tap0,iface={client_if}"),
                    &format!("--vdev=net_tap1,iface={server_if}"),
                    "--",
                    "-p",
                    "3",
                    "-n",
                    "0x3",
                ])
                .current_dir(dir.path()),
            dir.path().join("mgr.log"),
        );
        let m = Manager {
            prefix,
            client_ns,
            server_ns,
            client_if,
            server_if,
            net,
            dir,
            mgr,
            nfs: Vec::new(),
            servers: Vec::new(),
        };
        m.wait_for_log(
            &m.mgr.log.clone(),
            "Running master thread",
            Duration::from_secs(30),
        );
        skip::used("onvm", "onvm_mgr v21.10 with two net_tap ports");
        for (ns, iface, side) in [
            (&m.client_ns, &m.client_if, 0),
            (&m.server_ns, &m.server_if, 1),
        ] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "link", "set", iface, "netns", ns]);
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
            ]);
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.{net}.{side}.2/24"),
                "dev",
                iface,
            ]);
            sh(&["ip", "-n", ns, "link", "set", iface, "up"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            let other = 1 - side;
            sh(&[
                "ip",
                "-n",
                ns,
                "route",
                "add",
                &format!("10.{net}.{other}.0/24"),
                "via",
                &format!("10.{net}.{side}.1"),
            ]);
            // The gateway (the NF side) has a static neighbour entry: no ARP needed.
            sh(&[
                "ip",
                "-n",
                ns,
                "neigh",
                "add",
                &format!("10.{net}.{side}.1"),
                "lladdr",
                "02:00:00:00:00:01",
                "dev",
                iface,
            ]);
        }
        m
    }

    pub fn wait_for_log(&self, log: &Path, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let text =
                String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned();
            if text.contains(needle) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "'{needle}' not in {} after {limit:?}:\n{text}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts one of ONVM's example NFs (`examples/NAME`) with its arguments.
    pub fn start_example(&mut self, name: &'static str, service: u16, nf_args: &[&str]) {
        let log = self.dir.path().join(format!("{name}.log"));
        let mut cmd = Command::new(app(&format!("examples/{name}")));
        cmd.args([
            "-l",
            "0",
            "-n",
            "3",
            "--proc-type=secondary",
            "--no-pci",
            &format!("--file-prefix={}", self.prefix),
        ])
        .args(["--", "-r", &service.to_string(), "--"])
        .args(nf_args)
        .current_dir(self.dir.path());
        let p = Proc::spawn(name, &mut cmd, log.clone());
        self.wait_for_log(&log, "Finished Process Init", Duration::from_secs(30));
        self.nfs.push(p);
    }

    /// EAL arguments for an NF in this process.
    pub fn nf_eal_args(&self) -> Vec<String> {
        ["-l", "0", "-n", "3", "--proc-type=secondary", "--no-pci"]
            .iter()
            .map(|s| s.to_string())
            .chain([format!("--file-prefix={}", self.prefix)])
            .collect()
    }

    /// The MAC of an interface inside a namespace.
    pub fn mac_of(ns: &str, iface: &str) -> [u8; 6] {
        let out = Command::new("ip")
            .args(["-n", ns, "-o", "link", "show", iface])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let mac = text
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_else(|| panic!("no MAC in {text}"));
        let mut m = [0u8; 6];
        for (i, part) in mac.split(':').enumerate() {
            m[i] = u8::from_str_radix(part, 16).unwrap();
        }
        m
    }

    /// Starts a UDP receiver on the server side printing each datagram (hex) until
    /// `seconds` pass.
    pub fn udp_receiver(&self, port: u16, seconds: u32) -> Child {
        let code = format!(
            "import socket,time,sys\n\
             s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             s.bind(('{ip}',{port}))\n\
             s.settimeout(0.2)\n\
             end=time.time()+{seconds}\n\
             print('ready',flush=True)\n\
             while time.time()<end:\n\
             \ttry:\n\
             \t\td,a=s.recvfrom(65535)\n\
             \t\tprint(d.hex(),flush=True)\n\
             \texcept socket.timeout:\n\
             \t\tpass\n",
            ip = self.server_ip()
        );
        Command::new("ip")
            .args(["netns", "exec", &self.server_ns, "python3", "-c", &code])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Sends `payloads` from the client side to the server side's `port`, `gap` apart.
    pub fn send_udp(&self, port: u16, payloads: &[Vec<u8>], gap: Duration) {
        let hex: Vec<String> = payloads
            .iter()
            .map(|p| p.iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        let code = format!(
            "import socket,time\n\
             s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             for h in {list:?}:\n\
             \ts.sendto(bytes.fromhex(h),('{ip}',{port}))\n\
             \ttime.sleep({gap})\n",
            list = hex,
            ip = self.server_ip(),
            gap = gap.as_secs_f64()
        );
        sh(&[
            "ip",
            "netns",
            "exec",
            &self.client_ns,
            "python3",
            "-c",
            &code,
        ]);
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        for nf in self.nfs.iter_mut().rev() {
            nf.stop();
        }
        for s in self.servers.iter_mut() {
            s.stop();
        }
        self.mgr.stop();
        for ns in [&self.client_ns, &self.server_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        // Hugepage files the processes left behind, wherever hugetlbfs is mounted (DPDK's
        // docs use /mnt/huge; systemd and Debian mount /dev/hugepages).
        for dir in ["/mnt/huge", "/dev/hugepages"] {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&self.prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(&self.prefix));
    }
}

/// A test pipeline for the ONVM runs: UDP frames to `port` get their MACs rewritten toward
/// the server side and leave by `verdict`; with `emit`, a copy whose first payload byte is
/// `E` (UDP checksum cleared) is emitted out of port 1. Everything else is dropped.
pub struct Relay {
    pub port: u16,
    pub server_mac: [u8; 6],
    pub port1_mac: [u8; 6],
    pub verdict: kvlb::nf::Verdict,
    pub emit: bool,
    pub relayed: u64,
    pub others: u64,
    outbox: Vec<Vec<u8>>,
}

impl Relay {
    pub fn new(
        port: u16,
        server_mac: [u8; 6],
        port1_mac: [u8; 6],
        verdict: kvlb::nf::Verdict,
        emit: bool,
    ) -> Relay {
        Relay {
            port,
            server_mac,
            port1_mac,
            verdict,
            emit,
            relayed: 0,
            others: 0,
            outbox: Vec::new(),
        }
    }
}

impl kvlb::nf::Pipeline for Relay {
    fn process_frame<F: kvlb::nf::FrameBuf + ?Sized>(
        &mut self,
        _now: kvlb::clock::Instant,
        _in_port: kvlb::nf::PortId,
        frame: &mut F,
    ) -> kvlb::nf::Verdict {
        let b = frame.bytes_mut();
        let is_ours = b.len() > 42
            && b[12..14] == [0x08, 0x00]
            && b[14] == 0x45
            && b[23] == 17
            && u16::from_be_bytes([b[36], b[37]]) == self.port;
        if !is_ours {
            self.others += 1;
            return kvlb::nf::Verdict::Drop(kvlb::nf::DropReason::NotForUs);
        }
        b[0..6].copy_from_slice(&self.server_mac);
        b[6..12].copy_from_slice(&self.port1_mac);
        self.relayed += 1;
        if self.emit {
            let mut copy = b.to_vec();
            copy[40..42].copy_from_slice(&[0, 0]);
            copy[42] = b'E';
            self.outbox.push(copy);
        }
        self.verdict
    }
    fn on_tick(&mut self, _now: kvlb::clock::Instant) {}
    fn drain_emitted(&mut self, send: &mut dyn FnMut(kvlb::nf::Dest, &[u8])) {
        for f in self.outbox.drain(..) {
            send(kvlb::nf::Dest::Port(kvlb::nf::PortId(1)), &f);
        }
    }
    fn count_drop(&mut self, _reason: kvlb::nf::DropReason) {}
    fn is_idle(&self) -> bool {
        true
    }
}

/// Reads the receiver's output: the datagrams it got, after its `ready` line.
pub fn received(child: Child) -> Vec<Vec<u8>> {
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| *l != "ready")
        .map(|l| {
            (0..l.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&l[i..i + 2], 16).unwrap())
                .collect()
        })
        .collect()
}

/// What [`relay_run`] saw: the pipeline afterwards, the NF's counters, and the datagrams
/// the server-side receiver got.
#[cfg(feature = "onvm")]
pub struct RelayRun {
    pub relay: Relay,
    pub counters: kvlb::datapath::onvm::NfCounters,
    pub got: Vec<Vec<u8>>,
}

/// Registers kvlb's NF as `service` (living `ttl_s` seconds, ONVM's `-t`), runs a [`Relay`]
/// for UDP port 7777 with `verdict` and `emit`, sends `payloads` from the client namespace
/// 1.5 s in, and collects what reaches the server namespace. The NF writes
/// `kvlbtest_stats.csv` into the manager's folder, which becomes the working directory.
#[cfg(feature = "onvm")]
pub fn relay_run(
    m: &Manager,
    service: u16,
    ttl_s: u32,
    verdict: kvlb::nf::Verdict,
    emit: bool,
    payloads: &[Vec<u8>],
) -> RelayRun {
    use std::io::{BufRead, BufReader};

    use kvlb::datapath::onvm::{NfOptions, OnvmNf};

    let server_mac = Manager::mac_of(&m.server_ns, &m.server_if);
    std::env::set_current_dir(m.dir.path()).unwrap();
    let mut nf = OnvmNf::init(
        "kvlbtest",
        &m.nf_eal_args(),
        &[
            "-r".into(),
            service.to_string(),
            "-t".into(),
            ttl_s.to_string(),
        ],
    )
    .expect("kvlb registers with the manager");
    assert_eq!(nf.service_id(), service);
    let ports = nf.ports();
    assert_eq!(
        ports.iter().map(|p| p.id).collect::<Vec<_>>(),
        [kvlb::nf::PortId(0), kvlb::nf::PortId(1)]
    );
    let mut relay = Relay::new(7777, server_mac, ports[1].mac, verdict, emit);
    let mut receiver = m.udp_receiver(7777, ttl_s.saturating_sub(1).max(1));
    let mut ready = String::new();
    BufReader::new(receiver.stdout.as_mut().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");
    let opts = NfOptions {
        stats_interval: Duration::ZERO,
        ..NfOptions::default()
    };
    let counters = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(1500));
            m.send_udp(7777, payloads, Duration::from_millis(50));
        });
        // Returns when ONVM's time to live ends the NF.
        nf.run(&mut relay, &opts, &mut |_, _, _| {})
    });
    drop(nf);
    RelayRun {
        relay,
        counters,
        got: received(receiver),
    }
}

/// The real thing end to end: `kvlb onvm` (the binary, with its real core) as an NF of the
/// manager, real memcached servers in the server namespace, kvbench (which checks every
/// value it reads) in the client namespace.
pub mod e2e {
    use super::{kvlb_stats, skip, Manager, Proc};
    use serde_json::Value;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    /// The memcached ports in the server namespace, one server each.
    pub const BACKEND_PORTS: [u16; 3] = [11211, 11212, 11213];

    /// kvlb's MAC: what the namespaces' static neighbour entries for their gateways name.
    pub const KVLB_MAC: &str = "02:00:00:00:00:01";

    impl Manager {
        /// kvlb's VIP, on the client side's gateway address.
        pub fn vip(&self) -> String {
            format!("10.{}.0.1:11211", self.net)
        }

        /// kvlb's address toward the servers: the server side's gateway.
        pub fn local_ip(&self) -> String {
            format!("10.{}.1.1", self.net)
        }

        /// A command run inside network namespace `ns`.
        pub fn in_ns(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(program);
            c
        }

        /// Starts one memcached (UDP and TCP) per [`BACKEND_PORTS`] in the server namespace.
        /// `ip netns exec` execs the program, so each Proc's PID is memcached's own.
        pub fn start_memcached(&mut self) {
            for port in BACKEND_PORTS {
                let p = port.to_string();
                let log = self.dir.path().join(format!("memcached-{port}.log"));
                let mut cmd = Manager::in_ns(&self.server_ns, "memcached");
                cmd.args(["-l", &self.server_ip(), "-p", &p, "-U", &p])
                    .args(["-t", "1", "-m", "64", "-u", "root"]);
                self.servers.push(Proc::spawn("memcached", &mut cmd, log));
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            for port in BACKEND_PORTS {
                while self.server_stats(port).is_none() {
                    assert!(Instant::now() < deadline, "memcached :{port} did not start");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            skip::used("memcached", "3 servers in the server namespace behind ONVM");
        }

        /// One memcached's own `stats` (read over TCP from inside the server namespace).
        pub fn server_stats(&self, port: u16) -> Option<Value> {
            let out = Manager::in_ns(&self.server_ns, super::workspace_bin::kvbench())
                .args(["--stats-of", &format!("{}:{port}", self.server_ip())])
                .args(["--proto", "tcp", "--json"])
                .stderr(Stdio::null())
                .output()
                .ok()?;
            if !out.status.success() {
                return None;
            }
            let v: Value = serde_json::from_slice(&out.stdout).ok()?;
            // One server asked: its stats, as an object or the only element of a list.
            match v {
                Value::Array(mut a) if a.len() == 1 => a.pop(),
                other => Some(other),
            }
        }

        /// Starts `kvlb onvm` (this build's binary) as service `service`, with ONVM
        /// arguments `onvm_args` after `-r`, and kvlb options after the defaults for this
        /// topology. Its stdout (ONVM's stats screen) and stderr go to `kvlb.out` and
        /// `kvlb.log`, its JSON stats to `kvlb.jsonl`, in the manager's folder. Waits until
        /// a request through the VIP is answered.
        pub fn start_kvlb(&mut self, service: u16, onvm_args: &[&str], kvlb_args: &[&str]) {
            let dir = self.dir.path().to_path_buf();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_kvlb"));
            cmd.arg("onvm")
                .args(self.nf_eal_args())
                .args(["--", "-r", &service.to_string()])
                .args(onvm_args)
                .arg("--")
                .args([
                    "--mac",
                    KVLB_MAC,
                    "--client-port",
                    "0",
                    "--server-port",
                    "1",
                ])
                .args(["--vip", &self.vip(), "--local-ip", &self.local_ip()])
                .args(["--trusted", &format!("10.{}.0.0/24", self.net)])
                .args(["--stats-interval", "1s"])
                .arg("--stats-json")
                .arg(dir.join("kvlb.jsonl"));
            for port in BACKEND_PORTS {
                cmd.args(["--backend", &format!("{}:{port}", self.server_ip())]);
            }
            cmd.args(kvlb_args)
                .env("RUST_LOG", "info")
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(dir.join("kvlb.out")).unwrap())
                .stderr(std::fs::File::create(dir.join("kvlb.log")).unwrap());
            let child = cmd.spawn().expect("starting kvlb onvm");
            self.nfs
                .push(Proc::adopt("kvlb", child, dir.join("kvlb.log")));
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let ok = Manager::in_ns(&self.client_ns, super::workspace_bin::kvbench())
                    .args(["--stats-of", &self.vip(), "--proto", "udp", "--json"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    break;
                }
                let gone = self.nfs.last_mut().unwrap().exited();
                assert!(
                    !gone && Instant::now() < deadline,
                    "kvlb onvm did not answer through the VIP within 30 s (exited: {gone}):\n{}\n{}",
                    self.nfs.last().unwrap().log_text(),
                    std::fs::read_to_string(dir.join("kvlb.out")).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            skip::used(
                "onvm",
                "kvlb onvm, the binary with its core, on a real manager",
            );
        }

        /// kvbench in the client namespace against the VIP: Zipf 1.2 over 2,000 keys, 90 %
        /// gets, every key loaded first, `seconds` long. Returns its JSON summary; fails
        /// the test when kvbench fails, and so on any stale or corrupt read (status 3).
        pub fn kvbench(&self, seconds: u32) -> Value {
            let out = Manager::in_ns(&self.client_ns, super::workspace_bin::kvbench())
                .args([
                    "--server",
                    &self.vip(),
                    "--keys",
                    "2000",
                    "--dist",
                    "zipf:1.2",
                ])
                .args(["--get-ratio", "0.9", "--value-size", "100", "--load"])
                .args(["--threads", "1", "--connections", "8", "--depth", "2"])
                .args(["--spin-us", "0", "--timeout", "500"])
                .args(["--duration", &seconds.to_string(), "--json", "--quiet"])
                .stdin(Stdio::null())
                .output()
                .expect("running kvbench");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "kvbench through kvlb onvm exited with {:?} (3: stale or corrupt reads):\n\
                 {stdout}\n{}\n--- kvlb log:\n{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr),
                self.nfs.last().map(|p| p.log_text()).unwrap_or_default()
            );
            serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("kvbench printed no JSON ({e}): {stdout}"))
        }

        /// kvlb's last JSON stats line.
        pub fn kvlb_stats(&self) -> Value {
            kvlb_stats::last_report(&self.dir.path().join("kvlb.jsonl"))
        }

        /// The last value of `name` on kvlb's ONVM stats screen (its stdout).
        pub fn screen_counter(&self, name: &str) -> u64 {
            let text =
                std::fs::read_to_string(self.dir.path().join("kvlb.out")).unwrap_or_default();
            text.lines()
                .rev()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.trim() == name).then(|| v.trim().parse().ok())?
                })
                .unwrap_or_else(|| panic!("no '{name}' on kvlb's stats screen:\n{text}"))
        }
    }

    /// The checks every end-to-end run makes: kvbench read values and found them all
    /// current, each memcached served part of the load, kvlb never panicked.
    pub fn check_served(m: &Manager, summary: &Value) {
        let n = |v: &Value, path: &[&str]| {
            let mut x = v;
            for p in path {
                x = &x[*p];
            }
            x.as_u64().unwrap_or_else(|| panic!("no {path:?} in {v}"))
        };
        assert_eq!(n(summary, &["validation", "stale"]), 0, "{summary}");
        assert_eq!(n(summary, &["validation", "corrupt"]), 0, "{summary}");
        assert!(n(summary, &["gets"]) >= 1000, "too few gets: {summary}");
        assert!(
            n(summary, &["hits"]) >= 500,
            "too few values read: {summary}"
        );
        for port in BACKEND_PORTS {
            let s = m
                .server_stats(port)
                .unwrap_or_else(|| panic!("no stats from memcached :{port}"));
            let gets = s["cmd_get"]
                .as_u64()
                .or_else(|| s["stats"]["cmd_get"].as_str().and_then(|x| x.parse().ok()));
            assert!(
                gets.is_some_and(|g| g > 0),
                "memcached :{port} served no gets: {s}"
            );
        }
        let log = m.nfs.last().unwrap().log_text();
        assert!(!log.contains("panicked"), "kvlb panicked:\n{log}");
    }

    /// Hot keys were found, cached (and answered from the cache) and replicated.
    pub fn check_hot(m: &Manager) {
        kvlb_stats::assert_hot_keys_served(&m.kvlb_stats(), 1);
    }

    /// Ends kvlb (SIGINT, as ONVM's NFs stop) and checks it stopped cleanly.
    pub fn stop_kvlb(m: &mut Manager) {
        let mut kvlb = m.nfs.pop().expect("kvlb running");
        let started = Instant::now();
        let exited = kvlb.stop_within(Duration::from_secs(30));
        let log = kvlb.log_text();
        assert!(
            exited && log.contains("stopped after"),
            "kvlb did not stop cleanly on SIGINT (exited by itself: {exited}, after {:?}):\n{log}",
            started.elapsed()
        );
        eprintln!("kvlb stopped {:?} after SIGINT", started.elapsed());
    }
}
