//! kvbench's per-request client work, each next to a baseline measured in the same run:
//! drawing a key (Zipf by rejection-inversion vs a uniform draw), naming it, building a
//! GET (vs copying the same bytes), writing and checking a 1 KiB value (vs memcpy of 1 KiB)
//! — the user-space part of what kvbench spends per request on top of the system calls.
//!
//! `cargo bench -p kvbench --bench kvbench`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kvbench::dist::{KeyDist, SizeDist};
use kvbench::exchange::{KeyRef, RequestBuilder, Shared};
use kvbench::validate::{self, KeyVersions};
use kvbench::value::{self, Stamp};
use kvbench::workload::{KeySpace, Mix, OpStream, Shifts};
use kvlb::random::{Rng, Zipf};

fn keys(c: &mut Criterion) {
    let mut g = c.benchmark_group("key");
    g.throughput(Throughput::Elements(1));
    let mut rng = Rng::new(1);
    g.bench_function("uniform_draw_baseline", |b| {
        b.iter(|| black_box(rng.below(1_000_000)))
    });
    let z = Zipf::new(1_000_000, 0.99);
    g.bench_function("zipf_0.99_draw", |b| {
        b.iter(|| black_box(z.sample(&mut rng)))
    });
    let space = Arc::new(KeySpace::new(1_000_000, "kvb:", SizeDist::Fixed(16)).unwrap());
    let mut ops = OpStream::new(
        Rng::new(2),
        KeyDist::Zipf(0.99),
        space.clone(),
        Arc::new(Shifts::default()),
        Mix {
            get_ratio: 0.9,
            multiget: 1,
            value_size: SizeDist::Fixed(1024),
            value_min: 32,
            value_max: 1 << 20,
        },
        0,
    );
    g.bench_function("op_draw_zipf", |b| b.iter(|| black_box(ops.next(0))));
    let mut name = Vec::with_capacity(64);
    g.bench_function("key_name", |b| {
        b.iter(|| {
            name.clear();
            space.write_name(black_box(123_456), &mut name);
            black_box(&name);
        })
    });
    g.finish();
}

fn requests_and_values(c: &mut Criterion) {
    let shared = Shared {
        space: KeySpace::new(1_000_000, "kvb:", SizeDist::Fixed(64)).unwrap(),
        versions: Some(KeyVersions::new(1_000_000)),
        run_id: 7,
        meta: false,
        value_cap: 1 << 20,
    };
    let mut g = c.benchmark_group("request");
    let mut builder = RequestBuilder::default();
    let mut out = Vec::with_capacity(2048);
    let get = [KeyRef {
        index: 4242,
        ..KeyRef::default()
    }];
    let mut sample = Vec::new();
    builder.get(&mut sample, &shared, &get);
    g.bench_function("copy_get_bytes_baseline", |b| {
        b.iter(|| {
            out.clear();
            out.extend_from_slice(black_box(&sample));
            black_box(&out);
        })
    });
    g.bench_function("build_get_64B_key", |b| {
        b.iter(|| {
            out.clear();
            builder.get(&mut out, &shared, black_box(&get));
            black_box(&out);
        })
    });
    g.finish();

    let mut g = c.benchmark_group("value_1KiB");
    g.throughput(Throughput::Bytes(1024));
    let key = shared.space.name(4242);
    let mut v = Vec::with_capacity(1024);
    let src = vec![b'x'; 1024];
    g.bench_function("memcpy_baseline", |b| {
        b.iter(|| {
            v.clear();
            v.extend_from_slice(black_box(&src));
            black_box(&v);
        })
    });
    let stamp = Stamp {
        run_id: 7,
        version: 3,
    };
    g.bench_function("encode", |b| {
        b.iter(|| value::encode(&mut v, black_box(&key), stamp, 1024))
    });
    value::encode(&mut v, &key, stamp, 1024);
    g.bench_function("check", |b| {
        b.iter(|| black_box(validate::check(7, &key, black_box(&v), 3, 3)))
    });
    g.finish();
}

criterion_group!(benches, keys, requests_and_values);
criterion_main!(benches);
