//! Space-Saving (Metwally, Agrawal, El Abbadi, "Efficient Computation of Frequent and Top-k
//! Elements in Data Streams", ICDT 2005) with its Stream-Summary: the baseline the lossy
//! counting family has to beat.
//!
//! `m = ⌈1/ε⌉` counters. A tracked key's counter grows by its weight; an untracked key
//! takes over a counter with the minimum value `min`, starting at `min + w` with error
//! `min`. Each counter's `count − err ≤ true ≤ count`, and `err ≤ min ≤ W/m ≤ εW`, so every
//! key with `true ≥ s·W > min` holds a counter and is reported by `count ≥ sW` (Tight) or
//! `count − err ≥ (s − ε)W` (Classic).
//!
//! Stream-Summary: counters with equal values share a bucket; buckets form a list sorted
//! by value, so the minimum is the list head and a unit increment moves a counter to the
//! next bucket (or turns its bucket into the next value when it is alone): O(1) per
//! request. A weight above 1 walks forward over the buckets with smaller values, so
//! weighted updates cost O(buckets passed).

use std::mem::size_of;

use super::heat::{report_items, HeatBook, Tracked};
use super::keys::{KeyTable, Probe, Slot, NIL};
use super::{
    share_of_top, threshold, Algo, Detector, DetectorParams, Estimate, Heat, HeatChange,
    HeatLevels, HotItem, HotkeyError, ReportRule, Weight, Window, MAX_WEIGHT,
};
use crate::clock::Instant;
use crate::keyhash::KeyHash;

#[derive(Clone, Copy, Debug)]
struct Counter {
    count: u64,
    err: u64,
    bucket: u32,
    prev: u32,
    next: u32,
    list_pos: u32,
    heat: Heat,
}

impl Default for Counter {
    fn default() -> Self {
        Counter {
            count: 0,
            err: 0,
            bucket: NIL,
            prev: NIL,
            next: NIL,
            list_pos: 0,
            heat: Heat::Cold,
        }
    }
}

impl Tracked for Counter {
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

#[derive(Clone, Copy, Debug)]
struct Bucket {
    value: u64,
    /// First counter in this bucket.
    head: u32,
    prev: u32,
    next: u32,
}

/// The Space-Saving detector (`space-saving`).
#[derive(Debug)]
pub struct SpaceSaving {
    support: f64,
    warm: f64,
    eps: f64,
    rule: ReportRule,
    weighted: bool,
    capacity: usize,
    table: KeyTable<Counter>,
    buckets: Vec<Bucket>,
    free_buckets: Vec<u32>,
    /// Bucket with the smallest value.
    first: u32,
    n: u64,
    w: u64,
    book: HeatBook,
    levels: HeatLevels,
    hysteresis: f64,
    refresh_period: u64,
    next_refresh: u64,
    min_n: u64,
}

impl SpaceSaving {
    pub fn new(params: &DetectorParams) -> Result<Self, HotkeyError> {
        params.validate()?;
        if params.algo != Algo::SpaceSaving {
            return Err(HotkeyError::BadParam {
                name: "algo",
                value: params.algo.name().into(),
                reason: "not space-saving",
            });
        }
        let capacity = (1.0 / params.error).ceil() as usize;
        let period = (1.0 / params.error).ceil() as u64;
        Ok(SpaceSaving {
            support: params.support,
            warm: params.support * params.warm_fraction,
            eps: params.error,
            rule: params.rule,
            weighted: params.algo.weighted(),
            capacity,
            table: KeyTable::new(params.seed, capacity),
            buckets: Vec::with_capacity(capacity),
            free_buckets: Vec::new(),
            first: NIL,
            n: 0,
            w: 0,
            book: HeatBook::default(),
            levels: HeatLevels::NEVER,
            hysteresis: params.hysteresis,
            refresh_period: period,
            next_refresh: 1,
            min_n: params.effective_min_requests(),
        })
    }

    /// A Space-Saving detector that counts weights (not a `--hotkey-algo` of its own: the
    /// experiments compare it with `lossy-weighted`).
    pub fn new_weighted(params: &DetectorParams) -> Result<Self, HotkeyError> {
        let mut p = params.clone();
        p.algo = Algo::SpaceSaving;
        let mut d = SpaceSaving::new(&p)?;
        d.weighted = true;
        Ok(d)
    }

    fn score(rule: ReportRule, c: &Counter) -> u64 {
        match rule {
            ReportRule::Tight => c.count,
            ReportRule::Classic => c.count - c.err,
        }
    }

    fn thresholds(&self, support: f64, warm: f64, rule: ReportRule) -> (u64, u64) {
        match rule {
            ReportRule::Tight => (threshold(support, self.w), threshold(warm, self.w)),
            ReportRule::Classic => (
                threshold(support - self.eps, self.w),
                threshold((warm - self.eps).max(self.eps), self.w),
            ),
        }
    }

    fn item(&self, i: u32) -> HotItem {
        let s = &self.table.slots[i as usize];
        HotItem {
            key: s.key.to_vec(),
            estimate: s.p.count - s.p.err,
            max_error: s.p.err,
        }
    }

    fn new_bucket(&mut self, value: u64, after: u32) -> u32 {
        let next = if after == NIL {
            self.first
        } else {
            self.buckets[after as usize].next
        };
        let b = Bucket {
            value,
            head: NIL,
            prev: after,
            next,
        };
        let id = match self.free_buckets.pop() {
            Some(id) => {
                self.buckets[id as usize] = b;
                id
            }
            None => {
                self.buckets.push(b);
                (self.buckets.len() - 1) as u32
            }
        };
        if after == NIL {
            self.first = id;
        } else {
            self.buckets[after as usize].next = id;
        }
        if next != NIL {
            self.buckets[next as usize].prev = id;
        }
        id
    }

    fn remove_bucket(&mut self, b: u32) {
        let Bucket { prev, next, .. } = self.buckets[b as usize];
        if prev == NIL {
            self.first = next;
        } else {
            self.buckets[prev as usize].next = next;
        }
        if next != NIL {
            self.buckets[next as usize].prev = prev;
        }
        self.free_buckets.push(b);
    }

    fn attach(&mut self, c: u32, b: u32) {
        let head = self.buckets[b as usize].head;
        {
            let e = &mut self.table.slots[c as usize].p;
            e.bucket = b;
            e.prev = NIL;
            e.next = head;
        }
        if head != NIL {
            self.table.slots[head as usize].p.prev = c;
        }
        self.buckets[b as usize].head = c;
    }

    fn detach(&mut self, c: u32) {
        let Counter {
            bucket, prev, next, ..
        } = self.table.slots[c as usize].p;
        if prev == NIL {
            self.buckets[bucket as usize].head = next;
        } else {
            self.table.slots[prev as usize].p.next = next;
        }
        if next != NIL {
            self.table.slots[next as usize].p.prev = prev;
        }
    }

    /// Adds `d ≥ 1` to counter `c`, keeping the buckets sorted.
    fn bump(&mut self, c: u32, d: u64) {
        let b = self.table.slots[c as usize].p.bucket;
        let target = self.buckets[b as usize].value.saturating_add(d);
        let mut cur = b;
        loop {
            let nx = self.buckets[cur as usize].next;
            if nx != NIL && self.buckets[nx as usize].value <= target {
                cur = nx;
            } else {
                break;
            }
        }
        let e = self.table.slots[c as usize].p;
        if cur == b && self.buckets[b as usize].head == c && e.next == NIL {
            // Alone in its bucket and no bucket in between: relabel the bucket.
            self.buckets[b as usize].value = target;
        } else {
            self.detach(c);
            if self.buckets[cur as usize].value == target {
                self.attach(c, cur);
            } else {
                let nb = self.new_bucket(target, cur);
                self.attach(c, nb);
            }
            if self.buckets[b as usize].head == NIL {
                self.remove_bucket(b);
            }
        }
        self.table.slots[c as usize].p.count = target;
    }

    fn refresh(&mut self) {
        // Refresh every 1/ε requests, more often while the stream is young (see lossy.rs).
        let step = (self.n / 16).clamp(1, self.refresh_period.max(1));
        self.next_refresh = self.n.saturating_add(step);
        let (hot, warm) = self.thresholds(self.support, self.warm, self.rule);
        self.levels = HeatLevels::new(hot, warm, self.hysteresis);
        let (rule, levels) = (self.rule, self.levels);
        let classify = |s: &Slot<Counter>| {
            let h = levels.classify(Self::score(rule, &s.p), s.p.heat);
            (h, s.p.count - s.p.err)
        };
        self.book.rescan(&mut self.table.slots, Heat::Hot, classify);
        self.book
            .rescan(&mut self.table.slots, Heat::Warm, classify);
    }

    fn promote(&mut self, i: u32) -> Heat {
        let e = &self.table.slots[i as usize].p;
        let heat = e.heat;
        if heat == Heat::Hot || self.n < self.min_n {
            return heat;
        }
        let to = self.levels.classify(Self::score(self.rule, e), heat);
        if to <= heat {
            return heat;
        }
        let est = e.count - e.err;
        self.book.set(&mut self.table.slots, i, to, est);
        to
    }

    #[cfg(test)]
    fn check_summary(&self) {
        // Buckets strictly increasing; every counter's count equals its bucket's value.
        let mut b = self.first;
        let mut prev_value = None;
        let mut counters = 0;
        while b != NIL {
            let bk = self.buckets[b as usize];
            assert!(prev_value.is_none_or(|p| p < bk.value));
            assert_ne!(bk.head, NIL, "empty bucket kept");
            prev_value = Some(bk.value);
            let mut c = bk.head;
            while c != NIL {
                let e = self.table.slots[c as usize].p;
                assert_eq!(e.bucket, b);
                assert_eq!(e.count, bk.value);
                assert!(e.err <= e.count);
                counters += 1;
                c = e.next;
            }
            b = bk.next;
        }
        assert_eq!(counters, self.table.len());
    }
}

impl SpaceSaving {
    #[inline]
    /// Counts one request for the probed key (see [`Detector::observe`]).
    fn observe_probe(&mut self, probe: &Probe<'_>, weight: Weight) -> Heat {
        let d = if self.weighted {
            weight.min(MAX_WEIGHT)
        } else {
            1
        };
        if d == 0 {
            return self.heat_probe(probe);
        }
        self.n += 1;
        self.w = self.w.saturating_add(d);
        let i = match self.table.find(probe) {
            Some(i) => i,
            None if self.table.len() < self.capacity => {
                let (i, _) = self.table.find_or_insert(probe);
                let first = self.first;
                if first != NIL && self.buckets[first as usize].value == 0 {
                    self.attach(i, first);
                } else {
                    let b = self.new_bucket(0, NIL);
                    self.attach(i, b);
                }
                i
            }
            None => {
                // Take over a counter with the minimum value.
                let first = self.first;
                let victim = self.buckets[first as usize].head;
                let min = self.buckets[first as usize].value;
                if self.table.slots[victim as usize].p.heat != Heat::Cold {
                    let e = self.table.slots[victim as usize].p;
                    self.book
                        .set(&mut self.table.slots, victim, Heat::Cold, e.count - e.err);
                }
                self.table.rekey(victim, probe);
                self.table.slots[victim as usize].p.err = min;
                victim
            }
        };
        self.bump(i, d);
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

impl Detector for SpaceSaving {
    fn algo(&self) -> Algo {
        Algo::SpaceSaving
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
        self.table.find(&self.table.probe(key)).map(|i| {
            let e = &self.table.slots[i as usize].p;
            Estimate {
                estimate: e.count - e.err,
                max_error: e.err,
            }
        })
    }

    fn tick(&mut self, _now: Instant) -> bool {
        false
    }

    fn rotate(&mut self) {}

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
        let values = self
            .table
            .live_indices()
            .map(|i| {
                let e = &self.table.slots[i as usize].p;
                e.count - e.err
            })
            .collect();
        share_of_top(values, k, self.w)
    }

    fn window(&self) -> Window {
        Window {
            requests: self.n,
            weight: self.w,
        }
    }

    fn totals(&self) -> Window {
        self.window()
    }

    fn len(&self) -> usize {
        self.table.len()
    }

    fn peak_len(&self) -> usize {
        self.table.peak()
    }

    fn entries_bound(&self) -> Option<usize> {
        Some(self.capacity)
    }

    fn memory_bytes(&self) -> usize {
        self.table.memory_bytes()
            + self.buckets.capacity() * size_of::<Bucket>()
            + self.free_buckets.capacity() * 4
            + self.book.memory_bytes()
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

    fn ss(s: f64, e: f64) -> SpaceSaving {
        let mut p = DetectorParams::new(Algo::SpaceSaving, s, e);
        p.min_requests = Some(1);
        SpaceSaving::new(&p).unwrap()
    }

    #[test]
    fn stream_summary_by_hand() {
        let mut d = ss(0.5, 0.34); // 3 counters
        for k in [b"a", b"b", b"a", b"c", b"d"] {
            d.observe(k, 1);
            d.check_summary();
        }
        // d replaced b or c (value 1): count 2, err 1.
        let e = d.estimate(b"d").unwrap();
        assert_eq!(
            e,
            Estimate {
                estimate: 1,
                max_error: 1
            }
        );
        assert_eq!(d.estimate(b"a").unwrap().estimate, 2);
        assert_eq!(d.len(), 3);
    }

    #[test]
    fn guarantees_and_weights() {
        for weighted in [false, true] {
            let mut p = DetectorParams::new(Algo::SpaceSaving, 0.05, 0.01);
            p.min_requests = Some(1);
            let mut d = if weighted {
                SpaceSaving::new_weighted(&p).unwrap()
            } else {
                SpaceSaving::new(&p).unwrap()
            };
            let mut truth: HashMap<Vec<u8>, u64> = HashMap::new();
            let mut x = 99u64;
            for i in 0..50_000u64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let k = if i % 3 == 0 { x % 5 } else { 10 + x % 20_000 };
                let w = if weighted { 1 + x % 7 } else { 1 };
                let key = format!("k{k}").into_bytes();
                d.observe(&key, w);
                *truth.entry(key).or_insert(0) += w;
                if i % 4999 == 0 {
                    d.check_summary();
                }
            }
            d.check_summary();
            let w = d.window().weight;
            assert_eq!(w, truth.values().sum::<u64>());
            for (k, &t) in &truth {
                if let Some(e) = d.estimate(k) {
                    assert!(e.estimate <= t && t <= e.estimate + e.max_error);
                    assert!(e.max_error as f64 <= 0.01 * w as f64);
                }
                if t as f64 >= 0.05 * w as f64 {
                    for rule in [ReportRule::Tight, ReportRule::Classic] {
                        assert!(d.report(0.05, rule).iter().any(|i| &i.key == k));
                    }
                    assert_eq!(d.heat(k), Heat::Hot);
                }
            }
            assert_eq!(d.len(), 100);
            assert_eq!(d.hot_len(), 5);
        }
    }
}
