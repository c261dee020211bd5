//! A frame buffer that can be rewritten in place and grown into its tailroom.

/// A frame buffer the core may rewrite in place and grow into its tailroom (a cache hit
/// turns the request into the reply inside the same buffer). DPDK mbufs, `Vec<u8>` and
/// socket buffers implement it.
pub trait FrameBuf {
    fn bytes(&self) -> &[u8];
    fn bytes_mut(&mut self) -> &mut [u8];
    /// Sets the frame length. Growing exposes bytes of unspecified content. Fails, leaving
    /// the frame unchanged, when the buffer has no room.
    fn set_len(&mut self, len: usize) -> Result<(), NoRoom>;
}

/// The buffer cannot hold the requested length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoRoom;

/// Largest frame any datapath hands the core or receives from it.
pub const MAX_FRAME: usize = 9216;

/// A borrowed frame is a frame: bursts may be slices of owned buffers or of borrows.
impl<T: FrameBuf + ?Sized> FrameBuf for &mut T {
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

impl FrameBuf for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        self
    }
    fn set_len(&mut self, len: usize) -> Result<(), NoRoom> {
        // Bounded like a jumbo-frame mbuf so the core behaves the same on every datapath.
        if len > MAX_FRAME {
            return Err(NoRoom);
        }
        self.resize(len, 0);
        Ok(())
    }
}
