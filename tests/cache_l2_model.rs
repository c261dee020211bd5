//! The L2 warm-key cache against a simple model: a map of entries, evicting the lowest
//! (estimate, insertion order) first whenever the charged bytes exceed the budget.
//!
//! The model charges each entry by its own statement of L2's accounting (see [`cost`]),
//! not by `WarmKeyCache::entry_cost`, so a mistake in the library's accounting fails here.
//! The node and slot sizes are those of a 64-bit target.
#![cfg(target_pointer_width = "64")]

use std::collections::HashMap;

use kvlb::cache::{CachedValue, KeyHasher, SkewGate, WarmInsert, WarmKeyCache};
use kvlb::clock::Instant;
use kvlb::config::L2Mode;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Insert { key: u8, len: usize, estimate: u64 },
    SetEstimate { key: u8, estimate: u64 },
    Invalidate(u8),
    Promote(u8),
    Get(u8),
    Shrink(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..40;
    prop_oneof![
        8 => (key.clone(), 0usize..300, 0u64..20)
            .prop_map(|(key, len, estimate)| Op::Insert { key, len, estimate }),
        3 => (key.clone(), 0u64..20).prop_map(|(key, estimate)| Op::SetEstimate { key, estimate }),
        2 => key.clone().prop_map(Op::Invalidate),
        2 => key.clone().prop_map(Op::Promote),
        3 => key.prop_map(Op::Get),
        1 => (0usize..4000).prop_map(Op::Shrink),
    ]
}

#[derive(Clone, Debug)]
struct ModelEntry {
    len: usize,
    estimate: u64,
    order: u64,
    /// First byte of the value, to tell versions apart.
    tag: u8,
}

fn name(k: u8) -> Vec<u8> {
    format!("warm-key-{k}").into_bytes()
}

/// Allocator overhead per heap allocation (`kvlb::cache::ALLOC_OVERHEAD`: glibc's 8-byte
/// header and 16-byte granularity); an entry makes two, its key and its value.
const ALLOC_OVERHEAD: usize = 16;
/// An entry's node in the skip list's arena: its (estimate, id) rank (16 bytes), the entry
/// (cache and ring hashes 12, boxed key 16, value 56: boxed data 16, flags 4, cas 16,
/// learned-at 8, version 8, padded) padded to 88, the node's height (1) and 12 `u32`
/// links (48), padded to 160.
const ARENA_NODE: usize = 160;
/// An entry's slot in the hash index: a `u32` node id and hashbrown's control byte.
const INDEX_SLOT: usize = 4 + 1;

/// What an entry of key `k` and a `len`-byte value is charged, as `src/cache/l2.rs`
/// documents it: key + value + 2 × allocator overhead + arena node + index slot.
fn cost(k: u8, len: usize) -> usize {
    name(k).len() + len + 2 * ALLOC_OVERHEAD + ARENA_NODE + INDEX_SLOT
}

fn evict(model: &mut HashMap<u8, ModelEntry>, budget: usize) -> usize {
    let mut n = 0;
    while model.iter().map(|(k, e)| cost(*k, e.len)).sum::<usize>() > budget {
        let (&victim, _) = model
            .iter()
            .min_by_key(|(_, e)| (e.estimate, e.order))
            .unwrap();
        model.remove(&victim);
        n += 1;
    }
    n
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES, when set, runs more (or fewer) cases than the default here.
        cases: std::env::var("PROPTEST_CASES").map_or(500, |v| v.parse().unwrap_or(500)),
        ..ProptestConfig::default()
    })]
    #[test]
    fn l2_behaves_like_its_model(ops in prop::collection::vec(op(), 1..300), budget in 500usize..6000) {
        let hs = KeyHasher::new(11);
        let gate = SkewGate::new(L2Mode::On, 0.2, 0.1).unwrap();
        let mut l2 = WarmKeyCache::new(gate, budget, 256, 5);
        let mut model: HashMap<u8, ModelEntry> = HashMap::new();
        let mut order = 0u64;
        let mut tag = 0u8;
        for op in ops {
            match op {
                Op::Insert { key, len, estimate } => {
                    tag = tag.wrapping_add(1);
                    let v = CachedValue::new(&vec![tag; len], 0, None, Instant::ZERO, 0);
                    let got = l2.insert(hs.hash(&name(key)), &name(key), 0, v, estimate);
                    if len > 256 {
                        prop_assert!(got.is_err());
                        continue;
                    }
                    match model.get_mut(&key) {
                        Some(e) => {
                            e.len = len;
                            e.estimate = estimate;
                            e.tag = tag;
                        }
                        None => {
                            model.insert(key, ModelEntry { len, estimate, order, tag });
                            order += 1;
                        }
                    }
                    let evicted = evict(&mut model, budget);
                    let stored = model.contains_key(&key);
                    prop_assert_eq!(got.unwrap(), WarmInsert { stored, evicted });
                }
                Op::SetEstimate { key, estimate } => {
                    let ours = l2.set_estimate(hs.hash(&name(key)), &name(key), estimate);
                    let theirs = match model.get_mut(&key) {
                        Some(e) => {
                            e.estimate = estimate;
                            true
                        }
                        None => false,
                    };
                    prop_assert_eq!(ours, theirs);
                }
                Op::Invalidate(key) => {
                    let ours = l2.invalidate(hs.hash(&name(key)), &name(key));
                    prop_assert_eq!(ours, model.remove(&key).is_some());
                }
                Op::Promote(key) => {
                    let ours = l2.promote(hs.hash(&name(key)), &name(key));
                    let theirs = model.remove(&key);
                    prop_assert_eq!(ours.is_some(), theirs.is_some());
                    if let (Some((k, _, v)), Some(e)) = (ours, theirs) {
                        prop_assert_eq!(&*k, &name(key)[..]);
                        prop_assert_eq!(v.data().len(), e.len);
                    }
                }
                Op::Get(key) => {
                    let ours = l2.get(hs.hash(&name(key)), &name(key));
                    let theirs = model.get(&key);
                    prop_assert_eq!(ours.is_some(), theirs.is_some());
                    if let (Some(v), Some(e)) = (ours, theirs) {
                        prop_assert_eq!(v.data().len(), e.len);
                        prop_assert!(v.data().iter().all(|&b| b == e.tag));
                    }
                }
                Op::Shrink(to) => {
                    let ours = l2.evict_to(to);
                    prop_assert_eq!(ours, evict(&mut model, to));
                }
            }
            prop_assert_eq!(l2.len(), model.len());
            let used: usize = model.iter().map(|(k, e)| cost(*k, e.len)).sum();
            prop_assert_eq!(l2.used_bytes(), used);
        }
        l2.check_invariants();
        // Order: least valuable first, as the model ranks them.
        let ours: Vec<Vec<u8>> = l2.iter().map(|(k, _, _)| k.to_vec()).collect();
        let mut theirs: Vec<(u64, u64, u8)> =
            model.iter().map(|(k, e)| (e.estimate, e.order, *k)).collect();
        theirs.sort_unstable();
        let theirs: Vec<Vec<u8>> = theirs.into_iter().map(|(_, _, k)| name(k)).collect();
        prop_assert_eq!(ours, theirs);
    }
}
