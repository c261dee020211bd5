//! L2: warm keys (just below the hot threshold) with their values, bounded in bytes, so that
//! a key that turns hot is served at once; switched on and off by a [`SkewGate`].
//!
//! Owns: warm entries, their ranking and the byte budget. Must not: decide which keys are
//! warm, or check freshness (callers go through [`super::Caches`]).
//!
//! # Why the skip list is ordered by (estimate, id), with a hash index beside it
//!
//! The operations L2 needs are: look a key up (per GET, the hot path), insert or update a
//! key with the detector's estimate (per learned response, per epoch), remove a key (a
//! write, a promotion), and evict the least valuable entries when over budget. Ordering the
//! skip list by key would make lookups O(log n) key comparisons (memcmp of keys up to 250
//! bytes) and leave eviction to a scan or a second structure. Ordering it by
//! `(estimate, id)` instead — `id` a unique insertion number that breaks ties, oldest first
//! — makes the least valuable entry the list's first node, so eviction is a pop in O(1)
//! expected; an estimate change is a re-key in O(log n) expected (same node, no
//! allocation). Lookups go through a hashbrown index from [`KeyHash`] to the node, O(1)
//! expected with one key comparison. Removal by key is an index lookup followed by an
//! O(log n) unlink.
//!
//! # Budget
//!
//! Each entry is charged `key + value + 2 × allocator overhead + arena node + index slot`
//! bytes ([`WarmKeyCache::entry_cost`]); the sum stays ≤ `max_bytes` after every insert.
//! [`WarmKeyCache::memory_bytes`] reports what is really held, including arena and index
//! capacity.
//!
//! # Off means off
//!
//! While the gate is off L2 holds nothing (its arena and index are freed) and every
//! operation returns after one branch.

use std::fmt;
use std::mem::size_of;

use hashbrown::HashTable;

use super::gate::{GateTransition, SkewGate};
use super::skiplist::{NodeId, SkipList};
use super::{key_heap_bytes, table_bytes, CacheError, CachedValue, KeyHash, MAX_KEY_LEN};

/// Skip-list order: lowest estimate first, ties by insertion (oldest first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    estimate: u64,
    id: u64,
}

struct WarmEntry {
    hash: u64,
    ring_hash: u32,
    key: Box<[u8]>,
    value: CachedValue,
}

impl WarmEntry {
    fn cost(&self) -> usize {
        WarmKeyCache::entry_cost(self.key.len(), self.value.data().len())
    }

    fn heap(&self) -> usize {
        key_heap_bytes(&self.key) + self.value.heap_bytes()
    }
}

/// What [`WarmKeyCache::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WarmInsert {
    /// Whether the entry is in L2 afterwards (it may itself have been the least valuable).
    pub stored: bool,
    /// Entries evicted to make room (including the new one when `stored` is false).
    pub evicted: usize,
}

/// The L2 warm-key cache.
pub struct WarmKeyCache {
    gate: SkewGate,
    list: SkipList<Rank, WarmEntry>,
    index: HashTable<NodeId>,
    max_bytes: usize,
    max_value: usize,
    /// Sum of entry costs.
    used: usize,
    /// Heap bytes of keys and values (with allocator overhead).
    heap: usize,
    next_id: u64,
    seed: u64,
    evictions: u64,
}

impl fmt::Debug for WarmKeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WarmKeyCache")
            .field("on", &self.gate.is_on())
            .field("len", &self.list.len())
            .field("used", &self.used)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl WarmKeyCache {
    /// An L2 of at most `max_bytes` (by [`WarmKeyCache::entry_cost`]) holding values of at
    /// most `max_value` bytes, switched by `gate`. `seed` drives the skip list's node
    /// heights.
    pub fn new(gate: SkewGate, max_bytes: usize, max_value: usize, seed: u64) -> WarmKeyCache {
        WarmKeyCache {
            gate,
            list: SkipList::new(seed),
            index: HashTable::new(),
            max_bytes,
            max_value,
            used: 0,
            heap: 0,
            next_id: 0,
            seed,
            evictions: 0,
        }
    }

    /// The bytes an entry with a `key_len`-byte key and a `value_len`-byte value is charged.
    pub const fn entry_cost(key_len: usize, value_len: usize) -> usize {
        key_len
            + value_len
            + 2 * super::ALLOC_OVERHEAD
            + SkipList::<Rank, WarmEntry>::node_bytes()
            + size_of::<NodeId>()
            + 1
    }

    /// Whether L2 is caching.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.gate.is_on()
    }

    pub fn gate(&self) -> &SkewGate {
        &self.gate
    }

    /// Feeds one epoch's top-key traffic share to the gate; when it turns off, everything
    /// cached is dropped and the memory freed. Returns the transition, for the caller to
    /// log and count.
    pub fn observe_skew(&mut self, share: f64) -> Option<GateTransition> {
        let t = self.gate.observe(share);
        if let Some(GateTransition::Off { .. }) = t {
            self.clear();
        }
        t
    }

    #[inline]
    fn find(&self, h: KeyHash, key: &[u8]) -> Option<NodeId> {
        let raw = h.raw();
        let list = &self.list;
        self.index
            .find(raw, |&id| {
                list.entry(id)
                    .is_some_and(|(_, e)| e.hash == raw && *e.key == *key)
            })
            .copied()
    }

    /// The cached value of `key`. One branch when L2 is off.
    #[inline]
    pub fn get(&self, h: KeyHash, key: &[u8]) -> Option<&CachedValue> {
        if !self.gate.is_on() {
            return None;
        }
        let id = self.find(h, key)?;
        self.list.entry(id).map(|(_, e)| &e.value)
    }

    /// `key`'s estimate and ketama hash, if cached.
    pub fn entry(&self, h: KeyHash, key: &[u8]) -> Option<(u64, u32)> {
        if !self.gate.is_on() {
            return None;
        }
        let id = self.find(h, key)?;
        self.list.entry(id).map(|(r, e)| (r.estimate, e.ring_hash))
    }

    pub fn contains(&self, h: KeyHash, key: &[u8]) -> bool {
        self.gate.is_on() && self.find(h, key).is_some()
    }

    /// Caches `value` for warm key `key` with the detector's `estimate` (higher is more
    /// valuable), replacing any value it had, then evicts the least valuable entries until
    /// the budget holds. The caller has checked freshness.
    pub fn insert(
        &mut self,
        h: KeyHash,
        key: &[u8],
        ring_hash: u32,
        value: CachedValue,
        estimate: u64,
    ) -> Result<WarmInsert, CacheError> {
        if !self.gate.is_on() {
            return Err(CacheError::L2Off);
        }
        if key.len() > MAX_KEY_LEN {
            return Err(CacheError::KeyTooLong(key.len()));
        }
        if value.data().len() > self.max_value {
            return Err(CacheError::ValueTooLarge {
                len: value.data().len(),
                max: self.max_value,
            });
        }
        if let Some(id) = self.find(h, key) {
            // Present: swap the value in place, then re-rank.
            let Some(e) = self.list.value_mut(id) else {
                unreachable!("index points at a live node");
            };
            let (old_cost, old_heap) = (e.cost(), e.heap());
            e.value = value;
            e.ring_hash = ring_hash;
            let (new_cost, new_heap) = (e.cost(), e.heap());
            self.used = self.used - old_cost + new_cost;
            self.heap = self.heap - old_heap + new_heap;
            self.rerank(id, estimate);
        } else {
            let entry = WarmEntry {
                hash: h.raw(),
                ring_hash,
                key: key.into(),
                value,
            };
            self.used += entry.cost();
            self.heap += entry.heap();
            let rank = Rank {
                estimate,
                id: self.next_id,
            };
            self.next_id += 1;
            let Ok(id) = self.list.insert(rank, entry) else {
                unreachable!("ids are unique");
            };
            let list = &self.list;
            self.index
                .insert_unique(h.raw(), id, |&id| list.entry(id).map_or(0, |(_, e)| e.hash));
        }
        let evicted = self.evict_to(self.max_bytes);
        Ok(WarmInsert {
            stored: self.find(h, key).is_some(),
            evicted,
        })
    }

    fn rerank(&mut self, id: NodeId, estimate: u64) {
        let Some((&old, _)) = self.list.entry(id) else {
            return;
        };
        if old.estimate != estimate {
            let new = Rank {
                estimate,
                id: old.id,
            };
            // (estimate, id) with a unique id cannot collide.
            let _ = self.list.rekey(&old, new);
        }
    }

    /// Updates `key`'s estimate (the detector's view changed). Returns whether it is cached.
    pub fn set_estimate(&mut self, h: KeyHash, key: &[u8], estimate: u64) -> bool {
        if !self.gate.is_on() {
            return false;
        }
        match self.find(h, key) {
            Some(id) => {
                self.rerank(id, estimate);
                true
            }
            None => false,
        }
    }

    fn remove_node(&mut self, h: KeyHash, key: &[u8]) -> Option<WarmEntry> {
        if !self.gate.is_on() {
            return None;
        }
        let raw = h.raw();
        let list = &self.list;
        let found = self
            .index
            .find_entry(raw, |&id| {
                list.entry(id)
                    .is_some_and(|(_, e)| e.hash == raw && *e.key == *key)
            })
            .ok()?;
        let (id, _) = found.remove();
        let rank = *self.list.entry(id)?.0;
        let (_, e) = self.list.remove(&rank)?;
        self.used -= e.cost();
        self.heap -= e.heap();
        Some(e)
    }

    /// Drops `key` (a write is on its way). Returns whether it was cached.
    pub fn invalidate(&mut self, h: KeyHash, key: &[u8]) -> bool {
        self.remove_node(h, key).is_some()
    }

    /// Takes `key` out to hand it to L1 (it turned hot): key bytes, ketama hash, value.
    pub fn promote(&mut self, h: KeyHash, key: &[u8]) -> Option<(Box<[u8]>, u32, CachedValue)> {
        self.remove_node(h, key)
            .map(|e| (e.key, e.ring_hash, e.value))
    }

    /// Evicts least valuable entries until the charged bytes are ≤ `budget`. Returns how
    /// many were evicted.
    pub fn evict_to(&mut self, budget: usize) -> usize {
        let mut n = 0;
        while self.used > budget {
            let Some(id) = self.list.first() else {
                break;
            };
            let Some(raw) = self.list.entry(id).map(|(_, e)| e.hash) else {
                break;
            };
            if let Ok(slot) = self.index.find_entry(raw, |&x| x == id) {
                slot.remove();
            }
            let Some((_, e)) = self.list.pop_first() else {
                break;
            };
            self.used -= e.cost();
            self.heap -= e.heap();
            n += 1;
        }
        self.evictions += n as u64;
        n
    }

    /// Drops everything and frees the memory.
    pub fn clear(&mut self) {
        self.list = SkipList::new(self.seed);
        self.index = HashTable::new();
        self.used = 0;
        self.heap = 0;
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Bytes charged against the budget.
    pub fn used_bytes(&self) -> usize {
        self.used
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Entries evicted for budget since creation.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Bytes really held: arena and index allocations plus keys and values.
    pub fn memory_bytes(&self) -> usize {
        self.list.memory_bytes() + table_bytes::<NodeId>(self.index.capacity()) + self.heap
    }

    /// Entries from least to most valuable: (key, estimate, value). For stats and tests.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], u64, &CachedValue)> + '_ {
        self.list
            .iter()
            .map(|(r, e)| (&e.key[..], r.estimate, &e.value))
    }

    /// Checks the skip list and that index, list and byte count agree; for tests.
    pub fn check_invariants(&self) {
        self.list.check_invariants();
        assert_eq!(self.index.len(), self.list.len(), "index and list sizes");
        let (mut used, mut heap) = (0, 0);
        for (_, e) in self.list.iter() {
            used += e.cost();
            heap += e.heap();
        }
        assert_eq!(used, self.used, "charged bytes");
        assert_eq!(heap, self.heap, "heap bytes");
        for &id in self.index.iter() {
            let (_, e) = self.list.entry(id).expect("index points at a live node");
            assert_eq!(self.find(KeyHash::from_raw(e.hash), &e.key), Some(id));
        }
        assert!(self.used <= self.max_bytes, "over budget");
        if !self.gate.is_on() {
            assert!(self.list.is_empty(), "holds entries while off");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::KeyHasher;
    use crate::clock::Instant;
    use crate::config::L2Mode;

    fn v(n: usize) -> CachedValue {
        CachedValue::new(&vec![b'v'; n], 0, None, Instant::ZERO, 0)
    }

    fn on(max_bytes: usize) -> WarmKeyCache {
        WarmKeyCache::new(
            SkewGate::new(L2Mode::On, 0.2, 0.1).unwrap(),
            max_bytes,
            1000,
            1,
        )
    }

    #[test]
    fn evicts_lowest_estimates_first() {
        let hs = KeyHasher::new(3);
        let cost = WarmKeyCache::entry_cost(4, 100);
        let mut l2 = on(cost * 10);
        for i in 0..10u64 {
            let k = format!("k{i:03}");
            let r = l2
                .insert(hs.hash(k.as_bytes()), k.as_bytes(), 0, v(100), 100 + i)
                .unwrap();
            assert_eq!(
                r,
                WarmInsert {
                    stored: true,
                    evicted: 0
                }
            );
        }
        assert_eq!(l2.used_bytes(), cost * 10);
        // One more valuable entry pushes out the least valuable (k000).
        let r = l2
            .insert(hs.hash(b"k999"), b"k999", 0, v(100), 500)
            .unwrap();
        assert_eq!(
            r,
            WarmInsert {
                stored: true,
                evicted: 1
            }
        );
        assert!(!l2.contains(hs.hash(b"k000"), b"k000"));
        // A less valuable one evicts itself.
        let r = l2.insert(hs.hash(b"kLOW"), b"kLOW", 0, v(100), 1).unwrap();
        assert_eq!(
            r,
            WarmInsert {
                stored: false,
                evicted: 1
            }
        );
        // Raising an estimate protects a key.
        assert!(l2.set_estimate(hs.hash(b"k001"), b"k001", 1000));
        l2.insert(hs.hash(b"k998"), b"k998", 0, v(100), 600)
            .unwrap();
        assert!(l2.contains(hs.hash(b"k001"), b"k001"));
        assert!(!l2.contains(hs.hash(b"k002"), b"k002"));
        l2.check_invariants();
        let order: Vec<u64> = l2.iter().map(|(_, e, _)| e).collect();
        assert!(order.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(l2.evictions(), 3);
    }

    #[test]
    fn replace_promote_invalidate() {
        let hs = KeyHasher::new(3);
        let mut l2 = on(1 << 20);
        let h = hs.hash(b"key");
        l2.insert(h, b"key", 9, v(10), 5).unwrap();
        l2.insert(h, b"key", 9, v(20), 7).unwrap();
        assert_eq!(l2.len(), 1);
        assert_eq!(l2.get(h, b"key").unwrap().data().len(), 20);
        assert_eq!(l2.entry(h, b"key"), Some((7, 9)));
        assert_eq!(l2.used_bytes(), WarmKeyCache::entry_cost(3, 20));
        let (k, rh, val) = l2.promote(h, b"key").unwrap();
        assert_eq!((&*k, rh, val.data().len()), (&b"key"[..], 9, 20));
        assert!(l2.is_empty());
        assert_eq!(l2.used_bytes(), 0);
        l2.insert(h, b"key", 9, v(1), 1).unwrap();
        assert!(l2.invalidate(h, b"key"));
        assert!(!l2.invalidate(h, b"key"));
        assert_eq!(
            l2.insert(h, b"key", 9, v(1001), 1),
            Err(CacheError::ValueTooLarge {
                len: 1001,
                max: 1000
            })
        );
        l2.check_invariants();
    }

    #[test]
    fn gate_off_frees_everything() {
        let hs = KeyHasher::new(3);
        let gate = SkewGate::new(L2Mode::Auto, 0.3, 0.1).unwrap();
        let mut l2 = WarmKeyCache::new(gate, 1 << 20, 1000, 1);
        let idle = l2.memory_bytes();
        let h = hs.hash(b"a");
        assert_eq!(l2.insert(h, b"a", 0, v(5), 1), Err(CacheError::L2Off));
        assert!(matches!(
            l2.observe_skew(0.5),
            Some(GateTransition::On { .. })
        ));
        for i in 0..1000u32 {
            let k = i.to_string();
            l2.insert(hs.hash(k.as_bytes()), k.as_bytes(), 0, v(50), u64::from(i))
                .unwrap();
        }
        assert!(l2.memory_bytes() > 1000 * 50);
        assert!(l2.observe_skew(0.2).is_none());
        assert!(matches!(
            l2.observe_skew(0.05),
            Some(GateTransition::Off { .. })
        ));
        assert_eq!(l2.memory_bytes(), idle);
        assert!(l2.get(hs.hash(b"1"), b"1").is_none());
        l2.check_invariants();
        assert_eq!(l2.gate().transitions(), (1, 1));
    }
}
