//! DPDK: the safe layer over `onvm-sys` and the standalone DPDK datapath (`kvlb dpdk`).
//!
//! Owns: every raw DPDK pointer kvlb handles — EAL start-up ([`Eal`]), packet pools
//! ([`Mempool`]), packet buffers owned ([`Mbuf`]) and borrowed ([`RteMbuf`]), ethernet ports
//! ([`Port`]), the TSC clock ([`TscClock`]) — and the burst loop that drives a
//! [`Pipeline`](crate::nf::Pipeline) over EAL ports ([`DpdkDatapath`]). The ONVM datapath
//! ([`crate::datapath::onvm`]) builds on the same layer.
//!
//! Must not: make balancing decisions (the pipeline does), or let a raw pointer escape:
//! nothing above this module sees one. Every `unsafe` block says why it is sound.
//!
//! Lifetimes of DPDK objects, and why no Rust lifetime ties them together:
//! - EAL is initialised once per process and never torn down by safe code ([`Eal::cleanup`]
//!   is `unsafe`), so everything created after it may assume it is up.
//! - Pools are never freed: mbufs and port queues refer to their pool without borrowing it,
//!   and freeing a pool would need a proof that none of them is alive. kvlb creates one pool
//!   per process (or uses ONVM's), so nothing leaks in practice.
//! - Mbufs are owned ([`Mbuf`], freed on drop) or borrowed for a callback ([`RteMbuf`]).
#![warn(clippy::undocumented_unsafe_blocks)]

mod app;
mod eal;
mod mbuf;
mod mempool;
mod port;
mod signal;
mod tsc;

pub use app::{report_first_panic_only, ClockSource, DatapathCounters, DpdkDatapath, DpdkOptions};
#[cfg(feature = "onvm")]
pub(crate) use eal::leak_argv;
pub use eal::Eal;
pub use mbuf::{free_bulk, Mbuf, RteMbuf};
pub use mempool::Mempool;
pub use port::{Port, PortConfig, PortStats};
pub use signal::StopFlag;
pub use tsc::TscClock;

use std::ffi::CStr;

/// What can go wrong in the DPDK layer.
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    #[error("EAL initialisation failed: {0}")]
    EalInit(String),
    #[error("EAL is already initialised in this process (it can be started only once)")]
    EalAlreadyInitialised,
    #[error("argument {0:?} contains a NUL byte")]
    NulInArgument(String),
    #[error("{call} failed: {reason} (errno {errno})")]
    Call {
        call: &'static str,
        errno: i32,
        reason: String,
    },
    #[error("no mempool named '{0}'")]
    NoSuchMempool(String),
    #[error(
        "port {0} does not exist (ports are created by EAL from --vdev arguments or bound NICs)"
    )]
    NoSuchPort(u16),
    #[error("the packet pool is exhausted")]
    PoolExhausted,
    #[error("name {0:?} is too long or contains a NUL byte")]
    BadName(String),
}

impl DpdkError {
    /// Builds a [`DpdkError::Call`] from a DPDK return value: DPDK returns `-errno`, or `-1`
    /// with `rte_errno` set.
    pub(crate) fn from_ret(call: &'static str, ret: i32) -> DpdkError {
        let errno = if ret < -1 { -ret } else { rte_errno() };
        DpdkError::Call {
            call,
            errno,
            reason: rte_strerror(errno),
        }
    }

    /// A [`DpdkError::Call`] for a call that reported failure through `rte_errno` alone
    /// (e.g. by returning NULL).
    pub(crate) fn from_errno(call: &'static str) -> DpdkError {
        let errno = rte_errno();
        DpdkError::Call {
            call,
            errno,
            reason: rte_strerror(errno),
        }
    }
}

/// The calling thread's `rte_errno`.
fn rte_errno() -> i32 {
    // SAFETY: reads a thread-local integer; no preconditions.
    unsafe { onvm_sys::kvlb_rte_errno() }
}

/// DPDK's message for `errno` (covers both libc and DPDK-specific codes).
fn rte_strerror(errno: i32) -> String {
    // SAFETY: rte_strerror accepts any value and returns a pointer to a NUL-terminated
    // string (static, or in a thread-local buffer valid until the next call on this
    // thread); it is copied out before anything else runs on this thread.
    unsafe {
        let s = onvm_sys::rte_strerror(errno);
        if s.is_null() {
            return format!("error {errno}");
        }
        CStr::from_ptr(s).to_string_lossy().into_owned()
    }
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy)]
pub struct MacFmt(pub crate::config::Mac);

impl std::fmt::Display for MacFmt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl std::fmt::Debug for MacFmt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}
