//! Core cost per frame, in process (no I/O), against parsing plus address rewriting alone.
//!
//! Workload (issue 5): 8 backends, 10^6 keys, Zipf α ∈ {0.99, 1.2}, 95% GETs, 100-byte
//! values. Each iteration runs one client request through its whole life:
//!
//! - `core`: `Core::process_frame` on the request; if it went to a backend, the backend's
//!   reply is crafted from the forwarded frame and also goes through `process_frame`.
//! - `parse_rewrite`: the same frames, but only classified, parsed (frame header and
//!   command) and rewritten toward a backend (MACs, IPs, ports, request id), and the reply
//!   likewise back to the client: the floor any balancer pays.
//! - `craft`: the frame copy and the reply crafting both loops include, measured alone so
//!   it can be subtracted: the reported ratio is (core − craft) / (parse_rewrite − craft).
//!
//! `cargo bench --bench core` prints criterion's figures; `scripts/bench-core.sh` runs it
//! and prints the ratios. `CORE_BENCH_ONLY=nohot cargo bench --bench core` runs only the
//! workloads whose name contains the string (for profiling one of them).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

use kvlb::clock::Instant;
use kvlb::config::Config;
use kvlb::nf::{Core, Pipeline, PortInfo, Verdict};
use kvlb::proto::{self, Response, Value};
use kvlb::wire::{self, Classified, McHeader, UdpEndpoints};

const KEYS: u64 = 1_000_000;
const VALUE: [u8; 100] = [b'v'; 100];
const KVLB_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xaa];
const VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 11211);

fn backend(i: u8) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, i), 11211)
}

fn core(hotkeys: bool) -> Core {
    let mut args = vec!["--vip".to_string(), VIP.to_string()];
    for i in 1..=8 {
        args.extend([
            "--backend".into(),
            backend(i).to_string(),
            "--neighbor".into(),
            format!("{}=02:00:00:00:00:b{i}", backend(i).ip()),
        ]);
    }
    if !hotkeys {
        args.push("--no-hotkeys".into());
    }
    // Long timeouts: the bench's clock barely moves, nothing must expire.
    args.extend(["--timeout".into(), "10s".into()]);
    let cfg = Config::from_args(args).unwrap();
    Core::new(
        &cfg,
        &[PortInfo {
            id: 0,
            mac: KVLB_MAC,
        }],
    )
    .unwrap()
}

/// Request frames of the mix: (frame, is_get).
fn workload(alpha: f64, n: usize) -> Vec<(Vec<u8>, bool)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let zipf = Zipf::new(KEYS, alpha).unwrap();
    let ep = UdpEndpoints {
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: KVLB_MAC,
        vlan: None,
        inner_vlan: None,
        src_ip: Ipv4Addr::new(10, 0, 0, 100),
        dst_ip: *VIP.ip(),
        src_port: 5555,
        dst_port: VIP.port(),
        ttl: 64,
    };
    (0..n)
        .map(|i| {
            let k = zipf.sample(&mut rng) as u64;
            let get = rng.gen_bool(0.95);
            let msg = if get {
                format!("get key:{k:07}\r\n")
            } else {
                format!(
                    "set key:{k:07} 0 0 100\r\n{}\r\n",
                    std::str::from_utf8(&VALUE).unwrap()
                )
            };
            let mut buf = vec![0u8; 2048];
            let len = ep
                .emit_message(&mut buf, 1, McHeader::single(i as u16), msg.as_bytes())
                .unwrap();
            buf.truncate(len);
            // Keep only the frame: 64Ki frames each in a 2 KiB allocation spread the
            // workload over 128 MiB, and copying a frame out then missed cache and TLB in
            // every loop, which drowned the differences being measured.
            buf.shrink_to_fit();
            (buf, get)
        })
        .collect()
}

/// Whether the core sent the frame toward a backend (not back to the client: a hit).
fn to_backend(frame: &[u8]) -> bool {
    frame.get(30..34) != Some(&[10, 0, 0, 100][..])
}

/// The backend's reply to a forwarded request, written over it in place.
fn craft_reply(frame: &mut Vec<u8>, get: bool) {
    let Ok(Classified::Udp(u)) = wire::classify(frame) else {
        return;
    };
    let payload = u.payload(frame);
    let req = &payload[8..];
    if get {
        let key_end = req.iter().position(|&b| b == b'\r').unwrap_or(req.len());
        let key = req[4..key_end].to_vec();
        let v = Value {
            key: &key,
            flags: 0,
            cas: None,
            data: &VALUE,
        };
        let _ = proto::write_reply(frame, &u, &[Response::Value(v), Response::End]);
    } else {
        let _ = proto::write_reply(frame, &u, &[Response::Stored]);
    }
}

/// Parse + rewrite toward a backend, the floor of any balancer.
fn parse_rewrite(frame: &mut [u8], to_backend: bool) {
    let Ok(Classified::Udp(u)) = wire::classify(frame) else {
        return;
    };
    if to_backend {
        let _ = black_box(proto::parse_datagram(u.payload(frame)).map(|(h, r)| (h, r.key())));
    } else {
        let _ = black_box(McHeader::parse(u.payload(frame)));
    }
    let mut w = u.rewrite(frame).unwrap();
    w.set_src_mac(KVLB_MAC);
    w.set_dst_mac([2, 0, 0, 0, 0, 0xb1]);
    w.set_src_ip(*VIP.ip());
    w.set_dst_ip(*backend(1).ip());
    w.set_src_port(40000);
    w.set_dst_port(11211);
    let _ = w.set_request_id(7);
}

/// One `core` iteration: every frame of the workload through the core (and its reply when
/// it went to a backend), then the timers. `t` is the core's clock in ns, advanced 1 µs
/// per frame.
fn core_pass(core: &mut Core, frames: &[(Vec<u8>, bool)], t: &mut u64, buf: &mut Vec<u8>) {
    for (f, get) in frames {
        *t += 1000;
        let now = Instant::from_nanos(*t);
        buf.clear();
        buf.extend_from_slice(f);
        let v = core.process_frame(now, 0, buf);
        if v == Verdict::Out(0) && to_backend(buf) {
            craft_reply(buf, *get);
            black_box(core.process_frame(now, 0, buf));
        }
    }
    core.on_tick(Instant::from_nanos(*t));
    core.drain_emitted(&mut |_, f| {
        black_box(f);
    });
}

/// One `parse_rewrite` iteration over the workload.
fn parse_rewrite_pass(frames: &[(Vec<u8>, bool)], buf: &mut Vec<u8>) {
    for (f, get) in frames {
        buf.clear();
        buf.extend_from_slice(f);
        parse_rewrite(buf, true);
        craft_reply(buf, *get);
        parse_rewrite(buf, false);
    }
}

/// One `craft` iteration over the workload.
fn craft_pass(frames: &[(Vec<u8>, bool)], buf: &mut Vec<u8>) {
    for (f, get) in frames {
        buf.clear();
        buf.extend_from_slice(f);
        craft_reply(buf, *get);
        black_box(&*buf);
    }
}

fn bench(c: &mut Criterion) {
    // CORE_BENCH_ONLY=<substring> runs only the matching workloads (names as below), e.g.
    // to profile one: criterion's filter skips its measurements but not the rounds.
    let only = std::env::var("CORE_BENCH_ONLY").unwrap_or_default();
    for (alpha, hotkeys) in [(0.99, true), (1.2, true), (0.99, false)] {
        let name = format!("zipf{alpha}{}", if hotkeys { "" } else { "_nohot" });
        if !name.contains(only.as_str()) {
            continue;
        }
        let frames = workload(alpha, 1 << 16);
        let mut core = core(hotkeys);
        // Warm up: let the detector find the hot keys and the caches learn them.
        let mut t = 1u64;
        let mut buf = Vec::with_capacity(4096);
        for _ in 0..4 {
            for (f, get) in &frames {
                t += 1000;
                let now = Instant::from_nanos(t);
                buf.clear();
                buf.extend_from_slice(f);
                if core.process_frame(now, 0, &mut buf) == Verdict::Out(0) && to_backend(&buf) {
                    craft_reply(&mut buf, *get);
                    core.process_frame(now, 0, &mut buf);
                }
                if t % 1_000_000 < 1000 {
                    core.on_tick(now);
                    core.drain_emitted(&mut |_, _| {});
                }
            }
        }
        let mut g = c.benchmark_group(format!("core/{name}"));
        g.measurement_time(Duration::from_secs(4));
        g.throughput(criterion::Throughput::Elements(frames.len() as u64));
        g.bench_function("core", |b| {
            b.iter_batched_ref(
                || (),
                |_| core_pass(&mut core, &frames, &mut t, &mut buf),
                BatchSize::PerIteration,
            )
        });
        g.bench_function("parse_rewrite", |b| {
            b.iter(|| parse_rewrite_pass(&frames, &mut buf))
        });
        g.bench_function("craft", |b| b.iter(|| craft_pass(&frames, &mut buf)));
        g.finish();
        // The same three loops again, interleaved in rounds: this VM's speed drifts over
        // seconds, so criterion's back-to-back means can compare a fast stretch with a slow
        // one. A ratio per round compares loops run within ~0.2 s of each other; the median
        // over rounds is what scripts/bench-core.sh reports next to criterion's.
        let mut rounds = Vec::new();
        for _ in 0..INTERLEAVED_ROUNDS {
            let t0 = std::time::Instant::now();
            core_pass(&mut core, &frames, &mut t, &mut buf);
            let core_ns = t0.elapsed().as_nanos() as f64;
            let t0 = std::time::Instant::now();
            parse_rewrite_pass(&frames, &mut buf);
            let pr_ns = t0.elapsed().as_nanos() as f64;
            let t0 = std::time::Instant::now();
            craft_pass(&frames, &mut buf);
            let craft_ns = t0.elapsed().as_nanos() as f64;
            let n = frames.len() as f64;
            rounds.push([core_ns / n, pr_ns / n, craft_ns / n]);
        }
        write_interleaved(&name, &rounds);
        let r = core.report(Instant::from_nanos(t));
        let lookups = r.stats.cache.l1_hits + r.stats.cache.l2_hits + r.stats.cache.misses;
        eprintln!(
            "core/{name}: hot keys {}, L1 hits {:.1}% of GET lookups, L2 {}",
            r.hot_keys.len(),
            100.0 * r.stats.cache.l1_hits as f64 / lookups.max(1) as f64,
            if r.stats.cache_state.l2_on {
                "on"
            } else {
                "off"
            },
        );
    }
}

/// Rounds of the interleaved measurement.
const INTERLEAVED_ROUNDS: usize = 21;

/// Writes the interleaved rounds' ns per request (core, parse_rewrite, craft) and ratios
/// to target/criterion/core/<name>/interleaved.json.
fn write_interleaved(name: &str, rounds: &[[f64; 3]]) {
    let mut ratios: Vec<f64> = rounds.iter().map(|[c, p, k]| (c - k) / (p - k)).collect();
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    let rows: Vec<String> = rounds
        .iter()
        .map(|[c, p, k]| format!("[{c:.1}, {p:.1}, {k:.1}]"))
        .collect();
    let json = format!(
        "{{\"median_ratio\": {median:.3}, \"min_ratio\": {:.3}, \"max_ratio\": {:.3}, \"rounds_ns\": [{}]}}\n",
        ratios[0],
        ratios[ratios.len() - 1],
        rows.join(", ")
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("criterion").join(format!("core_{name}"));
    if let Err(e) = std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(dir.join("interleaved.json"), json))
    {
        eprintln!("core/{name}: cannot write interleaved.json: {e}");
    }
    eprintln!(
        "core/{name}: interleaved ratio median {median:.2} (min {:.2}, max {:.2}, {} rounds)",
        ratios[0],
        ratios[ratios.len() - 1],
        ratios.len()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
