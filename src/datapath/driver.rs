//! The datapath driver: what every datapath does around the [`Pipeline`], written once.
//!
//! Owns: panic containment (`catch_unwind` around every pipeline call), verdict counting,
//! ticking by the datapath's clock rule ([`Ticking`]), and handing emitted frames to the
//! datapath's sink. Must not: do I/O or read a clock: the datapath brings frames, the time
//! and a sink, and does what the verdicts say with its own buffers.
//!
//! # Bursts
//! [`Driver::process_burst`] hands a whole burst to [`Pipeline::process_burst`] and returns
//! one verdict per frame. The verdicts are filled with `Drop(Panic)` first: if the pipeline
//! panics mid-burst, the frames it had decided keep their verdicts and the others are
//! dropped, each counted as a panic (here and in the pipeline's own drop counters). The
//! verdict buffer is the driver's, sized once: no allocation per burst.
//!
//! # Ticks
//! With [`Ticking::Interval`] (real time), a tick runs at most once per interval, and only
//! when the pipeline's [`poll_timeout`](Pipeline::poll_timeout) says something is due.
//! With [`Ticking::Capture`] (replay, `kvlb dpdk --clock pcap`), time is the frames'
//! capture time and the rule is exact, whatever `poll_timeout` says, so the same input
//! gives the same ticks on every datapath: before a burst at `now`, `on_tick` runs at every
//! interval of capture time since the previous tick (at most 10 000 in a row, then once at
//! `now`), each tick's emitted frames drained behind it. A burst then has one capture time,
//! so capture-time datapaths cut their bursts where the capture time changes.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use crate::clock::Instant;
use crate::nf::{Dest, DropReason, FrameBuf, Pipeline, PortId, Verdict};

/// The verdict a frame has until the pipeline decides it.
const UNDECIDED: Verdict = Verdict::Drop(DropReason::Panic);

/// Most ticks run in a row to catch up on capture time (a capture with a gap of hours must
/// not spin); then one tick at the frame's time.
const MAX_CATCH_UP: u32 = 10_000;

/// How the driver runs the pipeline's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ticking {
    /// Real time: at most once per interval, when the pipeline's `poll_timeout` is due.
    Interval(Duration),
    /// Capture time: at every interval of capture time, before the frames (see the module
    /// documentation).
    Capture(Duration),
}

/// What the pipeline decided, frame by frame, as the driver counted it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerdictCounters {
    /// `Verdict::Out`.
    pub out: u64,
    /// `Verdict::ToNf`.
    pub to_nf: u64,
    /// `Verdict::Next`.
    pub next: u64,
    /// `Verdict::Drop` (reasons are in the pipeline's stats).
    pub dropped: u64,
    /// Frames dropped because the pipeline panicked before deciding them, and panics in
    /// ticks and drains.
    pub panics: u64,
}

/// Drives one pipeline for one datapath.
pub struct Driver<'p, P> {
    pipeline: &'p mut P,
    ticking: Ticking,
    /// The next tick; none before the first.
    next_tick: Option<Instant>,
    verdicts: Vec<Verdict>,
    counters: VerdictCounters,
    panic_logged: bool,
}

impl<P> std::fmt::Debug for Driver<'_, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("ticking", &self.ticking)
            .field("next_tick", &self.next_tick)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl<'p, P: Pipeline> Driver<'p, P> {
    /// A driver for bursts of up to `max_burst` frames (larger ones cost one allocation).
    pub fn new(pipeline: &'p mut P, ticking: Ticking, max_burst: usize) -> Self {
        Driver {
            pipeline,
            ticking,
            next_tick: None,
            verdicts: Vec::with_capacity(max_burst),
            counters: VerdictCounters::default(),
            panic_logged: false,
        }
    }

    pub fn pipeline(&self) -> &P {
        self.pipeline
    }

    pub fn pipeline_mut(&mut self) -> &mut P {
        self.pipeline
    }

    pub fn counters(&self) -> &VerdictCounters {
        &self.counters
    }

    /// Hands `frames`, which arrived together on `in_port` at `now`, to the pipeline and
    /// returns its verdicts: the `i`-th is `frames[i]`'s. Frames the pipeline emitted
    /// meanwhile wait for [`drain`](Self::drain).
    pub fn process_burst<F: FrameBuf>(
        &mut self,
        now: Instant,
        in_port: PortId,
        frames: &mut [F],
    ) -> &[Verdict] {
        self.verdicts.clear();
        self.verdicts.resize(frames.len(), UNDECIDED);
        let pipeline = &mut *self.pipeline;
        let verdicts = &mut self.verdicts[..];
        let completed = catch_unwind(AssertUnwindSafe(|| {
            pipeline.process_burst(now, in_port, frames, verdicts)
        }))
        .is_ok();
        let mut undecided = 0;
        for v in &self.verdicts {
            match v {
                Verdict::Out(_) => self.counters.out += 1,
                Verdict::ToNf(_) => self.counters.to_nf += 1,
                Verdict::Next => self.counters.next += 1,
                &UNDECIDED if !completed => undecided += 1,
                Verdict::Drop(_) => self.counters.dropped += 1,
            }
        }
        for _ in 0..undecided {
            self.panicked();
        }
        &self.verdicts
    }

    /// Runs the ticks due at `now` by the driver's [`Ticking`]; frames emitted by a tick go
    /// to `send` with the tick's time.
    pub fn tick<S: FnMut(Instant, Dest, &[u8])>(&mut self, now: Instant, send: &mut S) {
        match self.ticking {
            Ticking::Interval(every) => {
                if self.next_tick.is_some_and(|t| now < t) {
                    return;
                }
                if self.pipeline.poll_timeout().is_some_and(|t| t <= now) {
                    self.run_tick(now, send);
                }
                self.next_tick = Some(now + every);
            }
            Ticking::Capture(every) => {
                let mut t = self.next_tick.unwrap_or(now);
                let mut ticks = 0;
                while t <= now && ticks < MAX_CATCH_UP {
                    self.run_tick(t, send);
                    t = t + every;
                    ticks += 1;
                }
                if t <= now {
                    self.run_tick(now, send);
                    t = now + every;
                }
                self.next_tick = Some(t);
            }
        }
    }

    fn run_tick<S: FnMut(Instant, Dest, &[u8])>(&mut self, at: Instant, send: &mut S) {
        let pipeline = &mut *self.pipeline;
        if catch_unwind(AssertUnwindSafe(|| pipeline.on_tick(at))).is_err() {
            self.panicked();
        }
        self.drain(at, send);
    }

    /// Hands every frame the pipeline emitted to `send`, oldest first, with `at`: the time
    /// of the burst or tick that produced them.
    pub fn drain<S: FnMut(Instant, Dest, &[u8])>(&mut self, at: Instant, send: &mut S) {
        let pipeline = &mut *self.pipeline;
        let drained = catch_unwind(AssertUnwindSafe(|| {
            pipeline.drain_emitted(&mut |dest, frame| send(at, dest, frame))
        }));
        if drained.is_err() {
            self.panicked();
        }
    }

    /// Whether the pipeline has nothing outstanding.
    pub fn is_idle(&self) -> bool {
        self.pipeline.is_idle()
    }

    fn panicked(&mut self) {
        self.counters.panics += 1;
        // The pipeline's own counter, so its stats show the loss too.
        let pipeline = &mut *self.pipeline;
        let _ = catch_unwind(AssertUnwindSafe(|| pipeline.count_drop(DropReason::Panic)));
        if !self.panic_logged {
            self.panic_logged = true;
            log::error!(
                "the pipeline panicked; what it had not decided was dropped (later panics are \
                 only counted)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forwards out of port 1, drops frames starting with 0xff, panics on 0xee; emits one
    /// frame per tick; records its ticks.
    #[derive(Default)]
    struct Toy {
        ticks: Vec<Instant>,
        emitted: Vec<Vec<u8>>,
        panics_counted: u64,
        due: Option<Instant>,
    }

    impl Pipeline for Toy {
        fn process_frame<F: FrameBuf + ?Sized>(
            &mut self,
            _now: Instant,
            _in_port: PortId,
            frame: &mut F,
        ) -> Verdict {
            match frame.bytes().first() {
                Some(0xee) => panic!("toy panic"),
                Some(0xff) => Verdict::Drop(DropReason::NotForUs),
                _ => Verdict::Out(PortId(1)),
            }
        }
        fn on_tick(&mut self, now: Instant) {
            self.ticks.push(now);
            self.emitted.push(vec![0xaa; 4]);
        }
        fn poll_timeout(&self) -> Option<Instant> {
            self.due.or(Some(Instant::ZERO))
        }
        fn drain_emitted(&mut self, send: &mut dyn FnMut(Dest, &[u8])) {
            for f in self.emitted.drain(..) {
                send(Dest::Port(PortId(2)), &f);
            }
        }
        fn count_drop(&mut self, reason: DropReason) {
            assert_eq!(reason, DropReason::Panic);
            self.panics_counted += 1;
        }
        fn is_idle(&self) -> bool {
            true
        }
    }

    fn ms(n: u64) -> Instant {
        Instant::from_nanos(n * 1_000_000)
    }

    #[test]
    fn a_panic_mid_burst_drops_only_the_undecided_frames() {
        let mut toy = Toy::default();
        let mut d = Driver::new(&mut toy, Ticking::Interval(Duration::from_millis(1)), 4);
        let mut frames = vec![vec![1u8], vec![0xff], vec![0xee], vec![2], vec![3]];
        let v = d.process_burst(ms(0), PortId(0), &mut frames).to_vec();
        assert_eq!(
            v,
            [
                Verdict::Out(PortId(1)),
                Verdict::Drop(DropReason::NotForUs),
                UNDECIDED,
                UNDECIDED,
                UNDECIDED
            ]
        );
        let c = *d.counters();
        assert_eq!((c.out, c.dropped, c.panics), (1, 1, 3));
        assert_eq!(toy.panics_counted, 3);
    }

    #[test]
    fn capture_time_ticks_every_interval_and_catches_up() {
        // Nothing due, ever: capture time ticks all the same.
        let mut toy = Toy {
            due: Some(ms(1_000_000)),
            ..Toy::default()
        };
        let mut d = Driver::new(&mut toy, Ticking::Capture(Duration::from_millis(1)), 4);
        let mut sent = Vec::new();
        for t in [ms(1), ms(1), ms(3)] {
            d.tick(t, &mut |at, _, _| sent.push(at));
        }
        assert_eq!(sent, [ms(1), ms(2), ms(3)]);
        assert_eq!(toy.ticks, [ms(1), ms(2), ms(3)]);
    }

    #[test]
    fn interval_ticks_wait_for_the_interval_and_the_poll_timeout() {
        let mut toy = Toy {
            due: Some(ms(5)),
            ..Toy::default()
        };
        let mut d = Driver::new(&mut toy, Ticking::Interval(Duration::from_millis(2)), 4);
        for t in 0..8 {
            d.tick(ms(t), &mut |_, _, _| {});
        }
        // Checked at 0, 2, 4, 6: due (5) only at 6.
        assert_eq!(toy.ticks, [ms(6)]);
    }
}
