//! The pieces of memcached's text grammar shared by requests and responses: lines, tokens,
//! numbers, keys, and writers that emit without allocating.

use super::Error;

/// Memcached's longest key (`KEY_MAX_LENGTH`).
pub const MAX_KEY_LEN: usize = 250;

/// Splits `bytes` at the first `\n`: the line (without `\n` and one preceding `\r`, as
/// memcached's `try_read_command_ascii` does) and the bytes after it. `None` without `\n`.
#[inline]
pub(crate) fn split_line(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let nl = bytes.iter().position(|&b| b == b'\n')?;
    let (line, rest) = (&bytes[..nl], &bytes[nl + 1..]);
    let line = match line.split_last() {
        Some((b'\r', head)) => head,
        _ => line,
    };
    Some((line, rest))
}

/// Splits a line into space-separated tokens; runs of spaces count as one separator and
/// leading/trailing spaces are ignored (memcached's `tokenize_command`).
#[derive(Clone, Debug)]
pub(crate) struct Tokens<'a> {
    rest: &'a [u8],
}

impl<'a> Tokens<'a> {
    #[inline]
    pub(crate) fn new(line: &'a [u8]) -> Self {
        Tokens { rest: line }
    }

    /// Everything not yet tokenized, leading spaces stripped.
    #[inline]
    pub(crate) fn remainder(&self) -> &'a [u8] {
        let start = self
            .rest
            .iter()
            .position(|&b| b != b' ')
            .unwrap_or(self.rest.len());
        &self.rest[start..]
    }

    /// How many tokens are left (scans, does not consume).
    pub(crate) fn left(&self) -> usize {
        self.clone().fold(0, |n, _| n + 1)
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let start = self.rest.iter().position(|&b| b != b' ')?;
        let rest = &self.rest[start..];
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        self.rest = &rest[end..];
        Some(&rest[..end])
    }
}

/// Checks a key: 1 to 250 bytes, none of them a space, `\r`, `\n` or NUL.
///
/// That is what memcached's own ASCII parser accepts: it splits tokens on spaces only and
/// reads the command line as a C string (a NUL cuts it short). Other control characters
/// and DEL pass, as they do in memcached: protocol.txt asks clients not to send them, but
/// real clients do (memaslap's keys start with eight 0x10 bytes).
#[inline]
pub fn check_key(key: &[u8]) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::BadFormat);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::KeyTooLong);
    }
    if key.iter().any(|&b| matches!(b, b' ' | b'\r' | b'\n' | 0)) {
        return Err(Error::IllegalKey);
    }
    Ok(())
}

/// Parses an unsigned decimal that must fit `u64`: digits only, no sign, no spaces.
#[inline]
pub fn parse_u64(tok: &[u8]) -> Result<u64, Error> {
    if tok.is_empty() {
        return Err(Error::BadNumber);
    }
    let mut v: u64 = 0;
    for &b in tok {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return Err(Error::BadNumber);
        }
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(d)))
            .ok_or(Error::BadNumber)?;
    }
    Ok(v)
}

/// Parses an unsigned decimal that must fit `u32`.
#[inline]
pub fn parse_u32(tok: &[u8]) -> Result<u32, Error> {
    u32::try_from(parse_u64(tok)?).map_err(|_| Error::BadNumber)
}

/// Parses a signed decimal (optional `-`) that must fit `i32` (memcached's exptime).
#[inline]
pub fn parse_i32(tok: &[u8]) -> Result<i32, Error> {
    match tok.split_first() {
        Some((b'-', digits)) => {
            let v = parse_u64(digits)?;
            if v > 1 << 31 {
                return Err(Error::BadNumber);
            }
            Ok((-(v as i64)) as i32)
        }
        _ => i32::try_from(parse_u64(tok)?).map_err(|_| Error::BadNumber),
    }
}

/// Where emitters write: a fixed slice (no allocation) or a `Vec`.
pub trait Sink {
    /// Appends `bytes`. A slice sink that runs out of room remembers it and drops the rest.
    fn put(&mut self, bytes: &[u8]);

    /// Appends `v` in decimal.
    #[inline]
    fn put_u64(&mut self, v: u64) {
        let mut buf = [0u8; 20];
        let s = fmt_u64(v, &mut buf);
        self.put(s);
    }

    /// Appends `v` in decimal with a leading `-` when negative.
    #[inline]
    fn put_i64(&mut self, v: i64) {
        if v < 0 {
            self.put(b"-");
        }
        self.put_u64(v.unsigned_abs());
    }
}

impl Sink for Vec<u8> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Writes `v` in decimal at the end of `buf` and returns the digits.
#[inline(always)]
pub(crate) fn fmt_u64(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Number of decimal digits of `v`.
#[inline]
pub(crate) fn digits_u64(v: u64) -> usize {
    let mut n = 1;
    let mut x = v;
    while x >= 10 {
        x /= 10;
        n += 1;
    }
    n
}

/// A [`Sink`] over a fixed slice; [`finish`](SliceSink::finish) says whether it all fit.
#[derive(Debug)]
pub struct SliceSink<'a> {
    buf: &'a mut [u8],
    len: usize,
    overflow: bool,
}

impl<'a> SliceSink<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        SliceSink {
            buf,
            len: 0,
            overflow: false,
        }
    }

    /// Bytes written, or [`Error::NoRoom`] if anything did not fit.
    pub fn finish(self) -> Result<usize, Error> {
        if self.overflow {
            Err(Error::NoRoom)
        } else {
            Ok(self.len)
        }
    }
}

impl Sink for SliceSink<'_> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        match self.buf.get_mut(self.len..self.len + bytes.len()) {
            Some(dst) if !self.overflow => {
                dst.copy_from_slice(bytes);
                self.len += bytes.len();
            }
            _ => self.overflow = true,
        }
    }

    /// Digits go straight into the buffer, last digit first (no stack buffer and no
    /// `memcpy` call for a few bytes).
    #[inline]
    fn put_u64(&mut self, v: u64) {
        let n = digits_u64(v);
        match self.buf.get_mut(self.len..self.len + n) {
            Some(dst) if !self.overflow => {
                let mut x = v;
                for d in dst.iter_mut().rev() {
                    *d = b'0' + (x % 10) as u8;
                    x /= 10;
                }
                self.len += n;
            }
            _ => self.overflow = true,
        }
    }
}

/// A [`Sink`] that only counts bytes (to size a buffer before emitting).
#[derive(Debug, Default)]
pub struct CountSink(pub usize);

impl Sink for CountSink {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
    #[inline]
    fn put_u64(&mut self, v: u64) {
        self.0 += digits_u64(v);
    }
}

/// Decodes standard base64 (with `=` padding, as memcached's meta `b` flag uses) into
/// `out`; `None` if `src` is not valid base64 or `out` is too small.
pub fn base64_decode(src: &[u8], out: &mut [u8]) -> Option<usize> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    if src.is_empty() || src.len() % 4 != 0 {
        return None;
    }
    let mut n = 0;
    let quads = src.len() / 4;
    for (qi, q) in src.chunks_exact(4).enumerate() {
        let last = qi + 1 == quads;
        let pad = if last {
            q.iter().rev().take_while(|&&c| c == b'=').count()
        } else {
            0
        };
        if pad > 2 {
            return None;
        }
        let mut acc = 0u32;
        for &c in &q[..4 - pad] {
            acc = (acc << 6) | val(c)?;
        }
        acc <<= 6 * pad as u32;
        let bytes = [(acc >> 16) as u8, (acc >> 8) as u8, acc as u8];
        let take = 3 - pad;
        out.get_mut(n..n + take)?.copy_from_slice(&bytes[..take]);
        n += take;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(
            split_line(b"get a\r\nrest"),
            Some((&b"get a"[..], &b"rest"[..]))
        );
        assert_eq!(split_line(b"get a\n"), Some((&b"get a"[..], &b""[..])));
        assert_eq!(split_line(b"\r\n"), Some((&b""[..], &b""[..])));
        assert_eq!(split_line(b"get a\r"), None);
        // Only one \r is part of the terminator.
        assert_eq!(split_line(b"a\r\r\n"), Some((&b"a\r"[..], &b""[..])));
    }

    #[test]
    fn tokens() {
        let t: Vec<&[u8]> = Tokens::new(b"  get  a b ").collect();
        assert_eq!(t, [&b"get"[..], b"a", b"b"]);
        assert_eq!(Tokens::new(b"   ").left(), 0);
        let mut t = Tokens::new(b"stats  slabs 1");
        t.next();
        assert_eq!(t.remainder(), b"slabs 1");
    }

    #[test]
    fn keys() {
        assert_eq!(check_key(b"foo"), Ok(()));
        assert_eq!(check_key("ключ".as_bytes()), Ok(()));
        assert_eq!(check_key(&[b'k'; 250]), Ok(()));
        assert_eq!(check_key(&[b'k'; 251]), Err(Error::KeyTooLong));
        // As memcached: control characters other than CR, LF and NUL are key bytes.
        assert_eq!(check_key(b"a\tb"), Ok(()));
        assert_eq!(check_key(b"a\x7fb"), Ok(()));
        assert_eq!(
            check_key(b"\x10\x10\x10\x10\x10\x10\x10\x10YAb4xNHp"),
            Ok(())
        );
        for bad in [&b"a b"[..], b"a\rb", b"a\nb", b"a\0b"] {
            assert_eq!(check_key(bad), Err(Error::IllegalKey));
        }
        assert_eq!(check_key(b""), Err(Error::BadFormat));
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u64(b"18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), Err(Error::BadNumber));
        assert_eq!(parse_u64(b"99999999999999999999"), Err(Error::BadNumber));
        assert_eq!(parse_u64(b"000000000000000000001"), Ok(1));
        assert_eq!(parse_u64(b""), Err(Error::BadNumber));
        assert_eq!(parse_u64(b"+1"), Err(Error::BadNumber));
        assert_eq!(parse_u64(b"1a"), Err(Error::BadNumber));
        assert_eq!(parse_u32(b"4294967295"), Ok(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), Err(Error::BadNumber));
        assert_eq!(parse_i32(b"-2147483648"), Ok(i32::MIN));
        assert_eq!(parse_i32(b"2147483647"), Ok(i32::MAX));
        assert_eq!(parse_i32(b"2147483648"), Err(Error::BadNumber));
        assert_eq!(parse_i32(b"-2147483649"), Err(Error::BadNumber));
        assert_eq!(parse_i32(b"-"), Err(Error::BadNumber));
        assert_eq!(parse_i32(b"-0"), Ok(0));
    }

    #[test]
    fn sinks() {
        let mut v = Vec::new();
        v.put(b"x");
        v.put_u64(0);
        v.put_i64(-42);
        v.put_u64(u64::MAX);
        assert_eq!(v, b"x0-4218446744073709551615");
        let mut c = CountSink::default();
        c.put(b"x");
        c.put_u64(0);
        c.put_i64(-42);
        c.put_u64(u64::MAX);
        assert_eq!(c.0, v.len());
        let mut buf = [0u8; 4];
        let mut s = SliceSink::new(&mut buf);
        s.put(b"abc");
        s.put(b"de");
        s.put(b"f");
        assert_eq!(s.finish(), Err(Error::NoRoom));
        for v in [0u64, 9, 10, 99, 100, 12345, u64::MAX] {
            assert_eq!(digits_u64(v), v.to_string().len());
        }
    }

    #[test]
    fn base64() {
        let mut out = [0u8; 16];
        assert_eq!(base64_decode(b"Zm9v", &mut out), Some(3));
        assert_eq!(&out[..3], b"foo");
        assert_eq!(base64_decode(b"Zm8=", &mut out), Some(2));
        assert_eq!(&out[..2], b"fo");
        assert_eq!(base64_decode(b"Zg==", &mut out), Some(1));
        assert_eq!(base64_decode(b"Zg=", &mut out), None);
        assert_eq!(base64_decode(b"Z===", &mut out), None);
        assert_eq!(base64_decode(b"Zg==Zg==", &mut out), None);
        assert_eq!(base64_decode(b"Zm9v", &mut out[..2]), None);
        assert_eq!(base64_decode(b"", &mut out), None);
    }
}
