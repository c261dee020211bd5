//! Property tests for `kvlb::wire`: emit-then-parse is the identity for every header,
//! rewrites keep checksums valid, and no byte string makes `classify` panic.

use std::net::Ipv4Addr;

use kvlb::wire::{
    self, arp, checksum, classify, emit_arp, ipv4, udp, ArpRepr, Classified, EtherType,
    EthernetRepr, IpProtocol, Ipv4Repr, McHeader, Retarget, UdpEndpoints, UdpFrameMut, UdpRepr,
    VlanTag,
};
use proptest::prelude::*;

fn mac() -> impl Strategy<Value = [u8; 6]> {
    any::<[u8; 6]>()
}

fn ip() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn vlan() -> impl Strategy<Value = Option<VlanTag>> {
    prop_oneof![
        Just(None),
        (prop_oneof![Just(0x8100u16), Just(0x88a8u16)], any::<u16>())
            .prop_map(|(tpid, tci)| Some(VlanTag { tpid, tci })),
    ]
}

fn endpoints() -> impl Strategy<Value = UdpEndpoints> {
    (
        mac(),
        mac(),
        vlan(),
        vlan(),
        ip(),
        ip(),
        any::<u16>(),
        any::<u16>(),
        any::<u8>(),
    )
        .prop_map(
            |(src_mac, dst_mac, vlan, inner, src_ip, dst_ip, src_port, dst_port, ttl)| {
                UdpEndpoints {
                    src_mac,
                    dst_mac,
                    vlan,
                    // An inner tag only under an outer one, as on the wire.
                    inner_vlan: vlan.and(inner),
                    src_ip,
                    dst_ip,
                    src_port,
                    dst_port,
                    ttl,
                }
            },
        )
}

/// Sends a frame to `ep` (addresses and ports) with request id `rid`, one setter per field:
/// what `UdpFrameMut::retarget` does in one pass.
fn set_one_by_one(w: &mut UdpFrameMut<'_>, ep: &UdpEndpoints, rid: u16) {
    w.set_src_mac(ep.src_mac);
    w.set_dst_mac(ep.dst_mac);
    w.set_src_ip(ep.src_ip);
    w.set_dst_ip(ep.dst_ip);
    w.set_src_port(ep.src_port);
    w.set_dst_port(ep.dst_port);
    w.set_request_id(rid).unwrap();
}

fn udp_frame(bytes: &[u8]) -> wire::UdpFrame {
    match classify(bytes) {
        Ok(Classified::Udp(u)) => u,
        other => panic!("not a UDP frame: {other:?}"),
    }
}

proptest! {
    #[test]
    fn ethernet_roundtrip(dst in mac(), src in mac(), vlan in vlan(), inner in vlan(),
                          ethertype in prop_oneof![Just(0x0800u16), Just(0x0806), Just(0x86dd), 0x0600u16..0x8100]) {
        let repr = EthernetRepr {
            dst,
            src,
            vlan,
            inner_vlan: vlan.and(inner),
            ethertype: EtherType::from(ethertype),
        };
        let mut buf = vec![0u8; repr.header_len()];
        repr.emit(&mut buf).unwrap();
        prop_assert_eq!(EthernetRepr::parse(&buf), Ok(repr));
        let mut short = vec![0u8; repr.header_len() - 1];
        prop_assert_eq!(repr.emit(&mut short), Err(wire::Error::Truncated));
    }

    #[test]
    fn ipv4_roundtrip(src in ip(), dst in ip(), proto in any::<u8>(), payload_len in 0u16..2000,
                      ttl in any::<u8>(), dscp_ecn in any::<u8>(), ident in any::<u16>(), df in any::<bool>()) {
        let repr = Ipv4Repr {
            src,
            dst,
            protocol: IpProtocol::from(proto),
            payload_len,
            ttl,
            dscp_ecn,
            ident,
            dont_frag: df,
        };
        let mut buf = vec![0u8; 20 + usize::from(payload_len)];
        repr.emit(&mut buf).unwrap();
        let packet = ipv4::Packet::new_checked(&buf[..]).unwrap();
        prop_assert!(packet.verify_checksum());
        prop_assert_eq!(Ipv4Repr::parse(&packet), Ok(repr));
    }

    #[test]
    fn udp_roundtrip(src in ip(), dst in ip(), sport in any::<u16>(), dport in any::<u16>(),
                     payload in proptest::collection::vec(any::<u8>(), 0..600)) {
        let repr = UdpRepr { src_port: sport, dst_port: dport };
        let mut buf = vec![0u8; 8];
        buf.extend_from_slice(&payload);
        repr.emit(&mut buf, payload.len(), src, dst).unwrap();
        let packet = udp::Packet::new_checked(&buf[..]).unwrap();
        prop_assert_ne!(packet.checksum(), 0);
        prop_assert!(packet.verify_checksum(src, dst));
        prop_assert_eq!(UdpRepr::parse(&packet, src, dst), Ok(repr));
        prop_assert_eq!(packet.payload(), &payload[..]);
    }

    #[test]
    fn arp_roundtrip(op in any::<u16>(), sm in mac(), si in ip(), tm in mac(), ti in ip()) {
        let repr = ArpRepr {
            operation: arp::Operation::from(op),
            sender_mac: sm,
            sender_ip: si,
            target_mac: tm,
            target_ip: ti,
        };
        let mut buf = [0u8; arp::PACKET_LEN];
        repr.emit(&mut buf).unwrap();
        prop_assert_eq!(ArpRepr::parse(&arp::Packet::new_checked(&buf[..]).unwrap()), Ok(repr));
        let mut frame = [0u8; 70];
        let n = emit_arp(&mut frame, sm, tm, None, &repr).unwrap();
        match classify(&frame[..n]) {
            Ok(Classified::Arp(a)) => prop_assert_eq!(a.arp, repr),
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn mc_header_roundtrip(rid in any::<u16>(), seq in any::<u16>(), count in any::<u16>(), reserved in any::<u16>()) {
        let h = McHeader { request_id: rid, sequence: seq, count, reserved };
        prop_assert_eq!(McHeader::parse(&h.to_bytes()), Ok(h));
    }

    #[test]
    fn emitted_frames_classify_to_their_endpoints(ep in endpoints(), ident in any::<u16>(),
                                                  msg in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let mut buf = vec![0u8; 2048];
        let n = ep.emit_message(&mut buf, ident, McHeader::single(7), &msg).unwrap();
        prop_assert!(n >= wire::MIN_FRAME_LEN);
        let f = udp_frame(&buf[..n]);
        prop_assert_eq!(f.endpoints(), UdpEndpoints { ttl: ipv4::DEFAULT_TTL, ..ep });
        prop_assert_eq!(f.ttl, ep.ttl);
        prop_assert_eq!(&f.payload(&buf[..n])[8..], &msg[..]);
    }

    #[test]
    fn rewrites_keep_the_frame_valid(ep in endpoints(), msg in proptest::collection::vec(any::<u8>(), 8..300),
                                     new_ep in endpoints(), rid in any::<u16>(), new_len in 0usize..400,
                                     swap in any::<bool>()) {
        let mut buf = vec![0u8; 2048];
        let n = ep.emit_message(&mut buf, 1, McHeader::single(3), &msg).unwrap();
        let f = udp_frame(&buf[..n]);
        let mut w = f.rewrite(&mut buf).unwrap();
        set_one_by_one(&mut w, &new_ep, rid);
        w.set_ttl(new_ep.ttl);
        if swap {
            w.swap_endpoints();
        }
        w.set_payload_len(new_len).unwrap();
        let after = *w.layout();
        let end = after.ip_end();
        // classify verifies both checksums: every incremental update was right.
        prop_assert_eq!(udp_frame(&buf[..end.max(wire::MIN_FRAME_LEN)]), after);
        if new_len >= 8 {
            prop_assert_eq!(McHeader::parse(after.payload(&buf)).unwrap().request_id, rid);
        }
    }

    #[test]
    fn retarget_equals_the_setters(ep in endpoints(), msg in proptest::collection::vec(any::<u8>(), 8..300),
                                   new_ep in endpoints(), rid in any::<u16>(), no_udp_checksum in any::<bool>()) {
        let mut buf = vec![0u8; 2048];
        let n = ep.emit_message(&mut buf, 1, McHeader::single(3), &msg).unwrap();
        buf.truncate(n);
        if no_udp_checksum {
            // 0 = no checksum: the rewrite must keep it absent.
            let at = ep.headers_len() - 2;
            buf[at..at + 2].fill(0);
        }
        let f = udp_frame(&buf);
        let mut by_setters = buf.clone();
        let mut w = f.rewrite(&mut by_setters).unwrap();
        set_one_by_one(&mut w, &new_ep, rid);
        let layout_by_setters = *w.layout();
        let mut w = f.rewrite(&mut buf).unwrap();
        w.retarget(&Retarget {
            src_mac: new_ep.src_mac,
            dst_mac: new_ep.dst_mac,
            src_ip: new_ep.src_ip,
            dst_ip: new_ep.dst_ip,
            src_port: new_ep.src_port,
            dst_port: new_ep.dst_port,
            request_id: rid,
        }).unwrap();
        let after = *w.layout();
        prop_assert_eq!(after, layout_by_setters);
        prop_assert_eq!(&buf, &by_setters);
        // classify verifies both checksums.
        prop_assert_eq!(udp_frame(&buf), after);
        prop_assert_eq!(after.udp_checksum, !no_udp_checksum);
    }

    #[test]
    fn incremental_update_equals_full_recompute(data in proptest::collection::vec(any::<u8>(), 2..200),
                                                 word in any::<usize>(), new in any::<u16>()) {
        let mut data = data;
        if data.len() % 2 == 1 {
            data.push(0);
        }
        let at = (word % (data.len() / 2)) * 2;
        let ck = checksum::checksum(&data);
        let old = u16::from_be_bytes([data[at], data[at + 1]]);
        data[at..at + 2].copy_from_slice(&new.to_be_bytes());
        let full = checksum::checksum(&data);
        let inc = checksum::update_u16(ck, old, new);
        // 0x0000 and 0xffff are the two zeros of ones'-complement arithmetic.
        prop_assert!(inc == full || (inc | full) == 0xffff && (inc & full) == 0,
                     "inc {:#06x} full {:#06x}", inc, full);
    }

    #[test]
    fn classify_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(Classified::Udp(f)) = classify(&bytes) {
            prop_assert!(f.ip_end() <= bytes.len());
            prop_assert_eq!(f.payload(&bytes).len(), usize::from(f.payload_len));
        }
    }

    #[test]
    fn classify_never_panics_on_mutated_frames(ep in endpoints(), msg in proptest::collection::vec(any::<u8>(), 0..64),
                                                flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
                                                cut in any::<usize>()) {
        let mut buf = vec![0u8; 256];
        let n = ep.emit_message(&mut buf, 1, McHeader::single(1), &msg).unwrap();
        buf.truncate(n);
        for (at, x) in flips {
            let i = at % buf.len();
            buf[i] ^= x;
        }
        let cut = cut % (buf.len() + 1);
        if let Ok(Classified::Udp(f)) = classify(&buf[..cut]) {
            prop_assert!(f.ip_end() <= cut);
        }
    }
}
