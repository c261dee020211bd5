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
//!   it can be subtracted: the reported ratio is (core − f × craft) / (parse_rewrite −
//!   craft), where f is the fraction of requests the core forwarded (it crafts no backend
//!   reply for a cache hit; subtracting craft for every request favoured the core).
//!
//! `cargo bench --bench core` prints criterion's figures; `scripts/bench-core.sh` runs it
//! and prints the ratios. `CORE_BENCH_ONLY=nohot cargo bench --bench core` runs only the
//! workloads whose name contains the string (for profiling one of them);
//! `CORE_BENCH_ONLY==zipf0.99` only the one of that exact name. `CORE_BENCH_PASSES=N`
//! replaces criterion's measurements with N timed passes of each loop, e.g. to count
//! instructions and cache misses per loop with `valgrind --tool=cachegrind`.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

use kvlb::clock::Instant;
use kvlb::config::Config;
use kvlb::nf::{Core, Pipeline, PortId, PortInfo, Verdict};
use kvlb::proto::{self, Response, Value};
use kvlb::wire::{self, checksum, Classified, McHeader, Retarget, UdpEndpoints};

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
    // Long timeouts: the bench's clock moves 1 µs per request. The frames the core emits
    // itself (replica copies, fetches) are discarded unanswered and expire after 10 s of
    // bench clock, during criterion's runs; they must not mark the backends down (they
    // did, before timeouts counted in send order: the rest of the run then measured cheap
    // `no_backend` drops). `check_exchanges` asserts that nothing was dropped.
    args.extend(["--timeout".into(), "10s".into()]);
    // The bench's clock offers 10^6 requests/s, above the default --detect-sample-above:
    // CORE_BENCH_SAMPLE_ABOVE=0 measures exact detection instead (as before sampling).
    if let Ok(rate) = std::env::var("CORE_BENCH_SAMPLE_ABOVE") {
        args.extend(["--detect-sample-above".into(), rate]);
    }
    let cfg = Config::from_args(args).unwrap();
    Core::new(
        &cfg,
        &[PortInfo {
            id: PortId(0),
            mac: KVLB_MAC,
        }],
    )
    .unwrap()
}

/// One request of the mix and the backend's answer to it.
struct Req {
    /// The client's request frame.
    frame: Vec<u8>,
    /// The backend's reply message (after memcached's frame header): `VALUE … END` for a
    /// GET, `STORED` for a SET.
    reply: Vec<u8>,
}

/// Requests of the mix.
fn workload(alpha: f64, n: usize) -> Vec<Req> {
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
            let mut reply = Vec::new();
            if get {
                let key = format!("key:{k:07}");
                Response::Value(Value {
                    key: key.as_bytes(),
                    flags: 0,
                    cas: None,
                    data: &VALUE,
                })
                .emit_to(&mut reply);
                Response::End.emit_to(&mut reply);
            } else {
                Response::Stored.emit_to(&mut reply);
            }
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
            Req { frame: buf, reply }
        })
        .collect()
}

/// Whether the core sent the frame toward a backend (not back to the client: a hit).
fn to_backend(frame: &[u8]) -> bool {
    frame.get(30..34) != Some(&[10, 0, 0, 100][..])
}

/// The backend's reply to a forwarded request, written over it in place: addresses and
/// ports swapped, the request id kept, the precomputed reply message, lengths and both
/// checksums. Deliberately small and branch-free: it runs between the core's calls in
/// `core_pass`, and a large generic reply writer there evicted the core's code from the
/// instruction cache (and its own), which `craft_pass`, measured alone, never paid, so the
/// subtraction charged the harness's misses to the core. (The workload's frames are plain
/// Ethernet + IPv4 without options, as `workload` builds them.)
#[inline(never)]
fn craft_reply(frame: &mut Vec<u8>, reply: &[u8]) {
    const IP: usize = 14;
    const UDP: usize = IP + 20;
    const MC: usize = UDP + 8;
    if frame.len() < MC + 8 {
        return;
    }
    for i in 0..6 {
        frame.swap(i, 6 + i);
    }
    for i in 0..4 {
        frame.swap(IP + 12 + i, IP + 16 + i);
    }
    for i in 0..2 {
        frame.swap(UDP + i, UDP + 2 + i);
    }
    frame.truncate(MC + 8);
    // Sequence 0 of 1 datagram; the request id (bytes 0..2) stays.
    frame[MC + 2..MC + 8].copy_from_slice(&[0, 0, 0, 1, 0, 0]);
    frame.extend_from_slice(reply);
    let ip_len = (frame.len() - IP) as u16;
    frame[IP + 2..IP + 4].copy_from_slice(&ip_len.to_be_bytes());
    frame[IP + 10..IP + 12].fill(0);
    let c = checksum::checksum(&frame[IP..UDP]);
    frame[IP + 10..IP + 12].copy_from_slice(&c.to_be_bytes());
    let udp_len = (frame.len() - UDP) as u16;
    frame[UDP + 4..UDP + 6].copy_from_slice(&udp_len.to_be_bytes());
    frame[UDP + 6..UDP + 8].fill(0);
    let src = Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]);
    let dst = Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]);
    let acc = checksum::combine(
        checksum::pseudo_header(src, dst, 17, udp_len),
        checksum::sum(&frame[UDP..]),
    );
    let c = match checksum::finish(acc) {
        0 => 0xffff, // 0 means "no checksum" in UDP over IPv4
        c => c,
    };
    frame[UDP + 6..UDP + 8].copy_from_slice(&c.to_be_bytes());
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
    // The same one-pass rewrite the core uses (one checksum update per header).
    let _ = u.rewrite(frame).unwrap().retarget(&Retarget {
        src_mac: KVLB_MAC,
        dst_mac: [2, 0, 0, 0, 0, 0xb1],
        src_ip: *VIP.ip(),
        dst_ip: *backend(1).ip(),
        src_port: 40000,
        dst_port: 11211,
        request_id: 7,
    });
}

/// One `core` iteration: every frame of the workload through the core (and its reply when
/// it went to a backend), then the timers. `t` is the core's clock in ns, advanced 1 µs
/// per frame. Returns how many replies it crafted (the requests not answered from cache).
#[inline(never)]
fn core_pass(core: &mut Core, frames: &[Req], t: &mut u64, buf: &mut Vec<u8>) -> usize {
    let mut crafted = 0;
    for r in frames {
        *t += 1000;
        let now = Instant::from_nanos(*t);
        buf.clear();
        buf.extend_from_slice(&r.frame);
        let v = core.process_frame(now, PortId(0), buf);
        if v == Verdict::Out(PortId(0)) && to_backend(buf) {
            craft_reply(buf, &r.reply);
            crafted += 1;
            black_box(core.process_frame(now, PortId(0), buf));
        }
    }
    core.on_tick(Instant::from_nanos(*t));
    core.drain_emitted(&mut |_, f| {
        black_box(f);
    });
    crafted
}

/// One `parse_rewrite` iteration over the workload.
#[inline(never)]
fn parse_rewrite_pass(frames: &[Req], buf: &mut Vec<u8>) {
    for r in frames {
        buf.clear();
        buf.extend_from_slice(&r.frame);
        parse_rewrite(buf, true);
        craft_reply(buf, &r.reply);
        parse_rewrite(buf, false);
    }
}

/// One `craft` iteration over the workload.
#[inline(never)]
fn craft_pass(frames: &[Req], buf: &mut Vec<u8>) {
    for r in frames {
        buf.clear();
        buf.extend_from_slice(&r.frame);
        craft_reply(buf, &r.reply);
        black_box(&*buf);
    }
}

fn bench(c: &mut Criterion) {
    // CORE_BENCH_ONLY=<substring> runs only the matching workloads (names as below), e.g.
    // to profile one: criterion's filter skips its measurements but not the rounds.
    // `=<name>` matches the name exactly (`=zipf0.99` without `zipf0.99_nohot`).
    let only = std::env::var("CORE_BENCH_ONLY").unwrap_or_default();
    // CORE_BENCH_PASSES=N: after the warm-up, N passes of each loop, timed once, instead
    // of criterion's measurements (the function names core_pass, parse_rewrite_pass and
    // craft_pass stay visible to profilers).
    let passes: Option<usize> = std::env::var("CORE_BENCH_PASSES")
        .ok()
        .and_then(|v| v.parse().ok());
    let wanted = |name: &str| match only.strip_prefix('=') {
        Some(exact) => name == exact,
        None => name.contains(only.as_str()),
    };
    for (alpha, hotkeys) in [(0.99, true), (1.2, true), (0.99, false)] {
        let name = format!("zipf{alpha}{}", if hotkeys { "" } else { "_nohot" });
        if !wanted(&name) {
            continue;
        }
        let frames = workload(alpha, 1 << 16);
        let mut core = core(hotkeys);
        // Warm up: let the detector find the hot keys and the caches learn them.
        let mut t = 1u64;
        let mut buf = Vec::with_capacity(4096);
        for _ in 0..4 {
            for r in &frames {
                t += 1000;
                let now = Instant::from_nanos(t);
                buf.clear();
                buf.extend_from_slice(&r.frame);
                if core.process_frame(now, PortId(0), &mut buf) == Verdict::Out(PortId(0))
                    && to_backend(&buf)
                {
                    craft_reply(&mut buf, &r.reply);
                    core.process_frame(now, PortId(0), &mut buf);
                }
                if t % 1_000_000 < 1000 {
                    core.on_tick(now);
                    core.drain_emitted(&mut |_, _| {});
                }
            }
        }
        check_exchanges(&name, &mut core);
        if let Some(passes) = passes {
            // A fixed amount of work and no criterion: for instruction-level tools
            // (cachegrind), whose counts do not drift the way this VM's clock does.
            let [core_ns, pr_ns, craft_ns, _] =
                timed_round(&mut core, &frames, &mut t, &mut buf, passes);
            eprintln!(
                "core/{name}: {passes} passes: core {core_ns:.0} ns, parse_rewrite {pr_ns:.0} ns, craft {craft_ns:.0} ns per request"
            );
            check_exchanges(&name, &mut core);
            continue;
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
            rounds.push(timed_round(&mut core, &frames, &mut t, &mut buf, 1));
        }
        write_interleaved(&name, &rounds);
        check_exchanges(&name, &mut core);
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

/// The harness must exercise the real request life: the core drops nothing and passes
/// nothing on (a crafted reply it could not match or parse would be one or the other).
/// Frames the core emits itself (replica copies, fetches) are discarded unanswered.
fn check_exchanges(name: &str, core: &mut Core) {
    let r = core.report(Instant::from_nanos(0));
    assert_eq!(
        r.stats.total_drops(),
        0,
        "core/{name}: the core dropped frames of the bench: {:?}",
        r.stats.drops
    );
    assert!(
        r.stats.passed.is_empty(),
        "core/{name}: frames passed on: {:?}",
        r.stats.passed
    );
    let answered: u64 = r.backends.iter().map(|b| b.responses).sum();
    assert!(answered > 0, "core/{name}: no reply reached the core");
}

/// `passes` passes of each loop, one loop after the other: ns per request of core,
/// parse_rewrite and craft, and the fraction of requests the core forwarded.
fn timed_round(
    core: &mut Core,
    frames: &[Req],
    t: &mut u64,
    buf: &mut Vec<u8>,
    passes: usize,
) -> [f64; 4] {
    let t0 = std::time::Instant::now();
    let mut crafted = 0;
    for _ in 0..passes {
        crafted += core_pass(core, frames, t, buf);
    }
    let core_ns = t0.elapsed().as_nanos() as f64;
    let t0 = std::time::Instant::now();
    for _ in 0..passes {
        parse_rewrite_pass(frames, buf);
    }
    let pr_ns = t0.elapsed().as_nanos() as f64;
    let t0 = std::time::Instant::now();
    for _ in 0..passes {
        craft_pass(frames, buf);
    }
    let craft_ns = t0.elapsed().as_nanos() as f64;
    let n = (passes * frames.len()) as f64;
    [core_ns / n, pr_ns / n, craft_ns / n, crafted as f64 / n]
}

/// Rounds of the interleaved measurement.
const INTERLEAVED_ROUNDS: usize = 21;

/// Writes the interleaved rounds' ns per request (core, parse_rewrite, craft), the
/// fraction of requests the core forwarded (so crafted a reply for), and the ratios to
/// target/criterion/core_<name>/interleaved.json. The core crafts replies only for
/// forwarded requests, the other loops for every one: the ratio subtracts craft in
/// proportion, (core - forwarded x craft) / (parse_rewrite - craft).
fn write_interleaved(name: &str, rounds: &[[f64; 4]]) {
    let mut ratios: Vec<f64> = rounds
        .iter()
        .map(|[c, p, k, f]| (c - f * k) / (p - k))
        .collect();
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    let mut fractions: Vec<f64> = rounds.iter().map(|r| r[3]).collect();
    fractions.sort_by(f64::total_cmp);
    let forwarded = fractions[fractions.len() / 2];
    let rows: Vec<String> = rounds
        .iter()
        .map(|[c, p, k, _]| format!("[{c:.1}, {p:.1}, {k:.1}]"))
        .collect();
    let json = format!(
        "{{\"median_ratio\": {median:.3}, \"min_ratio\": {:.3}, \"max_ratio\": {:.3}, \"forwarded_fraction\": {forwarded:.4}, \"rounds_ns\": [{}]}}\n",
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
