//! Packet buffers: [`Mbuf`] owns one (freed on drop); [`RteMbuf`] is one borrowed, as a
//! burst dequeued from an ONVM ring or an owner ([`Mbuf`] derefs to it) lends it.
//!
//! kvlb never clones or attaches mbufs, and the sources it takes them from (port receive,
//! ONVM rings, its own pools) hand over direct mbufs with a reference count of one: holding
//! one means exclusive access to its header and its data room. That is the invariant every
//! `unsafe` block below relies on.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use onvm_sys::rte_mbuf;

use crate::wire::{FrameBuf, NoRoom};

/// DPDK's `struct rte_mbuf`, borrowed: `&RteMbuf` reads a frame, `&mut RteMbuf` rewrites it
/// in place. Only references to it exist.
///
/// Accessors look at the first segment; datapaths hand the core only single-segment mbufs
/// ([`RteMbuf::is_contiguous`]), where the first segment is the whole frame.
#[repr(transparent)]
pub struct RteMbuf(rte_mbuf);

impl RteMbuf {
    /// Borrows the mbuf at `m`.
    ///
    /// # Safety
    /// `m` must point to a live, direct mbuf with a reference count of one that nothing
    /// else reads or writes for `'a`.
    #[inline]
    pub(crate) unsafe fn from_ptr<'a>(m: NonNull<rte_mbuf>) -> &'a mut RteMbuf {
        // SAFETY: RteMbuf is repr(transparent) over rte_mbuf; the caller guarantees the
        // pointer is live and exclusively ours for 'a.
        unsafe { &mut *m.as_ptr().cast::<RteMbuf>() }
    }

    #[inline]
    pub(crate) fn as_ptr(&mut self) -> *mut rte_mbuf {
        &mut self.0
    }

    /// Length of the first segment's data.
    #[inline]
    pub fn len(&self) -> usize {
        usize::from(self.0.data_len)
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.data_len == 0
    }

    /// Length of the whole packet (all segments).
    #[inline]
    pub fn pkt_len(&self) -> u32 {
        self.0.pkt_len
    }

    /// Whether the packet is one segment (its data is one slice).
    #[inline]
    pub fn is_contiguous(&self) -> bool {
        self.0.nb_segs == 1
    }

    /// The port the packet arrived on (as set by the receiving driver).
    #[inline]
    pub fn port(&self) -> u16 {
        self.0.port
    }

    /// Free bytes in front of the data. With [`prepend`](Self::prepend) and
    /// [`adj`](Self::adj), the front-of-data part of the mbuf interface: the datapaths never
    /// move the front of a frame, `tests/dpdk_layer.rs` checks these against DPDK.
    #[inline]
    pub fn headroom(&self) -> usize {
        usize::from(self.0.data_off)
    }

    /// Free bytes after the data (first segment).
    #[inline]
    pub fn tailroom(&self) -> usize {
        usize::from(self.0.buf_len)
            .saturating_sub(usize::from(self.0.data_off) + usize::from(self.0.data_len))
    }

    /// The first segment's data.
    #[inline]
    pub fn data(&self) -> &[u8] {
        // SAFETY: for a live mbuf, buf_addr + data_off starts data_len initialised bytes
        // inside its buffer (DPDK keeps data_off + data_len <= buf_len); we hold the mbuf,
        // so nobody writes them while the shared borrow lives.
        unsafe {
            std::slice::from_raw_parts(
                self.0
                    .buf_addr
                    .cast::<u8>()
                    .add(usize::from(self.0.data_off)),
                usize::from(self.0.data_len),
            )
        }
    }

    /// The first segment's data, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for data(); the mbuf is direct with one reference (module invariant),
        // so the exclusive borrow of the mbuf is an exclusive borrow of its data.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.0
                    .buf_addr
                    .cast::<u8>()
                    .add(usize::from(self.0.data_off)),
                usize::from(self.0.data_len),
            )
        }
    }

    /// Sets a single-segment packet's length, growing into the tailroom or shrinking from
    /// the end. Fails, changing nothing, for multi-segment packets or without room.
    #[inline]
    pub fn set_data_len(&mut self, len: usize) -> Result<(), NoRoom> {
        if !self.is_contiguous() || len > self.len() + self.tailroom() {
            return Err(NoRoom);
        }
        // Fits in u16: bounded by buf_len.
        let len16 = len as u16;
        self.0.data_len = len16;
        self.0.pkt_len = u32::from(len16);
        Ok(())
    }

    /// Grows the packet by `n` bytes at the end (`rte_pktmbuf_append`) and returns them
    /// (their content is unspecified).
    pub fn append(&mut self, n: usize) -> Result<&mut [u8], NoRoom> {
        let n16 = u16::try_from(n).map_err(|_| NoRoom)?;
        // SAFETY: the mbuf is live and ours; append either returns a pointer to n bytes
        // inside the last segment's buffer, now part of the packet, or NULL leaving the
        // mbuf unchanged.
        let p = unsafe { onvm_sys::kvlb_pktmbuf_append(self.as_ptr(), n16) };
        if p.is_null() {
            return Err(NoRoom);
        }
        // SAFETY: p points at n bytes of this mbuf's buffer that the exclusive borrow of
        // the mbuf covers.
        Ok(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), n) })
    }

    /// Grows the packet by `n` bytes at the front (`rte_pktmbuf_prepend`) and returns them.
    pub fn prepend(&mut self, n: usize) -> Result<&mut [u8], NoRoom> {
        let n16 = u16::try_from(n).map_err(|_| NoRoom)?;
        // SAFETY: as for append, with the headroom of the first segment.
        let p = unsafe { onvm_sys::kvlb_pktmbuf_prepend(self.as_ptr(), n16) };
        if p.is_null() {
            return Err(NoRoom);
        }
        // SAFETY: p points at the n new bytes at the front of the data.
        Ok(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), n) })
    }

    /// Removes `n` bytes from the front (`rte_pktmbuf_adj`).
    pub fn adj(&mut self, n: usize) -> Result<(), NoRoom> {
        let n16 = u16::try_from(n).map_err(|_| NoRoom)?;
        // SAFETY: the mbuf is live and ours; adj changes it or returns NULL unchanged.
        let p = unsafe { onvm_sys::kvlb_pktmbuf_adj(self.as_ptr(), n16) };
        if p.is_null() {
            Err(NoRoom)
        } else {
            Ok(())
        }
    }

    /// Removes `n` bytes from the end (`rte_pktmbuf_trim`).
    pub fn trim(&mut self, n: usize) -> Result<(), NoRoom> {
        let n16 = u16::try_from(n).map_err(|_| NoRoom)?;
        // SAFETY: the mbuf is live and ours; trim changes it or returns -1 unchanged.
        let r = unsafe { onvm_sys::kvlb_pktmbuf_trim(self.as_ptr(), n16) };
        if r == 0 {
            Ok(())
        } else {
            Err(NoRoom)
        }
    }

    /// Appends a copy of `bytes`.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) -> Result<(), NoRoom> {
        self.append(bytes.len())?.copy_from_slice(bytes);
        Ok(())
    }

    /// The receive timestamp a driver stored (net_pcap: the capture time in microseconds),
    /// if any. Needs [`super::Port`] configured with `rx_timestamp`.
    #[inline]
    pub fn rx_timestamp(&self) -> Option<u64> {
        let mut ts = 0u64;
        // SAFETY: reads the mbuf's flags and (if flagged) its timestamp field; the mbuf is
        // live and borrowed; ts is a valid out-pointer.
        let has = unsafe { onvm_sys::kvlb_mbuf_rx_timestamp(&self.0, &mut ts) };
        (has != 0).then_some(ts)
    }
}

impl FrameBuf for RteMbuf {
    #[inline]
    fn bytes(&self) -> &[u8] {
        self.data()
    }
    #[inline]
    fn bytes_mut(&mut self) -> &mut [u8] {
        self.data_mut()
    }
    #[inline]
    fn set_len(&mut self, len: usize) -> Result<(), NoRoom> {
        self.set_data_len(len)
    }
}

/// An owned mbuf is a frame too, so a received burst (`[Mbuf]`) goes to the pipeline as
/// it is: the frame of the [`RteMbuf`] it owns.
impl FrameBuf for Mbuf {
    #[inline]
    fn bytes(&self) -> &[u8] {
        (**self).bytes()
    }
    #[inline]
    fn bytes_mut(&mut self) -> &mut [u8] {
        (**self).bytes_mut()
    }
    #[inline]
    fn set_len(&mut self, len: usize) -> Result<(), NoRoom> {
        (**self).set_len(len)
    }
}

impl fmt::Debug for RteMbuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RteMbuf")
            .field("port", &self.0.port)
            .field("data_len", &self.0.data_len)
            .field("pkt_len", &self.0.pkt_len)
            .field("nb_segs", &self.0.nb_segs)
            .finish()
    }
}

/// An owned mbuf, freed (all segments) on drop.
#[repr(transparent)]
pub struct Mbuf(NonNull<rte_mbuf>);

// SAFETY: an Mbuf is the only handle to its mbuf, and freeing an mbuf from any thread is
// allowed (pool operations are thread-safe; see Mempool). Moving it moves the ownership.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Takes ownership of `m`.
    ///
    /// # Safety
    /// `m` must be a live, direct mbuf with a reference count of one that nothing else
    /// uses from now on (it will be freed when the Mbuf drops).
    #[inline]
    pub(crate) unsafe fn from_raw(m: NonNull<rte_mbuf>) -> Mbuf {
        Mbuf(m)
    }
}

/// Frees every mbuf in `mbufs` with one call (`rte_pktmbuf_free_bulk`, which returns them
/// to their pools in batches) and empties the Vec.
#[inline]
pub fn free_bulk(mbufs: &mut Vec<Mbuf>) {
    if mbufs.is_empty() {
        return;
    }
    let n = mbufs.len().min(u32::MAX as usize);
    // SAFETY: the first n elements are owned mbufs laid out as *mut rte_mbuf (Mbuf is
    // repr(transparent) over NonNull<rte_mbuf>); DPDK frees them all, and removing them from
    // the Vec without running Drop keeps each freed exactly once.
    unsafe {
        let base = mbufs.as_mut_ptr();
        onvm_sys::kvlb_pktmbuf_free_bulk(base.cast::<*mut rte_mbuf>(), n as u32);
        let len = mbufs.len();
        std::ptr::copy(base.add(n), base, len - n);
        mbufs.set_len(len - n);
    }
}

impl Deref for Mbuf {
    type Target = RteMbuf;
    #[inline]
    fn deref(&self) -> &RteMbuf {
        // SAFETY: we own the mbuf; the shared borrow of self bounds the reference.
        unsafe { &*self.0.as_ptr().cast::<RteMbuf>() }
    }
}

impl DerefMut for Mbuf {
    #[inline]
    fn deref_mut(&mut self) -> &mut RteMbuf {
        // SAFETY: we own the mbuf exclusively; the borrow of self bounds the reference.
        unsafe { RteMbuf::from_ptr(self.0) }
    }
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own the mbuf and nothing else references it; it is freed exactly once.
        unsafe { onvm_sys::kvlb_pktmbuf_free(self.0.as_ptr()) }
    }
}

impl fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
