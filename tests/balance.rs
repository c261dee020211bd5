//! The balance claim, asserted: 8 real memcached servers behind `kvlb serve`, kvbench
//! sending Zipf 1.2 over 100,000 keys (95 % gets), and the load each server itself counted
//! (`cmd_get + cmd_set` from its own `stats`, as the demo reports it). With hot-key
//! handling on the busiest server must stay within 1.10× the mean, with hot keys found,
//! cached and answered from kvlb's caches; with it off, the same load must be visibly
//! skewed, so the test measures what kvlb removes and not a load that was even anyway.
//! Every value kvbench reads is checked: 0 stale or corrupt reads.
//!
//! The same for hot keys that are not stored (`hot_keys_that_miss_are_balanced_too`): with
//! GETs only on empty servers every hot key misses, and only kvlb's cached misses
//! (`--cache-misses`) can balance them; then with SETs mixed in, no GET after an
//! acknowledged SET misses (a cached miss is dropped before a write leaves).

mod common;
mod kvlb_stats;
mod workspace_bin;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Kvlb, Memcached};
use serde_json::Value;

const SERVERS: usize = 8;
const KEYS: &str = "100000";
const TARGET: f64 = 1.10;

/// `cmd_get + cmd_set` of each server.
fn loads(ms: &[Memcached]) -> Vec<u64> {
    ms.iter()
        .map(|m| m.stat("cmd_get") + m.stat("cmd_set"))
        .collect()
}

fn max_over_mean(v: &[u64]) -> f64 {
    let mean = v.iter().sum::<u64>() as f64 / v.len() as f64;
    assert!(mean > 0.0, "no load reached the servers: {v:?}");
    *v.iter().max().unwrap() as f64 / mean
}

/// One kvbench run through the VIP with `get_ratio` GETs; its JSON summary. Fails the
/// test on stale or corrupt reads (exit status 3) or any other failure.
fn kvbench_gets(vip: &str, seconds: u32, seed: u32, get_ratio: &str, extra: &[&str]) -> Value {
    let out = Command::new(workspace_bin::kvbench())
        .args(["--server", vip, "--keys", KEYS, "--dist", "zipf:1.2"])
        .args([
            "--get-ratio",
            get_ratio,
            "--value-size",
            "100",
            "--threads",
            "1",
        ])
        .args(["--connections", "16", "--depth", "2", "--spin-us", "0"])
        .args([
            "--duration",
            &seconds.to_string(),
            "--seed",
            &seed.to_string(),
        ])
        .args(["--json", "--quiet"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("running kvbench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kvbench exited with {:?} (3: stale or corrupt reads):\n{stdout}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("kvbench printed no JSON summary ({e}): {stdout}"))
}

fn u(v: &Value, path: &[&str]) -> u64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_u64().unwrap_or_else(|| panic!("no {path:?} in {v}"))
}

/// Warm-up (with `warm_up`'s extra kvbench options; lets the detector find the hot set),
/// then a measured window between two readings of the servers' counters, both with
/// `get_ratio` GETs. Returns (max/mean of the window, the window, kvbench's window summary).
fn measure_with(
    ms: &[Memcached],
    vip: &str,
    get_ratio: &str,
    warm_up: &[&str],
) -> (f64, Vec<u64>, Value) {
    kvbench_gets(vip, 3, 1, get_ratio, warm_up);
    let before = loads(ms);
    let summary = kvbench_gets(vip, 6, 2, get_ratio, &[]);
    let after = loads(ms);
    let window: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    (max_over_mean(&window), window, summary)
}

/// [`measure_with`] 95 % GETs after a warm-up that loads every key (so gets hit and hot
/// keys can be cached).
fn measure(ms: &[Memcached], vip: &str) -> (f64, Vec<u64>, Value) {
    measure_with(ms, vip, "0.95", &["--load"])
}

#[test]
fn hot_key_handling_balances_eight_servers_under_zipf_1_2() {
    let dir = tempfile::tempdir().unwrap();

    // Off first: the skew kvlb has to remove.
    let ms: Vec<Memcached> = (0..SERVERS).map(|_| Memcached::start()).collect();
    let refs: Vec<&Memcached> = ms.iter().collect();
    let off = Kvlb::serve(&refs, &["--no-hotkeys"]);
    let (off_ratio, off_window, _) = measure(&ms, &off.vip.to_string());
    drop(off);
    eprintln!("hot-key handling off: max/mean {off_ratio:.3}, per server {off_window:?}");

    // On, on fresh servers (the off run's keys and counters stay behind).
    drop(ms);
    let ms: Vec<Memcached> = (0..SERVERS).map(|_| Memcached::start()).collect();
    let refs: Vec<&Memcached> = ms.iter().collect();
    let stats = dir.path().join("kvlb.jsonl");
    let stats_arg = stats.to_str().unwrap();
    let on = Kvlb::serve(
        &refs,
        &["--stats-interval", "1s", "--stats-json", stats_arg],
    );
    let (on_ratio, on_window, summary) = measure(&ms, &on.vip.to_string());
    eprintln!("hot-key handling on: max/mean {on_ratio:.3}, per server {on_window:?}");

    // kvbench saw every value it read as current.
    assert_eq!(u(&summary, &["validation", "stale"]), 0, "{summary}");
    assert_eq!(u(&summary, &["validation", "corrupt"]), 0, "{summary}");
    assert!(u(&summary, &["gets"]) > 5_000, "too little load: {summary}");

    // Hot keys were found, cached, and answered from kvlb's caches.
    std::thread::sleep(Duration::from_millis(1200));
    // Zipf 1.2 over 8 servers makes several keys hot.
    kvlb_stats::assert_hot_keys_served(&kvlb_stats::last_report(&stats), 3);

    assert!(
        off_ratio > 1.3,
        "the load was not skewed without hot-key handling (max/mean {off_ratio:.3}): the test \
         would not show anything"
    );
    assert!(
        on_ratio <= TARGET,
        "busiest server at {on_ratio:.3}x the mean with hot-key handling on (target \
         {TARGET}x; off: {off_ratio:.3}x); per server {on_window:?}"
    );
}

/// [`measure_with`] GETs only on empty servers: every key misses.
fn measure_misses(ms: &[Memcached], vip: &str) -> (f64, Vec<u64>) {
    let (ratio, window, _) = measure_with(ms, vip, "1.0", &[]);
    (ratio, window)
}

#[test]
fn hot_keys_that_miss_are_balanced_too() {
    let dir = tempfile::tempdir().unwrap();

    // Without cached misses: the hot keys' misses all land on their servers.
    let ms: Vec<Memcached> = (0..SERVERS).map(|_| Memcached::start()).collect();
    let refs: Vec<&Memcached> = ms.iter().collect();
    let off = Kvlb::serve(&refs, &["--cache-misses", "off"]);
    let (off_ratio, off_window) = measure_misses(&ms, &off.vip.to_string());
    drop(off);
    eprintln!("cached misses off: max/mean {off_ratio:.3}, per server {off_window:?}");

    drop(ms);
    let ms: Vec<Memcached> = (0..SERVERS).map(|_| Memcached::start()).collect();
    let refs: Vec<&Memcached> = ms.iter().collect();
    let stats = dir.path().join("kvlb.jsonl");
    let stats_arg = stats.to_str().unwrap();
    let on = Kvlb::serve(
        &refs,
        &["--stats-interval", "1s", "--stats-json", stats_arg],
    );
    let vip = on.vip.to_string();
    let (on_ratio, on_window) = measure_misses(&ms, &vip);
    eprintln!("cached misses on: max/mean {on_ratio:.3}, per server {on_window:?}");

    // Now SETs too, on the same servers and kvlb (hot keys' misses are cached): a GET sent
    // after a key's SET was acknowledged never misses, and never reads an old value.
    let summary = kvbench_gets(&vip, 6, 3, "0.9", &[]);
    let v = |f: &str| u(&summary, &["validation", f]);
    assert_eq!(
        (v("stale"), v("corrupt"), v("lost")),
        (0, 0, 0),
        "stale, corrupt, lost: {summary}"
    );
    assert!(u(&summary, &["sets"]) > 500, "too few sets: {summary}");
    std::thread::sleep(Duration::from_millis(1200));
    let report = kvlb_stats::last_report(&stats);
    let cache = &report["cache"];
    assert!(
        cache["learned_absent"].as_u64().unwrap_or(0) > 0
            && cache["absent_hits"].as_u64().unwrap_or(0) > 0,
        "no miss was cached and answered: {cache}"
    );

    assert!(
        off_ratio > 1.3,
        "hot keys' misses did not skew the load without cached misses (max/mean \
         {off_ratio:.3}): the test would not show anything"
    );
    assert!(
        on_ratio <= TARGET,
        "busiest server at {on_ratio:.3}x the mean with cached misses (target {TARGET}x; \
         off: {off_ratio:.3}x); per server {on_window:?}"
    );
}
