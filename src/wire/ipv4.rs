//! IPv4 headers (RFC 791): options, fragment detection, header checksum.

use std::net::Ipv4Addr;

use super::checksum;
use super::Error;

/// The protocol carried by an IPv4 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpProtocol {
    Icmp,
    Tcp,
    Udp,
    Unknown(u8),
}

impl From<u8> for IpProtocol {
    #[inline]
    fn from(v: u8) -> Self {
        match v {
            1 => IpProtocol::Icmp,
            6 => IpProtocol::Tcp,
            17 => IpProtocol::Udp,
            other => IpProtocol::Unknown(other),
        }
    }
}

impl From<IpProtocol> for u8 {
    #[inline]
    fn from(v: IpProtocol) -> u8 {
        match v {
            IpProtocol::Icmp => 1,
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Unknown(other) => other,
        }
    }
}

pub(crate) mod field {
    use crate::wire::Field;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
}

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = field::DST_ADDR.end;
/// Default TTL of packets kvlb originates (Linux's default).
pub const DEFAULT_TTL: u8 = 64;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// A read/write view of an IPv4 packet (header, options and payload).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without checks; accessors may panic on a short or inconsistent buffer.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len); no accessor can panic then.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the header length and total length fields are consistent with each
    /// other and with the buffer (which may be longer, e.g. Ethernet padding).
    ///
    /// [`Error::Truncated`] if the buffer is shorter than the fixed header, the header
    /// length or the total length; [`Error::BadIpHeaderLen`] if IHL < 5;
    /// [`Error::BadIpLength`] if the total length is smaller than the header.
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = usize::from(self.header_len());
        if header_len < HEADER_LEN {
            return Err(Error::BadIpHeaderLen);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(Error::BadIpLength);
        }
        if len < header_len || len < total_len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4), options included.
    #[inline]
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    #[inline]
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    #[inline]
    pub fn total_len(&self) -> u16 {
        self.read_u16(field::LENGTH.start)
    }

    #[inline]
    pub fn ident(&self) -> u16 {
        self.read_u16(field::IDENT.start)
    }

    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.read_u16(field::FLG_OFF.start) & FLAG_DF != 0
    }

    /// Whether this packet is a fragment (more fragments follow or offset ≠ 0).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.read_u16(field::FLG_OFF.start) & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    #[inline]
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::PROTOCOL])
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        self.read_u16(field::CHECKSUM.start)
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::SRC_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::DST_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Whether the header checksum is valid. Always true when fuzzing, so the fuzzer
    /// reaches the code behind the check.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        if cfg!(fuzzing) {
            return true;
        }
        checksum::verify(&self.buffer.as_ref()[..usize::from(self.header_len())])
    }

    /// The options (empty without).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.header_len())]
    }

    /// The payload, up to the total length (Ethernet padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[usize::from(self.header_len())..usize::from(self.total_len())]
    }

    #[inline(always)]
    fn read_u16(&self, at: usize) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[at], b[at + 1]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    pub fn set_version_and_header_len(&mut self, header_len: u8) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((header_len / 4) & 0x0f);
    }

    #[inline]
    pub fn set_dscp_ecn(&mut self, v: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = v;
    }

    #[inline]
    pub fn set_total_len(&mut self, v: u16) {
        self.write_u16(field::LENGTH.start, v);
    }

    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        self.write_u16(field::IDENT.start, v);
    }

    /// Clears the MF flag and the fragment offset and sets DF as given.
    #[inline]
    pub fn set_unfragmented(&mut self, dont_frag: bool) {
        self.write_u16(field::FLG_OFF.start, if dont_frag { FLAG_DF } else { 0 });
    }

    #[inline]
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }

    #[inline]
    pub fn set_protocol(&mut self, v: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = u8::from(v);
    }

    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        self.write_u16(field::CHECKSUM.start, v);
    }

    #[inline]
    pub fn set_src_addr(&mut self, ip: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&ip.octets());
    }

    #[inline]
    pub fn set_dst_addr(&mut self, ip: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&ip.octets());
    }

    /// Recomputes the header checksum from scratch.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let len = usize::from(self.header_len());
        let ck = checksum::checksum(&self.buffer.as_ref()[..len]);
        self.set_checksum(ck);
    }

    /// Sets the source address and updates the header checksum incrementally (RFC 1624).
    #[inline]
    pub fn set_src_addr_incremental(&mut self, ip: Ipv4Addr) {
        let old = u32::from(self.src_addr());
        self.set_src_addr(ip);
        let ck = checksum::update_u32(self.checksum(), old, u32::from(ip));
        self.set_checksum(ck);
    }

    /// Sets the destination address and updates the header checksum incrementally.
    #[inline]
    pub fn set_dst_addr_incremental(&mut self, ip: Ipv4Addr) {
        let old = u32::from(self.dst_addr());
        self.set_dst_addr(ip);
        let ck = checksum::update_u32(self.checksum(), old, u32::from(ip));
        self.set_checksum(ck);
    }

    /// Sets the total length and updates the header checksum incrementally.
    #[inline]
    pub fn set_total_len_incremental(&mut self, v: u16) {
        let old = self.total_len();
        self.set_total_len(v);
        let ck = checksum::update_u16(self.checksum(), old, v);
        self.set_checksum(ck);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = (
            usize::from(self.header_len()),
            usize::from(self.total_len()),
        );
        &mut self.buffer.as_mut()[start..end]
    }

    #[inline(always)]
    fn write_u16(&mut self, at: usize, v: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
}

/// An IPv4 header without options, as a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: IpProtocol,
    /// Payload length (total length minus header length).
    pub payload_len: u16,
    pub ttl: u8,
    pub dscp_ecn: u8,
    pub ident: u16,
    pub dont_frag: bool,
}

impl Ipv4Repr {
    /// Parses a checked packet: [`Error::BadIpVersion`], [`Error::BadIpChecksum`] and
    /// [`Error::IpFragment`] on top of the length checks. Options are skipped.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Ipv4Repr, Error> {
        packet.check_len()?;
        if packet.version() != 4 {
            return Err(Error::BadIpVersion);
        }
        if !packet.verify_checksum() {
            return Err(Error::BadIpChecksum);
        }
        if packet.is_fragment() {
            return Err(Error::IpFragment);
        }
        Ok(Ipv4Repr {
            src: packet.src_addr(),
            dst: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: packet.total_len() - u16::from(packet.header_len()),
            ttl: packet.ttl(),
            dscp_ecn: packet.dscp_ecn(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
        })
    }

    /// Header bytes [`emit`](Self::emit) writes (no options).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes a 20-byte header with its checksum at the start of `buf`.
    /// [`Error::Truncated`] if `buf` is shorter; [`Error::BadIpLength`] if the payload
    /// length does not fit the 16-bit total length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Error> {
        if buf.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let total = self
            .payload_len
            .checked_add(HEADER_LEN as u16)
            .ok_or(Error::BadIpLength)?;
        let mut p = Packet::new_unchecked(&mut buf[..HEADER_LEN]);
        p.set_version_and_header_len(HEADER_LEN as u8);
        p.set_dscp_ecn(self.dscp_ecn);
        p.set_total_len(total);
        p.set_ident(self.ident);
        p.set_unfragmented(self.dont_frag);
        p.set_ttl(self.ttl);
        p.set_protocol(self.protocol);
        p.set_src_addr(self.src);
        p.set_dst_addr(self.dst);
        p.fill_checksum();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 20-byte header, total length 30, id 0x1234, DF, TTL 64, UDP, 10.0.0.1 -> 10.0.0.2.
    fn packet() -> Vec<u8> {
        let mut p = vec![
            0x45, 0x00, 0x00, 0x1e, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 10, 0, 0, 1,
            10, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
        ];
        let ck = checksum::checksum(&p[..20]);
        p[10..12].copy_from_slice(&ck.to_be_bytes());
        p
    }

    #[test]
    fn test_parse() {
        let bytes = packet();
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 30);
        assert!(p.dont_frag());
        assert!(!p.is_fragment());
        assert!(p.verify_checksum());
        assert_eq!(p.payload(), &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        let r = Ipv4Repr::parse(&p).unwrap();
        assert_eq!(
            r,
            Ipv4Repr {
                src: Ipv4Addr::new(10, 0, 0, 1),
                dst: Ipv4Addr::new(10, 0, 0, 2),
                protocol: IpProtocol::Udp,
                payload_len: 10,
                ttl: 64,
                dscp_ecn: 0,
                ident: 0x1234,
                dont_frag: true,
            }
        );
    }

    #[test]
    fn test_emit() {
        let bytes = packet();
        let r = Ipv4Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()).unwrap();
        let mut out = vec![0u8; 20];
        r.emit(&mut out).unwrap();
        assert_eq!(out, bytes[..20]);
    }

    #[test]
    fn test_padding_and_options() {
        let mut bytes = packet();
        // Ethernet padding after the total length is not payload.
        bytes.extend_from_slice(&[0xee; 6]);
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.payload().len(), 10);
        // A 24-byte header with one option word.
        let mut opt = packet();
        opt.splice(20..20, [1, 1, 1, 0]);
        opt[0] = 0x46;
        opt[2..4].copy_from_slice(&34u16.to_be_bytes());
        opt[10..12].copy_from_slice(&[0, 0]);
        let ck = checksum::checksum(&opt[..24]);
        opt[10..12].copy_from_slice(&ck.to_be_bytes());
        let p = Packet::new_checked(&opt[..]).unwrap();
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert_eq!(p.payload().len(), 10);
        assert!(Ipv4Repr::parse(&p).is_ok());
    }

    #[test]
    fn test_impossible_len() {
        let bytes = packet();
        assert_eq!(
            Packet::new_checked(&bytes[..19]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Packet::new_checked(&bytes[..29]).unwrap_err(),
            Error::Truncated
        );
        let mut b = packet();
        b[0] = 0x44;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            Error::BadIpHeaderLen
        );
        let mut b = packet();
        b[0] = 0x4f; // 60-byte header in a 30-byte packet
        b[2..4].copy_from_slice(&60u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Truncated);
        let mut b = packet();
        b[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::BadIpLength);
    }

    #[test]
    fn test_rejects() {
        let mut b = packet();
        b[0] = 0x65;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Ipv4Repr::parse(&p), Err(Error::BadIpVersion));
        let mut b = packet();
        b[8] = 63; // TTL changed without fixing the checksum
        let p = Packet::new_checked(&b[..]).unwrap();
        if !cfg!(fuzzing) {
            assert_eq!(Ipv4Repr::parse(&p), Err(Error::BadIpChecksum));
        }
        for flg_off in [0x2000u16, 0x0001, 0x4001] {
            let mut b = packet();
            b[6..8].copy_from_slice(&flg_off.to_be_bytes());
            let mut p = Packet::new_checked(&mut b[..]).unwrap();
            p.fill_checksum();
            assert_eq!(Ipv4Repr::parse(&p), Err(Error::IpFragment));
        }
    }

    #[test]
    fn test_incremental_setters() {
        let mut b = packet();
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_src_addr_incremental(Ipv4Addr::new(192, 168, 77, 1));
        p.set_dst_addr_incremental(Ipv4Addr::new(172, 16, 0, 9));
        p.set_total_len_incremental(28);
        assert!(p.verify_checksum());
        let inc = p.checksum();
        p.fill_checksum();
        // Equal up to the two representations of zero.
        assert!(inc == p.checksum() || inc ^ p.checksum() == 0xffff);
    }
}
