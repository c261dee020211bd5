//! Kernel UDP socket datapath: `kvlb serve`, the default that needs no privileges.
//!
//! Owns: the sockets, batching (`recvmmsg`/`sendmmsg`), the clock and the stop flag. Makes
//! no balancing decision: every datagram becomes a frame for [`Core`], exactly as a packet
//! datapath would deliver it, so the core behaves identically here and on DPDK/ONVM.
//!
//! # Frames from datagrams
//! Each receive buffer keeps [`HEADROOM`] bytes in front of where the kernel writes the
//! datagram; the Ethernet/IPv4/UDP headers of a synthetic frame (peer → kvlb) are written
//! there, so turning a datagram into a frame copies no payload. The core rewrites the frame
//! in place; its source port says which socket sends it (the VIP socket, or one of the
//! source-port sockets toward backends) and its destination says where.
//!
//! # Sockets
//! One socket bound to the VIP (`--listen`) faces clients; `--source-ports` sockets face
//! backends, bound to `--local-ip` (default: the listen address) and consecutive ports from
//! `--source-port-base` (0: ports chosen by the kernel). Backend sockets set `IP_RECVERR`, so
//! an ICMP port/host unreachable from a backend marks it down at once.

use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    recvmmsg, recvmsg, sendmmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned,
    MsgFlags, MultiHeaders, SockaddrIn,
};

use super::driver::{Driver, Ticking};
use crate::clock::Instant;
use crate::config::Config;
use crate::nf::{Core, CoreError, PortId, PortInfo, Verdict};
use crate::stats::Report;
use crate::wire::{self, Classified, FrameBuf, NoRoom, UdpEndpoints};

/// Bytes reserved in front of each datagram for the synthetic Ethernet/IPv4/UDP headers.
pub const HEADROOM: usize = 14 + 20 + 8;
/// Largest datagram received (memcached's UDP replies are ≤ 1400 bytes per datagram;
/// requests such as a `set` can be larger).
pub const MAX_DATAGRAM: usize = 9000;
/// Datagrams per `recvmmsg`/`sendmmsg` call.
pub const BATCH: usize = 64;
/// The MAC addresses of the synthetic frames (locally administered).
pub const KVLB_MAC: [u8; 6] = [0x02, 0x6b, 0x76, 0x6c, 0x62, 0x01];
pub const PEER_MAC: [u8; 6] = [0x02, 0x6b, 0x76, 0x6c, 0x62, 0x02];
/// The one pseudo-port every datagram arrives on and leaves by.
const PORT: PortId = PortId(0);
/// Timer granularity.
const TICK: Duration = Duration::from_millis(1);
const SOCKET_BUFFER: usize = 8 << 20;

/// What can go wrong running the socket datapath.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddrV4,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

fn io(what: &'static str) -> impl FnOnce(Errno) -> SocketError {
    move |e| SocketError::Io {
        what,
        source: std::io::Error::from(e),
    }
}

/// Bound sockets, ready to serve.
#[derive(Debug)]
pub struct Sockets {
    client: UdpSocket,
    backends: Vec<UdpSocket>,
    vip: SocketAddrV4,
    local_ip: Ipv4Addr,
    source_ports: Vec<u16>,
}

impl Sockets {
    /// Binds the VIP socket at `listen` and the backend-facing sockets per `cfg`.
    pub fn bind(cfg: &Config, listen: SocketAddrV4) -> Result<Sockets, SocketError> {
        let bind = |addr: SocketAddrV4| -> Result<UdpSocket, SocketError> {
            let s = UdpSocket::bind(addr).map_err(|source| SocketError::Bind { addr, source })?;
            // Larger kernel buffers absorb bursts; failure (limits) is not fatal.
            let _ = setsockopt(&s, sockopt::RcvBuf, &SOCKET_BUFFER);
            let _ = setsockopt(&s, sockopt::SndBuf, &SOCKET_BUFFER);
            Ok(s)
        };
        let client = bind(listen)?;
        let vip = match client.local_addr() {
            Ok(std::net::SocketAddr::V4(a)) => a,
            _ => listen,
        };
        let local_ip = cfg.local_ip.unwrap_or(*listen.ip());
        let mut backends = Vec::new();
        let mut source_ports = Vec::new();
        for i in 0..cfg.source_ports {
            let port = if cfg.source_port_base == 0 {
                0
            } else {
                cfg.source_port_base + i
            };
            let s = bind(SocketAddrV4::new(local_ip, port))?;
            setsockopt(&s, sockopt::Ipv4RecvErr, &true).map_err(io("IP_RECVERR"))?;
            let bound = match s.local_addr() {
                Ok(std::net::SocketAddr::V4(a)) => a.port(),
                _ => port,
            };
            source_ports.push(bound);
            backends.push(s);
        }
        Ok(Sockets {
            client,
            backends,
            vip,
            local_ip,
            source_ports,
        })
    }

    /// A core for these sockets: one pseudo-port with kvlb's synthetic MAC, and every
    /// backend a neighbour at the peers' synthetic MAC (the frames the core sees here are
    /// built by this datapath, so ARP never resolves anything).
    pub fn core(&self, cfg: &Config) -> Result<Core, CoreError> {
        let mut cfg = cfg.clone();
        let backends: Vec<Ipv4Addr> = cfg.backends.iter().map(|b| *b.addr.ip()).collect();
        cfg.neighbors
            .extend(backends.into_iter().map(|ip| (ip, PEER_MAC)));
        let port = PortInfo {
            id: PORT,
            mac: KVLB_MAC,
        };
        Core::for_sockets(&cfg, port, &self.source_ports)
    }

    /// The address clients send to.
    pub fn vip(&self) -> SocketAddrV4 {
        self.vip
    }

    /// The ports of the backend-facing sockets, in order.
    pub fn source_ports(&self) -> &[u16] {
        &self.source_ports
    }

    fn socket(&self, ix: usize) -> &UdpSocket {
        if ix == 0 {
            &self.client
        } else {
            &self.backends[ix - 1]
        }
    }

    /// Which socket sends a frame whose source port is `port` (0 = the VIP socket).
    fn socket_for_port(&self, port: u16) -> Option<usize> {
        if port == self.vip.port() {
            return Some(0);
        }
        self.source_ports
            .iter()
            .position(|&p| p == port)
            .map(|i| i + 1)
    }
}

/// Counters of the socket datapath itself (the core counts everything else).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SocketCounters {
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub recv_calls: u64,
    pub send_calls: u64,
    /// Frames the core produced that no socket could send (e.g. ARP), dropped here.
    pub unsendable: u64,
    pub send_errors: u64,
    pub icmp_errors: u64,
    /// Times the kernel refused a UDP GSO send (GSO is then off for the run).
    pub gso_fallbacks: u64,
}

/// A frame in a receive buffer, with its headroom and tailroom: the datagram is received
/// after [`HEADROOM`] bytes and its synthetic headers written in front of it.
struct DatagramFrame {
    buf: Vec<u8>,
    len: usize,
}

impl FrameBuf for DatagramFrame {
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }
    fn set_len(&mut self, len: usize) -> Result<(), NoRoom> {
        if len > self.buf.len() || len > wire::MAX_FRAME {
            return Err(NoRoom);
        }
        self.len = len;
        Ok(())
    }
}

/// Largest datagram sent as a GSO segment: the UDP payload of one 1500-byte Ethernet MTU,
/// so the kernel's check that a segment fits the path MTU holds on any usual interface.
/// Larger datagrams are sent one by one (and fragmented by the kernel as before).
pub const GSO_MAX_SEGMENT: usize = 1500 - 20 - 8;
/// The kernel's limits on one GSO send: segments (`UDP_MAX_SEGMENTS`) and payload bytes.
const GSO_MAX_SEGMENTS: usize = 64;
const GSO_MAX_BYTES: usize = 65507;

/// One message of a send: queue entries `first..first + count` of one socket's queue (after
/// [`plan_sends`] grouped it), all to one peer. `segment` > 0: a UDP GSO send, every
/// datagram `segment` bytes long except the last, which may be shorter; the kernel splits
/// it into `count` datagrams. `segment` 0: one plain datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Send {
    first: usize,
    count: usize,
    segment: u16,
}

/// Cuts one socket's queue of (peer, bytes) into messages: entries are grouped per peer
/// (stable, so the datagrams of a multi-datagram reply keep their order), and each peer's
/// run is cut greedily into GSO messages of equal-sized datagrams, the last of which may
/// be shorter. Datagrams above [`GSO_MAX_SEGMENT`], and every datagram when `gso` is
/// off, go alone.
fn plan_sends(q: &mut [(SocketAddrV4, std::ops::Range<usize>)], gso: bool, out: &mut Vec<Send>) {
    out.clear();
    if gso && q.windows(2).any(|w| w[0].0 != w[1].0) {
        q.sort_by_key(|(peer, _)| (u32::from(*peer.ip()), peer.port()));
    }
    let mut i = 0;
    while i < q.len() {
        let len = q[i].1.len();
        let mut j = i + 1;
        if gso && len > 0 && len <= GSO_MAX_SEGMENT {
            let mut bytes = len;
            while j < q.len()
                && j - i < GSO_MAX_SEGMENTS
                && q[j].0 == q[i].0
                && q[j].1.len() <= len
                && bytes + q[j].1.len() <= GSO_MAX_BYTES
            {
                bytes += q[j].1.len();
                j += 1;
                if q[j - 1].1.len() < len {
                    break; // a shorter datagram ends the message
                }
            }
        }
        out.push(Send {
            first: i,
            count: j - i,
            segment: if j - i > 1 { len as u16 } else { 0 },
        });
        i = j;
    }
}

/// Per-socket queue of datagrams to send: (destination, frame bytes range in the arena).
struct SendQueue {
    arena: Vec<u8>,
    queues: Vec<Vec<(SocketAddrV4, std::ops::Range<usize>)>>,
    /// Send runs of equal-sized datagrams as UDP GSO messages; turned off for good the
    /// first time the kernel refuses one.
    gso: bool,
    plan: Vec<Send>,
    /// Headers without control messages (plain datagrams), and with room for one
    /// `UDP_SEGMENT` control message each (GSO messages).
    plain_headers: MultiHeaders<SockaddrIn>,
    gso_headers: MultiHeaders<SockaddrIn>,
}

impl SendQueue {
    fn new(n_sockets: usize, gso: bool) -> SendQueue {
        SendQueue {
            arena: Vec::with_capacity(BATCH * 2048),
            queues: (0..n_sockets).map(|_| Vec::with_capacity(BATCH)).collect(),
            gso,
            plan: Vec::with_capacity(BATCH),
            plain_headers: MultiHeaders::preallocate(BATCH, None),
            gso_headers: MultiHeaders::preallocate(BATCH, Some(nix::cmsg_space!(u16))),
        }
    }

    fn push(&mut self, sockets: &Sockets, frame: &[u8], counters: &mut SocketCounters) {
        let Ok(Classified::Udp(u)) = wire::classify(frame) else {
            counters.unsendable += 1;
            return;
        };
        let Some(sock) = sockets.socket_for_port(u.src_port) else {
            counters.unsendable += 1;
            return;
        };
        let payload = u.payload(frame);
        let start = self.arena.len();
        self.arena.extend_from_slice(payload);
        self.queues[sock].push((
            SocketAddrV4::new(u.dst_ip, u.dst_port),
            start..self.arena.len(),
        ));
    }

    fn flush(&mut self, sockets: &Sockets, counters: &mut SocketCounters) {
        for ix in 0..self.queues.len() {
            if self.queues[ix].is_empty() {
                continue;
            }
            let fd = sockets.socket(ix).as_raw_fd();
            plan_sends(&mut self.queues[ix], self.gso, &mut self.plan);
            let q = &self.queues[ix];
            let mut m = 0;
            while m < self.plan.len() {
                // Consecutive messages of one kind (plain, or GSO of one segment size)
                // share a sendmmsg: its control message applies to all of them.
                let segment = self.plan[m].segment;
                let mut end = m + 1;
                while end < self.plan.len() && end - m < BATCH && self.plan[end].segment == segment
                {
                    end += 1;
                }
                let chunk = &self.plan[m..end];
                // The chunk's messages cover consecutive queue entries: one slice per
                // datagram, and each message a view of its run of them.
                let first = chunk[0].first;
                let datagrams: Vec<IoSlice<'_>> = q
                    [first..chunk[chunk.len() - 1].first + chunk[chunk.len() - 1].count]
                    .iter()
                    .map(|(_, r)| IoSlice::new(&self.arena[r.clone()]))
                    .collect();
                let slices: Vec<&[IoSlice<'_>]> = chunk
                    .iter()
                    .map(|s| &datagrams[s.first - first..s.first - first + s.count])
                    .collect();
                let addrs: Vec<Option<SockaddrIn>> = chunk
                    .iter()
                    .map(|s| Some(SockaddrIn::from(q[s.first].0)))
                    .collect();
                counters.send_calls += 1;
                let result = if segment == 0 {
                    sendmmsg(
                        fd,
                        &mut self.plain_headers,
                        &slices,
                        &addrs,
                        [],
                        MsgFlags::empty(),
                    )
                    .map(|r| r.count())
                } else {
                    let cmsg = [ControlMessage::UdpGsoSegments(&segment)];
                    sendmmsg(
                        fd,
                        &mut self.gso_headers,
                        &slices,
                        &addrs,
                        cmsg,
                        MsgFlags::empty(),
                    )
                    .map(|r| r.count())
                };
                match result {
                    Ok(n) => {
                        let n = n.max(1);
                        counters.datagrams_out += chunk[..n.min(chunk.len())]
                            .iter()
                            .map(|s| s.count as u64)
                            .sum::<u64>();
                        m += n;
                    }
                    Err(Errno::EINTR) => {}
                    Err(
                        e @ (Errno::EINVAL
                        | Errno::EMSGSIZE
                        | Errno::EIO
                        | Errno::ENOPROTOOPT
                        | Errno::EOPNOTSUPP),
                    ) if segment != 0 => {
                        // The kernel does not do UDP GSO, or not on this route (EMSGSIZE: a
                        // segment does not fit the device's MTU; EIO: no checksum offload,
                        // on older kernels): send these and everything after one datagram
                        // at a time.
                        log::warn!("UDP GSO refused ({e}): sending datagrams one by one");
                        counters.gso_fallbacks += 1;
                        self.gso = false;
                        let rest: Vec<Send> = self.plan[m..]
                            .iter()
                            .flat_map(|s| {
                                (s.first..s.first + s.count).map(|first| Send {
                                    first,
                                    count: 1,
                                    segment: 0,
                                })
                            })
                            .collect();
                        self.plan.truncate(m);
                        self.plan.extend(rest);
                    }
                    Err(e) => {
                        // ECONNREFUSED and friends report an earlier ICMP error; skip the
                        // message that failed and carry on.
                        log::debug!("sendmmsg: {e}");
                        counters.send_errors += 1;
                        m += 1;
                    }
                }
            }
            self.queues[ix].clear();
        }
        self.arena.clear();
    }
}

/// Serves until `stop` is set. `report` is called every `cfg.stats_interval` (if non-zero)
/// and once at the end.
pub fn serve(
    cfg: &Config,
    sockets: &Sockets,
    core: &mut Core,
    stop: &AtomicBool,
    report: impl FnMut(Report, &SocketCounters),
) -> Result<SocketCounters, SocketError> {
    serve_with_tcp(cfg, sockets, None, core, stop, report)
}

/// [`serve`], and memcached over TCP too when `tcp` is given: its connections are served in
/// the same loop, by the same core (see [`super::tcp`]).
pub fn serve_with_tcp(
    cfg: &Config,
    sockets: &Sockets,
    mut tcp: Option<&mut super::tcp::TcpFront>,
    core: &mut Core,
    stop: &AtomicBool,
    mut report: impl FnMut(Report, &SocketCounters),
) -> Result<SocketCounters, SocketError> {
    let start = std::time::Instant::now();
    let clock = || Instant::from_nanos(start.elapsed().as_nanos() as u64);
    let mut counters = SocketCounters::default();
    let n_sockets = 1 + sockets.backends.len();
    let mut frames: Vec<DatagramFrame> = (0..BATCH)
        .map(|_| DatagramFrame {
            buf: vec![0u8; HEADROOM + MAX_DATAGRAM],
            len: 0,
        })
        .collect();
    let mut recv_headers = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    let mut out = SendQueue::new(n_sockets, cfg.udp_gso);
    let mut cmsg = nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in);
    let mut driver = Driver::new(core, Ticking::Interval(TICK), BATCH);
    let mut next_report = clock() + cfg.stats_interval;

    // With TCP on, the UDP sockets are in the TCP front end's (edge-triggered) epoll: one
    // wait per turn for both transports. A socket stays marked readable until a receive
    // comes back short.
    let mut ready = vec![(false, false); n_sockets];
    if let Some(t) = tcp.as_deref_mut() {
        let fds: Vec<_> = (0..n_sockets).map(|i| sockets.socket(i).as_fd()).collect();
        t.register_udp(&fds).map_err(|source| SocketError::Io {
            what: "adding the UDP sockets to the TCP poll",
            source,
        })?;
    }
    while !stop.load(Ordering::Relaxed) {
        match tcp.as_deref_mut() {
            Some(t) => {
                let timeout = if ready.iter().any(|r| r.0) {
                    Duration::ZERO
                } else {
                    Duration::from_millis(1)
                };
                t.wait(timeout, &mut ready)
                    .map_err(|source| SocketError::Io {
                        what: "poll",
                        source,
                    })?;
            }
            None => {
                let mut fds: Vec<PollFd<'_>> = (0..n_sockets)
                    .map(|i| PollFd::new(sockets.socket(i).as_fd(), PollFlags::POLLIN))
                    .collect();
                match nix::poll::poll(&mut fds, PollTimeout::from(1u8)) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => return Err(io("poll")(e)),
                }
                for (r, f) in ready.iter_mut().zip(&fds) {
                    let ev = f.revents().unwrap_or(PollFlags::empty());
                    *r = (
                        ev.contains(PollFlags::POLLIN),
                        ev.contains(PollFlags::POLLERR),
                    );
                }
            }
        }
        let now = clock();
        for (ix, slot) in ready.iter_mut().enumerate() {
            let (readable, error) = *slot;
            slot.1 = false;
            if error && ix > 0 {
                let core = driver.pipeline_mut();
                drain_errors(sockets.socket(ix), &mut cmsg, core, now, &mut counters);
            }
            if !readable {
                continue;
            }
            let local = if ix == 0 {
                sockets.vip
            } else {
                SocketAddrV4::new(sockets.local_ip, sockets.source_ports[ix - 1])
            };
            // One batch per socket per round keeps the sockets fair.
            let received: Vec<(usize, SocketAddrV4)> = {
                let mut slices: Vec<[IoSliceMut<'_>; 1]> = frames
                    .iter_mut()
                    .map(|f| [IoSliceMut::new(&mut f.buf[HEADROOM..])])
                    .collect();
                counters.recv_calls += 1;
                match recvmmsg(
                    sockets.socket(ix).as_raw_fd(),
                    &mut recv_headers,
                    slices.iter_mut(),
                    MsgFlags::MSG_DONTWAIT,
                    None,
                ) {
                    Ok(res) => {
                        let got: Vec<(usize, Option<SockaddrIn>)> =
                            res.map(|m| (m.bytes, m.address)).collect();
                        if got.len() < BATCH {
                            slot.0 = false; // drained
                        }
                        got.into_iter()
                            .filter_map(|(n, a)| a.map(|a| (n, SocketAddrV4::from(a))))
                            .collect()
                    }
                    Err(Errno::EAGAIN) => {
                        slot.0 = false;
                        Vec::new()
                    }
                    Err(Errno::EINTR) => Vec::new(),
                    Err(Errno::ECONNREFUSED | Errno::EHOSTUNREACH | Errno::ENETUNREACH) => {
                        let core = driver.pipeline_mut();
                        drain_errors(sockets.socket(ix), &mut cmsg, core, now, &mut counters);
                        Vec::new()
                    }
                    Err(e) => return Err(io("recvmmsg")(e)),
                }
            };
            // Frames from the datagrams, handed to the core as bursts: a datagram whose
            // frame cannot be built ends one.
            let mut first = 0;
            for (i, &(len, peer)) in received.iter().enumerate() {
                counters.datagrams_in += 1;
                let len = len.min(MAX_DATAGRAM);
                let ep = UdpEndpoints {
                    src_mac: PEER_MAC,
                    dst_mac: KVLB_MAC,
                    vlan: None,
                    inner_vlan: None,
                    src_ip: *peer.ip(),
                    dst_ip: *local.ip(),
                    src_port: peer.port(),
                    dst_port: local.port(),
                    ttl: 64,
                };
                match ep.emit_headers(&mut frames[i].buf, len, 0) {
                    Ok(flen) => frames[i].len = flen,
                    Err(_) => {
                        counters.unsendable += 1;
                        let burst = &mut frames[first..i];
                        handle_burst(&mut driver, now, burst, &mut out, sockets, &mut counters);
                        first = i + 1;
                    }
                }
            }
            let burst = &mut frames[first..received.len()];
            handle_burst(&mut driver, now, burst, &mut out, sockets, &mut counters);
            driver.drain(now, &mut |_, _, f| {
                send_emitted(tcp.as_deref_mut(), now, f, &mut out, sockets, &mut counters)
            });
        }
        if let Some(t) = tcp.as_deref_mut() {
            t.run(&mut driver, now, &mut |f| {
                out.push(sockets, f, &mut counters)
            });
        }
        driver.tick(now, &mut |_, _, f| {
            send_emitted(tcp.as_deref_mut(), now, f, &mut out, sockets, &mut counters)
        });
        if let Some(t) = tcp.as_deref_mut() {
            t.flush();
        }
        out.flush(sockets, &mut counters);
        if !cfg.stats_interval.is_zero() && now >= next_report {
            report(full_report(&mut driver, tcp.as_deref(), now), &counters);
            next_report = now + cfg.stats_interval;
        }
    }
    report(full_report(&mut driver, tcp.as_deref(), clock()), &counters);
    Ok(counters)
}

/// A frame the core emitted (outside a burst's verdicts): through the TCP front end when
/// there is one (a TCP client's reply, kvlb's own request on a backend connection), else
/// as a datagram.
fn send_emitted(
    tcp: Option<&mut super::tcp::TcpFront>,
    now: Instant,
    frame: &[u8],
    out: &mut SendQueue,
    sockets: &Sockets,
    counters: &mut SocketCounters,
) {
    match tcp {
        Some(t) => t.send_frame(now, frame, &mut |f| out.push(sockets, f, counters)),
        None => out.push(sockets, frame, counters),
    }
}

/// The core's report, with the TCP front end's counters.
fn full_report(
    driver: &mut Driver<'_, Core>,
    tcp: Option<&super::tcp::TcpFront>,
    now: Instant,
) -> Report {
    let mut r = driver.pipeline_mut().report(now);
    r.tcp = tcp.map(|t| t.counters());
    r
}

/// Hands a burst of frames to the core and queues the ones it sends on (every verdict but
/// a drop: the frame's addresses say which socket sends it where).
fn handle_burst(
    driver: &mut Driver<'_, Core>,
    now: Instant,
    frames: &mut [DatagramFrame],
    out: &mut SendQueue,
    sockets: &Sockets,
    counters: &mut SocketCounters,
) {
    if frames.is_empty() {
        return;
    }
    let verdicts = driver.process_burst(now, PORT, frames);
    for (frame, verdict) in frames.iter().zip(verdicts) {
        match verdict {
            Verdict::Out(_) | Verdict::ToNf(_) | Verdict::Next => {
                out.push(sockets, frame.bytes(), counters)
            }
            Verdict::Drop(_) => {}
        }
    }
}

/// Reads queued ICMP errors of a backend socket and tells the core which backend is
/// unreachable.
fn drain_errors(
    sock: &UdpSocket,
    cmsg: &mut Vec<u8>,
    core: &mut Core,
    now: Instant,
    counters: &mut SocketCounters,
) {
    let mut buf = [0u8; 64];
    loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<SockaddrIn>(
            sock.as_raw_fd(),
            &mut iov,
            Some(cmsg),
            MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(m) => m,
            Err(_) => return,
        };
        let dest = msg.address.map(SocketAddrV4::from);
        let Ok(cmsgs) = msg.cmsgs() else { return };
        for c in cmsgs {
            if let ControlMessageOwned::Ipv4RecvErr(err, _) = c {
                let unreachable = err.ee_origin == libc::SO_EE_ORIGIN_ICMP
                    && err.ee_type == 3 // ICMP destination unreachable
                    && matches!(err.ee_code, 1 | 3); // host or port unreachable
                if let (true, Some(addr)) = (unreachable, dest) {
                    counters.icmp_errors += 1;
                    core.on_unreachable(now, addr);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::McHeader;

    fn peer(n: u8, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, n), port)
    }

    /// A queue of (peer, range) with the given datagram lengths, laid end to end.
    fn queue(items: &[(SocketAddrV4, usize)]) -> Vec<(SocketAddrV4, std::ops::Range<usize>)> {
        let mut at = 0;
        items
            .iter()
            .map(|&(p, len)| {
                at += len;
                (p, at - len..at)
            })
            .collect()
    }

    fn plan(q: &mut [(SocketAddrV4, std::ops::Range<usize>)], gso: bool) -> Vec<Send> {
        let mut out = Vec::new();
        plan_sends(q, gso, &mut out);
        out
    }

    #[test]
    fn equal_datagrams_to_one_peer_become_one_gso_message() {
        let a = peer(1, 1000);
        let mut q = queue(&[(a, 36); 5]);
        assert_eq!(
            plan(&mut q, true),
            [Send {
                first: 0,
                count: 5,
                segment: 36
            }]
        );
        // Off: one plain datagram each.
        let p = plan(&mut q, false);
        assert_eq!(p.len(), 5);
        assert!(p.iter().all(|s| s.count == 1 && s.segment == 0));
    }

    #[test]
    fn a_shorter_datagram_ends_a_message_and_a_longer_one_starts_the_next() {
        let a = peer(1, 1000);
        let mut q = queue(&[
            (a, 1408),
            (a, 1408),
            (a, 500),
            (a, 1408),
            (a, 600),
            (a, 700),
        ]);
        let p = plan(&mut q, true);
        assert_eq!(
            p,
            [
                Send {
                    first: 0,
                    count: 3,
                    segment: 1408
                },
                Send {
                    first: 3,
                    count: 2,
                    segment: 1408
                },
                Send {
                    first: 5,
                    count: 1,
                    segment: 0
                },
            ]
        );
    }

    #[test]
    fn peers_are_grouped_stably_and_limits_hold() {
        let (a, b) = (peer(1, 1000), peer(2, 1000));
        let mut q = queue(&[(b, 10), (a, 11), (b, 12), (a, 13)]);
        let lens: Vec<usize> = {
            let p = plan(&mut q, true);
            assert!(p.iter().all(|s| s.count == 1)); // sizes all differ
            q.iter().map(|(_, r)| r.len()).collect()
        };
        // Per peer the original order survives.
        assert_eq!(lens, [11, 13, 10, 12]);
        // At most 64 segments, and nothing above one MTU's payload goes as GSO.
        let mut q = queue(&[(a, 100); 130]);
        let p = plan(&mut q, true);
        assert_eq!(p.iter().map(|s| s.count).collect::<Vec<_>>(), [64, 64, 2]);
        let mut q = queue(&[(a, GSO_MAX_SEGMENT + 1); 3]);
        assert!(plan(&mut q, true).iter().all(|s| s.segment == 0));
        // At most 65507 bytes in one message.
        let mut q = queue(&[(a, 1400); 64]);
        let p = plan(&mut q, true);
        assert!(p.iter().all(|s| s.count * 1400 <= GSO_MAX_BYTES));
        assert_eq!(p.iter().map(|s| s.count).sum::<usize>(), 64);
    }

    /// kvlb's sockets on 127.0.0.1 and a peer to send to, in the caller's network namespace.
    struct Loopback {
        sockets: Sockets,
        rx: UdpSocket,
        ep: UdpEndpoints,
        /// The datagrams queued so far, as the peer must receive them.
        sent: Vec<Vec<u8>>,
    }

    impl Loopback {
        fn new() -> Loopback {
            let cfg = Config::from_args([
                "--backend",
                "127.0.0.1:1",
                "--source-port-base",
                "0",
                "--source-ports",
                "1",
            ])
            .unwrap();
            let sockets = Sockets::bind(&cfg, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).unwrap();
            let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
            rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let std::net::SocketAddr::V4(to) = rx.local_addr().unwrap() else {
                unreachable!()
            };
            let ep = UdpEndpoints {
                src_mac: KVLB_MAC,
                dst_mac: PEER_MAC,
                vlan: None,
                inner_vlan: None,
                src_ip: *sockets.vip().ip(),
                dst_ip: *to.ip(),
                src_port: sockets.vip().port(),
                dst_port: to.port(),
                ttl: 64,
            };
            Loopback {
                sockets,
                rx,
                ep,
                sent: Vec::new(),
            }
        }

        /// Queues a frame from the VIP to the peer carrying request id `id` and `body`.
        fn queue(&mut self, out: &mut SendQueue, c: &mut SocketCounters, id: u16, body: &[u8]) {
            let mut buf = vec![0u8; 2048];
            let n = self
                .ep
                .emit_message(&mut buf, id, McHeader::single(id), body)
                .unwrap();
            out.push(&self.sockets, &buf[..n], c);
            let mut d = McHeader::single(id).to_bytes().to_vec();
            d.extend_from_slice(body);
            self.sent.push(d);
        }

        /// Receives as many datagrams as were queued; they must be exactly those, in order.
        fn check_received(&self) {
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            for _ in 0..self.sent.len() {
                let (n, _) = self.rx.recv_from(&mut buf).expect("every datagram arrives");
                got.push(buf[..n].to_vec());
            }
            assert_eq!(got, self.sent);
        }
    }

    /// Real sockets: whatever the plan, the peer receives every datagram once, whole and
    /// in order per peer.
    #[test]
    fn gso_sends_arrive_as_the_datagrams_queued() {
        for gso in [true, false] {
            let mut lo = Loopback::new();
            let mut out = SendQueue::new(2, gso);
            let mut counters = SocketCounters::default();
            // 70 equal messages (two GSO sends), then a shorter and a longer one.
            for i in 0..72u16 {
                let body = match i {
                    70 => b"END\r\n".to_vec(),
                    71 => vec![b'x'; 1200],
                    _ => format!("VALUE k{i:03} 0 1\r\nv\r\nEND\r\n").into_bytes(),
                };
                lo.queue(&mut out, &mut counters, i, &body);
            }
            out.flush(&lo.sockets, &mut counters);
            assert_eq!(counters.datagrams_out, 72, "gso {gso}");
            assert_eq!(counters.send_errors + counters.gso_fallbacks, 0);
            lo.check_received();
            if gso {
                // 70 + the shorter one in two GSO sends, the longer one alone.
                assert!(
                    counters.send_calls <= 3,
                    "{} send calls",
                    counters.send_calls
                );
            }
        }
    }

    /// Where the kernel refuses GSO (here: a segment larger than the device's MTU allows),
    /// the queue falls back to plain sends for good and nothing is lost. Runs in a network
    /// namespace whose loopback has a 1000-byte MTU; needs root and `ip`, else it says
    /// SKIPPED and passes.
    #[test]
    fn a_refused_gso_send_falls_back_to_plain_datagrams() {
        use crate::test_skip::{skip, Need};
        let skip = |why: &str| skip("network namespaces", Need::Installed, why);
        let ns = format!("kvlbgso{}", std::process::id());
        let ip = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        if !ip(&["netns", "add", &ns]) {
            return skip("`ip netns add` failed (needs root and iproute2)");
        }
        struct Remove(String);
        impl Drop for Remove {
            fn drop(&mut self) {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "del", &self.0])
                    .status();
            }
        }
        let _remove = Remove(ns.clone());
        assert!(ip(&["-n", &ns, "link", "set", "lo", "mtu", "1000", "up"]));
        let path = format!("/var/run/netns/{ns}");
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(&path).unwrap();
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                let mut lo = Loopback::new();
                let mut out = SendQueue::new(2, true);
                let mut counters = SocketCounters::default();
                // Two flushes of 5 datagrams of 1100 bytes: over the MTU as GSO segments
                // (refused), fine as plain datagrams (fragmented by the kernel).
                for round in 0..2u16 {
                    for i in 0..5u16 {
                        let body = vec![b'a' + (round * 5 + i) as u8; 1100 - 8];
                        lo.queue(&mut out, &mut counters, i, &body);
                    }
                    out.flush(&lo.sockets, &mut counters);
                }
                assert_eq!(counters.gso_fallbacks, 1, "{counters:?}");
                assert_eq!(counters.datagrams_out, 10, "{counters:?}");
                assert_eq!(counters.send_errors, 0);
                lo.check_received();
            })
            .join()
            .unwrap()
        });
    }
}
