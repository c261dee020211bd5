//! UDP datagrams (RFC 768) over IPv4: length checks and the pseudo-header checksum.

use std::net::Ipv4Addr;

use super::checksum;
use super::Error;

pub(crate) mod field {
    use crate::wire::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = field::CHECKSUM.end;
/// The IPv4 protocol number of UDP.
pub const PROTOCOL: u8 = 17;

/// A read/write view of a UDP datagram.
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

    /// [`Error::Truncated`] if the buffer cannot hold the header or the length field's
    /// bytes; [`Error::BadUdpLength`] if the length field is below the header length.
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(self.len());
        if len < HEADER_LEN {
            return Err(Error::BadUdpLength);
        }
        if b.len() < len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        self.read_u16(field::SRC_PORT.start)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        self.read_u16(field::DST_PORT.start)
    }

    /// The length field: header plus payload.
    #[inline]
    #[allow(clippy::len_without_is_empty)] // a UDP datagram is never empty
    pub fn len(&self) -> u16 {
        self.read_u16(field::LENGTH.start)
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        self.read_u16(field::CHECKSUM.start)
    }

    /// Whether the checksum is absent (0) or valid for this pseudo-header. Always true when
    /// fuzzing.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if cfg!(fuzzing) || self.checksum() == 0 {
            return true;
        }
        let len = self.len();
        let acc = checksum::combine(
            checksum::pseudo_header(src, dst, PROTOCOL, len),
            checksum::sum(&self.buffer.as_ref()[..usize::from(len)]),
        );
        checksum::fold(acc) == 0xffff
    }

    /// The payload, up to the length field (anything after is not part of the datagram).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }

    #[inline(always)]
    fn read_u16(&self, at: usize) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[at], b[at + 1]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        self.write_u16(field::SRC_PORT.start, v);
    }

    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        self.write_u16(field::DST_PORT.start, v);
    }

    #[inline]
    pub fn set_len(&mut self, v: u16) {
        self.write_u16(field::LENGTH.start, v);
    }

    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        self.write_u16(field::CHECKSUM.start, v);
    }

    /// Computes the checksum over the pseudo-header, header and payload (length field
    /// bytes) and stores it (0 is sent as 0xffff, since 0 means "no checksum").
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let len = self.len();
        let acc = checksum::combine(
            checksum::pseudo_header(src, dst, PROTOCOL, len),
            checksum::sum(&self.buffer.as_ref()[..usize::from(len)]),
        );
        let ck = checksum::finish(acc);
        self.set_checksum(if ck == 0 { 0xffff } else { ck });
    }

    /// Applies an RFC 1624 update for a covered 16-bit word (header, payload or
    /// pseudo-header) that changed from `old` to `new`. No-op when the checksum is absent.
    #[inline]
    pub fn update_checksum_u16(&mut self, old: u16, new: u16) {
        self.update_checksum(checksum::delta_u16(old, new));
    }

    /// [`update_checksum_u16`](Self::update_checksum_u16) for a 32-bit word (an address).
    #[inline]
    pub fn update_checksum_u32(&mut self, old: u32, new: u32) {
        self.update_checksum(checksum::delta_u32(old, new));
    }

    /// Applies covered changes whose RFC 1624 deltas ([`checksum::delta_u16`],
    /// [`checksum::delta_u32`]) sum to `delta`, once. An absent checksum (0) stays absent,
    /// and a result of 0 is sent as 0xffff (0 means "no checksum" over IPv4).
    #[inline]
    pub fn update_checksum(&mut self, delta: u64) {
        let ck = self.checksum();
        if ck != 0 {
            let n = checksum::apply(ck, delta);
            self.set_checksum(if n == 0 { 0xffff } else { n });
        }
    }

    /// Sets the source port, updating the checksum incrementally.
    #[inline]
    pub fn set_src_port_incremental(&mut self, v: u16) {
        let old = self.src_port();
        self.set_src_port(v);
        self.update_checksum_u16(old, v);
    }

    /// Sets the destination port, updating the checksum incrementally.
    #[inline]
    pub fn set_dst_port_incremental(&mut self, v: u16) {
        let old = self.dst_port();
        self.set_dst_port(v);
        self.update_checksum_u16(old, v);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..len]
    }

    #[inline(always)]
    fn write_u16(&mut self, at: usize, v: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
}

/// A UDP header as a value (the length comes from the payload at emit time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
}

impl UdpRepr {
    /// Parses a checked datagram, verifying its checksum when present
    /// ([`Error::BadUdpChecksum`]).
    pub fn parse<T: AsRef<[u8]>>(
        packet: &Packet<T>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<UdpRepr, Error> {
        packet.check_len()?;
        if !packet.verify_checksum(src, dst) {
            return Err(Error::BadUdpChecksum);
        }
        Ok(UdpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
        })
    }

    /// Header bytes [`emit`](Self::emit) writes.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header in front of the `payload_len` bytes that already follow it in
    /// `buf` and fills the checksum. [`Error::Truncated`] if `buf` cannot hold header and
    /// payload; [`Error::BadUdpLength`] if the length does not fit 16 bits.
    pub fn emit(
        &self,
        buf: &mut [u8],
        payload_len: usize,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<(), Error> {
        let len = HEADER_LEN + payload_len;
        let len16 = u16::try_from(len).map_err(|_| Error::BadUdpLength)?;
        if buf.len() < len {
            return Err(Error::Truncated);
        }
        let mut p = Packet::new_unchecked(&mut buf[..len]);
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_len(len16);
        p.fill_checksum(src, dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);

    fn datagram() -> Vec<u8> {
        let mut d = vec![
            0xbf, 0x00, 0x2b, 0xcb, 0x00, 0x0c, 0x00, 0x00, b'a', b'b', b'c', b'd',
        ];
        let mut p = Packet::new_unchecked(&mut d[..]);
        p.fill_checksum(SRC, DST);
        d
    }

    #[test]
    fn test_parse() {
        let d = datagram();
        let p = Packet::new_checked(&d[..]).unwrap();
        assert_eq!(p.src_port(), 48896);
        assert_eq!(p.dst_port(), 11211);
        assert_eq!(p.len(), 12);
        assert_eq!(p.payload(), b"abcd");
        assert!(p.verify_checksum(SRC, DST));
        if !cfg!(fuzzing) {
            assert!(!p.verify_checksum(SRC, Ipv4Addr::new(192, 168, 1, 3)));
            assert_eq!(UdpRepr::parse(&p, DST, DST), Err(Error::BadUdpChecksum));
        }
        assert_eq!(
            UdpRepr::parse(&p, SRC, DST),
            Ok(UdpRepr {
                src_port: 48896,
                dst_port: 11211
            })
        );
    }

    #[test]
    fn test_zero_checksum_is_absent() {
        let mut d = datagram();
        d[6] = 0;
        d[7] = 0;
        let p = Packet::new_checked(&d[..]).unwrap();
        assert!(p.verify_checksum(SRC, Ipv4Addr::new(1, 2, 3, 4)));
        let mut p = Packet::new_checked(&mut d[..]).unwrap();
        p.set_dst_port_incremental(1);
        assert_eq!(p.checksum(), 0, "absent checksum stays absent");
    }

    #[test]
    fn test_emit() {
        let d = datagram();
        let mut out = d.clone();
        out[..8].fill(0);
        UdpRepr {
            src_port: 48896,
            dst_port: 11211,
        }
        .emit(&mut out, 4, SRC, DST)
        .unwrap();
        assert_eq!(out, d);
        assert_eq!(
            UdpRepr {
                src_port: 1,
                dst_port: 2
            }
            .emit(&mut out, 5, SRC, DST),
            Err(Error::Truncated)
        );
    }

    #[test]
    fn test_impossible_len() {
        let d = datagram();
        assert_eq!(Packet::new_checked(&d[..7]).unwrap_err(), Error::Truncated);
        assert_eq!(Packet::new_checked(&d[..11]).unwrap_err(), Error::Truncated);
        let mut b = datagram();
        b[5] = 7;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            Error::BadUdpLength
        );
    }

    #[test]
    fn test_incremental() {
        let mut d = datagram();
        let mut p = Packet::new_checked(&mut d[..]).unwrap();
        p.set_src_port_incremental(7);
        p.set_dst_port_incremental(0xffff);
        // The pseudo-header's addresses change too: update for both.
        let new_src = Ipv4Addr::new(10, 1, 2, 3);
        p.update_checksum_u32(u32::from(SRC), u32::from(new_src));
        assert!(p.verify_checksum(new_src, DST));
    }
}
