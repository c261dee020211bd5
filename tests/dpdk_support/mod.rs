//! Helpers shared by the DPDK integration tests: pcap files, canned frames, EAL arguments
//! that do not collide with other DPDK processes, and cleanup of EAL's runtime directory.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// One frame of a pcap file: capture time (seconds, nanoseconds) and bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcapRecord {
    pub sec: u32,
    pub nsec: u32,
    pub data: Vec<u8>,
}

/// Writes a microsecond-precision Ethernet pcap.
pub fn write_pcap(path: &Path, records: &[PcapRecord]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for r in records {
        out.extend_from_slice(&r.sec.to_le_bytes());
        out.extend_from_slice(&(r.nsec / 1000).to_le_bytes());
        out.extend_from_slice(&(r.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(r.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&r.data);
    }
    std::fs::File::create(path)
        .and_then(|mut f| f.write_all(&out))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// Reads a pcap file of either byte order, in microsecond or nanosecond precision.
pub fn read_pcap(path: &Path) -> Vec<PcapRecord> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert!(b.len() >= 24, "{} is not a pcap file", path.display());
    let le = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    let be = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap());
    let (big_endian, nano) = match le(0) {
        0xa1b2_c3d4 => (false, false),
        0xa1b2_3c4d => (false, true),
        0xd4c3_b2a1 => (true, false),
        0x4d3c_b2a1 => (true, true),
        m => panic!("{}: unknown pcap magic {m:#x}", path.display()),
    };
    let u32_at = |i: usize| if big_endian { be(i) } else { le(i) };
    let mut out = Vec::new();
    let mut i = 24;
    while i + 16 <= b.len() {
        let (sec, frac, caplen) = (u32_at(i), u32_at(i + 4), u32_at(i + 8) as usize);
        i += 16;
        assert!(
            i + caplen <= b.len(),
            "truncated record in {}",
            path.display()
        );
        out.push(PcapRecord {
            sec,
            nsec: if nano { frac } else { frac * 1000 },
            data: b[i..i + caplen].to_vec(),
        });
        i += caplen;
    }
    out
}

/// An Ethernet/IPv4/UDP frame with a correct IPv4 header checksum (UDP checksum 0).
pub fn udp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.0);
    ip[16..20].copy_from_slice(&dst.0);
    let mut sum = 0u32;
    for c in ip.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&src.1.to_be_bytes());
    f.extend_from_slice(&dst.1.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// A memcached-over-UDP GET request frame (8-byte frame header, then the command).
pub fn memcached_get(request_id: u16, key: &str) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&request_id.to_be_bytes());
    payload.extend_from_slice(&[0, 0, 0, 1, 0, 0]);
    payload.extend_from_slice(format!("get {key}\r\n").as_bytes());
    udp_frame(
        [0x02, 0, 0, 0, 0, 0x01],
        [0x02, 0, 0, 0, 0, 0x09],
        ([10, 0, 0, 9], 40000 + request_id % 1000),
        ([10, 0, 0, 1], 11211),
        &payload,
    )
}

/// A prefix for EAL's runtime files unique to this process and call.
pub fn unique_prefix(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "kvlb-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// EAL arguments for a test: no hugepages, no PCI scan, no shared files or telemetry socket,
/// a private file prefix, one lcore.
pub fn eal_test_args(prefix: &str) -> Vec<String> {
    [
        "--no-huge",
        "--no-pci",
        "--no-shconf",
        "--no-telemetry",
        "-m",
        "256",
        "-l",
        "0",
        "--log-level=warning",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--file-prefix={prefix}")])
    .collect()
}

/// Removes EAL's runtime directory for a file prefix when dropped.
pub struct RuntimeDir(pub PathBuf);

impl RuntimeDir {
    pub fn new(prefix: &str) -> RuntimeDir {
        RuntimeDir(Path::new("/var/run/dpdk").join(prefix))
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether `merged` is `a` and `b` interleaved, each in its own order.
pub fn is_interleaving(merged: &[Vec<u8>], a: &[Vec<u8>], b: &[Vec<u8>]) -> bool {
    if merged.len() != a.len() + b.len() {
        return false;
    }
    // ok[j]: merged[..i+j] can be a[..i] and b[..j] interleaved (rolling over i).
    let mut ok = vec![false; b.len() + 1];
    ok[0] = true;
    for j in 1..=b.len() {
        ok[j] = ok[j - 1] && merged[j - 1] == b[j - 1];
    }
    for i in 1..=a.len() {
        ok[0] = ok[0] && merged[i - 1] == a[i - 1];
        for j in 1..=b.len() {
            let m = &merged[i + j - 1];
            ok[j] = (ok[j] && *m == a[i - 1]) || (ok[j - 1] && *m == b[j - 1]);
        }
    }
    ok[b.len()]
}
