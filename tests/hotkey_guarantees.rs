//! The detectors' guarantees, checked on many random and adversarially ordered streams
//! against exact counts:
//! - every tracked key: `estimate ≤ true ≤ estimate + max_error`, `max_error ≤ εW`;
//! - every untracked key: `true ≤ εW`;
//! - no false negatives under either report rule; Tight reports a subset of Classic;
//! - lossy counting's entry bound; Space-Saving's counter bound;
//! - the decayed detector: the same for decayed counts, and after a rotation its hot set
//!   holds every key that was hot over the epoch that ended;
//! - the change feed replayed gives exactly the hot and warm sets.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use kvlb::hotkey::{
    build, Algo, AnyDetector, Detector, DetectorParams, Heat, HeatChange, ReportRule,
};

/// How a generated stream is ordered.
#[derive(Clone, Copy, Debug)]
enum Order {
    /// As drawn.
    Random,
    /// Every key's requests contiguous, keys in id order (stresses Δ: late keys enter
    /// with a large Δ).
    Grouped,
    /// The grouped stream reversed (the heavy keys arrive last).
    GroupedReversed,
    /// Round robin over the keys (every bucket sees every key).
    RoundRobin,
}

fn order_strategy() -> impl Strategy<Value = Order> {
    prop_oneof![
        Just(Order::Random),
        Just(Order::Grouped),
        Just(Order::GroupedReversed),
        Just(Order::RoundRobin),
    ]
}

/// A stream of (key id, weight): a few heavy keys over a long tail, reordered.
fn stream_strategy(max_len: usize, weighted: bool) -> impl Strategy<Value = Vec<(u16, u64)>> {
    let item = (0u16..8, 0u16..2000, 0u64..4, 1u64..400);
    (
        proptest::collection::vec(item, 1..max_len),
        order_strategy(),
        0u64..4,
    )
        .prop_map(move |(raw, order, huge_every)| {
            let mut s: Vec<(u16, u64)> = raw
                .into_iter()
                .enumerate()
                .map(|(i, (heavy, tail, pick, w))| {
                    // Half the requests to 8 heavy keys, the rest over 2000.
                    let k = if pick < 2 { heavy } else { 8 + tail };
                    let w = if !weighted {
                        1
                    } else if huge_every > 0 && i as u64 % (97 * huge_every) == 0 {
                        100_000
                    } else {
                        w
                    };
                    (k, w)
                })
                .collect();
            match order {
                Order::Random => {}
                Order::Grouped => s.sort_by_key(|x| x.0),
                Order::GroupedReversed => {
                    s.sort_by_key(|x| x.0);
                    s.reverse();
                }
                Order::RoundRobin => {
                    let mut by: BTreeMap<u16, Vec<(u16, u64)>> = BTreeMap::new();
                    for x in s {
                        by.entry(x.0).or_default().push(x);
                    }
                    let mut out = Vec::new();
                    let mut lists: Vec<_> = by.into_values().map(|v| v.into_iter()).collect();
                    loop {
                        let before = out.len();
                        for l in &mut lists {
                            out.extend(l.next());
                        }
                        if out.len() == before {
                            break;
                        }
                    }
                    s = out;
                }
            }
            s
        })
}

fn key(k: u16) -> Vec<u8> {
    format!("key:{k:05}").into_bytes()
}

fn params(algo: Algo, support: f64, error: f64) -> DetectorParams {
    let mut p = DetectorParams::new(algo, support, error);
    p.min_requests = Some(1);
    p
}

/// Checks the bracket, the untracked bound and no false negatives against `truth`
/// (whose total is `w`).
fn check_guarantees(d: &AnyDetector, truth: &HashMap<u16, u64>, w: u64, s: f64, slack: u64) {
    let eps_w = d.error() * w as f64 + slack as f64;
    for (&k, &t) in truth {
        match d.estimate(&key(k)) {
            Some(e) => {
                assert!(
                    e.estimate <= t,
                    "key {k}: estimate {} > true {t}",
                    e.estimate
                );
                assert!(
                    e.estimate + e.max_error + slack >= t,
                    "key {k}: {e:?} below true {t}"
                );
                assert!(
                    e.max_error as f64 <= eps_w,
                    "key {k}: max_error {} > εW = {eps_w}",
                    e.max_error
                );
            }
            None => assert!(
                t as f64 <= eps_w,
                "untracked key {k} has {t} > εW = {eps_w}"
            ),
        }
    }
    let classic: Vec<Vec<u8>> = d
        .report(s, ReportRule::Classic)
        .into_iter()
        .map(|i| i.key)
        .collect();
    let tight: Vec<Vec<u8>> = d
        .report(s, ReportRule::Tight)
        .into_iter()
        .map(|i| i.key)
        .collect();
    for (&k, &t) in truth {
        if t as f64 >= s * w as f64 {
            assert!(
                classic.contains(&key(k)),
                "classic misses key {k} ({t} of {w})"
            );
            assert!(tight.contains(&key(k)), "tight misses key {k} ({t} of {w})");
        }
    }
    for k in &tight {
        assert!(
            classic.contains(k),
            "tight reported {k:?} that classic did not"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES, when set, runs more (or fewer) cases than the default here.
        cases: std::env::var("PROPTEST_CASES").map_or(96, |v| v.parse().unwrap_or(96)),
        ..ProptestConfig::default()
    })]

    #[test]
    fn classic_lossy_counting(
        stream in stream_strategy(6000, false),
        s_per_mille in 20u32..300,
        ratio in 2u32..20,
    ) {
        let s = f64::from(s_per_mille) / 1000.0;
        let e = s / f64::from(ratio);
        let mut d = build(&params(Algo::Lossy, s, e)).unwrap();
        let mut truth: HashMap<u16, u64> = HashMap::new();
        for (i, &(k, _)) in stream.iter().enumerate() {
            d.observe(&key(k), 1);
            *truth.entry(k).or_default() += 1;
            let bound = d.entries_bound().unwrap();
            prop_assert!(d.len() <= bound, "{} entries > bound {bound} after {} requests", d.len(), i + 1);
            if i % 997 == 0 {
                check_guarantees(&d, &truth, i as u64 + 1, s, 0);
            }
        }
        check_guarantees(&d, &truth, stream.len() as u64, s, 0);
        prop_assert_eq!(d.totals().requests, stream.len() as u64);
        prop_assert!(d.peak_len() <= d.entries_bound().unwrap());
    }

    #[test]
    fn weighted_lossy_counting(
        stream in stream_strategy(4000, true),
        s_per_mille in 20u32..300,
        ratio in 2u32..20,
    ) {
        let s = f64::from(s_per_mille) / 1000.0;
        let e = s / f64::from(ratio);
        let mut d = build(&params(Algo::LossyWeighted, s, e)).unwrap();
        let mut truth: HashMap<u16, u64> = HashMap::new();
        let mut w = 0u64;
        for (i, &(k, wt)) in stream.iter().enumerate() {
            d.observe(&key(k), wt);
            *truth.entry(k).or_default() += wt;
            w += wt;
            prop_assert!(d.len() <= d.entries_bound().unwrap());
            if i % 499 == 0 {
                check_guarantees(&d, &truth, w, s, 0);
            }
        }
        check_guarantees(&d, &truth, w, s, 0);
        prop_assert_eq!(d.totals().weight, w);
    }

    #[test]
    fn space_saving(
        stream in stream_strategy(6000, false),
        s_per_mille in 20u32..300,
        ratio in 2u32..20,
    ) {
        let s = f64::from(s_per_mille) / 1000.0;
        let e = s / f64::from(ratio);
        let mut d = build(&params(Algo::SpaceSaving, s, e)).unwrap();
        let mut truth: HashMap<u16, u64> = HashMap::new();
        for (i, &(k, _)) in stream.iter().enumerate() {
            d.observe(&key(k), 1);
            *truth.entry(k).or_default() += 1;
            prop_assert!(d.len() <= d.entries_bound().unwrap());
            if i % 997 == 0 {
                check_guarantees(&d, &truth, i as u64 + 1, s, 0);
            }
        }
        check_guarantees(&d, &truth, stream.len() as u64, s, 0);
    }

    #[test]
    fn decayed_tumbling_epochs(
        stream in stream_strategy(6000, false),
        epoch in 200usize..2000,
        s_per_mille in 30u32..300,
        budget in proptest::option::of(20usize..400),
    ) {
        let s = f64::from(s_per_mille) / 1000.0;
        let mut p = params(Algo::LossyDecayed, s, s / 10.0);
        p.max_entries = budget;
        let mut d = build(&p).unwrap();
        let mut truth: HashMap<u16, u64> = HashMap::new();
        let mut n = 0u64;
        for (i, &(k, _)) in stream.iter().enumerate() {
            if i > 0 && i % epoch == 0 {
                // Every key hot over the ending epoch is hot after the rotation.
                let hot_before: Vec<u16> = truth
                    .iter()
                    .filter(|(_, &t)| t as f64 >= s * n as f64)
                    .map(|(&k, _)| k)
                    .collect();
                d.rotate();
                for k in hot_before {
                    prop_assert_eq!(d.heat(&key(k)), Heat::Hot, "key {} lost at rotation", k);
                }
                truth.clear();
                n = 0;
                prop_assert_eq!(d.window().requests, 0);
            }
            d.observe(&key(k), 1);
            *truth.entry(k).or_default() += 1;
            n += 1;
            if i % 331 == 0 {
                check_guarantees(&d, &truth, n, s, 0);
            }
            if budget.is_none() {
                let bound = d.entries_bound().unwrap();
                prop_assert!(d.len() <= bound, "{} entries > bound {bound}", d.len());
            }
            if let Some(b) = budget {
                // ε may rise to s/2 at most; beyond that the budget is exceeded, never the
                // guarantee.
                prop_assert!(d.error() <= s / 2.0 + 1e-12);
                if d.error() < s / 2.0 {
                    prop_assert!(d.len() <= b, "{} entries over budget {b}", d.len());
                }
            }
        }
        check_guarantees(&d, &truth, n, s, 0);
    }

    #[test]
    fn decayed_halving(
        stream in stream_strategy(4000, false),
        epoch in 200usize..1500,
    ) {
        let s = 0.05;
        let mut p = params(Algo::LossyDecayed, s, 0.005);
        p.keep = 0.5;
        let mut d = build(&p).unwrap();
        // Exact decayed counts (halving is exact in binary floating point).
        let mut truth: HashMap<u16, f64> = HashMap::new();
        let mut rotations = 0u64;
        for (i, &(k, _)) in stream.iter().enumerate() {
            if i > 0 && i % epoch == 0 {
                d.rotate();
                rotations += 1;
                for v in truth.values_mut() {
                    *v *= 0.5;
                }
            }
            d.observe(&key(k), 1);
            *truth.entry(k).or_default() += 1.0;
        }
        let w: f64 = truth.values().sum();
        // Rounding: one 2^-16 unit per rotation at most, far below one request.
        let slack = (rotations as f64 + 1.0) / 65536.0;
        for (&k, &t) in &truth {
            match d.estimate(&key(k)) {
                Some(e) => {
                    prop_assert!(e.estimate as f64 <= t + slack, "key {k}: {e:?} vs {t}");
                    prop_assert!((e.estimate + e.max_error) as f64 + slack >= t, "key {k}: {e:?} vs {t}");
                }
                None => prop_assert!(t <= d.error() * w + 1.0 + slack, "untracked {k}: {t}"),
            }
            if t >= s * w + 1.0 {
                prop_assert!(d.report(s, ReportRule::Tight).iter().any(|i| i.key == key(k)));
            }
        }
    }

    #[test]
    fn change_feed_matches_the_hot_set(
        stream in stream_strategy(5000, false),
        algo in prop_oneof![Just(Algo::Lossy), Just(Algo::SpaceSaving), Just(Algo::LossyDecayed)],
        epoch in 300usize..3000,
    ) {
        let mut d = build(&params(algo, 0.08, 0.008)).unwrap();
        let mut mirror: HashMap<Vec<u8>, Heat> = HashMap::new();
        let mut changes: Vec<HeatChange> = Vec::new();
        for (i, &(k, _)) in stream.iter().enumerate() {
            if i > 0 && i % epoch == 0 {
                d.rotate();
            }
            let heat = d.observe(&key(k), 1);
            prop_assert_eq!(heat, d.heat(&key(k)));
            if i % 97 == 0 || i + 1 == stream.len() {
                changes.clear();
                prop_assert!(d.drain_changes(&mut changes));
                for c in &changes {
                    let was = mirror.get(&c.key).copied().unwrap_or(Heat::Cold);
                    prop_assert_eq!(was, c.from);
                    if c.to == Heat::Cold {
                        mirror.remove(&c.key);
                    } else {
                        mirror.insert(c.key.clone(), c.to);
                    }
                }
                let hot: Vec<Vec<u8>> = d.hot_items().into_iter().map(|i| i.key).collect();
                let warm: Vec<Vec<u8>> = d.warm_items().into_iter().map(|i| i.key).collect();
                prop_assert_eq!(hot.len() + warm.len(), mirror.len());
                for k in hot {
                    prop_assert_eq!(mirror.get(&k), Some(&Heat::Hot));
                }
                for k in warm {
                    prop_assert_eq!(mirror.get(&k), Some(&Heat::Warm));
                }
                prop_assert_eq!(d.hot_len(), d.hot_items().len());
                let share = d.top_share(3);
                prop_assert!((0.0..=1.0).contains(&share));
            }
        }
    }
}

/// Keys of any length and content (memcached keys are ≤ 250 bytes, but the detector must
/// not care), including prefixes of each other and the empty key.
#[test]
fn arbitrary_key_bytes() {
    let keys: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![0, 0],
        b"a".to_vec(),
        vec![b'x'; 31],
        vec![b'x'; 32],
        vec![b'x'; 33],
        vec![b'x'; 250],
        vec![b'x'; 251],
        vec![0xff; 4096],
    ];
    for algo in [
        Algo::Lossy,
        Algo::LossyWeighted,
        Algo::LossyDecayed,
        Algo::SpaceSaving,
    ] {
        let mut d = build(&params(algo, 0.05, 0.001)).unwrap();
        for round in 0..50u64 {
            for (i, k) in keys.iter().enumerate() {
                for _ in 0..=i {
                    d.observe(k, 1 + round % 3);
                }
            }
        }
        for k in &keys {
            let e = d
                .estimate(k)
                .unwrap_or_else(|| panic!("{algo}: {} bytes lost", k.len()));
            assert!(e.estimate > 0);
        }
        let rep = d.report(0.05, ReportRule::Tight);
        assert!(rep.iter().any(|i| i.key == vec![0xff; 4096]), "{algo}");
        assert!(d.memory_bytes() > 4096);
    }
}
