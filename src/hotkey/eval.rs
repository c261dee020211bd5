//! Workloads and accuracy metrics for the hot-key experiments (`kvlb lc-experiments`), the
//! benchmarks and the tests: a seeded PRNG, an exact Zipf sampler (Vose's alias method:
//! O(n) set-up, O(1) per sample), memcached-like keys, Facebook-ETC-like value sizes, and
//! precision / recall / relative error against exact counts. Pure functions: no clocks, no
//! I/O.

use super::HotItem;

/// xoshiro256** (Blackman & Vigna), seeded through splitmix64: small, fast, reproducible.
#[derive(Clone, Debug)]
pub struct Rng([u64; 4]);

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let r = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        r
    }

    /// Uniform in [0, 1) with 53 random bits.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n) (Lemire's multiply-shift; bias below 2⁻³² for n < 2³²).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A uniformly random permutation of 0..n (Fisher–Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<u32> {
        let mut p: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            let j = self.below(i as u64 + 1) as usize;
            p.swap(i, j);
        }
        p
    }
}

/// Zipf(α) over ranks `0..n` (rank r has probability `(r+1)^-α / H(n, α)`), sampled
/// exactly by the alias method.
#[derive(Clone, Debug)]
pub struct Zipf {
    pmf: Vec<f64>,
    prob: Vec<f64>,
    alias: Vec<u32>,
}

impl Zipf {
    /// `n ≥ 1` ranks with exponent `alpha ≥ 0`.
    pub fn new(n: usize, alpha: f64) -> Self {
        let n = n.max(1);
        let mut pmf: Vec<f64> = (1..=n).map(|r| (r as f64).powf(-alpha)).collect();
        let h: f64 = pmf.iter().rev().sum(); // smallest first: less rounding
        for p in &mut pmf {
            *p /= h;
        }
        // Vose: scaled probabilities, split into small and large work lists.
        let mut prob: Vec<f64> = pmf.iter().map(|p| p * n as f64).collect();
        let mut alias = vec![0u32; n];
        let (mut small, mut large): (Vec<u32>, Vec<u32>) =
            (0..n as u32).partition(|&i| prob[i as usize] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            alias[s as usize] = l;
            prob[l as usize] -= 1.0 - prob[s as usize];
            if prob[l as usize] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // Leftovers are 1 up to rounding.
        for i in large.into_iter().chain(small) {
            prob[i as usize] = 1.0;
        }
        Zipf { pmf, prob, alias }
    }

    pub fn len(&self) -> usize {
        self.pmf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pmf.is_empty()
    }

    /// Probability of rank `r`.
    pub fn pmf(&self, r: usize) -> f64 {
        self.pmf.get(r).copied().unwrap_or(0.0)
    }

    #[inline]
    pub fn sample(&self, rng: &mut Rng) -> u32 {
        let i = rng.below(self.prob.len() as u64) as usize;
        if rng.next_f64() < self.prob[i] {
            i as u32
        } else {
            self.alias[i]
        }
    }
}

/// `n` memcached-style keys, `key:` plus twelve digits (16 bytes), stored in one arena.
#[derive(Clone, Debug)]
pub struct KeySpace {
    arena: Vec<u8>,
}

/// Length of every [`KeySpace`] key.
pub const KEY_LEN: usize = 16;

impl KeySpace {
    pub fn new(n: usize) -> Self {
        let mut arena = Vec::with_capacity(n * KEY_LEN);
        for id in 0..n {
            arena.extend_from_slice(format!("key:{id:012}").as_bytes());
        }
        KeySpace { arena }
    }

    pub fn len(&self) -> usize {
        self.arena.len() / KEY_LEN
    }

    pub fn is_empty(&self) -> bool {
        self.arena.is_empty()
    }

    #[inline]
    pub fn key(&self, id: u32) -> &[u8] {
        let at = id as usize * KEY_LEN;
        &self.arena[at..at + KEY_LEN]
    }

    /// The id of a key this space made, if it is one.
    pub fn id_of(&self, key: &[u8]) -> Option<u32> {
        let digits = key.strip_prefix(b"key:")?;
        if digits.len() != 12 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let id: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
        (id < self.len() as u64).then_some(id as u32)
    }
}

/// `len` requests: key ids drawn from `zipf`, rank `r` mapped to key `perm[r]` (so the
/// hot keys are scattered over the key space, and a new permutation moves them).
pub fn zipf_stream(zipf: &Zipf, perm: &[u32], len: usize, rng: &mut Rng) -> Vec<u32> {
    (0..len).map(|_| perm[zipf.sample(rng) as usize]).collect()
}

/// Facebook ETC value sizes (Atikoglu et al., "Workload Analysis of a Large-Scale
/// Key-Value Store", SIGMETRICS 2012): generalized Pareto with location 0, scale 214.476,
/// shape 0.348238, drawn once per key, clamped to memcached's 1 byte … 1 MiB.
pub fn etc_value_sizes(n: usize, rng: &mut Rng) -> Vec<u32> {
    const SCALE: f64 = 214.476;
    const SHAPE: f64 = 0.348238;
    (0..n)
        .map(|_| {
            let u = rng.next_f64();
            let x = SCALE / SHAPE * ((1.0 - u).powf(-SHAPE) - 1.0);
            x.round().clamp(1.0, (1u32 << 20) as f64) as u32
        })
        .collect()
}

/// Exact per-key totals of `stream[range]`, weighted by `weights[key]` if given.
pub fn exact_counts(n_keys: usize, stream: &[u32], weights: Option<&[u32]>) -> Vec<u64> {
    let mut c = vec![0u64; n_keys];
    match weights {
        None => {
            for &k in stream {
                c[k as usize] += 1;
            }
        }
        Some(w) => {
            for &k in stream {
                c[k as usize] += u64::from(w[k as usize]);
            }
        }
    }
    c
}

/// Key ids whose count reaches `support` of `total` (`count ≥ s·total`).
pub fn true_hot(counts: &[u64], total: u64, support: f64) -> Vec<u32> {
    let t = support * total as f64;
    counts
        .iter()
        .enumerate()
        .filter(|(_, &c)| c as f64 >= t)
        .map(|(i, _)| i as u32)
        .collect()
}

/// How a reported set compares with the truth.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Accuracy {
    /// Reported keys that are truly hot / reported keys (1 when nothing is reported).
    pub precision: f64,
    /// Truly hot keys reported / truly hot keys (1 when nothing is hot).
    pub recall: f64,
    /// Mean of |estimate − true| / true over truly hot keys that were reported (0 if none).
    pub are: f64,
    pub reported: usize,
    pub true_hot: usize,
}

/// Scores `reported` against exact `counts` (key ids via `keys`) at `support` of `total`.
pub fn accuracy(
    keys: &KeySpace,
    reported: &[HotItem],
    counts: &[u64],
    total: u64,
    support: f64,
) -> Accuracy {
    let truth = true_hot(counts, total, support);
    let mut hits = 0usize;
    let mut rel = 0.0;
    for item in reported {
        let Some(id) = keys.id_of(&item.key) else {
            continue;
        };
        if truth.binary_search(&id).is_ok() {
            hits += 1;
            let t = counts[id as usize] as f64;
            rel += (item.estimate as f64 - t).abs() / t;
        }
    }
    Accuracy {
        precision: if reported.is_empty() {
            1.0
        } else {
            hits as f64 / reported.len() as f64
        },
        recall: if truth.is_empty() {
            1.0
        } else {
            hits as f64 / truth.len() as f64
        },
        are: if hits == 0 { 0.0 } else { rel / hits as f64 },
        reported: reported.len(),
        true_hot: truth.len(),
    }
}

/// Share of the hottest ranks and the number of ranks at or above each support, straight
/// from the Zipf pmf (no sampling).
pub fn zipf_hot_ranks(zipf: &Zipf, support: f64) -> usize {
    (0..zipf.len())
        .take_while(|&r| zipf.pmf(r) >= support)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_alias_matches_pmf() {
        let z = Zipf::new(1000, 0.99);
        let total: f64 = (0..1000).map(|r| z.pmf(r)).sum();
        assert!((total - 1.0).abs() < 1e-9);
        let mut rng = Rng::new(1);
        let n = 2_000_000;
        let mut c = vec![0u64; 1000];
        for _ in 0..n {
            c[z.sample(&mut rng) as usize] += 1;
        }
        for r in [0usize, 1, 9, 99, 999] {
            let p = z.pmf(r);
            let sd = (p * (1.0 - p) / n as f64).sqrt();
            let got = c[r] as f64 / n as f64;
            assert!((got - p).abs() < 5.0 * sd + 1e-9, "rank {r}: {got} vs {p}");
        }
        // The well-known figure: Zipf 0.99 over 10^6 keys, the top key has ~6.5%.
        let big = Zipf::new(1_000_000, 0.99);
        assert!((big.pmf(0) - 0.065).abs() < 0.001, "{}", big.pmf(0));
        assert_eq!(zipf_hot_ranks(&big, 0.2), 0);
        assert_eq!(zipf_hot_ranks(&big, 0.025), 2);
    }

    #[test]
    fn keys_and_permutations() {
        let ks = KeySpace::new(100);
        assert_eq!(ks.key(7), b"key:000000000007");
        assert_eq!(ks.id_of(ks.key(42)), Some(42));
        assert_eq!(ks.id_of(b"key:000000000100"), None);
        assert_eq!(ks.id_of(b"nope"), None);
        let mut rng = Rng::new(3);
        let mut p = rng.permutation(100);
        p.sort();
        assert_eq!(p, (0..100).collect::<Vec<u32>>());
    }

    #[test]
    fn etc_sizes_look_like_etc() {
        let mut rng = Rng::new(5);
        let s = etc_value_sizes(200_000, &mut rng);
        let mean = s.iter().map(|&x| x as f64).sum::<f64>() / s.len() as f64;
        // GP mean = scale / (1 − shape) ≈ 329 bytes.
        assert!((300.0..360.0).contains(&mean), "{mean}");
        assert!(s.iter().all(|&x| (1..=1 << 20).contains(&x)));
    }

    #[test]
    fn accuracy_counts_hits() {
        let ks = KeySpace::new(10);
        let counts = vec![50, 30, 10, 5, 5, 0, 0, 0, 0, 0];
        let rep = vec![
            HotItem {
                key: ks.key(0).to_vec(),
                estimate: 45,
                max_error: 5,
            },
            HotItem {
                key: ks.key(2).to_vec(),
                estimate: 10,
                max_error: 0,
            },
        ];
        let a = accuracy(&ks, &rep, &counts, 100, 0.25);
        assert_eq!(a.true_hot, 2);
        assert_eq!(a.precision, 0.5);
        assert_eq!(a.recall, 0.5);
        assert!((a.are - 0.1).abs() < 1e-12);
        let none = accuracy(&ks, &[], &counts, 100, 0.9);
        assert_eq!((none.precision, none.recall), (1.0, 1.0));
    }
}
