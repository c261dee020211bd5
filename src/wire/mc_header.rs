//! Memcached's 8-byte UDP frame header (memcached `doc/protocol.txt`, "UDP protocol"):
//! request id, sequence number, total datagrams in the message, reserved — all 16-bit
//! big-endian. It starts every memcached UDP datagram in both directions.

use super::Error;

mod field {
    use crate::wire::{Field, Rest};
    pub const REQUEST_ID: Field = 0..2;
    pub const SEQUENCE: Field = 2..4;
    pub const COUNT: Field = 4..6;
    pub const RESERVED: Field = 6..8;
    pub const PAYLOAD: Rest = 8..;
}

/// Length of the frame header.
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// A read/write view of a frame header at the start of a UDP payload.
#[derive(Debug, Clone)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Wraps `buffer` without checks; accessors may panic on a buffer shorter than 8 bytes.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        Header { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len); no accessor can panic then.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let h = Self::new_unchecked(buffer);
        h.check_len()?;
        Ok(h)
    }

    /// [`Error::TruncatedFrameHeader`] if the buffer is shorter than 8 bytes.
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::TruncatedFrameHeader)
        } else {
            Ok(())
        }
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn request_id(&self) -> u16 {
        self.read_u16(field::REQUEST_ID.start)
    }

    #[inline]
    pub fn sequence(&self) -> u16 {
        self.read_u16(field::SEQUENCE.start)
    }

    #[inline]
    pub fn count(&self) -> u16 {
        self.read_u16(field::COUNT.start)
    }

    #[inline]
    pub fn reserved(&self) -> u16 {
        self.read_u16(field::RESERVED.start)
    }

    /// The memcached message bytes after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }

    #[inline(always)]
    fn read_u16(&self, at: usize) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[at], b[at + 1]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    #[inline]
    pub fn set_request_id(&mut self, v: u16) {
        self.write_u16(field::REQUEST_ID.start, v);
    }

    #[inline]
    pub fn set_sequence(&mut self, v: u16) {
        self.write_u16(field::SEQUENCE.start, v);
    }

    #[inline]
    pub fn set_count(&mut self, v: u16) {
        self.write_u16(field::COUNT.start, v);
    }

    #[inline]
    pub fn set_reserved(&mut self, v: u16) {
        self.write_u16(field::RESERVED.start, v);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }

    #[inline(always)]
    fn write_u16(&mut self, at: usize, v: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
}

/// A memcached UDP frame header as a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct McHeader {
    pub request_id: u16,
    pub sequence: u16,
    /// Total datagrams in this message (memcached sends 0 for an empty message, e.g. the
    /// missed key of a multi-get).
    pub count: u16,
    pub reserved: u16,
}

impl McHeader {
    /// The header of a single-datagram message (what a request must carry, and what
    /// memcached puts on a reply that fits one datagram).
    pub const fn single(request_id: u16) -> McHeader {
        McHeader {
            request_id,
            sequence: 0,
            count: 1,
            reserved: 0,
        }
    }

    /// Parses the header at the start of `payload` ([`Error::TruncatedFrameHeader`]).
    #[inline]
    pub fn parse(payload: &[u8]) -> Result<McHeader, Error> {
        let h = Header::new_checked(payload)?;
        Ok(McHeader {
            request_id: h.request_id(),
            sequence: h.sequence(),
            count: h.count(),
            reserved: h.reserved(),
        })
    }

    /// Whether a request with this header is one whole datagram. Memcached drops requests
    /// whose datagram count is not 1 ("multi-packet request not supported").
    #[inline]
    pub fn is_single_datagram(&self) -> bool {
        self.count == 1
    }

    /// Bytes [`emit`](Self::emit) writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header at the start of `buf` ([`Error::TruncatedFrameHeader`] if short).
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Error> {
        let mut h = Header::new_checked(buf)?;
        h.set_request_id(self.request_id);
        h.set_sequence(self.sequence);
        h.set_count(self.count);
        h.set_reserved(self.reserved);
        Ok(())
    }

    /// The header as its 8 bytes.
    #[inline]
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        let r = self.request_id.to_be_bytes();
        let s = self.sequence.to_be_bytes();
        let c = self.count.to_be_bytes();
        let z = self.reserved.to_be_bytes();
        b[0..2].copy_from_slice(&r);
        b[2..4].copy_from_slice(&s);
        b[4..6].copy_from_slice(&c);
        b[6..8].copy_from_slice(&z);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static BYTES: [u8; 13] = [
        0x12, 0x34, 0x00, 0x02, 0x00, 0x03, 0x00, 0x00, b'E', b'N', b'D', b'\r', b'\n',
    ];

    #[test]
    fn test_parse() {
        let h = Header::new_checked(&BYTES[..]).unwrap();
        assert_eq!(h.payload(), b"END\r\n");
        let r = McHeader::parse(&BYTES).unwrap();
        assert_eq!(
            r,
            McHeader {
                request_id: 0x1234,
                sequence: 2,
                count: 3,
                reserved: 0
            }
        );
        assert!(!r.is_single_datagram());
        assert!(McHeader::single(7).is_single_datagram());
    }

    #[test]
    fn test_emit() {
        let r = McHeader::parse(&BYTES).unwrap();
        let mut out = [0u8; 8];
        r.emit(&mut out).unwrap();
        assert_eq!(out, BYTES[..8]);
        assert_eq!(r.to_bytes(), out);
        let mut short = [0u8; 7];
        assert_eq!(r.emit(&mut short), Err(Error::TruncatedFrameHeader));
    }

    #[test]
    fn test_impossible_len() {
        assert_eq!(
            McHeader::parse(&BYTES[..7]),
            Err(Error::TruncatedFrameHeader)
        );
        assert!(McHeader::parse(&BYTES[..8]).is_ok());
    }
}
