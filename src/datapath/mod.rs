//! Datapaths: the thin I/O shells around [`crate::nf::Core`]. Each owns its I/O, clock and
//! threads; none makes a balancing decision.
//!
//! `dpdk` and `onvm` are the only places (with the `onvm-sys` crate) where kvlb uses
//! `unsafe`; each of their `unsafe` blocks says why it is sound.

#[cfg(feature = "dpdk")]
pub mod dpdk;
#[cfg(feature = "onvm")]
pub mod onvm;

pub mod replay;
