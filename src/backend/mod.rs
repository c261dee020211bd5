//! The backend pool: addresses, outstanding requests, latency, health, failover and probes.
//!
//! Owns: what kvlb knows about each memcached server and when it is considered up. Must not:
//! parse packets or choose which backend serves a key (the ring and the core do).
//!
//! # Health
//! A backend is marked down after `down_after` consecutive request timeouts, or at once on
//! an ICMP port/host unreachable. "Consecutive" is in the order the requests were sent: the
//! timeout of a request sent before one the backend has answered does not extend the
//! streak (expiries are handled in batches on the timer tick, after the replies that
//! arrived between them, so counting in handling order would mark down a backend that
//! loses a few datagrams under load while it answers the rest). Down backends receive only probes (`version`), one every
//! `probe_interval`; the first answer brings them back. So a backend that stops answering
//! under load is marked down within `down_after` timeouts of its first unanswered request.

use std::net::SocketAddrV4;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::clock::Instant;
use crate::config::{BackendSpec, Config};

/// One request in the load meters' fixed point.
const LOAD_ONE: u64 = 1 << 16;
/// Loads lose 1/2^LOAD_DECAY_SHIFT of themselves per millisecond tick.
const LOAD_DECAY_SHIFT: u32 = 6;

/// Index of a backend in the configured list (stable for the life of the core).
pub type BackendId = usize;

/// A health transition the caller must act on (rebuild the ring, log, count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Down(BackendId),
    Up(BackendId),
}

/// Why a backend was marked down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownCause {
    Timeouts,
    Unreachable,
}

/// Counters for one backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendCounters {
    /// Requests forwarded (client requests, replica writes and probes).
    pub requests: u64,
    pub responses: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub timeouts: u64,
    /// SERVER_ERROR/CLIENT_ERROR/ERROR replies.
    pub errors: u64,
    pub marked_down: u64,
    pub marked_up: u64,
}

/// One memcached server.
#[derive(Debug)]
pub struct Backend {
    pub spec: BackendSpec,
    up: bool,
    consecutive_timeouts: u32,
    /// When the newest request this backend answered was sent.
    newest_answered: Option<Instant>,
    outstanding: u32,
    next_probe: Instant,
    /// Recent request rate: requests sent, in fixed point, decayed every tick (see
    /// [`BackendPool::decay_loads`]).
    load: u64,
    pub counters: BackendCounters,
    /// Response latency in microseconds.
    latency_us: Histogram<u64>,
}

impl Backend {
    pub fn addr(&self) -> SocketAddrV4 {
        self.spec.addr
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Requests sent and not yet answered or expired.
    pub fn outstanding(&self) -> u32 {
        self.outstanding
    }

    /// Recent load: a decayed count of requests sent (see [`BackendPool::decay_loads`]).
    pub fn load(&self) -> u64 {
        self.load
    }

    /// Latency percentile in microseconds (0 when nothing was recorded).
    pub fn latency_percentile_us(&self, q: f64) -> u64 {
        self.latency_us.value_at_quantile(q)
    }

    /// Number of latency samples (the tests' view).
    #[cfg(test)]
    pub fn latency_samples(&self) -> u64 {
        self.latency_us.len()
    }
}

/// All backends, with the health policy.
#[derive(Debug)]
pub struct BackendPool {
    backends: Vec<Backend>,
    /// Sum of the backends' loads (kept alongside so the mean is O(1)).
    load_sum: u64,
    down_after: u32,
    probe_interval: Duration,
}

impl BackendPool {
    pub fn new(cfg: &Config) -> BackendPool {
        let backends = cfg
            .backends
            .iter()
            .map(|spec| Backend {
                spec: spec.clone(),
                up: true,
                consecutive_timeouts: 0,
                newest_answered: None,
                outstanding: 0,
                next_probe: Instant::ZERO,
                load: 0,
                counters: BackendCounters::default(),
                // 1 µs .. 100 s at 2 significant digits: a few KiB per backend.
                latency_us: Histogram::new_with_bounds(1, 100_000_000, 2)
                    .expect("static histogram bounds are valid"),
            })
            .collect();
        BackendPool {
            backends,
            load_sum: 0,
            down_after: cfg.down_after.max(1),
            probe_interval: cfg.probe_interval,
        }
    }

    pub fn len(&self) -> usize {
        self.backends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    pub fn get(&self, id: BackendId) -> &Backend {
        &self.backends[id]
    }

    pub fn get_mut(&mut self, id: BackendId) -> &mut Backend {
        &mut self.backends[id]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Backend> {
        self.backends.iter()
    }

    /// The backend with this address, if any.
    pub fn find(&self, addr: SocketAddrV4) -> Option<BackendId> {
        self.backends.iter().position(|b| b.spec.addr == addr)
    }

    /// Liveness of every backend, in configuration order (for the ring).
    pub fn live_mask(&self) -> Vec<bool> {
        self.backends.iter().map(|b| b.up).collect()
    }

    /// Whether some load still shrinks when aged ([`decay_loads`](Self::decay_loads));
    /// conservative: it may say yes when no single load would change.
    pub fn loads_decaying(&self) -> bool {
        self.load_sum >> LOAD_DECAY_SHIFT > 0
    }

    /// When the next probe of a down backend is due, if any backend is down.
    pub fn next_probe(&self) -> Option<Instant> {
        self.backends
            .iter()
            .filter(|b| !b.up)
            .map(|b| b.next_probe)
            .min()
    }

    pub fn live_count(&self) -> usize {
        self.backends.iter().filter(|b| b.up).count()
    }

    /// A request of `bytes` was sent to `id`; `answered`: a reply is expected (it counts as
    /// outstanding until [`on_response`](Self::on_response) or
    /// [`on_timeout`](Self::on_timeout)).
    pub fn on_sent(&mut self, id: BackendId, bytes: usize, answered: bool) {
        let b = &mut self.backends[id];
        if answered {
            b.outstanding += 1;
        }
        b.load += LOAD_ONE;
        self.load_sum += LOAD_ONE;
        b.counters.requests += 1;
        b.counters.bytes_out += bytes as u64;
    }

    /// A response of `bytes` arrived for a request sent at `sent`, `latency` ago. With
    /// `revive`, a down backend is marked up (returns `Up`); the core revives only on a
    /// probe's answer (or the rejoin flush's), never on a late reply.
    pub fn on_response(
        &mut self,
        id: BackendId,
        bytes: usize,
        sent: Instant,
        latency: Duration,
        error_reply: bool,
        revive: bool,
    ) -> Option<Health> {
        let b = &mut self.backends[id];
        if b.newest_answered.is_none_or(|t| t < sent) {
            b.newest_answered = Some(sent);
        }
        b.outstanding = b.outstanding.saturating_sub(1);
        b.counters.responses += 1;
        b.counters.bytes_in += bytes as u64;
        if error_reply {
            b.counters.errors += 1;
        }
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        b.latency_us.saturating_record(us);
        b.consecutive_timeouts = 0;
        if !b.up && revive {
            b.up = true;
            b.counters.marked_up += 1;
            log::info!("backend {} is up again", b.spec);
            return Some(Health::Up(id));
        }
        None
    }

    /// A response arrived for a request that was no longer tracked (it had expired): the
    /// backend is alive, so its timeout streak ends; a down backend still waits for its
    /// probe (and rejoin flush) to come back.
    pub fn on_late_response(&mut self, id: BackendId) {
        self.backends[id].consecutive_timeouts = 0;
    }

    /// A request to `id`, sent at `sent`, timed out. Returns `Down` if this marked the
    /// backend down. A timeout extends the streak only if the backend has answered nothing
    /// sent at or after `sent` (see the module documentation).
    pub fn on_timeout(&mut self, id: BackendId, sent: Instant, now: Instant) -> Option<Health> {
        let b = &mut self.backends[id];
        b.outstanding = b.outstanding.saturating_sub(1);
        b.counters.timeouts += 1;
        if b.newest_answered.is_some_and(|t| t >= sent) {
            return None;
        }
        b.consecutive_timeouts = b.consecutive_timeouts.saturating_add(1);
        if b.up && b.consecutive_timeouts >= self.down_after {
            return Some(self.mark_down(id, now, DownCause::Timeouts));
        }
        None
    }

    /// The network said `id` is unreachable (ICMP). Returns `Down` if it was up.
    pub fn on_unreachable(&mut self, id: BackendId, now: Instant) -> Option<Health> {
        if self.backends[id].up {
            return Some(self.mark_down(id, now, DownCause::Unreachable));
        }
        None
    }

    fn mark_down(&mut self, id: BackendId, now: Instant, cause: DownCause) -> Health {
        let b = &mut self.backends[id];
        b.up = false;
        b.counters.marked_down += 1;
        // Probe at once: a backend that was only briefly unreachable comes back quickly.
        b.next_probe = now;
        log::warn!(
            "backend {} marked down ({})",
            b.spec,
            match cause {
                DownCause::Timeouts => format!("{} consecutive timeouts", b.consecutive_timeouts),
                DownCause::Unreachable => "ICMP unreachable".to_string(),
            }
        );
        Health::Down(id)
    }

    /// Down backends due for a probe at `now`; each returned backend is scheduled for its
    /// next probe one `probe_interval` later.
    pub fn due_probes(&mut self, now: Instant, mut probe: impl FnMut(BackendId)) {
        for (id, b) in self.backends.iter_mut().enumerate() {
            if !b.up && b.next_probe <= now {
                b.next_probe = now + self.probe_interval;
                probe(id);
            }
        }
    }

    /// Ages the load meters: called every millisecond, each load loses 1/64 of itself, so
    /// a load is the request rate over roughly the last 64 ms (an exponential moving
    /// sum). Integer arithmetic: deterministic on every datapath.
    pub fn decay_loads(&mut self) {
        let mut sum = 0;
        for b in &mut self.backends {
            b.load -= b.load >> LOAD_DECAY_SHIFT;
            sum += b.load;
        }
        self.load_sum = sum;
    }

    /// Mean load over the backends that are up.
    pub fn mean_load(&self) -> u64 {
        let live = self.backends.iter().filter(|b| b.up).count() as u64;
        let sum: u64 = if live as usize == self.backends.len() {
            self.load_sum
        } else {
            self.backends.iter().filter(|b| b.up).map(|b| b.load).sum()
        };
        sum / live.max(1)
    }

    /// Forgets the latency samples (after each stats report, so percentiles are per period).
    pub fn reset_latency(&mut self) {
        for b in &mut self.backends {
            b.latency_us.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> BackendPool {
        let cfg = Config::from_args([
            "--backend",
            "127.0.0.1:11211",
            "--backend",
            "127.0.0.1:11212",
            "--down-after",
            "3",
            "--probe-interval",
            "100ms",
            "--neighbor",
            "127.0.0.1=02:00:00:00:00:01",
        ])
        .unwrap();
        BackendPool::new(&cfg)
    }

    fn ms(n: u64) -> Instant {
        Instant::from_nanos(n * 1_000_000)
    }

    #[test]
    fn timeouts_mark_down_and_probe_answers_bring_back() {
        let mut p = pool();
        for _ in 0..3 {
            p.on_sent(1, 10, true);
        }
        assert_eq!(p.on_timeout(1, ms(0), ms(0)), None);
        assert_eq!(p.on_timeout(1, ms(0), ms(1)), None);
        assert_eq!(p.on_timeout(1, ms(0), ms(2)), Some(Health::Down(1)));
        assert_eq!(p.live_mask(), vec![true, false]);
        assert_eq!(p.get(1).outstanding(), 0);

        let mut probes = vec![];
        p.due_probes(ms(2), |id| probes.push(id));
        assert_eq!(probes, vec![1]);
        probes.clear();
        p.due_probes(ms(50), |id| probes.push(id));
        assert!(probes.is_empty(), "next probe only after probe_interval");
        p.due_probes(ms(102), |id| probes.push(id));
        assert_eq!(probes, vec![1]);

        p.on_sent(1, 9, true);
        assert_eq!(
            p.on_response(1, 20, ms(102), Duration::from_micros(30), false, false),
            None,
            "only probes revive"
        );
        p.on_sent(1, 9, true);
        assert_eq!(
            p.on_response(1, 20, ms(102), Duration::from_micros(30), false, true),
            Some(Health::Up(1))
        );
        assert!(p.get(1).is_up());
        let c = &p.get(1).counters;
        assert_eq!((c.marked_down, c.marked_up, c.timeouts), (1, 1, 3));
        p.on_sent(1, 1, false);
        assert_eq!(
            p.get(1).outstanding(),
            0,
            "unanswered sends are not outstanding"
        );
    }

    #[test]
    fn a_response_resets_the_timeout_streak() {
        let mut p = pool();
        p.on_timeout(0, ms(0), ms(250));
        p.on_timeout(0, ms(1), ms(251));
        p.on_response(0, 1, ms(2), Duration::from_micros(5), false, false);
        p.on_timeout(0, ms(3), ms(253));
        p.on_timeout(0, ms(4), ms(254));
        assert!(p.get(0).is_up());
        assert_eq!(p.on_unreachable(0, ms(4)), Some(Health::Down(0)));
        assert_eq!(p.on_unreachable(0, ms(5)), None);
    }

    #[test]
    fn timeouts_of_requests_older_than_an_answered_one_are_no_streak() {
        let mut p = pool();
        // Requests sent at 0..10 ms; the one sent at 9 ms is answered, the others' timeouts
        // are handled afterwards, in one batch: the backend is alive.
        p.on_response(0, 1, ms(9), Duration::from_micros(50), false, false);
        for sent in 0..9 {
            assert_eq!(p.on_timeout(0, ms(sent), ms(250 + sent)), None);
        }
        assert!(p.get(0).is_up());
        assert_eq!(p.get(0).counters.timeouts, 9, "still counted as timeouts");
        // Requests sent after the newest answered one, all unanswered: the backend died.
        assert_eq!(p.on_timeout(0, ms(10), ms(260)), None);
        assert_eq!(p.on_timeout(0, ms(11), ms(261)), None);
        assert_eq!(p.on_timeout(0, ms(12), ms(262)), Some(Health::Down(0)));
    }

    #[test]
    fn load_meters_decay_and_average() {
        let mut p = pool();
        for _ in 0..100 {
            p.on_sent(0, 1, false);
        }
        assert_eq!(p.get(0).load(), 100 * LOAD_ONE);
        assert_eq!(p.mean_load(), 50 * LOAD_ONE);
        for _ in 0..64 {
            p.decay_loads();
        }
        // (63/64)^64 ≈ 0.37: an exponential moving sum with a ~64 ms time constant.
        let left = p.get(0).load() as f64 / (100 * LOAD_ONE) as f64;
        assert!((0.35..0.39).contains(&left), "{left}");
        assert_eq!(p.mean_load(), p.get(0).load() / 2);
        // Down backends do not count in the mean.
        p.on_unreachable(1, Instant::ZERO);
        assert_eq!(p.mean_load(), p.get(0).load());
    }

    #[test]
    fn latency_percentiles() {
        let mut p = pool();
        for us in 1..=100 {
            p.on_sent(0, 1, true);
            p.on_response(0, 1, ms(0), Duration::from_micros(us), false, false);
        }
        let b = p.get(0);
        assert_eq!(b.latency_samples(), 100);
        let p50 = b.latency_percentile_us(0.5);
        assert!((49..=51).contains(&p50), "{p50}");
        assert!(b.latency_percentile_us(0.99) >= 98);
    }
}
