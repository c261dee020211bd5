//! The NF's value caches: the L1 hot-key table, the L2 skip list of warm keys, the skew gate
//! that switches L2 on and off, and the write stamps that keep both fresh.
//!
//! Owns: cached values, their freshness bookkeeping and their memory accounting. Must not:
//! decide what is hot or warm (the detector does; the core passes its verdicts and
//! estimates in), touch frames, or read clocks (times are handed in).
//!
//! # Pieces
//!
//! - [`KeyHasher`] / [`KeyHash`]: one keyed 64-bit hash per key (aHash, seeded by the
//!   caller), computed once per request and shared by L1, L2 and the write stamps. It is
//!   *not* the ketama hash: a cache hit must not pay for MD5.
//! - [`HotKeyTable`] (L1): hashbrown table of hot keys, each with the value learned for it
//!   (or none since the last write), capped in keys and in value size.
//! - [`WarmKeyCache`] (L2): warm keys with values in a [`skiplist::SkipList`] ordered by the
//!   detector's estimate, bounded in bytes, evicting the least valuable first; switched by a
//!   [`SkewGate`].
//! - [`WriteStamps`]: the freshness rule (see [`stamps`]).
//! - [`Caches`]: the four together, with the consistency rule enforced in one place. The
//!   core should use this rather than the layers one by one.
//!
//! # Consistency
//!
//! kvlb must see every write to the keys it caches (clients writing to the memcached
//! servers directly bypass it, as they would bypass any proxy cache). A write invalidates
//! its key in L1 and L2 before it is forwarded ([`Caches::write_sent`]); a value is learned
//! only from a GET response that no write can have overtaken ([`Caches::learn`],
//! [`stamps`]). An optional maximum age bounds how long a learned value is served, which is
//! also what bounds serving a value whose memcached expiry time has passed (GET responses
//! do not carry the expiry time).

use std::fmt;
use std::mem::size_of;

pub mod caches;
pub mod gate;
pub mod l1;
pub mod l2;
pub mod skiplist;
pub mod stamps;

pub use caches::{
    CacheCounters, CacheMemory, CacheSettings, Caches, GetResponse, Hit, Layer, Learned,
};
pub use gate::{GateTransition, SkewGate};
pub use l1::{Admit, HotKeyRef, HotKeyTable};
pub use l2::{WarmInsert, WarmKeyCache};
pub use stamps::{ReadTicket, WriteStamps};

use crate::clock::Instant;

/// memcached's longest key (`KEY_MAX_LENGTH`).
pub const MAX_KEY_LEN: usize = 250;

/// Estimated allocator overhead per heap allocation (glibc malloc: an 8-byte header and
/// 16-byte granularity), counted in memory reports.
pub const ALLOC_OVERHEAD: usize = 16;

/// Why a cache refused something.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CacheError {
    #[error("key of {0} bytes is longer than memcached allows ({MAX_KEY_LEN})")]
    KeyTooLong(usize),
    #[error("value of {len} bytes exceeds the cacheable maximum of {max}")]
    ValueTooLarge { len: usize, max: usize },
    #[error("L1 already holds its maximum of {0} hot keys")]
    L1Full(usize),
    #[error("key is not in the hot-key table")]
    NotHot,
    #[error("L2 is switched off")]
    L2Off,
    #[error("L2 thresholds must satisfy 0 <= off ({off_share}) <= on ({on_share}) <= 1")]
    BadThresholds { on_share: f64, off_share: f64 },
}

pub use crate::keyhash::{KeyHash, KeyHasher};

/// A cached value: what a GET reply needs (data, flags, and the cas unique when it was
/// learned from a `gets` reply), plus when and at which stamp it was learned.
#[derive(Clone, PartialEq, Eq)]
pub struct CachedValue {
    data: Box<[u8]>,
    flags: u32,
    cas: Option<u64>,
    learned_at: Instant,
    version: u64,
    /// The key was absent (its GET answered `END`): a hit answers `END` (see
    /// [`CachedValue::absent`]).
    absent: bool,
}

impl fmt::Debug for CachedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedValue")
            .field("len", &self.data.len())
            .field("flags", &self.flags)
            .field("cas", &self.cas)
            .field("version", &self.version)
            .field("absent", &self.absent)
            .finish()
    }
}

impl CachedValue {
    /// Copies `data` into a new value learned at `learned_at`, at write-stamp `version`.
    pub fn new(
        data: &[u8],
        flags: u32,
        cas: Option<u64>,
        learned_at: Instant,
        version: u64,
    ) -> CachedValue {
        CachedValue {
            data: data.into(),
            flags,
            cas,
            learned_at,
            version,
            absent: false,
        }
    }

    /// The key's absence, learned at `learned_at`, at write-stamp `version`: a GET that
    /// answered `END`. Kept and dropped exactly as a value is (a write to the key drops it
    /// before the write leaves), so a hot key that is not stored (not yet, or never: a
    /// thundering herd on an absent key) is answered from the cache and balanced too,
    /// instead of loading its one server with every miss.
    pub fn absent(learned_at: Instant, version: u64) -> CachedValue {
        CachedValue {
            data: Box::default(),
            flags: 0,
            cas: None,
            learned_at,
            version,
            absent: true,
        }
    }

    /// Whether this is a cached absence ([`CachedValue::absent`]).
    #[inline]
    pub fn is_absent(&self) -> bool {
        self.absent
    }

    /// The value bytes (without the trailing `\r\n`).
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    #[inline]
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// The cas unique, when learned from a `gets` reply (a `gets` can be served only then).
    #[inline]
    pub fn cas(&self) -> Option<u64> {
        self.cas
    }

    #[inline]
    pub fn learned_at(&self) -> Instant {
        self.learned_at
    }

    /// The key's write-stamp version the value was learned at.
    #[inline]
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Heap bytes, with the allocator overhead estimate.
    pub fn heap_bytes(&self) -> usize {
        if self.data.is_empty() {
            0
        } else {
            self.data.len() + ALLOC_OVERHEAD
        }
    }
}

/// Heap bytes of boxed key bytes, with the allocator overhead estimate.
pub(crate) fn key_heap_bytes(key: &[u8]) -> usize {
    if key.is_empty() {
        0
    } else {
        key.len() + ALLOC_OVERHEAD
    }
}

/// Bytes a hashbrown table of `T` with this `capacity()` allocates (buckets, one control
/// byte per bucket, and one group of trailing control bytes).
pub(crate) fn table_bytes<T>(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    // hashbrown reports capacity = buckets - 1 below 8 buckets, buckets / 8 * 7 above.
    let buckets = if capacity < 8 {
        capacity + 1
    } else {
        (capacity / 7 * 8).next_power_of_two()
    };
    buckets * size_of::<T>() + buckets + 16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_is_seeded_and_stable() {
        let a = KeyHasher::new(1);
        let b = KeyHasher::new(2);
        assert_eq!(a.hash(b"foo"), KeyHasher::new(1).hash(b"foo"));
        assert_ne!(a.hash(b"foo"), b.hash(b"foo"));
        assert_ne!(a.hash(b"foo"), a.hash(b"fop"));
    }

    #[test]
    fn table_bytes_matches_hashbrown_capacities() {
        for want in [1usize, 3, 7, 8, 14, 15, 100, 1000, 5000] {
            let t: hashbrown::HashTable<u64> = hashbrown::HashTable::with_capacity(want);
            let cap = t.capacity();
            let bytes = table_bytes::<u64>(cap);
            // Buckets are a power of two, and capacity is 7/8 of them (or buckets - 1).
            let buckets = (bytes - 16) / 9;
            assert!(buckets.is_power_of_two(), "{want}: {buckets}");
            let expect = if buckets < 8 {
                buckets - 1
            } else {
                buckets / 8 * 7
            };
            assert_eq!(cap, expect, "{want}: {cap} of {buckets}");
            assert!(cap >= want);
        }
        assert_eq!(table_bytes::<u64>(0), 0);
    }
}
