//! Seeded pseudo-random numbers and the Zipf law: the one generator that the detector's
//! sampler ([`crate::hotkey::sample`]), kvbench's workloads, the detector experiments and
//! the tests draw from. xoshiro256++ seeded through SplitMix64; Zipf by rejection-inversion.
//!
//! Written out here rather than taken from a crate so that a seed gives the same sequence
//! on every build, whatever version of a random-number crate the dependency tree resolves
//! to: kvbench's `--seed` and the experiments' seeds are promises of reproducibility, and
//! the core stays deterministic.
//!
//! Owns: the generator and the distributions that need no more than it. Must not: read
//! clocks or the OS's entropy (every stream comes from a seed).

use std::sync::OnceLock;

/// SplitMix64's output function: a bijective 64-bit mixer (also used to derive stream
/// seeds and to hash key indexes into per-key sizes).
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// xoshiro256++ (Blackman and Vigna): fast, 256 bits of state, good enough for workloads.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator for `seed`; the state is filled by SplitMix64 (never all zero).
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut s = [0u64; 4];
        for w in &mut s {
            x = x.wrapping_add(GOLDEN);
            *w = mix64(x);
        }
        if s == [0; 4] {
            s[0] = GOLDEN;
        }
        Rng { s }
    }

    /// An independent stream for (`seed`, `path`): e.g. `[phase, thread, connection]`.
    pub fn derive(seed: u64, path: &[u64]) -> Rng {
        let mut h = mix64(seed ^ 0x6b76_6265_6e63_6821);
        for &p in path {
            h = mix64(h.wrapping_add(GOLDEN) ^ p);
        }
        Rng::new(h)
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1]: safe to take the logarithm of.
    #[inline]
    pub fn next_f64_nonzero(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n) without modulo bias (Lemire's multiply-and-reject).
    /// `n == 0` returns 0.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        let mut low = m as u64;
        if low < n {
            let threshold = n.wrapping_neg() % n;
            while low < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
                low = m as u64;
            }
        }
        (m >> 64) as u64
    }

    /// Standard normal deviate (Marsaglia's polar method; the second deviate of each pair
    /// is dropped so that no hidden state outlives a call).
    pub fn normal(&mut self) -> f64 {
        loop {
            let u = 2.0 * self.next_f64() - 1.0;
            let v = 2.0 * self.next_f64() - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                return u * (-2.0 * s.ln() / s).sqrt();
            }
        }
    }

    /// Exponential deviate with mean 1.
    #[inline]
    pub fn exp1(&mut self) -> f64 {
        -self.next_f64_nonzero().ln()
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

/// Zipf over ranks `0..n`: rank `r` has probability `(r+1)^-α / H(n, α)`. Sampled by
/// rejection-inversion (Hörmann and Derflinger, "Rejection-inversion to generate variates
/// from monotone discrete distributions", 1996): exact for any n and any exponent ≥ 0, O(1)
/// memory and set-up, about 1.1 uniforms per sample.
#[derive(Clone, Debug)]
pub struct Zipf {
    n: f64,
    exponent: f64,
    h_integral_x1: f64,
    h_integral_n: f64,
    s: f64,
    /// H(n, α), summed on the first [`Zipf::pmf`] (O(n)); sampling never needs it.
    norm: OnceLock<f64>,
}

impl Zipf {
    /// Zipf over `0..n` (n ≥ 1) with `exponent` ≥ 0.
    pub fn new(n: u64, exponent: f64) -> Zipf {
        let n = n.max(1) as f64;
        let mut z = Zipf {
            n,
            exponent,
            h_integral_x1: 0.0,
            h_integral_n: 0.0,
            s: 0.0,
            norm: OnceLock::new(),
        };
        z.h_integral_x1 = z.h_integral(1.5) - 1.0;
        z.h_integral_n = z.h_integral(n + 0.5);
        z.s = 2.0 - z.h_integral_inverse(z.h_integral(2.5) - z.h(2.0));
        z
    }

    /// The number of ranks.
    pub fn len(&self) -> u64 {
        self.n as u64
    }

    /// Never: a Zipf has at least one rank.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// A rank in `0..n`; 0 is the most popular.
    #[inline]
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        loop {
            let u = self.h_integral_n + rng.next_f64() * (self.h_integral_x1 - self.h_integral_n);
            let x = self.h_integral_inverse(u);
            let k = (x + 0.5).floor().clamp(1.0, self.n);
            if k - x <= self.s || u >= self.h_integral(k + 0.5) - self.h(k) {
                return k as u64 - 1;
            }
        }
    }

    /// The probability of rank `r` (0 outside `0..n`). The first call sums the normalising
    /// constant over all n ranks, smallest terms first.
    pub fn pmf(&self, r: u64) -> f64 {
        if r >= self.len() {
            return 0.0;
        }
        let norm = *self.norm.get_or_init(|| {
            (1..=self.len())
                .rev()
                .map(|k| (k as f64).powf(-self.exponent))
                .sum()
        });
        ((r + 1) as f64).powf(-self.exponent) / norm
    }

    /// ∫ h from 1 to x, where h(x) = x^-exponent, written to stay accurate near
    /// exponent = 1: (x^(1-e) - 1) / (1 - e).
    fn h_integral(&self, x: f64) -> f64 {
        let log_x = x.ln();
        helper2((1.0 - self.exponent) * log_x) * log_x
    }

    fn h(&self, x: f64) -> f64 {
        (-self.exponent * x.ln()).exp()
    }

    fn h_integral_inverse(&self, x: f64) -> f64 {
        let mut t = x * (1.0 - self.exponent);
        if t < -1.0 {
            // Rounding can push t just below -1 (where ln1p is undefined).
            t = -1.0;
        }
        (helper1(t) * x).exp()
    }
}

/// ln(1 + x) / x, accurate near 0.
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// (e^x - 1) / x, accurate near 0.
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x * (1.0 / 3.0) * (1.0 + 0.25 * x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zipf_pmf(n: u64, a: f64) -> Vec<f64> {
        let w: Vec<f64> = (1..=n).map(|k| (k as f64).powf(-a)).collect();
        let total: f64 = w.iter().sum();
        w.into_iter().map(|x| x / total).collect()
    }

    /// Pearson's chi-square of `counts` against `pmf`.
    fn chi_square(counts: &[u64], pmf: &[f64]) -> f64 {
        let n: u64 = counts.iter().sum();
        counts
            .iter()
            .zip(pmf)
            .map(|(&c, &p)| {
                let e = p * n as f64;
                (c as f64 - e).powi(2) / e
            })
            .sum()
    }

    #[test]
    fn zipf_is_exact_on_small_key_spaces() {
        // Critical values of chi-square at p = 0.001: df 9 → 27.88, df 4 → 18.47,
        // df 49 → 85.35. Seeds are fixed, so this is deterministic.
        for (n, a, crit) in [
            (10u64, 0.99, 27.88),
            (10, 1.0, 27.88),
            (10, 1.2, 27.88),
            (10, 0.5, 27.88),
            (10, 0.0, 27.88),
            (5, 2.5, 18.47),
            (50, 0.99, 85.35),
        ] {
            let z = Zipf::new(n, a);
            let mut rng = Rng::new(n ^ a.to_bits());
            let mut counts = vec![0u64; n as usize];
            for _ in 0..400_000 {
                let k = z.sample(&mut rng);
                assert!(k < n);
                counts[k as usize] += 1;
            }
            let chi = chi_square(&counts, &zipf_pmf(n, a));
            assert!(chi < crit, "n={n} a={a}: chi²={chi} counts={counts:?}");
        }
    }

    #[test]
    fn zipf_one_key_and_huge_key_spaces() {
        let mut rng = Rng::new(1);
        let z = Zipf::new(1, 0.99);
        assert!((0..100).all(|_| z.sample(&mut rng) == 0));
        let z = Zipf::new(1 << 40, 1.2);
        let mut top = 0;
        for _ in 0..100_000 {
            let k = z.sample(&mut rng);
            assert!(k < 1 << 40);
            top += u32::from(k == 0);
        }
        // P(the first rank) = 1/ζ(1.2) ≈ 0.1807 for an (effectively) infinite key space.
        assert!((17_000..19_200).contains(&top), "{top}");
    }

    #[test]
    fn zipf_pmf_matches_its_samples() {
        let z = Zipf::new(1000, 0.99);
        let total: f64 = (0..1000).map(|r| z.pmf(r)).sum();
        assert!((total - 1.0).abs() < 1e-9);
        assert_eq!(z.pmf(1000), 0.0);
        let mut rng = Rng::new(1);
        let n = 2_000_000;
        let mut c = vec![0u64; 1000];
        for _ in 0..n {
            c[z.sample(&mut rng) as usize] += 1;
        }
        for r in [0u64, 1, 9, 99, 999] {
            let p = z.pmf(r);
            let sd = (p * (1.0 - p) / n as f64).sqrt();
            let got = c[r as usize] as f64 / n as f64;
            assert!((got - p).abs() < 5.0 * sd + 1e-9, "rank {r}: {got} vs {p}");
        }
        // The well-known figure: Zipf 0.99 over 10^6 keys, the top key has ~6.5%.
        let big = Zipf::new(1_000_000, 0.99);
        assert!((big.pmf(0) - 0.065).abs() < 0.001, "{}", big.pmf(0));
    }

    #[test]
    fn permutations_are_permutations() {
        let mut rng = Rng::new(3);
        let mut p = rng.permutation(100);
        assert_ne!(p, (0..100).collect::<Vec<u32>>());
        p.sort();
        assert_eq!(p, (0..100).collect::<Vec<u32>>());
        assert!(rng.permutation(0).is_empty());
    }

    #[test]
    fn seeds_are_reproducible_and_streams_differ() {
        let a: Vec<u64> = {
            let mut r = Rng::new(42);
            (0..8).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(42);
            (0..8).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        let mut c = Rng::derive(42, &[1, 0]);
        let mut d = Rng::derive(42, &[0, 1]);
        assert_ne!(c.next_u64(), d.next_u64());
        // Pinned output: a change here changes every seeded workload.
        assert_eq!(Rng::new(0).next_u64(), 0x53175d61490b23df);
    }

    #[test]
    fn below_is_uniform_and_in_range() {
        let mut r = Rng::new(7);
        let mut counts = [0u32; 6];
        for _ in 0..60_000 {
            let x = r.below(6);
            counts[x as usize] += 1;
        }
        for c in counts {
            assert!((9_500..10_500).contains(&c), "{counts:?}");
        }
        assert_eq!(r.below(0), 0);
        assert_eq!(r.below(1), 0);
        for _ in 0..1000 {
            assert!(r.below(u64::MAX) < u64::MAX);
        }
    }

    #[test]
    fn floats_in_range_and_moments() {
        let mut r = Rng::new(9);
        let n = 200_000;
        let (mut sum, mut sq, mut esum) = (0.0, 0.0, 0.0);
        for _ in 0..n {
            let x = r.next_f64();
            assert!((0.0..1.0).contains(&x));
            let y = r.next_f64_nonzero();
            assert!(y > 0.0 && y <= 1.0);
            let z = r.normal();
            sum += z;
            sq += z * z;
            esum += r.exp1();
        }
        let mean = sum / n as f64;
        let var = sq / n as f64 - mean * mean;
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((var - 1.0).abs() < 0.02, "{var}");
        assert!((esum / n as f64 - 1.0).abs() < 0.01);
    }
}
