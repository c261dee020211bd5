//! Both cache layers, the write stamps and the key hasher together, with the consistency rule
//! enforced in one place. This is the interface the core uses.
//!
//! Owns: the order of operations that keeps cached values fresh (invalidate before a write
//! is forwarded, learn only with a valid ticket) and the cache counters. Must not: decide
//! hotness (the core passes the detector's verdicts in), or read clocks (`now` is passed).
//!
//! Per request, the core calls:
//!
//! | event | call |
//! | --- | --- |
//! | any request for key K | `h = key_hash(K)` once, reused below |
//! | GET/GETS K from a client | `lookup(h, K, now)`: a hit answers it; on a miss forward the GET and keep `read_sent(h)` in the flow entry |
//! | GET response for K | `learn(h, K, ticket, value, now, warm_estimate)` |
//! | write to K forwarded | `write_sent(h, K)` *before* forwarding |
//! | that write's flow ends (reply, error, expiry, eviction, backend down) | `write_done(h)` |
//! | detector: K turned hot / cooled / estimate changed | `admit_hot` / `demote` / `set_warm_estimate` |
//! | detector epoch | `observe_skew(top-k share)`, `sweep_expired(now)` |

use std::cell::Cell;
use std::time::Duration;

use crate::clock::Instant;
use crate::config::{Config, L2Mode};

use super::gate::{GateTransition, SkewGate};
use super::l1::{Admit, HotKeyTable};
use super::l2::WarmKeyCache;
use super::stamps::{ReadTicket, WriteStamps};
use super::{CacheError, CachedValue, KeyHash, KeyHasher};

/// What the caches are built from.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheSettings {
    pub l1_max_keys: usize,
    /// Largest value cached in either layer (a cached reply must fit one datagram).
    pub max_value: usize,
    pub l2_mode: L2Mode,
    pub l2_max_bytes: usize,
    pub l2_on_share: f64,
    pub l2_off_share: f64,
    /// Write-stamp slots (rounded up to a power of two; 16 bytes each).
    pub stamp_slots: usize,
    /// Serve a learned value for at most this long (`None`: until invalidated).
    pub max_age: Option<Duration>,
    /// Seeds the key hash and the skip list.
    pub seed: u64,
}

impl CacheSettings {
    /// Default number of write-stamp slots: 65536 (1 MiB).
    pub const DEFAULT_STAMP_SLOTS: usize = 1 << 16;

    /// Settings from kvlb's config; `seed` keys the hash (a datapath passes a random one).
    pub fn from_config(cfg: &Config, seed: u64) -> CacheSettings {
        CacheSettings {
            l1_max_keys: cfg.l1_max_keys,
            max_value: cfg.cache_max_value,
            l2_mode: cfg.l2_mode,
            l2_max_bytes: cfg.l2_max_bytes,
            l2_on_share: cfg.l2_on_share,
            l2_off_share: cfg.l2_off_share,
            stamp_slots: Self::DEFAULT_STAMP_SLOTS,
            max_age: None,
            seed,
        }
    }
}

/// Which layer answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    L1,
    L2,
}

/// A cache hit: the value to write into the reply.
#[derive(Clone, Copy, Debug)]
pub struct Hit<'a> {
    pub layer: Layer,
    pub value: &'a CachedValue,
}

/// A GET response for one key, borrowed from the frame, with what the flow entry kept
/// from the GET's sending.
#[derive(Clone, Copy, Debug)]
pub struct GetResponse<'a> {
    pub key: &'a [u8],
    /// The key's ketama hash (computed to route the GET).
    pub ring_hash: u32,
    /// What [`Caches::read_sent`] returned when the GET was forwarded.
    pub ticket: ReadTicket,
    /// The value bytes (without the trailing `\r\n`).
    pub data: &'a [u8],
    pub flags: u32,
    /// Present when the response came from `gets`.
    pub cas: Option<u64>,
}

/// What [`Caches::learn`] did with a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// Stored as the hot key's value.
    L1,
    /// Stored in L2, evicting `evicted` less valuable entries.
    L2 { evicted: usize },
    /// Fresh, but not for either layer: not hot, not warm (or L2 off or L1 missing the
    /// key), or the least valuable entry of a full L2.
    NotCached,
    /// A write may have overtaken the response: not cached.
    Stale,
    /// Larger than the cacheable maximum.
    TooLarge,
}

/// Counters, as a snapshot (see [`Caches::counters`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheCounters {
    pub l1_hits: u64,
    pub l2_hits: u64,
    pub misses: u64,
    /// Lookups that found a value older than the maximum age.
    pub expired: u64,
    pub learned_l1: u64,
    pub learned_l2: u64,
    /// Responses refused because a write may have overtaken them.
    pub stale_responses: u64,
    pub too_large: u64,
    /// Values dropped from L1 / L2 because of a write.
    pub l1_invalidations: u64,
    pub l2_invalidations: u64,
    /// Keys moved from L2 to L1 with their value when they turned hot.
    pub promotions: u64,
    /// Hot keys L1 had no room for.
    pub l1_full: u64,
    pub l2_evictions: u64,
    pub l2_turned_on: u64,
    pub l2_turned_off: u64,
    /// `write_done` calls without a write in flight on the slot (a caller bug).
    pub unmatched_write_done: u64,
    /// Misses (`END`) of hot or warm keys learned as cached absences (counted in
    /// `learned_l1`/`learned_l2` too).
    pub learned_absent: u64,
    /// Hits on a cached absence (counted in `l1_hits`/`l2_hits` too), answered `END`.
    pub absent_hits: u64,
}

/// Memory held by the caches, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheMemory {
    pub l1: usize,
    pub l2: usize,
    pub stamps: usize,
}

impl CacheMemory {
    pub fn total(&self) -> usize {
        self.l1 + self.l2 + self.stamps
    }
}

/// Counters bumped from `&self` lookups (the core is single-threaded).
#[derive(Debug, Default)]
struct LookupCounters {
    l1_hits: Cell<u64>,
    l2_hits: Cell<u64>,
    misses: Cell<u64>,
    expired: Cell<u64>,
    absent_hits: Cell<u64>,
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// L1, L2, write stamps and key hasher.
#[derive(Debug)]
pub struct Caches {
    hasher: KeyHasher,
    stamps: WriteStamps,
    l1: HotKeyTable,
    l2: WarmKeyCache,
    max_value: usize,
    max_age: Option<Duration>,
    lookups: LookupCounters,
    counters: CacheCounters,
}

impl Caches {
    pub fn new(s: &CacheSettings) -> Result<Caches, CacheError> {
        let gate = SkewGate::new(s.l2_mode, s.l2_on_share, s.l2_off_share)?;
        Ok(Caches {
            hasher: KeyHasher::new(s.seed),
            stamps: WriteStamps::new(s.stamp_slots),
            l1: HotKeyTable::new(s.l1_max_keys, s.max_value),
            l2: WarmKeyCache::new(gate, s.l2_max_bytes, s.max_value, s.seed ^ 0x5EED),
            max_value: s.max_value,
            max_age: s.max_age,
            lookups: LookupCounters::default(),
            counters: CacheCounters::default(),
        })
    }

    /// The cache hash of `key`; compute once per request.
    #[inline]
    pub fn key_hash(&self, key: &[u8]) -> KeyHash {
        self.hasher.hash(key)
    }

    #[inline]
    fn fresh_at(&self, v: &CachedValue, now: Instant) -> bool {
        match self.max_age {
            None => true,
            Some(age) => now.saturating_duration_since(v.learned_at()) <= age,
        }
    }

    /// The cached value of `key`, from L1 or else L2. The GET hit path.
    #[inline]
    pub fn lookup(&self, h: KeyHash, key: &[u8], now: Instant) -> Option<Hit<'_>> {
        if let Some(value) = self.l1.get(h, key) {
            if self.fresh_at(value, now) {
                bump(&self.lookups.l1_hits);
                if value.is_absent() {
                    bump(&self.lookups.absent_hits);
                }
                return Some(Hit {
                    layer: Layer::L1,
                    value,
                });
            }
            bump(&self.lookups.expired);
        } else if let Some(value) = self.l2.get(h, key) {
            if self.fresh_at(value, now) {
                bump(&self.lookups.l2_hits);
                if value.is_absent() {
                    bump(&self.lookups.absent_hits);
                }
                return Some(Hit {
                    layer: Layer::L2,
                    value,
                });
            }
            bump(&self.lookups.expired);
        }
        bump(&self.lookups.misses);
        None
    }

    /// Whether a GET of `key` should keep the key to learn a miss: `key` is hot, its L1
    /// entry holds no value or absence (a write dropped it, or the key just turned hot),
    /// and no other such GET is outstanding (claimed until [`Caches::end_miss_probe`]).
    #[inline]
    pub fn claim_miss_probe(&mut self, h: KeyHash, key: &[u8]) -> bool {
        self.l1.claim_miss_probe(h, key)
    }

    /// The GET that claimed `key`'s miss probe ended.
    pub fn end_miss_probe(&mut self, h: KeyHash, key: &[u8]) {
        self.l1.end_miss_probe(h, key);
    }

    /// Whether a GET reply that carried `ticket` may still be believed: no write to the key
    /// was in flight when it was sent, and none was sent or ended since (see
    /// [`super::stamps`]).
    #[inline]
    pub fn may_learn(&self, h: KeyHash, ticket: ReadTicket) -> bool {
        self.stamps.may_learn(h, ticket)
    }

    /// A GET for `key` is being forwarded: the ticket to keep in its flow entry.
    #[inline]
    pub fn read_sent(&self, h: KeyHash) -> ReadTicket {
        self.stamps.read_sent(h)
    }

    /// A write to `key` is about to be forwarded: drops its cached values and stamps it.
    /// Call before forwarding.
    pub fn write_sent(&mut self, h: KeyHash, key: &[u8]) {
        self.stamps.write_sent(h);
        if self.l1.invalidate(h, key) {
            self.counters.l1_invalidations += 1;
        }
        if self.l2.invalidate(h, key) {
            self.counters.l2_invalidations += 1;
        }
    }

    /// A write to every key (`flush_all`) is about to be forwarded: drops every cached
    /// value (hot keys stay admitted to L1, empty) and blocks learning until
    /// [`Caches::flush_done`].
    pub fn flush_sent(&mut self) {
        self.stamps.write_sent_all();
        let keys: Vec<(KeyHash, Box<[u8]>)> = self
            .l1
            .iter()
            .filter(|e| e.value.is_some())
            .map(|e| (self.hasher.hash(e.key), e.key.into()))
            .collect();
        for (h, k) in &keys {
            if self.l1.invalidate(*h, k) {
                self.counters.l1_invalidations += 1;
            }
        }
        self.counters.l2_invalidations += self.l2.len() as u64;
        self.l2.clear();
    }

    /// A `flush_all`'s flow ended.
    pub fn flush_done(&mut self) {
        if !self.stamps.write_done_all() {
            self.counters.unmatched_write_done += 1;
        }
    }

    /// A write's flow ended (reply, error reply, expiry, eviction, backend down).
    pub fn write_done(&mut self, h: KeyHash) {
        if !self.stamps.write_done(h) {
            self.counters.unmatched_write_done += 1;
        }
    }

    /// A GET response arrived. Caches its value in L1 if the key is hot, in L2 if the
    /// detector calls it warm (`warm_estimate`), provided no write can have overtaken the
    /// response.
    pub fn learn(
        &mut self,
        h: KeyHash,
        r: &GetResponse<'_>,
        now: Instant,
        warm_estimate: Option<u64>,
    ) -> Learned {
        let (data, flags, cas) = (r.data, r.flags, r.cas);
        self.learn_with(
            h,
            r.key,
            r.ring_hash,
            r.ticket,
            warm_estimate,
            data.len(),
            |version| CachedValue::new(data, flags, cas, now, version),
        )
    }

    /// A GET of `key` answered `END`: its absence is cached as a value would be (see
    /// [`CachedValue::absent`]), under the same write-stamp rule and the same choice of
    /// layer. `ring_hash` and `ticket` as in [`GetResponse`].
    pub fn learn_absent(
        &mut self,
        h: KeyHash,
        key: &[u8],
        ring_hash: u32,
        ticket: ReadTicket,
        now: Instant,
        warm_estimate: Option<u64>,
    ) -> Learned {
        let learned = self.learn_with(h, key, ring_hash, ticket, warm_estimate, 0, |version| {
            CachedValue::absent(now, version)
        });
        if matches!(learned, Learned::L1 | Learned::L2 { .. }) {
            self.counters.learned_absent += 1;
        }
        learned
    }

    fn learn_with(
        &mut self,
        h: KeyHash,
        key: &[u8],
        ring_hash: u32,
        ticket: ReadTicket,
        warm_estimate: Option<u64>,
        len: usize,
        value: impl FnOnce(u64) -> CachedValue,
    ) -> Learned {
        if !self.stamps.may_learn(h, ticket) {
            self.counters.stale_responses += 1;
            return Learned::Stale;
        }
        let hot = self.l1.contains(h, key);
        let warm = !hot && warm_estimate.is_some() && self.l2.is_on();
        if !hot && !warm {
            return Learned::NotCached;
        }
        if len > self.max_value {
            self.counters.too_large += 1;
            return Learned::TooLarge;
        }
        let cached = value(self.stamps.version(h));
        if hot {
            return match self.l1.fill(h, key, cached) {
                Ok(()) => {
                    self.counters.learned_l1 += 1;
                    Learned::L1
                }
                Err(_) => Learned::NotCached,
            };
        }
        let estimate = warm_estimate.unwrap_or(0);
        match self.l2.insert(h, key, ring_hash, cached, estimate) {
            Ok(r) => {
                self.counters.l2_evictions += r.evicted as u64;
                if r.stored {
                    self.counters.learned_l2 += 1;
                    Learned::L2 { evicted: r.evicted }
                } else {
                    Learned::NotCached
                }
            }
            Err(_) => Learned::NotCached,
        }
    }

    /// The detector says `key` turned hot. Moves its L2 value (if any) into L1, so the key
    /// is served at once. `ring_hash` is its ketama hash.
    pub fn admit_hot(
        &mut self,
        h: KeyHash,
        key: &[u8],
        ring_hash: u32,
    ) -> Result<Admit, CacheError> {
        if self.l1.contains(h, key) {
            return Ok(Admit::AlreadyHot);
        }
        if self.l1.len() >= self.l1.max_keys() {
            self.counters.l1_full += 1;
            return Err(CacheError::L1Full(self.l1.max_keys()));
        }
        match self.l2.promote(h, key) {
            Some((key, ring_hash, value)) => {
                self.counters.promotions += 1;
                self.l1.admit_with_value(h, key, ring_hash, value)
            }
            None => self.l1.admit(h, key, ring_hash),
        }
    }

    /// The detector says `key` is no longer hot. With `warm_estimate`, its value (if any)
    /// moves to L2. Returns whether the key was hot.
    pub fn demote(&mut self, h: KeyHash, key: &[u8], warm_estimate: Option<u64>) -> bool {
        let Some((key, ring_hash, value)) = self.l1.remove(h, key) else {
            return false;
        };
        if let (Some(value), Some(est)) = (value, warm_estimate) {
            if let Ok(r) = self.l2.insert(h, &key, ring_hash, value, est) {
                self.counters.l2_evictions += r.evicted as u64;
            }
        }
        true
    }

    /// The detector's estimate of warm key `key` changed.
    pub fn set_warm_estimate(&mut self, h: KeyHash, key: &[u8], estimate: u64) -> bool {
        self.l2.set_estimate(h, key, estimate)
    }

    /// The detector's top-k traffic share for the epoch; switches L2 (the caller logs the
    /// transition it gets back).
    pub fn observe_skew(&mut self, share: f64) -> Option<GateTransition> {
        let t = self.l2.observe_skew(share);
        match t {
            Some(GateTransition::On { .. }) => self.counters.l2_turned_on += 1,
            Some(GateTransition::Off { .. }) => self.counters.l2_turned_off += 1,
            None => {}
        }
        t
    }

    /// Drops values older than the maximum age (none without one). Returns how many.
    pub fn sweep_expired(&mut self, now: Instant) -> usize {
        let Some(age) = self.max_age else {
            return 0;
        };
        let old = |v: &CachedValue| now.saturating_duration_since(v.learned_at()) > age;
        let l1_old: Vec<(KeyHash, Box<[u8]>)> = self
            .l1
            .iter()
            .filter(|e| e.value.is_some_and(old))
            .map(|e| (self.hasher.hash(e.key), e.key.into()))
            .collect();
        let l2_old: Vec<(KeyHash, Box<[u8]>)> = self
            .l2
            .iter()
            .filter(|(_, _, v)| old(v))
            .map(|(k, _, _)| (self.hasher.hash(k), k.into()))
            .collect();
        for (h, k) in &l1_old {
            self.l1.invalidate(*h, k);
        }
        for (h, k) in &l2_old {
            self.l2.invalidate(*h, k);
        }
        l1_old.len() + l2_old.len()
    }

    pub fn l1(&self) -> &HotKeyTable {
        &self.l1
    }

    pub fn l2(&self) -> &WarmKeyCache {
        &self.l2
    }

    pub fn stamps(&self) -> &WriteStamps {
        &self.stamps
    }

    pub fn counters(&self) -> CacheCounters {
        CacheCounters {
            l1_hits: self.lookups.l1_hits.get(),
            l2_hits: self.lookups.l2_hits.get(),
            misses: self.lookups.misses.get(),
            expired: self.lookups.expired.get(),
            absent_hits: self.lookups.absent_hits.get(),
            ..self.counters
        }
    }

    pub fn memory(&self) -> CacheMemory {
        CacheMemory {
            l1: self.l1.memory_bytes(),
            l2: self.l2.memory_bytes(),
            stamps: self.stamps.memory_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CacheSettings {
        let cfg = Config {
            l2_mode: L2Mode::On,
            ..Config::default()
        };
        let mut s = CacheSettings::from_config(&cfg, 1);
        s.stamp_slots = 64;
        s
    }

    fn resp<'a>(
        key: &'a [u8],
        ring_hash: u32,
        ticket: ReadTicket,
        data: &'a [u8],
    ) -> GetResponse<'a> {
        GetResponse {
            key,
            ring_hash,
            ticket,
            data,
            flags: 3,
            cas: None,
        }
    }

    const T0: Instant = Instant::ZERO;

    #[test]
    fn hot_key_life() {
        let mut c = Caches::new(&settings()).unwrap();
        let k = b"user:1";
        let h = c.key_hash(k);
        // Not hot, not warm: nothing cached.
        let t = c.read_sent(h);
        assert_eq!(
            c.learn(h, &resp(k, 0, t, b"v1"), T0, None),
            Learned::NotCached
        );
        assert!(c.lookup(h, k, T0).is_none());
        // Warm: L2.
        let t = c.read_sent(h);
        assert_eq!(
            c.learn(h, &resp(k, 7, t, b"v1"), T0, Some(10)),
            Learned::L2 { evicted: 0 }
        );
        assert_eq!(c.lookup(h, k, T0).unwrap().layer, Layer::L2);
        // Turns hot: the value moves to L1 and is served at once.
        assert_eq!(c.admit_hot(h, k, 7).unwrap(), Admit::New);
        let hit = c.lookup(h, k, T0).unwrap();
        assert_eq!(
            (hit.layer, hit.value.data(), hit.value.flags()),
            (Layer::L1, &b"v1"[..], 3)
        );
        assert!(c.l2().is_empty());
        // A write drops it; a GET sent during the write cannot teach it back.
        c.write_sent(h, k);
        assert!(c.lookup(h, k, T0).is_none());
        let during = c.read_sent(h);
        c.write_done(h);
        assert_eq!(
            c.learn(h, &resp(k, 7, during, b"v1"), T0, None),
            Learned::Stale
        );
        let after = c.read_sent(h);
        assert_eq!(c.learn(h, &resp(k, 7, after, b"v2"), T0, None), Learned::L1);
        assert_eq!(c.lookup(h, k, T0).unwrap().value.data(), b"v2");
        // Cools down to warm: the value moves back to L2.
        assert!(c.demote(h, k, Some(3)));
        assert_eq!(c.lookup(h, k, T0).unwrap().layer, Layer::L2);
        let n = c.counters();
        assert_eq!(
            (
                n.l1_hits,
                n.l2_hits,
                n.promotions,
                n.stale_responses,
                n.l1_invalidations
            ),
            (2, 2, 1, 1, 1)
        );
        assert!(c.memory().total() > c.stamps().memory_bytes());
    }

    #[test]
    fn limits_and_ages() {
        let mut s = settings();
        s.l1_max_keys = 1;
        s.max_value = 4;
        s.max_age = Some(Duration::from_secs(1));
        let mut c = Caches::new(&s).unwrap();
        let (a, b) = (c.key_hash(b"a"), c.key_hash(b"b"));
        c.admit_hot(a, b"a", 0).unwrap();
        assert_eq!(c.admit_hot(b, b"b", 0), Err(CacheError::L1Full(1)));
        let t = c.read_sent(a);
        assert_eq!(
            c.learn(a, &resp(b"a", 0, t, b"12345"), T0, None),
            Learned::TooLarge
        );
        assert_eq!(
            c.learn(a, &resp(b"a", 0, t, b"1234"), T0, None),
            Learned::L1
        );
        let later = T0 + Duration::from_millis(1500);
        assert!(c.lookup(a, b"a", T0 + Duration::from_millis(900)).is_some());
        assert!(c.lookup(a, b"a", later).is_none());
        assert_eq!(c.counters().expired, 1);
        assert_eq!(c.sweep_expired(later), 1);
        assert_eq!(c.l1().filled(), 0);
        // An unmatched write_done is counted, not fatal.
        c.write_done(b);
        assert_eq!(c.counters().unmatched_write_done, 1);
    }

    #[test]
    fn skew_gate_switches_l2() {
        let mut s = settings();
        s.l2_mode = L2Mode::Auto;
        let mut c = Caches::new(&s).unwrap();
        let h = c.key_hash(b"w");
        let t = c.read_sent(h);
        assert_eq!(
            c.learn(h, &resp(b"w", 0, t, b"x"), T0, Some(1)),
            Learned::NotCached
        );
        assert!(c.observe_skew(0.5).is_some());
        assert_eq!(
            c.learn(h, &resp(b"w", 0, t, b"x"), T0, Some(1)),
            Learned::L2 { evicted: 0 }
        );
        assert!(c.observe_skew(0.01).is_some());
        assert!(c.lookup(h, b"w", T0).is_none());
        let n = c.counters();
        assert_eq!((n.l2_turned_on, n.l2_turned_off), (1, 1));
        let mut bad = settings();
        bad.l2_on_share = 0.1;
        bad.l2_off_share = 0.5;
        assert!(Caches::new(&bad).is_err());
    }
}
