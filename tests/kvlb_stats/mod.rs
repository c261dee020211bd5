//! Reading kvlb's `--stats-json` lines in tests, and the hot-key checks made on them.
#![allow(dead_code)]

use serde_json::Value;
use std::path::Path;

/// The last JSON stats line kvlb wrote to `path`.
pub fn last_report(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("kvlb wrote no stats line to {}", path.display()));
    serde_json::from_str(line).expect("kvlb stats JSON")
}

/// At least `min_hot` hot keys in `report`, one of them cached and one replicated to a ready
/// replica, and kvlb's caches answered some GETs.
pub fn assert_hot_keys_served(report: &Value, min_hot: usize) {
    let hot = report["hot_keys"].as_array().cloned().unwrap_or_default();
    assert!(
        hot.len() >= min_hot,
        "{} hot keys found, expected at least {min_hot}: {report}",
        hot.len()
    );
    assert!(
        hot.iter().any(|k| k["cached"] == Value::Bool(true)),
        "no hot key cached: {report}"
    );
    assert!(
        hot.iter()
            .any(|k| k["ready_replicas"].as_u64().unwrap_or(0) > 0),
        "no hot key replicated: {report}"
    );
    let hits = report["cache"]["l1_hits"].as_u64().unwrap_or(0)
        + report["cache"]["l2_hits"].as_u64().unwrap_or(0);
    assert!(hits > 0, "kvlb's caches answered nothing: {report}");
}
