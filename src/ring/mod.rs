//! Ketama consistent hashing, bit-compatible with libmemcached's weighted ketama, and
//! replica sets.
//!
//! Owns: key → server placement (the continuum, the key hash, replica sets). Must not: know
//! whether a server is healthy (the caller rebuilds the ring with a liveness mask), send
//! anything, or read clocks.
//!
//! # What "compatible" means, exactly
//!
//! kvlb places keys where a libmemcached client configured with
//! `MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED = 1` (distribution `CONSISTENT_WEIGHTED`, which also
//! sets both the key hash and the distribution hash to MD5) places them, for the same server
//! list in the same order. Read from libmemcached 1.1.4 (`src/libmemcached/hosts.cc`
//! `update_continuum`, `hash.cc` `dispatch_host`, `libhashkit/md5.cc`), which is the version
//! Debian 12 ships and the one `tests/ketama_libmemcached.rs` checks against:
//!
//! - **Points.** Every live server gets `floor(pct · 160/4 · live + 1e-10) · 4` points, where
//!   `pct = weight / total weight of the live servers`, computed in single precision (`float`)
//!   exactly as written there — the f32 rounding decides, for some lists, whether a server
//!   gets 156 or 160 points, so it is reproduced operation by operation in [`points_for`].
//!   A weight of 0 counts as 1 (libmemcached's `_server_init`).
//! - **Point names.** `"{host}-{i}"` when the port is 11211 and `"{host}:{port}-{i}"`
//!   otherwise, `i` in `0..points/4`, with `host` exactly as the user wrote it (no name
//!   resolution: `localhost` and `127.0.0.1` are different rings).
//! - **Point hashes.** Each name's MD5 digest yields four points: digest bytes
//!   `4a..4a+4` read little-endian, for `a` in `0..4`.
//! - **Order.** Points sorted by (hash, server index); a key goes to the first point whose
//!   hash is ≥ the key's hash, wrapping to the first point.
//! - **Key hash.** The first four bytes of the key's MD5 digest, little-endian
//!   ([`ketama_hash`]). (libmemcached's *default* key hash is one-at-a-time; only the
//!   `KETAMA_WEIGHTED` behaviour switches it to MD5. A client that sets
//!   `MEMCACHED_DISTRIBUTION_CONSISTENT` and weights but not `KETAMA_WEIGHTED` gets MD5 points
//!   with one-at-a-time key hashes and is *not* what kvlb reproduces.) With a single server
//!   in its list libmemcached skips hashing (hash 0); the answer is the same server.
//!
//! # Dead servers
//!
//! With `MEMCACHED_BEHAVIOR_REMOVE_FAILED_SERVERS` (= `AUTO_EJECT_HOSTS`, the same flag),
//! libmemcached marks a server that reached `SERVER_FAILURE_LIMIT` with a `next_retry` time
//! in the future and calls `run_distribution`, which rebuilds the continuum over the servers
//! whose `next_retry` has passed: the dead server contributes no points, and `live` and the
//! total weight in the formula above count live servers only. Server indexes still refer to
//! the full list. When `next_retry` passes, the next key lookup rebuilds the continuum with
//! the server back in. A ring built here with a liveness mask is therefore the ring of the
//! list with the dead servers removed, with indexes into the full list — which is what
//! libmemcached computes, and what the integration test checks (both against a real
//! auto-ejected libmemcached and against libmemcached given the shorter list).
//!
//! Note what that implies: because points are re-apportioned over the live servers, an
//! ejection moves the dead server's keys *and*, when weights differ or the f32 rounding of
//! the point count changes with the number of live servers (25 equal servers get 156
//! points each, 24 get 160), some keys between live servers. For failover that moves only
//! the dead server's keys (to the next live point of the unchanged continuum), keep the
//! full ring and use [`KetamaRing::server_for_hash_where`] /
//! [`KetamaRing::replicas_where`] with the liveness as the filter; libmemcached clients
//! that auto-eject will then disagree on some keys of live servers.
//!
//! # Per-packet cost
//!
//! [`ketama_hash`] is one MD5 block for keys up to 55 bytes. [`KetamaRing::server_for_hash`]
//! looks up a 2^[`BUCKET_BITS`]-entry table indexed by the hash's top bits that narrows the
//! binary search to the few points of one bucket. [`KetamaRing::replicas`] walks the
//! continuum from the primary's point and allocates nothing.

use std::fmt;
use std::io::Write as _;

use md5::{Digest, Md5};

use crate::config::BackendSpec;

mod md5_block;

/// libmemcached's `MEMCACHED_POINTS_PER_SERVER_KETAMA`.
pub const POINTS_PER_SERVER: u32 = 160;

/// libmemcached's `MEMCACHED_DEFAULT_PORT`: point names omit the port when it is this one.
pub const DEFAULT_PORT: u16 = 11211;

/// The most servers a [`ReplicaSet`] holds (the primary and up to `MAX_REPLICA_SET - 1`
/// replicas).
pub const MAX_REPLICA_SET: usize = 16;

/// The most servers a ring indexes (indexes are stored as `u16`).
pub const MAX_SERVERS: usize = u16::MAX as usize;

/// log2 of the number of buckets of the lookup table that narrows the binary search.
pub const BUCKET_BITS: u32 = 12;

/// libmemcached's key hash under `KETAMA_WEIGHTED`: the first four bytes of the key's MD5
/// digest, little-endian.
#[inline]
pub fn ketama_hash(key: &[u8]) -> u32 {
    md5_block::first_word(key)
}

/// The number of continuum points libmemcached gives a live server of weight `weight` when
/// the live servers' weights sum to `total_weight` and `live` servers are live. Single
/// precision throughout, operation for operation as in `update_continuum`.
pub fn points_for(weight: u32, total_weight: u64, live: u32) -> u32 {
    if total_weight == 0 {
        return 0;
    }
    let pct = weight as f32 / total_weight as f32;
    let scaled = pct * POINTS_PER_SERVER as f32 / 4.0 * live as f32 + 0.000_000_000_1_f32;
    // `floor` of a non-negative f32 below 2^24 converts exactly.
    (scaled.floor() as u32).saturating_mul(4)
}

/// One server as the ring sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingServer<'a> {
    /// The host exactly as the user wrote it.
    pub host: &'a str,
    pub port: u16,
    /// Ketama weight; 0 counts as 1, as in libmemcached.
    pub weight: u32,
    /// Whether the server takes part in the continuum.
    pub live: bool,
}

/// Why a ring cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error("{0} servers is more than a ring indexes ({MAX_SERVERS})")]
    TooManyServers(usize),
    #[error("liveness mask has {mask} entries for {servers} servers")]
    MaskLength { servers: usize, mask: usize },
}

/// A ketama continuum over a server list, some of whose servers may be down.
#[derive(Clone)]
pub struct KetamaRing {
    /// Point hashes, ascending.
    values: Box<[u32]>,
    /// The server index of each point (index into the list the ring was built from).
    owners: Box<[u16]>,
    /// `buckets[b]` is the first point whose hash is ≥ `b << (32 - BUCKET_BITS)`;
    /// `buckets[1 << BUCKET_BITS]` is the number of points.
    buckets: Box<[u32]>,
    /// Points per server (0 for down servers and for servers whose weight rounds to 0).
    points_per_server: Box<[u32]>,
    /// Servers owning at least one point.
    servers_on_ring: usize,
}

impl fmt::Debug for KetamaRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KetamaRing")
            .field("servers", &self.points_per_server.len())
            .field("servers_on_ring", &self.servers_on_ring)
            .field("points", &self.values.len())
            .finish()
    }
}

impl KetamaRing {
    /// Builds the continuum over the live servers of `servers`.
    pub fn new(servers: &[RingServer<'_>]) -> Result<KetamaRing, RingError> {
        if servers.len() > MAX_SERVERS {
            return Err(RingError::TooManyServers(servers.len()));
        }
        let weight = |s: &RingServer<'_>| s.weight.max(1);
        let live = servers.iter().filter(|s| s.live).count() as u32;
        let total_weight: u64 = servers
            .iter()
            .filter(|s| s.live)
            .map(|s| u64::from(weight(s)))
            .sum();

        let mut points_per_server = vec![0u32; servers.len()];
        for (i, s) in servers.iter().enumerate() {
            if s.live {
                points_per_server[i] = points_for(weight(s), total_weight, live);
            }
        }
        let total: usize = points_per_server.iter().map(|&p| p as usize).sum();
        let mut points: Vec<(u32, u16)> = Vec::with_capacity(total);
        let mut name = Vec::with_capacity(64);
        for (i, s) in servers.iter().enumerate() {
            for n in 0..points_per_server[i] / 4 {
                name.clear();
                // Writing into a Vec cannot fail.
                let _ = if s.port == DEFAULT_PORT {
                    write!(name, "{}-{}", s.host, n)
                } else {
                    write!(name, "{}:{}-{}", s.host, s.port, n)
                };
                let digest = Md5::digest(&name);
                for a in 0..4 {
                    let b = &digest[4 * a..4 * a + 4];
                    let value = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    points.push((value, i as u16));
                }
            }
        }
        points.sort_unstable();

        let values: Box<[u32]> = points.iter().map(|p| p.0).collect();
        let owners: Box<[u16]> = points.iter().map(|p| p.1).collect();
        let nb = 1usize << BUCKET_BITS;
        let mut buckets = vec![0u32; nb + 1];
        let mut at = 0usize;
        for (b, slot) in buckets.iter_mut().enumerate().take(nb) {
            let start = (b as u64) << (32 - BUCKET_BITS);
            while at < values.len() && u64::from(values[at]) < start {
                at += 1;
            }
            *slot = at as u32;
        }
        buckets[nb] = values.len() as u32;
        let servers_on_ring = points_per_server.iter().filter(|&&p| p > 0).count();
        Ok(KetamaRing {
            values,
            owners,
            buckets: buckets.into_boxed_slice(),
            points_per_server: points_per_server.into_boxed_slice(),
            servers_on_ring,
        })
    }

    /// Builds the ring of kvlb's backends; `live[i]` says whether backend `i` is up.
    pub fn from_backends(backends: &[BackendSpec], live: &[bool]) -> Result<KetamaRing, RingError> {
        if live.len() != backends.len() {
            return Err(RingError::MaskLength {
                servers: backends.len(),
                mask: live.len(),
            });
        }
        let servers: Vec<RingServer<'_>> = backends
            .iter()
            .zip(live)
            .map(|(b, &live)| RingServer {
                host: &b.host,
                port: b.port,
                weight: b.weight,
                live,
            })
            .collect();
        KetamaRing::new(&servers)
    }

    /// The key hash the continuum is searched with (see [`ketama_hash`]).
    #[inline]
    pub fn hash(key: &[u8]) -> u32 {
        ketama_hash(key)
    }

    /// The index of the first point whose hash is ≥ `hash`, wrapping to 0; `None` when the
    /// ring has no points.
    #[inline]
    fn point_for_hash(&self, hash: u32) -> Option<usize> {
        if self.values.is_empty() {
            return None;
        }
        let b = (hash >> (32 - BUCKET_BITS)) as usize;
        // Both bounds come from `new` and are ≤ values.len(); `get` keeps a bad table from
        // panicking all the same.
        let lo = *self.buckets.get(b)? as usize;
        let hi = *self.buckets.get(b + 1)? as usize;
        let within = self.values.get(lo..hi)?;
        let at = lo + within.partition_point(|&v| v < hash);
        Some(if at == self.values.len() { 0 } else { at })
    }

    /// The server (index into the list the ring was built from) that owns `hash`; `None`
    /// when no server is live.
    #[inline]
    pub fn server_for_hash(&self, hash: u32) -> Option<usize> {
        let at = self.point_for_hash(hash)?;
        Some(usize::from(self.owners[at]))
    }

    /// The server that owns `key`.
    #[inline]
    pub fn server_for_key(&self, key: &[u8]) -> Option<usize> {
        self.server_for_hash(ketama_hash(key))
    }

    /// The primary of `hash` followed by up to `r` further distinct servers, in continuum
    /// order from the primary's point: the servers a hot key is replicated to. Holds fewer
    /// when fewer servers are on the ring, and at most [`MAX_REPLICA_SET`]. Allocates
    /// nothing.
    #[inline]
    pub fn replicas(&self, hash: u32, r: usize) -> ReplicaSet {
        self.replicas_where(hash, r, |_| true)
    }

    /// Like [`KetamaRing::replicas`], over only the servers for which `usable` is true,
    /// without rebuilding the ring: the first element is where the key goes when the
    /// servers before it on the continuum are down.
    ///
    /// This is the *minimal-movement* failover: keys of usable servers never move. It
    /// differs from libmemcached's auto-eject (a ring rebuilt with [`KetamaRing::new`] and
    /// a liveness mask) when weights differ or the f32 rounding of the point count changes
    /// with the number of live servers (e.g. 25 → 24 equal servers: 156 → 160 points
    /// each), because libmemcached then re-apportions points among the live servers and
    /// moves some of their keys too. Use the rebuilt ring to agree with libmemcached
    /// clients that auto-eject; use this to move only the dead server's keys.
    pub fn replicas_where(
        &self,
        hash: u32,
        r: usize,
        usable: impl Fn(usize) -> bool,
    ) -> ReplicaSet {
        let mut set = ReplicaSet::default();
        let Some(start) = self.point_for_hash(hash) else {
            return set;
        };
        let want = (r.saturating_add(1))
            .min(MAX_REPLICA_SET)
            .min(self.servers_on_ring);
        let n = self.owners.len();
        let mut at = start;
        for _ in 0..n {
            let owner = self.owners[at];
            if !set.as_slice().contains(&owner) && usable(usize::from(owner)) {
                set.servers[set.len] = owner;
                set.len += 1;
                if set.len == want {
                    break;
                }
            }
            at += 1;
            if at == n {
                at = 0;
            }
        }
        set
    }

    /// The first usable server at or after `hash`'s point (see
    /// [`KetamaRing::replicas_where`]); `None` when no server on the ring is usable.
    #[inline]
    pub fn server_for_hash_where(
        &self,
        hash: u32,
        usable: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let start = self.point_for_hash(hash)?;
        let n = self.owners.len();
        let mut at = start;
        for _ in 0..n {
            let owner = usize::from(self.owners[at]);
            if usable(owner) {
                return Some(owner);
            }
            at += 1;
            if at == n {
                at = 0;
            }
        }
        None
    }

    /// Servers that own at least one point.
    pub fn servers_on_ring(&self) -> usize {
        self.servers_on_ring
    }

    /// Total continuum points (the tests' view).
    #[cfg(test)]
    pub fn point_count(&self) -> usize {
        self.values.len()
    }

    /// Points of server `i` (0 when it is down, or out of range). For the tests, which check
    /// the continuum against libmemcached's.
    pub fn points_of(&self, i: usize) -> u32 {
        self.points_per_server.get(i).copied().unwrap_or(0)
    }

    /// The continuum as (point hash, server index) pairs, ascending.
    pub fn points(&self) -> impl Iterator<Item = (u32, usize)> + '_ {
        self.values
            .iter()
            .zip(self.owners.iter())
            .map(|(&v, &o)| (v, usize::from(o)))
    }

    /// Heap bytes the ring holds.
    pub fn memory_bytes(&self) -> usize {
        self.values.len() * 4
            + self.owners.len() * 2
            + self.buckets.len() * 4
            + self.points_per_server.len() * 4
    }
}

/// Up to [`MAX_REPLICA_SET`] distinct server indexes, primary first. `Copy`, no heap.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ReplicaSet {
    servers: [u16; MAX_REPLICA_SET],
    len: usize,
}

impl Default for ReplicaSet {
    fn default() -> Self {
        ReplicaSet {
            servers: [0; MAX_REPLICA_SET],
            len: 0,
        }
    }
}

impl ReplicaSet {
    /// The server indexes, primary first.
    #[inline]
    pub fn as_slice(&self) -> &[u16] {
        &self.servers[..self.len]
    }

    /// The primary, if any server is live.
    #[inline]
    pub fn primary(&self) -> Option<usize> {
        self.as_slice().first().map(|&s| usize::from(s))
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether server `i` is in the set.
    #[inline]
    pub fn contains(&self, i: usize) -> bool {
        self.as_slice().iter().any(|&s| usize::from(s) == i)
    }

    /// The server indexes as `usize`, primary first.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.as_slice().iter().map(|&s| usize::from(s))
    }
}

impl fmt::Debug for ReplicaSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// Bytes of a key a [`RingHashMemo`] slot keeps to verify a match: keys up to this long
/// are compared whole.
pub const MEMO_KEY_BYTES: usize = 19;

/// One remembered key: 32 bytes, so two fill one cache line.
#[derive(Clone, Copy)]
struct MemoSlot {
    tag: u64,
    ring: u32,
    len: u8,
    prefix: [u8; MEMO_KEY_BYTES],
}

const EMPTY_SLOT: MemoSlot = MemoSlot {
    tag: 0,
    ring: 0,
    len: 0,
    prefix: [0; MEMO_KEY_BYTES],
};

impl MemoSlot {
    #[inline]
    fn matches(&self, tag: u64, key: &[u8]) -> bool {
        let p = key.len().min(MEMO_KEY_BYTES);
        // An empty slot has len 0 and a real key never does (memcached keys are non-empty),
        // except the empty key, whose ketama hash is recomputed harmlessly.
        self.tag == tag
            && usize::from(self.len) == key.len()
            && self.prefix[..p] == key[..p]
            && !key.is_empty()
    }
}

/// Two slots in one cache line: a lookup touches one line, and two keys that share a
/// bucket do not evict each other.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct MemoBucket {
    /// Most recently used first.
    slots: [MemoSlot; 2],
}

/// Remembers the ketama hashes of recently routed keys, so a key seen again skips MD5 (the
/// dominant cost of routing a request).
///
/// Two-way set-associative, indexed by a keyed 64-bit hash the caller already has (the
/// caches' key hash); each set is one 64-byte cache line, least recently used slot
/// replaced. A slot matches only if the 64-bit hash, the length and the first
/// [`MEMO_KEY_BYTES`] bytes all match: keys up to 19 bytes are compared whole, so the
/// answer is exact; a longer key could only be confused with another that has the same
/// length, the same first 19 bytes and the same keyed 64-bit hash (probability 2⁻⁶⁴ per
/// lookup, and not steerable by a client that does not know the hash key).
pub struct RingHashMemo {
    buckets: Box<[MemoBucket]>,
    mask: usize,
    hits: u64,
    misses: u64,
}

impl fmt::Debug for RingHashMemo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingHashMemo")
            .field("slots", &(self.buckets.len() * 2))
            .field("hits", &self.hits)
            .field("misses", &self.misses)
            .finish()
    }
}

impl RingHashMemo {
    /// A memo of `slots` entries (rounded up to a power of two, at least 2; 32 bytes each).
    pub fn new(slots: usize) -> RingHashMemo {
        let n = (slots.max(2).next_power_of_two() / 2).max(1);
        RingHashMemo {
            buckets: vec![
                MemoBucket {
                    slots: [EMPTY_SLOT; 2]
                };
                n
            ]
            .into_boxed_slice(),
            mask: n - 1,
            hits: 0,
            misses: 0,
        }
    }

    /// Loads the bucket `tag` maps to (stage 2 of the core's burst path: a software
    /// prefetch in safe Rust, a load whose value is kept opaque so it is not elided).
    #[inline]
    pub fn touch(&self, tag: u64) {
        std::hint::black_box(self.buckets[(tag >> 32) as usize & self.mask].slots[0].tag);
    }

    /// The ketama hash of `key`, whose keyed 64-bit hash is `tag`.
    #[inline]
    pub fn hash(&mut self, tag: u64, key: &[u8]) -> u32 {
        // The bucket from the hash's high bits: callers' tables index by the low ones, so
        // keys crowded in one of their buckets spread over the memo's.
        let b = &mut self.buckets[(tag >> 32) as usize & self.mask];
        if b.slots[0].matches(tag, key) {
            self.hits += 1;
            return b.slots[0].ring;
        }
        if b.slots[1].matches(tag, key) {
            self.hits += 1;
            b.slots.swap(0, 1);
            return b.slots[0].ring;
        }
        self.misses += 1;
        let ring = ketama_hash(key);
        let p = key.len().min(MEMO_KEY_BYTES);
        let mut slot = MemoSlot {
            tag,
            ring,
            len: key.len().min(255) as u8,
            prefix: [0; MEMO_KEY_BYTES],
        };
        slot.prefix[..p].copy_from_slice(&key[..p]);
        b.slots[1] = b.slots[0];
        b.slots[0] = slot;
        ring
    }

    /// (hits, misses) so far.
    pub fn counters(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memo_answers_exactly_what_md5_does() {
        let mut m = RingHashMemo::new(4);
        let long = vec![b'x'; 200];
        let keys: Vec<&[u8]> = vec![b"a", b"b", b"kvb:000001", &long, b"a"];
        for (i, k) in keys.iter().enumerate() {
            // Same tag for all: every key collides into one slot, and must still be exact.
            assert_eq!(m.hash(7, k), ketama_hash(k), "key {i}");
        }
        assert_eq!(m.hash(7, b"a"), ketama_hash(b"a"));
        assert_eq!(m.hash(7, b"a"), ketama_hash(b"a"));
        assert_eq!(m.counters().0, 2, "the repeated key hit");
        // Keys that share a 64-bit tag, a length and their first 19 bytes are the only
        // confusable ones. Real tags are a keyed hash of the whole key, so two different
        // keys share one with probability 2^-64; forcing equal tags here pins down that
        // this is the only way to get a wrong answer.
        let mut a = vec![b'k'; 40];
        let b = a.clone();
        a[39] = b'z';
        let ha = m.hash(9, &a);
        assert_eq!(ha, ketama_hash(&a));
        assert_eq!(m.hash(9, &b), ha, "same tag, length and prefix");
        assert_eq!(
            m.hash(10, &b),
            ketama_hash(&b),
            "a different tag is exact again"
        );
    }

    #[test]
    fn two_keys_in_one_memo_bucket_both_stay_and_the_least_recent_goes() {
        let mut m = RingHashMemo::new(2);
        // One bucket: every tag lands in it.
        let (a, b, c): (&[u8], &[u8], &[u8]) = (b"key:a", b"key:b", b"key:c");
        for k in [a, b, a, b, a, b] {
            assert_eq!(m.hash(k[4].into(), k), ketama_hash(k));
        }
        assert_eq!(
            m.counters(),
            (4, 2),
            "a and b share the bucket without evicting"
        );
        // c replaces the least recently used (a); b stays.
        assert_eq!(m.hash(c[4].into(), c), ketama_hash(c));
        assert_eq!(m.hash(b[4].into(), b), ketama_hash(b));
        assert_eq!(m.counters(), (5, 3));
        assert_eq!(m.hash(a[4].into(), a), ketama_hash(a));
        assert_eq!(m.counters(), (5, 4), "a was evicted");
        assert_eq!(size_of::<MemoBucket>(), 64);
    }

    fn live(host: &str, port: u16, weight: u32) -> RingServer<'_> {
        RingServer {
            host,
            port,
            weight,
            live: true,
        }
    }

    #[test]
    fn key_hash_is_md5_prefix_little_endian() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e; MD5("foo") = acbd18db4cc2f85c...
        assert_eq!(ketama_hash(b""), 0xd98c_1dd4);
        assert_eq!(ketama_hash(b"foo"), 0xdb18_bdac);
    }

    #[test]
    fn points_follow_single_precision_formula() {
        // Equal weights: 160 each for these server counts...
        for n in [1u32, 2, 3, 4, 5, 8, 10] {
            assert_eq!(points_for(1, u64::from(n), n), 160, "n = {n}");
        }
        // ...but f32 rounding takes a group of four away for some counts, as in
        // libmemcached: (1/25 · 160/4) · 25 is 39.999996 in single precision.
        for n in [25u32, 47, 50, 55, 61] {
            assert_eq!(points_for(1, u64::from(n), n), 156, "n = {n}");
        }
        // Weights scale the share.
        assert_eq!(points_for(3, 4, 2), 240);
        assert_eq!(points_for(1, 4, 2), 80);
        // A tiny weight can round to nothing.
        assert_eq!(points_for(1, 1001, 2), 0);
        assert_eq!(points_for(1, 0, 0), 0);
    }

    #[test]
    fn lookup_agrees_with_linear_scan() {
        let servers = [
            live("10.0.0.1", 11211, 1),
            live("10.0.0.2", 11212, 2),
            live("cache-c", 11211, 1),
        ];
        let ring = KetamaRing::new(&servers).unwrap();
        assert_eq!(ring.point_count(), ring.points().count());
        let pts: Vec<(u32, usize)> = ring.points().collect();
        assert!(pts.windows(2).all(|w| w[0] <= w[1]));
        let mut x = 0x1234_5678u32;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let expect = pts.iter().find(|p| p.0 >= x).unwrap_or(&pts[0]).1;
            assert_eq!(ring.server_for_hash(x), Some(expect));
        }
        for h in [0, 1, u32::MAX, u32::MAX - 1, pts[0].0, pts[pts.len() - 1].0] {
            let expect = pts.iter().find(|p| p.0 >= h).unwrap_or(&pts[0]).1;
            assert_eq!(ring.server_for_hash(h), Some(expect), "hash {h:#x}");
        }
        // Past the last point: wrap to the first.
        if pts[pts.len() - 1].0 < u32::MAX {
            assert_eq!(ring.server_for_hash(u32::MAX), Some(pts[0].1));
        }
    }

    #[test]
    fn point_names_depend_on_port() {
        let a = KetamaRing::new(&[live("h", 11211, 1), live("h", 11212, 1)]).unwrap();
        let pts: Vec<u32> = a.points().filter(|p| p.1 == 0).map(|p| p.0).collect();
        let d = Md5::digest(b"h-0");
        assert!(pts.contains(&u32::from_le_bytes([d[0], d[1], d[2], d[3]])));
        assert!(pts.contains(&u32::from_le_bytes([d[12], d[13], d[14], d[15]])));
        let pts1: Vec<u32> = a.points().filter(|p| p.1 == 1).map(|p| p.0).collect();
        let d = Md5::digest(b"h:11212-39");
        assert!(pts1.contains(&u32::from_le_bytes([d[4], d[5], d[6], d[7]])));
    }

    #[test]
    fn down_servers_leave_the_ring() {
        let mut servers = vec![
            live("a", 1, 1),
            live("b", 2, 1),
            live("c", 3, 1),
            live("d", 4, 1),
        ];
        let all = KetamaRing::new(&servers).unwrap();
        servers[2].live = false;
        let down = KetamaRing::new(&servers).unwrap();
        assert_eq!(down.points_of(2), 0);
        assert_eq!(down.servers_on_ring(), 3);
        // The same as the ring of the list without "c", with indexes shifted.
        let without = KetamaRing::new(&[servers[0], servers[1], servers[3]]).unwrap();
        let map = [0usize, 1, 3];
        for i in 0..5000u32 {
            let h = ketama_hash(format!("key{i}").as_bytes());
            let s = down.server_for_hash(h).unwrap();
            assert_eq!(s, map[without.server_for_hash(h).unwrap()]);
            // With equal weights and 4 -> 3 servers every live server keeps 160 points, so
            // keys of live servers stay put; keys of "c" move to the next live server,
            // which is the first replica of the full ring that is not "c".
            let before = all.server_for_hash(h).unwrap();
            if before != 2 {
                assert_eq!(s, before);
            } else {
                let next = all.replicas(h, 3).iter().find(|&x| x != 2).unwrap();
                assert_eq!(s, next);
            }
        }
        // Nothing live: no answer, no panic.
        for s in &mut servers {
            s.live = false;
        }
        let none = KetamaRing::new(&servers).unwrap();
        assert_eq!(none.server_for_hash(42), None);
        assert!(none.replicas(42, 2).is_empty());
        let empty = KetamaRing::new(&[]).unwrap();
        assert_eq!(empty.server_for_key(b"k"), None);
    }

    #[test]
    fn replica_sets_are_distinct_and_in_continuum_order() {
        let servers: Vec<String> = (0..6).map(|i| format!("10.1.0.{i}")).collect();
        let list: Vec<RingServer<'_>> = servers
            .iter()
            .enumerate()
            .map(|(i, h)| live(h, 11211, 1 + (i as u32 % 3)))
            .collect();
        let ring = KetamaRing::new(&list).unwrap();
        let pts: Vec<(u32, usize)> = ring.points().collect();
        for i in 0..2000u32 {
            let h = ketama_hash(&i.to_le_bytes());
            let set = ring.replicas(h, 2);
            assert_eq!(set.len(), 3);
            assert_eq!(set.primary(), ring.server_for_hash(h));
            // Reference: walk the continuum by hand.
            let start = pts.iter().position(|p| p.0 >= h).unwrap_or(0);
            let mut expect = Vec::new();
            for k in 0..pts.len() {
                let o = pts[(start + k) % pts.len()].1;
                if !expect.contains(&o) {
                    expect.push(o);
                }
                if expect.len() == 3 {
                    break;
                }
            }
            assert_eq!(set.iter().collect::<Vec<_>>(), expect);
        }
        // Asking for more than there are servers yields every server once.
        let all = ring.replicas(7, 100);
        assert_eq!(all.len(), 6);
        let mut sorted: Vec<usize> = all.iter().collect();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(ring.replicas(7, 0).len(), 1);
    }

    #[test]
    fn minimal_movement_failover() {
        let hosts: Vec<String> = (0..25).map(|i| format!("mc{i:02}")).collect();
        let mut list: Vec<RingServer<'_>> = hosts.iter().map(|h| live(h, 11211, 1)).collect();
        let full = KetamaRing::new(&list).unwrap();
        list[5].live = false;
        let rebuilt = KetamaRing::new(&list).unwrap();
        let (mut moved_live, mut differ) = (0, 0);
        for i in 0..20_000u32 {
            let h = ketama_hash(format!("k{i}").as_bytes());
            let before = full.server_for_hash(h).unwrap();
            let skip = full.server_for_hash_where(h, |s| s != 5).unwrap();
            assert_ne!(skip, 5);
            // Minimal movement: only the dead server's keys move, to the next live point.
            if before != 5 {
                assert_eq!(skip, before);
            } else {
                assert_eq!(skip, full.replicas(h, 1).iter().nth(1).unwrap());
            }
            assert_eq!(full.replicas_where(h, 2, |s| s != 5).primary(), Some(skip));
            assert!(!full.replicas_where(h, 2, |s| s != 5).contains(5));
            // libmemcached's rebuild re-apportions 156 -> 160 points: live keys move too.
            let re = rebuilt.server_for_hash(h).unwrap();
            moved_live += usize::from(before != 5 && re != before);
            differ += usize::from(re != skip);
        }
        assert!(moved_live > 0 && differ > 0, "{moved_live} {differ}");
        assert_eq!(full.server_for_hash_where(1, |_| false), None);
        assert!(full.replicas_where(1, 3, |_| false).is_empty());
    }

    #[test]
    fn backends_and_mask_lengths() {
        let b: BackendSpec = "127.0.0.1:11311:2".parse().unwrap();
        let ring = KetamaRing::from_backends(std::slice::from_ref(&b), &[true]).unwrap();
        assert_eq!(ring.points_of(0), 160);
        assert_eq!(ring.server_for_key(b"anything"), Some(0));
        assert_eq!(
            KetamaRing::from_backends(&[b], &[]).unwrap_err(),
            RingError::MaskLength {
                servers: 1,
                mask: 0
            }
        );
    }
}
