//! Frames the core emits itself, queued for the datapath. Buffers are recycled, so steady
//! emission (replica writes, probes) allocates nothing after warm-up.

use super::Dest;
use crate::wire::MAX_FRAME;

#[derive(Debug, Default)]
pub(super) struct Outbox {
    queued: Vec<(Dest, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
}

/// Most frames queued at once: beyond it emission fails (counted by the caller) rather
/// than growing without bound when a datapath never drains.
const MAX_QUEUED: usize = 1 << 16;

impl Outbox {
    /// Queues a frame written by `write` into a buffer of [`MAX_FRAME`] bytes; `write`
    /// returns the frame length. Returns false (nothing queued) if `write` fails or the
    /// outbox is full.
    pub fn emit(&mut self, dest: Dest, write: impl FnOnce(&mut [u8]) -> Result<usize, ()>) -> bool {
        if self.queued.len() >= MAX_QUEUED {
            return false;
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.resize(MAX_FRAME, 0);
        match write(&mut buf) {
            Ok(n) if n <= MAX_FRAME => {
                buf.truncate(n);
                self.queued.push((dest, buf));
                true
            }
            _ => {
                self.spare.push(buf);
                false
            }
        }
    }

    pub fn len(&self) -> usize {
        self.queued.len()
    }

    pub fn drain(&mut self, send: &mut dyn FnMut(Dest, &[u8])) {
        for (dest, buf) in self.queued.drain(..) {
            send(dest, &buf);
            if self.spare.len() < 1024 {
                self.spare.push(buf);
            }
        }
    }
}
