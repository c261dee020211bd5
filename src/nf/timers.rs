//! The core's periodic work: expiry, heat changes, the L2 switch, replication, probes, ARP.

use std::collections::VecDeque;
use std::time::Duration;

use super::{BackendId, Core, Dest, FlowKind, Learn, Mode};
use crate::cache::{GateTransition, ReadTicket};
use crate::clock::Instant;
use crate::config::Config;
use crate::hotkey::{Detector, Heat, HeatChange};
use crate::proto::{Command, Request};
use crate::wire::{self, arp::Operation, ArpRepr};

const REPLICATION_PERIOD: Duration = Duration::from_millis(10);
const GATE_PERIOD: Duration = Duration::from_millis(100);
const ARP_PERIOD: Duration = Duration::from_millis(250);
const SWEEP_PERIOD: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(super) struct Timers {
    next_replication: Instant,
    next_gate: Instant,
    next_arp: Instant,
    next_sweep: Instant,
    /// Last time the load meters were aged.
    last_decay: Option<Instant>,
    changes: Vec<HeatChange>,
    top_k: usize,
    /// Keys that cooled, with the replicas that may hold their copies, due for clean-up
    /// (in order of due time; see [`Core::clean_up_cooled`]).
    cleanups: VecDeque<Cleanup>,
    /// How long after cooling a key's copies are deleted: the request timeout, after which
    /// no read routed to a replica while the key was hot is still in flight.
    cleanup_after: Duration,
}

/// Most clean-up deletes sent per tick (see `Core::clean_up_cooled`).
const MAX_CLEANUPS_PER_TICK: usize = 512;

/// A key's copies (a cooled key's replicas, a fallback server), to delete at `due`.
#[derive(Debug)]
struct Cleanup {
    due: Instant,
    key: Box<[u8]>,
    replicas: Vec<BackendId>,
}

impl Timers {
    /// Queues the deletion of `key`'s copies on `replicas` a request timeout from `now`.
    pub fn clean_up_later(&mut self, now: Instant, key: Box<[u8]>, replicas: Vec<BackendId>) {
        self.cleanups.push_back(Cleanup {
            due: now + self.cleanup_after.max(Duration::from_millis(1)),
            key,
            replicas,
        });
    }

    pub fn new(cfg: &Config) -> Timers {
        Timers {
            next_replication: Instant::ZERO,
            next_gate: Instant::ZERO,
            next_arp: Instant::ZERO,
            next_sweep: Instant::ZERO,
            last_decay: None,
            changes: Vec::new(),
            top_k: cfg.l1_max_keys.max(1),
            cleanups: VecDeque::new(),
            cleanup_after: cfg.request_timeout,
        }
    }
}

/// How long after a tick the next is due while load meters age or a detector runs: they
/// work per millisecond of elapsed time.
const FINE_PERIOD: Duration = Duration::from_millis(1);

impl Core {
    /// When [`Pipeline::on_tick`](super::Pipeline::on_tick) next has work: the earliest of
    /// the periodic rounds (L2 switch, cache sweep, ARP on frame datapaths, replication
    /// while keys are hot), the next probe of a down backend, and, while requests are
    /// outstanding, load meters still age or a hot-key detector runs, a millisecond after
    /// the last tick. Conservative: a tick then may find nothing to do, but nothing falls due
    /// earlier. Before the first tick it is already due (`Instant::ZERO`).
    ///
    /// A datapath may skip ticks until then (as quinn-proto's `poll_timeout`); ticking
    /// more often changes nothing.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let t = &self.timers;
        let Some(last) = t.last_decay else {
            return Some(Instant::ZERO);
        };
        let mut next = t.next_gate.min(t.next_sweep);
        if self.mode == Mode::Frames {
            next = next.min(t.next_arp);
        }
        if !self.hot.is_empty() {
            next = next.min(t.next_replication);
        }
        // Outstanding requests: their expiry is looked for every millisecond, as before
        // (the flow table's exact next deadline can cost a walk over answered entries).
        if self.detector.is_some() || self.backends.loads_decaying() || !self.flows.is_empty() {
            next = next.min(last + FINE_PERIOD);
        }
        if let Some(probe) = self.backends.next_probe() {
            next = next.min(probe);
        }
        if let Some(c) = t.cleanups.front() {
            next = next.min(c.due);
        }
        Some(next)
    }

    pub(super) fn tick(&mut self, now: Instant) {
        // Load meters age once per elapsed millisecond (catching up on slow ticks; after
        // a long gap a few hundred rounds leave them at zero anyway).
        let last = *self.timers.last_decay.get_or_insert(now);
        let ms = now.saturating_duration_since(last).as_millis() as u64;
        if ms > 0 {
            for _ in 0..ms.min(512) {
                self.backends.decay_loads();
            }
            self.timers.last_decay = Some(last + Duration::from_millis(ms));
        }

        // Unanswered requests.
        while let Some((sent, flow)) = self.flows.pop_expired(now) {
            self.expired(now, flow.backend, sent, flow.kind);
        }

        // Heat changes (they also happen between ticks, on observe).
        if let Some(d) = self.detector.as_mut() {
            d.tick(now);
            let mut changes = std::mem::take(&mut self.timers.changes);
            let complete = d.drain_changes(&mut changes);
            for c in changes.drain(..) {
                self.heat_changed(now, &c.key, c.from, c.to);
            }
            self.timers.changes = changes;
            if !complete {
                self.resync_hot_set(now);
            }
        }

        if now >= self.timers.next_gate {
            self.timers.next_gate = now + GATE_PERIOD;
            // Judge skew only over a window with enough requests: over a few requests the
            // top k keys trivially carry everything.
            let window_ok = self
                .detector
                .as_ref()
                .is_some_and(|d| d.window().requests >= 10 * self.timers.top_k as u64);
            if let (Some(d), true) = (&self.detector, window_ok) {
                let share = d.top_share(self.timers.top_k);
                let k = self.timers.top_k;
                match self.caches.observe_skew(share) {
                    Some(GateTransition::On { share }) => log::info!(
                        "L2 warm-key cache on: the top {k} keys carry {:.1}% of requests",
                        share * 100.0
                    ),
                    Some(GateTransition::Off { share }) => log::info!(
                        "L2 warm-key cache off: the top {k} keys carry only {:.1}% of requests",
                        share * 100.0
                    ),
                    None => {}
                }
            }
        }
        if now >= self.timers.next_sweep {
            self.timers.next_sweep = now + SWEEP_PERIOD;
            self.caches.sweep_expired(now);
        }

        if now >= self.timers.next_replication {
            self.timers.next_replication = now + REPLICATION_PERIOD;
            self.replicate(now);
        }
        self.clean_up_cooled(now);

        let mut probes = Vec::new();
        self.backends.due_probes(now, |id| probes.push(id));
        for id in probes {
            self.emit_request(now, id, FlowKind::Probe, &Request::Version);
        }

        if self.mode == Mode::Frames && now >= self.timers.next_arp {
            self.timers.next_arp = now + ARP_PERIOD;
            self.resolve_backends(now);
        }
    }

    /// A replica answered one of kvlb's writes or deletes of `key` (or it was lost: not
    /// `stored`). A cooled key's copy that is still there is deleted again a request
    /// timeout later.
    pub(super) fn replica_answered(
        &mut self,
        now: Instant,
        key: &[u8],
        replica: BackendId,
        seq: u64,
        stored: bool,
        delete: bool,
    ) {
        if self.hot.replica_acked(key, replica, seq, stored, delete) {
            self.stats.replication.cleanup_retries += 1;
            self.timers.clean_up_later(now, key.into(), vec![replica]);
        }
    }

    /// Deletes the copies of keys that cooled a request timeout ago from their replicas,
    /// with tracked `md` requests that count as writes in flight (see
    /// [`super::hot::HotKeys::cleanup_sent`]). Not at once: a read routed to a replica
    /// just before the key cooled may still be on its way, and a delete that overtook it
    /// would make it miss a key that was stored. A key that cooled again since waits for
    /// its later clean-up (which takes over these replicas); one that is hot again keeps
    /// its copies (its next cooling cleans them up).
    fn clean_up_cooled(&mut self, now: Instant) {
        // A rejoin can queue tens of thousands of fallback copies at once: at most this
        // many deletes leave per tick (the rest stay due: the next tick comes at once), so
        // they never crowd clients' requests out of the flow table.
        let mut budget = MAX_CLEANUPS_PER_TICK;
        while budget > 0 && self.timers.cleanups.front().is_some_and(|c| c.due <= now) {
            let Some(c) = self.timers.cleanups.pop_front() else {
                break;
            };
            if let Some(later) = self.timers.cleanups.iter_mut().find(|l| l.key == c.key) {
                for r in c.replicas {
                    if !later.replicas.contains(&r) {
                        later.replicas.push(r);
                    }
                }
                continue;
            }
            let (up, down): (Vec<BackendId>, Vec<BackendId>) = c
                .replicas
                .iter()
                .partition(|&&r| self.backends.get(r).is_up());
            // Copies on down servers (a key hot again keeps them for its next cooling):
            // gone if the server is emptied before it serves again, else deleted later.
            if !down.is_empty() && !self.hot.contains(&c.key) {
                if self.rejoin_flush {
                    for r in down {
                        self.hot.copy_flushed(&c.key, r);
                    }
                } else {
                    self.timers.clean_up_later(now, c.key.clone(), down);
                }
            }
            let Some((seq, targets)) = self.hot.cleanup_sent(&c.key, &up) else {
                continue;
            };
            for r in targets {
                budget = budget.saturating_sub(1);
                self.stats.replication.cleanup_deletes += 1;
                self.emit_replica_delete(now, r, &c.key, seq);
            }
        }
    }

    fn heat_changed(&mut self, now: Instant, key: &[u8], from: Heat, to: Heat) {
        let h = self.caches.key_hash(key);
        match (from, to) {
            (_, Heat::Hot) => {
                self.stats.replication.keys_turned_hot += 1;
                let ring_hash = self.ring_memo.hash(h.raw(), key);
                // L1 full: the key is still replicated, just not cached (counted).
                let _ = self.caches.admit_hot(h, key, ring_hash);
                if self.replicas > 0 {
                    let servers = self.live_replicas(ring_hash, self.replicas);
                    self.hot.make_hot(key, &servers);
                }
            }
            (Heat::Hot, cooler) => {
                self.stats.replication.keys_cooled += 1;
                let warm_estimate = match (cooler, &self.detector) {
                    (Heat::Warm, Some(d)) => d.estimate(key).map(|e| e.estimate),
                    _ => None,
                };
                self.caches.demote(h, key, warm_estimate);
                if let Some(replicas) = self.hot.cool(key) {
                    // Their copies are never read again: delete them from the replicas
                    // once no read sent to them can still be in flight.
                    if !replicas.is_empty() {
                        self.timers.cleanups.push_back(Cleanup {
                            due: now + self.timers.cleanup_after,
                            key: key.into(),
                            replicas,
                        });
                    }
                }
            }
            (Heat::Warm, Heat::Cold) => {
                // Its L2 value stays valid (writes invalidate it); rank it last for eviction.
                self.caches.set_warm_estimate(h, key, 0);
            }
            _ => {}
        }
    }

    /// The detector lost heat changes: rebuild the hot set from its current report.
    fn resync_hot_set(&mut self, now: Instant) {
        let Some(d) = &self.detector else { return };
        let hot: Vec<Vec<u8>> = d.hot_items().into_iter().map(|i| i.key).collect();
        let stale: Vec<Box<[u8]>> = self
            .hot
            .keys()
            .filter(|k| !hot.iter().any(|h| h.as_slice() == *k))
            .map(Box::from)
            .collect();
        for k in stale {
            self.heat_changed(now, &k, Heat::Hot, Heat::Cold);
        }
        for k in hot {
            if !self.hot.contains(&k) {
                self.heat_changed(now, &k, Heat::Cold, Heat::Hot);
            }
        }
    }

    /// Fetches and writes the value of hot keys whose replicas are not ready; re-sends
    /// fences that were lost.
    fn replicate(&mut self, now: Instant) {
        if self.hot.is_empty() {
            return;
        }
        let backends = &self.backends;
        let up = |b: usize| backends.get(b).is_up();
        let due: Vec<(Box<[u8]>, usize)> = self
            .hot
            .keys()
            .filter(|k| self.hot.wants_fetch(k, now, &up))
            .filter_map(|k| self.hot.get(k).map(|h| (Box::from(k), h.primary())))
            .collect();
        let fences = self.hot.fences_due();
        for (key, primary) in due {
            let key_hash = self.caches.key_hash(&key);
            let ticket = self.caches.read_sent(key_hash);
            if ticket == ReadTicket::NEVER {
                // A write is in flight that the hot-key state may not know of (one sent
                // before the key turned hot): a fetch now could read the value from before
                // it and make the replicas ready with it. Try again next round.
                continue;
            }
            let Some(seq) = self.hot.fetch_sent(&key, now) else {
                continue;
            };
            let learn = Learn {
                ticket,
                key_hash,
                ring_hash: self.ring_memo.hash(key_hash.raw(), &key),
            };
            let sent = self.emit_own_meta(
                now,
                primary,
                Command::MetaGet,
                &key,
                format_args!("v f t k"),
                None,
                |opaque| FlowKind::Fetch {
                    key: key.clone(),
                    seq,
                    learn,
                    opaque,
                },
            );
            if sent {
                self.stats.replication.fetches += 1;
            } else {
                self.hot.fetch_failed(&key, seq);
            }
        }
        for (key, primary) in fences {
            self.hot.fence_sent(&key);
            self.emit_fence(now, &key, primary);
        }
    }

    /// ARP requests for backends whose MAC is not known yet.
    fn resolve_backends(&mut self, now: Instant) {
        let ips: Vec<_> = self.backends.iter().map(|b| *b.addr().ip()).collect();
        let due: Vec<_> = self.neighbors.due_requests(ips, now).collect();
        let mac = self.port_mac(self.server_port);
        for ip in due {
            let arp = ArpRepr {
                operation: Operation::Request,
                sender_mac: mac,
                sender_ip: self.local_ip,
                target_mac: [0; 6],
                target_ip: ip,
            };
            self.outbox.emit(Dest::Port(self.server_port), |buf| {
                wire::emit_arp(buf, mac, wire::ethernet::BROADCAST, None, &arp).map_err(|_| ())
            });
        }
    }
}
