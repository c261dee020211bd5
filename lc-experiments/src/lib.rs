//! `kvlb lc-experiments`: the lossy counting experiments. Sweeps detectors × Zipf skew ×
//! stream length × key count, a drift scenario, weighted (Facebook-ETC-like) streams and a
//! same-run speed comparison against the crates.io baselines ([`baselines`]); writes CSV
//! files and a markdown summary to an output folder (`scripts/plot_lc.py` draws the PNGs).
//!
//! A crate of its own in kvlb's workspace, on the kvlb library's detectors (without its
//! features): the NF never compiles the harness or its baselines. Its binary,
//! `kvlb-lc-experiments`, is what `kvlb lc-experiments` runs.
//!
//! Timing is the only clock use, and it lives here, at the edge: the detectors never read
//! one. Rates are given by wall clock and by the thread's CPU time (from
//! `/proc/thread-self/stat`, 10 ms ticks), since the machine is shared.
#![forbid(unsafe_code)]

pub mod baselines;

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};

use crate::baselines::{DataSketchesFrequent, DetectorSummary, HeavyKeeperTopK, Summary};
use kvlb::hotkey::eval::{
    accuracy, etc_value_sizes, exact_counts, zipf_hot_ranks, zipf_stream, Accuracy, KeySpace,
    KEY_LEN,
};
use kvlb::hotkey::{
    build, build_boxed, Algo, Detector, DetectorParams, HotItem, ReportRule, SpaceSaving,
};
use kvlb::random::{Rng, Zipf};

const HELP: &str = "\
kvlb lc-experiments: hot-key detector experiments (accuracy, memory, speed, drift)

usage: kvlb lc-experiments --out DIR [--quick] [--only SECTIONS] [--seed N]

Writes DIR/{thresholds,sweep,drift,weighted,bench,sampled}.csv and DIR/summary.md; progress goes to
stderr. scripts/lc-experiments.sh runs this in release mode and draws the plots.

options:
  --out DIR        output folder (created)
  --quick          a few-minute version (shorter streams, fewer configurations)
  --only LIST      comma-separated subset of: thresholds,sweep,drift,weighted,bench,sampled
  --seed N         workload seed [default: 1]
";

/// kvlb's default thresholds for 10 backends: s = 1/(k·n) with k = 4, ε = s/10.
const BACKENDS: f64 = 10.0;
const SHARE_K: f64 = 4.0;
const ALPHAS: [f64; 4] = [0.8, 0.99, 1.2, 1.5];
const SECTIONS: [&str; 6] = [
    "thresholds",
    "sweep",
    "drift",
    "weighted",
    "bench",
    "sampled",
];

fn default_support() -> f64 {
    1.0 / (SHARE_K * BACKENDS)
}

/// Entry point of `kvlb lc-experiments`.
pub fn run(args: Vec<OsString>) -> anyhow::Result<()> {
    use lexopt::prelude::*;
    let mut out: Option<PathBuf> = None;
    let mut quick = false;
    let mut tiny = false;
    let mut only: Vec<String> = SECTIONS.iter().map(|s| s.to_string()).collect();
    let mut seed = 1u64;
    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next()? {
        match arg {
            Long("help") | Short('h') => {
                print!("{HELP}");
                return Ok(());
            }
            Long("out") => out = Some(p.value()?.into()),
            Long("quick") => quick = true,
            // Undocumented: the test suite's smoke run.
            Long("tiny") => tiny = true,
            Long("seed") => seed = p.value()?.parse()?,
            Long("only") => {
                only = p
                    .value()?
                    .string()?
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .collect();
                if let Some(bad) = only.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
                    bail!("unknown section '{bad}' (known: {})", SECTIONS.join(", "));
                }
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    let out = out.context("--out DIR is required (see --help)")?;
    fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let plan = if tiny {
        Plan::sized(Size::Tiny, seed)
    } else {
        Plan::new(quick, seed)
    };
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Lossy counting experiments\n\n`kvlb lc-experiments --out {}{}` (seed {seed}). \
         Support s = 1/(k·n) = {} for n = {BACKENDS} backends and k = {SHARE_K}, ε = s/10 \
         unless stated. Machine: {} CPUs, load average at start {}.\n",
        out.display(),
        if quick { " --quick" } else { "" },
        default_support(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
    let started = Instant::now();
    for section in SECTIONS {
        if !only.iter().any(|s| s == section) {
            continue;
        }
        progress(&format!("== {section} =="));
        let text = match section {
            "thresholds" => thresholds(&plan, &out)?,
            "sweep" => sweep(&plan, &out)?,
            "drift" => drift(&plan, &out)?,
            "weighted" => weighted(&plan, &out)?,
            "bench" => bench(&plan, &out)?,
            "sampled" => sampled(&plan, &out)?,
            _ => unreachable!("sections are validated"),
        };
        md.push_str(&text);
        md.push('\n');
    }
    let _ = writeln!(
        md,
        "Total run time: {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    let path = out.join("summary.md");
    fs::write(&path, md).with_context(|| format!("cannot write {}", path.display()))?;
    progress(&format!(
        "done in {:.0} s; wrote {}",
        started.elapsed().as_secs_f64(),
        path.display()
    ));
    Ok(())
}

fn progress(msg: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "[lc-experiments] {msg}");
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Size {
    Full,
    Quick,
    /// Seconds even in a debug build: for tests.
    Tiny,
}

/// Sizes of everything, full or quick.
#[derive(Debug)]
struct Plan {
    seed: u64,
    lengths: Vec<usize>,
    key_counts: Vec<usize>,
    /// Extra supports (other cluster sizes) swept at the longest length and most keys.
    extra_supports: Vec<(f64, &'static str)>,
    drift_epoch: usize,
    drift_epochs: usize,
    drift_alphas: Vec<f64>,
    /// Keys in the drift, weighted and bench workloads.
    keys: usize,
    weighted_len: usize,
    weighted_alphas: Vec<f64>,
    bench_len: usize,
    bench_rounds: usize,
    /// Sampled detection: keys, requests per (1 s) epoch, epochs, sampling rates R.
    sampled_keys: usize,
    sampled_epoch: usize,
    sampled_epochs: usize,
    sampled_rates: Vec<u64>,
}

impl Plan {
    fn new(quick: bool, seed: u64) -> Plan {
        Self::sized(if quick { Size::Quick } else { Size::Full }, seed)
    }

    fn sized(size: Size, seed: u64) -> Plan {
        if size == Size::Tiny {
            return Plan {
                seed,
                lengths: vec![20_000],
                key_counts: vec![5_000],
                extra_supports: vec![(1.0 / 16.0, "n=4")],
                drift_epoch: 2_000,
                drift_epochs: 6,
                drift_alphas: vec![1.2],
                keys: 5_000,
                weighted_len: 10_000,
                weighted_alphas: vec![1.2],
                bench_len: 10_000,
                bench_rounds: 2,
                sampled_keys: 5_000,
                sampled_epoch: 40_000,
                sampled_epochs: 4,
                sampled_rates: vec![10_000],
            };
        }
        if size == Size::Quick {
            Plan {
                seed,
                lengths: vec![1_000_000],
                key_counts: vec![100_000, 1_000_000],
                extra_supports: vec![(1.0 / 16.0, "n=4"), (1.0 / 128.0, "n=32")],
                drift_epoch: 50_000,
                drift_epochs: 16,
                drift_alphas: vec![0.99],
                keys: 1_000_000,
                weighted_len: 300_000,
                weighted_alphas: vec![0.99, 1.2],
                bench_len: 2_000_000,
                bench_rounds: 3,
                sampled_keys: 1_000_000,
                sampled_epoch: 2_000_000,
                sampled_epochs: 6,
                sampled_rates: vec![100_000, 500_000],
            }
        } else {
            Plan {
                seed,
                lengths: vec![1_000_000, 10_000_000],
                key_counts: vec![100_000, 1_000_000],
                extra_supports: vec![(1.0 / 16.0, "n=4"), (1.0 / 128.0, "n=32")],
                drift_epoch: 200_000,
                drift_epochs: 20,
                drift_alphas: vec![0.99, 1.2],
                keys: 1_000_000,
                weighted_len: 2_000_000,
                weighted_alphas: vec![0.99, 1.2],
                bench_len: 10_000_000,
                bench_rounds: 5,
                sampled_keys: 1_000_000,
                sampled_epoch: 4_000_000,
                sampled_epochs: 16,
                sampled_rates: vec![100_000, 500_000],
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Timing

/// CPU seconds this thread has used (utime + stime, in USER_HZ = 100 ticks), if readable.
fn thread_cpu() -> Option<f64> {
    let s = fs::read_to_string("/proc/thread-self/stat").ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

#[derive(Clone, Copy, Debug)]
struct Timing {
    wall: f64,
    cpu: Option<f64>,
}

impl Timing {
    fn measure(f: impl FnOnce()) -> Timing {
        let c0 = thread_cpu();
        let t0 = Instant::now();
        f();
        let wall = t0.elapsed().as_secs_f64();
        let cpu = match (c0, thread_cpu()) {
            (Some(a), Some(b)) if b > a => Some(b - a),
            _ => None,
        };
        Timing { wall, cpu }
    }

    /// Millions of operations per second by wall clock and by CPU time.
    fn rates(&self, ops: usize) -> (f64, Option<f64>) {
        (
            ops as f64 / self.wall / 1e6,
            self.cpu.map(|c| ops as f64 / c / 1e6),
        )
    }
}

fn opt(x: Option<f64>) -> String {
    x.map_or_else(String::new, |v| format!("{v:.3}"))
}

// ---------------------------------------------------------------------------------------
// Workloads

/// A request stream: key ids (for ground truth) and the keys' bytes laid out one request
/// after another, as a datapath sees them in consecutive packets.
struct Stream {
    ids: Vec<u32>,
    flat: Vec<u8>,
    weights: Option<Vec<u32>>,
}

impl Stream {
    fn new(keys: &KeySpace, ids: Vec<u32>, sizes: Option<&[u32]>) -> Stream {
        let mut flat = Vec::with_capacity(ids.len() * KEY_LEN);
        for &id in &ids {
            flat.extend_from_slice(keys.key(id));
        }
        let weights = sizes.map(|s| ids.iter().map(|&id| s[id as usize]).collect());
        Stream { ids, flat, weights }
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    /// Feeds requests `range` to `s`.
    #[inline]
    fn feed<S: Summary + ?Sized>(&self, s: &mut S, range: std::ops::Range<usize>) {
        let keys = self.flat[range.start * KEY_LEN..range.end * KEY_LEN].chunks_exact(KEY_LEN);
        match &self.weights {
            None => {
                for k in keys {
                    s.observe(k, 1);
                }
            }
            Some(w) => {
                for (k, &w) in keys.zip(&w[range]) {
                    s.observe(k, u64::from(w));
                }
            }
        }
    }
}

fn zipf_ids(zipf: &Zipf, n_keys: usize, len: usize, rng: &mut Rng) -> Vec<u32> {
    let perm = rng.permutation(n_keys);
    zipf_stream(zipf, &perm, len, rng)
}

// ---------------------------------------------------------------------------------------
// Contenders

#[derive(Clone, Copy, Debug, PartialEq)]
enum Contender {
    /// kvlb's lossy counting; reported with both rules from one run.
    Lossy,
    LossyWeighted,
    /// Tumbling (keep 0) or decaying epochs of `epoch` requests.
    LossyDecayed {
        keep: f64,
    },
    SpaceSaving,
    SpaceSavingWeighted,
    DataSketches,
    HeavyKeeper,
}

impl Contender {
    fn name(self) -> String {
        match self {
            Contender::Lossy => "lossy".into(),
            Contender::LossyWeighted => "lossy-weighted".into(),
            Contender::LossyDecayed { keep } => {
                if keep == 0.0 {
                    "lossy-decayed".into()
                } else {
                    format!("lossy-decayed(keep={keep})")
                }
            }
            Contender::SpaceSaving => "space-saving".into(),
            Contender::SpaceSavingWeighted => "space-saving-weighted".into(),
            Contender::DataSketches => "datasketches".into(),
            Contender::HeavyKeeper => "heavykeeper".into(),
        }
    }

    /// Rules to report with (kvlb's detectors: both; baselines: their own).
    fn rules(self) -> &'static [Option<ReportRule>] {
        match self {
            Contender::Lossy | Contender::LossyWeighted => {
                &[Some(ReportRule::Classic), Some(ReportRule::Tight)]
            }
            Contender::LossyDecayed { .. }
            | Contender::SpaceSaving
            | Contender::SpaceSavingWeighted => &[Some(ReportRule::Tight)],
            Contender::DataSketches | Contender::HeavyKeeper => &[None],
        }
    }

    /// Builds it for support `s`, error `e`, weighted streams if `weighted`.
    fn build(self, s: f64, e: f64, weighted: bool) -> anyhow::Result<Box<dyn Summary>> {
        let kvlb = |algo: Algo, keep: f64| -> anyhow::Result<DetectorSummary> {
            let mut p = DetectorParams::new(algo, s, e);
            p.keep = keep;
            Ok(DetectorSummary::new(
                build(&p)?,
                ReportRule::Tight,
                self.name(),
            ))
        };
        Ok(match self {
            Contender::Lossy => Box::new(kvlb(Algo::Lossy, 0.0)?),
            Contender::LossyWeighted => Box::new(kvlb(Algo::LossyWeighted, 0.0)?),
            Contender::LossyDecayed { keep } => Box::new(kvlb(Algo::LossyDecayed, keep)?),
            Contender::SpaceSaving => Box::new(kvlb(Algo::SpaceSaving, 0.0)?),
            Contender::SpaceSavingWeighted => {
                let p = DetectorParams::new(Algo::SpaceSaving, s, e);
                Box::new(DetectorSummary::new(
                    kvlb::hotkey::AnyDetector::SpaceSaving(SpaceSaving::new_weighted(&p)?),
                    ReportRule::Tight,
                    self.name(),
                ))
            }
            Contender::DataSketches => Box::new(DataSketchesFrequent::for_error(e, weighted)),
            Contender::HeavyKeeper => Box::new(HeavyKeeperTopK::new(
                s,
                ((4.0 / e).ceil() as usize).next_power_of_two(),
                4,
                weighted,
            )),
        })
    }
}

/// A contender's report: kvlb detectors under `rule`, baselines under their own rule.
fn report_of(s: &dyn Summary, rule: Option<ReportRule>, support: f64) -> Vec<HotItem> {
    match rule {
        Some(r) => s.report_rule(support, r),
        None => s.report(support),
    }
}

fn label_of(c: Contender, rule: Option<ReportRule>) -> String {
    match rule {
        Some(r) if c.rules().len() > 1 => format!("{}/{r}", c.name()),
        _ => c.name(),
    }
}

/// Feeds the whole stream; the decayed detector rotates every `epoch` requests.
fn feed_all(s: &mut dyn Summary, stream: &Stream, epoch: Option<usize>) {
    match epoch {
        None => stream.feed(s, 0..stream.len()),
        Some(e) => {
            let mut at = 0;
            while at < stream.len() {
                if at > 0 {
                    s.rotate();
                }
                let end = (at + e).min(stream.len());
                stream.feed(s, at..end);
                at = end;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Thresholds

fn thresholds(plan: &Plan, out: &Path) -> anyhow::Result<String> {
    let supports: [(f64, &str); 4] = [
        (0.2, "seed s=0.2"),
        (1.0 / 16.0, "n=4: s=1/16"),
        (1.0 / 40.0, "n=10: s=1/40"),
        (1.0 / 128.0, "n=32: s=1/128"),
    ];
    let mut csv = String::from("alpha,keys,top1,top2,top10_sum,hot_s0.2,hot_n4,hot_n10,hot_n32\n");
    let mut md = String::from(
        "## Thresholds that work\n\nShare of the hottest keys under Zipf(α), and how many keys \
         reach each support (exact, from the Zipf pmf). The seed's s = 0.2 finds nothing below \
         α = 1.5; cluster-derived supports s = 1/(4n) find the few keys that matter.\n\n\
         | α | keys | top-1 | top-2 | top-10 sum |",
    );
    for (_, l) in supports {
        let _ = write!(md, " hot @ {l} |");
    }
    md.push_str("\n|---|---|---|---|---|---|---|---|---|\n");
    for &alpha in &ALPHAS {
        for &n in &plan.key_counts {
            let z = Zipf::new(n as u64, alpha);
            let top10: f64 = (0..10).map(|r| z.pmf(r)).sum();
            let hot: Vec<usize> = supports
                .iter()
                .map(|(s, _)| zipf_hot_ranks(&z, *s))
                .collect();
            let _ = writeln!(
                csv,
                "{alpha},{n},{:.5},{:.5},{:.5},{},{},{},{}",
                z.pmf(0),
                z.pmf(1),
                top10,
                hot[0],
                hot[1],
                hot[2],
                hot[3]
            );
            let _ = writeln!(
                md,
                "| {alpha} | {n} | {:.2}% | {:.2}% | {:.1}% | {} | {} | {} | {} |",
                100.0 * z.pmf(0),
                100.0 * z.pmf(1),
                100.0 * top10,
                hot[0],
                hot[1],
                hot[2],
                hot[3]
            );
        }
    }
    write_file(out, "thresholds.csv", &csv)?;
    Ok(md)
}

fn write_file(out: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    let p = out.join(name);
    fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
    progress(&format!("wrote {}", p.display()));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Sweep

#[derive(Debug)]
struct Row {
    alpha: f64,
    len: usize,
    keys: usize,
    support: f64,
    cluster: String,
    label: String,
    acc: Accuracy,
    entries: usize,
    bytes: usize,
    timing: Timing,
}

fn sweep(plan: &Plan, out: &Path) -> anyhow::Result<String> {
    let contenders = [
        Contender::Lossy,
        Contender::LossyDecayed { keep: 0.0 },
        Contender::SpaceSaving,
        Contender::DataSketches,
        Contender::HeavyKeeper,
    ];
    // (alpha, len, keys, support, cluster label)
    let mut configs: Vec<(f64, usize, usize, f64, String)> = Vec::new();
    for &len in &plan.lengths {
        for &keys in &plan.key_counts {
            for &alpha in &ALPHAS {
                configs.push((alpha, len, keys, default_support(), "n=10".into()));
            }
        }
    }
    let (max_len, max_keys) = (
        *plan.lengths.iter().max().unwrap_or(&1_000_000),
        *plan.key_counts.iter().max().unwrap_or(&1_000_000),
    );
    for &(s, label) in &plan.extra_supports {
        for &alpha in &ALPHAS {
            configs.push((alpha, max_len, max_keys, s, label.into()));
        }
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut keyspace: Option<KeySpace> = None;
    for (ci, (alpha, len, n_keys, support, cluster)) in configs.iter().enumerate() {
        let (alpha, len, n_keys, support) = (*alpha, *len, *n_keys, *support);
        progress(&format!(
            "[sweep {}/{}] α={alpha} N={len} keys={n_keys} s={support:.4}: generating",
            ci + 1,
            configs.len()
        ));
        if keyspace.as_ref().is_none_or(|k| k.len() < n_keys) {
            keyspace = Some(KeySpace::new(max_keys));
        }
        let ks = keyspace.as_ref().context("key space")?;
        let zipf = Zipf::new(n_keys as u64, alpha);
        let mut rng = Rng::derive(plan.seed, &[alpha.to_bits(), len as u64, n_keys as u64]);
        let stream = Stream::new(ks, zipf_ids(&zipf, n_keys, len, &mut rng), None);
        let counts = exact_counts(ks.len(), &stream.ids, None);
        let epoch = len / 10;
        let last_epoch = exact_counts(ks.len(), &stream.ids[len - epoch..], None);
        for c in contenders {
            let mut s = c.build(support, support / 10.0, false)?;
            let decayed = matches!(c, Contender::LossyDecayed { .. });
            let timing = Timing::measure(|| {
                feed_all(s.as_mut(), &stream, decayed.then_some(epoch));
            });
            let (truth, total) = if decayed {
                (&last_epoch, epoch as u64)
            } else {
                (&counts, len as u64)
            };
            let mut line = format!("  {:<14}", c.name());
            for &rule in c.rules() {
                let items = report_of(s.as_ref(), rule, support);
                let acc = accuracy(ks, &items, truth, total, support);
                let _ = write!(
                    line,
                    " [{}] P={:.3} R={:.3} ARE={:.4}",
                    rule.map_or("-".into(), |r| r.to_string()),
                    acc.precision,
                    acc.recall,
                    acc.are
                );
                rows.push(Row {
                    alpha,
                    len,
                    keys: n_keys,
                    support,
                    cluster: cluster.clone(),
                    label: label_of(c, rule),
                    acc,
                    entries: s.peak_len(),
                    bytes: s.memory_bytes(),
                    timing,
                });
            }
            let (w, cpu) = timing.rates(len);
            let _ = write!(
                line,
                " entries={} bytes={} {:.1} M/s (cpu {})",
                s.peak_len(),
                s.memory_bytes(),
                w,
                opt(cpu)
            );
            progress(&line);
        }
    }
    let mut csv = String::from(
        "alpha,len,keys,support,cluster,algo,precision,recall,are,reported,true_hot,entries_peak,bytes,mups_wall,mups_cpu\n",
    );
    for r in &rows {
        let (w, c) = r.timing.rates(r.len);
        let _ = writeln!(
            csv,
            "{},{},{},{:.6},{},{},{:.4},{:.4},{:.6},{},{},{},{},{:.3},{}",
            r.alpha,
            r.len,
            r.keys,
            r.support,
            r.cluster,
            r.label,
            r.acc.precision,
            r.acc.recall,
            r.acc.are,
            r.acc.reported,
            r.acc.true_hot,
            r.entries,
            r.bytes,
            w,
            opt(c)
        );
    }
    write_file(out, "sweep.csv", &csv)?;

    // Markdown: the largest configuration at kvlb's default support, then the minimum
    // precision/recall per algorithm over the whole grid at α ≥ 0.99.
    let mut md = format!(
        "## Accuracy, memory and speed sweep\n\nAll of `sweep.csv` ({} rows): algorithms × \
         α ∈ {{0.8, 0.99, 1.2, 1.5}} × N ∈ {:?} × keys ∈ {:?} at s = {}, plus s = 1/16 and \
         1/128 (4 and 32 backends) at the largest N and key count. `lossy-decayed` uses \
         tumbling epochs of N/10 requests and is scored against its last epoch. Rates are \
         million updates per second (wall clock; CPU time in `sweep.csv`).\n\n\
         ### N = {max_len}, {max_keys} keys, s = {}\n\n\
         | algorithm | α | precision | recall | ARE | reported / hot | peak entries | bytes | M upd/s |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        rows.len(),
        plan.lengths,
        plan.key_counts,
        default_support(),
        default_support()
    );
    for r in rows
        .iter()
        .filter(|r| r.len == max_len && r.keys == max_keys && r.cluster == "n=10")
    {
        let _ = writeln!(
            md,
            "| {} | {} | {:.3} | {:.3} | {:.4} | {} / {} | {} | {} | {:.1} |",
            r.label,
            r.alpha,
            r.acc.precision,
            r.acc.recall,
            r.acc.are,
            r.acc.reported,
            r.acc.true_hot,
            r.entries,
            r.bytes,
            r.timing.rates(r.len).0
        );
    }
    md.push_str(
        "\n### Worst case over the grid (all N, key counts and supports)\n\n\
         | algorithm | min precision (α ≥ 0.99) | min recall (α ≥ 0.99) | min precision (α = 0.8) | min recall (all α) | max peak entries |\n\
         |---|---|---|---|---|---|\n",
    );
    let mut labels: Vec<&str> = rows.iter().map(|r| r.label.as_str()).collect();
    labels.dedup();
    labels.sort();
    labels.dedup();
    for l in labels {
        let of = |pred: &dyn Fn(&Row) -> bool, f: &dyn Fn(&Row) -> f64| {
            rows.iter()
                .filter(|r| r.label == l && pred(r))
                .map(f)
                .fold(f64::INFINITY, f64::min)
        };
        let _ = writeln!(
            md,
            "| {l} | {:.3} | {:.3} | {:.3} | {:.3} | {} |",
            of(&|r| r.alpha >= 0.99, &|r| r.acc.precision),
            of(&|r| r.alpha >= 0.99, &|r| r.acc.recall),
            of(&|r| r.alpha < 0.99, &|r| r.acc.precision),
            of(&|_| true, &|r| r.acc.recall),
            rows.iter()
                .filter(|r| r.label == l)
                .map(|r| r.entries)
                .max()
                .unwrap_or(0)
        );
    }
    Ok(md)
}

// ---------------------------------------------------------------------------------------
// Drift

fn set_accuracy(ks: &KeySpace, items: &[HotItem], truth: &[u32]) -> (f64, f64) {
    let hits = items
        .iter()
        .filter_map(|i| ks.id_of(&i.key))
        .filter(|id| truth.binary_search(id).is_ok())
        .count();
    let p = if items.is_empty() {
        1.0
    } else {
        hits as f64 / items.len() as f64
    };
    let r = if truth.is_empty() {
        1.0
    } else {
        hits as f64 / truth.len() as f64
    };
    (p, r)
}

fn drift(plan: &Plan, out: &Path) -> anyhow::Result<String> {
    let e = plan.drift_epoch;
    let total = e * plan.drift_epochs;
    let change = e * (plan.drift_epochs / 2) + e / 2;
    let step = e / 10;
    let n_keys = plan.keys;
    let support = default_support();
    let ks = KeySpace::new(n_keys);
    let contenders = [
        Contender::Lossy,
        Contender::LossyDecayed { keep: 0.0 },
        Contender::LossyDecayed { keep: 0.5 },
        Contender::SpaceSaving,
        Contender::DataSketches,
        Contender::HeavyKeeper,
    ];
    let mut csv = String::from("alpha,algo,t_epochs,precision,recall,reported,true_hot\n");
    let mut md = format!(
        "## Drift: the hot set changes mid-stream\n\n{} epochs of {e} requests over {n_keys} \
         keys; at epoch {:.1} the Zipf ranks move to a new random permutation of the keys (a \
         different hot set). Every {step} requests each detector's current hot set (kvlb: \
         `hot_items()`; baselines: their report at s) is compared with the exact hot set of \
         the last epoch's worth of requests (sliding window, s = {support}). `lossy-decayed` \
         rotates every {e} requests.\n\n\
         | α | algorithm | recall 1 epoch after the change | full recall reached (epochs after the change) | mean precision in the epoch after the change | mean precision from 2 epochs after |\n\
         |---|---|---|---|---|---|\n",
        plan.drift_epochs,
        change as f64 / e as f64,
    );
    for &alpha in &plan.drift_alphas {
        progress(&format!("[drift] α={alpha}: generating"));
        let zipf = Zipf::new(n_keys as u64, alpha);
        let mut rng = Rng::derive(plan.seed, &[alpha.to_bits(), 77]);
        let p1 = rng.permutation(n_keys);
        let p2 = rng.permutation(n_keys);
        let mut ids = zipf_stream(&zipf, &p1, change, &mut rng);
        ids.extend(zipf_stream(&zipf, &p2, total - change, &mut rng));
        let stream = Stream::new(&ks, ids, None);
        // Exact sliding-window hot sets at every checkpoint from one epoch on.
        let mut counts = vec![0u32; n_keys];
        let mut truths: Vec<(usize, Vec<u32>)> = Vec::new();
        let t_min = (support * e as f64).ceil() as u32;
        for (i, &id) in stream.ids.iter().enumerate() {
            counts[id as usize] += 1;
            if i >= e {
                counts[stream.ids[i - e] as usize] -= 1;
            }
            let t = i + 1;
            if t % step == 0 && t >= e {
                let hot: Vec<u32> = (0..n_keys as u32)
                    .filter(|&k| counts[k as usize] >= t_min)
                    .collect();
                truths.push((t, hot));
            }
        }
        for c in contenders {
            progress(&format!("[drift] α={alpha}: {}", c.name()));
            let mut s = c.build(support, support / 10.0, false)?;
            let decayed = matches!(c, Contender::LossyDecayed { .. });
            let mut at = 0;
            let mut series: Vec<(usize, f64, f64)> = Vec::new();
            for (t, truth) in &truths {
                // Feed up to t, rotating at epoch ends.
                while at < *t {
                    let next_epoch = (at / e + 1) * e;
                    let end = next_epoch.min(*t);
                    stream.feed(s.as_mut(), at..end);
                    at = end;
                    if decayed && at % e == 0 {
                        s.rotate();
                    }
                }
                let items = s.hot_now(support);
                let (p, r) = set_accuracy(&ks, &items, truth);
                let _ = writeln!(
                    csv,
                    "{alpha},{},{:.2},{p:.4},{r:.4},{},{}",
                    c.name(),
                    *t as f64 / e as f64,
                    items.len(),
                    truth.len()
                );
                series.push((*t, p, r));
            }
            // Full recall: first checkpoint after the change from which recall stays 1.
            let mut full: Option<usize> = None;
            for &(t, _, r) in series.iter().rev() {
                if t < change {
                    break;
                }
                if r < 1.0 {
                    break;
                }
                full = Some(t);
            }
            let r1 = series
                .iter()
                .find(|(t, _, _)| *t >= change + e)
                .map_or(f64::NAN, |x| x.2);
            let mean_p = |lo: usize, hi: usize| {
                let v: Vec<f64> = series
                    .iter()
                    .filter(|(t, _, _)| *t > lo && *t <= hi)
                    .map(|x| x.1)
                    .collect();
                v.iter().sum::<f64>() / v.len().max(1) as f64
            };
            let _ = writeln!(
                md,
                "| {alpha} | {} | {r1:.3} | {} | {:.3} | {:.3} |",
                c.name(),
                full.map_or("never".into(), |t| format!(
                    "{:.1}",
                    (t - change) as f64 / e as f64
                )),
                mean_p(change, change + e),
                mean_p(change + 2 * e, total)
            );
        }
    }
    write_file(out, "drift.csv", &csv)?;
    Ok(md)
}

// ---------------------------------------------------------------------------------------
// Weighted

fn weighted(plan: &Plan, out: &Path) -> anyhow::Result<String> {
    let n_keys = plan.keys;
    let len = plan.weighted_len;
    let support = default_support();
    let ks = KeySpace::new(n_keys);
    let mut rng = Rng::derive(plan.seed, &[99]);
    let sizes = etc_value_sizes(n_keys, &mut rng);
    let contenders = [
        Contender::LossyWeighted,
        Contender::SpaceSavingWeighted,
        Contender::DataSketches,
        Contender::HeavyKeeper,
        Contender::Lossy,
    ];
    let mut csv = String::from(
        "alpha,algo,precision,recall,are,reported,true_hot,entries_peak,bytes,mups_wall,mups_cpu\n",
    );
    let mut md = format!(
        "## Weighted streams (Facebook ETC value sizes)\n\nN = {len} requests over {n_keys} \
         keys; each key's weight is its value size, drawn once from ETC's generalized Pareto \
         (scale 214.476, shape 0.348238; Atikoglu et al., SIGMETRICS 2012). A key is hot when \
         it carries s = {support} of the bytes. `lossy` (unweighted) counts requests and is \
         scored against the byte-hot set, to show why byte weights matter.\n\n\
         | α | algorithm | precision | recall | ARE | reported / hot | peak entries | bytes | M upd/s |\n\
         |---|---|---|---|---|---|---|---|---|\n"
    );
    for &alpha in &plan.weighted_alphas {
        progress(&format!("[weighted] α={alpha}: generating"));
        let zipf = Zipf::new(n_keys as u64, alpha);
        let ids = zipf_ids(&zipf, n_keys, len, &mut rng);
        let stream = Stream::new(&ks, ids, Some(&sizes));
        let counts = exact_counts(n_keys, &stream.ids, Some(&sizes));
        let total: u64 = counts.iter().sum();
        for c in contenders {
            let mut s = c.build(support, support / 10.0, true)?;
            let timing = Timing::measure(|| stream.feed(s.as_mut(), 0..stream.len()));
            let (w, cpu) = timing.rates(len);
            let rules: &[Option<ReportRule>] = if c == Contender::Lossy {
                &[Some(ReportRule::Tight)]
            } else {
                c.rules()
            };
            for &rule in rules {
                let items = report_of(s.as_ref(), rule, support);
                // Unweighted lossy reports request shares; score its keys against bytes.
                let acc = accuracy(&ks, &items, &counts, total, support);
                let label = if c == Contender::Lossy {
                    "lossy (requests)".to_string()
                } else {
                    label_of(c, rule)
                };
                progress(&format!(
                    "  {label:<26} P={:.3} R={:.3} ARE={:.4} entries={} {:.1} M/s",
                    acc.precision,
                    acc.recall,
                    acc.are,
                    s.peak_len(),
                    w
                ));
                let _ = writeln!(
                    csv,
                    "{alpha},{label},{:.4},{:.4},{:.6},{},{},{},{},{w:.3},{}",
                    acc.precision,
                    acc.recall,
                    acc.are,
                    acc.reported,
                    acc.true_hot,
                    s.peak_len(),
                    s.memory_bytes(),
                    opt(cpu)
                );
                let _ = writeln!(
                    md,
                    "| {alpha} | {label} | {:.3} | {:.3} | {} | {} / {} | {} | {} | {w:.2} |",
                    acc.precision,
                    acc.recall,
                    if c == Contender::Lossy {
                        "–".to_string()
                    } else {
                        format!("{:.4}", acc.are)
                    },
                    acc.reported,
                    acc.true_hot,
                    s.peak_len(),
                    s.memory_bytes()
                );
            }
        }
    }
    write_file(out, "weighted.csv", &csv)?;
    Ok(md)
}

// ---------------------------------------------------------------------------------------
// Bench

fn time_detector<D: Detector + ?Sized>(d: &mut D, flat: &[u8]) -> Timing {
    Timing::measure(|| {
        for k in flat.chunks_exact(KEY_LEN) {
            std::hint::black_box(d.observe(k, 1));
        }
    })
}

fn time_summary<S: Summary>(s: &mut S, flat: &[u8]) -> Timing {
    Timing::measure(|| {
        for k in flat.chunks_exact(KEY_LEN) {
            s.observe(k, 1);
        }
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn bench(plan: &Plan, out: &Path) -> anyhow::Result<String> {
    let n_keys = plan.keys;
    let len = plan.bench_len;
    let support = default_support();
    let error = support / 10.0;
    progress(&format!(
        "[bench] Zipf 1.0, {n_keys} keys, {len} requests: generating"
    ));
    let ks = KeySpace::new(n_keys);
    let zipf = Zipf::new(n_keys as u64, 1.0);
    let mut rng = Rng::derive(plan.seed, &[1234]);
    let stream = Stream::new(&ks, zipf_ids(&zipf, n_keys, len, &mut rng), None);
    let flat = &stream.flat;
    let p = |algo| DetectorParams::new(algo, support, error);
    let names = [
        "lossy/enum",
        "lossy/dyn",
        "lossy-decayed/enum",
        "space-saving/enum",
        "datasketches/M=2048",
        "datasketches/M=1024",
        "heavykeeper/4x2048",
        "lossy/heat-query",
    ];
    // (round, name, timing, entries, bytes)
    let mut runs: Vec<(usize, &str, Timing, usize, usize)> = Vec::new();
    for round in 0..plan.bench_rounds {
        progress(&format!(
            "[bench] round {}/{}",
            round + 1,
            plan.bench_rounds
        ));
        let mut warmed = None;
        for name in names {
            let (t, entries, bytes) = match name {
                "lossy/enum" => {
                    let mut d = build(&p(Algo::Lossy))?;
                    let t = time_detector(&mut d, flat);
                    let r = (t, d.peak_len(), d.memory_bytes());
                    warmed = Some(d);
                    r
                }
                "lossy/dyn" => {
                    let mut d = build_boxed(&p(Algo::Lossy))?;
                    let t = time_detector(d.as_mut(), flat);
                    (t, d.peak_len(), d.memory_bytes())
                }
                "lossy-decayed/enum" => {
                    let mut d = build(&p(Algo::LossyDecayed))?;
                    let t = time_detector(&mut d, flat);
                    (t, d.peak_len(), d.memory_bytes())
                }
                "space-saving/enum" => {
                    let mut d = build(&p(Algo::SpaceSaving))?;
                    let t = time_detector(&mut d, flat);
                    (t, d.peak_len(), d.memory_bytes())
                }
                "datasketches/M=2048" | "datasketches/M=1024" => {
                    let m = if name.ends_with("2048") { 2048 } else { 1024 };
                    let mut d = DataSketchesFrequent::with_map_size(m, false);
                    let t = time_summary(&mut d, flat);
                    (t, d.peak_len(), d.memory_bytes())
                }
                "heavykeeper/4x2048" => {
                    let mut d = HeavyKeeperTopK::new(support, 2048, 4, false);
                    let t = time_summary(&mut d, flat);
                    (t, d.peak_len(), d.memory_bytes())
                }
                "lossy/heat-query" => {
                    let d = warmed.as_ref().context("lossy ran first")?;
                    let t = Timing::measure(|| {
                        let mut hot = 0u64;
                        for k in flat.chunks_exact(KEY_LEN) {
                            hot += d.heat(k) as u64;
                        }
                        std::hint::black_box(hot);
                    });
                    (t, d.peak_len(), d.memory_bytes())
                }
                _ => unreachable!("names are fixed"),
            };
            let (w, c) = t.rates(len);
            progress(&format!(
                "  {name:<22} {w:6.1} M/s wall, {} M/s cpu, {entries} entries, {bytes} bytes",
                opt(c)
            ));
            runs.push((round, name, t, entries, bytes));
        }
    }
    let mut csv = String::from("round,name,wall_s,cpu_s,mups_wall,mups_cpu,entries_peak,bytes\n");
    for (round, name, t, entries, bytes) in &runs {
        let (w, c) = t.rates(len);
        let _ = writeln!(
            csv,
            "{round},{name},{:.4},{},{w:.3},{},{entries},{bytes}",
            t.wall,
            opt(t.cpu),
            opt(c)
        );
    }
    write_file(out, "bench.csv", &csv)?;
    // Per-round ratio against datasketches M=2048 (CPU time when both have it).
    let rate = |round: usize, name: &str, cpu: bool| -> Option<f64> {
        runs.iter()
            .find(|r| r.0 == round && r.1 == name)
            .and_then(|r| {
                let (w, c) = r.2.rates(len);
                if cpu {
                    c
                } else {
                    Some(w)
                }
            })
    };
    let ratio = |name: &str, cpu: bool| -> Vec<f64> {
        (0..plan.bench_rounds)
            .filter_map(|r| Some(rate(r, name, cpu)? / rate(r, "datasketches/M=2048", cpu)?))
            .collect()
    };
    let mut md = format!(
        "## Update rate, same run\n\nZipf 1.0 over {n_keys} keys, {len} requests, keys laid \
         out consecutively as a datapath receives them; {} interleaved rounds; s = {support}, \
         ε = {error}. DataSketches M = 2048 has ε = 3.5/M = 0.0017 (its guarantee is at \
         least as tight as LC's ε); M = 1024 has ε = 0.0034. Ratios are the median of \
         per-round ratios to datasketches M = 2048.\n\n\
         | detector | median M upd/s (wall) | median M upd/s (CPU) | ratio (wall) | ratio (CPU) | min ratio (CPU) | peak entries | bytes |\n\
         |---|---|---|---|---|---|---|---|\n",
        plan.bench_rounds
    );
    for name in names {
        let wall: Vec<f64> = (0..plan.bench_rounds)
            .filter_map(|r| rate(r, name, false))
            .collect();
        let cpu: Vec<f64> = (0..plan.bench_rounds)
            .filter_map(|r| rate(r, name, true))
            .collect();
        let rc = ratio(name, true);
        let last = runs.iter().rev().find(|r| r.1 == name);
        let _ = writeln!(
            md,
            "| {name} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {} | {} |",
            median(wall),
            median(cpu),
            median(ratio(name, false)),
            median(rc.clone()),
            rc.iter().copied().fold(f64::INFINITY, f64::min),
            last.map_or(0, |r| r.3),
            last.map_or(0, |r| r.4)
        );
    }
    Ok(md)
}

// ---------------------------------------------------------------------------------------
// Sampled detection

/// One detector of the sampled section and what it scored, summed over the scored epochs.
struct SampledRun {
    /// Sampling rate R (0: exact).
    above: u64,
    d: kvlb::hotkey::Sampled<kvlb::hotkey::AnyDetector>,
    hits: usize,
    reported: usize,
    true_hot: usize,
    /// Reported keys with a true share of at least s − 2δ.
    near: usize,
    min_recall: f64,
    /// Σ over epochs of (true hot keys × the miss bound at that epoch's p).
    expected_misses: f64,
    bound: f64,
    p_sum: f64,
    sampled: u64,
    wall: f64,
}

/// `lossy-decayed` (kvlb's default) exact and sampled on held-out Zipf streams at a rate
/// where sampling applies: precision and recall of each epoch's hot set against the exact
/// counts of that epoch, and the miss bound of `hotkey::sample` they are checked against.
fn sampled(plan: &Plan, out: &Path) -> anyhow::Result<String> {
    use kvlb::clock::Instant as Virtual;
    use kvlb::hotkey::sample::{miss_bound, sample_margin};
    use kvlb::hotkey::{build_sampled, Heat};
    // kvlb's default for 8 backends: s = 1/(16·8), ε = s/10.
    let support = 1.0 / 128.0;
    let error = support / 10.0;
    let margin = sample_margin(support, error);
    let per_epoch = plan.sampled_epoch;
    let epoch_ns: u64 = 1_000_000_000;
    let ticks = 16usize;
    let ks = KeySpace::new(plan.sampled_keys);
    let mut rows = String::from(
        "alpha,rate,sample_above,p_mean,sampled_per_epoch,epochs,true_hot,reported,precision,precision_near,recall,min_recall,misses,expected_misses_bound,bound_per_key,mups_wall\n",
    );
    let mut md = format!(
        "## Sampled detection\n\n`lossy-decayed` (tumbling 1 s epochs), s = 1/128 (8 backends, \
         k = 16), ε = δ = s/10, {} keys, {} requests per epoch ({:.0e} requests/s), \
         {} epochs per stream; every epoch draws a fresh Zipf permutation from a seed the \
         other sections do not use (held-out streams whose hot keys move every epoch, so no \
         key is hot by hysteresis). Each epoch's hot set (after the rotation) is scored \
         against that epoch's exact counts at s; the first epoch, exact for every detector \
         (no rate measured yet), is not scored. `R` is `--detect-sample-above`; a sampled \
         detector counts about T = R·1 s requests per epoch and reports sampled shares ≥ s − δ. \
         Bound: P(a key with share ≥ s is missed in an epoch) ≤ exp(−Tδ²/(2(1−p)(s(1−s)+δ²) + 2δ/3)) \
         (`hotkey::sample`); `misses` is checked against Σ over scored epochs of (hot keys × \
         bound). Precision near: reported keys with a true share ≥ s − 2δ.\n\n\
         | α | R (req/s) | p | sampled / epoch | precision | precision near | recall | min recall | misses | bound: expected misses ≤ | bound per key-epoch | M req/s fed |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
        plan.sampled_keys, per_epoch, per_epoch as f64, plan.sampled_epochs,
    );
    for alpha in [0.99, 1.2] {
        let zipf = Zipf::new(plan.sampled_keys as u64, alpha);
        let mut rng = Rng::derive(plan.seed, &[0x5a4d_504c, alpha.to_bits()]);
        let mut runs: Vec<SampledRun> = std::iter::once(0)
            .chain(plan.sampled_rates.iter().copied())
            .map(|above| {
                let mut p = DetectorParams::new(Algo::LossyDecayed, support, error);
                p.epoch = std::time::Duration::from_nanos(epoch_ns);
                p.sample_above = above;
                Ok(SampledRun {
                    above,
                    d: build_sampled(&p)?,
                    hits: 0,
                    reported: 0,
                    true_hot: 0,
                    near: 0,
                    min_recall: 1.0,
                    expected_misses: 0.0,
                    bound: 0.0,
                    p_sum: 0.0,
                    sampled: 0,
                    wall: 0.0,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        for r in &mut runs {
            r.d.tick(Virtual::from_nanos(0));
        }
        for e in 0..plan.sampled_epochs {
            let stream = Stream::new(
                &ks,
                zipf_ids(&zipf, plan.sampled_keys, per_epoch, &mut rng),
                None,
            );
            let counts = exact_counts(ks.len(), &stream.ids, None);
            let t0 = e as u64 * epoch_ns;
            for r in &mut runs {
                let p = r.d.probability();
                let sampled_before = r.d.sampled();
                let timing = Timing::measure(|| {
                    for t in 0..ticks {
                        let (a, b) = (t * per_epoch / ticks, (t + 1) * per_epoch / ticks);
                        for k in stream.flat[a * KEY_LEN..b * KEY_LEN].chunks_exact(KEY_LEN) {
                            std::hint::black_box(r.d.observe(k, 1) == Heat::Hot);
                        }
                        let now = t0 + (t as u64 + 1) * epoch_ns / ticks as u64;
                        r.d.tick(Virtual::from_nanos(now));
                    }
                });
                if e == 0 {
                    continue;
                }
                r.wall += timing.wall;
                r.sampled += r.d.sampled() - sampled_before;
                r.p_sum += p;
                let items = r.d.hot_items();
                let acc = accuracy(&ks, &items, &counts, per_epoch as u64, support);
                let near_t = (support - 2.0 * margin) * per_epoch as f64;
                r.near += items
                    .iter()
                    .filter(|i| {
                        ks.id_of(&i.key)
                            .is_some_and(|id| counts[id as usize] as f64 >= near_t)
                    })
                    .count();
                let hits = (acc.recall * acc.true_hot as f64).round() as usize;
                r.hits += hits;
                r.reported += acc.reported;
                r.true_hot += acc.true_hot;
                r.min_recall = r.min_recall.min(acc.recall);
                let b = miss_bound(support, margin, p * per_epoch as f64, p);
                r.bound = r.bound.max(b);
                r.expected_misses += b * acc.true_hot as f64;
            }
        }
        let scored = plan.sampled_epochs.saturating_sub(1).max(1);
        for r in &runs {
            let precision = if r.reported == 0 {
                1.0
            } else {
                r.hits as f64 / r.reported as f64
            };
            let near = if r.reported == 0 {
                1.0
            } else {
                r.near as f64 / r.reported as f64
            };
            let recall = if r.true_hot == 0 {
                1.0
            } else {
                r.hits as f64 / r.true_hot as f64
            };
            let misses = r.true_hot - r.hits;
            let p_mean = r.p_sum / scored as f64;
            let mups = (scored * per_epoch) as f64 / r.wall.max(1e-9) / 1e6;
            let per = r.sampled as f64 / scored as f64;
            progress(&format!(
                "  α={alpha} R={} p={p_mean:.4} sampled/epoch={per:.0} P={precision:.3} (near {near:.3}) R={recall:.3} min {:.3} misses={misses} bound {:.3e}/key-epoch, ≤ {:.3} expected; {mups:.1} M req/s",
                r.above, r.min_recall, r.bound, r.expected_misses
            ));
            let _ = writeln!(
                rows,
                "{alpha},{},{},{p_mean:.5},{per:.0},{scored},{},{},{precision:.4},{near:.4},{recall:.4},{:.4},{misses},{:.6},{:.3e},{mups:.3}",
                per_epoch, r.above, r.true_hot, r.reported, r.min_recall, r.expected_misses, r.bound
            );
            let _ = writeln!(
                md,
                "| {alpha} | {} | {p_mean:.4} | {per:.0} | {precision:.3} | {near:.3} | {recall:.3} | {:.3} | {misses} of {} | {:.3} | {:.2e} | {mups:.1} |",
                if r.above == 0 { "exact".to_string() } else { r.above.to_string() },
                r.min_recall,
                r.true_hot,
                r.expected_misses,
                r.bound
            );
        }
    }
    write_file(out, "sampled.csv", &rows)?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_sections_run_end_to_end() {
        // The thresholds section alone is fast; every section runs at tiny sizes in
        // every_section_runs_at_tiny_sizes.
        let dir = tempfile::tempdir().unwrap();
        run(vec![
            "--out".into(),
            dir.path().as_os_str().to_owned(),
            "--quick".into(),
            "--only".into(),
            "thresholds".into(),
        ])
        .unwrap();
        let csv = fs::read_to_string(dir.path().join("thresholds.csv")).unwrap();
        assert!(csv.lines().count() == 1 + 4 * 2, "{csv}");
        let md = fs::read_to_string(dir.path().join("summary.md")).unwrap();
        assert!(md.contains("Thresholds that work"));
        assert!(run(vec![
            "--out".into(),
            "x".into(),
            "--only".into(),
            "nope".into()
        ])
        .is_err());
    }

    #[test]
    fn every_section_runs_at_tiny_sizes() {
        let dir = tempfile::tempdir().unwrap();
        run(vec![
            "--out".into(),
            dir.path().as_os_str().to_owned(),
            "--tiny".into(),
        ])
        .unwrap();
        for (file, min_rows) in [
            ("thresholds.csv", 2),
            ("sweep.csv", 5),
            ("drift.csv", 6),
            ("weighted.csv", 5),
            ("bench.csv", 8),
            ("sampled.csv", 3),
        ] {
            let csv = fs::read_to_string(dir.path().join(file)).unwrap();
            assert!(csv.lines().count() > min_rows, "{file}:\n{csv}");
        }
        let md = fs::read_to_string(dir.path().join("summary.md")).unwrap();
        for section in [
            "Thresholds",
            "sweep",
            "Drift",
            "Weighted",
            "Update rate",
            "Sampled detection",
        ] {
            assert!(md.contains(section), "{section} missing");
        }
    }

    #[test]
    fn medians_and_timing() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
        let t = Timing::measure(|| {
            std::hint::black_box((0..1000).sum::<u64>());
        });
        assert!(t.wall >= 0.0);
        assert!(t.rates(1000).0 > 0.0);
    }
}
