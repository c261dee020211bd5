//! `kvbench`: memcached load generator and consistency checker. Parses the command line,
//! runs [`kvbench`], prints the live lines, the summary and the files asked for.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;

use anyhow::Context as _;
use kvbench::config::{Command, StatsOf, HELP};
use kvbench::report::{write_hgrm, IntervalReport, ServerInterval};
use kvbench::{engine, Settings};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let command = match kvbench::parse_args(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kvbench: {e}\n(kvbench --help for usage)");
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Help => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("kvbench {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::StatsOf(s) => stats_of(&s).map(|()| ExitCode::SUCCESS),
        Command::Run(s) => run(&s),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kvbench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn stats_of(s: &StatsOf) -> anyhow::Result<()> {
    let readings = engine::read_stats(
        &s.servers,
        s.transport,
        s.timeout.max(std::time::Duration::from_secs(2)),
    )?;
    let out = std::io::stdout();
    let mut out = out.lock();
    for (server, stats) in s.servers.iter().zip(&readings) {
        if s.json {
            let v = serde_json::json!({ "server": server.to_string(), "stats": stats.fields });
            writeln!(out, "{v}")?;
        } else {
            writeln!(out, "# {server}")?;
            for (k, v) in &stats.fields {
                writeln!(out, "{k} {v}")?;
            }
        }
    }
    Ok(())
}

fn run(s: &Settings) -> anyhow::Result<ExitCode> {
    let mut csv = match &s.csv {
        Some(path) => {
            let mut f = BufWriter::new(
                File::create(path).with_context(|| format!("creating {}", path.display()))?,
            );
            writeln!(f, "{}", IntervalReport::CSV_HEADER)?;
            Some(f)
        }
        None => None,
    };
    let mut csv_error = None;
    let quiet = s.quiet;
    let mut on_interval = |r: &IntervalReport| {
        if !quiet {
            eprintln!("{}", r.line());
        }
        if let Some(f) = &mut csv {
            if let Err(e) = writeln!(f, "{}", r.csv_row()) {
                csv_error.get_or_insert(e);
            }
        }
    };
    let summary = engine::run(s, &mut on_interval)?;
    if let Some(mut f) = csv {
        f.flush().context("writing the CSV time series")?;
    }
    if let Some(e) = csv_error {
        return Err(e).context("writing the CSV time series");
    }
    if let Some(path) = &s.hdr {
        let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = BufWriter::new(f);
        write_hgrm(&summary.histogram, &mut w)
            .and_then(|()| w.flush())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &s.stats_csv {
        let write = || -> std::io::Result<()> {
            let mut w = BufWriter::new(File::create(path)?);
            writeln!(w, "{}", ServerInterval::CSV_HEADER)?;
            for r in &summary.server_series {
                writeln!(w, "{}", r.csv_row())?;
            }
            w.flush()
        };
        write().with_context(|| format!("writing {}", path.display()))?;
    }
    if s.json {
        println!("{}", summary.to_json());
    } else {
        print!("{}", summary.human());
    }
    if let Some(sc) = &summary.schedule {
        if !sc.kept_up {
            eprintln!(
                "kvbench: WARNING: kvbench could not keep the open-loop schedule ({} of {} sends more than 1 ms late, max lag {:.1} ms); latencies include kvbench's own delay",
                sc.late_sends,
                sc.sent,
                sc.max_lag_us / 1000.0
            );
        }
    }
    if summary.invalid_values() {
        eprintln!(
            "kvbench: {} stale and {} corrupt values read",
            summary.validation.stale, summary.validation.corrupt
        );
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}
