//! Input surface: backend reply datagrams.
//!
//! The reader must never panic and every item it yields must round-trip. The same bytes,
//! cut into datagrams by a header-per-chunk layout, feed the reassembler.
#![no_main]

use kvlb::proto::{Reassembler, Response, ResponseReader};
use kvlb::wire::McHeader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ResponseReader::status(data);
    for item in ResponseReader::new(data) {
        let Ok(item) = item else { break };
        let mut out = Vec::new();
        item.emit_to(&mut out);
        assert_eq!(out.len(), item.buffer_len());
        let (back, rest) = Response::parse(&out).expect("emitted item parses");
        assert!(rest.is_empty());
        assert_eq!(back, item);
    }

    // Datagrams: [len u8][8-byte frame header][len bytes], repeated.
    let mut r = Reassembler::new(1 << 16);
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let Ok(header) = McHeader::parse(tail) else { break };
        let body = &tail[8..];
        let n = usize::from(len).min(body.len());
        let _ = r.push(header, &body[..n]);
        if r.is_complete() {
            assert!(matches!(
                ResponseReader::status(r.message()),
                Ok(kvlb::proto::MessageStatus::Complete)
            ));
        }
        rest = &body[n..];
    }
});
