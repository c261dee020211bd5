//! The DPDK safe layer and the standalone datapath loop, in process, on real DPDK
//! (`--no-huge --no-pci`, software ports created per test: net_ring, net_pcap, net_null).
//!
//! EAL starts once per process; tests take a lock so that port creation (hotplug) and the
//! pool counters they check are not disturbed by each other.
//! Without `--features dpdk` this file compiles to nothing; `tests/dpdk_cli.rs` then reports
//! the real-DPDK tests as skipped.
#![cfg(feature = "dpdk")]

mod dpdk_support;
mod skip;

use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use dpdk_support::*;
use kvlb::clock::Instant;
use kvlb::datapath::dpdk::{
    ClockSource, DpdkDatapath, DpdkOptions, Eal, Mempool, Port, PortConfig, TscClock,
};
use kvlb::nf::{Dest, DropReason, FrameBuf, Pipeline, PortId, ServiceId, Verdict};

struct Dpdk {
    eal: Eal,
    _runtime: RuntimeDir,
}

/// EAL for this test process, and the lock every test holds while it uses DPDK.
fn dpdk() -> (Eal, MutexGuard<'static, ()>) {
    static EAL: OnceLock<Dpdk> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    skip::used("dpdk", "EAL in process, --no-huge --no-pci, software ports");
    let d = EAL.get_or_init(|| {
        let prefix = unique_prefix("layer");
        let eal = Eal::init(eal_test_args(&prefix)).expect("EAL starts with --no-huge --no-pci");
        // With --no-shconf and --no-telemetry nothing lives in the runtime directory.
        let runtime = RuntimeDir::new(&prefix);
        let _ = std::fs::remove_dir_all(&runtime.0);
        Dpdk {
            eal,
            _runtime: runtime,
        }
    });
    (d.eal, guard)
}

fn pool(eal: Eal, name: &str, n: u32) -> Mempool {
    Mempool::create(eal, name, n, 0, 2048 + 128, -1).expect("pool")
}

#[test]
fn eal_starts_once() {
    let (eal, _g) = dpdk();
    assert!(eal.lcore_count() >= 1);
    assert!(matches!(
        Eal::init(["--no-huge"]),
        Err(kvlb::datapath::dpdk::DpdkError::EalAlreadyInitialised)
    ));
}

#[test]
fn mbuf_edits_stay_in_bounds() {
    let (eal, _g) = dpdk();
    let pool = pool(eal, "t_mbuf_edit", 63);
    let free = pool.available();
    {
        let mut m = pool.alloc().unwrap();
        assert!(m.is_empty() && m.is_contiguous());
        let head = m.headroom();
        let room = m.tailroom();
        assert_eq!(head, 128);
        assert_eq!(room, 2048);
        m.extend_from_slice(b"hello").unwrap();
        assert_eq!(m.data(), b"hello");
        m.prepend(2).unwrap().copy_from_slice(b">>");
        assert_eq!(m.data(), b">>hello");
        m.adj(2).unwrap();
        m.trim(1).unwrap();
        assert_eq!(m.data(), b"hell");
        assert!(m.trim(5).is_err(), "trimming more than the data fails");
        assert_eq!(m.data(), b"hell", "...and changes nothing");
        assert!(m.append(room).is_err(), "no more than the tailroom");
        assert!(m.prepend(head + 1).is_err(), "no more than the headroom");
        // FrameBuf: grow into the tailroom, shrink, refuse beyond the buffer.
        m.set_len(100).unwrap();
        assert_eq!(m.bytes().len(), 100);
        assert_eq!(&m.bytes()[..4], b"hell");
        m.bytes_mut()[99] = 7;
        assert_eq!(m.pkt_len(), 100);
        assert!(m.set_len(4 + room + 1).is_err());
        assert_eq!(m.len(), 100);
        m.set_len(3).unwrap();
        assert_eq!(m.data(), b"hel");
        assert_eq!(pool.in_use(), 1);
    }
    assert_eq!(pool.available(), free, "dropping an Mbuf frees it");
    // Exhaustion is an error, not a crash; everything comes back.
    let all: Vec<_> = std::iter::from_fn(|| pool.alloc().ok()).collect();
    assert_eq!(all.len() as u32, free);
    assert!(pool.alloc().is_err());
    drop(all);
    assert_eq!(pool.available(), free);
    assert!(
        pool.alloc_copy(&vec![0u8; 4000]).is_err(),
        "frames larger than one mbuf"
    );
    assert_eq!(pool.available(), free);
}

#[test]
fn ring_port_loops_frames_back() {
    let (eal, _g) = dpdk();
    let pool = pool(eal, "t_ring_port", 2047);
    let id = eal.probe_vdev("net_ring_t0").unwrap();
    let mut port = Port::start(eal, id, pool, &PortConfig::default()).unwrap();
    assert_eq!(port.name(), "net_ring_t0");
    let frames: Vec<Vec<u8>> = (0..40u16)
        .map(|i| memcached_get(i, &format!("k{i}")))
        .collect();
    let mut out: Vec<_> = frames.iter().map(|f| pool.alloc_copy(f).unwrap()).collect();
    let sent = port.tx_burst(&mut out);
    assert_eq!(sent, 40);
    assert!(out.is_empty(), "sent mbufs leave the Vec");
    let mut back = Vec::new();
    while back.len() < 40 && port.rx_burst(&mut back, 32) > 0 {}
    assert_eq!(back.len(), 40);
    for (m, f) in back.iter().zip(&frames) {
        assert_eq!(m.data(), &f[..]);
    }
    drop(back);
    let stats = port.stats().unwrap();
    assert_eq!((stats.tx_packets, stats.rx_packets), (40, 40));
    drop(port);
    assert_eq!(pool.in_use(), 0, "no mbuf leaked through the port");
}

/// A test pipeline driven by the first payload byte of each UDP frame (offset 42):
/// `F` forward out of `out_port` with MACs swapped, `N` next, `D` drop, `P` panic,
/// `E` forward and emit a copy toward port `emit_port`, `G` grow by 4 bytes then forward,
/// `T` emit toward an NF. Records the times it was handed.
struct Scripted {
    out_port: PortId,
    emit_port: PortId,
    /// Emit a frame toward `emit_port` on every this many ticks (0: never).
    tick_emit_every: usize,
    seen: Vec<(Instant, PortId, usize)>,
    ticks: Vec<Instant>,
    outbox: Vec<(Dest, Vec<u8>)>,
    panics_counted: u64,
}

impl Scripted {
    fn new(out_port: PortId, emit_port: PortId) -> Self {
        Scripted {
            out_port,
            emit_port,
            tick_emit_every: 0,
            seen: Vec::new(),
            ticks: Vec::new(),
            outbox: Vec::new(),
            panics_counted: 0,
        }
    }
}

impl Pipeline for Scripted {
    fn process_frame<F: FrameBuf + ?Sized>(
        &mut self,
        now: Instant,
        in_port: PortId,
        frame: &mut F,
    ) -> Verdict {
        let len = frame.bytes().len();
        self.seen.push((now, in_port, len));
        let op = frame.bytes().get(42).copied().unwrap_or(b'F');
        let swap = |f: &mut F| {
            let b = f.bytes_mut();
            for i in 0..6 {
                b.swap(i, i + 6);
            }
        };
        match op {
            b'N' => Verdict::Next,
            b'D' => Verdict::Drop(DropReason::NotForUs),
            b'P' => panic!("scripted panic"),
            b'E' => {
                self.outbox
                    .push((Dest::Port(self.emit_port), frame.bytes().to_vec()));
                swap(frame);
                Verdict::Out(self.out_port)
            }
            b'T' => {
                self.outbox
                    .push((Dest::Nf(ServiceId(7)), frame.bytes().to_vec()));
                Verdict::Drop(DropReason::NotForUs)
            }
            b'G' => {
                frame.set_len(len + 4).unwrap();
                frame.bytes_mut()[len..].copy_from_slice(b"GROW");
                Verdict::Out(self.out_port)
            }
            _ => {
                swap(frame);
                Verdict::Out(self.out_port)
            }
        }
    }

    fn on_tick(&mut self, now: Instant) {
        self.ticks.push(now);
        if self.tick_emit_every > 0 && self.ticks.len() % self.tick_emit_every == 0 {
            let mut f = frame_with_op(0, b'K');
            f.extend_from_slice(&now.as_nanos().to_be_bytes());
            self.outbox.push((Dest::Port(self.emit_port), f));
        }
    }

    fn drain_emitted(&mut self, send: &mut dyn FnMut(Dest, &[u8])) {
        for (d, f) in self.outbox.drain(..) {
            send(d, &f);
        }
    }

    fn count_drop(&mut self, reason: DropReason) {
        if reason == DropReason::Panic {
            self.panics_counted += 1;
        }
    }

    fn is_idle(&self) -> bool {
        true
    }
}

fn frame_with_op(i: u16, op: u8) -> Vec<u8> {
    let mut payload = vec![op];
    payload.extend_from_slice(format!("frame {i}").as_bytes());
    udp_frame(
        [2, 0, 0, 0, 0, 1],
        [2, 0, 0, 0, 0, 2],
        ([10, 0, 0, 9], 1000 + i),
        ([10, 0, 0, 1], 11211),
        &payload,
    )
}

fn swapped(f: &[u8]) -> Vec<u8> {
    let mut f = f.to_vec();
    for i in 0..6 {
        f.swap(i, i + 6);
    }
    f
}

/// Runs `pipeline` over `input` through net_pcap port(s) until the input is exhausted and
/// returns what each port wrote.
fn run_pcap(
    eal: Eal,
    tag: &str,
    input: &[PcapRecord],
    extra_ports: usize,
    pipeline: &mut Scripted,
    mut opts: DpdkOptions,
    pass_to_last_port: bool,
) -> (Vec<Vec<PcapRecord>>, kvlb::datapath::dpdk::DatapathCounters) {
    let dir = tempfile::tempdir().unwrap();
    let rx = dir.path().join("in.pcap");
    write_pcap(&rx, input);
    let pool = pool(eal, &format!("t_{tag}"), 4095);
    let cfg = PortConfig {
        rx_timestamp: opts.clock == ClockSource::RxTimestamp,
        ..PortConfig::default()
    };
    let mut outputs = Vec::new();
    let mut ports = Vec::new();
    for p in 0..=extra_ports {
        let tx = dir.path().join(format!("out{p}.pcap"));
        let devargs = if p == 0 {
            format!(
                "net_pcap_{tag}{p},rx_pcap={},tx_pcap={}",
                rx.display(),
                tx.display()
            )
        } else {
            // Only a writer: an empty input file.
            let empty = dir.path().join(format!("empty{p}.pcap"));
            write_pcap(&empty, &[]);
            format!(
                "net_pcap_{tag}{p},rx_pcap={},tx_pcap={}",
                empty.display(),
                tx.display()
            )
        };
        let id = eal.probe_vdev(&devargs).unwrap();
        ports.push(Port::start(eal, id, pool, &cfg).unwrap());
        outputs.push(tx);
    }
    let ids: Vec<PortId> = ports.iter().map(|p| p.id()).collect();
    pipeline.out_port = ids[0];
    pipeline.emit_port = *ids.last().unwrap();
    if pass_to_last_port {
        opts.pass_port = ids.last().copied();
    }
    let stop = AtomicBool::new(false);
    let clock = TscClock::new(eal);
    let mut dp = DpdkDatapath::new(pipeline, ports, pool, clock, opts);
    let mut reports = 0;
    dp.run(&stop, &mut |_, _, _, _| reports += 1);
    assert!(reports >= 1, "the final report always runs");
    let counters = *dp.counters();
    drop(dp.into_ports());
    assert_eq!(pool.in_use(), 0, "every mbuf went back to the pool");
    (outputs.iter().map(|p| read_pcap(p)).collect(), counters)
}

fn pcap_opts(clock: ClockSource) -> DpdkOptions {
    DpdkOptions {
        clock,
        exit_when_idle: true,
        idle_grace: Duration::from_millis(50),
        stats_interval: Duration::ZERO,
        ..DpdkOptions::default()
    }
}

fn records(frames: &[Vec<u8>]) -> Vec<PcapRecord> {
    frames
        .iter()
        .enumerate()
        .map(|(i, f)| PcapRecord {
            sec: 1_000 + i as u32 / 3,
            nsec: (i as u32 % 3) * 250_000_000 + 7_000,
            data: f.clone(),
        })
        .collect()
}

#[test]
fn pcap_frames_pass_in_order_with_their_capture_times() {
    let (eal, _g) = dpdk();
    let frames: Vec<Vec<u8>> = (0..100).map(|i| frame_with_op(i, b'F')).collect();
    let input = records(&frames);
    let mut p = Scripted::new(PortId(0), PortId(0));
    let (out, c) = run_pcap(
        eal,
        "order",
        &input,
        0,
        &mut p,
        pcap_opts(ClockSource::RxTimestamp),
        false,
    );
    let got: Vec<Vec<u8>> = out[0].iter().map(|r| r.data.clone()).collect();
    let want: Vec<Vec<u8>> = frames.iter().map(|f| swapped(f)).collect();
    assert_eq!(got, want);
    assert_eq!((c.rx, c.out, c.tx), (100, 100, 100));
    // The pipeline's clock is each frame's capture time, and timers ran before each frame.
    let times: Vec<u64> = p.seen.iter().map(|s| s.0.as_nanos()).collect();
    let want_times: Vec<u64> = input
        .iter()
        .map(|r| u64::from(r.sec) * 1_000_000_000 + u64::from(r.nsec))
        .collect();
    assert_eq!(times, want_times);
    // Timers ran every millisecond of capture time from the first frame to the last.
    let ticks: Vec<u64> = p.ticks.iter().map(|t| t.as_nanos()).collect();
    let (first, last) = (want_times[0], *want_times.last().unwrap());
    assert_eq!(ticks.len() as u64, (last - first) / 1_000_000 + 1);
    assert!(ticks
        .iter()
        .enumerate()
        .all(|(k, &t)| t == first + k as u64 * 1_000_000));
}

#[test]
fn verdicts_emits_growth_and_panics() {
    let (eal, _g) = dpdk();
    let ops = b"FNDPEGTF";
    let frames: Vec<Vec<u8>> = ops
        .iter()
        .enumerate()
        .map(|(i, &op)| frame_with_op(i as u16, op))
        .collect();
    let mut p = Scripted::new(PortId(0), PortId(0));
    let opts = DpdkOptions {
        pass_port: None,
        ..pcap_opts(ClockSource::RxTimestamp)
    };
    let (out, c) = run_pcap(eal, "verdicts", &records(&frames), 1, &mut p, opts, false);
    let port0: Vec<Vec<u8>> = out[0].iter().map(|r| r.data.clone()).collect();
    let mut grown = frames[5].clone();
    grown.extend_from_slice(b"GROW");
    assert_eq!(
        port0,
        vec![
            swapped(&frames[0]),
            swapped(&frames[4]),
            grown,
            swapped(&frames[7])
        ]
    );
    // The emitted copy went to the other port.
    let port1: Vec<Vec<u8>> = out[1].iter().map(|r| r.data.clone()).collect();
    assert_eq!(port1, vec![frames[4].clone()]);
    assert_eq!(c.rx, 8);
    assert_eq!(c.out, 4);
    assert_eq!(
        c.passed, 2,
        "one Next verdict, one frame emitted toward an NF"
    );
    assert_eq!(c.dropped, 2, "D and T");
    assert_eq!(c.panics, 1);
    assert_eq!(p.panics_counted, 1, "the pipeline is told about the panic");
    assert_eq!(c.emitted, 1);
    assert_eq!(c.tx, 5);
}

#[test]
fn pass_port_takes_next_verdicts() {
    let (eal, _g) = dpdk();
    let frames: Vec<Vec<u8>> = (0..10)
        .map(|i| frame_with_op(i, if i % 2 == 0 { b'N' } else { b'F' }))
        .collect();
    let mut p = Scripted::new(PortId(0), PortId(0));
    let opts = pcap_opts(ClockSource::Tsc);
    let (out, c) = run_pcap(eal, "pass", &records(&frames), 1, &mut p, opts, true);
    let port1: Vec<Vec<u8>> = out[1].iter().map(|r| r.data.clone()).collect();
    let passed: Vec<Vec<u8>> = frames.iter().step_by(2).cloned().collect();
    assert_eq!(
        port1, passed,
        "NEXT frames leave unchanged through the pass port"
    );
    assert_eq!(out[0].len(), 5);
    assert_eq!(c.passed, 5);
    // TSC clock: one time per poll round, never a capture time.
    assert!(p.seen.iter().all(|s| s.0.as_nanos() < 1_000_000_000_000));
}

#[test]
fn oversized_frames_are_counted_not_handled() {
    let (eal, _g) = dpdk();
    let mut big = frame_with_op(0, b'F');
    big.resize(3000, 0xab);
    let frames = vec![frame_with_op(1, b'F'), big, frame_with_op(2, b'F')];
    let mut p = Scripted::new(PortId(0), PortId(0));
    let (out, c) = run_pcap(
        eal,
        "big",
        &records(&frames),
        0,
        &mut p,
        pcap_opts(ClockSource::Tsc),
        false,
    );
    assert_eq!(c.multi_segment, 1);
    assert_eq!(p.seen.len(), 2);
    assert_eq!(out[0].len(), 2);
}

#[test]
fn null_ports_sink_everything() {
    let (eal, _g) = dpdk();
    let pool = pool(eal, "t_null", 1023);
    let id = eal.probe_vdev("net_null_t0").unwrap();
    let mut port = Port::start(eal, id, pool, &PortConfig::default()).unwrap();
    let mut out: Vec<_> = (0..64u16)
        .map(|i| pool.alloc_copy(&memcached_get(i, "x")).unwrap())
        .collect();
    let mut sent = 0;
    while !out.is_empty() {
        sent += port.tx_burst(&mut out);
    }
    assert_eq!(sent, 64);
    drop(port);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn replay_and_dpdk_make_the_same_decisions() {
    let (eal, _g) = dpdk();
    let ops = b"FFEFGFDFNETFFGEF";
    let frames: Vec<Vec<u8>> = (0..64)
        .map(|i| frame_with_op(i, ops[usize::from(i) % ops.len()]))
        .collect();
    let input = records(&frames);
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("in.pcap");
    write_pcap(&pcap, &input);

    let mut replayed = Scripted::new(PortId(0), PortId(0));
    replayed.tick_emit_every = 997;
    let out_dir = dir.path().join("replay");
    kvlb::datapath::replay::replay(&mut replayed, &pcap, PortId(0), &out_dir).unwrap();

    let mut live = Scripted::new(PortId(0), PortId(0));
    live.tick_emit_every = 997;
    let (out, c) = run_pcap(
        eal,
        "agree",
        &input,
        0,
        &mut live,
        pcap_opts(ClockSource::RxTimestamp),
        false,
    );

    // Same times, same timers, same frame sizes seen by the pipeline.
    let view = |p: &Scripted| p.seen.iter().map(|s| (s.0, s.2)).collect::<Vec<_>>();
    assert_eq!(view(&replayed), view(&live));
    assert_eq!(replayed.ticks, live.ticks);
    assert!(replayed.ticks.len() > 10_000);

    // Replay writes forwarded and emitted frames to separate files; the port interleaves
    // them. Each must be the other's, byte for byte and in order.
    let frames_of = |name: &str| -> Vec<Vec<u8>> {
        let path = out_dir.join(name);
        if path.exists() {
            read_pcap(&path).into_iter().map(|r| r.data).collect()
        } else {
            Vec::new()
        }
    };
    let forwarded = frames_of("port0.pcap");
    let emitted = frames_of("emitted-port0.pcap");
    let port: Vec<Vec<u8>> = out[0].iter().map(|r| r.data.clone()).collect();
    assert!(!forwarded.is_empty() && emitted.len() > 10);
    assert!(
        is_interleaving(&port, &forwarded, &emitted),
        "port output ({} frames) is not replay's port0 ({}) and emitted-port0 ({}) interleaved",
        port.len(),
        forwarded.len(),
        emitted.len()
    );
    // What replay files under next/nf outputs, the DPDK datapath counts as passed.
    let passed = frames_of("next.pcap").len() + frames_of("emitted-nf7.pcap").len();
    assert_eq!(c.passed as usize, passed);
}

#[test]
fn interleaving_check_is_right() {
    let v = |s: &[&str]| s.iter().map(|x| x.as_bytes().to_vec()).collect::<Vec<_>>();
    assert!(is_interleaving(
        &v(&["a", "x", "b"]),
        &v(&["a", "b"]),
        &v(&["x"])
    ));
    assert!(!is_interleaving(
        &v(&["b", "x", "a"]),
        &v(&["a", "b"]),
        &v(&["x"])
    ));
    assert!(is_interleaving(&v(&["a", "a"]), &v(&["a"]), &v(&["a"])));
    assert!(!is_interleaving(&v(&["a"]), &v(&["a"]), &v(&["a"])));
}
