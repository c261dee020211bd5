//! The distributions a workload draws from: which key (uniform, Zipf, Gaussian,
//! sequential) and how big keys and values are (fixed, uniform, generalized extreme
//! value, generalized Pareto — the last two fitted to Facebook's ETC pool by Atikoglu et
//! al., "Workload Analysis of a Large-Scale Key-Value Store", SIGMETRICS 2012).
//!
//! Owns: sampling and the `--dist`/`--key-size`/`--value-size` spec grammar. Must not: know
//! key names, sockets or time (the hot-set shift lives in [`super::workload`]); the
//! generator and the Zipf sampler are kvlb's ([`kvlb::random`]), shared with the detector
//! experiments.

use std::fmt;
use std::str::FromStr;

use kvlb::random::Rng;

/// A spec that does not parse; the message says what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad {what} '{spec}': {why}")]
pub struct SpecError {
    pub what: &'static str,
    pub spec: String,
    pub why: &'static str,
}

fn spec_err(what: &'static str, spec: &str, why: &'static str) -> SpecError {
    SpecError {
        what,
        spec: spec.to_owned(),
        why,
    }
}

fn parse_params<const N: usize>(
    what: &'static str,
    spec: &str,
    args: &str,
) -> Result<[f64; N], SpecError> {
    let mut out = [0.0; N];
    let mut parts = args.split(',');
    for slot in &mut out {
        let p = parts
            .next()
            .ok_or_else(|| spec_err(what, spec, "too few parameters"))?;
        *slot = p
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| spec_err(what, spec, "parameters must be finite numbers"))?;
    }
    if parts.next().is_some() {
        return Err(spec_err(what, spec, "too many parameters"));
    }
    Ok(out)
}

/// How keys are picked from the key space `[0, n)` (before the workload's permutation and
/// hot-set shift, which turn a rank into a key index).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform,
    /// Zipf with exponent α ≥ 0: rank r (1-based) has probability ∝ r^-α.
    Zipf(f64),
    /// Normal around the middle of the key space with standard deviation `sd`·n.
    Gaussian { sd: f64 },
    /// Each connection walks the key space in order from its own starting point.
    Sequential,
}

impl FromStr for KeyDist {
    type Err = SpecError;
    fn from_str(spec: &str) -> Result<KeyDist, SpecError> {
        const WHAT: &str = "key distribution";
        let (name, args) = match spec.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (spec, None),
        };
        match (name, args) {
            ("uniform", None) => Ok(KeyDist::Uniform),
            ("seq" | "sequential", None) => Ok(KeyDist::Sequential),
            ("zipf", a) => {
                let [alpha] = match a {
                    Some(a) => parse_params::<1>(WHAT, spec, a)?,
                    None => [0.99],
                };
                if !(0.0..=100.0).contains(&alpha) {
                    return Err(spec_err(WHAT, spec, "Zipf exponent must be in [0, 100]"));
                }
                Ok(KeyDist::Zipf(alpha))
            }
            ("gauss" | "gaussian" | "normal", a) => {
                let [sd] = match a {
                    Some(a) => parse_params::<1>(WHAT, spec, a)?,
                    None => [0.1],
                };
                if !(sd > 0.0 && sd <= 10.0) {
                    return Err(spec_err(
                        WHAT,
                        spec,
                        "standard deviation (a fraction of the key space) must be in (0, 10]",
                    ));
                }
                Ok(KeyDist::Gaussian { sd })
            }
            _ => Err(spec_err(
                WHAT,
                spec,
                "expected uniform, zipf[:ALPHA], gauss[:SD] or seq",
            )),
        }
    }
}

impl fmt::Display for KeyDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyDist::Uniform => f.write_str("uniform"),
            KeyDist::Zipf(a) => write!(f, "zipf:{a}"),
            KeyDist::Gaussian { sd } => write!(f, "gauss:{sd}"),
            KeyDist::Sequential => f.write_str("seq"),
        }
    }
}

/// Facebook ETC key sizes: GEV(μ = 30.7984, σ = 8.20449, ξ = 0.078688) (Atikoglu et al.).
pub const ETC_KEY: SizeDist = SizeDist::Gev {
    mu: 30.7984,
    sigma: 8.20449,
    xi: 0.078688,
};

/// Facebook ETC value sizes: generalized Pareto(μ = 0, σ = 214.476, ξ = 0.348238).
pub const ETC_VALUE: SizeDist = SizeDist::GPareto {
    mu: 0.0,
    sigma: 214.476,
    xi: 0.348238,
};

/// A size distribution (bytes). Samples are rounded to whole bytes and clamped by the
/// caller's bounds (key lengths to what a key index needs and 250, values to the value
/// header and the transport's limit).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SizeDist {
    Fixed(u32),
    /// Uniform over `lo..=hi`.
    Uniform {
        lo: u32,
        hi: u32,
    },
    /// Generalized extreme value, CDF exp(-(1 + ξ(x-μ)/σ)^(-1/ξ)).
    Gev {
        mu: f64,
        sigma: f64,
        xi: f64,
    },
    /// Generalized Pareto, CDF 1 - (1 + ξ(x-μ)/σ)^(-1/ξ).
    GPareto {
        mu: f64,
        sigma: f64,
        xi: f64,
    },
}

impl SizeDist {
    /// Parses `N`, `fixed:N`, `uniform:LO,HI`, `gev:MU,SIGMA,XI`, `pareto:MU,SIGMA,XI`, or
    /// `etc` (which means `etc_default`: ETC keys or ETC values).
    pub fn parse(
        what: &'static str,
        spec: &str,
        etc_default: SizeDist,
    ) -> Result<SizeDist, SpecError> {
        let int = |s: &str| -> Result<u32, SpecError> {
            s.trim()
                .parse::<u32>()
                .map_err(|_| spec_err(what, spec, "sizes are whole numbers of bytes"))
        };
        if let Ok(n) = spec.parse::<u32>() {
            return Ok(SizeDist::Fixed(n));
        }
        let (name, args) = spec.split_once(':').unwrap_or((spec, ""));
        let three = |args: &str| -> Result<(f64, f64, f64), SpecError> {
            let [mu, sigma, xi] = parse_params::<3>(what, spec, args)?;
            if sigma <= 0.0 {
                return Err(spec_err(what, spec, "sigma must be > 0"));
            }
            Ok((mu, sigma, xi))
        };
        match name {
            "etc" if args.is_empty() => Ok(etc_default),
            "fixed" => Ok(SizeDist::Fixed(int(args)?)),
            "uniform" => {
                let (lo, hi) = args
                    .split_once(',')
                    .ok_or_else(|| spec_err(what, spec, "expected uniform:LO,HI"))?;
                let (lo, hi) = (int(lo)?, int(hi)?);
                if lo > hi {
                    return Err(spec_err(what, spec, "LO must not exceed HI"));
                }
                Ok(SizeDist::Uniform { lo, hi })
            }
            "gev" => {
                let (mu, sigma, xi) = three(args)?;
                Ok(SizeDist::Gev { mu, sigma, xi })
            }
            "pareto" | "gpareto" => {
                let (mu, sigma, xi) = three(args)?;
                Ok(SizeDist::GPareto { mu, sigma, xi })
            }
            _ => Err(spec_err(
                what,
                spec,
                "expected N, fixed:N, uniform:LO,HI, gev:MU,SIGMA,XI, pareto:MU,SIGMA,XI or etc",
            )),
        }
    }

    /// The size at quantile `u` ∈ (0, 1) (inverse CDF), before rounding and clamping.
    pub fn quantile(&self, u: f64) -> f64 {
        match *self {
            SizeDist::Fixed(n) => f64::from(n),
            SizeDist::Uniform { lo, hi } => {
                let span = f64::from(hi - lo) + 1.0;
                (f64::from(lo) + (u * span).floor()).min(f64::from(hi))
            }
            SizeDist::Gev { mu, sigma, xi } => {
                let y = -u.ln();
                if xi.abs() < 1e-12 {
                    mu - sigma * y.ln()
                } else {
                    mu + sigma * (y.powf(-xi) - 1.0) / xi
                }
            }
            SizeDist::GPareto { mu, sigma, xi } => {
                let tail = 1.0 - u;
                if xi.abs() < 1e-12 {
                    mu - sigma * tail.ln()
                } else {
                    mu + sigma * (tail.powf(-xi) - 1.0) / xi
                }
            }
        }
    }

    /// A size for uniform deviate `u` ∈ (0, 1), rounded and clamped to `lo..=hi`.
    pub fn size_at(&self, u: f64, lo: u32, hi: u32) -> u32 {
        let x = self.quantile(u.clamp(f64::MIN_POSITIVE, 1.0 - f64::EPSILON));
        let x = if x.is_nan() { f64::from(lo) } else { x.round() };
        (x.clamp(f64::from(lo), f64::from(hi.max(lo)))) as u32
    }

    /// A random size in `lo..=hi`.
    pub fn sample(&self, rng: &mut Rng, lo: u32, hi: u32) -> u32 {
        match *self {
            SizeDist::Fixed(n) => n.clamp(lo, hi.max(lo)),
            _ => self.size_at(rng.next_f64_nonzero().min(1.0 - f64::EPSILON), lo, hi),
        }
    }
}

impl fmt::Display for SizeDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SizeDist::Fixed(n) => write!(f, "{n}"),
            SizeDist::Uniform { lo, hi } => write!(f, "uniform:{lo},{hi}"),
            SizeDist::Gev { mu, sigma, xi } => write!(f, "gev:{mu},{sigma},{xi}"),
            SizeDist::GPareto { mu, sigma, xi } => write!(f, "pareto:{mu},{sigma},{xi}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_dist_specs() {
        assert_eq!("uniform".parse(), Ok(KeyDist::Uniform));
        assert_eq!("zipf".parse(), Ok(KeyDist::Zipf(0.99)));
        assert_eq!("zipf:1.2".parse(), Ok(KeyDist::Zipf(1.2)));
        assert_eq!("gauss".parse(), Ok(KeyDist::Gaussian { sd: 0.1 }));
        assert_eq!("normal:0.05".parse(), Ok(KeyDist::Gaussian { sd: 0.05 }));
        assert_eq!("seq".parse(), Ok(KeyDist::Sequential));
        for bad in [
            "zipf:", "zipf:-1", "zipf:x", "zipf:1,2", "gauss:0", "pareto", "",
        ] {
            assert!(bad.parse::<KeyDist>().is_err(), "{bad}");
        }
        for d in [
            KeyDist::Zipf(0.99),
            KeyDist::Gaussian { sd: 0.2 },
            KeyDist::Sequential,
        ] {
            assert_eq!(d.to_string().parse(), Ok(d));
        }
    }

    #[test]
    fn size_specs() {
        let p = |s| SizeDist::parse("value size", s, ETC_VALUE);
        assert_eq!(p("100"), Ok(SizeDist::Fixed(100)));
        assert_eq!(p("fixed:7"), Ok(SizeDist::Fixed(7)));
        assert_eq!(p("uniform:1,9"), Ok(SizeDist::Uniform { lo: 1, hi: 9 }));
        assert_eq!(p("etc"), Ok(ETC_VALUE));
        assert_eq!(
            p("gev:1,2,0.1"),
            Ok(SizeDist::Gev {
                mu: 1.0,
                sigma: 2.0,
                xi: 0.1
            })
        );
        for bad in [
            "uniform:9,1",
            "uniform:1",
            "gev:1,0,1",
            "pareto:1,2",
            "x",
            "-1",
            "etc:1",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn uniform_sizes_cover_the_range() {
        let d = SizeDist::Uniform { lo: 3, hi: 6 };
        let mut rng = Rng::new(5);
        let mut seen = [0u32; 7];
        for _ in 0..40_000 {
            let s = d.sample(&mut rng, 0, 1000);
            seen[s as usize] += 1;
        }
        assert_eq!(&seen[..3], &[0, 0, 0]);
        for c in &seen[3..] {
            assert!((9_500..10_500).contains(c), "{seen:?}");
        }
    }

    /// ETC sizes: within bounds, and median and mean where the fitted distributions put
    /// them.
    #[test]
    fn etc_sizes_within_bounds() {
        let mut rng = Rng::new(11);
        let n = 200_000;
        let mut keys: Vec<u32> = (0..n).map(|_| ETC_KEY.sample(&mut rng, 1, 250)).collect();
        assert!(keys.iter().all(|&k| (1..=250).contains(&k)));
        keys.sort_unstable();
        // GEV median: μ + σ((ln 2)^-ξ - 1)/ξ ≈ 33.85.
        let median = keys[n / 2];
        assert!((33..=35).contains(&median), "{median}");
        let mean = keys.iter().map(|&k| f64::from(k)).sum::<f64>() / n as f64;
        assert!((34.0..37.5).contains(&mean), "{mean}");

        let cap = 1 << 20;
        let mut values: Vec<u32> = (0..n).map(|_| ETC_VALUE.sample(&mut rng, 1, cap)).collect();
        assert!(values.iter().all(|&v| (1..=cap).contains(&v)));
        values.sort_unstable();
        // GP median: σ(2^ξ - 1)/ξ ≈ 167.4; mean σ/(1-ξ) ≈ 329 (heavy tail: loose bounds).
        let median = values[n / 2];
        assert!((160..=175).contains(&median), "{median}");
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
        assert!((290.0..370.0).contains(&mean), "{mean}");
        // Clamping holds at both ends.
        assert!((0..1000).all(|_| ETC_VALUE.sample(&mut rng, 32, 1400) >= 32));
        assert!((0..1000).all(|_| ETC_VALUE.sample(&mut rng, 32, 1400) <= 1400));
    }
}
