//! The balancing core: classify → detect → cache → route → rewrite.
//!
//! Owns: every balancing decision. Must not: do I/O, read clocks, spawn threads or hold
//! globals. Datapaths hand it frames (or datagrams, in socket mode) and the current
//! [`Instant`]; it answers with a [`Verdict`] per frame and queues frames it wants sent
//! (replica writes, probes, ARP) in an outbox the datapath drains.
#![forbid(unsafe_code)]

use std::fmt;

use crate::clock::Instant;
use crate::config::{Config, ConfigError, Mac};
use crate::stats::Stats;

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

/// A frame buffer the core may rewrite in place and grow into its tailroom (a cache hit
/// turns the request into the reply inside the same buffer).
pub trait FrameBuf {
    fn bytes(&self) -> &[u8];
    fn bytes_mut(&mut self) -> &mut [u8];
    /// Sets the frame length. Growing exposes bytes of unspecified content. Fails, leaving
    /// the frame unchanged, when the buffer has no room.
    fn set_len(&mut self, len: usize) -> Result<(), NoRoom>;
}

/// The buffer cannot hold the requested length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoRoom;

impl FrameBuf for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        self
    }
    fn set_len(&mut self, len: usize) -> Result<(), NoRoom> {
        // Bounded like a jumbo-frame mbuf so the core behaves the same on every datapath.
        if len > MAX_FRAME {
            return Err(NoRoom);
        }
        self.resize(len, 0);
        Ok(())
    }
}

/// Largest frame any datapath hands the core or receives from it.
pub const MAX_FRAME: usize = 9216;

/// A datapath port as the core sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortInfo {
    pub id: PortId,
    pub mac: Mac,
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

    /// Handles one frame that arrived on `in_port`.
    pub fn process_frame<F: FrameBuf + ?Sized>(
        &mut self,
        now: Instant,
        in_port: PortId,
        frame: &mut F,
    ) -> Verdict {
        let _ = (now, in_port, frame.bytes());
        self.stats.frames_in += 1;
        Verdict::Drop(DropReason::NotForUs)
    }

    /// Runs timers due at `now`: detector epochs, replication, flow expiry, probes.
    pub fn on_tick(&mut self, now: Instant) {
        let _ = now;
    }

    /// Hands every queued emitted frame to `send`, oldest first, and empties the outbox.
    pub fn drain_emitted(&mut self, mut send: impl FnMut(Dest, &[u8])) {
        for (dest, frame) in self.outbox.drain(..) {
            send(dest, &frame);
        }
    }

    /// Counts a frame the datapath dropped on the core's behalf (e.g. after a panic).
    pub fn count_drop(&mut self, reason: DropReason) {
        self.stats.count_drop(reason);
    }

    /// Whether no request is outstanding (used by `--exit-when-idle`).
    pub fn is_idle(&self) -> bool {
        true
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}
