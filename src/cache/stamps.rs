//! Write stamps: per-key (per hash slot) versions that decide whether a GET response may
//! be learned into a cache.
//!
//! Owns: the freshness rule. Must not: hold values or know about backends.
//!
//! # The rule
//!
//! A value may be cached only from a GET response that no write to its key can have
//! overtaken: no write to the key was *in flight* when the GET was sent, and none was
//! sent or completed between the GET's sending and its response's arrival.
//!
//! Each slot (indexed by the key's [`KeyHash`], so colliding keys share one) holds a
//! sequence number that moves on every write event and a count of writes in flight:
//!
//! - [`WriteStamps::write_sent`] when a write (set, add, replace, append, prepend, cas,
//!   delete, incr, decr, touch, gat, ...) to the key is forwarded: `seq += 1, pending += 1`;
//! - [`WriteStamps::write_done`] when that write ends — its reply arrived (success *or*
//!   error), or its flow expired or was evicted, or its backend was declared down and its
//!   flows flushed: `seq += 1, pending -= 1`;
//! - [`WriteStamps::read_sent`] when a GET for the key is forwarded returns a
//!   [`ReadTicket`]: the slot's `seq`, or "never" when a write is in flight;
//! - [`WriteStamps::may_learn`] when the response arrives: the ticket still equals the
//!   slot's `seq` and nothing is in flight.
//!
//! Why both counts. Stamping only when a write is *sent* (the simplest scheme) is not
//! enough: a GET sent after a write was forwarded but before the backend applied it (UDP
//! reorders; the write may also be lost and retried by the client) returns the old value
//! with an unchanged stamp, and the cache would keep that old value after the write
//! lands. With `pending`, a GET sent while a write is in flight can never learn, and a
//! write completing while a GET is in flight moves `seq`, so that GET cannot learn either.
//! A GET sent after the last write completed was processed after the backend applied it
//! (the backend replied to the write first), so its response is at least that new.
//!
//! Collisions only cost learning opportunities: a write to a colliding key blocks
//! learning exactly as a write to the key itself would. Nothing is ever made fresher.
//!
//! The caller's duties, which the guarantee rests on: call `write_done` exactly once per
//! `write_sent` (a `noreply` write has no reply: keep its flow until it expires and call
//! `write_done` then); and invalidate the key in L1 and L2 at `write_sent`
//! ([`super::Caches::write_sent`] does both). `seq` is a `u64` per slot and never wraps in
//! practice, so a stale ticket can never match by accident. `pending` is bounded by the
//! number of outstanding flows; if it ever saturated it would stick there (the slot stops
//! learning) rather than undercount.

use std::mem::size_of;

use super::KeyHash;

/// One slot: a version that moves on every write event, and writes in flight.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    seq: u64,
    pending: u32,
}

/// What a GET carries from its sending to its response (keep it in the flow entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReadTicket(u64);

impl ReadTicket {
    /// A ticket that never allows learning (a GET sent while a write was in flight).
    pub const NEVER: ReadTicket = ReadTicket(u64::MAX);
}

/// A fixed-size table of write stamps indexed by key hash.
#[derive(Clone, Debug)]
pub struct WriteStamps {
    slots: Box<[Slot]>,
    mask: usize,
    /// Writes to every key at once (`flush_all`): a slot every key shares. A ticket is the
    /// sum of the key's slot version and this one's; both only grow, so the sum moves iff
    /// either does.
    all: Slot,
}

impl WriteStamps {
    /// A table of `slots` slots, rounded up to a power of two (at least 1). 65536 slots
    /// take 1 MiB.
    pub fn new(slots: usize) -> WriteStamps {
        let n = slots.max(1).next_power_of_two();
        WriteStamps {
            slots: vec![Slot::default(); n].into_boxed_slice(),
            mask: n - 1,
            all: Slot::default(),
        }
    }

    #[inline]
    fn slot(&self, h: KeyHash) -> &Slot {
        &self.slots[h.raw() as usize & self.mask]
    }

    #[inline]
    fn slot_mut(&mut self, h: KeyHash) -> &mut Slot {
        &mut self.slots[h.raw() as usize & self.mask]
    }

    /// A write to the key is being forwarded.
    #[inline]
    pub fn write_sent(&mut self, h: KeyHash) {
        let s = self.slot_mut(h);
        s.seq = s.seq.wrapping_add(1);
        s.pending = s.pending.saturating_add(1);
    }

    /// A write to the key ended (reply, error, expiry, eviction, backend down). Returns
    /// `false` when no write was in flight on the slot (a caller bug; the stamp still
    /// moves, which is the safe direction).
    #[inline]
    pub fn write_done(&mut self, h: KeyHash) -> bool {
        let s = self.slot_mut(h);
        s.seq = s.seq.wrapping_add(1);
        match s.pending {
            0 => false,
            // Saturated: the true count is unknown, so the slot never learns again.
            u32::MAX => true,
            _ => {
                s.pending -= 1;
                true
            }
        }
    }

    /// A write to every key (`flush_all`) is being forwarded.
    pub fn write_sent_all(&mut self) {
        self.all.seq = self.all.seq.wrapping_add(1);
        self.all.pending = self.all.pending.saturating_add(1);
    }

    /// A write to every key ended. Returns `false` when none was in flight.
    pub fn write_done_all(&mut self) -> bool {
        self.all.seq = self.all.seq.wrapping_add(1);
        match self.all.pending {
            0 => false,
            u32::MAX => true,
            _ => {
                self.all.pending -= 1;
                true
            }
        }
    }

    #[inline]
    fn stamp(&self, s: &Slot) -> u64 {
        s.seq.wrapping_add(self.all.seq)
    }

    /// A GET for the key is being forwarded.
    #[inline]
    pub fn read_sent(&self, h: KeyHash) -> ReadTicket {
        let s = self.slot(h);
        let stamp = self.stamp(s);
        if s.pending > 0 || self.all.pending > 0 || stamp == u64::MAX {
            ReadTicket::NEVER
        } else {
            ReadTicket(stamp)
        }
    }

    /// Whether the response of the GET that got `ticket` may be cached.
    #[inline]
    pub fn may_learn(&self, h: KeyHash, ticket: ReadTicket) -> bool {
        let s = self.slot(h);
        ticket != ReadTicket::NEVER
            && s.pending == 0
            && self.all.pending == 0
            && self.stamp(s) == ticket.0
    }

    /// Writes in flight on the key's slot.
    pub fn pending(&self, h: KeyHash) -> u32 {
        self.slot(h).pending
    }

    /// The key's slot version (moves on every write event).
    pub fn version(&self, h: KeyHash) -> u64 {
        self.slot(h).seq
    }

    /// The table's size (the tests' view).
    #[cfg(test)]
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    pub fn memory_bytes(&self) -> usize {
        self.slots.len() * size_of::<Slot>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_needs_a_quiet_slot() {
        let mut st = WriteStamps::new(1000);
        assert_eq!(st.slot_count(), 1024);
        let k = KeyHash::from_raw(5);
        let t = st.read_sent(k);
        assert!(st.may_learn(k, t));
        // A write sent after the GET blocks it, and so does its completion.
        st.write_sent(k);
        assert!(!st.may_learn(k, t));
        // A GET sent while the write is in flight never learns.
        let t2 = st.read_sent(k);
        assert_eq!(t2, ReadTicket::NEVER);
        assert!(st.write_done(k));
        assert!(!st.may_learn(k, t2));
        // A GET sent after the write completed learns.
        let t3 = st.read_sent(k);
        assert!(st.may_learn(k, t3));
        // Unmatched completion: reported, and still moves the stamp.
        assert!(!st.write_done(k));
        assert!(!st.may_learn(k, t3));
    }

    #[test]
    fn collisions_only_block() {
        let mut st = WriteStamps::new(16);
        let a = KeyHash::from_raw(3);
        let b = KeyHash::from_raw(3 + 16);
        let t = st.read_sent(a);
        st.write_sent(b);
        st.write_done(b);
        assert!(!st.may_learn(a, t));
        let other = KeyHash::from_raw(4);
        let t = st.read_sent(other);
        st.write_sent(a);
        assert!(st.may_learn(other, t));
        assert_eq!(st.pending(a), 1);
        assert_eq!(st.memory_bytes(), 16 * 16);
    }

    #[test]
    fn a_write_to_every_key_blocks_every_key() {
        let mut st = WriteStamps::new(16);
        let (a, b) = (KeyHash::from_raw(1), KeyHash::from_raw(2));
        let ta = st.read_sent(a);
        st.write_sent_all();
        assert_eq!(st.read_sent(b), ReadTicket::NEVER, "flush in flight");
        assert!(st.write_done_all());
        assert!(!st.may_learn(a, ta), "a GET overtaken by the flush");
        let tb = st.read_sent(b);
        assert!(st.may_learn(b, tb));
        assert!(!st.write_done_all(), "unmatched");
        assert!(!st.may_learn(b, tb), "the stamp still moves");
    }
}
