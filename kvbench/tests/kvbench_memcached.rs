//! kvbench, the binary, against real memcached servers on loopback: UDP and TCP, closed
//! and open loop, classic and meta commands, one and two servers; the JSON summary's fields
//! and the servers' own `stats` counting what kvbench says it sent; the validator flagging
//! stale and corrupt values written behind kvbench's back.
//!
//! Needs `memcached` on PATH (Debian: `apt-get install memcached`); each test starts its
//! own servers on free ports and kills them by PID when it ends.

#[path = "../../tests/skip/mod.rs"]
mod skip;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

const KVBENCH: &str = env!("CARGO_BIN_EXE_kvbench");

/// A memcached process, killed (by PID) on drop.
struct Memcached {
    child: Child,
    port: u16,
}

impl Memcached {
    fn start() -> Memcached {
        for _ in 0..20 {
            if let Some(m) = Memcached::start_on(free_port()) {
                return m;
            }
        }
        panic!("could not start memcached");
    }

    /// memcached on `port`, or `None` if it does not come up.
    fn start_on(port: u16) -> Option<Memcached> {
        {
            let child = Command::new("memcached")
                .args(["-l", "127.0.0.1", "-t", "2", "-m", "64", "-u", "nobody"])
                .args(["-p", &port.to_string(), "-U", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("memcached on PATH (apt-get install memcached)");
            let mut m = Memcached { child, port };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = m.child.try_wait() {
                    break; // port taken meanwhile
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    skip::used("memcached", &format!("127.0.0.1:{port}"));
                    return Some(m);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        None
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Sends raw text over TCP and returns the reply up to `until`.
    fn tcp(&self, request: &[u8], until: &[u8]) -> Vec<u8> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(request).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !out.ends_with(until) {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "connection closed");
            out.extend_from_slice(&buf[..n]);
        }
        out
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free for both TCP and UDP right now.
fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn kvbench(args: &[&str]) -> Output {
    Command::new(KVBENCH)
        .args(args)
        .output()
        .expect("run kvbench")
}

/// Runs kvbench with the arguments in `line` (split on whitespace) plus `--json --quiet`,
/// and returns the summary.
fn summary(line: &str) -> Value {
    let mut all: Vec<&str> = vec!["--json", "--quiet"];
    all.extend(line.split_whitespace());
    let out = kvbench(&all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kvbench {all:?} failed ({}): {stderr}",
        out.status
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "kvbench printed no JSON ({e}): {}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn u(v: &Value, path: &str) -> u64 {
    let mut cur = v;
    for p in path.split('.') {
        cur = match p.parse::<usize>() {
            Ok(i) => &cur[i],
            Err(_) => &cur[p],
        };
    }
    cur.as_u64()
        .or_else(|| cur.as_f64().map(|f| f as u64))
        .unwrap_or_else(|| panic!("{path} missing in {v:#}"))
}

fn f(v: &Value, path: &str) -> f64 {
    let mut cur = v;
    for p in path.split('.') {
        cur = &cur[p];
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("{path} missing in {v:#}"))
}

/// The fields scripts rely on, and a sane latency distribution.
fn check_common(s: &Value) {
    assert!(f(s, "ops_per_sec") > 0.0, "{s:#}");
    assert_eq!(u(s, "errors"), 0, "{s:#}");
    let p50 = f(s, "latency_us.p50");
    let p99 = f(s, "latency_us.p99");
    let p999 = f(s, "latency_us.p999");
    assert!(0.0 < p50 && p50 <= p99 && p99 <= p999, "{s:#}");
    assert_eq!(u(s, "validation.stale"), 0, "{s:#}");
    assert_eq!(u(s, "validation.corrupt"), 0, "{s:#}");
}

/// The server counted exactly what kvbench says it sent and got (no timeouts allowed
/// for an exact match).
fn check_server_counted(s: &Value) {
    assert_eq!(u(s, "timeouts"), 0, "{s:#}");
    assert_eq!(u(s, "unfinished"), 0, "{s:#}");
    let stats = &s["server_stats"];
    let cmd_get: u64 = stats
        .as_array()
        .unwrap()
        .iter()
        .map(|d| u(d, "cmd_get"))
        .sum();
    let get_hits: u64 = stats
        .as_array()
        .unwrap()
        .iter()
        .map(|d| u(d, "get_hits"))
        .sum();
    let cmd_set: u64 = stats
        .as_array()
        .unwrap()
        .iter()
        .map(|d| u(d, "cmd_set"))
        .sum();
    assert_eq!(cmd_get, u(s, "get_keys"), "{s:#}");
    assert_eq!(get_hits, u(s, "hits"), "{s:#}");
    let loaded = s["load"]["stored"].as_u64().unwrap_or(0);
    assert_eq!(cmd_set, u(s, "sets") + loaded, "{s:#}");
}

#[test]
fn udp_closed_loop_counts_match_the_server() {
    let m = Memcached::start();
    let s = summary(&format!(
        "--server {} --proto udp --udp-sockets connection --threads 2 --connections 2 \
         --depth 2 --keys 500 --load --duration 2 --server-stats",
        m.addr()
    ));
    check_common(&s);
    check_server_counted(&s);
    assert_eq!(u(&s, "load.stored"), 500);
    // Everything was loaded: every get hits.
    assert_eq!(u(&s, "misses"), 0, "{s:#}");
    assert!(u(&s, "validation.fresh") > 0);
    assert_eq!(s["config"]["proto"], "udp");
}

#[test]
fn tcp_closed_loop_pipelined_multiget() {
    let m = Memcached::start();
    let s = summary(&format!(
        "--server {} --proto tcp --connections 3 --depth 8 --multiget 4 --keys 2000 --dist \
         zipf:0.99 --get-ratio 0.8 --value-size uniform:32,20000 --duration 2 --server-stats",
        m.addr()
    ));
    check_common(&s);
    check_server_counted(&s);
    // SETs drawn while the key's previous SET was in flight go out as single-key GETs.
    let collisions = u(&s, "validation.set_collisions");
    assert_eq!(
        u(&s, "get_keys"),
        4 * (u(&s, "gets") - collisions) + collisions,
        "{s:#}"
    );
    assert!(u(&s, "hits") > 0);
}

#[test]
fn udp_open_loop_keeps_the_rate() {
    let m = Memcached::start();
    let s = summary(&format!(
        "--server {} --proto udp --rate 3000 --arrival constant --connections 3 --keys 1000 \
         --duration 2 --server-stats",
        m.addr()
    ));
    check_common(&s);
    check_server_counted(&s);
    let requests = u(&s, "requests") as f64;
    assert!((5400.0..=6600.0).contains(&requests), "{s:#}");
    assert_eq!(f(&s, "schedule.target_rate"), 3000.0);
    assert!(s["schedule"]["late_sends"].is_u64());
}

#[test]
fn tcp_open_loop_meta_commands() {
    let m = Memcached::start();
    let s = summary(&format!(
        "--server {} --proto tcp --meta --multiget 3 --rate 2000 --keys 300 --load --duration \
         2 --server-stats",
        m.addr()
    ));
    check_common(&s);
    check_server_counted(&s);
    assert_eq!(u(&s, "misses"), 0, "{s:#}");
    assert!(u(&s, "validation.fresh") > 0);
}

#[test]
fn udp_meta_and_requests_budget() {
    let m = Memcached::start();
    let s = summary(&format!(
        "--server {} --proto udp --meta --requests 5000 --keys 100 --get-ratio 0.5 \
         --server-stats",
        m.addr()
    ));
    check_common(&s);
    check_server_counted(&s);
    assert_eq!(u(&s, "requests"), 5000);
}

/// Connections of a thread sharing one UDP socket (batched sends and receives).
#[test]
fn udp_shared_socket_batches() {
    let m = Memcached::start();
    let s = summary(&format!(
        "--server {} --proto udp --udp-sockets thread --threads 2 --connections 4 --depth 4 \
         --requests 20000 --keys 1000 --load --server-stats",
        m.addr()
    ));
    check_common(&s);
    check_server_counted(&s);
    assert_eq!(u(&s, "requests"), 20000);
    assert_eq!(u(&s, "misses"), 0, "{s:#}");
}

/// Values bigger than a datagram: written over TCP, read over UDP as multi-datagram
/// messages, one per key of a multi-get, reassembled and checksummed.
#[test]
fn udp_reassembles_multi_datagram_replies() {
    let m = Memcached::start();
    let addr = m.addr();
    let load = summary(&format!(
        "--server {} --proto tcp --keys 50 --load --value-size 5000 --requests 1 --get-ratio 1",
        addr
    ));
    assert_eq!(u(&load, "load.stored"), 50);
    let s = summary(&format!(
        "--server {} --proto udp --keys 50 --get-ratio 1 --multiget 5 --duration 1 --server-stats",
        addr
    ));
    check_common(&s);
    check_server_counted(&s);
    assert_eq!(u(&s, "misses"), 0, "{s:#}");
    // Another run's values: checked (checksums hold) and counted as foreign.
    assert_eq!(u(&s, "validation.foreign"), u(&s, "hits"));
}

#[test]
fn two_servers_by_ketama() {
    let a = Memcached::start();
    let b = Memcached::start();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("servers.csv");
    let s = summary(&format!(
        "--server {} --server {} --proto udp --connections 2 --multiget 3 --keys 1000 --load \
         --dist zipf:1.2 --shift-at 1 --duration 2 --server-stats --stats-csv {}",
        a.addr(),
        b.addr(),
        csv.display()
    ));
    check_common(&s);
    check_server_counted(&s);
    // Each server's own counts, second by second.
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("second,server,cmd_get,get_hits,get_misses,cmd_set")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert!(rows.len() >= 2, "{text}");
    for m in [&a, &b] {
        assert!(rows.iter().any(|r| r[1] == m.addr()), "{text}");
    }
    let gets: u64 = rows.iter().map(|r| r[2].parse::<u64>().unwrap()).sum();
    assert!(gets > 0, "{text}");
    let per = s["per_server"].as_array().unwrap();
    let stats = s["server_stats"].as_array().unwrap();
    assert_eq!(per.len(), 2);
    for (p, st) in per.iter().zip(stats) {
        assert!(u(p, "completed") > 0, "{s:#}");
        assert_eq!(p["server"], st["server"]);
    }
}

#[test]
fn stats_of_prints_the_servers_counters() {
    let m = Memcached::start();
    m.tcp(b"get a b c\r\n", b"END\r\n");
    for proto in ["tcp", "udp"] {
        let out = kvbench(&["--stats-of", &m.addr(), "--stats-proto", proto, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["server"], m.addr());
        let cmd_get: u64 = v["stats"]["cmd_get"].as_str().unwrap().parse().unwrap();
        assert!(cmd_get >= 3, "{v:#}");
    }
    let out = kvbench(&["--stats-of", &m.addr()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\ncmd_get "));
}

/// Old versions and damaged values written directly to memcached while kvbench runs are
/// reported as stale and corrupt, and kvbench exits with status 3.
#[test]
fn validator_flags_stale_and_corrupt_values() {
    use kvbench::value::{encode, Stamp};
    let m = Memcached::start();
    let run_id = 0x0000_beefu32;
    let keys = ["kvb:000000000000", "kvb:000000000001", "kvb:000000000002"];
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let port = m.port;
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let mut buf = [0u8; 4096];
            let mut old = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = keys[(n % 3) as usize];
                // Version 1 of this run: stale once kvbench has a later SET acknowledged.
                encode(&mut old, key.as_bytes(), Stamp { run_id, version: 1 }, 64);
                if n % 2 == 1 {
                    // Same header, damaged body: corrupt.
                    old[40] ^= 1;
                }
                let mut req = format!("set {key} 0 0 {}\r\n", old.len()).into_bytes();
                req.extend_from_slice(&old);
                req.extend_from_slice(b"\r\n");
                s.write_all(&req).unwrap();
                let mut got = Vec::new();
                while !got.ends_with(b"\r\n") {
                    let r = s.read(&mut buf).unwrap();
                    assert!(r > 0);
                    got.extend_from_slice(&buf[..r]);
                }
                n += 1;
                std::thread::sleep(Duration::from_micros(300));
            }
        })
    };
    let out = kvbench(&[
        "--server",
        &m.addr(),
        "--proto",
        "udp",
        "--keys",
        "3",
        "--get-ratio",
        "0.7",
        "--run-id",
        "beef",
        "--duration",
        "2",
        "--json",
        "--quiet",
    ]);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(u(&s, "validation.stale") > 0, "{s:#}");
    assert!(u(&s, "validation.corrupt") > 0, "{s:#}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("stale"));
}

#[test]
fn help_documents_the_interface() {
    let out = kvbench(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--server",
        "--proto",
        "--threads",
        "--connections",
        "--get-ratio",
        "--keys",
        "--duration",
        "--rate",
        "--dist",
        "--json",
        "--stats-of",
        "--shift-at",
        "--load",
        "--max-udp-value",
        "--hdr",
        "--csv",
    ] {
        assert!(help.contains(opt), "{opt}");
    }
    let bad = kvbench(&["--server", "x:1", "--get-ratio", "2"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn csv_and_hdr_files() {
    let m = Memcached::start();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("series.csv");
    let hgrm = dir.path().join("lat.hgrm");
    let s = summary(&format!(
        "--server {} --duration 2 --keys 100 --csv {} --hdr {}",
        m.addr(),
        csv.to_str().unwrap(),
        hgrm.to_str().unwrap()
    ));
    check_common(&s);
    let series = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = series.lines().collect();
    assert!(lines[0].starts_with("second,warmup,ops_per_sec"));
    assert_eq!(lines.len(), 3, "{series}");
    let h = std::fs::read_to_string(&hgrm).unwrap();
    assert!(h.contains("Percentile") && h.contains("#[Max"), "{h}");
}

/// The server goes away for a second in the middle of a run: over TCP kvbench counts the
/// failures, reconnects and goes on; over UDP the lost requests are timeouts.
#[test]
fn server_restart_mid_run() {
    for proto in ["tcp", "udp"] {
        let m = Memcached::start();
        let port = m.port;
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("series.csv");
        let child = Command::new(KVBENCH)
            .args(["--json", "--quiet", "--server", &m.addr(), "--proto", proto])
            .args([
                "--keys",
                "100",
                "--duration",
                "5",
                "--timeout",
                "200",
                "--csv",
            ])
            .arg(&csv)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        drop(m);
        std::thread::sleep(Duration::from_millis(1000));
        let _m = Memcached::start_on(port).expect("memcached back on its port");
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{proto}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s: Value = serde_json::from_slice(&out.stdout).unwrap();
        if proto == "tcp" {
            assert!(u(&s, "error_detail.reconnects") >= 1, "{s:#}");
            assert!(u(&s, "errors") >= 1, "{s:#}");
        } else {
            assert!(u(&s, "timeouts") >= 1, "{s:#}");
        }
        // Requests flowed again after the restart.
        let series = std::fs::read_to_string(&csv).unwrap();
        let last: Vec<&str> = series.lines().last().unwrap().split(',').collect();
        assert!(last[2].parse::<u64>().unwrap() > 0, "{proto}: {series}");
    }
}
