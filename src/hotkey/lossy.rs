//! Lossy counting: classic (Manku & Motwani, "Approximate Frequency Counts over Data
//! Streams", VLDB 2002), weighted, and decayed/self-adaptive, in one engine.
//!
//! # The engine
//! Every tracked key has `(f, Δ)`: `f` is the weight counted since the key (last) entered
//! the table, `Δ` the most it can have had before. Values are integers in *units*: one
//! request (classic), one weight unit (weighted), or 2⁻¹⁶ of either (decayed, so that
//! scaling at rotations loses at most one unit per rotation). The stream is cut into
//! buckets of `width = ⌈q/ε⌉` units of weight (`q`, the quantum, is one request or one
//! weight unit, so classic buckets are the paper's `⌈1/ε⌉` requests). At the end of bucket
//! `k` every entry with `f + Δ ≤ k·q` is deleted, and `B`, the largest such threshold so
//! far, becomes the `Δ` of keys entering later. Invariants, for window weight `W`:
//! - tracked key: `f ≤ true ≤ f + Δ` and `Δ ≤ B ≤ ε·W`;
//! - untracked key: `true ≤ B` (it was deleted with `f + Δ ≤ B`, or never seen).
//!
//! Hence no key with `true ≥ s·W` is missed by either report rule (see the module above).
//!
//! # Pruning without scanning the table
//! An entry is due at the first boundary `k` with `k·q ≥ f + Δ`, so entries are filed in a
//! ring of [`RING`] lists by that index when they enter. Increments do not move them
//! (lazy): at boundary `k` only list `k` is taken; an entry that grew since it was filed
//! is re-filed at its new due index. Every re-filing follows at least one increment, so
//! pruning costs O(1) amortised per request and never touches entries that are not due.
//! (Entries due more than `RING` boundaries ahead are filed at the ring's far end and
//! looked at again then; that costs hot keys one look per `RING` buckets.)
//!
//! # Memory
//! Classic: at most `⌈1/ε⌉·(H(B) + 1)` entries after `B` complete buckets (the paper's
//! `(1/ε)·log(εN)`; `H` is the harmonic number), checked by `entries_bound`. Weighted:
//! `(⌈1/ε⌉ + w_max)·H(B) + ⌈1/ε⌉`, with `w_max` the largest weight seen in weight units.
//! Tumbling epochs (decayed, `keep = 0`): the classic bound over the current epoch plus
//! the hot and warm keys pinned from the last one.
//!
//! # Decayed (`lossy-decayed`)
//! Hot keys drift, and a landmark count from the start of time never forgets them. The
//! decayed detector counts in a window that forgets at each epoch the caller's clock ends
//! ([`Detector::tick`]): every count (`f`, `Δ`, `B`, `W`) is multiplied by `keep`
//! (`f` rounded down, the bounds up), so "true" becomes the decayed count
//! `D(x) = Σ w·keepᵉ` over the key's requests, `e` epochs old. With `keep = 0` (the
//! default) the window is the current epoch. Scaling every quantity by the same factor
//! keeps both invariants (up to one unit per rotation), so the detector guarantees, for
//! the decayed counts and the decayed window weight `W_D`:
//! - `estimate ≤ D(x) ≤ estimate + max_error` for every tracked key, and `max_error ≤ B ≤
//!   ε_max·W_D`, `ε_max` being the largest ε in force while the key was tracked;
//! - no false negatives: every key with `D(x) ≥ s·W_D` is reported (both rules);
//! - the hot set: at each rotation it becomes the keys reported over the epoch that just
//!   ended (plus, by the hysteresis, keys that were hot and are still within 5% below
//!   the threshold), and those keys stay hot (their entries pinned) through the next
//!   epoch. During an epoch a key turns hot early once its certain count `f` beats the
//!   threshold by a significance margin (three standard deviations of a Poisson count at
//!   the threshold), after `min_requests` requests. So after a change of the hot keys,
//!   every new hot key is in the hot set at the end of the first full epoch after the
//!   change at the latest, and strongly hot ones within a fraction of an epoch.
//! - thin traffic: an epoch that ends with fewer than `min_requests` requests does not
//!   end the window; it stretches over the following epochs (at most [`MAX_STRETCH`] in
//!   all) until it holds enough requests to judge, so at low rates keys still turn hot,
//!   after `min_requests / rate` instead of one epoch.
//!
//! Self-adaptation: with a memory budget (`max_entries`) ε doubles, up to `s/2`, whenever
//! the table outgrows it (pruning at once against the larger threshold, until the table
//! fits again; at `s/2` the budget gives way, never the guarantee) and halves back
//! towards the configured ε at rotations once the table uses under a quarter of it. Skew
//! drives this through memory: a skewed window keeps few entries and runs at the
//! configured ε; a flat one (no hot keys to find) needs many and gets a larger ε. The
//! guarantees above hold with the ε in force (`error()`); while ε is raised the
//! undercount bound is looser and precision lower, never recall.

use std::time::Duration;

use super::heat::{report_items, HeatBook, Tracked};
use super::keys::{KeyTable, Probe, Slot, NIL};
use super::{
    share_of_top, threshold, Algo, Detector, DetectorParams, Estimate, Heat, HeatChange,
    HeatLevels, HotItem, HotkeyError, ReportRule, Weight, Window, MAX_WEIGHT,
};
use crate::clock::Instant;
use crate::keyhash::KeyHash;

/// Lists in the pruning ring (a power of two).
const RING: usize = 256;

/// Fractional bits of decayed counts.
const DECAY_FRAC: u32 = 16;

/// `keep` in 16-bit fixed point.
const KEEP_ONE: u64 = 1 << 16;

#[derive(Clone, Copy, Debug, Default)]
struct Lc {
    f: u64,
    delta: u64,
    /// Next entry in the same pruning list.
    next: u32,
    list_pos: u32,
    heat: Heat,
    /// Held until the next rotation (decayed detector's hot and warm keys).
    pinned: bool,
}

impl Tracked for Lc {
    fn heat(&self) -> Heat {
        self.heat
    }
    fn set_heat(&mut self, h: Heat) {
        self.heat = h;
    }
    fn list_pos(&self) -> u32 {
        self.list_pos
    }
    fn set_list_pos(&mut self, pos: u32) {
        self.list_pos = pos;
    }
}

/// The lossy counting detector (`lossy`, `lossy-weighted`, `lossy-decayed`).
#[derive(Debug)]
pub struct LossyCounter {
    algo: Algo,
    support: f64,
    warm: f64,
    rule: ReportRule,
    weighted: bool,
    /// Epoch length and `keep` (fixed point) for the decayed detector.
    decay: Option<(Duration, u64)>,
    eps_target: f64,
    eps: f64,
    max_entries: Option<usize>,
    frac: u32,
    /// Pruning quantum (units): one request or one weight unit.
    quantum: u64,
    /// Bucket width (units of window weight).
    width: u64,
    table: KeyTable<Lc>,
    ring: Vec<u32>,
    /// Next boundary index to process; boundary k fires once `w >= k·width`.
    k_next: u64,
    next_boundary: u64,
    /// B: the largest prune threshold applied (Δ of entering keys).
    floor_delta: u64,
    /// Window requests (units).
    n: u64,
    /// Window weight (units).
    w: u64,
    /// Largest single weight seen (units).
    w_max: u64,
    n_total: u64,
    w_total: u64,
    book: HeatBook,
    /// Heat thresholds on the report rule's score.
    levels: HeatLevels,
    /// Decayed detector: thresholds on `f` for promotion within an epoch (with a
    /// significance margin; see `refresh`).
    early: HeatLevels,
    hysteresis: f64,
    refresh_period: u64,
    next_refresh: u64,
    min_n: u64,
    next_rotation: Option<Instant>,
    /// Epochs the current window has been stretched over because it held fewer than
    /// `min_n` requests (decayed detector; see `tick`).
    stretched: u64,
}

/// The most epochs one window of the decayed detector may span when traffic is too thin
/// to fill one epoch with `min_requests` requests.
pub const MAX_STRETCH: u64 = 16;

impl LossyCounter {
    /// A detector for `params` (`algo` must be one of the lossy ones).
    pub fn new(params: &DetectorParams) -> Result<Self, HotkeyError> {
        params.validate()?;
        let (weighted, decay) = match params.algo {
            Algo::Lossy => (false, None),
            Algo::LossyWeighted => (true, None),
            Algo::LossyDecayed => {
                let keep = (params.keep * KEEP_ONE as f64).floor() as u64;
                (false, Some((params.epoch, keep.min(KEEP_ONE - 1))))
            }
            Algo::SpaceSaving => {
                return Err(HotkeyError::BadParam {
                    name: "algo",
                    value: params.algo.name().into(),
                    reason: "not a lossy counting algorithm",
                })
            }
        };
        let frac = if decay.is_some() { DECAY_FRAC } else { 0 };
        let one = 1u64 << frac;
        let mut d = LossyCounter {
            algo: params.algo,
            support: params.support,
            warm: params.support * params.warm_fraction,
            rule: params.rule,
            weighted,
            decay,
            eps_target: params.error,
            eps: params.error,
            max_entries: params.max_entries,
            frac,
            quantum: one,
            width: 0,
            table: KeyTable::new(params.seed, 0),
            ring: vec![NIL; RING],
            k_next: 1,
            next_boundary: 0,
            floor_delta: 0,
            n: 0,
            w: 0,
            w_max: one,
            n_total: 0,
            w_total: 0,
            book: HeatBook::default(),
            levels: HeatLevels::NEVER,
            early: HeatLevels::NEVER,
            hysteresis: params.hysteresis,
            refresh_period: 0,
            next_refresh: 0,
            min_n: params.effective_min_requests().saturating_mul(one),
            next_rotation: None,
            stretched: 0,
        };
        d.set_error(params.error);
        d.next_refresh = 0;
        Ok(d)
    }

    fn set_error(&mut self, eps: f64) {
        self.eps = eps;
        let per_bucket = (1.0 / eps).ceil() as u64;
        self.width = per_bucket.saturating_mul(self.quantum).max(1);
        self.refresh_period = per_bucket.saturating_mul(1 << self.frac);
        self.next_boundary = self.k_next.saturating_mul(self.width);
    }

    #[inline]
    fn one(&self) -> u64 {
        1 << self.frac
    }

    #[inline]
    fn score(rule: ReportRule, e: &Lc) -> u64 {
        match rule {
            ReportRule::Tight => e.f.saturating_add(e.delta),
            ReportRule::Classic => e.f,
        }
    }

    /// Score thresholds (hot, warm) for `rule` over the current window.
    fn thresholds(&self, support: f64, warm: f64, rule: ReportRule) -> (u64, u64) {
        match rule {
            ReportRule::Tight => (threshold(support, self.w), threshold(warm, self.w)),
            ReportRule::Classic => {
                // Every Δ is at most B, which may exceed ε·W after ε was lowered.
                let e = self
                    .eps
                    .max(self.floor_delta as f64 / (self.w.max(1)) as f64);
                (
                    threshold(support - e, self.w),
                    threshold((warm - e).max(e), self.w),
                )
            }
        }
    }

    fn to_requests(&self, units: u64) -> u64 {
        units >> self.frac
    }

    fn to_requests_up(&self, units: u64) -> u64 {
        let mask = self.one() - 1;
        (units >> self.frac) + u64::from(units & mask != 0)
    }

    fn estimate_of(&self, e: &Lc) -> Estimate {
        let est = self.to_requests(e.f);
        let upper = self.to_requests_up(e.f.saturating_add(e.delta));
        Estimate {
            estimate: est,
            max_error: upper - est,
        }
    }

    fn item(&self, i: u32) -> HotItem {
        let s = &self.table.slots[i as usize];
        let e = self.estimate_of(&s.p);
        HotItem {
            key: s.key.to_vec(),
            estimate: e.estimate,
            max_error: e.max_error,
        }
    }

    /// Files entry `i` in the pruning list of the first boundary that may delete it.
    #[inline]
    fn file(&mut self, i: u32) {
        // The quantum is one request (or weight unit): 2^frac units.
        let (frac, mask) = (self.frac, self.one() - 1);
        let e = &mut self.table.slots[i as usize].p;
        let v = e.f.saturating_add(e.delta);
        let due = ((v >> frac) + u64::from(v & mask != 0))
            .clamp(self.k_next, self.k_next.saturating_add(RING as u64 - 1));
        let pos = (due as usize) & (RING - 1);
        e.next = self.ring[pos];
        self.ring[pos] = i;
    }

    fn delete(&mut self, i: u32, e: &Lc) {
        if e.heat != Heat::Cold {
            let est = self.to_requests(e.f);
            self.book.set(&mut self.table.slots, i, Heat::Cold, est);
        }
        self.table.remove(i);
    }

    /// Processes every boundary up to the one the window weight has reached.
    fn boundary(&mut self) {
        let k_target = self.w / self.width;
        if k_target >= self.k_next {
            let theta = k_target.saturating_mul(self.quantum);
            let first = self.k_next;
            let steps = (k_target - first + 1).min(RING as u64);
            self.k_next = k_target + 1;
            self.floor_delta = self.floor_delta.max(theta);
            for s in 0..steps {
                // Detach the list, then walk it once: each entry is deleted or re-filed
                // (never into the list being walked, which is no longer in the ring).
                let pos = ((first + s) as usize) & (RING - 1);
                let mut i = std::mem::replace(&mut self.ring[pos], NIL);
                while i != NIL {
                    let e = self.table.slots[i as usize].p;
                    let next = e.next;
                    if !e.pinned {
                        // (pinned entries leave the ring until the next rotation)
                        if e.f.saturating_add(e.delta) <= theta {
                            self.delete(i, &e);
                        } else {
                            self.file(i);
                        }
                    }
                    i = next;
                }
            }
        }
        self.next_boundary = self.k_next.saturating_mul(self.width);
    }

    /// Recomputes the heat thresholds; landmark detectors also demote keys that fell below.
    fn refresh(&mut self) {
        // Thresholds go stale as the window grows: refresh every 1/ε requests, and more
        // often while the window is young (every 1/16 of it), when 1/ε requests would move
        // the thresholds by a large fraction.
        let step = (self.n / 16).clamp(self.one(), self.refresh_period.max(self.one()));
        self.next_refresh = self.n.saturating_add(step);
        let (hot, warm) = self.thresholds(self.support, self.warm, self.rule);
        self.levels = HeatLevels::new(hot, warm, self.hysteresis);
        if self.decay.is_some() {
            // Within an epoch the window restarts small, and a key just under s would often
            // look hot by chance. Promote early only on the certain count f, and only once
            // it exceeds the threshold by three standard deviations of a Poisson count at
            // the threshold; the rotation snapshot catches every key that is hot over the
            // whole epoch anyway.
            let one = self.one() as f64;
            let sure = |t: u64| {
                let req = t as f64 / one;
                t.saturating_add(((3.0 * req.sqrt()) * one).ceil() as u64)
            };
            self.early = HeatLevels::new(sure(hot), sure(warm), 0.0);
        } else {
            let (rule, frac, levels) = (self.rule, self.frac, self.levels);
            let classify = |s: &Slot<Lc>| {
                let h = levels.classify(Self::score(rule, &s.p), s.p.heat);
                (h, s.p.f >> frac)
            };
            self.book.rescan(&mut self.table.slots, Heat::Hot, classify);
            self.book
                .rescan(&mut self.table.slots, Heat::Warm, classify);
        }
    }

    /// Raises ε (memory budget exceeded) and prunes against the new threshold.
    fn grow_error(&mut self) {
        let cap = self.support / 2.0;
        // Double ε (pruning against the larger threshold each time) until the table fits
        // the budget again or ε reaches s/2; past that the budget gives way, never the
        // guarantee.
        while self.eps < cap && self.max_entries.is_some_and(|m| self.table.len() > m) {
            let eps = (self.eps * 2.0).min(cap);
            log::debug!(
                "hot-key table over its budget ({} entries): ε {} → {}",
                self.table.len(),
                self.eps,
                eps
            );
            self.set_error(eps);
            if self.w >= self.next_boundary {
                self.boundary();
            }
        }
    }

    /// Promotes entry `i` if its score crossed a threshold; returns its heat.
    #[inline]
    fn promote(&mut self, i: u32) -> Heat {
        let slot = &self.table.slots[i as usize];
        if !slot.live {
            return Heat::Cold; // pruned by the boundary this request completed
        }
        let e = &slot.p;
        let heat = e.heat;
        if heat == Heat::Hot || self.n < self.min_n {
            return heat;
        }
        let to = if self.decay.is_some() {
            self.early.classify(e.f, heat)
        } else {
            self.levels.classify(Self::score(self.rule, e), heat)
        };
        if to <= heat {
            return heat;
        }
        let est = self.to_requests(e.f);
        self.book.set(&mut self.table.slots, i, to, est);
        if self.decay.is_some() {
            self.table.slots[i as usize].p.pinned = true;
        }
        to
    }

    /// Ends `epochs` epochs at once (decayed detector only).
    fn rotate_by(&mut self, epochs: u64) {
        let Some((_, keep)) = self.decay else {
            return;
        };
        // 1. The hot set becomes what the ending window reports.
        let guard = self.n >= self.min_n;
        let (hot, warm) = self.thresholds(self.support, self.warm, self.rule);
        let levels = HeatLevels::new(hot, warm, self.hysteresis);
        for i in 0..self.table.slots.len() as u32 {
            let s = &self.table.slots[i as usize];
            if !s.live {
                continue;
            }
            let to = if guard {
                levels.classify(Self::score(self.rule, &s.p), s.p.heat)
            } else {
                Heat::Cold
            };
            if to != s.p.heat {
                let est = self.to_requests(s.p.f);
                self.book.set(&mut self.table.slots, i, to, est);
            }
        }
        // 2. Decay every count by keep^epochs.
        let mut k = keep as f64 / KEEP_ONE as f64;
        k = k.powf(epochs.min(1 << 20) as f64);
        let k = (k * KEEP_ONE as f64).floor() as u64;
        let down = |v: u64| ((u128::from(v) * u128::from(k)) >> 16) as u64;
        let up = |v: u64| ((u128::from(v) * u128::from(k) + u128::from(KEEP_ONE - 1)) >> 16) as u64;
        self.w = up(self.w);
        self.n = down(self.n);
        self.floor_delta = up(self.floor_delta);
        // 3. Adapt ε down if the budget allows.
        if let Some(max) = self.max_entries {
            if self.eps > self.eps_target && self.table.len() < max / 4 {
                self.set_error((self.eps / 2.0).max(self.eps_target));
            }
        }
        // 4. Rebuild the pruning ring; pin hot and warm keys for the coming epoch.
        self.ring.fill(NIL);
        let kb = self.w / self.width;
        self.k_next = kb + 1;
        self.next_boundary = self.k_next.saturating_mul(self.width);
        let theta = kb.saturating_mul(self.quantum);
        self.floor_delta = self.floor_delta.max(theta);
        for i in 0..self.table.slots.len() as u32 {
            let s = &mut self.table.slots[i as usize];
            if !s.live {
                continue;
            }
            s.p.f = down(s.p.f);
            s.p.delta = up(s.p.delta);
            s.p.pinned = s.p.heat != Heat::Cold;
            if s.p.pinned {
                continue;
            }
            let v = s.p.f.saturating_add(s.p.delta);
            if v <= theta {
                self.table.remove(i);
            } else {
                self.file(i);
            }
        }
        self.next_refresh = self.n;
        self.refresh();
    }

    /// The current bucket index B (completed buckets).
    fn buckets_done(&self) -> u64 {
        self.k_next - 1
    }
}

/// `H(b) = 1 + 1/2 + … + 1/b`.
fn harmonic(b: u64) -> f64 {
    if b <= 4096 {
        (1..=b).map(|i| 1.0 / i as f64).sum()
    } else {
        let b = b as f64;
        b.ln() + 0.577_215_664_901_532_9 + 1.0 / (2.0 * b)
    }
}

impl LossyCounter {
    /// Counts one request for the probed key (see [`Detector::observe`]).
    #[inline]
    fn observe_probe(&mut self, probe: &Probe<'_>, weight: Weight) -> Heat {
        let one = self.one();
        let units = if self.weighted {
            weight.min(MAX_WEIGHT) << self.frac
        } else {
            one
        };
        if units == 0 {
            return self.heat_probe(probe);
        }
        self.n = self.n.saturating_add(one);
        self.w = self.w.saturating_add(units);
        self.n_total += 1;
        self.w_total = self.w_total.saturating_add(if self.weighted {
            weight.min(MAX_WEIGHT)
        } else {
            1
        });
        let (i, inserted) = self.table.find_or_insert(probe);
        match inserted {
            false => {
                let e = &mut self.table.slots[i as usize].p;
                e.f = e.f.saturating_add(units);
            }
            true => {
                let fd = self.floor_delta;
                let e = &mut self.table.slots[i as usize].p;
                e.f = units;
                e.delta = fd;
                self.file(i);
                if units > self.w_max {
                    self.w_max = units;
                }
                if let Some(max) = self.max_entries {
                    if self.table.len() > max {
                        self.grow_error();
                    }
                }
            }
        }
        if self.w >= self.next_boundary {
            self.boundary();
        }
        if self.n >= self.next_refresh {
            self.refresh();
        }
        self.promote(i)
    }

    #[inline]
    fn heat_probe(&self, probe: &Probe<'_>) -> Heat {
        match self.table.find(probe) {
            Some(i) => self.table.slots[i as usize].p.heat,
            None => Heat::Cold,
        }
    }
}

impl Detector for LossyCounter {
    fn algo(&self) -> Algo {
        self.algo
    }

    #[inline]
    fn observe(&mut self, key: &[u8], weight: Weight) -> Heat {
        let probe = self.table.probe(key);
        self.observe_probe(&probe, weight)
    }

    #[inline]
    fn observe_hashed(&mut self, key: &[u8], hash: KeyHash, weight: Weight) -> Heat {
        let probe = self.table.probe_hashed(key, hash);
        self.observe_probe(&probe, weight)
    }

    #[inline]
    fn heat_hashed(&self, key: &[u8], hash: KeyHash) -> Heat {
        self.heat_probe(&self.table.probe_hashed(key, hash))
    }

    #[inline]
    fn heat(&self, key: &[u8]) -> Heat {
        self.heat_probe(&self.table.probe(key))
    }
    fn estimate(&self, key: &[u8]) -> Option<Estimate> {
        self.table
            .find(&self.table.probe(key))
            .map(|i| self.estimate_of(&self.table.slots[i as usize].p))
    }

    fn tick(&mut self, now: Instant) -> bool {
        let Some((epoch, _)) = self.decay else {
            return false;
        };
        match self.next_rotation {
            None => {
                self.next_rotation = Some(now + epoch);
                false
            }
            Some(t) if now >= t => {
                let ep = u64::try_from(epoch.as_nanos()).unwrap_or(u64::MAX).max(1);
                let missed = (now.as_nanos() - t.as_nanos()) / ep;
                let epochs = missed.saturating_add(1);
                // Too few requests to judge any key: stretch the window over the next
                // epoch instead of ending it empty-handed (up to MAX_STRETCH epochs), so
                // thin traffic still finds its hot keys, only more slowly.
                if self.n < self.min_n && self.stretched + epochs < MAX_STRETCH {
                    self.stretched += epochs;
                    self.next_rotation = Some(Instant::from_nanos(
                        t.as_nanos().saturating_add(epochs.saturating_mul(ep)),
                    ));
                    return false;
                }
                self.stretched = 0;
                self.rotate_by(epochs);
                self.next_rotation = Some(Instant::from_nanos(
                    t.as_nanos().saturating_add(epochs.saturating_mul(ep)),
                ));
                true
            }
            Some(_) => false,
        }
    }

    fn rotate(&mut self) {
        self.rotate_by(1);
    }

    fn report(&self, support: f64, rule: ReportRule) -> Vec<HotItem> {
        let (hot, _) = self.thresholds(support, support, rule);
        report_items(&self.table, hot, |p| Self::score(rule, p), |i| self.item(i))
    }

    fn hot_items(&self) -> Vec<HotItem> {
        self.book.items(Heat::Hot, |i| self.item(i))
    }

    fn warm_items(&self) -> Vec<HotItem> {
        self.book.items(Heat::Warm, |i| self.item(i))
    }

    fn hot_len(&self) -> usize {
        self.book.hot().len()
    }

    fn drain_changes(&mut self, out: &mut Vec<HeatChange>) -> bool {
        self.book.drain(out)
    }

    fn top_share(&self, k: usize) -> f64 {
        let listed = self.book.hot().len() + self.book.warm().len();
        let values: Vec<u64> = if listed >= k {
            self.book
                .hot()
                .iter()
                .chain(self.book.warm())
                .map(|&i| self.table.slots[i as usize].p.f)
                .collect()
        } else {
            self.table
                .live_indices()
                .map(|i| self.table.slots[i as usize].p.f)
                .collect()
        };
        share_of_top(values, k, self.w)
    }

    fn window(&self) -> Window {
        Window {
            requests: self.to_requests(self.n),
            weight: self.to_requests(self.w),
        }
    }

    fn totals(&self) -> Window {
        Window {
            requests: self.n_total,
            weight: self.w_total,
        }
    }

    fn len(&self) -> usize {
        self.table.len()
    }

    fn peak_len(&self) -> usize {
        self.table.peak()
    }

    fn entries_bound(&self) -> Option<usize> {
        if self.max_entries.is_some() {
            return self.max_entries;
        }
        // Tumbling epochs start every epoch afresh: the landmark bound holds within the
        // epoch, plus the hot and warm keys pinned from the last one. With keep > 0 old
        // entries linger with decayed counts and the landmark argument does not apply.
        let pinned = match self.decay {
            None => 0,
            Some((_, 0)) => self.book.hot().len() + self.book.warm().len(),
            Some(_) => return None,
        };
        let q = self.quantum as f64;
        let per = self.width as f64 / q;
        let c = (self.width + self.w_max - self.quantum) as f64 / q;
        let b = harmonic(self.buckets_done());
        Some((c * b + per).ceil() as usize + pinned)
    }

    fn memory_bytes(&self) -> usize {
        self.table.memory_bytes() + self.ring.capacity() * 4 + self.book.memory_bytes()
    }

    fn support(&self) -> f64 {
        self.support
    }

    fn set_support(&mut self, support: f64) {
        let fraction = self.warm / self.support;
        self.support = support;
        self.warm = support * fraction;
        self.refresh();
    }

    fn error(&self) -> f64 {
        self.eps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn params(algo: Algo, s: f64, e: f64) -> DetectorParams {
        let mut p = DetectorParams::new(algo, s, e);
        p.min_requests = Some(1);
        p
    }

    /// Checks the bracket for every key of `truth` and no false negatives at `s`.
    fn check(d: &LossyCounter, truth: &HashMap<Vec<u8>, u64>, s: f64) {
        let w = d.window().weight;
        for (k, &t) in truth {
            if let Some(e) = d.estimate(k) {
                assert!(e.estimate <= t, "{k:?}: {} > {t}", e.estimate);
                assert!(e.estimate + e.max_error >= t, "{k:?}: {e:?} < {t}");
                assert!(e.max_error as f64 <= d.error() * w as f64 + 1.0);
            } else {
                assert!(t as f64 <= d.error() * w as f64, "{k:?} untracked with {t}");
            }
        }
        for rule in [ReportRule::Classic, ReportRule::Tight] {
            let rep: Vec<Vec<u8>> = d.report(s, rule).into_iter().map(|i| i.key).collect();
            for (k, &t) in truth {
                if t as f64 >= s * w as f64 {
                    assert!(rep.contains(k), "{rule}: {k:?} ({t} of {w}) missing");
                }
            }
        }
    }

    #[test]
    fn classic_example_by_hand() {
        // ε = 0.25: buckets of 4 requests.
        let mut d = LossyCounter::new(&params(Algo::Lossy, 0.5, 0.25)).unwrap();
        for k in [b"a", b"b", b"a", b"c"] {
            d.observe(k, 1);
        }
        // Boundary 1 prunes f + Δ ≤ 1: b and c go, a (f=2) stays.
        assert_eq!(d.len(), 1);
        assert_eq!(
            d.estimate(b"a"),
            Some(Estimate {
                estimate: 2,
                max_error: 0
            })
        );
        d.observe(b"b", 1);
        // b re-enters with Δ = 1.
        assert_eq!(
            d.estimate(b"b"),
            Some(Estimate {
                estimate: 1,
                max_error: 1
            })
        );
        // W = 5; Tight at s = 0.4 needs f + Δ ≥ 2: a (2 + 0) and b (1 + 1).
        let rep = d.report(0.4, ReportRule::Tight);
        assert_eq!(rep.len(), 2);
        assert_eq!(rep[0].key, b"a");
        assert!(d.report(0.5, ReportRule::Tight).is_empty());
    }

    #[test]
    fn guarantees_on_a_skewed_stream() {
        let mut d = LossyCounter::new(&params(Algo::Lossy, 0.05, 0.005)).unwrap();
        let mut truth = HashMap::new();
        let mut x = 12345u64;
        for i in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Half the requests to 8 keys, half spread over 50k.
            let k = if i % 2 == 0 { x % 8 } else { 100 + x % 50_000 };
            let key = format!("k{k}").into_bytes();
            d.observe(&key, 1);
            *truth.entry(key).or_insert(0) += 1;
            if i % 9973 == 0 {
                check(&d, &truth, 0.05);
                assert!(d.len() <= d.entries_bound().unwrap());
            }
        }
        check(&d, &truth, 0.05);
        assert!(d.peak_len() <= d.entries_bound().unwrap());
        // Each of the 8 keys has ~6.25% and is hot; nothing else is.
        assert_eq!(d.hot_len(), 8);
        assert_eq!(d.report(0.05, ReportRule::Tight).len(), 8);
        let share = d.top_share(8);
        assert!((0.45..=0.5).contains(&share), "{share}");
    }

    #[test]
    fn weighted_counts_weight() {
        let mut d = LossyCounter::new(&params(Algo::LossyWeighted, 0.2, 0.02)).unwrap();
        let mut truth = HashMap::new();
        for i in 0..10_000u64 {
            let (k, w) = if i % 10 == 0 {
                (b"big".to_vec(), 1000)
            } else {
                (format!("s{}", i % 997).into_bytes(), 10)
            };
            d.observe(&k, w);
            *truth.entry(k).or_insert(0) += w;
        }
        check(&d, &truth, 0.2);
        assert_eq!(d.totals().weight, 1000 * 1000 + 9000 * 10);
        let rep = d.report(0.2, ReportRule::Tight);
        assert_eq!(rep.len(), 1);
        assert_eq!(rep[0].key, b"big");
        // Zero weight counts nothing.
        let before = d.totals();
        d.observe(b"zero", 0);
        assert_eq!(d.totals(), before);
        assert!(d.estimate(b"zero").is_none());
    }

    #[test]
    fn heat_changes_are_reported() {
        let mut d = LossyCounter::new(&params(Algo::Lossy, 0.1, 0.01)).unwrap();
        for i in 0..10_000u64 {
            d.observe(format!("cold{i}").as_bytes(), 1);
            if i % 4 == 0 {
                d.observe(b"hot", 1);
            }
        }
        assert_eq!(d.heat(b"hot"), Heat::Hot);
        let mut ch = Vec::new();
        assert!(d.drain_changes(&mut ch));
        assert!(ch.iter().any(|c| c.key == b"hot" && c.to == Heat::Hot));
        // Starve it: it cools down as its share falls under s and then s/4.
        for i in 0..200_000u64 {
            d.observe(format!("x{i}").as_bytes(), 1);
        }
        assert_eq!(d.heat(b"hot"), Heat::Cold);
        ch.clear();
        d.drain_changes(&mut ch);
        assert!(ch.iter().any(|c| c.key == b"hot" && c.to == Heat::Cold));
        assert_eq!(d.hot_len(), 0);
    }

    #[test]
    fn decayed_tumbling_window_follows_drift() {
        let mut p = params(Algo::LossyDecayed, 0.1, 0.01);
        p.min_requests = Some(100);
        let mut d = LossyCounter::new(&p).unwrap();
        let epoch = |d: &mut LossyCounter, hot: &[u8]| {
            for i in 0..10_000u64 {
                if i % 3 == 0 {
                    d.observe(hot, 1);
                } else {
                    d.observe(format!("c{}", i % 5000).as_bytes(), 1);
                }
            }
        };
        epoch(&mut d, b"A");
        assert_eq!(d.heat(b"A"), Heat::Hot);
        d.rotate();
        // The window restarted; A stays hot through the epoch (pinned).
        assert_eq!(d.window().requests, 0);
        assert_eq!(d.heat(b"A"), Heat::Hot);
        epoch(&mut d, b"B");
        assert_eq!(d.heat(b"B"), Heat::Hot, "promoted within the epoch");
        assert_eq!(d.heat(b"A"), Heat::Hot, "held until the rotation");
        d.rotate();
        assert_eq!(d.heat(b"A"), Heat::Cold);
        assert_eq!(d.heat(b"B"), Heat::Hot);
        assert_eq!(d.hot_items().len(), 1);
    }

    #[test]
    fn decayed_halving_keeps_the_bracket() {
        let mut p = params(Algo::LossyDecayed, 0.1, 0.01);
        p.keep = 0.5;
        let mut d = LossyCounter::new(&p).unwrap();
        // Exact decayed counts, as f64.
        let mut truth: HashMap<Vec<u8>, f64> = HashMap::new();
        for ep in 0..6u64 {
            for i in 0..5000u64 {
                let k = format!("k{}", (i * (ep + 1)) % 37 + (i % 3) * 50).into_bytes();
                d.observe(&k, 1);
                *truth.entry(k).or_insert(0.0) += 1.0;
            }
            for (k, &t) in &truth {
                if let Some(e) = d.estimate(k) {
                    assert!(e.estimate as f64 <= t + 1e-9, "{k:?} {e:?} {t}");
                    assert!(
                        (e.estimate + e.max_error) as f64 >= t - 1e-9,
                        "{k:?} {e:?} {t}"
                    );
                } else {
                    assert!(t <= d.error() * d.window().weight as f64 + 1.0);
                }
            }
            d.rotate();
            for v in truth.values_mut() {
                *v *= 0.5;
            }
        }
    }

    #[test]
    fn tick_rotates_on_the_callers_clock() {
        let mut p = params(Algo::LossyDecayed, 0.1, 0.01);
        p.epoch = Duration::from_millis(100);
        let mut d = LossyCounter::new(&p).unwrap();
        let ms = |m: u64| Instant::from_nanos(m * 1_000_000);
        assert!(!d.tick(ms(5)));
        d.observe(b"a", 1);
        assert!(!d.tick(ms(104)));
        assert!(d.tick(ms(105)));
        assert_eq!(d.window().requests, 0);
        // Missed epochs are caught up in one rotation; the schedule stays aligned.
        d.observe(b"a", 1);
        assert!(d.tick(ms(431)));
        d.observe(b"a", 1);
        assert!(!d.tick(ms(504)));
        assert!(d.tick(ms(505)));
        // Landmark detectors ignore ticks.
        let mut l = LossyCounter::new(&params(Algo::Lossy, 0.1, 0.01)).unwrap();
        assert!(!l.tick(ms(0)));
        assert!(!l.tick(ms(10_000)));
    }

    #[test]
    fn thin_traffic_stretches_the_window_until_it_can_judge() {
        let mut p = params(Algo::LossyDecayed, 0.1, 0.01);
        p.epoch = Duration::from_millis(100);
        p.min_requests = Some(100);
        let mut d = LossyCounter::new(&p).unwrap();
        let ms = |m: u64| Instant::from_nanos(m * 1_000_000);
        assert!(!d.tick(ms(0)));
        // 30 requests per epoch, half of them for "hot": no epoch alone reaches 100.
        let mut epoch = 0;
        let mut t = 0;
        while d.heat(b"hot") != Heat::Hot {
            for i in 0..30 {
                let key = if i % 2 == 0 {
                    b"hot".to_vec()
                } else {
                    format!("c{i}").into_bytes()
                };
                d.observe(&key, 1);
            }
            epoch += 1;
            t += 100;
            d.tick(ms(t));
            assert!(epoch < 10, "never turned hot");
        }
        // Hot once the stretched window held enough requests (4 epochs of 30 ≥ 100), not
        // after the first epoch, and the window ended there.
        assert_eq!(epoch, 4);
        assert!(d.hot_items().iter().any(|h| h.key == b"hot"));
        // A window with no traffic at all ends after MAX_STRETCH epochs, cooling the key.
        for _ in 0..MAX_STRETCH + 1 {
            t += 100;
            d.tick(ms(t));
        }
        assert_eq!(d.heat(b"hot"), Heat::Cold);
    }

    #[test]
    fn budget_raises_and_lowers_error() {
        let mut p = params(Algo::LossyDecayed, 0.1, 0.001);
        p.max_entries = Some(300);
        let mut d = LossyCounter::new(&p).unwrap();
        for i in 0..50_000u64 {
            d.observe(format!("u{i}").as_bytes(), 1);
            if i % 4 == 0 {
                d.observe(b"hot", 1);
            }
        }
        assert!(d.error() > 0.001);
        assert!(d.error() <= 0.05);
        assert_eq!(d.heat(b"hot"), Heat::Hot);
        // A quiet epoch lets ε come back down.
        for _ in 0..6 {
            d.rotate();
            for _ in 0..1000 {
                d.observe(b"hot", 1);
            }
        }
        assert_eq!(d.error(), 0.001);
    }

    #[test]
    fn harmonic_numbers() {
        assert_eq!(harmonic(0), 0.0);
        assert_eq!(harmonic(1), 1.0);
        assert!((harmonic(4) - 25.0 / 12.0).abs() < 1e-12);
        assert!((harmonic(5000) - harmonic(4096) - (5000f64 / 4096.0).ln()).abs() < 1e-3);
    }
}
