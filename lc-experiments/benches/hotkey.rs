//! Hot-key detector update and query rates on one Zipf(1.0) stream over 10⁶ memcached-style
//! keys, against Apache DataSketches' frequent-items sketch and HeavyKeeper measured in the
//! same run. `cargo bench -p kvlb-lc-experiments --bench hotkey`; compare rates within one
//! run only (the machine is shared and noisy). `kvlb lc-experiments` prints the same
//! comparison as ratios.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use kvlb::hotkey::eval::{zipf_stream, KeySpace, KEY_LEN};
use kvlb::hotkey::{build, build_boxed, Algo, Detector, DetectorParams};
use kvlb::random::{Rng, Zipf};
use kvlb_lc_experiments::baselines::{DataSketchesFrequent, HeavyKeeperTopK, Summary};

const KEYS: usize = 1_000_000;
const REQUESTS: usize = 1_000_000;
/// 10 backends, k = 4: s = 1/40, ε = s/10.
const SUPPORT: f64 = 0.025;
const ERROR: f64 = 0.0025;

/// The requests' keys laid out one after another, as a datapath sees them in consecutive
/// packets (indexing a 16 MB key table instead would measure cache misses, not detectors).
fn workload() -> Vec<u8> {
    let keys = KeySpace::new(KEYS);
    let zipf = Zipf::new(KEYS as u64, 1.0);
    let mut rng = Rng::new(42);
    let perm = rng.permutation(KEYS);
    let mut flat = Vec::with_capacity(REQUESTS * KEY_LEN);
    for id in zipf_stream(&zipf, &perm, REQUESTS, &mut rng) {
        flat.extend_from_slice(keys.key(id));
    }
    flat
}

fn params(algo: Algo) -> DetectorParams {
    DetectorParams::new(algo, SUPPORT, ERROR)
}

fn updates(c: &mut Criterion) {
    let stream = workload();
    let mut g = c.benchmark_group("update_zipf1.0");
    g.throughput(Throughput::Elements(REQUESTS as u64));
    g.sample_size(10);

    for algo in [Algo::Lossy, Algo::LossyDecayed, Algo::SpaceSaving] {
        g.bench_function(format!("{algo}/enum"), |b| {
            b.iter_batched(
                || build(&params(algo)).unwrap(),
                |mut d| {
                    for k in stream.chunks_exact(KEY_LEN) {
                        black_box(d.observe(k, 1));
                    }
                    d
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.bench_function("lossy/dyn", |b| {
        b.iter_batched(
            || build_boxed(&params(Algo::Lossy)).unwrap(),
            |mut d| {
                for k in stream.chunks_exact(KEY_LEN) {
                    black_box(d.observe(k, 1));
                }
                d
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("datasketches/M2048", |b| {
        b.iter_batched(
            || DataSketchesFrequent::with_map_size(2048, false),
            |mut d| {
                for k in stream.chunks_exact(KEY_LEN) {
                    d.observe(k, 1);
                }
                d
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("heavykeeper/4x2048", |b| {
        b.iter_batched(
            || HeavyKeeperTopK::new(SUPPORT, 2048, 4, false),
            |mut d| {
                for k in stream.chunks_exact(KEY_LEN) {
                    d.observe(k, 1);
                }
                d
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn queries(c: &mut Criterion) {
    let stream = workload();
    let mut d = build(&params(Algo::Lossy)).unwrap();
    for k in stream.chunks_exact(KEY_LEN) {
        d.observe(k, 1);
    }
    let mut g = c.benchmark_group("heat_query");
    g.throughput(Throughput::Elements(REQUESTS as u64));
    g.sample_size(10);
    g.bench_function("lossy/heat", |b| {
        b.iter(|| {
            for k in stream.chunks_exact(KEY_LEN) {
                black_box(d.heat(k));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, updates, queries);
criterion_main!(benches);
