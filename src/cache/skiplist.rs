//! An ordered map as a skip list in an arena: nodes live in a `Vec`, links are `u32`
//! indexes, freed nodes are reused. Safe Rust only.
//!
//! Owns: ordering and the node arena. Must not: know what the keys mean (the L2 cache
//! orders by (estimate, id); see [`super::l2`]).
//!
//! A node's height is drawn from a geometric distribution with p = 1/4 (a deterministic
//! xorshift generator, so runs are reproducible), capped at [`MAX_LEVEL`] = 12: searches,
//! inserts and removals take O(log n) expected steps for up to 4^12 ≈ 16.7M entries and stay
//! correct beyond. Links are stored inline (`[u32; MAX_LEVEL]`, 48 bytes per node) rather
//! than in a per-node allocation: p = 1/4 nodes average 1.33 levels, so a boxed slice would
//! save ~40 bytes per node but cost an allocation per insert and a pointer chase per step.
//! The smallest entry is the head's first successor, so [`SkipList::pop_first`] is O(1)
//! expected (only the levels the node is on are touched).

use std::fmt;
use std::mem::size_of;

/// The most levels a node can have.
pub const MAX_LEVEL: usize = 12;

/// End of a level.
const NIL: u32 = u32::MAX;

/// A node's position in the arena; stable while the entry is in the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeId(u32);

impl NodeId {
    /// The arena index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

struct Node<K, V> {
    key: K,
    value: V,
    height: u8,
    next: [u32; MAX_LEVEL],
}

/// An ordered map from `K` to `V` (keys unique).
pub struct SkipList<K, V> {
    /// `None` marks a free slot (listed in `free`).
    nodes: Vec<Option<Node<K, V>>>,
    free: Vec<u32>,
    /// The head's links.
    head: [u32; MAX_LEVEL],
    /// Levels in use: every level ≥ `levels` is empty.
    levels: usize,
    len: usize,
    rng: u64,
}

impl<K, V> fmt::Debug for SkipList<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SkipList")
            .field("len", &self.len)
            .field("levels", &self.levels)
            .field("arena", &self.nodes.len())
            .finish()
    }
}

impl<K: Ord, V> Default for SkipList<K, V> {
    fn default() -> Self {
        SkipList::new(0x9E37_79B9_7F4A_7C15)
    }
}

/// Where a search stopped on each level: the last node (or the head, `NIL`) whose key is
/// below the searched key.
type Path = [u32; MAX_LEVEL];

impl<K: Ord, V> SkipList<K, V> {
    /// An empty list whose node heights come from `seed`.
    pub fn new(seed: u64) -> Self {
        SkipList {
            nodes: Vec::new(),
            free: Vec::new(),
            head: [NIL; MAX_LEVEL],
            levels: 1,
            len: 0,
            rng: seed | 1,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn random_height(&mut self) -> usize {
        // xorshift64
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        // Each pair of bits is 0 with probability 1/4: height 1 + (number of trailing zero
        // bit pairs).
        let h = 1 + (x.trailing_zeros() / 2) as usize;
        h.min(MAX_LEVEL)
    }

    #[inline]
    fn node(&self, i: u32) -> &Node<K, V> {
        match self.nodes.get(i as usize) {
            Some(Some(n)) => n,
            // Links only ever point at live nodes (checked by `check_invariants`).
            _ => unreachable!("skip list link to a free or missing node {i}"),
        }
    }

    #[inline]
    fn node_mut(&mut self, i: u32) -> &mut Node<K, V> {
        match self.nodes.get_mut(i as usize) {
            Some(Some(n)) => n,
            _ => unreachable!("skip list link to a free or missing node {i}"),
        }
    }

    /// The successor of `at` (the head when `NIL`) on `level`.
    #[inline]
    fn next(&self, at: u32, level: usize) -> u32 {
        if at == NIL {
            self.head[level]
        } else {
            self.node(at).next[level]
        }
    }

    #[inline]
    fn set_next(&mut self, at: u32, level: usize, to: u32) {
        if at == NIL {
            self.head[level] = to;
        } else {
            self.node_mut(at).next[level] = to;
        }
    }

    /// The predecessors of `key` on every level in use.
    fn path_to(&self, key: &K) -> Path {
        let mut path = [NIL; MAX_LEVEL];
        let mut at = NIL;
        for level in (0..self.levels).rev() {
            loop {
                let n = self.next(at, level);
                if n != NIL && self.node(n).key < *key {
                    at = n;
                } else {
                    break;
                }
            }
            path[level] = at;
        }
        path
    }

    /// The node holding `key`, if any.
    pub fn find(&self, key: &K) -> Option<NodeId> {
        let path = self.path_to(key);
        let n = self.next(path[0], 0);
        (n != NIL && self.node(n).key == *key).then_some(NodeId(n))
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.find(key).map(|id| &self.node(id.0).value)
    }

    /// Key and value of a node. `None` for a stale id.
    pub fn entry(&self, id: NodeId) -> Option<(&K, &V)> {
        match self.nodes.get(id.index()) {
            Some(Some(n)) => Some((&n.key, &n.value)),
            _ => None,
        }
    }

    /// The value of a node, mutably (its key cannot change this way; see [`SkipList::rekey`]).
    pub fn value_mut(&mut self, id: NodeId) -> Option<&mut V> {
        match self.nodes.get_mut(id.index()) {
            Some(Some(n)) => Some(&mut n.value),
            _ => None,
        }
    }

    fn link(&mut self, id: u32, height: usize, path: &Path) {
        if height > self.levels {
            // Levels above the old top start at the head (path already holds NIL there).
            self.levels = height;
        }
        for (level, &pred) in path.iter().enumerate().take(height) {
            let succ = self.next(pred, level);
            self.node_mut(id).next[level] = succ;
            self.set_next(pred, level, id);
        }
    }

    fn unlink(&mut self, id: u32, path: &Path) {
        let height = usize::from(self.node(id).height);
        for (level, &pred) in path.iter().enumerate().take(height) {
            // `pred` is the last node below the key on this level, so its successor is
            // `id` on every level the node is on.
            debug_assert_eq!(self.next(pred, level), id);
            let succ = self.node(id).next[level];
            self.set_next(pred, level, succ);
        }
        while self.levels > 1 && self.head[self.levels - 1] == NIL {
            self.levels -= 1;
        }
    }

    /// Inserts `key → value`. When `key` is already present nothing changes and the pair
    /// comes back as the error.
    pub fn insert(&mut self, key: K, value: V) -> Result<NodeId, (K, V)> {
        let path = self.path_to(&key);
        let n = self.next(path[0], 0);
        if n != NIL && self.node(n).key == key {
            return Err((key, value));
        }
        let height = self.random_height();
        let node = Node {
            key,
            value,
            height: height as u8,
            next: [NIL; MAX_LEVEL],
        };
        let id = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = Some(node);
                i
            }
            None => {
                // An arena of u32::MAX - 1 nodes would need > 200 GB; growing past it
                // would alias NIL.
                assert!(self.nodes.len() < NIL as usize, "skip list arena full");
                self.nodes.push(Some(node));
                (self.nodes.len() - 1) as u32
            }
        };
        self.link(id, height, &path);
        self.len += 1;
        Ok(NodeId(id))
    }

    /// Removes `key`, returning its entry.
    pub fn remove(&mut self, key: &K) -> Option<(K, V)> {
        let path = self.path_to(key);
        let n = self.next(path[0], 0);
        if n == NIL || self.node(n).key != *key {
            return None;
        }
        self.unlink(n, &path);
        Some(self.release(n))
    }

    fn release(&mut self, id: u32) -> (K, V) {
        let node = self.nodes[id as usize]
            .take()
            .unwrap_or_else(|| unreachable!("released a free node"));
        self.free.push(id);
        self.len -= 1;
        (node.key, node.value)
    }

    /// The smallest entry.
    pub fn first(&self) -> Option<NodeId> {
        let n = self.head[0];
        (n != NIL).then_some(NodeId(n))
    }

    /// Removes and returns the smallest entry; O(1) expected.
    pub fn pop_first(&mut self) -> Option<(K, V)> {
        let n = self.head[0];
        if n == NIL {
            return None;
        }
        // The first node's predecessor on each of its levels is the head.
        self.unlink(n, &[NIL; MAX_LEVEL]);
        Some(self.release(n))
    }

    /// Changes the key of the entry at `old` to `new`, keeping its node (no allocation).
    /// Fails, changing nothing, when `old` is absent or `new` is present under another
    /// entry; `new` comes back in the error.
    pub fn rekey(&mut self, old: &K, new: K) -> Result<NodeId, K> {
        if *old == new {
            return self.find(old).ok_or(new);
        }
        let path = self.path_to(old);
        let n = self.next(path[0], 0);
        if n == NIL || self.node(n).key != *old {
            return Err(new);
        }
        if self.find(&new).is_some() {
            return Err(new);
        }
        self.unlink(n, &path);
        self.node_mut(n).key = new;
        self.node_mut(n).next = [NIL; MAX_LEVEL];
        let height = usize::from(self.node(n).height);
        let path = self.path_to(&self.node(n).key);
        self.link(n, height, &path);
        Ok(NodeId(n))
    }

    /// Entries in ascending key order.
    pub fn iter(&self) -> Iter<'_, K, V> {
        Iter {
            list: self,
            at: self.head[0],
        }
    }

    /// Empties the list and gives its memory back.
    pub fn clear(&mut self) {
        self.nodes = Vec::new();
        self.free = Vec::new();
        self.head = [NIL; MAX_LEVEL];
        self.levels = 1;
        self.len = 0;
    }

    /// Bytes of the arena (live and free nodes; not what `K` or `V` own on the heap).
    pub fn memory_bytes(&self) -> usize {
        self.nodes.capacity() * size_of::<Option<Node<K, V>>>() + self.free.capacity() * 4
    }

    /// Bytes one node takes in the arena.
    pub const fn node_bytes() -> usize {
        size_of::<Option<Node<K, V>>>()
    }

    /// Checks every structural invariant; for tests. Panics with a description on failure.
    pub fn check_invariants(&self) {
        // Level 0 holds every live node once, in strictly ascending order.
        let mut seen = vec![false; self.nodes.len()];
        let mut count = 0;
        let mut at = self.head[0];
        let mut prev: Option<u32> = None;
        while at != NIL {
            assert!(!seen[at as usize], "cycle at node {at}");
            seen[at as usize] = true;
            if let Some(p) = prev {
                assert!(self.node(p).key < self.node(at).key, "level 0 out of order");
            }
            prev = Some(at);
            count += 1;
            at = self.node(at).next[0];
        }
        assert_eq!(count, self.len, "len");
        let live = self.nodes.iter().filter(|n| n.is_some()).count();
        assert_eq!(live, self.len, "live nodes");
        assert_eq!(self.free.len() + self.len, self.nodes.len(), "free list");
        for &f in &self.free {
            assert!(self.nodes[f as usize].is_none(), "free slot {f} in use");
        }
        // Each higher level is an ordered sublist of the one below, holding exactly the
        // nodes tall enough for it.
        for level in 1..MAX_LEVEL {
            let mut at = self.head[level];
            let mut n = 0;
            while at != NIL {
                let node = self.node(at);
                assert!(
                    usize::from(node.height) > level,
                    "short node on level {level}"
                );
                let next = node.next[level];
                if next != NIL {
                    assert!(node.key < self.node(next).key, "level {level} out of order");
                }
                n += 1;
                at = next;
            }
            let tall = self
                .nodes
                .iter()
                .flatten()
                .filter(|x| usize::from(x.height) > level)
                .count();
            assert_eq!(n, tall, "level {level} misses tall nodes");
            if level >= self.levels {
                assert_eq!(self.head[level], NIL, "level {level} above `levels` in use");
            }
        }
        for node in self.nodes.iter().flatten() {
            let h = usize::from(node.height);
            assert!((1..=MAX_LEVEL).contains(&h), "height {h}");
            assert!(
                node.next[h..].iter().all(|&x| x == NIL),
                "links above height"
            );
        }
    }
}

/// In-order iterator over a [`SkipList`].
#[derive(Debug)]
pub struct Iter<'a, K, V> {
    list: &'a SkipList<K, V>,
    at: u32,
}

impl<'a, K: Ord, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);
    fn next(&mut self) -> Option<Self::Item> {
        if self.at == NIL {
            return None;
        }
        let node = self.list.node(self.at);
        self.at = node.next[0];
        Some((&node.key, &node.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u16, u32),
        Remove(u16),
        PopFirst,
        Rekey(u16, u16),
        Get(u16),
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        // Keys from a small range so that hits, duplicates and removals of present keys
        // are common.
        prop_oneof![
            30 => (0u16..300, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            15 => (0u16..300).prop_map(Op::Remove),
            5 => Just(Op::PopFirst),
            10 => (0u16..300, 0u16..300).prop_map(|(a, b)| Op::Rekey(a, b)),
            10 => (0u16..300).prop_map(Op::Get),
            1 => Just(Op::Clear),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            // PROPTEST_CASES, when set, runs more (or fewer) cases than the default here.
            cases: std::env::var("PROPTEST_CASES").map_or(256, |v| v.parse().unwrap_or(256)),
            ..ProptestConfig::default()
        })]
        #[test]
        fn behaves_like_btreemap(ops in prop::collection::vec(op(), 0..400), seed in any::<u64>()) {
            let mut list = SkipList::new(seed);
            let mut model = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        let ours = list.insert(k, v).is_ok();
                        let theirs = !model.contains_key(&k);
                        if theirs {
                            model.insert(k, v);
                        }
                        prop_assert_eq!(ours, theirs);
                    }
                    Op::Remove(k) => prop_assert_eq!(list.remove(&k), model.remove_entry(&k)),
                    Op::PopFirst => prop_assert_eq!(list.pop_first(), model.pop_first()),
                    Op::Rekey(a, b) => {
                        let ok = list.rekey(&a, b).is_ok();
                        let can = model.contains_key(&a) && (a == b || !model.contains_key(&b));
                        prop_assert_eq!(ok, can);
                        if can {
                            let v = model.remove(&a).unwrap();
                            model.insert(b, v);
                        }
                    }
                    Op::Get(k) => prop_assert_eq!(list.get(&k), model.get(&k)),
                    Op::Clear => {
                        list.clear();
                        model.clear();
                    }
                }
                prop_assert_eq!(list.len(), model.len());
            }
            list.check_invariants();
            let ours: Vec<(u16, u32)> = list.iter().map(|(k, v)| (*k, *v)).collect();
            let theirs: Vec<(u16, u32)> = model.into_iter().collect();
            prop_assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn invariants_hold_after_every_step() {
        let mut list = SkipList::new(7);
        for i in 0..2000u32 {
            list.insert((i * 7919) % 2003, i).unwrap();
            if i % 3 == 0 {
                list.remove(&((i * 31) % 2003));
            }
            if i % 97 == 0 {
                list.check_invariants();
            }
        }
        list.check_invariants();
        // Freed nodes are reused: the arena never outgrows the peak population much.
        let peak = list.nodes.len();
        while list.pop_first().is_some() {}
        list.check_invariants();
        for i in 0..peak as u32 {
            list.insert(i, i).unwrap();
        }
        assert_eq!(list.nodes.len(), peak);
        list.check_invariants();
    }

    #[test]
    fn searches_are_logarithmic() {
        // Count comparisons of a search in a 100k list: O(log n) expected means a small
        // multiple of log4(n) · 4 ≈ 33 steps, nowhere near n.
        let mut list = SkipList::new(42);
        let n = 100_000u32;
        for i in 0..n {
            list.insert(i, ()).unwrap();
        }
        let mut worst = 0;
        for probe in (0..n).step_by(997) {
            let mut steps = 0;
            let mut at = NIL;
            for level in (0..list.levels).rev() {
                loop {
                    steps += 1;
                    let nx = list.next(at, level);
                    if nx != NIL && list.node(nx).key < probe {
                        at = nx;
                    } else {
                        break;
                    }
                }
            }
            worst = worst.max(steps);
        }
        assert!(worst < 120, "worst search took {worst} steps");
        assert!(
            list.levels >= 7 && list.levels <= MAX_LEVEL,
            "levels {}",
            list.levels
        );
    }
}
