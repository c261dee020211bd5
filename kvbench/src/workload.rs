//! What kvbench asks for: key names, the rank → key mapping with its hot-set shift, and
//! the per-connection operation stream (get/set mix, multi-get size, value sizes).
//!
//! Key `i` of a key space of `n` keys is named `<prefix><zero padding><i>`; its length is
//! a pure function of `i` and the key-size distribution, so every run, thread and seed
//! names a key the same way (a load phase with one seed serves a run with another).
//!
//! Popularity is assigned to ranks, not to keys: rank 0 is the most popular under Zipf.
//! Rank r means key `perm((r + offset) mod n)`, where `perm` is a fixed affine bijection
//! (popular keys are spread over the key space, hence over servers) and `offset` grows by
//! `--shift-by` at each `--shift-at` time. After a shift the hottest keys are different
//! keys, so a hot-key detector has to learn them again.
//!
//! Owns: names, ranks, the operation mix. Must not: do I/O or keep version state.

use std::sync::Arc;

use super::dist::{KeyDist, SizeDist};
use kvlb::proto::MAX_KEY_LEN;
use kvlb::random::{mix64, Rng, Zipf};

/// A key space that cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    #[error("the key space needs at least one key")]
    NoKeys,
    #[error("key prefix '{0}' has bytes memcached does not allow in keys (space, control)")]
    BadPrefix(String),
    #[error("key prefix is too long: keys would exceed {MAX_KEY_LEN} bytes")]
    PrefixTooLong,
}

/// Key names and the rank → key mapping.
#[derive(Clone, Debug)]
pub struct KeySpace {
    keys: u32,
    prefix: Vec<u8>,
    key_size: SizeDist,
    /// perm(i) = (mul · i + add) mod keys, gcd(mul, keys) = 1.
    mul: u64,
    add: u64,
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn digits(mut i: u32) -> usize {
    let mut d = 1;
    while i >= 10 {
        i /= 10;
        d += 1;
    }
    d
}

impl KeySpace {
    pub fn new(keys: u32, prefix: &str, key_size: SizeDist) -> Result<KeySpace, WorkloadError> {
        if keys == 0 {
            return Err(WorkloadError::NoKeys);
        }
        if prefix.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(WorkloadError::BadPrefix(prefix.to_owned()));
        }
        if prefix.len() + digits(keys - 1) > MAX_KEY_LEN {
            return Err(WorkloadError::PrefixTooLong);
        }
        let n = u64::from(keys);
        // A multiplier near n/φ spreads consecutive ranks far apart.
        let mut mul = ((n as f64 * 0.618_033_988_749_895) as u64).max(1) | 1;
        while gcd(mul, n) != 1 {
            mul += 1;
        }
        Ok(KeySpace {
            keys,
            prefix: prefix.as_bytes().to_vec(),
            key_size,
            mul: mul % n.max(2),
            add: n / 3,
        })
    }

    /// Number of keys.
    pub fn len(&self) -> u32 {
        self.keys
    }

    pub fn is_empty(&self) -> bool {
        self.keys == 0
    }

    /// The key index that rank `rank` maps to with hot-set `offset`.
    #[inline]
    pub fn index_of_rank(&self, rank: u64, offset: u64) -> u32 {
        let n = u64::from(self.keys);
        let r = (rank % n + offset % n) % n;
        ((u128::from(self.mul) * u128::from(r) + u128::from(self.add)) % u128::from(n)) as u32
    }

    /// Length of key `index`'s name.
    pub fn name_len(&self, index: u32) -> usize {
        let natural = self.prefix.len() + digits(index);
        let u = ((mix64(u64::from(index) ^ 0x6b65_795f_6c65_6e00) >> 11) + 1) as f64
            / (1u64 << 53) as f64;
        self.key_size.size_at(u, natural as u32, MAX_KEY_LEN as u32) as usize
    }

    /// Appends key `index`'s name to `out`.
    pub fn write_name(&self, index: u32, out: &mut Vec<u8>) {
        let len = self.name_len(index);
        let d = digits(index);
        out.extend_from_slice(&self.prefix);
        let pad = len - self.prefix.len() - d;
        out.resize(out.len() + pad, b'0');
        let mut buf = [0u8; 10];
        let mut i = index;
        for slot in buf[..d].iter_mut().rev() {
            *slot = b'0' + (i % 10) as u8;
            i /= 10;
        }
        out.extend_from_slice(&buf[..d]);
    }

    /// Key `index`'s name.
    pub fn name(&self, index: u32) -> Vec<u8> {
        let mut v = Vec::with_capacity(32);
        self.write_name(index, &mut v);
        v
    }

    /// The index a name stands for, if it is one of this key space's names.
    pub fn index_of(&self, name: &[u8]) -> Option<u32> {
        let digits_part = name.strip_prefix(self.prefix.as_slice())?;
        if digits_part.is_empty() || digits_part.len() > MAX_KEY_LEN {
            return None;
        }
        let mut v: u64 = 0;
        for &b in digits_part {
            if !b.is_ascii_digit() {
                return None;
            }
            // v never decreases, so stopping at the key count also rules out overflow.
            v = v * 10 + u64::from(b - b'0');
            if v >= u64::from(self.keys) {
                return None;
            }
        }
        let index = u32::try_from(v).ok()?;
        (index < self.keys && self.name_len(index) == name.len()).then_some(index)
    }
}

/// The hot-set shifts of a run: at each time in `at_ns` (since the start of the measured
/// phase) the rank → key offset grows by `by`.
#[derive(Clone, Debug, Default)]
pub struct Shifts {
    pub at_ns: Vec<u64>,
    pub by: u64,
}

impl Shifts {
    /// The offset in force at `elapsed_ns`.
    #[inline]
    pub fn offset(&self, elapsed_ns: u64) -> u64 {
        let passed = self.at_ns.iter().filter(|&&t| elapsed_ns >= t).count() as u64;
        passed.wrapping_mul(self.by)
    }
}

enum Sampler {
    Uniform,
    Zipf(Zipf),
    Gaussian { sd: f64 },
    Sequential { next: u64 },
}

/// The operation mix.
#[derive(Clone, Debug)]
pub struct Mix {
    /// Fraction of operations that are GETs.
    pub get_ratio: f64,
    /// Keys per GET (1 = single get).
    pub multiget: u16,
    pub value_size: SizeDist,
    /// Value sizes are clamped to `value_min..=value_max`.
    pub value_min: u32,
    pub value_max: u32,
}

/// One operation drawn by [`OpStream::next`]; its keys are in [`OpStream::keys`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Get,
    /// A SET with a value of `size` bytes (before any transport clamp).
    Set {
        size: u32,
    },
}

/// The operations of one connection: a seeded stream.
pub struct OpStream {
    rng: Rng,
    sampler: Sampler,
    space: Arc<KeySpace>,
    shifts: Arc<Shifts>,
    mix: Mix,
    keys: Vec<u32>,
}

impl std::fmt::Debug for OpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpStream")
            .field("mix", &self.mix)
            .finish_non_exhaustive()
    }
}

impl OpStream {
    /// A stream drawing keys by `dist`; `seq_start` is where a sequential walk begins
    /// (spread connections over the key space).
    pub fn new(
        rng: Rng,
        dist: KeyDist,
        space: Arc<KeySpace>,
        shifts: Arc<Shifts>,
        mix: Mix,
        seq_start: u64,
    ) -> OpStream {
        let n = u64::from(space.len());
        let sampler = match dist {
            KeyDist::Uniform => Sampler::Uniform,
            KeyDist::Zipf(a) => Sampler::Zipf(Zipf::new(n, a)),
            KeyDist::Gaussian { sd } => Sampler::Gaussian { sd },
            KeyDist::Sequential => Sampler::Sequential {
                next: seq_start % n,
            },
        };
        OpStream {
            rng,
            sampler,
            space,
            shifts,
            keys: Vec::with_capacity(usize::from(mix.multiget.max(1))),
            mix,
        }
    }

    /// The key index of the next draw at `elapsed_ns`.
    pub fn next_key(&mut self, elapsed_ns: u64) -> u32 {
        let n = u64::from(self.space.len());
        let offset = self.shifts.offset(elapsed_ns);
        match &mut self.sampler {
            Sampler::Uniform => self.space.index_of_rank(self.rng.below(n), offset),
            Sampler::Zipf(z) => self.space.index_of_rank(z.sample(&mut self.rng), offset),
            Sampler::Gaussian { sd } => {
                let mean = n as f64 / 2.0;
                let sd = *sd * n as f64;
                let mut rank = None;
                for _ in 0..64 {
                    let x = (mean + sd * self.rng.normal()).floor();
                    if x >= 0.0 && x < n as f64 {
                        rank = Some(x as u64);
                        break;
                    }
                }
                let rank = rank.unwrap_or_else(|| self.rng.below(n));
                self.space.index_of_rank(rank, offset)
            }
            Sampler::Sequential { next } => {
                let r = *next;
                *next = (r + 1) % n;
                // No permutation: a sequential walk visits keys in name order.
                ((r + offset) % n) as u32
            }
        }
    }

    /// Draws the next operation at `elapsed_ns`; its keys are then in [`keys`](Self::keys).
    pub fn next(&mut self, elapsed_ns: u64) -> OpKind {
        self.keys.clear();
        let is_get = self.mix.get_ratio >= 1.0
            || (self.mix.get_ratio > 0.0 && self.rng.next_f64() < self.mix.get_ratio);
        if is_get {
            for _ in 0..self.mix.multiget.max(1) {
                let k = self.next_key(elapsed_ns);
                self.keys.push(k);
            }
            OpKind::Get
        } else {
            let k = self.next_key(elapsed_ns);
            self.keys.push(k);
            let size =
                self.mix
                    .value_size
                    .sample(&mut self.rng, self.mix.value_min, self.mix.value_max);
            OpKind::Set { size }
        }
    }

    /// Makes `key` the only key of the current operation (the load phase picks its own).
    pub fn set_single_key(&mut self, key: u32) {
        self.keys.clear();
        self.keys.push(key);
    }

    /// The keys of the last operation.
    pub fn keys(&self) -> &[u32] {
        &self.keys
    }

    /// A value size for a SET the caller makes up (the load phase).
    pub fn value_size(&mut self) -> u32 {
        self.mix
            .value_size
            .sample(&mut self.rng, self.mix.value_min, self.mix.value_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::ETC_KEY;
    use kvlb::proto::check_key;

    fn mix(get_ratio: f64, multiget: u16) -> Mix {
        Mix {
            get_ratio,
            multiget,
            value_size: SizeDist::Fixed(100),
            value_min: 32,
            value_max: 1000,
        }
    }

    #[test]
    fn names_roundtrip_and_are_valid_keys() {
        for size in [SizeDist::Fixed(16), SizeDist::Fixed(2), ETC_KEY] {
            let ks = KeySpace::new(100_000, "kvb:", size).unwrap();
            let mut seen = std::collections::HashSet::new();
            for i in (0..100_000).step_by(7).chain([0, 99_999]) {
                let name = ks.name(i);
                assert_eq!(name.len(), ks.name_len(i));
                check_key(&name).unwrap();
                assert_eq!(
                    ks.index_of(&name),
                    Some(i),
                    "{}",
                    String::from_utf8_lossy(&name)
                );
                assert!(seen.insert(name) || i == 0 || i == 99_999);
            }
        }
        let ks = KeySpace::new(1000, "kvb:", SizeDist::Fixed(12)).unwrap();
        assert_eq!(ks.name(42), b"kvb:00000042");
        assert_eq!(ks.index_of(b"kvb:00000042"), Some(42));
        assert_eq!(ks.index_of(b"kvb:42"), None);
        assert_eq!(ks.index_of(b"kvb:00001000"), None);
        assert_eq!(ks.index_of(b"kvc:00000042"), None);
        assert_eq!(ks.index_of(b"kvb:0000004x"), None);
        assert_eq!(ks.index_of(b"kvb:"), None);
        assert_eq!(ks.index_of(b"kvb:99999999999999999999999"), None);
        assert!(KeySpace::new(0, "k", SizeDist::Fixed(1)).is_err());
        assert!(KeySpace::new(10, "a b", SizeDist::Fixed(1)).is_err());
        assert!(KeySpace::new(10, &"x".repeat(250), SizeDist::Fixed(1)).is_err());
    }

    #[test]
    fn rank_mapping_is_a_permutation() {
        for n in [1u32, 2, 10, 12, 97, 1000] {
            let ks = KeySpace::new(n, "k", SizeDist::Fixed(1)).unwrap();
            for offset in [0, 1, u64::from(n) / 2, 12345] {
                let mut seen = vec![false; n as usize];
                for r in 0..u64::from(n) {
                    let i = ks.index_of_rank(r, offset) as usize;
                    assert!(!seen[i], "n={n} offset={offset}");
                    seen[i] = true;
                }
            }
        }
    }

    #[test]
    fn hot_set_shift_changes_the_hottest_keys() {
        let n = 10_000u32;
        let space = Arc::new(KeySpace::new(n, "k:", SizeDist::Fixed(8)).unwrap());
        let shifts = Arc::new(Shifts {
            at_ns: vec![1_000],
            by: u64::from(n / 2),
        });
        let mut s = OpStream::new(
            Rng::new(3),
            KeyDist::Zipf(1.2),
            space.clone(),
            shifts,
            mix(1.0, 1),
            0,
        );
        let top = |s: &mut OpStream, t: u64| {
            let mut counts = std::collections::HashMap::new();
            for _ in 0..50_000 {
                *counts.entry(s.next_key(t)).or_insert(0u32) += 1;
            }
            let mut v: Vec<(u32, u32)> = counts.into_iter().collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            v.into_iter().take(10).map(|(k, _)| k).collect::<Vec<_>>()
        };
        let before = top(&mut s, 0);
        let after = top(&mut s, 2_000);
        assert_eq!(before[0], space.index_of_rank(0, 0));
        assert_eq!(after[0], space.index_of_rank(0, u64::from(n / 2)));
        assert!(
            before.iter().all(|k| !after.contains(k)),
            "{before:?} {after:?}"
        );
    }

    #[test]
    fn streams_are_reproducible_and_mix_holds() {
        let space = Arc::new(KeySpace::new(1000, "k", SizeDist::Fixed(4)).unwrap());
        let shifts = Arc::new(Shifts::default());
        let run = |seed| {
            let mut s = OpStream::new(
                Rng::derive(seed, &[0, 1]),
                KeyDist::Zipf(0.99),
                space.clone(),
                shifts.clone(),
                mix(0.8, 3),
                0,
            );
            (0..10_000)
                .map(|_| {
                    let op = s.next(0);
                    (op, s.keys().to_vec())
                })
                .collect::<Vec<_>>()
        };
        let a = run(5);
        assert_eq!(a, run(5));
        assert_ne!(a, run(6));
        let gets = a.iter().filter(|(op, _)| *op == OpKind::Get).count();
        assert!((7_800..8_200).contains(&gets), "{gets}");
        for (op, keys) in &a {
            match op {
                OpKind::Get => assert_eq!(keys.len(), 3),
                OpKind::Set { size } => {
                    assert_eq!(keys.len(), 1);
                    assert_eq!(*size, 100);
                }
            }
            assert!(keys.iter().all(|&k| k < 1000));
        }
    }

    #[test]
    fn sequential_and_gaussian() {
        let space = Arc::new(KeySpace::new(10, "k", SizeDist::Fixed(2)).unwrap());
        let shifts = Arc::new(Shifts::default());
        let mut s = OpStream::new(
            Rng::new(1),
            KeyDist::Sequential,
            space.clone(),
            shifts.clone(),
            mix(1.0, 1),
            8,
        );
        let seq: Vec<u32> = (0..4).map(|_| s.next_key(0)).collect();
        assert_eq!(seq, [8, 9, 0, 1]);
        let big = Arc::new(KeySpace::new(100_000, "k", SizeDist::Fixed(2)).unwrap());
        let mut g = OpStream::new(
            Rng::new(1),
            KeyDist::Gaussian { sd: 0.01 },
            big.clone(),
            shifts,
            mix(1.0, 1),
            0,
        );
        // ±3 sd around the middle rank covers nearly all draws.
        let near: std::collections::HashSet<u32> =
            (47_000..53_000).map(|r| big.index_of_rank(r, 0)).collect();
        let inside = (0..10_000)
            .filter(|_| near.contains(&g.next_key(0)))
            .count();
        assert!(inside > 9_950, "{inside}");
    }
}
