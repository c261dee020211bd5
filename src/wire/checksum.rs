//! The Internet checksum (RFC 1071): full computation and incremental update (RFC 1624).
//!
//! Sums are accumulated over native-endian 32-bit words in a 64-bit register and folded to
//! 16 bits at the end, which gives the same ones'-complement result as summing big-endian
//! 16-bit words (RFC 1071 §2(B): deferred carries, byte-order independence).

use std::net::Ipv4Addr;

/// Adds `b` to `a` in ones'-complement arithmetic over 64 bits.
#[inline(always)]
fn add_carry(a: u64, b: u64) -> u64 {
    let (sum, carry) = a.overflowing_add(b);
    sum + u64::from(carry)
}
/// The ones'-complement sum of `data` read as big-endian 16-bit words (an odd trailing
/// byte is padded with a zero byte, as RFC 1071 says), as a partial sum: combine partial
/// sums of 16-bit-aligned pieces with [`combine`] and finish with [`fold`].
///
/// Native-endian 32-bit words are added into 64 bits (no carries to propagate before 2³²
/// words, no byte swaps, and the loop vectorizes), folded, and byte-swapped once at the
/// end: the ones'-complement sum is byte-order independent (RFC 1071 §2(B)).
#[inline]
pub fn sum(data: &[u8]) -> u64 {
    let mut acc = 0u64;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
    }
    // The last 0–3 bytes, zero-padded, in the same little-endian lanes. Built from
    // register loads: copying into a stack buffer and reading it back as one word stalls
    // on store forwarding.
    acc += match *words.remainder() {
        [a] => u64::from(a),
        [a, b] => u64::from(u16::from_le_bytes([a, b])),
        [a, b, c] => u64::from(u16::from_le_bytes([a, b])) | u64::from(c) << 16,
        _ => 0,
    };
    u64::from(fold(acc).swap_bytes())
}

/// Combines two unfolded partial sums (each over a 16-bit-aligned piece).
#[inline(always)]
pub fn combine(a: u64, b: u64) -> u64 {
    add_carry(a, b)
}

/// Folds an unfolded sum to the 16-bit ones'-complement sum (not yet complemented).
#[inline(always)]
pub fn fold(acc: u64) -> u16 {
    let mut s = (acc >> 32) + (acc & 0xffff_ffff);
    s = (s >> 32) + (s & 0xffff_ffff);
    s = (s >> 16) + (s & 0xffff);
    s = (s >> 16) + (s & 0xffff);
    s as u16
}

/// The checksum to store in a header: the complement of the folded sum.
#[inline(always)]
pub fn finish(acc: u64) -> u16 {
    !fold(acc)
}

/// The checksum of `data` alone (e.g. an IPv4 header with its checksum field zeroed).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(data))
}

/// Whether `data`, checksum field included, sums to all ones (i.e. the checksum is valid).
#[inline]
pub fn verify(data: &[u8]) -> bool {
    fold(sum(data)) == 0xffff
}

/// The unfolded sum of the IPv4 pseudo-header for a transport segment.
#[inline(always)]
pub fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> u64 {
    let s = u64::from(u32::from(src));
    let d = u64::from(u32::from(dst));
    s + d + (u64::from(protocol) << 16) + u64::from(length)
}

/// What a 16-bit word's change from `old` to `new` adds to a complemented checksum
/// (RFC 1624 eqn. 3: `~m + m'`). Deltas of several fields add up; apply their sum once
/// with [`apply`].
#[inline(always)]
pub fn delta_u16(old: u16, new: u16) -> u64 {
    u64::from(!old) + u64::from(new)
}

/// [`delta_u16`] for a 32-bit field (two adjacent, 16-bit-aligned words).
#[inline(always)]
pub fn delta_u32(old: u32, new: u32) -> u64 {
    delta_u16((old >> 16) as u16, (new >> 16) as u16) + delta_u16(old as u16, new as u16)
}

/// RFC 1624 eqn. 3: the checksum after changes whose deltas sum to `delta`:
/// `HC' = ~(~HC + delta)`.
#[inline(always)]
pub fn apply(checksum: u16, delta: u64) -> u16 {
    !fold(u64::from(!checksum) + delta)
}

/// The new checksum after a 16-bit word covered by `checksum` changed from `old` to `new`.
#[inline(always)]
pub fn update_u16(checksum: u16, old: u16, new: u16) -> u16 {
    apply(checksum, delta_u16(old, new))
}

/// [`update_u16`] for a 32-bit field (two adjacent, 16-bit-aligned words).
#[inline(always)]
pub fn update_u32(checksum: u16, old: u32, new: u32) -> u16 {
    apply(checksum, delta_u32(old, new))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference RFC 1071 implementation over 16-bit words.
    fn naive(data: &[u8]) -> u16 {
        let mut acc = 0u32;
        let mut i = 0;
        while i + 1 < data.len() {
            acc += u32::from(u16::from_be_bytes([data[i], data[i + 1]]));
            i += 2;
        }
        if i < data.len() {
            acc += u32::from(data[i]) << 8;
        }
        while acc >> 16 != 0 {
            acc = (acc >> 16) + (acc & 0xffff);
        }
        !(acc as u16)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 example words 0001 f203 f4f5 f6f7: sum ddf2, checksum 220d.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(checksum(&data), 0x220d);
    }

    #[test]
    fn matches_naive_for_every_length() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 151 + 7) as u8).collect();
        for len in 0..data.len() {
            assert_eq!(checksum(&data[..len]), naive(&data[..len]), "len {len}");
        }
        let ones = [0xffu8; 70];
        for len in 0..ones.len() {
            assert_eq!(checksum(&ones[..len]), naive(&ones[..len]), "len {len}");
        }
    }

    #[test]
    fn incremental_matches_full() {
        let mut data: Vec<u8> = (0..64u32).map(|i| (i * 37 + 3) as u8).collect();
        data[10] = 0;
        data[11] = 0;
        let ck = checksum(&data);
        for (pos, new) in [(4usize, 0xbeefu16), (0, 0), (62, 0xffff), (20, 0x1)] {
            let old = u16::from_be_bytes([data[pos], data[pos + 1]]);
            let mut changed = data.clone();
            changed[pos..pos + 2].copy_from_slice(&new.to_be_bytes());
            let inc = update_u16(ck, old, new);
            let full = checksum(&changed);
            // Both are valid representations; a verifier accepts either.
            let mut with = changed.clone();
            with[10..12].copy_from_slice(&inc.to_be_bytes());
            assert!(verify(&with), "pos {pos}");
            assert!(inc == full || (inc == 0xffff && full == 0) || (inc == 0 && full == 0xffff));
        }
        let old = u32::from_be_bytes([data[12], data[13], data[14], data[15]]);
        let new = 0x0a00_0001;
        let mut changed = data.clone();
        changed[12..16].copy_from_slice(&u32::to_be_bytes(new));
        let inc = update_u32(ck, old, new);
        changed[10..12].copy_from_slice(&inc.to_be_bytes());
        assert!(verify(&changed));
    }

    #[test]
    fn pseudo_header_matches_bytes() {
        let src = Ipv4Addr::new(192, 168, 1, 2);
        let dst = Ipv4Addr::new(10, 255, 0, 254);
        let bytes = [192, 168, 1, 2, 10, 255, 0, 254, 0, 17, 0x01, 0x23];
        assert_eq!(fold(pseudo_header(src, dst, 17, 0x123)), fold(sum(&bytes)));
    }
}
