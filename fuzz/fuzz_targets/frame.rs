//! Input surface: a whole Ethernet frame from the wire.
//!
//! `classify` must never panic; a UDP frame it accepts must survive every in-place rewrite
//! and classify again to exactly the layout the rewriter reports.
#![no_main]

use std::net::Ipv4Addr;

use kvlb::wire::{classify, Classified};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(classified) = classify(data) else {
        return;
    };
    let Classified::Udp(frame) = classified else {
        return;
    };
    let payload = frame.payload(data);
    assert_eq!(payload.len(), usize::from(frame.payload_len));
    let _ = kvlb::proto::parse_datagram(payload);

    // Rewrite with values taken from the frame itself (so they vary with the input).
    let mut buf = data.to_vec();
    let mut w = frame.rewrite(&mut buf).expect("layout fits the frame it came from");
    let seed = payload.iter().fold(0u32, |a, &b| a.rotate_left(5) ^ u32::from(b));
    w.set_src_mac([seed as u8; 6]);
    w.set_dst_ip(Ipv4Addr::from(seed));
    w.set_src_ip(Ipv4Addr::from(seed.rotate_left(7)));
    w.set_dst_port(seed as u16);
    w.set_src_port((seed >> 16) as u16);
    w.set_ttl((seed >> 3) as u8);
    let _ = w.set_request_id(seed as u16);
    w.swap_endpoints();
    let shrink = usize::from(frame.payload_len) / 2;
    w.set_payload_len(shrink).expect("shrinking always fits");
    let after = *w.layout();
    match classify(&buf) {
        Ok(Classified::Udp(again)) => assert_eq!(again, after),
        other => panic!("rewritten frame no longer classifies: {other:?}"),
    }
});
