//! The one keyed hash of a memcached key. A request's key is hashed once, and every
//! per-key table of the request path (the hot-key detector and its sampling filter, the
//! hot set, L1, L2, the write stamps, the ring memo) derives its index and tag from that
//! hash: tables built with the same seed can be probed with a hash the caller already has.
//! A leaf: it depends on nothing else in the crate.

use std::fmt;

/// A key's hash under a [`KeyHasher`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(u64);

impl KeyHash {
    /// A hash from its raw value (tests, and callers that store hashes compactly).
    pub const fn from_raw(raw: u64) -> KeyHash {
        KeyHash(raw)
    }

    #[inline]
    pub const fn raw(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({:#018x})", self.0)
    }
}

/// The keyed hash every per-key table indexes keys by. Keys come from clients, so the
/// hash is keyed (seeded) to keep adversarial keys from piling into one bucket; the seed
/// comes from the caller so that the core stays deterministic (tests pass a fixed seed, a
/// datapath a random one).
#[derive(Clone)]
pub struct KeyHasher(ahash::RandomState);

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHasher")
    }
}

impl KeyHasher {
    pub fn new(seed: u64) -> KeyHasher {
        // Spread one seed over aHash's four keys (splitmix64).
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        KeyHasher(ahash::RandomState::with_seeds(
            next(),
            next(),
            next(),
            next(),
        ))
    }

    #[inline]
    pub fn hash(&self, key: &[u8]) -> KeyHash {
        KeyHash(self.0.hash_one(key))
    }
}

/// A seeded hasher for maps too (`HashMap::with_hasher`): their iteration order then
/// depends only on the seed and the operations, not on the process.
impl std::hash::BuildHasher for KeyHasher {
    type Hasher = ahash::AHasher;

    fn build_hasher(&self) -> ahash::AHasher {
        self.0.build_hasher()
    }
}
