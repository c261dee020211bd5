//! OpenNetVM: kvlb as an ONVM network function (`kvlb onvm`).
//!
//! Owns: the NF lifecycle through `onvm_nflib` (local context, signal handler, function
//! table, init, run, stop), the C callbacks ONVM calls on its packet thread, the packet
//! metadata (`action`/`destination`) that routes each packet after kvlb, and the frames
//! kvlb emits (allocated from ONVM's shared pool, handed back with
//! `onvm_nflib_return_pkt_bulk`). Must not: make balancing decisions (the
//! [`Pipeline`] does), or let a raw pointer out of this module.
//!
//! Facts about ONVM v21.10 this module is built around:
//! - The NF library owns and frees the local context and the function table; they come
//!   from `onvm_nflib_init_nf_local_ctx`/`onvm_nflib_init_nf_function_table`, never from
//!   Rust. It also `rte_free`s `nf->data` on stop if it is set, so kvlb's per-NF state
//!   pointer is put there only for the duration of `onvm_nflib_run` and cleared before stop.
//! - `onvm_nflib_run` runs the packet loop on a thread it creates and joins; callbacks run
//!   there. Panics are caught at each callback: the packet is dropped and counted.
//! - `onvm_nflib_init` reads `argv[1]` unconditionally and EAL permutes `argv`; the C argv is
//!   built here, always has an element 1, and is leaked for the life of the process.
//! - ONVM installs its own SIGINT/SIGTERM handler; it stops the loop and calls back here.
//! - On stop the library writes `<tag>_stats.csv` into the working directory.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::ffi::{c_int, c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use onvm_sys::{onvm_nf, onvm_nf_local_ctx, onvm_pkt_meta, rte_mbuf};

use crate::clock::Instant;
use crate::datapath::dpdk::{DpdkError, Eal, Mbuf, Mempool, RteMbuf, TscClock};
use crate::nf::{Dest, DropReason, Pipeline, PortId, PortInfo, Verdict};

/// What can go wrong starting the NF.
#[derive(Debug, thiserror::Error)]
pub enum OnvmError {
    #[error("onvm_nflib_init failed ({0}); is the ONVM manager running, and are the EAL and ONVM arguments right (`-r SERVICE_ID` is required)?")]
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
    /// How often the pipeline's timers run (from ONVM's per-loop `user_actions`).
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
    pub fn run<P: Pipeline + Send>(
        &mut self,
        pipeline: &mut P,
        opts: &NfOptions,
        report: &mut (dyn FnMut(&mut P, Instant, &NfCounters) + Send),
    ) -> NfCounters {
        let clock = TscClock::new(self.eal);
        let mut state = NfState {
            pipeline,
            report,
            pool: self.pool,
            nf: self.nf(),
            clock,
            opts: opts.clone(),
            now: Instant::ZERO,
            last_rx: Instant::ZERO,
            next_tick: Instant::ZERO,
            next_report: Instant::ZERO + opts.stats_interval,
            since_print: 0,
            pending: Vec::with_capacity(64),
            counters: NfCounters::default(),
            panic_logged: false,
        };
        let nf = self.nf();
        // SAFETY: the NF is registered (init succeeded), so nf and its function table
        // (allocated by ONVM in init) are valid. The callbacks below find `state` through
        // nf->data. `state` lives on this stack frame until after onvm_nflib_run returns,
        // and onvm_nflib_run joins the only thread that calls them before returning, so
        // every dereference happens while `state` is alive; this thread does not touch
        // `state` meanwhile (it is blocked in the join), so the callbacks' &mut is
        // exclusive. P: Send and the Send report make handing them to that thread sound.
        // nf->data is cleared before stop because ONVM rte_free()s a non-NULL data.
        unsafe {
            let table = (*nf).function_table;
            (*table).setup = Some(on_setup::<P>);
            (*table).pkt_handler = Some(on_packet::<P>);
            (*table).user_actions = Some(on_loop::<P>);
            (*nf).data = (&mut state as *mut NfState<'_, P>).cast::<c_void>();
            onvm_sys::onvm_nflib_run(self.ctx.as_ptr());
            (*nf).data = std::ptr::null_mut();
        }
        state.return_pending();
        (state.report)(state.pipeline, state.clock.now(), &state.counters);
        if SIGNALLED.load(Ordering::SeqCst) {
            log::info!("stopped by signal");
        }
        state.counters
    }
}

impl Drop for OnvmNf {
    fn drop(&mut self) {
        // SAFETY: the context came from a successful init and is stopped exactly once;
        // nf->data is NULL again (run clears it). ONVM frees the context and the table.
        unsafe { onvm_sys::onvm_nflib_stop(self.ctx.as_ptr()) }
    }
}

/// What the callbacks work on; lives on `OnvmNf::run`'s stack while ONVM's loop runs.
struct NfState<'a, P> {
    pipeline: &'a mut P,
    report: &'a mut (dyn FnMut(&mut P, Instant, &NfCounters) + Send),
    pool: Mempool,
    nf: *mut onvm_nf,
    clock: TscClock,
    opts: NfOptions,
    /// The pipeline's clock: read once per loop round (in `user_actions`), like a burst.
    now: Instant,
    last_rx: Instant,
    next_tick: Instant,
    next_report: Instant,
    since_print: u64,
    /// Emitted frames with their metadata set, waiting for `onvm_nflib_return_pkt_bulk`.
    pending: Vec<Mbuf>,
    counters: NfCounters,
    panic_logged: bool,
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

impl<P: Pipeline> NfState<'_, P> {
    fn handle(&mut self, m: &mut RteMbuf, meta: &mut onvm_pkt_meta) {
        self.counters.rx += 1;
        self.last_rx = self.now;
        if !m.is_contiguous() {
            self.counters.multi_segment += 1;
            set_meta(meta, Action::Drop);
            return;
        }
        let (now, in_port) = (self.now, PortId(m.port()));
        let pipeline = &mut *self.pipeline;
        let verdict = catch_unwind(AssertUnwindSafe(|| pipeline.process_frame(now, in_port, m)));
        let action = match verdict {
            // Counted by the action the packet leaves with: under `-d` a frame for a port
            // goes to that NF, and counts as handed to an NF.
            Ok(Verdict::Out(p)) => match self.opts.out_to_nf {
                Some(s) => {
                    self.counters.to_nf += 1;
                    Action::ToNf(s)
                }
                None => {
                    self.counters.out += 1;
                    Action::Out(p.0)
                }
            },
            Ok(Verdict::ToNf(s)) => {
                self.counters.to_nf += 1;
                Action::ToNf(s.0)
            }
            Ok(Verdict::Next) => {
                self.counters.next += 1;
                Action::Next
            }
            Ok(Verdict::Drop(_)) => {
                self.counters.dropped += 1;
                Action::Drop
            }
            Err(_) => {
                self.panicked();
                Action::Drop
            }
        };
        set_meta(meta, action);
        // Emitted frames are collected once per loop round, in on_loop.
        if self.opts.print_delay > 0 {
            self.since_print += 1;
            if self.since_print >= self.opts.print_delay {
                self.since_print = 0;
                (self.report)(self.pipeline, self.now, &self.counters);
            }
        }
    }

    /// Once per ONVM loop round. Returns whether the NF should stop.
    fn on_loop(&mut self) -> bool {
        self.now = self.clock.now();
        self.drain_emitted();
        self.return_pending();
        if self.now >= self.next_tick {
            let now = self.now;
            let pipeline = &mut *self.pipeline;
            if catch_unwind(AssertUnwindSafe(|| pipeline.on_tick(now))).is_err() {
                self.panicked();
            }
            self.drain_emitted();
            self.return_pending();
            self.next_tick = now + self.opts.tick_interval;
        }
        if !self.opts.stats_interval.is_zero() && self.now >= self.next_report {
            (self.report)(self.pipeline, self.now, &self.counters);
            self.next_report = self.now + self.opts.stats_interval;
        }
        self.opts.exit_when_idle
            && self.now - self.last_rx >= self.opts.idle_grace
            && self.pipeline.is_idle()
    }

    fn panicked(&mut self) {
        self.counters.panics += 1;
        let pipeline = &mut *self.pipeline;
        let _ = catch_unwind(AssertUnwindSafe(|| pipeline.count_drop(DropReason::Panic)));
        if !self.panic_logged {
            self.panic_logged = true;
            log::error!(
                "the pipeline panicked; the packet was dropped (later panics are only counted)"
            );
        }
    }

    fn drain_emitted(&mut self) {
        let pool = self.pool;
        let out_to_nf = self.opts.out_to_nf;
        let pending = &mut self.pending;
        let counters = &mut self.counters;
        let pipeline = &mut *self.pipeline;
        let drained = catch_unwind(AssertUnwindSafe(|| {
            pipeline.drain_emitted(&mut |dest, bytes| match pool.alloc_copy(bytes) {
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
            })
        }));
        if drained.is_err() {
            self.panicked();
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
            onvm_sys::onvm_nflib_return_pkt_bulk(self.nf, base.cast::<*mut rte_mbuf>(), count);
            let len = self.pending.len();
            let n = usize::from(count);
            std::ptr::copy(base.add(n), base, len - n);
            self.pending.set_len(len - n);
        }
    }
}

/// Finds the state `run` registered.
///
/// # Safety
/// `ctx` must be the context passed to ONVM's callbacks during `OnvmNf::run::<P>`.
unsafe fn state_of<'s, P>(ctx: *mut onvm_nf_local_ctx) -> &'s mut NfState<'s, P> {
    // SAFETY: per the caller, ctx->nf->data is the NfState<P> that run placed there, alive
    // and exclusively used by this (ONVM's loop) thread for the duration of the callback.
    unsafe { &mut *(*(*ctx).nf).data.cast::<NfState<'s, P>>() }
}

unsafe extern "C" fn on_setup<P: Pipeline>(ctx: *mut onvm_nf_local_ctx) {
    // SAFETY: ONVM calls setup on its loop thread with the NF's context while run waits.
    let state = unsafe { state_of::<P>(ctx) };
    state.now = state.clock.now();
    state.last_rx = state.now;
    log::info!("kvlb NF running");
}

unsafe extern "C" fn on_packet<P: Pipeline>(
    pkt: *mut rte_mbuf,
    meta: *mut onvm_pkt_meta,
    ctx: *mut onvm_nf_local_ctx,
) -> c_int {
    // SAFETY: ONVM calls the packet handler on its loop thread while run waits, with a
    // packet it dequeued from this NF's ring (a direct mbuf nobody else touches until the
    // handler returns) and that packet's metadata.
    unsafe {
        let state = state_of::<P>(ctx);
        match (NonNull::new(pkt), meta.as_mut()) {
            (Some(pkt), Some(meta)) => state.handle(RteMbuf::from_ptr(pkt), meta),
            (_, Some(meta)) => set_meta(meta, Action::Drop),
            _ => {}
        }
    }
    // 0: ONVM forwards the packet according to its metadata.
    0
}

unsafe extern "C" fn on_loop<P: Pipeline>(ctx: *mut onvm_nf_local_ctx) -> c_int {
    // SAFETY: ONVM calls user_actions on its loop thread while run waits.
    let state = unsafe { state_of::<P>(ctx) };
    c_int::from(state.on_loop())
}
