//! `kvlb dpdk` in front of real memcached servers, on software ports in network namespaces:
//! kvlb runs in a namespace of its own with two `net_af_packet` ports on veth pairs, one
//! toward a client namespace and one toward a server namespace where three memcached servers
//! listen.
//!
//! ```text
//!  client ns                   lb ns: kvlb dpdk                         server ns
//!  10.77.0.2 ──veth── net_af_packet0 │ net_af_packet1 ──veth── 10.77.1.2, .3, .4 (memcached :11211)
//!                     VIP 10.77.0.1:11211   local IP 10.77.1.1
//! ```
//!
//! Nothing is configured by hand between them: the client and the servers find kvlb's
//! addresses by ARP (kvlb answers for the VIP and its local IP) and kvlb finds the servers by
//! ARP (it asks on the server port). The namespaces are private, so every run uses the same
//! addresses and ports without meeting another run; only the namespace names are unique per
//! run. kvlb's ports sit in a namespace with no addresses, so no kernel stack answers or
//! forwards the frames it handles.
//!
//! The kernel ends of the veths run with transmit checksum offload off: a datagram a local
//! socket sends on a veth carries only a partial UDP checksum (the peer's stack would not
//! check it), and net_af_packet hands it to kvlb as it is, which drops it as
//! `bad_udp_checksum`. A NIC would have filled the checksum in.
//!
//! Needs root, `ip` and `ethtool`; without them it reports the skip (see `tests/skip`),
//! which fails in CI.

mod common;
#[cfg(feature = "dpdk")]
mod dpdk_support;
mod workspace_bin;

use common::skip;

#[cfg(not(feature = "dpdk"))]
#[test]
fn kvlb_dpdk_in_network_namespaces() {
    skip::skip(
        "dpdk",
        skip::Need::Installed,
        "built without --features dpdk (scripts/test.sh builds with it)",
    );
}

#[cfg(feature = "dpdk")]
#[test]
fn kvlb_dpdk_in_network_namespaces() {
    if let Some(reason) = with_dpdk::skip_reason() {
        skip::skip("network namespaces", skip::Need::Installed, &reason);
        return;
    }
    skip::used(
        "dpdk",
        "kvlb dpdk, net_af_packet on veths in network namespaces",
    );
    skip::used("memcached", "3 servers in a network namespace");
    with_dpdk::run();
}

#[cfg(feature = "dpdk")]
mod with_dpdk {
    use std::collections::BTreeMap;
    use std::fs::File;
    use std::io::{BufRead, BufReader, Write};
    use std::net::{SocketAddrV4, TcpStream, UdpSocket};
    use std::path::{Path, PathBuf};
    use std::process::{Command, ExitStatus, Stdio};
    use std::time::{Duration, Instant};

    use serde_json::Value;

    use crate::common::{have, Proc, UdpClient};
    use crate::dpdk_support::{eal_test_args, unique_prefix, RuntimeDir};

    const KVLB: &str = env!("CARGO_BIN_EXE_kvlb");
    /// One request's wait for its reply.
    const T: Duration = Duration::from_secs(2);
    const SERVERS: usize = 3;
    const VIP: &str = "10.77.0.1:11211";
    const LOCAL_IP: &str = "10.77.1.1";
    const CLIENT_IP: &str = "10.77.0.2";

    fn server_addr(i: usize) -> SocketAddrV4 {
        SocketAddrV4::new([10, 77, 1, 2 + i as u8].into(), 11211)
    }

    fn vip() -> SocketAddrV4 {
        VIP.parse().unwrap()
    }

    pub fn skip_reason() -> Option<String> {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let root = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"));
        if !root {
            return Some("not running as root (network namespaces need it)".into());
        }
        for (program, package) in [("ip", "iproute2"), ("ethtool", "ethtool")] {
            if !have(program) {
                return Some(format!("`{program}` not found (apt-get install {package})"));
            }
        }
        None
    }

    /// Runs a setup command; panics with its stderr if it fails.
    fn sh(args: &[&str]) {
        let out = Command::new(args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `f` on a thread that has joined network namespace `ns`; sockets it opens stay in
    /// that namespace whichever thread uses them later.
    fn in_netns<R: Send>(ns: &str, f: impl FnOnce() -> R + Send) -> R {
        let path = format!("/var/run/netns/{ns}");
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns {path}: {e}"));
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// The three namespaces and the two veth pairs between them; deleted on drop (which
    /// deletes the veths too).
    struct Namespaces {
        client: String,
        lb: String,
        server: String,
    }

    impl Namespaces {
        fn create() -> Namespaces {
            let pid = std::process::id();
            let ns = Namespaces {
                client: format!("kvlbt-{pid}-client"),
                lb: format!("kvlbt-{pid}-lb"),
                server: format!("kvlbt-{pid}-server"),
            };
            for name in ns.all() {
                // A namespace of this name can only be left over from a killed run that had
                // our pid.
                let _ = Command::new("ip")
                    .args(["netns", "del", name])
                    .stderr(Stdio::null())
                    .status();
                sh(&["ip", "netns", "add", name]);
                sh(&["ip", "-n", name, "link", "set", "lo", "up"]);
                // No router solicitations or other IPv6 chatter on kvlb's ports.
                sh(&[
                    "ip",
                    "netns",
                    "exec",
                    name,
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ]);
            }
            let (c, l, s) = (&ns.client, &ns.lb, &ns.server);
            sh(&[
                "ip", "link", "add", "name", "cli", "netns", c, "type", "veth", "peer", "name",
                "lbc", "netns", l,
            ]);
            sh(&[
                "ip", "link", "add", "name", "srv", "netns", s, "type", "veth", "peer", "name",
                "lbs", "netns", l,
            ]);
            sh(&[
                "ip",
                "-n",
                c,
                "addr",
                "add",
                &format!("{CLIENT_IP}/24"),
                "dev",
                "cli",
            ]);
            for i in 0..SERVERS {
                let ip = format!("{}/24", server_addr(i).ip());
                sh(&["ip", "-n", s, "addr", "add", &ip, "dev", "srv"]);
            }
            for (n, dev) in [(c, "cli"), (s, "srv"), (l, "lbc"), (l, "lbs")] {
                sh(&["ip", "-n", n, "link", "set", dev, "up"]);
            }
            for (n, dev) in [(c, "cli"), (s, "srv")] {
                sh(&["ip", "netns", "exec", n, "ethtool", "-K", dev, "tx", "off"]);
            }
            ns
        }

        fn all(&self) -> [&str; 3] {
            [&self.client, &self.lb, &self.server]
        }
    }

    impl Drop for Namespaces {
        fn drop(&mut self) {
            for name in self.all() {
                let _ = Command::new("ip").args(["netns", "del", name]).status();
            }
        }
    }

    /// A process started with `ip netns exec` (which execs it: the PID is the program's).
    fn spawn_in(ns: &str, name: &str, args: &[&str], log: &Path) -> Proc {
        let file = File::create(log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child,
            name: name.to_string(),
        }
    }

    /// Runs a command to completion within `limit` (killed otherwise), stdout and stderr
    /// going to files; returns its status, stdout and stderr.
    fn run_bounded(
        cmd: &mut Command,
        input: &[u8],
        limit: Duration,
        dir: &Path,
        name: &str,
    ) -> (ExitStatus, String, String) {
        let (out, err) = (
            dir.join(format!("{name}.out")),
            dir.join(format!("{name}.err")),
        );
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        child.stdin.take().unwrap().write_all(input).unwrap();
        let mut guard = Proc {
            child,
            name: name.to_string(),
        };
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = guard.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "{name} ran past {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        (status, read(&out), read(&err))
    }

    /// One memcached server in the server namespace.
    struct Server {
        addr: SocketAddrV4,
        proc: Option<Proc>,
    }

    /// Everything the test runs; torn down in field order on drop, also when a check panics:
    /// kvlb, then the servers (by PID), then EAL's runtime files, then the namespaces.
    struct Fixture {
        kvlb: Option<Proc>,
        servers: Vec<Server>,
        _runtime: RuntimeDir,
        ns: Namespaces,
        dir: tempfile::TempDir,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let log =
                    std::fs::read_to_string(self.dir.path().join("kvlb.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let mut err = std::io::stderr();
                let _ = writeln!(err, "--- kvlb's log (last lines):");
                for l in tail.iter().rev() {
                    let _ = writeln!(err, "{l}");
                }
            }
        }
    }

    impl Fixture {
        fn start() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let prefix = unique_prefix("netns");
            let mut fx = Fixture {
                kvlb: None,
                servers: Vec::new(),
                _runtime: RuntimeDir::new(&prefix),
                ns: Namespaces::create(),
                dir,
            };
            for i in 0..SERVERS {
                let addr = server_addr(i);
                let (ip, port) = (addr.ip().to_string(), addr.port().to_string());
                let log = fx.dir.path().join(format!("memcached{i}.log"));
                let proc = spawn_in(
                    &fx.ns.server,
                    "memcached",
                    &[
                        "memcached",
                        "-u",
                        "root",
                        "-l",
                        &ip,
                        "-p",
                        &port,
                        "-U",
                        &port,
                        "-t",
                        "1",
                        "-m",
                        "64",
                    ],
                    &log,
                );
                fx.servers.push(Server {
                    addr,
                    proc: Some(proc),
                });
            }
            for i in 0..SERVERS {
                let deadline = Instant::now() + Duration::from_secs(5);
                while fx.direct(i).is_none() {
                    assert!(Instant::now() < deadline, "memcached {i} did not start");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }

            let mut args: Vec<String> = vec![KVLB.into(), "dpdk".into()];
            args.extend(eal_test_args(&prefix));
            args.extend(
                [
                    "--vdev",
                    "net_af_packet0,iface=lbc",
                    "--vdev",
                    "net_af_packet1,iface=lbs",
                    "--",
                    "--client-port",
                    "0",
                    "--server-port",
                    "1",
                    "--vip",
                    VIP,
                    "--local-ip",
                    LOCAL_IP,
                    // The client namespace is ours: no reply cap for it.
                    "--trusted",
                    "10.77.0.0/24",
                    "--hot-epoch",
                    "500ms",
                    "--replicas",
                    "2",
                    "--cache-policy",
                    "always",
                    "--stats-interval",
                    "1s",
                ]
                .map(String::from),
            );
            args.push("--stats-json".into());
            args.push(fx.dir.path().join("kvlb.jsonl").display().to_string());
            for s in &fx.servers {
                args.push("--backend".into());
                args.push(s.addr.to_string());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let log = fx.dir.path().join("kvlb.log");
            fx.kvlb = Some(spawn_in(&fx.ns.lb, "kvlb dpdk", &args, &log));

            // Ready once a `version` through the VIP is answered (EAL start-up, then ARP on
            // both sides).
            let c = fx.client();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if c.request(b"version\r\n", Duration::from_millis(100))
                    .is_some()
                {
                    break;
                }
                if let Some(status) = fx.kvlb.as_mut().unwrap().child.try_wait().unwrap() {
                    panic!("kvlb dpdk exited ({status}) before answering");
                }
                assert!(
                    Instant::now() < deadline,
                    "kvlb dpdk did not answer through the VIP within 20 s"
                );
            }
            fx
        }

        /// A memcached UDP client in the client namespace, talking to the VIP.
        fn client(&self) -> UdpClient {
            let sock = in_netns(&self.ns.client, || {
                UdpSocket::bind(format!("{CLIENT_IP}:0")).unwrap()
            });
            UdpClient::with_socket(sock, vip())
        }

        /// A TCP connection to server `i`, opened inside the server namespace (bypassing kvlb).
        fn direct(&self, i: usize) -> Option<Direct> {
            let addr = self.servers[i].addr;
            in_netns(&self.ns.server, || {
                TcpStream::connect_timeout(&addr.into(), Duration::from_millis(500)).ok()
            })
            .map(|s| {
                s.set_read_timeout(Some(T)).unwrap();
                Direct(BufReader::new(s))
            })
        }

        fn backend_args(&self) -> Vec<String> {
            self.servers
                .iter()
                .flat_map(|s| ["--backend".to_string(), s.addr.to_string()])
                .collect()
        }

        /// `kvlb route` for `keys` (with `extra` options): key → backend as written.
        fn route(&self, keys: &[String], extra: &[&str]) -> BTreeMap<String, String> {
            let (status, out, err) = run_bounded(
                Command::new(KVLB)
                    .arg("route")
                    .args(self.backend_args())
                    .args(extra),
                keys.join("\n").as_bytes(),
                Duration::from_secs(10),
                self.dir.path(),
                "route",
            );
            assert!(status.success(), "kvlb route: {err}");
            out.lines()
                .map(|l| {
                    let (k, b) = l.split_once(' ').expect("KEY HOST:PORT");
                    (k.to_string(), b.to_string())
                })
                .collect()
        }

        fn server_index(&self, backend: &str) -> usize {
            self.servers
                .iter()
                .position(|s| s.addr.to_string() == backend)
                .unwrap_or_else(|| panic!("{backend} is not a backend"))
        }
    }

    /// A direct TCP connection to one memcached.
    struct Direct(BufReader<TcpStream>);

    impl Direct {
        /// One command; the reply up to its terminal line.
        fn command(&mut self, cmd: &str) -> String {
            self.0.get_mut().write_all(cmd.as_bytes()).unwrap();
            let mut out = String::new();
            loop {
                let mut line = String::new();
                if self.0.read_line(&mut line).unwrap_or(0) == 0 {
                    return out;
                }
                out.push_str(&line);
                let l = line.trim_end();
                if matches!(
                    l,
                    "END" | "STORED" | "DELETED" | "NOT_FOUND" | "OK" | "ERROR"
                ) || l.starts_with("VERSION")
                    || l.starts_with("SERVER_ERROR")
                    || l.starts_with("CLIENT_ERROR")
                {
                    return out;
                }
            }
        }

        fn get(&mut self, key: &str) -> Option<String> {
            let r = self.command(&format!("get {key}\r\n"));
            let mut lines = r.split("\r\n");
            lines
                .next()
                .filter(|h| h.starts_with("VALUE"))
                .map(|_| lines.next().unwrap_or("").to_string())
        }

        fn stat(&mut self, name: &str) -> u64 {
            let r = self.command("stats\r\n");
            r.lines()
                .find_map(|l| {
                    let mut it = l.split_whitespace();
                    (it.next() == Some("STAT") && it.next() == Some(name))
                        .then(|| it.next().unwrap().parse().unwrap())
                })
                .unwrap_or_else(|| panic!("no stat {name}"))
        }
    }

    fn text(r: Option<Vec<u8>>) -> String {
        String::from_utf8_lossy(&r.expect("no reply through the VIP")).into_owned()
    }

    pub fn run() {
        let started = Instant::now();
        let mut fx = Fixture::start();
        let c = fx.client();
        eprintln!("kvlb dpdk answering after {:?}", started.elapsed());

        round_trip(&c);
        let placed = keys_land_on_their_ketama_server(&fx, &c);
        multi_get_spans_servers(&fx, &c);
        hot_key_is_served_and_stays_fresh(&fx, &c);
        kvbench_reads_nothing_stale(&fx);
        failover_serves_a_dead_servers_keys(&mut fx, &c, &placed);

        // kvlb stops cleanly on SIGTERM and counts what its ports carried.
        let kvlb = fx.kvlb.take().unwrap();
        let status = stop(kvlb);
        let log = std::fs::read_to_string(fx.dir.path().join("kvlb.log")).unwrap();
        assert!(status.success(), "kvlb dpdk exited with {status}:\n{log}");
        for port in ["port 0 (net_af_packet0): rx", "port 1 (net_af_packet1): rx"] {
            let line = log
                .lines()
                .find(|l| l.starts_with(port))
                .unwrap_or_else(|| panic!("no '{port}' line in kvlb's log:\n{log}"));
            let rx: u64 = line[port.len()..]
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap();
            assert!(rx > 1000, "{line}");
        }
        // Every frame from the kernel sides had good checksums (see the module doc).
        let json = std::fs::read_to_string(fx.dir.path().join("kvlb.jsonl")).unwrap();
        let last: Value = serde_json::from_str(json.lines().last().expect("stats lines")).unwrap();
        for reason in ["bad_udp_checksum", "bad_ip_checksum"] {
            assert!(
                last["drops"].get(reason).is_none(),
                "kvlb dropped frames as {reason}: {}",
                last["drops"]
            );
        }
        eprintln!("kvlb dpdk in network namespaces: {:?}", started.elapsed());
    }

    /// SIGTERM, then up to 10 s for it to exit (SIGKILL after that).
    fn stop(mut p: Proc) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &p.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = p.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = p.child.kill();
        p.child.wait().unwrap()
    }

    fn round_trip(c: &UdpClient) {
        let r = |m: &str| text(c.request(m.as_bytes(), T));
        assert!(r("version\r\n").starts_with("VERSION 1.6"));
        assert_eq!(r("set rt 5 0 5\r\nhello\r\n"), "STORED\r\n");
        assert_eq!(r("get rt\r\n"), "VALUE rt 5 5\r\nhello\r\nEND\r\n");
        assert_eq!(r("delete rt\r\n"), "DELETED\r\n");
        assert_eq!(r("get rt\r\n"), "END\r\n");
    }

    /// Each key written through the VIP is on the server `kvlb route` names, and only there.
    fn keys_land_on_their_ketama_server(fx: &Fixture, c: &UdpClient) -> BTreeMap<String, String> {
        let keys: Vec<String> = (0..60).map(|i| format!("place:{i}")).collect();
        let placed = fx.route(&keys, &[]);
        assert_eq!(placed.len(), keys.len());
        let mut direct: Vec<Direct> = (0..SERVERS).map(|i| fx.direct(i).unwrap()).collect();
        let mut per_server = [0usize; SERVERS];
        for key in &keys {
            assert_eq!(c.set(key, key).as_deref(), Some("STORED\r\n"), "set {key}");
            let owner = fx.server_index(&placed[key]);
            per_server[owner] += 1;
            for (i, d) in direct.iter_mut().enumerate() {
                assert_eq!(
                    d.get(key).is_some(),
                    i == owner,
                    "{key} on server {i} (kvlb route says {})",
                    placed[key]
                );
            }
        }
        assert!(
            per_server.iter().all(|&n| n > 0),
            "every server owns some keys: {per_server:?}"
        );
        placed
    }

    /// A multi-get whose keys live on different servers comes back as one reply.
    fn multi_get_spans_servers(fx: &Fixture, c: &UdpClient) {
        let keys: Vec<String> = (0..12).map(|i| format!("multi:{i}")).collect();
        let owners: std::collections::BTreeSet<String> =
            fx.route(&keys, &[]).into_values().collect();
        assert!(owners.len() >= 2, "keys span servers: {owners:?}");
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(c.set(k, &format!("v{i:02}")).as_deref(), Some("STORED\r\n"));
        }
        let reply = text(c.request(format!("get {} absent\r\n", keys.join(" ")).as_bytes(), T));
        assert!(reply.ends_with("END\r\n"), "{reply}");
        assert_eq!(reply.matches("END\r\n").count(), 1, "{reply}");
        for (i, k) in keys.iter().enumerate() {
            assert!(
                reply.contains(&format!("VALUE {k} 0 3\r\nv{i:02}\r\n")),
                "{k} missing from {reply}"
            );
        }
        assert!(!reply.contains("absent"), "{reply}");
    }

    /// A hot key is replicated and answered by kvlb; a set through kvlb is seen at once.
    fn hot_key_is_served_and_stays_fresh(fx: &Fixture, c: &UdpClient) {
        assert_eq!(c.set("hot", "v1").as_deref(), Some("STORED\r\n"));
        let skewed = |n: usize| {
            for i in 0..n {
                let key = if i % 2 == 0 {
                    "hot".to_string()
                } else {
                    format!("cold:{}", i % 500)
                };
                c.get(&key).expect("reply");
            }
        };
        // Hot within one 500 ms epoch of this skew, replicated by the next.
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut direct: Vec<Direct> = (0..SERVERS).map(|i| fx.direct(i).unwrap()).collect();
        loop {
            skewed(1000);
            if direct
                .iter_mut()
                .all(|d| d.get("hot").as_deref() == Some("v1"))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the hot key was not replicated to every server within 15 s"
            );
        }
        skewed(400);
        let gets = |direct: &mut Vec<Direct>| -> u64 {
            direct.iter_mut().map(|d| d.stat("cmd_get")).sum()
        };
        let before = gets(&mut direct);
        for _ in 0..500 {
            assert_eq!(c.get("hot"), Some(Some("v1".to_string())));
        }
        let reached = gets(&mut direct) - before;
        assert!(
            reached < 50,
            "{reached} of 500 gets of a cached hot key reached the servers"
        );
        assert_eq!(c.set("hot", "v2").as_deref(), Some("STORED\r\n"));
        for _ in 0..200 {
            assert_eq!(c.get("hot"), Some(Some("v2".to_string())));
        }
        for d in &mut direct {
            assert_eq!(
                d.get("hot").as_deref(),
                Some("v2"),
                "replicas follow the set"
            );
        }
        assert_eq!(text(c.request(b"delete hot\r\n", T)), "DELETED\r\n");
        for _ in 0..50 {
            assert_eq!(c.get("hot"), Some(None));
        }
    }

    /// A few seconds of kvbench (Zipf 0.99, 95 % gets, every value checked) from the client
    /// namespace: nothing stale or corrupt, next to no timeouts.
    fn kvbench_reads_nothing_stale(fx: &Fixture) {
        let (status, out, err) = run_bounded(
            Command::new("ip")
                .args(["netns", "exec", &fx.ns.client])
                .arg(crate::workspace_bin::kvbench())
                .args([
                    "--server",
                    VIP,
                    "--threads",
                    "1",
                    "--connections",
                    "4",
                    "--depth",
                    "2",
                    "--keys",
                    "2000",
                    "--dist",
                    "zipf:0.99",
                    "--get-ratio",
                    "0.95",
                    "--value-size",
                    "100",
                    "--load",
                    "--duration",
                    "4",
                    "--json",
                    "--quiet",
                ]),
            b"",
            Duration::from_secs(40),
            fx.dir.path(),
            "kvbench",
        );
        // Exit status 3 means stale or corrupt values were read.
        assert!(status.success(), "kvbench: {status}\n{err}\n{out}");
        let s: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        let n = |v: &Value| v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"));
        let (requests, timeouts) = (n(&s["requests"]), n(&s["timeouts"]));
        let v = &s["validation"];
        eprintln!(
            "kvbench through kvlb dpdk: {:.0} ops/s, {requests} requests, {timeouts} timeouts, \
             p99 {} us, validation {v}",
            s["ops_per_sec"].as_f64().unwrap_or(0.0),
            s["latency_us"]["p99"]
        );
        assert!(requests > 1000, "only {requests} requests in 4 s");
        assert_eq!(n(&v["stale"]), 0, "stale values read: {v}");
        assert_eq!(n(&v["corrupt"]), 0, "corrupt values read: {v}");
        assert!(n(&v["checked"]) > 500, "{v}");
        assert_eq!(n(&s["errors"]), 0, "{out}");
        assert!(
            timeouts * 100 <= requests,
            "{timeouts} timeouts in {requests} requests"
        );
    }

    /// With one memcached killed, its keys are served again (from the next server on the
    /// continuum, as `kvlb route --down` says).
    fn failover_serves_a_dead_servers_keys(
        fx: &mut Fixture,
        c: &UdpClient,
        placed: &BTreeMap<String, String>,
    ) {
        let dead = 1;
        let dead_addr = fx.servers[dead].addr.to_string();
        drop(fx.servers[dead].proc.take()); // SIGKILL by PID
        let keys: Vec<String> = placed
            .iter()
            .filter(|(_, b)| **b == dead_addr)
            .map(|(k, _)| k.clone())
            .take(5)
            .collect();
        assert!(!keys.is_empty());
        let moved = fx.route(&keys, &["--down", &dead_addr]);
        let started = Instant::now();
        for key in &keys {
            let value = format!("after:{key}");
            let set = format!("set {key} 0 0 {}\r\n{value}\r\n", value.len());
            let deadline = Instant::now() + Duration::from_secs(10);
            // A request that went to the dead server before kvlb noticed gets no answer.
            while c
                .request(set.as_bytes(), Duration::from_millis(300))
                .as_deref()
                != Some(&b"STORED\r\n"[..])
            {
                assert!(
                    Instant::now() < deadline,
                    "{key}: no set answered within 10 s of {dead_addr} dying"
                );
            }
            assert_eq!(c.get(key), Some(Some(value.clone())), "{key}");
            let owner = fx.server_index(&moved[key]);
            assert_ne!(owner, dead);
            let mut d = fx.direct(owner).unwrap();
            assert_eq!(
                d.get(key).as_deref(),
                Some(value.as_str()),
                "{key} on {owner}"
            );
        }
        eprintln!(
            "failover: {} keys of {dead_addr} served again after {:?}",
            keys.len(),
            started.elapsed()
        );
    }
}
