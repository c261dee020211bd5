//! kvlb's settings: one option table, read from command-line flags and JSON files alike, for
//! every datapath.
//!
//! Owns: option names, defaults, parsing and validation. Must not: open sockets, resolve
//! anything at packet time, or know how a datapath uses a setting.
//!
//! Every option is declared once in [`OPTIONS`]. The command line (`--name value`), a JSON
//! config (`{"name": value}`, arrays for repeatable options) and `--help` are all derived from
//! that table, so they cannot drift apart. Options apply in order: a `--config FILE` applies
//! its contents where it appears, and later flags override earlier values (repeatable
//! options append).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// An Ethernet address as six bytes.
pub type Mac = [u8; 6];

/// A datapath port, as numbered by the datapath (DPDK port id, ONVM port id, pcap "0").
/// Displays as the bare number, as port ids appear in kvlb's flags and outputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortId(pub u16);

/// An ONVM service id. Displays as the bare number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId(pub u16);

macro_rules! id_conversions {
    ($id:ident) => {
        impl From<u16> for $id {
            #[inline]
            fn from(n: u16) -> $id {
                $id(n)
            }
        }

        impl From<$id> for u16 {
            #[inline]
            fn from(id: $id) -> u16 {
                id.0
            }
        }

        impl fmt::Display for $id {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl std::str::FromStr for $id {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<$id, Self::Err> {
                s.parse().map($id)
            }
        }
    };
}

id_conversions!(PortId);
id_conversions!(ServiceId);

/// What can go wrong while reading settings.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown option '{0}' (see --help)")]
    UnknownOption(String),
    #[error("option '--{0}' needs a value")]
    MissingValue(&'static str),
    #[error("option '--{option}' does not take a value")]
    UnexpectedValue { option: &'static str },
    #[error("bad value '{value}' for '--{option}': {reason}")]
    BadValue {
        option: &'static str,
        value: String,
        reason: String,
    },
    #[error("cannot read config file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("invalid settings: {0}")]
    Invalid(String),
    #[error("{0}")]
    Args(String),
}

impl From<lexopt::Error> for ConfigError {
    fn from(e: lexopt::Error) -> Self {
        ConfigError::Args(e.to_string())
    }
}

/// One memcached server as the user named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    /// The host as written (ketama point names are built from this string, as libmemcached
    /// does, so `localhost` and `127.0.0.1` place keys differently).
    pub host: String,
    pub port: u16,
    /// The resolved address.
    pub addr: SocketAddrV4,
    /// Ketama weight (libmemcached's `weight`), ≥ 1.
    pub weight: u32,
}

impl FromStr for BackendSpec {
    type Err = String;
    /// `HOST:PORT[:WEIGHT]`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(':');
        let host = parts
            .next()
            .filter(|h| !h.is_empty())
            .ok_or("missing host")?;
        let port: u16 = parts
            .next()
            .ok_or("expected HOST:PORT[:WEIGHT]")?
            .parse()
            .map_err(|_| "port is not a number in 0..=65535")?;
        let weight = match parts.next() {
            None => 1,
            Some(w) => w
                .parse::<u32>()
                .ok()
                .filter(|w| *w >= 1)
                .ok_or("weight must be an integer ≥ 1")?,
        };
        if parts.next().is_some() {
            return Err("expected HOST:PORT[:WEIGHT]".into());
        }
        if port == 0 {
            return Err("port must not be 0".into());
        }
        let addr = resolve_v4(host, port)?;
        Ok(BackendSpec {
            host: host.to_string(),
            port,
            addr,
            weight,
        })
    }
}

impl fmt::Display for BackendSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

fn resolve_v4(host: &str, port: u16) -> Result<SocketAddrV4, String> {
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(SocketAddrV4::new(ip, port));
    }
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve '{host}': {e}"))?;
    addrs
        .filter_map(|a| match a {
            SocketAddr::V4(v4) => Some(v4),
            SocketAddr::V6(_) => None,
        })
        .next()
        .ok_or_else(|| format!("'{host}' has no IPv4 address"))
}

/// An IPv4 prefix such as `10.0.0.0/8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Cidr {
    fn mask(self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.len))
        }
    }

    /// Whether `ip` lies in this prefix.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        (u32::from(ip) & self.mask()) == (u32::from(self.addr) & self.mask())
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("'{a}' is not an IPv4 address"))?;
        let len: u8 = l
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("prefix length '{l}' is not in 0..=32"))?;
        Ok(Cidr { addr, len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// When the L2 (warm-key skip list) cache runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L2Mode {
    /// Switch on when traffic is skewed, off when it flattens ("half-always on").
    Auto,
    On,
    Off,
}

/// How reads of a replicated hot key pick among the replicas holding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaSelect {
    /// The replica whose server has the lowest recent request rate (kvlb's own meters).
    LeastLoaded,
    /// The replica with the fewest outstanding requests.
    LeastOutstanding,
    /// Two random replicas, the less loaded of them (power of two choices).
    PowerOfTwo,
}

/// When a cached value answers a GET of a hot or warm key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CachePolicy {
    /// Send the GET to a server that can serve it while that server's recent load is
    /// below the mean; answer from the cache only the overflow. Fills valleys without
    /// ever adding load to the busiest server.
    Balance,
    /// Answer from the cache whenever it holds the value.
    Always,
}

/// All of kvlb's settings, shared by every datapath.
#[derive(Clone, Debug)]
pub struct Config {
    // --- network ---
    pub backends: Vec<BackendSpec>,
    /// The address clients send requests to.
    pub vip: Option<SocketAddrV4>,
    /// kvlb's address toward the backends (defaults to the VIP's address).
    pub local_ip: Option<Ipv4Addr>,
    /// kvlb's own MAC on its ports (defaults to the port's MAC).
    pub mac: Option<Mac>,
    /// Static neighbour entries (IP → MAC), used instead of ARP for those addresses.
    pub neighbors: Vec<(Ipv4Addr, Mac)>,
    /// Port facing clients (packet datapaths).
    pub client_port: PortId,
    /// Port facing backends (packet datapaths); may equal `client_port`.
    pub server_port: PortId,
    /// First UDP source port kvlb uses toward backends (0: kernel-chosen, socket mode only).
    pub source_port_base: u16,
    /// How many source ports kvlb uses toward backends (each adds 65536 request ids).
    pub source_ports: u16,
    /// Packet datapaths stop once their input is exhausted and nothing is outstanding.
    pub exit_when_idle: bool,
    /// Socket datapath: coalesce sends with UDP generic segmentation offload.
    pub udp_gso: bool,
    /// Frames that are not kvlb's are passed on (ONVM NEXT / pass-through) rather than
    /// dropped.
    pub pass_other: bool,

    // --- memcached over TCP (kvlb serve) ---
    /// Serve memcached over TCP on the listening port too.
    pub tcp: bool,
    /// Persistent TCP connections per backend.
    pub backend_conns: usize,
    /// kvlb's own requests (replication, fences, probes, flushes, split-get parts) go on
    /// the backend TCP connections rather than as datagrams.
    pub own_requests_over_tcp: bool,
    /// Largest data block of a storage request over TCP (memcached's `-I`).
    pub max_item_size: usize,
    /// Most client TCP connections at once.
    pub max_conns: usize,
    /// A client TCP connection idle this long is closed (zero: never).
    pub idle_timeout: Duration,
    /// Requests one TCP client may have outstanding before kvlb stops reading it.
    pub max_pending: usize,
    /// Reply bytes kvlb holds for one TCP client before it stops reading it.
    pub max_client_buffer: usize,

    // --- hot keys ---
    /// Hot-key handling (detection, caching, replication) on or off.
    pub hotkeys: bool,
    pub hotkey_algo: String,
    /// Support threshold s (fraction of requests); derived from the cluster when unset.
    pub hot_support: Option<f64>,
    /// Error bound ε; s/10 when unset.
    pub hot_error: Option<f64>,
    /// k in the derived threshold s = 1/(k·n): a key is hot once it carries 1/k of one
    /// backend's fair share of the load.
    pub hot_share_k: f64,
    /// Detector epoch (window rotation period).
    pub hot_epoch: Duration,
    /// Requests per second above which the detector counts a sample (0: never); the
    /// sample aims at this many requests per second of epoch.
    pub detect_sample_above: u64,

    // --- caches ---
    pub l1_max_keys: usize,
    /// Largest value kept in L1/L2 (a cached reply must fit one datagram).
    pub cache_max_value: usize,
    pub l2_mode: L2Mode,
    pub l2_max_bytes: usize,
    /// L2 switches on when the top keys' share of traffic rises above this.
    pub l2_on_share: f64,
    /// ... and off when it falls below this.
    pub l2_off_share: f64,
    /// Longest a learned value is served from a cache before it is fetched again (bounds
    /// staleness from expiry and from writes that bypass kvlb).
    pub cache_ttl: Duration,

    // --- replication ---
    /// Extra copies of each hot key (the next distinct servers on the continuum).
    pub replicas: usize,
    pub replica_select: ReplicaSelect,
    /// When a cached value answers a GET.
    pub cache_policy: CachePolicy,
    /// Cache a hot key's miss (`END`) as its absence (`--cache-misses`).
    pub cache_misses: bool,

    // --- failover ---
    pub request_timeout: Duration,
    /// Consecutive timeouts after which a backend is marked down.
    pub down_after: u32,
    pub probe_interval: Duration,
    /// Flush a backend that comes back before it serves again (it may hold values
    /// overwritten elsewhere while it was down).
    pub rejoin_flush: bool,

    // --- flow table ---
    pub flow_capacity: usize,

    // --- security ---
    /// Client prefixes allowed to use the VIP (empty: any).
    pub allow: Vec<Cidr>,
    /// Requests per second per source (0: unlimited).
    pub rate_limit: u32,
    pub rate_burst: u32,
    /// Largest reply (bytes) per request to a source outside `trusted`.
    pub unverified_reply_bytes: usize,
    /// Sources exempt from the reply cap (`None`: loopback only, see
    /// [`Config::effective_trusted`]).
    pub trusted: Option<Vec<Cidr>>,

    // --- stats ---
    /// Period of the stats report (zero: off).
    pub stats_interval: Duration,
    /// Where JSON-lines stats go, if anywhere.
    pub stats_json: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            backends: Vec::new(),
            vip: None,
            local_ip: None,
            mac: None,
            neighbors: Vec::new(),
            client_port: PortId(0),
            server_port: PortId(0),
            source_port_base: 40000,
            source_ports: 8,
            exit_when_idle: false,
            udp_gso: true,
            pass_other: true,
            tcp: true,
            backend_conns: 2,
            own_requests_over_tcp: true,
            max_item_size: 1 << 20,
            max_conns: 4096,
            idle_timeout: Duration::ZERO,
            max_pending: 128,
            max_client_buffer: 4 << 20,
            hotkeys: true,
            hotkey_algo: "lossy-decayed".to_string(),
            hot_support: None,
            hot_error: None,
            hot_share_k: 16.0,
            hot_epoch: Duration::from_secs(1),
            detect_sample_above: 500_000,
            l1_max_keys: 1000,
            cache_max_value: 1200,
            l2_mode: L2Mode::Auto,
            l2_max_bytes: 8 << 20,
            l2_on_share: 0.2,
            l2_off_share: 0.1,
            cache_ttl: Duration::from_secs(2),
            replicas: 3,
            replica_select: ReplicaSelect::LeastLoaded,
            cache_policy: CachePolicy::Balance,
            cache_misses: true,
            request_timeout: Duration::from_millis(250),
            down_after: 3,
            probe_interval: Duration::from_millis(500),
            rejoin_flush: true,
            flow_capacity: 1 << 16,
            allow: Vec::new(),
            rate_limit: 0,
            rate_burst: 0,
            unverified_reply_bytes: 1400,
            trusted: None,
            stats_interval: Duration::from_secs(1),
            stats_json: None,
        }
    }
}

/// One entry of the option table.
pub struct OptSpec {
    pub name: &'static str,
    /// Placeholder for the value in `--help`; `None` for flags.
    pub value: Option<&'static str>,
    pub repeatable: bool,
    pub help: &'static str,
    set: fn(&mut Config, &str) -> Result<(), String>,
}

impl fmt::Debug for OptSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OptSpec").field("name", &self.name).finish()
    }
}

fn num<T: FromStr>(v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| "not a valid number of the expected range".to_string())
}

fn positive(v: &str) -> Result<usize, String> {
    match num(v)? {
        0 => Err("must be at least 1".into()),
        n => Ok(n),
    }
}

fn fraction(v: &str) -> Result<f64, String> {
    let f: f64 = num(v)?;
    if f > 0.0 && f < 1.0 {
        Ok(f)
    } else {
        Err("must lie strictly between 0 and 1".into())
    }
}

fn flag(v: &str) -> Result<bool, String> {
    match v {
        "" | "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// Parses a duration: `250ms`, `2s`, `1.5s`, `100us`, `1m`; a bare number is seconds.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().map_err(|_| format!("'{v}' is not a duration"))?;
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" => 1e-6,
        "ns" => 1e-9,
        "m" | "min" => 60.0,
        _ => return Err(format!("unknown unit '{unit}' (use ns, us, ms, s, m)")),
    };
    let secs = n * scale;
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("'{v}' is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(v: &str) -> Result<Mac, String> {
    let mut mac = [0u8; 6];
    let mut n = 0;
    for part in v.split(':') {
        if n == 6 || part.len() != 2 {
            return Err(format!("'{v}' is not a MAC address (aa:bb:cc:dd:ee:ff)"));
        }
        mac[n] = u8::from_str_radix(part, 16)
            .map_err(|_| format!("'{v}' is not a MAC address (aa:bb:cc:dd:ee:ff)"))?;
        n += 1;
    }
    if n != 6 {
        return Err(format!("'{v}' is not a MAC address (aa:bb:cc:dd:ee:ff)"));
    }
    Ok(mac)
}

macro_rules! opt {
    ($name:literal, $value:expr, $rep:literal, $help:literal, |$c:ident, $v:ident| $body:expr) => {
        OptSpec {
            name: $name,
            value: $value,
            repeatable: $rep,
            help: $help,
            set: |$c, $v| {
                $body;
                Ok(())
            },
        }
    };
}

/// Every kvlb option. `config` itself is handled by the parser (it reads a file).
pub static OPTIONS: &[OptSpec] = &[
    opt!("backend", Some("HOST:PORT[:WEIGHT]"), true,
        "memcached server behind kvlb (repeatable; order and names matter for ketama, as in libmemcached)",
        |c, v| c.backends.push(v.parse()?)),
    opt!("vip", Some("IP:PORT"), false, "the address clients send memcached requests to",
        |c, v| c.vip = Some(v.parse().map_err(|_| "expected IPv4:PORT".to_string())?)),
    opt!("local-ip", Some("IP"), false, "kvlb's address toward the backends [default: the VIP's address]",
        |c, v| c.local_ip = Some(v.parse().map_err(|_| "expected an IPv4 address".to_string())?)),
    opt!("mac", Some("MAC"), false, "kvlb's Ethernet address on its ports [default: the port's own]",
        |c, v| c.mac = Some(parse_mac(v)?)),
    opt!("neighbor", Some("IP=MAC"), true, "static neighbour entry used instead of ARP (repeatable)",
        |c, v| {
            let (ip, mac) = v.split_once('=').ok_or("expected IP=MAC")?;
            let ip: Ipv4Addr = ip.parse().map_err(|_| format!("'{ip}' is not an IPv4 address"))?;
            c.neighbors.push((ip, parse_mac(mac)?))
        }),
    opt!("client-port", Some("N"), false, "port id facing clients (packet datapaths) [default: 0]",
        |c, v| c.client_port = num(v)?),
    opt!("server-port", Some("N"), false, "port id facing backends; may equal --client-port [default: 0]",
        |c, v| c.server_port = num(v)?),
    opt!("source-port-base", Some("PORT"), false,
        "first UDP source port toward backends; 0 lets the kernel choose (socket mode) [default: 40000]",
        |c, v| c.source_port_base = num(v)?),
    opt!("source-ports", Some("N"), false,
        "UDP source ports toward backends; each widens the 16-bit request-id space by 65536 [default: 8]",
        |c, v| c.source_ports = num(v)?),
    opt!("udp-gso", Some("on|off"), false,
        "socket mode: send runs of equal-sized datagrams to one peer as one UDP GSO send (falls back by itself where the kernel refuses) [default: on]",
        |c, v| c.udp_gso = flag(v)?),
    opt!("tcp", Some("on|off"), false,
        "kvlb serve: serve memcached over TCP on --listen's port too [default: on]",
        |c, v| c.tcp = match v {
            "on" => true,
            "off" => false,
            _ => return Err("expected on or off".into()),
        }),
    opt!("backend-conns", Some("N"), false,
        "kvlb serve: persistent TCP connections per backend, 1 to 64 [default: 2]",
        |c, v| c.backend_conns = match num(v)? {
            n @ 1..=64 => n,
            _ => return Err("expected 1 to 64".into()),
        }),
    opt!("own-requests", Some("tcp|udp"), false,
        "kvlb serve: how the requests kvlb makes itself reach the backends (replication fetches and copies, fences, probes, rejoin flushes, split multi-get parts): tcp, on the --backend-conns connections, works with memcached's defaults (UDP off); udp needs memcached -U. With --tcp off always udp [default: tcp]",
        |c, v| c.own_requests_over_tcp = match v {
            "tcp" => true,
            "udp" => false,
            _ => return Err("expected tcp or udp".into()),
        }),
    opt!("max-item-size", Some("BYTES"), false,
        "kvlb serve: largest data block of a storage request over TCP (memcached's -I) [default: 1048576]",
        |c, v| c.max_item_size = positive(v)?),
    opt!("max-conns", Some("N"), false, "kvlb serve: most client TCP connections at once [default: 4096]",
        |c, v| c.max_conns = positive(v)?),
    opt!("idle-timeout", Some("DURATION"), false,
        "kvlb serve: close a client TCP connection idle this long; 0: never (memcached's default) [default: 0]",
        |c, v| c.idle_timeout = parse_duration(v)?),
    opt!("max-pending", Some("N"), false,
        "kvlb serve: requests one TCP client may have outstanding before kvlb stops reading from it (backpressure) [default: 128]",
        |c, v| c.max_pending = positive(v)?),
    opt!("max-client-buffer", Some("BYTES"), false,
        "kvlb serve: reply bytes kvlb holds for one TCP client before it stops reading from it (backpressure) [default: 4194304]",
        |c, v| c.max_client_buffer = positive(v)?),
    opt!("exit-when-idle", None, false, "packet datapaths stop when their input is exhausted",
        |c, v| c.exit_when_idle = flag(v)?),
    opt!("other-traffic", Some("pass|drop"), false,
        "frames not for kvlb: pass them on (ONVM NEXT) or drop them [default: pass]",
        |c, v| c.pass_other = match v {
            "pass" => true,
            "drop" => false,
            _ => return Err("expected pass or drop".into()),
        }),
    opt!("hotkeys", Some("on|off"), false, "hot-key detection, caching and replication [default: on]",
        |c, v| c.hotkeys = flag(v)?),
    opt!("no-hotkeys", None, false, "same as --hotkeys off",
        |c, v| c.hotkeys = !flag(v)?),
    opt!("hotkey-algo", Some("NAME"), false, "hot-key detector: lossy, lossy-weighted, lossy-decayed, space-saving (see `kvlb hotkeys --help`) [default: lossy-decayed]",
        |c, v| c.hotkey_algo = v.to_string()),
    opt!("hot-support", Some("S"), false,
        "support threshold s: a key is hot above this share of requests [default: 1/(k·n) for n backends]",
        |c, v| c.hot_support = Some(fraction(v)?)),
    opt!("hot-error", Some("E"), false, "lossy counting error bound ε [default: s/10]",
        |c, v| c.hot_error = Some(fraction(v)?)),
    opt!("hot-share-k", Some("K"), false,
        "k in the derived support s = 1/(k·n): hot = 1/k of one backend's fair share [default: 16]",
        |c, v| {
            let k: f64 = num(v)?;
            if !(k.is_finite() && k >= 1.0) {
                return Err("must be ≥ 1".into());
            }
            c.hot_share_k = k
        }),
    opt!("hot-epoch", Some("DURATION"), false, "hot-key detector epoch [default: 1s]",
        |c, v| c.hot_epoch = parse_duration(v)?),
    opt!("detect-sample-above", Some("RATE"), false,
        "above RATE requests/s (measured per epoch) the hot-key detector counts a random sample of RATE·epoch requests per epoch, with a stated miss bound; below it, every request (exact); 0: never sample [default: 500000]",
        |c, v| c.detect_sample_above = num(v)?),
    opt!("l1-keys", Some("N"), false, "most keys in the L1 hot-key cache [default: 1000]",
        |c, v| c.l1_max_keys = num(v)?),
    opt!("cache-max-value", Some("BYTES"), false,
        "largest value cached (a cached reply must fit one datagram) [default: 1200]",
        |c, v| c.cache_max_value = num(v)?),
    opt!("l2", Some("auto|on|off"), false, "L2 warm-key cache: auto switches with traffic skew [default: auto]",
        |c, v| c.l2_mode = match v {
            "auto" => L2Mode::Auto,
            "on" => L2Mode::On,
            "off" => L2Mode::Off,
            _ => return Err("expected auto, on or off".into()),
        }),
    opt!("cache-ttl", Some("DURATION"), false,
        "longest a learned value is served from cache before it is fetched again [default: 2s]",
        |c, v| c.cache_ttl = parse_duration(v)?),
    opt!("l2-bytes", Some("BYTES"), false, "memory bound of the L2 cache [default: 8388608]",
        |c, v| c.l2_max_bytes = num(v)?),
    opt!("l2-on-share", Some("F"), false, "L2 switches on above this top-key traffic share [default: 0.2]",
        |c, v| c.l2_on_share = fraction(v)?),
    opt!("l2-off-share", Some("F"), false, "L2 switches off below this top-key traffic share [default: 0.1]",
        |c, v| c.l2_off_share = fraction(v)?),
    opt!("replicas", Some("R"), false, "extra copies of each hot key on the next servers of the ring [default: 3]",
        |c, v| c.replicas = num(v)?),
    opt!("replica-select", Some("least-loaded|lor|p2c"), false,
        "how hot-key reads pick a replica: least recent load, least outstanding, or power of two choices [default: least-loaded]",
        |c, v| c.replica_select = match v {
            "least-loaded" => ReplicaSelect::LeastLoaded,
            "lor" => ReplicaSelect::LeastOutstanding,
            "p2c" => ReplicaSelect::PowerOfTwo,
            _ => return Err("expected least-loaded, lor or p2c".into()),
        }),
    opt!("cache-policy", Some("balance|always"), false,
        "balance: GETs of cached keys go to an under-loaded server that holds them, the cache answers the overflow; always: the cache answers whenever it can [default: balance]",
        |c, v| c.cache_policy = match v {
            "balance" => CachePolicy::Balance,
            "always" => CachePolicy::Always,
            _ => return Err("expected balance or always".into()),
        }),
    opt!("cache-misses", Some("on|off"), false,
        "a hot key's GET that misses (END) is cached as the key's absence, under the same write-stamp rule as a value, so a hot key that is not stored is answered and balanced too [default: on]",
        |c, v| c.cache_misses = flag(v)?),
    opt!("timeout", Some("DURATION"), false, "backend request timeout [default: 250ms]",
        |c, v| c.request_timeout = parse_duration(v)?),
    opt!("down-after", Some("K"), false, "consecutive timeouts (in send order) that mark a backend down [default: 3]",
        |c, v| c.down_after = num(v)?),
    opt!("probe-interval", Some("DURATION"), false, "how often down backends are probed [default: 500ms]",
        |c, v| c.probe_interval = parse_duration(v)?),
    opt!("rejoin-flush", Some("on|off"), false,
        "flush a backend that comes back before routing to it (it may hold stale values) [default: on]",
        |c, v| c.rejoin_flush = flag(v)?),
    opt!("flow-capacity", Some("N"), false, "outstanding requests tracked at once [default: 65536]",
        |c, v| c.flow_capacity = num(v)?),
    opt!("allow", Some("CIDR"), true, "client prefix allowed to use the VIP (repeatable) [default: any]",
        |c, v| c.allow.push(v.parse()?)),
    opt!("rate-limit", Some("RPS"), false, "requests per second per client address; 0 = unlimited [default: 0]",
        |c, v| c.rate_limit = num(v)?),
    opt!("rate-burst", Some("N"), false, "burst allowed above --rate-limit [default: the rate]",
        |c, v| c.rate_burst = num(v)?),
    opt!("unverified-reply-bytes", Some("BYTES"), false,
        "largest reply per request to a source outside --trusted (anti-amplification) [default: 1400]",
        |c, v| c.unverified_reply_bytes = num(v)?),
    opt!("trusted", Some("CIDR"), true,
        "source prefix exempt from the reply cap (repeatable; the first use replaces the default) [default: 127.0.0.0/8]",
        |c, v| {
            let cidr: Cidr = v.parse()?;
            c.trusted.get_or_insert_with(Vec::new).push(cidr)
        }),
    opt!("stats-interval", Some("DURATION"), false, "period of the stats report; 0 turns it off [default: 1s]",
        |c, v| c.stats_interval = parse_duration(v)?),
    opt!("stats-json", Some("FILE"), false, "append stats as JSON lines to FILE",
        |c, v| c.stats_json = Some(PathBuf::from(v))),
];

fn lookup(name: &str) -> Option<&'static OptSpec> {
    OPTIONS.iter().find(|o| o.name == name)
}

impl Config {
    /// Applies one option by name, as from `--name value` or a JSON entry.
    pub fn apply(&mut self, name: &str, value: Option<&str>) -> Result<(), ConfigError> {
        let spec = lookup(name).ok_or_else(|| ConfigError::UnknownOption(format!("--{name}")))?;
        let v = match (spec.value, value) {
            (Some(_), Some(v)) => v,
            (Some(_), None) => return Err(ConfigError::MissingValue(spec.name)),
            (None, v) => v.unwrap_or(""),
        };
        (spec.set)(self, v).map_err(|reason| ConfigError::BadValue {
            option: spec.name,
            value: v.to_string(),
            reason,
        })
    }

    /// Applies a JSON config file: an object whose keys are option names.
    pub fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        self.apply_json(&text).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Applies a JSON object of options (see [`Config::apply_file`]).
    pub fn apply_json(&mut self, text: &str) -> Result<(), ConfigError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ConfigError::Args(e.to_string()))?;
        let obj = value
            .as_object()
            .ok_or_else(|| ConfigError::Args("the top level must be a JSON object".into()))?;
        for (key, v) in obj {
            if key == "config" {
                return Err(ConfigError::Args("nested 'config' is not supported".into()));
            }
            let spec = lookup(key).ok_or_else(|| ConfigError::UnknownOption(key.clone()))?;
            let items: Vec<&serde_json::Value> = match v {
                serde_json::Value::Array(a) if spec.repeatable => a.iter().collect(),
                other => vec![other],
            };
            for item in items {
                let s = match item {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Bool(b) => b.to_string(),
                    serde_json::Value::Number(n) => n.to_string(),
                    _ => {
                        return Err(ConfigError::BadValue {
                            option: spec.name,
                            value: item.to_string(),
                            reason: "expected a string, number or boolean".into(),
                        })
                    }
                };
                self.apply(key, Some(&s))?;
            }
        }
        Ok(())
    }

    /// Tries to consume the long option `--name` (and its value) as a kvlb option. Returns
    /// `Ok(false)` when it is not one of kvlb's, so callers can parse their own options
    /// around kvlb's. (`name` is owned by the caller because lexopt's `Arg` borrows the
    /// parser.)
    pub fn parse_long(
        &mut self,
        name: &str,
        parser: &mut lexopt::Parser,
    ) -> Result<bool, ConfigError> {
        if name == "config" {
            let path = PathBuf::from(parser.value()?);
            self.apply_file(&path)?;
            return Ok(true);
        }
        let Some(spec) = lookup(name) else {
            return Ok(false);
        };
        if spec.value.is_some() {
            let v = parser.value()?;
            let v = v.into_string().map_err(|_| ConfigError::BadValue {
                option: spec.name,
                value: "<non-UTF-8>".into(),
                reason: "not valid UTF-8".into(),
            })?;
            self.apply(spec.name, Some(&v))?;
        } else {
            if parser.optional_value().is_some() {
                return Err(ConfigError::UnexpectedValue { option: spec.name });
            }
            self.apply(spec.name, None)?;
        }
        Ok(true)
    }

    /// Parses a whole argument list of kvlb options only (no datapath options).
    pub fn from_args<I, S>(args: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString>,
    {
        let mut cfg = Config::default();
        let mut parser = lexopt::Parser::from_args(args);
        while let Some(arg) = parser.next()? {
            match arg {
                lexopt::Arg::Long(name) => {
                    let name = name.to_string();
                    if !cfg.parse_long(&name, &mut parser)? {
                        return Err(ConfigError::UnknownOption(format!("--{name}")));
                    }
                }
                other => return Err(other.unexpected().into()),
            }
        }
        Ok(cfg)
    }

    /// The options section of `--help`.
    pub fn help_text() -> String {
        let mut out =
            String::from("kvlb options (also accepted as keys of a --config JSON file):\n");
        out.push_str("  --config FILE\n        apply a JSON object of these options, e.g. {\"backend\": [\"10.0.0.2:11211\"], \"vip\": \"10.0.0.1:11211\"}\n");
        for o in OPTIONS {
            let head = match o.value {
                Some(v) => format!("  --{} {}", o.name, v),
                None => format!("  --{}", o.name),
            };
            out.push_str(&head);
            out.push_str("\n        ");
            out.push_str(o.help);
            out.push('\n');
        }
        out
    }

    /// The lossy-counting support threshold in force: the configured one, or 1/(k·n).
    pub fn effective_support(&self) -> f64 {
        self.hot_support.unwrap_or_else(|| {
            let n = self.backends.len().max(1) as f64;
            (1.0 / (self.hot_share_k * n)).min(0.5)
        })
    }

    /// The lossy-counting error bound in force: the configured one, or s/10.
    pub fn effective_error(&self) -> f64 {
        self.hot_error
            .unwrap_or_else(|| self.effective_support() / 10.0)
    }

    /// Sources exempt from the reply cap: `--trusted`, else loopback.
    pub fn effective_trusted(&self) -> Vec<Cidr> {
        self.trusted.clone().unwrap_or_else(|| {
            vec![Cidr {
                addr: Ipv4Addr::new(127, 0, 0, 0),
                len: 8,
            }]
        })
    }

    /// kvlb's address toward backends: `--local-ip`, else the VIP's address.
    pub fn effective_local_ip(&self) -> Option<Ipv4Addr> {
        self.local_ip.or(self.vip.map(|v| *v.ip()))
    }

    /// Checks the settings as a whole. Datapaths call this after parsing.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.backends.is_empty() {
            return bad("no --backend given".into());
        }
        for (i, a) in self.backends.iter().enumerate() {
            if self.backends[..i].iter().any(|b| b.addr == a.addr) {
                return bad(format!("backend {a} is listed twice"));
            }
        }
        if let Some(e) = self.hot_error {
            if e >= self.effective_support() {
                return bad(format!(
                    "--hot-error {e} must be smaller than the support {}",
                    self.effective_support()
                ));
            }
        }
        if self.source_ports == 0 {
            return bad("--source-ports must be at least 1".into());
        }
        if u32::from(self.source_port_base) + u32::from(self.source_ports) > 65536 {
            return bad("--source-port-base + --source-ports exceeds 65535".into());
        }
        if self.l2_off_share > self.l2_on_share {
            return bad("--l2-off-share must not exceed --l2-on-share".into());
        }
        if self.down_after == 0 {
            return bad("--down-after must be at least 1".into());
        }
        if self.flow_capacity == 0 {
            return bad("--flow-capacity must be at least 1".into());
        }
        if self.request_timeout.is_zero() {
            return bad("--timeout must be positive".into());
        }
        if self.hot_epoch.is_zero() {
            return bad("--hot-epoch must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_defaults() {
        let c = Config::from_args([
            "--backend",
            "127.0.0.1:11211",
            "--backend=10.0.0.2:11212:3",
            "--vip",
            "10.0.0.1:11211",
            "--exit-when-idle",
            "--timeout",
            "100ms",
            "--allow",
            "10.0.0.0/8",
        ])
        .unwrap();
        assert_eq!(c.backends.len(), 2);
        assert_eq!(c.backends[1].weight, 3);
        assert_eq!(c.backends[1].host, "10.0.0.2");
        assert_eq!(c.vip, Some("10.0.0.1:11211".parse().unwrap()));
        assert_eq!(c.effective_local_ip(), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert!(c.exit_when_idle);
        assert_eq!(c.request_timeout, Duration::from_millis(100));
        assert!(c.allow[0].contains(Ipv4Addr::new(10, 9, 8, 7)));
        assert!(!c.allow[0].contains(Ipv4Addr::new(11, 0, 0, 1)));
        c.validate().unwrap();
        // 2 backends, k = 16: s = 1/32, ε = s/10.
        assert!((c.effective_support() - 1.0 / 32.0).abs() < 1e-12);
        assert!((c.effective_error() - 1.0 / 320.0).abs() < 1e-12);
    }

    #[test]
    fn tcp_options_are_options_like_the_others() {
        let c = Config::default();
        assert!(c.tcp && c.own_requests_over_tcp);
        assert_eq!(
            (c.backend_conns, c.max_pending, c.max_client_buffer),
            (2, 128, 4 << 20)
        );
        let mut c = Config::default();
        c.apply_json(
            r#"{"tcp": "off", "backend-conns": 4, "own-requests": "udp", "idle-timeout": "2s",
                "max-item-size": 2097152, "max-conns": 10, "max-pending": 16,
                "max-client-buffer": 65536}"#,
        )
        .unwrap();
        assert!(!c.tcp && !c.own_requests_over_tcp);
        assert_eq!(c.backend_conns, 4);
        assert_eq!(c.idle_timeout, Duration::from_secs(2));
        assert_eq!((c.max_item_size, c.max_conns), (2 << 20, 10));
        assert_eq!((c.max_pending, c.max_client_buffer), (16, 65536));
        for bad in [
            ["--backend-conns", "0"],
            ["--backend-conns", "65"],
            ["--tcp", "maybe"],
            ["--own-requests", "sctp"],
            ["--max-pending", "0"],
        ] {
            assert!(Config::from_args(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn json_and_flags_share_one_table() {
        let mut c = Config::default();
        c.apply_json(
            r#"{"backend": ["127.0.0.1:11211", "127.0.0.1:11212:2"], "exit-when-idle": true,
                "replicas": 3, "l2": "off", "hot-support": 0.05}"#,
        )
        .unwrap();
        assert_eq!(c.backends.len(), 2);
        assert!(c.exit_when_idle);
        assert_eq!(c.replicas, 3);
        assert_eq!(c.l2_mode, L2Mode::Off);
        assert_eq!(c.hot_support, Some(0.05));
        assert!(c.apply_json(r#"{"no-such-option": 1}"#).is_err());
        assert!(c.apply_json(r#"{"replicas": "many"}"#).is_err());
        assert!(c.apply_json("[1]").is_err());
    }

    #[test]
    fn config_file_applies_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kvlb.json");
        std::fs::write(&path, r#"{"replicas": 5, "backend": "127.0.0.1:1"}"#).unwrap();
        let p = path.to_str().unwrap();
        let c = Config::from_args(["--replicas", "1", "--config", p]).unwrap();
        assert_eq!(c.replicas, 5);
        let c = Config::from_args(["--config", p, "--replicas", "1"]).unwrap();
        assert_eq!(c.replicas, 1);
        let err = Config::from_args(["--config", "/nonexistent/kvlb.json"]).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/kvlb.json"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = Config::from_args(["--backend", "host"]).unwrap_err();
        assert!(e.to_string().contains("--backend"), "{e}");
        assert!(Config::from_args(["--backend", "1.2.3.4:0"]).is_err());
        assert!(Config::from_args(["--backend", "1.2.3.4:11211:0"]).is_err());
        assert!(Config::from_args(["--hot-support", "1.5"]).is_err());
        assert!(Config::from_args(["--mac", "zz:00:00:00:00:00"]).is_err());
        assert!(Config::from_args(["--exit-when-idle=yes"]).is_err());
        assert!(Config::from_args(["--frobnicate"]).is_err());
        let c =
            Config::from_args(["--backend", "127.0.0.1:1", "--backend", "127.0.0.1:1"]).unwrap();
        assert!(c.validate().is_err());
        assert!(Config::default().validate().is_err());
    }

    #[test]
    fn durations_macs_and_prefixes() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_mac("02:00:00:00:00:0a").unwrap(), [2, 0, 0, 0, 0, 10]);
        assert!(parse_mac("02:00:00:00:00").is_err());
        assert!(parse_mac("02:00:00:00:00:00:00").is_err());
        assert!("0.0.0.0/0"
            .parse::<Cidr>()
            .unwrap()
            .contains(Ipv4Addr::new(8, 8, 8, 8)));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
    }

    #[test]
    fn help_lists_every_option() {
        let h = Config::help_text();
        for o in OPTIONS {
            assert!(
                h.contains(&format!("--{}", o.name)),
                "{} missing from help",
                o.name
            );
        }
    }
}
