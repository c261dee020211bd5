//! Packet buffer pools.

use std::ffi::CString;
use std::ptr::NonNull;

use onvm_sys::rte_mempool;

use super::{DpdkError, Eal, Mbuf};

/// A pool of packet buffers (`rte_pktmbuf_pool_create`'s kind), alive until the process
/// exits (see the module notes on lifetimes). A cheap copyable handle.
#[derive(Clone, Copy, Debug)]
pub struct Mempool {
    raw: NonNull<rte_mempool>,
}

// SAFETY: a pktmbuf pool is a thread-safe object: its default handler is a multi-producer,
// multi-consumer ring, and the per-lcore caches are only touched by the EAL thread owning
// that lcore id (threads without one bypass them). The handle is never freed (pools live for
// the process), so sharing or sending it cannot create a dangling pointer.
unsafe impl Send for Mempool {}
// SAFETY: as for Send; every operation through a shared handle is one of DPDK's thread-safe
// pool operations.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `n` mbufs with `data_room` bytes of buffer each (headroom
    /// included, e.g. `RTE_MBUF_DEFAULT_BUF_SIZE` = 2048 + 128) on NUMA `socket` (`-1`:
    /// any), with a per-lcore cache of `cache` mbufs.
    pub fn create(
        _eal: Eal,
        name: &str,
        n: u32,
        cache: u32,
        data_room: u16,
        socket: i32,
    ) -> Result<Mempool, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::BadName(name.into()))?;
        let cache = cache.min(onvm_sys::RTE_MEMPOOL_CACHE_MAX_SIZE);
        // SAFETY: EAL is up (the token); cname is a valid C string that DPDK copies.
        let raw = unsafe {
            onvm_sys::rte_pktmbuf_pool_create(cname.as_ptr(), n, cache, 0, data_room, socket)
        };
        NonNull::new(raw)
            .map(|raw| Mempool { raw })
            .ok_or_else(|| DpdkError::from_errno("rte_pktmbuf_pool_create"))
    }

    /// Finds a pool by name, e.g. one a DPDK primary process (ONVM's manager) created.
    pub fn lookup(_eal: Eal, name: &str) -> Result<Mempool, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::BadName(name.into()))?;
        // SAFETY: EAL is up; cname is a valid C string.
        let raw = unsafe { onvm_sys::rte_mempool_lookup(cname.as_ptr()) };
        NonNull::new(raw)
            .map(|raw| Mempool { raw })
            .ok_or_else(|| DpdkError::NoSuchMempool(name.into()))
    }

    /// An empty mbuf (length 0, headroom reserved) from the pool.
    #[inline]
    pub fn alloc(&self) -> Result<Mbuf, DpdkError> {
        // SAFETY: the pool is a live pktmbuf pool; alloc returns a reset mbuf that nobody
        // else references, or NULL.
        let m = unsafe { onvm_sys::kvlb_pktmbuf_alloc(self.raw.as_ptr()) };
        match NonNull::new(m) {
            // SAFETY: a freshly allocated mbuf is exclusively ours.
            Some(m) => Ok(unsafe { Mbuf::from_raw(m) }),
            None => Err(DpdkError::PoolExhausted),
        }
    }

    /// An mbuf holding a copy of `bytes`.
    pub fn alloc_copy(&self, bytes: &[u8]) -> Result<Mbuf, DpdkError> {
        let mut m = self.alloc()?;
        m.extend_from_slice(bytes).map_err(|_| DpdkError::Call {
            call: "rte_pktmbuf_append",
            errno: libc::ENOSPC,
            reason: format!("{} bytes do not fit one mbuf", bytes.len()),
        })?;
        Ok(m)
    }

    /// Mbufs currently free in the pool (including per-lcore caches).
    pub fn available(&self) -> u32 {
        // SAFETY: a read-only walk of the pool's counters.
        unsafe { onvm_sys::rte_mempool_avail_count(self.raw.as_ptr()) }
    }

    /// Mbufs currently allocated from the pool (the tests' leak check).
    pub fn in_use(&self) -> u32 {
        // SAFETY: as for available.
        unsafe { onvm_sys::rte_mempool_in_use_count(self.raw.as_ptr()) }
    }

    pub(crate) fn as_ptr(&self) -> *mut rte_mempool {
        self.raw.as_ptr()
    }
}
