//! Parsing and answering memcached GET frames, against etherparse in the same run.
//!
//! - `etherparse_sliced`: `etherparse::SlicedPacket::from_ethernet` (slices Ethernet, IPv4
//!   and UDP; no checksum checks; stops at the UDP payload).
//! - `kvlb_parse`: `wire::classify` (Ethernet, IPv4 with header checksum, UDP with
//!   checksum) + `proto::parse_datagram` (frame header, command, key).
//! - `kvlb_hit_reply`: `proto::write_hit_reply` turning the same GET frames into
//!   memcached's reply for a 100-byte value in place (formats the VALUE line, copies the
//!   data, sums the message), as the core answers a cache hit.
//!
//! Replies are written into an mbuf-like buffer (fixed storage, `set_len` only moves the
//! length, as a DPDK mbuf does); each reply first copies the request into it, and that
//! ~70-byte copy is included in the reply figures.
//!
//! Each iteration handles 256 frames with keys of 10 to 40 bytes. After criterion, the
//! bench times the same workloads in interleaved rounds and prints the minimum ns per
//! frame and the ratios the README quotes (the minimum filters out preemption on a shared
//! machine; criterion's means include it):
//!
//!     cargo bench --bench wire
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, Criterion, Throughput};
use kvlb::proto::{
    emit_request_frame_vec, parse_datagram, write_hit_reply, Request, Response, ResponseReader,
    Value,
};
use kvlb::wire::{classify, Classified, FrameBuf, NoRoom, UdpEndpoints, UdpFrame};

const BATCH: usize = 256;
const VALUE_LEN: usize = 100;

/// A frame buffer like a DPDK mbuf: fixed storage, `set_len` moves the length only.
struct MbufLike {
    data: [u8; 2048],
    len: usize,
}

impl MbufLike {
    fn load(&mut self, frame: &[u8]) {
        self.data[..frame.len()].copy_from_slice(frame);
        self.len = frame.len();
    }
}

impl FrameBuf for MbufLike {
    fn bytes(&self) -> &[u8] {
        &self.data[..self.len]
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.data[..self.len]
    }
    fn set_len(&mut self, len: usize) -> Result<(), NoRoom> {
        if len > self.data.len() {
            return Err(NoRoom);
        }
        self.len = len;
        Ok(())
    }
}

struct Workload {
    frames: Vec<Vec<u8>>,
    /// Each frame's layout and its key.
    items: Vec<(UdpFrame, Vec<u8>)>,
    data: [u8; VALUE_LEN],
    bufs: Vec<MbufLike>,
}

impl Workload {
    fn new() -> Workload {
        let data = [b'v'; VALUE_LEN];
        let frames: Vec<Vec<u8>> = (0..BATCH)
            .map(|i| {
                let ep = UdpEndpoints {
                    src_mac: [2, 0, 0, 0, 1, i as u8],
                    dst_mac: [2, 0, 0, 0, 0, 1],
                    vlan: None,
                    inner_vlan: None,
                    src_ip: Ipv4Addr::new(10, 0, 1, i as u8),
                    dst_ip: Ipv4Addr::new(10, 0, 0, 1),
                    src_port: 40000 + i as u16,
                    dst_port: 11211,
                    ttl: 64,
                };
                // Keys of 10 to 40 bytes, like typical memcached keys.
                let key = format!("user:{:0width$}", i * 7919, width = 5 + i % 31);
                let get = format!("get {key}\r\n");
                let req = Request::parse(get.as_bytes()).expect("valid get");
                let mut frame = Vec::new();
                emit_request_frame_vec(&mut frame, &ep, i as u16, i as u16, &req).expect("fits");
                frame
            })
            .collect();
        let items = frames
            .iter()
            .map(|f| {
                let Ok(Classified::Udp(u)) = classify(f) else {
                    panic!("not udp")
                };
                let key = parse_datagram(u.payload(f))
                    .expect("get")
                    .1
                    .key()
                    .expect("key");
                (u, key.to_vec())
            })
            .collect();
        let bufs = (0..BATCH)
            .map(|_| MbufLike {
                data: [0; 2048],
                len: 0,
            })
            .collect();
        Workload {
            frames,
            items,
            data,
            bufs,
        }
    }

    fn etherparse(&self) {
        for f in &self.frames {
            black_box(etherparse::SlicedPacket::from_ethernet(black_box(f)).is_ok());
        }
    }

    fn parse(&self) {
        for f in &self.frames {
            let Ok(Classified::Udp(u)) = classify(black_box(f)) else {
                panic!("not udp")
            };
            let (header, req) = parse_datagram(u.payload(f)).expect("get");
            black_box((header.request_id, req.key()));
        }
    }

    fn hit_reply(&mut self) {
        for ((buf, f), (u, key)) in self.bufs.iter_mut().zip(&self.frames).zip(&self.items) {
            buf.load(f);
            let value = Value {
                key,
                flags: 0,
                cas: None,
                data: &self.data,
            };
            write_hit_reply(buf, black_box(u), &value).expect("fits");
            black_box(buf.len);
        }
    }

    /// The replies are memcached replies for the right items.
    fn check(&mut self) {
        self.hit_reply();
        for (buf, (_, key)) in self.bufs.iter().zip(&self.items) {
            let Ok(Classified::Udp(r)) = classify(buf.bytes()) else {
                panic!("reply does not classify")
            };
            let msg = &r.payload(buf.bytes())[8..];
            let mut reader = ResponseReader::new(msg);
            let first = reader.next().expect("item").expect("valid");
            assert!(
                matches!(first, Response::Value(v) if v.key == &key[..] && v.data == &self.data[..])
            );
            assert!(matches!(reader.next(), Some(Ok(Response::End))));
        }
    }
}

fn bench_get_frame(c: &mut Criterion) {
    let mut w = Workload::new();
    w.check();
    let mut g = c.benchmark_group("get_frame");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("etherparse_sliced", |b| b.iter(|| w.etherparse()));
    g.bench_function("kvlb_parse", |b| b.iter(|| w.parse()));
    g.bench_function("kvlb_hit_reply", |b| b.iter(|| w.hit_reply()));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_get_frame
}

/// The three workloads timed in interleaved rounds; returns the minimum ns per frame.
fn interleaved_minimum(rounds: usize) -> [f64; 3] {
    let mut w = Workload::new();
    let mut best = [f64::MAX; 3];
    for _ in 0..rounds {
        let mut time = |i: usize, f: &mut dyn FnMut()| {
            let t = Instant::now();
            f();
            best[i] = best[i].min(t.elapsed().as_nanos() as f64);
        };
        time(0, &mut || w.etherparse());
        time(1, &mut || w.parse());
        time(2, &mut || w.hit_reply());
    }
    best.map(|ns| ns / BATCH as f64)
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if std::env::args().any(|a| a == "--list" || a == "--profile-time" || a == "--test") {
        return;
    }
    let rounds = 20_000;
    let [ep, parse, reply] = interleaved_minimum(rounds);
    println!();
    println!("ns per frame (minimum of {rounds} interleaved rounds of {BATCH} GET frames):");
    println!("  etherparse SlicedPacket::from_ethernet       {ep:7.2}");
    println!("  kvlb classify + parse_datagram               {parse:7.2}");
    println!("  kvlb write_hit_reply ({VALUE_LEN}-byte value)        {reply:7.2}");
    println!("ratios:");
    println!(
        "  kvlb parse / etherparse        {:.2}  (target <= 1.00)",
        parse / ep
    );
    println!(
        "  hit reply / kvlb parse         {:.2}  (target <= 2.00)",
        reply / parse
    );
}
