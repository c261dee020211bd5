//! Open-loop send schedules: when each request of a connection is meant to leave.
//!
//! A request's latency is measured from its intended send time, not from when kvbench got
//! round to sending it, so a slow server (or a slow kvbench) cannot hide queueing delay by
//! delaying the requests that would have measured it (no coordinated omission). How far
//! kvbench itself falls behind the schedule is measured separately ([`Lag`]).
//!
//! Owns: arrival times. Must not: read clocks (times are nanoseconds since the start of
//! the run, handed in).

use std::fmt;
use std::str::FromStr;

use kvlb::random::Rng;

/// How requests are spaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Evenly spaced.
    Constant,
    /// Exponential gaps (a Poisson process).
    Poisson,
}

impl FromStr for Arrival {
    type Err = String;
    fn from_str(s: &str) -> Result<Arrival, String> {
        match s {
            "constant" | "uniform" | "fixed" => Ok(Arrival::Constant),
            "poisson" | "exponential" | "exp" => Ok(Arrival::Poisson),
            _ => Err(format!(
                "bad arrival process '{s}': expected constant or poisson"
            )),
        }
    }
}

impl fmt::Display for Arrival {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arrival::Constant => "constant",
            Arrival::Poisson => "poisson",
        })
    }
}

/// The intended send times of one connection's requests at a fixed mean rate.
#[derive(Clone, Debug)]
pub struct Schedule {
    arrival: Arrival,
    gap_ns: f64,
    /// Intended time of the next request (fractional nanoseconds).
    next_ns: f64,
    /// Constant spacing: the first request's time and how many followed, so the n-th
    /// time is computed, not accumulated (no drift).
    first_ns: f64,
    count: u64,
    rng: Rng,
}

impl Schedule {
    /// `rate` requests per second starting at `start_ns`; `phase` ∈ [0, 1) staggers
    /// connections with constant spacing so they do not all send at once.
    pub fn new(arrival: Arrival, rate: f64, start_ns: u64, phase: f64, mut rng: Rng) -> Schedule {
        let gap_ns = 1e9 / rate.max(1e-9);
        let first = match arrival {
            Arrival::Constant => gap_ns * phase.clamp(0.0, 1.0),
            Arrival::Poisson => gap_ns * rng.exp1(),
        };
        Schedule {
            arrival,
            gap_ns,
            next_ns: start_ns as f64 + first,
            first_ns: start_ns as f64 + first,
            count: 0,
            rng,
        }
    }

    /// When the next request is due.
    #[inline]
    pub fn due_ns(&self) -> u64 {
        self.next_ns as u64
    }

    /// Moves on to the request after the one due now.
    #[inline]
    pub fn advance(&mut self) {
        match self.arrival {
            Arrival::Constant => {
                self.count += 1;
                self.next_ns = self.first_ns + self.count as f64 * self.gap_ns;
            }
            Arrival::Poisson => self.next_ns += self.gap_ns * self.rng.exp1(),
        }
    }
}

/// How late kvbench sent open-loop requests relative to their schedule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lag {
    /// Requests sent more than [`Lag::LATE_NS`] after their intended time.
    pub late: u64,
    /// The largest lag seen.
    pub max_ns: u64,
    pub total_ns: u64,
    pub sent: u64,
}

impl Lag {
    /// A send this much behind schedule counts as late: kvbench, not the server, was the
    /// bottleneck for it.
    pub const LATE_NS: u64 = 1_000_000;

    #[inline]
    pub fn record(&mut self, lag_ns: u64) {
        self.sent += 1;
        self.total_ns += lag_ns;
        self.max_ns = self.max_ns.max(lag_ns);
        if lag_ns > Self::LATE_NS {
            self.late += 1;
        }
    }

    pub fn merge(&mut self, o: &Lag) {
        self.late += o.late;
        self.max_ns = self.max_ns.max(o.max_ns);
        self.total_ns += o.total_ns;
        self.sent += o.sent;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_schedule_has_no_drift() {
        let mut s = Schedule::new(Arrival::Constant, 3.0, 1000, 0.5, Rng::new(1));
        assert_eq!(s.due_ns(), 1000 + 166_666_666);
        for _ in 0..3_000_000 {
            s.advance();
        }
        // 3 million gaps of 1/3 s = 1e6 s, to the nanosecond (f64 keeps it exact enough).
        let want = 1000.0 + 166_666_666.67 + 1e15;
        assert!((s.due_ns() as f64 - want).abs() < 1e3, "{}", s.due_ns());
    }

    #[test]
    fn poisson_schedule_has_the_mean_rate_and_exponential_gaps() {
        let mut s = Schedule::new(Arrival::Poisson, 1000.0, 0, 0.0, Rng::new(2));
        let mut prev = s.due_ns();
        let n = 100_000;
        let mut short = 0;
        for _ in 0..n {
            s.advance();
            let d = s.due_ns();
            // P(gap < mean/10) = 1 - e^-0.1 ≈ 9.5%.
            if d - prev < 100_000 {
                short += 1;
            }
            prev = d;
        }
        let rate = n as f64 / (s.due_ns() as f64 / 1e9);
        assert!((rate - 1000.0).abs() < 15.0, "{rate}");
        assert!((9_000..10_000).contains(&short), "{short}");
    }

    #[test]
    fn lag_accounting() {
        let mut l = Lag::default();
        l.record(10);
        l.record(Lag::LATE_NS + 1);
        let mut m = Lag::default();
        m.record(5);
        m.merge(&l);
        assert_eq!(m.late, 1);
        assert_eq!(m.sent, 3);
        assert_eq!(m.max_ns, Lag::LATE_NS + 1);
        assert_eq!("poisson".parse(), Ok(Arrival::Poisson));
        assert!("x".parse::<Arrival>().is_err());
    }
}
