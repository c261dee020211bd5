//! L1: the hot-key table. Every hot key has an entry; an entry holds the key's current value
//! once one has been learned, and none after a write invalidated it (until the next GET
//! response teaches it again). A GET hit borrows the value for the reply writer.
//!
//! Owns: hot keys' entries and their values. Must not: decide which keys are hot, or check
//! freshness (callers go through [`super::Caches`], which does).
//!
//! A hashbrown [`HashTable`] keyed by the caller's [`KeyHash`] (computed once per request);
//! entries keep the full hash so a lookup compares 8 bytes before it compares keys, and the
//! ketama hash so a write to a hot key finds its replicas without MD5. Capacity for the
//! configured number of keys is reserved up front (up to 65536 entries), so admitting a key
//! does not rehash on the packet path.

use std::fmt;

use hashbrown::HashTable;

use super::{key_heap_bytes, table_bytes, CacheError, CachedValue, KeyHash, MAX_KEY_LEN};

struct HotEntry {
    hash: u64,
    ring_hash: u32,
    key: Box<[u8]>,
    value: Option<CachedValue>,
    /// A GET that may teach the key's absence is outstanding (see
    /// [`HotKeyTable::claim_miss_probe`]).
    miss_probe: bool,
}

impl HotEntry {
    fn heap_bytes(&self) -> usize {
        key_heap_bytes(&self.key) + self.value.as_ref().map_or(0, CachedValue::heap_bytes)
    }
}

/// Whether [`HotKeyTable::admit`] added the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    New,
    AlreadyHot,
}

/// A borrowed view of a hot key's entry.
#[derive(Clone, Copy, Debug)]
pub struct HotKeyRef<'a> {
    pub key: &'a [u8],
    /// The key's ketama hash (as passed to [`HotKeyTable::admit`]).
    pub ring_hash: u32,
    /// The cached value; `None` since the last write to the key.
    pub value: Option<&'a CachedValue>,
}

/// The L1 hot-key table.
pub struct HotKeyTable {
    table: HashTable<HotEntry>,
    max_keys: usize,
    max_value: usize,
    /// Heap bytes of keys and values (with allocator overhead).
    heap: usize,
    /// Entries holding a value.
    filled: usize,
}

impl fmt::Debug for HotKeyTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HotKeyTable")
            .field("keys", &self.table.len())
            .field("filled", &self.filled)
            .field("max_keys", &self.max_keys)
            .field("max_value", &self.max_value)
            .finish()
    }
}

impl HotKeyTable {
    /// A table of at most `max_keys` hot keys whose values are at most `max_value` bytes.
    pub fn new(max_keys: usize, max_value: usize) -> HotKeyTable {
        HotKeyTable {
            table: HashTable::with_capacity(max_keys.min(1 << 16)),
            max_keys,
            max_value,
            heap: 0,
            filled: 0,
        }
    }

    #[inline]
    fn find(&self, h: KeyHash, key: &[u8]) -> Option<&HotEntry> {
        let raw = h.raw();
        self.table.find(raw, |e| e.hash == raw && *e.key == *key)
    }

    #[inline]
    fn find_mut(&mut self, h: KeyHash, key: &[u8]) -> Option<&mut HotEntry> {
        let raw = h.raw();
        self.table
            .find_mut(raw, |e| e.hash == raw && *e.key == *key)
    }

    /// The cached value of `key`, if it is hot and has a value. The hit path.
    #[inline]
    pub fn get(&self, h: KeyHash, key: &[u8]) -> Option<&CachedValue> {
        self.find(h, key).and_then(|e| e.value.as_ref())
    }

    /// The entry of `key`, if it is hot.
    pub fn entry(&self, h: KeyHash, key: &[u8]) -> Option<HotKeyRef<'_>> {
        self.find(h, key).map(|e| HotKeyRef {
            key: &e.key,
            ring_hash: e.ring_hash,
            value: e.value.as_ref(),
        })
    }

    pub fn contains(&self, h: KeyHash, key: &[u8]) -> bool {
        self.find(h, key).is_some()
    }

    /// Makes `key` hot (without a value). `ring_hash` is its ketama hash.
    pub fn admit(&mut self, h: KeyHash, key: &[u8], ring_hash: u32) -> Result<Admit, CacheError> {
        if self.contains(h, key) {
            return Ok(Admit::AlreadyHot);
        }
        if key.len() > MAX_KEY_LEN {
            return Err(CacheError::KeyTooLong(key.len()));
        }
        self.insert_new(h, key.into(), ring_hash, None)?;
        Ok(Admit::New)
    }

    /// Makes `key` hot with `value` (promotion from L2: the key and value move, nothing is
    /// copied). An entry already present keeps its key and takes the value.
    pub fn admit_with_value(
        &mut self,
        h: KeyHash,
        key: Box<[u8]>,
        ring_hash: u32,
        value: CachedValue,
    ) -> Result<Admit, CacheError> {
        if value.data().len() > self.max_value {
            return Err(CacheError::ValueTooLarge {
                len: value.data().len(),
                max: self.max_value,
            });
        }
        if self.contains(h, &key) {
            self.fill(h, &key, value)?;
            return Ok(Admit::AlreadyHot);
        }
        if key.len() > MAX_KEY_LEN {
            return Err(CacheError::KeyTooLong(key.len()));
        }
        self.insert_new(h, key, ring_hash, Some(value))?;
        Ok(Admit::New)
    }

    fn insert_new(
        &mut self,
        h: KeyHash,
        key: Box<[u8]>,
        ring_hash: u32,
        value: Option<CachedValue>,
    ) -> Result<(), CacheError> {
        if self.table.len() >= self.max_keys {
            return Err(CacheError::L1Full(self.max_keys));
        }
        let entry = HotEntry {
            miss_probe: false,
            hash: h.raw(),
            ring_hash,
            key,
            value,
        };
        self.heap += entry.heap_bytes();
        self.filled += usize::from(entry.value.is_some());
        self.table.insert_unique(h.raw(), entry, |e| e.hash);
        Ok(())
    }

    /// Stores `value` as hot key `key`'s current value (replacing any). The caller has
    /// checked freshness.
    pub fn fill(&mut self, h: KeyHash, key: &[u8], value: CachedValue) -> Result<(), CacheError> {
        let max = self.max_value;
        if value.data().len() > max {
            return Err(CacheError::ValueTooLarge {
                len: value.data().len(),
                max,
            });
        }
        let e = self.find_mut(h, key).ok_or(CacheError::NotHot)?;
        let old = e.heap_bytes();
        let was_filled = e.value.is_some();
        e.value = Some(value);
        let new = e.heap_bytes();
        self.heap = self.heap - old + new;
        self.filled += usize::from(!was_filled);
        Ok(())
    }

    /// Whether a GET of `key` should carry the key so that a miss can be learned (an `END`
    /// names no key): the key is hot, its entry holds no value, and no other such GET is
    /// outstanding. Claims the probe; [`HotKeyTable::end_miss_probe`] releases it. One per
    /// key, so a hot key whose server does not answer costs one kept key, not one per GET.
    pub fn claim_miss_probe(&mut self, h: KeyHash, key: &[u8]) -> bool {
        match self.find_mut(h, key) {
            Some(e) if e.value.is_none() && !e.miss_probe => {
                e.miss_probe = true;
                true
            }
            _ => false,
        }
    }

    /// The GET that claimed `key`'s miss probe ended (answered, expired or abandoned).
    pub fn end_miss_probe(&mut self, h: KeyHash, key: &[u8]) {
        if let Some(e) = self.find_mut(h, key) {
            e.miss_probe = false;
        }
    }

    /// Drops `key`'s value (a write is on its way); the key stays hot. Returns whether a
    /// value was dropped.
    pub fn invalidate(&mut self, h: KeyHash, key: &[u8]) -> bool {
        let Some(e) = self.find_mut(h, key) else {
            return false;
        };
        let Some(v) = e.value.take() else {
            return false;
        };
        self.heap -= v.heap_bytes();
        self.filled -= 1;
        true
    }

    /// Removes `key` from the hot set, handing back its key bytes, ketama hash and value.
    pub fn remove(
        &mut self,
        h: KeyHash,
        key: &[u8],
    ) -> Option<(Box<[u8]>, u32, Option<CachedValue>)> {
        let raw = h.raw();
        let found = self
            .table
            .find_entry(raw, |e| e.hash == raw && *e.key == *key)
            .ok()?;
        let (e, _) = found.remove();
        self.heap -= e.heap_bytes();
        self.filled -= usize::from(e.value.is_some());
        Some((e.key, e.ring_hash, e.value))
    }

    /// Every hot key's entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = HotKeyRef<'_>> + '_ {
        self.table.iter().map(|e| HotKeyRef {
            key: &e.key,
            ring_hash: e.ring_hash,
            value: e.value.as_ref(),
        })
    }

    /// Hot keys (with or without a value).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Hot keys that hold a value.
    pub fn filled(&self) -> usize {
        self.filled
    }

    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    pub fn max_value(&self) -> usize {
        self.max_value
    }

    /// Empties the table (keeps its reserved capacity).
    pub fn clear(&mut self) {
        self.table.clear();
        self.heap = 0;
        self.filled = 0;
    }

    /// Bytes used: the table's allocation plus keys and values on the heap.
    pub fn memory_bytes(&self) -> usize {
        table_bytes::<HotEntry>(self.table.capacity()) + self.heap
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::KeyHasher;
    use crate::clock::Instant;

    fn v(data: &[u8]) -> CachedValue {
        CachedValue::new(data, 7, Some(99), Instant::ZERO, 1)
    }

    #[test]
    fn admit_fill_get_invalidate_remove() {
        let hs = KeyHasher::new(0);
        let mut t = HotKeyTable::new(2, 10);
        let (a, b, c) = (hs.hash(b"a"), hs.hash(b"bb"), hs.hash(b"c"));
        assert_eq!(t.admit(a, b"a", 11).unwrap(), Admit::New);
        assert_eq!(t.admit(a, b"a", 11).unwrap(), Admit::AlreadyHot);
        assert_eq!(t.get(a, b"a"), None, "hot but not yet learned");
        t.fill(a, b"a", v(b"hello")).unwrap();
        let got = t.get(a, b"a").unwrap();
        assert_eq!(
            (got.data(), got.flags(), got.cas()),
            (&b"hello"[..], 7, Some(99))
        );
        assert_eq!(t.entry(a, b"a").unwrap().ring_hash, 11);
        assert_eq!(t.filled(), 1);
        // Limits.
        assert_eq!(
            t.fill(a, b"a", v(b"much too long")),
            Err(CacheError::ValueTooLarge { len: 13, max: 10 })
        );
        assert_eq!(t.fill(b, b"bb", v(b"x")), Err(CacheError::NotHot));
        t.admit(b, b"bb", 2).unwrap();
        assert_eq!(t.admit(c, b"c", 3), Err(CacheError::L1Full(2)));
        let long = vec![b'k'; MAX_KEY_LEN + 1];
        assert!(matches!(
            HotKeyTable::new(5, 5).admit(hs.hash(&long), &long, 0),
            Err(CacheError::KeyTooLong(251))
        ));
        // A write drops the value and keeps the key hot.
        assert!(t.invalidate(a, b"a"));
        assert!(!t.invalidate(a, b"a"));
        assert!(t.contains(a, b"a"));
        assert_eq!(t.get(a, b"a"), None);
        assert_eq!(t.filled(), 0);
        // Same hash, different key: no confusion.
        assert_eq!(t.get(a, b"b"), None);
        let (k, rh, val) = t.remove(a, b"a").unwrap();
        assert_eq!((&*k, rh, val), (&b"a"[..], 11, None));
        assert_eq!(t.len(), 1);
        assert!(t.remove(a, b"a").is_none());
    }

    #[test]
    fn memory_accounting_returns_to_baseline() {
        let hs = KeyHasher::new(0);
        let mut t = HotKeyTable::new(100, 1000);
        let empty = t.memory_bytes();
        for i in 0..50u32 {
            let k = format!("key{i}");
            let h = hs.hash(k.as_bytes());
            t.admit(h, k.as_bytes(), i).unwrap();
            t.fill(h, k.as_bytes(), v(&vec![0; i as usize * 10]))
                .unwrap();
        }
        assert!(t.memory_bytes() > empty + 50 * 4 + (0..50).map(|i| i * 10).sum::<usize>());
        for i in 0..50u32 {
            let k = format!("key{i}");
            let h = hs.hash(k.as_bytes());
            if i % 2 == 0 {
                t.invalidate(h, k.as_bytes());
            }
            t.remove(h, k.as_bytes()).unwrap();
        }
        assert_eq!(t.memory_bytes(), empty);
        assert_eq!((t.len(), t.filled()), (0, 0));
    }

    #[test]
    fn promotion_moves_the_value() {
        let hs = KeyHasher::new(0);
        let mut t = HotKeyTable::new(4, 100);
        let h = hs.hash(b"k");
        t.admit_with_value(h, b"k"[..].into(), 5, v(b"val"))
            .unwrap();
        assert_eq!(t.get(h, b"k").unwrap().data(), b"val");
        // Already hot: the value is replaced.
        assert_eq!(
            t.admit_with_value(h, b"k"[..].into(), 5, v(b"new"))
                .unwrap(),
            Admit::AlreadyHot
        );
        assert_eq!(t.get(h, b"k").unwrap().data(), b"new");
        assert_eq!(t.iter().count(), 1);
    }
}
