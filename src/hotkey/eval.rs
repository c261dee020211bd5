//! Workloads and accuracy metrics for the hot-key experiments (`kvlb lc-experiments`), the
//! benchmarks and the tests: memcached-like keys, Zipf streams over them, Facebook-ETC-like
//! value sizes, and precision / recall / relative error against exact counts. The generator
//! and the Zipf law are [`crate::random`]'s, the ones kvbench draws from. Pure functions: no
//! clocks, no I/O.

use super::HotItem;
use crate::random::{Rng, Zipf};

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
    fn zipf_hot_ranks_counts_ranks_above_the_support() {
        let big = Zipf::new(1_000_000, 0.99);
        assert_eq!(zipf_hot_ranks(&big, 0.2), 0);
        assert_eq!(zipf_hot_ranks(&big, 0.025), 2);
        assert_eq!(zipf_hot_ranks(&Zipf::new(10, 0.0), 0.1), 10);
    }

    #[test]
    fn keys_and_streams() {
        let ks = KeySpace::new(100);
        assert_eq!(ks.key(7), b"key:000000000007");
        assert_eq!(ks.id_of(ks.key(42)), Some(42));
        assert_eq!(ks.id_of(b"key:000000000100"), None);
        assert_eq!(ks.id_of(b"nope"), None);
        let mut rng = Rng::new(3);
        let perm = rng.permutation(100);
        let zipf = Zipf::new(100, 1.2);
        let stream = zipf_stream(&zipf, &perm, 10_000, &mut rng);
        assert!(stream.iter().all(|&k| k < 100));
        // The most popular rank is the key the permutation put first (5 sd: 224).
        let top = stream.iter().filter(|&&k| k == perm[0]).count() as f64;
        assert!((top - zipf.pmf(0) * 10_000.0).abs() < 250.0, "{top}");
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
