//! One kvbench TCP connection to one server: pipelined requests, replies read off the
//! stream item by item with [`kvlb::proto::Response::parse`] and matched in order,
//! timeouts (which reset the connection), and reconnection.
//!
//! Owns: the stream, its buffers and its queue of requests in flight. Must not: draw
//! operations or decide when to send.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::exchange::{on_item, Books, Failure, Pending, Shared, Step};
use kvlb::proto::{self, Response};

const READ_CHUNK: usize = 64 << 10;
/// Wait this long before reconnecting after a failure.
const RECONNECT_NS: u64 = 100_000_000;

/// What a call did to the connection that the caller (owner of the epoll set) must know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    None,
    /// The stream was closed (its descriptor left the epoll set by itself).
    Closed,
    /// A new stream is up: register it.
    Reconnected,
}

/// A pipelined TCP connection to one server.
#[derive(Debug)]
pub struct TcpConn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    server: u16,
    connect_timeout: Duration,
    tx: Vec<u8>,
    tx_pos: usize,
    rx: Vec<u8>,
    rx_start: usize,
    rx_end: usize,
    queue: VecDeque<Pending>,
    /// Entries at the back of `queue` not stamped as sent yet.
    unstamped: usize,
    pool: Vec<Pending>,
    retry_at_ns: u64,
    /// Whether the stream is registered for writability (a write would block).
    pub want_write: bool,
}

impl TcpConn {
    /// `stream` must be connected and non-blocking.
    pub fn new(
        stream: TcpStream,
        addr: SocketAddr,
        server: u16,
        connect_timeout: Duration,
    ) -> TcpConn {
        TcpConn {
            addr,
            stream: Some(stream),
            server,
            connect_timeout,
            tx: Vec::with_capacity(16 << 10),
            tx_pos: 0,
            rx: vec![0u8; 2 * READ_CHUNK],
            rx_start: 0,
            rx_end: 0,
            queue: VecDeque::new(),
            unstamped: 0,
            pool: Vec::new(),
            retry_at_ns: 0,
            want_write: false,
        }
    }

    pub fn stream(&self) -> Option<&TcpStream> {
        self.stream.as_ref()
    }

    pub fn is_up(&self) -> bool {
        self.stream.is_some()
    }

    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// Queues a request: `fill` sets up the pending entry and appends its bytes. Returns
    /// false while the connection is down.
    pub fn queue(&mut self, fill: impl FnOnce(&mut Pending, &mut Vec<u8>)) -> bool {
        if self.stream.is_none() {
            return false;
        }
        let mut p = self.pool.pop().unwrap_or_default();
        p.reset();
        p.server = self.server;
        p.sent_ns = 0;
        fill(&mut p, &mut self.tx);
        self.queue.push_back(p);
        self.unstamped += 1;
        true
    }

    /// Writes what is queued; stamps newly written requests with `now_ns`.
    pub fn flush(&mut self, now_ns: u64, shared: &Shared, books: &mut Books) -> Change {
        let Some(stream) = &mut self.stream else {
            return Change::None;
        };
        while self.tx_pos < self.tx.len() {
            match stream.write(&self.tx[self.tx_pos..]) {
                Ok(0) => return self.reset(Failure::Connection, now_ns, shared, books),
                Ok(n) => self.tx_pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("tcp write to {}: {e}", self.addr);
                    return self.reset(Failure::Connection, now_ns, shared, books);
                }
            }
        }
        if self.tx_pos == self.tx.len() {
            self.tx.clear();
            self.tx_pos = 0;
        } else if self.tx_pos > self.tx.len() / 2 {
            self.tx.drain(..self.tx_pos);
            self.tx_pos = 0;
        }
        self.want_write = !self.tx.is_empty();
        let start = self.queue.len() - self.unstamped;
        for p in self.queue.range_mut(start..) {
            p.sent_ns = now_ns.max(1);
            books.sent(p);
        }
        self.unstamped = 0;
        Change::None
    }

    /// Reads what the stream has and completes the requests it answers.
    pub fn receive(&mut self, now_ns: u64, shared: &Shared, books: &mut Books) -> Change {
        loop {
            let Some(stream) = &mut self.stream else {
                return Change::None;
            };
            if self.rx_start == self.rx_end {
                self.rx_start = 0;
                self.rx_end = 0;
            }
            if self.rx.len() - self.rx_end < READ_CHUNK {
                if self.rx_start > 0 {
                    self.rx.copy_within(self.rx_start..self.rx_end, 0);
                    self.rx_end -= self.rx_start;
                    self.rx_start = 0;
                }
                if self.rx.len() - self.rx_end < READ_CHUNK {
                    let len = self.rx.len() * 2;
                    self.rx.resize(len, 0);
                }
            }
            let room = self.rx.len() - self.rx_end;
            match stream.read(&mut self.rx[self.rx_end..]) {
                Ok(0) => {
                    log::debug!("tcp {}: closed by the server", self.addr);
                    return self.reset(Failure::Connection, now_ns, shared, books);
                }
                Ok(n) => {
                    self.rx_end += n;
                    if let Err(e) = self.parse(now_ns, shared, books) {
                        log::debug!("tcp {}: {e}", self.addr);
                        return self.reset(Failure::Protocol, now_ns, shared, books);
                    }
                    if n < room {
                        return Change::None;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Change::None,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("tcp read from {}: {e}", self.addr);
                    return self.reset(Failure::Connection, now_ns, shared, books);
                }
            }
        }
    }

    fn parse(
        &mut self,
        now_ns: u64,
        shared: &Shared,
        books: &mut Books,
    ) -> Result<(), proto::Error> {
        while self.rx_start < self.rx_end {
            let bytes = &self.rx[self.rx_start..self.rx_end];
            let (item, rest) = match Response::parse(bytes) {
                Ok(x) => x,
                Err(proto::Error::TruncatedResponse) => return Ok(()),
                Err(e) => return Err(e),
            };
            let consumed = bytes.len() - rest.len();
            let Some(front) = self.queue.front_mut() else {
                // Bytes nobody asked for.
                return Err(proto::Error::TrailingData);
            };
            let step = on_item(front, &item, shared, books);
            self.rx_start += consumed;
            if step == Step::Done {
                if let Some(p) = self.queue.pop_front() {
                    books.complete(&p, now_ns, shared);
                    self.pool.push(p);
                }
                self.unstamped = self.unstamped.min(self.queue.len());
            }
        }
        Ok(())
    }

    /// Times out the connection if its oldest request was sent before `deadline_ns`: every
    /// request on it counts as a timeout and the connection is reset.
    pub fn expire(
        &mut self,
        deadline_ns: u64,
        now_ns: u64,
        shared: &Shared,
        books: &mut Books,
    ) -> Change {
        match self.queue.front() {
            Some(p) if p.sent_ns != 0 && p.sent_ns < deadline_ns => {}
            _ => return Change::None,
        }
        while let Some(p) = self.queue.pop_front() {
            books.timed_out(&p, shared);
            self.pool.push(p);
        }
        self.close(now_ns, books)
    }

    /// Fails everything in flight with `f` and closes the stream.
    fn reset(&mut self, f: Failure, now_ns: u64, shared: &Shared, books: &mut Books) -> Change {
        while let Some(mut p) = self.queue.pop_front() {
            p.failure = Some(f);
            books.complete(&p, now_ns, shared);
            self.pool.push(p);
        }
        self.close(now_ns, books)
    }

    fn close(&mut self, now_ns: u64, books: &mut Books) -> Change {
        self.unstamped = 0;
        self.tx.clear();
        self.tx_pos = 0;
        self.rx_start = 0;
        self.rx_end = 0;
        self.want_write = false;
        self.retry_at_ns = now_ns + RECONNECT_NS;
        if self.stream.take().is_some() {
            books.counters.reconnects += 1;
            Change::Closed
        } else {
            Change::None
        }
    }

    /// Reconnects a closed connection once its back-off has passed.
    pub fn revive(&mut self, now_ns: u64) -> Change {
        if self.stream.is_some() || now_ns < self.retry_at_ns {
            return Change::None;
        }
        self.retry_at_ns = now_ns + RECONNECT_NS;
        match connect(self.addr, self.connect_timeout) {
            Ok(s) => {
                self.stream = Some(s);
                Change::Reconnected
            }
            Err(e) => {
                log::debug!("tcp reconnect to {}: {e}", self.addr);
                Change::None
            }
        }
    }

    /// Gives up everything in flight (end of run); returns how many.
    pub fn abandon(&mut self, shared: &Shared, books: &mut Books) -> u64 {
        let n = self.queue.len() as u64;
        while let Some(p) = self.queue.pop_front() {
            books.abandoned(&p, shared);
            self.pool.push(p);
        }
        self.unstamped = 0;
        self.tx.clear();
        self.tx_pos = 0;
        n
    }
}

/// A non-blocking, no-delay TCP stream to `addr`.
pub fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::SizeDist;
    use crate::exchange::{KeyRef, Kind, RequestBuilder};
    use crate::validate::KeyVersions;
    use crate::workload::KeySpace;
    use std::net::TcpListener;

    struct Rig {
        conn: TcpConn,
        listener: TcpListener,
        peer: TcpStream,
        shared: Shared,
        books: Books,
        builder: RequestBuilder,
    }

    fn rig() -> Rig {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = connect(addr, Duration::from_secs(1)).unwrap();
        let (peer, _) = listener.accept().unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        Rig {
            conn: TcpConn::new(stream, addr, 0, Duration::from_secs(1)),
            listener,
            peer,
            shared: Shared {
                space: KeySpace::new(100, "k:", SizeDist::Fixed(4)).unwrap(),
                versions: Some(KeyVersions::new(100)),
                run_id: 5,
                meta: false,
                value_cap: 1 << 20,
            },
            books: Books::new(1, 1),
            builder: RequestBuilder::default(),
        }
    }

    impl Rig {
        fn send_get(&mut self, key: u32, now: u64) {
            let (shared, builder) = (&self.shared, &mut self.builder);
            assert!(self.conn.queue(|p, out| {
                p.kind = Kind::Get;
                p.keys.push(KeyRef {
                    index: key,
                    ..KeyRef::default()
                });
                builder.get(out, shared, &p.keys);
            }));
            assert_eq!(
                self.conn.flush(now, &self.shared, &mut self.books),
                Change::None
            );
        }

        fn read_requests(&mut self, n: usize) {
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while got.iter().filter(|&&b| b == b'\n').count() < n {
                let k = self.peer.read(&mut buf).unwrap();
                got.extend_from_slice(&buf[..k]);
            }
        }

        /// Receives until the connection has nothing in flight or `deadline` passes.
        fn pump(&mut self, now: u64) -> Change {
            let until = std::time::Instant::now() + Duration::from_secs(2);
            while self.conn.in_flight() > 0 && std::time::Instant::now() < until {
                let c = self.conn.receive(now, &self.shared, &mut self.books);
                if c != Change::None {
                    return c;
                }
            }
            Change::None
        }
    }

    #[test]
    fn pipelined_replies_byte_by_byte() {
        let mut r = rig();
        for k in 0..3 {
            r.send_get(k, 1);
        }
        r.read_requests(3);
        let mut reply = Vec::new();
        let mut v = Vec::new();
        crate::value::encode(
            &mut v,
            b"k:01",
            crate::value::Stamp {
                run_id: 9,
                version: 3,
            },
            200,
        );
        reply.extend_from_slice(b"END\r\n");
        reply.extend_from_slice(format!("VALUE k:01 0 {}\r\n", v.len()).as_bytes());
        reply.extend_from_slice(&v);
        reply.extend_from_slice(b"\r\nEND\r\nEND\r\n");
        r.peer.set_nodelay(true).unwrap();
        for b in &reply {
            r.peer.write_all(std::slice::from_ref(b)).unwrap();
            let _ = r.conn.receive(5, &r.shared, &mut r.books);
        }
        assert_eq!(r.pump(5), Change::None);
        let c = &r.books.counters;
        assert_eq!(
            (c.sent, c.completed, c.hits, c.misses, c.foreign),
            (3, 3, 1, 2, 1),
            "{c:?}"
        );
    }

    #[test]
    fn garbage_resets_and_reconnects() {
        let mut r = rig();
        r.send_get(1, 1);
        r.send_get(2, 1);
        r.read_requests(2);
        r.peer.write_all(b"END\r\nWHAT\r\n").unwrap();
        assert_eq!(r.pump(10), Change::Closed);
        let c = &r.books.counters;
        assert_eq!(
            (c.completed, c.protocol_errors, c.reconnects),
            (1, 1, 1),
            "{c:?}"
        );
        assert!(!r.conn.is_up());
        // Not before the back-off.
        assert_eq!(r.conn.revive(11), Change::None);
        assert_eq!(r.conn.revive(11 + RECONNECT_NS), Change::Reconnected);
        let (mut peer, _) = r.listener.accept().unwrap();
        r.send_get(3, 20 + RECONNECT_NS);
        let mut buf = [0u8; 64];
        let n = peer.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"get k:03\r\n");
    }

    #[test]
    fn timeout_fails_the_pipeline() {
        let mut r = rig();
        r.send_get(1, 100);
        r.send_get(2, 200);
        assert_eq!(
            r.conn.expire(50, 300, &r.shared, &mut r.books),
            Change::None
        );
        assert_eq!(
            r.conn.expire(150, 300, &r.shared, &mut r.books),
            Change::Closed
        );
        assert_eq!(r.books.counters.timeouts, 2);
        assert_eq!(r.conn.in_flight(), 0);
        assert!(!r.conn.queue(|_, _| {}));
    }

    #[test]
    fn server_closing_fails_what_is_in_flight() {
        let mut r = rig();
        r.send_get(1, 1);
        r.read_requests(1);
        drop(std::mem::replace(
            &mut r.peer,
            TcpStream::connect(r.listener.local_addr().unwrap()).unwrap(),
        ));
        assert_eq!(r.pump(2), Change::Closed);
        assert_eq!(r.books.counters.connection_errors, 1);
    }
}
