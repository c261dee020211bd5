//! kvlb's ONVM datapath passing packets on with ONVM_NF_ACTION_NEXT (what the core does
//! with traffic that is not kvlb's when `--pass-other` is on): nflib then looks the flow up
//! in the manager's flow director table and, finding no entry, follows the default chain
//! (the manager's: service 1, which ends there, so the packets are dropped by ONVM).
//! Regression: before the NF attached to the flow director table (onvm_flow_dir_nf_init),
//! the first NEXT dereferenced NULL inside onvm_ft_lookup_pkt and killed the NF.
//!
//! Runs when ONVM_HOME names a built openNetVM, as root, with free hugepages; otherwise
//! prints `SKIPPED: <reason>`.

mod onvm_support;

#[cfg(not(feature = "onvm"))]
#[test]
fn onvm_next() {
    onvm_support::skipped(
        "built without --features onvm (needs ONVM_HOME and RTE_SDK/RTE_TARGET at build time)",
    );
}

#[cfg(feature = "onvm")]
#[test]
fn onvm_next() {
    use kvlb::nf::Verdict;
    use onvm_support::*;

    if let Some(reason) = skip_reason() {
        skipped(&reason);
        return;
    }
    let m = Manager::start("nx");
    let payloads: Vec<Vec<u8>> = (0..20).map(|i| format!("N{i:03}").into_bytes()).collect();
    // relay_run returns when ONVM's time to live (-t 6) ends the NF: it survived every NEXT.
    let run = relay_run(&m, 1, 6, Verdict::Next, false, &payloads);
    assert_eq!(run.relay.relayed, 20, "the NF saw every packet");
    assert_eq!(run.counters.next, 20, "and passed each one on with NEXT");
    assert_eq!(run.counters.panics, 0);
    assert!(
        run.got.is_empty(),
        "the default chain ends at service 1, so nothing reaches the server: {:?}",
        run.got
    );
    eprintln!("onvm_next: {:?}", run.counters);
}
