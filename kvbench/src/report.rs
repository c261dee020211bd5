//! What a run reports: the live per-second line, the CSV time series, the final summary
//! (human text and JSON), and the latency histogram in HdrHistogram's percentile-
//! distribution (`.hgrm`) format.
//!
//! Owns: figures and their formats. Must not: print (the binary does) or run anything.

use std::io::{self, Write};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::config::{LoopMode, Settings};
use super::exchange::{Counters, ServerCounters};
use super::rate::Lag;
use super::stats::StatsDelta;

const NS_PER_US: f64 = 1_000.0;

fn us(ns: u64) -> f64 {
    ns as f64 / NS_PER_US
}

/// Latency percentiles in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    pub count: u64,
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let q = |q: f64| us(h.value_at_quantile(q));
        Latency {
            count: h.len(),
            min: us(h.min()),
            mean: h.mean() / NS_PER_US,
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            p9999: q(0.9999),
            max: us(h.max()),
        }
    }
}

/// One second of a run, over all threads.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IntervalReport {
    /// Seconds since the start of the measured phase (warm-up included).
    pub second: u32,
    pub warmup: bool,
    pub ops_per_sec: u64,
    pub gets: u64,
    pub sets: u64,
    pub hits: u64,
    pub misses: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub stale: u64,
    pub corrupt: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// Open loop: sends more than 1 ms behind schedule, and the worst lag.
    pub late_sends: u64,
    pub max_lag_us: f64,
}

impl IntervalReport {
    pub fn new(
        second: u32,
        warmup: bool,
        c: &Counters,
        lag: &Lag,
        h: &Histogram<u64>,
    ) -> IntervalReport {
        let l = Latency::of(h);
        IntervalReport {
            second,
            warmup,
            ops_per_sec: c.completed,
            gets: c.gets,
            sets: c.sets,
            hits: c.hits,
            misses: c.misses,
            errors: c.errors(),
            timeouts: c.timeouts,
            stale: c.stale,
            corrupt: c.corrupt,
            p50_us: l.p50,
            p99_us: l.p99,
            p999_us: l.p999,
            max_us: l.max,
            late_sends: lag.late,
            max_lag_us: us(lag.max_ns),
        }
    }

    /// The live line.
    pub fn line(&self) -> String {
        let lookups = self.hits + self.misses;
        let hit = if lookups > 0 {
            format!("{:5.1}%", 100.0 * self.hits as f64 / lookups as f64)
        } else {
            "    -".to_owned()
        };
        let mut s = format!(
            "[{:4}s{}] {:>9} ops/s  hit {}  err {}  timeout {}  p50 {}  p99 {}",
            self.second + 1,
            if self.warmup { " warmup" } else { "" },
            self.ops_per_sec,
            hit,
            self.errors,
            self.timeouts,
            fmt_us(self.p50_us),
            fmt_us(self.p99_us),
        );
        if self.stale + self.corrupt > 0 {
            s.push_str(&format!("  STALE {} CORRUPT {}", self.stale, self.corrupt));
        }
        if self.late_sends > 0 {
            s.push_str(&format!(
                "  behind schedule: {} late sends, max {}",
                self.late_sends,
                fmt_us(self.max_lag_us)
            ));
        }
        s
    }

    pub const CSV_HEADER: &'static str = "second,warmup,ops_per_sec,gets,sets,hits,misses,errors,timeouts,stale,corrupt,p50_us,p99_us,p999_us,max_us,late_sends,max_lag_us";

    pub fn csv_row(&self) -> String {
        format!(
            "{},{},{},{},{},{},{},{},{},{},{},{:.3},{:.3},{:.3},{:.3},{},{:.3}",
            self.second + 1,
            u8::from(self.warmup),
            self.ops_per_sec,
            self.gets,
            self.sets,
            self.hits,
            self.misses,
            self.errors,
            self.timeouts,
            self.stale,
            self.corrupt,
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
            self.late_sends,
            self.max_lag_us
        )
    }
}

fn fmt_us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1}ms", v / 1000.0)
    } else {
        format!("{v:.1}us")
    }
}

/// The settings a summary was produced with.
#[derive(Clone, Debug, Serialize)]
pub struct ConfigEcho {
    pub servers: Vec<String>,
    pub proto: String,
    pub meta: bool,
    pub threads: u32,
    pub connections: u32,
    pub mode: &'static str,
    pub depth: Option<u32>,
    pub rate: Option<f64>,
    pub arrival: Option<String>,
    pub max_outstanding: Option<u32>,
    pub duration_s: Option<f64>,
    pub requests: Option<u64>,
    pub warmup_s: u32,
    pub timeout_ms: u64,
    pub keys: u32,
    pub dist: String,
    pub shift_at_s: Vec<f64>,
    pub shift_by: u64,
    pub get_ratio: f64,
    pub multiget: u16,
    pub key_size: String,
    pub value_size: String,
    pub key_prefix: String,
    pub load: bool,
    pub seed: u64,
    pub validate: bool,
}

impl ConfigEcho {
    fn of(s: &Settings) -> ConfigEcho {
        let (mode, depth, rate, arrival, max_out) = match s.mode {
            LoopMode::Closed { depth } => ("closed", Some(depth), None, None, None),
            LoopMode::Open {
                rate,
                arrival,
                max_outstanding,
            } => (
                "open",
                None,
                Some(rate),
                Some(arrival.to_string()),
                Some(max_outstanding),
            ),
        };
        ConfigEcho {
            servers: s.servers.iter().map(ToString::to_string).collect(),
            proto: s.transport.to_string(),
            meta: s.meta,
            threads: s.threads,
            connections: s.connections,
            mode,
            depth,
            rate,
            arrival,
            max_outstanding: max_out,
            duration_s: s.duration.map(|d| d.as_secs_f64()),
            requests: s.requests,
            warmup_s: s.warmup_secs,
            timeout_ms: s.timeout.as_millis() as u64,
            keys: s.keys,
            dist: s.dist.to_string(),
            shift_at_s: s.shift_at.iter().map(Duration::as_secs_f64).collect(),
            shift_by: s.shift_by,
            get_ratio: s.get_ratio,
            multiget: s.multiget,
            key_size: s.key_size.to_string(),
            value_size: s.value_size.to_string(),
            key_prefix: s.key_prefix.clone(),
            load: s.load,
            seed: s.seed,
            validate: s.validate,
        }
    }
}

/// Failures other than timeouts, by kind.
#[derive(Clone, Debug, Serialize)]
pub struct ErrorDetail {
    pub protocol: u64,
    pub server_error: u64,
    pub set_not_stored: u64,
    pub send: u64,
    pub connection: u64,
    pub wrong_key: u64,
    /// Not errors: UDP replies that matched nothing in flight (late after a timeout).
    pub unmatched_replies: u64,
    pub reconnects: u64,
}

/// Per-server counts (as addressed: with a kvlb VIP, the VIP).
#[derive(Clone, Debug, Serialize)]
pub struct PerServer {
    pub server: String,
    pub sent: u64,
    pub completed: u64,
    pub timeouts: u64,
    pub errors: u64,
}

/// The consistency check's results.
#[derive(Clone, Debug, Serialize)]
pub struct Validation {
    pub enabled: bool,
    pub checked: u64,
    pub fresh: u64,
    pub stale: u64,
    pub corrupt: u64,
    pub foreign: u64,
    pub set_collisions: u64,
    /// Misses of keys acknowledged stored before the GET was sent (see
    /// `Counters::lost`): 0 where no server evicts.
    pub lost: u64,
}

/// How well kvbench kept an open-loop schedule.
#[derive(Clone, Debug, Serialize)]
pub struct ScheduleReport {
    pub target_rate: f64,
    pub arrival: String,
    pub sent: u64,
    /// Sends more than 1 ms behind their intended time.
    pub late_sends: u64,
    pub late_fraction: f64,
    pub mean_lag_us: f64,
    pub max_lag_us: f64,
    /// Fewer than 1% of sends late: the latencies measure the server, not kvbench.
    pub kept_up: bool,
}

/// kvbench's own CPU use (user + system, all threads) during the run, warm-up included,
/// and per request sent in that time.
#[derive(Clone, Debug, Serialize)]
pub struct Cpu {
    pub seconds: f64,
    pub us_per_request: f64,
}

/// The load phase.
#[derive(Clone, Debug, Serialize)]
pub struct LoadSummary {
    pub keys: u32,
    pub seconds: f64,
    pub stored: u64,
    pub errors: u64,
    pub timeouts: u64,
}

impl LoadSummary {
    pub fn new(keys: u32, seconds: f64, c: &Counters) -> LoadSummary {
        LoadSummary {
            keys,
            seconds,
            stored: c.sets_stored,
            errors: c.errors(),
            timeouts: c.timeouts,
        }
    }
}

/// Merged counts of the measured phase.
#[derive(Debug)]
pub struct Totals {
    pub counters: Counters,
    pub lag: Lag,
    pub hist: Histogram<u64>,
    pub servers: Vec<ServerCounters>,
}

/// The final result of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub tool: &'static str,
    pub version: &'static str,
    pub run_id: String,
    pub config: ConfigEcho,
    /// Measured time (the run's duration, or until the last request with --requests).
    pub duration_s: f64,
    /// Requests answered (including error replies).
    pub requests: u64,
    pub ops_per_sec: f64,
    pub gets: u64,
    pub sets: u64,
    /// Keys asked for by gets (gets × multi-get size).
    pub get_keys: u64,
    pub gets_per_sec: f64,
    pub get_keys_per_sec: f64,
    pub sets_per_sec: f64,
    pub hits: u64,
    pub misses: u64,
    pub hit_ratio: f64,
    pub errors: u64,
    pub timeouts: u64,
    /// Requests still in flight when the run ended (neither answered nor timed out).
    pub unfinished: u64,
    pub error_detail: ErrorDetail,
    pub latency_us: Latency,
    pub per_server: Vec<PerServer>,
    pub validation: Validation,
    pub schedule: Option<ScheduleReport>,
    pub values_capped: u64,
    pub cpu: Cpu,
    pub load: Option<LoadSummary>,
    /// Differences of the servers' own `stats` over the run (--server-stats,
    /// --stats-server).
    pub server_stats: Vec<StatsDelta>,
    #[serde(skip)]
    pub histogram: Histogram<u64>,
    #[serde(skip)]
    pub series: Vec<IntervalReport>,
    /// The stats servers' counters second by second (--stats-csv).
    #[serde(skip)]
    pub server_series: Vec<ServerInterval>,
}

/// What one server counted in one second of the run (its own `stats`, read by kvbench
/// once a second).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServerInterval {
    /// Seconds since the start of the measured phase (warm-up included).
    pub second: u32,
    pub server: String,
    pub cmd_get: u64,
    pub get_hits: u64,
    pub get_misses: u64,
    pub cmd_set: u64,
}

impl ServerInterval {
    pub const CSV_HEADER: &'static str = "second,server,cmd_get,get_hits,get_misses,cmd_set";

    pub fn csv_row(&self) -> String {
        format!(
            "{},{},{},{},{},{}",
            self.second, self.server, self.cmd_get, self.get_hits, self.get_misses, self.cmd_set
        )
    }
}

impl Summary {
    pub fn new(
        settings: &Settings,
        run_id: u32,
        t: Totals,
        measured_ns: u64,
        (cpu_seconds, sent_all): (f64, u64),
        unfinished: u64,
        load: Option<LoadSummary>,
        server_stats: Vec<StatsDelta>,
        series: Vec<IntervalReport>,
    ) -> Summary {
        let c = &t.counters;
        let secs = measured_ns as f64 / 1e9;
        let rate = |n: u64| n as f64 / secs;
        let lookups = c.hits + c.misses;
        let schedule = match settings.mode {
            LoopMode::Open { rate, arrival, .. } => {
                let late_fraction = if t.lag.sent > 0 {
                    t.lag.late as f64 / t.lag.sent as f64
                } else {
                    0.0
                };
                Some(ScheduleReport {
                    target_rate: rate,
                    arrival: arrival.to_string(),
                    sent: t.lag.sent,
                    late_sends: t.lag.late,
                    late_fraction,
                    mean_lag_us: if t.lag.sent > 0 {
                        us(t.lag.total_ns) / t.lag.sent as f64
                    } else {
                        0.0
                    },
                    max_lag_us: us(t.lag.max_ns),
                    kept_up: late_fraction < 0.01,
                })
            }
            LoopMode::Closed { .. } => None,
        };
        Summary {
            tool: "kvbench",
            version: env!("CARGO_PKG_VERSION"),
            run_id: format!("{run_id:08x}"),
            config: ConfigEcho::of(settings),
            duration_s: secs,
            requests: c.completed,
            ops_per_sec: rate(c.completed),
            gets: c.gets,
            sets: c.sets,
            get_keys: c.get_keys,
            gets_per_sec: rate(c.gets),
            get_keys_per_sec: rate(c.get_keys),
            sets_per_sec: rate(c.sets),
            hits: c.hits,
            misses: c.misses,
            hit_ratio: if lookups > 0 {
                c.hits as f64 / lookups as f64
            } else {
                0.0
            },
            errors: c.errors(),
            timeouts: c.timeouts,
            unfinished,
            error_detail: ErrorDetail {
                protocol: c.protocol_errors,
                server_error: c.server_errors,
                set_not_stored: c.sets_not_stored,
                send: c.send_errors,
                connection: c.connection_errors,
                wrong_key: c.wrong_keys,
                unmatched_replies: c.unmatched_replies,
                reconnects: c.reconnects,
            },
            latency_us: Latency::of(&t.hist),
            per_server: settings
                .servers
                .iter()
                .zip(&t.servers)
                .map(|(s, n)| PerServer {
                    server: s.to_string(),
                    sent: n.sent,
                    completed: n.completed,
                    timeouts: n.timeouts,
                    errors: n.errors,
                })
                .collect(),
            validation: Validation {
                enabled: settings.validate,
                checked: c.fresh + c.stale + c.corrupt + c.foreign,
                fresh: c.fresh,
                stale: c.stale,
                corrupt: c.corrupt,
                foreign: c.foreign,
                set_collisions: c.set_collisions,
                lost: c.lost,
            },
            schedule,
            values_capped: c.values_capped,
            cpu: Cpu {
                seconds: cpu_seconds,
                us_per_request: if sent_all > 0 {
                    cpu_seconds * 1e6 / sent_all as f64
                } else {
                    0.0
                },
            },
            load,
            server_stats,
            histogram: t.hist,
            series,
            server_series: Vec::new(),
        }
    }

    /// Stale or corrupt values were read.
    pub fn invalid_values(&self) -> bool {
        self.validation.stale + self.validation.corrupt > 0
    }

    /// The summary as people read it.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let c = &self.config;
        let mode = match (c.depth, c.rate) {
            (Some(d), _) => format!("closed loop, {d} outstanding per connection"),
            (_, Some(r)) => format!(
                "open loop, {r} req/s {}",
                c.arrival.as_deref().unwrap_or("")
            ),
            _ => String::new(),
        };
        s += &format!(
            "kvbench {}: {} over {}{}, {} threads x {} connections, {}\n",
            self.version,
            c.servers.join(" "),
            c.proto,
            if c.meta { " (meta)" } else { "" },
            c.threads,
            c.connections,
            mode
        );
        s += &format!(
            "workload: {} keys, {}, get ratio {}, multiget {}, key size {}, value size {}, seed {}, run id {}\n",
            c.keys, c.dist, c.get_ratio, c.multiget, c.key_size, c.value_size, c.seed, self.run_id
        );
        if let Some(l) = &self.load {
            s += &format!(
                "load:     {} keys in {:.2}s, {} stored, {} errors, {} timeouts\n",
                l.keys, l.seconds, l.stored, l.errors, l.timeouts
            );
        }
        s += &format!(
            "\nthroughput: {:.0} requests/s ({} in {:.2}s): {:.0} gets/s ({:.0} keys/s), {:.0} sets/s\n",
            self.ops_per_sec, self.requests, self.duration_s, self.gets_per_sec, self.get_keys_per_sec, self.sets_per_sec
        );
        s += &format!(
            "hits:       {} of {} keys ({:.2}%)\n",
            self.hits,
            self.hits + self.misses,
            100.0 * self.hit_ratio
        );
        s += &format!(
            "errors:     {} (protocol {}, server {}, not stored {}, send {}, connection {}, wrong key {}), timeouts {}, unfinished {}\n",
            self.errors,
            self.error_detail.protocol,
            self.error_detail.server_error,
            self.error_detail.set_not_stored,
            self.error_detail.send,
            self.error_detail.connection,
            self.error_detail.wrong_key,
            self.timeouts,
            self.unfinished
        );
        let l = &self.latency_us;
        s += &format!(
            "latency:    p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {}  mean {}\n",
            fmt_us(l.p50),
            fmt_us(l.p90),
            fmt_us(l.p99),
            fmt_us(l.p999),
            fmt_us(l.p9999),
            fmt_us(l.max),
            fmt_us(l.mean)
        );
        if let Some(sc) = &self.schedule {
            s += &format!(
                "schedule:   {} sends, {} more than 1 ms late ({:.2}%), mean lag {}, max lag {}{}\n",
                sc.sent,
                sc.late_sends,
                100.0 * sc.late_fraction,
                fmt_us(sc.mean_lag_us),
                fmt_us(sc.max_lag_us),
                if sc.kept_up {
                    ""
                } else {
                    "  WARNING: kvbench could not keep the schedule"
                }
            );
        }
        let v = &self.validation;
        if v.enabled {
            s += &format!(
                "validation: {} values checked: {} fresh, {} stale, {} corrupt, {} foreign; {} sets sent as gets (set of the key in flight)\n",
                v.checked, v.fresh, v.stale, v.corrupt, v.foreign, v.set_collisions
            );
            if v.lost > 0 {
                s += &format!(
                    "validation: {} gets missed a key acknowledged stored before they were sent (lost writes, or evictions)\n",
                    v.lost
                );
            }
        }
        if self.values_capped > 0 {
            s += &format!(
                "values capped to the transport's limit: {}\n",
                self.values_capped
            );
        }
        s += &format!(
            "cpu:        {:.2}s ({:.2} us per request)\n",
            self.cpu.seconds, self.cpu.us_per_request
        );
        if self.per_server.len() > 1 || !self.server_stats.is_empty() {
            s += "\nper server (as addressed):\n";
            for p in &self.per_server {
                s += &format!(
                    "  {:<24} sent {:>10}  completed {:>10}  timeouts {:>6}  errors {:>6}\n",
                    p.server, p.sent, p.completed, p.timeouts, p.errors
                );
            }
        }
        if !self.server_stats.is_empty() {
            s += "server stats over the run (the servers' own counters):\n";
            for d in &self.server_stats {
                s += &format!(
                    "  {:<24} cmd_get {:>10}  get_hits {:>10}  get_misses {:>10}  cmd_set {:>10}  cpu {:.2}s\n",
                    d.server, d.cmd_get, d.get_hits, d.get_misses, d.cmd_set, d.cpu_seconds
                );
            }
        }
        s
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

/// Writes `h` (nanoseconds) in HdrHistogram's percentile-distribution text format, in
/// microseconds: what `HistogramLogProcessor`/the online HdrHistogram plotter read.
pub fn write_hgrm<W: Write>(h: &Histogram<u64>, mut w: W) -> io::Result<()> {
    writeln!(
        w,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let value = h.highest_equivalent(v.value_iterated_to()) as f64 / NS_PER_US;
        if q < 1.0 {
            writeln!(
                w,
                "{value:12.3} {q:1.12} {total:10} {:14.2}",
                1.0 / (1.0 - q)
            )?;
        } else {
            writeln!(w, "{value:12.3} {q:1.12} {total:10}")?;
        }
    }
    let mean = if h.is_empty() {
        0.0
    } else {
        h.mean() / NS_PER_US
    };
    let sd = if h.is_empty() {
        0.0
    } else {
        h.stdev() / NS_PER_US
    };
    writeln!(w, "#[Mean    = {mean:12.3}, StdDeviation   = {sd:12.3}]")?;
    writeln!(
        w,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / NS_PER_US,
        h.len()
    )?;
    writeln!(
        w,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        h.distinct_values()
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hgrm_format() {
        let mut h = super::super::exchange::new_histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let mut out = Vec::new();
        write_hgrm(&h, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let first = text.lines().nth(2).unwrap();
        assert!(
            first.trim_start().starts_with("1.000 0.000000000000"),
            "{first}"
        );
        assert!(text.contains("Total count    =         1000]"));
        let last_data = text.lines().rfind(|l| !l.starts_with('#')).unwrap();
        assert!(last_data.contains("1.000000000000"), "{last_data}");
        let l = Latency::of(&h);
        assert!((l.p50 - 500.0).abs() < 1.0, "{l:?}");
        assert!((l.max - 1000.0).abs() < 1.0);
    }

    #[test]
    fn interval_line_and_csv() {
        let c = Counters {
            completed: 1000,
            hits: 9,
            misses: 1,
            stale: 1,
            ..Counters::default()
        };
        let mut h = super::super::exchange::new_histogram();
        h.record(25_000).unwrap();
        let r = IntervalReport::new(0, false, &c, &Lag::default(), &h);
        let line = r.line();
        assert!(line.contains("1000 ops/s"), "{line}");
        assert!(line.contains("90.0%"), "{line}");
        assert!(line.contains("STALE 1"), "{line}");
        assert_eq!(
            r.csv_row().split(',').count(),
            IntervalReport::CSV_HEADER.split(',').count()
        );
    }
}
