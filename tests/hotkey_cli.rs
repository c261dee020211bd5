//! `kvlb hotkeys` end to end: the real binary on real files (and stdin), its JSON checked
//! against exact counts: every estimate ≤ the true count, every estimate + max_error ≥ it,
//! and every key above the support reported. And `kvlb lc-experiments`, which runs the
//! experiments crate's binary.

mod workspace_bin;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use kvlb::hotkey::eval::{etc_value_sizes, zipf_stream, KeySpace};
use kvlb::random::{Rng, Zipf};
use serde_json::Value;

fn kvlb() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kvlb"))
}

/// A Zipf(1.1) stream over 5000 keys as lines, with exact per-key totals.
fn workload(weighted: bool, len: usize) -> (String, HashMap<String, u64>, Vec<String>) {
    let keys = KeySpace::new(5000);
    let zipf = Zipf::new(5000, 1.1);
    let mut rng = Rng::new(9);
    let perm = rng.permutation(5000);
    let sizes = etc_value_sizes(5000, &mut rng);
    let ids = zipf_stream(&zipf, &perm, len, &mut rng);
    let mut text = String::new();
    let mut truth: HashMap<String, u64> = HashMap::new();
    let mut order = Vec::new();
    for id in ids {
        let k = String::from_utf8(keys.key(id).to_vec()).unwrap();
        let w = if weighted {
            u64::from(sizes[id as usize])
        } else {
            1
        };
        if weighted {
            text.push_str(&format!("{k} {w}\n"));
        } else {
            text.push_str(&format!("{k}\n"));
        }
        *truth.entry(k.clone()).or_default() += w;
        order.push(k);
    }
    (text, truth, order)
}

fn run_file(args: &[&str], input: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.txt");
    std::fs::write(&path, input).unwrap();
    let out = kvlb()
        .arg("hotkeys")
        .args(args)
        .arg("--input")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kvlb hotkeys {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn check(doc: &Value, truth: &HashMap<String, u64>, support: f64) {
    let total: u64 = truth.values().sum();
    assert_eq!(doc["total_weight"].as_u64().unwrap(), total);
    assert!(doc["entries_max"].as_u64().unwrap() > 0);
    let items = doc["items"].as_array().unwrap();
    let mut reported = Vec::new();
    for it in items {
        let k = it["key"].as_str().unwrap();
        let est = it["estimate"].as_u64().unwrap();
        let err = it["max_error"].as_u64().unwrap();
        let t = truth[k];
        assert!(est <= t, "{k}: estimate {est} > true {t}");
        assert!(est + err >= t, "{k}: {est} + {err} < true {t}");
        reported.push(k.to_string());
    }
    for (k, &t) in truth {
        if t as f64 >= support * total as f64 {
            assert!(reported.contains(k), "{k} ({t} of {total}) not reported");
        }
    }
    assert!(!reported.is_empty());
}

#[test]
fn every_algorithm_keeps_the_json_contract() {
    let (text, truth, _) = workload(false, 50_000);
    for algo in ["lossy", "lossy-decayed", "space-saving"] {
        for rule in ["tight", "classic"] {
            let doc = run_file(
                &["--algo", algo, "--support", "0.02", "--rule", rule],
                &text,
            );
            assert_eq!(doc["n"].as_u64().unwrap(), 50_000);
            assert_eq!(doc["algo"].as_str().unwrap(), algo);
            check(&doc, &truth, 0.02);
        }
    }
    let (text, truth, _) = workload(true, 30_000);
    let doc = run_file(
        &[
            "--algo",
            "lossy-weighted",
            "--support",
            "0.02",
            "--error",
            "0.001",
        ],
        &text,
    );
    check(&doc, &truth, 0.02);
}

#[test]
fn decayed_epochs_report_the_last_window() {
    let (text, _, order) = workload(false, 40_000);
    let doc = run_file(
        &[
            "--algo",
            "lossy-decayed",
            "--support",
            "0.02",
            "--epoch-lines",
            "15000",
        ],
        &text,
    );
    // Epochs of 15000 lines: the window is the last 10000.
    let mut window: HashMap<String, u64> = HashMap::new();
    for k in &order[30_000..] {
        *window.entry(k.clone()).or_default() += 1;
    }
    assert_eq!(doc["window_n"].as_u64().unwrap(), 10_000);
    assert_eq!(doc["n"].as_u64().unwrap(), 40_000);
    let items = doc["items"].as_array().unwrap();
    assert!(!items.is_empty());
    for it in items {
        let t = window[it["key"].as_str().unwrap()];
        let (e, m) = (
            it["estimate"].as_u64().unwrap(),
            it["max_error"].as_u64().unwrap(),
        );
        assert!(e <= t && t <= e + m);
    }
}

#[test]
fn reads_stdin_and_rejects_bad_input() {
    let mut child = kvlb()
        .args([
            "hotkeys",
            "--algo",
            "lossy",
            "--support",
            "0.3",
            "--input",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a\nb\na\r\n\na\nc\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["n"], 5);
    assert_eq!(doc["items"][0]["key"], "a");
    assert_eq!(doc["items"][0]["estimate"], 3);

    for (args, input, needle) in [
        (
            vec!["--algo", "lossy-count", "--support", "0.1"],
            "",
            "unknown hot-key algorithm",
        ),
        (vec!["--algo", "lossy", "--support", "1.5"], "", "support"),
        (
            vec!["--algo", "lossy-weighted", "--support", "0.1"],
            "k x\n",
            "line 1",
        ),
    ] {
        let mut child = kvlb()
            .arg("hotkeys")
            .args(&args)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// `kvlb lc-experiments` runs `kvlb-lc-experiments` from kvlb's own directory: its files,
/// its messages and its exit status are the command's.
#[test]
fn lc_experiments_runs_the_experiments_crate() {
    workspace_bin::exe("kvlb-lc-experiments", "kvlb-lc-experiments");
    let dir = tempfile::tempdir().unwrap();
    let out = kvlb()
        .args(["lc-experiments", "--quick", "--only", "thresholds", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let csv = std::fs::read_to_string(dir.path().join("thresholds.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 4 * 2, "{csv}");
    assert!(std::fs::read_to_string(dir.path().join("summary.md"))
        .unwrap()
        .contains("Thresholds that work"));

    let out = kvlb()
        .args(["lc-experiments", "--only", "nope", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("kvlb lc-experiments: unknown section 'nope'"),
        "{err}"
    );
}
