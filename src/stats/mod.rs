//! Counters and the periodic report (human lines and JSON lines).
//!
//! Owns: what is counted and how it is printed. Must not: do I/O except through the writer
//! it is handed.
//!
//! The core keeps cumulative [`Stats`] and builds a [`Report`] on demand. A [`Reporter`]
//! turns consecutive reports into per-interval figures (rates, hit ratios, load imbalance
//! over the interval) and writes them as one human line and/or one JSON object per line.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::Serialize;

use crate::nf::DropReason;

/// The core's cumulative counters.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub frames_in: u64,
    /// Frames leaving kvlb (forwarded, replies and emitted).
    pub frames_out: u64,
    /// Client requests by kind.
    pub requests: RequestCounts,
    pub cache: CacheCounters,
    pub cache_state: CacheState,
    /// Replication activity.
    pub replication: ReplicationCounters,
    /// Frames refused, by reason.
    pub drops: BTreeMap<&'static str, u64>,
    /// Frames kvlb consumed on purpose (answered ARP, absorbed replica acknowledgements,
    /// probe answers, split multi-gets), by reason.
    pub consumed: BTreeMap<&'static str, u64>,
    /// Frames passed on unchanged because they are not kvlb's, by reason.
    pub passed: BTreeMap<&'static str, u64>,
}

impl Stats {
    #[inline]
    pub fn count_drop(&mut self, reason: DropReason) {
        let map = if reason.is_consumed() {
            &mut self.consumed
        } else {
            &mut self.drops
        };
        *map.entry(reason.name()).or_insert(0) += 1;
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.values().sum()
    }
}

/// Client requests by kind.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct RequestCounts {
    /// Retrieval requests (get/gets/gat/gats/mg).
    pub reads: u64,
    /// Keys asked for by retrieval requests (a multi-get counts each key).
    pub read_keys: u64,
    /// Storage, delete, arithmetic and touch requests.
    pub writes: u64,
    /// Everything else (version, stats, flush_all, verbosity, no-ops).
    pub other: u64,
}

pub use crate::cache::CacheCounters;

/// What the caches hold right now.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct CacheState {
    /// Hot keys admitted to L1, and those of them holding a value.
    pub l1_keys: u64,
    pub l1_filled: u64,
    pub l2_on: bool,
    pub l2_keys: u64,
    pub l2_bytes: u64,
    /// L1, L2 and write stamps together.
    pub memory_bytes: u64,
}

/// Replication counters.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ReplicationCounters {
    pub keys_turned_hot: u64,
    pub keys_cooled: u64,
    pub fetches: u64,
    pub replica_writes: u64,
    pub replica_acks: u64,
    /// Reads of hot keys served by a replica rather than the primary.
    pub replica_reads: u64,
    /// Reads of cached keys sent to an under-loaded server instead of answered from the
    /// cache (`--cache-policy balance`).
    pub balance_reads: u64,
    pub fenced: u64,
    /// Copies deleted from fallback servers when the key's owner came back.
    pub displaced_cleaned: u64,
    /// Keys written away from a down owner beyond what kvlb remembers.
    pub displaced_overflow: u64,
}

/// One backend in a report.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct BackendReport {
    pub addr: String,
    pub up: bool,
    pub requests: u64,
    pub responses: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub timeouts: u64,
    pub errors: u64,
    pub outstanding: u32,
    /// Latency percentiles (µs) of responses since the previous report.
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
}

/// One hot key in a report.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct HotKeyReport {
    /// The key, lossily decoded as UTF-8.
    pub key: String,
    pub estimate: u64,
    pub max_error: u64,
    pub ready_replicas: u32,
    pub cached: bool,
}

/// A snapshot of everything kvlb reports.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Seconds since the core started (the datapath's clock).
    pub uptime_s: f64,
    #[serde(flatten)]
    pub stats: Stats,
    pub backends: Vec<BackendReport>,
    pub hot_keys: Vec<HotKeyReport>,
    /// Requests tracked in the flow table.
    pub outstanding: u64,
}

/// Per-interval figures derived from two consecutive reports.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Interval {
    pub seconds: f64,
    pub frames_in_per_s: f64,
    pub frames_out_per_s: f64,
    pub requests_per_s: f64,
    /// Share of cacheable GETs answered by L1 / L2 in the interval.
    pub l1_hit_ratio: f64,
    pub l2_hit_ratio: f64,
    /// Requests each backend received in the interval.
    pub backend_requests: Vec<u64>,
    /// max/mean of `backend_requests` over backends that are up (1.0 = perfect balance).
    pub imbalance: f64,
    pub drops: u64,
}

impl Interval {
    /// Figures between `prev` and `cur` (`prev` = `None`: since the start).
    pub fn between(prev: Option<&Report>, cur: &Report) -> Interval {
        let zero = Report::default();
        let p = prev.unwrap_or(&zero);
        let secs = (cur.uptime_s - p.uptime_s).max(1e-9);
        let reqs =
            |r: &Report| r.stats.requests.reads + r.stats.requests.writes + r.stats.requests.other;
        let c = &cur.stats.cache;
        let pc = &p.stats.cache;
        let l1 = c.l1_hits.saturating_sub(pc.l1_hits);
        let l2 = c.l2_hits.saturating_sub(pc.l2_hits);
        let miss = c.misses.saturating_sub(pc.misses);
        let cacheable = (l1 + l2 + miss).max(1) as f64;
        let backend_requests: Vec<u64> = cur
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                b.requests
                    .saturating_sub(p.backends.get(i).map_or(0, |x| x.requests))
            })
            .collect();
        Interval {
            seconds: secs,
            frames_in_per_s: cur.stats.frames_in.saturating_sub(p.stats.frames_in) as f64 / secs,
            frames_out_per_s: cur.stats.frames_out.saturating_sub(p.stats.frames_out) as f64 / secs,
            requests_per_s: reqs(cur).saturating_sub(reqs(p)) as f64 / secs,
            l1_hit_ratio: l1 as f64 / cacheable,
            l2_hit_ratio: l2 as f64 / cacheable,
            imbalance: imbalance(
                backend_requests
                    .iter()
                    .zip(&cur.backends)
                    .filter(|(_, b)| b.up)
                    .map(|(&n, _)| n),
            ),
            backend_requests,
            drops: cur
                .stats
                .total_drops()
                .saturating_sub(p.stats.total_drops()),
        }
    }
}

/// max/mean of a load vector (1.0 when empty or idle).
pub fn imbalance(loads: impl Iterator<Item = u64>) -> f64 {
    let (mut n, mut sum, mut max) = (0u64, 0u64, 0u64);
    for l in loads {
        n += 1;
        sum += l;
        max = max.max(l);
    }
    if n == 0 || sum == 0 {
        return 1.0;
    }
    max as f64 / (sum as f64 / n as f64)
}

/// One JSON line: the cumulative report plus the interval figures.
#[derive(Serialize)]
struct JsonLine<'a> {
    #[serde(flatten)]
    report: &'a Report,
    interval: &'a Interval,
}

/// Writes periodic reports as human lines and/or JSON lines.
#[derive(Debug, Default)]
pub struct Reporter {
    prev: Option<Report>,
}

impl Reporter {
    pub fn new() -> Reporter {
        Reporter::default()
    }

    /// Writes `cur` (and its interval since the previous call) to the given outputs.
    pub fn write(
        &mut self,
        cur: Report,
        human: Option<&mut dyn Write>,
        json: Option<&mut dyn Write>,
    ) -> io::Result<Interval> {
        let iv = Interval::between(self.prev.as_ref(), &cur);
        if let Some(h) = human {
            writeln!(h, "{}", human_line(&cur, &iv))?;
        }
        if let Some(j) = json {
            serde_json::to_writer(
                &mut *j,
                &JsonLine {
                    report: &cur,
                    interval: &iv,
                },
            )?;
            writeln!(j)?;
            j.flush()?;
        }
        self.prev = Some(cur);
        Ok(iv)
    }
}

fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// The one-line human summary of an interval.
pub fn human_line(r: &Report, iv: &Interval) -> String {
    let up = r.backends.iter().filter(|b| b.up).count();
    let p99 = r.backends.iter().map(|b| b.p99_us).max().unwrap_or(0);
    format!(
        "[{:>7.1}s] req {}/s  in {}/s out {}/s  hit L1 {:.1}% L2 {:.1}%{}  hot {}  imbalance {:.2}  up {}/{}  p99 {}us  outstanding {}  drops {}",
        r.uptime_s,
        si(iv.requests_per_s),
        si(iv.frames_in_per_s),
        si(iv.frames_out_per_s),
        iv.l1_hit_ratio * 100.0,
        iv.l2_hit_ratio * 100.0,
        if r.stats.cache_state.l2_on { " (L2 on)" } else { "" },
        r.hot_keys.len(),
        iv.imbalance,
        up,
        r.backends.len(),
        p99,
        r.outstanding,
        iv.drops,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(t: f64, per_backend: &[u64], l1: u64, miss: u64) -> Report {
        let mut r = Report {
            uptime_s: t,
            ..Report::default()
        };
        r.stats.frames_in = per_backend.iter().sum::<u64>() + l1;
        r.stats.requests.reads = r.stats.frames_in;
        r.stats.cache.l1_hits = l1;
        r.stats.cache.misses = miss;
        r.backends = per_backend
            .iter()
            .map(|&n| BackendReport {
                addr: "x".into(),
                up: true,
                requests: n,
                ..BackendReport::default()
            })
            .collect();
        r
    }

    #[test]
    fn interval_rates_and_imbalance() {
        let a = report(1.0, &[100, 100], 0, 200);
        let b = report(3.0, &[300, 500], 200, 800);
        let iv = Interval::between(Some(&a), &b);
        assert_eq!(iv.backend_requests, vec![200, 400]);
        assert!((iv.imbalance - 400.0 / 300.0).abs() < 1e-9);
        assert!((iv.requests_per_s - 400.0).abs() < 1e-9);
        assert!((iv.l1_hit_ratio - 0.25).abs() < 1e-9);
        assert_eq!(imbalance([].into_iter()), 1.0);
        assert_eq!(imbalance([5, 5, 5].into_iter()), 1.0);
    }

    #[test]
    fn reporter_writes_human_and_json_lines() {
        let mut rep = Reporter::new();
        let mut h = Vec::new();
        let mut j = Vec::new();
        let mut r = report(1.0, &[10, 30], 5, 35);
        r.stats.drops.insert("truncated", 2);
        rep.write(r, Some(&mut h), Some(&mut j)).unwrap();
        let line = String::from_utf8(h).unwrap();
        assert!(line.contains("imbalance 1.50"), "{line}");
        let v: serde_json::Value = serde_json::from_slice(&j).unwrap();
        assert_eq!(v["frames_in"], 45);
        assert_eq!(v["drops"]["truncated"], 2);
        assert_eq!(v["interval"]["backend_requests"][1], 30);
        assert_eq!(v["backends"][0]["up"], true);
    }
}
