//! Property tests for `kvlb::proto`: requests and responses survive emit-then-parse,
//! reassembly gives back the message however it is cut and ordered, hit replies read back
//! as the item, and no byte string makes a parser panic.

use std::net::Ipv4Addr;

use kvlb::proto::{
    self, parse_datagram, write_hit_reply, Binary, Command, Keys, Meta, MetaStatus, Progress,
    Reassembler, Request, Response, ResponseReader, Retrieval, Storage, Value,
};
use kvlb::wire::{classify, Classified, McHeader, UdpEndpoints};
use proptest::prelude::*;

/// Key bytes: printable ASCII without space, and high (UTF-8) bytes.
fn key_byte() -> impl Strategy<Value = u8> {
    prop_oneof![0x21u8..0x7f, 0x80u8..=0xff]
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(key_byte(), 1..=250)
}

fn short_key() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(key_byte(), 1..=20)
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..300)
}

/// Owned material a request borrows from.
#[derive(Clone, Debug)]
struct Material {
    kind: u8,
    keys: Vec<Vec<u8>>,
    data: Vec<u8>,
    n32: u32,
    i32: i32,
    n64: u64,
    flag: bool,
    opt: bool,
    meta_flags: Vec<u8>,
}

fn material() -> impl Strategy<Value = Material> {
    (
        0u8..20,
        proptest::collection::vec(key(), 1..5),
        data(),
        any::<u32>(),
        any::<i32>(),
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(
            (
                proptest::sample::select(b"vftkscqOTNM".to_vec()),
                0u32..1000,
            ),
            0..4,
        ),
    )
        .prop_map(|(kind, keys, data, n32, i32, n64, flag, opt, flags)| {
            // Meta flags: distinct letters, each optionally followed by a number.
            let mut seen = Vec::new();
            let mut meta_flags = Vec::new();
            for (letter, n) in flags {
                if seen.contains(&letter) {
                    continue;
                }
                seen.push(letter);
                if !meta_flags.is_empty() {
                    meta_flags.push(b' ');
                }
                meta_flags.push(letter);
                if letter.is_ascii_uppercase() {
                    meta_flags.extend_from_slice(n.to_string().as_bytes());
                }
            }
            Material {
                kind,
                keys,
                data,
                n32,
                i32,
                n64,
                flag,
                opt,
                meta_flags,
            }
        })
}

fn request(m: &Material) -> (Request<'_>, Vec<u8>) {
    let key = &m.keys[0][..];
    let req = match m.kind {
        0..=3 => Request::Retrieval(Retrieval {
            command: [Command::Get, Command::Gets, Command::Gat, Command::Gats]
                [usize::from(m.kind)],
            exptime: (m.kind >= 2).then_some(m.i32),
            keys: Keys::single(key).unwrap(),
        }),
        4..=9 => {
            let command = [
                Command::Set,
                Command::Add,
                Command::Replace,
                Command::Append,
                Command::Prepend,
                Command::Cas,
            ][usize::from(m.kind - 4)];
            Request::Storage(Storage {
                command,
                key,
                flags: m.n32,
                exptime: m.i32,
                cas: (command == Command::Cas).then_some(m.n64),
                noreply: m.flag,
                data: &m.data,
            })
        }
        10 => Request::Delete {
            key,
            noreply: m.flag,
        },
        11 => Request::Arithmetic {
            command: if m.opt { Command::Incr } else { Command::Decr },
            key,
            delta: m.n64,
            noreply: m.flag,
        },
        12 => Request::Touch {
            key,
            exptime: m.i32,
            noreply: m.flag,
        },
        13 => Request::Verbosity {
            level: m.n32,
            noreply: m.flag,
        },
        14 => Request::FlushAll {
            delay: m.opt.then_some(m.i32),
            noreply: m.flag,
        },
        15 => [
            Request::Version,
            Request::Quit,
            Request::Stats { args: b"" },
        ][m.n32 as usize % 3],
        16 => Request::Stats { args: key },
        17 | 18 => {
            let commands = [
                Command::MetaGet,
                Command::MetaSet,
                Command::MetaDelete,
                Command::MetaArithmetic,
                Command::MetaNoop,
                Command::MetaDebug,
            ];
            let command = commands[m.n32 as usize % commands.len()];
            let noop = command == Command::MetaNoop;
            Request::Meta(Meta {
                command,
                key: if noop { b"" } else { key },
                flags: &m.meta_flags,
                data: (command == Command::MetaSet).then_some(&m.data[..]),
                base64: false,
                quiet: m.meta_flags.split(|&b| b == b' ').any(|f| f == b"q"),
            })
        }
        _ => Request::Binary(Binary {
            opcode: m.n32 as u8,
            data_type: 0,
            vbucket: m.n32 as u16,
            opaque: m.n32,
            cas: m.n64,
            extras: &m.data[..m.data.len().min(8)],
            key,
            value: &m.data[m.data.len().min(8)..],
        }),
    };
    let bytes = req.to_vec();
    (req, bytes)
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES, when set, runs more (or fewer) cases than the default here.
        cases: std::env::var("PROPTEST_CASES").map_or(512, |v| v.parse().unwrap_or(512)),
        ..ProptestConfig::default()
    })]

    #[test]
    fn requests_roundtrip(m in material()) {
        let (req, bytes) = request(&m);
        prop_assert_eq!(bytes.len(), req.buffer_len());
        let parsed = Request::parse(&bytes);
        prop_assert_eq!(parsed, Ok(req), "{:?}", String::from_utf8_lossy(&bytes));
        // The same request in a datagram.
        let mut dgram = McHeader::single(9).to_bytes().to_vec();
        dgram.extend_from_slice(&bytes);
        let (h, again) = parse_datagram(&dgram).unwrap();
        prop_assert_eq!(h.request_id, 9);
        prop_assert_eq!(again, req);
    }

    #[test]
    fn multi_key_gets_iterate_every_key(keys in proptest::collection::vec(short_key(), 1..40),
                                        spaces in proptest::collection::vec(1usize..4, 40)) {
        let mut line = b"gets".to_vec();
        for (k, n) in keys.iter().zip(&spaces) {
            line.extend(std::iter::repeat_n(b' ', *n));
            line.extend_from_slice(k);
        }
        line.extend_from_slice(b"\r\n");
        let req = Request::parse(&line).unwrap();
        let got: Vec<&[u8]> = req.keys().collect();
        let want: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(req.key(), Some(&keys[0][..]));
        let Request::Retrieval(r) = req else { unreachable!() };
        prop_assert_eq!(r.keys.len(), keys.len());
    }

    #[test]
    fn keys_over_250_bytes_or_with_nul_or_cr_are_refused(k in key(), extra in key(), bad in 0u8..0x20, at in any::<usize>()) {
        let mut long = k.clone();
        long.extend_from_slice(&extra);
        let line = [b"get ".as_slice(), &long, b"\r\n"].concat();
        if long.len() > 250 {
            prop_assert_eq!(Request::parse(&line), Err(proto::Error::KeyTooLong));
        }
        let mut ctl = k;
        let i = at % ctl.len();
        // As in memcached: NUL (it reads the line as a C string) and CR are not key bytes;
        // LF ends the line; every other control byte, and DEL, is.
        ctl[i] = if bad == b'\n' { 0x7f } else { bad };
        prop_assume!(ctl.len() <= 250);
        let line = [b"delete ".as_slice(), &ctl, b"\r\n"].concat();
        if bad == 0 || bad == b'\r' {
            prop_assert_eq!(Request::parse(&line), Err(proto::Error::IllegalKey));
        } else {
            match Request::parse(&line) {
                Ok(Request::Delete { key, .. }) => prop_assert_eq!(key, &ctl[..]),
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }

    #[test]
    fn storage_data_must_match_the_declared_size(k in short_key(), d in data(), delta in 1usize..5, longer in any::<bool>()) {
        // No CR in the data, so a short declared size cannot land on a CRLF by chance.
        let d: Vec<u8> = d.into_iter().map(|b| if b == b'\r' { b'x' } else { b }).collect();
        let declared = if longer { d.len() + delta } else { d.len().saturating_sub(delta) };
        prop_assume!(declared != d.len());
        let mut req = b"set ".to_vec();
        req.extend_from_slice(&k);
        req.extend_from_slice(format!(" 0 0 {declared}\r\n").as_bytes());
        req.extend_from_slice(&d);
        req.extend_from_slice(b"\r\n");
        let r = Request::parse(&req);
        prop_assert!(matches!(r, Err(proto::Error::BadDataLength)), "{:?}", r);
    }

    #[test]
    fn request_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(req) = Request::parse(&bytes) {
            let again = req.to_vec();
            prop_assert_eq!(Request::parse(&again), Ok(req));
        }
        let _ = parse_datagram(&bytes);
    }

    #[test]
    fn request_parser_never_panics_on_near_misses(m in material(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4), cut in any::<usize>()) {
        let (_, mut bytes) = request(&m);
        for (at, x) in flips {
            let i = at % bytes.len();
            bytes[i] ^= x;
        }
        let cut = cut % (bytes.len() + 1);
        if let Ok(req) = Request::parse(&bytes[..cut]) {
            let again = req.to_vec();
            prop_assert_eq!(Request::parse(&again), Ok(req));
        }
    }

    #[test]
    fn responses_roundtrip(k in key(), d in data(), flags in any::<u32>(), cas in proptest::option::of(any::<u64>()),
                           n in any::<u64>(), which in 0usize..20) {
        let text: &[u8] = b"some text";
        let items = [
            Response::Value(Value { key: &k, flags, cas, data: &d }),
            Response::End,
            Response::Stored,
            Response::NotStored,
            Response::Exists,
            Response::NotFound,
            Response::Deleted,
            Response::Touched,
            Response::Ok,
            Response::Reset,
            Response::Number(n),
            Response::Version(b"1.6.18"),
            Response::Stat { name: b"curr_items", value: b"12" },
            Response::Error,
            Response::ClientError(text),
            Response::ServerError(text),
            Response::Meta { status: MetaStatus::Hd, flags: b"c1 f2" },
            Response::MetaValue { flags: b"f0 s3", data: &d },
            Response::Meta { status: MetaStatus::Mn, flags: b"" },
            Response::MetaDebug(b"foo exp=-1"),
        ];
        let item = items[which];
        let mut bytes = Vec::new();
        item.emit_to(&mut bytes);
        prop_assert_eq!(bytes.len(), item.buffer_len());
        let (back, rest) = Response::parse(&bytes).unwrap();
        prop_assert_eq!(back, item);
        prop_assert!(rest.is_empty());
    }

    #[test]
    fn reassembly_is_independent_of_cut_and_order(
        items in proptest::collection::vec((short_key(), data()), 0..6),
        chunk in 1usize..400,
        seed in any::<u64>(),
    ) {
        // memcached 1.6: one message per key, END on the last; each message cut into
        // datagrams; deliver the datagrams of each message in a shuffled order.
        let mut messages: Vec<Vec<u8>> = items
            .iter()
            .map(|(k, d)| {
                let mut m = Vec::new();
                Response::Value(Value { key: k, flags: 0, cas: None, data: d }).emit_to(&mut m);
                m
            })
            .collect();
        match messages.last_mut() {
            Some(last) => last.extend_from_slice(b"END\r\n"),
            None => messages.push(b"END\r\n".to_vec()),
        }
        let mut r = Reassembler::new(1 << 20);
        let mut rng = seed;
        let mut progress = Progress::Incomplete;
        for (mi, m) in messages.iter().enumerate() {
            let chunks: Vec<&[u8]> = m.chunks(chunk).collect();
            let count = chunks.len() as u16;
            let mut order: Vec<usize> = (0..chunks.len()).collect();
            for i in (1..order.len()).rev() {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                order.swap(i, (rng >> 33) as usize % (i + 1));
            }
            for (n, &i) in order.iter().enumerate() {
                let h = McHeader { request_id: 5, sequence: i as u16, count, reserved: 0 };
                progress = r.push(h, chunks[i]).unwrap();
                let last = mi + 1 == messages.len() && n + 1 == order.len();
                prop_assert_eq!(progress == Progress::Complete, last);
            }
        }
        prop_assert_eq!(progress, Progress::Complete);
        prop_assert_eq!(r.message(), &messages.concat()[..]);
        let values: Vec<_> = ResponseReader::new(r.message()).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(values.len(), items.len() + 1);
    }

    #[test]
    fn response_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = ResponseReader::status(&bytes);
        for item in ResponseReader::new(&bytes) {
            let Ok(item) = item else { break };
            let mut out = Vec::new();
            item.emit_to(&mut out);
            prop_assert_eq!(Response::parse(&out).map(|(r, _)| r), Ok(item));
        }
    }

    #[test]
    fn hit_replies_read_back_as_the_item(k in key(), d in proptest::collection::vec(any::<u8>(), 0..1200),
                                         flags in any::<u32>(), cas in proptest::option::of(any::<u64>()),
                                         rid in any::<u16>(), sport in any::<u16>()) {
        let ep = UdpEndpoints {
            src_mac: [2, 0, 0, 0, 0, 7],
            dst_mac: [2, 0, 0, 0, 0, 1],
            vlan: None,
            inner_vlan: None,
            src_ip: Ipv4Addr::new(10, 0, 0, 7),
            dst_ip: Ipv4Addr::new(10, 0, 0, 1),
            src_port: sport,
            dst_port: 11211,
            ttl: 64,
        };
        let get = Request::Retrieval(Retrieval {
            command: if cas.is_some() { Command::Gets } else { Command::Get },
            exptime: None,
            keys: Keys::single(&k).unwrap(),
        });
        let mut frame = Vec::new();
        proto::emit_request_frame_vec(&mut frame, &ep, 1, rid, &get).unwrap();
        let Ok(Classified::Udp(req)) = classify(&frame) else { panic!("request frame") };
        let value = Value { key: &k, flags, cas, data: &d };
        let copy = frame.clone();
        match write_hit_reply(&mut frame, &req, &value) {
            Ok(()) => {
                let Ok(Classified::Udp(reply)) = classify(&frame) else { panic!("reply frame") };
                prop_assert_eq!(reply.endpoints(), ep.reversed());
                let payload = reply.payload(&frame);
                prop_assert_eq!(McHeader::parse(payload).unwrap(), McHeader::single(rid));
                let items: Vec<_> = ResponseReader::new(&payload[8..]).collect();
                prop_assert_eq!(items, vec![Ok(Response::Value(value)), Ok(Response::End)]);
            }
            Err(e) => {
                prop_assert_eq!(e, proto::Error::ReplyTooLarge);
                prop_assert!(value.buffer_len() + 5 > proto::UDP_DATA_SIZE);
                prop_assert_eq!(frame, copy);
            }
        }
    }
}
