//! `kvlb route`: where does each key live? Reads keys on stdin and prints the backend that
//! kvlb's ketama ring (bit-compatible with libmemcached's weighted ketama) puts each on.

use std::ffi::OsString;
use std::io::{self, BufRead, Write};

use anyhow::{bail, Context as _};

use crate::config::Config;
use crate::ring::{ketama_hash, KetamaRing};

const HELP: &str = "\
kvlb route: print the backend each key lives on (libmemcached-compatible weighted ketama)

usage: kvlb route [options] [kvlb options] < keys

Reads keys from stdin (whitespace-separated, usually one per line) and prints one line per
key: `KEY HOST:PORT`, where HOST:PORT is the --backend as written. Backends come from
--backend and --config exactly as for the NF, in the same order (order and names matter).

options:
  --show-replicas   also print the --replicas next distinct servers on the continuum
                    (where a hot key is replicated and where the key fails over to)
  --down HOST:PORT  place keys as if this backend were down (repeatable)
  --json            one JSON object per key: key, hash, server, index, replicas
  -h, --help        this text
";

/// What `kvlb route` was asked to do.
#[derive(Debug, Default)]
struct RouteOptions {
    json: bool,
    show_replicas: bool,
    down: Vec<String>,
}

/// Entry point registered in [`crate::cli::COMMANDS`].
pub fn run(args: Vec<OsString>) -> anyhow::Result<()> {
    let Some((cfg, opts)) = parse(args)? else {
        print!("{HELP}\n{}", Config::help_text());
        return Ok(());
    };
    let ring = build_ring(&cfg, &opts)?;
    let stdin = io::stdin().lock();
    let stdout = io::stdout().lock();
    let mut out = io::BufWriter::with_capacity(64 << 10, stdout);
    let res = route_keys(&cfg, &ring, &opts, stdin, &mut out).and_then(|skipped| {
        out.flush()?;
        Ok(skipped)
    });
    match res {
        Ok(0) => Ok(()),
        Ok(n) => bail!("{n} keys longer than 250 bytes were skipped (memcached rejects them)"),
        // `kvlb route < keys | head` is fine.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).context("routing keys from stdin"),
    }
}

/// Parses arguments; `None` when help was asked for.
fn parse(args: Vec<OsString>) -> anyhow::Result<Option<(Config, RouteOptions)>> {
    let mut cfg = Config::default();
    let mut opts = RouteOptions::default();
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        match arg {
            lexopt::Arg::Short('h') => return Ok(None),
            lexopt::Arg::Long(name) => {
                let name = name.to_string();
                match name.as_str() {
                    "help" => return Ok(None),
                    "json" => opts.json = true,
                    "show-replicas" => opts.show_replicas = true,
                    "down" => opts.down.push(
                        parser
                            .value()?
                            .into_string()
                            .map_err(|_| anyhow::anyhow!("--down: not valid UTF-8"))?,
                    ),
                    _ => {
                        if !cfg.parse_long(&name, &mut parser)? {
                            bail!("unknown option '--{name}' (see kvlb route --help)");
                        }
                    }
                }
            }
            other => return Err(other.unexpected().into()),
        }
    }
    cfg.validate()?;
    Ok(Some((cfg, opts)))
}

fn build_ring(cfg: &Config, opts: &RouteOptions) -> anyhow::Result<KetamaRing> {
    let mut live = vec![true; cfg.backends.len()];
    for d in &opts.down {
        let i = cfg
            .backends
            .iter()
            .position(|b| b.to_string() == *d || b.addr.to_string() == *d)
            .with_context(|| format!("--down {d}: no such --backend"))?;
        live[i] = false;
    }
    if !live.iter().any(|&l| l) {
        bail!("every backend is down");
    }
    Ok(KetamaRing::from_backends(&cfg.backends, &live)?)
}

/// memcached's longest key.
const MAX_KEY: usize = 250;

/// Routes every key of `input` to `out`. Returns how many over-long keys were skipped.
fn route_keys(
    cfg: &Config,
    ring: &KetamaRing,
    opts: &RouteOptions,
    mut input: impl BufRead,
    out: &mut impl Write,
) -> io::Result<usize> {
    let names: Vec<String> = cfg.backends.iter().map(|b| b.to_string()).collect();
    let mut skipped = 0;
    let mut line = Vec::with_capacity(512);
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        for key in line
            .split(|b| b.is_ascii_whitespace())
            .filter(|k| !k.is_empty())
        {
            if key.len() > MAX_KEY {
                skipped += 1;
                log::warn!(
                    "skipping a {}-byte key (memcached keys are at most {MAX_KEY} bytes)",
                    key.len()
                );
                continue;
            }
            let hash = ketama_hash(key);
            let set = ring.replicas(
                hash,
                if opts.show_replicas || opts.json {
                    cfg.replicas
                } else {
                    0
                },
            );
            // `build_ring` keeps at least one backend live, and every live backend has
            // points unless its weight rounds to none, so a primary always exists; guard
            // anyway rather than index blindly.
            let Some(primary) = set.primary() else {
                return Err(io::Error::other("no backend owns any continuum point"));
            };
            if opts.json {
                let replicas: Vec<&str> = set.iter().skip(1).map(|i| names[i].as_str()).collect();
                let obj = serde_json::json!({
                    "key": String::from_utf8_lossy(key),
                    "hash": hash,
                    "server": names[primary],
                    "index": primary,
                    "replicas": replicas,
                });
                writeln!(out, "{obj}")?;
            } else {
                out.write_all(key)?;
                write!(out, " {}", names[primary])?;
                if opts.show_replicas {
                    for i in set.iter().skip(1) {
                        write!(out, " {}", names[i])?;
                    }
                }
                out.write_all(b"\n")?;
            }
        }
    }
    Ok(skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(extra: &[&str]) -> (Config, RouteOptions, KetamaRing) {
        let mut args: Vec<OsString> = [
            "--backend",
            "127.0.0.1:11211",
            "--backend",
            "127.0.0.2:11300:2",
            "--backend",
            "127.0.0.3:11211",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        args.extend(extra.iter().map(OsString::from));
        let (cfg, opts) = parse(args).unwrap().unwrap();
        let ring = build_ring(&cfg, &opts).unwrap();
        (cfg, opts, ring)
    }

    fn route(extra: &[&str], input: &str) -> (String, usize) {
        let (cfg, opts, ring) = setup(extra);
        let mut out = Vec::new();
        let skipped = route_keys(&cfg, &ring, &opts, input.as_bytes(), &mut out).unwrap();
        (String::from_utf8(out).unwrap(), skipped)
    }

    #[test]
    fn one_line_per_key() {
        let (cfg, _, ring) = setup(&[]);
        let (out, skipped) = route(&[], "foo\nbar baz\r\n\n  qux");
        assert_eq!(skipped, 0);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4);
        for (line, key) in lines.iter().zip(["foo", "bar", "baz", "qux"]) {
            let i = ring.server_for_key(key.as_bytes()).unwrap();
            assert_eq!(*line, format!("{key} {}", cfg.backends[i]));
        }
    }

    #[test]
    fn replicas_down_and_json() {
        let (out, _) = route(&["--show-replicas", "--replicas", "2"], "foo\n");
        assert_eq!(out.split_whitespace().count(), 4, "{out}");
        let (out, _) = route(&["--json", "--replicas", "1"], "foo\n");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["key"], "foo");
        assert_eq!(v["hash"], u64::from(ketama_hash(b"foo")));
        assert_eq!(v["replicas"].as_array().unwrap().len(), 1);
        // A downed backend never appears.
        let keys: String = (0..500).map(|i| format!("k{i}\n")).collect();
        let (out, _) = route(&["--down", "127.0.0.2:11300", "--show-replicas"], &keys);
        assert!(!out.contains("127.0.0.2:11300"));
        assert_eq!(out.lines().count(), 500);
    }

    #[test]
    fn bad_input_is_reported() {
        let long = "x".repeat(251);
        let (out, skipped) = route(&[], &format!("ok\n{long}\n"));
        assert_eq!(skipped, 1);
        assert_eq!(out.lines().count(), 1);
        let (cfg, _, _) = setup(&[]);
        let opts = RouteOptions {
            down: vec!["10.9.9.9:1".into()],
            ..Default::default()
        };
        assert!(build_ring(&cfg, &opts).is_err());
        assert!(parse(vec!["--frobnicate".into()]).is_err());
        assert!(parse(vec!["--help".into()]).unwrap().is_none());
        // No backends at all.
        assert!(parse(vec![]).is_err());
    }
}
