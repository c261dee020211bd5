//! Memcached over UDP frames: the request in a datagram, cache-hit replies written into
//! the request's own buffer, and whole request frames (replica writes, probes).

use super::request::{simple_get, Command, Request, Retrieval};
use super::response::{Response, Value};

use super::text::{digits_u64, CountSink, Sink, SliceSink};
use super::Error;
use crate::wire::{
    self, checksum, ipv4, mc_header, udp, FrameBuf, McHeader, UdpEndpoints, UdpFrame,
};

/// Most message bytes memcached puts in one reply datagram (`UDP_DATA_SIZE`: 1400-byte
/// datagrams minus the 8-byte frame header). Longer replies span several datagrams.
pub const UDP_DATA_SIZE: usize = 1392;

/// Parses a request datagram's UDP payload: the frame header, then exactly one request.
///
/// [`Error::TruncatedFrameHeader`] under 8 bytes, [`Error::SplitRequest`] when the
/// datagram count is not 1 (memcached drops those), then [`Request::parse`]'s errors.
///
/// Always inlined, with the single-key `get` built straight into the result: moving a
/// just-written `Request` through an intermediate stalls on store forwarding.
#[inline(always)]
pub fn parse_datagram(payload: &[u8]) -> Result<(McHeader, Request<'_>), Error> {
    let header = match McHeader::parse(payload) {
        Ok(h) => h,
        Err(_) => return Err(Error::TruncatedFrameHeader),
    };
    if !header.is_single_datagram() {
        return Err(Error::SplitRequest);
    }
    let msg = &payload[mc_header::HEADER_LEN..];
    if let Some(keys) = simple_get(msg) {
        return Ok((
            header,
            Request::Retrieval(Retrieval {
                command: Command::Get,
                exptime: None,
                keys,
            }),
        ));
    }
    match Request::parse(msg) {
        Ok(request) => Ok((header, request)),
        Err(e) => Err(e),
    }
}

/// Turns the request frame in `frame` (classified as `request`) into memcached's reply
/// `VALUE <key> <flags> <bytes>[ <cas>]\r\n<data>\r\nEND\r\n` for `value`, in place: the
/// same bytes memcached 1.6 sends for that item over UDP (frame header: the request's id,
/// sequence 0, count 1, reserved 0).
///
/// See [`write_reply`] for the frame and the errors.
#[inline]
pub fn write_hit_reply<F: FrameBuf + ?Sized>(
    frame: &mut F,
    request: &UdpFrame,
    value: &Value<'_>,
) -> Result<(), Error> {
    // VALUE <key> <flags> <bytes>[ <cas>]\r\n<data>\r\nEND\r\n
    let msg_len = 6
        + value.key.len()
        + 1
        + digits_u64(u64::from(value.flags))
        + 1
        + digits_u64(value.data.len() as u64)
        + value.cas.map_or(0, |c| 1 + digits_u64(c))
        + 2
        + value.data.len()
        + 7;
    let reply = begin_reply(frame, request, msg_len)?;
    let buf = frame.bytes_mut();
    let mut s = SliceSink::new(&mut buf[reply.msg_at..reply.end]);
    s.put(b"VALUE ");
    s.put(value.key);
    s.put(b" ");
    s.put_u64(u64::from(value.flags));
    s.put(b" ");
    s.put_u64(value.data.len() as u64);
    if let Some(cas) = value.cas {
        s.put(b" ");
        s.put_u64(cas);
    }
    s.put(b"\r\n");
    s.put(value.data);
    s.put(b"\r\nEND\r\n");
    s.finish()?;
    reply.finish(buf);
    Ok(())
}

/// Turns the request frame in `frame` (classified as `request`) into a reply carrying
/// `items` as one single-datagram memcached message, in place. (`classify` the frame
/// again if the reply's layout is needed; returning it cost a store-forwarding stall on
/// every hit.)
///
/// The reply goes back the way the request came: MACs, IPs and ports swapped, VLAN tags
/// kept, a fresh 20-byte IPv4 header (request options dropped, TTL 64, DF set, the
/// request's TOS and id) and a UDP checksum; the frame grows or shrinks with
/// [`FrameBuf::set_len`] (zero-padded to 60 bytes).
///
/// Errors leave the frame unchanged: [`Error::TruncatedFrameHeader`] if the request has no
/// frame header, [`Error::ReplyTooLarge`] if the message exceeds [`UDP_DATA_SIZE`]
/// (memcached would split it over several datagrams), [`Error::NoRoom`] if the buffer
/// cannot grow that far, [`Error::Wire`] if `frame` is shorter than `request` says.
pub fn write_reply<F: FrameBuf + ?Sized>(
    frame: &mut F,
    request: &UdpFrame,
    items: &[Response<'_>],
) -> Result<(), Error> {
    let mut count = CountSink::default();
    for item in items {
        item.emit_to(&mut count);
    }
    let reply = begin_reply(frame, request, count.0)?;
    let buf = frame.bytes_mut();
    let mut sink = SliceSink::new(&mut buf[reply.msg_at..reply.end]);
    for item in items {
        item.emit_to(&mut sink);
    }
    sink.finish()?;
    reply.finish(buf);
    Ok(())
}

/// A reply frame whose headers are written, waiting for its message and UDP checksum.
struct ReplyFrame {
    udp_at: usize,
    msg_at: usize,
    end: usize,
    /// Unfolded sum of the pseudo-header, UDP header and frame header.
    header_sum: u64,
}

impl ReplyFrame {
    /// Sums the message (at an even offset from the UDP header, so the 16-bit lanes line
    /// up) and stores the UDP checksum.
    #[inline]
    fn finish(self, buf: &mut [u8]) {
        let msg_sum = checksum::sum(&buf[self.msg_at..self.end]);
        self.finish_with_sum(buf, msg_sum)
    }

    /// Stores the UDP checksum given the message's (partial) sum.
    #[inline]
    fn finish_with_sum(self, buf: &mut [u8], msg_sum: u64) {
        let ck = checksum::finish(checksum::combine(self.header_sum, msg_sum));
        let ck = if ck == 0 { 0xffff } else { ck };
        buf[self.udp_at + 6..self.udp_at + 8].copy_from_slice(&ck.to_be_bytes());
    }
}

/// Checks that a reply with a `msg_len`-byte message fits, resizes the frame, and writes
/// everything but the message and the UDP checksum. Errors leave the frame unchanged.
#[inline]
fn begin_reply<F: FrameBuf + ?Sized>(
    frame: &mut F,
    request: &UdpFrame,
    msg_len: usize,
) -> Result<ReplyFrame, Error> {
    let ip_at = usize::from(request.ip_offset);
    let (request_id, tos, ident) = {
        let bytes = frame.bytes();
        if bytes.len() < request.ip_end() {
            return Err(Error::Wire(wire::Error::Truncated));
        }
        let header =
            McHeader::parse(request.payload(bytes)).map_err(|_| Error::TruncatedFrameHeader)?;
        let ip = ipv4::Packet::new_unchecked(&bytes[ip_at..]);
        (header.request_id, ip.dscp_ecn(), ip.ident())
    };
    if msg_len > UDP_DATA_SIZE {
        return Err(Error::ReplyTooLarge);
    }
    let udp_at = ip_at + ipv4::HEADER_LEN;
    let payload_at = udp_at + udp::HEADER_LEN;
    let msg_at = payload_at + mc_header::HEADER_LEN;
    let end = msg_at + msg_len;
    let frame_len = end.max(wire::MIN_FRAME_LEN);
    frame.set_len(frame_len).map_err(|_| Error::NoRoom)?;
    let buf = frame.bytes_mut();
    if buf.len() < frame_len {
        // A FrameBuf that reports success without the room: refuse to go on.
        return Err(Error::NoRoom);
    }

    // Ethernet: back to the sender; VLAN tags stay where they are.
    buf[0..6].copy_from_slice(&request.eth.src);
    buf[6..12].copy_from_slice(&request.eth.dst);

    // Headers are built in registers and their checksums computed from the field values:
    // summing bytes just written would stall on store forwarding.
    let (src, dst) = (request.dst_ip, request.src_ip);
    let (src_u, dst_u) = (u32::from(src), u32::from(dst));
    let udp_len = (udp::HEADER_LEN + mc_header::HEADER_LEN + msg_len) as u16;
    let ip_total = ipv4::HEADER_LEN as u16 + udp_len;
    let ttl_proto = u16::from_be_bytes([ipv4::DEFAULT_TTL, udp::PROTOCOL]);
    const DF: u16 = 0x4000;
    let ver_tos = u16::from_be_bytes([0x45, tos]);
    let ip_sum = u64::from(ver_tos)
        + u64::from(ip_total)
        + u64::from(ident)
        + u64::from(DF)
        + u64::from(ttl_proto)
        + u64::from(src_u >> 16)
        + u64::from(src_u & 0xffff)
        + u64::from(dst_u >> 16)
        + u64::from(dst_u & 0xffff);
    let ip_ck = checksum::finish(ip_sum);
    let mut ip = [0u8; ipv4::HEADER_LEN];
    ip[0..2].copy_from_slice(&ver_tos.to_be_bytes());
    ip[2..4].copy_from_slice(&ip_total.to_be_bytes());
    ip[4..6].copy_from_slice(&ident.to_be_bytes());
    ip[6..8].copy_from_slice(&DF.to_be_bytes());
    ip[8..10].copy_from_slice(&ttl_proto.to_be_bytes());
    ip[10..12].copy_from_slice(&ip_ck.to_be_bytes());
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    buf[ip_at..udp_at].copy_from_slice(&ip);

    let (sport, dport) = (request.dst_port, request.src_port);
    let mut hdrs = [0u8; udp::HEADER_LEN + mc_header::HEADER_LEN];
    hdrs[0..2].copy_from_slice(&sport.to_be_bytes());
    hdrs[2..4].copy_from_slice(&dport.to_be_bytes());
    hdrs[4..6].copy_from_slice(&udp_len.to_be_bytes());
    // hdrs[6..8]: the UDP checksum, filled by ReplyFrame::finish.
    hdrs[8..16].copy_from_slice(&McHeader::single(request_id).to_bytes());
    buf[udp_at..msg_at].copy_from_slice(&hdrs);
    if frame_len > end {
        buf[end..frame_len].fill(0);
    }

    let header_sum = checksum::pseudo_header(src, dst, udp::PROTOCOL, udp_len)
        + u64::from(sport)
        + u64::from(dport)
        + u64::from(udp_len)
        + u64::from(request_id)
        + 1; // sequence 0, count 1, reserved 0

    Ok(ReplyFrame {
        udp_at,
        msg_at,
        end,
        header_sum,
    })
}

/// Emits a whole frame (Ethernet, IPv4, UDP, frame header with `request_id`, sequence 0,
/// count 1) carrying `request` into `buf`; returns the frame length.
///
/// Use it for replica writes (`Request::Storage(Storage::set(..))`) and probes
/// (`Request::Version`). [`Error::NoRoom`] if `buf` is too small, [`Error::Wire`] if
/// the request does not fit one IPv4 datagram.
pub fn emit_request_frame(
    buf: &mut [u8],
    endpoints: &UdpEndpoints,
    ip_ident: u16,
    request_id: u16,
    request: &Request<'_>,
) -> Result<usize, Error> {
    emit_message_frame(
        buf,
        endpoints,
        ip_ident,
        McHeader::single(request_id),
        |s| request.emit_to(s),
    )
}

/// [`emit_request_frame`] into a `Vec`, replacing its contents. No production caller (the
/// core writes into its outbox's buffers): it stays as the one way the tests, benches and
/// fuzz targets build a request frame.
pub fn emit_request_frame_vec(
    out: &mut Vec<u8>,
    endpoints: &UdpEndpoints,
    ip_ident: u16,
    request_id: u16,
    request: &Request<'_>,
) -> Result<(), Error> {
    let len = (endpoints.headers_len() + mc_header::HEADER_LEN + request.buffer_len())
        .max(wire::MIN_FRAME_LEN);
    out.clear();
    out.resize(len, 0);
    let n = emit_request_frame(out, endpoints, ip_ident, request_id, request)?;
    out.truncate(n);
    Ok(())
}

fn emit_message_frame(
    buf: &mut [u8],
    endpoints: &UdpEndpoints,
    ip_ident: u16,
    header: McHeader,
    write: impl Fn(&mut SliceSink<'_>),
) -> Result<usize, Error> {
    let at = endpoints.headers_len();
    let msg_at = at + mc_header::HEADER_LEN;
    let Some(msg_buf) = buf.get_mut(msg_at..) else {
        return Err(Error::NoRoom);
    };
    let mut sink = SliceSink::new(msg_buf);
    write(&mut sink);
    let msg_len = sink.finish()?;
    header.emit(&mut buf[at..]).map_err(Error::Wire)?;
    endpoints
        .emit_headers(buf, mc_header::HEADER_LEN + msg_len, ip_ident)
        .map_err(|e| match e {
            wire::Error::Truncated => Error::NoRoom,
            e => Error::Wire(e),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ResponseReader, Storage};
    use crate::wire::{classify, Classified, VlanTag};
    use std::net::Ipv4Addr;

    fn client() -> UdpEndpoints {
        UdpEndpoints {
            src_mac: [2, 0, 0, 0, 0, 0x0c],
            dst_mac: [2, 0, 0, 0, 0, 0x1b],
            vlan: None,
            inner_vlan: None,
            src_ip: Ipv4Addr::new(10, 0, 0, 7),
            dst_ip: Ipv4Addr::new(10, 0, 0, 1),
            src_port: 50123,
            dst_port: 11211,
            ttl: 64,
        }
    }

    fn udp(frame: &[u8]) -> UdpFrame {
        match classify(frame) {
            Ok(Classified::Udp(u)) => u,
            other => panic!("{other:?}"),
        }
    }

    fn request_frame(ep: &UdpEndpoints, rid: u16, req: &Request<'_>) -> Vec<u8> {
        let mut v = Vec::new();
        emit_request_frame_vec(&mut v, ep, 1, rid, req).unwrap();
        v
    }

    #[test]
    fn request_frames_roundtrip() {
        let ep = client();
        let set = Request::Storage(Storage::set(b"foo", 7, 300, b"hello", true));
        let f = request_frame(&ep, 0x0101, &set);
        let u = udp(&f);
        assert_eq!(u.endpoints(), ep);
        let (h, req) = parse_datagram(u.payload(&f)).unwrap();
        assert_eq!(h, McHeader::single(0x0101));
        assert_eq!(req, set);
        let mut buf = [0u8; 128];
        let n = emit_request_frame(&mut buf, &ep, 2, 9, &Request::Version).unwrap();
        let u = udp(&buf[..n]);
        assert_eq!(
            parse_datagram(u.payload(&buf[..n])).unwrap().1,
            Request::Version
        );
        assert_eq!(
            emit_request_frame(&mut buf[..50], &ep, 2, 9, &Request::Version),
            Err(Error::NoRoom)
        );
    }

    #[test]
    fn datagram_rules() {
        assert_eq!(
            parse_datagram(b"\0\x01\0\0\0\x01\0"),
            Err(Error::TruncatedFrameHeader)
        );
        assert_eq!(
            parse_datagram(b"\0\x01\0\0\0\x01\0\0"),
            Err(Error::EmptyRequest)
        );
        assert_eq!(
            parse_datagram(b"\0\x01\0\0\0\x02\0\0get a\r\n"),
            Err(Error::SplitRequest)
        );
        assert_eq!(
            parse_datagram(b"\0\x01\0\0\0\x00\0\0get a\r\n"),
            Err(Error::SplitRequest)
        );
        // memcached ignores the sequence number and the reserved field of requests.
        assert!(parse_datagram(b"\0\x01\0\x05\0\x01\x12\x34get a\r\n").is_ok());
    }

    #[test]
    fn hit_reply_in_place() {
        for vlan in [None, Some(VlanTag::dot1q(42))] {
            let mut ep = client();
            ep.vlan = vlan;
            let get = Request::parse(b"gets foo\r\n").unwrap();
            let mut f = request_frame(&ep, 0xabcd, &get);
            let req = udp(&f);
            let value = Value {
                key: b"foo",
                flags: 5,
                cas: Some(12),
                data: &[b'x'; 100],
            };
            write_hit_reply(&mut f, &req, &value).unwrap();
            let reply = udp(&f);
            assert_eq!(reply.endpoints(), ep.reversed());
            assert_eq!(reply.udp_offset, req.udp_offset);
            let payload = reply.payload(&f);
            assert_eq!(McHeader::parse(payload).unwrap(), McHeader::single(0xabcd));
            let items: Vec<_> = ResponseReader::new(&payload[8..])
                .map(Result::unwrap)
                .collect();
            assert_eq!(items, [Response::Value(value), Response::End]);
            let mut want = b"VALUE foo 5 100 12\r\n".to_vec();
            want.extend_from_slice(&[b'x'; 100]);
            want.extend_from_slice(b"\r\nEND\r\n");
            assert_eq!(&payload[8..], &want[..]);
        }
    }

    #[test]
    fn hit_reply_drops_ip_options_and_padding() {
        let ep = client();
        let mut f = request_frame(&ep, 1, &Request::parse(b"get k\r\n").unwrap());
        // Insert a 4-byte IPv4 option (NOPs + EOL) and fix lengths and checksum.
        f.splice(34..34, [1, 1, 1, 0]);
        f[14] = 0x46;
        let total = u16::from_be_bytes([f[16], f[17]]) + 4;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        ipv4::Packet::new_unchecked(&mut f[14..]).fill_checksum();
        let req = udp(&f);
        assert_eq!(req.udp_offset, 38);
        let value = Value {
            key: b"k",
            flags: 0,
            cas: None,
            data: b"v",
        };
        write_hit_reply(&mut f, &req, &value).unwrap();
        let reply = udp(&f);
        assert_eq!(reply.udp_offset, 34);
        assert_eq!(&reply.payload(&f)[8..], b"VALUE k 0 1\r\nv\r\nEND\r\n");
        assert_eq!(f.len(), 14 + 20 + 8 + 8 + 21);
    }

    #[test]
    fn hit_reply_failures_leave_the_frame_alone() {
        let ep = client();
        let mut f = request_frame(&ep, 1, &Request::parse(b"get k\r\n").unwrap());
        let orig = f.clone();
        let req = udp(&f);
        let big = vec![b'x'; UDP_DATA_SIZE];
        let value = Value {
            key: b"k",
            flags: 0,
            cas: None,
            data: &big,
        };
        assert_eq!(
            write_hit_reply(&mut f, &req, &value),
            Err(Error::ReplyTooLarge)
        );
        assert_eq!(f, orig);
        // Exactly UDP_DATA_SIZE message bytes still fit one datagram.
        let fits = vec![b'x'; UDP_DATA_SIZE - "VALUE k 0 1371\r\n\r\nEND\r\n".len()];
        let value = Value {
            key: b"k",
            flags: 0,
            cas: None,
            data: &fits,
        };
        write_hit_reply(&mut f, &req, &value).unwrap();
        assert_eq!(udp(&f).payload_len as usize, 8 + UDP_DATA_SIZE);

        // A buffer that cannot grow.
        #[derive(Debug)]
        struct Fixed(Vec<u8>);
        impl FrameBuf for Fixed {
            fn bytes(&self) -> &[u8] {
                &self.0
            }
            fn bytes_mut(&mut self) -> &mut [u8] {
                &mut self.0
            }
            fn set_len(&mut self, len: usize) -> Result<(), wire::NoRoom> {
                if len > 64 {
                    return Err(wire::NoRoom);
                }
                self.0.resize(len, 0);
                Ok(())
            }
        }
        let mut fixed = Fixed(orig.clone());
        let value = Value {
            key: b"k",
            flags: 0,
            cas: None,
            data: b"0123456789",
        };
        assert_eq!(
            write_hit_reply(&mut fixed, &req, &value),
            Err(Error::NoRoom)
        );
        assert_eq!(fixed.0, orig);
        let mut short = orig[..req.ip_end() - 1].to_vec();
        assert_eq!(
            write_hit_reply(&mut short, &req, &value),
            Err(Error::Wire(wire::Error::Truncated))
        );
    }
}
