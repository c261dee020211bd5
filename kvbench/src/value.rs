//! The values kvbench writes: each one names its writer run, its version and carries a
//! checksum over the key, the run, the version and every byte of the value, so that a read
//! can tell a current value from a stale one (an older version) and from a corrupt one
//! (bytes that no writer produced, or another key's value).
//!
//! Layout (ASCII, so a value is readable with `telnet`):
//!
//! ```text
//! 0        8        16               32
//! RRRRRRRRVVVVVVVVCCCCCCCCCCCCCCCC filler...
//! run id   version checksum (hex)   printable bytes derived from key and version
//! ```
//!
//! Owns: the byte layout. Must not: decide staleness (that needs the writer's bookkeeping,
//! see [`super::validate`]).

use kvlb::random::mix64;

/// Bytes of the header; values are never shorter.
pub const HEADER_LEN: usize = 32;

/// What a value says about itself once its checksum holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub run_id: u32,
    pub version: u32,
}

/// Why a value is not one that kvbench wrote for this key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    #[error("value shorter than the {HEADER_LEN}-byte header")]
    Short,
    #[error("header is not hexadecimal")]
    BadHeader,
    #[error("checksum mismatch")]
    Checksum,
}

const FILLER: &[u8; 64] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_";

/// The 64-bit checksum of a value: a multiply-rotate chain over the key, the stamp and
/// the length, then four interleaved chains over the filler (8 bytes per step, so the
/// steps of a 1 KiB value do not wait on each other), folded together and finalized. Each
/// step is a bijection of its chain's state for a fixed input word, so any change confined
/// to one word always changes the result.
pub fn checksum(key: &[u8], stamp: Stamp, filler: &[u8]) -> u64 {
    let mut h = 0x6b76_6265_6e63_6831u64 ^ (filler.len() as u64).wrapping_mul(0x9e37_79b9);
    h = step(
        h,
        (u64::from(stamp.run_id) << 32) | u64::from(stamp.version),
    );
    h = eat(h, key);
    h = step(h, 0x5eed_5eed ^ key.len() as u64);
    let mut lanes = [h, h ^ 0x1111, h ^ 0x2222, h ^ 0x3333];
    let mut blocks = filler.chunks_exact(32);
    for b in &mut blocks {
        for (i, lane) in lanes.iter_mut().enumerate() {
            let w = &b[8 * i..8 * i + 8];
            *lane = step(
                *lane,
                u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]),
            );
        }
    }
    let h = eat(lanes[0], blocks.remainder());
    mix64(h ^ lanes[1].rotate_left(17) ^ lanes[2].rotate_left(31) ^ lanes[3].rotate_left(47))
}

#[inline(always)]
fn step(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29)
}

#[inline]
fn eat(mut h: u64, bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        h = step(
            h,
            u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
        );
    }
    let rest = chunks.remainder();
    // The length byte keeps "ab" and "ab\0" apart (and an empty tail from none).
    let mut last = [0u8; 8];
    last[..rest.len()].copy_from_slice(rest);
    last[7] ^= 0x80 | rest.len() as u8;
    step(h, u64::from_le_bytes(last))
}

/// Writes the value of (`key`, `stamp`) with `len` bytes (at least [`HEADER_LEN`]) into
/// `out`, replacing its contents.
pub fn encode(out: &mut Vec<u8>, key: &[u8], stamp: Stamp, len: usize) {
    let len = len.max(HEADER_LEN);
    out.clear();
    out.resize(len, 0);
    // Filler: a 64-byte printable pattern drawn from key and version, repeated, so values
    // of different versions differ everywhere, not only in the header (and writing one
    // costs a memcpy, not a random number per byte).
    let mut pattern = [0u8; 64];
    let mut x = mix64(u64::from(stamp.version) ^ eat(0x1234_5678, key));
    for chunk in pattern.chunks_mut(8) {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut r = mix64(x);
        for b in chunk {
            *b = FILLER[(r & 63) as usize];
            r >>= 8;
        }
    }
    for chunk in out[HEADER_LEN..].chunks_mut(64) {
        chunk.copy_from_slice(&pattern[..chunk.len()]);
    }
    let sum = checksum(key, stamp, &out[HEADER_LEN..]);
    put_hex(&mut out[0..8], u64::from(stamp.run_id));
    put_hex(&mut out[8..16], u64::from(stamp.version));
    put_hex(&mut out[16..32], sum);
}

/// Checks `value` as read for `key`: its stamp, or why it is not kvbench's value of `key`.
pub fn decode(key: &[u8], value: &[u8]) -> Result<Stamp, Corruption> {
    if value.len() < HEADER_LEN {
        return Err(Corruption::Short);
    }
    let run_id = get_hex(&value[0..8]).ok_or(Corruption::BadHeader)? as u32;
    let version = get_hex(&value[8..16]).ok_or(Corruption::BadHeader)? as u32;
    let sum = get_hex(&value[16..32]).ok_or(Corruption::BadHeader)?;
    let stamp = Stamp { run_id, version };
    if checksum(key, stamp, &value[HEADER_LEN..]) != sum {
        return Err(Corruption::Checksum);
    }
    Ok(stamp)
}

fn put_hex(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = b"0123456789abcdef"[(v & 15) as usize];
        v >>= 4;
    }
}

fn get_hex(s: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &b in s {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(d);
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: Stamp = Stamp {
        run_id: 0xdead_beef,
        version: 7,
    };

    #[test]
    fn roundtrip_and_layout() {
        let mut v = Vec::new();
        encode(&mut v, b"kvb:42", S, 100);
        assert_eq!(v.len(), 100);
        assert_eq!(&v[..16], b"deadbeef00000007");
        assert!(v.iter().all(|b| b.is_ascii_graphic()));
        assert_eq!(decode(b"kvb:42", &v), Ok(S));
        // Too short a request still gets a whole header.
        encode(&mut v, b"k", S, 3);
        assert_eq!(v.len(), HEADER_LEN);
        assert_eq!(decode(b"k", &v), Ok(S));
    }

    #[test]
    fn other_keys_versions_and_damage_are_caught() {
        let mut v = Vec::new();
        encode(&mut v, b"kvb:42", S, 64);
        assert_eq!(decode(b"kvb:43", &v), Err(Corruption::Checksum));
        assert_eq!(decode(b"kvb:42", &v[..31]), Err(Corruption::Short));
        assert_eq!(decode(b"kvb:42", &v[..63]), Err(Corruption::Checksum));
        let mut w = v.clone();
        w[9] = b'x';
        assert_eq!(decode(b"kvb:42", &w), Err(Corruption::BadHeader));
        // A forged version without a new checksum.
        let mut w = v.clone();
        w[15] = b'6';
        assert_eq!(decode(b"kvb:42", &w), Err(Corruption::Checksum));
        let mut other = Vec::new();
        encode(&mut other, b"kvb:42", Stamp { version: 8, ..S }, 64);
        assert_ne!(other[HEADER_LEN..], v[HEADER_LEN..]);
    }

    proptest! {
        #[test]
        fn any_single_byte_change_is_caught(
            key in proptest::collection::vec(33u8..127, 1..40),
            len in 32usize..300,
            at in any::<prop::sample::Index>(),
            xor in 1u8..=255,
        ) {
            let mut v = Vec::new();
            encode(&mut v, &key, S, len);
            prop_assert_eq!(decode(&key, &v), Ok(S));
            let i = at.index(v.len());
            v[i] ^= xor;
            prop_assert!(decode(&key, &v).is_err());
        }

        #[test]
        fn decode_never_panics(key in proptest::collection::vec(any::<u8>(), 0..10),
                               value in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = decode(&key, &value);
        }
    }
}
