//! Zero-copy views over packet bytes: Ethernet (+802.1Q/802.1ad VLAN tags), ARP, IPv4, UDP,
//! and memcached's 8-byte UDP frame header, with full and incremental (RFC 1624) checksums.
//!
//! Owns: byte layouts, their checked views, whole-frame classification, in-place rewriting
//! of addresses/ports/lengths/request ids, and emitting headers. Must not: know memcached
//! commands (that is [`crate::proto`], which builds on this module), backends or policy.
//!
//! # The contract (smoltcp's)
//!
//! Each header has two layers:
//!
//! - a **view** (`ethernet::Frame<T>`, `ipv4::Packet<T>`, `udp::Packet<T>`,
//!   `arp::Packet<T>`, `mc_header::Header<T>`) over any `T: AsRef<[u8]>` (setters need
//!   `AsMut<[u8]>` too). Untrusted bytes go through `new_checked`, which validates every
//!   length field against the buffer; **after a successful `new_checked`, no accessor can
//!   panic**. `new_unchecked` is for buffers the caller has already sized (emitting).
//! - a small **`Repr` value** (`EthernetRepr`, `Ipv4Repr`, `UdpRepr`, `ArpRepr`,
//!   `McHeader`): `parse` from a checked view applies the semantic checks (version,
//!   checksums, fragments), `emit` writes it back; emit-then-parse is the identity.
//!
//! # What the core uses
//!
//! - [`classify`]: one call per frame. Validates Ethernet(+VLAN)/IPv4/UDP, checksums
//!   included, and returns a small `Copy` [`UdpFrame`] (MACs, VLAN tags, IPs, ports, header
//!   offsets, payload range) or an [`ArpFrame`]; never allocates, never panics.
//! - [`UdpFrame::rewrite`] → [`UdpFrameMut`]: set MACs, IPs, ports, TTL, the memcached
//!   request id, or the payload length in place, keeping both checksums valid
//!   (incrementally where only a field changes).
//! - [`UdpEndpoints::emit_headers`] / [`UdpEndpoints::emit_message`] and [`emit_arp`] /
//!   [`emit_arp_reply`]: whole frames into a caller-supplied buffer.
//! - [`Error`]: why a frame was refused; [`Error::name`] is the stable stats key.
//!
//! Checksum verification is skipped under `cfg(fuzzing)` so fuzzers reach deeper code.

pub mod arp;
mod buf;
pub mod checksum;
pub mod ethernet;
mod frame;
pub mod icmp;
pub mod ipv4;
pub mod mc_header;
pub mod udp;

pub use arp::ArpRepr;
pub use buf::{FrameBuf, NoRoom, MAX_FRAME};
pub use ethernet::{EtherType, EthernetRepr, VlanTag};
pub use frame::{
    classify, emit_arp, emit_arp_reply, ArpFrame, Classified, Retarget, UdpEndpoints, UdpFrame,
    UdpFrameMut, MIN_FRAME_LEN,
};
pub use ipv4::{IpProtocol, Ipv4Repr};
pub use mc_header::McHeader;
pub use udp::UdpRepr;

/// A 48-bit Ethernet address (the same type as `config::Mac`).
pub type Mac = [u8; 6];

/// A byte range of a header field.
pub(crate) type Field = core::ops::Range<usize>;
/// The bytes from a field to the end.
pub(crate) type Rest = core::ops::RangeFrom<usize>;

/// Why a frame was refused. Cheap to copy and compare; [`name`](Error::name) is stable and
/// used as the stats key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A header, tag, or the length a header declares, runs past the end of the buffer.
    #[error("truncated frame")]
    Truncated,
    /// More than two VLAN tags.
    #[error("more than two VLAN tags")]
    VlanTooDeep,
    /// Neither IPv4 nor ARP (IPv6, LLDP, ...).
    #[error("not IPv4")]
    NotIpv4,
    /// IPv4 version field is not 4.
    #[error("bad IP version")]
    BadIpVersion,
    /// IPv4 header length (IHL) below 20 bytes.
    #[error("bad IP header length")]
    BadIpHeaderLen,
    /// IPv4 total length below the header length, or a datagram over 65535 bytes.
    #[error("bad IP total length")]
    BadIpLength,
    #[error("bad IP header checksum")]
    BadIpChecksum,
    /// A fragment (MF set or non-zero offset): kvlb does not reassemble.
    #[error("IP fragment")]
    IpFragment,
    /// IPv4 carrying something other than UDP.
    #[error("not UDP")]
    NotUdp,
    /// UDP length below 8 or beyond the IPv4 payload.
    #[error("bad UDP length")]
    BadUdpLength,
    #[error("bad UDP checksum")]
    BadUdpChecksum,
    /// ARP that is not Ethernet/IPv4.
    #[error("unsupported ARP")]
    BadArp,
    /// A UDP payload shorter than memcached's 8-byte frame header.
    #[error("truncated memcached frame header")]
    TruncatedFrameHeader,
}

impl Error {
    /// Every variant, for stats tables and tests.
    pub const ALL: &'static [Error] = &[
        Error::Truncated,
        Error::VlanTooDeep,
        Error::NotIpv4,
        Error::BadIpVersion,
        Error::BadIpHeaderLen,
        Error::BadIpLength,
        Error::BadIpChecksum,
        Error::IpFragment,
        Error::NotUdp,
        Error::BadUdpLength,
        Error::BadUdpChecksum,
        Error::BadArp,
        Error::TruncatedFrameHeader,
    ];

    /// How many variants there are: [`index`](Error::index) is below it.
    pub const COUNT: usize = Error::ALL.len();

    /// A dense index (`ALL[e.index()] == e`), for counter arrays.
    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Stable snake_case name for stats.
    pub const fn name(self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::VlanTooDeep => "vlan_too_deep",
            Error::NotIpv4 => "not_ipv4",
            Error::BadIpVersion => "bad_ip_version",
            Error::BadIpHeaderLen => "bad_ip_header_len",
            Error::BadIpLength => "bad_ip_length",
            Error::BadIpChecksum => "bad_ip_checksum",
            Error::IpFragment => "ip_fragment",
            Error::NotUdp => "not_udp",
            Error::BadUdpLength => "bad_udp_length",
            Error::BadUdpChecksum => "bad_udp_checksum",
            Error::BadArp => "bad_arp",
            Error::TruncatedFrameHeader => "truncated_frame_header",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for e in Error::ALL {
            let n = e.name();
            assert!(seen.insert(n), "duplicate {n}");
            assert!(
                n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{n}"
            );
        }
        assert_eq!(size_of::<Error>(), 1);
    }

    #[test]
    fn indices_are_dense() {
        for (i, e) in Error::ALL.iter().enumerate() {
            assert_eq!(e.index(), i, "{e:?}");
        }
    }
}
