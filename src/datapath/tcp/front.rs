//! The TCP front end of `kvlb serve`: client connections in, pooled backend connections
//! out, and every request decided by the same [`Core`] as the UDP datagrams.
//!
//! Owns: the listener, client and backend connections (a [`mio`] poll whose descriptor the
//! socket datapath's poll waits on), per-connection buffers and limits. Makes no balancing
//! decision.
//!
//! # Requests as frames
//! Each whole request framed from a client stream becomes a synthetic UDP request frame,
//! exactly as the socket datapath builds one from a datagram, from a synthetic client
//! address that names the connection: IP `0.a.b.c` (the connection's index, 24 bits; the
//! `0.0.0.0/8` block is no host's source address) and port = the connection's generation.
//! The frame's memcached request id is the request's place (its *slot*) in the
//! connection's queue of replies. The core's verdict says what happens:
//! - a frame back to the synthetic client (a cache hit, a fenced key's END) is the reply:
//!   it goes into the slot;
//! - a frame toward a backend (the core took a flow token: source port + request id) is
//!   sent, as the client's own bytes, on one of the backend's pooled connections, which
//!   remember the token in order; the backend's reply, once whole ([`super::framing`]),
//!   comes back to the core as a UDP reply frame from the backend to that token, so the
//!   core learns values, counts replica acks and completes writes as for a datagram, and
//!   rewrites it toward the slot;
//! - frames the core emits meanwhile (multi-get parts, replica copies, fences, broadcast
//!   copies) go the same way, and so do those it emits from its timers or while deciding
//!   UDP datagrams (replication fetches, probes, rejoin flushes; [`TcpFront::send_frame`]):
//!   kvlb's own requests need no UDP on the backends (`--own-requests tcp`, the default).
//!
//! Replies leave each connection in request order: a slot is written once it and every
//! slot before it are whole.
//!
//! # Values larger than a frame
//! A request whose data block does not fit a frame (9 KiB) is shown to the core with an
//! empty block and as a write that is not copied to replicas (`set` shown as `replace`):
//! the core notes the write and picks the server; the client's bytes go to it. A reply
//! that does not fit is shown as two datagrams, its first and last 4 KiB: the core checks
//! and rewrites those, and the bytes between go straight from the backend connection to the
//! slot. Such values are larger than any cache holds, so nothing is learned from them.
//!
//! # Requests without replies
//! A `noreply` request or a quiet meta request is followed by `mn` on the backend
//! connection: everything up to memcached's `MN` is its reply (usually nothing), so the
//! order of replies on the connection never slips. The core is then told the request is
//! done (a synthetic success line the client never sees).
//!
//! # Failures
//! A backend connection that fails ends each of its outstanding requests in the core as
//! timed out ([`Core::request_failed`]: a lost connection is no sign of life, so it counts
//! toward marking the backend down, and never revives one), answers the clients' among
//! them `SERVER_ERROR`, and is re-established.
//! A reply that comes after the core's request timeout is not shown to the core (its token
//! may have been reused): its client gets `SERVER_ERROR` instead.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::BorrowedFd;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token as MioToken};

use super::buf::ReadBuf;
use super::framing::{frame_request, reply_len, ReplyEnd, RequestFrame};
use crate::clock::Instant;
use crate::config::Cidr;
use crate::datapath::driver::Driver;
use crate::datapath::socket::{KVLB_MAC, PEER_MAC};
use crate::nf::{Core, DropReason, FrameBuf, NoRoom, PortId, Verdict, MAX_FRAME};
use crate::proto::{self, Command, Request};
pub use crate::stats::TcpCounters;
use crate::wire::{self, mc_header, Classified, McHeader, UdpEndpoints};

/// The socket datapath's one pseudo-port.
const PORT: PortId = PortId(0);
/// Bytes of the synthetic Ethernet/IPv4/UDP headers and the memcached frame header.
const HEADERS: usize = 14 + 20 + 8 + mc_header::HEADER_LEN;
/// The largest message shown to the core in one frame.
const FRAME_MSG: usize = MAX_FRAME - HEADERS;
/// How much of a large reply the core sees at each end (a `VALUE` line and an `END`).
const LARGE_EDGE: usize = 1024;
/// Largest buffer a connection keeps for reuse.
const SPARE_MAX: usize = 64 * 1024;
/// Requests handed to the core per burst.
const BURST: usize = 32;
const LISTENER: MioToken = MioToken(usize::MAX);
/// Tokens of the socket datapath's UDP sockets ([`TcpFront::register_udp`]): this base plus
/// the socket's index.
const UDP_TOKENS: usize = usize::MAX - 1 - MAX_UDP_SOCKETS;
const MAX_UDP_SOCKETS: usize = 1 << 16;
/// Backend connections' poll tokens start here (client connections are their index).
const BACKEND_TOKENS: usize = 1 << 32;
/// Most connections one backend pool holds (poll token arithmetic).
const MAX_BACKEND_CONNS: usize = 64;
/// How long a slot may wait for its reply before the client gets `SERVER_ERROR`.
const SLOT_DEADLINE: Duration = Duration::from_secs(5);
/// A backend connection whose oldest request waits this long (or 4 request timeouts, if
/// longer) is given up.
const STALLED_AFTER: Duration = Duration::from_secs(2);
/// Wait before reconnecting a failed backend connection.
const RECONNECT_AFTER: Duration = Duration::from_millis(100);
/// Read room per `read` call: client and backend connections.
const READ_CHUNK: usize = 16 * 1024;
const BACKEND_READ: usize = 64 * 1024;

/// TCP settings of `kvlb serve`.
#[derive(Clone, Debug)]
pub struct TcpSettings {
    /// Largest data block of a storage request (memcached's `-I`).
    pub max_item_size: usize,
    /// Persistent connections per backend.
    pub backend_conns: usize,
    /// Most client connections at once; more are told so and closed.
    pub max_conns: usize,
    /// A client connection idle this long (nothing outstanding) is closed; zero: never.
    pub idle_timeout: Duration,
    /// Requests one client may have outstanding before kvlb stops reading from it.
    pub max_pending: usize,
    /// Reply bytes kvlb holds for one client (unsent) before it stops reading from it.
    pub max_buffered: usize,
    /// The core's request timeout: replies later than this are not shown to the core.
    pub request_timeout: Duration,
    /// `--allow`: who may connect (empty: anyone).
    pub allow: Vec<Cidr>,
    /// `--cache-max-value`: a reply with a larger value cannot be learned, so it need not
    /// go through the core whole (see the module documentation).
    pub cache_max_value: usize,
    /// `--own-requests tcp`: the requests the core makes itself (replication fetches and
    /// copies, fences, probes, rejoin flushes, split-get parts, broadcast copies) go on the
    /// backend pools, so backends need no UDP; false: they go as datagrams.
    pub own_over_tcp: bool,
}

impl Default for TcpSettings {
    fn default() -> TcpSettings {
        TcpSettings {
            max_item_size: super::framing::DEFAULT_MAX_ITEM,
            backend_conns: 2,
            max_conns: 4096,
            idle_timeout: Duration::ZERO,
            max_pending: 128,
            max_buffered: 4 << 20,
            request_timeout: Duration::from_millis(250),
            allow: Vec::new(),
            cache_max_value: 1200,
            own_over_tcp: true,
        }
    }
}

/// Errors setting up the TCP front end.
#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    #[error("cannot listen on TCP {addr}: {source}")]
    Bind {
        addr: SocketAddrV4,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A synthetic frame: headers and message in one buffer.
struct Frame {
    buf: Vec<u8>,
    len: usize,
}

impl Frame {
    fn new() -> Frame {
        Frame {
            buf: vec![0; MAX_FRAME],
            len: 0,
        }
    }
}

impl FrameBuf for Frame {
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }
    fn set_len(&mut self, len: usize) -> Result<(), NoRoom> {
        if len > self.buf.len() {
            return Err(NoRoom);
        }
        self.len = len;
        Ok(())
    }
}

/// Where a slot is: connection index, its generation, the slot's request id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SlotRef {
    conn: usize,
    generation: u16,
    seq: u16,
}

impl SlotRef {
    fn client_ip(self) -> Ipv4Addr {
        Ipv4Addr::from(self.conn as u32 & 0x00ff_ffff)
    }

    /// The slot a frame toward a synthetic client address is for.
    fn of_frame(u: &wire::UdpFrame, frame: &[u8]) -> Option<SlotRef> {
        if u.dst_ip.octets()[0] != 0 {
            return None;
        }
        let header = McHeader::parse(u.payload(frame)).ok()?;
        Some(SlotRef {
            conn: (u32::from(u.dst_ip) & 0x00ff_ffff) as usize,
            generation: u.dst_port,
            seq: header.request_id,
        })
    }
}

/// How a slot knows its reply is whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotEnd {
    /// A whole memcached reply (what the core delivers).
    Reply,
    /// Quiet meta: one reply or none; the backend's `MN` says which.
    Quiet,
}

#[derive(Debug)]
struct Slot {
    seq: u16,
    buf: Vec<u8>,
    done: bool,
    end: SlotEnd,
    deadline: Instant,
    /// Close the connection once this slot is written (quit, a fatal error).
    close_after: bool,
}

struct ClientConn {
    stream: TcpStream,
    generation: u16,
    rbuf: ReadBuf,
    /// Bytes of an oversized data block still to discard.
    swallow: usize,
    slots: VecDeque<Slot>,
    next_seq: u16,
    wbuf: Vec<u8>,
    wpos: usize,
    last_active: Instant,
    /// Stop reading: a request closes the connection once its reply is written.
    closing: bool,
    /// The socket may hold unread bytes (edge-triggered readiness).
    readable: bool,
    /// The peer closed its side (or the socket failed): read on until the end shows.
    read_closed: bool,
    /// Reply bytes held in slots.
    held: usize,
    /// An empty buffer kept for the next slot.
    spare: Vec<u8>,
}

impl ClientConn {
    fn slot_mut(&mut self, seq: u16) -> Option<&mut Slot> {
        let front = self.slots.front()?.seq;
        let at = usize::from(seq.wrapping_sub(front));
        self.slots.get_mut(at)
    }

    fn over_limits(&self, s: &TcpSettings) -> bool {
        self.slots.len() >= s.max_pending
            || self.held + (self.wbuf.len() - self.wpos) >= s.max_buffered
    }

    /// Moves the whole slots at the front into the write buffer.
    fn release_slots(&mut self) {
        while self.slots.front().is_some_and(|s| s.done) {
            let mut s = self.slots.pop_front().expect("front exists");
            self.held -= s.buf.len();
            if self.wbuf.len() == self.wpos {
                // Nothing unsent: the slot's buffer becomes the write buffer (no copy), and
                // the old one is kept for the next slot (no allocation).
                let old = std::mem::replace(&mut self.wbuf, std::mem::take(&mut s.buf));
                self.wpos = 0;
                if old.capacity() <= SPARE_MAX && old.capacity() > self.spare.capacity() {
                    self.spare = old;
                    self.spare.clear();
                }
            } else {
                self.wbuf.extend_from_slice(&s.buf);
            }
            if s.close_after {
                self.closing = true;
                self.slots.clear();
                self.held = 0;
                return;
            }
        }
    }
}

/// A request sent on a backend connection, waiting for its reply.
#[derive(Debug)]
struct Pending {
    /// The token's request id and where its synthetic reply comes from and goes.
    request_id: u16,
    backend: SocketAddrV4,
    local: SocketAddrV4,
    end: ReplyEnd,
    /// The client request this is the forwarded copy of (not set for what the core emits).
    origin: Option<SlotRef>,
    /// What the core is told when a reply-less request (noreply, quiet) is done.
    silent_ok: Option<&'static [u8]>,
    sent: Instant,
}

struct BackendConn {
    stream: Option<TcpStream>,
    connected: bool,
    /// The backend closed its side: read on until the end shows.
    read_closed: bool,
    retry_at: Instant,
    wbuf: Vec<u8>,
    wpos: usize,
    rbuf: ReadBuf,
    fifo: VecDeque<Pending>,
}

struct BackendPool {
    addr: SocketAddrV4,
    conns: Vec<BackendConn>,
    /// Its TCP connections are refused (logged once, until one connects again).
    refused: bool,
}

/// A client request whose own bytes go to the backend the core chose: where they lie in
/// its connection's read buffer, whether it may go unanswered (`mn` follows it), and what
/// the core is told when it is done without a reply.
#[derive(Clone, Copy, Debug)]
struct Original {
    conn: usize,
    at: usize,
    len: usize,
    silent: bool,
    silent_ok: Option<&'static [u8]>,
}

/// What a frame handed to the core stands for.
#[derive(Clone, Copy, Debug)]
enum Fed {
    /// A client request: its slot, where its bytes lie in the connection's read buffer,
    /// whether it may go unanswered (`mn` follows it), and what the core is told when it is
    /// done without a reply.
    Request {
        slot: SlotRef,
        at: usize,
        len: usize,
        silent: bool,
        silent_ok: Option<&'static [u8]>,
    },
    /// A backend reply for the pending request `origin` (if it was a client's).
    Reply { origin: Option<SlotRef> },
}

/// The TCP front end.
pub struct TcpFront {
    settings: TcpSettings,
    poll: Poll,
    events: Events,
    listener: TcpListener,
    clients: Vec<Option<ClientConn>>,
    free: Vec<usize>,
    live: usize,
    generations: Vec<u16>,
    pools: Vec<BackendPool>,
    /// Source ports toward backends (index = token port index) and kvlb's address there.
    source_ports: Vec<u16>,
    /// The core's VIP: synthetic requests are addressed to it.
    vip: SocketAddrV4,
    frames: Vec<Frame>,
    fed: Vec<Fed>,
    /// Backend connections that failed and wait to be cleaned up, (pool, conn).
    failed: Vec<(usize, usize)>,
    /// Client connections to look at again (readable, writable, paused, closing).
    busy: Vec<usize>,
    next_maintenance: Instant,
    /// The client connection whose requests the core is deciding (see `route`).
    affinity: Option<usize>,
    /// Replies longer than this go through the core as their two ends only.
    large_reply_above: usize,
    counters: TcpCounters,
    /// UDP sockets in the poll ([`TcpFront::register_udp`]).
    udp_registered: usize,
}

impl std::fmt::Debug for TcpFront {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpFront")
            .field("settings", &self.settings)
            .field("clients", &self.live)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

fn would_block(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::WouldBlock
}

impl TcpFront {
    /// Listens on `listen` (TCP) toward `backends`; `source_ports` are the socket datapath's
    /// (the core's flow tokens name them) and `vip` the core's.
    pub fn bind(
        settings: TcpSettings,
        listen: SocketAddrV4,
        backends: &[SocketAddrV4],
        source_ports: &[u16],
        vip: SocketAddrV4,
    ) -> Result<TcpFront, TcpError> {
        let poll = Poll::new()?;
        let mut listener =
            TcpListener::bind(SocketAddr::V4(listen)).map_err(|source| TcpError::Bind {
                addr: listen,
                source,
            })?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let n = settings.backend_conns.clamp(1, MAX_BACKEND_CONNS);
        let pools = backends
            .iter()
            .map(|&addr| BackendPool {
                addr,
                refused: false,
                conns: (0..n)
                    .map(|_| BackendConn {
                        stream: None,
                        connected: false,
                        read_closed: false,
                        retry_at: Instant::ZERO,
                        wbuf: Vec::new(),
                        wpos: 0,
                        rbuf: ReadBuf::default(),
                        fifo: VecDeque::new(),
                    })
                    .collect(),
            })
            .collect();
        // A reply holding a value the caches could take (plus its VALUE line and END) goes
        // through the core whole; longer ones cannot be learned.
        let large_reply_above =
            (settings.cache_max_value + 512).clamp(2 * LARGE_EDGE + 1, FRAME_MSG);
        Ok(TcpFront {
            settings,
            poll,
            events: Events::with_capacity(1024),
            listener,
            clients: Vec::new(),
            free: Vec::new(),
            live: 0,
            generations: Vec::new(),
            pools,
            source_ports: source_ports.to_vec(),
            vip,
            frames: (0..BURST).map(|_| Frame::new()).collect(),
            fed: Vec::with_capacity(BURST),
            failed: Vec::new(),
            busy: Vec::new(),
            next_maintenance: Instant::ZERO,
            affinity: None,
            large_reply_above,
            counters: TcpCounters::default(),
            udp_registered: 0,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Adds the socket datapath's UDP sockets to the front end's poll, so one
    /// [`wait`](Self::wait) covers both transports (one system call per loop turn, not a
    /// `poll` and an `epoll_wait`). Readiness is edge-triggered: the caller reads a socket
    /// until it comes back short before it waits for it again.
    pub fn register_udp(&mut self, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
        assert!(fds.len() <= MAX_UDP_SOCKETS, "too many UDP sockets");
        for (i, fd) in fds.iter().enumerate() {
            let raw = std::os::fd::AsRawFd::as_raw_fd(fd);
            self.poll.registry().register(
                &mut mio::unix::SourceFd(&raw),
                MioToken(UDP_TOKENS + i),
                Interest::READABLE,
            )?;
        }
        self.udp_registered = fds.len();
        Ok(())
    }

    /// Waits up to `timeout` for anything to do: TCP events, kept for the next
    /// [`run`](Self::run), and the UDP sockets given to [`register_udp`](Self::register_udp)
    /// that became readable or have an error queued, or-ed into `udp` as (readable, error)
    /// by socket index.
    pub fn wait(&mut self, timeout: Duration, udp: &mut [(bool, bool)]) -> std::io::Result<()> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        for e in self.events.iter() {
            let t = e.token().0;
            if (UDP_TOKENS..UDP_TOKENS + self.udp_registered).contains(&t) {
                if let Some(r) = udp.get_mut(t - UDP_TOKENS) {
                    r.0 |= e.is_readable();
                    r.1 |= e.is_error();
                }
            }
        }
        Ok(())
    }

    /// What the front end counted so far (with the connections open now).
    pub fn counters(&self) -> TcpCounters {
        TcpCounters {
            open: self.live as u64,
            ..self.counters.clone()
        }
    }

    /// Open client connections.
    pub fn clients(&self) -> usize {
        self.live
    }

    /// Takes a frame the core emitted outside the front end's own calls (a tick, the
    /// drain after a UDP burst): a reply toward a TCP client goes into its slot, a request
    /// of kvlb's own toward a backend onto that backend's pool (with `own_over_tcp`), and
    /// anything else to `udp`. What it queues for backends is written by
    /// [`flush`](Self::flush) or the next [`run`](Self::run).
    pub fn send_frame(&mut self, now: Instant, frame: &[u8], udp: &mut dyn FnMut(&[u8])) {
        self.route(now, frame, None, None, udp);
    }

    /// Does all the TCP work the last [`wait`](Self::wait) found ready: accepts, reads,
    /// hands whole requests and replies to the core, writes. Frames the core sends that are
    /// not the front end's (toward UDP clients) go to `udp`.
    pub fn run(&mut self, driver: &mut Driver<'_, Core>, now: Instant, udp: &mut dyn FnMut(&[u8])) {
        let tokens: Vec<(MioToken, bool, bool, bool, bool)> = self
            .events
            .iter()
            .filter(|e| e.token().0 < UDP_TOKENS || e.token() == LISTENER)
            .map(|e| {
                (
                    e.token(),
                    e.is_readable() || e.is_read_closed(),
                    e.is_writable(),
                    e.is_error(),
                    e.is_read_closed() || e.is_error(),
                )
            })
            .collect();
        for (token, readable, writable, error, closed) in tokens {
            if token == LISTENER {
                self.accept(now);
            } else if token.0 >= BACKEND_TOKENS {
                let pool = (token.0 - BACKEND_TOKENS) / MAX_BACKEND_CONNS;
                let conn = (token.0 - BACKEND_TOKENS) % MAX_BACKEND_CONNS;
                if let Some(bc) = self.pools.get_mut(pool).and_then(|p| p.conns.get_mut(conn)) {
                    bc.read_closed |= closed;
                }
                self.backend_event(driver, now, pool, conn, readable, writable, error, udp);
            } else if let Some(Some(c)) = self.clients.get_mut(token.0) {
                if readable {
                    c.readable = true;
                }
                c.read_closed |= closed;
                let _ = writable;
                self.busy.push(token.0);
            }
        }
        // Clients: read and decide what is ready, then write what is whole.
        let mut busy = std::mem::take(&mut self.busy);
        busy.sort_unstable();
        busy.dedup();
        for &c in &busy {
            self.serve_client(driver, now, c, udp);
        }
        self.busy = busy;
        self.busy.clear();
        self.clean_failed(driver, now, udp);
        self.flush();
        let dirty: Vec<usize> = (0..self.clients.len())
            .filter(|&i| {
                self.clients[i]
                    .as_ref()
                    .is_some_and(|c| c.wbuf.len() > c.wpos || c.closing || c.readable)
            })
            .collect();
        for c in dirty {
            self.serve_client(driver, now, c, udp);
        }
        if now >= self.next_maintenance {
            self.maintain(driver, now, udp);
            self.next_maintenance = now + Duration::from_millis(10);
        }
    }

    fn accept(&mut self, now: Instant) {
        loop {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if would_block(&e) => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: try again on the next readiness.
                    log::warn!("TCP accept: {e}");
                    return;
                }
            };
            let allowed = match peer {
                SocketAddr::V4(p) => {
                    self.settings.allow.is_empty()
                        || self.settings.allow.iter().any(|c| c.contains(*p.ip()))
                }
                SocketAddr::V6(_) => false,
            };
            if !allowed
                || self.live >= self.settings.max_conns
                || self.free.is_empty() && self.clients.len() >= 1 << 24
            {
                self.counters.refused += 1;
                if allowed {
                    let _ = stream.write(b"ERROR Too many open connections\r\n");
                }
                continue;
            }
            let _ = stream.set_nodelay(true);
            let ix = self.free.pop().unwrap_or_else(|| {
                self.clients.push(None);
                self.generations.push(0);
                self.clients.len() - 1
            });
            self.generations[ix] = self.generations[ix].wrapping_add(1);
            if self
                .poll
                .registry()
                .register(
                    &mut stream,
                    MioToken(ix),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                self.free.push(ix);
                continue;
            }
            self.counters.accepted += 1;
            self.live += 1;
            self.clients[ix] = Some(ClientConn {
                stream,
                generation: self.generations[ix],
                rbuf: ReadBuf::default(),
                swallow: 0,
                slots: VecDeque::new(),
                next_seq: 0,
                wbuf: Vec::new(),
                wpos: 0,
                last_active: now,
                closing: false,
                readable: true,
                read_closed: false,
                held: 0,
                spare: Vec::new(),
            });
            self.busy.push(ix);
        }
    }

    fn close_client(&mut self, ix: usize) {
        if let Some(mut c) = self.clients[ix].take() {
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.free.push(ix);
            self.live -= 1;
            self.counters.closed += 1;
        }
    }

    /// Reads, frames and decides a client's requests as far as its limits allow, and
    /// writes its whole replies.
    fn serve_client(
        &mut self,
        driver: &mut Driver<'_, Core>,
        now: Instant,
        ix: usize,
        udp: &mut dyn FnMut(&[u8]),
    ) {
        loop {
            // Requests already read first, then more bytes.
            self.decide_requests(driver, now, ix, udp);
            let Some(c) = self.clients[ix].as_mut() else {
                return;
            };
            let limited = c.over_limits(&self.settings);
            if !Self::write_client(c, &mut self.counters) {
                self.close_client(ix);
                return;
            }
            let c = self.clients[ix].as_mut().expect("still open");
            if c.closing && c.slots.is_empty() && c.wbuf.len() == c.wpos {
                self.close_client(ix);
                return;
            }
            if c.closing {
                return;
            }
            if c.over_limits(&self.settings) {
                // Backpressure: read nothing more until replies drain (a delivery or a
                // writable socket brings the connection back here).
                self.counters.backpressure += 1;
                return;
            }
            if limited && !c.rbuf.data().is_empty() {
                continue; // replies went out: requests already read may go on
            }
            if !c.readable {
                return;
            }
            // Bound the read buffer: a whole largest item and its command line.
            let cap = self.settings.max_item_size + super::framing::MAX_LINE + 2;
            if c.rbuf.len() >= cap {
                return;
            }
            let limit = cap - c.rbuf.len();
            let room = c.rbuf.spare(READ_CHUNK);
            let n = room.len().min(limit);
            let room = &mut room[..n];
            let room_len = room.len();
            match c.stream.read(room) {
                Ok(0) => {
                    // The client is gone (or half-closed): nothing it asked for is owed.
                    self.close_client(ix);
                    return;
                }
                Ok(n) => {
                    // A short read emptied the socket: readiness is edge-triggered, so
                    // more bytes bring a new event; no read just to see EAGAIN.
                    if n < room_len && !c.read_closed {
                        c.readable = false;
                    }
                    c.rbuf.filled(n);
                    c.last_active = now;
                    self.counters.bytes_in += n as u64;
                }
                Err(e) => {
                    if would_block(&e) {
                        c.readable = false;
                        return;
                    }
                    if e.kind() != ErrorKind::Interrupted {
                        self.close_client(ix);
                        return;
                    }
                }
            }
        }
    }

    /// Writes what a client's write buffer holds; false if the connection failed.
    fn write_client(c: &mut ClientConn, counters: &mut TcpCounters) -> bool {
        c.release_slots();
        while c.wpos < c.wbuf.len() {
            match c.stream.write(&c.wbuf[c.wpos..]) {
                Ok(0) => return false,
                Ok(n) => {
                    c.wpos += n;
                    counters.bytes_out += n as u64;
                }
                Err(e) if would_block(&e) => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if c.wpos == c.wbuf.len() {
            c.wbuf.clear();
            c.wpos = 0;
        }
        true
    }

    fn new_slot(c: &mut ClientConn, now: Instant, end: SlotEnd) -> u16 {
        let seq = c.next_seq;
        c.next_seq = c.next_seq.wrapping_add(1);
        let buf = std::mem::take(&mut c.spare);
        c.slots.push_back(Slot {
            seq,
            buf,
            done: false,
            end,
            deadline: now + SLOT_DEADLINE,
            close_after: false,
        });
        seq
    }

    /// A slot answered by the front end itself.
    fn answer_now(c: &mut ClientConn, now: Instant, reply: &[u8], close_after: bool) {
        let seq = Self::new_slot(c, now, SlotEnd::Reply);
        let s = c.slot_mut(seq).expect("just pushed");
        s.buf.extend_from_slice(reply);
        s.done = true;
        s.close_after = close_after;
        c.held += reply.len();
        if close_after {
            c.closing = true;
        }
    }

    /// Frames the whole requests in a client's read buffer (up to its limits) and hands
    /// them to the core. Returns whether any was taken.
    fn decide_requests(
        &mut self,
        driver: &mut Driver<'_, Core>,
        now: Instant,
        ix: usize,
        udp: &mut dyn FnMut(&[u8]),
    ) -> bool {
        let mut taken = false;
        loop {
            let Some(c) = self.clients[ix].as_mut() else {
                return taken;
            };
            if c.swallow > 0 {
                let n = c.swallow.min(c.rbuf.len());
                c.rbuf.consume(n);
                c.swallow -= n;
                if c.swallow > 0 {
                    return taken;
                }
            }
            let mut frames = std::mem::take(&mut self.frames);
            self.fed.clear();
            let mut at = 0;
            let rbuf = std::mem::take(&mut c.rbuf);
            while self.fed.len() < BURST && !c.closing && !c.over_limits(&self.settings) {
                match frame_request(&rbuf.data()[at..], self.settings.max_item_size) {
                    RequestFrame::Incomplete => break,
                    RequestFrame::Complete { len, .. } => {
                        let bytes = &rbuf.data()[at..at + len];
                        self.counters.requests += 1;
                        let generation = c.generation;
                        let parsed = Request::parse(bytes);
                        match parsed {
                            Err(e) => {
                                self.counters.malformed += 1;
                                Self::answer_now(c, now, error_line(e), false);
                            }
                            Ok(Request::Quit) => Self::answer_now(c, now, b"", true),
                            Ok(req) => {
                                let quiet = matches!(&req, Request::Meta(m) if m.quiet);
                                let silent = quiet || req.noreply();
                                let end = if quiet {
                                    SlotEnd::Quiet
                                } else {
                                    SlotEnd::Reply
                                };
                                let seq = Self::new_slot(c, now, end);
                                if req.noreply() {
                                    let s = c.slot_mut(seq).expect("just pushed");
                                    s.done = true;
                                }
                                let slot = SlotRef {
                                    conn: ix,
                                    generation,
                                    seq,
                                };
                                let frame = &mut frames[self.fed.len()];
                                if len > FRAME_MSG {
                                    self.counters.large_requests += 1;
                                }
                                if !request_frame(frame, self.vip, slot, bytes, &req) {
                                    // Cannot happen: every request line fits a frame.
                                    const LINE: &[u8] = b"SERVER_ERROR request too large\r\n";
                                    c.held += LINE.len();
                                    let s = c.slot_mut(seq).expect("just pushed");
                                    s.buf.extend_from_slice(LINE);
                                    s.done = true;
                                } else {
                                    self.fed.push(Fed::Request {
                                        slot,
                                        at,
                                        len,
                                        silent,
                                        silent_ok: silent_ok(&req),
                                    });
                                }
                            }
                        }
                        at += len;
                    }
                    RequestFrame::TooLarge { line_len, data_len } => {
                        self.counters.malformed += 1;
                        Self::answer_now(
                            c,
                            now,
                            b"SERVER_ERROR object too large for cache\r\n",
                            false,
                        );
                        at += line_len;
                        c.swallow = data_len + 2;
                        break;
                    }
                    RequestFrame::LineTooLong => {
                        self.counters.malformed += 1;
                        Self::answer_now(c, now, b"CLIENT_ERROR line too long\r\n", true);
                    }
                    RequestFrame::Binary => {
                        self.counters.malformed += 1;
                        Self::answer_now(
                            c,
                            now,
                            b"SERVER_ERROR binary protocol not supported over TCP\r\n",
                            true,
                        );
                    }
                }
            }
            c.rbuf = rbuf;
            let n = self.fed.len();
            taken |= at > 0;
            if n > 0 {
                let verdicts: Vec<Verdict> =
                    driver.process_burst(now, PORT, &mut frames[..n]).to_vec();
                self.affinity = Some(ix);
                for i in 0..n {
                    self.request_verdict(now, &frames[i], self.fed[i], verdicts[i], udp);
                }
                self.drain(driver, now, udp);
                self.affinity = None;
            }
            self.frames = frames;
            let Some(c) = self.clients[ix].as_mut() else {
                return taken;
            };
            c.rbuf.consume(at);
            if at == 0 || n < BURST && c.swallow == 0 {
                return taken;
            }
        }
    }

    /// Carries out the core's verdict on a client request.
    fn request_verdict(
        &mut self,
        now: Instant,
        frame: &Frame,
        fed: Fed,
        verdict: Verdict,
        udp: &mut dyn FnMut(&[u8]),
    ) {
        let Fed::Request {
            slot,
            at,
            len,
            silent,
            silent_ok,
        } = fed
        else {
            return;
        };
        match verdict {
            Verdict::Out(_) | Verdict::ToNf(_) | Verdict::Next => {
                let original = Some(Original {
                    conn: slot.conn,
                    at,
                    len,
                    silent,
                    silent_ok,
                });
                self.route(now, frame.bytes(), Some(slot), original, udp);
            }
            Verdict::Drop(DropReason::Absorbed) => {
                // Split over several servers (or a reply-less request the core consumed):
                // the reply comes as frames the core emits.
                if silent {
                    self.finish_quiet(slot);
                }
            }
            Verdict::Drop(reason) => {
                if !silent {
                    self.counters.server_errors += 1;
                    let line = match reason {
                        DropReason::NoBackend => &b"SERVER_ERROR no backend available\r\n"[..],
                        DropReason::AclDenied => b"SERVER_ERROR access denied\r\n",
                        DropReason::RateLimited => b"SERVER_ERROR rate limited\r\n",
                        DropReason::FlowTableFull => {
                            b"SERVER_ERROR too many outstanding requests\r\n"
                        }
                        DropReason::AmplificationGuard => b"SERVER_ERROR reply too large\r\n",
                        _ => b"SERVER_ERROR request not forwarded\r\n",
                    };
                    self.deliver(slot, line, true);
                }
                self.finish_quiet(slot);
            }
        }
    }

    /// Marks a slot whole whatever it holds (a quiet request that got no reply).
    fn finish_quiet(&mut self, slot: SlotRef) {
        if let Some(c) = self.client(slot) {
            if let Some(s) = c.slot_mut(slot.seq) {
                s.done = true;
            }
        }
    }

    fn client(&mut self, slot: SlotRef) -> Option<&mut ClientConn> {
        self.clients
            .get_mut(slot.conn)?
            .as_mut()
            .filter(|c| c.generation == slot.generation)
    }

    /// Appends reply bytes to a slot; `check` whether it is now whole.
    fn deliver(&mut self, slot: SlotRef, msg: &[u8], check: bool) -> bool {
        let Some(c) = self.client(slot) else {
            self.counters.orphan_replies += 1;
            return false;
        };
        let Some(s) = c.slot_mut(slot.seq) else {
            log::debug!(
                "TCP reply for slot {slot:?} (front {:?}, {} pending): {:?}",
                c.slots.front().map(|s| s.seq),
                c.slots.len(),
                String::from_utf8_lossy(&msg[..msg.len().min(40)])
            );
            self.counters.orphan_replies += 1;
            return false;
        };
        if s.done {
            // A reply-less request's completion, which only the core needed.
            return false;
        }
        s.buf.extend_from_slice(msg);
        if check && matches!(reply_len(&s.buf, ReplyEnd::Terminal), Ok(Some(n)) if n == s.buf.len())
        {
            s.done = true;
        }
        c.held += msg.len();
        let ix = slot.conn;
        self.busy.push(ix);
        true
    }

    /// Where a frame the core sent goes: a synthetic client's slot, a backend connection,
    /// or (neither) the UDP sockets. `original`: the client request whose bytes go to the
    /// backend instead of the frame's (connection, offset, length, reply-less, silent ok).
    fn route(
        &mut self,
        now: Instant,
        frame: &[u8],
        origin: Option<SlotRef>,
        original: Option<Original>,
        udp: &mut dyn FnMut(&[u8]),
    ) -> Option<SlotRef> {
        let Ok(Classified::Udp(u)) = wire::classify(frame) else {
            udp(frame);
            return None;
        };
        if let Some(slot) = SlotRef::of_frame(&u, frame) {
            let msg = &u.payload(frame)[mc_header::HEADER_LEN.min(u.payload(frame).len())..];
            self.deliver(slot, msg, true);
            return Some(slot);
        }
        if original.is_none() && !self.settings.own_over_tcp {
            udp(frame);
            return None;
        }
        let to = SocketAddrV4::new(u.dst_ip, u.dst_port);
        let pool = self.pools.iter().position(|p| p.addr == to);
        let port_ix = self.source_ports.iter().position(|&p| p == u.src_port);
        let (Some(pool), Some(_), Ok(header)) = (pool, port_ix, McHeader::parse(u.payload(frame)))
        else {
            udp(frame);
            return None;
        };
        let local = SocketAddrV4::new(u.src_ip, u.src_port);
        let (bytes, silent, silent_ok, origin) = match original {
            Some(o) => {
                let c = self.clients[o.conn].as_ref()?;
                (
                    &c.rbuf.data()[o.at..o.at + o.len],
                    o.silent,
                    o.silent_ok,
                    origin,
                )
            }
            None => {
                let msg = &u.payload(frame)[mc_header::HEADER_LEN..];
                let silent = match Request::parse(msg) {
                    Ok(r) => r.noreply() || matches!(&r, Request::Meta(m) if m.quiet),
                    Err(_) => false,
                };
                (msg, silent, None, None)
            }
        };
        let p = &mut self.pools[pool];
        // One client's requests to one backend keep to one connection, so the backend runs
        // them in the order the client sent them (a get after a set sees the set).
        let conn = match self.affinity {
            Some(client) => client % p.conns.len(),
            None => (0..p.conns.len())
                .min_by_key(|&i| (p.conns[i].stream.is_none(), p.conns[i].fifo.len()))
                .expect("a pool has connections"),
        };
        let bc = &mut p.conns[conn];
        if bc.stream.is_none() {
            // Connect now; a failure answers the request through the usual path.
            if !Self::connect(&self.poll, bc, to, pool, conn, now, &mut self.counters) {
                self.failed.push((pool, conn));
            }
        }
        if bc.wbuf.len() == bc.wpos && bc.wpos > 0 {
            bc.wbuf.clear();
            bc.wpos = 0;
        }
        bc.wbuf.extend_from_slice(bytes);
        if silent {
            bc.wbuf.extend_from_slice(b"mn\r\n");
        }
        bc.fifo.push_back(Pending {
            request_id: header.request_id,
            backend: to,
            local,
            end: if silent {
                ReplyEnd::Noop
            } else {
                ReplyEnd::Terminal
            },
            origin,
            silent_ok,
            sent: now,
        });
        None
    }

    fn connect(
        poll: &Poll,
        bc: &mut BackendConn,
        to: SocketAddrV4,
        pool: usize,
        conn: usize,
        now: Instant,
        counters: &mut TcpCounters,
    ) -> bool {
        counters.backend_connects += 1;
        bc.retry_at = now + RECONNECT_AFTER;
        match TcpStream::connect(SocketAddr::V4(to)) {
            Ok(mut s) => {
                let _ = s.set_nodelay(true);
                let token = MioToken(BACKEND_TOKENS + pool * MAX_BACKEND_CONNS + conn);
                if poll
                    .registry()
                    .register(&mut s, token, Interest::READABLE | Interest::WRITABLE)
                    .is_err()
                {
                    return false;
                }
                bc.stream = Some(s);
                bc.connected = false;
                bc.read_closed = false;
                true
            }
            Err(e) => {
                log::debug!("TCP connect to {to}: {e}");
                false
            }
        }
    }

    /// Hands every frame the core emitted to [`route`](Self::route).
    fn drain(&mut self, driver: &mut Driver<'_, Core>, now: Instant, udp: &mut dyn FnMut(&[u8])) {
        let mut emitted: Vec<Vec<u8>> = Vec::new();
        driver.drain(now, &mut |_, _, f| emitted.push(f.to_vec()));
        for f in emitted {
            self.route(now, &f, None, None, udp);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn backend_event(
        &mut self,
        driver: &mut Driver<'_, Core>,
        now: Instant,
        pool: usize,
        conn: usize,
        readable: bool,
        writable: bool,
        error: bool,
        udp: &mut dyn FnMut(&[u8]),
    ) {
        let Some(bc) = self.pools.get_mut(pool).and_then(|p| p.conns.get_mut(conn)) else {
            return;
        };
        let Some(stream) = bc.stream.as_mut() else {
            return;
        };
        if !bc.connected {
            let failed = match stream.take_error() {
                Ok(Some(e)) | Err(e) => Some(e),
                Ok(None) => match stream.peer_addr() {
                    Ok(_) => {
                        bc.connected = true;
                        self.pools[pool].refused = false;
                        None
                    }
                    Err(e) if e.kind() == ErrorKind::NotConnected && !error => return,
                    Err(e) => Some(e),
                },
            };
            if let Some(e) = failed {
                log::debug!("TCP connection to backend {}: {e}", self.pools[pool].addr);
                if e.kind() == ErrorKind::ConnectionRefused {
                    let p = &mut self.pools[pool];
                    if !std::mem::replace(&mut p.refused, true) {
                        log::warn!(
                            "backend {} refuses TCP connections: marked down until it accepts \
                             again (a server that serves UDP only, or on another port, needs \
                             --own-requests udp and --tcp off)",
                            p.addr
                        );
                    }
                    let addr = p.addr;
                    driver.pipeline_mut().on_unreachable(now, addr);
                }
                self.failed.push((pool, conn));
                return;
            }
        }
        let _ = writable;
        if error {
            self.failed.push((pool, conn));
            return;
        }
        if readable {
            self.read_backend(driver, now, pool, conn, udp);
        }
    }

    /// Reads a backend connection and hands each whole reply to the core.
    fn read_backend(
        &mut self,
        driver: &mut Driver<'_, Core>,
        now: Instant,
        pool: usize,
        conn: usize,
        udp: &mut dyn FnMut(&[u8]),
    ) {
        loop {
            let bc = &mut self.pools[pool].conns[conn];
            let Some(stream) = bc.stream.as_mut() else {
                return;
            };
            let room = bc.rbuf.spare(BACKEND_READ);
            let room_len = room.len();
            let mut drained = false;
            match stream.read(room) {
                Ok(0) => {
                    self.failed.push((pool, conn));
                    return;
                }
                Ok(n) => {
                    drained = n < room_len && !bc.read_closed; // as for clients
                    bc.rbuf.filled(n);
                }
                Err(e) => {
                    if would_block(&e) {
                        return;
                    }
                    if e.kind() != ErrorKind::Interrupted {
                        self.failed.push((pool, conn));
                        return;
                    }
                }
            }
            if !self.take_replies(driver, now, pool, conn, udp) {
                self.failed.push((pool, conn));
                return;
            }
            if drained {
                return;
            }
        }
    }

    /// Hands the whole replies at the front of a backend connection's read buffer to the
    /// core. False if the bytes are not memcached replies (or answer nothing).
    fn take_replies(
        &mut self,
        driver: &mut Driver<'_, Core>,
        now: Instant,
        pool: usize,
        conn: usize,
        udp: &mut dyn FnMut(&[u8]),
    ) -> bool {
        let mut rbuf = std::mem::take(&mut self.pools[pool].conns[conn].rbuf);
        let mut at = 0;
        let mut ok = true;
        let mut frames = std::mem::take(&mut self.frames);
        self.fed.clear();
        loop {
            let bc = &mut self.pools[pool].conns[conn];
            let Some(end) = bc.fifo.front().map(|p| p.end) else {
                ok = at == rbuf.len();
                break;
            };
            let n = match reply_len(&rbuf.data()[at..], end) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(_) => {
                    ok = false;
                    break;
                }
            };
            let p = bc.fifo.pop_front().expect("front exists");
            let mut msg = &rbuf.data()[at..at + n];
            at += n;
            if end == ReplyEnd::Noop {
                msg = &msg[..msg.len() - b"MN\r\n".len()];
            }
            if now.saturating_duration_since(p.sent) >= self.settings.request_timeout {
                // The core gave up on it and may have given its token to another request:
                // not shown to the core. The reply is still this request's (the connection
                // keeps order), so a client request gets it as it is; nothing is learned.
                self.counters.late_replies += 1;
                if let Some(slot) = p.origin {
                    if !msg.is_empty() {
                        self.deliver(slot, msg, true);
                    }
                    self.settle(slot);
                }
                continue;
            }
            if msg.is_empty() {
                // A reply-less request is done: tell the core so, the client sees nothing.
                if let Some(slot) = p.origin {
                    self.finish_quiet(slot);
                }
                match p.silent_ok {
                    Some(ok_line) if p.origin.is_some() => msg = ok_line,
                    _ => continue,
                }
            }
            if msg.len() > self.large_reply_above {
                self.flush_replies(driver, now, &mut frames, udp);
                self.large_reply(driver, now, &mut frames, &p, msg, udp);
                continue;
            }
            let f = &mut frames[self.fed.len()];
            if reply_frame(f, &p, McHeader::single(p.request_id), msg).is_err() {
                continue;
            }
            self.fed.push(Fed::Reply { origin: p.origin });
            if self.fed.len() == BURST {
                self.flush_replies(driver, now, &mut frames, udp);
            }
        }
        self.flush_replies(driver, now, &mut frames, udp);
        self.frames = frames;
        rbuf.consume(at);
        self.pools[pool].conns[conn].rbuf = rbuf;
        ok
    }

    /// Hands the reply frames gathered so far to the core and routes what it decides.
    fn flush_replies(
        &mut self,
        driver: &mut Driver<'_, Core>,
        now: Instant,
        frames: &mut [Frame],
        udp: &mut dyn FnMut(&[u8]),
    ) {
        let n = self.fed.len();
        if n == 0 {
            return;
        }
        let verdicts: Vec<Verdict> = driver.process_burst(now, PORT, &mut frames[..n]).to_vec();
        let fed: Vec<Fed> = self.fed.drain(..).collect();
        for i in 0..n {
            if !matches!(verdicts[i], Verdict::Drop(_)) {
                self.route(now, frames[i].bytes(), None, None, udp);
            }
            if let Fed::Reply { origin: Some(slot) } = fed[i] {
                self.settle(slot);
            }
        }
        self.drain(driver, now, udp);
    }

    /// After the reply to a forwarded client request went through the core: a slot the
    /// core delivered nothing to gets `SERVER_ERROR` (its reply was refused), and a quiet
    /// one is whole.
    fn settle(&mut self, slot: SlotRef) {
        let Some(c) = self.client(slot) else { return };
        let Some(s) = c.slot_mut(slot.seq) else {
            return;
        };
        if s.done {
            return;
        }
        if s.buf.is_empty() && s.end == SlotEnd::Reply {
            self.fail_slot(slot);
        } else {
            s.done = true;
        }
    }

    /// Answers a slot `SERVER_ERROR` (if it has nothing yet) and marks it whole.
    fn fail_slot(&mut self, slot: SlotRef) {
        const LINE: &[u8] = b"SERVER_ERROR backend failed\r\n";
        let Some(c) = self.client(slot) else { return };
        let Some(s) = c.slot_mut(slot.seq) else {
            return;
        };
        if s.done {
            return;
        }
        let add = if s.buf.is_empty() { LINE } else { &[][..] };
        s.buf.extend_from_slice(add);
        s.done = true;
        c.held += add.len();
        self.counters.server_errors += 1;
        self.busy.push(slot.conn);
    }

    /// A reply too large for a frame: its two ends through the core, the middle straight
    /// into the slot the core sends the first end to.
    #[allow(clippy::too_many_arguments)]
    fn large_reply(
        &mut self,
        driver: &mut Driver<'_, Core>,
        now: Instant,
        frames: &mut [Frame],
        p: &Pending,
        msg: &[u8],
        udp: &mut dyn FnMut(&[u8]),
    ) {
        self.counters.large_replies += 1;
        let (head, rest) = msg.split_at(LARGE_EDGE);
        let (middle, tail) = rest.split_at(rest.len() - LARGE_EDGE);
        let mut target = None;
        for (i, part) in [head, tail].into_iter().enumerate() {
            let header = McHeader {
                request_id: p.request_id,
                sequence: i as u16,
                count: 2,
                reserved: 0,
            };
            if reply_frame(&mut frames[0], p, header, part).is_err() {
                break;
            }
            let v = driver.process_burst(now, PORT, &mut frames[..1])[0];
            if !matches!(v, Verdict::Drop(_)) {
                let Ok(Classified::Udp(u)) = wire::classify(frames[0].bytes()) else {
                    continue;
                };
                match SlotRef::of_frame(&u, frames[0].bytes()) {
                    Some(slot) => {
                        let payload = u.payload(frames[0].bytes());
                        let part = &payload[mc_header::HEADER_LEN..];
                        if i == 0 {
                            if let Some(s) = self.client(slot).and_then(|c| c.slot_mut(slot.seq)) {
                                s.buf.reserve(msg.len());
                            }
                            self.deliver(slot, part, false);
                            self.deliver(slot, middle, false);
                            target = Some(slot);
                        } else if target == Some(slot) {
                            self.deliver(slot, part, true);
                        }
                    }
                    None => udp(frames[0].bytes()),
                }
            }
            self.drain(driver, now, udp);
        }
        if let Some(slot) = p.origin {
            self.settle(slot);
        }
    }

    /// Backend connections that failed: their outstanding requests are answered
    /// `SERVER_ERROR` through the core, and they reconnect later.
    fn clean_failed(
        &mut self,
        driver: &mut Driver<'_, Core>,
        now: Instant,
        udp: &mut dyn FnMut(&[u8]),
    ) {
        while let Some((pool, conn)) = self.failed.pop() {
            let bc = &mut self.pools[pool].conns[conn];
            if let Some(mut s) = bc.stream.take() {
                let _ = self.poll.registry().deregister(&mut s);
                self.counters.backend_failures += 1;
            }
            bc.connected = false;
            bc.wbuf.clear();
            bc.wpos = 0;
            bc.rbuf.clear();
            bc.retry_at = now + RECONNECT_AFTER;
            let fifo = std::mem::take(&mut bc.fifo);
            for p in fifo {
                // The core ends the request as timed out (not as answered: a lost
                // connection is no sign of life), unless it already gave up on it; its
                // client, if it is a client's, is answered SERVER_ERROR. A split get's
                // part ends its group without it, as a lost datagram would.
                if now.saturating_duration_since(p.sent) < self.settings.request_timeout {
                    driver
                        .pipeline_mut()
                        .request_failed(now, p.local, p.request_id, p.backend);
                }
                if let Some(slot) = p.origin {
                    self.fail_slot(slot);
                }
            }
            self.drain(driver, now, udp);
        }
    }

    /// Writes what backend connections have queued (one write per connection per round).
    pub fn flush(&mut self) {
        for (pi, p) in self.pools.iter_mut().enumerate() {
            for (ci, bc) in p.conns.iter_mut().enumerate() {
                let Some(s) = bc.stream.as_mut() else {
                    continue;
                };
                while bc.wpos < bc.wbuf.len() {
                    match s.write(&bc.wbuf[bc.wpos..]) {
                        Ok(0) => {
                            self.failed.push((pi, ci));
                            break;
                        }
                        Ok(n) => bc.wpos += n,
                        Err(e) if would_block(&e) => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == ErrorKind::NotConnected => break,
                        Err(_) => {
                            self.failed.push((pi, ci));
                            break;
                        }
                    }
                }
                if bc.wpos == bc.wbuf.len() {
                    bc.wbuf.clear();
                    bc.wpos = 0;
                }
            }
        }
    }

    /// Timers: slot deadlines, idle connections, failed backend connections.
    fn maintain(
        &mut self,
        driver: &mut Driver<'_, Core>,
        now: Instant,
        udp: &mut dyn FnMut(&[u8]),
    ) {
        let idle = self.settings.idle_timeout;
        for ix in 0..self.clients.len() {
            let Some(c) = self.clients[ix].as_mut() else {
                continue;
            };
            let mut late = false;
            for s in c.slots.iter_mut().filter(|s| !s.done && now >= s.deadline) {
                if s.buf.is_empty() {
                    s.buf.extend_from_slice(b"SERVER_ERROR timeout\r\n");
                    c.held += 22;
                }
                s.done = true;
                late = true;
                self.counters.slot_timeouts += 1;
            }
            if late {
                self.busy.push(ix);
            }
            if !idle.is_zero()
                && c.slots.is_empty()
                && c.wbuf.len() == c.wpos
                && now.saturating_duration_since(c.last_active) >= idle
            {
                self.counters.idle_closed += 1;
                self.close_client(ix);
            }
        }
        // A connection whose oldest request waits far beyond the core's timeout is stalled:
        // the core has given up on it; fail it (its clients get SERVER_ERROR) and reconnect.
        let stalled = (self.settings.request_timeout * 4).max(STALLED_AFTER);
        for (pi, p) in self.pools.iter().enumerate() {
            for (ci, bc) in p.conns.iter().enumerate() {
                if bc
                    .fifo
                    .front()
                    .is_some_and(|e| now.saturating_duration_since(e.sent) >= stalled)
                {
                    log::warn!("TCP connection to backend {} stalled: reconnecting", p.addr);
                    self.failed.push((pi, ci));
                }
            }
        }
        self.clean_failed(driver, now, udp);
        for (pi, p) in self.pools.iter_mut().enumerate() {
            for (ci, bc) in p.conns.iter_mut().enumerate() {
                if bc.stream.is_none() && now >= bc.retry_at {
                    let _ = Self::connect(&self.poll, bc, p.addr, pi, ci, now, &mut self.counters);
                }
            }
        }
        let busy = std::mem::take(&mut self.busy);
        for c in busy {
            self.serve_client(driver, now, c, udp);
        }
    }
}

/// memcached's answer to a request it cannot parse.
fn error_line(e: proto::Error) -> &'static [u8] {
    match e {
        proto::Error::UnknownCommand | proto::Error::Garbage | proto::Error::EmptyRequest => {
            b"ERROR\r\n"
        }
        proto::Error::BadDataLength => b"CLIENT_ERROR bad data chunk\r\n",
        _ => b"CLIENT_ERROR bad command line format\r\n",
    }
}

/// What the core is told when a reply-less request is done: a success line of the shape
/// the core expects for it (the client never sees it).
fn silent_ok(req: &Request<'_>) -> Option<&'static [u8]> {
    Some(match req {
        Request::Storage(_) => b"STORED\r\n",
        Request::Delete { .. } => b"DELETED\r\n",
        Request::Arithmetic { .. } => b"NOT_FOUND\r\n",
        Request::Touch { .. } => b"TOUCHED\r\n",
        Request::FlushAll { .. } | Request::Verbosity { .. } => b"OK\r\n",
        Request::Meta(_) => b"HD\r\n",
        _ => return None,
    })
}

/// Builds the synthetic request frame of a client request to `vip`: the request itself
/// when it fits, else its command line with an empty data block (see the module
/// documentation).
fn request_frame(
    f: &mut Frame,
    vip: SocketAddrV4,
    slot: SlotRef,
    bytes: &[u8],
    req: &Request<'_>,
) -> bool {
    let ep = UdpEndpoints {
        src_mac: PEER_MAC,
        dst_mac: KVLB_MAC,
        vlan: None,
        inner_vlan: None,
        src_ip: slot.client_ip(),
        dst_ip: *vip.ip(),
        src_port: slot.generation,
        dst_port: vip.port(),
        ttl: 64,
    };
    let msg: std::borrow::Cow<'_, [u8]> = if bytes.len() <= FRAME_MSG {
        bytes.into()
    } else {
        match substitute(req) {
            Some(m) => m.into(),
            None => return false,
        }
    };
    match ep.emit_message(&mut f.buf, 0, McHeader::single(slot.seq), &msg) {
        Ok(n) => {
            f.len = n;
            no_udp_checksum(f);
            true
        }
        Err(_) => false,
    }
}

/// A large write as the core sees it: the same key and flags, an empty data block, and not
/// a `set` (so no replica gets the empty block as a copy).
fn substitute(req: &Request<'_>) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match req {
        Request::Storage(s) => {
            let cmd: &[u8] = match s.command {
                Command::Set | Command::Replace => b"replace",
                Command::Add => b"add",
                Command::Append => b"append",
                Command::Prepend => b"prepend",
                Command::Cas => b"cas",
                _ => return None,
            };
            out.extend_from_slice(cmd);
            out.push(b' ');
            out.extend_from_slice(s.key);
            out.extend_from_slice(format!(" {} {} 0", s.flags, s.exptime).as_bytes());
            if let Some(cas) = s.cas {
                out.extend_from_slice(format!(" {cas}").as_bytes());
            }
            if s.noreply {
                out.extend_from_slice(b" noreply");
            }
            out.extend_from_slice(b"\r\n\r\n");
        }
        Request::Meta(m) if m.command == Command::MetaSet => {
            out.extend_from_slice(b"ms ");
            out.extend_from_slice(m.key);
            out.extend_from_slice(b" 0");
            if !m.flags.is_empty() {
                out.push(b' ');
                out.extend_from_slice(m.flags);
            }
            out.extend_from_slice(b"\r\n\r\n");
        }
        _ => return None,
    }
    Some(out)
}

/// Builds the synthetic reply frame of a backend reply to pending request `p`.
fn reply_frame(
    f: &mut Frame,
    p: &Pending,
    header: McHeader,
    msg: &[u8],
) -> Result<(), wire::Error> {
    let ep = UdpEndpoints {
        src_mac: PEER_MAC,
        dst_mac: KVLB_MAC,
        vlan: None,
        inner_vlan: None,
        src_ip: *p.backend.ip(),
        dst_ip: *p.local.ip(),
        src_port: p.backend.port(),
        dst_port: p.local.port(),
        ttl: 64,
    };
    f.len = ep.emit_message(&mut f.buf, 0, header, msg)?;
    no_udp_checksum(f);
    Ok(())
}

/// Clears a synthetic frame's UDP checksum (optional over IPv4): nothing on a wire can
/// corrupt these bytes, and an absent checksum is neither verified when the core classifies
/// the frame nor updated when it rewrites it.
fn no_udp_checksum(f: &mut Frame) {
    // Ethernet (no VLAN) + IPv4 (no options) + the UDP checksum's offset.
    const UDP_CHECKSUM: std::ops::Range<usize> = 14 + 20 + 6..14 + 20 + 8;
    f.buf[UDP_CHECKSUM].fill(0);
}
