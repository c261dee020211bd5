//! The `kvlb` command: dispatches to the subcommands in `kvlb::cli`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let Some(first) = args.first().and_then(|a| a.to_str()).map(str::to_owned) else {
        eprint!("{}", kvlb::cli::usage());
        return ExitCode::from(2);
    };
    if matches!(first.as_str(), "-h" | "--help" | "help") {
        print!("{}", kvlb::cli::usage());
        return ExitCode::SUCCESS;
    }
    if first == "--version" {
        println!("kvlb {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let Some(cmd) = kvlb::cli::COMMANDS.iter().find(|c| c.name == first) else {
        eprintln!("kvlb: unknown command '{first}'\n");
        eprint!("{}", kvlb::cli::usage());
        return ExitCode::from(2);
    };
    args.remove(0);
    match (cmd.run)(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvlb {}: {e:#}", cmd.name);
            ExitCode::FAILURE
        }
    }
}
