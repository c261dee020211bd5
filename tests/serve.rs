//! `kvlb serve` in front of real memcached servers on loopback.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Kvlb, Memcached, UdpClient};
use kvlb::config::BackendSpec;
use kvlb::ring::KetamaRing;

const T: Duration = Duration::from_secs(2);

fn text(r: Option<Vec<u8>>) -> String {
    String::from_utf8_lossy(&r.expect("no reply")).into_owned()
}

#[test]
fn the_memcached_protocol_passes_through() {
    let ms: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let kvlb = Kvlb::serve(&ms.iter().collect::<Vec<_>>(), &[]);
    let c = UdpClient::new(kvlb.vip);
    let r = |m: &str| text(c.request(m.as_bytes(), T));

    assert!(r("version\r\n").starts_with("VERSION 1.6"));
    assert_eq!(r("set k1 7 0 2\r\nv1\r\n"), "STORED\r\n");
    assert_eq!(r("get k1\r\n"), "VALUE k1 7 2\r\nv1\r\nEND\r\n");
    assert_eq!(r("add k1 0 0 1\r\nx\r\n"), "NOT_STORED\r\n");
    assert_eq!(r("replace k1 0 0 2\r\nv2\r\n"), "STORED\r\n");
    assert_eq!(r("append k1 0 0 1\r\na\r\n"), "STORED\r\n");
    assert_eq!(r("prepend k1 0 0 1\r\np\r\n"), "STORED\r\n");
    assert_eq!(r("get k1\r\n"), "VALUE k1 0 4\r\npv2a\r\nEND\r\n");
    let gets = r("gets k1\r\n");
    let cas: u64 = gets.split_whitespace().nth(4).unwrap().parse().unwrap();
    assert_eq!(
        r(&format!("cas k1 0 0 1 {}\r\nc\r\n", cas + 1000)),
        "EXISTS\r\n"
    );
    assert_eq!(r(&format!("cas k1 0 0 1 {cas}\r\nc\r\n")), "STORED\r\n");
    assert_eq!(r("set n 0 0 2\r\n10\r\n"), "STORED\r\n");
    assert_eq!(r("incr n 5\r\n"), "15\r\n");
    assert_eq!(r("decr n 20\r\n"), "0\r\n");
    assert_eq!(r("touch n 100\r\n"), "TOUCHED\r\n");
    // memcached keeps the length of a decremented value, padding with spaces.
    assert_eq!(r("gat 200 n\r\n"), "VALUE n 0 2\r\n0 \r\nEND\r\n");
    assert_eq!(r("delete n\r\n"), "DELETED\r\n");
    assert_eq!(r("delete n\r\n"), "NOT_FOUND\r\n");
    assert_eq!(r("get n\r\n"), "END\r\n");
    assert_eq!(r("ms mk 2\r\nhi\r\n"), "HD\r\n");
    assert_eq!(r("mg mk v\r\n"), "VA 2\r\nhi\r\n");
    assert!(r("stats\r\n").contains("STAT pid"));

    // A multi-get over keys on different servers comes back whole, ending with END.
    for i in 0..20 {
        assert_eq!(r(&format!("set m{i} 0 0 3\r\nv{i:02}\r\n")), "STORED\r\n");
    }
    let keys: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    let reply = r(&format!("get {} absent\r\n", keys.join(" ")));
    assert!(reply.ends_with("END\r\n"));
    assert_eq!(reply.matches("END\r\n").count(), 1, "{reply}");
    for i in 0..20 {
        assert!(
            reply.contains(&format!("VALUE m{i} 0 3\r\nv{i:02}\r\n")),
            "m{i} missing"
        );
    }

    // Writes with noreply get no reply, but happen.
    assert!(c
        .request(b"set q 0 0 1 noreply\r\nq\r\n", Duration::from_millis(300))
        .is_none());
    assert_eq!(r("get q\r\n"), "VALUE q 0 1\r\nq\r\nEND\r\n");

    // flush_all reaches every server.
    assert_eq!(r("flush_all\r\n"), "OK\r\n");
    std::thread::sleep(Duration::from_millis(100));
    for m in &ms {
        assert_eq!(m.stat("curr_items"), 0);
    }
    // Garbage gets no reply (memcached would answer ERROR; kvlb counts and drops it).
    assert!(c
        .request(b"bogus\r\n", Duration::from_millis(300))
        .is_none());
}

#[test]
fn keys_land_where_libmemcached_puts_them() {
    let ms: Vec<Memcached> = (0..4).map(|_| Memcached::start()).collect();
    let kvlb = Kvlb::serve(&ms.iter().collect::<Vec<_>>(), &["--no-hotkeys"]);
    let specs: Vec<BackendSpec> = ms
        .iter()
        .map(|m| m.addr().to_string().parse().unwrap())
        .collect();
    let ring = KetamaRing::from_backends(&specs, &[true; 4]).unwrap();
    let c = UdpClient::new(kvlb.vip);
    for i in 0..200 {
        let key = format!("place:{i}");
        assert_eq!(c.set(&key, "x").as_deref(), Some("STORED\r\n"));
        let owner = ring.server_for_key(key.as_bytes()).unwrap();
        for (j, m) in ms.iter().enumerate() {
            assert_eq!(m.get(&key).is_some(), j == owner, "{key} on server {j}");
        }
    }
}

/// Sends `n` gets: every other one for `hot`, the rest spread over `spread` cold keys.
fn skewed_gets(c: &UdpClient, hot: &str, spread: usize, n: usize) {
    for i in 0..n {
        let key = if i % 2 == 0 {
            hot.to_string()
        } else {
            format!("cold:{}", i % spread)
        };
        c.get(&key).expect("reply");
    }
}

// The detector needs ⌈32/s⌉ requests in a window before any key can turn hot (with 3
// backends s = 1/48: 1,536), more than one sequential client sends in a 500 ms epoch
// against a debug build; the window then stretches over further epochs until it holds
// enough. (Before it did, this test failed whenever the client was that slow.)
#[test]
fn a_hot_key_is_cached_replicated_and_kept_fresh() {
    let ms: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let kvlb = Kvlb::serve(
        &ms.iter().collect::<Vec<_>>(),
        &[
            "--hot-epoch",
            "500ms",
            "--replicas",
            "2",
            "--cache-policy",
            "always",
        ],
    );
    let c = UdpClient::new(kvlb.vip);
    assert_eq!(c.set("hot", "v1").as_deref(), Some("STORED\r\n"));
    skewed_gets(&c, "hot", 500, 4000);
    // Detection closes at an epoch boundary and replication is asynchronous (fetch from the
    // primary, then a write per replica): keep the key hot until every server holds it, on
    // a deadline generous enough for a loaded CI machine.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        skewed_gets(&c, "hot", 500, 400);
        if ms.iter().all(|m| m.get("hot").as_deref() == Some("v1"))
            || std::time::Instant::now() > deadline
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // Replicated: every server holds the value now.
    for m in &ms {
        assert_eq!(m.get("hot").as_deref(), Some("v1"), "replica on {}", m.port);
    }
    // Cached: gets of the hot key no longer reach the servers.
    let before: u64 = ms.iter().map(|m| m.stat("cmd_get")).sum();
    for _ in 0..500 {
        assert_eq!(c.get("hot"), Some(Some("v1".to_string())));
    }
    let after: u64 = ms.iter().map(|m| m.stat("cmd_get")).sum();
    // Our own direct `get`s above and stats calls are not cmd_get-free: allow a few.
    assert!(
        after - before < 50,
        "{} gets reached the servers",
        after - before
    );

    // A write through kvlb is seen at once, everywhere a read can go.
    assert_eq!(c.set("hot", "v2").as_deref(), Some("STORED\r\n"));
    for _ in 0..200 {
        assert_eq!(c.get("hot"), Some(Some("v2".to_string())));
    }
    assert_eq!(
        c.request(b"delete hot\r\n", T).as_deref(),
        Some(&b"DELETED\r\n"[..])
    );
    for _ in 0..50 {
        assert_eq!(c.get("hot"), Some(None));
    }
}

/// Concurrent writers and readers of a few hot keys: no read may return a value older than
/// the last set acknowledged before the read was sent.
#[test]
fn reads_never_go_back_in_time() {
    let ms: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let kvlb = Kvlb::serve(&ms.iter().collect::<Vec<_>>(), &["--hot-epoch", "200ms"]);
    let keys = ["h0", "h1", "h2"];
    let acked: Arc<Vec<AtomicU64>> = Arc::new(keys.iter().map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let vip = kvlb.vip;
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let c = UdpClient::new(vip);
            let mut version = 0u64;
            while !stop.load(Ordering::Relaxed) {
                version += 1;
                for (i, k) in keys.iter().enumerate() {
                    if c.set(k, &version.to_string()).as_deref() == Some("STORED\r\n") {
                        acked[i].fetch_max(version, Ordering::SeqCst);
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (acked, stop) = (acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let c = UdpClient::new(vip);
                let (mut reads, mut stale) = (0u64, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    for (i, k) in keys.iter().enumerate() {
                        let floor = acked[i].load(Ordering::SeqCst);
                        if let Some(Some(v)) = c.get(k) {
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

#[test]
fn a_dead_backend_is_routed_around_and_rejoins_flushed() {
    let mut ms: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let kvlb = Kvlb::serve(
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
    let c = UdpClient::new(kvlb.vip);
    let specs: Vec<BackendSpec> = ms
        .iter()
        .map(|m| m.addr().to_string().parse().unwrap())
        .collect();
    let ring = KetamaRing::from_backends(&specs, &[true; 3]).unwrap();
    let on0: Vec<String> = (0..400)
        .map(|i| format!("f{i}"))
        .filter(|k| ring.server_for_key(k.as_bytes()) == Some(0))
        .take(20)
        .collect();
    for k in &on0 {
        assert_eq!(c.set(k, "old").as_deref(), Some("STORED\r\n"));
    }
    let dead_port = ms[0].port;
    drop(ms.remove(0));

    // Within a bounded time every key of the dead server is served again (by the next
    // server on the ring: a miss, then writable).
    let start = Instant::now();
    let mut served = false;
    while start.elapsed() < Duration::from_secs(3) {
        if on0.iter().all(|k| c.get(k).is_some()) {
            served = true;
            break;
        }
    }
    assert!(served, "keys of the dead server not served within 3 s");
    for k in &on0 {
        assert_eq!(c.get(k), Some(None), "moved keys start empty");
        assert_eq!(c.set(k, "new").as_deref(), Some("STORED\r\n"));
    }

    // It comes back holding an old value; kvlb flushes it before routing to it again.
    let back = Memcached::start_on(dead_port).expect("memcached did not restart");
    back.set(&on0[0], "stale");
    // If kvlb's probe already flushed it before the write above landed (a race with the
    // test, not a fault), the stale value legitimately survives: only check the order
    // where the flush came after it.
    let stale_planted_first = back.stat("cmd_flush") == 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) && back.stat("cmd_flush") == 0 {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        back.stat("cmd_flush"),
        1,
        "rejoining backend was not flushed"
    );
    std::thread::sleep(Duration::from_millis(200));
    if stale_planted_first {
        // Keys are back on their ketama server, which is empty: misses, never "stale".
        for k in &on0 {
            assert_ne!(c.get(k), Some(Some("stale".to_string())));
        }
    } else {
        eprintln!("note: kvlb flushed the rejoining server before the test's stale write");
        back.tcp(format!("delete {}\r\n", on0[0]).as_bytes());
    }
    assert_eq!(c.set(&on0[0], "fresh").as_deref(), Some("STORED\r\n"));
    assert_eq!(back.get(&on0[0]).as_deref(), Some("fresh"));

    // The fallback server still had the values written to it during the outage ("new");
    // kvlb deleted them when the owner rejoined. So when the owner dies a second time and
    // its keys fall back again, no read returns those outage-era values.
    drop(back);
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < Duration::from_secs(3) {
        seen = on0.iter().map(|k| c.get(k)).collect();
        if seen.iter().all(|r| r.is_some()) {
            break;
        }
    }
    for (k, r) in on0.iter().zip(&seen) {
        assert_ne!(
            r.as_ref().and_then(|v| v.as_deref()),
            Some("new"),
            "{k}: a value from the first outage came back after the second"
        );
    }
}
