//! ICMPv4 destination-unreachable messages: how kvlb learns at once that a backend's port or
//! host is gone (RFC 792: type 3 quotes the IPv4 header and the first 8 bytes of the
//! datagram that could not be delivered).

use std::net::Ipv4Addr;

use super::ethernet::{EtherType, EthernetRepr};
use super::ipv4::{self, IpProtocol};

/// ICMP type "destination unreachable".
pub const DEST_UNREACHABLE: u8 = 3;
/// Codes kvlb acts on: host unreachable and port unreachable.
pub const HOST_UNREACHABLE: u8 = 1;
pub const PORT_UNREACHABLE: u8 = 3;

/// What an ICMP host/port-unreachable says about the UDP datagram it quotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unreachable {
    /// The router or host that sent the ICMP message.
    pub reporter: Ipv4Addr,
    pub code: u8,
    pub quoted_src_ip: Ipv4Addr,
    pub quoted_dst_ip: Ipv4Addr,
    pub quoted_src_port: u16,
    pub quoted_dst_port: u16,
}

/// Parses an Ethernet frame carrying an ICMPv4 host or port unreachable that quotes a UDP
/// datagram. `None` for anything else (including malformed input); never panics. The ICMP
/// checksum is not verified: the message only ever makes kvlb probe sooner.
pub fn parse_unreachable(frame: &[u8]) -> Option<Unreachable> {
    let eth = EthernetRepr::parse(frame).ok()?;
    if eth.ethertype != EtherType::Ipv4 {
        return None;
    }
    let ip = frame.get(eth.header_len()..)?;
    let outer = ipv4::Packet::new_checked(ip).ok()?;
    if outer.protocol() != IpProtocol::Icmp {
        return None;
    }
    let ihl = usize::from(outer.header_len());
    let total = usize::from(outer.total_len()).min(ip.len());
    let icmp = ip.get(ihl..total)?;
    let (&typ, &code) = (icmp.first()?, icmp.get(1)?);
    if typ != DEST_UNREACHABLE || !(code == HOST_UNREACHABLE || code == PORT_UNREACHABLE) {
        return None;
    }
    // The quoted datagram is cut after 8 bytes of its payload, so its total length does
    // not match the buffer: check only what is read.
    let quoted = icmp.get(8..)?;
    if quoted.len() < ipv4::HEADER_LEN {
        return None;
    }
    let q = ipv4::Packet::new_unchecked(quoted);
    let qihl = usize::from(q.header_len());
    if qihl < ipv4::HEADER_LEN || q.protocol() != IpProtocol::Udp {
        return None;
    }
    let udp = quoted.get(qihl..qihl + 4)?;
    Some(Unreachable {
        reporter: outer.src_addr(),
        code,
        quoted_src_ip: q.src_addr(),
        quoted_dst_ip: q.dst_addr(),
        quoted_src_port: u16::from_be_bytes([udp[0], udp[1]]),
        quoted_dst_port: u16::from_be_bytes([udp[2], udp[3]]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{UdpEndpoints, MIN_FRAME_LEN};

    /// An ICMP port unreachable from 10.0.0.2 quoting a UDP datagram 10.0.0.1:40000 →
    /// 10.0.0.2:11211, built by hand.
    fn icmp_frame(typ: u8, code: u8) -> Vec<u8> {
        let ep = UdpEndpoints {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            vlan: None,
            inner_vlan: None,
            src_ip: Ipv4Addr::new(10, 0, 0, 1),
            dst_ip: Ipv4Addr::new(10, 0, 0, 2),
            src_port: 40000,
            dst_port: 11211,
            ttl: 64,
        };
        let mut original = vec![0u8; 128];
        ep.emit_headers(&mut original, 20, 7).unwrap();
        let quoted = &original[14..14 + 20 + 8];
        let mut icmp = vec![typ, code, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(quoted);
        let mut f = vec![0u8; 14 + 20];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let total = (20 + icmp.len()) as u16;
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[8] = 64;
        ip[9] = 1;
        ip[12..16].copy_from_slice(&[10, 0, 0, 2]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 1]);
        f.extend_from_slice(&icmp);
        f.resize(f.len().max(MIN_FRAME_LEN), 0);
        f
    }

    #[test]
    fn port_unreachable_names_the_quoted_destination() {
        let u = parse_unreachable(&icmp_frame(3, 3)).unwrap();
        assert_eq!(u.quoted_dst_ip, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(u.quoted_dst_port, 11211);
        assert_eq!(u.quoted_src_port, 40000);
        assert_eq!(u.reporter, Ipv4Addr::new(10, 0, 0, 2));
        assert!(
            parse_unreachable(&icmp_frame(3, 0)).is_none(),
            "net unreachable ignored"
        );
        assert!(
            parse_unreachable(&icmp_frame(8, 0)).is_none(),
            "echo request ignored"
        );
    }

    #[test]
    fn truncations_never_panic() {
        let f = icmp_frame(3, 3);
        for n in 0..f.len() {
            let _ = parse_unreachable(&f[..n]);
        }
    }
}
