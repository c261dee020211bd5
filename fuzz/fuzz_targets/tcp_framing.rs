//! Input surface: the TCP byte streams of `kvlb serve` (client requests, backend replies).
//!
//! The framers must never panic, and cutting the same stream anywhere must frame the same
//! messages: the first byte chooses the cut.
#![no_main]

use kvlb::datapath::tcp::framing::{frame_request, reply_len, ReplyEnd, RequestFrame};
use libfuzzer_sys::fuzz_target;

fn requests(stream: &[u8], cut: usize) -> Vec<Vec<u8>> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for part in [&stream[..cut], &stream[cut..]] {
        buf.extend_from_slice(part);
        while let RequestFrame::Complete { len, .. } = frame_request(&buf, 4096) {
            out.push(buf.drain(..len).collect());
        }
    }
    out
}

fn replies(stream: &[u8], cut: usize, end: ReplyEnd) -> Vec<Vec<u8>> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for part in [&stream[..cut], &stream[cut..]] {
        buf.extend_from_slice(part);
        while let Ok(Some(n)) = reply_len(&buf, end) {
            out.push(buf.drain(..n).collect());
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&c, stream)) = data.split_first() else { return };
    let cut = usize::from(c) % (stream.len() + 1);
    assert_eq!(requests(stream, cut), requests(stream, 0));
    for end in [ReplyEnd::Terminal, ReplyEnd::Noop] {
        assert_eq!(replies(stream, cut, end), replies(stream, 0, end));
    }
});
