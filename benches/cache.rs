//! Cache costs on the per-packet path, each next to a baseline measured in the same run:
//! the key hash (vs SipHash-1-3), L1 hit lookups (vs std's HashMap with SipHash), L2
//! lookups on and off (vs BTreeMap), L2 insert-with-eviction at a full budget, and the
//! write-stamp operations.
//!
//! `cargo bench --bench cache`

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kvlb::cache::{
    CacheSettings, CachedValue, Caches, GetResponse, HotKeyTable, KeyHash, KeyHasher, SkewGate,
    WarmKeyCache, WriteStamps,
};
use kvlb::clock::Instant;
use kvlb::config::{Config, L2Mode};

fn keys(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("user:{}:profile", i * 7919).into_bytes())
        .collect()
}

fn value(n: usize) -> CachedValue {
    CachedValue::new(&vec![b'x'; n], 0, None, Instant::ZERO, 0)
}

fn key_hash(c: &mut Criterion) {
    let mut g = c.benchmark_group("cache_key_hash");
    let hs = KeyHasher::new(1);
    let sip = std::collections::hash_map::RandomState::new();
    for len in [10usize, 32, 64] {
        let key: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("ahash", len), &key, |b, k| {
            b.iter(|| hs.hash(black_box(k)))
        });
        g.bench_with_input(BenchmarkId::new("siphash13_baseline", len), &key, |b, k| {
            use std::hash::BuildHasher;
            b.iter(|| sip.hash_one(black_box(&k[..])))
        });
    }
    g.finish();
}

fn l1(c: &mut Criterion) {
    let mut g = c.benchmark_group("l1_hit");
    let ks = keys(1000);
    let hs = KeyHasher::new(1);
    let hashes: Vec<KeyHash> = ks.iter().map(|k| hs.hash(k)).collect();
    let mut t = HotKeyTable::new(1000, 1400);
    let mut std_map: HashMap<Vec<u8>, CachedValue> = HashMap::new();
    for (k, &h) in ks.iter().zip(&hashes) {
        t.admit(h, k, 0).unwrap();
        t.fill(h, k, value(100)).unwrap();
        std_map.insert(k.clone(), value(100));
    }
    g.throughput(Throughput::Elements(ks.len() as u64));
    g.bench_function("hashed_lookup", |b| {
        b.iter(|| {
            let mut n = 0;
            for (k, &h) in ks.iter().zip(&hashes) {
                n += t
                    .get(black_box(h), black_box(k))
                    .map_or(0, |v| v.data().len());
            }
            n
        })
    });
    g.bench_function("hash_and_lookup", |b| {
        b.iter(|| {
            let mut n = 0;
            for k in &ks {
                let k = black_box(&k[..]);
                n += t.get(hs.hash(k), k).map_or(0, |v| v.data().len());
            }
            n
        })
    });
    g.bench_function("std_hashmap_siphash_baseline", |b| {
        b.iter(|| {
            let mut n = 0;
            for k in &ks {
                n += std_map.get(black_box(&k[..])).map_or(0, |v| v.data().len());
            }
            n
        })
    });
    // Through the facade: hash, L1, age check, counters.
    let cfg = Config {
        l1_max_keys: 1000,
        ..Config::default()
    };
    let mut caches = Caches::new(&CacheSettings::from_config(&cfg, 1)).unwrap();
    for k in &ks {
        let h = caches.key_hash(k);
        caches.admit_hot(h, k, 0).unwrap();
        let t = caches.read_sent(h);
        let v = GetResponse {
            key: k,
            ring_hash: 0,
            ticket: t,
            data: &[b'x'; 100],
            flags: 0,
            cas: None,
        };
        caches.learn(h, &v, Instant::ZERO, None);
    }
    g.bench_function("caches_lookup", |b| {
        b.iter(|| {
            let mut n = 0;
            for k in &ks {
                let k = black_box(&k[..]);
                let h = caches.key_hash(k);
                n += caches
                    .lookup(h, k, Instant::ZERO)
                    .map_or(0, |hit| hit.value.data().len());
            }
            n
        })
    });
    g.finish();
}

fn l2(c: &mut Criterion) {
    let mut g = c.benchmark_group("l2");
    let n = 50_000;
    let ks = keys(n);
    let hs = KeyHasher::new(1);
    let hashes: Vec<KeyHash> = ks.iter().map(|k| hs.hash(k)).collect();
    let mut on = WarmKeyCache::new(
        SkewGate::new(L2Mode::On, 0.2, 0.1).unwrap(),
        64 << 20,
        1400,
        1,
    );
    let off = WarmKeyCache::new(
        SkewGate::new(L2Mode::Off, 0.2, 0.1).unwrap(),
        64 << 20,
        1400,
        1,
    );
    let mut btree: BTreeMap<Vec<u8>, CachedValue> = BTreeMap::new();
    for (i, (k, &h)) in ks.iter().zip(&hashes).enumerate() {
        on.insert(h, k, 0, value(100), (i % 1000) as u64).unwrap();
        btree.insert(k.clone(), value(100));
    }
    let probe: Vec<usize> = (0..1000).map(|i| (i * 48_271) % n).collect();
    g.throughput(Throughput::Elements(probe.len() as u64));
    g.bench_function("lookup_on_50k", |b| {
        b.iter(|| {
            let mut s = 0;
            for &i in &probe {
                s += on
                    .get(black_box(hashes[i]), &ks[i])
                    .map_or(0, |v| v.data().len());
            }
            s
        })
    });
    g.bench_function("lookup_off", |b| {
        b.iter(|| {
            let mut s = 0;
            for &i in &probe {
                s += off
                    .get(black_box(hashes[i]), &ks[i])
                    .map_or(0, |v| v.data().len());
            }
            s
        })
    });
    g.bench_function("btreemap_lookup_50k_baseline", |b| {
        b.iter(|| {
            let mut s = 0;
            for &i in &probe {
                s += btree
                    .get(black_box(&ks[i][..]))
                    .map_or(0, |v| v.data().len());
            }
            s
        })
    });
    g.bench_function("set_estimate_50k", |b| {
        let mut e = 0u64;
        b.iter(|| {
            for &i in &probe {
                e = e.wrapping_add(7);
                on.set_estimate(hashes[i], &ks[i], e % 1000);
            }
        })
    });
    // Steady state at a full budget: every insert of a new key evicts the least valuable.
    let fresh = keys(2 * n);
    let fresh_h: Vec<KeyHash> = fresh.iter().map(|k| hs.hash(k)).collect();
    let budget = WarmKeyCache::entry_cost(fresh[0].len(), 100) * 10_000;
    let mut full = WarmKeyCache::new(
        SkewGate::new(L2Mode::On, 0.2, 0.1).unwrap(),
        budget,
        1400,
        1,
    );
    let mut at = 0usize;
    g.bench_function("insert_evict_full_10k", |b| {
        b.iter(|| {
            for _ in 0..1000 {
                let i = at % fresh.len();
                at += 1;
                full.insert(fresh_h[i], &fresh[i], 0, value(100), (at % 977) as u64)
                    .unwrap();
            }
        })
    });
    g.finish();
}

fn stamps(c: &mut Criterion) {
    let mut g = c.benchmark_group("write_stamps");
    let mut st = WriteStamps::new(1 << 16);
    let hs: Vec<KeyHash> = (0..1000u64)
        .map(|i| KeyHash::from_raw(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
        .collect();
    g.throughput(Throughput::Elements(hs.len() as u64));
    g.bench_function("write_sent_done", |b| {
        b.iter(|| {
            for &h in &hs {
                st.write_sent(black_box(h));
                st.write_done(black_box(h));
            }
        })
    });
    g.bench_function("read_sent_may_learn", |b| {
        b.iter(|| {
            let mut n = 0;
            for &h in &hs {
                let t = st.read_sent(black_box(h));
                n += usize::from(st.may_learn(h, t));
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, key_hash, l1, l2, stamps);
criterion_main!(benches);
