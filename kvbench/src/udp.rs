//! One kvbench UDP socket (a connection to one server): request ids, the requests in
//! flight, batched sends (`sendmmsg`) and receives (`recvmmsg`), reply reassembly and
//! timeouts.
//!
//! Request ids come from a per-socket counter, skipping ids whose slot is busy, so an id is
//! reused only after 65536 further requests: a reply that arrives after its request timed
//! out finds its slot free or holding another id and is counted as unmatched, never taken
//! for another request's reply.
//!
//! Owns: the socket and its slots. Must not: draw operations or decide when to send.

use std::io::{IoSlice, IoSliceMut};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{recv, recvmmsg, send, sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};

use super::exchange::{on_item, Books, Failure, Pending, Shared, Step};
use kvlb::proto::{MessageStatus, Progress, Reassembler, Response, ResponseReader};
use kvlb::wire::McHeader;

/// Datagrams per `sendmmsg`/`recvmmsg` call.
pub const BATCH: usize = 32;
/// Receive buffer per datagram: memcached's reply datagrams are at most 1400 bytes. The
/// `BATCH` buffers together (64 KiB) hold any UDP payload.
pub const RX_BUF: usize = 2048;
/// Largest reply kvbench reassembles (memcached's item limit is 1 MiB; a multi-get of
/// several such items would be more).
const MAX_REPLY: usize = 64 << 20;

#[derive(Debug)]
struct Slot {
    rid: u16,
    busy: bool,
    pending: Pending,
    reassembler: Option<Reassembler>,
}

/// Buffers shared by a thread's UDP sockets.
#[derive(Debug)]
pub struct UdpScratch {
    rx: Vec<u8>,
    headers: MultiHeaders<SockaddrStorage>,
}

impl Default for UdpScratch {
    fn default() -> Self {
        UdpScratch {
            rx: vec![0u8; BATCH * RX_BUF],
            headers: MultiHeaders::preallocate(BATCH, None),
        }
    }
}

/// A UDP socket connected to one server, with its requests in flight.
#[derive(Debug)]
pub struct UdpConn {
    sock: UdpSocket,
    server: u16,
    slots: Vec<Slot>,
    mask: usize,
    next_rid: u16,
    busy: usize,
    /// Datagrams built but not sent yet: bytes, end offsets, slot of each.
    tx: Vec<u8>,
    tx_ends: Vec<usize>,
    tx_slots: Vec<usize>,
}

impl UdpConn {
    /// `sock` must be connected; every call but [`receive_wait`](Self::receive_wait)
    /// is non-blocking whatever the socket's mode. `max_outstanding` bounds the requests
    /// in flight.
    pub fn new(sock: UdpSocket, server: u16, max_outstanding: u32) -> UdpConn {
        let cap = (max_outstanding.max(1) as usize * 2)
            .next_power_of_two()
            .min(32_768);
        UdpConn {
            sock,
            server,
            slots: (0..cap)
                .map(|_| Slot {
                    rid: 0,
                    busy: false,
                    pending: Pending::default(),
                    reassembler: None,
                })
                .collect(),
            mask: cap - 1,
            next_rid: 0,
            busy: 0,
            tx: Vec::with_capacity(BATCH * 128),
            tx_ends: Vec::with_capacity(BATCH),
            tx_slots: Vec::with_capacity(BATCH),
        }
    }

    pub fn socket(&self) -> &UdpSocket {
        &self.sock
    }

    /// Requests in flight (sent or queued).
    pub fn in_flight(&self) -> usize {
        self.busy
    }

    /// Queues a request: `fill` sets up the pending entry and appends the request bytes
    /// (after the frame header written here). Returns false if no slot is free.
    pub fn queue(&mut self, fill: impl FnOnce(&mut Pending, &mut Vec<u8>)) -> bool {
        if self.busy >= self.slots.len() {
            return false;
        }
        let mut rid = self.next_rid;
        while self.slots[usize::from(rid) & self.mask].busy {
            rid = rid.wrapping_add(1);
        }
        self.next_rid = rid.wrapping_add(1);
        let index = usize::from(rid) & self.mask;
        let slot = &mut self.slots[index];
        slot.rid = rid;
        slot.busy = true;
        slot.pending.reset();
        slot.pending.server = self.server;
        if let Some(r) = &mut slot.reassembler {
            r.clear();
        }
        self.busy += 1;
        self.tx.extend_from_slice(&McHeader::single(rid).to_bytes());
        fill(&mut slot.pending, &mut self.tx);
        self.tx_ends.push(self.tx.len());
        self.tx_slots.push(index);
        true
    }

    /// Sends the queued datagrams (stamped `now_ns`); failures are entered in `books`.
    pub fn flush(
        &mut self,
        now_ns: u64,
        shared: &Shared,
        books: &mut Books,
        scratch: &mut UdpScratch,
    ) {
        let now_ns = now_ns.max(1);
        let mut done = 0;
        let mut refused = 0;
        while done < self.tx_ends.len() {
            let n = (self.tx_ends.len() - done).min(BATCH);
            let result = if n == 1 {
                let start = if done == 0 { 0 } else { self.tx_ends[done - 1] };
                send(
                    self.sock.as_raw_fd(),
                    &self.tx[start..self.tx_ends[done]],
                    MsgFlags::MSG_DONTWAIT,
                )
                .map(|_| 1)
            } else {
                send_batch(
                    self.sock.as_raw_fd(),
                    &self.tx,
                    &self.tx_ends[..done + n],
                    done,
                    &mut scratch.headers,
                )
            };
            match result {
                Ok(sent) if sent > 0 => {
                    for &slot in &self.tx_slots[done..done + sent] {
                        let p = &mut self.slots[slot].pending;
                        p.sent_ns = now_ns;
                        books.sent(p);
                    }
                    done += sent;
                }
                // ECONNREFUSED reports an ICMP error for an earlier datagram (the server's
                // port was closed then): the send itself may go through on a retry.
                Err(Errno::ECONNREFUSED) if refused < 2 => {
                    refused += 1;
                    continue;
                }
                Err(Errno::EAGAIN | Errno::ENOBUFS) | Ok(_) => {
                    // Socket buffer full: keep the rest for the next flush.
                    break;
                }
                Err(e) => {
                    log::debug!("udp send: {e}");
                    let slot = self.tx_slots[done];
                    self.fail(slot, Failure::Send, now_ns, shared, books);
                    done += 1;
                }
            }
        }
        if done > 0 {
            let cut = self.tx_ends[done - 1];
            self.tx.drain(..cut);
            self.tx_ends.drain(..done);
            for e in &mut self.tx_ends {
                *e -= cut;
            }
            self.tx_slots.drain(..done);
        }
    }

    fn fail(&mut self, slot: usize, f: Failure, now_ns: u64, shared: &Shared, books: &mut Books) {
        let s = &mut self.slots[slot];
        s.pending.failure = Some(f);
        s.busy = false;
        self.busy -= 1;
        books.complete(&s.pending, now_ns, shared);
    }

    /// Reads the datagrams waiting on the socket and completes the requests they answer.
    /// Returns the number of datagrams read.
    pub fn receive(
        &mut self,
        now: impl Fn() -> u64,
        shared: &Shared,
        books: &mut Books,
        scratch: &mut UdpScratch,
    ) -> usize {
        self.receive_inner(now, shared, books, scratch, false)
    }

    /// [`receive`](Self::receive), but waits for the first datagram: first by polling
    /// for up to `spin_ns` (non-blocking receives), then asleep (up to the socket's
    /// receive timeout, `SO_RCVTIMEO`) in the receive call itself, so a thread with this
    /// one socket needs no epoll round trip per wake-up.
    pub fn receive_wait(
        &mut self,
        now: impl Fn() -> u64,
        shared: &Shared,
        books: &mut Books,
        scratch: &mut UdpScratch,
        spin_ns: u64,
    ) -> usize {
        if spin_ns > 0 {
            let until = now().saturating_add(spin_ns);
            loop {
                let n = self.receive_inner(&now, shared, books, scratch, false);
                if n > 0 {
                    return n;
                }
                if now() >= until {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        self.receive_inner(now, shared, books, scratch, true)
    }

    fn receive_inner(
        &mut self,
        now: impl Fn() -> u64,
        shared: &Shared,
        books: &mut Books,
        scratch: &mut UdpScratch,
        mut wait: bool,
    ) -> usize {
        let mut total = 0;
        if self.busy <= 1 && !wait {
            // One request in flight: its reply is usually one datagram, and a plain recv
            // is cheaper than recvmmsg's attempt at a second one. The buffer holds any
            // UDP payload, so nothing is truncated.
            match recv(
                self.sock.as_raw_fd(),
                &mut scratch.rx,
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(n) => {
                    let t = now();
                    self.on_datagram(&scratch.rx[..n], t, shared, books);
                    total = 1;
                    if self.busy == 0 {
                        return total;
                    }
                }
                Err(Errno::EAGAIN | Errno::EINTR) => return 0,
                Err(e) => {
                    log::debug!("udp receive: {e}");
                    return 0;
                }
            }
        }
        loop {
            let mut lens = [(0usize, false); BATCH];
            let got = {
                let mut chunks = scratch.rx.chunks_exact_mut(RX_BUF);
                let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
                    std::array::from_fn(|_| [IoSliceMut::new(chunks.next().unwrap_or(&mut []))]);
                let flags = if wait {
                    // Block for the first datagram only, then take what is queued.
                    MsgFlags::MSG_WAITFORONE
                } else {
                    MsgFlags::MSG_DONTWAIT
                };
                wait = false;
                match recvmmsg(
                    self.sock.as_raw_fd(),
                    &mut scratch.headers,
                    iovs.iter_mut(),
                    flags,
                    None,
                ) {
                    Ok(results) => {
                        let mut n = 0;
                        for r in results {
                            lens[n] = (r.bytes, r.flags.contains(MsgFlags::MSG_TRUNC));
                            n += 1;
                        }
                        n
                    }
                    Err(Errno::EAGAIN | Errno::EINTR) => 0,
                    Err(Errno::ECONNREFUSED) => {
                        // The server's port is closed: requests will time out.
                        0
                    }
                    Err(e) => {
                        log::debug!("udp receive: {e}");
                        0
                    }
                }
            };
            if got == 0 {
                return total;
            }
            let t = now();
            for (i, &(len, truncated)) in lens[..got].iter().enumerate() {
                let dgram = &scratch.rx[i * RX_BUF..i * RX_BUF + len.min(RX_BUF)];
                if truncated {
                    books.counters.protocol_errors += 1;
                    continue;
                }
                self.on_datagram(dgram, t, shared, books);
            }
            total += got;
            if got < BATCH {
                return total;
            }
        }
    }

    fn on_datagram(&mut self, dgram: &[u8], now_ns: u64, shared: &Shared, books: &mut Books) {
        let Ok(header) = McHeader::parse(dgram) else {
            books.counters.unmatched_replies += 1;
            return;
        };
        let index = usize::from(header.request_id) & self.mask;
        let slot = &mut self.slots[index];
        if !slot.busy || slot.rid != header.request_id || slot.pending.sent_ns == 0 {
            books.counters.unmatched_replies += 1;
            return;
        }
        let msg = &dgram[8..];
        let fresh = slot
            .reassembler
            .as_ref()
            .is_none_or(|r| r.request_id().is_none());
        let complete = if fresh && header.count == 1 && header.sequence == 0 && whole(msg) {
            // The common case: the whole reply in one datagram.
            feed_message(&mut slot.pending, msg, shared, books);
            true
        } else {
            let r = slot
                .reassembler
                .get_or_insert_with(|| Reassembler::new(MAX_REPLY));
            match r.push(header, msg) {
                Ok(Progress::Complete) => {
                    feed_message(&mut slot.pending, r.message(), shared, books);
                    true
                }
                Ok(Progress::Incomplete) => false,
                Err(e) => {
                    log::debug!("udp reply: {e}");
                    slot.pending.failure = Some(Failure::Protocol);
                    true
                }
            }
        };
        if complete {
            slot.busy = false;
            self.busy -= 1;
            books.complete(&slot.pending, now_ns, shared);
        }
    }

    /// Gives up requests sent before `deadline_ns` (timeouts).
    pub fn expire(&mut self, deadline_ns: u64, shared: &Shared, books: &mut Books) {
        if self.busy == 0 {
            return;
        }
        for slot in &mut self.slots {
            if slot.busy && slot.pending.sent_ns != 0 && slot.pending.sent_ns < deadline_ns {
                slot.busy = false;
                self.busy -= 1;
                books.timed_out(&slot.pending, shared);
            }
        }
    }

    /// Gives up everything in flight (end of run); returns how many.
    pub fn abandon(&mut self, shared: &Shared, books: &mut Books) -> u64 {
        let mut n = 0;
        for slot in &mut self.slots {
            if slot.busy {
                slot.busy = false;
                books.abandoned(&slot.pending, shared);
                n += 1;
            }
        }
        self.busy = 0;
        self.tx.clear();
        self.tx_ends.clear();
        self.tx_slots.clear();
        n
    }
}

/// Whether a one-datagram message is a whole reply. The usual replies (a status line,
/// `END`, one `VALUE` and `END`, a meta reply) are recognised from their first item and
/// the bytes after it; anything else is scanned item by item.
#[inline]
fn whole(msg: &[u8]) -> bool {
    match Response::parse(msg) {
        Ok((first, rest)) if first.is_terminal() => rest.is_empty(),
        Ok((_, b"END\r\n")) => true,
        Ok(_) => ResponseReader::status(msg) == Ok(MessageStatus::Complete),
        Err(_) => false,
    }
}

/// Feeds a whole reply message to its request; a message that ends before the request is
/// complete is a protocol error.
fn feed_message(p: &mut Pending, msg: &[u8], shared: &Shared, books: &mut Books) {
    for item in ResponseReader::new(msg) {
        match item {
            Ok(item) => {
                if on_item(p, &item, shared, books) == Step::Done {
                    return;
                }
            }
            Err(_) => break,
        }
    }
    p.failure = Some(Failure::Protocol);
}

/// `sendmmsg` of datagrams `from..ends.len()` of `tx` (datagram i spans
/// `ends[i-1]..ends[i]`).
fn send_batch(
    fd: std::os::fd::RawFd,
    tx: &[u8],
    ends: &[usize],
    from: usize,
    headers: &mut MultiHeaders<SockaddrStorage>,
) -> Result<usize, Errno> {
    let n = (ends.len() - from).min(BATCH);
    let iovs: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|j| {
        let i = from + j;
        if j < n {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            [IoSlice::new(&tx[start..ends[i]])]
        } else {
            [IoSlice::new(&[])]
        }
    });
    let addrs = [None::<SockaddrStorage>; BATCH];
    let results = sendmmsg(
        fd,
        headers,
        &iovs[..n],
        &addrs[..n],
        [],
        MsgFlags::MSG_DONTWAIT,
    )?;
    Ok(results.count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::SizeDist;
    use crate::exchange::{KeyRef, Kind, RequestBuilder};
    use crate::validate::KeyVersions;
    use crate::value::{encode, Stamp};
    use crate::workload::KeySpace;
    use std::time::Duration;

    struct Rig {
        conn: UdpConn,
        server: UdpSocket,
        shared: Shared,
        books: Books,
        scratch: UdpScratch,
        builder: RequestBuilder,
    }

    fn rig(max_outstanding: u32) -> Rig {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.connect(server.local_addr().unwrap()).unwrap();
        sock.set_nonblocking(true).unwrap();
        Rig {
            conn: UdpConn::new(sock, 0, max_outstanding),
            server,
            shared: Shared {
                space: KeySpace::new(100, "k:", SizeDist::Fixed(4)).unwrap(),
                versions: Some(KeyVersions::new(100)),
                run_id: 5,
                meta: false,
                value_cap: 1200,
            },
            books: Books::new(1, 1),
            scratch: UdpScratch::default(),
            builder: RequestBuilder::default(),
        }
    }

    impl Rig {
        /// Queues and sends a GET of `keys`; returns the request id the server saw.
        fn get(&mut self, keys: &[u32], now: u64) -> (u16, std::net::SocketAddr) {
            let (shared, builder) = (&self.shared, &mut self.builder);
            assert!(self.conn.queue(|p, out| {
                p.kind = Kind::Get;
                p.intended_ns = now;
                for &index in keys {
                    p.keys.push(KeyRef {
                        index,
                        ..KeyRef::default()
                    });
                }
                builder.get(out, shared, &p.keys);
            }));
            self.conn
                .flush(now, &self.shared, &mut self.books, &mut self.scratch);
            let mut buf = [0u8; 2048];
            let (n, from) = self.server.recv_from(&mut buf).unwrap();
            let h = McHeader::parse(&buf[..n]).unwrap();
            assert_eq!(h.count, 1);
            assert!(buf[8..n].starts_with(b"get "));
            (h.request_id, from)
        }

        fn reply(&self, to: std::net::SocketAddr, rid: u16, seq: u16, count: u16, msg: &[u8]) {
            let mut d = McHeader {
                request_id: rid,
                sequence: seq,
                count,
                reserved: 0,
            }
            .to_bytes()
            .to_vec();
            d.extend_from_slice(msg);
            self.server.send_to(&d, to).unwrap();
        }

        /// Receives until `want` datagrams were read (they are on loopback already).
        fn pump(&mut self, want: usize, now: u64) {
            let mut got = 0;
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while got < want && std::time::Instant::now() < deadline {
                got += self
                    .conn
                    .receive(|| now, &self.shared, &mut self.books, &mut self.scratch);
            }
            assert_eq!(got, want);
        }
    }

    fn value_item(key: &str, version: u32, len: usize) -> Vec<u8> {
        let mut v = Vec::new();
        encode(&mut v, key.as_bytes(), Stamp { run_id: 5, version }, len);
        let mut item = format!("VALUE {key} 0 {}\r\n", v.len()).into_bytes();
        item.extend_from_slice(&v);
        item.extend_from_slice(b"\r\n");
        item
    }

    #[test]
    fn single_datagram_reply() {
        let mut r = rig(4);
        let (rid, from) = r.get(&[3], 10);
        let mut msg = value_item("k:03", 0, 40);
        msg.extend_from_slice(b"END\r\n");
        r.reply(from, rid, 0, 1, &msg);
        r.pump(1, 50);
        let c = &r.books.counters;
        assert_eq!((c.sent, c.completed, c.hits, c.misses), (1, 1, 1, 0));
        // Version 0 of this run was never issued: reported as corrupt.
        assert_eq!(c.corrupt, 1);
        assert_eq!(r.conn.in_flight(), 0);
        assert_eq!(r.books.hist.len(), 1);
        assert_eq!(r.books.hist.max(), r.books.hist.highest_equivalent(40));
    }

    /// memcached 1.6's multi-get: one message per key (an empty count-0 message for a
    /// miss), a value spanning two datagrams that arrive out of order, END last.
    #[test]
    fn multiget_messages_and_multi_datagram_values() {
        let mut r = rig(4);
        let v = r.shared.versions.as_ref().unwrap().begin_set(7).unwrap();
        r.shared.versions.as_ref().unwrap().ack_set(7, v);
        let (rid, from) = r.get(&[1, 7, 9], 0);
        let big = value_item("k:07", 1, 3000);
        let (a, b) = big.split_at(1392);
        let (b, c) = b.split_at(1392);
        r.reply(from, rid, 0, 0, b"");
        r.reply(from, rid, 2, 3, c);
        r.reply(from, rid, 0, 3, a);
        r.reply(from, rid, 1, 3, b);
        r.reply(from, rid, 0, 1, b"END\r\n");
        r.pump(5, 100);
        let c = &r.books.counters;
        assert_eq!(
            (c.completed, c.hits, c.misses, c.fresh),
            (1, 1, 2, 1),
            "{c:?}"
        );
        assert_eq!(c.protocol_errors, 0);
    }

    #[test]
    fn timeouts_and_late_replies() {
        let mut r = rig(4);
        let (rid, from) = r.get(&[2], 1_000);
        // Nothing comes back in time.
        r.conn.expire(2_000, &r.shared, &mut r.books);
        assert_eq!(r.books.counters.timeouts, 1);
        assert_eq!(r.conn.in_flight(), 0);
        // The late reply matches nothing.
        r.reply(from, rid, 0, 1, b"END\r\n");
        r.pump(1, 3_000);
        assert_eq!(r.books.counters.unmatched_replies, 1);
        assert_eq!(r.books.counters.completed, 0);
        // Garbage and a stray id.
        r.reply(from, rid.wrapping_add(100), 0, 1, b"END\r\n");
        r.server.send_to(b"xyz", from).unwrap();
        r.pump(2, 3_000);
        assert_eq!(r.books.counters.unmatched_replies, 3);
        // The next request gets a new id.
        let (rid2, _) = r.get(&[2], 4_000);
        assert_ne!(rid2, rid);
    }

    #[test]
    fn bad_reply_is_a_protocol_error() {
        let mut r = rig(4);
        let (rid, from) = r.get(&[2], 0);
        r.reply(from, rid, 0, 1, b"STORED\r\n");
        r.pump(1, 10);
        assert_eq!(r.books.counters.protocol_errors, 1);
        let (rid, from) = r.get(&[2], 20);
        r.reply(from, rid, 5, 2, b"END\r\n");
        r.pump(1, 30);
        assert_eq!(r.books.counters.protocol_errors, 2);
        assert_eq!(r.conn.in_flight(), 0);
    }

    #[test]
    fn batched_sends_and_receives() {
        let mut r = rig(64);
        let (shared, builder) = (&r.shared, &mut r.builder);
        for k in 0..50u32 {
            assert!(r.conn.queue(|p, out| {
                p.kind = Kind::Get;
                p.keys.push(KeyRef {
                    index: k,
                    ..KeyRef::default()
                });
                builder.get(out, shared, &p.keys);
            }));
        }
        r.conn.flush(1, &r.shared, &mut r.books, &mut r.scratch);
        assert_eq!(r.books.counters.sent, 50);
        let mut buf = [0u8; 256];
        for _ in 0..50 {
            let (n, from) = r.server.recv_from(&mut buf).unwrap();
            let rid = McHeader::parse(&buf[..n]).unwrap().request_id;
            r.reply(from, rid, 0, 1, b"END\r\n");
        }
        r.pump(50, 5);
        assert_eq!(r.books.counters.completed, 50);
        assert_eq!(r.books.counters.misses, 50);
        assert_eq!(r.conn.in_flight(), 0);
    }
}
