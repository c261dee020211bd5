//! Sampled detection: exact below a request rate, sampled above it, with a stated miss
//! bound.
//!
//! [`Sampled`] wraps any [`Detector`]. While the request rate measured over the previous
//! epoch is at most `--detect-sample-above` (`R`, requests/s; 0 turns sampling off) it
//! passes every request on: the wrapped detector sees exactly the stream it would see
//! alone, bit for bit, so the demo, the tests and low-rate deployments keep the exact
//! lossy-counting guarantees. Above `R` each request is sampled independently with
//! probability `p = R / rate` (the epoch's expected sample is `T = R·E` requests for an
//! epoch of length `E`, whatever the rate; `p` is continuous at `R`, so the switch does
//! not jump). Sampling uses a geometric skip counter (as NitroSketch and DPDK's
//! `rte_member` do): after each sampled request it draws how many requests to skip,
//! `G = ⌊ln U / ln(1 − p)⌋` with `U` uniform in `(0, 1]` from a seeded PRNG, so an
//! unsampled request costs a compare and a decrement (plus the heat read below) and no
//! random number. No clocks: the rate comes from the requests counted between the
//! caller's [`Detector::tick`]s, so the same inputs give the same outputs.
//!
//! # Epochs and changes of p
//! The sampler's epoch is the detector's (`--hot-epoch`), started by the same first tick,
//! and `p` changes only when an epoch ends: for `lossy-decayed` (tumbling windows, kvlb's
//! default) that is the tick at which the detector rotates, so every window is counted at
//! one `p`. (When thin traffic stretches a window over several epochs, `p` may change
//! inside it; each part is then weighted by its `p`, see below.) On a change the pending
//! skip is redrawn with the new `p` (the geometric law is memoryless, so every later
//! request is still sampled independently with the new `p`); going back to `p = 1` clears
//! it, so the next request is counted. Landmark detectors (`lossy`, `lossy-weighted`,
//! `space-saving`) count across epochs: their window then holds each epoch's requests
//! weighted by that epoch's `p`, i.e. every sampled epoch carries about `T` requests, and
//! their guarantees hold for that reweighted stream.
//!
//! # Thresholds on the sample
//! The wrapped detector counts sampled requests only, so its window `N` is the sample
//! size `M` and every share it judges is a share of the sample: its deterministic bracket
//! (`f ≤ X ≤ f + Δ`, `Δ ≤ εM`, no false negatives) holds for the sampled counts `X`. Its
//! support is lowered while it samples, from `s` to `s − δ` with `δ = min(ε, (s − ε)/2)`
//! (ε = s/10 by default, so `δ = ε`): the margin absorbs the sampling noise of keys at
//! the threshold, whose sampled share is above `s − δ` with high probability but above
//! `s` only half of the time. Back at `p = 1` the support returns to `s`.
//!
//! # The miss bound
//! Take an epoch of `N` requests in which key `x` has `c = σN` of them, `σ ≥ s`, each
//! request sampled independently with probability `p`, and `T = pN`. Its sampled count
//! `X ~ Bin(c, p)` and the others' `Y ~ Bin(N − c, p)` are independent, `M = X + Y`. The
//! detector has no false negatives on the sample, so `x` is missed (not hot at the
//! epoch's end) only if `X < (s − δ)·M`, i.e. `Z = (1 − s + δ)·X − (s − δ)·Y < 0`. `Z` is
//! a sum of `N` independent terms, each within 1 of its mean, with
//! - `E[Z] = p·(c − (s − δ)·N) = T·(σ − s + δ) ≥ T·δ`,
//! - `Var[Z] = p(1 − p)·(c·(1 − s')² + (N − c)·s'²)`, `s' = s − δ`.
//!
//! Bernstein's inequality, `P(Z − E[Z] ≤ −t) ≤ exp(−t² / (2·Var[Z] + 2t/3))`, with
//! `t = E[Z]` gives a bound that decreases as `σ` grows above `s` (for `s' < 1/2`), so its
//! value at `σ = s` bounds every key with share at least `s`:
//!
//! ```text
//! P(miss) ≤ exp( −T·δ² / (2(1 − p)·(s(1 − s) + δ²) + 2δ/3) )
//! ```
//!
//! (`s(1 − s) + δ² = s(1 − s')² + (1 − s)·s'²` is the per-request variance factor at
//! `σ = s`.)
//!
//! Worked numbers, `s = 1/128`, `δ = ε = s/10`, `p ≪ 1`: `T = 10⁵` sampled requests per
//! epoch gives `P(miss) ≤ exp(−3.8) = 0.022` per hot key and epoch; `T = 5·10⁵` (the
//! default `R = 5·10⁵/s` with 1 s epochs) gives `exp(−19) ≈ 5·10⁻⁹`; `T = 10⁶` gives
//! `exp(−38)`. [`miss_bound`] computes it; `kvlb lc-experiments --only sampled` checks it on
//! held-out Zipf streams (`docs/lc-experiments/`). Precision pays for the margin: keys
//! with share a little under `s` (down to about `s − 2δ`) may be reported, as under the
//! Classic rule. Keys that are already hot stay hot down to `1 − hysteresis` of the
//! threshold, which only lowers the miss probability further.
//!
//! # Heat of unsampled requests
//! The core reads the returned [`Heat`] of every GET (to balance and learn hot and warm
//! keys), so an unsampled request returns the key's heat as the wrapped detector knows it,
//! never a guess. Probing the detector's table for every unsampled request would cost a
//! cache miss per request (the table holds `O((1/ε)·log(εN))` entries, most of them cold
//! keys), so while sampling the wrapper keeps a 4 KiB bitset of the keys that may be hot
//! or warm, indexed by a hash of the key: an unsampled request whose bit is clear is
//! cold (one hash and one L1 read); only the others probe the table
//! ([`Detector::heat`]). The filter has no false negatives: a key leaves "cold" only when
//! the detector counts it (the sampled `observe` returns its heat, and the wrapper sets
//! its bit) or at a rotation (the wrapper rebuilds the bitset from the hot and warm lists
//! after every rotation while sampling, and when sampling starts). Threshold changes and
//! refreshes only demote keys or move them between hot and warm. Bits of keys that cooled
//! stay set until the next rebuild, which costs them a probe, never a wrong answer.
//!
//! Measured: `kvlb lc-experiments --only sampled` feeds `lossy-decayed` 7.0 M requests/s
//! exact and 23.0 M/s at p = 0.025 (Zipf 0.99, 10⁶ keys; with a plain [`Detector::heat`]
//! probe per unsampled request instead of the bitset it was 16.9 M/s against 8.7 M/s exact
//! in an earlier quick run). In the whole core (`benches/core.rs`, Zipf 0.99, p = 0.5 at its
//! 10⁶ requests/s, cachegrind, 30 passes, `CORE_BENCH_SAMPLE_ABOVE` 0 vs 500000) sampling
//! saved about 107 instructions and 2.4 D1 misses per request of the sampled phase, a few
//! percent of the core's cost; wall-clock runs of `scripts/bench-core.sh` on this loaded
//! 2-CPU machine moved by more than that between identical runs.

use std::time::Duration;

use super::{
    Algo, Detector, DetectorParams, Estimate, Heat, HeatChange, HotItem, ReportRule, Weight, Window,
};
use crate::clock::Instant;
use crate::keyhash::{KeyHash, KeyHasher};
use crate::random::Rng;

/// The largest skip drawn at once (the rate is re-measured long before it runs out).
const MAX_SKIP: u64 = 1 << 40;

/// Bits in the may-be-hot-or-warm filter (a power of two; 4 KiB).
const FILTER_BITS: usize = 1 << 15;

/// The sampling margin δ for support `s` and error `ε`: `min(ε, (s − ε)/2)`.
pub fn sample_margin(support: f64, error: f64) -> f64 {
    error.min((support - error) / 2.0).max(0.0)
}

/// The miss bound above: the probability that a key with share at least `support` in an
/// epoch is not reported when `sample` requests (`T = pN`) are sampled with probability
/// `p` and the detector reports sampled shares at or above `support − margin`.
pub fn miss_bound(support: f64, margin: f64, sample: f64, p: f64) -> f64 {
    if p >= 1.0 {
        return 0.0; // exact: no false negatives
    }
    if margin <= 0.0 || sample <= 0.0 {
        return 1.0;
    }
    let v = support * (1.0 - support) + margin * margin;
    let exponent = sample * margin * margin / (2.0 * (1.0 - p) * v + 2.0 * margin / 3.0);
    (-exponent).exp().min(1.0)
}

/// A detector that sees every request below a request rate and a sample above it (see the
/// module documentation).
#[derive(Debug)]
pub struct Sampled<D> {
    inner: D,
    /// Requests left to skip before the next sampled one.
    skip: u64,
    /// Sampling probability in force (1: every request).
    p: f64,
    /// `ln(1 − p)` for the geometric draws (unused at `p = 1`).
    ln_q: f64,
    rng: Rng,
    /// Requests accounted for: each sampled request adds itself and the skip drawn after
    /// it, so `issued − skip` requests have been offered (no count on the unsampled path).
    issued: u64,
    sampled: u64,
    /// Sampling rate threshold R (requests/s; 0: never sample).
    above: u64,
    epoch_ns: u64,
    support: f64,
    sampled_support: f64,
    /// The sampler's epoch clock: when the current epoch ends, when it began, and the
    /// requests offered before it.
    next_epoch: Option<Instant>,
    epoch_start: Instant,
    seen_mark: u64,
    /// Requests offered in the last completed epoch, per second.
    last_rate: f64,
    /// While sampling: a bit per hash bucket, set for every key that may be hot or warm
    /// (see "Heat of unsampled requests").
    maybe: Vec<u64>,
    /// The key hash every table of the wrapped detector indexes by (same seed).
    hasher: KeyHasher,
}

/// The filter word and bit of a key with hash `hash`: the hash's top bits (the wrapped
/// detector's tables index by its low bits).
#[inline]
fn filter_bit(hash: KeyHash) -> (usize, u64) {
    let i = (hash.raw() >> (64 - FILTER_BITS.trailing_zeros())) as usize;
    (i >> 6, 1 << (i & 63))
}

impl<D: Detector> Sampled<D> {
    /// Wraps `inner` (built from the same `params`: its tables hash with `params.seed`), sampling above `params.sample_above` requests/s with epochs of
    /// `params.epoch` and the PRNG seeded from `params.seed`.
    pub fn new(inner: D, params: &DetectorParams) -> Self {
        let support = inner.support();
        let margin = sample_margin(params.support, params.error);
        Sampled {
            inner,
            skip: 0,
            p: 1.0,
            ln_q: 0.0,
            rng: Rng::new(params.seed ^ 0x5a4d_504c_4552_2121),
            issued: 0,
            sampled: 0,
            above: params.sample_above,
            epoch_ns: u64::try_from(params.epoch.as_nanos())
                .unwrap_or(u64::MAX)
                .max(1),
            support,
            sampled_support: support - margin,
            next_epoch: None,
            epoch_start: Instant::from_nanos(0),
            seen_mark: 0,
            last_rate: 0.0,
            maybe: vec![0; FILTER_BITS / 64],
            hasher: KeyHasher::new(params.seed),
        }
    }

    /// The filter word and bit of `key`.
    #[inline]
    fn filter_bit(&self, key: &[u8]) -> (usize, u64) {
        filter_bit(self.hasher.hash(key))
    }

    /// The heat of a key that is not counted: cold if its filter bit is clear (valid while
    /// sampling), else the wrapped detector's.
    #[inline]
    fn unsampled_heat(&self, key: &[u8], hash: KeyHash) -> Heat {
        let (w, b) = filter_bit(hash);
        if self.maybe[w] & b == 0 {
            return Heat::Cold;
        }
        self.inner.heat_hashed(key, hash)
    }

    /// [`Detector::observe`] with the key's hash (one hash for the filter and every table).
    #[inline]
    fn observe_with(&mut self, key: &[u8], hash: KeyHash, weight: Weight) -> Heat {
        if self.skip != 0 {
            // Only while sampling (p < 1).
            self.skip -= 1;
            return self.unsampled_heat(key, hash);
        }
        let g = self.gap();
        self.skip = g;
        self.issued = self.issued.saturating_add(g + 1);
        self.sampled += 1;
        let heat = self.inner.observe_hashed(key, hash, weight);
        if heat != Heat::Cold && self.p < 1.0 {
            let (w, b) = filter_bit(hash);
            self.maybe[w] |= b;
        }
        heat
    }

    /// Rebuilds the filter from the wrapped detector's hot and warm keys.
    fn rebuild_filter(&mut self) {
        self.maybe.fill(0);
        for item in self
            .inner
            .hot_items()
            .into_iter()
            .chain(self.inner.warm_items())
        {
            let (w, b) = self.filter_bit(&item.key);
            self.maybe[w] |= b;
        }
    }

    /// The wrapped detector.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// The sampling probability in force (1 while exact).
    pub fn probability(&self) -> f64 {
        self.p
    }

    /// Requests offered to [`Detector::observe`] since construction.
    pub fn seen(&self) -> u64 {
        self.issued - self.skip
    }

    /// Requests the wrapped detector counted since construction.
    pub fn sampled(&self) -> u64 {
        self.sampled
    }

    /// The request rate measured over the last completed epoch (requests/s).
    pub fn rate(&self) -> f64 {
        self.last_rate
    }

    /// The support the wrapped detector uses while sampling (`s − δ`).
    pub fn sampled_support(&self) -> f64 {
        self.sampled_support
    }

    /// Requests to skip after a sampled one.
    #[inline]
    fn gap(&mut self) -> u64 {
        if self.p >= 1.0 {
            return 0;
        }
        let u = 1.0 - self.rng.next_f64(); // (0, 1]
        let g = u.ln() / self.ln_q;
        if g >= MAX_SKIP as f64 {
            MAX_SKIP
        } else {
            g as u64
        }
    }

    /// Sets the sampling probability for the coming epoch.
    fn set_probability(&mut self, p: f64) {
        if p == self.p {
            return;
        }
        let was_exact = self.p >= 1.0;
        self.p = p;
        self.ln_q = if p < 1.0 { (1.0 - p).ln() } else { 0.0 };
        // Redraw the pending skip with the new p (memoryless), keeping `seen` unchanged.
        self.issued -= self.skip;
        self.skip = self.gap();
        self.issued += self.skip;
        let exact = p >= 1.0;
        if exact != was_exact {
            let support = if exact {
                self.support
            } else {
                self.sampled_support
            };
            self.inner.set_support(support);
            if exact {
                log::info!(
                    "hot-key detection exact again: {:.0} requests/s ≤ {}",
                    self.last_rate,
                    self.above
                );
            } else {
                log::info!(
                    "hot-key detection sampled: {:.0} requests/s > {}, p = {:.4}, support on the sample {}",
                    self.last_rate,
                    self.above,
                    p,
                    support
                );
            }
        } else {
            log::debug!(
                "hot-key sampling p = {p:.4} ({:.0} requests/s)",
                self.last_rate
            );
        }
    }
}

impl<D: Detector> Detector for Sampled<D> {
    fn algo(&self) -> Algo {
        self.inner.algo()
    }

    #[inline]
    fn observe(&mut self, key: &[u8], weight: Weight) -> Heat {
        let hash = self.hasher.hash(key);
        self.observe_with(key, hash, weight)
    }

    #[inline]
    fn observe_hashed(&mut self, key: &[u8], hash: KeyHash, weight: Weight) -> Heat {
        debug_assert_eq!(hash, self.hasher.hash(key), "a hash from another hasher");
        self.observe_with(key, hash, weight)
    }

    #[inline]
    fn heat(&self, key: &[u8]) -> Heat {
        self.inner.heat(key)
    }

    #[inline]
    fn heat_hashed(&self, key: &[u8], hash: KeyHash) -> Heat {
        self.inner.heat_hashed(key, hash)
    }

    fn estimate(&self, key: &[u8]) -> Option<Estimate> {
        self.inner.estimate(key)
    }

    fn tick(&mut self, now: Instant) -> bool {
        let rotated = self.inner.tick(now);
        if self.above == 0 {
            return rotated;
        }
        let was_exact = self.p >= 1.0;
        match self.next_epoch {
            None => {
                self.next_epoch = Some(now + Duration::from_nanos(self.epoch_ns));
                self.epoch_start = now;
                self.seen_mark = self.seen();
            }
            Some(t) if now >= t => {
                let seen = self.seen() - self.seen_mark;
                let elapsed = now
                    .as_nanos()
                    .saturating_sub(self.epoch_start.as_nanos())
                    .max(1);
                self.last_rate = seen as f64 * 1e9 / elapsed as f64;
                let above = self.above as f64;
                let p = if self.last_rate <= above {
                    1.0
                } else {
                    above / self.last_rate
                };
                self.set_probability(p);
                let epochs = (now.as_nanos() - t.as_nanos()) / self.epoch_ns + 1;
                self.next_epoch = Some(Instant::from_nanos(
                    t.as_nanos()
                        .saturating_add(epochs.saturating_mul(self.epoch_ns)),
                ));
                self.epoch_start = now;
                self.seen_mark = self.seen();
            }
            Some(_) => {}
        }
        if self.p < 1.0 && (rotated || was_exact) {
            self.rebuild_filter();
        }
        rotated
    }

    fn rotate(&mut self) {
        self.inner.rotate();
        if self.p < 1.0 {
            self.rebuild_filter();
        }
    }

    fn report(&self, support: f64, rule: ReportRule) -> Vec<HotItem> {
        self.inner.report(support, rule)
    }

    fn hot_items(&self) -> Vec<HotItem> {
        self.inner.hot_items()
    }

    fn warm_items(&self) -> Vec<HotItem> {
        self.inner.warm_items()
    }

    fn hot_len(&self) -> usize {
        self.inner.hot_len()
    }

    fn drain_changes(&mut self, out: &mut Vec<HeatChange>) -> bool {
        self.inner.drain_changes(out)
    }

    fn top_share(&self, k: usize) -> f64 {
        self.inner.top_share(k)
    }

    fn window(&self) -> Window {
        self.inner.window()
    }

    fn totals(&self) -> Window {
        self.inner.totals()
    }

    fn len(&self) -> usize {
        self.inner.len()
    }

    fn peak_len(&self) -> usize {
        self.inner.peak_len()
    }

    fn entries_bound(&self) -> Option<usize> {
        self.inner.entries_bound()
    }

    fn memory_bytes(&self) -> usize {
        self.inner.memory_bytes()
    }

    fn support(&self) -> f64 {
        self.inner.support()
    }

    fn set_support(&mut self, support: f64) {
        self.support = support;
        self.sampled_support = support - sample_margin(support, self.inner.error());
        self.inner.set_support(if self.p >= 1.0 {
            self.support
        } else {
            self.sampled_support
        });
    }

    fn error(&self) -> f64 {
        self.inner.error()
    }
}

#[cfg(test)]
mod tests {
    use super::super::eval::{zipf_stream, KeySpace};
    use super::super::{build, build_sampled};
    use super::*;
    use crate::random::{Rng, Zipf};
    use proptest::prelude::*;

    const EPOCH_NS: u64 = 100_000_000;

    fn params(algo: Algo, above: u64) -> DetectorParams {
        let mut p = DetectorParams::new(algo, 1.0 / 64.0, 1.0 / 640.0);
        p.epoch = Duration::from_nanos(EPOCH_NS);
        p.sample_above = above;
        p
    }

    /// Feeds `stream` at `per_epoch` requests per epoch, ticking every `per_epoch / 8`
    /// requests; returns each request's heat and the hot set after each epoch.
    fn drive<D: Detector>(
        d: &mut D,
        keys: &KeySpace,
        stream: &[u32],
        per_epoch: usize,
    ) -> (Vec<Heat>, Vec<Vec<HotItem>>) {
        let step = (per_epoch / 8).max(1);
        let mut heats = Vec::with_capacity(stream.len());
        let mut hot = Vec::new();
        d.tick(Instant::from_nanos(0));
        for (i, &k) in stream.iter().enumerate() {
            heats.push(d.observe(keys.key(k), 1));
            if (i + 1) % step == 0 {
                let t = (i as u64 + 1) * EPOCH_NS / per_epoch as u64;
                if d.tick(Instant::from_nanos(t)) {
                    hot.push(d.hot_items());
                }
            }
        }
        (heats, hot)
    }

    fn stream(seed: u64, alpha: f64, len: usize) -> (KeySpace, Vec<u32>) {
        let keys = KeySpace::new(20_000);
        let mut rng = Rng::new(seed);
        let perm = rng.permutation(keys.len());
        let z = Zipf::new(keys.len() as u64, alpha);
        let s = zipf_stream(&z, &perm, len, &mut rng);
        (keys, s)
    }

    #[test]
    fn bound_matches_the_worked_numbers() {
        let s = 1.0 / 128.0;
        let d = sample_margin(s, s / 10.0);
        assert!((d - s / 10.0).abs() < 1e-15);
        let b = miss_bound(s, d, 1e5, 0.01);
        assert!((0.02..0.025).contains(&b), "{b}");
        assert!(miss_bound(s, d, 5e5, 0.01) < 1e-8);
        assert_eq!(miss_bound(s, d, 1e5, 1.0), 0.0);
        // The margin never reaches the error's side of the support.
        assert!(s - sample_margin(s, 0.9 * s) > 0.9 * s);
    }

    #[test]
    fn geometric_skips_sample_at_p() {
        let mut d = Sampled::new(
            build(&params(Algo::Lossy, 1000)).unwrap(),
            &params(Algo::Lossy, 1000),
        );
        d.tick(Instant::from_nanos(0));
        for i in 0..100_000u64 {
            d.observe(format!("k{}", i % 100).as_bytes(), 1);
        }
        // 10^6 requests/s measured; R = 1000/s: p = 1/1000.
        d.tick(Instant::from_nanos(EPOCH_NS));
        assert!((d.probability() - 1e-3).abs() < 1e-9, "{}", d.probability());
        assert_eq!(d.seen(), 100_000);
        let before = d.sampled();
        for i in 0..2_000_000u64 {
            d.observe(format!("k{}", i % 100).as_bytes(), 1);
        }
        assert_eq!(d.seen(), 2_100_000);
        let n = (d.sampled() - before) as f64;
        // Binomial(2·10^6, 10^-3): mean 2000, sd ≈ 45.
        assert!((n - 2000.0).abs() < 250.0, "{n}");
        assert!((d.support() - d.sampled_support()).abs() < 1e-15);
        // 2·10^6 requests over the next 9 epochs: still sampled, p re-measured.
        d.tick(Instant::from_nanos(10 * EPOCH_NS));
        assert!((d.probability() - 1000.0 * 0.9 / 2e6).abs() < 1e-9);
        // An idle epoch: exact again, support restored, next request counted.
        d.tick(Instant::from_nanos(11 * EPOCH_NS));
        assert_eq!(d.probability(), 1.0);
        assert_eq!(d.support(), 1.0 / 64.0);
        let before = d.sampled();
        d.observe(b"x", 1);
        assert_eq!(d.sampled(), before + 1);
    }

    #[test]
    fn bounded_sample_per_epoch_at_high_rates() {
        for algo in [Algo::LossyDecayed, Algo::Lossy, Algo::SpaceSaving] {
            let (keys, s) = stream(7, 0.99, 400_000);
            // 40 000 requests per 100 ms epoch = 400 000/s; R = 20 000/s → T = 2000.
            let p = params(algo, 20_000);
            let mut d = build_sampled(&p).unwrap();
            let per_epoch = 40_000;
            d.tick(Instant::from_nanos(0));
            let mut last = (0u64, 0u64);
            for (e, chunk) in s.chunks(per_epoch).enumerate() {
                for &k in chunk {
                    d.observe(keys.key(k), 1);
                }
                d.tick(Instant::from_nanos((e as u64 + 1) * EPOCH_NS));
                let now = (d.seen(), d.sampled());
                let sampled = now.1 - last.1;
                if e == 0 {
                    assert_eq!(
                        sampled, per_epoch as u64,
                        "{algo}: the first epoch is exact"
                    );
                } else {
                    assert!(
                        (1700..=2300).contains(&sampled),
                        "{algo}: epoch {e} sampled {sampled}"
                    );
                }
                last = now;
            }
            assert_eq!(d.seen(), 400_000);
        }
    }

    /// Held-out Zipf streams (fresh hot keys every epoch) at a rate where sampling applies:
    /// per-epoch recall against exact counts meets the miss bound, and precision is high.
    /// (`kvlb lc-experiments --only sampled` runs the same at kvlb's s = 1/128 and 10⁶ keys.)
    #[test]
    fn held_out_zipf_recall_meets_the_bound() {
        use super::super::eval::{accuracy, exact_counts};
        let (support, error) = (1.0 / 16.0, 1.0 / 160.0);
        let keys = KeySpace::new(10_000);
        for alpha in [0.99, 1.2] {
            let mut p = DetectorParams::new(Algo::LossyDecayed, support, error);
            p.epoch = Duration::from_nanos(EPOCH_NS);
            // 200 000 requests per 100 ms epoch (2·10⁶/s); R = 2·10⁵/s: T = 20 000, p = 0.1.
            p.sample_above = 200_000;
            let per_epoch = 200_000usize;
            let mut d = build_sampled(&p).unwrap();
            let z = Zipf::new(keys.len() as u64, alpha);
            let mut rng = Rng::new(0x6865_6c64 ^ alpha.to_bits());
            let (mut hot, mut hits, mut reported, mut expected) = (0usize, 0usize, 0usize, 0.0);
            d.tick(Instant::from_nanos(0));
            for e in 0..8u64 {
                let perm = rng.permutation(keys.len());
                let ids = zipf_stream(&z, &perm, per_epoch, &mut rng);
                let sampled = d.probability();
                for (i, &k) in ids.iter().enumerate() {
                    d.observe(keys.key(k), 1);
                    if (i + 1) % (per_epoch / 4) == 0 {
                        let t = e * EPOCH_NS + (i as u64 + 1) * EPOCH_NS / per_epoch as u64;
                        d.tick(Instant::from_nanos(t));
                    }
                }
                if e == 0 {
                    assert_eq!(sampled, 1.0);
                    continue;
                }
                assert!((sampled - 0.1).abs() < 1e-9, "{sampled}");
                let counts = exact_counts(keys.len(), &ids, None);
                let acc = accuracy(&keys, &d.hot_items(), &counts, per_epoch as u64, support);
                hot += acc.true_hot;
                hits += (acc.recall * acc.true_hot as f64).round() as usize;
                reported += acc.reported;
                let m = sample_margin(support, error);
                expected += acc.true_hot as f64
                    * miss_bound(support, m, sampled * per_epoch as f64, sampled);
            }
            let misses = hot - hits;
            let precision = hits as f64 / reported.max(1) as f64;
            eprintln!(
                "α={alpha}: {hot} hot key-epochs, {misses} missed (bound: ≤ {expected:.3} \
                 expected), precision {precision:.3}"
            );
            assert!(hot >= 7, "α={alpha}: {hot}");
            assert!(expected < 0.1, "{expected}");
            assert!(misses as f64 <= expected + 3.0 * expected.sqrt() + 1.0);
            assert!(precision >= 0.75, "α={alpha}: {precision}");
        }
    }

    /// While sampling, the filtered heat of unsampled requests is the detector's heat.
    #[test]
    fn the_filter_has_no_false_negatives() {
        for algo in Algo::ALL {
            for alpha in [0.99, 1.2] {
                let (keys, s) = stream(11, alpha, 300_000);
                let mut p = params(algo, 10_000);
                p.hysteresis = 0.2;
                let mut d = build_sampled(&p).unwrap();
                let per_epoch = 20_000u64;
                d.tick(Instant::from_nanos(0));
                let mut probed = 0;
                let mut filtered = 0;
                for (i, &k) in s.iter().enumerate() {
                    let key = keys.key(k);
                    if d.skip != 0 {
                        let want = d.inner().heat(key);
                        assert_eq!(
                            d.unsampled_heat(key, d.hasher.hash(key)),
                            want,
                            "{algo} α={alpha} at {i}"
                        );
                        let (w, b) = d.filter_bit(key);
                        if d.maybe[w] & b == 0 {
                            filtered += 1;
                        } else {
                            probed += 1;
                        }
                    }
                    d.observe(key, 1);
                    if (i as u64 + 1) % (per_epoch / 4) == 0 {
                        d.tick(Instant::from_nanos((i as u64 + 1) * EPOCH_NS / per_epoch));
                    }
                }
                assert!(d.probability() < 1.0, "{algo}");
                assert!(d.hot_len() > 0, "{algo} α={alpha}");
                // Most unsampled requests skip the probe.
                assert!(
                    filtered > probed / 2,
                    "{algo} α={alpha}: {filtered} vs {probed}"
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]

        /// Below the rate the sampled detector is the unsampled one: same heat for every
        /// request, same hot sets at every rotation, same reports and estimates.
        #[test]
        fn below_the_rate_it_is_exact(seed in any::<u64>(), alpha in 0.8f64..1.5, algo in 0usize..4) {
            let algo = Algo::ALL[algo];
            let (keys, s) = stream(seed, alpha, 60_000);
            // 6000 requests per 100 ms = 60 000/s, below R = 60 001.
            let p = params(algo, 60_001);
            let mut plain = build(&p).unwrap();
            let mut sampled = build_sampled(&p).unwrap();
            let a = drive(&mut plain, &keys, &s, 6000);
            let b = drive(&mut sampled, &keys, &s, 6000);
            prop_assert_eq!(sampled.probability(), 1.0);
            prop_assert_eq!(sampled.sampled(), 60_000);
            prop_assert_eq!(a, b);
            for rule in [ReportRule::Tight, ReportRule::Classic] {
                prop_assert_eq!(plain.report(0.01, rule), sampled.report(0.01, rule));
            }
            prop_assert_eq!(plain.hot_items(), sampled.hot_items());
            prop_assert_eq!(plain.warm_items(), sampled.warm_items());
            prop_assert_eq!(plain.window(), sampled.window());
            let mut ca = Vec::new();
            let mut cb = Vec::new();
            prop_assert_eq!(plain.drain_changes(&mut ca), sampled.drain_changes(&mut cb));
            prop_assert_eq!(ca, cb);
        }

        /// The same seed and inputs give the same result; above the rate the detector sees
        /// a bounded number of requests per epoch.
        #[test]
        fn sampling_is_deterministic(seed in any::<u64>(), hseed in any::<u64>()) {
            let (keys, s) = stream(seed, 1.2, 60_000);
            let mut p = params(Algo::LossyDecayed, 5_000);
            p.seed = hseed;
            let mut a = build_sampled(&p).unwrap();
            let mut b = build_sampled(&p).unwrap();
            let ra = drive(&mut a, &keys, &s, 6000);
            let rb = drive(&mut b, &keys, &s, 6000);
            prop_assert!(a.probability() < 1.0);
            prop_assert_eq!(ra, rb);
            prop_assert_eq!(a.sampled(), b.sampled());
            // 9 sampled epochs of ~500 (first exact): well under the 60 000 offered.
            prop_assert!(a.sampled() < 6000 + 9 * 700, "{}", a.sampled());
        }
    }

    #[test]
    fn a_hashed_observation_is_the_observation() {
        // Every algorithm, exact and sampled: the caller's hash (the core's one hash per
        // request) gives the same heats and hot sets as hashing inside.
        for algo in Algo::ALL {
            for above in [0, 20_000] {
                let p = params(algo, above);
                let (keys, s) = stream(5, 1.1, 60_000);
                let (mut a, mut b) = (build_sampled(&p).unwrap(), build_sampled(&p).unwrap());
                let hasher = KeyHasher::new(p.seed);
                let per_epoch = 40_000u64;
                a.tick(Instant::from_nanos(0));
                b.tick(Instant::from_nanos(0));
                for (i, &k) in s.iter().enumerate() {
                    let key = keys.key(k);
                    let h = hasher.hash(key);
                    assert_eq!(
                        a.observe(key, 1),
                        b.observe_hashed(key, h, 1),
                        "{algo} at {i}"
                    );
                    assert_eq!(a.heat(key), b.heat_hashed(key, h));
                    if (i + 1) % 5_000 == 0 {
                        let t = Instant::from_nanos((i as u64 + 1) * EPOCH_NS / per_epoch);
                        assert_eq!(a.tick(t), b.tick(t));
                        assert_eq!(a.hot_items(), b.hot_items(), "{algo} above {above}");
                    }
                }
                if above > 0 {
                    assert!(a.probability() < 1.0, "{algo}: the stream was sampled");
                }
            }
        }
    }
}
