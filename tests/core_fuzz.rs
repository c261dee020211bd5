//! The `core` fuzz target's interpreter (`core_ops`) on a stable toolchain: the target's
//! committed seeds, and random bytes, alone or after a seed (so that they act on a core
//! whose keys are hot, cached and replicated). Each input runs twice: the invariants hold,
//! and kvlb sends the same frames both times.

mod core_ops;

use std::path::PathBuf;
use std::sync::OnceLock;

use proptest::prelude::*;

/// The seeds in `fuzz/corpus/core`, in name order.
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/core");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("fuzz/corpus/core")
            .map(|e| e.expect("a corpus entry").path())
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|p| std::fs::read(p).expect("a seed"))
            .collect()
    })
}

fn run_twice(data: &[u8]) -> core_ops::Outcome {
    let first = core_ops::run(data);
    assert_eq!(
        first.digest,
        core_ops::run(data).digest,
        "the same input sent other frames"
    );
    first
}

#[test]
fn the_fuzz_seeds_run_clean_and_reach_the_deep_paths() {
    assert!(!seeds().is_empty(), "no seeds in fuzz/corpus/core");
    let mut reached = std::collections::BTreeSet::new();
    for seed in seeds() {
        let r = run_twice(seed).report;
        let c = &r.stats.cache;
        let p = &r.stats.replication;
        for (what, n) in [
            ("L1 hits", c.l1_hits),
            ("L2 hits", c.l2_hits),
            ("L2 evictions", c.l2_evictions),
            ("promotions to L1", c.promotions),
            ("replica writes", p.replica_writes),
            ("replica reads", p.replica_reads),
            ("balance reads", p.balance_reads),
            ("fences", p.fenced),
            ("timeouts", r.backends.iter().map(|b| b.timeouts).sum()),
            (
                "flow table full",
                r.stats.drops.get("flow_table_full").copied().unwrap_or(0),
            ),
            (
                "amplification guard",
                r.stats
                    .drops
                    .get("amplification_guard")
                    .copied()
                    .unwrap_or(0),
            ),
            (
                "mismatched replies",
                r.stats
                    .drops
                    .get("mismatched_response")
                    .copied()
                    .unwrap_or(0),
            ),
        ] {
            if n > 0 {
                reached.insert(what);
            }
        }
    }
    // What the seeds are for: if the core or the interpreter changes so that they no
    // longer get there, the fuzzer starts from a shallower place.
    assert_eq!(reached.len(), 12, "the seeds reach only {reached:?}");
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES, when set, runs more (or fewer) cases than the default here.
        cases: std::env::var("PROPTEST_CASES").map_or(128, |v| v.parse().unwrap_or(128)),
        ..ProptestConfig::default()
    })]

    /// `prefix` past the seeds: random bytes alone.
    #[test]
    fn the_core_keeps_its_invariants_on_any_operations(
        prefix in 0usize..16,
        tail in prop::collection::vec(any::<u8>(), 0..3000),
    ) {
        let mut data = seeds().get(prefix).cloned().unwrap_or_default();
        data.extend_from_slice(&tail);
        run_twice(&data);
    }
}

/// `CORE_OPS_INPUT=FILE cargo test --test core_fuzz replay -- --ignored` runs one input
/// (a fuzzer's crash, a seed), with `CORE_OPS_TRACE=1` to see its frames.
#[test]
#[ignore = "a manual tool: replays the input named by CORE_OPS_INPUT"]
fn replay() {
    let path = std::env::var("CORE_OPS_INPUT").expect("CORE_OPS_INPUT=FILE");
    run_twice(&std::fs::read(path).expect("the input"));
}
