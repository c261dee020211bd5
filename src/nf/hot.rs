//! Replication state of hot keys: which servers may serve a read of a hot key right now.
//!
//! # The rules (why reads are never stale)
//! Each hot key has a *write sequence* moved by every write kvlb forwards for it (drawn
//! from one counter shared by all keys and hot periods, so an acknowledgement left over
//! from an earlier hot period can never match the current one), and a server set: the
//! primary (the key's ketama server, the source of truth) and up to R replicas (the next
//! distinct live servers on the continuum).
//! - A replica is **ready** iff it is in the key's current server set and acknowledged
//!   (`STORED`) a write that carried the key's latest write sequence. Only the primary and
//!   ready replicas are read.
//! - A new hot period starts with no replica ready: kvlb first fetches the value from the
//!   primary, then writes it to the replicas, and a replica becomes ready on its ack only if
//!   no write to the key happened since the fetch was sent.
//! - A client `set` of a hot key goes to the primary and, as a copy, to every replica that
//!   has no write of this key in flight. **At most one write per (key, replica) is ever in
//!   flight**, across hot periods and server-set changes too, so two writes can never be
//!   reordered on the way to one replica: a key that cools while copies are in flight stays
//!   here, hidden, until they are answered, and a replica that leaves a key's set stays
//!   tracked while it has a write in flight. A replica skipped for that reason is simply not
//!   ready until it is replicated again. Every other write (add, cas, append, delete, incr,
//!   touch, ...) goes to the primary only and leaves every replica not ready.
//! - A fetch is sent only when no client write of the key is in flight to the primary (and
//!   a `noreply` write, which is never answered, has had `settle` time to land), so the
//!   fetch cannot overtake a write and read the value from before it. (The core also checks
//!   the caches' write stamps, which see writes made while the key was not hot.)
//! - When the set changes (a server goes down or comes back), a hot key whose primary
//!   changes to a server that is not a ready replica is **fenced**: that server may hold an
//!   old copy, so kvlb deletes the key there and answers reads itself with a miss until
//!   the delete is acknowledged (every read: `get` whatever the cache policy, `gets`, `gat`;
//!   `incr`/`decr` and `append`/`prepend`, which build on the value, find the key absent
//!   too). A miss is never stale.
//! - When a key **cools**, each of its replicas may hold a copy that goes stale with the
//!   next write to the owner. The entry stays, cooling, with those replicas *dirty*, until
//!   a delete of the key (sent a request timeout later, when no read sent to a replica
//!   can still be in flight) is acknowledged on each; a lost delete, or a copy that landed
//!   after cooling, is deleted again. While the key's first live server (its owner failed)
//!   is dirty, its reads are misses.
//!
//! Owns: the per-key bookkeeping above. Must not: send anything (it returns plans; the core
//! emits frames) or read clocks.

use std::time::Duration;

use crate::backend::BackendId;
use crate::clock::Instant;
use crate::keyhash::KeyHash;

/// A server that holds or may receive copies of a hot key.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Replica {
    backend: BackendId,
    /// In the key's current server set (only members are read or written).
    member: bool,
    /// The write sequence this replica is known to hold.
    holds: Option<u64>,
    /// A write of this key to this replica is in flight.
    in_flight: bool,
    /// The key has cooled and this server may still hold a copy of it that no
    /// acknowledged delete has removed (see [`HotKeys::cool`]).
    dirty: bool,
}

/// A hot key's replication state.
#[derive(Clone, Debug)]
pub struct HotKey {
    primary: BackendId,
    replicas: Vec<Replica>,
    write_seq: u64,
    /// A replication fetch from the primary is in flight, taken at this write sequence.
    fetching: Option<u64>,
    last_fetch: Option<Instant>,
    /// Client writes forwarded to the primary and not yet answered.
    primary_pending: u32,
    /// Last `noreply` write forwarded (it is never answered).
    last_unacked_write: Option<Instant>,
    /// Reads are answered with a miss until the new primary confirms the key is gone.
    fenced: bool,
    /// The fencing delete is in flight.
    fence_in_flight: bool,
    /// The key is no longer hot; the entry stays only until its in-flight copies drain.
    cooling: bool,
}

impl HotKey {
    /// An entry with no replica yet: hot, or `cooling` (it only tracks copies to delete).
    fn new(primary: BackendId, write_seq: u64, cooling: bool) -> HotKey {
        HotKey {
            primary,
            replicas: Vec::new(),
            write_seq,
            fetching: None,
            last_fetch: None,
            primary_pending: 0,
            last_unacked_write: None,
            fenced: false,
            fence_in_flight: false,
            cooling,
        }
    }

    pub fn primary(&self) -> BackendId {
        self.primary
    }

    pub fn is_fenced(&self) -> bool {
        self.fenced
    }

    /// Servers that may serve a read now: the primary, then ready replicas.
    pub fn readable(&self) -> impl Iterator<Item = BackendId> + '_ {
        std::iter::once(self.primary).chain(
            self.replicas
                .iter()
                .filter(|r| r.member && r.holds == Some(self.write_seq))
                .map(|r| r.backend),
        )
    }

    /// Writes the servers a read may use now into `r` (see [`HotKeys::read_view`]).
    fn fill_readers(&self, r: &mut Readers) {
        // Backend indexes come from the ring, whose replica sets hold them as u16.
        r.primary = u16::try_from(self.primary).unwrap_or(u16::MAX);
        r.fenced = self.fenced;
        r.n = 0;
        for b in self.readable() {
            let Ok(b) = u16::try_from(b) else { continue };
            if usize::from(r.n) == r.servers.len() {
                break;
            }
            r.servers[usize::from(r.n)] = b;
            r.n += 1;
        }
    }

    /// Number of ready replicas.
    pub fn ready_replicas(&self) -> usize {
        self.readable().count() - 1
    }

    pub fn write_seq(&self) -> u64 {
        self.write_seq
    }

    /// A cooled key whose current primary (its owner is down) may still hold a copy from
    /// the hot period: reads are answered as misses until that copy is deleted.
    fn cooling_fenced(&self) -> bool {
        self.cooling
            && self
                .replicas
                .iter()
                .any(|r| r.backend == self.primary && (r.dirty || r.in_flight))
    }

    /// Makes `servers` (primary first) the key's set; replicas that leave it stay tracked
    /// while a write to them is in flight.
    fn set_members(&mut self, servers: &[BackendId]) {
        self.primary = servers[0];
        let rest = &servers[1..];
        for r in &mut self.replicas {
            r.member = rest.contains(&r.backend);
        }
        for &b in rest {
            if !self.replicas.iter().any(|r| r.backend == b) {
                self.replicas.push(Replica {
                    backend: b,
                    member: true,
                    holds: None,
                    in_flight: false,
                    dirty: false,
                });
            }
        }
        self.replicas.retain(|r| r.member || r.in_flight || r.dirty);
    }
}

/// What the core must send for a client write of a hot key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WritePlan {
    /// The write sequence the copies carry (hand it back in [`HotKeys::replica_acked`]).
    pub seq: u64,
    /// Replicas to send a copy of the write to.
    pub copies: Vec<BackendId>,
}

/// What reads of a hot key may use, copied out of the table by [`HotKeys::read_view`]: one
/// lookup serves every decision about a read (fence, balance, replica choice).
#[derive(Debug, Clone, Copy)]
// Backend indexes as u16 (as in `ReplicaSet`): 38 bytes instead of 152 to fill per GET.
pub struct Readers {
    primary: u16,
    fenced: bool,
    n: u8,
    servers: [u16; crate::ring::MAX_REPLICA_SET],
}

impl Readers {
    /// A view with no server, for [`HotKeys::read_view`] to fill.
    pub const EMPTY: Readers = Readers {
        primary: 0,
        fenced: false,
        n: 0,
        servers: [0; crate::ring::MAX_REPLICA_SET],
    };

    pub fn primary(&self) -> BackendId {
        usize::from(self.primary)
    }

    pub fn is_fenced(&self) -> bool {
        self.fenced
    }

    /// The primary, then the ready replicas (as [`HotKey::readable`]).
    pub fn servers(&self) -> impl Iterator<Item = BackendId> + '_ {
        self.servers[..usize::from(self.n)]
            .iter()
            .map(|&b| usize::from(b))
    }
}

/// The hot keys currently under replication.
#[derive(Debug)]
pub struct HotKeys {
    keys: super::FixedMap<Box<[u8]>, HotKey>,
    /// The last sequence handed out (to any key, in any hot period).
    last_seq: u64,
    /// Keys that are hot (not cooling).
    hot: usize,
    /// Entries of cooled keys (copies in flight or not yet deleted).
    cooling: usize,
    refetch_after: Duration,
    settle: Duration,
}

impl HotKeys {
    /// `refetch_after` rate-limits replication fetches per key; `settle` is how long after
    /// an unanswered (`noreply`) write a fetch may be sent.
    pub fn new(refetch_after: Duration, settle: Duration) -> HotKeys {
        HotKeys {
            keys: super::fixed_map(),
            last_seq: 0,
            hot: 0,
            cooling: 0,
            refetch_after,
            settle,
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.last_seq += 1;
        self.last_seq
    }

    /// Hot keys (not counting cooled keys still draining).
    pub fn len(&self) -> usize {
        self.hot
    }

    pub fn is_empty(&self) -> bool {
        self.hot == 0
    }

    /// The key's state if it is hot.
    pub fn get(&self, key: &[u8]) -> Option<&HotKey> {
        if self.hot == 0 {
            return None;
        }
        self.keys.get(key).filter(|h| !h.cooling)
    }

    /// The read view of `key` written into `out` if the key is hot (not cooling); returns
    /// whether it is. Callers keep the view where it was built and lend it out: moving
    /// an `Option<Readers>` (38 bytes) from one binding to the next was a `memcpy` whose
    /// partial reloads stalled store forwarding (4 of the 5 hottest instructions of
    /// `process_frame` in a profile of `bench-dpdk.sh`).
    ///
    /// `hash` is the key's hash under the core's [`KeyHasher`](crate::keyhash::KeyHasher),
    /// the hasher of this table (`fixed_map`): the key is not hashed again.
    ///
    /// A cooled key whose current primary may still hold a copy from its hot period (see
    /// [`HotKeys::cool`]) gets a fenced view with no server: its reads are misses.
    #[inline]
    pub fn read_view(&self, key: &[u8], hash: KeyHash, out: &mut Readers) -> bool {
        if self.hot == 0 && self.cooling == 0 {
            return false;
        }
        debug_assert_eq!(
            hash.raw(),
            std::hash::BuildHasher::hash_one(self.keys.hasher(), key),
            "a hash from another hasher"
        );
        let found = self
            .keys
            .raw_entry()
            .from_hash(hash.raw(), |k| **k == *key)
            .map(|(_, h)| h);
        match found {
            Some(h) if !h.cooling => {
                h.fill_readers(out);
                true
            }
            Some(h) if h.cooling_fenced() => {
                *out = Readers {
                    primary: u16::try_from(h.primary).unwrap_or(u16::MAX),
                    fenced: true,
                    ..Readers::EMPTY
                };
                true
            }
            _ => false,
        }
    }

    /// Whether `key` is a cooled key fenced as [`HotKeys::read_view`] says.
    pub fn is_cooling_fenced(&self, key: &[u8]) -> bool {
        self.cooling > 0 && self.keys.get(key).is_some_and(HotKey::cooling_fenced)
    }

    fn get_mut(&mut self, key: &[u8]) -> Option<&mut HotKey> {
        self.keys.get_mut(key).filter(|h| !h.cooling)
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    /// The hot keys.
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.keys
            .iter()
            .filter(|(_, h)| !h.cooling)
            .map(|(k, _)| &**k)
    }

    /// Starts a hot period for `key` on `servers` (primary first). No replica is ready.
    /// Returns false if the key was already hot.
    pub fn make_hot(&mut self, key: &[u8], servers: &[BackendId]) -> bool {
        if servers.is_empty() || self.get(key).is_some() {
            return false;
        }
        let write_seq = self.next_seq();
        self.hot += 1;
        if let Some(h) = self.keys.get_mut(key) {
            // Cooling, with copies in flight or not yet deleted: a new period over the same
            // entry keeps their in-flight and dirty marks (the next cooling deletes them).
            h.cooling = false;
            self.cooling -= 1;
            h.write_seq = write_seq;
            h.fetching = None;
            h.last_fetch = None;
            h.fenced = false;
            h.fence_in_flight = false;
            for r in &mut h.replicas {
                r.holds = None;
            }
            h.set_members(servers);
            return true;
        }
        let mut h = HotKey::new(servers[0], write_seq, false);
        h.set_members(servers);
        self.keys.insert(key.into(), h);
        true
    }

    /// Ends the hot period; returns the replicas that may hold a copy (to clean up).
    ///
    /// Every replica is then *dirty*: it may hold a copy that goes stale with the next
    /// write to the owner. The entry stays, cooling, until each copy's delete (sent by the
    /// core a request timeout later, see [`HotKeys::cleanup_sent`]) is acknowledged; a lost
    /// one is retried ([`HotKeys::replica_acked`]). Meanwhile, should the owner fail and a
    /// dirty replica become the key's primary, the key's reads are misses
    /// ([`HotKeys::read_view`]).
    pub fn cool(&mut self, key: &[u8]) -> Option<Vec<BackendId>> {
        let h = self.keys.get_mut(key).filter(|h| !h.cooling)?;
        let replicas: Vec<BackendId> = h.replicas.iter().map(|r| r.backend).collect();
        self.hot -= 1;
        if h.replicas.is_empty() {
            self.keys.remove(key);
        } else {
            h.cooling = true;
            h.fetching = None;
            h.fenced = false;
            h.fence_in_flight = false;
            for r in &mut h.replicas {
                r.holds = None;
                r.member = false;
                r.dirty = true;
            }
            self.cooling += 1;
        }
        Some(replicas)
    }

    /// The copies a cooled key left on `replicas` are about to be deleted: its clean-up, sent
    /// once no read routed to a replica during the hot period can still be in flight (a
    /// delete sent at once could overtake such a read and make it miss). The deletes count
    /// as writes in flight: the entry stays, cooling, until each is answered, so a new hot
    /// period of the key writes to none of these replicas before its delete is answered
    /// (the one-write-in-flight rule). Returns the sequence the deletes carry and the
    /// replicas to send them to; `None` while the key is hot again (its servers' copies are
    /// being read; the next cooling cleans them up) or when no replica listed is dirty
    /// without a write in flight.
    pub fn cleanup_sent(
        &mut self,
        key: &[u8],
        replicas: &[BackendId],
    ) -> Option<(u64, Vec<BackendId>)> {
        // Sequences only need to be unique: one drawn for nothing is no harm.
        let seq = self.next_seq();
        let h = self.keys.get_mut(key).filter(|h| h.cooling)?;
        let mut targets = Vec::new();
        for &b in replicas {
            if let Some(r) = h.replicas.iter_mut().find(|r| r.backend == b) {
                if r.dirty && !r.in_flight {
                    r.in_flight = true;
                    targets.push(b);
                }
            }
        }
        (!targets.is_empty()).then_some((seq, targets))
    }

    /// `server` may hold a copy of `key` that goes stale (a write made while the key's
    /// owner, now `primary` again, was down; see `Core::clean_displaced`): tracked as a
    /// cooled key's copy is, to be deleted.
    pub fn note_copy(&mut self, key: &[u8], server: BackendId, primary: BackendId) {
        let seq = self.next_seq();
        let h = self.keys.entry(key.into()).or_insert_with(|| {
            self.cooling += 1;
            HotKey::new(primary, seq, true)
        });
        match h.replicas.iter_mut().find(|r| r.backend == server) {
            Some(r) => r.dirty = true,
            None => h.replicas.push(Replica {
                backend: server,
                member: false,
                holds: None,
                in_flight: false,
                dirty: true,
            }),
        }
    }

    /// A server that was down is emptied before it serves again (the rejoin flush): a
    /// cooled key's copy there is gone.
    pub fn copy_flushed(&mut self, key: &[u8], server: BackendId) {
        if let Some(h) = self.keys.get_mut(key).filter(|h| h.cooling) {
            if let Some(r) = h.replicas.iter_mut().find(|r| r.backend == server) {
                r.dirty = false;
            }
            self.drop_if_clean(key);
        }
    }

    /// Removes a cooled key's entry once nothing is in flight and no copy is left.
    fn drop_if_clean(&mut self, key: &[u8]) {
        let Some(h) = self.keys.get_mut(key).filter(|h| h.cooling) else {
            return;
        };
        h.replicas.retain(|r| r.in_flight || r.dirty);
        if h.replicas.is_empty() {
            self.keys.remove(key);
            self.cooling -= 1;
        }
    }

    /// A client write of `key` is being forwarded to the primary at `now`. `broadcast` is
    /// true for a plain `set` (copied to replicas); other writes only invalidate the
    /// replicas. `answered`: the primary will reply (not `noreply`); then the core must call
    /// [`HotKeys::primary_write_done`] when the reply arrives or the request expires.
    pub fn on_write(
        &mut self,
        key: &[u8],
        broadcast: bool,
        answered: bool,
        now: Instant,
    ) -> Option<WritePlan> {
        self.get(key)?;
        let seq = self.next_seq();
        let h = self.get_mut(key)?;
        h.write_seq = seq;
        if answered {
            h.primary_pending += 1;
        } else {
            h.last_unacked_write = Some(now);
        }
        let mut copies = Vec::new();
        if broadcast {
            for r in &mut h.replicas {
                if r.member && !r.in_flight {
                    r.in_flight = true;
                    copies.push(r.backend);
                }
            }
        }
        Some(WritePlan { seq, copies })
    }

    /// The primary answered (or never will: expired) a write announced with `answered`.
    pub fn primary_write_done(&mut self, key: &[u8]) {
        if let Some(h) = self.get_mut(key) {
            h.primary_pending = h.primary_pending.saturating_sub(1);
        }
    }

    /// A replica answered a write of `key` sent with sequence `seq` (`stored`: it said
    /// STORED, or for a `delete`, HD or NF). Also call it with `stored = false` when that
    /// write timed out. Returns true when the replica holds a cooled key's copy that must
    /// still be deleted (its delete was lost, or a write from the hot period landed or
    /// was lost): the caller sends the clean-up again later.
    pub fn replica_acked(
        &mut self,
        key: &[u8],
        replica: BackendId,
        seq: u64,
        stored: bool,
        delete: bool,
    ) -> bool {
        let Some(h) = self.keys.get_mut(key) else {
            return false;
        };
        let current = h.write_seq;
        let cooling = h.cooling;
        let mut retry = false;
        if let Some(r) = h.replicas.iter_mut().find(|r| r.backend == replica) {
            r.in_flight = false;
            if cooling {
                // A delete that was answered removed the copy; anything else may have
                // left one (a copy that landed, or a lost request that may yet land).
                r.dirty = !(delete && stored);
                retry = r.dirty;
            } else if stored && seq == current && r.member {
                r.holds = Some(seq);
            }
        }
        if cooling {
            self.drop_if_clean(key);
        } else {
            h.replicas.retain(|r| r.member || r.in_flight || r.dirty);
        }
        retry
    }

    /// Whether `key` should be (re)replicated now: some replica is neither ready nor busy,
    /// no fetch is in flight, and the last fetch is old enough. `up` says which backends are
    /// up (replicas on down servers are skipped).
    pub fn wants_fetch(&self, key: &[u8], now: Instant, up: &dyn Fn(BackendId) -> bool) -> bool {
        let Some(h) = self.get(key) else {
            return false;
        };
        if h.fetching.is_some() || h.fenced || h.primary_pending > 0 || !up(h.primary) {
            return false;
        }
        if let Some(w) = h.last_unacked_write {
            if now.saturating_duration_since(w) < self.settle {
                return false;
            }
        }
        if let Some(last) = h.last_fetch {
            if now.saturating_duration_since(last) < self.refetch_after {
                return false;
            }
        }
        h.replicas
            .iter()
            .any(|r| r.member && r.holds != Some(h.write_seq) && !r.in_flight && up(r.backend))
    }

    /// Records a replication fetch sent to the primary; returns the sequence it is taken at.
    pub fn fetch_sent(&mut self, key: &[u8], now: Instant) -> Option<u64> {
        let h = self.get_mut(key)?;
        h.fetching = Some(h.write_seq);
        h.last_fetch = Some(now);
        Some(h.write_seq)
    }

    /// The primary answered the fetch taken at `seq` with a value (`found`), or not. Returns
    /// the replicas to write the value to (marked in flight), or nothing if a write happened
    /// since the fetch (the value may be old), or the key had no value and `absent_too` is
    /// false. With `absent_too` a key the primary does not hold is replicated as its
    /// absence: the caller deletes it on the returned replicas, which then hold the key's
    /// latest state (none) and may answer its reads, as they would hold a value.
    pub fn fetched(
        &mut self,
        key: &[u8],
        seq: u64,
        found: bool,
        absent_too: bool,
        up: &dyn Fn(BackendId) -> bool,
    ) -> Vec<BackendId> {
        let Some(h) = self.get_mut(key) else {
            return Vec::new();
        };
        if h.fetching != Some(seq) {
            return Vec::new();
        }
        h.fetching = None;
        if (!found && !absent_too) || seq != h.write_seq {
            return Vec::new();
        }
        let mut targets = Vec::new();
        for r in &mut h.replicas {
            if r.member && r.holds != Some(seq) && !r.in_flight && up(r.backend) {
                r.in_flight = true;
                targets.push(r.backend);
            }
        }
        targets
    }

    /// The fetch taken at `seq` got no answer.
    pub fn fetch_failed(&mut self, key: &[u8], seq: u64) {
        if let Some(h) = self.get_mut(key) {
            if h.fetching == Some(seq) {
                h.fetching = None;
            }
        }
    }

    /// The set changed: `servers_of(key)` gives each hot key's new server list (primary
    /// first). Replicas that stay keep their state; a new primary that was not a ready
    /// replica fences the key. Returns the keys fenced (the core deletes them on their new
    /// primary and calls [`HotKeys::unfence`] on the ack).
    pub fn reassign(
        &mut self,
        mut servers_of: impl FnMut(&[u8]) -> Vec<BackendId>,
    ) -> Vec<(Box<[u8]>, BackendId)> {
        let mut fenced = Vec::new();
        for (key, h) in self.keys.iter_mut() {
            let servers = servers_of(key);
            if servers.is_empty() {
                continue;
            }
            if h.cooling {
                // Reads go to the key's new first server; a dirty copy there fences it
                // (`cooling_fenced`) until its clean-up lands.
                h.primary = servers[0];
                continue;
            }
            let primary = servers[0];
            if primary != h.primary {
                let was_ready = h
                    .replicas
                    .iter()
                    .any(|r| r.member && r.backend == primary && r.holds == Some(h.write_seq));
                if !was_ready {
                    h.fenced = true;
                    h.fence_in_flight = false;
                    fenced.push((key.clone(), primary));
                }
                // Start over: the old primary's knowledge of the latest value is gone.
                h.fetching = None;
            }
            h.set_members(&servers);
        }
        fenced
    }

    /// The fencing delete of `key` on its new primary was answered.
    pub fn unfence(&mut self, key: &[u8]) {
        if let Some(h) = self.get_mut(key) {
            h.fenced = false;
            h.fence_in_flight = false;
        }
    }

    /// Fenced keys whose fencing delete is not in flight: (key, primary to delete it on).
    pub fn fences_due(&self) -> Vec<(Box<[u8]>, BackendId)> {
        self.keys
            .iter()
            .filter(|(_, h)| !h.cooling && h.fenced && !h.fence_in_flight)
            .map(|(k, h)| (k.clone(), h.primary))
            .collect()
    }

    /// The fencing delete of `key` was sent.
    pub fn fence_sent(&mut self, key: &[u8]) {
        if let Some(h) = self.get_mut(key) {
            h.fence_in_flight = true;
        }
    }

    /// The fencing delete of `key` got no (or no usable) answer: send it again later.
    pub fn fence_lost(&mut self, key: &[u8]) {
        if let Some(h) = self.get_mut(key) {
            h.fence_in_flight = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const K: &[u8] = b"hot";

    fn all_up(_: BackendId) -> bool {
        true
    }

    fn readable(h: &HotKeys) -> Vec<BackendId> {
        h.get(K).unwrap().readable().collect()
    }

    #[test]
    fn an_absent_key_is_replicated_as_its_absence_only_when_asked() {
        let now = Instant::from_nanos(1);
        for absent_too in [false, true] {
            let mut h = HotKeys::new(Duration::from_millis(100), Duration::ZERO);
            assert!(h.make_hot(K, &[0, 1, 2]));
            let seq = h.fetch_sent(K, now).unwrap();
            let targets = h.fetched(K, seq, false, absent_too, &all_up);
            if !absent_too {
                assert!(targets.is_empty(), "no value, nothing to copy");
                continue;
            }
            assert_eq!(targets, vec![1, 2], "delete it on every replica");
            h.replica_acked(K, 1, seq, true, false);
            assert_eq!(
                readable(&h),
                vec![0, 1],
                "a deleted replica reads as the primary"
            );
            // A write since the fetch: the absence may be old, nothing is replicated.
            h.on_write(K, false, true, now);
            let seq = h.fetch_sent(K, now).unwrap();
            h.on_write(K, false, true, now);
            assert!(h.fetched(K, seq, false, true, &all_up).is_empty());
        }
    }

    #[test]
    fn replicas_become_readable_only_after_acking_the_latest_value() {
        let mut h = HotKeys::new(Duration::from_millis(100), Duration::ZERO);
        assert!(h.make_hot(K, &[0, 1, 2]));
        assert_eq!(readable(&h), vec![0]);
        let now = Instant::from_nanos(1);
        assert!(h.wants_fetch(K, now, &all_up));
        let seq = h.fetch_sent(K, now).unwrap();
        assert!(!h.wants_fetch(K, now, &all_up), "one fetch at a time");
        assert_eq!(h.fetched(K, seq, true, false, &all_up), vec![1, 2]);
        h.replica_acked(K, 1, seq, true, false);
        assert_eq!(readable(&h), vec![0, 1]);
        h.replica_acked(K, 2, seq, false, false);
        assert_eq!(
            readable(&h),
            vec![0, 1],
            "a failed write does not make a replica ready"
        );

        // A client set: copies to every replica not busy; nobody is ready until acked.
        let plan = h.on_write(K, true, false, Instant::ZERO).unwrap();
        assert_eq!(plan.copies, vec![1, 2]);
        assert_eq!(readable(&h), vec![0]);
        // A second set while the copies are in flight: no copies (no reordering possible).
        let plan2 = h.on_write(K, true, false, Instant::ZERO).unwrap();
        assert!(plan2.copies.is_empty());
        // The first copies' acks arrive: they carry an old sequence, so nobody is ready.
        h.replica_acked(K, 1, plan.seq, true, false);
        h.replica_acked(K, 2, plan.seq, true, false);
        assert_eq!(readable(&h), vec![0]);
        // Non-broadcast writes never copy.
        assert!(h
            .on_write(K, false, false, Instant::ZERO)
            .unwrap()
            .copies
            .is_empty());
    }

    /// The read view of `K` (None: not hot, not fenced).
    fn view(h: &HotKeys) -> Option<Readers> {
        let hasher = crate::keyhash::KeyHasher::new(crate::nf::CACHE_SEED);
        let mut out = Readers::EMPTY;
        h.read_view(K, hasher.hash(K), &mut out).then_some(out)
    }

    #[test]
    fn a_cooled_keys_copies_are_deleted_until_acknowledged_and_fence_a_failover() {
        let mut h = HotKeys::new(Duration::ZERO, Duration::ZERO);
        assert!(h.make_hot(K, &[0, 1, 2]));
        assert_eq!(h.cool(K), Some(vec![1, 2]));
        assert!(view(&h).is_none(), "cooled: neither hot nor fenced");
        let (seq, targets) = h.cleanup_sent(K, &[1, 2]).unwrap();
        assert_eq!(targets, vec![1, 2]);
        assert!(
            h.cleanup_sent(K, &[1, 2]).is_none(),
            "one delete in flight each"
        );
        // Replica 1 confirms; replica 2's delete is lost: it is to be sent again.
        assert!(!h.replica_acked(K, 1, seq, true, true));
        assert!(h.replica_acked(K, 2, seq, false, true));
        // The owner fails and replica 2, which may still hold the copy, comes first: the
        // key's reads are misses until the copy is gone.
        h.reassign(|_| vec![2, 1]);
        let v = view(&h).expect("fenced");
        assert!(v.is_fenced());
        assert_eq!(v.servers().count(), 0);
        assert!(h.is_cooling_fenced(K));
        let (seq, targets) = h.cleanup_sent(K, &[2]).unwrap();
        assert_eq!(targets, vec![2]);
        assert!(
            h.is_cooling_fenced(K),
            "still fenced while the delete is in flight"
        );
        assert!(!h.replica_acked(K, 2, seq, true, true));
        assert!(view(&h).is_none() && !h.is_cooling_fenced(K));
        assert!(h.keys.is_empty(), "the entry goes with its last copy");
    }

    #[test]
    fn a_copy_that_lands_after_cooling_is_cleaned_up_too() {
        let mut h = HotKeys::new(Duration::ZERO, Duration::ZERO);
        h.make_hot(K, &[0, 1]);
        let plan = h.on_write(K, true, true, Instant::ZERO).unwrap();
        assert_eq!(plan.copies, vec![1]);
        h.cool(K);
        // The copy from the hot period is acknowledged after the key cooled: still dirty.
        assert!(h.replica_acked(K, 1, plan.seq, true, false));
        let (seq, _) = h.cleanup_sent(K, &[1]).unwrap();
        assert!(!h.replica_acked(K, 1, seq, true, true));
        assert!(h.keys.is_empty());
        // A server that was down is flushed before it serves: its copy is gone.
        h.make_hot(K, &[0, 1]);
        h.cool(K);
        h.copy_flushed(K, 1);
        assert!(h.keys.is_empty());
    }

    #[test]
    fn an_ack_from_an_earlier_hot_period_never_makes_a_replica_ready() {
        let mut h = HotKeys::new(Duration::ZERO, Duration::ZERO);
        h.make_hot(K, &[0, 1]);
        let seq = h.fetch_sent(K, Instant::ZERO).unwrap();
        assert_eq!(h.fetched(K, seq, true, false, &all_up), vec![1]);
        // The key cools before replica 1 acknowledges; writes may reach the primary while
        // it is cold (kvlb does not track them); then it turns hot again.
        h.cool(K);
        h.make_hot(K, &[0, 1]);
        // The old period's ack arrives now: replica 1 holds the old value.
        h.replica_acked(K, 1, seq, true, false);
        assert_eq!(readable(&h), vec![0], "a stale replica was made readable");
    }

    #[test]
    fn a_write_during_a_fetch_voids_it() {
        let mut h = HotKeys::new(Duration::ZERO, Duration::ZERO);
        h.make_hot(K, &[0, 1]);
        let seq = h.fetch_sent(K, Instant::ZERO).unwrap();
        h.on_write(K, false, false, Instant::ZERO);
        assert!(h.fetched(K, seq, true, false, &all_up).is_empty());
        assert!(h.wants_fetch(K, Instant::ZERO, &all_up));
    }

    #[test]
    fn no_fetch_while_a_write_to_the_primary_is_in_flight() {
        let mut h = HotKeys::new(Duration::ZERO, Duration::from_millis(50));
        h.make_hot(K, &[0, 1]);
        let t = |ms: u64| Instant::from_nanos(ms * 1_000_000);
        h.on_write(K, false, true, t(0));
        assert!(!h.wants_fetch(K, t(1000), &all_up));
        h.primary_write_done(K);
        assert!(h.wants_fetch(K, t(1000), &all_up));
        h.on_write(K, false, false, t(1000));
        assert!(
            !h.wants_fetch(K, t(1020), &all_up),
            "noreply write still settling"
        );
        assert!(h.wants_fetch(K, t(1050), &all_up));
        // Replicas on down servers are not fetched for.
        assert!(!h.wants_fetch(K, t(1050), &|b| b == 0));
    }

    #[test]
    fn failover_fences_a_primary_that_was_not_ready() {
        let mut h = HotKeys::new(Duration::ZERO, Duration::ZERO);
        h.make_hot(K, &[0, 1, 2]);
        let seq = h.fetch_sent(K, Instant::ZERO).unwrap();
        h.fetched(K, seq, true, false, &all_up);
        h.replica_acked(K, 1, seq, true, false);
        // Server 0 dies; 1 (ready) becomes primary: no fence.
        assert!(h.reassign(|_| vec![1, 2, 3]).is_empty());
        assert_eq!(readable(&h), vec![1]);
        // Server 1 dies too; 2 (not ready) becomes primary: fenced.
        let f = h.reassign(|_| vec![2, 3]);
        assert_eq!(f, vec![(Box::from(K), 2)]);
        assert!(h.get(K).unwrap().is_fenced());
        assert_eq!(h.fences_due(), vec![(Box::from(K), 2)]);
        h.fence_sent(K);
        assert!(h.fences_due().is_empty());
        h.fence_lost(K);
        assert_eq!(h.fences_due().len(), 1);
        h.unfence(K);
        assert!(!h.get(K).unwrap().is_fenced());
        assert!(h.fences_due().is_empty());
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// Client set (broadcast) or other write.
        Write(bool),
        Fetch,
        /// Deliver the oldest in-flight message of this kind.
        FetchReply(bool),
        Ack(usize, bool),
        /// The key cools, takes a write kvlb does not track, and turns hot again;
        /// messages of the old hot period are still in flight.
        ColdCycle,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<bool>().prop_map(Op::Write),
            Just(Op::Fetch),
            any::<bool>().prop_map(Op::FetchReply),
            (0usize..8, any::<bool>()).prop_map(|(i, s)| Op::Ack(i, s)),
            Just(Op::ColdCycle),
        ]
    }

    proptest! {
        /// Simulates servers holding versions: whatever the interleaving, every readable
        /// server holds the latest written version.
        #[test]
        fn readable_servers_hold_the_latest_value(ops in proptest::collection::vec(op(), 1..200)) {
            let mut h = HotKeys::new(Duration::ZERO, Duration::ZERO);
            h.make_hot(K, &[0, 1, 2]);
            // Version held by each server; the primary applies writes at once (it is the
            // truth); writes to replicas are messages delivered in any order across
            // replicas, but per replica in send order.
            let mut held = [0u64; 3];
            let mut latest = 0u64;
            let mut in_flight: Vec<(BackendId, u64, u64)> = vec![]; // (replica, version, seq)
            let mut fetch: Option<(u64, u64)> = None; // (seq, version read)
            for o in ops {
                match o {
                    Op::Write(broadcast) => {
                        latest += 1;
                        held[0] = latest;
                        let plan = h.on_write(K, broadcast, false, Instant::ZERO).unwrap();
                        for r in plan.copies {
                            in_flight.push((r, latest, plan.seq));
                        }
                    }
                    Op::Fetch => {
                        if h.wants_fetch(K, Instant::ZERO, &all_up) {
                            let seq = h.fetch_sent(K, Instant::ZERO).unwrap();
                            fetch = Some((seq, held[0]));
                        }
                    }
                    Op::FetchReply(found) => {
                        if let Some((seq, version)) = fetch.take() {
                            for r in h.fetched(K, seq, found, false, &all_up) {
                                in_flight.push((r, version, seq));
                            }
                        }
                    }
                    Op::ColdCycle => {
                        h.cool(K);
                        latest += 1;
                        held[0] = latest;
                        h.make_hot(K, &[0, 1, 2]);
                    }
                    Op::Ack(i, stored) => {
                        if !in_flight.is_empty() {
                            let (r, version, seq) = in_flight.remove(i % in_flight.len());
                            if stored {
                                held[r] = version;
                            }
                            h.replica_acked(K, r, seq, stored, false);
                        }
                    }
                }
                for s in h.get(K).unwrap().readable() {
                    prop_assert_eq!(held[s], latest, "server {} is readable but stale", s);
                }
            }
        }
    }
}
