//! OpenNetVM: kvlb as an ONVM network function (`kvlb onvm`).
//!
//! Owns: the NF lifecycle through `onvm_nflib` (local context, signal handler, function
//! table, init, ready, stop), the NF's packet loop over its own rings (ONVM's "advanced
//! rings" mode, as `examples/scaling_example` runs with `-a`), the packet metadata
//! (`action`/`destination`) that routes each packet after kvlb, and the frames kvlb emits
//! (allocated from ONVM's shared pool, handed back with `onvm_nflib_return_pkt_bulk`).
//! Must not: make balancing decisions (the [`Pipeline`] does), or let a raw pointer out of
//! this module.
//!
//! Facts about ONVM v21.10 this module is built around:
//! - The NF library owns and frees the local context and the function table; they come
//!   from `onvm_nflib_init_nf_local_ctx`/`onvm_nflib_init_nf_function_table`, never from
//!   Rust. The table stays empty (no `onvm_nflib_run`), but must exist: the library's
//!   message handler reads it for messages from other NFs. The library also `rte_free`s
//!   `nf->data` on stop if it is set, so kvlb leaves it NULL.
//! - Advanced rings: after `onvm_nflib_nf_ready` (the manager then delivers packets to the
//!   NF's rx ring), the NF dequeues bursts from `nf->rx_q` itself, sets each packet's
//!   action, and hands the burst to ONVM's own tx path for NFs in one call
//!   (`onvm_pkt_process_tx_batch` and the flushes, as `onvm_nflib_run` and
//!   `scaling_example` do): DROP packets are freed, TONF/NEXT ones go straight to the next
//!   NF's rx ring, OUT ones to the NF's tx ring for the manager's tx thread; ONVM counts
//!   them in the NF's stats. (Enqueuing every packet to `nf->tx_q` instead would add a hop
//!   through the manager's tx thread to every NF-to-NF packet.) What `onvm_nflib_run`'s
//!   loop does besides packets (manager messages such as stop, `-t`/`-l` limits,
//!   shared-core sleep) is done by the shim's `kvlb_onvm_*` helpers each round.
//! - The loop runs on a thread of its own (not an EAL lcore), pinned to the core the
//!   manager gave the NF, as `onvm_nflib_run`'s is.
//! - `onvm_nflib_init` reads `argv[1]` unconditionally and EAL permutes `argv`; the C argv is
//!   built here, always has an element 1, and is leaked for the life of the process.
//! - ONVM installs its own SIGINT/SIGTERM handler; it clears the context's `keep_running`,
//!   which the loop checks every round, and calls back here.
//! - On stop the library writes `<tag>_stats.csv` into the working directory.
#![warn(clippy::undocumented_unsafe_blocks)]

use std::ffi::{c_int, CString};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use onvm_sys::{onvm_nf, onvm_nf_local_ctx, onvm_pkt_meta, rte_mbuf};

use crate::clock::Instant;
use crate::datapath::dpdk::{DpdkError, Eal, Mbuf, Mempool, RteMbuf, TscClock};
use crate::datapath::driver::{Driver, Ticking};
use crate::nf::{Dest, DropReason, Pipeline, PortId, PortInfo, Verdict};

/// What can go wrong starting the NF.
#[derive(Debug, thiserror::Error)]
pub enum OnvmError {
    #[error("onvm_nflib_init failed ({0}); is the ONVM manager running, and are the EAL and ONVM arguments right (`-r SERVICE_ID` is required)? If EAL said \"Cannot initialize tailq\", this NF links DPDK libraries the manager does not: kvlb linked {}; build it against the DPDK (and its ldflags.txt) the manager was built with", onvm_sys::DPDK_LINK)]
    Init(i32),
    #[error("stopped by a signal during start-up")]
    Interrupted,
    #[error(transparent)]
    Dpdk(#[from] DpdkError),
}

/// How the NF's loop behaves.
#[derive(Clone, Debug)]
pub struct NfOptions {
    /// Refresh the stats screen every this many packets (ONVM examples' `-p`); 0: off.
    pub print_delay: u64,
    /// Refresh the stats screen this often; zero: off.
    pub stats_interval: Duration,
    /// Stop once no packet arrived for `idle_grace` and the pipeline is idle.
    pub exit_when_idle: bool,
    pub idle_grace: Duration,
    /// How often the pipeline's timers run (checked once per loop round).
    pub tick_interval: Duration,
    /// Send what the pipeline sends out of a port (forwarded and emitted frames) to this
    /// service instead: kvlb in front of another NF (`-d`, as in ONVM's examples).
    pub out_to_nf: Option<u16>,
}

impl Default for NfOptions {
    fn default() -> Self {
        NfOptions {
            print_delay: 0,
            stats_interval: Duration::from_secs(1),
            exit_when_idle: false,
            idle_grace: Duration::from_secs(1),
            tick_interval: Duration::from_millis(1),
            out_to_nf: None,
        }
    }
}

/// The NF's own counters (the pipeline counts its decisions itself).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NfCounters {
    /// Packets ONVM handed to kvlb.
    pub rx: u64,
    /// Verdicts, as set in the packets' metadata.
    pub out: u64,
    pub to_nf: u64,
    pub next: u64,
    pub dropped: u64,
    /// Frames kvlb emitted and handed to ONVM.
    pub emitted: u64,
    /// Emitted frames lost: pool exhausted, or longer than one mbuf.
    pub emit_failed: u64,
    /// Multi-segment packets (larger than one mbuf), dropped before the pipeline.
    pub multi_segment: u64,
    /// Pipeline calls that panicked (their packet is dropped).
    pub panics: u64,
}

/// Set by ONVM's signal handler (through [`on_signal`]).
static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_signal: c_int) {
    // Async-signal-safe: one atomic store. ONVM's own handler already stops the loop.
    SIGNALLED.store(true, Ordering::SeqCst);
}

/// A started ONVM network function (registered with the manager); stops on drop.
pub struct OnvmNf {
    ctx: NonNull<onvm_nf_local_ctx>,
    eal: Eal,
    pool: Mempool,
}

impl std::fmt::Debug for OnvmNf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnvmNf")
            .field("service_id", &self.service_id())
            .field("instance_id", &self.instance_id())
            .finish()
    }
}

impl OnvmNf {
    /// Registers an NF named `tag` with the running manager. `eal_args` and `onvm_args`
    /// (`-r SERVICE_ID [-n INSTANCE_ID] [-t TTL] [-l LIMIT] [-m] [-s]`) are given to
    /// `onvm_nflib_init` as `kvlb EAL... -- ONVM...` (EAL runs as a secondary process).
    pub fn init(tag: &str, eal_args: &[String], onvm_args: &[String]) -> Result<OnvmNf, OnvmError> {
        let mut args = vec!["kvlb".to_string()];
        args.extend(eal_args.iter().cloned());
        args.push("--".into());
        args.extend(onvm_args.iter().cloned());
        // argv[1] always exists ("--" at least): onvm_nflib_init reads it unconditionally.
        let argv = crate::datapath::dpdk::leak_argv(&args)?;
        let argc = c_int::try_from(argv.len() - 1).unwrap_or(c_int::MAX);
        // The tag is read by the manager from shared memory that ONVM copies it into.
        let ctag = CString::new(tag).map_err(|_| DpdkError::BadName(tag.into()))?;

        // SAFETY: the lifecycle ONVM's examples follow, with ONVM-allocated context and
        // function table: local ctx (calloc'd by ONVM, exits the process on failure),
        // signal handler (our handler only stores an atomic), function table (calloc'd by
        // ONVM; its entries are filled in by `run`, before the loop reads them), then init
        // with a leaked C argv that outlives EAL. The context pointer stays valid until
        // onvm_nflib_stop, which only Drop calls.
        let (ctx, ret) = unsafe {
            let ctx = onvm_sys::onvm_nflib_init_nf_local_ctx();
            onvm_sys::onvm_nflib_start_signal_handler(ctx, Some(on_signal));
            let table = onvm_sys::onvm_nflib_init_nf_function_table();
            let ret = onvm_sys::onvm_nflib_init(argc, argv.as_mut_ptr(), ctag.as_ptr(), ctx, table);
            (ctx, ret)
        };
        // ONVM exits the process rather than return NULL here; checked all the same.
        let Some(ctx) = NonNull::new(ctx) else {
            return Err(OnvmError::Init(ret));
        };
        if ret < 0 {
            // SAFETY: stop copes with a context whose init did not finish (it frees it, or
            // cleans up a registration that completed before a signal).
            unsafe { onvm_sys::onvm_nflib_stop(ctx.as_ptr()) };
            return Err(if ret == onvm_sys::ONVM_SIGNAL_TERMINATION {
                OnvmError::Interrupted
            } else {
                OnvmError::Init(ret)
            });
        }
        // SAFETY: onvm_nflib_init returned successfully, so rte_eal_init did.
        let eal = unsafe { Eal::assume_initialised() };
        // SAFETY: a C string constant.
        let pool_name =
            unsafe { std::ffi::CStr::from_ptr(onvm_sys::kvlb_onvm_pktmbuf_pool_name()) };
        let pool = match Mempool::lookup(eal, &pool_name.to_string_lossy()) {
            Ok(pool) => pool,
            Err(e) => {
                // SAFETY: the NF is registered; stop unregisters it.
                unsafe { onvm_sys::onvm_nflib_stop(ctx.as_ptr()) };
                return Err(e.into());
            }
        };
        // ONVM_NF_ACTION_NEXT makes nflib look the packet's flow up in the manager's flow
        // director table (falling back to the default chain), through a pointer this
        // process only holds once it has attached to that table: without this, the first
        // NEXT dereferences NULL inside onvm_ft_lookup_pkt.
        // SAFETY: the manager created the table's memzone before it accepted NFs
        // (onvm_init); the call only looks that memzone up and stores its pointer in a
        // global of nflib (it exits the process if the memzone is missing, as every ONVM
        // NF using the flow director does).
        unsafe { onvm_sys::onvm_flow_dir_nf_init() };
        Ok(OnvmNf { ctx, eal, pool })
    }

    fn nf(&self) -> *mut onvm_nf {
        // SAFETY: after a successful init the context's nf points at this NF's entry in
        // the manager's shared NF table, valid until stop.
        unsafe { (*self.ctx.as_ptr()).nf }
    }

    pub fn eal(&self) -> Eal {
        self.eal
    }

    /// ONVM's shared packet pool (the manager's).
    pub fn pool(&self) -> Mempool {
        self.pool
    }

    pub fn service_id(&self) -> u16 {
        // SAFETY: see nf(); a plain read of a field the manager set before init returned.
        unsafe { (*self.nf()).service_id }
    }

    pub fn instance_id(&self) -> u16 {
        // SAFETY: as for service_id.
        unsafe { (*self.nf()).instance_id }
    }

    /// The manager's ports (id and MAC), from its shared port table.
    pub fn ports(&self) -> Vec<PortInfo> {
        // SAFETY: `ports` points at the manager's port table (looked up by init); it is
        // written only while the manager starts, before any NF registers.
        unsafe {
            let table = onvm_sys::ports;
            if table.is_null() {
                return Vec::new();
            }
            let t = &*table;
            (0..usize::from(t.num_ports).min(t.id.len()))
                .filter_map(|i| {
                    let id = u16::from(t.id[i]);
                    let mac = t.mac.get(usize::from(id))?.addr_bytes;
                    Some(PortInfo {
                        id: PortId(id),
                        mac,
                    })
                })
                .collect()
        }
    }

    /// Runs the NF until ONVM stops it (signal, manager, `-t`/`-l` limits) or, with
    /// `exit_when_idle`, until the input is exhausted. `report` gets the pipeline, its
    /// current time and the counters when the stats screen is due and once at the end.
    ///
    /// The loop runs on a thread of its own, as `onvm_nflib_run`'s does, while this one
    /// waits: not an EAL lcore, so DPDK's per-lcore mempool caches (in the pool's shared
    /// memory, indexed by lcore id) are left alone; every NF of a chain may be started with
    /// the same `-l`, and two processes using one lcore's cache would corrupt it.
    pub fn run<P: Pipeline + Send>(
        &mut self,
        pipeline: &mut P,
        opts: &NfOptions,
        report: &mut (dyn FnMut(&mut P, Instant, &NfCounters) + Send),
    ) -> NfCounters {
        let handles = NfHandles {
            ctx: self.ctx.as_ptr(),
            nf: self.nf(),
        };
        let mut state = NfState {
            driver: Driver::new(pipeline, Ticking::Interval(opts.tick_interval), BURST),
            report,
            pool: self.pool,
            nf: handles,
            clock: TscClock::new(self.eal),
            opts: opts.clone(),
            now: Instant::ZERO,
            last_rx: Instant::ZERO,
            next_report: Instant::ZERO + opts.stats_interval,
            since_print: 0,
            pending: Vec::with_capacity(64),
            counters: NfCounters::default(),
        };
        let looped = std::thread::scope(|s| {
            let state = &mut state;
            std::thread::Builder::new()
                .name("kvlb-nf".into())
                .spawn_scoped(s, move || state.run_loop(handles))
                .map(|t| t.join())
        });
        match looped {
            Ok(Ok(())) => {}
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(e) => log::error!("cannot start the NF's packet thread: {e}"),
        }
        state.return_pending();
        state.sync_panics();
        (state.report)(
            state.driver.pipeline_mut(),
            state.clock.now(),
            &state.counters,
        );
        if SIGNALLED.load(Ordering::SeqCst) {
            log::info!("stopped by signal");
        }
        state.counters
    }
}

impl Drop for OnvmNf {
    fn drop(&mut self) {
        // SAFETY: the context came from a successful init and is stopped exactly once;
        // nf->data is NULL (kvlb never sets it). ONVM frees the context and the table.
        unsafe { onvm_sys::onvm_nflib_stop(self.ctx.as_ptr()) }
    }
}

/// Packets dequeued from the rx ring at a time (ONVM's `PACKET_READ_SIZE`).
const BURST: usize = 32;

/// The verdict slot of a frame the pipeline has not decided: one it panicked on (or did
/// not reach in a burst it panicked in; the driver's verdict) or never saw
/// (multi-segment). The pipeline itself never drops for `Panic`.
const UNDECIDED: Verdict = Verdict::Drop(DropReason::Panic);

/// One burst from the NF's rx ring, each packet lent as an [`RteMbuf`].
struct Burst<'a>(&'a mut [&'a mut RteMbuf]);

impl<'a> Burst<'a> {
    /// Views the packets at `pkts` as frames.
    ///
    /// # Safety
    /// Every pointer must be a live, direct mbuf with a reference count of one, all
    /// distinct, that nothing else uses while the burst lives.
    unsafe fn new(pkts: &'a mut [*mut rte_mbuf]) -> Burst<'a> {
        // SAFETY: `&mut RteMbuf` has the layout of `*mut rte_mbuf` (a reference is a
        // non-null pointer; RteMbuf is repr(transparent) over rte_mbuf), and per the caller
        // each pointer is non-null, aligned, live and exclusively ours for 'a, so each
        // element is a valid `&mut` and no two alias. The slice borrows `pkts` for 'a.
        Burst(unsafe {
            std::slice::from_raw_parts_mut(pkts.as_mut_ptr().cast::<&'a mut RteMbuf>(), pkts.len())
        })
    }
}

/// A registered NF's context and its entry in the manager's NF table, valid until
/// `onvm_nflib_stop` (only [`OnvmNf`]'s Drop calls it, and `run` borrows the NF).
#[derive(Clone, Copy)]
struct NfHandles {
    ctx: *mut onvm_nf_local_ctx,
    nf: *mut onvm_nf,
}

// SAFETY: the pointers name ONVM structures (process memory and the manager's shared
// memory) that do not depend on the thread using them; onvm_nflib_run itself hands them to
// the loop thread it spawns, and kvlb's loop thread is the only one using them while the
// spawning thread waits for it.
unsafe impl Send for NfHandles {}

/// What the loop works on; lives on `OnvmNf::run`'s stack.
struct NfState<'a, P> {
    /// The shared datapath driver: panic containment, ticks, draining.
    driver: Driver<'a, P>,
    report: &'a mut (dyn FnMut(&mut P, Instant, &NfCounters) + Send),
    pool: Mempool,
    nf: NfHandles,
    clock: TscClock,
    opts: NfOptions,
    /// The pipeline's clock: read once per loop round (in `on_loop`), like a burst.
    now: Instant,
    last_rx: Instant,
    next_report: Instant,
    since_print: u64,
    /// Emitted frames with their metadata set, waiting for `onvm_nflib_return_pkt_bulk`.
    pending: Vec<Mbuf>,
    counters: NfCounters,
}

/// ONVM packet actions.
#[derive(Clone, Copy)]
enum Action {
    Drop,
    Next,
    ToNf(u16),
    Out(u16),
}

impl Action {
    fn encode(self) -> (u8, u16) {
        match self {
            Action::Drop => (onvm_sys::ONVM_NF_ACTION_DROP as u8, 0),
            Action::Next => (onvm_sys::ONVM_NF_ACTION_NEXT as u8, 0),
            Action::ToNf(s) => (onvm_sys::ONVM_NF_ACTION_TONF as u8, s),
            Action::Out(p) => (onvm_sys::ONVM_NF_ACTION_OUT as u8, p),
        }
    }
}

fn set_meta(meta: &mut onvm_pkt_meta, action: Action) {
    let (a, d) = action.encode();
    meta.action = a;
    meta.destination = d;
}

/// The ONVM metadata stored inside `m`.
fn meta_of(m: &mut RteMbuf) -> &mut onvm_pkt_meta {
    // SAFETY: ONVM keeps the packet metadata in the mbuf's udata64 field (8 bytes, inside
    // the mbuf header we hold exclusively); the returned pointer is valid and aligned for
    // the borrow of m.
    unsafe { &mut *onvm_sys::kvlb_onvm_pkt_meta(m.as_ptr()) }
}

impl<'a, P: Pipeline> NfState<'a, P> {
    /// The packet loop (ONVM's advanced rings), on the NF's packet thread: each round
    /// dequeues a burst from the NF's rx ring, decides and sends it ([`Self::handle_burst`]),
    /// then emitted frames, timers and the stats screen ([`Self::on_loop`]), then what
    /// `onvm_nflib_run`'s loop does besides packets.
    fn run_loop(&mut self, handles: NfHandles) {
        let NfHandles { ctx, nf } = handles;
        // SAFETY: ctx is this NF's context from a successful init (see NfHandles); the call
        // pins this thread to the NF's core and waits for the manager's handshake.
        let ready = unsafe { onvm_sys::kvlb_onvm_nf_ready(ctx) };
        if ready != 0 {
            log::error!("the ONVM manager did not take the NF's ready message ({ready})");
            return;
        }
        self.now = self.clock.now();
        self.last_rx = self.now;
        log::info!("kvlb NF running");
        // SAFETY: reads the time-stamp counter.
        let start_tsc = unsafe { onvm_sys::kvlb_rdtsc() };
        let mut rx = [std::ptr::null_mut::<rte_mbuf>(); BURST];
        // The raw calls below share one argument: ctx and nf are valid (see NfHandles), and
        // this thread is the only consumer of the NF's rx and message rings.
        // SAFETY: see above; reads an atomic.
        while unsafe { onvm_sys::kvlb_onvm_keep_running(ctx) } != 0 {
            // SAFETY: see above; sleeps only in the manager's shared-core mode.
            unsafe { onvm_sys::kvlb_onvm_sleep_if_idle(nf) };
            // SAFETY: see above; rx has room for the BURST pointers asked for.
            let n = unsafe { onvm_sys::kvlb_onvm_rx_burst(nf, rx.as_mut_ptr(), BURST as u16) };
            let n = usize::from(n).min(BURST);
            if n > 0 {
                // SAFETY: the ring filled the first n slots with its packets: live, direct
                // mbufs with a reference count of one, distinct, and this NF's alone until
                // handle_burst hands each back to ONVM or frees it.
                let burst = unsafe { Burst::new(&mut rx[..n]) };
                self.handle_burst(burst);
            }
            if self.on_loop() {
                // SAFETY: see above; writes an atomic.
                unsafe { onvm_sys::kvlb_onvm_stop_running(ctx) };
            }
            // SAFETY: see above; handles at most one manager message, as onvm_nflib_run does.
            if unsafe { onvm_sys::kvlb_onvm_housekeeping(ctx, start_tsc) } == 0 {
                break;
            }
        }
    }

    /// Decides every packet of a burst, sets its ONVM action, and hands the whole burst back
    /// to ONVM in one call, which frees DROP packets and delivers the others.
    fn handle_burst(&mut self, burst: Burst<'_>) {
        let frames = burst.0;
        let n = frames.len().min(BURST);
        self.last_rx = self.now;
        let mut verdicts = [UNDECIDED; BURST];
        // A burst may mix in-ports (the mbuf's port): the pipeline gets runs of consecutive
        // frames from one port, so the order of the frames is kept. Multi-segment frames
        // (larger than one mbuf) never reach it.
        let mut i = 0;
        while i < n {
            if !frames[i].is_contiguous() {
                self.counters.multi_segment += 1;
                i += 1;
                continue;
            }
            let port = frames[i].port();
            let mut j = i + 1;
            while j < n && frames[j].port() == port && frames[j].is_contiguous() {
                j += 1;
            }
            self.decide(PortId(port), &mut frames[i..j], &mut verdicts[i..j]);
            i = j;
        }

        for (frame, &verdict) in frames.iter_mut().zip(&verdicts[..n]) {
            self.counters.rx += 1;
            let action = self.action(verdict);
            set_meta(meta_of(frame), action);
            if self.opts.print_delay > 0 {
                self.since_print += 1;
                if self.since_print >= self.opts.print_delay {
                    self.since_print = 0;
                    self.sync_panics();
                    (self.report)(self.driver.pipeline_mut(), self.now, &self.counters);
                }
            }
        }
        // SAFETY: nf is this registered NF (valid during run); the first n elements of
        // frames are this burst's packets (as `*mut rte_mbuf`: see Burst::new), each with
        // its metadata set. ONVM takes ownership of all of them (delivers or frees them),
        // and the frames are not used afterwards (the slice ends with this call).
        unsafe {
            onvm_sys::kvlb_onvm_send_burst(
                self.nf.nf,
                frames.as_mut_ptr().cast::<*mut rte_mbuf>(),
                n as u16,
            );
        }
    }

    /// Fills `verdicts` for `frames` (single-segment, all from `in_port`) through the
    /// shared driver: if the pipeline panics, the frames it had decided keep their
    /// verdicts and the others are dropped, each counted as a panic.
    fn decide(&mut self, in_port: PortId, frames: &mut [&mut RteMbuf], verdicts: &mut [Verdict]) {
        let decided = self.driver.process_burst(self.now, in_port, frames);
        verdicts.copy_from_slice(decided);
    }

    /// The action a packet leaves with, counted. Under `-d` a frame for a port goes to that
    /// NF, and counts as handed to an NF.
    #[inline]
    fn action(&mut self, verdict: Verdict) -> Action {
        match verdict {
            // Multi-segment or panicked: counted where found.
            v if v == UNDECIDED => Action::Drop,
            Verdict::Out(p) => match self.opts.out_to_nf {
                Some(s) => {
                    self.counters.to_nf += 1;
                    Action::ToNf(s)
                }
                None => {
                    self.counters.out += 1;
                    Action::Out(p.0)
                }
            },
            Verdict::ToNf(s) => {
                self.counters.to_nf += 1;
                Action::ToNf(s.0)
            }
            Verdict::Next => {
                self.counters.next += 1;
                Action::Next
            }
            Verdict::Drop(_) => {
                self.counters.dropped += 1;
                Action::Drop
            }
        }
    }

    /// Once per loop round, after the burst. Returns whether the NF should stop.
    fn on_loop(&mut self) -> bool {
        self.now = self.clock.now();
        self.drain_emitted();
        let now = self.now;
        {
            // The tick's frames are emitted with it, as on every datapath.
            let (driver, mut send) = self.emit_sink();
            driver.tick(now, &mut send);
        }
        self.return_pending();
        if !self.opts.stats_interval.is_zero() && self.now >= self.next_report {
            self.sync_panics();
            (self.report)(self.driver.pipeline_mut(), self.now, &self.counters);
            self.next_report = self.now + self.opts.stats_interval;
        }
        self.opts.exit_when_idle
            && self.now - self.last_rx >= self.opts.idle_grace
            && self.driver.is_idle()
    }

    /// The driver's panic count in the NF's counters (for the stats screen).
    fn sync_panics(&mut self) {
        self.counters.panics = self.driver.counters().panics;
    }

    /// The driver and a sink that copies emitted frames into mbufs with their ONVM action,
    /// pending for [`Self::return_pending`].
    fn emit_sink(&mut self) -> (&mut Driver<'a, P>, impl FnMut(Instant, Dest, &[u8]) + '_) {
        let pool = self.pool;
        let out_to_nf = self.opts.out_to_nf;
        let pending = &mut self.pending;
        let counters = &mut self.counters;
        let send = move |_: Instant, dest: Dest, bytes: &[u8]| match pool.alloc_copy(bytes) {
            Ok(mut m) => {
                let action = match dest {
                    Dest::Port(p) => out_to_nf.map_or(Action::Out(p.0), Action::ToNf),
                    Dest::Nf(s) => Action::ToNf(s.0),
                };
                set_meta(meta_of(&mut m), action);
                counters.emitted += 1;
                pending.push(m);
            }
            Err(_) => counters.emit_failed += 1,
        };
        (&mut self.driver, send)
    }

    fn drain_emitted(&mut self) {
        let now = self.now;
        {
            let (driver, mut send) = self.emit_sink();
            driver.drain(now, &mut send);
        }
        if self.pending.len() >= 32 {
            self.return_pending();
        }
    }

    /// Hands the pending emitted frames to ONVM (which frees them if its ring is full).
    fn return_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let count = u16::try_from(self.pending.len()).unwrap_or(u16::MAX);
        // SAFETY: nf is this NF's registered entry (valid during run). The first `count`
        // Vec elements are owned mbufs laid out as *mut rte_mbuf (Mbuf is
        // repr(transparent)); ONVM takes ownership of all of them whatever the outcome
        // (it enqueues them to the NF's TX ring or frees them), so they are forgotten by
        // removing them from the Vec without running Drop.
        unsafe {
            let base = self.pending.as_mut_ptr();
            onvm_sys::onvm_nflib_return_pkt_bulk(self.nf.nf, base.cast::<*mut rte_mbuf>(), count);
            let len = self.pending.len();
            let n = usize::from(count);
            std::ptr::copy(base.add(n), base, len - n);
            self.pending.set_len(len - n);
        }
    }
}
