//! The balancing core: classify → detect → cache → route → rewrite.
//!
//! Owns: every balancing decision. Must not: do I/O, read clocks, spawn threads or hold
//! globals. Datapaths hand it frames (or datagrams, in socket mode) and the current
//! [`Instant`]; it answers with a [`Verdict`] per frame and queues frames it wants sent
//! (replica writes, probes, ARP) in an outbox the datapath drains.
#![forbid(unsafe_code)]

pub mod guard;
pub mod hot;
pub mod neighbors;

use std::fmt;

use crate::clock::Instant;
use crate::config::{Config, ConfigError, Mac};
use crate::stats::Stats;
pub use crate::wire::{FrameBuf, NoRoom, MAX_FRAME};

/// A datapath port, as numbered by the datapath (DPDK port id, ONVM port id, pcap "0").
pub type PortId = u16;

/// An ONVM service id.
pub type ServiceId = u16;

/// Why the core dropped a frame. Every drop is counted under [`DropReason::name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// The datapath caught a panic while the core handled this frame.
    Panic,
    /// The frame is not for kvlb and no pass-through is configured.
    NotForUs,
}

impl DropReason {
    /// Stable name used as the key in stats output.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Panic => "panic",
            DropReason::NotForUs => "not_for_us",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

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
    /// Handles one frame that arrived on `in_port`, possibly rewriting it in place.
    fn process_frame<F: FrameBuf + ?Sized>(
        &mut self,
        now: Instant,
        in_port: PortId,
        frame: &mut F,
    ) -> Verdict;
    /// Runs timers due at `now`.
    fn on_tick(&mut self, now: Instant);
    /// Hands every queued emitted frame to `send`, oldest first, and empties the outbox.
    fn drain_emitted(&mut self, send: &mut dyn FnMut(Dest, &[u8]));
    /// Counts a frame the datapath dropped on the pipeline's behalf (e.g. after a panic).
    fn count_drop(&mut self, reason: DropReason);
    /// Whether no request is outstanding (used by `--exit-when-idle`).
    fn is_idle(&self) -> bool;
}

/// The deterministic balancing core shared by every datapath.
#[derive(Debug)]
pub struct Core {
    stats: Stats,
    outbox: Vec<(Dest, Vec<u8>)>,
}

impl Core {
    /// Builds a core for `cfg` serving frames on `ports` (empty in socket mode).
    pub fn new(cfg: &Config, ports: &[PortInfo]) -> Result<Core, ConfigError> {
        cfg.validate()?;
        let _ = ports;
        Ok(Core {
            stats: Stats::default(),
            outbox: Vec::new(),
        })
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

impl Pipeline for Core {
    fn process_frame<F: FrameBuf + ?Sized>(
        &mut self,
        now: Instant,
        in_port: PortId,
        frame: &mut F,
    ) -> Verdict {
        // The pipeline proper lands with the wire/proto, hotkey, ring and cache modules.
        let _ = (now, in_port, frame.bytes());
        self.stats.frames_in += 1;
        Verdict::Drop(DropReason::NotForUs)
    }

    fn on_tick(&mut self, now: Instant) {
        let _ = now;
    }

    fn drain_emitted(&mut self, send: &mut dyn FnMut(Dest, &[u8])) {
        for (dest, frame) in self.outbox.drain(..) {
            send(dest, &frame);
        }
    }

    fn count_drop(&mut self, reason: DropReason) {
        self.stats.count_drop(reason);
    }

    fn is_idle(&self) -> bool {
        true
    }
}
