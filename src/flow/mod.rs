//! The request table: (client address, client request id) ↔ (backend, kvlb request id),
//! with expiry.
//!
//! Owns: matching responses to requests, and the kvlb-side request-id space. Must not: parse
//! packets or choose backends.
//!
//! # Id space
//! Memcached's UDP request id is 16 bits. kvlb widens its side of the space with several
//! UDP source ports toward the backends: a request forwarded to a backend is identified by
//! its [`Token`] = (source-port index, request id), and the backend's reply comes back to
//! that port with that id. Tokens are slots of one preallocated table, so a lookup is an
//! index, not a hash.
//!
//! # Never a wrong match
//! A reply is matched only if its token names a live entry *and* it comes from the backend
//! the entry was sent to. A token whose entry expired is quarantined for one more timeout
//! before reuse, so a late reply to an expired request cannot match the next request that
//! happens to get the same token. An answered token rests one timeout before reuse too, so
//! a duplicated reply cannot match the next request either, unless the table has no other
//! token left: then the longest-resting answered token is reused. Freed tokens are reused
//! oldest-first. A full table refuses the insert; the caller counts the drop.
//!
//! # Working set
//! A slot that has never been used is handed out only when no freed token has finished
//! resting, so the slots in circulation are about (request rate × two timeouts), however
//! large the configured capacity, and stay in the CPU caches and TLB when that is small.
//! Slots are allocated as they are first handed out, so memory follows that working set
//! too, not the capacity (65,536 slots of 168 bytes are 11 MB, most of it never used at a
//! modest rate).
//! (Cycling through every slot of the table instead touched all of it; and at 1 Mpps it
//! reused a token after 65 ms, sooner than the default 250 ms timeout.)

use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::time::Duration;

use crate::clock::Instant;

/// How far ahead of the slot it expires [`FlowTable::pop_expired`] loads the next one.
const PREFETCH_AHEAD: usize = 4;

/// The kvlb side of an outstanding request: which source port and request id it left with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Token {
    /// Index into the configured source ports.
    pub port_index: u16,
    pub request_id: u16,
}

/// Why an insert was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    #[error("flow table full")]
    Full,
}

/// One token's slot: the table's own fields take 14 bytes beside `T` (with a 2-byte
/// backend id), so a `T` of 48 bytes with a niche would fill one 64-byte cache line.
#[derive(Debug)]
struct Slot<T, B> {
    /// The outstanding request; `None` once answered, expired or never used.
    value: Option<T>,
    sent: Instant,
    /// Bumped on every insert, so queued expiry records of earlier occupants are ignored.
    generation: u32,
    /// Where the request went: only a reply from there matches.
    backend: B,
}

/// The request table, generic over what the caller keeps per request (`T`) and how it
/// names the backend a request went to (`B`: an address, or a small backend id).
#[derive(Debug)]
pub struct FlowTable<T, B = SocketAddrV4> {
    /// Slots handed out at least once; the table may grow to `capacity`.
    slots: Vec<Slot<T, B>>,
    capacity: usize,
    /// Freed tokens, oldest-freed first, with the time their rest ends.
    free: VecDeque<(Instant, u32)>,
    /// (deadline, slot, generation) in insertion order: every entry lives for the same
    /// `timeout`, so deadlines are already sorted.
    expiry: VecDeque<(Instant, u32, u32)>,
    /// Expired tokens waiting out their quarantine: (reusable at, slot).
    quarantine: VecDeque<(Instant, u32)>,
    timeout: Duration,
    live: usize,
    /// Number of source ports: slot `i` is token (port `i % ports`, id `i / ports`), so
    /// consecutive slots alternate ports.
    ports: u32,
}

impl<T, B: Copy + Eq> FlowTable<T, B> {
    /// A table of `capacity` entries over `source_ports` ports (capacity is capped at
    /// 65536 per port). Entries expire after `timeout`.
    pub fn new(capacity: usize, source_ports: u16, timeout: Duration) -> FlowTable<T, B> {
        let ports = u32::from(source_ports.max(1));
        let capacity = capacity.clamp(1, (ports as usize) << 16);
        FlowTable {
            ports,
            slots: Vec::new(),
            capacity,
            free: VecDeque::new(),
            expiry: VecDeque::new(),
            quarantine: VecDeque::new(),
            timeout,
            live: 0,
        }
    }

    /// Records a request sent to `backend` at `now`; returns the token it must carry, or
    /// the value back when the table is full.
    pub fn insert(&mut self, now: Instant, backend: B, value: T) -> Result<Token, (FlowError, T)> {
        self.release_quarantine(now);
        let rested = self.free.front().is_some_and(|&(at, _)| at <= now);
        let slot_ix = if !rested && self.slots.len() < self.capacity {
            self.slots.push(Slot {
                value: None,
                sent: now,
                generation: 0,
                backend,
            });
            (self.slots.len() - 1) as u32
        } else {
            match self.free.pop_front() {
                Some((_, s)) => s,
                None => return Err((FlowError::Full, value)),
            }
        };
        let slot = &mut self.slots[slot_ix as usize];
        slot.generation = slot.generation.wrapping_add(1);
        slot.value = Some(value);
        slot.sent = now;
        slot.backend = backend;
        self.expiry
            .push_back((now + self.timeout, slot_ix, slot.generation));
        self.live += 1;
        Ok(self.token(slot_ix))
    }

    /// Borrows the entry for a reply from `backend` carrying `token`, if it matches.
    #[inline]
    pub fn get(&self, token: Token, backend: B) -> Option<&T> {
        let slot = self.slots.get(self.slot(token))?;
        match &slot.value {
            Some(v) if slot.backend == backend => Some(v),
            _ => None,
        }
    }

    /// Mutably borrows a matching entry (see [`FlowTable::get`]).
    #[inline]
    pub fn get_mut(&mut self, token: Token, backend: B) -> Option<&mut T> {
        let ix = self.slot(token);
        let slot = self.slots.get_mut(ix)?;
        match &mut slot.value {
            Some(v) if slot.backend == backend => Some(v),
            _ => None,
        }
    }

    /// Removes and returns a matching entry with the time its request was sent. Its reply
    /// has arrived (at `now`): the token rests one timeout, then is reusable.
    pub fn remove(&mut self, now: Instant, token: Token, backend: B) -> Option<(Instant, T)> {
        let slot_ix = self.slot(token);
        let slot = self.slots.get_mut(slot_ix)?;
        if slot.value.is_none() || slot.backend != backend {
            return None;
        }
        let value = slot.value.take()?;
        self.live -= 1;
        self.free.push_back((now + self.timeout, slot_ix as u32));
        Some((slot.sent, value))
    }

    /// Removes and returns one entry whose deadline is ≤ `now` (oldest first), with the
    /// backend it was sent to and when; its token is quarantined for one more timeout.
    /// `None` once no entry is due: the caller may then act on the core in between pops,
    /// and each expired entry moves out exactly once.
    pub fn pop_expired(&mut self, now: Instant) -> Option<(Token, B, Instant, T)> {
        while let Some(&(deadline, slot_ix, generation)) = self.expiry.front() {
            if deadline > now {
                break;
            }
            self.expiry.pop_front();
            // Expired slots were last touched a timeout ago: load a few ahead so their
            // misses overlap (a load kept opaque, as a software prefetch in safe Rust).
            if let Some(&(_, ahead, _)) = self.expiry.get(PREFETCH_AHEAD) {
                std::hint::black_box(self.slots[ahead as usize].generation);
            }
            let slot = &mut self.slots[slot_ix as usize];
            if slot.generation != generation {
                continue;
            }
            if let Some(value) = slot.value.take() {
                let (backend, sent) = (slot.backend, slot.sent);
                self.live -= 1;
                self.quarantine.push_back((now + self.timeout, slot_ix));
                return Some((self.token(slot_ix), backend, sent, value));
            }
        }
        self.release_quarantine(now);
        // Answered entries leave stale records behind; keep the queue bounded by dropping
        // them from the front once they dominate.
        if self.expiry.len() > 2 * self.slots.len().max(1024) {
            let slots = &self.slots;
            self.expiry.retain(|&(_, s, g)| {
                slots[s as usize].generation == g && slots[s as usize].value.is_some()
            });
        }
        None
    }

    fn token(&self, slot: u32) -> Token {
        Token {
            port_index: (slot % self.ports) as u16,
            request_id: (slot / self.ports) as u16,
        }
    }

    fn slot(&self, token: Token) -> usize {
        if u32::from(token.port_index) >= self.ports {
            return usize::MAX; // out of range: no slot matches
        }
        (u32::from(token.request_id) * self.ports + u32::from(token.port_index)) as usize
    }

    fn release_quarantine(&mut self, now: Instant) {
        while let Some(&(at, slot_ix)) = self.quarantine.front() {
            if at > now {
                break;
            }
            self.quarantine.pop_front();
            // Its quarantine was its rest.
            self.free.push_back((at, slot_ix));
        }
    }

    /// Loads the slots the next `n` inserts will take (the oldest freed tokens), so a burst
    /// of inserts does not stall on each one: freed slots were last touched a timeout ago.
    /// Reads only (a load kept opaque, as a software prefetch in safe Rust).
    #[inline]
    pub fn touch_next(&self, n: usize) {
        for &(_, s) in self.free.iter().take(n) {
            std::hint::black_box(self.slots[s as usize].generation);
        }
    }

    /// The earliest deadline of a live entry, if any. Only the tests use it: they check
    /// with it that an answered entry's old deadline is passed over.
    #[cfg(test)]
    pub fn next_deadline(&self) -> Option<Instant> {
        self.expiry
            .iter()
            .find(|&&(_, s, g)| {
                let slot = &self.slots[s as usize];
                slot.generation == g && slot.value.is_some()
            })
            .map(|&(d, _, _)| d)
    }

    /// Outstanding entries.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Tokens that can be handed out right now.
    pub fn available(&self) -> usize {
        self.free.len() + (self.capacity - self.slots.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b(n: u8) -> SocketAddrV4 {
        SocketAddrV4::new([10, 0, 0, n].into(), 11211)
    }

    fn t(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    #[test]
    fn insert_match_remove() {
        let mut f = FlowTable::new(4, 2, Duration::from_millis(100));
        let a = f.insert(t(0), b(1), "a").unwrap();
        let c = f.insert(t(0), b(2), "c").unwrap();
        assert_ne!(a, c);
        // Tokens alternate ports.
        assert_ne!(a.port_index, c.port_index);
        assert_eq!(f.get(a, b(1)), Some(&"a"));
        assert_eq!(
            f.get(a, b(2)),
            None,
            "reply from another backend must not match"
        );
        assert_eq!(f.remove(t(0), a, b(1)), Some((t(0), "a")));
        assert_eq!(f.remove(t(0), a, b(1)), None);
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn answered_tokens_rest_a_timeout_and_circulation_follows_the_rate_not_the_capacity() {
        let mut f = FlowTable::new(1 << 16, 4, Duration::from_millis(10));
        let a = f.insert(t(0), b(1), 0).unwrap();
        assert!(f.remove(t(1), a, b(1)).is_some());
        // Still resting: a fresh token, not `a`.
        let c = f.insert(t(5), b(1), 1).unwrap();
        assert_ne!(c, a);
        assert!(f.remove(t(5), c, b(1)).is_some());
        // Rested: reused.
        assert_eq!(f.insert(t(11), b(1), 2).unwrap(), a);
        // One request per ms, each answered at once, for 10 s: about a timeout's worth of
        // tokens circulate, not the 65,536 of the table.
        let mut seen = std::collections::HashSet::new();
        for ms in 20..10_020u64 {
            let tok = f.insert(t(ms), b(1), ms).unwrap();
            seen.insert(tok);
            assert!(f.remove(t(ms), tok, b(1)).is_some());
        }
        assert!(seen.len() <= 12, "{} tokens circulated", seen.len());
        assert_eq!(f.available(), (1 << 16) - 1);
        // And only the slots that circulated were ever allocated.
        assert!(f.slots.len() <= 12, "{} slots allocated", f.slots.len());
    }

    #[test]
    fn full_table_refuses() {
        let mut f = FlowTable::new(2, 1, Duration::from_millis(100));
        f.insert(t(0), b(1), 1).unwrap();
        f.insert(t(0), b(1), 2).unwrap();
        assert_eq!(f.insert(t(0), b(1), 3), Err((FlowError::Full, 3)));
    }

    #[test]
    fn expired_tokens_are_quarantined() {
        let mut f = FlowTable::new(1, 1, Duration::from_millis(100));
        let a = f.insert(t(0), b(1), 1).unwrap();
        let mut gone = vec![];
        while let Some((tok, be, _, v)) = f.pop_expired(t(100)) {
            gone.push((tok, be, v));
        }
        assert_eq!(gone, vec![(a, b(1), 1)]);
        assert_eq!(f.get(a, b(1)), None);
        // The only token is in quarantine: the table is full until it is released.
        assert_eq!(f.insert(t(150), b(1), 2), Err((FlowError::Full, 2)));
        let a2 = f.insert(t(200), b(1), 2).unwrap();
        assert_eq!(a, a2);
        assert_eq!(f.get(a2, b(1)), Some(&2));
    }

    #[test]
    fn pop_expired_hands_out_due_entries_oldest_first_and_not_those_inserted_meanwhile() {
        let mut f = FlowTable::new(8, 1, Duration::from_millis(100));
        let a = f.insert(t(0), b(1), 1).unwrap();
        let c = f.insert(t(10), b(2), 2).unwrap();
        f.insert(t(50), b(1), 3).unwrap();
        assert_eq!(f.pop_expired(t(120)), Some((a, b(1), t(0), 1)));
        // Acting on an expiry may send a new request: it is not due yet.
        f.insert(t(120), b(2), 4).unwrap();
        assert_eq!(f.pop_expired(t(120)), Some((c, b(2), t(10), 2)));
        assert_eq!(f.pop_expired(t(120)), None);
        assert_eq!(f.len(), 2);
        assert_eq!(f.get(a, b(1)), None);
    }

    #[test]
    fn answered_entries_do_not_expire_later_occupants() {
        let mut f = FlowTable::new(1, 1, Duration::from_millis(100));
        let a = f.insert(t(0), b(1), 1).unwrap();
        f.remove(t(0), a, b(1)).unwrap();
        let a2 = f.insert(t(90), b(1), 2).unwrap();
        assert_eq!(a, a2);
        // The first occupant's deadline (100ms) passes; the second (190ms) must survive.
        assert_eq!(f.pop_expired(t(120)), None, "nothing is due");
        assert_eq!(f.get(a2, b(1)), Some(&2));
        assert_eq!(f.next_deadline(), Some(t(190)));
    }

    proptest! {
        /// Against a model: a reply matches iff its request is live, from the right backend,
        /// and never after expiry; counts stay consistent.
        #[test]
        fn model(ops in proptest::collection::vec((0u8..4, 0u8..3, 0u16..40), 1..300)) {
            let timeout = Duration::from_millis(10);
            let mut f = FlowTable::new(8, 2, timeout);
            let mut model: std::collections::HashMap<Token, (SocketAddrV4, Instant, u32)> = Default::default();
            let mut now = t(0);
            let mut next = 0u32;
            for (op, be, dt) in ops {
                now = now + Duration::from_micros(u64::from(dt) * 100);
                match op {
                    0 | 1 => match f.insert(now, b(be), next) {
                        Ok(tok) => {
                            prop_assert!(!model.contains_key(&tok));
                            model.insert(tok, (b(be), now, next));
                            next += 1;
                        }
                        Err((FlowError::Full, _)) => prop_assert!(f.len() + f.available() <= 8),
                    },
                    2 => {
                        // A reply for some live token, possibly from the wrong backend.
                        if let Some((&tok, &(bk, sent, v))) = model.iter().next() {
                            let from = b(be);
                            let got = f.remove(now, tok, from);
                            if from == bk {
                                prop_assert_eq!(got, Some((sent, v)));
                                model.remove(&tok);
                            } else {
                                prop_assert_eq!(got, None);
                            }
                        }
                    }
                    _ => {
                        let mut expired = vec![];
                        while let Some(e) = f.pop_expired(now) {
                            expired.push(e);
                        }
                        for (tok, bk, sent_at, v) in expired {
                            let (mb, sent, mv) = model.remove(&tok).expect("expired a live entry");
                            prop_assert_eq!((mb, mv, sent), (bk, v, sent_at));
                            prop_assert!(sent + timeout <= now);
                        }
                        for (_, &(_, sent, _)) in model.iter() {
                            prop_assert!(sent + timeout > now, "overdue entry survived expire");
                        }
                    }
                }
                prop_assert_eq!(f.len(), model.len());
            }
        }
    }
}
