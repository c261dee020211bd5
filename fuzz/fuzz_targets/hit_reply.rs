//! Input surface: a GET request frame turned into a cache-hit reply in place.
//!
//! The first bytes choose the cached item (flags, cas, data length); the rest is the
//! request frame. Whatever classifies as a get must become a reply that classifies and
//! reads back as exactly that item, or fail cleanly leaving the frame as it was.
#![no_main]

use kvlb::proto::{parse_datagram, write_hit_reply, Request, Response, ResponseReader, Value};
use kvlb::wire::{classify, Classified};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let (item, frame_bytes) = data.split_at(6);
    let Ok(Classified::Udp(frame)) = classify(frame_bytes) else {
        return;
    };
    let key = match parse_datagram(frame.payload(frame_bytes)) {
        Ok((_, Request::Retrieval(r))) => r.keys.first().to_vec(),
        _ => return,
    };
    let flags = u32::from(item[0]) << 24 | u32::from(item[1]);
    let cas = (item[2] & 1 == 1).then_some(u64::from(item[3]) << 40);
    let data_len = usize::from(u16::from_be_bytes([item[4], item[5]])) % 2048;
    let payload = vec![b'v'; data_len];
    let value = Value {
        key: &key,
        flags,
        cas,
        data: &payload,
    };
    let mut buf = frame_bytes.to_vec();
    match write_hit_reply(&mut buf, &frame, &value) {
        Ok(()) => {
            let Ok(Classified::Udp(reply)) = classify(&buf) else {
                panic!("reply does not classify");
            };
            assert_eq!(reply.endpoints(), frame.endpoints().reversed());
            let msg = &reply.payload(&buf)[8..];
            let items: Vec<_> = ResponseReader::new(msg).collect();
            assert_eq!(items, [Ok(Response::Value(value)), Ok(Response::End)]);
        }
        Err(_) => assert_eq!(buf, frame_bytes, "a failed reply leaves the frame alone"),
    }
});
