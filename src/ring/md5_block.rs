//! MD5 of a short message, first digest word only: what ketama needs per key.
//!
//! A memcached key is at most 250 bytes and usually a few dozen, so its MD5 is one 64-byte
//! block for keys up to 55 bytes. [`first_word`] pads such a key into one block on the
//! stack, runs the 64 steps of RFC 1321 unrolled, and returns only the first state word
//! (the digest's bytes 0..4, little-endian), skipping the streaming buffer, the length
//! bookkeeping and the digest serialization of a general-purpose MD5. Longer keys go
//! through the `md-5` crate. Tests compare both paths with `md-5` on random keys.

use md5::{Digest, Md5};

/// Longest message that fits one block with its padding (0x80 byte and 8-byte length).
pub const ONE_BLOCK_MAX: usize = 55;

/// Per-step additive constants, floor(abs(sin(i + 1)) · 2^32).
const K: [u32; 64] = [
    0xd76a_a478,
    0xe8c7_b756,
    0x2420_70db,
    0xc1bd_ceee,
    0xf57c_0faf,
    0x4787_c62a,
    0xa830_4613,
    0xfd46_9501,
    0x6980_98d8,
    0x8b44_f7af,
    0xffff_5bb1,
    0x895c_d7be,
    0x6b90_1122,
    0xfd98_7193,
    0xa679_438e,
    0x49b4_0821,
    0xf61e_2562,
    0xc040_b340,
    0x265e_5a51,
    0xe9b6_c7aa,
    0xd62f_105d,
    0x0244_1453,
    0xd8a1_e681,
    0xe7d3_fbc8,
    0x21e1_cde6,
    0xc337_07d6,
    0xf4d5_0d87,
    0x455a_14ed,
    0xa9e3_e905,
    0xfcef_a3f8,
    0x676f_02d9,
    0x8d2a_4c8a,
    0xfffa_3942,
    0x8771_f681,
    0x6d9d_6122,
    0xfde5_380c,
    0xa4be_ea44,
    0x4bde_cfa9,
    0xf6bb_4b60,
    0xbebf_bc70,
    0x289b_7ec6,
    0xeaa1_27fa,
    0xd4ef_3085,
    0x0488_1d05,
    0xd9d4_d039,
    0xe6db_99e5,
    0x1fa2_7cf8,
    0xc4ac_5665,
    0xf429_2244,
    0x432a_ff97,
    0xab94_23a7,
    0xfc93_a039,
    0x655b_59c3,
    0x8f0c_cc92,
    0xffef_f47d,
    0x8584_5dd1,
    0x6fa8_7e4f,
    0xfe2c_e6e0,
    0xa301_4314,
    0x4e08_11a1,
    0xf753_7e82,
    0xbd3a_f235,
    0x2ad7_d2bb,
    0xeb86_d391,
];

const INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// The first word of MD5(`msg`), i.e. `u32::from_le_bytes(md5(msg)[0..4])`.
#[inline]
pub fn first_word(msg: &[u8]) -> u32 {
    if msg.len() > ONE_BLOCK_MAX {
        let d = Md5::digest(msg);
        return u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
    }
    let mut block = [0u8; 64];
    block[..msg.len()].copy_from_slice(msg);
    block[msg.len()] = 0x80;
    block[56..].copy_from_slice(&((msg.len() as u64) * 8).to_le_bytes());
    let mut x = [0u32; 16];
    for (w, c) in x.iter_mut().zip(block.chunks_exact(4)) {
        *w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    let [mut a, mut b, mut c, mut d] = INIT;
    macro_rules! step {
        ($f:expr, $a:ident, $b:ident, $c:ident, $d:ident, $i:expr, $g:expr, $s:expr) => {
            $a = $b.wrapping_add(
                $a.wrapping_add($f($b, $c, $d))
                    .wrapping_add(K[$i])
                    .wrapping_add(x[$g])
                    .rotate_left($s),
            );
        };
    }
    let f = |b: u32, c: u32, d: u32| d ^ (b & (c ^ d));
    let g = |b: u32, c: u32, d: u32| c ^ (d & (b ^ c));
    let h = |b: u32, c: u32, d: u32| b ^ c ^ d;
    let i = |b: u32, c: u32, d: u32| c ^ (b | !d);
    macro_rules! round {
        ($fn:ident, $start:expr, $g0:expr, $gstep:expr, [$s0:expr, $s1:expr, $s2:expr, $s3:expr]) => {
            let mut k = $start;
            while k < $start + 16 {
                let gi = |j: usize| ($g0 + $gstep * j) % 16;
                step!($fn, a, b, c, d, k, gi(k - $start), $s0);
                step!($fn, d, a, b, c, k + 1, gi(k + 1 - $start), $s1);
                step!($fn, c, d, a, b, k + 2, gi(k + 2 - $start), $s2);
                step!($fn, b, c, d, a, k + 3, gi(k + 3 - $start), $s3);
                k += 4;
            }
        };
    }
    round!(f, 0, 0, 1, [7, 12, 17, 22]);
    round!(g, 16, 1, 5, [5, 9, 14, 20]);
    round!(h, 32, 5, 3, [4, 11, 16, 23]);
    round!(i, 48, 0, 7, [6, 10, 15, 21]);
    INIT[0].wrapping_add(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(msg: &[u8]) -> u32 {
        let d = Md5::digest(msg);
        u32::from_le_bytes([d[0], d[1], d[2], d[3]])
    }

    #[test]
    fn rfc_1321_test_suite() {
        // The digests of RFC 1321's appendix A.5, first four bytes.
        for (msg, digest) in [
            (&b""[..], "d41d8cd98f00b204e9800998ecf8427e"),
            (b"a", "0cc175b9c0f1b6a831c399e269772661"),
            (b"abc", "900150983cd24fb0d6963f7d28e17f72"),
            (b"message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                b"abcdefghijklmnopqrstuvwxyz",
                "c3fcd3d76192e4007dfb496cca67e13b",
            ),
        ] {
            let want =
                u32::from_le_bytes(u32::from_str_radix(&digest[..8], 16).unwrap().to_be_bytes());
            assert_eq!(first_word(msg), want, "{:?}", String::from_utf8_lossy(msg));
        }
    }

    #[test]
    fn every_length_around_the_block_boundary() {
        for len in 0..=130 {
            let msg: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            assert_eq!(first_word(&msg), reference(&msg), "length {len}");
        }
    }

    proptest! {
        #[test]
        fn matches_md5_on_random_keys(msg in proptest::collection::vec(any::<u8>(), 0..260)) {
            prop_assert_eq!(first_word(&msg), reference(&msg));
        }
    }
}
