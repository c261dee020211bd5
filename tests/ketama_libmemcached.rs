//! kvlb's ketama ring against libmemcached's own placement.
//!
//! Compiles `tests/c/ketama_place.c` against the system libmemcached (`libmemcached-dev`),
//! which asks `memcached_server_by_key` where each key lives under
//! `MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED`, and compares that with [`KetamaRing`] for 100k keys
//! over many server lists: port 11211 and others, host names and IPs, weighted and not, 1 to
//! 25 servers; servers marked down against libmemcached given the shorter list; and servers
//! that libmemcached itself auto-ejected after failed connects (`REMOVE_FAILED_SERVERS`).
//!
//! Without a C compiler or libmemcached the tests print a loud SKIPPED line and pass, except
//! in CI (`CI=true`), or with `KVLB_REQUIRE_LIBMEMCACHED=1` or `KVLB_REQUIRE_REAL=1`, where
//! they fail: `scripts/test.sh` installs libmemcached-dev.

mod c;
mod skip;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use kvlb::ring::{KetamaRing, RingServer};

/// A server list entry: (host, port, weight).
type Spec = (&'static str, u16, u32);

fn ring_of(list: &[(String, u16, u32)], live: &[bool]) -> KetamaRing {
    let servers: Vec<RingServer<'_>> = list
        .iter()
        .zip(live)
        .map(|((h, p, w), &live)| RingServer {
            host: h,
            port: *p,
            weight: *w,
            live,
        })
        .collect();
    KetamaRing::new(&servers).unwrap()
}

fn owned(list: &[Spec]) -> Vec<(String, u16, u32)> {
    list.iter()
        .map(|(h, p, w)| (h.to_string(), *p, *w))
        .collect()
}

/// Compares kvlb's placement of `keys` over `list` (with `live`) with libmemcached's
/// placement over `c_list`, ejecting `ejects` first. Returns the number of keys compared.
fn compare(
    h: &Harness,
    keys: &[Vec<u8>],
    list: &[(String, u16, u32)],
    live: &[bool],
    c_list: &[(String, u16, u32)],
    ejects: &[(String, u16)],
) -> usize {
    let ring = ring_of(list, live);
    let theirs = h.place(c_list, ejects, keys);
    assert_eq!(theirs.len(), keys.len(), "harness answered every key");
    let mut mismatches = Vec::new();
    for (key, their) in keys.iter().zip(&theirs) {
        let ours = match ring.server_for_key(key) {
            Some(i) => format!("{}:{}", list[i].0, list[i].1),
            None => "-".to_string(),
        };
        if &ours != their {
            mismatches.push((
                String::from_utf8_lossy(key).into_owned(),
                ours,
                their.clone(),
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} keys placed differently over {:?} (live {:?}); first: {:?}",
        mismatches.len(),
        keys.len(),
        list,
        live,
        &mismatches[..mismatches.len().min(5)]
    );
    keys.len()
}

const LISTS: &[&[Spec]] = &[
    &[("127.0.0.1", 11211, 1)],
    &[("10.0.0.1", 11212, 7)],
    &[("10.0.0.1", 11211, 1), ("10.0.0.2", 11211, 1)],
    &[
        ("10.0.0.1", 11211, 1),
        ("10.0.0.2", 11211, 1),
        ("10.0.0.3", 11211, 1),
    ],
    &[
        ("cache-a.example.com", 11211, 1),
        ("cache-b.example.com", 11212, 1),
        ("localhost", 11211, 1),
        ("127.0.0.1", 22122, 1),
    ],
    &[
        ("10.0.0.1", 11211, 1),
        ("10.0.0.2", 11211, 2),
        ("10.0.0.3", 11213, 3),
        ("memcache-4", 11211, 1),
        ("memcache-5", 40000, 5),
    ],
    // Two servers on one host.
    &[("192.168.1.10", 11211, 1), ("192.168.1.10", 11212, 1)],
    // A weight so small next to the others that the server gets no points at all.
    &[
        ("big-1", 11211, 1000),
        ("big-2", 11211, 1000),
        ("tiny", 11211, 1),
    ],
];

#[test]
fn placement_matches_libmemcached() {
    let Some(h) = harness() else { return };
    let keys = test_keys(100_000, 1);
    let mut lists: Vec<Vec<(String, u16, u32)>> = LISTS.iter().map(|l| owned(l)).collect();
    // 10 servers, weights 1..=10, alternating ports.
    lists.push(
        (1..=10)
            .map(|i| {
                (
                    format!("10.2.0.{i}"),
                    if i % 2 == 0 { 11211 } else { 11300 + i as u16 },
                    i,
                )
            })
            .collect(),
    );
    // 25 equal servers: single-precision rounding gives each 156 points, not 160.
    lists.push((0..25).map(|i| (format!("mc{i:02}"), 11211, 1)).collect());
    // 13 servers, host names and IPs mixed, weights 1..=4.
    lists.push(
        (0..13)
            .map(|i| {
                let host = if i % 3 == 0 {
                    format!("node{i}.cluster.local")
                } else {
                    format!("172.16.{}.{}", i / 4, 10 + i)
                };
                (host, 11211 + (i % 2) as u16, 1 + (i as u32 % 4))
            })
            .collect(),
    );
    let mut total = 0;
    for list in &lists {
        let live = vec![true; list.len()];
        total += compare(h, &keys, list, &live, list, &[]);
    }
    let ring = ring_of(&lists[lists.len() - 2], &[true; 25]);
    assert_eq!(ring.points_of(0), 156, "the f32 rounding case is exercised");
    eprintln!(
        "ketama: {total} placements over {} server lists match libmemcached",
        lists.len()
    );
}

#[test]
fn down_servers_match_libmemcached_without_them() {
    let Some(h) = harness() else { return };
    let keys = test_keys(100_000, 2);
    let list: Vec<(String, u16, u32)> = (1..=10)
        .map(|i| (format!("10.3.0.{i}"), 11211 + (i % 3) as u16, 1 + i % 4))
        .collect();
    for down in [vec![3usize], vec![0], vec![9], vec![1, 4, 7]] {
        let live: Vec<bool> = (0..list.len()).map(|i| !down.contains(&i)).collect();
        let shorter: Vec<(String, u16, u32)> = list
            .iter()
            .enumerate()
            .filter(|(i, _)| !down.contains(i))
            .map(|(_, s)| s.clone())
            .collect();
        compare(h, &keys, &list, &live, &shorter, &[]);
    }
}

/// A TCP port on 127.0.0.1 that refuses connections (bound, then released).
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn auto_ejected_servers_match_a_ring_with_them_down() {
    let Some(h) = harness() else { return };
    let keys = test_keys(100_000, 3);
    let dead_a = closed_port();
    let dead_b = closed_port();
    let list: Vec<(String, u16, u32)> = vec![
        ("cache-a".into(), 11211, 1),
        ("127.0.0.1".into(), dead_a, 2),
        ("cache-c".into(), 11300, 1),
        ("10.9.9.9".into(), 11211, 3),
        ("127.0.0.1".into(), dead_b, 1),
        ("cache-f".into(), 11211, 1),
    ];
    let live = [true, false, true, true, true, true];
    compare(
        h,
        &keys,
        &list,
        &live,
        &list,
        &[("127.0.0.1".into(), dead_a)],
    );
    let live = [true, false, true, true, false, true];
    compare(
        h,
        &keys,
        &list,
        &live,
        &list,
        &[("127.0.0.1".into(), dead_a), ("127.0.0.1".into(), dead_b)],
    );
}

/// `kvlb route` prints what libmemcached computes, end to end through the binary.
#[test]
fn route_command_matches_libmemcached() {
    let Some(h) = harness() else { return };
    let keys = test_keys(20_000, 4);
    let list = owned(&[
        ("127.0.0.1", 11211, 1),
        ("127.0.0.2", 11300, 3),
        ("localhost", 11400, 2),
        ("10.0.0.7", 5000, 1),
    ]);
    let mut args: Vec<String> = vec!["route".into()];
    for (host, port, weight) in &list {
        args.push("--backend".into());
        args.push(format!("{host}:{port}:{weight}"));
    }
    let mut input = Vec::new();
    for k in &keys {
        input.extend_from_slice(k);
        input.push(b'\n');
    }
    let out = run_with_stdin(Path::new(env!("CARGO_BIN_EXE_kvlb")), &args, &input);
    let text = String::from_utf8(out).unwrap();
    let ours: Vec<&str> = text.lines().collect();
    let theirs = h.place(&list, &[], &keys);
    assert_eq!(ours.len(), keys.len());
    for ((line, key), their) in ours.iter().zip(&keys).zip(&theirs) {
        let key = std::str::from_utf8(key).unwrap();
        assert_eq!(*line, format!("{key} {their}"));
    }
}

/// Kills and reaps a child process unless it was waited for (a failing test must not leave
/// it running).
struct Reaper(Option<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `exe` with `args`, feeding it `input`; returns its stdout, failing on a non-zero
/// exit.
fn run_with_stdin(exe: &Path, args: &[String], input: &[u8]) -> Vec<u8> {
    let child = Command::new(exe)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    let mut reaper = Reaper(Some(child));
    let child = reaper.0.as_mut().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let err_reader = std::thread::spawn(move || {
        let mut e = Vec::new();
        let _ = stderr.read_to_end(&mut e);
        e
    });
    let mut out = Vec::new();
    stdout.read_to_end(&mut out).unwrap();
    let status = child.wait().unwrap();
    reaper.0 = None;
    let written = writer.join().unwrap();
    let err = err_reader.join().unwrap();
    assert!(
        status.success(),
        "{} {:?} failed: {}",
        exe.display(),
        args,
        String::from_utf8_lossy(&err)
    );
    written.unwrap();
    out
}

/// The compiled `ketama_place` harness.
struct Harness {
    exe: PathBuf,
}

impl Harness {
    /// libmemcached's placement of `keys` over `list`, after ejecting `ejects`: one
    /// "host:port" (or "-") per key.
    fn place(
        &self,
        list: &[(String, u16, u32)],
        ejects: &[(String, u16)],
        keys: &[Vec<u8>],
    ) -> Vec<String> {
        let mut args = Vec::new();
        for (host, port) in ejects {
            args.push("-e".to_string());
            args.push(format!("{host}:{port}"));
        }
        for (host, port, weight) in list {
            args.push(format!("{host}:{port}:{weight}"));
        }
        let mut input = Vec::with_capacity(keys.len() * 32);
        for k in keys {
            input.extend_from_slice(k);
            input.push(b'\n');
        }
        let out = run_with_stdin(&self.exe, &args, &input);
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Compiles the harness once per test process; `None` (after a loud message) when there is
/// no C compiler or no libmemcached, unless `KVLB_REQUIRE_LIBMEMCACHED` is set.
fn harness() -> Option<&'static Harness> {
    static HARNESS: OnceLock<Result<Harness, String>> = OnceLock::new();
    let built = HARNESS
        .get_or_init(|| c::build_with_libmemcached("ketama_place").map(|exe| Harness { exe }));
    match built {
        Ok(h) => {
            skip::used(
                "libmemcached",
                "memcached_server_by_key (tests/c/ketama_place.c)",
            );
            Some(h)
        }
        Err(why) => {
            if std::env::var_os("KVLB_REQUIRE_LIBMEMCACHED").is_some() {
                panic!("libmemcached comparison required but unavailable: {why}");
            }
            skip::skip("libmemcached", skip::Need::Installed, why);
            None
        }
    }
}

/// `n` distinct, valid memcached keys (printable, no spaces, 1..=250 bytes), deterministic
/// per `seed`: a mix of typical application keys and random ones.
fn test_keys(n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut keys = std::collections::HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    let mut i = 0u64;
    while out.len() < n {
        let key: Vec<u8> = match i % 4 {
            0 => format!("key:{i}").into_bytes(),
            1 => format!("user:{}:profile", next() % 1_000_000_007).into_bytes(),
            2 => format!("{:x}", next()).into_bytes(),
            _ => {
                let len = 1 + (next() % 250) as usize;
                // '!'..='~': what memcached and libmemcached's key check accept.
                (0..len).map(|_| b'!' + (next() % 94) as u8).collect()
            }
        };
        i += 1;
        if keys.insert(key.clone()) {
            out.push(key);
        }
    }
    out
}
