//! Memcached's binary protocol, as far as kvlb needs it: the 24-byte header of requests
//! (magic 0x80) and responses (magic 0x81), so binary traffic is recognised, routed by key
//! and never misread as ASCII.

use super::text::Sink;
use super::Error;

/// First byte of a binary request.
pub const REQUEST_MAGIC: u8 = 0x80;
/// First byte of a binary response.
pub const RESPONSE_MAGIC: u8 = 0x81;
/// Length of the binary header.
pub const HEADER_LEN: usize = 24;

/// Opcodes (memcached `protocol_binary.h`). The whole table as the header defines it, so it
/// reads against the header; kvlb names only the opcodes it treats specially.
pub mod op {
    pub const GET: u8 = 0x00;
    pub const SET: u8 = 0x01;
    pub const ADD: u8 = 0x02;
    pub const REPLACE: u8 = 0x03;
    pub const DELETE: u8 = 0x04;
    pub const INCREMENT: u8 = 0x05;
    pub const DECREMENT: u8 = 0x06;
    pub const QUIT: u8 = 0x07;
    pub const FLUSH: u8 = 0x08;
    pub const GETQ: u8 = 0x09;
    pub const NOOP: u8 = 0x0a;
    pub const VERSION: u8 = 0x0b;
    pub const GETK: u8 = 0x0c;
    pub const GETKQ: u8 = 0x0d;
    pub const APPEND: u8 = 0x0e;
    pub const PREPEND: u8 = 0x0f;
    pub const STAT: u8 = 0x10;
    pub const TOUCH: u8 = 0x1c;
    pub const GAT: u8 = 0x1d;
    pub const GATQ: u8 = 0x1e;
    pub const GATK: u8 = 0x23;
    pub const GATKQ: u8 = 0x24;
}

/// The fixed header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub magic: u8,
    pub opcode: u8,
    pub key_len: u16,
    pub extras_len: u8,
    pub data_type: u8,
    /// vbucket id in requests, status in responses.
    pub vbucket_or_status: u16,
    pub body_len: u32,
    pub opaque: u32,
    pub cas: u64,
}

impl Header {
    /// Parses the header at the start of `msg` ([`Error::TruncatedRequest`] if short).
    pub(crate) fn parse(msg: &[u8]) -> Result<Header, Error> {
        let h: &[u8; HEADER_LEN] = msg
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(Error::TruncatedRequest)?;
        Ok(Header {
            magic: h[0],
            opcode: h[1],
            key_len: u16::from_be_bytes([h[2], h[3]]),
            extras_len: h[4],
            data_type: h[5],
            vbucket_or_status: u16::from_be_bytes([h[6], h[7]]),
            body_len: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
            opaque: u32::from_be_bytes([h[12], h[13], h[14], h[15]]),
            cas: u64::from_be_bytes([h[16], h[17], h[18], h[19], h[20], h[21], h[22], h[23]]),
        })
    }

    pub(crate) fn emit<S: Sink + ?Sized>(&self, s: &mut S) {
        s.put(&[self.magic, self.opcode]);
        s.put(&self.key_len.to_be_bytes());
        s.put(&[self.extras_len, self.data_type]);
        s.put(&self.vbucket_or_status.to_be_bytes());
        s.put(&self.body_len.to_be_bytes());
        s.put(&self.opaque.to_be_bytes());
        s.put(&self.cas.to_be_bytes());
    }
}

/// Writes a binary request. Lengths come from the slices (saturating: a request too large
/// for its length fields cannot come from the parser).
pub(crate) fn emit_request<S: Sink + ?Sized>(b: &super::Binary<'_>, s: &mut S) {
    let body = b.extras.len() + b.key.len() + b.value.len();
    Header {
        magic: REQUEST_MAGIC,
        opcode: b.opcode,
        key_len: u16::try_from(b.key.len()).unwrap_or(u16::MAX),
        extras_len: u8::try_from(b.extras.len()).unwrap_or(u8::MAX),
        data_type: b.data_type,
        vbucket_or_status: b.vbucket,
        body_len: u32::try_from(body).unwrap_or(u32::MAX),
        opaque: b.opaque,
        cas: b.cas,
    }
    .emit(s);
    s.put(b.extras);
    s.put(b.key);
    s.put(b.value);
}

/// A binary-protocol response (magic 0x81).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BinaryResponse<'a> {
    pub opcode: u8,
    pub data_type: u8,
    pub status: u16,
    pub opaque: u32,
    pub cas: u64,
    pub extras: &'a [u8],
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl<'a> BinaryResponse<'a> {
    /// Parses one response at the start of `msg`; returns it and the bytes after it.
    pub(crate) fn parse(msg: &'a [u8]) -> Result<(BinaryResponse<'a>, &'a [u8]), Error> {
        let h = Header::parse(msg).map_err(|_| Error::TruncatedResponse)?;
        if h.magic != RESPONSE_MAGIC {
            return Err(Error::BadResponse);
        }
        let body = &msg[HEADER_LEN..];
        let total = h.body_len as usize;
        if body.len() < total {
            return Err(Error::TruncatedResponse);
        }
        let ext = usize::from(h.extras_len);
        let keylen = usize::from(h.key_len);
        if ext + keylen > total {
            return Err(Error::BadResponse);
        }
        Ok((
            BinaryResponse {
                opcode: h.opcode,
                data_type: h.data_type,
                status: h.vbucket_or_status,
                opaque: h.opaque,
                cas: h.cas,
                extras: &body[..ext],
                key: &body[ext..ext + keylen],
                value: &body[ext + keylen..total],
            },
            &body[total..],
        ))
    }

    pub(crate) fn emit<S: Sink + ?Sized>(&self, s: &mut S) {
        let body = self.extras.len() + self.key.len() + self.value.len();
        Header {
            magic: RESPONSE_MAGIC,
            opcode: self.opcode,
            key_len: u16::try_from(self.key.len()).unwrap_or(u16::MAX),
            extras_len: u8::try_from(self.extras.len()).unwrap_or(u8::MAX),
            data_type: self.data_type,
            vbucket_or_status: self.status,
            body_len: u32::try_from(body).unwrap_or(u32::MAX),
            opaque: self.opaque,
            cas: self.cas,
        }
        .emit(s);
        s.put(self.extras);
        s.put(self.key);
        s.put(self.value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_roundtrip() {
        let r = BinaryResponse {
            opcode: op::GETK,
            data_type: 0,
            status: 0,
            opaque: 9,
            cas: 77,
            extras: &[0, 0, 0, 5],
            key: b"foo",
            value: b"bar",
        };
        let mut v = Vec::new();
        r.emit(&mut v);
        assert_eq!(v.len(), HEADER_LEN + 10);
        v.extend_from_slice(b"tail");
        let (back, rest) = BinaryResponse::parse(&v).unwrap();
        assert_eq!(back, r);
        assert_eq!(rest, b"tail");
        assert_eq!(
            BinaryResponse::parse(&v[..30]).unwrap_err(),
            Error::TruncatedResponse
        );
        v[0] = REQUEST_MAGIC;
        assert_eq!(BinaryResponse::parse(&v).unwrap_err(), Error::BadResponse);
    }
}
