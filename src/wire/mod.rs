//! Zero-copy views over packet bytes: Ethernet (+802.1Q), ARP, IPv4, UDP, and memcached's
//! 8-byte UDP frame header, with full and incremental checksums.
//!
//! Owns: byte layouts and their checked views. Must not: know about memcached commands,
//! backends or policy.

mod buf;
pub use buf::{FrameBuf, NoRoom, MAX_FRAME};
