//! The `kvlb` command: wires the library's datapaths to the command line.

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    eprintln!("{}", kvlb::config::Config::help_text());
}
