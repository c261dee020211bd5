//! `kvlb hotkeys`: runs a hot-key detector over a key stream (one request per line) and
//! prints what it reports as JSON.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use serde::Serialize;

use crate::hotkey::{build, Algo, Detector, DetectorParams, ReportRule};

const HELP: &str = "\
kvlb hotkeys: run a hot-key detector over a key stream and print the keys it reports

usage: kvlb hotkeys --algo NAME --support S --error E [options] [--input FILE|-]

Input: one request per line, `KEY` or `KEY WEIGHT` (whitespace-separated; the weight, a
non-negative integer such as the value size in bytes, is required by lossy-weighted and
ignored by the others). Empty lines are skipped.

Output (stdout), with every estimate ≤ the key's true count (or weight) and every
estimate + max_error ≥ it:
  {\"algo\": ..., \"n\": N, \"total_weight\": W, \"entries_max\": M,
   \"items\": [{\"key\": \"...\", \"estimate\": f, \"max_error\": e}, ...]}

options:
  --algo NAME          lossy | lossy-weighted | lossy-decayed | space-saving
  --support S          report keys with at least this share of the stream (0 < S < 1)
  --error E            error bound ε, 0 < E < S [default: S/10]
  --rule RULE          tight (f + Δ ≥ sN) | classic (f ≥ (s − ε)N) [default: tight]
  --input FILE         read from FILE; `-` is stdin [default: -]
  --epoch-lines N      lossy-decayed: end an epoch every N lines (then the report and
                       its bounds refer to the decayed window) [default: never]
  --keep F             lossy-decayed: share of each count kept at an epoch end [default: 0]
  --max-entries N      lossy-decayed: memory budget in entries (ε adapts) [default: none]
  --seed N             hash seed [default: fixed]
";

/// Entry point of `kvlb hotkeys`.
pub fn run(args: Vec<OsString>) -> anyhow::Result<()> {
    let Some(opts) = Options::parse(args)? else {
        print!("{HELP}");
        return Ok(());
    };
    let input: Box<dyn BufRead> = match &opts.input {
        None => Box::new(BufReader::new(io::stdin().lock())),
        Some(p) => Box::new(BufReader::new(
            File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
        )),
    };
    let out = run_detector(&opts, input)?;
    let stdout = io::stdout();
    let mut w = stdout.lock();
    serde_json::to_writer(&mut w, &out)?;
    writeln!(w)?;
    Ok(())
}

#[derive(Debug)]
struct Options {
    params: DetectorParams,
    input: Option<PathBuf>,
    epoch_lines: Option<u64>,
}

impl Options {
    /// `None` for `--help`.
    fn parse(args: Vec<OsString>) -> anyhow::Result<Option<Options>> {
        use lexopt::prelude::*;
        let mut algo: Option<Algo> = None;
        let mut support: Option<f64> = None;
        let mut error: Option<f64> = None;
        let mut rule = ReportRule::Tight;
        let mut input = None;
        let mut epoch_lines = None;
        let mut keep = 0.0;
        let mut max_entries = None;
        let mut seed = None;
        let mut p = lexopt::Parser::from_args(args);
        while let Some(arg) = p.next()? {
            match arg {
                Long("help") | Short('h') => return Ok(None),
                Long("algo") => algo = Some(p.value()?.string()?.parse()?),
                Long("support") => support = Some(p.value()?.parse()?),
                Long("error") => error = Some(p.value()?.parse()?),
                Long("rule") => rule = p.value()?.string()?.parse()?,
                Long("input") => {
                    let v = p.value()?;
                    input = (v != "-").then(|| PathBuf::from(v));
                }
                Long("epoch-lines") => {
                    let n: u64 = p.value()?.parse()?;
                    if n == 0 {
                        bail!("--epoch-lines must be at least 1");
                    }
                    epoch_lines = Some(n);
                }
                Long("keep") => keep = p.value()?.parse()?,
                Long("max-entries") => max_entries = Some(p.value()?.parse()?),
                Long("seed") => seed = Some(p.value()?.parse()?),
                _ => return Err(arg.unexpected().into()),
            }
        }
        let algo = algo.context("--algo is required (see --help)")?;
        let support = support.context("--support is required (see --help)")?;
        let mut params = DetectorParams::new(algo, support, error.unwrap_or(support / 10.0));
        params.rule = rule;
        params.keep = keep;
        params.max_entries = max_entries;
        // A stream read from a file is not a live window: report from the first line on.
        params.min_requests = Some(1);
        if let Some(s) = seed {
            params.seed = s;
        }
        params.validate()?;
        if epoch_lines.is_some() && algo != Algo::LossyDecayed {
            bail!("--epoch-lines only applies to lossy-decayed");
        }
        Ok(Some(Options {
            params,
            input,
            epoch_lines,
        }))
    }
}

/// The JSON document `kvlb hotkeys` prints.
#[derive(Debug, Serialize)]
struct Output {
    algo: &'static str,
    rule: String,
    support: f64,
    error: f64,
    /// Requests read.
    n: u64,
    /// Their total weight (n for unweighted detectors).
    total_weight: u64,
    /// Requests and weight in the window the items refer to (differ from n and
    /// total_weight only for lossy-decayed with --epoch-lines).
    window_n: u64,
    window_weight: u64,
    /// Most keys the detector tracked at once.
    entries_max: usize,
    items: Vec<Item>,
}

#[derive(Debug, Serialize)]
struct Item {
    key: String,
    estimate: u64,
    max_error: u64,
}

fn run_detector(opts: &Options, mut input: impl BufRead) -> anyhow::Result<Output> {
    let p = &opts.params;
    let mut d = build(p)?;
    let weighted = p.algo.weighted();
    let mut line = Vec::new();
    let mut lineno = 0u64;
    let mut since_epoch = 0u64;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        lineno += 1;
        let mut fields = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|f| !f.is_empty());
        let Some(key) = fields.next() else {
            continue;
        };
        let weight = match fields.next() {
            Some(w) if weighted => std::str::from_utf8(w)
                .ok()
                .and_then(|w| w.parse::<u64>().ok())
                .with_context(|| {
                    format!(
                        "line {lineno}: weight '{}' is not a non-negative integer",
                        String::from_utf8_lossy(w)
                    )
                })?,
            None if weighted => {
                bail!("line {lineno}: missing weight (lossy-weighted reads `KEY WEIGHT`)")
            }
            _ => 1,
        };
        if let Some(every) = opts.epoch_lines {
            if since_epoch == every {
                d.rotate();
                since_epoch = 0;
            }
            since_epoch += 1;
        }
        d.observe(key, weight);
    }
    let totals = d.totals();
    let window = d.window();
    Ok(Output {
        algo: p.algo.name(),
        rule: p.rule.to_string(),
        support: p.support,
        error: d.error(),
        n: totals.requests,
        total_weight: totals.weight,
        window_n: window.requests,
        window_weight: window.weight,
        entries_max: d.peak_len(),
        items: d
            .report(p.support, p.rule)
            .into_iter()
            .map(|i| Item {
                key: String::from_utf8_lossy(&i.key).into_owned(),
                estimate: i.estimate,
                max_error: i.max_error,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[&str]) -> anyhow::Result<Options> {
        Options::parse(args.iter().map(OsString::from).collect()).map(|o| o.expect("not --help"))
    }

    #[test]
    fn parses_and_validates() {
        let o = opts(&["--algo", "lossy", "--support", "0.1"]).unwrap();
        assert_eq!(o.params.error, 0.01);
        assert!(o.input.is_none());
        assert!(opts(&["--algo", "nope", "--support", "0.1"]).is_err());
        assert!(opts(&["--support", "0.1"]).is_err());
        assert!(opts(&["--algo", "lossy", "--support", "0.1", "--error", "0.2"]).is_err());
        assert!(opts(&["--algo", "lossy", "--support", "0.1", "--epoch-lines", "5"]).is_err());
        assert!(opts(&["--algo", "lossy", "--support", "0.1", "--rule", "x"]).is_err());
        assert!(Options::parse(vec!["--help".into()]).unwrap().is_none());
    }

    #[test]
    fn reports_with_bounds() {
        let o = opts(&["--algo", "lossy-weighted", "--support", "0.3"]).unwrap();
        let input = "a 10\nb 1\n\na 5\nc 1\n";
        let out = run_detector(&o, input.as_bytes()).unwrap();
        assert_eq!(out.n, 4);
        assert_eq!(out.total_weight, 17);
        assert_eq!(out.items.len(), 1);
        assert_eq!(out.items[0].key, "a");
        assert!(
            out.items[0].estimate <= 15 && 15 <= out.items[0].estimate + out.items[0].max_error
        );
        let err = run_detector(&o, "a x\n".as_bytes()).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(run_detector(&o, "a\n".as_bytes()).is_err());
    }
}
