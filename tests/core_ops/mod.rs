//! Bytes as a run of the whole core: frames (arbitrary bytes, or well-formed client requests
//! and backend replies whose fields come from the input), clock steps, ticks and drains,
//! with the invariants that must hold after every operation. Shared by the cargo-fuzz
//! target `core` (`fuzz/fuzz_targets/core.rs`) and the stable property test
//! `tests/core_fuzz.rs`, which feeds it random bytes and the fuzz target's seeds.
//!
//! The core is built small (24 flows on two source ports, a 4-key L1, a 1 KiB L2, short
//! timeouts, TTLs and epochs) so that eviction, expiry, failover, probing and token reuse
//! happen within a few hundred operations; the first input byte picks the policies. The
//! reply cap (250 bytes) is below the largest cached value (300), so cache hits, split
//! multi-gets and forwarded replies all meet it. One of the three backends has no static
//! neighbour entry: its MAC comes from an ARP reply. Backends are model memcached servers
//! (one store each) answering whatever kvlb sent them, kvlb's own meta requests included,
//! in one datagram or several, in or out of order, or with an error line or arbitrary
//! bytes.
//!
//! After every operation:
//! - frames in = frames handed to the core; frames out = `Out` verdicts + frames drained;
//!   frames passed = `Next` verdicts; every drop or consumed reason counts exactly its
//!   verdicts, except the two the core also counts for frames of its own that never left
//!   (`amplification_guard`: a split get's cached part; `flow_table_full`: its own
//!   requests), which count at least their verdicts;
//! - every frame kvlb sends classifies (checksums verified outside `cfg(fuzzing)`), leaves
//!   from kvlb's MAC, and goes to a backend from a source port, to a client from the VIP,
//!   or is ARP;
//! - anti-amplification: the reply bytes (UDP payload) sent to an untrusted address, port
//!   and request id never exceed `--unverified-reply-bytes` times the requests it sent with
//!   that id;
//! - at every tick: the flow table within `--flow-capacity`, L1 within `--l1-keys`, L2
//!   within `--l2-bytes`.
//!
//! The same input gives the same frames out (the run's digest), which the callers check by
//! running it twice.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};

use kvlb::clock::Instant;
use kvlb::config::Config;
use kvlb::nf::{Core, Dest, DropReason, Pipeline, PortId, PortInfo, Verdict};
use kvlb::proto::{Command, Request};
use kvlb::stats::Report;
use kvlb::wire::{self, ArpRepr, Classified, McHeader, UdpEndpoints};

const KVLB_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xaa];
const BACKEND_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xb0];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xc0];
const VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 11211);
const BACKENDS: usize = 3;
/// Backends with a static neighbour entry; the others need an ARP reply.
const STATIC_NEIGHBORS: usize = 2;
const SOURCE_PORT_BASE: u16 = 40000;
const SOURCE_PORTS: u16 = 2;
const FLOW_CAPACITY: u64 = 24;
const L1_KEYS: u64 = 4;
const L2_BYTES: u64 = 1024;
/// `--unverified-reply-bytes`.
const CAP: u64 = 250;
/// Clients: two untrusted, one in `--trusted`, one outside `--allow`.
const CLIENTS: [SocketAddrV4; 4] = [
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 100), 5000),
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 101), 5001),
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 200), 6000),
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 9, 9), 7000),
];
const TRUSTED: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 200);
/// memcached's largest UDP datagram payload.
const MAX_DATAGRAM: usize = 1400;

fn backend_addr(i: usize) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 1 + i as u8), 11211)
}

/// `CORE_OPS_TRACE=1` prints every frame in and out (for reading a failing case).
fn trace() -> bool {
    std::env::var_os("CORE_OPS_TRACE").is_some()
}

/// A frame in one line, for traces.
fn show(frame: &[u8]) -> String {
    match wire::classify(frame) {
        Ok(Classified::Udp(u)) => {
            let p = u.payload(frame);
            let h = McHeader::parse(p).unwrap_or_default();
            let msg = String::from_utf8_lossy(p.get(8..).unwrap_or_default());
            let msg: String = msg.chars().take(72).collect();
            format!(
                "{}:{} -> {}:{} #{} {}/{} ({} B) {msg:?}",
                u.src_ip,
                u.src_port,
                u.dst_ip,
                u.dst_port,
                h.request_id,
                h.sequence,
                h.count,
                p.len()
            )
        }
        other => format!("{other:?}"),
    }
}

/// The input, read front to back; past its end every read gives zeros.
struct Input<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at = self.at.saturating_add(1);
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let start = self.at.min(self.data.len());
        let end = start.saturating_add(n).min(self.data.len());
        self.at = self.at.saturating_add(n);
        &self.data[start..end]
    }

    /// A length for a run of arbitrary bytes: up to 127, or (after a 0xff) up to 1,599.
    /// Random inputs mostly give short runs, so they leave bytes for other operations.
    fn run_len(&mut self) -> usize {
        match self.byte() {
            0xff => usize::from(self.u16() % 1600),
            b => usize::from(b & 0x7f),
        }
    }

    fn done(&self) -> bool {
        self.at >= self.data.len()
    }
}

/// The `i`-th entry (modulo the length), removed.
fn take<T>(q: &mut VecDeque<T>, i: usize) -> Option<T> {
    let n = q.len();
    (n > 0).then(|| q.remove(i % n)).flatten()
}

/// A key: mostly two skewed ones (each over the 25 % hot support), then five warm ones
/// (each over s/4), and a 250-byte one.
fn key(b: u8) -> Vec<u8> {
    match b {
        0..=159 => format!("k{}", b & 1).into_bytes(),
        160..=250 => format!("k{}", 2 + b % 5).into_bytes(),
        _ => vec![b'L'; 250],
    }
}

/// A value length: small, medium, around the largest cached value (300), or over the
/// reply cap and a datagram.
fn value_len(b: u8) -> usize {
    let low = usize::from(b & 0x3f);
    match b >> 6 {
        0 => low / 4,
        1 => 16 + low,
        2 => 270 + low,
        _ => 500 + low * 25,
    }
}

/// A model memcached's items: key -> (flags, data).
type Store = HashMap<Vec<u8>, (u32, Vec<u8>)>;

/// A model memcached's answer to `msg`, or None for no reply.
fn serve(store: &mut Store, msg: &[u8]) -> Option<Vec<u8>> {
    let Ok(req) = Request::parse(msg) else {
        return Some(b"ERROR\r\n".to_vec());
    };
    let mut out = Vec::new();
    match req {
        Request::Retrieval(r) => {
            for k in r.keys.iter() {
                if let Some((flags, data)) = store.get(k) {
                    out.extend_from_slice(b"VALUE ");
                    out.extend_from_slice(k);
                    out.extend_from_slice(format!(" {flags} {}", data.len()).as_bytes());
                    if matches!(r.command, Command::Gets | Command::Gats) {
                        out.extend_from_slice(b" 7");
                    }
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(data);
                    out.extend_from_slice(b"\r\n");
                }
            }
            out.extend_from_slice(b"END\r\n");
        }
        Request::Storage(s) => {
            let old = store.get(s.key).cloned();
            let ok = match s.command {
                Command::Add => old.is_none(),
                Command::Replace | Command::Cas => old.is_some(),
                _ => true,
            };
            if ok {
                let data = match (s.command, old) {
                    (Command::Append, Some((_, mut d))) => {
                        d.extend_from_slice(s.data);
                        d
                    }
                    (Command::Prepend, Some((_, d))) => [s.data, &d].concat(),
                    _ => s.data.to_vec(),
                };
                store.insert(s.key.to_vec(), (s.flags, data));
            }
            if s.noreply {
                return None;
            }
            out.extend_from_slice(if ok { b"STORED\r\n" } else { b"NOT_STORED\r\n" });
        }
        Request::Delete { key, noreply } => {
            let found = store.remove(key).is_some();
            if noreply {
                return None;
            }
            out.extend_from_slice(if found {
                b"DELETED\r\n"
            } else {
                b"NOT_FOUND\r\n"
            });
        }
        Request::Arithmetic { noreply, .. } => {
            if noreply {
                return None;
            }
            out.extend_from_slice(b"42\r\n");
        }
        Request::Touch { key, noreply, .. } => {
            if noreply {
                return None;
            }
            out.extend_from_slice(if store.contains_key(key) {
                b"TOUCHED\r\n"
            } else {
                b"NOT_FOUND\r\n"
            });
        }
        Request::Meta(m) => {
            // Return flags as memcached 1.6 writes them: `f`, `t` on a value, `k` and `O`
            // echoed on hits and misses alike.
            let echo = |line: &mut Vec<u8>, hit: Option<u32>| {
                for f in m.flags.split(|&b| b == b' ') {
                    match (f.first(), hit) {
                        (Some(b'f'), Some(flags)) => line.extend(format!(" f{flags}").bytes()),
                        (Some(b't'), Some(_)) => line.extend_from_slice(b" t-1"),
                        (Some(b'k'), _) => {
                            line.extend_from_slice(b" k");
                            line.extend_from_slice(m.key);
                        }
                        (Some(b'O'), _) => {
                            line.push(b' ');
                            line.extend_from_slice(f);
                        }
                        _ => {}
                    }
                }
            };
            match m.command {
                Command::MetaGet => match store.get(m.key) {
                    Some((flags, data)) => {
                        out.extend(format!("VA {}", data.len()).bytes());
                        echo(&mut out, Some(*flags));
                        out.extend_from_slice(b"\r\n");
                        out.extend_from_slice(data);
                    }
                    None => {
                        out.extend_from_slice(b"EN");
                        echo(&mut out, None);
                    }
                },
                Command::MetaSet => {
                    let data = m.data.unwrap_or_default().to_vec();
                    store.insert(m.key.to_vec(), (0, data));
                    out.extend_from_slice(b"HD");
                    echo(&mut out, None);
                }
                Command::MetaDelete => {
                    let found = store.remove(m.key).is_some();
                    out.extend_from_slice(if found { b"HD" } else { b"NF" });
                    echo(&mut out, None);
                }
                Command::MetaNoop => out.extend_from_slice(b"MN"),
                _ => out.extend_from_slice(b"EN"),
            }
            if m.quiet && !out.starts_with(b"EN") {
                return None;
            }
            out.extend_from_slice(b"\r\n");
        }
        Request::Version => out.extend_from_slice(b"VERSION 1.6.18\r\n"),
        Request::Verbosity { noreply, .. } => {
            if noreply {
                return None;
            }
            out.extend_from_slice(b"OK\r\n");
        }
        Request::Stats { .. } => {
            for i in 0..40 {
                out.extend(format!("STAT item_{i} {}\r\n", i * 1000).bytes());
            }
            out.extend_from_slice(b"END\r\n");
        }
        Request::FlushAll { noreply, .. } => {
            store.clear();
            if noreply {
                return None;
            }
            out.extend_from_slice(b"OK\r\n");
        }
        Request::Quit => return None,
        Request::Binary(b) => {
            // A binary response header: magic 0x81, the opcode, status 0, no body.
            out.extend_from_slice(&[0x81, b.opcode, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&[0; 4]);
            out.extend_from_slice(&b.opaque.to_be_bytes());
            out.extend_from_slice(&[0; 8]);
        }
    }
    Some(out)
}

/// What the core is asked to do with a frame, tallied to check its counters.
#[derive(Default)]
struct Tally {
    frames_in: u64,
    /// `Out` verdicts plus frames drained.
    frames_out: u64,
    passed: u64,
    /// Drop verdicts by reason name.
    dropped: BTreeMap<&'static str, u64>,
}

struct Harness {
    core: Core,
    now_ns: u64,
    stores: Vec<Store>,
    /// Frames kvlb sent to backends, not yet delivered.
    to_backends: VecDeque<Vec<u8>>,
    /// Backend replies on their way to kvlb.
    replies: VecDeque<Vec<u8>>,
    /// Recent frames of any kind, for mutation and replays.
    recent: VecDeque<Vec<u8>>,
    tally: Tally,
    /// Per (client address, request id): requests sent to the VIP and reply bytes back.
    ledger: HashMap<(SocketAddrV4, u16), (u64, u64)>,
    /// FNV-1a over every frame kvlb sent, in order.
    digest: u64,
}

impl Harness {
    fn new(policy: u8) -> Harness {
        let mut args: Vec<String> = vec!["--vip".into(), VIP.to_string()];
        for i in 0..BACKENDS {
            args.extend(["--backend".into(), backend_addr(i).to_string()]);
            if i < STATIC_NEIGHBORS {
                args.extend([
                    "--neighbor".into(),
                    format!("{}=02:00:00:00:00:b0", backend_addr(i).ip()),
                ]);
            }
        }
        let algo = ["lossy-decayed", "lossy", "space-saving", "lossy-weighted"];
        let l2 = ["on", "auto", "off", "on"];
        let select = ["least-loaded", "lor", "p2c", "least-loaded"];
        let fixed = [
            "--source-port-base",
            "40000",
            "--source-ports",
            "2",
            "--flow-capacity",
            "24",
            "--l1-keys",
            "4",
            "--l2-bytes",
            "1024",
            "--cache-max-value",
            "300",
            "--cache-ttl",
            "40ms",
            "--hot-support",
            "0.25",
            "--hot-error",
            "0.02",
            "--hot-epoch",
            "20ms",
            "--replicas",
            "2",
            "--timeout",
            "30ms",
            "--down-after",
            "2",
            "--probe-interval",
            "40ms",
            "--unverified-reply-bytes",
            "250",
            "--trusted",
            "10.0.0.200/32",
            "--allow",
            "10.0.0.0/24",
            "--rate-limit",
            "5000",
            "--rate-burst",
            "64",
        ];
        args.extend(fixed.iter().map(|s| s.to_string()));
        let p = usize::from(policy);
        args.extend([
            "--cache-policy".into(),
            (if p & 1 == 0 { "balance" } else { "always" }).into(),
            "--replica-select".into(),
            select[(p >> 1) & 3].into(),
            "--rejoin-flush".into(),
            (if p & 8 == 0 { "on" } else { "off" }).into(),
            "--l2".into(),
            l2[(p >> 4) & 3].into(),
            "--hotkey-algo".into(),
            algo[(p >> 6) & 3].into(),
        ]);
        let cfg = Config::from_args(args).expect("the harness's config");
        let core = Core::new(
            &cfg,
            &[PortInfo {
                id: PortId(0),
                mac: KVLB_MAC,
            }],
        )
        .expect("the harness's core");
        Harness {
            core,
            now_ns: 1,
            stores: vec![Store::new(); BACKENDS],
            to_backends: VecDeque::new(),
            replies: VecDeque::new(),
            recent: VecDeque::new(),
            tally: Tally::default(),
            ledger: HashMap::new(),
            digest: 0xcbf2_9ce4_8422_2325,
        }
    }

    fn now(&self) -> Instant {
        Instant::from_nanos(self.now_ns)
    }

    fn remember(&mut self, frame: &[u8]) {
        if self.recent.len() >= 16 {
            self.recent.pop_front();
        }
        self.recent.push_back(frame.to_vec());
    }

    /// Hands `frame` to the core and routes what comes out.
    fn feed(&mut self, mut frame: Vec<u8>) {
        // A request to the VIP entitles its source to replies (whatever the core makes of it).
        if let Ok(Classified::Udp(u)) = wire::classify(&frame) {
            if (u.dst_ip, u.dst_port) == (*VIP.ip(), VIP.port()) {
                if let Ok(h) = McHeader::parse(u.payload(&frame)) {
                    let src = SocketAddrV4::new(u.src_ip, u.src_port);
                    self.ledger.entry((src, h.request_id)).or_default().0 += 1;
                }
            }
        }
        self.remember(&frame);
        let now = self.now();
        self.tally.frames_in += 1;
        if trace() {
            eprintln!("in   {}", show(&frame));
        }
        let verdict = self.core.process_frame(now, PortId(0), &mut frame);
        if trace() && !matches!(verdict, Verdict::Out(_)) {
            eprintln!("  -> {verdict:?}");
        }
        match verdict {
            Verdict::Out(PortId(0)) => {
                self.tally.frames_out += 1;
                self.route(frame);
            }
            Verdict::Next => self.tally.passed += 1,
            Verdict::Drop(r) => *self.tally.dropped.entry(r.name()).or_default() += 1,
            v => panic!("verdict {v:?}: the core has one port and no NF chain"),
        }
        self.check_counters();
    }

    fn drain(&mut self) {
        let mut out = Vec::new();
        self.core.drain_emitted(&mut |d, f| {
            assert_eq!(d, Dest::Port(PortId(0)), "emitted to {d:?}");
            out.push(f.to_vec());
        });
        self.tally.frames_out += out.len() as u64;
        for f in out {
            self.route(f);
        }
        self.check_counters();
    }

    /// A frame kvlb sent: checked, then in flight to a backend or consumed by a client.
    fn route(&mut self, frame: Vec<u8>) {
        if trace() {
            eprintln!("out  {}", show(&frame));
        }
        for &b in frame.iter().chain(&[0xff]) {
            self.digest = (self.digest ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        let u = match wire::classify(&frame) {
            Ok(Classified::Udp(u)) => u,
            Ok(Classified::Arp(a)) => {
                assert_eq!(a.eth.src, KVLB_MAC, "source MAC of kvlb's ARP");
                return;
            }
            Err(e) => panic!("kvlb sent a frame that does not classify ({e:?}): {frame:02x?}"),
        };
        assert_eq!(u.eth.src, KVLB_MAC, "source MAC of a frame kvlb sent");
        if (u.src_ip, u.src_port) == (*VIP.ip(), VIP.port()) {
            let payload = u.payload(&frame);
            let h = McHeader::parse(payload).expect("a reply carries a frame header");
            let to = SocketAddrV4::new(u.dst_ip, u.dst_port);
            let (requests, bytes) = self.ledger.entry((to, h.request_id)).or_default();
            *bytes += payload.len() as u64;
            assert!(
                u.dst_ip == TRUSTED || *bytes <= *requests * CAP,
                "amplification: {bytes} reply bytes to {to} for {requests} request(s) with id {}",
                h.request_id
            );
            return;
        }
        let to = SocketAddrV4::new(u.dst_ip, u.dst_port);
        assert!(
            (0..BACKENDS).any(|i| backend_addr(i) == to),
            "kvlb sent a frame to {to}, neither a client (from the VIP) nor a backend"
        );
        assert!(
            u.src_ip == *VIP.ip()
                && (SOURCE_PORT_BASE..SOURCE_PORT_BASE + SOURCE_PORTS).contains(&u.src_port),
            "a frame to a backend from {}:{}",
            u.src_ip,
            u.src_port
        );
        self.remember(&frame);
        self.to_backends.push_back(frame);
    }

    /// The core's counters against what it was handed and what it answered.
    fn check_counters(&self) {
        let s = self.core.stats();
        assert_eq!(s.frames_in, self.tally.frames_in, "frames in");
        assert_eq!(s.frames_out, self.tally.frames_out, "frames out");
        assert_eq!(
            s.passed.values().sum::<u64>(),
            self.tally.passed,
            "frames passed"
        );
        // Reasons the core also counts for frames of its own that never left.
        let own = [
            DropReason::AmplificationGuard.name(),
            DropReason::FlowTableFull.name(),
        ];
        let mut counted: BTreeMap<&str, u64> = BTreeMap::new();
        for (k, v) in s.drops.iter().chain(&s.consumed) {
            *counted.entry(k).or_default() += v;
        }
        for (reason, &n) in &counted {
            let verdicts = self.tally.dropped.get(reason).copied().unwrap_or(0);
            if own.contains(reason) {
                assert!(n >= verdicts, "{reason}: {n} counted, {verdicts} verdicts");
            } else {
                assert_eq!(n, verdicts, "{reason}: counted vs verdicts");
            }
        }
        for (reason, &n) in &self.tally.dropped {
            assert!(
                counted.get(reason).copied().unwrap_or(0) >= n,
                "{reason}: {n} verdicts, not counted"
            );
        }
    }

    /// Bounds the report shows: flows, L1 and L2.
    fn check_bounds(&mut self) {
        let now = self.now();
        let r = self.core.report(now);
        assert!(r.outstanding <= FLOW_CAPACITY, "{} flows", r.outstanding);
        let c = &r.stats.cache_state;
        assert!(c.l1_keys <= L1_KEYS, "{} L1 keys", c.l1_keys);
        assert!(c.l1_filled <= c.l1_keys, "{c:?}");
        assert!(c.l2_bytes <= L2_BYTES, "{} L2 bytes", c.l2_bytes);
        assert!(c.l2_on || c.l2_keys == 0, "L2 off but holding {c:?}");
        assert_eq!(
            r.stats.cache.unmatched_write_done, 0,
            "a write reported done that was not in flight"
        );
    }

    /// A client request: a well-formed command whose fields come from the input, or
    /// arbitrary text.
    fn client_request(&mut self, input: &mut Input<'_>) {
        // Mostly the untrusted clients, then the trusted one, now and then an outsider.
        let client = CLIENTS[[0, 0, 0, 1, 1, 2, 2, 3][usize::from(input.byte() % 8)]];
        let rid = input.u16();
        let shape = input.byte();
        let k = key(input.byte());
        let ks = String::from_utf8_lossy(&k).into_owned();
        let extra = input.byte();
        let noreply = if extra & 1 == 1 { " noreply" } else { "" };
        let data = |input: &mut Input<'_>| {
            let len = value_len(input.byte());
            let fill = b'a' + input.byte() % 26;
            vec![fill; len]
        };
        let msg: Vec<u8> = match shape % 24 {
            0..=5 => format!("get {ks}\r\n").into_bytes(),
            6 => {
                let n = 2 + usize::from(extra % 4);
                let keys: Vec<String> = (0..n)
                    .map(|_| String::from_utf8_lossy(&key(input.byte())).into_owned())
                    .collect();
                format!("get {}\r\n", keys.join(" ")).into_bytes()
            }
            7 => format!("gets {ks}\r\n").into_bytes(),
            8 => format!("gat{} 10 {ks}\r\n", if extra & 2 == 0 { "" } else { "s" }).into_bytes(),
            9 | 10 => {
                let d = data(input);
                let mut m =
                    format!("set {ks} {} 0 {}{noreply}\r\n", extra >> 4, d.len()).into_bytes();
                m.extend_from_slice(&d);
                m.extend_from_slice(b"\r\n");
                m
            }
            11 => {
                let d = data(input);
                let cmd = ["add", "replace", "append", "prepend"][usize::from(extra >> 1) % 4];
                let cas = if extra & 0x80 == 0 { "" } else { " 7" };
                let cmd = if cas.is_empty() { cmd } else { "cas" };
                let mut m = format!("{cmd} {ks} 0 0 {}{cas}{noreply}\r\n", d.len()).into_bytes();
                m.extend_from_slice(&d);
                m.extend_from_slice(b"\r\n");
                m
            }
            12 => format!("delete {ks}{noreply}\r\n").into_bytes(),
            13 => format!(
                "{} {ks} {extra}{noreply}\r\n",
                if extra & 2 == 0 { "incr" } else { "decr" }
            )
            .into_bytes(),
            14 => format!("touch {ks} 10{noreply}\r\n").into_bytes(),
            15 => {
                let q = if extra & 1 == 1 { " q" } else { "" };
                format!("mg {ks} v f t k O{extra:x}{q}\r\n").into_bytes()
            }
            16 => {
                let d = data(input);
                let q = if extra & 1 == 1 { " q" } else { "" };
                let mut m = format!("ms {ks} {} T0{q}\r\n", d.len()).into_bytes();
                m.extend_from_slice(&d);
                m.extend_from_slice(b"\r\n");
                m
            }
            17 => match extra % 3 {
                0 => format!("md {ks}\r\n").into_bytes(),
                1 => format!("ma {ks} N0 J13\r\n").into_bytes(),
                _ => format!("me {ks}\r\n").into_bytes(),
            },
            18 => b"mn\r\n".to_vec(),
            19 => format!("flush_all{}\r\n", if extra & 2 == 0 { "" } else { " 0" })
                .replace("\r\n", &format!("{noreply}\r\n"))
                .into_bytes(),
            20 => match extra % 5 {
                0 => b"version\r\n".to_vec(),
                1 => format!("verbosity 1{noreply}\r\n").into_bytes(),
                2 => b"stats\r\n".to_vec(),
                3 => b"stats reset\r\n".to_vec(),
                _ => b"stats detail on\r\n".to_vec(),
            },
            21 => b"quit\r\n".to_vec(),
            22 => {
                let n = input.run_len();
                input.bytes(n).to_vec()
            }
            _ => {
                // Binary: get, set, delete, noop.
                let opcode = [0x00, 0x01, 0x04, 0x0a][usize::from(extra % 4)];
                let extras: &[u8] = if opcode == 0x01 { &[0; 8] } else { &[] };
                let key: &[u8] = if opcode == 0x0a { &[] } else { &k };
                let value: &[u8] = if opcode == 0x01 { b"vv" } else { &[] };
                let body = extras.len() + key.len() + value.len();
                let mut m = vec![0x80, opcode];
                m.extend_from_slice(&(key.len() as u16).to_be_bytes());
                m.extend_from_slice(&[extras.len() as u8, 0, 0, 0]);
                m.extend_from_slice(&(body as u32).to_be_bytes());
                m.extend_from_slice(&u32::from(rid).to_be_bytes());
                m.extend_from_slice(&[0; 8]);
                m.extend_from_slice(extras);
                m.extend_from_slice(key);
                m.extend_from_slice(value);
                m
            }
        };
        // Now and then a frame header of several datagrams (which memcached refuses).
        let header = if extra & 0xf0 == 0xf0 {
            McHeader {
                request_id: rid,
                sequence: u16::from(extra & 3),
                count: u16::from(extra >> 2 & 3),
                reserved: 0,
            }
        } else {
            McHeader::single(rid)
        };
        let ep = UdpEndpoints {
            src_mac: CLIENT_MAC,
            dst_mac: KVLB_MAC,
            vlan: None,
            inner_vlan: None,
            src_ip: *client.ip(),
            dst_ip: *VIP.ip(),
            src_port: client.port(),
            dst_port: VIP.port(),
            ttl: 64,
        };
        let mut buf = vec![0u8; 4096];
        if let Ok(n) = ep.emit_message(&mut buf, rid, header, &msg) {
            buf.truncate(n);
            self.feed(buf);
        }
    }

    /// A backend gets a frame kvlb sent it and answers (or not); with `at_once`, the
    /// answer reaches kvlb right away.
    fn deliver(&mut self, input: &mut Input<'_>, at_once: bool) {
        let i = usize::from(input.byte());
        let mode = input.byte();
        let Some(frame) = take(&mut self.to_backends, i) else {
            return;
        };
        let Ok(Classified::Udp(u)) = wire::classify(&frame) else {
            unreachable!("checked when routed")
        };
        let b = (0..BACKENDS)
            .position(|i| *backend_addr(i).ip() == u.dst_ip)
            .expect("checked when routed");
        let payload = u.payload(&frame);
        let Ok(header) = McHeader::parse(payload) else {
            panic!("kvlb sent a backend a datagram without a frame header")
        };
        let msg = &payload[8..];
        let reply = match mode % 8 {
            0 => Some(b"SERVER_ERROR out of memory\r\n".to_vec()),
            1 => {
                let n = input.run_len();
                Some(input.bytes(n).to_vec())
            }
            _ => serve(&mut self.stores[b], msg),
        };
        let Some(reply) = reply else {
            return;
        };
        // In one datagram when it fits, as memcached; or cut smaller; or in any order.
        let chunk = if mode & 0x10 != 0 {
            1 + usize::from(input.byte()) * 4
        } else {
            MAX_DATAGRAM - 8
        };
        let chunks: Vec<&[u8]> = if reply.is_empty() {
            vec![&reply[..]]
        } else {
            reply.chunks(chunk).collect()
        };
        let count = chunks.len().min(usize::from(u16::MAX)) as u16;
        let rid = if mode & 0x20 != 0 {
            header.request_id ^ u16::from(input.byte())
        } else {
            header.request_id
        };
        let mut ep = u.endpoints().reversed();
        ep.src_mac = BACKEND_MAC;
        ep.dst_mac = KVLB_MAC;
        let mut datagrams = Vec::new();
        for (seq, c) in (0u16..).zip(&chunks).take(usize::from(count)) {
            let h = McHeader {
                request_id: rid,
                sequence: seq,
                count,
                reserved: 0,
            };
            let mut buf = vec![0u8; MAX_DATAGRAM + 128];
            if let Ok(n) = ep.emit_message(&mut buf, seq, h, c) {
                buf.truncate(n);
                datagrams.push(buf);
            }
        }
        if mode & 0x40 != 0 {
            datagrams.reverse();
        }
        if at_once {
            for d in datagrams {
                self.feed(d);
            }
        } else {
            self.replies.extend(datagrams);
        }
    }

    /// ARP: a backend announces its MAC (or a client asks for the VIP's).
    fn arp(&mut self, input: &mut Input<'_>) {
        let which = input.byte();
        let repr = if which & 1 == 0 {
            let b = usize::from(which >> 1) % BACKENDS;
            ArpRepr {
                operation: wire::arp::Operation::Reply,
                sender_mac: BACKEND_MAC,
                sender_ip: *backend_addr(b).ip(),
                target_mac: KVLB_MAC,
                target_ip: *VIP.ip(),
            }
        } else {
            ArpRepr {
                operation: wire::arp::Operation::Request,
                sender_mac: CLIENT_MAC,
                sender_ip: *CLIENTS[usize::from(which >> 1) % CLIENTS.len()].ip(),
                target_mac: [0; 6],
                target_ip: *VIP.ip(),
            }
        };
        let mut buf = vec![0u8; 64];
        if let Ok(n) = wire::emit_arp(&mut buf, repr.sender_mac, KVLB_MAC, None, &repr) {
            buf.truncate(n);
            self.feed(buf);
        }
    }

    /// An ICMP port unreachable from a backend's host quoting a frame kvlb sent it.
    fn icmp(&mut self, input: &mut Input<'_>) {
        let i = usize::from(input.byte());
        let Some(sent) = self.to_backends.get(i % self.to_backends.len().max(1)) else {
            return;
        };
        let Ok(Classified::Udp(u)) = wire::classify(sent) else {
            return;
        };
        // kvlb's frames to backends carry no VLAN tag: IPv4 at 14, then UDP.
        let quoted = &sent[14..14 + 28];
        let mut icmp = vec![3u8, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(quoted);
        let mut frame = vec![0u8; 34];
        frame[..6].copy_from_slice(&KVLB_MAC);
        frame[6..12].copy_from_slice(&BACKEND_MAC);
        frame[12..14].copy_from_slice(&[8, 0]);
        frame[14] = 0x45;
        frame[16..18].copy_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
        frame[22] = 64;
        frame[23] = 1;
        frame[26..30].copy_from_slice(&u.dst_ip.octets());
        frame[30..34].copy_from_slice(&VIP.ip().octets());
        wire::ipv4::Packet::new_unchecked(&mut frame[14..34]).fill_checksum();
        frame.extend_from_slice(&icmp);
        self.feed(frame);
    }

    fn op(&mut self, input: &mut Input<'_>) {
        match input.byte() % 16 {
            0..=3 => self.client_request(input),
            4..=6 => self.deliver(input, true),
            7 => self.deliver(input, false),
            8 => {
                let i = usize::from(input.byte());
                let twice = i & 0x80 != 0;
                if let Some(r) = take(&mut self.replies, i) {
                    if twice {
                        self.feed(r.clone());
                    }
                    self.feed(r);
                }
            }
            9 => {
                // Lose a frame on its way to a backend, or a reply.
                let i = usize::from(input.byte());
                if i & 1 == 0 {
                    take(&mut self.to_backends, i >> 1);
                } else {
                    take(&mut self.replies, i >> 1);
                }
            }
            10 => {
                // The clock moves: up to 63 µs, 6.3 ms, 63 ms or 6.3 s.
                let b = input.byte();
                let unit = [1_000, 100_000, 1_000_000, 100_000_000][usize::from(b >> 6)];
                self.now_ns += u64::from(b & 0x3f) * unit;
            }
            11 => {
                self.now_ns += 1_000_000 * u64::from(input.byte() & 0x1f);
                let now = self.now();
                self.core.on_tick(now);
                self.check_bounds();
                self.drain();
            }
            12 => self.drain(),
            13 => {
                // Arbitrary bytes as a frame (checksums are not checked when fuzzing).
                let n = input.run_len();
                let f = input.bytes(n).to_vec();
                self.feed(f);
            }
            14 => {
                // A recent frame with one byte changed, fed back to kvlb.
                let i = usize::from(input.byte());
                let (at, x) = (usize::from(input.u16()), input.byte());
                if let Some(mut f) = self.recent.get(i % self.recent.len().max(1)).cloned() {
                    if !f.is_empty() {
                        let n = f.len();
                        f[at % n] ^= x;
                    }
                    self.feed(f);
                }
            }
            _ => {
                if input.byte() & 1 == 0 {
                    self.arp(input);
                } else {
                    self.icmp(input);
                }
            }
        }
    }
}

/// What a run left: a digest of every frame kvlb sent, in order, and its final report.
pub struct Outcome {
    pub digest: u64,
    pub report: Report,
}

/// Runs `data` as operations on a fresh core, checking the invariants (it panics on a
/// violation).
pub fn run(data: &[u8]) -> Outcome {
    let mut input = Input { data, at: 0 };
    let mut h = Harness::new(input.byte());
    while !input.done() {
        h.op(&mut input);
    }
    // Everything kvlb still holds leaves, and every timer runs out.
    h.drain();
    for _ in 0..3 {
        h.now_ns += 5_000_000_000;
        let now = h.now();
        h.core.on_tick(now);
        h.check_bounds();
        h.drain();
    }
    let now = h.now();
    Outcome {
        digest: h.digest,
        report: h.core.report(now),
    }
}
