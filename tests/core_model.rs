//! The whole balancing core against a model cluster on an unreliable network.
//!
//! Clients send GETs and SETs of a few keys (hot enough for the detector, the caches and
//! replication to engage) plus cold noise; model memcached backends (one store each) answer
//! whatever reaches them, including what kvlb emits itself (replica copies, `mg` fetches,
//! fencing deletes, probes, flushes). The network delivers requests and replies in any
//! order, loses them and duplicates replies; the clock jumps, and timers run. Clients also
//! send malformed datagrams. A request still in flight when kvlb's timeout passes is lost:
//! one delivered later could be a write landing after newer ones, which memcached over UDP
//! cannot order (nor can kvlb: `--timeout` must exceed the network's worst delay).
//!
//! After every step:
//! - every frame kvlb sends is a valid UDP/IPv4 frame (both checksums verified) addressed to
//!   a client or a backend;
//! - a client request is answered at most once, and only with a reply of its own kind;
//! - a value a client receives is one a client wrote for that key;
//! - (`consistency`) no GET returns a value older than one whose SET was acknowledged to a
//!   client before the GET was sent (a register's linearizability: a value is stale if
//!   another SET of the key was issued after the value's SET was acknowledged and was
//!   itself acknowledged before the GET was sent).
//!
//! `consistency` keeps every backend up and bounds the delay of replies to client requests
//! by the timeout too; replies to kvlb's own requests (replication fetches and writes,
//! fencing deletes) may arrive any time later, after their request expired and its token
//! went to another request: they echo a nonce kvlb checks. `chaos` lets timeouts mark
//! backends down and probes bring them back, and lets every reply arrive any time later
//! (kvlb must tell them apart by shape, key and nonce). Failover can legitimately
//! resurface an older copy from another server, and a reply that late to a client request
//! for the same key is indistinguishable from the current one, so it checks all but
//! staleness.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};

use kvlb::clock::Instant;
use kvlb::config::Config;
use kvlb::nf::{Core, Dest, Pipeline, PortInfo, Verdict};
use kvlb::proto::{Command, Request};
use kvlb::wire::{self, Classified, McHeader, UdpEndpoints};
use proptest::prelude::*;

const KVLB_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xaa];
const BACKEND_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xb0];
const VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 11211);
const BACKENDS: u8 = 3;
/// Keys of the skewed part of the mix.
const KEYS: usize = 3;
const CLIENTS: usize = 2;
/// kvlb's backend timeout.
const TIMEOUT_MS: u64 = 100;

/// `MODEL_TRACE=1` prints every step and frame (for reading a failing case).
fn trace() -> bool {
    std::env::var_os("MODEL_TRACE").is_some()
}

/// The memcached message of a frame, for traces.
fn show(frame: &[u8]) -> String {
    match wire::classify(frame) {
        Ok(Classified::Udp(u)) => {
            let p = u.payload(frame);
            let rid = McHeader::parse(p).map(|h| h.request_id).unwrap_or(0);
            format!(
                "{}:{} -> {}:{} rid {rid} {:?}",
                u.src_ip,
                u.src_port,
                u.dst_ip,
                u.dst_port,
                String::from_utf8_lossy(p.get(8..).unwrap_or_default())
            )
        }
        other => format!("{other:?}"),
    }
}

fn backend_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 1, i + 1)
}

fn client_addr(c: usize) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 100 + c as u8), 5000 + c as u16)
}

fn key(k: usize) -> String {
    format!("key{k}")
}

#[derive(Clone, Debug)]
enum Step {
    Get {
        client: usize,
        key: usize,
    },
    Set {
        client: usize,
        key: usize,
    },
    /// A GET of a key nobody else asks for (dilutes the skew).
    Noise(u16),
    /// A client datagram of arbitrary bytes after a valid frame header.
    Garbage(usize, Vec<u8>),
    /// The i-th frame in flight to a backend reaches it (and its reply goes in flight).
    Deliver(usize),
    /// The i-th reply in flight reaches kvlb.
    Reply(usize),
    /// The i-th reply in flight reaches kvlb twice.
    Duplicate(usize),
    /// A frame in flight (to a backend, or a reply) is lost.
    Lose(bool, usize),
    /// The clock moves this many milliseconds and the core's timers run.
    Tick(u16),
}

fn step() -> impl Strategy<Value = Step> {
    let c = 0..CLIENTS;
    let k = 0..KEYS;
    let i = 0usize..16;
    prop_oneof![
        8 => (c.clone(), k.clone()).prop_map(|(client, key)| Step::Get { client, key }),
        3 => (c.clone(), k).prop_map(|(client, key)| Step::Set { client, key }),
        2 => any::<u16>().prop_map(Step::Noise),
        1 => (c, prop::collection::vec(any::<u8>(), 0..40)).prop_map(|(c, b)| Step::Garbage(c, b)),
        10 => i.clone().prop_map(Step::Deliver),
        10 => i.clone().prop_map(Step::Reply),
        1 => i.clone().prop_map(Step::Duplicate),
        1 => (any::<bool>(), i).prop_map(|(r, i)| Step::Lose(r, i)),
        2 => (1u16..400).prop_map(Step::Tick),
    ]
}

/// Takes the `i`-th (modulo the length) frame in flight, if any.
fn take<T>(q: &mut VecDeque<T>, i: usize) -> Option<T> {
    let n = q.len();
    (n > 0).then(|| q.remove(i % n)).flatten()
}

/// A frame on the network: when it was sent, and whether it is (a reply to) a request
/// kvlb made itself rather than one it forwarded for a client.
#[derive(Clone, Debug)]
struct InFlight {
    sent: u64,
    frame: Vec<u8>,
    own: bool,
}

/// A model memcached's items: key -> (flags, data).
type Store = HashMap<Vec<u8>, (u32, Vec<u8>)>;

/// What a client is waiting for.
#[derive(Clone, Debug)]
enum Pending {
    Get {
        key: usize,
        /// Step at which it was sent.
        sent: usize,
    },
    Set {
        version: usize,
    },
    /// Noise or garbage: any single reply (or none) is fine.
    Other,
}

/// One SET a client issued.
#[derive(Clone, Debug)]
struct Write {
    key: usize,
    issued: usize,
    acked: Option<usize>,
}

struct Model {
    core: Core,
    now_ns: u64,
    step: usize,
    stores: Vec<Store>,
    /// Frames in flight to backends.
    to_backends: VecDeque<InFlight>,
    /// Replies in flight to kvlb (`own`: to a request kvlb made itself).
    replies: VecDeque<InFlight>,
    /// Whether replies, too, are lost once older than kvlb's timeout (else they can
    /// arrive any time later), and the stale-read check is on.
    bounded: bool,
    next_rid: [u16; CLIENTS],
    pending: HashMap<(usize, u16), Pending>,
    writes: Vec<Write>,
    /// Replies clients got, for the failure message.
    answered: usize,
    /// Which backends served client GETs of each key (to see replicated reads happen).
    read_from: HashMap<Vec<u8>, HashSet<usize>>,
    /// FNV-1a over every frame kvlb sent, in order (to compare runs).
    sent_digest: u64,
}

impl Model {
    fn new(bounded: bool, extra: &[&str]) -> Model {
        let mut args: Vec<String> = vec!["--vip".into(), VIP.to_string()];
        for i in 0..BACKENDS {
            args.extend([
                "--backend".into(),
                SocketAddrV4::new(backend_ip(i), 11211).to_string(),
                "--neighbor".into(),
                format!("{}=02:00:00:00:00:b0", backend_ip(i)),
            ]);
        }
        for c in 0..CLIENTS {
            args.extend([
                "--neighbor".into(),
                format!("{}=02:00:00:00:00:c{c}", client_addr(c).ip()),
            ]);
        }
        let timeout = format!("{TIMEOUT_MS}ms");
        args.extend(
            [
                "--hot-support",
                "0.1",
                "--hot-error",
                "0.01",
                "--hot-epoch",
                "200ms",
                "--replicas",
                "2",
                "--timeout",
                &timeout,
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        args.extend(extra.iter().map(|s| s.to_string()));
        let cfg = Config::from_args(args).expect("test config");
        let core = Core::new(
            &cfg,
            &[PortInfo {
                id: 0,
                mac: KVLB_MAC,
            }],
        )
        .expect("core");
        Model {
            core,
            now_ns: 1,
            step: 0,
            stores: vec![HashMap::new(); BACKENDS as usize],
            to_backends: VecDeque::new(),
            replies: VecDeque::new(),
            bounded,
            next_rid: [0; CLIENTS],
            pending: HashMap::new(),
            writes: Vec::new(),
            answered: 0,
            read_from: HashMap::new(),
            sent_digest: 0xcbf2_9ce4_8422_2325,
        }
    }

    fn now(&self) -> Instant {
        Instant::from_nanos(self.now_ns)
    }

    /// A client sends `msg`; returns its request id.
    fn send(&mut self, client: usize, msg: &[u8], what: Pending) {
        let rid = self.next_rid[client];
        self.next_rid[client] = rid.wrapping_add(1);
        let src = client_addr(client);
        let ep = UdpEndpoints {
            src_mac: [2, 0, 0, 0, 0, 0xc0 + client as u8],
            dst_mac: KVLB_MAC,
            vlan: None,
            inner_vlan: None,
            src_ip: *src.ip(),
            dst_ip: *VIP.ip(),
            src_port: src.port(),
            dst_port: VIP.port(),
            ttl: 64,
        };
        let mut buf = vec![0u8; 2048];
        let n = ep
            .emit_message(&mut buf, 1, McHeader::single(rid), msg)
            .expect("request frame");
        buf.truncate(n);
        // A request id still pending from 65536 requests ago is forgotten (never here).
        self.pending.insert((client, rid), what);
        self.feed_core(buf);
    }

    /// Runs `frame` through the core and routes whatever leaves it.
    fn feed_core(&mut self, mut frame: Vec<u8>) {
        let now = self.now();
        if trace() {
            eprintln!("  in   {}", show(&frame));
        }
        let v = self.core.process_frame(now, 0, &mut frame);
        if trace() && !matches!(v, Verdict::Out(_)) {
            eprintln!("  -> {v:?}");
        }
        match v {
            Verdict::Out(0) => self.route(frame, false),
            Verdict::Out(p) => panic!("frame sent out of port {p}, the only port is 0"),
            Verdict::Drop(_) => {}
            v => panic!("unexpected verdict {v:?}"),
        }
        self.drain();
    }

    fn drain(&mut self) {
        let mut out = Vec::new();
        self.core.drain_emitted(&mut |d, f| {
            assert_eq!(d, Dest::Port(0), "emitted to {d:?}");
            out.push(f.to_vec());
        });
        for f in out {
            self.route(f, true);
        }
    }

    /// A frame kvlb sent (`own`: emitted, not a forwarded client frame): to a backend (in
    /// flight) or to a client (checked and consumed).
    fn route(&mut self, frame: Vec<u8>, own: bool) {
        let u = match wire::classify(&frame) {
            Ok(Classified::Udp(u)) => u,
            other => panic!("kvlb sent a frame that is not valid UDP/IPv4: {other:?}"),
        };
        assert_eq!(u.eth.src, KVLB_MAC, "source MAC of a frame kvlb sent");
        for &b in frame.iter().chain(&[0xff]) {
            self.sent_digest = (self.sent_digest ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        if trace() {
            eprintln!("  out  {}", show(&frame));
        }
        if (0..BACKENDS).any(|i| backend_ip(i) == u.dst_ip) {
            assert_eq!(u.dst_port, 11211);
            assert_eq!(u.src_ip, *VIP.ip(), "kvlb's address toward the backends");
            self.to_backends.push_back(InFlight {
                sent: self.now_ns,
                frame,
                own,
            });
            return;
        }
        let client = (0..CLIENTS)
            .find(|&c| *client_addr(c).ip() == u.dst_ip)
            .unwrap_or_else(|| panic!("frame to an unknown address {}", u.dst_ip));
        assert_eq!(u.dst_port, client_addr(client).port());
        assert_eq!((u.src_ip, u.src_port), (*VIP.ip(), VIP.port()));
        let payload = u.payload(&frame);
        let header = McHeader::parse(payload).expect("frame header of a reply");
        let msg = &payload[8..];
        let Some(what) = self.pending.remove(&(client, header.request_id)) else {
            panic!(
                "client {client} got a reply to request {} it is not waiting for (answered twice?): {:?}",
                header.request_id,
                String::from_utf8_lossy(msg)
            );
        };
        self.answered += 1;
        self.check_reply(what, msg);
    }

    fn check_reply(&mut self, what: Pending, msg: &[u8]) {
        let text = String::from_utf8_lossy(msg).into_owned();
        match what {
            Pending::Other => {}
            Pending::Set { version } => {
                if text == "STORED\r\n" {
                    let w = &mut self.writes[version];
                    assert!(w.acked.is_none());
                    w.acked = Some(self.step);
                } else {
                    assert!(
                        text.starts_with("SERVER_ERROR") || text.starts_with("NOT_STORED"),
                        "reply to a set: {text:?}"
                    );
                }
            }
            Pending::Get { key: k, sent } => {
                if text == "END\r\n" || text.starts_with("SERVER_ERROR") {
                    return; // a miss (cold server) or kvlb's error: not a value
                }
                let name = key(k);
                let head = format!("VALUE {name} 0 ");
                assert!(text.starts_with(&head), "reply to get {name}: {text:?}");
                let rest = &text[head.len()..];
                let (len, rest) = rest.split_once("\r\n").expect("VALUE line");
                let len: usize = len.parse().expect("VALUE length");
                let data = &rest[..len];
                assert_eq!(&rest[len..], "\r\nEND\r\n", "reply to get {name}: {text:?}");
                let version: usize = data
                    .strip_prefix(&format!("{name}="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("get {name} returned {data:?}, no client wrote it"));
                let w = self.writes[version].clone();
                assert_eq!(w.key, k, "get {name} returned another key's value {data:?}");
                // Stale: some other write of the key began after this one was acknowledged
                // and was itself acknowledged before the GET was sent.
                if let (true, Some(acked)) = (self.bounded, w.acked) {
                    if let Some(newer) = self.writes.iter().position(|o| {
                        o.key == k && o.issued > acked && o.acked.is_some_and(|a| a < sent)
                    }) {
                        panic!(
                            "stale read: get {name} sent at step {sent} returned version {version} \
                             (acked at step {acked}); version {newer} was issued after that and \
                             acked at step {:?}",
                            self.writes[newer].acked
                        );
                    }
                }
            }
        }
    }

    /// A model memcached's answer to `msg`, or None for no reply.
    fn serve(store: &mut Store, msg: &[u8]) -> Option<Vec<u8>> {
        let req = match Request::parse(msg) {
            Ok(r) => r,
            Err(_) => return Some(b"ERROR\r\n".to_vec()),
        };
        let mut out = Vec::new();
        match req {
            Request::Retrieval(r) => {
                for k in r.keys.iter() {
                    if let Some((flags, data)) = store.get(k) {
                        out.extend_from_slice(
                            format!(
                                "VALUE {} {flags} {}",
                                String::from_utf8_lossy(k),
                                data.len()
                            )
                            .as_bytes(),
                        );
                        if r.command == Command::Gets || r.command == Command::Gats {
                            out.extend_from_slice(b" 1");
                        }
                        out.extend_from_slice(b"\r\n");
                        out.extend_from_slice(data);
                        out.extend_from_slice(b"\r\n");
                    }
                }
                out.extend_from_slice(b"END\r\n");
            }
            Request::Storage(s) => {
                let exists = store.contains_key(s.key);
                let ok = match s.command {
                    Command::Add => !exists,
                    Command::Replace => exists,
                    _ => true,
                };
                if ok {
                    store.insert(s.key.to_vec(), (s.flags, s.data.to_vec()));
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
            // The meta commands kvlb sends itself, answered as memcached 1.6.18 does: flags
            // in request order, `k` and `O` echoed on hits and misses alike.
            Request::Meta(m) => {
                let flag = |name: u8| {
                    m.flags
                        .split(|&b| b == b' ')
                        .find(|t| t.first() == Some(&name))
                        .map(|t| String::from_utf8_lossy(&t[1..]).into_owned())
                };
                // The requested return flags; `f` and `t` only for a value (`hit`: its
                // client flags).
                let echo = |line: &mut String, hit: Option<u32>| {
                    for f in m.flags.split(|&b| b == b' ') {
                        match (f.first(), hit) {
                            (Some(b'f'), Some(flags)) => *line += &format!(" f{flags}"),
                            (Some(b't'), Some(_)) => *line += " t-1",
                            (Some(b'k'), _) => {
                                *line += &format!(" k{}", String::from_utf8_lossy(m.key))
                            }
                            (Some(b'O'), _) => *line += &format!(" {}", String::from_utf8_lossy(f)),
                            _ => {}
                        }
                    }
                };
                let mut line;
                match m.command {
                    Command::MetaGet => match store.get(m.key) {
                        Some((flags, data)) => {
                            line = format!("VA {}", data.len());
                            echo(&mut line, Some(*flags));
                            line += "\r\n";
                            line += &String::from_utf8_lossy(data);
                        }
                        None => {
                            line = "EN".into();
                            echo(&mut line, None);
                        }
                    },
                    Command::MetaSet => {
                        let flags = flag(b'F').map_or(0, |f| f.parse().unwrap());
                        let data = m.data.expect("ms carries data");
                        store.insert(m.key.to_vec(), (flags, data.to_vec()));
                        line = "HD".into();
                        echo(&mut line, None);
                    }
                    Command::MetaDelete => {
                        line = if store.remove(m.key).is_some() {
                            "HD".into()
                        } else {
                            "NF".into()
                        };
                        echo(&mut line, None);
                    }
                    _ => line = "ERROR".into(),
                }
                out.extend_from_slice(line.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Request::Version => out.extend_from_slice(b"VERSION 1.6.18\r\n"),
            Request::FlushAll { .. } => {
                store.clear();
                out.extend_from_slice(b"OK\r\n");
            }
            _ => out.extend_from_slice(b"ERROR\r\n"),
        }
        Some(out)
    }

    fn deliver(&mut self, i: usize) {
        let Some(InFlight { frame, own, .. }) = take(&mut self.to_backends, i) else {
            return;
        };
        let Ok(Classified::Udp(u)) = wire::classify(&frame) else {
            unreachable!("checked when routed")
        };
        let b = (0..BACKENDS)
            .position(|i| backend_ip(i) == u.dst_ip)
            .expect("checked when routed");
        let payload = u.payload(&frame);
        let header = McHeader::parse(payload).expect("kvlb sends frame headers");
        if trace() {
            eprintln!("  backend {b} serves {}", show(&frame));
        }
        if let Some(k) = payload[8..].strip_prefix(b"get ") {
            let k = k.strip_suffix(b"\r\n").unwrap_or(k);
            self.read_from.entry(k.to_vec()).or_default().insert(b);
        }
        let Some(reply) = Self::serve(&mut self.stores[b], &payload[8..]) else {
            return;
        };
        let mut ep = u.endpoints().reversed();
        ep.src_mac = BACKEND_MAC;
        ep.dst_mac = KVLB_MAC;
        let mut buf = vec![0u8; 4096];
        let n = ep
            .emit_message(&mut buf, 9, McHeader::single(header.request_id), &reply)
            .expect("reply frame");
        buf.truncate(n);
        self.replies.push_back(InFlight {
            sent: self.now_ns,
            frame: buf,
            own,
        });
    }

    fn run(&mut self, s: &Step) {
        self.step += 1;
        if trace() {
            eprintln!("step {}: {s:?}", self.step);
        }
        // Every request takes a microsecond: flows of one step do not share a timestamp.
        self.now_ns += 1_000;
        match *s {
            Step::Get { client, key: k } => {
                let msg = format!("get {}\r\n", key(k));
                let sent = self.step;
                self.send(client, msg.as_bytes(), Pending::Get { key: k, sent });
            }
            Step::Set { client, key: k } => {
                let version = self.writes.len();
                self.writes.push(Write {
                    key: k,
                    issued: self.step,
                    acked: None,
                });
                let data = format!("{}={version}", key(k));
                let msg = format!("set {} 0 0 {}\r\n{data}\r\n", key(k), data.len());
                self.send(client, msg.as_bytes(), Pending::Set { version });
            }
            Step::Noise(n) => {
                let msg = format!("get noise{n}\r\n");
                self.send(0, msg.as_bytes(), Pending::Other);
            }
            Step::Garbage(client, ref bytes) => self.send(client, bytes, Pending::Other),
            Step::Deliver(i) => self.deliver(i),
            Step::Reply(i) | Step::Duplicate(i) => {
                let Some(InFlight { frame: f, .. }) = take(&mut self.replies, i) else {
                    return;
                };
                if matches!(s, Step::Duplicate(_)) {
                    self.feed_core(f.clone());
                }
                self.feed_core(f);
            }
            Step::Lose(reply, i) => {
                if reply {
                    take(&mut self.replies, i);
                } else {
                    take(&mut self.to_backends, i);
                }
            }
            Step::Tick(ms) => {
                self.now_ns += u64::from(ms) * 1_000_000;
                // The network's delay is bounded by kvlb's timeout: a request still in
                // flight when its flow expires is lost. (One delivered later could be a
                // write landing after newer ones: memcached over UDP has no defence
                // against that, and kvlb none either; --timeout must exceed the
                // network's worst delay.)
                // Replies to kvlb's own requests are never bounded: they echo a nonce.
                let now_ns = self.now_ns;
                let young = |f: &InFlight| now_ns - f.sent < TIMEOUT_MS * 1_000_000;
                self.to_backends.retain(young);
                if self.bounded {
                    self.replies.retain(|f| f.own || young(f));
                }
                let now = self.now();
                self.core.on_tick(now);
                self.drain();
            }
        }
    }

    /// Delivers everything in flight, in order, until the network is quiet.
    fn settle(&mut self) {
        for _ in 0..64 {
            if self.to_backends.is_empty() && self.replies.is_empty() {
                return;
            }
            while !self.to_backends.is_empty() {
                self.deliver(0);
            }
            while !self.replies.is_empty() {
                self.run(&Step::Reply(0));
            }
        }
        panic!("the network never went quiet");
    }
}

/// A warm-up that makes the skewed keys hot and replicated, so the random steps start
/// from a state where the caches and replicas serve reads.
fn warm_up(m: &mut Model) {
    for round in 0..300 {
        for k in 0..KEYS {
            m.run(&Step::Get {
                client: round % CLIENTS,
                key: k,
            });
            if round % 20 == 0 {
                m.run(&Step::Set { client: 0, key: k });
            }
        }
        m.settle();
        if round % 10 == 9 {
            m.run(&Step::Tick(50));
            m.settle();
        }
    }
}

fn run_case(bounded: bool, extra: &[&str], steps: &[Step]) -> (Model, usize) {
    let mut m = Model::new(bounded, extra);
    warm_up(&mut m);
    let warm = m.answered;
    for s in steps {
        m.run(s);
    }
    // Let everything in flight arrive, then let the timers expire what never will.
    m.settle();
    m.run(&Step::Tick(1000));
    m.settle();
    (m, warm)
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES, when set, runs more (or fewer) cases than the default here.
        cases: std::env::var("PROPTEST_CASES").map_or(256, |v| v.parse().unwrap_or(256)),
        ..ProptestConfig::default()
    })]

    #[test]
    fn consistency(steps in prop::collection::vec(step(), 1..400)) {
        let (mut m, _) = run_case(true, &["--down-after", "1000000000"], &steps);
        let r = m.core.report(m.now());
        prop_assert!(!r.backends.iter().any(|b| !b.up), "a backend went down: {:?}", r.backends);
    }

    /// The same with a flow table of 12 tokens on one source port, so tokens are reused
    /// within a few requests and late replies to kvlb's own requests land on later ones.
    /// Without the opaque check (`echoes`) this finds a stale read at once: an expired
    /// fetch's old value, delivered to a refetch of the same key on the same token, was
    /// written to the replicas.
    #[test]
    fn consistency_under_token_reuse(steps in prop::collection::vec(step(), 1..400)) {
        let args = ["--down-after", "1000000000", "--source-ports", "1", "--flow-capacity", "12"];
        let (mut m, _) = run_case(true, &args, &steps);
        let r = m.core.report(m.now());
        prop_assert!(!r.backends.iter().any(|b| !b.up), "a backend went down: {:?}", r.backends);
    }

    #[test]
    fn chaos(steps in prop::collection::vec(step(), 1..400)) {
        run_case(false, &["--down-after", "2"], &steps);
    }
}

/// The same input gives the same output, frame for frame: replays reproduce, and so do
/// this file's regression seeds. (The hot-key map once iterated in a per-process random
/// order, so fetches left in a different order and took different tokens.)
#[test]
fn the_core_is_deterministic() {
    let steps: Vec<Step> = (0..600usize)
        .map(|i| match i % 7 {
            0 | 3 => Step::Get {
                client: i % CLIENTS,
                key: i % KEYS,
            },
            1 => Step::Set {
                client: 0,
                key: (i / 7) % KEYS,
            },
            2 => Step::Deliver(i),
            4 => Step::Reply(i / 3),
            5 if i % 35 == 5 => Step::Tick(60),
            _ => Step::Noise(i as u16),
        })
        .collect();
    let run = || {
        let (m, _) = run_case(true, &["--down-after", "1000000000"], &steps);
        m.sent_digest
    };
    assert_eq!(run(), run());
}

/// The warm-up alone engages what the random steps are meant to exercise: hot keys, L1
/// hits answered by kvlb, and replicated reads.
#[test]
fn the_warm_up_makes_keys_hot_and_serves_hits() {
    let mut m = Model::new(true, &["--down-after", "1000000000"]);
    warm_up(&mut m);
    let r = m.core.report(m.now());
    assert!(!r.hot_keys.is_empty(), "no hot keys after the warm-up");
    assert!(
        r.stats.cache.l1_hits > 0,
        "no L1 hits after the warm-up: {:?}",
        r.stats.cache
    );
    let rep = &r.stats.replication;
    assert!(
        rep.replica_writes > 0 && rep.replica_acks > 0,
        "replicas not written and acknowledged after the warm-up: {rep:?}"
    );
    // Reads of a hot key spread over its replicas (the balance policy's reads and the
    // replica picks alike): some key was read from more than one backend.
    assert!(
        m.read_from.values().any(|servers| servers.len() > 1),
        "no key was read from more than one backend: {:?}",
        m.read_from
    );
    assert!(
        m.pending.is_empty(),
        "unanswered after settling: {:?}",
        m.pending
    );
}
