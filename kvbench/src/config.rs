//! kvbench's command line: raw arguments (lexopt) in, validated [`Settings`] out.
//!
//! Owns: the option table, defaults, and every rule that ties options together (what UDP
//! allows, what meta commands allow, mutually exclusive options). Must not: open sockets
//! or resolve names (that happens when a run starts).

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::dist::{KeyDist, SizeDist, ETC_KEY, ETC_VALUE};
use super::rate::Arrival;
use super::value;

/// The text of `kvbench --help`.
pub const HELP: &str = "\
kvbench: load generator and consistency checker for memcached (and for kvlb in front of it)

usage: kvbench --server HOST:PORT [--server ...] [options]
       kvbench --stats-of HOST:PORT [--stats-of ...] [--proto udp|tcp] [--json]

Drives memcached's ASCII protocol over UDP (8-byte frame header, replies matched by request
id, multi-datagram replies reassembled by sequence number, multi-gets read to END across
memcached 1.6's one-message-per-key replies, losses counted as timeouts) or TCP
(pipelined), with classic get/set or meta (mg/ms) commands. Every value kvbench writes
encodes its key, version and a checksum, and every value read back is checked: stale
values (older than the last acknowledged SET when the GET was sent) and corrupt ones are
counted and make kvbench exit with status 3.

targets:
  --server HOST:PORT     memcached server or kvlb VIP (repeatable; port defaults to 11211).
                         With several, keys are spread by libmemcached-compatible weighted
                         ketama (host written as given), and a multi-get is split per server
  --proto udp|tcp        transport (default udp)
  --meta                 meta commands: `mg <key> v k` / `ms <key> <len>` (multi-get over
                         TCP as quiet mg's closed by mn; UDP allows single-key gets only)

load shape:
  --threads T            worker threads, each with its own sockets (default 1)
  --connections C        connections per thread (default 4): request streams, each with
                         its own outstanding requests. TCP: one stream per server each.
                         UDP: see --udp-sockets
  --udp-sockets thread|connection
                         UDP: one socket per server per thread, shared by the thread's
                         connections, so their requests and replies batch into single
                         sendmmsg/recvmmsg calls (default: thread); or one socket (source
                         port) per server per connection
  --spin-us N            UDP: before sleeping for a reply, poll the sockets for up to N
                         microseconds (default 20; 0: sleep at once). A reply usually comes
                         within that on one host, and catching it awake skips the sleep
                         and wake-up, which cost more CPU than the polling
  --depth N              closed loop: requests outstanding per connection (TCP: pipeline
                         depth) (default 1)
  --rate OPS             open loop: total target requests/s over all connections; latency
                         is measured from each request's intended send time, so queueing
                         is never hidden (no coordinated omission)
  --arrival constant|poisson
                         open-loop spacing (default poisson)
  --max-outstanding N    open loop: cap on requests outstanding per connection; a request
                         that finds the cap reached waits, and its wait counts in its
                         latency (default 1024, at most 16384)
  --duration S           measured run time in seconds (default 10 unless --requests)
  --requests N           stop after N requests in total instead
  --warmup S             run S whole seconds before measuring (shown live, left out of the
                         summary) (default 0)
  --timeout MS           a request unanswered for this long is a timeout; UDP requests are
                         then given up, TCP connections reset (default 1000)

workload:
  --keys K               key space size (default 100000)
  --dist D               key popularity: uniform | zipf[:ALPHA] (default 0.99) |
                         gauss[:SD] (SD as a fraction of the key space, default 0.1) | seq
                         (each connection walks the keys in order) (default uniform)
  --shift-at S           hot-set shift: at S seconds into the measured run the rank → key
                         mapping moves by --shift-by, so the most popular keys become other
                         keys (repeatable: one more shift each time)
  --shift-by N           keys to move the hot set by (default K/2)
  --get-ratio R          fraction of operations that are gets, 0..1 (default 0.9)
  --multiget M           keys per get (default 1)
  --key-size SPEC        key lengths: N | uniform:LO,HI | gev:MU,SIGMA,XI | etc
                         (Facebook ETC: gev:30.7984,8.20449,0.078688) (default 16); a key is
                         never shorter than its prefix and number, never over 250 bytes
  --value-size SPEC      value lengths: N | uniform:LO,HI | pareto:MU,SIGMA,XI | etc
                         (Facebook ETC: pareto:0,214.476,0.348238) (default 32); never under
                         32 bytes (the validation header)
  --key-prefix P         key names are P followed by the zero-padded key number (default kvb:)
  --max-value BYTES      cap on value sizes (default 512000; memcached's item limit is 1 MiB)
  --max-udp-value BYTES  cap on value sizes over UDP (default 1200). memcached drops a UDP
                         request that spans several datagrams, and a SET that needs IP
                         fragments is dropped by kvlb; the default keeps a SET in one
                         1500-byte frame. Larger values need --proto tcp. Capped values are
                         counted (values_capped)
  --load                 before the run, SET every key once (sequentially, closed loop with
                         --depth or 8) so gets hit; reported separately
  --seed S               workload seed (default 1): the same seed gives the same request
                         stream per connection
  --no-validate          write and read values without checking them (and allow several
                         SETs of a key in flight)
  --run-id HEX           the 32-bit writer id stamped in values (default: random); values
                         of other runs read before this run acknowledged a SET of the key
                         are counted as foreign, afterwards as stale

output:
  (live)                 one line per second on stderr: rate, errors, timeouts, p50, p99
  --quiet                no live lines
  --json                 final summary as JSON on stdout (ops_per_sec, errors, timeouts,
                         latency_us {p50, p90, p99, p999, max, mean}, gets, sets, hits,
                         misses, hit_ratio, per_server, validation, schedule, ...)
  --csv FILE             per-second time series (CSV)
  --hdr FILE             latency histogram in HdrHistogram's percentile-distribution
                         (.hgrm) text format, microseconds
  --server-stats         read each --server's own `stats` before and after the run and
                         report the differences (cmd_get, get_hits, get_misses, cmd_set...)
  --stats-server HOST:PORT
                         servers whose `stats` to difference instead (repeatable; e.g. the
                         memcached servers behind a kvlb VIP)
  --stats-csv FILE       also read those servers' stats once a second and write what each
                         counted per second (second,server,cmd_get,get_hits,get_misses,
                         cmd_set): the servers' own view of the load over time

server stats:
  --stats-of HOST:PORT   print a server's `stats` counters and exit (repeatable; with
                         --json one object per server: {\"server\", \"stats\": {...}})
  --stats-proto udp|tcp  transport for `stats` requests (default: --proto if given with
                         --stats-of, else tcp)

  -h, --help             this text
  -V, --version          version

exit status: 0 success, 1 runtime error, 2 usage error, 3 stale or corrupt values seen
";

/// An option that does not make sense.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error(transparent)]
    Lexopt(#[from] lexopt::Error),
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ArgsError {
    ArgsError::Invalid(msg.into())
}

/// The transport memcached is spoken over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
}

impl FromStr for Transport {
    type Err = ArgsError;
    fn from_str(s: &str) -> Result<Transport, ArgsError> {
        match s {
            "udp" => Ok(Transport::Udp),
            "tcp" => Ok(Transport::Tcp),
            _ => Err(invalid(format!("bad protocol '{s}': expected udp or tcp"))),
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        })
    }
}

/// A server as written on the command line (`host:port`; the host string matters for
/// ketama placement).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSpec {
    pub host: String,
    pub port: u16,
}

impl ServerSpec {
    pub fn parse(s: &str) -> Result<ServerSpec, ArgsError> {
        let (host, port) = match s.rsplit_once(':') {
            // A bare IPv6 address has colons but no brackets: no port then.
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| invalid(format!("bad port in server '{s}'")))?;
                (h, port)
            }
            _ => (s, 11211),
        };
        if host.is_empty() {
            return Err(invalid(format!("bad server '{s}': no host")));
        }
        Ok(ServerSpec {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for ServerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Closed or open loop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LoopMode {
    /// `depth` requests outstanding per connection at all times.
    Closed { depth: u32 },
    /// `rate` requests/s in total, spaced by `arrival`, at most `max_outstanding` per
    /// connection.
    Open {
        rate: f64,
        arrival: Arrival,
        max_outstanding: u32,
    },
}

/// A validated benchmark run.
#[derive(Clone, Debug)]
pub struct Settings {
    pub servers: Vec<ServerSpec>,
    pub transport: Transport,
    pub meta: bool,
    pub threads: u32,
    pub connections: u32,
    pub mode: LoopMode,
    pub duration: Option<Duration>,
    pub requests: Option<u64>,
    pub warmup_secs: u32,
    pub timeout: Duration,
    pub keys: u32,
    pub dist: KeyDist,
    pub shift_at: Vec<Duration>,
    pub shift_by: u64,
    pub get_ratio: f64,
    pub multiget: u16,
    pub key_size: SizeDist,
    pub value_size: SizeDist,
    pub key_prefix: String,
    pub max_value: u32,
    pub max_udp_value: u32,
    pub load: bool,
    pub load_depth: u32,
    pub seed: u64,
    pub run_id: Option<u32>,
    pub validate: bool,
    pub quiet: bool,
    pub json: bool,
    pub csv: Option<PathBuf>,
    pub hdr: Option<PathBuf>,
    pub stats_servers: Vec<ServerSpec>,
    pub stats_transport: Transport,
    /// Per-second differences of the stats servers' counters, as CSV.
    pub stats_csv: Option<PathBuf>,
    /// UDP: one socket per server per thread (shared by its connections) instead of one
    /// per connection.
    pub udp_per_thread: bool,
    /// UDP: how long to poll for replies before sleeping (`--spin-us`).
    pub spin: Duration,
}

impl Settings {
    /// Settings with every default and one server (for tests and library users).
    pub fn with_server(server: ServerSpec) -> Settings {
        Settings {
            servers: vec![server],
            transport: Transport::Udp,
            meta: false,
            threads: 1,
            connections: 4,
            mode: LoopMode::Closed { depth: 1 },
            duration: Some(Duration::from_secs(10)),
            requests: None,
            warmup_secs: 0,
            timeout: Duration::from_millis(1000),
            keys: 100_000,
            dist: KeyDist::Uniform,
            shift_at: Vec::new(),
            shift_by: 50_000,
            get_ratio: 0.9,
            multiget: 1,
            key_size: SizeDist::Fixed(16),
            value_size: SizeDist::Fixed(32),
            key_prefix: "kvb:".to_owned(),
            max_value: 512_000,
            max_udp_value: 1200,
            load: false,
            load_depth: 8,
            seed: 1,
            run_id: None,
            validate: true,
            quiet: false,
            json: false,
            csv: None,
            hdr: None,
            stats_servers: Vec::new(),
            stats_transport: Transport::Tcp,
            stats_csv: None,
            udp_per_thread: true,
            spin: Duration::from_micros(20),
        }
    }

    /// The largest value a SET may carry on this transport.
    pub fn value_cap(&self) -> u32 {
        match self.transport {
            Transport::Udp => self.max_udp_value.min(self.max_value),
            Transport::Tcp => self.max_value,
        }
    }

    /// Connections over all threads.
    pub fn total_connections(&self) -> u32 {
        self.threads * self.connections
    }

    /// Checks the rules that tie options together.
    pub fn check(&self) -> Result<(), ArgsError> {
        if self.servers.is_empty() {
            return Err(invalid("no --server given"));
        }
        if self.threads == 0 || self.connections == 0 {
            return Err(invalid("--threads and --connections must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.get_ratio) {
            return Err(invalid("--get-ratio must be between 0 and 1"));
        }
        if self.multiget == 0 {
            return Err(invalid("--multiget must be at least 1"));
        }
        if self.meta && self.transport == Transport::Udp && self.multiget > 1 {
            return Err(invalid(
                "--meta over UDP allows single-key gets only (one request per datagram); use --proto tcp for meta multi-gets",
            ));
        }
        if self.keys == 0 {
            return Err(invalid("--keys must be at least 1"));
        }
        if (self.max_value as usize) < value::HEADER_LEN
            || (self.max_udp_value as usize) < value::HEADER_LEN
        {
            return Err(invalid(format!(
                "--max-value and --max-udp-value must be at least {} (the value header)",
                value::HEADER_LEN
            )));
        }
        if self.duration.is_none() && self.requests.is_none() {
            return Err(invalid("give --duration or --requests"));
        }
        match self.mode {
            LoopMode::Closed { depth: 0 } => return Err(invalid("--depth must be at least 1")),
            LoopMode::Open {
                rate,
                max_outstanding,
                ..
            } => {
                if !(rate > 0.0 && rate.is_finite()) {
                    return Err(invalid("--rate must be a positive number"));
                }
                if max_outstanding == 0 || max_outstanding > 16_384 {
                    return Err(invalid("--max-outstanding must be in 1..=16384"));
                }
            }
            _ => {}
        }
        if self.timeout.is_zero() {
            return Err(invalid("--timeout must be positive"));
        }
        Ok(())
    }
}

/// `kvbench --stats-of`: read servers' stats and print them.
#[derive(Clone, Debug)]
pub struct StatsOf {
    pub servers: Vec<ServerSpec>,
    pub transport: Transport,
    pub json: bool,
    pub timeout: Duration,
}

/// What the command line asks for.
#[derive(Clone, Debug)]
pub enum Command {
    Help,
    Version,
    Run(Box<Settings>),
    StatsOf(StatsOf),
}

fn value<T: FromStr>(p: &mut lexopt::Parser, name: &str) -> Result<T, ArgsError>
where
    T::Err: fmt::Display,
{
    let raw = p.value()?;
    let s = raw
        .to_str()
        .ok_or_else(|| invalid(format!("{name}: not valid UTF-8")))?;
    s.parse::<T>()
        .map_err(|e| invalid(format!("{name} '{s}': {e}")))
}

fn seconds(p: &mut lexopt::Parser, name: &str) -> Result<Duration, ArgsError> {
    let s: f64 = value(p, name)?;
    if !(s >= 0.0 && s.is_finite() && s < 1e9) {
        return Err(invalid(format!("{name} must be a number of seconds")));
    }
    Ok(Duration::from_secs_f64(s))
}

/// Parses kvbench's arguments (without the program name).
pub fn parse_args<I>(args: I) -> Result<Command, ArgsError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut s = Settings::with_server(ServerSpec {
        host: String::new(),
        port: 0,
    });
    s.servers.clear();
    let mut depth: Option<u32> = None;
    let mut rate: Option<f64> = None;
    let mut arrival = Arrival::Poisson;
    let mut max_outstanding = 1024u32;
    let mut duration: Option<Duration> = None;
    let mut shift_by: Option<u64> = None;
    let mut key_size = "16".to_owned();
    let mut value_size = "32".to_owned();
    let mut server_stats = false;
    let mut stats_of = Vec::new();
    let mut stats_proto: Option<Transport> = None;
    let mut proto_given = false;
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Long("server") | Short('s') => {
                let v: String = value(&mut p, "--server")?;
                s.servers.push(ServerSpec::parse(&v)?);
            }
            Long("proto") => {
                s.transport = value(&mut p, "--proto")?;
                proto_given = true;
            }
            Long("meta") => s.meta = true,
            Long("udp-sockets") => {
                s.udp_per_thread = match value::<String>(&mut p, "--udp-sockets")?.as_str() {
                    "thread" => true,
                    "connection" => false,
                    other => {
                        return Err(invalid(format!(
                            "--udp-sockets '{other}': expected thread or connection"
                        )))
                    }
                }
            }
            Long("spin-us") => {
                let us: u64 = value(&mut p, "--spin-us")?;
                if us > 1_000_000 {
                    return Err(invalid(format!(
                        "--spin-us {us}: at most 1000000 (one second)"
                    )));
                }
                s.spin = Duration::from_micros(us);
            }
            Long("threads") | Short('t') => s.threads = value(&mut p, "--threads")?,
            Long("connections") | Short('c') => s.connections = value(&mut p, "--connections")?,
            Long("depth") => depth = Some(value(&mut p, "--depth")?),
            Long("rate") => rate = Some(value(&mut p, "--rate")?),
            Long("arrival") => {
                arrival = value::<String>(&mut p, "--arrival")?
                    .parse()
                    .map_err(invalid)?
            }
            Long("max-outstanding") => max_outstanding = value(&mut p, "--max-outstanding")?,
            Long("duration") | Short('d') => duration = Some(seconds(&mut p, "--duration")?),
            Long("requests") | Short('n') => s.requests = Some(value(&mut p, "--requests")?),
            Long("warmup") => s.warmup_secs = value(&mut p, "--warmup")?,
            Long("timeout") => {
                let ms: u64 = value(&mut p, "--timeout")?;
                s.timeout = Duration::from_millis(ms);
            }
            Long("keys") | Short('k') => s.keys = value(&mut p, "--keys")?,
            Long("dist") => s.dist = value(&mut p, "--dist")?,
            Long("shift-at") => s.shift_at.push(seconds(&mut p, "--shift-at")?),
            Long("shift-by") => shift_by = Some(value(&mut p, "--shift-by")?),
            Long("get-ratio") => s.get_ratio = value(&mut p, "--get-ratio")?,
            Long("multiget") => s.multiget = value(&mut p, "--multiget")?,
            Long("key-size") => key_size = value(&mut p, "--key-size")?,
            Long("value-size") => value_size = value(&mut p, "--value-size")?,
            Long("key-prefix") => s.key_prefix = value(&mut p, "--key-prefix")?,
            Long("max-value") => s.max_value = value(&mut p, "--max-value")?,
            Long("max-udp-value") => s.max_udp_value = value(&mut p, "--max-udp-value")?,
            Long("load") => s.load = true,
            Long("seed") => s.seed = value(&mut p, "--seed")?,
            Long("no-validate") => s.validate = false,
            Long("run-id") => {
                let v: String = value(&mut p, "--run-id")?;
                s.run_id = Some(
                    u32::from_str_radix(v.trim_start_matches("0x"), 16)
                        .map_err(|_| invalid(format!("--run-id '{v}': expected 1-8 hex digits")))?,
                );
            }
            Long("quiet") | Short('q') => s.quiet = true,
            Long("json") => s.json = true,
            Long("csv") => s.csv = Some(PathBuf::from(p.value()?)),
            Long("hdr") => s.hdr = Some(PathBuf::from(p.value()?)),
            Long("server-stats") => server_stats = true,
            Long("stats-server") => {
                let v: String = value(&mut p, "--stats-server")?;
                s.stats_servers.push(ServerSpec::parse(&v)?);
            }
            Long("stats-of") => {
                let v: String = value(&mut p, "--stats-of")?;
                stats_of.push(ServerSpec::parse(&v)?);
            }
            Long("stats-proto") => stats_proto = Some(value(&mut p, "--stats-proto")?),
            Long("stats-csv") => s.stats_csv = Some(PathBuf::from(p.value()?)),
            _ => return Err(arg.unexpected().into()),
        }
    }
    if let Some(t) = stats_proto {
        s.stats_transport = t;
    }
    if !stats_of.is_empty() {
        if !s.servers.is_empty() {
            return Err(invalid(
                "--stats-of reads stats and exits: do not combine it with --server",
            ));
        }
        return Ok(Command::StatsOf(StatsOf {
            servers: stats_of,
            // `--proto` also selects the transport of --stats-of, as the usage line says.
            transport: stats_proto.unwrap_or(if proto_given {
                s.transport
            } else {
                Transport::Tcp
            }),
            json: s.json,
            timeout: s.timeout,
        }));
    }
    s.key_size =
        SizeDist::parse("key size", &key_size, ETC_KEY).map_err(|e| invalid(e.to_string()))?;
    s.value_size = SizeDist::parse("value size", &value_size, ETC_VALUE)
        .map_err(|e| invalid(e.to_string()))?;
    s.shift_by = shift_by.unwrap_or(u64::from(s.keys / 2));
    s.duration = match (duration, s.requests) {
        (Some(d), Some(_)) => {
            return Err(invalid(format!(
                "give --duration or --requests, not both (--duration {})",
                d.as_secs_f64()
            )))
        }
        (Some(d), None) => Some(d),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(10)),
    };
    if s.requests == Some(0) {
        return Err(invalid("--requests must be at least 1"));
    }
    s.mode = match rate {
        Some(rate) => {
            if depth.is_some() {
                return Err(invalid(
                    "--depth is for the closed loop; --rate selects the open loop",
                ));
            }
            LoopMode::Open {
                rate,
                arrival,
                max_outstanding,
            }
        }
        None => LoopMode::Closed {
            depth: depth.unwrap_or(1),
        },
    };
    s.load_depth = depth.unwrap_or(8).max(1);
    if server_stats {
        if !s.stats_servers.is_empty() {
            return Err(invalid("give --server-stats or --stats-server, not both"));
        }
        s.stats_servers = s.servers.clone();
    }
    if s.stats_csv.is_some() && s.stats_servers.is_empty() {
        return Err(invalid(
            "--stats-csv needs --server-stats or --stats-server",
        ));
    }
    if s.warmup_secs > 0 && s.requests.is_some() {
        return Err(invalid(
            "--warmup needs --duration (a request budget has no warm-up)",
        ));
    }
    s.check()?;
    Ok(Command::Run(Box::new(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Settings, ArgsError> {
        match parse_args(args.iter().copied())? {
            Command::Run(s) => Ok(*s),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_and_issue_example() {
        let s = run(&[
            "--server",
            "127.0.0.1:7000",
            "--proto",
            "tcp",
            "--threads",
            "2",
            "--connections",
            "8",
            "--get-ratio",
            "0.95",
            "--keys",
            "1000",
            "--duration",
            "3",
            "--rate",
            "5000",
            "--dist",
            "zipf:0.99",
            "--json",
        ])
        .unwrap();
        assert_eq!(
            s.servers,
            [ServerSpec {
                host: "127.0.0.1".into(),
                port: 7000
            }]
        );
        assert_eq!(s.transport, Transport::Tcp);
        assert_eq!((s.threads, s.connections, s.keys), (2, 8, 1000));
        assert_eq!(s.duration, Some(Duration::from_secs(3)));
        assert_eq!(s.dist, KeyDist::Zipf(0.99));
        assert!(s.json);
        assert_eq!(s.shift_by, 500);
        assert!(
            matches!(s.mode, LoopMode::Open { rate, arrival: Arrival::Poisson, .. } if rate == 5000.0)
        );
        let d = run(&["--server", "localhost"]).unwrap();
        assert_eq!(d.servers[0].port, 11211);
        assert_eq!(d.mode, LoopMode::Closed { depth: 1 });
        assert_eq!(d.duration, Some(Duration::from_secs(10)));
        assert_eq!(d.value_cap(), 1200);
        assert_eq!(d.spin, Duration::from_micros(20));
        let quiet = run(&["--server", "h", "--spin-us", "0"]).unwrap();
        assert_eq!(quiet.spin, Duration::ZERO);
    }

    #[test]
    fn refusals() {
        for bad in [
            &["--proto", "udp"][..],
            &["--server", "h:0"],
            &["--server", "h:x"],
            &["--server", "h", "--get-ratio", "1.5"],
            &["--server", "h", "--meta", "--multiget", "4"],
            &["--server", "h", "--rate", "100", "--depth", "2"],
            &["--server", "h", "--spin-us", "2000000"],
            &["--server", "h", "--spin-us", "-1"],
            &["--server", "h", "--duration", "1", "--requests", "5"],
            &["--server", "h", "--requests", "0"],
            &["--server", "h", "--dist", "zipf:x"],
            &["--server", "h", "--value-size", "uniform:9,1"],
            &["--server", "h", "--bogus"],
            &["--server", "h", "--max-udp-value", "10"],
            &["--server", "h", "--stats-of", "h"],
            &["--server", "h", "--run-id", "xyz"],
            &["--server", "h", "--stats-csv", "x.csv"],
            &["--server", "h", "--warmup", "2", "--requests", "10"],
        ] {
            assert!(parse_args(bad.iter().copied()).is_err(), "{bad:?}");
        }
        let ok = run(&[
            "--server",
            "h",
            "--meta",
            "--multiget",
            "4",
            "--proto",
            "tcp",
        ])
        .unwrap();
        assert!(ok.meta);
    }

    #[test]
    fn stats_of_and_help() {
        match parse_args([
            "--stats-of",
            "a:1",
            "--stats-of",
            "b:2",
            "--proto",
            "udp",
            "--json",
        ])
        .unwrap()
        {
            Command::StatsOf(s) => {
                assert_eq!(s.servers.len(), 2);
                assert_eq!(s.transport, Transport::Udp);
                assert!(s.json);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse_args(["--help"]).unwrap(), Command::Help));
        let s = run(&["--server", "a:1", "--server-stats", "--run-id", "0xBEEF"]).unwrap();
        assert_eq!(s.stats_servers, s.servers);
        assert_eq!(s.run_id, Some(0xbeef));
        // Every long option the parser knows is documented.
        let src = include_str!("config.rs");
        for line in src.lines() {
            let l = line.trim_start();
            if let Some(rest) = l.strip_prefix("Long(\"") {
                let name = &rest[..rest.find('"').unwrap()];
                assert!(
                    HELP.contains(&format!("--{name}")),
                    "--{name} missing from HELP"
                );
            }
        }
    }
}
