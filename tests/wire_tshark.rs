//! Interop: frames kvlb emits decode as valid memcached in tshark's dissector. Requests
//! (get, gets, multi-get, set with noreply as sent to replicas, delete, incr, version
//! probe), a cache-hit reply written in place, and ARP frames.
//!
//! Wireshark's `memcache` UDP dissector (4.0, as in Debian 12) does not know memcached's
//! 8-byte UDP frame header: it dissects the UDP payload from its first byte, so real
//! memcached datagrams show as "Continuation". Two checks therefore:
//!
//! 1. The issue's exact command, `tshark -d udp.port==11211,memcache`, on the same frames
//!    emitted without the frame header: the memcached text kvlb writes is what the
//!    dissector expects, and the IPv4/UDP checksums verify.
//! 2. The real frames (with the header) through a 15-line Lua shim that dissects the frame
//!    header and hands the rest to Wireshark's own `memcache.udp` dissector. It must decode
//!    every frame through the shim; only a tshark built without Lua (`tshark -v` does not
//!    say "with Lua") skips it.
//!
//! Needs `tshark` (Debian package `tshark`); skipped with a loud message when it is absent,
//! and failing in CI, where `scripts/test.sh` installs it (see `tests/skip`).

mod skip;

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use kvlb::proto::{emit_request_frame_vec, write_hit_reply, Request, Storage, Value};
use kvlb::wire::ethernet::BROADCAST;
use kvlb::wire::{classify, emit_arp, ArpRepr, Classified, UdpEndpoints, VlanTag};

fn client() -> UdpEndpoints {
    UdpEndpoints {
        src_mac: [0x02, 0, 0, 0, 0, 0x07],
        dst_mac: [0x02, 0, 0, 0, 0, 0x01],
        vlan: None,
        inner_vlan: None,
        src_ip: Ipv4Addr::new(10, 0, 0, 7),
        dst_ip: Ipv4Addr::new(10, 0, 0, 1),
        src_port: 40001,
        dst_port: 11211,
        ttl: 64,
    }
}

/// A classic pcap file (microsecond timestamps, Ethernet link type).
fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    for (i, f) in frames.iter().enumerate() {
        out.extend_from_slice(&(1_700_000_000u32 + i as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    std::fs::write(path, out).expect("write pcap");
}

/// `tshark -v`'s text, or `None` (after reporting the skip) when tshark cannot run.
fn tshark_version() -> Option<String> {
    match Command::new("tshark").arg("-v").output() {
        Ok(o) if o.status.success() => {
            let v = String::from_utf8_lossy(&o.stdout).into_owned();
            skip::used("tshark", v.lines().next().unwrap_or("tshark"));
            Some(v)
        }
        _ => {
            skip::skip(
                "tshark",
                skip::Need::Installed,
                "tshark not found; install it (apt-get install tshark) to run the memcached \
                 dissector interop test",
            );
            None
        }
    }
}

fn tshark_available() -> bool {
    tshark_version().is_some()
}

/// Dissects memcached's UDP frame header and hands the message to Wireshark's own
/// `memcache.udp` dissector.
const FRAME_HEADER_LUA: &str = r#"
local p = Proto("mcudp", "memcached UDP frame header")
local f_rid = ProtoField.uint16("mcudp.request_id", "Request ID")
local f_seq = ProtoField.uint16("mcudp.sequence", "Sequence number")
local f_cnt = ProtoField.uint16("mcudp.count", "Datagram count")
local f_res = ProtoField.uint16("mcudp.reserved", "Reserved")
p.fields = { f_rid, f_seq, f_cnt, f_res }
local memcache = Dissector.get("memcache.udp")
function p.dissector(tvb, pinfo, tree)
    if tvb:len() < 8 then return 0 end
    local t = tree:add(p, tvb(0, 8))
    t:add(f_rid, tvb(0, 2)); t:add(f_seq, tvb(2, 2)); t:add(f_cnt, tvb(4, 2)); t:add(f_res, tvb(6, 2))
    if tvb:len() > 8 then memcache:call(tvb(8):tvb(), pinfo, tree) end
    return tvb:len()
end
DissectorTable.get("udp.port"):add(11211, p)
"#;

/// Runs tshark over `path` with `extra` arguments and returns one line of `|`-separated
/// fields per frame.
fn tshark_fields(path: &Path, extra: &[&str], fields: &[&str]) -> Result<Vec<String>, String> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(path)
        .args(extra)
        .args(["-T", "fields", "-E", "separator=|"])
        .args([
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "udp.check_checksum:TRUE",
        ]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

fn field(line: &str, i: usize) -> &str {
    line.split('|').nth(i).unwrap_or("")
}

/// The frames under test, with the memcached frame header, as kvlb sends them.
fn kvlb_frames() -> Vec<Vec<u8>> {
    let ep = client();
    let mut frames = Vec::new();
    let mut push = |req: &Request<'_>, rid: u16| {
        let mut f = Vec::new();
        emit_request_frame_vec(&mut f, &ep, rid, rid, req).unwrap();
        frames.push(f);
    };
    push(&Request::parse(b"get user:42\r\n").unwrap(), 1);
    push(&Request::parse(b"gets user:42\r\n").unwrap(), 2);
    push(&Request::parse(b"get a bb ccc\r\n").unwrap(), 3);
    push(
        &Request::Storage(Storage::set(b"hot:key", 5, 300, b"hello", true)),
        4,
    );
    push(&Request::parse(b"delete user:42 noreply\r\n").unwrap(), 5);
    push(&Request::parse(b"incr counter 7\r\n").unwrap(), 6);
    // kvlb's health probe.
    push(&Request::Version, 7);

    // A cache hit: the first GET turned into memcached's reply in place.
    let mut hit = frames[0].clone();
    let Ok(Classified::Udp(req)) = classify(&hit) else {
        panic!("request frame does not classify")
    };
    let value = Value {
        key: b"user:42",
        flags: 3,
        cas: None,
        data: b"the cached value",
    };
    write_hit_reply(&mut hit, &req, &value).unwrap();
    frames.push(hit);
    frames
}

/// The same frames with the frame header cut out (lengths and checksums rebuilt).
fn without_frame_header(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    frames
        .iter()
        .map(|f| {
            let Ok(Classified::Udp(u)) = classify(f) else {
                panic!("not UDP")
            };
            let msg = &u.payload(f)[8..];
            let ep = u.endpoints();
            let mut out = vec![0u8; ep.headers_len() + msg.len() + 64];
            out[ep.headers_len()..ep.headers_len() + msg.len()].copy_from_slice(msg);
            let n = ep.emit_headers(&mut out, msg.len(), 1).unwrap();
            out.truncate(n);
            out
        })
        .collect()
}

const FIELDS: &[&str] = &[
    "frame.protocols",
    "memcache.command",
    "memcache.key",
    "memcache.flags",
    "memcache.expiration",
    "memcache.value.length",
    "memcache.noreply",
    "memcache.response",
    "ip.checksum.status",
    "udp.checksum.status",
    "_ws.expert",
    "mcudp.request_id",
    "mcudp.count",
];

/// Checks the memcache fields of the eight frames of [`kvlb_frames`].
fn check_memcache_fields(lines: &[String], with_header: bool) {
    assert_eq!(lines.len(), 8, "{lines:#?}");
    for l in lines {
        eprintln!("{l}");
    }
    for (i, l) in lines.iter().enumerate() {
        assert!(
            field(l, 0).ends_with("memcache"),
            "frame {i} not memcache: {l}"
        );
        assert_eq!(field(l, 8), "1", "IPv4 checksum not good: {l}");
        assert_eq!(field(l, 9), "1", "UDP checksum not good: {l}");
        assert_eq!(field(l, 10), "", "tshark expert info: {l}");
        if with_header {
            // The hit reply keeps its request's id (1).
            let rid = if i == 7 { 1 } else { i + 1 };
            assert_eq!(field(l, 11), rid.to_string(), "request id: {l}");
            assert_eq!(field(l, 12), "1", "datagram count: {l}");
        }
    }
    let cmd_key = |i: usize| (field(&lines[i], 1), field(&lines[i], 2));
    assert_eq!(cmd_key(0), ("get", "user:42"));
    assert_eq!(cmd_key(1), ("gets", "user:42"));
    assert_eq!(field(&lines[2], 1), "get");
    assert_eq!(field(&lines[2], 2), "a,bb,ccc");
    assert_eq!(cmd_key(3), ("set", "hot:key"));
    assert_eq!(field(&lines[3], 3), "5");
    assert_eq!(field(&lines[3], 4), "300");
    assert_eq!(field(&lines[3], 5), "5");
    assert_eq!(field(&lines[3], 6), "noreply");
    assert_eq!(cmd_key(4), ("delete", "user:42"));
    assert_eq!(field(&lines[4], 6), "noreply");
    assert_eq!(cmd_key(5), ("incr", "counter"));
    assert_eq!(field(&lines[6], 1), "version");
    // The hit reply: a VALUE item with the item's key, flags and length.
    assert_eq!(
        field(&lines[7], 1),
        "",
        "a reply is not a command: {}",
        lines[7]
    );
    assert_eq!(field(&lines[7], 2), "user:42");
    assert_eq!(field(&lines[7], 3), "3");
    assert_eq!(field(&lines[7], 5), "16");
}

#[test]
fn tshark_memcache_dissector_reads_kvlb_messages() {
    if !tshark_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("kvlb-messages.pcap");
    write_pcap(&pcap, &without_frame_header(&kvlb_frames()));
    let lines = tshark_fields(&pcap, &["-d", "udp.port==11211,memcache"], &FIELDS[..11])
        .unwrap_or_else(|e| panic!("tshark: {e}"));
    check_memcache_fields(&lines, false);
}

#[test]
fn tshark_decodes_whole_kvlb_frames_with_the_frame_header() {
    let Some(version) = tshark_version() else {
        return;
    };
    if !version.contains("with Lua") {
        skip::skip(
            "tshark with Lua",
            skip::Need::Installed,
            "this tshark was built without Lua, so it cannot run the frame-header shim",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("kvlb.pcap");
    write_pcap(&pcap, &kvlb_frames());
    let lua = dir.path().join("mcudp.lua");
    std::fs::write(&lua, FRAME_HEADER_LUA).unwrap();
    let script = format!("lua_script:{}", lua.display());
    let lines = tshark_fields(&pcap, &["-X", &script], FIELDS)
        .unwrap_or_else(|e| panic!("tshark with the Lua frame-header shim failed: {e}"));
    assert_eq!(
        lines.len(),
        kvlb_frames().len(),
        "tshark decoded {} frames of {}",
        lines.len(),
        kvlb_frames().len()
    );
    let through_shim = lines.iter().filter(|l| l.contains("mcudp")).count();
    assert_eq!(
        through_shim,
        lines.len(),
        "the Lua shim dissected {through_shim} of {} frames:\n{}",
        lines.len(),
        lines.join("\n")
    );
    check_memcache_fields(&lines, true);
}

#[test]
fn tshark_decodes_arp_frames() {
    if !tshark_available() {
        return;
    }
    let arp = ArpRepr::request(
        [0x02, 0, 0, 0, 0, 0x07],
        Ipv4Addr::new(10, 0, 0, 7),
        Ipv4Addr::new(10, 0, 0, 1),
    );
    let mut req = vec![0u8; 64];
    let n = emit_arp(
        &mut req,
        arp.sender_mac,
        BROADCAST,
        Some(VlanTag::dot1q(5)),
        &arp,
    )
    .unwrap();
    req.truncate(n);
    let Ok(Classified::Arp(parsed)) = classify(&req) else {
        panic!("not ARP")
    };
    let mut reply = vec![0u8; 64];
    let n = kvlb::wire::emit_arp_reply(&mut reply, &parsed, [0x02, 0, 0, 0, 0, 0x01]).unwrap();
    reply.truncate(n);
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("arp.pcap");
    write_pcap(&pcap, &[req, reply]);
    let lines = tshark_fields(
        &pcap,
        &[],
        &[
            "frame.protocols",
            "arp.opcode",
            "arp.src.proto_ipv4",
            "arp.dst.proto_ipv4",
            "arp.src.hw_mac",
            "vlan.id",
            "_ws.expert",
        ],
    )
    .unwrap();
    for l in &lines {
        eprintln!("{l}");
    }
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0],
        "eth:ethertype:vlan:ethertype:arp|1|10.0.0.7|10.0.0.1|02:00:00:00:00:07|5|"
    );
    assert_eq!(
        lines[1],
        "eth:ethertype:vlan:ethertype:arp|2|10.0.0.1|10.0.0.7|02:00:00:00:00:01|5|"
    );
}
