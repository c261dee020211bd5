//! Interop with a real memcached (1.6, `memcached` on PATH) on loopback:
//!
//! - the cache-hit replies kvlb writes are byte-identical to memcached's UDP reply
//!   datagrams for the same item (get and gets, flags, empty and binary values, 250-byte
//!   keys, the largest single-datagram reply) and for a miss;
//! - kvlb's response reader and reassembler read memcached's replies, including a
//!   multi-get answered one message per key and a value spread over several datagrams;
//! - request frames kvlb emits (replica `set`s, probes, deletes) are understood by memcached.
//!
//! Skipped with a loud message when memcached is not installed (a failure in CI; see
//! `tests/skip`).

mod skip;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kvlb::proto::{
    emit_request_frame_vec, write_hit_reply, write_reply, Command as McCommand, MessageStatus,
    Meta, Progress, Reassembler, Request, Response, ResponseReader, Storage, Value, UDP_DATA_SIZE,
};
use kvlb::wire::{classify, Classified, McHeader, UdpEndpoints, UdpFrame};

/// A memcached on a free loopback port, killed (by its pid) when dropped.
struct Memcached {
    child: Child,
    port: u16,
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Memcached {
    fn start() -> Option<Memcached> {
        if Command::new("memcached").arg("-V").output().is_err() {
            skip::skip(
                "memcached",
                skip::Need::Installed,
                "memcached is not installed (apt-get install memcached)",
            );
            return None;
        }
        for _ in 0..20 {
            // A port the kernel just handed out for both UDP and TCP is very likely free.
            let port = {
                let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
                udp.local_addr().expect("addr").port()
            };
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue;
            }
            let p = port.to_string();
            let child = Command::new("memcached")
                .args(["-U", &p, "-p", &p, "-l", "127.0.0.1", "-t", "1", "-m", "64"])
                .args(["-u", "root"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn memcached");
            let mut mc = Memcached { child, port };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = mc.child.try_wait() {
                    break; // exited: port taken after all, try another
                }
                // memcached listens on TCP before it binds UDP: wait for a UDP answer.
                if TcpStream::connect(("127.0.0.1", port)).is_ok() && mc.udp_ready() {
                    skip::used("memcached", &format!("127.0.0.1:{port}"));
                    return Some(mc);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = mc.child.kill();
        }
        panic!("could not start memcached on a free port");
    }

    fn tcp(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// Stores an item over TCP.
    fn set(&self, key: &[u8], flags: u32, data: &[u8]) {
        let mut s = self.tcp();
        let mut req = format!(
            "set {} {flags} 0 {}\r\n",
            String::from_utf8_lossy(key),
            data.len()
        )
        .into_bytes();
        // Keys in these tests are ASCII, so the lossy conversion is exact.
        req.extend_from_slice(data);
        req.extend_from_slice(b"\r\n");
        s.write_all(&req).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        assert_eq!(line, "STORED\r\n");
    }

    /// The cas unique of an item, from a TCP `gets`.
    fn cas(&self, key: &[u8]) -> u64 {
        let mut s = self.tcp();
        s.write_all(&[b"gets ".as_slice(), key, b"\r\n"].concat())
            .unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let cas = line.split_whitespace().nth(4).expect("cas field");
        cas.parse().expect("number")
    }

    /// A TCP `get`'s whole reply (up to END).
    fn tcp_get(&self, key: &[u8]) -> Vec<u8> {
        let mut s = self.tcp();
        s.write_all(&[b"get ".as_slice(), key, b"\r\n"].concat())
            .unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        while !out.ends_with(b"END\r\n") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "connection closed");
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    fn udp_ready(&self) -> bool {
        let u = self.udp();
        u.send(&datagram(0, b"version\r\n")).is_ok() && u.recv(&mut [0u8; 64]).is_ok()
    }

    fn udp(&self) -> UdpSocket {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        u.connect(("127.0.0.1", self.port)).unwrap();
        u.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        u
    }
}

/// Sends `payload` (frame header included) and collects every reply datagram: the first
/// within 3 s (the machine may be busy), the others until none arrives for 300 ms.
fn exchange(u: &UdpSocket, payload: &[u8]) -> Vec<Vec<u8>> {
    exchange_within(u, payload, Duration::from_secs(3))
}

/// [`exchange`] for requests that get no answer: waits `first` for a datagram.
fn exchange_within(u: &UdpSocket, payload: &[u8], first: Duration) -> Vec<Vec<u8>> {
    u.send(payload).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    u.set_read_timeout(Some(first)).unwrap();
    while let Ok(n) = u.recv(&mut buf) {
        got.push(buf[..n].to_vec());
        u.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
    }
    got
}

fn datagram(rid: u16, msg: &[u8]) -> Vec<u8> {
    let mut d = McHeader::single(rid).to_bytes().to_vec();
    d.extend_from_slice(msg);
    d
}

fn client() -> UdpEndpoints {
    UdpEndpoints {
        src_mac: [2, 0, 0, 0, 0, 7],
        dst_mac: [2, 0, 0, 0, 0, 1],
        vlan: None,
        inner_vlan: None,
        src_ip: Ipv4Addr::new(10, 0, 0, 7),
        dst_ip: Ipv4Addr::new(10, 0, 0, 1),
        src_port: 40000,
        dst_port: 11211,
        ttl: 64,
    }
}

fn udp_frame(f: &[u8]) -> UdpFrame {
    match classify(f) {
        Ok(Classified::Udp(u)) => u,
        other => panic!("{other:?}"),
    }
}

/// kvlb's request frame for `request` with request id `rid`.
fn request_frame(rid: u16, request: &[u8]) -> Vec<u8> {
    let req = Request::parse(request).expect("valid request");
    let mut f = Vec::new();
    emit_request_frame_vec(&mut f, &client(), 1, rid, &req).unwrap();
    f
}

/// The UDP payload kvlb sends for a hit on `value`, answering `request` with id `rid`.
fn kvlb_hit(rid: u16, request: &[u8], value: &Value<'_>) -> Vec<u8> {
    let mut f = request_frame(rid, request);
    let req = udp_frame(&f);
    write_hit_reply(&mut f, &req, value).expect("reply fits");
    udp_frame(&f).payload(&f).to_vec()
}

#[test]
fn hit_replies_are_byte_identical_to_memcached() {
    let Some(mc) = Memcached::start() else {
        return;
    };
    let u = mc.udp();
    let binary: Vec<u8> = (0..=255u8).cycle().take(700).collect();
    let long_key = vec![b'k'; 250];
    // The largest value whose reply still fits one datagram: 1392 message bytes.
    let fits = vec![b'z'; UDP_DATA_SIZE - "VALUE big 0 1369\r\n\r\nEND\r\n".len()];
    assert_eq!(
        "VALUE big 0 ".len() + 4 + 2 + fits.len() + 7,
        UDP_DATA_SIZE,
        "fits is sized for a 4-digit length"
    );
    let items: Vec<(&[u8], u32, &[u8])> = vec![
        (b"user:42", 0, b"hello"),
        (b"flags", 0xdead_beef, b"with flags"),
        (b"empty", 7, b""),
        (b"hundred", 1, &[b'v'; 100]),
        (b"crlf", 0, b"a\r\nEND\r\nb"),
        (b"binary", 65535, &binary),
        (&long_key, 0, b"long key"),
        (b"big", 0, &fits),
    ];
    for (i, (key, flags, data)) in items.iter().enumerate() {
        mc.set(key, *flags, data);
        for gets in [false, true] {
            let rid = 0x100 * (i as u16 + 1) + u16::from(gets);
            let verb: &[u8] = if gets { b"gets " } else { b"get " };
            let request = [verb, key, b"\r\n"].concat();
            let theirs = exchange(&u, &datagram(rid, &request));
            let cas = gets.then(|| mc.cas(key));
            let value = Value {
                key,
                flags: *flags,
                cas,
                data,
            };
            if value.buffer_len() + 5 > UDP_DATA_SIZE {
                // memcached spreads it over several datagrams; kvlb does not answer in place.
                assert!(theirs.len() > 1);
                let mut f = request_frame(rid, &request);
                let req = udp_frame(&f);
                assert_eq!(
                    write_hit_reply(&mut f, &req, &value),
                    Err(kvlb::proto::Error::ReplyTooLarge)
                );
                continue;
            }
            assert_eq!(
                theirs.len(),
                1,
                "one datagram for {}",
                String::from_utf8_lossy(key)
            );
            let ours = kvlb_hit(rid, &request, &value);
            assert_eq!(
                ours,
                theirs[0],
                "reply for {} (gets: {gets}) differs:\n ours   {:?}\n theirs {:?}",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs[0])
            );
        }
    }
    // One byte more and memcached needs two datagrams; kvlb refuses to answer in place.
    let over = vec![b'z'; fits.len() + 1];
    mc.set(b"big", 0, &over);
    let theirs = exchange(&u, &datagram(9, b"get big\r\n"));
    assert_eq!(theirs.len(), 2);
    let mut f = request_frame(9, b"get big\r\n");
    let req = udp_frame(&f);
    let v = Value {
        key: b"big",
        flags: 0,
        cas: None,
        data: &over,
    };
    assert_eq!(
        write_hit_reply(&mut f, &req, &v),
        Err(kvlb::proto::Error::ReplyTooLarge)
    );
}

#[test]
fn miss_reply_is_byte_identical_to_memcached() {
    let Some(mc) = Memcached::start() else {
        return;
    };
    let u = mc.udp();
    let theirs = exchange(&u, &datagram(0xbeef, b"get nothing:here\r\n"));
    assert_eq!(theirs.len(), 1);
    let mut f = request_frame(0xbeef, b"get nothing:here\r\n");
    let req = udp_frame(&f);
    write_reply(&mut f, &req, &[Response::End]).unwrap();
    assert_eq!(udp_frame(&f).payload(&f), &theirs[0][..]);
}

#[test]
fn reader_and_reassembler_read_memcached_replies() {
    let Some(mc) = Memcached::start() else {
        return;
    };
    let u = mc.udp();
    mc.set(b"a", 5, b"abc");
    mc.set(b"b", 0, b"xy");
    let big: Vec<u8> = (0..5000u32).map(|i| b'a' + (i % 26) as u8).collect();
    mc.set(b"big", 9, &big);

    let read = |datagrams: &[Vec<u8>], rid: u16| -> Vec<u8> {
        let mut r = Reassembler::new(1 << 20);
        let mut last = Progress::Incomplete;
        for d in datagrams {
            let h = McHeader::parse(d).unwrap();
            assert_eq!(h.request_id, rid);
            last = r.push(h, &d[8..]).unwrap();
        }
        assert_eq!(last, Progress::Complete);
        r.message().to_vec()
    };

    // memcached 1.6 answers a multi-get one message per key; a missed key is an empty
    // message (count 0); END rides on the last one.
    let got = exchange(&u, &datagram(1, b"get nope a nope2 b\r\n"));
    assert!(got.len() >= 3, "{got:?}");
    let msg = read(&got, 1);
    let items: Vec<Response<'_>> = ResponseReader::new(&msg).map(Result::unwrap).collect();
    assert_eq!(
        items,
        [
            Response::Value(Value {
                key: b"a",
                flags: 5,
                cas: None,
                data: b"abc"
            }),
            Response::Value(Value {
                key: b"b",
                flags: 0,
                cas: None,
                data: b"xy"
            }),
            Response::End
        ]
    );

    // A value over several datagrams reassembles to exactly the TCP reply.
    let got = exchange(&u, &datagram(2, b"get big\r\n"));
    assert!(got.len() >= 4, "{} datagrams", got.len());
    assert!(got.iter().all(|d| d.len() <= 1400));
    assert_eq!(read(&got, 2), mc.tcp_get(b"big"));
    // Delivered backwards, too.
    let mut backwards = got.clone();
    backwards.reverse();
    assert_eq!(read(&backwards, 2), mc.tcp_get(b"big"));

    // Single-datagram replies of other commands are whole messages the reader knows.
    let version = std::str::from_utf8(&exchange(&u, &datagram(3, b"version\r\n"))[0][8..])
        .unwrap()
        .to_owned();
    let cases: Vec<(&[u8], Response<'_>)> = vec![
        (b"set n 0 0 1\r\n5\r\n", Response::Stored),
        (b"add n 0 0 1\r\n5\r\n", Response::NotStored),
        (b"incr n 10\r\n", Response::Number(15)),
        (b"decr n 100\r\n", Response::Number(0)),
        (b"touch n 100\r\n", Response::Touched),
        (b"cas n 0 0 1 1\r\nx\r\n", Response::Exists),
        (b"delete n\r\n", Response::Deleted),
        (b"delete n\r\n", Response::NotFound),
        (b"incr n 1\r\n", Response::NotFound),
        (b"bogus\r\n", Response::Error),
        (b"verbosity 0\r\n", Response::Ok),
        (
            b"incr a 1\r\n",
            Response::ClientError(b"cannot increment or decrement non-numeric value"),
        ),
        (
            b"version\r\n",
            Response::Version(&version.as_bytes()[8..version.len() - 2]),
        ),
        (
            b"mn\r\n",
            Response::Meta {
                status: kvlb::proto::MetaStatus::Mn,
                flags: b"",
            },
        ),
        (
            b"mg a v f\r\n",
            Response::MetaValue {
                flags: b"f5",
                data: b"abc",
            },
        ),
        (
            b"mg zzz v\r\n",
            Response::Meta {
                status: kvlb::proto::MetaStatus::En,
                flags: b"",
            },
        ),
    ];
    for (i, (req, want)) in cases.iter().enumerate() {
        let rid = 100 + i as u16;
        let got = exchange(&u, &datagram(rid, req));
        assert_eq!(got.len(), 1, "{}", String::from_utf8_lossy(req));
        let h = McHeader::parse(&got[0]).unwrap();
        assert_eq!(h, McHeader::single(rid));
        let msg = &got[0][8..];
        assert_eq!(ResponseReader::status(msg), Ok(MessageStatus::Complete));
        let items: Vec<_> = ResponseReader::new(msg).collect();
        assert_eq!(items, [Ok(*want)], "{}", String::from_utf8_lossy(req));
    }
    // stats: many STAT lines, then END, possibly over several datagrams.
    let got = exchange(&u, &datagram(200, b"stats\r\n"));
    let msg = read(&got, 200);
    let items: Vec<_> = ResponseReader::new(&msg).map(Result::unwrap).collect();
    assert!(items.len() > 20);
    assert!(matches!(items[0], Response::Stat { name: b"pid", .. }));
    assert_eq!(items.last(), Some(&Response::End));
}

#[test]
fn memcached_accepts_kvlb_request_frames() {
    let Some(mc) = Memcached::start() else {
        return;
    };
    let u = mc.udp();
    let payload_of = |req: &Request<'_>, rid: u16| {
        let mut f = Vec::new();
        emit_request_frame_vec(&mut f, &client(), 1, rid, req).unwrap();
        udp_frame(&f).payload(&f).to_vec()
    };
    // A replica write with noreply: no answer, and the item is there.
    let set = Request::Storage(Storage::set(
        b"replica:key",
        77,
        0,
        b"replicated value",
        true,
    ));
    assert!(exchange_within(&u, &payload_of(&set, 1), Duration::from_millis(500)).is_empty());
    assert_eq!(
        mc.tcp_get(b"replica:key"),
        b"VALUE replica:key 77 16\r\nreplicated value\r\nEND\r\n"
    );
    // The same write with a reply.
    let set = Request::Storage(Storage::set(b"replica:key", 1, 0, b"v2", false));
    assert_eq!(
        exchange(&u, &payload_of(&set, 2)),
        [datagram(2, b"STORED\r\n")]
    );
    // The meta forms of kvlb's own replication requests: memcached echoes the opaque
    // (`O`) and the key (`k`) on every answer, hit or miss, which is how kvlb tells the
    // reply to the request holding a token from a late reply to an earlier one.
    let meta = |command, flags: &'static [u8], data| {
        Request::Meta(Meta {
            command,
            key: b"replica:key",
            flags,
            data,
            base64: false,
            quiet: false,
        })
    };
    for (rid, req, want) in [
        (
            30,
            meta(McCommand::MetaSet, b"F5 T0 O1f", Some(&b"v3"[..])),
            &b"HD O1f\r\n"[..],
        ),
        (
            31,
            meta(McCommand::MetaGet, b"v f t k O20", None),
            b"VA 2 f5 t-1 kreplica:key O20\r\nv3\r\n",
        ),
        (32, meta(McCommand::MetaDelete, b"O21", None), b"HD O21\r\n"),
        (33, meta(McCommand::MetaDelete, b"O22", None), b"NF O22\r\n"),
        (
            34,
            meta(McCommand::MetaGet, b"v f t k O23", None),
            b"EN kreplica:key O23\r\n",
        ),
        (
            35,
            meta(McCommand::MetaSet, b"F1 T0 O24", Some(&b"v2"[..])),
            b"HD O24\r\n",
        ),
    ] {
        assert_eq!(
            exchange(&u, &payload_of(&req, rid)),
            [datagram(rid, want)],
            "{}",
            String::from_utf8_lossy(&req.to_vec())
        );
    }
    // A version probe.
    let got = exchange(&u, &payload_of(&Request::Version, 3));
    assert_eq!(got.len(), 1);
    assert!(got[0][8..].starts_with(b"VERSION 1."));
    // Requests re-emitted from parsed ones.
    for (i, req) in [
        &b"delete replica:key\r\n"[..],
        b"get replica:key\r\n",
        b"gets a b c\r\n",
    ]
    .iter()
    .enumerate()
    {
        let parsed = Request::parse(req).unwrap();
        let rid = 10 + i as u16;
        let got = exchange(&u, &payload_of(&parsed, rid));
        // A multi-get of missing keys: empty messages for all but the last key.
        let mut r = Reassembler::new(4096);
        for d in &got {
            r.push(McHeader::parse(d).unwrap(), &d[8..]).unwrap();
        }
        assert!(r.is_complete(), "{got:?}");
        let want: &[u8] = if i == 0 { b"DELETED\r\n" } else { b"END\r\n" };
        assert_eq!(r.message(), want);
        assert_eq!(r.request_id(), Some(rid));
    }
    // A request whose frame header says it spans two datagrams is dropped by memcached,
    // and refused by kvlb's parser for the same reason.
    let mut split = datagram(20, b"get a\r\n");
    split[5] = 2;
    assert!(exchange_within(&u, &split, Duration::from_millis(500)).is_empty());
    assert_eq!(
        kvlb::proto::parse_datagram(&split).unwrap_err(),
        kvlb::proto::Error::SplitRequest
    );
}
