//! A connection's read buffer: bytes received and not yet consumed, read into without
//! zeroing or copying on every read.

/// Buffers larger than this are given back once empty (a large value came through).
const KEEP: usize = 256 * 1024;

#[derive(Debug, Default)]
pub struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    /// The bytes received and not consumed.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Drops the first `n` bytes of [`data`](Self::data).
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > KEEP {
                self.buf = Vec::new();
            }
        }
    }

    pub fn clear(&mut self) {
        self.consume(self.len());
    }

    /// Room for at least `want` more bytes after the data (moving the data to the front or
    /// growing the buffer only when there is not).
    pub fn spare(&mut self, want: usize) -> &mut [u8] {
        if self.buf.len() - self.end < want && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < want {
            self.buf.resize(self.end + want, 0);
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were written into [`spare`](Self::spare).
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_come_out_in_order_whatever_the_reads_and_consumes() {
        let mut b = ReadBuf::default();
        let mut want = Vec::new();
        let mut got = Vec::new();
        for i in 0..2000u32 {
            let chunk: Vec<u8> = (0..(i % 37)).map(|j| (i + j) as u8).collect();
            let room = b.spare(chunk.len().max(1));
            room[..chunk.len()].copy_from_slice(&chunk);
            b.filled(chunk.len());
            want.extend_from_slice(&chunk);
            let take = (i as usize * 7) % (b.len() + 1);
            got.extend_from_slice(&b.data()[..take]);
            b.consume(take);
        }
        got.extend_from_slice(b.data());
        assert_eq!(got, want);
    }
}
