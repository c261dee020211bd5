//! Ketama ring costs on the per-packet path: the key hash (MD5) and the continuum lookup,
//! each next to a baseline measured in the same run (SipHash of the same key; a plain
//! binary search over the same continuum, as libmemcached does it).
//!
//! The memo in front of MD5 (`RingHashMemo`, 16Ki slots as the core uses it) over a Zipf
//! 0.99 stream of 10^6 keys, next to MD5 on every key.
//!
//! `cargo bench --bench ring`

use std::hash::{BuildHasher, Hasher};
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kvlb::ring::{ketama_hash, KetamaRing, RingHashMemo, RingServer};
use rand::SeedableRng;
use rand_distr::{Distribution, Zipf};

fn ring_of(n: usize) -> (Vec<String>, KetamaRing) {
    let hosts: Vec<String> = (0..n)
        .map(|i| format!("10.0.{}.{}", i / 250, i % 250))
        .collect();
    let servers: Vec<RingServer<'_>> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| RingServer {
            host: h,
            port: 11211,
            weight: 1 + (i as u32 % 3),
            live: true,
        })
        .collect();
    let ring = KetamaRing::new(&servers).unwrap();
    (hosts, ring)
}

fn hashes(n: usize) -> Vec<u32> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u32
        })
        .collect()
}

fn key_hash(c: &mut Criterion) {
    let mut g = c.benchmark_group("key_hash");
    let sip = std::collections::hash_map::RandomState::new();
    for len in [10usize, 32, 64, 200] {
        let key: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("md5_ketama", len), &key, |b, k| {
            b.iter(|| ketama_hash(black_box(k)))
        });
        // The general-purpose MD5 ketama_hash used before its one-block version.
        g.bench_with_input(BenchmarkId::new("md5_crate", len), &key, |b, k| {
            b.iter(|| {
                use md5::Digest;
                let d = md5::Md5::digest(black_box(k));
                u32::from_le_bytes([d[0], d[1], d[2], d[3]])
            })
        });
        g.bench_with_input(BenchmarkId::new("siphash13_baseline", len), &key, |b, k| {
            b.iter(|| {
                let mut h = sip.build_hasher();
                h.write(black_box(k));
                h.finish()
            })
        });
    }
    g.finish();
}

/// libmemcached's `dispatch_host`: lower-bound binary search over the whole continuum.
fn plain_lookup(values: &[u32], owners: &[u16], hash: u32) -> usize {
    let at = values.partition_point(|&v| v < hash);
    usize::from(owners[if at == values.len() { 0 } else { at }])
}

fn lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("server_for_hash");
    let hs = hashes(4096);
    g.throughput(Throughput::Elements(hs.len() as u64));
    for n in [3usize, 10, 50, 200] {
        let (_hosts, ring) = ring_of(n);
        let values: Vec<u32> = ring.points().map(|p| p.0).collect();
        let owners: Vec<u16> = ring.points().map(|p| p.1 as u16).collect();
        g.bench_with_input(BenchmarkId::new("bucketed", n), &hs, |b, hs| {
            b.iter(|| {
                let mut acc = 0usize;
                for &h in hs {
                    acc = acc.wrapping_add(ring.server_for_hash(black_box(h)).unwrap_or(0));
                }
                acc
            })
        });
        g.bench_with_input(
            BenchmarkId::new("plain_binary_search_baseline", n),
            &hs,
            |b, hs| {
                b.iter(|| {
                    let mut acc = 0usize;
                    for &h in hs {
                        acc = acc.wrapping_add(plain_lookup(&values, &owners, black_box(h)));
                    }
                    acc
                })
            },
        );
    }
    g.finish();

    let mut g = c.benchmark_group("replicas");
    g.throughput(Throughput::Elements(hs.len() as u64));
    for n in [3usize, 10, 50] {
        let (_hosts, ring) = ring_of(n);
        for r in [1usize, 2] {
            g.bench_with_input(BenchmarkId::new(format!("r{r}"), n), &hs, |b, hs| {
                b.iter(|| {
                    let mut acc = 0usize;
                    for &h in hs {
                        acc = acc.wrapping_add(ring.replicas(black_box(h), r).len());
                    }
                    acc
                })
            });
        }
    }
    g.finish();

    // Key to server, end to end, as the core does for a cache miss.
    let mut g = c.benchmark_group("server_for_key");
    let keys: Vec<Vec<u8>> = (0..1024)
        .map(|i| format!("user:{i}:profile").into_bytes())
        .collect();
    g.throughput(Throughput::Elements(keys.len() as u64));
    let (_hosts, ring) = ring_of(10);
    g.bench_function("10_servers", |b| {
        b.iter(|| {
            let mut acc = 0usize;
            for k in &keys {
                acc = acc.wrapping_add(ring.server_for_key(black_box(k)).unwrap_or(0));
            }
            acc
        })
    });
    g.finish();
}

fn rebuild(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring_build");
    for n in [10usize, 50] {
        let hosts: Vec<String> = (0..n).map(|i| format!("10.0.0.{i}")).collect();
        let servers: Vec<RingServer<'_>> = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| RingServer {
                host: h,
                port: 11211,
                weight: 1,
                live: i != 3,
            })
            .collect();
        g.bench_with_input(BenchmarkId::from_parameter(n), &servers, |b, s| {
            b.iter(|| KetamaRing::new(black_box(s)).unwrap())
        });
    }
    g.finish();
}

/// Memoized ketama hashing over a skewed key stream against MD5 on every key.
fn memo(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let zipf = Zipf::new(1_000_000, 0.99).unwrap();
    let keys: Vec<Vec<u8>> = (0..1 << 16)
        .map(|_| format!("key:{:07}", zipf.sample(&mut rng) as u64).into_bytes())
        .collect();
    let seed = std::collections::hash_map::RandomState::new();
    let tags: Vec<u64> = keys.iter().map(|k| seed.hash_one(k)).collect();
    let mut g = c.benchmark_group("ring/memo_zipf0.99");
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.bench_function("md5_every_key", |b| {
        b.iter(|| keys.iter().map(|k| ketama_hash(k)).fold(0u32, |a, h| a ^ h))
    });
    let mut m = RingHashMemo::new(1 << 14);
    g.bench_function("memo_16k", |b| {
        b.iter(|| {
            keys.iter()
                .zip(&tags)
                .map(|(k, &t)| m.hash(t, k))
                .fold(0u32, |a, h| a ^ h)
        })
    });
    g.finish();
    let (hits, misses) = m.counters();
    eprintln!(
        "ring/memo_zipf0.99: memo hit rate {:.1}%",
        100.0 * hits as f64 / (hits + misses).max(1) as f64
    );
}

criterion_group!(benches, key_hash, lookup, rebuild, memo);
criterion_main!(benches);
