//! Counters and the periodic report (human and JSON lines).
//!
//! Owns: what is counted and how it is printed, and the reasons frames are counted under
//! ([`DropReason`], [`PassReason`]). Must not: do I/O except through the writer it is
//! handed.
//!
//! The core keeps cumulative [`Stats`] and builds a [`Report`] on demand. A [`Reporter`]
//! turns consecutive reports into per-interval figures (rates, hit ratios, load imbalance
//! over the interval) and writes them as one human line and/or one JSON object per line.
//!
//! Frames are counted by reason in fixed arrays ([`ReasonCounts`]) indexed by the reason's
//! dense index: counting is one add, with no hashing and no allocation. Reports show only
//! the reasons counted at least once, ordered by name.

use std::fmt;
use std::io::{self, Write};
use std::marker::PhantomData;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::{proto, wire};

/// Why the core did not forward a frame. Every one is counted under [`DropReason::name`].
/// Some are not errors: a replica's acknowledgement is absorbed, an ARP request answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// The frame failed validation.
    Wire(wire::Error),
    /// The memcached request or response failed validation.
    Proto(proto::Error),
    /// The datapath caught a panic while the core handled this frame.
    Panic,
    /// Neither to the VIP nor an answer to kvlb, with `--other-traffic drop`.
    NotForUs,
    /// A source outside `--allow`.
    AclDenied,
    /// A source over `--rate-limit`.
    RateLimited,
    /// No backend is up.
    NoBackend,
    /// The backend's MAC is not resolved yet (an ARP request went out).
    NoNeighbor,
    /// The flow table is full.
    FlowTableFull,
    /// A response that matches no outstanding request (late, duplicate or spoofed).
    UnmatchedResponse,
    /// A response whose token matches an outstanding request but whose shape (or key)
    /// answers another request: a reply so late that its token was reused.
    MismatchedResponse,
    /// A reply datagram beyond the per-request bound for an untrusted source.
    AmplificationGuard,
    /// A backend reply kvlb consumed itself (replica acks, probes, broadcast extras).
    Absorbed,
    /// An ARP frame for kvlb, handled.
    Arp,
    /// `quit` over UDP means nothing.
    Quit,
    /// The frame could not be rewritten (no room to grow, or too short).
    RewriteFailed,
}

/// The reasons of the core's own (neither wire nor proto), in index order after them.
const OWN_DROPS: [DropReason; 14] = [
    DropReason::Panic,
    DropReason::NotForUs,
    DropReason::AclDenied,
    DropReason::RateLimited,
    DropReason::NoBackend,
    DropReason::NoNeighbor,
    DropReason::FlowTableFull,
    DropReason::UnmatchedResponse,
    DropReason::MismatchedResponse,
    DropReason::AmplificationGuard,
    DropReason::Absorbed,
    DropReason::Arp,
    DropReason::Quit,
    DropReason::RewriteFailed,
];

/// `proto::Error` variants with a name of their own (not a wire error's), by index.
const PROTO_OWN: usize = proto::Error::ALL.len() - 1;

impl DropReason {
    /// Whether this is a frame kvlb consumed on purpose (an answered ARP, a replica's
    /// acknowledgement, a split multi-get) rather than one it refused. Consumed frames are
    /// counted apart from drops.
    pub fn is_consumed(self) -> bool {
        matches!(self, DropReason::Absorbed | DropReason::Arp)
    }

    /// Stable name used as the key in stats output.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Wire(e) => e.name(),
            DropReason::Proto(e) => e.name(),
            DropReason::Panic => "panic",
            DropReason::NotForUs => "not_for_us",
            DropReason::AclDenied => "acl_denied",
            DropReason::RateLimited => "rate_limited",
            DropReason::NoBackend => "no_backend",
            DropReason::NoNeighbor => "no_neighbor",
            DropReason::FlowTableFull => "flow_table_full",
            DropReason::UnmatchedResponse => "unmatched_response",
            DropReason::MismatchedResponse => "mismatched_response",
            DropReason::AmplificationGuard => "amplification_guard",
            DropReason::Absorbed => "absorbed",
            DropReason::Arp => "arp",
            DropReason::Quit => "quit",
            DropReason::RewriteFailed => "rewrite_failed",
        }
    }
}

impl Reason for DropReason {
    const COUNT: usize = wire::Error::COUNT + PROTO_OWN + OWN_DROPS.len();

    /// Reasons with the same name share an index (a proto error wrapping a wire error,
    /// and the truncated frame header both layers report), so they are counted together
    /// as they are named together.
    #[inline]
    fn index(self) -> usize {
        const P: usize = wire::Error::COUNT;
        const O: usize = P + PROTO_OWN;
        match self {
            DropReason::Wire(e) | DropReason::Proto(proto::Error::Wire(e)) => e.index(),
            DropReason::Proto(e) => match e {
                proto::Error::Wire(_) | proto::Error::TruncatedFrameHeader => {
                    wire::Error::TruncatedFrameHeader.index()
                }
                proto::Error::SplitRequest => P,
                proto::Error::EmptyRequest => P + 1,
                proto::Error::TruncatedRequest => P + 2,
                proto::Error::Garbage => P + 3,
                proto::Error::UnknownCommand => P + 4,
                proto::Error::BadFormat => P + 5,
                proto::Error::KeyTooLong => P + 6,
                proto::Error::IllegalKey => P + 7,
                proto::Error::BadNumber => P + 8,
                proto::Error::BadDataLength => P + 9,
                proto::Error::TrailingData => P + 10,
                proto::Error::BadBinary => P + 11,
                proto::Error::BadResponse => P + 12,
                proto::Error::TruncatedResponse => P + 13,
                proto::Error::BadSequence => P + 14,
                proto::Error::RequestIdMismatch => P + 15,
                proto::Error::ResponseTooLarge => P + 16,
                proto::Error::NoRoom => P + 17,
                proto::Error::ReplyTooLarge => P + 18,
            },
            DropReason::Panic => O,
            DropReason::NotForUs => O + 1,
            DropReason::AclDenied => O + 2,
            DropReason::RateLimited => O + 3,
            DropReason::NoBackend => O + 4,
            DropReason::NoNeighbor => O + 5,
            DropReason::FlowTableFull => O + 6,
            DropReason::UnmatchedResponse => O + 7,
            DropReason::MismatchedResponse => O + 8,
            DropReason::AmplificationGuard => O + 9,
            DropReason::Absorbed => O + 10,
            DropReason::Arp => O + 11,
            DropReason::Quit => O + 12,
            DropReason::RewriteFailed => O + 13,
        }
    }

    fn name_at(index: usize) -> &'static str {
        let p = wire::Error::COUNT;
        if index < p {
            wire::Error::ALL[index].name()
        } else if index < p + PROTO_OWN {
            // ALL[0] is the truncated frame header, counted with the wire error.
            proto::Error::ALL[index - p + 1].name()
        } else {
            OWN_DROPS[index - p - PROTO_OWN].name()
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why the core passed a frame on unchanged (`--other-traffic pass`): it is not kvlb's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PassReason {
    /// UDP to neither the VIP nor one of kvlb's source ports.
    UdpNotForUs,
    /// IPv4 that is not UDP.
    NotUdp,
    /// Neither IPv4 nor ARP.
    NotIpv4,
    /// ARP that neither asks for nor announces one of kvlb's addresses.
    ArpNotForUs,
}

impl PassReason {
    const ALL: [PassReason; 4] = [
        PassReason::UdpNotForUs,
        PassReason::NotUdp,
        PassReason::NotIpv4,
        PassReason::ArpNotForUs,
    ];

    /// Stable name used as the key in stats output.
    pub fn name(self) -> &'static str {
        match self {
            PassReason::UdpNotForUs => "udp_not_for_us",
            PassReason::NotUdp => "not_udp",
            PassReason::NotIpv4 => "not_ipv4",
            PassReason::ArpNotForUs => "arp_not_for_us",
        }
    }
}

impl Reason for PassReason {
    const COUNT: usize = PassReason::ALL.len();

    #[inline]
    fn index(self) -> usize {
        self as usize
    }

    fn name_at(index: usize) -> &'static str {
        PassReason::ALL[index].name()
    }
}

impl fmt::Display for PassReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Something frames are counted by: a dense index below `COUNT` per distinct name.
pub trait Reason: Copy {
    /// How many indices there are.
    const COUNT: usize;
    /// The reason's index, below [`Reason::COUNT`]; reasons with one name share one.
    fn index(self) -> usize;
    /// The name counted at `index`.
    fn name_at(index: usize) -> &'static str;
}

/// Counts by reason: one slot per reason index. Reads as a map from name to count that
/// holds only the reasons counted at least once (what stats output shows), in name order.
#[derive(Clone, PartialEq, Eq)]
pub struct ReasonCounts<R, const N: usize> {
    counts: [u64; N],
    reason: PhantomData<R>,
}

/// Frames refused or consumed, by [`DropReason`].
pub type DropCounts = ReasonCounts<DropReason, { DropReason::COUNT }>;
/// Frames passed on, by [`PassReason`].
pub type PassCounts = ReasonCounts<PassReason, { PassReason::COUNT }>;

impl<R: Reason, const N: usize> Default for ReasonCounts<R, N> {
    fn default() -> Self {
        ReasonCounts {
            counts: [0; N],
            reason: PhantomData,
        }
    }
}

impl<R: Reason, const N: usize> ReasonCounts<R, N> {
    /// Counts one frame for `reason`.
    #[inline]
    pub fn count(&mut self, reason: R) {
        self.add(reason, 1);
    }

    /// Counts `n` frames for `reason`.
    #[inline]
    pub fn add(&mut self, reason: R, n: u64) {
        self.counts[reason.index()] += n;
    }

    /// The count of `reason`.
    #[inline]
    pub fn of(&self, reason: R) -> u64 {
        self.counts[reason.index()]
    }

    /// The count under `name`, if it was counted at all.
    pub fn get(&self, name: &str) -> Option<&u64> {
        (0..N)
            .find(|&i| R::name_at(i) == name)
            .map(|i| &self.counts[i])
            .filter(|&&n| n > 0)
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|&n| n == 0)
    }

    /// Every count together.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// (name, count) of every reason counted at least once, in name order.
    pub fn iter(&self) -> std::vec::IntoIter<(&'static str, u64)> {
        let mut v: Vec<(&'static str, u64)> = (0..N)
            .filter(|&i| self.counts[i] > 0)
            .map(|i| (R::name_at(i), self.counts[i]))
            .collect();
        v.sort_unstable_by_key(|&(name, _)| name);
        v.into_iter()
    }

    /// The counts of [`iter`](Self::iter).
    pub fn values(&self) -> impl Iterator<Item = u64> {
        self.iter().map(|(_, n)| n)
    }
}

impl<R: Reason, const N: usize> IntoIterator for &ReasonCounts<R, N> {
    type Item = (&'static str, u64);
    type IntoIter = std::vec::IntoIter<(&'static str, u64)>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// `counts["name"]`: the count under a name counted at least once (panics otherwise, as a
/// map does for a missing key).
impl<R: Reason, const N: usize> std::ops::Index<&str> for ReasonCounts<R, N> {
    type Output = u64;
    fn index(&self, name: &str) -> &u64 {
        self.get(name)
            .unwrap_or_else(|| panic!("nothing counted under {name:?}"))
    }
}

impl<R: Reason, const N: usize> fmt::Debug for ReasonCounts<R, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// A JSON object of the reasons counted at least once, in name order.
impl<R: Reason, const N: usize> Serialize for ReasonCounts<R, N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let entries = self.iter();
        let mut map = s.serialize_map(Some(entries.len()))?;
        for (name, n) in entries {
            map.serialize_entry(name, &n)?;
        }
        map.end()
    }
}

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
    pub drops: DropCounts,
    /// Frames kvlb consumed on purpose (answered ARP, absorbed replica acknowledgements,
    /// probe answers, split multi-gets), by reason.
    pub consumed: DropCounts,
    /// Frames passed on unchanged because they are not kvlb's, by reason.
    pub passed: PassCounts,
}

impl Stats {
    #[inline]
    pub fn count_drop(&mut self, reason: DropReason) {
        if reason.is_consumed() {
            self.consumed.count(reason);
        } else {
            self.drops.count(reason);
        }
    }

    #[inline]
    pub fn count_pass(&mut self, reason: PassReason) {
        self.passed.count(reason);
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.total()
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
    /// Fetches whose value was dropped: a write to the key was sent or ended meanwhile.
    pub stale_fetches: u64,
    /// Copies of cooled keys deleted from their replicas (a request timeout after cooling).
    pub cleanup_deletes: u64,
    /// Clean-ups of a cooled key's copy sent again (the delete was lost, or a copy from
    /// the hot period landed after it).
    pub cleanup_retries: u64,
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
    /// The TCP front end's counters (`kvlb serve` with TCP on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpCounters>,
}

/// What the TCP front end of `kvlb serve` counted (`datapath::tcp`).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct TcpCounters {
    /// Client connections open now.
    pub open: u64,
    pub accepted: u64,
    /// Connections refused: over `--max-conns`, or outside `--allow`.
    pub refused: u64,
    pub closed: u64,
    pub idle_closed: u64,
    pub requests: u64,
    /// Requests answered with memcached's error line without reaching the core.
    pub malformed: u64,
    /// Requests or replies too large for one frame, streamed around the core.
    pub large_requests: u64,
    pub large_replies: u64,
    /// Requests answered `SERVER_ERROR` by kvlb (backend connection lost, late reply, no
    /// backend, slot deadline).
    pub server_errors: u64,
    pub late_replies: u64,
    pub slot_timeouts: u64,
    /// Times a client was left unread because of its outstanding requests or unsent replies.
    pub backpressure: u64,
    pub backend_connects: u64,
    pub backend_failures: u64,
    /// Core replies for a slot that no longer waits (its connection closed, a deadline).
    pub orphan_replies: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
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
        "[{:>7.1}s] req {}/s  in {}/s out {}/s  hit L1 {:.1}% L2 {:.1}%{}  hot {}  imbalance {:.2}  up {}/{}  p99 {}us  outstanding {}  drops {}{}",
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
        match &r.tcp {
            Some(t) => format!("  tcp {} conns", t.open),
            None => String::new(),
        },
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
        r.stats
            .drops
            .add(DropReason::Wire(wire::Error::Truncated), 2);
        rep.write(r, Some(&mut h), Some(&mut j)).unwrap();
        let line = String::from_utf8(h).unwrap();
        assert!(line.contains("imbalance 1.50"), "{line}");
        let v: serde_json::Value = serde_json::from_slice(&j).unwrap();
        assert_eq!(v["frames_in"], 45);
        assert_eq!(v["drops"]["truncated"], 2);
        assert_eq!(v["interval"]["backend_requests"][1], 30);
        assert_eq!(v["backends"][0]["up"], true);
    }

    /// Every index has one name and every name one index; the wrapped forms of a reason
    /// count where its plain form does.
    #[test]
    fn reason_indices_are_dense_and_named_once() {
        let mut reasons: Vec<DropReason> = OWN_DROPS.to_vec();
        reasons.extend(wire::Error::ALL.iter().map(|&e| DropReason::Wire(e)));
        reasons.extend(
            wire::Error::ALL
                .iter()
                .map(|&e| DropReason::Proto(e.into())),
        );
        reasons.extend(proto::Error::ALL.iter().map(|&e| DropReason::Proto(e)));
        let mut seen = [false; DropReason::COUNT];
        for r in reasons {
            let i = r.index();
            assert!(i < DropReason::COUNT, "{r:?}");
            assert_eq!(DropReason::name_at(i), r.name(), "{r:?}");
            seen[i] = true;
        }
        assert!(seen.iter().all(|&s| s), "every index is some reason's");
        let mut names: Vec<&str> = (0..DropReason::COUNT).map(DropReason::name_at).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT, "names are unique");
        for r in PassReason::ALL {
            assert_eq!(PassReason::name_at(r.index()), r.name());
        }
    }

    /// Counts read, print and serialize as the map of names they replaced.
    #[test]
    fn reason_counts_read_as_a_map_of_what_was_counted() {
        let mut s = Stats::default();
        assert!(s.drops.is_empty());
        s.count_drop(DropReason::NoBackend);
        s.count_drop(DropReason::Proto(proto::Error::Garbage));
        s.count_drop(DropReason::NoBackend);
        s.count_drop(DropReason::Arp);
        s.count_pass(PassReason::NotIpv4);
        assert_eq!(s.drops["no_backend"], 2);
        assert_eq!(s.drops.get("quit"), None);
        assert_eq!(s.consumed.get("arp"), Some(&1));
        assert_eq!(s.total_drops(), 3);
        assert_eq!(
            s.drops.iter().collect::<Vec<_>>(),
            [("garbage", 1), ("no_backend", 2)]
        );
        assert_eq!(
            format!("{:?}", s.drops),
            r#"{"garbage": 1, "no_backend": 2}"#
        );
        let v = serde_json::to_string(&s).unwrap();
        assert!(
            v.contains(r#""drops":{"garbage":1,"no_backend":2},"consumed":{"arp":1},"passed":{"not_ipv4":1}"#),
            "{v}"
        );
    }
}
