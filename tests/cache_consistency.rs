//! No interleaving of writes, GETs and responses leaves a value older than the last write in
//! either cache layer.
//!
//! A model of one memcached backend per key and an unreliable network: writes and GETs are
//! forwarded (through `Caches` exactly as the core does), the backend applies writes and
//! processes GETs in any order, replies arrive in any order or never (a write whose flow
//! expires is dropped and never applied). Hotness, warmth and the L2 gate change at random.
//! A tiny write-stamp table forces keys to collide.
//!
//! After every step: a key with a write in flight is cached nowhere, and every cached value
//! equals the backend's current value. Every lookup hit is checked the same way.

use std::collections::HashMap;
use std::time::Duration;

use kvlb::cache::{CacheSettings, Caches, GetResponse, ReadTicket};
use kvlb::clock::Instant;
use kvlb::config::{Config, L2Mode};
use proptest::prelude::*;

const KEYS: usize = 4;

#[derive(Clone, Debug)]
enum Step {
    /// A client writes key k; the core forwards it.
    WriteSent(usize),
    /// The backend applies the i-th write in flight (if not yet applied).
    Apply(usize),
    /// The i-th write's flow ends: its reply arrives (if applied) or it expires (if not:
    /// then it is dropped for good).
    WriteEnds(usize),
    /// A client GETs key k: a hit is checked, a miss is forwarded.
    Get(usize),
    /// The backend processes the i-th GET in flight.
    Process(usize),
    /// The i-th GET's response arrives (if processed), learned hot or warm.
    Respond(usize, Option<u64>),
    /// The i-th GET's flow is lost.
    LoseGet(usize),
    Admit(usize),
    Demote(usize, Option<u64>),
    Skew(f64),
}

fn step() -> impl Strategy<Value = Step> {
    let k = 0..KEYS;
    let i = 0usize..8;
    prop_oneof![
        4 => k.clone().prop_map(Step::WriteSent),
        4 => i.clone().prop_map(Step::Apply),
        4 => i.clone().prop_map(Step::WriteEnds),
        6 => k.clone().prop_map(Step::Get),
        5 => i.clone().prop_map(Step::Process),
        6 => (i.clone(), prop::option::of(1u64..100)).prop_map(|(i, w)| Step::Respond(i, w)),
        1 => i.prop_map(Step::LoseGet),
        2 => k.clone().prop_map(Step::Admit),
        1 => (k, prop::option::of(1u64..100)).prop_map(|(k, w)| Step::Demote(k, w)),
        1 => (0.0f64..1.0).prop_map(Step::Skew),
    ]
}

struct Write {
    key: usize,
    value: u64,
    applied: bool,
}

struct Read {
    key: usize,
    ticket: ReadTicket,
    seen: Option<u64>,
}

fn key(k: usize) -> Vec<u8> {
    format!("key-{k}").into_bytes()
}

fn run(steps: Vec<Step>, mode: L2Mode) -> Result<(), TestCaseError> {
    let cfg = Config {
        l2_mode: mode,
        l1_max_keys: 2,
        ..Config::default()
    };
    let mut s = CacheSettings::from_config(&cfg, 9);
    // Two slots for four keys: collisions everywhere.
    s.stamp_slots = 2;
    s.max_age = None;
    let mut c = Caches::new(&s).unwrap();
    let now = Instant::ZERO + Duration::from_secs(1);

    let mut backend: HashMap<usize, u64> = (0..KEYS).map(|k| (k, 0)).collect();
    let mut writes: Vec<Write> = Vec::new();
    let mut reads: Vec<Read> = Vec::new();
    let mut next_value = 1u64;

    for st in steps {
        match st {
            Step::WriteSent(k) => {
                c.write_sent(c.key_hash(&key(k)), &key(k));
                writes.push(Write {
                    key: k,
                    value: next_value,
                    applied: false,
                });
                next_value += 1;
            }
            Step::Apply(i) => {
                if let Some(w) = writes.get_mut(i) {
                    if !w.applied {
                        w.applied = true;
                        backend.insert(w.key, w.value);
                    }
                }
            }
            Step::WriteEnds(i) => {
                if i < writes.len() {
                    let w = writes.remove(i);
                    c.write_done(c.key_hash(&key(w.key)));
                }
            }
            Step::Get(k) => {
                let h = c.key_hash(&key(k));
                if let Some(hit) = c.lookup(h, &key(k), now) {
                    let v = u64::from_le_bytes(hit.value.data().try_into().unwrap());
                    prop_assert!(
                        !writes.iter().any(|w| w.key == k),
                        "hit on key {} with a write in flight",
                        k
                    );
                    prop_assert_eq!(v, backend[&k], "stale hit on key {}", k);
                } else {
                    reads.push(Read {
                        key: k,
                        ticket: c.read_sent(h),
                        seen: None,
                    });
                }
            }
            Step::Process(i) => {
                if let Some(r) = reads.get_mut(i) {
                    if r.seen.is_none() {
                        r.seen = Some(backend[&r.key]);
                    }
                }
            }
            Step::Respond(i, warm) => {
                if reads.get(i).is_some_and(|r| r.seen.is_some()) {
                    let r = reads.remove(i);
                    let k = key(r.key);
                    let data = r.seen.unwrap().to_le_bytes();
                    let resp = GetResponse {
                        key: &k,
                        ring_hash: 0,
                        ticket: r.ticket,
                        data: &data,
                        flags: 0,
                        cas: None,
                    };
                    c.learn(c.key_hash(&k), &resp, now, warm);
                }
            }
            Step::LoseGet(i) => {
                if i < reads.len() {
                    reads.remove(i);
                }
            }
            Step::Admit(k) => {
                let _ = c.admit_hot(c.key_hash(&key(k)), &key(k), 0);
            }
            Step::Demote(k, warm) => {
                c.demote(c.key_hash(&key(k)), &key(k), warm);
            }
            Step::Skew(share) => {
                c.observe_skew(share);
            }
        }
        // The invariant, over every key and both layers.
        for k in 0..KEYS {
            let kb = key(k);
            let h = c.key_hash(&kb);
            let l1 = c.l1().get(h, &kb).map(|v| v.data().to_vec());
            let l2 = c.l2().get(h, &kb).map(|v| v.data().to_vec());
            for (layer, v) in [("L1", l1), ("L2", l2)] {
                if let Some(v) = v {
                    prop_assert!(
                        !writes.iter().any(|w| w.key == k),
                        "{} holds key {} while a write is in flight",
                        layer,
                        k
                    );
                    let v = u64::from_le_bytes(v.try_into().unwrap());
                    prop_assert_eq!(v, backend[&k], "{} holds a stale value of key {}", layer, k);
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES, when set, runs more (or fewer) cases than the default here.
        cases: std::env::var("PROPTEST_CASES").map_or(1000, |v| v.parse().unwrap_or(1000)),
        ..ProptestConfig::default()
    })]
    #[test]
    fn caches_never_hold_stale_values(steps in prop::collection::vec(step(), 1..120)) {
        run(steps, L2Mode::On)?;
    }

    #[test]
    fn caches_never_hold_stale_values_with_auto_l2(steps in prop::collection::vec(step(), 1..120)) {
        run(steps, L2Mode::Auto)?;
    }
}

/// The test is not vacuous: under a benign schedule values are learned and served.
#[test]
fn values_are_learned_and_served() {
    let cfg = Config {
        l2_mode: L2Mode::On,
        ..Config::default()
    };
    let mut c = Caches::new(&CacheSettings::from_config(&cfg, 9)).unwrap();
    let now = Instant::ZERO;
    let (hot, warm) = (key(0), key(1));
    let (hh, hw) = (c.key_hash(&hot), c.key_hash(&warm));
    c.admit_hot(hh, &hot, 0).unwrap();
    for (h, k, w) in [(hh, &hot, None), (hw, &warm, Some(5))] {
        let t = c.read_sent(h);
        let v = GetResponse {
            key: k,
            ring_hash: 0,
            ticket: t,
            data: b"value",
            flags: 0,
            cas: Some(1),
        };
        c.learn(h, &v, now, w);
        assert_eq!(c.lookup(h, k, now).unwrap().value.data(), b"value");
    }
    let n = c.counters();
    assert_eq!(
        (n.learned_l1, n.learned_l2, n.l1_hits, n.l2_hits),
        (1, 1, 1, 1)
    );
}
