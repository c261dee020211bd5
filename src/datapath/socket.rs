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
#![forbid(unsafe_code)]

use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    recvmmsg, recvmsg, sendmmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, MultiHeaders,
    SockaddrIn,
};

use crate::clock::Instant;
use crate::config::Config;
use crate::nf::{Core, Dest, Pipeline, Verdict};
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
}

/// A frame in a fixed buffer: the receive buffer, with its headroom and tailroom.
struct SliceFrame<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl FrameBuf for SliceFrame<'_> {
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

/// Per-socket queue of datagrams to send: (destination, frame bytes range in the arena).
struct SendQueue {
    arena: Vec<u8>,
    queues: Vec<Vec<(SocketAddrV4, std::ops::Range<usize>)>>,
}

impl SendQueue {
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

    fn flush(
        &mut self,
        sockets: &Sockets,
        headers: &mut MultiHeaders<SockaddrIn>,
        counters: &mut SocketCounters,
    ) {
        for (ix, q) in self.queues.iter_mut().enumerate() {
            let mut sent = 0;
            while sent < q.len() {
                let chunk = &q[sent..q.len().min(sent + BATCH)];
                let slices: Vec<[IoSlice<'_>; 1]> = chunk
                    .iter()
                    .map(|(_, r)| [IoSlice::new(&self.arena[r.clone()])])
                    .collect();
                let addrs: Vec<Option<SockaddrIn>> = chunk
                    .iter()
                    .map(|(a, _)| Some(SockaddrIn::from(*a)))
                    .collect();
                let fd = sockets.socket(ix).as_raw_fd();
                counters.send_calls += 1;
                match sendmmsg(fd, headers, &slices, &addrs, [], MsgFlags::empty()) {
                    Ok(res) => {
                        let n = res.count().max(1);
                        counters.datagrams_out += n as u64;
                        sent += n;
                    }
                    Err(Errno::EINTR) => {}
                    Err(e) => {
                        // ECONNREFUSED and friends report an earlier ICMP error; skip the
                        // datagram that failed and carry on.
                        log::debug!("sendmmsg: {e}");
                        counters.send_errors += 1;
                        sent += 1;
                    }
                }
            }
            q.clear();
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
    mut report: impl FnMut(Report, &SocketCounters),
) -> Result<SocketCounters, SocketError> {
    let start = std::time::Instant::now();
    let clock = || Instant::from_nanos(start.elapsed().as_nanos() as u64);
    let mut counters = SocketCounters::default();
    let n_sockets = 1 + sockets.backends.len();
    let mut bufs: Vec<Vec<u8>> = (0..BATCH)
        .map(|_| vec![0u8; HEADROOM + MAX_DATAGRAM])
        .collect();
    let mut recv_headers = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    let mut out = SendQueue {
        arena: Vec::with_capacity(BATCH * 2048),
        queues: (0..n_sockets).map(|_| Vec::with_capacity(BATCH)).collect(),
    };
    let mut cmsg = nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in);
    let mut next_tick = clock();
    let mut next_report = clock() + cfg.stats_interval;

    while !stop.load(Ordering::Relaxed) {
        let mut fds: Vec<PollFd<'_>> = (0..n_sockets)
            .map(|i| PollFd::new(sockets.socket(i).as_fd(), PollFlags::POLLIN))
            .collect();
        match nix::poll::poll(&mut fds, PollTimeout::from(1u8)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(io("poll")(e)),
        }
        let ready: Vec<(bool, bool)> = fds
            .iter()
            .map(|f| {
                let r = f.revents().unwrap_or(PollFlags::empty());
                (
                    r.contains(PollFlags::POLLIN),
                    r.contains(PollFlags::POLLERR),
                )
            })
            .collect();
        drop(fds);
        let now = clock();
        for (ix, &(readable, error)) in ready.iter().enumerate() {
            if error && ix > 0 {
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
                let mut slices: Vec<[IoSliceMut<'_>; 1]> = bufs
                    .iter_mut()
                    .map(|b| [IoSliceMut::new(&mut b[HEADROOM..])])
                    .collect();
                counters.recv_calls += 1;
                match recvmmsg(
                    sockets.socket(ix).as_raw_fd(),
                    &mut recv_headers,
                    slices.iter_mut(),
                    MsgFlags::MSG_DONTWAIT,
                    None,
                ) {
                    Ok(res) => res
                        .filter_map(|m| {
                            m.address
                                .map(|a: SockaddrIn| (m.bytes, SocketAddrV4::from(a)))
                        })
                        .collect(),
                    Err(Errno::EAGAIN | Errno::EINTR) => Vec::new(),
                    Err(Errno::ECONNREFUSED | Errno::EHOSTUNREACH | Errno::ENETUNREACH) => {
                        drain_errors(sockets.socket(ix), &mut cmsg, core, now, &mut counters);
                        Vec::new()
                    }
                    Err(e) => return Err(io("recvmmsg")(e)),
                }
            };
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
                let buf = &mut bufs[i];
                let Ok(flen) = ep.emit_headers(buf, len, 0) else {
                    counters.unsendable += 1;
                    continue;
                };
                let mut frame = SliceFrame { buf, len: flen };
                match core.process_frame(now, 0, &mut frame) {
                    Verdict::Out(_) | Verdict::ToNf(_) | Verdict::Next => {
                        out.push(sockets, frame.bytes(), &mut counters)
                    }
                    Verdict::Drop(_) => {}
                }
            }
            core.drain_emitted(&mut |_: Dest, f: &[u8]| out.push(sockets, f, &mut counters));
        }
        if now >= next_tick {
            core.on_tick(now);
            core.drain_emitted(&mut |_: Dest, f: &[u8]| out.push(sockets, f, &mut counters));
            next_tick = now + TICK;
        }
        out.flush(sockets, &mut send_headers, &mut counters);
        if !cfg.stats_interval.is_zero() && now >= next_report {
            report(core.report(now), &counters);
            next_report = now + cfg.stats_interval;
        }
    }
    report(core.report(clock()), &counters);
    Ok(counters)
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
