//! ARP for IPv4 over Ethernet (RFC 826): enough to answer for the NF's own addresses and to
//! resolve its next hops.

use std::net::Ipv4Addr;

use super::ethernet::read_mac;
use super::{Error, Mac};

/// ARP operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    Request,
    Reply,
    Unknown(u16),
}

impl From<u16> for Operation {
    fn from(v: u16) -> Self {
        match v {
            1 => Operation::Request,
            2 => Operation::Reply,
            other => Operation::Unknown(other),
        }
    }
}

impl From<Operation> for u16 {
    fn from(v: Operation) -> u16 {
        match v {
            Operation::Request => 1,
            Operation::Reply => 2,
            Operation::Unknown(other) => other,
        }
    }
}

mod field {
    use crate::wire::Field;
    pub const HTYPE: Field = 0..2;
    pub const PTYPE: Field = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Field = 6..8;
    // The rest is laid out for Ethernet/IPv4 (hlen 6, plen 4), which check() enforces.
    pub const SHA: Field = 8..14;
    pub const SPA: Field = 14..18;
    pub const THA: Field = 18..24;
    pub const TPA: Field = 24..28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = field::TPA.end;

const HTYPE_ETHERNET: u16 = 1;
const PTYPE_IPV4: u16 = 0x0800;

/// A read/write view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without checks; accessors may panic on a short buffer.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps `buffer` after [`check`](Self::check); no accessor can panic then.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        p.check()?;
        Ok(p)
    }

    /// Fails with [`Error::Truncated`] on a short buffer and with [`Error::BadArp`] unless
    /// the packet is Ethernet/IPv4 (htype 1, ptype 0x0800, hlen 6, plen 4).
    #[inline]
    pub fn check(&self) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        if b.len() < PACKET_LEN {
            return Err(Error::Truncated);
        }
        if u16::from_be_bytes([b[0], b[1]]) != HTYPE_ETHERNET
            || u16::from_be_bytes([b[2], b[3]]) != PTYPE_IPV4
            || b[field::HLEN] != 6
            || b[field::PLEN] != 4
        {
            return Err(Error::BadArp);
        }
        Ok(())
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The view reads every field; this and [`protocol_type`](Self::protocol_type) only the
    /// tests ([`check`](Self::check) compares both with Ethernet/IPv4 itself).
    #[inline]
    pub fn hardware_type(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::HTYPE];
        u16::from_be_bytes([b[0], b[1]])
    }

    #[inline]
    pub fn protocol_type(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::PTYPE];
        u16::from_be_bytes([b[0], b[1]])
    }

    #[inline]
    pub fn operation(&self) -> Operation {
        let b = &self.buffer.as_ref()[field::OPER];
        Operation::from(u16::from_be_bytes([b[0], b[1]]))
    }

    #[inline]
    pub fn sender_hardware_addr(&self) -> Mac {
        read_mac(&self.buffer.as_ref()[field::SHA])
    }

    #[inline]
    pub fn sender_protocol_addr(&self) -> Ipv4Addr {
        read_ip(&self.buffer.as_ref()[field::SPA])
    }

    #[inline]
    pub fn target_hardware_addr(&self) -> Mac {
        read_mac(&self.buffer.as_ref()[field::THA])
    }

    #[inline]
    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        read_ip(&self.buffer.as_ref()[field::TPA])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes the fixed Ethernet/IPv4 type and length fields.
    pub fn set_ethernet_ipv4(&mut self) {
        let b = self.buffer.as_mut();
        b[field::HTYPE].copy_from_slice(&HTYPE_ETHERNET.to_be_bytes());
        b[field::PTYPE].copy_from_slice(&PTYPE_IPV4.to_be_bytes());
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
    }

    pub fn set_operation(&mut self, op: Operation) {
        self.buffer.as_mut()[field::OPER].copy_from_slice(&u16::from(op).to_be_bytes());
    }

    pub fn set_sender_hardware_addr(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&mac);
    }

    pub fn set_sender_protocol_addr(&mut self, ip: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&ip.octets());
    }

    pub fn set_target_hardware_addr(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&mac);
    }

    pub fn set_target_protocol_addr(&mut self, ip: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&ip.octets());
    }
}

#[inline(always)]
fn read_ip(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

/// An Ethernet/IPv4 ARP packet as a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ArpRepr {
    pub operation: Operation,
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_mac: Mac,
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    /// Parses a checked packet.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<ArpRepr, Error> {
        packet.check()?;
        Ok(ArpRepr {
            operation: packet.operation(),
            sender_mac: packet.sender_hardware_addr(),
            sender_ip: packet.sender_protocol_addr(),
            target_mac: packet.target_hardware_addr(),
            target_ip: packet.target_protocol_addr(),
        })
    }

    /// A who-has request for `target_ip` from `sender_mac`/`sender_ip`.
    pub fn request(sender_mac: Mac, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> ArpRepr {
        ArpRepr {
            operation: Operation::Request,
            sender_mac,
            sender_ip,
            target_mac: [0; 6],
            target_ip,
        }
    }

    /// The reply that announces `my_mac` for this request's target address.
    pub fn reply_to(&self, my_mac: Mac) -> ArpRepr {
        ArpRepr {
            operation: Operation::Reply,
            sender_mac: my_mac,
            sender_ip: self.target_ip,
            target_mac: self.sender_mac,
            target_ip: self.sender_ip,
        }
    }

    /// Bytes [`emit`](Self::emit) writes.
    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// Writes the packet at the start of `buf` ([`Error::Truncated`] if it is too short).
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Error> {
        if buf.len() < PACKET_LEN {
            return Err(Error::Truncated);
        }
        let mut p = Packet::new_unchecked(buf);
        p.set_ethernet_ipv4();
        p.set_operation(self.operation);
        p.set_sender_hardware_addr(self.sender_mac);
        p.set_sender_protocol_addr(self.sender_ip);
        p.set_target_hardware_addr(self.target_mac);
        p.set_target_protocol_addr(self.target_ip);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // eth/ipv4, request
        0x11, 0x12, 0x13, 0x14, 0x15, 0x16, // sha
        10, 0, 0, 1, // spa
        0, 0, 0, 0, 0, 0, // tha
        10, 0, 0, 2, // tpa
    ];

    #[test]
    fn test_parse() {
        let p = Packet::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(p.hardware_type(), 1);
        assert_eq!(p.protocol_type(), 0x0800);
        let r = ArpRepr::parse(&p).unwrap();
        assert_eq!(
            r,
            ArpRepr::request(
                [0x11, 0x12, 0x13, 0x14, 0x15, 0x16],
                Ipv4Addr::new(10, 0, 0, 1),
                Ipv4Addr::new(10, 0, 0, 2)
            )
        );
    }

    #[test]
    fn test_emit() {
        let r = ArpRepr::parse(&Packet::new_checked(&REQUEST[..]).unwrap()).unwrap();
        let mut out = [0u8; 28];
        r.emit(&mut out).unwrap();
        assert_eq!(out, REQUEST);
        let reply = r.reply_to([0xaa; 6]);
        reply.emit(&mut out).unwrap();
        let back = ArpRepr::parse(&Packet::new_checked(&out[..]).unwrap()).unwrap();
        assert_eq!(back.operation, Operation::Reply);
        assert_eq!(back.sender_ip, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(back.target_mac, [0x11, 0x12, 0x13, 0x14, 0x15, 0x16]);
        assert_eq!(r.emit(&mut [0u8; 27]), Err(Error::Truncated));
    }

    #[test]
    fn test_impossible_len() {
        assert_eq!(
            Packet::new_checked(&REQUEST[..27]).unwrap_err(),
            Error::Truncated
        );
        let mut ipv6ish = REQUEST;
        ipv6ish[5] = 16;
        assert_eq!(
            Packet::new_checked(&ipv6ish[..]).unwrap_err(),
            Error::BadArp
        );
    }
}
