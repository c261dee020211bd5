//! Hot-key detection: the [`Detector`] trait and the lossy counting family (classic,
//! weighted, decayed/self-adaptive), with Space-Saving as the baseline to beat.
//!
//! Owns: frequency estimation over a key stream, the hot/warm key sets derived from it,
//! and the evaluation helpers ([`eval`]) that the experiments (the `kvlb-lc-experiments`
//! crate, with its crates.io baselines) and the tests drive.
//! Must not: read clocks (the caller drives epochs with [`Detector::tick`]), do I/O, or
//! know about caches and backends (it reports heat changes; the core acts on them).
//!
//! # The detectors
//! | `--hotkey-algo` | what | guarantee (N requests / W weight in the window) |
//! | --- | --- | --- |
//! | `lossy` | Manku & Motwani's lossy counting (VLDB 2002), counting requests | no false negatives; `estimate ≤ true ≤ estimate + max_error`, `max_error ≤ εN`; at most `⌈1/ε⌉·(H(εN)+1)` entries (`H` harmonic, ≈ `(1/ε)·ln(εN)`) |
//! | `lossy-weighted` | the same over integer weights (value bytes, …), pruning against `ε·W` | no false negatives and `max_error ≤ εW` by weight |
//! | `lossy-decayed` | lossy counting over a window that forgets at every epoch (tumbling by default, exponential decay optionally), with ε adapted to a memory budget | the same bracket and no-false-negative rule for the *decayed* counts; see [`LossyCounter`] |
//! | `space-saving` | Metwally et al.'s Space-Saving with a Stream-Summary (O(1) update) | no false negatives; `max_error ≤ N/m ≤ εN` with `m = ⌈1/ε⌉` counters |
//!
//! Probabilistic lossy counting (Dimitropoulos, Hurley, Kind, ACM CCR 38(1), 2008) and
//! mnemonic lossy counting are not implemented: the public material available to this
//! project has only PLC's abstract (it replaces LC's worst-case Δ of a new entry with a
//! smaller bound that holds with high probability under a power-law assumption) and
//! nothing on mnemonic LC; their exact rules are not reconstructed from memory.
//!
//! # Report rules
//! Lossy counting keeps `(f, Δ)` per key with `f ≤ true ≤ f + Δ` and `Δ ≤ εN`.
//! - [`ReportRule::Classic`] (the paper's): report when `f ≥ (s − ε)·N`.
//! - [`ReportRule::Tight`]: report when `f + Δ ≥ s·N`.
//!
//! Both report every key with `true ≥ s·N` (Classic: `f ≥ true − Δ ≥ sN − εN`; Tight:
//! `f + Δ ≥ true ≥ sN`). Tight reports a subset of Classic's (`f + Δ ≥ sN` implies
//! `f ≥ sN − Δ ≥ (s − ε)N`), so it has the same recall and at least the precision: a key
//! is a false positive under Tight only if `true ≥ sN − Δ`, while under Classic
//! `true ≥ (s − ε)N` suffices. For Space-Saving the same two rules read `count − err ≥
//! (s − ε)N` and `count ≥ sN`. kvlb defaults to Tight.
//!
//! # Thresholds that work
//! The seed's `s = 0.2, ε = 0.02` detects nothing on realistic skew: under Zipf 0.99 over
//! 10⁶ keys the hottest key carries 6.5% of the requests (the second 3.3%), under Zipf 1.2
//! 19%; only Zipf 1.5 (38%) has a key above 20%. What matters to a balancer is a key's load
//! relative to one backend: with `n` backends each carries `1/n` of the load when
//! balanced, so a key carrying `1/k` of that fair share already skews its backend by a
//! factor `1 + 1/k`. kvlb therefore derives `s = 1/(k·n)` (`--hot-share-k`) and `ε = s/10`.
//! The default `k = 16` comes from what balancing needs, measured: ketama alone leaves 8
//! loopback servers at max/mean 1.13 even under uniform keys (unequal arcs), and kvlb
//! flattens that by steering reads of hot keys to under-loaded replicas, so the hot set
//! must carry enough load to fill the valleys. With 8 backends `s = 1/128 ≈ 0.78%`,
//! `ε ≈ 0.078%`: Zipf 0.99 / 10⁶ keys yields 8 hot keys carrying about 20% of the requests
//! (backend max/mean 1.58 → 1.02 in the demo), Zipf 1.2 yields 14. `k = 4` (2 hot keys at
//! Zipf 0.99 on 8 backends, 10% of the load) left max/mean at 1.38. For 10 backends
//! `k = 16` gives `s = 0.625%`, `ε = 0.0625%` and 10 hot keys at Zipf 0.99; the nearest
//! non-hot key lies below `s − ε`, so even the Classic rule reports no false positive
//! there. Larger `k` costs detector memory (`O((1/ε)·log(εN))` entries) and replication
//! traffic for keys that barely matter.
//! keys. `kvlb lc-experiments` writes the full table (`thresholds.csv`).
//!
//! # Using a detector on the packet path
//! Build one with [`build`] (an enum, [`AnyDetector`], statically dispatched) or
//! [`build_boxed`]; the core uses [`build_sampled`], which is exact below a request rate
//! and samples above it (see [`sample`] for the miss bound). Call [`Detector::observe`] per request (it returns the key's
//! [`Heat`]), [`Detector::tick`] from the timer path, and [`Detector::drain_changes`] to
//! learn which keys became hot, warm or cold.

pub mod eval;
mod heat;
mod keys;
mod lossy;
pub mod sample;
mod space_saving;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::clock::Instant;
use crate::config::Config;
use crate::keyhash::KeyHash;

pub use heat::{Heat, HeatChange};
pub use lossy::LossyCounter;
pub use sample::Sampled;
pub use space_saving::SpaceSaving;

/// A request's weight: 1 per request, or value bytes for weighted detectors.
pub type Weight = u64;

/// Largest weight one observation may carry; larger ones are clamped (memcached items are
/// at most 1 GiB, and the clamp keeps fixed-point sums far from overflow).
pub const MAX_WEIGHT: Weight = (1 << 32) - 1;

/// Which test turns a tracked key's `(estimate, max_error)` into "reported".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReportRule {
    /// Manku & Motwani: `estimate ≥ (s − ε)·W`.
    Classic,
    /// `estimate + max_error ≥ s·W`: same recall, better precision.
    #[default]
    Tight,
}

impl FromStr for ReportRule {
    type Err = HotkeyError;
    fn from_str(s: &str) -> Result<Self, HotkeyError> {
        match s {
            "classic" => Ok(ReportRule::Classic),
            "tight" => Ok(ReportRule::Tight),
            _ => Err(HotkeyError::BadParam {
                name: "rule",
                value: s.to_string(),
                reason: "expected classic or tight",
            }),
        }
    }
}

impl fmt::Display for ReportRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReportRule::Classic => "classic",
            ReportRule::Tight => "tight",
        })
    }
}

/// A key's frequency as a detector knows it: `estimate ≤ true ≤ estimate + max_error`,
/// where "true" is the key's count (or weight) in the detector's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Estimate {
    pub estimate: u64,
    pub max_error: u64,
}

/// A reported key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HotItem {
    pub key: Vec<u8>,
    pub estimate: u64,
    pub max_error: u64,
}

/// Requests and weight in a detector's current window (for decayed detectors: the decayed
/// sums, rounded down).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub requests: u64,
    pub weight: u64,
}

/// A hot-key detector on the per-request path. Single-threaded; no clocks inside.
pub trait Detector: fmt::Debug {
    /// The algorithm, as `--hotkey-algo` names it.
    fn algo(&self) -> Algo;

    /// Counts one request for `key` of `weight` (unweighted detectors count 1 whatever the
    /// weight; a weighted detector ignores a zero weight) and returns the key's heat
    /// afterwards. Amortised O(1). It allocates only when the table grows past its peak
    /// size, when a key longer than 32 bytes first lands in a slot whose spill buffer is
    /// too small, and to queue a heat change (a copy of the key); never for a tracked key.
    fn observe(&mut self, key: &[u8], weight: Weight) -> Heat;

    /// The key's heat without counting it (one hash and one probe).
    fn heat(&self, key: &[u8]) -> Heat;

    /// [`observe`](Self::observe) for a key the caller has hashed already: `hash` must be
    /// `KeyHasher::new(seed).hash(key)` with this detector's [`DetectorParams::seed`]
    /// (checked in debug builds), so the request path hashes each key once for every
    /// table. Detectors that hash otherwise ignore it.
    #[inline]
    fn observe_hashed(&mut self, key: &[u8], hash: KeyHash, weight: Weight) -> Heat {
        let _ = hash;
        self.observe(key, weight)
    }

    /// [`heat`](Self::heat) for a key the caller has hashed already (see
    /// [`observe_hashed`](Self::observe_hashed)).
    #[inline]
    fn heat_hashed(&self, key: &[u8], hash: KeyHash) -> Heat {
        let _ = hash;
        self.heat(key)
    }

    /// The key's estimate, if tracked.
    fn estimate(&self, key: &[u8]) -> Option<Estimate>;

    /// Drives epochs from the caller's monotonic clock: the first call starts the epoch
    /// clock; a call at or after the end of an epoch rotates (catching up on missed ones).
    /// Returns whether it rotated. Detectors without epochs ignore it.
    fn tick(&mut self, now: Instant) -> bool;

    /// Ends the current epoch now (no-op for detectors without epochs).
    fn rotate(&mut self);

    /// Keys meeting `support` under `rule` in the current window, hottest first.
    fn report(&self, support: f64, rule: ReportRule) -> Vec<HotItem>;

    /// The current hot set (maintained incrementally; see [`Heat`]), hottest first.
    fn hot_items(&self) -> Vec<HotItem>;

    /// The current warm set (above `warm_fraction · s`, not hot), hottest first.
    fn warm_items(&self) -> Vec<HotItem>;

    /// Number of hot keys.
    fn hot_len(&self) -> usize;

    /// Appends the heat changes since the last call, oldest first. Returns false if the
    /// queue overflowed since then (changes were lost: resynchronise from `hot_items`).
    fn drain_changes(&mut self, out: &mut Vec<HeatChange>) -> bool;

    /// Share of the window's weight carried by the `k` hottest keys (sum of their
    /// estimates over the window weight), in `[0, 1]`. Cost: the hot and warm lists, or
    /// one pass over the table when they hold fewer than `k` keys.
    fn top_share(&self, k: usize) -> f64;

    /// Requests and weight in the current window.
    fn window(&self) -> Window;

    /// Requests and weight observed since construction.
    fn totals(&self) -> Window;

    /// Tracked keys.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Most keys tracked at once since construction.
    fn peak_len(&self) -> usize;

    /// The most keys the algorithm's guarantee allows right now, if it has such a bound.
    fn entries_bound(&self) -> Option<usize>;

    /// Bytes held (tables, lists, spilled keys).
    fn memory_bytes(&self) -> usize;

    /// The support threshold s.
    fn support(&self) -> f64;

    /// Moves the support threshold (the warm threshold keeps its fraction of it) from now
    /// on: heat thresholds are recomputed at once. [`Sampled`] lowers it by its margin
    /// while it samples. `support` must lie above the error in force and below 1.
    fn set_support(&mut self, support: f64);

    /// The error bound ε in force (adaptive detectors may raise it under memory pressure).
    fn error(&self) -> f64;
}

/// The detector algorithms, by their `--hotkey-algo` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algo {
    Lossy,
    LossyWeighted,
    LossyDecayed,
    SpaceSaving,
}

impl Algo {
    pub const ALL: [Algo; 4] = [
        Algo::Lossy,
        Algo::LossyWeighted,
        Algo::LossyDecayed,
        Algo::SpaceSaving,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Algo::Lossy => "lossy",
            Algo::LossyWeighted => "lossy-weighted",
            Algo::LossyDecayed => "lossy-decayed",
            Algo::SpaceSaving => "space-saving",
        }
    }

    /// Whether `observe` counts weights (otherwise every request counts 1).
    pub fn weighted(self) -> bool {
        matches!(self, Algo::LossyWeighted)
    }
}

impl fmt::Display for Algo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algo {
    type Err = HotkeyError;
    fn from_str(s: &str) -> Result<Self, HotkeyError> {
        Algo::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| HotkeyError::UnknownAlgo(s.to_string()))
    }
}

/// What can go wrong building a detector.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HotkeyError {
    #[error("unknown hot-key algorithm '{0}' (known: lossy, lossy-weighted, lossy-decayed, space-saving)")]
    UnknownAlgo(String),
    #[error("bad hot-key parameter {name} = {value}: {reason}")]
    BadParam {
        name: &'static str,
        value: String,
        reason: &'static str,
    },
}

/// Everything a detector is built from.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectorParams {
    pub algo: Algo,
    /// Support threshold s: a key is hot above this share of the window.
    pub support: f64,
    /// Error bound ε (0 < ε < s).
    pub error: f64,
    pub rule: ReportRule,
    /// Warm threshold as a fraction of s.
    pub warm_fraction: f64,
    /// `lossy-decayed`: epoch length (rotation period).
    pub epoch: Duration,
    /// `lossy-decayed`: fraction of each count kept at a rotation (0: tumbling epochs;
    /// 0.5: counts halve every epoch).
    pub keep: f64,
    /// `lossy-decayed`: memory budget in entries; ε doubles (up to s/2) while the table is
    /// over it and halves back (down to `error`) at rotations once it is under a quarter.
    pub max_entries: Option<usize>,
    /// Requests a window must hold before keys can turn hot or warm (guards against the
    /// first few requests of a window looking like 100% shares). Default `⌈32/s⌉`.
    pub min_requests: Option<u64>,
    /// A hot (warm) key stays hot (warm) until its score falls below `1 − hysteresis`
    /// times the threshold, so keys near a threshold do not flap (each flap would make
    /// the core start and stop replicating or caching them). Default 0.05.
    pub hysteresis: f64,
    /// Hash seed (datapaths should pass a random one; see `keys`).
    pub seed: u64,
    /// [`Sampled`]: requests per second above which requests are sampled (0: never).
    pub sample_above: u64,
}

impl DetectorParams {
    /// Parameters with kvlb's defaults for everything but the algorithm and thresholds.
    pub fn new(algo: Algo, support: f64, error: f64) -> Self {
        DetectorParams {
            algo,
            support,
            error,
            rule: ReportRule::Tight,
            warm_fraction: 0.25,
            epoch: Duration::from_secs(1),
            keep: 0.0,
            max_entries: None,
            min_requests: None,
            hysteresis: 0.05,
            seed: 0x6b76_6c62_686f_746b,
            sample_above: 0,
        }
    }

    /// The detector kvlb's settings ask for: `--hotkey-algo`, the effective support and
    /// error (derived from the cluster size unless given) and `--hot-epoch`.
    pub fn from_config(cfg: &Config) -> Result<Self, HotkeyError> {
        let algo: Algo = cfg.hotkey_algo.parse()?;
        let mut p = DetectorParams::new(algo, cfg.effective_support(), cfg.effective_error());
        p.epoch = cfg.hot_epoch;
        p.sample_above = cfg.detect_sample_above;
        Ok(p)
    }

    /// The `min_requests` in force.
    pub fn effective_min_requests(&self) -> u64 {
        self.min_requests
            .unwrap_or_else(|| (32.0 / self.support).ceil() as u64)
    }

    /// Checks the parameters against each other.
    pub fn validate(&self) -> Result<(), HotkeyError> {
        let bad = |name, value: f64, reason| {
            Err(HotkeyError::BadParam {
                name,
                value: value.to_string(),
                reason,
            })
        };
        if !(self.support > 0.0 && self.support < 1.0) {
            return bad("support", self.support, "must lie strictly between 0 and 1");
        }
        if !(self.error > 0.0 && self.error < self.support) {
            return bad(
                "error",
                self.error,
                "must be positive and below the support",
            );
        }
        if self.error < 1e-7 {
            return bad(
                "error",
                self.error,
                "below 1e-7 (buckets of 10 million requests or more)",
            );
        }
        if !(self.warm_fraction > 0.0 && self.warm_fraction <= 1.0) {
            return bad("warm_fraction", self.warm_fraction, "must lie in (0, 1]");
        }
        if !(self.keep >= 0.0 && self.keep < 1.0) {
            return bad("keep", self.keep, "must lie in [0, 1)");
        }
        if !(self.hysteresis >= 0.0 && self.hysteresis < 1.0) {
            return bad("hysteresis", self.hysteresis, "must lie in [0, 1)");
        }
        if self.epoch.is_zero() {
            return bad("epoch", 0.0, "must be positive");
        }
        if self.max_entries == Some(0) {
            return bad("max_entries", 0.0, "must be at least 1");
        }
        Ok(())
    }
}

/// A detector of any algorithm, dispatched by `match` (no virtual call on the packet path).
#[derive(Debug)]
pub enum AnyDetector {
    Lossy(LossyCounter),
    SpaceSaving(SpaceSaving),
}

/// Builds the detector `params` describe.
pub fn build(params: &DetectorParams) -> Result<AnyDetector, HotkeyError> {
    params.validate()?;
    Ok(match params.algo {
        Algo::Lossy | Algo::LossyWeighted | Algo::LossyDecayed => {
            AnyDetector::Lossy(LossyCounter::new(params)?)
        }
        Algo::SpaceSaving => AnyDetector::SpaceSaving(SpaceSaving::new(params)?),
    })
}

/// Builds the detector `params` describe, sampled above `params.sample_above` requests/s
/// (exact below; see [`sample`]).
pub fn build_sampled(params: &DetectorParams) -> Result<Sampled<AnyDetector>, HotkeyError> {
    Ok(Sampled::new(build(params)?, params))
}

/// Builds the detector `params` describe behind a trait object.
pub fn build_boxed(params: &DetectorParams) -> Result<Box<dyn Detector>, HotkeyError> {
    Ok(match build(params)? {
        AnyDetector::Lossy(d) => Box::new(d),
        AnyDetector::SpaceSaving(d) => Box::new(d),
    })
}

macro_rules! dispatch {
    ($self:ident, $d:ident => $e:expr) => {
        match $self {
            AnyDetector::Lossy($d) => $e,
            AnyDetector::SpaceSaving($d) => $e,
        }
    };
}

impl Detector for AnyDetector {
    fn algo(&self) -> Algo {
        dispatch!(self, d => d.algo())
    }
    #[inline]
    fn observe(&mut self, key: &[u8], weight: Weight) -> Heat {
        dispatch!(self, d => d.observe(key, weight))
    }
    #[inline]
    fn heat(&self, key: &[u8]) -> Heat {
        dispatch!(self, d => d.heat(key))
    }
    #[inline]
    fn observe_hashed(&mut self, key: &[u8], hash: KeyHash, weight: Weight) -> Heat {
        dispatch!(self, d => d.observe_hashed(key, hash, weight))
    }
    #[inline]
    fn heat_hashed(&self, key: &[u8], hash: KeyHash) -> Heat {
        dispatch!(self, d => d.heat_hashed(key, hash))
    }
    fn estimate(&self, key: &[u8]) -> Option<Estimate> {
        dispatch!(self, d => d.estimate(key))
    }
    fn tick(&mut self, now: Instant) -> bool {
        dispatch!(self, d => d.tick(now))
    }
    fn rotate(&mut self) {
        dispatch!(self, d => d.rotate())
    }
    fn report(&self, support: f64, rule: ReportRule) -> Vec<HotItem> {
        dispatch!(self, d => d.report(support, rule))
    }
    fn hot_items(&self) -> Vec<HotItem> {
        dispatch!(self, d => d.hot_items())
    }
    fn warm_items(&self) -> Vec<HotItem> {
        dispatch!(self, d => d.warm_items())
    }
    fn hot_len(&self) -> usize {
        dispatch!(self, d => d.hot_len())
    }
    fn drain_changes(&mut self, out: &mut Vec<HeatChange>) -> bool {
        dispatch!(self, d => d.drain_changes(out))
    }
    fn top_share(&self, k: usize) -> f64 {
        dispatch!(self, d => d.top_share(k))
    }
    fn window(&self) -> Window {
        dispatch!(self, d => d.window())
    }
    fn totals(&self) -> Window {
        dispatch!(self, d => d.totals())
    }
    fn len(&self) -> usize {
        dispatch!(self, d => d.len())
    }
    fn peak_len(&self) -> usize {
        dispatch!(self, d => d.peak_len())
    }
    fn entries_bound(&self) -> Option<usize> {
        dispatch!(self, d => d.entries_bound())
    }
    fn memory_bytes(&self) -> usize {
        dispatch!(self, d => d.memory_bytes())
    }
    fn support(&self) -> f64 {
        dispatch!(self, d => d.support())
    }
    fn set_support(&mut self, support: f64) {
        dispatch!(self, d => d.set_support(support))
    }
    fn error(&self) -> f64 {
        dispatch!(self, d => d.error())
    }
}

/// A threshold `⌈x·w⌉` for scores compared with `>=`, rounded so that floating-point error
/// can only lower it (reporting a key too many, never one too few). Public for the
/// experiments' baselines, which report by the same rule.
pub fn threshold(x: f64, w: u64) -> u64 {
    let t = x * w as f64;
    if t.is_nan() || t <= 0.0 {
        return 0;
    }
    let t = (t * (1.0 - 1e-12)).ceil();
    if t >= u64::MAX as f64 {
        u64::MAX
    } else {
        t as u64
    }
}

/// Heat thresholds on a detector's score (all in the detector's units).
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeatLevels {
    /// Score at which a key becomes hot / warm.
    pub hot: u64,
    pub warm: u64,
    /// Score below which a hot / warm key stops being hot / warm.
    pub hot_keep: u64,
    pub warm_keep: u64,
}

impl HeatLevels {
    /// Nothing qualifies (before the first refresh).
    pub const NEVER: HeatLevels = HeatLevels {
        hot: u64::MAX,
        warm: u64::MAX,
        hot_keep: u64::MAX,
        warm_keep: u64::MAX,
    };

    pub fn new(hot: u64, warm: u64, hysteresis: f64) -> HeatLevels {
        let keep = |t: u64| (t as f64 * (1.0 - hysteresis)).floor() as u64;
        HeatLevels {
            hot,
            warm,
            hot_keep: keep(hot),
            warm_keep: keep(warm),
        }
    }

    /// The heat of a key with `score` that is at heat `current` now.
    #[inline]
    pub fn classify(&self, score: u64, current: Heat) -> Heat {
        if score >= self.hot || (current == Heat::Hot && score >= self.hot_keep) {
            Heat::Hot
        } else if score >= self.warm || (current != Heat::Cold && score >= self.warm_keep) {
            Heat::Warm
        } else {
            Heat::Cold
        }
    }
}

/// Sorts items hottest first (ties by key, so output is deterministic). Public for the
/// experiments' baselines, which order their reports the same way.
pub fn sort_items(items: &mut [HotItem]) {
    items.sort_unstable_by(|a, b| b.estimate.cmp(&a.estimate).then_with(|| a.key.cmp(&b.key)));
}

/// Sum of the `k` largest values over `total`, in [0, 1].
pub(crate) fn share_of_top(mut values: Vec<u64>, k: usize, total: u64) -> f64 {
    if total == 0 || k == 0 {
        return 0.0;
    }
    if values.len() > k {
        values.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
        values.truncate(k);
    }
    let sum: u128 = values.iter().map(|&v| u128::from(v)).sum();
    (sum as f64 / total as f64).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_is_typed() {
        for a in Algo::ALL {
            assert_eq!(a.name().parse::<Algo>().unwrap(), a);
        }
        assert_eq!(
            "lossy-count".parse::<Algo>(),
            Err(HotkeyError::UnknownAlgo("lossy-count".into()))
        );
        assert_eq!("tight".parse::<ReportRule>().unwrap(), ReportRule::Tight);
        assert!("loose".parse::<ReportRule>().is_err());
    }

    #[test]
    fn params_are_validated() {
        let ok = DetectorParams::new(Algo::Lossy, 0.025, 0.0025);
        ok.validate().unwrap();
        for (s, e) in [
            (0.0, 0.001),
            (1.0, 0.1),
            (0.1, 0.1),
            (0.1, 0.0),
            (0.1, f64::NAN),
        ] {
            let p = DetectorParams::new(Algo::Lossy, s, e);
            assert!(build(&p).is_err(), "s={s} e={e}");
        }
        let mut p = ok.clone();
        p.keep = 1.0;
        assert!(build(&p).is_err());
        let mut p = ok.clone();
        p.max_entries = Some(0);
        assert!(build(&p).is_err());
    }

    #[test]
    fn from_config_uses_cluster_derived_thresholds() {
        let mut cfg = Config {
            backends: (0..10)
                .map(|i| format!("127.0.0.1:{}", 20000 + i).parse().unwrap())
                .collect(),
            hotkey_algo: "lossy-decayed".into(),
            ..Config::default()
        };
        let p = DetectorParams::from_config(&cfg).unwrap();
        assert_eq!(p.algo, Algo::LossyDecayed);
        // 10 backends, k = 16: s = 1/160, ε = s/10.
        assert!((p.support - 1.0 / 160.0).abs() < 1e-12);
        assert!((p.error - 1.0 / 1600.0).abs() < 1e-12);
        assert_eq!(p.epoch, cfg.hot_epoch);
        cfg.hotkey_algo = "nope".into();
        assert!(matches!(
            DetectorParams::from_config(&cfg),
            Err(HotkeyError::UnknownAlgo(_))
        ));
    }

    #[test]
    fn heat_levels_have_hysteresis() {
        let l = HeatLevels::new(100, 40, 0.1);
        assert_eq!(l.classify(100, Heat::Cold), Heat::Hot);
        assert_eq!(l.classify(95, Heat::Cold), Heat::Warm);
        assert_eq!(l.classify(95, Heat::Hot), Heat::Hot);
        assert_eq!(l.classify(89, Heat::Hot), Heat::Warm);
        assert_eq!(l.classify(37, Heat::Hot), Heat::Warm);
        assert_eq!(l.classify(35, Heat::Hot), Heat::Cold);
        assert_eq!(l.classify(36, Heat::Warm), Heat::Warm);
        assert_eq!(l.classify(35, Heat::Warm), Heat::Cold);
        assert_eq!(l.classify(39, Heat::Cold), Heat::Cold);
        assert_eq!(
            HeatLevels::NEVER.classify(u64::MAX - 1, Heat::Cold),
            Heat::Cold
        );
    }

    #[test]
    fn thresholds_round_down_only_by_float_error() {
        assert_eq!(threshold(0.25, 100), 25);
        assert_eq!(threshold(0.25, 101), 26);
        assert_eq!(threshold(0.0, 100), 0);
        assert!(threshold(0.5, u64::MAX) <= u64::MAX / 2 + 1);
        assert!(threshold(0.5, u64::MAX) > u64::MAX / 2 - (1 << 30));
        assert_eq!(share_of_top(vec![5, 1, 3], 2, 10), 0.8);
        assert_eq!(share_of_top(vec![5], 2, 0), 0.0);
    }
}
