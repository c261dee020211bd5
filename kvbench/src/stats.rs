//! Reading a memcached server's own `stats`: the counters a benchmark should be judged by
//! (what the server says it served, not what a load generator claims it sent).
//!
//! [`fetch_stats`] works over TCP or UDP (where the reply spans several datagrams and is
//! reassembled with [`kvlb::proto::Reassembler`]); [`StatsDelta`] is the difference of two
//! readings for the cumulative counters. `kvbench --stats-of HOST:PORT [--json]` prints one
//! reading; `kvbench --server-stats` / `--stats-server` difference readings around a run.
//!
//! Owns: the stats exchange. Must not: interpret counters beyond the difference.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use super::config::Transport;
use kvlb::proto::{self, Progress, Reassembler, Request, Response};
use kvlb::wire::McHeader;

/// Why a server's stats could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("talking to {addr}: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("no complete stats reply from {0} in time")]
    Timeout(SocketAddr),
    #[error("bad stats reply from {addr}: {error}")]
    Protocol {
        addr: SocketAddr,
        error: proto::Error,
    },
    #[error("{addr} answered stats with {what}")]
    Refused { addr: SocketAddr, what: String },
}

/// One reading of a server's `stats`: every `STAT name value` line.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ServerStats {
    pub fields: BTreeMap<String, String>,
}

/// The cumulative counters whose differences a benchmark reports.
pub const COUNTERS: &[&str] = &[
    "cmd_get",
    "get_hits",
    "get_misses",
    "get_expired",
    "cmd_set",
    "cmd_touch",
    "delete_hits",
    "delete_misses",
    "bytes_read",
    "bytes_written",
    "total_connections",
    "evictions",
];

impl ServerStats {
    /// A field as an integer.
    pub fn counter(&self, name: &str) -> Option<u64> {
        self.fields.get(name)?.parse().ok()
    }

    /// A field as a float (`rusage_user`, `rusage_system`).
    pub fn float(&self, name: &str) -> Option<f64> {
        self.fields.get(name)?.parse().ok()
    }

    pub fn cmd_get(&self) -> u64 {
        self.counter("cmd_get").unwrap_or(0)
    }
    pub fn get_hits(&self) -> u64 {
        self.counter("get_hits").unwrap_or(0)
    }
    pub fn cmd_set(&self) -> u64 {
        self.counter("cmd_set").unwrap_or(0)
    }

    /// The counters as numbers: [`COUNTERS`] plus CPU seconds.
    pub fn counters(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        for &c in COUNTERS {
            if let Some(v) = self.counter(c) {
                m.insert(c.to_owned(), v as f64);
            }
        }
        for c in ["rusage_user", "rusage_system"] {
            if let Some(v) = self.float(c) {
                m.insert(c.to_owned(), v);
            }
        }
        m
    }
}

/// What a server counted between two readings.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct StatsDelta {
    pub server: String,
    pub cmd_get: u64,
    pub get_hits: u64,
    pub get_misses: u64,
    pub cmd_set: u64,
    /// Server CPU seconds (user + system).
    pub cpu_seconds: f64,
    /// Every counter of [`COUNTERS`] (and rusage) present in both readings.
    pub counters: BTreeMap<String, f64>,
}

impl StatsDelta {
    pub fn between(server: &str, before: &ServerStats, after: &ServerStats) -> StatsDelta {
        let b = before.counters();
        let a = after.counters();
        let counters: BTreeMap<String, f64> = a
            .iter()
            .filter_map(|(k, va)| b.get(k).map(|vb| (k.clone(), va - vb)))
            .collect();
        let int = |k: &str| counters.get(k).map_or(0, |&v| v.max(0.0) as u64);
        let cpu = counters.get("rusage_user").copied().unwrap_or(0.0)
            + counters.get("rusage_system").copied().unwrap_or(0.0);
        StatsDelta {
            server: server.to_owned(),
            cmd_get: int("cmd_get"),
            get_hits: int("get_hits"),
            get_misses: int("get_misses"),
            cmd_set: int("cmd_set"),
            cpu_seconds: cpu,
            counters,
        }
    }
}

/// Reads `addr`'s `stats` over `transport`, waiting at most `timeout`.
pub fn fetch_stats(
    addr: SocketAddr,
    transport: Transport,
    timeout: Duration,
) -> Result<ServerStats, StatsError> {
    let io = |source| StatsError::Io { addr, source };
    let mut request = Vec::with_capacity(16);
    match transport {
        Transport::Tcp => {
            let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
            s.set_nodelay(true).map_err(io)?;
            Request::Stats { args: b"" }.emit_to(&mut request);
            s.write_all(&request).map_err(io)?;
            let deadline = Instant::now() + timeout;
            let mut buf = Vec::with_capacity(8192);
            let mut chunk = [0u8; 8192];
            loop {
                if let Some(stats) = parse_reply(addr, &buf)? {
                    return Ok(stats);
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(StatsError::Timeout(addr));
                }
                s.set_read_timeout(Some(left)).map_err(io)?;
                match s.read(&mut chunk) {
                    Ok(0) => return Err(StatsError::Timeout(addr)),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if is_timeout(&e) => return Err(StatsError::Timeout(addr)),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(io(e)),
                }
            }
        }
        Transport::Udp => {
            let bind: SocketAddr = if addr.is_ipv4() {
                "0.0.0.0:0".parse().unwrap_or(addr)
            } else {
                "[::]:0".parse().unwrap_or(addr)
            };
            let s = UdpSocket::bind(bind).map_err(io)?;
            s.connect(addr).map_err(io)?;
            let request_id = (std::process::id() as u16) ^ 0x5a5a;
            request.extend_from_slice(&McHeader::single(request_id).to_bytes());
            Request::Stats { args: b"" }.emit_to(&mut request);
            s.send(&request).map_err(io)?;
            let deadline = Instant::now() + timeout;
            let mut reassembler = Reassembler::new(1 << 20);
            let mut buf = vec![0u8; 65536];
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(StatsError::Timeout(addr));
                }
                s.set_read_timeout(Some(left)).map_err(io)?;
                let n = match s.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) if is_timeout(&e) => return Err(StatsError::Timeout(addr)),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(io(e)),
                };
                let Ok(header) = McHeader::parse(&buf[..n]) else {
                    continue;
                };
                if header.request_id != request_id {
                    continue;
                }
                match reassembler.push(header, &buf[8..n]) {
                    Ok(Progress::Complete) => {
                        return parse_reply(addr, reassembler.message())?
                            .ok_or(StatsError::Timeout(addr));
                    }
                    Ok(Progress::Incomplete) => {}
                    Err(error) => return Err(StatsError::Protocol { addr, error }),
                }
            }
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// The stats in `msg` if it holds the whole reply (through `END`).
fn parse_reply(addr: SocketAddr, msg: &[u8]) -> Result<Option<ServerStats>, StatsError> {
    let mut stats = ServerStats::default();
    let mut rest = msg;
    loop {
        match Response::parse(rest) {
            Ok((Response::Stat { name, value }, after)) => {
                stats.fields.insert(
                    String::from_utf8_lossy(name).into_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                );
                rest = after;
            }
            Ok((Response::End, _)) => return Ok(Some(stats)),
            Ok((other, _)) => {
                let mut what = Vec::new();
                other.emit_to(&mut what);
                return Err(StatsError::Refused {
                    addr,
                    what: String::from_utf8_lossy(&what).trim_end().to_owned(),
                });
            }
            Err(proto::Error::TruncatedResponse) => return Ok(None),
            Err(error) => return Err(StatsError::Protocol { addr, error }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_delta() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let msg = b"STAT pid 12\r\nSTAT cmd_get 10\r\nSTAT get_hits 7\r\nSTAT rusage_user 1.500000\r\nSTAT version 1.6.18\r\nEND\r\n";
        let before = parse_reply(a, msg).unwrap().unwrap();
        assert_eq!(before.cmd_get(), 10);
        assert_eq!(before.fields["version"], "1.6.18");
        assert_eq!(parse_reply(a, &msg[..30]).unwrap(), None);
        assert!(matches!(
            parse_reply(a, b"ERROR\r\n"),
            Err(StatsError::Refused { .. })
        ));
        let msg2 = b"STAT cmd_get 25\r\nSTAT get_hits 9\r\nSTAT rusage_user 2.0\r\nSTAT rusage_system 0.25\r\nEND\r\n";
        let after = parse_reply(a, msg2).unwrap().unwrap();
        let d = StatsDelta::between("x", &before, &after);
        assert_eq!((d.cmd_get, d.get_hits, d.cmd_set), (15, 2, 0));
        // rusage_system is missing from the first reading: left out.
        assert!((d.cpu_seconds - 0.5).abs() < 1e-9);
        assert!(!d.counters.contains_key("rusage_system"));
    }
}
