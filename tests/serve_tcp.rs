//! `kvlb serve` over TCP in front of real memcached servers on loopback: the protocol byte
//! for byte (pipelined, split across writes), a third-party client (pymemcache), ketama
//! placement, a backend killed and restarted, and TCP writes against UDP reads.

mod common;
mod workspace_bin;

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::skip::{skip, used, Need};
use common::{Kvlb, Memcached, UdpClient};

/// A memcached text client over one TCP connection.
struct Tcp {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Tcp {
    fn connect(to: SocketAddrV4) -> Tcp {
        let s = TcpStream::connect(to).expect("connect to kvlb over TCP");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.set_nodelay(true).unwrap();
        Tcp { s, buf: Vec::new() }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    /// Reads until the buffer holds `n` bytes or more (or the peer closes).
    fn fill(&mut self, n: usize) -> bool {
        let mut chunk = [0u8; 65536];
        while self.buf.len() < n {
            match self.s.read(&mut chunk) {
                Ok(0) => return false,
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
                Err(e) => panic!("read: {e} (have {:?})", String::from_utf8_lossy(&self.buf)),
            }
        }
        true
    }

    /// The next reply, whole: up to the first line that ends one (`END`, a status, a
    /// number, ...), data blocks skipped by their length.
    fn reply(&mut self) -> String {
        let mut at = 0;
        loop {
            let line_end = loop {
                if let Some(p) = self.buf[at..].windows(2).position(|w| w == b"\r\n") {
                    break at + p + 2;
                }
                assert!(self.fill(self.buf.len() + 1), "closed mid-reply");
            };
            let line = String::from_utf8_lossy(&self.buf[at..line_end - 2]).into_owned();
            at = line_end;
            let word = line.split(' ').next().unwrap_or("");
            let data = match word {
                "VALUE" => line.split(' ').nth(3).map(|n| n.parse::<usize>().unwrap()),
                "VA" => line.split(' ').nth(1).map(|n| n.parse::<usize>().unwrap()),
                _ => None,
            };
            if let Some(n) = data {
                assert!(self.fill(at + n + 2) || self.buf.len() >= at + n + 2);
                at += n + 2;
            }
            if word != "VALUE" && word != "STAT" {
                let r = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.drain(..at);
                return r;
            }
        }
    }

    fn ask(&mut self, req: &str) -> String {
        self.send(req.as_bytes());
        self.reply()
    }
}

#[test]
fn the_memcached_protocol_passes_through_over_tcp() {
    let ms: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let kvlb = Kvlb::serve(&ms.iter().collect::<Vec<_>>(), &[]);
    let mut c = Tcp::connect(kvlb.vip);

    assert!(c.ask("version\r\n").starts_with("VERSION 1.6"));
    assert_eq!(c.ask("set k1 7 0 2\r\nv1\r\n"), "STORED\r\n");
    assert_eq!(c.ask("get k1\r\n"), "VALUE k1 7 2\r\nv1\r\nEND\r\n");
    assert_eq!(c.ask("add k1 0 0 1\r\nx\r\n"), "NOT_STORED\r\n");
    assert_eq!(c.ask("append k1 0 0 1\r\na\r\n"), "STORED\r\n");
    assert_eq!(c.ask("prepend k1 0 0 1\r\np\r\n"), "STORED\r\n");
    assert_eq!(c.ask("get k1\r\n"), "VALUE k1 7 4\r\npv1a\r\nEND\r\n");
    let gets = c.ask("gets k1\r\n");
    let cas: u64 = gets.split_whitespace().nth(4).unwrap().parse().unwrap();
    assert_eq!(
        c.ask(&format!("cas k1 0 0 1 {}\r\nc\r\n", cas + 1000)),
        "EXISTS\r\n"
    );
    assert_eq!(c.ask(&format!("cas k1 0 0 1 {cas}\r\nc\r\n")), "STORED\r\n");
    assert_eq!(c.ask("set n 0 0 2\r\n10\r\n"), "STORED\r\n");
    assert_eq!(c.ask("incr n 5\r\n"), "15\r\n");
    assert_eq!(c.ask("decr n 20\r\n"), "0\r\n");
    assert_eq!(c.ask("touch n 100\r\n"), "TOUCHED\r\n");
    assert_eq!(c.ask("gat 200 n\r\n"), "VALUE n 0 2\r\n0 \r\nEND\r\n");
    assert_eq!(c.ask("delete n\r\n"), "DELETED\r\n");
    assert_eq!(c.ask("delete n\r\n"), "NOT_FOUND\r\n");
    assert_eq!(c.ask("get n\r\n"), "END\r\n");
    assert_eq!(c.ask("ms mk 2\r\nhi\r\n"), "HD\r\n");
    assert_eq!(c.ask("mg mk v\r\n"), "VA 2\r\nhi\r\n");
    assert!(c.ask("stats\r\n").contains("STAT pid"));

    // Pipelined: one write, every reply in request order, noreply and quiet requests
    // silent (a quiet miss, then mn's MN).
    let mut batch = String::new();
    let mut want = String::new();
    for i in 0..40 {
        batch += &format!("set p{i} 0 0 3 noreply\r\nv{i:02}\r\n");
    }
    batch += "mg absent v q\r\nmg p3 v q\r\nmn\r\n";
    want += "VA 3\r\nv03\r\nMN\r\n";
    let keys: Vec<String> = (0..40).map(|i| format!("p{i}")).collect();
    batch += &format!("get {} missing\r\n", keys.join(" "));
    for i in 0..40 {
        batch += &format!("incr p{i} 1\r\n");
    }
    batch += "bogus\r\nset x 0 0 2\r\nabc\r\nversion\r\n";
    c.send(batch.as_bytes());
    let mut got = String::new();
    got += &c.reply(); // VA p3
    got += &c.reply(); // MN
    assert_eq!(got, want);
    // The multi-get spans the three servers and comes back as one reply, one END.
    let multi = c.reply();
    assert!(multi.ends_with("END\r\n") && multi.matches("END\r\n").count() == 1);
    for i in 0..40 {
        assert!(
            multi.contains(&format!("VALUE p{i} 0 3\r\nv{i:02}\r\n")),
            "{i}: {multi}"
        );
    }
    assert!(
        ms.iter().all(|m| m.stat("cmd_get") > 0),
        "every server served a part"
    );
    for i in 0..40 {
        // Not numbers: memcached refuses to incr them.
        let r = c.reply();
        assert!(r.starts_with("CLIENT_ERROR"), "incr p{i}: {r}");
    }
    assert_eq!(c.reply(), "ERROR\r\n");
    // As memcached: the block's last byte and CR are read as its CRLF, and the LF left
    // over is an empty command line.
    assert_eq!(c.reply(), "CLIENT_ERROR bad data chunk\r\n");
    assert_eq!(c.reply(), "ERROR\r\n");
    assert!(c.reply().starts_with("VERSION "));

    // A request split into single bytes across writes.
    for b in b"set split 0 0 5\r\nhello\r\nget split\r\n" {
        c.send(&[*b]);
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(c.reply(), "STORED\r\n");
    assert_eq!(c.reply(), "VALUE split 0 5\r\nhello\r\nEND\r\n");

    // Larger than the largest item: memcached's error, the data swallowed, and on.
    let big = vec![b'x'; (1 << 20) + 10];
    c.send(format!("set huge 0 0 {}\r\n", big.len()).as_bytes());
    c.send(&big);
    c.send(b"\r\nget split\r\n");
    assert_eq!(c.reply(), "SERVER_ERROR object too large for cache\r\n");
    assert_eq!(c.reply(), "VALUE split 0 5\r\nhello\r\nEND\r\n");

    // flush_all reaches every server.
    assert_eq!(c.ask("flush_all\r\n"), "OK\r\n");
    assert!(ms.iter().all(|m| m.stat("cmd_flush") == 1));
    assert_eq!(c.ask("get k1\r\n"), "END\r\n");
    // quit closes the connection after what came before it.
    c.send(b"version\r\nquit\r\n");
    assert!(c.reply().starts_with("VERSION"));
    let mut rest = Vec::new();
    assert_eq!(c.s.read_to_end(&mut rest).unwrap(), 0);
}

/// Values from 1 byte to 1 MiB, through several pipelined clients at once.
#[test]
fn values_up_to_a_mebibyte_pipelined() {
    let ms: Vec<Memcached> = (0..2).map(|_| Memcached::start()).collect();
    let kvlb = Kvlb::serve(&ms.iter().collect::<Vec<_>>(), &[]);
    let sizes = [
        1usize,
        100,
        1400,
        9000,
        9200,
        20_000,
        300_000,
        (1 << 20) - 512,
    ];
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let vip = kvlb.vip;
            std::thread::spawn(move || {
                let mut c = Tcp::connect(vip);
                let mut req = Vec::new();
                for (i, &n) in sizes.iter().enumerate() {
                    let v: Vec<u8> = (0..n).map(|j| b'a' + ((i + j + t) % 26) as u8).collect();
                    req.extend_from_slice(format!("set v{t}-{i} {i} 0 {n}\r\n").as_bytes());
                    req.extend_from_slice(&v);
                    req.extend_from_slice(b"\r\n");
                    req.extend_from_slice(format!("get v{t}-{i}\r\n").as_bytes());
                }
                c.send(&req);
                for (i, &n) in sizes.iter().enumerate() {
                    assert_eq!(c.reply(), "STORED\r\n", "size {n}");
                    let v: Vec<u8> = (0..n).map(|j| b'a' + ((i + j + t) % 26) as u8).collect();
                    let mut want = format!("VALUE v{t}-{i} {i} {n}\r\n").into_bytes();
                    want.extend_from_slice(&v);
                    want.extend_from_slice(b"\r\nEND\r\n");
                    let got = c.reply().into_bytes();
                    assert!(
                        got == want,
                        "size {n}: got {} bytes, {:?}...{:?}",
                        got.len(),
                        String::from_utf8_lossy(&got[..got.len().min(60)]),
                        String::from_utf8_lossy(&got[got.len().saturating_sub(30)..])
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// pymemcache, a third-party client, through kvlb: sizes, multi-get, cas, incr/decr,
/// delete, noreply.
#[test]
fn pymemcache_through_kvlb() {
    let python = "/usr/bin/python3";
    let ok = std::process::Command::new(python)
        .args(["-c", "import pymemcache"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return skip(
            "pymemcache",
            Need::Installed,
            "python3-pymemcache is not installed (scripts/test.sh installs it)",
        );
    }
    let ms: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let kvlb = Kvlb::serve(&ms.iter().collect::<Vec<_>>(), &[]);
    used(
        "pymemcache",
        "python3-pymemcache through kvlb serve over TCP",
    );
    let script = format!(
        r#"
from pymemcache.client.base import Client
c = Client(("127.0.0.1", {port}), timeout=5)
for n in [1, 100, 5000, 9200, 100000, 1024 * 1024 - 512]:
    v = bytes([65 + n % 26]) * n
    assert c.set("big%d" % n, v, noreply=False), n
    assert c.get("big%d" % n) == v, n
keys = ["k%d" % i for i in range(60)]
c.set_many({{k: k.encode() * 3 for k in keys}})
assert c.get_many(keys + ["nope"]) == {{k: k.encode() * 3 for k in keys}}
assert c.incr("n", 1) is None
c.set("n", b"10", noreply=False)
assert c.incr("n", 5) == 15 and c.decr("n", 3) == 12
v, cas = c.gets("n")
assert c.cas("n", b"1", cas) and not c.cas("n", b"2", cas) and c.get("n") == b"1"
assert c.delete("n", noreply=False) and c.get("n") is None
c.set("nr", b"x", noreply=True)
assert c.get("nr") == b"x"
assert c.touch("nr", 100, noreply=False)
print("ok")
"#,
        port = kvlb.vip.port()
    );
    let out = std::process::Command::new(python)
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stdout == b"ok\n",
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Keys set over TCP through kvlb are on the server libmemcached's ketama picks, and the
/// other way round.
#[test]
fn tcp_placement_is_libmemcacheds() {
    let Some(lm) = common::libmemcached_client() else {
        return;
    };
    let ms: Vec<Memcached> = (0..4).map(|_| Memcached::start()).collect();
    let servers: Vec<&Memcached> = ms.iter().collect();
    let kvlb = Kvlb::serve(&servers, &["--no-hotkeys"]);
    let mut c = Tcp::connect(kvlb.vip);
    let keys: Vec<String> = (0..300).map(|i| format!("tcp-set:{i}")).collect();
    for key in &keys {
        let v = format!("via-kvlb:{key}");
        assert_eq!(
            c.ask(&format!("set {key} 0 0 {}\r\n{v}\r\n", v.len())),
            "STORED\r\n"
        );
    }
    let found = common::libmemcached(lm, "get", &servers, &keys);
    for (key, value) in keys.iter().zip(&found) {
        assert_eq!(
            value,
            &format!("via-kvlb:{key}"),
            "{key} not where libmemcached looks"
        );
    }
    let by_lm: Vec<String> = (0..300).map(|i| format!("lm-set:{i}")).collect();
    for r in common::libmemcached(lm, "set", &servers, &by_lm) {
        assert_eq!(r, "STORED");
    }
    for key in &by_lm {
        let v = format!("lm:{key}");
        assert_eq!(
            c.ask(&format!("get {key}\r\n")),
            format!("VALUE {key} 0 {}\r\n{v}\r\nEND\r\n", v.len())
        );
    }
}

/// A backend killed mid-run: its requests are answered `SERVER_ERROR` (never another
/// request's reply), the others go on, and once it is back its keys are served again.
#[test]
fn a_killed_backend_answers_server_error_then_comes_back() {
    let mut ms: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let kvlb = Kvlb::serve(
        &ms.iter().collect::<Vec<_>>(),
        &["--no-hotkeys", "--probe-interval", "100ms"],
    );
    let mut c = Tcp::connect(kvlb.vip);
    let keys: Vec<String> = (0..200).map(|i| format!("kb{i}")).collect();
    for k in &keys {
        assert_eq!(
            c.ask(&format!("set {k} 0 0 {}\r\n{k}\r\n", k.len())),
            "STORED\r\n"
        );
    }
    let victim = ms.remove(1);
    let port = victim.port;
    let mut errors = 0;
    let mut ok = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut killed = Some(victim);
    let mut round = 0;
    while Instant::now() < deadline {
        round += 1;
        let mut req = String::new();
        for k in &keys {
            req += &format!("get {k}\r\n");
        }
        c.send(req.as_bytes());
        if round == 2 {
            killed.take().unwrap().proc.terminate();
        }
        for k in &keys {
            let r = c.reply();
            if r.starts_with("SERVER_ERROR") {
                errors += 1;
            } else {
                // A hit carries this key, never another's; a miss (the key's new server
                // after failover) is END.
                assert!(
                    r == format!("VALUE {k} 0 {}\r\n{k}\r\nEND\r\n", k.len()) || r == "END\r\n",
                    "{k}: {r}"
                );
                ok += 1;
            }
        }
    }
    assert!(ok > 0, "no request succeeded");
    let _ = errors;
    // Back on the same port: its keys are served again once kvlb has probed it.
    let back = Memcached::start_on(port).expect("memcached restarts");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.ask("set after 0 0 1\r\nx\r\n");
        let all_up = r == "STORED\r\n"
            && keys
                .iter()
                .all(|k| !c.ask(&format!("get {k}\r\n")).starts_with("SERVER_ERROR"));
        if all_up && back.stat("curr_connections") > 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted backend is not used again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Hot keys written over TCP and read over UDP (and TCP): no read returns a value older
/// than the last write acknowledged before it was sent.
#[test]
fn tcp_writes_and_udp_reads_of_hot_keys_are_never_stale() {
    let ms: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let kvlb = Kvlb::serve(&ms.iter().collect::<Vec<_>>(), &["--hot-epoch", "200ms"]);
    let keys = ["h0", "h1", "h2"];
    let acked: Arc<Vec<AtomicU64>> = Arc::new(keys.iter().map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let vip = kvlb.vip;
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut c = Tcp::connect(vip);
            let mut version = 0u64;
            while !stop.load(Ordering::Relaxed) {
                version += 1;
                for (i, k) in keys.iter().enumerate() {
                    let v = version.to_string();
                    if c.ask(&format!("set {k} 0 0 {}\r\n{v}\r\n", v.len())) == "STORED\r\n" {
                        acked[i].fetch_max(version, Ordering::SeqCst);
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let readers: Vec<_> = (0..3)
        .map(|r| {
            let (acked, stop) = (acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let udp = UdpClient::new(vip);
                let mut tcp = Tcp::connect(vip);
                let (mut reads, mut stale) = (0u64, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    for (i, k) in keys.iter().enumerate() {
                        let floor = acked[i].load(Ordering::SeqCst);
                        let v = if r < 2 {
                            udp.get(k).flatten()
                        } else {
                            let reply = tcp.ask(&format!("get {k}\r\n"));
                            reply
                                .split("\r\n")
                                .nth(1)
                                .filter(|_| reply.starts_with("VALUE"))
                                .map(str::to_string)
                        };
                        if let Some(v) = v {
                            reads += 1;
                            let v: u64 = v.parse().unwrap();
                            if v < floor {
                                stale.push((k.to_string(), v, floor));
                            }
                        }
                    }
                }
                (reads, stale)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let mut total = 0;
    for r in readers {
        let (reads, stale) = r.join().unwrap();
        total += reads;
        assert!(
            stale.is_empty(),
            "stale reads: {:?}",
            &stale[..stale.len().min(10)]
        );
    }
    assert!(total > 1000, "only {total} reads");
}

/// kvbench's TCP client through kvlb: a skewed, pipelined mix of multi-gets and sets of
/// values from 32 bytes to 20 KB, every value checked: no error, timeout, stale or corrupt
/// value.
#[test]
fn kvbench_over_tcp_through_kvlb() {
    let ms: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let kvlb = Kvlb::serve(&ms.iter().collect::<Vec<_>>(), &["--hot-epoch", "200ms"]);
    let out = std::process::Command::new(workspace_bin::kvbench())
        .args(["--server", &kvlb.vip.to_string(), "--proto", "tcp"])
        .args(["--duration", "2", "--keys", "500", "--dist", "zipf:1.2"])
        .args(["--depth", "8", "--multiget", "3", "--get-ratio", "0.8"])
        .args(["--value-size", "uniform:32,20000", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let n = |p: &str| v.pointer(p).and_then(serde_json::Value::as_u64).unwrap();
    assert!(n("/requests") > 500, "{}", n("/requests"));
    assert_eq!((n("/errors"), n("/timeouts")), (0, 0));
    assert!(n("/validation/checked") > 100);
    assert_eq!(
        (n("/validation/stale"), n("/validation/corrupt")),
        (0, 0),
        "{}",
        v["validation"]
    );
}

/// A backend connection that fails with requests outstanding: each is answered
/// `SERVER_ERROR`, in order, and the next connection carries on. The backend is a fake on
/// loopback: its first TCP connection reads two gets and closes; later ones answer every
/// get `END`; every connection answers kvlb's probes (`version`), and so does its UDP
/// socket.
#[test]
fn a_lost_backend_connection_answers_its_requests_server_error() {
    use std::io::BufRead;
    let port = common::free_port();
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let udp = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let tcp_thread = {
        let (stop, accepted) = (stop.clone(), accepted.clone());
        std::thread::spawn(move || {
            listener.set_nonblocking(true).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let Ok((s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let n = accepted.fetch_add(1, Ordering::SeqCst);
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut w = s.try_clone().unwrap();
                    let mut r = std::io::BufReader::new(s);
                    let mut line = String::new();
                    let mut seen = 0;
                    while !stop.load(Ordering::Relaxed) {
                        line.clear();
                        match r.read_line(&mut line) {
                            Ok(0) => return,
                            Ok(_) => {}
                            Err(_) => continue,
                        }
                        let reply: &[u8] = if line.starts_with("version") {
                            b"VERSION fake\r\n" // kvlb's probes
                        } else {
                            seen += 1;
                            if n == 0 {
                                if seen == 2 {
                                    return; // closes with both gets unanswered
                                }
                                continue;
                            }
                            b"END\r\n"
                        };
                        if w.write_all(reply).is_err() {
                            return;
                        }
                    }
                });
            }
        })
    };
    let udp_thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            udp.set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = udp.recv_from(&mut buf) else {
                    continue;
                };
                let msg = String::from_utf8_lossy(&buf[8.min(n)..n]).into_owned();
                let reply = if msg.starts_with("version") {
                    "VERSION fake\r\n"
                } else if msg.starts_with("flush_all") {
                    "OK\r\n"
                } else {
                    continue;
                };
                let mut d = buf[..8].to_vec();
                d[4..8].copy_from_slice(&[0, 0, 0, 1]);
                d.extend_from_slice(reply.as_bytes());
                let _ = udp.send_to(&d, from);
            }
        })
    };
    struct Stop(Arc<AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let stopper = Stop(stop.clone());
    let kvlb = Kvlb::serve_addrs(
        &[SocketAddrV4::new([127, 0, 0, 1].into(), port)],
        &["--backend-conns", "1", "--probe-interval", "50ms"],
    );
    let mut c = Tcp::connect(kvlb.vip);
    c.send(b"get a\r\nget b\r\n");
    assert!(c.reply().starts_with("SERVER_ERROR"));
    assert!(c.reply().starts_with("SERVER_ERROR"));
    // Re-established: the next connection answers (once kvlb has the backend up again).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = c.ask("get c\r\n");
        if r == "END\r\n" {
            break;
        }
        assert!(r.starts_with("SERVER_ERROR"), "{r}");
        assert!(
            Instant::now() < deadline,
            "the backend connection is not re-established"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(accepted.load(Ordering::SeqCst) >= 2);
    drop(kvlb);
    drop(stopper);
    tcp_thread.join().unwrap();
    udp_thread.join().unwrap();
}

/// The TCP counters kvlb logs when it stops.
fn tcp_counters(kvlb: Kvlb) -> serde_json::Value {
    let log = kvlb.proc.terminate();
    let line = log
        .lines()
        .find_map(|l| l.split_once("kvlb serve: TCP ").map(|(_, j)| j.to_string()))
        .unwrap_or_else(|| panic!("no TCP counters in kvlb's log:\n{log}"));
    assert!(!log.contains("panicked"), "{log}");
    serde_json::from_str(&line).unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A client that pipelines large gets without reading gets backpressure: kvlb stops reading
/// it instead of buffering every reply, and serves it all once it reads.
#[test]
fn a_client_that_does_not_read_gets_backpressure_not_unbounded_buffers() {
    let m = Memcached::start();
    // 128 outstanding 500 KB replies take longer than the default 250 ms to come back from
    // one backend connection in a debug build: see the README on --timeout over TCP.
    let kvlb = Kvlb::serve(&[&m], &["--timeout", "5s"]);
    let mut c = Tcp::connect(kvlb.vip);
    let value = vec![b'v'; 500_000];
    c.send(format!("set big 0 0 {}\r\n", value.len()).as_bytes());
    c.send(&value);
    c.send(b"\r\n");
    assert_eq!(c.reply(), "STORED\r\n");
    let before = rss_kib(kvlb.proc.pid());
    // 600 replies of 500 KB: 300 MB if kvlb buffered them all.
    let n = 600;
    let req = "get big\r\n".repeat(n);
    let mut w = c.s.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(req.as_bytes()).unwrap());
    std::thread::sleep(Duration::from_secs(2));
    let grown = rss_kib(kvlb.proc.pid()).saturating_sub(before);
    assert!(
        grown < 150 * 1024,
        "kvlb grew by {grown} KiB with a client not reading"
    );
    let mut want = format!("VALUE big 0 {}\r\n", value.len()).into_bytes();
    want.extend_from_slice(&value);
    want.extend_from_slice(b"\r\nEND\r\n");
    for i in 0..n {
        assert!(c.reply().as_bytes() == want.as_slice(), "reply {i}");
    }
    writer.join().unwrap();
    drop(c);
    let counters = tcp_counters(kvlb);
    assert!(counters["backpressure"].as_u64().unwrap() > 0, "{counters}");
}

/// --max-conns, --idle-timeout, and a client gone mid-request: nothing left behind.
#[test]
fn connection_limits_idle_timeout_and_clients_gone_mid_request() {
    let m = Memcached::start();
    let kvlb = Kvlb::serve(&[&m], &["--max-conns", "2", "--idle-timeout", "500ms"]);
    let mut a = Tcp::connect(kvlb.vip);
    let mut b = Tcp::connect(kvlb.vip);
    assert!(a.ask("version\r\n").starts_with("VERSION"));
    assert!(b.ask("version\r\n").starts_with("VERSION"));
    // A third is told and closed.
    let mut third = Tcp::connect(kvlb.vip);
    let mut got = String::new();
    third.s.read_to_string(&mut got).unwrap();
    assert_eq!(got, "ERROR Too many open connections\r\n");
    // Gone mid-request: half a set, half a value; then mid-pipeline.
    a.send(b"set k 0 0 100\r\nabc");
    drop(a);
    b.send(b"get k\r\nset k2 0 0 3\r\nxyz\r\nget k2\r\nget k2\r\n");
    drop(b);
    std::thread::sleep(Duration::from_millis(300));
    // The slots are free again, and an idle connection is closed after --idle-timeout.
    let mut c = Tcp::connect(kvlb.vip);
    assert_eq!(c.ask("get k\r\n"), "END\r\n");
    assert_eq!(c.ask("get k2\r\n"), "VALUE k2 0 3\r\nxyz\r\nEND\r\n");
    let t = Instant::now();
    let mut rest = Vec::new();
    assert_eq!(c.s.read_to_end(&mut rest).unwrap(), 0);
    let idle = t.elapsed();
    assert!(
        idle >= Duration::from_millis(400) && idle < Duration::from_secs(3),
        "closed after {idle:?}"
    );
    let counters = tcp_counters(kvlb);
    assert_eq!(counters["accepted"], 3, "{counters}");
    assert_eq!(counters["closed"], 3, "{counters}");
    assert_eq!(counters["refused"], 1, "{counters}");
    assert_eq!(counters["idle_closed"], 1, "{counters}");
}

/// Hot-key handling sees TCP requests: a key read hot over TCP alone is detected,
/// replicated to every server and answered from kvlb's cache without reaching a server; a
/// write over TCP is seen at once over TCP and UDP.
#[test]
fn a_key_hot_over_tcp_is_replicated_cached_and_kept_fresh() {
    let ms: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let kvlb = hot_key_over_tcp(&ms, &[], false);
    // A write over TCP is seen at once over UDP too.
    let mut c = Tcp::connect(kvlb.vip);
    assert_eq!(c.ask("set hot 0 0 2\r\nv3\r\n"), "STORED\r\n");
    let udp = UdpClient::new(kvlb.vip);
    for _ in 0..100 {
        assert_eq!(c.ask("get hot\r\n"), "VALUE hot 0 2\r\nv3\r\nEND\r\n");
        assert_eq!(udp.get("hot"), Some(Some("v3".to_string())));
    }
}

/// memcached's defaults (UDP off): kvlb's own requests (the replication fetch, the copies,
/// the probes) go over its backend connections, so a hot key is still replicated to
/// every replica, cached, and kept fresh.
#[test]
fn with_tcp_only_backends_a_hot_key_is_still_replicated() {
    let ms: Vec<Memcached> = (0..3).map(|_| Memcached::start_tcp_only()).collect();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("kvlb.jsonl");
    let kvlb = hot_key_over_tcp(&ms, &["--stats-json", json.to_str().unwrap()], true);
    let log = kvlb.proc.terminate();
    assert!(!log.contains("panicked"), "{log}");
    let stats = last_report(&json);
    // The TCP counters are in the stats report (and on its human line).
    assert!(
        stats["tcp"]["requests"].as_u64().unwrap() >= 4000,
        "{}",
        stats["tcp"]
    );
    assert!(stats["tcp"]["accepted"].as_u64().unwrap() >= 1);
    assert!(
        log.lines()
            .any(|l| l.contains("drops 0  tcp ") && l.ends_with(" conns")),
        "{log}"
    );
    let r = &stats["replication"];
    assert!(r["fetches"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["replica_acks"].as_u64().unwrap() >= 2, "{r}");
    // Nothing went as a datagram to a server that has no UDP socket.
    assert!(
        stats["backends"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["up"] == true && b["timeouts"] == 0),
        "{}",
        stats["backends"]
    );
}

/// The last line of a `--stats-json` file (the final report).
fn last_report(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    let line = text.lines().last().expect("a final report");
    serde_json::from_str(line).unwrap()
}

/// A key made hot over TCP (half of 4,000 pipelined gets) is copied to every one of
/// `ms` (two replicas besides its owner), then served from kvlb's cache, and a write
/// over TCP is read back at once. Returns the kvlb serving. `tcp_only`: the servers have
/// no UDP (readiness is checked over TCP).
fn hot_key_over_tcp(ms: &[Memcached], extra: &[&str], tcp_only: bool) -> Kvlb {
    let mut args = vec![
        "--hot-epoch",
        "500ms",
        "--replicas",
        "2",
        "--cache-policy",
        "always",
    ];
    args.extend_from_slice(extra);
    let refs: Vec<&Memcached> = ms.iter().collect();
    let kvlb = if tcp_only {
        Kvlb::serve_tcp_only(&refs, &args)
    } else {
        Kvlb::serve(&refs, &args)
    };
    let mut c = Tcp::connect(kvlb.vip);
    assert_eq!(c.ask("set hot 0 0 2\r\nv1\r\n"), "STORED\r\n");
    // Pipelined: every other get is the hot key, the rest spread over 500 cold keys.
    let skewed = |c: &mut Tcp, n: usize| {
        let mut req = String::new();
        for i in 0..n {
            if i % 2 == 0 {
                req += "get hot\r\n";
            } else {
                req += &format!("get cold:{}\r\n", i % 500);
            }
        }
        c.send(req.as_bytes());
        for i in 0..n {
            let r = c.reply();
            if i % 2 == 0 {
                assert_eq!(r, "VALUE hot 0 2\r\nv1\r\nEND\r\n");
            }
        }
    };
    skewed(&mut c, 4000);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ms.iter().all(|m| m.get("hot").as_deref() == Some("v1")) {
        assert!(
            Instant::now() < deadline,
            "the hot key was not replicated everywhere"
        );
        skewed(&mut c, 400);
        std::thread::sleep(Duration::from_millis(100));
    }
    // Cached: gets of the hot key no longer reach the servers.
    let before: u64 = ms.iter().map(|m| m.stat("cmd_get")).sum();
    c.send("get hot\r\n".repeat(500).as_bytes());
    for _ in 0..500 {
        assert_eq!(c.reply(), "VALUE hot 0 2\r\nv1\r\nEND\r\n");
    }
    let after: u64 = ms.iter().map(|m| m.stat("cmd_get")).sum();
    assert!(
        after - before < 50,
        "{} gets reached the servers",
        after - before
    );
    eprintln!(
        "hot over TCP: on every server; {} of 500 gets of it reached a server",
        after - before
    );
    // A write over TCP is seen at once.
    assert_eq!(c.ask("set hot 0 0 2\r\nv2\r\n"), "STORED\r\n");
    for _ in 0..100 {
        assert_eq!(c.ask("get hot\r\n"), "VALUE hot 0 2\r\nv2\r\nEND\r\n");
    }
    kvlb
}

/// memcached's defaults (UDP off), a backend that stops answering (SIGSTOP: a partition,
/// its data kept): kvlb routes around it, its probes go over the backend connections,
/// and when it answers again it is flushed (over TCP) before kvlb routes to it, so no read
/// returns the value it held from before.
#[test]
fn with_tcp_only_backends_a_silent_backend_is_routed_around_and_rejoins_flushed() {
    let ms: Vec<Memcached> = (0..3).map(|_| Memcached::start_tcp_only()).collect();
    let kvlb = Kvlb::serve_tcp_only(
        &ms.iter().collect::<Vec<_>>(),
        &[
            "--timeout",
            "100ms",
            "--down-after",
            "2",
            "--probe-interval",
            "100ms",
            "--no-hotkeys",
        ],
    );
    let on0 = common::keys_on(&ms, 0, "p", 20);
    let mut c = Tcp::connect(kvlb.vip);
    for k in &on0 {
        assert_eq!(c.ask(&format!("set {k} 0 0 3\r\nold\r\n")), "STORED\r\n");
    }
    ms[0].proc.signal("-STOP");
    // Stopped for sure (the signal takes hold when the process next runs).
    let stat = format!("/proc/{}/stat", ms[0].proc.pid());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&stat).is_ok_and(|s| s.contains(") T ")) {
        assert!(Instant::now() < deadline, "memcached did not stop");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Served again (by the next server on the ring: a miss) within a bounded time; a get
    // left waiting on the silent server is answered SERVER_ERROR (or with its value if
    // the server read it before it stopped: still the latest). A fresh connection per
    // round, so no round waits behind an earlier one.
    let gets: String = on0.iter().map(|k| format!("get {k}\r\n")).collect();
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let mut c = Tcp::connect(kvlb.vip);
        c.send(gets.as_bytes());
        let replies: Vec<String> = on0.iter().map(|_| c.reply()).collect();
        assert!(
            replies.iter().zip(&on0).all(|(r, k)| r == "END\r\n"
                || r.starts_with("SERVER_ERROR")
                || *r == format!("VALUE {k} 0 3\r\nold\r\nEND\r\n")),
            "{replies:?}"
        );
        if replies.iter().all(|r| r == "END\r\n") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "keys of the silent server not served within 8 s: {replies:?}"
        );
    }
    let mut c = Tcp::connect(kvlb.vip);
    for k in &on0 {
        assert_eq!(c.ask(&format!("set {k} 0 0 3\r\nnew\r\n")), "STORED\r\n");
    }
    ms[0].proc.signal("-CONT");
    let deadline = Instant::now() + Duration::from_secs(8);
    let read_back = |c: &mut Tcp| {
        c.send(gets.as_bytes());
        for k in &on0 {
            let r = c.reply();
            assert!(
                r == "END\r\n" || r == format!("VALUE {k} 0 3\r\nnew\r\nEND\r\n"),
                "{k}: {r} (the rejoining server's old value, or worse)"
            );
        }
    };
    while ms[0].stat("cmd_flush") == 0 {
        read_back(&mut c);
        assert!(
            Instant::now() < deadline,
            "the rejoining backend was not flushed within 8 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Routed to again: its keys are read from it (misses), never "old".
    let before = ms[0].stat("cmd_get");
    let deadline = Instant::now() + Duration::from_secs(5);
    while ms[0].stat("cmd_get") < before + on0.len() as u64 {
        read_back(&mut c);
        assert!(
            Instant::now() < deadline,
            "the rejoined backend is not read again"
        );
    }
}
