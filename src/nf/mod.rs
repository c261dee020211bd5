//! The balancing core: classify → detect → cache → route → rewrite.
//!
//! Owns: every balancing decision. Must not: do I/O, read clocks, spawn threads or hold
//! globals. Datapaths hand it frames and the current [`Instant`]; it answers with a
//! [`Verdict`] per frame and queues frames it wants sent (replica writes, probes, ARP) in
//! an outbox the datapath drains. Identical inputs give identical outputs on every datapath.
//!
//! # Per frame
//! 1. **Classify** ([`crate::wire::classify`]). ARP for kvlb's addresses is answered;
//!    frames neither to the VIP nor answers to kvlb's source ports are passed on
//!    ([`Verdict::Next`]) or dropped (`--other-traffic`), counted by reason.
//! 2. **Client request** (to the VIP): admission ([`guard`]), parse, count the key in the
//!    hot-key detector. A plain `get` of a cached key is answered in place: the request
//!    frame becomes the reply and no backend sees it. Otherwise the request goes to the
//!    key's ketama server, or for a replicated hot key to the least loaded server that holds
//!    its latest value ([`hot`]); a write first invalidates the caches and bumps the key's
//!    write stamp; a `set` of a hot key is also copied to its replicas and the client gets
//!    the primary's reply only. Multi-key gets are split per server.
//! 3. **Backend response** (to a source port): matched in the flow table, learned into a
//!    cache when the key is hot or warm and nothing wrote it since the request left, then
//!    rewritten back to the client with the client's request id.
//! 4. **Timers** ([`Pipeline::on_tick`]): heat changes start and stop replication and move
//!    values between cache layers; the L2 layer switches with measured skew; unanswered
//!    requests expire (timeouts mark backends down, the ring is rebuilt, hot keys are
//!    reassigned); down backends are probed; backend MACs are resolved by ARP.

mod flows;
mod groups;
pub mod guard;
pub mod hot;
pub mod neighbors;

mod outbox;
mod request;
mod response;
#[cfg(test)]
mod tests;
mod timers;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use crate::backend::{BackendId, BackendPool, Health};
use crate::cache::{CacheSettings, Caches, KeyHash, KeyHasher, ReadTicket};
use crate::clock::Instant;
use crate::config::{CachePolicy, Config, ConfigError, Mac, ReplicaSelect};

pub use crate::config::{PortId, ServiceId};
use crate::flow::Token;
use crate::hotkey::{self, AnyDetector, Detector, DetectorParams, Sampled};
use crate::ring::{KetamaRing, RingHashMemo};
use crate::stats::{BackendReport, HotKeyReport, Report, Stats};

pub use crate::stats::{DropReason, PassReason};
use crate::wire::{self, Classified, VlanTag};

pub use crate::wire::{FrameBuf, NoRoom, MAX_FRAME};

use groups::{GroupRef, Groups};
use guard::SourceGuard;
use hot::{HotKeys, Readers};
use neighbors::Neighbors;
use outbox::Outbox;

/// Where a frame goes after the core has handled it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send the (possibly rewritten) frame out of this port.
    Out(PortId),
    /// Hand the frame to another NF by service id (ONVM); other datapaths count it as
    /// "to-NF" output.
    ToNf(ServiceId),
    /// Pass the frame on unchanged to the next stage of the service chain.
    Next,
    /// Drop the frame.
    Drop(DropReason),
}

/// Where an emitted frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    Port(PortId),
    Nf(ServiceId),
}

/// A datapath port as the core sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortInfo {
    pub id: PortId,
    pub mac: Mac,
}

/// What a packet datapath drives: [`Core`] in production; tests of a datapath's mechanics
/// may plug in something simpler.
pub trait Pipeline {
    /// Handles one frame that arrived on `in_port`, possibly rewriting it in place: a burst
    /// of one, for tests and callers that get frames one at a time.
    fn process_frame<F: FrameBuf + ?Sized>(
        &mut self,
        now: Instant,
        in_port: PortId,
        frame: &mut F,
    ) -> Verdict;

    /// Handles a burst of frames that arrived together on `in_port`, at `now`, possibly
    /// rewriting each in place: what packet datapaths call on their fast path.
    ///
    /// The contract:
    /// - `frames` and `verdicts` have the same length, and `verdicts[i]` is the verdict on
    ///   `frames[i]`. The frames are decided as if handed to
    ///   [`process_frame`](Pipeline::process_frame) one by one, in order; an
    ///   implementation may work in stages over the whole burst, but must not reorder
    ///   decisions.
    /// - The pipeline writes `verdicts[i]` once it has decided `frames[i]`. A verdict it
    ///   never wrote keeps what the caller put there: the datapath driver fills the slice
    ///   with `Drop(Panic)` first, so if the pipeline panics mid-burst, the frames it had
    ///   not decided are dropped and counted as panics, and the decided ones keep their
    ///   verdicts.
    /// - Frames the pipeline emits while handling the burst are queued; the caller drains
    ///   them ([`drain_emitted`](Pipeline::drain_emitted)) after the burst.
    ///
    /// The default loops over [`process_frame`](Pipeline::process_frame).
    fn process_burst<F: FrameBuf>(
        &mut self,
        now: Instant,
        in_port: PortId,
        frames: &mut [F],
        verdicts: &mut [Verdict],
    ) {
        debug_assert_eq!(frames.len(), verdicts.len());
        for (frame, verdict) in frames.iter_mut().zip(verdicts.iter_mut()) {
            *verdict = self.process_frame(now, in_port, frame);
        }
    }

    /// Runs timers due at `now`.
    fn on_tick(&mut self, now: Instant);
    /// When the pipeline next needs [`on_tick`](Pipeline::on_tick) (see
    /// [`Core::poll_timeout`]); `None`: not until something else happens. The default,
    /// `Instant::ZERO`, asks for every tick the datapath offers.
    fn poll_timeout(&self) -> Option<Instant> {
        Some(Instant::ZERO)
    }
    /// Hands every queued emitted frame to `send`, oldest first, and empties the outbox.
    fn drain_emitted(&mut self, send: &mut dyn FnMut(Dest, &[u8]));
    /// Counts a frame the datapath dropped on the pipeline's behalf (e.g. after a panic).
    fn count_drop(&mut self, reason: DropReason);
    /// Whether no request is outstanding (used by `--exit-when-idle`).
    fn is_idle(&self) -> bool;
}

/// The client side of a forwarded request: where its reply goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Client {
    mac: Mac,
    vlan: Option<VlanTag>,
    ip: Ipv4Addr,
    port: u16,
    request_id: u16,
    in_port: PortId,
}

/// What kvlb needs to learn a value from a GET's reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Learn {
    /// The key's write stamp when the GET left (see [`crate::cache::stamps`]).
    ticket: ReadTicket,
    key_hash: KeyHash,
    ring_hash: u32,
}

/// The writes a request carries, each reported done to the caches exactly once (when its
/// reply arrives or its flow expires).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Writes {
    None,
    One(KeyHash),
    Many(Box<[KeyHash]>),
    /// `flush_all`: every key.
    All,
}

#[derive(Debug)]
struct ClientFlow {
    client: Client,
    /// The reply ends with END (retrieval); otherwise the first complete message ends it.
    retrieval: bool,
    /// Whether a reply is expected: `noreply` and quiet requests expire without counting
    /// as a backend timeout (a reply that comes anyway is still passed on).
    expect_reply: bool,
    learn: Option<Learn>,
    writes: Writes,
    /// A write of a replicated hot key: its key, to report the primary's answer.
    hot_write: Option<Box<[u8]>>,
    /// A one-key GET of a hot key whose L1 entry holds no value: the key, so that a miss
    /// can be learned as its absence (an `END` reply names no key).
    miss_key: Option<Box<[u8]>>,
    group: Option<GroupRef>,
    /// Reply bytes still allowed to the client (anti-amplification).
    cap_left: usize,
    /// What the reply must look like (see [`response::Expect`]).
    expect: response::Expect,
}

/// A nonce in memcached's opaque flag (`O<hex>`) on every request kvlb makes itself
/// (replication fetches and writes, fences). memcached echoes it in the reply, so a reply
/// that comes back after its request expired and its token was reused is told apart from
/// the reply to the request now holding the token, even when both are of the same kind
/// and for the same key (see `Core::reply_fits` for client requests, which carry no such
/// field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Opaque(u32);

/// Meta flags ending in an [`Opaque`], formatted on the stack.
struct MetaFlags {
    buf: [u8; 64],
    len: usize,
}

impl MetaFlags {
    /// `args` (may be empty) then ` O<hex>`. 64 bytes hold the longest flags kvlb writes
    /// (`v f t k O…` and `F<u32> T<i32> O…`, under 40 bytes).
    fn new(args: fmt::Arguments<'_>, opaque: Opaque) -> MetaFlags {
        use std::io::Write;
        let mut buf = [0u8; 64];
        let mut w = &mut buf[..];
        let room = w.len();
        let _ = w.write_fmt(args);
        let sep = if w.len() == room { "" } else { " " };
        let _ = write!(w, "{sep}O{:x}", opaque.0);
        let len = room - w.len();
        MetaFlags { buf, len }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// What an outstanding request is.
#[derive(Debug)]
enum FlowKind {
    Client(ClientFlow),
    /// A copy of a hot key's write (client `set` copy or replication write), sent as
    /// `ms <key> <len> F<flags> T<exptime> O<opaque>`.
    Replica {
        key: Box<[u8]>,
        seq: u64,
        opaque: Opaque,
        /// The copy is the key's absence (`md <key> O<opaque>`): `HD` and `NF` both leave
        /// the replica without the key.
        delete: bool,
    },
    /// A replication fetch (`mg <key> v f t k O<opaque>`) to the primary.
    Fetch {
        key: Box<[u8]>,
        seq: u64,
        learn: Learn,
        opaque: Opaque,
    },
    /// A health probe (`version`) to a down backend.
    Probe,
    /// `flush_all` to a backend that answered its probe, before it rejoins.
    RejoinFlush,
    /// A fencing delete (`md <key> O<opaque>`) on a hot key's new primary.
    Fence {
        key: Box<[u8]>,
        opaque: Opaque,
    },
    /// A broadcast copy (flush_all, verbosity) whose reply is not the client's.
    Absorb {
        flush: bool,
        expect_reply: bool,
    },
}

#[derive(Debug)]
struct Flow {
    backend: BackendId,
    kind: FlowKind,
}

/// Most keys remembered as written away from a down backend (see `note_displaced`).
const MAX_DISPLACED: usize = 1 << 16;

/// Seeds the cache key hash. Fixed so a core is deterministic (replays reproduce);
/// the keyed hash still spreads keys, and L1/L2 are bounded whatever the keys.
const CACHE_SEED: u64 = 0x6b76_6c62_6361_6368;

/// A map the core iterates (hot keys, keys written away from a down backend), hashed with
/// fixed keys: hashbrown's default hasher is seeded per process, which made the order of
/// what the core emits from such an iteration (replication fetches, clean-up deletes),
/// and so token assignment, differ between runs of the same input. Both maps are bounded
/// (the hot set; `MAX_DISPLACED`).
pub(crate) type FixedMap<K, V> = hashbrown::HashMap<K, V, KeyHasher>;

/// An empty [`FixedMap`].
pub(crate) fn fixed_map<K, V>() -> FixedMap<K, V> {
    FixedMap::with_hasher(KeyHasher::new(CACHE_SEED))
}

/// What the datapath below the core is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Real frames (DPDK, ONVM, replay): ARP matters.
    Frames,
    /// Frames synthesized from kernel sockets: addresses are L3 only.
    Sockets,
}

/// The deterministic balancing core shared by every datapath.
#[derive(Debug)]
pub struct Core {
    // --- settings ---
    mode: Mode,
    vip: SocketAddrV4,
    local_ip: Ipv4Addr,
    server_port: PortId,
    ports: Vec<PortInfo>,
    source_ports: Vec<u16>,
    hotkeys: bool,
    replicas: usize,
    replica_select: ReplicaSelect,
    cache_policy: CachePolicy,
    cache_misses: bool,
    rejoin_flush: bool,
    pass_other: bool,

    // --- state ---
    detector: Option<Sampled<AnyDetector>>,
    ring: KetamaRing,
    /// Ketama hashes of recently routed keys (MD5 is the dominant routing cost).
    ring_memo: RingHashMemo,
    backends: BackendPool,
    flows: flows::Flows,
    groups: Groups,
    hot: HotKeys,
    caches: Caches,
    neighbors: Neighbors,
    /// Each backend's MAC as `neighbors` resolves it, by backend id, refreshed whenever
    /// the table learns something: forwarding reads it instead of hashing the address.
    backend_macs: Vec<Option<Mac>>,
    guard: SourceGuard,
    stats: Stats,
    outbox: Outbox,
    /// Backends waiting for their rejoin flush to be answered.
    rejoining: Vec<bool>,
    /// Every backend is up (the common case: plain ring lookups).
    all_up: bool,
    /// Keys written to another server while their ketama server was down → that server.
    displaced: FixedMap<Box<[u8]>, BackendId>,
    /// Some backend is up.
    any_up: bool,
    ip_ident: u16,
    /// The last [`Opaque`] handed out.
    opaque: u32,
    rng: u64,
    started: Option<Instant>,
    timers: timers::Timers,
}

/// Errors building a core.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("hot-key detector: {0}")]
    Detector(#[from] hotkey::HotkeyError),
    #[error("ketama ring: {0}")]
    Ring(#[from] crate::ring::RingError),
    #[error("caches: {0}")]
    Cache(#[from] crate::cache::CacheError),
    #[error("{0}")]
    Invalid(String),
}

impl From<CoreError> for ConfigError {
    fn from(e: CoreError) -> ConfigError {
        match e {
            CoreError::Config(c) => c,
            other => ConfigError::Invalid(other.to_string()),
        }
    }
}

impl Core {
    /// Builds a core for `cfg` serving frames on `ports` (their MACs are kvlb's own).
    pub fn new(cfg: &Config, ports: &[PortInfo]) -> Result<Core, CoreError> {
        let base = cfg.source_port_base;
        if base == 0 {
            return Err(CoreError::Invalid(
                "--source-port-base 0 (kernel-chosen ports) only works with `kvlb serve`".into(),
            ));
        }
        let source_ports: Vec<u16> = (0..cfg.source_ports).map(|i| base + i).collect();
        Core::build(cfg, ports, source_ports, Mode::Frames)
    }

    /// Builds a core for the socket datapath: its one pseudo-port `port` (both the client
    /// and the server port), `source_ports` as bound. The datapath puts the neighbour
    /// entries of its synthetic frames into `cfg`.
    pub fn for_sockets(
        cfg: &Config,
        port: PortInfo,
        source_ports: &[u16],
    ) -> Result<Core, CoreError> {
        let mut cfg = cfg.clone();
        cfg.client_port = port.id;
        cfg.server_port = port.id;
        Core::build(&cfg, &[port], source_ports.to_vec(), Mode::Sockets)
    }

    fn build(
        cfg: &Config,
        ports: &[PortInfo],
        source_ports: Vec<u16>,
        mode: Mode,
    ) -> Result<Core, CoreError> {
        cfg.validate()?;
        let vip = cfg
            .vip
            .ok_or_else(|| CoreError::Invalid("--vip IP:PORT is required".into()))?;
        let local_ip = cfg.effective_local_ip().unwrap_or(*vip.ip());
        if source_ports.is_empty() {
            return Err(CoreError::Invalid("no source ports".into()));
        }
        if local_ip == *vip.ip() && source_ports.contains(&vip.port()) {
            return Err(CoreError::Invalid(format!(
                "the VIP port {} is also a source port toward backends",
                vip.port()
            )));
        }
        for id in [cfg.client_port, cfg.server_port] {
            if !ports.iter().any(|p| p.id == id) {
                return Err(CoreError::Invalid(format!(
                    "port {id} (--client-port/--server-port) is not one of the datapath's ports {:?}",
                    ports.iter().map(|p| p.id.0).collect::<Vec<_>>()
                )));
            }
        }
        if cfg.allow.is_empty() {
            log::warn!(
                "no --allow given: any source may use the VIP {vip} (replies to untrusted \
                 sources stay capped at {} bytes per request)",
                cfg.unverified_reply_bytes
            );
        }
        let detector = if cfg.hotkeys {
            // The detector's tables hash like the caches, so the request path hashes each
            // key once for all of them (`Detector::observe_hashed`).
            Some(hotkey::build_sampled(&DetectorParams {
                seed: CACHE_SEED,
                ..DetectorParams::from_config(cfg)?
            })?)
        } else {
            None
        };
        let backends = BackendPool::new(cfg);
        let ring = KetamaRing::from_backends(&cfg.backends, &backends.live_mask())?;
        let n_ports = u16::try_from(source_ports.len()).unwrap_or(u16::MAX);
        let neighbors = Neighbors::new(&cfg.neighbors, Duration::from_secs(1));
        let backend_macs = backend_macs(&backends, &neighbors);
        Ok(Core {
            mode,
            vip,
            local_ip,
            server_port: cfg.server_port,
            ports: ports.to_vec(),
            source_ports,
            hotkeys: cfg.hotkeys,
            replicas: cfg.replicas,
            replica_select: cfg.replica_select,
            cache_policy: cfg.cache_policy,
            cache_misses: cfg.cache_misses,
            rejoin_flush: cfg.rejoin_flush,
            pass_other: cfg.pass_other,
            detector,
            ring,
            // 4 MiB. Over the core bench's 10^6 Zipf-0.99 keys, 2^17 slots instead of 2^14
            // save 5 % of the instructions per request (fewer MD5s; callgrind) with the
            // same last-level misses (simulated 2 MiB LL).
            ring_memo: RingHashMemo::new(1 << 17),
            rejoining: vec![false; backends.len()],
            all_up: true,
            any_up: true,
            displaced: fixed_map(),
            backends,
            flows: flows::Flows::new(cfg.flow_capacity, n_ports, cfg.request_timeout),
            groups: Groups::default(),
            hot: HotKeys::new(Duration::from_millis(100), cfg.request_timeout),
            caches: Caches::new(&CacheSettings {
                max_age: Some(cfg.cache_ttl),
                ..CacheSettings::from_config(cfg, CACHE_SEED)
            })?,
            neighbors,
            backend_macs,
            guard: SourceGuard::new(
                &cfg.allow,
                &cfg.effective_trusted(),
                cfg.rate_limit,
                cfg.rate_burst,
                cfg.unverified_reply_bytes,
            ),
            stats: Stats::default(),
            outbox: Outbox::default(),
            ip_ident: 0,
            opaque: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
            started: None,
            timers: timers::Timers::new(cfg),
        })
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The caches' counters now (the report snapshots them; this has no side effect). For
    /// `tests/core_model.rs`, which checks between reports.
    pub fn cache_counters(&self) -> crate::cache::CacheCounters {
        self.caches.counters()
    }

    /// kvlb's MAC on `port`.
    fn port_mac(&self, port: PortId) -> Mac {
        self.ports
            .iter()
            .find(|p| p.id == port)
            .map_or(self.ports[0].mac, |p| p.mac)
    }

    #[inline]
    fn drop(&mut self, reason: DropReason) -> Verdict {
        self.stats.count_drop(reason);
        Verdict::Drop(reason)
    }

    /// Frames that are not kvlb's: passed on (counted by reason) or dropped.
    fn other(&mut self, reason: PassReason) -> Verdict {
        if self.pass_other {
            self.stats.count_pass(reason);
            Verdict::Next
        } else {
            self.drop(DropReason::NotForUs)
        }
    }

    /// A cheap deterministic random number (xorshift), for power-of-two choices.
    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    fn next_opaque(&mut self) -> Opaque {
        self.opaque = self.opaque.wrapping_add(1);
        Opaque(self.opaque)
    }

    fn next_ip_ident(&mut self) -> u16 {
        self.ip_ident = self.ip_ident.wrapping_add(1);
        self.ip_ident
    }

    /// The network reported `addr` unreachable (ICMP, or the socket datapath's error
    /// queue): mark the backend at that address down.
    pub fn on_unreachable(&mut self, now: Instant, addr: SocketAddrV4) {
        if let Some(id) = self.backends.find(addr) {
            if let Some(h) = self.backends.on_unreachable(id, now) {
                self.apply_health(now, h);
            }
        }
    }

    /// A request kvlb sent from `local` to `backend` (the flow token's source address and
    /// the request id of its frame header) will never be answered: the connection it went
    /// on failed (the TCP front end's backend pools). Ended as if it had timed out now, so
    /// the backend's timeout streak grows (a failed connection is no sign of life) and a
    /// split get ends without the part. False if no such request is outstanding.
    pub fn request_failed(
        &mut self,
        now: Instant,
        local: SocketAddrV4,
        request_id: u16,
        backend: SocketAddrV4,
    ) -> bool {
        if *local.ip() != self.local_ip {
            return false;
        }
        let Some(port_index) = self.source_ports.iter().position(|&p| p == local.port()) else {
            return false;
        };
        let Some(id) = self.backends.find(backend) else {
            return false;
        };
        let token = Token {
            port_index: port_index as u16,
            request_id,
        };
        let Some((sent, flow)) = self.flows.remove(now, token, id) else {
            return false;
        };
        self.expired(now, flow.backend, sent, flow.kind);
        true
    }

    /// A backend went down or came back: its keys move to (or back from) the next live
    /// point of the continuum, and hot keys are reassigned.
    ///
    /// The ring itself never changes: lookups skip down servers (minimal movement: keys of
    /// live servers never move). libmemcached's auto-eject instead rebuilds the continuum,
    /// which with unequal weights also moves keys between live servers; kvlb avoids that
    /// because a key that moves between live servers and back would find an old copy.
    fn apply_health(&mut self, now: Instant, h: Health) {
        match h {
            Health::Down(_) => {}
            Health::Up(id) => {
                self.rejoining[id] = false;
                self.clean_displaced(now, id);
            }
        }
        self.all_up = self.backends.live_count() == self.backends.len();
        self.any_up = self.backends.live_count() > 0;
        let fenced = {
            let (ring, backends, r) = (&self.ring, &self.backends, self.replicas);
            self.hot.reassign(|key| {
                ring.replicas_where(KetamaRing::hash(key), r, |b| backends.get(b).is_up())
                    .iter()
                    .collect()
            })
        };
        // Fencing deletes go out with the next replication round (see `timers`).
        self.stats.replication.fenced += fenced.len() as u64;
        log::info!(
            "{} of {} backends up",
            self.backends.live_count(),
            self.backends.len()
        );
    }

    /// `owner` is back: delete the copies of its keys written elsewhere while it was down.
    fn clean_displaced(&mut self, now: Instant, owner: BackendId) {
        let ring = &self.ring;
        let mine: Vec<(Box<[u8]>, BackendId)> = self
            .displaced
            .iter()
            .filter(|(k, _)| ring.server_for_hash(KetamaRing::hash(k)) == Some(owner))
            .map(|(k, &b)| (k.clone(), b))
            .collect();
        for (key, fallback) in mine {
            self.displaced.remove(&key);
            // Deleted as a cooled key's copies are (see `timers::clean_up_cooled`): a
            // request timeout from now, when no write sent to the fallback before the owner
            // came back can still be in flight; retried until acknowledged; and should the
            // owner fail again first, the key's reads are misses, not the copy.
            self.hot.note_copy(&key, fallback, owner);
            self.stats.replication.displaced_cleaned += 1;
            self.timers.clean_up_later(now, key, vec![fallback]);
        }
    }

    /// The ketama hash of `key`, through the memo.
    #[inline]
    fn ring_hash(&mut self, key: &[u8]) -> u32 {
        let h = self.caches.key_hash(key);
        self.ring_memo.hash(h.raw(), key)
    }

    /// The live server for a key hash: its ketama server, or the next live one.
    #[inline]
    fn primary_for(&self, hash: u32) -> Option<BackendId> {
        if self.all_up {
            self.ring.server_for_hash(hash)
        } else if !self.any_up {
            None // without this, every lookup would walk the whole continuum
        } else {
            self.ring
                .server_for_hash_where(hash, |b| self.backends.get(b).is_up())
        }
    }

    /// The primary and up to `r` further live servers for a key hash.
    fn live_replicas(&self, hash: u32, r: usize) -> Vec<BackendId> {
        self.ring
            .replicas_where(hash, r, |b| self.backends.get(b).is_up())
            .iter()
            .collect()
    }

    /// A snapshot of everything kvlb reports.
    pub fn report(&mut self, now: Instant) -> Report {
        let uptime = self
            .started
            .map_or(0.0, |s| now.saturating_duration_since(s).as_secs_f64());
        self.stats.cache = self.caches.counters();
        self.stats.cache_state = crate::stats::CacheState {
            l1_keys: self.caches.l1().len() as u64,
            l1_filled: self.caches.l1().filled() as u64,
            l2_on: self.caches.l2().is_on(),
            l2_keys: self.caches.l2().len() as u64,
            l2_bytes: self.caches.l2().used_bytes() as u64,
            memory_bytes: self.caches.memory().total() as u64,
        };
        let backends = self
            .backends
            .iter()
            .map(|b| BackendReport {
                addr: b.spec.to_string(),
                up: b.is_up(),
                requests: b.counters.requests,
                responses: b.counters.responses,
                bytes_out: b.counters.bytes_out,
                bytes_in: b.counters.bytes_in,
                timeouts: b.counters.timeouts,
                errors: b.counters.errors,
                outstanding: b.outstanding(),
                p50_us: b.latency_percentile_us(0.5),
                p99_us: b.latency_percentile_us(0.99),
                p999_us: b.latency_percentile_us(0.999),
            })
            .collect();
        self.backends.reset_latency();
        let hot_keys = match &self.detector {
            Some(d) => d
                .hot_items()
                .into_iter()
                .take(32)
                .map(|item| HotKeyReport {
                    ready_replicas: self
                        .hot
                        .get(&item.key)
                        .map_or(0, |h| h.ready_replicas() as u32),
                    cached: self
                        .caches
                        .l1()
                        .get(self.caches.key_hash(&item.key), &item.key)
                        .is_some(),
                    key: String::from_utf8_lossy(&item.key).into_owned(),
                    estimate: item.estimate,
                    max_error: item.max_error,
                })
                .collect(),
            None => Vec::new(),
        };
        Report {
            uptime_s: uptime,
            stats: self.stats.clone(),
            backends,
            hot_keys,
            outstanding: self.flows.len() as u64,
            tcp: None,
        }
    }
}

/// Frames the staged burst path handles per round: stage 1 runs over this many frames
/// before stage 2 and 3 do, so what stage 1 found stays on the stack (and the per-key state
/// stage 2 touched stays in the CPU caches) until stage 3 uses it.
const STAGE_FRAMES: usize = 32;

/// What stage 1 of [`Core::process_burst`](Pipeline::process_burst) found in a frame,
/// without changing anything: the classification, and for a plain one-key `get` to the
/// VIP, its key's cache hash (the one hash every per-key table of the GET path indexes by).
#[derive(Clone, Copy, Debug)]
struct Staged {
    classified: Result<Classified, wire::Error>,
    get_hash: Option<KeyHash>,
}

impl Core {
    /// Stage 1: classify a frame and hash a plain GET's key. Pure: stage 3 decides on the
    /// same bytes.
    #[inline]
    fn stage_classify(&self, bytes: &[u8]) -> Staged {
        let classified = wire::classify(bytes);
        let mut get_hash = None;
        if let Ok(Classified::Udp(u)) = &classified {
            if u.dst_ip == *self.vip.ip() && u.dst_port == self.vip.port() {
                // The parser's own fast path (`parse_datagram` takes it first): the same key.
                let payload = u.payload(bytes);
                if let Some(msg) = payload.get(wire::mc_header::HEADER_LEN..) {
                    if let Some(keys) = crate::proto::simple_get(msg) {
                        get_hash = Some(self.caches.key_hash(keys.first()));
                    }
                }
            }
        }
        Staged {
            classified,
            get_hash,
        }
    }

    /// Stage 2: load the per-key state a GET's decision reads (its write stamp and ring
    /// memo slot), for the whole burst before any of it is decided, so those misses overlap
    /// instead of stalling one decision after another. Reads only.
    #[inline]
    fn stage_touch(&self, s: &Staged) {
        if let Some(h) = s.get_hash {
            std::hint::black_box(self.caches.read_sent(h));
            self.ring_memo.touch(h.raw());
        }
    }

    /// Stage 3: decide one frame from what stage 1 found.
    #[inline]
    fn decide<F: FrameBuf + ?Sized>(
        &mut self,
        now: Instant,
        in_port: PortId,
        frame: &mut F,
        staged: Staged,
    ) -> Verdict {
        if self.started.is_none() {
            self.started = Some(now);
        }
        self.stats.frames_in += 1;
        let verdict = match staged.classified {
            Ok(Classified::Udp(u)) => {
                if u.dst_ip == *self.vip.ip() && u.dst_port == self.vip.port() {
                    self.on_request(now, in_port, frame, u, staged.get_hash)
                } else if u.dst_ip == self.local_ip {
                    match self.source_ports.iter().position(|&p| p == u.dst_port) {
                        Some(ix) => self.on_response(now, frame, u, ix as u16),
                        None => self.other(PassReason::UdpNotForUs),
                    }
                } else {
                    self.other(PassReason::UdpNotForUs)
                }
            }
            Ok(Classified::Arp(a)) => self.on_arp(in_port, &a),
            Err(wire::Error::NotUdp) => {
                if let Some(dead) = self.icmp_unreachable(frame.bytes()) {
                    self.on_unreachable(now, dead);
                }
                self.other(PassReason::NotUdp)
            }
            Err(wire::Error::NotIpv4) => self.other(PassReason::NotIpv4),
            Err(e) => self.drop(DropReason::Wire(e)),
        };
        if !matches!(verdict, Verdict::Drop(_) | Verdict::Next) {
            self.stats.frames_out += 1;
        }
        verdict
    }
}

impl Pipeline for Core {
    /// A burst of one: the same three stages as [`Core::process_burst`].
    fn process_frame<F: FrameBuf + ?Sized>(
        &mut self,
        now: Instant,
        in_port: PortId,
        frame: &mut F,
    ) -> Verdict {
        let staged = self.stage_classify(frame.bytes());
        self.decide(now, in_port, frame, staged)
    }

    /// The staged request path: per round of up to 32 frames, (1) classify every frame and
    /// hash each plain GET's key once, (2) touch the per-key state the decisions will read,
    /// (3) decide and rewrite each frame in order. Stages 1 and 2 change nothing, so the
    /// decisions are exactly those of [`process_frame`](Pipeline::process_frame) frame by
    /// frame; each verdict is written as soon as its frame is decided.
    fn process_burst<F: FrameBuf>(
        &mut self,
        now: Instant,
        in_port: PortId,
        frames: &mut [F],
        verdicts: &mut [Verdict],
    ) {
        debug_assert_eq!(frames.len(), verdicts.len());
        let empty = Staged {
            classified: Err(wire::Error::Truncated),
            get_hash: None,
        };
        let mut staged = [empty; STAGE_FRAMES];
        for (frames, verdicts) in frames
            .chunks_mut(STAGE_FRAMES)
            .zip(verdicts.chunks_mut(STAGE_FRAMES))
        {
            let staged = &mut staged[..frames.len()];
            for (s, f) in staged.iter_mut().zip(frames.iter()) {
                *s = self.stage_classify(f.bytes());
            }
            let mut gets = 0;
            for s in staged.iter() {
                self.stage_touch(s);
                gets += usize::from(s.get_hash.is_some());
            }
            // Forwarded GETs take the oldest freed flow slots, in order.
            self.flows.touch_next(gets);
            for ((f, v), s) in frames
                .iter_mut()
                .zip(verdicts.iter_mut())
                .zip(staged.iter())
            {
                *v = self.decide(now, in_port, f, *s);
            }
        }
    }

    fn on_tick(&mut self, now: Instant) {
        if self.started.is_none() {
            self.started = Some(now);
        }
        self.tick(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Core::poll_timeout(self)
    }

    fn drain_emitted(&mut self, send: &mut dyn FnMut(Dest, &[u8])) {
        self.stats.frames_out += self.outbox.len() as u64;
        self.outbox.drain(send);
    }

    fn count_drop(&mut self, reason: DropReason) {
        self.stats.count_drop(reason);
    }

    fn is_idle(&self) -> bool {
        self.flows.is_empty()
    }
}

/// Each backend's MAC as `neighbors` resolves it, by backend id.
fn backend_macs(backends: &BackendPool, neighbors: &Neighbors) -> Vec<Option<Mac>> {
    backends
        .iter()
        .map(|b| neighbors.lookup(*b.addr().ip()))
        .collect()
}

impl Core {
    /// ARP: answer requests for kvlb's addresses, learn senders.
    fn on_arp(&mut self, in_port: PortId, a: &wire::ArpFrame) -> Verdict {
        let ours = a.arp.target_ip == *self.vip.ip() || a.arp.target_ip == self.local_ip;
        if !ours && a.arp.sender_ip != a.arp.target_ip {
            // Learn neighbours that talk to us only; pass other ARP on.
            return self.other(PassReason::ArpNotForUs);
        }
        if self.neighbors.learn(a.arp.sender_ip, a.arp.sender_mac) {
            self.backend_macs = backend_macs(&self.backends, &self.neighbors);
        }
        if ours && a.arp.operation == wire::arp::Operation::Request {
            let mac = self.port_mac(in_port);
            self.outbox.emit(Dest::Port(in_port), |buf| {
                wire::emit_arp_reply(buf, a, mac).map_err(|_| ())
            });
        }
        self.drop(DropReason::Arp)
    }

    /// If `frame` is an ICMP destination-unreachable (host or port) quoting a datagram
    /// kvlb sent to a backend, the backend's address.
    fn icmp_unreachable(&self, frame: &[u8]) -> Option<SocketAddrV4> {
        let u = wire::icmp::parse_unreachable(frame)?;
        let addr = SocketAddrV4::new(u.quoted_dst_ip, u.quoted_dst_port);
        (u.quoted_src_ip == self.local_ip && self.backends.find(addr).is_some()).then_some(addr)
    }

    /// A server that can serve a read of a key (its primary, or a ready replica) whose
    /// recent load is below the mean: under `--cache-policy balance` a cached key is read
    /// there instead of from the cache, until that server has caught up. `readers` is the
    /// key's hot-key view, if it is hot. A fenced key has none: its primary may still hold
    /// an old copy, so its reads are answered with a miss (see [`hot`]).
    fn underloaded_reader(&self, readers: Option<&Readers>, hash: u32) -> Option<BackendId> {
        if readers.is_some_and(Readers::is_fenced) {
            return None;
        }
        let mean = self.backends.mean_load();
        let below = |b: BackendId| {
            let be = self.backends.get(b);
            be.is_up() && be.load() < mean
        };
        match readers {
            Some(r) => r
                .servers()
                .filter(|&b| below(b))
                .min_by_key(|&b| self.backends.get(b).load()),
            None => self.primary_for(hash).filter(|&b| below(b)),
        }
    }

    /// Picks the server for a read of a key: the ketama server, or for a replicated hot key
    /// (`readers`) the least loaded server holding its latest value.
    fn pick_read_server(&mut self, readers: Option<&Readers>, hash: u32) -> Option<BackendId> {
        if let Some(h) = readers {
            let primary = h.primary();
            let mut candidates = [0usize; crate::ring::MAX_REPLICA_SET];
            let mut n = 0;
            for b in h.servers() {
                if n < candidates.len() && self.backends.get(b).is_up() {
                    candidates[n] = b;
                    n += 1;
                }
            }
            let chosen = match (n, self.replica_select) {
                (0, _) => None,
                (1, _) => Some(candidates[0]),
                (_, ReplicaSelect::LeastLoaded) => {
                    candidates[..n].iter().copied().min_by_key(|&b| {
                        let be = self.backends.get(b);
                        (be.load(), be.outstanding())
                    })
                }
                (_, ReplicaSelect::LeastOutstanding) => candidates[..n]
                    .iter()
                    .copied()
                    .min_by_key(|&b| self.backends.get(b).outstanding()),
                (_, ReplicaSelect::PowerOfTwo) => {
                    let r = self.random();
                    let a = candidates[(r % n as u64) as usize];
                    let b = candidates[((r >> 32) % n as u64) as usize];
                    Some(
                        if self.backends.get(a).outstanding() <= self.backends.get(b).outstanding()
                        {
                            a
                        } else {
                            b
                        },
                    )
                }
            };
            if let Some(c) = chosen {
                if c != primary {
                    self.stats.replication.replica_reads += 1;
                }
                return Some(c);
            }
        }
        self.primary_for(hash)
    }
}
