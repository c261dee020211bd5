//! Datapaths: the thin I/O shells around [`crate::nf::Core`]. Each owns its I/O, clock and
//! threads; none makes a balancing decision.
//!
//! What they all do around the core (hand it bursts, tick it, contain its panics, count its
//! verdicts, drain what it emits) is written once, in [`driver`]; ONVM's loop still has its
//! own copy until it moves to bursts from its rings.
//!
//! `dpdk` and `onvm` are the only places (with the `onvm-sys` crate) where kvlb uses
//! `unsafe`; each of their `unsafe` blocks says why it is sound.

// The safe layer over `onvm-sys`: the only modules where `unsafe` is allowed (the
// workspace denies it).
#[cfg(feature = "dpdk")]
#[allow(unsafe_code)]
pub mod dpdk;
#[cfg(feature = "onvm")]
#[allow(unsafe_code)]
pub mod onvm;

pub mod driver;
pub mod replay;
pub mod socket;
pub mod tcp;

/// The MAC kvlb uses on datapaths that have no port MAC of their own (replay), unless
/// `--mac` is given: locally administered, "kvlb" in ASCII.
pub const DEFAULT_MAC: [u8; 6] = [0x02, 0x6b, 0x76, 0x6c, 0x62, 0x00];
