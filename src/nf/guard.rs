//! Who may use the VIP, how fast, and how much kvlb may send back to them.
//!
//! # Policy
//! 1. **Allow list.** Only sources inside `--allow` prefixes may use the VIP (no `--allow`:
//!    any source, with a warning at startup). Others are dropped (`acl_denied`).
//! 2. **Rate limit.** Each source address gets a token bucket of `--rate-limit` requests per
//!    second with `--rate-burst` burst (`rate_limited` drops). Buckets live in a fixed
//!    direct-mapped table indexed by a hash of the address, so memory is bounded whatever
//!    the number of sources; two sources that collide share a bucket (the limit only ever
//!    gets stricter, never looser).
//! 3. **Anti-amplification.** Memcached over UDP gives a source no way to prove it owns its
//!    address (there is no round trip kvlb could make it echo), so kvlb cannot tell a real
//!    client from a spoofed one. It therefore bounds, per request, the reply bytes sent to
//!    every source outside `--trusted` prefixes: at most `--unverified-reply-bytes` (default
//!    one datagram, 1400 bytes). A spoofed 15-byte `get` can then draw at most ~90× its size,
//!    instead of the 10,000×+ of a `stats` or large-value reply from an unprotected
//!    memcached. Datagrams beyond the bound are dropped (`amplification_guard`). Loopback
//!    is trusted by default.

use std::net::Ipv4Addr;

use crate::clock::Instant;
use crate::config::Cidr;

/// A source's request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    NotAllowed,
    RateLimited,
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    /// Tokens in millitokens, so refills at low rates keep their fractions.
    milli: u64,
    last: Instant,
}

/// The per-source admission policy (allow list and rate limit) and the reply cap.
#[derive(Debug)]
pub struct SourceGuard {
    allow: Vec<Cidr>,
    trusted: Vec<Cidr>,
    rate: u64,
    burst_milli: u64,
    buckets: Vec<Bucket>,
    reply_cap: usize,
}

/// Direct-mapped bucket table size (a power of two).
const BUCKETS: usize = 1 << 14;

impl SourceGuard {
    /// `rate` = 0 disables rate limiting; `burst` = 0 means "one second's worth".
    pub fn new(
        allow: &[Cidr],
        trusted: &[Cidr],
        rate: u32,
        burst: u32,
        reply_cap: usize,
    ) -> SourceGuard {
        let burst = if burst == 0 { rate } else { burst };
        SourceGuard {
            allow: allow.to_vec(),
            trusted: trusted.to_vec(),
            rate: u64::from(rate),
            burst_milli: u64::from(burst.max(1)) * 1000,
            buckets: if rate == 0 {
                Vec::new()
            } else {
                vec![Bucket::default(); BUCKETS]
            },
            reply_cap,
        }
    }

    /// Admits or refuses one request from `src` at `now`.
    #[inline]
    pub fn admit(&mut self, src: Ipv4Addr, now: Instant) -> Result<(), Refusal> {
        if !self.allow.is_empty() && !self.allow.iter().any(|c| c.contains(src)) {
            return Err(Refusal::NotAllowed);
        }
        if self.rate == 0 {
            return Ok(());
        }
        // Fibonacci hashing of the address picks the bucket.
        let ix =
            (u32::from(src).wrapping_mul(0x9E37_79B9) >> (32 - BUCKETS.trailing_zeros())) as usize;
        let b = &mut self.buckets[ix];
        if b.last == Instant::ZERO && b.milli == 0 {
            b.milli = self.burst_milli;
            b.last = now;
        }
        let elapsed_ns = now.saturating_duration_since(b.last).as_nanos();
        // rate tokens/s = rate millitokens/ms = rate * 1000 millitokens per 1e9 ns.
        let refill = (elapsed_ns.saturating_mul(u128::from(self.rate)) / 1_000_000) as u64;
        if refill > 0 {
            b.milli = (b.milli.saturating_add(refill)).min(self.burst_milli);
            b.last = now;
        }
        if b.milli >= 1000 {
            b.milli -= 1000;
            Ok(())
        } else {
            Err(Refusal::RateLimited)
        }
    }

    /// The most reply bytes kvlb may send `src` for one request (`usize::MAX` if trusted).
    #[inline]
    pub fn reply_cap(&self, src: Ipv4Addr) -> usize {
        if self.trusted.iter().any(|c| c.contains(src)) {
            usize::MAX
        } else {
            self.reply_cap
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Instant {
        Instant::from_nanos(n * 1_000_000 + 1)
    }

    #[test]
    fn allow_list() {
        let allow = ["10.0.0.0/8".parse().unwrap()];
        let mut g = SourceGuard::new(&allow, &[], 0, 0, 1400);
        assert_eq!(g.admit(Ipv4Addr::new(10, 1, 2, 3), ms(0)), Ok(()));
        assert_eq!(
            g.admit(Ipv4Addr::new(11, 1, 2, 3), ms(0)),
            Err(Refusal::NotAllowed)
        );
        let mut open = SourceGuard::new(&[], &[], 0, 0, 1400);
        assert_eq!(open.admit(Ipv4Addr::new(8, 8, 8, 8), ms(0)), Ok(()));
    }

    #[test]
    fn rate_limit_refills() {
        let mut g = SourceGuard::new(&[], &[], 10, 5, 1400);
        let a = Ipv4Addr::new(192, 168, 0, 1);
        for _ in 0..5 {
            assert_eq!(g.admit(a, ms(0)), Ok(()));
        }
        assert_eq!(g.admit(a, ms(0)), Err(Refusal::RateLimited));
        // 10/s: one token per 100 ms.
        assert_eq!(g.admit(a, ms(50)), Err(Refusal::RateLimited));
        assert_eq!(g.admit(a, ms(100)), Ok(()));
        assert_eq!(g.admit(a, ms(100)), Err(Refusal::RateLimited));
        // Another source has its own bucket (they do not collide here).
        assert_eq!(g.admit(Ipv4Addr::new(192, 168, 0, 2), ms(100)), Ok(()));
        // Over a long run the admitted rate converges to the limit.
        let mut ok = 0;
        for t in 0..10_000u64 {
            if g.admit(a, ms(1000 + t)).is_ok() {
                ok += 1;
            }
        }
        assert!((99..=106).contains(&ok), "{ok} admitted in 10 s at 10/s");
    }

    #[test]
    fn reply_cap_spares_trusted_sources() {
        let trusted = ["127.0.0.0/8".parse().unwrap()];
        let g = SourceGuard::new(&[], &trusted, 0, 0, 1400);
        assert_eq!(g.reply_cap(Ipv4Addr::LOCALHOST), usize::MAX);
        assert_eq!(g.reply_cap(Ipv4Addr::new(10, 0, 0, 1)), 1400);
    }
}
