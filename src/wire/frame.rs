//! Whole frames: classify an Ethernet frame in one pass, rewrite a classified UDP frame in
//! place with incremental checksums, and emit new UDP and ARP frames.

use std::net::Ipv4Addr;

use super::arp::{self, ArpRepr};
use super::ethernet::{self, EtherType, EthernetRepr};
use super::ipv4::{self, IpProtocol, Ipv4Repr};
use super::mc_header::{self, McHeader};
use super::udp::{self, UdpRepr};
use super::{checksum, Error, Mac};

/// Shortest Ethernet frame on the wire without the FCS; emitted frames are zero-padded to it.
pub const MIN_FRAME_LEN: usize = 60;

/// What [`classify`] found in a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Classified {
    /// A valid, unfragmented IPv4/UDP datagram.
    Udp(UdpFrame),
    /// An Ethernet/IPv4 ARP packet.
    Arp(ArpFrame),
}

/// Where the headers of a validated Ethernet(+VLAN)/IPv4/UDP frame are, and what they say.
///
/// A plain value: it does not borrow the frame. Offsets are from the start of the frame;
/// the UDP payload (memcached frame header and message) is
/// `payload_offset .. payload_offset + payload_len`. Anything after the IPv4 total length
/// (Ethernet padding) is not part of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpFrame {
    /// Ethernet header (MACs, VLAN tags); `eth.ethertype` is IPv4.
    pub eth: EthernetRepr,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub ttl: u8,
    /// IPv4 header offset (14, 18 or 22).
    pub ip_offset: u16,
    /// UDP header offset (after IPv4 options, if any).
    pub udp_offset: u16,
    /// UDP payload offset (`udp_offset + 8`).
    pub payload_offset: u16,
    /// UDP payload length (UDP length field − 8).
    pub payload_len: u16,
    /// Whether the UDP checksum is present (non-zero); rewrites keep it absent if not.
    pub udp_checksum: bool,
}

impl UdpFrame {
    /// End of the IPv4 datagram within the frame.
    #[inline]
    pub fn ip_end(&self) -> usize {
        usize::from(self.payload_offset) + usize::from(self.payload_len)
    }

    /// The UDP payload inside `frame`, the buffer this was classified from (empty if
    /// `frame` is shorter than the layout says).
    #[inline]
    pub fn payload<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        frame
            .get(usize::from(self.payload_offset)..self.ip_end())
            .unwrap_or(&[])
    }

    /// The addresses, ports and VLAN tags as received, for emitting frames on the same
    /// path (use [`UdpEndpoints::reversed`] to answer); the TTL is kvlb's default, not the
    /// received one.
    #[inline]
    pub fn endpoints(&self) -> UdpEndpoints {
        UdpEndpoints {
            src_mac: self.eth.src,
            dst_mac: self.eth.dst,
            vlan: self.eth.vlan,
            inner_vlan: self.eth.inner_vlan,
            src_ip: self.src_ip,
            dst_ip: self.dst_ip,
            src_port: self.src_port,
            dst_port: self.dst_port,
            ttl: ipv4::DEFAULT_TTL,
        }
    }

    /// A rewriter over `frame` (the buffer this was classified from). Checks only that the
    /// buffer is long enough for the layout ([`Error::Truncated`]), so it is cheap; after
    /// that no method of the rewriter can panic.
    #[inline]
    pub fn rewrite<'a>(&self, frame: &'a mut [u8]) -> Result<UdpFrameMut<'a>, Error> {
        if frame.len() < self.ip_end() {
            return Err(Error::Truncated);
        }
        Ok(UdpFrameMut {
            buf: frame,
            layout: *self,
        })
    }
}

/// An ARP packet and the Ethernet header that carried it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpFrame {
    pub eth: EthernetRepr,
    pub arp: ArpRepr,
}

/// Validates an Ethernet frame down to UDP in one pass and says where everything is.
///
/// Accepts Ethernet II with up to two VLAN tags, then either ARP (Ethernet/IPv4) or IPv4
/// (header checksum verified, options skipped, fragments refused) carrying UDP (checksum
/// verified when non-zero). Anything else is an [`Error`] naming why; it never panics and
/// never reads outside `frame`.
///
/// Always inlined: the caller then builds the `UdpFrame` in place instead of copying a
/// returned struct that was just written field by field (a store-forwarding stall that
/// cost as much as the parse itself).
#[inline(always)]
pub fn classify(frame: &[u8]) -> Result<Classified, Error> {
    let eth = EthernetRepr::parse(frame)?;
    let ip_offset = eth.header_len();
    match eth.ethertype {
        EtherType::Ipv4 => {}
        EtherType::Arp => {
            let packet = arp::Packet::new_checked(&frame[ip_offset..])?;
            let arp = ArpRepr::parse(&packet)?;
            return Ok(Classified::Arp(ArpFrame { eth, arp }));
        }
        _ => return Err(Error::NotIpv4),
    }
    let ip_bytes = &frame[ip_offset..];
    let ip = ipv4::Packet::new_checked(ip_bytes)?;
    if ip.version() != 4 {
        return Err(Error::BadIpVersion);
    }
    if !ip.verify_checksum() {
        return Err(Error::BadIpChecksum);
    }
    if ip.is_fragment() {
        return Err(Error::IpFragment);
    }
    if ip.protocol() != IpProtocol::Udp {
        return Err(Error::NotUdp);
    }
    let (src_ip, dst_ip, ttl) = (ip.src_addr(), ip.dst_addr(), ip.ttl());
    let ip_header_len = usize::from(ip.header_len());
    let datagram = ip.payload();
    let udp = udp::Packet::new_checked(datagram).map_err(|e| match e {
        // The UDP length claims more than the IPv4 datagram holds.
        Error::Truncated if datagram.len() >= udp::HEADER_LEN => Error::BadUdpLength,
        e => e,
    })?;
    if !udp.verify_checksum(src_ip, dst_ip) {
        return Err(Error::BadUdpChecksum);
    }
    let udp_offset = ip_offset + ip_header_len;
    // All offsets fit u16: the IPv4 total length is a u16 and the L2 header is ≤ 22 bytes,
    // so the sums below are < 65536 + 22 only for the frame end, which is not stored.
    Ok(Classified::Udp(UdpFrame {
        eth,
        src_ip,
        dst_ip,
        src_port: udp.src_port(),
        dst_port: udp.dst_port(),
        ttl,
        ip_offset: ip_offset as u16,
        udp_offset: udp_offset as u16,
        payload_offset: (udp_offset + udp::HEADER_LEN) as u16,
        payload_len: udp.len() - udp::HEADER_LEN as u16,
        udp_checksum: udp.checksum() != 0,
    }))
}

/// In-place rewriting of a classified UDP frame. Every setter keeps the IPv4 header
/// checksum and (when present) the UDP checksum valid, incrementally (RFC 1624) where only
/// a field changes. The layout is kept in step with the bytes.
#[derive(Debug)]
pub struct UdpFrameMut<'a> {
    buf: &'a mut [u8],
    layout: UdpFrame,
}

impl<'a> UdpFrameMut<'a> {
    /// The layout as rewritten so far.
    #[inline]
    pub fn layout(&self) -> &UdpFrame {
        &self.layout
    }

    /// The frame bytes up to the end of the IPv4 datagram.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.layout.ip_end()]
    }

    #[inline]
    fn ip(&mut self) -> ipv4::Packet<&mut [u8]> {
        let at = usize::from(self.layout.ip_offset);
        ipv4::Packet::new_unchecked(&mut self.buf[at..])
    }

    #[inline]
    fn udp(&mut self) -> udp::Packet<&mut [u8]> {
        let at = usize::from(self.layout.udp_offset);
        let end = self.layout.ip_end();
        udp::Packet::new_unchecked(&mut self.buf[at..end])
    }

    /// No production caller (the core rewrites with [`retarget`](Self::retarget)): this and
    /// the other field setters below are the field-by-field reference that
    /// `tests/wire_props.rs` checks `retarget` against, and the fuzz target's rewrites.
    #[inline]
    pub fn set_src_mac(&mut self, mac: Mac) {
        ethernet::Frame::new_unchecked(&mut *self.buf).set_src_addr(mac);
        self.layout.eth.src = mac;
    }

    #[inline]
    pub fn set_dst_mac(&mut self, mac: Mac) {
        ethernet::Frame::new_unchecked(&mut *self.buf).set_dst_addr(mac);
        self.layout.eth.dst = mac;
    }

    /// Sets the source address; IPv4 and UDP (pseudo-header) checksums updated.
    #[inline]
    pub fn set_src_ip(&mut self, ip: Ipv4Addr) {
        let old = self.layout.src_ip;
        self.ip().set_src_addr_incremental(ip);
        self.udp()
            .update_checksum_u32(u32::from(old), u32::from(ip));
        self.layout.src_ip = ip;
    }

    /// Sets the destination address; IPv4 and UDP (pseudo-header) checksums updated.
    #[inline]
    pub fn set_dst_ip(&mut self, ip: Ipv4Addr) {
        let old = self.layout.dst_ip;
        self.ip().set_dst_addr_incremental(ip);
        self.udp()
            .update_checksum_u32(u32::from(old), u32::from(ip));
        self.layout.dst_ip = ip;
    }

    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        self.udp().set_src_port_incremental(port);
        self.layout.src_port = port;
    }

    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        self.udp().set_dst_port_incremental(port);
        self.layout.dst_port = port;
    }

    /// Sends the frame elsewhere in one pass: both MACs, both IPv4 addresses, both UDP
    /// ports and the memcached request id, with each checksum updated once from the sum of
    /// all its changes (RFC 1624) instead of once per field. The bytes and layout end as
    /// the corresponding setters would leave them. [`Error::TruncatedFrameHeader`] if the
    /// payload is shorter than the 8-byte memcached frame header (nothing written).
    #[inline]
    pub fn retarget(&mut self, to: &Retarget) -> Result<(), Error> {
        let l = self.layout;
        if usize::from(l.payload_len) < mc_header::HEADER_LEN {
            return Err(Error::TruncatedFrameHeader);
        }
        let (ip, udp, pay) = (
            usize::from(l.ip_offset),
            usize::from(l.udp_offset),
            usize::from(l.payload_offset),
        );
        // `rewrite` checked that the buffer holds the layout, and the layout came from
        // `classify`, so none of the slices below is out of bounds; they are still checked.
        let b = &mut *self.buf;
        let old_rid = u16::from_be_bytes([b[pay], b[pay + 1]]);
        let (src_ip, dst_ip) = (u32::from(to.src_ip), u32::from(to.dst_ip));
        // Both addresses: covered by the IPv4 header checksum and, through the
        // pseudo-header, by the UDP checksum, which also covers ports and request id.
        let addrs = checksum::delta_u32(u32::from(l.src_ip), src_ip)
            + checksum::delta_u32(u32::from(l.dst_ip), dst_ip);
        let ports = checksum::delta_u16(l.src_port, to.src_port)
            + checksum::delta_u16(l.dst_port, to.dst_port)
            + checksum::delta_u16(old_rid, to.request_id);
        b[0..6].copy_from_slice(&to.dst_mac);
        b[6..12].copy_from_slice(&to.src_mac);
        b[ip + 12..ip + 16].copy_from_slice(&src_ip.to_be_bytes());
        b[ip + 16..ip + 20].copy_from_slice(&dst_ip.to_be_bytes());
        let ck = checksum::apply(u16::from_be_bytes([b[ip + 10], b[ip + 11]]), addrs);
        b[ip + 10..ip + 12].copy_from_slice(&ck.to_be_bytes());
        b[udp..udp + 2].copy_from_slice(&to.src_port.to_be_bytes());
        b[udp + 2..udp + 4].copy_from_slice(&to.dst_port.to_be_bytes());
        b[pay..pay + 2].copy_from_slice(&to.request_id.to_be_bytes());
        self.udp().update_checksum(addrs + ports);
        self.layout.eth.src = to.src_mac;
        self.layout.eth.dst = to.dst_mac;
        self.layout.src_ip = to.src_ip;
        self.layout.dst_ip = to.dst_ip;
        self.layout.src_port = to.src_port;
        self.layout.dst_port = to.dst_port;
        Ok(())
    }

    /// Swaps source and destination MACs, IPs and ports: the frame now travels back to its
    /// sender. Checksums are sums, so a swap leaves them unchanged. (Replies are written by
    /// `proto`; this stays for the property tests and the fuzz target.)
    #[inline]
    pub fn swap_endpoints(&mut self) {
        let l = self.layout;
        let mut eth = ethernet::Frame::new_unchecked(&mut *self.buf);
        eth.set_src_addr(l.eth.dst);
        eth.set_dst_addr(l.eth.src);
        let mut ip = self.ip();
        ip.set_src_addr(l.dst_ip);
        ip.set_dst_addr(l.src_ip);
        let mut udp = self.udp();
        udp.set_src_port(l.dst_port);
        udp.set_dst_port(l.src_port);
        self.layout.eth.src = l.eth.dst;
        self.layout.eth.dst = l.eth.src;
        self.layout.src_ip = l.dst_ip;
        self.layout.dst_ip = l.src_ip;
        self.layout.src_port = l.dst_port;
        self.layout.dst_port = l.src_port;
    }

    /// Sets the TTL; IPv4 checksum updated.
    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        let mut ip = self.ip();
        let proto = u8::from(ip.protocol());
        let old = u16::from_be_bytes([ip.ttl(), proto]);
        ip.set_ttl(ttl);
        let ck = checksum::update_u16(ip.checksum(), old, u16::from_be_bytes([ttl, proto]));
        ip.set_checksum(ck);
        self.layout.ttl = ttl;
    }

    /// The memcached frame header at the start of the payload.
    #[inline]
    pub fn mc_header(&self) -> Result<McHeader, Error> {
        McHeader::parse(self.payload())
    }

    /// Rewrites the memcached frame header (e.g. a new request id toward a backend);
    /// the UDP checksum is updated incrementally. [`Error::TruncatedFrameHeader`] if the
    /// payload is shorter than 8 bytes (nothing written).
    #[inline]
    pub fn set_mc_header(&mut self, header: McHeader) -> Result<(), Error> {
        let old = self.mc_header()?;
        let at = usize::from(self.layout.payload_offset);
        header.emit(&mut self.buf[at..])?;
        let mut udp = self.udp();
        udp.update_checksum_u16(old.request_id, header.request_id);
        udp.update_checksum_u16(old.sequence, header.sequence);
        udp.update_checksum_u16(old.count, header.count);
        udp.update_checksum_u16(old.reserved, header.reserved);
        Ok(())
    }

    /// Sets only the request id of the memcached frame header.
    #[inline]
    pub fn set_request_id(&mut self, id: u16) -> Result<(), Error> {
        let h = self.mc_header()?;
        self.set_mc_header(McHeader {
            request_id: id,
            ..h
        })
    }

    /// The UDP payload.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf[usize::from(self.layout.payload_offset)..self.layout.ip_end()]
    }

    /// The UDP payload, writable. Changing it invalidates the UDP checksum: finish with
    /// [`set_payload_len`](Self::set_payload_len).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.layout.ip_end();
        &mut self.buf[usize::from(self.layout.payload_offset)..end]
    }

    /// Declares a new UDP payload length (the caller has written the payload and grown or
    /// shrunk the buffer): fixes the IPv4 total length (checksum updated incrementally) and
    /// the UDP length, and recomputes the UDP checksum over the new payload if present.
    /// [`Error::Truncated`] if the buffer cannot hold it, [`Error::BadIpLength`] if the
    /// datagram would exceed 65535 bytes; nothing is written then.
    pub fn set_payload_len(&mut self, len: usize) -> Result<(), Error> {
        let l = self.layout;
        let udp_len = udp::HEADER_LEN + len;
        let ip_total = usize::from(l.udp_offset - l.ip_offset) + udp_len;
        let ip_total = u16::try_from(ip_total).map_err(|_| Error::BadIpLength)?;
        if self.buf.len() < usize::from(l.payload_offset) + len {
            return Err(Error::Truncated);
        }
        self.ip().set_total_len_incremental(ip_total);
        self.layout.payload_len = len as u16;
        let mut udp = self.udp();
        udp.set_len(udp_len as u16);
        if l.udp_checksum {
            udp.fill_checksum(l.src_ip, l.dst_ip);
        }
        Ok(())
    }
}

/// Where [`UdpFrameMut::retarget`] sends a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retarget {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    /// The memcached frame header's request id.
    pub request_id: u16,
}

/// Addresses and ports of a UDP frame to emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UdpEndpoints {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub vlan: Option<ethernet::VlanTag>,
    pub inner_vlan: Option<ethernet::VlanTag>,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub ttl: u8,
}

impl UdpEndpoints {
    /// The same path in the other direction (VLAN tags kept). The tests' expected reply
    /// path; no production caller.
    #[inline]
    pub fn reversed(&self) -> UdpEndpoints {
        UdpEndpoints {
            src_mac: self.dst_mac,
            dst_mac: self.src_mac,
            src_ip: self.dst_ip,
            dst_ip: self.src_ip,
            src_port: self.dst_port,
            dst_port: self.src_port,
            ..*self
        }
    }

    #[inline]
    fn eth(&self, ethertype: EtherType) -> EthernetRepr {
        EthernetRepr {
            dst: self.dst_mac,
            src: self.src_mac,
            vlan: self.vlan,
            inner_vlan: self.inner_vlan,
            ethertype,
        }
    }

    /// Bytes of Ethernet, IPv4 and UDP headers in front of the UDP payload.
    #[inline]
    pub fn headers_len(&self) -> usize {
        self.eth(EtherType::Ipv4).header_len() + ipv4::HEADER_LEN + udp::HEADER_LEN
    }

    /// Writes Ethernet, IPv4 (no options, DF clear, id `ip_ident`) and UDP headers with
    /// checksums in front of a payload the caller already placed at
    /// `buf[headers_len()..headers_len() + payload_len]`, zero-pads to
    /// [`MIN_FRAME_LEN`], and returns the frame length.
    ///
    /// [`Error::Truncated`] if `buf` is too short, [`Error::BadIpLength`] if the payload
    /// does not fit one IPv4 datagram.
    pub fn emit_headers(
        &self,
        buf: &mut [u8],
        payload_len: usize,
        ip_ident: u16,
    ) -> Result<usize, Error> {
        let eth = self.eth(EtherType::Ipv4);
        let ip_at = eth.header_len();
        let udp_at = ip_at + ipv4::HEADER_LEN;
        let udp_len = udp::HEADER_LEN + payload_len;
        let ip_payload = u16::try_from(udp_len)
            .ok()
            .filter(|&n| usize::from(n) + ipv4::HEADER_LEN <= usize::from(u16::MAX))
            .ok_or(Error::BadIpLength)?;
        let end = udp_at + udp_len;
        let frame_len = end.max(MIN_FRAME_LEN);
        if buf.len() < frame_len {
            return Err(Error::Truncated);
        }
        eth.emit(buf)?;
        Ipv4Repr {
            src: self.src_ip,
            dst: self.dst_ip,
            protocol: IpProtocol::Udp,
            payload_len: ip_payload,
            ttl: self.ttl,
            dscp_ecn: 0,
            ident: ip_ident,
            dont_frag: false,
        }
        .emit(&mut buf[ip_at..])?;
        UdpRepr {
            src_port: self.src_port,
            dst_port: self.dst_port,
        }
        .emit(&mut buf[udp_at..], payload_len, self.src_ip, self.dst_ip)?;
        buf[end..frame_len].fill(0);
        Ok(frame_len)
    }

    /// Emits a whole frame whose UDP payload is `header` followed by `message`; returns
    /// its length. Errors as [`emit_headers`](Self::emit_headers).
    pub fn emit_message(
        &self,
        buf: &mut [u8],
        ip_ident: u16,
        header: McHeader,
        message: &[u8],
    ) -> Result<usize, Error> {
        let at = self.headers_len();
        let payload_len = mc_header::HEADER_LEN + message.len();
        if buf.len() < at + payload_len {
            return Err(Error::Truncated);
        }
        header.emit(&mut buf[at..])?;
        buf[at + mc_header::HEADER_LEN..at + payload_len].copy_from_slice(message);
        self.emit_headers(buf, payload_len, ip_ident)
    }
}

/// Emits an ARP frame (padded to [`MIN_FRAME_LEN`]) from `src_mac` to `dst_mac`
/// (use [`ethernet::BROADCAST`] for requests); returns its length.
pub fn emit_arp(
    buf: &mut [u8],
    src_mac: Mac,
    dst_mac: Mac,
    vlan: Option<ethernet::VlanTag>,
    arp: &ArpRepr,
) -> Result<usize, Error> {
    let eth = EthernetRepr {
        dst: dst_mac,
        src: src_mac,
        vlan,
        inner_vlan: None,
        ethertype: EtherType::Arp,
    };
    let at = eth.header_len();
    let frame_len = (at + arp::PACKET_LEN).max(MIN_FRAME_LEN);
    if buf.len() < frame_len {
        return Err(Error::Truncated);
    }
    eth.emit(buf)?;
    arp.emit(&mut buf[at..])?;
    buf[at + arp::PACKET_LEN..frame_len].fill(0);
    Ok(frame_len)
}

/// The ARP reply to `request` (an ARP request for an address the NF owns), as a frame
/// from `my_mac` back to the requester on the same VLAN. Returns its length.
pub fn emit_arp_reply(buf: &mut [u8], request: &ArpFrame, my_mac: Mac) -> Result<usize, Error> {
    emit_arp(
        buf,
        my_mac,
        request.arp.sender_mac,
        request.eth.vlan,
        &request.arp.reply_to(my_mac),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ethernet::VlanTag;

    fn endpoints() -> UdpEndpoints {
        UdpEndpoints {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            vlan: None,
            inner_vlan: None,
            src_ip: Ipv4Addr::new(10, 0, 0, 1),
            dst_ip: Ipv4Addr::new(10, 0, 0, 2),
            src_port: 40000,
            dst_port: 11211,
            ttl: 64,
        }
    }

    fn frame(ep: &UdpEndpoints, msg: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let n = ep
            .emit_message(&mut buf, 7, McHeader::single(0x4242), msg)
            .unwrap();
        buf.truncate(n);
        buf
    }

    fn udp(c: Result<Classified, Error>) -> UdpFrame {
        match c {
            Ok(Classified::Udp(u)) => u,
            other => panic!("not UDP: {other:?}"),
        }
    }

    #[test]
    fn emit_then_classify() {
        let ep = endpoints();
        let f = frame(&ep, b"get foobar\r\n");
        assert_eq!(f.len(), 14 + 20 + 8 + 8 + 12);
        let u = udp(classify(&f));
        assert_eq!(u.endpoints(), ep);
        assert_eq!(u.ip_offset, 14);
        assert_eq!(u.udp_offset, 34);
        assert_eq!(u.payload_offset, 42);
        assert_eq!(
            u.payload(&f),
            b"\x42\x42\x00\x00\x00\x01\x00\x00get foobar\r\n"
        );
        assert!(u.udp_checksum);
    }

    #[test]
    fn short_frames_are_padded_and_padding_ignored() {
        let ep = endpoints();
        let f = frame(&ep, b"");
        assert_eq!(f.len(), MIN_FRAME_LEN);
        let u = udp(classify(&f));
        assert_eq!(u.payload_len, 8);
        assert_eq!(u.ip_end(), 50);
    }

    #[test]
    fn vlan_tags() {
        let mut ep = endpoints();
        ep.vlan = Some(VlanTag {
            tpid: 0x88a8,
            tci: 10,
        });
        ep.inner_vlan = Some(VlanTag::dot1q(20));
        let f = frame(&ep, b"version\r\n");
        let u = udp(classify(&f));
        assert_eq!(u.ip_offset, 22);
        assert_eq!(u.endpoints(), ep);
    }

    #[test]
    fn rejects_with_reasons() {
        let ep = endpoints();
        let good = frame(&ep, b"get foobar\r\n");
        let mut ipv6 = good.clone();
        ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(classify(&ipv6), Err(Error::NotIpv4));
        assert_eq!(classify(&good[..13]), Err(Error::Truncated));
        assert_eq!(classify(&good[..30]), Err(Error::Truncated));
        assert_eq!(classify(&good[..good.len() - 1]), Err(Error::Truncated));

        let mut tcp = good.clone();
        tcp[14 + 9] = 6;
        ipv4::Packet::new_unchecked(&mut tcp[14..]).fill_checksum();
        assert_eq!(classify(&tcp), Err(Error::NotUdp));

        let mut frag = good.clone();
        frag[14 + 6] = 0x20;
        ipv4::Packet::new_unchecked(&mut frag[14..]).fill_checksum();
        assert_eq!(classify(&frag), Err(Error::IpFragment));

        let mut udp_len = good.clone();
        udp_len[34 + 5] += 1;
        assert_eq!(classify(&udp_len), Err(Error::BadUdpLength));
        udp_len[34 + 4..34 + 6].copy_from_slice(&[0, 4]);
        assert_eq!(classify(&udp_len), Err(Error::BadUdpLength));

        if !cfg!(fuzzing) {
            let mut bad_ip = good.clone();
            bad_ip[14 + 8] ^= 1;
            assert_eq!(classify(&bad_ip), Err(Error::BadIpChecksum));
            let mut bad_udp = good.clone();
            *bad_udp.last_mut().unwrap() ^= 1;
            assert_eq!(classify(&bad_udp), Err(Error::BadUdpChecksum));
            // A zero UDP checksum is "none": accepted.
            bad_udp[34 + 6..34 + 8].copy_from_slice(&[0, 0]);
            assert!(!udp(classify(&bad_udp)).udp_checksum);
        }
    }

    #[test]
    fn rewrite_keeps_checksums_valid() {
        let ep = endpoints();
        let mut f = frame(&ep, b"get foo\r\n");
        let u = udp(classify(&f));
        let mut w = u.rewrite(&mut f).unwrap();
        w.set_src_mac([9; 6]);
        w.set_dst_mac([8; 6]);
        w.set_src_ip(Ipv4Addr::new(192, 168, 3, 4));
        w.set_dst_ip(Ipv4Addr::new(172, 16, 99, 1));
        w.set_src_port(5555);
        w.set_dst_port(11311);
        w.set_ttl(17);
        w.set_request_id(0xbeef).unwrap();
        let after = *w.layout();
        let u2 = udp(classify(&f));
        assert_eq!(u2, after);
        assert_eq!(u2.src_ip, Ipv4Addr::new(192, 168, 3, 4));
        assert_eq!(u2.dst_port, 11311);
        assert_eq!(u2.ttl, 17);
        assert_eq!(McHeader::parse(u2.payload(&f)).unwrap().request_id, 0xbeef);

        let mut w = u2.rewrite(&mut f).unwrap();
        w.swap_endpoints();
        let swapped = *w.layout();
        assert_eq!(udp(classify(&f)), swapped);
        assert_eq!(swapped.src_ip, Ipv4Addr::new(172, 16, 99, 1));
    }

    #[test]
    fn rewrite_payload_length() {
        let ep = endpoints();
        let mut f = frame(&ep, b"get foo\r\n");
        let u = udp(classify(&f));
        let new_msg = b"VALUE foo 0 3\r\nbar\r\nEND\r\n";
        let at = usize::from(u.payload_offset) + 8;
        f.resize(at + new_msg.len(), 0);
        f[at..].copy_from_slice(new_msg);
        let mut w = u.rewrite(&mut f).unwrap();
        assert_eq!(w.set_payload_len(100_000), Err(Error::BadIpLength));
        assert_eq!(w.set_payload_len(1000), Err(Error::Truncated));
        w.set_payload_len(8 + new_msg.len()).unwrap();
        let after = *w.layout();
        let u2 = udp(classify(&f));
        assert_eq!(u2, after);
        assert_eq!(&u2.payload(&f)[8..], new_msg);
        // Shrinking works the same way.
        let mut w = u2.rewrite(&mut f).unwrap();
        w.set_payload_len(8 + 5).unwrap();
        let u3 = udp(classify(&f));
        assert_eq!(&u3.payload(&f)[8..], b"VALUE");
    }

    #[test]
    fn rewrite_needs_the_whole_layout() {
        let ep = endpoints();
        let mut f = frame(&ep, b"get foobar\r\n");
        let u = udp(classify(&f));
        let n = f.len();
        assert_eq!(u.rewrite(&mut f[..n - 1]).unwrap_err(), Error::Truncated);
        assert_eq!(u.payload(&f[..n - 1]), b"");
        // A payload shorter than a frame header cannot take a request id.
        let mut tiny = frame(&ep, b"");
        tiny.truncate(14 + 20 + 8 + 8);
        tiny[38..40].copy_from_slice(&[0, 12]);
        tiny[40..42].copy_from_slice(&[0, 0]);
        let mut p = ipv4::Packet::new_unchecked(&mut tiny[14..]);
        p.set_total_len_incremental(32);
        let u = udp(classify(&tiny));
        let mut w = u.rewrite(&mut tiny).unwrap();
        assert_eq!(w.set_request_id(1), Err(Error::TruncatedFrameHeader));
        let before = tiny.clone();
        let mut w = u.rewrite(&mut tiny).unwrap();
        let to = Retarget {
            src_mac: [9; 6],
            dst_mac: [8; 6],
            src_ip: Ipv4Addr::new(1, 2, 3, 4),
            dst_ip: Ipv4Addr::new(5, 6, 7, 8),
            src_port: 1,
            dst_port: 2,
            request_id: 3,
        };
        assert_eq!(w.retarget(&to), Err(Error::TruncatedFrameHeader));
        assert_eq!(tiny, before, "a refused retarget writes nothing");
    }

    #[test]
    fn arp_frames() {
        let req = ArpRepr::request(
            [2, 0, 0, 0, 0, 9],
            Ipv4Addr::new(10, 0, 0, 9),
            Ipv4Addr::new(10, 0, 0, 1),
        );
        let mut buf = [0u8; 64];
        let n = emit_arp(
            &mut buf,
            [2, 0, 0, 0, 0, 9],
            ethernet::BROADCAST,
            Some(VlanTag::dot1q(5)),
            &req,
        )
        .unwrap();
        assert_eq!(n, MIN_FRAME_LEN);
        let Ok(Classified::Arp(a)) = classify(&buf[..n]) else {
            panic!("not ARP")
        };
        assert_eq!(a.arp, req);
        assert_eq!(a.eth.vlan, Some(VlanTag::dot1q(5)));
        let n = emit_arp_reply(&mut buf, &a, [2, 0, 0, 0, 0, 1]).unwrap();
        let Ok(Classified::Arp(r)) = classify(&buf[..n]) else {
            panic!("not ARP")
        };
        assert_eq!(r.arp.operation, arp::Operation::Reply);
        assert_eq!(r.arp.sender_ip, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(r.eth.dst, [2, 0, 0, 0, 0, 9]);
        assert_eq!(
            emit_arp(&mut buf[..59], [0; 6], [0; 6], None, &req),
            Err(Error::Truncated)
        );
    }
}
