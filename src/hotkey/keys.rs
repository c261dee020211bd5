//! The key store every detector builds on: a slab of entries (key bytes, their hash and a
//! per-algorithm payload) indexed by a `hashbrown` table of slab indices.
//!
//! Why this shape: the packet path looks a key up on every request, so a hit must cost one
//! hash and one probe and never allocate. Keys up to [`INLINE_KEY`] bytes live inline in
//! the entry; freed entries keep their (possibly spilled) key buffer, so after warm-up even
//! inserts of long keys rarely allocate. Algorithms link entries into their own lists by
//! slab index (`u32`), which stays stable while the entry lives.

use std::mem::size_of;

use hashbrown::hash_table::Entry;
use hashbrown::HashTable;

use crate::keyhash::{KeyHash, KeyHasher};

/// "No entry" in index-linked lists.
pub(crate) const NIL: u32 = u32::MAX;

/// Keys up to this many bytes are stored inline (no heap allocation).
pub(crate) const INLINE_KEY: usize = 32;

/// A stored key: inline (zero-padded) up to [`INLINE_KEY`] bytes, else in `spill`, whose
/// buffer is kept when the entry is freed (boxed so that short keys, the common case,
/// keep entries small).
#[derive(Clone, Debug, Default)]
pub(crate) struct KeyBytes {
    len: u32,
    inline: [u8; INLINE_KEY],
    // Boxed: 8 bytes in every entry instead of a 24-byte Vec that short keys never use.
    #[allow(clippy::box_collection)]
    spill: Option<Box<Vec<u8>>>,
}

impl KeyBytes {
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        let len = self.len as usize;
        match &self.spill {
            Some(v) if len > INLINE_KEY => v,
            _ => &self.inline[..len.min(INLINE_KEY)],
        }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        self.as_slice().to_vec()
    }

    #[inline]
    fn matches(&self, p: &Probe<'_>) -> bool {
        self.len as usize == p.key.len()
            && if p.key.len() <= INLINE_KEY {
                // Fixed-size comparison of the padded copies: no memcmp call.
                self.inline == p.padded
            } else {
                self.spill.as_deref().is_some_and(|v| v.as_slice() == p.key)
            }
    }

    /// Heap bytes held by the spill buffer.
    fn heap(&self) -> usize {
        self.spill
            .as_ref()
            .map_or(0, |v| v.capacity() + size_of::<Vec<u8>>())
    }

    /// Stores `p`'s key; returns the heap bytes held before and after.
    #[inline]
    fn set(&mut self, p: &Probe<'_>) -> (usize, usize) {
        let had = self.heap();
        // Keys are at most a few hundred bytes; lengths past u32 are clamped (and the key
        // then only ever matches itself through the spill comparison).
        self.len = u32::try_from(p.key.len()).unwrap_or(u32::MAX);
        if p.key.len() <= INLINE_KEY {
            self.inline = p.padded;
        } else {
            let v = self.spill.get_or_insert_with(Default::default);
            v.clear();
            v.extend_from_slice(p.key);
        }
        (had, self.heap())
    }
}

impl From<&[u8]> for KeyBytes {
    fn from(key: &[u8]) -> Self {
        let mut k = KeyBytes::default();
        k.set(&Probe::new(key, 0));
        k
    }
}

/// A key prepared for lookups: its hash and, for short keys, a zero-padded copy so that
/// comparisons are fixed-size.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Probe<'a> {
    pub hash: u64,
    key: &'a [u8],
    padded: [u8; INLINE_KEY],
}

impl<'a> Probe<'a> {
    #[inline]
    fn new(key: &'a [u8], hash: u64) -> Self {
        let mut padded = [0u8; INLINE_KEY];
        if let Some(dst) = padded.get_mut(..key.len()) {
            dst.copy_from_slice(key);
        }
        Probe { hash, key, padded }
    }
}

/// One slab entry.
#[derive(Debug, Default)]
pub(crate) struct Slot<P> {
    pub hash: u64,
    pub key: KeyBytes,
    pub live: bool,
    pub p: P,
}

/// Key → slab index map plus the slab itself.
pub(crate) struct KeyTable<P> {
    hasher: KeyHasher,
    index: HashTable<u32>,
    pub slots: Vec<Slot<P>>,
    free: Vec<u32>,
    live: usize,
    /// Index entries whose slot is dead or re-keyed.
    stale: usize,
    peak: usize,
    /// Heap bytes held by spilled (longer than inline) key buffers.
    key_heap: usize,
}

impl<P> std::fmt::Debug for KeyTable<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyTable")
            .field("live", &self.live)
            .field("peak", &self.peak)
            .finish_non_exhaustive()
    }
}

impl<P: Default> KeyTable<P> {
    /// A table hashing with keys derived from `seed`. Datapaths should pass a random seed:
    /// clients choose keys, and a known seed would let them aim keys at one probe chain.
    pub fn new(seed: u64, capacity: usize) -> Self {
        KeyTable {
            hasher: KeyHasher::new(seed),
            index: HashTable::with_capacity(capacity),
            slots: Vec::with_capacity(capacity),
            free: Vec::new(),
            live: 0,
            stale: 0,
            peak: 0,
            key_heap: 0,
        }
    }

    #[inline]
    pub fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash(key).raw()
    }

    /// `key`, hashed and prepared for lookups.
    #[inline]
    pub fn probe<'a>(&self, key: &'a [u8]) -> Probe<'a> {
        Probe::new(key, self.hash(key))
    }

    /// `key` prepared for lookups with the hash the caller already has: `hash` must be
    /// `KeyHasher::new(seed).hash(key)` for this table's seed (checked in debug builds).
    #[inline]
    pub fn probe_hashed<'a>(&self, key: &'a [u8], hash: KeyHash) -> Probe<'a> {
        debug_assert_eq!(hash.raw(), self.hash(key), "a hash from another hasher");
        Probe::new(key, hash.raw())
    }

    /// The slab index of the probed key, if tracked.
    #[inline]
    pub fn find(&self, p: &Probe<'_>) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(p.hash, |&i| {
                let s = &slots[i as usize];
                s.live && s.hash == p.hash && s.key.matches(p)
            })
            .copied()
    }

    /// The slab index of `key`, inserting it with a default payload if it is not tracked
    /// (one probe either way). Returns the index and whether it was inserted.
    #[inline]
    pub fn find_or_insert(&mut self, p: &Probe<'_>) -> (u32, bool) {
        self.tidy();
        let slots = &self.slots;
        let entry = self.index.entry(
            p.hash,
            |&i| {
                let s = &slots[i as usize];
                s.live && s.hash == p.hash && s.key.matches(p)
            },
            |&i| slots[i as usize].hash,
        );
        match entry {
            Entry::Occupied(o) => (*o.get(), false),
            Entry::Vacant(v) => {
                let idx = match self.free.pop() {
                    Some(i) => i,
                    None => {
                        let i = u32::try_from(self.slots.len()).unwrap_or(NIL - 1);
                        self.slots.push(Slot::default());
                        i
                    }
                };
                v.insert(idx);
                Self::fill(&mut self.slots[idx as usize], &mut self.key_heap, p);
                self.live += 1;
                self.peak = self.peak.max(self.live);
                (idx, true)
            }
        }
    }

    /// Keeps the index at most half full. Lossy counting inserts and deletes keys at a
    /// high rate; in a nearly full SwissTable deletions leave tombstones and probes for
    /// absent keys run long, while a sparse one turns most deletions back into empty slots.
    #[inline]
    fn tidy(&mut self) {
        if self.stale > 2 * self.live + 256 {
            self.rebuild_index();
        }
        if self.index.len() * 2 >= self.index.capacity() {
            let slots = &self.slots;
            let more = self.index.len().max(16);
            self.index.reserve(more, |&i| slots[i as usize].hash);
        }
    }

    /// Drops stale index entries: re-indexes the live slots.
    #[cold]
    fn rebuild_index(&mut self) {
        self.index.clear();
        let slots = &self.slots;
        for (i, s) in slots.iter().enumerate() {
            if s.live {
                self.index
                    .insert_unique(s.hash, i as u32, |&j| slots[j as usize].hash);
            }
        }
        self.stale = 0;
    }

    #[inline]
    fn fill(slot: &mut Slot<P>, key_heap: &mut usize, p: &Probe<'_>) {
        let (had, has) = slot.key.set(p);
        *key_heap = (*key_heap + has).saturating_sub(had);
        slot.hash = p.hash;
        slot.live = true;
        slot.p = P::default();
    }

    /// Inserts `key` (which must not be tracked) with a default payload; returns its index.
    #[cfg(test)]
    pub fn insert(&mut self, p: &Probe<'_>) -> u32 {
        self.tidy();
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                // Slab indices are u32; LC/SS tables stay orders of magnitude below 2^32
                // entries (that would be hundreds of GiB), so saturating here is unreachable
                // in practice and never indexes out of bounds (push happens first).
                let i = u32::try_from(self.slots.len()).unwrap_or(NIL - 1);
                self.slots.push(Slot::default());
                i
            }
        };
        self.set_key(idx, p);
        let slot = &mut self.slots[idx as usize];
        slot.live = true;
        slot.p = P::default();
        self.live += 1;
        self.peak = self.peak.max(self.live);
        idx
    }

    /// Gives the live entry at `idx` a new (untracked) key, keeping its payload.
    pub fn rekey(&mut self, idx: u32, p: &Probe<'_>) {
        self.tidy();
        // The old key's index entry goes stale (its slot now holds another key).
        self.stale += 1;
        self.set_key(idx, p);
    }

    fn set_key(&mut self, idx: u32, p: &Probe<'_>) {
        let slot = &mut self.slots[idx as usize];
        let (live, payload) = (slot.live, std::mem::take(&mut slot.p));
        Self::fill(slot, &mut self.key_heap, p);
        slot.live = live;
        slot.p = payload;
        let slots = &self.slots;
        self.index
            .insert_unique(p.hash, idx, |&i| slots[i as usize].hash);
    }

    /// Forgets the entry at `idx` (its key buffer is kept for reuse).
    ///
    /// The index entry is left behind (stale): lookups skip entries whose slot is dead or
    /// holds another key, and the index is rebuilt once stale entries outnumber live ones.
    /// Lossy counting deletes keys by the hundred at every bucket boundary; this makes a
    /// deletion a flag store instead of a probe.
    pub fn remove(&mut self, idx: u32) {
        let slot = &mut self.slots[idx as usize];
        if slot.live {
            slot.live = false;
            self.live -= 1;
            self.stale += 1;
            self.free.push(idx);
        }
    }

    /// Number of tracked keys.
    #[inline]
    pub fn len(&self) -> usize {
        self.live
    }

    /// Most keys tracked at once.
    pub fn peak(&self) -> usize {
        self.peak
    }

    /// Indices of live entries (slab order).
    pub fn live_indices(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.live)
            .map(|(i, _)| i as u32)
    }

    /// Bytes this table holds: the slab, the index (one control byte and one `u32` per
    /// bucket), the free list and spilled key buffers.
    pub fn memory_bytes(&self) -> usize {
        let buckets = if self.index.capacity() == 0 {
            0
        } else {
            (self.index.capacity() * 8 / 7 + 1).next_power_of_two()
        };
        self.slots.capacity() * size_of::<Slot<P>>()
            + buckets * (size_of::<u32>() + 1)
            + 16
            + self.free.capacity() * size_of::<u32>()
            + self.key_heap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_remove_reuse() {
        let mut t: KeyTable<u64> = KeyTable::new(7, 0);
        let (_, inserted) = t.find_or_insert(&t.probe(b"z"));
        assert!(inserted);
        let z = t.find(&t.probe(b"z")).unwrap();
        assert_eq!(t.find_or_insert(&t.probe(b"z")), (z, false));
        t.remove(z);
        let long = vec![b'x'; 200];
        let ha = t.probe(b"a");
        let hl = t.probe(&long);
        assert_eq!(t.find(&ha), None);
        let a = t.insert(&ha);
        let l = t.insert(&hl);
        assert_eq!(t.find(&ha), Some(a));
        assert_eq!(t.find(&hl), Some(l));
        assert_eq!(t.slots[l as usize].key.as_slice(), &long[..]);
        // A prefix of a stored key is a different key.
        assert_eq!(t.find(&t.probe(&long[..199])), None);
        assert_eq!(t.find(&t.probe(b"a\0")), None);
        assert_eq!(t.len(), 2);
        let heap = t.memory_bytes();
        t.remove(l);
        assert_eq!(t.find(&hl), None);
        assert_eq!(t.len(), 1);
        // The freed slot (with its 200-byte buffer) is reused: no new heap bytes.
        let hb = t.probe(b"b");
        let b = t.insert(&hb);
        assert_eq!(b, l);
        assert_eq!(t.find(&hb), Some(b));
        // Short keys stay inline even in a slot that once spilled.
        assert_eq!(t.slots[b as usize].key.as_slice(), b"b");
        // (the free list itself may have grown by a few bytes)
        assert!(t.memory_bytes() < heap + 64);
        assert_eq!(t.peak(), 2);
        assert_eq!(t.live_indices().count(), 2);
        // Rekeying keeps the payload.
        t.slots[a as usize].p = 42;
        let hc = t.probe(b"c");
        t.rekey(a, &hc);
        assert_eq!(t.find(&ha), None);
        assert_eq!(t.find(&hc), Some(a));
        assert_eq!(t.slots[a as usize].p, 42);
        // Removing twice is harmless.
        t.remove(b);
        t.remove(b);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn stale_entries_are_skipped_and_rebuilt_away() {
        let mut t: KeyTable<u32> = KeyTable::new(3, 0);
        let keys: Vec<Vec<u8>> = (0..1000u32)
            .map(|i| format!("key{i}").into_bytes())
            .collect();
        for round in 0..5 {
            for k in &keys {
                let p = t.probe(k);
                let (i, inserted) = t.find_or_insert(&p);
                assert!(inserted, "round {round}");
                t.slots[i as usize].p = round;
            }
            // Everything present exactly once.
            for k in &keys {
                let i = t.find(&t.probe(k)).unwrap();
                assert_eq!(t.slots[i as usize].key.as_slice(), &k[..]);
            }
            let idx: Vec<u32> = t.live_indices().collect();
            for i in idx {
                t.remove(i);
            }
            assert_eq!(t.len(), 0);
            for k in &keys {
                assert_eq!(t.find(&t.probe(k)), None);
            }
        }
        // The index was rebuilt along the way instead of growing without bound.
        assert!(t.index.len() <= 3 * 1000 + 257, "{}", t.index.len());
    }

    #[test]
    fn seeds_change_hashes() {
        let a: KeyTable<()> = KeyTable::new(1, 0);
        let b: KeyTable<()> = KeyTable::new(2, 0);
        assert_ne!(a.hash(b"key"), b.hash(b"key"));
        assert_eq!(a.hash(b"key"), a.hash(b"key"));
    }
}
