//! `kvlb-lc-experiments`, which `kvlb lc-experiments` runs: parses nothing itself, runs
//! [`kvlb_lc_experiments::run`] and reports its error.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    match kvlb_lc_experiments::run(std::env::args_os().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvlb lc-experiments: {e:#}");
            ExitCode::FAILURE
        }
    }
}
