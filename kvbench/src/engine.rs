//! The run: sockets per thread, the optional load phase, the measured phase with closed-
//! or open-loop pacing, per-second interval reports merged across threads, and the final
//! totals.
//!
//! Each worker thread owns its sockets (one per connection per server) and an epoll set,
//! and loops: draw and queue the requests that are due, send them in batches, wait for
//! replies (epoll, with a sub-millisecond `ppoll` when the next open-loop send is near),
//! read them in batches, expire the ones that are late. Threads share nothing on the
//! request path but the per-key version words ([`super::validate::KeyVersions`]).
//!
//! Owns: threads, sockets, time. Must not: format output (that is [`super::report`]'s and
//! the binary's job).

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use nix::poll::{ppoll, PollFd, PollFlags};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::time::TimeSpec;

use super::config::{LoopMode, ServerSpec, Settings, Transport};
use super::exchange::{
    Books, Counters, KeyRef, Kind, Pending, RequestBuilder, ServerCounters, Shared,
};
use super::rate::{Lag, Schedule};
use super::report::{IntervalReport, LoadSummary, ServerInterval, Summary, Totals};
use super::stats::{fetch_stats, ServerStats, StatsDelta, StatsError};
use super::tcp::{self, Change, TcpConn};
use super::udp::{UdpConn, UdpScratch};
use super::validate::KeyVersions;
use super::workload::{KeySpace, Mix, OpKind, OpStream, Shifts, WorkloadError};
use kvlb::random::{mix64, Rng};
use kvlb::ring::{KetamaRing, RingServer};

const SECOND_NS: u64 = 1_000_000_000;
/// How often in-flight requests are checked for timeouts.
const EXPIRE_EVERY_NS: u64 = 5_000_000;
/// Below this, waiting for the next open-loop send is done by polling, not sleeping.
const SPIN_NS: u64 = 20_000;
/// Longest blocking wait in a UDP receive (a thread's only socket, closed loop).
const UDP_WAIT: Duration = Duration::from_millis(2);

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot resolve server {server}: {reason}")]
    Resolve { server: String, reason: String },
    #[error("cannot open a {transport} socket to {server}: {source}")]
    Connect {
        server: String,
        transport: Transport,
        #[source]
        source: std::io::Error,
    },
    #[error("key space: {0}")]
    Workload(#[from] WorkloadError),
    #[error("reading stats of {server}: {source}")]
    Stats {
        server: String,
        #[source]
        source: StatsError,
    },
    #[error("{0}")]
    System(String),
    #[error("a worker thread failed: {0}")]
    Worker(String),
    #[error(
        "load phase: no server answered a {transport} request in {seconds} s \
         (is {transport} on there? memcached serves UDP only with -U PORT)"
    )]
    Unanswered { seconds: u64, transport: Transport },
}

/// A load phase ends once this long has passed without one reply.
const LOAD_SILENCE_NS: u64 = 5 * SECOND_NS;

fn sys(what: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::System(format!("{what}: {e}"))
}

/// Resolves a server spec to its first address.
pub fn resolve(spec: &ServerSpec) -> Result<SocketAddr, BenchError> {
    let err = |reason: String| BenchError::Resolve {
        server: spec.to_string(),
        reason,
    };
    let host = spec.host.trim_start_matches('[').trim_end_matches(']');
    (host, spec.port)
        .to_socket_addrs()
        .map_err(|e| err(e.to_string()))?
        .next()
        .ok_or_else(|| err("no address".into()))
}

/// Reads every server's stats (the demo and scripts use this through `--stats-of`).
pub fn read_stats(
    servers: &[ServerSpec],
    transport: Transport,
    timeout: Duration,
) -> Result<Vec<ServerStats>, BenchError> {
    servers
        .iter()
        .map(|s| {
            let addr = resolve(s)?;
            fetch_stats(addr, transport, timeout).map_err(|source| BenchError::Stats {
                server: s.to_string(),
                source,
            })
        })
        .collect()
}

/// The data of one thread for one interval.
#[derive(Debug)]
struct Snapshot {
    counters: Counters,
    lag: Lag,
    hist: Histogram<u64>,
    servers: Vec<ServerCounters>,
}

impl Snapshot {
    fn empty(servers: usize) -> Snapshot {
        Snapshot {
            counters: Counters::default(),
            lag: Lag::default(),
            hist: super::exchange::new_histogram(),
            servers: vec![ServerCounters::default(); servers],
        }
    }

    fn merge(&mut self, o: &Snapshot) {
        self.counters.merge(&o.counters);
        self.lag.merge(&o.lag);
        let _ = self.hist.add(&o.hist);
        for (a, b) in self.servers.iter_mut().zip(&o.servers) {
            a.merge(b);
        }
    }
}

enum Msg {
    Interval {
        index: u32,
        snap: Snapshot,
    },
    LoadDone {
        snap: Snapshot,
    },
    Final {
        snap: Snapshot,
        unfinished: u64,
        end_ns: u64,
    },
}

/// One connection's request source.
struct Conn {
    ops: OpStream,
    schedule: Option<Schedule>,
    /// Requests still to issue (`--requests`, or the keys of a load range).
    budget: Option<u64>,
    /// Next key of the load range.
    load_next: u32,
    /// Don't issue before this (a TCP connection is down).
    blocked_until: u64,
}

/// Sockets of one thread: index `conn * servers + server`.
enum Io {
    Udp(Vec<UdpConn>),
    Tcp(Vec<TcpConn>),
}

struct Worker {
    shared: Arc<Shared>,
    settings: Arc<Settings>,
    ring: Option<Arc<KetamaRing>>,
    nservers: usize,
    io: Io,
    epoll: Epoll,
    builder: RequestBuilder,
    books: Books,
    conns: Vec<Conn>,
    /// Sockets with queued requests.
    dirty: Vec<usize>,
    dirty_mark: Vec<bool>,
    route: Vec<(u16, u32)>,
    name_buf: Vec<u8>,
    /// One UDP socket per server for all connections of the thread.
    udp_per_thread: bool,
    tx: mpsc::Sender<Msg>,
    /// Global index of this thread's first connection.
    conn_base: u32,
    thread: u32,
}

/// How a phase runs.
struct Phase {
    load: bool,
    /// Stop issuing at this time (ns since the phase start).
    end_ns: Option<u64>,
    report: bool,
}

/// Runs a benchmark; `on_interval` sees each second's merged report (on the calling
/// thread) as it completes.
pub fn run(
    settings: &Settings,
    on_interval: &mut dyn FnMut(&IntervalReport),
) -> Result<Summary, BenchError> {
    let addrs: Vec<SocketAddr> = settings
        .servers
        .iter()
        .map(resolve)
        .collect::<Result<_, _>>()?;
    let ring = if settings.servers.len() > 1 {
        let servers: Vec<RingServer<'_>> = settings
            .servers
            .iter()
            .map(|s| RingServer {
                host: &s.host,
                port: s.port,
                weight: 1,
                live: true,
            })
            .collect();
        Some(Arc::new(
            KetamaRing::new(&servers).map_err(|e| sys("ketama ring", e))?,
        ))
    } else {
        None
    };
    let run_id = settings.run_id.unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        (mix64(t ^ u64::from(std::process::id()).rotate_left(32)) as u32).max(1)
    });
    let space = KeySpace::new(settings.keys, &settings.key_prefix, settings.key_size)?;
    let shared = Arc::new(Shared {
        space,
        versions: settings.validate.then(|| KeyVersions::new(settings.keys)),
        run_id,
        meta: settings.meta,
        value_cap: settings.value_cap(),
    });
    let settings_arc = Arc::new(settings.clone());
    let stats_before = read_stats(
        &settings.stats_servers,
        settings.stats_transport,
        Duration::from_secs(5),
    )?;

    let per_conn_outstanding = match settings.mode {
        LoopMode::Closed { depth } => depth.max(settings.load_depth),
        LoopMode::Open {
            max_outstanding, ..
        } => max_outstanding.max(settings.load_depth),
    };
    let threads = settings.threads as usize;
    let (tx, rx) = mpsc::channel::<Msg>();
    let barrier = Arc::new(Barrier::new(threads + 1));
    let mut workers = Vec::with_capacity(threads);
    for t in 0..threads {
        let io = open_sockets(settings, &addrs, per_conn_outstanding)?;
        workers.push(Worker::new(
            t as u32,
            shared.clone(),
            settings_arc.clone(),
            ring.clone(),
            io,
            tx.clone(),
        )?);
    }
    drop(tx);
    let mut handles = Vec::with_capacity(threads);
    for mut w in workers {
        let barrier = barrier.clone();
        let h = std::thread::Builder::new()
            .name(format!("kvbench-{}", w.thread))
            .spawn(move || {
                // Open-loop sends are timed to microseconds; the default 50 µs timer slack
                // would make every sleep late.
                let _ = nix::sys::prctl::set_timerslack(1_000);
                // Per thread: nix's batch headers hold raw pointers and stay on their thread.
                let mut scratch = UdpScratch::default();
                barrier.wait();
                if w.settings.load {
                    w.run_phase(
                        &mut scratch,
                        &Phase {
                            load: true,
                            end_ns: None,
                            report: false,
                        },
                    );
                    barrier.wait();
                }
                let end_ns = w.settings.duration.map(|d| {
                    (u64::from(w.settings.warmup_secs) * SECOND_NS)
                        .saturating_add(d.as_nanos().min(u128::from(u64::MAX)) as u64)
                });
                w.run_phase(
                    &mut scratch,
                    &Phase {
                        load: false,
                        end_ns,
                        report: true,
                    },
                );
            })
            .map_err(|e| sys("spawning a worker thread", e))?;
        handles.push(h);
    }

    barrier.wait();
    let load = if settings.load {
        let t0 = Instant::now();
        barrier.wait();
        let seconds = t0.elapsed().as_secs_f64();
        let mut snap = Snapshot::empty(addrs.len());
        for _ in 0..threads {
            match rx.recv() {
                Ok(Msg::LoadDone { snap: s }) => snap.merge(&s),
                _ => {
                    return Err(BenchError::Worker(
                        "load phase ended without a report".into(),
                    ))
                }
            }
        }
        if snap.counters.completed == 0 {
            return Err(BenchError::Unanswered {
                seconds: LOAD_SILENCE_NS / SECOND_NS,
                transport: settings.transport,
            });
        }
        Some(LoadSummary::new(settings.keys, seconds, &snap.counters))
    } else {
        None
    };
    let cpu_start = cpu_seconds();
    let wall_start = Instant::now();
    let poller = if settings.stats_csv.is_some() && !settings.stats_servers.is_empty() {
        let servers: Vec<(String, SocketAddr)> = settings
            .stats_servers
            .iter()
            .map(|s| resolve(s).map(|a| (s.to_string(), a)))
            .collect::<Result<_, _>>()?;
        let stop = Arc::new(AtomicBool::new(false));
        let transport = settings.stats_transport;
        let stop2 = stop.clone();
        let h = std::thread::Builder::new()
            .name("kvbench-stats".into())
            .spawn(move || poll_stats(&servers, transport, wall_start, &stop2))
            .map_err(|e| sys("spawning the stats thread", e))?;
        Some((h, stop))
    } else {
        None
    };

    // Merge per-thread intervals in order; totals leave warm-up intervals out.
    let warmup = settings.warmup_secs;
    let mut pending: std::collections::BTreeMap<u32, (usize, Snapshot)> = Default::default();
    let mut next_emit = 0u32;
    let mut total = Snapshot::empty(addrs.len());
    let mut finals = 0;
    let mut unfinished = 0;
    let mut end_ns = 0u64;
    let mut series = Vec::new();
    // Requests sent over the whole phase, warm-up included (for CPU per request).
    let mut sent_all = 0u64;
    while finals < threads {
        let msg = rx.recv().map_err(|_| {
            BenchError::Worker("a worker thread stopped without its final report".into())
        })?;
        match msg {
            Msg::Interval { index, snap } => {
                let entry = pending
                    .entry(index)
                    .or_insert_with(|| (0, Snapshot::empty(addrs.len())));
                entry.0 += 1;
                entry.1.merge(&snap);
                while pending.get(&next_emit).is_some_and(|e| e.0 == threads) {
                    let Some((_, snap)) = pending.remove(&next_emit) else {
                        break;
                    };
                    let report = IntervalReport::new(
                        next_emit,
                        next_emit < warmup,
                        &snap.counters,
                        &snap.lag,
                        &snap.hist,
                    );
                    on_interval(&report);
                    series.push(report);
                    sent_all += snap.counters.sent;
                    if next_emit >= warmup {
                        total.merge(&snap);
                    }
                    next_emit += 1;
                }
            }
            Msg::Final {
                snap,
                unfinished: u,
                end_ns: e,
            } => {
                finals += 1;
                unfinished += u;
                end_ns = end_ns.max(e);
                sent_all += snap.counters.sent;
                total.merge(&snap);
            }
            Msg::LoadDone { .. } => {}
        }
    }
    // Intervals some thread never closed (it ended first) go into the totals unprinted.
    for (index, (_, snap)) in pending {
        sent_all += snap.counters.sent;
        if index >= warmup {
            total.merge(&snap);
        }
    }
    let cpu = cpu_seconds() - cpu_start;
    let server_series = match poller {
        Some((h, stop)) => {
            stop.store(true, Ordering::Relaxed);
            h.join()
                .map_err(|_| BenchError::Worker("the stats thread panicked".into()))?
        }
        None => Vec::new(),
    };
    for h in handles {
        h.join()
            .map_err(|_| BenchError::Worker("a worker thread panicked".into()))?;
    }
    let stats_after = read_stats(
        &settings.stats_servers,
        settings.stats_transport,
        Duration::from_secs(5),
    )?;
    let server_stats = settings
        .stats_servers
        .iter()
        .zip(stats_before.iter().zip(&stats_after))
        .map(|(s, (b, a))| StatsDelta::between(&s.to_string(), b, a))
        .collect();

    let warmup_ns = u64::from(warmup) * SECOND_NS;
    let measured_ns = match settings.duration {
        Some(d) => d.as_nanos() as u64,
        None => end_ns.saturating_sub(warmup_ns),
    };
    let mut summary = Summary::new(
        settings,
        run_id,
        Totals {
            counters: total.counters,
            lag: total.lag,
            hist: total.hist,
            servers: total.servers,
        },
        measured_ns.max(1),
        (cpu, sent_all),
        unfinished,
        load,
        server_stats,
        series,
    );
    summary.server_series = server_series;
    Ok(summary)
}

/// Reads every server's stats once a second (from `start`) until `stop`, and returns the
/// per-second differences: how the servers' own load moved during the run.
fn poll_stats(
    servers: &[(String, SocketAddr)],
    transport: Transport,
    start: Instant,
    stop: &AtomicBool,
) -> Vec<ServerInterval> {
    let read = || -> Vec<Option<ServerStats>> {
        servers
            .iter()
            .map(|(_, a)| fetch_stats(*a, transport, Duration::from_millis(500)).ok())
            .collect()
    };
    let mut prev = read();
    let mut out = Vec::new();
    let mut second = 0u32;
    loop {
        let target = start + Duration::from_secs(u64::from(second) + 1);
        while Instant::now() < target {
            if stop.load(Ordering::Relaxed) {
                return out;
            }
            std::thread::sleep(
                target
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(20)),
            );
        }
        let now = read();
        for ((name, _), (b, a)) in servers.iter().zip(prev.iter().zip(&now)) {
            if let (Some(b), Some(a)) = (b, a) {
                let d = StatsDelta::between(name, b, a);
                out.push(ServerInterval {
                    second: second + 1,
                    server: name.clone(),
                    cmd_get: d.cmd_get,
                    get_hits: d.get_hits,
                    get_misses: d.get_misses,
                    cmd_set: d.cmd_set,
                });
            }
        }
        prev = now;
        second += 1;
    }
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 * 1e-6;
            tv(u.user_time()) + tv(u.system_time())
        }
        Err(_) => 0.0,
    }
}

fn open_sockets(
    settings: &Settings,
    addrs: &[SocketAddr],
    max_outstanding: u32,
) -> Result<Io, BenchError> {
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    // UDP sockets per thread: all connections share one socket per server (their
    // requests batch into one sendmmsg/recvmmsg), or one socket per connection.
    let (sets, per_socket) = if settings.transport == Transport::Udp && settings.udp_per_thread {
        (1, (max_outstanding * settings.connections).min(16_384))
    } else {
        (settings.connections, max_outstanding)
    };
    for _ in 0..sets {
        for (s, (&addr, spec)) in addrs.iter().zip(&settings.servers).enumerate() {
            let err = |source| BenchError::Connect {
                server: spec.to_string(),
                transport: settings.transport,
                source,
            };
            match settings.transport {
                Transport::Udp => {
                    let bind: SocketAddr = if addr.is_ipv4() {
                        SocketAddr::from(([0, 0, 0, 0], 0))
                    } else {
                        SocketAddr::from(([0u16; 8], 0))
                    };
                    let sock = UdpSocket::bind(bind).map_err(err)?;
                    sock.connect(addr).map_err(err)?;
                    // Calls are non-blocking by flag; the one blocking wait
                    // (UdpConn::receive_wait) returns after this at the latest.
                    sock.set_read_timeout(Some(UDP_WAIT)).map_err(err)?;
                    udp.push(UdpConn::new(sock, s as u16, per_socket));
                }
                Transport::Tcp => {
                    let stream = tcp::connect(addr, settings.timeout.max(Duration::from_secs(1)))
                        .map_err(err)?;
                    tcp.push(TcpConn::new(
                        stream,
                        addr,
                        s as u16,
                        settings.timeout.min(Duration::from_secs(1)),
                    ));
                }
            }
        }
    }
    Ok(match settings.transport {
        Transport::Udp => Io::Udp(udp),
        Transport::Tcp => Io::Tcp(tcp),
    })
}

impl Worker {
    fn new(
        thread: u32,
        shared: Arc<Shared>,
        settings: Arc<Settings>,
        ring: Option<Arc<KetamaRing>>,
        io: Io,
        tx: mpsc::Sender<Msg>,
    ) -> Result<Worker, BenchError> {
        let nservers = settings.servers.len();
        let epoll =
            Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| sys("epoll_create", e))?;
        match &io {
            Io::Udp(v) => {
                for (i, c) in v.iter().enumerate() {
                    epoll
                        .add(c.socket(), EpollEvent::new(EpollFlags::EPOLLIN, i as u64))
                        .map_err(|e| sys("epoll_ctl", e))?;
                }
            }
            Io::Tcp(v) => {
                for (i, c) in v.iter().enumerate() {
                    if let Some(s) = c.stream() {
                        epoll
                            .add(s, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))
                            .map_err(|e| sys("epoll_ctl", e))?;
                    }
                }
            }
        }
        let conns = settings.connections as usize;
        let udp_per_thread = settings.transport == Transport::Udp && settings.udp_per_thread;
        let nsock = if udp_per_thread {
            nservers
        } else {
            conns * nservers
        };
        Ok(Worker {
            books: Books::new(nservers, conns),
            conns: Vec::new(),
            conn_base: thread * settings.connections,
            shared,
            settings,
            ring,
            nservers,
            io,
            epoll,
            builder: RequestBuilder::default(),
            dirty: Vec::with_capacity(nsock),
            dirty_mark: vec![false; nsock],
            route: Vec::new(),
            name_buf: Vec::with_capacity(64),
            udp_per_thread,
            tx,
            thread,
        })
    }

    /// Sets up the connections' request sources for a phase.
    fn setup_conns(&mut self, phase: &Phase) {
        let s = &self.settings;
        let total_conns = u64::from(s.total_connections());
        let shifts = Arc::new(Shifts {
            at_ns: s
                .shift_at
                .iter()
                .map(|d| u64::from(s.warmup_secs) * SECOND_NS + d.as_nanos() as u64)
                .collect(),
            by: s.shift_by,
        });
        let space = Arc::new(self.shared.space.clone());
        let mix = Mix {
            get_ratio: s.get_ratio,
            multiget: s.multiget,
            value_size: s.value_size,
            value_min: super::value::HEADER_LEN as u32,
            value_max: u32::MAX,
        };
        let keys = u64::from(s.keys);
        self.conns = (0..s.connections)
            .map(|c| {
                let g = u64::from(self.conn_base + c);
                let rng = Rng::derive(s.seed, &[u64::from(phase.load), g]);
                let ops = OpStream::new(
                    rng,
                    s.dist,
                    space.clone(),
                    shifts.clone(),
                    mix.clone(),
                    keys * g / total_conns,
                );
                let (budget, load_next) = if phase.load {
                    let lo = keys * g / total_conns;
                    let hi = keys * (g + 1) / total_conns;
                    (Some(hi - lo), lo as u32)
                } else {
                    let budget = s
                        .requests
                        .map(|n| n / total_conns + u64::from(g < n % total_conns));
                    (budget, 0)
                };
                let schedule = match (phase.load, s.mode) {
                    (false, LoopMode::Open { rate, arrival, .. }) => Some(Schedule::new(
                        arrival,
                        rate / total_conns as f64,
                        0,
                        g as f64 / total_conns as f64,
                        Rng::derive(s.seed, &[2, g]),
                    )),
                    _ => None,
                };
                Conn {
                    ops,
                    schedule,
                    budget,
                    load_next,
                    blocked_until: 0,
                }
            })
            .collect();
    }

    fn limit(&self, phase: &Phase) -> u32 {
        match (phase.load, self.settings.mode) {
            (true, _) => self.settings.load_depth,
            (false, LoopMode::Closed { depth }) => depth,
            (
                false,
                LoopMode::Open {
                    max_outstanding, ..
                },
            ) => max_outstanding,
        }
    }

    fn run_phase(&mut self, scratch: &mut UdpScratch, phase: &Phase) {
        self.setup_conns(phase);
        let start = Instant::now();
        let now_ns = || start.elapsed().as_nanos() as u64;
        let limit = self.limit(phase);
        let timeout_ns = self.settings.timeout.as_nanos() as u64;
        let drain_ns = timeout_ns.min(2 * SECOND_NS);
        let mut interval = 0u32;
        let mut next_expire = EXPIRE_EVERY_NS;
        let mut stopping_at: Option<u64> = None;
        let mut events = [EpollEvent::empty(); 64];
        let mut last_activity = 0u64;
        loop {
            let mut now = now_ns();
            // Interval boundaries.
            if phase.report {
                let idx = (now / SECOND_NS) as u32;
                while interval < idx {
                    let (counters, lag, hist, servers) = self.books.take_interval();
                    let _ = self.tx.send(Msg::Interval {
                        index: interval,
                        snap: Snapshot {
                            counters,
                            lag,
                            hist,
                            servers,
                        },
                    });
                    interval += 1;
                }
            }
            // End of the phase. A load that no server has answered for LOAD_SILENCE_NS
            // ends too (the run then fails, see `run`): with every request timing out it
            // would take hours.
            if stopping_at.is_none() {
                let out_of_time = phase.end_ns.is_some_and(|e| now >= e);
                let out_of_work = self.conns.iter().all(|c| c.budget == Some(0));
                let unanswered =
                    phase.load && now >= LOAD_SILENCE_NS && self.books.counters.completed == 0;
                if out_of_time || out_of_work || unanswered {
                    stopping_at = Some(now);
                }
            }
            if let Some(t) = stopping_at {
                if self.in_flight() == 0 || now >= t + drain_ns {
                    break;
                }
            }
            // Timeouts.
            if now >= next_expire {
                self.expire(now.saturating_sub(timeout_ns), now);
                next_expire = now + EXPIRE_EVERY_NS;
            }
            // Issue what is due.
            let mut next_due = u64::MAX;
            if stopping_at.is_none() {
                for c in 0..self.conns.len() {
                    next_due = next_due.min(self.issue_due(c, now, limit, phase.load));
                }
            }
            self.flush(now, scratch);
            // Wait for replies (or the next send).
            let housekeeping = next_expire
                .min((u64::from(interval) + 1) * SECOND_NS)
                .min(phase.end_ns.unwrap_or(u64::MAX))
                .min(stopping_at.map_or(u64::MAX, |t| t + drain_ns));
            now = now_ns();
            // Only an open-loop send needs waking to the microsecond.
            let precise = next_due < housekeeping;
            let wait_ns = next_due.min(housekeeping).saturating_sub(now);
            if next_due == u64::MAX && wait_ns >= SPIN_NS {
                if let Io::Udp(v) = &mut self.io {
                    if let [conn] = &mut v[..] {
                        // One socket and nothing to send until a reply frees room: wait
                        // in the receive call itself (at most UDP_WAIT, which only
                        // housekeeping can overshoot), no epoll round trip.
                        let spin = self.settings.spin.as_nanos() as u64;
                        if conn.receive_wait(now_ns, &self.shared, &mut self.books, scratch, spin)
                            > 0
                        {
                            last_activity = now;
                        }
                        continue;
                    }
                }
            }
            let n = self.wait(&mut events, wait_ns, precise);
            if n > 0 {
                last_activity = now;
            }
            for ev in &events[..n] {
                let i = ev.data() as usize;
                self.on_ready(i, ev.events(), &now_ns, scratch);
            }
        }
        let end = now_ns().max(last_activity);
        let unfinished = self.abandon();
        let (counters, lag, hist, servers) = self.books.take_interval();
        let snap = Snapshot {
            counters,
            lag,
            hist,
            servers,
        };
        let _ = if phase.load {
            self.tx.send(Msg::LoadDone { snap })
        } else {
            self.tx.send(Msg::Final {
                snap,
                unfinished,
                end_ns: end,
            })
        };
    }

    /// The socket connection `c` uses for `server`.
    #[inline]
    fn sock_index(&self, c: usize, server: u16) -> usize {
        if self.udp_per_thread {
            usize::from(server)
        } else {
            c * self.nservers + usize::from(server)
        }
    }

    fn in_flight(&self) -> usize {
        match &self.io {
            Io::Udp(v) => v.iter().map(UdpConn::in_flight).sum(),
            Io::Tcp(v) => v.iter().map(TcpConn::in_flight).sum(),
        }
    }

    /// Issues connection `c`'s due requests; returns when its next one is due
    /// (`u64::MAX`: when a reply frees room).
    fn issue_due(&mut self, c: usize, now: u64, limit: u32, load: bool) -> u64 {
        loop {
            let conn = &self.conns[c];
            if conn.budget == Some(0) {
                return u64::MAX;
            }
            if conn.blocked_until > now {
                return conn.blocked_until;
            }
            let intended = match &conn.schedule {
                Some(s) => {
                    let due = s.due_ns();
                    if due > now {
                        return due;
                    }
                    due
                }
                None => now,
            };
            if self.books.outstanding[c] >= limit {
                // Open loop: the request waits; its wait counts in its latency.
                return u64::MAX;
            }
            if !self.issue(c, now, intended, load) {
                return self.conns[c].blocked_until.max(now + 1);
            }
            let conn = &mut self.conns[c];
            if let Some(b) = &mut conn.budget {
                *b -= 1;
            }
            if let Some(s) = &mut conn.schedule {
                self.books.lag.record(now.saturating_sub(intended));
                s.advance();
            }
        }
    }

    /// Draws one operation for connection `c` and queues its request(s). False if the
    /// connection cannot send now.
    fn issue(&mut self, c: usize, now: u64, intended: u64, load: bool) -> bool {
        let shared = &*self.shared;
        // Which sockets: refuse up front if one is down.
        let conn = &mut self.conns[c];
        let (kind, size) = if load {
            let k = conn.load_next;
            conn.load_next += 1;
            conn.ops.set_single_key(k);
            (Kind::Set, conn.ops.value_size())
        } else {
            match conn.ops.next(now) {
                OpKind::Get => (Kind::Get, 0),
                OpKind::Set { size } => (Kind::Set, size),
            }
        };
        self.route.clear();
        for &k in conn.ops.keys() {
            let server = match &self.ring {
                Some(ring) => {
                    self.name_buf.clear();
                    shared.space.write_name(k, &mut self.name_buf);
                    ring.server_for_key(&self.name_buf).unwrap_or(0) as u16
                }
                None => 0,
            };
            self.route.push((server, k));
        }
        if let Io::Tcp(v) = &self.io {
            if self
                .route
                .iter()
                .any(|&(s, _)| !v[self.sock_index(c, s)].is_up())
            {
                self.books.counters.connection_errors += 1;
                let conn = &mut self.conns[c];
                conn.blocked_until = now + 100_000_000;
                if load {
                    // Load this key once the connection is back.
                    conn.load_next -= 1;
                }
                return false;
            }
        }
        let mut kind = kind;
        let mut version = 0;
        if kind == Kind::Set {
            if let Some(v) = &shared.versions {
                match v.begin_set(self.route[0].1) {
                    Some(ver) => version = ver,
                    None => {
                        self.books.counters.set_collisions += 1;
                        kind = Kind::Get;
                    }
                }
            }
        }
        let mut size = size;
        if kind == Kind::Set && size > shared.value_cap {
            size = shared.value_cap;
            self.books.counters.values_capped += 1;
        }
        self.route.sort_unstable_by_key(|r| r.0);
        let mut i = 0;
        while i < self.route.len() {
            let server = self.route[i].0;
            let mut j = i;
            while j < self.route.len() && self.route[j].0 == server {
                j += 1;
            }
            let sock = self.sock_index(c, server);
            let keys = &self.route[i..j];
            let builder = &mut self.builder;
            let fill = |p: &mut Pending, out: &mut Vec<u8>| {
                p.kind = kind;
                p.intended_ns = intended;
                p.conn = c as u32;
                p.version = version;
                for &(_, k) in keys {
                    let acked = shared.versions.as_ref().map_or(0, |v| v.state(k).acked);
                    p.keys.push(KeyRef {
                        index: k,
                        acked_at_send: acked,
                        seen: false,
                    });
                }
                match kind {
                    Kind::Get => p.meta_multi = builder.get(out, shared, &p.keys),
                    Kind::Set => builder.set(out, shared, keys[0].1, version, size),
                }
            };
            let queued = match &mut self.io {
                Io::Udp(v) => v[sock].queue(fill),
                Io::Tcp(v) => v[sock].queue(fill),
            };
            if queued {
                self.books.outstanding[c] += 1;
                if !self.dirty_mark[sock] {
                    self.dirty_mark[sock] = true;
                    self.dirty.push(sock);
                }
            } else {
                // No room (cannot happen within the outstanding limit) or down.
                self.books.counters.send_errors += 1;
                if kind == Kind::Set {
                    if let Some(v) = &shared.versions {
                        v.abort_set(keys[0].1, version);
                    }
                }
            }
            i = j;
        }
        true
    }

    fn flush(&mut self, now: u64, scratch: &mut UdpScratch) {
        let shared = &*self.shared;
        for &sock in &self.dirty {
            self.dirty_mark[sock] = false;
            match &mut self.io {
                Io::Udp(v) => v[sock].flush(now, shared, &mut self.books, scratch),
                Io::Tcp(v) => {
                    let conn = &mut v[sock];
                    let before = conn.want_write;
                    conn.flush(now, shared, &mut self.books);
                    if conn.want_write && !before {
                        if let Some(s) = conn.stream() {
                            let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT;
                            let _ = self
                                .epoll
                                .modify(s, &mut EpollEvent::new(flags, sock as u64));
                        }
                    }
                }
            }
        }
        self.dirty.clear();
    }

    /// Waits up to `wait_ns` for readiness (to the microsecond if `precise`, else to
    /// the next millisecond); returns the number of events.
    fn wait(&mut self, events: &mut [EpollEvent], wait_ns: u64, precise: bool) -> usize {
        // UDP: poll for up to --spin-us before sleeping (see Settings::spin).
        let spin = (self.settings.spin.as_nanos() as u64).min(wait_ns);
        let mut wait_ns = wait_ns;
        if matches!(self.io, Io::Udp(_)) && spin > 0 && wait_ns >= SPIN_NS {
            let t0 = Instant::now();
            loop {
                let n = self.epoll.wait(events, EpollTimeout::ZERO).unwrap_or(0);
                if n > 0 {
                    return n;
                }
                let spun = t0.elapsed().as_nanos() as u64;
                if spun >= spin {
                    // Sleep only for what is left of the wait.
                    wait_ns = wait_ns.saturating_sub(spun);
                    break;
                }
                std::hint::spin_loop();
            }
        }
        let timeout = if wait_ns < SPIN_NS {
            EpollTimeout::ZERO
        } else if !precise {
            let ms = wait_ns.div_ceil(1_000_000).min(60_000) as u32;
            EpollTimeout::try_from(ms).unwrap_or(EpollTimeout::MAX)
        } else if wait_ns < 2_000_000 {
            // epoll's timeout is in milliseconds: sleep on the epoll descriptor with ppoll.
            let mut fds = [PollFd::new(self.epoll.0.as_fd(), PollFlags::POLLIN)];
            let ts = TimeSpec::from_duration(Duration::from_nanos(wait_ns - SPIN_NS / 2));
            match ppoll(&mut fds, Some(ts), None) {
                Ok(0) => return 0,
                _ => EpollTimeout::ZERO,
            }
        } else {
            EpollTimeout::try_from(Duration::from_nanos(wait_ns)).unwrap_or(EpollTimeout::MAX)
        };
        self.epoll.wait(events, timeout).unwrap_or(0)
    }

    fn on_ready(
        &mut self,
        i: usize,
        flags: EpollFlags,
        now_ns: &impl Fn() -> u64,
        scratch: &mut UdpScratch,
    ) {
        let shared = &*self.shared;
        match &mut self.io {
            Io::Udp(v) => {
                if let Some(conn) = v.get_mut(i) {
                    conn.receive(now_ns, shared, &mut self.books, scratch);
                }
            }
            Io::Tcp(v) => {
                let Some(conn) = v.get_mut(i) else {
                    return;
                };
                let now = now_ns();
                if flags.contains(EpollFlags::EPOLLOUT) {
                    conn.flush(now, shared, &mut self.books);
                    if !conn.want_write {
                        if let Some(s) = conn.stream() {
                            let _ = self
                                .epoll
                                .modify(s, &mut EpollEvent::new(EpollFlags::EPOLLIN, i as u64));
                        }
                    }
                }
                if flags
                    .intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP)
                {
                    conn.receive(now, shared, &mut self.books);
                }
            }
        }
    }

    fn expire(&mut self, deadline: u64, now: u64) {
        let shared = &*self.shared;
        match &mut self.io {
            Io::Udp(v) => {
                for conn in v.iter_mut() {
                    conn.expire(deadline, shared, &mut self.books);
                }
            }
            Io::Tcp(v) => {
                for (i, conn) in v.iter_mut().enumerate() {
                    conn.expire(deadline, now, shared, &mut self.books);
                    if conn.revive(now) == Change::Reconnected {
                        if let Some(s) = conn.stream() {
                            if let Err(e) = self
                                .epoll
                                .add(s, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))
                            {
                                log::debug!("epoll add after reconnect: {e}");
                            }
                        }
                        let c = i / self.nservers;
                        if let Some(conn) = self.conns.get_mut(c) {
                            conn.blocked_until = 0;
                        }
                    }
                }
            }
        }
    }

    fn abandon(&mut self) -> u64 {
        let shared = &*self.shared;
        match &mut self.io {
            Io::Udp(v) => v
                .iter_mut()
                .map(|c| c.abandon(shared, &mut self.books))
                .sum(),
            Io::Tcp(v) => v
                .iter_mut()
                .map(|c| c.abandon(shared, &mut self.books))
                .sum(),
        }
    }
}
