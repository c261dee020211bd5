//! Ethernet II frames and 802.1Q / 802.1ad VLAN tags.

use std::fmt;

use super::{Error, Mac};

/// The EtherType of a frame or of the header after a VLAN tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EtherType {
    Ipv4,
    Arp,
    Ipv6,
    /// 802.1Q customer VLAN tag (0x8100).
    Vlan,
    /// 802.1ad service VLAN tag (0x88a8), the outer tag of a QinQ stack.
    QinQ,
    Unknown(u16),
}

impl From<u16> for EtherType {
    #[inline]
    fn from(v: u16) -> Self {
        match v {
            0x0800 => EtherType::Ipv4,
            0x0806 => EtherType::Arp,
            0x86dd => EtherType::Ipv6,
            0x8100 => EtherType::Vlan,
            0x88a8 => EtherType::QinQ,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    #[inline]
    fn from(v: EtherType) -> u16 {
        match v {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Ipv6 => 0x86dd,
            EtherType::Vlan => 0x8100,
            EtherType::QinQ => 0x88a8,
            EtherType::Unknown(other) => other,
        }
    }
}

impl EtherType {
    /// Whether this EtherType introduces a VLAN tag.
    #[inline]
    pub fn is_vlan(self) -> bool {
        matches!(self, EtherType::Vlan | EtherType::QinQ)
    }
}

mod field {
    use crate::wire::{Field, Rest};
    pub const DESTINATION: Field = 0..6;
    pub const SOURCE: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const PAYLOAD: Rest = 14..;
}

/// Length of an untagged Ethernet II header.
pub const HEADER_LEN: usize = field::PAYLOAD.start;
/// Length of one VLAN tag (TPID + TCI).
pub const VLAN_TAG_LEN: usize = 4;
/// Most VLAN tags kvlb looks through (an 802.1ad outer tag and an 802.1Q inner tag). Only
/// documentation names it (the parser's two-tag walk is written out).
pub const MAX_VLAN_TAGS: usize = 2;
/// The broadcast address.
pub const BROADCAST: Mac = [0xff; 6];

/// A read/write view of an Ethernet II header (no VLAN tags: see [`EthernetRepr`]).
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps `buffer` without checking its length; accessors may panic on a short buffer.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        Frame { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len); no accessor can panic then.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// Fails with [`Error::Truncated`] if the buffer cannot hold the header.
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn dst_addr(&self) -> Mac {
        read_mac(&self.buffer.as_ref()[field::DESTINATION])
    }

    #[inline]
    pub fn src_addr(&self) -> Mac {
        read_mac(&self.buffer.as_ref()[field::SOURCE])
    }

    #[inline]
    pub fn ethertype(&self) -> EtherType {
        let d = &self.buffer.as_ref()[field::ETHERTYPE];
        EtherType::from(u16::from_be_bytes([d[0], d[1]]))
    }

    /// Everything after the 14-byte header (VLAN tags included).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    #[inline]
    pub fn set_dst_addr(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&mac);
    }

    #[inline]
    pub fn set_src_addr(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&mac);
    }

    /// The view's setter for its last field; only the tests call it.
    #[inline]
    pub fn set_ethertype(&mut self, t: EtherType) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&u16::from(t).to_be_bytes());
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

#[inline(always)]
pub(crate) fn read_mac(b: &[u8]) -> Mac {
    [b[0], b[1], b[2], b[3], b[4], b[5]]
}

/// One VLAN tag: the TPID that introduced it and its tag control information.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VlanTag {
    /// 0x8100 (802.1Q) or 0x88a8 (802.1ad).
    pub tpid: u16,
    /// Priority (3 bits), drop eligible (1 bit), VLAN id (12 bits).
    pub tci: u16,
}

impl VlanTag {
    /// An 802.1Q tag with priority 0 for VLAN `vid` (masked to 12 bits). The tests' way to
    /// build tagged frames; no production caller.
    pub fn dot1q(vid: u16) -> VlanTag {
        VlanTag {
            tpid: 0x8100,
            tci: vid & 0x0fff,
        }
    }

    /// The 12-bit VLAN id.
    #[inline]
    pub fn vid(self) -> u16 {
        self.tci & 0x0fff
    }

    /// The 3-bit priority code point.
    #[inline]
    pub fn pcp(self) -> u8 {
        (self.tci >> 13) as u8
    }
}

impl fmt::Debug for VlanTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "VlanTag({:#06x} vid={} pcp={})",
            self.tpid,
            self.vid(),
            self.pcp()
        )
    }
}

/// An Ethernet header with up to two VLAN tags, as a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EthernetRepr {
    pub dst: Mac,
    pub src: Mac,
    /// Outer tag (the only one on a single-tagged frame).
    pub vlan: Option<VlanTag>,
    /// Inner tag of a QinQ stack; `None` unless `vlan` is set.
    pub inner_vlan: Option<VlanTag>,
    /// The EtherType after the tags.
    pub ethertype: EtherType,
}

impl EthernetRepr {
    /// Parses the header and its VLAN tags from the start of `frame`.
    ///
    /// Fails with [`Error::Truncated`] if the header or a tag is cut off and with
    /// [`Error::VlanTooDeep`] for more than [`MAX_VLAN_TAGS`] tags.
    #[inline]
    pub fn parse(frame: &[u8]) -> Result<EthernetRepr, Error> {
        if frame.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let mut repr = EthernetRepr {
            dst: read_mac(&frame[field::DESTINATION]),
            src: read_mac(&frame[field::SOURCE]),
            vlan: None,
            inner_vlan: None,
            ethertype: EtherType::from(u16::from_be_bytes([frame[12], frame[13]])),
        };
        let mut at = HEADER_LEN;
        let mut tpid = u16::from(repr.ethertype);
        while repr.ethertype.is_vlan() {
            if frame.len() < at + VLAN_TAG_LEN {
                return Err(Error::Truncated);
            }
            let tag = VlanTag {
                tpid,
                tci: u16::from_be_bytes([frame[at], frame[at + 1]]),
            };
            let next = u16::from_be_bytes([frame[at + 2], frame[at + 3]]);
            if repr.vlan.is_none() {
                repr.vlan = Some(tag);
            } else if repr.inner_vlan.is_none() {
                repr.inner_vlan = Some(tag);
            } else {
                return Err(Error::VlanTooDeep);
            }
            at += VLAN_TAG_LEN;
            tpid = next;
            repr.ethertype = EtherType::from(next);
        }
        Ok(repr)
    }

    /// Header length including tags: where the network-layer header starts.
    #[inline]
    pub fn header_len(&self) -> usize {
        HEADER_LEN
            + VLAN_TAG_LEN
                * (usize::from(self.vlan.is_some()) + usize::from(self.inner_vlan.is_some()))
    }

    /// Writes the header and tags at the start of `buf`, which must hold
    /// [`header_len`](Self::header_len) bytes (else [`Error::Truncated`], nothing written).
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Error> {
        let len = self.header_len();
        if buf.len() < len {
            return Err(Error::Truncated);
        }
        buf[field::DESTINATION].copy_from_slice(&self.dst);
        buf[field::SOURCE].copy_from_slice(&self.src);
        let mut at = field::ETHERTYPE.start;
        // An inner tag without an outer one is written as the only tag.
        for tag in [self.vlan, self.inner_vlan].into_iter().flatten() {
            buf[at..at + 2].copy_from_slice(&tag.tpid.to_be_bytes());
            buf[at + 2..at + 4].copy_from_slice(&tag.tci.to_be_bytes());
            at += VLAN_TAG_LEN;
        }
        buf[at..at + 2].copy_from_slice(&u16::from(self.ethertype).to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static UNTAGGED: [u8; 18] = [
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, // dst
        0x11, 0x12, 0x13, 0x14, 0x15, 0x16, // src
        0x08, 0x00, // IPv4
        0xaa, 0xbb, 0xcc, 0xdd,
    ];

    static QINQ: [u8; 22] = [
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, //
        0x11, 0x12, 0x13, 0x14, 0x15, 0x16, //
        0x88, 0xa8, 0x20, 0x64, // S-tag pcp 1 vid 100
        0x81, 0x00, 0x00, 0x07, // C-tag vid 7
        0x08, 0x06, // ARP
    ];

    #[test]
    fn test_parse_view() {
        let f = Frame::new_checked(&UNTAGGED[..]).unwrap();
        assert_eq!(f.dst_addr(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(f.src_addr(), [0x11, 0x12, 0x13, 0x14, 0x15, 0x16]);
        assert_eq!(f.ethertype(), EtherType::Ipv4);
        assert_eq!(f.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
    }

    #[test]
    fn test_set_view() {
        let mut bytes = UNTAGGED;
        let mut f = Frame::new_checked(&mut bytes[..]).unwrap();
        f.set_dst_addr([9; 6]);
        f.set_src_addr([8; 6]);
        f.set_ethertype(EtherType::Arp);
        f.payload_mut()[0] = 1;
        assert_eq!(&bytes[..14], &[9, 9, 9, 9, 9, 9, 8, 8, 8, 8, 8, 8, 8, 6]);
        assert_eq!(bytes[14], 1);
    }

    #[test]
    fn test_impossible_len() {
        assert_eq!(
            Frame::new_checked(&UNTAGGED[..13]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(EthernetRepr::parse(&QINQ[..17]), Err(Error::Truncated));
        assert_eq!(EthernetRepr::parse(&QINQ[..21]), Err(Error::Truncated));
    }

    #[test]
    fn test_parse_qinq() {
        let r = EthernetRepr::parse(&QINQ).unwrap();
        assert_eq!(r.vlan.unwrap().tpid, 0x88a8);
        assert_eq!(r.vlan.unwrap().vid(), 100);
        assert_eq!(r.vlan.unwrap().pcp(), 1);
        assert_eq!(r.inner_vlan.unwrap().vid(), 7);
        assert_eq!(r.ethertype, EtherType::Arp);
        assert_eq!(r.header_len(), 22);
        let mut out = [0u8; 22];
        r.emit(&mut out).unwrap();
        assert_eq!(out, QINQ);
    }

    #[test]
    fn test_three_tags() {
        let mut f = QINQ.to_vec();
        f.splice(18..18, [0x00, 0x05, 0x81, 0x00]);
        f[16..18].copy_from_slice(&[0x81, 0x00]);
        assert_eq!(EthernetRepr::parse(&f), Err(Error::VlanTooDeep));
    }

    #[test]
    fn test_emit_untagged() {
        let r = EthernetRepr::parse(&UNTAGGED).unwrap();
        assert_eq!(r.header_len(), 14);
        let mut out = [0u8; 14];
        r.emit(&mut out).unwrap();
        assert_eq!(out, UNTAGGED[..14]);
        assert_eq!(r.emit(&mut [0u8; 13]), Err(Error::Truncated));
    }
}
