//! Shared by the integration tests: real memcached servers and kvlb processes on loopback,
//! on free ports, stopped by PID when dropped (also when a test panics).
#![allow(dead_code)]

#[path = "../c/mod.rs"]
pub mod c;
#[path = "../skip/mod.rs"]
pub mod skip;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddrV4, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free UDP+TCP port on 127.0.0.1 (bound and released; good enough for tests that
/// start the server right away), below Linux's ephemeral range (32768 and up). A server
/// a test kills and restarts on the same port (tests/serve.rs) could otherwise find its
/// port taken meanwhile by a socket bound to port 0, by this test or one running beside
/// it, and fail to start.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    loop {
        // splitmix64 over (seed, draw): spread over 10000..32000.
        let mut z = seed.wrapping_add(
            DRAWS
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let port = 10_000 + ((z ^ (z >> 31)) % 22_000) as u16;
        if UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
}

/// Whether a program is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A child process killed (SIGKILL by PID) and reaped on drop.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it with SIGTERM and waits (up to 5 s) for it to exit; returns its stderr.
    pub fn terminate(mut self) -> String {
        let pid = self.child.id() as i32;
        // SAFETY-free: signal via the kill command to stay within safe Rust.
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        err
    }
}

impl Proc {
    /// Sends `sig` (`-STOP`, `-CONT`, ...) with the kill command.
    pub fn signal(&self, sig: &str) {
        let pid = self.pid();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real memcached on 127.0.0.1, UDP and TCP on the same port.
pub struct Memcached {
    pub port: u16,
    pub proc: Proc,
}

impl Memcached {
    pub fn start() -> Memcached {
        for _ in 0..5 {
            if let Some(m) = Memcached::start_on(free_port()) {
                return m;
            }
        }
        panic!("memcached did not start");
    }

    /// A memcached with memcached's own default of UDP off: TCP only.
    pub fn start_tcp_only() -> Memcached {
        for _ in 0..5 {
            if let Some(m) = Memcached::spawn_on(free_port(), false) {
                return m;
            }
        }
        panic!("memcached did not start");
    }

    /// A memcached on `port` (e.g. restarting one a test killed), or None if it did not
    /// answer within 5 s.
    pub fn start_on(port: u16) -> Option<Memcached> {
        Memcached::spawn_on(port, true)
    }

    fn spawn_on(port: u16, udp: bool) -> Option<Memcached> {
        assert!(
            have("memcached"),
            "memcached is not installed (scripts/test.sh installs it)"
        );
        let child = Command::new("memcached")
            .args([
                "-l",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                &if udp { port } else { 0 }.to_string(),
            ])
            .args(["-t", "1", "-m", "64", "-u", "root"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning memcached");
        let m = Memcached {
            port,
            proc: Proc {
                child,
                name: format!("memcached:{port}"),
            },
        };
        if !m.wait_ready() {
            return None;
        }
        skip::used("memcached", &format!("127.0.0.1:{port}"));
        Some(m)
    }

    fn wait_ready(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new([127, 0, 0, 1].into(), self.port)
    }

    /// One TCP command, reply read until a terminal line.
    pub fn tcp(&self, cmd: &[u8]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(cmd).unwrap();
        let mut r = BufReader::new(s);
        let mut out = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            out.push_str(&line);
            let l = line.trim_end();
            if matches!(
                l,
                "END"
                    | "STORED"
                    | "NOT_STORED"
                    | "EXISTS"
                    | "NOT_FOUND"
                    | "DELETED"
                    | "OK"
                    | "TOUCHED"
                    | "ERROR"
            ) || l.starts_with("VERSION")
                || l.starts_with("SERVER_ERROR")
                || l.starts_with("CLIENT_ERROR")
            {
                break;
            }
        }
        out
    }

    pub fn set(&self, key: &str, value: &str) {
        let r = self.tcp(format!("set {key} 0 0 {}\r\n{value}\r\n", value.len()).as_bytes());
        assert_eq!(r, "STORED\r\n");
    }

    /// The value of `key` read directly from this server.
    pub fn get(&self, key: &str) -> Option<String> {
        let r = self.tcp(format!("get {key}\r\n").as_bytes());
        let mut lines = r.split("\r\n");
        let head = lines.next()?;
        head.starts_with("VALUE")
            .then(|| lines.next().unwrap_or("").to_string())
    }

    /// A counter from `stats`.
    pub fn stat(&self, name: &str) -> u64 {
        let r = self.tcp(b"stats\r\n");
        r.lines()
            .find_map(|l| {
                let mut it = l.split_whitespace();
                (it.next() == Some("STAT") && it.next() == Some(name))
                    .then(|| it.next().unwrap().parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no stat {name}"))
    }
}

/// `n` keys named `prefix<i>` whose ketama server among `ms` (libmemcached's placement,
/// every server up) is `ms[server]`.
pub fn keys_on(ms: &[Memcached], server: usize, prefix: &str, n: usize) -> Vec<String> {
    let specs: Vec<kvlb::config::BackendSpec> = ms
        .iter()
        .map(|m| m.addr().to_string().parse().unwrap())
        .collect();
    let ring = kvlb::ring::KetamaRing::from_backends(&specs, &vec![true; ms.len()]).unwrap();
    let keys: Vec<String> = (0..100 * n)
        .map(|i| format!("{prefix}{i}"))
        .filter(|k| ring.server_for_key(k.as_bytes()) == Some(server))
        .take(n)
        .collect();
    assert_eq!(keys.len(), n, "too few keys land on server {server}");
    keys
}

/// `kvlb serve` in front of some backends, on a free VIP port.
pub struct Kvlb {
    pub vip: SocketAddrV4,
    pub proc: Proc,
}

impl Kvlb {
    pub fn serve(backends: &[&Memcached], extra: &[&str]) -> Kvlb {
        let addrs: Vec<SocketAddrV4> = backends.iter().map(|b| b.addr()).collect();
        Kvlb::serve_addrs(&addrs, extra)
    }

    /// `kvlb serve` in front of backends at these addresses (real or fake servers).
    pub fn serve_addrs(backends: &[SocketAddrV4], extra: &[&str]) -> Kvlb {
        Kvlb::serve_with(backends, extra, false)
    }

    fn serve_with(backends: &[SocketAddrV4], extra: &[&str], ready_over_tcp: bool) -> Kvlb {
        let bin = env!("CARGO_BIN_EXE_kvlb");
        for _ in 0..5 {
            let port = free_port();
            let vip = SocketAddrV4::new([127, 0, 0, 1].into(), port);
            let mut cmd = Command::new(bin);
            cmd.args(["serve", "--listen", &vip.to_string()]).args([
                "--source-port-base",
                "0",
                "--stats-interval",
                "0",
            ]);
            for b in backends {
                cmd.args(["--backend", &b.to_string()]);
            }
            cmd.args(extra)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let child = cmd.spawn().expect("spawning kvlb serve");
            let k = Kvlb {
                vip,
                proc: Proc {
                    child,
                    name: format!("kvlb:{port}"),
                },
            };
            if k.wait_ready(ready_over_tcp) {
                return k;
            }
        }
        panic!("kvlb serve did not start");
    }

    /// [`Kvlb::serve`] in front of servers without UDP (memcached's default): its
    /// readiness is checked over TCP, so no datagram reaches them from the check.
    pub fn serve_tcp_only(backends: &[&Memcached], extra: &[&str]) -> Kvlb {
        let addrs: Vec<SocketAddrV4> = backends.iter().map(|b| b.addr()).collect();
        Kvlb::serve_with(&addrs, extra, true)
    }

    /// Ready once a `version` through the VIP is answered (over TCP if `tcp`).
    fn wait_ready(&self, tcp: bool) -> bool {
        let c = UdpClient::new(self.vip);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !tcp {
                if c.request(b"version\r\n", Duration::from_millis(100))
                    .is_some()
                {
                    return true;
                }
                continue;
            }
            if let Ok(mut s) = TcpStream::connect(self.vip) {
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = [0u8; 64];
                let answered = s.write_all(b"version\r\n").is_ok()
                    && s.read(&mut buf)
                        .is_ok_and(|n| buf[..n].starts_with(b"VERSION"));
                if answered {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

/// A memcached UDP client: one request, its reply (messages concatenated until complete).
pub struct UdpClient {
    sock: UdpSocket,
    to: SocketAddrV4,
    next_id: std::cell::Cell<u16>,
}

impl UdpClient {
    pub fn new(to: SocketAddrV4) -> UdpClient {
        UdpClient::with_socket(UdpSocket::bind("127.0.0.1:0").unwrap(), to)
    }

    /// A client on a socket bound elsewhere (e.g. inside a network namespace).
    pub fn with_socket(sock: UdpSocket, to: SocketAddrV4) -> UdpClient {
        UdpClient {
            sock,
            to,
            next_id: std::cell::Cell::new(1),
        }
    }

    /// Sends `msg` with a fresh request id; returns the reply's messages concatenated in
    /// arrival order (datagrams of other request ids are ignored), or `None` on timeout.
    /// Retrieval replies are read until END.
    pub fn request(&self, msg: &[u8], timeout: Duration) -> Option<Vec<u8>> {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        let mut dgram = vec![(id >> 8) as u8, id as u8, 0, 0, 0, 1, 0, 0];
        dgram.extend_from_slice(msg);
        self.sock.send_to(&dgram, self.to).ok()?;
        let retrieval = msg.starts_with(b"get") || msg.starts_with(b"gat") || msg == b"stats\r\n";
        let deadline = Instant::now() + timeout;
        let mut reply = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.sock.set_read_timeout(Some(left)).ok()?;
            let (n, _) = self.sock.recv_from(&mut buf).ok()?;
            if n < 8 || u16::from_be_bytes([buf[0], buf[1]]) != id {
                continue;
            }
            reply.extend_from_slice(&buf[8..n]);
            if !retrieval || reply.ends_with(b"END\r\n") {
                return Some(reply);
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<Option<String>> {
        let r = self.request(format!("get {key}\r\n").as_bytes(), Duration::from_secs(2))?;
        let s = String::from_utf8_lossy(&r).into_owned();
        if s == "END\r\n" {
            return Some(None);
        }
        let mut lines = s.split("\r\n");
        let head = lines.next()?;
        head.starts_with("VALUE")
            .then(|| Some(lines.next().unwrap_or("").to_string()))
    }

    pub fn set(&self, key: &str, value: &str) -> Option<String> {
        let r = self.request(
            format!("set {key} 0 0 {}\r\n{value}\r\n", value.len()).as_bytes(),
            Duration::from_secs(2),
        )?;
        Some(String::from_utf8_lossy(&r).into_owned())
    }
}

/// Reads every frame of a pcap file.
pub fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let f = std::fs::File::open(path).unwrap();
    let mut r = pcap_file::pcap::PcapReader::new(f).unwrap();
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        out.push(p.unwrap().data.into_owned());
    }
    out
}

/// A real libmemcached client (`tests/c/lm_client.c`, built once per test process with the
/// system's libmemcached), or `None` after reporting the skip (a failure in CI, where
/// `scripts/test.sh` installs libmemcached-dev).
pub fn libmemcached_client() -> Option<&'static Path> {
    use std::sync::OnceLock;
    static EXE: OnceLock<Result<std::path::PathBuf, String>> = OnceLock::new();
    let built = EXE.get_or_init(|| c::build_with_libmemcached("lm_client"));
    match built {
        Ok(exe) => {
            skip::used(
                "libmemcached",
                "tests/c/lm_client.c, a real client over TCP",
            );
            Some(exe.as_path())
        }
        Err(why) => {
            skip::skip("libmemcached", skip::Need::Installed, why);
            None
        }
    }
}

/// Runs the libmemcached client: `op` (`set` or `get`) for each key against `servers` (weight
/// 1 each, in order, as kvlb's `--backend` list); one output line per key.
pub fn libmemcached(exe: &Path, op: &str, servers: &[&Memcached], keys: &[String]) -> Vec<String> {
    let mut child = Command::new(exe)
        .arg(op)
        .args(servers.iter().map(|m| format!("{}:1", m.addr())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running lm_client");
    let input: String = keys.iter().map(|k| format!("{k}\n")).collect();
    // Written from a thread, so a long key list cannot deadlock against a full stdout pipe.
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("lm_client output");
    writer.join().unwrap().expect("lm_client stdin");
    assert!(
        out.status.success(),
        "lm_client {op} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), keys.len(), "lm_client {op}: one line per key");
    lines
}
