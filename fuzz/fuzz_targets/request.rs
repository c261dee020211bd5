//! Input surface: the UDP payload of a client datagram (frame header + request).
//!
//! Parsing must never panic; whatever parses must emit to bytes that parse back to the
//! same request, and its keys must be valid keys.
#![no_main]

use kvlb::proto::{check_key, parse_datagram, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_datagram(data);
    let Ok(req) = Request::parse(data) else {
        return;
    };
    let _ = (req.command().name(), req.noreply(), req.mutates(), req.key());
    if !matches!(req, Request::Meta(_) | Request::Binary(_)) {
        for key in req.keys() {
            check_key(key).expect("parsed keys are valid");
        }
    }
    let bytes = req.to_vec();
    assert_eq!(bytes.len(), req.buffer_len());
    let again = Request::parse(&bytes).expect("emitted request parses");
    assert_eq!(again, req);
});
