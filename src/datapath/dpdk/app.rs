//! The standalone DPDK datapath: burst receive on every port, each burst through the
//! pipeline at once (the shared [`Driver`]), burst transmit per verdict; frames the
//! pipeline emits are copied into fresh mbufs and queued behind the burst whose handling
//! produced them.
//!
//! Ordering (what makes runs over the same input reproducible): ports are polled in the
//! order given; frames are handled in arrival order; per port, transmitted frames keep the
//! order in which they were queued, and everything queued in one poll round is sent before
//! the next round. With [`ClockSource::Tsc`] a received burst is one pipeline burst (a
//! multi-segment frame, dropped before the pipeline, splits it). With
//! [`ClockSource::RxTimestamp`] the pipeline's clock is the frames' capture time and timers
//! follow the replay datapath's rule ([`Ticking::Capture`], as [`crate::datapath::replay`]):
//! before each frame, `on_tick` runs at every tick interval of capture time since the
//! previous tick (at most 10 000 in a row, then once at the frame's time); a pipeline burst
//! is a run of frames with the same capture time (no tick falls between them); emitted
//! frames are drained after each burst. No wall-clock time enters the pipeline, so a pcap
//! gives the same decisions on every run, and the same as the replay datapath.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{free_bulk, Mbuf, Mempool, Port, TscClock};
use crate::clock::Instant;
use crate::datapath::driver::{Driver, Ticking};
use crate::nf::{Dest, Pipeline, PortId, Verdict};

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
    /// Frames dropped because the pipeline panicked before deciding them, and panics in
    /// its ticks and drains.
    pub panics: u64,
}

/// What [`DpdkDatapath::run`] calls with the pipeline, the pipeline's current time, the
/// counters and the ports when a report is due.
pub type Report<'a, P> = dyn FnMut(&mut P, Instant, &DatapathCounters, &[Port]) + 'a;

/// The standalone DPDK datapath over a set of started ports.
pub struct DpdkDatapath<'p, P> {
    driver: Driver<'p, P>,
    ports: Vec<Port>,
    pool: Mempool,
    clock: TscClock,
    opts: DpdkOptions,
    rx: Vec<Mbuf>,
    /// Frames dropped in this round, freed in bulk.
    discarded: Vec<Mbuf>,
    /// Per port (same index as `ports`): frames waiting for the next transmit burst.
    tx: Vec<Vec<Mbuf>>,
    /// The datapath's own counters; the verdict counts are the driver's, copied in after
    /// each round.
    counters: DatapathCounters,
    /// Emitted frames toward an NF (counted as passed).
    emitted_passed: u64,
    /// The receive time of the latest frame ([`ClockSource::RxTimestamp`]).
    frame_time: Instant,
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
        let ticking = match opts.clock {
            ClockSource::Tsc => Ticking::Interval(opts.tick_interval),
            ClockSource::RxTimestamp => Ticking::Capture(opts.tick_interval),
        };
        DpdkDatapath {
            driver: Driver::new(pipeline, ticking, burst),
            ports,
            pool,
            clock,
            opts,
            rx: Vec::with_capacity(burst),
            discarded: Vec::with_capacity(burst * 2),
            tx,
            counters: DatapathCounters::default(),
            emitted_passed: 0,
            frame_time: Instant::ZERO,
        }
    }

    pub fn ports(&self) -> &[Port] {
        &self.ports
    }

    pub fn counters(&self) -> &DatapathCounters {
        &self.counters
    }

    pub fn pipeline(&self) -> &P {
        self.driver.pipeline()
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
                && (self.opts.clock == ClockSource::RxTimestamp || self.driver.is_idle())
            {
                break;
            }
            if !interval.is_zero() && now >= next_report {
                let t = self.pipeline_time(now);
                report(self.driver.pipeline_mut(), t, &self.counters, &self.ports);
                next_report = now + interval;
            }
        }
        self.flush();
        let t = self.pipeline_time(self.clock.now());
        report(self.driver.pipeline_mut(), t, &self.counters, &self.ports);
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
            self.counters.rx += n as u64;
            let in_port = self.ports[i].id();
            while !rx.is_empty() {
                self.handle_run(in_port, &mut rx, now);
            }
            self.drain_emitted();
        }
        self.rx = rx;
        free_bulk(&mut self.discarded);
        if self.opts.clock == ClockSource::Tsc {
            self.tick(now);
        }
        self.flush();
        self.sync_counters();
        received
    }

    /// Handles the longest run at the front of `rx` that is one pipeline burst (see the
    /// module doc), and removes it: a multi-segment frame alone is a run, dropped before
    /// the pipeline; with the capture clock, a run is the frames of one capture time, after
    /// the ticks due at that time.
    fn handle_run(&mut self, in_port: PortId, rx: &mut Vec<Mbuf>, loop_now: Instant) {
        let now = match self.opts.clock {
            ClockSource::Tsc => loop_now,
            ClockSource::RxTimestamp => {
                self.frame_time = frame_time(&rx[0], self.frame_time);
                self.tick(self.frame_time);
                self.frame_time
            }
        };
        if !rx[0].is_contiguous() {
            // The core sees frames as one slice; a frame larger than one mbuf is not
            // memcached UDP kvlb could handle anyway.
            self.counters.multi_segment += 1;
            let m = rx.remove(0);
            self.discard(m);
            return;
        }
        let len = rx
            .iter()
            .position(|m| {
                !m.is_contiguous()
                    || (self.opts.clock == ClockSource::RxTimestamp && frame_time(m, now) != now)
            })
            .unwrap_or(rx.len());
        let verdicts = self.driver.process_burst(now, in_port, &mut rx[..len]);
        let pass_port = self.opts.pass_port;
        for (m, &verdict) in rx.drain(..len).zip(verdicts) {
            let to = match verdict {
                Verdict::Out(port) => Some(port),
                Verdict::Next | Verdict::ToNf(_) => pass_port,
                Verdict::Drop(_) => None,
            };
            match to {
                Some(port) => queue(
                    &mut self.ports,
                    &mut self.tx,
                    &mut self.discarded,
                    &mut self.counters,
                    self.opts.burst,
                    port,
                    m,
                ),
                None => discard(&mut self.discarded, self.opts.burst, m),
            }
        }
        if self.opts.clock == ClockSource::RxTimestamp {
            // Reproducible runs: emitted frames right behind the burst that caused them.
            // (With the TSC clock they are drained once per port burst.)
            self.drain_emitted();
        }
    }

    /// Copies the driver's verdict counts into the datapath's counters.
    fn sync_counters(&mut self) {
        let v = self.driver.counters();
        self.counters.out = v.out;
        self.counters.passed = v.next + v.to_nf + self.emitted_passed;
        self.counters.dropped = v.dropped;
        self.counters.panics = v.panics;
    }

    /// Frees `m` later, with the rest of this round's discarded frames in one bulk call.
    #[inline]
    fn discard(&mut self, m: Mbuf) {
        discard(&mut self.discarded, self.opts.burst, m);
    }

    /// Runs the timers due at `now` by the clock's rule, queueing what they emit.
    fn tick(&mut self, now: Instant) {
        let mut sink = self.emit_sink();
        let (driver, mut send) = (&mut sink.0, sink.1);
        driver.tick(now, &mut send);
    }

    fn drain_emitted(&mut self) {
        let mut sink = self.emit_sink();
        let (driver, mut send) = (&mut sink.0, sink.1);
        driver.drain(Instant::ZERO, &mut send);
    }

    /// The driver and a sink that copies emitted frames into mbufs queued on their ports.
    fn emit_sink(&mut self) -> (&mut Driver<'p, P>, impl FnMut(Instant, Dest, &[u8]) + '_) {
        let pool = self.pool;
        let pass_port = self.opts.pass_port;
        let burst = usize::from(self.opts.burst);
        let ports = &mut self.ports;
        let tx = &mut self.tx;
        let counters = &mut self.counters;
        let emitted_passed = &mut self.emitted_passed;
        let send = move |_: Instant, dest: Dest, bytes: &[u8]| {
            let port = match dest {
                Dest::Port(p) => p,
                Dest::Nf(_) => {
                    *emitted_passed += 1;
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
        };
        (&mut self.driver, send)
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

/// A frame's capture time ([`ClockSource::RxTimestamp`]): net_pcap reports microseconds; a
/// frame without a timestamp keeps `previous`.
fn frame_time(m: &Mbuf, previous: Instant) -> Instant {
    m.rx_timestamp()
        .map_or(previous, |us| Instant::from_nanos(us.saturating_mul(1000)))
}

/// Frees `m` later, with the rest of the round's discarded frames in one bulk call.
#[inline]
fn discard(discarded: &mut Vec<Mbuf>, burst: u16, m: Mbuf) {
    discarded.push(m);
    if discarded.len() >= 2 * usize::from(burst) {
        free_bulk(discarded);
    }
}

/// Queues `m` for transmission on `port`, sending the queue once it holds a burst.
fn queue(
    ports: &mut [Port],
    tx: &mut [Vec<Mbuf>],
    discarded: &mut Vec<Mbuf>,
    counters: &mut DatapathCounters,
    burst: u16,
    port: PortId,
    m: Mbuf,
) {
    match ports.iter().position(|p| p.id() == port) {
        Some(i) => {
            tx[i].push(m);
            if tx[i].len() >= usize::from(burst) {
                flush_one(&mut ports[i], &mut tx[i], counters);
            }
        }
        None => {
            counters.unknown_port += 1;
            discard(discarded, burst, m);
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
