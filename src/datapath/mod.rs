//! Datapaths: the thin I/O shells around [`crate::nf::Core`]. Each owns its I/O, clock and
//! threads; none makes a balancing decision.
pub mod replay;
