//! The standalone DPDK datapath: burst receive on every port, each frame through the
//! pipeline, burst transmit per verdict; frames the pipeline emits are copied into fresh
//! mbufs and queued behind the frame whose handling produced them.
//!
//! Ordering (what makes runs over the same input reproducible): ports are polled in the
//! order given; frames are handled in arrival order; per port, transmitted frames keep the
//! order in which they were queued, and everything queued in one poll round is sent before
//! the next round. With [`ClockSource::RxTimestamp`] the pipeline's clock is the frames'
//! capture time and timers follow the replay datapath's rule
//! ([`crate::datapath::replay`]): before each frame, `on_tick` runs at every tick interval
//! of capture time since the previous tick (at most 10 000 in a row, then once at the frame's
//! time); then `process_frame`; emitted frames are drained after each call. No wall-clock
//! time enters the pipeline, so a pcap gives the same decisions on every run, and the same
//! as the replay datapath.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{free_bulk, Mbuf, Mempool, Port, TscClock};
use crate::clock::Instant;
use crate::nf::{Dest, DropReason, Pipeline, PortId, Verdict};

/// Where the pipeline's `now` comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockSource {
    /// The time-stamp counter (real time).
    Tsc,
    /// Each frame's receive timestamp (net_pcap: its capture time), for reproducible runs
    /// over pcaps. Timers run before each frame, at that frame's time.
    RxTimestamp,
}

/// How the datapath runs.
#[derive(Clone, Debug)]
pub struct DpdkOptions {
    /// Frames received (and transmitted) per burst.
    pub burst: u16,
    pub clock: ClockSource,
    /// Where frames the pipeline passes on (`Next`, `ToNf`) and frames it emits toward an
    /// NF go; `None` drops them (counted as passed either way).
    pub pass_port: Option<PortId>,
    /// Stop once no port has received anything for `idle_grace` and the pipeline is idle
    /// (with [`ClockSource::RxTimestamp`], time stands still once input stops, so the
    /// pipeline's idleness is not waited for).
    pub exit_when_idle: bool,
    pub idle_grace: Duration,
    /// How often `on_tick` runs (real time with [`ClockSource::Tsc`], capture time with
    /// [`ClockSource::RxTimestamp`]).
    pub tick_interval: Duration,
    /// Period of the report callback (zero: only at the end).
    pub stats_interval: Duration,
}

impl Default for DpdkOptions {
    fn default() -> Self {
        DpdkOptions {
            burst: 32,
            clock: ClockSource::Tsc,
            pass_port: None,
            exit_when_idle: false,
            idle_grace: Duration::from_millis(200),
            tick_interval: crate::datapath::replay::TICK,
            stats_interval: Duration::from_secs(1),
        }
    }
}

/// The datapath's own counters (the pipeline counts its decisions itself).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatapathCounters {
    /// Frames received from ports.
    pub rx: u64,
    /// Frames handed to ports' transmit queues.
    pub tx: u64,
    /// Frames dropped because a transmit queue was full.
    pub tx_full: u64,
    /// Frames the pipeline sent out of a port (`Verdict::Out`).
    pub out: u64,
    /// Frames the pipeline dropped (`Verdict::Drop`; reasons are in the pipeline's stats).
    pub dropped: u64,
    /// Frames the pipeline passed on (`Next`/`ToNf`) or emitted toward an NF.
    pub passed: u64,
    /// Frames the pipeline emitted and the datapath queued.
    pub emitted: u64,
    /// Emitted frames lost: pool exhausted, or longer than one mbuf.
    pub emit_failed: u64,
    /// Frames addressed to a port that does not exist.
    pub unknown_port: u64,
    /// Multi-segment frames (larger than one mbuf), dropped before the pipeline.
    pub multi_segment: u64,
    /// Pipeline calls that panicked (their frame is dropped).
    pub panics: u64,
}

/// What [`DpdkDatapath::run`] calls with the pipeline, the pipeline's current time, the
/// counters and the ports when a report is due.
pub type Report<'a, P> = dyn FnMut(&mut P, Instant, &DatapathCounters, &[Port]) + 'a;

/// The standalone DPDK datapath over a set of started ports.
pub struct DpdkDatapath<'p, P> {
    pipeline: &'p mut P,
    ports: Vec<Port>,
    pool: Mempool,
    clock: TscClock,
    opts: DpdkOptions,
    rx: Vec<Mbuf>,
    /// Frames dropped in this round, freed in bulk.
    discarded: Vec<Mbuf>,
    /// Per port (same index as `ports`): frames waiting for the next transmit burst.
    tx: Vec<Vec<Mbuf>>,
    counters: DatapathCounters,
    next_tick: Instant,
    /// The receive time of the latest frame ([`ClockSource::RxTimestamp`]).
    frame_time: Instant,
    /// The next tick in capture time ([`ClockSource::RxTimestamp`]); none before the first
    /// frame.
    next_capture_tick: Option<Instant>,
    panic_logged: bool,
}

impl<P> std::fmt::Debug for DpdkDatapath<'_, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpdkDatapath")
            .field("ports", &self.ports)
            .field("opts", &self.opts)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl<'p, P: Pipeline> DpdkDatapath<'p, P> {
    /// `pool` supplies the mbufs for emitted frames (it may be the ports' receive pool).
    pub fn new(
        pipeline: &'p mut P,
        ports: Vec<Port>,
        pool: Mempool,
        clock: TscClock,
        opts: DpdkOptions,
    ) -> Self {
        let burst = usize::from(opts.burst.max(1));
        let tx = ports
            .iter()
            .map(|_| Vec::with_capacity(burst * 2))
            .collect();
        DpdkDatapath {
            pipeline,
            ports,
            pool,
            clock,
            opts,
            rx: Vec::with_capacity(burst),
            discarded: Vec::with_capacity(burst * 2),
            tx,
            counters: DatapathCounters::default(),
            next_tick: Instant::ZERO,
            frame_time: Instant::ZERO,
            next_capture_tick: None,
            panic_logged: false,
        }
    }

    pub fn ports(&self) -> &[Port] {
        &self.ports
    }

    pub fn counters(&self) -> &DatapathCounters {
        &self.counters
    }

    pub fn pipeline(&self) -> &P {
        self.pipeline
    }

    /// Gives the ports back (dropping them stops and closes them).
    pub fn into_ports(mut self) -> Vec<Port> {
        self.flush();
        std::mem::take(&mut self.ports)
    }

    /// Runs until `stop` is set or, with `exit_when_idle`, the input is exhausted. `report`
    /// gets the pipeline, the pipeline's current time, the counters and the ports every
    /// `stats_interval` (wall time) and once at the end.
    pub fn run(&mut self, stop: &AtomicBool, report: &mut Report<'_, P>) {
        let mut last_rx = self.clock.now();
        let interval = self.opts.stats_interval;
        let mut next_report = last_rx + interval;
        while !stop.load(Ordering::Relaxed) {
            let now = self.clock.now();
            if self.poll(now) > 0 {
                last_rx = now;
            } else if self.opts.exit_when_idle
                && now - last_rx >= self.opts.idle_grace
                && (self.opts.clock == ClockSource::RxTimestamp || self.pipeline.is_idle())
            {
                break;
            }
            if !interval.is_zero() && now >= next_report {
                let t = self.pipeline_time(now);
                report(self.pipeline, t, &self.counters, &self.ports);
                next_report = now + interval;
            }
        }
        self.flush();
        let t = self.pipeline_time(self.clock.now());
        report(self.pipeline, t, &self.counters, &self.ports);
    }

    /// The pipeline's clock at TSC time `now`.
    fn pipeline_time(&self, now: Instant) -> Instant {
        match self.opts.clock {
            ClockSource::Tsc => now,
            ClockSource::RxTimestamp => self.frame_time,
        }
    }

    /// One round: receive a burst on every port and handle it, run due timers (TSC clock),
    /// transmit everything queued. Returns how many frames arrived.
    pub fn poll(&mut self, now: Instant) -> usize {
        let mut received = 0;
        let mut rx = std::mem::take(&mut self.rx);
        for i in 0..self.ports.len() {
            let n = self.ports[i].rx_burst(&mut rx, self.opts.burst);
            received += n;
            let in_port = self.ports[i].id();
            for m in rx.drain(..) {
                self.handle(in_port, m, now);
            }
            self.drain_emitted();
        }
        self.rx = rx;
        free_bulk(&mut self.discarded);
        if self.opts.clock == ClockSource::Tsc && now >= self.next_tick {
            self.tick(now);
            self.next_tick = now + self.opts.tick_interval;
        }
        self.flush();
        received
    }

    fn handle(&mut self, in_port: PortId, mut m: Mbuf, loop_now: Instant) {
        self.counters.rx += 1;
        let now = match self.opts.clock {
            ClockSource::Tsc => loop_now,
            ClockSource::RxTimestamp => {
                // net_pcap reports microseconds; a frame without a timestamp keeps the
                // previous frame's time.
                if let Some(us) = m.rx_timestamp() {
                    self.frame_time = Instant::from_nanos(us.saturating_mul(1000));
                }
                self.tick_capture_time(self.frame_time);
                self.frame_time
            }
        };
        if !m.is_contiguous() {
            // The core sees frames as one slice; a frame larger than one mbuf is not
            // memcached UDP kvlb could handle anyway.
            self.counters.multi_segment += 1;
            self.discard(m);
            return;
        }
        let pipeline = &mut *self.pipeline;
        let verdict = catch_unwind(AssertUnwindSafe(|| {
            pipeline.process_frame(now, in_port, &mut *m)
        }));
        match verdict {
            Ok(Verdict::Out(port)) => {
                self.counters.out += 1;
                self.queue(port, m);
            }
            Ok(Verdict::Next | Verdict::ToNf(_)) => {
                self.counters.passed += 1;
                match self.opts.pass_port {
                    Some(port) => self.queue(port, m),
                    None => self.discard(m),
                }
            }
            Ok(Verdict::Drop(_)) => {
                self.counters.dropped += 1;
                self.discard(m);
            }
            Err(_) => {
                self.panicked();
                self.discard(m);
            }
        }
        if self.opts.clock == ClockSource::RxTimestamp {
            // Reproducible runs: emitted frames right behind the frame that caused them.
            // (With the TSC clock they are drained once per burst, which is cheaper.)
            self.drain_emitted();
        }
    }

    /// Frees `m` later, with the rest of this round's discarded frames in one bulk call.
    #[inline]
    fn discard(&mut self, m: Mbuf) {
        self.discarded.push(m);
        if self.discarded.len() >= 2 * usize::from(self.opts.burst) {
            free_bulk(&mut self.discarded);
        }
    }

    /// Runs the timers due up to `now` in capture time, as the replay datapath does.
    fn tick_capture_time(&mut self, now: Instant) {
        let interval = self.opts.tick_interval;
        let mut t = self.next_capture_tick.unwrap_or(now);
        let mut ticks = 0;
        while t <= now && ticks < 10_000 {
            self.tick(t);
            t = t + interval;
            ticks += 1;
        }
        if t <= now {
            self.tick(now);
            t = now + interval;
        }
        self.next_capture_tick = Some(t);
    }

    fn tick(&mut self, now: Instant) {
        let pipeline = &mut *self.pipeline;
        if catch_unwind(AssertUnwindSafe(|| pipeline.on_tick(now))).is_err() {
            self.panicked();
        }
        self.drain_emitted();
    }

    fn panicked(&mut self) {
        self.counters.panics += 1;
        // The pipeline's own counter, so its stats show the loss too.
        let pipeline = &mut *self.pipeline;
        let _ = catch_unwind(AssertUnwindSafe(|| pipeline.count_drop(DropReason::Panic)));
        if !self.panic_logged {
            self.panic_logged = true;
            log::error!(
                "the pipeline panicked; the frame was dropped (later panics are only counted)"
            );
        }
    }

    fn queue(&mut self, port: PortId, m: Mbuf) {
        match self.ports.iter().position(|p| p.id() == port) {
            Some(i) => {
                self.tx[i].push(m);
                if self.tx[i].len() >= usize::from(self.opts.burst) {
                    flush_one(&mut self.ports[i], &mut self.tx[i], &mut self.counters);
                }
            }
            None => {
                self.counters.unknown_port += 1;
                self.discard(m);
            }
        }
    }

    fn drain_emitted(&mut self) {
        let pool = self.pool;
        let pass_port = self.opts.pass_port;
        let burst = usize::from(self.opts.burst);
        let ports = &mut self.ports;
        let tx = &mut self.tx;
        let counters = &mut self.counters;
        let pipeline = &mut *self.pipeline;
        let drained = catch_unwind(AssertUnwindSafe(|| {
            pipeline.drain_emitted(&mut |dest, bytes| {
                let port = match dest {
                    Dest::Port(p) => p,
                    Dest::Nf(_) => {
                        counters.passed += 1;
                        match pass_port {
                            Some(p) => p,
                            None => return,
                        }
                    }
                };
                let Some(i) = ports.iter().position(|p| p.id() == port) else {
                    counters.unknown_port += 1;
                    return;
                };
                match pool.alloc_copy(bytes) {
                    Ok(m) => {
                        counters.emitted += 1;
                        tx[i].push(m);
                        if tx[i].len() >= burst {
                            flush_one(&mut ports[i], &mut tx[i], counters);
                        }
                    }
                    Err(_) => counters.emit_failed += 1,
                }
            })
        }));
        if drained.is_err() {
            self.panicked();
        }
    }

    fn flush(&mut self) {
        for (port, queue) in self.ports.iter_mut().zip(&mut self.tx) {
            if !queue.is_empty() {
                flush_one(port, queue, &mut self.counters);
            }
        }
    }
}

impl<P> Drop for DpdkDatapath<'_, P> {
    fn drop(&mut self) {
        // Send what is queued before the ports close (into_ports flushes too).
        for (port, queue) in self.ports.iter_mut().zip(&mut self.tx) {
            if !queue.is_empty() {
                flush_one(port, queue, &mut self.counters);
            }
        }
    }
}

/// Transmits a port's queue; frames the driver has no room for are dropped and counted.
fn flush_one(port: &mut Port, queue: &mut Vec<Mbuf>, counters: &mut DatapathCounters) {
    let sent = port.tx_burst(queue);
    counters.tx += sent as u64;
    if !queue.is_empty() {
        counters.tx_full += queue.len() as u64;
        free_bulk(queue);
    }
}

/// Makes repeated panics quiet: the first one is reported by the panic hook in force, later
/// ones are not (datapaths catch them, drop the frame and count it; the count is in
/// [`DatapathCounters::panics`]). Process-wide; meant for the `kvlb dpdk`/`kvlb onvm` commands.
pub fn report_first_panic_only() {
    let previous = std::panic::take_hook();
    let reported = AtomicBool::new(false);
    std::panic::set_hook(Box::new(move |info| {
        if !reported.swap(true, Ordering::SeqCst) {
            previous(info);
        }
    }));
}
