//! The core on canned frames: no I/O, a hand-driven clock.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::*;
use crate::wire::{arp::Operation, ethernet, ArpRepr, McHeader, UdpEndpoints, UdpFrame};

const KVLB_MAC: Mac = [2, 0, 0, 0, 0, 0xaa];
const CLIENT_MAC: Mac = [2, 0, 0, 0, 0, 0x01];
const BACKEND_MAC: Mac = [2, 0, 0, 0, 0, 0xb0];
const VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 11211);
const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 100), 5555);
/// A client inside `--trusted` in the anti-amplification tests (`CLIENT` is outside).
const TRUSTED: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 200), 6666);

fn backend(i: u8) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, i), 11211)
}

fn ms(n: u64) -> Instant {
    Instant::from_nanos(1 + n * 1_000_000)
}

fn core_with(extra: &[&str]) -> Core {
    let mut args: Vec<String> = vec!["--vip".into(), VIP.to_string()];
    for i in 1..=3 {
        args.push("--backend".into());
        args.push(backend(i).to_string());
        args.push("--neighbor".into());
        args.push(format!("{}=02:00:00:00:00:b0", backend(i).ip()));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
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

/// A core where a key with half the requests turns hot, is not replicated, and is always
/// answered from the cache once learned; `extra` options after those.
fn hot_cache_core(extra: &[&str]) -> Core {
    let mut args = vec![
        "--hot-support",
        "0.2",
        "--hot-error",
        "0.02",
        "--replicas",
        "0",
        "--cache-policy",
        "always",
    ];
    args.extend_from_slice(extra);
    core_with(&args)
}

fn client_ep(src: SocketAddrV4) -> UdpEndpoints {
    UdpEndpoints {
        src_mac: CLIENT_MAC,
        dst_mac: KVLB_MAC,
        vlan: None,
        inner_vlan: None,
        src_ip: *src.ip(),
        dst_ip: *VIP.ip(),
        src_port: src.port(),
        dst_port: VIP.port(),
        ttl: 64,
    }
}

fn request_from(src: SocketAddrV4, rid: u16, msg: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let n = client_ep(src)
        .emit_message(&mut buf, 1, McHeader::single(rid), msg)
        .unwrap();
    buf.truncate(n);
    buf
}

fn request(rid: u16, msg: &[u8]) -> Vec<u8> {
    request_from(CLIENT, rid, msg)
}

/// The backend's reply to a frame kvlb forwarded to it.
fn reply_to(forwarded: &[u8], msg: &[u8]) -> Vec<u8> {
    reply_part(forwarded, 0, 1, msg)
}

/// Datagram `sequence` of a `count`-datagram reply to a frame kvlb forwarded.
fn reply_part(forwarded: &[u8], sequence: u16, count: u16, msg: &[u8]) -> Vec<u8> {
    let Ok(Classified::Udp(u)) = wire::classify(forwarded) else {
        panic!("not UDP")
    };
    let header = McHeader::parse(u.payload(forwarded)).unwrap();
    let mut ep = u.endpoints().reversed();
    ep.src_mac = BACKEND_MAC;
    ep.dst_mac = KVLB_MAC;
    let mut buf = vec![0u8; 2048];
    let header = McHeader {
        request_id: header.request_id,
        sequence,
        count,
        reserved: 0,
    };
    let n = ep.emit_message(&mut buf, 9, header, msg).unwrap();
    buf.truncate(n);
    buf
}

fn udp(frame: &[u8]) -> UdpFrame {
    match wire::classify(frame) {
        Ok(Classified::Udp(u)) => u,
        other => panic!("not a valid UDP frame: {other:?}"),
    }
}

fn message(frame: &[u8]) -> Vec<u8> {
    udp(frame).payload(frame)[8..].to_vec()
}

/// The opaque token (`O<hex>`) on the first line of a meta request kvlb emitted.
fn opaque_of(frame: &[u8]) -> String {
    let msg = message(frame);
    let line = msg.split(|&b| b == b'\r').next().unwrap();
    let tok = line
        .split(|&b| b == b' ')
        .find(|t| t.first() == Some(&b'O'))
        .expect("an opaque flag");
    String::from_utf8(tok.to_vec()).unwrap()
}

/// Sends one GET of `k` that kvlb forwards and no backend answers.
fn lost_get(core: &mut Core, now: Instant, rid: u16) {
    let mut f = request(rid, b"get k\r\n");
    assert_eq!(
        core.process_frame(now, PortId(0), &mut f),
        Verdict::Out(PortId(0))
    );
}

/// Drives one GET through kvlb and a backend that answers `value`; returns the reply frame.
fn get_via_backend(core: &mut Core, now: Instant, rid: u16, key: &str, value: &str) -> Vec<u8> {
    get_via_backend_from(core, now, CLIENT, rid, key, value)
}

/// [`get_via_backend`] from `src`.
fn get_via_backend_from(
    core: &mut Core,
    now: Instant,
    src: SocketAddrV4,
    rid: u16,
    key: &str,
    value: &str,
) -> Vec<u8> {
    let mut f = request_from(src, rid, format!("get {key}\r\n").as_bytes());
    assert_eq!(
        core.process_frame(now, PortId(0), &mut f),
        Verdict::Out(PortId(0))
    );
    let mut r = reply_to(
        &f,
        format!("VALUE {key} 0 {}\r\n{value}\r\nEND\r\n", value.len()).as_bytes(),
    );
    assert_eq!(
        core.process_frame(now, PortId(0), &mut r),
        Verdict::Out(PortId(0))
    );
    r
}

#[test]
fn a_request_goes_to_its_ketama_server_and_the_reply_back_to_the_client() {
    let mut core = core_with(&["--no-hotkeys"]);
    let mut f = request(0x1234, b"get alpha\r\n");
    assert_eq!(
        core.process_frame(ms(0), PortId(0), &mut f),
        Verdict::Out(PortId(0))
    );
    // Valid checksums after the rewrite (classify verifies them), addressed to the ring's
    // server from kvlb's address and a source port, with kvlb's request id.
    let u = udp(&f);
    let owner = core.ring.server_for_key(b"alpha").unwrap();
    assert_eq!(
        SocketAddrV4::new(u.dst_ip, u.dst_port),
        backend(owner as u8 + 1)
    );
    assert_eq!(u.src_ip, *VIP.ip(), "local ip defaults to the VIP's");
    assert!(core.source_ports.contains(&u.src_port));
    assert_eq!((u.eth.src, u.eth.dst), (KVLB_MAC, BACKEND_MAC));
    assert_eq!(message(&f), b"get alpha\r\n");

    let mut r = reply_to(&f, b"END\r\n");
    assert_eq!(
        core.process_frame(ms(1), PortId(0), &mut r),
        Verdict::Out(PortId(0))
    );
    let u = udp(&r);
    assert_eq!(SocketAddrV4::new(u.dst_ip, u.dst_port), CLIENT);
    assert_eq!(SocketAddrV4::new(u.src_ip, u.src_port), VIP);
    assert_eq!((u.eth.src, u.eth.dst), (KVLB_MAC, CLIENT_MAC));
    assert_eq!(McHeader::parse(u.payload(&r)).unwrap().request_id, 0x1234);
    assert!(core.is_idle());
    // The same reply again matches nothing.
    let mut again = reply_to(&f, b"END\r\n");
    assert_eq!(
        core.process_frame(ms(2), PortId(0), &mut again),
        Verdict::Drop(DropReason::UnmatchedResponse)
    );
}

#[test]
fn a_hot_key_is_answered_in_place_and_a_write_invalidates_it() {
    let mut core = core_with(&[
        "--hot-support",
        "0.2",
        "--hot-error",
        "0.02",
        "--replicas",
        "0",
    ]);
    // Make "hot" hot: half of 2000 requests.
    for i in 0..2000u16 {
        let key = if i % 2 == 0 {
            "hot".to_string()
        } else {
            format!("c{i}")
        };
        get_via_backend(&mut core, ms(u64::from(i) / 10), i, &key, "v1");
    }
    core.on_tick(ms(300));
    // One more miss learns the value (it was hot before this request left).
    get_via_backend(&mut core, ms(301), 9000, "hot", "v1");
    let mut f = request(9001, b"get hot\r\n");
    assert_eq!(
        core.process_frame(ms(302), PortId(0), &mut f),
        Verdict::Out(PortId(0))
    );
    let u = udp(&f);
    assert_eq!(
        SocketAddrV4::new(u.dst_ip, u.dst_port),
        CLIENT,
        "answered by kvlb"
    );
    assert_eq!(message(&f), b"VALUE hot 0 2\r\nv1\r\nEND\r\n");
    assert_eq!(McHeader::parse(u.payload(&f)).unwrap().request_id, 9001);
    assert_eq!(
        core.stats.cache.l1_hits, 0,
        "counters are snapshotted at report time"
    );
    assert_eq!(core.report(ms(303)).stats.cache.l1_hits, 1);

    // A set goes to the backend and drops the cached value before it leaves.
    let mut s = request(9002, b"set hot 0 0 2\r\nv2\r\n");
    assert_eq!(
        core.process_frame(ms(304), PortId(0), &mut s),
        Verdict::Out(PortId(0))
    );
    let mut g = request(9003, b"get hot\r\n");
    core.process_frame(ms(305), PortId(0), &mut g);
    assert_ne!(
        udp(&g).dst_ip,
        *CLIENT.ip(),
        "no stale hit while the write is in flight"
    );
    // The GET sent while the write was in flight must not be learned, even after the ack.
    let mut ack = reply_to(&s, b"STORED\r\n");
    core.process_frame(ms(306), PortId(0), &mut ack);
    let mut old = reply_to(&g, b"VALUE hot 0 2\r\nv1\r\nEND\r\n");
    core.process_frame(ms(307), PortId(0), &mut old);
    let mut g2 = request(9004, b"get hot\r\n");
    core.process_frame(ms(308), PortId(0), &mut g2);
    assert_ne!(
        udp(&g2).dst_ip,
        *CLIENT.ip(),
        "the overtaken reply was not learned"
    );
    assert!(core.report(ms(309)).stats.cache.stale_responses >= 1);
}

#[test]
fn arp_for_kvlb_is_answered_and_backends_are_resolved() {
    let cfg = Config::from_args([
        "--vip",
        &VIP.to_string(),
        "--backend",
        &backend(1).to_string(),
    ])
    .unwrap();
    let mut core = Core::new(
        &cfg,
        &[PortInfo {
            id: PortId(0),
            mac: KVLB_MAC,
        }],
    )
    .unwrap();
    // A request before the backend's MAC is known: dropped, and an ARP request goes out.
    let mut f = request(1, b"get k\r\n");
    assert_eq!(
        core.process_frame(ms(0), PortId(0), &mut f),
        Verdict::Drop(DropReason::NoNeighbor)
    );
    core.on_tick(ms(0));
    let mut out = vec![];
    core.drain_emitted(&mut |d, f| out.push((d, f.to_vec())));
    let arp = out
        .iter()
        .find_map(|(_, f)| match wire::classify(f) {
            Ok(Classified::Arp(a)) => Some(a),
            _ => None,
        })
        .expect("an ARP request");
    assert_eq!(arp.arp.operation, Operation::Request);
    assert_eq!(arp.arp.target_ip, *backend(1).ip());
    assert_eq!(arp.eth.dst, ethernet::BROADCAST);

    // The backend answers; now requests flow.
    let reply = ArpRepr {
        operation: Operation::Reply,
        sender_mac: BACKEND_MAC,
        sender_ip: *backend(1).ip(),
        target_mac: KVLB_MAC,
        target_ip: *VIP.ip(),
    };
    let mut buf = vec![0u8; 64];
    let n = wire::emit_arp(&mut buf, BACKEND_MAC, KVLB_MAC, None, &reply).unwrap();
    buf.truncate(n);
    assert_eq!(
        core.process_frame(ms(1), PortId(0), &mut buf),
        Verdict::Drop(DropReason::Arp)
    );
    let mut f = request(2, b"get k\r\n");
    assert_eq!(
        core.process_frame(ms(2), PortId(0), &mut f),
        Verdict::Out(PortId(0))
    );
    assert_eq!(
        f[0..6],
        BACKEND_MAC,
        "forwarded to the MAC the ARP reply gave"
    );

    // Someone asks who has the VIP: kvlb answers with its port's MAC.
    let who = ArpRepr {
        operation: Operation::Request,
        sender_mac: CLIENT_MAC,
        sender_ip: *CLIENT.ip(),
        target_mac: [0; 6],
        target_ip: *VIP.ip(),
    };
    let mut buf = vec![0u8; 64];
    let n = wire::emit_arp(&mut buf, CLIENT_MAC, ethernet::BROADCAST, None, &who).unwrap();
    buf.truncate(n);
    core.process_frame(ms(3), PortId(0), &mut buf);
    let mut out = vec![];
    core.drain_emitted(&mut |d, f| out.push((d, f.to_vec())));
    let Ok(Classified::Arp(a)) = wire::classify(&out[0].1) else {
        panic!("no ARP reply")
    };
    assert_eq!(
        (a.arp.operation, a.arp.sender_mac, a.arp.sender_ip),
        (Operation::Reply, KVLB_MAC, *VIP.ip())
    );
    assert_eq!(a.eth.dst, CLIENT_MAC);
}

#[test]
fn frames_that_are_not_kvlbs_pass_or_drop_as_configured() {
    let mut core = core_with(&[]);
    let mut other = request(1, b"get k\r\n");
    {
        let u = udp(&other);
        let mut w = u.rewrite(&mut other).unwrap();
        w.set_dst_ip(Ipv4Addr::new(192, 0, 2, 1));
    }
    let before = other.clone();
    assert_eq!(
        core.process_frame(ms(0), PortId(0), &mut other),
        Verdict::Next
    );
    assert_eq!(other, before, "passed on unchanged");
    let mut core = core_with(&["--other-traffic", "drop"]);
    assert_eq!(
        core.process_frame(ms(0), PortId(0), &mut other),
        Verdict::Drop(DropReason::NotForUs)
    );
    // Malformed frames are dropped by reason, whatever the setting.
    let mut bad = request(1, b"get k\r\n");
    bad[14 + 10] ^= 0xff; // IPv4 header checksum
    assert_eq!(
        core.process_frame(ms(0), PortId(0), &mut bad),
        Verdict::Drop(DropReason::Wire(wire::Error::BadIpChecksum))
    );
    let mut garbage = request(2, b"\x00\x01\x02 nonsense\r\n");
    assert!(matches!(
        core.process_frame(ms(0), PortId(0), &mut garbage),
        Verdict::Drop(DropReason::Proto(_))
    ));
    let r = core.report(ms(1));
    assert_eq!(r.stats.drops["bad_ip_checksum"], 1);
}

#[test]
fn admission_and_amplification_guards() {
    let mut core = core_with(&[
        "--allow",
        "10.0.0.0/24",
        "--rate-limit",
        "10",
        "--rate-burst",
        "2",
    ]);
    let outsider = SocketAddrV4::new(Ipv4Addr::new(10, 9, 9, 9), 1);
    let mut f = request_from(outsider, 1, b"get k\r\n");
    assert_eq!(
        core.process_frame(ms(0), PortId(0), &mut f),
        Verdict::Drop(DropReason::AclDenied)
    );
    for i in 0..2 {
        let mut f = request(i, b"get k\r\n");
        assert_eq!(
            core.process_frame(ms(0), PortId(0), &mut f),
            Verdict::Out(PortId(0))
        );
    }
    let mut f = request(3, b"get k\r\n");
    assert_eq!(
        core.process_frame(ms(0), PortId(0), &mut f),
        Verdict::Drop(DropReason::RateLimited)
    );

    // An untrusted source gets at most --unverified-reply-bytes per request.
    let mut core = core_with(&[
        "--unverified-reply-bytes",
        "100",
        "--trusted",
        "192.168.0.0/16",
    ]);
    let mut f = request(1, b"get big\r\n");
    core.process_frame(ms(0), PortId(0), &mut f);
    let big = "x".repeat(500);
    let mut r = reply_to(
        &f,
        format!("VALUE big 0 500\r\n{big}\r\nEND\r\n").as_bytes(),
    );
    assert_eq!(
        core.process_frame(ms(1), PortId(0), &mut r),
        Verdict::Drop(DropReason::AmplificationGuard)
    );
}

/// 2,000 GETs over 200 ms, every other one of `key` (the rest of 1,000 cold keys), each
/// answered `v` by its server: enough for `key` to turn hot at the next tick.
fn heat_up(core: &mut Core, key: &str) {
    for i in 0..2000u16 {
        let k = if i % 2 == 0 {
            key.to_string()
        } else {
            format!("c{i}")
        };
        get_via_backend(core, ms(u64::from(i) / 10), i, &k, "v");
    }
}

/// Makes `key` hot with GETs from `src` (half of 2,000, to 300 ms), then one more miss
/// learns `value` into L1 (at 301 ms).
fn make_hot(core: &mut Core, src: SocketAddrV4, key: &str, value: &str) {
    for i in 0..2000u16 {
        let k = if i % 2 == 0 {
            key.to_string()
        } else {
            format!("c{i}")
        };
        get_via_backend_from(core, ms(u64::from(i) / 10), src, i, &k, value);
    }
    core.on_tick(ms(300));
    get_via_backend_from(core, ms(301), src, 9000, key, value);
}

#[test]
fn a_reply_kvlb_writes_itself_leaves_from_its_own_mac() {
    // A GET to the VIP whose Ethernet destination is not kvlb's MAC (broadcast here; in a
    // service chain, whatever the previous hop wrote): the cache hit kvlb writes in its
    // place must still come from kvlb's MAC, as every forwarded reply does, not from the
    // request's destination (a broadcast source address is not even valid).
    let mut core = hot_cache_core(&[]);
    make_hot(&mut core, CLIENT, "hot", "v1");
    let mut f = request(1, b"get hot\r\n");
    f[0..6].copy_from_slice(&ethernet::BROADCAST);
    assert_eq!(
        core.process_frame(ms(302), PortId(0), &mut f),
        Verdict::Out(PortId(0))
    );
    assert_eq!(
        message(&f),
        b"VALUE hot 0 2\r\nv1\r\nEND\r\n",
        "a cache hit"
    );
    assert_eq!((udp(&f).eth.src, udp(&f).eth.dst), (KVLB_MAC, CLIENT_MAC));
}

/// UDP payload bytes of a frame, memcached frame header included: what the reply cap counts.
fn payload_len(frame: &[u8]) -> usize {
    udp(frame).payload(frame).len()
}

/// The amplification-guard drops counted so far.
fn guard_drops(core: &mut Core, now: Instant) -> u64 {
    let r = core.report(now);
    r.stats
        .drops
        .get("amplification_guard")
        .copied()
        .unwrap_or(0)
}

#[test]
fn a_multi_datagram_reply_to_an_untrusted_source_is_cut_at_the_cap() {
    // 2,525 message bytes in three datagrams of 908, 908 and 733 payload bytes (each with
    // its 8-byte frame header). A 2,000-byte cap lets the first two through (1,816 bytes)
    // and not the third; a trusted source gets all three.
    let msg = format!("VALUE big 0 2500\r\n{}\r\nEND\r\n", "v".repeat(2500)).into_bytes();
    let chunks: Vec<&[u8]> = msg.chunks(900).collect();
    assert_eq!(chunks.len(), 3);
    for (src, want) in [
        (CLIENT, vec![Some(908), Some(908), None]),
        (TRUSTED, vec![Some(908), Some(908), Some(733)]),
    ] {
        let mut core = core_with(&[
            "--no-hotkeys",
            "--unverified-reply-bytes",
            "2000",
            "--trusted",
            "10.0.0.200/32",
        ]);
        let mut f = request_from(src, 0x77, b"get big\r\n");
        assert_eq!(
            core.process_frame(ms(0), PortId(0), &mut f),
            Verdict::Out(PortId(0))
        );
        let mut got = vec![];
        for (seq, chunk) in (0u16..).zip(&chunks) {
            let mut r = reply_part(&f, seq, 3, chunk);
            match core.process_frame(ms(1), PortId(0), &mut r) {
                Verdict::Out(PortId(0)) => {
                    let u = udp(&r);
                    assert_eq!(SocketAddrV4::new(u.dst_ip, u.dst_port), src);
                    let header = McHeader::parse(u.payload(&r)).unwrap();
                    assert_eq!(
                        (header.request_id, header.sequence, header.count),
                        (0x77, seq, 3)
                    );
                    assert_eq!(message(&r), *chunk);
                    got.push(Some(payload_len(&r)));
                }
                Verdict::Drop(DropReason::AmplificationGuard) => got.push(None),
                other => panic!("datagram {seq}: {other:?}"),
            }
        }
        assert_eq!(got, want, "from {src}");
        assert!(
            core.is_idle(),
            "the last datagram ends the request, sent or not"
        );
        let dropped = want.iter().filter(|d| d.is_none()).count() as u64;
        assert_eq!(guard_drops(&mut core, ms(2)), dropped);
        let r = core.report(ms(2));
        assert_eq!((r.stats.frames_in, r.stats.frames_out), (4, 4 - dropped));
    }
}

#[test]
fn a_split_multi_get_is_capped_in_total_toward_an_untrusted_source() {
    let args = ["--no-hotkeys", "--trusted", "10.0.0.200/32"]; // the default cap: 1,400
                                                               // One six-byte key per backend.
    let probe = core_with(&args);
    let keys: Vec<String> = (0..3)
        .map(|b| {
            (0..1000)
                .map(|i| format!("key{i:03}"))
                .find(|k| probe.ring.server_for_key(k.as_bytes()) == Some(b))
                .unwrap()
        })
        .collect();
    // Each backend answers one 600-byte value: 20 + 600 + 2 bytes, then END (5), in a
    // 635-byte datagram. The first two parts to finish lose their END (630 bytes each);
    // the third would bring the total to 1,895, over the cap: it is dropped. Capped per
    // part instead, every part would pass.
    for (src, want) in [(CLIENT, vec![630, 630]), (TRUSTED, vec![630, 630, 635])] {
        let mut core = core_with(&args);
        let get = format!("get {}\r\n", keys.join(" "));
        let mut f = request_from(src, 0x55, get.as_bytes());
        assert_eq!(
            core.process_frame(ms(0), PortId(0), &mut f),
            Verdict::Drop(DropReason::Absorbed)
        );
        let mut parts = vec![];
        core.drain_emitted(&mut |_, f| parts.push(f.to_vec()));
        assert_eq!(parts.len(), 3, "one sub-request per backend");
        let (mut got, mut merged) = (vec![], vec![]);
        for p in &parts {
            let sub = String::from_utf8(message(p)).unwrap();
            let key = sub.strip_prefix("get ").unwrap().trim_end();
            let value = format!("VALUE {key} 0 600\r\n{}\r\n", "v".repeat(600));
            let mut r = reply_to(p, format!("{value}END\r\n").as_bytes());
            match core.process_frame(ms(1), PortId(0), &mut r) {
                Verdict::Out(PortId(0)) => {
                    let u = udp(&r);
                    assert_eq!(SocketAddrV4::new(u.dst_ip, u.dst_port), src);
                    got.push(payload_len(&r));
                    merged.extend(message(&r));
                }
                Verdict::Drop(DropReason::AmplificationGuard) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, want, "from {src}");
        let mut more = 0;
        core.drain_emitted(&mut |_, _| more += 1);
        assert_eq!(more, 0, "no END of its own after a dropped last part");
        assert!(core.is_idle());
        assert_eq!(guard_drops(&mut core, ms(2)), 3 - want.len() as u64);
        let r = core.report(ms(2));
        assert_eq!(r.stats.frames_out, 3 + want.len() as u64);
        if src == TRUSTED {
            let mut all: Vec<String> = keys
                .iter()
                .map(|k| format!("VALUE {k} 0 600\r\n{}\r\n", "v".repeat(600)))
                .collect();
            all.sort();
            let text = String::from_utf8(merged).unwrap();
            let body = text.strip_suffix("END\r\n").expect("one END, at the end");
            let mut items: Vec<String> = body
                .split_inclusive(&format!("{}\r\n", "v".repeat(600)))
                .map(str::to_string)
                .collect();
            items.sort();
            assert_eq!(items, all);
        } else {
            assert!(got.iter().sum::<usize>() <= 1400);
        }
    }
}

#[test]
fn a_cache_hit_larger_than_the_cap_is_not_sent_to_an_untrusted_source() {
    // The hit reply for `hot` (a 200-byte value): 8 + 17 + 200 + 2 + 5 = 232 bytes.
    let value = "h".repeat(200);
    let hit = format!("VALUE hot 0 200\r\n{value}\r\nEND\r\n").into_bytes();
    for (cap, untrusted_gets_it) in [("200", false), ("231", false), ("232", true)] {
        let mut core = hot_cache_core(&[
            "--unverified-reply-bytes",
            cap,
            "--trusted",
            "10.0.0.200/32",
        ]);
        make_hot(&mut core, TRUSTED, "hot", &value);
        let before = core.report(ms(302)).stats.frames_out;

        let mut f = request(1, b"get hot\r\n");
        let v = core.process_frame(ms(303), PortId(0), &mut f);
        if untrusted_gets_it {
            assert_eq!(v, Verdict::Out(PortId(0)), "cap {cap}");
            assert_eq!(udp(&f).dst_ip, *CLIENT.ip());
            assert_eq!((payload_len(&f), message(&f)), (232, hit.clone()));
        } else {
            assert_eq!(
                v,
                Verdict::Drop(DropReason::AmplificationGuard),
                "cap {cap}"
            );
        }
        let mut emitted = 0;
        core.drain_emitted(&mut |_, _| emitted += 1);
        assert_eq!(emitted, 0, "no backend is asked instead");
        let mut t = request_from(TRUSTED, 2, b"get hot\r\n");
        assert_eq!(
            core.process_frame(ms(304), PortId(0), &mut t),
            Verdict::Out(PortId(0))
        );
        assert_eq!(udp(&t).dst_ip, *TRUSTED.ip(), "answered by kvlb");
        assert_eq!((payload_len(&t), message(&t)), (232, hit.clone()));
        let r = core.report(ms(305));
        assert_eq!(r.stats.cache.l1_hits, 2);
        assert_eq!(
            r.stats.frames_out,
            before + 1 + u64::from(untrusted_gets_it)
        );
        assert_eq!(
            guard_drops(&mut core, ms(305)),
            u64::from(!untrusted_gets_it)
        );

        if cap == "200" {
            // In a multi-get the hit (227 bytes without END) is refused too; the other
            // key goes to its backend, whose END reaches the client.
            let mut m = request(3, b"get hot other\r\n");
            assert_eq!(
                core.process_frame(ms(306), PortId(0), &mut m),
                Verdict::Drop(DropReason::Absorbed)
            );
            let mut out = vec![];
            core.drain_emitted(&mut |_, f| out.push(f.to_vec()));
            assert_eq!(out.len(), 1, "only the sub-request for `other`");
            assert_eq!(message(&out[0]), b"get other\r\n");
            assert_eq!(guard_drops(&mut core, ms(306)), 2);
            let mut end = reply_to(&out[0], b"END\r\n");
            assert_eq!(
                core.process_frame(ms(307), PortId(0), &mut end),
                Verdict::Out(PortId(0))
            );
            assert_eq!(udp(&end).dst_ip, *CLIENT.ip());
            assert_eq!(message(&end), b"END\r\n");
            assert_eq!(core.report(ms(308)).stats.cache.l1_hits, 3);
        }
    }
}

#[test]
fn timeouts_mark_a_backend_down_and_keys_move() {
    let mut core = core_with(&["--no-hotkeys", "--timeout", "10ms", "--down-after", "2"]);
    let owner = core.ring.server_for_key(b"k").unwrap();
    for i in 0..2 {
        lost_get(&mut core, ms(u64::from(i)), i);
    }
    core.on_tick(ms(50));
    assert!(!core.backends.get(owner).is_up());
    let mut f = request(10, b"get k\r\n");
    core.process_frame(ms(51), PortId(0), &mut f);
    let u = udp(&f);
    assert_ne!(
        SocketAddrV4::new(u.dst_ip, u.dst_port),
        backend(owner as u8 + 1)
    );
    // A probe goes out to the dead one.
    let mut out = vec![];
    core.drain_emitted(&mut |_, f| out.push(f.to_vec()));
    assert!(out
        .iter()
        .any(|f| message(f) == b"version\r\n" && udp(f).dst_ip == *backend(owner as u8 + 1).ip()));
}

/// The token (kvlb's source address, request id) a frame kvlb sent carries.
fn token_of(frame: &[u8]) -> (SocketAddrV4, u16) {
    let u = udp(frame);
    let header = McHeader::parse(u.payload(frame)).unwrap();
    (SocketAddrV4::new(u.src_ip, u.src_port), header.request_id)
}

#[test]
fn requests_whose_connection_failed_end_as_timeouts_and_never_revive() {
    let mut core = core_with(&[
        "--no-hotkeys",
        "--timeout",
        "10ms",
        "--down-after",
        "2",
        "--probe-interval",
        "5ms",
    ]);
    let owner = core.ring.server_for_key(b"k").unwrap();
    let to = backend(owner as u8 + 1);
    for i in 0..2u16 {
        let mut f = request(i, b"get k\r\n");
        core.process_frame(ms(u64::from(i)), PortId(0), &mut f);
        let (local, rid) = token_of(&f);
        assert!(core.request_failed(ms(2), local, rid, to));
        assert!(!core.request_failed(ms(2), local, rid, to), "ended once");
    }
    assert!(
        !core.backends.get(owner).is_up(),
        "two failed requests are two timeouts"
    );
    assert_eq!(core.backends.get(owner).counters.timeouts, 2);
    // Its probe's connection fails too: it stays down; a probe answered brings it back.
    core.on_tick(ms(20));
    let mut out = vec![];
    core.drain_emitted(&mut |_, f| out.push(f.to_vec()));
    let probe = out
        .iter()
        .find(|f| message(f) == b"version\r\n" && udp(f).dst_ip == *to.ip())
        .expect("a probe of the down backend");
    let (local, rid) = token_of(probe);
    assert!(core.request_failed(ms(21), local, rid, to));
    assert!(!core.backends.get(owner).is_up());
    core.on_tick(ms(40));
    let mut out = vec![];
    core.drain_emitted(&mut |_, f| out.push(f.to_vec()));
    let probe = out
        .iter()
        .find(|f| message(f) == b"version\r\n" && udp(f).dst_ip == *to.ip())
        .expect("another probe");
    let mut answer = reply_to(probe, b"VERSION 1.6\r\n");
    core.process_frame(ms(41), PortId(0), &mut answer);
    core.on_tick(ms(42));
    let mut out = vec![];
    core.drain_emitted(&mut |_, f| out.push(f.to_vec()));
    // With --rejoin-flush on (the default), the answer starts a flush, not a return.
    let flush = out
        .iter()
        .find(|f| message(f) == b"flush_all\r\n" && udp(f).dst_ip == *to.ip())
        .expect("a rejoin flush");
    let mut ok = reply_to(flush, b"OK\r\n");
    core.process_frame(ms(43), PortId(0), &mut ok);
    assert!(core.backends.get(owner).is_up());
    // Unknown tokens and addresses are refused.
    assert!(!core.request_failed(ms(44), local, rid, to));
    assert!(!core.request_failed(ms(44), local, rid, backend(9)));
}

#[test]
fn lost_datagrams_of_a_backend_that_answers_later_requests_do_not_mark_it_down() {
    // Three GETs are lost, the fourth (sent later) is answered; the three expire together
    // on one tick, after that reply. In send order there is no streak: the backend is up.
    let mut core = core_with(&["--no-hotkeys", "--timeout", "10ms", "--down-after", "2"]);
    let owner = core.ring.server_for_key(b"k").unwrap();
    for i in 0..3 {
        lost_get(&mut core, ms(u64::from(i)), i);
    }
    get_via_backend(&mut core, ms(3), 3, "k", "v");
    core.on_tick(ms(50));
    assert!(core.backends.get(owner).is_up());
    assert_eq!(core.backends.get(owner).counters.timeouts, 3);
    // Then it stops answering: two requests sent after the answered one time out.
    for i in 4..6 {
        lost_get(&mut core, ms(50 + u64::from(i)), i);
    }
    core.on_tick(ms(100));
    assert!(!core.backends.get(owner).is_up());
}

#[test]
fn an_icmp_port_unreachable_marks_a_backend_down_at_once() {
    let mut core = core_with(&["--no-hotkeys"]);
    let mut f = request(1, b"get k\r\n");
    core.process_frame(ms(0), PortId(0), &mut f);
    let owner = core.ring.server_for_key(b"k").unwrap();
    // The backend's host answers with ICMP port unreachable quoting kvlb's datagram.
    let quoted = &f[14..14 + 28];
    let mut icmp = vec![3u8, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(quoted);
    let mut frame = vec![0u8; 34];
    frame[..6].copy_from_slice(&KVLB_MAC);
    frame[6..12].copy_from_slice(&BACKEND_MAC);
    frame[12..14].copy_from_slice(&[8, 0]);
    let total = (20 + icmp.len()) as u16;
    frame[14] = 0x45;
    frame[16..18].copy_from_slice(&total.to_be_bytes());
    frame[22] = 64;
    frame[23] = 1;
    frame[26..30].copy_from_slice(&backend(owner as u8 + 1).ip().octets());
    frame[30..34].copy_from_slice(&VIP.ip().octets());
    wire::ipv4::Packet::new_unchecked(&mut frame[14..34]).fill_checksum();
    frame.extend_from_slice(&icmp);
    assert_eq!(
        core.process_frame(ms(1), PortId(0), &mut frame),
        Verdict::Next
    );
    assert!(!core.backends.get(owner).is_up());
}

#[test]
fn a_full_flow_table_is_a_counted_drop() {
    let mut core = core_with(&[
        "--no-hotkeys",
        "--flow-capacity",
        "2",
        "--source-ports",
        "1",
    ]);
    for i in 0..2 {
        let mut f = request(i, b"get k\r\n");
        assert_eq!(
            core.process_frame(ms(0), PortId(0), &mut f),
            Verdict::Out(PortId(0))
        );
    }
    let mut f = request(3, b"get k\r\n");
    assert_eq!(
        core.process_frame(ms(0), PortId(0), &mut f),
        Verdict::Drop(DropReason::FlowTableFull)
    );
}

#[test]
fn a_hot_set_is_copied_to_ready_replicas_and_the_client_gets_one_reply() {
    let mut core = core_with(&[
        "--hot-support",
        "0.2",
        "--hot-error",
        "0.02",
        "--replicas",
        "2",
    ]);
    heat_up(&mut core, "hk");
    core.on_tick(ms(300));
    assert!(core.hot.contains(b"hk"));
    // Replication: kvlb fetches the value from the primary and writes the replicas.
    let mut out = vec![];
    core.drain_emitted(&mut |_, f| out.push(f.to_vec()));
    let fetch = out
        .iter()
        .find(|f| message(f).starts_with(b"mg hk"))
        .expect("a replication fetch");
    let o = opaque_of(fetch);
    assert_eq!(
        String::from_utf8(message(fetch)).unwrap(),
        format!("mg hk v f t k {o}\r\n")
    );
    // Late replies to earlier requests on the fetch's token are refused, and the fetch
    // still waits: another key's value, and the same key's value under another opaque
    // (a fetch of the same key from an earlier round).
    for late in [
        format!("VA 1 f0 t-1 kzz {o}\r\nx\r\n"),
        "VA 3 f0 t-1 khk O0\r\nold\r\n".to_string(),
        "VA 3 f0 t-1 khk\r\nold\r\n".to_string(),
    ] {
        let mut f = reply_to(fetch, late.as_bytes());
        assert_eq!(
            core.process_frame(ms(301), PortId(0), &mut f),
            Verdict::Drop(DropReason::MismatchedResponse),
            "{late}"
        );
    }
    let mut va = reply_to(fetch, format!("VA 1 f0 t-1 khk {o}\r\nv\r\n").as_bytes());
    assert_eq!(
        core.process_frame(ms(301), PortId(0), &mut va),
        Verdict::Drop(DropReason::Absorbed)
    );
    let mut sets = vec![];
    core.drain_emitted(&mut |_, f| sets.push(f.to_vec()));
    assert_eq!(sets.len(), 2);
    for s in &sets {
        let o = opaque_of(s);
        assert_eq!(
            String::from_utf8(message(s)).unwrap(),
            format!("ms hk 1 F0 T0 {o}\r\nv\r\n")
        );
        // An acknowledgement of an earlier write to this replica does not count.
        let mut stale = reply_to(s, b"HD O0\r\n");
        assert_eq!(
            core.process_frame(ms(302), PortId(0), &mut stale),
            Verdict::Drop(DropReason::MismatchedResponse)
        );
        let mut ack = reply_to(s, format!("HD {o}\r\n").as_bytes());
        core.process_frame(ms(302), PortId(0), &mut ack);
    }
    assert_eq!(core.hot.get(b"hk").unwrap().ready_replicas(), 2);

    // A client set: to the primary and copied to both replicas; one reply to the client.
    let mut s = request(7, b"set hk 0 0 2\r\nv2\r\n");
    assert_eq!(
        core.process_frame(ms(303), PortId(0), &mut s),
        Verdict::Out(PortId(0))
    );
    let mut copies = vec![];
    core.drain_emitted(&mut |_, f| copies.push(f.to_vec()));
    assert_eq!(copies.len(), 2);
    assert_eq!(core.hot.get(b"hk").unwrap().ready_replicas(), 0);
    let mut verdicts = vec![];
    for c in &copies {
        let o = opaque_of(c);
        assert_eq!(
            String::from_utf8(message(c)).unwrap(),
            format!("ms hk 2 F0 T0 {o}\r\nv2\r\n")
        );
        let mut ack = reply_to(c, format!("HD {o}\r\n").as_bytes());
        verdicts.push(core.process_frame(ms(304), PortId(0), &mut ack));
    }
    let mut ack = reply_to(&s, b"STORED\r\n");
    verdicts.push(core.process_frame(ms(304), PortId(0), &mut ack));
    assert_eq!(
        verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Out(_)))
            .count(),
        1,
        "{verdicts:?}"
    );
    assert_eq!(udp(&ack).dst_ip, *CLIENT.ip());
    assert_eq!(core.hot.get(b"hk").unwrap().ready_replicas(), 2);
}

#[test]
fn a_reply_of_another_shape_or_key_is_dropped_and_the_real_one_still_matches() {
    let mut core = core_with(&[]);
    let mut get = request(1, b"get k1\r\n");
    assert_eq!(
        core.process_frame(ms(0), PortId(0), &mut get),
        Verdict::Out(PortId(0))
    );
    let mut set = request(2, b"set k2 0 0 1\r\nv\r\n");
    assert_eq!(
        core.process_frame(ms(0), PortId(0), &mut set),
        Verdict::Out(PortId(0))
    );
    // Late replies to earlier requests that reused these tokens: another key's value,
    // and a write's answer to the GET; a value to the SET.
    for (to, msg) in [
        (&get, &b"VALUE k9 0 1\r\nx\r\nEND\r\n"[..]),
        (&get, b"STORED\r\n"),
        (&set, b"VALUE k2 0 1\r\nx\r\nEND\r\n"),
    ] {
        let mut late = reply_to(to, msg);
        assert_eq!(
            core.process_frame(ms(1), PortId(0), &mut late),
            Verdict::Drop(DropReason::MismatchedResponse)
        );
    }
    let mut r = reply_to(&get, b"VALUE k1 0 1\r\nv\r\nEND\r\n");
    assert_eq!(
        core.process_frame(ms(1), PortId(0), &mut r),
        Verdict::Out(PortId(0))
    );
    assert_eq!(message(&r), b"VALUE k1 0 1\r\nv\r\nEND\r\n");
    let mut r = reply_to(&set, b"STORED\r\n");
    assert_eq!(
        core.process_frame(ms(1), PortId(0), &mut r),
        Verdict::Out(PortId(0))
    );
    let report = core.report(ms(2));
    assert_eq!(report.stats.drops.get("mismatched_response"), Some(&3));
}

/// Drives one GET of `key` through kvlb to a backend that answers END (a miss).
fn miss_via_backend(core: &mut Core, now: Instant, rid: u16, key: &str) -> Vec<u8> {
    let mut f = request(rid, format!("get {key}\r\n").as_bytes());
    assert_eq!(
        core.process_frame(now, PortId(0), &mut f),
        Verdict::Out(PortId(0))
    );
    assert_ne!(udp(&f).dst_ip, *CLIENT.ip(), "forwarded");
    let mut r = reply_to(&f, b"END\r\n");
    assert_eq!(
        core.process_frame(now, PortId(0), &mut r),
        Verdict::Out(PortId(0))
    );
    r
}

#[test]
fn a_hot_keys_miss_is_cached_and_a_write_ends_it() {
    for cache_misses in ["on", "off"] {
        let mut core = hot_cache_core(&["--cache-misses", cache_misses]);
        // "absent" is hot but no server holds it: half of 2000 requests, all misses.
        for i in 0..2000u16 {
            if i % 2 == 0 {
                miss_via_backend(&mut core, ms(u64::from(i) / 10), i, "absent");
            } else {
                get_via_backend(&mut core, ms(u64::from(i) / 10), i, &format!("c{i}"), "v");
            }
        }
        core.on_tick(ms(300));
        // One more miss teaches its absence (it was hot before this request left).
        miss_via_backend(&mut core, ms(301), 9000, "absent");
        let mut g = request(9001, b"get absent\r\n");
        assert_eq!(
            core.process_frame(ms(302), PortId(0), &mut g),
            Verdict::Out(PortId(0))
        );
        let report = core.report(ms(302));
        if cache_misses == "off" {
            assert_ne!(
                udp(&g).dst_ip,
                *CLIENT.ip(),
                "off: every miss goes to a server"
            );
            assert_eq!(report.stats.cache.learned_absent, 0);
            continue;
        }
        assert_eq!(udp(&g).dst_ip, *CLIENT.ip(), "answered by kvlb");
        assert_eq!(message(&g), b"END\r\n");
        assert_eq!(
            McHeader::parse(udp(&g).payload(&g)).unwrap().request_id,
            9001
        );
        assert_eq!(report.stats.cache.learned_absent, 1);
        assert_eq!(report.stats.cache.absent_hits, 1);

        // A set drops the cached absence before it leaves: no GET after it is answered
        // with a miss from the cache, not while the set is in flight, nor after its ack.
        let mut s = request(9002, b"set absent 0 0 2\r\nv2\r\n");
        assert_eq!(
            core.process_frame(ms(303), PortId(0), &mut s),
            Verdict::Out(PortId(0))
        );
        let mut g = request(9003, b"get absent\r\n");
        core.process_frame(ms(304), PortId(0), &mut g);
        assert_ne!(
            udp(&g).dst_ip,
            *CLIENT.ip(),
            "no cached miss while the set is in flight"
        );
        // The GET sent while the set was in flight answers END late: not learned.
        let mut ack = reply_to(&s, b"STORED\r\n");
        core.process_frame(ms(305), PortId(0), &mut ack);
        let mut late = reply_to(&g, b"END\r\n");
        core.process_frame(ms(306), PortId(0), &mut late);
        let mut g2 = request(9004, b"get absent\r\n");
        core.process_frame(ms(307), PortId(0), &mut g2);
        assert_ne!(
            udp(&g2).dst_ip,
            *CLIENT.ip(),
            "the overtaken miss was not learned"
        );
        // The value is learned from the next reply, and served.
        let mut r = reply_to(&g2, b"VALUE absent 0 2\r\nv2\r\nEND\r\n");
        core.process_frame(ms(308), PortId(0), &mut r);
        let mut g3 = request(9005, b"get absent\r\n");
        core.process_frame(ms(309), PortId(0), &mut g3);
        assert_eq!(message(&g3), b"VALUE absent 0 2\r\nv2\r\nEND\r\n");
    }
}

/// A burst is decided as its frames one by one: same verdicts, same rewritten frames, same
/// emitted frames.
#[test]
fn a_burst_is_decided_as_its_frames_one_by_one() {
    let frames: Vec<Vec<u8>> = (0..8u16)
        .map(|i| request(i, format!("get k{i}\r\n").as_bytes()))
        .chain([vec![0u8; 10], request(9, b"bogus\r\n")])
        .collect();
    let (mut one, mut burst) = (core_with(&[]), core_with(&[]));
    let mut singly = frames.clone();
    let want: Vec<Verdict> = singly
        .iter_mut()
        .map(|f| one.process_frame(ms(1), PortId(0), f))
        .collect();
    let mut together = frames;
    let mut got = vec![Verdict::Next; together.len()];
    burst.process_burst(ms(1), PortId(0), &mut together, &mut got);
    assert_eq!(got, want);
    assert_eq!(together, singly);
    let drain = |c: &mut Core| {
        let mut v = Vec::new();
        c.drain_emitted(&mut |d, f| v.push((d, f.to_vec())));
        v
    };
    assert_eq!(drain(&mut burst), drain(&mut one));
    assert_eq!(burst.stats().frames_in, one.stats().frames_in);
}

/// `poll_timeout` is due at once for a new core, and no later than the work it announces:
/// a core ticked only when it says so decides, emits and counts exactly what a core ticked
/// every millisecond does (lost requests time backends out, probes go out, hot keys
/// replicate). Idle and without a detector, it skips the milliseconds with nothing due.
#[test]
fn ticking_only_at_the_poll_timeout_changes_nothing() {
    let fresh = core_with(&[]);
    assert_eq!(fresh.poll_timeout(), Some(Instant::ZERO));
    ticked_lazily(&[], 1000);
    ticked_lazily(&["--hotkeys", "off"], 1000);
    let idle = ticked_lazily(&["--hotkeys", "off"], 0);
    assert!(idle < 100, "{idle} ticks in 3 s");
}

/// Runs two cores built with `extra` over 3 s with GETs nobody answers for the first
/// `gets_for` ms, one ticked every millisecond and one only when its `poll_timeout` is
/// due; checks they agree, and returns how many ticks the second took.
fn ticked_lazily(extra: &[&str], gets_for: u64) -> usize {
    let (mut every, mut lazy) = (core_with(extra), core_with(extra));
    let (mut out_every, mut out_lazy) = (Vec::new(), Vec::new());
    let mut lazy_ticks = 0;
    for t in 0..3000u64 {
        let now = ms(t);
        if t % 7 == 0 && t < gets_for {
            let msg = format!("get k{}\r\n", t % 3);
            let mut a = request(t as u16, msg.as_bytes());
            let mut b = a.clone();
            let va = every.process_frame(now, PortId(0), &mut a);
            let vb = lazy.process_frame(now, PortId(0), &mut b);
            assert_eq!((va, &a), (vb, &b), "at {t} ms");
        }
        every.on_tick(now);
        if lazy.poll_timeout().is_some_and(|due| due <= now) {
            lazy.on_tick(now);
            lazy_ticks += 1;
        }
        every.drain_emitted(&mut |d, f| out_every.push((t, d, f.to_vec())));
        lazy.drain_emitted(&mut |d, f| out_lazy.push((t, d, f.to_vec())));
    }
    assert_eq!(out_lazy, out_every);
    assert_eq!(out_every.is_empty(), gets_for == 0);
    let (a, b) = (every.report(ms(3000)), lazy.report(ms(3000)));
    assert_eq!(format!("{:?}", a.stats), format!("{:?}", b.stats));
    assert_eq!(a.backends, b.backends);
    lazy_ticks
}

#[test]
fn no_fetch_leaves_while_a_write_from_before_the_key_turned_hot_is_in_flight() {
    let mut core = core_with(&[
        "--hot-support",
        "0.2",
        "--hot-error",
        "0.02",
        "--replicas",
        "2",
        "--timeout",
        "1s",
    ]);
    // A set of hk while it is still cold: forwarded, its reply not back yet.
    let mut s = request(7, b"set hk 0 0 2\r\nv2\r\n");
    assert_eq!(
        core.process_frame(ms(0), PortId(0), &mut s),
        Verdict::Out(PortId(0))
    );
    heat_up(&mut core, "hk");
    let fetches = |core: &mut Core| {
        let mut out = vec![];
        core.drain_emitted(&mut |_, f| out.push(f.to_vec()));
        out.iter()
            .filter(|f| message(f).starts_with(b"mg hk"))
            .count()
    };
    core.on_tick(ms(300));
    assert!(core.hot.contains(b"hk"));
    // The primary may still apply the set after a fetch: the fetch would read the old
    // value and make the replicas ready with it.
    assert_eq!(fetches(&mut core), 0, "a fetch overtook the set in flight");
    core.on_tick(ms(320));
    assert_eq!(fetches(&mut core), 0);
    let mut stored = reply_to(&s, b"STORED\r\n");
    assert_eq!(
        core.process_frame(ms(330), PortId(0), &mut stored),
        Verdict::Out(PortId(0))
    );
    core.on_tick(ms(340));
    assert_eq!(fetches(&mut core), 1, "the fetch once the set is answered");
}

#[test]
fn a_multi_key_gat_of_a_hot_key_does_not_stop_its_replication() {
    let mut core = core_with(&[
        "--hot-support",
        "0.2",
        "--hot-error",
        "0.02",
        "--replicas",
        "2",
        "--timeout",
        "50ms",
    ]);
    heat_up(&mut core, "hk");
    core.on_tick(ms(300));
    assert!(core.hot.contains(b"hk"));
    let mut out = vec![];
    core.drain_emitted(&mut |_, f| out.push(f.to_vec()));
    // A gat of hk and another key, split over servers: every part answered.
    let mut gat = request(9000, b"gat 0 hk c1\r\n");
    core.process_frame(ms(310), PortId(0), &mut gat);
    let mut parts = vec![];
    core.drain_emitted(&mut |_, f| parts.push(f.to_vec()));
    let parts: Vec<Vec<u8>> = parts
        .into_iter()
        .filter(|f| message(f).starts_with(b"gat "))
        .collect();
    assert!(!parts.is_empty(), "the gat was not sent on");
    for p in &parts {
        let mut end = reply_to(p, b"END\r\n");
        core.process_frame(ms(315), PortId(0), &mut end);
    }
    core.drain_emitted(&mut |_, _| {});
    // The gat changed hk's exptime: its replicas are refreshed by a later fetch.
    let mut fetches = 0;
    for t in (350..3000).step_by(50) {
        core.on_tick(ms(t));
        core.drain_emitted(&mut |_, f| {
            if message(f).starts_with(b"mg hk ") {
                fetches += 1;
            }
        });
    }
    assert!(fetches > 0, "hk is never replicated again after the gat");
}
