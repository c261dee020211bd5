//! kvlb's ONVM datapath handing packets to another NF: client (namespace, TAP port 0) →
//! manager → kvlb's NF (service 1) → TONF service 2 = ONVM's bridge → OUT port 1 → server
//! (namespace, TAP port 1).
//!
//! Runs when ONVM_HOME names a built openNetVM (with bridge), as root, with free
//! hugepages; otherwise prints `SKIPPED: <reason>`.

mod onvm_support;

#[cfg(not(feature = "onvm"))]
#[test]
fn onvm_tonf() {
    onvm_support::skipped(
        "built without --features onvm (needs ONVM_HOME and RTE_SDK/RTE_TARGET at build time)",
    );
}

#[cfg(feature = "onvm")]
#[test]
fn onvm_tonf() {
    use kvlb::nf::{ServiceId, Verdict};
    use onvm_support::*;

    if let Some(reason) = skip_reason() {
        skipped(&reason);
        return;
    }
    let mut m = Manager::start("tn");
    m.start_example("bridge", 2, &[]);
    let payloads: Vec<Vec<u8>> = (0..20).map(|i| format!("T{i:03}").into_bytes()).collect();
    let run = relay_run(&m, 1, 8, Verdict::ToNf(ServiceId(2)), false, &payloads);
    let mut got = run.got;
    got.sort();
    assert_eq!(
        got, payloads,
        "bridge sent every packet kvlb handed it out of port 1"
    );
    assert_eq!(run.counters.to_nf, 20);
    eprintln!("onvm_tonf: {:?}", run.counters);
}
